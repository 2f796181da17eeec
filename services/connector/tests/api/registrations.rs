//! Context source registrations (`/csourceRegistrations`): create, retrieve, query, update and
//! delete through the HTTP API, validation, tenants, and who may register what.

use civitas_auth::token::{TokenSpec, issue};
use civitas_testkit::fixed_time;
use serde_json::{Value, json};

use crate::helpers::{TEST_CONTEXT_URL, TestApp, apps, apps_with, link, root_key, write_policy};

const PATH: &str = "/ngsi-ld/v1/csourceRegistrations";

fn vehicles(id: &str, endpoint: &str) -> Value {
    json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}], "propertyNames": ["speed", "brandName"]}],
        "endpoint": endpoint,
        "mode": "inclusive",
        "operations": ["retrieveOps"]
    })
}

fn encoded(id: &str) -> String {
    id.replace(':', "%3A")
}

async fn create(app: &TestApp, body: &Value) -> String {
    let reply = app
        .send_json("POST", PATH, body, Some(TEST_CONTEXT_URL))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply
        .header("location")
        .expect("a Location header")
        .to_owned()
}

#[actix_web::test]
async fn a_registration_is_created_retrieved_queried_updated_and_deleted() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let id = "urn:ngsi-ld:ContextSourceRegistration:fleet";
        let location = create(&app, &vehicles(id, "http://127.0.0.1:9/fleet")).await;
        assert_eq!(location, format!("{PATH}/{id}"));

        // Rendered in the caller's context: terms come back as they were sent.
        let got = app.get(&location, ctx).await;
        assert_eq!(got.status, 200, "{}", got.text);
        let body = got.json();
        assert_eq!(body["id"], id);
        assert_eq!(body["type"], "ContextSourceRegistration");
        assert_eq!(body["information"][0]["entities"][0]["type"], "Vehicle");
        assert_eq!(
            body["information"][0]["propertyNames"],
            json!(["speed", "brandName"])
        );
        assert_eq!(body["endpoint"], "http://127.0.0.1:9/fleet");
        assert_eq!(body["mode"], "inclusive");
        assert!(body.get("createdAt").is_none(), "{body}");
        // Without the context, the same registration shows full IRIs.
        let expanded = app.get(&location, None).await.json();
        assert_eq!(
            expanded["information"][0]["entities"][0]["type"],
            "https://example.org/ns#Vehicle"
        );
        let system = app
            .get(&format!("{location}?options=sysAttrs"), ctx)
            .await
            .json();
        assert_eq!(
            system["createdAt"], "2026-01-01T00:00:00.000000Z",
            "{system}"
        );

        // Queried by type and by attribute; other types and attributes do not match.
        create(
            &app,
            &json!({"type": "ContextSourceRegistration", "endpoint": "http://127.0.0.1:9/estate",
                    "information": [{"entities": [{"type": "Building"}]}]}),
        )
        .await;
        let by_type = app.get(&format!("{PATH}?type=Vehicle"), ctx).await;
        assert_eq!(by_type.status, 200, "{}", by_type.text);
        let found = by_type.json();
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
        assert_eq!(found[0]["id"], id);
        // A type expression selects the registrations of any type it names: a Vehicle source
        // may hold Vehicles that are Buildings too.
        let expression = app
            .get(&format!("{PATH}?type=(Vehicle;Building)"), ctx)
            .await;
        assert_eq!(expression.status, 200, "{}", expression.text);
        assert_eq!(expression.json().as_array().map(Vec::len), Some(2));
        let expression = app
            .get(&format!("{PATH}?type=(Vehicle;Bus)|Tram"), ctx)
            .await;
        assert_eq!(expression.json().as_array().map(Vec::len), Some(1));
        let invalid = app.get(&format!("{PATH}?type=(Vehicle;"), ctx).await;
        invalid.assert_problem(400, "BadRequestData");
        // A registration that lists no attributes covers them all.
        let by_attribute = app.get(&format!("{PATH}?attrs=speed"), ctx).await.json();
        assert_eq!(by_attribute.as_array().map(Vec::len), Some(2));
        let none = app
            .get(&format!("{PATH}?type=Vehicle&attrs=name"), ctx)
            .await;
        assert_eq!(none.json(), json!([]));
        let counted = app
            .get(&format!("{PATH}?idPattern=.*&count=true&limit=1"), ctx)
            .await;
        assert_eq!(counted.header("ngsild-results-count"), Some("2"));
        assert_eq!(counted.json().as_array().map(Vec::len), Some(1));

        // Patched: the members sent replace the stored ones, the rest stays.
        let patched = app
            .send_json(
                "PATCH",
                &location,
                &json!({"endpoint": "http://127.0.0.1:9/fleet-v2"}),
                ctx,
            )
            .await;
        assert_eq!(patched.status, 204, "{}", patched.text);
        let after = app.get(&location, ctx).await.json();
        assert_eq!(after["endpoint"], "http://127.0.0.1:9/fleet-v2");
        assert_eq!(after["mode"], "inclusive");
        // An expiry is set, then removed with null (never expire); the id may be repeated, not changed.
        for (fragment, status) in [
            (json!({"id": id, "expiresAt": "2030-01-01T00:00:00Z"}), 204),
            (json!({"expiresAt": null}), 204),
            (
                json!({"id": "urn:ngsi-ld:ContextSourceRegistration:other"}),
                400,
            ),
            (json!({"endpoint": null}), 400),
        ] {
            let reply = app.send_json("PATCH", &location, &fragment, ctx).await;
            assert_eq!(reply.status, status, "{fragment}: {}", reply.text);
        }
        let after = app.get(&location, ctx).await.json();
        assert!(after.get("expiresAt").is_none(), "{after}");

        let deleted = app.request("DELETE", &location, &[], None).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        app.get(&location, ctx)
            .await
            .assert_problem(404, "ResourceNotFound");
        app.request("DELETE", &location, &[], None)
            .await
            .assert_problem(404, "ResourceNotFound");
    }
}

#[actix_web::test]
async fn malformed_registrations_are_refused_and_nothing_is_stored() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let valid = vehicles(
            "urn:ngsi-ld:ContextSourceRegistration:1",
            "http://127.0.0.1:9",
        );
        let mut cases = Vec::new();
        for (member, value) in [
            ("information", Value::Null),
            ("information", json!([])),
            ("information", json!([{"entities": [{"id": "urn:x:1"}]}])),
            ("endpoint", json!("not a url")),
            ("type", json!("Registration")),
            ("mode", json!("sometimes")),
            ("id", json!("no uri")),
            ("expiresAt", json!("2020-01-01T00:00:00Z")),
            ("expiresAt", json!("tomorrow")),
        ] {
            let mut body = valid.clone();
            if value.is_null() {
                body.as_object_mut().expect("object").remove(member);
            } else {
                body[member] = value;
            }
            cases.push(body);
        }
        // Exclusive registrations name entities by id and list their attributes.
        let mut exclusive = valid.clone();
        exclusive["mode"] = json!("exclusive");
        cases.push(exclusive);
        for body in &cases {
            app.send_json("POST", PATH, body, ctx)
                .await
                .assert_problem(400, "BadRequestData");
        }
        app.send_json("POST", PATH, &json!([valid]), ctx)
            .await
            .assert_problem(400, "InvalidRequest");
        app.request(
            "POST",
            PATH,
            &[("content-type", "application/json")],
            Some("{"),
        )
        .await
        .assert_problem(400, "InvalidRequest");
        assert_eq!(
            app.get(&format!("{PATH}?idPattern=.*"), ctx).await.json(),
            json!([])
        );
        // A query names what it looks for.
        app.get(PATH, ctx)
            .await
            .assert_problem(400, "BadRequestData");

        create(&app, &valid).await;
        app.send_json("POST", PATH, &valid, ctx)
            .await
            .assert_problem(409, "AlreadyExists");
        let location = format!(
            "{PATH}/{}",
            encoded("urn:ngsi-ld:ContextSourceRegistration:1")
        );
        app.send_json("PATCH", &location, &json!({"mode": "sometimes"}), ctx)
            .await
            .assert_problem(400, "BadRequestData");
        assert_eq!(app.get(&location, ctx).await.json()["mode"], "inclusive");
        app.send_json(
            "PATCH",
            &format!("{PATH}/{}", encoded("urn:x:absent")),
            &json!({"endpoint": "http://127.0.0.1:9"}),
            ctx,
        )
        .await
        .assert_problem(404, "ResourceNotFound");
        app.get(&format!("{PATH}/not-a-uri"), ctx)
            .await
            .assert_problem(400, "BadRequestData");
        // A q that does not parse is a 400.
        app.get(&format!("{PATH}?q=speed>>3"), ctx)
            .await
            .assert_problem(400, "BadRequestData");
    }
}

#[actix_web::test]
async fn q_selects_registrations_by_their_own_properties() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        for (n, provider, level) in [(1, "city", 1), (2, "utility", 2), (3, "city", 3)] {
            let mut body = vehicles(
                &format!("urn:ngsi-ld:ContextSourceRegistration:q{n}"),
                "http://127.0.0.1:9",
            );
            body["dataProvider"] = json!(provider);
            body["level"] = json!({"type": "Property", "value": level});
            create(&app, &body).await;
        }
        let ids = |reply: crate::helpers::Reply| -> Vec<String> {
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply
                .json()
                .as_array()
                .expect("array")
                .iter()
                .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let found = ids(app
            .get(&format!("{PATH}?q=dataProvider==%22city%22"), ctx)
            .await);
        assert_eq!(
            found,
            [
                "urn:ngsi-ld:ContextSourceRegistration:q1",
                "urn:ngsi-ld:ContextSourceRegistration:q3"
            ]
        );
        let found = ids(app
            .get(
                &format!("{PATH}?type=Vehicle&q=dataProvider==%22city%22;level>1"),
                ctx,
            )
            .await);
        assert_eq!(found, ["urn:ngsi-ld:ContextSourceRegistration:q3"]);
        // The context source filter reads the same properties.
        let found = ids(app.get(&format!("{PATH}?csf=level<=2"), ctx).await);
        assert_eq!(
            found,
            [
                "urn:ngsi-ld:ContextSourceRegistration:q1",
                "urn:ngsi-ld:ContextSourceRegistration:q2"
            ]
        );
        app.get(&format!("{PATH}?csf=level<"), ctx)
            .await
            .assert_problem(400, "BadRequestData");
        // Pages link to the ones before and after.
        let page = app
            .get(&format!("{PATH}?type=Vehicle&limit=1&offset=1"), ctx)
            .await;
        let links: Vec<String> = page
            .headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.contains("json-ld#context"))
            .map(str::to_owned)
            .collect();
        assert_eq!(ids(page), ["urn:ngsi-ld:ContextSourceRegistration:q2"]);
        assert_eq!(
            links,
            [
                "</ngsi-ld/v1/csourceRegistrations?type=Vehicle&limit=1&offset=0>;rel=\"prev\";type=\"application/ld+json\"",
                "</ngsi-ld/v1/csourceRegistrations?type=Vehicle&limit=1&offset=2>;rel=\"next\";type=\"application/ld+json\""
            ]
        );
    }
}

#[actix_web::test]
async fn registrations_belong_to_their_tenant() {
    for app in apps().await {
        let link_value = link(TEST_CONTEXT_URL);
        let body = vehicles(
            "urn:ngsi-ld:ContextSourceRegistration:a",
            "http://127.0.0.1:9",
        );
        let created = app
            .request(
                "POST",
                PATH,
                &[
                    ("content-type", "application/json"),
                    ("link", &link_value),
                    ("ngsild-tenant", "city-a"),
                ],
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let list = |tenant: &'static str| {
            let headers = [
                ("link", link_value.clone()),
                ("ngsild-tenant", tenant.to_owned()),
            ];
            let app = &app;
            async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                app.request("GET", &format!("{PATH}?idPattern=.*"), &headers, None)
                    .await
                    .json()
            }
        };
        assert_eq!(list("city-a").await.as_array().map(Vec::len), Some(1));
        assert_eq!(list("city-b").await, json!([]));
        assert_eq!(
            app.get(&format!("{PATH}?idPattern=.*"), Some(TEST_CONTEXT_URL))
                .await
                .json(),
            json!([])
        );
    }
}

#[actix_web::test]
async fn only_a_writer_of_every_registered_type_may_register_a_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = write_policy(dir.path(), "", None);
    for app in apps_with(move |settings| settings.auth.policies = Some(folder.clone())).await {
        let token = |read: &[&str], write: &[&str]| {
            let spec = TokenSpec {
                holder: "fleet".into(),
                read: read.iter().map(|t| (*t).to_owned()).collect(),
                write: write.iter().map(|t| (*t).to_owned()).collect(),
                ..TokenSpec::default()
            };
            issue(&root_key(), &spec, fixed_time(0)).expect("a token")
        };
        let vehicle = "https://example.org/ns#Vehicle";
        let building = "https://example.org/ns#Building";
        let link_value = link(TEST_CONTEXT_URL);
        let send =
            |token: Option<String>, method: &'static str, path: String, body: Option<Value>| {
                let link_value = link_value.clone();
                let app = &app;
                async move {
                    let bearer = token.map(|t| format!("Bearer {t}"));
                    let mut headers = vec![("link", link_value.as_str())];
                    if let Some(bearer) = &bearer {
                        headers.push(("authorization", bearer));
                    }
                    if body.is_some() {
                        headers.push(("content-type", "application/json"));
                    }
                    let body = body.map(|b| b.to_string());
                    app.request(method, &path, &headers, body.as_deref()).await
                }
            };
        let fleet = vehicles(
            "urn:ngsi-ld:ContextSourceRegistration:fleet",
            "http://127.0.0.1:9",
        );
        let anonymous = send(None, "POST", PATH.into(), Some(fleet.clone())).await;
        assert_eq!(anonymous.status, 401, "{}", anonymous.text);
        let reader = token(&[vehicle], &[]);
        let forbidden = send(
            Some(reader.clone()),
            "POST",
            PATH.into(),
            Some(fleet.clone()),
        )
        .await;
        assert_eq!(forbidden.status, 403, "{}", forbidden.text);
        let writer = token(&[vehicle], &[vehicle]);
        let created = send(
            Some(writer.clone()),
            "POST",
            PATH.into(),
            Some(fleet.clone()),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text);
        // A vehicle writer may not widen its registration to buildings.
        let location = format!(
            "{PATH}/{}",
            encoded("urn:ngsi-ld:ContextSourceRegistration:fleet")
        );
        let widened =
            json!({"information": [{"entities": [{"type": "Vehicle"}, {"type": "Building"}]}]});
        let refused = send(
            Some(writer.clone()),
            "PATCH",
            location.clone(),
            Some(widened),
        )
        .await;
        assert_eq!(refused.status, 403, "{}", refused.text);
        // Readers of vehicles see it; readers of buildings do not.
        let seen = send(Some(reader), "GET", format!("{PATH}?type=Vehicle"), None).await;
        assert_eq!(
            seen.json().as_array().map(Vec::len),
            Some(1),
            "{}",
            seen.text
        );
        let other = token(&[building], &[building]);
        let unseen = send(
            Some(other.clone()),
            "GET",
            format!("{PATH}?idPattern=.*"),
            None,
        )
        .await;
        assert_eq!(unseen.json(), json!([]));
        let hidden = send(Some(other.clone()), "GET", location.clone(), None).await;
        assert!(matches!(hidden.status, 403 | 404), "{}", hidden.text);
        let not_deleted = send(Some(other), "DELETE", location.clone(), None).await;
        assert!(
            matches!(not_deleted.status, 403 | 404),
            "{}",
            not_deleted.text
        );
        let deleted = send(Some(writer), "DELETE", location, None).await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
    }
}

#[actix_web::test]
async fn registrations_are_queried_by_their_observation_and_management_intervals() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let mut observed = vehicles(
            "urn:ngsi-ld:ContextSourceRegistration:2020",
            "http://127.0.0.1:9/a",
        );
        observed["observationInterval"] =
            json!({"startAt": "2020-01-01T00:00:00Z", "endAt": "2021-01-01T00:00:00Z"});
        observed["managementInterval"] = json!({"startAt": "2024-01-01T00:00:00Z"});
        create(&app, &observed).await;
        create(
            &app,
            &vehicles(
                "urn:ngsi-ld:ContextSourceRegistration:always",
                "http://127.0.0.1:9/b",
            ),
        )
        .await;
        let ids = |reply: &crate::helpers::Reply| -> Vec<String> {
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply
                .json()
                .as_array()
                .expect("an array")
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        };
        let both = [
            "urn:ngsi-ld:ContextSourceRegistration:2020",
            "urn:ngsi-ld:ContextSourceRegistration:always",
        ];
        for (query, expected) in [
            ("timerel=before&timeAt=2019-06-01T00:00:00Z", &both[1..]),
            ("timerel=after&timeAt=2020-06-01T00:00:00Z", &both[..]),
            ("timerel=after&timeAt=2021-06-01T00:00:00Z", &both[1..]),
            (
                "timerel=between&timeAt=2019-01-01T00:00:00Z&endTimeAt=2020-02-01T00:00:00Z",
                &both[..],
            ),
            (
                "timerel=before&timeAt=2023-01-01T00:00:00Z&timeproperty=createdAt",
                &both[1..],
            ),
        ] {
            let reply = app.get(&format!("{PATH}?type=Vehicle&{query}"), ctx).await;
            assert_eq!(ids(&reply), expected, "{query}");
        }
        for query in [
            "timerel=before",
            "timeAt=2020-01-01T00:00:00Z",
            "timerel=between&timeAt=2020-01-01T00:00:00Z",
            "timerel=around&timeAt=2020-01-01T00:00:00Z",
            "timerel=after&timeAt=2020-01-01T00:00:00Z&timeproperty=deletedAt",
        ] {
            app.get(&format!("{PATH}?type=Vehicle&{query}"), ctx)
                .await
                .assert_problem(400, "BadRequestData");
        }
    }
}

#[actix_web::test]
async fn registrations_are_queried_by_where_their_sources_hold_data() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let mut porto = vehicles(
            "urn:ngsi-ld:ContextSourceRegistration:porto",
            "http://127.0.0.1:9/a",
        );
        porto["location"] = json!({"type": "Point", "coordinates": [-8.521, 41.2]});
        let mut lisbon = vehicles(
            "urn:ngsi-ld:ContextSourceRegistration:lisbon",
            "http://127.0.0.1:9/b",
        );
        lisbon["location"] = json!({"type": "Point", "coordinates": [-9.139, 38.722]});
        lisbon["operationSpace"] = json!({"type": "Polygon", "coordinates":
            [[[-9.5, 38.5], [-8.5, 38.5], [-8.5, 39.0], [-9.5, 39.0], [-9.5, 38.5]]]});
        create(&app, &porto).await;
        create(&app, &lisbon).await;
        let ids = |query: &str| {
            let app = &app;
            let query = query.to_owned();
            async move {
                let reply = app.get(&format!("{PATH}?type=Vehicle&{query}"), ctx).await;
                assert_eq!(reply.status, 200, "{query}: {}", reply.text);
                reply
                    .json()
                    .as_array()
                    .expect("an array")
                    .iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ids("georel=near;maxDistance==2000&geometry=Point&coordinates=[-8.503,41.202]").await,
            ["urn:ngsi-ld:ContextSourceRegistration:porto"]
        );
        assert_eq!(
            ids("georel=within&geometry=Polygon&coordinates=[[[-10,37],[-8,37],[-8,40],[-10,40],[-10,37]]]")
                .await,
            ["urn:ngsi-ld:ContextSourceRegistration:lisbon"]
        );
        // Another GeoProperty; a registration without it may be anywhere, so it matches.
        assert_eq!(
            ids("georel=intersects&geometry=Point&coordinates=[0,0]&geoproperty=operationSpace")
                .await,
            ["urn:ngsi-ld:ContextSourceRegistration:porto"]
        );
        for query in [
            "georel=within",
            "geometry=Point&coordinates=[1,2]",
            "georel=near&geometry=Point&coordinates=[1,2]",
            "georel=within&geometry=Polygon&coordinates=[[-13.5,47.2],[6.5,52.9],[20.3,44.6]]",
            "georel=within&geometry=Point&coordinates=[1,2]&geoproperty=speed",
        ] {
            app.get(&format!("{PATH}?type=Vehicle&{query}"), ctx)
                .await
                .assert_problem(400, "BadRequestData");
        }
    }
}
