//! `/csourceRegistrations` and `/csourceRegistrations/{registrationId}` (ETSI GS CIM 009
//! clauses 6.8 and 6.9, operations of clauses 5.9 and 5.10).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_http::Problem;
use civitas_http::negotiation;
use civitas_ngsild::names::{EntityId, is_valid_name};
use civitas_ngsild::registration::{self, SystemMembers};
use serde_json::Value;

use civitas_auth::authorizer::Operation;

use super::{Params, json_input, link_input, method_not_allowed, no_content};
use crate::AppState;
use crate::contexts::Resolved;
use crate::registration_subscriptions;
use crate::registrations::{RegistrationQuery, Stored};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/csourceRegistrations{slash:/?}")
            .route(web::post().to(create))
            .route(web::get().to(query))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/csourceRegistrations/{registrationId:[^/]+}")
            .route(web::get().to(retrieve))
            .route(web::patch().to(update))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    );
}

fn location(id: &str) -> String {
    format!(
        "/ngsi-ld/v1/csourceRegistrations/{}",
        super::path_segment(id)
    )
}

/// `POST /csourceRegistrations` (clause 6.8.3.1).
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let input = json_input(&state, &req, payload, false).await?;
    let created = state
        .registrations
        .create(&input.auth, &input.body, &input.context.active)
        .await?;
    let location = location(&created.registration.id);
    registration_subscriptions::registration_changed(
        state.clone(),
        input.auth.tenant().to_owned(),
        None,
        Some(created),
    );
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .finish())
}

const QUERY_PARAMS: &[&str] = &[
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
    "timeproperty",
    "timerel",
    "timeAt",
    "endTimeAt",
    "limit",
    "offset",
    "count",
    "options",
];

/// `GET /csourceRegistrations` (clause 6.8.3.2): by entity id, type, idPattern and attrs,
/// paginated.
async fn query(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, QUERY_PARAMS)?;
    let media = negotiation::response_type(&req, false)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    if ![
        "id",
        "type",
        "idPattern",
        "attrs",
        "q",
        "csf",
        "georel",
        "timerel",
    ]
    .iter()
    .any(|name| params.get(name).is_some())
    {
        return Err(Problem::bad_request(
            "a registration query needs at least one of id, type, idPattern, attrs, q, csf, georel or timerel",
        ));
    }
    let query = registration_filter(&params, &context)?;
    let system = params.system_members()?;
    let page = params.page(&state.settings.limits)?;
    let matches = state.registrations.query(&auth, &query).await?;
    let (shown, total) = page.of(&matches);
    auth.note_count(shown.len() as u64);
    let body = Value::Array(
        shown
            .iter()
            .map(|stored| render(stored, &context, system))
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

fn render(stored: &Stored, context: &Resolved, system: bool) -> Value {
    Value::Object(registration::render(
        &stored.canonical,
        &context.active,
        system.then_some(SystemMembers {
            created_at: stored.created_at,
            modified_at: stored.modified_at,
        }),
    ))
}

fn registration_filter(params: &Params, context: &Resolved) -> Result<RegistrationQuery, Problem> {
    let mut query = RegistrationQuery::default();
    if let Some(text) = params.get("q") {
        query.q = Some(civitas_ngsild::q::Query::parse(text, &context.active)?);
    }
    if let Some(text) = params.get("csf") {
        query.csf = Some(civitas_ngsild::q::Query::parse(text, &context.active)?);
    }
    for id in params.list("id") {
        query.ids.push(EntityId::parse(id)?.as_str().to_owned());
    }
    if let Some(types) = params.get("type") {
        // A type expression (clause 4.17) selects the registrations of any type it names: a
        // source registered for one type of a conjunction may hold entities that also have the
        // others, which its registration cannot tell.
        let parsed = civitas_ngsild::q::TypeQuery::parse(types, &context.active, is_valid_name)?;
        query.types = parsed.names();
    }
    if let Some((geo, property)) = super::geo_params(params)? {
        if !registration::GEO_PROPERTIES.contains(&property) {
            return Err(Problem::bad_request(format!(
                "geoproperty must be one of {:?} for registrations, not {property:?}",
                registration::GEO_PROPERTIES
            )));
        }
        query.geo = Some((geo, property.to_owned()));
    }
    match params.get("timerel") {
        Some(timerel) => {
            query.temporal = Some(registration::TemporalQuery::parse(
                timerel,
                params.get("timeAt"),
                params.get("endTimeAt"),
                params.get("timeproperty"),
            )?);
        }
        None => {
            if let Some(name) = ["timeAt", "endTimeAt", "timeproperty"]
                .into_iter()
                .find(|name| params.get(name).is_some())
            {
                return Err(Problem::bad_request(format!("{name} needs timerel")));
            }
        }
    }
    if let Some(pattern) = params.get("idPattern") {
        regex::Regex::new(pattern).map_err(|e| {
            Problem::bad_request(format!("idPattern is not a valid regular expression: {e}"))
        })?;
        query.id_pattern = Some(pattern.to_owned());
    }
    for name in params.list("attrs") {
        if !is_valid_name(name) {
            return Err(Problem::bad_request(format!(
                "{name:?} is not a valid attribute name"
            )));
        }
        query.attributes.push(context.active.expand_name(name));
    }
    Ok(query)
}

fn registration_id(req: &HttpRequest) -> Result<String, Problem> {
    super::uri_param(req, "registrationId", "registration")
}

/// `GET /csourceRegistrations/{registrationId}` (clause 6.9.3.1).
async fn retrieve(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["options"])?;
    let system = params.system_members()?;
    let media = negotiation::response_type(&req, false)?;
    let id = registration_id(&req)?;
    let (auth, context) = link_input(&state, &req, Operation::Read).await?;
    let stored = state.registrations.get(&auth, &id).await?;
    auth.note_count(1);
    Ok(negotiation::respond(
        StatusCode::OK,
        render(&stored, &context, system),
        media,
        &context.value,
        &context.link_url,
    ))
}

/// `PATCH /csourceRegistrations/{registrationId}` (clause 6.9.3.2).
async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let id = registration_id(&req)?;
    let input = json_input(&state, &req, payload, true).await?;
    let (before, after) = state
        .registrations
        .update(&input.auth, &id, &input.body, &input.context.active)
        .await?;
    registration_subscriptions::registration_changed(
        state.clone(),
        input.auth.tenant().to_owned(),
        Some(before),
        Some(after),
    );
    Ok(no_content())
}

/// `DELETE /csourceRegistrations/{registrationId}` (clause 6.9.3.3).
async fn delete(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let id = registration_id(&req)?;
    let (auth, _) = link_input(&state, &req, Operation::Write).await?;
    let deleted = state.registrations.delete(&auth, &id).await?;
    registration_subscriptions::registration_changed(
        state.clone(),
        auth.tenant().to_owned(),
        Some(deleted),
        None,
    );
    Ok(no_content())
}
