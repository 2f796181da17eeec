//! Context source registration subscriptions (ETSI GS CIM 009, clause 5.11): the service behind
//! `/csourceSubscriptions`, and the notifier that tells subscribers when registrations matching
//! their subscription appear, change or stop matching.
//!
//! Who may subscribe follows from the entity types the subscription names, as for registrations:
//! the read right on every one of them, or on every type when it names none. A notification only
//! ever carries registrations of those types, so it tells the subscriber nothing the token did not
//! allow it to ask for.
//!
//! A notification is sent after the change that caused it has been stored, from a task of its own:
//! the request that changed the registration never waits for a subscriber. Delivery counters
//! (`timesSent`, `lastSuccess`, …) are kept in memory and count from the service's start; the
//! subscriptions themselves are stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, Utc};
use civitas_auth::authorizer::Authorized;
use civitas_http::negotiation::{self, ContextSource};
use civitas_http::{ErrorCode, Problem};
use civitas_ngsild::ErrorType;
use civitas_ngsild::canonical::format_timestamp;
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::registration;
use civitas_ngsild::subscription::{
    self, Delivery, Maintained, NOTIFICATION_TYPE, Status, Subscription, Trigger, UNEVALUATED,
};
use civitas_store::{Documents, RegistrationRecord, Store};
use serde_json::{Map, Value};

use crate::AppState;
use crate::clock::Clock;
use crate::contexts::Resolved;
use crate::registrations;

/// How long a subscriber may take to answer a notification.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often periodic subscriptions (`timeInterval`) are checked.
const TICK: Duration = Duration::from_secs(1);

/// The member of the stored body that keeps the @context notifications are compacted with.
const CONTEXT_MEMBER: &str = "@context";

/// A stored subscription, decoded.
#[derive(Debug, Clone)]
pub struct Stored {
    pub canonical: Map<String, Value>,
    pub subscription: Subscription,
    /// The creator's @context (`null`: the core context).
    pub context: Value,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
}

type Key = (String, String);

pub struct RegistrationSubscriptions {
    store: Store,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    deliveries: Mutex<HashMap<Key, Delivery>>,
    /// The subscriptions with a `timeInterval`, which the ticker notifies.
    periodic: Mutex<HashSet<Key>>,
}

impl std::fmt::Debug for RegistrationSubscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationSubscriptions")
            .finish_non_exhaustive()
    }
}

fn store_problem(error: civitas_store::Error) -> Problem {
    match error {
        civitas_store::Error::AlreadyExists => Problem::new(
            ErrorType::AlreadyExists,
            "a subscription with this id already exists",
        ),
        other => Problem::internal(&other),
    }
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!(
        "no context source registration subscription {id} exists"
    ))
}

fn forbidden() -> Problem {
    Problem::new(
        ErrorCode::Forbidden,
        "the token does not allow reading registrations of these entity types",
    )
}

/// Refuses members that select by something not evaluated yet (501, never ignored).
fn refuse_unevaluated(canonical: &Map<String, Value>) -> Result<(), Problem> {
    // q and csf are read with the creator's @context when registrations are matched; one that
    // does not parse is refused here.
    for name in ["q", "csf"] {
        match canonical.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                civitas_ngsild::q::Query::parse(
                    text,
                    &civitas_ngsild::context::ActiveContext::empty(),
                )?;
            }
            Some(_) => return Err(Problem::bad_request(format!("{name} must be a string"))),
        }
    }
    for name in UNEVALUATED {
        if canonical.get(*name).is_some_and(|v| !v.is_null()) {
            return Err(Problem::new(
                ErrorCode::NotImplemented,
                format!(
                    "{name} in a context source registration subscription is not implemented yet"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `auth` may read everything `subscription` can be notified of.
fn covers(auth: &Authorized, subscription: &Subscription) -> bool {
    registrations::covers(auth, &subscription.types(), true)
}

impl RegistrationSubscriptions {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> RegistrationSubscriptions {
        RegistrationSubscriptions {
            store,
            clock,
            client: reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .build()
                .unwrap_or_default(),
            deliveries: Mutex::new(HashMap::new()),
            periodic: Mutex::new(HashSet::new()),
        }
    }

    fn decode(record: RegistrationRecord) -> Result<Stored, Problem> {
        let mut canonical: Map<String, Value> =
            serde_json::from_str(&record.body).map_err(|e| Problem::internal(&e))?;
        let context = canonical
            .shift_remove(CONTEXT_MEMBER)
            .unwrap_or(Value::Null);
        let subscription = subscription::decode(&canonical).map_err(Problem::from)?;
        Ok(Stored {
            canonical,
            subscription,
            context,
            created_at: record.created_at,
            modified_at: record.modified_at,
        })
    }

    fn record(
        id: &str,
        canonical: &Map<String, Value>,
        context: &Value,
        created_at: DateTime<Utc>,
        modified_at: DateTime<Utc>,
    ) -> RegistrationRecord {
        let mut body = canonical.clone();
        body.insert(CONTEXT_MEMBER.to_owned(), context.clone());
        RegistrationRecord {
            id: id.to_owned(),
            body: Value::Object(body).to_string(),
            created_at,
            modified_at,
        }
    }

    /// The members the server maintains, for a rendering.
    pub fn maintained(&self, tenant: &str, stored: &Stored, system: bool) -> Maintained {
        Maintained {
            status: stored.subscription.status(self.clock.now()),
            delivery: self.delivery(tenant, &stored.subscription.id),
            system: system.then_some((stored.created_at, stored.modified_at)),
        }
    }

    fn delivery(&self, tenant: &str, id: &str) -> Delivery {
        self.deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(tenant.to_owned(), id.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Takes the moment the next notification of subscription `id` may go: now, or `throttling`
    /// seconds after the one before (even one still under way), and notes it as the last one.
    fn reserve(
        &self,
        tenant: &str,
        id: &str,
        throttling: Option<f64>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        self.with_delivery(tenant, id, |delivery| {
            let at = match (throttling, delivery.last_notification) {
                (Some(seconds), Some(last)) => {
                    now.max(last + chrono::Duration::milliseconds((seconds * 1000.0) as i64))
                }
                _ => now,
            };
            delivery.last_notification = Some(at);
            at
        })
    }

    fn with_delivery<R>(&self, tenant: &str, id: &str, f: impl FnOnce(&mut Delivery) -> R) -> R {
        let mut deliveries = self
            .deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(deliveries
            .entry((tenant.to_owned(), id.to_owned()))
            .or_default())
    }

    fn note_delivery(&self, tenant: &str, id: &str, at: DateTime<Utc>, ok: bool) {
        self.with_delivery(tenant, id, |delivery| {
            delivery.times_sent += 1;
            delivery.last_notification = Some(at);
            if ok {
                delivery.last_success = Some(at);
            } else {
                delivery.times_failed += 1;
                delivery.last_failure = Some(at);
            }
        });
    }

    fn track_periodic(&self, tenant: &str, stored: &Stored) {
        let key = (tenant.to_owned(), stored.subscription.id.clone());
        let mut periodic = self
            .periodic
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if stored.subscription.time_interval.is_some() {
            periodic.insert(key);
        } else {
            periodic.remove(&key);
        }
    }

    fn forget(&self, tenant: &str, id: &str) {
        let key = (tenant.to_owned(), id.to_owned());
        self.periodic
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&key);
        self.deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&key);
    }

    /// Creates a subscription (clause 5.11.2); `context` is the request's, which notifications
    /// are compacted with.
    pub async fn create(
        &self,
        auth: &Authorized,
        payload: &Value,
        context: &Resolved,
    ) -> Result<Stored, Problem> {
        let payload = payload.as_object().ok_or_else(|| {
            Problem::invalid_request("the payload must be a JSON object (one subscription)")
        })?;
        let mut canonical = subscription::expand(payload, &context.active, false)?;
        refuse_unevaluated(&canonical)?;
        let now = self.clock.now();
        if let Some(expires) = canonical.get("expiresAt").and_then(Value::as_str)
            && DateTime::parse_from_rfc3339(expires).is_ok_and(|at| at <= now)
        {
            return Err(Problem::bad_request("expiresAt is in the past"));
        }
        let id = match canonical.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let id = format!("urn:ngsi-ld:Subscription:{}", uuid::Uuid::new_v4());
                canonical.shift_insert(0, "id".to_owned(), Value::from(id.clone()));
                id
            }
        };
        let decoded = subscription::decode(&canonical).map_err(Problem::from)?;
        auth.note_types(&decoded.types());
        if !covers(auth, &decoded) {
            return Err(forbidden());
        }
        let record = Self::record(&id, &canonical, &context.value, now, now);
        self.store
            .put_document(Documents::RegistrationSubscriptions, auth.tenant(), &record)
            .await
            .map_err(store_problem)?;
        let stored = Stored {
            canonical,
            subscription: decoded,
            context: context.value.clone(),
            created_at: now,
            modified_at: now,
        };
        self.track_periodic(auth.tenant(), &stored);
        Ok(stored)
    }

    /// The subscription `id`, if the caller may see it (clause 5.11.4).
    pub async fn get(&self, auth: &Authorized, id: &str) -> Result<Stored, Problem> {
        let record = self
            .store
            .get_document(Documents::RegistrationSubscriptions, auth.tenant(), id)
            .await
            .map_err(store_problem)?
            .ok_or_else(|| not_found(id))?;
        let stored = Self::decode(record)?;
        if !covers(auth, &stored.subscription) {
            auth.note_hidden();
            return Err(not_found(id));
        }
        auth.note_types(&stored.subscription.types());
        Ok(stored)
    }

    /// Every subscription the caller may see, in id order (clause 5.11.5).
    pub async fn list(&self, auth: &Authorized) -> Result<Vec<Stored>, Problem> {
        let mut out = Vec::new();
        for stored in self.all(auth.tenant()).await? {
            if covers(auth, &stored.subscription) {
                auth.note_types(&stored.subscription.types());
                out.push(stored);
            }
        }
        Ok(out)
    }

    async fn all(&self, tenant: &str) -> Result<Vec<Stored>, Problem> {
        self.store
            .list_documents(Documents::RegistrationSubscriptions, tenant)
            .await
            .map_err(store_problem)?
            .into_iter()
            .map(Self::decode)
            .collect()
    }

    /// Applies an update fragment (clause 5.11.3); returns the subscription as updated.
    pub async fn update(
        &self,
        auth: &Authorized,
        id: &str,
        fragment: &Value,
        ctx: &ActiveContext,
    ) -> Result<Stored, Problem> {
        let fragment = fragment
            .as_object()
            .ok_or_else(|| Problem::invalid_request("the payload must be a JSON object"))?;
        let mut fragment = subscription::expand(fragment, ctx, true)?;
        if let Some(given) = fragment.shift_remove("id")
            && given.as_str() != Some(id)
        {
            return Err(Problem::bad_request(format!(
                "the payload's id {given} is not the subscription's id {id}"
            )));
        }
        fragment.shift_remove("type");
        if fragment.is_empty() {
            return Err(Problem::bad_request("the update names no member"));
        }
        refuse_unevaluated(&fragment)?;
        // Retried when another update lands between the read and the write.
        for _ in 0..8 {
            let stored = self.get(auth, id).await?;
            let merged = subscription::merge(&stored.canonical, &fragment)?;
            let decoded = subscription::decode(&merged).map_err(Problem::from)?;
            auth.note_types(&decoded.types());
            if !covers(auth, &decoded) {
                return Err(forbidden());
            }
            let mut modified_at = self.clock.now();
            if modified_at <= stored.modified_at {
                modified_at = stored.modified_at + chrono::Duration::microseconds(1);
            }
            let record = Self::record(id, &merged, &stored.context, stored.created_at, modified_at);
            if self
                .store
                .replace_document(
                    Documents::RegistrationSubscriptions,
                    auth.tenant(),
                    &record,
                    stored.modified_at,
                )
                .await
                .map_err(store_problem)?
            {
                let updated = Stored {
                    canonical: merged,
                    subscription: decoded,
                    context: stored.context,
                    created_at: stored.created_at,
                    modified_at,
                };
                self.track_periodic(auth.tenant(), &updated);
                return Ok(updated);
            }
        }
        Err(Problem::new(
            ErrorType::InternalError,
            "the subscription is being changed by other requests; try again",
        ))
    }

    /// Deletes a subscription (clause 5.11.6).
    pub async fn delete(&self, auth: &Authorized, id: &str) -> Result<(), Problem> {
        self.get(auth, id).await?;
        if self
            .store
            .delete_document(Documents::RegistrationSubscriptions, auth.tenant(), id)
            .await
            .map_err(store_problem)?
        {
            self.forget(auth.tenant(), id);
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// Remembers the periodic subscriptions stored before this start.
    pub async fn load_periodic(&self) -> Result<(), civitas_store::Error> {
        for tenant in self
            .store
            .document_tenants(Documents::RegistrationSubscriptions)
            .await?
        {
            for record in self
                .store
                .list_documents(Documents::RegistrationSubscriptions, &tenant)
                .await?
            {
                if let Ok(stored) = Self::decode(record) {
                    self.track_periodic(&tenant, &stored);
                }
            }
        }
        Ok(())
    }
}

/// The creator's @context of a subscription, resolved (the core context when it cannot be).
async fn context_of(state: &AppState, stored: &Stored) -> Resolved {
    if stored.context.is_null() {
        return state.contexts.core().clone();
    }
    let source = match &stored.context {
        Value::String(url) => ContextSource::Link(url.clone()),
        other => ContextSource::Inline(other.clone()),
    };
    match state.contexts.resolve(&source).await {
        Ok(context) => context,
        Err(problem) => {
            tracing::warn!(
                subscription = stored.subscription.id,
                "the subscription's @context cannot be resolved, the core context is used: {}",
                problem.detail
            );
            state.contexts.core().clone()
        }
    }
}

/// A subscription's `q` and `csf` (clause 5.11.7: both against the registrations' own
/// properties), read with its creator's @context; a filter stored before that no longer parses
/// is left out (and logged).
async fn q_of(state: &AppState, stored: &Stored) -> Vec<civitas_ngsild::q::Query> {
    let texts: Vec<&str> = ["q", "csf"]
        .iter()
        .filter_map(|name| stored.canonical.get(*name)?.as_str())
        .collect();
    if texts.is_empty() {
        return Vec::new();
    }
    let context = context_of(state, stored).await;
    texts
        .into_iter()
        .filter_map(
            |text| match civitas_ngsild::q::Query::parse(text, &context.active) {
                Ok(q) => Some(q),
                Err(error) => {
                    tracing::warn!(subscription = stored.subscription.id, "{error}");
                    None
                }
            },
        )
        .collect()
}

/// Whether `subscription` (with its `q` and `csf`) matches the registration now.
fn selects(
    subscription: &Subscription,
    filters: &[civitas_ngsild::q::Query],
    registration: &registrations::Stored,
    now: DateTime<Utc>,
) -> bool {
    !registration.registration.expired(now)
        && subscription.matches(&registration.registration)
        && filters
            .iter()
            .all(|q| q.matches_members(&registration.canonical))
}

/// The registrations of `tenant` that the subscription matches now, unexpired, in id order.
async fn matching_registrations(
    state: &AppState,
    tenant: &str,
    stored: &Stored,
) -> Vec<registrations::Stored> {
    let subscription = &stored.subscription;
    let q = q_of(state, stored).await;
    let now = state.clock.now();
    match state.registrations.all_stored(tenant).await {
        Ok(all) => all
            .iter()
            .filter(|r| selects(subscription, &q, r, now))
            .cloned()
            .collect(),
        Err(problem) => {
            tracing::warn!(
                tenant,
                subscription = subscription.id,
                "cannot list registrations to notify: {}",
                problem.detail
            );
            Vec::new()
        }
    }
}

/// After a subscription was created or changed: the registrations it matches now, as
/// `newlyMatching` (clause 5.11.7). Periodic subscriptions are left to the ticker.
pub fn subscribed(state: web::Data<AppState>, tenant: String, stored: Stored) {
    if stored.subscription.time_interval.is_some()
        || stored.subscription.status(state.clock.now()) != Status::Active
    {
        return;
    }
    tokio::spawn(async move {
        let data = matching_registrations(&state, &tenant, &stored).await;
        if !data.is_empty() {
            notify(&state, &tenant, &stored, &data, Trigger::NewlyMatching).await;
        }
    });
}

/// After a registration of `tenant` was created (`before` is `None`), updated, or deleted
/// (`after` is `None`): notifies every active subscription it concerns (clause 5.11.7).
pub fn registration_changed(
    state: web::Data<AppState>,
    tenant: String,
    before: Option<registrations::Stored>,
    after: Option<registrations::Stored>,
) {
    tokio::spawn(async move {
        let subscriptions = match state.registration_subscriptions.all(&tenant).await {
            Ok(all) => all,
            Err(problem) => {
                tracing::warn!(
                    tenant,
                    "cannot list subscriptions to notify: {}",
                    problem.detail
                );
                return;
            }
        };
        let now = state.clock.now();
        for stored in subscriptions {
            let subscription = &stored.subscription;
            if subscription.time_interval.is_some() || subscription.status(now) != Status::Active {
                continue;
            }
            let q = q_of(&state, &stored).await;
            let matched = |registration: &Option<registrations::Stored>| {
                registration
                    .as_ref()
                    .is_some_and(|r| selects(subscription, &q, r, now))
            };
            let Some(trigger) = Trigger::of(matched(&before), matched(&after)) else {
                continue;
            };
            // The latest information: the registration as it is now, or as it was when deleted.
            let Some(data) = after.as_ref().or(before.as_ref()) else {
                continue;
            };
            notify(
                &state,
                &tenant,
                &stored,
                std::slice::from_ref(data),
                trigger,
            )
            .await;
        }
    });
}

/// Notifies the periodic subscriptions (`timeInterval`) that are due, every second, for as long
/// as the service runs (the task holds the state weakly: a stopped service is let go).
pub fn start_ticker(state: &web::Data<AppState>) {
    let weak = Arc::downgrade(&state.clone().into_inner());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else {
                return;
            };
            let due: Vec<Key> = state
                .registration_subscriptions
                .periodic
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .cloned()
                .collect();
            for (tenant, id) in due {
                notify_periodic(&state, &tenant, &id).await;
            }
        }
    });
}

async fn notify_periodic(state: &AppState, tenant: &str, id: &str) {
    let service = &state.registration_subscriptions;
    let record = match service
        .store
        .get_document(Documents::RegistrationSubscriptions, tenant, id)
        .await
    {
        Ok(Some(record)) => record,
        Ok(None) => {
            service.forget(tenant, id);
            return;
        }
        Err(error) => {
            tracing::warn!(
                tenant,
                subscription = id,
                "cannot read a subscription: {error}"
            );
            return;
        }
    };
    let Ok(stored) = RegistrationSubscriptions::decode(record) else {
        return;
    };
    let now = state.clock.now();
    let Some(interval) = stored.subscription.time_interval else {
        service.forget(tenant, id);
        return;
    };
    if stored.subscription.status(now) != Status::Active {
        return;
    }
    let last = service.delivery(tenant, id).last_notification;
    let due =
        last.is_none_or(|last| (now - last).num_milliseconds() as f64 >= interval * 1000.0 - 50.0);
    if !due {
        return;
    }
    let data = matching_registrations(state, tenant, &stored).await;
    if data.is_empty() {
        return;
    }
    let trigger = if last.is_none() {
        Trigger::NewlyMatching
    } else {
        Trigger::Updated
    };
    notify(state, tenant, &stored, &data, trigger).await;
}

/// A registration as a notification carries it: only the `information` elements the subscription
/// is about (clause 5.11.7), unless none is (a registration that no longer matches is sent whole).
fn relevant(
    subscription: &Subscription,
    stored: &registrations::Stored,
    context: &ActiveContext,
) -> Map<String, Value> {
    let mut out = registration::render(&stored.canonical, context, None);
    let keep: Vec<bool> = stored
        .registration
        .information
        .iter()
        .map(|info| subscription.matches_info(info))
        .collect();
    if keep.iter().any(|k| *k)
        && let Some(Value::Array(information)) = out.get_mut("information")
        && information.len() == keep.len()
    {
        let mut index = 0;
        information.retain(|_| {
            index += 1;
            keep[index - 1]
        });
    }
    out
}

/// Sends one notification and records how it went.
async fn notify(
    state: &AppState,
    tenant: &str,
    stored: &Stored,
    data: &[registrations::Stored],
    trigger: Trigger,
) {
    let service = &state.registration_subscriptions;
    let subscription = &stored.subscription;
    let at = service.reserve(
        tenant,
        &subscription.id,
        subscription.throttling,
        state.clock.now(),
    );
    if let Ok(wait) = (at - state.clock.now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let context = context_of(state, stored).await;
    let now = state.clock.now();
    let mut body = Map::new();
    body.insert(
        "id".to_owned(),
        Value::from(format!("urn:ngsi-ld:Notification:{}", uuid::Uuid::new_v4())),
    );
    body.insert("type".to_owned(), Value::from(NOTIFICATION_TYPE));
    body.insert(
        "subscriptionId".to_owned(),
        Value::from(subscription.id.clone()),
    );
    body.insert("notifiedAt".to_owned(), Value::from(format_timestamp(&now)));
    body.insert(
        "data".to_owned(),
        Value::Array(
            data.iter()
                .map(|r| Value::Object(relevant(subscription, r, &context.active)))
                .collect(),
        ),
    );
    body.insert("triggerReason".to_owned(), Value::from(trigger.name()));
    let mut request = service
        .client
        .post(&subscription.endpoint)
        .header(reqwest::header::CONTENT_TYPE, subscription.accept.as_str());
    if subscription.accept == negotiation::JSON_LD {
        body.insert("@context".to_owned(), context.value.clone());
    } else {
        request = request.header(
            reqwest::header::LINK,
            negotiation::context_link(&context.link_url),
        );
    }
    if !tenant.is_empty() {
        request = request.header("NGSILD-Tenant", tenant);
    }
    for (name, value) in &subscription.receiver_info {
        request = request.header(name.as_str(), value.as_str());
    }
    let ok = match request.body(Value::Object(body).to_string()).send().await {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            tracing::info!(
                subscription = subscription.id,
                status = response.status().as_u16(),
                "the subscriber refused a notification"
            );
            false
        }
        Err(error) => {
            tracing::info!(
                subscription = subscription.id,
                "a notification could not be delivered: {error}"
            );
            false
        }
    };
    service.note_delivery(tenant, &subscription.id, at, ok);
}
