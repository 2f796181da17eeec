//! `/admin/v1/revocations`: revoking tokens of this department (admin tokens only).

use actix_web::{HttpRequest, HttpResponse, web};
use civitas_auth::authorizer::Operation;
use civitas_http::Problem;
use civitas_http::negotiation;
use serde::Deserialize;
use serde_json::json;

use super::{Params, authorize, method_not_allowed, read_body};
use crate::AppState;
use crate::revocations::Target;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/v1/revocations")
            .route(web::post().to(revoke))
            .route(web::get().to(list))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `{"token": "…"}` or `{"revocationIds": ["…"]}`, with an optional `reason`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RevokeRequest {
    token: Option<String>,
    revocation_ids: Option<Vec<String>>,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/v1/revocations`: 200 with the revoked ids.
async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    negotiation::response_type(&req, false)?;
    let auth = authorize(&state, &req, Operation::Admin).await?;
    negotiation::body_type(&req, false)?;
    let body = read_body(&state, payload).await?;
    let request: RevokeRequest = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("not a revocation request: {e}")))?;
    let target = match (request.token, request.revocation_ids) {
        (Some(token), None) => Target::Token(token),
        (None, Some(ids)) => Target::Ids(ids),
        _ => {
            return Err(Problem::bad_request("give either token or revocationIds"));
        }
    };
    let revoked = state
        .revocations
        .revoke(&auth, target, &request.reason)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "revoked": revoked })))
}

/// `GET /admin/v1/revocations`: every revoked id.
async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    negotiation::response_type(&req, false)?;
    let auth = authorize(&state, &req, Operation::Admin).await?;
    let ids = state.revocations.list(&auth).await?;
    Ok(HttpResponse::Ok().json(json!({ "revocationIds": ids })))
}
