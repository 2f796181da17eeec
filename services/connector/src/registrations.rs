//! Context source registrations (ETSI GS CIM 009, clause 5.9): the service behind
//! `/csourceRegistrations`, and the lookup the broker forwards by.
//!
//! Registrations are this service's own data, not a department's entities. Who may see or change
//! one follows from the entity types it registers: reading needs the read right on at least one of
//! them, creating, updating and deleting the write right on all of them (old and new); a
//! registration that names no type needs the right on every type. So a department allowed to
//! write its own types here may register itself as their source, and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use civitas_auth::authorizer::{Authorized, NameSet};
use civitas_http::Problem;
use civitas_ngsild::ErrorType;
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::registration::{self, Registration, Selector};
use civitas_store::{Documents, RegistrationRecord, Store};
use serde_json::{Map, Value};

use crate::clock::Clock;

/// A stored registration, decoded.
#[derive(Debug, Clone)]
pub struct Stored {
    pub canonical: Map<String, Value>,
    pub registration: Registration,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
}

/// What a registration query (clause 5.10.2) asks for, names expanded.
#[derive(Debug, Clone, Default)]
pub struct RegistrationQuery {
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub id_pattern: Option<String>,
    pub attributes: Vec<String>,
    /// `timerel` and its companions: against the observation or management interval.
    pub temporal: Option<registration::TemporalQuery>,
    /// `georel` and its companions, and the GeoProperty they are about.
    pub geo: Option<(civitas_ngsild::geoquery::GeoQuery, String)>,
    /// `q`, against the registration's own properties (clause 5.10.2).
    pub q: Option<civitas_ngsild::q::Query>,
    /// `csf` (context source filter), likewise against the registration's own properties.
    pub csf: Option<civitas_ngsild::q::Query>,
}

pub struct Registrations {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Every tenant's registrations as last read, decoded: a broker consults them on every
    /// federated request. Only this service writes them; each write drops its tenant's entry.
    cache: std::sync::Mutex<HashMap<String, Arc<Vec<Stored>>>>,
    /// Bumped by every write, so that a read that raced a write does not cache what it read.
    version: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Registrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrations").finish_non_exhaustive()
    }
}

fn store_problem(error: civitas_store::Error) -> Problem {
    match error {
        civitas_store::Error::AlreadyExists => Problem::new(
            ErrorType::AlreadyExists,
            "a registration with this id already exists",
        ),
        other => Problem::internal(&other),
    }
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no context source registration {id} exists"))
}

fn forbidden() -> Problem {
    Problem::new(
        civitas_http::ErrorCode::Forbidden,
        "the token does not allow registering sources of these entity types",
    )
}

/// Whether `auth` covers a registration (or a registration subscription) that names `types`: all
/// of them with `all`, else one; every type when it names none.
pub(crate) fn covers(auth: &Authorized, types: &[String], all: bool) -> bool {
    if types.is_empty() {
        return auth.types() == NameSet::All;
    }
    if all {
        auth.covers_all(types)
    } else {
        auth.covers(types)
    }
}

fn types_of(canonical: &Map<String, Value>) -> Vec<String> {
    let (types, _) = registration::names(canonical);
    let mut types: Vec<String> = types.into_iter().collect();
    types.sort();
    types
}

impl Registrations {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Registrations {
        Registrations {
            store,
            clock,
            cache: Default::default(),
            version: Default::default(),
        }
    }

    /// After a write to `tenant`'s registrations: the cached ones are stale.
    fn forget(&self, tenant: &str) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
    }

    fn decode(record: RegistrationRecord) -> Result<Stored, Problem> {
        let canonical: Map<String, Value> =
            serde_json::from_str(&record.body).map_err(|e| Problem::internal(&e))?;
        let registration = registration::decode(&canonical).map_err(Problem::from)?;
        Ok(Stored {
            canonical,
            registration,
            created_at: record.created_at,
            modified_at: record.modified_at,
        })
    }

    /// Creates a registration from a payload (clause 5.9.2); returns it as stored.
    pub async fn create(
        &self,
        auth: &Authorized,
        payload: &Value,
        ctx: &ActiveContext,
    ) -> Result<Stored, Problem> {
        let payload = payload.as_object().ok_or_else(|| {
            Problem::invalid_request("the payload must be a JSON object (one registration)")
        })?;
        let mut canonical = registration::expand(payload, ctx, false)?;
        let now = self.clock.now();
        if let Some(expires) = canonical.get("expiresAt").and_then(Value::as_str)
            && chrono::DateTime::parse_from_rfc3339(expires).is_ok_and(|at| at <= now)
        {
            return Err(Problem::bad_request("expiresAt is in the past"));
        }
        let id = match canonical.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let id = format!(
                    "urn:ngsi-ld:ContextSourceRegistration:{}",
                    uuid::Uuid::new_v4()
                );
                canonical.insert("id".to_owned(), Value::from(id.clone()));
                id
            }
        };
        let types = types_of(&canonical);
        auth.note_types(&types);
        if !covers(auth, &types, true) {
            return Err(forbidden());
        }
        let record = RegistrationRecord {
            id: id.clone(),
            body: Value::Object(canonical).to_string(),
            created_at: now,
            modified_at: now,
        };
        let stored = self
            .store
            .put_document(Documents::Registrations, auth.tenant(), &record)
            .await;
        self.forget(auth.tenant());
        stored.map_err(store_problem)?;
        Self::decode(record)
    }

    /// The registration `id`, if the caller may see it (clause 5.10.1).
    pub async fn get(&self, auth: &Authorized, id: &str) -> Result<Stored, Problem> {
        let record = self
            .store
            .get_document(Documents::Registrations, auth.tenant(), id)
            .await
            .map_err(store_problem)?
            .ok_or_else(|| not_found(id))?;
        let stored = Self::decode(record)?;
        let types = types_of(&stored.canonical);
        if stored.registration.expired(self.clock.now()) || !covers(auth, &types, false) {
            auth.note_hidden();
            return Err(not_found(id));
        }
        auth.note_types(&types);
        Ok(stored)
    }

    /// Registrations matching `query` that the caller may see, in id order (clause 5.10.2).
    pub async fn query(
        &self,
        auth: &Authorized,
        query: &RegistrationQuery,
    ) -> Result<Vec<Stored>, Problem> {
        let pattern = match &query.id_pattern {
            Some(pattern) => Some(
                regex::Regex::new(pattern)
                    .map_err(|e| Problem::bad_request(format!("invalid idPattern: {e}")))?,
            ),
            None => None,
        };
        let selector = Selector {
            types: &query.types,
            ids: &[],
            id_pattern: None,
            attributes: &query.attributes,
        };
        let now = self.clock.now();
        let mut out = Vec::new();
        for stored in self.all(auth.tenant()).await?.iter() {
            let types = types_of(&stored.canonical);
            if stored.registration.expired(now) || !covers(auth, &types, false) {
                continue;
            }
            // `id` and `idPattern` select by the *entities* registered (clause 5.10.2): a
            // registration for any entity of a type, or for a matching id, or whose pattern
            // could match.
            let ids_ok = query.ids.is_empty()
                || stored.registration.matches(&Selector {
                    ids: &query.ids,
                    ..selector.clone()
                });
            let pattern_ok = pattern.as_ref().is_none_or(|pattern| {
                stored.registration.information.iter().any(|info| {
                    info.entities.is_empty()
                        || info
                            .entities
                            .iter()
                            .any(|entity| entity.id.as_ref().is_none_or(|id| pattern.is_match(id)))
                })
            });
            let q_ok = [&query.q, &query.csf]
                .into_iter()
                .flatten()
                .all(|q| q.matches_members(&stored.canonical));
            let time_ok = query
                .temporal
                .as_ref()
                .is_none_or(|temporal| stored.registration.matches_time(temporal));
            let geo_ok = query
                .geo
                .as_ref()
                .is_none_or(|(geo, property)| stored.registration.matches_geo(geo, property));
            if ids_ok
                && pattern_ok
                && q_ok
                && time_ok
                && geo_ok
                && stored.registration.matches(&selector)
            {
                auth.note_types(&types);
                out.push(stored.clone());
            }
        }
        Ok(out)
    }

    /// Every unexpired registration of `tenant` that can contribute to a request about
    /// `selector` and supports `operation`, in id order; the broker forwards by these.
    pub async fn matching(
        &self,
        tenant: &str,
        selector: &Selector<'_>,
        operation: &str,
    ) -> Result<Vec<Registration>, Problem> {
        self.matching_where(tenant, selector, operation, None).await
    }

    /// [`Registrations::matching`], keeping only the registrations whose own properties satisfy
    /// the context source filter `csf` (clause 4.9 syntax), if any.
    pub async fn matching_where(
        &self,
        tenant: &str,
        selector: &Selector<'_>,
        operation: &str,
        csf: Option<&civitas_ngsild::q::Query>,
    ) -> Result<Vec<Registration>, Problem> {
        self.matching_any_where(tenant, selector, &[operation], csf)
            .await
    }

    /// [`Registrations::matching_where`] for registrations that support any of `operations`
    /// (a broker may serve one request by several: a retrieval by a query).
    pub async fn matching_any_where(
        &self,
        tenant: &str,
        selector: &Selector<'_>,
        operations: &[&str],
        csf: Option<&civitas_ngsild::q::Query>,
    ) -> Result<Vec<Registration>, Problem> {
        let now = self.clock.now();
        Ok(self
            .all(tenant)
            .await?
            .iter()
            .filter(|stored| csf.is_none_or(|csf| csf.matches_members(&stored.canonical)))
            .map(|stored| &stored.registration)
            .filter(|r| {
                !r.expired(now)
                    && operations.iter().any(|operation| r.supports(operation))
                    && r.matches(selector)
            })
            .cloned()
            .collect())
    }

    /// Every registration of `tenant`, expired or not, in id order.
    pub async fn all_stored(&self, tenant: &str) -> Result<Arc<Vec<Stored>>, Problem> {
        self.all(tenant).await
    }

    async fn all(&self, tenant: &str) -> Result<Arc<Vec<Stored>>, Problem> {
        if let Some(cached) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
        {
            return Ok(Arc::clone(cached));
        }
        let version = self.version.load(std::sync::atomic::Ordering::SeqCst);
        let all: Arc<Vec<Stored>> = Arc::new(
            self.store
                .list_documents(Documents::Registrations, tenant)
                .await
                .map_err(store_problem)?
                .into_iter()
                .map(Self::decode)
                .collect::<Result<_, _>>()?,
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if self.version.load(std::sync::atomic::Ordering::SeqCst) == version {
            cache.insert(tenant.to_owned(), Arc::clone(&all));
        }
        Ok(all)
    }

    /// Applies an update fragment (clause 5.9.3); returns the registration before and after.
    pub async fn update(
        &self,
        auth: &Authorized,
        id: &str,
        fragment: &Value,
        ctx: &ActiveContext,
    ) -> Result<(Stored, Stored), Problem> {
        let fragment = fragment
            .as_object()
            .ok_or_else(|| Problem::invalid_request("the payload must be a JSON object"))?;
        let mut fragment = registration::expand(fragment, ctx, true)?;
        if let Some(given) = fragment.shift_remove("id")
            && given.as_str() != Some(id)
        {
            return Err(Problem::bad_request(format!(
                "the payload's id {given} is not the registration's id {id}"
            )));
        }
        fragment.shift_remove("type");
        if fragment.is_empty() {
            return Err(Problem::bad_request("the update names no member"));
        }
        // Retried when another update lands between the read and the write.
        for _ in 0..8 {
            let stored = self.get(auth, id).await?;
            let merged = registration::merge(&stored.canonical, &fragment)?;
            let types: Vec<String> = {
                let mut all = types_of(&stored.canonical);
                all.extend(types_of(&merged));
                all.sort();
                all.dedup();
                all
            };
            auth.note_types(&types);
            if !covers(auth, &types, true) {
                return Err(forbidden());
            }
            let mut modified_at = self.clock.now();
            if modified_at <= stored.modified_at {
                modified_at = stored.modified_at + chrono::Duration::microseconds(1);
            }
            let record = RegistrationRecord {
                id: id.to_owned(),
                body: Value::Object(merged).to_string(),
                created_at: stored.created_at,
                modified_at,
            };
            let replaced = self
                .store
                .replace_document(
                    Documents::Registrations,
                    auth.tenant(),
                    &record,
                    stored.modified_at,
                )
                .await;
            self.forget(auth.tenant());
            if replaced.map_err(store_problem)? {
                let updated = Self::decode(record)?;
                return Ok((stored, updated));
            }
        }
        Err(Problem::new(
            ErrorType::InternalError,
            "the registration is being changed by other requests; try again",
        ))
    }

    /// Deletes a registration (clause 5.9.4); returns it as it was.
    pub async fn delete(&self, auth: &Authorized, id: &str) -> Result<Stored, Problem> {
        let stored = self.get(auth, id).await?;
        let types = types_of(&stored.canonical);
        if !covers(auth, &types, true) {
            return Err(forbidden());
        }
        let deleted = self
            .store
            .delete_document(Documents::Registrations, auth.tenant(), id)
            .await;
        self.forget(auth.tenant());
        if deleted.map_err(store_problem)? {
            Ok(stored)
        } else {
            Err(not_found(id))
        }
    }
}
