//! Capability tokens for Civitas connectors, built on biscuit.
//!
//! Each department owns an Ed25519 root key ([`keys`]). Its tokens ([`token`]) carry, in the signed
//! authority block, what the holder may do: rights per operation and expanded entity type, an
//! attribute allow-list, purpose, tenant and expiry. A holder narrows a token offline by appending a
//! block of **restrictions**; restrictions are intersected, never unioned, so no block can widen
//! what the authority block granted. The [`authorizer`] verifies a token against the root key,
//! runs the department's datalog policies and computes the [`authorizer::Grant`]: which operations
//! on which types, which attributes, for which tenant. The result of a decision is an
//! [`authorizer::Authorized`] value, which only the authorizer can make: code that takes one cannot
//! be reached without a decision.
//!
//! ```
//! use civitas_auth::keys::RootKey;
//! use civitas_auth::token::{Restrictions, TokenSpec, attenuate, issue};
//! use civitas_auth::authorizer::{Authorizer, Operation, Request};
//!
//! let key = RootKey::from_seed([7; 32]).unwrap();
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let spec = TokenSpec { holder: "agency".into(), read: vec!["https://example.org/Spot".into()], ..TokenSpec::default() };
//! let token = issue(&key, &spec, now).unwrap();
//! let narrowed = attenuate(&token, &Restrictions { attributes: Some(vec!["https://example.org/status".into()]), ..Restrictions::default() }, now).unwrap();
//!
//! let authorizer = Authorizer::new(key.public(), "", "transport").unwrap();
//! let authorized = authorizer.authorize(&[&narrowed], &Request::new(Operation::Read, now)).unwrap();
//! assert!(authorized.covers(&["https://example.org/Spot".to_owned()]));
//! assert!(authorized.allows_attribute("https://example.org/status"));
//! assert!(!authorized.allows_attribute("https://example.org/payment"));
//! ```

pub mod authorizer;
mod error;
pub mod keys;
pub mod memo;
pub mod token;

pub use error::Error;
