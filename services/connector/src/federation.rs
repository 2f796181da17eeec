//! Federation: how a broker answers a query or a retrieval from the context sources registered
//! with it (ETSI GS CIM 009 clause 4.3.6, distributed operations), beside its own store.
//!
//! The broker never holds a department's rights. A caller brings one token per department in one
//! `Authorization` header; each token goes only to sources at the address of the department whose
//! root key signed it, and only after a block is appended that binds it to this request (its
//! request id, a short expiry, `relayed_by`). Sources of a department the caller has no token for
//! are not asked, and the answer says so. Sources that belong to no configured department are asked
//! without any token.
//!
//! A federated query first lists the matching entity ids of every source (an *entity map*, kept
//! for a while under an id the response names in `NGSILD-EntityMap`), then fetches the page's
//! entities by id from the sources that hold them. Pages of one map never skip or repeat an
//! entity, whatever order the sources answer in. Entities held by several sources are merged:
//! types and attributes are united, and of two instances with the same `datasetId` the one
//! observed last wins.
//!
//! A source that is slow (beyond `source_timeout_ms`), down, refuses, or answers with something
//! that is not NGSI-LD leaves an `NGSILD-Warning` on the answer instead of failing it, unless the
//! caller asked for all or nothing (`Civitas-Completeness: all`). Of a source's first entities
//! only those that make the page are read as NGSI-LD (the others only for their ids); an invalid
//! one among them sets the whole answer of that source aside.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use civitas_http::{ErrorCode, Problem};
use civitas_ngsild::ErrorType;
use civitas_ngsild::canonical::{self, Trust};
use civitas_ngsild::context::ActiveContext;
use civitas_ngsild::entity::{Attribute, Entity};
use civitas_ngsild::expand::{self, Payload};
use civitas_ngsild::registration::Registration;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::settings::FederationSettings;
use civitas_auth::memo::TokenMemo;

/// The header a caller asks for all or nothing with (`Civitas-Completeness: all`).
pub const COMPLETENESS_HEADER: &str = "civitas-completeness";
/// The header naming the entity map of a federated query's answer.
pub const ENTITY_MAP_HEADER: &str = "ngsild-entitymap";
/// The header warnings about sources travel in (one value per source).
pub const WARNING_HEADER: &str = "ngsild-warning";
/// The header a broker lists a department's ids with, page after page: only ids after the one
/// it names (keyset paging, instead of an `offset` each page of which costs the source a walk
/// over every id before it).
pub const AFTER_HEADER: &str = "civitas-after";

/// How many ids one forwarded request names.
const IDS_PER_REQUEST: usize = 100;
/// How many entities one listing request asks a source for.
const LISTING_PAGE: usize = 1_000;

/// A department the broker routes tokens to.
#[derive(Debug)]
struct Department {
    name: String,
    key: civitas_auth::keys::PublicKey,
    origin: String,
}

/// Where a federated request goes: one endpoint (and tenant there), and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The endpoint's base URL, without a trailing slash.
    pub endpoint: String,
    /// The tenant to address there (`None`: the caller's).
    pub tenant: Option<String>,
    /// The configured department the endpoint belongs to, by index.
    department: Option<usize>,
    /// Extra headers from the registrations' `contextSourceInfo`.
    headers: Vec<(String, String)>,
    /// The only entities the registrations name (`None`: they name types or patterns too).
    ids: Option<Vec<String>>,
    /// The only attributes (expanded) the registrations name (`None`: every attribute).
    attributes: Option<Vec<String>>,
    /// One entity is asked for with `GET /entities/{id}` (a registration allows
    /// retrieveEntity), else with a query for its id.
    retrievable: bool,
    /// Queries go there as `POST /entityOperations/query`: its registrations allow queryBatch
    /// and none allows queryEntity.
    batch_queries: bool,
    /// The entity types (expanded) the registrations name, for a retrieval sent as a query.
    types: Vec<String>,
}

/// The operations a registration may support for the broker to retrieve one entity through it
/// (clause 4.3.6.3): by retrieval, else by a query for its id ([`Source::retrievable`]).
pub const RETRIEVAL_OPERATIONS: [&str; 3] = ["retrieveEntity", "queryEntity", "queryBatch"];

impl Source {
    /// The entity types its registrations name, compacted with the caller's @context and
    /// joined as a query's `type` list.
    fn type_list(&self, context: &ActiveContext) -> String {
        let mut names: Vec<String> = self
            .types
            .iter()
            .map(|iri| context.compact_name(iri).into_owned())
            .collect();
        names.sort();
        names.dedup();
        names.join(",")
    }

    /// `filters` narrowed to what the registrations say the source holds (clause 4.3.6.2): its
    /// entity ids and attributes, unless the caller's own are narrower. A source asked for
    /// nothing it holds is not asked (`None`).
    fn narrow(
        &self,
        filters: &[(String, String)],
        context: &ActiveContext,
    ) -> Option<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(filters.len() + 2);
        let mut has_ids = false;
        let mut has_attrs = false;
        for (name, value) in filters {
            match (name.as_str(), &self.ids, &self.attributes) {
                ("id", Some(ids), _) => {
                    has_ids = true;
                    let kept: Vec<&str> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|id| ids.iter().any(|registered| registered == id))
                        .collect();
                    if kept.is_empty() {
                        return None;
                    }
                    out.push((name.clone(), kept.join(",")));
                }
                ("attrs", _, Some(attributes)) => {
                    has_attrs = true;
                    let kept: Vec<&str> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|attr| attributes.contains(&context.expand_name(attr)))
                        .collect();
                    if kept.is_empty() {
                        return None;
                    }
                    out.push((name.clone(), kept.join(",")));
                }
                _ => out.push((name.clone(), value.clone())),
            }
        }
        if let (false, Some(ids)) = (has_ids, &self.ids) {
            out.push(("id".to_owned(), ids.join(",")));
        }
        if let (false, Some(attributes)) = (has_attrs, &self.attributes) {
            let names: Vec<String> = attributes
                .iter()
                .map(|iri| context.compact_name(iri).into_owned())
                .collect();
            out.push(("attrs".to_owned(), names.join(",")));
        }
        Some(out)
    }
}

/// What a source answered a forwarded write with.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// Something the caller should know about one source: it was skipped or failed.
#[derive(Debug, Clone)]
pub struct SourceWarning {
    pub source: String,
    pub message: String,
    /// Failed (slow, down, garbage) rather than skipped by design (no token for it).
    pub failed: bool,
}

impl SourceWarning {
    /// The `NGSILD-Warning` header value (RFC 7234 warning syntax: `199 <agent> "<text>"`).
    pub fn header_value(&self) -> String {
        let text: String = self
            .message
            .chars()
            .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
            .collect();
        format!(
            "199 {} \"{text}\"",
            self.source.replace(char::is_whitespace, "")
        )
    }
}

/// The merged ids of one federated query and which sources hold each.
#[derive(Debug)]
struct EntityMap {
    created: Instant,
    /// Binds the map to the caller and the query it was made for.
    fingerprint: String,
    sources: Vec<Source>,
    /// Entity id → indexes into `sources` (`LOCAL` for the broker's own store), in id order.
    ids: Vec<(String, Vec<usize>)>,
    warnings: Vec<SourceWarning>,
}

/// The index that stands for the broker's own store in an entity map.
const LOCAL: usize = usize::MAX;

/// One entity of a source's answer: its id, and its JSON as the source wrote it.
type RawItem = (String, Box<RawValue>);

/// One page of a federated query.
#[derive(Debug)]
pub struct Page {
    pub entities: Vec<Entity>,
    /// The number of distinct entities over all sources, when an entity map was made.
    pub total: Option<u64>,
    pub map_id: Option<String>,
    pub warnings: Vec<SourceWarning>,
    /// The endpoints of every source the query concerned (asked or skipped).
    pub sources: Vec<String>,
}

/// What a federated query asks of the broker's own store.
#[derive(Debug, Clone)]
pub enum LocalFetch {
    /// Every match (to list its ids).
    All,
    /// These entities.
    Ids(Vec<String>),
    /// The first matches in id order.
    First(usize),
}

/// How a federated query pages.
#[derive(Debug, Clone, Copy)]
pub enum Paging<'a> {
    /// Through an entity map made earlier.
    Map(&'a str),
    /// Make an entity map (asked for, or needed for an exact count).
    NewMap,
    /// Whatever is cheapest: the first entities of every source when they are all departments'
    /// connectors (which answer in id order) and the page is within one listing, else a new map.
    Cheapest,
    /// The caller named no paging at all: like [`Paging::Cheapest`], except that sources that are
    /// not departments' connectors are asked with the caller's parameters exactly as given (no
    /// `limit` added) and answer with their own first page, which is merged. One round trip, and
    /// what another NGSI-LD broker (or a stub that expects the caller's query) understands; a
    /// caller who needs every match of such a source pages with `count=true` or `entityMap=true`.
    AsGiven,
}

/// What the broker forwards a request with.
pub struct Forward<'a> {
    pub req: &'a HttpRequest,
    pub request_id: String,
    /// The caller's tokens.
    pub tokens: Vec<&'a str>,
    /// The caller's tenant (`""`: the default one).
    pub tenant: &'a str,
    /// The caller's @context, to read the sources' answers with.
    pub context: &'a ActiveContext,
    /// The caller's Link context URL, forwarded as is (`None`: the core context).
    pub link: Option<String>,
    pub now: chrono::DateTime<chrono::Utc>,
    /// The `Authorization` value for each department, once bound to this request.
    pub relayed: Mutex<HashMap<usize, String>>,
}

/// The broker's forwarding engine.
pub struct Federation {
    settings: FederationSettings,
    /// This broker's name in `Via` headers and `relayed_by` facts.
    name: String,
    /// Its own base URL: registrations that point here are its own store, not a source.
    own_url: String,
    departments: Vec<Department>,
    client: reqwest::Client,
    gate: Arc<tokio::sync::Semaphore>,
    maps: Mutex<HashMap<String, Arc<EntityMap>>>,
    /// Which department's key signed a token (`None`: none of them), so that a caller's tokens
    /// are verified once, not on every request.
    signers: TokenMemo<Option<usize>>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn origin(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(url.origin().ascii_serialization())
}

fn source_failed(source: &Source, message: impl Into<String>) -> SourceWarning {
    SourceWarning {
        source: source.endpoint.clone(),
        message: message.into(),
        failed: true,
    }
}

impl Federation {
    pub fn new(
        settings: FederationSettings,
        name: &str,
        own_url: &str,
    ) -> Result<Federation, String> {
        let mut departments = Vec::new();
        for department in &settings.departments {
            departments.push(Department {
                name: department.name.clone(),
                key: civitas_auth::keys::parse_public(&department.public_key)
                    .map_err(|e| format!("department {}: {e}", department.name))?,
                origin: origin(&department.url)
                    .ok_or_else(|| format!("department {}: invalid url", department.name))?,
            });
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.source_timeout_ms))
            // Header names as HTTP/1.1 conventionally writes them (`Via`, `Link`): some NGSI-LD
            // sources and test harnesses compare them case-sensitively.
            .http1_title_case_headers()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Federation {
            gate: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrency)),
            settings,
            name: name.to_owned(),
            own_url: own_url.trim_end_matches('/').to_owned(),
            departments,
            client,
            maps: Mutex::new(HashMap::new()),
            signers: TokenMemo::new(),
        })
    }

    /// The pseudonym this broker adds to `Via` (RFC 9110 clause 7.6.3).
    fn via_name(&self) -> String {
        format!("civitas-{}", self.name)
    }

    /// Refuses a request that already passed through this broker (clause 6.3.18: `Via`).
    pub fn check_loop(&self, req: &HttpRequest) -> Result<(), Problem> {
        let me = self.via_name();
        let looped = req
            .headers()
            .get_all("via")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.split_whitespace().nth(1))
            .any(|pseudonym| pseudonym == me);
        if looped {
            return Err(Problem::new(
                ErrorType::LoopDetected,
                format!("the request has already passed through {me} (Via header)"),
            ));
        }
        Ok(())
    }

    /// The sources of `registrations`, one per endpoint and tenant, in a stable order; a
    /// registration of this broker itself is left out (its store is asked directly).
    pub fn sources(&self, registrations: &[Registration]) -> Vec<Source> {
        let mut sources: Vec<Source> = Vec::new();
        for registration in registrations {
            let endpoint = registration.endpoint.trim_end_matches('/').to_owned();
            if endpoint == self.own_url {
                continue;
            }
            let department =
                origin(&endpoint).and_then(|o| self.departments.iter().position(|d| d.origin == o));
            let ids: Option<Vec<String>> = registration
                .information
                .iter()
                .map(|info| {
                    if info.entities.is_empty() {
                        return None;
                    }
                    info.entities.iter().map(|e| e.id.clone()).collect()
                })
                .collect::<Option<Vec<Vec<String>>>>()
                .map(|ids| ids.concat());
            let attributes: Option<Vec<String>> = registration
                .information
                .iter()
                .map(|info| {
                    let names: Vec<String> = info.attributes().map(str::to_owned).collect();
                    (!names.is_empty()).then_some(names)
                })
                .collect::<Option<Vec<Vec<String>>>>()
                .map(|names| names.concat());
            let source = Source {
                endpoint,
                tenant: registration.tenant.clone(),
                department,
                headers: registration.context_source_info.clone(),
                ids,
                attributes,
                retrievable: registration.supports("retrieveEntity"),
                batch_queries: registration.supports("queryBatch")
                    && !registration.supports("queryEntity"),
                types: registration
                    .information
                    .iter()
                    .flat_map(|info| info.entities.iter())
                    .flat_map(|entity| entity.types.iter().cloned())
                    .collect(),
            };
            match sources
                .iter_mut()
                .find(|s| s.endpoint == source.endpoint && s.tenant == source.tenant)
            {
                None => sources.push(source),
                Some(known) => {
                    // Several registrations of one source: it holds what any of them names, and
                    // is asked the most direct way any of them allows.
                    known.retrievable |= source.retrievable;
                    known.batch_queries &= source.batch_queries;
                    known.types.extend(source.types);
                    known.ids = known.ids.take().zip(source.ids).map(|(mut a, b)| {
                        a.extend(b);
                        a
                    });
                    known.attributes =
                        known
                            .attributes
                            .take()
                            .zip(source.attributes)
                            .map(|(mut a, b)| {
                                a.extend(b);
                                a
                            });
                }
            }
        }
        sources.sort_by(|a, b| (&a.endpoint, &a.tenant).cmp(&(&b.endpoint, &b.tenant)));
        sources
    }

    /// The caller's tokens for `source`, bound to this request; `Err` with a warning when the
    /// source belongs to a department the caller brought no token for.
    fn credentials(
        &self,
        source: &Source,
        forward: &Forward<'_>,
    ) -> Result<Option<String>, SourceWarning> {
        let Some(index) = source.department else {
            return Ok(None);
        };
        let department = &self.departments[index];
        if let Some(authorization) = forward
            .relayed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&index)
        {
            return Ok(Some(authorization.clone()));
        }
        let mut bound = Vec::new();
        for token in &forward.tokens {
            if self.signer(token) != Some(index) {
                continue;
            }
            let token = civitas_auth::token::bind_to_request(
                token,
                &self.name,
                &forward.request_id,
                chrono::Duration::seconds(self.settings.relay_ttl_s as i64),
                forward.now,
            )
            .map_err(|e| source_failed(source, format!("cannot bind the token: {e}")))?;
            bound.push(token);
        }
        if bound.is_empty() {
            return Err(SourceWarning {
                source: source.endpoint.clone(),
                message: format!(
                    "skipped: the request carries no token of department {}",
                    department.name
                ),
                failed: false,
            });
        }
        let authorization = format!("Bearer {}", bound.join(", "));
        forward
            .relayed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, authorization.clone());
        Ok(Some(authorization))
    }

    /// The department whose root key signed `token`, if any (remembered per token).
    fn signer(&self, token: &str) -> Option<usize> {
        self.signers.get_or(token, || {
            self.departments
                .iter()
                .position(|department| civitas_auth::token::issued_by(token, &department.key))
        })
    }

    /// A request to `source` with what every forwarded request carries: the request id, `Via`
    /// (with this broker added), the caller's @context link, tenant, trace and purpose, the
    /// registration's `contextSourceInfo` headers and the caller's credentials for the source.
    fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
        source: &Source,
        forward: &Forward<'_>,
        authorization: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, url)
            .header("accept", "application/json")
            .header(
                crate::routes::REQUEST_ID_HEADER,
                forward.request_id.as_str(),
            );
        let mut via: Vec<String> = forward
            .req
            .headers()
            .get_all("via")
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        via.push(format!("1.1 {}", self.via_name()));
        request = request.header("via", via.join(", "));
        if let Some(link) = forward.link.as_deref() {
            request = request.header("link", civitas_http::negotiation::context_link(link));
        }
        let tenant = source.tenant.as_deref().unwrap_or(forward.tenant);
        if !tenant.is_empty() {
            request = request.header("ngsild-tenant", tenant);
        }
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        for name in ["traceparent", "tracestate", crate::routes::PURPOSE_HEADER] {
            if let Some(value) = forward.req.headers().get(name) {
                request = request.header(name, value.as_bytes());
            }
        }
        for (name, value) in &source.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request
    }

    /// Sends `request` within the source timeout and behind the concurrency gate; the status and
    /// body of whatever the source answered.
    async fn exchange(
        &self,
        source: &Source,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, actix_web::web::Bytes), SourceWarning> {
        let timeout = Duration::from_millis(self.settings.source_timeout_ms);
        let late = || {
            source_failed(
                source,
                format!("did not answer within {} ms", timeout.as_millis()),
            )
        };
        let work = async {
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| source_failed(source, "the broker is shutting down"))?;
            let response = request.send().await.map_err(|e| {
                if e.is_timeout() {
                    late()
                } else {
                    source_failed(source, format!("unreachable: {e}"))
                }
            })?;
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| source_failed(source, format!("broken answer: {e}")))?;
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err(late()))
    }

    /// Sends one GET to a source; the JSON body of a 200, `None` for a 404.
    async fn get(
        &self,
        source: &Source,
        forward: &Forward<'_>,
        authorization: Option<&str>,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Option<Value>, SourceWarning> {
        let text = self
            .get_text(source, forward, authorization, path, query, None)
            .await?;
        text.map(|text| {
            serde_json::from_slice(&text)
                .map_err(|e| source_failed(source, format!("answered with invalid JSON: {e}")))
        })
        .transpose()
    }

    /// Every read of a source: `path` with `query`, the body of a 200 as it came, `None` for a
    /// 404; with `after`, asking for the ids after it only ([`AFTER_HEADER`]). A query of a
    /// source whose registrations allow queryBatch and not queryEntity goes as
    /// `POST /entityOperations/query`: the parameters the Query data type holds in its body
    /// ([`query_body`]), the others in the URL.
    async fn get_text(
        &self,
        source: &Source,
        forward: &Forward<'_>,
        authorization: Option<&str>,
        path: &str,
        query: &[(String, String)],
        after: Option<&str>,
    ) -> Result<Option<actix_web::web::Bytes>, SourceWarning> {
        let (method, path, query, body) = if path == "entities" && source.batch_queries {
            let (body, params) = query_body(query);
            let post = reqwest::Method::POST;
            (
                post,
                "entityOperations/query",
                params,
                Some(body.to_string()),
            )
        } else {
            (reqwest::Method::GET, path, query.to_vec(), None)
        };
        let mut url = url::Url::parse(&format!("{}/ngsi-ld/v1/{path}", source.endpoint))
            .map_err(|e| source_failed(source, format!("invalid endpoint: {e}")))?;
        if !query.is_empty() {
            url.set_query(Some(&query_string(&query)));
        }
        let mut request = self.request(method, url, source, forward, authorization);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(after) = after {
            request = request.header(AFTER_HEADER, after);
        }
        let (status, bytes) = self.exchange(source, request).await?;
        match status {
            200 => Ok(Some(bytes)),
            404 => Ok(None),
            401 | 403 => Err(SourceWarning {
                source: source.endpoint.clone(),
                message: format!("refused the caller's token ({status})"),
                failed: false,
            }),
            other => Err(source_failed(source, format!("answered {other}"))),
        }
    }

    /// Forwards a write (clause 4.3.6.3, distributed provision): `method` on `path_and_query`
    /// under the source's `/ngsi-ld/v1/`, with `body` (and its media type) if any. What the
    /// source answered, or why it could not be asked.
    pub async fn write(
        &self,
        forward: &Forward<'_>,
        source: &Source,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<(String, &str)>,
    ) -> Result<Answer, SourceWarning> {
        let authorization = self.credentials(source, forward)?;
        let url = url::Url::parse(&format!("{}/ngsi-ld/v1/{path_and_query}", source.endpoint))
            .map_err(|e| source_failed(source, format!("invalid endpoint: {e}")))?;
        let mut request = self.request(method, url, source, forward, authorization.as_deref());
        if let Some((body, media_type)) = body {
            request = request.header("content-type", media_type).body(body);
        }
        let (status, bytes) = self.exchange(source, request).await?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).ok(),
        })
    }

    /// A source's answer (an entity list, or one entity) as its entities, each with its id and
    /// its JSON kept as text: only the ids are read, so entities that are not needed (those off
    /// the page) are never made into trees; [`Federation::entity_of`] reads the others.
    fn items_of(&self, source: &Source, text: &[u8]) -> Result<Vec<RawItem>, SourceWarning> {
        /// An entity's id, the rest of it skipped.
        #[derive(serde::Deserialize)]
        struct Identified<'a> {
            #[serde(borrow, default)]
            id: Option<std::borrow::Cow<'a, str>>,
            #[serde(rename = "@id", borrow, default)]
            at_id: Option<std::borrow::Cow<'a, str>>,
        }
        let invalid = |e: serde_json::Error| {
            source_failed(source, format!("answered with invalid JSON: {e}"))
        };
        let items: Vec<Box<RawValue>> = match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice(text).map_err(invalid)?,
            Some(b'{') => vec![serde_json::from_slice(text).map_err(invalid)?],
            _ => {
                serde_json::from_slice::<serde::de::IgnoredAny>(text).map_err(invalid)?;
                return Err(source_failed(
                    source,
                    "answered with something not an entity list",
                ));
            }
        };
        let without_id = || source_failed(source, "answered with an entity without a valid id");
        items
            .into_iter()
            .map(|item| {
                let Ok(Identified { id, at_id }) = serde_json::from_str(item.get()) else {
                    return Err(without_id());
                };
                let id = id
                    .or(at_id)
                    .filter(|id| civitas_ngsild::names::EntityId::parse(id).is_ok())
                    .ok_or_else(without_id)?
                    .into_owned();
                Ok((id, item))
            })
            .collect()
    }

    /// One entity of a source's answer, read as NGSI-LD (normalized or not, compacted with the
    /// caller's @context).
    fn entity_of(
        &self,
        source: &Source,
        item: &RawValue,
        context: &ActiveContext,
    ) -> Result<Entity, SourceWarning> {
        let item: Value = serde_json::from_str(item.get())
            .map_err(|e| source_failed(source, format!("answered with invalid JSON: {e}")))?;
        expand::entity(&item, context, Payload::Entity)
            .and_then(|canonical| canonical::decode_entity(&canonical, Trust::Caller))
            .map_err(|e| source_failed(source, format!("answered with an invalid entity: {e}")))
    }

    /// Reads a source's entities (normalized, compacted with the caller's @context); an entity
    /// that is not valid NGSI-LD makes the whole answer of that source suspect.
    fn entities_of(
        &self,
        source: &Source,
        text: &[u8],
        context: &ActiveContext,
    ) -> Result<Vec<Entity>, SourceWarning> {
        self.items_of(source, text)?
            .iter()
            .map(|(_, item)| self.entity_of(source, item, context))
            .collect()
    }

    /// One page of a federated query. `local` lists the broker's own matching entities (`None`
    /// when they cannot be asked); `filters` are the caller's query parameters to forward.
    #[expect(
        clippy::too_many_arguments,
        reason = "one page of a query names all of these"
    )]
    pub async fn query<F, Fut>(
        &self,
        forward: &Forward<'_>,
        sources: Vec<Source>,
        filters: &[(String, String)],
        paging: Paging<'_>,
        offset: usize,
        limit: usize,
        local: F,
    ) -> Result<Page, Problem>
    where
        F: Fn(LocalFetch) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Vec<Entity>>, Problem>>,
    {
        let fingerprint = fingerprint(forward, filters);
        let ordered = sources.iter().all(|source| source.department.is_some());
        let cheap = matches!(paging, Paging::Cheapest | Paging::AsGiven);
        if cheap && ordered && offset + limit <= LISTING_PAGE {
            return self
                .first_entities(forward, &sources, filters, offset, limit, true, &local)
                .await;
        }
        if matches!(paging, Paging::AsGiven) && offset + limit <= LISTING_PAGE {
            return self
                .first_entities(forward, &sources, filters, offset, limit, false, &local)
                .await;
        }
        let (map_id, map) = match paging {
            Paging::Map(id) => (id.to_owned(), self.map(id, &fingerprint)?),
            Paging::NewMap | Paging::Cheapest | Paging::AsGiven => {
                let map = self
                    .build_map(forward, sources, filters, fingerprint, &local)
                    .await?;
                let id = format!("urn:ngsi-ld:EntityMap:{}", uuid::Uuid::new_v4());
                self.keep_map(&id, map.clone());
                (id, map)
            }
        };
        let mut warnings = map.warnings.clone();
        let page: Vec<&(String, Vec<usize>)> = map.ids.iter().skip(offset).take(limit).collect();
        // Which ids to fetch from which source.
        let mut wanted: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (id, holders) in &page {
            for holder in holders {
                wanted.entry(*holder).or_default().push(id.clone());
            }
        }
        let mut fetched: HashMap<String, Entity> = HashMap::new();
        let own = wanted.remove(&LOCAL);
        let tasks = wanted.into_iter().map(|(holder, ids)| {
            let source = &map.sources[holder];
            async move { self.fetch_by_ids(forward, source, filters, &ids).await }
        });
        // The broker's own share is read while the sources are asked.
        let (own, outcomes) = futures_util::future::join(
            async {
                match own {
                    Some(ids) => local(LocalFetch::Ids(ids)).await,
                    None => Ok(None),
                }
            },
            futures_util::future::join_all(tasks),
        )
        .await;
        for entity in own?.into_iter().flatten() {
            merge_into(&mut fetched, entity);
        }
        for outcome in outcomes {
            match outcome {
                Ok(entities) => {
                    for entity in entities {
                        merge_into(&mut fetched, entity);
                    }
                }
                Err(warning) => warnings.push(warning),
            }
        }
        self.check_complete(forward, &warnings)?;
        let entities = page
            .iter()
            .filter_map(|(id, _)| fetched.remove(id))
            .collect();
        Ok(Page {
            entities,
            total: Some(map.ids.len() as u64),
            map_id: Some(map_id),
            warnings,
            sources: map.sources.iter().map(|s| s.endpoint.clone()).collect(),
        })
    }

    /// One page from the first `offset + limit` entities of every source, merged in id order:
    /// one round trip. Exact because every source answers in id order: an entity within the
    /// first `offset + limit` of the union is within the first `offset + limit` of every source
    /// that holds it, so it arrives whole. Without `ask_limit`, sources are asked with `filters`
    /// alone and answer with their own first page ([`Paging::AsGiven`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "one page of a query names all of these"
    )]
    async fn first_entities<F, Fut>(
        &self,
        forward: &Forward<'_>,
        sources: &[Source],
        filters: &[(String, String)],
        offset: usize,
        limit: usize,
        ask_limit: bool,
        local: &F,
    ) -> Result<Page, Problem>
    where
        F: Fn(LocalFetch) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Vec<Entity>>, Problem>>,
    {
        let want = offset + limit;
        let tasks = sources
            .iter()
            .enumerate()
            .map(|(index, source)| async move {
                let Some(mut query) = source.narrow(filters, forward.context) else {
                    return Ok((index, Vec::new()));
                };
                let authorization = self.credentials(source, forward)?;
                if ask_limit {
                    query.push(("limit".to_owned(), want.to_string()));
                }
                match self
                    .get_text(
                        source,
                        forward,
                        authorization.as_deref(),
                        "entities",
                        &query,
                        None,
                    )
                    .await?
                {
                    None => Ok((index, Vec::new())),
                    Some(text) => Ok((index, self.items_of(source, &text)?)),
                }
            });
        let mut warnings = Vec::new();
        // Each source's entities as JSON, by id: only those that make the page are read as
        // NGSI-LD (a source answers up to `want`, the page is `limit` of all of them).
        let mut answers: Vec<(usize, Vec<RawItem>)> = Vec::new();
        // The broker's own share is read while the sources are asked.
        let (own, outcomes) = futures_util::future::join(
            local(LocalFetch::First(want)),
            futures_util::future::join_all(tasks),
        )
        .await;
        let mut merged: HashMap<String, Entity> = HashMap::new();
        for entity in own?.into_iter().flatten() {
            merge_into(&mut merged, entity);
        }
        for outcome in outcomes {
            match outcome {
                Ok(answer) => answers.push(answer),
                Err(warning) => warnings.push(warning),
            }
        }
        let entities = loop {
            let mut ids: Vec<&str> = merged.keys().map(String::as_str).collect();
            ids.extend(
                answers
                    .iter()
                    .flat_map(|(_, items)| items.iter().map(|(id, _)| id.as_str())),
            );
            ids.sort_unstable();
            ids.dedup();
            let page: std::collections::HashSet<&str> =
                ids.into_iter().skip(offset).take(limit).collect();
            let mut entities: HashMap<String, Entity> = merged
                .iter()
                .filter(|(id, _)| page.contains(id.as_str()))
                .map(|(id, entity)| (id.clone(), entity.clone()))
                .collect();
            // A source with an invalid entity on the page is left out, and the page made again.
            let mut broken = None;
            'sources: for (position, (index, items)) in answers.iter().enumerate() {
                for (_, item) in items.iter().filter(|(id, _)| page.contains(id.as_str())) {
                    match self.entity_of(&sources[*index], item, forward.context) {
                        Ok(entity) => merge_into(&mut entities, entity),
                        Err(warning) => {
                            broken = Some((position, warning));
                            break 'sources;
                        }
                    }
                }
            }
            match broken {
                Some((position, warning)) => {
                    answers.remove(position);
                    warnings.push(warning);
                }
                None => break entities,
            }
        };
        self.check_complete(forward, &warnings)?;
        let mut entities: Vec<Entity> = entities.into_values().collect();
        entities.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(Page {
            entities,
            total: None,
            map_id: None,
            warnings,
            sources: sources.iter().map(|s| s.endpoint.clone()).collect(),
        })
    }

    /// Refuses a partial answer when the caller asked for all or nothing.
    pub fn check_complete(
        &self,
        forward: &Forward<'_>,
        warnings: &[SourceWarning],
    ) -> Result<(), Problem> {
        let all = forward
            .req
            .headers()
            .get(COMPLETENESS_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("all"));
        if let Some(failed) = warnings.iter().find(|w| w.failed)
            && all
        {
            return Err(Problem::new(
                ErrorCode::SourceFailed,
                format!(
                    "the source {} failed ({}) and the request asked for all or nothing",
                    failed.source, failed.message
                ),
            ));
        }
        Ok(())
    }

    fn map(&self, id: &str, fingerprint: &str) -> Result<Arc<EntityMap>, Problem> {
        let ttl = Duration::from_secs(self.settings.entity_map_ttl_s);
        let maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        match maps.get(id) {
            Some(map) if map.created.elapsed() <= ttl && map.fingerprint == fingerprint => {
                Ok(map.clone())
            }
            Some(map) if map.created.elapsed() <= ttl => Err(Problem::bad_request(format!(
                "the entity map {id} was made for another query or caller"
            ))),
            _ => Err(Problem::not_found(format!(
                "no entity map {id} exists (maps expire after {} s)",
                self.settings.entity_map_ttl_s
            ))),
        }
    }

    fn keep_map(&self, id: &str, map: Arc<EntityMap>) {
        let ttl = Duration::from_secs(self.settings.entity_map_ttl_s);
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        maps.retain(|_, map| map.created.elapsed() <= ttl);
        maps.insert(id.to_owned(), map);
    }

    async fn build_map<F, Fut>(
        &self,
        forward: &Forward<'_>,
        sources: Vec<Source>,
        filters: &[(String, String)],
        fingerprint: String,
        local: &F,
    ) -> Result<Arc<EntityMap>, Problem>
    where
        F: Fn(LocalFetch) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Vec<Entity>>, Problem>>,
    {
        let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut warnings = Vec::new();
        if let Some(entities) = local(LocalFetch::All).await? {
            for entity in entities {
                holders
                    .entry(entity.id.as_str().to_owned())
                    .or_default()
                    .push(LOCAL);
            }
        }
        let listings = sources
            .iter()
            .map(|source| self.list_ids(forward, source, filters));
        for (index, outcome) in futures_util::future::join_all(listings)
            .await
            .into_iter()
            .enumerate()
        {
            match outcome {
                Ok(ids) => {
                    for id in ids {
                        holders.entry(id).or_default().push(index);
                    }
                }
                Err(warning) => warnings.push(warning),
            }
            if holders.len() > self.settings.entity_map_max {
                return Err(Problem::new(
                    ErrorType::TooManyResults,
                    format!(
                        "the query matches more than {} entities across the sources; narrow it",
                        self.settings.entity_map_max
                    ),
                ));
            }
        }
        self.check_complete(forward, &warnings)?;
        Ok(Arc::new(EntityMap {
            created: Instant::now(),
            fingerprint,
            sources,
            ids: holders.into_iter().collect(),
            warnings,
        }))
    }

    /// Every id a source has for the query, page by page.
    async fn list_ids(
        &self,
        forward: &Forward<'_>,
        source: &Source,
        filters: &[(String, String)],
    ) -> Result<Vec<String>, SourceWarning> {
        let Some(filters) = source.narrow(filters, forward.context) else {
            return Ok(Vec::new());
        };
        let authorization = self.credentials(source, forward)?;
        let mut ids: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // A department's connector answers in id order and pages by the last id it gave
        // (keyset paging); one that turns out not to (it starts over) is paged by offset.
        let mut keyset = source.department.is_some();
        loop {
            let after = ids.last().filter(|_| keyset).cloned();
            let mut query = filters.clone();
            query.push(("limit".to_owned(), LISTING_PAGE.to_string()));
            let offset = if after.is_some() { 0 } else { ids.len() };
            query.push(("offset".to_owned(), offset.to_string()));
            query.push(("options".to_owned(), "keyValues".to_owned()));
            query.push(("pick".to_owned(), "id".to_owned()));
            let text = self
                .get_text(
                    source,
                    forward,
                    authorization.as_deref(),
                    "entities",
                    &query,
                    after.as_deref(),
                )
                .await?;
            let items = match text {
                Some(text) => self.items_of(source, &text)?,
                None => Vec::new(),
            };
            let first = items.first().map(|(id, _)| id.as_str());
            if let (Some(after), Some(first)) = (after.as_deref(), first)
                && first <= after
            {
                // It started over: it does not know the header.
                keyset = false;
                continue;
            }
            let returned = items.len();
            let mut new = 0;
            for (id, _) in items {
                if seen.insert(id.clone()) {
                    ids.push(id);
                    new += 1;
                }
            }
            // A source that ignores offset would repeat itself: stop when nothing new comes.
            if returned < LISTING_PAGE || new == 0 || ids.len() > self.settings.entity_map_max {
                return Ok(ids);
            }
        }
    }

    /// The entities `ids` from a source, normalized.
    async fn fetch_by_ids(
        &self,
        forward: &Forward<'_>,
        source: &Source,
        filters: &[(String, String)],
        ids: &[String],
    ) -> Result<Vec<Entity>, SourceWarning> {
        let Some(filters) = source.narrow(filters, forward.context) else {
            return Ok(Vec::new());
        };
        let authorization = self.credentials(source, forward)?;
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_REQUEST) {
            let mut query: Vec<(String, String)> = filters
                .iter()
                .filter(|(name, _)| name != "id")
                .cloned()
                .collect();
            query.push(("id".to_owned(), chunk.join(",")));
            query.push(("limit".to_owned(), chunk.len().to_string()));
            if let Some(text) = self
                .get_text(
                    source,
                    forward,
                    authorization.as_deref(),
                    "entities",
                    &query,
                    None,
                )
                .await?
            {
                out.extend(self.entities_of(source, &text, forward.context)?);
            }
        }
        Ok(out)
    }

    /// A federated retrieval: the entity from every source that has it, merged. `Ok(None)` when
    /// no source has it.
    pub async fn retrieve(
        &self,
        forward: &Forward<'_>,
        sources: Vec<Source>,
        id: &str,
        filters: &[(String, String)],
        local: Option<Entity>,
    ) -> Result<(Option<Entity>, Vec<SourceWarning>), Problem> {
        let tasks = sources.iter().map(|source| async move {
            let Some(mut filters) = source.narrow(filters, forward.context) else {
                return Ok(Vec::new());
            };
            // The entity is named by the path, or by the query's own id.
            filters.retain(|(name, _)| name != "id");
            let authorization = self.credentials(source, forward)?;
            let text = if source.retrievable {
                let path = format!("entities/{}", crate::routes::path_segment(id));
                self.get_text(
                    source,
                    forward,
                    authorization.as_deref(),
                    &path,
                    &filters,
                    None,
                )
                .await?
            } else {
                // A query for the id (as a POST when the source allows only that: `get_text`).
                filters.push(("id".to_owned(), id.to_owned()));
                if !source.types.is_empty() && !filters.iter().any(|(name, _)| name == "type") {
                    filters.push(("type".to_owned(), source.type_list(forward.context)));
                }
                self.get_text(
                    source,
                    forward,
                    authorization.as_deref(),
                    "entities",
                    &filters,
                    None,
                )
                .await?
            };
            match text {
                None => Ok(Vec::new()),
                Some(text) => self.entities_of(source, &text, forward.context),
            }
        });
        let mut merged: HashMap<String, Entity> = HashMap::new();
        if let Some(entity) = local {
            merge_into(&mut merged, entity);
        }
        let mut warnings = Vec::new();
        for outcome in futures_util::future::join_all(tasks).await {
            match outcome {
                Ok(entities) => {
                    for entity in entities.into_iter().filter(|e| e.id.as_str() == id) {
                        merge_into(&mut merged, entity);
                    }
                }
                Err(warning) => warnings.push(warning),
            }
        }
        self.check_complete(forward, &warnings)?;
        Ok((merged.remove(id), warnings))
    }
}

impl Federation {
    /// Sends one GET (`path` under `/ngsi-ld/v1/`, with `query`) to every source in parallel;
    /// the JSON bodies of those that answered 200, and a warning for each that did not answer
    /// usefully. A 404 is an answer: the source has nothing.
    pub async fn gather(
        &self,
        forward: &Forward<'_>,
        sources: &[Source],
        path: &str,
        query: &[(String, String)],
    ) -> Result<(Vec<Value>, Vec<SourceWarning>), Problem> {
        let tasks = sources.iter().map(|source| async move {
            let authorization = self.credentials(source, forward)?;
            self.get(source, forward, authorization.as_deref(), path, query)
                .await
        });
        let mut bodies = Vec::new();
        let mut warnings = Vec::new();
        for outcome in futures_util::future::join_all(tasks).await {
            match outcome {
                Ok(Some(body)) => bodies.push(body),
                Ok(None) => {}
                Err(warning) => warnings.push(warning),
            }
        }
        self.check_complete(forward, &warnings)?;
        Ok((bodies, warnings))
    }
}

/// A query's URL parameters as the body of `POST /entityOperations/query` (the Query data type,
/// clause 5.2.23) and the parameters that stay in the URL (paging, options and the rest). `id`,
/// `type` and `idPattern` make the entity selectors (one per id), `attrs` a list, the geo-query
/// parameters `geoQ`; `q`, `csf`, `scopeQ` and `lang` keep their names.
fn query_body(query: &[(String, String)]) -> (Value, Vec<(String, String)>) {
    let mut body = serde_json::Map::new();
    body.insert("type".to_owned(), Value::from("Query"));
    let mut url = Vec::new();
    let (mut ids, mut entity_type, mut id_pattern) = (Vec::new(), None, None);
    let mut geo = serde_json::Map::new();
    for (name, value) in query {
        match name.as_str() {
            "id" => ids.extend(value.split(',').map(str::trim).map(Value::from)),
            "type" => entity_type = Some(Value::from(value.as_str())),
            "idPattern" => id_pattern = Some(Value::from(value.as_str())),
            "attrs" => {
                body.insert(
                    "attrs".to_owned(),
                    value.split(',').map(str::trim).collect::<Vec<_>>().into(),
                );
            }
            "q" | "csf" | "scopeQ" | "lang" => {
                body.insert(name.clone(), Value::from(value.as_str()));
            }
            "georel" | "geometry" | "geoproperty" => {
                geo.insert(name.clone(), Value::from(value.as_str()));
            }
            "coordinates" => {
                let coordinates =
                    serde_json::from_str(value).unwrap_or(Value::from(value.as_str()));
                geo.insert(name.clone(), coordinates);
            }
            _ => url.push((name.clone(), value.clone())),
        }
    }
    let selector = |id: Option<Value>| {
        let mut selector = serde_json::Map::new();
        if let Some(id) = id {
            selector.insert("id".to_owned(), id);
        } else if let Some(pattern) = &id_pattern {
            selector.insert("idPattern".to_owned(), pattern.clone());
        }
        if let Some(entity_type) = &entity_type {
            selector.insert("type".to_owned(), entity_type.clone());
        }
        Value::Object(selector)
    };
    let selectors: Vec<Value> = if ids.is_empty() {
        let only = selector(None);
        if only.as_object().is_some_and(serde_json::Map::is_empty) {
            Vec::new()
        } else {
            vec![only]
        }
    } else {
        ids.into_iter().map(|id| selector(Some(id))).collect()
    };
    if !selectors.is_empty() {
        body.insert("entities".to_owned(), Value::Array(selectors));
    }
    if !geo.is_empty() {
        body.insert("geoQ".to_owned(), Value::Object(geo));
    }
    (Value::Object(body), url)
}

/// What a query value escapes: what would end or split it, and what is not printable ASCII. The
/// rest (`:` and `,` of ids and lists, say) goes as the caller would write it, which some NGSI-LD
/// sources compare literally.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `pairs` as a URL query string.
fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(name, QUERY_VALUE),
                percent_encoding::utf8_percent_encode(value, QUERY_VALUE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The audit summary of a federated request: the caller's tokens (by revocation id), and which of
/// `sources` were asked, skipped for want of a token, or failed.
pub fn summary(
    forward: &Forward<'_>,
    sources: &[String],
    warnings: &[SourceWarning],
) -> civitas_audit::record::Federated {
    let skipped: Vec<String> = warnings
        .iter()
        .filter(|w| !w.failed && w.message.starts_with("skipped"))
        .map(|w| w.source.clone())
        .collect();
    let failed: Vec<String> = warnings
        .iter()
        .filter(|w| !skipped.contains(&w.source))
        .map(|w| w.source.clone())
        .collect();
    civitas_audit::record::Federated {
        tokens: forward
            .tokens
            .iter()
            .filter_map(|token| civitas_auth::token::authority_revocation_id(token))
            .collect(),
        asked: sources
            .iter()
            .filter(|s| !skipped.contains(s))
            .cloned()
            .collect(),
        skipped,
        failed,
    }
}

/// A digest binding an entity map to the caller (its credentials and tenant) and the query.
fn fingerprint(forward: &Forward<'_>, filters: &[(String, String)]) -> String {
    let mut text = String::new();
    for token in &forward.tokens {
        text.push_str(token);
        text.push('\n');
    }
    text.push_str(forward.tenant);
    text.push('\n');
    text.push_str(forward.link.as_deref().unwrap_or(""));
    for (name, value) in filters {
        text.push('\n');
        text.push_str(name);
        text.push('=');
        text.push_str(value);
    }
    civitas_audit::record::sha256_hex(text.as_bytes())
}

/// Adds `entity` to `merged`, uniting it with what another source said about the same entity.
fn merge_into(merged: &mut HashMap<String, Entity>, entity: Entity) {
    match merged.get_mut(entity.id.as_str()) {
        None => {
            merged.insert(entity.id.as_str().to_owned(), entity);
        }
        Some(existing) => merge_entity(existing, entity),
    }
}

/// Unites two views of one entity (clause 4.3.6.4): all types and scopes; per attribute and
/// `datasetId`, the instance observed last (an instance without `observedAt` loses to one with;
/// between equals the first source's stays).
pub fn merge_entity(target: &mut Entity, other: Entity) {
    for entity_type in other.types {
        if !target.types.contains(&entity_type) {
            target.types.push(entity_type);
        }
    }
    for scope in other.scopes {
        if !target.scopes.contains(&scope) {
            target.scopes.push(scope);
        }
    }
    for (name, instances) in other.attributes {
        let slot = target.attributes.entry(name).or_default();
        for instance in instances {
            match slot
                .iter_mut()
                .find(|existing| existing.dataset_id == instance.dataset_id)
            {
                None => slot.push(instance),
                Some(existing) => {
                    if observed(&instance) > observed(existing) {
                        *existing = instance;
                    }
                }
            }
        }
    }
}

fn observed(attribute: &Attribute) -> Option<chrono::DateTime<chrono::Utc>> {
    attribute
        .observed_at
        .as_deref()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use civitas_ngsild::entity::AttributeValue;
    use civitas_ngsild::names::EntityId;
    use serde_json::json;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_query_becomes_a_query_body_and_paging_stays_in_the_url() {
        let (body, url) = query_body(&pairs(&[
            ("type", "Vehicle"),
            ("id", "urn:a, urn:b"),
            ("attrs", "speed,fuel"),
            ("georel", "near;maxDistance==10"),
            ("geometry", "Point"),
            ("coordinates", "[1.5,2]"),
            ("limit", "20"),
            ("options", "keyValues"),
        ]));
        assert_eq!(
            body,
            json!({"type": "Query", "attrs": ["speed", "fuel"],
                   "entities": [{"id": "urn:a", "type": "Vehicle"},
                                {"id": "urn:b", "type": "Vehicle"}],
                   "geoQ": {"georel": "near;maxDistance==10", "geometry": "Point",
                            "coordinates": [1.5, 2]}})
        );
        assert_eq!(url, pairs(&[("limit", "20"), ("options", "keyValues")]));

        let (body, url) = query_body(&pairs(&[("idPattern", "urn:.*"), ("q", "speed>1")]));
        assert_eq!(
            body,
            json!({"type": "Query", "q": "speed>1", "entities": [{"idPattern": "urn:.*"}]})
        );
        assert!(url.is_empty());
        let (body, _) = query_body(&pairs(&[("attrs", "speed")]));
        assert_eq!(body, json!({"type": "Query", "attrs": ["speed"]}));
    }

    fn entity(types: &[&str], attributes: &[(&str, Option<&str>, Option<&str>, i64)]) -> Entity {
        let mut entity = Entity {
            id: EntityId::parse("urn:ngsi-ld:V:1").expect("id"),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            scopes: Vec::new(),
            attributes: Default::default(),
            created_at: None,
            modified_at: None,
        };
        for (name, dataset, observed, value) in attributes {
            let mut attribute = Attribute::new(AttributeValue::Property(Value::from(*value)));
            attribute.dataset_id = dataset.map(str::to_owned);
            attribute.observed_at = observed.map(str::to_owned);
            entity
                .attributes
                .entry((*name).to_owned())
                .or_default()
                .push(attribute);
        }
        entity
    }

    fn value(entity: &Entity, name: &str, dataset: Option<&str>) -> Value {
        match &entity.instance(name, dataset).expect("instance").value {
            AttributeValue::Property(v) => v.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn merging_unites_types_and_keeps_the_latest_observation_per_dataset() {
        let mut a = entity(
            &["T"],
            &[
                ("speed", None, Some("2026-01-01T00:00:00Z"), 1),
                ("speed", Some("urn:d:1"), None, 10),
                ("name", None, None, 5),
            ],
        );
        let b = entity(
            &["U"],
            &[
                ("speed", None, Some("2026-01-01T00:00:01Z"), 2),
                ("speed", Some("urn:d:2"), None, 20),
                ("name", None, None, 6),
                ("brand", None, None, 7),
            ],
        );
        merge_entity(&mut a, b);
        assert_eq!(a.types, ["T", "U"]);
        assert_eq!(value(&a, "speed", None), 2, "the later observation wins");
        assert_eq!(value(&a, "speed", Some("urn:d:1")), 10);
        assert_eq!(value(&a, "speed", Some("urn:d:2")), 20);
        assert_eq!(
            value(&a, "name", None),
            5,
            "without observedAt the first stays"
        );
        assert_eq!(value(&a, "brand", None), 7);
        // An older observation does not replace a newer one.
        let older = entity(&["T"], &[("speed", None, Some("2025-01-01T00:00:00Z"), 0)]);
        merge_entity(&mut a, older);
        assert_eq!(value(&a, "speed", None), 2);
    }

    #[test]
    fn query_values_keep_ids_and_lists_readable_and_escape_separators() {
        let pairs = [
            (
                "id".to_owned(),
                "urn:ngsi-ld:A:1,urn:ngsi-ld:A:2".to_owned(),
            ),
            ("q".to_owned(), "a==\"x y\";b>1&c".to_owned()),
            ("type".to_owned(), "https://example.org/T#x".to_owned()),
        ];
        let query = query_string(&pairs);
        assert_eq!(
            query,
            "id=urn:ngsi-ld:A:1,urn:ngsi-ld:A:2&q=a%3D%3D%22x%20y%22%3Bb%3E1%26c\
             &type=https://example.org/T%23x"
        );
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded, pairs);
    }

    #[test]
    fn warnings_are_valid_header_values() {
        let warning = SourceWarning {
            source: "http://127.0.0.1:1".to_owned(),
            message: "said \"no\"\nand left".to_owned(),
            failed: true,
        };
        let value = warning.header_value();
        assert_eq!(value, "199 http://127.0.0.1:1 \"said 'no''and left\"");
        assert!(actix_web::http::header::HeaderValue::from_str(&value).is_ok());
    }
}
