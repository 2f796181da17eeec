//! The audit log through the HTTP API, on every backend: every authorization decision becomes
//! one record, the log served under `/audit/v1/` verifies with the independent auditor
//! (`civitas_audit::auditor::verify`), only audit tokens may read it, and the log and its key
//! survive a restart.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{TimeZone, Utc};
use civitas_audit::auditor::{self, Policy, State};
use civitas_audit::checkpoint::open_checkpoint;
use civitas_audit::note::{Signer, Verifier};
use civitas_audit::record::{Decision, Event, Record};
use civitas_audit::tiles::tiles_for_size;
use civitas_auth::token::{ANY, TokenSpec, issue};
use serde_json::json;

use crate::helpers::{Reply, TestApp, apps_with, root_key};

const ORIGIN: &str = "civitas/test";

fn mint(spec: &TokenSpec) -> String {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    issue(&root_key(), spec, now).expect("the token is issued")
}

/// A token with the audit right, for other test modules.
pub fn auditor_token() -> String {
    auditor()
}

fn auditor() -> String {
    mint(&TokenSpec {
        holder: "auditor".into(),
        audit: true,
        ..TokenSpec::default()
    })
}

fn reader() -> String {
    mint(&TokenSpec {
        holder: "tester".into(),
        read: vec![ANY.to_owned()],
        ..TokenSpec::default()
    })
}

async fn with_token(app: &TestApp, token: &str, method: &str, path: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    app.request(method, path, &[("authorization", &authorization)], None)
        .await
}

fn request_id(reply: &Reply) -> String {
    reply
        .header("civitas-request-id")
        .expect("every response has a request id")
        .to_owned()
}

/// The log's key as published at `/.well-known/civitas`.
async fn audit_key(app: &TestApp) -> String {
    let metadata = app.get("/.well-known/civitas", None).await.json();
    metadata["auditKey"]
        .as_str()
        .expect("the audit key is published")
        .to_owned()
}

/// Polls the checkpoint until it covers at least `size` entries; its note.
async fn checkpoint_covering(app: &TestApp, token: &str, size: u64) -> String {
    let verifier = Verifier::from_vkey(&audit_key(app).await).expect("a vkey");
    for _ in 0..500 {
        let reply = with_token(app, token, "GET", "/audit/v1/checkpoint").await;
        if reply.status == 200 {
            assert_eq!(
                reply.header("content-type"),
                Some("text/plain; charset=utf-8"),
                "{}",
                app.backend
            );
            let checkpoint = open_checkpoint(&reply.text, &verifier, ORIGIN)
                .unwrap_or_else(|error| panic!("{}: {error}: {}", app.backend, reply.text));
            if checkpoint.size() >= size {
                return reply.text;
            }
        } else {
            assert_eq!(reply.status, 404, "{}: {}", app.backend, reply.text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "{}: no checkpoint of {size} entries was signed",
        app.backend
    );
}

/// Fetches the log through HTTP (the checkpoint, then every tile and entry bundle of its tree)
/// and verifies it like an auditor; the records, by index.
async fn verify_over_http(
    app: &TestApp,
    token: &str,
    note: &str,
    state: Option<&State>,
) -> (auditor::Report, State, Vec<Record>) {
    let verifier = Verifier::from_vkey(&audit_key(app).await).expect("a vkey");
    let size = open_checkpoint(note, &verifier, ORIGIN)
        .expect("a valid checkpoint")
        .size();
    let mut served: HashMap<String, Vec<u8>> = HashMap::new();
    served.insert("checkpoint".to_owned(), note.as_bytes().to_vec());
    let mut paths = Vec::new();
    for level in tiles_for_size(size) {
        for tile in level.tiles() {
            if let Some(bundle) = tile.entry_bundle() {
                paths.push(bundle.path());
            }
            paths.push(tile.path());
        }
    }
    for path in paths {
        // Tiles are binary: read as bytes, not through `Reply`'s text.
        let response = reqwest::Client::new()
            .get(format!("{}/audit/v1/{path}", app.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the connector answers");
        assert_eq!(response.status().as_u16(), 200, "{}: {path}", app.backend);
        let bytes = response.bytes().await.expect("a body");
        served.insert(path, bytes.to_vec());
    }
    let policy = Policy {
        log: verifier,
        origin: ORIGIN.to_owned(),
        witnesses: Vec::new(),
        required_witnesses: 0,
    };
    let mut records = Vec::new();
    let (report, state) = auditor::verify(&mut served, &policy, state, |_, entry| {
        records.push(Record::from_entry(entry).map_err(|error| error.to_string())?);
        Ok(())
    })
    .unwrap_or_else(|error| panic!("{}: the log does not verify: {error}", app.backend));
    (report, state, records)
}

/// What a record says about a request: operation and decision.
fn summary(record: &Record) -> (String, Decision) {
    let Event::Access(access) = &record.event;
    (access.operation.clone(), access.decision.clone())
}

#[actix_web::test]
async fn every_decision_is_recorded_once_and_the_log_verifies() {
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let (auditor, reader) = (auditor(), reader());
        // (request id, expected operation and decision)
        let mut expected = BTreeMap::new();
        let created = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entities",
                &json!({"id": "urn:ngsi-ld:Vehicle:A1", "type": "Vehicle"}),
                None,
            )
            .await;
        assert_eq!(created.status, 201, "{backend}: {}", created.text);
        expected.insert(
            request_id(&created),
            ("write".to_owned(), Decision::Allowed),
        );
        let read = with_token(
            &app,
            &reader,
            "GET",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1",
        )
        .await;
        assert_eq!(read.status, 200, "{backend}: {}", read.text);
        expected.insert(request_id(&read), ("read".to_owned(), Decision::Allowed));
        let forged = with_token(&app, "not-a-token", "GET", "/ngsi-ld/v1/entities/x").await;
        assert_eq!(forged.status, 401, "{backend}: {}", forged.text);
        expected.insert(
            request_id(&forged),
            ("read".to_owned(), Decision::Refused { status: 401 }),
        );
        // Only audit tokens read the log.
        for path in ["/audit/v1/checkpoint", "/audit/v1/tile/0/000"] {
            let refused = with_token(&app, &reader, "GET", path).await;
            assert_eq!(refused.status, 403, "{backend}: {path}: {}", refused.text);
            expected.insert(
                request_id(&refused),
                ("audit".to_owned(), Decision::Refused { status: 403 }),
            );
            let anonymous = app.get(path, None).await;
            assert!(
                matches!(anonymous.status, 401 | 403),
                "{backend}: {path}: {}",
                anonymous.text
            );
            expected.insert(
                request_id(&anonymous),
                (
                    "audit".to_owned(),
                    Decision::Refused {
                        status: anonymous.status,
                    },
                ),
            );
        }
        let note = checkpoint_covering(&app, &auditor, expected.len() as u64).await;
        let (report, _, records) = verify_over_http(&app, &auditor, &note, None).await;
        assert_eq!(report.entries_checked, report.size, "{backend}");
        assert_eq!(records.len() as u64, report.size, "{backend}");
        let mut seen: BTreeMap<String, (String, Decision)> = BTreeMap::new();
        for record in &records {
            assert_eq!(record.service, "test", "{backend}");
            let previous = seen.insert(record.request_id.clone(), summary(record));
            assert!(
                previous.is_none(),
                "{backend}: {} recorded twice",
                record.request_id
            );
        }
        for (id, decision) in &expected {
            assert_eq!(seen.get(id), Some(decision), "{backend}: request {id}");
        }
        // No identifier in the clear: holders and entity ids are keyed hashes.
        let read_record = records
            .iter()
            .find(|record| record.request_id == request_id(&read))
            .expect("the read is recorded");
        let Event::Access(access) = &read_record.event;
        let holder = access.holder.as_deref().expect("the holder's pseudonym");
        assert!(holder.starts_with("h:") && holder != "tester", "{backend}");
        assert_eq!(access.entity_ids.len(), 1, "{backend}");
        assert!(!access.entity_ids[0].contains("Vehicle"), "{backend}");
        assert!(!access.revocation_ids.is_empty(), "{backend}");
        // Tiles beyond the checkpoint are not served.
        let beyond = with_token(&app, &auditor, "GET", "/audit/v1/tile/entries/x001/000").await;
        assert_eq!(beyond.status, 404, "{backend}: {}", beyond.text);
        let malformed = with_token(&app, &auditor, "GET", "/audit/v1/tile/0/0").await;
        assert_eq!(malformed.status, 404, "{backend}: {}", malformed.text);
    }
}

#[actix_web::test]
async fn the_log_and_its_key_survive_a_restart() {
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let auditor = auditor();
        let key = audit_key(&app).await;
        let first = with_token(&app, &auditor, "GET", "/audit/v1/checkpoint").await;
        let note = checkpoint_covering(&app, &auditor, 1).await;
        let (_, state, before) = verify_over_http(&app, &auditor, &note, None).await;
        assert!(
            before
                .iter()
                .any(|record| record.request_id == request_id(&first)),
            "{backend}: {} not in {before:?}",
            request_id(&first)
        );
        let app = app.restart(|_| {}).await;
        assert_eq!(audit_key(&app).await, key, "{backend}: the key is kept");
        let after_restart = app.get("/ngsi-ld/v1/entities?type=Vehicle", None).await;
        assert_eq!(
            after_restart.status, 200,
            "{backend}: {}",
            after_restart.text
        );
        // The log grows with every request, the auditor's own included: verify checkpoints until
        // one holds the request made after the restart.
        let mut verified = None;
        for _ in 0..100 {
            let note = checkpoint_covering(&app, &auditor, state.size() + 1).await;
            let (report, _, after) = verify_over_http(&app, &auditor, &note, Some(&state)).await;
            if after
                .iter()
                .any(|record| record.request_id == request_id(&after_restart))
            {
                verified = Some((report, after));
                break;
            }
        }
        let (report, after) = verified.expect("the request after the restart is recorded");
        assert_eq!(report.extends, Some(state.size()), "{backend}");
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "{backend}: history kept"
        );
    }
}

/// A canonical record for the spool test, as another process would have spooled it.
fn spooled_record(number: u64) -> Record {
    use civitas_audit::record::{Access, FORMAT_VERSION};
    Record {
        v: FORMAT_VERSION,
        time: 1_800_000_000_000_000 + number as i64,
        service: "test".to_owned(),
        request_id: format!("00000000-0000-4000-8000-{number:012x}"),
        trace_id: None,
        event: Event::Access(Access::new("read", Decision::Allowed)),
    }
}

#[actix_web::test]
async fn records_a_previous_process_spooled_are_merged_before_serving() {
    use civitas_audit::merkle::leaf_hash;
    use civitas_connector::audit::spool::Spool;
    let spools = tempfile::tempdir().expect("a temp dir");
    // One spool per backend: a process killed after answering left two records in it.
    let spool_of = |database_url: &str| {
        let name: String = database_url
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        spools.path().join(name)
    };
    let entries: Vec<Vec<u8>> = (0..2)
        .map(|n| spooled_record(n).to_entry().expect("a canonical entry"))
        .collect();
    let apps = apps_with(|settings| {
        let dir = spool_of(settings.database_url.as_deref().unwrap_or_default());
        let (spool, recovered) = Spool::open(&dir, 0).expect("the spool opens");
        if recovered.is_empty() {
            for entry in &entries {
                spool
                    .write(entry.clone(), leaf_hash(entry))
                    .expect("spooled");
            }
        }
        settings.audit.spool_dir = Some(dir);
    })
    .await;
    for app in apps {
        let backend = app.backend;
        let auditor = auditor();
        let listed = with_token(&app, &auditor, "GET", "/audit/v1/entries?start=0&end=2")
            .await
            .json();
        let served: Vec<&str> = listed["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|entry| entry["entry"].as_str().expect("base64"))
            .collect();
        let expected: Vec<String> = entries.iter().map(|entry| STANDARD.encode(entry)).collect();
        assert_eq!(
            served, expected,
            "{backend}: the spooled records come first"
        );
        // Requests after the start are recorded after them, and the whole log verifies.
        let note = checkpoint_covering(&app, &auditor, 3).await;
        let (report, _, records) = verify_over_http(&app, &auditor, &note, None).await;
        assert_eq!(report.entries_checked, report.size, "{backend}");
        assert_eq!(records[0], spooled_record(0), "{backend}");
        assert_eq!(records[1], spooled_record(1), "{backend}");
        assert_eq!(
            records[2].service, "test",
            "{backend}: the listing request is recorded third"
        );
    }
}

/// Read from a settings file, a connector on PostgreSQL spools in the file's folder, as one on a
/// SQLite file spools beside it; the spool names its log, and a connector of another log is not
/// let near it.
#[actix_web::test]
async fn a_settings_file_gives_every_database_a_spool_of_its_log() {
    let folder = tempfile::tempdir().expect("a temp dir");
    let apps = apps_with(|settings| {
        settings.audit.settings_folder = Some(folder.path().to_owned());
    })
    .await;
    let in_folder = folder.path().join("test-audit-spool");
    let mut postgres = false;
    for app in &apps {
        if app.backend == "postgres" {
            postgres = true;
            let owner = std::fs::read_to_string(in_folder.join("log")).expect("the spool is named");
            assert_eq!(owner.trim_end(), audit_key(app).await);
            // A request is answered once its record is spooled there.
            let reply = app.get("/ngsi-ld/v1/types", None).await;
            assert_eq!(reply.status, 200);
        }
    }
    assert_eq!(
        in_folder.exists(),
        postgres,
        "only a database that is not a SQLite file spools in the settings folder"
    );

    // A settings folder where nothing can be written (here a file stands where the folder
    // would be): the connector starts, and requests wait for their commits instead.
    let unwritable = folder.path().join("settings.toml");
    std::fs::write(&unwritable, "").expect("a file");
    for app in apps_with(|settings| settings.audit.settings_folder = Some(unwritable.clone())).await
    {
        let reply = app.get("/ngsi-ld/v1/types", None).await;
        assert_eq!(reply.status, 200, "{}: served without a spool", app.backend);
    }

    let other = tempfile::tempdir().expect("a temp dir");
    let foreign = other.path().join("spool");
    civitas_connector::audit::spool::claim(&foreign, "civitas/parking+0a1b2c3d+AAAA")
        .expect("claimed");
    let database = civitas_testkit::test_databases().await.remove(0);
    let mut settings = civitas_connector::settings::Settings::new("test", &database.url);
    settings.listen = "127.0.0.1:0".to_owned();
    settings.audit.spool_dir = Some(foreign.clone());
    let clock = std::sync::Arc::new(civitas_connector::clock::ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date"),
    ));
    let Err(refused) = civitas_connector::Application::build_with_clock(settings, clock).await
    else {
        panic!("a connector started on another log's spool");
    };
    assert!(
        refused
            .to_string()
            .contains("holds records of the log civitas/parking+0a1b2c3d+AAAA"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_dir(&foreign).expect("listed").count(),
        1,
        "nothing was written to it"
    );
}

#[actix_web::test]
async fn a_key_file_gives_the_log_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("audit.key");
    std::fs::write(&key_file, format!("{}\n", "07".repeat(32))).expect("key file");
    let expected = Signer::from_seed(ORIGIN, &[7; 32])
        .expect("a signer")
        .verifier()
        .to_vkey();
    for app in apps_with(|settings| settings.audit.key_file = Some(key_file.clone())).await {
        assert_eq!(audit_key(&app).await, expected, "{}", app.backend);
        let note = checkpoint_covering(&app, &auditor(), 1).await;
        let verifier = Verifier::from_vkey(&expected).expect("a vkey");
        open_checkpoint(&note, &verifier, ORIGIN).expect("signed with the file's key");
    }
}

/// The expanded name of `name` in the default @context.
fn default_term(name: &str) -> String {
    format!("https://uri.etsi.org/ngsi-ld/default-context/{name}")
}

#[actix_web::test]
async fn records_say_what_each_request_touched() {
    let vehicle = default_term("Vehicle");
    let (speed, brand) = (default_term("speed"), default_term("brand"));
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let auditor = auditor();
        let token = |spec: TokenSpec| format!("Bearer {}", mint(&spec));
        let writer = token(TokenSpec {
            holder: "writer".into(),
            read: vec![ANY.to_owned()],
            write: vec![ANY.to_owned()],
            ..TokenSpec::default()
        });
        let partner = token(TokenSpec {
            holder: "partner".into(),
            read: vec![vehicle.clone()],
            write: vec![vehicle.clone()],
            attributes: Some(vec![speed.clone()]),
            ..TokenSpec::default()
        });
        let stranger = token(TokenSpec {
            holder: "stranger".into(),
            read: vec![default_term("Building")],
            ..TokenSpec::default()
        });
        let json = [("content-type", "application/json")];
        let send = |auth: &str, method: &'static str, path: &'static str, body: Option<String>| {
            let app = &app;
            let auth = auth.to_owned();
            async move {
                let mut headers = vec![("authorization", auth.as_str())];
                headers.extend(json);
                app.request(method, path, &headers, body.as_deref()).await
            }
        };
        let entity = |n: u32| {
            json!({"id": format!("urn:ngsi-ld:Vehicle:T{n}"), "type": "Vehicle",
                   "speed": {"type": "Property", "value": n},
                   "brand": {"type": "Property", "value": "Mercedes"}})
            .to_string()
        };
        let created = send(&writer, "POST", "/ngsi-ld/v1/entities", Some(entity(1))).await;
        assert_eq!(created.status, 201, "{backend}: {}", created.text);
        let batch = format!("[{},{},{}]", entity(2), entity(3), entity(4));
        let batched = send(
            &writer,
            "POST",
            "/ngsi-ld/v1/entityOperations/create",
            Some(batch),
        )
        .await;
        assert_eq!(batched.status, 201, "{backend}: {}", batched.text);
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let queried = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities?type=Vehicle&limit=2",
                &[("authorization", &partner), ("traceparent", traceparent)],
                None,
            )
            .await;
        assert_eq!(queried.status, 200, "{backend}: {}", queried.text);
        let hidden = send(
            &stranger,
            "GET",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:T1",
            None,
        )
        .await;
        assert_eq!(hidden.status, 404, "{backend}: {}", hidden.text);
        let forbidden = send(
            &partner,
            "PATCH",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:T1/attrs",
            Some(json!({"brand": {"type": "Property", "value": "Fiat"}}).to_string()),
        )
        .await;
        assert_eq!(forbidden.status, 403, "{backend}: {}", forbidden.text);
        let deleted = send(
            &writer,
            "DELETE",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:T4",
            None,
        )
        .await;
        assert_eq!(deleted.status, 204, "{backend}: {}", deleted.text);

        let note = checkpoint_covering(&app, &auditor, 6).await;
        let (_, _, records) = verify_over_http(&app, &auditor, &note, None).await;
        let access = |reply: &Reply| {
            let id = request_id(reply);
            let record = records
                .iter()
                .find(|record| record.request_id == id)
                .unwrap_or_else(|| panic!("{backend}: request {id} is not recorded"));
            let Event::Access(access) = &record.event;
            (record.clone(), access.clone())
        };
        let (_, create) = access(&created);
        assert_eq!(create.decision, Decision::Allowed, "{backend}");
        assert_eq!(create.status, Some(201), "{backend}");
        assert_eq!(create.entity_types, [vehicle.as_str()], "{backend}");
        assert_eq!(create.entity_ids.len(), 1, "{backend}");
        assert_eq!(
            create.attributes,
            [brand.clone(), speed.clone()],
            "{backend}"
        );
        assert_eq!(create.count, Some(1), "{backend}");

        let (_, batch) = access(&batched);
        assert_eq!(batch.entity_ids.len(), 3, "{backend}");
        assert_eq!(batch.count, Some(3), "{backend}");
        assert_eq!(batch.status, Some(201), "{backend}");

        // The partner sees two vehicles, projected to the one attribute it may read.
        let (query_record, query) = access(&queried);
        assert_eq!(query.operation, "read", "{backend}");
        assert_eq!(query.entity_types, [vehicle.as_str()], "{backend}");
        assert_eq!(query.entity_ids.len(), 2, "{backend}");
        assert_eq!(query.attributes, [speed.as_str()], "{backend}");
        assert_eq!(query.count, Some(2), "{backend}");
        assert_eq!(
            query.query_digest.as_deref(),
            Some(civitas_audit::record::sha256_hex(b"type=Vehicle&limit=2").as_str()),
            "{backend}"
        );
        assert_eq!(
            query_record.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c"),
            "{backend}"
        );
        assert_eq!(
            query.holder,
            records
                .iter()
                .map(|record| {
                    let Event::Access(access) = &record.event;
                    access
                })
                .find(|access| access.operation == "write" && access.status == Some(403))
                .and_then(|access| access.holder.clone()),
            "{backend}: one holder, one pseudonym"
        );

        // What the caller may not see is a refusal, though it is answered as absent.
        let (_, hidden) = access(&hidden);
        assert_eq!(
            hidden.decision,
            Decision::Refused { status: 404 },
            "{backend}"
        );
        assert!(hidden.attributes.is_empty(), "{backend}");
        let (_, forbidden) = access(&forbidden);
        assert_eq!(
            forbidden.decision,
            Decision::Refused { status: 403 },
            "{backend}"
        );
        let (_, deleted) = access(&deleted);
        assert_eq!(deleted.operation, "write", "{backend}");
        assert_eq!(deleted.entity_types, [vehicle.as_str()], "{backend}");
        assert_eq!(deleted.count, Some(1), "{backend}");
        assert_eq!(deleted.status, Some(204), "{backend}");
    }
}

fn hashes(value: &serde_json::Value) -> Vec<civitas_audit::merkle::Hash> {
    use base64::Engine as _;
    value
        .as_array()
        .expect("a list of hashes")
        .iter()
        .map(|hash| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(hash.as_str().expect("base64"))
                .expect("base64");
            bytes.try_into().expect("32 bytes")
        })
        .collect()
}

fn hash(value: &serde_json::Value) -> civitas_audit::merkle::Hash {
    hashes(&json!([value]))[0]
}

#[actix_web::test]
async fn proofs_entries_and_records_over_http() {
    use civitas_audit::merkle::{verify_consistency, verify_inclusion};
    for app in apps_with(|_| {}).await {
        let backend = app.backend;
        let (auditor, reader) = (auditor(), reader());
        let created = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entities",
                &json!({"id": "urn:ngsi-ld:Vehicle:P1", "type": "Vehicle"}),
                None,
            )
            .await;
        assert_eq!(created.status, 201, "{backend}: {}", created.text);
        let read = with_token(
            &app,
            &reader,
            "GET",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:P1",
        )
        .await;
        assert_eq!(read.status, 200, "{backend}: {}", read.text);
        let refused = with_token(&app, "garbage", "GET", "/ngsi-ld/v1/entities/x").await;
        assert_eq!(refused.status, 401, "{backend}");

        // The key is public and the same as the published one.
        let key = app.get("/audit/v1/key", None).await;
        assert_eq!(key.status, 200, "{backend}: {}", key.text);
        assert_eq!(key.text.trim(), audit_key(&app).await, "{backend}");

        let note = checkpoint_covering(&app, &auditor, 3).await;
        let verifier = Verifier::from_vkey(&audit_key(&app).await).expect("a vkey");
        let checkpoint = open_checkpoint(&note, &verifier, ORIGIN).expect("signed");
        let (size, root) = (checkpoint.size(), *checkpoint.root());
        let get = |path: String| {
            let (app, auditor) = (&app, &auditor);
            async move { with_token(app, auditor, "GET", &path).await }
        };

        for index in [0, size / 2, size - 1] {
            let reply = get(format!(
                "/audit/v1/proof/inclusion?index={index}&treeSize={size}"
            ))
            .await;
            assert_eq!(reply.status, 200, "{backend}: {}", reply.text);
            let body = reply.json();
            assert_eq!(body["treeSize"], size, "{backend}");
            assert_eq!(body["checkpoint"], note.as_str(), "{backend}");
            let leaf = hash(&body["leafHash"]);
            verify_inclusion(&leaf, index, size, &hashes(&body["proof"]), &root)
                .unwrap_or_else(|error| panic!("{backend}: leaf {index}: {error}"));
            // The same leaf, found by its hash (hex).
            let hex: String = leaf.iter().map(|b| format!("{b:02x}")).collect();
            let by_hash = get(format!(
                "/audit/v1/proof/inclusion?hash={hex}&treeSize={size}"
            ))
            .await;
            assert_eq!(by_hash.status, 200, "{backend}: {}", by_hash.text);
            assert_eq!(by_hash.json()["leafIndex"], index, "{backend}");
        }
        let entries = get(format!("/audit/v1/entries?start=0&end={size}")).await;
        assert_eq!(entries.status, 200, "{backend}: {}", entries.text);
        let entries = entries.json();
        let listed = entries["entries"].as_array().expect("entries");
        assert!(listed.len() as u64 >= size, "{backend}");
        for item in listed {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(item["entry"].as_str().expect("base64"))
                .expect("base64");
            assert_eq!(
                civitas_audit::merkle::leaf_hash(&bytes),
                hash(&item["leafHash"]),
                "{backend}"
            );
            Record::from_entry(&bytes).expect("a record");
        }
        let older = open_checkpoint(
            &checkpoint_covering(&app, &auditor, size + 1).await,
            &verifier,
            ORIGIN,
        )
        .expect("signed");
        let reply = get(format!(
            "/audit/v1/proof/consistency?from={size}&to={}",
            older.size()
        ))
        .await;
        assert_eq!(reply.status, 200, "{backend}: {}", reply.text);
        verify_consistency(
            size,
            older.size(),
            &root,
            older.root(),
            &hashes(&reply.json()["proof"]),
        )
        .unwrap_or_else(|error| panic!("{backend}: {error}"));

        // Bad requests are ProblemDetails, never proofs.
        for (path, status) in [
            (
                format!("/audit/v1/proof/inclusion?index={size}&treeSize={size}"),
                400,
            ),
            ("/audit/v1/proof/inclusion?hash=zz".to_owned(), 400),
            ("/audit/v1/proof/inclusion?index=0&hash=00".to_owned(), 400),
            (
                format!("/audit/v1/proof/inclusion?hash={}", "00".repeat(32)),
                404,
            ),
            ("/audit/v1/proof/consistency?from=3&to=2".to_owned(), 400),
            ("/audit/v1/proof/consistency?to=2".to_owned(), 400),
            (
                "/audit/v1/proof/consistency?from=1&to=999999".to_owned(),
                404,
            ),
            ("/audit/v1/records?decision=maybe".to_owned(), 400),
            ("/audit/v1/records?since=yesterday".to_owned(), 400),
            ("/audit/v1/records?limit=0".to_owned(), 400),
            ("/audit/v1/records?color=red".to_owned(), 400),
        ] {
            let reply = get(path.clone()).await;
            assert_eq!(reply.status, status, "{backend}: {path}: {}", reply.text);
            assert!(reply.json()["type"].is_string(), "{backend}: {path}");
        }
        let anonymous = app.get("/audit/v1/records", None).await;
        assert_eq!(anonymous.status, 401, "{backend}: {}", anonymous.text);
        let not_auditor =
            with_token(&app, &reader, "GET", "/audit/v1/proof/consistency?from=1").await;
        assert_eq!(not_auditor.status, 403, "{backend}: {}", not_auditor.text);

        // Listing: by holder, decision and request id, a page at a time.
        let listing = |query: &'static str| {
            let get = &get;
            async move {
                let reply = get(format!("/audit/v1/records?{query}")).await;
                assert_eq!(reply.status, 200, "{query}: {}", reply.text);
                reply.json()
            }
        };
        let by_holder = listing("holder=tester").await;
        let holder_records = by_holder["records"].as_array().expect("records");
        // The read; the refused request names no holder (only its token's revocation ids).
        assert_eq!(holder_records.len(), 1, "{backend}: {by_holder}");
        assert!(
            holder_records
                .iter()
                .all(|item| item["record"]["event"]["holder"].as_str().is_some()),
            "{backend}"
        );
        let refusals = listing("decision=refused&operation=read").await;
        assert!(
            refusals["records"]
                .as_array()
                .expect("records")
                .iter()
                .any(|item| item["record"]["requestId"] == request_id(&refused)),
            "{backend}: {refusals}"
        );
        let query = format!("/audit/v1/records?requestId={}", request_id(&read));
        let one = get(query).await.json();
        assert_eq!(
            one["records"].as_array().map(Vec::len),
            Some(1),
            "{backend}"
        );
        assert_eq!(
            one["records"][0]["record"]["event"]["count"], 1,
            "{backend}"
        );
        let by_entity =
            get("/audit/v1/records?entity=urn:ngsi-ld:Vehicle:P1&type=Vehicle".to_owned())
                .await
                .json();
        assert_eq!(
            by_entity["records"].as_array().map(Vec::len),
            Some(2),
            "{backend}: the create and the read: {by_entity}"
        );
        let mut after = None;
        let mut paged = Vec::new();
        for _ in 0..100 {
            let path = match after {
                None => "/audit/v1/records?limit=1".to_owned(),
                Some(after) => format!("/audit/v1/records?limit=1&after={after}"),
            };
            let page = get(path).await.json();
            paged.extend(page["records"].as_array().expect("records").clone());
            match page["next"].as_u64() {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let indexes: Vec<u64> = paged
            .iter()
            .filter_map(|item| item["index"].as_u64())
            .collect();
        assert!(indexes.len() as u64 >= size, "{backend}: {indexes:?}");
        assert!(
            indexes.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{backend}: {indexes:?}"
        );
    }
}
