//! JSON-LD @context processing, IRI expansion and IRI compaction for NGSI-LD payloads.
//!
//! NGSI-LD (ETSI GS CIM 009 clause 5.5.7) uses JSON-LD only to map short names (entity types,
//! attribute names, vocabulary values) to IRIs and back. This module implements exactly that part of
//! JSON-LD 1.1: the context processing algorithm (term definitions, `@vocab`, compact IRIs,
//! prefixes, remote and nested contexts, `@import`, protected terms) and the IRI expansion and
//! compaction algorithms, over an [`ActiveContext`] that is processed once and then shared.
//!
//! Remote contexts are I/O, and this crate does none. [`ActiveContext::process`] takes a loader
//! closure that answers from documents the caller already holds; when it does not hold one, the
//! loader returns [`Error::ContextNotLoaded`], the caller fetches that URL and processes again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::Error;

/// URL of the NGSI-LD core context this implementation targets (clause 5.5.7).
pub const CORE_CONTEXT_URL: &str =
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";

/// The bundled NGSI-LD core context document, v1.8.
pub const CORE_CONTEXT_V1_8: &str =
    include_str!("../../../schemas/contexts/ngsi-ld-core-context-v1.8.jsonld");

/// The bundled NGSI-LD core context document, v1.9.
pub const CORE_CONTEXT_V1_9: &str =
    include_str!("../../../schemas/contexts/ngsi-ld-core-context-v1.9.jsonld");

/// How deeply remote contexts may include other remote contexts.
const MAX_REMOTE_DEPTH: usize = 16;

/// Characters after which an IRI may serve as a prefix (JSON-LD 1.1, gen-delims).
fn ends_with_gen_delim(iri: &str) -> bool {
    iri.ends_with([':', '/', '?', '#', '[', ']', '@'])
}

/// One term definition of an active context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermDefinition {
    /// The IRI (or keyword) the term maps to; `None` when the term is explicitly mapped to `null`.
    pub iri: Option<String>,
    /// The `@type` coercion, expanded (`@id`, `@vocab`, `@json` or an IRI).
    pub type_mapping: Option<String>,
    /// The `@container` values.
    pub container: Vec<String>,
    /// Whether the term may be used as the prefix of a compact IRI.
    pub prefix: bool,
    /// Whether the term is protected against redefinition.
    pub protected: bool,
}

/// A processed JSON-LD context: everything needed to expand and compact names.
#[derive(Debug, Default)]
pub struct ActiveContext {
    terms: HashMap<String, TermDefinition>,
    vocab: Option<String>,
    /// IRI → the term chosen to compact it, built on first use.
    inverse: OnceLock<HashMap<String, String>>,
    /// Prefix-capable terms as (IRI, term), built on first use.
    prefixes: OnceLock<Vec<(String, String)>>,
}

impl Clone for ActiveContext {
    fn clone(&self) -> ActiveContext {
        ActiveContext {
            terms: self.terms.clone(),
            vocab: self.vocab.clone(),
            inverse: OnceLock::new(),
            prefixes: OnceLock::new(),
        }
    }
}

/// A loader answers a remote context URL with the whole JSON-LD document found there.
pub type Loader<'a> = dyn FnMut(&str) -> Result<Arc<Value>, Error> + 'a;

impl ActiveContext {
    /// The empty context: no terms, no vocabulary mapping.
    pub fn empty() -> ActiveContext {
        ActiveContext::default()
    }

    /// The vocabulary mapping (`@vocab`), if any.
    pub fn vocab(&self) -> Option<&str> {
        self.vocab.as_deref()
    }

    /// The definition of `term`, if the context defines it.
    pub fn term(&self, term: &str) -> Option<&TermDefinition> {
        self.terms.get(term)
    }

    /// Processes `local` (a context value: a URL, an object, `null` or an array of these) on top of
    /// this context and returns the result (JSON-LD 1.1 context processing algorithm).
    pub fn process(&self, local: &Value, loader: &mut Loader<'_>) -> Result<ActiveContext, Error> {
        let mut result = self.clone();
        let mut remote_stack = Vec::new();
        result.process_in_place(local, loader, &mut remote_stack)?;
        Ok(result)
    }

    fn process_in_place(
        &mut self,
        local: &Value,
        loader: &mut Loader<'_>,
        remote_stack: &mut Vec<String>,
    ) -> Result<(), Error> {
        let items: &[Value] = match local {
            Value::Array(items) => items,
            other => std::slice::from_ref(other),
        };
        for item in items {
            match item {
                Value::Null => {
                    if self.terms.values().any(|t| t.protected) {
                        return Err(Error::InvalidContext(
                            "a null context would clear protected terms".to_owned(),
                        ));
                    }
                    self.terms.clear();
                    self.vocab = None;
                }
                Value::String(url) => self.process_remote(url, loader, remote_stack)?,
                Value::Object(definitions) => {
                    self.process_object(definitions, loader, remote_stack)?
                }
                other => {
                    return Err(Error::InvalidContext(format!(
                        "a context entry must be a URL, an object or null, not {other}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn process_remote(
        &mut self,
        url: &str,
        loader: &mut Loader<'_>,
        remote_stack: &mut Vec<String>,
    ) -> Result<(), Error> {
        if remote_stack.iter().any(|seen| seen == url) {
            return Err(Error::InvalidContext(format!(
                "recursive inclusion of the context {url}"
            )));
        }
        if remote_stack.len() >= MAX_REMOTE_DEPTH {
            return Err(Error::InvalidContext(format!(
                "more than {MAX_REMOTE_DEPTH} levels of nested remote contexts"
            )));
        }
        let document = loader(url)?;
        let Some(context) = document.get("@context") else {
            return Err(Error::ContextNotAvailable {
                url: url.to_owned(),
                reason: "the document has no @context member".to_owned(),
            });
        };
        remote_stack.push(url.to_owned());
        let outcome = self.process_in_place(context, loader, remote_stack);
        remote_stack.pop();
        outcome
    }

    fn process_object(
        &mut self,
        definitions: &Map<String, Value>,
        loader: &mut Loader<'_>,
        remote_stack: &mut Vec<String>,
    ) -> Result<(), Error> {
        // `@import` (JSON-LD 1.1): the imported context's definitions, overridden by the local ones.
        let imported;
        let definitions = match definitions.get("@import") {
            Some(Value::String(url)) => {
                let document = loader(url)?;
                let Some(Value::Object(base)) = document.get("@context") else {
                    return Err(Error::InvalidContext(format!(
                        "@import {url} is not a context object"
                    )));
                };
                let mut merged = base.clone();
                for (key, value) in definitions {
                    if key != "@import" {
                        merged.insert(key.clone(), value.clone());
                    }
                }
                imported = merged;
                &imported
            }
            Some(_) => return Err(Error::InvalidContext("@import must be a string".to_owned())),
            None => definitions,
        };

        if let Some(version) = definitions.get("@version")
            && version.as_f64() != Some(1.1)
        {
            return Err(Error::InvalidContext("@version must be 1.1".to_owned()));
        }
        let default_protected = match definitions.get("@protected") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::InvalidContext(
                    "@protected must be a boolean".to_owned(),
                ));
            }
        };

        if let Some(vocab) = definitions.get("@vocab") {
            self.vocab = match vocab {
                Value::Null => None,
                Value::String(v) => Some(
                    self.expand_iri_while_defining(
                        v,
                        definitions,
                        loader,
                        remote_stack,
                        &mut HashMap::new(),
                        default_protected,
                    )?
                    .unwrap_or_default(),
                ),
                _ => {
                    return Err(Error::InvalidContext(
                        "@vocab must be a string or null".to_owned(),
                    ));
                }
            };
        }
        let mut defined: HashMap<String, bool> = HashMap::new();
        for term in definitions.keys() {
            if term.starts_with('@') {
                continue;
            }
            self.create_term_definition(
                term,
                definitions,
                default_protected,
                loader,
                remote_stack,
                &mut defined,
            )?;
        }
        Ok(())
    }

    /// JSON-LD 1.1 "Create Term Definition", without reverse properties and scoped contexts, which
    /// NGSI-LD names never need.
    fn create_term_definition(
        &mut self,
        term: &str,
        local: &Map<String, Value>,
        default_protected: bool,
        loader: &mut Loader<'_>,
        remote_stack: &mut Vec<String>,
        defined: &mut HashMap<String, bool>,
    ) -> Result<(), Error> {
        match defined.get(term) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(Error::InvalidContext(format!(
                    "cyclic IRI mapping for the term {term:?}"
                )));
            }
            None => {}
        }
        defined.insert(term.to_owned(), false);
        let value = local.get(term).cloned().unwrap_or(Value::Null);

        let (id, object) = match &value {
            Value::Null => (Some(Value::Null), None),
            Value::String(s) => (Some(Value::String(s.clone())), None),
            Value::Object(object) => (object.get("@id").cloned(), Some(object)),
            _ => {
                return Err(Error::InvalidContext(format!(
                    "the definition of {term:?} must be a string, an object or null"
                )));
            }
        };
        let simple = object.is_none();
        let protected = match object.and_then(|o| o.get("@protected")) {
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::InvalidContext(format!(
                    "@protected of {term:?} must be a boolean"
                )));
            }
            None => default_protected,
        };

        // JSON-LD 1.1 §4.2.2 step 14: an @id equal to the term is treated as if absent.
        let id = id.filter(|id| id.as_str() != Some(term));
        let iri = match id {
            Some(Value::Null) => None,
            Some(Value::String(id)) => {
                if id.starts_with('@') && !is_keyword(&id) {
                    // Keyword-like values that are not keywords are ignored (JSON-LD 1.1 §4.2.2 14.2.2).
                    defined.insert(term.to_owned(), true);
                    return Ok(());
                }
                let expanded = self.expand_iri_while_defining(
                    &id,
                    local,
                    loader,
                    remote_stack,
                    defined,
                    default_protected,
                )?;
                match expanded {
                    Some(iri) if is_keyword(&iri) || iri.contains(':') || iri.starts_with("_:") => {
                        Some(iri)
                    }
                    Some(iri) => {
                        return Err(Error::InvalidContext(format!(
                            "the term {term:?} maps to {iri:?}, which is not an IRI"
                        )));
                    }
                    None => None,
                }
            }
            Some(_) => {
                return Err(Error::InvalidContext(format!(
                    "@id of {term:?} must be a string"
                )));
            }
            None => {
                if let Some((prefix, suffix)) = term.split_once(':') {
                    if local.contains_key(prefix) {
                        self.create_term_definition(
                            prefix,
                            local,
                            default_protected,
                            loader,
                            remote_stack,
                            defined,
                        )?;
                    }
                    match self.terms.get(prefix).and_then(|t| t.iri.clone()) {
                        Some(prefix_iri) if !suffix.starts_with("//") => {
                            Some(format!("{prefix_iri}{suffix}"))
                        }
                        _ => Some(term.to_owned()),
                    }
                } else if let Some(vocab) = &self.vocab {
                    Some(format!("{vocab}{term}"))
                } else {
                    return Err(Error::InvalidContext(format!(
                        "the term {term:?} has no @id and the context has no @vocab"
                    )));
                }
            }
        };

        let type_mapping = match object.and_then(|o| o.get("@type")) {
            None => None,
            Some(Value::String(t)) => match t.as_str() {
                "@id" | "@vocab" | "@json" | "@none" => Some(t.clone()),
                _ => self.expand_iri_while_defining(
                    t,
                    local,
                    loader,
                    remote_stack,
                    defined,
                    default_protected,
                )?,
            },
            Some(_) => {
                return Err(Error::InvalidContext(format!(
                    "@type of {term:?} must be a string"
                )));
            }
        };
        let container = match object.and_then(|o| o.get("@container")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(c)) => vec![c.clone()],
            Some(Value::Array(cs)) => cs
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                return Err(Error::InvalidContext(format!(
                    "@container of {term:?} is invalid"
                )));
            }
        };
        let prefix = match object.and_then(|o| o.get("@prefix")) {
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Error::InvalidContext(format!(
                    "@prefix of {term:?} must be a boolean"
                )));
            }
            None => {
                simple && !term.contains(':') && iri.as_deref().is_some_and(ends_with_gen_delim)
            }
        };

        let definition = TermDefinition {
            iri,
            type_mapping,
            container,
            prefix,
            protected,
        };
        if let Some(previous) = self.terms.get(term)
            && previous.protected
            && *previous != definition
        {
            // A protected term keeps its definition. JSON-LD would reject the context; NGSI-LD
            // brokers apply the core context last, which has the same effect, so we keep the
            // protected meaning and accept the payload.
            defined.insert(term.to_owned(), true);
            return Ok(());
        }
        self.terms.insert(term.to_owned(), definition);
        defined.insert(term.to_owned(), true);
        Ok(())
    }

    fn expand_iri_while_defining(
        &mut self,
        value: &str,
        local: &Map<String, Value>,
        loader: &mut Loader<'_>,
        remote_stack: &mut Vec<String>,
        defined: &mut HashMap<String, bool>,
        default_protected: bool,
    ) -> Result<Option<String>, Error> {
        if is_keyword(value) {
            return Ok(Some(value.to_owned()));
        }
        if local.contains_key(value) && defined.get(value) != Some(&true) {
            self.create_term_definition(
                value,
                local,
                default_protected,
                loader,
                remote_stack,
                defined,
            )?;
        }
        // A prefix is defined first, unless the value is an absolute IRI or a blank node
        // (JSON-LD 1.1 API §5.2.2 step 6.2: a suffix starting with `//` is not a compact IRI).
        if let Some((prefix, suffix)) = value.split_once(':')
            && prefix != "_"
            && !suffix.starts_with("//")
            && local.contains_key(prefix)
            && defined.get(prefix) != Some(&true)
        {
            self.create_term_definition(
                prefix,
                local,
                default_protected,
                loader,
                remote_stack,
                defined,
            )?;
        }
        Ok(self.expand_iri(value, true))
    }

    /// JSON-LD IRI expansion. `vocab` is true for names (keys, `@type` values, `@vocab`-typed
    /// values) and false for `@id`-typed values such as a Relationship's `object`. Returns `None`
    /// when the term is explicitly mapped to null.
    pub fn expand_iri(&self, value: &str, vocab: bool) -> Option<String> {
        if is_keyword(value) {
            return Some(value.to_owned());
        }
        if vocab && let Some(definition) = self.terms.get(value) {
            return definition.iri.clone();
        }
        if let Some((prefix, suffix)) = value.split_once(':') {
            if prefix == "_" || suffix.starts_with("//") {
                return Some(value.to_owned());
            }
            if let Some(definition) = self.terms.get(prefix)
                && definition.prefix
                && let Some(prefix_iri) = &definition.iri
            {
                return Some(format!("{prefix_iri}{suffix}"));
            }
            return Some(value.to_owned());
        }
        if vocab && let Some(vocab) = &self.vocab {
            return Some(format!("{vocab}{value}"));
        }
        Some(value.to_owned())
    }

    /// Expands a name (attribute, entity type or vocabulary value). Names mapped to null fall back to
    /// the name itself, so they are kept rather than silently dropped.
    pub fn expand_name(&self, name: &str) -> String {
        self.expand_iri(name, true)
            .unwrap_or_else(|| name.to_owned())
    }

    /// JSON-LD IRI compaction of a name (vocab-relative): the term that maps to `iri`, else a
    /// `@vocab`-relative name, else a compact IRI, else the IRI itself.
    pub fn compact_name<'a>(&self, iri: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        if let Some(term) = self.inverse().get(iri) {
            return Cow::Owned(term.clone());
        }
        if let Some(vocab) = &self.vocab
            && let Some(suffix) = iri.strip_prefix(vocab.as_str())
            && !suffix.is_empty()
            && !self.terms.contains_key(suffix)
            && !suffix.contains(':')
        {
            return Cow::Owned(suffix.to_owned());
        }
        if let Some(compact) = self.compact_with_prefix(iri) {
            return Cow::Owned(compact);
        }
        Cow::Borrowed(iri)
    }

    /// Compacts an `@id`-typed value (a Relationship object): only compact IRIs apply.
    pub fn compact_id<'a>(&self, iri: &'a str) -> std::borrow::Cow<'a, str> {
        match self.compact_with_prefix(iri) {
            Some(compact) => std::borrow::Cow::Owned(compact),
            None => std::borrow::Cow::Borrowed(iri),
        }
    }

    fn compact_with_prefix(&self, iri: &str) -> Option<String> {
        let mut best: Option<String> = None;
        for (prefix_iri, term) in self.prefixes() {
            let Some(suffix) = iri.strip_prefix(prefix_iri.as_str()) else {
                continue;
            };
            if suffix.is_empty() {
                continue;
            }
            let candidate = format!("{term}:{suffix}");
            // A candidate that is itself a term with another meaning would not expand back.
            if self
                .terms
                .get(&candidate)
                .is_some_and(|t| t.iri.as_deref() != Some(iri))
            {
                continue;
            }
            let better = match &best {
                None => true,
                Some(current) => {
                    candidate.len() < current.len()
                        || (candidate.len() == current.len() && candidate < *current)
                }
            };
            if better {
                best = Some(candidate);
            }
        }
        best
    }

    fn inverse(&self) -> &HashMap<String, String> {
        self.inverse.get_or_init(|| {
            let mut inverse: HashMap<String, String> = HashMap::new();
            for (term, definition) in &self.terms {
                let Some(iri) = &definition.iri else { continue };
                if is_keyword(iri) || term.contains(':') {
                    continue;
                }
                let better = match inverse.get(iri) {
                    None => true,
                    Some(current) => {
                        term.len() < current.len()
                            || (term.len() == current.len() && term < current)
                    }
                };
                if better {
                    inverse.insert(iri.clone(), term.clone());
                }
            }
            inverse
        })
    }

    fn prefixes(&self) -> &[(String, String)] {
        self.prefixes.get_or_init(|| {
            let mut prefixes: Vec<(String, String)> = self
                .terms
                .iter()
                .filter(|(_, d)| d.prefix)
                .filter_map(|(term, d)| d.iri.clone().map(|iri| (iri, term.clone())))
                .collect();
            prefixes.sort();
            prefixes
        })
    }

    /// The names of all terms the context defines; for tests and diagnostics.
    pub fn term_names(&self) -> HashSet<&str> {
        self.terms.keys().map(String::as_str).collect()
    }
}

/// Whether `s` is a JSON-LD keyword.
pub fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "@base"
            | "@container"
            | "@context"
            | "@direction"
            | "@graph"
            | "@id"
            | "@import"
            | "@included"
            | "@index"
            | "@json"
            | "@language"
            | "@list"
            | "@nest"
            | "@none"
            | "@prefix"
            | "@propagate"
            | "@protected"
            | "@reverse"
            | "@set"
            | "@type"
            | "@value"
            | "@version"
            | "@vocab"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn core() -> Arc<Value> {
        Arc::new(serde_json::from_str(CORE_CONTEXT_V1_8).expect("bundled core context parses"))
    }

    fn process(local: Value) -> ActiveContext {
        let core = core();
        let mut loader = |url: &str| -> Result<Arc<Value>, Error> {
            if url == CORE_CONTEXT_URL {
                Ok(core.clone())
            } else {
                Err(Error::ContextNotLoaded(url.to_owned()))
            }
        };
        ActiveContext::empty()
            .process(&json!([local, CORE_CONTEXT_URL]), &mut loader)
            .expect("context processes")
    }

    fn check_roundtrip(ctx: &ActiveContext, name: &str, expanded: &str) {
        assert_eq!(ctx.expand_name(name), expanded, "expanding {name}");
        assert_eq!(ctx.compact_name(expanded), name, "compacting {expanded}");
    }

    #[test]
    fn core_terms_and_default_vocab() {
        let ctx = process(json!({}));
        check_roundtrip(&ctx, "location", "https://uri.etsi.org/ngsi-ld/location");
        check_roundtrip(
            &ctx,
            "speed",
            "https://uri.etsi.org/ngsi-ld/default-context/speed",
        );
        check_roundtrip(&ctx, "Property", "https://uri.etsi.org/ngsi-ld/Property");
    }

    #[test]
    fn user_terms_prefixes_and_absolute_iris() {
        let ctx = process(json!({
            "ex": "https://example.org/ns#",
            "Vehicle": "ex:Vehicle",
            "brand": {"@id": "https://example.org/ns#brandName", "@type": "@vocab"},
        }));
        check_roundtrip(&ctx, "Vehicle", "https://example.org/ns#Vehicle");
        check_roundtrip(&ctx, "brand", "https://example.org/ns#brandName");
        check_roundtrip(&ctx, "ex:other", "https://example.org/ns#other");
        check_roundtrip(&ctx, "https://elsewhere.org/x", "https://elsewhere.org/x");
        assert_eq!(
            ctx.expand_iri("urn:ngsi-ld:Car:1", false).as_deref(),
            Some("urn:ngsi-ld:Car:1")
        );
    }

    #[test]
    fn protected_core_terms_survive_redefinition() {
        let ctx = process(json!({"location": "https://example.org/myLocation"}));
        assert_eq!(
            ctx.expand_name("location"),
            "https://uri.etsi.org/ngsi-ld/location"
        );
    }

    #[test]
    fn missing_remote_context_is_reported() {
        let mut loader = |url: &str| -> Result<Arc<Value>, Error> {
            Err(Error::ContextNotLoaded(url.to_owned()))
        };
        let err = ActiveContext::empty()
            .process(&json!("https://example.org/ctx.jsonld"), &mut loader)
            .expect_err("must ask for the document");
        assert_eq!(
            err,
            Error::ContextNotLoaded("https://example.org/ctx.jsonld".to_owned())
        );
    }

    #[test]
    fn cyclic_remote_contexts_are_rejected() {
        let doc = Arc::new(json!({"@context": "https://example.org/a"}));
        let mut loader = |_: &str| -> Result<Arc<Value>, Error> { Ok(doc.clone()) };
        let err = ActiveContext::empty()
            .process(&json!("https://example.org/a"), &mut loader)
            .expect_err("cycle");
        assert!(matches!(err, Error::InvalidContext(_)), "{err:?}");
    }

    #[test]
    fn invalid_contexts_are_rejected() {
        let mut loader = |url: &str| -> Result<Arc<Value>, Error> {
            Err(Error::ContextNotLoaded(url.to_owned()))
        };
        for bad in [
            json!(42),
            json!({"a": 5}),
            json!({"@vocab": 3}),
            json!({"a": {"@id": "b"}, "b": {"@id": "a"}}),
        ] {
            assert!(
                ActiveContext::empty().process(&bad, &mut loader).is_err(),
                "{bad}"
            );
        }
    }
}
