//! Context source registrations (ETSI GS CIM 009, clauses 5.2.9 and 5.2.10): what another NGSI-LD
//! system (a *context source*) holds, so that a broker can forward requests to it.
//!
//! A registration travels in three shapes:
//! * the **payload** a client sends, compacted against its @context;
//! * the **canonical form** that is stored: the same members, with entity types, property and
//!   relationship names and any member this module does not know expanded to IRIs, `@context`
//!   and the read-only members (`createdAt`, `status`, …) removed;
//! * the typed [`Registration`], decoded from the canonical form, that requests are matched
//!   against.
//!
//! [`render`] compacts the canonical form for a caller.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::{Map, Value};

use crate::Error;
use crate::canonical::format_timestamp;
use crate::context::ActiveContext;
use crate::geo;
use crate::names::{is_absolute_uri, is_valid_name, is_valid_scope};

/// The registration's `type`, the only one allowed.
pub const TYPE: &str = "ContextSourceRegistration";
const TYPE_IRI: &str = "https://uri.etsi.org/ngsi-ld/ContextSourceRegistration";

/// Members the server maintains; a client's values for them are ignored.
const READ_ONLY: &[&str] = &[
    "createdAt",
    "modifiedAt",
    "status",
    "timesSent",
    "timesFailed",
    "lastSuccess",
    "lastFailure",
];

/// Members with a meaning of their own; any other member is an additional property of the
/// registration, kept with its name expanded.
const KNOWN: &[&str] = &[
    "id",
    "type",
    "registrationName",
    "description",
    "information",
    "tenant",
    "observationInterval",
    "managementInterval",
    "location",
    "observationSpace",
    "operationSpace",
    "expiresAt",
    "endpoint",
    "contextSourceInfo",
    "scope",
    "mode",
    "operations",
    "refreshRate",
    "management",
];

/// How a context source's data relates to what the broker holds (clause 4.3.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The source holds some of the data; results are merged with the broker's own and others'.
    Inclusive,
    /// The source alone holds the registered attributes of the registered entities.
    Exclusive,
    /// The broker does not answer from its own data; requests go to the source.
    Redirect,
    /// The source is a fallback, used only for reads, never for writes.
    Auxiliary,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Inclusive => "inclusive",
            Mode::Exclusive => "exclusive",
            Mode::Redirect => "redirect",
            Mode::Auxiliary => "auxiliary",
        }
    }

    fn parse(name: &str) -> Option<Mode> {
        [
            Mode::Inclusive,
            Mode::Exclusive,
            Mode::Redirect,
            Mode::Auxiliary,
        ]
        .into_iter()
        .find(|mode| mode.name() == name)
    }
}

/// One element of a registration's `entities`: a type, optionally narrowed to an id or an id
/// pattern.
#[derive(Debug, Clone)]
pub struct EntityInfo {
    /// Expanded type IRIs; an entity of any of them matches.
    pub types: Vec<String>,
    pub id: Option<String>,
    pub id_pattern: Option<Regex>,
}

/// One element of a registration's `information`.
#[derive(Debug, Clone, Default)]
pub struct RegistrationInfo {
    /// Empty: entities of any type.
    pub entities: Vec<EntityInfo>,
    /// Expanded names; both empty: every attribute.
    pub property_names: Vec<String>,
    pub relationship_names: Vec<String>,
}

impl RegistrationInfo {
    /// Every attribute name this element registers; empty means all of them.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.property_names
            .iter()
            .chain(&self.relationship_names)
            .map(String::as_str)
    }

    fn all_attributes(&self) -> bool {
        self.property_names.is_empty() && self.relationship_names.is_empty()
    }
}

/// A registration decoded for matching.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: String,
    pub information: Vec<RegistrationInfo>,
    pub endpoint: String,
    pub mode: Mode,
    /// The operations the source supports (clause 4.3.6.3), as given: names and group names.
    pub operations: Vec<String>,
    /// The tenant at the source to forward to, if it differs from the broker's.
    pub tenant: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
    /// Pairs sent to the source as headers or query parameters (clause 5.2.9 `contextSourceInfo`).
    pub context_source_info: Vec<(String, String)>,
    /// When the source's data was observed (`observationInterval`): start and, if any, end.
    pub observation_interval: Option<Interval>,
    /// When the source's data was managed (`managementInterval`).
    pub management_interval: Option<Interval>,
    /// The registration's GeoProperties (`location`, `observationSpace`, `operationSpace`) that
    /// it has, by name.
    pub spaces: Vec<(String, Value)>,
}

/// What a registration claims of one entity (see [`Registration::claims`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Every attribute.
    All,
    /// These attributes (expanded names).
    Names(std::collections::BTreeSet<String>),
}

impl Claim {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Claim::All => true,
            Claim::Names(names) => names.contains(name),
        }
    }
}

/// The GeoProperties a registration can have (clause 5.2.9); a geo-query on registrations names
/// one of them (`geoproperty`, `location` when absent).
pub const GEO_PROPERTIES: &[&str] = &["location", "observationSpace", "operationSpace"];

/// A time interval of a registration (clause 5.2.11): from `start`, until `end` if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// How a temporal query relates to its time (clause 4.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRel {
    Before(DateTime<Utc>),
    After(DateTime<Utc>),
    /// From the first, inclusive, until the second, exclusive.
    Between(DateTime<Utc>, DateTime<Utc>),
}

/// A temporal query on registrations (clauses 5.10.2 and 5.2.21): against the observation
/// interval (`timeproperty` `observedAt`, the default) or the management interval (`createdAt`,
/// `modifiedAt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalQuery {
    pub rel: TimeRel,
    /// `true`: the management interval; `false`: the observation interval.
    pub management: bool,
}

impl TemporalQuery {
    /// Parses `timerel`, `timeAt`, `endTimeAt` and `timeproperty` as a query or a subscription's
    /// `temporalQ` gives them.
    pub fn parse(
        timerel: &str,
        time_at: Option<&str>,
        end_time_at: Option<&str>,
        timeproperty: Option<&str>,
    ) -> Result<TemporalQuery, Error> {
        let at = |value: Option<&str>, name: &str| -> Result<DateTime<Utc>, Error> {
            let value = value.ok_or_else(|| Error::bad(format!("timerel needs {name}")))?;
            timestamp(&Value::from(value), name)
        };
        let rel = match timerel {
            "before" => TimeRel::Before(at(time_at, "timeAt")?),
            "after" => TimeRel::After(at(time_at, "timeAt")?),
            "between" => {
                let start = at(time_at, "timeAt")?;
                let end = at(end_time_at, "endTimeAt")?;
                if end <= start {
                    return Err(Error::bad("endTimeAt must be after timeAt"));
                }
                TimeRel::Between(start, end)
            }
            other => {
                return Err(Error::bad(format!(
                    "timerel must be before, after or between, not {other:?}"
                )));
            }
        };
        let management = match timeproperty.unwrap_or("observedAt") {
            "observedAt" => false,
            "createdAt" | "modifiedAt" => true,
            other => {
                return Err(Error::bad(format!(
                    "timeproperty must be observedAt, createdAt or modifiedAt, not {other:?}"
                )));
            }
        };
        Ok(TemporalQuery { rel, management })
    }

    /// Whether `interval` has a moment the query asks about. A registration that states no
    /// interval may hold data of any time, so it matches.
    pub fn matches(&self, interval: Option<Interval>) -> bool {
        let Some(interval) = interval else {
            return true;
        };
        let ends_after = |t: DateTime<Utc>| interval.end.is_none_or(|end| end > t);
        match self.rel {
            TimeRel::Before(t) => interval.start < t,
            TimeRel::After(t) => ends_after(t),
            TimeRel::Between(from, until) => interval.start < until && ends_after(from),
        }
    }
}

/// What a request asks about, for matching registrations (clause 5.10.2 / 4.3.6.2): expanded
/// types and attribute names, entity ids and an id pattern. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct Selector<'a> {
    pub types: &'a [String],
    pub ids: &'a [String],
    pub id_pattern: Option<&'a str>,
    pub attributes: &'a [String],
}

impl Registration {
    /// Whether the registration can contribute to a request about `selector`: some element of
    /// `information` registers a matching entity and, unless it registers every attribute or the
    /// request names none, one of the attributes asked for.
    pub fn matches(&self, selector: &Selector<'_>) -> bool {
        self.information
            .iter()
            .any(|info| info_matches(info, selector))
    }

    /// Keeps only the elements of `information` that can contribute to a request about
    /// `selector`, so that what the registration says of other entity types does not narrow or
    /// widen what the source is asked for.
    pub fn restrict(&mut self, selector: &Selector<'_>) {
        self.information.retain(|info| info_matches(info, selector));
    }

    /// Whether the registration declares support for `operation` (clause 4.3.6.3, table
    /// 4.3.6.3-1), by its name or one of the groups that include it. Without `operations`, a
    /// registration supports the federation operations (`federationOps`).
    pub fn supports(&self, operation: &str) -> bool {
        let default = ["federationOps".to_owned()];
        let declared = if self.operations.is_empty() {
            &default[..]
        } else {
            &self.operations[..]
        };
        declared
            .iter()
            .any(|name| name == operation || group_contains(name, operation))
    }

    /// Which attributes of entity `id` (of `types`, when known: empty matches any type) the
    /// registration claims: `None` when no element of `information` registers the entity,
    /// `Some(Claim::All)` when one registers it with every attribute.
    pub fn claims(&self, id: &str, types: &[String]) -> Option<Claim> {
        let ids = [id.to_owned()];
        let selector = Selector {
            types,
            ids: &ids,
            id_pattern: None,
            attributes: &[],
        };
        let mut names = std::collections::BTreeSet::new();
        let mut found = false;
        for info in &self.information {
            if !info_matches(info, &selector) {
                continue;
            }
            if info.all_attributes() {
                return Some(Claim::All);
            }
            found = true;
            names.extend(info.attributes().map(str::to_owned));
        }
        found.then_some(Claim::Names(names))
    }

    /// Whether it expired by `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

fn info_matches(info: &RegistrationInfo, selector: &Selector<'_>) -> bool {
    let entity_ok = if info.entities.is_empty() {
        true
    } else {
        info.entities
            .iter()
            .any(|entity| entity_matches(entity, selector))
    };
    let attributes_ok = info.all_attributes()
        || selector.attributes.is_empty()
        || info
            .attributes()
            .any(|name| selector.attributes.iter().any(|asked| asked == name));
    entity_ok && attributes_ok
}

fn entity_matches(entity: &EntityInfo, selector: &Selector<'_>) -> bool {
    if !selector.types.is_empty()
        && !entity
            .types
            .iter()
            .any(|registered| selector.types.contains(registered))
    {
        return false;
    }
    if !selector.ids.is_empty() {
        let any = selector.ids.iter().any(|id| {
            entity.id.as_ref().is_none_or(|registered| registered == id)
                && entity
                    .id_pattern
                    .as_ref()
                    .is_none_or(|pattern| pattern.is_match(id))
        });
        if !any {
            return false;
        }
    } else if let (Some(id), Some(pattern)) = (&entity.id, selector.id_pattern) {
        // A registration for one entity matches a pattern only if the pattern matches its id;
        // two patterns are not compared (either could match what the other does).
        if Regex::new(pattern).is_ok_and(|pattern| !pattern.is_match(id)) {
            return false;
        }
    }
    true
}

/// The operation groups of clause 4.3.6.3 (table 4.3.6.3-2).
fn group_contains(group: &str, operation: &str) -> bool {
    const RETRIEVE: &[&str] = &[
        "retrieveEntity",
        "queryEntity",
        "retrieveEntityTypes",
        "retrieveEntityTypeDetails",
        "retrieveEntityTypeInfo",
        "retrieveAttrTypes",
        "retrieveAttrTypeDetails",
        "retrieveAttrTypeInfo",
        "retrieveTemporal",
        "queryTemporal",
        "queryBatch",
    ];
    const UPDATE: &[&str] = &[
        "updateEntity",
        "updateAttrs",
        "replaceEntity",
        "replaceAttrs",
    ];
    const FEDERATION_EXTRA: &[&str] = &[
        "createSubscription",
        "updateSubscription",
        "retrieveSubscription",
        "querySubscription",
        "deleteSubscription",
    ];
    const REDIRECTION: &[&str] = &[
        "createEntity",
        "updateEntity",
        "appendAttrs",
        "updateAttrs",
        "deleteAttrs",
        "deleteEntity",
        "mergeEntity",
        "replaceEntity",
        "replaceAttrs",
        "createBatch",
        "upsertBatch",
        "updateBatch",
        "deleteBatch",
        "mergeBatch",
        "retrieveEntity",
        "queryEntity",
        "retrieveEntityTypes",
        "retrieveEntityTypeDetails",
        "retrieveEntityTypeInfo",
        "retrieveAttrTypes",
        "retrieveAttrTypeDetails",
        "retrieveAttrTypeInfo",
        "createSubscription",
        "updateSubscription",
        "retrieveSubscription",
        "querySubscription",
        "deleteSubscription",
    ];
    match group {
        "retrieveOps" => RETRIEVE[..4].contains(&operation) || operation == "queryBatch",
        "updateOps" => UPDATE.contains(&operation),
        "federationOps" => RETRIEVE.contains(&operation) || FEDERATION_EXTRA.contains(&operation),
        "redirectionOps" => REDIRECTION.contains(&operation),
        _ => false,
    }
}

/// Validates a registration payload and returns its canonical form. `ctx` expands the names
/// (the payload's own `@context` has been processed into it by the caller). With `fragment`,
/// the payload is an update (clause 5.9.3): every member is optional, `type` included.
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
            // Null removes an optional member (clause 5.9.3: e.g. `expiresAt: null`, never expire).
            if matches!(name.as_str(), "id" | "type" | "information" | "endpoint") {
                return Err(Error::bad(format!("{name} cannot be removed")));
            }
            let key = match name.as_str() {
                known if KNOWN.contains(&known) => known.to_owned(),
                other => ctx.expand_name(other),
            };
            canonical.insert(key, Value::Null);
            continue;
        }
        let value = match name.as_str() {
            "id" => {
                let id = value
                    .as_str()
                    .filter(|id| is_absolute_uri(id))
                    .ok_or_else(|| Error::bad("the registration id must be an absolute URI"))?;
                // In an update the id may be repeated; the caller checks it is the same.
                Value::from(id)
            }
            "type" => {
                let ok = value
                    .as_str()
                    .is_some_and(|t| t == TYPE || ctx.expand_name(t) == TYPE_IRI);
                if !ok {
                    return Err(Error::bad(format!("the registration type must be {TYPE}")));
                }
                Value::from(TYPE)
            }
            "information" => expand_information(value, ctx)?,
            "endpoint" => {
                let endpoint = value
                    .as_str()
                    .filter(|e| is_absolute_uri(e))
                    .ok_or_else(|| Error::bad("endpoint must be an absolute URI"))?;
                Value::from(endpoint)
            }
            "mode" => {
                let mode = value.as_str().and_then(Mode::parse).ok_or_else(|| {
                    Error::bad("mode must be inclusive, exclusive, redirect or auxiliary")
                })?;
                Value::from(mode.name())
            }
            "operations" => strings(value, "operations", |_| true)?,
            "registrationName" | "description" | "tenant" | "refreshRate" => {
                if !value.is_string() || value.as_str() == Some("") {
                    return Err(Error::bad(format!("{name} must be a non-empty string")));
                }
                value.clone()
            }
            "expiresAt" => {
                timestamp(value, "expiresAt")?;
                value.clone()
            }
            "observationInterval" | "managementInterval" => time_interval(value, name)?,
            "location" | "observationSpace" | "operationSpace" => {
                geo::validate(value)?;
                value.clone()
            }
            "contextSourceInfo" => key_values(value, "contextSourceInfo")?,
            "scope" => {
                let scopes = match value {
                    Value::String(_) => Value::Array(vec![value.clone()]),
                    _ => value.clone(),
                };
                strings(&scopes, "scope", is_valid_scope)?
            }
            "management" => {
                if !value.is_object() {
                    return Err(Error::bad("management must be an object"));
                }
                value.clone()
            }
            _ => {
                if value.is_null() {
                    return Err(Error::bad(format!("{name} must not be null")));
                }
                canonical.insert(ctx.expand_name(name), value.clone());
                continue;
            }
        };
        canonical.insert(name.clone(), value);
    }
    if !fragment {
        for required in ["type", "information", "endpoint"] {
            if !canonical.contains_key(required) {
                return Err(Error::bad(format!("a registration needs {required}")));
            }
        }
    }
    if canonical.get("mode").and_then(Value::as_str) != Some("inclusive") {
        // Exclusive and redirect registrations name concrete data (clause 5.2.9, "mode").
        check_mode_constraints(&canonical)?;
    }
    Ok(canonical)
}

fn check_mode_constraints(canonical: &Map<String, Value>) -> Result<(), Error> {
    let Some(mode) = canonical.get("mode").and_then(Value::as_str) else {
        return Ok(());
    };
    if mode != "exclusive" {
        return Ok(());
    }
    for info in canonical
        .get("information")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let entities = info.get("entities").and_then(Value::as_array);
        let named = entities.is_some_and(|entities| {
            !entities.is_empty()
                && entities
                    .iter()
                    .all(|entity| entity.get("id").is_some() || entity.get("idPattern").is_some())
        });
        let attributes =
            info.get("propertyNames").is_some() || info.get("relationshipNames").is_some();
        if !named || !attributes {
            return Err(Error::bad(
                "an exclusive registration names entities by id or idPattern and the attributes it provides",
            ));
        }
    }
    Ok(())
}

fn expand_information(value: &Value, ctx: &ActiveContext) -> Result<Value, Error> {
    let items = value
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| Error::bad("information must be a non-empty array"))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let item = item
            .as_object()
            .ok_or_else(|| Error::bad("each element of information must be an object"))?;
        let mut info = Map::new();
        for (name, value) in item {
            let value = match name.as_str() {
                "entities" => {
                    let entities = value
                        .as_array()
                        .filter(|entities| !entities.is_empty())
                        .ok_or_else(|| Error::bad("entities must be a non-empty array"))?;
                    Value::Array(
                        entities
                            .iter()
                            .map(|entity| expand_entity_info(entity, ctx))
                            .collect::<Result<_, _>>()?,
                    )
                }
                "propertyNames" | "relationshipNames" => {
                    let names = value
                        .as_array()
                        .filter(|names| !names.is_empty())
                        .ok_or_else(|| Error::bad(format!("{name} must be a non-empty array")))?;
                    let mut expanded = Vec::with_capacity(names.len());
                    for attribute in names {
                        let attribute = attribute
                            .as_str()
                            .filter(|a| is_valid_name(a))
                            .ok_or_else(|| Error::bad(format!("invalid name in {name}")))?;
                        expanded.push(Value::from(ctx.expand_name(attribute)));
                    }
                    Value::Array(expanded)
                }
                _ => {
                    return Err(Error::bad(format!(
                        "unknown member {name} in a RegistrationInfo"
                    )));
                }
            };
            info.insert(name.clone(), value);
        }
        if info.is_empty() {
            return Err(Error::bad(
                "a RegistrationInfo needs entities, propertyNames or relationshipNames",
            ));
        }
        out.push(Value::Object(info));
    }
    Ok(Value::Array(out))
}

pub(crate) fn expand_entity_info(value: &Value, ctx: &ActiveContext) -> Result<Value, Error> {
    let entity = value
        .as_object()
        .ok_or_else(|| Error::bad("each element of entities must be an object"))?;
    let mut out = Map::new();
    for (name, value) in entity {
        let value = match name.as_str() {
            "id" => Value::from(
                value
                    .as_str()
                    .filter(|id| is_absolute_uri(id))
                    .ok_or_else(|| Error::bad("an EntityInfo id must be an absolute URI"))?,
            ),
            "idPattern" => {
                let pattern = value
                    .as_str()
                    .ok_or_else(|| Error::bad("idPattern must be a string"))?;
                Regex::new(pattern)
                    .map_err(|_| Error::bad("idPattern is not a valid regular expression"))?;
                Value::from(pattern)
            }
            "type" => {
                let types: Vec<&str> = match value {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) if !many.is_empty() => many
                        .iter()
                        .map(|t| {
                            t.as_str()
                                .ok_or_else(|| Error::bad("types must be strings"))
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(Error::bad("an EntityInfo type must be a name or names")),
                };
                let mut expanded = Vec::with_capacity(types.len());
                for name in types {
                    if !is_valid_name(name) {
                        return Err(Error::bad(format!("invalid entity type {name}")));
                    }
                    expanded.push(Value::from(ctx.expand_name(name)));
                }
                if expanded.len() == 1 {
                    expanded.pop().unwrap_or_default()
                } else {
                    Value::Array(expanded)
                }
            }
            _ => {
                return Err(Error::bad(format!(
                    "unknown member {name} in an EntityInfo"
                )));
            }
        };
        out.insert(name.clone(), value);
    }
    if !out.contains_key("type") {
        return Err(Error::bad("an EntityInfo needs a type"));
    }
    Ok(Value::Object(out))
}

pub(crate) fn strings(
    value: &Value,
    what: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<Value, Error> {
    let ok = value.as_array().is_some_and(|items| {
        !items.is_empty() && items.iter().all(|item| item.as_str().is_some_and(&valid))
    });
    if ok {
        Ok(value.clone())
    } else {
        Err(Error::bad(format!(
            "{what} must be a non-empty array of valid strings"
        )))
    }
}

pub(crate) fn timestamp(value: &Value, what: &str) -> Result<DateTime<Utc>, Error> {
    value
        .as_str()
        .and_then(crate::canonical::instant)
        .ok_or_else(|| Error::bad(format!("{what} must be a date-time with a time zone")))
}

fn time_interval(value: &Value, what: &str) -> Result<Value, Error> {
    let interval = value
        .as_object()
        .ok_or_else(|| Error::bad(format!("{what} must be an object")))?;
    let start = interval
        .get("startAt")
        .ok_or_else(|| Error::bad(format!("{what} needs startAt")))
        .and_then(|v| timestamp(v, "startAt"))?;
    if let Some(end) = interval.get("endAt")
        && timestamp(end, "endAt")? < start
    {
        return Err(Error::bad(format!("{what} ends before it starts")));
    }
    if interval.keys().any(|k| k != "startAt" && k != "endAt") {
        return Err(Error::bad(format!("{what} has only startAt and endAt")));
    }
    Ok(value.clone())
}

/// Checks a `KeyValuePair` array (`contextSourceInfo`, `receiverInfo`, …) named `what`.
pub(crate) fn key_values(value: &Value, what: &str) -> Result<Value, Error> {
    let ok = value.as_array().is_some_and(|pairs| {
        pairs.iter().all(|pair| {
            pair.as_object().is_some_and(|pair| {
                pair.len() == 2
                    && pair.get("key").is_some_and(Value::is_string)
                    && pair.get("value").is_some_and(Value::is_string)
            })
        })
    });
    if ok {
        Ok(value.clone())
    } else {
        Err(Error::bad(format!(
            "{what} must be an array of {{\"key\": …, \"value\": …}} strings"
        )))
    }
}

/// Applies an update fragment (canonical) to a stored registration (canonical): each member of
/// the fragment replaces the stored one (clause 5.9.3). The result is checked as a whole.
pub fn merge(
    stored: &Map<String, Value>,
    fragment: &Map<String, Value>,
) -> Result<Map<String, Value>, Error> {
    let merged = replace_members(stored, fragment);
    check_mode_constraints(&merged)?;
    Ok(merged)
}

/// `stored` with each member of `fragment` in place of its own, and the members `fragment` sets
/// to `null` removed: the update rule of registrations and subscriptions alike.
pub(crate) fn replace_members(
    stored: &Map<String, Value>,
    fragment: &Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = stored.clone();
    for (name, value) in fragment {
        if value.is_null() {
            merged.shift_remove(name);
        } else {
            merged.insert(name.clone(), value.clone());
        }
    }
    merged
}

/// Decodes one canonical `EntityInfo` (clause 5.2.8).
pub(crate) fn decode_entity_info(entity: &Value) -> Result<EntityInfo, Error> {
    let corrupt = |what: &str| Error::CorruptRecord(format!("EntityInfo: {what}"));
    let types = match entity.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => return Err(corrupt("type")),
    };
    let id_pattern = match entity.get("idPattern").and_then(Value::as_str) {
        Some(pattern) => Some(Regex::new(pattern).map_err(|_| corrupt("idPattern"))?),
        None => None,
    };
    Ok(EntityInfo {
        types,
        id: entity.get("id").and_then(Value::as_str).map(str::to_owned),
        id_pattern,
    })
}

/// Decodes a canonical registration (as stored, or just expanded) for matching.
pub fn decode(canonical: &Map<String, Value>) -> Result<Registration, Error> {
    let corrupt = |what: &str| Error::CorruptRecord(format!("registration: {what}"));
    let text = |name: &str| {
        canonical
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let id = text("id").ok_or_else(|| corrupt("no id"))?;
    let endpoint = text("endpoint").ok_or_else(|| corrupt("no endpoint"))?;
    let mode = text("mode")
        .map_or(Some(Mode::Inclusive), |mode| Mode::parse(&mode))
        .ok_or_else(|| corrupt("mode"))?;
    let mut information = Vec::new();
    for info in canonical
        .get("information")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let names = |member: &str| -> Vec<String> {
            info.get(member)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect()
        };
        let mut entities = Vec::new();
        for entity in info
            .get("entities")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            entities.push(decode_entity_info(entity).map_err(|_| corrupt("EntityInfo"))?);
        }
        information.push(RegistrationInfo {
            entities,
            property_names: names("propertyNames"),
            relationship_names: names("relationshipNames"),
        });
    }
    let list = |member: &str| -> Vec<String> {
        canonical
            .get(member)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect()
    };
    let context_source_info = key_value_pairs(canonical.get("contextSourceInfo"));
    Ok(Registration {
        id,
        information,
        endpoint,
        mode,
        operations: list("operations"),
        tenant: text("tenant"),
        expires_at: canonical
            .get("expiresAt")
            .map(|at| timestamp(at, "expiresAt"))
            .transpose()
            .map_err(|_| corrupt("expiresAt"))?,
        scopes: list("scope"),
        context_source_info,
        observation_interval: interval(canonical, "observationInterval")
            .map_err(|_| corrupt("observationInterval"))?,
        management_interval: interval(canonical, "managementInterval")
            .map_err(|_| corrupt("managementInterval"))?,
        spaces: GEO_PROPERTIES
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), canonical.get(*name)?.clone())))
            .collect(),
    })
}

/// The pairs of a `KeyValuePair` array (`contextSourceInfo`, `receiverInfo`), validated before.
pub(crate) fn key_value_pairs(value: Option<&Value>) -> Vec<(String, String)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            Some((
                pair.get("key")?.as_str()?.to_owned(),
                pair.get("value")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn interval(canonical: &Map<String, Value>, name: &str) -> Result<Option<Interval>, Error> {
    let Some(value) = canonical.get(name) else {
        return Ok(None);
    };
    let start = value
        .get("startAt")
        .ok_or_else(|| Error::bad("no startAt"))
        .and_then(|v| timestamp(v, "startAt"))?;
    let end = value
        .get("endAt")
        .map(|v| timestamp(v, "endAt"))
        .transpose()?;
    Ok(Some(Interval { start, end }))
}

impl Registration {
    /// Whether the registration's GeoProperty `property` stands in the geo-query's relation. A
    /// registration that does not state it may hold data of any place, so it matches.
    pub fn matches_geo(&self, query: &crate::geoquery::GeoQuery, property: &str) -> bool {
        self.spaces
            .iter()
            .find(|(name, _)| name == property)
            .is_none_or(|(_, value)| query.matches(value))
    }

    /// Whether the registration's interval matches a temporal query.
    pub fn matches_time(&self, query: &TemporalQuery) -> bool {
        query.matches(if query.management {
            self.management_interval
        } else {
            self.observation_interval
        })
    }
}

/// Every expanded entity type and attribute name a canonical registration names.
pub fn names(canonical: &Map<String, Value>) -> (HashSet<String>, HashSet<String>) {
    let mut types = HashSet::new();
    let mut attributes = HashSet::new();
    if let Ok(registration) = decode(canonical) {
        for info in &registration.information {
            for entity in &info.entities {
                types.extend(entity.types.iter().cloned());
            }
            attributes.extend(info.attributes().map(str::to_owned));
        }
    }
    (types, attributes)
}

/// System members added to a rendering.
#[derive(Debug, Clone, Copy)]
pub struct SystemMembers {
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
}

/// Compacts a canonical registration for a caller with context `ctx`; with `system`, adds
/// `createdAt` and `modifiedAt` (`options=sysAttrs`).
pub fn render(
    canonical: &Map<String, Value>,
    ctx: &ActiveContext,
    system: Option<SystemMembers>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in canonical {
        if name == "information" {
            out.insert(name.clone(), compact_information(value, ctx));
        } else if KNOWN.contains(&name.as_str()) {
            out.insert(name.clone(), value.clone());
        } else {
            out.insert(ctx.compact_name(name).into_owned(), value.clone());
        }
    }
    if let Some(system) = system {
        out.insert(
            "createdAt".to_owned(),
            Value::from(format_timestamp(&system.created_at)),
        );
        out.insert(
            "modifiedAt".to_owned(),
            Value::from(format_timestamp(&system.modified_at)),
        );
    }
    out
}

fn compact_information(value: &Value, ctx: &ActiveContext) -> Value {
    let compact = |name: &Value| match name.as_str() {
        Some(name) => Value::from(ctx.compact_name(name).into_owned()),
        None => name.clone(),
    };
    let Some(items) = value.as_array() else {
        return value.clone();
    };
    Value::Array(
        items
            .iter()
            .map(|info| {
                let Some(info) = info.as_object() else {
                    return info.clone();
                };
                let mut out = Map::new();
                for (name, value) in info {
                    let value = match (name.as_str(), value) {
                        ("entities", Value::Array(entities)) => Value::Array(
                            entities
                                .iter()
                                .map(|entity| {
                                    let mut entity = entity.clone();
                                    if let Some(types) = entity.get_mut("type") {
                                        *types = match &*types {
                                            Value::Array(many) => {
                                                Value::Array(many.iter().map(compact).collect())
                                            }
                                            one => compact(one),
                                        };
                                    }
                                    entity
                                })
                                .collect(),
                        ),
                        ("propertyNames" | "relationshipNames", Value::Array(names)) => {
                            Value::Array(names.iter().map(compact).collect())
                        }
                        _ => value.clone(),
                    };
                    out.insert(name.clone(), value);
                }
                Value::Object(out)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> ActiveContext {
        let mut loader = |_: &str| -> Result<std::sync::Arc<Value>, Error> { unreachable!() };
        ActiveContext::empty()
            .process(
                &json!({
                    "Car": "https://example.org/Car",
                    "speed": "https://example.org/speed",
                    "owner": "https://example.org/owner",
                    "dataProvider": "https://example.org/dataProvider"
                }),
                &mut loader,
            )
            .unwrap()
    }

    fn payload() -> Map<String, Value> {
        json!({
            "id": "urn:ngsi-ld:ContextSourceRegistration:1",
            "type": "ContextSourceRegistration",
            "information": [{
                "entities": [{"type": "Car", "idPattern": "^urn:ngsi-ld:Car:A"}],
                "propertyNames": ["speed"],
                "relationshipNames": ["owner"]
            }],
            "endpoint": "http://127.0.0.1:8086",
            "dataProvider": "city",
            "createdAt": "2020-01-01T00:00:00Z",
            "@context": "ignored here"
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn temporal_queries_match_the_observation_or_management_interval() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let interval = Some(Interval {
            start: at("2020-08-01T00:00:00Z"),
            end: Some(at("2021-08-01T00:00:00Z")),
        });
        let query = |rel: &str, t: &str, end: Option<&str>| {
            TemporalQuery::parse(rel, Some(t), end, None).unwrap()
        };
        assert!(query("before", "2021-01-01T00:00:00Z", None).matches(interval));
        assert!(!query("before", "2020-08-01T00:00:00Z", None).matches(interval));
        assert!(query("after", "2021-07-31T00:00:00Z", None).matches(interval));
        assert!(!query("after", "2021-08-01T00:00:00Z", None).matches(interval));
        assert!(
            query(
                "between",
                "2021-07-01T00:00:00Z",
                Some("2022-01-01T00:00:00Z")
            )
            .matches(interval)
        );
        assert!(
            !query(
                "between",
                "2019-01-01T00:00:00Z",
                Some("2020-08-01T00:00:00Z")
            )
            .matches(interval)
        );
        assert!(query("after", "2030-01-01T00:00:00Z", None).matches(None));
        for (rel, t, end, property) in [
            ("before", None, None, None),
            ("between", Some("2020-01-01T00:00:00Z"), None, None),
            (
                "between",
                Some("2020-01-01T00:00:00Z"),
                Some("2019-01-01T00:00:00Z"),
                None,
            ),
            ("around", Some("2020-01-01T00:00:00Z"), None, None),
            ("after", Some("yesterday"), None, None),
            (
                "after",
                Some("2020-01-01T00:00:00Z"),
                None,
                Some("deletedAt"),
            ),
        ] {
            assert!(
                TemporalQuery::parse(rel, t, end, property).is_err(),
                "{rel} {t:?}"
            );
        }
        assert!(
            TemporalQuery::parse(
                "after",
                Some("2020-01-01T00:00:00Z"),
                None,
                Some("createdAt")
            )
            .unwrap()
            .management
        );
    }

    #[test]
    fn names_are_expanded_and_compacted_back() {
        let canonical = expand(&payload(), &ctx(), false).unwrap();
        assert_eq!(
            canonical["information"][0]["entities"][0]["type"],
            "https://example.org/Car"
        );
        assert_eq!(
            canonical["information"][0]["propertyNames"],
            json!(["https://example.org/speed"])
        );
        assert_eq!(canonical["https://example.org/dataProvider"], "city");
        assert!(
            !canonical.contains_key("createdAt"),
            "read-only members are dropped"
        );
        assert!(!canonical.contains_key("@context"));
        let mut expected = payload();
        expected.remove("createdAt");
        expected.remove("@context");
        assert_eq!(render(&canonical, &ctx(), None), expected);
    }

    #[test]
    fn invalid_payloads_are_bad_request_data() {
        let cases: Vec<(&str, Value)> = vec![
            ("information", json!([])),
            ("information", json!([{}])),
            ("information", json!([{"entities": [{"id": "urn:a:b"}]}])),
            (
                "information",
                json!([{"entities": [{"type": "Car", "idPattern": "("}]}]),
            ),
            ("endpoint", json!("not a uri")),
            ("mode", json!("sometimes")),
            ("type", json!("Registration")),
            ("expiresAt", json!("tomorrow")),
            (
                "observationInterval",
                json!({"endAt": "2020-01-01T00:00:00Z"}),
            ),
            ("location", json!({"type": "Point", "coordinates": "here"})),
            ("contextSourceInfo", json!([{"key": "a"}])),
        ];
        for (member, value) in cases {
            let mut body = payload();
            body.insert(member.to_owned(), value.clone());
            let result = expand(&body, &ctx(), false);
            assert!(
                matches!(result, Err(Error::BadRequestData(_))),
                "{member} = {value}: {result:?}"
            );
        }
        let mut body = payload();
        body.remove("endpoint");
        assert!(expand(&body, &ctx(), false).is_err());
        assert!(
            expand(
                &json!({"mode": "redirect"}).as_object().unwrap().clone(),
                &ctx(),
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn exclusive_registrations_name_entities_and_attributes() {
        let mut body = payload();
        body.insert("mode".to_owned(), json!("exclusive"));
        body.insert(
            "information".to_owned(),
            json!([{"entities": [{"type": "Car"}], "propertyNames": ["speed"]}]),
        );
        assert!(
            expand(&body, &ctx(), false).is_err(),
            "a type is not enough"
        );
        body.insert(
            "information".to_owned(),
            json!([{"entities": [{"type": "Car", "idPattern": "^urn:ngsi-ld:Car:A"}]}]),
        );
        assert!(
            expand(&body, &ctx(), false).is_err(),
            "attributes are needed"
        );
        body.insert(
            "information".to_owned(),
            json!([{"entities": [{"type": "Car", "idPattern": "^urn:ngsi-ld:Car:A"}], "propertyNames": ["speed"]}]),
        );
        assert!(expand(&body, &ctx(), false).is_ok());
        body.insert(
            "information".to_owned(),
            json!([{"entities": [{"type": "Car", "id": "urn:ngsi-ld:Car:A1"}], "propertyNames": ["speed"]}]),
        );
        assert!(expand(&body, &ctx(), false).is_ok());
    }

    #[test]
    fn restricting_keeps_only_what_concerns_the_request() {
        let mut body = payload();
        body.insert(
            "information".to_owned(),
            json!([
                {"entities": [{"type": "Car"}], "propertyNames": ["speed"]},
                {"entities": [{"type": "https://example.org/Bus"}], "relationshipNames": ["owner"]},
                {"entities": [{"type": "https://example.org/Tram"}]}
            ]),
        );
        let registration = decode(&expand(&body, &ctx(), false).unwrap()).unwrap();
        let car = ["https://example.org/Car".to_owned()];
        let owner = ["https://example.org/owner".to_owned()];
        let names = |registration: &Registration| -> Vec<Vec<String>> {
            registration
                .information
                .iter()
                .map(|info| info.attributes().map(str::to_owned).collect())
                .collect()
        };
        let mut by_type = registration.clone();
        by_type.restrict(&Selector {
            types: &car,
            ..Selector::default()
        });
        assert_eq!(names(&by_type), [["https://example.org/speed"]]);
        let mut by_attribute = registration.clone();
        by_attribute.restrict(&Selector {
            attributes: &owner,
            ..Selector::default()
        });
        assert_eq!(
            names(&by_attribute),
            [vec!["https://example.org/owner".to_owned()], vec![]],
            "the Tram element registers every attribute"
        );
        let mut everything = registration.clone();
        everything.restrict(&Selector::default());
        assert_eq!(everything.information.len(), 3);
    }

    #[test]
    fn matching_by_type_id_and_attribute() {
        let registration = decode(&expand(&payload(), &ctx(), false).unwrap()).unwrap();
        let car = ["https://example.org/Car".to_owned()];
        let bus = ["https://example.org/Bus".to_owned()];
        let speed = ["https://example.org/speed".to_owned()];
        let colour = ["https://example.org/colour".to_owned()];
        let a1 = ["urn:ngsi-ld:Car:A1".to_owned()];
        let b1 = ["urn:ngsi-ld:Car:B1".to_owned()];
        let selector = |types, ids, attributes| Selector {
            types,
            ids,
            id_pattern: None,
            attributes,
        };
        assert!(registration.matches(&selector(&car, &[], &[])));
        assert!(!registration.matches(&selector(&bus, &[], &[])));
        assert!(registration.matches(&selector(&car, &a1, &speed)));
        assert!(
            !registration.matches(&selector(&car, &b1, &[])),
            "idPattern"
        );
        assert!(!registration.matches(&selector(&car, &[], &colour)));
        assert!(registration.matches(&selector(&[], &[], &[])));
        assert_eq!(registration.mode, Mode::Inclusive);
        assert!(registration.supports("queryEntity"));
        assert!(
            !registration.supports("createEntity"),
            "federationOps by default"
        );
    }
}
