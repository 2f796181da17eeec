//! Expansion of request payloads: from the caller's compacted, normalized or concise JSON to the
//! **canonical form**, the normalized representation (ETSI GS CIM 009 clause 4.5) with every name
//! expanded to an IRI and every attribute an array of instances carrying an explicit `type`.
//!
//! Expansion recognises shapes and expands names; [`crate::canonical`] then validates the result
//! into the typed model. Keeping the two apart lets partial updates (clause 5.6.4, merge-patch)
//! merge canonical JSON first and validate the merged result once.

use serde_json::{Map, Value};

use crate::Error;
use crate::context::ActiveContext;
use crate::geo;
use crate::names::is_valid_name;

/// The attribute types of clause 4.5, as written in the `type` member.
pub const ATTRIBUTE_TYPES: &[&str] = &[
    "Property",
    "Relationship",
    "GeoProperty",
    "LanguageProperty",
    "VocabProperty",
    "JsonProperty",
    "ListProperty",
    "ListRelationship",
];

/// Members of an attribute that are not sub-attributes, paired with the attribute type that a
/// concise payload implies by using them.
const VALUE_MEMBERS: &[(&str, &str)] = &[
    ("value", "Property"),
    ("object", "Relationship"),
    ("languageMap", "LanguageProperty"),
    ("vocab", "VocabProperty"),
    ("json", "JsonProperty"),
    ("valueList", "ListProperty"),
    ("objectList", "ListRelationship"),
];

/// Members that the system maintains; a caller's values for them are ignored (clause 4.8).
const SYSTEM_MEMBERS: &[&str] = &["createdAt", "modifiedAt", "deletedAt", "instanceId"];

/// How deeply sub-attributes may nest.
const MAX_DEPTH: usize = 16;

/// What kind of payload is being expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A whole entity (create, replace, batch create/upsert): `id` and `type` are required.
    Entity,
    /// A fragment: attributes to append, update or merge; `id` is not required, `type` optional.
    Fragment,
    /// A partial fragment (merge-patch, partial attribute update): like `Fragment`, and attributes
    /// may lack a value, and `null` (or `urn:ngsi-ld:null`) marks an attribute for deletion.
    Partial,
}

/// Expands an entity or fragment payload (`@context` already extracted) into canonical form.
pub fn entity(
    payload: &Value,
    ctx: &ActiveContext,
    kind: Payload,
) -> Result<Map<String, Value>, Error> {
    let Value::Object(members) = payload else {
        return Err(Error::bad("the payload must be a JSON object"));
    };
    let mut out = Map::with_capacity(members.len());
    for (key, value) in members {
        match key.as_str() {
            "@context" => {}
            "id" | "@id" => {
                let Value::String(id) = value else {
                    return Err(Error::bad("the entity id must be a string"));
                };
                out.insert("id".to_owned(), Value::String(id.clone()));
            }
            "type" | "@type" => {
                out.insert("type".to_owned(), Value::Array(entity_types(value, ctx)?));
            }
            "scope" => {
                let scopes = match value {
                    Value::String(_) => vec![value.clone()],
                    Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
                    _ => return Err(Error::bad("scope must be a string or an array of strings")),
                };
                out.insert("scope".to_owned(), Value::Array(scopes));
            }
            k if SYSTEM_MEMBERS.contains(&k) => {}
            name => {
                let expanded = attribute_name(name, ctx)?;
                let instances =
                    attribute(value, ctx, kind, 0).map_err(|e| in_attribute(name, e))?;
                if out.insert(expanded, instances).is_some() {
                    return Err(Error::bad(format!(
                        "the attribute {name:?} appears twice once its name is expanded with the @context"
                    )));
                }
            }
        }
    }
    if kind == Payload::Entity {
        if !out.contains_key("id") {
            return Err(Error::bad("the entity has no id"));
        }
        if !out.contains_key("type") {
            return Err(Error::bad("the entity has no type"));
        }
    }
    Ok(out)
}

/// Expands a single attribute payload (the body of `PATCH`/`PUT /entities/{id}/attrs/{attrId}`)
/// into canonical instances.
pub fn attribute_payload(
    value: &Value,
    ctx: &ActiveContext,
    kind: Payload,
) -> Result<Value, Error> {
    match value {
        Value::Object(members) => {
            let mut members = members.clone();
            members.remove("@context");
            attribute(&Value::Object(members), ctx, kind, 0)
        }
        other => attribute(other, ctx, kind, 0),
    }
}

/// Expands and validates an attribute name given in a payload or a URL.
pub fn attribute_name(name: &str, ctx: &ActiveContext) -> Result<String, Error> {
    if !is_valid_name(name) {
        return Err(Error::bad(format!(
            "{name:?} is not a valid attribute name"
        )));
    }
    let iri = ctx.expand_name(name);
    if iri.starts_with('@') {
        return Err(Error::bad(format!(
            "the attribute name {name:?} expands to the JSON-LD keyword {iri}"
        )));
    }
    Ok(iri)
}

/// Expands entity type names (a string or an array of strings).
pub fn entity_types(value: &Value, ctx: &ActiveContext) -> Result<Vec<Value>, Error> {
    let names: Vec<&str> = match value {
        Value::String(name) => vec![name],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| Error::bad("entity types must be strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(Error::bad(
                "the entity type must be a string or a non-empty array of strings",
            ));
        }
    };
    let mut expanded: Vec<Value> = Vec::with_capacity(names.len());
    for name in names {
        if !is_valid_name(name) {
            return Err(Error::bad(format!(
                "{name:?} is not a valid entity type name"
            )));
        }
        let iri = ctx.expand_name(name);
        if iri.starts_with('@') {
            return Err(Error::bad(format!(
                "the entity type {name:?} expands to the JSON-LD keyword {iri}"
            )));
        }
        let iri = Value::String(iri);
        if !expanded.contains(&iri) {
            expanded.push(iri);
        }
    }
    Ok(expanded)
}

fn in_attribute(name: &str, error: Error) -> Error {
    match error {
        Error::BadRequestData(detail) => {
            Error::BadRequestData(format!("attribute {name:?}: {detail}"))
        }
        other => other,
    }
}

/// An attribute value as written in a payload → an array of canonical instances (or `null` for a
/// deletion in a partial payload).
fn attribute(
    value: &Value,
    ctx: &ActiveContext,
    kind: Payload,
    depth: usize,
) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::bad(format!(
            "sub-attributes nest more than {MAX_DEPTH} levels deep"
        )));
    }
    match value {
        Value::Null if kind == Payload::Partial => Ok(Value::Null),
        Value::Null => Err(Error::bad("an attribute value must not be null")),
        // A bare `urn:ngsi-ld:null` is a concise Property instance holding the NGSI-LD Null: like
        // `{"value": "urn:ngsi-ld:null"}` it deletes the default instance only (clause 4.5.18).
        Value::Array(items) if !items.is_empty() && items.iter().all(looks_like_instance) => {
            let instances = items
                .iter()
                .map(|item| instance(item.as_object().into_iter().flatten(), ctx, kind, depth))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::Array(instances))
        }
        Value::Object(members) => Ok(Value::Array(vec![instance(
            members.iter(),
            ctx,
            kind,
            depth,
        )?])),
        scalar_or_list => {
            let mut property = Map::with_capacity(2);
            property.insert("type".to_owned(), Value::String("Property".to_owned()));
            property.insert("value".to_owned(), scalar_or_list.clone());
            Ok(Value::Array(vec![Value::Object(property)]))
        }
    }
}

/// Whether an element of an attribute array is an attribute instance (a multi-attribute) rather
/// than an element of a concise Property's array value.
fn looks_like_instance(item: &Value) -> bool {
    let Value::Object(members) = item else {
        return false;
    };
    members
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| ATTRIBUTE_TYPES.contains(&t))
        || members.contains_key("datasetId")
        || VALUE_MEMBERS
            .iter()
            .any(|(member, _)| members.contains_key(*member))
}

fn instance<'a>(
    members: impl Iterator<Item = (&'a String, &'a Value)> + Clone,
    ctx: &ActiveContext,
    kind: Payload,
    depth: usize,
) -> Result<Value, Error> {
    let declared = members.clone().find(|(k, _)| *k == "type").map(|(_, v)| v);
    let attribute_type = match declared {
        Some(Value::String(t)) if ATTRIBUTE_TYPES.contains(&t.as_str()) => Some(t.as_str()),
        Some(Value::String(t)) if geo::GEOMETRY_TYPES.contains(&t.as_str()) => {
            // A concise GeoProperty: the geometry itself (clause 4.5.18 concise representation).
            let geometry: Map<String, Value> =
                members.map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut property = Map::with_capacity(2);
            property.insert("type".to_owned(), Value::String("GeoProperty".to_owned()));
            property.insert("value".to_owned(), Value::Object(geometry));
            return Ok(Value::Object(property));
        }
        Some(other) => {
            return Err(Error::bad(format!(
                "{other} is not an NGSI-LD attribute type"
            )));
        }
        None => members.clone().find_map(|(k, _)| {
            VALUE_MEMBERS
                .iter()
                .find(|(member, _)| member == k)
                .map(|(_, t)| *t)
        }),
    };
    let Some(attribute_type) = attribute_type else {
        if kind == Payload::Partial {
            let mut out = Map::new();
            expand_members(members, &mut out, ctx, kind, depth)?;
            return Ok(Value::Object(out));
        }
        // Concise form of a Property whose value is a JSON object.
        let value: Map<String, Value> = members.map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut property = Map::with_capacity(2);
        property.insert("type".to_owned(), Value::String("Property".to_owned()));
        property.insert("value".to_owned(), Value::Object(value));
        return Ok(Value::Object(property));
    };

    let mut out = Map::new();
    out.insert("type".to_owned(), Value::String(attribute_type.to_owned()));
    expand_members(members, &mut out, ctx, kind, depth)?;
    Ok(Value::Object(out))
}

fn expand_members<'a>(
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Map<String, Value>,
    ctx: &ActiveContext,
    kind: Payload,
    depth: usize,
) -> Result<(), Error> {
    for (key, value) in members {
        match key.as_str() {
            "type" | "@context" => {}
            "object" => {
                let object = match value {
                    Value::String(id) => Value::String(expand_id(id, ctx)),
                    Value::Array(ids) => Value::Array(
                        ids.iter()
                            .map(|i| match i {
                                Value::String(id) => Ok(Value::String(expand_id(id, ctx))),
                                _ => Err(Error::bad(
                                    "a Relationship object must be a URI or an array of URIs",
                                )),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => {
                        return Err(Error::bad(
                            "a Relationship object must be a URI or an array of URIs",
                        ));
                    }
                };
                out.insert("object".to_owned(), object);
            }
            "objectType" | "vocab" => {
                let expanded = match value {
                    Value::String(name) => Value::String(ctx.expand_name(name)),
                    Value::Array(names) => Value::Array(
                        names
                            .iter()
                            .map(|n| match n {
                                Value::String(name) => Ok(Value::String(ctx.expand_name(name))),
                                _ => Err(Error::bad(format!("{key} must hold strings"))),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => {
                        return Err(Error::bad(format!(
                            "{key} must be a string or an array of strings"
                        )));
                    }
                };
                out.insert(key.clone(), expanded);
            }
            "objectList" => {
                let Value::Array(items) = value else {
                    return Err(Error::bad("objectList must be an array"));
                };
                let ids = items
                    .iter()
                    .map(|item| {
                        let id = match item {
                            Value::String(id) => Some(id.as_str()),
                            Value::Object(o) => o.get("object").and_then(Value::as_str),
                            _ => None,
                        };
                        id.map(|id| Value::String(expand_id(id, ctx)))
                            .ok_or_else(|| {
                                Error::bad("objectList items must be URIs or {\"object\": URI}")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert("objectList".to_owned(), Value::Array(ids));
            }
            "value" | "languageMap" | "json" | "valueList" if value.is_null() => {
                return Err(Error::bad(format!(
                    "{key} must not be null; to delete, use urn:ngsi-ld:null"
                )));
            }
            "value" | "languageMap" | "json" | "valueList" | "datasetId" | "observedAt"
            | "unitCode" => {
                out.insert(key.clone(), value.clone());
            }
            k if SYSTEM_MEMBERS.contains(&k) => {}
            "lang" => {}
            name => {
                let expanded = attribute_name(name, ctx)?;
                let sub =
                    attribute(value, ctx, kind, depth + 1).map_err(|e| in_attribute(name, e))?;
                out.insert(expanded, sub);
            }
        }
    }
    Ok(())
}

fn expand_id(id: &str, ctx: &ActiveContext) -> String {
    ctx.expand_iri(id, false).unwrap_or_else(|| id.to_owned())
}
