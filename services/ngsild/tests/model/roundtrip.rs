//! Round trips: a normalized payload, expanded, decoded and rendered normalized under the same
//! @context, is the payload again (without its @context); concise renderings parse back to the same
//! entity; stored records decode to the entity they were written from.

use civitas_ngsild::canonical;
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::render::{self, Format, RenderOptions};
use civitas_ngsild::update;
use serde_json::{Value, json};

use crate::support::{at, core, parse, user, with_core};

/// Normalized payloads that cover every attribute type and member.
fn payloads() -> Vec<Value> {
    vec![
        json!({"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}),
        json!({
            "id": "urn:ngsi-ld:Vehicle:2",
            "type": ["Vehicle", "Car"],
            "scope": ["/Madrid/Centro", "/Fleet"],
            "@context": ["https://example.org/ignored.jsonld"],
            "speed": {
                "type": "Property",
                "value": 80.5,
                "unitCode": "KMH",
                "observedAt": "2024-01-01T10:00:00.123+01:00",
                "accuracy": {"type": "Property", "value": 0.9},
                "measuredBy": {"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1"},
            },
            "brand": {"type": "Property", "value": {"name": "Mercedes", "type": "Make", "id": null}},
            "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1", "objectType": "Person"},
            "owners": {"type": "Relationship", "object": ["urn:ngsi-ld:Person:1", "ex:person2"], "objectType": ["Person", "Vehicle"]},
            "location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},
            "street": {"type": "LanguageProperty", "languageMap": {"en": "Main street", "es": ["Calle Mayor", "Mayor"]}},
            "category": {"type": "VocabProperty", "vocab": ["Vehicle", "commercial", "ex:public"]},
            "config": {"type": "JsonProperty", "json": {"a": null, "b": [null, {"type": "Point"}]}},
            "readings": {"type": "ListProperty", "valueList": [1, "two", {"three": 3}, [4], null]},
            "route": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Stop:1"}, {"object": "urn:ngsi-ld:Stop:2"}]},
            "fuel": [
                {"type": "Property", "value": 10},
                {"type": "Property", "value": 11, "datasetId": "urn:ngsi-ld:Dataset:a", "observedAt": "2024-01-01T10:00:00Z"},
                {"type": "Relationship", "object": "urn:ngsi-ld:Tank:1", "datasetId": "urn:ngsi-ld:Dataset:b"},
            ],
            "https://elsewhere.org/attr": {"type": "Property", "value": false},
            "observationSpace": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2024-01-01T10:00:00Z"},
            "operationSpace": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3, 4]}},
            "plates": {"type": "Property", "value": ["1234-ABC", {"value": 1}]},
        }),
    ]
}

/// The contexts the round trip must hold under.
fn contexts() -> Vec<(&'static str, ActiveContext)> {
    vec![
        ("core", core().clone()),
        ("user", user().clone()),
        (
            "etsi",
            with_core(json!({
                "almostFull": "https://ngsi-ld-test-suite/context#almostFull",
                "Vehicle": "https://ngsi-ld-test-suite/context#Vehicle",
                "speed": "https://ngsi-ld-test-suite/context#speed",
            })),
        ),
    ]
}

fn without_context(payload: &Value) -> Value {
    let mut payload = payload.clone();
    if let Some(members) = payload.as_object_mut() {
        members.remove("@context");
    }
    payload
}

/// `render(decode(expand(payload)))` under `ctx` is the payload without its @context.
fn check_normalized(name: &str, ctx: &ActiveContext, payload: &Value) {
    let entity = parse(payload, ctx).unwrap_or_else(|e| panic!("{name}: {payload}: {e}"));
    let rendered = render::entity(&entity, ctx, &RenderOptions::default());
    assert_eq!(Value::Object(rendered), without_context(payload), "{name}");
}

/// The concise rendering parses back to the same entity.
fn check_concise(name: &str, ctx: &ActiveContext, payload: &Value) {
    let entity = parse(payload, ctx).unwrap_or_else(|e| panic!("{name}: {payload}: {e}"));
    let options = RenderOptions {
        format: Format::Concise,
        ..RenderOptions::default()
    };
    let concise = Value::Object(render::entity(&entity, ctx, &options));
    let again = parse(&concise, ctx).unwrap_or_else(|e| panic!("{name}: {concise}: {e}"));
    assert_eq!(again, entity, "{name}: {concise}");
}

#[test]
fn normalized_payloads_render_back_unchanged() {
    for (name, ctx) in contexts() {
        for payload in payloads() {
            check_normalized(name, &ctx, &payload);
        }
    }
}

#[test]
fn concise_renderings_parse_back_to_the_same_entity() {
    for (name, ctx) in contexts() {
        for payload in payloads() {
            check_concise(name, &ctx, &payload);
        }
    }
}

#[test]
fn default_context_names_shadowed_by_the_callers_context() {
    // The ETSI corner of clause 5.5.7: `almostFull` is the caller's term, the default-context
    // attribute of the same short name travels as `ngsi-ld:default-context/almostFull`.
    let (_, etsi) = contexts().pop().expect("the ETSI context");
    check_normalized(
        "etsi",
        &etsi,
        &json!({
            "id": "urn:ngsi-ld:Building:1",
            "type": "Vehicle",
            "almostFull": {"type": "Property", "value": false},
            "ngsi-ld:default-context/almostFull": {"type": "Property", "value": true},
            "ngsi-ld:default-context/speed": {"type": "Property", "value": 1},
            "speed": {"type": "Property", "value": 2},
        }),
    );
}

#[test]
fn concise_arrays_and_geo_properties_read_back_as_written() {
    // Clause 4.5.18: the concise representation is lossless. Inside a multi-attribute array every
    // instance is an object, an array value keeps its `value` wrapper, and a GeoProperty with
    // metadata keeps its type.
    let ctx = user();
    let concise = RenderOptions {
        format: Format::Concise,
        ..RenderOptions::default()
    };
    for (payload, attribute, rendered_attribute) in [
        (
            json!({"fuel": [{"type": "Property", "value": 10}, {"type": "Property", "value": 11, "datasetId": "urn:ds:a"}]}),
            "fuel",
            json!([{"value": 10}, {"value": 11, "datasetId": "urn:ds:a"}]),
        ),
        (
            json!({"steps": {"type": "Property", "value": [{"value": 1}, {"value": 2}]}}),
            "steps",
            json!({"value": [{"value": 1}, {"value": 2}]}),
        ),
        (
            json!({"area": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2024-01-01T10:00:00Z"}}),
            "area",
            json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2024-01-01T10:00:00Z"}),
        ),
    ] {
        let mut payload = payload;
        payload["id"] = json!("urn:ngsi-ld:Vehicle:1");
        payload["type"] = json!("Vehicle");
        let entity = parse(&payload, ctx).unwrap_or_else(|e| panic!("{payload}: {e}"));
        let rendered = Value::Object(render::entity(&entity, ctx, &concise));
        assert_eq!(rendered[attribute], rendered_attribute, "{payload}");
        assert_eq!(parse(&rendered, ctx), Ok(entity), "{rendered}");
    }
}

#[test]
fn stored_records_decode_to_the_entity_written() {
    for payload in payloads() {
        let mut entity = parse(&payload, user()).expect("parses");
        update::stamp_created(&mut entity, at(0));
        let body = canonical::encode_stored(&entity);
        assert_eq!(
            canonical::decode_stored(&body),
            Ok(entity.clone()),
            "{body}"
        );
        // The record is the canonical form: expanded names only.
        let record: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(record, Value::Object(canonical::encode_entity(&entity)));
        assert!(record.get("speed").is_none(), "{body}");
    }
    for (body, needle) in [
        ("not json", "stored entity is corrupt"),
        ("[]", "not a JSON object"),
        (r#"{"id": "urn:a:1"}"#, "the entity has no type"),
        (
            r#"{"id": "urn:a:1", "type": ["T"], "createdAt": "then"}"#,
            "createdAt must be",
        ),
    ] {
        match canonical::decode_stored(body) {
            Err(error @ civitas_ngsild::Error::CorruptRecord(_)) => {
                assert!(error.to_string().contains(needle), "{body}: {error}")
            }
            other => panic!("{body}: expected CorruptRecord, got {other:?}"),
        }
    }
}
