//! ContainerPilot 3.x JSON5 → pilotfish TOML (`pilotfish config import FILE.json5`).
//! This module owns the whole conversion: a Go-template pre-pass over the raw text,
//! JSON5 parsing, the key-by-key mapping onto [`RawConfig`], and the list of notes —
//! one human-readable line, naming its key path, for everything that was not
//! converted or that now means something different. It never reads the environment
//! and never validates against the running system; `config::load_str` does that.
//!
//! # Template pre-pass
//! ContainerPilot rendered the whole file as a Go `text/template` before parsing it.
//! The importer lexes the `{{ }}` actions itself and tracks the JSON5 lexical context
//! (string, comment or bare) of the surrounding text:
//! - `{{ .VAR }}` and `{{ env "VAR" }}` become `${VAR}`; `{{ .VAR | default "x" }}`,
//!   `{{ default "x" .VAR }}` (and the same with `env`) become `${VAR:-x}`;
//!   `{{ if .X }}{{ .X }}{{ else }}text{{ end }}` becomes `${X:-text}`; an action that
//!   is a single literal (`{{ "{{" }}`, the documented escape) becomes its text; Go
//!   comments disappear; the `{{-`/`-}}` trim markers trim like Go does.
//! - Every other `if`/`with` is evaluated as ContainerPilot would have with **every
//!   variable unset** (`.X` is empty, `not .X` is true, `eq .X "v"` compares with "");
//!   the branch it would have rendered is kept, the others are dropped (their newlines
//!   are kept so JSON5 error positions still match the file). When a condition cannot
//!   be evaluated the `{{ else }}` branch is kept. `range` keeps only its `{{ else }}`
//!   branch (the list is assumed empty), `define` is dropped, `block` is rendered in
//!   place. Each of these gets a note naming the construct and its line.
//! - Any other action (`printf`, `split`, `loop`, variables, ...) inside a string is
//!   kept as literal text with a note; outside a string it becomes a string value so
//!   the file still parses, and the key that receives it gets a note.
//! - A variable reference outside a string (`port: {{ .PORT }}`) becomes a string
//!   (`"${PORT}"`): pilotfish expands variables only inside string values. Where the
//!   TOML field is a number or a boolean the importer uses the `default` if there is
//!   one, otherwise it drops the key; both with a note.
//! - Literal `$` in string values is escaped (`$${`, `$$$$`) so pilotfish does not
//!   expand it; the references the importer generated are not escaped. Internally the
//!   pre-pass marks its output with private-use characters U+E000–U+E006, so a file
//!   that already contains them is refused.
//! - Actions inside JSON5 comments are dropped with the comment, without notes.
//! - ContainerPilot rendered an unset variable as ""; pilotfish refuses to start when
//!   `${VAR}` is unset. One note lists every variable referenced without a default.
//!
//! # Mapping decisions
//! - Key paths in notes use the ContainerPilot file's 0-based indexes
//!   (`jobs[2].health.exec`), even when earlier elements were skipped.
//! - Nested keys match case-insensitively and scalars are coerced (numeric strings,
//!   `"true"`, single value → list) because ContainerPilot's mapstructure decoding did;
//!   top-level keys match exactly, as they did there. A value ContainerPilot would have
//!   rejected is still converted when its intent is clear, with a note saying so.
//! - Exec strings are split on single spaces exactly like ContainerPilot (empty
//!   arguments from double spaces are kept, with a note) and written as argv arrays,
//!   because pilotfish's string form honours shell quoting and would change meaning.
//! - A job without a name gets its executable's basename (ContainerPilot used the
//!   whole path); a second job with an already used name is renamed `NAME-2`; `when.source`
//!   references to a renamed job follow it. Periodic jobs get an explicit `timeout`
//!   equal to their interval, ContainerPilot's default.
//! - Integer-second fields become `"Ns"` strings; a duration string is kept as written
//!   (bare numbers are seconds in pilotfish too).
//! - `consul` without a scheme gets `http://`; an object without an address gets
//!   ContainerPilot's client default `127.0.0.1:8500`. An explicit `tls.verify` is
//!   kept as written; when ContainerPilot's default (no verification) applied, nothing
//!   is written so pilotfish verifies, with a note.
//! - `logging.level` FATAL/PANIC become `error`; `summary` metrics and logging to a
//!   file are dropped; top-level `stopTimeout: 0` becomes `"5s"` (ContainerPilot
//!   replaced 0 by 5) and a negative one is dropped.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::{format_duration, parse_duration};
use super::raw::{
    RawConfig, RawConsul, RawControl, RawHealth, RawInt, RawJob, RawJobLogging, RawLogging,
    RawMetric, RawRestarts, RawTelemetry, RawTls, RawWatch, RawWhen, StringOrList,
};

/// The converted file and everything the user must know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// TOML text: a comment header listing the notes, then the configuration.
    pub toml: String,
    /// One line per key not converted or converted with a changed meaning.
    pub notes: Vec<String>,
    /// What ContainerPilot did implicitly that the file now says explicitly.
    pub implicit: Vec<String>,
    /// Which ContainerPilot the file was written for.
    pub version: Version,
}

/// Why a file could not be converted at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A `{{ }}` action that Go's template parser would also have refused.
    #[error("line {line}: {message}")]
    Template { line: usize, message: String },
    /// The (pre-processed) text is not JSON5.
    #[error("JSON5 syntax error at line {line}:{column}: {message}{hint}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
        hint: String,
    },
    /// The file parsed but is not one object.
    #[error("the top level of the file is {found}; a ContainerPilot config must be one JSON5 object such as {{ consul: \"localhost:8500\", jobs: [...] }}")]
    NotAnObject { found: &'static str },
    /// The file contains a character the pre-pass uses as an internal marker.
    #[error("line {line}: the file contains U+{code:04X}, a private-use character the importer uses internally; remove it and import again")]
    ReservedCharacter { line: usize, code: u32 },
    /// The result could not be written as TOML (a bug in the importer).
    #[error("writing the converted config as TOML failed: {0} (this is an importer bug; please report it with the input file)")]
    Emit(String),
}

mod v2;
mod variants;

/// Which ContainerPilot wrote the file, told by its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `jobs` and `watches`.
    V3,
    /// `services`, `backends`, `preStart`, `coprocesses`, `tasks`, ...
    V2,
    /// Containerbuddy / ContainerPilot 1.x: 2.x's keys with `onStart`.
    V1,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V3 => "ContainerPilot 3.x",
            Version::V2 => "ContainerPilot 2.x",
            Version::V1 => "ContainerPilot 1.x (Containerbuddy)",
        })
    }
}

/// The version a parsed file is: 3.x keys win; 2.x keys, else 3.x.
fn detect(top: &[(String, J)]) -> Version {
    let has = |k: &str| top.iter().any(|(key, _)| key == k);
    if has("jobs") || has("watches") {
        Version::V3
    } else if has("onStart") {
        Version::V1
    } else if [
        "services",
        "backends",
        "preStart",
        "preStop",
        "postStop",
        "coprocesses",
        "tasks",
        "etcd",
    ]
    .iter()
    .any(|k| has(k))
    {
        Version::V2
    } else {
        Version::V3
    }
}

/// Convert ContainerPilot 3.x configuration text (JSON5 with Go-template actions).
pub fn import_containerpilot(text: &str) -> Result<Imported, ImportError> {
    import_containerpilot_with(text, &[])
}

/// Convert a ContainerPilot 1.x, 2.x or 3.x config (told apart by its keys).
/// `app` is the command ContainerPilot 1.x/2.x ran as the application (the
/// arguments after its flags, `containerpilot -config F nginx -g ...`); 3.x
/// ignored them.
pub fn import_containerpilot_with(text: &str, app: &[String]) -> Result<Imported, ImportError> {
    check_reserved(text)?;
    let pieces = lex(text)?;
    let had_actions = pieces.iter().any(|p| matches!(p, Piece::Action(_)));
    let tree = parse_tree(pieces)?;
    let vars = variants::condition_vars(&tree);
    let points = if vars.is_empty() {
        None
    } else {
        variants::assignments(&vars)
    };
    let Some(points) = points else {
        // No switches, or too many: one rendering, one branch per `if`.
        let rendered = render_tree(&tree, had_actions, None);
        let c = convert(rendered, app)?;
        return finish(c.version, c.raw, c.notes, c.implicit);
    };
    let mut converted = Vec::new();
    let mut notes = Vec::new();
    let mut implicit = Vec::new();
    let mut version = Version::V3;
    for point in points {
        let assign = variants::assign(&vars, &point);
        let rendered = render_tree(&tree, had_actions, Some(&assign));
        let c = match convert(rendered, app) {
            Ok(c) => c,
            // The all-unset rendering must parse; another may not (a branch
            // with a syntax error ContainerPilot would also have refused).
            Err(e) if !converted.is_empty() => {
                notes.push(format!(
                    "template: with {} the file is not a valid configuration ({e}); that combination was not converted",
                    variants::describe(&vars, &point)
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        if converted.is_empty() {
            version = c.version;
        }
        for n in c.notes {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        for n in c.implicit {
            if !implicit.contains(&n) {
                implicit.push(n);
            }
        }
        converted.push(variants::Variant { point, raw: c.raw });
    }
    let (raw, merge_notes) = variants::merge(&vars, &converted);
    let names: Vec<&str> = vars.keys().map(String::as_str).collect();
    let switched = raw.jobs.iter().any(|j| j.enabled.is_some())
        || raw.watches.iter().any(|w| w.enabled.is_some());
    if switched {
        notes.push(format!(
            "template: the file's {{{{ if }}}} conditions read {}; every branch was converted, and each job or watch that differs between them carries an enabled condition that pilotfish evaluates at start (\"${{X:-}} != ''\" holds when X is set and not empty, as {{{{ if .X }}}} did) — `pilotfish config check` shows what runs with your environment",
            names.join(", ")
        ));
    }
    notes.extend(merge_notes);
    finish(version, raw, notes, implicit)
}

/// One rendering converted.
struct Converted {
    version: Version,
    raw: RawConfig,
    notes: Vec<String>,
    implicit: Vec<String>,
}

fn convert(rendered: Rendered, app: &[String]) -> Result<Converted, ImportError> {
    let value: J = json5::from_str(&rendered.text).map_err(|e| syntax_error(&e, &rendered))?;
    let J::Obj(top) = &value else {
        return Err(ImportError::NotAnObject {
            found: value.kind(),
        });
    };
    let version = detect(top);
    let mut conv = Conv {
        notes: rendered.notes,
        implicit: Vec::new(),
        unknown_keys: match version {
            Version::V3 => {
                "ContainerPilot rejected unknown keys, so this file did not load there as written"
            }
            Version::V2 => {
                "ContainerPilot 2.2 and later rejected unknown keys (2.0 and 2.1 ignored them)"
            }
            Version::V1 => "ContainerPilot 1.x ignored unknown keys",
        },
        actions: rendered.actions,
    };
    if !rendered.unset.is_empty() {
        let vars: Vec<&str> = rendered.unset.iter().map(String::as_str).collect();
        conv.notes.push(format!(
            "template: ContainerPilot rendered an unset variable as \"\"; pilotfish refuses to start when a ${{VAR}} without default is unset — write ${{VAR:-}} where empty is fine (referenced without default: {})",
            vars.join(", ")
        ));
    }
    let raw = match version {
        Version::V3 => {
            if !app.is_empty() {
                conv.notes.push(format!(
                    "command line: ContainerPilot 3.x ignored the arguments after its flags, so \"{}\" was not converted — a 3.x config names every process as a job",
                    app.join(" ")
                ));
            }
            conv.config(top)
        }
        Version::V2 | Version::V1 => conv.config_v2(top, version, app),
    };
    Ok(Converted {
        version,
        raw,
        notes: conv.notes,
        implicit: conv.implicit,
    })
}

fn finish(
    version: Version,
    raw: RawConfig,
    notes: Vec<String>,
    implicit: Vec<String>,
) -> Result<Imported, ImportError> {
    let body = toml::to_string(&raw).map_err(|e| ImportError::Emit(e.to_string()))?;
    let mut out =
        format!("# Converted from a {version} configuration by `pilotfish config import`.\n");
    if !implicit.is_empty() {
        out.push_str("# What ContainerPilot did without being told, written out here:\n");
        for n in &implicit {
            out.push_str("#  - ");
            out.push_str(n);
            out.push('\n');
        }
    }
    if notes.is_empty() {
        out.push_str("# Nothing was dropped and no meaning changed.\n");
    } else {
        out.push_str(&format!(
            "# {} note(s) — read them before using this file:\n",
            notes.len()
        ));
        for n in &notes {
            out.push_str("#  - ");
            out.push_str(&n.replace('\n', " "));
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&body);
    Ok(Imported {
        toml: out,
        notes,
        implicit,
        version,
    })
}

// ---------------------------------------------------------------------------------
// Markers the pre-pass leaves in JSON5 strings, resolved by `Conv::text`.

/// `REF NAME [REF_DEFAULT default] REF_END` = a `${NAME[:-default]}` reference.
const REF: char = '\u{E000}';
const REF_END: char = '\u{E001}';
const REF_DEFAULT: char = '\u{E002}';
/// `RAW index RAW_END` = an action that could not be converted (kept as text).
const RAW: char = '\u{E003}';
const RAW_END: char = '\u{E004}';
/// `BARE index BARE_END` at the start of a string = it stood outside any string.
const BARE: char = '\u{E005}';
const BARE_END: char = '\u{E006}';

fn is_marker(c: char) -> bool {
    ('\u{E000}'..='\u{E006}').contains(&c)
}

fn check_reserved(text: &str) -> Result<(), ImportError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(c) = line.chars().find(|c| is_marker(*c)) {
            return Err(ImportError::ReservedCharacter {
                line: i + 1,
                code: c as u32,
            });
        }
    }
    Ok(())
}

fn syntax_error(e: &json5::Error, rendered: &Rendered) -> ImportError {
    let (line, column) = e
        .position()
        .map(|p| (p.line + 1, p.column + 1))
        .unwrap_or((0, 0));
    let message = match e.code() {
        Some(code) => code.to_string(),
        None => e.to_string(),
    };
    let hint = if rendered.had_actions {
        " (position in the file after its {{ }} template actions were converted; fix the JSON5 and import again)"
    } else {
        " (fix the JSON5 and import again; ContainerPilot would have refused this file too)"
    };
    ImportError::Syntax {
        line,
        column,
        message,
        hint: hint.to_string(),
    }
}

// ---------------------------------------------------------------------------------
// Go-template pre-pass.

/// One `{{ }}` action as written.
#[derive(Debug, Clone)]
struct Action {
    /// The whole action including braces, as written.
    src: String,
    /// Between the braces, trim markers removed.
    inner: String,
    line: usize,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Action(Action),
}

fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Split the text into literal text and actions, applying trim markers.
fn lex(text: &str) -> Result<Vec<Piece>, ImportError> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut line = 1;
    let mut trim_next = false;
    while let Some(rel) = text[pos..].find("{{") {
        let start = pos + rel;
        let mut lit = &text[pos..start];
        line += lit.matches('\n').count();
        if trim_next {
            lit = lit.trim_start_matches(is_go_space);
        }
        let mut inner_start = start + 2;
        let after = &text[inner_start..];
        if after.starts_with('-') && after[1..].starts_with(is_go_space) {
            lit = lit.trim_end_matches(is_go_space);
            inner_start += 1;
        }
        pieces.push(Piece::Text(lit.to_string()));
        let end = find_action_end(text, inner_start).ok_or_else(|| ImportError::Template {
            line,
            message: format!(
                "'{}' opens a template action that is never closed with '}}}}' (ContainerPilot refused this file too); close it, or write a literal {{{{ as {{{{\"{{{{\"}}}}",
                first_line(&text[start..]),
            ),
        })?;
        let mut inner = &text[inner_start..end];
        trim_next = false;
        if let Some(rest) = inner.strip_suffix('-') {
            if rest.ends_with(is_go_space) {
                inner = rest;
                trim_next = true;
            }
        }
        let src = &text[start..end + 2];
        pieces.push(Piece::Action(Action {
            src: src.to_string(),
            inner: inner.to_string(),
            line,
        }));
        line += src.matches('\n').count();
        pos = end + 2;
    }
    let mut lit = &text[pos..];
    if trim_next {
        lit = lit.trim_start_matches(is_go_space);
    }
    pieces.push(Piece::Text(lit.to_string()));
    Ok(pieces)
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    let mut out: String = l.chars().take(40).collect();
    if l.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// Byte index of the `}}` closing the action whose body starts at `from`.
fn find_action_end(text: &str, from: usize) -> Option<usize> {
    let body = &text[from..];
    if body.trim_start().starts_with("/*") {
        let close = body.find("*/")?;
        return body[close..].find("}}").map(|i| from + close + i);
    }
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' => {
                // Interpreted string or rune literal: skip to the closing quote.
                while let Some((_, d)) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c || d == '\n' {
                        break;
                    }
                }
            }
            '`' => {
                for (_, d) in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                }
            }
            '}' if body[i + 1..].starts_with('}') => return Some(from + i),
            _ => {}
        }
    }
    None
}

/// A token of an action's pipeline.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `.Name` (`.` alone is an empty name; `.A.B` keeps its dots).
    Field(String),
    Var(String),
    Ident(String),
    Str(String),
    Num(String),
    Pipe,
    LParen,
    RParen,
    Other(char),
}

fn tokenize(inner: &str) -> Vec<Tok> {
    let chars: Vec<char> = inner.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                        s.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    } else {
                        s.push(chars[i]);
                    }
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Str(s));
            }
            '`' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    s.push(chars[i]);
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Str(s));
            }
            '.' | '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && (ident_char(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
                let name: String = chars[start + 1..i].iter().collect();
                toks.push(if c == '.' {
                    Tok::Field(name)
                } else {
                    Tok::Var(name)
                });
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                toks.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if ident_char(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => {
                toks.push(Tok::Other(other));
                i += 1;
            }
        }
    }
    toks
}

/// What a convertible action produces.
#[derive(Debug, Clone, PartialEq)]
enum Conversion {
    /// `${name}` or `${name:-default}`.
    Ref(String, Option<String>),
    /// Literal text (`{{ "{{" }}`).
    Literal(String),
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `.X`, `env "X"` or `(env "X")` at the start of `toks`: (variable, tokens used).
fn var_operand(toks: &[Tok]) -> Option<(String, usize)> {
    match toks {
        [Tok::Field(name), ..] if is_env_name(name) => Some((name.clone(), 1)),
        [Tok::Ident(f), Tok::Str(name), ..] if f == "env" && is_env_name(name) => {
            Some((name.clone(), 2))
        }
        [Tok::LParen, Tok::Ident(f), Tok::Str(name), Tok::RParen, ..]
            if f == "env" && is_env_name(name) =>
        {
            Some((name.clone(), 4))
        }
        _ => None,
    }
}

fn literal(tok: &Tok) -> Option<String> {
    match tok {
        Tok::Str(s) | Tok::Num(s) => Some(s.clone()),
        Tok::Ident(b) if b == "true" || b == "false" => Some(b.clone()),
        _ => None,
    }
}

/// The pipeline forms pilotfish can express.
fn convert_pipeline(toks: &[Tok]) -> Option<Conversion> {
    if let [one] = toks {
        if let Some(text) = literal(one) {
            return Some(Conversion::Literal(text));
        }
    }
    let default_ok = |d: &str| !d.contains('}');
    if let Some((name, used)) = var_operand(toks) {
        match &toks[used..] {
            [] => return Some(Conversion::Ref(name, None)),
            [Tok::Pipe, Tok::Ident(f), d] if f == "default" => {
                let d = literal(d)?;
                return default_ok(&d).then_some(Conversion::Ref(name, Some(d)));
            }
            _ => return None,
        }
    }
    if let [Tok::Ident(f), d, rest @ ..] = toks {
        if f == "default" {
            let d = literal(d)?;
            let (name, used) = var_operand(rest)?;
            if used == rest.len() && default_ok(&d) {
                return Some(Conversion::Ref(name, Some(d)));
            }
        }
    }
    None
}

/// Values of the variables a render assumes (absent = unset).
type Assign = std::collections::BTreeMap<String, String>;

/// A value of a condition's operand under `env`.
fn operand_value(toks: &[Tok], env: &Assign) -> Option<(String, usize)> {
    if let Some((name, used)) = var_operand(toks) {
        // `.X | default "d"` as a whole operand is not possible here.
        return Some((env.get(&name).cloned().unwrap_or_default(), used));
    }
    let first = toks.first()?;
    literal(first).map(|l| (l, 1))
}

fn truthy(s: &str) -> bool {
    !(s.is_empty() || s == "false" || s == "0")
}

/// Evaluate an `if`/`with` condition as ContainerPilot would with no variables set.
fn eval_unset(toks: &[Tok]) -> Option<bool> {
    eval_cond(toks, &Assign::new())
}

/// Evaluate an `if`/`with` condition as ContainerPilot would under `env`
/// (a variable's value is non-empty text or unset).
fn eval_cond(toks: &[Tok], env: &Assign) -> Option<bool> {
    if let Some(Conversion::Ref(name, default)) = convert_pipeline(toks) {
        return Some(match env.get(&name).filter(|v| !v.is_empty()) {
            Some(_) => true,
            None => default.is_some_and(|d| truthy(&d)),
        });
    }
    if let [one] = toks {
        return literal(one).map(|l| truthy(&l));
    }
    let [Tok::Ident(f), args @ ..] = toks else {
        return None;
    };
    let mut values = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let (v, used) = operand_value(rest, env)?;
        values.push(v);
        rest = &rest[used..];
    }
    match (f.as_str(), values.as_slice()) {
        ("not", [v]) => Some(!truthy(v)),
        ("eq", [a, others @ ..]) if !others.is_empty() => Some(others.iter().any(|b| a == b)),
        ("ne", [a, b]) => Some(a != b),
        ("and", vs) if !vs.is_empty() => Some(vs.iter().all(|v| truthy(v))),
        ("or", vs) if !vs.is_empty() => Some(vs.iter().any(|v| truthy(v))),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BlockKind {
    If,
    With,
    Range,
    Define,
    Block,
}

impl BlockKind {
    fn keyword(self) -> &'static str {
        match self {
            BlockKind::If => "if",
            BlockKind::With => "with",
            BlockKind::Range => "range",
            BlockKind::Define => "define",
            BlockKind::Block => "block",
        }
    }
}

#[derive(Debug)]
struct Clause {
    head: Action,
    /// None for a plain `{{ else }}`.
    cond: Option<Vec<Tok>>,
    body: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Action, Vec<Tok>),
    Block(BlockKind, Vec<Clause>),
}

fn newlines(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .map(|n| match n {
            Node::Text(t) => t.matches('\n').count(),
            Node::Action(a, _) => a.src.matches('\n').count(),
            Node::Block(_, clauses) => clauses
                .iter()
                .map(|c| c.head.src.matches('\n').count() + newlines(&c.body))
                .sum(),
        })
        .sum()
}

/// Build the block tree. Comments are dropped here.
fn parse_tree(pieces: Vec<Piece>) -> Result<Vec<Node>, ImportError> {
    // Stack of open blocks: (kind, finished clauses, current clause head/cond, current body).
    struct Open {
        kind: BlockKind,
        clauses: Vec<Clause>,
        head: Action,
        cond: Option<Vec<Tok>>,
    }
    let mut stack: Vec<(Open, Vec<Node>)> = Vec::new();
    let mut top: Vec<Node> = Vec::new();
    fn body<'a>(stack: &'a mut [(Open, Vec<Node>)], top: &'a mut Vec<Node>) -> &'a mut Vec<Node> {
        match stack.last_mut() {
            Some((_, b)) => b,
            None => top,
        }
    }
    for piece in pieces {
        let action = match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    body(&mut stack, &mut top).push(Node::Text(t));
                }
                continue;
            }
            Piece::Action(a) => a,
        };
        if action.inner.trim_start().starts_with("/*") {
            continue;
        }
        let toks = tokenize(&action.inner);
        let kind = match toks.first() {
            Some(Tok::Ident(k)) => match k.as_str() {
                "if" => Some(BlockKind::If),
                "with" => Some(BlockKind::With),
                "range" => Some(BlockKind::Range),
                "define" => Some(BlockKind::Define),
                "block" => Some(BlockKind::Block),
                _ => None,
            },
            _ => None,
        };
        if let Some(kind) = kind {
            let cond = Some(toks[1..].to_vec());
            stack.push((
                Open {
                    kind,
                    clauses: Vec::new(),
                    head: action,
                    cond,
                },
                Vec::new(),
            ));
            continue;
        }
        match toks.first() {
            Some(Tok::Ident(k)) if k == "else" => {
                let Some((open, b)) = stack.last_mut() else {
                    return Err(ImportError::Template {
                        line: action.line,
                        message: format!(
                            "'{}' has no matching {{{{ if }}}}, {{{{ with }}}} or {{{{ range }}}} (ContainerPilot refused this file too); remove it",
                            action.src
                        ),
                    });
                };
                let finished = std::mem::take(b);
                let head = std::mem::replace(&mut open.head, action);
                let cond = open.cond.take();
                open.clauses.push(Clause {
                    head,
                    cond,
                    body: finished,
                });
                // `else if X` / `else with X` carry a condition; plain `else` none.
                open.cond = match toks.get(1) {
                    Some(Tok::Ident(k)) if k == "if" || k == "with" => Some(toks[2..].to_vec()),
                    _ => None,
                };
            }
            Some(Tok::Ident(k)) if k == "end" => {
                let Some((mut open, b)) = stack.pop() else {
                    return Err(ImportError::Template {
                        line: action.line,
                        message: format!(
                            "'{}' closes a block that was never opened (ContainerPilot refused this file too); remove it",
                            action.src
                        ),
                    });
                };
                open.clauses.push(Clause {
                    head: open.head,
                    cond: open.cond,
                    body: b,
                });
                body(&mut stack, &mut top).push(Node::Block(open.kind, open.clauses));
            }
            _ => body(&mut stack, &mut top).push(Node::Action(action, toks)),
        }
    }
    if let Some((open, _)) = stack.pop() {
        return Err(ImportError::Template {
            line: open.head.line,
            message: format!(
                "'{}' opens a {} block that is never closed with {{{{ end }}}} (ContainerPilot refused this file too); add the {{{{ end }}}}",
                open.head.src,
                open.kind.keyword()
            ),
        });
    }
    Ok(top)
}

/// JSON5 lexical context of the text produced so far.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lex {
    Normal,
    Slash,
    Str(char),
    StrEscape(char),
    LineComment,
    BlockComment,
    BlockCommentStar,
}

impl Lex {
    fn step(self, c: char) -> Lex {
        match (self, c) {
            (Lex::Normal | Lex::Slash, '"' | '\'') => Lex::Str(c),
            (Lex::Normal, '/') => Lex::Slash,
            (Lex::Slash, '/') => Lex::LineComment,
            (Lex::Slash, '*') => Lex::BlockComment,
            (Lex::Normal | Lex::Slash, _) => Lex::Normal,
            (Lex::Str(q), '\\') => Lex::StrEscape(q),
            (Lex::Str(q), c) if c == q => Lex::Normal,
            (Lex::Str(q), _) | (Lex::StrEscape(q), _) => Lex::Str(q),
            (Lex::LineComment, '\n') => Lex::Normal,
            (Lex::LineComment, _) => Lex::LineComment,
            (Lex::BlockComment, '*') | (Lex::BlockCommentStar, '*') => Lex::BlockCommentStar,
            (Lex::BlockCommentStar, '/') => Lex::Normal,
            (Lex::BlockComment | Lex::BlockCommentStar, _) => Lex::BlockComment,
        }
    }
}

/// What the pre-pass hands to the JSON5 parser and the converter.
#[derive(Debug, Default)]
struct Rendered {
    text: String,
    notes: Vec<String>,
    /// Indexed by the RAW/BARE markers.
    actions: Vec<ActionInfo>,
    unset: BTreeSet<String>,
    had_actions: bool,
}

#[derive(Debug, Clone)]
struct ActionInfo {
    src: String,
    line: usize,
}

struct Renderer<'a> {
    out: Rendered,
    lex: Lex,
    /// Some: render the branches these variable values select, without the
    /// one-branch notes (every branch is emitted, see `variants`).
    assign: Option<&'a Assign>,
}

fn render_tree(tree: &[Node], had_actions: bool, assign: Option<&Assign>) -> Rendered {
    let mut r = Renderer {
        out: Rendered {
            had_actions,
            ..Rendered::default()
        },
        lex: Lex::Normal,
        assign,
    };
    r.nodes(tree);
    r.out
}

/// Escape text for a JSON5 string delimited by `q`.
fn escape_json5(s: &str, q: char) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

impl Renderer<'_> {
    fn push(&mut self, s: &str) {
        for c in s.chars() {
            self.lex = self.lex.step(c);
        }
        self.out.text.push_str(s);
    }

    fn nodes(&mut self, nodes: &[Node]) {
        for n in nodes {
            match n {
                Node::Text(t) => self.push(t),
                Node::Action(a, toks) => self.action(a, toks),
                Node::Block(kind, clauses) => self.block(*kind, clauses),
            }
        }
    }

    fn marker_ref(name: &str, default: Option<&str>, q: char) -> String {
        match default {
            Some(d) => format!("{REF}{name}{REF_DEFAULT}{}{REF_END}", escape_json5(d, q)),
            None => format!("{REF}{name}{REF_END}"),
        }
    }

    fn remember(&mut self, a: &Action) -> usize {
        self.out.actions.push(ActionInfo {
            src: a.src.clone(),
            line: a.line,
        });
        self.out.actions.len() - 1
    }

    fn action(&mut self, a: &Action, toks: &[Tok]) {
        let conversion = convert_pipeline(toks);
        let in_comment = matches!(
            self.lex,
            Lex::LineComment | Lex::BlockComment | Lex::BlockCommentStar
        );
        if let (Some(Conversion::Ref(name, None)), false) = (&conversion, in_comment) {
            self.out.unset.insert(name.clone());
        }
        match self.lex {
            Lex::LineComment | Lex::BlockComment | Lex::BlockCommentStar => {
                // Inside a JSON5 comment the rendered text is irrelevant.
            }
            Lex::Str(q) | Lex::StrEscape(q) => match conversion {
                Some(Conversion::Ref(name, d)) => {
                    let m = Self::marker_ref(&name, d.as_deref(), q);
                    self.push(&m);
                }
                Some(Conversion::Literal(text)) => self.push(&escape_json5(&text, q)),
                None => {
                    let i = self.remember(a);
                    self.push(&format!("{RAW}{i}{RAW_END}"));
                }
            },
            Lex::Normal | Lex::Slash => {
                match conversion {
                    Some(Conversion::Ref(name, d)) => {
                        let i = self.remember(a);
                        let m = Self::marker_ref(&name, d.as_deref(), '"');
                        self.push(&format!("\"{BARE}{i}{BARE_END}{m}\""));
                    }
                    Some(Conversion::Literal(text)) => self.push(&text),
                    None => {
                        let i = self.remember(a);
                        self.push(&format!("\"{BARE}{i}{BARE_END}{RAW}{i}{RAW_END}\""));
                    }
                }
                // Keep line numbers of the file for JSON5 error positions.
                let n = a.src.matches('\n').count();
                self.push(&"\n".repeat(n));
            }
        }
    }

    fn pad(&mut self, dropped: &[&Clause]) {
        if matches!(self.lex, Lex::Normal | Lex::Slash) {
            let n: usize = dropped
                .iter()
                .map(|c| c.head.src.matches('\n').count() + newlines(&c.body))
                .sum();
            self.push(&"\n".repeat(n));
        }
    }

    fn block(&mut self, kind: BlockKind, clauses: &[Clause]) {
        let Some(first) = clauses.first() else {
            return;
        };
        let line = first.head.line;
        let head = first.head.src.clone();
        // `{{ if .X }}{{ .X }}{{ else }}text{{ end }}` is exactly `${X:-text}`.
        if kind == BlockKind::If {
            if let Some((name, default)) = if_var_else_text(clauses) {
                match self.lex {
                    Lex::Str(q) | Lex::StrEscape(q) => {
                        let m = Self::marker_ref(&name, Some(&default), q);
                        self.push(&m);
                        return;
                    }
                    Lex::Normal | Lex::Slash => {
                        let i = self.remember(&first.head);
                        let m = Self::marker_ref(&name, Some(default.trim()), '"');
                        self.push(&format!("\"{BARE}{i}{BARE_END}{m}\""));
                        let n: usize = clauses
                            .iter()
                            .map(|c| c.head.src.matches('\n').count() + newlines(&c.body))
                            .sum();
                        self.push(&"\n".repeat(n));
                        return;
                    }
                    _ => {}
                }
            }
        }
        let describe = |c: &Clause| format!("{} at line {}", c.head.src, c.head.line);
        match kind {
            BlockKind::If | BlockKind::With => {
                let mut chosen: Option<usize> = None;
                let mut undecidable = false;
                let unset = Assign::new();
                let env = self.assign.unwrap_or(&unset);
                for (i, c) in clauses.iter().enumerate() {
                    match &c.cond {
                        None => {
                            chosen = Some(i);
                            break;
                        }
                        Some(cond) => match eval_cond(cond, env) {
                            Some(true) => {
                                chosen = Some(i);
                                break;
                            }
                            Some(false) => {}
                            None => undecidable = true,
                        },
                    }
                }
                if undecidable {
                    // Fall back to the `else` branch, if any.
                    chosen = clauses.iter().position(|c| c.cond.is_none());
                }
                let dropped: Vec<&Clause> = clauses
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != chosen)
                    .map(|(_, c)| c)
                    .collect();
                let kept = match chosen {
                    Some(i) => format!("kept the branch {}", describe(&clauses[i])),
                    None => "kept nothing".to_string(),
                };
                let why = if undecidable {
                    "its condition cannot be evaluated here"
                } else {
                    "evaluated as ContainerPilot would with every variable unset"
                };
                let dropped_desc: Vec<String> = dropped.iter().map(|c| describe(c)).collect();
                if self.assign.is_none() || undecidable {
                    self.out.notes.push(format!(
                    "template line {line}: {head} cannot be converted (pilotfish's config has no conditionals); {why}: {kept}, dropped {} — if that is not the branch you run with, edit the output by hand",
                    if dropped_desc.is_empty() { "nothing".to_string() } else { dropped_desc.join(" and ") },
                ));
                }
                if let Some(i) = chosen {
                    let kept_lines = clauses[i].head.src.matches('\n').count();
                    let before: Vec<&Clause> = clauses[..i].iter().collect();
                    self.pad(&before);
                    self.push(&"\n".repeat(if self.lex == Lex::Normal {
                        kept_lines
                    } else {
                        0
                    }));
                    self.nodes(&clauses[i].body);
                    let after: Vec<&Clause> = clauses[i + 1..].iter().collect();
                    self.pad(&after);
                } else {
                    self.pad(&dropped);
                }
            }
            BlockKind::Range => {
                let else_clause = clauses.iter().skip(1).find(|c| c.cond.is_none());
                self.out.notes.push(format!(
                    "template line {line}: {head} cannot be converted (pilotfish's config has no loops); its body was dropped{} — write out the jobs or watches it generates by hand",
                    if else_clause.is_some() { " and its {{ else }} branch kept (as for an empty list)" } else { " (as for an empty list)" },
                ));
                let body = &clauses[0];
                self.pad(&[body]);
                if let Some(c) = else_clause {
                    self.nodes(&c.body);
                }
            }
            BlockKind::Define => {
                self.out.notes.push(format!(
                    "template line {line}: {head} defines a template, which pilotfish's config cannot express; dropped it"
                ));
                let all: Vec<&Clause> = clauses.iter().collect();
                self.pad(&all);
            }
            BlockKind::Block => {
                self.out.notes.push(format!(
                    "template line {line}: {head} cannot be converted; its body was kept in place"
                ));
                self.nodes(&first.body);
            }
        }
    }
}

/// `{{ if V }}{{ V }}{{ else }}text{{ end }}` (or without else) → (V, text).
fn if_var_else_text(clauses: &[Clause]) -> Option<(String, String)> {
    let (then, else_text) = match clauses {
        [then] => (then, String::new()),
        [then, els] if els.cond.is_none() => match els.body.as_slice() {
            [] => (then, String::new()),
            [Node::Text(t)] if !t.contains(['}', '\n']) => (then, t.clone()),
            _ => return None,
        },
        _ => return None,
    };
    let cond = then.cond.as_ref()?;
    let (name, used) = var_operand(cond)?;
    if used != cond.len() {
        return None;
    }
    match then.body.as_slice() {
        [Node::Action(_, toks)]
            if convert_pipeline(toks) == Some(Conversion::Ref(name.clone(), None)) =>
        {
            Some((name, else_text))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------
// JSON5 values, keeping key order so notes follow the file.

#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn kind(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "a boolean",
            J::Int(_) | J::Float(_) => "a number",
            J::Str(_) => "a string",
            J::Arr(_) => "an array",
            J::Obj(_) => "an object",
        }
    }

    /// Short display for notes, markers made readable.
    fn show(&self) -> String {
        match self {
            J::Null => "null".into(),
            J::Bool(b) => b.to_string(),
            J::Int(i) => i.to_string(),
            J::Float(f) => f.to_string(),
            J::Str(s) => format!("\"{}\"", plain(s)),
            J::Arr(_) => "[...]".into(),
            J::Obj(_) => "{...}".into(),
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON5 value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<J, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J, E> {
        Ok(J::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(i64::try_from(v).map_or(J::Float(v as f64), J::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<J, E> {
        Ok(J::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<J, E> {
        Ok(J::Str(v))
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_none<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<J, D::Error> {
        J::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(J::Arr(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut v = Vec::new();
        while let Some((k, x)) = map.next_entry::<String, J>()? {
            v.push((k, x));
        }
        Ok(J::Obj(v))
    }
}

/// Markers rendered readable (for notes): references as `${..}`, kept actions as written.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            REF => out.push_str("${"),
            REF_DEFAULT => out.push_str(":-"),
            REF_END => out.push('}'),
            RAW | BARE => {
                for d in chars.by_ref() {
                    if d == RAW_END || d == BARE_END {
                        break;
                    }
                }
                if c == RAW {
                    out.push_str("{{…}}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The mapping.

struct Conv {
    notes: Vec<String>,
    /// What ContainerPilot did without being told, written out explicitly.
    implicit: Vec<String>,
    /// What that version of ContainerPilot did with an unknown key.
    unknown_keys: &'static str,
    actions: Vec<ActionInfo>,
}

/// An object's entries by canonical key (last occurrence wins, as in ContainerPilot).
struct Fields<'j> {
    entries: Vec<(&'static str, &'j J)>,
}

impl<'j> Fields<'j> {
    fn get(&self, key: &str) -> Option<&'j J> {
        self.entries
            .iter()
            .rev()
            .find(|(k, v)| *k == key && **v != J::Null)
            .map(|(_, v)| *v)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

const EXEC_SHELL_WORDS: &[&str] = &[
    "|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1", "2>", "1>", "<<",
];

impl Conv {
    fn note(&mut self, path: &str, msg: impl fmt::Display) {
        self.notes.push(format!("{path}: {msg}"));
    }

    fn fields<'j>(
        &mut self,
        path: &str,
        obj: &'j [(String, J)],
        known: &[&'static str],
        exact: bool,
    ) -> Fields<'j> {
        let mut entries = Vec::new();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in obj {
            let canon = known.iter().find(|k| {
                if exact {
                    **k == key.as_str()
                } else {
                    k.eq_ignore_ascii_case(key)
                }
            });
            match canon {
                Some(k) => {
                    if seen.contains(k) {
                        self.note(
                            &join(path, k),
                            "given twice; the last value wins, as in ContainerPilot",
                        );
                    }
                    seen.push(k);
                    entries.push((*k, value));
                }
                None => {
                    let key = plain(key);
                    let suggestion = known
                        .iter()
                        .map(|k| (edit_distance(&key.to_lowercase(), &k.to_lowercase()), k))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, k)| format!("; did you mean '{k}'?"))
                        .unwrap_or_default();
                    self.note(
                        &join(path, &key),
                        format!(
                            "unknown key, dropped ({}; known keys: {}){suggestion}",
                            self.unknown_keys,
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        Fields { entries }
    }

    fn object<'j>(&mut self, path: &str, v: &'j J) -> Option<&'j [(String, J)]> {
        match v {
            J::Obj(o) => Some(o),
            J::Null => None,
            other => {
                self.note(
                    path,
                    format!(
                        "expected an object, found {} {}; dropped",
                        other.kind(),
                        other.show()
                    ),
                );
                None
            }
        }
    }

    /// Resolve markers: literal `$` escaped, references written, notes for the rest.
    fn text(&mut self, path: &str, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        let read_index = |chars: &[char], i: &mut usize, end: char| -> Option<usize> {
            let start = *i;
            while *i < chars.len() && chars[*i] != end {
                *i += 1;
            }
            let n: String = chars[start..*i].iter().collect();
            *i += 1;
            n.parse().ok()
        };
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '$' => {
                    // A run of `$` is doubled when pilotfish would read it as `$$` or
                    // `${`; a lone `$` before anything else is already literal.
                    let mut run = 1;
                    while chars.get(i) == Some(&'$') {
                        run += 1;
                        i += 1;
                    }
                    let next = chars.get(i).copied();
                    let double = run > 1 || matches!(next, Some('{' | REF | RAW));
                    out.push_str(&"$".repeat(if double { 2 * run } else { 1 }));
                }
                REF => {
                    out.push_str("${");
                    while i < chars.len() && chars[i] != REF_END {
                        if chars[i] == REF_DEFAULT {
                            out.push_str(":-");
                        } else {
                            out.push(chars[i]);
                        }
                        i += 1;
                    }
                    i += 1;
                    out.push('}');
                }
                RAW => {
                    if let Some(info) = read_index(&chars, &mut i, RAW_END)
                        .and_then(|n| self.actions.get(n))
                        .cloned()
                    {
                        self.note(
                            path,
                            format!(
                                "template line {}: {} cannot be converted (pilotfish's config has no template functions, only ${{VAR}} and ${{VAR:-default}}); kept as literal text — replace it by hand",
                                info.line, info.src
                            ),
                        );
                        // Literal text: escape `$` so pilotfish keeps it.
                        let escaped = info.src.replace('$', "$$");
                        out.push_str(&escaped);
                    }
                }
                BARE => {
                    if let Some(info) = read_index(&chars, &mut i, BARE_END)
                        .and_then(|n| self.actions.get(n))
                        .cloned()
                        .filter(|_| chars.get(i) == Some(&REF))
                    {
                        self.note(
                            path,
                            format!(
                                "template line {}: {} stood outside a string, so ContainerPilot pasted the variable's text into the JSON5 itself; pilotfish expands variables only inside strings, so it became a string value",
                                info.line, info.src
                            ),
                        );
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    /// A string that is one variable reference and nothing else, bare (`port: {{ .P }}`)
    /// or quoted (`port: "{{ .P }}"`): (how to name it in a note, variable, default).
    fn lone_ref(&self, s: &str) -> Option<(String, String, Option<String>)> {
        let (what, body) = match s.strip_prefix(BARE) {
            Some(rest) => {
                let (idx, rest) = rest.split_once(BARE_END)?;
                let info = self.actions.get(idx.parse::<usize>().ok()?)?;
                (format!("template line {}: {}", info.line, info.src), rest)
            }
            None => (format!("\"{}\"", plain(s)), s),
        };
        let body = body.strip_prefix(REF)?.strip_suffix(REF_END)?;
        if body.contains([REF, REF_END, RAW, BARE]) {
            return None;
        }
        Some(match body.split_once(REF_DEFAULT) {
            Some((n, d)) => (what, n.to_string(), Some(d.to_string())),
            None => (what, body.to_string(), None),
        })
    }

    /// A number or boolean written with a template action pilotfish cannot keep:
    /// the default if it parses, else nothing; with a note either way.
    fn templated_scalar<T: fmt::Display>(
        &mut self,
        path: &str,
        s: &str,
        kind: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let Some((what, name, default)) = self.lone_ref(s) else {
            self.note(
                path,
                format!(
                    "\"{}\" contains template actions, which pilotfish cannot expand in a {kind}; dropped — write the value you deploy with",
                    plain(s)
                ),
            );
            return None;
        };
        let parsed = default.as_deref().and_then(|d| parse(d.trim()));
        let what_now = match &parsed {
            Some(v) => format!("used its default {v}"),
            None => "dropped the key".to_string(),
        };
        self.note(
            path,
            format!(
                "{what} — pilotfish cannot expand variables in a {kind}, so the value no longer follows ${name}; {what_now} — write the value you deploy with"
            ),
        );
        parsed
    }

    /// Scalar coerced to a string (weak typing).
    fn string(&mut self, path: &str, v: &J) -> Option<String> {
        match v {
            J::Null => None,
            J::Str(s) => Some(self.text(path, s)),
            J::Bool(b) => Some(b.to_string()),
            J::Int(i) => Some(i.to_string()),
            J::Float(f) => Some(f.to_string()),
            other => {
                self.note(
                    path,
                    format!("expected a string, found {}; dropped", other.kind()),
                );
                None
            }
        }
    }

    /// One string or a list of strings (a single value is lifted to a list).
    fn strings(&mut self, path: &str, v: &J) -> Vec<String> {
        match v {
            J::Arr(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, x)| self.string(&format!("{path}[{i}]"), x))
                .collect(),
            other => self.string(path, other).into_iter().collect(),
        }
    }

    fn string_or_list(&mut self, path: &str, v: &J) -> Option<StringOrList> {
        match v {
            J::Arr(_) => Some(StringOrList::Many(self.strings(path, v))),
            other => self.string(path, other).map(StringOrList::One),
        }
    }

    /// An integer field; a bare variable uses its default or is dropped.
    fn int(&mut self, path: &str, v: &J) -> Option<i64> {
        match v {
            J::Null => None,
            J::Int(i) => Some(*i),
            J::Float(f) if f.is_finite() => {
                if f.fract() != 0.0 {
                    self.note(
                        path,
                        format!("{f} truncated to {} as ContainerPilot did", f.trunc()),
                    );
                }
                Some(f.trunc() as i64)
            }
            J::Str(s) if s.contains(is_marker) => {
                self.templated_scalar(path, s, "number", |d| d.parse::<i64>().ok())
            }
            J::Str(s) => {
                let t = self.text(path, s);
                match t.trim().parse::<f64>() {
                    Ok(f) if f.is_finite() => Some(f.trunc() as i64),
                    _ => {
                        self.note(
                            path,
                            format!("\"{t}\" is not a number (ContainerPilot rejected it); dropped — write a number"),
                        );
                        None
                    }
                }
            }
            other => {
                self.note(
                    path,
                    format!(
                        "expected a number, found {} {}; dropped",
                        other.kind(),
                        other.show()
                    ),
                );
                None
            }
        }
    }

    /// A whole number pilotfish reads after `${VAR}` expansion (ports): a lone
    /// variable reference stays one, so the value still follows the variable.
    fn int_ref(&mut self, path: &str, v: &J) -> Option<RawInt> {
        if let J::Str(s) = v {
            if let Some((_, name, default)) = self.lone_ref(s) {
                return Some(RawInt::Text(match default {
                    Some(d) => format!("${{{name}:-{}}}", d.trim()),
                    None => format!("${{{name}}}"),
                }));
            }
        }
        self.int(path, v).map(RawInt::Int)
    }

    fn boolean(&mut self, path: &str, v: &J) -> Option<bool> {
        let parse = |s: &str| match s.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => None,
        };
        match v {
            J::Null => None,
            J::Bool(b) => Some(*b),
            J::Int(i) => Some(*i != 0),
            J::Float(f) => Some(*f != 0.0),
            J::Str(s) if s.contains(is_marker) => self.templated_scalar(path, s, "boolean", parse),
            J::Str(s) => {
                let t = self.text(path, s);
                let b = parse(&t);
                if b.is_none() {
                    self.note(
                        path,
                        format!("\"{t}\" is not a boolean (ContainerPilot rejected it); dropped — write true or false"),
                    );
                }
                b
            }
            other => {
                self.note(
                    path,
                    format!("expected a boolean, found {}; dropped", other.kind()),
                );
                None
            }
        }
    }

    /// A ContainerPilot duration (number or unitless string = seconds, else Go syntax).
    fn duration(&mut self, path: &str, v: &J) -> Option<String> {
        match v {
            J::Null => None,
            J::Int(i) => Some(format!("{i}s")),
            J::Float(f) => {
                if f.fract() == 0.0 {
                    Some(format!("{f}s"))
                } else {
                    self.note(path, format!("{f} has a fraction but no unit, which ContainerPilot rejected; converted to \"{f}s\""));
                    Some(format!("{f}s"))
                }
            }
            J::Str(s) => {
                let t = self.text(path, s);
                let trimmed = t.trim();
                if trimmed.parse::<u64>().is_ok() {
                    return Some(format!("{trimmed}s"));
                }
                if !t.contains("${") && parse_duration(&t).is_err() {
                    self.note(
                        path,
                        format!("\"{t}\" is not a duration (ContainerPilot rejected it too); kept as written — use e.g. \"500ms\", \"10s\", \"1m30s\""),
                    );
                }
                Some(t)
            }
            other => {
                self.note(
                    path,
                    format!("expected a duration, found {}; dropped", other.kind()),
                );
                None
            }
        }
    }

    /// A ContainerPilot integer-seconds field, written as "Ns".
    fn seconds(&mut self, path: &str, v: &J) -> Option<String> {
        match v {
            J::Str(s) if s.contains(REF) => {
                // "${X:-10}" expands to a bare number, which pilotfish reads as seconds.
                Some(self.text(path, s))
            }
            J::Str(s) => {
                let t = plain(s);
                if t.trim().parse::<f64>().is_ok() {
                    self.int(path, v).map(|n| format!("{n}s"))
                } else {
                    let d = self.text(path, s);
                    self.note(
                        path,
                        format!("\"{d}\": ContainerPilot accepted only whole seconds here and rejected this; kept as a duration"),
                    );
                    Some(d)
                }
            }
            other => self.int(path, other).map(|n| format!("{n}s")),
        }
    }

    // --- top level -----------------------------------------------------------------

    fn config(&mut self, top: &[(String, J)]) -> RawConfig {
        let f = self.fields(
            "",
            top,
            &[
                "consul",
                "logging",
                "stopTimeout",
                "jobs",
                "watches",
                "telemetry",
                "control",
            ],
            true,
        );
        let mut raw = RawConfig::default();
        match f.get("consul") {
            Some(v) => raw.consul = self.consul(v),
            None => self.note(
                "consul",
                "absent; ContainerPilot refused to start without it (\"no discovery backend defined\"), pilotfish runs as a plain supervisor without Consul",
            ),
        }
        if let Some(v) = f.get("logging") {
            raw.logging = self.logging(v);
        }
        self.log_to_stdout(&mut raw);
        if let Some(v) = f.get("stopTimeout") {
            raw.stop_timeout = self.stop_timeout(v);
        }
        if let Some(v) = f.get("control") {
            raw.control = self.control(v);
        }
        if let Some(v) = f.get("telemetry") {
            raw.telemetry = self.telemetry(v);
        }
        if let Some(v) = f.get("jobs") {
            raw.jobs = self.jobs(v);
        }
        if let Some(v) = f.get("watches") {
            raw.watches = self.watches(v);
        }
        raw
    }

    fn consul(&mut self, v: &J) -> Option<RawConsul> {
        let tls_note = "ContainerPilot did not verify the Consul server's TLS certificate unless tls.verify was true (or CONSUL_HTTP_SSL_VERIFY=true); pilotfish verifies it by default — give it the CA (ca_file) or, only if you must keep the old insecure behaviour, set verify = false";
        match v {
            J::Str(s) => {
                let addr = self.text("consul", s);
                let addr = if addr.contains("://") {
                    addr
                } else {
                    format!("http://{addr}")
                };
                if addr.starts_with("https://") {
                    self.note("consul", tls_note);
                }
                Some(RawConsul {
                    address: Some(addr),
                    ..RawConsul::default()
                })
            }
            J::Obj(o) => {
                let f = self.fields("consul", o, &["address", "scheme", "token", "tls"], false);
                let scheme = f
                    .get("scheme")
                    .and_then(|v| self.string("consul.scheme", v))
                    .map(|s| s.to_lowercase());
                if let Some(s) = &scheme {
                    if s != "http" && s != "https" {
                        self.note(
                            "consul.scheme",
                            format!(
                                "\"{s}\" is neither http nor https; kept in the address as written"
                            ),
                        );
                    }
                }
                let address = match f
                    .get("address")
                    .and_then(|v| self.string("consul.address", v))
                {
                    Some(a) if a.contains("://") => {
                        if let Some(s) = &scheme {
                            if !a.starts_with(&format!("{s}://")) {
                                self.note(
                                    "consul.address",
                                    format!("has its own scheme, which wins over scheme \"{s}\""),
                                );
                            }
                        }
                        a
                    }
                    Some(a) => format!("{}://{a}", scheme.as_deref().unwrap_or("http")),
                    None => {
                        let a = format!("{}://127.0.0.1:8500", scheme.as_deref().unwrap_or("http"));
                        self.note("consul.address", format!("absent; ContainerPilot's Consul client defaulted to 127.0.0.1:8500, written explicitly as \"{a}\""));
                        a
                    }
                };
                let token = f.get("token").and_then(|v| self.string("consul.token", v));
                let tls = f.get("tls").and_then(|v| self.tls(v));
                let verify = tls.as_ref().and_then(|t| t.verify);
                if (address.starts_with("https://") || tls.is_some()) && verify.is_none() {
                    self.note("consul.tls.verify", tls_note);
                }
                if verify == Some(false) {
                    self.note("consul.tls.verify", "false kept as written: the Consul server's certificate is not checked — remove it to let pilotfish verify (its default)");
                }
                Some(RawConsul {
                    address: Some(address),
                    token,
                    tls,
                })
            }
            J::Null => None,
            other => {
                self.note(
                    "consul",
                    format!(
                        "expected \"host:port\" or an object, found {} {}; dropped",
                        other.kind(),
                        other.show()
                    ),
                );
                None
            }
        }
    }

    fn tls(&mut self, v: &J) -> Option<RawTls> {
        let o = self.object("consul.tls", v)?;
        let f = self.fields(
            "consul.tls",
            o,
            &[
                "cafile",
                "capath",
                "clientcert",
                "clientkey",
                "servername",
                "verify",
            ],
            false,
        );
        if f.get("capath").is_some() {
            self.note(
                "consul.tls.capath",
                "not supported (pilotfish takes one CA file); dropped — concatenate the directory's certificates into one file and set ca_file",
            );
        }
        let mut s = |k: &str| {
            let path = format!("consul.tls.{k}");
            f.get(k).and_then(|v| self.string(&path, v))
        };
        let ca_file = s("cafile");
        let cert_file = s("clientcert");
        let key_file = s("clientkey");
        let server_name = s("servername");
        let verify = f
            .get("verify")
            .and_then(|v| self.boolean("consul.tls.verify", v));
        Some(RawTls {
            ca_file,
            cert_file,
            key_file,
            server_name,
            verify,
        })
    }

    fn logging(&mut self, v: &J) -> Option<RawLogging> {
        let o = self.object("logging", v)?;
        let f = self.fields("logging", o, &["level", "format", "output"], false);
        let level = f
            .get("level")
            .and_then(|v| self.string("logging.level", v))
            .map(|l| {
                if l.contains("${") {
                    // The variable keeps its name: pilotfish reads the level
                    // case-insensitively after expansion.
                    return l;
                }
                let lower = l.to_lowercase();
                match lower.as_str() {
                    "debug" | "info" | "warn" | "error" => lower,
                    "warning" => "warn".into(),
                    "fatal" | "panic" => {
                        self.note("logging.level", format!("{l} has no pilotfish equivalent; converted to \"error\""));
                        "error".into()
                    }
                    _ => {
                        self.note("logging.level", format!("\"{l}\" is not a log level (ContainerPilot rejected it); kept lowercased — use debug, info, warn or error"));
                        lower
                    }
                }
            });
        let format = f
            .get("format")
            .and_then(|v| self.string("logging.format", v))
            .map(|fmt| match fmt.to_lowercase().as_str() {
                "default" => {
                    self.note("logging.format", "ContainerPilot's \"default\" format wrote Go-log lines (\"<time> [job] [pid] message\"); converted to pilotfish's \"text\" format, whose lines look different — adapt anything that parses them");
                    "text".to_string()
                }
                "text" => "text".to_string(),
                "json" => "json".to_string(),
                _ => {
                    self.note("logging.format", format!("\"{fmt}\" is not a format (ContainerPilot rejected it); kept — use text or json"));
                    fmt
                }
            });
        let output = match f
            .get("output")
            .and_then(|v| self.string("logging.output", v))
        {
            Some(out) if out == "stdout" || out == "stderr" => Some(out),
            Some(out) => {
                self.note(
                    "logging.output",
                    format!("\"{out}\": pilotfish cannot log to a file (writing to a file and reopening it on SIGUSR1 are gone); written as \"stdout\" — redirect pilotfish's output to the file instead"),
                );
                Some("stdout".into())
            }
            None => None,
        };
        Some(RawLogging {
            level,
            format,
            output,
        })
    }

    /// ContainerPilot's log went to stdout; pilotfish's goes to stderr unless
    /// told otherwise, so the converted file says stdout.
    fn log_to_stdout(&mut self, raw: &mut RawConfig) {
        let logging = raw.logging.get_or_insert_with(RawLogging::default);
        if logging.output.is_none() {
            logging.output = Some("stdout".into());
            self.implicit.push("logging.output = \"stdout\": ContainerPilot wrote its log (and the job output it relayed) to stdout; pilotfish's default is stderr".into());
        }
    }

    fn stop_timeout(&mut self, v: &J) -> Option<String> {
        let meaning = "ContainerPilot always slept this long after every job had stopped and then SIGKILLed what was left; pilotfish's stop_timeout bounds the whole shutdown and ends as soon as every process has exited";
        let n = match v {
            J::Str(s) if s.contains(is_marker) || plain(s).trim().parse::<f64>().is_err() => {
                let d = self.seconds("stopTimeout", v)?;
                self.note("stopTimeout", meaning);
                return Some(d);
            }
            other => self.int("stopTimeout", other)?,
        };
        match n {
            n if n < 0 => {
                self.note("stopTimeout", format!("{n} (no wait) has no equivalent; dropped, so pilotfish's default applies — {meaning}"));
                None
            }
            0 => {
                self.note(
                    "stopTimeout",
                    format!("0 meant the default 5 seconds in ContainerPilot; written as \"5s\" — {meaning}"),
                );
                Some("5s".into())
            }
            n => {
                self.note("stopTimeout", meaning);
                Some(format!("{n}s"))
            }
        }
    }

    fn control(&mut self, v: &J) -> Option<RawControl> {
        let o = self.object("control", v)?;
        let f = self.fields("control", o, &["socket"], false);
        let socket = f
            .get("socket")
            .and_then(|v| self.string("control.socket", v));
        Some(RawControl { socket })
    }

    fn telemetry(&mut self, v: &J) -> Option<RawTelemetry> {
        let o = self.object("telemetry", v)?;
        let f = self.fields(
            "telemetry",
            o,
            &["port", "interfaces", "tags", "metrics"],
            false,
        );
        let port = f
            .get("port")
            .and_then(|v| self.int_ref("telemetry.port", v));
        self.implicit.push("telemetry.service = \"containerpilot\": ContainerPilot registered its telemetry endpoint in Consul as service \"containerpilot\" (pilotfish's default name is \"pilotfish\"), which Prometheus consul_sd_configs may look for".into());
        let interfaces = f
            .get("interfaces")
            .and_then(|v| self.string_or_list("telemetry.interfaces", v));
        let tags = f
            .get("tags")
            .map(|v| self.strings("telemetry.tags", v))
            .unwrap_or_default();
        let mut metrics = Vec::new();
        if let Some(v) = f.get("metrics") {
            let items = match v {
                J::Arr(items) => items.iter().collect(),
                other => vec![other],
            };
            for (i, m) in items.into_iter().enumerate() {
                if let Some(m) = self.metric(&format!("telemetry.metrics[{i}]"), m) {
                    metrics.push(m);
                }
            }
        }
        Some(RawTelemetry {
            port,
            service: Some("containerpilot".into()),
            interfaces,
            tags,
            metrics,
        })
    }

    fn metric(&mut self, path: &str, v: &J) -> Option<RawMetric> {
        let o = self.object(path, v)?;
        let f = self.fields(
            path,
            o,
            &["namespace", "subsystem", "name", "help", "type"],
            false,
        );
        let mut part = |k: &str| {
            let p = join(path, k);
            f.get(k)
                .and_then(|v| self.string(&p, v))
                .unwrap_or_default()
        };
        let (namespace, subsystem, name) = (part("namespace"), part("subsystem"), part("name"));
        let help = f
            .get("help")
            .and_then(|v| self.string(&join(path, "help"), v));
        let kind = f
            .get("type")
            .and_then(|v| self.string(&join(path, "type"), v))
            .unwrap_or_default()
            .to_lowercase();
        let full: Vec<&str> = [namespace.as_str(), subsystem.as_str(), name.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let full = full.join("_");
        if name.is_empty() {
            self.note(
                &join(path, "name"),
                "absent (ContainerPilot rejected a metric without a name); metric dropped",
            );
            return None;
        }
        match kind.as_str() {
            "counter" | "gauge" | "histogram" => {}
            "summary" => {
                self.note(&join(path, "type"), format!("summary metric {full} is not supported by pilotfish; dropped — declare it as a histogram (type = \"histogram\", optional buckets) to keep observing its values"));
                return None;
            }
            other => {
                self.note(&join(path, "type"), format!("\"{other}\" is not a metric type (ContainerPilot rejected it); metric {full} dropped — use counter, gauge or histogram"));
                return None;
            }
        }
        if namespace.is_empty() && subsystem.is_empty() {
            self.note(&join(path, "name"), format!("ContainerPilot never matched `-putmetric {name}=…` for a metric without namespace and subsystem (bug #569), so it stayed 0; pilotfish updates it"));
        }
        Some(RawMetric {
            name: full,
            kind,
            help,
            buckets: None,
        })
    }

    fn watches(&mut self, v: &J) -> Vec<RawWatch> {
        let J::Arr(items) = v else {
            self.note(
                "watches",
                format!("expected an array, found {}; dropped", v.kind()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, w) in items.iter().enumerate() {
            let path = format!("watches[{i}]");
            let Some(o) = self.object(&path, w) else {
                continue;
            };
            let f = self.fields(&path, o, &["name", "interval", "tag", "dc"], false);
            let name = f
                .get("name")
                .and_then(|v| self.string(&join(&path, "name"), v));
            let Some(name) = self.require(&path, "watch", "name", name) else {
                continue;
            };
            let interval = f
                .get("interval")
                .and_then(|v| self.seconds(&join(&path, "interval"), v));
            if let Some(iv) = &interval {
                self.note(
                    &join(&path, "interval"),
                    format!("ContainerPilot polled Consul every {iv}; pilotfish uses blocking queries and sees changes at once, so interval is now the minimum time between two change events"),
                );
            } else {
                self.note(&join(&path, "interval"), "absent (ContainerPilot rejected a watch without interval); pilotfish's default (no coalescing) applies");
            }
            let tag = f
                .get("tag")
                .and_then(|v| self.string(&join(&path, "tag"), v));
            let dc = f.get("dc").and_then(|v| self.string(&join(&path, "dc"), v));
            out.push(RawWatch {
                name,
                tag,
                dc,
                interval,
                ..RawWatch::default()
            });
        }
        out
    }

    // --- jobs ----------------------------------------------------------------------

    fn jobs(&mut self, v: &J) -> Vec<RawJob> {
        let J::Arr(items) = v else {
            self.note(
                "jobs",
                format!(
                    "{} is not an array; ContainerPilot silently ignored it, dropped",
                    v.kind()
                ),
            );
            return Vec::new();
        };
        // (index in the ContainerPilot file, job)
        let mut jobs: Vec<(usize, RawJob)> = Vec::new();
        let mut renames: Vec<(String, String)> = Vec::new();
        for (i, j) in items.iter().enumerate() {
            if *j == J::Null {
                continue; // ContainerPilot skipped null elements too.
            }
            let path = format!("jobs[{i}]");
            let Some(o) = self.object(&path, j) else {
                continue;
            };
            let (mut job, original) = self.job(&path, i, o);
            if jobs.iter().any(|(_, other)| other.name == job.name) {
                let mut n = 2;
                while jobs
                    .iter()
                    .any(|(_, o)| o.name == format!("{}-{n}", job.name))
                {
                    n += 1;
                }
                let new = format!("{}-{n}", job.name);
                self.note(
                    &join(&path, "name"),
                    format!("\"{}\" is already used by an earlier job (ContainerPilot allowed duplicates; events from both had the same source); renamed \"{new}\"", job.name),
                );
                job.name = new;
            } else if let Some(old) = original {
                renames.push((old, job.name.clone()));
            }
            jobs.push((i, job));
        }
        // `when.source` naming a job by its ContainerPilot default name follows the rename.
        for (i, job) in &mut jobs {
            let Some(src) = job.when.as_mut().and_then(|w| w.source.as_mut()) else {
                continue;
            };
            if let Some((old, new)) = renames.iter().find(|(old, _)| old == src) {
                self.notes.push(format!(
                    "jobs[{i}].when.source: \"{old}\" became \"{new}\" with the job it names"
                ));
                *src = new.clone();
            }
        }
        jobs.into_iter().map(|(_, job)| job).collect()
    }

    /// What a service registers with, as 2.x services and 3.x jobs both
    /// wrote it: `tags`, `interfaces` and `consul { enableTagOverride,
    /// deregisterCriticalServiceAfter }`.
    fn service_fields(&mut self, path: &str, f: &Fields, job: &mut RawJob) {
        job.tags = f
            .get("tags")
            .map(|v| self.strings(&join(path, "tags"), v))
            .unwrap_or_default();
        job.interfaces = f
            .get("interfaces")
            .and_then(|v| self.string_or_list(&join(path, "interfaces"), v));
        if let Some(v) = f.get("consul") {
            let cp = join(path, "consul");
            if let Some(co) = self.object(&cp, v) {
                let cf = self.fields(
                    &cp,
                    co,
                    &["enableTagOverride", "deregisterCriticalServiceAfter"],
                    false,
                );
                job.enable_tag_override = cf
                    .get("enableTagOverride")
                    .and_then(|v| self.boolean(&join(&cp, "enableTagOverride"), v));
                job.deregister_critical_service_after = cf
                    .get("deregisterCriticalServiceAfter")
                    .and_then(|v| self.duration(&join(&cp, "deregisterCriticalServiceAfter"), v));
            }
        }
    }

    /// One job; also returns ContainerPilot's default name when the job had none.
    fn job(&mut self, path: &str, index: usize, o: &[(String, J)]) -> (RawJob, Option<String>) {
        let f = self.fields(
            path,
            o,
            &[
                "name",
                "exec",
                "logging",
                "when",
                "timeout",
                "stopTimeout",
                "restarts",
                "health",
                "port",
                "initial_status",
                "initialStatus",
                "tags",
                "interfaces",
                "consul",
            ],
            false,
        );
        let mut job = RawJob::default();
        let name = f
            .get("name")
            .and_then(|v| self.string(&join(path, "name"), v))
            .filter(|n| !n.is_empty());
        let exec_path = join(path, "exec");
        let (exec, argv0) = match f.get("exec") {
            Some(v) => self.exec(&exec_path, v),
            None => (None, None),
        };
        job.exec = exec;
        let mut original = None;
        job.name = match name {
            Some(n) => n,
            None => {
                let base = argv0
                    .as_deref()
                    .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
                    .filter(|b| !b.is_empty() && !b.contains('$'));
                match (base, &argv0) {
                    (Some(b), Some(a)) => {
                        self.note(
                            &join(path, "name"),
                            format!("absent; ContainerPilot named the job after its executable \"{a}\"; named it \"{b}\""),
                        );
                        original = Some(a.clone());
                        b
                    }
                    _ => {
                        let n = format!("job-{index}");
                        self.note(
                            &join(path, "name"),
                            format!("absent and no executable to name it after; named it \"{n}\""),
                        );
                        n
                    }
                }
            }
        };
        if job.name == "containerpilot" {
            self.note(&join(path, "name"), "\"containerpilot\" is the name ContainerPilot gave its own telemetry job (always healthy, no health check needed); pilotfish gives it no special meaning — rename the job or give it a health check");
        }
        if let Some(v) = f.get("logging") {
            let lp = join(path, "logging");
            if let Some(lo) = self.object(&lp, v) {
                let lf = self.fields(&lp, lo, &["raw"], false);
                let raw = lf
                    .get("raw")
                    .and_then(|v| self.boolean(&join(&lp, "raw"), v));
                job.logging = Some(RawJobLogging { raw });
            }
        }
        let mut periodic = None;
        let mut each = false;
        if let Some(v) = f.get("when") {
            let (when, interval, is_each) = self.when(&join(path, "when"), v);
            job.when = when;
            periodic = interval;
            each = is_each;
        }
        job.timeout = f
            .get("timeout")
            .and_then(|v| self.duration(&join(path, "timeout"), v));
        if job.timeout.is_none() {
            // ContainerPilot's default run limit of a periodic job is its interval.
            job.timeout = periodic.clone();
        }
        if let Some(v) = f.get("stopTimeout") {
            let sp = join(path, "stopTimeout");
            job.stop_timeout = self.duration(&sp, v);
            if job.stop_timeout.is_some() {
                self.note(&sp, "converted to stop_timeout, which now works: ContainerPilot's per-job stopTimeout never fired (its stopping job could wait forever); pilotfish waits this long after the stop signal, then SIGKILLs the job, and bounds its preStop job by it");
            }
        }
        if let Some(v) = f.get("restarts") {
            job.restarts = self.restarts(&join(path, "restarts"), v, periodic.is_some(), each);
        }
        if let Some(v) = f.get("health") {
            job.health = self.health(&join(path, "health"), v);
        }
        job.port = f
            .get("port")
            .and_then(|v| self.int_ref(&join(path, "port"), v));
        let status_new = f.get("initial_status");
        let status_old = f.get("initialStatus");
        if status_new.is_some() && status_old.is_some() {
            self.note(
                &join(path, "initialStatus"),
                "ignored: initial_status is also set and wins",
            );
        }
        job.initial_status = match (status_new, status_old) {
            (Some(v), _) => self.string(&join(path, "initial_status"), v),
            (None, Some(v)) => self.string(&join(path, "initialStatus"), v),
            (None, None) => None,
        };
        self.service_fields(path, &f, &mut job);
        if job.port.as_ref().is_some_and(|p| *p != RawInt::Int(0))
            && job.health.is_none()
            && job.name != "containerpilot"
        {
            self.note(&join(path, "health"), "absent although port is set (ContainerPilot refused this: health must be set if 'port' is set); add a health block");
        }
        (job, original)
    }

    /// An exec, and its executable (for the default job name).
    fn exec(&mut self, path: &str, v: &J) -> (Option<StringOrList>, Option<String>) {
        let argv: Vec<String> = match v {
            J::Str(s) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    self.note(
                        path,
                        "empty (ContainerPilot refused it: received zero-length argument); dropped",
                    );
                    return (None, None);
                }
                let pieces = split_spaces(trimmed);
                let argv: Vec<String> = pieces.iter().map(|p| self.text(path, p)).collect();
                if trimmed.contains(REF) {
                    self.note(path, "a variable inside an exec string: ContainerPilot substituted it before splitting on spaces, so a value with spaces became several arguments; pilotfish expands it into one argument");
                }
                let shown = plain(trimmed);
                if argv.iter().any(String::is_empty) {
                    self.note(path, format!("\"{shown}\" contains consecutive spaces, which ContainerPilot passed as empty arguments; kept them in the argv array — remove the \"\" entries if they were not intended"));
                }
                if argv.iter().any(|a| looks_like_shell(a)) {
                    self.note(path, format!("ContainerPilot split \"{shown}\" on spaces into literal arguments (no shell, so pipes, redirections, && and quotes did not work); converted to an argv array, behaviour unchanged — consider shell = true with the string form"));
                }
                argv
            }
            J::Arr(items) => {
                let argv: Vec<String> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| self.string(&format!("{path}[{i}]"), x))
                    .collect();
                if argv.is_empty() {
                    self.note(
                        path,
                        "empty (ContainerPilot refused it: received zero-length argument); dropped",
                    );
                    return (None, None);
                }
                argv
            }
            J::Null => return (None, None),
            other => {
                self.note(
                    path,
                    format!(
                        "expected a string or an array, found {}; dropped",
                        other.kind()
                    ),
                );
                return (None, None);
            }
        };
        let first = argv.first().cloned();
        if first
            .as_deref()
            .is_some_and(|a| a.rsplit('/').next() == Some("containerpilot"))
        {
            self.note(path, "runs the containerpilot binary (e.g. -putmetric, -putenv, -reload); pilotfish replaces it — point this at the equivalent pilotfish command");
        }
        (Some(StringOrList::Many(argv)), first)
    }

    /// Returns the `when`, the interval of a periodic job, and whether it uses `each`.
    fn when(&mut self, path: &str, v: &J) -> (Option<RawWhen>, Option<String>, bool) {
        let Some(o) = self.object(path, v) else {
            return (None, None, false);
        };
        let f = self.fields(
            path,
            o,
            &["interval", "source", "once", "each", "timeout"],
            false,
        );
        let mut w = RawWhen::default();
        let get = |conv: &mut Conv, k: &str| f.get(k).and_then(|v| conv.string(&join(path, k), v));
        if let Some(iv) = f.get("interval") {
            let interval = self.duration(&join(path, "interval"), iv);
            let others: Vec<&str> = ["source", "once", "each", "timeout"]
                .into_iter()
                .filter(|k| f.get(k).is_some())
                .collect();
            if !others.is_empty() {
                let rejected = if f.get("once").is_some() || f.get("each").is_some() {
                    "ContainerPilot rejected interval together with once/each"
                } else {
                    "ContainerPilot silently ignored them next to interval"
                };
                self.note(
                    path,
                    format!(
                        "{} dropped: {rejected}; kept the interval",
                        others.join(", ")
                    ),
                );
            }
            w.interval = interval.clone();
            return (Some(w), interval, false);
        }
        let source = get(self, "source");
        let once = get(self, "once");
        let each = get(self, "each");
        w.timeout = f
            .get("timeout")
            .and_then(|v| self.duration(&join(path, "timeout"), v));
        let signal = source
            .as_deref()
            .filter(|s| *s == "SIGHUP" || *s == "SIGUSR2")
            .map(str::to_string);
        if let Some(sig) = signal {
            if once.is_some() {
                self.note(path, format!("ContainerPilot ran this job on every {sig} even with once; converted to each = \"{sig}\""));
            }
            w.source = Some(sig.clone());
            w.each = Some(sig);
            return (Some(w), None, true);
        }
        if once.is_some() && each.is_some() {
            self.note(
                &join(path, "each"),
                "dropped: once and each are mutually exclusive (ContainerPilot rejected both); kept once",
            );
            return (Some(RawWhen { source, once, ..w }), None, false);
        }
        for (k, ev) in [("once", &once), ("each", &each)] {
            let Some(ev) = ev else { continue };
            let p = join(path, k);
            match ev.as_str() {
                "timerExpired" | "error" | "quit" => self.note(
                    &p,
                    format!("pilotfish has no \"{ev}\" event; kept as written so validation points at it — rewrite this trigger (e.g. when.timeout, exitFailed)"),
                ),
                "shutdown" if k == "once" => self.note(
                    &p,
                    "ContainerPilot never started a job on once: \"shutdown\" (its shutdown handling halted the job first); pilotfish will run it on shutdown",
                ),
                _ => {}
            }
        }
        match (&source, once.is_some() || each.is_some()) {
            (Some(src), false) => self.note(
                path,
                format!("source \"{src}\" without once or each: ContainerPilot never started this job (no error); kept as written so validation points at it — add once or each, or remove the when"),
            ),
            (None, true) => self.note(
                path,
                "once/each without source: ContainerPilot matched nothing, so this job never started; kept as written — add source (\"global\" for startup, shutdown and maintenance events)",
            ),
            _ => {}
        }
        if let Some(src) = &source {
            if src.starts_with("check.") {
                self.note(&join(path, "source"), format!("\"{src}\" (a health check's own events) is not a pilotfish source; kept as written — use the job's healthy/unhealthy events instead"));
            }
        }
        let is_each = each.is_some();
        w.source = source;
        w.once = once;
        w.each = each;
        (Some(w), None, is_each)
    }

    fn restarts(&mut self, path: &str, v: &J, periodic: bool, each: bool) -> Option<RawRestarts> {
        let r = match v {
            J::Str(s) if self.lone_ref(s).is_none() => {
                let t = self.text(path, s);
                match t.trim() {
                    "unlimited" | "never" => RawRestarts::Word(t.trim().to_string()),
                    n => match n.parse::<f64>() {
                        Ok(f) if f >= 0.0 => RawRestarts::Count(f.trunc() as i64),
                        _ => {
                            self.note(path, format!("\"{t}\" is invalid (ContainerPilot accepted positive integers, \"unlimited\" or \"never\"); dropped"));
                            return None;
                        }
                    },
                }
            }
            J::Str(s) => RawRestarts::Word(self.text(path, s)),
            other => {
                let n = self.int(path, other)?;
                if n < 0 {
                    self.note(path, format!("{n} is invalid (ContainerPilot accepted positive integers, \"unlimited\" or \"never\"); dropped"));
                    return None;
                }
                RawRestarts::Count(n)
            }
        };
        if each && r == RawRestarts::Word("unlimited".into()) {
            self.note(path, "\"unlimited\" together with when.each was rejected by ContainerPilot (it could start processes without bound); kept as written");
        }
        let restarts =
            !matches!(&r, RawRestarts::Count(0)) && r != RawRestarts::Word("never".into());
        if restarts && !periodic {
            self.note(path, "ContainerPilot restarted the job immediately after every exit; pilotfish waits with exponential backoff (1s doubling to 30s) — set restart_backoff to change it");
        }
        Some(r)
    }

    fn health(&mut self, path: &str, v: &J) -> Option<RawHealth> {
        let o = self.object(path, v)?;
        let f = self.fields(
            path,
            o,
            &["exec", "interval", "ttl", "timeout", "logging"],
            false,
        );
        let mut h = RawHealth::default();
        if let Some(v) = f.get("exec") {
            h.exec = self.exec(&join(path, "exec"), v).0;
        }
        h.interval = f
            .get("interval")
            .and_then(|v| self.seconds(&join(path, "interval"), v));
        h.ttl = f
            .get("ttl")
            .and_then(|v| self.seconds(&join(path, "ttl"), v));
        h.timeout = f
            .get("timeout")
            .and_then(|v| self.duration(&join(path, "timeout"), v));
        if f.get("logging").is_some() {
            self.note(
                &join(path, "logging"),
                "not supported (pilotfish logs health-check output like job output); dropped",
            );
        }
        self.ttl_above_interval(&join(path, "ttl"), &mut h, "interval");
        Some(h)
    }

    /// A ttl equal to the check interval (`interval`, 2.x's `poll`), which
    /// ContainerPilot accepted, raised just above it; a shorter one noted.
    fn ttl_above_interval(&mut self, path: &str, h: &mut RawHealth, word: &str) {
        let secs = |s: &Option<String>| s.as_deref().and_then(|s| parse_duration(s).ok());
        let (Some(i), Some(t)) = (secs(&h.interval), secs(&h.ttl)) else {
            return;
        };
        let (ttl, interval) = (
            h.ttl.clone().unwrap_or_default(),
            h.interval.clone().unwrap_or_default(),
        );
        if t == i {
            let raised = format_duration(i + i.min(std::time::Duration::from_secs(1)));
            self.note(path, format!("{ttl} equals {word} {interval}, which ContainerPilot accepted but pilotfish refuses (Consul can mark the service critical between two passing checks); raised to \"{raised}\""));
            h.ttl = Some(raised);
        } else if t < i {
            self.note(path, format!("{ttl} is shorter than {word} {interval}, so Consul marks the service critical between two passing checks (pilotfish refuses this); make ttl longer than {word}"));
        }
    }
}

/// ContainerPilot's exec split: single spaces, empty pieces kept; markers stay whole.
fn split_spaces(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            REF | RAW | BARE => depth += 1,
            REF_END | RAW_END | BARE_END => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == ' ' && depth == 0 {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn looks_like_shell(arg: &str) -> bool {
    EXEC_SHELL_WORDS.contains(&arg)
        || arg.contains("$(")
        || arg.contains('`')
        || arg.starts_with(['"', '\''])
        || arg.ends_with(['"', '\''])
        || (arg.starts_with('>') || arg.starts_with("2>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::{expand, Env};
    use crate::config::raw::RawEnabled;

    /// Import, check the TOML round-trips into `RawConfig`, return both.
    fn conv(text: &str) -> (RawConfig, Vec<String>) {
        let out = import_containerpilot(text).expect("import should succeed");
        let raw: RawConfig = toml::from_str(&out.toml).expect("output must parse as RawConfig");
        for n in &out.notes {
            assert!(out.toml.contains(n.as_str()), "header lacks note {n}");
            assert!(!n.contains(is_marker), "marker leaked into note {n}");
        }
        (raw, out.notes)
    }

    fn note<'a>(notes: &'a [String], prefix: &str, needle: &str) -> &'a str {
        notes
            .iter()
            .find(|n| n.starts_with(prefix) && n.contains(needle))
            .unwrap_or_else(|| panic!("no note {prefix}…{needle} in {notes:#?}"))
    }

    fn job(text_job: &str) -> (RawJob, Vec<String>) {
        let (raw, notes) = conv(&format!("{{consul: \"c:8500\", jobs: [{text_job}]}}"));
        let job = raw.jobs.into_iter().next().expect("one job");
        (job, notes)
    }

    fn argv(e: &Option<StringOrList>) -> Vec<String> {
        match e {
            Some(StringOrList::Many(v)) => v.clone(),
            other => panic!("expected argv array, got {other:?}"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // --- template pre-pass ---------------------------------------------------------

    #[test]
    fn variable_forms_become_references() {
        let (j, notes) = job(
            r#"{name: "a", exec: ["{{ .A }}", "{{ .B | default "x" }}", "{{ default "y z" .C }}", "{{ env "D" }}", "{{env "E" | default "e"}}", "{{ default "f" (env "F") }}"]}"#,
        );
        assert_eq!(
            argv(&j.exec),
            ["${A}", "${B:-x}", "${C:-y z}", "${D}", "${E:-e}", "${F:-f}"]
        );
        let n = note(&notes, "template:", "refuses to start");
        assert!(n.contains("A, D"), "{n}");
        assert!(!n.contains('B'), "{n}");
    }

    #[test]
    fn trim_markers_trim_like_go() {
        let (j, _) = job("{name: \"a\", exec: [\"x  {{- .A -}}  y\"]}");
        assert_eq!(argv(&j.exec), ["x${A}y"]);
        let (raw, _) = conv("{\n  consul: \"c:1\",\n  {{- /* gone */ -}}\n  stopTimeout: 3 }");
        assert_eq!(raw.stop_timeout.as_deref(), Some("3s"));
    }

    #[test]
    fn literal_dollars_are_escaped_but_generated_references_are_not() {
        let (j, _) = job(
            r#"{name: "a", exec: ["/bin/sh", "-c", "echo ${HOME} $$ $PATH cost$", "${{ .X }}", "{{ .X }}${Y}"]}"#,
        );
        let args = argv(&j.exec);
        assert_eq!(args[2], "echo $${HOME} $$$$ $PATH cost$");
        // pilotfish's expansion gives back exactly what ContainerPilot passed.
        let e = env(&[("X", "v"), ("HOME", "/root")]);
        assert_eq!(
            expand(&args[2], &e).expect("expands"),
            "echo ${HOME} $$ $PATH cost$"
        );
        assert_eq!(expand(&args[3], &e).expect("expands"), "$v");
        assert_eq!(expand(&args[4], &e).expect("expands"), "v${Y}");
    }

    #[test]
    fn every_if_branch_becomes_an_enabled_job() {
        let text = "{\n consul: \"c:1\",\n jobs: [{\n name: \"a\",\n {{ if .DEV }}exec: \"dev\",\n{{ else }}exec: \"prod\",{{ end }}\n }, {\n name: \"b\", exec: \"{{ if not .X }}yes{{ else }}no{{ end }}\" }]}";
        let (raw, notes) = conv(text);
        let shown: Vec<(String, Vec<String>, Option<RawEnabled>)> = raw
            .jobs
            .iter()
            .map(|j| (j.name.clone(), argv(&j.exec), j.enabled.clone()))
            .collect();
        let on = |s: &str| Some(RawEnabled::One(s.to_string()));
        assert_eq!(
            shown,
            [
                ("a".into(), vec!["prod".to_string()], on("${DEV:-} == ''")),
                ("a".into(), vec!["dev".to_string()], on("${DEV:-} != ''")),
                ("b".into(), vec!["yes".to_string()], on("${X:-} == ''")),
                ("b".into(), vec!["no".to_string()], on("${X:-} != ''")),
            ]
        );
        note(
            &notes,
            "template:",
            "read DEV, X; every branch was converted",
        );
        assert!(
            !notes.iter().any(|n| n.contains("kept the branch")),
            "{notes:#?}"
        );
        // What runs follows the environment.
        for (dev, expect) in [(None, "prod"), (Some("1"), "dev")] {
            let vars: Vec<(&str, &str)> = dev.map(|d| ("DEV", d)).into_iter().collect();
            let cfg = crate::config::validate::validate(raw.clone(), &env(&vars)).expect("valid");
            assert_eq!(
                cfg.jobs[0].exec.as_ref().map(|e| e.argv.clone()),
                Some(vec![expect.to_string()])
            );
            assert_eq!(cfg.jobs.len(), 2);
        }
    }

    #[test]
    fn undecidable_condition_keeps_else_branch() {
        let (j, notes) =
            job(r#"{name: "a", exec: "{{ if gt (len .X) 3 }}long{{ else }}short{{ end }}"}"#);
        assert_eq!(argv(&j.exec), ["short"]);
        note(&notes, "template line 1:", "cannot be evaluated");
    }

    #[test]
    fn if_var_then_var_else_text_is_a_default() {
        let (raw, notes) = conv(
            r#"{consul: "{{ if .CONSUL }}{{ .CONSUL }}{{ else }}consul{{ end }}:8500", stopTimeout: {{ if .T }}{{ .T }}{{ else }}9{{ end }} }"#,
        );
        assert_eq!(
            raw.consul.and_then(|c| c.address).as_deref(),
            Some("http://${CONSUL:-consul}:8500")
        );
        // A bare number is seconds in pilotfish, so the reference keeps working.
        assert_eq!(raw.stop_timeout.as_deref(), Some("${T:-9}"));
        assert!(
            !notes.iter().any(|n| n.contains("conditionals")),
            "{notes:#?}"
        );
    }

    #[test]
    fn range_body_is_dropped_with_a_note() {
        let text = "{consul: \"c:1\", jobs: [\n{{ range $i := loop 0 3 }}{ name: \"j{{ $i }}\", exec: \"x\" },{{ end }}\n{ name: \"kept\", exec: \"y\" }]}";
        let (raw, notes) = conv(text);
        assert_eq!(raw.jobs.len(), 1);
        assert_eq!(raw.jobs[0].name, "kept");
        note(&notes, "template line 2:", "no loops");
    }

    #[test]
    fn unconvertible_action_in_a_string_is_kept_literally_with_its_key_path() {
        let (j, notes) = job(r#"{name: "a", exec: ["echo", "{{ printf "%s-%s" .A .B }}"]}"#);
        assert_eq!(argv(&j.exec)[1], r#"{{ printf "%s-%s" .A .B }}"#);
        note(&notes, "jobs[0].exec[1]: template line 1:", "printf");
    }

    #[test]
    fn escaped_braces_become_literal_text() {
        let (j, _) = job(r#"{name: "a", exec: ["ct", "-t", "{{"{{"}} key \"x\" }}"]}"#);
        assert_eq!(argv(&j.exec)[2], "{{ key \"x\" }}");
    }

    #[test]
    fn bare_variable_in_number_stays_a_reference() {
        let (j, notes) = job("{name: \"a\", exec: \"x\", port: {{ .PORT | default 8080 }}, health: {interval: {{ .I | default 10 }}, ttl: 30}}");
        // pilotfish reads a port after expansion: it still follows $PORT.
        assert_eq!(j.port, Some(RawInt::Text("${PORT:-8080}".into())));
        assert_eq!(
            j.health.and_then(|h| h.interval).as_deref(),
            Some("${I:-10}")
        );
        assert!(!notes.iter().any(|n| n.starts_with("jobs[0].port")));
        note(
            &notes,
            "jobs[0].health.interval: template line 1:",
            "outside a string",
        );
        let (j, _) = job("{name: \"a\", exec: \"x\", port: {{ .PORT }}}");
        assert_eq!(j.port, Some(RawInt::Text("${PORT}".into())));
    }

    #[test]
    fn go_comments_vanish_and_json5_comments_survive_actions() {
        let (raw, notes) = conv(
            "{ // {{ .IGNORED }} and {{ printf \"x\" }} in a comment\n /* {{ .B }} */ {{/* a go comment */}} consul: \"c:1\" }",
        );
        assert_eq!(
            raw.consul.and_then(|c| c.address).as_deref(),
            Some("http://c:1")
        );
        assert!(notes.is_empty(), "{notes:#?}");
    }

    #[test]
    fn template_errors_name_the_line() {
        let err = import_containerpilot("{\n consul: \"{{ .X \"\n}").expect_err("unclosed");
        assert!(
            matches!(err, ImportError::Template { line: 2, .. }),
            "{err}"
        );
        let err = import_containerpilot("{\n\n {{ if .X }} consul: \"a\" }").expect_err("no end");
        assert!(
            matches!(err, ImportError::Template { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("{{ end }}"), "{err}");
        let err = import_containerpilot("{ {{ end }} }").expect_err("stray end");
        assert!(err.to_string().contains("never opened"), "{err}");
    }

    #[test]
    fn json5_errors_keep_the_file_line_after_dropped_branches() {
        let text = "{\n consul: \"c:1\",\n {{ if .A }}\n stopTimeout: 1,\n stopTimeout: 2,\n {{ end }}\n jobs: [ oops ]\n}";
        match import_containerpilot(text) {
            Err(ImportError::Syntax { line, column, .. }) => {
                assert_eq!((line, column), (7, 10));
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn structural_errors() {
        let err = import_containerpilot("[1, 2]").expect_err("array");
        assert!(matches!(
            err,
            ImportError::NotAnObject { found: "an array" }
        ));
        let err = import_containerpilot("{a: \"\u{E001}\"}").expect_err("marker");
        assert!(matches!(
            err,
            ImportError::ReservedCharacter {
                line: 1,
                code: 0xE001
            }
        ));
        let err = import_containerpilot("{consul: \"a\",,}").expect_err("syntax");
        assert!(
            err.to_string().starts_with("JSON5 syntax error at line 1:"),
            "{err}"
        );
    }

    // --- top level -----------------------------------------------------------------

    #[test]
    fn consul_string_and_object_forms() {
        let (raw, notes) = conv(r#"{consul: "localhost:8500"}"#);
        assert_eq!(
            raw.consul.and_then(|c| c.address).as_deref(),
            Some("http://localhost:8500")
        );
        assert!(notes.is_empty(), "{notes:#?}");
        let (raw, notes) = conv(r#"{consul: "https://consul:8501"}"#);
        assert_eq!(
            raw.consul.and_then(|c| c.address).as_deref(),
            Some("https://consul:8501")
        );
        note(&notes, "consul:", "pilotfish verifies it by default");

        let (raw, notes) = conv(
            r#"{consul: {address: "consul:8501", scheme: "HTTPS", token: "t", tls: {cafile: "/ca", capath: "/cas", clientcert: "/c", clientkey: "/k", servername: "consul.local"}}}"#,
        );
        let c = raw.consul.expect("consul");
        assert_eq!(c.address.as_deref(), Some("https://consul:8501"));
        assert_eq!(c.token.as_deref(), Some("t"));
        let tls = c.tls.expect("tls");
        assert_eq!(tls.ca_file.as_deref(), Some("/ca"));
        assert_eq!(tls.cert_file.as_deref(), Some("/c"));
        assert_eq!(tls.key_file.as_deref(), Some("/k"));
        assert_eq!(tls.server_name.as_deref(), Some("consul.local"));
        assert_eq!(tls.verify, None);
        note(&notes, "consul.tls.verify:", "verifies it by default");
        note(&notes, "consul.tls.capath:", "not supported");

        let (raw, notes) = conv(r#"{consul: {address: "c:1", tls: {verify: "true"}}}"#);
        assert_eq!(
            raw.consul.and_then(|c| c.tls).and_then(|t| t.verify),
            Some(true)
        );
        assert!(notes.is_empty(), "{notes:#?}");

        let (raw, notes) = conv("{}");
        assert!(raw.consul.is_none());
        note(&notes, "consul:", "no discovery backend defined");
    }

    #[test]
    fn logging_mapping() {
        let (raw, notes) = conv(
            r#"{consul: "c:1", logging: {level: "WARNING", format: "default", output: "/var/log/cp.log"}}"#,
        );
        let l = raw.logging.expect("logging");
        assert_eq!(l.level.as_deref(), Some("warn"));
        assert_eq!(l.format.as_deref(), Some("text"));
        note(&notes, "logging.format:", "Go-log");
        note(&notes, "logging.output:", "cannot log to a file");
        assert_eq!(l.output.as_deref(), Some("stdout"));
        let (raw, notes) =
            conv(r#"{consul: "c:1", logging: {level: "FATAL", format: "JSON", output: "stdout"}}"#);
        let l = raw.logging.expect("logging");
        assert_eq!(
            (l.level.as_deref(), l.format.as_deref()),
            (Some("error"), Some("json"))
        );
        note(&notes, "logging.level:", "FATAL");
        assert!(!notes.iter().any(|n| n.starts_with("logging.output")));
    }

    #[test]
    fn stop_timeout_and_control() {
        let (raw, notes) =
            conv(r#"{consul: "c:1", stopTimeout: "12", control: {socket: "/tmp/s.sock"}}"#);
        assert_eq!(raw.stop_timeout.as_deref(), Some("12s"));
        assert_eq!(
            raw.control.and_then(|c| c.socket).as_deref(),
            Some("/tmp/s.sock")
        );
        note(&notes, "stopTimeout:", "always slept");
        let (raw, _) = conv(r#"{consul: "c:1", stopTimeout: 0}"#);
        assert_eq!(raw.stop_timeout.as_deref(), Some("5s"));
        let (raw, notes) = conv(r#"{consul: "c:1", stopTimeout: -1}"#);
        assert_eq!(raw.stop_timeout, None);
        note(&notes, "stopTimeout:", "dropped");
    }

    #[test]
    fn telemetry_metrics() {
        let (raw, notes) = conv(
            r#"{consul: "c:1", telemetry: {port: "9090", interfaces: "eth0", tags: "t", metrics: [
                {namespace: "app", subsystem: "", name: "reqs", help: "h", type: "counter"},
                {namespace: "app", subsystem: "db", name: "lat", help: "h", type: "summary"},
                {name: "lonely", help: "h", type: "Gauge"},
                {name: "bad", help: "h", type: "meter"}]}}"#,
        );
        let t = raw.telemetry.expect("telemetry");
        assert_eq!(t.port, Some(RawInt::Int(9090)));
        assert_eq!(t.interfaces, Some(StringOrList::One("eth0".into())));
        assert_eq!(t.tags, ["t"]);
        let names: Vec<(&str, &str)> = t
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.kind.as_str()))
            .collect();
        assert_eq!(names, [("app_reqs", "counter"), ("lonely", "gauge")]);
        note(&notes, "telemetry.metrics[1].type:", "app_db_lat");
        note(&notes, "telemetry.metrics[1].type:", "histogram");
        note(&notes, "telemetry.metrics[2].name:", "#569");
        note(&notes, "telemetry.metrics[3].type:", "\"meter\"");
    }

    #[test]
    fn unknown_keys_are_noted_with_suggestions() {
        let (raw, notes) = conv(
            r#"{consul: "c:1", job: [], jobs: [{name: "a", exec: "x", restart: "never", health: {exec: "c", interval: 1, tll: 5}}]}"#,
        );
        assert_eq!(raw.jobs.len(), 1);
        note(&notes, "job:", "did you mean 'jobs'");
        note(&notes, "jobs[0].restart:", "did you mean 'restarts'");
        note(&notes, "jobs[0].health.tll:", "did you mean 'ttl'");
    }

    #[test]
    fn watches_mapping() {
        let (raw, notes) = conv(
            r#"{consul: "c:1", watches: [{name: "db", interval: 10, tag: "primary", dc: "dc2"}, {interval: 3}]}"#,
        );
        assert_eq!(raw.watches.len(), 1);
        let w = &raw.watches[0];
        assert_eq!(w.name, "db");
        assert_eq!(w.service, None);
        assert_eq!(w.interval.as_deref(), Some("10s"));
        assert_eq!(
            (w.tag.as_deref(), w.dc.as_deref()),
            (Some("primary"), Some("dc2"))
        );
        note(&notes, "watches[0].interval:", "blocking queries");
        note(&notes, "watches[1]:", "no name");
    }

    // --- jobs ----------------------------------------------------------------------

    #[test]
    fn exec_string_is_split_like_containerpilot() {
        let (j, notes) = job(r#"{name: "a", exec: "  /bin/app  --flag x\ty  "}"#);
        assert_eq!(argv(&j.exec), ["/bin/app", "", "--flag", "x\ty"]);
        note(&notes, "jobs[0].exec:", "empty arguments");
        let (j, notes) = job(
            r#"{name: "a", exec: "x", health: {exec: "consul info | grep leader", interval: 5, ttl: 10}}"#,
        );
        let h = j.health.expect("health");
        assert_eq!(argv(&h.exec), ["consul", "info", "|", "grep", "leader"]);
        let n = note(
            &notes,
            "jobs[0].health.exec:",
            "ContainerPilot split \"consul info | grep leader\"",
        );
        assert!(n.contains("consider shell = true"), "{n}");
        let (j, notes) = job(r#"{name: "a", exec: ["/bin/app", 1, true]}"#);
        assert_eq!(argv(&j.exec), ["/bin/app", "1", "true"]);
        assert!(notes.is_empty(), "{notes:#?}");
        let (j, notes) = job(r#"{name: "a", exec: "  "}"#);
        assert_eq!(j.exec, None);
        note(&notes, "jobs[0].exec:", "zero-length");
    }

    #[test]
    fn default_names_and_duplicates() {
        let (raw, notes) = conv(
            r#"{consul: "c:1", jobs: [
                {exec: "/usr/local/bin/worker --x"},
                {name: "after", exec: "y", when: {source: "/usr/local/bin/worker", once: "exitSuccess"}},
                {name: "after", exec: "z"},
                null,
                {port: 80, interfaces: "eth0"}]}"#,
        );
        let names: Vec<&str> = raw.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["worker", "after", "after-2", "job-4"]);
        assert_eq!(
            raw.jobs[1].when.as_ref().and_then(|w| w.source.as_deref()),
            Some("worker")
        );
        note(&notes, "jobs[0].name:", "\"/usr/local/bin/worker\"");
        note(&notes, "jobs[1].when.source:", "became \"worker\"");
        note(&notes, "jobs[2].name:", "renamed \"after-2\"");
        note(&notes, "jobs[4].health:", "health must be set");
    }

    #[test]
    fn when_forms() {
        let (j, notes) = job(r#"{name: "a", exec: "x", when: {interval: 5}}"#);
        let w = j.when.expect("when");
        assert_eq!(w.interval.as_deref(), Some("5s"));
        assert_eq!(
            j.timeout.as_deref(),
            Some("5s"),
            "ContainerPilot's default timeout"
        );
        assert!(notes.is_empty(), "{notes:#?}");

        let (j, _) = job(r#"{name: "a", exec: "x", timeout: "500ms", when: {interval: "1m"}}"#);
        assert_eq!(j.timeout.as_deref(), Some("500ms"));

        let (j, notes) =
            job(r#"{name: "a", exec: "x", when: {interval: "10", once: "startup", timeout: 3}}"#);
        let w = j.when.expect("when");
        assert_eq!(
            (w.interval.as_deref(), w.once, w.timeout),
            (Some("10s"), None, None)
        );
        note(
            &notes,
            "jobs[0].when:",
            "rejected interval together with once/each",
        );

        let (j, notes) = job(
            r#"{name: "a", exec: "x", when: {source: "global", each: "enterMaintenance", timeout: "1m"}}"#,
        );
        let w = j.when.expect("when");
        assert_eq!(w.source.as_deref(), Some("global"));
        assert_eq!(w.each.as_deref(), Some("enterMaintenance"));
        assert_eq!(w.timeout.as_deref(), Some("1m"));
        assert!(notes.is_empty(), "{notes:#?}");

        let (j, notes) =
            job(r#"{name: "a", exec: "x", when: {source: "SIGUSR2", once: "SIGUSR2"}}"#);
        let w = j.when.expect("when");
        assert_eq!(
            (w.source.as_deref(), w.each.as_deref(), w.once),
            (Some("SIGUSR2"), Some("SIGUSR2"), None)
        );
        note(&notes, "jobs[0].when:", "every SIGUSR2");

        let (_, notes) = job(r#"{name: "a", exec: "x", when: {source: "b"}}"#);
        note(&notes, "jobs[0].when:", "never started this job");
        let (_, notes) =
            job(r#"{name: "a", exec: "x", when: {source: "b", once: "timerExpired"}}"#);
        note(&notes, "jobs[0].when.once:", "no \"timerExpired\" event");
        let (_, notes) =
            job(r#"{name: "a", exec: "x", when: {source: "global", once: "shutdown"}}"#);
        note(&notes, "jobs[0].when.once:", "never started");
    }

    #[test]
    fn restarts_forms() {
        let r = |v: &str| job(&format!("{{name: \"a\", exec: \"x\", restarts: {v}}}"));
        assert_eq!(r("\"5\"").0.restarts, Some(RawRestarts::Count(5)));
        assert_eq!(r("2.7").0.restarts, Some(RawRestarts::Count(2)));
        assert_eq!(
            r("\"never\"").0.restarts,
            Some(RawRestarts::Word("never".into()))
        );
        assert!(r("\"never\"").1.is_empty());
        assert!(r("0").1.is_empty());
        let (j, notes) = r("\"unlimited\"");
        assert_eq!(j.restarts, Some(RawRestarts::Word("unlimited".into())));
        note(&notes, "jobs[0].restarts:", "exponential backoff");
        let (j, notes) = r("-1");
        assert_eq!(j.restarts, None);
        note(&notes, "jobs[0].restarts:", "invalid");
        let (j, notes) = r("\"often\"");
        assert_eq!(j.restarts, None);
        note(&notes, "jobs[0].restarts:", "\"often\" is invalid");
        let (_, notes) = job(
            r#"{name: "a", exec: "x", restarts: "unlimited", when: {source: "w", each: "changed"}}"#,
        );
        note(&notes, "jobs[0].restarts:", "when.each");
        let (_, notes) = job(r#"{name: "a", exec: "x", restarts: 3, when: {interval: 1}}"#);
        assert!(
            notes.is_empty(),
            "periodic jobs do not restart on exit: {notes:#?}"
        );
    }

    #[test]
    fn service_fields() {
        let (j, notes) = job(
            r#"{Name: "web", EXEC: "srv", port: "8080", initial_status: "passing", initialStatus: "critical",
                tags: ["a", "b"], interfaces: ["eth0", "inet"], stopTimeout: 10, timeout: "1h30m",
                health: {exec: ["check"], interval: 10, ttl: "30s", timeout: "2s", logging: {raw: true}},
                consul: {enableTagOverride: "true", deregisterCriticalServiceAfter: "90m"},
                logging: {raw: "1"}}"#,
        );
        assert_eq!(j.name, "web");
        assert_eq!(argv(&j.exec), ["srv"]);
        assert_eq!(j.port, Some(RawInt::Int(8080)));
        assert_eq!(j.initial_status.as_deref(), Some("passing"));
        assert_eq!(j.tags, ["a", "b"]);
        assert_eq!(
            j.interfaces,
            Some(StringOrList::Many(vec!["eth0".into(), "inet".into()]))
        );
        assert_eq!(j.stop_timeout.as_deref(), Some("10s"));
        assert_eq!(j.timeout.as_deref(), Some("1h30m"));
        assert_eq!(j.enable_tag_override, Some(true));
        assert_eq!(j.deregister_critical_service_after.as_deref(), Some("90m"));
        assert_eq!(j.logging.and_then(|l| l.raw), Some(true));
        let h = j.health.expect("health");
        assert_eq!(
            (
                h.interval.as_deref(),
                h.ttl.as_deref(),
                h.timeout.as_deref()
            ),
            (Some("10s"), Some("30s"), Some("2s"))
        );
        note(
            &notes,
            "jobs[0].initialStatus:",
            "initial_status is also set",
        );
        note(&notes, "jobs[0].stopTimeout:", "never fired");
        note(&notes, "jobs[0].health.ttl:", "accepted only whole seconds");
        note(&notes, "jobs[0].health.logging:", "not supported");

        let (j, notes) =
            job(r#"{name: "a", exec: "x", port: 1, health: {exec: "c", interval: 10, ttl: 10}}"#);
        note(&notes, "jobs[0].health.ttl:", "equals interval 10s");
        assert_eq!(
            j.health.as_ref().and_then(|h| h.ttl.as_deref()),
            Some("11s")
        );
        let (_, notes) = job(r#"{name: "containerpilot", port: 9090}"#);
        note(&notes, "jobs[0].name:", "telemetry job");
        assert!(!notes.iter().any(|n| n.contains("health must be set")));
        let (_, notes) =
            job(r#"{name: "s", exec: "/usr/local/bin/containerpilot -putmetric m=1"}"#);
        note(&notes, "jobs[0].exec:", "containerpilot binary");
    }

    #[test]
    fn header_lists_every_note() {
        let out = import_containerpilot(r#"{consul: "c:1", bogus: 1}"#).expect("import");
        assert_eq!(out.notes.len(), 1);
        assert!(out
            .toml
            .starts_with("# Converted from a ContainerPilot 3.x configuration"));
        assert!(out.toml.contains("# 1 note(s)"));
        assert!(out.toml.contains(&format!("#  - {}\n", out.notes[0])));
        let clean = import_containerpilot(r#"{consul: "c:1"}"#).expect("import");
        assert!(clean.notes.is_empty());
        assert!(clean
            .toml
            .contains("# Nothing was dropped and no meaning changed."));
    }
}
