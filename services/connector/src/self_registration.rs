//! A department's connector registering itself at the broker (ETSI GS CIM 009, clause 5.9) as the
//! source of the entity types it holds, and keeping that registration current.
//!
//! One registration per connector, `urn:ngsi-ld:ContextSourceRegistration:civitas:<department>`,
//! inclusive, for the retrieve operations, naming every entity type the connector's default tenant
//! holds (by IRI, so no @context is needed) and no attributes (so all of them). Every
//! `refresh` the connector compares what it holds with what it registered and, when they differ,
//! updates the registration (or creates it, or deletes it once the connector holds nothing). A
//! broker that is down or refuses is tried again, every second until the first success.

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

/// Starts keeping the registration current; the receiver turns `true` once the broker has it as
/// the connector holds it now.
pub fn start(state: web::Data<AppState>, target: Target) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    let id = registration_id(&state.settings.department);
    // Held weakly: a stopped connector is let go, and the task ends.
    let weak = std::sync::Arc::downgrade(&state.into_inner());
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        // What the broker has: `None` before the first success, then the types registered.
        let mut registered: Option<Vec<String>> = None;
        loop {
            let Some(state) = weak.upgrade() else {
                return;
            };
            match held_types(&state).await {
                Ok(types) if registered.as_ref() != Some(&types) => {
                    match update(&client, &target, &id, &state.public_url, &types).await {
                        Ok(()) => {
                            tracing::info!(
                                broker = target.broker,
                                types = types.len(),
                                "registered at the broker"
                            );
                            registered = Some(types);
                            sender.send_replace(true);
                        }
                        Err(error) => {
                            tracing::warn!(
                                broker = target.broker,
                                "cannot register at the broker: {error}"
                            );
                            sender.send_replace(false);
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!("cannot list the entity types held: {error}"),
            }
            drop(state);
            let wait = if registered.is_some() {
                target.refresh
            } else {
                target.refresh.min(Duration::from_secs(1))
            };
            tokio::time::sleep(wait).await;
        }
    });
    receiver
}

/// The entity types the default tenant holds, in order.
async fn held_types(state: &AppState) -> Result<Vec<String>, civitas_store::Error> {
    Ok(state
        .entities
        .store
        .type_counts("")
        .await?
        .into_iter()
        .map(|(kind, _)| kind)
        .collect())
}

/// Makes the broker's registration name `types`: an update of the one there, else a new one;
/// deleted when there is no type.
async fn update(
    client: &reqwest::Client,
    target: &Target,
    id: &str,
    endpoint: &str,
    types: &[String],
) -> Result<(), String> {
    let url = format!(
        "{}/ngsi-ld/v1/csourceRegistrations/{}",
        target.broker.trim_end_matches('/'),
        crate::routes::path_segment(id)
    );
    let with_token = |request: reqwest::RequestBuilder| match &target.token {
        Some(token) => request.bearer_auth(token),
        None => request,
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
    let members = json!({
        "endpoint": endpoint,
        "information": [{ "entities": entities }],
        "mode": "inclusive",
        "operations": ["retrieveOps"],
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
