//! `civitas audit verify` against logs that lie: each way a department could tamper with its
//! published audit log is served over HTTP by a small in-test server, and the real binary must
//! exit 1 with a message naming the problem, leaving the auditor's state file as it was.
//!
//! Every log is built with `civitas_audit` from fixed seeds and times: records as the connector
//! writes them, tiles and entry bundles, a checkpoint signed by the log and cosigned by one
//! witness.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use civitas_audit::checkpoint::{Checkpoint, CosignatureVerifier, cosign, sign_checkpoint};
use civitas_audit::merkle::{Hash, MemoryTree, leaf_hash};
use civitas_audit::note::{self, Signer};
use civitas_audit::record::{Access, Decision, Event, FORMAT_VERSION, Record};
use civitas_audit::tiles::{decode_bundle, encode_bundle, tile_bytes, tiles_for_size};

use crate::civitas;

const ORIGIN: &str = "civitas/test";
const WITNESS: &str = "civitas/witness";
const TOKEN: &str = "auditor-token";
/// When the witness cosigns (2026-01-01T00:00:00Z).
const TIME: u64 = 1_767_225_600;
/// Two level 0 tiles (a full one and one of 44 hashes), one level 1 tile of 1 hash.
const SIZE: u64 = 300;

type Served = HashMap<String, Vec<u8>>;

fn signer(name: &str, seed: u8) -> Signer {
    Signer::from_seed(name, &[seed; 32]).expect("a valid name and seed")
}

/// Record `index` of a history, as the connector would write it.
fn record(history: &str, index: u64) -> Vec<u8> {
    let access = Access {
        holder: Some(format!("h:{history}{}", index % 3)),
        entity_types: vec!["https://uri.etsi.org/ngsi-ld/default-context/Vehicle".to_owned()],
        count: Some(1),
        status: Some(200),
        ..Access::new("read", Decision::Allowed)
    };
    Record {
        v: FORMAT_VERSION,
        time: 1_767_225_600_000_000 + i64::try_from(index).expect("small") * 1000,
        service: "test".to_owned(),
        request_id: format!("{history}-{index}"),
        trace_id: None,
        event: Event::Access(access),
    }
    .to_entry()
    .expect("a record fits an entry")
}

/// A log whose records are those of history "A" before `fork_at`, then of `after`.
struct Log {
    entries: Vec<Vec<u8>>,
    tree: MemoryTree,
}

impl Log {
    fn new(size: u64) -> Log {
        Log::forked(size, size, "A")
    }

    fn forked(size: u64, fork_at: u64, after: &str) -> Log {
        let entries: Vec<Vec<u8>> = (0..size)
            .map(|index| record(if index < fork_at { "A" } else { after }, index))
            .collect();
        let mut tree = MemoryTree::new();
        entries.iter().for_each(|entry| _ = tree.append(entry));
        Log { entries, tree }
    }

    fn root(&self, size: u64) -> Hash {
        self.tree.root(size).expect("the tree holds `size` leaves")
    }

    /// The log as served at `size`, its checkpoint signed by `key` and cosigned by the witness.
    fn serve_signed(&self, size: u64, key: &Signer) -> Served {
        let mut served = Served::new();
        for level in tiles_for_size(size) {
            for tile in level.tiles() {
                served.insert(tile.path(), tile_bytes(&self.tree, tile).expect("a tile"));
                if let Some(bundle) = tile.entry_bundle() {
                    let first = usize::try_from(bundle.index() * 256).expect("small");
                    let entries = &self.entries[first..first + usize::from(bundle.width())];
                    served.insert(bundle.path(), encode_bundle(entries).expect("a bundle"));
                }
            }
        }
        let checkpoint = Checkpoint::new(key.name(), size, self.root(size)).expect("valid");
        let note = cosign(
            &sign_checkpoint(&checkpoint, key),
            &signer(WITNESS, 2),
            TIME,
        )
        .expect("cosignable");
        served.insert("checkpoint".to_owned(), note.into_bytes());
        served
    }

    fn serve(&self, size: u64) -> Served {
        self.serve_signed(size, &signer(ORIGIN, 1))
    }
}

/// A log server on 127.0.0.1: `/.well-known/civitas` with the log's key, `/audit/v1/<path>` from
/// the served map for requests bearing [`TOKEN`], 404 for the rest.
struct LogServer {
    url: String,
    served: Arc<Mutex<Served>>,
    key: Arc<Mutex<String>>,
}

impl LogServer {
    fn start() -> LogServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let served = Arc::new(Mutex::new(Served::new()));
        let key = Arc::new(Mutex::new(signer(ORIGIN, 1).verifier().to_vkey()));
        let (served_by_thread, key_by_thread) = (served.clone(), key.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("a stream"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        authorized = line.trim_end().ends_with(&format!("Bearer {TOKEN}"));
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or_default();
                let (status, body) = if path == "/.well-known/civitas" {
                    let key = key_by_thread.lock().expect("lock").clone();
                    (200, format!(r#"{{"auditKey":"{key}"}}"#).into_bytes())
                } else if let Some(path) = path.strip_prefix("/audit/v1/") {
                    match (authorized, served_by_thread.lock().expect("lock").get(path)) {
                        (false, _) => (403, b"{}".to_vec()),
                        (true, Some(bytes)) => (200, bytes.clone()),
                        (true, None) => (404, b"{}".to_vec()),
                    }
                } else {
                    (404, b"{}".to_vec())
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
                let _ = stream.flush();
                // Close our side first, so the client reads the whole response before the end.
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        });
        LogServer { url, served, key }
    }

    fn serve(&self, served: Served) {
        *self.served.lock().expect("lock") = served;
    }

    fn publish_key(&self, vkey: String) {
        *self.key.lock().expect("lock") = vkey;
    }

    /// Runs `civitas audit verify` with the witness required and `state` as the state file.
    fn verify(&self, state: &Path, token: &str) -> (Option<i32>, String, String) {
        let witness = CosignatureVerifier::of(&signer(WITNESS, 2)).to_vkey();
        civitas(&[
            "audit",
            "verify",
            "--url",
            &self.url,
            "--auth",
            token,
            "--state",
            state.to_str().expect("a UTF-8 path"),
            "--witness",
            &witness,
        ])
    }
}

fn edit_entries(served: &mut Served, bundle: &str, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let bytes = served.get_mut(bundle).expect("the bundle is served");
    let mut entries = decode_bundle(bytes).expect("the bundle decodes");
    edit(&mut entries);
    *bytes = encode_bundle(&entries).expect("entries fit a bundle");
}

fn edit_checkpoint(served: &mut Served, edit: impl FnOnce(&str) -> String) {
    let bytes = served.get_mut("checkpoint").expect("served");
    let note = String::from_utf8(bytes.clone()).expect("UTF-8");
    *bytes = edit(&note).into_bytes();
}

/// A checkpoint of the honest tree with the given cosigners only.
fn checkpoint_cosigned_by(witnesses: &[Signer]) -> Vec<u8> {
    let log = Log::new(SIZE);
    let checkpoint = Checkpoint::new(ORIGIN, SIZE, log.root(SIZE)).expect("valid");
    witnesses
        .iter()
        .fold(
            sign_checkpoint(&checkpoint, &signer(ORIGIN, 1)),
            |note, witness| cosign(&note, witness, TIME).expect("cosignable"),
        )
        .into_bytes()
}

/// One way to lie: what is served (the honest log of [`SIZE`] entries, tampered with), what the
/// auditor remembers (the honest checkpoint of this size, or none), and what it must say.
struct Case {
    name: &'static str,
    remembered: Option<u64>,
    serve: fn() -> Served,
    expected: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "flipped byte in an entry",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            edit_entries(&mut served, "tile/entries/000", |entries| {
                entries[17][40] ^= 1;
            });
            served
        },
        expected: "entry 17 does not match its leaf hash in tile/0/000",
    },
    Case {
        name: "swapped entries",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            edit_entries(&mut served, "tile/entries/001.p/44", |entries| {
                entries.swap(4, 9);
            });
            served
        },
        expected: "entry 260 does not match its leaf hash in tile/0/001.p/44",
    },
    Case {
        name: "truncated log: the last entry dropped",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            edit_entries(&mut served, "tile/entries/001.p/44", |entries| {
                entries.pop();
            });
            served
        },
        expected: "the entry bundle has 43 entries, but its width is 44",
    },
    Case {
        name: "truncated log: tiles of a shorter tree under the checkpoint",
        remembered: None,
        serve: || {
            let log = Log::new(SIZE);
            let mut served = log.serve(290);
            served.insert(
                "checkpoint".to_owned(),
                log.serve(SIZE)["checkpoint"].clone(),
            );
            served
        },
        expected: "tile/0/001.p/44: not served (404)",
    },
    Case {
        name: "forged entry, its leaf hash recomputed",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            let forged = record("forged", 17);
            let tile = served.get_mut("tile/0/000").expect("served");
            tile[17 * 32..18 * 32].copy_from_slice(&leaf_hash(&forged));
            edit_entries(&mut served, "tile/entries/000", |entries| {
                entries[17] = forged;
            });
            served
        },
        expected: "tile/0/000 does not hash to hash 0 of tile/1/000.p/1",
    },
    Case {
        name: "edited checkpoint",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            edit_checkpoint(&mut served, |note| note.replacen("\n300\n", "\n299\n", 1));
            served
        },
        expected: "does not verify",
    },
    Case {
        name: "stripped cosignature",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            served.insert("checkpoint".to_owned(), checkpoint_cosigned_by(&[]));
            served
        },
        expected: "0 known witnesses cosigned the checkpoint, but 1 are required",
    },
    Case {
        name: "forged cosignature under the witness's name and key id",
        remembered: None,
        serve: || {
            let mut served = Log::new(SIZE).serve(SIZE);
            let forged =
                String::from_utf8(checkpoint_cosigned_by(&[signer(WITNESS, 9)])).expect("UTF-8");
            let parsed = note::parse(&forged).expect("a note");
            let mut signatures = parsed.signatures.clone();
            if let Some(last) = signatures.last_mut() {
                last.key_id = CosignatureVerifier::of(&signer(WITNESS, 2)).key_id();
            }
            let lines: String = signatures
                .iter()
                .map(note::NoteSignature::to_line)
                .collect();
            served.insert(
                "checkpoint".to_owned(),
                format!("{}\n{lines}", parsed.text).into_bytes(),
            );
            served
        },
        expected: "the cosignature of civitas/witness does not verify",
    },
    Case {
        name: "rewritten history after a checkpoint was seen (fork)",
        remembered: Some(200),
        serve: || Log::forked(SIZE, 100, "B").serve(SIZE),
        expected: "the tree of 300 is not an extension of the remembered tree of 200 (fork)",
    },
    Case {
        name: "replayed old checkpoint",
        remembered: Some(SIZE),
        serve: || Log::new(SIZE).serve(250),
        expected: "checkpoint size 250 is older than the remembered 300 (rollback)",
    },
    Case {
        name: "the log re-signed with a new key",
        remembered: Some(200),
        serve: || Log::new(SIZE).serve_signed(SIZE, &signer(ORIGIN, 42)),
        expected: "the note is signed by no known key",
    },
];

#[test]
fn audit_verify_passes_honest_logs_and_names_every_lie() {
    let server = LogServer::start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let honest = Log::new(SIZE);

    // An honest log verifies, the state is written, and a grown log verifies against it.
    let state = dir.path().join("first.json");
    server.serve(honest.serve(200));
    let (code, out, err) = server.verify(&state, TOKEN);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        "verified civitas/test: checkpoint of 200 entries, 200 entries proven included, \
         cosigned by civitas/witness"
    );
    server.serve(honest.serve(SIZE));
    let (code, out, err) = server.verify(&state, TOKEN);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "300 entries proven included, consistent with the remembered checkpoint of 200"
        ),
        "{out}"
    );

    // Without the audit right, nothing is verified.
    let (code, _, err) = server.verify(&dir.path().join("none.json"), "another-token");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("audit right"), "{err}");

    let mut failures = Vec::new();
    for (number, case) in CASES.iter().enumerate() {
        let state = dir.path().join(format!("case-{number}.json"));
        if let Some(size) = case.remembered {
            server.serve(honest.serve(size));
            let (code, out, err) = server.verify(&state, TOKEN);
            assert_eq!(code, Some(0), "{}: the honest run: {out}{err}", case.name);
        }
        let before = std::fs::read(&state).ok();
        // The service publishes whatever key signs its checkpoints now.
        server.publish_key(signer(ORIGIN, 1).verifier().to_vkey());
        server.serve((case.serve)());
        let (code, out, err) = server.verify(&state, TOKEN);
        if code != Some(1) || !err.contains(case.expected) {
            failures.push(format!(
                "{}: exit {code:?}, expected 1 and {:?}; stdout {out:?}, stderr {err:?}",
                case.name, case.expected
            ));
        }
        assert_eq!(
            std::fs::read(&state).ok(),
            before,
            "{}: a failed verification leaves the state as it was",
            case.name
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// An HTTP client (the workspace's rustls is built without a default crypto provider).
fn http_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

/// A connector process, killed if the test ends before it is.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_connector(config: &Path, url: &str) -> Process {
    let child = std::process::Command::new(crate::BINARY)
        .args(["connector", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the connector starts");
    let process = Process(child);
    let client = http_client();
    for _ in 0..300 {
        if client
            .get(format!("{url}/health"))
            .send()
            .is_ok_and(|response| response.status().is_success())
        {
            return process;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the connector did not become healthy at {url}");
}

/// Every request id of the log's stored entries, and the stored size.
fn recorded_request_ids(url: &str, token: &str) -> (std::collections::HashSet<String>, u64) {
    let client = http_client();
    let mut ids = std::collections::HashSet::new();
    let mut start = 0;
    loop {
        let page: serde_json::Value = client
            .get(format!("{url}/audit/v1/entries?start={start}"))
            .bearer_auth(token)
            .send()
            .and_then(|response| response.error_for_status())
            .and_then(|response| response.json())
            .expect("the entries are listed");
        let entries = page["entries"].as_array().expect("entries");
        for entry in entries {
            ids.insert(
                entry["record"]["requestId"]
                    .as_str()
                    .expect("a request id")
                    .to_owned(),
            );
        }
        start += entries.len() as u64;
        if entries.is_empty() || start >= page["size"].as_u64().expect("a size") {
            return (ids, start);
        }
    }
}

/// kill -9 during load, then a restart: every request that got a response has its record in
/// the log, and the log verifies. On each backend: the connector's settings are a file, so its
/// spool is beside the SQLite file, or in the settings file's folder for PostgreSQL.
#[test]
fn every_acknowledged_request_survives_a_crash() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for database in runtime.block_on(civitas_testkit::test_databases()) {
        crash_and_recover(&database.url, database.kind);
    }
}

fn crash_and_recover(database_url: &str, backend: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("a temp dir");
    let key = dir.path().join("test.key");
    let key_arg = key.to_str().expect("UTF-8");
    let (code, public_key, err) = civitas(&["keygen", "--out", key_arg]);
    assert_eq!(code, Some(0), "{err}");
    let issue = |extra: &[&str]| {
        let mut args = vec!["token", "issue", "--key", key_arg];
        args.extend_from_slice(extra);
        let (code, token, err) = civitas(&args);
        assert_eq!(code, Some(0), "{err}");
        token.trim().to_owned()
    };
    let auditor = issue(&["--holder", "auditor", "--audit"]);
    let app = issue(&["--holder", "app", "--read", "*", "--write", "*"]);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("connector.toml");
    std::fs::write(
        &config,
        format!(
            "department = \"test\"\nlisten = \"127.0.0.1:{port}\"\n\
             database_url = \"{database_url}\"\n\n[auth]\npublic_key = \"{}\"\n\n\
             [audit]\nkey_file = \"{}\"\ncheckpoint_interval_ms = 50\n",
            public_key.trim(),
            dir.path().join("audit.key").display(),
        ),
    )
    .expect("the config is written");
    std::fs::write(dir.path().join("audit.key"), "2a".repeat(32)).expect("the audit key");

    let mut connector = start_connector(&config, &url);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, acknowledged, url, app) =
                (stop.clone(), acknowledged.clone(), url.clone(), app.clone());
            std::thread::spawn(move || {
                let client = http_client();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("urn:ngsi-ld:Vehicle:w{worker}n{n}");
                    let request = if n % 2 == 0 {
                        client
                            .post(format!("{url}/ngsi-ld/v1/entities"))
                            .header("content-type", "application/json")
                            .body(format!(r#"{{"id":"{id}","type":"Vehicle"}}"#))
                    } else {
                        client.get(format!("{url}/ngsi-ld/v1/entities?type=Vehicle&limit=5"))
                    };
                    match request.bearer_auth(&app).send() {
                        Ok(response) => {
                            if let Some(id) = response.headers().get("civitas-request-id") {
                                let id = id.to_str().expect("ASCII").to_owned();
                                acknowledged.lock().expect("lock").push(id);
                            }
                        }
                        // The connector is gone.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SIGKILL: no shutdown, no flush, nothing but what is durable.
    connector.0.kill().expect("the connector is killed");
    connector.0.wait().expect("reaped");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a worker");
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    assert!(
        acknowledged.len() > 20,
        "{backend}: too little load: {}",
        acknowledged.len()
    );
    if backend == "postgres" {
        // Killed with records in the spool, which is where a settings file puts it.
        assert!(dir.path().join("test-audit-spool").join("log").exists());
    }

    let _restarted = start_connector(&config, &url);
    let (recorded, stored) = recorded_request_ids(&url, &auditor);
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{backend}: {} of {} acknowledged requests have no record: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    // The log verifies, once a checkpoint covers everything stored before the restart.
    let mut outcome = (None, String::new(), String::new());
    for _ in 0..100 {
        outcome = civitas(&[
            "audit", "verify", "--url", &url, "--auth", &auditor, "--json",
        ]);
        let size = serde_json::from_str::<serde_json::Value>(&outcome.1)
            .ok()
            .and_then(|summary| summary["size"].as_u64());
        if outcome.0 != Some(0) || size.is_some_and(|size| size >= stored) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, out, err) = outcome;
    assert_eq!(code, Some(0), "{backend}: {out}{err}");
    assert!(out.contains("\"verified\":true"), "{backend}: {out}");

    // The auditor's listing finds one request by its id, and the app's writes by holder.
    let first = &acknowledged[0];
    let (code, out, err) = civitas(&[
        "audit",
        "log",
        "--url",
        &url,
        "--auth",
        &auditor,
        "--request-id",
        first,
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("a JSON array");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(listed[0]["record"]["requestId"], first.as_str(), "{out}");
    let (code, out, err) = civitas(&[
        "audit",
        "log",
        "--url",
        &url,
        "--auth",
        &auditor,
        "--holder",
        "app",
        "--operation",
        "write",
        "--limit",
        "3",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "a header, 3 rows and a count: {out}");
    assert!(lines[0].starts_with("INDEX  TIME"), "{out}");
    assert!(
        lines[1..4].iter().all(|row| row.contains(" write ")),
        "{out}"
    );
    assert_eq!(lines[4], "3 record(s)", "{out}");
}
