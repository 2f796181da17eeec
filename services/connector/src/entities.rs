//! The entity service: every NGSI-LD provision and retrieval operation of clauses 5.6 and 5.7 as
//! one function over the store, run in one transaction. Handlers parse the request, call one of
//! these and render the result.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use civitas_http::Problem;
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

/// The tenant a request addresses, as the store knows it: `""` is the default tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey(pub String);

impl TenantKey {
    pub fn default_tenant() -> TenantKey {
        TenantKey(String::new())
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// One failed item of a batch operation (clause 5.2.17 `BatchEntityError`).
#[derive(Debug, Clone)]
pub struct BatchError {
    /// The entity id, as given (may be absent or invalid when that is the error).
    pub entity_id: Option<String>,
    pub problem: Problem,
}

/// The outcome of a batch operation (clause 5.2.16 `BatchOperationResult`).
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Ids of the entities written.
    pub success: Vec<String>,
    /// Of those, the ids of entities that did not exist before (for upsert's 201).
    pub created: Vec<String>,
    pub errors: Vec<BatchError>,
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
    store: Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Entities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entities")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn store_problem(error: civitas_store::Error) -> Problem {
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
        body: canonical::encode_stored(entity),
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
        Entities { store, clock }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Create entity (clause 5.6.1).
    pub async fn create(
        &self,
        tenant: &TenantKey,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<EntityId, Problem> {
        let mut entity = parse_entity(payload, ctx)?;
        update::stamp_created(&mut entity, self.clock.now());
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        tx.insert(tenant.as_str(), &to_record(&entity))
            .await
            .map_err(|e| match e {
                civitas_store::Error::AlreadyExists => Problem::new(
                    ErrorType::AlreadyExists,
                    format!("an entity {} already exists", entity.id),
                ),
                other => store_problem(other),
            })?;
        tx.commit().await.map_err(store_problem)?;
        Ok(entity.id)
    }

    /// Retrieve entity (clause 5.7.1).
    pub async fn retrieve(&self, tenant: &TenantKey, id: &str) -> Result<Entity, Problem> {
        let id = EntityId::parse(id)?;
        let record = self
            .store
            .get(tenant.as_str(), id.as_str())
            .await
            .map_err(store_problem)?;
        from_record(&record.ok_or_else(|| not_found(id.as_str()))?)
    }

    /// Query entities (clause 5.7.2), for the filters the store evaluates.
    pub async fn query(
        &self,
        tenant: &TenantKey,
        query: &EntityQuery,
    ) -> Result<(Vec<Entity>, Option<u64>), Problem> {
        let page = self
            .store
            .query(tenant.as_str(), query)
            .await
            .map_err(store_problem)?;
        let entities = page
            .records
            .iter()
            .map(from_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((entities, page.total))
    }

    /// Runs `change` on the stored entity `id` inside one transaction and writes the result.
    async fn modify<T>(
        &self,
        tenant: &TenantKey,
        id: &str,
        change: impl FnOnce(&mut Entity) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        let id = EntityId::parse(id)?;
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        let record = tx
            .get_for_update(tenant.as_str(), id.as_str())
            .await
            .map_err(store_problem)?;
        let mut entity = from_record(&record.ok_or_else(|| not_found(id.as_str()))?)?;
        let outcome = change(&mut entity)?;
        tx.update(tenant.as_str(), &to_record(&entity))
            .await
            .map_err(store_problem)?;
        tx.commit().await.map_err(store_problem)?;
        Ok(outcome)
    }

    /// Replace entity (clause 5.6.18, `PUT /entities/{id}`).
    pub async fn replace(
        &self,
        tenant: &TenantKey,
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
        let now = self.clock.now();
        self.modify(tenant, id, |entity| {
            *entity = update::replace_entity(entity, new, now);
            Ok(())
        })
        .await
    }

    /// Merge entity (clause 5.6.17, `PATCH /entities/{id}`).
    pub async fn merge(
        &self,
        tenant: &TenantKey,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<(), Problem> {
        check_fragment_id(payload, id)?;
        let fragment = expand::entity(payload, ctx, Payload::Partial)?;
        let now = self.clock.now();
        self.modify(tenant, id, |entity| {
            update::merge_entity(entity, &fragment, now).map_err(Problem::from)
        })
        .await
    }

    /// Append entity attributes (clause 5.6.3, `POST /entities/{id}/attrs`).
    pub async fn append(
        &self,
        tenant: &TenantKey,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
        overwrite: bool,
    ) -> Result<UpdateReport, Problem> {
        check_fragment_id(payload, id)?;
        let attributes = parse_attributes(payload, ctx)?;
        let types = fragment_types(payload, ctx)?;
        let scopes = fragment_scopes(payload)?;
        let now = self.clock.now();
        self.modify(tenant, id, |entity| {
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
        tenant: &TenantKey,
        id: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<UpdateReport, Problem> {
        check_fragment_id(payload, id)?;
        let fragment = expand::entity(payload, ctx, Payload::Partial)?;
        if fragment.keys().all(|k| k == "id") {
            return Err(Problem::bad_request("the payload names nothing to update"));
        }
        let now = self.clock.now();
        self.modify(tenant, id, |entity| {
            update::update_attributes(entity, &fragment, now).map_err(Problem::from)
        })
        .await
    }

    /// Partial attribute update (clause 5.6.4, `PATCH /entities/{id}/attrs/{attrId}`).
    pub async fn partial_update_attribute(
        &self,
        tenant: &TenantKey,
        id: &str,
        attribute: &str,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<(), Problem> {
        reject_reserved(attribute)?;
        let name = expand::attribute_name(attribute, ctx)?;
        let partial = expand::attribute_payload(payload, ctx, Payload::Partial)?;
        let now = self.clock.now();
        self.modify(tenant, id, |entity| match update::partial_update_attribute(
            entity, &name, &partial, now,
        )? {
            true => Ok(()),
            false => Err(Problem::not_found(format!(
                "the entity has no attribute {attribute} (with that datasetId)"
            ))),
        })
        .await
    }

    /// Replace attribute (clause 5.6.19, `PUT /entities/{id}/attrs/{attrId}`).
    pub async fn replace_attribute(
        &self,
        tenant: &TenantKey,
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
        self.modify(tenant, id, |entity| {
            match update::replace_attribute(entity, &name, instances, now) {
                true => Ok(()),
                false => Err(Problem::not_found(format!(
                    "the entity has no attribute {attribute}"
                ))),
            }
        })
        .await
    }

    /// Delete attribute (clause 5.6.5, `DELETE /entities/{id}/attrs/{attrId}`).
    pub async fn delete_attribute(
        &self,
        tenant: &TenantKey,
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
                .modify(tenant, id, |entity| {
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
        self.modify(tenant, id, |entity| {
            match update::delete_attribute(entity, &name, dataset_id, delete_all, now) {
                true => Ok(()),
                false => Err(Problem::not_found(format!(
                    "the entity has no attribute {attribute} (with that datasetId)"
                ))),
            }
        })
        .await
    }

    /// Delete entity (clause 5.6.6).
    pub async fn delete(&self, tenant: &TenantKey, id: &str) -> Result<(), Problem> {
        let id = EntityId::parse(id)?;
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        if !tx
            .delete(tenant.as_str(), id.as_str())
            .await
            .map_err(store_problem)?
        {
            return Err(not_found(id.as_str()));
        }
        tx.commit().await.map_err(store_problem)
    }

    /// Purge entities (clause 5.6.21, `DELETE /entities`): deletes every match, or with `keep` /
    /// `drop` removes attributes from every match instead.
    pub async fn purge(
        &self,
        tenant: &TenantKey,
        query: &EntityQuery,
        trim: Option<Trim>,
    ) -> Result<u64, Problem> {
        let Some(trim) = trim else {
            let mut tx = self.store.begin().await.map_err(store_problem)?;
            let deleted = tx
                .purge(tenant.as_str(), query)
                .await
                .map_err(store_problem)?;
            tx.commit().await.map_err(store_problem)?;
            return Ok(deleted);
        };
        // Collect the matching ids first, then rewrite them in chunks, each in one transaction.
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
                .query(tenant.as_str(), &page)
                .await
                .map_err(store_problem)?;
            let done = found.records.len() < page.limit as usize;
            ids.extend(found.records.into_iter().map(|r| r.id));
            if done {
                break;
            }
            page.offset += page.limit;
        }
        let now = self.clock.now();
        for chunk in ids.chunks(1_000) {
            let mut tx = self.store.begin().await.map_err(store_problem)?;
            let records = tx
                .get_many_for_update(tenant.as_str(), chunk)
                .await
                .map_err(store_problem)?;
            let mut changed = Vec::with_capacity(records.len());
            for record in &records {
                let mut entity = from_record(record)?;
                let before = entity.attributes.len();
                entity.attributes.retain(|name, _| match &trim {
                    Trim::Keep(keep) => keep.contains(name),
                    Trim::Drop(drop) => !drop.contains(name),
                });
                if entity.attributes.len() != before {
                    entity.modified_at = Some(now);
                    changed.push(to_record(&entity));
                }
            }
            tx.upsert_many(tenant.as_str(), &changed)
                .await
                .map_err(store_problem)?;
            tx.commit().await.map_err(store_problem)?;
        }
        Ok(ids.len() as u64)
    }

    /// The batch operations (clause 5.6.7 to 5.6.10 and 5.6.20): each item is validated on its own,
    /// the valid ones are applied in one transaction, the invalid ones reported.
    pub async fn batch(
        &self,
        tenant: &TenantKey,
        operation: BatchOperation,
        items: Vec<BatchItem>,
    ) -> Result<BatchOutcome, Problem> {
        let now = self.clock.now();
        let mut outcome = BatchOutcome::default();
        // Parse and validate every item before touching the store.
        let mut parsed: Vec<(String, ParsedItem)> = Vec::with_capacity(items.len());
        for item in items {
            match parse_batch_item(&operation, item) {
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
            .get_many(tenant.as_str(), &ids)
            .await
            .map_err(store_problem)?;
        let mut plan = plan_batch(&snapshot, parsed.clone(), now)?;
        let mut tx = self.store.begin().await.map_err(store_problem)?;
        let locked = tx
            .get_many_for_update(tenant.as_str(), &ids)
            .await
            .map_err(store_problem)?;
        if locked != snapshot {
            plan = plan_batch(&locked, parsed, now)?;
        }
        if !plan.upserts.is_empty() {
            tx.upsert_many(tenant.as_str(), &plan.upserts)
                .await
                .map_err(store_problem)?;
        }
        if !plan.deletions.is_empty() {
            tx.delete_many(tenant.as_str(), &plan.deletions)
                .await
                .map_err(store_problem)?;
        }
        tx.commit().await.map_err(store_problem)?;
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
        let problem = match apply_batch_item(slot, item, now) {
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
    slot: &mut Option<Entity>,
    item: ParsedItem,
    now: chrono::DateTime<chrono::Utc>,
) -> Applied {
    match try_apply_batch_item(slot, item, now) {
        Ok(None) => Applied::Done,
        Ok(Some(problem)) => Applied::Partly(problem),
        Err(problem) => Applied::Refused(problem),
    }
}

fn try_apply_batch_item(
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
                *existing = update::replace_entity(existing, entity, now)
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
