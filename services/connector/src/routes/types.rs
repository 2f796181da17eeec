//! `/types`, `/types/{type}`, `/attributes` and `/attributes/{attrId}` (ETSI GS CIM 009 clauses
//! 6.25 to 6.28, operations of clause 5.7): what entity types and attributes exist, as far as the
//! caller may see. On a broker, the answer also gathers what the registered sources report.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_auth::authorizer::{Authorized, Operation};
use civitas_http::Problem;
use civitas_http::negotiation;
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::names::is_valid_name;
use civitas_ngsild::registration::Selector;
use serde_json::{Value, json};

use super::{Params, link_input, method_not_allowed, path_param};
use crate::AppState;
use crate::contexts::Resolved;
use crate::discovery::{AttributeDetail, TypeDetail};
use crate::federation::{self, SourceWarning};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/types{slash:/?}")
            .route(web::get().to(types))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/types/{type:[^/]+}")
            .route(web::get().to(type_info))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/attributes{slash:/?}")
            .route(web::get().to(attributes))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/attributes/{attrId:[^/]+}")
            .route(web::get().to(attribute_info))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Names gathered from this service and its sources: expanded name → what is known of it.
#[derive(Default)]
struct Gathered {
    /// Type → attribute names (for `/types`), or attribute → type names (for `/attributes`).
    names: BTreeMap<String, BTreeSet<String>>,
    warnings: Vec<SourceWarning>,
    sources: Vec<String>,
}

fn compact(ctx: &ActiveContext, iri: &str) -> Value {
    Value::from(ctx.compact_name(iri).into_owned())
}

fn list_id(kind: &str) -> String {
    format!("urn:ngsi-ld:{kind}:{}", uuid::Uuid::new_v4())
}

/// Whether the broker's sources are asked too.
fn federated(state: &AppState, params: &Params) -> Result<bool, Problem> {
    Ok(state.federation.is_some() && !params.flag("local")?)
}

/// The sources a discovery request goes to: every registration supporting `operation`.
async fn sources(
    state: &AppState,
    req: &HttpRequest,
    auth: &Authorized,
    operation: &str,
) -> Result<Vec<federation::Source>, Problem> {
    let federation = state.federation.as_ref().ok_or_else(|| {
        Problem::new(
            civitas_ngsild::ErrorType::InternalError,
            "federation is off",
        )
    })?;
    federation.check_loop(req)?;
    let registrations = state
        .registrations
        .matching(auth.tenant(), &Selector::default(), operation)
        .await?;
    Ok(federation.sources(&registrations))
}

/// Asks the sources for `path?query` and returns the bodies, noting the federation in the audit
/// record.
async fn ask_sources(
    state: &AppState,
    req: &HttpRequest,
    auth: &Authorized,
    context: &Resolved,
    operation: &str,
    path: &str,
    query: &[(String, String)],
) -> Result<(Vec<Value>, Vec<SourceWarning>, Vec<String>), Problem> {
    let sources = sources(state, req, auth, operation).await?;
    let endpoints: Vec<String> = sources.iter().map(|s| s.endpoint.clone()).collect();
    let federation = state.federation.as_ref().ok_or_else(|| {
        Problem::new(
            civitas_ngsild::ErrorType::InternalError,
            "federation is off",
        )
    })?;
    let forward = super::provision::forward(state, req, auth.tenant(), context)?;
    let (bodies, warnings) = federation.gather(&forward, &sources, path, query).await?;
    super::note_federation(req, federation::summary(&forward, &endpoints, &warnings));
    Ok((bodies, warnings, endpoints))
}

fn respond(
    req: &HttpRequest,
    context: &Resolved,
    body: Value,
    warnings: &[SourceWarning],
) -> Result<HttpResponse, Problem> {
    let media = negotiation::response_type(req, false)?;
    let mut response = negotiation::respond(
        StatusCode::OK,
        body,
        media,
        &context.value,
        &context.link_url,
    );
    for warning in warnings {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&warning.header_value()) {
            response.headers_mut().append(
                actix_web::http::header::HeaderName::from_static(federation::WARNING_HEADER),
                value,
            );
        }
    }
    Ok(response)
}

/// Reads the strings of `member` (a name or a list of names) of a source's answer, expanded.
fn names_of(item: &Value, member: &str, ctx: &ActiveContext) -> Vec<String> {
    match item.get(member) {
        Some(Value::String(name)) => vec![ctx.expand_name(name)],
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| ctx.expand_name(name))
            .collect(),
        _ => Vec::new(),
    }
}

/// `GET /types` (clause 6.25.3.1): the list of types, or with `details=true` each type with its
/// attribute names.
async fn types(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["details", "local"])?;
    let details = params.flag("details")?;
    negotiation::response_type(&req, false)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let ctx = &context.active;
    let mut gathered = Gathered::default();
    for summary in state.entities.types(&auth).await? {
        gathered
            .names
            .entry(summary.name)
            .or_default()
            .extend(summary.attributes);
    }
    if federated(&state, &params)? {
        let query = [("details".to_owned(), "true".to_owned())];
        let (bodies, warnings, sources) = ask_sources(
            &state,
            &req,
            &auth,
            &context,
            "retrieveEntityTypeDetails",
            "types",
            &query,
        )
        .await?;
        for item in bodies.iter().filter_map(Value::as_array).flatten() {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                continue;
            };
            gathered
                .names
                .entry(ctx.expand_name(id))
                .or_default()
                .extend(names_of(item, "attributeNames", ctx));
        }
        gathered.warnings = warnings;
        gathered.sources = sources;
    }
    let body = if details {
        Value::Array(
            gathered
                .names
                .iter()
                .map(|(name, attributes)| {
                    json!({
                        "id": name,
                        "type": "EntityType",
                        "typeName": compact(ctx, name),
                        "attributeNames": attributes.iter().map(|a| compact(ctx, a)).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    } else {
        json!({
            "id": list_id("EntityTypeList"),
            "type": "EntityTypeList",
            "typeList": gathered.names.keys().map(|name| compact(ctx, name)).collect::<Vec<_>>(),
        })
    };
    respond(&req, &context, body, &gathered.warnings)
}

fn name_param(req: &HttpRequest, param: &str, ctx: &ActiveContext) -> Result<String, Problem> {
    let name = path_param(req, param);
    if !is_valid_name(&name) && !civitas_ngsild::names::is_absolute_uri(&name) {
        return Err(Problem::bad_request(format!(
            "{name:?} is not a valid name"
        )));
    }
    Ok(ctx.expand_name(&name))
}

/// `GET /types/{type}` (clause 6.26.3.1): how many entities of the type there are and which
/// attributes, of which attribute types, they have.
async fn type_info(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["local"])?;
    negotiation::response_type(&req, false)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let ctx = &context.active;
    let name = name_param(&req, "type", ctx)?;
    let mut detail = state
        .entities
        .type_detail(&auth, &name)
        .await?
        .unwrap_or_else(|| TypeDetail {
            name: name.clone(),
            entity_count: 0,
            attributes: BTreeMap::new(),
        });
    let mut warnings = Vec::new();
    if federated(&state, &params)? {
        let path = format!("types/{}", super::path_segment(&ctx.compact_name(&name)));
        let (bodies, found_warnings, _) = ask_sources(
            &state,
            &req,
            &auth,
            &context,
            "retrieveEntityTypeInfo",
            &path,
            &[],
        )
        .await?;
        warnings = found_warnings;
        for body in &bodies {
            // Entities held by several sources are counted once per source.
            detail.entity_count += body.get("entityCount").and_then(Value::as_u64).unwrap_or(0);
            for attribute in body
                .get("attributeDetails")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(id) = attribute.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let kinds = detail.attributes.entry(ctx.expand_name(id)).or_default();
                for kind in names_of(attribute, "attributeTypes", &ActiveContext::empty()) {
                    if let Some(known) = ATTRIBUTE_TYPES.iter().find(|k| **k == kind) {
                        kinds.insert(known);
                    }
                }
            }
        }
    }
    if detail.entity_count == 0 {
        return Err(Problem::not_found(format!(
            "no entity of type {} exists",
            ctx.compact_name(&name)
        )));
    }
    let body = json!({
        "id": detail.name,
        "type": "EntityTypeInfo",
        "typeName": compact(ctx, &detail.name),
        "entityCount": detail.entity_count,
        "attributeDetails": detail.attributes.iter().map(|(attribute, kinds)| json!({
            "id": attribute,
            "type": "Attribute",
            "attributeName": compact(ctx, attribute),
            "attributeTypes": kinds.iter().collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    respond(&req, &context, body, &warnings)
}

/// The attribute types of NGSI-LD (clause 4.5).
const ATTRIBUTE_TYPES: &[&str] = &[
    "Property",
    "Relationship",
    "GeoProperty",
    "LanguageProperty",
    "VocabProperty",
    "JsonProperty",
    "ListProperty",
    "ListRelationship",
];

/// `GET /attributes` (clause 6.27.3.1): the list of attribute names, or with `details=true`
/// each with the entity types that have it.
async fn attributes(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["details", "local"])?;
    let details = params.flag("details")?;
    negotiation::response_type(&req, false)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let ctx = &context.active;
    let mut gathered = Gathered::default();
    for summary in state.entities.attributes(&auth).await? {
        gathered
            .names
            .entry(summary.name)
            .or_default()
            .extend(summary.types);
    }
    if federated(&state, &params)? {
        let query = [("details".to_owned(), "true".to_owned())];
        let (bodies, warnings, sources) = ask_sources(
            &state,
            &req,
            &auth,
            &context,
            "retrieveAttrTypeDetails",
            "attributes",
            &query,
        )
        .await?;
        for item in bodies.iter().filter_map(Value::as_array).flatten() {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                continue;
            };
            gathered
                .names
                .entry(ctx.expand_name(id))
                .or_default()
                .extend(names_of(item, "typeNames", ctx));
        }
        gathered.warnings = warnings;
        gathered.sources = sources;
    }
    let body = if details {
        Value::Array(
            gathered
                .names
                .iter()
                .map(|(name, types)| {
                    json!({
                        "id": name,
                        "type": "Attribute",
                        "attributeName": compact(ctx, name),
                        "typeNames": types.iter().map(|t| compact(ctx, t)).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    } else {
        json!({
            "id": list_id("AttributeList"),
            "type": "AttributeList",
            "attributeList": gathered.names.keys().map(|name| compact(ctx, name)).collect::<Vec<_>>(),
        })
    };
    respond(&req, &context, body, &gathered.warnings)
}

/// `GET /attributes/{attrId}` (clause 6.28.3.1): how many entities have the attribute, of which
/// attribute types, and on which entity types.
async fn attribute_info(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["local"])?;
    negotiation::response_type(&req, false)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let ctx = &context.active;
    let name = name_param(&req, "attrId", ctx)?;
    let mut detail = state
        .entities
        .attribute_detail(&auth, &name)
        .await?
        .unwrap_or_else(|| AttributeDetail {
            name: name.clone(),
            count: 0,
            attribute_types: BTreeSet::new(),
            types: BTreeSet::new(),
        });
    let mut warnings = Vec::new();
    if federated(&state, &params)? {
        let path = format!(
            "attributes/{}",
            super::path_segment(&ctx.compact_name(&name))
        );
        let (bodies, found_warnings, _) = ask_sources(
            &state,
            &req,
            &auth,
            &context,
            "retrieveAttrTypeInfo",
            &path,
            &[],
        )
        .await?;
        warnings = found_warnings;
        for body in &bodies {
            detail.count += body
                .get("attributeCount")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            for kind in names_of(body, "attributeTypes", &ActiveContext::empty()) {
                if let Some(known) = ATTRIBUTE_TYPES.iter().find(|k| **k == kind) {
                    detail.attribute_types.insert(known);
                }
            }
            detail.types.extend(names_of(body, "typeNames", ctx));
        }
    }
    if detail.count == 0 {
        return Err(Problem::not_found(format!(
            "no entity has the attribute {}",
            ctx.compact_name(&name)
        )));
    }
    let body = json!({
        "id": detail.name,
        "type": "Attribute",
        "attributeName": compact(ctx, &detail.name),
        "attributeCount": detail.count,
        "attributeTypes": detail.attribute_types.iter().collect::<Vec<_>>(),
        "typeNames": detail.types.iter().map(|t| compact(ctx, t)).collect::<Vec<_>>(),
    });
    respond(&req, &context, body, &warnings)
}
