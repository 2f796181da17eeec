//! The demo city: synthetic entities shaped after the FIWARE Smart Data Models, generated
//! deterministically (same seed, same city) for the three demo departments.

use serde_json::{Value, json};

/// A Smart Data Models subject context the demo uses: its published URL and the bundled copy.
pub struct DemoContext {
    pub url: &'static str,
    pub file_name: &'static str,
    pub document: &'static str,
}

pub const PARKING: DemoContext = DemoContext {
    url: "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld",
    file_name: "sdm-parking.jsonld",
    document: include_str!("../../../schemas/contexts/smart-data-models/Parking/context.jsonld"),
};
pub const TRANSPORTATION: DemoContext = DemoContext {
    url: "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld",
    file_name: "sdm-transportation.jsonld",
    document: include_str!(
        "../../../schemas/contexts/smart-data-models/Transportation/context.jsonld"
    ),
};
pub const ENVIRONMENT: DemoContext = DemoContext {
    url: "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
    file_name: "sdm-environment.jsonld",
    document: include_str!(
        "../../../schemas/contexts/smart-data-models/Environment/context.jsonld"
    ),
};
pub const WEATHER: DemoContext = DemoContext {
    url: "https://raw.githubusercontent.com/smart-data-models/dataModel.Weather/master/context.jsonld",
    file_name: "sdm-weather.jsonld",
    document: include_str!("../../../schemas/contexts/smart-data-models/Weather/context.jsonld"),
};
pub const WATER_QUALITY: DemoContext = DemoContext {
    url: "https://raw.githubusercontent.com/smart-data-models/dataModel.WaterQuality/master/context.jsonld",
    file_name: "sdm-water-quality.jsonld",
    document: include_str!(
        "../../../schemas/contexts/smart-data-models/WaterQuality/context.jsonld"
    ),
};

/// Every context a demo connector preloads.
pub const ALL_CONTEXTS: [&DemoContext; 5] = [
    &PARKING,
    &TRANSPORTATION,
    &ENVIRONMENT,
    &WEATHER,
    &WATER_QUALITY,
];

const CORE: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";

/// A small deterministic generator (xorshift64*), so the demo city is the same on every machine.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A float in `[low, high)`, rounded to `decimals`.
    fn range(&mut self, low: f64, high: f64, decimals: i32) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let scale = 10f64.powi(decimals);
        ((low + unit * (high - low)) * scale).round() / scale
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// The city centre the demo is set around (lon, lat).
const CENTRE: (f64, f64) = (-3.8040, 43.4623);

fn point(dice: &mut Dice, spread: f64) -> Value {
    json!({"type": "Point", "coordinates": [dice.range(CENTRE.0 - spread, CENTRE.0 + spread, 6), dice.range(CENTRE.1 - spread, CENTRE.1 + spread, 6)]})
}

fn observed(minute: u64) -> String {
    format!(
        "2026-11-01T{:02}:{:02}:00Z",
        (minute / 60) % 24,
        minute % 60
    )
}

fn context(subject: &DemoContext) -> Value {
    json!([subject.url, CORE])
}

/// The demo entities of a department; empty for a department the demo does not know.
pub fn entities(department: &str) -> Vec<Value> {
    match department {
        "transport" => transport(),
        "environment" => environment(),
        "water" => water(),
        _ => Vec::new(),
    }
}

fn transport() -> Vec<Value> {
    let mut dice = Dice::new(0x7_4A4E_5350);
    let mut out = Vec::new();
    for site in 0..20 {
        let total = 100 + dice.next() % 400;
        out.push(json!({
            "id": format!("urn:ngsi-ld:OffStreetParking:civitas:{site:03}"),
            "type": "OffStreetParking",
            "name": {"type": "Property", "value": format!("Parking {}", site + 1)},
            "totalSpotNumber": {"type": "Property", "value": total},
            "availableSpotNumber": {"type": "Property", "value": dice.next() % total, "observedAt": observed(site * 7)},
            "acceptedPaymentMethod": {"type": "Property", "value": ["ByBankTransferInAdvance", dice.pick(&["Cash", "CreditCard", "DebitCard"])]},
            "priceRatePerMinute": {"type": "Property", "value": dice.range(0.01, 0.06, 3), "unitCode": "EUR"},
            "location": {"type": "GeoProperty", "value": point(&mut dice, 0.03)},
            "@context": context(&PARKING),
        }));
    }
    for spot in 0..2000u64 {
        out.push(json!({
            "id": format!("urn:ngsi-ld:ParkingSpot:civitas:{spot:04}"),
            "type": "ParkingSpot",
            "name": {"type": "Property", "value": format!("Spot {}", spot + 1)},
            "category": {"type": "Property", "value": [dice.pick(&["onStreet", "offStreet"])]},
            "status": {"type": "Property", "value": dice.pick(&["free", "occupied", "occupied", "closed"]), "observedAt": observed(spot % 1440)},
            "refParkingSite": {"type": "Relationship", "object": format!("urn:ngsi-ld:OffStreetParking:civitas:{:03}", spot % 20)},
            "location": {"type": "GeoProperty", "value": point(&mut dice, 0.03)},
            "@context": context(&PARKING),
        }));
    }
    for counter in 0..200u64 {
        out.push(json!({
            "id": format!("urn:ngsi-ld:TrafficFlowObserved:civitas:{counter:03}"),
            "type": "TrafficFlowObserved",
            "laneId": {"type": "Property", "value": 1 + counter % 3},
            "intensity": {"type": "Property", "value": dice.next() % 600, "observedAt": observed(counter * 5)},
            "averageVehicleSpeed": {"type": "Property", "value": dice.range(10.0, 70.0, 1), "unitCode": "KMH", "observedAt": observed(counter * 5)},
            "occupancy": {"type": "Property", "value": dice.range(0.0, 1.0, 2), "observedAt": observed(counter * 5)},
            "location": {"type": "GeoProperty", "value": point(&mut dice, 0.04)},
            "@context": context(&TRANSPORTATION),
        }));
    }
    out
}

fn environment() -> Vec<Value> {
    let mut dice = Dice::new(0xE_4E56);
    let mut out = Vec::new();
    for station in 0..300u64 {
        let at = observed(station * 3);
        let no2 = dice.range(5.0, 120.0, 1);
        out.push(json!({
            "id": format!("urn:ngsi-ld:AirQualityObserved:civitas:{station:03}"),
            "type": "AirQualityObserved",
            "no2": {"type": "Property", "value": no2, "unitCode": "GQ", "observedAt": at},
            "pm10": {"type": "Property", "value": dice.range(5.0, 80.0, 1), "unitCode": "GQ", "observedAt": at},
            "pm25": {"type": "Property", "value": dice.range(2.0, 50.0, 1), "unitCode": "GQ", "observedAt": at},
            "o3": {"type": "Property", "value": dice.range(10.0, 140.0, 1), "unitCode": "GQ", "observedAt": at},
            "airQualityLevel": {"type": "Property", "value": if no2 < 40.0 { "good" } else if no2 < 90.0 { "moderate" } else { "poor" }, "observedAt": at},
            "location": {"type": "GeoProperty", "value": point(&mut dice, 0.05)},
            "@context": context(&ENVIRONMENT),
        }));
    }
    for sensor in 0..150u64 {
        let at = observed(sensor * 4);
        out.push(json!({
            "id": format!("urn:ngsi-ld:NoiseLevelObserved:civitas:{sensor:03}"),
            "type": "NoiseLevelObserved",
            "LAeq": {"type": "Property", "value": dice.range(40.0, 80.0, 1), "observedAt": at},
            "LAmax": {"type": "Property", "value": dice.range(60.0, 100.0, 1), "observedAt": at},
            "location": {"type": "GeoProperty", "value": point(&mut dice, 0.05)},
            "@context": context(&ENVIRONMENT),
        }));
    }
    for station in 0..50u64 {
        let at = observed(station * 10);
        out.push(json!({
            "id": format!("urn:ngsi-ld:WeatherObserved:civitas:{station:02}"),
            "type": "WeatherObserved",
            "temperature": {"type": "Property", "value": dice.range(2.0, 22.0, 1), "unitCode": "CEL", "observedAt": at},
            "relativeHumidity": {"type": "Property", "value": dice.range(0.4, 0.99, 2), "observedAt": at},
            "windSpeed": {"type": "Property", "value": dice.range(0.0, 20.0, 1), "unitCode": "MTS", "observedAt": at},
            "atmosphericPressure": {"type": "Property", "value": dice.range(990.0, 1030.0, 1), "unitCode": "A97", "observedAt": at},
            "location": {"type": "GeoProperty", "value": point(&mut dice, 0.06)},
            "@context": context(&WEATHER),
        }));
    }
    out
}

fn water() -> Vec<Value> {
    let mut dice = Dice::new(0x3A7E5);
    (0..150u64)
        .map(|point_id| {
            let at = observed(point_id * 9);
            json!({
                "id": format!("urn:ngsi-ld:WaterQualityObserved:civitas:{point_id:03}"),
                "type": "WaterQualityObserved",
                "temperature": {"type": "Property", "value": dice.range(8.0, 20.0, 1), "unitCode": "CEL", "observedAt": at},
                "pH": {"type": "Property", "value": dice.range(6.5, 8.5, 2), "observedAt": at},
                "conductivity": {"type": "Property", "value": dice.range(200.0, 800.0, 0), "unitCode": "G42", "observedAt": at},
                "turbidity": {"type": "Property", "value": dice.range(0.1, 5.0, 2), "unitCode": "NTU", "observedAt": at},
                "O2": {"type": "Property", "value": dice.range(6.0, 12.0, 1), "unitCode": "M1", "observedAt": at},
                "location": {"type": "GeoProperty", "value": point(&mut dice, 0.08)},
                "@context": context(&WATER_QUALITY),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_city_is_deterministic_and_sized() {
        assert_eq!(entities("transport"), entities("transport"));
        assert_eq!(entities("transport").len(), 2220);
        assert_eq!(entities("environment").len(), 500);
        assert_eq!(entities("water").len(), 150);
        assert!(entities("elsewhere").is_empty());
    }

    #[test]
    fn bundled_contexts_are_json_ld() {
        for context in ALL_CONTEXTS {
            let value: Value =
                serde_json::from_str(context.document).expect("bundled context parses");
            assert!(value.get("@context").is_some(), "{}", context.file_name);
        }
    }
}
