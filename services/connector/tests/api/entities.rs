//! Create, retrieve (every rendering), replace, merge, and the attribute operations.

use serde_json::{Value, json};

use crate::helpers::{TEST_CONTEXT_URL, apps};

fn vehicle() -> Value {
    json!({
        "id": "urn:ngsi-ld:Vehicle:A1",
        "type": "Vehicle",
        "brandName": {"type": "Property", "value": "Mercedes"},
        "speed": [
            {"type": "Property", "value": 55, "unitCode": "KMH", "observedAt": "2026-01-01T10:00:00Z"},
            {"type": "Property", "value": 54.5, "datasetId": "urn:ngsi-ld:Dataset:gps"}
        ],
        "isParked": {"type": "Relationship", "object": "urn:ngsi-ld:OffStreetParking:Downtown1",
                     "providedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:Bob"}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-8.5, 41.2]}},
        "category": {"type": "VocabProperty", "vocab": "sedan"},
        "name": {"type": "LanguageProperty", "languageMap": {"en": "car", "fr": "voiture"}},
        "@context": TEST_CONTEXT_URL
    })
}

#[actix_web::test]
async fn created_entities_round_trip_in_every_rendering() {
    for app in apps().await {
        let created = app
            .send_json_ld("POST", "/ngsi-ld/v1/entities", &vehicle())
            .await;
        assert_eq!(created.status, 201, "{} {}", app.backend, created.text);
        assert_eq!(
            created.header("location"),
            Some("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1")
        );
        assert!(created.text.is_empty());

        // Normalized, with the same context: what was sent comes back.
        let normalized = app
            .get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1",
                Some(TEST_CONTEXT_URL),
            )
            .await;
        assert_eq!(normalized.status, 200);
        assert_eq!(normalized.header("content-type"), Some("application/json"));
        assert!(
            normalized
                .header("link")
                .is_some_and(|l| l.contains(TEST_CONTEXT_URL))
        );
        let mut expected = vehicle();
        expected.as_object_mut().map(|o| o.remove("@context"));
        assert_eq!(normalized.json(), expected, "{}", app.backend);

        // Without the context, names come back expanded (the core context alone applies).
        let expanded = app
            .get("/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1", None)
            .await
            .json();
        assert_eq!(expanded["type"], "https://example.org/ns#Vehicle");
        assert!(expanded.get("https://example.org/ns#speed").is_some());
        assert!(
            expanded.get("location").is_some(),
            "core terms stay compact"
        );

        // keyValues.
        let key_values = app
            .get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1?options=keyValues",
                Some(TEST_CONTEXT_URL),
            )
            .await
            .json();
        assert_eq!(key_values["brandName"], "Mercedes");
        assert_eq!(key_values["speed"], 55);
        assert_eq!(
            key_values["isParked"],
            "urn:ngsi-ld:OffStreetParking:Downtown1"
        );
        assert_eq!(key_values["category"], json!({"vocab": "sedan"}));

        // Concise.
        let concise = app
            .get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1?format=concise",
                Some(TEST_CONTEXT_URL),
            )
            .await
            .json();
        assert_eq!(concise["brandName"], "Mercedes");
        assert_eq!(
            concise["isParked"]["object"],
            "urn:ngsi-ld:OffStreetParking:Downtown1"
        );
        assert_eq!(
            concise["location"],
            json!({"type": "Point", "coordinates": [-8.5, 41.2]})
        );

        // JSON-LD: @context in the body, as given.
        let json_ld = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1",
                &[
                    ("accept", "application/ld+json"),
                    ("link", &crate::helpers::link(TEST_CONTEXT_URL)),
                ],
                None,
            )
            .await;
        assert_eq!(json_ld.header("content-type"), Some("application/ld+json"));
        assert_eq!(json_ld.json()["@context"], TEST_CONTEXT_URL);

        // GeoJSON.
        let feature = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1?options=keyValues",
                &[("accept", "application/geo+json")],
                None,
            )
            .await;
        assert_eq!(feature.header("content-type"), Some("application/geo+json"));
        let feature = feature.json();
        assert_eq!(feature["type"], "Feature");
        assert_eq!(feature["geometry"]["type"], "Point");

        // sysAttrs, attrs, pick, omit.
        let with_sys = app
            .get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1?options=sysAttrs&attrs=brandName",
                Some(TEST_CONTEXT_URL),
            )
            .await
            .json();
        assert_eq!(with_sys["createdAt"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(
            with_sys["brandName"]["createdAt"],
            "2026-01-01T00:00:00.000000Z"
        );
        assert!(with_sys.get("speed").is_none());
        let picked = app
            .get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1?pick=id,speed",
                Some(TEST_CONTEXT_URL),
            )
            .await
            .json();
        assert_eq!(picked.as_object().map(|o| o.len()), Some(2), "{picked}");
        let omitted = app
            .get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1?omit=speed,type",
                Some(TEST_CONTEXT_URL),
            )
            .await
            .json();
        assert!(
            omitted.get("speed").is_none()
                && omitted.get("type").is_none()
                && omitted.get("brandName").is_some()
        );

        // A second create is a conflict.
        app.send_json_ld("POST", "/ngsi-ld/v1/entities", &vehicle())
            .await
            .assert_problem(409, "AlreadyExists");
    }
}

#[actix_web::test]
async fn attribute_operations_follow_the_spec() {
    for app in apps().await {
        let base = "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:A1";
        assert_eq!(
            app.send_json_ld("POST", "/ngsi-ld/v1/entities", &vehicle())
                .await
                .status,
            201
        );
        let ctx = Some(TEST_CONTEXT_URL);

        // Append with noOverwrite: the existing attribute is reported, the new one written.
        let appended = app
            .send_json(
                "POST",
                &format!("{base}/attrs?options=noOverwrite"),
                &json!({"brandName": "BMW", "color": "red"}),
                ctx,
            )
            .await;
        assert_eq!(appended.status, 207, "{}", appended.text);
        assert_eq!(
            appended.json()["notUpdated"][0]["attributeName"],
            "https://example.org/ns#brandName"
        );
        let entity = app.get(base, ctx).await.json();
        assert_eq!(entity["brandName"]["value"], "Mercedes");
        assert_eq!(entity["color"]["value"], "red");

        // Update: existing instances only; the default instance of speed, not the gps one.
        let updated = app
            .send_json(
                "PATCH",
                &format!("{base}/attrs"),
                &json!({"speed": {"type": "Property", "value": 99}}),
                ctx,
            )
            .await;
        assert_eq!(updated.status, 204, "{}", updated.text);
        let missing = app
            .send_json(
                "PATCH",
                &format!("{base}/attrs"),
                &json!({"nothere": 1}),
                ctx,
            )
            .await;
        assert_eq!(missing.status, 207);
        let entity = app.get(base, ctx).await.json();
        assert_eq!(entity["speed"][0]["value"], 99);
        assert_eq!(entity["speed"][1]["value"], 54.5);
        assert!(entity.get("nothere").is_none());

        // Partial update merges: a unitCode added alone stays when the value changes next.
        let unit = app
            .send_json(
                "PATCH",
                &format!("{base}/attrs/speed"),
                &json!({"unitCode": "KMH"}),
                ctx,
            )
            .await;
        assert_eq!(unit.status, 204, "{}", unit.text);
        let partial = app
            .send_json(
                "PATCH",
                &format!("{base}/attrs/speed"),
                &json!({"value": 12}),
                ctx,
            )
            .await;
        assert_eq!(partial.status, 204, "{}", partial.text);
        let entity = app.get(base, ctx).await.json();
        assert_eq!(entity["speed"][0]["value"], 12);
        assert_eq!(entity["speed"][0]["unitCode"], "KMH");
        // ... but cannot change the attribute type.
        app.send_json(
            "PATCH",
            &format!("{base}/attrs/speed"),
            &json!({"type": "Relationship", "object": "urn:x:y"}),
            ctx,
        )
        .await
        .assert_problem(400, "BadRequestData");
        app.send_json(
            "PATCH",
            &format!("{base}/attrs/unknown"),
            &json!({"value": 1}),
            ctx,
        )
        .await
        .assert_problem(404, "ResourceNotFound");

        // Replace attribute keeps createdAt.
        let replaced = app
            .send_json(
                "PUT",
                &format!("{base}/attrs/brandName"),
                &json!({"type": "Property", "value": "Audi"}),
                ctx,
            )
            .await;
        assert_eq!(replaced.status, 204, "{}", replaced.text);
        assert_eq!(
            app.get(base, ctx).await.json()["brandName"]["value"],
            "Audi"
        );

        // Merge with the NGSI-LD Null deletes one instance; the survivor renders as an object.
        let merged = app
            .send_json("PATCH", base, &json!({"speed": {"type": "Property", "value": "urn:ngsi-ld:null", "datasetId": "urn:ngsi-ld:Dataset:gps"}, "brandName": {"value": "Seat"}}), ctx)
            .await;
        assert_eq!(merged.status, 204, "{}", merged.text);
        let entity = app.get(base, ctx).await.json();
        assert!(entity["speed"].is_object(), "{entity}");
        assert_eq!(entity["brandName"]["value"], "Seat");

        // Delete attribute by datasetId / deleteAll.
        app.request(
            "DELETE",
            &format!("{base}/attrs/speed?datasetId=urn:ngsi-ld:Dataset:none"),
            &[("link", &crate::helpers::link(TEST_CONTEXT_URL))],
            None,
        )
        .await
        .assert_problem(404, "ResourceNotFound");
        let deleted = app
            .request(
                "DELETE",
                &format!("{base}/attrs/speed?deleteAll=true"),
                &[("link", &crate::helpers::link(TEST_CONTEXT_URL))],
                None,
            )
            .await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        assert!(app.get(base, ctx).await.json().get("speed").is_none());

        // Replace the entity: only the new content remains, createdAt kept.
        let replaced = app
            .send_json(
                "PUT",
                base,
                &json!({"type": "Vehicle", "brandName": "Kia"}),
                ctx,
            )
            .await;
        assert_eq!(replaced.status, 204, "{}", replaced.text);
        let entity = app
            .get(&format!("{base}?options=sysAttrs"), ctx)
            .await
            .json();
        assert_eq!(entity["brandName"]["value"], "Kia");
        assert!(entity.get("isParked").is_none());
        assert_eq!(entity["createdAt"], "2026-01-01T00:00:00.000000Z");

        // Delete the entity.
        assert_eq!(app.request("DELETE", base, &[], None).await.status, 204);
        app.get(base, None)
            .await
            .assert_problem(404, "ResourceNotFound");
    }
}

#[actix_web::test]
async fn tenants_are_isolated_and_must_be_declared() {
    for app in apps().await {
        let entity = json!({"id": "urn:ngsi-ld:Building:1", "type": "Building"});
        let body = entity.to_string();
        let created = app
            .request(
                "POST",
                "/ngsi-ld/v1/entities",
                &[
                    ("content-type", "application/json"),
                    ("ngsild-tenant", "city-a"),
                ],
                Some(&body),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let in_a = app
            .request(
                "GET",
                "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1",
                &[("ngsild-tenant", "city-a")],
                None,
            )
            .await;
        assert_eq!(in_a.status, 200);
        app.request(
            "GET",
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1",
            &[("ngsild-tenant", "city-b")],
            None,
        )
        .await
        .assert_problem(404, "ResourceNotFound");
        app.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", None)
            .await
            .assert_problem(404, "ResourceNotFound");
        app.request(
            "POST",
            "/ngsi-ld/v1/entities",
            &[
                ("content-type", "application/json"),
                ("ngsild-tenant", "nowhere"),
            ],
            Some(&body),
        )
        .await
        .assert_problem(404, "NonexistentTenant");
    }
}

#[actix_web::test]
async fn service_endpoints_answer() {
    for app in apps().await {
        assert_eq!(app.get("/health", None).await.status, 200);
        let ready = app.get("/ready", None).await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.json()["storage"], app.backend);
        let metadata = app.get("/.well-known/civitas", None).await.json();
        assert_eq!(metadata["department"], "test");
        assert_eq!(metadata["service"], "connector");
    }
}
