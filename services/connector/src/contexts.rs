//! Obtaining and caching JSON-LD @contexts (ETSI GS CIM 009 clauses 5.5.7 and 5.13).
//!
//! A request's @context is resolved to a processed [`ActiveContext`] once and cached by its text.
//! Documents come, in this order, from: the bundled core contexts, the configured preload map
//! (URL → local file, for air-gapped sites), contexts hosted by this service
//! (`/ngsi-ld/v1/jsonldContexts`), the cache of remote documents, and finally the network, with a
//! timeout and a size limit. A context that cannot be had is a 503 `LdContextNotAvailable`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use civitas_http::Problem;
use civitas_http::negotiation::ContextSource;
use civitas_ngsild::context::{self, ActiveContext};
use civitas_ngsild::{Error as ModelError, ErrorType};
use civitas_store::{ContextRecord, Store};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::settings::ContextSettings;

/// The URLs under which the core context is published, all answered from the bundled copies.
const CORE_URLS: &[(&str, &str)] = &[
    (
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        context::CORE_CONTEXT_V1_8,
    ),
    (
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
        context::CORE_CONTEXT_V1_8,
    ),
    (
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld",
        context::CORE_CONTEXT_V1_9,
    ),
];

/// How many distinct request contexts stay processed in memory.
const PROCESSED_CACHE_SIZE: usize = 1_024;

/// The kind of a context known to this service (clause 5.13.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    /// Uploaded by a client and served by this service.
    Hosted,
    /// Fetched from elsewhere and cached.
    Cached,
    /// Created by this service from an inline @context of a request.
    ImplicitlyCreated,
}

impl ContextKind {
    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Hosted => "Hosted",
            ContextKind::Cached => "Cached",
            ContextKind::ImplicitlyCreated => "ImplicitlyCreated",
        }
    }

    pub fn parse(s: &str) -> Option<ContextKind> {
        [
            ContextKind::Hosted,
            ContextKind::Cached,
            ContextKind::ImplicitlyCreated,
        ]
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(s))
    }
}

/// A context document known to this service, with its bookkeeping (clause 5.13.2 details).
#[derive(Debug, Clone)]
pub struct KnownContext {
    pub id: String,
    pub url: String,
    pub kind: ContextKind,
    pub document: Arc<Value>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub hits: u64,
}

/// A request's @context, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub active: Arc<ActiveContext>,
    /// What a JSON-LD response puts in its `@context` member.
    pub value: Value,
    /// What a JSON response points to in its Link header.
    pub link_url: String,
}

/// Resolves request contexts; shared by all workers.
pub struct ContextResolver {
    settings: ContextSettings,
    bundled: HashMap<String, Arc<Value>>,
    known: Mutex<HashMap<String, KnownContext>>,
    processed: Mutex<HashMap<String, Arc<ActiveContext>>>,
    core: Resolved,
    client: reqwest::Client,
    store: Store,
    clock: Arc<dyn Clock>,
    hosted_base: String,
    /// Recent failed fetches: a URL that just failed is not fetched again for a while, so that
    /// requests naming it answer at once instead of each waiting out the timeout.
    failures: Mutex<HashMap<String, (DateTime<Utc>, Problem)>>,
}

/// How long a failed fetch is remembered.
const FAILURE_MEMORY: chrono::Duration = chrono::Duration::seconds(30);

/// How many failed URLs are remembered at most.
const FAILURE_MEMORY_SIZE: usize = 1_024;

impl std::fmt::Debug for ContextResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextResolver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Errors while setting the resolver up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("preloaded context {url}: {detail}")]
    Preload { url: String, detail: String },
    #[error(transparent)]
    Store(#[from] civitas_store::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl ContextResolver {
    /// Loads the bundled and preloaded documents and the hosted contexts kept in the store.
    pub async fn new(
        settings: ContextSettings,
        store: Store,
        clock: Arc<dyn Clock>,
        public_url: &str,
    ) -> Result<ContextResolver, SetupError> {
        let mut bundled = HashMap::new();
        for (url, text) in CORE_URLS {
            let document: Value = serde_json::from_str(text).map_err(|e| SetupError::Preload {
                url: (*url).to_owned(),
                detail: e.to_string(),
            })?;
            bundled.insert((*url).to_owned(), Arc::new(document));
        }
        for (url, path) in &settings.preload {
            let text = std::fs::read_to_string(path).map_err(|e| SetupError::Preload {
                url: url.clone(),
                detail: format!("{}: {e}", path.display()),
            })?;
            let document: Value = serde_json::from_str(&text).map_err(|e| SetupError::Preload {
                url: url.clone(),
                detail: e.to_string(),
            })?;
            if document.get("@context").is_none() {
                return Err(SetupError::Preload {
                    url: url.clone(),
                    detail: "the file has no @context member".to_owned(),
                });
            }
            bundled.insert(url.clone(), Arc::new(document));
        }
        let core_active = {
            let mut loader = |url: &str| {
                bundled
                    .get(url)
                    .cloned()
                    .ok_or_else(|| ModelError::ContextNotLoaded(url.to_owned()))
            };
            ActiveContext::empty()
                .process(
                    &Value::String(context::CORE_CONTEXT_URL.to_owned()),
                    &mut loader,
                )
                .map_err(|e| SetupError::Preload {
                    url: context::CORE_CONTEXT_URL.to_owned(),
                    detail: e.to_string(),
                })?
        };
        let core = Resolved {
            active: Arc::new(core_active),
            value: Value::String(context::CORE_CONTEXT_URL.to_owned()),
            link_url: context::CORE_CONTEXT_URL.to_owned(),
        };
        let mut known = HashMap::new();
        let started = clock.now();
        for (index, (url, document)) in bundled.iter().enumerate() {
            known.insert(url.clone(), bundled_entry(index, url, document, started));
        }
        for record in store.list_contexts().await? {
            let Ok(document) = serde_json::from_str::<Value>(&record.body) else {
                tracing::warn!(id = %record.id, "skipping a stored context that is not valid JSON");
                continue;
            };
            let kind = ContextKind::parse(&record.kind).unwrap_or(ContextKind::Hosted);
            known.insert(
                record.url.clone(),
                KnownContext {
                    id: record.id,
                    url: record.url,
                    kind,
                    document: Arc::new(document),
                    created_at: record.created_at,
                    last_used_at: None,
                    hits: 0,
                },
            );
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.fetch_timeout_ms))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()?;
        Ok(ContextResolver {
            settings,
            bundled,
            known: Mutex::new(known),
            processed: Mutex::new(HashMap::new()),
            core,
            client,
            store,
            clock,
            failures: Mutex::new(HashMap::new()),
            hosted_base: format!(
                "{}/ngsi-ld/v1/jsonldContexts/",
                public_url.trim_end_matches('/')
            ),
        })
    }

    /// The core context alone.
    pub fn core(&self) -> &Resolved {
        &self.core
    }

    /// Resolves a request's @context (the core context is always applied last, so it wins).
    pub async fn resolve(&self, source: &ContextSource) -> Result<Resolved, Problem> {
        let (key, value, link_url) = match source {
            ContextSource::Core => return Ok(self.core.clone()),
            ContextSource::Link(url) => (url.clone(), Value::String(url.clone()), url.clone()),
            ContextSource::Inline(value) => (
                value.to_string(),
                value.clone(),
                context::CORE_CONTEXT_URL.to_owned(),
            ),
        };
        if let Value::String(url) = &value
            && url == context::CORE_CONTEXT_URL
        {
            return Ok(self.core.clone());
        }
        if let Some(active) = self
            .processed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
        {
            self.touch_all(&value);
            return Ok(Resolved {
                active,
                value,
                link_url,
            });
        }
        let with_core = match &value {
            Value::Array(items) => {
                let mut items = items.clone();
                items.push(Value::String(context::CORE_CONTEXT_URL.to_owned()));
                Value::Array(items)
            }
            single => json!([single, context::CORE_CONTEXT_URL]),
        };
        let mut fetched: HashMap<String, Arc<Value>> = HashMap::new();
        for _ in 0..64 {
            let outcome = {
                let mut loader = |url: &str| self.lookup(url, &fetched);
                ActiveContext::empty().process(&with_core, &mut loader)
            };
            match outcome {
                Ok(active) => {
                    let active = Arc::new(active);
                    let mut processed = self
                        .processed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if processed.len() >= PROCESSED_CACHE_SIZE {
                        processed.clear();
                    }
                    processed.insert(key, active.clone());
                    drop(processed);
                    self.touch_all(&value);
                    return Ok(Resolved {
                        active,
                        value,
                        link_url,
                    });
                }
                Err(ModelError::ContextNotLoaded(url)) => {
                    let document = self.fetch(&url).await?;
                    fetched.insert(url, document);
                }
                Err(other) => return Err(Problem::from(other)),
            }
        }
        Err(Problem::bad_request(
            "the @context includes too many remote contexts",
        ))
    }

    fn lookup(
        &self,
        url: &str,
        fetched: &HashMap<String, Arc<Value>>,
    ) -> Result<Arc<Value>, ModelError> {
        if let Some(document) = self.bundled.get(url).or_else(|| fetched.get(url)) {
            return Ok(document.clone());
        }
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(context) = known.get(url) {
            return Ok(context.document.clone());
        }
        if let Some(id) = url.strip_prefix(&self.hosted_base)
            && let Some(context) = known.values().find(|c| c.id == id)
        {
            return Ok(context.document.clone());
        }
        Err(ModelError::ContextNotLoaded(url.to_owned()))
    }

    /// Counts a use of every known context a request's @context names.
    fn touch_all(&self, value: &Value) {
        let urls: Vec<&str> = match value {
            Value::String(url) => vec![url],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => return,
        };
        let now = self.clock.now();
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for url in urls {
            if let Some(document) = self.bundled.get(url)
                && !known.contains_key(url)
            {
                let entry = bundled_entry(known.len(), url, document, now);
                known.insert(url.to_owned(), entry);
            }
            let key = match url.strip_prefix(&self.hosted_base) {
                Some(id) => known.values().find(|c| c.id == id).map(|c| c.url.clone()),
                None => Some(url.to_owned()),
            };
            if let Some(context) = key.and_then(|k| known.get_mut(&k)) {
                context.hits += 1;
                context.last_used_at = Some(now);
            }
        }
    }

    /// Fetches a remote context document, caching it.
    /// Fetches a remote context document, unless the same URL failed moments ago.
    async fn fetch(&self, url: &str) -> Result<Arc<Value>, Problem> {
        let now = self.clock.now();
        if let Some((at, problem)) = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(url)
            && now - *at < FAILURE_MEMORY
        {
            return Err(problem.clone());
        }
        let outcome = self.fetch_now(url).await;
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match &outcome {
            Ok(_) => {
                failures.remove(url);
            }
            Err(problem) => {
                if failures.len() >= FAILURE_MEMORY_SIZE {
                    failures.clear();
                }
                failures.insert(url.to_owned(), (now, problem.clone()));
            }
        }
        outcome
    }

    /// Fetches a remote context document now, caching it.
    async fn fetch_now(&self, url: &str) -> Result<Arc<Value>, Problem> {
        let unavailable = |reason: String| {
            Problem::new(
                ErrorType::LdContextNotAvailable,
                format!("the @context {url} could not be obtained: {reason}"),
            )
        };
        if !self.settings.fetch_remote {
            return Err(unavailable(
                "fetching remote contexts is disabled; add it to contexts.preload".to_owned(),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|_| {
            Problem::bad_request(format!("the @context URL {url:?} is not a valid URL"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(unavailable("only http(s) URLs can be fetched".to_owned()));
        }
        if !self.settings.fetch_allow.is_empty()
            && !self
                .settings
                .fetch_allow
                .iter()
                .any(|prefix| url.starts_with(prefix.as_str()))
        {
            return Err(unavailable(
                "the URL is outside contexts.fetch_allow; add it to contexts.preload".to_owned(),
            ));
        }
        let response = self
            .client
            .get(parsed)
            .header(
                reqwest::header::ACCEPT,
                "application/ld+json, application/json;q=0.9",
            )
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "the server answered {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| unavailable(e.to_string()))?;
            if body.len() + chunk.len() > self.settings.max_bytes {
                return Err(unavailable(format!(
                    "the document is larger than {} bytes",
                    self.settings.max_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let document: Value =
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("not JSON: {e}")))?;
        if document.get("@context").is_none() {
            return Err(unavailable(
                "the document has no @context member".to_owned(),
            ));
        }
        let document = Arc::new(document);
        let now = self.clock.now();
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = known.get_mut(url) {
            entry.document = document.clone();
            return Ok(document);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        known.insert(
            url.to_owned(),
            KnownContext {
                id,
                url: url.to_owned(),
                kind: ContextKind::Cached,
                document: document.clone(),
                created_at: now,
                last_used_at: None,
                hits: 0,
            },
        );
        Ok(document)
    }

    /// Stores a context uploaded by a client (clause 5.13.2 "Add @context") and returns its URL.
    pub async fn add_hosted(&self, context: Value) -> Result<KnownContext, Problem> {
        let document = json!({ "@context": context });
        let id = uuid::Uuid::new_v4().simple().to_string();
        let url = format!("{}{id}", self.hosted_base);
        let now = self.clock.now();
        let record = ContextRecord {
            id: id.clone(),
            url: url.clone(),
            kind: ContextKind::Hosted.name().to_owned(),
            body: document.to_string(),
            created_at: now,
        };
        self.store
            .put_context(&record)
            .await
            .map_err(|e| Problem::internal(&e))?;
        let known = KnownContext {
            id,
            url: url.clone(),
            kind: ContextKind::Hosted,
            document: Arc::new(document),
            created_at: now,
            last_used_at: None,
            hits: 0,
        };
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url, known.clone());
        Ok(known)
    }

    /// All known contexts, optionally of one kind, ordered by URL.
    pub fn list(&self, kind: Option<ContextKind>) -> Vec<KnownContext> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<KnownContext> = known
            .values()
            .filter(|c| kind.is_none_or(|k| c.kind == k))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.url.cmp(&b.url));
        list
    }

    /// A known context by its local id or its URL.
    pub fn get(&self, id_or_url: &str) -> Option<KnownContext> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .get(id_or_url)
            .or_else(|| known.values().find(|c| c.id == id_or_url))
            .cloned()
    }

    /// Deletes a hosted context or drops a cached one (clause 5.13.5). With `reload`, a cached
    /// context is fetched again instead (from its local copy when it is bundled or preloaded); a
    /// failed reload keeps the copy already held.
    pub async fn delete(&self, id_or_url: &str, reload: bool) -> Result<(), Problem> {
        let Some(context) = self.get(id_or_url) else {
            if reload {
                return Err(Problem::bad_request(format!(
                    "no cached @context {id_or_url} is known here to reload"
                )));
            }
            return Err(Problem::not_found(format!(
                "no @context {id_or_url} is known here"
            )));
        };
        match (context.kind, reload) {
            (ContextKind::Hosted | ContextKind::ImplicitlyCreated, true) => {
                return Err(Problem::bad_request("only cached contexts can be reloaded"));
            }
            (ContextKind::Hosted | ContextKind::ImplicitlyCreated, false) => {
                self.store
                    .delete_context(&context.id)
                    .await
                    .map_err(|e| Problem::internal(&e))?;
                self.known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&context.url);
            }
            (ContextKind::Cached, false) => {
                if CORE_URLS.iter().any(|(url, _)| *url == context.url) {
                    return Err(Problem::bad_request(
                        "the NGSI-LD core context cannot be deleted; it can only be reloaded",
                    ));
                }
                self.known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&context.url);
            }
            (ContextKind::Cached, true) => {
                let document = match self.bundled.get(&context.url) {
                    Some(document) => document.clone(),
                    None => self.fetch_now(&context.url).await?,
                };
                let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = known.get_mut(&context.url) {
                    entry.document = document;
                    entry.created_at = self.clock.now();
                }
            }
        }
        // Processed contexts may have used the document.
        self.processed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }
}

fn bundled_entry(
    index: usize,
    url: &str,
    document: &Arc<Value>,
    now: DateTime<Utc>,
) -> KnownContext {
    KnownContext {
        id: format!("preloaded-{index}"),
        url: url.to_owned(),
        kind: ContextKind::Cached,
        document: document.clone(),
        created_at: now,
        last_used_at: None,
        hits: 0,
    }
}
