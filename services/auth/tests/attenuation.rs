//! Property: however a token is attenuated, by however many blocks, the attenuated token never
//! allows an operation, a type or an attribute that the original does not.

use chrono::{DateTime, Utc};
use civitas_auth::authorizer::{Authorizer, Grant, Operation, Request};
use civitas_auth::keys::RootKey;
use civitas_auth::token::{ANY, Restrictions, TokenSpec, attenuate, issue};
use proptest::prelude::*;

const TYPES: &[&str] = &["https://t/A", "https://t/B", "https://t/C", ANY];
const ATTRIBUTES: &[&str] = &["https://a/x", "https://a/y", "https://a/z", ANY];
const PROBES: &[&str] = &["https://t/A", "https://t/B", "https://t/C", "https://t/D"];
const ATTRIBUTE_PROBES: &[&str] = &["https://a/x", "https://a/y", "https://a/z", "https://a/w"];

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
}

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(pool, 0..=pool.len())
        .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn spec() -> impl Strategy<Value = TokenSpec> {
    (
        names(TYPES),
        names(TYPES),
        proptest::option::of(names(ATTRIBUTES)),
    )
        .prop_map(|(read, write, attributes)| TokenSpec {
            holder: "h".into(),
            read,
            write,
            attributes,
            ..TokenSpec::default()
        })
}

fn restrictions() -> impl Strategy<Value = Restrictions> {
    (
        proptest::option::of(names(TYPES)),
        proptest::option::of(names(TYPES)),
        proptest::option::of(names(ATTRIBUTES)),
    )
        .prop_map(|(read, write, attributes)| Restrictions {
            read,
            write,
            attributes,
            ..Restrictions::default()
        })
}

fn grant(authorizer: &Authorizer, token: &str, operation: Operation) -> Option<Grant> {
    authorizer
        .authorize(&[token], &Request::new(operation, now()))
        .ok()
        .map(|authorized| authorized.grant().clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn attenuation_never_widens(spec in spec(), chain in proptest::collection::vec(restrictions(), 1..4)) {
        let key = RootKey::from_seed([9; 32]).expect("key");
        let authorizer = Authorizer::new(key.public(), "", "test").expect("authorizer");
        let original = issue(&key, &spec, now()).expect("issues");
        let mut narrowed = original.clone();
        for restriction in &chain {
            narrowed = attenuate(&narrowed, restriction, now()).expect("attenuates");
        }
        for operation in [Operation::Read, Operation::Write] {
            let before = grant(&authorizer, &original, operation);
            let after = grant(&authorizer, &narrowed, operation);
            let Some(after) = after else { continue };
            let before = before.expect("what the narrowed token allows, the original allows");
            for probe in PROBES {
                prop_assert!(!after.allows_type(operation, probe) || before.allows_type(operation, probe), "{operation:?} {probe}");
            }
            for probe in ATTRIBUTE_PROBES {
                prop_assert!(!after.allows_attribute(probe) || before.allows_attribute(probe), "{probe}");
            }
        }
    }
}
