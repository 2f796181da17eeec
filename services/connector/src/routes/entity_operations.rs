//! `/entityOperations/{create,upsert,update,delete,merge}` (ETSI GS CIM 009 clause 6.14 to 6.17,
//! 6.31): batch operations, decided per entity, reported as a `BatchOperationResult`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use civitas_http::Problem;
use civitas_http::negotiation::{self, BodyType, ContextSource};
use serde_json::{Value, json};

use super::{Params, WriteInput, method_not_allowed, provision, write_input};
use crate::AppState;
use crate::entities::{BatchError, BatchItem, BatchOperation, BatchOutcome, UpsertMode};

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, handler) in [
        ("/entityOperations/create", Kind::Create),
        ("/entityOperations/upsert", Kind::Upsert),
        ("/entityOperations/update", Kind::Update),
        ("/entityOperations/delete", Kind::Delete),
        ("/entityOperations/merge", Kind::Merge),
    ] {
        cfg.service(
            web::resource(path)
                .route(
                    web::post().to(move |state, req, payload| batch(state, req, payload, handler)),
                )
                .default_service(web::to(method_not_allowed)),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Upsert,
    Update,
    Delete,
    Merge,
}

async fn batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    kind: Kind,
) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["options", "local"])?;
    let operation = match kind {
        Kind::Create => BatchOperation::Create,
        Kind::Upsert => match params.options(&["update", "replace"])?.as_slice() {
            [] | ["replace"] => BatchOperation::Upsert(UpsertMode::Replace),
            ["update"] => BatchOperation::Upsert(UpsertMode::Update),
            _ => return Err(Problem::bad_request("options must be update or replace")),
        },
        Kind::Update => BatchOperation::Update {
            overwrite: !params.options(&["noOverwrite"])?.contains(&"noOverwrite"),
        },
        Kind::Delete => BatchOperation::Delete,
        Kind::Merge => BatchOperation::Merge,
    };
    let WriteInput {
        auth,
        body,
        body_type,
        context,
    } = write_input(&state, &req, &params, payload, false).await?;
    let Value::Array(entries) = body else {
        return Err(Problem::bad_request("a batch operation takes a JSON array"));
    };
    if entries.is_empty() {
        return Err(Problem::bad_request("the batch is empty"));
    }
    let max = state.settings.limits.max_batch_size;
    if entries.len() > max {
        return Err(Problem::bad_request(format!(
            "the batch has {} entries; at most {max} are allowed",
            entries.len()
        )));
    }
    let mut items = Vec::with_capacity(entries.len());
    let mut early_errors = Vec::new();
    for entry in entries {
        let item_context = if kind == Kind::Delete {
            Arc::clone(&context.active)
        } else if body_type == BodyType::JsonLd {
            let resolved = match negotiation::inline_context(&entry) {
                Ok(inline) => state.contexts.resolve(&ContextSource::Inline(inline)).await,
                Err(problem) => Err(problem),
            };
            match resolved {
                Ok(resolved) => resolved.active,
                Err(problem) => {
                    early_errors.push(BatchError {
                        entity_id: entity_id_of(&entry),
                        problem,
                    });
                    continue;
                }
            }
        } else if entry.get("@context").is_some() {
            let problem = Problem::bad_request(
                "an entity sent as application/json must not carry @context; use a Link header or application/ld+json",
            );
            early_errors.push(BatchError {
                entity_id: entity_id_of(&entry),
                problem,
            });
            continue;
        } else {
            Arc::clone(&context.active)
        };
        items.push(BatchItem {
            payload: entry,
            context: item_context,
        });
    }
    let apply = async |auth, items| state.entities.batch(&auth, operation, items).await;
    let mut outcome = match auth {
        Some(auth) => apply(auth, items).await?,
        None => {
            let name = match kind {
                Kind::Create => "createBatch",
                Kind::Upsert => "upsertBatch",
                Kind::Update => "updateBatch",
                Kind::Delete => "deleteBatch",
                Kind::Merge => "mergeBatch",
            };
            provision::batch(&state, &req, &context, name, items, apply).await?
        }
    };
    outcome.errors.splice(0..0, early_errors);
    Ok(respond(kind, &outcome))
}

fn entity_id_of(entry: &Value) -> Option<String> {
    entry.get("id").and_then(Value::as_str).map(str::to_owned)
}

/// The response of a batch (clauses 6.14.3.1 to 6.17.3.1): all succeeded → 201 with the ids
/// (create, and upsert when something was created) or 204; otherwise 207 `BatchOperationResult`.
fn respond(kind: Kind, outcome: &BatchOutcome) -> HttpResponse {
    if outcome.errors.is_empty() && outcome.remote_errors.is_empty() {
        return match kind {
            Kind::Create => json_response(StatusCode::CREATED, json!(outcome.success)),
            Kind::Upsert if !outcome.created.is_empty() => {
                json_response(StatusCode::CREATED, json!(outcome.created))
            }
            _ => HttpResponse::NoContent().finish(),
        };
    }
    let errors: Vec<Value> = outcome
        .errors
        .iter()
        .map(|e| json!({"entityId": e.entity_id.clone().map_or(Value::Null, Value::String), "error": e.problem.body()}))
        .chain(outcome.remote_errors.iter().cloned())
        .collect();
    json_response(
        StatusCode::MULTI_STATUS,
        json!({"success": outcome.success, "errors": errors}),
    )
}

fn json_response(status: StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(negotiation::JSON)
        .body(body.to_string())
}
