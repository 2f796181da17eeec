//! Errors of the NGSI-LD model, each tied to one of the problem types of ETSI GS CIM 009 clause 5.5.2.

use std::fmt;

/// The problem types defined by ETSI GS CIM 009 (clause 5.5.2, table 5.5.2-1).
///
/// The HTTP status of each lives in the HTTP layer's error table; the model only knows the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    InvalidRequest,
    BadRequestData,
    AlreadyExists,
    OperationNotSupported,
    ResourceNotFound,
    InternalError,
    TooComplexQuery,
    TooManyResults,
    LdContextNotAvailable,
    NoMultiTenantSupport,
    NonexistentTenant,
    /// A distributed operation came back to a broker it already passed (clause 6.3.18, `Via`).
    LoopDetected,
}

impl ErrorType {
    /// The problem type's name, the last segment of its URI.
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "InvalidRequest",
            ErrorType::BadRequestData => "BadRequestData",
            ErrorType::AlreadyExists => "AlreadyExists",
            ErrorType::OperationNotSupported => "OperationNotSupported",
            ErrorType::ResourceNotFound => "ResourceNotFound",
            ErrorType::InternalError => "InternalError",
            ErrorType::TooComplexQuery => "TooComplexQuery",
            ErrorType::TooManyResults => "TooManyResults",
            ErrorType::LdContextNotAvailable => "LdContextNotAvailable",
            ErrorType::NoMultiTenantSupport => "NoMultiTenantSupport",
            ErrorType::NonexistentTenant => "NonexistentTenant",
            ErrorType::LoopDetected => "LoopDetected",
        }
    }

    /// The problem type URI, `https://uri.etsi.org/ngsi-ld/errors/<name>`.
    pub fn uri(self) -> String {
        format!("https://uri.etsi.org/ngsi-ld/errors/{}", self.name())
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with a payload, a name or a context, as seen by the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload is well-formed JSON but not valid NGSI-LD (clause 5.5.2 `BadRequestData`).
    #[error("{0}")]
    BadRequestData(String),
    /// The request is malformed as a request (clause 5.5.2 `InvalidRequest`).
    #[error("{0}")]
    InvalidRequest(String),
    /// A JSON-LD @context is invalid.
    #[error("invalid @context: {0}")]
    InvalidContext(String),
    /// A remote @context is needed that the caller has not supplied yet. The I/O layer fetches it
    /// and processes the context again; see [`crate::context`].
    #[error("the @context {0} has not been loaded")]
    ContextNotLoaded(String),
    /// A remote @context could not be obtained (clause 5.5.2 `LdContextNotAvailable`).
    #[error("the @context {url} is not available: {reason}")]
    ContextNotAvailable { url: String, reason: String },
    /// A stored record could not be decoded. This is a server fault, never the caller's.
    #[error("stored entity is corrupt: {0}")]
    CorruptRecord(String),
}

impl Error {
    /// The NGSI-LD problem type this error is reported as.
    pub fn error_type(&self) -> ErrorType {
        match self {
            Error::BadRequestData(_) | Error::InvalidContext(_) => ErrorType::BadRequestData,
            Error::InvalidRequest(_) => ErrorType::InvalidRequest,
            Error::ContextNotLoaded(_) | Error::ContextNotAvailable { .. } => {
                ErrorType::LdContextNotAvailable
            }
            Error::CorruptRecord(_) => ErrorType::InternalError,
        }
    }

    pub(crate) fn bad(detail: impl Into<String>) -> Error {
        Error::BadRequestData(detail.into())
    }
}
