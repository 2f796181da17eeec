//! Context source registration subscriptions (`/csourceSubscriptions`): created, retrieved, listed,
//! updated and deleted through the HTTP API, and notifications delivered to a subscriber on
//! 127.0.0.1 when registrations start matching, change and stop matching.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::helpers::{TEST_CONTEXT_URL, TestApp, apps};

const PATH: &str = "/ngsi-ld/v1/csourceSubscriptions";
const REGISTRATIONS: &str = "/ngsi-ld/v1/csourceRegistrations";

/// One notification as the subscriber received it.
#[derive(Debug)]
struct Received {
    head: String,
    body: Value,
}

/// A subscriber on 127.0.0.1: answers every request with 204 and hands its body over.
async fn subscriber() -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}/notify", listener.local_addr().expect("address"));
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(read) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    let text = String::from_utf8_lossy(&buffer).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = text[..end].to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    let body = serde_json::from_slice(&buffer[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    let _ = socket
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = sender.send(Received { head, body });
                    buffer.clear();
                }
            });
        }
    });
    (url, receiver)
}

async fn next(receiver: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the subscriber runs")
}

async fn nothing_within(receiver: &mut mpsc::UnboundedReceiver<Received>, wait: Duration) {
    if let Ok(Some(received)) = tokio::time::timeout(wait, receiver.recv()).await {
        panic!("no notification was expected, got {:?}", received.body);
    }
}

/// The subscription at `path` once `timesSent` reached `times` (deliveries are counted after the
/// subscriber answered, so shortly after it received the notification).
async fn counted(app: &TestApp, path: &str, times: u64) -> Value {
    let mut body = Value::Null;
    for _ in 0..50 {
        body = app.get(path, Some(TEST_CONTEXT_URL)).await.json();
        if body["notification"]["timesSent"] == times {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    body
}

fn registration(id: &str, entity_type: &str) -> Value {
    json!({
        "id": id,
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": entity_type}]}],
        "endpoint": "http://127.0.0.1:9/source",
    })
}

async fn send(app: &TestApp, method: &str, path: &str, body: &Value, status: u16) {
    let reply = app
        .send_json(method, path, body, Some(TEST_CONTEXT_URL))
        .await;
    assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
}

#[actix_web::test]
async fn subscribers_are_told_when_registrations_match_change_and_stop_matching() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let (endpoint, mut received) = subscriber().await;
        let id = "urn:ngsi-ld:Subscription:vehicles";
        let subscription = json!({
            "id": id,
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "notification": {"endpoint": {"uri": endpoint, "accept": "application/json"}},
        });
        let created = app.send_json("POST", PATH, &subscription, ctx).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let location = created.header("location").expect("Location").to_owned();
        assert_eq!(location, format!("{PATH}/{id}"));
        let got = app.get(&location, ctx).await;
        assert_eq!(got.status, 200, "{}", got.text);
        let body = got.json();
        assert_eq!(body["entities"][0]["type"], "Vehicle", "{body}");
        assert_eq!(body["status"], "active", "{body}");
        assert!(body["notification"].get("timesSent").is_none(), "{body}");

        // A matching registration appears: newlyMatching, compacted with the subscriber's context.
        let fleet = "urn:ngsi-ld:ContextSourceRegistration:fleet";
        send(
            &app,
            "POST",
            REGISTRATIONS,
            &registration(fleet, "Vehicle"),
            201,
        )
        .await;
        let first = next(&mut received).await;
        assert_eq!(
            first.body["type"], "ContextSourceNotification",
            "{:?}",
            first.body
        );
        assert_eq!(first.body["subscriptionId"], id);
        assert_eq!(first.body["triggerReason"], "newlyMatching");
        assert_eq!(first.body["data"][0]["id"], fleet);
        assert_eq!(
            first.body["data"][0]["information"][0]["entities"][0]["type"],
            "Vehicle"
        );
        assert!(first.head.contains(TEST_CONTEXT_URL), "{}", first.head);

        // A registration of another type is no concern of this subscription.
        let estate = "urn:ngsi-ld:ContextSourceRegistration:estate";
        send(
            &app,
            "POST",
            REGISTRATIONS,
            &registration(estate, "Building"),
            201,
        )
        .await;
        nothing_within(&mut received, Duration::from_millis(500)).await;

        // Changed and still matching: updated; changed to another type: noLongerMatching.
        let fleet_path = format!("{REGISTRATIONS}/{fleet}");
        send(
            &app,
            "PATCH",
            &fleet_path,
            &json!({"endpoint": "http://127.0.0.1:9/v2"}),
            204,
        )
        .await;
        let updated = next(&mut received).await;
        assert_eq!(updated.body["triggerReason"], "updated");
        assert_eq!(updated.body["data"][0]["endpoint"], "http://127.0.0.1:9/v2");
        send(
            &app,
            "PATCH",
            &fleet_path,
            &json!({"information": [{"entities": [{"type": "Building"}]}]}),
            204,
        )
        .await;
        let gone = next(&mut received).await;
        assert_eq!(gone.body["triggerReason"], "noLongerMatching");

        // The counters show three deliveries, all received (counted once the subscriber answered).
        let body = counted(&app, &location, 3).await;
        assert_eq!(body["notification"]["timesSent"], 3, "{body}");
        assert_eq!(body["notification"]["status"], "ok", "{body}");
        assert!(body["notification"]["lastSuccess"].is_string(), "{body}");

        // A registration of vehicles and buildings: only the vehicles' part is notified.
        let mixed = "urn:ngsi-ld:ContextSourceRegistration:mixed";
        let mut both = registration(mixed, "Vehicle");
        both["information"] = json!([
            {"entities": [{"type": "Building"}]},
            {"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"]},
        ]);
        send(&app, "POST", REGISTRATIONS, &both, 201).await;
        let part = next(&mut received).await;
        assert_eq!(part.body["data"][0]["id"], mixed);
        assert_eq!(
            part.body["data"][0]["information"],
            json!([{"entities": [{"type": "Vehicle"}], "propertyNames": ["speed"]}])
        );
        let removed = app
            .request("DELETE", &format!("{REGISTRATIONS}/{mixed}"), &[], None)
            .await;
        assert_eq!(removed.status, 204, "{}", removed.text);
        let gone_too = next(&mut received).await;
        assert_eq!(gone_too.body["triggerReason"], "noLongerMatching");

        // Widened to Buildings: told at once of the two registrations that match now.
        send(
            &app,
            "PATCH",
            &location,
            &json!({"entities": [{"type": "Vehicle"}, {"type": "Building"}]}),
            204,
        )
        .await;
        let widened = next(&mut received).await;
        assert_eq!(widened.body["triggerReason"], "newlyMatching");
        let mut ids: Vec<&str> = widened.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [estate, fleet]);

        // Paused: nothing is sent, and the status says so.
        send(&app, "PATCH", &location, &json!({"isActive": false}), 204).await;
        assert_eq!(app.get(&location, ctx).await.json()["status"], "paused");
        let deleted = app
            .request("DELETE", &format!("{REGISTRATIONS}/{estate}"), &[], None)
            .await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        nothing_within(&mut received, Duration::from_millis(500)).await;

        // Active again but expired (an update may set a past expiry): nothing is sent.
        send(
            &app,
            "PATCH",
            &location,
            &json!({"isActive": true, "expiresAt": "2025-01-01T00:00:00Z"}),
            204,
        )
        .await;
        assert_eq!(app.get(&location, ctx).await.json()["status"], "expired");
        send(
            &app,
            "POST",
            REGISTRATIONS,
            &registration("urn:ngsi-ld:ContextSourceRegistration:expired", "Vehicle"),
            201,
        )
        .await;
        nothing_within(&mut received, Duration::from_millis(500)).await;

        // Listed with a count, then deleted.
        let listed = app.get(&format!("{PATH}?count=true"), ctx).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.header("ngsild-results-count"), Some("1"));
        assert_eq!(listed.json()[0]["id"], id);
        let removed = app.request("DELETE", &location, &[], None).await;
        assert_eq!(removed.status, 204, "{}", removed.text);
        assert_eq!(app.get(&location, ctx).await.status, 404);
        send(
            &app,
            "POST",
            REGISTRATIONS,
            &registration("urn:ngsi-ld:ContextSourceRegistration:late", "Vehicle"),
            201,
        )
        .await;
        nothing_within(&mut received, Duration::from_millis(500)).await;
    }
}

#[actix_web::test]
async fn a_new_subscription_is_told_of_what_already_matches_and_failures_are_counted() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let fleet = "urn:ngsi-ld:ContextSourceRegistration:fleet";
        send(
            &app,
            "POST",
            REGISTRATIONS,
            &registration(fleet, "Vehicle"),
            201,
        )
        .await;

        let (endpoint, mut received) = subscriber().await;
        let subscription = json!({
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "notification": {"endpoint": {"uri": endpoint, "accept": "application/ld+json"}},
        });
        let created = app.send_json("POST", PATH, &subscription, ctx).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let location = created.header("location").expect("Location").to_owned();
        assert!(
            location.starts_with(&format!("{PATH}/urn:ngsi-ld:Subscription:")),
            "{location}"
        );
        let initial = next(&mut received).await;
        assert_eq!(initial.body["triggerReason"], "newlyMatching");
        assert_eq!(initial.body["data"][0]["id"], fleet);
        assert_eq!(
            initial.body["@context"], TEST_CONTEXT_URL,
            "{:?}",
            initial.body
        );
        assert!(
            initial.head.contains("application/ld+json"),
            "{}",
            initial.head
        );

        // receiverInfo goes along as headers; throttling spaces notifications out.
        let (endpoint, mut throttled) = subscriber().await;
        let spaced = json!({
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "throttling": 1,
            "notification": {"endpoint": {"uri": endpoint, "receiverInfo": [
                {"key": "X-Civitas-Test", "value": "receiver"}]}},
        });
        send(&app, "POST", PATH, &spaced, 201).await;
        let first = next(&mut throttled).await;
        assert!(
            first.head.contains("x-civitas-test: receiver"),
            "{}",
            first.head
        );
        let started = std::time::Instant::now();
        send(
            &app,
            "POST",
            REGISTRATIONS,
            &registration("urn:ngsi-ld:ContextSourceRegistration:spaced", "Vehicle"),
            201,
        )
        .await;
        let second = next(&mut throttled).await;
        assert_eq!(
            second.body["data"][0]["id"],
            "urn:ngsi-ld:ContextSourceRegistration:spaced"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "sent {:?} after the first",
            started.elapsed()
        );

        // Periodic: the ticker sends what matches, the first time at once (the test clock stands
        // still, so the next period never comes here).
        let (endpoint, mut periodic) = subscriber().await;
        let every = json!({
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "timeInterval": 1,
            "notification": {"endpoint": {"uri": endpoint}},
        });
        send(&app, "POST", PATH, &every, 201).await;
        let first = next(&mut periodic).await;
        assert_eq!(first.body["data"][0]["id"], fleet, "{:?}", first.body);
        nothing_within(&mut periodic, Duration::from_millis(1_500)).await;

        // A temporal query: only registrations whose observation interval it matches.
        let (endpoint, mut recent) = subscriber().await;
        let temporal = json!({
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "temporalQ": {"timerel": "after", "timeAt": "2025-01-01T00:00:00Z"},
            "notification": {"endpoint": {"uri": endpoint}},
        });
        send(&app, "POST", PATH, &temporal, 201).await;
        let initial = next(&mut recent).await;
        assert_eq!(
            initial.body["data"][0]["id"], fleet,
            "no interval: any time"
        );
        let mut old = registration("urn:ngsi-ld:ContextSourceRegistration:old", "Vehicle");
        old["observationInterval"] =
            json!({"startAt": "2019-01-01T00:00:00Z", "endAt": "2020-01-01T00:00:00Z"});
        send(&app, "POST", REGISTRATIONS, &old, 201).await;
        nothing_within(&mut recent, Duration::from_millis(500)).await;
        // A geo-query: only registrations whose location is near.
        let (endpoint, mut nearby) = subscriber().await;
        let near = json!({
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "geoQ": {"georel": "near;maxDistance==2000", "geometry": "Point",
                     "coordinates": [-8.503, 41.202]},
            "notification": {"endpoint": {"uri": endpoint}},
        });
        send(&app, "POST", PATH, &near, 201).await;
        let mut far = registration("urn:ngsi-ld:ContextSourceRegistration:far", "Vehicle");
        far["location"] = json!({"type": "Point", "coordinates": [-9.139, 38.722]});
        let mut porto = registration("urn:ngsi-ld:ContextSourceRegistration:porto", "Vehicle");
        porto["location"] = json!({"type": "Point", "coordinates": [-8.521, 41.2]});
        let initial = next(&mut nearby).await;
        let initial_ids: Vec<&str> = initial.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert!(!initial_ids.contains(&"urn:ngsi-ld:ContextSourceRegistration:far"));
        send(&app, "POST", REGISTRATIONS, &far, 201).await;
        nothing_within(&mut nearby, Duration::from_millis(500)).await;
        send(&app, "POST", REGISTRATIONS, &porto, 201).await;
        let found = next(&mut nearby).await;
        assert_eq!(
            found.body["data"][0]["id"],
            "urn:ngsi-ld:ContextSourceRegistration:porto"
        );

        let bad = json!({"type": "Subscription", "temporalQ": {"timerel": "before"},
                         "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}});
        app.send_json("POST", PATH, &bad, ctx)
            .await
            .assert_problem(400, "BadRequestData");

        // A subscriber that cannot be reached: the failure is counted, the request is not held up.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let unreachable = format!("http://{}/notify", closed.local_addr().expect("address"));
        drop(closed);
        let failing = json!({
            "id": "urn:ngsi-ld:Subscription:failing",
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "notification": {"endpoint": {"uri": unreachable}},
        });
        send(&app, "POST", PATH, &failing, 201).await;
        let failing_path = format!("{PATH}/urn:ngsi-ld:Subscription:failing");
        let body = counted(&app, &failing_path, 1).await;
        assert_eq!(body["notification"]["status"], "failed", "{body}");
        assert_eq!(body["notification"]["timesFailed"], 1, "{body}");
        assert!(body["notification"]["lastFailure"].is_string(), "{body}");
    }
}

#[actix_web::test]
async fn q_and_csf_select_registrations_by_their_own_properties() {
    // Both filter the registrations' own properties (clause 5.11.7), each on its own here.
    for member in ["q", "csf"] {
        for app in apps().await {
            let (endpoint, mut received) = subscriber().await;
            let mut subscription = json!({"id": format!("urn:ngsi-ld:Subscription:{member}"),
                "type": "Subscription", "entities": [{"type": "Vehicle"}],
                "notification": {"endpoint": {"uri": endpoint}}});
            subscription[member] = json!("dataProvider==\"city\"");
            send(&app, "POST", PATH, &subscription, 201).await;
            let mut other = registration("urn:ngsi-ld:ContextSourceRegistration:other", "Vehicle");
            other["dataProvider"] = json!("utility");
            send(&app, "POST", REGISTRATIONS, &other, 201).await;
            nothing_within(&mut received, Duration::from_millis(500)).await;
            let mut city = registration("urn:ngsi-ld:ContextSourceRegistration:city", "Vehicle");
            city["dataProvider"] = json!("city");
            send(&app, "POST", REGISTRATIONS, &city, 201).await;
            let notification = next(&mut received).await;
            assert_eq!(
                notification.body["triggerReason"], "newlyMatching",
                "{member}"
            );
            assert_eq!(
                notification.body["data"][0]["id"], "urn:ngsi-ld:ContextSourceRegistration:city",
                "{member}"
            );
            // The registration stops satisfying the filter: it no longer matches.
            send(
                &app,
                "PATCH",
                &format!("{REGISTRATIONS}/urn:ngsi-ld:ContextSourceRegistration:city"),
                &json!({"dataProvider": "utility"}),
                204,
            )
            .await;
            let notification = next(&mut received).await;
            assert_eq!(
                notification.body["triggerReason"], "noLongerMatching",
                "{member}"
            );
        }
    }
}

#[actix_web::test]
async fn invalid_subscriptions_are_refused_with_the_right_problem() {
    for app in apps().await {
        let ctx = Some(TEST_CONTEXT_URL);
        let endpoint = json!({"endpoint": {"uri": "http://127.0.0.1:9/notify"}});
        for (body, status, kind) in [
            (
                json!({"type": "Subscription", "entities": [{"type": "Vehicle"}]}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Other", "notification": endpoint}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Subscription", "watchedAttributes": [], "notification": endpoint}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Subscription", "expiresAt": "2018-08-01T22:07:00Z", "notification": endpoint}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Subscription", "q": "(speed>10", "notification": endpoint}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Subscription", "csf": "dataProvider==", "notification": endpoint}),
                400,
                "BadRequestData",
            ),
            (
                json!({"type": "Subscription", "geoQ": {"georel": "near", "geometry": "Point",
                       "coordinates": [1, 2]}, "notification": endpoint}),
                400,
                "BadRequestData",
            ),
        ] {
            let reply = app.send_json("POST", PATH, &body, ctx).await;
            reply.assert_problem(status, kind);
        }
        let duplicate = json!({"id": "urn:ngsi-ld:Subscription:one", "type": "Subscription", "notification": endpoint});
        send(&app, "POST", PATH, &duplicate, 201).await;
        app.send_json("POST", PATH, &duplicate, ctx)
            .await
            .assert_problem(409, "AlreadyExists");
        app.get(&format!("{PATH}/not-a-uri"), ctx)
            .await
            .assert_problem(400, "BadRequestData");
        app.get(&format!("{PATH}/urn:ngsi-ld:Subscription:none"), ctx)
            .await
            .assert_problem(404, "ResourceNotFound");
        app.send_json(
            "PATCH",
            &format!("{PATH}/urn:ngsi-ld:Subscription:one"),
            &json!({"notification": {"format": "tabular"}}),
            ctx,
        )
        .await
        .assert_problem(400, "BadRequestData");
        app.get(&format!("{PATH}?limit=-1"), ctx)
            .await
            .assert_problem(400, "BadRequestData");
    }
}
