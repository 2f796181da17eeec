//! The error table and ProblemDetails (RFC 7807) responses, as ETSI GS CIM 009 clause 5.5.2 uses
//! them. Every error a service returns goes through [`Problem`]; its status comes from
//! [`ErrorCode::status`], a `match` without a catch-all, so a new code cannot ship unmapped.

use std::fmt;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, Responder, ResponseError};
use civitas_ngsild::ErrorType;
use serde_json::{Map, Value};

/// Every error the HTTP API can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// One of the NGSI-LD problem types.
    Ngsi(ErrorType),
    /// 406: no acceptable media type can be produced.
    NotAcceptable,
    /// 415: the request body's media type is not supported.
    UnsupportedMediaType,
    /// 413: the request body is larger than the configured limit.
    PayloadTooLarge,
    /// 405: the path exists but not with this method.
    MethodNotAllowed,
    /// 501: an operation of the spec that this service does not implement (yet).
    NotImplemented,
    /// 401: no token where one is needed, or a token that is malformed, forged, issued by another
    /// key, expired or revoked.
    Unauthenticated,
    /// 403: a valid token that does not allow the request.
    Forbidden,
    /// 502: a broker's source failed and the caller asked for all or nothing.
    SourceFailed,
}

/// Problem types of errors NGSI-LD (v1.8) does not define: authorization.
pub const UNAUTHENTICATED_TYPE: &str = "urn:civitas:errors:Unauthenticated";
pub const FORBIDDEN_TYPE: &str = "urn:civitas:errors:Forbidden";
pub const SOURCE_FAILED_TYPE: &str = "urn:civitas:errors:SourceFailed";

impl ErrorCode {
    /// The HTTP status of the code (clause 5.5.2, table 5.5.2-1, for the NGSI-LD types).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Ngsi(kind) => match kind {
                ErrorType::InvalidRequest | ErrorType::BadRequestData => StatusCode::BAD_REQUEST,
                ErrorType::AlreadyExists => StatusCode::CONFLICT,
                ErrorType::OperationNotSupported => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorType::ResourceNotFound | ErrorType::NonexistentTenant => StatusCode::NOT_FOUND,
                ErrorType::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorType::TooComplexQuery | ErrorType::TooManyResults => StatusCode::FORBIDDEN,
                ErrorType::LdContextNotAvailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorType::NoMultiTenantSupport => StatusCode::NOT_IMPLEMENTED,
                ErrorType::LoopDetected => StatusCode::LOOP_DETECTED,
            },
            ErrorCode::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::SourceFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// The problem type URI. Codes the spec does not name are reported with the closest NGSI-LD type
    /// (`InvalidRequest` for protocol errors, `OperationNotSupported` for missing operations), so
    /// clients that switch on NGSI-LD types keep working; authorization errors, which have no
    /// NGSI-LD counterpart, get Civitas URNs.
    pub fn type_uri(self) -> String {
        match self {
            ErrorCode::Ngsi(kind) => kind.uri(),
            ErrorCode::NotAcceptable
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::PayloadTooLarge
            | ErrorCode::MethodNotAllowed => ErrorType::InvalidRequest.uri(),
            ErrorCode::NotImplemented => ErrorType::OperationNotSupported.uri(),
            ErrorCode::Unauthenticated => UNAUTHENTICATED_TYPE.to_owned(),
            ErrorCode::Forbidden => FORBIDDEN_TYPE.to_owned(),
            ErrorCode::SourceFailed => SOURCE_FAILED_TYPE.to_owned(),
        }
    }

    /// A short human-readable summary of the problem type.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::Ngsi(kind) => match kind {
                ErrorType::InvalidRequest => "The request is not valid",
                ErrorType::BadRequestData => "The request payload is not valid NGSI-LD",
                ErrorType::AlreadyExists => "The resource already exists",
                ErrorType::OperationNotSupported => "The operation is not supported",
                ErrorType::ResourceNotFound => "The resource was not found",
                ErrorType::InternalError => "Internal error",
                ErrorType::TooComplexQuery => "The query is too complex",
                ErrorType::TooManyResults => "The query would return too many results",
                ErrorType::LdContextNotAvailable => "A JSON-LD @context is not available",
                ErrorType::NoMultiTenantSupport => "Multi-tenancy is not supported",
                ErrorType::NonexistentTenant => "The tenant does not exist",
                ErrorType::LoopDetected => "The request came back to a broker it passed",
            },
            ErrorCode::NotAcceptable => "None of the accepted media types can be produced",
            ErrorCode::UnsupportedMediaType => "The request's media type is not supported",
            ErrorCode::PayloadTooLarge => "The request body is too large",
            ErrorCode::MethodNotAllowed => "The method is not allowed on this resource",
            ErrorCode::NotImplemented => "This operation is not implemented by this service",
            ErrorCode::Unauthenticated => "A valid token is needed",
            ErrorCode::Forbidden => "The token does not allow this request",
            ErrorCode::SourceFailed => "A context source failed",
        }
    }
}

impl From<ErrorType> for ErrorCode {
    fn from(kind: ErrorType) -> ErrorCode {
        ErrorCode::Ngsi(kind)
    }
}

/// An error on its way to the client as a ProblemDetails body.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: ErrorCode,
    /// What went wrong with this request; never internals (those are logged, not sent).
    pub detail: String,
}

impl Problem {
    pub fn new(code: impl Into<ErrorCode>, detail: impl Into<String>) -> Problem {
        Problem {
            code: code.into(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(ErrorType::BadRequestData, detail)
    }

    pub fn invalid_request(detail: impl Into<String>) -> Problem {
        Problem::new(ErrorType::InvalidRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(ErrorType::ResourceNotFound, detail)
    }

    /// A 500 whose body says nothing specific; `cause` goes to the log with the request's trace.
    pub fn internal(cause: &dyn std::error::Error) -> Problem {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "internal error");
        Problem::new(
            ErrorType::InternalError,
            "the server could not complete the request; the cause has been logged",
        )
    }

    /// The ProblemDetails object (`type`, `title`, `detail`).
    pub fn body(&self) -> Value {
        let mut body = Map::with_capacity(3);
        body.insert("type".to_owned(), Value::String(self.code.type_uri()));
        body.insert(
            "title".to_owned(),
            Value::String(self.code.title().to_owned()),
        );
        body.insert("detail".to_owned(), Value::String(self.detail.clone()));
        Value::Object(body)
    }
}

impl From<civitas_ngsild::Error> for Problem {
    fn from(error: civitas_ngsild::Error) -> Problem {
        match error.error_type() {
            ErrorType::InternalError => Problem::internal(&error),
            kind => Problem::new(kind, error.to_string()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.title(), self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/json");
        if self.code == ErrorCode::Unauthenticated {
            // RFC 6750 §3: a 401 says which scheme to use.
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.body(self.body().to_string())
    }
}

impl Responder for Problem {
    type Body = BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ngsi_type_has_a_status_and_uri() {
        let all = [
            ErrorType::InvalidRequest,
            ErrorType::BadRequestData,
            ErrorType::AlreadyExists,
            ErrorType::OperationNotSupported,
            ErrorType::ResourceNotFound,
            ErrorType::InternalError,
            ErrorType::TooComplexQuery,
            ErrorType::TooManyResults,
            ErrorType::LdContextNotAvailable,
            ErrorType::NoMultiTenantSupport,
            ErrorType::NonexistentTenant,
            ErrorType::LoopDetected,
        ];
        for kind in all {
            let code = ErrorCode::from(kind);
            assert!(
                code.type_uri()
                    .starts_with("https://uri.etsi.org/ngsi-ld/errors/")
            );
            assert!(!code.title().is_empty());
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(
            ErrorCode::from(ErrorType::AlreadyExists).status(),
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn problem_body_has_type_title_detail() {
        let body = Problem::bad_request("no id").body();
        assert_eq!(
            body["type"],
            "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
        );
        assert_eq!(body["detail"], "no id");
        assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    }
}
