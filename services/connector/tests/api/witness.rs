//! Witnessing between connectors (C2SP tlog-witness): a connector's checkpoints come back
//! cosigned by the connector that watches its log; a witness cosigns only what extends the
//! history it saw — a fork, a rollback, a foreign key or an unwatched log is refused with the
//! protocol's status — and it remembers that history across restarts.

use civitas_audit::checkpoint::{
    Checkpoint, CosignatureVerifier, open_checkpoint_with_witnesses, sign_checkpoint,
};
use civitas_audit::merkle::MemoryTree;
use civitas_audit::note::{Signer, Verifier};
use civitas_audit::witness::AddCheckpoint;
use civitas_connector::audit::public_keys;
use civitas_connector::settings::WitnessSettings;

use crate::helpers::{TestApp, apps_with};

const LOG_SEED: [u8; 32] = [0x11; 32];
const WITNESS_SEED: [u8; 32] = [0x22; 32];
/// A log only the test writes to, watched by the witness too.
const WATER_SEED: [u8; 32] = [0x33; 32];

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

fn water_note(tree: &MemoryTree, size: u64, seed: &[u8; 32]) -> String {
    let signer = Signer::from_seed("civitas/water", seed).expect("a key");
    let root = tree.root(size).expect("a root");
    sign_checkpoint(
        &Checkpoint::new("civitas/water", size, root).expect("valid"),
        &signer,
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

fn add(old_size: u64, proof: Vec<civitas_audit::merkle::Hash>, note: String) -> String {
    AddCheckpoint {
        old_size,
        proof,
        note,
    }
    .to_body()
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
    let witnesses = apps_with(witness_settings).await;
    let logs = apps_with(|settings| {
        settings.department = "transport".to_owned();
        settings.audit.key_file = Some(log_key.clone());
    })
    .await;
    for (log, witness) in logs.into_iter().zip(witnesses) {
        let backend = log.backend;
        let metadata = witness.get("/.well-known/civitas", None).await.json();
        assert_eq!(metadata["witnessKey"], witness_vkey.as_str(), "{backend}");
        let witness_url = witness.url.clone();
        let log = log
            .restart(|settings| {
                settings.department = "transport".to_owned();
                settings.audit.key_file = Some(log_key.clone());
                settings.audit.witnesses = vec![WitnessSettings {
                    url: witness_url.clone(),
                    vkey: witness_vkey.clone(),
                }];
            })
            .await;

        // The log's checkpoints come back cosigned by the witness.
        let created = log.get("/ngsi-ld/v1/entities?type=Vehicle", None).await;
        assert_eq!(created.status, 200, "{backend}: {}", created.text);
        let auditor = crate::audit::auditor_token();
        let log_verifier = Verifier::from_vkey(&log_vkey).expect("a vkey");
        let cosigner = CosignatureVerifier::from_vkey(&witness_vkey).expect("a vkey");
        let mut cosigned = None;
        for _ in 0..300 {
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
                    "civitas/transport",
                    std::slice::from_ref(&cosigner),
                    1,
                )
            {
                cosigned = Some((checkpoint, by));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (_, by) = cosigned.unwrap_or_else(|| panic!("{backend}: no cosigned checkpoint"));
        assert_eq!(by[0].witness, "civitas/environment/witness", "{backend}");

        // A log only this test writes: the witness's decisions, step by step.
        let honest = tree(10, 1);
        let forked = tree(10, 2);
        let water = |size| water_note(&honest, size, &WATER_SEED);
        let (status, line) = submit(&witness, add(0, vec![], water(3))).await;
        assert_eq!(status, 200, "{backend}: {line}");
        let water_verifier = Verifier::from_vkey(&water_vkey).expect("a vkey");
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
            ("a rollback", add(6, vec![], water(5)), 400),
            (
                "another key",
                add(6, proof(&honest, 6, 8), water_note(&honest, 8, &[0x44; 32])),
                403,
            ),
            ("a malformed body", "old six\n\nnote".to_owned(), 400),
        ];
        for (name, body, expected) in &refusals {
            let (status, text) = submit(&witness, body.clone()).await;
            assert_eq!(status, *expected, "{backend}: {name}: {text}");
        }
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
        drop(log);
    }
}
