//! The NGSI-LD query language (`q`, ETSI GS CIM 009 clause 4.9): parsing and evaluation against
//! entities.
//!
//! A query is terms joined by `;` (and) and `|` (or), grouped with parentheses; `;` binds tighter
//! than `|`. A term is an attribute path alone (the attribute exists) or compared with `==`, `!=`,
//! `>`, `>=`, `<`, `<=`, `~=` (matches a regular expression) or `!~=` (does not). The path names an
//! attribute, then sub-attributes with `.` (`speed.accuracy`), then members of a structured value
//! with `[…]` (`address[city]`); attribute and sub-attribute names are expanded with the request's
//! @context when the query is parsed. `==` and `!=` also take a list (`a","b"`… written
//! `"a","b"`) or a range (`10..20`). Values are numbers, double-quoted strings, `true`/`false`,
//! date-times (compared as instants), and URIs (written bare, for relationships).
//!
//! An attribute with several instances (`datasetId`) or an array value matches when any instance
//! or item does; a term about an attribute the entity lacks does not match (so neither does `!=`).

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use regex::Regex;
use serde_json::Value;

use crate::Error;
use crate::canonical::instant;
use crate::context::ActiveContext;
use crate::entity::{Attribute, AttributeValue, Attributes, Entity};

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query(Expr);

#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Term(Term),
}

#[derive(Debug, Clone)]
struct Term {
    /// The attribute, then sub-attributes (expanded names).
    path: Vec<String>,
    /// Members of a structured value (`[…]`), as written.
    members: Vec<String>,
    test: Option<Test>,
}

#[derive(Debug, Clone)]
enum Test {
    Compare(Op, Literal),
    Equal(Vec<Literal>),
    Unequal(Vec<Literal>),
    InRange(Literal, Literal),
    OutOfRange(Literal, Literal),
    Pattern(Regex),
    NotPattern(Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Greater,
    GreaterEq,
    Less,
    LessEq,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
    Instant(DateTime<Utc>),
    /// A bare token: a URI, or a date or time compared as text.
    Bare(String),
}

fn bad(message: impl Into<String>) -> Error {
    Error::bad(format!("invalid q: {}", message.into()))
}

impl Query {
    /// Parses `text`, expanding attribute names with `context`.
    pub fn parse(text: &str, context: &ActiveContext) -> Result<Query, Error> {
        let mut parser = Parser {
            text,
            pos: 0,
            context,
        };
        let expr = parser.or()?;
        if parser.pos != text.len() {
            return Err(bad(format!(
                "unexpected {:?} at position {}",
                &text[parser.pos..],
                parser.pos
            )));
        }
        Ok(Query(expr))
    }

    /// Whether `entity` satisfies the query.
    pub fn matches(&self, entity: &Entity) -> bool {
        self.0.eval(&entity.attributes)
    }

    /// Whether `members` satisfy the query, each member (expanded name → value, as a context
    /// source registration keeps its own properties) an attribute whose value is the member's
    /// (or its `value`, or `object`, when written as a Property or Relationship).
    pub fn matches_members(&self, members: &serde_json::Map<String, Value>) -> bool {
        let attributes: Attributes = members
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::Object(map) if map.get("type") == Some(&Value::from("Relationship")) => {
                        AttributeValue::Relationship {
                            object: map.get("object").cloned().unwrap_or(Value::Null),
                            object_type: None,
                        }
                    }
                    Value::Object(map) if map.get("type") == Some(&Value::from("Property")) => {
                        AttributeValue::Property(map.get("value").cloned().unwrap_or(Value::Null))
                    }
                    other => AttributeValue::Property(other.clone()),
                };
                (name.clone(), vec![Attribute::new(value)])
            })
            .collect();
        self.0.eval(&attributes)
    }

    /// The attributes (expanded) the query is about.
    pub fn attributes(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.0.attributes(&mut out);
        out
    }
}

impl Expr {
    fn eval(&self, attributes: &Attributes) -> bool {
        match self {
            Expr::And(all) => all.iter().all(|e| e.eval(attributes)),
            Expr::Or(any) => any.iter().any(|e| e.eval(attributes)),
            Expr::Term(term) => term.eval(attributes),
        }
    }

    fn attributes(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(all) | Expr::Or(all) => all.iter().for_each(|e| e.attributes(out)),
            Expr::Term(term) => {
                if !out.contains(&term.path[0]) {
                    out.push(term.path[0].clone());
                }
            }
        }
    }
}

/// Metadata members a path may end in, after an attribute (`speed.observedAt`).
const METADATA: &[&str] = &[
    "observedAt",
    "unitCode",
    "datasetId",
    "createdAt",
    "modifiedAt",
];

impl Term {
    fn eval(&self, attributes: &Attributes) -> bool {
        let mut values = Vec::new();
        collect(attributes, &self.path, &mut values);
        let values: Vec<Value> = values
            .into_iter()
            .flat_map(|value| descend(value, &self.members))
            .collect();
        let Some(test) = &self.test else {
            return !values.is_empty();
        };
        let items = values.iter().flat_map(|value| match value {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        });
        let mut any = false;
        for item in items {
            any = true;
            if test.holds(item) {
                return true;
            }
        }
        // A negative test holds when no value contradicts it; it needs a value all the same.
        any && test.is_negative() && values.iter().all(|value| test.holds_whole(value))
    }
}

/// The values `path` reaches in `attributes`: an attribute, then sub-attributes; the last name
/// may be a metadata member.
fn collect(attributes: &Attributes, path: &[String], out: &mut Vec<Value>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(instances) = attributes.get(first) else {
        return;
    };
    for instance in instances {
        match rest {
            [] => out.extend(value_of(instance)),
            [meta] if metadata(instance, meta).is_some() => {
                out.extend(metadata(instance, meta));
            }
            _ => collect(&instance.sub_attributes, rest, out),
        }
    }
}

fn metadata(attribute: &Attribute, name: &str) -> Option<Value> {
    let short = name.rsplit(['/', '#']).next().unwrap_or(name);
    if !METADATA.contains(&short) {
        return None;
    }
    match short {
        "observedAt" => attribute.observed_at.clone().map(Value::String),
        "unitCode" => attribute.unit_code.clone().map(Value::String),
        "datasetId" => attribute.dataset_id.clone().map(Value::String),
        "createdAt" => attribute.created_at.map(|t| Value::String(t.to_rfc3339())),
        "modifiedAt" => attribute.modified_at.map(|t| Value::String(t.to_rfc3339())),
        _ => None,
    }
}

/// What an attribute is compared by: a Property's value, a Relationship's object, a
/// LanguageProperty's strings, a VocabProperty's IRIs, a list's items.
fn value_of(attribute: &Attribute) -> Option<Value> {
    match &attribute.value {
        AttributeValue::Property(value)
        | AttributeValue::VocabProperty(value)
        | AttributeValue::JsonProperty(value) => Some(value.clone()),
        AttributeValue::Relationship { object, .. } => Some(object.clone()),
        AttributeValue::LanguageProperty(map) => Some(Value::Array(
            map.values()
                .flat_map(|v| match v {
                    Value::Array(items) => items.clone(),
                    other => vec![other.clone()],
                })
                .collect(),
        )),
        AttributeValue::ListProperty(items) => Some(Value::Array(items.clone())),
        AttributeValue::ListRelationship(ids) => Some(Value::Array(
            ids.iter().cloned().map(Value::String).collect(),
        )),
        AttributeValue::GeoProperty(_) => None,
    }
}

/// `value`'s members along `members` (into arrays of objects too).
fn descend(value: Value, members: &[String]) -> Vec<Value> {
    let Some((first, rest)) = members.split_first() else {
        return vec![value];
    };
    match value {
        Value::Object(mut map) => map
            .remove(first)
            .map(|inner| descend(inner, rest))
            .unwrap_or_default(),
        Value::Array(items) => items
            .into_iter()
            .flat_map(|item| descend(item, members))
            .collect(),
        _ => Vec::new(),
    }
}

impl Test {
    fn is_negative(&self) -> bool {
        matches!(
            self,
            Test::Unequal(_) | Test::OutOfRange(..) | Test::NotPattern(_)
        )
    }

    /// For a negative test: no item of `value` is excluded.
    fn holds_whole(&self, value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().all(|item| self.holds(item)),
            other => self.holds(other),
        }
    }

    fn holds(&self, value: &Value) -> bool {
        match self {
            Test::Compare(op, literal) => compare(value, literal).is_some_and(|o| match op {
                Op::Greater => o == Ordering::Greater,
                Op::GreaterEq => o != Ordering::Less,
                Op::Less => o == Ordering::Less,
                Op::LessEq => o != Ordering::Greater,
            }),
            Test::Equal(list) => list.iter().any(|l| equal(value, l)),
            Test::Unequal(list) => !list.iter().any(|l| equal(value, l)),
            Test::InRange(low, high) => in_range(value, low, high),
            Test::OutOfRange(low, high) => !in_range(value, low, high),
            Test::Pattern(regex) => value.as_str().is_some_and(|s| regex.is_match(s)),
            Test::NotPattern(regex) => value.as_str().is_none_or(|s| !regex.is_match(s)),
        }
    }
}

fn in_range(value: &Value, low: &Literal, high: &Literal) -> bool {
    compare(value, low).is_some_and(|o| o != Ordering::Less)
        && compare(value, high).is_some_and(|o| o != Ordering::Greater)
}

/// How `value` orders against `literal`, when they are comparable.
fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        (Value::Number(n), Literal::Number(l)) => n.as_f64()?.partial_cmp(l),
        (Value::String(s), Literal::Instant(l)) => Some(instant(s)?.cmp(l)),
        (Value::String(s), Literal::Text(l) | Literal::Bare(l)) => Some(s.as_str().cmp(l)),
        (Value::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    }
}

fn equal(value: &Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::String(s), Literal::Instant(l)) => instant(s).is_some_and(|t| t == *l),
        _ => compare(value, literal) == Some(Ordering::Equal),
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    context: &'a ActiveContext,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        let text: &'a str = self.text;
        &text[self.pos..]
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// `and ("|" and)*`
    fn or(&mut self) -> Result<Expr, Error> {
        let mut any = vec![self.and()?];
        while self.eat("|") {
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Expr::Or(any)
        })
    }

    /// `primary (";" primary)*`
    fn and(&mut self) -> Result<Expr, Error> {
        let mut all = vec![self.primary()?];
        while self.eat(";") {
            all.push(self.primary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::And(all)
        })
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(bad(format!("missing ) at position {}", self.pos)));
            }
            return Ok(inner);
        }
        self.term().map(Expr::Term)
    }

    fn name(&mut self) -> Result<&'a str, Error> {
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | ':' | '/' | '#' | '-')))
            .unwrap_or(self.rest().len());
        // A name never ends in `:` (that would eat a URI scheme's separator of nothing).
        if len == 0 {
            return Err(bad(format!(
                "an attribute name is expected at position {start}"
            )));
        }
        self.pos += len;
        let text: &'a str = self.text;
        Ok(&text[start..start + len])
    }

    fn term(&mut self) -> Result<Term, Error> {
        let mut path = vec![self.context.expand_name(self.name()?)];
        while self.eat(".") {
            let name = self.name()?;
            let short = name.rsplit(['/', '#']).next().unwrap_or(name);
            path.push(if METADATA.contains(&short) {
                name.to_owned()
            } else {
                self.context.expand_name(name)
            });
        }
        let mut members = Vec::new();
        while self.eat("[") {
            members.push(self.name()?.to_owned());
            if !self.eat("]") {
                return Err(bad(format!("missing ] at position {}", self.pos)));
            }
        }
        let test = if self.eat("==") {
            Some(self.equality(false)?)
        } else if self.eat("!~=") {
            Some(Test::NotPattern(self.pattern()?))
        } else if self.eat("!=") {
            Some(self.equality(true)?)
        } else if self.eat("~=") {
            Some(Test::Pattern(self.pattern()?))
        } else if self.eat(">=") {
            Some(Test::Compare(Op::GreaterEq, self.comparable()?))
        } else if self.eat(">") {
            Some(Test::Compare(Op::Greater, self.comparable()?))
        } else if self.eat("<=") {
            Some(Test::Compare(Op::LessEq, self.comparable()?))
        } else if self.eat("<") {
            Some(Test::Compare(Op::Less, self.comparable()?))
        } else {
            None
        };
        match self.rest().chars().next() {
            None | Some(';' | '|' | ')') => Ok(Term {
                path,
                members,
                test,
            }),
            Some(_) => Err(bad(format!(
                "unexpected {:?} at position {}",
                self.rest(),
                self.pos
            ))),
        }
    }

    /// After `==` / `!=`: a list, a range or one value.
    fn equality(&mut self, negated: bool) -> Result<Test, Error> {
        let first = self.value()?;
        if self.eat("..") {
            let second = self.value()?;
            return Ok(if negated {
                Test::OutOfRange(first, second)
            } else {
                Test::InRange(first, second)
            });
        }
        let mut list = vec![first];
        while self.eat(",") {
            list.push(self.value()?);
        }
        Ok(if negated {
            Test::Unequal(list)
        } else {
            Test::Equal(list)
        })
    }

    fn comparable(&mut self) -> Result<Literal, Error> {
        match self.value()? {
            Literal::Bool(_) => Err(bad(format!(
                "true and false are not ordered (position {})",
                self.pos
            ))),
            other => Ok(other),
        }
    }

    fn pattern(&mut self) -> Result<Regex, Error> {
        let text = match self.value()? {
            Literal::Text(text) | Literal::Bare(text) => text,
            _ => return Err(bad("~= takes a regular expression")),
        };
        Regex::new(&text).map_err(|e| bad(format!("invalid regular expression: {e}")))
    }

    fn value(&mut self) -> Result<Literal, Error> {
        let start = self.pos;
        if self.eat("\"") {
            let mut text = String::new();
            let mut chars = self.rest().char_indices();
            loop {
                match chars.next() {
                    None => return Err(bad(format!("unterminated string at position {start}"))),
                    Some((i, '"')) => {
                        self.pos += i + 1;
                        return Ok(Literal::Text(text));
                    }
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => text.push(c),
                        None => {
                            return Err(bad(format!("unterminated string at position {start}")));
                        }
                    },
                    Some((_, c)) => text.push(c),
                }
            }
        }
        let rest = self.rest();
        let mut len = rest.find([';', '|', ')', ',']).unwrap_or(rest.len());
        // A range's `..` ends the first value (`1..5`), but not a URI's dots.
        if let Some(dots) = rest[..len].find("..") {
            len = dots;
        }
        let token = &rest[..len];
        if token.is_empty() {
            return Err(bad(format!("a value is expected at position {start}")));
        }
        if let Some(c) = token
            .chars()
            .find(|c| c.is_whitespace() || "<>=!\"'()[]{}".contains(*c))
        {
            return Err(bad(format!(
                "unexpected {c:?} in the value at position {start} (strings are quoted)"
            )));
        }
        self.pos += len;
        Ok(literal(token))
    }
}

fn literal(token: &str) -> Literal {
    match token {
        "true" => return Literal::Bool(true),
        "false" => return Literal::Bool(false),
        _ => {}
    }
    if let Ok(number) = token.parse::<f64>()
        && number.is_finite()
    {
        return Literal::Number(number);
    }
    if let Some(t) = instant(token) {
        return Literal::Instant(t);
    }
    if NaiveDate::parse_from_str(token, "%Y-%m-%d").is_ok() {
        return Literal::Bare(token.to_owned());
    }
    Literal::Bare(token.to_owned())
}

/// A type expression (clause 4.17): type names joined by `,` or `|` (either) and `;` (all),
/// grouped with parentheses; `;` binds tighter. Names are expanded when it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeQuery {
    Name(String),
    All(Vec<TypeQuery>),
    Any(Vec<TypeQuery>),
}

impl TypeQuery {
    /// Parses `text`; `valid` says which names are entity type names.
    pub fn parse(
        text: &str,
        context: &ActiveContext,
        valid: impl Fn(&str) -> bool,
    ) -> Result<TypeQuery, Error> {
        Self::parse_leaves(text, "type expression", |name| {
            if valid(name) {
                Ok(context.expand_name(name))
            } else {
                Err(format!("{name:?} is not a valid entity type"))
            }
        })
    }

    /// Parses a scope query (clause 4.19): scopes (`/a/b`, with `+` for any one level and a final
    /// `#` for the level and everything below) joined like types.
    pub fn parse_scopes(text: &str) -> Result<TypeQuery, Error> {
        Self::parse_leaves(text, "scopeQ", |scope| {
            let segments: Vec<&str> = scope.split('/').collect();
            let well_formed = scope.starts_with('/')
                && segments[1..].iter().enumerate().all(|(i, segment)| {
                    !segment.is_empty()
                        && (*segment == "+"
                            || (*segment == "#" && i + 2 == segments.len())
                            || !segment.contains(['+', '#']))
                });
            if well_formed {
                Ok(scope.to_owned())
            } else {
                Err(format!("{scope:?} is not a scope"))
            }
        })
    }

    fn parse_leaves(
        text: &str,
        what: &str,
        leaf: impl Fn(&str) -> Result<String, String>,
    ) -> Result<TypeQuery, Error> {
        let bad = |message: String| Error::bad(format!("invalid {what}: {message}"));
        let mut tokens = Vec::new();
        let mut name = String::new();
        for c in text.chars() {
            if matches!(c, ',' | '|' | ';' | '(' | ')') {
                if !name.trim().is_empty() {
                    tokens.push(name.trim().to_owned());
                }
                name.clear();
                tokens.push(c.to_string());
            } else {
                name.push(c);
            }
        }
        if !name.trim().is_empty() {
            tokens.push(name.trim().to_owned());
        }
        let mut position = 0;
        let expr = Self::any(&tokens, &mut position, &leaf, &bad)?;
        if position != tokens.len() {
            return Err(bad(format!("unexpected {:?}", tokens[position])));
        }
        Ok(expr)
    }

    fn any(
        tokens: &[String],
        position: &mut usize,
        leaf: &impl Fn(&str) -> Result<String, String>,
        bad: &impl Fn(String) -> Error,
    ) -> Result<TypeQuery, Error> {
        let mut any = vec![Self::all(tokens, position, leaf, bad)?];
        while tokens.get(*position).is_some_and(|t| t == "," || t == "|") {
            *position += 1;
            any.push(Self::all(tokens, position, leaf, bad)?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            TypeQuery::Any(any)
        })
    }

    fn all(
        tokens: &[String],
        position: &mut usize,
        leaf: &impl Fn(&str) -> Result<String, String>,
        bad: &impl Fn(String) -> Error,
    ) -> Result<TypeQuery, Error> {
        let mut all = vec![Self::one(tokens, position, leaf, bad)?];
        while tokens.get(*position).is_some_and(|t| t == ";") {
            *position += 1;
            all.push(Self::one(tokens, position, leaf, bad)?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            TypeQuery::All(all)
        })
    }

    fn one(
        tokens: &[String],
        position: &mut usize,
        leaf: &impl Fn(&str) -> Result<String, String>,
        bad: &impl Fn(String) -> Error,
    ) -> Result<TypeQuery, Error> {
        let Some(token) = tokens.get(*position) else {
            return Err(bad("a type name is missing at the end".to_owned()));
        };
        *position += 1;
        match token.as_str() {
            "(" => {
                let inner = Self::any(tokens, position, leaf, bad)?;
                if tokens.get(*position).is_none_or(|t| t != ")") {
                    return Err(bad("missing )".to_owned()));
                }
                *position += 1;
                Ok(inner)
            }
            "," | "|" | ";" | ")" => Err(bad(format!("a type name is missing before {token:?}"))),
            name => leaf(name).map(TypeQuery::Name).map_err(bad),
        }
    }

    /// Every type name the expression mentions (expanded), each once.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            TypeQuery::Name(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            TypeQuery::All(parts) | TypeQuery::Any(parts) => {
                parts.iter().for_each(|part| part.collect(out));
            }
        }
    }

    /// Whether an entity of `types` (expanded) satisfies the expression.
    pub fn matches(&self, types: &[String]) -> bool {
        match self {
            TypeQuery::Name(name) => types.contains(name),
            TypeQuery::All(parts) => parts.iter().all(|part| part.matches(types)),
            TypeQuery::Any(parts) => parts.iter().any(|part| part.matches(types)),
        }
    }

    /// Whether an entity with `scopes` satisfies a scope query: each named scope pattern matches
    /// one of them.
    pub fn matches_scopes(&self, scopes: &[String]) -> bool {
        match self {
            TypeQuery::Name(pattern) => scopes.iter().any(|scope| scope_matches(pattern, scope)),
            TypeQuery::All(parts) => parts.iter().all(|part| part.matches_scopes(scopes)),
            TypeQuery::Any(parts) => parts.iter().any(|part| part.matches_scopes(scopes)),
        }
    }

    /// Whether it is a plain list of alternatives (what an index lookup answers exactly).
    pub fn is_list(&self) -> bool {
        match self {
            TypeQuery::Name(_) => true,
            TypeQuery::Any(parts) => parts.iter().all(|part| matches!(part, TypeQuery::Name(_))),
            TypeQuery::All(_) => false,
        }
    }
}

/// Whether `scope` matches `pattern` (`+`: any one level; a final `#`: that level and below).
fn scope_matches(pattern: &str, scope: &str) -> bool {
    let mut pattern = pattern.split('/').skip(1);
    let mut scope = scope.split('/').skip(1);
    loop {
        match (pattern.next(), scope.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> ActiveContext {
        let mut loader =
            |_: &str| -> Result<std::sync::Arc<Value>, Error> { unreachable!("no remote context") };
        ActiveContext::empty()
            .process(&json!({"@vocab": "https://example.org/"}), &mut loader)
            .expect("a context")
    }

    fn entity() -> Entity {
        let payload = json!({
            "id": "urn:ngsi-ld:Vehicle:1",
            "type": "Vehicle",
            "speed": [
                {"type": "Property", "value": 80, "observedAt": "2026-01-01T10:00:00Z",
                 "accuracy": {"type": "Property", "value": 0.5}},
                {"type": "Property", "value": 20, "datasetId": "urn:ngsi-ld:Dataset:gps"}
            ],
            "brand": {"type": "Property", "value": "Mercedes"},
            "parked": {"type": "Relationship", "object": "urn:ngsi-ld:Parking:A"},
            "address": {"type": "Property", "value": {"city": "Madrid", "zip": "28001"}},
            "tags": {"type": "Property", "value": ["red", "fast"]},
            "electric": {"type": "Property", "value": true},
            "serviced": {"type": "Property", "value": "2025-06-01T00:00:00Z"}
        });
        let canonical = crate::expand::entity(&payload, &context(), crate::expand::Payload::Entity)
            .expect("valid");
        crate::canonical::decode_entity(&canonical, crate::canonical::Trust::Caller)
            .expect("decodes")
    }

    fn q(text: &str) -> bool {
        Query::parse(text, &context())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .matches(&entity())
    }

    #[test]
    fn comparisons_match_any_instance_and_item() {
        assert!(q("speed>50"));
        assert!(q("speed<30"));
        assert!(!q("speed>100"));
        assert!(q("speed==20"));
        assert!(q("speed==10..25"));
        assert!(!q("speed==30..40"));
        assert!(q("brand==\"Mercedes\""));
        assert!(q("brand==\"BMW\",\"Mercedes\""));
        assert!(q("brand!=\"BMW\""));
        assert!(!q("brand!=\"Mercedes\""));
        assert!(q("tags==\"red\""));
        assert!(q("electric==true"));
        assert!(!q("electric==false"));
        assert!(q("parked==urn:ngsi-ld:Parking:A"));
        assert!(q("serviced<2026-01-01T00:00:00Z"));
        assert!(q("brand~=\"^Merc\""));
        assert!(q("brand!~=\"^BMW\""));
    }

    #[test]
    fn paths_reach_sub_attributes_metadata_and_members() {
        assert!(q("speed.accuracy<1"));
        assert!(q("speed.observedAt>=2026-01-01T00:00:00Z"));
        assert!(q("address[city]==\"Madrid\""));
        assert!(!q("address[city]==\"Paris\""));
        assert!(q("address[zip]"));
        assert!(!q("address[street]"));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        assert!(q("brand;speed>50"));
        assert!(!q("missing;speed>50"));
        assert!(q("missing|speed>50"));
        assert!(q("missing;speed>50|brand"));
        assert!(!q("missing;(speed>50|brand)"));
        assert!(q("(missing|brand);(speed<30)"));
    }

    #[test]
    fn a_missing_attribute_matches_no_test() {
        assert!(!q("missing"));
        assert!(!q("missing!=3"));
        assert!(!q("missing==3"));
    }

    #[test]
    fn plain_members_are_attributes_too() {
        let members = json!({
            "https://example.org/csourceProperty1": "aValue",
            "https://example.org/level": {"type": "Property", "value": 3},
        });
        let members = members.as_object().expect("object");
        let q = |text: &str| {
            Query::parse(text, &context())
                .expect("valid")
                .matches_members(members)
        };
        assert!(q("csourceProperty1==\"aValue\""));
        assert!(!q("csourceProperty1==\"other\""));
        assert!(q("level>2"));
    }

    #[test]
    fn type_expressions_and_or_and_group() {
        let parse = |text: &str| TypeQuery::parse(text, &context(), |n| !n.is_empty());
        let t = |names: &[&str]| -> Vec<String> {
            names
                .iter()
                .map(|n| format!("https://example.org/{n}"))
                .collect()
        };
        let both = parse("(Building;Tourist),Parking").expect("valid");
        assert!(both.matches(&t(&["Building", "Tourist"])));
        assert!(both.matches(&t(&["Parking"])));
        assert!(!both.matches(&t(&["Building"])));
        assert!(!both.is_list());
        assert_eq!(both.names(), t(&["Building", "Tourist", "Parking"]));
        let list = parse("Building|Parking").expect("valid");
        assert!(list.is_list());
        assert!(
            parse("Building;Parking")
                .expect("valid")
                .matches(&t(&["Parking", "Building"]))
        );
        for text in ["", "(Building", "Building;", ";Building", "Building)", "()"] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn scope_queries_match_levels_and_wildcards() {
        let scopes =
            |list: &[&str]| -> Vec<String> { list.iter().map(|s| (*s).to_owned()).collect() };
        let q = |text: &str| TypeQuery::parse_scopes(text).expect("valid");
        let entity = scopes(&[
            "/Madrid/Gardens/ParqueNorte",
            "/CompanyA/OrganizationB/UnitC",
        ]);
        assert!(q("/Madrid/Gardens/ParqueNorte").matches_scopes(&entity));
        assert!(q("/Madrid/+/ParqueNorte").matches_scopes(&entity));
        assert!(q("/CompanyA/#").matches_scopes(&entity));
        assert!(q("/#").matches_scopes(&entity));
        assert!(!q("/#").matches_scopes(&[]));
        assert!(
            q("/Madrid/Gardens/ParqueNorte;/CompanyA/OrganizationB/UnitC").matches_scopes(&entity)
        );
        assert!(!q("/Madrid/Gardens/ParqueNorte;/Paris").matches_scopes(&entity));
        assert!(q("/Paris,/Madrid/#").matches_scopes(&entity));
        assert!(!q("/Madrid/+").matches_scopes(&entity));
        for text in ["Madrid", "/Madrid//x", "/#/x", "/Ma+drid", ""] {
            assert!(TypeQuery::parse_scopes(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn invalid_queries_are_refused() {
        for text in [
            "",
            "speed>",
            "speed==\"open",
            "(speed>1",
            "speed>1)",
            "speed=>1",
            "brand~=\"(\"",
            "electric>true",
            "speed[a",
            ";speed",
            "speed>>3",
            "speed==\"a\"\"b\"",
            "speed==a b",
        ] {
            assert!(Query::parse(text, &context()).is_err(), "{text:?} parsed");
        }
    }
}
