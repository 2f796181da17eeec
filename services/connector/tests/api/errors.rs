//! Bad input never gets a 5xx, never panics and never writes: every case a ProblemDetails.

use serde_json::json;

use crate::helpers::apps;

/// (method, path, content type, body, expected status, expected NGSI-LD type)
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<String>,
    u16,
    &'static str,
);

fn deep(depth: usize) -> String {
    let mut nested = String::from("1");
    for _ in 0..depth {
        nested = format!("{{\"type\":\"Property\",\"value\":1,\"sub\":{nested}}}");
    }
    format!("{{\"id\":\"urn:x:deep\",\"type\":\"T\",\"a\":{nested}}}")
}

fn cases() -> Vec<Case> {
    let json = Some("application/json");
    let entity = |body: serde_json::Value| Some(body.to_string());
    vec![
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            Some("{not json".to_owned()),
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            Some(String::new()),
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            Some("[]".to_owned()),
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"type": "T"})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "not a uri", "type": "T"})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1"})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": 5})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": "T", "a": null})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(
                json!({"id": "urn:x:1", "type": "T", "a": {"type": "Relationship", "object": "no uri"}}),
            ),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": "T", "a": {"type": "Property"}})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": "T", "a": {"type": "Magic", "value": 1}})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(
                json!({"id": "urn:x:1", "type": "T", "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [500, 0]}}}),
            ),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(
                json!({"id": "urn:x:1", "type": "T", "a": {"value": 1, "observedAt": "yesterday"}}),
            ),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": "T", "a(b": 1})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": "T", "a": [{"value": 1}, {"value": 2}]})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            entity(json!({"id": "urn:x:1", "type": "T", "@context": {}})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            Some("application/ld+json"),
            entity(json!({"id": "urn:x:1", "type": "T"})),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            Some(deep(40)),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            Some("[".repeat(10_000)),
            400,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            json,
            Some(format!(
                "{{\"id\":\"urn:x:big\",\"type\":\"T\",\"a\":\"{}\"}}",
                "x".repeat(2 << 20)
            )),
            413,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            Some("application/xml"),
            Some("<a/>".to_owned()),
            415,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities",
            None,
            Some("{}".to_owned()),
            415,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities?bogus=1",
            json,
            entity(json!({"id": "urn:x:1", "type": "T"})),
            400,
            "InvalidRequest",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities/not-a-uri",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities/urn:x:missing",
            None,
            None,
            404,
            "ResourceNotFound",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities?limit=5",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities?type=T&limit=-1",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities?type=T&limit=100000",
            None,
            None,
            403,
            "TooManyResults",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities?type=T&idPattern=(",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities?type=T&options=bogus",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "GET",
            "/ngsi-ld/v1/entities?type=T&q=speed>",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "DELETE",
            "/ngsi-ld/v1/entities",
            None,
            None,
            400,
            "BadRequestData",
        ),
        (
            "PATCH",
            "/ngsi-ld/v1/entities/",
            json,
            Some("{}".to_owned()),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entities//attrs/",
            json,
            Some("{\"a\": 1}".to_owned()),
            400,
            "BadRequestData",
        ),
        (
            "DELETE",
            "/ngsi-ld/v1/entities/urn:x:1/attrs/",
            None,
            None,
            405,
            "InvalidRequest",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entityOperations/create",
            json,
            Some("[]".to_owned()),
            400,
            "BadRequestData",
        ),
        (
            "POST",
            "/ngsi-ld/v1/entityOperations/create",
            json,
            Some("{}".to_owned()),
            400,
            "BadRequestData",
        ),
        (
            "GET",
            "/ngsi-ld/v1/nowhere",
            None,
            None,
            404,
            "ResourceNotFound",
        ),
        (
            "GET",
            "/ngsi-ld/v1/subscriptions",
            None,
            None,
            501,
            "OperationNotSupported",
        ),
    ]
}

#[actix_web::test]
async fn bad_input_gets_a_problem_and_writes_nothing() {
    for app in apps().await {
        for (method, path, content_type, body, status, kind) in cases() {
            let mut headers = Vec::new();
            if let Some(content_type) = content_type {
                headers.push(("content-type", content_type));
            }
            let reply = app.request(method, path, &headers, body.as_deref()).await;
            assert_eq!(
                reply.status, status,
                "{} {method} {path}: {}",
                app.backend, reply.text
            );
            reply.assert_problem(status, kind);
        }
        // Nothing was written by any of them.
        let all = app
            .get("/ngsi-ld/v1/entities?idPattern=.*&count=true&limit=0", None)
            .await;
        assert_eq!(
            all.header("ngsild-results-count"),
            Some("0"),
            "{}",
            all.text
        );
    }
}

#[actix_web::test]
async fn content_negotiation() {
    for app in apps().await {
        let created = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entities",
                &json!({"id": "urn:x:1", "type": "T"}),
                None,
            )
            .await;
        assert_eq!(created.status, 201);
        let path = "/ngsi-ld/v1/entities/urn:x:1";
        app.request("GET", path, &[("accept", "application/xml")], None)
            .await
            .assert_problem(406, "InvalidRequest");
        let any = app.request("GET", path, &[("accept", "*/*")], None).await;
        assert_eq!(any.header("content-type"), Some("application/json"));
        assert!(any.header("link").is_some());
        let ld = app
            .request("GET", path, &[("accept", "application/ld+json")], None)
            .await;
        assert_eq!(
            ld.json()["@context"],
            "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
        );
        // A Link header with a JSON-LD body is refused.
        let both = app
            .request(
                "POST",
                "/ngsi-ld/v1/entities",
                &[("content-type", "application/ld+json"), ("link", &crate::helpers::link(crate::helpers::TEST_CONTEXT_URL))],
                Some(&json!({"id": "urn:x:2", "type": "T", "@context": crate::helpers::TEST_CONTEXT_URL}).to_string()),
            )
            .await;
        both.assert_problem(400, "BadRequestData");
        // An unavailable @context is a 503.
        let unavailable = app
            .send_json_ld("POST", "/ngsi-ld/v1/entities", &json!({"id": "urn:x:3", "type": "T", "@context": "https://example.org/missing.jsonld"}))
            .await;
        unavailable.assert_problem(503, "LdContextNotAvailable");
    }
}
