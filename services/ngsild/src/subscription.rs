//! Context source registration subscriptions (ETSI GS CIM 009, clauses 5.2.12 and 5.11): a client
//! asks to be told when context source registrations matching its selection appear, change or stop
//! matching.
//!
//! Like a registration, a subscription travels in three shapes: the **payload** a client sends,
//! the **canonical form** that is stored (entity types and attribute names expanded, `@context` and
//! the members the server maintains removed), and the typed [`Subscription`] that registrations are
//! matched against. [`render`] compacts the canonical form for a caller and adds the members the
//! server maintains (`status`, the notification's counters).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::Error;
use crate::canonical::format_timestamp;
use crate::context::ActiveContext;
use crate::geoquery::GeoQuery;
use crate::names::{is_absolute_uri, is_valid_name};
use crate::registration::{
    EntityInfo, GEO_PROPERTIES, Registration, RegistrationInfo, TemporalQuery, decode_entity_info,
    expand_entity_info, key_value_pairs, key_values, replace_members, timestamp,
};

/// The subscription's `type`, the only one allowed.
pub const TYPE: &str = "Subscription";
const TYPE_IRI: &str = "https://uri.etsi.org/ngsi-ld/Subscription";

/// The `type` of the notifications sent (clause 5.3.2).
pub const NOTIFICATION_TYPE: &str = "ContextSourceNotification";

/// Members the server maintains; a client's values for them are ignored.
const READ_ONLY: &[&str] = &["createdAt", "modifiedAt", "status"];

/// Members of `notification` the server maintains (clause 5.2.14).
const NOTIFICATION_READ_ONLY: &[&str] = &[
    "status",
    "timesSent",
    "timesFailed",
    "lastNotification",
    "lastFailure",
    "lastSuccess",
];

/// Members of the Subscription data type that select registrations by something this service
/// does not evaluate yet. A subscription naming one is refused rather than notified wrongly.
pub const UNEVALUATED: &[&str] = &["scopeQ", "lang"];

/// Media types a notification may be sent as (clause 5.2.15, `accept`).
const ACCEPT: &[&str] = &["application/json", "application/ld+json"];

/// Why a notification is sent (clause 5.3.2 / 5.11.7, `triggerReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The registration matches now and did not before (or the subscription is new or changed).
    NewlyMatching,
    /// The registration matched before and still does, and it changed.
    Updated,
    /// The registration matched before and no longer does (changed or deleted).
    NoLongerMatching,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::NewlyMatching => "newlyMatching",
            Trigger::Updated => "updated",
            Trigger::NoLongerMatching => "noLongerMatching",
        }
    }

    /// The reason to notify of a registration that matched (`before`) and matches (`after`), if
    /// any.
    pub fn of(before: bool, after: bool) -> Option<Trigger> {
        match (before, after) {
            (false, true) => Some(Trigger::NewlyMatching),
            (true, true) => Some(Trigger::Updated),
            (true, false) => Some(Trigger::NoLongerMatching),
            (false, false) => None,
        }
    }
}

/// A subscription decoded for matching and delivery.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    /// Empty: registrations of any entity.
    pub entities: Vec<EntityInfo>,
    /// Expanded names; empty: any attribute.
    pub watched_attributes: Vec<String>,
    /// Seconds between periodic notifications; `None`: notify on changes.
    pub time_interval: Option<f64>,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// Minimum seconds between two notifications.
    pub throttling: Option<f64>,
    pub endpoint: String,
    /// `application/json` or `application/ld+json`.
    pub accept: String,
    /// Headers sent with every notification (`receiverInfo`).
    pub receiver_info: Vec<(String, String)>,
    /// `temporalQ`: registrations whose interval it matches.
    pub temporal: Option<TemporalQuery>,
    /// `geoQ`: registrations whose GeoProperty (named second) stands in its relation.
    pub geo: Option<(GeoQuery, String)>,
}

/// The status a subscription is shown with (clause 5.2.12, `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Paused,
    Expired,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Expired => "expired",
        }
    }
}

impl Subscription {
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        if self.expires_at.is_some_and(|at| at <= now) {
            Status::Expired
        } else if !self.is_active {
            Status::Paused
        } else {
            Status::Active
        }
    }

    /// Every entity type the subscription names (expanded); empty: it names none, so it is about
    /// every type.
    pub fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .entities
            .iter()
            .flat_map(|entity| entity.types.iter().cloned())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// Whether `registration` is of interest (clause 5.11.7): one element of its `information`
    /// registers an entity the subscription selects and, when the subscription watches attributes,
    /// registers one of them (or every attribute).
    pub fn matches(&self, registration: &Registration) -> bool {
        registration
            .information
            .iter()
            .any(|info| self.matches_info(info))
            && self
                .temporal
                .as_ref()
                .is_none_or(|temporal| registration.matches_time(temporal))
            && self
                .geo
                .as_ref()
                .is_none_or(|(geo, property)| registration.matches_geo(geo, property))
    }
}

impl Subscription {
    /// Whether one element of a registration's `information` is of interest: it registers an
    /// entity the subscription selects and, when attributes are watched, one of them (or all).
    pub fn matches_info(&self, info: &RegistrationInfo) -> bool {
        let entities_ok = self.entities.is_empty()
            || info.entities.is_empty()
            || info.entities.iter().any(|registered| {
                self.entities
                    .iter()
                    .any(|wanted| entity_overlaps(wanted, registered))
            });
        let mut attributes = info.attributes().peekable();
        let attributes_ok = self.watched_attributes.is_empty()
            || attributes.peek().is_none()
            || attributes.any(|name| self.watched_attributes.iter().any(|w| w == name));
        entities_ok && attributes_ok
    }
}

/// Whether some entity could be selected by both `wanted` (the subscription's) and `registered`
/// (the registration's): a common type, and ids and patterns that do not exclude each other.
fn entity_overlaps(wanted: &EntityInfo, registered: &EntityInfo) -> bool {
    if !wanted.types.iter().any(|t| registered.types.contains(t)) {
        return false;
    }
    match (&wanted.id, &registered.id) {
        (Some(a), Some(b)) if a != b => return false,
        _ => {}
    }
    if let (Some(id), Some(pattern)) = (&wanted.id, &registered.id_pattern)
        && !pattern.is_match(id)
    {
        return false;
    }
    if let (Some(pattern), Some(id)) = (&wanted.id_pattern, &registered.id)
        && !pattern.is_match(id)
    {
        return false;
    }
    true
}

/// Validates a subscription payload and returns its canonical form. With `fragment`, the payload
/// is an update (clause 5.11.3): every member is optional, and `null` removes an optional one.
pub fn expand(
    payload: &Map<String, Value>,
    ctx: &ActiveContext,
    fragment: bool,
) -> Result<Map<String, Value>, Error> {
    let mut canonical = Map::new();
    for (name, value) in payload {
        if name == "@context" || READ_ONLY.contains(&name.as_str()) {
            continue;
        }
        if fragment && value.is_null() {
            if matches!(name.as_str(), "id" | "type" | "notification") {
                return Err(Error::bad(format!("{name} cannot be removed")));
            }
            canonical.insert(name.clone(), Value::Null);
            continue;
        }
        let value = match name.as_str() {
            "id" => Value::from(
                value
                    .as_str()
                    .filter(|id| is_absolute_uri(id))
                    .ok_or_else(|| Error::bad("the subscription id must be an absolute URI"))?,
            ),
            "type" => {
                let ok = value
                    .as_str()
                    .is_some_and(|t| t == TYPE || ctx.expand_name(t) == TYPE_IRI);
                if !ok {
                    return Err(Error::bad(format!("the subscription type must be {TYPE}")));
                }
                Value::from(TYPE)
            }
            "subscriptionName" | "description" => {
                if value.as_str().is_none_or(str::is_empty) {
                    return Err(Error::bad(format!("{name} must be a non-empty string")));
                }
                value.clone()
            }
            "entities" => {
                let items = value
                    .as_array()
                    .filter(|items| !items.is_empty())
                    .ok_or_else(|| Error::bad("entities must be a non-empty array"))?;
                Value::Array(
                    items
                        .iter()
                        .map(|item| expand_entity_info(item, ctx))
                        .collect::<Result<_, _>>()?,
                )
            }
            "watchedAttributes" => names(value, "watchedAttributes", ctx)?,
            "timeInterval" | "throttling" => {
                if !value.as_f64().is_some_and(|n| n > 0.0) {
                    return Err(Error::bad(format!("{name} must be a positive number")));
                }
                value.clone()
            }
            "isActive" => {
                if !value.is_boolean() {
                    return Err(Error::bad("isActive must be true or false"));
                }
                value.clone()
            }
            "expiresAt" => {
                timestamp(value, "expiresAt")?;
                value.clone()
            }
            "jsonldContext" => {
                if !value.as_str().is_some_and(is_absolute_uri) {
                    return Err(Error::bad("jsonldContext must be an absolute URI"));
                }
                value.clone()
            }
            // Replaced as a whole by an update, so always complete.
            "notification" => expand_notification(value, ctx)?,
            "temporalQ" => {
                temporal_query(value)?;
                value.clone()
            }
            "geoQ" => {
                geo_query(value)?;
                value.clone()
            }
            // Kept as given: read with the creator's @context when registrations are matched.
            "q" | "csf" => {
                if !value.is_string() {
                    return Err(Error::bad(format!("{name} must be a string")));
                }
                value.clone()
            }
            // Kept as given; the caller refuses them while they are not evaluated.
            unevaluated if UNEVALUATED.contains(&unevaluated) => value.clone(),
            other => {
                return Err(Error::bad(format!(
                    "{other} is not a member of a context source registration subscription"
                )));
            }
        };
        canonical.insert(name.clone(), value);
    }
    if !fragment {
        for required in ["type", "notification"] {
            if !canonical.contains_key(required) {
                return Err(Error::bad(format!("a subscription needs {required}")));
            }
        }
    }
    check(&canonical)?;
    Ok(canonical)
}

/// A `geoQ` member (clause 5.2.13), checked: the query and the GeoProperty it is about.
fn geo_query(value: &Value) -> Result<(GeoQuery, String), Error> {
    let query = value
        .as_object()
        .ok_or_else(|| Error::bad("geoQ must be an object"))?;
    if let Some(other) = query.keys().find(|k| {
        !matches!(
            k.as_str(),
            "georel" | "geometry" | "coordinates" | "geoproperty"
        )
    }) {
        return Err(Error::bad(format!("{other} is not a member of geoQ")));
    }
    let text = |name: &str| -> Result<&str, Error> {
        query
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad(format!("geoQ needs {name}, a string")))
    };
    let coordinates = match query.get("coordinates") {
        Some(Value::String(text)) => text.clone(),
        Some(array @ Value::Array(_)) => array.to_string(),
        _ => return Err(Error::bad("geoQ needs coordinates")),
    };
    let geo = GeoQuery::parse(text("georel")?, text("geometry")?, &coordinates)?;
    let property = match query.get("geoproperty") {
        None => "location".to_owned(),
        Some(Value::String(name)) if GEO_PROPERTIES.contains(&name.as_str()) => name.clone(),
        Some(other) => {
            return Err(Error::bad(format!(
                "geoQ.geoproperty must be one of {GEO_PROPERTIES:?} for registrations, not {other}"
            )));
        }
    };
    Ok((geo, property))
}

/// A `temporalQ` member (clause 5.2.21), checked.
fn temporal_query(value: &Value) -> Result<TemporalQuery, Error> {
    let query = value
        .as_object()
        .ok_or_else(|| Error::bad("temporalQ must be an object"))?;
    if let Some(other) = query.keys().find(|k| {
        !matches!(
            k.as_str(),
            "timerel" | "timeAt" | "endTimeAt" | "timeproperty"
        )
    }) {
        return Err(Error::bad(format!("{other} is not a member of temporalQ")));
    }
    let text = |name: &str| -> Result<Option<&str>, Error> {
        match query.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(Error::bad(format!("temporalQ.{name} must be a string"))),
        }
    };
    let timerel = text("timerel")?.ok_or_else(|| Error::bad("temporalQ needs timerel"))?;
    TemporalQuery::parse(
        timerel,
        text("timeAt")?,
        text("endTimeAt")?,
        text("timeproperty")?,
    )
}

/// Constraints between members, checked on a whole subscription and on a fragment alike.
fn check(canonical: &Map<String, Value>) -> Result<(), Error> {
    let present = |name: &str| canonical.get(name).is_some_and(|v| !v.is_null());
    if present("timeInterval") && present("watchedAttributes") {
        return Err(Error::bad(
            "timeInterval and watchedAttributes cannot be used together",
        ));
    }
    Ok(())
}

fn names(value: &Value, what: &str, ctx: &ActiveContext) -> Result<Value, Error> {
    let items = value
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| Error::bad(format!("{what} must be a non-empty array of names")))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let name = item
            .as_str()
            .filter(|name| is_valid_name(name))
            .ok_or_else(|| Error::bad(format!("{what} holds an invalid name: {item}")))?;
        out.push(Value::from(ctx.expand_name(name)));
    }
    Ok(Value::Array(out))
}

fn expand_notification(value: &Value, ctx: &ActiveContext) -> Result<Value, Error> {
    let notification = value
        .as_object()
        .ok_or_else(|| Error::bad("notification must be an object"))?;
    let mut out = Map::new();
    for (name, value) in notification {
        if NOTIFICATION_READ_ONLY.contains(&name.as_str()) {
            continue;
        }
        let value = match name.as_str() {
            "attributes" => names(value, "notification.attributes", ctx)?,
            "format" => {
                if !matches!(value.as_str(), Some("normalized" | "keyValues" | "concise")) {
                    return Err(Error::bad(
                        "notification.format must be normalized, keyValues or concise",
                    ));
                }
                value.clone()
            }
            "sysAttrs" | "showChanges" => {
                if !value.is_boolean() {
                    return Err(Error::bad(format!(
                        "notification.{name} must be true or false"
                    )));
                }
                value.clone()
            }
            "endpoint" => expand_endpoint(value)?,
            other => {
                return Err(Error::bad(format!(
                    "{other} is not a member of notification"
                )));
            }
        };
        out.insert(name.clone(), value);
    }
    if !out.contains_key("endpoint") {
        return Err(Error::bad("notification needs an endpoint"));
    }
    Ok(Value::Object(out))
}

fn expand_endpoint(value: &Value) -> Result<Value, Error> {
    let endpoint = value
        .as_object()
        .ok_or_else(|| Error::bad("notification.endpoint must be an object"))?;
    for (name, value) in endpoint {
        match name.as_str() {
            "uri" => {
                let uri = value
                    .as_str()
                    .ok_or_else(|| Error::bad("endpoint.uri must be a URI"))?;
                let parsed = url::Url::parse(uri)
                    .map_err(|_| Error::bad("endpoint.uri must be an absolute URI"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(Error::bad(
                        "endpoint.uri must be an http or https URI (MQTT notifications are not sent)",
                    ));
                }
            }
            "accept" => {
                if !value.as_str().is_some_and(|a| ACCEPT.contains(&a)) {
                    return Err(Error::bad(
                        "endpoint.accept must be application/json or application/ld+json",
                    ));
                }
            }
            "receiverInfo" | "notifierInfo" => {
                key_values(value, &format!("endpoint.{name}"))?;
            }
            other => {
                return Err(Error::bad(format!("{other} is not a member of endpoint")));
            }
        }
    }
    if !endpoint.contains_key("uri") {
        return Err(Error::bad("notification.endpoint needs a uri"));
    }
    Ok(value.clone())
}

/// Applies an update fragment (canonical) to a stored subscription (canonical): each member
/// replaces the stored one (`notification` included, so it must be complete) and `null` removes
/// it (clause 5.11.3).
pub fn merge(
    stored: &Map<String, Value>,
    fragment: &Map<String, Value>,
) -> Result<Map<String, Value>, Error> {
    let merged = replace_members(stored, fragment);
    check(&merged)?;
    Ok(merged)
}

/// Decodes a canonical subscription for matching and delivery.
pub fn decode(canonical: &Map<String, Value>) -> Result<Subscription, Error> {
    let corrupt = |what: &str| Error::CorruptRecord(format!("subscription: {what}"));
    let id = canonical
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| corrupt("no id"))?
        .to_owned();
    let entities = canonical
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(decode_entity_info)
        .collect::<Result<_, _>>()?;
    let watched_attributes = canonical
        .get("watchedAttributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    let expires_at = match canonical.get("expiresAt") {
        Some(value) => Some(timestamp(value, "expiresAt").map_err(|_| corrupt("expiresAt"))?),
        None => None,
    };
    let endpoint = canonical
        .get("notification")
        .and_then(|n| n.get("endpoint"))
        .ok_or_else(|| corrupt("no endpoint"))?;
    let receiver_info = key_value_pairs(endpoint.get("receiverInfo"));
    Ok(Subscription {
        id,
        entities,
        watched_attributes,
        time_interval: canonical.get("timeInterval").and_then(Value::as_f64),
        is_active: canonical
            .get("isActive")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        expires_at,
        throttling: canonical.get("throttling").and_then(Value::as_f64),
        endpoint: endpoint
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt("no endpoint uri"))?
            .to_owned(),
        accept: endpoint
            .get("accept")
            .and_then(Value::as_str)
            .unwrap_or("application/json")
            .to_owned(),
        receiver_info,
        temporal: canonical
            .get("temporalQ")
            .map(temporal_query)
            .transpose()
            .map_err(|_| corrupt("temporalQ"))?,
        geo: canonical
            .get("geoQ")
            .map(geo_query)
            .transpose()
            .map_err(|_| corrupt("geoQ"))?,
    })
}

/// What the server knows of a subscription's deliveries (clause 5.2.14).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub times_sent: u64,
    pub times_failed: u64,
    pub last_notification: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
}

/// The members the server adds to a rendering.
#[derive(Debug, Clone, Copy)]
pub struct Maintained {
    pub status: Status,
    pub delivery: Delivery,
    /// `createdAt` and `modifiedAt`, with `options=sysAttrs`.
    pub system: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Compacts a canonical subscription for a caller with context `ctx`, with the members the server
/// maintains.
pub fn render(
    canonical: &Map<String, Value>,
    ctx: &ActiveContext,
    maintained: Maintained,
) -> Map<String, Value> {
    let compact_all = |value: &Value| match value {
        Value::Array(names) => Value::Array(
            names
                .iter()
                .map(|name| match name.as_str() {
                    Some(name) => Value::from(ctx.compact_name(name).into_owned()),
                    None => name.clone(),
                })
                .collect(),
        ),
        Value::String(name) => Value::from(ctx.compact_name(name).into_owned()),
        other => other.clone(),
    };
    let mut out = Map::new();
    for (name, value) in canonical {
        let value = match (name.as_str(), value) {
            ("entities", Value::Array(entities)) => Value::Array(
                entities
                    .iter()
                    .map(|entity| {
                        let mut entity = entity.clone();
                        if let Some(types) = entity.get_mut("type") {
                            *types = compact_all(types);
                        }
                        entity
                    })
                    .collect(),
            ),
            ("watchedAttributes", names) => compact_all(names),
            ("notification", Value::Object(notification)) => {
                let mut notification = notification.clone();
                if let Some(attributes) = notification.get_mut("attributes") {
                    *attributes = compact_all(attributes);
                }
                let delivery = maintained.delivery;
                if delivery.times_sent > 0 {
                    notification.insert("timesSent".to_owned(), Value::from(delivery.times_sent));
                    let failed_last = delivery.last_failure.is_some()
                        && delivery.last_failure >= delivery.last_success;
                    notification.insert(
                        "status".to_owned(),
                        Value::from(if failed_last { "failed" } else { "ok" }),
                    );
                }
                if delivery.times_failed > 0 {
                    notification
                        .insert("timesFailed".to_owned(), Value::from(delivery.times_failed));
                }
                for (member, at) in [
                    ("lastNotification", delivery.last_notification),
                    ("lastSuccess", delivery.last_success),
                    ("lastFailure", delivery.last_failure),
                ] {
                    if let Some(at) = at {
                        notification.insert(member.to_owned(), Value::from(format_timestamp(&at)));
                    }
                }
                Value::Object(notification)
            }
            _ => value.clone(),
        };
        out.insert(name.clone(), value);
    }
    out.insert("status".to_owned(), Value::from(maintained.status.name()));
    if let Some((created_at, modified_at)) = maintained.system {
        out.insert(
            "createdAt".to_owned(),
            Value::from(format_timestamp(&created_at)),
        );
        out.insert(
            "modifiedAt".to_owned(),
            Value::from(format_timestamp(&modified_at)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registration;

    fn ctx() -> ActiveContext {
        let mut loader = |_: &str| -> Result<std::sync::Arc<Value>, Error> { unreachable!() };
        ActiveContext::empty()
            .process(
                &json!({
                    "Building": "https://example.org/Building",
                    "Vehicle": "https://example.org/Vehicle",
                    "name": "https://example.org/name",
                    "height": "https://example.org/height",
                }),
                &mut loader,
            )
            .unwrap()
    }

    fn with_id(payload: Value) -> Map<String, Value> {
        let mut payload = payload.as_object().unwrap().clone();
        payload.insert("id".to_owned(), json!("urn:ngsi-ld:Subscription:1"));
        payload
    }

    fn subscription(payload: Value) -> Subscription {
        let canonical = expand(&with_id(payload), &ctx(), false).unwrap();
        decode(&canonical).unwrap()
    }

    fn registration(information: Value) -> Registration {
        let payload = json!({
            "type": "ContextSourceRegistration",
            "id": "urn:ngsi-ld:ContextSourceRegistration:1",
            "information": information,
            "endpoint": "http://127.0.0.1:1/",
        });
        let canonical = registration::expand(payload.as_object().unwrap(), &ctx(), false).unwrap();
        registration::decode(&canonical).unwrap()
    }

    fn endpoint() -> Value {
        json!({"endpoint": {"uri": "http://127.0.0.1:1/notify", "accept": "application/json"}})
    }

    #[test]
    fn matches_by_type_id_and_watched_attribute() {
        let by_type = subscription(json!({
            "type": "Subscription", "entities": [{"type": "Building"}], "notification": endpoint(),
        }));
        let buildings = registration(json!([{"entities": [{"type": "Building"}]}]));
        let vehicles = registration(json!([{"entities": [{"type": "Vehicle"}]}]));
        assert!(by_type.matches(&buildings));
        assert!(!by_type.matches(&vehicles));

        let by_id = subscription(json!({
            "type": "Subscription",
            "entities": [{"type": "Building", "id": "urn:ngsi-ld:Building:a"}],
            "notification": endpoint(),
        }));
        let other = registration(
            json!([{"entities": [{"type": "Building", "id": "urn:ngsi-ld:Building:b"}]}]),
        );
        let pattern =
            registration(json!([{"entities": [{"type": "Building", "idPattern": ".*:a$"}]}]));
        assert!(!by_id.matches(&other));
        assert!(by_id.matches(&pattern));
        assert!(by_id.matches(&buildings));

        let watching = subscription(json!({
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "watchedAttributes": ["name"],
            "notification": endpoint(),
        }));
        let named =
            registration(json!([{"entities": [{"type": "Building"}], "propertyNames": ["name"]}]));
        let unnamed = registration(
            json!([{"entities": [{"type": "Building"}], "propertyNames": ["height"]}]),
        );
        assert!(watching.matches(&named));
        assert!(!watching.matches(&unnamed));
        assert!(
            watching.matches(&buildings),
            "a registration of every attribute matches"
        );
    }

    #[test]
    fn invalid_payloads_are_refused() {
        let bad = [
            json!({"type": "Subscription"}),
            json!({"type": "RandomType", "notification": endpoint()}),
            json!({"type": "Subscription", "watchedAttributes": [], "notification": endpoint()}),
            json!({"type": "Subscription", "notification": {"format": "keyValues"}}),
            json!({"type": "Subscription", "notification": {"endpoint": {"uri": "mqtt://h/t"}}}),
            json!({"type": "Subscription", "timeInterval": 10, "watchedAttributes": ["a"], "notification": endpoint()}),
            json!({"type": "Subscription", "entities": [{"id": "urn:a"}], "notification": endpoint()}),
            json!({"type": "Subscription", "isActive": "yes", "notification": endpoint()}),
            json!({"type": "Subscription", "surprise": 1, "notification": endpoint()}),
        ];
        for payload in bad {
            assert!(
                expand(payload.as_object().unwrap(), &ctx(), false).is_err(),
                "accepted {payload}"
            );
        }
    }

    #[test]
    fn merging_replaces_members_and_the_whole_notification() {
        let stored = expand(
            &with_id(
                json!({"type": "Subscription", "entities": [{"type": "Building"}], "notification": {
                "format": "keyValues", "endpoint": {"uri": "http://127.0.0.1:1/a"}}}),
            ),
            &ctx(),
            false,
        )
        .unwrap();
        let partial = json!({"notification": {"format": "normalized"}});
        assert!(expand(partial.as_object().unwrap(), &ctx(), true).is_err());
        let fragment = expand(
            json!({"isActive": false, "notification": {
                "format": "normalized", "endpoint": {"uri": "http://127.0.0.1:1/b"}}})
            .as_object()
            .unwrap(),
            &ctx(),
            true,
        )
        .unwrap();
        let merged = merge(&stored, &fragment).unwrap();
        let decoded = decode(&merged).unwrap();
        assert!(!decoded.is_active);
        assert_eq!(decoded.endpoint, "http://127.0.0.1:1/b");
        assert_eq!(merged["notification"]["format"], "normalized");
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(decoded.status(now), Status::Paused);
    }

    #[test]
    fn rendering_compacts_names_and_adds_status_and_counters() {
        let canonical = expand(
            &with_id(json!({"type": "Subscription", "watchedAttributes": ["name"], "notification": endpoint()})),
            &ctx(),
            false,
        )
        .unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let out = render(
            &canonical,
            &ctx(),
            Maintained {
                status: Status::Active,
                delivery: Delivery {
                    times_sent: 2,
                    times_failed: 1,
                    last_notification: Some(at),
                    last_success: Some(at),
                    last_failure: None,
                },
                system: None,
            },
        );
        assert_eq!(
            canonical["watchedAttributes"],
            json!(["https://example.org/name"])
        );
        assert_eq!(out["watchedAttributes"], json!(["name"]));
        assert_eq!(out["status"], "active");
        assert_eq!(out["notification"]["timesSent"], 2);
        assert_eq!(out["notification"]["status"], "ok");
        assert_eq!(
            out["notification"]["lastSuccess"],
            "2026-01-01T00:00:00.000000Z"
        );
    }
}
