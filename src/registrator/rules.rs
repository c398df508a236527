//! Registrator's rules as one pure function: a container's inspect JSON (and
//! the registrator's flags) → the Consul service definitions to register,
//! plus what a user should read about the choices made. No I/O, no clock.
//!
//! The rules are gliderlabs/registrator v7's (`bridge/bridge.go`,
//! `bridge/util.go`, `consul/consul.go`), with its defects fixed:
//!
//! - **Ports**: every `Config.ExposedPorts` entry counts as published on the
//!   same host port (the `--net=host` case) until `NetworkSettings.Ports`
//!   says otherwise; `null` there means exposed but not published, which is
//!   skipped unless `internal`. Of several bindings the first IPv4 one is
//!   used (Engine 20.10 lists `0.0.0.0` and `::` for one `-p`).
//! - **Address**: `internal` → the container's IP on its own network
//!   (`NetworkSettings.Networks[HostConfig.NetworkMode]`, then the default
//!   bridge's `IPAddress`, then any network's), so user-defined networks
//!   work (Registrator's #291/#219), and the exposed port; otherwise the
//!   `use_ip_from_label` label (CIDR suffix dropped), then `--ip`, then the
//!   binding's own host IP when it names one, then `host_ip` (the shell's
//!   choice of this host's address for `0.0.0.0`/`::` bindings). Unlike
//!   Registrator, a published port on a user-defined network keeps the
//!   host's address: the host port is only reachable there.
//! - **Name**: `SERVICE_NAME`/`SERVICE_<port>_NAME`, else the image's base
//!   name without tag or digest; `-<exposed port>` is appended when more
//!   than one port is registered and the port has no name of its own.
//! - **ID**: `<hostname>:<container name>:<exposed port>[:udp]`, or
//!   `SERVICE_ID`/`SERVICE_<port>_ID`.
//! - **Metadata**: `SERVICE_*` from `Config.Env` first, then labels (which
//!   therefore win); `SERVICE_<port>_<KEY>` beats `SERVICE_<KEY>`; keys are
//!   lower-cased. `NAME`, `ID`, `TAGS`, `IGNORE` are reserved; every other
//!   key becomes Consul `Meta`, renamed or dropped (with a warning) where
//!   Consul's meta rules would refuse the whole registration.
//! - **Checks**: at most one, the first of `check_http`, `check_https`,
//!   `check_script` (only when script checks are enabled: it runs in the
//!   agent), `check_ttl`, `check_tcp`; interval 10s by default; a
//!   `DeregisterCriticalServiceAfter` default from the flags, so a service
//!   whose container crashed while no registrator was running goes away.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::discovery::api::agent::{CheckDefinition, ServiceDefinition};
use crate::discovery::api::catalog::{
    META_KEY_MAX_LEN, META_MAX_PAIRS, META_RESERVED_PREFIX, META_VALUE_MAX_LEN,
};
use crate::discovery::api::gofmt::parse_duration;

use super::docker::{Container, PortBinding};

/// Registrator's default check interval.
pub const DEFAULT_CHECK_INTERVAL: &str = "10s";

/// The registrator's flags, as the rules need them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// This host's name: the first part of every service ID.
    pub hostname: String,
    /// The address for ports bound to every interface (`0.0.0.0`, `::`).
    pub host_ip: Option<IpAddr>,
    /// `--ip`: one address for every service.
    pub ip: Option<IpAddr>,
    /// `--internal`: the container's address and exposed port.
    pub internal: bool,
    /// `--explicit`: only containers with a `SERVICE_NAME`.
    pub explicit: bool,
    /// `--tags`: added to every service.
    pub tags: Vec<String>,
    /// `--use-ip-from-label`.
    pub ip_label: Option<String>,
    /// `--enable-script-checks`: allow `SERVICE_CHECK_SCRIPT`.
    pub script_checks: bool,
    /// `DeregisterCriticalServiceAfter` for checks that set none (None: unset).
    pub deregister_critical_after: Option<String>,
}

/// What a container yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub services: Vec<ServiceDefinition>,
    /// Decisions worth an info line: the address chosen and why, skipped ports.
    pub notes: Vec<String>,
    /// Metadata or checks that were changed or dropped.
    pub warnings: Vec<String>,
}

/// One port of the container as Registrator sees it.
#[derive(Debug, Clone)]
struct Port {
    /// The exposed (container) port, as text (`80`).
    exposed: String,
    udp: bool,
    /// Empty when the port is not published.
    host_port: String,
    host_ip: String,
}

/// The services a running container should have.
pub fn derive(container: &Container, rules: &Rules) -> Derived {
    let mut out = Derived::default();
    let name = container.name.trim_start_matches('/');
    let short = container.id.get(..12).unwrap_or(&container.id);
    if !container.state.running {
        // A stopped container's `Ports` is empty, which would read as
        // "every exposed port on the same host port".
        out.notes.push(format!(
            "container {name} ({short}) is not running; nothing to register"
        ));
        return out;
    }
    let ports = ports(container);
    let published: Vec<&Port> = ports
        .iter()
        .filter(|p| {
            let keep = rules.internal || !p.host_port.is_empty();
            if !keep {
                out.notes.push(format!(
                    "container {name} ({short}): port {} not published on the host; skipped (use -p, or --internal)",
                    port_key(p)
                ));
            }
            keep
        })
        .collect();
    let group = published.len() > 1;
    let env = container.config.env.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = container.config.labels.as_ref().unwrap_or(&empty);
    for port in published {
        let what = format!("container {name} ({short}) port {}", port_key(port));
        let (mut meta, from_port) = metadata(env, labels, &port.exposed);
        if meta.get("ignore").is_some_and(|v| !v.is_empty()) {
            out.notes
                .push(format!("{what}: SERVICE_IGNORE is set; not registered"));
            continue;
        }
        let mut service_name = match meta.remove("name").filter(|n| !n.is_empty()) {
            Some(n) => n,
            None if rules.explicit => {
                out.notes.push(format!(
                    "{what}: no SERVICE_NAME and --explicit; not registered"
                ));
                continue;
            }
            None => default_name(&container.config.image),
        };
        if group && !from_port.contains("name") {
            service_name = format!("{service_name}-{}", port.exposed);
        }
        let mut id = format!("{}:{name}:{}", rules.hostname, port.exposed);
        let mut extra_tags = rules.tags.clone();
        if port.udp {
            id.push_str(":udp");
            extra_tags.push("udp".to_owned());
        }
        if let Some(custom) = meta.remove("id").filter(|i| !i.is_empty()) {
            id = custom;
        }
        let tags = combine_tags(meta.remove("tags").as_deref().unwrap_or(""), &extra_tags);
        meta.remove("ignore");

        let Some((address, port_number, why)) = address(container, port, rules) else {
            out.warnings.push(format!(
                "{what}: port {:?} is not a port number; not registered",
                if rules.internal {
                    &port.exposed
                } else {
                    &port.host_port
                }
            ));
            continue;
        };
        let shown = address.as_deref().unwrap_or("the agent's node address");
        out.notes.push(format!(
            "{what}: service {service_name} ({id}) at {shown}:{port_number} ({why})"
        ));
        let check = check(
            &meta,
            address.as_deref(),
            port_number,
            rules,
            &what,
            &mut out.warnings,
        );
        let meta = consul_meta(meta, &what, &mut out.warnings);
        out.services.push(ServiceDefinition {
            id: Some(id),
            name: Some(service_name),
            tags: Some(tags),
            address,
            port: Some(port_number),
            meta: Some(meta),
            check,
            ..ServiceDefinition::default()
        });
    }
    out
}

fn port_key(p: &Port) -> String {
    format!("{}/{}", p.exposed, if p.udp { "udp" } else { "tcp" })
}

/// Exposed ports as if published on the same host port, then the real
/// bindings (Registrator's order: the second replaces the first).
fn ports(c: &Container) -> Vec<Port> {
    let mut by_key: BTreeMap<String, Port> = BTreeMap::new();
    let parse = |key: &str, binding: Option<&PortBinding>| {
        let (exposed, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        Port {
            exposed: exposed.to_owned(),
            udp: proto == "udp",
            host_port: binding.map(|b| b.host_port.clone()).unwrap_or_default(),
            host_ip: binding
                .map(|b| b.host_ip.clone())
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_owned()),
        }
    };
    for key in c.config.exposed_ports.iter().flatten().map(|(k, _)| k) {
        let (exposed, _) = key.split_once('/').unwrap_or((key, "tcp"));
        let same = PortBinding {
            host_ip: "0.0.0.0".to_owned(),
            host_port: exposed.to_owned(),
        };
        by_key.insert(key.clone(), parse(key, Some(&same)));
    }
    for (key, bindings) in c.network_settings.ports.iter().flatten() {
        let bindings = bindings.as_deref().unwrap_or_default();
        let first = bindings
            .iter()
            .find(|b| !b.host_ip.contains(':'))
            .or(bindings.first());
        by_key.insert(key.clone(), parse(key, first));
    }
    by_key.into_values().collect()
}

/// The address (None: let the agent use its node's), the port, and why.
fn address(c: &Container, p: &Port, rules: &Rules) -> Option<(Option<String>, u16, String)> {
    if rules.internal {
        let port: u16 = p.exposed.parse().ok()?;
        return Some(match container_ip(c) {
            Some((ip, net)) => (
                Some(ip),
                port,
                format!("--internal: the container's address on network {net}"),
            ),
            None => (
                rules.host_ip.map(|ip| ip.to_string()),
                port,
                "--internal, but the container has no address of its own (host network?): the host's address".to_owned(),
            ),
        });
    }
    let port: u16 = p.host_port.parse().ok()?;
    if let Some(label) = &rules.ip_label {
        let from_label = c
            .config
            .labels
            .as_ref()
            .and_then(|l| l.get(label))
            .map(|v| v.split('/').next().unwrap_or("").trim().to_owned())
            .filter(|v| !v.is_empty());
        if let Some(ip) = from_label {
            return Some((Some(ip), port, format!("label {label}")));
        }
    }
    if let Some(ip) = rules.ip {
        return Some((Some(ip.to_string()), port, "--ip".to_owned()));
    }
    let bound: Option<IpAddr> = p.host_ip.parse().ok();
    match bound {
        Some(ip) if !ip.is_unspecified() => {
            Some((Some(ip.to_string()), port, format!("bound to {ip}")))
        }
        _ => Some(match rules.host_ip {
            Some(ip) => (
                Some(ip.to_string()),
                port,
                format!("bound to {}: this host's address", p.host_ip),
            ),
            None => (
                None,
                port,
                format!("bound to {}; no host address found, use --ip", p.host_ip),
            ),
        }),
    }
}

/// The container's IP and the network it is on.
fn container_ip(c: &Container) -> Option<(String, String)> {
    let nets = c.network_settings.networks.as_ref();
    let mode = &c.host_config.network_mode;
    if let Some(n) = nets.and_then(|n| n.get(mode)) {
        if !n.ip_address.is_empty() {
            return Some((n.ip_address.clone(), mode.clone()));
        }
    }
    if !c.network_settings.ip_address.is_empty() {
        return Some((c.network_settings.ip_address.clone(), "bridge".to_owned()));
    }
    nets?
        .iter()
        .find(|(_, n)| !n.ip_address.is_empty())
        .map(|(name, n)| (n.ip_address.clone(), name.clone()))
}

/// `SERVICE_*` pairs for one exposed port: env first, labels second (sorted,
/// so the result does not depend on map order); the keys set port-scoped.
fn metadata(
    env: &[String],
    labels: &BTreeMap<String, String>,
    port: &str,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut meta = BTreeMap::new();
    let mut from_port = BTreeSet::new();
    let pairs = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .chain(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in pairs {
        let Some(rest) = k.strip_prefix("SERVICE_") else {
            continue;
        };
        let key = rest.to_lowercase();
        match key.split_once('_') {
            Some((p, scoped)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                if p == port {
                    meta.insert(scoped.to_owned(), v.to_owned());
                    from_port.insert(scoped.to_owned());
                }
            }
            _ if from_port.contains(&key) => {}
            _ => {
                meta.insert(key, v.to_owned());
            }
        }
    }
    (meta, from_port)
}

/// The image's base name without tag or digest (`reg:5000/a/web:1.2` → `web`).
fn default_name(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split('@').next().unwrap_or(base);
    base.split(':').next().unwrap_or(base).to_owned()
}

/// `SERVICE_TAGS` (comma list, `\,` for a literal comma) then the extra
/// tags; trimmed, empty ones and repeats dropped.
fn combine_tags(list: &str, extra: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars().peekable();
    let mut split = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => split.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    split.push(current);
    for t in split.into_iter().chain(extra.iter().cloned()) {
        let t = t.trim().to_owned();
        if !t.is_empty() && !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

/// `host:port`, bracketing an IPv6 host.
fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A duration value from the metadata, if Go would parse it.
fn duration(
    meta: &BTreeMap<String, String>,
    key: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let v = meta.get(key).filter(|v| !v.is_empty())?;
    match parse_duration(v) {
        Ok(_) => Some(v.clone()),
        Err(e) => {
            warnings.push(format!(
                "{what}: SERVICE_{} {v:?} is not a duration ({e}); ignored (write e.g. 10s)",
                key.to_uppercase()
            ));
            None
        }
    }
}

/// The one check the metadata asks for.
fn check(
    meta: &BTreeMap<String, String>,
    ip: Option<&str>,
    port: u16,
    rules: &Rules,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<CheckDefinition> {
    let get = |k: &str| meta.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut check = CheckDefinition::default();
    let needs_ip =
        get("check_http").is_some() || get("check_https").is_some() || get("check_tcp").is_some();
    let target = match ip {
        Some(ip) => ip,
        None if needs_ip => {
            warnings.push(format!(
                "{what}: no address to check (set --ip); the check is left out"
            ));
            ""
        }
        None => "",
    };
    let mut script = get("check_script");
    if script.is_some() && !rules.script_checks {
        warnings.push(format!(
            "{what}: SERVICE_CHECK_SCRIPT runs in the Consul agent; ignored without --enable-script-checks"
        ));
        script = None;
    }
    if let Some(path) = get("check_http").filter(|_| !target.is_empty()) {
        check.http = Some(format!("http://{}{path}", host_port(target, port)));
        check.method = get("check_http_method").map(str::to_owned);
    } else if let Some(path) = get("check_https").filter(|_| !target.is_empty()) {
        check.http = Some(format!("https://{}{path}", host_port(target, port)));
        check.method = get("check_https_method").map(str::to_owned);
    } else if let Some(s) = script {
        let s = s
            .replace("$SERVICE_IP", ip.unwrap_or(""))
            .replace("$SERVICE_PORT", &port.to_string());
        check.args = Some(vec!["sh".into(), "-c".into(), s]);
    } else if let Some(ttl) = duration(meta, "check_ttl", what, warnings) {
        check.ttl = Some(ttl.into());
    } else if get("check_tcp").is_some() && !target.is_empty() {
        check.tcp = Some(host_port(target, port));
    } else {
        return None;
    }
    if check.ttl.is_none() {
        let interval = duration(meta, "check_interval", what, warnings)
            .unwrap_or_else(|| DEFAULT_CHECK_INTERVAL.to_owned());
        check.interval = Some(interval.into());
        check.timeout = duration(meta, "check_timeout", what, warnings).map(Into::into);
    }
    check.status = get("check_initial_status").map(str::to_owned);
    check.deregister_critical_service_after =
        duration(meta, "check_deregister_after", what, warnings)
            .or_else(|| rules.deregister_critical_after.clone())
            .map(Into::into);
    Some(check)
}

/// The metadata as Consul `Meta`: characters Consul refuses in a key become
/// `_`, and pairs it would refuse anyway are left out, each with a warning
/// (one bad pair would fail the whole registration).
fn consul_meta(
    meta: BTreeMap<String, String>,
    what: &str,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in meta {
        let fixed: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if fixed != key {
            warnings.push(format!(
                "{what}: meta key {key:?} has characters Consul refuses; sent as {fixed:?}"
            ));
        }
        let why = if fixed.len() > META_KEY_MAX_LEN {
            format!("its key is longer than {META_KEY_MAX_LEN} characters")
        } else if fixed.starts_with(META_RESERVED_PREFIX) {
            format!("the key prefix {META_RESERVED_PREFIX:?} is reserved by Consul")
        } else if value.len() > META_VALUE_MAX_LEN {
            format!("its value is longer than {META_VALUE_MAX_LEN} characters")
        } else if out.len() == META_MAX_PAIRS {
            format!("Consul takes at most {META_MAX_PAIRS} pairs")
        } else {
            match out.entry(fixed) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(value);
                    continue;
                }
                std::collections::btree_map::Entry::Occupied(taken) => {
                    format!("another key is also sent as {:?}", taken.key())
                }
            }
        };
        warnings.push(format!("{what}: meta {key:?} left out: {why}"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Container {
        let path = format!(
            "{}/tests/fixtures/docker/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn rules() -> Rules {
        Rules {
            hostname: "vm".into(),
            host_ip: Some("192.0.2.2".parse().unwrap()),
            deregister_critical_after: Some("1m".into()),
            ..Rules::default()
        }
    }

    /// A container like the bridge fixture with this env and these labels.
    fn with(env: &[&str], labels: &[(&str, &str)]) -> Container {
        let mut c = fixture("bridge-published");
        c.config.env = Some(env.iter().map(|s| s.to_string()).collect());
        c.config.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c
    }

    fn one_port(mut c: Container) -> Container {
        c.config.exposed_ports.as_mut().unwrap().remove("8080/udp");
        c.network_settings
            .ports
            .as_mut()
            .unwrap()
            .remove("8080/udp");
        c
    }

    fn by_id<'a>(d: &'a Derived, id: &str) -> &'a ServiceDefinition {
        d.services
            .iter()
            .find(|s| s.id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no service {id} in {:#?}", d.services))
    }

    #[test]
    fn bridge_container_with_two_published_ports() {
        // Real `docker inspect` of Engine 20.10: `-p 80 -p 127.0.0.1::8080/udp
        // -e SERVICE_NAME=hello -e SERVICE_TAGS=rest -l SERVICE_80_NAME=web`.
        let d = derive(&fixture("bridge-published"), &rules());
        assert_eq!(d.services.len(), 2, "{d:#?}");
        let web = by_id(&d, "vm:pf-sample:80");
        // The port's own name: no -80 suffix.
        assert_eq!(web.name.as_deref(), Some("web"));
        assert_eq!(web.port, Some(32768));
        // Bound to 0.0.0.0 (and ::): this host's address.
        assert_eq!(web.address.as_deref(), Some("192.0.2.2"));
        assert_eq!(web.tags, Some(vec!["rest".to_string()]));
        assert_eq!(web.meta, Some(BTreeMap::new()));
        assert_eq!(web.check, None);
        let udp = by_id(&d, "vm:pf-sample:8080:udp");
        // Two ports registered, no name of its own: suffixed.
        assert_eq!(udp.name.as_deref(), Some("hello-8080"));
        assert_eq!(udp.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(udp.tags, Some(vec!["rest".to_string(), "udp".to_string()]));
        assert!(
            d.notes.iter().any(|n| n.contains("at 192.0.2.2:32768")
                && n.contains("bound to 0.0.0.0: this host's address")),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn unpublished_port_on_a_user_network_needs_internal() {
        // `--network pf-net -e SERVICE_NAME=api -e SERVICE_CHECK_HTTP=/health
        // -l SERVICE_REGION=eu1`, nothing published.
        let c = fixture("user-network");
        let d = derive(&c, &rules());
        assert!(d.services.is_empty());
        assert!(d.notes[0].contains("80/tcp not published"), "{:?}", d.notes);
        // --internal: the address on pf-net (the top-level IPAddress is empty).
        let d = derive(
            &c,
            &Rules {
                internal: true,
                ..rules()
            },
        );
        let api = by_id(&d, "vm:pf-usernet:80");
        assert_eq!(api.name.as_deref(), Some("api"));
        assert_eq!(api.address.as_deref(), Some("172.18.0.2"));
        assert_eq!(api.port, Some(80));
        assert_eq!(
            api.meta,
            Some(BTreeMap::from([
                ("check_http".to_string(), "/health".to_string()),
                ("region".to_string(), "eu1".to_string()),
            ]))
        );
        let check = api.check.as_ref().unwrap();
        assert_eq!(check.http.as_deref(), Some("http://172.18.0.2:80/health"));
        assert_eq!(check.interval, Some(json!("10s")));
        assert_eq!(check.deregister_critical_service_after, Some(json!("1m")));
    }

    #[test]
    fn host_network_exposed_port_counts_as_published() {
        let d = derive(&fixture("host-network"), &rules());
        let s = by_id(&d, "vm:pf-host:80");
        assert_eq!(s.name.as_deref(), Some("pilotfish-test-busybox"));
        assert_eq!(s.port, Some(80));
        assert_eq!(s.address.as_deref(), Some("192.0.2.2"));
        // SERVICE_8081_NAME names a port the container does not expose.
        assert_eq!(d.services.len(), 1);
    }

    #[test]
    fn address_precedence() {
        let c = one_port(with(&[], &[("ip", "10.1.2.3/24")]));
        let addr = |r: Rules| derive(&c, &r).services[0].address.clone();
        assert_eq!(addr(rules()), Some("192.0.2.2".into()));
        let ip = Some("198.51.100.7".parse().unwrap());
        assert_eq!(addr(Rules { ip, ..rules() }), Some("198.51.100.7".into()));
        // The label beats --ip; the CIDR suffix is dropped.
        assert_eq!(
            addr(Rules {
                ip,
                ip_label: Some("ip".into()),
                ..rules()
            }),
            Some("10.1.2.3".into())
        );
        // A container without the label falls back to --ip.
        assert_eq!(
            addr(Rules {
                ip,
                ip_label: Some("other".into()),
                ..rules()
            }),
            Some("198.51.100.7".into())
        );
        // --internal beats everything: container IP, exposed port.
        let d = derive(
            &c,
            &Rules {
                ip,
                internal: true,
                ..rules()
            },
        );
        assert_eq!(d.services[0].address.as_deref(), Some("172.17.0.2"));
        assert_eq!(d.services[0].port, Some(80));
        // No host address known: the agent's node address.
        assert_eq!(
            addr(Rules {
                host_ip: None,
                ..rules()
            }),
            None
        );
        // A binding to one address keeps it even with a host address.
        let mut c = c.clone();
        c.network_settings.ports.as_mut().unwrap().insert(
            "80/tcp".into(),
            Some(vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "8000".into(),
            }]),
        );
        assert_eq!(
            derive(&c, &rules()).services[0].address.as_deref(),
            Some("127.0.0.1")
        );
    }

    #[test]
    fn labels_beat_env_and_port_keys_beat_generic_ones() {
        let c = one_port(with(
            &[
                "SERVICE_NAME=from-env",
                "SERVICE_TAGS=a",
                "SERVICE_80_REGION=port-env",
                "SERVICE_ZONE=env",
                "OTHER=x",
            ],
            &[
                ("SERVICE_NAME", "from-label"),
                ("SERVICE_REGION", "generic-label"),
                ("SERVICE_ZONE", "label"),
                ("SERVICE_443_NAME", "other-port"),
            ],
        ));
        let d = derive(&c, &rules());
        let s = &d.services[0];
        assert_eq!(s.name.as_deref(), Some("from-label"));
        assert_eq!(
            s.meta,
            Some(BTreeMap::from([
                ("region".to_string(), "port-env".to_string()),
                ("zone".to_string(), "label".to_string()),
            ]))
        );
        // One port: no suffix.
        assert_eq!(s.id.as_deref(), Some("vm:pf-sample:80"));
    }

    #[test]
    fn ignore_explicit_and_custom_ids() {
        let c = with(&["SERVICE_IGNORE=1"], &[]);
        assert!(derive(&c, &rules()).services.is_empty());
        // Ignore one port only.
        let d = derive(&with(&["SERVICE_8080_IGNORE=yes"], &[]), &rules());
        assert_eq!(d.services.len(), 1);
        // Still a group of two published ports: the suffix stays (Registrator).
        assert_eq!(
            d.services[0].name.as_deref(),
            Some("pilotfish-test-busybox-80")
        );
        // --explicit: the port-scoped name is enough; the other is skipped.
        let explicit = Rules {
            explicit: true,
            ..rules()
        };
        let d = derive(&with(&[], &[("SERVICE_80_NAME", "web")]), &explicit);
        assert_eq!(d.services.len(), 1);
        assert_eq!(d.services[0].name.as_deref(), Some("web"));
        assert!(derive(&with(&[], &[]), &explicit).services.is_empty());
        let d = derive(&one_port(with(&["SERVICE_ID=custom-1"], &[])), &rules());
        assert_eq!(d.services[0].id.as_deref(), Some("custom-1"));
        assert_eq!(d.services[0].meta, Some(BTreeMap::new()));
    }

    #[test]
    fn tags_combine_with_flags_and_escapes() {
        assert_eq!(
            combine_tags(r" a, b\,c ,,a", &["x".into(), "b\\".into()]),
            vec!["a", "b,c", "x", "b\\"]
        );
        assert_eq!(combine_tags("", &[]), Vec::<String>::new());
        let d = derive(
            &one_port(with(&["SERVICE_TAGS=rest,v1"], &[])),
            &Rules {
                tags: vec!["prod".into()],
                ..rules()
            },
        );
        assert_eq!(
            d.services[0].tags,
            Some(vec!["rest".into(), "v1".into(), "prod".into()])
        );
    }

    #[test]
    fn default_names() {
        assert_eq!(default_name("redis"), "redis");
        assert_eq!(default_name("redis:7"), "redis");
        assert_eq!(default_name("reg.example:5000/team/web:1.2"), "web");
        assert_eq!(default_name("web@sha256:abcd"), "web");
    }

    #[test]
    fn checks_first_match_in_registrator_order() {
        let check = |env: &[&str], r: Rules| {
            derive(&one_port(with(env, &[])), &r).services[0]
                .check
                .clone()
        };
        let c = check(
            &[
                "SERVICE_CHECK_TCP=true",
                "SERVICE_CHECK_HTTP=/health",
                "SERVICE_CHECK_HTTP_METHOD=HEAD",
                "SERVICE_CHECK_TIMEOUT=2s",
                "SERVICE_CHECK_INTERVAL=5s",
            ],
            rules(),
        )
        .unwrap();
        assert_eq!(c.http.as_deref(), Some("http://192.0.2.2:32768/health"));
        assert_eq!(c.method.as_deref(), Some("HEAD"));
        assert_eq!(c.tcp, None);
        assert_eq!(c.interval, Some(json!("5s")));
        assert_eq!(c.timeout, Some(json!("2s")));
        let c = check(&["SERVICE_CHECK_HTTPS=/x"], rules()).unwrap();
        assert_eq!(c.http.as_deref(), Some("https://192.0.2.2:32768/x"));
        let c = check(
            &[
                "SERVICE_CHECK_TCP=true",
                "SERVICE_CHECK_INITIAL_STATUS=passing",
                "SERVICE_CHECK_DEREGISTER_AFTER=5m",
            ],
            rules(),
        )
        .unwrap();
        assert_eq!(c.tcp.as_deref(), Some("192.0.2.2:32768"));
        assert_eq!(c.interval, Some(json!("10s")));
        assert_eq!(c.status.as_deref(), Some("passing"));
        assert_eq!(c.deregister_critical_service_after, Some(json!("5m")));
        let c = check(&["SERVICE_CHECK_TTL=30s", "SERVICE_CHECK_TCP=1"], rules()).unwrap();
        assert_eq!(c.ttl, Some(json!("30s")));
        assert_eq!(c.interval, None);
        // Script checks only when enabled; otherwise the next in order.
        let env = [
            "SERVICE_CHECK_SCRIPT=nc -z $SERVICE_IP $SERVICE_PORT",
            "SERVICE_CHECK_TCP=1",
        ];
        assert!(check(&env, rules()).unwrap().tcp.is_some());
        let c = check(
            &env,
            Rules {
                script_checks: true,
                ..rules()
            },
        )
        .unwrap();
        assert_eq!(
            c.args,
            Some(vec![
                "sh".to_string(),
                "-c".to_string(),
                "nc -z 192.0.2.2 32768".to_string()
            ])
        );
        // No check at all, and no default deregistration without one.
        assert_eq!(check(&["SERVICE_REGION=x"], rules()), None);
        // A bad duration is dropped with a warning, the default used.
        let d = derive(
            &one_port(with(
                &["SERVICE_CHECK_TCP=1", "SERVICE_CHECK_INTERVAL=often"],
                &[],
            )),
            &rules(),
        );
        assert_eq!(
            d.services[0].check.as_ref().unwrap().interval,
            Some(json!("10s"))
        );
        assert!(
            d.warnings[0].contains("\"often\" is not a duration"),
            "{:?}",
            d.warnings
        );
        // IPv6 addresses are bracketed.
        let c = check(
            &["SERVICE_CHECK_TCP=1"],
            Rules {
                ip: Some("2001:db8::1".parse().unwrap()),
                ..rules()
            },
        )
        .unwrap();
        assert_eq!(c.tcp.as_deref(), Some("[2001:db8::1]:32768"));
    }

    #[test]
    fn meta_follows_consuls_rules() {
        let long = "v".repeat(600);
        let long_value = format!("SERVICE_BIG={long}");
        let d = derive(
            &one_port(with(
                &["SERVICE_CONSUL-X=1", &long_value, "SERVICE_A_B=ok"],
                &[("SERVICE_COM.EXAMPLE", "dotted")],
            )),
            &rules(),
        );
        assert_eq!(
            d.services[0].meta,
            Some(BTreeMap::from([
                ("a_b".to_string(), "ok".to_string()),
                ("com_example".to_string(), "dotted".to_string()),
            ]))
        );
        assert_eq!(d.warnings.len(), 3, "{:?}", d.warnings);
        let meta = consul_meta(
            (0..70).map(|i| (format!("k{i:02}"), "v".into())).collect(),
            "x",
            &mut Vec::new(),
        );
        assert_eq!(meta.len(), META_MAX_PAIRS);
        // What we send passes Consul's own check.
        crate::discovery::api::catalog::check_meta(&meta, false).unwrap();
    }

    #[test]
    fn an_exited_container_has_no_services() {
        // Its `Ports` is `{}`, which would otherwise read as port 80 on host
        // port 80.
        let c = fixture("exited");
        assert!(!c.state.running);
        assert_eq!(c.state.exit_code, 3);
        assert!(derive(&c, &rules()).services.is_empty());
    }
}
