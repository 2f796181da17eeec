//! The NGSI-LD information model of ETSI GS CIM 009 (v1.8), with no I/O.
//!
//! * [`context`] processes JSON-LD @contexts and expands and compacts names.
//! * [`expand`] turns request payloads (normalized or concise, compacted) into the canonical form.
//! * [`canonical`] validates the canonical form into the typed model ([`entity`]) and writes it back.
//! * [`update`] holds the write operations (append, update, merge, replace, delete) as functions.
//! * [`render`] writes the response representations: normalized, concise, keyValues, GeoJSON.
//!
//! ```
//! use std::sync::Arc;
//! use civitas_ngsild::{canonical, context, expand, render};
//! use serde_json::json;
//!
//! let core: Arc<serde_json::Value> = Arc::new(serde_json::from_str(context::CORE_CONTEXT_V1_8).unwrap());
//! let mut loader = |_: &str| Ok(core.clone());
//! let ctx = context::ActiveContext::empty()
//!     .process(&json!([{"Car": "https://example.org/Car"}, context::CORE_CONTEXT_URL]), &mut loader)
//!     .unwrap();
//! let payload = json!({"id": "urn:ngsi-ld:Car:1", "type": "Car", "speed": 80});
//! let canonical = expand::entity(&payload, &ctx, expand::Payload::Entity).unwrap();
//! let entity = canonical::decode_entity(&canonical, canonical::Trust::Caller).unwrap();
//! assert_eq!(entity.types, ["https://example.org/Car"]);
//! let out = render::entity(&entity, &ctx, &render::RenderOptions::default());
//! assert_eq!(out["speed"], json!({"type": "Property", "value": 80}));
//! ```

pub mod canonical;
pub mod context;
pub mod entity;
mod error;
pub mod expand;
pub mod geo;
pub mod geoquery;
pub mod names;
pub mod q;
pub mod registration;
pub mod render;
pub mod subscription;
pub mod update;

pub use error::{Error, ErrorType};
