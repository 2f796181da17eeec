//! Remote @contexts are fetched once and cached, with a timeout, a size limit and an allow-list;
//! any failure is a 503 LdContextNotAvailable, never a hang or a 5xx of another kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::json;

use crate::helpers::apps_with;

/// A context server on 127.0.0.1 that counts the requests it answers.
struct ContextServer {
    url: String,
    hits: Arc<AtomicUsize>,
    missed: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for ContextServer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn start_context_server() -> ContextServer {
    let hits = Arc::new(AtomicUsize::new(0));
    let missed = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let miss_counter = missed.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        let misses = miss_counter.clone();
        App::new()
            .route(
                "/good.jsonld",
                web::get().to(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        HttpResponse::Ok()
                            .content_type("application/ld+json")
                            .body(r#"{"@context": {"Lamp": "https://example.org/light#Lamp"}}"#)
                    }
                }),
            )
            .route(
                "/huge.jsonld",
                web::get().to(|| async {
                    let padding = "x".repeat(2 << 20);
                    HttpResponse::Ok().body(format!(
                        r#"{{"@context": {{"a": "https://example.org/{padding}"}}}}"#
                    ))
                }),
            )
            .route(
                "/slow.jsonld",
                web::get().to(|| async {
                    actix_web::rt::time::sleep(Duration::from_secs(5)).await;
                    HttpResponse::Ok().body(r#"{"@context": {}}"#)
                }),
            )
            .route(
                "/garbage.jsonld",
                web::get().to(|| async { HttpResponse::Ok().body("<html>not json</html>") }),
            )
            .route(
                "/missing.jsonld",
                web::get().to(move || {
                    misses.fetch_add(1, Ordering::SeqCst);
                    async { HttpResponse::NotFound().finish() }
                }),
            )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind the context server");
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    ContextServer {
        url,
        hits,
        missed,
        handle,
    }
}

#[actix_web::test]
async fn remote_contexts_are_fetched_once_and_failures_are_503() {
    let contexts = start_context_server();
    let allowed = contexts.url.clone();
    for app in apps_with(|settings| {
        settings.contexts.fetch_remote = true;
        settings.contexts.fetch_timeout_ms = 500;
        settings.contexts.fetch_allow = vec![format!("{allowed}/")];
    })
    .await
    {
        let before = contexts.hits.load(Ordering::SeqCst);
        let good = format!("{}/good.jsonld", contexts.url);
        for n in 0..3 {
            let created = app
                .send_json(
                    "POST",
                    "/ngsi-ld/v1/entities",
                    &json!({"id": format!("urn:x:lamp:{n}"), "type": "Lamp"}),
                    Some(&good),
                )
                .await;
            assert_eq!(created.status, 201, "{}", created.text);
        }
        assert_eq!(
            contexts.hits.load(Ordering::SeqCst) - before,
            1,
            "fetched once, then cached"
        );
        let lamp = app
            .get("/ngsi-ld/v1/entities/urn:x:lamp:0", None)
            .await
            .json();
        assert_eq!(lamp["type"], "https://example.org/light#Lamp");
        // The fetched context is listed as Cached.
        let cached = app
            .get("/ngsi-ld/v1/jsonldContexts?kind=Cached", None)
            .await
            .json();
        assert!(
            cached
                .as_array()
                .is_some_and(|urls| urls.contains(&json!(good))),
            "{cached}"
        );

        for (path, why) in [
            ("huge.jsonld", "size limit"),
            ("slow.jsonld", "timeout"),
            ("garbage.jsonld", "not JSON"),
            ("missing.jsonld", "404"),
        ] {
            let url = format!("{}/{path}", contexts.url);
            let reply = app
                .send_json(
                    "POST",
                    "/ngsi-ld/v1/entities",
                    &json!({"id": "urn:x:lamp:bad", "type": "Lamp"}),
                    Some(&url),
                )
                .await;
            assert_eq!(reply.status, 503, "{why}: {}", reply.text);
            reply.assert_problem(503, "LdContextNotAvailable");
        }
        // A URL that just failed is not fetched again for a while: the second request answers at
        // once with the same 503.
        let missed_before = contexts.missed.load(Ordering::SeqCst);
        assert!(missed_before >= 1, "the first request did reach the server");
        let missing = format!("{}/missing.jsonld", contexts.url);
        let again = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entities",
                &json!({"id": "urn:x:lamp:bad", "type": "Lamp"}),
                Some(&missing),
            )
            .await;
        again.assert_problem(503, "LdContextNotAvailable");
        assert_eq!(
            contexts.missed.load(Ordering::SeqCst),
            missed_before,
            "the failure was remembered"
        );

        // Outside the allow-list: refused without a fetch.
        let elsewhere = app
            .send_json(
                "POST",
                "/ngsi-ld/v1/entities",
                &json!({"id": "urn:x:lamp:far", "type": "Lamp"}),
                Some("http://127.0.0.2:9/ctx.jsonld"),
            )
            .await;
        elsewhere.assert_problem(503, "LdContextNotAvailable");
        app.get("/ngsi-ld/v1/entities/urn:x:lamp:bad", None)
            .await
            .assert_problem(404, "ResourceNotFound");
    }
}
