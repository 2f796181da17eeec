//! `/jsonldContexts` (ETSI GS CIM 009 clause 6.29 to 6.30, operations of clause 5.13): add, list,
//! retrieve and delete the @contexts this connector hosts or caches.
//!
//! Adding and deleting need the write right (on some type), listing the read right; a context
//! document itself is public, because JSON-LD processors dereference the URLs that responses name
//! without credentials.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_http::Problem;
use civitas_http::negotiation::{self, BodyType};
use civitas_ngsild::canonical::format_timestamp;
use serde_json::{Value, json};

use civitas_auth::authorizer::Operation;

use super::{Params, authorize_whole, method_not_allowed, path_param, read_body};
use crate::AppState;
use crate::contexts::{ContextKind, KnownContext};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/jsonldContexts{slash:/?}")
            .route(web::post().to(add))
            .route(web::get().to(list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/jsonldContexts/{contextId:.+}")
            .route(web::get().to(retrieve))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `POST /jsonldContexts`: the body is a document with an `@context` member.
async fn add(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    authorize_whole(&state, &req, Operation::Write).await?;
    let body_type = negotiation::body_type(&req, false)?;
    let body = negotiation::parse_json(&read_body(&state, payload).await?)?;
    if body_type == BodyType::JsonLd && negotiation::link_context(&req)?.is_some() {
        return Err(Problem::bad_request(
            "a JSON-LD request must not have a JSON-LD Link header",
        ));
    }
    let Some(context) = body.get("@context") else {
        return Err(Problem::invalid_request(
            "the payload must be a JSON object with an @context member",
        ));
    };
    if !(context.is_object() || context.is_array() || context.is_string()) {
        return Err(Problem::bad_request(
            "@context must be an object, an array or a URL",
        ));
    }
    let hosted = state.contexts.add_hosted(context.clone()).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/ngsi-ld/v1/jsonldContexts/{}", hosted.id),
        ))
        .finish())
}

fn details(context: &KnownContext) -> Value {
    let mut details = json!({
        "URL": context.url,
        "localId": context.id,
        "kind": context.kind.name(),
        "createdAt": format_timestamp(&context.created_at),
    });
    if let Some(last) = &context.last_used_at {
        details["lastUsage"] = Value::String(format_timestamp(last));
    }
    details
}

/// `GET /jsonldContexts?details=&kind=`.
async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["details", "kind"])?;
    authorize_whole(&state, &req, Operation::Read).await?;
    let with_details = params.flag("details")?;
    let kind = match params.get("kind") {
        None => None,
        Some(name) => Some(ContextKind::parse(name).ok_or_else(|| {
            Problem::bad_request(format!(
                "kind must be Hosted, Cached or ImplicitlyCreated, not {name:?}"
            ))
        })?),
    };
    let contexts = state.contexts.list(kind);
    let body: Vec<Value> = if with_details {
        contexts.iter().map(details).collect()
    } else {
        contexts
            .iter()
            .map(|c| Value::String(c.url.clone()))
            .collect()
    };
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type(negotiation::JSON)
        .body(Value::Array(body).to_string()))
}

fn find(state: &AppState, id: &str) -> Result<KnownContext, Problem> {
    state
        .contexts
        .get(id)
        .ok_or_else(|| Problem::not_found(format!("no @context {id} is known here")))
}

/// `GET /jsonldContexts/{contextId}?details=`: the document itself, or its details.
async fn retrieve(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["details"])?;
    let details_wanted = params.flag("details")?;
    let context = find(&state, &path_param(&req, "contextId"))?;
    if details_wanted {
        return Ok(HttpResponse::Ok()
            .content_type(negotiation::JSON)
            .body(details(&context).to_string()));
    }
    Ok(HttpResponse::Ok()
        .content_type(negotiation::JSON)
        .body(context.document.to_string()))
}

/// `DELETE /jsonldContexts/{contextId}?reload=`.
async fn delete(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["reload"])?;
    let reload = params.flag("reload")?;
    authorize_whole(&state, &req, Operation::Write).await?;
    state
        .contexts
        .delete(&path_param(&req, "contextId"), reload)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
