//! The broker: a connector with federation on, in front of three department connectors (SQLite
//! and, when configured, PostgreSQL mixed). Each department has its own root key and no anonymous
//! access; the caller brings department tokens in one `Authorization` header.

use std::time::{Duration, Instant};

use civitas_auth::keys::RootKey;
use civitas_auth::token::{ANY, TokenSpec, bind_to_request, issue};
use civitas_connector::settings::{DepartmentSettings, FederationSettings};
use civitas_testkit::fixed_time;
use serde_json::{Value, json};

use crate::helpers::{TEST_CONTEXT_URL, TestApp, apps, apps_with, link, write_policy};

const ENTITIES: &str = "/ngsi-ld/v1/entities";

fn key(department: u8) -> RootKey {
    RootKey::from_seed([department; 32]).expect("a valid seed")
}

/// A token of `department` that may read and write everything there.
fn token(department: u8) -> String {
    let spec = TokenSpec {
        holder: format!("agency-{department}"),
        read: vec![ANY.to_owned()],
        write: vec![ANY.to_owned()],
        ..TokenSpec::default()
    };
    issue(&key(department), &spec, fixed_time(0)).expect("a token")
}

/// A department connector with its own key and no anonymous access. `last` picks PostgreSQL
/// when it is configured.
async fn department(number: u8, last: bool) -> (tempfile::TempDir, TestApp) {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = write_policy(dir.path(), "", None);
    let mut apps = apps_with(move |settings| {
        settings.department = format!("dept{number}");
        settings.auth.public_key = Some(key(number).public_string());
        settings.auth.policies = Some(folder.clone());
    })
    .await;
    let app = if last {
        apps.pop()
    } else {
        apps.into_iter().next()
    };
    (dir, app.expect("a backend"))
}

/// A broker federating `departments` (number, connector), open to anonymous callers for its own
/// data (it holds none of the departments').
async fn broker(departments: &[(u8, &TestApp)], timeout_ms: u64) -> TestApp {
    let federation = FederationSettings {
        departments: departments
            .iter()
            .map(|(number, app)| DepartmentSettings {
                name: format!("dept{number}"),
                public_key: key(*number).public_string(),
                url: app.url.clone(),
            })
            .collect(),
        source_timeout_ms: timeout_ms,
        ..FederationSettings::default()
    };
    apps_with(move |settings| {
        settings.department = "broker".to_owned();
        settings.federation = Some(federation.clone());
    })
    .await
    .into_iter()
    .next()
    .expect("a backend")
}

async fn send(
    app: &TestApp,
    tokens: &[&str],
    method: &str,
    path: &str,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> crate::helpers::Reply {
    let link_value = link(TEST_CONTEXT_URL);
    let bearer = format!("Bearer {}", tokens.join(", "));
    let mut headers = vec![("link", link_value.as_str())];
    if !tokens.is_empty() {
        headers.push(("authorization", bearer.as_str()));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    headers.extend_from_slice(extra);
    let body = body.map(Value::to_string);
    app.request(method, path, &headers, body.as_deref()).await
}

async fn load(app: &TestApp, department: u8, entities: Vec<Value>) {
    let t = token(department);
    for chunk in entities.chunks(1_000) {
        let reply = send(
            app,
            &[&t],
            "POST",
            "/ngsi-ld/v1/entityOperations/upsert",
            Some(&Value::Array(chunk.to_vec())),
            &[],
        )
        .await;
        assert!(matches!(reply.status, 201 | 204), "{}", reply.text);
    }
}

async fn register(broker: &TestApp, endpoint: &str, types: &[&str]) {
    let entities: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
    let reply = send(
        broker,
        &[],
        "POST",
        "/ngsi-ld/v1/csourceRegistrations",
        Some(
            &json!({"type": "ContextSourceRegistration", "endpoint": endpoint,
                     "information": [{"entities": entities}]}),
        ),
        &[],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
}

fn vehicle(n: u32, attributes: Value) -> Value {
    let mut entity = json!({"id": format!("urn:ngsi-ld:Vehicle:{n}"), "type": "Vehicle"});
    for (name, value) in attributes.as_object().expect("object") {
        entity[name] = value.clone();
    }
    entity
}

/// The audit record of `request_id` at `app` (read with an audit token of `key`), once merged.
async fn audit_record(app: &TestApp, key: &RootKey, request_id: &str) -> Value {
    let spec = TokenSpec {
        holder: "auditor".into(),
        audit: true,
        ..TokenSpec::default()
    };
    let auditor = format!(
        "Bearer {}",
        issue(key, &spec, fixed_time(0)).expect("a token")
    );
    for _ in 0..100 {
        let reply = app
            .request(
                "GET",
                &format!("/audit/v1/records?requestId={request_id}"),
                &[("authorization", &auditor)],
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Some(item) = reply.json()["records"].as_array().and_then(|r| r.first()) {
            return item["record"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no record of {request_id} at {}", app.url);
}

fn warnings(reply: &crate::helpers::Reply) -> Vec<String> {
    reply
        .headers
        .get_all("ngsild-warning")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

/// A source that misbehaves: `/garbage` answers with something that is not JSON, `/invalid`
/// with a list holding an entity that is not valid NGSI-LD, `/slow` after five seconds.
async fn bad_source() -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/garbage/ngsi-ld/v1/entities",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(r#"[{"id": 7, "type": []}, "nonsense"#)
                }),
            )
            .route(
                "/anonymous/ngsi-ld/v1/entities",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(r#"[{"type": "Vehicle", "speed": {"value": 3}}]"#)
                }),
            )
            .route(
                "/scalar/ngsi-ld/v1/entities",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("42")
                }),
            )
            .route(
                "/invalid/ngsi-ld/v1/entities",
                web::get().to(|| async {
                    HttpResponse::Ok().content_type("application/json").body(
                        json!([
                            {"id": "urn:ngsi-ld:Vehicle:0", "type": "Vehicle"},
                            {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle",
                             "speed": {"type": "Property"}}
                        ])
                        .to_string(),
                    )
                }),
            )
            .route(
                "/slow/ngsi-ld/v1/entities",
                web::get().to(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("[]")
                }),
            )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("binds");
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (url, handle)
}

#[actix_web::test]
async fn a_federated_query_returns_exactly_what_the_callers_tokens_allow() {
    let (_d1, transport) = department(1, true).await;
    let (_d2, environment) = department(2, false).await;
    let (_d3, water) = department(3, true).await;
    load(
        &transport,
        1,
        vec![
            vehicle(1, json!({"speed": {"type": "Property", "value": 50, "observedAt": "2026-01-01T00:00:00Z"}})),
            vehicle(2, json!({"speed": {"type": "Property", "value": 60}})),
        ],
    )
    .await;
    load(
        &environment,
        2,
        vec![
            vehicle(1, json!({"brandName": {"type": "Property", "value": "Civic"},
                             "speed": {"type": "Property", "value": 55, "observedAt": "2026-01-01T00:00:05Z"}})),
            json!({"id": "urn:ngsi-ld:Building:1", "type": "Building", "name": {"type": "Property", "value": "Hall"}}),
        ],
    )
    .await;
    load(
        &water,
        3,
        vec![vehicle(
            9,
            json!({"speed": {"type": "Property", "value": 5}}),
        )],
    )
    .await;
    let broker = broker(&[(1, &transport), (2, &environment), (3, &water)], 2_000).await;
    register(&broker, &transport.url, &["Vehicle"]).await;
    register(&broker, &environment.url, &["Vehicle", "Building"]).await;
    register(&broker, &water.url, &["Vehicle"]).await;
    let (t1, t2) = (token(1), token(2));

    // Two departments' tokens: their vehicles, merged; the third department is not asked.
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&count=true"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.ids(),
        ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2"]
    );
    assert_eq!(reply.header("ngsild-results-count"), Some("2"));
    let skipped = warnings(&reply);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].contains(&water.url) && skipped[0].contains("dept3"),
        "{skipped:?}"
    );
    assert!(
        reply
            .header("ngsild-entitymap")
            .is_some_and(|m| m.starts_with("urn:ngsi-ld:EntityMap:"))
    );
    let v1 = &reply.json()[0];
    assert_eq!(v1["speed"]["value"], 55, "the later observation wins: {v1}");
    assert_eq!(v1["brandName"]["value"], "Civic", "{v1}");

    // keyValues and attrs are applied by the broker to the merged entity.
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&attrs=brandName&options=keyValues"),
        None,
        &[],
    )
    .await;
    assert_eq!(
        reply.json(),
        json!([{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "brandName": "Civic"}])
    );

    // One token: one department.
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Vehicle,Building"),
        None,
        &[],
    )
    .await;
    assert_eq!(
        reply.ids(),
        ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2"]
    );
    let v1 = &reply.json()[0];
    assert_eq!(v1["speed"]["value"], 50);
    assert!(v1.get("brandName").is_none());
    // No token at all: every department is skipped, and said so.
    let reply = broker
        .get(&format!("{ENTITIES}?type=Vehicle"), Some(TEST_CONTEXT_URL))
        .await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
    assert_eq!(warnings(&reply).len(), 3);

    // Retrieval merges too; what no allowed source has is a 404.
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:1"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["brandName"]["value"], "Civic");
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:9"),
        None,
        &[],
    )
    .await;
    reply.assert_problem(404, "ResourceNotFound");
    let reply = send(
        &broker,
        &[&token(3)],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:9"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Types and attributes: the union of what the tokens open.
    let reply = send(&broker, &[&t1, &t2], "GET", "/ngsi-ld/v1/types", None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["typeList"], json!(["Building", "Vehicle"]));
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        "/ngsi-ld/v1/types?details=true",
        None,
        &[],
    )
    .await;
    assert_eq!(
        reply.json(),
        json!([{"id": "https://example.org/ns#Vehicle", "type": "EntityType", "typeName": "Vehicle",
                "attributeNames": ["speed"]}])
    );
    assert_eq!(warnings(&reply).len(), 2, "{:?}", warnings(&reply));
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        "/ngsi-ld/v1/attributes",
        None,
        &[],
    )
    .await;
    assert_eq!(
        reply.json()["attributeList"],
        json!(["brandName", "name", "speed"])
    );
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        "/ngsi-ld/v1/types/Vehicle",
        None,
        &[],
    )
    .await;
    assert_eq!(
        reply.json()["entityCount"],
        3,
        "V1 at two departments counts twice: {}",
        reply.text
    );
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        "/ngsi-ld/v1/attributes/brandName",
        None,
        &[],
    )
    .await;
    assert_eq!(reply.json()["attributeCount"], 1, "{}", reply.text);
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        "/ngsi-ld/v1/attributes/brandName",
        None,
        &[],
    )
    .await;
    reply.assert_problem(404, "ResourceNotFound");

    // local=true: only the broker's own store (empty).
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&local=true"),
        None,
        &[],
    )
    .await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
    // A request that already passed through the broker is a loop.
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[("via", "1.1 civitas-broker")],
    )
    .await;
    reply.assert_problem(508, "LoopDetected");

    // The broker shares its request id with the connectors' records.
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[],
    )
    .await;
    let request_id = reply
        .header("civitas-request-id")
        .expect("a request id")
        .to_owned();
    // The broker's record says which sources it asked and which it skipped; the connector's
    // record of the same request carries the same id.
    let broker_record = audit_record(&broker, &crate::helpers::root_key(), &request_id).await;
    let federated = &broker_record["event"]["federation"];
    assert_eq!(
        federated["asked"],
        json!([transport.url]),
        "{broker_record}"
    );
    assert_eq!(
        federated["skipped"].as_array().map(Vec::len),
        Some(2),
        "{broker_record}"
    );
    assert_eq!(
        federated["tokens"].as_array().map(Vec::len),
        Some(1),
        "{broker_record}"
    );
    let transport_record = audit_record(&transport, &key(1), &request_id).await;
    assert!(
        transport_record["event"].get("federation").is_none(),
        "{transport_record}"
    );

    let bound = bind_to_request(
        &t1,
        "broker",
        &request_id,
        chrono::Duration::seconds(60),
        fixed_time(0),
    )
    .expect("binds");
    assert_eq!(
        send(
            &transport,
            &[&bound],
            "GET",
            &format!("{ENTITIES}?type=Vehicle"),
            None,
            &[("civitas-request-id", &request_id)]
        )
        .await
        .status,
        200
    );
    // A bound token is useless for any other request.
    let other = uuid::Uuid::new_v4().to_string();
    let refused = send(
        &transport,
        &[&bound],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[("civitas-request-id", &other)],
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let refused = send(
        &transport,
        &[&bound],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[],
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
}

#[actix_web::test]
async fn a_dead_slow_or_broken_source_gives_an_honest_partial_answer() {
    let (_d1, transport) = department(1, false).await;
    let (_d2, environment) = department(2, true).await;
    load(
        &transport,
        1,
        vec![vehicle(
            1,
            json!({"speed": {"type": "Property", "value": 1}}),
        )],
    )
    .await;
    load(
        &environment,
        2,
        vec![vehicle(
            2,
            json!({"speed": {"type": "Property", "value": 2}}),
        )],
    )
    .await;
    let broker = broker(&[(1, &transport), (2, &environment)], 500).await;
    register(&broker, &transport.url, &["Vehicle"]).await;
    register(&broker, &environment.url, &["Vehicle"]).await;
    let (bad, _bad_handle) = bad_source().await;
    register(&broker, &format!("{bad}/garbage"), &["Vehicle"]).await;
    register(&broker, &format!("{bad}/invalid"), &["Vehicle"]).await;
    register(&broker, &format!("{bad}/slow"), &["Vehicle"]).await;
    register(&broker, &format!("{bad}/anonymous"), &["Vehicle"]).await;
    register(&broker, &format!("{bad}/scalar"), &["Vehicle"]).await;
    let (t1, t2) = (token(1), token(2));

    let started = Instant::now();
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.ids(),
        ["urn:ngsi-ld:Vehicle:1", "urn:ngsi-ld:Vehicle:2"]
    );
    let failed = warnings(&reply);
    assert_eq!(failed.len(), 5, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|w| w.contains("/garbage") && w.contains("invalid JSON")),
        "{failed:?}"
    );
    // An invalid entity makes its source's whole answer suspect: Vehicle:0 is not shown either.
    assert!(
        failed
            .iter()
            .any(|w| w.contains("/invalid") && w.contains("invalid entity")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|w| w.contains("/slow") && w.contains("500 ms")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|w| w.contains("/anonymous") && w.contains("without a valid id")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|w| w.contains("/scalar") && w.contains("not an entity list")),
        "{failed:?}"
    );

    // All or nothing, on request.
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[("civitas-completeness", "all")],
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(reply.json()["type"], "urn:civitas:errors:SourceFailed");

    // A department that goes down: the others still answer.
    drop(environment);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.ids(), ["urn:ngsi-ld:Vehicle:1"]);
    assert_eq!(warnings(&reply).len(), 6, "{:?}", warnings(&reply));
}

#[actix_web::test]
async fn paging_through_ten_thousand_merged_entities_yields_each_once() {
    let (_d1, transport) = department(1, false).await;
    let (_d2, environment) = department(2, true).await;
    // 6,000 at each, 2,000 of them at both: 10,000 distinct entities.
    let entity = |n: u32| vehicle(n, json!({"speed": {"type": "Property", "value": n}}));
    load(&transport, 1, (0..6_000).map(entity).collect()).await;
    load(&environment, 2, (4_000..10_000).map(entity).collect()).await;
    let broker = broker(&[(1, &transport), (2, &environment)], 10_000).await;
    register(&broker, &transport.url, &["Vehicle"]).await;
    register(&broker, &environment.url, &["Vehicle"]).await;
    let (t1, t2) = (token(1), token(2));

    let first = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&limit=1000&count=true"),
        None,
        &[],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        first.header("ngsild-results-count"),
        Some("10000"),
        "{:?}",
        warnings(&first)
    );
    let map = first
        .header("ngsild-entitymap")
        .expect("an entity map")
        .to_owned();
    let mut seen = first.ids();
    for page in 1..10 {
        let reply = send(
            &broker,
            &[&t1, &t2],
            "GET",
            &format!(
                "{ENTITIES}?type=Vehicle&limit=1000&offset={}&entityMap={map}",
                page * 1_000
            ),
            None,
            &[],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        seen.extend(reply.ids());
    }
    assert_eq!(seen.len(), 10_000);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted, seen,
        "pages are in one stable id order, without repeats"
    );
    // Without a map, a page within the first thousand comes from every source's first entities,
    // in the same order.
    let cheap = send(
        &broker,
        &[&t1, &t2],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&limit=100&offset=850"),
        None,
        &[],
    )
    .await;
    assert!(cheap.header("ngsild-entitymap").is_none());
    assert_eq!(cheap.ids(), seen[850..950]);
    // A map belongs to the query and the caller it was made for.
    let reply = send(
        &broker,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&entityMap={map}"),
        None,
        &[],
    )
    .await;
    reply.assert_problem(400, "BadRequestData");
}

/// What a mock source keeps of the requests it answered.
type Seen<T> = std::sync::Arc<std::sync::Mutex<Vec<T>>>;

/// A mock source on 127.0.0.1 answering every request (a broker asks its sources for entities)
/// with `answer`'s JSON for it and its body, and keeping what `answer` notes of each request.
async fn mock_source<T: Send + 'static>(
    answer: impl Fn(&actix_web::HttpRequest, &[u8]) -> (T, Value) + Clone + Send + 'static,
) -> (String, actix_web::dev::ServerHandle, Seen<T>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let seen: Seen<T> = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let server = HttpServer::new(move || {
        let (recorded, answer) = (recorded.clone(), answer.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (noted, reply) = answer(&req, &body);
            recorded.lock().expect("not poisoned").push(noted);
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(reply.to_string())
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("binds");
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (url, handle, seen)
}

/// A source that is not a department's connector (another NGSI-LD broker, say): it records the
/// query string of every request and answers with one vehicle.
async fn recording_source() -> (String, actix_web::dev::ServerHandle, Seen<String>) {
    mock_source(|req, _| {
        let vehicle = json!([{"id": "urn:ngsi-ld:Vehicle:foreign", "type": "Vehicle",
                              "speed": {"type": "Property", "value": 7}}]);
        (req.query_string().to_owned(), vehicle)
    })
    .await
}

/// A department's connector of a release that pages by `offset` only: 1,500 vehicles, the
/// `Civitas-After` header ignored. Records whether each request carried it, and its query.
async fn offset_only_department() -> (String, actix_web::dev::ServerHandle, Seen<(bool, String)>) {
    mock_source(|req, _| {
        let query: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect();
        let number = |name: &str, default: usize| {
            query
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (offset, limit) = (number("offset", 0), number("limit", 20));
        let page: Vec<Value> = (0..1_500)
            .skip(offset)
            .take(limit)
            .map(|n| json!({"id": format!("urn:ngsi-ld:Vehicle:{n:04}"), "type": "Vehicle"}))
            .collect();
        let noted = (
            req.headers().contains_key("civitas-after"),
            req.query_string().to_owned(),
        );
        (noted, Value::Array(page))
    })
    .await
}

#[actix_web::test]
async fn a_department_that_ignores_keyset_paging_is_listed_by_offset() {
    let (url, handle, seen) = offset_only_department().await;
    let federation = FederationSettings {
        departments: vec![DepartmentSettings {
            name: "dept1".to_owned(),
            public_key: key(1).public_string(),
            url: url.clone(),
        }],
        source_timeout_ms: 2_000,
        ..FederationSettings::default()
    };
    let broker = apps_with(move |settings| {
        settings.department = "broker".to_owned();
        settings.federation = Some(federation.clone());
    })
    .await
    .into_iter()
    .next()
    .expect("a backend");
    register(&broker, &url, &["Vehicle"]).await;

    let reply = send(
        &broker,
        &[&token(1)],
        "GET",
        &format!("{ENTITIES}?type=Vehicle&count=true&limit=1"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("ngsild-results-count"), Some("1500"));
    // The second page was asked after the last id, came back from the start, and was asked
    // again by offset.
    let listing: Vec<(bool, String)> = seen
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(_, query)| query.contains("pick=id"))
        .cloned()
        .collect();
    assert_eq!(listing.len(), 3, "{listing:?}");
    assert!(
        !listing[0].0 && listing[0].1.contains("offset=0"),
        "{listing:?}"
    );
    assert!(listing[1].0, "{listing:?}");
    assert!(
        !listing[2].0 && listing[2].1.contains("offset=1000"),
        "{listing:?}"
    );
    handle.stop(false).await;
}

#[actix_web::test]
async fn a_source_outside_the_departments_is_asked_with_the_callers_parameters_as_given() {
    let (source, handle, seen) = recording_source().await;
    let broker = broker(&[], 2_000).await;
    register(&broker, &source, &["Vehicle"]).await;

    // No paging named: the source gets the caller's filters exactly, ids readable, no limit added.
    let path = format!("{ENTITIES}?id=urn:ngsi-ld:Vehicle:foreign&type=Vehicle");
    let reply = broker.get(&path, Some(TEST_CONTEXT_URL)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()[0]["id"], "urn:ngsi-ld:Vehicle:foreign");
    assert_eq!(reply.json()[0]["speed"]["value"], 7);
    assert_eq!(
        seen.lock()
            .expect("not poisoned")
            .last()
            .map(String::as_str),
        Some("id=urn:ngsi-ld:Vehicle:foreign&type=Vehicle")
    );

    // Paging named: the broker pages the source itself, through an entity map.
    let reply = broker
        .get(
            &format!("{ENTITIES}?type=Vehicle&limit=5"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.header("ngsild-entitymap").is_some(),
        "{:?}",
        reply.headers
    );
    assert!(
        seen.lock()
            .expect("not poisoned")
            .iter()
            .any(|query| query.contains("limit=")),
        "{seen:?}"
    );
    handle.stop(false).await;
}

#[actix_web::test]
async fn csf_selects_the_sources_a_broker_asks() {
    let (city_source, city_handle, city_seen) = recording_source().await;
    let (utility_source, utility_handle, utility_seen) = recording_source().await;
    let broker = broker(&[], 2_000).await;
    for (endpoint, provider) in [(&city_source, "city"), (&utility_source, "utility")] {
        let reply = send(
            &broker,
            &[],
            "POST",
            "/ngsi-ld/v1/csourceRegistrations",
            Some(
                &json!({"type": "ContextSourceRegistration", "endpoint": endpoint,
                         "information": [{"entities": [{"type": "Vehicle"}]}],
                         "dataProvider": provider}),
            ),
            &[],
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let reply = broker
        .get(
            &format!("{ENTITIES}?type=Vehicle&csf=dataProvider==%22city%22"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.ids(), ["urn:ngsi-ld:Vehicle:foreign"]);
    assert_eq!(city_seen.lock().expect("not poisoned").len(), 1);
    assert!(utility_seen.lock().expect("not poisoned").is_empty());
    // A filter that does not parse is a 400, at the broker as at a connector.
    let reply = broker
        .get(
            &format!("{ENTITIES}?type=Vehicle&csf=("),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    reply.assert_problem(400, "BadRequestData");
    city_handle.stop(false).await;
    utility_handle.stop(false).await;
}

/// A source under three prefixes (`/retrieve`, `/query`, `/batch`), each answering any read
/// with one vehicle that has an attribute of its own, and recording every request as
/// "PREFIX METHOD PATH?QUERY BODY".
async fn three_way_source() -> (String, actix_web::dev::ServerHandle, Seen<String>) {
    mock_source(|req, body| {
        let path = req.path().to_owned();
        let (prefix, rest) = path[1..].split_once('/').unwrap_or(("", ""));
        let noted = format!(
            "{prefix} {} /{rest}?{} {}",
            req.method(),
            req.query_string(),
            String::from_utf8_lossy(body)
        );
        let attribute = match prefix {
            "retrieve" => "speed",
            "query" => "brandName",
            _ => "fuel",
        };
        let mut vehicle = json!({"id": "urn:ngsi-ld:Vehicle:v1", "type": "Vehicle"});
        vehicle[attribute] = json!({"type": "Property", "value": 7});
        if rest.starts_with("ngsi-ld/v1/entities/") {
            (noted, vehicle)
        } else {
            (noted, json!([vehicle]))
        }
    })
    .await
}

#[actix_web::test]
async fn a_source_is_asked_by_the_operations_its_registrations_allow() {
    let (source, handle, seen) = three_way_source().await;
    let broker = broker(&[], 2_000).await;
    for (prefix, operations) in [
        ("retrieve", json!(["retrieveEntity"])),
        ("query", json!(["queryEntity"])),
        ("batch", json!(["queryBatch"])),
        ("writes", json!(["createEntity", "updateOps"])),
    ] {
        let reply = send(
            &broker,
            &[],
            "POST",
            "/ngsi-ld/v1/csourceRegistrations",
            Some(&json!({"type": "ContextSourceRegistration",
                         "endpoint": format!("{source}/{prefix}"),
                         "operations": operations,
                         "information": [{"entities": [{"type": "Vehicle"}]}]})),
            &[],
        )
        .await;
        assert_eq!(reply.status, 201, "{prefix}: {}", reply.text);
    }

    let reply = broker
        .get(
            &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:v1"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for attribute in ["speed", "brandName", "fuel"] {
        assert_eq!(reply.json()[attribute]["value"], 7, "{}", reply.text);
    }
    let mut asked = seen.lock().expect("not poisoned").clone();
    asked.sort();
    assert_eq!(
        asked,
        [
            "batch POST /ngsi-ld/v1/entityOperations/query? {\"type\":\"Query\",\"entities\":\
             [{\"id\":\"urn:ngsi-ld:Vehicle:v1\",\"type\":\"Vehicle\"}]}",
            "query GET /ngsi-ld/v1/entities?id=urn:ngsi-ld:Vehicle:v1&type=Vehicle ",
            "retrieve GET /ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:v1? ",
        ]
    );

    // The caller's parameters go along: attrs into the batch query's body.
    seen.lock().expect("not poisoned").clear();
    let reply = broker
        .get(
            &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:v1?attrs=fuel"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["fuel"]["value"], 7, "{}", reply.text);
    let mut asked = seen.lock().expect("not poisoned").clone();
    asked.sort();
    assert_eq!(
        asked,
        [
            "batch POST /ngsi-ld/v1/entityOperations/query? {\"type\":\"Query\",\"attrs\":[\"fuel\"],\
             \"entities\":[{\"id\":\"urn:ngsi-ld:Vehicle:v1\",\"type\":\"Vehicle\"}]}",
            "query GET /ngsi-ld/v1/entities?attrs=fuel&id=urn:ngsi-ld:Vehicle:v1&type=Vehicle ",
            "retrieve GET /ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:v1?attrs=fuel ",
        ]
    );

    // A query goes to the sources that allow queries, by GET or, for queryBatch alone, by POST
    // with the parameters in the body.
    seen.lock().expect("not poisoned").clear();
    let reply = broker
        .get(
            &format!("{ENTITIES}?type=Vehicle&q=fuel>1&attrs=fuel,brandName"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut asked = seen.lock().expect("not poisoned").clone();
    asked.sort();
    assert_eq!(
        asked,
        [
            "batch POST /ngsi-ld/v1/entityOperations/query? {\"type\":\"Query\",\
             \"q\":\"fuel>1\",\"attrs\":[\"fuel\",\"brandName\"],\"entities\":[{\"type\":\"Vehicle\"}]}",
            "query GET /ngsi-ld/v1/entities?type=Vehicle&q=fuel%3E1&attrs=fuel,brandName ",
        ]
    );
    handle.stop(false).await;
}

#[actix_web::test]
async fn a_source_is_asked_only_for_the_entities_and_attributes_it_registers() {
    let (source, handle, seen) = recording_source().await;
    let broker = broker(&[], 2_000).await;
    let reply = send(
        &broker,
        &[],
        "POST",
        "/ngsi-ld/v1/csourceRegistrations",
        Some(
            &json!({"type": "ContextSourceRegistration", "endpoint": source,
                     "information": [{"entities": [{"type": "Vehicle",
                                                    "id": "urn:ngsi-ld:Vehicle:foreign"}],
                                      "propertyNames": ["speed"]}]}),
        ),
        &[],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let last = || seen.lock().expect("not poisoned").last().cloned();

    let reply = broker
        .get(&format!("{ENTITIES}?type=Vehicle"), Some(TEST_CONTEXT_URL))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()[0]["speed"]["value"], 7, "{}", reply.text);
    assert_eq!(
        last().as_deref(),
        Some("type=Vehicle&id=urn:ngsi-ld:Vehicle:foreign&attrs=speed")
    );

    // The caller's own narrower choice stands; a query for what the source does not hold does
    // not reach it.
    let reply = broker
        .get(
            &format!("{ENTITIES}?type=Vehicle&attrs=speed,brandName"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        last().as_deref(),
        Some("type=Vehicle&attrs=speed&id=urn:ngsi-ld:Vehicle:foreign")
    );
    let before = seen.lock().expect("not poisoned").len();
    let reply = broker
        .get(
            &format!("{ENTITIES}?type=Vehicle&attrs=brandName"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = broker
        .get(
            &format!("{ENTITIES}?id=urn:ngsi-ld:Vehicle:other"),
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(seen.lock().expect("not poisoned").len(), before, "{seen:?}");
    handle.stop(false).await;
}

/// The registration the broker holds for `department`'s connector, once `done` holds of it.
async fn registration_when(
    broker: &TestApp,
    department: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let path = format!(
        "/ngsi-ld/v1/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:civitas:{department}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = broker.get(&path, None).await;
        let body = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
        if done(reply.status, &body) || Instant::now() > deadline {
            return (reply.status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker, and department `fleet`'s connector registering itself there every `refresh_s`;
/// both serve `tenants` besides the default one.
async fn broker_and_registering_connector(tenants: &[&str], refresh_s: u64) -> (TestApp, TestApp) {
    let tenants: Vec<String> = tenants.iter().map(|t| (*t).to_owned()).collect();
    let broker_tenants = tenants.clone();
    let broker = apps_with(move |settings| {
        settings.department = "broker".to_owned();
        settings.tenants = broker_tenants.clone();
        settings.federation = Some(FederationSettings::default());
    })
    .await
    .into_iter()
    .next()
    .expect("a backend");
    let registration = civitas_connector::settings::RegistrationSettings {
        broker: broker.url.clone(),
        token_file: None,
        refresh_s,
    };
    let connector = apps_with(move |settings| {
        settings.department = "fleet".to_owned();
        settings.tenants = tenants.clone();
        settings.registration = Some(registration.clone());
    })
    .await
    .into_iter()
    .next()
    .expect("a backend");
    (broker, connector)
}

/// Asserts that a query of `ns#Bus` through `broker` answers with fleet's bus.
async fn bus_comes_through(broker: &TestApp) {
    let reply = broker
        .get(
            &format!("{ENTITIES}?type={}", "https%3A%2F%2Fexample.org%2Fns%23Bus"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()[0]["id"], "urn:ngsi-ld:B:1", "{}", reply.text);
}

fn registered_types(registration: &Value) -> Vec<String> {
    let mut types: Vec<String> = registration["information"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|info| info["entities"].as_array().into_iter().flatten())
        .filter_map(|entity| entity["type"].as_str().map(str::to_owned))
        .collect();
    types.sort();
    types
}

#[actix_web::test]
async fn a_connector_registers_what_it_holds_at_the_broker_and_keeps_it_current() {
    let (broker, connector) = broker_and_registering_connector(&["north"], 1).await;

    // Nothing held, nothing registered (the connector has looked at least once by now).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, _) = registration_when(&broker, "fleet", |_, _| true).await;
    assert_eq!(status, 404);

    let vehicle = "https://example.org/ns#Vehicle";
    let bus = "https://example.org/ns#Bus";
    let create = |id: &str, kind: &str| json!({"id": id, "type": kind});
    for (id, kind) in [("urn:ngsi-ld:V:1", vehicle), ("urn:ngsi-ld:B:1", bus)] {
        let reply = connector
            .send_json("POST", ENTITIES, &create(id, kind), None)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let (status, body) = registration_when(&broker, "fleet", |status, body| {
            status == 200 && registered_types(body).contains(&kind.to_owned())
        })
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["endpoint"], connector.url.as_str(), "{body}");
        assert_eq!(body["mode"], "inclusive", "{body}");
    }
    let (_, body) = registration_when(&broker, "fleet", |_, _| true).await;
    assert_eq!(registered_types(&body), [bus, vehicle]);
    // Since when the connector manages data: the first creation (the test clock's time).
    assert_eq!(
        body["managementInterval"],
        json!({"startAt": "2026-01-01T00:00:00Z"}),
        "{body}"
    );
    assert!(body.get("location").is_none(), "{body}");

    assert!(body.get("observationInterval").is_none(), "{body}");

    // Where its entities are: the bounding box of their locations, kept current; and since when
    // they were observed: the earliest observedAt.
    let located = |id: &str, lon: f64, lat: f64, observed: &str| {
        json!({"id": id, "type": vehicle,
               "https://uri.etsi.org/ngsi-ld/location": {"type": "GeoProperty",
                   "value": {"type": "Point", "coordinates": [lon, lat]}},
               "https://example.org/ns#speed": {"type": "Property", "value": 40,
                   "observedAt": observed}})
    };
    for (id, lon, lat, observed) in [
        ("urn:ngsi-ld:V:2", 2.0, 48.0, "2025-03-01T10:00:00+01:00"),
        ("urn:ngsi-ld:V:3", 3.0, 49.0, "2025-03-01T09:30:00Z"),
    ] {
        let reply = connector
            .send_json("POST", ENTITIES, &located(id, lon, lat, observed), None)
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let (_, body) = registration_when(&broker, "fleet", |_, body| {
        body["location"]["type"] == "Polygon"
    })
    .await;
    assert_eq!(
        body["location"],
        json!({"type": "Polygon", "coordinates": [[[2.0, 48.0], [3.0, 48.0], [3.0, 49.0],
                                                    [2.0, 49.0], [2.0, 48.0]]]}),
        "{body}"
    );
    // 10:00+01:00 is the earlier of the two.
    assert_eq!(
        body["observationInterval"],
        json!({"startAt": "2025-03-01T09:00:00Z"}),
        "{body}"
    );
    for id in ["urn:ngsi-ld:V:2", "urn:ngsi-ld:V:3"] {
        let reply = connector
            .request("DELETE", &format!("{ENTITIES}/{id}"), &[], None)
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    let (_, body) =
        registration_when(&broker, "fleet", |_, body| body.get("location").is_none()).await;
    assert!(body.get("location").is_none(), "{body}");
    assert!(body.get("observationInterval").is_none(), "{body}");

    // The broker forwards by it: the connector's entity comes back through the broker.
    bus_comes_through(&broker).await;

    // A registration the broker loses is made again at the next refresh, though nothing changed.
    let path =
        "/ngsi-ld/v1/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:civitas:fleet";
    let reply = broker.request("DELETE", path, &[], None).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let (status, body) = registration_when(&broker, "fleet", |status, _| status == 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(registered_types(&body), [bus, vehicle]);

    // Each tenant is registered in the same tenant at the broker, with what that tenant holds.
    let tram = "https://example.org/ns#Tram";
    let reply = connector
        .request(
            "POST",
            ENTITIES,
            &[
                ("content-type", "application/json"),
                ("ngsild-tenant", "north"),
            ],
            Some(&create("urn:ngsi-ld:T:1", tram).to_string()),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let path =
        "/ngsi-ld/v1/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:civitas:fleet";
    let deadline = Instant::now() + Duration::from_secs(15);
    let north = loop {
        let reply = broker
            .request("GET", path, &[("ngsild-tenant", "north")], None)
            .await;
        if reply.status == 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(north.status, 200, "{}", north.text);
    assert_eq!(registered_types(&north.json()), [tram]);
    let (_, body) = registration_when(&broker, "fleet", |_, _| true).await;
    assert_eq!(
        registered_types(&body),
        [bus, vehicle],
        "the default tenant's own"
    );

    // Everything deleted: the registration goes.
    for id in ["urn:ngsi-ld:V:1", "urn:ngsi-ld:B:1"] {
        let reply = connector
            .request("DELETE", &format!("{ENTITIES}/{id}"), &[], None)
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
    let (status, body) = registration_when(&broker, "fleet", |status, _| status == 404).await;
    assert_eq!(status, 404, "{body}");
}

/// Entities stored before the store kept their first observation (a database of an earlier
/// version) get it when the connector starts, so that its registration's `observationInterval`
/// covers them too.
#[actix_web::test]
async fn entities_stored_before_first_observations_were_kept_get_them_at_start() {
    for app in apps().await {
        let backend = app.backend;
        let entity = json!({"id": "urn:ngsi-ld:V:1", "type": "https://example.org/ns#Vehicle",
            "https://example.org/ns#speed": {"type": "Property", "value": 40,
                "observedAt": "2025-03-01T10:00:00+01:00",
                "https://example.org/ns#accuracy": {"type": "Property", "value": 1,
                    "observedAt": "2025-02-01T00:00:00Z"}}});
        let reply = app.send_json("POST", ENTITIES, &entity, None).await;
        assert_eq!(reply.status, 201, "{backend}: {}", reply.text);
        let plain = json!({"id": "urn:ngsi-ld:V:2", "type": "https://example.org/ns#Vehicle"});
        let reply = app.send_json("POST", ENTITIES, &plain, None).await;
        assert_eq!(reply.status, 201, "{backend}: {}", reply.text);

        // What migration 11 leaves of a database written before it.
        app.execute_sql(
            "UPDATE entities SET first_observed_at = NULL; \
             INSERT INTO entity_observations_pending (tenant, id) SELECT tenant, id FROM entities;",
        )
        .await;
        let url = app.database_url().to_owned();
        let store = civitas_store::Store::open(&url).await.expect("opens");
        assert_eq!(store.extent("").await.expect("extent").first_observed, None);
        assert_eq!(
            store.observations_pending(10).await.expect("pending").len(),
            2
        );

        let app = app.restart(|_| {}).await;
        assert!(
            store
                .observations_pending(10)
                .await
                .expect("pending")
                .is_empty(),
            "{backend}"
        );
        let first = |id: &str| {
            let store = store.clone();
            let id = id.to_owned();
            async move {
                store
                    .get("", &id)
                    .await
                    .expect("reads")
                    .and_then(|record| record.first_observed)
            }
        };
        let february = chrono::DateTime::parse_from_rfc3339("2025-02-01T00:00:00Z")
            .expect("a date")
            .to_utc();
        assert_eq!(first("urn:ngsi-ld:V:1").await, Some(february), "{backend}");
        assert_eq!(first("urn:ngsi-ld:V:2").await, None, "{backend}");
        assert_eq!(
            store.extent("").await.expect("extent").first_observed,
            Some(february),
            "{backend}"
        );
        drop(app);
    }
}

#[actix_web::test]
async fn a_connector_registers_the_attributes_it_holds_as_soon_as_it_writes_them() {
    // A refresh far beyond the test: only writes bring the registration up to date.
    let (broker, connector) = broker_and_registering_connector(&[], 3_600).await;

    let ns = |name: &str| format!("https://example.org/ns#{name}");
    let vehicle = json!({"id": "urn:ngsi-ld:V:1", "type": ns("Vehicle"),
        ns("speed"): {"type": "Property", "value": 7},
        ns("owner"): {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"}});
    let reply = connector.send_json("POST", ENTITIES, &vehicle, None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let (status, body) = registration_when(&broker, "fleet", |status, _| status == 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["information"],
        json!([{"entities": [{"type": ns("Vehicle")}],
                "propertyNames": [ns("speed")], "relationshipNames": [ns("owner")]}]),
        "{body}"
    );

    // An attribute appended, and a type whose entity has none: registered within moments.
    let reply = connector
        .send_json(
            "POST",
            &format!("{ENTITIES}/urn:ngsi-ld:V:1/attrs"),
            &json!({ns("colour"): {"type": "Property", "value": "red"}}),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let reply = connector
        .send_json(
            "POST",
            ENTITIES,
            &json!({"id": "urn:ngsi-ld:B:1", "type": ns("Bus")}),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let (_, body) = registration_when(&broker, "fleet", |_, body| {
        body["information"].as_array().is_some_and(|i| i.len() == 2)
            && body["information"][1]["propertyNames"]
                .as_array()
                .is_some_and(|names| names.len() == 2)
    })
    .await;
    assert_eq!(
        body["information"],
        json!([{"entities": [{"type": ns("Bus")}]},
               {"entities": [{"type": ns("Vehicle")}],
                "propertyNames": [ns("colour"), ns("speed")],
                "relationshipNames": [ns("owner")]}]),
        "a Bus without attributes registers every attribute, so that it is never narrowed away"
    );

    // The broker routes by it: a query for the new attribute reaches the connector, and a
    // query of Vehicles asks only for what Vehicles have.
    let reply = broker
        .get(
            &format!(
                "{ENTITIES}?type={}&attrs={}",
                "https%3A%2F%2Fexample.org%2Fns%23Vehicle",
                "https%3A%2F%2Fexample.org%2Fns%23colour"
            ),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json()[0][ns("colour")]["value"],
        "red",
        "{}",
        reply.text
    );
    assert!(reply.json()[0].get(ns("speed")).is_none(), "{}", reply.text);
    bus_comes_through(&broker).await;
}

/// Registers `endpoint` at the broker for `entities`, in `mode`, for every write
/// (`redirectionOps`), naming `properties` (none: every attribute).
async fn register_for_writes(
    broker: &TestApp,
    endpoint: &str,
    entities: Value,
    mode: &str,
    properties: &[&str],
) -> String {
    let mut information = json!({ "entities": entities });
    if !properties.is_empty() {
        information["propertyNames"] = json!(properties);
    }
    let reply = send(
        broker,
        &[],
        "POST",
        "/ngsi-ld/v1/csourceRegistrations",
        Some(
            &json!({"type": "ContextSourceRegistration", "endpoint": endpoint,
                     "information": [information], "mode": mode,
                     "operations": ["redirectionOps"]}),
        ),
        &[],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply
        .header("location")
        .and_then(|l| l.rsplit('/').next())
        .expect("a location")
        .to_owned()
}

#[actix_web::test]
async fn writes_go_to_the_departments_registrations_name_with_the_callers_tokens() {
    let (_d1, transport) = department(1, false).await;
    let (_d2, environment) = department(2, true).await;
    let broker = broker(&[(1, &transport), (2, &environment)], 2_000).await;
    let (t1, t2) = (token(1), token(2));
    // Buses live at transport only; the speed of Vehicle:2 at environment only; the rest of
    // Vehicle:2 stays with the broker.
    register_for_writes(
        &broker,
        &transport.url,
        json!([{"type": "Bus"}]),
        "redirect",
        &[],
    )
    .await;
    let speed_registration = register_for_writes(
        &broker,
        &environment.url,
        json!([{"type": "Vehicle", "id": "urn:ngsi-ld:Vehicle:2"}]),
        "exclusive",
        &["speed"],
    )
    .await;
    let local = |id: &str| format!("{ENTITIES}/{id}?local=true");

    // A redirected create: the department has it, the broker does not, and the broker's record
    // says it decided nothing itself.
    let bus = json!({"id": "urn:ngsi-ld:Bus:1", "type": "Bus",
                     "line": {"type": "Property", "value": "7"}});
    let reply = send(&broker, &[&t1, &t2], "POST", ENTITIES, Some(&bus), &[]).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply.header("location"),
        Some("/ngsi-ld/v1/entities/urn:ngsi-ld:Bus:1")
    );
    let at_transport = send(
        &transport,
        &[&t1],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Bus:1"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_transport.status, 200, "{}", at_transport.text);
    assert_eq!(at_transport.json()["line"]["value"], "7");
    let at_broker = broker
        .get(&local("urn:ngsi-ld:Bus:1"), Some(TEST_CONTEXT_URL))
        .await;
    assert_eq!(at_broker.status, 404, "{}", at_broker.text);
    let request_id = reply
        .header("civitas-request-id")
        .expect("an id")
        .to_owned();
    let record = audit_record(&broker, &crate::helpers::root_key(), &request_id).await;
    assert_eq!(record["event"]["decision"], "forwarded", "{record}");
    // Auditors find such records by their decision.
    let auditor = issue(
        &crate::helpers::root_key(),
        &TokenSpec {
            holder: "auditor".into(),
            audit: true,
            ..TokenSpec::default()
        },
        fixed_time(0),
    )
    .expect("a token");
    let forwarded = broker
        .request(
            "GET",
            "/audit/v1/records?decision=forwarded",
            &[("authorization", &format!("Bearer {auditor}"))],
            None,
        )
        .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text);
    let listed = forwarded.json()["records"].clone();
    assert!(
        listed.as_array().is_some_and(|records| !records.is_empty()
            && records
                .iter()
                .all(|r| r["record"]["event"]["decision"] == "forwarded")
            && records
                .iter()
                .any(|r| r["record"]["requestId"] == request_id.as_str())),
        "{listed}"
    );
    // It still says what was written: one entity (its id pseudonymized), its type, its attribute.
    assert_eq!(
        record["event"]["entityIds"].as_array().map(Vec::len),
        Some(1),
        "{record}"
    );
    assert_eq!(
        record["event"]["entityTypes"].as_array().map(Vec::len),
        Some(1),
        "{record}"
    );
    assert_eq!(
        record["event"]["attributes"].as_array().map(Vec::len),
        Some(1),
        "{record}"
    );
    assert_eq!(
        record["event"]["federation"]["asked"],
        json!([transport.url]),
        "{record}"
    );
    let record = audit_record(&transport, &key(1), &request_id).await;
    assert_eq!(record["event"]["decision"], "allowed", "{record}");

    // An exclusive split: the source gets the attribute it registered, the broker the rest.
    let car = vehicle(
        2,
        json!({"brandName": {"type": "Property", "value": "Civic"},
               "speed": {"type": "Property", "value": 50}}),
    );
    let reply = send(&broker, &[&t1, &t2], "POST", ENTITIES, Some(&car), &[]).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let at_environment = send(
        &environment,
        &[&t2],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:2"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_environment.status, 200, "{}", at_environment.text);
    assert_eq!(at_environment.json()["speed"]["value"], 50);
    assert!(
        at_environment.json().get("brandName").is_none(),
        "{}",
        at_environment.text
    );
    let at_broker = broker
        .get(&local("urn:ngsi-ld:Vehicle:2"), Some(TEST_CONTEXT_URL))
        .await;
    assert_eq!(at_broker.status, 200, "{}", at_broker.text);
    assert_eq!(at_broker.json()["brandName"]["value"], "Civic");
    assert!(
        at_broker.json().get("speed").is_none(),
        "{}",
        at_broker.text
    );

    // An update of the registered attribute goes to the source only.
    let reply = send(
        &broker,
        &[&t2],
        "PATCH",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:2/attrs"),
        Some(&json!({"speed": {"type": "Property", "value": 60}})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let at_environment = send(
        &environment,
        &[&t2],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:2"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_environment.json()["speed"]["value"], 60);

    // Without a token of that department the source is not written, and the answer says so:
    // 207, with the registration and a 401 for that part.
    let reply = send(
        &broker,
        &[&t1],
        "PATCH",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:2/attrs/speed"),
        Some(&json!({"value": 70})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 207, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["success"], json!([]), "{body}");
    assert_eq!(
        body["errors"][0]["registrationId"],
        json!(speed_registration),
        "{body}"
    );
    assert_eq!(body["errors"][0]["error"]["status"], 401, "{body}");
    let at_environment = send(
        &environment,
        &[&t2],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Vehicle:2"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_environment.json()["speed"]["value"], 60);

    // A token the department refuses (read only) fails that part with the department's 403.
    let reader = issue(
        &key(1),
        &TokenSpec {
            holder: "reader".into(),
            read: vec![ANY.to_owned()],
            ..TokenSpec::default()
        },
        fixed_time(0),
    )
    .expect("a token");
    let reply = send(
        &broker,
        &[&reader],
        "DELETE",
        &format!("{ENTITIES}/urn:ngsi-ld:Bus:1"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 207, "{}", reply.text);
    assert_eq!(
        reply.json()["errors"][0]["error"]["status"],
        403,
        "{}",
        reply.text
    );

    // Batches are divided per entity and sent as one batch per source.
    let buses: Vec<Value> = (2..=3)
        .map(|n| json!({"id": format!("urn:ngsi-ld:Bus:{n}"), "type": "Bus"}))
        .collect();
    let reply = send(
        &broker,
        &[&t1],
        "POST",
        "/ngsi-ld/v1/entityOperations/create",
        Some(&Value::Array(buses)),
        &[],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let at_transport = send(
        &transport,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Bus"),
        None,
        &[],
    )
    .await;
    assert_eq!(
        at_transport.ids(),
        [
            "urn:ngsi-ld:Bus:1",
            "urn:ngsi-ld:Bus:2",
            "urn:ngsi-ld:Bus:3"
        ]
    );

    // Deleting through the broker deletes at the department.
    let reply = send(
        &broker,
        &[&t1],
        "DELETE",
        &format!("{ENTITIES}/urn:ngsi-ld:Bus:1"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let at_transport = send(
        &transport,
        &[&t1],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Bus:1"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_transport.status, 404, "{}", at_transport.text);

    // A purge goes to the sources registered for the type, and the broker purges its own.
    let reply = send(
        &broker,
        &[&t1],
        "DELETE",
        &format!("{ENTITIES}?type=Bus"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    let at_transport = send(
        &transport,
        &[&t1],
        "GET",
        &format!("{ENTITIES}?type=Bus"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_transport.ids(), Vec::<String>::new());

    // local=true writes to the broker's store alone.
    let reply = send(
        &broker,
        &[],
        "POST",
        &format!("{ENTITIES}?local=true"),
        Some(&json!({"id": "urn:ngsi-ld:Bus:9", "type": "Bus"})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let at_transport = send(
        &transport,
        &[&t1],
        "GET",
        &format!("{ENTITIES}/urn:ngsi-ld:Bus:9"),
        None,
        &[],
    )
    .await;
    assert_eq!(at_transport.status, 404, "{}", at_transport.text);
}
