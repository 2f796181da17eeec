//! `/audit/v1/`: the department's audit log. In the C2SP tlog-tiles layout, its latest signed
//! checkpoint and the hash tiles and entry bundles of the tree it signs; as JSON, inclusion proofs
//! (by leaf index or leaf hash), consistency proofs, entries by range and a filtered listing of
//! records. Everything needs a token with the `audit` right, except the log's public key.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use civitas_audit::merkle::{Hash, leaf_hash};
use civitas_audit::record::{Decision, Event, Pseudonymizer, Record};
use civitas_audit::tiles::{Resource, TILE_WIDTH, encode_bundle};
use civitas_auth::authorizer::Operation;
use civitas_http::{Problem, negotiation};
use serde_json::{Value, json};

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
    )
    .service(
        web::resource("/audit/v1/key")
            .route(web::get().to(key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/audit/v1/proof/inclusion")
            .route(web::get().to(inclusion))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/audit/v1/proof/consistency")
            .route(web::get().to(consistency))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/audit/v1/entries")
            .route(web::get().to(entries))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/audit/v1/records")
            .route(web::get().to(records))
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

/// `GET /audit/v1/checkpoint`: the latest signed checkpoint (a C2SP signed note), with the
/// cosignatures its witnesses returned.
async fn checkpoint(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    let (_, note) = state
        .audit
        .latest_cosigned_checkpoint()
        .await
        .map_err(|error| Problem::internal(&error))?
        .ok_or_else(|| Problem::not_found("the audit log has no checkpoint yet"))?;
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

/// `GET /audit/v1/key`: the log's verifier key (C2SP signed-note vkey), public.
async fn key(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    Params::parse(&req, &[])?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!("{}\n", state.audit.verifier().to_vkey())))
}

/// A non-negative integer parameter.
fn integer(params: &Params, name: &str) -> Result<Option<u64>, Problem> {
    params
        .get(name)
        .map(|value| {
            value.parse::<u64>().map_err(|_| {
                Problem::bad_request(format!(
                    "{name} must be a non-negative integer, not {value:?}"
                ))
            })
        })
        .transpose()
}

/// A leaf hash: 64 hexadecimal digits, or base64 (standard or URL-safe).
fn parse_hash(value: &str) -> Result<Hash, Problem> {
    let bad = || {
        Problem::bad_request(format!(
            "hash must be a SHA-256 hash in hex or base64, not {value:?}"
        ))
    };
    let bytes = if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&value[2 * i..2 * i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, Problem>>()?
    } else {
        BASE64
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(value))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
            .map_err(|_| bad())?
    };
    Hash::try_from(bytes).map_err(|_| bad())
}

fn json_response(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("cache-control", "no-cache"))
        .body(body.to_string())
}

fn proof_json(proof: &[Hash]) -> Value {
    Value::Array(
        proof
            .iter()
            .map(|hash| json!(BASE64.encode(hash)))
            .collect(),
    )
}

fn proof_problem(error: crate::audit::proofs::ProofError) -> Problem {
    match error {
        crate::audit::proofs::ProofError::Invalid(error) => Problem::bad_request(error.to_string()),
        other => Problem::internal(&other),
    }
}

/// The stored size of the log (entries appended, checkpointed or not), once every record
/// acknowledged before this request is stored.
async fn stored_size(state: &AppState) -> Result<u64, Problem> {
    state.audit.settled().await;
    state
        .audit
        .store()
        .audit_size(state.audit.name())
        .await
        .map_err(|error| Problem::internal(&error))
}

/// `GET /audit/v1/proof/inclusion?index=N|hash=H[&treeSize=S]`: the inclusion proof of a leaf
/// (RFC 9162 §2.1.3) in the tree of `treeSize` leaves, by default the latest checkpoint's.
async fn inclusion(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["index", "hash", "treeSize"])?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    let store = state.audit.store();
    let log = state.audit.name();
    let size = match integer(&params, "treeSize")? {
        Some(size) => size,
        None => latest(&state).await?.0,
    };
    if size > stored_size(&state).await? {
        return Err(Problem::not_found(format!(
            "the log does not have {size} entries yet"
        )));
    }
    let index = match (integer(&params, "index")?, params.get("hash")) {
        (Some(index), None) => index,
        (None, Some(hash)) => {
            let hash = parse_hash(hash)?;
            store
                .audit_leaf_index(log, &hash)
                .await
                .map_err(|error| Problem::internal(&error))?
                .ok_or_else(|| Problem::not_found("no entry of the log has this leaf hash"))?
        }
        _ => return Err(Problem::bad_request("give exactly one of index and hash")),
    };
    if index >= size {
        return Err(Problem::bad_request(format!(
            "leaf {index} is not in the tree of {size} entries"
        )));
    }
    let proof = crate::audit::proofs::inclusion_proof(store, log, index, size)
        .await
        .map_err(proof_problem)?;
    let leaf = store
        .audit_hashes(log, &[(0, index)])
        .await
        .map_err(|error| Problem::internal(&error))?
        .pop()
        .flatten()
        .ok_or_else(|| Problem::not_found(format!("no entry {index}")))?;
    let checkpoint = store
        .audit_checkpoint(log, size)
        .await
        .map_err(|error| Problem::internal(&error))?;
    Ok(json_response(json!({
        "leafIndex": index,
        "treeSize": size,
        "leafHash": BASE64.encode(leaf),
        "proof": proof_json(&proof),
        "checkpoint": checkpoint,
    })))
}

/// `GET /audit/v1/proof/consistency?from=A[&to=B]`: the consistency proof (RFC 9162 §2.1.4)
/// from the tree of `from` leaves to that of `to`, by default the latest checkpoint's.
async fn consistency(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["from", "to"])?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    let from = integer(&params, "from")?.ok_or_else(|| Problem::bad_request("from is required"))?;
    let to = match integer(&params, "to")? {
        Some(to) => to,
        None => latest(&state).await?.0,
    };
    if from > to {
        return Err(Problem::bad_request(format!(
            "from ({from}) must not be larger than to ({to})"
        )));
    }
    if to > stored_size(&state).await? {
        return Err(Problem::not_found(format!(
            "the log does not have {to} entries yet"
        )));
    }
    let proof =
        crate::audit::proofs::consistency_proof(state.audit.store(), state.audit.name(), from, to)
            .await
            .map_err(proof_problem)?;
    Ok(json_response(
        json!({"from": from, "to": to, "proof": proof_json(&proof)}),
    ))
}

/// At most this many entries per page of `entries` and `records`.
const MAX_PAGE: u64 = 1000;

/// How many entries one `records` request scans at most before it answers with `next`.
const MAX_SCAN: u64 = 100_000;

/// `GET /audit/v1/entries?start=N[&end=M]`: entries `[start, end)` (at most 1000), each with its
/// leaf hash, its bytes (base64) and its record.
async fn entries(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(&req, &["start", "end"])?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    let start = integer(&params, "start")?.unwrap_or(0);
    let size = stored_size(&state).await?;
    let end = integer(&params, "end")?
        .unwrap_or(u64::MAX)
        .min(start.saturating_add(MAX_PAGE))
        .min(size);
    let checkpointed = checkpoint_size(&state).await?;
    let mut listed = Vec::new();
    if start < end {
        let stored = state
            .audit
            .store()
            .audit_entries(state.audit.name(), start, end)
            .await
            .map_err(|error| Problem::internal(&error))?;
        for (index, entry) in (start..).zip(&stored) {
            let record: Value = serde_json::from_slice(entry).unwrap_or(Value::Null);
            listed.push(json!({
                "index": index,
                "leafHash": BASE64.encode(leaf_hash(entry)),
                "entry": BASE64.encode(entry),
                "record": record,
            }));
        }
    }
    Ok(json_response(
        json!({"checkpointSize": checkpointed, "size": size, "entries": listed}),
    ))
}

/// The latest checkpoint's size, or `None` before the first.
async fn checkpoint_size(state: &AppState) -> Result<Option<u64>, Problem> {
    Ok(state
        .audit
        .store()
        .audit_latest_checkpoint(state.audit.name())
        .await
        .map_err(|error| Problem::internal(&error))?
        .map(|(size, _)| size))
}

/// `GET /audit/v1/records?…`: the records matching every filter given, in log order, a page at a
/// time (see [`RecordFilter`] and [`Scan`]); `next` is the index to continue `after`, or null at
/// the end.
async fn records(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let params = Params::parse(
        &req,
        &[
            "holder",
            "entity",
            "type",
            "operation",
            "decision",
            "requestId",
            "since",
            "until",
            "after",
            "limit",
        ],
    )?;
    authorize_whole(&state, &req, Operation::Audit).await?;
    // A short type name is expanded like in NGSI-LD queries: against the Link header's @context,
    // else the core context. Without a type, no @context is needed.
    let context = match params.get("type") {
        Some(_) => Some(
            state
                .contexts
                .resolve(&negotiation::request_context(&req, None)?)
                .await?,
        ),
        None => None,
    };
    let filter = RecordFilter::parse(&params, state.audit.pseudonymizer(), |name| {
        context.as_ref().map_or_else(
            || name.to_owned(),
            |context| context.active.expand_name(name),
        )
    })?;
    let limit = integer(&params, "limit")?.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let start = match integer(&params, "after")? {
        Some(after) => after.saturating_add(1),
        None => 0,
    };
    let size = stored_size(&state).await?;
    let mut scan = Scan::new(&filter, start, limit, size, MAX_SCAN);
    while let Some(range) = scan.wanted() {
        let stored = state
            .audit
            .store()
            .audit_entries(state.audit.name(), range.start, range.end)
            .await
            .map_err(|error| Problem::internal(&error))?;
        scan.feed(range, &stored);
    }
    let (listed, next) = scan.finish();
    Ok(json_response(json!({
        "checkpointSize": checkpoint_size(&state).await?,
        "records": listed,
        "next": next,
    })))
}

/// One `records` request's walk through the log. Entries are fed to it in index order, a chunk
/// at a time, until the page is full, the request's scan bound is reached or the log ends;
/// [`Scan::finish`] then says where the next request continues.
struct Scan<'f> {
    filter: &'f RecordFilter,
    limit: u64,
    /// The next index to read.
    position: u64,
    /// Where this request stops reading: the log's size or the scan bound, whichever comes first.
    end: u64,
    /// The log's size when the request began.
    size: u64,
    listed: Vec<Value>,
}

impl<'f> Scan<'f> {
    /// A scan of at most `max_scan` entries from index `start`, for a page of `limit` records.
    fn new(filter: &'f RecordFilter, start: u64, limit: u64, size: u64, max_scan: u64) -> Self {
        Scan {
            filter,
            limit,
            position: start,
            end: size.min(start.saturating_add(max_scan)),
            size,
            listed: Vec::new(),
        }
    }

    /// The entries to read next (at most a page of them), or `None` once the scan is over.
    fn wanted(&self) -> Option<std::ops::Range<u64>> {
        let full = self.listed.len() as u64 >= self.limit;
        (!full && self.position < self.end)
            .then(|| self.position..self.end.min(self.position.saturating_add(MAX_PAGE)))
    }

    /// Reads the entries of `range` (as [`Scan::wanted`] asked for), stopping when the page is
    /// full. An entry that is not a record is skipped and logged.
    fn feed(&mut self, range: std::ops::Range<u64>, entries: &[Vec<u8>]) {
        for (index, entry) in (range.start..range.end).zip(entries) {
            self.position = index + 1;
            let record = match Record::from_entry(entry) {
                Ok(record) => record,
                Err(error) => {
                    tracing::error!(%error, index, "an audit entry is not a record");
                    continue;
                }
            };
            if !self.filter.matches(&record) {
                continue;
            }
            self.listed.push(json!({
                "index": index,
                "leafHash": BASE64.encode(leaf_hash(entry)),
                "record": serde_json::from_slice::<Value>(entry).unwrap_or(Value::Null),
            }));
            if self.listed.len() as u64 >= self.limit {
                return;
            }
        }
        if (entries.len() as u64) < range.end - range.start {
            tracing::error!(
                start = range.start,
                end = range.end,
                returned = entries.len(),
                "the audit log returned fewer entries than it holds"
            );
        }
        // Never read the same entries twice, even if fewer came back than were asked for.
        self.position = self.position.max(range.end);
    }

    /// The records listed, and the index to continue `after` when the log goes on beyond what
    /// was read (`None` when the scan reached the end of the log).
    fn finish(self) -> (Vec<Value>, Option<u64>) {
        let next = if self.position < self.size {
            self.position.checked_sub(1)
        } else {
            None
        };
        (self.listed, next)
    }
}

/// A record's decision, as the `decision` filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecisionKind {
    Allowed,
    Refused,
    /// A broker's request it forwarded whole, deciding nothing itself.
    Forwarded,
}

impl DecisionKind {
    fn of(decision: &Decision) -> DecisionKind {
        match decision {
            Decision::Allowed => DecisionKind::Allowed,
            Decision::Refused { .. } => DecisionKind::Refused,
            Decision::Forwarded => DecisionKind::Forwarded,
        }
    }
}

/// The filters of a record listing; every one given must hold.
#[derive(Debug, Default)]
struct RecordFilter {
    /// The holder's pseudonym.
    holder: Option<String>,
    /// An entity id's pseudonym. Records that name more entities than they list (only a digest
    /// of their ids) never match.
    entity: Option<String>,
    /// An expanded entity type.
    entity_type: Option<String>,
    /// `read`, `write`, `admin` or `audit`.
    operation: Option<String>,
    /// Only records with this decision.
    decision: Option<DecisionKind>,
    request_id: Option<String>,
    /// Microseconds since the epoch, inclusive.
    since: Option<i64>,
    /// Microseconds since the epoch, exclusive.
    until: Option<i64>,
}

/// The operations a record can name.
const OPERATIONS: [Operation; 4] = [
    Operation::Read,
    Operation::Write,
    Operation::Admin,
    Operation::Audit,
];

impl RecordFilter {
    /// The filter of a listing's parameters: holder and entity become their pseudonyms, and a
    /// type name is expanded with `expand` (an absolute IRI stays as it is).
    fn parse(
        params: &Params,
        pseudonymizer: &Pseudonymizer,
        expand: impl Fn(&str) -> String,
    ) -> Result<RecordFilter, Problem> {
        let time = |name: &str| -> Result<Option<i64>, Problem> {
            params
                .get(name)
                .map(|value| {
                    chrono::DateTime::parse_from_rfc3339(value)
                        .map(|time| time.timestamp_micros())
                        .map_err(|_| {
                            Problem::bad_request(format!(
                                "{name} must be an RFC 3339 time, not {value:?}"
                            ))
                        })
                })
                .transpose()
        };
        let decision = match params.get("decision") {
            None => None,
            Some("allowed") => Some(DecisionKind::Allowed),
            Some("refused") => Some(DecisionKind::Refused),
            Some("forwarded") => Some(DecisionKind::Forwarded),
            Some(other) => {
                return Err(Problem::bad_request(format!(
                    "decision must be allowed, refused or forwarded, not {other:?}"
                )));
            }
        };
        let operation = params
            .get("operation")
            .map(|value| {
                OPERATIONS
                    .iter()
                    .map(|operation| operation.name())
                    .find(|name| *name == value)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Problem::bad_request(format!(
                            "operation must be read, write, admin or audit, not {value:?}"
                        ))
                    })
            })
            .transpose()?;
        let entity_type = params
            .get("type")
            .map(|name| {
                if name.is_empty() {
                    Err(Problem::bad_request("type must not be empty"))
                } else {
                    Ok(expand(name))
                }
            })
            .transpose()?;
        Ok(RecordFilter {
            holder: params
                .get("holder")
                .map(|name| pseudonymizer.pseudonym(name)),
            entity: params.get("entity").map(|id| pseudonymizer.pseudonym(id)),
            entity_type,
            operation,
            decision,
            request_id: params.get("requestId").map(str::to_owned),
            since: time("since")?,
            until: time("until")?,
        })
    }

    fn matches(&self, record: &Record) -> bool {
        let Event::Access(access) = &record.event;
        let wanted = |filter: &Option<String>, value: Option<&str>| {
            filter.as_deref().is_none_or(|filter| Some(filter) == value)
        };
        wanted(&self.holder, access.holder.as_deref())
            && self
                .entity
                .as_ref()
                .is_none_or(|entity| access.entity_ids.contains(entity))
            && self
                .entity_type
                .as_ref()
                .is_none_or(|entity_type| access.entity_types.contains(entity_type))
            && wanted(&self.operation, Some(&access.operation))
            && self
                .decision
                .is_none_or(|wanted| wanted == DecisionKind::of(&access.decision))
            && wanted(&self.request_id, Some(&record.request_id))
            && self.since.is_none_or(|since| record.time >= since)
            && self.until.is_none_or(|until| record.time < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civitas_audit::record::{Access, FORMAT_VERSION};

    /// Where the core context puts the names it does not define.
    const DEFAULT_VOCABULARY: &str = "https://uri.etsi.org/ngsi-ld/default-context/";

    fn record(holder: Option<&str>, decision: Decision, time: i64) -> Record {
        Record {
            v: FORMAT_VERSION,
            time,
            service: "test".to_owned(),
            request_id: format!("r{time}"),
            trace_id: None,
            event: Event::Access(Access {
                holder: holder.map(str::to_owned),
                entity_types: vec![format!("{DEFAULT_VOCABULARY}Vehicle")],
                entity_ids: vec!["h:car".to_owned()],
                ..Access::new("read", decision)
            }),
        }
    }

    #[test]
    fn filters_hold_together() {
        let records = [
            record(Some("h:a"), Decision::Allowed, 10),
            record(Some("h:b"), Decision::Allowed, 20),
            record(None, Decision::Refused { status: 401 }, 30),
        ];
        let check = |filter: RecordFilter, expected: &[i64]| {
            let times: Vec<i64> = records
                .iter()
                .filter(|record| filter.matches(record))
                .map(|record| record.time)
                .collect();
            assert_eq!(times, expected, "{filter:?}");
        };
        check(RecordFilter::default(), &[10, 20, 30]);
        check(
            RecordFilter {
                holder: Some("h:a".to_owned()),
                ..RecordFilter::default()
            },
            &[10],
        );
        check(
            RecordFilter {
                decision: Some(DecisionKind::Refused),
                ..RecordFilter::default()
            },
            &[30],
        );
        check(
            RecordFilter {
                decision: Some(DecisionKind::Allowed),
                ..RecordFilter::default()
            },
            &[10, 20],
        );
        check(
            RecordFilter {
                since: Some(20),
                until: Some(30),
                ..RecordFilter::default()
            },
            &[20],
        );
        check(
            RecordFilter {
                entity_type: Some(format!("{DEFAULT_VOCABULARY}Vehicle")),
                entity: Some("h:car".to_owned()),
                operation: Some("read".to_owned()),
                ..RecordFilter::default()
            },
            &[10, 20, 30],
        );
        check(
            RecordFilter {
                entity_type: Some(format!("{DEFAULT_VOCABULARY}Building")),
                ..RecordFilter::default()
            },
            &[],
        );
        check(
            RecordFilter {
                entity: Some("h:bus".to_owned()),
                ..RecordFilter::default()
            },
            &[],
        );
        check(
            RecordFilter {
                request_id: Some("r20".to_owned()),
                ..RecordFilter::default()
            },
            &[20],
        );
        check(
            RecordFilter {
                request_id: Some("r20".to_owned()),
                operation: Some("write".to_owned()),
                ..RecordFilter::default()
            },
            &[],
        );
    }

    fn params(query: &str) -> Params {
        let req = actix_web::test::TestRequest::get()
            .uri(&format!("/audit/v1/records?{query}"))
            .to_http_request();
        Params::parse(
            &req,
            &[
                "holder",
                "entity",
                "type",
                "operation",
                "decision",
                "requestId",
                "since",
                "until",
            ],
        )
        .expect("known parameters")
    }

    fn parsed(query: &str) -> Result<RecordFilter, Problem> {
        let pseudonymizer = Pseudonymizer::new(&[9; 32]);
        RecordFilter::parse(&params(query), &pseudonymizer, |name| {
            if name.contains(':') {
                name.to_owned()
            } else {
                format!("{DEFAULT_VOCABULARY}{name}")
            }
        })
    }

    #[test]
    fn parameters_become_filters() {
        let pseudonymizer = Pseudonymizer::new(&[9; 32]);
        let filter = parsed(
            "holder=alice&entity=urn:ngsi-ld:Vehicle:A&type=Vehicle&operation=write\
             &decision=refused&requestId=r1\
             &since=2026-01-01T00:00:00Z&until=2026-01-01T01:00:00%2B01:00",
        )
        .expect("valid");
        assert_eq!(filter.holder, Some(pseudonymizer.pseudonym("alice")));
        assert_eq!(
            filter.entity,
            Some(pseudonymizer.pseudonym("urn:ngsi-ld:Vehicle:A"))
        );
        assert_eq!(
            filter.entity_type,
            Some(format!("{DEFAULT_VOCABULARY}Vehicle"))
        );
        assert_eq!(filter.operation.as_deref(), Some("write"));
        assert_eq!(filter.decision, Some(DecisionKind::Refused));
        assert_eq!(filter.request_id.as_deref(), Some("r1"));
        // Both bounds name the same instant, in two offsets.
        assert_eq!(filter.since, Some(1_767_225_600_000_000));
        assert_eq!(filter.until, filter.since);
        let iri = parsed("type=https://example.org/ns%23Vehicle").expect("valid");
        assert_eq!(
            iri.entity_type.as_deref(),
            Some("https://example.org/ns#Vehicle")
        );
        for bad in [
            "operation=delete",
            "operation=Read",
            "decision=maybe",
            "since=yesterday",
            "until=2026-01-01",
            "type=",
        ] {
            let problem = parsed(bad).expect_err(bad);
            assert_eq!(problem.code.status().as_u16(), 400, "{bad}");
        }
    }

    /// `count` entries of which every third is refused; entry 4 is not a record.
    fn log(count: u64) -> Vec<Vec<u8>> {
        (0..count)
            .map(|index| {
                if index == 4 {
                    return b"not a record".to_vec();
                }
                let decision = if index % 3 == 0 {
                    Decision::Refused { status: 403 }
                } else {
                    Decision::Allowed
                };
                let time = i64::try_from(index).expect("small");
                record(Some("h:a"), decision, time)
                    .to_entry()
                    .expect("encodes")
            })
            .collect()
    }

    /// Runs a scan over `entries` like the handler does: the listed indexes and `next`.
    fn scan(
        entries: &[Vec<u8>],
        filter: &RecordFilter,
        after: Option<u64>,
        limit: u64,
        max_scan: u64,
    ) -> (Vec<u64>, Option<u64>) {
        let start = after.map_or(0, |after| after + 1);
        let size = entries.len() as u64;
        let mut scan = Scan::new(filter, start, limit, size, max_scan);
        let mut reads = 0;
        while let Some(range) = scan.wanted() {
            assert!(range.end - range.start <= MAX_PAGE, "{range:?}");
            let chunk = &entries[usize::try_from(range.start).expect("small")
                ..usize::try_from(range.end).expect("small")];
            scan.feed(range, chunk);
            reads += 1;
            assert!(reads <= 100, "the scan does not end");
        }
        let (listed, next) = scan.finish();
        let indexes = listed
            .iter()
            .map(|item| item["index"].as_u64().expect("an index"))
            .collect();
        (indexes, next)
    }

    #[test]
    fn scans_stop_at_the_page_the_bound_or_the_end() {
        let entries = log(10);
        let all = RecordFilter::default();
        let refused = RecordFilter {
            decision: Some(DecisionKind::Refused),
            ..RecordFilter::default()
        };
        // The whole log in one page; the entry that is not a record is skipped.
        assert_eq!(
            scan(&entries, &all, None, 100, 1000),
            (vec![0, 1, 2, 3, 5, 6, 7, 8, 9], None)
        );
        // A full page continues after its last record, unless that was the log's last entry.
        assert_eq!(scan(&entries, &all, None, 2, 1000), (vec![0, 1], Some(1)));
        assert_eq!(
            scan(&entries, &all, Some(1), 2, 1000),
            (vec![2, 3], Some(3))
        );
        assert_eq!(
            scan(&entries, &all, Some(3), 2, 1000),
            (vec![5, 6], Some(6))
        );
        assert_eq!(scan(&entries, &all, Some(7), 2, 1000), (vec![8, 9], None));
        // Filtered: the refusals are 0, 3, 6 and 9.
        assert_eq!(
            scan(&entries, &refused, None, 2, 1000),
            (vec![0, 3], Some(3))
        );
        assert_eq!(
            scan(&entries, &refused, Some(3), 2, 1000),
            (vec![6, 9], None)
        );
        // The scan bound: four entries read, one refusal found, continue after the fourth.
        assert_eq!(scan(&entries, &refused, Some(0), 10, 4), (vec![3], Some(4)));
        assert_eq!(scan(&entries, &refused, Some(4), 10, 4), (vec![6], Some(8)));
        assert_eq!(scan(&entries, &refused, Some(8), 10, 4), (vec![9], None));
        // Nothing found within the bound still moves on.
        let nobody = RecordFilter {
            holder: Some("h:nobody".to_owned()),
            ..RecordFilter::default()
        };
        assert_eq!(scan(&entries, &nobody, None, 10, 3), (vec![], Some(2)));
        assert_eq!(scan(&entries, &nobody, None, 10, 1000), (vec![], None));
        // After the end, or on an empty log: nothing, and no next page.
        assert_eq!(scan(&entries, &all, Some(9), 10, 1000), (vec![], None));
        assert_eq!(scan(&entries, &all, Some(50), 10, 1000), (vec![], None));
        assert_eq!(scan(&[], &all, None, 10, 1000), (vec![], None));
    }

    #[test]
    fn long_scans_read_in_pages() {
        let entries = log(2 * MAX_PAGE + 5);
        let all = RecordFilter::default();
        let (listed, next) = scan(&entries, &all, None, MAX_PAGE, MAX_SCAN);
        assert_eq!(listed.len() as u64, MAX_PAGE);
        assert_eq!(next, Some(MAX_PAGE));
        let found = RecordFilter {
            request_id: Some(format!("r{}", 2 * MAX_PAGE + 3)),
            ..RecordFilter::default()
        };
        assert_eq!(
            scan(&entries, &found, Some(7), 10, MAX_SCAN),
            (vec![2 * MAX_PAGE + 3], None)
        );
    }

    #[test]
    fn a_short_read_does_not_repeat_entries() {
        let entries = log(10);
        let all = RecordFilter::default();
        let mut scan = Scan::new(&all, 0, 100, 10, 100);
        let range = scan.wanted().expect("something to read");
        assert_eq!(range, 0..10);
        scan.feed(range, &entries[..3]);
        assert_eq!(scan.wanted(), None);
        let (listed, next) = scan.finish();
        assert_eq!(listed.len(), 3);
        assert_eq!(next, None);
    }

    #[test]
    fn hashes_are_read_in_hex_and_base64() {
        let hash = [0xab; 32];
        assert_eq!(parse_hash(&"ab".repeat(32)).ok(), Some(hash));
        assert_eq!(parse_hash(&"AB".repeat(32)).ok(), Some(hash));
        assert_eq!(parse_hash(&BASE64.encode(hash)).ok(), Some(hash));
        let odd = [0xfb; 32];
        assert_eq!(
            parse_hash(&base64::engine::general_purpose::URL_SAFE.encode(odd)).ok(),
            Some(odd)
        );
        assert_eq!(
            parse_hash(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)).ok(),
            Some(hash)
        );
        assert!(parse_hash("abc").is_err());
        assert!(parse_hash("").is_err());
        assert!(parse_hash(&"ab".repeat(31)).is_err());
        assert!(parse_hash(&"zz".repeat(32)).is_err());
        assert!(parse_hash(&BASE64.encode([1; 31])).is_err());
    }
}
