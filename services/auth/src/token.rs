//! Minting, narrowing and inspecting capability tokens.
//!
//! The authority block of a token (signed by the department's root key) states what it allows:
//!
//! ```text
//! holder("partner-agency");
//! right("read", "https://smartdatamodels.org/dataModel.Parking/ParkingSpot");   // "*" = every type
//! attribute_allowed("https://smartdatamodels.org/dataModel.Parking/status");    // "*" = every attribute
//! purpose("traffic-planning");
//! expires(2026-12-01T00:00:00Z);
//! check if time($time), $time <= 2026-12-01T00:00:00Z;
//! check if tenant($tenant), {"district-north"}.contains($tenant);
//! ```
//!
//! An attenuation block adds **restrictions**, which the authorizer intersects with the grant:
//! `restrict_types("read", {…})`, `restrict_types("write", {…})`, `restrict_attributes({…})`,
//! `restrict_tenants({…})`, `restrict_purposes({…})`, `expires(date)` (with the matching checks).
//! Intersection can only shrink a grant, so whoever appends a block can only narrow the token.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use biscuit_auth::builder::{self, Term};
use biscuit_auth::{Biscuit, BlockBuilder, PublicKey, UnverifiedBiscuit};
use chrono::{DateTime, Utc};

use crate::Error;
use crate::keys::RootKey;

/// The wildcard for "every type" or "every attribute".
pub const ANY: &str = "*";

/// What a new token allows. Types and attributes are expanded IRIs (or [`ANY`]).
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub holder: String,
    pub read: Vec<String>,
    pub write: Vec<String>,
    /// Attribute allow-list; `None` allows every attribute.
    pub attributes: Option<Vec<String>>,
    pub purpose: Option<String>,
    /// Tenants the token may address; `None` allows every tenant (the default tenant is `""`).
    pub tenants: Option<Vec<String>>,
    /// Validity from `now`; `None` never expires.
    pub ttl: Option<chrono::Duration>,
    /// May administer the department's connector (revoke tokens).
    pub admin: bool,
    /// May read the audit log.
    pub audit: bool,
    /// Raw datalog appended to the authority block.
    pub datalog: Option<String>,
}

/// How a holder narrows a token. `None` leaves that aspect as it is.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    /// Types that may still be read (an empty list: no reads).
    pub read: Option<Vec<String>>,
    /// Types that may still be written (an empty list: no writes).
    pub write: Option<Vec<String>>,
    pub attributes: Option<Vec<String>>,
    pub purposes: Option<Vec<String>>,
    pub tenants: Option<Vec<String>>,
    pub ttl: Option<chrono::Duration>,
    /// Raw datalog (checks) for the new block.
    pub datalog: Option<String>,
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::Invalid(e.to_string())
}

fn string_set(items: &[String]) -> Term {
    builder::set(
        items
            .iter()
            .map(|s| builder::string(s))
            .collect::<BTreeSet<Term>>(),
    )
}

fn check_names(kind: &str, items: &[String]) -> Result<(), Error> {
    for item in items {
        if item.is_empty() || item.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "{kind} {item:?} is not a valid name"
            )));
        }
    }
    Ok(())
}

fn expiry(now: DateTime<Utc>, ttl: chrono::Duration) -> Result<SystemTime, Error> {
    if ttl <= chrono::Duration::zero() {
        return Err(Error::Invalid(
            "the time to live must be positive".to_owned(),
        ));
    }
    let at = now
        .checked_add_signed(ttl)
        .ok_or_else(|| Error::Invalid("the time to live is too long".to_owned()))?;
    Ok(SystemTime::from(at))
}

/// Mints a token for `spec`, signed by the department's root key; returns it as base64url.
pub fn issue(key: &RootKey, spec: &TokenSpec, now: DateTime<Utc>) -> Result<String, Error> {
    if spec.holder.trim().is_empty() {
        return Err(Error::Invalid("a token needs a holder".to_owned()));
    }
    check_names("type", &spec.read)?;
    check_names("type", &spec.write)?;
    let mut token = Biscuit::builder()
        .fact(builder::fact("holder", &[builder::string(&spec.holder)]))
        .map_err(invalid)?;
    for (operation, types) in [("read", &spec.read), ("write", &spec.write)] {
        for entity_type in types {
            token = token
                .fact(builder::fact(
                    "right",
                    &[builder::string(operation), builder::string(entity_type)],
                ))
                .map_err(invalid)?;
        }
    }
    for (flag, right) in [(spec.admin, "admin"), (spec.audit, "audit")] {
        if flag {
            token = token
                .fact(builder::fact(
                    "right",
                    &[builder::string(right), builder::string(ANY)],
                ))
                .map_err(invalid)?;
        }
    }
    let attributes = spec
        .attributes
        .clone()
        .unwrap_or_else(|| vec![ANY.to_owned()]);
    check_names("attribute", &attributes)?;
    for attribute in &attributes {
        token = token
            .fact(builder::fact(
                "attribute_allowed",
                &[builder::string(attribute)],
            ))
            .map_err(invalid)?;
    }
    if let Some(purpose) = &spec.purpose {
        token = token
            .fact(builder::fact("purpose", &[builder::string(purpose)]))
            .map_err(invalid)?;
    }
    let mut params = HashMap::new();
    let mut code = String::new();
    if let Some(tenants) = &spec.tenants {
        params.insert("tenants".to_owned(), string_set(tenants));
        code.push_str("check if tenant($tenant), {tenants}.contains($tenant);\n");
    }
    if let Some(ttl) = spec.ttl {
        let at = builder::date(&expiry(now, ttl)?);
        token = token
            .fact(builder::fact("expires", std::slice::from_ref(&at)))
            .map_err(invalid)?;
        params.insert("expiry".to_owned(), at);
        code.push_str("check if time($time), $time <= {expiry};\n");
    }
    if !code.is_empty() {
        token = token
            .code_with_params(code, params, HashMap::new())
            .map_err(invalid)?;
    }
    if let Some(datalog) = &spec.datalog {
        token = token.code(datalog).map_err(invalid)?;
    }
    let biscuit = token.build(key.key_pair()).map_err(invalid)?;
    biscuit.to_base64().map_err(invalid)
}

/// Narrows a token offline by appending a block of restrictions; no key is needed.
pub fn attenuate(
    token: &str,
    restrictions: &Restrictions,
    now: DateTime<Utc>,
) -> Result<String, Error> {
    let unverified = UnverifiedBiscuit::from_base64(token.trim())
        .map_err(|e| Error::Unauthenticated(e.to_string()))?;
    let mut block = BlockBuilder::new();
    let mut params = HashMap::new();
    let mut code = String::new();
    for (operation, types) in [("read", &restrictions.read), ("write", &restrictions.write)] {
        if let Some(types) = types {
            check_names("type", types)?;
            block = block
                .fact(builder::fact(
                    "restrict_types",
                    &[builder::string(operation), string_set(types)],
                ))
                .map_err(invalid)?;
        }
    }
    if let Some(attributes) = &restrictions.attributes {
        check_names("attribute", attributes)?;
        block = block
            .fact(builder::fact(
                "restrict_attributes",
                &[string_set(attributes)],
            ))
            .map_err(invalid)?;
    }
    if let Some(purposes) = &restrictions.purposes {
        block = block
            .fact(builder::fact("restrict_purposes", &[string_set(purposes)]))
            .map_err(invalid)?;
        params.insert("purposes".to_owned(), string_set(purposes));
        code.push_str("check all purpose($purpose), {purposes}.contains($purpose);\n");
    }
    if let Some(tenants) = &restrictions.tenants {
        block = block
            .fact(builder::fact("restrict_tenants", &[string_set(tenants)]))
            .map_err(invalid)?;
        params.insert("tenants".to_owned(), string_set(tenants));
        code.push_str("check if tenant($tenant), {tenants}.contains($tenant);\n");
    }
    if let Some(ttl) = restrictions.ttl {
        let at = builder::date(&expiry(now, ttl)?);
        block = block
            .fact(builder::fact("expires", std::slice::from_ref(&at)))
            .map_err(invalid)?;
        params.insert("expiry".to_owned(), at);
        code.push_str("check if time($time), $time <= {expiry};\n");
    }
    if !code.is_empty() {
        block = block
            .code_with_params(code, params, HashMap::new())
            .map_err(invalid)?;
    }
    if let Some(datalog) = &restrictions.datalog {
        block = block.code(datalog).map_err(invalid)?;
    }
    let narrowed = unverified.append(block).map_err(invalid)?;
    narrowed.to_base64().map_err(invalid)
}

/// Binds a token to one request, as a broker does before forwarding it to a department: a block
/// with `relayed_by(<broker>)`, a check that the request carries `request_id`, and an expiry `ttl`
/// from `now`. The department's connector supplies the `request_id` fact of the request it serves,
/// so the bound token opens that request and nothing else.
pub fn bind_to_request(
    token: &str,
    relayed_by: &str,
    request_id: &str,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<String, Error> {
    let plain = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    };
    if !plain(relayed_by) || !plain(request_id) {
        return Err(Error::Invalid(
            "a relay's name and request id are plain names".to_owned(),
        ));
    }
    attenuate(
        token,
        &Restrictions {
            ttl: Some(ttl),
            datalog: Some(format!(
                "relayed_by(\"{relayed_by}\");\ncheck if request_id(\"{request_id}\");\n"
            )),
            ..Restrictions::default()
        },
        now,
    )
}

/// Whether `token` is signed by the holder of `root` (a department's root key).
pub fn issued_by(token: &str, root: &PublicKey) -> bool {
    Biscuit::from_base64(token.trim(), *root).is_ok()
}

/// The revocation id (hex) of a token's authority block, which names the token as issued; not
/// verified. `None` when `token` is not a token.
pub fn authority_revocation_id(token: &str) -> Option<String> {
    UnverifiedBiscuit::from_base64(token.trim())
        .ok()?
        .revocation_identifiers()
        .first()
        .map(hex::encode)
}

/// What a token says, block by block (`civitas token inspect`).
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The datalog source of each block, authority first.
    pub blocks: Vec<String>,
    /// The revocation id of each block, hex.
    pub revocation_ids: Vec<String>,
    /// Whether the signatures verify against the given root key (`None`: no key given).
    pub verified: Option<bool>,
}

/// Decodes a token; with `root`, also verifies it.
pub fn inspect(token: &str, root: Option<&PublicKey>) -> Result<Inspection, Error> {
    let unverified = UnverifiedBiscuit::from_base64(token.trim())
        .map_err(|e| Error::Unauthenticated(e.to_string()))?;
    let blocks = (0..unverified.block_count())
        .map(|index| unverified.print_block_source(index).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let revocation_ids = unverified
        .revocation_identifiers()
        .iter()
        .map(hex::encode)
        .collect();
    let verified = root.map(|key| Biscuit::from_base64(token.trim(), *key).is_ok());
    Ok(Inspection {
        blocks,
        revocation_ids,
        verified,
    })
}
