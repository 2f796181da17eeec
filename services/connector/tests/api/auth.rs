//! Authorization through the HTTP API, on every backend: which credentials authenticate (401
//! otherwise), what a valid token allows (403 otherwise), how reads are projected to what a token
//! may see in every rendering, how batches decide per entity, tenants, attenuation, revocation, and
//! the department's anonymous and datalog policies. Tokens are minted with the test department's
//! seeded root key at the connector's fixed clock, 2026-01-01T00:00:00Z.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use civitas_auth::keys::RootKey;
use civitas_auth::token::{ANY, Restrictions, TokenSpec, attenuate, inspect, issue};
use civitas_connector::clock::ManualClock;
use civitas_connector::{Application, Settings};
use civitas_testkit::{fixed_time, test_databases};
use serde_json::{Value, json};

use crate::helpers::{Reply, TEST_CONTEXT_URL, TestApp, apps_with, link, root_key, write_policy};

const VEHICLE: &str = "https://example.org/ns#Vehicle";
const BUILDING: &str = "https://example.org/ns#Building";
/// A type the test context has no term for: requests name it by its IRI.
const TUNNEL: &str = "https://example.org/ns#Tunnel";
const SPEED: &str = "https://example.org/ns#speed";
const BRAND_NAME: &str = "https://example.org/ns#brandName";
const NAME: &str = "https://example.org/ns#name";
const LOCATION: &str = "https://uri.etsi.org/ngsi-ld/location";

const V1: &str = "urn:ngsi-ld:Vehicle:1";
const V2: &str = "urn:ngsi-ld:Vehicle:2";
const B1: &str = "urn:ngsi-ld:Building:1";
const B2: &str = "urn:ngsi-ld:Building:2";
const T1: &str = "urn:ngsi-ld:Tunnel:1";

const UNAUTHENTICATED: &str = "urn:civitas:errors:Unauthenticated";
const FORBIDDEN: &str = "urn:civitas:errors:Forbidden";
const NOT_FOUND: &str = "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound";

/// A department policy without anonymous access: every request needs a token.
const CLOSED: &str = "";

/// Anyone may read Buildings without a token, and see only their names.
const PUBLIC_BUILDING_NAMES: &str = "[anonymous]\nread = [\"https://example.org/ns#Building\"]\nattributes = [\"https://example.org/ns#name\"]\n";

/// The connector's clock.
fn now() -> DateTime<Utc> {
    fixed_time(0)
}

/// A month before the connector's clock.
fn a_month_ago() -> DateTime<Utc> {
    fixed_time(-31 * 86_400)
}

fn names(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn mint(spec: &TokenSpec) -> String {
    issue(&root_key(), spec, now()).expect("the token is issued")
}

/// A token of the test department for `read` and `write` types, with an optional attribute
/// allow-list (expanded IRIs).
fn token(read: &[&str], write: &[&str], attributes: Option<&[&str]>) -> String {
    mint(&TokenSpec {
        holder: "tester".into(),
        read: names(read),
        write: names(write),
        attributes: attributes.map(names),
        ..TokenSpec::default()
    })
}

/// The department's administrator: everything, and revocation.
fn admin() -> String {
    mint(&TokenSpec {
        holder: "admin".into(),
        read: names(&[ANY]),
        write: names(&[ANY]),
        admin: true,
        ..TokenSpec::default()
    })
}

fn narrow(token: &str, restrictions: Restrictions) -> String {
    attenuate(token, &restrictions, now()).expect("the token is attenuated")
}

fn revocation_ids(token: &str) -> Vec<String> {
    inspect(token, None)
        .expect("the token decodes")
        .revocation_ids
}

/// Replaces one character of a token, keeping it base64url.
fn tamper(token: &str, position: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("base64url is ASCII")
}

/// Connectors (one per backend) whose department policy is `access`; the policy folder lives as
/// long as the returned directory.
async fn apps_with_policy(access: &str) -> (tempfile::TempDir, Vec<TestApp>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = write_policy(dir.path(), access, None);
    let apps = apps_with(move |settings| settings.auth.policies = Some(folder.clone())).await;
    (dir, apps)
}

/// Sends a request with `token` as bearer (`None`: anonymous), the test context as Link header,
/// `body` as JSON and `headers` on top.
async fn send(
    app: &TestApp,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let link_value = link(TEST_CONTEXT_URL);
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut all = vec![("link", link_value.as_str())];
    if let Some(authorization) = &authorization {
        all.push(("authorization", authorization));
    }
    if body.is_some() {
        all.push(("content-type", "application/json"));
    }
    all.extend_from_slice(headers);
    let body = body.map(Value::to_string);
    app.request(method, path, &all, body.as_deref()).await
}

async fn get(app: &TestApp, token: Option<&str>, path: &str) -> Reply {
    send(app, token, "GET", path, None, &[]).await
}

/// The status of reading V1 with `token`.
async fn read_status(app: &TestApp, token: &str) -> u16 {
    get(app, Some(token), &format!("/ngsi-ld/v1/entities/{V1}"))
        .await
        .status
}

/// The entities every test starts with: two Vehicles, two Buildings and a Tunnel.
fn fixtures() -> Value {
    json!([
        {"id": V1, "type": "Vehicle", "speed": 50, "brandName": "Volvo", "name": "bus 1",
         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-8.5, 41.2]}}},
        {"id": V2, "type": "Vehicle", "speed": 30, "brandName": "Fiat"},
        {"id": B1, "type": "Building", "name": "Town hall", "brandName": "Civic"},
        {"id": B2, "type": "Building", "name": "Library"},
        {"id": T1, "type": TUNNEL, "name": "Harbour tunnel"},
    ])
}

async fn seed(app: &TestApp) {
    let created = send(
        app,
        Some(&admin()),
        "POST",
        "/ngsi-ld/v1/entityOperations/create",
        Some(&fixtures()),
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{} {}", app.backend, created.text);
}

/// The entity as the administrator sees it (keyValues, with system attributes); `None` when it
/// does not exist.
async fn stored(app: &TestApp, id: &str) -> Option<Value> {
    let reply = get(
        app,
        Some(&admin()),
        &format!("/ngsi-ld/v1/entities/{id}?options=keyValues,sysAttrs"),
    )
    .await;
    match reply.status {
        200 => Some(reply.json()),
        404 => None,
        _ => panic!("{} {id}: {}", app.backend, reply.text),
    }
}

/// One member of a stored entity: `None` when the entity does not exist, `Null` when it has no
/// such member.
async fn stored_member(app: &TestApp, id: &str, member: &str) -> Option<Value> {
    stored(app, id)
        .await
        .map(|entity| entity.get(member).cloned().unwrap_or(Value::Null))
}

/// Asserts a refusal: 401 `Unauthenticated` with a Bearer challenge, or 403 `Forbidden`, as a
/// ProblemDetails body.
#[track_caller]
fn assert_refused(reply: &Reply, status: u16, case: &str) {
    let kind = match status {
        401 => UNAUTHENTICATED,
        403 => FORBIDDEN,
        other => panic!("{other} is not a refusal"),
    };
    assert_eq!(reply.status, status, "{case}: {}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{case}"
    );
    let body = reply.json();
    assert_eq!(body["type"], kind, "{case}: {body}");
    for member in ["title", "detail"] {
        assert!(
            body[member].as_str().is_some_and(|text| !text.is_empty()),
            "{case}: {body}"
        );
    }
    if status == 401 {
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
    }
}

/// Asserts an expected status; refusals and 404 must also carry the right problem type.
#[track_caller]
fn assert_status(reply: &Reply, status: u16, case: &str) {
    match status {
        401 | 403 => assert_refused(reply, status, case),
        404 => {
            assert_eq!(reply.status, 404, "{case}: {}", reply.text);
            reply.assert_problem(404, "ResourceNotFound");
        }
        _ => assert_eq!(reply.status, status, "{case}: {}", reply.text),
    }
}

/// The attribute names of a rendered entity (members other than id, type, @context and the
/// system attributes).
fn attribute_names(entity: &Value) -> BTreeSet<String> {
    entity
        .as_object()
        .unwrap_or_else(|| panic!("not an entity: {entity}"))
        .keys()
        .filter(|key| {
            !matches!(
                key.as_str(),
                "id" | "type" | "@context" | "createdAt" | "modifiedAt"
            )
        })
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// The ids of a query result, or of one retrieved entity.
fn ids(body: &Value) -> BTreeSet<String> {
    match body {
        Value::Array(entities) => entities
            .iter()
            .map(|entity| entity["id"].as_str().unwrap_or_default().to_owned())
            .collect(),
        entity => set(&[entity["id"].as_str().unwrap_or_default()]),
    }
}

/// Every single-entity write (clauses 6.4 to 6.7) naming `attribute` of the entity `id` of type
/// `entity_type`: (operation, method, path, body). `create` makes a new entity, `{id}:new`.
fn writes(
    id: &str,
    entity_type: &str,
    attribute: &str,
) -> Vec<(&'static str, &'static str, String, Option<Value>)> {
    let entity = format!("/ngsi-ld/v1/entities/{id}");
    let fragment = json!({ attribute: 1 });
    vec![
        (
            "create",
            "POST",
            "/ngsi-ld/v1/entities".to_owned(),
            Some(json!({"id": format!("{id}:new"), "type": entity_type, attribute: 1})),
        ),
        (
            "append",
            "POST",
            format!("{entity}/attrs"),
            Some(fragment.clone()),
        ),
        (
            "update",
            "PATCH",
            format!("{entity}/attrs"),
            Some(fragment.clone()),
        ),
        (
            "partial attribute update",
            "PATCH",
            format!("{entity}/attrs/{attribute}"),
            Some(json!({"value": 1})),
        ),
        (
            "replace attribute",
            "PUT",
            format!("{entity}/attrs/{attribute}"),
            Some(json!({"type": "Property", "value": 1})),
        ),
        (
            "delete attribute",
            "DELETE",
            format!("{entity}/attrs/{attribute}"),
            None,
        ),
        ("merge", "PATCH", entity.clone(), Some(fragment)),
        (
            "replace",
            "PUT",
            entity.clone(),
            Some(json!({"type": entity_type, attribute: 1})),
        ),
        ("delete", "DELETE", entity, None),
    ]
}

#[actix_web::test]
async fn credentials_that_do_not_authenticate_get_401_with_a_bearer_challenge() {
    let everything = TokenSpec {
        holder: "tester".into(),
        read: names(&[ANY]),
        write: names(&[ANY]),
        ..TokenSpec::default()
    };
    let valid = mint(&everything);
    let foreign = issue(
        &RootKey::from_seed([7; 32]).expect("a valid seed"),
        &everything,
        now(),
    )
    .expect("issued by another department");
    let day = Some(Duration::days(1));
    let expired = issue(
        &root_key(),
        &TokenSpec {
            ttl: day,
            ..everything.clone()
        },
        a_month_ago(),
    )
    .expect("issued a month ago");
    let expired_attenuation = attenuate(
        &valid,
        &Restrictions {
            ttl: day,
            ..Restrictions::default()
        },
        a_month_ago(),
    )
    .expect("attenuated a month ago");
    // (case, Authorization header)
    let mut refusals: Vec<(String, Option<String>)> = vec![
        ("no token".into(), None),
        (
            "Basic credentials".into(),
            Some("Basic dXNlcjpwYXNz".into()),
        ),
        ("Bearer without a token".into(), Some("Bearer".into())),
        ("Bearer with empty tokens".into(), Some("Bearer , ,".into())),
        ("garbage".into(), Some("Bearer not-a-token".into())),
        (
            "another department's key".into(),
            Some(format!("Bearer {foreign}")),
        ),
        ("expired".into(), Some(format!("Bearer {expired}"))),
        (
            "expired attenuation".into(),
            Some(format!("Bearer {expired_attenuation}")),
        ),
        (
            "several tokens, none of this department".into(),
            Some(format!("Bearer {foreign}, not-a-token")),
        ),
    ];
    // Tampering anywhere (block, signature, proof) breaks verification.
    for position in [8, valid.len() / 2, valid.len() - 90, valid.len() - 8] {
        let tampered = tamper(&valid, position);
        let verified = inspect(&tampered, Some(&root_key().public()))
            .ok()
            .and_then(|inspection| inspection.verified);
        assert_ne!(verified, Some(true), "tampered at {position}");
        refusals.push((
            format!("tampered at {position}"),
            Some(format!("Bearer {tampered}")),
        ));
    }
    let requests = [
        ("GET", format!("/ngsi-ld/v1/entities/{V1}"), None),
        ("GET", "/ngsi-ld/v1/entities?type=Vehicle".to_owned(), None),
        (
            "POST",
            "/ngsi-ld/v1/entities".to_owned(),
            Some(json!({"id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle", "speed": 1})),
        ),
        (
            "PATCH",
            format!("/ngsi-ld/v1/entities/{V1}/attrs"),
            Some(json!({"speed": 99})),
        ),
        ("DELETE", format!("/ngsi-ld/v1/entities/{V1}"), None),
        (
            "POST",
            "/ngsi-ld/v1/entityOperations/upsert".to_owned(),
            Some(json!([{"id": V1, "type": "Vehicle", "speed": 99}])),
        ),
        ("GET", "/admin/v1/revocations".to_owned(), None),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        for (case, authorization) in &refusals {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("authorization", value.as_str()))
                .collect();
            for (method, path, body) in &requests {
                let reply = send(&app, None, method, path, body.as_ref(), &headers).await;
                assert_refused(
                    &reply,
                    401,
                    &format!("{} {case}: {method} {path}", app.backend),
                );
            }
        }
        // Nothing was written.
        assert_eq!(stored_member(&app, V1, "speed").await, Some(json!(50)));
        assert_eq!(stored(&app, "urn:ngsi-ld:Vehicle:9").await, None);

        // The department's own token authenticates, also among others and in any case of "Bearer".
        for authorization in [
            format!("Bearer {valid}"),
            format!("bearer {valid}"),
            format!("Bearer {foreign}, {valid}"),
            format!("Bearer {valid},{foreign}"),
        ] {
            let reply = send(
                &app,
                None,
                "GET",
                &format!("/ngsi-ld/v1/entities/{V1}"),
                None,
                &[("authorization", &authorization)],
            )
            .await;
            assert_eq!(reply.status, 200, "{} {authorization}", app.backend);
        }
    }
}

#[actix_web::test]
async fn reads_show_only_allowed_attributes_in_every_rendering() {
    // (token, the attributes of the Vehicle it may see)
    let all_attributes: &[&str] = &["brandName", "location", "name", "speed"];
    let tokens = [
        (
            "speed and location",
            token(&[VEHICLE], &[], Some(&[SPEED, LOCATION])),
            &["location", "speed"][..],
        ),
        (
            "speed only",
            token(&[VEHICLE], &[], Some(&[SPEED])),
            &["speed"][..],
        ),
        (
            "every attribute",
            token(&[VEHICLE], &[], None),
            all_attributes,
        ),
    ];
    // (rendering, query parameters, Accept, the attributes asked for (None: all), omitted)
    type Rendering<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a [&'a str]>,
        &'a [&'a str],
    );
    let renderings: [Rendering; 12] = [
        ("normalized", "", "application/json", None, &[]),
        (
            "options=normalized",
            "options=normalized",
            "application/json",
            None,
            &[],
        ),
        ("concise", "options=concise", "application/json", None, &[]),
        (
            "keyValues",
            "options=keyValues",
            "application/json",
            None,
            &[],
        ),
        (
            "format=keyValues",
            "format=keyValues",
            "application/json",
            None,
            &[],
        ),
        (
            "sysAttrs",
            "options=sysAttrs",
            "application/json",
            None,
            &[],
        ),
        ("JSON-LD", "", "application/ld+json", None, &[]),
        (
            "attrs asking for hidden attributes",
            "attrs=speed,brandName,name",
            "application/json",
            Some(&["speed", "brandName", "name"]),
            &[],
        ),
        (
            "pick",
            "pick=id,type,speed,brandName,location",
            "application/json",
            Some(&["speed", "brandName", "location"]),
            &[],
        ),
        ("omit", "omit=speed", "application/json", None, &["speed"]),
        ("GeoJSON", "", "application/geo+json", None, &[]),
        (
            "GeoJSON keyValues",
            "options=keyValues",
            "application/geo+json",
            None,
            &[],
        ),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        for (holder, token, allowed) in &tokens {
            let token = token.as_str();
            for (rendering, params, accept, asked, omitted) in &renderings {
                let expected: BTreeSet<String> = allowed
                    .iter()
                    .filter(|name| asked.is_none_or(|asked| asked.contains(name)))
                    .filter(|name| !omitted.contains(name))
                    .map(|name| (*name).to_owned())
                    .collect();
                let geo = *accept == "application/geo+json";
                let (retrieve, query) = if params.is_empty() {
                    (
                        format!("/ngsi-ld/v1/entities/{V1}"),
                        format!("/ngsi-ld/v1/entities?type=Vehicle&id={V1}"),
                    )
                } else {
                    (
                        format!("/ngsi-ld/v1/entities/{V1}?{params}"),
                        format!("/ngsi-ld/v1/entities?type=Vehicle&id={V1}&{params}"),
                    )
                };
                for path in [retrieve, query] {
                    let case = format!("{} {holder}, {rendering}: {path}", app.backend);
                    let reply =
                        send(&app, Some(token), "GET", &path, None, &[("accept", accept)]).await;
                    assert_eq!(reply.status, 200, "{case}: {}", reply.text);
                    let body = reply.json();
                    let entity = match (&body, geo) {
                        (Value::Array(entities), false) => {
                            assert_eq!(entities.len(), 1, "{case}: {body}");
                            entities[0].clone()
                        }
                        (_, false) => body.clone(),
                        (_, true) if body["type"] == "FeatureCollection" => {
                            let features = body["features"].as_array().expect("features");
                            assert_eq!(features.len(), 1, "{case}: {body}");
                            features[0].clone()
                        }
                        (_, true) => body.clone(),
                    };
                    let (shown, geometry) = if geo {
                        (&entity["properties"], Some(&entity["geometry"]))
                    } else {
                        (&entity, None)
                    };
                    assert_eq!(attribute_names(shown), expected, "{case}: {body}");
                    if let Some(geometry) = geometry {
                        // The geometry comes from `location`: hidden location, no geometry.
                        let expected_geometry = if allowed.contains(&"location") {
                            json!({"type": "Point", "coordinates": [-8.5, 41.2]})
                        } else {
                            Value::Null
                        };
                        assert_eq!(*geometry, expected_geometry, "{case}");
                    }
                }
            }
            // Asking only for a hidden attribute: the entity without it, and no query match.
            let case = format!("{} {holder}", app.backend);
            let hidden = !allowed.contains(&"brandName");
            let only_hidden = get(
                &app,
                Some(token),
                &format!("/ngsi-ld/v1/entities/{V1}?attrs=brandName"),
            )
            .await;
            assert_eq!(only_hidden.status, 200, "{case}: {}", only_hidden.text);
            let expected = if hidden {
                set(&[])
            } else {
                set(&["brandName"])
            };
            assert_eq!(attribute_names(&only_hidden.json()), expected, "{case}");
            let matches = get(
                &app,
                Some(token),
                "/ngsi-ld/v1/entities?type=Vehicle&attrs=brandName&count=true",
            )
            .await;
            let expected = if hidden { set(&[]) } else { set(&[V1, V2]) };
            assert_eq!(ids(&matches.json()), expected, "{case}");
            assert_eq!(
                matches.header("ngsild-results-count"),
                Some(if hidden { "0" } else { "2" }),
                "{case}"
            );
            // Every query result is projected, not only the first.
            let all = get(
                &app,
                Some(token),
                "/ngsi-ld/v1/entities?type=Vehicle&options=keyValues",
            )
            .await
            .json();
            let all = all.as_array().expect("an array");
            assert_eq!(all.len(), 2, "{case}");
            for entity in all {
                assert!(
                    attribute_names(entity).is_subset(&set(allowed)),
                    "{case}: {entity}"
                );
            }
        }
    }
}

#[actix_web::test]
async fn entities_of_types_a_token_may_not_read_are_invisible() {
    let vehicles = token(&[VEHICLE], &[], None);
    // (path, the ids the Vehicle reader gets (None: 404), its results count, the admin's count)
    type Case = (
        String,
        Option<&'static [&'static str]>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: [Case; 11] = [
        (
            format!("/ngsi-ld/v1/entities/{V1}"),
            Some(&[V1]),
            None,
            None,
        ),
        (format!("/ngsi-ld/v1/entities/{B1}"), None, None, None),
        (format!("/ngsi-ld/v1/entities/{T1}"), None, None, None),
        (
            format!("/ngsi-ld/v1/entities/{B1}?options=keyValues&attrs=name"),
            None,
            None,
            None,
        ),
        (
            "/ngsi-ld/v1/entities?type=Building&count=true".into(),
            Some(&[]),
            Some("0"),
            Some("2"),
        ),
        (
            "/ngsi-ld/v1/entities?type=Vehicle,Building&count=true".into(),
            Some(&[V1, V2]),
            Some("2"),
            Some("4"),
        ),
        (
            "/ngsi-ld/v1/entities?idPattern=.*&count=true".into(),
            Some(&[V1, V2]),
            Some("2"),
            Some("5"),
        ),
        (
            format!("/ngsi-ld/v1/entities?id={B1},{V2},{T1}&count=true"),
            Some(&[V2]),
            Some("1"),
            Some("3"),
        ),
        (
            "/ngsi-ld/v1/entities?attrs=name&count=true".into(),
            Some(&[V1]),
            Some("1"),
            Some("4"),
        ),
        (
            "/ngsi-ld/v1/entities?type=https://example.org/ns%23Tunnel&count=true".into(),
            Some(&[]),
            Some("0"),
            Some("1"),
        ),
        (
            "/ngsi-ld/v1/entities?type=Building&count=true&limit=0".into(),
            Some(&[]),
            Some("0"),
            Some("2"),
        ),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        for (path, visible, count, admin_count) in &cases {
            let case = format!("{} {path}", app.backend);
            let reply = get(&app, Some(&vehicles), path).await;
            match visible {
                None => assert_status(&reply, 404, &case),
                Some(visible) => {
                    assert_eq!(reply.status, 200, "{case}: {}", reply.text);
                    assert_eq!(ids(&reply.json()), set(visible), "{case}");
                }
            }
            assert_eq!(reply.header("ngsild-results-count"), *count, "{case}");
            let control = get(&app, Some(&admin()), path).await;
            assert_eq!(control.status, 200, "{case}: {}", control.text);
            assert_eq!(
                control.header("ngsild-results-count"),
                *admin_count,
                "{case} (admin)"
            );
        }
    }
}

#[actix_web::test]
async fn writes_beyond_the_token_are_refused_and_change_nothing() {
    // Reads Vehicles and Buildings, writes Vehicles, sees and writes speed and location only.
    let fleet = token(&[VEHICLE, BUILDING], &[VEHICLE], Some(&[SPEED, LOCATION]));
    let reader = token(&[ANY], &[], None);
    // (case, token, entity, its type, attribute written, status of writes to the entity, status
    // of the writes that name its type: create and replace)
    let matrix = [
        (
            "an attribute outside the allow-list",
            &fleet,
            V1,
            "Vehicle",
            "brandName",
            403,
            403,
        ),
        (
            "a read-only token",
            &reader,
            V1,
            "Vehicle",
            "speed",
            403,
            403,
        ),
        (
            "a type the token reads but may not write",
            &fleet,
            B1,
            "Building",
            "speed",
            403,
            403,
        ),
        (
            "a type the token may not even read",
            &fleet,
            T1,
            TUNNEL,
            "speed",
            404,
            403,
        ),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        let mut before = Vec::new();
        for id in [V1, V2, B1, B2, T1] {
            before.push(stored(&app, id).await);
        }
        for (case, token, id, entity_type, attribute, status, create_status) in &matrix {
            let token = token.as_str();
            for (operation, method, path, body) in writes(id, entity_type, attribute) {
                let reply = send(&app, Some(token), method, &path, body.as_ref(), &[]).await;
                let expected = if matches!(operation, "create" | "replace") {
                    *create_status
                } else {
                    *status
                };
                assert_status(
                    &reply,
                    expected,
                    &format!("{} {case}: {operation} {method} {path}", app.backend),
                );
            }
            assert_eq!(stored(&app, &format!("{id}:new")).await, None, "{case}");
        }
        // Writes that would add a type the token may not write, or delete many entities with an
        // attribute allow-list.
        for (method, path, body) in [
            (
                "POST",
                format!("/ngsi-ld/v1/entities/{V1}/attrs"),
                Some(json!({"type": "Building", "speed": 1})),
            ),
            (
                "PATCH",
                format!("/ngsi-ld/v1/entities/{V1}"),
                Some(json!({"type": ["Vehicle", "Building"]})),
            ),
            (
                "POST",
                "/ngsi-ld/v1/entities".to_owned(),
                Some(
                    json!({"id": "urn:ngsi-ld:Vehicle:8", "type": ["Vehicle", "Building"], "speed": 1}),
                ),
            ),
            (
                "DELETE",
                "/ngsi-ld/v1/entities?type=Vehicle".to_owned(),
                None,
            ),
            (
                "DELETE",
                "/ngsi-ld/v1/entities?type=Vehicle&drop=brandName".to_owned(),
                None,
            ),
        ] {
            let reply = send(&app, Some(&fleet), method, &path, body.as_ref(), &[]).await;
            assert_refused(&reply, 403, &format!("{} {method} {path}", app.backend));
        }
        let mut after = Vec::new();
        for id in [V1, V2, B1, B2, T1] {
            after.push(stored(&app, id).await);
        }
        assert_eq!(before, after, "{}", app.backend);
        assert_eq!(stored(&app, "urn:ngsi-ld:Vehicle:8").await, None);

        // What the token allows works; a replace keeps what the token cannot see.
        let allowed = [
            (
                "PATCH",
                format!("/ngsi-ld/v1/entities/{V1}/attrs"),
                Some(json!({"speed": 70})),
                204,
            ),
            (
                "PUT",
                format!("/ngsi-ld/v1/entities/{V1}"),
                Some(json!({"type": "Vehicle", "speed": 80})),
                204,
            ),
            (
                "POST",
                "/ngsi-ld/v1/entities".to_owned(),
                Some(json!({"id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle", "speed": 1})),
                201,
            ),
            (
                "DELETE",
                format!("/ngsi-ld/v1/entities/{V2}/attrs/speed"),
                None,
                204,
            ),
        ];
        for (method, path, body, status) in allowed {
            let reply = send(&app, Some(&fleet), method, &path, body.as_ref(), &[]).await;
            assert_eq!(
                reply.status, status,
                "{} {path}: {}",
                app.backend, reply.text
            );
        }
        let v1 = stored(&app, V1).await.expect("V1 exists");
        assert_eq!(v1["speed"], 80, "{v1}");
        assert_eq!(
            (&v1["brandName"], &v1["name"]),
            (&json!("Volvo"), &json!("bus 1")),
            "hidden attributes survive a replace: {v1}"
        );
        assert!(
            v1.get("location").is_none(),
            "a visible attribute left out of a replace is gone: {v1}"
        );
        assert_eq!(stored_member(&app, V2, "speed").await, Some(Value::Null));
        // A purge with `keep` keeps what the token cannot see, whatever `keep` says.
        let reply = send(
            &app,
            Some(&fleet),
            "DELETE",
            "/ngsi-ld/v1/entities?type=Vehicle&keep=location",
            None,
            &[],
        )
        .await;
        assert_eq!(reply.status, 204, "{}: {}", app.backend, reply.text);
        let v1 = stored(&app, V1).await.expect("V1 exists");
        assert!(v1.get("speed").is_none(), "{v1}");
        assert_eq!(
            (&v1["brandName"], &v1["name"]),
            (&json!("Volvo"), &json!("bus 1")),
            "{v1}"
        );
        // Deleting a whole entity needs a token without an attribute allow-list.
        let path = "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:9";
        let reply = send(&app, Some(&fleet), "DELETE", path, None, &[]).await;
        assert_refused(&reply, 403, path);
        let movers = token(&[VEHICLE], &[VEHICLE], None);
        let reply = send(&app, Some(&movers), "DELETE", path, None, &[]).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
}

#[actix_web::test]
async fn batches_decide_per_entity() {
    let fleet = token(&[VEHICLE, BUILDING], &[VEHICLE], Some(&[SPEED, LOCATION]));
    let movers = token(&[VEHICLE, BUILDING], &[VEHICLE], None);
    let v = |n: u32| format!("urn:ngsi-ld:Vehicle:{n}");
    // (operation, token, items, written ids, refused ids with their problem type, then what the
    // administrator sees: entity, member, value (None: no entity, null: no such member))
    type Check = (String, &'static str, Option<Value>);
    type Case<'a> = (
        &'a str,
        &'a str,
        Value,
        Vec<String>,
        Vec<(String, &'a str)>,
        Vec<Check>,
    );
    let cases: Vec<Case> = vec![
        (
            "create",
            &fleet,
            json!([
                {"id": v(10), "type": "Vehicle", "speed": 1},
                {"id": "urn:ngsi-ld:Building:10", "type": "Building", "speed": 1},
                {"id": v(11), "type": "Vehicle", "speed": 1, "brandName": "x"},
                {"id": v(12), "type": "Vehicle", "speed": 2},
            ]),
            vec![v(10), v(12)],
            vec![
                ("urn:ngsi-ld:Building:10".into(), FORBIDDEN),
                (v(11), FORBIDDEN),
            ],
            vec![
                (v(10), "speed", Some(json!(1))),
                (v(12), "speed", Some(json!(2))),
                ("urn:ngsi-ld:Building:10".into(), "speed", None),
                (v(11), "speed", None),
            ],
        ),
        (
            "upsert",
            &fleet,
            json!([
                {"id": V1, "type": "Vehicle", "speed": 5},
                {"id": B1, "type": "Building", "speed": 5},
                {"id": v(13), "type": "Vehicle", "brandName": "x"},
            ]),
            vec![V1.into()],
            vec![(B1.into(), FORBIDDEN), (v(13), FORBIDDEN)],
            vec![
                (V1.into(), "speed", Some(json!(5))),
                // The replace keeps what the token cannot see.
                (V1.into(), "brandName", Some(json!("Volvo"))),
                (V1.into(), "location", Some(Value::Null)),
                (B1.into(), "speed", Some(Value::Null)),
                (v(13), "brandName", None),
            ],
        ),
        (
            "update",
            &fleet,
            json!([
                {"id": V2, "speed": 6},
                {"id": v(10), "brandName": "x"},
                {"id": B1, "speed": 6},
                {"id": T1, "speed": 6},
            ]),
            vec![V2.into()],
            vec![
                (v(10), FORBIDDEN),
                (B1.into(), FORBIDDEN),
                (T1.into(), NOT_FOUND),
            ],
            vec![
                (V2.into(), "speed", Some(json!(6))),
                (v(10), "brandName", Some(Value::Null)),
                (B1.into(), "speed", Some(Value::Null)),
                (T1.into(), "speed", Some(Value::Null)),
            ],
        ),
        (
            "merge",
            &fleet,
            json!([
                {"id": V2, "speed": 7},
                {"id": v(12), "brandName": "x"},
                {"id": B1, "speed": 7},
            ]),
            vec![V2.into()],
            vec![(v(12), FORBIDDEN), (B1.into(), FORBIDDEN)],
            vec![
                (V2.into(), "speed", Some(json!(7))),
                (v(12), "brandName", Some(Value::Null)),
                (B1.into(), "speed", Some(Value::Null)),
            ],
        ),
        (
            "delete",
            &fleet,
            json!([v(10), B1]),
            vec![],
            vec![(v(10), FORBIDDEN), (B1.into(), FORBIDDEN)],
            vec![
                (v(10), "speed", Some(json!(1))),
                (B1.into(), "name", Some(json!("Town hall"))),
            ],
        ),
        (
            "delete",
            &movers,
            json!([v(10), B1, T1]),
            vec![v(10)],
            vec![(B1.into(), FORBIDDEN), (T1.into(), NOT_FOUND)],
            vec![
                (v(10), "speed", None),
                (B1.into(), "name", Some(json!("Town hall"))),
                (T1.into(), "name", Some(json!("Harbour tunnel"))),
            ],
        ),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        for (operation, token, items, success, errors, checks) in &cases {
            let path = format!("/ngsi-ld/v1/entityOperations/{operation}");
            let case = format!("{} {operation} {items}", app.backend);
            let reply = send(&app, Some(token), "POST", &path, Some(items), &[]).await;
            assert_eq!(reply.status, 207, "{case}: {}", reply.text);
            let body = reply.json();
            assert_eq!(body["success"], json!(success), "{case}: {body}");
            let mut got: Vec<(String, String)> = body["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|error| {
                    (
                        error["entityId"].as_str().unwrap_or_default().to_owned(),
                        error["error"]["type"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect();
            got.sort();
            let mut expected: Vec<(String, String)> = errors
                .iter()
                .map(|(id, kind)| (id.clone(), (*kind).to_owned()))
                .collect();
            expected.sort();
            assert_eq!(got, expected, "{case}: {body}");
            for (id, member, value) in checks {
                assert_eq!(
                    stored_member(&app, id, member).await,
                    *value,
                    "{case}: {id} {member}"
                );
            }
        }
    }
}

#[actix_web::test]
async fn tokens_bound_to_tenants_work_there_only() {
    let spec = |tenants: &[&str]| TokenSpec {
        holder: "tester".into(),
        read: names(&[ANY]),
        write: names(&[ANY]),
        tenants: Some(names(tenants)),
        ..TokenSpec::default()
    };
    let city_a = mint(&spec(&["city-a"]));
    let default_tenant = mint(&spec(&[""]));
    let everywhere = token(&[ANY], &[ANY], None);
    let city_b = narrow(
        &everywhere,
        Restrictions {
            tenants: Some(names(&["city-b"])),
            ..Restrictions::default()
        },
    );
    // (token, tenant (None: the default tenant), status of a create, a retrieval and a query)
    let cases = [
        ("city-a token", &city_a, Some("city-a"), 201),
        ("city-a token", &city_a, Some("city-b"), 403),
        ("city-a token", &city_a, None, 403),
        // Refused before the tenant is looked up: nothing is learnt about which tenants exist.
        ("city-a token", &city_a, Some("city-z"), 403),
        ("default-tenant token", &default_tenant, None, 201),
        ("default-tenant token", &default_tenant, Some("city-a"), 403),
        ("attenuated to city-b", &city_b, Some("city-b"), 201),
        ("attenuated to city-b", &city_b, Some("city-a"), 403),
        ("attenuated to city-b", &city_b, None, 403),
        ("unrestricted token", &everywhere, Some("city-a"), 201),
        ("unrestricted token", &everywhere, Some("city-z"), 404),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        for (index, (holder, token, tenant, status)) in cases.iter().enumerate() {
            let case = format!("{} {holder} in {tenant:?}", app.backend);
            let id = format!("urn:ngsi-ld:Vehicle:t{index}");
            let headers: Vec<(&str, &str)> = tenant.iter().map(|t| ("ngsild-tenant", *t)).collect();
            let entity = json!({"id": id, "type": "Vehicle", "speed": index});
            let requests = [
                (
                    "POST",
                    "/ngsi-ld/v1/entities".to_owned(),
                    Some(entity),
                    *status,
                ),
                (
                    "GET",
                    format!("/ngsi-ld/v1/entities/{id}"),
                    None,
                    if *status == 201 { 200 } else { *status },
                ),
                (
                    "GET",
                    "/ngsi-ld/v1/entities?type=Vehicle".to_owned(),
                    None,
                    if *status == 201 { 200 } else { *status },
                ),
            ];
            for (method, path, body, expected) in requests {
                let reply = send(&app, Some(token), method, &path, body.as_ref(), &headers).await;
                let case = format!("{case}: {method} {path}");
                if expected == 404 {
                    assert_eq!(reply.status, 404, "{case}: {}", reply.text);
                    reply.assert_problem(404, "NonexistentTenant");
                } else {
                    assert_status(&reply, expected, &case);
                }
            }
        }
        // Each tenant sees its own entities only.
        let in_city_a = format!("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:t{}", 0);
        for (tenant, status) in [(Some("city-a"), 200), (Some("city-b"), 404), (None, 404)] {
            let headers: Vec<(&str, &str)> = tenant.iter().map(|t| ("ngsild-tenant", *t)).collect();
            let reply = send(&app, Some(&everywhere), "GET", &in_city_a, None, &headers).await;
            assert_eq!(reply.status, status, "{} {tenant:?}", app.backend);
        }
    }
}

#[actix_web::test]
async fn attenuation_narrows_and_never_widens() {
    let original = token(&[VEHICLE], &[], Some(&[SPEED]));
    let wider = narrow(
        &original,
        Restrictions {
            read: Some(names(&[VEHICLE, BUILDING])),
            write: Some(names(&[VEHICLE, BUILDING])),
            attributes: Some(names(&[SPEED, BRAND_NAME])),
            ..Restrictions::default()
        },
    );
    let full = token(&[VEHICLE, BUILDING], &[VEHICLE], None);
    let building_names = narrow(
        &full,
        Restrictions {
            read: Some(names(&[BUILDING])),
            write: Some(Vec::new()),
            attributes: Some(names(&[NAME])),
            ..Restrictions::default()
        },
    );
    let day = Some(Duration::days(1));
    let fresh = narrow(
        &full,
        Restrictions {
            ttl: day,
            ..Restrictions::default()
        },
    );
    let stale = attenuate(
        &full,
        &Restrictions {
            ttl: day,
            ..Restrictions::default()
        },
        a_month_ago(),
    )
    .expect("attenuated a month ago");
    let every: &[&str] = &["brandName", "location", "name", "speed"];
    // (token, what it gets of V1 and of B1: status and attributes, status of a Vehicle create)
    type Case<'a> = (
        &'a str,
        &'a str,
        (u16, &'a [&'a str]),
        (u16, &'a [&'a str]),
        u16,
    );
    let cases: [Case; 6] = [
        ("original", &original, (200, &["speed"]), (404, &[]), 403),
        (
            "attenuation listing more than the original",
            &wider,
            (200, &["speed"]),
            (404, &[]),
            403,
        ),
        (
            "full",
            &full,
            (200, every),
            (200, &["brandName", "name"]),
            201,
        ),
        (
            "attenuated to Building names",
            &building_names,
            (404, &[]),
            (200, &["name"]),
            403,
        ),
        (
            "attenuation valid for a day",
            &fresh,
            (200, every),
            (200, &["brandName", "name"]),
            201,
        ),
        (
            "attenuation that expired",
            &stale,
            (401, &[]),
            (401, &[]),
            401,
        ),
    ];
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        for (index, (holder, token, vehicle, building, create)) in cases.iter().enumerate() {
            let case = format!("{} {holder}", app.backend);
            for (id, (status, attributes)) in [(V1, vehicle), (B1, building)] {
                let reply = get(&app, Some(token), &format!("/ngsi-ld/v1/entities/{id}")).await;
                let case = format!("{case}: {id}");
                assert_status(&reply, *status, &case);
                if *status == 200 {
                    assert_eq!(attribute_names(&reply.json()), set(attributes), "{case}");
                }
            }
            // Buildings in query results exactly when a Building can be retrieved.
            let buildings = get(&app, Some(token), "/ngsi-ld/v1/entities?type=Building").await;
            match building.0 {
                401 => assert_refused(&buildings, 401, &case),
                200 => assert_eq!(ids(&buildings.json()), set(&[B1, B2]), "{case}"),
                _ => assert_eq!(buildings.json(), json!([]), "{case}"),
            }
            let created = send(
                &app,
                Some(token),
                "POST",
                "/ngsi-ld/v1/entities",
                Some(&json!({"id": format!("urn:ngsi-ld:Vehicle:a{index}"), "type": "Vehicle", "speed": 1})),
                &[],
            )
            .await;
            assert_status(&created, *create, &format!("{case}: create"));
        }
    }
}

#[actix_web::test]
async fn revoked_tokens_are_refused_at_once() {
    let admin = admin();
    let user = token(&[ANY], &[ANY], None);
    let user_child = narrow(
        &user,
        Restrictions {
            read: Some(names(&[VEHICLE])),
            ..Restrictions::default()
        },
    );
    let family = mint(&TokenSpec {
        holder: "family".into(),
        read: names(&[ANY]),
        ..TokenSpec::default()
    });
    let family_child = narrow(&family, Restrictions::default());
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in apps {
        seed(&app).await;
        let backend = app.backend;
        for token in [&user, &user_child, &family, &family_child] {
            assert_eq!(read_status(&app, token).await, 200, "{backend}");
        }
        // Only an admin token may revoke or list revocations.
        let request = json!({"token": user_child});
        for (token, status) in [(None, 401), (Some(user.as_str()), 403)] {
            for (method, body) in [("POST", Some(&request)), ("GET", None)] {
                let reply = send(&app, token, method, "/admin/v1/revocations", body, &[]).await;
                assert_refused(&reply, status, &format!("{backend} {method} {token:?}"));
            }
        }
        // Revoking an attenuation (its last block): the attenuation is refused, its parent works.
        let attenuation_id = revocation_ids(&user_child)[1].clone();
        // Revoking a token whose last block is its authority block: its attenuations go with it.
        let family_id = revocation_ids(&family)[0].clone();
        // Revoking by id (any case of hex).
        let user_id = revocation_ids(&user)[0].clone();
        let steps = [
            (
                json!({"token": user_child, "reason": "lost"}),
                &attenuation_id,
                vec![&user_child],
                vec![&user],
            ),
            (
                json!({"token": family}),
                &family_id,
                vec![&family, &family_child],
                vec![&user],
            ),
            (
                json!({"revocationIds": [user_id.to_uppercase()]}),
                &user_id,
                vec![&user, &user_child],
                vec![],
            ),
        ];
        for (body, id, refused, still_working) in steps {
            let reply = send(
                &app,
                Some(&admin),
                "POST",
                "/admin/v1/revocations",
                Some(&body),
                &[],
            )
            .await;
            assert_eq!(reply.status, 200, "{backend} {body}: {}", reply.text);
            assert_eq!(reply.json(), json!({"revoked": [id]}), "{backend} {body}");
            for token in refused {
                for (method, path, body) in [
                    ("GET", format!("/ngsi-ld/v1/entities/{V1}"), None),
                    (
                        "PATCH",
                        format!("/ngsi-ld/v1/entities/{V1}/attrs"),
                        Some(json!({"speed": 1})),
                    ),
                ] {
                    let reply = send(&app, Some(token), method, &path, body.as_ref(), &[]).await;
                    assert_refused(&reply, 401, &format!("{backend} after {id}: {method}"));
                }
            }
            for token in still_working {
                assert_eq!(read_status(&app, token).await, 200, "{backend} {id}");
            }
        }
        assert_eq!(stored_member(&app, V1, "speed").await, Some(json!(50)));
        let listed = get(&app, Some(&admin), "/admin/v1/revocations").await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let listed: BTreeSet<String> = listed.json()["revocationIds"]
            .as_array()
            .expect("revocationIds")
            .iter()
            .map(|id| id.as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            listed,
            set(&[
                attenuation_id.as_str(),
                family_id.as_str(),
                user_id.as_str()
            ]),
            "{backend}"
        );
        // What cannot be revoked here.
        let foreign = issue(
            &RootKey::from_seed([7; 32]).expect("a valid seed"),
            &TokenSpec {
                holder: "other".into(),
                read: names(&[ANY]),
                ..TokenSpec::default()
            },
            now(),
        )
        .expect("issued by another department");
        for body in [
            json!({"token": foreign}),
            json!({"revocationIds": ["not hex"]}),
            json!({"revocationIds": []}),
            json!({"token": admin, "revocationIds": [user_id]}),
        ] {
            let reply = send(
                &app,
                Some(&admin),
                "POST",
                "/admin/v1/revocations",
                Some(&body),
                &[],
            )
            .await;
            assert_eq!(reply.status, 400, "{backend} {body}: {}", reply.text);
            reply.assert_problem(400, "BadRequestData");
        }
        assert_eq!(read_status(&app, &admin).await, 200, "{backend}");
    }
}

/// Starts a connector on `database_url` with the department policy in `policies` and the given
/// clock (no test context); returns its URL and a handle to stop it.
async fn start(
    database_url: &str,
    policies: &std::path::Path,
    clock: Arc<ManualClock>,
) -> (String, actix_web::dev::ServerHandle) {
    let mut settings = Settings::new("test", database_url);
    settings.listen = "127.0.0.1:0".to_owned();
    settings.contexts.fetch_remote = false;
    settings.auth.public_key = Some(root_key().public_string());
    settings.auth.policies = Some(policies.to_owned());
    let application = Application::build_with_clock(settings, clock)
        .await
        .expect("the connector starts");
    let url = application.public_url().to_owned();
    let handle = application.handle();
    actix_web::rt::spawn(application.run_until_stopped());
    (url, handle)
}

/// A request straight to `url` with a bearer token: status and body.
async fn call(url: &str, token: &str, method: &str, body: Option<&Value>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("the connector answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[actix_web::test]
async fn revocations_survive_a_restart_and_tokens_expire_as_the_clock_moves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policies = write_policy(dir.path(), CLOSED, None);
    let admin = admin();
    let revoked = token(&[ANY], &[ANY], None);
    let kept = mint(&TokenSpec {
        holder: "kept".into(),
        read: names(&[ANY]),
        ttl: Some(Duration::hours(1)),
        ..TokenSpec::default()
    });
    for database in test_databases().await {
        let backend = database.kind;
        let clock = Arc::new(ManualClock::new(now()));
        let (url, handle) = start(&database.url, &policies, clock.clone()).await;
        let query = format!("{url}/ngsi-ld/v1/entities?type=https://example.org/ns%23Vehicle");
        let revocations = format!("{url}/admin/v1/revocations");
        assert_eq!(
            call(&query, &revoked, "GET", None).await.0,
            200,
            "{backend}"
        );
        let (status, text) = call(
            &revocations,
            &admin,
            "POST",
            Some(&json!({"token": revoked})),
        )
        .await;
        assert_eq!(status, 200, "{backend}: {text}");
        assert_eq!(
            call(&query, &revoked, "GET", None).await.0,
            401,
            "{backend}"
        );
        handle.stop(true).await;

        let (url, handle) = start(&database.url, &policies, clock.clone()).await;
        let query = format!("{url}/ngsi-ld/v1/entities?type=https://example.org/ns%23Vehicle");
        let revocations = format!("{url}/admin/v1/revocations");
        assert_eq!(
            call(&query, &revoked, "GET", None).await.0,
            401,
            "{backend}: the revocation was stored"
        );
        let (status, text) = call(&revocations, &admin, "GET", None).await;
        assert_eq!(status, 200, "{backend}: {text}");
        let listed: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            listed,
            json!({"revocationIds": revocation_ids(&revoked)}),
            "{backend}"
        );
        // A token with a time to live works until it expires, then gets 401.
        assert_eq!(call(&query, &kept, "GET", None).await.0, 200, "{backend}");
        clock.advance(Duration::minutes(59));
        assert_eq!(call(&query, &kept, "GET", None).await.0, 200, "{backend}");
        clock.advance(Duration::minutes(2));
        assert_eq!(call(&query, &kept, "GET", None).await.0, 401, "{backend}");
        handle.stop(true).await;
    }
}

#[actix_web::test]
async fn the_anonymous_policy_reads_public_types_projected_and_never_writes() {
    let (_policies, apps) = apps_with_policy(PUBLIC_BUILDING_NAMES).await;
    for app in apps {
        seed(&app).await;
        let backend = app.backend;
        // (path, the entities anonymous callers get as keyValues (None: 404))
        let reads: [(String, Option<Value>); 6] = [
            (
                format!("/ngsi-ld/v1/entities/{B1}?options=keyValues"),
                Some(json!({"id": B1, "type": "Building", "name": "Town hall"})),
            ),
            (
                "/ngsi-ld/v1/entities?type=Building&options=keyValues".into(),
                Some(json!([
                    {"id": B1, "type": "Building", "name": "Town hall"},
                    {"id": B2, "type": "Building", "name": "Library"},
                ])),
            ),
            (format!("/ngsi-ld/v1/entities/{V1}?options=keyValues"), None),
            (
                "/ngsi-ld/v1/entities?type=Vehicle&options=keyValues".into(),
                Some(json!([])),
            ),
            (
                "/ngsi-ld/v1/entities?type=Building&attrs=brandName".into(),
                Some(json!([])),
            ),
            (
                "/ngsi-ld/v1/entities?idPattern=.*&options=keyValues".into(),
                Some(json!([
                    {"id": B1, "type": "Building", "name": "Town hall"},
                    {"id": B2, "type": "Building", "name": "Library"},
                ])),
            ),
        ];
        for (path, expected) in &reads {
            let reply = get(&app, None, path).await;
            match expected {
                None => assert_status(&reply, 404, &format!("{backend} {path}")),
                Some(expected) => {
                    assert_eq!(reply.status, 200, "{backend} {path}: {}", reply.text);
                    assert_eq!(reply.json(), *expected, "{backend} {path}");
                }
            }
        }
        // A token that does not authenticate is refused, not read as anonymous.
        let reply = send(
            &app,
            Some("not-a-token"),
            "GET",
            &format!("/ngsi-ld/v1/entities/{B1}"),
            None,
            &[],
        )
        .await;
        assert_refused(&reply, 401, backend);
        // Writes need a token, also to the public type and its public attribute.
        let mut refused = writes(B1, "Building", "name");
        refused.push((
            "batch upsert",
            "POST",
            "/ngsi-ld/v1/entityOperations/upsert".into(),
            Some(json!([{"id": B1, "type": "Building", "name": "x"}])),
        ));
        refused.push((
            "purge",
            "DELETE",
            "/ngsi-ld/v1/entities?type=Building".into(),
            None,
        ));
        refused.push(("revocations", "GET", "/admin/v1/revocations".into(), None));
        for (operation, method, path, body) in refused {
            let reply = send(&app, None, method, &path, body.as_ref(), &[]).await;
            assert_refused(&reply, 401, &format!("{backend} {operation}: {path}"));
        }
        assert_eq!(
            stored_member(&app, B1, "name").await,
            Some(json!("Town hall"))
        );
        assert_eq!(stored(&app, "urn:ngsi-ld:Building:1:new").await, None);
    }
}

#[actix_web::test]
async fn department_policies_decide_per_entity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = write_policy(
        dir.path(),
        CLOSED,
        Some(&format!(
            "deny if operation(\"read\"), entity_id(\"{V2}\");\ndeny if operation(\"write\"), attribute(\"https://example.org/ns#isParked\");\n"
        )),
    );
    let apps = apps_with(move |settings| settings.auth.policies = Some(folder.clone())).await;
    let vehicles = token(&[VEHICLE], &[VEHICLE], None);
    for app in apps {
        seed(&app).await;
        let backend = app.backend;
        // Reads: the entity the policy denies is left out of query results.
        assert_eq!(read_status(&app, &vehicles).await, 200, "{backend}");
        // Decided from what the request names, before anything is read (so it says nothing
        // about whether the entity exists).
        let denied = get(&app, Some(&vehicles), &format!("/ngsi-ld/v1/entities/{V2}")).await;
        assert_refused(&denied, 403, backend);
        let query = get(
            &app,
            Some(&vehicles),
            "/ngsi-ld/v1/entities?type=Vehicle&count=true",
        )
        .await;
        assert_eq!(query.status, 200, "{backend}: {}", query.text);
        assert_eq!(ids(&query.json()), set(&[V1]), "{backend}");
        // The count and the pages hold only what the caller may see: the hidden entity is neither
        // counted nor given a place on a page.
        assert_eq!(query.header("ngsild-results-count"), Some("1"), "{backend}");
        let first_page = get(
            &app,
            Some(&vehicles),
            "/ngsi-ld/v1/entities?type=Vehicle&limit=1&offset=0",
        )
        .await;
        assert_eq!(ids(&first_page.json()), set(&[V1]), "{backend}");
        let second_page = get(
            &app,
            Some(&vehicles),
            "/ngsi-ld/v1/entities?type=Vehicle&limit=1&offset=1&count=true",
        )
        .await;
        assert_eq!(second_page.json(), json!([]), "{backend}");
        assert_eq!(
            second_page.header("ngsild-results-count"),
            Some("1"),
            "{backend}"
        );
        // Writes: the attribute the policy protects is refused, others are written.
        let path = format!("/ngsi-ld/v1/entities/{V1}/attrs");
        let refused = send(
            &app,
            Some(&vehicles),
            "PATCH",
            &path,
            Some(&json!({"isParked": true})),
            &[],
        )
        .await;
        assert_refused(&refused, 403, backend);
        let written = send(
            &app,
            Some(&vehicles),
            "PATCH",
            &path,
            Some(&json!({"speed": 51})),
            &[],
        )
        .await;
        assert_eq!(written.status, 204, "{backend}: {}", written.text);
        let batch = send(
            &app,
            Some(&vehicles),
            "POST",
            "/ngsi-ld/v1/entityOperations/update",
            Some(&json!([{"id": V1, "speed": 52}, {"id": V1, "isParked": true}])),
            &[],
        )
        .await;
        assert_eq!(batch.status, 207, "{backend}: {}", batch.text);
        let body = batch.json();
        assert_eq!(body["success"], json!([V1]), "{backend}: {body}");
        assert_eq!(body["errors"][0]["entityId"], V1, "{backend}: {body}");
        assert_eq!(
            body["errors"][0]["error"]["type"], FORBIDDEN,
            "{backend}: {body}"
        );
        assert_eq!(stored_member(&app, V1, "speed").await, Some(json!(52)));
        assert_eq!(stored_member(&app, V1, "isParked").await, Some(Value::Null));
    }
}

/// A token that may write one type of a multi-typed entity may change its attributes, but not take
/// its other types away (replace, batch upsert) nor delete it.
#[actix_web::test]
async fn writes_cannot_remove_types_the_token_may_not_write() {
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in &apps {
        let both = "urn:ngsi-ld:Vehicle:both";
        let created = send(
            app,
            Some(&admin()),
            "POST",
            "/ngsi-ld/v1/entities",
            Some(&json!({"id": both, "type": ["Vehicle", "Building"], "speed": 1})),
            &[],
        )
        .await;
        assert_eq!(created.status, 201, "{} {}", app.backend, created.text);
        let vehicles = token(&[VEHICLE], &[VEHICLE], None);
        let path = format!("/ngsi-ld/v1/entities/{both}");
        let cases = [
            ("PUT", path.clone(), json!({"type": "Vehicle", "speed": 2})),
            (
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert".to_owned(),
                json!([{"id": both, "type": "Vehicle", "speed": 2}]),
            ),
        ];
        for (method, path, body) in &cases {
            let reply = send(app, Some(&vehicles), method, path, Some(body), &[]).await;
            let refused = match reply.status {
                403 => reply.json()["type"] == FORBIDDEN,
                207 => reply.json()["errors"][0]["error"]["type"] == FORBIDDEN,
                _ => false,
            };
            assert!(refused, "{} {method} {path}: {}", app.backend, reply.text);
        }
        let deleted = send(app, Some(&vehicles), "DELETE", &path, None, &[]).await;
        assert_refused(&deleted, 403, "delete a two-typed entity");
        // Nothing changed; a change that leaves the types alone is allowed.
        assert_eq!(stored_member(app, both, "speed").await, Some(json!(1)));
        let kept = send(
            app,
            Some(&vehicles),
            "PATCH",
            &format!("{path}/attrs"),
            Some(&json!({"speed": 3})),
            &[],
        )
        .await;
        assert_eq!(kept.status, 204, "{} {}", app.backend, kept.text);
        assert_eq!(stored_member(app, both, "speed").await, Some(json!(3)));
    }
}

/// A request may declare its purpose (`Civitas-Purpose`); a token issued for a purpose is refused
/// for another, and a token without a purpose serves any.
#[actix_web::test]
async fn tokens_for_a_purpose_serve_that_purpose_only() {
    let (_policies, apps) = apps_with_policy(CLOSED).await;
    for app in &apps {
        seed(app).await;
        let planning = mint(&TokenSpec {
            holder: "planner".into(),
            read: names(&[VEHICLE]),
            purpose: Some("planning".into()),
            ..TokenSpec::default()
        });
        let any_purpose = token(&[VEHICLE], &[], None);
        let path = format!("/ngsi-ld/v1/entities/{V1}");
        for (token, purpose, status) in [
            (&planning, None, 200),
            (&planning, Some("planning"), 200),
            (&planning, Some("marketing"), 403),
            (&any_purpose, Some("marketing"), 200),
        ] {
            let headers: Vec<(&str, &str)> = purpose
                .map(|p| ("civitas-purpose", p))
                .into_iter()
                .collect();
            let reply = send(app, Some(token), "GET", &path, None, &headers).await;
            if status == 200 {
                assert_eq!(
                    reply.status, 200,
                    "{} {purpose:?}: {}",
                    app.backend, reply.text
                );
            } else {
                assert_refused(&reply, status, "a token for another purpose");
            }
        }
    }
}
