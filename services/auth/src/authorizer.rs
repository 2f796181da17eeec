//! The connector's authorizer: a token (or no token) and a request in, a [`Grant`] or a refusal out.
//!
//! Steps, in order: verify the token against the department's root key (else 401); refuse it if
//! any block's revocation id is revoked (401, the caller checks [`Grant::revocation_ids`] against its
//! list); refuse it if the earliest `expires` of any block has passed (401); run the datalog world —
//! the token's blocks, the request's facts (`operation`, `tenant`, `time`, `department`), the
//! department's own policy code and the default policy — with explicit limits (else 403); then read
//! the grant: rights and attribute allow-list from the authority block only, narrowed by every
//! block's restrictions.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{self, Rule};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, PublicKey};
use chrono::{DateTime, Utc};

use crate::Error;
use crate::memo::TokenMemo;
use crate::token::ANY;

/// The operations a token can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Write,
    Admin,
    Audit,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Admin => "admin",
            Operation::Audit => "audit",
        }
    }

    fn parse(name: &str) -> Option<Operation> {
        [
            Operation::Read,
            Operation::Write,
            Operation::Admin,
            Operation::Audit,
        ]
        .into_iter()
        .find(|op| op.name() == name)
    }
}

/// What is being asked.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The tenant addressed; `None` is the default tenant.
    pub tenant: Option<&'a str>,
    /// The purpose the caller declares for this request, if any.
    pub purpose: Option<&'a str>,
    /// The request's id: a token a broker bound to one request (`check if request_id(…)`)
    /// is checked against it.
    pub request_id: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// What a request names, once it is parsed: expanded entity types, entity ids and expanded
/// attribute names. They become `entity_type`, `entity_id` and `attribute` facts for the token's
/// checks and the department's policy ([`Authorized::check_names`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Names<'a> {
    pub entity_types: &'a [String],
    pub entity_ids: &'a [String],
    pub attributes: &'a [String],
}

impl Request<'static> {
    /// A request for `operation` on the default tenant that names nothing in particular.
    pub fn new(operation: Operation, now: DateTime<Utc>) -> Request<'static> {
        Request {
            operation,
            tenant: None,
            purpose: None,
            now,
            request_id: None,
        }
    }
}

/// A set of names that may be "everything".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSet {
    All,
    Only(HashSet<String>),
}

impl NameSet {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            NameSet::All => true,
            NameSet::Only(names) => names.contains(name),
        }
    }

    fn from_names(names: impl IntoIterator<Item = String>) -> NameSet {
        let names: HashSet<String> = names.into_iter().collect();
        if names.contains(ANY) {
            NameSet::All
        } else {
            NameSet::Only(names)
        }
    }

    /// The intersection with a restriction (a restriction never contains the wildcard's power).
    fn narrow(&mut self, restriction: &BTreeSet<String>) {
        let restricted: HashSet<String> = restriction.iter().cloned().collect();
        *self = match std::mem::replace(self, NameSet::All) {
            NameSet::All if restricted.contains(ANY) => NameSet::All,
            NameSet::All => NameSet::Only(restricted),
            NameSet::Only(names) if restricted.contains(ANY) => NameSet::Only(names),
            NameSet::Only(names) => {
                NameSet::Only(names.intersection(&restricted).cloned().collect())
            }
        };
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, NameSet::Only(names) if names.is_empty())
    }
}

/// What a verified token allows, after every restriction.
#[derive(Debug, Clone)]
pub struct Grant {
    pub holder: Option<String>,
    rights: HashMap<Operation, NameSet>,
    attributes: NameSet,
    pub purposes: Vec<String>,
    /// Revocation ids of every block, hex, authority first; empty for anonymous grants.
    pub revocation_ids: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
}

impl Grant {
    /// A grant for requests without a token, from the department's anonymous policy: the types
    /// anyone may read and write (expanded IRIs or `*`) and the attributes they may see
    /// (`None`: all).
    pub fn anonymous(
        read_types: impl IntoIterator<Item = String>,
        write_types: impl IntoIterator<Item = String>,
        attributes: Option<Vec<String>>,
    ) -> Grant {
        let mut rights = HashMap::new();
        for (operation, types) in [
            (Operation::Read, NameSet::from_names(read_types)),
            (Operation::Write, NameSet::from_names(write_types)),
        ] {
            if !types.is_empty() {
                rights.insert(operation, types);
            }
        }
        Grant {
            holder: None,
            rights,
            attributes: attributes.map_or(NameSet::All, NameSet::from_names),
            purposes: Vec::new(),
            revocation_ids: Vec::new(),
            expires: None,
        }
    }

    /// Whether `operation` is allowed on entities of `entity_type` (an expanded IRI).
    pub fn allows_type(&self, operation: Operation, entity_type: &str) -> bool {
        self.rights
            .get(&operation)
            .is_some_and(|types| types.contains(entity_type))
            || self
                .rights
                .get(&Operation::Admin)
                .is_some_and(|types| types.contains(entity_type))
    }

    /// The types `operation` is allowed on (`All` for every type).
    pub fn types(&self, operation: Operation) -> NameSet {
        let admin = self.rights.get(&Operation::Admin);
        if admin.is_some_and(|t| *t == NameSet::All) {
            return NameSet::All;
        }
        let mut types = self
            .rights
            .get(&operation)
            .cloned()
            .unwrap_or(NameSet::Only(HashSet::new()));
        if let (NameSet::Only(names), Some(NameSet::Only(admin))) = (&mut types, admin) {
            names.extend(admin.iter().cloned());
        }
        types
    }

    /// Whether `operation` is allowed at all (on some type).
    pub fn allows(&self, operation: Operation) -> bool {
        !self.types(operation).is_empty()
    }

    /// Whether the attribute (expanded IRI) may be seen or written.
    pub fn allows_attribute(&self, attribute: &str) -> bool {
        self.attributes.contains(attribute)
    }

    /// Whether every attribute may be seen or written (no allow-list).
    pub fn allows_every_attribute(&self) -> bool {
        self.attributes == NameSet::All
    }
}

/// Proof that a request was authorized: what for and what the caller may do. Only
/// [`Authorizer::authorize`] makes one, so whatever takes an `&Authorized` cannot be reached
/// without a decision.
#[derive(Debug, Clone)]
pub struct Authorized {
    grant: Arc<Grant>,
    operation: Operation,
    tenant: String,
    purpose: Option<String>,
    /// Set when the token or the policy has rules about what a request names: the decision is
    /// then completed per request by [`Authorized::check_names`].
    per_request: Option<PerRequest>,
    /// What the request touched, noted by the service that serves it (shared by clones).
    journal: Arc<Journal>,
}

/// What one authorized request touched: the entity types, ids and attributes it read or wrote and
/// how many entities, noted by the service that serves it through [`Authorized::note_entity`] and
/// friends, and read once the request is served (for its audit record).
#[derive(Debug, Default)]
pub struct Journal {
    touched: Mutex<Touched>,
}

/// The contents of a [`Journal`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Touched {
    /// Expanded entity types.
    pub entity_types: BTreeSet<String>,
    /// Entity ids, each once.
    pub entity_ids: BTreeSet<String>,
    /// Expanded attribute names returned or written.
    pub attributes: BTreeSet<String>,
    /// How many entities were returned or written, when the service says.
    pub count: Option<u64>,
    /// An entity was answered as absent because the caller may not see it.
    pub hidden: bool,
}

impl Journal {
    /// Notes an entity the request concerned, without a decision of this service (a broker's
    /// write it only forwarded): its types, id and the attributes written.
    pub fn note_entity<'a>(
        &self,
        types: &[String],
        id: &str,
        attributes: impl IntoIterator<Item = &'a String>,
    ) {
        let mut touched = self.lock();
        touched.entity_types.extend(types.iter().cloned());
        touched.entity_ids.insert(id.to_owned());
        touched.attributes.extend(attributes.into_iter().cloned());
    }

    /// What was noted so far, leaving the journal empty.
    pub fn take(&self) -> Touched {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Touched> {
        // Noting never panics while holding the lock, and a half-noted journal is still true.
        self.touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What it takes to complete a decision once the request's names are known.
#[derive(Clone)]
struct PerRequest {
    shared: Arc<Shared>,
    token: Arc<str>,
    now: DateTime<Utc>,
    request_id: Option<Arc<str>>,
}

impl std::fmt::Debug for PerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerRequest").finish_non_exhaustive()
    }
}

impl Authorized {
    /// The operation that was authorized.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The tenant the decision holds for (`""`: the default tenant).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Who holds the token (`None`: anonymous).
    pub fn holder(&self) -> Option<&str> {
        self.grant.holder.as_deref()
    }

    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref()
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The entity types the authorized operation may touch.
    pub fn types(&self) -> NameSet {
        self.grant.types(self.operation)
    }

    /// Whether an entity with these types is within the authorized operation: at least one of its
    /// types must be allowed.
    pub fn covers(&self, types: &[String]) -> bool {
        types
            .iter()
            .any(|t| self.grant.allows_type(self.operation, t))
    }

    /// Whether every one of `types` is allowed (what a write may add to an entity).
    pub fn covers_all(&self, types: &[String]) -> bool {
        types
            .iter()
            .all(|t| self.grant.allows_type(self.operation, t))
    }

    pub fn allows_attribute(&self, attribute: &str) -> bool {
        self.grant.allows_attribute(attribute)
    }

    pub fn allows_every_attribute(&self) -> bool {
        self.grant.allows_every_attribute()
    }

    /// Whether the decision depends on what the request names, so that [`Authorized::check_names`]
    /// may refuse one entity and allow another.
    pub fn decides_per_request(&self) -> bool {
        self.per_request.is_some()
    }

    /// The journal of what this request touched.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Notes an entity the request read or wrote: its types, id and the attributes returned or
    /// written.
    pub fn note_entity<'a>(
        &self,
        types: &[String],
        id: &str,
        attributes: impl IntoIterator<Item = &'a String>,
    ) {
        let mut touched = self.journal.lock();
        touched.entity_types.extend(types.iter().cloned());
        touched.entity_ids.insert(id.to_owned());
        touched.attributes.extend(attributes.into_iter().cloned());
    }

    /// Notes entity types the request named without naming entities (a query, a purge).
    pub fn note_types(&self, types: &[String]) {
        self.journal
            .lock()
            .entity_types
            .extend(types.iter().cloned());
    }

    /// Notes how many entities the request returned or wrote.
    pub fn note_count(&self, count: u64) {
        self.journal.lock().count = Some(count);
    }

    /// Notes that an entity was answered as absent because the caller may not see it.
    pub fn note_hidden(&self) {
        self.journal.lock().hidden = true;
    }

    /// Completes the decision with what the request names (or, per entity, what an entity of a
    /// batch or a result names). A no-op unless the token or the department's policy has rules
    /// about `entity_type`, `entity_id` or `attribute`; then the whole datalog world runs again with
    /// those facts and must allow.
    pub fn check_names(&self, names: Names<'_>) -> Result<(), Error> {
        let Some(per_request) = &self.per_request else {
            return Ok(());
        };
        let request = Request {
            operation: self.operation,
            tenant: Some(&self.tenant),
            purpose: self.purpose.as_deref(),
            now: per_request.now,
            request_id: per_request.request_id.as_deref(),
        };
        per_request
            .shared
            .decide(&per_request.token, &request, Some(names))
            .map(drop)
    }
}

/// The predicates whose facts come from what a request names. A token or policy that uses none of
/// them decides the same for every request with the same operation, tenant, purpose and second.
const REQUEST_PREDICATES: [&str; 3] = ["entity_type", "entity_id", "attribute"];

/// Whether datalog source uses one of [`REQUEST_PREDICATES`].
fn uses_request_facts(source: &str) -> bool {
    REQUEST_PREDICATES.iter().any(|name| {
        source.match_indices(name).any(|(at, _)| {
            let before = source[..at].chars().next_back();
            let after = source[at + name.len()..].trim_start().chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after == Some('(')
        })
    })
}

/// A cached decision: the grant a token gets for (operation, tenant, purpose) within one second.
/// Biscuit dates have one-second resolution, so within that second the datalog world is the same
/// and so is the decision, unless it depends on what the request names (`per_request`).
struct CachedGrant {
    second: i64,
    per_request: bool,
    grant: Arc<Grant>,
    /// For a token bound to one request (a block checks `request_id`): the request it was
    /// decided for. Another request with the same token is decided afresh.
    bound_to: Option<String>,
}

type CacheKey = (String, Operation, String, Option<String>);

/// The most decisions kept; past this, the cache starts over.
const CACHE_CAPACITY: usize = 10_000;

/// One department's authorizer. Cheap to clone: clones share the revocation list and the cache.
#[derive(Clone)]
pub struct Authorizer(Arc<Shared>);

struct Shared {
    root: PublicKey,
    department: String,
    /// The authorizer every decision starts from: the limits, the department's policy and the
    /// default policy, parsed once.
    template: AuthorizerBuilder,
    policy_uses_request_facts: bool,
    anonymous: Arc<Grant>,
    revoked: RwLock<HashSet<String>>,
    cache: Mutex<HashMap<CacheKey, CachedGrant>>,
    /// Whether the root key verifies a token, per token seen ([`Authorizer::verifies`]): a
    /// broker asks for every token of every request.
    verified: TokenMemo<bool>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("department", &self.0.department)
            .finish_non_exhaustive()
    }
}

/// The policy every department gets after its own: a token allows what its rights say.
const DEFAULT_POLICY: &str = r#"
allow if operation($operation), right($operation, $type);
allow if right("admin", $type);
deny if true;
"#;

impl Authorizer {
    /// An authorizer for tokens of `root`, with the department's own datalog `policy` (rules,
    /// checks and policies evaluated before the default policy; may be empty). Requests without a
    /// token get nothing until [`Authorizer::with_anonymous`] says otherwise.
    pub fn new(root: PublicKey, policy: &str, department: &str) -> Result<Authorizer, Error> {
        // Generous, explicit limits: the library's default time limit (1 ms) refuses valid
        // tokens on a loaded machine.
        let limits = AuthorizerLimits {
            max_facts: 10_000,
            max_iterations: 1_000,
            max_time: Duration::from_millis(250),
        };
        // Parsed once now: a broken policy fails at start-up, not on the first request.
        let template = AuthorizerBuilder::new()
            .set_limits(limits)
            .code(policy)
            .map_err(|e| Error::Invalid(format!("policy: {e}")))?
            .code(DEFAULT_POLICY)
            .map_err(|e| Error::Invalid(format!("default policy: {e}")))?;
        Ok(Authorizer(Arc::new(Shared {
            root,
            department: department.to_owned(),
            template,
            policy_uses_request_facts: uses_request_facts(policy),
            anonymous: Arc::new(Grant::anonymous(Vec::new(), Vec::new(), Some(Vec::new()))),
            revoked: RwLock::new(HashSet::new()),
            cache: Mutex::new(HashMap::new()),
            verified: TokenMemo::new(),
        })))
    }

    /// What requests without a token may do (the department's anonymous policy).
    pub fn with_anonymous(self, grant: Grant) -> Authorizer {
        let shared = Arc::unwrap_or_clone(self.0);
        Authorizer(Arc::new(Shared {
            anonymous: Arc::new(grant),
            ..shared
        }))
    }

    /// The department this authorizer decides for.
    pub fn department(&self) -> &str {
        &self.0.department
    }

    /// Refuses, from now on, every token with a block whose revocation id (hex) is in `ids`.
    pub fn revoke(&self, ids: impl IntoIterator<Item = String>) {
        let mut revoked = self.0.revoked.write().unwrap_or_else(|e| e.into_inner());
        revoked.extend(ids.into_iter().map(|id| id.to_ascii_lowercase()));
    }

    /// Decides `request` for the bearer `tokens` (several when a caller presents one per
    /// department: the first that this department's root key verifies is used), or, with no token,
    /// by the anonymous policy.
    pub fn authorize(&self, tokens: &[&str], request: &Request<'_>) -> Result<Authorized, Error> {
        Shared::authorize(&self.0, tokens, request)
    }

    /// Whether this department's key signed `token` (remembered per token).
    pub fn verifies(&self, token: &str) -> bool {
        let token = token.trim();
        self.0
            .verified
            .get_or(token, || crate::token::issued_by(token, &self.0.root))
    }

    /// The revocation ids (hex, authority first) of a token this department's key verifies.
    pub fn revocation_ids(&self, token: &str) -> Result<Vec<String>, Error> {
        let biscuit = Biscuit::from_base64(token.trim(), self.0.root)
            .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        Ok(biscuit
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect())
    }
}

impl Clone for Shared {
    fn clone(&self) -> Shared {
        Shared {
            root: self.root,
            department: self.department.clone(),
            template: self.template.clone(),
            policy_uses_request_facts: self.policy_uses_request_facts,
            anonymous: self.anonymous.clone(),
            revoked: RwLock::new(
                self.revoked
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
            cache: Mutex::new(HashMap::new()),
            verified: TokenMemo::new(),
        }
    }
}

impl Shared {
    fn revoked_among(&self, ids: &[String]) -> Option<String> {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        if revoked.is_empty() {
            return None;
        }
        ids.iter().find(|id| revoked.contains(*id)).cloned()
    }

    fn authorize(
        this: &Arc<Shared>,
        tokens: &[&str],
        request: &Request<'_>,
    ) -> Result<Authorized, Error> {
        let (grant, per_request) = match tokens {
            [] => {
                if !this.anonymous.allows(request.operation) {
                    return Err(Error::TokenRequired);
                }
                (this.anonymous.clone(), None)
            }
            [token] => this.authorize_token(token, request)?,
            several => {
                // The first token this department's key verifies decides; tokens of other
                // departments fail verification and are skipped. Through `authorize_token`, a
                // cached decision is found without verifying any signature again.
                let mut decided = None;
                for token in several {
                    match this.authorize_token(token, request) {
                        Err(Error::Unauthenticated(_)) => continue,
                        outcome => {
                            decided = Some(outcome?);
                            break;
                        }
                    }
                }
                decided.ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "none of the {} tokens was issued by {}",
                        several.len(),
                        this.department
                    ))
                })?
            }
        };
        if let Some(purpose) = request.purpose
            && !grant.purposes.is_empty()
            && !grant.purposes.iter().any(|p| p == purpose)
        {
            return Err(Error::Forbidden(format!(
                "the token is not for the purpose {purpose:?}"
            )));
        }
        Ok(Authorized {
            grant,
            operation: request.operation,
            tenant: request.tenant.unwrap_or_default().to_owned(),
            purpose: request.purpose.map(str::to_owned),
            per_request: per_request.map(|token| PerRequest {
                shared: this.clone(),
                token,
                now: request.now,
                request_id: request.request_id.map(Arc::from),
            }),
            journal: Arc::default(),
        })
    }

    /// One token: from the cache when the same decision was made within this second, else in full.
    /// With the grant comes the token, when the decision must be completed per request.
    fn authorize_token(
        &self,
        token: &str,
        request: &Request<'_>,
    ) -> Result<(Arc<Grant>, Option<Arc<str>>), Error> {
        let token = token.trim();
        let second = request.now.timestamp();
        let key: CacheKey = (
            token.to_owned(),
            request.operation,
            request.tenant.unwrap_or_default().to_owned(),
            request.purpose.map(str::to_owned),
        );
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&key)
                .filter(|entry| {
                    entry.second == second
                        && entry
                            .bound_to
                            .as_deref()
                            .is_none_or(|id| Some(id) == request.request_id)
                })
                .map(|entry| (entry.grant.clone(), entry.per_request))
        };
        let (grant, per_request) = match cached {
            Some(hit) => hit,
            None => {
                let Decision {
                    grant,
                    per_request,
                    binds_request,
                } = self.decide(token, request, None)?;
                let bound_to =
                    binds_request.then(|| request.request_id.unwrap_or_default().to_owned());
                let grant = Arc::new(grant);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(
                    key,
                    CachedGrant {
                        second,
                        per_request,
                        grant: grant.clone(),
                        bound_to,
                    },
                );
                (grant, per_request)
            }
        };
        // Revocation is checked on every request, cached or not: it takes effect at once.
        if let Some(id) = self.revoked_among(&grant.revocation_ids) {
            return Err(Error::Revoked(id));
        }
        Ok((grant, per_request.then(|| Arc::from(token))))
    }

    /// Verifies `token` and computes what it allows for `request`; also says whether the decision
    /// depends on what the request names. Without `names`, such a decision is only half made (the
    /// token verifies, has not expired and grants something for the operation): the datalog
    /// policies run when the names are known, with them.
    fn decide(
        &self,
        token: &str,
        request: &Request<'_>,
        names: Option<Names<'_>>,
    ) -> Result<Decision, Error> {
        let biscuit = Biscuit::from_base64(token, self.root)
            .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        let revocation_ids: Vec<String> = biscuit
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect();
        if let Some(id) = self.revoked_among(&revocation_ids) {
            return Err(Error::Revoked(id));
        }
        // What the blocks say about the decision's scope, read in one pass over their source; a
        // block that cannot be printed counts as doing both.
        let mut per_request = self.policy_uses_request_facts;
        let mut binds_request = false;
        for index in 0..biscuit.block_count() {
            let source = biscuit.print_block_source(index).ok();
            per_request |= source.as_deref().is_none_or(uses_request_facts);
            binds_request |=
                index > 0 && source.as_deref().is_none_or(|s| s.contains("request_id("));
        }
        let now = SystemTime::from(request.now);
        let string = |value: &str| builder::string(value);
        let mut facts = vec![
            builder::fact("operation", &[string(request.operation.name())]),
            builder::fact("tenant", &[string(request.tenant.unwrap_or(""))]),
            builder::fact("time", &[builder::date(&now)]),
            builder::fact("department", &[string(&self.department)]),
        ];
        if let Some(purpose) = request.purpose {
            facts.push(builder::fact("request_purpose", &[string(purpose)]));
        }
        if let Some(id) = request.request_id {
            facts.push(builder::fact("request_id", &[string(id)]));
        }
        for (index, id) in revocation_ids.iter().enumerate() {
            facts.push(builder::fact(
                "revocation_id",
                &[builder::int(index as i64), string(id)],
            ));
        }
        let names_given = names.is_some();
        let names = names.unwrap_or_default();
        for (predicate, values) in [
            ("entity_type", names.entity_types),
            ("entity_id", names.entity_ids),
            ("attribute", names.attributes),
        ] {
            for value in values {
                facts.push(builder::fact(predicate, &[string(value)]));
            }
        }
        let mut builder = self.template.clone();
        for fact in facts {
            builder = builder
                .fact(fact)
                .map_err(|e| Error::Invalid(e.to_string()))?;
        }
        let mut authorizer = builder
            .build(&biscuit)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let queries = &*QUERIES;

        let expiries: Vec<(SystemTime,)> = authorizer
            .query_all(queries.expires.clone())
            .map_err(limit_error)?;
        let expires = expiries.into_iter().map(|(at,)| at).min();
        if let Some(at) = expires
            && now > at
        {
            return Err(Error::Expired(DateTime::<Utc>::from(at).to_rfc3339()));
        }
        if !per_request || names_given {
            authorizer
                .authorize()
                .map_err(|e| Error::Forbidden(e.to_string()))?;
        }

        // Rights and the attribute allow-list: authority block (and the department's policy) only.
        let rights: Vec<(String, String)> = authorizer
            .query(queries.rights.clone())
            .map_err(limit_error)?;
        let mut by_operation: HashMap<Operation, Vec<String>> = HashMap::new();
        for (operation, entity_type) in rights {
            if let Some(operation) = Operation::parse(&operation) {
                by_operation.entry(operation).or_default().push(entity_type);
            }
        }
        let mut grant_rights: HashMap<Operation, NameSet> = by_operation
            .into_iter()
            .map(|(op, types)| (op, NameSet::from_names(types)))
            .collect();
        let attributes: Vec<(String,)> = authorizer
            .query(queries.attributes.clone())
            .map_err(limit_error)?;
        let mut attributes = NameSet::from_names(attributes.into_iter().map(|(a,)| a));
        let holders: Vec<(String,)> = authorizer
            .query(queries.holders.clone())
            .map_err(limit_error)?;
        let purposes: Vec<(String,)> = authorizer
            .query(queries.purposes.clone())
            .map_err(limit_error)?;

        // Restrictions from every block narrow the grant.
        let type_limits: Vec<(String, BTreeSet<String>)> = authorizer
            .query_all(queries.type_limits.clone())
            .map_err(limit_error)?;
        for (operation, types) in type_limits {
            if let Some(operation) = Operation::parse(&operation)
                && let Some(set) = grant_rights.get_mut(&operation)
            {
                set.narrow(&types);
            }
        }
        let attribute_limits: Vec<(BTreeSet<String>,)> = authorizer
            .query_all(queries.attribute_limits.clone())
            .map_err(limit_error)?;
        for (limit,) in attribute_limits {
            attributes.narrow(&limit);
        }
        let grant = Grant {
            holder: holders.into_iter().next().map(|(h,)| h),
            rights: grant_rights,
            attributes,
            purposes: purposes.into_iter().map(|(p,)| p).collect(),
            revocation_ids,
            expires: expires.map(DateTime::<Utc>::from),
        };
        if !grant.allows(request.operation) {
            return Err(Error::Forbidden(format!(
                "the token has no {} right",
                request.operation.name()
            )));
        }
        Ok(Decision {
            grant,
            per_request,
            binds_request,
        })
    }
}

/// The queries a decision reads its grant with, parsed once.
struct Queries {
    expires: Rule,
    rights: Rule,
    attributes: Rule,
    holders: Rule,
    purposes: Rule,
    type_limits: Rule,
    attribute_limits: Rule,
}

static QUERIES: LazyLock<Queries> = LazyLock::new(|| {
    let rule = |text: &str| Rule::try_from(text).expect("the decision's queries parse");
    Queries {
        expires: rule("data($date) <- expires($date)"),
        rights: rule("data($op, $type) <- right($op, $type)"),
        attributes: rule("data($a) <- attribute_allowed($a)"),
        holders: rule("data($h) <- holder($h)"),
        purposes: rule("data($p) <- purpose($p)"),
        type_limits: rule("data($op, $types) <- restrict_types($op, $types)"),
        attribute_limits: rule("data($a) <- restrict_attributes($a)"),
    }
});

/// What [`Shared::decide`] found.
struct Decision {
    grant: Grant,
    /// The decision depends on what the request names (see [`REQUEST_PREDICATES`]).
    per_request: bool,
    /// A block binds the token to one request (`request_id`, as a broker's relay block has): the
    /// decision is cached for that request only.
    binds_request: bool,
}

/// The tokens of an `Authorization` header value: `Bearer T` or, for a caller holding tokens of
/// several departments, `Bearer T1, T2`. `None` when the header is not a bearer credential.
pub fn bearer_tokens(header: &str) -> Option<Vec<&str>> {
    let (scheme, rest) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let tokens: Vec<&str> = rest
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    (!tokens.is_empty()).then_some(tokens)
}

/// A problem in a department's datalog policy, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub line: usize,
    pub message: String,
}

/// Checks a department's datalog policy without running it: each statement is parsed on its own,
/// so every error names the line its statement starts on.
pub fn check_policy(source: &str) -> Result<(), Vec<PolicyError>> {
    let mut errors = Vec::new();
    for (line, statement) in statements(source) {
        if !statement.trim_end().ends_with(';') {
            errors.push(PolicyError {
                line,
                message: "the statement does not end with ';'".to_owned(),
            });
            continue;
        }
        if let Err(error) = AuthorizerBuilder::new().code(&statement) {
            let message = match error {
                biscuit_auth::error::Token::Language(
                    biscuit_parser::error::LanguageError::ParseError(parse),
                ) => parse
                    .errors
                    .into_iter()
                    .filter_map(|e| e.message)
                    .next()
                    .unwrap_or_else(|| format!("cannot parse {:?}", statement.trim())),
                other => other.to_string(),
            };
            errors.push(PolicyError { line, message });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Splits datalog source into statements (up to and including `;`, outside strings and `//`
/// comments), each with the line its first significant character is on.
fn statements(source: &str) -> Vec<(usize, String)> {
    let mut statements = Vec::new();
    let (mut line, mut start_line) = (1, None);
    let (mut in_string, mut in_comment) = (false, false);
    let mut current = String::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            in_comment = false;
            current.push(c);
            continue;
        }
        if in_comment {
            continue;
        }
        if !in_string && c == '/' && chars.peek() == Some(&'/') {
            in_comment = true;
            continue;
        }
        if c == '"' {
            in_string = !in_string;
        }
        if start_line.is_none() && !c.is_whitespace() {
            start_line = Some(line);
        }
        current.push(c);
        if c == ';' && !in_string {
            statements.push((
                start_line.take().unwrap_or(line),
                std::mem::take(&mut current),
            ));
        }
    }
    if let Some(start) = start_line {
        statements.push((start, current));
    }
    statements
}

fn limit_error(error: biscuit_auth::error::Token) -> Error {
    Error::Forbidden(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RootKey;
    use crate::token::{ANY, Restrictions, TokenSpec, attenuate, issue};

    const SPOT: &str = "https://example.org/ParkingSpot";
    const SITE: &str = "https://example.org/OffStreetParking";
    const STATUS: &str = "https://example.org/status";
    const PAYMENT: &str = "https://example.org/payment";

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn key() -> RootKey {
        RootKey::from_seed([3; 32]).expect("key")
    }

    fn authorizer() -> Authorizer {
        Authorizer::new(key().public(), "", "transport").expect("authorizer")
    }

    fn request(operation: Operation) -> Request<'static> {
        Request::new(operation, at(10))
    }

    fn partner() -> TokenSpec {
        TokenSpec {
            holder: "partner".into(),
            read: vec![SPOT.into(), SITE.into()],
            attributes: Some(vec![STATUS.into(), PAYMENT.into()]),
            ttl: Some(chrono::Duration::hours(1)),
            ..TokenSpec::default()
        }
    }

    #[test]
    fn verification_is_remembered_per_token_both_ways() {
        let authorizer = authorizer();
        let ours = issue(&key(), &partner(), at(0)).expect("issues");
        let other_key = RootKey::from_seed([4; 32]).expect("key");
        let theirs = issue(&other_key, &partner(), at(0)).expect("issues");
        for _ in 0..2 {
            assert!(authorizer.verifies(&ours));
            assert!(authorizer.verifies(&format!(" {ours}\n")));
            assert!(!authorizer.verifies(&theirs));
            assert!(!authorizer.verifies("not a token"));
        }
        assert_eq!(authorizer.0.verified.len(), 3);
    }

    #[test]
    fn the_authority_revocation_id_is_the_grants_first() {
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        let grant = authorizer()
            .authorize(&[&token], &request(Operation::Read))
            .expect("allowed");
        assert_eq!(
            crate::token::authority_revocation_id(&token),
            grant.grant().revocation_ids.first().cloned()
        );
        assert_eq!(crate::token::authority_revocation_id("not a token"), None);
    }

    #[test]
    fn a_token_grants_what_its_authority_block_says() {
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        let grant = authorizer()
            .authorize(&[&token], &request(Operation::Read))
            .expect("allowed");
        let grant = grant.grant();
        assert_eq!(grant.holder.as_deref(), Some("partner"));
        assert!(grant.allows_type(Operation::Read, SPOT));
        assert!(!grant.allows_type(Operation::Write, SPOT));
        assert!(
            grant.allows_attribute(STATUS) && !grant.allows_attribute("https://example.org/plate")
        );
        assert_eq!(grant.revocation_ids.len(), 1);
        // No write right at all: the write request is refused outright.
        assert!(matches!(
            authorizer().authorize(&[&token], &request(Operation::Write)),
            Err(Error::Forbidden(_))
        ));
    }

    #[test]
    fn restrictions_narrow_and_never_widen() {
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        let narrowed = attenuate(
            &token,
            &Restrictions {
                read: Some(vec![SPOT.into(), "https://example.org/Elsewhere".into()]),
                attributes: Some(vec![STATUS.into(), "https://example.org/plate".into()]),
                write: Some(vec![SPOT.into()]),
                ..Restrictions::default()
            },
            at(1),
        )
        .expect("attenuates");
        let grant = authorizer()
            .authorize(&[&narrowed], &request(Operation::Read))
            .expect("allowed");
        let grant = grant.grant();
        assert!(grant.allows_type(Operation::Read, SPOT));
        assert!(!grant.allows_type(Operation::Read, SITE));
        assert!(
            !grant.allows_type(Operation::Read, "https://example.org/Elsewhere"),
            "a restriction cannot add a type"
        );
        assert!(grant.allows_attribute(STATUS));
        assert!(!grant.allows_attribute(PAYMENT));
        assert!(
            !grant.allows_attribute("https://example.org/plate"),
            "a restriction cannot add an attribute"
        );
        assert!(
            !grant.allows_type(Operation::Write, SPOT),
            "a restriction cannot add a right"
        );
        assert_eq!(grant.revocation_ids.len(), 2);
    }

    #[test]
    fn refusals() {
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        // Expired.
        let late = Request {
            now: at(7200),
            request_id: None,
            ..request(Operation::Read)
        };
        assert!(matches!(
            authorizer().authorize(&[&token], &late),
            Err(Error::Expired(_))
        ));
        // An attenuation with a shorter life expires earlier.
        let short = attenuate(
            &token,
            &Restrictions {
                ttl: Some(chrono::Duration::seconds(5)),
                ..Restrictions::default()
            },
            at(0),
        )
        .expect("attenuates");
        assert!(matches!(
            authorizer().authorize(&[&short], &request(Operation::Read)),
            Err(Error::Expired(_))
        ));
        // Another department's root key.
        let foreign = issue(
            &RootKey::from_seed([4; 32]).expect("key"),
            &partner(),
            at(0),
        )
        .expect("issues");
        assert!(matches!(
            authorizer().authorize(&[&foreign], &request(Operation::Read)),
            Err(Error::Unauthenticated(_))
        ));
        // Tampered bytes.
        let mut bytes = token.clone().into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(matches!(
            authorizer().authorize(&[&tampered], &request(Operation::Read)),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            authorizer().authorize(&["not a token"], &request(Operation::Read)),
            Err(Error::Unauthenticated(_))
        ));
        // Wrong tenant.
        let tenanted = issue(
            &key(),
            &TokenSpec {
                tenants: Some(vec!["north".into()]),
                ..partner()
            },
            at(0),
        )
        .expect("issues");
        let south = Request {
            tenant: Some("south"),
            ..request(Operation::Read)
        };
        assert!(matches!(
            authorizer().authorize(&[&tenanted], &south),
            Err(Error::Forbidden(_))
        ));
        let north = Request {
            tenant: Some("north"),
            ..request(Operation::Read)
        };
        assert!(authorizer().authorize(&[&tenanted], &north).is_ok());
    }

    #[test]
    fn policy_errors_name_their_line() {
        assert_eq!(check_policy("allow if true;\n"), Ok(()));
        let errors = check_policy("allow if true;\n\ndeny if holder(;\n").expect_err("broken");
        assert_eq!(errors[0].line, 3, "{errors:?}");
    }

    #[test]
    fn department_policies_apply() {
        let strict = Authorizer::new(
            key().public(),
            r#"deny if holder("partner"), operation("read");"#,
            "transport",
        )
        .expect("policy");
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        assert!(matches!(
            strict.authorize(&[&token], &request(Operation::Read)),
            Err(Error::Forbidden(_))
        ));
        assert!(Authorizer::new(key().public(), "this is not datalog", "transport").is_err());
    }

    #[test]
    fn revocation_takes_effect_at_once_even_for_cached_decisions() {
        let authorizer = authorizer();
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        let narrowed = attenuate(&token, &Restrictions::default(), at(0)).expect("attenuates");
        for t in [&token, &narrowed] {
            assert!(
                authorizer
                    .authorize(&[t], &request(Operation::Read))
                    .is_ok()
            );
        }
        // Revoking the attenuation block refuses the narrowed token only.
        let ids = inspect_ids(&narrowed);
        authorizer.revoke([ids[1].clone()]);
        assert!(matches!(
            authorizer.authorize(&[&narrowed], &request(Operation::Read)),
            Err(Error::Revoked(_))
        ));
        assert!(
            authorizer
                .authorize(&[&token], &request(Operation::Read))
                .is_ok()
        );
        // Revoking the authority block refuses both, within the same second (cached decisions).
        authorizer.revoke([ids[0].to_uppercase()]);
        for t in [&token, &narrowed] {
            assert!(matches!(
                authorizer.authorize(&[t], &request(Operation::Read)),
                Err(Error::Revoked(_))
            ));
        }
    }

    fn inspect_ids(token: &str) -> Vec<String> {
        crate::token::inspect(token, None)
            .expect("decodes")
            .revocation_ids
    }

    #[test]
    fn cached_decisions_are_the_decisions() {
        let authorizer = authorizer();
        let token = issue(
            &key(),
            &TokenSpec {
                ttl: Some(chrono::Duration::seconds(20)),
                ..partner()
            },
            at(0),
        )
        .expect("issues");
        // The same second twice (the second from the cache), then the second after expiry.
        for _ in 0..2 {
            assert!(
                authorizer
                    .authorize(&[&token], &request(Operation::Read))
                    .is_ok()
            );
        }
        let late = Request::new(Operation::Read, at(21));
        assert!(matches!(
            authorizer.authorize(&[&token], &late),
            Err(Error::Expired(_))
        ));
        // Another tenant or operation is another decision.
        assert!(matches!(
            authorizer.authorize(&[&token], &request(Operation::Write)),
            Err(Error::Forbidden(_))
        ));
    }

    #[test]
    fn anonymous_requests_get_the_anonymous_policy() {
        let closed = authorizer();
        assert!(matches!(
            closed.authorize(&[], &request(Operation::Read)),
            Err(Error::TokenRequired)
        ));
        let open = authorizer().with_anonymous(Grant::anonymous(
            vec![SPOT.to_owned()],
            Vec::new(),
            Some(vec![STATUS.to_owned()]),
        ));
        let anonymous = open
            .authorize(&[], &request(Operation::Read))
            .expect("public read");
        assert_eq!(anonymous.holder(), None);
        assert!(anonymous.covers(&[SPOT.to_owned(), SITE.to_owned()]));
        assert!(!anonymous.covers(&[SITE.to_owned()]));
        assert!(anonymous.allows_attribute(STATUS) && !anonymous.allows_attribute(PAYMENT));
        assert!(matches!(
            open.authorize(&[], &request(Operation::Write)),
            Err(Error::TokenRequired)
        ));
    }

    #[test]
    fn with_several_tokens_the_departments_own_is_used() {
        let ours = issue(&key(), &partner(), at(0)).expect("issues");
        let theirs = issue(
            &RootKey::from_seed([4; 32]).expect("key"),
            &TokenSpec {
                write: vec![ANY.to_owned()],
                ..partner()
            },
            at(0),
        )
        .expect("issues");
        let decided = authorizer()
            .authorize(&[&theirs, &ours], &request(Operation::Read))
            .expect("ours verifies");
        assert_eq!(decided.holder(), Some("partner"));
        assert!(matches!(
            authorizer().authorize(&[&theirs, &theirs], &request(Operation::Read)),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn policies_see_what_the_request_names_and_its_purpose() {
        let policy = format!(
            r#"deny if operation("read"), attribute("{PAYMENT}");
            deny if request_purpose("marketing");"#
        );
        let strict = Authorizer::new(key().public(), &policy, "transport").expect("policy");
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        let payment = [PAYMENT.to_owned()];
        let status = [STATUS.to_owned()];
        let asks = |attributes| Names {
            attributes,
            ..Names::default()
        };
        // The request-level decision cannot know the names: it is completed per request, and
        // never reused for another request's names.
        let authorized = strict
            .authorize(&[&token], &request(Operation::Read))
            .expect("half decided");
        assert!(matches!(
            authorized.check_names(asks(&payment)),
            Err(Error::Forbidden(_))
        ));
        assert!(authorized.check_names(asks(&status)).is_ok());
        assert!(matches!(
            authorized.check_names(asks(&payment)),
            Err(Error::Forbidden(_))
        ));
        // Without such rules, names change nothing and cost nothing.
        let plain = authorizer()
            .authorize(&[&token], &request(Operation::Read))
            .expect("allowed");
        assert!(plain.check_names(asks(&payment)).is_ok());
        // A token's own check about names works the same way.
        let checked = attenuate(
            &token,
            &Restrictions {
                datalog: Some(format!(r#"check if entity_type("{SPOT}");"#)),
                ..Restrictions::default()
            },
            at(0),
        )
        .expect("attenuates");
        let authorized = authorizer()
            .authorize(&[&checked], &request(Operation::Read))
            .expect("half decided");
        let spot = [SPOT.to_owned()];
        let site = [SITE.to_owned()];
        let of_type = |entity_types| Names {
            entity_types,
            ..Names::default()
        };
        assert!(authorized.check_names(of_type(&spot)).is_ok());
        assert!(matches!(
            authorized.check_names(of_type(&site)),
            Err(Error::Forbidden(_))
        ));
        let marketing = Request {
            purpose: Some("marketing"),
            ..request(Operation::Read)
        };
        assert!(matches!(
            strict
                .authorize(&[&token], &marketing)
                .and_then(|a| a.check_names(Names::default())),
            Err(Error::Forbidden(_))
        ));
        // A token for one purpose is not used for another.
        let purposeful = issue(
            &key(),
            &TokenSpec {
                purpose: Some("planning".into()),
                ..partner()
            },
            at(0),
        )
        .expect("issues");
        let other = Request {
            purpose: Some("research"),
            ..request(Operation::Read)
        };
        assert!(matches!(
            authorizer().authorize(&[&purposeful], &other),
            Err(Error::Forbidden(_))
        ));
    }

    #[test]
    fn request_predicates_are_found_as_predicates_only() {
        assert!(uses_request_facts("deny if entity_type($t);"));
        assert!(uses_request_facts("check if attribute ( \"x\" );"));
        assert!(!uses_request_facts("check if attribute_allowed($a);"));
        assert!(!uses_request_facts("check if my_entity_id($a);"));
        assert!(!uses_request_facts(""));
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer_tokens("Bearer abc"), Some(vec!["abc"]));
        assert_eq!(bearer_tokens("bearer a, b ,c"), Some(vec!["a", "b", "c"]));
        assert_eq!(bearer_tokens("Basic abc"), None);
        assert_eq!(bearer_tokens("Bearer  , "), None);
        assert_eq!(bearer_tokens("Bearer"), None);
    }
}
