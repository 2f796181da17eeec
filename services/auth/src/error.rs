//! Errors of key handling, token minting and authorization.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key file or key string is not a valid Ed25519 key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// A token specification or a policy is not valid datalog or uses a forbidden name.
    #[error("invalid token or policy: {0}")]
    Invalid(String),
    /// The request has no token, and the department's anonymous policy does not allow it.
    #[error("this request needs a token")]
    TokenRequired,
    /// The token could not be decoded or its signatures do not verify against the root key.
    #[error("the token is not valid: {0}")]
    Unauthenticated(String),
    /// The token is valid but expired.
    #[error("the token expired at {0}")]
    Expired(String),
    /// The token was revoked (the revocation id of one of its blocks, hex).
    #[error("the token was revoked ({0})")]
    Revoked(String),
    /// The token is valid but does not allow the request.
    #[error("the token does not allow this request: {0}")]
    Forbidden(String),
}
