//! Witnessing between connectors (C2SP tlog-witness): a connector's checkpoints come back
//! cosigned by the connector that watches its log; a witness cosigns only what extends the
//! history it saw — a fork, a rollback, a foreign key or an unwatched log is refused with the
//! protocol's status and leaves what it remembers unchanged — and it remembers that history
//! across restarts. A log whose witness is down or hangs keeps signing checkpoints, and asks
//! again until the witness cosigns, also when the log does not grow.

use std::cell::Cell;
use std::time::Duration;

use civitas_audit::checkpoint::{
    Checkpoint, CosignatureVerifier, open_checkpoint, open_checkpoint_with_witnesses,
    sign_checkpoint,
};
use civitas_audit::merkle::{Hash, MemoryTree};
use civitas_audit::note::{Signer, Verifier};
use civitas_audit::witness::{AddCheckpoint, SIZE_MEDIA_TYPE};
use civitas_connector::audit::public_keys;
use civitas_connector::settings::WitnessSettings;

use crate::helpers::{TestApp, apps_with};

const LOG_SEED: [u8; 32] = [0x11; 32];
const WITNESS_SEED: [u8; 32] = [0x22; 32];
/// A log only the test writes to, watched by the witness too.
const WATER_SEED: [u8; 32] = [0x33; 32];
const PARKS_SEED: [u8; 32] = [0x55; 32];

fn key_file(dir: &std::path::Path, name: &str, seed: &[u8; 32]) -> std::path::PathBuf {
    let path = dir.join(name);
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex).expect("a key file");
    path
}

fn tree(size: u64, history: u8) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for index in 0..size {
        tree.append(&[history, index as u8]);
    }
    tree
}

/// A checkpoint of `origin` signed with the log key of `seed`.
fn signed(origin: &str, seed: &[u8; 32], size: u64, root: Hash) -> String {
    let signer = Signer::from_seed(origin, seed).expect("a key");
    sign_checkpoint(
        &Checkpoint::new(origin, size, root).expect("valid"),
        &signer,
    )
}

fn water_note(tree: &MemoryTree, size: u64, seed: &[u8; 32]) -> String {
    signed(
        "civitas/water",
        seed,
        size,
        tree.root(size).expect("a root"),
    )
}

async fn submit(witness: &TestApp, body: String) -> (u16, String) {
    let reply = witness
        .request(
            "POST",
            "/audit/v1/witness/add-checkpoint",
            &[("content-type", "text/plain")],
            Some(&body),
        )
        .await;
    (reply.status, reply.text)
}

fn add(old_size: u64, proof: Vec<Hash>, note: String) -> String {
    AddCheckpoint {
        old_size,
        proof,
        note,
    }
    .to_body()
}

/// The size of the last checkpoint of `origin` the witness cosigned, asked without changing it:
/// a request from a size it cannot know is a 409 that names it.
async fn known_size(witness: &TestApp, origin: &str, seed: &[u8; 32]) -> u64 {
    let probe = 1 << 40;
    let reply = witness
        .request(
            "POST",
            "/audit/v1/witness/add-checkpoint",
            &[],
            Some(&add(probe, vec![], signed(origin, seed, probe, [7; 32]))),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some(SIZE_MEDIA_TYPE));
    reply
        .text
        .strip_suffix('\n')
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("not a size: {:?}", reply.text))
}

/// The log's served checkpoint, once it carries a valid cosignature by `witness` and has at
/// least `min_size` entries (polled; every request adds a record, so the log grows meanwhile).
async fn cosigned_checkpoint(
    log: &TestApp,
    origin: &str,
    log_vkey: &str,
    witness_vkey: &str,
    min_size: u64,
) -> Checkpoint {
    let auditor = crate::audit::auditor_token();
    let log_verifier = Verifier::from_vkey(log_vkey).expect("a vkey");
    let cosigner = CosignatureVerifier::from_vkey(witness_vkey).expect("a vkey");
    for _ in 0..500 {
        let reply = log
            .request(
                "GET",
                "/audit/v1/checkpoint",
                &[("authorization", &format!("Bearer {auditor}"))],
                None,
            )
            .await;
        if reply.status == 200
            && let Ok((checkpoint, by)) = open_checkpoint_with_witnesses(
                &reply.text,
                &log_verifier,
                origin,
                std::slice::from_ref(&cosigner),
                1,
            )
            && checkpoint.size() >= min_size
        {
            assert_eq!(by[0].witness, cosigner.name());
            return checkpoint;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{}: no checkpoint cosigned by {witness_vkey}", log.backend);
}

#[actix_web::test]
async fn connectors_witness_each_other_and_refuse_forks() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log_key = key_file(dir.path(), "transport.audit", &LOG_SEED);
    let witness_key = key_file(dir.path(), "environment.audit", &WITNESS_SEED);
    let (log_vkey, _) = public_keys("transport", &LOG_SEED).expect("keys");
    let (water_vkey, _) = public_keys("water", &WATER_SEED).expect("keys");
    let (_, witness_vkey) = public_keys("environment", &WITNESS_SEED).expect("keys");
    let witness_settings = |settings: &mut civitas_connector::Settings| {
        settings.department = "environment".to_owned();
        settings.audit.key_file = Some(witness_key.clone());
        settings.audit.watch = vec![log_vkey.clone(), water_vkey.clone()];
    };
    let log_settings = |witnesses: Vec<WitnessSettings>| {
        let log_key = log_key.clone();
        move |settings: &mut civitas_connector::Settings| {
            settings.department = "transport".to_owned();
            settings.audit.key_file = Some(log_key.clone());
            settings.audit.witnesses = witnesses.clone();
        }
    };
    let witness_at = |url: &str| {
        vec![WitnessSettings {
            url: url.to_owned(),
            vkey: witness_vkey.clone(),
        }]
    };
    let witnesses = apps_with(witness_settings).await;
    let logs = apps_with(log_settings(Vec::new())).await;
    for (log, witness) in logs.into_iter().zip(witnesses) {
        let backend = log.backend;
        let metadata = witness.get("/.well-known/civitas", None).await.json();
        assert_eq!(metadata["witnessKey"], witness_vkey.as_str(), "{backend}");
        let log = log.restart(log_settings(witness_at(&witness.url))).await;

        // The log's checkpoints come back cosigned by the witness.
        let created = log.get("/ngsi-ld/v1/entities?type=Vehicle", None).await;
        assert_eq!(created.status, 200, "{backend}: {}", created.text);
        let first = cosigned_checkpoint(&log, "civitas/transport", &log_vkey, &witness_vkey, 1)
            .await
            .size();
        // The log gets no more requests: its last checkpoint reaches the witness, then nothing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let known = known_size(&witness, "civitas/transport", &LOG_SEED).await;
        assert!(known >= first, "{backend}");

        // A fork of the real log, signed with its key, changes nothing at the witness.
        let forks = [
            add(
                known,
                vec![[1; 32]],
                signed("civitas/transport", &LOG_SEED, known + 5, [2; 32]),
            ),
            add(
                known,
                vec![],
                signed("civitas/transport", &LOG_SEED, known, [3; 32]),
            ),
            add(
                known,
                vec![],
                signed("civitas/transport", &LOG_SEED, known - 1, [3; 32]),
            ),
        ];
        for (fork, expected) in forks.into_iter().zip([422, 409, 400]) {
            let (status, text) = submit(&witness, fork).await;
            assert_eq!(status, expected, "{backend}: {text}");
        }
        assert_eq!(
            known_size(&witness, "civitas/transport", &LOG_SEED).await,
            known,
            "{backend}"
        );

        // A log only this test writes: the witness's decisions, step by step.
        let honest = tree(10, 1);
        let forked = tree(10, 2);
        let water = |size| water_note(&honest, size, &WATER_SEED);
        let (status, line) = submit(&witness, add(0, vec![], water(3))).await;
        assert_eq!(status, 200, "{backend}: {line}");
        let water_verifier = Verifier::from_vkey(&water_vkey).expect("a vkey");
        let cosigner = CosignatureVerifier::from_vkey(&witness_vkey).expect("a vkey");
        open_checkpoint_with_witnesses(
            &format!("{}{line}", water(3)),
            &water_verifier,
            "civitas/water",
            std::slice::from_ref(&cosigner),
            1,
        )
        .unwrap_or_else(|error| panic!("{backend}: the cosignature: {error}"));
        let proof = |tree: &MemoryTree, from, to| tree.consistency_proof(from, to).expect("proof");
        assert_eq!(
            submit(&witness, add(0, vec![], water(6))).await,
            (409, "3\n".to_owned()),
            "{backend}: a stale old size"
        );
        let (status, text) = submit(&witness, add(3, proof(&honest, 3, 6), water(6))).await;
        assert_eq!(status, 200, "{backend}: {text}");
        let (status, text) = submit(&witness, add(6, vec![], water(6))).await;
        assert_eq!(status, 200, "{backend}: the same checkpoint again: {text}");
        let refusals = [
            (
                "a fork",
                add(6, proof(&forked, 6, 8), water_note(&forked, 8, &WATER_SEED)),
                422,
            ),
            (
                "a fork of the same size",
                add(6, vec![], water_note(&forked, 6, &WATER_SEED)),
                409,
            ),
            ("a replayed older checkpoint", add(6, vec![], water(5)), 400),
            (
                "a replayed older checkpoint from zero",
                add(0, vec![], water(5)),
                409,
            ),
            (
                "another key",
                add(6, proof(&honest, 6, 8), water_note(&honest, 8, &[0x44; 32])),
                403,
            ),
            ("a malformed body", "old six\n\nnote".to_owned(), 400),
            (
                "a note that is no checkpoint",
                add(6, vec![], "note".to_owned()),
                400,
            ),
        ];
        for (name, body, expected) in &refusals {
            let (status, text) = submit(&witness, body.clone()).await;
            assert_eq!(status, *expected, "{backend}: {name}: {text}");
        }
        assert_eq!(
            known_size(&witness, "civitas/water", &WATER_SEED).await,
            6,
            "{backend}: refusals change nothing"
        );
        let unwatched = Signer::from_seed("civitas/nowhere", &[5; 32]).expect("a key");
        let note = sign_checkpoint(
            &Checkpoint::new("civitas/nowhere", 1, honest.root(1).expect("root")).expect("valid"),
            &unwatched,
        );
        assert_eq!(
            submit(&witness, add(0, vec![], note)).await.0,
            404,
            "{backend}"
        );
        let too_large = format!("old 0\n\n{}", "x".repeat(70_000));
        assert_eq!(submit(&witness, too_large).await.0, 413, "{backend}");
        let get = witness.get("/audit/v1/witness/add-checkpoint", None).await;
        assert_eq!(get.status, 405, "{backend}");

        // The witness remembers what it saw across a restart.
        let witness = witness.restart(witness_settings).await;
        assert_eq!(
            submit(&witness, add(0, vec![], water(8))).await,
            (409, "6\n".to_owned()),
            "{backend}: the witnessed size is kept"
        );
        let (status, text) = submit(&witness, refusals[0].1.clone()).await;
        assert_eq!(status, 422, "{backend}: {text}");
        let (status, text) = submit(&witness, add(6, proof(&honest, 6, 8), water(8))).await;
        assert_eq!(status, 200, "{backend}: {text}");

        // The log grows while the witness is not configured; once it is again, the log learns
        // the witness's size from a 409 and proves the growth from there.
        let log = log.restart(log_settings(Vec::new())).await;
        for _ in 0..5 {
            log.get("/ngsi-ld/v1/entities?type=Vehicle", None).await;
        }
        let known = known_size(&witness, "civitas/transport", &LOG_SEED).await;
        assert!(known > 0, "{backend}");
        let log = log.restart(log_settings(witness_at(&witness.url))).await;
        let later = cosigned_checkpoint(
            &log,
            "civitas/transport",
            &log_vkey,
            &witness_vkey,
            known + 5,
        )
        .await;
        assert!(later.size() > known, "{backend}");
    }
}

/// A free local port: bound, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.local_addr().expect("an address").port()
}

#[actix_web::test]
async fn a_missing_witness_blocks_nothing_and_is_asked_again() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log_key = key_file(dir.path(), "parks.audit", &PARKS_SEED);
    let witness_key = key_file(dir.path(), "environment.audit", &WITNESS_SEED);
    let (log_vkey, _) = public_keys("parks", &PARKS_SEED).expect("keys");
    let (_, witness_vkey) = public_keys("environment", &WITNESS_SEED).expect("keys");
    let (_, hung_vkey) = public_keys("hung", &[0x66; 32]).expect("keys");
    // A witness that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let hung_url = format!("http://{}", hung.local_addr().expect("an address"));
    // The witness is not up yet: its port is chosen now, it listens there later.
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let next = Cell::new(0);
    let logs = apps_with(|settings| {
        settings.department = "parks".to_owned();
        settings.audit.key_file = Some(log_key.clone());
        settings.audit.witnesses = vec![
            WitnessSettings {
                url: hung_url.clone(),
                vkey: hung_vkey.clone(),
            },
            WitnessSettings {
                url: format!("http://127.0.0.1:{}", ports[next.get()]),
                vkey: witness_vkey.clone(),
            },
        ];
        next.set(next.get() + 1);
    })
    .await;
    let auditor = crate::audit::auditor_token();
    let log_verifier = Verifier::from_vkey(&log_vkey).expect("a vkey");
    let mut sizes = Vec::new();
    for log in &logs {
        // Checkpoints are signed at the log's pace, not the witnesses': each request adds a
        // record, and the next request sees its checkpoint long before the hung witness's 5 s.
        let started = std::time::Instant::now();
        let mut size = 0;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let reply = log
                .request(
                    "GET",
                    "/audit/v1/checkpoint",
                    &[("authorization", &format!("Bearer {auditor}"))],
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{}: {}", log.backend, reply.text);
            let checkpoint =
                open_checkpoint(&reply.text, &log_verifier, "civitas/parks").expect("signed");
            assert!(checkpoint.size() >= size, "{}", log.backend);
            size = checkpoint.size();
        }
        assert!(size >= 3, "{}: checkpoints kept coming", log.backend);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{}",
            log.backend
        );
        // Five requests, five records; the last one's checkpoint follows within an interval.
        sizes.push(5);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The witness comes up; the logs, which get no more requests, ask it again by themselves.
    let next = Cell::new(0);
    let witnesses = apps_with(|settings| {
        settings.department = "environment".to_owned();
        settings.listen = format!("127.0.0.1:{}", ports[next.get()]);
        settings.audit.key_file = Some(witness_key.clone());
        settings.audit.watch = vec![log_vkey.clone()];
        next.set(next.get() + 1);
    })
    .await;
    for ((log, witness), size) in logs.iter().zip(&witnesses).zip(sizes) {
        let mut known = 0;
        for _ in 0..300 {
            known = known_size(witness, "civitas/parks", &PARKS_SEED).await;
            if known == size {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(known, size, "{}: the log asked again", log.backend);
        cosigned_checkpoint(log, "civitas/parks", &log_vkey, &witness_vkey, size).await;
    }
    drop(hung);
}
