//! `/jsonldContexts`: hosted contexts are added, listed, served, used and deleted.

use serde_json::json;

use crate::helpers::apps;

#[actix_web::test]
async fn hosted_contexts_live_and_die() {
    for app in apps().await {
        let added = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/jsonldContexts",
                &json!({"@context": {"Tree": "https://example.org/green#Tree"}}),
                None,
            )
            .await;
        assert_eq!(added.status, 201, "{}", added.text);
        let location = added.header("location").expect("location").to_owned();
        assert!(location.starts_with("/ngsi-ld/v1/jsonldContexts/"));
        let served = app.get(&location, None).await;
        assert_eq!(
            served.json(),
            json!({"@context": {"Tree": "https://example.org/green#Tree"}})
        );
        let details = app
            .get(&format!("{location}?details=true"), None)
            .await
            .json();
        assert_eq!(details["kind"], "Hosted");

        // A request may use it by URL.
        let hosted_url = format!("{}{location}", app.url);
        let created = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entities",
                &json!({"id": "urn:x:tree:1", "type": "Tree"}),
                Some(&hosted_url),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let expanded = app
            .get("/ngsi-ld/v1/entities/urn:x:tree:1", None)
            .await
            .json();
        assert_eq!(expanded["type"], "https://example.org/green#Tree");

        let listed = app
            .get("/ngsi-ld/v1/jsonldContexts?kind=Hosted", None)
            .await
            .json();
        assert_eq!(listed, json!([hosted_url]));
        app.get("/ngsi-ld/v1/jsonldContexts?kind=Other", None)
            .await
            .assert_problem(400, "BadRequestData");
        app.send_json(
            "POST",
            "/ngsi-ld/v1/jsonldContexts",
            &json!({"Tree": "x"}),
            None,
        )
        .await
        .assert_problem(400, "InvalidRequest");

        // The core context cannot be deleted, only reloaded.
        let core = "/ngsi-ld/v1/jsonldContexts/https%3A%2F%2Furi.etsi.org%2Fngsi-ld%2Fv1%2Fngsi-ld-core-context-v1.8.jsonld";
        app.request("DELETE", core, &[], None)
            .await
            .assert_problem(400, "BadRequestData");
        assert_eq!(
            app.request("DELETE", &format!("{core}?reload=true"), &[], None)
                .await
                .status,
            204
        );

        assert_eq!(
            app.request("DELETE", &location, &[], None).await.status,
            204
        );
        app.get(&location, None)
            .await
            .assert_problem(404, "ResourceNotFound");
        app.request(
            "DELETE",
            "/ngsi-ld/v1/jsonldContexts/1234567890123456?reload=true",
            &[],
            None,
        )
        .await
        .assert_problem(400, "BadRequestData");
    }
}
