//! `spawn_app` and a small HTTP client for the tests.

use std::sync::Arc;

use chrono::TimeZone;
use civitas_connector::clock::ManualClock;
use civitas_connector::{Application, Settings};
use civitas_testkit::{TestDatabase, test_databases};
use serde_json::Value;

/// The Link header value for a context URL.
pub fn link(url: &str) -> String {
    format!("<{url}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"")
}

/// The test department's root key (seeded: the same in every run).
pub fn root_key() -> civitas_auth::keys::RootKey {
    civitas_auth::keys::RootKey::from_seed([42; 32]).expect("a valid seed")
}

/// The policy of most tests: anyone may read and write everything without a token, as in the
/// conformance runs. Authorization tests replace it (`settings.auth.policies`).
pub const OPEN_POLICY: &str = "[anonymous]\nread = [\"*\"]\nwrite = [\"*\"]\n";

/// Writes a department policy folder (`access.toml`, and `access.datalog` when given) under `root`.
pub fn write_policy(
    root: &std::path::Path,
    access: &str,
    datalog: Option<&str>,
) -> std::path::PathBuf {
    let folder = root.join("test");
    std::fs::create_dir_all(&folder).expect("policy folder");
    std::fs::write(folder.join("access.toml"), access).expect("access.toml");
    if let Some(datalog) = datalog {
        std::fs::write(folder.join("access.datalog"), datalog).expect("access.datalog");
    }
    folder
}

/// A context every test may use, hosted by nobody: tests preload it.
pub const TEST_CONTEXT_URL: &str = "https://example.org/civitas/test-context.jsonld";

/// A running connector and what it runs on.
pub struct TestApp {
    pub url: String,
    pub backend: &'static str,
    client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    /// The running service: done once it stopped serving and closed its audit log.
    running: Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
    database: Option<TestDatabase>,
    _context_dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        drop(handle.stop(false));
    }
}

/// One response, read completely.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The ids of the entities a listing answered with, in order.
    pub fn ids(&self) -> Vec<String> {
        self.json()
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {}", self.text))
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a ProblemDetails body of the given NGSI-LD type and status.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(
            body["type"],
            format!("https://uri.etsi.org/ngsi-ld/errors/{kind}"),
            "{body}"
        );
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
    }
}

/// One connector per available backend.
pub async fn apps() -> Vec<TestApp> {
    apps_with(|_| {}).await
}

/// One connector per available backend, with adjusted settings.
pub async fn apps_with(configure: impl Fn(&mut Settings)) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for database in test_databases().await {
        apps.push(spawn_app(database, &configure).await);
    }
    apps
}

async fn spawn_app(database: TestDatabase, configure: &impl Fn(&mut Settings)) -> TestApp {
    let context_dir = tempfile::tempdir().expect("temp dir");
    let context_file = context_dir.path().join("test-context.jsonld");
    std::fs::write(
        &context_file,
        r#"{"@context": {"ex": "https://example.org/ns#", "Vehicle": "ex:Vehicle", "Building": "ex:Building",
            "speed": "ex:speed", "brandName": "ex:brandName", "isParked": "ex:isParked", "name": "ex:name",
            "category": {"@id": "ex:category", "@type": "@vocab"}, "sedan": "ex:sedan"}}"#,
    )
    .expect("write context");
    let mut settings = Settings::new("test", &database.url);
    settings.listen = "127.0.0.1:0".to_owned();
    settings.tenants = vec!["city-a".to_owned(), "city-b".to_owned()];
    settings.contexts.fetch_remote = false;
    settings
        .contexts
        .preload
        .insert(TEST_CONTEXT_URL.to_owned(), context_file);
    settings.limits.max_body_bytes = 1 << 20;
    settings.auth.public_key = Some(root_key().public_string());
    settings.auth.policies = Some(write_policy(
        &context_dir.path().join("policies"),
        OPEN_POLICY,
        None,
    ));
    settings.audit.checkpoint_interval_ms = 20;
    settings.audit.merge_wait_ms = 20;
    configure(&mut settings);
    let clock = Arc::new(ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date"),
    ));
    let application = Application::build_with_clock(settings, clock)
        .await
        .expect("the connector starts");
    let url = application.public_url().to_owned();
    let handle = application.handle();
    let running = actix_web::rt::spawn(application.run_until_stopped());
    TestApp {
        url,
        backend: database.kind,
        client: reqwest::Client::new(),
        handle,
        running: Some(running),
        database: Some(database),
        _context_dir: context_dir,
    }
}

impl TestApp {
    /// Stops the connector and starts a new one on the same database, with `configure`.
    pub async fn restart(mut self, configure: impl Fn(&mut Settings)) -> TestApp {
        let database = self.database.take().expect("the database is held");
        self.handle.stop(true).await;
        // Once it returns, the stopped connector has merged its spool and its merger is gone:
        // the new connector does not recover the same spool alongside it.
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
        drop(self);
        spawn_app(database, &configure).await
    }

    /// The URL of the connector's database.
    pub fn database_url(&self) -> &str {
        self.database
            .as_ref()
            .map(|database| database.url.as_str())
            .unwrap_or_default()
    }

    /// Runs `script` on the connector's database (see `TestDatabase::execute`).
    pub async fn execute_sql(&self, script: &'static str) {
        if let Some(database) = &self.database {
            database.execute(script).await;
        }
    }

    /// Sends a request; `body` is sent as given, headers as listed.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("the connector answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("body"),
        }
    }

    /// Sends a JSON body (`application/json`, optionally with a Link context).
    pub async fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        context: Option<&str>,
    ) -> Reply {
        let link_value = context.map(link);
        let mut headers = vec![("content-type", "application/json")];
        if let Some(link_value) = &link_value {
            headers.push(("link", link_value));
        }
        self.request(method, path, &headers, Some(&body.to_string()))
            .await
    }

    /// Sends a JSON-LD body (`application/ld+json`, @context inside).
    pub async fn send_json_ld(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.request(
            method,
            path,
            &[("content-type", "application/ld+json")],
            Some(&body.to_string()),
        )
        .await
    }

    /// GETs with an optional Link context.
    pub async fn get(&self, path: &str, context: Option<&str>) -> Reply {
        let link_value = context.map(link);
        let mut headers = Vec::new();
        if let Some(link_value) = &link_value {
            headers.push(("link", link_value.as_str()));
        }
        self.request("GET", path, &headers, None).await
    }
}
