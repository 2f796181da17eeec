//! What the JSON-LD benchmarks share: a typical Smart Data Model entity and its @context, the same
//! for every processor measured.

use std::sync::Arc;

use civitas_ngsild::Error;
use civitas_ngsild::context::{self, ActiveContext};
use serde_json::{Value, json};

/// The Smart Data Models Parking context URL (answered offline from the bundled copy).
pub const PARKING_CONTEXT_URL: &str =
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld";

/// The bundled Parking context document (CC-BY-4.0, see schemas/contexts/smart-data-models/NOTICE.md).
pub const PARKING_CONTEXT: &str =
    include_str!("../../../../schemas/contexts/smart-data-models/Parking/context.jsonld");

/// The request's @context, as NGSI-LD applies it: the caller's context, then the core context last.
pub fn request_context() -> Value {
    json!([
        PARKING_CONTEXT_URL,
        civitas_ngsild::context::CORE_CONTEXT_URL
    ])
}

/// A `ParkingSpot` in the normalized representation, shaped like Smart Data Models'
/// `dataModel.Parking/ParkingSpot/examples/example-normalized.jsonld` (plus two properties with
/// `unitCode`), without `@context`: it came with a Link header.
pub fn parking_spot() -> Value {
    json!({
        "id": "urn:ngsi-ld:ParkingSpot:santander:daoiz_velarde_1_5:3",
        "type": "ParkingSpot",
        "category": {"type": "Property", "value": ["onStreet"]},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [-3.80356167695194, 43.46296641666926]}
        },
        "name": {"type": "Property", "value": "A-13"},
        "refParkingSite": {
            "type": "Relationship",
            "object": "urn:ngsi-ld:ParkingSite:santander:daoiz_velarde_1_5"
        },
        "status": {
            "type": "Property",
            "value": "free",
            "observedAt": "2018-09-21T12:00:00Z",
            "parkingPermit": {"type": "Property", "value": "yes"}
        },
        "width": {"type": "Property", "value": 2.5, "unitCode": "MTR"},
        "length": {"type": "Property", "value": 5.0, "unitCode": "MTR"}
    })
}

/// The context documents, parsed once.
pub struct Documents {
    core: Arc<Value>,
    parking: Arc<Value>,
}

impl Documents {
    pub fn load() -> Documents {
        Documents {
            core: Arc::new(serde_json::from_str(context::CORE_CONTEXT_V1_8).expect("core")),
            parking: Arc::new(serde_json::from_str(PARKING_CONTEXT).expect("parking")),
        }
    }

    /// Processes the request context with the bundled documents (no I/O).
    pub fn active_context(&self) -> ActiveContext {
        let mut loader = |url: &str| match url {
            context::CORE_CONTEXT_URL => Ok(Arc::clone(&self.core)),
            PARKING_CONTEXT_URL => Ok(Arc::clone(&self.parking)),
            other => Err(Error::ContextNotLoaded(other.to_owned())),
        };
        ActiveContext::empty()
            .process(&request_context(), &mut loader)
            .expect("the request context processes")
    }
}
