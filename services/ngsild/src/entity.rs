//! The NGSI-LD information model: entities and their attributes (ETSI GS CIM 009 clause 4).
//!
//! Names here are always **expanded** IRIs: entity types, attribute names and sub-attribute names.
//! Compaction to the caller's @context happens only when rendering ([`crate::render`]).
//! These types deliberately do not implement `Serialize`: every wire form is written explicitly.

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::names::EntityId;

/// Expanded attribute name → its instances (more than one only for multi-attributes, clause 4.5.5).
pub type Attributes = IndexMap<String, Vec<Attribute>>;

/// An NGSI-LD entity (clause 4.5.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub id: EntityId,
    /// Expanded entity type IRIs; never empty, no duplicates.
    pub types: Vec<String>,
    /// Scopes (clause 4.18), as given.
    pub scopes: Vec<String>,
    pub attributes: Attributes,
    pub created_at: Option<DateTime<Utc>>,
    pub modified_at: Option<DateTime<Utc>>,
}

/// One instance of an attribute: its value, its metadata and its sub-attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub value: AttributeValue,
    /// Distinguishes the instances of a multi-attribute; `None` is the default instance.
    pub dataset_id: Option<String>,
    /// `observedAt`, validated as an ISO 8601 date-time and kept as written.
    pub observed_at: Option<String>,
    pub unit_code: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub modified_at: Option<DateTime<Utc>>,
    /// Sub-attributes (properties of properties, clause 4.5.2), by expanded name.
    pub sub_attributes: Attributes,
}

impl Attribute {
    /// An attribute with the given value and no metadata.
    pub fn new(value: AttributeValue) -> Attribute {
        Attribute {
            value,
            dataset_id: None,
            observed_at: None,
            unit_code: None,
            created_at: None,
            modified_at: None,
            sub_attributes: Attributes::new(),
        }
    }
}

/// The value of an attribute, one variant per attribute type of clause 4.5.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// `Property`: any JSON value but null.
    Property(Value),
    /// `Relationship`: the target entity id(s), expanded, and optionally the target type(s).
    Relationship {
        object: Value,
        object_type: Option<Value>,
    },
    /// `GeoProperty`: a GeoJSON geometry.
    GeoProperty(Value),
    /// `LanguageProperty`: language tag → string or strings.
    LanguageProperty(Map<String, Value>),
    /// `VocabProperty`: one or more expanded IRIs.
    VocabProperty(Value),
    /// `JsonProperty`: an opaque JSON value, never expanded.
    JsonProperty(Value),
    /// `ListProperty`: an ordered list of values.
    ListProperty(Vec<Value>),
    /// `ListRelationship`: an ordered list of entity ids.
    ListRelationship(Vec<String>),
}

impl AttributeValue {
    /// The attribute type's name as written in the normalized representation.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::Property(_) => "Property",
            AttributeValue::Relationship { .. } => "Relationship",
            AttributeValue::GeoProperty(_) => "GeoProperty",
            AttributeValue::LanguageProperty(_) => "LanguageProperty",
            AttributeValue::VocabProperty(_) => "VocabProperty",
            AttributeValue::JsonProperty(_) => "JsonProperty",
            AttributeValue::ListProperty(_) => "ListProperty",
            AttributeValue::ListRelationship(_) => "ListRelationship",
        }
    }
}

/// The expanded IRIs of the core attributes that NGSI-LD defines itself.
pub mod well_known {
    pub const LOCATION: &str = "https://uri.etsi.org/ngsi-ld/location";
    pub const OBSERVATION_SPACE: &str = "https://uri.etsi.org/ngsi-ld/observationSpace";
    pub const OPERATION_SPACE: &str = "https://uri.etsi.org/ngsi-ld/operationSpace";
    /// `urn:ngsi-ld:null`, the NGSI-LD Null used to delete in merge operations (clause 4.8).
    pub const NGSI_LD_NULL: &str = "urn:ngsi-ld:null";
}

impl Entity {
    /// The instance of `name` with the given dataset id, if present.
    pub fn instance(&self, name: &str, dataset_id: Option<&str>) -> Option<&Attribute> {
        self.attributes
            .get(name)?
            .iter()
            .find(|a| a.dataset_id.as_deref() == dataset_id)
    }

    /// The bounding box `[min_lon, min_lat, max_lon, max_lat]` of the default `location`.
    pub fn location_bbox(&self) -> Option<[f64; 4]> {
        let instances = self.attributes.get(well_known::LOCATION)?;
        let location = instances
            .iter()
            .find(|a| a.dataset_id.is_none())
            .or_else(|| instances.first())?;
        match &location.value {
            AttributeValue::GeoProperty(geometry) => crate::geo::bbox(geometry),
            _ => None,
        }
    }

    /// The earliest `observedAt` of any attribute instance, sub-attributes included; `None`
    /// when none has one.
    pub fn first_observed(&self) -> Option<DateTime<Utc>> {
        earliest_observation(&self.attributes)
    }
}

fn earliest_observation(attributes: &Attributes) -> Option<DateTime<Utc>> {
    attributes
        .values()
        .flatten()
        .flat_map(|instance| {
            let own = instance
                .observed_at
                .as_deref()
                .and_then(crate::canonical::instant);
            [own, earliest_observation(&instance.sub_attributes)]
        })
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(at: Option<&str>, sub_attributes: Attributes) -> Attribute {
        Attribute {
            observed_at: at.map(str::to_owned),
            sub_attributes,
            ..Attribute::new(AttributeValue::Property(Value::from(1)))
        }
    }

    fn entity(attributes: Attributes) -> Entity {
        Entity {
            id: EntityId::parse("urn:ngsi-ld:Sensor:1").unwrap(),
            types: vec!["https://example.org/Sensor".to_owned()],
            scopes: Vec::new(),
            attributes,
            created_at: None,
            modified_at: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_first_observation_is_the_earliest_instant_whatever_the_offset() {
        // 10:30+02:00 is 08:30Z, earlier than 09:00Z although it sorts later as text.
        let attributes = Attributes::from([
            (
                "https://example.org/a".to_owned(),
                vec![observed(Some("2026-01-01T09:00:00Z"), Attributes::new())],
            ),
            (
                "https://example.org/b".to_owned(),
                vec![
                    observed(None, Attributes::new()),
                    observed(Some("2026-01-01T10:30:00+02:00"), Attributes::new()),
                ],
            ),
        ]);
        assert_eq!(
            entity(attributes).first_observed(),
            Some(at("2026-01-01T08:30:00Z"))
        );
    }

    #[test]
    fn sub_attributes_count_and_no_observation_gives_none() {
        let nested = Attributes::from([(
            "https://example.org/accuracy".to_owned(),
            vec![observed(Some("2025-06-01T00:00:00Z"), Attributes::new())],
        )]);
        let attributes = Attributes::from([(
            "https://example.org/a".to_owned(),
            vec![observed(Some("2026-01-01T00:00:00Z"), nested)],
        )]);
        assert_eq!(
            entity(attributes).first_observed(),
            Some(at("2025-06-01T00:00:00Z"))
        );
        let unobserved = Attributes::from([(
            "https://example.org/a".to_owned(),
            vec![observed(None, Attributes::new())],
        )]);
        assert_eq!(entity(unobserved).first_observed(), None);
        assert_eq!(entity(Attributes::new()).first_observed(), None);
    }
}
