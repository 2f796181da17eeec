//! The audit log's JSON API (`/audit/v1/proof/…`, `entries`, `records`, `key`), on every backend:
//! every proof the connector serves, for every leaf and every pair of tree sizes of a small log,
//! verifies against roots computed from the served entries and the signed checkpoint; bad
//! parameters are ProblemDetails; only audit tokens read the log; and the record listing finds
//! records by holder, entity, type, operation, decision, request id and time, a page at a time.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use chrono::{TimeZone, Utc};
use civitas_audit::checkpoint::{Checkpoint, open_checkpoint};
use civitas_audit::merkle::{Hash, MemoryTree, leaf_hash, verify_consistency, verify_inclusion};
use civitas_audit::note::Verifier;
use civitas_audit::record::Record;
use civitas_auth::token::{ANY, TokenSpec, issue};
use serde_json::{Value, json};

use crate::helpers::{Reply, TEST_CONTEXT_URL, TestApp, apps_with, link, root_key};

const ORIGIN: &str = "civitas/test";

fn mint(spec: TokenSpec) -> String {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    issue(&root_key(), &spec, now).expect("the token is issued")
}

fn auditor() -> String {
    mint(TokenSpec {
        holder: "auditor".into(),
        audit: true,
        ..TokenSpec::default()
    })
}

/// A token that may read everything (and write everything when `write` is set), but not audit.
fn user(holder: &str, write: bool) -> String {
    mint(TokenSpec {
        holder: holder.into(),
        read: vec![ANY.to_owned()],
        write: if write {
            vec![ANY.to_owned()]
        } else {
            Vec::new()
        },
        ..TokenSpec::default()
    })
}

async fn call(app: &TestApp, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("authorization", authorization.as_str())];
    let body = body.map(Value::to_string);
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    app.request(method, path, &headers, body.as_deref()).await
}

/// GETs `path` with the audit token; asserts a 200 JSON answer and returns its body.
async fn audit_json(app: &TestApp, token: &str, path: &str) -> Value {
    let reply = call(app, token, "GET", path, None).await;
    assert_eq!(reply.status, 200, "{}: {path}: {}", app.backend, reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}: {path}",
        app.backend
    );
    reply.json()
}

fn request_id(reply: &Reply) -> String {
    reply
        .header("civitas-request-id")
        .expect("every response has a request id")
        .to_owned()
}

/// The log's key, as served at `/audit/v1/key` (public: no token).
async fn log_key(app: &TestApp) -> Verifier {
    let reply = app.get("/audit/v1/key", None).await;
    assert_eq!(reply.status, 200, "{}: {}", app.backend, reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{}",
        app.backend
    );
    Verifier::from_vkey(reply.text.trim()).expect("a vkey")
}

/// Polls until a checkpoint covers at least `size` entries: the opened checkpoint and its note.
async fn checkpoint_covering(app: &TestApp, token: &str, size: u64) -> (Checkpoint, String) {
    let verifier = log_key(app).await;
    for _ in 0..500 {
        let reply = call(app, token, "GET", "/audit/v1/checkpoint", None).await;
        if reply.status == 200 {
            let checkpoint = open_checkpoint(&reply.text, &verifier, ORIGIN)
                .unwrap_or_else(|error| panic!("{}: {error}: {}", app.backend, reply.text));
            if checkpoint.size() >= size {
                return (checkpoint, reply.text);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "{}: no checkpoint of {size} entries was signed",
        app.backend
    );
}

fn decode(value: &Value) -> Vec<u8> {
    STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .expect("standard base64")
}

fn hash(value: &Value) -> Hash {
    decode(value).try_into().expect("32 bytes")
}

fn hashes(value: &Value) -> Vec<Hash> {
    value
        .as_array()
        .expect("a list of hashes")
        .iter()
        .map(hash)
        .collect()
}

/// A query parameter value, percent-encoded (base64 has `+`, `/` and `=`).
fn encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The first `size` entries as served by `/audit/v1/entries`, each checked against its leaf hash
/// and its record; and the tree they make, built independently of the store's hashes.
async fn served_tree(app: &TestApp, token: &str, size: u64) -> (Vec<Vec<u8>>, MemoryTree) {
    let backend = app.backend;
    let body = audit_json(app, token, &format!("/audit/v1/entries?start=0&end={size}")).await;
    assert!(body["size"].as_u64() >= Some(size), "{backend}: {body}");
    let listed = body["entries"].as_array().expect("entries");
    assert_eq!(listed.len() as u64, size, "{backend}");
    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    for (index, item) in (0..).zip(listed) {
        assert_eq!(item["index"], index, "{backend}");
        let entry = decode(&item["entry"]);
        assert_eq!(leaf_hash(&entry), hash(&item["leafHash"]), "{backend}");
        Record::from_entry(&entry).expect("a record");
        let parsed: Value = serde_json::from_slice(&entry).expect("JSON");
        assert_eq!(item["record"], parsed, "{backend}: entry {index}");
        tree.append(&entry);
        entries.push(entry);
    }
    (entries, tree)
}

/// Some traffic for the log: creates, reads and refusals.
async fn traffic(app: &TestApp, count: u32) {
    let writer = user("writer", true);
    for n in 0..count {
        let id = format!("urn:ngsi-ld:Vehicle:L{n}");
        let created = call(
            app,
            &writer,
            "POST",
            "/ngsi-ld/v1/entities",
            Some(&json!({"id": id, "type": "Vehicle"})),
        )
        .await;
        assert_eq!(created.status, 201, "{}: {}", app.backend, created.text);
        let read = call(
            app,
            &writer,
            "GET",
            &format!("/ngsi-ld/v1/entities/{id}"),
            None,
        )
        .await;
        assert_eq!(read.status, 200, "{}: {}", app.backend, read.text);
        let refused = call(app, "garbage", "GET", "/ngsi-ld/v1/entities", None).await;
        assert_eq!(refused.status, 401, "{}: {}", app.backend, refused.text);
    }
}

#[actix_web::test]
async fn every_proof_verifies_against_the_entries_and_the_checkpoint() {
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let auditor = auditor();
        traffic(&app, 4).await;
        let (checkpoint, note) = checkpoint_covering(&app, &auditor, 12).await;
        let size = checkpoint.size();
        let (entries, tree) = served_tree(&app, &auditor, size).await;
        assert_eq!(
            &tree.root(size).expect("a root"),
            checkpoint.root(),
            "{backend}: the served entries make the signed tree"
        );
        let verifier = log_key(&app).await;

        // Inclusion of every leaf in every tree that holds it.
        for tree_size in 1..=size {
            let root = tree.root(tree_size).expect("a root");
            for index in 0..tree_size {
                let path = format!("/audit/v1/proof/inclusion?index={index}&treeSize={tree_size}");
                let body = audit_json(&app, &auditor, &path).await;
                assert_eq!(body["leafIndex"], index, "{backend}: {path}");
                assert_eq!(body["treeSize"], tree_size, "{backend}: {path}");
                let leaf = hash(&body["leafHash"]);
                assert_eq!(
                    leaf,
                    leaf_hash(&entries[usize::try_from(index).expect("small")]),
                    "{backend}: {path}"
                );
                let proof = hashes(&body["proof"]);
                verify_inclusion(&leaf, index, tree_size, &proof, &root)
                    .unwrap_or_else(|error| panic!("{backend}: {path}: {error}"));
                assert_eq!(
                    proof,
                    tree.inclusion_proof(index, tree_size).expect("a proof"),
                    "{backend}: {path}"
                );
                // The checkpoint of that size, when one was signed (the log is checkpointed every
                // 20 ms, so some sizes have one and others not).
                match &body["checkpoint"] {
                    Value::Null => assert_ne!(tree_size, size, "{backend}: {path}"),
                    Value::String(signed) => {
                        let signed = open_checkpoint(signed, &verifier, ORIGIN)
                            .unwrap_or_else(|error| panic!("{backend}: {path}: {error}"));
                        assert_eq!(signed.size(), tree_size, "{backend}: {path}");
                        assert_eq!(signed.root(), &root, "{backend}: {path}");
                    }
                    other => panic!("{backend}: {path}: checkpoint {other}"),
                }
                if tree_size == size {
                    assert_eq!(body["checkpoint"], note.as_str(), "{backend}: {path}");
                }
            }
        }

        // Consistency between every pair of sizes, the empty tree included.
        for old in 0..=size {
            let old_root = tree.root(old).expect("a root");
            for new in old..=size {
                let path = format!("/audit/v1/proof/consistency?from={old}&to={new}");
                let body = audit_json(&app, &auditor, &path).await;
                assert_eq!((&body["from"], &body["to"]), (&json!(old), &json!(new)));
                let proof = hashes(&body["proof"]);
                let new_root = tree.root(new).expect("a root");
                verify_consistency(old, new, &old_root, &new_root, &proof)
                    .unwrap_or_else(|error| panic!("{backend}: {path}: {error}"));
                assert_eq!(
                    proof,
                    tree.consistency_proof(old, new).expect("a proof"),
                    "{backend}: {path}"
                );
            }
        }

        // By leaf hash, in hex and in both base64 alphabets: the same leaf.
        for (index, entry) in (0..).zip(&entries) {
            let leaf = leaf_hash(entry);
            let hex: String = leaf.iter().map(|b| format!("{b:02x}")).collect();
            for written in [
                hex.clone(),
                hex.to_uppercase(),
                STANDARD.encode(leaf),
                URL_SAFE.encode(leaf),
            ] {
                let path = format!(
                    "/audit/v1/proof/inclusion?hash={}&treeSize={size}",
                    encoded(&written)
                );
                let body = audit_json(&app, &auditor, &path).await;
                assert_eq!(body["leafIndex"], index, "{backend}: {path}");
                assert_eq!(hash(&body["leafHash"]), leaf, "{backend}: {path}");
                verify_inclusion(
                    &leaf,
                    index,
                    size,
                    &hashes(&body["proof"]),
                    checkpoint.root(),
                )
                .unwrap_or_else(|error| panic!("{backend}: {path}: {error}"));
            }
        }

        // Without a tree size, the proofs are for the latest checkpoint, whose note comes along.
        let body = audit_json(&app, &auditor, "/audit/v1/proof/inclusion?index=1").await;
        let latest = open_checkpoint(
            body["checkpoint"].as_str().expect("the latest checkpoint"),
            &verifier,
            ORIGIN,
        )
        .expect("signed");
        assert_eq!(body["treeSize"], latest.size(), "{backend}");
        assert!(latest.size() >= size, "{backend}");
        verify_inclusion(
            &hash(&body["leafHash"]),
            1,
            latest.size(),
            &hashes(&body["proof"]),
            latest.root(),
        )
        .unwrap_or_else(|error| panic!("{backend}: {error}"));
        let body = audit_json(
            &app,
            &auditor,
            &format!("/audit/v1/proof/consistency?from={size}"),
        )
        .await;
        let to = body["to"].as_u64().expect("a size");
        assert!(to >= latest.size(), "{backend}");
        let at_to = audit_json(
            &app,
            &auditor,
            &format!("/audit/v1/proof/inclusion?index=0&treeSize={to}"),
        )
        .await;
        let signed_to = open_checkpoint(
            at_to["checkpoint"]
                .as_str()
                .expect("a checkpoint of that size"),
            &verifier,
            ORIGIN,
        )
        .expect("signed");
        verify_consistency(
            size,
            to,
            checkpoint.root(),
            signed_to.root(),
            &hashes(&body["proof"]),
        )
        .unwrap_or_else(|error| panic!("{backend}: {error}"));
    }
}

#[actix_web::test]
async fn entries_are_served_by_range() {
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let auditor = auditor();
        traffic(&app, 2).await;
        let (checkpoint, _) = checkpoint_covering(&app, &auditor, 6).await;
        let (entries, _) = served_tree(&app, &auditor, checkpoint.size()).await;
        // A middle range: exactly those entries.
        let body = audit_json(&app, &auditor, "/audit/v1/entries?start=2&end=5").await;
        let listed = body["entries"].as_array().expect("entries");
        assert_eq!(listed.len(), 3, "{backend}");
        for (item, index) in listed.iter().zip(2..) {
            assert_eq!(item["index"], index, "{backend}");
            assert_eq!(decode(&item["entry"]), entries[index], "{backend}");
        }
        assert!(
            body["checkpointSize"].as_u64() >= Some(checkpoint.size()),
            "{backend}"
        );
        // Without an end: from start to the end of the stored log (less than a page here).
        let body = audit_json(&app, &auditor, "/audit/v1/entries?start=1").await;
        let size = body["size"].as_u64().expect("the stored size");
        let listed = body["entries"].as_array().expect("entries");
        assert_eq!(listed.len() as u64, size - 1, "{backend}");
        assert_eq!(listed[0]["index"], 1, "{backend}");
        // Beyond the log, or an empty range: nothing.
        for path in [
            "/audit/v1/entries?start=100000",
            "/audit/v1/entries?start=3&end=3",
            "/audit/v1/entries?start=3&end=1",
        ] {
            let body = audit_json(&app, &auditor, path).await;
            assert_eq!(body["entries"], json!([]), "{backend}: {path}");
        }
        // An end beyond the log is clipped to it.
        let body = audit_json(&app, &auditor, "/audit/v1/entries?start=0&end=100000").await;
        let size = body["size"].as_u64().expect("the stored size");
        assert_eq!(
            body["entries"].as_array().map(Vec::len),
            Some(usize::try_from(size).expect("small")),
            "{backend}"
        );
    }
}

/// The log as a caller that is not an auditor sees it, and what bad parameters get.
#[actix_web::test]
async fn only_auditors_read_the_log_and_bad_parameters_are_problems() {
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let auditor = auditor();
        let reader = user("reader", false);
        traffic(&app, 1).await;
        let (checkpoint, _) = checkpoint_covering(&app, &auditor, 3).await;
        let size = checkpoint.size();
        let endpoints = [
            "/audit/v1/proof/inclusion?index=0",
            "/audit/v1/proof/consistency?from=1",
            "/audit/v1/entries?start=0",
            "/audit/v1/records",
        ];
        for path in endpoints {
            let anonymous = app.get(path, None).await;
            assert_eq!(
                anonymous.status, 401,
                "{backend}: {path}: {}",
                anonymous.text
            );
            assert_eq!(
                anonymous.header("www-authenticate"),
                Some("Bearer"),
                "{backend}: {path}"
            );
            assert!(anonymous.json()["type"].is_string(), "{backend}: {path}");
            let forged = call(&app, "garbage", "GET", path, None).await;
            assert_eq!(forged.status, 401, "{backend}: {path}: {}", forged.text);
            let refused = call(&app, &reader, "GET", path, None).await;
            assert_eq!(refused.status, 403, "{backend}: {path}: {}", refused.text);
            assert!(refused.json()["type"].is_string(), "{backend}: {path}");
            let posted = call(&app, &auditor, "POST", path, None).await;
            assert_eq!(posted.status, 405, "{backend}: {path}: {}", posted.text);
        }
        // The key is public, and the checkpoints open with it.
        let key = app.get("/audit/v1/key", None).await;
        assert_eq!(key.status, 200, "{backend}");
        let metadata = app.get("/.well-known/civitas", None).await.json();
        assert_eq!(key.text.trim(), metadata["auditKey"], "{backend}");
        app.get("/audit/v1/key?x=1", None)
            .await
            .assert_problem(400, "InvalidRequest");

        let beyond = size + 1_000_000;
        let zeros = "00".repeat(32);
        let problems = [
            // Unknown parameters.
            (
                "/audit/v1/proof/inclusion?index=0&leaf=0".to_owned(),
                400,
                "InvalidRequest",
            ),
            (
                "/audit/v1/proof/consistency?from=0&size=1".to_owned(),
                400,
                "InvalidRequest",
            ),
            (
                "/audit/v1/entries?start=0&count=1".to_owned(),
                400,
                "InvalidRequest",
            ),
            (
                "/audit/v1/records?holder=a&color=red".to_owned(),
                400,
                "InvalidRequest",
            ),
            // Inclusion: the leaf must be in the tree, the tree in the log.
            (
                format!("/audit/v1/proof/inclusion?index={size}&treeSize={size}"),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/inclusion?index=0&treeSize=0".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                format!("/audit/v1/proof/inclusion?index=0&treeSize={beyond}"),
                404,
                "ResourceNotFound",
            ),
            (
                "/audit/v1/proof/inclusion?index=-1".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/inclusion?index=one".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/inclusion?index=0&treeSize=x".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/inclusion".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                format!("/audit/v1/proof/inclusion?index=0&hash={zeros}"),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/inclusion?hash=zz".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                format!("/audit/v1/proof/inclusion?hash={}", "zz".repeat(32)),
                400,
                "BadRequestData",
            ),
            (
                format!("/audit/v1/proof/inclusion?hash={}", "00".repeat(31)),
                400,
                "BadRequestData",
            ),
            (
                format!("/audit/v1/proof/inclusion?hash={zeros}"),
                404,
                "ResourceNotFound",
            ),
            // Consistency: sizes in order, within the log.
            (
                "/audit/v1/proof/consistency?from=3&to=2".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/consistency?to=2".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/proof/consistency?from=a".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                format!("/audit/v1/proof/consistency?from=1&to={beyond}"),
                404,
                "ResourceNotFound",
            ),
            // Entries.
            (
                "/audit/v1/entries?start=x".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/entries?start=0&end=-3".to_owned(),
                400,
                "BadRequestData",
            ),
            // Records.
            (
                "/audit/v1/records?limit=0".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/records?limit=1001".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/records?after=-1".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/records?decision=maybe".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/records?operation=delete".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/records?since=yesterday".to_owned(),
                400,
                "BadRequestData",
            ),
            (
                "/audit/v1/records?until=2026-01-01".to_owned(),
                400,
                "BadRequestData",
            ),
            ("/audit/v1/records?type=".to_owned(), 400, "BadRequestData"),
        ];
        for (path, status, kind) in problems {
            let reply = call(&app, &auditor, "GET", &path, None).await;
            assert_eq!(reply.status, status, "{backend}: {path}: {}", reply.text);
            reply.assert_problem(status, kind);
        }
    }
}

/// With checkpoints far apart, the log grows beyond its latest checkpoint: proofs for the stored
/// sizes are served (without a checkpoint), the default tree size stays the checkpoint's.
#[actix_web::test]
async fn proofs_reach_beyond_the_latest_checkpoint() {
    for app in apps_with(|settings| settings.audit.checkpoint_interval_ms = 3_600_000).await {
        let backend = app.backend;
        let auditor = auditor();
        // The first checkpoint is signed at start (usually of the empty log).
        let (checkpoint, _) = checkpoint_covering(&app, &auditor, 0).await;
        let signed = checkpoint.size();
        traffic(&app, 2).await;
        let body = audit_json(&app, &auditor, "/audit/v1/entries?start=0").await;
        assert_eq!(body["checkpointSize"], signed, "{backend}");
        let size = body["size"].as_u64().expect("the stored size");
        assert!(size >= signed + 6, "{backend}");
        let (_, tree) = served_tree(&app, &auditor, size).await;
        for index in [signed, size - 1] {
            let path = format!("/audit/v1/proof/inclusion?index={index}&treeSize={size}");
            let body = audit_json(&app, &auditor, &path).await;
            assert_eq!(body["checkpoint"], Value::Null, "{backend}: {path}");
            verify_inclusion(
                &hash(&body["leafHash"]),
                index,
                size,
                &hashes(&body["proof"]),
                &tree.root(size).expect("a root"),
            )
            .unwrap_or_else(|error| panic!("{backend}: {path}: {error}"));
        }
        let path = format!("/audit/v1/proof/consistency?from={signed}&to={size}");
        let body = audit_json(&app, &auditor, &path).await;
        verify_consistency(
            signed,
            size,
            checkpoint.root(),
            &tree.root(size).expect("a root"),
            &hashes(&body["proof"]),
        )
        .unwrap_or_else(|error| panic!("{backend}: {path}: {error}"));
        // By default, the tree is the checkpoint's: the new entries are not in it yet.
        let path = format!("/audit/v1/proof/inclusion?index={signed}");
        call(&app, &auditor, "GET", &path, None)
            .await
            .assert_problem(400, "BadRequestData");
        let body = audit_json(&app, &auditor, "/audit/v1/proof/consistency?from=0").await;
        assert_eq!(body["to"], signed, "{backend}");
    }
}

/// One listing: the request ids of its records, and its `next`.
async fn listing(
    app: &TestApp,
    token: &str,
    query: &str,
    context: Option<&str>,
) -> (Vec<String>, Value) {
    let authorization = format!("Bearer {token}");
    let link_value = context.map(link);
    let mut headers = vec![("authorization", authorization.as_str())];
    if let Some(link_value) = &link_value {
        headers.push(("link", link_value.as_str()));
    }
    let path = format!("/audit/v1/records?{query}");
    let reply = app.request("GET", &path, &headers, None).await;
    assert_eq!(reply.status, 200, "{}: {path}: {}", app.backend, reply.text);
    let body = reply.json();
    assert!(
        body["checkpointSize"].is_u64() || body["checkpointSize"].is_null(),
        "{body}"
    );
    let mut ids = Vec::new();
    let mut previous = None;
    for item in body["records"].as_array().expect("records") {
        // Every listed record is the entry whose leaf hash is given, in log order.
        let record: Record = serde_json::from_value(item["record"].clone()).expect("a record");
        let entry = record.to_entry().expect("encodes");
        assert_eq!(leaf_hash(&entry), hash(&item["leafHash"]), "{path}");
        let index = item["index"].as_u64().expect("an index");
        assert!(previous < Some(index), "{path}: {body}");
        previous = Some(index);
        ids.push(record.request_id);
    }
    (ids, body["next"].clone())
}

#[actix_web::test]
async fn records_are_found_by_every_filter() {
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let auditor = auditor();
        let (alice, bob) = (user("alice", false), user("bob", true));
        let vehicle = json!({"id": "urn:ngsi-ld:Vehicle:R1", "type": "Vehicle"});
        let created = call(&app, &bob, "POST", "/ngsi-ld/v1/entities", Some(&vehicle)).await;
        assert_eq!(created.status, 201, "{backend}: {}", created.text);
        // Bob creates a vehicle of the test context's type, `https://example.org/ns#Vehicle`.
        let bob_auth = format!("Bearer {bob}");
        let test_link = link(TEST_CONTEXT_URL);
        let other = app
            .request(
                "POST",
                "/ngsi-ld/v1/entities",
                &[
                    ("authorization", bob_auth.as_str()),
                    ("content-type", "application/json"),
                    ("link", test_link.as_str()),
                ],
                Some(&json!({"id": "urn:ngsi-ld:Vehicle:X1", "type": "Vehicle"}).to_string()),
            )
            .await;
        assert_eq!(other.status, 201, "{backend}: {}", other.text);
        let path = "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:R1";
        let first_read = call(&app, &alice, "GET", path, None).await;
        assert_eq!(first_read.status, 200, "{backend}: {}", first_read.text);
        let second_read = call(&app, &alice, "GET", path, None).await;
        assert_eq!(second_read.status, 200, "{backend}: {}", second_read.text);
        let other_read = call(
            &app,
            &alice,
            "GET",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:X1",
            None,
        )
        .await;
        assert_eq!(other_read.status, 200, "{backend}: {}", other_read.text);
        let refused_write = call(
            &app,
            &alice,
            "POST",
            "/ngsi-ld/v1/entities",
            Some(&json!({"id": "urn:ngsi-ld:Vehicle:R2", "type": "Vehicle"})),
        )
        .await;
        assert_eq!(
            refused_write.status, 403,
            "{backend}: {}",
            refused_write.text
        );
        let forged = call(&app, "garbage", "GET", path, None).await;
        assert_eq!(forged.status, 401, "{backend}: {}", forged.text);
        let [
            created,
            other,
            first_read,
            second_read,
            other_read,
            refused_write,
            forged,
        ] = [
            &created,
            &other,
            &first_read,
            &second_read,
            &other_read,
            &refused_write,
            &forged,
        ]
        .map(request_id);

        let check = |query: &'static str, context: Option<&'static str>, expected: Vec<&String>| {
            let expected: Vec<String> = expected.into_iter().cloned().collect();
            let (app, auditor) = (&app, &auditor);
            async move {
                let (ids, _) = listing(app, auditor, query, context).await;
                assert_eq!(ids, expected, "{}: {query}", app.backend);
            }
        };
        let alices = vec![&first_read, &second_read, &other_read];
        // By holder, given in the clear and matched through its pseudonym. A request refused at
        // the decision names no holder (its record keeps the token's revocation ids), so
        // Alice's refused write is found by what it was, not by who she is.
        check("holder=alice", None, alices.clone()).await;
        check("holder=bob", None, vec![&created, &other]).await;
        check("holder=carol", None, vec![]).await;
        // By decision and operation.
        check("holder=alice&decision=allowed", None, alices.clone()).await;
        check("holder=alice&operation=read", None, alices.clone()).await;
        check("holder=alice&decision=refused", None, vec![]).await;
        check("holder=bob&operation=read", None, vec![]).await;
        check(
            "decision=refused&operation=write",
            None,
            vec![&refused_write],
        )
        .await;
        check("decision=refused&operation=read", None, vec![&forged]).await;
        check(
            "decision=allowed&operation=write",
            None,
            vec![&created, &other],
        )
        .await;
        // By request id.
        let query = format!("requestId={second_read}");
        let (ids, _) = listing(&app, &auditor, &query, None).await;
        assert_eq!(ids, std::slice::from_ref(&second_read), "{backend}");
        let (ids, _) = listing(&app, &auditor, "requestId=nothing", None).await;
        assert!(ids.is_empty(), "{backend}");
        // By entity id (in the clear, matched through its pseudonym).
        check(
            "entity=urn:ngsi-ld:Vehicle:R1&holder=alice",
            None,
            vec![&first_read, &second_read],
        )
        .await;
        check(
            "entity=urn:ngsi-ld:Vehicle:X1&holder=alice",
            None,
            vec![&other_read],
        )
        .await;
        check("entity=urn:ngsi-ld:Vehicle:R9", None, vec![]).await;
        // Whoever created, read or tried to read it; the refusal names the entity of its path.
        check(
            "entity=urn:ngsi-ld:Vehicle:R1",
            None,
            vec![&created, &first_read, &second_read, &forged],
        )
        .await;
        // By type: a short name is expanded against the request's @context (its Link header,
        // else the core context), as in queries; an absolute IRI is taken as it is.
        check(
            "type=Vehicle&holder=alice",
            None,
            vec![&first_read, &second_read],
        )
        .await;
        check(
            "type=Vehicle&holder=alice",
            Some(TEST_CONTEXT_URL),
            vec![&other_read],
        )
        .await;
        check(
            "type=ex:Vehicle&holder=bob",
            Some(TEST_CONTEXT_URL),
            vec![&other],
        )
        .await;
        check(
            "type=https://example.org/ns%23Vehicle",
            None,
            vec![&other, &other_read],
        )
        .await;
        check(
            "type=https://uri.etsi.org/ngsi-ld/default-context/Vehicle&holder=bob",
            None,
            vec![&created],
        )
        .await;
        check("type=Building", None, vec![]).await;
        // By time: every request here was made at the test clock's 2026-01-01T00:00:00Z;
        // `since` is inclusive, `until` exclusive.
        check(
            "holder=alice&since=2026-01-01T00:00:00Z",
            None,
            alices.clone(),
        )
        .await;
        check(
            "holder=alice&since=2026-01-01T01:00:00%2B01:00",
            None,
            alices.clone(),
        )
        .await;
        check(
            "holder=alice&since=2026-01-01T00:00:00.000001Z",
            None,
            vec![],
        )
        .await;
        check("holder=alice&until=2026-01-01T00:00:00Z", None, vec![]).await;
        check(
            "holder=alice&since=2025-12-31T23:59:59Z&until=2026-01-01T00:00:00.000001Z",
            None,
            alices.clone(),
        )
        .await;

        // A page at a time: `next` continues `after`, until it is null at the end of the log.
        let expected: Vec<String> = alices.into_iter().cloned().collect();
        let mut paged = Vec::new();
        let mut after: Option<u64> = None;
        let mut pages = 0;
        loop {
            let query = match after {
                None => "holder=alice&limit=1".to_owned(),
                Some(after) => format!("holder=alice&limit=1&after={after}"),
            };
            let (ids, next) = listing(&app, &auditor, &query, None).await;
            assert!(ids.len() <= 1, "{backend}: {ids:?}");
            paged.extend(ids);
            pages += 1;
            assert!(pages <= 10, "{backend}: the listing does not end");
            match next.as_u64() {
                Some(next) => {
                    assert!(after < Some(next), "{backend}: next goes forward");
                    after = Some(next);
                }
                None => {
                    assert!(next.is_null(), "{backend}: {next}");
                    break;
                }
            }
        }
        assert_eq!(paged, expected, "{backend}");
        // Two records a page: the first two, then the rest from after the first page.
        let (ids, next) = listing(&app, &auditor, "holder=alice&limit=2", None).await;
        assert_eq!(ids, expected[..2], "{backend}");
        let query = format!(
            "holder=alice&limit=2&after={}",
            next.as_u64().expect("a next page")
        );
        let (ids, _) = listing(&app, &auditor, &query, None).await;
        assert_eq!(ids, expected[2..], "{backend}");

        // The auditor's own listings are recorded too.
        let (audits, _) = listing(&app, &auditor, "holder=auditor&operation=audit", None).await;
        assert!(!audits.is_empty(), "{backend}");
    }
}
