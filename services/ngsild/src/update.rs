//! The write operations of ETSI GS CIM 009 clause 5.6 as pure functions on the model: append,
//! update, partial update, replace, merge and delete of attributes, with system timestamps.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::Error;
use crate::canonical::{Trust, decode_instances, encode_instance};
use crate::entity::well_known::NGSI_LD_NULL;
use crate::entity::{Attribute, Attributes, Entity};

/// Members of a canonical instance that carry its value; a partial instance bringing a new `type`
/// replaces all of them.
const VALUE_MEMBERS: &[&str] = &[
    "value",
    "object",
    "objectType",
    "languageMap",
    "vocab",
    "json",
    "valueList",
    "objectList",
];

/// Why an attribute was not updated (clause 5.2.18 `NotUpdatedDetails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUpdated {
    /// Expanded attribute name.
    pub name: String,
    pub reason: String,
}

/// The outcome of an append or update (clause 5.2.18 `UpdateResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// Expanded names of the attributes written.
    pub updated: Vec<String>,
    pub not_updated: Vec<NotUpdated>,
}

impl UpdateReport {
    pub fn is_complete(&self) -> bool {
        self.not_updated.is_empty()
    }
}

fn stamp_new(attribute: &mut Attribute, now: DateTime<Utc>) {
    attribute.created_at = Some(now);
    attribute.modified_at = Some(now);
}

/// Stamps a new entity and all its attributes with `now`.
pub fn stamp_created(entity: &mut Entity, now: DateTime<Utc>) {
    entity.created_at = Some(now);
    entity.modified_at = Some(now);
    for instance in entity.attributes.values_mut().flatten() {
        stamp_new(instance, now);
    }
}

/// Replaces the whole content of `old` by `new` (clause 5.6.18 replace entity), keeping the entity's
/// creation time and the creation time of attribute instances that survive.
pub fn replace_entity(old: &Entity, mut new: Entity, now: DateTime<Utc>) -> Entity {
    new.created_at = old.created_at.or(Some(now));
    new.modified_at = Some(now);
    for (name, instances) in &mut new.attributes {
        for instance in instances {
            let created = old
                .instance(name, instance.dataset_id.as_deref())
                .and_then(|i| i.created_at);
            instance.created_at = created.or(Some(now));
            instance.modified_at = Some(now);
        }
    }
    new
}

/// Writes one instance into an entity: replaces the instance with the same dataset id, or adds it.
fn put_instance(entity: &mut Entity, name: &str, mut instance: Attribute, now: DateTime<Utc>) {
    let instances = entity.attributes.entry(name.to_owned()).or_default();
    match instances
        .iter_mut()
        .find(|i| i.dataset_id == instance.dataset_id)
    {
        Some(existing) => {
            instance.created_at = existing.created_at.or(Some(now));
            instance.modified_at = Some(now);
            *existing = instance;
        }
        None => {
            stamp_new(&mut instance, now);
            instances.push(instance);
        }
    }
}

/// Appends attributes (clause 5.6.3). With `overwrite` false (`options=noOverwrite`) existing
/// instances are left alone and reported as not updated.
pub fn append(
    entity: &mut Entity,
    attributes: Attributes,
    overwrite: bool,
    now: DateTime<Utc>,
) -> UpdateReport {
    let mut report = UpdateReport::default();
    for (name, instances) in attributes {
        let mut written = false;
        for instance in instances {
            if !overwrite
                && entity
                    .instance(&name, instance.dataset_id.as_deref())
                    .is_some()
            {
                report.not_updated.push(NotUpdated {
                    name: name.clone(),
                    reason: "the attribute exists and noOverwrite was requested".to_owned(),
                });
                continue;
            }
            put_instance(entity, &name, instance, now);
            written = true;
        }
        if written {
            report.updated.push(name);
        }
    }
    if !report.updated.is_empty() {
        entity.modified_at = Some(now);
    }
    report
}

/// Replaces an existing attribute (clause 5.6.19): the instances given replace those with the same
/// dataset id. Returns `false` when the entity does not have the attribute.
pub fn replace_attribute(
    entity: &mut Entity,
    name: &str,
    instances: Vec<Attribute>,
    now: DateTime<Utc>,
) -> bool {
    if !entity.attributes.contains_key(name) {
        return false;
    }
    for instance in instances {
        put_instance(entity, name, instance, now);
    }
    entity.modified_at = Some(now);
    true
}

/// Deletes an attribute (clause 5.6.5): all instances with `delete_all`, otherwise the instance with
/// the given dataset id (the default instance when `None`). Returns `false` when nothing matched.
pub fn delete_attribute(
    entity: &mut Entity,
    name: &str,
    dataset_id: Option<&str>,
    delete_all: bool,
    now: DateTime<Utc>,
) -> bool {
    let Some(instances) = entity.attributes.get_mut(name) else {
        return false;
    };
    let before = instances.len();
    if delete_all {
        instances.clear();
    } else {
        instances.retain(|i| i.dataset_id.as_deref() != dataset_id);
    }
    let deleted = instances.len() != before;
    if instances.is_empty() {
        entity.attributes.shift_remove(name);
    }
    if deleted {
        entity.modified_at = Some(now);
    }
    deleted
}

/// Whether a partial instance is the NGSI-LD Null (clause 4.8, `urn:ngsi-ld:null` as its value,
/// object, vocab, json or `@none` language): in merge and update operations it deletes the instance.
pub fn is_null_instance(partial: &Map<String, Value>) -> bool {
    let is_null = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s == NGSI_LD_NULL,
        Some(Value::Array(items)) => items.len() == 1 && items[0].as_str() == Some(NGSI_LD_NULL),
        _ => false,
    };
    [
        "value",
        "object",
        "vocab",
        "json",
        "valueList",
        "objectList",
    ]
    .iter()
    .any(|m| is_null(partial.get(*m)))
        || is_null(partial.get("languageMap").and_then(|m| m.get("@none")))
}

/// Merges a partial instance (canonical, possibly without a value; `null` members delete) into an
/// existing instance, and validates the result. Without `allow_type_change`, a partial instance of
/// another attribute type is refused (clause 5.6.4).
pub fn merge_instance(
    existing: &Attribute,
    partial: &Map<String, Value>,
    allow_type_change: bool,
    now: DateTime<Utc>,
) -> Result<Attribute, Error> {
    if let Some(new_type) = partial.get("type").and_then(Value::as_str)
        && !allow_type_change
        && new_type != existing.value.type_name()
    {
        return Err(Error::bad(format!(
            "the attribute is a {}; a partial update cannot make it a {new_type}",
            existing.value.type_name()
        )));
    }
    let mut merged = encode_instance(existing);
    // A fragment that brings a value replaces the old value members (and may change the type); one
    // that only restates the type or adds metadata keeps the value.
    if VALUE_MEMBERS
        .iter()
        .any(|member| partial.contains_key(*member))
    {
        for member in VALUE_MEMBERS {
            merged.remove(*member);
        }
    }
    for (key, value) in partial {
        if value.is_null() {
            merged.remove(key);
        } else {
            merged.insert(key.clone(), value.clone());
        }
    }
    let mut instances = decode_instances(&Value::Object(merged), Trust::Stored)?;
    let mut instance = instances
        .pop()
        .ok_or_else(|| Error::bad("empty attribute"))?;
    instance.created_at = existing.created_at.or(Some(now));
    instance.modified_at = Some(now);
    Ok(instance)
}

/// Partially updates one attribute (clause 5.6.4): each partial instance is merged into the
/// instance with the same dataset id, or deletes it when it is the NGSI-LD Null. Returns `Ok(false)`
/// when that instance does not exist.
pub fn partial_update_attribute(
    entity: &mut Entity,
    name: &str,
    partial_instances: &Value,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let partials = instances_of(partial_instances)?;
    for partial in &partials {
        if partial.is_empty() {
            return Err(Error::bad("the attribute fragment is empty"));
        }
        let dataset_id = partial.get("datasetId").and_then(Value::as_str);
        let Some(existing) = entity.instance(name, dataset_id) else {
            return Ok(false);
        };
        if is_null_instance(partial) {
            delete_attribute(entity, name, dataset_id, false, now);
            continue;
        }
        let merged = merge_instance(existing, partial, false, now)?;
        put_instance(entity, name, merged, now);
    }
    entity.modified_at = Some(now);
    Ok(true)
}

fn instances_of(value: &Value) -> Result<Vec<&Map<String, Value>>, Error> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_object()
                    .ok_or_else(|| Error::bad("attribute instances must be objects"))
            })
            .collect(),
        Value::Object(o) => Ok(vec![o]),
        _ => Err(Error::bad("an attribute must be an object")),
    }
}

/// Adds entity types (expanded IRIs) the entity does not have yet, keeping their order.
pub fn add_types<'a>(entity: &mut Entity, types: impl IntoIterator<Item = &'a str>) {
    for t in types {
        if !entity.types.iter().any(|existing| existing == t) {
            entity.types.push(t.to_owned());
        }
    }
}

/// The type names of a canonical `type` member.
fn type_names(types: &Value) -> impl Iterator<Item = &str> {
    types
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Merges a partial canonical entity fragment into an entity (clause 5.6.17 merge entity, PATCH on
/// the entity): new attributes are added, existing instances merged, `null` or the NGSI-LD Null
/// deletes, types are added, scopes replaced.
pub fn merge_entity(
    entity: &mut Entity,
    fragment: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for (key, value) in fragment {
        match key.as_str() {
            "id" => {
                if value.as_str() != Some(entity.id.as_str()) {
                    return Err(Error::bad("the fragment's id differs from the entity's"));
                }
            }
            "type" => add_types(entity, type_names(value)),
            "scope" if value.is_null() => entity.scopes.clear(),
            "scope" => entity.scopes = crate::canonical::decode_scopes(value)?,
            name => {
                if value.is_null() {
                    entity.attributes.shift_remove(name);
                    continue;
                }
                for partial in instances_of(value)? {
                    let dataset_id = partial.get("datasetId").and_then(Value::as_str);
                    if is_null_instance(partial) {
                        delete_attribute(entity, name, dataset_id, false, now);
                        continue;
                    }
                    let instance = match entity.instance(name, dataset_id) {
                        Some(existing) => merge_instance(existing, partial, true, now)?,
                        None => decode_new_instance(partial)?,
                    };
                    put_instance(entity, name, instance, now);
                }
            }
        }
    }
    entity.modified_at = Some(now);
    Ok(())
}

fn decode_new_instance(partial: &Map<String, Value>) -> Result<Attribute, Error> {
    decode_instances(&Value::Object(partial.clone()), Trust::Caller)?
        .pop()
        .ok_or_else(|| Error::bad("empty attribute"))
}

/// Update entity attributes (clause 5.6.2) from a partial canonical fragment: existing instances
/// are replaced, the NGSI-LD Null deletes, types are added, an existing scope is replaced; anything
/// the entity does not have is reported as not updated and left out.
pub fn update_attributes(
    entity: &mut Entity,
    fragment: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<UpdateReport, Error> {
    let mut report = UpdateReport::default();
    let not_present = |name: &str| NotUpdated {
        name: name.to_owned(),
        reason: "the entity has no such attribute".to_owned(),
    };
    // Validate every instance first, so that a bad one leaves the entity untouched.
    let mut changes: Vec<(&str, Option<&str>, Option<Attribute>)> = Vec::new();
    let mut new_types: Option<&Value> = None;
    let mut new_scopes: Option<Vec<String>> = None;
    for (key, value) in fragment {
        match key.as_str() {
            "id" => {}
            "type" => new_types = Some(value),
            "scope" => {
                if entity.scopes.is_empty() {
                    report.not_updated.push(not_present("scope"));
                } else if value.is_null() {
                    new_scopes = Some(Vec::new());
                } else {
                    new_scopes = Some(crate::canonical::decode_scopes(value)?);
                }
            }
            name if value.is_null() => changes.push((name, None, None)),
            name => {
                for partial in instances_of(value)? {
                    let dataset_id = partial.get("datasetId").and_then(Value::as_str);
                    let replacement = if is_null_instance(partial) {
                        None
                    } else {
                        Some(decode_new_instance(partial)?)
                    };
                    changes.push((name, dataset_id, replacement));
                }
            }
        }
    }
    let types_before = entity.types.len();
    if let Some(types) = new_types {
        add_types(entity, type_names(types));
    }
    let mut changed = entity.types.len() != types_before;
    if let Some(scopes) = new_scopes {
        entity.scopes = scopes;
        report.updated.push("scope".to_owned());
        changed = true;
    }
    for (name, dataset_id, replacement) in changes {
        let exists = match replacement {
            None if dataset_id.is_none() && fragment.get(name).is_some_and(Value::is_null) => {
                entity.attributes.shift_remove(name).is_some()
            }
            None => delete_attribute(entity, name, dataset_id, false, now),
            Some(instance) => {
                let exists = entity.instance(name, dataset_id).is_some();
                if exists {
                    put_instance(entity, name, instance, now);
                }
                exists
            }
        };
        if exists {
            if !report.updated.iter().any(|u| u == name) {
                report.updated.push(name.to_owned());
            }
        } else {
            report.not_updated.push(not_present(name));
        }
    }
    if changed || !report.updated.is_empty() {
        entity.modified_at = Some(now);
    }
    Ok(report)
}

/// Appends scopes (clause 5.6.3): replaces them, or with `noOverwrite` adds the new ones.
pub fn append_scopes(entity: &mut Entity, scopes: Vec<String>, overwrite: bool) {
    if overwrite {
        entity.scopes = scopes;
    } else {
        for scope in scopes {
            if !entity.scopes.contains(&scope) {
                entity.scopes.push(scope);
            }
        }
    }
}
