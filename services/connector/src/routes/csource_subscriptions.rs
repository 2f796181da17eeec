//! `/csourceSubscriptions` and `/csourceSubscriptions/{subscriptionId}` (ETSI GS CIM 009
//! clauses 6.10 and 6.11, operations of clause 5.11).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_auth::authorizer::Operation;
use civitas_http::Problem;
use civitas_http::negotiation;
use civitas_ngsild::subscription;
use serde_json::Value;

use super::{Params, json_input_for, link_input, method_not_allowed, no_content};
use crate::AppState;
use crate::contexts::Resolved;
use crate::registration_subscriptions::{self, Stored};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/csourceSubscriptions{slash:/?}")
            .route(web::post().to(create))
            .route(web::get().to(query))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/csourceSubscriptions/{subscriptionId:[^/]+}")
            .route(web::get().to(retrieve))
            .route(web::patch().to(update))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    );
}

fn location(id: &str) -> String {
    format!(
        "/ngsi-ld/v1/csourceSubscriptions/{}",
        super::path_segment(id)
    )
}

fn subscription_id(req: &HttpRequest) -> Result<String, Problem> {
    super::uri_param(req, "subscriptionId", "subscription")
}

fn render(
    state: &AppState,
    tenant: &str,
    stored: &Stored,
    context: &Resolved,
    system: bool,
) -> Value {
    Value::Object(subscription::render(
        &stored.canonical,
        &context.active,
        state
            .registration_subscriptions
            .maintained(tenant, stored, system),
    ))
}

/// `POST /csourceSubscriptions` (clause 6.10.3.1). Subscribing asks to read, so it needs the read
/// right, not the write right.
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let input = json_input_for(&state, &req, payload, false, Operation::Read).await?;
    let stored = state
        .registration_subscriptions
        .create(&input.auth, &input.body, &input.context)
        .await?;
    let location = location(&stored.subscription.id);
    registration_subscriptions::subscribed(state.clone(), input.auth.tenant().to_owned(), stored);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .finish())
}

/// `GET /csourceSubscriptions` (clause 6.10.3.2): every subscription the caller may see,
/// paginated.
async fn query(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["limit", "offset", "count", "options"])?;
    let system = params.system_members()?;
    let media = negotiation::response_type(&req, false)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let page = params.page(&state.settings.limits)?;
    let all = state.registration_subscriptions.list(&auth).await?;
    let (shown, total) = page.of(&all);
    auth.note_count(shown.len() as u64);
    let body = Value::Array(
        shown
            .iter()
            .map(|stored| render(&state, auth.tenant(), stored, &context, system))
            .collect(),
    );
    let mut response = negotiation::respond(
        StatusCode::OK,
        body,
        media,
        &context.value,
        &context.link_url,
    );
    page.count_header(&mut response, total);
    page.links(&req, &mut response, shown.len(), Some(total), &[]);
    Ok(response)
}

/// `GET /csourceSubscriptions/{subscriptionId}` (clause 6.11.3.1).
async fn retrieve(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["options"])?;
    let system = params.system_members()?;
    let media = negotiation::response_type(&req, false)?;
    let id = subscription_id(&req)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let stored = state.registration_subscriptions.get(&auth, &id).await?;
    auth.note_count(1);
    Ok(negotiation::respond(
        StatusCode::OK,
        render(&state, auth.tenant(), &stored, &context, system),
        media,
        &context.value,
        &context.link_url,
    ))
}

/// `PATCH /csourceSubscriptions/{subscriptionId}` (clause 6.11.3.2). A changed subscription is
/// told of the registrations it matches now.
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let id = subscription_id(&req)?;
    let input = json_input_for(&state, &req, payload, true, Operation::Read).await?;
    let updated = state
        .registration_subscriptions
        .update(&input.auth, &id, &input.body, &input.context.active)
        .await?;
    registration_subscriptions::subscribed(state.clone(), input.auth.tenant().to_owned(), updated);
    Ok(no_content())
}

/// `DELETE /csourceSubscriptions/{subscriptionId}` (clause 6.11.3.3).
async fn delete(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let id = subscription_id(&req)?;
    let (auth, _) = link_input(&state, &req, Operation::Read).await?;
    state.registration_subscriptions.delete(&auth, &id).await?;
    Ok(no_content())
}
