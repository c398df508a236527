//! The TOML file format, and nothing else: serde types that mirror the file one to
//! one. Values stay as written (strings for durations, signals and events) so that
//! `config::validate` can report every mistake with its key path at once. Unknown
//! keys are rejected here (`deny_unknown_fields`), so a typo such as `tll` or
//! `restart` is an error, never a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Discovery backend. Absent: pilotfish is a plain supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul: Option<RawConsul>,
    /// Grace for the whole shutdown sequence (Go duration, default "10s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<RawLogging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<RawControl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<RawTelemetry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<RawJob>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<RawWatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<RawTemplate>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConsul {
    /// `host:port`, `http://host:port` or `https://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Certificate verification; on unless explicitly turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// trace, debug, info, warn, error (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// text or json (`default`, ContainerPilot's name, is text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// stderr (default) or stdout. Read at start only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<RawInt>,
    /// Service name the endpoint registers as; default "pilotfish".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<RawMetric>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    pub name: String,
    /// counter, gauge or histogram.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Histogram bucket bounds; Prometheus defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<f64>>,
}

/// A value written either as one string or as a list of strings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// A whole number written as a number or as a string, so `${PORT}` and
/// `${PORT:-8080}` can give it; validated after expansion.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawInt {
    Int(i64),
    Text(String),
}

/// `enabled`: a boolean, or conditions read after `${VAR}` expansion — one
/// string or a list that must all hold. A condition is a boolean word
/// (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`; empty is false),
/// optionally negated with a leading `!`, or `A == B` / `A != B`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawEnabled {
    Bool(bool),
    One(String),
    All(Vec<String>),
}

/// `restarts`: "never", "unlimited" or a count.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawRestarts {
    Count(i64),
    Word(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    #[serde(default)]
    pub name: String,
    /// Off: the job does not exist for this run (`when`s naming it are errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<RawEnabled>,
    /// argv array, or a string split with shell-words quoting rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<StringOrList>,
    /// Run `exec` (a string) with `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<RawWhen>,
    /// Start only after every `[[templates]]` entry has been installed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_templates: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RawRestarts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_backoff: Option<RawBackoff>,
    /// Wall-clock limit of one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Grace between the stop signal and SIGKILL; also bounds this job's preStop hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_signals: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<RawJobLogging>,
    // Service fields: a job with `port` registers with the discovery agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<RawInt>,
    /// Service ID; default `<name>-<hostname>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tag_override: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RawHealth>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawJobLogging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `when`: one of `interval`, a single condition (`source` + `once`/`each`),
/// or a combination (`all`/`any` of conditions). `timeout` bounds the wait.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<RawCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<RawCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// One element of `when.all` / `when.any`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
}

/// A watch on the catalog or KV; its events have source `watch.<name>`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    #[serde(default)]
    pub name: String,
    /// Off: the watch does not exist for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<RawEnabled>,
    /// Service to watch (defaults to `name` unless `key`/`prefix` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
    /// A KV key to watch instead of a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A KV prefix to watch instead of a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Minimum time between two change events (coalescing), default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// A template rendered from the catalog and KV (`[[templates]]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    /// Event source `template.<name>`; default: the destination's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The handlebars template file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The template text itself, instead of `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    #[serde(default)]
    pub destination: String,
    /// Octal file mode of the installed file, e.g. "0644".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perms: Option<String>,
    /// Keep the previous file as `<destination>.bak`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    /// Create missing parent directories (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_dest_dirs: Option<bool>,
    /// Command run on the candidate file; `{candidate}` is replaced by its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<StringOrList>,
    /// How long `check` may run (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_timeout: Option<String>,
    /// What to do once per change batch after the file is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<RawReload>,
    /// Quiescence: render a change batch after `min` without changes, at most `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<RawWait>,
    /// Refuse to install a render with fewer instances of these services.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_instances: BTreeMap<String, i64>,
    /// Reload-free mode: apply instance changes through HAProxy's Runtime API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<RawHaproxy>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// A supervised job to signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The signal for `job` (default SIGHUP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// A command to run instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<StringOrList>,
    /// How long `exec` may run (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawHaproxy {
    /// HAProxy's admin stats socket (`stats socket ... level admin`).
    #[serde(default)]
    pub socket: String,
}
