//! Discovery: `/types`, `/types/{type}`, `/attributes`, `/attributes/{attrId}`, as far as the
//! caller may see.

use civitas_auth::token::{TokenSpec, issue};
use civitas_testkit::fixed_time;
use serde_json::{Value, json};

use crate::helpers::{TEST_CONTEXT_URL, TestApp, apps, apps_with, link, root_key, write_policy};

async fn load(app: &TestApp) {
    let entities = json!([
        {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "speed": {"type": "Property", "value": 5},
         "brandName": {"type": "Property", "value": "A"}},
        {"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle", "speed": {"type": "Property", "value": 7},
         "isParked": {"type": "Relationship", "object": "urn:ngsi-ld:Building:1"}},
        {"id": "urn:ngsi-ld:Building:1", "type": "Building", "name": {"type": "Property", "value": "Hall"}}
    ]);
    let reply = app
        .send_json(
            "POST",
            "/ngsi-ld/v1/entityOperations/create",
            &entities,
            Some(TEST_CONTEXT_URL),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
}

#[actix_web::test]
async fn types_and_attributes_are_listed_and_detailed() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let empty = app.get("/ngsi-ld/v1/types", ctx).await;
        assert_eq!(empty.status, 200, "{}", empty.text);
        assert_eq!(empty.json()["typeList"], json!([]));
        load(&app).await;

        let list = app.get("/ngsi-ld/v1/types", ctx).await.json();
        assert_eq!(list["type"], "EntityTypeList");
        assert!(
            list["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("urn:ngsi-ld:EntityTypeList:"))
        );
        assert_eq!(list["typeList"], json!(["Building", "Vehicle"]));
        // Without the context, full IRIs.
        let expanded = app.get("/ngsi-ld/v1/types", None).await.json();
        assert_eq!(expanded["typeList"][1], "https://example.org/ns#Vehicle");

        let details = app.get("/ngsi-ld/v1/types?details=true", ctx).await.json();
        assert_eq!(
            details[1],
            json!({"id": "https://example.org/ns#Vehicle", "type": "EntityType", "typeName": "Vehicle",
                   "attributeNames": ["brandName", "isParked", "speed"]})
        );

        let info = app.get("/ngsi-ld/v1/types/Vehicle", ctx).await.json();
        assert_eq!(info["type"], "EntityTypeInfo");
        assert_eq!(info["entityCount"], 2);
        let parked = info["attributeDetails"]
            .as_array()
            .expect("details")
            .iter()
            .find(|a| a["attributeName"] == "isParked")
            .cloned()
            .expect("isParked");
        assert_eq!(parked["attributeTypes"], json!(["Relationship"]));
        app.get("/ngsi-ld/v1/types/Tunnel", ctx)
            .await
            .assert_problem(404, "ResourceNotFound");

        let attributes = app.get("/ngsi-ld/v1/attributes", ctx).await.json();
        assert_eq!(attributes["type"], "AttributeList");
        assert_eq!(
            attributes["attributeList"],
            json!(["brandName", "isParked", "name", "speed"])
        );
        let details = app
            .get("/ngsi-ld/v1/attributes?details=true", ctx)
            .await
            .json();
        assert_eq!(details[3]["typeNames"], json!(["Vehicle"]));
        let speed = app.get("/ngsi-ld/v1/attributes/speed", ctx).await.json();
        assert_eq!(
            speed,
            json!({"id": "https://example.org/ns#speed", "type": "Attribute", "attributeName": "speed",
                   "attributeCount": 2, "attributeTypes": ["Property"], "typeNames": ["Vehicle"]})
        );
        app.get("/ngsi-ld/v1/attributes/colour", ctx)
            .await
            .assert_problem(404, "ResourceNotFound");
        app.get("/ngsi-ld/v1/types?details=maybe", ctx)
            .await
            .assert_problem(400, "BadRequestData");
        app.get("/ngsi-ld/v1/types?color=red", ctx)
            .await
            .assert_problem(400, "InvalidRequest");
    }
}

#[actix_web::test]
async fn discovery_shows_only_what_the_token_may_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = write_policy(dir.path(), "", None);
    for app in apps_with(move |settings| settings.auth.policies = Some(folder.clone())).await {
        let admin = issue(
            &root_key(),
            &TokenSpec {
                holder: "admin".into(),
                read: vec!["*".into()],
                write: vec!["*".into()],
                ..TokenSpec::default()
            },
            fixed_time(0),
        )
        .expect("token");
        let reader = issue(
            &root_key(),
            &TokenSpec {
                holder: "reader".into(),
                read: vec!["https://example.org/ns#Vehicle".into()],
                attributes: Some(vec!["https://example.org/ns#speed".into()]),
                ..TokenSpec::default()
            },
            fixed_time(0),
        )
        .expect("token");
        let link_value = link(TEST_CONTEXT_URL);
        let get = |token: &str, path: &str| {
            let bearer = format!("Bearer {token}");
            let link_value = link_value.clone();
            let path = path.to_owned();
            let app = &app;
            async move {
                app.request(
                    "GET",
                    &path,
                    &[("authorization", &bearer), ("link", &link_value)],
                    None,
                )
                .await
            }
        };
        let body = json!([
            {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "speed": {"type": "Property", "value": 5},
             "brandName": {"type": "Property", "value": "A"}},
            {"id": "urn:ngsi-ld:Building:1", "type": "Building", "name": {"type": "Property", "value": "Hall"}}
        ]);
        let bearer = format!("Bearer {admin}");
        let created = app
            .request(
                "POST",
                "/ngsi-ld/v1/entityOperations/create",
                &[
                    ("authorization", &bearer),
                    ("link", &link_value),
                    ("content-type", "application/json"),
                ],
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let types: Value = get(&reader, "/ngsi-ld/v1/types?details=true").await.json();
        assert_eq!(
            types,
            json!([{"id": "https://example.org/ns#Vehicle", "type": "EntityType", "typeName": "Vehicle",
                    "attributeNames": ["speed"]}])
        );
        get(&reader, "/ngsi-ld/v1/types/Building")
            .await
            .assert_problem(404, "ResourceNotFound");
        let attributes = get(&reader, "/ngsi-ld/v1/attributes").await.json();
        assert_eq!(attributes["attributeList"], json!(["speed"]));
        get(&reader, "/ngsi-ld/v1/attributes/brandName")
            .await
            .assert_problem(404, "ResourceNotFound");
        let all = get(&admin, "/ngsi-ld/v1/types").await.json();
        assert_eq!(all["typeList"], json!(["Building", "Vehicle"]));
        assert_eq!(app.get("/ngsi-ld/v1/types", None).await.status, 401);
    }
}
