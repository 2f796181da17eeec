//! `POST /audit/v1/witness/add-checkpoint` (C2SP tlog-witness): this service witnesses the audit
//! logs it watches (`[audit] watch`). It cosigns a checkpoint only if the log's key signed it and
//! it extends the last checkpoint of that log it cosigned (`civitas_audit::witness::check`), and
//! remembers it in the store first, so restarts keep it. Decisions are taken one at a time, and
//! the store replaces the remembered checkpoint only if it is still the one the decision read,
//! so two requests cannot both extend the same state.
//!
//! No token: the log's signature is the credential, and a witness answers only for the logs it
//! watches. Answers take the protocol's plain-text form (the cosignature lines; the known size as
//! `text/x.tlog.size` in a 409; a sentence otherwise), not ProblemDetails; errors outside the
//! protocol (an unknown query parameter, another method, a failing store) are ProblemDetails.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_audit::checkpoint::cosign;
use civitas_audit::witness::{
    AddCheckpoint, Refusal, SIZE_MEDIA_TYPE, check, unverified_checkpoint,
};
use civitas_http::{ErrorCode, Problem};
use futures_util::StreamExt;

use super::{Params, method_not_allowed};
use crate::AppState;

/// The largest request body: a checkpoint note and a proof are a few kilobytes.
const MAX_BODY: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/audit/v1/witness/add-checkpoint")
            .route(web::post().to(add_checkpoint))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn add_checkpoint(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    let body = read_small_body(payload).await?;
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok(refused(&Refusal::Malformed(
            "the body is not UTF-8".to_owned(),
        )));
    };
    let request = match AddCheckpoint::parse(text).and_then(|request| {
        let origin = request.checkpoint()?.origin().to_owned();
        Ok((request, origin))
    }) {
        Ok(parsed) => parsed,
        Err(refusal) => return Ok(refused(&refusal)),
    };
    let (request, origin) = request;
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
        Some((size, note)) => {
            // The note was verified before it was stored; its tree is what matters now, also
            // if the log's key has been replaced since.
            let checkpoint =
                unverified_checkpoint(&note).map_err(|error| Problem::internal(&error))?;
            Some((size, *checkpoint.root()))
        }
    };
    let checkpoint = match check(&request, log, remembered) {
        Ok(checkpoint) => checkpoint,
        Err(refusal) => {
            let evidence = matches!(refusal, Refusal::Forked { .. } | Refusal::BadProof { .. });
            if evidence {
                // A log that signed two histories: the note is the proof, kept in the log.
                tracing::warn!(%origin, %refusal, note = %request.note, "a forked checkpoint was refused");
            } else {
                tracing::info!(%origin, %refusal, "a checkpoint was not cosigned");
            }
            return Ok(refused(&refusal));
        }
    };
    let known = remembered.map(|(size, _)| size);
    if known.is_none_or(|size| checkpoint.size() > size) {
        let replaced = store
            .audit_put_witnessed(&origin, known, checkpoint.size(), &request.note)
            .await
            .map_err(|error| Problem::internal(&error))?;
        if !replaced {
            // Another process witnessing from the same store got there first.
            let now = store
                .audit_witnessed(&origin)
                .await
                .map_err(|error| Problem::internal(&error))?
                .map_or(0, |(size, _)| size);
            return Ok(refused(&Refusal::Conflict {
                old_size: request.old_size,
                known: now,
            }));
        }
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

/// Reads the body, refusing more than [`MAX_BODY`] bytes with a 413: this resource needs no
/// token, so it reads no more than a request of the protocol can need.
async fn read_small_body(mut payload: web::Payload) -> Result<web::Bytes, Problem> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| Problem::invalid_request(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Problem::new(
                ErrorCode::PayloadTooLarge,
                format!("an add-checkpoint request is at most {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A refusal as the protocol answers it: the status, and for a stale old size the size known.
fn refused(refusal: &Refusal) -> HttpResponse {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match refusal {
        Refusal::Conflict { known, .. } => HttpResponse::build(status)
            .content_type(SIZE_MEDIA_TYPE)
            .body(format!("{known}\n")),
        other => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(format!("{other}\n")),
    }
}
