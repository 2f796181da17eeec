//! Data-driven tests of the NGSI-LD model (ETSI GS CIM 009 v1.8) through the crate's public API:
//! @context processing, expansion and canonical decoding, renderings and the update operations.
//!
//! Every case goes through a small `check*` helper (rust-analyzer style), so that an API change
//! rewrites the helpers, not the cases. Where today's behaviour departs from the specification the
//! case asserts today's behaviour and carries a `FIXME:` naming the clause and the expected result.

#[path = "model/support.rs"]
mod support;

#[path = "model/context.rs"]
mod context;
#[path = "model/decode.rs"]
mod decode;
#[path = "model/render.rs"]
mod render;
#[path = "model/roundtrip.rs"]
mod roundtrip;
#[path = "model/update.rs"]
mod update;
