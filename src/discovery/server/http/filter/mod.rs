//! `?filter=`: Consul's boolean filter expressions (go-bexpr v0.1.2, as
//! Consul pins it). `grammar` parses (winnow; pigeon's error texts),
//! `schema` says which selectors each endpoint's element type has, and a
//! [`Filter`] is an expression checked against a schema, its values
//! coerced to the selected fields' types and its regexes compiled, that
//! keeps or drops each element of an answer by testing the element's JSON.
//!
//! Every error is Consul's: HTTP 500, plain text, `Failed to create boolean
//! expression evaluator: ` then bexpr's message (consul-breadth.md §2.4).

pub mod grammar;
pub mod schema;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::query::{ApiError, QueryOptions};
use crate::discovery::api::gofmt::{go_quote, parse_duration};
pub use grammar::{Expr, Match, Op};
pub use schema::{Schema, Type};

/// Consul's prefix of every error creating a filter.
const CREATE_FAILED: &str = "Failed to create boolean expression evaluator: ";

/// A filter checked against an endpoint's schema, ready to test elements.
#[derive(Debug)]
pub struct Filter {
    root: Node,
    schema: Schema,
}

#[derive(Debug)]
enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Match(Matcher),
}

#[derive(Debug)]
struct Matcher {
    selector: Vec<String>,
    op: Op,
    value: Coerced,
}

/// A match value converted to the selected field's type.
#[derive(Debug)]
enum Coerced {
    None,
    Str(String),
    Int(i64),
    Bool(bool),
    Regex(regex::Regex),
}

impl Filter {
    /// The request's `?filter=` for an endpoint whose elements are
    /// `schema`: `None` when absent or empty, Consul's 500 when it does not
    /// parse or does not fit the schema.
    pub fn from_query(opts: &QueryOptions, schema: Schema) -> Result<Option<Filter>, ApiError> {
        match Filter::parse_query(opts)? {
            None => Ok(None),
            Some(expr) => Filter::compile(&expr, schema)
                .map(Some)
                .map_err(|e| ApiError::internal(format!("{CREATE_FAILED}{e}"))),
        }
    }

    /// Only the syntax of `?filter=` (500 when it does not parse). Consul's
    /// `/v1/agent/checks` creates its filter so, and checks selectors
    /// only when it tests the first element ([`Filter::compile`]).
    pub fn parse_query(opts: &QueryOptions) -> Result<Option<Expr>, ApiError> {
        match opts.get("filter") {
            None | Some("") => Ok(None),
            Some(text) => grammar::parse(text)
                .map(Some)
                .map_err(|e| ApiError::internal(format!("{CREATE_FAILED}{e}"))),
        }
    }

    /// Check `expr` against `schema`: every selector must name a field,
    /// every operator suit the field's type and every value convert to
    /// it; the error is bexpr's text.
    pub fn compile(expr: &Expr, schema: Schema) -> Result<Filter, String> {
        Ok(Filter {
            root: compile(expr, schema.root())?,
            schema,
        })
    }

    /// Whether the element `v` (the JSON an endpoint answers) passes.
    pub fn matches(&self, v: &Value) -> bool {
        eval(&self.root, v, self.schema.root())
    }

    /// Keep the rows that pass.
    pub fn retain<T: Serialize>(&self, rows: &mut Vec<T>) {
        rows.retain(|r| self.matches(&to_value(r)));
    }

    /// Keep the map entries whose values pass (Consul filters a map's values).
    pub fn retain_values<K: Ord, T: Serialize>(&self, map: &mut BTreeMap<K, T>) {
        map.retain(|_, r| self.matches(&to_value(r)));
    }
}

/// Apply an optional filter to rows (the endpoints' common case).
pub fn retain<T: Serialize>(filter: Option<&Filter>, rows: &mut Vec<T>) {
    if let Some(f) = filter {
        f.retain(rows);
    }
}

fn to_value<T: Serialize>(r: &T) -> Value {
    // The wire types are plain structs, maps and strings: serialising them
    // into a `Value` cannot fail.
    serde_json::to_value(r).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- checking (bexpr's validate.go)

fn compile(expr: &Expr, root: &Type) -> Result<Node, String> {
    let all = |terms: &[Expr]| -> Result<Vec<Node>, String> {
        terms.iter().map(|t| compile(t, root)).collect()
    };
    Ok(match expr {
        Expr::Or(terms) => Node::Or(all(terms)?),
        Expr::And(terms) => Node::And(all(terms)?),
        Expr::Not(e) => Node::Not(Box::new(compile(e, root)?)),
        Expr::Match(m) => Node::Match(compile_match(m, root)?),
    })
}

fn selector_text(parts: &[String]) -> String {
    go_quote(&parts.join("."))
}

fn compile_match(m: &Match, root: &Type) -> Result<Matcher, String> {
    let mut ty = root;
    for (n, part) in m.selector.iter().enumerate() {
        ty = match ty {
            Type::Struct(_) | Type::StructList(_) => ty.field(part),
            Type::Map(values) => Some(values.as_ref()),
            _ => None,
        }
        .ok_or_else(|| format!("Selector {} is not valid", selector_text(&m.selector[..=n])))?;
    }
    if !allowed(ty, m.op) {
        return Err(format!(
            "Invalid match operator {} for selector {}",
            go_quote(m.op.name()),
            selector_text(&m.selector)
        ));
    }
    let value = match (&m.value, m.op) {
        (None, _) => Coerced::None,
        (Some(raw), Op::Matches | Op::NotMatches) => {
            Coerced::Regex(regex::Regex::new(raw).map_err(|_| {
                format!(
                    "Failed to compile regular expression {}: {}",
                    go_quote(raw),
                    go_regex_error(raw)
                )
            })?)
        }
        (Some(raw), _) => coerce(ty, raw).map_err(|e| {
            format!(
                "Failed to coerce value {} for selector {}: {e}",
                go_quote(raw),
                selector_text(&m.selector)
            )
        })?,
    };
    Ok(Matcher {
        selector: m.selector.clone(),
        op: m.op,
        value,
    })
}

/// The operators bexpr allows on a field of type `ty`.
fn allowed(ty: &Type, op: Op) -> bool {
    use Op::*;
    match ty {
        Type::String => matches!(op, Equal | NotEqual | In | NotIn | Matches | NotMatches),
        Type::Int | Type::Bool | Type::Duration => matches!(op, Equal | NotEqual),
        Type::List(_) => matches!(op, In | NotIn | IsEmpty | IsNotEmpty),
        Type::Map(_) => matches!(op, IsEmpty | IsNotEmpty | In | NotIn),
        Type::StructList(_) => matches!(op, IsEmpty | IsNotEmpty),
        Type::Struct(_) => false,
    }
}

/// bexpr's coercion of a value to the field (a slice's element; a map's key).
fn coerce(ty: &Type, raw: &str) -> Result<Coerced, String> {
    Ok(match ty {
        Type::String | Type::Map(_) | Type::Struct(_) | Type::StructList(_) => {
            Coerced::Str(raw.to_string())
        }
        Type::Int | Type::Duration => Coerced::Int(parse_go_int(raw)?),
        Type::Bool => Coerced::Bool(parse_go_bool(raw)?),
        Type::List(elem) => coerce(elem, raw)?,
    })
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then `0x`, `0o`, `0b` or a
/// leading `0` (octal) choose the base, and `_` may separate digits.
fn parse_go_int(s: &str) -> Result<i64, String> {
    let fail = |why: &str| format!("strconv.ParseInt: parsing {}: {why}", go_quote(s));
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (base, digits) = match lower.get(..2) {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || (digits.contains('_') && !underscores_ok(body)) {
        return Err(fail("invalid syntax"));
    }
    let mut n: u64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(base).ok_or_else(|| fail("invalid syntax"))?;
        n = n
            .checked_mul(u64::from(base))
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or_else(|| fail("value out of range"))?;
    }
    let limit = 1u64 << 63;
    match (neg, n) {
        (false, n) if n < limit => Ok(n as i64),
        (true, n) if n <= limit => Ok((n as i128).wrapping_neg() as i64),
        _ => Err(fail("value out of range")),
    }
}

/// Go's `underscoreOK`: `_` only between digits or after a base prefix.
fn underscores_ok(body: &str) -> bool {
    let b = body.as_bytes();
    let prefixed = b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'x' | b'o' | b'b');
    let mut saw = if prefixed { b'0' } else { b'^' };
    for &c in &b[if prefixed { 2 } else { 0 }..] {
        if c.is_ascii_hexdigit() {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            go_quote(s)
        )),
    }
}

/// Go's `regexp.Compile` error text for a pattern the regex crate refused:
/// `error parsing regexp: <code>: `<fragment>``. The codes are Go's; the
/// fragment follows Go for the common mistakes.
fn go_regex_error(pattern: &str) -> String {
    use regex_syntax::ast::ErrorKind as K;
    let (code, fragment) = match regex_syntax::ast::parse::Parser::new().parse(pattern) {
        Ok(_) => ("expression too large", pattern.to_string()),
        Err(e) => {
            let span = e.span();
            let text = pattern
                .get(span.start.offset..span.end.offset)
                .unwrap_or("")
                .to_string();
            let rest = pattern.get(span.start.offset..).unwrap_or("").to_string();
            match e.kind() {
                K::GroupUnclosed => ("missing closing )", pattern.to_string()),
                K::GroupUnopened => ("unexpected )", pattern.to_string()),
                K::ClassUnclosed => ("missing closing ]", rest),
                K::ClassRangeInvalid => ("invalid character class range", text),
                K::EscapeUnexpectedEof => {
                    ("trailing backslash at end of expression", String::new())
                }
                K::EscapeUnrecognized
                | K::EscapeHexEmpty
                | K::EscapeHexInvalid
                | K::EscapeHexInvalidDigit => ("invalid escape sequence", text),
                K::RepetitionMissing => {
                    let op: String = rest.chars().take(1).collect();
                    ("missing argument to repetition operator", op)
                }
                K::RepetitionCountInvalid
                | K::RepetitionCountUnclosed
                | K::RepetitionCountDecimalEmpty => ("invalid repeat count", text),
                K::NestLimitExceeded(_) => ("expression nests too deeply", pattern.to_string()),
                K::GroupNameInvalid
                | K::GroupNameEmpty
                | K::GroupNameDuplicate { .. }
                | K::GroupNameUnexpectedEof => ("invalid named capture", text),
                _ => ("invalid or unsupported Perl syntax", text),
            }
        }
    };
    format!("error parsing regexp: {code}: `{fragment}`")
}

// ---------------------------------------------------------------- evaluation (bexpr's evaluate.go)

fn eval(node: &Node, v: &Value, root: &Type) -> bool {
    match node {
        Node::Or(terms) => terms.iter().any(|t| eval(t, v, root)),
        Node::And(terms) => terms.iter().all(|t| eval(t, v, root)),
        Node::Not(n) => !eval(n, v, root),
        Node::Match(m) => select(m, 0, Some(v), root),
    }
}

/// A field that is absent or `null` in the answer reads as Go's zero value.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// Walk the selector from part `depth` in `v` (of type `ty`): struct fields
/// by name, a struct slice when any element matches, a map by key (a
/// missing key decides the match on its own).
fn select(m: &Matcher, depth: usize, v: Option<&Value>, ty: &Type) -> bool {
    let v = present(v);
    let Some(part) = m.selector.get(depth) else {
        return leaf(m, v, ty);
    };
    match ty {
        Type::Struct(_) => field(m, depth, v, ty, part),
        Type::StructList(_) => v.and_then(Value::as_array).is_some_and(|items| {
            items
                .iter()
                .any(|item| field(m, depth, Some(item), ty, part))
        }),
        Type::Map(values) => match present(v.and_then(|o| o.get(part))) {
            Some(value) => select(m, depth + 1, Some(value), values),
            None => !matches!(m.op, Op::Equal | Op::IsNotEmpty | Op::In | Op::Matches),
        },
        _ => false,
    }
}

fn field(m: &Matcher, depth: usize, v: Option<&Value>, ty: &Type, part: &str) -> bool {
    match ty.field(part) {
        Some(sub) => select(m, depth + 1, v.and_then(|o| o.get(part)), sub),
        None => false,
    }
}

fn leaf(m: &Matcher, v: Option<&Value>, ty: &Type) -> bool {
    match m.op {
        Op::Equal => equal(ty, v, &m.value),
        Op::NotEqual => !equal(ty, v, &m.value),
        Op::In => contains(ty, v, &m.value),
        Op::NotIn => !contains(ty, v, &m.value),
        Op::IsEmpty => is_empty(v),
        Op::IsNotEmpty => !is_empty(v),
        Op::Matches => regex_match(v, &m.value),
        Op::NotMatches => !regex_match(v, &m.value),
    }
}

fn as_str(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

/// An integer field; a duration may be Go text (`"10s"`) or nanoseconds.
fn as_int(ty: &Type, v: Option<&Value>) -> Option<i64> {
    match v {
        None => Some(0),
        Some(Value::String(s)) if *ty == Type::Duration => parse_duration(s)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok()),
        Some(v) => v.as_i64(),
    }
}

fn equal(ty: &Type, v: Option<&Value>, want: &Coerced) -> bool {
    match want {
        Coerced::Str(s) => as_str(v) == s,
        Coerced::Int(i) => as_int(ty, v) == Some(*i),
        Coerced::Bool(b) => v.and_then(Value::as_bool).unwrap_or(false) == *b,
        Coerced::None | Coerced::Regex(_) => false,
    }
}

/// `in`/`contains`: a substring of a string, an element of a slice, a
/// key of a map.
fn contains(ty: &Type, v: Option<&Value>, want: &Coerced) -> bool {
    match ty {
        Type::String => matches!(want, Coerced::Str(s) if as_str(v).contains(s.as_str())),
        Type::List(elem) => v
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|i| equal(elem, Some(i), want))),
        Type::Map(_) => {
            matches!(want, Coerced::Str(k) if v.and_then(Value::as_object).is_some_and(|o| o.contains_key(k)))
        }
        _ => false,
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => true,
    }
}

fn regex_match(v: Option<&Value>, want: &Coerced) -> bool {
    matches!(want, Coerced::Regex(re) if re.is_match(as_str(v)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
