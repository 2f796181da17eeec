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
use std::time::{Duration, SystemTime};

use biscuit_auth::builder;
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, PublicKey};
use chrono::{DateTime, Utc};

use crate::Error;
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
    pub now: DateTime<Utc>,
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

    fn is_empty(&self) -> bool {
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
    /// A grant for requests without a token, from the department's anonymous policy.
    pub fn anonymous(
        read_types: impl IntoIterator<Item = String>,
        attributes: Option<Vec<String>>,
    ) -> Grant {
        let mut rights = HashMap::new();
        let read = NameSet::from_names(read_types);
        if !read.is_empty() {
            rights.insert(Operation::Read, read);
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
        if self
            .rights
            .get(&Operation::Admin)
            .is_some_and(|t| *t == NameSet::All)
        {
            return NameSet::All;
        }
        self.rights
            .get(&operation)
            .cloned()
            .unwrap_or(NameSet::Only(HashSet::new()))
    }

    /// Whether `operation` is allowed at all (on some type).
    pub fn allows(&self, operation: Operation) -> bool {
        !self.types(operation).is_empty()
    }

    /// Whether the attribute (expanded IRI) may be seen or written.
    pub fn allows_attribute(&self, attribute: &str) -> bool {
        self.attributes.contains(attribute)
    }
}

/// One department's authorizer.
pub struct Authorizer {
    root: PublicKey,
    department: String,
    policy: String,
    limits: AuthorizerLimits,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("department", &self.department)
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
    /// checks and policies evaluated before the default policy; may be empty).
    pub fn new(root: PublicKey, policy: &str, department: &str) -> Result<Authorizer, Error> {
        // Parse once now, so a broken policy fails at start-up and not on the first request.
        AuthorizerBuilder::new()
            .code(policy)
            .map_err(|e| Error::Invalid(format!("policy: {e}")))?;
        Ok(Authorizer {
            root,
            department: department.to_owned(),
            policy: policy.to_owned(),
            // Generous, explicit limits: the library's default time limit (1 ms) refuses valid
            // tokens on a loaded machine.
            limits: AuthorizerLimits {
                max_facts: 10_000,
                max_iterations: 1_000,
                max_time: Duration::from_millis(250),
            },
        })
    }

    /// Verifies `token` and computes what it allows for `request`.
    pub fn authorize(&self, token: &str, request: &Request<'_>) -> Result<Grant, Error> {
        let biscuit = Biscuit::from_base64(token.trim(), self.root)
            .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        let revocation_ids: Vec<String> = biscuit
            .revocation_identifiers()
            .iter()
            .map(hex::encode)
            .collect();
        let now = SystemTime::from(request.now);
        let mut authorizer = AuthorizerBuilder::new()
            .set_limits(self.limits.clone())
            .fact(builder::fact(
                "operation",
                &[builder::string(request.operation.name())],
            ))
            .and_then(|b| {
                b.fact(builder::fact(
                    "tenant",
                    &[builder::string(request.tenant.unwrap_or(""))],
                ))
            })
            .and_then(|b| b.fact(builder::fact("time", &[builder::date(&now)])))
            .and_then(|b| {
                b.fact(builder::fact(
                    "department",
                    &[builder::string(&self.department)],
                ))
            })
            .and_then(|b| b.code(&self.policy))
            .and_then(|b| b.code(DEFAULT_POLICY))
            .and_then(|b| b.build(&biscuit))
            .map_err(|e| Error::Invalid(e.to_string()))?;

        let expiries: Vec<(SystemTime,)> = authorizer
            .query_all("data($date) <- expires($date)")
            .map_err(limit_error)?;
        let expires = expiries.into_iter().map(|(at,)| at).min();
        if let Some(at) = expires
            && now > at
        {
            return Err(Error::Expired(DateTime::<Utc>::from(at).to_rfc3339()));
        }
        authorizer
            .authorize()
            .map_err(|e| Error::Forbidden(e.to_string()))?;

        // Rights and the attribute allow-list: authority block (and the department's policy) only.
        let rights: Vec<(String, String)> = authorizer
            .query("data($op, $type) <- right($op, $type)")
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
            .query("data($a) <- attribute_allowed($a)")
            .map_err(limit_error)?;
        let mut attributes = NameSet::from_names(attributes.into_iter().map(|(a,)| a));
        let holders: Vec<(String,)> = authorizer
            .query("data($h) <- holder($h)")
            .map_err(limit_error)?;
        let purposes: Vec<(String,)> = authorizer
            .query("data($p) <- purpose($p)")
            .map_err(limit_error)?;

        // Restrictions from every block narrow the grant.
        let type_limits: Vec<(String, BTreeSet<String>)> = authorizer
            .query_all("data($op, $types) <- restrict_types($op, $types)")
            .map_err(limit_error)?;
        for (operation, types) in type_limits {
            if let Some(operation) = Operation::parse(&operation)
                && let Some(set) = grant_rights.get_mut(&operation)
            {
                set.narrow(&types);
            }
        }
        let attribute_limits: Vec<(BTreeSet<String>,)> = authorizer
            .query_all("data($a) <- restrict_attributes($a)")
            .map_err(limit_error)?;
        for (limit,) in attribute_limits {
            attributes.narrow(&limit);
        }

        Ok(Grant {
            holder: holders.into_iter().next().map(|(h,)| h),
            rights: grant_rights,
            attributes,
            purposes: purposes.into_iter().map(|(p,)| p).collect(),
            revocation_ids,
            expires: expires.map(DateTime::<Utc>::from),
        })
    }
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
    use crate::token::{Restrictions, TokenSpec, attenuate, issue};

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
        Request {
            operation,
            tenant: None,
            now: at(10),
        }
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
    fn a_token_grants_what_its_authority_block_says() {
        let token = issue(&key(), &partner(), at(0)).expect("issues");
        let grant = authorizer()
            .authorize(&token, &request(Operation::Read))
            .expect("allowed");
        assert_eq!(grant.holder.as_deref(), Some("partner"));
        assert!(grant.allows_type(Operation::Read, SPOT));
        assert!(!grant.allows_type(Operation::Write, SPOT));
        assert!(
            grant.allows_attribute(STATUS) && !grant.allows_attribute("https://example.org/plate")
        );
        assert_eq!(grant.revocation_ids.len(), 1);
        // No write right at all: the write request is refused outright.
        assert!(matches!(
            authorizer().authorize(&token, &request(Operation::Write)),
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
            .authorize(&narrowed, &request(Operation::Read))
            .expect("allowed");
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
            ..request(Operation::Read)
        };
        assert!(matches!(
            authorizer().authorize(&token, &late),
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
            authorizer().authorize(&short, &request(Operation::Read)),
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
            authorizer().authorize(&foreign, &request(Operation::Read)),
            Err(Error::Unauthenticated(_))
        ));
        // Tampered bytes.
        let mut bytes = token.clone().into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(matches!(
            authorizer().authorize(&tampered, &request(Operation::Read)),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            authorizer().authorize("not a token", &request(Operation::Read)),
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
            authorizer().authorize(&tenanted, &south),
            Err(Error::Forbidden(_))
        ));
        let north = Request {
            tenant: Some("north"),
            ..request(Operation::Read)
        };
        assert!(authorizer().authorize(&tenanted, &north).is_ok());
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
            strict.authorize(&token, &request(Operation::Read)),
            Err(Error::Forbidden(_))
        ));
        assert!(Authorizer::new(key().public(), "this is not datalog", "transport").is_err());
    }
}
