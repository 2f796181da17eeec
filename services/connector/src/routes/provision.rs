//! A broker's writes (ETSI GS CIM 009 clause 4.3.6.3, distributed provision).
//!
//! A write about an entity goes to every registered source whose registration matches the entity
//! (and, for attribute writes, one of the attributes) and declares the operation. The
//! registration's mode decides what the broker's own store still receives:
//!
//! - *inclusive*: the source gets its part, and the broker keeps the whole write;
//! - *exclusive* and *redirect*: the source gets its part, which the broker's store does not
//!   receive; a registration of every attribute of the entity takes the whole write away;
//! - *auxiliary*: never written to.
//!
//! A write that leaves nothing for the broker's store (no attribute left, or none the store is to
//! keep) is not applied there at all, and the broker decides nothing: it records the request as
//! forwarded. Whatever part it does apply is decided by its own authorizer, as any local write.
//! The broker never decides for a source: each source receives the caller's token for its
//! department, bound to this request, and decides itself.
//!
//! When every part succeeds the answer is the operation's usual one. When any part fails, it is a
//! 207 whose body lists the parts that failed (`errors`: `entityId`, `registrationId` for a
//! source, and the ProblemDetails with its `status`) and whether any part succeeded (`success`).
//! What the broker's store lacks (the entity, or some attributes) but a source wrote is not a
//! failure: it was written where it lives.
//!
//! Batches are divided entity by entity and sent as one batch per source, their results merged
//! per entity. A purge goes to every source registered for entities it may concern, and the
//! broker's store purges what it holds.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use civitas_auth::authorizer::{Authorized, Journal, Operation};
use civitas_http::{ErrorCode, Problem};
use civitas_ngsild::ErrorType;
use civitas_ngsild::expand::{self, Payload};
use civitas_ngsild::registration::{Claim, Mode, Selector};
use serde_json::{Map, Value, json};

use super::{Params, WriteInput, authorize, note_federation, note_forwarded};
use crate::AppState;
use crate::contexts::Resolved;
use crate::entities::{BatchError, BatchItem, BatchOutcome};
use crate::federation::{self, Answer, Federation, Source, SourceWarning};

/// Whether a write to this service is distributed: it is a broker, and the caller did not ask
/// for `local=true`.
pub(crate) fn distributes(state: &AppState, params: &Params) -> Result<bool, Problem> {
    Ok(state.federation.is_some() && !params.flag("local")?)
}

/// Members of an entity payload that are not attributes.
const NOT_ATTRIBUTES: &[&str] = &[
    "id",
    "@id",
    "type",
    "@type",
    "@context",
    "scope",
    "createdAt",
    "modifiedAt",
    "deletedAt",
];

/// One write about one entity.
pub(crate) struct Write<'a> {
    /// The operation's name in registrations (clause 4.3.6.3, table 4.3.6.3-1).
    pub operation: &'static str,
    pub entity_id: &'a str,
    /// The attribute of the path, for attribute writes (as given).
    pub attribute: Option<&'a str>,
    /// How the body is checked before anything is forwarded (`None`: no entity payload).
    pub payload: Option<Payload>,
    /// The answer to a write every part of which succeeded and none of which the broker's store
    /// applied (given the entity id).
    pub done: fn(&str) -> HttpResponse,
}

/// Where one part of a write goes.
#[derive(Debug)]
struct Target {
    source: Source,
    registration: String,
    /// The attributes (expanded names) it receives; `None`: the whole write.
    attributes: Option<BTreeSet<String>>,
}

/// What the broker's store does not receive.
#[derive(Debug, PartialEq, Eq)]
enum Withheld {
    All,
    Names(BTreeSet<String>),
}

impl Withheld {
    fn contains(&self, name: &str) -> bool {
        match self {
            Withheld::All => true,
            Withheld::Names(names) => names.contains(name),
        }
    }
}

/// A write's split: the sources' parts, and what the broker's store does not receive.
#[derive(Debug)]
struct Plan {
    targets: Vec<Target>,
    withheld: Withheld,
    /// Some target keeps the broker's copy too (inclusive).
    inclusive: bool,
}

/// Splits a write about entity `id` (of `types`) that names `attributes` (expanded; empty for a
/// write about the whole entity) among the `registrations` that match it.
fn plan(
    federation: &Federation,
    registrations: &[civitas_ngsild::registration::Registration],
    id: &str,
    types: &[String],
    attributes: &[String],
) -> Plan {
    let mut plan = Plan {
        targets: Vec::new(),
        withheld: Withheld::Names(BTreeSet::new()),
        inclusive: false,
    };
    for registration in registrations {
        if registration.mode == Mode::Auxiliary {
            continue;
        }
        let Some(claim) = registration.claims(id, types) else {
            continue;
        };
        let part: Option<BTreeSet<String>> = match &claim {
            Claim::All => None,
            Claim::Names(names) if attributes.is_empty() => Some(names.clone()),
            Claim::Names(_) => {
                let part: BTreeSet<String> = attributes
                    .iter()
                    .filter(|name| claim.contains(name))
                    .cloned()
                    .collect();
                if part.is_empty() {
                    continue;
                }
                Some(part)
            }
        };
        let Some(source) = federation
            .sources(std::slice::from_ref(registration))
            .into_iter()
            .next()
        else {
            // A registration of the broker itself: its store is the local part.
            continue;
        };
        match registration.mode {
            Mode::Inclusive => plan.inclusive = true,
            _ => match (&mut plan.withheld, &part) {
                (withheld, None) => *withheld = Withheld::All,
                (Withheld::All, Some(_)) => {}
                (Withheld::Names(withheld), Some(part)) => withheld.extend(part.iter().cloned()),
            },
        }
        match plan
            .targets
            .iter_mut()
            .find(|t| t.source.endpoint == source.endpoint && t.source.tenant == source.tenant)
        {
            Some(target) => {
                target.attributes = match (target.attributes.take(), part) {
                    (Some(mut mine), Some(part)) => {
                        mine.extend(part);
                        Some(mine)
                    }
                    _ => None,
                }
            }
            None => plan.targets.push(Target {
                source,
                registration: registration.id.clone(),
                attributes: part,
            }),
        }
    }
    plan
}

/// `body` with only the attributes `keep` accepts (by expanded name), and every other member.
fn with_attributes(
    body: &Map<String, Value>,
    context: &civitas_ngsild::context::ActiveContext,
    keep: impl Fn(&str) -> bool,
) -> Map<String, Value> {
    body.iter()
        .filter(|(key, _)| {
            NOT_ATTRIBUTES.contains(&key.as_str()) || keep(&context.expand_name(key))
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn has_attributes(body: &Map<String, Value>) -> bool {
    body.keys()
        .any(|key| !NOT_ATTRIBUTES.contains(&key.as_str()))
}

/// The expanded types a write's body names (none for a fragment without `type`).
fn named_types(body: &Value, context: &civitas_ngsild::context::ActiveContext) -> Vec<String> {
    match body.get("type").or_else(|| body.get("@type")) {
        Some(Value::String(name)) => vec![context.expand_name(name)],
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| context.expand_name(name))
            .collect(),
        _ => Vec::new(),
    }
}

/// The expanded types a write is about: those of its body, else those of the entity in the
/// broker's store (empty when it holds none: registrations of any type then match by id).
async fn types_of(
    state: &AppState,
    tenant: &str,
    id: &str,
    body: &Value,
    context: &civitas_ngsild::context::ActiveContext,
) -> Result<Vec<String>, Problem> {
    let named = named_types(body, context);
    if !named.is_empty() {
        return Ok(named);
    }
    Ok(state
        .entities
        .store
        .get(tenant, id)
        .await
        .map_err(crate::entities::store_problem)?
        .map(|record| record.types)
        .unwrap_or_default())
}

/// What a forwarded request is sent with, taken from the caller's request: the path under
/// `/ngsi-ld/v1/` and query as written (the entity collection without its optional slash), the
/// method and the body's media type.
struct Outgoing {
    path: String,
    method: reqwest::Method,
    media_type: String,
}

impl Outgoing {
    fn of(req: &HttpRequest) -> Result<Outgoing, Problem> {
        let path = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or_else(|| req.path());
        let path = path.strip_prefix("/ngsi-ld/v1/").unwrap_or(path);
        let path = match path.strip_prefix("entities/") {
            Some(rest) if rest.is_empty() || rest.starts_with('?') => format!("entities{rest}"),
            _ => path.to_owned(),
        };
        Ok(Outgoing {
            path,
            method: reqwest::Method::from_bytes(req.method().as_str().as_bytes())
                .map_err(|_| Problem::bad_request("unsupported method"))?,
            media_type: req
                .headers()
                .get(actix_web::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(civitas_http::negotiation::JSON)
                .to_owned(),
        })
    }
}

/// What the broker forwards this request with (see [`federation::Forward`]): the caller's
/// tokens, tenant, @context and Link, and the request's id.
pub(crate) fn forward<'a>(
    state: &AppState,
    req: &'a HttpRequest,
    tenant: &'a str,
    context: &'a Resolved,
) -> Result<federation::Forward<'a>, Problem> {
    Ok(federation::Forward {
        req,
        request_id: super::current_request_id(req),
        tokens: req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(civitas_auth::authorizer::bearer_tokens)
            .unwrap_or_default(),
        tenant,
        context: &context.active,
        link: civitas_http::negotiation::link_context(req)?,
        now: state.clock.now(),
        relayed: Default::default(),
    })
}

fn tenant_of(req: &HttpRequest) -> Result<String, Problem> {
    Ok(civitas_http::negotiation::tenant(req)?
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default())
}

/// Every unexpired registration of the tenant that declares `operation`; [`plan`] matches them
/// to each entity.
async fn registrations_for(
    state: &AppState,
    tenant: &str,
    operation: &str,
) -> Result<Vec<civitas_ngsild::registration::Registration>, Problem> {
    state
        .registrations
        .matching(tenant, &Selector::default(), operation)
        .await
}

/// The expanded attribute names an entity payload carries.
fn attribute_names(body: &Value, context: &civitas_ngsild::context::ActiveContext) -> Vec<String> {
    body.as_object()
        .map(|members| {
            members
                .keys()
                .filter(|key| !NOT_ATTRIBUTES.contains(&key.as_str()))
                .map(|key| context.expand_name(key))
                .collect()
        })
        .unwrap_or_default()
}

/// One entity's write divided by `plan`: what the broker's store applies (`None`: nothing) and
/// what each of the plan's targets receives (`None`: a write without a body).
fn divide(
    plan: &Plan,
    body: &Value,
    attribute: Option<&str>,
    context: &civitas_ngsild::context::ActiveContext,
) -> (Option<Value>, Vec<Option<Value>>) {
    let members = body.as_object();
    let local = match (&plan.withheld, members, attribute) {
        (Withheld::All, _, _) => None,
        (withheld, _, Some(name)) => (!withheld.contains(name)).then(|| body.clone()),
        (withheld, Some(members), None) => {
            let kept = with_attributes(members, context, |name| !withheld.contains(name));
            (plan.inclusive || has_attributes(&kept) || !has_attributes(members))
                .then_some(Value::Object(kept))
        }
        (_, None, None) => Some(body.clone()),
    };
    let parts = plan
        .targets
        .iter()
        .map(|target| match (members, &target.attributes, attribute) {
            (Some(members), Some(names), None) => {
                Some(Value::Object(with_attributes(members, context, |name| {
                    names.contains(name)
                })))
            }
            _ if body.is_null() => None,
            _ => Some(body.clone()),
        })
        .collect();
    (local, parts)
}

/// The broker's own part of a write: decided by its authorizer and applied by `local`; or, when
/// there is none, the request is recorded as forwarded, with what `forwarded` noted.
async fn local_part<T, F>(
    state: &AppState,
    req: &HttpRequest,
    part: Option<T>,
    forwarded: Arc<Journal>,
    local: F,
) -> Option<Result<HttpResponse, Problem>>
where
    F: AsyncFnOnce(Authorized, T) -> Result<HttpResponse, Problem>,
{
    match part {
        None => {
            note_forwarded(req, Operation::Write, forwarded);
            None
        }
        Some(part) => Some(match authorize(state, req, Operation::Write).await {
            Ok(auth) => local(auth, part).await,
            Err(problem) => Err(problem),
        }),
    }
}

/// How one source's answer to a forwarded write went.
enum Delivery {
    /// 2xx (not 207): every entity of the part was written.
    Done { created: Vec<String> },
    /// 207: the source's own `BatchOperationResult` (or `UpdateResult`), when it sent one.
    Partial(Option<Value>),
    /// Anything else, as a ProblemDetails with its status.
    Failed(Value),
}

fn delivery(
    answer: Result<Answer, SourceWarning>,
    warnings: &mut Vec<SourceWarning>,
    source: &str,
) -> Delivery {
    match answer {
        Ok(Answer { status, body }) if (200..300).contains(&status) && status != 207 => {
            let created = match (status, body) {
                (201, Some(Value::Array(ids))) => ids
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            Delivery::Done { created }
        }
        Ok(answer) => {
            warnings.push(SourceWarning {
                source: source.to_owned(),
                message: format!("answered {}", answer.status),
                failed: true,
            });
            if answer.status == 207 {
                Delivery::Partial(answer.body)
            } else {
                Delivery::Failed(source_problem(&answer))
            }
        }
        Err(warning) => {
            let code = if warning.failed {
                ErrorCode::SourceFailed
            } else {
                ErrorCode::Unauthenticated
            };
            let problem = problem_with_status(&Problem::new(
                code,
                format!("{}: {}", warning.source, warning.message),
            ));
            warnings.push(warning);
            Delivery::Failed(problem)
        }
    }
}

/// Applies a write: on a connector (or with `local=true`) to the store alone, by `local`; on a
/// broker, split among the sources that registrations name and the broker's store (see the
/// module's documentation). `local` receives the decision and the part of the body the store is
/// to apply.
pub(crate) async fn write<F>(
    state: &AppState,
    req: &HttpRequest,
    input: WriteInput,
    write: Write<'_>,
    local: F,
) -> Result<HttpResponse, Problem>
where
    F: AsyncFnOnce(Authorized, Value, &Resolved) -> Result<HttpResponse, Problem>,
{
    let WriteInput {
        auth,
        body,
        context,
        ..
    } = input;
    if let Some(auth) = auth {
        return local(auth, body, &context).await;
    }
    let Some(federation) = state.federation.as_ref() else {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth, body, &context).await;
    };
    federation.check_loop(req)?;
    if let Some(kind) = write.payload {
        // Nothing invalid is forwarded: the body must be what the operation takes.
        expand::entity(&body, &context.active, kind)?;
    }
    let tenant = tenant_of(req)?;
    let id = civitas_ngsild::names::EntityId::parse(write.entity_id)?;
    let id = id.as_str();
    let attribute = write
        .attribute
        .map(|name| expand::attribute_name(name, &context.active))
        .transpose()?;
    let attributes = match &attribute {
        Some(name) => vec![name.clone()],
        None => attribute_names(&body, &context.active),
    };
    let registrations = registrations_for(state, &tenant, write.operation).await?;
    // Without a registration for the operation there is nothing to divide (and no entity type
    // to look up in the store).
    let plan = if registrations.is_empty() {
        None
    } else {
        let types = types_of(state, &tenant, id, &body, &context.active).await?;
        Some((
            plan(federation, &registrations, id, &types, &attributes),
            types,
        ))
    };
    let Some((plan, types)) = plan.filter(|(plan, _)| !plan.targets.is_empty()) else {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth, body, &context).await;
    };
    let (local_body, parts) = divide(&plan, &body, attribute.as_deref(), &context.active);

    let outgoing = Outgoing::of(req)?;
    let forward = forward(state, req, &tenant, &context)?;
    let sends = plan.targets.iter().zip(parts).map(|(target, part)| {
        let (outgoing, forward) = (&outgoing, &forward);
        async move {
            let part = part.map(|part| (part.to_string(), outgoing.media_type.as_str()));
            federation
                .write(
                    forward,
                    &target.source,
                    outgoing.method.clone(),
                    &outgoing.path,
                    part,
                )
                .await
        }
    });
    let forwarded = Arc::new(Journal::default());
    forwarded.note_entity(&types, id, &attributes);
    let mine = local_part(state, req, local_body, forwarded, async |auth, part| {
        local(auth, part, &context).await
    });
    let (local_outcome, answers) =
        futures_util::future::join(mine, futures_util::future::join_all(sends)).await;

    let mut errors = Vec::new();
    let mut succeeded = false;
    let mut warnings = Vec::new();
    for (target, answer) in plan.targets.iter().zip(answers) {
        let error = match delivery(answer, &mut warnings, &target.source.endpoint) {
            Delivery::Done { .. } => {
                succeeded = true;
                continue;
            }
            Delivery::Partial(_) => {
                succeeded = true;
                problem_with_status(&Problem::bad_request(format!(
                    "{} did not write every attribute",
                    target.source.endpoint
                )))
            }
            Delivery::Failed(problem) => problem,
        };
        errors.push(json!({
            "entityId": id,
            "registrationId": target.registration,
            "error": error,
        }));
    }
    // What the broker's store lacks (the entity, or some attributes) but a source took was
    // written where it lives: that is not a failure.
    let written_elsewhere = succeeded;
    let mut local_response = None;
    match local_outcome {
        None => {}
        Some(Ok(response)) if response.status() == StatusCode::MULTI_STATUS => {
            succeeded = true;
            if !written_elsewhere {
                errors.push(json!({
                    "entityId": id,
                    "error": problem_with_status(&Problem::bad_request(
                        "some attributes were not written in the broker's store",
                    )),
                }));
            }
        }
        Some(Ok(response)) => {
            succeeded = true;
            local_response = Some(response);
        }
        Some(Err(problem))
            if written_elsewhere && problem.code == ErrorType::ResourceNotFound.into() => {}
        Some(Err(problem)) => errors.insert(
            0,
            json!({
                "entityId": id,
                "error": problem_with_status(&problem),
            }),
        ),
    }
    let endpoints: Vec<String> = plan
        .targets
        .iter()
        .map(|t| t.source.endpoint.clone())
        .collect();
    note_federation(req, federation::summary(&forward, &endpoints, &warnings));
    if errors.is_empty() {
        return Ok(local_response.unwrap_or_else(|| (write.done)(id)));
    }
    let body = json!({
        "success": if succeeded { vec![id] } else { Vec::new() },
        "errors": errors,
    });
    Ok(HttpResponse::build(StatusCode::MULTI_STATUS)
        .content_type(civitas_http::negotiation::JSON)
        .body(body.to_string()))
}

/// A batch's entries, each divided as [`write`] divides one entity's write, and grouped per
/// source: the broker's store applies its part of the batch by `local`; every source gets one
/// batch of its parts. The outcomes are merged per entity: an entity succeeds when every part of
/// it did.
pub(crate) async fn batch<F>(
    state: &AppState,
    req: &HttpRequest,
    context: &Resolved,
    operation: &'static str,
    items: Vec<BatchItem>,
    local: F,
) -> Result<BatchOutcome, Problem>
where
    F: AsyncFnOnce(Authorized, Vec<BatchItem>) -> Result<BatchOutcome, Problem>,
{
    let Some(federation) = state.federation.as_ref() else {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth, items).await;
    };
    federation.check_loop(req)?;
    let tenant = tenant_of(req)?;
    let registrations = registrations_for(state, &tenant, operation).await?;
    if registrations.is_empty() {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth, items).await;
    }
    // What the batch concerns, for the record when the broker's store has no part of it.
    let forwarded = Arc::new(Journal::default());
    // Per source (endpoint and tenant): the registration, and the parts with their entity ids.
    let mut groups: Vec<(Target, Vec<(String, Value)>)> = Vec::new();
    let mut mine = Vec::new();
    let id_of = |item: &BatchItem| match &item.payload {
        Value::String(id) => Some(id.clone()),
        payload => payload.get("id").and_then(Value::as_str).map(str::to_owned),
    };
    // The types of the entities whose entries do not name them, from the broker's store at once.
    let unnamed: Vec<String> = items
        .iter()
        .filter(|item| named_types(&item.payload, &item.context).is_empty())
        .filter_map(id_of)
        .collect();
    let held: std::collections::HashMap<String, Vec<String>> = if unnamed.is_empty() {
        Default::default()
    } else {
        state
            .entities
            .store
            .get_many(&tenant, &unnamed)
            .await
            .map_err(crate::entities::store_problem)?
            .into_iter()
            .map(|record| (record.id, record.types))
            .collect()
    };
    for item in items {
        let Some(id) = id_of(&item).filter(|id| civitas_ngsild::names::EntityId::parse(id).is_ok())
        else {
            // The store reports what is wrong with it.
            mine.push(item);
            continue;
        };
        let mut types = named_types(&item.payload, &item.context);
        if types.is_empty() {
            types = held.get(&id).cloned().unwrap_or_default();
        }
        let attributes = attribute_names(&item.payload, &item.context);
        forwarded.note_entity(&types, &id, &attributes);
        let plan = plan(federation, &registrations, &id, &types, &attributes);
        let (local_part, parts) = divide(&plan, &item.payload, None, &item.context);
        for (target, part) in plan.targets.into_iter().zip(parts) {
            let part = part.unwrap_or_else(|| Value::String(id.clone()));
            match groups.iter_mut().find(|(t, _)| {
                t.source.endpoint == target.source.endpoint
                    && t.source.tenant == target.source.tenant
            }) {
                Some((_, parts)) => parts.push((id.clone(), part)),
                None => groups.push((target, vec![(id.clone(), part)])),
            }
        }
        if let Some(payload) = local_part {
            mine.push(BatchItem {
                payload,
                context: item.context,
            });
        }
    }
    if groups.is_empty() {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth, mine).await;
    }

    let outgoing = Outgoing::of(req)?;
    let forward = forward(state, req, &tenant, context)?;
    let sends = groups.iter().map(|(target, parts)| {
        let body = Value::Array(parts.iter().map(|(_, part)| part.clone()).collect());
        let (outgoing, forward) = (&outgoing, &forward);
        async move {
            federation
                .write(
                    forward,
                    &target.source,
                    outgoing.method.clone(),
                    &outgoing.path,
                    Some((body.to_string(), outgoing.media_type.as_str())),
                )
                .await
        }
    });
    let mine_ids: Vec<Option<String>> = mine
        .iter()
        .map(|item| match &item.payload {
            Value::String(id) => Some(id.clone()),
            payload => payload.get("id").and_then(Value::as_str).map(str::to_owned),
        })
        .collect();
    let local_batch = async {
        if mine.is_empty() {
            note_forwarded(req, Operation::Write, forwarded);
            return None;
        }
        Some(match authorize(state, req, Operation::Write).await {
            Ok(auth) => local(auth, mine).await,
            Err(problem) => Err(problem),
        })
    };
    let (local_outcome, answers) =
        futures_util::future::join(local_batch, futures_util::future::join_all(sends)).await;

    let mut outcome = BatchOutcome::default();
    match local_outcome {
        None => {}
        Some(Ok(local)) => outcome = local,
        Some(Err(problem)) if problem.code.status().is_server_error() => return Err(problem),
        Some(Err(problem)) => {
            // Refused as a whole: every entity the store was to write fails with it.
            for entity_id in mine_ids {
                outcome.errors.push(BatchError {
                    entity_id,
                    problem: problem.clone(),
                });
            }
        }
    }
    let mut remote_errors: Vec<Value> = Vec::new();
    let mut warnings = Vec::new();
    for ((target, parts), answer) in groups.iter().zip(answers) {
        let ids = parts.iter().map(|(id, _)| id.clone());
        match delivery(answer, &mut warnings, &target.source.endpoint) {
            Delivery::Done { created } => {
                for id in ids {
                    if !outcome.success.contains(&id) {
                        outcome.success.push(id);
                    }
                }
                outcome.created.extend(created);
            }
            Delivery::Partial(result) => {
                let failed: Vec<(String, Value)> = result
                    .as_ref()
                    .and_then(|r| r.get("errors"))
                    .and_then(Value::as_array)
                    .map(|errors| {
                        errors
                            .iter()
                            .filter_map(|e| {
                                let id = e.get("entityId")?.as_str()?.to_owned();
                                Some((id, e.get("error").cloned().unwrap_or(Value::Null)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for id in ids {
                    match failed.iter().find(|(failed, _)| *failed == id) {
                        Some((_, error)) => remote_errors.push(json!({
                            "entityId": id,
                            "registrationId": target.registration,
                            "error": error,
                        })),
                        None if !outcome.success.contains(&id) => outcome.success.push(id),
                        None => {}
                    }
                }
            }
            Delivery::Failed(problem) => {
                for id in ids {
                    remote_errors.push(json!({
                        "entityId": id,
                        "registrationId": target.registration,
                        "error": problem,
                    }));
                }
            }
        }
    }
    let failed: BTreeSet<&str> = remote_errors
        .iter()
        .filter_map(|e| e.get("entityId").and_then(Value::as_str))
        .collect();
    outcome.success.retain(|id| !failed.contains(id.as_str()));
    outcome.remote_errors = remote_errors;
    let endpoints: Vec<String> = groups
        .iter()
        .map(|(t, _)| t.source.endpoint.clone())
        .collect();
    note_federation(req, federation::summary(&forward, &endpoints, &warnings));
    Ok(outcome)
}

/// A purge (`DELETE /entities` with a filter): the broker's store purges what it holds, and every
/// source registered for the entities the filter names (and declaring `deleteEntity`) receives
/// the same request.
pub(crate) async fn purge<F>(
    state: &AppState,
    req: &HttpRequest,
    input: WriteInput,
    selector: &Selector<'_>,
    local: F,
) -> Result<HttpResponse, Problem>
where
    F: AsyncFnOnce(Authorized) -> Result<HttpResponse, Problem>,
{
    let WriteInput { auth, context, .. } = input;
    if let Some(auth) = auth {
        return local(auth).await;
    }
    let Some(federation) = state.federation.as_ref() else {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth).await;
    };
    federation.check_loop(req)?;
    let tenant = tenant_of(req)?;
    let registrations: Vec<_> = state
        .registrations
        .matching(&tenant, selector, "deleteEntity")
        .await?
        .into_iter()
        .filter(|r| r.mode != Mode::Auxiliary)
        .collect();
    let sources = federation.sources(&registrations);
    if sources.is_empty() {
        let auth = authorize(state, req, Operation::Write).await?;
        return local(auth).await;
    }
    let outgoing = Outgoing::of(req)?;
    let forward = forward(state, req, &tenant, &context)?;
    let sends = sources.iter().map(|source| {
        let (outgoing, forward) = (&outgoing, &forward);
        async move {
            federation
                .write(
                    forward,
                    source,
                    outgoing.method.clone(),
                    &outgoing.path,
                    None,
                )
                .await
        }
    });
    let mine = local_part(state, req, Some(()), Arc::default(), async |auth, ()| {
        local(auth).await
    });
    let (local_outcome, answers) =
        futures_util::future::join(mine, futures_util::future::join_all(sends)).await;
    let mut errors = Vec::new();
    if let Some(Err(problem)) = local_outcome {
        errors.push(json!({ "error": problem_with_status(&problem) }));
    }
    let mut warnings = Vec::new();
    for (source, answer) in sources.iter().zip(answers) {
        let registration = registrations
            .iter()
            .find(|r| r.endpoint.trim_end_matches('/') == source.endpoint)
            .map(|r| r.id.clone());
        match delivery(answer, &mut warnings, &source.endpoint) {
            Delivery::Done { .. } => {}
            Delivery::Partial(_) => errors.push(json!({
                "registrationId": registration,
                "error": problem_with_status(&Problem::bad_request(format!(
                    "{} did not purge every entity",
                    source.endpoint
                ))),
            })),
            Delivery::Failed(problem) => errors.push(json!({
                "registrationId": registration,
                "error": problem,
            })),
        }
    }
    let endpoints: Vec<String> = sources.iter().map(|s| s.endpoint.clone()).collect();
    note_federation(req, federation::summary(&forward, &endpoints, &warnings));
    if errors.is_empty() {
        return Ok(super::no_content());
    }
    Ok(HttpResponse::build(StatusCode::MULTI_STATUS)
        .content_type(civitas_http::negotiation::JSON)
        .body(json!({ "success": [], "errors": errors }).to_string()))
}

/// A ProblemDetails body with its `status`, as the items of a 207 carry it.
fn problem_with_status(problem: &Problem) -> Value {
    let mut body = problem.body();
    if let Some(members) = body.as_object_mut() {
        members.insert("status".to_owned(), json!(problem.code.status().as_u16()));
    }
    body
}

/// What a source's failed answer says, as a ProblemDetails with the source's status: its own
/// ProblemDetails when it sent one.
fn source_problem(answer: &Answer) -> Value {
    match &answer.body {
        Some(Value::Object(members)) if members.contains_key("type") => {
            let mut members = members.clone();
            members.insert("status".to_owned(), json!(answer.status));
            Value::Object(members)
        }
        _ => {
            let code = match answer.status {
                400 => ErrorCode::Ngsi(ErrorType::BadRequestData),
                401 => ErrorCode::Unauthenticated,
                403 => ErrorCode::Forbidden,
                404 => ErrorCode::Ngsi(ErrorType::ResourceNotFound),
                409 => ErrorCode::Ngsi(ErrorType::AlreadyExists),
                _ => ErrorCode::SourceFailed,
            };
            let mut body = Problem::new(
                code,
                format!("the context source answered {}", answer.status),
            )
            .body();
            if let Some(members) = body.as_object_mut() {
                members.insert("status".to_owned(), json!(answer.status));
            }
            body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> civitas_ngsild::context::ActiveContext {
        let mut loader = |_: &str| -> Result<std::sync::Arc<Value>, civitas_ngsild::Error> {
            unreachable!("no remote contexts")
        };
        civitas_ngsild::context::ActiveContext::empty()
            .process(
                &json!({"Vehicle": VEHICLE, "speed": SPEED, "brand": BRAND}),
                &mut loader,
            )
            .expect("a valid context")
    }

    fn registration(json: Value) -> civitas_ngsild::registration::Registration {
        let canonical = civitas_ngsild::registration::expand(
            json.as_object().expect("an object"),
            &context(),
            false,
        )
        .expect("a valid registration");
        civitas_ngsild::registration::decode(&canonical).expect("decodable")
    }

    fn federation() -> Federation {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Federation::new(
            crate::settings::FederationSettings::default(),
            "broker",
            "http://127.0.0.1:9",
        )
        .expect("a federation")
    }

    const VEHICLE: &str = "https://example.org/Vehicle";
    const SPEED: &str = "https://example.org/speed";
    const BRAND: &str = "https://example.org/brand";

    fn csr(endpoint: &str, mode: &str, properties: &[&str]) -> Value {
        let mut information = json!({
            "entities": [{"type": "Vehicle", "id": "urn:ngsi-ld:Vehicle:1"}],
        });
        if !properties.is_empty() {
            information["propertyNames"] = json!(properties);
        }
        json!({
            "id": format!("urn:ngsi-ld:ContextSourceRegistration:{endpoint}"),
            "type": "ContextSourceRegistration",
            "information": [information],
            "mode": mode,
            "operations": ["redirectionOps"],
            "endpoint": format!("http://127.0.0.1:1/{endpoint}"),
        })
    }

    #[test]
    fn exclusive_registrations_withhold_what_they_claim() {
        let registrations = [
            registration(csr("a", "exclusive", &["speed"])),
            registration(csr("b", "inclusive", &[])),
        ];
        let attributes = [SPEED.to_owned(), BRAND.to_owned()];
        let plan = plan(
            &federation(),
            &registrations,
            "urn:ngsi-ld:Vehicle:1",
            &[VEHICLE.to_owned()],
            &attributes,
        );
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(
            plan.targets[0].attributes,
            Some(BTreeSet::from([SPEED.to_owned()]))
        );
        assert_eq!(plan.targets[1].attributes, None);
        assert_eq!(
            plan.withheld,
            Withheld::Names(BTreeSet::from([SPEED.to_owned()]))
        );
        assert!(plan.inclusive);
    }

    #[test]
    fn a_redirect_of_every_attribute_takes_the_whole_write() {
        let registrations = [registration(csr("a", "redirect", &[]))];
        let plan = plan(
            &federation(),
            &registrations,
            "urn:ngsi-ld:Vehicle:1",
            &[],
            &[BRAND.to_owned()],
        );
        assert_eq!(plan.withheld, Withheld::All);
        assert!(!plan.inclusive);
    }

    #[test]
    fn registrations_of_other_attributes_or_entities_take_nothing() {
        let registrations = [
            registration(csr("a", "exclusive", &["speed"])),
            registration(csr("b", "auxiliary", &[])),
        ];
        let plan1 = plan(
            &federation(),
            &registrations,
            "urn:ngsi-ld:Vehicle:1",
            &[VEHICLE.to_owned()],
            &[BRAND.to_owned()],
        );
        assert!(plan1.targets.is_empty());
        let plan2 = plan(
            &federation(),
            &registrations,
            "urn:ngsi-ld:Vehicle:2",
            &[VEHICLE.to_owned()],
            &[SPEED.to_owned()],
        );
        assert!(plan2.targets.is_empty());
    }

    #[test]
    fn parts_keep_the_callers_terms() {
        let context = context();
        let body = json!({"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle",
            "speed": {"value": 3}, "brand": {"value": "b"}});
        let part = with_attributes(body.as_object().unwrap(), &context, |n| n == SPEED);
        assert_eq!(
            Value::Object(part),
            json!({"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "speed": {"value": 3}})
        );
    }
}
