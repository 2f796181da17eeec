//! Audit records: what each entry of a log says, and how it is written.
//!
//! A record is one event: today an access decision (allowed, refused, or forwarded by a broker that
//! decided nothing itself); retention runs will add
//! deletion events. Records are encoded as compact JSON with a fixed member order (struct order,
//! no whitespace), so the same record always gives the same bytes and so the same leaf hash. An
//! entry must fit a tlog-tiles bundle (at most 65,535 bytes): long id lists are replaced by their
//! digest and count.
//!
//! **No personal data in the log.** Identifiers that could name a person — the token holder and
//! entity ids — are written as keyed hashes ([`Pseudonymizer`], HMAC-SHA-256 under a key the
//! department keeps outside the log). Whoever holds the key can look a person up (`audit log
//! --holder`); a reader of the published log cannot, and erasing the key, or the entities under
//! retention, never conflicts with the append-only log. Types, attribute names, operations and
//! tenants are schema, not personal data, and are written as they are.

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::tiles::MAX_ENTRY_LEN;

/// The record format this module writes.
pub const FORMAT_VERSION: u8 = 1;

/// At most this many entity ids are listed; more are summarized by [`Access::ids_digest`].
pub const MAX_LISTED_IDS: usize = 100;

/// Turns identifiers into keyed hashes: `h:` and the base64url of the first 16 bytes of
/// HMAC-SHA-256(key, identifier).
pub struct Pseudonymizer {
    key: hmac::Key,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer").finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// A pseudonymizer with a 32-byte secret.
    pub fn new(secret: &[u8; 32]) -> Pseudonymizer {
        Pseudonymizer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The keyed hash of `identifier`.
    pub fn pseudonym(&self, identifier: &str) -> String {
        use base64::Engine;
        let tag = hmac::sign(&self.key, identifier.as_bytes());
        let truncated = tag.as_ref().get(..16).unwrap_or(tag.as_ref());
        format!(
            "h:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(truncated)
        )
    }
}

/// The outcome of an access decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Decision {
    /// The request was allowed. The record is stored before the request is served, so it says
    /// what was decided, not how the request ended.
    Allowed,
    /// The request was refused with `status` (401 or 403, or 404 for what the caller may not see).
    Refused { status: u16 },
    /// A broker decided nothing itself: the whole request went to the context sources named in
    /// `federation`, each of which decided with the caller's own tokens (a write whose every
    /// part a registration claims).
    Forwarded,
}

/// One access to a service: who, what, when and the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Access {
    /// `read`, `write`, `admin` or `audit`.
    pub operation: String,
    pub decision: Decision,
    /// The token holder's pseudonym; `None` for requests without a token.
    pub holder: Option<String>,
    /// The revocation ids of the token's blocks (hex, authority first): they identify the token
    /// and its attenuations without revealing it.
    pub revocation_ids: Vec<String>,
    /// The tenant (`""`: the default tenant).
    pub tenant: String,
    pub purpose: Option<String>,
    /// Expanded entity types the request named or touched.
    pub entity_types: Vec<String>,
    /// Pseudonyms of the entity ids (at most [`MAX_LISTED_IDS`]).
    pub entity_ids: Vec<String>,
    /// With more ids than are listed: SHA-256 (hex) of all their pseudonyms, one per line.
    pub ids_digest: Option<String>,
    /// For queries: SHA-256 (hex) of the request's query string.
    pub query_digest: Option<String>,
    /// Expanded attribute names returned or written.
    pub attributes: Vec<String>,
    /// How many entities were returned or written.
    pub count: Option<u64>,
    /// The HTTP status the request was answered with.
    pub status: Option<u16>,
    /// For a broker's federated request: which sources it asked, skipped and lost. Absent from
    /// every other record (and so from the bytes of records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Federated>,
}

/// What a broker did with one federated request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Federated {
    /// The caller's tokens, each by its authority block's revocation id.
    pub tokens: Vec<String>,
    /// Sources asked (their endpoints), in order.
    pub asked: Vec<String>,
    /// Sources not asked: the caller has no token of their department.
    pub skipped: Vec<String>,
    /// Sources asked that did not answer usefully (slow, down, refused, invalid).
    pub failed: Vec<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Event {
    Access(Access),
}

/// One entry of an audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// [`FORMAT_VERSION`].
    pub v: u8,
    /// When, in microseconds since the Unix epoch (UTC), by the service's clock.
    pub time: i64,
    /// The service that decided (e.g. the department).
    pub service: String,
    /// The request id; a federated query shares it across the broker and the connectors.
    pub request_id: String,
    pub trace_id: Option<String>,
    pub event: Event,
}

impl Record {
    /// The entry bytes: compact JSON, members in a fixed order.
    pub fn to_entry(&self) -> Result<Vec<u8>, Error> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::MalformedRecord(e.to_string()))?;
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(Error::RecordTooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Reads an entry, refusing anything this module would not have written (unknown members,
    /// another format version, a different encoding of the same record).
    pub fn from_entry(entry: &[u8]) -> Result<Record, Error> {
        let record: Record =
            serde_json::from_slice(entry).map_err(|e| Error::MalformedRecord(e.to_string()))?;
        if record.v != FORMAT_VERSION {
            return Err(Error::MalformedRecord(format!(
                "format version {} is not {FORMAT_VERSION}",
                record.v
            )));
        }
        if record.to_entry()? != entry {
            return Err(Error::MalformedRecord(
                "the entry is not in canonical form".to_owned(),
            ));
        }
        Ok(record)
    }
}

impl Access {
    /// An access for `operation` with `decision`, naming nothing else yet.
    pub fn new(operation: &str, decision: Decision) -> Access {
        Access {
            operation: operation.to_owned(),
            decision,
            holder: None,
            revocation_ids: Vec::new(),
            tenant: String::new(),
            purpose: None,
            entity_types: Vec::new(),
            entity_ids: Vec::new(),
            ids_digest: None,
            query_digest: None,
            attributes: Vec::new(),
            count: None,
            status: None,
            federation: None,
        }
    }

    /// Sets the entity ids: their pseudonyms, listed up to [`MAX_LISTED_IDS`], else a digest.
    pub fn set_entity_ids<'a>(
        &mut self,
        pseudonymizer: &Pseudonymizer,
        ids: impl IntoIterator<Item = &'a str>,
    ) {
        let pseudonyms: Vec<String> = ids
            .into_iter()
            .map(|id| pseudonymizer.pseudonym(id))
            .collect();
        if pseudonyms.len() <= MAX_LISTED_IDS {
            self.entity_ids = pseudonyms;
            self.ids_digest = None;
        } else {
            self.ids_digest = Some(sha256_hex(pseudonyms.join("\n").as_bytes()));
            self.entity_ids = Vec::new();
        }
    }
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            operation: "read".to_owned(),
            decision: Decision::Allowed,
            holder: None,
            revocation_ids: vec!["ab12".to_owned()],
            tenant: String::new(),
            purpose: Some("planning".to_owned()),
            entity_types: vec!["https://example.org/Spot".to_owned()],
            entity_ids: Vec::new(),
            ids_digest: None,
            query_digest: None,
            attributes: vec!["https://example.org/status".to_owned()],
            count: Some(1),
            status: Some(200),
            federation: None,
        }
    }

    fn record(event: Access) -> Record {
        Record {
            v: FORMAT_VERSION,
            time: 1_800_000_000_000_000,
            service: "transport".to_owned(),
            request_id: "r-1".to_owned(),
            trace_id: None,
            event: Event::Access(event),
        }
    }

    fn pseudonymizer() -> Pseudonymizer {
        Pseudonymizer::new(&[9; 32])
    }

    #[test]
    fn entries_are_canonical_and_round_trip() {
        let mut event = access();
        event.holder = Some(pseudonymizer().pseudonym("partner-agency"));
        event.set_entity_ids(&pseudonymizer(), ["urn:ngsi-ld:Spot:1"]);
        let record = record(event);
        let entry = record.to_entry().expect("encodes");
        assert_eq!(record.to_entry().expect("encodes"), entry, "deterministic");
        assert_eq!(Record::from_entry(&entry).expect("decodes"), record);
        let text = String::from_utf8(entry.clone()).expect("UTF-8");
        assert!(text.starts_with(r#"{"v":1,"time":1800000000000000,"service":"transport""#));
        assert!(
            text.contains(r#""event":{"kind":"access","operation":"read""#),
            "{text}"
        );
        // No identifier in the clear.
        assert!(
            !text.contains("partner-agency") && !text.contains("Spot:1"),
            "{text}"
        );
    }

    #[test]
    fn entries_this_module_would_not_write_are_refused() {
        let entry =
            String::from_utf8(record(access()).to_entry().expect("encodes")).expect("UTF-8");
        let check = |bad: String| {
            assert!(
                matches!(
                    Record::from_entry(bad.as_bytes()),
                    Err(Error::MalformedRecord(_))
                ),
                "{bad}"
            );
        };
        check(entry.replace(r#"{"v":1"#, r#"{"v":2"#));
        check(entry.replace(r#""count":1"#, r#""count":1,"extra":0"#));
        check(entry.replace(r#"{"v":1,"#, r#"{ "v":1,"#));
        check(entry.replacen(
            r#""time":1800000000000000,"service":"transport""#,
            r#""service":"transport","time":1800000000000000"#,
            1,
        ));
        check(entry[..entry.len() - 1].to_owned());
        check(String::new());
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = Pseudonymizer::new(&[1; 32]);
        let b = Pseudonymizer::new(&[2; 32]);
        assert_eq!(a.pseudonym("x"), a.pseudonym("x"));
        assert_ne!(a.pseudonym("x"), a.pseudonym("y"));
        assert_ne!(a.pseudonym("x"), b.pseudonym("x"));
        assert_eq!(a.pseudonym("x").len(), 2 + 22);
    }

    #[test]
    fn long_id_lists_become_a_digest_and_entries_stay_small() {
        let ids: Vec<String> = (0..10_000)
            .map(|i| format!("urn:ngsi-ld:Spot:{i}"))
            .collect();
        let mut event = access();
        event.set_entity_ids(&pseudonymizer(), ids.iter().map(String::as_str));
        assert!(event.entity_ids.is_empty());
        assert_eq!(event.ids_digest.as_ref().map(String::len), Some(64));
        let listed: Vec<String> = ids.iter().take(MAX_LISTED_IDS).cloned().collect();
        let mut short = access();
        short.set_entity_ids(&pseudonymizer(), listed.iter().map(String::as_str));
        assert_eq!(short.entity_ids.len(), MAX_LISTED_IDS);
        assert!(record(short).to_entry().expect("fits").len() < MAX_ENTRY_LEN);
        let mut huge = access();
        huge.attributes = vec!["a".repeat(70_000)];
        assert!(matches!(
            record(huge).to_entry(),
            Err(Error::RecordTooLarge { .. })
        ));
    }
}
