//! The entity service: every NGSI-LD provision and retrieval operation of clauses 5.6 and 5.7 as
//! one function over the store, run in one transaction. Handlers parse the request, call one of
//! these and render the result.
//!
//! **Architecture Invariant:** this service is the only code that holds the store for entity data,
//! and every one of its operations takes an [`Authorized`], which only the authorizer makes. The
//! tenant comes from the authorization, never from a separate argument. What the token does not
//! allow is invisible: entities of other types are absent (404, or missing from query results and
//! counts), attributes outside the allow-list are removed before anything is returned, and writes
//! that would touch either are refused (403), except that a replace keeps the attributes the caller
//! cannot see.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use civitas_auth::authorizer::{Authorized, NameSet, Names, Operation};
use civitas_http::{ErrorCode, Problem};
use civitas_ngsild::canonical::{self, Trust};
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::entity::{Attributes, Entity};
use civitas_ngsild::expand::{self, Payload};
use civitas_ngsild::names::EntityId;
use civitas_ngsild::update::{self, UpdateReport};
use civitas_ngsild::{Error as ModelError, ErrorType};
use civitas_store::{BBox, EntityQuery, EntityRecord, Store};
use serde_json::Value;

use crate::clock::Clock;
use crate::self_registration::Shapes;

/// One failed item of a batch operation (clause 5.2.17 `BatchEntityError`).
#[derive(Debug, Clone)]
pub struct BatchError {
    /// The entity id, as given (may be absent or invalid when that is the error).
    pub entity_id: Option<String>,
    pub problem: Problem,
}

/// What a query keeps of its candidates beyond what the store selects: a type expression, the
/// query language (`q`) and a geo-query on a GeoProperty (expanded name). They are evaluated on
/// the entity as the caller sees it.
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    /// A type expression with `;` (clause 4.17); a plain list is the store's to select.
    pub types: Option<civitas_ngsild::q::TypeQuery>,
    pub q: Option<civitas_ngsild::q::Query>,
    pub geo: Option<(civitas_ngsild::geoquery::GeoQuery, String)>,
    /// `scopeQ` (clause 4.19).
    pub scopes: Option<civitas_ngsild::q::TypeQuery>,
}

impl EntityFilter {
    pub fn is_empty(&self) -> bool {
        self.types.is_none() && self.q.is_none() && self.geo.is_none() && self.scopes.is_none()
    }

    pub fn matches(&self, entity: &Entity) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.matches(&entity.types))
            && self.q.as_ref().is_none_or(|q| q.matches(entity))
            && self
                .scopes
                .as_ref()
                .is_none_or(|scopes| scopes.matches_scopes(&entity.scopes))
            && self.geo.as_ref().is_none_or(|(geo, property)| {
                entity.attributes.get(property).is_some_and(|instances| {
                    instances.iter().any(|instance| match &instance.value {
                        civitas_ngsild::entity::AttributeValue::GeoProperty(value) => {
                            geo.matches(value)
                        }
                        _ => false,
                    })
                })
            })
    }

    /// Attributes every match has one of (for the store to narrow the candidates by).
    pub fn attributes(&self) -> Vec<String> {
        let mut names = self.q.as_ref().map(|q| q.attributes()).unwrap_or_default();
        if let Some((_, property)) = &self.geo
            && !names.contains(property)
        {
            names.push(property.clone());
        }
        names
    }
}

/// The outcome of a batch operation (clause 5.2.16 `BatchOperationResult`).
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Ids of the entities written.
    pub success: Vec<String>,
    /// Of those, the ids of entities that did not exist before (for upsert's 201).
    pub created: Vec<String>,
    pub errors: Vec<BatchError>,
    /// Errors a broker's context sources reported (`BatchEntityError` items as they go out:
    /// `entityId`, `registrationId`, `error`).
    pub remote_errors: Vec<Value>,
}

/// How a batch upsert treats existing entities (clause 5.6.8 `options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertMode {
    /// Replace the whole entity (the default).
    Replace,
    /// Append the given attributes, overwriting existing ones.
    Update,
}

/// The entity service of one connector.
pub struct Entities {
    pub(crate) store: Store,
    clock: Arc<dyn Clock>,
    /// What the writes have shown the connector holds, for its registration at a broker.
    pub(crate) shapes: Arc<Shapes>,
}

impl std::fmt::Debug for Entities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entities")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

pub(crate) fn store_problem(error: civitas_store::Error) -> Problem {
    match error {
        civitas_store::Error::AlreadyExists => {
            Problem::new(ErrorType::AlreadyExists, "the entity already exists")
        }
        civitas_store::Error::NotFound => Problem::not_found("the entity does not exist"),
        civitas_store::Error::InvalidPattern(detail) => {
            Problem::bad_request(format!("invalid idPattern: {detail}"))
        }
        other => Problem::internal(&other),
    }
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no entity {id} exists"))
}

/// An authorization refusal as the caller sees it: 401 for a token that does not authenticate,
/// 403 for one that does not allow the request. The details of a refusal by datalog (which may
/// quote the department's policy) go to the log, not to the caller.
pub fn refused(error: civitas_auth::Error) -> Problem {
    use civitas_auth::Error;
    match error {
        Error::Forbidden(detail) => {
            tracing::info!(%detail, "request refused");
            Problem::new(
                ErrorCode::Forbidden,
                "the token does not allow this request",
            )
        }
        Error::Expired(at) => Problem::new(
            ErrorCode::Unauthenticated,
            format!("the token expired at {at}"),
        ),
        Error::Revoked(_) => Problem::new(ErrorCode::Unauthenticated, "the token was revoked"),
        Error::TokenRequired => Problem::new(
            ErrorCode::Unauthenticated,
            "this request needs a token (Authorization: Bearer <token>)",
        ),
        other => {
            tracing::info!(error = %other, "token refused");
            Problem::new(
                ErrorCode::Unauthenticated,
                "the token is not valid for this connector",
            )
        }
    }
}

fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::Forbidden, detail)
}

/// Completes the decision with what the request names (see [`Authorized::check_names`]).
fn check_names(
    auth: &Authorized,
    types: &[String],
    ids: &[String],
    attributes: &[String],
) -> Result<(), Problem> {
    auth.check_names(Names {
        entity_types: types,
        entity_ids: ids,
        attributes,
    })
    .map_err(refused)
}

/// Refuses a write that names a type or an attribute the token may not write.
fn check_writable<'a>(
    auth: &Authorized,
    types: &[String],
    attributes: impl IntoIterator<Item = &'a String>,
) -> Result<(), Problem> {
    if let Some(denied) = types
        .iter()
        .find(|t| !auth.grant().allows_type(Operation::Write, t))
    {
        return Err(forbidden(format!(
            "the token does not allow writing entities of type {denied}"
        )));
    }
    if let Some(denied) = attributes.into_iter().find(|a| !auth.allows_attribute(a)) {
        return Err(forbidden(format!(
            "the token does not allow writing the attribute {denied}"
        )));
    }
    Ok(())
}

/// An existing entity a write addresses: refused unless one of its types is writable. A caller
/// who may not even read it learns nothing: for them it does not exist.
fn check_existing(auth: &Authorized, entity: &Entity) -> Result<(), Problem> {
    if auth.covers(&entity.types) {
        return Ok(());
    }
    let readable = entity
        .types
        .iter()
        .any(|t| auth.grant().allows_type(Operation::Read, t));
    if readable {
        Err(forbidden(format!(
            "the token does not allow changing {}",
            entity.id
        )))
    } else {
        Err(not_found(entity.id.as_str()))
    }
}

/// Removing a whole entity removes attributes the caller may not see and all its types: only a
/// token without an attribute allow-list may do it, and only with the write right on every type
/// of the entity.
fn check_may_remove(auth: &Authorized, entity: &Entity) -> Result<(), Problem> {
    check_may_remove_entities(auth)?;
    check_writable(auth, &entity.types, [])
}

/// Removing entities wholesale (purge) needs a token without an attribute allow-list.
fn check_may_remove_entities(auth: &Authorized) -> Result<(), Problem> {
    if auth.allows_every_attribute() {
        Ok(())
    } else {
        Err(forbidden(
            "a token with an attribute allow-list cannot delete whole entities",
        ))
    }
}

/// The types a write adds or removes: each must be writable (a token that may write one type of a
/// multi-typed entity may not take its other types away).
fn changed_types(before: &[String], after: &[String]) -> Vec<String> {
    let added = after.iter().filter(|t| !before.contains(t));
    let removed = before.iter().filter(|t| !after.contains(t));
    added.chain(removed).cloned().collect()
}

/// Removes what the caller may not see.
fn project(auth: &Authorized, entity: &mut Entity) {
    if !auth.allows_every_attribute() {
        entity
            .attributes
            .retain(|name, _| auth.allows_attribute(name));
    }
}

/// Copies into `new` the attributes of `old` the caller cannot see, so that a replace by a caller
/// with an attribute allow-list leaves them as they were.
fn keep_hidden(auth: &Authorized, old: &Entity, new: &mut Entity) {
    if auth.allows_every_attribute() {
        return;
    }
    for (name, attribute) in &old.attributes {
        if !auth.allows_attribute(name) {
            new.attributes.insert(name.clone(), attribute.clone());
        }
    }
}

/// Narrows a query to what the caller may see: types within the grant for its operation, attribute
/// filters within the allow-list. `None` when nothing can match.
fn narrow_query(auth: &Authorized, query: &EntityQuery) -> Option<EntityQuery> {
    let mut query = query.clone();
    if let NameSet::Only(allowed) = auth.types() {
        if query.types.is_empty() {
            let mut allowed: Vec<String> = allowed.into_iter().collect();
            allowed.sort();
            query.types = allowed;
        } else {
            query.types.retain(|t| allowed.contains(t));
        }
        if query.types.is_empty() {
            return None;
        }
    }
    if !query.attributes.is_empty() {
        query.attributes.retain(|a| auth.allows_attribute(a));
        if query.attributes.is_empty() {
            return None;
        }
    }
    Some(query)
}

/// Attribute names of a canonical fragment (members other than `id`, `type` and `scope`).
fn fragment_attributes(fragment: &serde_json::Map<String, Value>) -> Vec<String> {
    fragment
        .keys()
        .filter(|k| !matches!(k.as_str(), "id" | "type" | "scope"))
        .cloned()
        .collect()
}

/// Entity types of a canonical fragment.
fn fragment_type_names(fragment: &serde_json::Map<String, Value>) -> Vec<String> {
    match fragment.get("type") {
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(t)) => vec![t.clone()],
        _ => Vec::new(),
    }
}

/// The store's record of an entity: index columns plus the canonical body.
pub fn to_record(entity: &Entity) -> EntityRecord {
    let now = entity.modified_at.or(entity.created_at).unwrap_or_default();
    EntityRecord {
        id: entity.id.as_str().to_owned(),
        types: entity.types.clone(),
        scopes: entity.scopes.clone(),
        attributes: entity.attributes.keys().cloned().collect(),
        created_at: entity.created_at.unwrap_or(now),
        modified_at: entity.modified_at.unwrap_or(now),
        location: entity
            .location_bbox()
            .map(|[min_lon, min_lat, max_lon, max_lat]| BBox {
                min_lon,
                min_lat,
                max_lon,
                max_lat,
            }),
        first_observed: entity.first_observed(),
        body: canonical::encode_stored(entity),
    }
}

/// Computes and stores the first observation of every entity stored before the store kept it
/// ([`Store::observations_pending`]), a thousand at a time; returns how many there were. A
/// connector does this before it serves requests, so no write races it. It logs how many there
/// are, its progress every few seconds, and the end. An entity whose stored body does not
/// decode is counted as having no observation.
pub async fn fill_first_observations(store: &Store) -> Result<u64, civitas_store::Error> {
    const CHUNK: u32 = 1000;
    const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    let total = store.observations_pending_count().await?;
    if total == 0 {
        return Ok(0);
    }
    tracing::info!(
        total,
        "computing the first observation of entities stored before it was kept"
    );
    let started = std::time::Instant::now();
    let mut reported = started;
    let mut done = 0;
    loop {
        let pending = store.observations_pending(CHUNK).await?;
        if pending.is_empty() {
            tracing::info!(
                done,
                seconds = started.elapsed().as_secs_f64(),
                "first observations computed"
            );
            return Ok(done);
        }
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
        for (tenant, id, body) in &pending {
            let observed = body.as_deref().and_then(|body| {
                canonical::decode_stored(body)
                    .inspect_err(|error| {
                        tracing::warn!(tenant, id, "a stored entity does not decode: {error}");
                    })
                    .ok()?
                    .first_observed()
            });
            by_tenant
                .entry(tenant.as_str())
                .or_default()
                .push((id.clone(), observed));
        }
        for (tenant, values) in by_tenant {
            store.set_first_observed(tenant, &values).await?;
        }
        done += pending.len() as u64;
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = std::time::Instant::now();
            tracing::info!(done, total, "computing first observations");
        }
    }
}

fn from_record(record: &EntityRecord) -> Result<Entity, Problem> {
    canonical::decode_stored(&record.body).map_err(Problem::from)
}

/// Parses a whole entity payload into the model.
pub fn parse_entity(payload: &Value, ctx: &ActiveContext) -> Result<Entity, ModelError> {
    let canonical = expand::entity(payload, ctx, Payload::Entity)?;
    canonical::decode_entity(&canonical, Trust::Caller)
}

/// Parses a fragment (attributes, possibly `type` and `scope`) into validated attributes.
fn parse_attributes(payload: &Value, ctx: &ActiveContext) -> Result<Attributes, ModelError> {
    let canonical = expand::entity(payload, ctx, Payload::Fragment)?;
    canonical::decode_attributes(&canonical, Trust::Caller)
}

/// Entity members that are not attributes cannot be addressed as `/attrs/{attrId}`.
fn reject_reserved(attribute: &str) -> Result<(), Problem> {
    match attribute {
        "id" | "type" | "scope" | "createdAt" | "modifiedAt" | "@context" => Err(
            Problem::bad_request(format!("{attribute} is an entity member, not an attribute")),
        ),
        _ => Ok(()),
    }
}

fn check_fragment_id(payload: &Value, id: &str) -> Result<(), Problem> {
    match payload.get("id") {
        None => Ok(()),
        Some(Value::String(given)) if given == id => Ok(()),
        Some(_) => Err(Problem::bad_request(
            "the payload's id differs from the entity id in the URL",
        )),
    }
}

impl Entities {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Entities {
        Entities {
            store,
            clock,
            shapes: Arc::default(),
        }
    }

    /// Whether the store answers (readiness; no tenant data).
    pub async fn ping(&self) -> Result<(), civitas_store::Error> {
        self.store.ping().await
    }

    /// The storage backend's name (`sqlite` or `postgres`).
    pub fn backend_name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// Create entity (clause 5.6.1).
    pub async fn create(
        &self,
        auth: &Authorized,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<EntityId, Problem> {
        let mut entity = parse_entity(payload, ctx)?;
        let attributes: Vec<String> = entity.attributes.keys().cloned().collect();
        check_writable(auth, &entity.types, &attributes)?;
        check_names(
            auth,
            &entity.types,
            &[entity.id.as_str().to_owned()],
            &attributes,
        )?;
        auth.note_entity(&entity.types, entity.id.as_str(), &attributes);
        auth.note_count(1);
        update::stamp_created(&mut entity, self.clock.now());
        let record = to_record(&entity);
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        tx.insert(auth.tenant(), &record)
            .await
            .map_err(|e| match e {
                civitas_store::Error::AlreadyExists => Problem::new(
                    ErrorType::AlreadyExists,
                    format!("an entity {} already exists", entity.id),
                ),
                other => store_problem(other),
            })?;
        tx.commit().await.map_err(store_problem)?;
        self.shapes
            .note(auth.tenant(), std::slice::from_ref(&record));
        Ok(entity.id)
    }

    /// Retrieve entity (clause 5.7.1), projected to what the caller may see. `attributes` are the
    /// expanded names the request asks for (for the policy's `attribute` facts).
    pub async fn retrieve(
        &self,
        auth: &Authorized,
        id: &str,
        attributes: &[String],
    ) -> Result<Entity, Problem> {
        let id = EntityId::parse(id)?;
        let ids = [id.as_str().to_owned()];
        check_names(auth, &[], &ids, attributes)?;
        let record = self
            .store
            .get(auth.tenant(), id.as_str())
            .await
            .map_err(store_problem)?;
        let mut entity = from_record(&record.ok_or_else(|| not_found(id.as_str()))?)?;
        // An entity the token may not read does not exist for the caller.
        if !auth.covers(&entity.types)
            || check_names(auth, &entity.types, &ids, attributes).is_err()
        {
            auth.note_hidden();
            return Err(not_found(id.as_str()));
        }
        project(auth, &mut entity);
        auth.note_entity(&entity.types, id.as_str(), entity.attributes.keys());
        auth.note_count(1);
        Ok(entity)
    }

    /// Query entities (clause 5.7.2), for the filters the store evaluates: only entities of types
    /// the caller may read are matched and counted, each projected to what the caller may see.
    pub async fn query(
        &self,
        auth: &Authorized,
        query: &EntityQuery,
    ) -> Result<(Vec<Entity>, Option<u64>), Problem> {
        self.query_where(auth, query, None).await
    }

    /// [`Entities::query`], keeping only the matches that satisfy `q` (clause 4.9) as the caller
    /// may see them: `q` is evaluated after the caller's projection, so it never tests an
    /// attribute the caller may not read.
    pub async fn query_where(
        &self,
        auth: &Authorized,
        query: &EntityQuery,
        filter: Option<&EntityFilter>,
    ) -> Result<(Vec<Entity>, Option<u64>), Problem> {
        check_names(auth, &query.types, &query.ids, &query.attributes)?;
        auth.note_types(&query.types);
        let (entities, total) = match filter.filter(|filter| !filter.is_empty()) {
            None => self.query_visible(auth, query).await?,
            Some(filter) => {
                let Some(narrowed) = narrow_query(auth, query) else {
                    return Ok((Vec::new(), query.count.then_some(0)));
                };
                self.query_each(auth, &narrowed, Some(filter)).await?
            }
        };
        for entity in &entities {
            auth.note_entity(&entity.types, entity.id.as_str(), entity.attributes.keys());
        }
        auth.note_count(entities.len() as u64);
        Ok((entities, total))
    }

    /// The page of matches the caller may see, projected.
    pub(crate) async fn query_visible(
        &self,
        auth: &Authorized,
        query: &EntityQuery,
    ) -> Result<(Vec<Entity>, Option<u64>), Problem> {
        let Some(query) = narrow_query(auth, query) else {
            return Ok((Vec::new(), query.count.then_some(0)));
        };
        if auth.decides_per_request() {
            return self.query_each(auth, &query, None).await;
        }
        let page = self
            .store
            .query(auth.tenant(), &query)
            .await
            .map_err(store_problem)?;
        let mut entities = Vec::with_capacity(page.records.len());
        for record in &page.records {
            let mut entity = from_record(record)?;
            project(auth, &mut entity);
            entities.push(entity);
        }
        Ok((entities, page.total))
    }

    /// A query evaluated entity by entity: under rules that decide per entity, or with a `q`
    /// filter. Every candidate is read and decided (and tested against `q` as the caller sees
    /// it), so that pages and the count hold exactly the matches the caller may see. Costs a pass
    /// over the candidates up to the page (over all of them for a count).
    async fn query_each(
        &self,
        auth: &Authorized,
        query: &EntityQuery,
        filter: Option<&EntityFilter>,
    ) -> Result<(Vec<Entity>, Option<u64>), Problem> {
        let (offset, limit) = (u64::from(query.offset), query.limit as usize);
        let mut scan = EntityQuery {
            limit: 1_000,
            offset: 0,
            count: false,
            ..query.clone()
        };
        let mut visible: u64 = 0;
        let mut entities = Vec::new();
        loop {
            let page = self
                .store
                .query(auth.tenant(), &scan)
                .await
                .map_err(store_problem)?;
            let done = page.records.len() < scan.limit as usize;
            for record in &page.records {
                let mut entity = from_record(record)?;
                if check_names(auth, &entity.types, std::slice::from_ref(&record.id), &[]).is_err()
                {
                    continue;
                }
                project(auth, &mut entity);
                if filter.is_some_and(|filter| !filter.matches(&entity)) {
                    continue;
                }
                if visible >= offset && entities.len() < limit {
                    entities.push(entity);
                }
                visible += 1;
            }
            // Without a count, stop as soon as the page is full.
            if done || (!query.count && entities.len() >= limit) {
                break;
            }
            scan.offset += scan.limit;
        }
        Ok((entities, query.count.then_some(visible)))
    }

    /// Runs `change` on the stored entity `id` inside one transaction and writes the result. The
    /// entity must be within the token's write right, before and after the change (a change may
    /// add types, and only writable ones); `attributes` are the names the request writes.
    async fn modify<T>(
        &self,
        auth: &Authorized,
        id: &str,
        attributes: &[String],
        change: impl FnOnce(&mut Entity) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        let id = EntityId::parse(id)?;
        check_writable(auth, &[], attributes)?;
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        let record = tx
            .get_for_update(auth.tenant(), id.as_str())
            .await
            .map_err(store_problem)?;
        let mut entity = from_record(&record.ok_or_else(|| not_found(id.as_str()))?)?;
        check_existing(auth, &entity)?;
        let types_before = entity.types.clone();
        let outcome = change(&mut entity)?;
        check_writable(auth, &changed_types(&types_before, &entity.types), [])?;
        check_names(auth, &entity.types, &[id.as_str().to_owned()], attributes)?;
        auth.note_entity(&entity.types, id.as_str(), attributes);
        auth.note_count(1);
        let record = to_record(&entity);
        tx.update(auth.tenant(), &record)
            .await
            .map_err(store_problem)?;
        tx.commit().await.map_err(store_problem)?;
        self.shapes
            .note(auth.tenant(), std::slice::from_ref(&record));
        Ok(outcome)
    }

    /// Replace entity (clause 5.6.18, `PUT /entities/{id}`).
    pub async fn replace(
        &self,
        auth: &Authorized,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<(), Problem> {
        check_fragment_id(payload, id)?;
        let mut payload = payload.clone();
        if let Value::Object(members) = &mut payload {
            members.insert("id".to_owned(), Value::String(id.to_owned()));
        }
        let new = parse_entity(&payload, ctx)?;
        let attributes: Vec<String> = new.attributes.keys().cloned().collect();
        check_writable(auth, &new.types, &attributes)?;
        let now = self.clock.now();
        self.modify(auth, id, &attributes, |entity| {
            let mut replaced = update::replace_entity(entity, new, now);
            keep_hidden(auth, entity, &mut replaced);
            *entity = replaced;
            Ok(())
        })
        .await
    }

    /// Merge entity (clause 5.6.17, `PATCH /entities/{id}`).
    pub async fn merge(
        &self,
        auth: &Authorized,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<(), Problem> {
        check_fragment_id(payload, id)?;
        let fragment = expand::entity(payload, ctx, Payload::Partial)?;
        check_writable(auth, &fragment_type_names(&fragment), [])?;
        let now = self.clock.now();
        self.modify(auth, id, &fragment_attributes(&fragment), |entity| {
            update::merge_entity(entity, &fragment, now).map_err(Problem::from)
        })
        .await
    }

    /// Append entity attributes (clause 5.6.3, `POST /entities/{id}/attrs`).
    pub async fn append(
        &self,
        auth: &Authorized,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
        overwrite: bool,
    ) -> Result<UpdateReport, Problem> {
        check_fragment_id(payload, id)?;
        let attributes = parse_attributes(payload, ctx)?;
        let types = fragment_types(payload, ctx)?;
        check_writable(auth, &types, [])?;
        let scopes = fragment_scopes(payload)?;
        let now = self.clock.now();
        let names: Vec<String> = attributes.keys().cloned().collect();
        self.modify(auth, id, &names, |entity| {
            update::add_types(entity, types.iter().map(String::as_str));
            if let Some(scopes) = scopes {
                update::append_scopes(entity, scopes, overwrite);
            }
            Ok(update::append(entity, attributes, overwrite, now))
        })
        .await
    }

    /// Update entity attributes (clause 5.6.2, `PATCH /entities/{id}/attrs`).
    pub async fn update(
        &self,
        auth: &Authorized,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<UpdateReport, Problem> {
        check_fragment_id(payload, id)?;
        let fragment = expand::entity(payload, ctx, Payload::Partial)?;
        if fragment.keys().all(|k| k == "id") {
            return Err(Problem::bad_request("the payload names nothing to update"));
        }
        check_writable(auth, &fragment_type_names(&fragment), [])?;
        let now = self.clock.now();
        self.modify(auth, id, &fragment_attributes(&fragment), |entity| {
            update::update_attributes(entity, &fragment, now).map_err(Problem::from)
        })
        .await
    }

    /// Partial attribute update (clause 5.6.4, `PATCH /entities/{id}/attrs/{attrId}`).
    pub async fn partial_update_attribute(
        &self,
        auth: &Authorized,
        id: &str,
        attribute: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<(), Problem> {
        reject_reserved(attribute)?;
        let name = expand::attribute_name(attribute, ctx)?;
        let partial = expand::attribute_payload(payload, ctx, Payload::Partial)?;
        let now = self.clock.now();
        self.modify(auth, id, std::slice::from_ref(&name), |entity| {
            match update::partial_update_attribute(entity, &name, &partial, now)? {
                true => Ok(()),
                false => Err(Problem::not_found(format!(
                    "the entity has no attribute {attribute} (with that datasetId)"
                ))),
            }
        })
        .await
    }

    /// Replace attribute (clause 5.6.19, `PUT /entities/{id}/attrs/{attrId}`).
    pub async fn replace_attribute(
        &self,
        auth: &Authorized,
        id: &str,
        attribute: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<(), Problem> {
        reject_reserved(attribute)?;
        let name = expand::attribute_name(attribute, ctx)?;
        let canonical = expand::attribute_payload(payload, ctx, Payload::Fragment)?;
        let instances = canonical::decode_instances(&canonical, Trust::Caller)?;
        let now = self.clock.now();
        self.modify(
            auth,
            id,
            std::slice::from_ref(&name),
            |entity| match update::replace_attribute(entity, &name, instances, now) {
                true => Ok(()),
                false => Err(Problem::not_found(format!(
                    "the entity has no attribute {attribute}"
                ))),
            },
        )
        .await
    }

    /// Delete attribute (clause 5.6.5, `DELETE /entities/{id}/attrs/{attrId}`).
    pub async fn delete_attribute(
        &self,
        auth: &Authorized,
        id: &str,
        attribute: &str,
        ctx: &ActiveContext,
        dataset_id: Option<&str>,
        delete_all: bool,
    ) -> Result<(), Problem> {
        let now = self.clock.now();
        if attribute == "scope" {
            // Scope is an entity member, not an attribute, but it can be deleted like one (4.18).
            return self
                .modify(auth, id, &[], |entity| {
                    if entity.scopes.is_empty() {
                        return Err(Problem::not_found("the entity has no scope"));
                    }
                    entity.scopes.clear();
                    entity.modified_at = Some(now);
                    Ok(())
                })
                .await;
        }
        reject_reserved(attribute)?;
        let name = expand::attribute_name(attribute, ctx)?;
        self.modify(
            auth,
            id,
            std::slice::from_ref(&name),
            |entity| match update::delete_attribute(entity, &name, dataset_id, delete_all, now) {
                true => Ok(()),
                false => Err(Problem::not_found(format!(
                    "the entity has no attribute {attribute} (with that datasetId)"
                ))),
            },
        )
        .await
    }

    /// Delete entity (clause 5.6.6).
    pub async fn delete(&self, auth: &Authorized, id: &str) -> Result<(), Problem> {
        let id = EntityId::parse(id)?;
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        let record = tx
            .get_for_update(auth.tenant(), id.as_str())
            .await
            .map_err(store_problem)?;
        let entity = from_record(&record.ok_or_else(|| not_found(id.as_str()))?)?;
        check_existing(auth, &entity)?;
        check_may_remove(auth, &entity)?;
        check_names(auth, &entity.types, &[id.as_str().to_owned()], &[])?;
        auth.note_entity(&entity.types, id.as_str(), []);
        auth.note_count(1);
        tx.delete(auth.tenant(), id.as_str())
            .await
            .map_err(store_problem)?;
        tx.commit().await.map_err(store_problem)?;
        self.shapes.changed();
        Ok(())
    }

    /// Purge entities (clause 5.6.21, `DELETE /entities`): deletes every match, or with `keep` /
    /// `drop` removes attributes from every match instead.
    pub async fn purge(
        &self,
        auth: &Authorized,
        query: &EntityQuery,
        trim: Option<Trim>,
        filter: Option<&EntityFilter>,
    ) -> Result<u64, Problem> {
        check_names(auth, &query.types, &query.ids, &[])?;
        auth.note_types(&query.types);
        let purged = self.purge_visible(auth, query, trim, filter).await?;
        auth.note_count(purged);
        Ok(purged)
    }

    /// [`Entities::purge`] once the request's names are decided. With a `filter` (`q`, a
    /// geo-query), only the matches that satisfy it as the caller sees them are purged.
    async fn purge_visible(
        &self,
        auth: &Authorized,
        query: &EntityQuery,
        trim: Option<Trim>,
        filter: Option<&EntityFilter>,
    ) -> Result<u64, Problem> {
        match &trim {
            None => check_may_remove_entities(auth)?,
            Some(Trim::Drop(names)) => check_writable(auth, &[], names)?,
            // What the caller cannot see is kept, whatever `keep` says.
            Some(Trim::Keep(_)) => {}
        }
        let Some(query) = narrow_query(auth, query) else {
            return Ok(0);
        };
        let query = &query;
        let filter = filter.filter(|filter| !filter.is_empty());
        if trim.is_none() && filter.is_none() {
            let mut tx = self.store.begin().await.map_err(store_problem)?;
            let deleted = tx
                .purge(auth.tenant(), query)
                .await
                .map_err(store_problem)?;
            tx.commit().await.map_err(store_problem)?;
            self.shapes.changed();
            return Ok(deleted);
        }
        // Collect the matching ids first, then delete or rewrite them in chunks, each in one
        // transaction.
        let mut ids = Vec::new();
        let mut page = EntityQuery {
            limit: 1_000,
            offset: 0,
            count: false,
            ..query.clone()
        };
        loop {
            let found = self
                .store
                .query(auth.tenant(), &page)
                .await
                .map_err(store_problem)?;
            let done = found.records.len() < page.limit as usize;
            for record in found.records {
                if let Some(filter) = filter {
                    let mut entity = from_record(&record)?;
                    project(auth, &mut entity);
                    if !filter.matches(&entity) {
                        continue;
                    }
                }
                ids.push(record.id);
            }
            if done {
                break;
            }
            page.offset += page.limit;
        }
        let Some(trim) = trim else {
            let mut deleted = 0;
            for chunk in ids.chunks(1_000) {
                let mut tx = self.store.begin().await.map_err(store_problem)?;
                let gone = tx
                    .delete_many(auth.tenant(), chunk)
                    .await
                    .map_err(store_problem)?;
                tx.commit().await.map_err(store_problem)?;
                self.shapes.changed();
                deleted += gone.iter().filter(|gone| **gone).count() as u64;
            }
            return Ok(deleted);
        };
        let now = self.clock.now();
        for chunk in ids.chunks(1_000) {
            let mut tx = self.store.begin().await.map_err(store_problem)?;
            let records = tx
                .get_many_for_update(auth.tenant(), chunk)
                .await
                .map_err(store_problem)?;
            let mut changed = Vec::with_capacity(records.len());
            for record in &records {
                let mut entity = from_record(record)?;
                let before = entity.attributes.len();
                entity.attributes.retain(|name, _| match &trim {
                    Trim::Keep(keep) => keep.contains(name) || !auth.allows_attribute(name),
                    Trim::Drop(drop) => !drop.contains(name),
                });
                if entity.attributes.len() != before {
                    entity.modified_at = Some(now);
                    changed.push(to_record(&entity));
                }
            }
            tx.upsert_many(auth.tenant(), &changed)
                .await
                .map_err(store_problem)?;
            tx.commit().await.map_err(store_problem)?;
            self.shapes.changed();
        }
        Ok(ids.len() as u64)
    }

    /// The batch operations (clause 5.6.7 to 5.6.10 and 5.6.20): each item is validated on its own,
    /// the valid ones are applied in one transaction, the invalid ones reported.
    pub async fn batch(
        &self,
        auth: &Authorized,
        operation: BatchOperation,
        items: Vec<BatchItem>,
    ) -> Result<BatchOutcome, Problem> {
        let now = self.clock.now();
        let mut outcome = BatchOutcome::default();
        // Parse and validate every item before touching the store.
        let mut parsed: Vec<(String, ParsedItem)> = Vec::with_capacity(items.len());
        for item in items {
            match parse_batch_item(auth, &operation, item) {
                Ok(ok) => parsed.push(ok),
                Err(error) => outcome.errors.push(error),
            }
        }
        if parsed.is_empty() {
            return Ok(outcome);
        }
        let ids: Vec<String> = parsed.iter().map(|(id, _)| id.clone()).collect();
        // Plan the writes from an unlocked snapshot, so decoding, applying and encoding happen
        // outside the write lock (SQLite has one writer); under the lock, the snapshot is checked
        // and the plan redone only if another request changed one of these entities meanwhile.
        let snapshot = self
            .store
            .get_many(auth.tenant(), &ids)
            .await
            .map_err(store_problem)?;
        let mut plan = plan_batch(auth, &snapshot, parsed.clone(), now)?;
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        let locked = tx
            .get_many_for_update(auth.tenant(), &ids)
            .await
            .map_err(store_problem)?;
        if locked != snapshot {
            plan = plan_batch(auth, &locked, parsed, now)?;
        }
        if !plan.upserts.is_empty() {
            tx.upsert_many(auth.tenant(), &plan.upserts)
                .await
                .map_err(store_problem)?;
        }
        if !plan.deletions.is_empty() {
            tx.delete_many(auth.tenant(), &plan.deletions)
                .await
                .map_err(store_problem)?;
        }
        tx.commit().await.map_err(store_problem)?;
        self.shapes.note(auth.tenant(), &plan.upserts);
        auth.note_count(plan.success.len() as u64);
        outcome.success = plan.success;
        outcome.created = plan.created;
        outcome.errors.extend(plan.errors);
        Ok(outcome)
    }
}

/// The writes a batch makes, computed from the entities as they are.
struct BatchPlan {
    upserts: Vec<EntityRecord>,
    deletions: Vec<String>,
    success: Vec<String>,
    created: Vec<String>,
    errors: Vec<BatchError>,
}

/// Applies the items in order to the `existing` records and returns what to write. Pure: the
/// same inputs always give the same plan.
fn plan_batch(
    auth: &Authorized,
    existing: &[EntityRecord],
    parsed: Vec<(String, ParsedItem)>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<BatchPlan, Problem> {
    let mut current: HashMap<String, Option<Entity>> = HashMap::with_capacity(parsed.len());
    for record in existing {
        current.insert(record.id.clone(), Some(from_record(record)?));
    }
    let mut existed: HashMap<String, bool> = HashMap::new();
    let mut touched: Vec<String> = Vec::new();
    let mut touched_set: HashSet<String> = HashSet::new();
    let mut success: Vec<String> = Vec::new();
    let mut success_set: HashSet<String> = HashSet::new();
    let mut errors = Vec::new();
    for (id, item) in parsed {
        let slot = current.entry(id.clone()).or_insert(None);
        existed.entry(id.clone()).or_insert(slot.is_some());
        let problem = match apply_batch_item(auth, slot, item, now) {
            Applied::Done => None,
            Applied::Partly(problem) => Some(problem),
            Applied::Refused(problem) => {
                errors.push(BatchError {
                    entity_id: Some(id),
                    problem,
                });
                continue;
            }
        };
        if touched_set.insert(id.clone()) {
            touched.push(id.clone());
        }
        match problem {
            None => {
                if success_set.insert(id.clone()) {
                    success.push(id);
                }
            }
            Some(problem) => errors.push(BatchError {
                entity_id: Some(id),
                problem,
            }),
        }
    }
    let mut upserts = Vec::new();
    let mut deletions = Vec::new();
    for id in touched {
        match current.get(&id) {
            Some(Some(entity)) => upserts.push(to_record(entity)),
            _ => deletions.push(id),
        }
    }
    let created = success
        .iter()
        .filter(|id| !existed.get(*id).copied().unwrap_or(true))
        .cloned()
        .collect();
    Ok(BatchPlan {
        upserts,
        deletions,
        success,
        created,
        errors,
    })
}

/// What a purge with `keep` or `drop` leaves of each matching entity (expanded attribute names).
#[derive(Debug, Clone)]
pub enum Trim {
    Keep(std::collections::HashSet<String>),
    Drop(std::collections::HashSet<String>),
}

/// Which batch operation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOperation {
    Create,
    Upsert(UpsertMode),
    Update { overwrite: bool },
    Merge,
    Delete,
}

/// One item of a batch: an entity payload (or an id, for delete) and its @context.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub payload: Value,
    pub context: Arc<ActiveContext>,
}

#[derive(Clone)]
enum ParsedItem {
    Create(Entity),
    Upsert(Entity, UpsertMode),
    Update(Attributes, Vec<String>, bool),
    Merge(serde_json::Map<String, Value>),
    Delete,
}

fn parse_batch_item(
    auth: &Authorized,
    operation: &BatchOperation,
    item: BatchItem,
) -> Result<(String, ParsedItem), BatchError> {
    let given_id = match &item.payload {
        Value::String(id) => Some(id.clone()),
        other => other.get("id").and_then(Value::as_str).map(str::to_owned),
    };
    let fail = |problem: Problem| BatchError {
        entity_id: given_id.clone(),
        problem,
    };
    let id = match &given_id {
        Some(id) => EntityId::parse(id)
            .map_err(|e| fail(e.into()))?
            .as_str()
            .to_owned(),
        None => return Err(fail(Problem::bad_request("the item has no entity id"))),
    };
    let ctx = &item.context;
    let parsed = match operation {
        BatchOperation::Delete => {
            if !item.payload.is_string() {
                return Err(fail(Problem::bad_request(
                    "batch delete takes an array of entity ids",
                )));
            }
            ParsedItem::Delete
        }
        _ if !item.payload.is_object() => {
            return Err(fail(Problem::bad_request(
                "each item must be an entity object",
            )));
        }
        BatchOperation::Create => {
            ParsedItem::Create(parse_entity(&item.payload, ctx).map_err(|e| fail(e.into()))?)
        }
        BatchOperation::Upsert(mode) => ParsedItem::Upsert(
            parse_entity(&item.payload, ctx).map_err(|e| fail(e.into()))?,
            *mode,
        ),
        BatchOperation::Update { overwrite } => {
            let attributes = parse_attributes(&item.payload, ctx).map_err(|e| fail(e.into()))?;
            let types = fragment_types(&item.payload, ctx).map_err(fail)?;
            ParsedItem::Update(attributes, types, *overwrite)
        }
        BatchOperation::Merge => ParsedItem::Merge(
            expand::entity(&item.payload, ctx, Payload::Partial).map_err(|e| fail(e.into()))?,
        ),
    };
    // What the item writes must be writable, and the policy must allow it, item by item.
    let (types, attributes) = match &parsed {
        ParsedItem::Create(entity) | ParsedItem::Upsert(entity, _) => (
            entity.types.clone(),
            entity.attributes.keys().cloned().collect(),
        ),
        ParsedItem::Update(attributes, types, _) => {
            (types.clone(), attributes.keys().cloned().collect())
        }
        ParsedItem::Merge(fragment) => {
            (fragment_type_names(fragment), fragment_attributes(fragment))
        }
        ParsedItem::Delete => (Vec::new(), Vec::new()),
    };
    check_writable(auth, &types, &attributes).map_err(fail)?;
    check_names(auth, &types, std::slice::from_ref(&id), &attributes).map_err(fail)?;
    auth.note_entity(&types, &id, &attributes);
    Ok((id, parsed))
}

/// What happened to one batch item.
enum Applied {
    Done,
    /// Written, but not everything asked for (e.g. `noOverwrite` kept some attributes).
    Partly(Problem),
    Refused(Problem),
}

fn apply_batch_item(
    auth: &Authorized,
    slot: &mut Option<Entity>,
    item: ParsedItem,
    now: chrono::DateTime<chrono::Utc>,
) -> Applied {
    if let Some(existing) = slot.as_ref() {
        if let Err(problem) = check_existing(auth, existing) {
            return Applied::Refused(problem);
        }
        let checked = match &item {
            ParsedItem::Delete => check_may_remove(auth, existing),
            ParsedItem::Upsert(entity, UpsertMode::Replace) => {
                check_writable(auth, &changed_types(&existing.types, &entity.types), [])
            }
            _ => Ok(()),
        };
        if let Err(problem) = checked {
            return Applied::Refused(problem);
        }
    }
    // Types and attributes the item writes were checked when it was parsed.
    match try_apply_batch_item(auth, slot, item, now) {
        Ok(None) => Applied::Done,
        Ok(Some(problem)) => Applied::Partly(problem),
        Err(problem) => Applied::Refused(problem),
    }
}

fn try_apply_batch_item(
    auth: &Authorized,
    slot: &mut Option<Entity>,
    item: ParsedItem,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Problem>, Problem> {
    match item {
        ParsedItem::Create(mut entity) => {
            if slot.is_some() {
                return Err(Problem::new(
                    ErrorType::AlreadyExists,
                    format!("an entity {} already exists", entity.id),
                ));
            }
            update::stamp_created(&mut entity, now);
            *slot = Some(entity);
        }
        ParsedItem::Upsert(mut entity, mode) => match (slot.as_mut(), mode) {
            (None, _) => {
                update::stamp_created(&mut entity, now);
                *slot = Some(entity);
            }
            (Some(existing), UpsertMode::Replace) => {
                let mut replaced = update::replace_entity(existing, entity, now);
                keep_hidden(auth, existing, &mut replaced);
                *existing = replaced;
            }
            (Some(existing), UpsertMode::Update) => {
                update::add_types(existing, entity.types.iter().map(String::as_str));
                update::append(existing, entity.attributes, true, now);
            }
        },
        ParsedItem::Update(attributes, types, overwrite) => {
            let Some(existing) = slot.as_mut() else {
                return Err(Problem::not_found("the entity does not exist"));
            };
            update::add_types(existing, types.iter().map(String::as_str));
            let report = update::append(existing, attributes, overwrite, now);
            if !report.is_complete() {
                let names: Vec<&str> = report.not_updated.iter().map(|n| n.name.as_str()).collect();
                return Ok(Some(Problem::bad_request(format!(
                    "not updated (noOverwrite): {}",
                    names.join(", ")
                ))));
            }
        }
        ParsedItem::Merge(fragment) => {
            let Some(existing) = slot.as_mut() else {
                return Err(Problem::not_found("the entity does not exist"));
            };
            update::merge_entity(existing, &fragment, now)?;
        }
        ParsedItem::Delete => {
            if slot.is_none() {
                return Err(Problem::not_found("the entity does not exist"));
            }
            *slot = None;
        }
    }
    Ok(None)
}

fn fragment_types(payload: &Value, ctx: &ActiveContext) -> Result<Vec<String>, Problem> {
    match payload.get("type") {
        None => Ok(Vec::new()),
        Some(types) => Ok(expand::entity_types(types, ctx)?
            .into_iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect()),
    }
}

fn fragment_scopes(payload: &Value) -> Result<Option<Vec<String>>, Problem> {
    let scopes = match payload.get("scope") {
        None => return Ok(None),
        Some(Value::String(scope)) => Value::Array(vec![Value::String(scope.clone())]),
        Some(other) => other.clone(),
    };
    Ok(Some(canonical::decode_scopes(&scopes)?))
}
