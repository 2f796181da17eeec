//! The write operations of clause 5.6 (`ngsild::update`): each case is an entity (created at minute
//! 0), an operation at minute 1 and the entity expected afterwards, rendered normalized under the user
//! context, with the operation's report.

use civitas_ngsild::entity::Entity;
use civitas_ngsild::expand::{self, Payload};
use civitas_ngsild::render::{self, RenderOptions};
use civitas_ngsild::update::{self, UpdateReport};
use serde_json::{Value, json};

use crate::support::{assert_bad, at, attributes, dflt, entity, partial, stamp, user};

const ID: &str = "urn:ngsi-ld:Vehicle:A1";
const GPS: &str = "urn:ngsi-ld:Dataset:gps";

/// A normalized Property, as expected outputs write it.
fn p(value: Value) -> Value {
    json!({"type": "Property", "value": value})
}

/// The entity most cases start from: a multi-attribute, a plain Property and a scope.
fn base() -> Value {
    json!({
        "id": ID,
        "type": "Vehicle",
        "scope": "/Madrid",
        "speed": [
            {"type": "Property", "value": 80, "unitCode": "KMH", "accuracy": {"type": "Property", "value": 0.9}},
            {"type": "Property", "value": 81, "datasetId": GPS},
        ],
        "brand": {"type": "Property", "value": "Mercedes"},
    })
}

/// `payload` parsed under the user context and created at minute 0.
fn created(payload: &Value) -> Entity {
    let mut created = entity(payload);
    update::stamp_created(&mut created, at(0));
    created
}

/// The entity rendered normalized, without system attributes.
fn shown(entity: &Entity) -> Value {
    Value::Object(render::entity(entity, user(), &RenderOptions::default()))
}

/// The names of a report, compacted: (updated, not updated).
fn report_names(report: &UpdateReport) -> (Vec<String>, Vec<String>) {
    let compact = |name: &str| user().compact_name(name).into_owned();
    (
        report.updated.iter().map(|n| compact(n)).collect(),
        report
            .not_updated
            .iter()
            .map(|n| compact(&n.name))
            .collect(),
    )
}

/// Appends `fragment` (clause 5.6.3) to `before`.
fn check_append(
    before: Value,
    fragment: Value,
    overwrite: bool,
    expected: Value,
    report: (&[&str], &[&str]),
) {
    let mut entity = created(&before);
    let attributes = attributes(&fragment, user()).unwrap_or_else(|e| panic!("{fragment}: {e}"));
    let actual = update::append(&mut entity, attributes, overwrite, at(1));
    assert_eq!(
        shown(&entity),
        expected,
        "append {fragment} (overwrite: {overwrite})"
    );
    assert_eq!(
        report_names(&actual),
        (strings(report.0), strings(report.1)),
        "{fragment}"
    );
    let modified = if actual.updated.is_empty() {
        at(0)
    } else {
        at(1)
    };
    assert_eq!(entity.modified_at, Some(modified), "{fragment}");
}

/// Update entity attributes (clause 5.6.2) with a partial `fragment`.
fn check_update(before: Value, fragment: Value, expected: Value, report: (&[&str], &[&str])) {
    let mut entity = created(&before);
    let actual = update::update_attributes(&mut entity, &partial(&fragment, user()), at(1))
        .unwrap_or_else(|e| panic!("{fragment}: {e}"));
    assert_eq!(shown(&entity), expected, "update {fragment}");
    assert_eq!(
        report_names(&actual),
        (strings(report.0), strings(report.1)),
        "{fragment}"
    );
}

/// Partial attribute update (clause 5.6.4) of `name` with `fragment`: its outcome and the entity.
fn check_partial(before: Value, name: &str, fragment: Value, found: bool, expected: Value) {
    let mut entity = created(&before);
    let fragment_canonical = expand::attribute_payload(&fragment, user(), Payload::Partial)
        .unwrap_or_else(|e| panic!("{fragment}: {e}"));
    let outcome = update::partial_update_attribute(
        &mut entity,
        &user().expand_name(name),
        &fragment_canonical,
        at(1),
    );
    assert_eq!(
        outcome,
        Ok(found),
        "partial update of {name} with {fragment}"
    );
    assert_eq!(
        shown(&entity),
        expected,
        "partial update of {name} with {fragment}"
    );
}

/// A partial attribute update that is refused.
fn check_partial_bad(before: Value, name: &str, fragment: Value, needle: &str) {
    let mut entity = created(&before);
    let fragment_canonical = expand::attribute_payload(&fragment, user(), Payload::Partial)
        .unwrap_or_else(|e| panic!("{fragment}: {e}"));
    let outcome = update::partial_update_attribute(
        &mut entity,
        &user().expand_name(name),
        &fragment_canonical,
        at(1),
    );
    assert_bad(outcome, needle, &fragment);
}

/// Merge entity (clause 5.6.17) with a partial `fragment`.
fn check_merge(before: Value, fragment: Value, expected: Value) {
    let mut entity = created(&before);
    update::merge_entity(&mut entity, &partial(&fragment, user()), at(1))
        .unwrap_or_else(|e| panic!("{fragment}: {e}"));
    assert_eq!(shown(&entity), expected, "merge {fragment}");
    assert_eq!(entity.modified_at, Some(at(1)));
}

/// Delete attribute (clause 5.6.5): whether something was deleted, and the entity afterwards.
fn check_delete(
    before: Value,
    (name, dataset_id, delete_all): (&str, Option<&str>, bool),
    deleted: bool,
    expected: Value,
) {
    let mut entity = created(&before);
    let outcome = update::delete_attribute(
        &mut entity,
        &user().expand_name(name),
        dataset_id,
        delete_all,
        at(1),
    );
    assert_eq!(
        outcome, deleted,
        "delete {name} {dataset_id:?} (all: {delete_all})"
    );
    assert_eq!(shown(&entity), expected, "delete {name} {dataset_id:?}");
    let modified = if deleted { at(1) } else { at(0) };
    assert_eq!(entity.modified_at, Some(modified));
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// `base()` with some members replaced (or removed, with `null`).
fn base_with(changes: Value) -> Value {
    let mut entity = base();
    for (name, value) in changes.as_object().expect("an object") {
        if value.is_null() {
            entity.as_object_mut().expect("an object").remove(name);
        } else {
            entity[name] = value.clone();
        }
    }
    entity
}

fn speed_default() -> Value {
    json!({"type": "Property", "value": 80, "unitCode": "KMH", "accuracy": {"type": "Property", "value": 0.9}})
}

fn speed_gps() -> Value {
    json!({"type": "Property", "value": 81, "datasetId": GPS})
}

#[test]
fn append() {
    // New attributes are added; existing ones replaced, unless noOverwrite.
    check_append(
        base(),
        json!({"color": "red", "brand": "BMW"}),
        true,
        base_with(json!({"color": p(json!("red")), "brand": p(json!("BMW"))})),
        (&["color", "brand"], &[]),
    );
    check_append(
        base(),
        json!({"color": "red", "brand": "BMW"}),
        false,
        base_with(json!({"color": p(json!("red"))})),
        (&["color"], &["brand"]),
    );
    check_append(
        base(),
        json!({"brand": "BMW"}),
        false,
        base(),
        (&[], &["brand"]),
    );
    // Instances are matched by datasetId: a new one is added even with noOverwrite.
    check_append(
        base(),
        json!({"speed": {"value": 70, "datasetId": "urn:ngsi-ld:Dataset:radar"}}),
        false,
        base_with(json!({"speed": [
            speed_default(),
            speed_gps(),
            {"type": "Property", "value": 70, "datasetId": "urn:ngsi-ld:Dataset:radar"},
        ]})),
        (&["speed"], &[]),
    );
    // Overwriting the default instance replaces it whole and leaves the others.
    check_append(
        base(),
        json!({"speed": 90}),
        true,
        base_with(json!({"speed": [p(json!(90)), speed_gps()]})),
        (&["speed"], &[]),
    );
    // One attribute may be reported on both sides, once per instance.
    check_append(
        base(),
        json!({"speed": [{"value": 1}, {"value": 2, "datasetId": "urn:ngsi-ld:Dataset:radar"}]}),
        false,
        base_with(json!({"speed": [
            speed_default(),
            speed_gps(),
            {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:radar"},
        ]})),
        (&["speed"], &["speed"]),
    );
}

#[test]
fn append_stamps_new_and_replaced_instances() {
    let mut vehicle = created(&base());
    let fragment = attributes(&json!({"brand": "BMW", "color": "red"}), user()).expect("valid");
    update::append(&mut vehicle, fragment, true, at(1));
    let brand = vehicle
        .instance(&user().expand_name("brand"), None)
        .expect("brand");
    assert_eq!(
        (brand.created_at, brand.modified_at),
        (Some(at(0)), Some(at(1)))
    );
    let color = vehicle.instance(&dflt("color"), None).expect("color");
    assert_eq!(
        (color.created_at, color.modified_at),
        (Some(at(1)), Some(at(1)))
    );
    let gps = vehicle.instance(&dflt("speed"), Some(GPS)).expect("gps");
    assert_eq!(
        (gps.created_at, gps.modified_at),
        (Some(at(0)), Some(at(0)))
    );
    assert_eq!(
        (vehicle.created_at, vehicle.modified_at),
        (Some(at(0)), Some(at(1)))
    );
}

#[test]
fn append_scopes() {
    for (overwrite, scopes, expected) in [
        (true, vec!["/Fleet"], json!("/Fleet")),
        (
            false,
            vec!["/Fleet", "/Madrid"],
            json!(["/Madrid", "/Fleet"]),
        ),
    ] {
        let mut vehicle = created(&base());
        update::append_scopes(&mut vehicle, strings(&scopes), overwrite);
        assert_eq!(
            shown(&vehicle)["scope"],
            expected,
            "{scopes:?} (overwrite: {overwrite})"
        );
    }
}

#[test]
fn update_attributes() {
    // Existing attributes are replaced whole; absent ones are reported, not appended (clause 5.6.2).
    check_update(
        base(),
        json!({"brand": "BMW", "color": "red"}),
        base_with(json!({"brand": p(json!("BMW"))})),
        (&["brand"], &["color"]),
    );
    // Instances are matched by datasetId.
    check_update(
        base(),
        json!({"speed": {"value": 99, "datasetId": GPS}}),
        base_with(
            json!({"speed": [speed_default(), {"type": "Property", "value": 99, "datasetId": GPS}]}),
        ),
        (&["speed"], &[]),
    );
    check_update(
        base(),
        json!({"speed": {"value": 99, "datasetId": "urn:ngsi-ld:Dataset:radar"}}),
        base(),
        (&[], &["speed"]),
    );
    // The NGSI-LD Null deletes an instance (clause 4.8, ETSI tests 011_07 to 011_09).
    check_update(
        base(),
        json!({"speed": {"type": "Property", "value": "urn:ngsi-ld:null"}}),
        base_with(json!({"speed": speed_gps()})),
        (&["speed"], &[]),
    );
    check_update(
        base(),
        json!({"speed": {"type": "Property", "value": "urn:ngsi-ld:null", "datasetId": GPS}}),
        base_with(json!({"speed": speed_default()})),
        (&["speed"], &[]),
    );
    check_update(
        base(),
        json!({"brand": {"type": "Property", "value": "urn:ngsi-ld:null"}, "color": "urn:ngsi-ld:null"}),
        base_with(json!({"brand": null})),
        (&["brand"], &["color"]),
    );
    // A JSON null deletes the whole attribute.
    check_update(
        base(),
        json!({"speed": null}),
        base_with(json!({"speed": null})),
        (&["speed"], &[]),
    );
    // Types are added.
    check_update(
        base(),
        json!({"type": ["Car", "Vehicle"]}),
        base_with(json!({"type": ["Vehicle", "Car"]})),
        (&[], &[]),
    );
}

#[test]
fn update_attributes_concise_null_on_a_multi_attribute() {
    // The concise `"speed": "urn:ngsi-ld:null"` stands for
    // `{"type": "Property", "value": "urn:ngsi-ld:null"}` (clause 4.5.18), which deletes only the
    // default instance (clause 5.6.2; ETSI test 011_09).
    check_update(
        base(),
        json!({"speed": "urn:ngsi-ld:null"}),
        base_with(json!({"speed": speed_gps()})),
        (&["speed"], &[]),
    );
}

#[test]
fn update_attributes_scope() {
    // An existing scope is replaced (ETSI test 011_05_01) ...
    check_update(
        base(),
        json!({"scope": ["/Fleet", "/Spain"]}),
        base_with(json!({"scope": ["/Fleet", "/Spain"]})),
        (&["scope"], &[]),
    );
    // ... an absent one is not added (011_05_02).
    check_update(
        base_with(json!({"scope": null})),
        json!({"scope": "/Fleet"}),
        base_with(json!({"scope": null})),
        (&[], &["scope"]),
    );
    let mut vehicle = created(&base());
    assert_bad(
        update::update_attributes(
            &mut vehicle,
            &partial(&json!({"scope": "Fleet"}), user()),
            at(1),
        ),
        "is not a valid scope",
        &"Fleet",
    );
    // A canonical null scope clears it; expansion never produces one from a request.
    let mut vehicle = created(&base());
    let mut fragment = serde_json::Map::new();
    fragment.insert("scope".to_owned(), Value::Null);
    let report = update::update_attributes(&mut vehicle, &fragment, at(1)).expect("updates");
    assert_eq!(report.updated, ["scope"]);
    assert!(vehicle.scopes.is_empty());
}

#[test]
fn update_attributes_timestamps_and_validation() {
    let mut vehicle = created(&base());
    update::update_attributes(
        &mut vehicle,
        &partial(&json!({"brand": "BMW"}), user()),
        at(1),
    )
    .expect("updates");
    let brand = vehicle
        .instance(&user().expand_name("brand"), None)
        .expect("brand");
    assert_eq!(
        (brand.created_at, brand.modified_at),
        (Some(at(0)), Some(at(1)))
    );
    assert_eq!(vehicle.modified_at, Some(at(1)));

    // modifiedAt is the time of the last modification (clause 4.8); an update that changes nothing
    // (every attribute reported as not updated) leaves it at minute 0.
    let mut vehicle = created(&base());
    let report =
        update::update_attributes(&mut vehicle, &partial(&json!({"color": 1}), user()), at(1))
            .expect("runs");
    assert!(report.updated.is_empty());
    assert_eq!(vehicle.modified_at, Some(at(0)));

    // An invalid instance is refused ...
    let mut vehicle = created(&base());
    assert_bad(
        update::update_attributes(
            &mut vehicle,
            &partial(
                &json!({"brand": {"type": "Property", "unitCode": "X"}}),
                user(),
            ),
            at(1),
        ),
        "needs a non-null \"value\"",
        &"brand",
    );
    assert_eq!(shown(&vehicle), base());
    // Every instance is validated before the entity changes, types included.
    let mut vehicle = created(&base());
    let fragment = partial(
        &json!({"type": "Car", "brand": {"type": "Property"}}),
        user(),
    );
    assert!(update::update_attributes(&mut vehicle, &fragment, at(1)).is_err());
    assert_eq!(shown(&vehicle), base());
}

#[test]
fn partial_update_attribute() {
    // The fragment is merged into the instance: members it does not name are kept (clause 5.6.4).
    check_partial(
        base(),
        "speed",
        json!({"value": 90}),
        true,
        base_with(json!({"speed": [
            {"type": "Property", "value": 90, "unitCode": "KMH", "accuracy": {"type": "Property", "value": 0.9}},
            speed_gps(),
        ]})),
    );
    check_partial(
        base(),
        "speed",
        json!({"observedAt": "2024-01-01T10:00:00Z", "accuracy": 0.5, "unitCode": null}),
        true,
        base_with(json!({"speed": [
            {"type": "Property", "value": 80, "observedAt": "2024-01-01T10:00:00Z", "accuracy": {"type": "Property", "value": 0.5}},
            speed_gps(),
        ]})),
    );
    // A sub-relationship, as the ETSI test 012_01_01 adds one.
    check_partial(
        base(),
        "brand",
        json!({"providedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:JohnDoe"}}),
        true,
        base_with(json!({"brand": {
            "type": "Property",
            "value": "Mercedes",
            "providedBy": {"type": "Relationship", "object": "urn:ngsi-ld:Person:JohnDoe"},
        }})),
    );
    check_partial(
        base(),
        "speed",
        json!({"value": 99, "datasetId": GPS}),
        true,
        base_with(
            json!({"speed": [speed_default(), {"type": "Property", "value": 99, "datasetId": GPS}]}),
        ),
    );
    // The NGSI-LD Null deletes the instance (ETSI tests 012_05 to 012_07).
    check_partial(
        base(),
        "speed",
        json!({"value": "urn:ngsi-ld:null"}),
        true,
        base_with(json!({"speed": speed_gps()})),
    );
    check_partial(
        base(),
        "brand",
        json!({"type": "Property", "value": "urn:ngsi-ld:null"}),
        true,
        base_with(json!({"brand": null})),
    );
    // No such instance or attribute (ETSI tests 012_03).
    check_partial(
        base(),
        "speed",
        json!({"value": 1, "datasetId": "urn:ds:none"}),
        false,
        base(),
    );
    check_partial(base(), "color", json!({"value": 1}), false, base());
    check_partial(
        base_with(json!({"speed": speed_gps()})),
        "speed",
        json!({"value": 1}),
        false,
        base_with(json!({"speed": speed_gps()})),
    );
    // Refused: another attribute type (012_02_03), an empty fragment (012_02_04), a bad value.
    check_partial_bad(
        base(),
        "speed",
        json!({"type": "Relationship", "object": "urn:ngsi-ld:Car:1"}),
        "the attribute is a Property; a partial update cannot make it a Relationship",
    );
    check_partial_bad(
        base(),
        "speed",
        json!({}),
        "the attribute fragment is empty",
    );
    check_partial_bad(
        base(),
        "speed",
        json!({"observedAt": "now"}),
        "observedAt must be",
    );
}

#[test]
fn partial_update_attribute_restating_the_type() {
    // Clause 5.6.4 merges the fragment into the attribute; a fragment that restates the same type
    // keeps the value and sets the unit.
    check_partial(
        base(),
        "speed",
        json!({"type": "Property", "unitCode": "CEL"}),
        true,
        base_with(json!({"speed": [
            {"type": "Property", "value": 80, "unitCode": "CEL", "accuracy": {"type": "Property", "value": 0.9}},
            speed_gps(),
        ]})),
    );
}

#[test]
fn partial_update_attribute_timestamps() {
    let mut vehicle = created(&base());
    let fragment = expand::attribute_payload(&json!({"value": 90}), user(), Payload::Partial)
        .expect("expands");
    update::partial_update_attribute(&mut vehicle, &dflt("speed"), &fragment, at(1))
        .expect("updates");
    let speed = vehicle.instance(&dflt("speed"), None).expect("speed");
    assert_eq!(
        (speed.created_at, speed.modified_at),
        (Some(at(0)), Some(at(1)))
    );
    assert_eq!(vehicle.modified_at, Some(at(1)));
}

#[test]
fn merge_entity() {
    check_merge(
        base(),
        json!({
            "id": ID,
            "type": "Car",
            "scope": "/Fleet",
            "color": "red",
            "brand": {"value": "BMW", "origin": "DE"},
            "speed": {"observedAt": "2024-01-01T10:00:00Z"},
        }),
        json!({
            "id": ID,
            "type": ["Vehicle", "Car"],
            "scope": "/Fleet",
            "speed": [
                {"type": "Property", "value": 80, "unitCode": "KMH", "observedAt": "2024-01-01T10:00:00Z", "accuracy": {"type": "Property", "value": 0.9}},
                speed_gps(),
            ],
            "brand": {"type": "Property", "value": "BMW", "origin": {"type": "Property", "value": "DE"}},
            "color": p(json!("red")),
        }),
    );
    // The NGSI-LD Null deletes; an attribute may change type in a merge.
    check_merge(
        base(),
        json!({"brand": "urn:ngsi-ld:null", "speed": {"value": "urn:ngsi-ld:null", "datasetId": GPS}}),
        base_with(json!({"brand": null, "speed": speed_default()})),
    );
    check_merge(
        base(),
        json!({"brand": {"type": "Relationship", "object": "urn:ngsi-ld:Company:1"}}),
        base_with(json!({"brand": {"type": "Relationship", "object": "urn:ngsi-ld:Company:1"}})),
    );
    // As for update, the concise NGSI-LD Null `"speed": "urn:ngsi-ld:null"` stands for the default
    // instance (clauses 4.5.18, 5.6.17).
    check_merge(
        base(),
        json!({"speed": "urn:ngsi-ld:null"}),
        base_with(json!({"speed": speed_gps()})),
    );

    let mut vehicle = created(&base());
    assert_bad(
        update::merge_entity(
            &mut vehicle,
            &partial(&json!({"id": "urn:ngsi-ld:Vehicle:B2"}), user()),
            at(1),
        ),
        "the fragment's id differs",
        &"id",
    );
    let mut vehicle = created(&base());
    assert_bad(
        update::merge_entity(
            &mut vehicle,
            &partial(&json!({"color": {"unitCode": "X"}}), user()),
            at(1),
        ),
        "needs a non-null \"value\"",
        &"color",
    );
}

#[test]
fn merge_entity_timestamps() {
    let mut vehicle = created(&base());
    let fragment = partial(&json!({"brand": "BMW", "color": "red"}), user());
    update::merge_entity(&mut vehicle, &fragment, at(1)).expect("merges");
    let brand = vehicle
        .instance(&user().expand_name("brand"), None)
        .expect("brand");
    assert_eq!(
        (brand.created_at, brand.modified_at),
        (Some(at(0)), Some(at(1)))
    );
    let color = vehicle.instance(&dflt("color"), None).expect("color");
    assert_eq!(
        (color.created_at, color.modified_at),
        (Some(at(1)), Some(at(1)))
    );
}

#[test]
fn replace_entity_keeps_creation_times() {
    let old = created(&base());
    let new = entity(&json!({
        "id": ID,
        "type": "Car",
        "brand": "BMW",
        "speed": {"value": 1, "datasetId": GPS},
        "color": "red",
    }));
    let replaced = update::replace_entity(&old, new, at(2));
    assert_eq!(
        shown(&replaced),
        json!({
            "id": ID,
            "type": "Car",
            "brand": p(json!("BMW")),
            "speed": {"type": "Property", "value": 1, "datasetId": GPS},
            "color": p(json!("red")),
        })
    );
    assert_eq!(
        (replaced.created_at, replaced.modified_at),
        (Some(at(0)), Some(at(2)))
    );
    for (name, dataset_id, created_at) in [
        ("brand", None, at(0)),
        ("speed", Some(GPS), at(0)),
        ("color", None, at(2)),
    ] {
        let instance = replaced
            .instance(&user().expand_name(name), dataset_id)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            (instance.created_at, instance.modified_at),
            (Some(created_at), Some(at(2))),
            "{name}"
        );
    }
    // Replacing an entity that was never stamped stamps it.
    let replaced = update::replace_entity(&entity(&base()), entity(&base()), at(3));
    assert_eq!(replaced.created_at, Some(at(3)));
}

#[test]
fn replace_attribute() {
    let mut vehicle = created(&base());
    let instances = attributes(&json!({"brand": {"value": "BMW", "origin": "DE"}}), user())
        .expect("valid")
        .shift_remove(&user().expand_name("brand"))
        .expect("brand");
    assert!(update::replace_attribute(
        &mut vehicle,
        &user().expand_name("brand"),
        instances.clone(),
        at(1)
    ));
    assert_eq!(
        shown(&vehicle)["brand"],
        json!({"type": "Property", "value": "BMW", "origin": {"type": "Property", "value": "DE"}})
    );
    assert!(!update::replace_attribute(
        &mut vehicle,
        &dflt("color"),
        instances,
        at(1)
    ));
    assert!(vehicle.instance(&dflt("color"), None).is_none());
}

#[test]
fn delete_attribute() {
    check_delete(
        base(),
        ("speed", None, false),
        true,
        base_with(json!({"speed": speed_gps()})),
    );
    check_delete(
        base(),
        ("speed", Some(GPS), false),
        true,
        base_with(json!({"speed": speed_default()})),
    );
    check_delete(
        base(),
        ("speed", None, true),
        true,
        base_with(json!({"speed": null})),
    );
    check_delete(base(), ("speed", Some("urn:ds:none"), false), false, base());
    // Deleting the last instance removes the attribute.
    check_delete(
        base(),
        ("brand", None, false),
        true,
        base_with(json!({"brand": null})),
    );
    check_delete(base(), ("brand", Some(GPS), false), false, base());
    check_delete(base(), ("color", None, false), false, base());
    check_delete(base(), ("color", None, true), false, base());
}

#[test]
fn stamp_created() {
    let vehicle = created(&base());
    assert_eq!(
        (vehicle.created_at, vehicle.modified_at),
        (Some(at(0)), Some(at(0)))
    );
    for instance in vehicle.attributes.values().flatten() {
        assert_eq!(
            (instance.created_at, instance.modified_at),
            (Some(at(0)), Some(at(0)))
        );
    }
    // Sub-attributes are not stamped.
    let speed = vehicle.instance(&dflt("speed"), None).expect("speed");
    assert!(
        speed
            .sub_attributes
            .values()
            .flatten()
            .all(|s| s.created_at.is_none())
    );
    assert_eq!(stamp(1), "2024-01-01T10:01:00.000000Z");
}
