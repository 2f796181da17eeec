//! Batch operations decide per entity: a batch with one bad entity stores the good ones.

use serde_json::{Value, json};

use crate::helpers::{TEST_CONTEXT_URL, apps};

fn building(n: u32) -> Value {
    json!({"id": format!("urn:ngsi-ld:Building:{n}"), "type": "Building", "name": {"type": "Property", "value": format!("B{n}")}})
}

#[actix_web::test]
async fn a_mixed_batch_stores_the_good_entities_and_reports_the_bad() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let batch = json!([building(1), {"id": "not a uri", "type": "Building"}, building(2), {"id": "urn:ngsi-ld:Building:3"}, building(1)]);
        let reply = app
            .send_json("POST", "/ngsi-ld/v1/entityOperations/create", &batch, ctx)
            .await;
        assert_eq!(reply.status, 207, "{}", reply.text);
        let body = reply.json();
        assert_eq!(
            body["success"],
            json!(["urn:ngsi-ld:Building:1", "urn:ngsi-ld:Building:2"])
        );
        let errors = body["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0]["entityId"], "not a uri");
        assert_eq!(
            errors[0]["error"]["type"],
            "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
        );
        assert_eq!(errors[2]["entityId"], "urn:ngsi-ld:Building:1");
        assert_eq!(
            errors[2]["error"]["type"],
            "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"
        );
        let count = app
            .get("/ngsi-ld/v1/entities?type=Building&count=true&limit=0", ctx)
            .await;
        assert_eq!(count.header("ngsild-results-count"), Some("2"));

        // All good: 201 with the ids.
        let created = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/create",
                &json!([building(4)]),
                ctx,
            )
            .await;
        assert_eq!(
            (created.status, created.json()),
            (201, json!(["urn:ngsi-ld:Building:4"]))
        );
    }
}

#[actix_web::test]
async fn upsert_update_merge_and_delete() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let upserted = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &json!([building(1), building(2), building(1)]),
                ctx,
            )
            .await;
        assert_eq!(
            (upserted.status, upserted.json()),
            (
                201,
                json!(["urn:ngsi-ld:Building:1", "urn:ngsi-ld:Building:2"])
            )
        );
        // Replace (the default): only what is sent remains.
        let replaced = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert",
                &json!([{"id": "urn:ngsi-ld:Building:1", "type": "Building", "speed": 1}]),
                ctx,
            )
            .await;
        assert_eq!(replaced.status, 204, "{}", replaced.text);
        let one = app
            .get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", ctx)
            .await
            .json();
        assert!(
            one.get("name").is_none() && one.get("speed").is_some(),
            "{one}"
        );
        // options=update: attributes are added.
        let updated = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/upsert?options=update",
                &json!([{"id": "urn:ngsi-ld:Building:1", "type": "Building", "name": "again"}]),
                ctx,
            )
            .await;
        assert_eq!(updated.status, 204, "{}", updated.text);
        let one = app
            .get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", ctx)
            .await
            .json();
        assert!(
            one.get("name").is_some() && one.get("speed").is_some(),
            "{one}"
        );
        // Update with noOverwrite reports what it kept.
        let kept = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/update?options=noOverwrite",
                &json!([{"id": "urn:ngsi-ld:Building:1", "name": "no"}]),
                ctx,
            )
            .await;
        assert_eq!(kept.status, 207, "{}", kept.text);
        // Update of a missing entity is reported, the others applied.
        let mixed = app
            .send_json("POST", "/ngsi-ld/v1/entityOperations/update", &json!([{"id": "urn:ngsi-ld:Building:2", "name": "two"}, {"id": "urn:ngsi-ld:Building:99", "name": "x"}]), ctx)
            .await;
        assert_eq!(mixed.status, 207);
        assert_eq!(mixed.json()["success"], json!(["urn:ngsi-ld:Building:2"]));
        // Merge.
        let merged = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/merge",
                &json!([{"id": "urn:ngsi-ld:Building:2", "speed": 3}]),
                ctx,
            )
            .await;
        assert_eq!(merged.status, 204, "{}", merged.text);
        // Delete: ids; a repeated id fails the second time.
        let deleted = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entityOperations/delete",
                &json!(["urn:ngsi-ld:Building:1", "urn:ngsi-ld:Building:1"]),
                None,
            )
            .await;
        assert_eq!(deleted.status, 207, "{}", deleted.text);
        assert_eq!(deleted.json()["success"], json!(["urn:ngsi-ld:Building:1"]));
        app.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Building:1", None)
            .await
            .assert_problem(404, "ResourceNotFound");
    }
}

#[actix_web::test]
async fn json_ld_batches_carry_a_context_per_entity() {
    for app in apps().await {
        let mut with_context = building(1);
        with_context["@context"] = json!(TEST_CONTEXT_URL);
        let batch = json!([with_context, building(2)]);
        let reply = app
            .send_json_ld("POST", "/ngsi-ld/v1/entityOperations/create", &batch)
            .await;
        assert_eq!(reply.status, 207, "{}", reply.text);
        assert_eq!(reply.json()["success"], json!(["urn:ngsi-ld:Building:1"]));
        assert_eq!(
            reply.json()["errors"][0]["entityId"],
            "urn:ngsi-ld:Building:2"
        );
    }
}
