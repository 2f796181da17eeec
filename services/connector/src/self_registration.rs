//! A department's connector registering itself at the broker (ETSI GS CIM 009, clause 5.9) as the
//! source of the entity types it holds, and keeping that registration current.
//!
//! One registration per tenant the connector serves, in the same tenant at the broker:
//! `urn:ngsi-ld:ContextSourceRegistration:civitas:<department>`, inclusive, for the retrieve
//! operations. Its `information` has one element per entity type the tenant holds, naming the
//! type and the attributes its entities have, as `propertyNames` and `relationshipNames` (all by
//! IRI, so no @context is needed); a type with an entity that has no attribute at all names none,
//! which registers every attribute, so that the broker does not narrow the entity away. Its
//! `location` is the bounding box of the entities' locations (a point or a line when it is one)
//! its `managementInterval` starts at the earliest creation of an entity held, and its
//! `observationInterval` at the earliest `observedAt` of their attributes (neither ends: the
//! department keeps managing and observing).
//!
//! Every `refresh` the connector compares what each tenant holds with what it registered and,
//! when they differ, updates the registration (or creates it, or deletes it once the tenant holds
//! nothing). It reads the store for that only when a write may have changed what the
//! registration says ([`Shapes`]), or every [`FULL_EVERY`] refreshes: at a million entities the
//! reads take about three seconds. A registration the
//! broker no longer has (deleted there, or a broker started on a new database) is made again
//! at the next refresh. A write of an entity type or attribute the registration does not name yet brings
//! that comparison forward ([`Shapes`]), so the broker asks for it within moments rather than at
//! the next refresh. A broker that is down or refuses is tried again, every second until every
//! tenant's registration is in place.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use civitas_store::{EntityQuery, EntityRecord};

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
/// The least time between two comparisons that writes brought forward.
const NEWS_SPACING: Duration = Duration::from_millis(500);
/// Every this many refreshes the store is read even if no write marked the registration as out
/// of date (see [`Shapes`]).
const FULL_EVERY: u32 = 10;

/// What a connector's writes have shown it holds, per tenant, so that the registrar reads the
/// store again only when the registration may be out of date.
///
/// A write of an (entity type, attribute) pair not registered yet wakes the registrar at once.
/// A write of a location outside the registered bounding box or of an observation earlier than
/// the registered one, a deletion and a purge mark the
/// registration as possibly out of date, for the next refresh. Other writes (most of them:
/// new values of known attributes, in the known area) change nothing it says, and cost one lock
/// and a few lookups per entity. What those writes remove (an attribute replaced away, a
/// location moved inwards) is caught by a full comparison every [`FULL_EVERY`] refreshes.
#[derive(Debug, Default)]
pub struct Shapes {
    watched: AtomicBool,
    /// Bumped by every write that may have made the registration out of date.
    dirty: AtomicU64,
    known: Mutex<HashMap<String, Known>>,
    news: tokio::sync::Notify,
}

/// What a tenant's registration is known to cover.
#[derive(Debug, Default)]
struct Known {
    /// Entity type → attribute names, `""` standing for an entity without attributes.
    types: HashMap<String, HashSet<String>>,
    bbox: Option<[f64; 4]>,
    first_observed: Option<chrono::DateTime<chrono::Utc>>,
}

impl Shapes {
    /// Counts a committed write that removed entities or attributes.
    pub fn changed(&self) {
        self.dirty.fetch_add(1, Ordering::AcqRel);
    }

    /// Notes what `records`, just committed in `tenant`, are made of.
    pub fn note(&self, tenant: &str, records: &[EntityRecord]) {
        if records.is_empty() || !self.watched.load(Ordering::Relaxed) {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if !known.contains_key(tenant) {
            known.insert(tenant.to_owned(), Known::default());
        }
        let Some(known) = known.get_mut(tenant) else {
            return;
        };
        let (mut new, mut grown) = (false, false);
        for record in records {
            if let Some(location) = &record.location {
                let inside = known.bbox.is_some_and(|[west, south, east, north]| {
                    location.min_lon >= west
                        && location.min_lat >= south
                        && location.max_lon <= east
                        && location.max_lat <= north
                });
                if !inside {
                    let [west, south, east, north] = known.bbox.unwrap_or([
                        location.min_lon,
                        location.min_lat,
                        location.max_lon,
                        location.max_lat,
                    ]);
                    known.bbox = Some([
                        west.min(location.min_lon),
                        south.min(location.min_lat),
                        east.max(location.max_lon),
                        north.max(location.max_lat),
                    ]);
                    grown = true;
                }
            }
            if let Some(observed) = record.first_observed
                && known.first_observed.is_none_or(|known| observed < known)
            {
                known.first_observed = Some(observed);
                grown = true;
            }
            for entity_type in &record.types {
                if !known.types.contains_key(entity_type.as_str()) {
                    known.types.insert(entity_type.clone(), HashSet::new());
                }
                let Some(names) = known.types.get_mut(entity_type.as_str()) else {
                    continue;
                };
                if record.attributes.is_empty() {
                    new |= names.insert(String::new());
                }
                for attribute in &record.attributes {
                    if !names.contains(attribute.as_str()) {
                        names.insert(attribute.clone());
                        new = true;
                    }
                }
            }
        }
        if new || grown {
            self.changed();
        }
        if new {
            self.news.notify_one();
        }
    }

    /// Takes what `held` says of `tenant` as known.
    fn learn(&self, tenant: &str, held: &Held) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let known = known.entry(tenant.to_owned()).or_default();
        known.bbox = held.extent.bbox;
        known.first_observed = held.extent.first_observed;
        for (entity_type, names) in &held.types {
            let known_names = known.types.entry(entity_type.clone()).or_default();
            if names.bare {
                known_names.insert(String::new());
            }
            known_names.extend(names.properties.iter().cloned());
            known_names.extend(names.relationships.iter().cloned());
        }
    }
}

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
    let shapes = Arc::clone(&state.entities.shapes);
    shapes.watched.store(true, Ordering::Relaxed);
    // Held weakly: a stopped connector is let go, and the task ends.
    let weak = Arc::downgrade(&state.into_inner());
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        // What the broker has per tenant: absent before the first success.
        let mut registered: HashMap<String, Held> = HashMap::new();
        let mut kinds = Kinds::default();
        // The dirty count when every tenant was last found registered as held.
        let mut current_at: Option<u64> = None;
        let mut last_full = Instant::now();
        loop {
            let Some(state) = weak.upgrade() else {
                return;
            };
            let started = Instant::now();
            // Read before the store, so that a write committed during this pass is looked at
            // again in the next one.
            let dirty = shapes.dirty.load(Ordering::Acquire);
            // A registration the broker lost (deleted, or a broker started afresh) is made
            // again, even if nothing changed here.
            for tenant in &tenants {
                if registered
                    .get(tenant)
                    .is_some_and(|held| !held.types.is_empty())
                    && !present(&client, &target, tenant, &id).await
                {
                    tracing::info!(
                        broker = target.broker,
                        tenant,
                        "the broker lost the registration"
                    );
                    registered.remove(tenant);
                }
            }
            let unchanged = current_at == Some(dirty)
                && registered.len() == tenants.len()
                && last_full.elapsed() < target.refresh * FULL_EVERY;
            if !unchanged {
                last_full = Instant::now();
            }
            let mut complete = true;
            for tenant in tenants.iter().filter(|_| !unchanged) {
                match held(&state, tenant, &mut kinds).await {
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
                                shapes.learn(tenant, &held);
                                registered.insert(tenant.clone(), held);
                            }
                            Err(error) => {
                                complete = false;
                                tracing::warn!(
                                    broker = target.broker,
                                    tenant,
                                    "cannot register at the broker: {error}"
                                );
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        complete = false;
                        tracing::warn!(tenant, "cannot list the entity types held: {error}");
                    }
                }
            }
            drop(state);
            let all = registered.len() == tenants.len();
            current_at = (all && complete).then_some(dirty);
            sender.send_replace(all);
            let wait = if all && complete {
                target.refresh
            } else {
                target.refresh.min(Duration::from_secs(1))
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shapes.news.notified() => {
                    tokio::time::sleep_until((started + NEWS_SPACING).into()).await;
                }
            }
        }
    });
    receiver
}

/// The attribute names one entity type's entities have, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
struct Names {
    properties: BTreeSet<String>,
    relationships: BTreeSet<String>,
    /// Some entity of the type has no attribute at all.
    bare: bool,
}

/// Whether an attribute (of one tenant and entity type) is a Relationship, as last sampled; an
/// attribute keeps its kind as long as it exists.
#[derive(Debug, Default)]
struct Kinds(HashMap<(String, String, String), bool>);

/// What a tenant holds, as registered.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    /// Entity types, in order, with their attributes.
    types: BTreeMap<String, Names>,
    extent: civitas_store::Extent,
}

/// What `tenant` holds now. An attribute's kind is read from one entity that has it, the first
/// time it is seen (an attribute name is, in practice, a Property or a Relationship throughout a
/// type).
async fn held(
    state: &AppState,
    tenant: &str,
    kinds: &mut Kinds,
) -> Result<Held, civitas_store::Error> {
    let store = &state.entities.store;
    let shapes = store.type_shapes(tenant).await?;
    let mut types: BTreeMap<String, Names> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (entity_type, attribute) in shapes {
        let names = types.entry(entity_type.clone()).or_default();
        if attribute.is_empty() {
            names.bare = true;
            continue;
        }
        let key = (tenant.to_owned(), entity_type, attribute);
        let relationship = match kinds.0.get(&key) {
            Some(&known) => known,
            None => {
                let sampled = is_relationship(store, tenant, &key.1, &key.2).await?;
                kinds.0.insert(key.clone(), sampled);
                sampled
            }
        };
        let attribute = key.2.clone();
        if relationship {
            names.relationships.insert(attribute);
        } else {
            names.properties.insert(attribute);
        }
        seen.insert(key);
    }
    // Forget the kinds of what is gone, so that a name that comes back is read again.
    kinds
        .0
        .retain(|key, _| key.0 != tenant || seen.contains(key));
    let extent = store.extent(tenant).await?;
    Ok(Held { types, extent })
}

/// Whether `attribute` of an entity of `entity_type` in `tenant` is a Relationship (or a
/// ListRelationship); `false` when no such entity is left or its record does not decode.
async fn is_relationship(
    store: &civitas_store::Store,
    tenant: &str,
    entity_type: &str,
    attribute: &str,
) -> Result<bool, civitas_store::Error> {
    let query = EntityQuery {
        types: vec![entity_type.to_owned()],
        attributes: vec![attribute.to_owned()],
        limit: 1,
        ..EntityQuery::default()
    };
    let page = store.query(tenant, &query).await?;
    let Some(record) = page.records.first() else {
        return Ok(false);
    };
    let entity = match civitas_ngsild::canonical::decode_stored(&record.body) {
        Ok(entity) => entity,
        Err(error) => {
            tracing::warn!(
                tenant,
                id = record.id,
                "a stored entity does not decode: {error}"
            );
            return Ok(false);
        }
    };
    Ok(entity
        .attributes
        .get(attribute)
        .and_then(|instances| instances.first())
        .is_some_and(|instance| {
            matches!(
                instance.value.type_name(),
                "Relationship" | "ListRelationship"
            )
        }))
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

/// The registration's URL at the broker.
fn registration_url(target: &Target, id: &str) -> String {
    format!(
        "{}/ngsi-ld/v1/csourceRegistrations/{}",
        target.broker.trim_end_matches('/'),
        crate::routes::path_segment(id)
    )
}

/// `request` for `tenant` at the broker, with the token if there is one.
fn authorized(
    request: reqwest::RequestBuilder,
    target: &Target,
    tenant: &str,
) -> reqwest::RequestBuilder {
    let request = if tenant.is_empty() {
        request
    } else {
        request.header("NGSILD-Tenant", tenant)
    };
    match &target.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Whether the broker still has the registration: `false` only when it answers 404, so that a
/// broker that cannot be asked causes no churn.
async fn present(client: &reqwest::Client, target: &Target, tenant: &str, id: &str) -> bool {
    let request = authorized(client.get(registration_url(target, id)), target, tenant);
    !matches!(request.send().await, Ok(response) if response.status().as_u16() == 404)
}

/// Makes the broker's registration name what `held` says: an update of the one there, else a new
/// one; deleted when there is no type.
async fn update(
    client: &reqwest::Client,
    target: &Target,
    tenant: &str,
    id: &str,
    endpoint: &str,
    held: &Held,
) -> Result<(), String> {
    let types = &held.types;
    let url = registration_url(target, id);
    let with_token = |request| authorized(request, target, tenant);
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
    let information: Vec<Value> = types
        .iter()
        .map(|(entity_type, names)| {
            let mut info = json!({ "entities": [{ "type": entity_type }] });
            if !names.bare {
                if !names.properties.is_empty() {
                    info["propertyNames"] = json!(names.properties);
                }
                if !names.relationships.is_empty() {
                    info["relationshipNames"] = json!(names.relationships);
                }
            }
            info
        })
        .collect();
    // Null removes a member the registration no longer has (an update merges).
    let members = json!({
        "endpoint": endpoint,
        "information": information,
        "mode": "inclusive",
        "operations": ["retrieveOps"],
        "location": held.extent.bbox.map(geometry),
        "managementInterval": held.extent.first_created.map(|since| json!({
            "startAt": since.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        })),
        "observationInterval": held.extent.first_observed.map(|since| json!({
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

#[cfg(test)]
mod tests {
    use super::*;
    use civitas_store::BBox;

    fn at(seconds: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(seconds)
    }

    fn record(types: &[&str], attributes: &[&str], at: Option<(f64, f64)>) -> EntityRecord {
        let now = chrono::DateTime::UNIX_EPOCH;
        EntityRecord {
            id: "urn:ngsi-ld:V:1".to_owned(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            scopes: Vec::new(),
            attributes: attributes.iter().map(|a| (*a).to_owned()).collect(),
            created_at: now,
            modified_at: now,
            location: at.map(|(lon, lat)| BBox {
                min_lon: lon,
                min_lat: lat,
                max_lon: lon,
                max_lat: lat,
            }),
            first_observed: None,
            body: String::new(),
        }
    }

    #[test]
    fn only_writes_that_change_what_is_registered_mark_it_out_of_date() {
        let shapes = Shapes::default();
        let dirty = || shapes.dirty.load(Ordering::Acquire);
        shapes.note("", &[record(&["V"], &["speed"], Some((2.0, 48.0)))]);
        assert_eq!(dirty(), 0, "nothing is watched before the registrar starts");

        shapes.watched.store(true, Ordering::Relaxed);
        shapes.note("", &[record(&["V"], &["speed"], Some((2.0, 48.0)))]);
        assert_eq!(dirty(), 1, "a new type and attribute");
        shapes.note("", &[record(&["V"], &["speed"], Some((2.0, 48.0)))]);
        assert_eq!(dirty(), 1, "the same again");
        shapes.note("", &[record(&["V"], &["speed"], Some((3.0, 49.0)))]);
        assert_eq!(dirty(), 2, "a location outside the box");
        shapes.note("", &[record(&["V"], &["speed"], Some((2.5, 48.5)))]);
        assert_eq!(dirty(), 2, "a location inside it");
        shapes.note("", &[record(&["V"], &[], None)]);
        assert_eq!(dirty(), 3, "an entity without attributes");
        shapes.note("north", &[record(&["V"], &["speed"], None)]);
        assert_eq!(dirty(), 4, "tenants are apart");
        shapes.changed();
        assert_eq!(dirty(), 5, "a deletion");

        // What the registrar registered is known, its box included.
        let mut types = BTreeMap::new();
        types.insert(
            "V".to_owned(),
            Names {
                properties: ["speed".to_owned(), "colour".to_owned()].into(),
                ..Names::default()
            },
        );
        let held = Held {
            types,
            extent: civitas_store::Extent {
                bbox: Some([0.0, 40.0, 10.0, 50.0]),
                first_created: None,
                first_observed: Some(at(100)),
            },
        };
        shapes.learn("south", &held);
        shapes.note("south", &[record(&["V"], &["colour"], Some((5.0, 45.0)))]);
        assert_eq!(dirty(), 5);

        // An observation after the registered start changes nothing; one before it does.
        let observed = |seconds| EntityRecord {
            first_observed: Some(at(seconds)),
            ..record(&["V"], &["colour"], Some((5.0, 45.0)))
        };
        shapes.note("south", &[observed(150)]);
        assert_eq!(dirty(), 5, "a later observation");
        shapes.note("south", &[observed(50)]);
        assert_eq!(dirty(), 6, "an earlier observation");
        shapes.note("south", &[observed(70)]);
        assert_eq!(dirty(), 6, "later than the earliest now known");
    }
}
