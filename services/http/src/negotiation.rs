//! NGSI-LD content negotiation (ETSI GS CIM 009 clauses 6.3.4 to 6.3.6 and 6.3.14): which request
//! media types are accepted, where the request's @context comes from, which response media type is
//! produced and how the response carries its @context.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use civitas_ngsild::names::Tenant;
use serde_json::Value;

use crate::problem::{ErrorCode, Problem};

pub const JSON: &str = "application/json";
pub const JSON_LD: &str = "application/ld+json";
pub const GEO_JSON: &str = "application/geo+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// The `rel` of a Link header that names a JSON-LD @context (JSON-LD 1.1 §6.1).
pub const CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";
/// The header that names the tenant (clause 6.3.14).
pub const TENANT_HEADER: &str = "NGSILD-Tenant";

/// The media type of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Json,
    JsonLd,
    MergePatch,
}

/// Checks the Content-Type of a request that carries a body (clause 6.3.4): 415 otherwise.
pub fn body_type(req: &HttpRequest, allow_merge_patch: bool) -> Result<BodyType, Problem> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(Problem::new(
            ErrorCode::UnsupportedMediaType,
            "the request has no Content-Type",
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match essence.as_str() {
        JSON => Ok(BodyType::Json),
        JSON_LD => Ok(BodyType::JsonLd),
        MERGE_PATCH if allow_merge_patch => Ok(BodyType::MergePatch),
        other => Err(Problem::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {other:?} is not supported; use application/json or application/ld+json"
            ),
        )),
    }
}

/// Parses the request body as JSON, with a clear 400 for malformed or empty bodies.
pub fn parse_json(body: &[u8]) -> Result<Value, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::invalid_request("the request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| Problem::invalid_request(format!("the request body is not valid JSON: {e}")))
}

/// The URL of the @context named by the request's Link header, if there is one.
pub fn link_context(req: &HttpRequest) -> Result<Option<String>, Problem> {
    let mut found = None;
    for value in req.headers().get_all(header::LINK) {
        let text = value
            .to_str()
            .map_err(|_| Problem::bad_request("the Link header is not valid text"))?;
        for link in split_links(text) {
            let Some((target, params)) = parse_link(link) else {
                return Err(Problem::bad_request(format!(
                    "the Link header {link:?} is malformed"
                )));
            };
            let is_context = params
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("rel") && v == CONTEXT_REL);
            if is_context {
                if found.is_some() {
                    return Err(Problem::bad_request(
                        "more than one JSON-LD @context Link header",
                    ));
                }
                found = Some(target);
            }
        }
    }
    Ok(found)
}

fn split_links(text: &str) -> Vec<&str> {
    // Commas separate links, but only outside <…> and quotes.
    let mut links = Vec::new();
    let (mut start, mut in_angle, mut in_quote) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            '<' if !in_quote => in_angle = true,
            '>' if !in_quote => in_angle = false,
            '"' if !in_angle => in_quote = !in_quote,
            ',' if !in_angle && !in_quote => {
                links.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    links.push(text[start..].trim());
    links.into_iter().filter(|l| !l.is_empty()).collect()
}

fn parse_link(link: &str) -> Option<(String, Vec<(String, String)>)> {
    let rest = link.strip_prefix('<')?;
    let (target, params) = rest.split_once('>')?;
    let params = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect();
    Some((target.trim().to_owned(), params))
}

/// Where a request's @context comes from (clause 6.3.5).
#[derive(Debug, Clone, PartialEq)]
pub enum ContextSource {
    /// None given: the core context alone.
    Core,
    /// A Link header naming a context URL.
    Link(String),
    /// The `@context` member of a JSON-LD body.
    Inline(Value),
}

/// Decides the @context of a request from its Link header and, for requests with a body, the body
/// and its media type (clause 6.3.5): a JSON-LD body must carry `@context` and no Link header; a
/// plain JSON body must not carry `@context`.
pub fn request_context(
    req: &HttpRequest,
    body: Option<(&Value, BodyType)>,
) -> Result<ContextSource, Problem> {
    let link = link_context(req)?;
    match body {
        Some((body, BodyType::JsonLd)) => {
            if link.is_some() {
                return Err(Problem::bad_request(
                    "a request with Content-Type application/ld+json must not have a JSON-LD Link header",
                ));
            }
            inline_context(body).map(ContextSource::Inline)
        }
        Some((body, BodyType::Json | BodyType::MergePatch)) => {
            if has_context_member(body) {
                return Err(Problem::bad_request(
                    "a request with Content-Type application/json must not carry @context in its body; send it in a Link header or use application/ld+json",
                ));
            }
            Ok(link.map_or(ContextSource::Core, ContextSource::Link))
        }
        None => Ok(link.map_or(ContextSource::Core, ContextSource::Link)),
    }
}

/// The `@context` member of a JSON-LD body (400 when absent).
pub fn inline_context(body: &Value) -> Result<Value, Problem> {
    match body.get("@context") {
        Some(context) => Ok(context.clone()),
        None => Err(Problem::bad_request(
            "a request with Content-Type application/ld+json must carry @context in its body",
        )),
    }
}

fn has_context_member(body: &Value) -> bool {
    match body {
        Value::Object(o) => o.contains_key("@context"),
        Value::Array(items) => items.iter().any(|i| i.get("@context").is_some()),
        _ => false,
    }
}

/// The media type of a response (clause 6.3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    Json,
    JsonLd,
    GeoJson,
}

/// Picks the response media type from the Accept header: the acceptable type with the highest
/// quality; `*/*` and `application/*` mean JSON; 406 when nothing acceptable can be produced.
pub fn response_type(req: &HttpRequest, allow_geo_json: bool) -> Result<ResponseType, Problem> {
    let Some(accept) = req.headers().get(header::ACCEPT) else {
        return Ok(ResponseType::Json);
    };
    let accept = accept
        .to_str()
        .map_err(|_| Problem::bad_request("the Accept header is not valid text"))?;
    let mut candidates: Vec<(f32, usize, ResponseType)> = Vec::new();
    for (index, range) in accept.split(',').enumerate() {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if quality <= 0.0 {
            continue;
        }
        let kind = match media.as_str() {
            JSON | "*/*" | "application/*" => ResponseType::Json,
            JSON_LD => ResponseType::JsonLd,
            GEO_JSON if allow_geo_json => ResponseType::GeoJson,
            _ => continue,
        };
        candidates.push((quality, index, kind));
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.first().map(|c| c.2).ok_or_else(|| {
        Problem::new(
            ErrorCode::NotAcceptable,
            format!("cannot produce any of {accept:?}; available: application/json, application/ld+json{}", if allow_geo_json { ", application/geo+json" } else { "" }),
        )
    })
}

/// The tenant named by the `NGSILD-Tenant` header; `None` for the default tenant.
pub fn tenant(req: &HttpRequest) -> Result<Option<Tenant>, Problem> {
    match req.headers().get(TENANT_HEADER) {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Problem::bad_request("the NGSILD-Tenant header is not valid text"))?;
            Tenant::parse(text.trim()).map(Some).map_err(Problem::from)
        }
    }
}

/// The Link header value that points a plain-JSON response at its @context.
pub fn context_link(url: &str) -> String {
    format!("<{url}>; rel=\"{CONTEXT_REL}\"; type=\"application/ld+json\"")
}

/// Builds a JSON response in the negotiated media type: for JSON-LD the `@context` goes into the body
/// (into each element of an array), otherwise into a Link header.
pub fn respond(
    status: StatusCode,
    mut body: Value,
    media: ResponseType,
    context: &Value,
    link_url: &str,
) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    match media {
        ResponseType::JsonLd => {
            match &mut body {
                Value::Object(o) => {
                    o.insert("@context".to_owned(), context.clone());
                }
                Value::Array(items) => {
                    for item in items {
                        if let Value::Object(o) = item {
                            o.insert("@context".to_owned(), context.clone());
                        }
                    }
                }
                _ => {}
            }
            response.content_type(JSON_LD);
        }
        ResponseType::Json | ResponseType::GeoJson => {
            response.content_type(if media == ResponseType::Json {
                JSON
            } else {
                GEO_JSON
            });
            if let Ok(link) = HeaderValue::from_str(&context_link(link_url)) {
                response.insert_header((header::LINK, link));
            }
        }
    }
    response.body(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn accept(value: &str) -> Result<ResponseType, Problem> {
        response_type(
            &TestRequest::default()
                .insert_header((header::ACCEPT, value))
                .to_http_request(),
            true,
        )
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(
            accept("application/ld+json").ok(),
            Some(ResponseType::JsonLd)
        );
        assert_eq!(accept("*/*").ok(), Some(ResponseType::Json));
        assert_eq!(
            accept("application/json;q=0.5, application/ld+json").ok(),
            Some(ResponseType::JsonLd)
        );
        assert_eq!(
            accept("application/geo+json").ok(),
            Some(ResponseType::GeoJson)
        );
        assert_eq!(
            accept("application/xml").err().map(|p| p.code),
            Some(ErrorCode::NotAcceptable)
        );
    }

    #[test]
    fn link_headers() {
        let link = r#"<https://example.org/ctx.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json""#;
        let req = TestRequest::default()
            .insert_header((header::LINK, link))
            .to_http_request();
        assert_eq!(
            link_context(&req).ok().flatten().as_deref(),
            Some("https://example.org/ctx.jsonld")
        );
        let req = TestRequest::default()
            .insert_header((header::LINK, "nonsense"))
            .to_http_request();
        assert!(link_context(&req).is_err());
    }
}
