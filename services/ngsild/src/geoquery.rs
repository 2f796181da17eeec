//! Geo-queries (ETSI GS CIM 009, clause 4.10): a relation (`georel`) between a reference geometry
//! (`geometry`, `coordinates`) and the GeoJSON value of a GeoProperty, evaluated with the `geo`
//! crate: distances on the sphere (haversine, metres) for `near`, the DE-9IM relation for the
//! topological relations.

use geo::{Closest, Distance, Haversine, HaversineClosestPoint, Intersects, Point, Relate};
use serde_json::Value;

use crate::Error;

/// The relation asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GeoRel {
    /// `near;maxDistance==m` (`max`) or `near;minDistance==m` (`min`), in metres.
    Near {
        max: Option<f64>,
        min: Option<f64>,
    },
    Within,
    Contains,
    Intersects,
    Equals,
    Disjoint,
    Overlaps,
}

/// A parsed geo-query: the relation and the reference geometry.
#[derive(Debug, Clone)]
pub struct GeoQuery {
    pub rel: GeoRel,
    reference: geo::Geometry<f64>,
}

fn parse_rel(georel: &str) -> Result<GeoRel, Error> {
    let mut parts = georel.split(';');
    let name = parts.next().unwrap_or_default();
    let rel = match name {
        "near" => {
            let modifier = parts
                .next()
                .ok_or_else(|| Error::bad("near needs maxDistance or minDistance"))?;
            let (which, metres) = modifier.split_once("==").ok_or_else(|| {
                Error::bad("near needs maxDistance==<metres> or minDistance==<metres>")
            })?;
            let metres: f64 = metres
                .parse()
                .ok()
                .filter(|m: &f64| m.is_finite() && *m >= 0.0)
                .ok_or_else(|| {
                    Error::bad(format!("{which} must be a non-negative number of metres"))
                })?;
            match which {
                "maxDistance" => GeoRel::Near {
                    max: Some(metres),
                    min: None,
                },
                "minDistance" => GeoRel::Near {
                    max: None,
                    min: Some(metres),
                },
                other => {
                    return Err(Error::bad(format!(
                        "near takes maxDistance or minDistance, not {other}"
                    )));
                }
            }
        }
        "within" => GeoRel::Within,
        "contains" => GeoRel::Contains,
        "intersects" => GeoRel::Intersects,
        "equals" => GeoRel::Equals,
        "disjoint" => GeoRel::Disjoint,
        "overlaps" => GeoRel::Overlaps,
        other => {
            return Err(Error::bad(format!(
                "georel {other:?} is not one of near, within, contains, intersects, equals, disjoint, overlaps"
            )));
        }
    };
    if parts.next().is_some() {
        return Err(Error::bad(format!("georel {georel:?} has too many parts")));
    }
    Ok(rel)
}

/// A GeoJSON geometry value as a `geo` geometry, after the checks of [`crate::geo::validate`].
pub fn geometry(value: &Value) -> Result<geo::Geometry<f64>, Error> {
    crate::geo::validate(value)?;
    let parsed: geojson::Geometry = serde_json::from_value(value.clone())
        .map_err(|e| Error::bad(format!("invalid GeoJSON geometry: {e}")))?;
    geo::Geometry::<f64>::try_from(&parsed.value)
        .map_err(|e| Error::bad(format!("unsupported GeoJSON geometry: {e}")))
}

impl GeoQuery {
    /// Parses `georel`, `geometry` and `coordinates` (a JSON array, as in the query string).
    pub fn parse(georel: &str, geometry_type: &str, coordinates: &str) -> Result<GeoQuery, Error> {
        let rel = parse_rel(georel)?;
        let coordinates: Value = serde_json::from_str(coordinates)
            .map_err(|_| Error::bad("coordinates must be a JSON array of numbers"))?;
        let reference = geometry(&serde_json::json!({
            "type": geometry_type,
            "coordinates": coordinates,
        }))?;
        if matches!(rel, GeoRel::Near { .. }) && !matches!(reference, geo::Geometry::Point(_)) {
            return Err(Error::bad("near needs a Point geometry"));
        }
        Ok(GeoQuery { rel, reference })
    }

    /// Whether a GeoJSON value stands in the relation to the reference geometry. A value that is
    /// not a geometry stands in none.
    pub fn matches(&self, value: &Value) -> bool {
        let Ok(target) = geometry(value) else {
            return false;
        };
        match self.rel {
            GeoRel::Near { max, min } => {
                let geo::Geometry::Point(from) = self.reference else {
                    return false;
                };
                let distance = distance(&target, from);
                max.is_none_or(|max| distance <= max) && min.is_none_or(|min| distance >= min)
            }
            GeoRel::Within => target.relate(&self.reference).is_within(),
            GeoRel::Contains => target.relate(&self.reference).is_contains(),
            GeoRel::Intersects => target.intersects(&self.reference),
            GeoRel::Equals => target.relate(&self.reference).is_equal_topo(),
            GeoRel::Disjoint => !target.intersects(&self.reference),
            GeoRel::Overlaps => target.relate(&self.reference).is_overlaps(),
        }
    }
}

/// Metres from `from` to the nearest point of `target` on the sphere; 0 inside it.
fn distance(target: &geo::Geometry<f64>, from: Point<f64>) -> f64 {
    if target.intersects(&from) {
        return 0.0;
    }
    match target.haversine_closest_point(&from) {
        Closest::Intersection(_) => 0.0,
        Closest::SinglePoint(nearest) => Haversine.distance(nearest, from),
        Closest::Indeterminate => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn near_measures_metres_on_the_sphere() {
        // About 1.5 km apart (Porto).
        let place = json!({"type": "Point", "coordinates": [-8.521, 41.2]});
        let near = |georel: &str| GeoQuery::parse(georel, "Point", "[-8.503,41.202]").unwrap();
        assert!(near("near;maxDistance==2000").matches(&place));
        assert!(!near("near;maxDistance==1000").matches(&place));
        assert!(near("near;minDistance==1000").matches(&place));
        assert!(!near("near;minDistance==2000").matches(&place));
        // A polygon around the point is at distance 0.
        let around = json!({"type": "Polygon", "coordinates":
            [[[-8.6, 41.1], [-8.4, 41.1], [-8.4, 41.3], [-8.6, 41.3], [-8.6, 41.1]]]});
        assert!(near("near;maxDistance==1").matches(&around));
    }

    #[test]
    fn topological_relations_follow_de9im() {
        let square = "[[[0,0],[10,0],[10,10],[0,10],[0,0]]]";
        let inside = json!({"type": "Point", "coordinates": [5, 5]});
        let outside = json!({"type": "Point", "coordinates": [20, 5]});
        let across = json!({"type": "Polygon", "coordinates":
            [[[5, 5], [15, 5], [15, 15], [5, 15], [5, 5]]]});
        let query = |rel: &str| GeoQuery::parse(rel, "Polygon", square).unwrap();
        assert!(query("within").matches(&inside));
        assert!(!query("within").matches(&outside));
        assert!(query("intersects").matches(&across));
        assert!(query("overlaps").matches(&across));
        assert!(query("disjoint").matches(&outside));
        assert!(!query("disjoint").matches(&inside));
        let same = json!({"type": "Polygon", "coordinates":
            [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]});
        assert!(query("equals").matches(&same));
        let big = GeoQuery::parse("contains", "Point", "[5,5]").unwrap();
        assert!(big.matches(&same));
        assert!(!query("within").matches(&json!("not a geometry")));
    }

    #[test]
    fn invalid_geo_queries_are_refused() {
        for (georel, geometry, coordinates) in [
            ("within", "Polygon", "[[-13.5,47.2],[6.5,52.9],[20.3,44.6]]"),
            ("near", "Point", "[1,2]"),
            ("near;maxDistance==-5", "Point", "[1,2]"),
            ("near;distance==5", "Point", "[1,2]"),
            (
                "near;maxDistance==5",
                "Polygon",
                "[[[0,0],[1,0],[1,1],[0,0]]]",
            ),
            ("around", "Point", "[1,2]"),
            ("within", "Point", "not json"),
            ("within", "Circle", "[1,2]"),
        ] {
            assert!(
                GeoQuery::parse(georel, geometry, coordinates).is_err(),
                "{georel} {geometry} {coordinates}"
            );
        }
    }
}
