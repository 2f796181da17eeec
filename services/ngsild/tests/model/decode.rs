//! Expansion of request payloads to the canonical form and its validation into the model
//! (clauses 4.5 and 5.2): each case is a payload and the canonical JSON of the entity it decodes to,
//! or the error it is refused with.

use civitas_ngsild::canonical::{self, Trust};
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::entity::AttributeValue;
use civitas_ngsild::expand::{self, Payload};
use civitas_ngsild::{Error, ErrorType};
use serde_json::{Value, json};

use crate::support::{
    DEFAULT, EX, assert_bad, canonical_of, dflt, entity, ex, ngsi, parse, user, with_core,
};

const ID: &str = "urn:ngsi-ld:Vehicle:A1";

/// Wraps attributes into a whole entity payload of type `Vehicle`.
fn vehicle(attributes: Value) -> Value {
    let mut payload = json!({"id": ID, "type": "Vehicle"});
    for (name, value) in attributes.as_object().expect("attributes are an object") {
        payload[name] = value.clone();
    }
    payload
}

/// The canonical form of a `Vehicle` with the given expanded attributes.
fn canonical_vehicle(attributes: Value) -> Value {
    let mut expected = json!({"id": ID, "type": [ex("Vehicle")]});
    for (name, value) in attributes.as_object().expect("attributes are an object") {
        expected[name] = value.clone();
    }
    expected
}

/// The attributes of a `Vehicle` payload decode, under the user context, to these canonical ones.
fn check(attributes: Value, expected: Value) {
    let payload = vehicle(attributes);
    assert_eq!(
        canonical_of(&entity(&payload)),
        canonical_vehicle(expected),
        "{payload}"
    );
}

/// A whole payload decodes, under the user context, to this canonical entity.
fn check_entity(payload: Value, expected: Value) {
    assert_eq!(canonical_of(&entity(&payload)), expected, "{payload}");
}

/// The attributes of a `Vehicle` payload are refused with `BadRequestData` mentioning `needle`.
fn check_bad(attributes: Value, needle: &str) {
    let payload = vehicle(attributes);
    assert_bad(parse(&payload, user()), needle, &payload);
}

/// A whole payload is refused with `BadRequestData` mentioning `needle`.
fn check_bad_entity(payload: Value, needle: &str, ctx: &ActiveContext) {
    assert_bad(parse(&payload, ctx), needle, &payload);
}

#[test]
fn property() {
    for value in [
        json!(80),
        json!("fast"),
        json!(false),
        json!(0),
        json!(""),
        json!([1, 2]),
    ] {
        let expected = json!({dflt("speed"): [{"type": "Property", "value": value}]});
        // Normalized, then concise (clause 4.5.18): a bare value is a Property.
        check(
            json!({"speed": {"type": "Property", "value": value}}),
            expected.clone(),
        );
        check(json!({"speed": value}), expected.clone());
        check(json!({"speed": {"value": value}}), expected);
    }
    // A concise object without value members is a Property whose value is that object; keys inside
    // a value are never expanded (clause 4.5.2).
    check(
        json!({"address": {"street": "Calle Mayor", "id": 1}}),
        json!({dflt("address"): [{"type": "Property", "value": {"street": "Calle Mayor", "id": 1}}]}),
    );
    // With a `type` member the object reads as a normalized attribute, so a concise object value
    // that has its own `type` must be written as `{"value": {...}}`.
    check_bad(
        json!({"address": {"street": "Calle Mayor", "type": "PostalAddress"}}),
        "\"PostalAddress\" is not an NGSI-LD attribute type",
    );
    check(
        json!({"address": {"value": {"street": "Calle Mayor", "type": "PostalAddress"}}}),
        json!({dflt("address"): [{"type": "Property", "value": {"street": "Calle Mayor", "type": "PostalAddress"}}]}),
    );
    check(
        json!({"address": {"type": "Property", "value": {"street": "Calle Mayor", "id": 1}}}),
        json!({dflt("address"): [{"type": "Property", "value": {"street": "Calle Mayor", "id": 1}}]}),
    );
    check(
        json!({"speed": {"type": "Property", "value": 80, "unitCode": "KMH", "observedAt": "2024-01-01T10:00:00Z"}}),
        json!({dflt("speed"): [{"type": "Property", "value": 80, "unitCode": "KMH", "observedAt": "2024-01-01T10:00:00Z"}]}),
    );
    check_bad(
        json!({"speed": {"type": "Property", "value": null}}),
        "must not be null",
    );
    check_bad(
        json!({"speed": {"type": "Property"}}),
        "needs a non-null \"value\"",
    );
    check_bad(json!({"speed": null}), "must not be null");
    check_bad(
        json!({"speed": {"type": "Propertyy", "value": 1}}),
        "is not an NGSI-LD attribute type",
    );
}

#[test]
fn relationship() {
    let owner = "urn:ngsi-ld:Person:1";
    let expected = json!({dflt("ownedBy"): [{"type": "Relationship", "object": owner}]});
    check(
        json!({"ownedBy": {"type": "Relationship", "object": owner}}),
        expected.clone(),
    );
    check(json!({"ownedBy": {"object": owner}}), expected);
    // Arrays of objects (clause 4.5.3), objectType expanded as a name, object as an @id value.
    check(
        json!({"ownedBy": {"type": "Relationship", "object": [owner, "ex:person2"], "objectType": "Vehicle"}}),
        json!({dflt("ownedBy"): [{"type": "Relationship", "object": [owner, ex("person2")], "objectType": ex("Vehicle")}]}),
    );
    check(
        json!({"ownedBy": {"object": owner, "objectType": ["Vehicle", "Person"]}}),
        json!({dflt("ownedBy"): [{"type": "Relationship", "object": owner, "objectType": [ex("Vehicle"), dflt("Person")]}]}),
    );
    check_bad(
        json!({"ownedBy": {"type": "Relationship", "object": "not a uri"}}),
        "a Relationship object must be a URI",
    );
    check_bad(
        json!({"ownedBy": {"type": "Relationship", "object": []}}),
        "non-empty array of URIs",
    );
    check_bad(
        json!({"ownedBy": {"type": "Relationship", "object": 5}}),
        "a Relationship object must be a URI",
    );
    check_bad(
        json!({"ownedBy": {"type": "Relationship", "object": [owner, 5]}}),
        "a Relationship object must be a URI",
    );
    check_bad(
        json!({"ownedBy": {"type": "Relationship"}}),
        "needs a non-null \"object\"",
    );
    check_bad(
        json!({"ownedBy": {"object": owner, "objectType": 5}}),
        "objectType must be a string",
    );
    // The error names the attribute; validation runs on the canonical form, so the name is the
    // expanded one, not the one the caller wrote.
    check_bad(
        json!({"ownedBy": {"object": "nope"}}),
        &format!("attribute \"{}\"", dflt("ownedBy")),
    );
}

#[test]
fn geo_property() {
    let point = json!({"type": "Point", "coordinates": [-3.7, 40.4]});
    let expected = json!({ngsi("location"): [{"type": "GeoProperty", "value": point}]});
    check(
        json!({"location": {"type": "GeoProperty", "value": point}}),
        expected.clone(),
    );
    // Concise: the bare geometry (clause 4.5.18), for any attribute name.
    check(json!({"location": point}), expected);
    check(
        json!({"area": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}),
        json!({dflt("area"): [{"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}),
    );
    check_bad(
        json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [200, 0]}}}),
        "invalid coordinates for a Point",
    );
    check_bad(
        json!({"location": {"type": "Point", "coordinates": [1]}}),
        "invalid coordinates for a Point",
    );
    check_bad(
        json!({"location": {"type": "GeoProperty", "value": "Madrid"}}),
        "GeoJSON geometry",
    );
    check_bad(
        json!({"location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}}),
        "invalid coordinates for a Polygon",
    );
}

#[test]
fn language_property() {
    let map =
        json!({"en": "Main street", "es": ["Calle Mayor", "Calle Principal"], "@none": "Main"});
    let expected = json!({dflt("street"): [{"type": "LanguageProperty", "languageMap": map}]});
    check(
        json!({"street": {"type": "LanguageProperty", "languageMap": map}}),
        expected.clone(),
    );
    check(json!({"street": {"languageMap": map}}), expected);
    check_bad(
        json!({"street": {"languageMap": {"en": 5}}}),
        "languageMap values must be strings",
    );
    check_bad(
        json!({"street": {"languageMap": "Main street"}}),
        "languageMap must be an object",
    );
    check_bad(json!({"street": {"languageMap": null}}), "must not be null");
}

#[test]
fn vocab_property() {
    // `vocab` values are names: expanded with the context (clause 4.5.20).
    check(
        json!({"category": {"type": "VocabProperty", "vocab": "Vehicle"}}),
        json!({dflt("category"): [{"type": "VocabProperty", "vocab": ex("Vehicle")}]}),
    );
    check(
        json!({"category": {"vocab": ["commercial", "ex:public", "https://example.org/x"]}}),
        json!({dflt("category"): [{"type": "VocabProperty", "vocab": [dflt("commercial"), ex("public"), "https://example.org/x"]}]}),
    );
    check_bad(
        json!({"category": {"vocab": 5}}),
        "vocab must be a string or an array of strings",
    );
    check_bad(
        json!({"category": {"vocab": [1]}}),
        "vocab must hold strings",
    );
    check_bad(
        json!({"category": {"type": "VocabProperty", "vocab": []}}),
        "vocab must be a string or an array of strings",
    );
}

#[test]
fn json_property() {
    // `json` is kept verbatim: no expansion, nested nulls and keyword-like keys included
    // (clause 4.5.24).
    let json_value =
        json!({"a": null, "type": "Point", "id": "x", "b": [null, {"c": null}], "speed": 1});
    let expected = json!({dflt("config"): [{"type": "JsonProperty", "json": json_value}]});
    check(
        json!({"config": {"type": "JsonProperty", "json": json_value}}),
        expected.clone(),
    );
    check(json!({"config": {"json": json_value}}), expected);
    check(
        json!({"config": {"json": [1, null, "x"]}}),
        json!({dflt("config"): [{"type": "JsonProperty", "json": [1, null, "x"]}]}),
    );
    check_bad(
        json!({"config": {"type": "JsonProperty", "json": null}}),
        "json must not be null",
    );
    check_bad(
        json!({"config": {"type": "JsonProperty"}}),
        "needs a non-null \"json\"",
    );
}

#[test]
fn list_property_and_list_relationship() {
    let list = json!([1, "two", {"three": 3}, [4]]);
    let expected = json!({dflt("readings"): [{"type": "ListProperty", "valueList": list}]});
    check(
        json!({"readings": {"type": "ListProperty", "valueList": list}}),
        expected.clone(),
    );
    check(json!({"readings": {"valueList": list}}), expected);
    check_bad(
        json!({"readings": {"valueList": 5}}),
        "valueList must be an array",
    );

    // objectList items are `{"object": URI}` (clause 4.5.22) or bare URIs; kept as expanded ids.
    let expected = json!({dflt("route"): [{"type": "ListRelationship", "objectList": ["urn:ngsi-ld:Stop:1", ex("stop2")]}]});
    check(
        json!({"route": {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Stop:1"}, {"object": "ex:stop2"}]}}),
        expected.clone(),
    );
    check(
        json!({"route": {"objectList": ["urn:ngsi-ld:Stop:1", "ex:stop2"]}}),
        expected,
    );
    check_bad(
        json!({"route": {"objectList": [5]}}),
        "objectList items must be URIs",
    );
    check_bad(
        json!({"route": {"objectList": ["not a uri"]}}),
        "objectList items must be URIs",
    );
    check_bad(
        json!({"route": {"objectList": "urn:ngsi-ld:Stop:1"}}),
        "objectList must be an array",
    );
}

#[test]
fn multi_attributes() {
    // Instances are told apart by datasetId; at most one default instance (clause 4.5.5).
    check(
        json!({"speed": [
            {"type": "Property", "value": 80},
            {"type": "Property", "value": 81, "datasetId": "urn:ngsi-ld:Dataset:gps"},
        ]}),
        json!({dflt("speed"): [
            {"type": "Property", "value": 80},
            {"type": "Property", "value": 81, "datasetId": "urn:ngsi-ld:Dataset:gps"},
        ]}),
    );
    // Concise instances, and instances of different attribute types.
    check(
        json!({"speed": [{"value": 80}, {"object": "urn:ngsi-ld:Sensor:1", "datasetId": "urn:ds:1"}]}),
        json!({dflt("speed"): [
            {"type": "Property", "value": 80},
            {"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1", "datasetId": "urn:ds:1"},
        ]}),
    );
    // An array of plain objects is a concise Property's array value, not a multi-attribute.
    check(
        json!({"stops": [{"name": "a"}, {"name": "b"}]}),
        json!({dflt("stops"): [{"type": "Property", "value": [{"name": "a"}, {"name": "b"}]}]}),
    );
    check_bad(
        json!({"speed": [{"type": "Property", "value": 80}, {"type": "Property", "value": 81}]}),
        "only one default instance is allowed",
    );
    check_bad(
        json!({"speed": [{"value": 80, "datasetId": "urn:ds:1"}, {"value": 81, "datasetId": "urn:ds:1"}]}),
        "two instances share the datasetId urn:ds:1",
    );
    check_bad(
        json!({"speed": {"value": 80, "datasetId": "gps"}}),
        "datasetId must be a URI",
    );
    check_bad(
        json!({"speed": {"value": 80, "datasetId": 5}}),
        "datasetId must be a URI",
    );
}

#[test]
fn sub_attributes() {
    check(
        json!({"speed": {
            "type": "Property",
            "value": 80,
            "accuracy": {"type": "Property", "value": 0.9, "unitCode": "P1"},
            "measuredBy": {"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1"},
            "brand": 0.5,
            "ex:quality": {"value": "good", "checkedBy": {"object": "urn:ngsi-ld:Person:2"}},
        }}),
        json!({dflt("speed"): [{
            "type": "Property",
            "value": 80,
            dflt("accuracy"): [{"type": "Property", "value": 0.9, "unitCode": "P1"}],
            dflt("measuredBy"): [{"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1"}],
            ex("brandName"): [{"type": "Property", "value": 0.5}],
            ex("quality"): [{
                "type": "Property",
                "value": "good",
                dflt("checkedBy"): [{"type": "Relationship", "object": "urn:ngsi-ld:Person:2"}],
            }],
        }]}),
    );
    check_bad(
        json!({"speed": {"value": 80, "accuracy": {"type": "Property"}}}),
        &format!(
            "attribute \"{}\": a Property needs a non-null \"value\"",
            dflt("accuracy")
        ),
    );
    check_bad(
        json!({"speed": {"value": 80, "sp eed": 1}}),
        "\"sp eed\" is not a valid attribute name",
    );
    // `id` in the core context is an alias of `@id`, so it cannot name a sub-attribute.
    check_bad(
        json!({"speed": {"value": 80, "id": 1}}),
        "expands to the JSON-LD keyword @id",
    );
    // Sub-attributes nest at most 16 levels deep.
    let mut deep = json!(1);
    for _ in 0..18 {
        deep = json!({"value": 1, "inner": deep});
    }
    check_bad(json!({"deep": deep}), "nest more than 16 levels deep");
}

#[test]
fn observed_at_and_unit_code() {
    for observed_at in [
        "2024-01-01T10:00:00Z",
        "2024-01-01T10:00:00.123Z",
        "2024-01-01T11:00:00+01:00",
    ] {
        // observedAt is kept as written.
        check(
            json!({"speed": {"value": 1, "observedAt": observed_at}}),
            json!({dflt("speed"): [{"type": "Property", "value": 1, "observedAt": observed_at}]}),
        );
    }
    for observed_at in [
        json!("yesterday"),
        json!("2024-01-01"),
        json!("2024-01-01T10:00:00"),
        json!(5),
        json!(null),
    ] {
        check_bad(
            json!({"speed": {"value": 1, "observedAt": observed_at}}),
            "observedAt must be an ISO 8601 date-time",
        );
    }
    for unit_code in [json!(""), json!(5), json!(null)] {
        check_bad(
            json!({"speed": {"value": 1, "unitCode": unit_code}}),
            "unitCode must be a non-empty string",
        );
    }
}

#[test]
fn system_attributes_from_callers_are_ignored() {
    // createdAt, modifiedAt, deletedAt and instanceId belong to the system (clause 4.8), even
    // when they are not valid date-times.
    check_entity(
        json!({
            "id": ID,
            "type": "Vehicle",
            "createdAt": "2000-01-01T00:00:00Z",
            "modifiedAt": "garbage",
            "deletedAt": 5,
            "speed": {
                "value": 1,
                "createdAt": "2000-01-01T00:00:00Z",
                "modifiedAt": "garbage",
                "instanceId": "urn:x",
                "accuracy": {"value": 1, "createdAt": "2000-01-01T00:00:00Z"},
            },
        }),
        json!({"id": ID, "type": [ex("Vehicle")], dflt("speed"): [{
            "type": "Property",
            "value": 1,
            dflt("accuracy"): [{"type": "Property", "value": 1}],
        }]}),
    );
    let decoded = entity(&vehicle(json!({"createdAt": "2000-01-01T00:00:00Z"})));
    assert_eq!(decoded.created_at, None);
    assert_eq!(decoded.modified_at, None);
}

#[test]
fn entity_types() {
    for (types, expected) in [
        (json!("Vehicle"), json!([ex("Vehicle")])),
        (
            json!(["Vehicle", "Car"]),
            json!([ex("Vehicle"), "https://example.org/Car"]),
        ),
        // Duplicates go, also when two names expand to the same IRI (clause 4.16).
        (
            json!(["Vehicle", "Car", "Vehicle"]),
            json!([ex("Vehicle"), "https://example.org/Car"]),
        ),
        (
            json!(["Vehicle", "ex:Vehicle", EX.to_owned() + "Vehicle"]),
            json!([ex("Vehicle")]),
        ),
        (json!(["Bus"]), json!([dflt("Bus")])),
    ] {
        check_entity(
            json!({"id": ID, "type": types}),
            json!({"id": ID, "type": expected}),
        );
    }
    // `@id` and `@type` are accepted as the keywords they alias.
    check_entity(
        json!({"@id": ID, "@type": "Vehicle"}),
        json!({"id": ID, "type": [ex("Vehicle")]}),
    );
    for (types, needle) in [
        (json!([]), "non-empty array of strings"),
        (json!(5), "must be a string or a non-empty array"),
        (json!(["Vehicle", 5]), "entity types must be strings"),
        (
            json!("Vehicle Car"),
            "\"Vehicle Car\" is not a valid entity type name",
        ),
        (json!("@Vehicle"), "is not a valid entity type name"),
        (json!(""), "is not a valid entity type name"),
    ] {
        check_bad_entity(json!({"id": ID, "type": types}), needle, user());
    }
    check_bad_entity(json!({"id": ID}), "the entity has no type", user());
}

#[test]
fn names_that_expand_to_keywords_are_refused() {
    let ctx = with_core(json!({"Alias": "@id", "kind": "@type"}));
    check_bad_entity(
        json!({"id": ID, "type": "Alias"}),
        "the entity type \"Alias\" expands to the JSON-LD keyword @id",
        &ctx,
    );
    check_bad_entity(
        json!({"id": ID, "type": "Vehicle", "kind": 1}),
        "the attribute name \"kind\" expands to the JSON-LD keyword @type",
        &ctx,
    );
    assert_bad(
        expand::attribute_name("Alias", &ctx),
        "expands to the JSON-LD keyword",
        &"Alias",
    );
    assert_eq!(expand::attribute_name("speed", &ctx), Ok(dflt("speed")));
}

#[test]
fn scope() {
    for (scope, expected) in [
        (json!("/Madrid"), json!(["/Madrid"])),
        (
            json!(["/Madrid/Gardens", "/Company/Fleet_1"]),
            json!(["/Madrid/Gardens", "/Company/Fleet_1"]),
        ),
    ] {
        check_entity(
            json!({"id": ID, "type": "Vehicle", "scope": scope}),
            json!({"id": ID, "type": [ex("Vehicle")], "scope": expected}),
        );
    }
    for (scope, needle) in [
        (json!("Madrid"), "is not a valid scope"),
        (json!("/Madrid//Gardens"), "is not a valid scope"),
        (json!("/"), "is not a valid scope"),
        (json!(5), "scope must be a string or an array of strings"),
        (json!([5]), "scope must be a string or an array of strings"),
    ] {
        check_bad_entity(
            json!({"id": ID, "type": "Vehicle", "scope": scope}),
            needle,
            user(),
        );
    }
}

#[test]
fn entity_ids_and_attribute_names() {
    for (payload, needle) in [
        (json!({"type": "Vehicle"}), "the entity has no id"),
        (
            json!({"id": 5, "type": "Vehicle"}),
            "the entity id must be a string",
        ),
        (
            json!({"id": "Vehicle A1", "type": "Vehicle"}),
            "is not an absolute URI",
        ),
        (
            json!({"id": "urn:", "type": "Vehicle"}),
            "is not an absolute URI",
        ),
        (
            json!({"id": "A1", "type": "Vehicle"}),
            "\"A1\" is not an absolute URI",
        ),
        (
            json!({"id": format!("urn:{}", "a".repeat(2100)), "type": "Vehicle"}),
            "longer than 2048",
        ),
        (
            vehicle(json!({"sp eed": 1})),
            "\"sp eed\" is not a valid attribute name",
        ),
        (vehicle(json!({"a(b": 1})), "is not a valid attribute name"),
        (
            vehicle(json!({"@speed": 1})),
            "is not a valid attribute name",
        ),
        // Two names that expand to the same IRI.
        (
            vehicle(json!({"brand": 1, "ex:brandName": 2})),
            "appears twice once its name is expanded",
        ),
        (json!([]), "the payload must be a JSON object"),
    ] {
        check_bad_entity(payload, needle, user());
    }
    // The payload's @context member is not an attribute.
    check_entity(
        json!({"id": ID, "type": "Vehicle", "@context": ["https://example.org/ctx.jsonld"]}),
        json!({"id": ID, "type": [ex("Vehicle")]}),
    );
}

#[test]
fn errors_are_bad_request_data() {
    let error = parse(&vehicle(json!({"speed": null})), user()).expect_err("refused");
    assert_eq!(error.error_type(), ErrorType::BadRequestData);
    assert_eq!(
        error.error_type().uri(),
        "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    );
    assert_eq!(
        Error::ContextNotLoaded("x".to_owned()).error_type(),
        ErrorType::LdContextNotAvailable
    );
    assert_eq!(
        Error::InvalidContext("x".to_owned()).error_type(),
        ErrorType::BadRequestData
    );
    assert_eq!(
        Error::CorruptRecord("x".to_owned()).error_type(),
        ErrorType::InternalError
    );
}

#[test]
fn fragments_and_partial_payloads() {
    let ctx = user();
    // A fragment needs neither id nor type.
    let fragment = expand::entity(&json!({"speed": 1}), ctx, Payload::Fragment).expect("expands");
    assert_eq!(
        Value::Object(fragment),
        json!({dflt("speed"): [{"type": "Property", "value": 1}]})
    );
    // A partial payload may carry null or the NGSI-LD Null (clause 4.8) to delete, and
    // instances without a value.
    let partial = expand::entity(
        &json!({"speed": null, "brand": "urn:ngsi-ld:null", "ex:unit": {"unitCode": "KMH"}, "scope": "/A"}),
        ctx,
        Payload::Partial,
    )
    .expect("expands");
    assert_eq!(
        Value::Object(partial),
        json!({dflt("speed"): null, ex("brandName"): [{"type": "Property", "value": "urn:ngsi-ld:null"}], ex("unit"): [{"unitCode": "KMH"}], "scope": ["/A"]})
    );
    // Outside partial payloads the NGSI-LD Null is an ordinary string value.
    let fragment = expand::entity(
        &json!({"speed": "urn:ngsi-ld:null"}),
        ctx,
        Payload::Fragment,
    )
    .expect("expands");
    assert_eq!(
        Value::Object(fragment),
        json!({dflt("speed"): [{"type": "Property", "value": "urn:ngsi-ld:null"}]})
    );
    // An attribute payload on its own (PATCH/PUT …/attrs/{attrId}); its @context is dropped.
    let attribute = expand::attribute_payload(
        &json!({"value": 5, "observedAt": "2024-01-01T10:00:00Z", "@context": "x"}),
        ctx,
        Payload::Partial,
    )
    .expect("expands");
    assert_eq!(
        attribute,
        json!([{"type": "Property", "value": 5, "observedAt": "2024-01-01T10:00:00Z"}])
    );
    assert_eq!(
        expand::attribute_payload(&json!(null), ctx, Payload::Partial),
        Ok(Value::Null)
    );
    assert_bad(
        expand::attribute_payload(&json!(null), ctx, Payload::Fragment),
        "must not be null",
        &"null",
    );
}

#[test]
fn canonical_instances_decode_alone() {
    // The store and the partial update decode instances one attribute at a time.
    let instances = canonical::decode_instances(
        &json!({"type": "Relationship", "object": "urn:a:1", "createdAt": "2024-01-01T10:00:00Z"}),
        Trust::Stored,
    )
    .expect("decodes");
    assert_eq!(instances.len(), 1);
    assert_eq!(
        instances[0].value,
        AttributeValue::Relationship {
            object: json!("urn:a:1"),
            object_type: None
        }
    );
    assert!(
        instances[0].created_at.is_some(),
        "stored timestamps are trusted"
    );
    let from_caller = canonical::decode_instances(
        &json!([{"value": 1, "createdAt": "2024-01-01T10:00:00Z"}]),
        Trust::Caller,
    )
    .expect("decodes");
    assert_eq!(from_caller[0].created_at, None);
    assert_eq!(from_caller[0].value, AttributeValue::Property(json!(1)));
    for (value, needle) in [
        (json!([]), "non-empty array of instances"),
        (json!(5), "an object or a non-empty array"),
        (json!([5]), "must be a JSON object"),
        (
            json!({"type": "Property", "value": 1, "createdAt": "then"}),
            "createdAt must be an ISO 8601",
        ),
    ] {
        assert_bad(
            canonical::decode_instances(&value, Trust::Stored),
            needle,
            &value,
        );
    }
    assert!(DEFAULT.ends_with('/'));
}
