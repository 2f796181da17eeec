//! A department's connector registering itself at the broker (ETSI GS CIM 009, clause 5.9) as the
//! source of the entity types it holds, and keeping that registration current.
//!
//! One registration per tenant the connector serves, in the same tenant at the broker:
//! `urn:ngsi-ld:ContextSourceRegistration:civitas:<department>`, inclusive, for the retrieve
//! operations, naming every entity type the tenant holds (by IRI, so no @context is needed) and no
//! attributes (so all of them); its `location` is the bounding box of the entities' locations (a
//! point or a line when it is one) and its `managementInterval` starts at the earliest creation
//! of an entity held. Every `refresh` the connector compares what each tenant holds with what it
//! registered and, when they differ, updates the registration (or creates it, or deletes it once
//! the tenant holds nothing). A broker that is down or refuses is tried again, every second until
//! every tenant's registration is in place.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::AppState;

/// Where and how to register.
#[derive(Debug, Clone)]
pub struct Target {
    /// The broker's base URL.
    pub broker: String,
    /// A token the broker accepts for registering these types, if it needs one.
    pub token: Option<String>,
    /// How often what the connector holds is compared with what it registered.
    pub refresh: Duration,
}

/// How long one request to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts self-registration for a running connector ([`crate::Application::registrar`]).
pub struct Registrar {
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").finish_non_exhaustive()
    }
}

impl Registrar {
    pub(crate) fn new(state: web::Data<AppState>) -> Registrar {
        Registrar { state }
    }

    /// Starts keeping the registration at `target` current; see [`start`].
    pub fn start(self, target: Target) -> watch::Receiver<bool> {
        start(self.state, target)
    }
}

/// Waits until `registered` turns `true`, at most `timeout`.
pub async fn wait(mut registered: watch::Receiver<bool>, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, registered.wait_for(|done| *done))
        .await
        .is_ok_and(|outcome| outcome.is_ok())
}

/// The registration's id for `department`.
pub fn registration_id(department: &str) -> String {
    format!("urn:ngsi-ld:ContextSourceRegistration:civitas:{department}")
}

/// Starts keeping the registrations current, one per tenant the connector serves (the default
/// tenant and its `tenants`), each in the same tenant at the broker; the receiver turns `true`
/// once the broker has all of them as the connector holds it now.
pub fn start(state: web::Data<AppState>, target: Target) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    let id = registration_id(&state.settings.department);
    let mut tenants = vec![String::new()];
    tenants.extend(state.settings.tenants.iter().cloned());
    // Held weakly: a stopped connector is let go, and the task ends.
    let weak = std::sync::Arc::downgrade(&state.into_inner());
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        // What the broker has per tenant: absent before the first success.
        let mut registered: HashMap<String, Held> = HashMap::new();
        loop {
            let Some(state) = weak.upgrade() else {
                return;
            };
            for tenant in &tenants {
                match held(&state, tenant).await {
                    Ok(held) if registered.get(tenant) != Some(&held) => {
                        match update(&client, &target, tenant, &id, &state.public_url, &held).await
                        {
                            Ok(()) => {
                                tracing::info!(
                                    broker = target.broker,
                                    tenant,
                                    types = held.types.len(),
                                    "registered at the broker"
                                );
                                registered.insert(tenant.clone(), held);
                            }
                            Err(error) => tracing::warn!(
                                broker = target.broker,
                                tenant,
                                "cannot register at the broker: {error}"
                            ),
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(tenant, "cannot list the entity types held: {error}");
                    }
                }
            }
            drop(state);
            let all = registered.len() == tenants.len();
            sender.send_replace(all);
            let wait = if all {
                target.refresh
            } else {
                target.refresh.min(Duration::from_secs(1))
            };
            tokio::time::sleep(wait).await;
        }
    });
    receiver
}

/// What a tenant holds, as registered.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    /// Entity types, in order.
    types: Vec<String>,
    extent: civitas_store::Extent,
}

/// What `tenant` holds now.
async fn held(state: &AppState, tenant: &str) -> Result<Held, civitas_store::Error> {
    let store = &state.entities.store;
    let types = store
        .type_counts(tenant)
        .await?
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    let extent = store.extent(tenant).await?;
    Ok(Held { types, extent })
}

/// A GeoJSON geometry covering `bbox` (min lon, min lat, max lon, max lat): the point or line it
/// degenerates to, else its rectangle.
fn geometry(bbox: [f64; 4]) -> Value {
    let [west, south, east, north] = bbox;
    if west == east && south == north {
        json!({"type": "Point", "coordinates": [west, south]})
    } else if west == east || south == north {
        json!({"type": "LineString", "coordinates": [[west, south], [east, north]]})
    } else {
        json!({"type": "Polygon", "coordinates": [[
            [west, south], [east, south], [east, north], [west, north], [west, south]
        ]]})
    }
}

/// Makes the broker's registration name `types`: an update of the one there, else a new one;
/// deleted when there is no type.
async fn update(
    client: &reqwest::Client,
    target: &Target,
    tenant: &str,
    id: &str,
    endpoint: &str,
    held: &Held,
) -> Result<(), String> {
    let types = &held.types;
    let url = format!(
        "{}/ngsi-ld/v1/csourceRegistrations/{}",
        target.broker.trim_end_matches('/'),
        crate::routes::path_segment(id)
    );
    let with_token = |request: reqwest::RequestBuilder| {
        let request = if tenant.is_empty() {
            request
        } else {
            request.header("NGSILD-Tenant", tenant)
        };
        match &target.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    if types.is_empty() {
        let response = with_token(client.delete(&url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        return match response.status().as_u16() {
            204 | 404 => Ok(()),
            other => Err(format!("deleting the registration answered {other}")),
        };
    }
    let entities: Vec<Value> = types.iter().map(|t| json!({ "type": t })).collect();
    // Null removes a member the registration no longer has (an update merges).
    let members = json!({
        "endpoint": endpoint,
        "information": [{ "entities": entities }],
        "mode": "inclusive",
        "operations": ["retrieveOps"],
        "location": held.extent.bbox.map(geometry),
        "managementInterval": held.extent.first_created.map(|since| json!({
            "startAt": since.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        })),
    });
    let response = with_token(client.patch(&url))
        .header("content-type", "application/json")
        .body(members.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        204 => return Ok(()),
        404 => {}
        other => {
            return Err(format!(
                "updating the registration answered {other}: {}",
                response.text().await.unwrap_or_default()
            ));
        }
    }
    let mut body = members;
    if let Some(members) = body.as_object_mut() {
        members.retain(|_, value| !value.is_null());
    }
    body["id"] = Value::from(id);
    body["type"] = Value::from("ContextSourceRegistration");
    let response = with_token(client.post(format!(
        "{}/ngsi-ld/v1/csourceRegistrations",
        target.broker.trim_end_matches('/')
    )))
    .header("content-type", "application/json")
    .body(body.to_string())
    .send()
    .await
    .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        201 => Ok(()),
        other => Err(format!(
            "creating the registration answered {other}: {}",
            response.text().await.unwrap_or_default()
        )),
    }
}
