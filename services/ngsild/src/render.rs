//! Renderings of entities for responses (ETSI GS CIM 009 clause 4.5): normalized, concise,
//! simplified (keyValues) and GeoJSON (clause 4.5.16), each compacted against the caller's @context.
//! Every wire form is written here, explicitly.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::canonical::format_timestamp;
use crate::context::ActiveContext;
use crate::entity::{Attribute, AttributeValue, Entity};

/// The representation asked for with `options=` / `format=` (clause 6.3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Normalized,
    Concise,
    KeyValues,
}

/// Which members of an entity are rendered (`attrs`, `pick`, `omit`; clauses 6.3.18, 4.21).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Expanded attribute names to keep; `None` keeps all.
    pub keep: Option<HashSet<String>>,
    /// Expanded attribute names to drop.
    pub omit: HashSet<String>,
    /// Whether `id` and `type` are dropped (by `omit` or by a `pick` that does not name them).
    pub omit_id: bool,
    pub omit_type: bool,
}

impl Projection {
    pub fn keeps(&self, name: &str) -> bool {
        self.keep.as_ref().is_none_or(|keep| keep.contains(name)) && !self.omit.contains(name)
    }
}

/// How to render.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub format: Format,
    /// Include `createdAt`/`modifiedAt` (`options=sysAttrs`).
    pub sys_attrs: bool,
    pub projection: Projection,
}

/// Renders an entity as a JSON object compacted against `ctx` (no `@context` member: the HTTP layer
/// adds it or a Link header, depending on the media type).
pub fn entity(entity: &Entity, ctx: &ActiveContext, options: &RenderOptions) -> Map<String, Value> {
    let mut out = Map::with_capacity(entity.attributes.len() + 4);
    if !options.projection.omit_id {
        out.insert(
            "id".to_owned(),
            Value::String(entity.id.as_str().to_owned()),
        );
    }
    if !options.projection.omit_type {
        out.insert(
            "type".to_owned(),
            one_or_many(
                entity
                    .types
                    .iter()
                    .map(|t| ctx.compact_name(t).into_owned()),
            ),
        );
    }
    if !entity.scopes.is_empty() {
        out.insert(
            "scope".to_owned(),
            one_or_many(entity.scopes.iter().cloned()),
        );
    }
    if options.sys_attrs && options.format != Format::KeyValues {
        if let Some(t) = &entity.created_at {
            out.insert("createdAt".to_owned(), Value::String(format_timestamp(t)));
        }
        if let Some(t) = &entity.modified_at {
            out.insert("modifiedAt".to_owned(), Value::String(format_timestamp(t)));
        }
    }
    for (name, instances) in &entity.attributes {
        if !options.projection.keeps(name) {
            continue;
        }
        out.insert(
            ctx.compact_name(name).into_owned(),
            attribute(instances, ctx, options),
        );
    }
    out
}

/// Renders the instances of one attribute (an object, or an array for a multi-attribute).
pub fn attribute(instances: &[Attribute], ctx: &ActiveContext, options: &RenderOptions) -> Value {
    if options.format == Format::KeyValues {
        let default = instances
            .iter()
            .find(|i| i.dataset_id.is_none())
            .or_else(|| instances.first());
        return default.map_or(Value::Null, |i| key_value(&i.value, ctx));
    }
    match instances {
        [single] => instance(single, ctx, options, true),
        // The instances of a multi-attribute are always objects, so that the array reads back as
        // instances and not as one Property whose value is an array.
        many => Value::Array(
            many.iter()
                .map(|i| instance(i, ctx, options, false))
                .collect(),
        ),
    }
}

fn one_or_many(items: impl ExactSizeIterator<Item = String>) -> Value {
    if items.len() == 1 {
        items.map(Value::String).next().unwrap_or(Value::Null)
    } else {
        Value::Array(items.map(Value::String).collect())
    }
}

/// The simplified (keyValues) rendering of a value (clause 4.5.3): the bare value, except for
/// LanguageProperty, VocabProperty and JsonProperty, which keep their member name so that they read
/// back as what they are.
fn key_value(value: &AttributeValue, ctx: &ActiveContext) -> Value {
    let wrapped = |member: &str, inner: Value| {
        let mut object = Map::with_capacity(1);
        object.insert(member.to_owned(), inner);
        Value::Object(object)
    };
    match value {
        AttributeValue::Property(v) | AttributeValue::GeoProperty(v) => v.clone(),
        AttributeValue::JsonProperty(v) => wrapped("json", v.clone()),
        AttributeValue::Relationship { object, .. } => compact_ids(object, ctx),
        AttributeValue::LanguageProperty(map) => wrapped("languageMap", Value::Object(map.clone())),
        AttributeValue::VocabProperty(v) => wrapped("vocab", compact_names(v, ctx)),
        AttributeValue::ListProperty(items) => Value::Array(items.clone()),
        AttributeValue::ListRelationship(ids) => Value::Array(
            ids.iter()
                .map(|id| Value::String(ctx.compact_id(id).into_owned()))
                .collect(),
        ),
    }
}

fn compact_ids(value: &Value, ctx: &ActiveContext) -> Value {
    match value {
        Value::String(id) => Value::String(ctx.compact_id(id).into_owned()),
        Value::Array(ids) => Value::Array(ids.iter().map(|i| compact_ids(i, ctx)).collect()),
        other => other.clone(),
    }
}

fn compact_names(value: &Value, ctx: &ActiveContext) -> Value {
    match value {
        Value::String(name) => Value::String(ctx.compact_name(name).into_owned()),
        Value::Array(names) => Value::Array(names.iter().map(|n| compact_names(n, ctx)).collect()),
        other => other.clone(),
    }
}

fn instance(
    attribute: &Attribute,
    ctx: &ActiveContext,
    options: &RenderOptions,
    may_be_bare: bool,
) -> Value {
    let concise = options.format == Format::Concise;
    let has_metadata = attribute.dataset_id.is_some()
        || attribute.observed_at.is_some()
        || attribute.unit_code.is_some()
        || !attribute.sub_attributes.is_empty()
        || (options.sys_attrs
            && (attribute.created_at.is_some() || attribute.modified_at.is_some()));
    if concise && may_be_bare && !has_metadata {
        // Concise representation (clause 4.5.18): a Property without sub-attributes is its bare
        // value when that value is a scalar (an object or array could read back as attribute
        // members or instances); a GeoProperty is its bare geometry.
        match &attribute.value {
            AttributeValue::Property(v) if !v.is_object() && !v.is_array() => return v.clone(),
            AttributeValue::GeoProperty(v) => return v.clone(),
            _ => {}
        }
    }

    let mut out = Map::new();
    // Concise omits the type where the members imply it; a GeoProperty's `value` alone would read
    // back as a Property, so it keeps its type.
    if !concise || matches!(attribute.value, AttributeValue::GeoProperty(_)) {
        out.insert(
            "type".to_owned(),
            Value::String(attribute.value.type_name().to_owned()),
        );
    }
    match &attribute.value {
        AttributeValue::Property(v) | AttributeValue::GeoProperty(v) => {
            out.insert("value".to_owned(), v.clone());
        }
        AttributeValue::Relationship {
            object,
            object_type,
        } => {
            out.insert("object".to_owned(), compact_ids(object, ctx));
            if let Some(t) = object_type {
                out.insert("objectType".to_owned(), compact_names(t, ctx));
            }
        }
        AttributeValue::LanguageProperty(map) => {
            out.insert("languageMap".to_owned(), Value::Object(map.clone()));
        }
        AttributeValue::VocabProperty(v) => {
            out.insert("vocab".to_owned(), compact_names(v, ctx));
        }
        AttributeValue::JsonProperty(v) => {
            out.insert("json".to_owned(), v.clone());
        }
        AttributeValue::ListProperty(items) => {
            out.insert("valueList".to_owned(), Value::Array(items.clone()));
        }
        AttributeValue::ListRelationship(ids) => {
            let list = ids
                .iter()
                .map(|id| {
                    let mut item = Map::with_capacity(1);
                    item.insert(
                        "object".to_owned(),
                        Value::String(ctx.compact_id(id).into_owned()),
                    );
                    Value::Object(item)
                })
                .collect();
            out.insert("objectList".to_owned(), Value::Array(list));
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
    if options.sys_attrs {
        if let Some(t) = &attribute.created_at {
            out.insert("createdAt".to_owned(), Value::String(format_timestamp(t)));
        }
        if let Some(t) = &attribute.modified_at {
            out.insert("modifiedAt".to_owned(), Value::String(format_timestamp(t)));
        }
    }
    let sub_options = RenderOptions {
        projection: Projection::default(),
        ..options.clone()
    };
    for (name, instances) in &attribute.sub_attributes {
        out.insert(
            ctx.compact_name(name).into_owned(),
            self::attribute(instances, ctx, &sub_options),
        );
    }
    Value::Object(out)
}

/// Renders an entity as a GeoJSON Feature (clause 4.5.16). `geometry_property` is the expanded name
/// of the GeoProperty that becomes the geometry (by default `location`).
pub fn feature(
    entity: &Entity,
    ctx: &ActiveContext,
    options: &RenderOptions,
    geometry_property: &str,
) -> Value {
    let geometry = entity
        .attributes
        .get(geometry_property)
        .and_then(|instances| {
            instances
                .iter()
                .find(|i| i.dataset_id.is_none())
                .or_else(|| instances.first())
        })
        .and_then(|i| match &i.value {
            AttributeValue::GeoProperty(g) => Some(g.clone()),
            _ => None,
        })
        .unwrap_or(Value::Null);
    let mut properties = self::entity(entity, ctx, options);
    properties.remove("id");
    let mut out = Map::with_capacity(4);
    out.insert(
        "id".to_owned(),
        Value::String(entity.id.as_str().to_owned()),
    );
    out.insert("type".to_owned(), Value::String("Feature".to_owned()));
    out.insert("geometry".to_owned(), geometry);
    out.insert("properties".to_owned(), Value::Object(properties));
    Value::Object(out)
}
