//! Fixtures shared by the model tests: the bundled core context, contexts built on top of it, a
//! loader over in-memory documents, fixed times, and the parse pipeline every payload goes through.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use civitas_ngsild::Error;
use civitas_ngsild::canonical::{self, Trust};
use civitas_ngsild::context::{self, ActiveContext};
use civitas_ngsild::entity::{Attributes, Entity};
use civitas_ngsild::expand::{self, Payload};
use serde_json::{Map, Value, json};

/// The NGSI-LD core vocabulary (`ngsi-ld:` in the core context).
pub const NGSI: &str = "https://uri.etsi.org/ngsi-ld/";
/// The core context's `@vocab`: where names the caller did not define end up (clause 5.5.7).
pub const DEFAULT: &str = "https://uri.etsi.org/ngsi-ld/default-context/";
/// The `ex:` prefix of the user context most cases use.
pub const EX: &str = "https://example.org/ns#";

/// `ngsi-ld:name` expanded.
pub fn ngsi(name: &str) -> String {
    format!("{NGSI}{name}")
}

/// A name of the default context, expanded.
pub fn dflt(name: &str) -> String {
    format!("{DEFAULT}{name}")
}

/// `ex:name` expanded.
pub fn ex(name: &str) -> String {
    format!("{EX}{name}")
}

/// The bundled core context document, parsed once.
pub fn core_document() -> Arc<Value> {
    static CORE: OnceLock<Arc<Value>> = OnceLock::new();
    CORE.get_or_init(|| {
        Arc::new(serde_json::from_str(context::CORE_CONTEXT_V1_8).expect("the core context parses"))
    })
    .clone()
}

/// Processes `local` on the empty context. The loader answers the core context URL and the given
/// documents, and `ContextNotLoaded` for any other URL, as the I/O layer's loader does.
pub fn process(local: &Value, documents: &[(&str, Value)]) -> Result<ActiveContext, Error> {
    let documents: HashMap<&str, Arc<Value>> = documents
        .iter()
        .map(|(url, document)| (*url, Arc::new(document.clone())))
        .collect();
    let mut loader = |url: &str| -> Result<Arc<Value>, Error> {
        if url == context::CORE_CONTEXT_URL {
            return Ok(core_document());
        }
        documents
            .get(url)
            .cloned()
            .ok_or_else(|| Error::ContextNotLoaded(url.to_owned()))
    };
    ActiveContext::empty().process(local, &mut loader)
}

/// `[user, core]`: the caller's context with the core context applied last (clause 5.5.7).
pub fn with_core(user: Value) -> ActiveContext {
    let local = json!([user, context::CORE_CONTEXT_URL]);
    process(&local, &[]).unwrap_or_else(|error| panic!("{local} does not process: {error}"))
}

/// The core context alone.
pub fn core() -> &'static ActiveContext {
    static CORE: OnceLock<ActiveContext> = OnceLock::new();
    CORE.get_or_init(|| with_core(json!({})))
}

/// The user context of most cases, with the core context.
pub fn user() -> &'static ActiveContext {
    static USER: OnceLock<ActiveContext> = OnceLock::new();
    USER.get_or_init(|| with_core(user_terms()))
}

/// The user context's own terms. `almostFull` is defined as in the ETSI test suite's context.
pub fn user_terms() -> Value {
    json!({
        "ex": EX,
        "Vehicle": "ex:Vehicle",
        "Car": "https://example.org/Car",
        "brand": {"@id": "ex:brandName", "@type": "@vocab"},
        "owner": {"@id": "ex:owner", "@type": "@id"},
        "almostFull": "https://ngsi-ld-test-suite/context#almostFull",
    })
}

/// A fixed instant, `minutes` after 2024-01-01T10:00:00Z.
pub fn at(minutes: u32) -> DateTime<Utc> {
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 10, 0, 0)
        .single()
        .expect("a valid date");
    start + chrono::Duration::minutes(i64::from(minutes))
}

/// [`at`] as every rendering writes it.
pub fn stamp(minutes: u32) -> String {
    canonical::format_timestamp(&at(minutes))
}

/// Create entity: expansion of a whole entity, then validation of the canonical form.
pub fn parse(payload: &Value, ctx: &ActiveContext) -> Result<Entity, Error> {
    let canonical = expand::entity(payload, ctx, Payload::Entity)?;
    canonical::decode_entity(&canonical, Trust::Caller)
}

/// [`parse`] under the user context, for payloads that must be valid.
pub fn entity(payload: &Value) -> Entity {
    parse(payload, user()).unwrap_or_else(|error| panic!("{payload} does not parse: {error}"))
}

/// The canonical JSON of an entity.
pub fn canonical_of(entity: &Entity) -> Value {
    Value::Object(canonical::encode_entity(entity))
}

/// The attributes of an append fragment, validated (as the connector's append does).
pub fn attributes(payload: &Value, ctx: &ActiveContext) -> Result<Attributes, Error> {
    let canonical = expand::entity(payload, ctx, Payload::Fragment)?;
    canonical::decode_attributes(&canonical, Trust::Caller)
}

/// A partial fragment (update, merge) in canonical form.
pub fn partial(payload: &Value, ctx: &ActiveContext) -> Map<String, Value> {
    expand::entity(payload, ctx, Payload::Partial)
        .unwrap_or_else(|error| panic!("{payload} does not expand: {error}"))
}

/// Asserts that `result` is `BadRequestData` with a detail containing `needle`.
pub fn assert_bad<T: Debug>(result: Result<T, Error>, needle: &str, input: &dyn Debug) {
    match result {
        Err(Error::BadRequestData(detail)) => assert!(
            detail.contains(needle),
            "{input:?}: the detail {detail:?} does not mention {needle:?}"
        ),
        other => panic!("{input:?}: expected BadRequestData mentioning {needle:?}, got {other:?}"),
    }
}
