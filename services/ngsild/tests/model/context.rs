//! @context processing (JSON-LD 1.1 context processing as NGSI-LD uses it, clause 5.5.7) and IRI
//! expansion and compaction of names.

use civitas_ngsild::Error;
use civitas_ngsild::context::{ActiveContext, CORE_CONTEXT_URL};
use serde_json::{Value, json};

use crate::support::{DEFAULT, EX, core, dflt, ex, ngsi, process, with_core};

/// Under `[user, core]`, each name expands to the IRI given, and that IRI compacts back to it.
fn check_roundtrip(user: Value, cases: &[(&str, &str)]) {
    let ctx = with_core(user.clone());
    for (name, iri) in cases {
        assert_eq!(ctx.expand_name(name), *iri, "{user}: expanding {name}");
        assert_eq!(ctx.compact_name(iri), *name, "{user}: compacting {iri}");
    }
}

/// Under `[user, core]`, each name expands to the IRI given.
fn check_expand(user: Value, cases: &[(&str, &str)]) {
    let ctx = with_core(user.clone());
    for (name, iri) in cases {
        assert_eq!(ctx.expand_name(name), *iri, "{user}: expanding {name}");
    }
}

/// Under `ctx`, each IRI compacts to the name given.
fn check_compact(ctx: &ActiveContext, cases: &[(&str, &str)]) {
    for (iri, name) in cases {
        assert_eq!(ctx.compact_name(iri), *name, "compacting {iri}");
    }
}

/// Processing `local` (on the empty context, with the given remote documents) fails with
/// `InvalidContext` whose detail mentions `needle`.
fn check_invalid(local: Value, documents: &[(&str, Value)], needle: &str) {
    match process(&local, documents) {
        Err(Error::InvalidContext(detail)) => {
            assert!(
                detail.contains(needle),
                "{local}: {detail:?} lacks {needle:?}"
            )
        }
        other => panic!("{local}: expected InvalidContext ({needle}), got {other:?}"),
    }
}

/// Processing `local` succeeds, and each name expands to the IRI given.
fn check_processed(local: Value, documents: &[(&str, Value)], cases: &[(&str, &str)]) {
    let ctx = process(&local, documents).unwrap_or_else(|e| panic!("{local}: {e}"));
    for (name, iri) in cases {
        assert_eq!(ctx.expand_name(name), *iri, "{local}: expanding {name}");
    }
}

#[test]
fn core_context_terms_and_default_vocabulary() {
    check_roundtrip(
        json!({}),
        &[
            ("location", &ngsi("location")),
            ("observationSpace", &ngsi("observationSpace")),
            ("Property", &ngsi("Property")),
            ("GeoProperty", &ngsi("GeoProperty")),
            ("unitCode", &ngsi("unitCode")),
            ("Point", "https://purl.org/geojson/vocab#Point"),
            // Names the caller did not define belong to the default context (clause 5.5.7).
            ("speed", &dflt("speed")),
            ("Vehicle", &dflt("Vehicle")),
            // Names that are not terms compact with the core prefixes, or stay absolute.
            ("ngsi-ld:somethingElse", &ngsi("somethingElse")),
            ("geojson:bbox2", "https://purl.org/geojson/vocab#bbox2"),
            ("https://example.org/speed", "https://example.org/speed"),
            ("urn:ngsi-ld:attr:1", "urn:ngsi-ld:attr:1"),
        ],
    );
    // The core maps `value` and `object` to `hasValue` and `hasObject`.
    check_expand(
        json!({}),
        &[
            ("value", &ngsi("hasValue")),
            ("object", &ngsi("hasObject")),
            ("id", "@id"),
            ("type", "@type"),
            ("@context", "@context"),
        ],
    );
    // A term whose @id is the term itself is vocabulary-relative.
    check_expand(json!({}), &[("attributeCount", &dflt("attributeCount"))]);
}

#[test]
fn core_context_is_protected() {
    let ctx = core();
    for term in [
        "location",
        "id",
        "type",
        "Property",
        "observedAt",
        "ngsi-ld",
    ] {
        let definition = ctx
            .term(term)
            .unwrap_or_else(|| panic!("{term} is a core term"));
        assert!(definition.protected, "{term} is protected");
    }
    let unprotected: Vec<&str> = ctx
        .term_names()
        .into_iter()
        .filter(|term| !ctx.term(term).is_some_and(|d| d.protected))
        .collect();
    assert!(
        unprotected.is_empty(),
        "unprotected core terms: {unprotected:?}"
    );
    assert_eq!(ctx.vocab(), Some(DEFAULT));
    assert!(ctx.term_names().contains("createdAt"));
}

#[test]
fn user_terms_strings_objects_compact_iris_and_prefixes() {
    check_roundtrip(
        json!({
            "ex": EX,
            "Vehicle": "ex:Vehicle",
            "Car": "https://example.org/Car",
            "brand": {"@id": "ex:brandName", "@type": "@vocab"},
            "ex:Bus": {"@type": "@id"},
        }),
        &[
            ("Vehicle", &ex("Vehicle")),
            ("Car", "https://example.org/Car"),
            ("brand", &ex("brandName")),
            ("ex", EX),
            // A compact IRI with a user prefix, and a term that is itself a compact IRI.
            ("ex:Bike", &ex("Bike")),
            ("ex:Bus", &ex("Bus")),
        ],
    );
    let ctx = with_core(json!({
        "ex": EX,
        "brand": {"@id": "ex:brandName", "@type": "@vocab"},
        "owner": {"@id": "https://example.org/owner", "@type": "@id", "@container": "@set"},
        "typed": {"@id": "https://example.org/typed", "@type": "ex:Type"},
    }));
    let brand = ctx.term("brand").expect("brand is defined");
    assert_eq!(brand.iri.as_deref(), Some(ex("brandName").as_str()));
    assert_eq!(brand.type_mapping.as_deref(), Some("@vocab"));
    assert!(!brand.prefix, "an expanded term definition is not a prefix");
    assert!(!brand.protected, "user terms are not protected");
    let owner = ctx.term("owner").expect("owner is defined");
    assert_eq!(owner.type_mapping.as_deref(), Some("@id"));
    assert_eq!(owner.container, ["@set"]);
    let typed = ctx.term("typed").expect("typed is defined");
    assert_eq!(typed.type_mapping.as_deref(), Some(ex("Type").as_str()));
    assert!(ctx.term("ex").expect("ex is defined").prefix);
}

#[test]
fn prefix_flag_follows_json_ld_1_1() {
    // JSON-LD 1.1 §4.2.2: only simple terms ending in a gen-delim, or terms with `@prefix: true`,
    // serve as prefixes of compact IRIs.
    check_expand(
        json!({
            "exo": {"@id": "https://example.org/other/"},
            "exp": {"@id": "https://example.org/prefixed/", "@prefix": true},
            "nodelim": "https://example.org/nodelim",
        }),
        &[
            ("exo:x", "exo:x"),
            ("exp:x", "https://example.org/prefixed/x"),
            ("nodelim:x", "nodelim:x"),
        ],
    );
}

#[test]
fn term_named_like_a_scheme() {
    // JSON-LD 1.1 IRI expansion (API §5.2.2 step 6.2) takes a value whose suffix starts with `//`
    // as an absolute IRI before it looks for a prefix, so `{"https": "https://…/"}` is a valid
    // definition and absolute IRIs still expand to themselves.
    let ctx = process(&json!({"https": "https://example.org/scheme/"}), &[]).expect("processes");
    assert_eq!(
        ctx.expand_name("https://example.org/x"),
        "https://example.org/x"
    );
    let ctx = process(
        &json!({"Car": "https://example.org/Car", "https": "https://example.org/scheme/"}),
        &[],
    )
    .expect("processes");
    assert_eq!(ctx.expand_name("Car"), "https://example.org/Car");
}

#[test]
fn vocab_mapping_and_context_order() {
    // `@vocab` alone, without the core context after it.
    check_processed(
        json!({"@vocab": "https://example.org/vocab/"}),
        &[],
        &[("speed", "https://example.org/vocab/speed")],
    );
    // `@vocab` may itself be a compact IRI or a term of the same context.
    check_processed(
        json!({"ex": EX, "@vocab": "ex:"}),
        &[],
        &[("speed", &ex("speed"))],
    );
    // The core context, applied last, sets its own @vocab; applied first, the user's wins.
    check_expand(
        json!({"@vocab": "https://example.org/vocab/"}),
        &[("speed", &dflt("speed"))],
    );
    check_processed(
        json!([CORE_CONTEXT_URL, {"@vocab": "https://example.org/vocab/"}]),
        &[],
        &[
            ("speed", "https://example.org/vocab/speed"),
            ("location", &ngsi("location")),
        ],
    );
    // `@vocab: null` removes the mapping: names stay as they are.
    check_processed(
        json!([CORE_CONTEXT_URL, {"@vocab": null}]),
        &[],
        &[("speed", "speed")],
    );
    // A term without @id takes the @vocab of its own context.
    check_processed(
        json!({"@vocab": "https://example.org/vocab/", "speed": {"@type": "@id"}}),
        &[],
        &[("speed", "https://example.org/vocab/speed")],
    );
}

#[test]
fn term_mapped_to_null_and_keyword_aliases() {
    // A term mapped to null is kept under its own name rather than silently dropped.
    let ctx = with_core(json!({"secret": null}));
    assert_eq!(ctx.expand_iri("secret", true), None);
    assert_eq!(ctx.expand_name("secret"), "secret");
    // Keyword aliases expand to the keyword; keyword-like strings that are not keywords are ignored
    // (JSON-LD 1.1 §4.2.2 step 14.2.2).
    check_expand(
        json!({"kind": "@type", "odd": "@notAKeyword"}),
        &[("kind", "@type"), ("odd", &dflt("odd"))],
    );
}

#[test]
fn id_values_expand_and_compact_with_prefixes_only() {
    let ctx = with_core(json!({"ex": EX, "car1": "urn:ngsi-ld:Car:1"}));
    // `@id`-typed values (Relationship objects) do not use terms or @vocab, only prefixes.
    for (value, iri) in [
        ("urn:ngsi-ld:Car:1", "urn:ngsi-ld:Car:1"),
        ("car1", "car1"),
        ("ex:car2", &ex("car2")),
        ("https://example.org/car3", "https://example.org/car3"),
        ("_:blank", "_:blank"),
    ] {
        assert_eq!(
            ctx.expand_iri(value, false).as_deref(),
            Some(iri),
            "{value}"
        );
    }
    for (iri, compact) in [
        ("urn:ngsi-ld:Car:1", "urn:ngsi-ld:Car:1"),
        (ex("car2").as_str(), "ex:car2"),
        (ngsi("Thing1").as_str(), "ngsi-ld:Thing1"),
    ] {
        assert_eq!(ctx.compact_id(iri), compact, "{iri}");
    }
}

#[test]
fn compaction_picks_the_shortest_term_then_vocab_then_prefix() {
    let ctx = with_core(json!({
        "ex": EX,
        "aa": "https://example.org/same",
        "b": "https://example.org/same",
        "c": "https://example.org/same",
        "exlong": "https://example.org/ns#long/",
    }));
    check_compact(
        &ctx,
        &[
            ("https://example.org/same", "b"),
            // The longest-prefix rule of JSON-LD is "shortest compact IRI wins".
            (&ex("long/x"), "exlong:x"),
            (&ex("y"), "ex:y"),
            (&dflt("z"), "z"),
            ("https://elsewhere.org/w", "https://elsewhere.org/w"),
        ],
    );
}

#[test]
fn default_context_iri_shadowed_by_a_user_term_compacts_with_the_core_prefix() {
    // The ETSI test suite's context defines `almostFull` to its own IRI. An attribute created
    // under the core context alone lives at the default-context IRI; it must not compact to
    // `almostFull`, which would expand to the other IRI.
    let user = json!({"almostFull": "https://ngsi-ld-test-suite/context#almostFull"});
    check_roundtrip(
        user.clone(),
        &[
            (
                "almostFull",
                "https://ngsi-ld-test-suite/context#almostFull",
            ),
            ("ngsi-ld:default-context/almostFull", &dflt("almostFull")),
        ],
    );
    // Without a core prefix to fall back on, the IRI stays absolute.
    let ctx = process(&json!([{"@vocab": DEFAULT}, user]), &[]).expect("processes");
    check_compact(&ctx, &[(&dflt("almostFull"), &dflt("almostFull"))]);
}

#[test]
fn protected_core_terms_keep_their_meaning() {
    // Redefining a core term before the core context: the core definition wins.
    check_expand(
        json!({"location": "https://example.org/myLocation", "Property": "https://example.org/P"}),
        &[
            ("location", &ngsi("location")),
            ("Property", &ngsi("Property")),
        ],
    );
    // After the core context, JSON-LD 1.1 raises "protected term redefinition"; NGSI-LD brokers
    // apply the core context last, so this implementation keeps the protected meaning instead.
    check_processed(
        json!([CORE_CONTEXT_URL, {"location": "https://example.org/myLocation", "speed": "https://example.org/speed"}]),
        &[],
        &[
            ("location", &ngsi("location")),
            ("speed", "https://example.org/speed"),
        ],
    );
    // Restating a protected term with the same IRI is allowed.
    check_processed(
        json!([CORE_CONTEXT_URL, {"location": "ngsi-ld:location"}]),
        &[],
        &[("location", &ngsi("location"))],
    );
    // A user context may protect its own terms.
    check_processed(
        json!([
            {"@protected": true, "speed": "https://example.org/speed"},
            {"speed": "https://example.org/other"}
        ]),
        &[],
        &[("speed", "https://example.org/speed")],
    );
    // A term-level @protected overrides the context default.
    let ctx = process(
        &json!({"@protected": true, "open": {"@id": "https://example.org/open", "@protected": false}}),
        &[],
    )
    .expect("processes");
    assert!(!ctx.term("open").expect("defined").protected);
}

#[test]
fn protection_of_a_term_defined_as_a_dependency() {
    // With `@protected: true`, every term of the context is protected (JSON-LD 1.1 §4.2.2 step 11),
    // including a prefix that another term of the same context needs first.
    let ctx =
        process(&json!({"@protected": true, "Car": "ex:Car", "ex": EX}), &[]).expect("processes");
    assert!(ctx.term("Car").expect("defined").protected);
    assert!(ctx.term("ex").expect("defined").protected);
}

#[test]
fn null_context_clears_unprotected_terms_only() {
    check_processed(
        json!([{"speed": "https://example.org/speed"}, null]),
        &[],
        &[("speed", "speed")],
    );
    check_invalid(
        json!([CORE_CONTEXT_URL, null]),
        &[],
        "null context would clear protected terms",
    );
}

#[test]
fn remote_contexts_through_the_loader() {
    let a = "https://example.org/a.jsonld";
    let b = "https://example.org/b.jsonld";
    let compound = "https://example.org/compound.jsonld";
    let documents = [
        (a, json!({"@context": {"Car": "https://example.org/Car"}})),
        (b, json!({"@context": [{"ex": EX}, {"Bus": "ex:Bus"}]})),
        // Like the ETSI suite's compound context: an array of remote contexts, the core one last.
        (compound, json!({"@context": [a, b, CORE_CONTEXT_URL]})),
    ];
    check_processed(
        json!(compound),
        &documents,
        &[
            ("Car", "https://example.org/Car"),
            ("Bus", &ex("Bus")),
            ("location", &ngsi("location")),
            ("speed", &dflt("speed")),
        ],
    );
    // The same remote context twice in a row is not a cycle.
    check_processed(
        json!([a, a]),
        &documents,
        &[("Car", "https://example.org/Car")],
    );
    // A missing document is asked for by URL; the caller fetches it and processes again.
    assert_eq!(
        process(
            &json!([a, "https://example.org/missing.jsonld"]),
            &documents
        )
        .err(),
        Some(Error::ContextNotLoaded(
            "https://example.org/missing.jsonld".to_owned()
        ))
    );
    // A document without @context is not a context.
    let empty = "https://example.org/empty.jsonld";
    match process(&json!(empty), &[(empty, json!({"Car": "x"}))]) {
        Err(Error::ContextNotAvailable { url, .. }) => assert_eq!(url, empty),
        other => panic!("expected ContextNotAvailable, got {other:?}"),
    }
}

#[test]
fn remote_context_cycles_and_depth() {
    let a = "https://example.org/a.jsonld";
    let b = "https://example.org/b.jsonld";
    check_invalid(
        json!(a),
        &[(a, json!({"@context": a}))],
        "recursive inclusion",
    );
    check_invalid(
        json!(a),
        &[
            (a, json!({"@context": [b]})),
            (b, json!({"@context": [{"x": "urn:x"}, a]})),
        ],
        "recursive inclusion",
    );
    // A chain of 16 nested remote contexts is fine; the 17th level is refused.
    let urls: Vec<String> = (0..=16)
        .map(|i| format!("https://example.org/chain/{i}.jsonld"))
        .collect();
    let chain = |levels: usize| -> Vec<(&str, Value)> {
        (0..levels)
            .map(|i| {
                let next = if i + 1 == levels {
                    json!({"@context": {"deep": "https://example.org/deep"}})
                } else {
                    json!({"@context": urls[i + 1]})
                };
                (urls[i].as_str(), next)
            })
            .collect()
    };
    check_processed(
        json!(urls[0]),
        &chain(16),
        &[("deep", "https://example.org/deep")],
    );
    check_invalid(json!(urls[0]), &chain(17), "more than 16 levels");
}

#[test]
fn import_merges_the_imported_context_under_the_local_one() {
    let base = "https://example.org/base.jsonld";
    let documents = [(
        base,
        json!({"@context": {"ex": EX, "Car": "ex:Car", "speed": "ex:speed"}}),
    )];
    check_processed(
        json!([{"@import": base, "speed": "https://example.org/localSpeed"}, CORE_CONTEXT_URL]),
        &documents,
        &[
            ("Car", &ex("Car")),
            ("speed", "https://example.org/localSpeed"),
            ("location", &ngsi("location")),
        ],
    );
    assert_eq!(
        process(&json!({"@import": "https://example.org/unknown"}), &[]).err(),
        Some(Error::ContextNotLoaded(
            "https://example.org/unknown".to_owned()
        ))
    );
    check_invalid(json!({"@import": 5}), &[], "@import must be a string");
    let array = "https://example.org/array.jsonld";
    check_invalid(
        json!({"@import": array}),
        &[(array, json!({"@context": [{"a": "urn:a"}]}))],
        "is not a context object",
    );
}

#[test]
fn keywords_that_do_not_concern_names_are_accepted() {
    // `@base`, `@language`, `@direction` and `@propagate` are valid context entries (JSON-LD 1.1
    // §4.1.2); names are not affected by them.
    check_processed(
        json!([
            {"@base": "https://example.org/", "@language": "en", "@direction": "ltr", "@propagate": true, "@version": 1.1},
            CORE_CONTEXT_URL
        ]),
        &[],
        &[("speed", &dflt("speed")), ("location", &ngsi("location"))],
    );
}

#[test]
fn cyclic_term_definitions() {
    check_invalid(json!({"a": "b:x", "b": "a:y"}), &[], "cyclic IRI mapping");
    check_invalid(
        json!({"a": {"@id": "b"}, "b": {"@id": "a"}}),
        &[],
        "cyclic IRI mapping",
    );
}

#[test]
fn invalid_contexts() {
    for (local, needle) in [
        (json!(42), "must be a URL, an object or null"),
        (json!(true), "must be a URL, an object or null"),
        // JSON-LD 1.1 §4.1.2 step 5.3: an array inside an array is not a context.
        (
            json!([[{"a": "urn:a"}]]),
            "must be a URL, an object or null",
        ),
        (json!({"a": 5}), "must be a string, an object or null"),
        (json!({"@vocab": 3}), "@vocab must be a string or null"),
        (json!({"@version": 1.0}), "@version must be 1.1"),
        (json!({"@protected": "yes"}), "@protected must be a boolean"),
        (json!({"a": {"@id": 5}}), "@id of \"a\" must be a string"),
        (json!({"a": {"@id": "urn:a", "@type": 5}}), "@type of \"a\""),
        (
            json!({"a": {"@id": "urn:a", "@container": 5}}),
            "@container of \"a\"",
        ),
        (
            json!({"a": {"@id": "urn:a", "@prefix": "no"}}),
            "@prefix of \"a\"",
        ),
        (
            json!({"a": {"@id": "urn:a", "@protected": 1}}),
            "@protected of \"a\"",
        ),
        (json!({"a": "relative"}), "which is not an IRI"),
        (
            json!({"speed": {"@type": "@id"}}),
            "has no @id and the context has no @vocab",
        ),
    ] {
        check_invalid(local, &[], needle);
    }
}

#[test]
fn processing_builds_on_the_active_context() {
    // `process` returns a new context; the one it builds on is unchanged.
    let base = with_core(json!({"Car": "https://example.org/Car"}));
    let mut loader = |url: &str| -> Result<std::sync::Arc<Value>, Error> {
        Err(Error::ContextNotLoaded(url.to_owned()))
    };
    let extended = base
        .process(&json!({"Bus": "https://example.org/Bus"}), &mut loader)
        .expect("processes");
    assert_eq!(extended.expand_name("Car"), "https://example.org/Car");
    assert_eq!(extended.expand_name("Bus"), "https://example.org/Bus");
    assert_eq!(base.expand_name("Bus"), dflt("Bus"));
}
