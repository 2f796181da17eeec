//! actix-web glue shared by the Civitas services: the one error table and ProblemDetails responses
//! ([`problem`]), and NGSI-LD content negotiation: media types, the JSON-LD Link header and the
//! tenant header ([`negotiation`]).

pub mod negotiation;
pub mod problem;

pub use problem::{ErrorCode, Problem};
