//! `POST /audit/v1/witness/add-checkpoint` (C2SP tlog-witness): this service witnesses the audit
//! logs it watches. It cosigns a checkpoint only if the log's key signed it and it extends the
//! last checkpoint of that log it cosigned (`civitas_audit::witness::check`), then remembers it
//! (in the store, so restarts keep it). No token: the log's signature is the credential, and a
//! witness answers only for the logs it was configured to watch.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_audit::checkpoint::{cosign, open_checkpoint};
use civitas_audit::witness::{AddCheckpoint, Refusal, SIZE_MEDIA_TYPE, check};
use civitas_http::Problem;

use super::{Params, method_not_allowed};
use crate::AppState;

/// The largest request body: a checkpoint note and a proof are a few kilobytes.
const MAX_BODY: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/audit/v1/witness/add-checkpoint")
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(web::post().to(add_checkpoint))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn add_checkpoint(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok(refused(&Refusal::Malformed(
            "the body is not UTF-8".to_owned(),
        )));
    };
    let request = match AddCheckpoint::parse(text) {
        Ok(request) => request,
        Err(refusal) => return Ok(refused(&refusal)),
    };
    let origin = match request.origin() {
        Ok(origin) => origin.to_owned(),
        Err(refusal) => return Ok(refused(&refusal)),
    };
    let Some(log) = state.audit.watched(&origin) else {
        return Ok(refused(&Refusal::UnknownLog(origin)));
    };
    let store = state.audit.store();
    let _one_at_a_time = state.audit.witnessing().lock().await;
    let remembered = match store
        .audit_witnessed(&origin)
        .await
        .map_err(|error| Problem::internal(&error))?
    {
        None => None,
        Some((_, note)) => {
            let checkpoint =
                open_checkpoint(&note, &log, &origin).map_err(|error| Problem::internal(&error))?;
            Some((checkpoint.size(), *checkpoint.root()))
        }
    };
    let checkpoint = match check(&request, &log, remembered) {
        Ok(checkpoint) => checkpoint,
        Err(refusal) => {
            tracing::warn!(%origin, %refusal, "a checkpoint was not cosigned");
            return Ok(refused(&refusal));
        }
    };
    if remembered.is_none_or(|(size, _)| checkpoint.size() > size) {
        store
            .audit_put_witnessed(&origin, checkpoint.size(), &request.note)
            .await
            .map_err(|error| Problem::internal(&error))?;
    }
    let time = u64::try_from(state.clock.now().timestamp()).unwrap_or_default();
    let cosigned = cosign(&request.note, state.audit.witness_signer(), time)
        .map_err(|error| Problem::internal(&error))?;
    let line = cosigned
        .strip_prefix(request.note.as_str())
        .unwrap_or_default()
        .to_owned();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(line))
}

/// A refusal as the protocol answers it: the status, and for a stale old size the size known.
fn refused(refusal: &Refusal) -> HttpResponse {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match refusal {
        Refusal::Conflict { known } => HttpResponse::build(status)
            .content_type(SIZE_MEDIA_TYPE)
            .body(format!("{known}\n")),
        other => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(format!("{other}\n")),
    }
}
