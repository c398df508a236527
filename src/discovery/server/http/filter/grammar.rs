//! go-bexpr v0.1.2's grammar (`grammar.peg`), rule for rule, on winnow, and
//! the expression tree it yields. Consul's error texts come from pigeon, the
//! PEG generator bexpr uses, so the parser keeps pigeon's bookkeeping: every
//! terminal that fails at the farthest offset reached is "expected" there
//! (a terminal inside `!…` counts when it *matches*, written `!want`), and
//! the grammar's own errors (`Unmatched parentheses`, `Invalid index`, …)
//! are collected wherever they fire, deduplicated, and win over the
//! "no match found" text.
//!
//! Rules are factored where pigeon would re-parse the same text
//! (`Or <- And _ "or" _ Or / And` is `And (_ "or" _ And)*` here): the
//! terminals tried, and so the messages, are the same, but a deeply
//! parenthesised expression costs linear rather than exponential time.
//! Nesting of parentheses and `not` is capped at [`MAX_DEPTH`] so that no
//! request can exhaust the stack (Consul has no cap; Go's stacks grow).

use std::cell::{Cell, RefCell};
use std::fmt;

use winnow::combinator::{alt, opt, preceded, repeat};
use winnow::error::ContextError;
use winnow::prelude::*;
use winnow::stream::{Stateful, Stream};
use winnow::token::{any, literal, one_of, take_while};

use crate::discovery::api::gofmt::go_quote;

/// The deepest nesting of parentheses and `not` a filter may use.
pub const MAX_DEPTH: usize = 32;

/// A parsed filter expression. `a or b or c` is one `Or` of three terms
/// (bexpr nests them to the right; evaluation is the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

/// `Selector op Value`, `Selector is [not] empty` or `Value [not] in Selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The selector's parts: `Meta["a b"].c` is `["Meta", "a b", "c"]`.
    pub selector: Vec<String>,
    pub op: Op,
    /// The value as written (a bare selector joined with `.`), unquoted;
    /// `None` for `is empty` and `is not empty`.
    pub value: Option<String>,
}

/// bexpr's match operators; `contains` is `In` with the operands swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    /// The name bexpr prints in `Invalid match operator "…"`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Equal => "Equal",
            Op::NotEqual => "Not Equal",
            Op::In => "In",
            Op::NotIn => "Not In",
            Op::IsEmpty => "Is Empty",
            Op::IsNotEmpty => "Is Not Empty",
            Op::Matches => "Matches",
            Op::NotMatches => "Not Matches",
        }
    }
}

/// Parse a filter; the error is bexpr's text without Consul's
/// `Failed to create boolean expression evaluator: ` prefix.
pub fn parse(src: &str) -> Result<Expr, String> {
    let tracker = Tracker {
        src,
        invert: Cell::new(false),
        max_pos: Cell::new(0),
        expected: RefCell::new(Vec::new()),
        errors: RefCell::new(Vec::new()),
        depth: Cell::new(0),
    };
    let mut i = Stateful {
        input: src,
        state: &tracker,
    };
    let parsed = input(&mut i);
    let mut errors: Vec<String> = Vec::new();
    for e in tracker.errors.take() {
        if !errors.contains(&e) {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    parsed.map_err(|_| tracker.no_match())
}

// ---------------------------------------------------------------- printing

/// An expression printed so that [`parse`] reads it back as the same tree:
/// values always quoted, every `and`/`or` operand that is itself one
/// parenthesised.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, e: &Expr| match e {
            Expr::Or(_) | Expr::And(_) => write!(f, "({e})"),
            e => write!(f, "{e}"),
        };
        match self {
            Expr::Or(terms) | Expr::And(terms) => {
                let word = if matches!(self, Expr::Or(_)) {
                    " or "
                } else {
                    " and "
                };
                for (n, t) in terms.iter().enumerate() {
                    if n > 0 {
                        f.write_str(word)?;
                    }
                    operand(f, t)?;
                }
                Ok(())
            }
            Expr::Not(e) => {
                f.write_str("not ")?;
                operand(f, e)
            }
            Expr::Match(m) => write!(f, "{m}"),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sel = PrintSelector(&self.selector);
        let value = quote(self.value.as_deref().unwrap_or(""));
        match self.op {
            Op::Equal => write!(f, "{sel} == {value}"),
            Op::NotEqual => write!(f, "{sel} != {value}"),
            Op::In => write!(f, "{value} in {sel}"),
            Op::NotIn => write!(f, "{value} not in {sel}"),
            Op::IsEmpty => write!(f, "{sel} is empty"),
            Op::IsNotEmpty => write!(f, "{sel} is not empty"),
            Op::Matches => write!(f, "{sel} matches {value}"),
            Op::NotMatches => write!(f, "{sel} not matches {value}"),
        }
    }
}

struct PrintSelector<'a>(&'a [String]);

impl fmt::Display for PrintSelector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, part) in self.0.iter().enumerate() {
            if n == 0 {
                f.write_str(part)?;
            } else if is_identifier(part) {
                write!(f, ".{part}")?;
            } else {
                write!(f, "[{}]", quote(part))?;
            }
        }
        Ok(())
    }
}

/// Whether `s` is a bexpr identifier (`[a-zA-Z][a-zA-Z0-9_]*`).
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A double-quoted literal the grammar reads back as `s`: Go's `%q`,
/// except that a quote, which would end the literal (`DoubleStringChar`
/// is any character but `"`), is written `\x22`.
fn quote(s: &str) -> String {
    let q = go_quote(s);
    let inner = &q[1..q.len() - 1];
    format!("\"{}\"", inner.replace("\\\"", "\\x22"))
}

// ---------------------------------------------------------------- pigeon's bookkeeping

type In<'i> = Stateful<&'i str, &'i Tracker<'i>>;
type PResult<T> = winnow::Result<T, ContextError>;

#[derive(Debug)]
struct Tracker<'i> {
    src: &'i str,
    /// Inside an odd number of `!…`.
    invert: Cell<bool>,
    max_pos: Cell<usize>,
    expected: RefCell<Vec<String>>,
    errors: RefCell<Vec<String>>,
    depth: Cell<usize>,
}

impl Tracker<'_> {
    /// pigeon's `failAt`: a terminal `want` tried at `pos`.
    fn fail_at(&self, matched: bool, pos: usize, want: impl FnOnce() -> String) {
        if matched != self.invert.get() || pos < self.max_pos.get() {
            return;
        }
        let mut expected = self.expected.borrow_mut();
        if pos > self.max_pos.get() {
            self.max_pos.set(pos);
            expected.clear();
        }
        let want = want();
        expected.push(if self.invert.get() {
            format!("!{want}")
        } else {
            want
        });
    }

    /// A grammar error raised in `rule` at `pos`.
    fn error(&self, pos: usize, rule: &str, msg: &str) {
        let at = self.position(pos);
        self.errors
            .borrow_mut()
            .push(format!("{at}: rule {rule}: {msg}"));
    }

    /// `line:col (offset)` as pigeon counts them: columns in characters,
    /// and a newline itself already on the next line, at column 0.
    fn position(&self, pos: usize) -> String {
        let (mut line, mut col) = (1, 0);
        let upto = self.src.get(..pos).unwrap_or(self.src);
        let current = self.src.get(pos..).and_then(|s| s.chars().next());
        for c in upto.chars().chain(std::iter::once(current.unwrap_or('\0'))) {
            col += 1;
            if c == '\n' {
                line += 1;
                col = 0;
            }
        }
        format!("{line}:{col} ({pos})")
    }

    /// `no match found, expected: …` at the farthest offset reached.
    fn no_match(&self) -> String {
        let mut wants = self.expected.borrow().clone();
        let eof = wants.iter().any(|w| w == "!.");
        wants.retain(|w| w != "!.");
        wants.sort();
        wants.dedup();
        if eof {
            wants.push("EOF".to_string());
        }
        let list = match wants.split_last() {
            None => String::new(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        };
        format!(
            "{}: no match found, expected: {list}",
            self.position(self.max_pos.get())
        )
    }
}

fn offset(i: &In<'_>) -> usize {
    i.state.src.len() - i.input.len()
}

fn backtrack<T>() -> PResult<T> {
    Err(ContextError::new())
}

/// A literal terminal (pigeon prints it Go-quoted).
fn lit<'i>(s: &'static str) -> impl Parser<In<'i>, &'i str, ContextError> {
    move |i: &mut In<'i>| {
        let pos = offset(i);
        let r = literal(s).parse_next(i);
        i.state.fail_at(r.is_ok(), pos, || go_quote(s));
        r
    }
}

/// A character-class terminal, `want` as the grammar writes it.
fn class<'i>(want: &'static str, set: fn(char) -> bool) -> impl Parser<In<'i>, char, ContextError> {
    move |i: &mut In<'i>| {
        let pos = offset(i);
        let r = one_of(set).parse_next(i);
        i.state.fail_at(r.is_ok(), pos, || want.to_string());
        r
    }
}

/// `.`: any character.
fn any_char(i: &mut In<'_>) -> PResult<char> {
    let pos = offset(i);
    let r = any.parse_next(i);
    i.state.fail_at(r.is_ok(), pos, || ".".to_string());
    r
}

/// `!p`: succeeds, consuming nothing, where `p` fails.
fn not_pred<'i, O>(
    mut p: impl Parser<In<'i>, O, ContextError>,
) -> impl Parser<In<'i>, (), ContextError> {
    move |i: &mut In<'i>| {
        let start = i.checkpoint();
        let t = i.state;
        t.invert.set(!t.invert.get());
        let r = p.parse_next(i);
        t.invert.set(!t.invert.get());
        i.reset(&start);
        match r {
            Ok(_) => backtrack(),
            Err(_) => Ok(()),
        }
    }
}

/// `&p`: succeeds, consuming nothing, where `p` does.
fn and_pred<'i, O>(
    mut p: impl Parser<In<'i>, O, ContextError>,
) -> impl Parser<In<'i>, (), ContextError> {
    move |i: &mut In<'i>| {
        let start = i.checkpoint();
        let r = p.parse_next(i);
        i.reset(&start);
        r.map(|_| ())
    }
}

/// One more level of parentheses or `not`, refused past [`MAX_DEPTH`].
fn nested<'i, T>(
    i: &mut In<'i>,
    rule: &str,
    p: impl FnOnce(&mut In<'i>) -> PResult<T>,
) -> PResult<T> {
    let t = i.state;
    if t.depth.get() >= MAX_DEPTH {
        t.error(
            offset(i),
            rule,
            &format!(
                "Expression nests too deeply (more than {MAX_DEPTH} levels of parentheses or not)"
            ),
        );
        return backtrack();
    }
    t.depth.set(t.depth.get() + 1);
    let r = p(i);
    t.depth.set(t.depth.get() - 1);
    r
}

// ---------------------------------------------------------------- the rules

/// `_ "whitespace" <- [ \t\r\n]+`
fn ws(i: &mut In<'_>) -> PResult<()> {
    repeat(
        1..,
        class("[ \\t\\r\\n]", |c| matches!(c, ' ' | '\t' | '\r' | '\n')),
    )
    .parse_next(i)
}

/// `_?`
fn ows(i: &mut In<'_>) -> PResult<()> {
    opt(ws).void().parse_next(i)
}

/// `EOF <- !.`
fn eof(i: &mut In<'_>) -> PResult<()> {
    not_pred(any_char).parse_next(i)
}

/// `Input <- _? "(" _? OrExpression _? ")" _? EOF / _? OrExpression _? EOF`
fn input(i: &mut In<'_>) -> PResult<Expr> {
    alt((
        (ows, lit("("), ows, or_expr, ows, lit(")"), ows, eof).map(|t| t.3),
        (ows, or_expr, ows, eof).map(|t| t.1),
    ))
    .parse_next(i)
}

/// `OrExpression <- AndExpression _ "or" _ OrExpression / AndExpression`
fn or_expr(i: &mut In<'_>) -> PResult<Expr> {
    let first = and_expr(i)?;
    let rest: Vec<Expr> = repeat(0.., preceded((ws, lit("or"), ws), and_expr)).parse_next(i)?;
    Ok(chain(first, rest, Expr::Or))
}

/// `AndExpression <- NotExpression _ "and" _ AndExpression / NotExpression`
fn and_expr(i: &mut In<'_>) -> PResult<Expr> {
    let first = not_expr(i)?;
    let rest: Vec<Expr> = repeat(0.., preceded((ws, lit("and"), ws), not_expr)).parse_next(i)?;
    Ok(chain(first, rest, Expr::And))
}

fn chain(first: Expr, rest: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if rest.is_empty() {
        first
    } else {
        join(std::iter::once(first).chain(rest).collect())
    }
}

/// `NotExpression <- "not" _ NotExpression / ParenthesizedExpression`;
/// `not not x` is `x`.
fn not_expr(i: &mut In<'_>) -> PResult<Expr> {
    let start = i.checkpoint();
    if (lit("not"), ws).parse_next(i).is_ok() {
        if let Ok(e) = nested(i, "NotExpression", not_expr) {
            return Ok(match e {
                Expr::Not(inner) => *inner,
                e => Expr::Not(Box::new(e)),
            });
        }
    }
    i.reset(&start);
    paren_expr(i)
}

/// ```text
/// ParenthesizedExpression "grouping" <- "(" _? OrExpression _? ")"
///     / MatchExpression
///     / "(" _? OrExpression _? !")" &{ "Unmatched parentheses" }
/// ```
/// The third alternative re-parses what the first did; its outcome is
/// kept from the first instead.
fn paren_expr(i: &mut In<'_>) -> PResult<Expr> {
    let start = i.checkpoint();
    let mut unmatched = None;
    if lit("(").parse_next(i).is_ok() {
        ows(i)?;
        if let Ok(e) = nested(i, "grouping", or_expr) {
            ows(i)?;
            let pos = offset(i);
            if lit(")").parse_next(i).is_ok() {
                return Ok(e);
            }
            unmatched = Some(pos);
        }
    }
    i.reset(&start);
    if let Ok(m) = match_expr(i) {
        return Ok(Expr::Match(m));
    }
    i.reset(&start);
    if let Some(pos) = unmatched {
        i.state.error(pos, "grouping", "Unmatched parentheses");
    }
    backtrack()
}

/// `MatchExpression <- MatchSelectorOpValue / MatchSelectorOp / MatchValueOpSelector`
fn match_expr(i: &mut In<'_>) -> PResult<Match> {
    alt((selector_op_value, selector_op, value_op_selector)).parse_next(i)
}

fn keyword_op<'i>(words: &'static [&'static str], op: Op) -> impl Parser<In<'i>, Op, ContextError> {
    move |i: &mut In<'i>| {
        // `_ "w1" _ "w2" … _`: whitespace before every word and after the last.
        for w in words {
            ws(i)?;
            lit(w).parse_next(i)?;
        }
        Ok(op)
    }
}

/// `Selector (MatchEqual / MatchNotEqual / MatchContains / MatchNotContains
/// / MatchMatches / MatchNotMatches) Value`
fn selector_op_value(i: &mut In<'_>) -> PResult<Match> {
    let selector = selector(i)?;
    let op = alt((
        (ows, lit("=="), ows).value(Op::Equal),
        (ows, lit("!="), ows).value(Op::NotEqual),
        (keyword_op(&["contains"], Op::In), ws).map(|t| t.0),
        (keyword_op(&["not", "contains"], Op::NotIn), ws).map(|t| t.0),
        (keyword_op(&["matches"], Op::Matches), ws).map(|t| t.0),
        (keyword_op(&["not", "matches"], Op::NotMatches), ws).map(|t| t.0),
    ))
    .parse_next(i)?;
    let value = value(i)?;
    Ok(Match {
        selector,
        op,
        value: Some(value),
    })
}

/// `Selector (MatchIsEmpty / MatchIsNotEmpty)`
fn selector_op(i: &mut In<'_>) -> PResult<Match> {
    let selector = selector(i)?;
    let op = alt((
        keyword_op(&["is", "empty"], Op::IsEmpty),
        keyword_op(&["is", "not", "empty"], Op::IsNotEmpty),
    ))
    .parse_next(i)?;
    Ok(Match {
        selector,
        op,
        value: None,
    })
}

/// `MatchIn <- _ "in" _`, `MatchNotIn <- _ "not" _ "in" _`
fn in_op(i: &mut In<'_>) -> PResult<Op> {
    alt((
        (keyword_op(&["in"], Op::In), ws).map(|t| t.0),
        (keyword_op(&["not", "in"], Op::NotIn), ws).map(|t| t.0),
    ))
    .parse_next(i)
}

/// ```text
/// MatchValueOpSelector "match" <- Value (MatchIn / MatchNotIn) Selector
///     / Value (MatchIn / MatchNotIn) !Selector &{ "Invalid selector" }
/// ```
fn value_op_selector(i: &mut In<'_>) -> PResult<Match> {
    let start = i.checkpoint();
    if let Ok((value, op, selector)) = (value, in_op, selector).parse_next(i) {
        return Ok(Match {
            selector,
            op,
            value: Some(value),
        });
    }
    i.reset(&start);
    if (value, in_op, not_pred(selector)).parse_next(i).is_ok() {
        i.state.error(offset(i), "match", "Invalid selector");
    }
    i.reset(&start);
    backtrack()
}

/// `Selector <- Identifier SelectorOrIndex*`
fn selector(i: &mut In<'_>) -> PResult<Vec<String>> {
    let first = identifier(i)?;
    let rest: Vec<String> = repeat(0.., selector_or_index).parse_next(i)?;
    Ok(std::iter::once(first.to_string()).chain(rest).collect())
}

/// `Identifier <- [a-zA-Z] [a-zA-Z0-9_]*`
fn identifier<'i>(i: &mut In<'i>) -> PResult<&'i str> {
    (
        class("[a-zA-Z]", |c| c.is_ascii_alphabetic()),
        repeat::<_, _, (), _, _>(
            0..,
            class("[a-zA-Z0-9_]", |c| c.is_ascii_alphanumeric() || c == '_'),
        ),
    )
        .take()
        .parse_next(i)
}

/// `SelectorOrIndex <- "." Identifier / IndexExpression`
fn selector_or_index(i: &mut In<'_>) -> PResult<String> {
    alt((preceded(lit("."), identifier).map(String::from), index_expr)).parse_next(i)
}

/// ```text
/// IndexExpression "index" <- "[" _? StringLiteral _? "]"
///     / "[" _? !StringLiteral &{ "Invalid index" }
///     / "[" _? StringLiteral _? !"]" &{ "Unclosed index expression" }
/// ```
fn index_expr(i: &mut In<'_>) -> PResult<String> {
    let start = i.checkpoint();
    if let Ok(t) = (lit("["), ows, string_literal, ows, lit("]")).parse_next(i) {
        return Ok(t.2);
    }
    i.reset(&start);
    if (lit("["), ows, not_pred(string_literal))
        .parse_next(i)
        .is_ok()
    {
        i.state.error(offset(i), "index", "Invalid index");
    }
    i.reset(&start);
    if (lit("["), ows, string_literal, ows, not_pred(lit("]")))
        .parse_next(i)
        .is_ok()
    {
        i.state
            .error(offset(i), "index", "Unclosed index expression");
    }
    i.reset(&start);
    backtrack()
}

/// `Value "value" <- Selector / NumberLiteral / StringLiteral`; a selector
/// is a bare word, its parts joined with `.`.
fn value(i: &mut In<'_>) -> PResult<String> {
    alt((
        selector.map(|parts| parts.join(".")),
        number_literal,
        string_literal,
    ))
    .parse_next(i)
}

/// ```text
/// NumberLiteral "number" <- "-"? IntegerOrFloat &AfterNumbers
///     / "-"? IntegerOrFloat !AfterNumbers &{ "Invalid number literal" }
/// AfterNumbers <- &(_ / EOF / ")")
/// ```
fn number_literal(i: &mut In<'_>) -> PResult<String> {
    let start = i.checkpoint();
    if let Ok(text) = (opt(lit("-")), integer_or_float, and_pred(after_numbers))
        .take()
        .parse_next(i)
    {
        return Ok(text.to_string());
    }
    i.reset(&start);
    if (opt(lit("-")), integer_or_float, not_pred(after_numbers))
        .parse_next(i)
        .is_ok()
    {
        i.state.error(offset(i), "number", "Invalid number literal");
    }
    i.reset(&start);
    backtrack()
}

fn after_numbers(i: &mut In<'_>) -> PResult<()> {
    and_pred(alt((ws, eof, lit(")").void()))).parse_next(i)
}

/// `IntegerOrFloat <- ("0" / [1-9][0-9]*) ("." [0-9]+)?`
fn integer_or_float(i: &mut In<'_>) -> PResult<()> {
    let digit = || class("[0-9]", |c| c.is_ascii_digit());
    (
        alt((
            lit("0").void(),
            (
                class("[1-9]", |c| matches!(c, '1'..='9')),
                repeat::<_, _, (), _, _>(0.., digit()),
            )
                .void(),
        )),
        opt((lit("."), repeat::<_, _, (), _, _>(1.., digit()))),
    )
        .void()
        .parse_next(i)
}

/// ```text
/// StringLiteral "string" <- ('`' RawStringChar* '`' / '"' DoubleStringChar* '"')
///         { strconv.Unquote(c.text) }
///     / ('`' RawStringChar* / '"' DoubleStringChar*) EOF &{ "Unterminated string literal" }
/// RawStringChar <- !'`' .
/// DoubleStringChar <- !'"' .
/// ```
/// A literal `Unquote` refuses still matches (as the empty string) but
/// leaves the error `invalid syntax` behind, as pigeon's action does.
fn string_literal(i: &mut In<'_>) -> PResult<String> {
    let start = i.checkpoint();
    let pos = offset(i);
    let raw_char = || preceded(not_pred(lit("`")), any_char);
    let dq_char = || preceded(not_pred(lit("\"")), any_char);
    let closed = alt((
        (
            lit("`"),
            repeat::<_, _, (), _, _>(0.., raw_char()),
            lit("`"),
        )
            .void(),
        (
            lit("\""),
            repeat::<_, _, (), _, _>(0.., dq_char()),
            lit("\""),
        )
            .void(),
    ))
    .take()
    .parse_next(i);
    if let Ok(text) = closed {
        return Ok(unquote(text).unwrap_or_else(|| {
            i.state.error(pos, "string", "invalid syntax");
            String::new()
        }));
    }
    i.reset(&start);
    let open = (
        alt((
            (lit("`"), repeat::<_, _, (), _, _>(0.., raw_char())).void(),
            (lit("\""), repeat::<_, _, (), _, _>(0.., dq_char())).void(),
        )),
        eof,
    )
        .parse_next(i);
    if open.is_ok() {
        i.state
            .error(offset(i), "string", "Unterminated string literal");
    }
    i.reset(&start);
    backtrack()
}

// ---------------------------------------------------------------- Go's strconv.Unquote

/// Go's `strconv.Unquote` of a back-quoted or double-quoted literal
/// (quotes included); `None` where Go answers `invalid syntax`. Bytes
/// that `\x`/octal escapes make outside UTF-8 become U+FFFD (Go would
/// keep them; a JSON string never holds them, so they match nothing
/// either way).
pub fn unquote(text: &str) -> Option<String> {
    if let Some(raw) = text.strip_prefix('`').and_then(|t| t.strip_suffix('`')) {
        return Some(raw.replace('\r', ""));
    }
    let body = text.strip_prefix('"')?.strip_suffix('"')?;
    if body.contains('\n') {
        return None;
    }
    let mut input = body;
    let pieces: Vec<Vec<u8>> = repeat(0.., go_char).parse_next(&mut input).ok()?;
    if !input.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&pieces.concat()).into_owned())
}

type GoResult<T> = winnow::Result<T, ContextError>;

/// One character of a double-quoted Go literal, as bytes.
fn go_char(i: &mut &str) -> GoResult<Vec<u8>> {
    alt((
        preceded('\\', go_escape),
        one_of(|c: char| c != '\\' && c != '"').map(|c: char| c.to_string().into_bytes()),
    ))
    .parse_next(i)
}

fn go_escape(i: &mut &str) -> GoResult<Vec<u8>> {
    let hex = |n: usize| take_while(n, |c: char| c.is_ascii_hexdigit());
    alt((
        one_of(['a', 'b', 'f', 'n', 'r', 't', 'v', '\\', '"']).map(|c: char| {
            vec![match c {
                'a' => 7,
                'b' => 8,
                'f' => 12,
                'n' => b'\n',
                'r' => b'\r',
                't' => b'\t',
                'v' => 11,
                c => c as u8,
            }]
        }),
        preceded('x', hex(2)).verify_map(|h: &str| u8::from_str_radix(h, 16).ok().map(|b| vec![b])),
        preceded('u', hex(4))
            .verify_map(|h: &str| u32::from_str_radix(h, 16).ok().and_then(rune_bytes)),
        preceded('U', hex(8))
            .verify_map(|h: &str| u32::from_str_radix(h, 16).ok().and_then(rune_bytes)),
        take_while(3, |c: char| matches!(c, '0'..='7'))
            .verify_map(|o: &str| u8::from_str_radix(o, 8).ok().map(|b| vec![b])),
    ))
    .parse_next(i)
}

fn rune_bytes(v: u32) -> Option<Vec<u8>> {
    char::from_u32(v).map(|c| c.to_string().into_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(sel: &[&str], op: Op, value: Option<&str>) -> Expr {
        Expr::Match(Match {
            selector: sel.iter().map(|s| s.to_string()).collect(),
            op,
            value: value.map(String::from),
        })
    }

    #[test]
    fn every_operator_parses() {
        let cases = [
            ("Service == web", m(&["Service"], Op::Equal, Some("web"))),
            ("Service==\"web\"", m(&["Service"], Op::Equal, Some("web"))),
            ("Port != 80", m(&["Port"], Op::NotEqual, Some("80"))),
            ("v1 in Tags", m(&["Tags"], Op::In, Some("v1"))),
            ("`v 1` not in Tags", m(&["Tags"], Op::NotIn, Some("v 1"))),
            ("Tags contains \"v1\"", m(&["Tags"], Op::In, Some("v1"))),
            (
                "Tags not contains -1.5",
                m(&["Tags"], Op::NotIn, Some("-1.5")),
            ),
            ("Tags is empty", m(&["Tags"], Op::IsEmpty, None)),
            ("Tags is not empty", m(&["Tags"], Op::IsNotEmpty, None)),
            (
                "Name matches \"^a.*\"",
                m(&["Name"], Op::Matches, Some("^a.*")),
            ),
            (
                "Name not matches x",
                m(&["Name"], Op::NotMatches, Some("x")),
            ),
            (
                "NodeMeta[\"rack id\"] == r1.a",
                m(&["NodeMeta", "rack id"], Op::Equal, Some("r1.a")),
            ),
            (
                "Service.Meta.env == prod",
                m(&["Service", "Meta", "env"], Op::Equal, Some("prod")),
            ),
            (
                "Name == \"a\\tb\\x41\\u00e9\"",
                m(&["Name"], Op::Equal, Some("a\tbAé")),
            ),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src), Ok(want), "{src}");
        }
    }

    #[test]
    fn precedence_and_grouping() {
        let a = || m(&["a"], Op::Equal, Some("1"));
        let b = || m(&["b"], Op::Equal, Some("2"));
        let c = || m(&["c"], Op::Equal, Some("3"));
        assert_eq!(
            parse("a == 1 or b == 2 and c == 3"),
            Ok(Expr::Or(vec![a(), Expr::And(vec![b(), c()])]))
        );
        assert_eq!(
            parse(" (a == 1 or b == 2) and c == 3 "),
            Ok(Expr::And(vec![Expr::Or(vec![a(), b()]), c()]))
        );
        assert_eq!(
            parse("not a == 1 and c == 3"),
            Ok(Expr::And(vec![Expr::Not(Box::new(a())), c()]))
        );
        assert_eq!(parse("not not a == 1"), Ok(a()));
        assert_eq!(parse("(a == 1)"), Ok(a()));
        assert_eq!(parse("((a == 1))"), Ok(a()));
    }

    #[test]
    fn pigeon_error_texts() {
        let cases = [
            (
                "foo",
                r#"1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \t\r\n] or [a-zA-Z0-9_]"#,
            ),
            ("(a == 1", "1:8 (7): rule grouping: Unmatched parentheses"),
            (
                "Port == 80a",
                "1:11 (10): rule number: Invalid number literal",
            ),
            (
                "Name == \"abc",
                "1:13 (12): rule string: Unterminated string literal",
            ),
            ("a[1] == 2", "1:3 (2): rule index: Invalid index"),
            (
                "a[\"x\" == 2",
                "1:7 (6): rule index: Unclosed index expression",
            ),
            ("\"x\" in 5", "1:8 (7): rule match: Invalid selector"),
            ("Name == \"\\q\"", "1:9 (8): rule string: invalid syntax"),
        ];
        for (src, want) in cases {
            assert_eq!(parse(src), Err(want.to_string()), "{src}");
        }
        assert_eq!(
            parse("a == 1 b").unwrap_err(),
            r#"1:8 (7): no match found, expected: "and", "or", [ \t\r\n] or EOF"#
        );
        assert!(parse("")
            .unwrap_err()
            .starts_with("1:1 (0): no match found"));
        // A newline is already on the next line, at column 0.
        assert_eq!(
            parse("a ==\n")
                .unwrap_err()
                .split(':')
                .take(2)
                .collect::<Vec<_>>(),
            ["2", "1 (5)"]
        );
    }

    #[test]
    fn nesting_is_capped_not_a_stack_overflow() {
        let ok = format!("{}a == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}a == 1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse(&deep).unwrap_err().contains("nests too deeply"));
        let nots = format!("{}a == 1", "not ".repeat(5000));
        assert!(parse(&nots).unwrap_err().contains("nests too deeply"));
        let long = vec!["a == 1"; 2000].join(" or ");
        assert!(matches!(parse(&long), Ok(Expr::Or(t)) if t.len() == 2000));
    }

    #[test]
    fn unquote_reads_like_go() {
        assert_eq!(unquote("`a\\n\r`").as_deref(), Some("a\\n"));
        assert_eq!(
            unquote("\"\\101\\x42\\U0001F600\"").as_deref(),
            Some("AB😀")
        );
        for bad in ["\"\\'\"", "\"\\400\"", "\"\\uD800\"", "\"a\\\"", "\"\\x4\""] {
            assert_eq!(unquote(bad), None, "{bad}");
        }
    }
}
