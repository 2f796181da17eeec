//! `/audit/v1/`: the department's audit log in the C2SP tlog-tiles layout — its latest signed
//! checkpoint and the hash tiles and entry bundles of the tree it signs (tokens with the `audit`
//! right only).

use actix_web::{HttpRequest, HttpResponse, web};
use civitas_audit::tiles::{Resource, TILE_WIDTH, encode_bundle};
use civitas_auth::authorizer::Operation;
use civitas_http::Problem;

use super::{Params, authorize_whole, method_not_allowed};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/audit/v1/checkpoint")
            .route(web::get().to(checkpoint))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/audit/v1/tile/{tail:.*}")
            .route(web::get().to(tile))
            .default_service(web::to(method_not_allowed)),
    );
}

/// The latest checkpoint: its size and signed note; 404 before the first one is signed.
async fn latest(state: &AppState) -> Result<(u64, String), Problem> {
    state
        .audit
        .store()
        .audit_latest_checkpoint(state.audit.name())
        .await
        .map_err(|error| Problem::internal(&error))?
        .ok_or_else(|| Problem::not_found("the audit log has no checkpoint yet"))
}

/// `GET /audit/v1/checkpoint`: the latest signed checkpoint (a C2SP signed note).
async fn checkpoint(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    let (_, note) = latest(&state).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(note))
}

/// `GET /audit/v1/tile/…`: a hash tile or an entry bundle within the latest checkpoint's tree.
async fn tile(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    let path = format!("tile/{}", req.match_info().get("tail").unwrap_or_default());
    let not_found = || Problem::not_found(format!("no audit resource at {path}"));
    let resource = Resource::parse(&path).map_err(|_| not_found())?;
    let (size, _) = latest(&state).await?;
    let store = state.audit.store();
    let log = state.audit.name();
    let bytes = match resource {
        Resource::Tile(tile) => {
            let subtrees: Vec<(u8, u64)> = tile
                .subtrees()
                .map_err(|_| not_found())?
                .map(|subtree| (subtree.level, subtree.index))
                .collect();
            // The tile's last subtree must be complete in the checkpointed tree.
            let (level, last) = subtrees.last().copied().ok_or_else(not_found)?;
            let end = u128::from(last + 1) << level;
            if end > u128::from(size) {
                return Err(not_found());
            }
            let hashes = store
                .audit_hashes(log, &subtrees)
                .await
                .map_err(|error| Problem::internal(&error))?;
            let mut bytes = Vec::with_capacity(hashes.len() * 32);
            for hash in hashes {
                let hash = hash.ok_or_else(|| {
                    Problem::internal(&civitas_audit::Error::MissingHash { level, index: last })
                })?;
                bytes.extend_from_slice(&hash);
            }
            bytes
        }
        Resource::Entries(bundle) => {
            let start = bundle.index() * u64::from(TILE_WIDTH);
            let end = start + u64::from(bundle.width());
            if end > size {
                return Err(not_found());
            }
            let entries = store
                .audit_entries(log, start, end)
                .await
                .map_err(|error| Problem::internal(&error))?;
            if entries.len() as u64 != end - start {
                return Err(not_found());
            }
            encode_bundle(&entries).map_err(|error| Problem::internal(&error))?
        }
    };
    // A tile never changes once the tree holds it (C2SP tlog-tiles).
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("cache-control", "public, max-age=31536000, immutable"))
        .body(bytes))
}
