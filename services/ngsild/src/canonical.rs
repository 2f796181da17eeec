//! The canonical form: the normalized representation with expanded names, every attribute an array
//! of instances. It is what [`crate::expand`] produces from requests, what the store keeps, and
//! the one place where the typed model is validated ([`decode_entity`], [`decode_instances`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::Error;
use crate::entity::{Attribute, AttributeValue, Attributes, Entity};
use crate::geo;
use crate::names::{EntityId, is_absolute_uri, is_valid_scope};

/// Whether system attributes (`createdAt`, `modifiedAt`) in the input are believed: true only for
/// records read back from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Caller,
    Stored,
}

/// Formats a system timestamp the way every rendering writes it.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An ISO 8601 date-time with a time zone (RFC 3339), as an instant; `None` if `text` is not one.
pub(crate) fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_timestamp(value: &Value, what: &str) -> Result<DateTime<Utc>, Error> {
    value.as_str().and_then(instant).ok_or_else(|| {
        Error::bad(format!(
            "{what} must be an ISO 8601 date-time with a time zone"
        ))
    })
}

/// Validates a canonical entity into the model.
pub fn decode_entity(canonical: &Map<String, Value>, trust: Trust) -> Result<Entity, Error> {
    let id = match canonical.get("id") {
        Some(Value::String(id)) => EntityId::parse(id)?,
        Some(_) => return Err(Error::bad("the entity id must be a string")),
        None => return Err(Error::bad("the entity has no id")),
    };
    let types: Vec<String> = match canonical.get("type") {
        Some(Value::Array(types)) if !types.is_empty() => types
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => return Err(Error::bad("the entity has no type")),
    };
    let mut entity = Entity {
        id,
        types,
        scopes: Vec::new(),
        attributes: Attributes::new(),
        created_at: None,
        modified_at: None,
    };
    for (key, value) in canonical {
        match key.as_str() {
            "id" | "type" => {}
            "scope" => entity.scopes = decode_scopes(value)?,
            "createdAt" | "modifiedAt" if trust == Trust::Caller => {}
            "createdAt" => entity.created_at = Some(parse_timestamp(value, "createdAt")?),
            "modifiedAt" => entity.modified_at = Some(parse_timestamp(value, "modifiedAt")?),
            name => {
                let instances =
                    decode_instances(value, trust).map_err(|e| in_attribute(name, e))?;
                entity.attributes.insert(name.to_owned(), instances);
            }
        }
    }
    Ok(entity)
}

fn in_attribute(name: &str, error: Error) -> Error {
    match error {
        Error::BadRequestData(detail) if !detail.starts_with("attribute ") => {
            Error::BadRequestData(format!("attribute {name:?}: {detail}"))
        }
        other => other,
    }
}

/// Validates canonical scopes (an array of scope strings).
pub fn decode_scopes(value: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(items) = value else {
        return Err(Error::bad("scope must be a string or an array of strings"));
    };
    items
        .iter()
        .map(|s| match s.as_str() {
            Some(scope) if is_valid_scope(scope) => Ok(scope.to_owned()),
            _ => Err(Error::bad(format!(
                "{s} is not a valid scope (e.g. \"/Madrid/Gardens\")"
            ))),
        })
        .collect()
}

/// Validates the attributes of a canonical fragment: every member but `id`, `type` and `scope`.
pub fn decode_attributes(
    canonical: &Map<String, Value>,
    trust: Trust,
) -> Result<Attributes, Error> {
    let mut attributes = Attributes::new();
    for (name, value) in canonical {
        if matches!(name.as_str(), "id" | "type" | "scope") {
            continue;
        }
        let instances = decode_instances(value, trust).map_err(|e| in_attribute(name, e))?;
        attributes.insert(name.clone(), instances);
    }
    Ok(attributes)
}

/// Validates the canonical instances of one attribute (an array, or a single instance object).
pub fn decode_instances(value: &Value, trust: Trust) -> Result<Vec<Attribute>, Error> {
    let instances: Vec<Attribute> = match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| decode_instance(i, trust))
            .collect::<Result<_, _>>()?,
        Value::Object(_) => vec![decode_instance(value, trust)?],
        _ => {
            return Err(Error::bad(
                "an attribute must be an object or a non-empty array of instances",
            ));
        }
    };
    for (index, instance) in instances.iter().enumerate() {
        if instances[..index]
            .iter()
            .any(|other| other.dataset_id == instance.dataset_id)
        {
            return Err(Error::bad(match &instance.dataset_id {
                Some(id) => format!("two instances share the datasetId {id}"),
                None => "two instances have no datasetId; only one default instance is allowed"
                    .to_owned(),
            }));
        }
    }
    Ok(instances)
}

fn decode_instance(value: &Value, trust: Trust) -> Result<Attribute, Error> {
    let Value::Object(members) = value else {
        return Err(Error::bad("an attribute instance must be a JSON object"));
    };
    let attribute_type = members
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Property");
    let required = |member: &str| -> Result<&Value, Error> {
        match members.get(member) {
            None | Some(Value::Null) => Err(Error::bad(format!(
                "a {attribute_type} needs a non-null {member:?}"
            ))),
            Some(v) => Ok(v),
        }
    };
    let value = match attribute_type {
        "Property" => AttributeValue::Property(required("value")?.clone()),
        "Relationship" => {
            let object = required("object")?;
            let valid = match object {
                Value::String(id) => is_absolute_uri(id),
                Value::Array(ids) => {
                    !ids.is_empty() && ids.iter().all(|i| i.as_str().is_some_and(is_absolute_uri))
                }
                _ => false,
            };
            if !valid {
                return Err(Error::bad(
                    "a Relationship object must be a URI or a non-empty array of URIs",
                ));
            }
            AttributeValue::Relationship {
                object: object.clone(),
                object_type: members.get("objectType").cloned(),
            }
        }
        "GeoProperty" => {
            let geometry = required("value")?;
            geo::validate(geometry)?;
            AttributeValue::GeoProperty(geometry.clone())
        }
        "LanguageProperty" => {
            let Value::Object(map) = required("languageMap")? else {
                return Err(Error::bad(
                    "languageMap must be an object of language tag → string",
                ));
            };
            let valid = map.values().all(|v| match v {
                Value::String(_) => true,
                Value::Array(items) => items.iter().all(Value::is_string),
                _ => false,
            });
            if !valid {
                return Err(Error::bad(
                    "languageMap values must be strings or arrays of strings",
                ));
            }
            AttributeValue::LanguageProperty(map.clone())
        }
        "VocabProperty" => {
            let vocab = required("vocab")?;
            let valid = match vocab {
                Value::String(_) => true,
                Value::Array(items) => !items.is_empty() && items.iter().all(Value::is_string),
                _ => false,
            };
            if !valid {
                return Err(Error::bad("vocab must be a string or an array of strings"));
            }
            AttributeValue::VocabProperty(vocab.clone())
        }
        "JsonProperty" => AttributeValue::JsonProperty(required("json")?.clone()),
        "ListProperty" => match required("valueList")? {
            Value::Array(items) => AttributeValue::ListProperty(items.clone()),
            _ => return Err(Error::bad("valueList must be an array")),
        },
        "ListRelationship" => match required("objectList")? {
            Value::Array(items) => AttributeValue::ListRelationship(
                items
                    .iter()
                    .map(|i| match i.as_str() {
                        Some(id) if is_absolute_uri(id) => Ok(id.to_owned()),
                        _ => Err(Error::bad("objectList items must be URIs")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(Error::bad("objectList must be an array")),
        },
        other => {
            return Err(Error::bad(format!(
                "{other} is not an NGSI-LD attribute type"
            )));
        }
    };

    let mut attribute = Attribute::new(value);
    for (key, value) in members {
        match key.as_str() {
            "type" | "value" | "object" | "objectType" | "languageMap" | "vocab" | "json"
            | "valueList" | "objectList" => {}
            "datasetId" => match value.as_str() {
                Some(id) if is_absolute_uri(id) => attribute.dataset_id = Some(id.to_owned()),
                _ => return Err(Error::bad("datasetId must be a URI")),
            },
            "observedAt" => {
                parse_timestamp(value, "observedAt")?;
                attribute.observed_at = value.as_str().map(str::to_owned);
            }
            "unitCode" => match value.as_str() {
                Some(code) if !code.is_empty() => attribute.unit_code = Some(code.to_owned()),
                _ => return Err(Error::bad("unitCode must be a non-empty string")),
            },
            "createdAt" | "modifiedAt" if trust == Trust::Caller => {}
            "createdAt" => attribute.created_at = Some(parse_timestamp(value, "createdAt")?),
            "modifiedAt" => attribute.modified_at = Some(parse_timestamp(value, "modifiedAt")?),
            name => {
                let instances =
                    decode_instances(value, trust).map_err(|e| in_attribute(name, e))?;
                attribute.sub_attributes.insert(name.to_owned(), instances);
            }
        }
    }
    Ok(attribute)
}

/// Writes an entity in canonical form, system attributes included.
pub fn encode_entity(entity: &Entity) -> Map<String, Value> {
    let mut out = Map::with_capacity(entity.attributes.len() + 5);
    out.insert(
        "id".to_owned(),
        Value::String(entity.id.as_str().to_owned()),
    );
    out.insert(
        "type".to_owned(),
        Value::Array(entity.types.iter().cloned().map(Value::String).collect()),
    );
    if !entity.scopes.is_empty() {
        out.insert(
            "scope".to_owned(),
            Value::Array(entity.scopes.iter().cloned().map(Value::String).collect()),
        );
    }
    if let Some(t) = &entity.created_at {
        out.insert("createdAt".to_owned(), Value::String(format_timestamp(t)));
    }
    if let Some(t) = &entity.modified_at {
        out.insert("modifiedAt".to_owned(), Value::String(format_timestamp(t)));
    }
    for (name, instances) in &entity.attributes {
        out.insert(name.clone(), encode_instances(instances));
    }
    out
}

/// Writes an attribute's instances in canonical form.
pub fn encode_instances(instances: &[Attribute]) -> Value {
    Value::Array(
        instances
            .iter()
            .map(|i| Value::Object(encode_instance(i)))
            .collect(),
    )
}

/// Writes one attribute instance in canonical form.
pub fn encode_instance(attribute: &Attribute) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "type".to_owned(),
        Value::String(attribute.value.type_name().to_owned()),
    );
    match &attribute.value {
        AttributeValue::Property(v) | AttributeValue::GeoProperty(v) => {
            out.insert("value".to_owned(), v.clone());
        }
        AttributeValue::Relationship {
            object,
            object_type,
        } => {
            out.insert("object".to_owned(), object.clone());
            if let Some(t) = object_type {
                out.insert("objectType".to_owned(), t.clone());
            }
        }
        AttributeValue::LanguageProperty(map) => {
            out.insert("languageMap".to_owned(), Value::Object(map.clone()));
        }
        AttributeValue::VocabProperty(v) => {
            out.insert("vocab".to_owned(), v.clone());
        }
        AttributeValue::JsonProperty(v) => {
            out.insert("json".to_owned(), v.clone());
        }
        AttributeValue::ListProperty(items) => {
            out.insert("valueList".to_owned(), Value::Array(items.clone()));
        }
        AttributeValue::ListRelationship(ids) => {
            out.insert(
                "objectList".to_owned(),
                Value::Array(ids.iter().cloned().map(Value::String).collect()),
            );
        }
    }
    if let Some(id) = &attribute.dataset_id {
        out.insert("datasetId".to_owned(), Value::String(id.clone()));
    }
    if let Some(t) = &attribute.observed_at {
        out.insert("observedAt".to_owned(), Value::String(t.clone()));
    }
    if let Some(code) = &attribute.unit_code {
        out.insert("unitCode".to_owned(), Value::String(code.clone()));
    }
    if let Some(t) = &attribute.created_at {
        out.insert("createdAt".to_owned(), Value::String(format_timestamp(t)));
    }
    if let Some(t) = &attribute.modified_at {
        out.insert("modifiedAt".to_owned(), Value::String(format_timestamp(t)));
    }
    for (name, instances) in &attribute.sub_attributes {
        out.insert(name.clone(), encode_instances(instances));
    }
    out
}

/// Parses a stored record (canonical JSON text) back into an entity.
pub fn decode_stored(body: &str) -> Result<Entity, Error> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| Error::CorruptRecord(e.to_string()))?;
    let Value::Object(members) = value else {
        return Err(Error::CorruptRecord("not a JSON object".to_owned()));
    };
    decode_entity(&members, Trust::Stored).map_err(|e| Error::CorruptRecord(e.to_string()))
}

/// Writes an entity as the canonical JSON text the store keeps.
pub fn encode_stored(entity: &Entity) -> String {
    Value::Object(encode_entity(entity)).to_string()
}
