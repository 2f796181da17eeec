//! GeoJSON geometries as GeoProperty values (ETSI GS CIM 009 clause 4.7, RFC 7946).

use serde_json::Value;

use crate::Error;

/// The GeoJSON geometry type names a GeoProperty may hold.
pub const GEOMETRY_TYPES: &[&str] = &[
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
];

/// Whether `value` looks like a GeoJSON geometry (used to recognise concise GeoProperties).
pub fn looks_like_geometry(value: &Value) -> bool {
    value
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| GEOMETRY_TYPES.contains(&t))
        && (value.get("coordinates").is_some() || value.get("geometries").is_some())
}

/// Checks that `value` is a valid GeoJSON geometry.
pub fn validate(value: &Value) -> Result<(), Error> {
    validate_depth(value, 0)
}

fn validate_depth(value: &Value, depth: usize) -> Result<(), Error> {
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err(Error::bad(
            "a GeoProperty value must be a GeoJSON geometry with a \"type\"",
        ));
    };
    if kind == "GeometryCollection" {
        if depth > 4 {
            return Err(Error::bad("GeometryCollection nested too deeply"));
        }
        let Some(geometries) = value.get("geometries").and_then(Value::as_array) else {
            return Err(Error::bad(
                "a GeometryCollection needs a \"geometries\" array",
            ));
        };
        return geometries
            .iter()
            .try_for_each(|g| validate_depth(g, depth + 1));
    }
    let Some(coordinates) = value.get("coordinates") else {
        return Err(Error::bad(format!(
            "the {kind} geometry has no \"coordinates\""
        )));
    };
    let ok = match kind {
        "Point" => is_position(coordinates),
        "MultiPoint" => all(coordinates, is_position),
        "LineString" => is_line(coordinates),
        "MultiLineString" => all(coordinates, is_line),
        "Polygon" => is_polygon(coordinates),
        "MultiPolygon" => all(coordinates, is_polygon),
        other => {
            return Err(Error::bad(format!(
                "{other:?} is not a GeoJSON geometry type"
            )));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Error::bad(format!("invalid coordinates for a {kind}")))
    }
}

fn all(value: &Value, check: fn(&Value) -> bool) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.iter().all(check))
}

fn is_position(value: &Value) -> bool {
    value.as_array().is_some_and(|p| {
        (2..=3).contains(&p.len())
            && p.iter().all(|c| c.as_f64().is_some_and(f64::is_finite))
            && p[0]
                .as_f64()
                .is_some_and(|lon| (-180.0..=180.0).contains(&lon))
            && p[1]
                .as_f64()
                .is_some_and(|lat| (-90.0..=90.0).contains(&lat))
    })
}

fn is_line(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|points| points.len() >= 2 && points.iter().all(is_position))
}

fn is_polygon(value: &Value) -> bool {
    value.as_array().is_some_and(|rings| {
        !rings.is_empty()
            && rings.iter().all(|ring| {
                ring.as_array().is_some_and(|points| {
                    points.len() >= 4
                        && points.iter().all(is_position)
                        && points.first() == points.last()
                })
            })
    })
}

/// The bounding box `[min_lon, min_lat, max_lon, max_lat]` of a (valid) geometry.
pub fn bbox(geometry: &Value) -> Option<[f64; 4]> {
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    extend(geometry, &mut bbox, 0);
    (bbox[0] <= bbox[2]).then_some(bbox)
}

fn extend(value: &Value, bbox: &mut [f64; 4], depth: usize) {
    if depth > 8 {
        return;
    }
    if let Some(geometries) = value.get("geometries").and_then(Value::as_array) {
        geometries.iter().for_each(|g| extend(g, bbox, depth + 1));
    } else if let Some(coordinates) = value.get("coordinates") {
        extend_coordinates(coordinates, bbox, 0);
    }
}

fn extend_coordinates(value: &Value, bbox: &mut [f64; 4], depth: usize) {
    let Some(items) = value.as_array() else {
        return;
    };
    if depth > 4 {
        return;
    }
    if let (Some(lon), Some(lat)) = (
        items.first().and_then(Value::as_f64),
        items.get(1).and_then(Value::as_f64),
    ) {
        bbox[0] = bbox[0].min(lon);
        bbox[1] = bbox[1].min(lat);
        bbox[2] = bbox[2].max(lon);
        bbox[3] = bbox[3].max(lat);
    } else {
        items
            .iter()
            .for_each(|i| extend_coordinates(i, bbox, depth + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn geometries() {
        for good in [
            json!({"type": "Point", "coordinates": [-3.8, 43.46]}),
            json!({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}),
            json!({"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [1, 2]}]}),
        ] {
            assert!(validate(&good).is_ok(), "{good}");
        }
        for bad in [
            json!({"type": "Point", "coordinates": [200, 0]}),
            json!({"type": "Point"}),
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
            json!({"type": "Circle", "coordinates": [0, 0]}),
            json!("Point"),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounding_boxes() {
        let polygon = json!({"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 3], [0, 0]]]});
        assert_eq!(bbox(&polygon), Some([0.0, 0.0, 2.0, 3.0]));
        assert_eq!(
            bbox(&json!({"type": "Point", "coordinates": [1, 2]})),
            Some([1.0, 2.0, 1.0, 2.0])
        );
    }
}
