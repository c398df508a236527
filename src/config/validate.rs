//! Raw → typed config. Reports every error at once, each with its key path
//! (`jobs[2].health.ttl: ...`), and checks cross-references: `when` sources name
//! real jobs and watches, events fit their source, and no `when` is left that can
//! never fire (unknown source, `source` without `once`/`each`, waiting on a job
//! that can never start, or a cycle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::duration::{format_duration, parse_duration};
use super::env::{expand, Env};
use super::raw::{
    RawCondition, RawConfig, RawEnabled, RawHealth, RawInt, RawJob, RawReload, RawRestarts,
    RawTelemetry, RawTemplate, RawWatch, RawWhen, StringOrList,
};
use super::{
    Backoff, CheckStatus, Condition, Config, ConsulConfig, ControlConfig, Exec, HealthConfig,
    JobConfig, LogFormat, LogOutput, LoggingConfig, MetricDef, MetricKind, Reload, Restarts,
    ServiceConfig, Source, TelemetryConfig, TemplateConfig, TlsConfig, Trigger, WatchConfig,
    WatchTarget, When, DEFAULT_SOCKET, TEMPLATE_WAIT,
};
use crate::events::EventKind;
use crate::interfaces::InterfaceSpec;
use crate::signals::parse_signal;

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_JOB_STOP_TIMEOUT: Duration = Duration::from_secs(5);
const TOP_LEVEL_KEYS: &[&str] = &[
    "consul",
    "stop_timeout",
    "logging",
    "control",
    "telemetry",
    "jobs",
    "watches",
    "templates",
];

/// Every problem found in a config, each with its key path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigErrors {
    pub errors: Vec<(String, String)>,
}

impl ConfigErrors {
    pub fn from_toml(e: toml::de::Error) -> ConfigErrors {
        let mut errs = ConfigErrors::default();
        errs.push("", e.to_string().trim_end());
        errs
    }

    fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push((path.into(), msg.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn messages(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|(path, msg)| {
                if path.is_empty() {
                    msg.clone()
                } else {
                    format!("{path}: {msg}")
                }
            })
            .collect()
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.messages().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Parse config text section by section (so unknown keys in several places are
/// all reported), then validate. Used by `config::load_str`.
pub fn parse_and_validate(text: &str, env: &Env) -> Result<Config, ConfigErrors> {
    parse_and_validate_in(text, env, None)
}

/// As `parse_and_validate`, reading relative template `source`s from `base`
/// (the config file's directory) instead of the working directory.
pub fn parse_and_validate_in(
    text: &str,
    env: &Env,
    base: Option<&std::path::Path>,
) -> Result<Config, ConfigErrors> {
    let table: toml::Table = toml::from_str(text).map_err(ConfigErrors::from_toml)?;
    let mut errs = ConfigErrors::default();
    let mut raw = RawConfig::default();
    let mut broken_jobs = BTreeSet::new();
    for (key, value) in table {
        match key.as_str() {
            "consul" => raw.consul = section(&key, value, &mut errs),
            "stop_timeout" => raw.stop_timeout = section(&key, value, &mut errs),
            "logging" => raw.logging = section(&key, value, &mut errs),
            "control" => raw.control = section(&key, value, &mut errs),
            "telemetry" => raw.telemetry = section(&key, value, &mut errs),
            "jobs" | "watches" | "templates" => {
                let toml::Value::Array(items) = value else {
                    errs.push(&key, format!("must be an array of tables ([[{key}]])"));
                    continue;
                };
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("{key}[{i}]");
                    match key.as_str() {
                        "jobs" => {
                            let name = item.get("name").and_then(|n| n.as_str()).map(String::from);
                            match section::<RawJob>(&path, item, &mut errs) {
                                Some(job) => raw.jobs.push(job),
                                None => {
                                    // Keep the slot so later indexes stay right, and
                                    // remember the name so references to it are not
                                    // reported as a second, misleading error.
                                    broken_jobs.extend(name);
                                    raw.jobs.push(RawJob {
                                        name: String::new(),
                                        ..RawJob::default()
                                    });
                                }
                            }
                        }
                        "watches" => raw
                            .watches
                            .extend(section::<RawWatch>(&path, item, &mut errs)),
                        _ => raw
                            .templates
                            .extend(section::<RawTemplate>(&path, item, &mut errs)),
                    }
                }
            }
            other => errs.push(
                other,
                format!(
                    "unknown key (expected one of: {})",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ),
        }
    }
    // Parse errors are already in `errs`, so `run` cannot return Ok after one.
    Validator {
        env,
        disabled_jobs: BTreeSet::new(),
        disabled_watches: BTreeSet::new(),
        disabled_names: BTreeSet::new(),
        errs,
        broken_jobs,
        base: base.map(std::path::Path::to_path_buf),
    }
    .run(raw)
}

fn section<T: serde::de::DeserializeOwned>(
    path: &str,
    value: toml::Value,
    errs: &mut ConfigErrors,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            errs.push(full, e.into_inner().to_string().trim_end().to_string());
            None
        }
    }
}

/// Validate an already-parsed file.
pub fn validate(raw: RawConfig, env: &Env) -> Result<Config, ConfigErrors> {
    Validator {
        env,
        disabled_jobs: BTreeSet::new(),
        disabled_watches: BTreeSet::new(),
        disabled_names: BTreeSet::new(),
        errs: ConfigErrors::default(),
        broken_jobs: BTreeSet::new(),
        base: None,
    }
    .run(raw)
}

struct Validator<'a> {
    env: &'a Env,
    /// Indexes of jobs and watches whose `enabled` is false for this run,
    /// and the names they had: they do not exist, and naming them is an error.
    disabled_jobs: BTreeSet<usize>,
    disabled_watches: BTreeSet<usize>,
    disabled_names: BTreeSet<String>,
    errs: ConfigErrors,
    /// Names of jobs that failed to parse: references to them are not errors.
    broken_jobs: BTreeSet<String>,
    /// The config file's directory: relative template sources are read from it.
    base: Option<PathBuf>,
}

impl Validator<'_> {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errs.push(path, msg);
    }

    /// Expand `${VAR}` references; on error record it and return None.
    fn string(&mut self, path: &str, s: &str) -> Option<String> {
        match expand(s, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn duration(&mut self, path: &str, s: &str) -> Option<Duration> {
        let s = self.string(path, s)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    /// Expand `${VAR}` references without recording errors (the caller
    /// reports them where the value is validated).
    fn env_free(&self, s: &str) -> Option<String> {
        expand(s, self.env).ok()
    }

    fn positive_duration(&mut self, path: &str, s: &str) -> Option<Duration> {
        let d = self.duration(path, s)?;
        if d < Duration::from_millis(1) {
            self.err(path, format!("'{s}' must be at least 1ms"));
            return None;
        }
        Some(d)
    }

    fn signal(&mut self, path: &str, s: &str) -> Option<Signal> {
        let s = self.string(path, s)?;
        match parse_signal(&s) {
            Ok(sig) => Some(sig),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    /// A whole number given as a number or a string (`"${PORT:-8080}"`),
    /// read after expansion.
    fn int(&mut self, path: &str, v: &RawInt) -> Option<i64> {
        match v {
            RawInt::Int(n) => Some(*n),
            RawInt::Text(t) => {
                let expanded = self.string(path, t)?;
                match expanded.trim().parse::<i64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        let from = if expanded == *t {
                            String::new()
                        } else {
                            format!(" (from \"{t}\")")
                        };
                        self.err(path, format!("\"{expanded}\"{from} is not a whole number"));
                        None
                    }
                }
            }
        }
    }

    fn port(&mut self, path: &str, v: &RawInt) -> Option<u16> {
        let p = self.int(path, v)?;
        match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.err(path, format!("{p} is not a port (use 1-65535)"));
                None
            }
        }
    }

    fn interfaces(&mut self, path: &str, specs: Option<StringOrList>) -> Vec<InterfaceSpec> {
        let specs = specs
            .map(StringOrList::into_vec)
            .unwrap_or_else(|| vec!["eth0:inet".into(), "inet".into()]);
        let mut out = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(s) = self.string(&p, s) else {
                continue;
            };
            match InterfaceSpec::parse(&s) {
                Ok(spec) => out.push(spec),
                Err(e) => self.err(p, e),
            }
        }
        out
    }

    fn exec(&mut self, path: &str, exec: StringOrList, shell: bool) -> Option<Exec> {
        let argv = match exec {
            StringOrList::One(s) => {
                let s = self.string(path, &s)?;
                if s.trim().is_empty() {
                    self.err(path, "must not be empty");
                    return None;
                }
                if shell {
                    vec!["/bin/sh".to_string(), "-c".to_string(), s]
                } else {
                    match shell_words::split(&s) {
                        Ok(v) => v,
                        Err(e) => {
                            self.err(
                                path,
                                format!(
                                    "cannot split '{s}' into arguments: {e} (check the quotes)"
                                ),
                            );
                            return None;
                        }
                    }
                }
            }
            StringOrList::Many(v) => {
                if shell {
                    self.err(
                        path,
                        "shell = true takes exec as one string, not an array (write exec = \"cmd | other\")",
                    );
                    return None;
                }
                // Every argument is expanded, so every unset variable is reported.
                let args: Vec<Option<String>> = v
                    .iter()
                    .enumerate()
                    .map(|(i, a)| self.string(&format!("{path}[{i}]"), a))
                    .collect();
                args.into_iter().collect::<Option<Vec<String>>>()?
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            self.err(path, "must name a program to run");
            return None;
        }
        Some(Exec { argv })
    }

    /// Before anything else: decide `enabled`, and expand the names jobs and
    /// watches are known by (and the `when` sources and reload jobs that name
    /// them), so every later check sees the names this run will use.
    fn resolve(&mut self, raw: &mut RawConfig) {
        for (i, job) in raw.jobs.iter_mut().enumerate() {
            let p = format!("jobs[{i}]");
            let (enabled, name) = self.enabled_and_name(&p, job.enabled.as_ref(), &job.name);
            job.name = name.unwrap_or_default();
            if !enabled {
                self.disabled_jobs.insert(i);
                if !job.name.is_empty() {
                    self.disabled_names.insert(job.name.clone());
                }
                continue;
            }
            if let Some(w) = &mut job.when {
                let wp = format!("{p}.when");
                if let Some(src) = &mut w.source {
                    self.expand_in_place(&format!("{wp}.source"), src);
                }
                for (key, list) in [("all", &mut w.all), ("any", &mut w.any)] {
                    for (k, c) in list.iter_mut().flatten().enumerate() {
                        if let Some(src) = &mut c.source {
                            self.expand_in_place(&format!("{wp}.{key}[{k}].source"), src);
                        }
                    }
                }
            }
        }
        // A name used by an enabled job is not "disabled" (two variants of
        // one job under complementary conditions share it).
        for (i, job) in raw.jobs.iter().enumerate() {
            if !self.disabled_jobs.contains(&i) {
                self.disabled_names.remove(&job.name);
            }
        }
        for (i, w) in raw.watches.iter_mut().enumerate() {
            let p = format!("watches[{i}]");
            let (enabled, name) = self.enabled_and_name(&p, w.enabled.as_ref(), &w.name);
            let Some(name) = name else {
                self.disabled_watches.insert(i);
                continue;
            };
            w.name = name;
            if !enabled {
                self.disabled_watches.insert(i);
                self.disabled_names.insert(format!("watch.{}", w.name));
            }
        }
        for (i, w) in raw.watches.iter().enumerate() {
            if !self.disabled_watches.contains(&i) {
                self.disabled_names.remove(&format!("watch.{}", w.name));
            }
        }
        for (i, t) in raw.templates.iter_mut().enumerate() {
            if let Some(job) = t.reload.as_mut().and_then(|r| r.job.as_mut()) {
                self.expand_in_place(&format!("templates[{i}].reload.job"), job);
            }
        }
    }

    /// Whether the job or watch at `p` runs, and its name expanded (None
    /// when it cannot be). A disabled one does not run, so its unset
    /// variables are not errors (a branch that is off often leaves them
    /// unset).
    fn enabled_and_name(
        &mut self,
        p: &str,
        enabled: Option<&RawEnabled>,
        name: &str,
    ) -> (bool, Option<String>) {
        let enabled = enabled.is_none_or(|e| self.enabled(&format!("{p}.enabled"), e));
        if !name.contains('$') {
            return (enabled, Some(name.to_string()));
        }
        match expand(name, self.env) {
            Ok(n) => (enabled, Some(n)),
            Err(e) => {
                if enabled {
                    self.err(format!("{p}.name"), e);
                }
                (enabled, None)
            }
        }
    }

    fn expand_in_place(&mut self, path: &str, s: &mut String) {
        if s.contains('$') {
            if let Some(v) = self.string(path, s) {
                *s = v;
            }
        }
    }

    /// `enabled` as this run reads it; an unreadable value is an error (and
    /// the job counts as enabled, so its other mistakes are reported too).
    fn enabled(&mut self, path: &str, e: &RawEnabled) -> bool {
        let conditions: Vec<(String, &str)> = match e {
            RawEnabled::Bool(b) => return *b,
            RawEnabled::One(c) => vec![(path.to_string(), c.as_str())],
            RawEnabled::All(cs) => cs
                .iter()
                .enumerate()
                .map(|(k, c)| (format!("{path}[{k}]"), c.as_str()))
                .collect(),
        };
        let mut all = true;
        for (p, c) in conditions {
            match condition_holds(c, self.env) {
                Ok(b) => all &= b,
                Err(msg) => {
                    self.err(p, msg);
                    return true;
                }
            }
        }
        all
    }

    fn run(mut self, mut raw: RawConfig) -> Result<Config, ConfigErrors> {
        self.resolve(&mut raw);
        let consul = raw.consul.map(|c| {
            let address = c
                .address
                .as_deref()
                .and_then(|a| self.string("consul.address", a))
                .unwrap_or_else(|| "127.0.0.1:8500".into());
            let address = if address.starts_with("http://") || address.starts_with("https://") {
                address
            } else {
                format!("http://{address}")
            };
            let token = c
                .token
                .as_deref()
                .and_then(|t| self.string("consul.token", t));
            let tls = c.tls.unwrap_or_default();
            let mut path = |key: &str, v: &Option<String>| {
                v.as_deref()
                    .and_then(|v| self.string(&format!("consul.tls.{key}"), v))
                    .map(PathBuf::from)
            };
            let tls = TlsConfig {
                ca_file: path("ca_file", &tls.ca_file),
                cert_file: path("cert_file", &tls.cert_file),
                key_file: path("key_file", &tls.key_file),
                server_name: tls.server_name.clone(),
                verify: tls.verify.unwrap_or(true),
            };
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                self.err(
                    "consul.tls",
                    "cert_file and key_file go together: set both or neither",
                );
            }
            ConsulConfig {
                address,
                token,
                tls,
            }
        });

        let stop_timeout = match &raw.stop_timeout {
            Some(s) => self
                .duration("stop_timeout", s)
                .unwrap_or(DEFAULT_STOP_TIMEOUT),
            None => DEFAULT_STOP_TIMEOUT,
        };

        let mut logging = LoggingConfig::default();
        if let Some(l) = raw.logging {
            if let Some(level) = l
                .level
                .as_deref()
                .and_then(|v| self.string("logging.level", v))
            {
                match level.to_ascii_lowercase().as_str() {
                    lvl @ ("trace" | "debug" | "info" | "warn" | "error") => {
                        logging.level = lvl.into()
                    }
                    "warning" => logging.level = "warn".into(),
                    // ContainerPilot's two levels above error.
                    "fatal" | "panic" => logging.level = "error".into(),
                    _ => self.err(
                        "logging.level",
                        format!("'{level}' is not a level (use trace, debug, info, warn or error)"),
                    ),
                }
            }
            if let Some(format) = l
                .format
                .as_deref()
                .and_then(|v| self.string("logging.format", v))
            {
                match format.to_ascii_lowercase().as_str() {
                    // ContainerPilot's name for its default format.
                    "text" | "default" => logging.format = LogFormat::Text,
                    "json" => logging.format = LogFormat::Json,
                    _ => self.err(
                        "logging.format",
                        format!("'{format}' is not a format (use text or json)"),
                    ),
                }
            }
            if let Some(output) = l
                .output
                .as_deref()
                .and_then(|v| self.string("logging.output", v))
            {
                match output.to_ascii_lowercase().as_str() {
                    "stderr" => logging.output = LogOutput::Stderr,
                    "stdout" => logging.output = LogOutput::Stdout,
                    _ => self.err(
                        "logging.output",
                        format!("'{output}' is not an output (use stderr or stdout; to log to a file, redirect pilotfish's output)"),
                    ),
                }
            }
        }

        let control = ControlConfig {
            socket: raw
                .control
                .and_then(|c| c.socket)
                .and_then(|s| self.string("control.socket", &s))
                .unwrap_or_else(|| DEFAULT_SOCKET.into())
                .into(),
        };

        let telemetry = raw.telemetry.and_then(|t| self.telemetry(t));

        let watches = self.watches(raw.watches);
        let watch_names: BTreeSet<String> = watches.iter().map(|w| w.name.clone()).collect();

        // Names first: `when` checks need every job name.
        let mut names = BTreeMap::new();
        for (i, job) in raw.jobs.iter().enumerate() {
            if self.disabled_jobs.contains(&i) {
                continue;
            }
            if job.name.is_empty() {
                if !self
                    .errs
                    .errors
                    .iter()
                    .any(|(p, _)| p.starts_with(&format!("jobs[{i}]")))
                {
                    self.err(format!("jobs[{i}].name"), "is required");
                }
                continue;
            }
            if let Err(e) = check_name(&job.name) {
                self.err(format!("jobs[{i}].name"), e);
            }
            if let Some(prev) = names.insert(job.name.clone(), i) {
                self.err(
                    format!("jobs[{i}].name"),
                    format!(
                        "\"{}\" is already the name of jobs[{prev}]; job names must be unique",
                        job.name
                    ),
                );
            }
        }
        let disabled = &self.disabled_jobs;
        let enabled_jobs = || {
            raw.jobs
                .iter()
                .enumerate()
                .filter(|(i, _)| !disabled.contains(i))
                .map(|(_, j)| j)
        };
        let healthy_jobs: BTreeSet<String> = enabled_jobs()
            .filter(|j| j.health.is_some() || j.port.is_some())
            .map(|j| j.name.clone())
            .collect();
        let exec_jobs: BTreeSet<String> = enabled_jobs()
            .filter(|j| j.exec.is_some())
            .map(|j| j.name.clone())
            .collect();
        // Names as written, so a template with another mistake still counts
        // as one for `after_templates` and `template.NAME` sources.
        let template_names: BTreeSet<String> = raw
            .templates
            .iter()
            .filter_map(|t| match &t.name {
                Some(n) => self.env_free(n),
                None => std::path::Path::new(&t.destination)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned()),
            })
            .collect();
        let templates = self.templates(raw.templates, &names);
        let known = KnownNames {
            jobs: &names,
            watches: &watch_names,
            templates: &template_names,
            healthy: &healthy_jobs,
            with_exec: &exec_jobs,
        };

        let mut jobs = Vec::new();
        for (i, job) in raw.jobs.into_iter().enumerate() {
            if job.name.is_empty() || self.disabled_jobs.contains(&i) {
                continue;
            }
            if let Some(j) = self.job(i, job, &known) {
                jobs.push(j);
            }
        }
        let primaries: Vec<&str> = jobs
            .iter()
            .filter(|j| j.primary)
            .map(|j| j.name.as_str())
            .collect();
        if primaries.len() > 1 {
            self.err(
                "jobs",
                format!(
                    "only one job can be primary, found {}: {}",
                    primaries.len(),
                    primaries.join(", ")
                ),
            );
        }
        self.check_reachable(&jobs, &names);

        if !self.errs.is_empty() {
            // Report in file order: jobs[2] before jobs[10].
            self.errs.errors.sort_by_key(|(path, _)| natural_key(path));
            return Err(self.errs);
        }
        Ok(Config {
            consul,
            stop_timeout,
            logging,
            control,
            telemetry,
            jobs,
            watches,
            templates,
        })
    }

    fn telemetry(&mut self, t: RawTelemetry) -> Option<TelemetryConfig> {
        let port = match t.port {
            Some(p) => self.port("telemetry.port", &p),
            None => {
                self.err("telemetry.port", "is required (e.g. port = 9090)");
                None
            }
        };
        let interfaces = self.interfaces("telemetry.interfaces", t.interfaces);
        let mut metrics = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, m) in t.metrics.into_iter().enumerate() {
            let path = format!("telemetry.metrics[{i}]");
            if !crate::telemetry::valid_metric_name(&m.name) {
                self.err(
                    format!("{path}.name"),
                    format!("'{}' is not a Prometheus metric name (letters, digits, _ and :, not starting with a digit)", m.name),
                );
            } else if m.name.starts_with("pilotfish_") {
                self.err(
                    format!("{path}.name"),
                    "the pilotfish_ prefix is reserved for built-in metrics",
                );
            } else if !seen.insert(m.name.clone()) {
                self.err(
                    format!("{path}.name"),
                    format!("'{}' is declared twice", m.name),
                );
            }
            let kind = match m.kind.as_str() {
                "counter" => Some(MetricKind::Counter),
                "gauge" => Some(MetricKind::Gauge),
                "histogram" => Some(MetricKind::Histogram),
                other => {
                    self.err(
                        format!("{path}.type"),
                        format!("'{other}' is not a metric type (use counter, gauge or histogram)"),
                    );
                    None
                }
            };
            if let Some(b) = &m.buckets {
                if kind != Some(MetricKind::Histogram) {
                    self.err(format!("{path}.buckets"), "only histograms have buckets");
                } else if b.is_empty()
                    || b.iter().any(|x| !x.is_finite())
                    || b.windows(2).any(|w| w[0] >= w[1])
                {
                    self.err(
                        format!("{path}.buckets"),
                        "must be finite numbers in increasing order",
                    );
                }
            }
            if let Some(kind) = kind {
                metrics.push(MetricDef {
                    help: m.help.unwrap_or_else(|| m.name.clone()),
                    name: m.name,
                    kind,
                    buckets: m.buckets,
                });
            }
        }
        let service = match &t.service {
            None => "pilotfish".to_string(),
            Some(s) => {
                let s = self.string("telemetry.service", s).unwrap_or_default();
                if let Err(e) = check_service_name(&s) {
                    self.err("telemetry.service", e);
                }
                s
            }
        };
        Some(TelemetryConfig {
            port: port?,
            service,
            interfaces,
            tags: t.tags,
            metrics,
        })
    }

    fn watches(&mut self, raw: Vec<RawWatch>) -> Vec<WatchConfig> {
        let mut out: Vec<WatchConfig> = Vec::new();
        for (i, w) in raw.into_iter().enumerate() {
            let path = format!("watches[{i}]");
            if self.disabled_watches.contains(&i) {
                continue;
            }
            if w.name.is_empty() {
                self.err(format!("{path}.name"), "is required");
                continue;
            }
            if let Err(e) = check_name(&w.name) {
                self.err(format!("{path}.name"), e);
            }
            if out.iter().any(|o| o.name == w.name) {
                self.err(
                    format!("{path}.name"),
                    format!("\"{}\" is already a watch name", w.name),
                );
            }
            let chosen = [w.service.is_some(), w.key.is_some(), w.prefix.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if chosen > 1 {
                self.err(&path, "set only one of service, key or prefix");
                continue;
            }
            if (w.key.is_some() || w.prefix.is_some()) && (w.tag.is_some() || w.dc.is_some()) {
                self.err(&path, "tag and dc apply only to service watches");
            }
            // `${VAR:-default}` works in what a watch names, as in exec.
            let mut expand = |key: &str, v: Option<String>| {
                v.and_then(|v| self.string(&format!("{path}.{key}"), &v))
            };
            let key = expand("key", w.key);
            let prefix = expand("prefix", w.prefix);
            let service = expand("service", w.service);
            let tag = expand("tag", w.tag);
            let dc = expand("dc", w.dc);
            let target = if let Some(k) = key {
                WatchTarget::Key(k)
            } else if let Some(p) = prefix {
                WatchTarget::Prefix(p)
            } else {
                WatchTarget::Service {
                    name: service.unwrap_or_else(|| w.name.clone()),
                    tag,
                    dc,
                }
            };
            let interval = match &w.interval {
                Some(s) => self
                    .duration(&format!("{path}.interval"), s)
                    .unwrap_or_default(),
                None => Duration::ZERO,
            };
            out.push(WatchConfig {
                name: w.name,
                target,
                interval,
            });
        }
        out
    }

    fn templates(
        &mut self,
        raw: Vec<RawTemplate>,
        jobs: &BTreeMap<String, usize>,
    ) -> Vec<TemplateConfig> {
        let mut out = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut destinations: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for (i, t) in raw.into_iter().enumerate() {
            let path = format!("templates[{i}]");
            let destination = if t.destination.is_empty() {
                self.err(
                    format!("{path}.destination"),
                    "is required (the file to write)",
                );
                None
            } else {
                self.string(&format!("{path}.destination"), &t.destination)
                    .map(PathBuf::from)
            };
            if let Some(d) = &destination {
                if d.file_name().is_none() {
                    self.err(
                        format!("{path}.destination"),
                        format!("'{}' names no file", d.display()),
                    );
                } else if let Some(prev) = destinations.insert(d.clone(), i) {
                    self.err(
                        format!("{path}.destination"),
                        format!(
                            "'{}' is already written by templates[{prev}]; two templates cannot share a file",
                            d.display()
                        ),
                    );
                }
            }
            let name = match &t.name {
                Some(n) => self.string(&format!("{path}.name"), n),
                None => destination
                    .as_ref()
                    .and_then(|d| d.file_name())
                    .map(|f| f.to_string_lossy().into_owned()),
            };
            if let Some(n) = &name {
                if let Err(e) = check_name(n) {
                    self.err(
                        format!("{path}.name"),
                        if t.name.is_none() {
                            format!("{e}; the name comes from the destination's file name, so set name = \"...\"")
                        } else {
                            e
                        },
                    );
                } else if let Some(prev) = names.insert(n.clone(), i) {
                    self.err(
                        format!("{path}.name"),
                        format!(
                            "\"{n}\" is already the name of templates[{prev}]; set a unique name"
                        ),
                    );
                }
            }
            let (source, text) = match (&t.source, &t.contents) {
                (Some(_), Some(_)) => {
                    self.err(&path, "set source or contents, not both");
                    (None, None)
                }
                (None, None) => {
                    self.err(
                        format!("{path}.source"),
                        "is required (the template file), or write the template in contents",
                    );
                    (None, None)
                }
                (None, Some(c)) => (None, Some(c.clone())),
                (Some(s), None) => match self.string(&format!("{path}.source"), s) {
                    None => (None, None),
                    Some(s) => {
                        let p = match &self.base {
                            Some(b) if PathBuf::from(&s).is_relative() => b.join(&s),
                            _ => PathBuf::from(&s),
                        };
                        match read_template(&p) {
                            Ok(text) => (Some(p), Some(text)),
                            Err(e) => {
                                self.err(format!("{path}.source"), e);
                                (None, None)
                            }
                        }
                    }
                },
            };
            if let Some(text) = &text {
                let key = if source.is_some() {
                    "source"
                } else {
                    "contents"
                };
                if let Err(e) = crate::template::check_syntax(text) {
                    self.err(format!("{path}.{key}"), e);
                }
            }
            let perms = t.perms.as_deref().and_then(|p| {
                match u32::from_str_radix(p.trim_start_matches("0o"), 8) {
                    Ok(m) if m <= 0o7777 => Some(m),
                    _ => {
                        self.err(
                            format!("{path}.perms"),
                            format!("'{p}' is not an octal file mode (e.g. \"0644\")"),
                        );
                        None
                    }
                }
            });
            let check = t
                .check
                .and_then(|c| self.exec(&format!("{path}.check"), c, false))
                .map(|e| e.argv);
            if let Some(argv) = &check {
                if !argv.iter().any(|a| a.contains("{candidate}")) {
                    self.err(
                        format!("{path}.check"),
                        "never names the file to check; put \"{candidate}\" where its path goes (e.g. [\"haproxy\", \"-c\", \"-q\", \"-f\", \"{candidate}\"])",
                    );
                }
            }
            let check_timeout = t
                .check_timeout
                .as_deref()
                .and_then(|s| self.positive_duration(&format!("{path}.check_timeout"), s))
                .unwrap_or(Duration::from_secs(30));
            let reload = t.reload.and_then(|r| self.reload(&path, r, jobs));
            let wait = match t.wait {
                None if reload.is_some() => Some(TEMPLATE_WAIT),
                None => None,
                Some(w) => {
                    let min = w
                        .min
                        .as_deref()
                        .and_then(|s| self.duration(&format!("{path}.wait.min"), s));
                    let max = w
                        .max
                        .as_deref()
                        .and_then(|s| self.duration(&format!("{path}.wait.max"), s));
                    match (min, max) {
                        (None, None) if w.min.is_none() && w.max.is_none() => {
                            self.err(
                                format!("{path}.wait"),
                                "set min (and max), e.g. wait = { min = \"2s\", max = \"10s\" }; min = \"0s\" turns quiescence off",
                            );
                            None
                        }
                        (Some(min), _) if min.is_zero() => None,
                        (Some(min), None) if w.max.is_none() => Some((min, min * 4)),
                        (Some(min), Some(max)) if max < min => {
                            self.err(
                                format!("{path}.wait.max"),
                                format!(
                                    "{} must not be shorter than min ({})",
                                    format_duration(max),
                                    format_duration(min)
                                ),
                            );
                            None
                        }
                        (Some(min), Some(max)) => Some((min, max)),
                        (None, Some(_)) if w.min.is_none() => {
                            self.err(format!("{path}.wait.min"), "is required when max is set");
                            None
                        }
                        _ => None,
                    }
                }
            };
            let mut min_instances = BTreeMap::new();
            for (svc, n) in t.min_instances {
                match usize::try_from(n) {
                    Ok(n) => {
                        min_instances.insert(svc, n);
                    }
                    Err(_) => self.err(
                        format!("{path}.min_instances.{svc}"),
                        format!("{n} is not a count (use 0 or more)"),
                    ),
                }
            }
            let haproxy_socket = t.haproxy.and_then(|h| {
                if h.socket.is_empty() {
                    self.err(
                        format!("{path}.haproxy.socket"),
                        "is required (HAProxy's admin socket: stats socket <path> level admin)",
                    );
                    return None;
                }
                self.string(&format!("{path}.haproxy.socket"), &h.socket)
                    .map(PathBuf::from)
            });
            if haproxy_socket.is_some() && !matches!(reload, Some(Reload::Job { .. })) {
                self.err(
                    format!("{path}.haproxy"),
                    "reload-free mode still reloads when the set of backends changes; set reload = { job = \"haproxy\", signal = \"SIGUSR2\" }",
                );
            }
            let (Some(name), Some(text), Some(destination)) = (name, text, destination) else {
                continue;
            };
            out.push(TemplateConfig {
                name,
                source,
                text,
                destination,
                perms,
                backup: t.backup.unwrap_or(false),
                create_dest_dirs: t.create_dest_dirs.unwrap_or(true),
                check,
                check_timeout,
                reload,
                wait,
                min_instances,
                haproxy_socket,
            });
        }
        out
    }

    fn reload(
        &mut self,
        path: &str,
        r: RawReload,
        jobs: &BTreeMap<String, usize>,
    ) -> Option<Reload> {
        let p = format!("{path}.reload");
        match (r.job, r.exec) {
            (Some(_), Some(_)) => {
                self.err(&p, "set job (and signal) or exec, not both");
                None
            }
            (None, None) => {
                self.err(
                    &p,
                    "set job = \"NAME\" (and signal) to signal a supervised job, or exec = [...] to run a command",
                );
                None
            }
            (Some(job), None) => {
                if r.timeout.is_some() {
                    self.err(format!("{p}.timeout"), "applies to exec only");
                }
                if self.disabled_names.contains(&job) {
                    self.err(
                        format!("{p}.job"),
                        format!("job \"{job}\" is disabled for this run (its enabled is false); nothing would be reloaded"),
                    );
                } else if !jobs.contains_key(&job) && !self.broken_jobs.contains(&job) {
                    self.err(format!("{p}.job"), format!("no job is named \"{job}\""));
                }
                let signal = match &r.signal {
                    Some(s) => self.signal(&format!("{p}.signal"), s)?,
                    None => Signal::SIGHUP,
                };
                Some(Reload::Job { job, signal })
            }
            (None, Some(exec)) => {
                if r.signal.is_some() {
                    self.err(format!("{p}.signal"), "applies to job only");
                }
                let argv = self.exec(&format!("{p}.exec"), exec, false)?.argv;
                let timeout = r
                    .timeout
                    .as_deref()
                    .and_then(|s| self.positive_duration(&format!("{p}.timeout"), s))
                    .unwrap_or(Duration::from_secs(30));
                Some(Reload::Exec { argv, timeout })
            }
        }
    }

    fn job(&mut self, i: usize, raw: RawJob, known: &KnownNames) -> Option<JobConfig> {
        let p = format!("jobs[{i}]");
        let name = raw.name.clone();
        let shell = raw.shell.unwrap_or(false);
        let exec = raw
            .exec
            .and_then(|e| self.exec(&format!("{p}.exec"), e, shell));
        if raw.shell == Some(true) && exec.is_none() && !self.has_errors_under(&p) {
            self.err(format!("{p}.shell"), "shell = true needs exec");
        }

        let mut env = BTreeMap::new();
        for (k, v) in &raw.env {
            let valid = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                self.err(
                    format!("{p}.env.{k}"),
                    "is not an environment variable name (letters, digits, _)",
                );
                continue;
            }
            if let Some(v) = self.string(&format!("{p}.env.{k}"), v) {
                env.insert(k.clone(), v);
            }
        }
        let working_dir = raw
            .working_dir
            .as_deref()
            .and_then(|d| self.string(&format!("{p}.working_dir"), d))
            .map(PathBuf::from);
        let (user, group) = self.identity(&p, raw.user.as_deref(), raw.group.as_deref());

        let when = match (raw.when, raw.after_templates.unwrap_or(false)) {
            (Some(_), true) => {
                self.err(
                    format!("{p}.after_templates"),
                    "cannot be combined with when; write the templates into when instead: when = { all = [{ source = \"template.NAME\", once = \"rendered\" }, ...] }",
                );
                None
            }
            (Some(w), false) => self.when(&p, &name, w, known),
            (None, true) if known.templates.is_empty() => {
                self.err(
                    format!("{p}.after_templates"),
                    "there are no [[templates]] to wait for",
                );
                None
            }
            (None, true) => Some(When {
                trigger: Trigger::All(
                    known
                        .templates
                        .iter()
                        .map(|t| Condition {
                            source: Source::Template(t.clone()),
                            event: EventKind::Rendered,
                            repeat: false,
                        })
                        .collect(),
                ),
                timeout: None,
            }),
            (None, false) => Some(When {
                trigger: Trigger::Startup,
                timeout: None,
            }),
        };
        let periodic = matches!(
            when,
            Some(When {
                trigger: Trigger::Interval { .. },
                ..
            })
        );

        let restarts = match raw.restarts.and_then(|r| match r {
            RawRestarts::Word(w) if w.contains('$') => self
                .string(&format!("{p}.restarts"), &w)
                .map(|w| RawRestarts::Word(w.trim().to_ascii_lowercase())),
            other => Some(other),
        }) {
            None if periodic => Restarts::Unlimited,
            None => Restarts::Never,
            Some(RawRestarts::Count(n)) if n >= 0 => {
                Restarts::Count(u32::try_from(n).unwrap_or(u32::MAX))
            }
            Some(RawRestarts::Word(w)) if w == "never" => Restarts::Never,
            Some(RawRestarts::Word(w)) if w == "unlimited" => Restarts::Unlimited,
            Some(RawRestarts::Word(w)) if w.parse::<u32>().is_ok() => {
                Restarts::Count(w.parse().unwrap_or(0))
            }
            Some(other) => {
                let shown = match other {
                    RawRestarts::Count(n) => n.to_string(),
                    RawRestarts::Word(w) => format!("\"{w}\""),
                };
                self.err(
                    format!("{p}.restarts"),
                    format!("{shown} is not valid (use \"never\", \"unlimited\" or a count >= 0)"),
                );
                Restarts::Never
            }
        };

        let mut backoff = Backoff::default();
        if let Some(b) = raw.restart_backoff {
            if let Some(d) = b
                .initial
                .as_deref()
                .and_then(|s| self.positive_duration(&format!("{p}.restart_backoff.initial"), s))
            {
                backoff.initial = d;
            }
            if let Some(d) = b
                .max
                .as_deref()
                .and_then(|s| self.positive_duration(&format!("{p}.restart_backoff.max"), s))
            {
                backoff.max = d;
            }
            if backoff.max < backoff.initial {
                self.err(
                    format!("{p}.restart_backoff"),
                    format!(
                        "max ({}) must not be shorter than initial ({})",
                        format_duration(backoff.max),
                        format_duration(backoff.initial)
                    ),
                );
            }
        }

        let timeout = raw
            .timeout
            .as_deref()
            .and_then(|s| self.positive_duration(&format!("{p}.timeout"), s))
            .or(match &when {
                Some(When {
                    trigger: Trigger::Interval { every, .. },
                    ..
                }) => Some(*every),
                _ => None,
            });
        let stop_signal = raw
            .stop_signal
            .as_deref()
            .and_then(|s| self.signal(&format!("{p}.stop_signal"), s))
            .unwrap_or(Signal::SIGTERM);
        let stop_timeout = raw
            .stop_timeout
            .as_deref()
            .and_then(|s| self.duration(&format!("{p}.stop_timeout"), s))
            .unwrap_or(DEFAULT_JOB_STOP_TIMEOUT);
        let primary = raw.primary.unwrap_or(false);
        if primary && periodic {
            self.err(
                format!("{p}.primary"),
                "a periodic (when.interval) job cannot be primary",
            );
        }
        if primary && exec.is_none() {
            self.err(format!("{p}.primary"), "a primary job needs exec");
        }
        let mut forward_signals = Vec::new();
        for (k, s) in raw.forward_signals.iter().enumerate() {
            let path = format!("{p}.forward_signals[{k}]");
            if let Some(sig) = self.signal(&path, s) {
                if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD) {
                    self.err(path, format!("{sig} cannot be forwarded"));
                } else if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                    self.err(
                        path,
                        format!("{sig} starts pilotfish's shutdown, which sends each job its stop_signal; set stop_signal instead"),
                    );
                } else {
                    forward_signals.push(sig);
                }
            }
        }

        let health = match raw.health {
            Some(h) => self.health(&p, h, raw.port.is_some()),
            // A service without a check heartbeats while its process runs.
            None if raw.port.is_some() => Some(HealthConfig {
                exec: None,
                interval: super::SERVICE_HEARTBEAT,
                ttl: Some(super::SERVICE_TTL),
                timeout: super::SERVICE_HEARTBEAT,
            }),
            None => None,
        };
        let service = match raw.port {
            Some(port) => {
                if let Err(e) = check_service_name(&name) {
                    self.err(format!("{p}.name"), e);
                }
                let port = self.port(&format!("{p}.port"), &port);
                let interfaces = self.interfaces(&format!("{p}.interfaces"), raw.interfaces);
                let initial_status = raw.initial_status.as_deref().and_then(|s| match s {
                    "passing" => Some(CheckStatus::Passing),
                    "warning" => Some(CheckStatus::Warning),
                    "critical" => Some(CheckStatus::Critical),
                    other => {
                        self.err(
                            format!("{p}.initial_status"),
                            format!("'{other}' is not a status (use passing, warning or critical)"),
                        );
                        None
                    }
                });
                let dereg = raw
                    .deregister_critical_service_after
                    .as_deref()
                    .and_then(|s| {
                        self.positive_duration(&format!("{p}.deregister_critical_service_after"), s)
                    });
                let id = raw.id.clone().filter(|id| {
                    let bad = id.trim().is_empty() || id.contains('/');
                    if bad {
                        self.err(
                            format!("{p}.id"),
                            format!(
                                "\"{id}\" is not a service ID (give a non-empty ID without '/')"
                            ),
                        );
                    }
                    !bad
                });
                self.meta(&format!("{p}.meta"), &raw.meta);
                port.map(|port| ServiceConfig {
                    port,
                    id,
                    meta: raw.meta.clone(),
                    tags: raw.tags.clone(),
                    interfaces,
                    initial_status,
                    deregister_critical_service_after: dereg,
                    enable_tag_override: raw.enable_tag_override.unwrap_or(false),
                })
            }
            None => {
                for (key, set) in [
                    ("tags", !raw.tags.is_empty()),
                    ("interfaces", raw.interfaces.is_some()),
                    ("initial_status", raw.initial_status.is_some()),
                    (
                        "deregister_critical_service_after",
                        raw.deregister_critical_service_after.is_some(),
                    ),
                    ("enable_tag_override", raw.enable_tag_override.is_some()),
                    ("id", raw.id.is_some()),
                    ("meta", !raw.meta.is_empty()),
                ] {
                    if set {
                        self.err(
                            format!("{p}.{key}"),
                            "applies only to a service: set port too",
                        );
                    }
                }
                None
            }
        };
        if exec.is_none() && service.is_none() && !self.has_errors_under(&p) {
            self.err(
                format!("{p}.exec"),
                "is required (a job without exec must be a service: set port and health)",
            );
        }

        Some(JobConfig {
            name,
            exec,
            env,
            working_dir,
            user,
            group,
            when: when?,
            restarts,
            backoff,
            timeout,
            stop_signal,
            stop_timeout,
            primary,
            forward_signals,
            raw_logging: raw.logging.and_then(|l| l.raw).unwrap_or(false),
            service,
            health,
        })
    }

    /// Consul's service meta limits (the same check the agent makes), so
    /// the agent does not refuse the registration later.
    fn meta(&mut self, path: &str, meta: &BTreeMap<String, String>) {
        if let Err(e) = crate::discovery::api::catalog::check_meta(meta, false) {
            self.err(path, e);
        }
    }

    fn has_errors_under(&self, prefix: &str) -> bool {
        self.errs.errors.iter().any(|(p, _)| p.starts_with(prefix))
    }

    fn identity(
        &mut self,
        p: &str,
        user: Option<&str>,
        group: Option<&str>,
    ) -> (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>) {
        use nix::unistd::{Gid, Group, Uid, User};
        let mut uid = None;
        let mut gid = None;
        if let Some(u) = user {
            let found = match u.parse::<u32>() {
                Ok(n) => Some((
                    Uid::from_raw(n),
                    User::from_uid(Uid::from_raw(n))
                        .ok()
                        .flatten()
                        .map(|u| u.gid),
                )),
                Err(_) => User::from_name(u)
                    .ok()
                    .flatten()
                    .map(|x| (x.uid, Some(x.gid))),
            };
            match found {
                Some((id, primary_gid)) => {
                    uid = Some(id);
                    gid = primary_gid;
                }
                None => self.err(format!("{p}.user"), format!("no user \"{u}\" on this system (use a name from /etc/passwd or a numeric uid)")),
            }
        }
        if let Some(g) = group {
            match g.parse::<u32>() {
                Ok(n) => gid = Some(Gid::from_raw(n)),
                Err(_) => match Group::from_name(g).ok().flatten() {
                    Some(x) => gid = Some(x.gid),
                    None => self.err(format!("{p}.group"), format!("no group \"{g}\" on this system (use a name from /etc/group or a numeric gid)")),
                },
            }
        }
        (uid, gid)
    }

    fn health(&mut self, p: &str, h: RawHealth, is_service: bool) -> Option<HealthConfig> {
        let hp = format!("{p}.health");
        let exec = h
            .exec
            .and_then(|e| self.exec(&format!("{hp}.exec"), e, h.shell.unwrap_or(false)));
        if exec.is_none() && !is_service && !self.has_errors_under(&hp) {
            self.err(
                format!("{hp}.exec"),
                "is required (without a port there is nothing else to check)",
            );
        }
        let interval = match h.interval.as_deref() {
            Some(s) => self.positive_duration(&format!("{hp}.interval"), s),
            None => {
                self.err(
                    format!("{hp}.interval"),
                    "is required (e.g. interval = \"10s\")",
                );
                None
            }
        };
        let ttl = h
            .ttl
            .as_deref()
            .and_then(|s| self.positive_duration(&format!("{hp}.ttl"), s));
        if is_service && h.ttl.is_none() {
            self.err(
                format!("{hp}.ttl"),
                "is required with port: the TTL Consul waits between heartbeats",
            );
        }
        let timeout = h
            .timeout
            .as_deref()
            .and_then(|s| self.positive_duration(&format!("{hp}.timeout"), s));
        let interval = interval?;
        if let Some(ttl) = ttl {
            if ttl <= interval {
                self.err(
                    format!("{hp}.ttl"),
                    format!(
                        "ttl ({}) must be longer than interval ({}), or the service flaps to critical between checks; set ttl above the interval, e.g. ttl = \"{}\"",
                        format_duration(ttl),
                        format_duration(interval),
                        format_duration(suggested_ttl(interval))
                    ),
                );
            }
        }
        Some(HealthConfig {
            exec,
            interval,
            ttl,
            timeout: timeout.unwrap_or(interval),
        })
    }

    fn when(&mut self, p: &str, job: &str, w: RawWhen, known: &KnownNames) -> Option<When> {
        let wp = format!("{p}.when");
        let timeout = w
            .timeout
            .as_deref()
            .and_then(|s| self.positive_duration(&format!("{wp}.timeout"), s));
        if let Some(interval) = &w.interval {
            let others: Vec<&str> = [
                ("each", w.each.is_some()),
                ("all", w.all.is_some()),
                ("any", w.any.is_some()),
                ("timeout", w.timeout.is_some()),
            ]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect();
            if !others.is_empty() {
                self.err(
                    &wp,
                    format!(
                        "interval cannot be combined with {} (a periodic job runs every interval, from startup or from one source with once; use the job's timeout to bound a run)",
                        others.join(", ")
                    ),
                );
                return None;
            }
            let every = self.positive_duration(&format!("{wp}.interval"), interval);
            let after = match (&w.source, &w.once) {
                (None, None) => None,
                (Some(_), Some(_)) => {
                    let c = RawCondition {
                        source: w.source,
                        once: w.once,
                        each: None,
                    };
                    let c = self.condition(&wp, job, c, known)?;
                    if matches!(
                        c.event,
                        EventKind::Stopping | EventKind::Stopped | EventKind::Shutdown
                    ) {
                        self.err(
                            format!("{wp}.once"),
                            "a periodic job cannot start while pilotfish stops; use a job without interval for a stopping, stopped or shutdown hook",
                        );
                        return None;
                    }
                    Some(c)
                }
                _ => {
                    self.err(
                        &wp,
                        "to start the interval after an event, give both source and once (e.g. source = \"setup\", once = \"exitSuccess\")",
                    );
                    return None;
                }
            };
            return Some(When {
                trigger: Trigger::Interval {
                    every: every?,
                    after,
                },
                timeout: None,
            });
        }
        let single = w.source.is_some() || w.once.is_some() || w.each.is_some();
        let trigger = match (single, w.all, w.any) {
            (true, None, None) => {
                let c = RawCondition {
                    source: w.source,
                    once: w.once,
                    each: w.each,
                };
                Trigger::All(vec![self.condition(&wp, job, c, known)?])
            }
            (false, Some(all), None) => {
                Trigger::All(self.conditions(&format!("{wp}.all"), job, all, known)?)
            }
            (false, None, Some(any)) => {
                Trigger::Any(self.conditions(&format!("{wp}.any"), job, any, known)?)
            }
            (false, None, None) => {
                if timeout.is_some() {
                    self.err(
                        &wp,
                        "timeout needs a condition to wait for (source with once or each)",
                    );
                    return None;
                }
                Trigger::Startup
            }
            _ => {
                self.err(
                    &wp,
                    "use only one of: source (with once or each), all, any, interval",
                );
                return None;
            }
        };
        Some(When { trigger, timeout })
    }

    fn conditions(
        &mut self,
        path: &str,
        job: &str,
        raw: Vec<RawCondition>,
        known: &KnownNames,
    ) -> Option<Vec<Condition>> {
        if raw.is_empty() {
            self.err(path, "must list at least one condition");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, c) in raw.into_iter().enumerate() {
            match self.condition(&format!("{path}[{i}]"), job, c, known) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn condition(
        &mut self,
        path: &str,
        job: &str,
        c: RawCondition,
        known: &KnownNames,
    ) -> Option<Condition> {
        let source_text = c.source.clone().unwrap_or_else(|| "global".into());
        let source = if source_text == "global" {
            Source::Global
        } else if self.disabled_names.contains(&source_text) {
            self.err(
                format!("{path}.source"),
                format!("\"{source_text}\" is disabled for this run (its enabled is false), so this job would never start; give this job the same enabled condition, or wait for something that runs"),
            );
            return None;
        } else if let Some(w) = source_text.strip_prefix("watch.") {
            if !known.watches.contains(w) {
                self.err(
                    format!("{path}.source"),
                    format!("no watch is named \"{w}\" (declare it in [[watches]])"),
                );
                return None;
            }
            Source::Watch(w.to_string())
        } else if let Some(t) = source_text.strip_prefix("template.") {
            if !known.templates.contains(t) {
                self.err(
                    format!("{path}.source"),
                    format!("no template is named \"{t}\" (declare it in [[templates]]; its name defaults to the destination's file name)"),
                );
                return None;
            }
            Source::Template(t.to_string())
        } else if let Some(sig) = ["SIGHUP", "SIGUSR1", "SIGUSR2"]
            .iter()
            .find(|s| **s == source_text)
        {
            Source::Signal(parse_signal(sig).ok()?)
        } else if known.jobs.contains_key(&source_text) {
            if source_text == job {
                self.err(
                    format!("{path}.source"),
                    format!("job \"{job}\" cannot wait for its own events: it would never start"),
                );
                return None;
            }
            Source::Job(source_text.clone())
        } else {
            if !self.broken_jobs.contains(&source_text) {
                self.err(
                    format!("{path}.source"),
                    format!("\"{source_text}\" is not a job, a watch (watch.NAME), a template (template.NAME), global, SIGHUP, SIGUSR1 or SIGUSR2"),
                );
            }
            return None;
        };
        let (event_text, repeat) = match (c.once, c.each) {
            (Some(_), Some(_)) => {
                self.err(path, "set once or each, not both");
                return None;
            }
            (Some(e), None) => (e, false),
            (None, Some(e)) => (e, true),
            (None, None) => match &source {
                Source::Signal(s) => (s.as_str().to_string(), true),
                _ if c.source.is_none() => {
                    self.err(path, "needs a source and once or each (e.g. source = \"db\", once = \"healthy\")");
                    return None;
                }
                _ => {
                    self.err(
                        path,
                        format!("source \"{source_text}\" needs once or each (e.g. once = \"exitSuccess\"); without it the job would never start"),
                    );
                    return None;
                }
            },
        };
        let Some(event) = EventKind::parse(&event_text) else {
            self.err(
                path,
                format!("'{event_text}' is not an event (use startup, shutdown, exitSuccess, exitFailed, healthy, unhealthy, changed, rendered, stopping, stopped, enterMaintenance, exitMaintenance or a signal name)"),
            );
            return None;
        };
        let fits = match (&source, event) {
            (
                Source::Global,
                EventKind::Startup
                | EventKind::Shutdown
                | EventKind::EnterMaintenance
                | EventKind::ExitMaintenance,
            ) => true,
            (
                Source::Job(_),
                EventKind::ExitSuccess
                | EventKind::ExitFailed
                | EventKind::Stopping
                | EventKind::Stopped,
            ) => true,
            (Source::Job(j), EventKind::Healthy | EventKind::Unhealthy) => {
                if !known.healthy.contains(j) {
                    self.err(
                        path,
                        format!("job \"{j}\" has no health check, so it never reports {event}"),
                    );
                    return None;
                }
                true
            }
            (Source::Watch(_), EventKind::Changed | EventKind::Healthy | EventKind::Unhealthy) => {
                true
            }
            (Source::Template(_), EventKind::Rendered | EventKind::Changed) => true,
            (Source::Signal(s), EventKind::Signal(e)) => s == &e,
            _ => false,
        };
        if !fits {
            let hint = match &source {
                Source::Global => {
                    "global events are startup, shutdown, enterMaintenance, exitMaintenance"
                }
                Source::Job(_) => {
                    "job events are exitSuccess, exitFailed, healthy, unhealthy, stopping, stopped"
                }
                Source::Watch(_) => "watch events are changed, healthy, unhealthy",
                Source::Template(_) => "template events are rendered (installed the first time) and changed (installed again)",
                Source::Signal(_) => "a signal source fires with its own signal name as the event",
            };
            self.err(path, format!("\"{source}\" never sends {event}: {hint}"));
            return None;
        }
        if let (Source::Job(j), EventKind::ExitSuccess | EventKind::ExitFailed) = (&source, event) {
            if !known.with_exec.contains(j) {
                self.err(path, format!("job \"{j}\" has no exec, so it never exits"));
                return None;
            }
        }
        Some(Condition {
            source,
            event,
            repeat,
        })
    }

    /// Report jobs whose trigger can never fire because every way to it goes
    /// through jobs that can never start (including cycles).
    fn check_reachable(&mut self, jobs: &[JobConfig], index: &BTreeMap<String, usize>) {
        let mut can_start: BTreeSet<&str> = BTreeSet::new();
        let emits = |c: &Condition, can_start: &BTreeSet<&str>| match &c.source {
            Source::Job(j) => can_start.contains(j.as_str()),
            _ => true,
        };
        loop {
            let before = can_start.len();
            for j in jobs {
                let ok = match &j.when.trigger {
                    Trigger::Startup | Trigger::Interval { after: None, .. } => true,
                    Trigger::Interval { after: Some(c), .. } => emits(c, &can_start),
                    Trigger::All(cs) => cs.iter().all(|c| emits(c, &can_start)),
                    Trigger::Any(cs) => cs.iter().any(|c| emits(c, &can_start)),
                };
                if ok {
                    can_start.insert(j.name.as_str());
                }
            }
            if can_start.len() == before {
                break;
            }
        }
        for j in jobs {
            if can_start.contains(j.name.as_str()) {
                continue;
            }
            let waits: Vec<String> = j
                .when
                .conditions()
                .iter()
                .filter(|c| !emits(c, &can_start))
                .map(|c| c.source.to_string())
                .collect();
            let i = index.get(&j.name).copied().unwrap_or(0);
            self.err(
                format!("jobs[{i}].when"),
                format!(
                    "job \"{}\" can never start: it waits on {}, which can never start either (a cycle, or a chain that never begins)",
                    j.name,
                    waits.join(", ")
                ),
            );
        }
    }
}

/// A template file's text, read when the config loads (so a reload re-reads it).
fn read_template(path: &std::path::Path) -> Result<String, String> {
    super::read_file(path).map_err(|e| e.to_string())
}

/// A sort key that orders the numbers inside a path numerically.
fn natural_key(path: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in path.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            out.push_str(&format!("{digits:0>10}"));
            digits.clear();
        }
        out.push(c);
    }
    out
}

struct KnownNames<'a> {
    jobs: &'a BTreeMap<String, usize>,
    watches: &'a BTreeSet<String>,
    templates: &'a BTreeSet<String>,
    healthy: &'a BTreeSet<String>,
    with_exec: &'a BTreeSet<String>,
}

/// The ttl `config check` proposes for an interval: just above it.
fn suggested_ttl(interval: Duration) -> Duration {
    interval + interval.min(Duration::from_secs(1))
}

/// One `enabled` condition: `[!]VALUE`, `A == B` or `A != B` (operands may be
/// 'quoted'), split before `${VAR}` expansion so a variable's value can never
/// change its shape.
pub fn condition_holds(c: &str, env: &Env) -> Result<bool, String> {
    for (op, equal) in [("==", true), ("!=", false)] {
        if let Some((a, b)) = c.split_once(op) {
            // 'quoted' operands may be empty or hold spaces.
            let operand = |x: &str| {
                let x = x.trim();
                let x = x
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .unwrap_or(x);
                expand(x, env)
            };
            return Ok((operand(a)? == operand(b)?) == equal);
        }
    }
    let (negate, body) = match c.trim().strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, c.trim()),
    };
    let value = expand(body.trim(), env)?;
    let b = match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => true,
        "false" | "no" | "off" | "0" | "" => false,
        other => {
            let from = if value == body.trim() {
                String::new()
            } else {
                format!(" (from \"{}\")", body.trim())
            };
            return Err(format!(
                "\"{other}\"{from} is not true or false (use true/false, yes/no, on/off or 1/0; empty is false), or compare it: \"{} == VALUE\"",
                body.trim()
            ));
        }
    };
    Ok(b != negate)
}

/// Job and watch names: used as event sources and in environment variable names.
fn check_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(format!(
            "\"{name}\" is not a valid name (letters, digits, '-', '_' and '.', starting with a letter or digit)"
        ));
    }
    if name == "global"
        || name.starts_with("watch.")
        || name.starts_with("template.")
        || name.starts_with("SIG")
    {
        return Err(format!(
            "\"{name}\" is reserved (global, watch.*, template.*, SIG*)"
        ));
    }
    Ok(())
}

/// A job with a port becomes a Consul service: its name must be DNS-safe.
fn check_service_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" has a port, so it is a service name and may only use letters, digits and '-' (it is used in DNS)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        [("PORT".to_string(), "8080".to_string())]
            .into_iter()
            .collect()
    }

    fn ok(text: &str) -> Config {
        match parse_and_validate(text, &env()) {
            Ok(c) => c,
            Err(e) => panic!("expected valid config, got:\n{e}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_and_validate(text, &env()) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.messages(),
        }
    }

    #[test]
    fn minimal_job_gets_defaults() {
        let c = ok(r#"
            [[jobs]]
            name = "app"
            exec = "/bin/app --port ${PORT} 'two words'"
        "#);
        let j = &c.jobs[0];
        assert_eq!(
            j.exec.as_ref().unwrap().argv,
            ["/bin/app", "--port", "8080", "two words"]
        );
        assert_eq!(j.when.trigger, Trigger::Startup);
        assert_eq!(j.restarts, Restarts::Never);
        assert_eq!(j.stop_signal, Signal::SIGTERM);
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.control.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn three_mistakes_three_errors() {
        let errs = errors(
            r#"
            [[jobs]]
            name = "app"
            exec = "/bin/app"
            restarts = "sometimes"

            [[jobs]]
            name = "app"
            exec = "/bin/other"
            stop_signal = "SIGNOPE"
        "#,
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].starts_with("jobs[0].restarts: \"sometimes\""),
            "{errs:#?}"
        );
        assert!(errs
            .iter()
            .any(|e| e.starts_with("jobs[1].name:") && e.contains("unique")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("jobs[1].stop_signal:") && e.contains("SIGNOPE")));
    }

    #[test]
    fn unknown_keys_everywhere_are_all_reported() {
        let errs = errors(
            r#"
            stop_timout = "5s"
            [[jobs]]
            name = "a"
            exec = "true"
            restart = "never"
            [[jobs]]
            name = "b"
            exec = "true"
            health = { exec = "true", interval = "5s", tll = "10s" }
        "#,
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs
            .iter()
            .any(|e| e.starts_with("stop_timout: unknown key")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("jobs[0]") && e.contains("restart")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("jobs[1].health") && e.contains("tll")));
    }

    #[test]
    fn an_interval_starts_from_startup_or_from_one_once_condition() {
        let errs = errors(
            r#"
            [[jobs]]
            name = "setup"
            exec = "true"

            [[jobs]]
            name = "a"
            exec = "true"
            when = { interval = "5s", source = "setup", each = "exitSuccess" }

            [[jobs]]
            name = "b"
            exec = "true"
            when = { interval = "5s", source = "setup" }

            [[jobs]]
            name = "c"
            exec = "true"
            when = { interval = "5s", source = "nosuch", once = "exitSuccess" }

            [[jobs]]
            name = "d"
            exec = "true"
            when = { interval = "5s", source = "setup", once = "stopping" }
        "#,
        );
        assert_eq!(errs, [
            "jobs[1].when: interval cannot be combined with each (a periodic job runs every interval, from startup or from one source with once; use the job's timeout to bound a run)",
            "jobs[2].when: to start the interval after an event, give both source and once (e.g. source = \"setup\", once = \"exitSuccess\")",
            "jobs[3].when.source: \"nosuch\" is not a job, a watch (watch.NAME), a template (template.NAME), global, SIGHUP, SIGUSR1 or SIGUSR2",
            "jobs[4].when.once: a periodic job cannot start while pilotfish stops; use a job without interval for a stopping, stopped or shutdown hook",
        ]);
        let c = ok(r#"
            [[jobs]]
            name = "setup"
            exec = "true"

            [[jobs]]
            name = "tick"
            exec = "true"
            when = { interval = "5s", source = "setup", once = "exitSuccess" }
        "#);
        let Trigger::Interval {
            every,
            after: Some(c),
        } = &c.jobs[1].when.trigger
        else {
            panic!("{:?}", c.jobs[1].when);
        };
        assert_eq!(*every, Duration::from_secs(5));
        assert_eq!(c.source, Source::Job("setup".into()));
        assert_eq!(c.event, EventKind::ExitSuccess);
    }

    #[test]
    fn health_ttl_must_exceed_interval() {
        let errs = errors(
            r#"
            [[jobs]]
            name = "web"
            exec = "web"
            port = 80
            health = { exec = "check", interval = "10s", ttl = "5s" }
        "#,
        );
        assert_eq!(errs, ["jobs[0].health.ttl: ttl (5s) must be longer than interval (10s), or the service flaps to critical between checks; set ttl above the interval, e.g. ttl = \"11s\""]);
    }

    #[test]
    fn when_forms() {
        let c = ok(r#"
            [[watches]]
            name = "backend"
            [[jobs]]
            name = "pre"
            exec = "true"
            [[jobs]]
            name = "app"
            exec = "app"
            when = { source = "pre", once = "exitSuccess", timeout = "30s" }
            health = { exec = "true", interval = "1s" }
            [[jobs]]
            name = "reload"
            exec = "true"
            when = { source = "watch.backend", each = "changed" }
            [[jobs]]
            name = "hup"
            exec = "true"
            when = { source = "SIGHUP" }
            [[jobs]]
            name = "both"
            exec = "true"
            when = { all = [{ source = "app", once = "healthy" }, { source = "watch.backend", once = "healthy" }] }
            [[jobs]]
            name = "bye"
            exec = "true"
            when = { once = "shutdown" }
            [[jobs]]
            name = "tick"
            exec = "true"
            when = { interval = "5s" }
        "#);
        assert_eq!(c.jobs[1].when.timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            c.jobs[3].when.trigger,
            Trigger::All(vec![Condition {
                source: Source::Signal(Signal::SIGHUP),
                event: EventKind::Signal(Signal::SIGHUP),
                repeat: true
            }])
        );
        assert_eq!(
            c.jobs[5].when.trigger,
            Trigger::All(vec![Condition {
                source: Source::Global,
                event: EventKind::Shutdown,
                repeat: false
            }])
        );
        assert_eq!(c.jobs[6].restarts, Restarts::Unlimited);
        assert_eq!(c.jobs[6].timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn whens_that_can_never_fire() {
        let errs = errors(
            r#"
            [[jobs]]
            name = "a"
            exec = "true"
            when = { source = "b", once = "exitSuccess" }
            [[jobs]]
            name = "b"
            exec = "true"
            when = { source = "a", once = "exitSuccess" }
            [[jobs]]
            name = "c"
            exec = "true"
            when = { source = "a" }
            [[jobs]]
            name = "d"
            exec = "true"
            when = { source = "nothere", once = "exitSuccess" }
            [[jobs]]
            name = "e"
            exec = "true"
            when = { source = "a", once = "changed" }
            [[jobs]]
            name = "f"
            exec = "true"
            when = { source = "a", once = "healthy" }
        "#,
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("jobs[0].when:") && e.contains("never start")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("jobs[1].when:") && e.contains("never start")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("jobs[2].when:") && e.contains("needs once or each")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("jobs[3].when.source:") && e.contains("nothere")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("jobs[4].when:") && e.contains("never sends changed")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("jobs[5].when:") && e.contains("no health check")),
            "{errs:#?}"
        );
    }

    #[test]
    fn env_errors_name_the_key() {
        let errs = errors(
            r#"
            [[jobs]]
            name = "a"
            exec = ["run", "${MISSING}"]
        "#,
        );
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("jobs[0].exec[1]: environment variable MISSING is not set"),
            "{errs:?}"
        );
    }

    #[test]
    fn shutdown_signals_cannot_be_forwarded() {
        let errs = errors(
            r#"
            [[jobs]]
            name = "a"
            exec = "true"
            forward_signals = ["SIGHUP", "SIGTERM", "SIGKILL"]
        "#,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("jobs[0].forward_signals[1]: SIGTERM starts pilotfish's shutdown"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("jobs[0].forward_signals[2]: SIGKILL cannot be forwarded"),
            "{errs:?}"
        );
    }

    #[test]
    fn shell_and_quoting() {
        let c = ok(r#"
            [[jobs]]
            name = "a"
            exec = "echo hi | tr a-z A-Z"
            shell = true
        "#);
        assert_eq!(
            c.jobs[0].exec.as_ref().unwrap().argv,
            ["/bin/sh", "-c", "echo hi | tr a-z A-Z"]
        );
        let errs = errors(
            r#"
            [[jobs]]
            name = "a"
            exec = "echo 'unterminated"
        "#,
        );
        assert!(errs[0].contains("quotes"), "{errs:?}");
    }

    #[test]
    fn templates_validate_every_key_and_wire_after_templates() {
        let c = ok(r#"
            [[templates]]
            contents = "{{#each (service \"web\")}}{{Address}}{{/each}}"
            destination = "/tmp/x/haproxy.cfg"
            check = ["haproxy", "-c", "-f", "{candidate}"]
            reload = { job = "haproxy", signal = "SIGUSR2" }
            min_instances = { web = 1 }

            [[templates]]
            name = "other"
            contents = "x"
            destination = "/tmp/x/other"
            reload = { exec = "true" }
            wait = { min = "0s" }

            [[jobs]]
            name = "haproxy"
            exec = "haproxy"
            after_templates = true

            [[jobs]]
            name = "after-one"
            exec = "true"
            when = { source = "template.other", each = "changed" }
        "#);
        let t = &c.templates[0];
        assert_eq!(t.name, "haproxy.cfg");
        assert_eq!(
            t.wait,
            Some(crate::config::TEMPLATE_WAIT),
            "reloading templates debounce by default"
        );
        assert_eq!(
            t.reload,
            Some(Reload::Job {
                job: "haproxy".into(),
                signal: Signal::SIGUSR2
            })
        );
        assert_eq!(t.min_instances["web"], 1);
        assert_eq!(c.templates[1].wait, None, "min 0s turns quiescence off");
        let Trigger::All(conds) = &c.jobs[0].when.trigger else {
            panic!("after_templates waits on every template")
        };
        assert_eq!(conds.len(), 2);
        assert!(conds
            .iter()
            .all(|c| c.event == EventKind::Rendered && !c.repeat));
    }

    #[test]
    fn template_mistakes_are_all_reported() {
        let errs = errors(
            r#"
            [[templates]]
            contents = "{{#each x}}"
            destination = "/tmp/a"
            check = ["haproxy", "-c"]
            reload = { job = "nope" }
            wait = { min = "5s", max = "1s" }
            min_instances = { web = -1 }

            [[templates]]
            source = "/nonexistent/t.hbs"
            destination = "/tmp/a"
            haproxy = { socket = "/run/h.sock" }

            [[jobs]]
            name = "app"
            exec = "app"
            after_templates = true
            when = { source = "template.missing", once = "rendered" }
        "#,
        );
        let all = errs.join("\n");
        for want in [
            "templates[0].contents: is not a valid handlebars template: line 1",
            "templates[0].check: never names the file",
            "templates[0].reload.job: no job is named \"nope\"",
            "templates[0].wait.max: 1s must not be shorter than min (5s)",
            "templates[0].min_instances.web: -1 is not a count",
            "templates[1].source:",
            "templates[1].destination: '/tmp/a' is already written by templates[0]",
            "templates[1].haproxy: reload-free mode",
            "jobs[0].after_templates: cannot be combined with when",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }
}
