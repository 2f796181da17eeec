//! Renderings (clause 4.5): normalized, concise, keyValues and GeoJSON, with projections and
//! system attributes, compacted against the caller's @context. Each case is a payload (decoded under
//! the user context), render options, and the JSON expected.

use std::collections::HashSet;

use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::render::{self, Format, Projection, RenderOptions};
use civitas_ngsild::update;
use serde_json::{Value, json};

use crate::support::{at, core, dflt, entity, ex, ngsi, stamp, user, with_core};

const ID: &str = "urn:ngsi-ld:Vehicle:A1";

fn options(format: Format) -> RenderOptions {
    RenderOptions {
        format,
        ..RenderOptions::default()
    }
}

fn normalized() -> RenderOptions {
    options(Format::Normalized)
}

fn concise() -> RenderOptions {
    options(Format::Concise)
}

fn key_values() -> RenderOptions {
    options(Format::KeyValues)
}

fn with_sys_attrs(mut options: RenderOptions) -> RenderOptions {
    options.sys_attrs = true;
    options
}

fn projected(projection: Projection) -> RenderOptions {
    RenderOptions {
        projection,
        ..RenderOptions::default()
    }
}

fn names(names: &[&str]) -> HashSet<String> {
    names.iter().map(|name| user().expand_name(name)).collect()
}

/// `payload` decoded under the user context and rendered with `options` under `ctx`.
fn check_in(ctx: &ActiveContext, payload: Value, options: &RenderOptions, expected: Value) {
    let rendered = Value::Object(render::entity(&entity(&payload), ctx, options));
    assert_eq!(rendered, expected, "{payload} rendered with {options:?}");
}

/// `payload` decoded and rendered under the user context.
fn check(payload: Value, options: &RenderOptions, expected: Value) {
    check_in(user(), payload, options, expected);
}

/// A `Vehicle` with the given attributes, rendered: `expected` holds the attributes only.
fn check_attributes(attributes: Value, options: &RenderOptions, expected: Value) {
    let mut payload = json!({"id": ID, "type": "Vehicle"});
    let mut full = json!({"id": ID, "type": "Vehicle"});
    for (name, value) in attributes.as_object().expect("an object") {
        payload[name] = value.clone();
    }
    for (name, value) in expected.as_object().expect("an object") {
        full[name] = value.clone();
    }
    check(payload, options, full);
}

fn sample() -> Value {
    json!({
        "id": ID,
        "type": "Vehicle",
        "speed": {"type": "Property", "value": 80, "unitCode": "KMH"},
        "brand": {"type": "Property", "value": "Mercedes"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}},
    })
}

#[test]
fn types_and_scopes_are_a_string_when_single() {
    check(
        json!({"id": ID, "type": ["Vehicle"], "scope": ["/Madrid"]}),
        &normalized(),
        json!({"id": ID, "type": "Vehicle", "scope": "/Madrid"}),
    );
    check(
        json!({"id": ID, "type": ["Vehicle", "Car", "Bus"], "scope": ["/Madrid", "/Fleet"]}),
        &key_values(),
        json!({"id": ID, "type": ["Vehicle", "Car", "Bus"], "scope": ["/Madrid", "/Fleet"]}),
    );
}

#[test]
fn normalized_representation() {
    check_attributes(
        json!({
            "speed": 80,
            "owner": {"object": ["urn:ngsi-ld:Person:1", "urn:ngsi-ld:Person:2"], "objectType": "Person"},
            "street": {"languageMap": {"en": "Main street"}},
            "category": {"vocab": ["Vehicle", "commercial"]},
            "config": {"json": {"a": null}},
            "readings": {"valueList": [1, 2]},
            "route": {"objectList": ["urn:ngsi-ld:Stop:1"]},
        }),
        &normalized(),
        json!({
            "speed": {"type": "Property", "value": 80},
            "owner": {"type": "Relationship", "object": ["urn:ngsi-ld:Person:1", "urn:ngsi-ld:Person:2"], "objectType": "Person"},
            "street": {"type": "LanguageProperty", "languageMap": {"en": "Main street"}},
            "category": {"type": "VocabProperty", "vocab": ["Vehicle", "commercial"]},
            "config": {"type": "JsonProperty", "json": {"a": null}},
            "readings": {"type": "ListProperty", "valueList": [1, 2]},
            "route": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Stop:1"}]},
        }),
    );
}

#[test]
fn multi_attributes_render_as_arrays_and_single_instances_as_objects() {
    check_attributes(
        json!({"speed": [{"value": 80}, {"value": 81, "datasetId": "urn:ds:gps"}], "brand": [{"value": "x"}]}),
        &normalized(),
        json!({
            "speed": [
                {"type": "Property", "value": 80},
                {"type": "Property", "value": 81, "datasetId": "urn:ds:gps"},
            ],
            "brand": {"type": "Property", "value": "x"},
        }),
    );
    check_attributes(
        json!({"speed": [{"value": 80}, {"value": 81, "datasetId": "urn:ds:gps"}]}),
        &concise(),
        // Inside a multi-attribute every instance is an object, so the array reads back as
        // instances.
        json!({"speed": [{"value": 80}, {"value": 81, "datasetId": "urn:ds:gps"}]}),
    );
}

#[test]
fn concise_representation() {
    // Clause 4.5.18: the attribute type is implied by its value member; a Property without
    // metadata is its bare value, a GeoProperty its bare geometry.
    check_attributes(
        json!({
            "speed": {"value": 80, "unitCode": "KMH", "accuracy": {"value": 0.9}},
            "plate": "1234-ABC",
            "address": {"value": {"street": "Calle Mayor"}},
            "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
            "owner": {"object": "urn:ngsi-ld:Person:1"},
            "street": {"languageMap": {"en": "Main street"}},
            "category": {"vocab": "commercial"},
            "config": {"json": {"a": 1}},
            "readings": {"valueList": [1, 2]},
            "route": {"objectList": ["urn:ngsi-ld:Stop:1"]},
        }),
        &concise(),
        json!({
            "speed": {"value": 80, "unitCode": "KMH", "accuracy": 0.9},
            "plate": "1234-ABC",
            // An object value keeps its `value` wrapper: bare, it would read as an attribute.
            "address": {"value": {"street": "Calle Mayor"}},
            "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
            "owner": {"object": "urn:ngsi-ld:Person:1"},
            "street": {"languageMap": {"en": "Main street"}},
            "category": {"vocab": "commercial"},
            "config": {"json": {"a": 1}},
            "readings": {"valueList": [1, 2]},
            "route": {"objectList": [{"object": "urn:ngsi-ld:Stop:1"}]},
        }),
    );
    // A GeoProperty with metadata keeps its value member and its type: `{"value": geometry}`
    // alone would read back as a Property.
    check_attributes(
        json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2024-01-01T10:00:00Z"}}),
        &concise(),
        json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}, "observedAt": "2024-01-01T10:00:00Z"}}),
    );
    // An array value keeps its `value` wrapper: bare, it could read as instances.
    check_attributes(
        json!({"plates": {"type": "Property", "value": ["1234-ABC", "5678-DEF"]}}),
        &concise(),
        json!({"plates": {"value": ["1234-ABC", "5678-DEF"]}}),
    );
}

#[test]
fn key_values_representation() {
    check_attributes(
        json!({
            "speed": {"value": 80, "unitCode": "KMH", "accuracy": {"value": 0.9}},
            "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
            "owner": {"object": "urn:ngsi-ld:Person:1"},
            "owners": {"object": ["urn:ngsi-ld:Person:1", "ex:person2"]},
            "readings": {"valueList": [1, 2]},
            "route": {"objectList": ["urn:ngsi-ld:Stop:1"]},
            // The default instance of a multi-attribute stands for it.
            "fuel": [{"value": 10, "datasetId": "urn:ds:a"}, {"value": 20}],
            "tyres": [{"value": 1, "datasetId": "urn:ds:a"}, {"value": 2, "datasetId": "urn:ds:b"}],
        }),
        &key_values(),
        json!({
            "speed": 80,
            "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
            "owner": "urn:ngsi-ld:Person:1",
            "owners": ["urn:ngsi-ld:Person:1", "ex:person2"],
            "readings": [1, 2],
            "route": ["urn:ngsi-ld:Stop:1"],
            "fuel": 20,
            "tyres": 1,
        }),
    );
}

#[test]
fn key_values_of_language_vocab_and_json_properties() {
    // Clause 4.5.3 (simplified representation) writes a LanguageProperty as
    // {"languageMap": {...}}, a VocabProperty as {"vocab": ...} and a JsonProperty as {"json": ...}.
    check_attributes(
        json!({
            "street": {"languageMap": {"en": "Main street", "es": "Calle Mayor"}},
            "category": {"vocab": ["Vehicle", "commercial"]},
            "config": {"json": {"a": null, "b": [1]}},
        }),
        &key_values(),
        json!({
            "street": {"languageMap": {"en": "Main street", "es": "Calle Mayor"}},
            "category": {"vocab": ["Vehicle", "commercial"]},
            "config": {"json": {"a": null, "b": [1]}},
        }),
    );
}

#[test]
fn names_are_compacted_against_the_callers_context() {
    // Another caller, with only the core context, sees the same entity under full IRIs.
    check_in(
        core(),
        json!({
            "id": ID,
            "type": "Vehicle",
            "brand": {"vocab": "Vehicle"},
            "speed": 1,
            "owner": {"object": "ex:person1", "objectType": "Vehicle"},
        }),
        &normalized(),
        json!({
            "id": ID,
            "type": ex("Vehicle"),
            ex("brandName"): {"type": "VocabProperty", "vocab": ex("Vehicle")},
            "speed": {"type": "Property", "value": 1},
            ex("owner"): {"type": "Relationship", "object": ex("person1"), "objectType": ex("Vehicle")},
        }),
    );
    // A caller whose context defines `almostFull` elsewhere reads the default-context attribute
    // through the core prefix (the ETSI corner of clause 5.5.7).
    let etsi = with_core(json!({"almostFull": "https://ngsi-ld-test-suite/context#almostFull"}));
    let stored = json!({"id": ID, "type": "Vehicle", "ngsi-ld:default-context/almostFull": true, "almostFull": false});
    // Under the core context alone both names are the default-context IRI.
    crate::support::assert_bad(
        crate::support::parse(&stored, core()),
        "appears twice once its name is expanded",
        &stored,
    );
    let decoded = crate::support::parse(&stored, &etsi).expect("parses");
    assert_eq!(
        decoded.attributes.keys().collect::<Vec<_>>(),
        [
            &dflt("almostFull"),
            &"https://ngsi-ld-test-suite/context#almostFull".to_owned()
        ]
    );
    let rendered = render::entity(&decoded, &etsi, &key_values());
    assert_eq!(
        Value::Object(rendered),
        json!({"id": ID, "type": "Vehicle", "ngsi-ld:default-context/almostFull": true, "almostFull": false})
    );
}

#[test]
fn projection() {
    let all = json!({
        "id": ID,
        "type": "Vehicle",
        "speed": 80,
        "brand": "Mercedes",
        "owner": "urn:ngsi-ld:Person:1",
        "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
    });
    for (projection, expected) in [
        (Projection::default(), all.clone()),
        (
            Projection {
                keep: Some(names(&["speed", "brand"])),
                ..Projection::default()
            },
            json!({"id": ID, "type": "Vehicle", "speed": 80, "brand": "Mercedes"}),
        ),
        (
            Projection {
                omit: names(&["speed", "location"]),
                ..Projection::default()
            },
            json!({"id": ID, "type": "Vehicle", "brand": "Mercedes", "owner": "urn:ngsi-ld:Person:1"}),
        ),
        (
            Projection {
                keep: Some(names(&["speed", "brand"])),
                omit: names(&["brand"]),
                ..Projection::default()
            },
            json!({"id": ID, "type": "Vehicle", "speed": 80}),
        ),
        (
            Projection {
                keep: Some(names(&["unknown"])),
                omit_id: true,
                omit_type: true,
                ..Projection::default()
            },
            json!({}),
        ),
        (
            Projection {
                keep: Some(names(&["owner"])),
                omit_id: true,
                ..Projection::default()
            },
            json!({"type": "Vehicle", "owner": "urn:ngsi-ld:Person:1"}),
        ),
        (
            Projection {
                omit_type: true,
                ..Projection::default()
            },
            json!({"id": ID, "speed": 80, "brand": "Mercedes", "owner": "urn:ngsi-ld:Person:1", "location": {"type": "Point", "coordinates": [-3.7, 40.4]}}),
        ),
    ] {
        let options = RenderOptions {
            format: Format::KeyValues,
            ..projected(projection)
        };
        check(sample(), &options, expected);
    }
    // Projection applies to the entity's attributes, not to sub-attributes.
    let options = projected(Projection {
        keep: Some(names(&["speed"])),
        ..Projection::default()
    });
    check(
        json!({"id": ID, "type": "Vehicle", "speed": {"value": 80, "accuracy": 0.9}, "brand": 1}),
        &options,
        json!({"id": ID, "type": "Vehicle", "speed": {"type": "Property", "value": 80, "accuracy": {"type": "Property", "value": 0.9}}}),
    );
}

#[test]
fn system_attributes() {
    let mut vehicle = entity(&json!({
        "id": ID,
        "type": "Vehicle",
        "speed": {"value": 80, "accuracy": 0.9},
    }));
    update::stamp_created(&mut vehicle, at(0));
    let append = crate::support::attributes(&json!({"brand": "x"}), user()).expect("valid");
    update::append(&mut vehicle, append, true, at(5));
    let check_sys = |options: &RenderOptions, expected: Value| {
        let rendered = Value::Object(render::entity(&vehicle, user(), options));
        assert_eq!(rendered, expected, "{options:?}");
    };
    check_sys(
        &with_sys_attrs(normalized()),
        json!({
            "id": ID,
            "type": "Vehicle",
            "createdAt": stamp(0),
            "modifiedAt": stamp(5),
            "speed": {
                "type": "Property",
                "value": 80,
                "createdAt": stamp(0),
                "modifiedAt": stamp(0),
                "accuracy": {"type": "Property", "value": 0.9},
            },
            "brand": {"type": "Property", "value": "x", "createdAt": stamp(5), "modifiedAt": stamp(5)},
        }),
    );
    // With sysAttrs, concise attributes carry their timestamps and so keep their `value`.
    check_sys(
        &with_sys_attrs(concise()),
        json!({
            "id": ID,
            "type": "Vehicle",
            "createdAt": stamp(0),
            "modifiedAt": stamp(5),
            "speed": {"value": 80, "createdAt": stamp(0), "modifiedAt": stamp(0), "accuracy": 0.9},
            "brand": {"value": "x", "createdAt": stamp(5), "modifiedAt": stamp(5)},
        }),
    );
    // keyValues has no room for them.
    check_sys(
        &with_sys_attrs(key_values()),
        json!({"id": ID, "type": "Vehicle", "speed": 80, "brand": "x"}),
    );
    check_sys(
        &normalized(),
        json!({
            "id": ID,
            "type": "Vehicle",
            "speed": {"type": "Property", "value": 80, "accuracy": {"type": "Property", "value": 0.9}},
            "brand": {"type": "Property", "value": "x"},
        }),
    );
    assert_eq!(stamp(0), "2024-01-01T10:00:00.000000Z");
}

#[test]
fn geojson_feature() {
    let vehicle = entity(&json!({
        "id": ID,
        "type": "Vehicle",
        "speed": 80,
        "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
        "area": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
    }));
    // Clause 4.5.16: the chosen GeoProperty becomes the geometry; `properties` holds the rest of
    // the entity, the geometry's own attribute included.
    let check_feature = |options: &RenderOptions, geometry_property: &str, expected: Value| {
        let feature = render::feature(&vehicle, user(), options, geometry_property);
        assert_eq!(feature, expected, "{geometry_property} {options:?}");
    };
    check_feature(
        &key_values(),
        &ngsi("location"),
        json!({
            "id": ID,
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [-3.7, 40.4]},
            "properties": {
                "type": "Vehicle",
                "speed": 80,
                "location": {"type": "Point", "coordinates": [-3.7, 40.4]},
                "area": {"type": "Point", "coordinates": [1, 2]},
            },
        }),
    );
    check_feature(
        &normalized(),
        &dflt("area"),
        json!({
            "id": ID,
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [1, 2]},
            "properties": {
                "type": "Vehicle",
                "speed": {"type": "Property", "value": 80},
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}},
                "area": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
            },
        }),
    );
    // No such GeoProperty, or not a GeoProperty: the geometry is null.
    for missing in [dflt("nowhere"), dflt("speed")] {
        let feature = render::feature(&vehicle, user(), &key_values(), &missing);
        assert_eq!(feature["geometry"], Value::Null, "{missing}");
    }
}

#[test]
fn single_attribute_rendering() {
    let vehicle = entity(&sample());
    let instances = &vehicle.attributes[&ngsi("location")];
    assert_eq!(
        render::attribute(instances, user(), &key_values()),
        json!({"type": "Point", "coordinates": [-3.7, 40.4]})
    );
    assert_eq!(
        render::attribute(&vehicle.attributes[&ex("brandName")], user(), &normalized()),
        json!({"type": "Property", "value": "Mercedes"})
    );
}
