//! The connector's HTTP routes, one module per NGSI-LD resource (ETSI GS CIM 009 clause 6), and
//! the request-reading helpers they share.

mod admin;
mod audit;
mod csource_registrations;
mod csource_subscriptions;
mod entities;
mod entity_operations;
mod health;
mod jsonld_contexts;
mod provision;
mod types;
mod witness;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use civitas_http::negotiation::{self, BodyType, ContextSource};
use civitas_http::{ErrorCode, Problem};
use civitas_ngsild::ErrorType;
use civitas_ngsild::render::{Format, Projection, RenderOptions};
use futures_util::StreamExt;
use serde_json::Value;

use crate::AppState;
use crate::contexts::Resolved;
use crate::entities::refused;
use civitas_auth::authorizer::{Authorized, Operation, Request, bearer_tokens};

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/ngsi-ld/v1")
            .configure(entities::configure)
            .configure(entity_operations::configure)
            .configure(csource_registrations::configure)
            .configure(csource_subscriptions::configure)
            .configure(types::configure)
            .configure(jsonld_contexts::configure)
            .configure(not_implemented),
    )
    .configure(health::configure)
    .configure(admin::configure)
    .configure(audit::configure)
    .configure(witness::configure)
    .default_service(web::to(unknown_path));
}

/// Content negotiation for resources that are not implemented: a client that asks for a media type
/// no resource here produces gets its 406/415 first, then the honest 501.
fn negotiate_unimplemented(req: &HttpRequest) -> Result<(), Problem> {
    Params::parse(req, NGSI_LD_PARAMETERS)?;
    negotiation::response_type(req, false)?;
    if req
        .headers()
        .contains_key(actix_web::http::header::CONTENT_TYPE)
        && matches!(req.method().as_str(), "POST" | "PATCH" | "PUT")
    {
        negotiation::body_type(req, true)?;
    }
    Ok(())
}

async fn unknown_path(req: HttpRequest) -> Problem {
    Problem::not_found(format!("no resource at {}", req.path()))
}

pub(crate) async fn method_not_allowed(req: HttpRequest) -> Problem {
    Problem::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

/// Every query parameter NGSI-LD defines on the resources this connector does not serve yet; others
/// are refused as unknown before the 501.
const NGSI_LD_PARAMETERS: &[&str] = &[
    "id",
    "type",
    "idPattern",
    "attrs",
    "q",
    "csf",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "geometryProperty",
    "timeproperty",
    "timerel",
    "timeAt",
    "endTimeAt",
    "lastN",
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "details",
    "lang",
    "local",
    "scopeQ",
    "datasetId",
    "aggrMethods",
    "aggrPeriodDuration",
    "pick",
    "omit",
    "entityMap",
    "expandValues",
    "join",
    "joinLevel",
    "containedBy",
    "orderBy",
    "deleteAll",
    "noOverwrite",
];

/// NGSI-LD resources this connector does not serve yet: an honest 501 rather than a 404.
fn not_implemented(cfg: &mut web::ServiceConfig) {
    for path in [
        "/temporal/entities{slash:/?}",
        "/temporal/entities/{tail:.+}",
        "/temporal/entityOperations/{tail:.*}",
        "/subscriptions{slash:/?}",
        "/subscriptions/{tail:.+}",
    ] {
        cfg.route(
            path,
            web::to(|req: HttpRequest| async move {
                match negotiate_unimplemented(&req) {
                    Err(problem) => problem,
                    Ok(()) => Problem::new(
                        ErrorCode::NotImplemented,
                        format!(
                            "{} {} is not implemented by this connector yet",
                            req.method(),
                            req.path()
                        ),
                    ),
                }
            }),
        );
    }
}

/// Which part of a listing to answer with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub(crate) limit: usize,
    pub(crate) offset: usize,
    /// `count=true`: the total goes into `NGSILD-Results-Count`.
    pub(crate) count: bool,
}

impl Page {
    /// This page of `items`, and how many there are in all.
    pub(crate) fn of<'a, T>(&self, items: &'a [T]) -> (&'a [T], usize) {
        let start = self.offset.min(items.len());
        let end = start.saturating_add(self.limit).min(items.len());
        (&items[start..end], items.len())
    }

    /// Adds the links to the previous and the next page (clause 5.5.9; `Link` with `rel="prev"`
    /// and `rel="next"`) of a GET listing `req` to `response`, which shows `shown` items of
    /// `total` (`None`: unknown, so a full page is taken to have a next one). The links repeat
    /// the request's own parameters, with `limit` and `offset` last, and `replace` applied (or
    /// added). A `POST /entityOperations/query` gets them too: its URL carries the paging, so
    /// a link is where to post the same body for that page.
    pub(crate) fn links(
        &self,
        req: &HttpRequest,
        response: &mut HttpResponse,
        shown: usize,
        total: Option<usize>,
        replace: &[(&str, &str)],
    ) {
        let post_query = req.method() == actix_web::http::Method::POST
            && req.path().ends_with("/entityOperations/query");
        if (req.method() != actix_web::http::Method::GET && !post_query) || self.limit == 0 {
            return;
        }
        let next = match total {
            Some(total) => self.offset.saturating_add(self.limit) < total,
            None => shown >= self.limit,
        };
        let link = |offset: usize, rel: &str| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            let mut replaced = Vec::new();
            for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
                if name == "limit" || name == "offset" {
                    continue;
                }
                let value = match replace.iter().find(|(by_name, _)| *by_name == name) {
                    Some((by_name, by)) => {
                        replaced.push(*by_name);
                        *by
                    }
                    None => value.as_ref(),
                };
                query.append_pair(&name, value);
            }
            for (name, value) in replace.iter().filter(|(name, _)| !replaced.contains(name)) {
                query.append_pair(name, value);
            }
            query.append_pair("limit", &self.limit.to_string());
            query.append_pair("offset", &offset.to_string());
            format!(
                "<{}?{}>;rel=\"{rel}\";type=\"application/ld+json\"",
                req.path(),
                query.finish()
            )
        };
        let mut values = Vec::new();
        if self.offset > 0 {
            values.push(link(self.offset.saturating_sub(self.limit), "prev"));
        }
        if next {
            values.push(link(self.offset.saturating_add(self.limit), "next"));
        }
        for value in values {
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .append(actix_web::http::header::LINK, value);
            }
        }
    }

    /// Adds `NGSILD-Results-Count` to `response` when the caller asked for it.
    pub(crate) fn count_header(&self, response: &mut HttpResponse, total: usize) {
        if self.count
            && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&total.to_string())
        {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("ngsild-results-count"),
                value,
            );
        }
    }
}

/// The query parameters of a request, checked against the ones the endpoint knows (clause 6.3.1:
/// an unknown parameter is a 400).
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(req: &HttpRequest, known: &[&str]) -> Result<Params, Problem> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect();
        for (name, _) in &pairs {
            if !known.contains(&name.as_str()) {
                return Err(Problem::invalid_request(format!(
                    "unknown query parameter {name:?}"
                )));
            }
        }
        Ok(Params(pairs))
    }

    /// Every parameter, in the order given.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A comma-separated list parameter; absent → empty.
    pub(crate) fn list(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn flag(&self, name: &str) -> Result<bool, Problem> {
        match self.get(name) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(Problem::bad_request(format!(
                "{name} must be true or false, not {other:?}"
            ))),
        }
    }

    /// `options` values, each checked against `allowed`.
    pub(crate) fn options(&self, allowed: &[&str]) -> Result<Vec<&str>, Problem> {
        let options = self.list("options");
        for option in &options {
            if !allowed.contains(option) {
                return Err(Problem::bad_request(format!(
                    "unknown or unsupported option {option:?}"
                )));
            }
        }
        Ok(options)
    }

    /// Whether `options` asks for the system members (`sysAttrs`), the only option allowed.
    pub(crate) fn system_members(&self) -> Result<bool, Problem> {
        Ok(self.options(&["sysAttrs"])?.contains(&"sysAttrs"))
    }

    /// `limit`, `offset` and `count` of a listing (clause 5.5.9), checked against `limits`.
    pub(crate) fn page(&self, limits: &crate::settings::Limits) -> Result<Page, Problem> {
        let limit = match self.get("limit") {
            None => limits.default_page_size,
            Some(limit) => limit.parse::<u32>().map_err(|_| {
                Problem::bad_request(format!(
                    "limit must be a non-negative integer, not {limit:?}"
                ))
            })?,
        };
        if limit > limits.max_page_size {
            return Err(Problem::new(
                civitas_ngsild::ErrorType::TooManyResults,
                format!(
                    "limit {limit} is larger than the maximum page size {}",
                    limits.max_page_size
                ),
            ));
        }
        let offset = match self.get("offset") {
            None => 0,
            Some(offset) => offset.parse::<usize>().map_err(|_| {
                Problem::bad_request(format!(
                    "offset must be a non-negative integer, not {offset:?}"
                ))
            })?,
        };
        let count = self.flag("count")?;
        if limit == 0 && !count {
            return Err(Problem::bad_request(
                "limit=0 is only meaningful with count=true",
            ));
        }
        Ok(Page {
            limit: limit as usize,
            offset,
            count,
        })
    }

    /// Refuses parameters of the spec this connector does not evaluate yet (501, never ignored).
    pub(crate) fn refuse_unimplemented(&self, names: &[&str]) -> Result<(), Problem> {
        for name in names {
            if self.get(name).is_some() {
                return Err(Problem::new(
                    ErrorCode::NotImplemented,
                    format!("the query parameter {name} is not implemented by this connector yet"),
                ));
            }
        }
        Ok(())
    }
}

/// Reads the request body, refusing more than the configured limit with a 413.
pub(crate) async fn read_body(
    state: &AppState,
    mut payload: web::Payload,
) -> Result<Bytes, Problem> {
    let limit = state.settings.limits.max_body_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| Problem::invalid_request(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Problem::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The header a caller declares the purpose of a request in (checked against the token's purpose).
pub(crate) const PURPOSE_HEADER: &str = "civitas-purpose";

/// Decides whether the request may do `operation`: its bearer token(s), or the department's
/// anonymous policy without one, for the tenant it addresses (clause 4.14) at the clock's time.
/// This is the single decision point. The decision, and what the request then touches (noted in
/// the [`Authorized`]'s journal by the entity service), become the request's audit record, which
/// [`audit_records`] stores before the response leaves.
pub(crate) async fn authorize(
    state: &AppState,
    req: &HttpRequest,
    operation: Operation,
) -> Result<Authorized, Problem> {
    let decision = decide(state, req, operation);
    note_decision(state, req, operation, &decision);
    decision
}

/// [`authorize`], for endpoints that touch no entity: the decision is complete at once (a
/// department rule about what requests name sees no names).
pub(crate) async fn authorize_whole(
    state: &AppState,
    req: &HttpRequest,
    operation: Operation,
) -> Result<Authorized, Problem> {
    let decision = decide(state, req, operation).and_then(|authorized| {
        authorized
            .check_names(Default::default())
            .map_err(refused)?;
        Ok(authorized)
    });
    note_decision(state, req, operation, &decision);
    decision
}

/// Decides whether the request may do `operation`, without recording the decision: its bearer token(s), or the department's
/// anonymous policy without one, for the tenant it addresses (clause 4.14) at the clock's time.
/// Authentication comes before the tenant check, so callers without access learn nothing about
/// which tenants exist.
fn decide(
    state: &AppState,
    req: &HttpRequest,
    operation: Operation,
) -> Result<Authorized, Problem> {
    let tenant = negotiation::tenant(req)?;
    let mut tokens = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        None => Vec::new(),
        Some(value) => value.to_str().ok().and_then(bearer_tokens).ok_or_else(|| {
            Problem::new(
                ErrorCode::Unauthenticated,
                "the Authorization header must be Bearer <token>",
            )
        })?,
    };
    if state.federation.is_some() {
        // A broker's callers bring the departments' tokens, which are for the departments: the
        // broker decides about its own data by the tokens its own key signed, else anonymously.
        tokens.retain(|token| state.authorizer.verifies(token));
    }
    let purpose = match req.headers().get(PURPOSE_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            Problem::bad_request("the Civitas-Purpose header must be visible ASCII")
        })?),
    };
    let request_id = {
        use actix_web::HttpMessage;
        req.extensions().get::<RequestId>().map(|id| id.0.clone())
    };
    let request = Request {
        operation,
        tenant: tenant.as_ref().map(|t| t.as_str()),
        purpose,
        request_id: request_id.as_deref(),
        now: state.clock.now(),
    };
    let authorized = state
        .authorizer
        .authorize(&tokens, &request)
        .map_err(refused)?;
    if let Some(tenant) = tenant {
        let declared = state.settings.tenants.iter().any(|t| t == tenant.as_str());
        if !declared && !state.settings.allow_any_tenant {
            return Err(Problem::new(
                ErrorType::NonexistentTenant,
                format!(
                    "the tenant {tenant} is not served by this connector; tenants are declared in its configuration"
                ),
            ));
        }
    }
    Ok(authorized)
}

/// The header carrying a request's id, which its audit record carries too.
pub(crate) const REQUEST_ID_HEADER: &str = "civitas-request-id";

/// The id of the request being served (a UUID), set by [`request_id`].
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub(crate) String);

/// Gives every request an id, and every response the `Civitas-Request-Id` header. A request that
/// arrives with a `Civitas-Request-Id` holding a UUID keeps it: a broker forwarding a federated
/// request sends its own id, so the broker's record and every connector's share it (and a token
/// the broker bound to that id is checked against it). Anything else gets a fresh UUID v4.
pub(crate) async fn request_id(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| uuid::Uuid::parse_str(value.trim()).ok())
        .map_or_else(
            || uuid::Uuid::new_v4().to_string(),
            |id| id.hyphenated().to_string(),
        );
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.call(req).await?;
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(REQUEST_ID_HEADER),
            value,
        );
    }
    Ok(response)
}

/// The id of the request being served (a fresh one outside the middleware, in tests).
pub(crate) fn current_request_id(req: &HttpRequest) -> String {
    use actix_web::HttpMessage;
    req.extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The audit record of a request being served: the decision, and the journal the service notes
/// what the request touches in. Kept in the request's extensions until [`audit_records`] stores it.
struct PendingRecord {
    access: civitas_audit::record::Access,
    journal: Option<std::sync::Arc<civitas_auth::authorizer::Journal>>,
}

/// Keeps the first decision of a request for its audit record.
fn note_decision(
    state: &AppState,
    req: &HttpRequest,
    operation: Operation,
    decision: &Result<Authorized, Problem>,
) {
    use actix_web::HttpMessage;
    use civitas_audit::record::{Access, Decision};
    if req.extensions().contains::<PendingRecord>() {
        return;
    }
    let pseudonymizer = state.audit.pseudonymizer();
    let pending = match decision {
        Ok(authorized) => PendingRecord {
            access: Access {
                holder: authorized
                    .holder()
                    .map(|holder| pseudonymizer.pseudonym(holder)),
                revocation_ids: authorized.grant().revocation_ids.clone(),
                tenant: authorized.tenant().to_owned(),
                purpose: authorized.purpose().map(str::to_owned),
                ..Access::new(operation.name(), Decision::Allowed)
            },
            journal: Some(authorized.journal().clone()),
        },
        Err(problem) => PendingRecord {
            access: Access {
                revocation_ids: refused_revocation_ids(state, req),
                tenant: record_tenant(req),
                purpose: record_purpose(req),
                ..Access::new(
                    operation.name(),
                    Decision::Refused {
                        status: problem.code.status().as_u16(),
                    },
                )
            },
            journal: None,
        },
    };
    req.extensions_mut().insert(pending);
}

/// The tenant a request addresses (`""`: the default one, or a header that is not a tenant), for
/// its audit record.
fn record_tenant(req: &HttpRequest) -> String {
    negotiation::tenant(req)
        .ok()
        .flatten()
        .map(|tenant| tenant.as_str().to_owned())
        .unwrap_or_default()
}

/// The purpose a request declares, for its audit record.
fn record_purpose(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(PURPOSE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A request's geo-query (`georel` with `geometry` and `coordinates`, clause 4.10) and the
/// GeoProperty it is about as named (`location` when `geoproperty` is absent or empty); `None`
/// without `georel`, whose companions alone are refused.
pub(crate) fn geo_params(
    params: &Params,
) -> Result<Option<(civitas_ngsild::geoquery::GeoQuery, &str)>, Problem> {
    let Some(georel) = params.get("georel") else {
        if let Some(name) = ["geometry", "coordinates", "geoproperty"]
            .into_iter()
            .find(|name| params.get(name).is_some_and(|v| !v.is_empty()))
        {
            return Err(Problem::bad_request(format!("{name} needs georel")));
        }
        return Ok(None);
    };
    let (Some(geometry), Some(coordinates)) = (params.get("geometry"), params.get("coordinates"))
    else {
        return Err(Problem::bad_request(
            "georel needs geometry and coordinates",
        ));
    };
    let geo = civitas_ngsild::geoquery::GeoQuery::parse(georel, geometry, coordinates)?;
    let property = match params.get("geoproperty") {
        None | Some("") => "location",
        Some(name) => name,
    };
    Ok(Some((geo, property)))
}

/// Records that a broker forwarded the whole of a request and decided nothing itself; `journal`
/// says which entities it concerned.
pub(crate) fn note_forwarded(
    req: &HttpRequest,
    operation: Operation,
    journal: std::sync::Arc<civitas_auth::authorizer::Journal>,
) {
    use actix_web::HttpMessage;
    use civitas_audit::record::{Access, Decision};
    if req.extensions().contains::<PendingRecord>() {
        return;
    }
    let access = Access {
        tenant: record_tenant(req),
        purpose: record_purpose(req),
        ..Access::new(operation.name(), Decision::Forwarded)
    };
    req.extensions_mut().insert(PendingRecord {
        access,
        journal: Some(journal),
    });
}

/// Adds what a broker did with a federated request (sources asked, skipped, failed) to its
/// audit record.
pub(crate) fn note_federation(req: &HttpRequest, federated: civitas_audit::record::Federated) {
    use actix_web::HttpMessage;
    if let Some(pending) = req.extensions_mut().get_mut::<PendingRecord>() {
        pending.access.federation = Some(federated);
    }
}

/// Stores the audit record of every request that reached a decision, after it was served and
/// before its response leaves: a response is never sent for a request whose record is not
/// durably stored. An allowed request whose record cannot be stored is answered with a 500
/// instead; a refusal stays a refusal.
///
/// The record says what the request touched (types, pseudonymized ids, attributes, count, from
/// the journal), the digest of its query string, and the response's status. A request refused
/// after the decision (a write to a forbidden attribute: 403; an entity the caller may not see:
/// 404) is recorded as refused.
pub(crate) async fn audit_records(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    use actix_web::HttpMessage;
    use civitas_audit::record::{Decision, Event, FORMAT_VERSION, Record, sha256_hex};
    let response = next.call(req).await?;
    let pending = response
        .request()
        .extensions_mut()
        .remove::<PendingRecord>();
    let state = response
        .request()
        .app_data::<web::Data<AppState>>()
        .cloned();
    let (Some(pending), Some(state)) = (pending, state) else {
        return Ok(response.map_into_left_body());
    };
    let request = response.request();
    let status = response.status().as_u16();
    let mut access = pending.access;
    let touched = pending
        .journal
        .map(|journal| journal.take())
        .unwrap_or_default();
    if access.decision == Decision::Allowed {
        if touched.hidden {
            access.decision = Decision::Refused { status: 404 };
        } else if status == 401 || status == 403 {
            access.decision = Decision::Refused { status };
        }
    }
    // A forwarded write was acknowledged by the sources: its record must be stored like an
    // allowed request's.
    let allowed = matches!(access.decision, Decision::Allowed | Decision::Forwarded);
    let pseudonymizer = state.audit.pseudonymizer();
    let mut ids: Vec<&str> = touched.entity_ids.iter().map(String::as_str).collect();
    let path_id = path_param(request, "entityId");
    if ids.is_empty() && !path_id.is_empty() {
        ids.push(&path_id);
    }
    access.set_entity_ids(pseudonymizer, ids);
    access.entity_types = touched.entity_types.into_iter().collect();
    access.attributes = touched.attributes.into_iter().collect();
    access.count = touched.count;
    let query = request.query_string();
    if !query.is_empty() {
        access.query_digest = Some(sha256_hex(query.as_bytes()));
    }
    access.status = Some(status);
    let record = Record {
        v: FORMAT_VERSION,
        time: state.clock.now().timestamp_micros(),
        service: state.settings.department.clone(),
        request_id: request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        trace_id: trace_id(request),
        event: Event::Access(access),
    };
    match state.audit.append(record).await {
        Ok(_) => Ok(response.map_into_left_body()),
        Err(error) if allowed => {
            let (request, _) = response.into_parts();
            let failed = actix_web::ResponseError::error_response(&Problem::internal(&error));
            Ok(actix_web::dev::ServiceResponse::new(request, failed).map_into_right_body())
        }
        Err(error) => {
            tracing::error!(%error, "the record of a refusal was not stored");
            Ok(response.map_into_left_body())
        }
    }
}

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if the request
/// has a valid one.
fn trace_id(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then(|| trace.to_owned())
}

/// The revocation ids of the bearer tokens of a refused request, as far as they decode.
fn refused_revocation_ids(state: &AppState, req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_tokens)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|token| state.authorizer.revocation_ids(token).ok())
        .flatten()
        .collect()
}

/// A request with a JSON body, its authorization and its resolved @context.
pub(crate) struct JsonInput {
    pub auth: Authorized,
    pub body: Value,
    pub body_type: BodyType,
    pub context: Resolved,
}

/// Reads a write request that carries a JSON body: authorization, media type, body, and @context.
pub(crate) async fn json_input(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    allow_merge_patch: bool,
) -> Result<JsonInput, Problem> {
    json_input_for(state, req, payload, allow_merge_patch, Operation::Write).await
}

/// Like [`json_input`], authorized for `operation`: a subscription, say, carries a body but asks
/// only to read.
pub(crate) async fn json_input_for(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    allow_merge_patch: bool,
    operation: Operation,
) -> Result<JsonInput, Problem> {
    // Writes answer in JSON at most (ids, UpdateResult, BatchOperationResult): an Accept header
    // that rules JSON out is a 406 before anything is written (clause 6.3.6).
    negotiation::response_type(req, false)?;
    let auth = authorize(state, req, operation).await?;
    let (body, body_type, context) = read_json(state, req, payload, allow_merge_patch).await?;
    Ok(JsonInput {
        auth,
        body,
        body_type,
        context,
    })
}

/// A JSON body, its media type and its @context (the body's own, the Link header's, or the core
/// context; a batch's entries carry their own in JSON-LD, checked per entry).
async fn read_json(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    allow_merge_patch: bool,
) -> Result<(Value, BodyType, Resolved), Problem> {
    let body_type = negotiation::body_type(req, allow_merge_patch)?;
    let bytes = read_body(state, payload).await?;
    let body = negotiation::parse_json(&bytes)?;
    let source = match (&body, body_type) {
        // Batches: in JSON-LD each entity carries its own @context, in JSON none may; both are
        // checked per entity, so one bad entity does not sink the batch.
        (Value::Array(_), BodyType::JsonLd) => {
            if negotiation::link_context(req)?.is_some() {
                return Err(Problem::bad_request(
                    "a JSON-LD request must not have a JSON-LD Link header",
                ));
            }
            ContextSource::Core
        }
        (Value::Array(_), _) => {
            negotiation::link_context(req)?.map_or(ContextSource::Core, ContextSource::Link)
        }
        _ => negotiation::request_context(req, Some((&body, body_type)))?,
    };
    let context = state.contexts.resolve(&source).await?;
    Ok((body, body_type, context))
}

/// A write's input, whose authorization a broker may defer until it knows which part of the
/// write it keeps (see [`provision`]).
pub(crate) struct WriteInput {
    /// `None`: not decided yet (a broker's write that registrations may claim).
    pub auth: Option<Authorized>,
    /// The body (`Value::Null` for a write without one).
    pub body: Value,
    pub body_type: BodyType,
    pub context: Resolved,
}

/// Reads a write with a JSON body like [`json_input`]; on a broker, unless the caller asked for
/// `local=true`, the decision is left to [`provision::write`].
pub(crate) async fn write_input(
    state: &AppState,
    req: &HttpRequest,
    params: &Params,
    payload: web::Payload,
    allow_merge_patch: bool,
) -> Result<WriteInput, Problem> {
    if !provision::distributes(state, params)? {
        let input = json_input(state, req, payload, allow_merge_patch).await?;
        return Ok(WriteInput {
            auth: Some(input.auth),
            body: input.body,
            body_type: input.body_type,
            context: input.context,
        });
    }
    negotiation::response_type(req, false)?;
    let (body, body_type, context) = read_json(state, req, payload, allow_merge_patch).await?;
    Ok(WriteInput {
        auth: None,
        body,
        body_type,
        context,
    })
}

/// Reads a write without a body like [`link_input`], deferring the decision as [`write_input`]
/// does.
pub(crate) async fn write_link_input(
    state: &AppState,
    req: &HttpRequest,
    params: &Params,
) -> Result<WriteInput, Problem> {
    if !provision::distributes(state, params)? {
        let (auth, context) = link_input(state, req, Operation::Write).await?;
        return Ok(WriteInput {
            auth: Some(auth),
            body: Value::Null,
            body_type: BodyType::Json,
            context,
        });
    }
    let source = negotiation::request_context(req, None)?;
    let context = state.contexts.resolve(&source).await?;
    Ok(WriteInput {
        auth: None,
        body: Value::Null,
        body_type: BodyType::Json,
        context,
    })
}

/// Authorizes a request without a body for `operation` and resolves its @context (the Link
/// header, else the core context).
pub(crate) async fn link_input(
    state: &AppState,
    req: &HttpRequest,
    operation: Operation,
) -> Result<(Authorized, Resolved), Problem> {
    let auth = authorize(state, req, operation).await?;
    let source = negotiation::request_context(req, None)?;
    let context = state.contexts.resolve(&source).await?;
    Ok((auth, context))
}

/// The rendering options of a retrieval or query: `options`, `format`, `attrs`, `pick`, `omit`.
pub(crate) fn render_options(
    params: &Params,
    context: &Resolved,
) -> Result<RenderOptions, Problem> {
    let options = params.options(&["keyValues", "concise", "normalized", "sysAttrs"])?;
    let mut format = None;
    let mut set_format = |f: Format| -> Result<(), Problem> {
        match format.replace(f) {
            Some(previous) if previous != f => Err(Problem::bad_request(
                "keyValues, concise and normalized are mutually exclusive",
            )),
            _ => Ok(()),
        }
    };
    for option in &options {
        match *option {
            "keyValues" => set_format(Format::KeyValues)?,
            "concise" => set_format(Format::Concise)?,
            "normalized" => set_format(Format::Normalized)?,
            _ => {}
        }
    }
    match params.get("format") {
        None => {}
        Some("keyValues" | "simplified") => set_format(Format::KeyValues)?,
        Some("concise") => set_format(Format::Concise)?,
        Some("normalized") => set_format(Format::Normalized)?,
        Some(other) => return Err(Problem::bad_request(format!("unknown format {other:?}"))),
    }
    let expand = |name: &str| context.active.expand_name(name);
    let mut projection = Projection::default();
    let attrs = params.list("attrs");
    let pick = params.list("pick");
    let omit = params.list("omit");
    if !pick.is_empty() && !omit.is_empty() {
        return Err(Problem::bad_request(
            "pick and omit cannot be used together",
        ));
    }
    for name in attrs.iter().chain(&pick).chain(&omit) {
        if !civitas_ngsild::names::is_valid_name(name) {
            return Err(Problem::bad_request(format!(
                "{name:?} is not a valid attribute name"
            )));
        }
    }
    if !attrs.is_empty() {
        projection.keep = Some(attrs.iter().map(|a| expand(a)).collect());
    }
    if !pick.is_empty() {
        projection.omit_id = !pick.contains(&"id");
        projection.omit_type = !pick.contains(&"type");
        let picked: std::collections::HashSet<String> = pick
            .iter()
            .filter(|p| !matches!(**p, "id" | "type"))
            .map(|p| expand(p))
            .collect();
        projection.keep = Some(match projection.keep.take() {
            Some(keep) => keep.intersection(&picked).cloned().collect(),
            None => picked,
        });
    }
    for name in &omit {
        match *name {
            "id" => projection.omit_id = true,
            "type" => projection.omit_type = true,
            other => {
                projection.omit.insert(expand(other));
            }
        }
    }
    Ok(RenderOptions {
        format: format.unwrap_or_default(),
        sys_attrs: options.contains(&"sysAttrs"),
        projection,
    })
}

/// A path segment, percent-decoded completely (the router leaves `%2F`, `%25` and `%2B` encoded).
pub(crate) fn path_param(req: &HttpRequest, name: &str) -> String {
    let raw = req.match_info().get(name).unwrap_or_default();
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// Characters that cannot stand in a path segment as they are (RFC 3986 §3.3).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `value` percent-encoded as one path segment (non-ASCII as UTF-8 escapes).
pub(crate) fn path_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

/// The path parameter `name`, which must be an absolute URI (the id of a `what`).
pub(crate) fn uri_param(req: &HttpRequest, name: &str, what: &str) -> Result<String, Problem> {
    let id = path_param(req, name);
    if !civitas_ngsild::names::is_absolute_uri(&id) {
        return Err(Problem::bad_request(format!(
            "{id:?} is not a valid {what} id (an absolute URI)"
        )));
    }
    Ok(id)
}

/// 204 No Content.
pub(crate) fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}
