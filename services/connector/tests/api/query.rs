//! `GET /entities` by id, type, idPattern and attrs, with pagination, and purge.

use serde_json::json;

use crate::helpers::{TEST_CONTEXT_URL, apps};

#[actix_web::test]
async fn queries_filter_and_paginate() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let entities: Vec<_> = (0..25)
            .map(|n| {
                let kind = if n % 5 == 0 { "Vehicle" } else { "Building" };
                json!({"id": format!("urn:ngsi-ld:{kind}:{n:02}"), "type": kind, "speed": n})
            })
            .collect();
        let loaded = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &json!(entities),
                ctx,
            )
            .await;
        assert_eq!(loaded.status, 201, "{}", loaded.text);

        let page = app
            .get(
                "/ngsi-ld/v1/entities?type=Building&limit=7&offset=7&count=true",
                ctx,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert_eq!(page.header("ngsild-results-count"), Some("20"));
        let ids = page.ids();
        assert_eq!(ids.len(), 7);
        assert_eq!(ids[0], "urn:ngsi-ld:Building:09");
        // Links to the pages before and after, beside the @context link.
        let links = |reply: &crate::helpers::Reply| -> Vec<String> {
            reply
                .headers
                .get_all("link")
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .filter(|v| v.contains("rel=\"prev\"") || v.contains("rel=\"next\""))
                .collect()
        };
        assert_eq!(
            links(&page),
            [
                "</ngsi-ld/v1/entities?type=Building&count=true&limit=7&offset=0>;rel=\"prev\";type=\"application/ld+json\"",
                "</ngsi-ld/v1/entities?type=Building&count=true&limit=7&offset=14>;rel=\"next\";type=\"application/ld+json\""
            ]
        );
        let last = app
            .get(
                "/ngsi-ld/v1/entities?type=Building&limit=7&offset=14&count=true",
                ctx,
            )
            .await;
        assert_eq!(
            links(&last),
            [
                "</ngsi-ld/v1/entities?type=Building&count=true&limit=7&offset=7>;rel=\"prev\";type=\"application/ld+json\""
            ]
        );
        assert!(
            last.headers
                .get_all("link")
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("json-ld#context"))),
            "the @context link stays"
        );

        // Keyset paging, as a broker lists a department's ids: the page after an id.
        let link = crate::helpers::link(TEST_CONTEXT_URL);
        let after = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities?type=Building&limit=3",
                &[
                    ("link", &link),
                    ("civitas-after", "urn:ngsi-ld:Building:09"),
                ],
                None,
            )
            .await;
        assert_eq!(after.status, 200, "{}", after.text);
        let after_ids = after.ids();
        assert_eq!(
            after_ids,
            [
                "urn:ngsi-ld:Building:11",
                "urn:ngsi-ld:Building:12",
                "urn:ngsi-ld:Building:13"
            ]
        );
        let invalid = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities?type=Building",
                &[("link", &link), ("civitas-after", "not an id")],
                None,
            )
            .await;
        invalid.assert_problem(400, "BadRequestData");

        // The same query posted: links to post the same body to, paging in the URL.
        let posted = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/query?limit=7&offset=7&count=true",
                &json!({"type": "Query", "entities": [{"type": "Building"}]}),
                ctx,
            )
            .await;
        assert_eq!(posted.status, 200, "{}", posted.text);
        assert_eq!(posted.json()[0]["id"], "urn:ngsi-ld:Building:09");
        assert_eq!(
            links(&posted),
            [
                "</ngsi-ld/v1/entityOperations/query?count=true&limit=7&offset=0>;rel=\"prev\";type=\"application/ld+json\"",
                "</ngsi-ld/v1/entityOperations/query?count=true&limit=7&offset=14>;rel=\"next\";type=\"application/ld+json\""
            ]
        );

        // Default page size is 20.
        let all = app
            .get("/ngsi-ld/v1/entities?type=Building,Vehicle", ctx)
            .await
            .json();
        assert_eq!(all.as_array().map(Vec::len), Some(20));
        let by_id = app.get("/ngsi-ld/v1/entities?id=urn:ngsi-ld:Vehicle:05,urn:ngsi-ld:Vehicle:10&options=keyValues", ctx).await.json();
        assert_eq!(
            by_id,
            json!([{"id": "urn:ngsi-ld:Vehicle:05", "type": "Vehicle", "speed": 5}, {"id": "urn:ngsi-ld:Vehicle:10", "type": "Vehicle", "speed": 10}])
        );
        let pattern = app
            .get("/ngsi-ld/v1/entities?idPattern=Vehicle:1.*&count=true", ctx)
            .await;
        assert_eq!(
            pattern.header("ngsild-results-count"),
            Some("2"),
            "{}",
            pattern.text
        );
        // A type that the caller's context maps elsewhere matches nothing.
        let none = app
            .get("/ngsi-ld/v1/entities?type=Building", None)
            .await
            .json();
        assert_eq!(none, json!([]));
        // GeoJSON collection.
        let features = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities?type=https://example.org/ns%23Vehicle&limit=2",
                &[("accept", "application/geo+json")],
                None,
            )
            .await;
        assert_eq!(features.json()["type"], "FeatureCollection");

        // Purge by type, and keep/drop.
        let dropped = app
            .request(
                "DELETE",
                "/ngsi-ld/v1/entities?type=Vehicle&drop=speed",
                &[("link", &crate::helpers::link(TEST_CONTEXT_URL))],
                None,
            )
            .await;
        assert_eq!(dropped.status, 204, "{}", dropped.text);
        let vehicle = app
            .get("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:05", ctx)
            .await
            .json();
        assert!(vehicle.get("speed").is_none());
        let purged = app
            .request(
                "DELETE",
                "/ngsi-ld/v1/entities?type=Building",
                &[("link", &crate::helpers::link(TEST_CONTEXT_URL))],
                None,
            )
            .await;
        assert_eq!(purged.status, 204, "{}", purged.text);
        let left = app
            .get("/ngsi-ld/v1/entities?type=Building,Vehicle&count=true", ctx)
            .await;
        assert_eq!(left.header("ngsild-results-count"), Some("5"));
    }
}

#[actix_web::test]
async fn q_filters_by_attribute_values_before_paging() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let entities: Vec<_> = (0..30)
            .map(|n| {
                json!({"id": format!("urn:ngsi-ld:Vehicle:{n:02}"), "type": "Vehicle",
                       "speed": {"type": "Property", "value": n,
                                 "accuracy": {"type": "Property", "value": n % 3}},
                       "brandName": {"type": "Property",
                                     "value": if n % 2 == 0 { "Civic" } else { "Golf" }},
                       "address": {"type": "Property", "value": {"city": if n < 10 { "Lyon" } else { "Nice" }}},
                       "parkedAt": {"type": "Relationship",
                                    "object": format!("urn:ngsi-ld:Parking:{}", n % 4)}})
            })
            .chain([json!({"id": "urn:ngsi-ld:Building:01", "type": "Building",
                           "speed": {"type": "Property", "value": 12}})])
            .collect();
        let loaded = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &json!(entities),
                ctx,
            )
            .await;
        assert_eq!(loaded.status, 201, "{}", loaded.text);
        let ids = |query: &str| {
            let query = query.to_owned();
            let app = &app;
            async move {
                let reply = app.get(&format!("/ngsi-ld/v1/entities?{query}"), ctx).await;
                assert_eq!(reply.status, 200, "{query}: {}", reply.text);
                let ids = reply.ids();
                (ids, reply.header("ngsild-results-count").map(str::to_owned))
            }
        };
        let vehicles = |ns: &[u32]| -> Vec<String> {
            ns.iter()
                .map(|n| format!("urn:ngsi-ld:Vehicle:{n:02}"))
                .collect()
        };

        // A range and a string, both conditions; the count and the page are of the matches.
        let (page, count) = ids(
            "type=Vehicle&q=speed>=10;speed<20;brandName==%22Golf%22&limit=2&offset=1&count=true",
        )
        .await;
        assert_eq!(page, vehicles(&[13, 15]));
        assert_eq!(count.as_deref(), Some("5"));
        // Or, grouping, sub-attributes, structured values and relationships.
        let (page, _) = ids("type=Vehicle&q=(speed==1|speed==28);brandName!=%22Civic%22").await;
        assert_eq!(page, vehicles(&[1]));
        let (page, _) = ids("type=Vehicle&q=speed.accuracy==2;address%5Bcity%5D==%22Lyon%22").await;
        assert_eq!(page, vehicles(&[2, 5, 8]));
        let (page, _) = ids("type=Vehicle&q=parkedAt==urn:ngsi-ld:Parking:3;speed<12").await;
        assert_eq!(page, vehicles(&[3, 7, 11]));
        let (page, _) = ids("type=Vehicle&q=speed==2..4").await;
        assert_eq!(page, vehicles(&[2, 3, 4]));
        // q alone selects across types.
        let (page, _) = ids("q=speed==12").await;
        assert_eq!(
            page,
            [
                "urn:ngsi-ld:Building:01".to_owned(),
                "urn:ngsi-ld:Vehicle:12".to_owned()
            ]
        );

        // A query that does not parse is a 400.
        app.get("/ngsi-ld/v1/entities?type=Vehicle&q=speed%3E%3E1", ctx)
            .await
            .assert_problem(400, "BadRequestData");

        // Purge by q deletes the matches only.
        let purged = app
            .request(
                "DELETE",
                "/ngsi-ld/v1/entities?type=Vehicle&q=speed>=25|brandName==%22Golf%22",
                &[("link", &crate::helpers::link(TEST_CONTEXT_URL))],
                None,
            )
            .await;
        assert_eq!(purged.status, 204, "{}", purged.text);
        let (left, count) = ids("type=Vehicle&count=true&limit=100").await;
        assert_eq!(count.as_deref(), Some("13"));
        assert_eq!(
            left,
            vehicles(&[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24])
        );
    }
}

#[actix_web::test]
async fn type_expressions_select_by_all_or_any_of_the_types() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let entities = json!([
            {"id": "urn:ngsi-ld:Thing:a", "type": ["Building", "Tourist"]},
            {"id": "urn:ngsi-ld:Thing:b", "type": "Building"},
            {"id": "urn:ngsi-ld:Thing:c", "type": "Parking"}
        ]);
        let loaded = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &entities,
                ctx,
            )
            .await;
        assert_eq!(loaded.status, 201, "{}", loaded.text);
        for (types, expected) in [
            ("%28Building%3BTourist%29", vec!["urn:ngsi-ld:Thing:a"]),
            (
                "%28Building%3BTourist%29%2CParking",
                vec!["urn:ngsi-ld:Thing:a", "urn:ngsi-ld:Thing:c"],
            ),
            (
                "Building%7CParking",
                vec![
                    "urn:ngsi-ld:Thing:a",
                    "urn:ngsi-ld:Thing:b",
                    "urn:ngsi-ld:Thing:c",
                ],
            ),
        ] {
            let reply = app
                .get(
                    &format!("/ngsi-ld/v1/entities?type={types}&count=true"),
                    ctx,
                )
                .await;
            assert_eq!(reply.status, 200, "{types}: {}", reply.text);
            let ids = reply.ids();
            assert_eq!(ids, expected, "{types}");
            assert_eq!(
                reply.header("ngsild-results-count"),
                Some(expected.len().to_string().as_str()),
                "{types}"
            );
        }
        app.get("/ngsi-ld/v1/entities?type=Building%3B", ctx)
            .await
            .assert_problem(400, "BadRequestData");
    }
}

#[actix_web::test]
async fn scope_queries_select_by_scope() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let entities = json!([
            {"id": "urn:ngsi-ld:Park:a", "type": "Park",
             "scope": ["/Madrid/Gardens/ParqueNorte", "/CompanyA/OrganizationB/UnitC"]},
            {"id": "urn:ngsi-ld:Park:b", "type": "Park", "scope": "/Madrid/Gardens/ParqueNorte"},
            {"id": "urn:ngsi-ld:Park:c", "type": "Park"}
        ]);
        let loaded = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &entities,
                ctx,
            )
            .await;
        assert_eq!(loaded.status, 201, "{}", loaded.text);
        for (scope_q, expected) in [
            (
                "/Madrid/%2B/ParqueNorte",
                vec!["urn:ngsi-ld:Park:a", "urn:ngsi-ld:Park:b"],
            ),
            ("/CompanyA/%23", vec!["urn:ngsi-ld:Park:a"]),
            ("/%23", vec!["urn:ngsi-ld:Park:a", "urn:ngsi-ld:Park:b"]),
            (
                "/Madrid/Gardens/ParqueNorte%3B/CompanyA/OrganizationB/UnitC",
                vec!["urn:ngsi-ld:Park:a"],
            ),
        ] {
            let reply = app
                .get(
                    &format!("/ngsi-ld/v1/entities?type=Park&scopeQ={scope_q}"),
                    ctx,
                )
                .await;
            assert_eq!(reply.status, 200, "{scope_q}: {}", reply.text);
            let ids = reply.ids();
            assert_eq!(ids, expected, "{scope_q}");
        }
        app.get("/ngsi-ld/v1/entities?type=Park&scopeQ=Madrid", ctx)
            .await
            .assert_problem(400, "BadRequestData");
    }
}

#[actix_web::test]
async fn geo_queries_select_by_location() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let place = |n: u32, lon: f64, lat: f64| {
            json!({"id": format!("urn:ngsi-ld:Building:{n}"), "type": "Building",
                   "location": {"type": "GeoProperty",
                                "value": {"type": "Point", "coordinates": [lon, lat]}}})
        };
        let entities = json!([
            place(1, 2.3522, 48.8566),   // Paris
            place(2, 2.2945, 48.8584),   // 5 km west
            place(3, 4.8357, 45.7640),   // Lyon
            {"id": "urn:ngsi-ld:Building:4", "type": "Building"}
        ]);
        let loaded = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &entities,
                ctx,
            )
            .await;
        assert_eq!(loaded.status, 201, "{}", loaded.text);
        let ids = |path: String| {
            let app = &app;
            async move {
                let reply = app.get(&path, ctx).await;
                assert_eq!(reply.status, 200, "{path}: {}", reply.text);
                reply.ids()
            }
        };
        let near =
            "georel=near%3BmaxDistance%3D%3D2000&geometry=Point&coordinates=%5B2.35%2C48.85%5D";
        assert_eq!(
            ids(format!("/ngsi-ld/v1/entities?type=Building&{near}")).await,
            ["urn:ngsi-ld:Building:1"]
        );
        let far =
            "georel=near%3BminDistance%3D%3D100000&geometry=Point&coordinates=%5B2.35%2C48.85%5D";
        assert_eq!(
            ids(format!("/ngsi-ld/v1/entities?type=Building&{far}")).await,
            ["urn:ngsi-ld:Building:3"]
        );
        // Within a box around Paris, with no type: the geo-query alone selects.
        let within = "georel=within&geometry=Polygon&coordinates=%5B%5B%5B2.0%2C48.5%5D%2C%5B3.0%2C48.5%5D%2C%5B3.0%2C49.0%5D%2C%5B2.0%2C49.0%5D%2C%5B2.0%2C48.5%5D%5D%5D";
        assert_eq!(
            ids(format!("/ngsi-ld/v1/entities?{within}")).await,
            ["urn:ngsi-ld:Building:1", "urn:ngsi-ld:Building:2"]
        );
        // Purge by a geo-query deletes the matches only.
        let purged = app
            .request(
                "DELETE",
                &format!("/ngsi-ld/v1/entities?type=Building&{within}"),
                &[("link", &crate::helpers::link(TEST_CONTEXT_URL))],
                None,
            )
            .await;
        assert_eq!(purged.status, 204, "{}", purged.text);
        assert_eq!(
            ids("/ngsi-ld/v1/entities?type=Building".to_owned()).await,
            ["urn:ngsi-ld:Building:3", "urn:ngsi-ld:Building:4"]
        );
        // An incomplete or invalid geo-query is a 400.
        app.get("/ngsi-ld/v1/entities?type=Building&georel=within", ctx)
            .await
            .assert_problem(400, "BadRequestData");
        app.get(
            "/ngsi-ld/v1/entities?type=Building&georel=near%3Bfar&geometry=Point&coordinates=%5B1%2C2%5D",
            ctx,
        )
        .await
        .assert_problem(400, "BadRequestData");
    }
}

#[actix_web::test]
async fn a_query_posted_as_a_body_answers_as_the_same_get_would() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let entities: Vec<_> = (0..12)
            .map(|n| {
                let kind = ["Vehicle", "Building", "Street"][n % 3];
                json!({"id": format!("urn:ngsi-ld:{kind}:{n:02}"), "type": kind,
                       "speed": {"type": "Property", "value": n}})
            })
            .collect();
        let loaded = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &json!(entities),
                ctx,
            )
            .await;
        assert_eq!(loaded.status, 201, "{}", loaded.text);
        let ids = |reply: &crate::helpers::Reply| -> Vec<String> {
            assert_eq!(reply.status, 200, "{}", reply.text);
            reply.ids()
        };
        const QUERY: &str = "/ngsi-ld/v1/entityOperations/query";
        for (body, get) in [
            (
                json!({"type": "Query", "entities": [{"type": "Vehicle"}]}),
                "type=Vehicle",
            ),
            (
                json!({"type": "Query", "entities": [{"type": "Vehicle"}, {"type": "Street"}]}),
                "type=Vehicle,Street",
            ),
            (
                json!({"type": "Query", "entities": [{"type": "Building", "idPattern": ".*:0[0-5]$"}]}),
                "type=Building&idPattern=.*:0[0-5]$",
            ),
            (
                json!({"type": "Query", "entities": [{"id": "urn:ngsi-ld:Street:02", "type": "Street"}]}),
                "id=urn:ngsi-ld:Street:02&type=Street",
            ),
        ] {
            let posted = app
                .send_json("POST", &format!("{QUERY}?limit=20"), &body, ctx)
                .await;
            let got = app
                .get(&format!("/ngsi-ld/v1/entities?{get}&limit=20"), ctx)
                .await;
            assert_eq!(ids(&posted), ids(&got), "{body}");
            assert!(!ids(&posted).is_empty(), "{body}");
        }

        // Paging and rendering come from the URL; attrs from the body; JSON-LD works too.
        let page = app
            .send_json(
                "POST",
                &format!("{QUERY}?limit=2&offset=1&count=true&options=keyValues"),
                &json!({"type": "Query", "entities": [{"type": "Vehicle"}], "attrs": ["speed"]}),
                ctx,
            )
            .await;
        assert_eq!(
            ids(&page),
            ["urn:ngsi-ld:Vehicle:03", "urn:ngsi-ld:Vehicle:06"]
        );
        assert_eq!(page.header("ngsild-results-count"), Some("4"));
        assert_eq!(page.json()[0]["speed"], 3);
        let linked = app
            .send_json_ld(
                "POST",
                QUERY,
                &json!({"type": "Query", "entities": [{"type": "Vehicle"}],
                        "@context": TEST_CONTEXT_URL}),
            )
            .await;
        assert_eq!(ids(&linked).len(), 4);

        for (body, status, kind) in [
            (
                json!({"entities": [{"type": "Vehicle"}]}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Query", "entities": []}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Query", "surprise": 1}),
                400,
                "BadRequestData",
            ),
            (json!({"type": "Query"}), 400, "BadRequestData"),
            (
                json!({"type": "Query", "entities": [{"type": "Vehicle"}], "q": "(speed>2"}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Query", "entities": [{"id": "urn:ngsi-ld:Vehicle:00", "type": "Vehicle"},
                                                    {"type": "Street"}]}),
                501,
                "OperationNotSupported",
            ),
        ] {
            app.send_json("POST", QUERY, &body, ctx)
                .await
                .assert_problem(status, kind);
        }
    }
}
