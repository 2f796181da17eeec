//! Liveness, readiness and service metadata: `GET /health`, `GET /ready`, `GET /.well-known/civitas`.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/.well-known/civitas", web::get().to(metadata));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the store answers.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.entities.ping().await {
        Ok(()) => HttpResponse::Ok()
            .json(json!({"status": "ready", "storage": state.entities.backend_name()})),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "storage": state.entities.backend_name()}))
        }
    }
}

async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "service": "connector",
        "department": state.settings.department,
        "version": env!("CARGO_PKG_VERSION"),
        "ngsiLdVersion": "1.8",
        "storage": state.entities.backend_name(),
        "url": state.public_url,
        "publicKeys": state.settings.auth.public_key.iter().collect::<Vec<_>>(),
        "auditKey": state.audit.verifier().to_vkey(),
        "auditOrigin": state.audit.origin(),
        "witnessKey": civitas_audit::checkpoint::CosignatureVerifier::of(state.audit.witness_signer()).to_vkey(),
    }))
}
