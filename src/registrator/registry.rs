//! What the registrator has registered, as a pure state machine: container
//! starts, exits and removals, and full reconciliations against the agent's
//! services, each turned into the registrations and deregistrations to send.
//! No I/O: the shell inspects containers, reads `/v1/agent/services` and
//! carries out the [`Action`]s.
//!
//! A service is *ours* when this process registered its ID, or, with
//! `--cleanup`, when its ID has Registrator's shape
//! `<host>:<container name>:<port>[:udp]` with this host's name. A
//! reconciliation registers what is missing or different and deregisters
//! ours that no running container explains, except services kept on purpose
//! after a failed exit under `--deregister on-success`.

use std::collections::{BTreeMap, BTreeSet};

use crate::discovery::api::agent::ServiceDefinition;
use crate::discovery::api::catalog::AgentService;

/// One call to make on the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Boxed: a definition is large, an ID small.
    Register(Box<ServiceDefinition>),
    Deregister(String),
}

/// `--deregister`: when a container's exit removes its services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeregisterPolicy {
    /// At every exit.
    #[default]
    Always,
    /// After exit code 0 or a signal (exit code with bit 128); a failed
    /// container stays registered (its check goes critical) until it is
    /// removed or restarted.
    OnSuccess,
}

impl DeregisterPolicy {
    /// Whether an exit with this code (None: the container is gone)
    /// deregisters its services (Registrator's `shouldRemove`).
    pub fn deregisters(self, exit_code: Option<i64>) -> bool {
        match (self, exit_code) {
            (DeregisterPolicy::Always, _) | (_, None) => true,
            (DeregisterPolicy::OnSuccess, Some(code)) => code == 0 || code & 0x80 == 0x80,
        }
    }
}

/// Whether `id` is a Registrator-style service ID of host `hostname`
/// (`^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$`).
pub fn is_registrator_id(id: &str, hostname: &str) -> bool {
    let id = id.strip_suffix(":udp").unwrap_or(id);
    let Some((rest, port)) = id.rsplit_once(':') else {
        return false;
    };
    let Some((host, name)) = rest.rsplit_once(':') else {
        return false;
    };
    let name_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() > 1
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && name_ok && host == hostname
}

/// Whether the agent's copy matches what we would register (the check is
/// not visible in `/v1/agent/services`, so it is not compared).
fn same(def: &ServiceDefinition, svc: &AgentService) -> bool {
    def.name.as_deref() == Some(svc.service.as_str())
        && def.tags.as_deref().unwrap_or_default() == svc.tags.as_slice()
        && def.port.unwrap_or(0) == svc.port
        && def.address.as_deref().unwrap_or("") == svc.address
        && def.meta.clone().unwrap_or_default() == svc.meta
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    hostname: String,
    cleanup: bool,
    /// The services of each running container, by container ID.
    running: BTreeMap<String, Vec<ServiceDefinition>>,
    /// Service IDs left registered after a failed exit (`on-success`).
    kept: BTreeMap<String, Vec<String>>,
    /// Every service ID this process registered.
    owned: BTreeSet<String>,
}

fn ids(defs: &[ServiceDefinition]) -> impl Iterator<Item = &String> {
    defs.iter().filter_map(|d| d.id.as_ref())
}

impl Registry {
    pub fn new(hostname: &str, cleanup: bool) -> Registry {
        Registry {
            hostname: hostname.to_owned(),
            cleanup,
            ..Registry::default()
        }
    }

    /// Containers with services registered or kept.
    pub fn containers(&self) -> BTreeSet<String> {
        self.running
            .keys()
            .chain(self.kept.keys())
            .cloned()
            .collect()
    }

    /// Whether the container is believed to be running.
    pub fn is_running(&self, container: &str) -> bool {
        self.running.contains_key(container)
    }

    /// The services registered for a running container.
    pub fn services(&self, container: &str) -> &[ServiceDefinition] {
        self.running.get(container).map_or(&[], Vec::as_slice)
    }

    /// Whether another container's services use this ID.
    fn claimed(&self, id: &str, except: &str) -> bool {
        self.running
            .iter()
            .filter(|(c, _)| c.as_str() != except)
            .any(|(_, defs)| ids(defs).any(|i| i == id))
    }

    /// A container (re)started or changed: register its services, drop the
    /// ones it no longer has.
    pub fn started(&mut self, container: &str, defs: Vec<ServiceDefinition>) -> Vec<Action> {
        let new: BTreeSet<String> = ids(&defs).cloned().collect();
        let old: Vec<String> = self
            .running
            .get(container)
            .map(|d| ids(d).cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(self.kept.remove(container).unwrap_or_default())
            .collect();
        let mut actions: Vec<Action> = old
            .into_iter()
            .filter(|id| !new.contains(id) && !self.claimed(id, container))
            .map(Action::Deregister)
            .collect();
        self.owned.extend(new);
        actions.extend(defs.iter().cloned().map(|d| Action::Register(Box::new(d))));
        if defs.is_empty() {
            self.running.remove(container);
        } else {
            self.running.insert(container.to_owned(), defs);
        }
        actions
    }

    /// A container exited; `deregister` is the policy's verdict.
    pub fn exited(&mut self, container: &str, deregister: bool) -> Vec<Action> {
        let Some(defs) = self.running.remove(container) else {
            return Vec::new();
        };
        let gone: Vec<String> = ids(&defs)
            .filter(|id| !self.claimed(id, container))
            .cloned()
            .collect();
        if deregister {
            gone.into_iter().map(Action::Deregister).collect()
        } else {
            self.kept.insert(container.to_owned(), gone);
            Vec::new()
        }
    }

    /// A container was removed: nothing of it stays.
    pub fn destroyed(&mut self, container: &str) -> Vec<Action> {
        let mut actions = self.exited(container, true);
        actions.extend(
            self.kept
                .remove(container)
                .unwrap_or_default()
                .into_iter()
                .filter(|id| !self.claimed(id, container))
                .map(Action::Deregister),
        );
        actions
    }

    /// Bring the agent in line with the running containers. The caller has
    /// already reported (`exited`/`destroyed`) the containers it knew that
    /// are no longer running. `force` registers every service even when the
    /// agent's copy looks the same (the first pass: the check may differ).
    pub fn reconcile(
        &mut self,
        running: BTreeMap<String, Vec<ServiceDefinition>>,
        actual: &BTreeMap<String, AgentService>,
        force: bool,
    ) -> Vec<Action> {
        self.running = running
            .into_iter()
            .filter(|(_, defs)| !defs.is_empty())
            .collect();
        let desired: BTreeMap<&String, &ServiceDefinition> = self
            .running
            .values()
            .flatten()
            .filter_map(|d| Some((d.id.as_ref()?, d)))
            .collect();
        let kept: BTreeSet<&String> = self.kept.values().flatten().collect();
        let mut actions: Vec<Action> = actual
            .keys()
            .filter(|id| !desired.contains_key(id) && !kept.contains(id))
            .filter(|id| {
                self.owned.contains(*id) || (self.cleanup && is_registrator_id(id, &self.hostname))
            })
            .cloned()
            .map(Action::Deregister)
            .collect();
        for (id, def) in &desired {
            if force || !actual.get(*id).is_some_and(|svc| same(def, svc)) {
                actions.push(Action::Register(Box::new((*def).clone())));
            }
        }
        self.owned.extend(desired.keys().map(|id| (*id).clone()));
        actions
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn def(id: &str, port: u16) -> ServiceDefinition {
        ServiceDefinition {
            id: Some(id.into()),
            name: Some("web".into()),
            tags: Some(vec!["a".into()]),
            address: Some("192.0.2.2".into()),
            port: Some(port),
            meta: Some(BTreeMap::new()),
            ..ServiceDefinition::default()
        }
    }

    fn agent_copy(d: &ServiceDefinition) -> AgentService {
        AgentService {
            id: d.id.clone().unwrap(),
            service: d.name.clone().unwrap(),
            tags: d.tags.clone().unwrap(),
            meta: d.meta.clone().unwrap(),
            port: d.port.unwrap(),
            address: d.address.clone().unwrap(),
            ..AgentService::default()
        }
    }

    fn actual(defs: &[&ServiceDefinition]) -> BTreeMap<String, AgentService> {
        defs.iter()
            .map(|d| (d.id.clone().unwrap(), agent_copy(d)))
            .collect()
    }

    fn deregistered(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deregister(id) => Some(id.as_str()),
                Action::Register(_) => None,
            })
            .collect()
    }

    fn registered(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Register(d) => d.id.as_deref(),
                Action::Deregister(_) => None,
            })
            .collect()
    }

    #[test]
    fn registrator_ids() {
        assert!(is_registrator_id("vm:web-1:80", "vm"));
        assert!(is_registrator_id("vm:web_1.x:8080:udp", "vm"));
        assert!(is_registrator_id("a:b:vm:web:80", "a:b:vm"));
        assert!(!is_registrator_id("other:web-1:80", "vm"));
        assert!(!is_registrator_id("vm:web-1:http", "vm"));
        assert!(!is_registrator_id("vm:-web:80", "vm"));
        assert!(!is_registrator_id("vm:w:80", "vm")); // one character: the regex wants two
        assert!(!is_registrator_id("web-vm", "vm"));
        assert!(!is_registrator_id("vm:web:80:tcp", "vm"));
    }

    #[test]
    fn on_success_keeps_failed_containers() {
        use DeregisterPolicy::*;
        assert!(Always.deregisters(Some(1)));
        assert!(OnSuccess.deregisters(Some(0)));
        assert!(OnSuccess.deregisters(Some(137))); // SIGKILL
        assert!(OnSuccess.deregisters(Some(143))); // SIGTERM
        assert!(!OnSuccess.deregisters(Some(1)));
        assert!(!OnSuccess.deregisters(Some(3)));
        assert!(OnSuccess.deregisters(None)); // already removed
    }

    #[test]
    fn start_exit_destroy() {
        let mut r = Registry::new("vm", false);
        let a = def("vm:web:80", 32768);
        let b = def("vm:web:443", 32769);
        let actions = r.started("c1", vec![a.clone(), b.clone()]);
        assert_eq!(registered(&actions), ["vm:web:80", "vm:web:443"]);
        // Restarted with one port fewer: the other goes.
        let actions = r.started("c1", vec![a.clone()]);
        assert_eq!(deregistered(&actions), ["vm:web:443"]);
        assert_eq!(registered(&actions), ["vm:web:80"]);
        // A failed exit under on-success keeps it until destroy.
        assert!(r.exited("c1", false).is_empty());
        assert!(!r.is_running("c1"));
        assert_eq!(r.containers(), BTreeSet::from(["c1".to_string()]));
        assert_eq!(deregistered(&r.destroyed("c1")), ["vm:web:80"]);
        assert!(r.containers().is_empty());
        // A plain exit deregisters; a later destroy has nothing left.
        r.started("c2", vec![b.clone()]);
        assert_eq!(deregistered(&r.exited("c2", true)), ["vm:web:443"]);
        assert!(r.destroyed("c2").is_empty());
        // Unknown containers are no-ops.
        assert!(r.exited("nope", true).is_empty());
    }

    #[test]
    fn a_new_container_with_the_same_service_id_keeps_it() {
        // `docker rm -f web && docker run --name web`: events may arrive
        // late, but the old container's exit must not remove the new one's
        // registration.
        let mut r = Registry::new("vm", false);
        let a = def("vm:web:80", 32768);
        r.started("old", vec![a.clone()]);
        r.started("new", vec![a.clone()]);
        assert!(r.exited("old", true).is_empty());
        assert!(r.destroyed("old").is_empty());
        assert_eq!(deregistered(&r.exited("new", true)), ["vm:web:80"]);
    }

    #[test]
    fn reconcile_registers_missing_and_changed_and_removes_our_orphans() {
        let mut r = Registry::new("vm", false);
        let a = def("vm:web:80", 32768);
        let b = def("vm:api:80", 32769);
        let gone = def("vm:old:80", 32770);
        r.started("c-gone", vec![gone.clone()]);
        // It died while the stream was down; the shell reported it.
        r.exited("c-gone", true);
        let mut moved = agent_copy(&b);
        moved.port = 1;
        let mut agent = actual(&[&a, &gone]);
        agent.insert(moved.id.clone(), moved);
        // Someone else's service and a Registrator-shaped one we never made.
        let foreign = def("foreign", 1);
        let stale = def("vm:stale:80", 2);
        agent.extend(actual(&[&foreign, &stale]));
        let running = BTreeMap::from([
            ("c-a".to_string(), vec![a.clone()]),
            ("c-b".to_string(), vec![b.clone()]),
        ]);
        let actions = r.reconcile(running.clone(), &agent, false);
        // a is up to date; b's port differs.
        assert_eq!(registered(&actions), ["vm:api:80"]);
        // Ours (registered by this process) goes; without --cleanup
        // nothing else does.
        assert_eq!(deregistered(&actions), ["vm:old:80"]);
        // With --cleanup the Registrator-shaped one of this host goes too.
        let mut r = Registry::new("vm", true);
        let actions = r.reconcile(running.clone(), &agent, false);
        assert_eq!(deregistered(&actions), ["vm:old:80", "vm:stale:80"]);
        // The first pass registers everything.
        let actions = r.reconcile(running, &agent, true);
        assert_eq!(registered(&actions), ["vm:api:80", "vm:web:80"]);
    }

    #[test]
    fn reconcile_spares_services_kept_by_on_success() {
        let mut r = Registry::new("vm", true);
        let a = def("vm:web:80", 32768);
        r.started("c1", vec![a.clone()]);
        r.exited("c1", false);
        let actions = r.reconcile(BTreeMap::new(), &actual(&[&a]), false);
        assert!(actions.is_empty(), "{actions:?}");
        // Removed later: now it goes.
        assert_eq!(deregistered(&r.destroyed("c1")), ["vm:web:80"]);
    }
}
