//! Deterministic Smart-Data-Model-shaped entities: `ParkingSpot`s in the normalized representation,
//! shaped like `dataModel.Parking/ParkingSpot/examples/example-normalized.jsonld` (a Property with a
//! sub-property and `observedAt`, a GeoProperty, a Relationship, an array value), without `@context`
//! (they are sent as `application/json` with the Parking context in a Link header).

use serde_json::{Value, json};

/// The Smart Data Models Parking context, which the benchmark connector preloads from the bundled copy.
pub const PARKING_CONTEXT: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld";

/// The id of entity number `index` under `prefix` (e.g. `urn:ngsi-ld:ParkingSpot:bench:`).
pub fn entity_id(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:07}")
}

/// Entity number `index`: the same index always gives the same entity.
pub fn parking_spot(prefix: &str, index: u64) -> Value {
    let mut rng = SplitMix64(index);
    let site = index / 50;
    // Santander's bounding box, roughly.
    let longitude = -3.85 + (rng.next() % 100_000) as f64 / 1_000_000.0;
    let latitude = 43.44 + (rng.next() % 50_000) as f64 / 1_000_000.0;
    let status = ["free", "occupied", "closed", "unknown"][(rng.next() % 4) as usize];
    let category = [["onStreet"], ["offStreet"]][(rng.next() % 2) as usize];
    let minute = rng.next() % 60;
    json!({
        "id": entity_id(prefix, index),
        "type": "ParkingSpot",
        "category": {"type": "Property", "value": category},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [longitude, latitude]}
        },
        "name": {"type": "Property", "value": format!("S-{index}")},
        "refParkingSite": {
            "type": "Relationship",
            "object": format!("urn:ngsi-ld:ParkingSite:bench:{site:05}")
        },
        "status": {
            "type": "Property",
            "value": status,
            "observedAt": format!("2026-05-01T12:{minute:02}:00Z"),
            "parkingPermit": {"type": "Property", "value": "yes"}
        },
        "width": {"type": "Property", "value": 2.5, "unitCode": "MTR"},
        "length": {"type": "Property", "value": 5.0, "unitCode": "MTR"}
    })
}

/// A small deterministic generator (SplitMix64), seeded by the entity's index.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_are_deterministic_and_distinct() {
        let a = parking_spot("urn:ngsi-ld:ParkingSpot:t:", 7);
        assert_eq!(a, parking_spot("urn:ngsi-ld:ParkingSpot:t:", 7));
        assert_ne!(a, parking_spot("urn:ngsi-ld:ParkingSpot:t:", 8));
        assert_eq!(a["id"], "urn:ngsi-ld:ParkingSpot:t:0000007");
    }
}
