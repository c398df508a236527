//! The template language: handlebars with consul-template's function set as
//! helpers that return values (so they compose with `#each`, `#if`, `with`
//! and each other), rendering against a `Brain` of dependency data. A render
//! records every dependency it read and which of them had no answer yet; the
//! caller starts watches for those and renders again when they answer
//! (consul-template's multi-pass rendering).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::{Map, Value};

use super::deps::Dep;

/// Dependency data by query; a present entry has answered at least once.
pub type Brain = HashMap<Dep, Arc<Value>>;

/// What one render produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The output, or the error (line and column, the helper's complaint).
    pub text: Result<String, String>,
    /// Every dependency the render read.
    pub deps: BTreeSet<Dep>,
    /// The ones without an answer yet: the text is incomplete.
    pub missing: BTreeSet<Dep>,
    /// Per service name, the most instances any `service` call returned.
    pub counts: BTreeMap<String, usize>,
}

#[derive(Default)]
struct Scope {
    brain: Arc<Brain>,
    deps: BTreeSet<Dep>,
    missing: BTreeSet<Dep>,
    counts: BTreeMap<String, usize>,
}

/// Parse a template as the watcher would; the error names line and column.
pub fn check_syntax(text: &str) -> Result<(), String> {
    Handlebars::new()
        .register_template_string("t", text)
        .map_err(|e| syntax_error(&e))
}

fn syntax_error(e: &handlebars::TemplateError) -> String {
    let reason = e.reason().to_string();
    // The parser's own text lists every token it expected; the first line says what went wrong.
    let reason = reason.lines().next().unwrap_or_default();
    match e.pos() {
        Some((l, c)) => {
            format!("is not a valid handlebars template: line {l}, column {c}: {reason}")
        }
        None => format!("is not a valid handlebars template: {reason}"),
    }
}

/// A handlebars registry holding every template, with pilotfish's helpers.
pub struct Engine {
    hb: Handlebars<'static>,
    scope: Arc<Mutex<Scope>>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        let mut hb = Handlebars::new();
        // Config files, not HTML: nothing is escaped.
        hb.register_escape_fn(handlebars::no_escape);
        let scope = Arc::new(Mutex::new(Scope::default()));
        for kind in Kind::ALL {
            hb.register_helper(
                kind.name(),
                Box::new(Func {
                    kind: *kind,
                    scope: Arc::clone(&scope),
                }),
            );
        }
        Engine { hb, scope }
    }

    pub fn add(&mut self, name: &str, text: &str) -> Result<(), String> {
        self.hb
            .register_template_string(name, text)
            .map_err(|e| syntax_error(&e))
    }

    /// Render `name` against `brain`. The context is empty: every value
    /// comes from helpers. The queries read are recorded even when the
    /// render fails: an error may be the fault of data not there yet.
    pub fn render(&self, name: &str, brain: &Arc<Brain>) -> Rendered {
        {
            let mut s = lock(&self.scope);
            s.brain = Arc::clone(brain);
            s.deps.clear();
            s.missing.clear();
            s.counts.clear();
        }
        let out = self.hb.render(name, &Value::Object(Map::new()));
        let mut s = lock(&self.scope);
        // Drop the brain so the caller's next update need not copy it.
        s.brain = Arc::default();
        Rendered {
            text: out.map_err(|e| render_error(&e)),
            deps: std::mem::take(&mut s.deps),
            missing: std::mem::take(&mut s.missing),
            counts: std::mem::take(&mut s.counts),
        }
    }
}

fn lock(m: &Mutex<Scope>) -> std::sync::MutexGuard<'_, Scope> {
    // A panic inside a helper leaves nothing half-written that matters.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn render_error(e: &RenderError) -> String {
    match (e.line_no, e.column_no) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: {}", e.reason()),
        _ => e.reason().to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Services,
    Key,
    KeyOrDefault,
    KeyExists,
    Ls,
    Tree,
    Node,
    Nodes,
    Env,
    ByTag,
    Contains,
    In,
    Join,
    Split,
    Replace,
    ToLower,
    ToUpper,
    Trim,
    TrimPrefix,
    TrimSuffix,
    Sanitize,
    ToJson,
    ParseJson,
}

impl Kind {
    const ALL: &'static [Kind] = &[
        Kind::Service,
        Kind::Services,
        Kind::Key,
        Kind::KeyOrDefault,
        Kind::KeyExists,
        Kind::Ls,
        Kind::Tree,
        Kind::Node,
        Kind::Nodes,
        Kind::Env,
        Kind::ByTag,
        Kind::Contains,
        Kind::In,
        Kind::Join,
        Kind::Split,
        Kind::Replace,
        Kind::ToLower,
        Kind::ToUpper,
        Kind::Trim,
        Kind::TrimPrefix,
        Kind::TrimSuffix,
        Kind::Sanitize,
        Kind::ToJson,
        Kind::ParseJson,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Services => "services",
            Kind::Key => "key",
            Kind::KeyOrDefault => "keyOrDefault",
            Kind::KeyExists => "keyExists",
            Kind::Ls => "ls",
            Kind::Tree => "tree",
            Kind::Node => "node",
            Kind::Nodes => "nodes",
            Kind::Env => "env",
            Kind::ByTag => "byTag",
            Kind::Contains => "contains",
            Kind::In => "in",
            Kind::Join => "join",
            Kind::Split => "split",
            Kind::Replace => "replace",
            Kind::ToLower => "toLower",
            Kind::ToUpper => "toUpper",
            Kind::Trim => "trim",
            Kind::TrimPrefix => "trimPrefix",
            Kind::TrimSuffix => "trimSuffix",
            Kind::Sanitize => "sanitize",
            Kind::ToJson => "toJSON",
            Kind::ParseJson => "parseJSON",
        }
    }
}

struct Func {
    kind: Kind,
    scope: Arc<Mutex<Scope>>,
}

fn fail(msg: String) -> RenderError {
    RenderErrorReason::NestedError(msg.into()).into()
}

/// Positional parameter `i` as a string.
fn text_arg(h: &Helper, i: usize) -> Result<String, RenderError> {
    let name = h.name().to_string();
    match h.param(i).map(|p| p.value()) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(Value::Null) | None => Err(fail(format!(
            "{name}: argument {} is missing (a string is expected)",
            i + 1
        ))),
        Some(other) => Err(fail(format!(
            "{name}: argument {} must be a string, not {other}",
            i + 1
        ))),
    }
}

fn hash_text(h: &Helper, key: &str) -> Option<String> {
    match h.hash_get(key).map(|p| p.value()) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(v) => Some(v.to_string()),
    }
}

/// A string, or every element of an array, for list-taking helpers.
fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// A status filter as consul-template spells it: `passing` (default),
/// `any`, or a comma-separated list of passing, warning, critical, maintenance.
fn status_filter(text: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(text) = text else { return Ok(None) };
    let mut out = Vec::new();
    for part in text
        .split([',', '|'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part {
            "any" => return Ok(Some(Vec::new())),
            "passing" | "warning" | "critical" | "maintenance" => out.push(part.to_string()),
            other => {
                return Err(format!(
                "'{other}' is not a status filter (use any, passing, warning, critical, maintenance, or several joined by commas)"
            ))
            }
        }
    }
    if out == ["passing"] {
        return Ok(None);
    }
    Ok(Some(out))
}

impl Func {
    /// Read a dependency: its data, or null after recording it as missing.
    fn read(&self, dep: Dep) -> Value {
        let mut s = lock(&self.scope);
        let v = match s.brain.get(&dep) {
            Some(v) => Value::clone(v),
            None => {
                s.missing.insert(dep.clone());
                Value::Null
            }
        };
        s.deps.insert(dep);
        v
    }

    fn call(&self, h: &Helper) -> Result<Value, RenderError> {
        let name = h.name().to_string();
        Ok(match self.kind {
            Kind::Service => {
                let svc = text_arg(h, 0)?;
                let filter_text = match h.param(1) {
                    Some(_) => Some(text_arg(h, 1)?),
                    None => hash_text(h, "status"),
                };
                let filter = status_filter(filter_text.as_deref())
                    .map_err(|e| fail(format!("{name}: {e}")))?;
                let dep = Dep::Service {
                    name: svc.clone(),
                    tag: hash_text(h, "tag"),
                    dc: hash_text(h, "dc"),
                    passing: filter.is_none(),
                };
                let mut rows = match self.read(dep) {
                    Value::Array(a) => a,
                    _ => Vec::new(),
                };
                if let Some(wanted) = filter.filter(|f| !f.is_empty()) {
                    rows.retain(|r| {
                        r["Status"]
                            .as_str()
                            .is_some_and(|s| wanted.iter().any(|w| w == s))
                    });
                }
                let mut s = lock(&self.scope);
                let c = s.counts.entry(svc).or_insert(0);
                *c = (*c).max(rows.len());
                Value::Array(rows)
            }
            Kind::Services => self.read(Dep::Services {
                dc: hash_text(h, "dc"),
            }),
            Kind::Key => self.read(Dep::Key(text_arg(h, 0)?)),
            Kind::KeyOrDefault => {
                let default = text_arg(h, 1)?;
                match self.read(Dep::Key(text_arg(h, 0)?)) {
                    Value::Null => Value::String(default),
                    v => v,
                }
            }
            Kind::KeyExists => Value::Bool(!self.read(Dep::Key(text_arg(h, 0)?)).is_null()),
            Kind::Ls | Kind::Tree => {
                let prefix = text_arg(h, 0)?;
                let rows = match self.read(Dep::Tree(prefix.clone())) {
                    Value::Array(a) => a,
                    _ => Vec::new(),
                };
                let mut out = Vec::new();
                for r in rows {
                    let key = r["Key"].as_str().unwrap_or_default();
                    let rel = key.strip_prefix(prefix.as_str()).unwrap_or(key);
                    let rel = rel.trim_start_matches('/');
                    // `ls`: direct children only, no folders.
                    if self.kind == Kind::Ls && (rel.is_empty() || rel.contains('/')) {
                        continue;
                    }
                    if rel.is_empty() || rel.ends_with('/') {
                        continue;
                    }
                    out.push(serde_json::json!({"Key": rel, "Value": r["Value"].clone()}));
                }
                Value::Array(out)
            }
            Kind::Node => {
                let node = match h.param(0) {
                    Some(_) => text_arg(h, 0)?,
                    // The agent's own node: its name first, then the node.
                    None => match self.read(Dep::AgentNode) {
                        Value::String(n) => n,
                        _ => return Ok(Value::Null),
                    },
                };
                self.read(Dep::Node(node))
            }
            Kind::Nodes => self.read(Dep::Nodes {
                dc: hash_text(h, "dc"),
            }),
            Kind::Env => {
                // env "NAME" [default]: the default when unset or empty.
                let var = text_arg(h, 0)?;
                let default = match h.param(1) {
                    Some(_) => text_arg(h, 1)?,
                    None => String::new(),
                };
                match std::env::var(&var) {
                    Ok(v) if !v.is_empty() => Value::String(v),
                    _ => Value::String(default),
                }
            }
            Kind::ByTag => {
                let rows = h.param(0).map(|p| p.value().clone()).unwrap_or_default();
                let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                if let Value::Array(rows) = rows {
                    for r in rows {
                        for t in as_list(&r["Tags"]) {
                            by.entry(t).or_default().push(r.clone());
                        }
                    }
                }
                Value::Object(by.into_iter().map(|(k, v)| (k, Value::Array(v))).collect())
            }
            Kind::Contains | Kind::In => {
                // contains HAYSTACK NEEDLE; in NEEDLE HAYSTACK.
                let (hay, needle) = if self.kind == Kind::Contains {
                    (0, 1)
                } else {
                    (1, 0)
                };
                let needle = text_arg(h, needle)?;
                match h.param(hay).map(|p| p.value()) {
                    Some(Value::String(s)) => Value::Bool(s.contains(&needle)),
                    Some(v) => Value::Bool(as_list(v).contains(&needle)),
                    None => Value::Bool(false),
                }
            }
            Kind::Join => {
                let list = h.param(0).map(|p| as_list(p.value())).unwrap_or_default();
                Value::String(list.join(&text_arg(h, 1)?))
            }
            Kind::Split => {
                let s = text_arg(h, 0)?;
                let sep = text_arg(h, 1)?;
                if s.is_empty() {
                    Value::Array(Vec::new())
                } else {
                    Value::Array(
                        s.split(sep.as_str())
                            .map(|p| Value::String(p.into()))
                            .collect(),
                    )
                }
            }
            Kind::Replace => {
                Value::String(text_arg(h, 0)?.replace(&text_arg(h, 1)?, &text_arg(h, 2)?))
            }
            Kind::ToLower => Value::String(text_arg(h, 0)?.to_lowercase()),
            Kind::ToUpper => Value::String(text_arg(h, 0)?.to_uppercase()),
            Kind::Trim => Value::String(text_arg(h, 0)?.trim().to_string()),
            Kind::TrimPrefix => {
                let s = text_arg(h, 0)?;
                let p = text_arg(h, 1)?;
                Value::String(s.strip_prefix(p.as_str()).unwrap_or(&s).to_string())
            }
            Kind::TrimSuffix => {
                let s = text_arg(h, 0)?;
                let p = text_arg(h, 1)?;
                Value::String(s.strip_suffix(p.as_str()).unwrap_or(&s).to_string())
            }
            Kind::Sanitize => Value::String(sanitize(&text_arg(h, 0)?)),
            Kind::ToJson => {
                let v = h.param(0).map(|p| p.value().clone()).unwrap_or_default();
                Value::String(v.to_string())
            }
            Kind::ParseJson => {
                let s = text_arg(h, 0)?;
                if s.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&s)
                        .map_err(|e| fail(format!("parseJSON: not JSON ({e}): {s}")))?
                }
            }
        })
    }
}

/// A name safe as an HAProxy backend/server name and a DNS label: ASCII
/// letters, digits, `-`, `_` and `.`; everything else becomes `_`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl HelperDef for Func {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        self.call(h).map(ScopedJson::Derived)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> Dep {
        Dep::Service {
            name: "web".into(),
            tag: Some("rest".into()),
            dc: None,
            passing: true,
        }
    }

    #[test]
    fn a_render_records_its_queries_and_renders_missing_data_as_empty() {
        let mut e = Engine::new();
        e.add(
            "t",
            r#"{{#each (service "web" tag="rest")}}server {{ID}} {{Address}}:{{Port}}
{{/each}}max {{keyOrDefault "lb/maxconn" "4096"}}"#,
        )
        .unwrap();
        let r = e.render("t", &Arc::default());
        assert_eq!(r.text.unwrap(), "max 4096");
        assert_eq!(r.missing, [web(), Dep::Key("lb/maxconn".into())].into());

        let mut brain = Brain::new();
        brain.insert(
            web(),
            Arc::new(json!([{"ID": "web-1", "Address": "10.0.0.1", "Port": 80, "Status": "passing", "Tags": ["rest"]}])),
        );
        brain.insert(Dep::Key("lb/maxconn".into()), Arc::new(Value::Null));
        let r = e.render("t", &Arc::new(brain));
        assert_eq!(r.text.unwrap(), "server web-1 10.0.0.1:80\nmax 4096");
        assert!(r.missing.is_empty());
        assert_eq!(r.counts["web"], 1);
    }

    #[test]
    fn status_filters_tags_and_string_helpers_compose() {
        let mut e = Engine::new();
        e.add(
            "t",
            r#"{{#each (byTag (service "api" "any"))}}{{@key}}={{#each this}}{{sanitize ID}}{{/each}};{{/each}}{{join (split "a,b" ",") "+"}} {{toUpper "x"}} {{#if (contains (services) "x")}}{{/if}}{{len (service "api" status="critical")}}"#,
        )
        .unwrap();
        let mut brain = Brain::new();
        brain.insert(
            Dep::Service {
                name: "api".into(),
                tag: None,
                dc: None,
                passing: false,
            },
            Arc::new(json!([
                {"ID": "api 1", "Status": "passing", "Tags": ["v1", "blue"]},
                {"ID": "api:2", "Status": "critical", "Tags": ["v1"]},
            ])),
        );
        brain.insert(Dep::Services { dc: None }, Arc::new(json!([])));
        let r = e.render("t", &Arc::new(brain));
        assert_eq!(r.text.unwrap(), "blue=api_1;v1=api_1api_2;a+b X 1");
    }

    #[test]
    fn ls_lists_direct_children_and_tree_everything_below() {
        let mut e = Engine::new();
        e.add(
            "t",
            r#"{{#each (ls "app/")}}{{Key}}={{Value}} {{/each}}| {{#each (tree "app")}}{{Key}} {{/each}}"#,
        )
        .unwrap();
        let mut brain = Brain::new();
        brain.insert(
            Dep::Tree("app/".into()),
            Arc::new(json!([{"Key": "app/a", "Value": "1"}, {"Key": "app/sub/b", "Value": "2"}])),
        );
        brain.insert(
            Dep::Tree("app".into()),
            Arc::new(json!([{"Key": "app/a", "Value": "1"}, {"Key": "app/sub/b", "Value": "2"}])),
        );
        let r = e.render("t", &Arc::new(brain));
        assert_eq!(r.text.unwrap(), "a=1 | a sub/b ");
    }

    #[test]
    fn errors_name_the_helper_and_the_position() {
        let e = check_syntax("a\n{{#each x}}").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let mut e = Engine::new();
        e.add("t", "\n{{service \"web\" \"bogus\"}}").unwrap();
        let err = e.render("t", &Arc::default()).text.unwrap_err();
        assert!(err.contains("'bogus' is not a status filter"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
