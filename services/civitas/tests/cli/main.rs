//! The `civitas` binary end to end: `up` starts the demo city, writes endpoints.json, stops on
//! Ctrl-C and keeps its data across restarts; `load` reports what it stored and what it refused;
//! every command has `--help`; `audit verify` catches every way a served log can lie (`audit`).

mod audit;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_civitas");
const PARKING: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld";

/// A running `civitas up`, killed if the test ends (or panics) before it is stopped.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_up(state_dir: &Path) -> Running {
    let child = Command::new(BINARY)
        .args(["up", "--base-port", "0", "--state-dir"])
        .arg(state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("civitas up starts");
    Running(Some(child))
}

/// Waits (bounded) for `up` to write endpoints.json.
fn wait_for_endpoints(state_dir: &Path, running: &mut Running) -> Value {
    let child = running.0.as_mut().expect("running");
    let path = state_dir.join("endpoints.json");
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(value) = serde_json::from_str(&text)
        {
            return value;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("civitas up exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("civitas up wrote no endpoints.json within 180 s");
}

/// Sends SIGINT (Ctrl-C) and waits, bounded, for a clean exit.
fn interrupt(mut running: Running) -> ExitStatus {
    let child = running.0.as_mut().expect("running");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            running.0 = None;
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // `running` is dropped here: the child is killed and reaped.
    panic!("civitas up did not stop within 30 s of Ctrl-C");
}

async fn parking_spot_count(connector: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!(
            "{connector}/ngsi-ld/v1/entities?type=ParkingSpot&limit=0&count=true"
        ))
        .header(
            "Link",
            format!("<{PARKING}>; rel=\"http://www.w3.org/ns/json-ld#context\""),
        )
        .send()
        .await
        .expect("the connector answers");
    assert_eq!(response.status().as_u16(), 200);
    response
        .headers()
        .get("ngsild-results-count")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Retrieves an entity in keyValues with the Parking context, with or without a token.
async fn get_with(connector: &str, id: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .get(format!(
            "{connector}/ngsi-ld/v1/entities/{id}?options=keyValues"
        ))
        .header(
            "Link",
            format!("<{PARKING}>; rel=\"http://www.w3.org/ns/json-ld#context\""),
        );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the connector answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn up_serves_the_demo_city_and_load_reports_per_entity() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = tempfile::tempdir().expect("temp dir");
    let mut child = start_up(state.path());
    let endpoints = wait_for_endpoints(state.path(), &mut child);
    let transport = endpoints["connectors"]["transport"]
        .as_str()
        .expect("transport URL")
        .to_owned();
    assert!(endpoints["connectors"]["environment"].is_string());
    assert!(endpoints["connectors"]["water"].is_string());
    assert_eq!(parking_spot_count(&transport).await, "2000");

    // The broker: one federated question with two departments' tokens; water is not asked.
    let broker = endpoints["broker"].as_str().expect("broker URL").to_owned();
    let agency = |department: &str| {
        let path = endpoints["tokens"][format!("agency.{department}")]
            .as_str()
            .expect("an agency token")
            .to_owned();
        std::fs::read_to_string(path)
            .expect("token file")
            .trim()
            .to_owned()
    };
    let federated = reqwest::Client::new()
        .get(format!(
            "{broker}/ngsi-ld/v1/entities?type=ParkingSpot&limit=0&count=true"
        ))
        .header(
            "Link",
            format!("<{PARKING}>; rel=\"http://www.w3.org/ns/json-ld#context\""),
        )
        .header(
            "Authorization",
            format!("Bearer {}, {}", agency("transport"), agency("environment")),
        )
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(federated.status().as_u16(), 200);
    assert_eq!(
        federated
            .headers()
            .get("ngsild-results-count")
            .and_then(|v| v.to_str().ok()),
        Some("2000")
    );

    // Keys and demo tokens: each department's key verifies its tokens, and is the one published.
    let key = endpoints["keys"]["transport"]
        .as_str()
        .expect("transport key")
        .to_owned();
    for name in [
        "admin.transport",
        "auditor.transport",
        "partner-agency.transport",
        "admin.water",
    ] {
        assert!(endpoints["tokens"][name].is_string(), "{name}: {endpoints}");
    }
    let admin = std::fs::read_to_string(
        endpoints["tokens"]["admin.transport"]
            .as_str()
            .expect("path"),
    )
    .expect("token file");
    let (code, shown, _) = civitas(&["token", "inspect", "--token", admin.trim(), "--key", &key]);
    assert_eq!(code, Some(0), "{shown}");
    let (_, public, _) = civitas(&["token", "inspect", "--token", admin.trim()]);
    assert!(public.contains(r#"right("admin", "*")"#), "{public}");
    let published: Value = reqwest::get(format!("{transport}/.well-known/civitas"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let key_text = std::fs::read_to_string(&key).expect("key file");
    let expected = civitas_auth::keys::RootKey::parse(&key_text)
        .expect("key")
        .public_string();
    assert_eq!(published["publicKeys"], json!([expected]));

    // load: one bad entity is reported, the good ones stored, exit code 1.
    let file = state.path().join("mine.json");
    let entities = json!([
        {"id": "urn:ngsi-ld:Bench:1", "type": "Bench", "seats": 3},
        {"id": "not a uri", "type": "Bench"},
        {"id": "urn:ngsi-ld:Bench:2", "type": "Bench", "seats": 4}
    ]);
    std::fs::write(&file, entities.to_string()).expect("write entities");
    let output = Command::new(BINARY)
        .args(["load", "--url", &transport])
        .env("CIVITAS_TOKEN", admin.trim())
        .arg(&file)
        .output()
        .expect("load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("2 stored, 1 failed"), "{stdout}");
    assert!(stdout.contains("not a uri"), "{stdout}");
    let bench = get_with(&transport, "urn:ngsi-ld:Bench:2", Some(admin.trim())).await;
    assert_eq!(bench.0, 200);
    // Without a token, only what the anonymous policy allows exists.
    assert_eq!(
        get_with(&transport, "urn:ngsi-ld:Bench:2", None).await.0,
        404
    );

    // The partner agency's token: parking sites, without their payment data.
    let partner = std::fs::read_to_string(
        endpoints["tokens"]["partner-agency.transport"]
            .as_str()
            .expect("path"),
    )
    .expect("token file");
    let site = "urn:ngsi-ld:OffStreetParking:civitas:000";
    let (status, full) = get_with(&transport, site, Some(admin.trim())).await;
    assert_eq!(status, 200);
    assert!(full.get("acceptedPaymentMethod").is_some(), "{full}");
    let (status, seen) = get_with(&transport, site, Some(partner.trim())).await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.get("availableSpotNumber").is_some(), "{seen}");
    assert!(seen.get("acceptedPaymentMethod").is_none(), "{seen}");
    assert!(seen.get("priceRatePerMinute").is_none(), "{seen}");
    // Revoked by the department's admin, the partner's token stops working at once.
    let (code, stdout, stderr) = civitas(&[
        "token",
        "revoke",
        "--token",
        partner.trim(),
        "--url",
        &transport,
        "--auth",
        admin.trim(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("revoked "), "{stdout}");
    assert_eq!(
        get_with(&transport, site, Some(partner.trim())).await.0,
        401
    );
    // Only an admin may revoke.
    let (code, _, stderr) = civitas(&[
        "token",
        "revoke",
        "--token",
        admin.trim(),
        "--url",
        &transport,
        "--auth",
        partner.trim(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");

    // Ctrl-C stops cleanly; a restart keeps the data and does not load the demo again.
    assert!(interrupt(child).success());
    std::fs::remove_file(state.path().join("endpoints.json")).expect("endpoints.json was written");
    let mut child = start_up(state.path());
    let endpoints = wait_for_endpoints(state.path(), &mut child);
    let transport = endpoints["connectors"]["transport"]
        .as_str()
        .expect("transport URL")
        .to_owned();
    assert_eq!(parking_spot_count(&transport).await, "2000");
    assert_eq!(
        get_with(&transport, "urn:ngsi-ld:Bench:1", Some(admin.trim()))
            .await
            .0,
        200
    );
    // The revocation was kept.
    assert_eq!(
        get_with(&transport, site, Some(partner.trim())).await.0,
        401
    );
    assert!(interrupt(child).success());
}

#[test]
fn every_command_has_help() {
    for command in [
        vec!["--help"],
        vec!["up", "--help"],
        vec!["connector", "--help"],
        vec!["broker", "--help"],
        vec!["load", "--help"],
        vec!["token", "revoke", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["audit", "log", "--help"],
    ] {
        let output = Command::new(BINARY).args(&command).output().expect("runs");
        assert!(output.status.success(), "{command:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{command:?}"
        );
    }
}

pub(crate) fn civitas(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .output()
        .expect("civitas runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn keys_and_tokens_offline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("transport.key");
    let other = dir.path().join("other.key");
    let key_path = key.to_str().expect("utf-8 path");
    let other_path = other.to_str().expect("utf-8 path");
    let (code, public, _) = civitas(&["keygen", "--out", key_path]);
    assert_eq!(code, Some(0));
    assert!(public.trim().starts_with("ed25519/"), "{public}");
    // An existing key is never overwritten.
    let (code, _, stderr) = civitas(&["keygen", "--out", key_path]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(civitas(&["keygen", "--out", other_path]).0, Some(0));

    let (code, token, stderr) = civitas(&[
        "token",
        "issue",
        "--key",
        key_path,
        "--holder",
        "agency",
        "--read",
        "ParkingSpot",
        "--attrs",
        "status",
        "--ttl",
        "30d",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, narrowed, stderr) = civitas(&[
        "token",
        "attenuate",
        "--token",
        token.trim(),
        "--read-only",
        "--ttl",
        "1h",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, shown, _) = civitas(&[
        "token",
        "inspect",
        "--token",
        narrowed.trim(),
        "--key",
        key_path,
    ]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(r#"holder("agency")"#)
            && shown.contains("block 1")
            && shown.contains("signature: valid"),
        "{shown}"
    );
    // Another department's key does not verify it.
    let (code, shown, _) = civitas(&[
        "token",
        "inspect",
        "--token",
        narrowed.trim(),
        "--key",
        other_path,
    ]);
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("NOT valid"), "{shown}");
    assert_eq!(
        civitas(&[
            "token", "issue", "--key", key_path, "--holder", "x", "--ttl", "soon"
        ])
        .0,
        Some(1)
    );
}

#[test]
fn policy_check_validates_the_demo_policies_and_locates_errors() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let (code, out, _) = civitas(&["policy", "check", demo]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("transport"), "{out}");

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("roads")).expect("mkdir");
    std::fs::write(
        dir.path().join("roads/access.datalog"),
        "allow if true;\ndeny if (;\n",
    )
    .expect("write");
    let (code, out, _) = civitas(&["policy", "check", dir.path().to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("roads/access.datalog:2:"), "{out}");
}
