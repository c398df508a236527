//! `[[watches]]`: one task per watch, each a loop of blocking queries through
//! `discovery::client` (never polling), reporting events with source
//! `watch.<name>` to the runtime.
//!
//! - A service watch compares the set of passing instances as (address, port,
//!   tags): `changed` when it differs, `healthy` when it goes from 0 to at
//!   least 1 instance, `unhealthy` when it goes to 0 — including the first
//!   answer, so a service that is empty at start says `unhealthy` once.
//!   A health check's output changing moves Consul's index but not this set,
//!   so it fires nothing.
//! - A key or prefix watch fires `changed` when the value (or any key, value
//!   or flags under the prefix) differs, and on its first answer when the key
//!   exists, so a job sees the starting value.
//! - Each watch keeps its own state (ContainerPilot keyed it by service name
//!   alone, so two watches of one service with different tags collided).
//! - An unreachable agent is logged when the outage starts and when it ends,
//!   retried with backoff forever, and fires nothing: only an answer can say
//!   that a service has no instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::duration::format_duration;
use crate::config::{WatchConfig, WatchTarget};
use crate::control::WatchStatus;
use crate::discovery::client::retry::{next_index, Backoff, Outage, RateLimit};
use crate::discovery::client::{Client, Error, Query};
use crate::events::EventKind;

/// How long one blocking query waits at most (Consul's default is 5 min).
const WAIT: Duration = Duration::from_secs(300);

/// The part of an answer a watch compares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    /// Sorted (address, port, sorted tags) of every passing instance.
    Instances(Vec<(String, u16, Vec<String>)>),
    /// Sorted (key, flags, value) of every entry (one for a key watch).
    Entries(Vec<(String, u64, Option<String>)>),
}

impl Observed {
    fn count(&self) -> usize {
        match self {
            Observed::Instances(v) => v.len(),
            Observed::Entries(v) => v.len(),
        }
    }
}

/// The events one answer fires, given the previous one (None at first).
fn events(before: Option<&Observed>, now: &Observed) -> Vec<EventKind> {
    let mut out = Vec::new();
    match now {
        Observed::Instances(v) => {
            let was = before.map(Observed::count);
            if before != Some(now) && !(before.is_none() && v.is_empty()) {
                out.push(EventKind::Changed);
            }
            match (was, v.len()) {
                (None | Some(0), n) if n > 0 => out.push(EventKind::Healthy),
                (None, 0) => out.push(EventKind::Unhealthy),
                (Some(w), 0) if w > 0 => out.push(EventKind::Unhealthy),
                _ => {}
            }
        }
        Observed::Entries(v) => {
            let changed = match before {
                None => !v.is_empty(),
                Some(b) => b != now,
            };
            if changed {
                out.push(EventKind::Changed);
            }
        }
    }
    out
}

fn describe(target: &WatchTarget) -> String {
    match target {
        WatchTarget::Service { name, tag, dc } => {
            let mut s = format!("service {name}");
            if let Some(t) = tag {
                s.push_str(&format!(" tag {t}"));
            }
            if let Some(d) = dc {
                s.push_str(&format!(" dc {d}"));
            }
            s
        }
        WatchTarget::Key(k) => format!("key {k}"),
        WatchTarget::Prefix(p) => format!("prefix {p}"),
    }
}

/// The runtime's handle on one watch task; dropping it stops the task.
pub struct Watch {
    pub name: String,
    status: Arc<Mutex<WatchStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    /// Start watching; every batch of events goes to `out` as (watch name, events).
    pub fn spawn(
        cfg: WatchConfig,
        client: Client,
        out: mpsc::UnboundedSender<(String, Vec<EventKind>)>,
    ) -> Watch {
        let status = Arc::new(Mutex::new(WatchStatus {
            name: cfg.name.clone(),
            target: describe(&cfg.target),
            ..WatchStatus::default()
        }));
        let name = cfg.name.clone();
        let task = tokio::spawn(run(cfg, client, out, Arc::clone(&status)));
        Watch { name, status, task }
    }

    pub fn status(&self) -> WatchStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn query(client: &Client, target: &WatchTarget, q: &Query) -> Result<(Observed, u64), Error> {
    match target {
        WatchTarget::Service { name, tag, dc } => {
            let q = Query {
                dc: dc.clone(),
                ..q.clone()
            };
            let (rows, meta) = client
                .health_service(name, tag.as_deref(), true, &q)
                .await?;
            let mut v: Vec<(String, u16, Vec<String>)> = rows
                .into_iter()
                .map(|e| {
                    // An empty service address means the node's (Consul's rule).
                    let addr = if e.service.address.is_empty() {
                        e.node.address
                    } else {
                        e.service.address
                    };
                    let mut tags = e.service.tags;
                    tags.sort();
                    (addr, e.service.port, tags)
                })
                .collect();
            v.sort();
            Ok((Observed::Instances(v), meta.index))
        }
        WatchTarget::Key(k) => {
            let (pair, meta) = client.kv_get(k, q).await?;
            Ok((
                Observed::Entries(
                    pair.into_iter()
                        .map(|p| (p.key, p.flags, p.value))
                        .collect(),
                ),
                meta.index,
            ))
        }
        WatchTarget::Prefix(p) => {
            let (pairs, meta) = client.kv_list(p, q).await?;
            let mut v: Vec<_> = pairs
                .into_iter()
                .map(|p| (p.key, p.flags, p.value))
                .collect();
            v.sort();
            Ok((Observed::Entries(v), meta.index))
        }
    }
}

async fn run(
    cfg: WatchConfig,
    client: Client,
    out: mpsc::UnboundedSender<(String, Vec<EventKind>)>,
    status: Arc<Mutex<WatchStatus>>,
) {
    let mut index = 0u64;
    let mut last: Option<Observed> = None;
    let mut outage = Outage::default();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut rate = RateLimit::new(20.0, 2.0);
    let what = describe(&cfg.target);
    loop {
        let wait = rate.take(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let q = if index == 0 {
            Query::default()
        } else {
            Query::blocking(index, WAIT)
        };
        match query(&client, &cfg.target, &q).await {
            Ok((observed, returned)) => {
                if let Some((lasted, failures)) = outage.recover(Instant::now()) {
                    tracing::info!(
                        "watch {}: the agent at {} answers again after {} ({failures} failed queries)",
                        cfg.name,
                        client.address(),
                        format_duration(lasted)
                    );
                }
                backoff.reset();
                index = next_index(index, returned);
                let fired = events(last.as_ref(), &observed);
                if let Ok(mut s) = status.lock() {
                    s.instances = Some(observed.count());
                    s.outage_since = None;
                    s.last_error = None;
                    if fired.contains(&EventKind::Changed) {
                        s.last_change = Some(crate::control::unix_now());
                    }
                }
                metrics::gauge!(crate::telemetry::WATCH_INSTANCES, "watch" => cfg.name.clone())
                    .set(observed.count() as f64);
                last = Some(observed);
                if !fired.is_empty() {
                    tracing::debug!("watch {} ({what}): {:?}", cfg.name, fired);
                    if out.send((cfg.name.clone(), fired)).is_err() {
                        return;
                    }
                    // Coalesce: changes within `interval` make one more event.
                    if !cfg.interval.is_zero() {
                        tokio::time::sleep(cfg.interval).await;
                    }
                }
            }
            Err(e) => {
                if outage.fail(Instant::now()) {
                    tracing::warn!(
                        "watch {} ({what}): {e}; retrying with backoff, no event fires until it answers",
                        cfg.name
                    );
                }
                if let Ok(mut s) = status.lock() {
                    if e.is_outage() {
                        s.outage_since.get_or_insert_with(crate::control::unix_now);
                    }
                    s.last_error = Some(e.to_string());
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(v: &[(&str, u16)]) -> Observed {
        Observed::Instances(v.iter().map(|(a, p)| (a.to_string(), *p, vec![])).collect())
    }

    #[test]
    fn a_service_empty_at_start_is_unhealthy_once() {
        assert_eq!(events(None, &inst(&[])), vec![EventKind::Unhealthy]);
        assert_eq!(events(Some(&inst(&[])), &inst(&[])), vec![]);
    }

    #[test]
    fn instances_coming_and_going() {
        let one = inst(&[("10.0.0.1", 80)]);
        let two = inst(&[("10.0.0.1", 80), ("10.0.0.2", 80)]);
        assert_eq!(
            events(None, &one),
            vec![EventKind::Changed, EventKind::Healthy]
        );
        assert_eq!(
            events(Some(&inst(&[])), &one),
            vec![EventKind::Changed, EventKind::Healthy]
        );
        assert_eq!(events(Some(&one), &two), vec![EventKind::Changed]);
        assert_eq!(events(Some(&two), &two), vec![]);
        assert_eq!(
            events(Some(&one), &inst(&[])),
            vec![EventKind::Changed, EventKind::Unhealthy]
        );
    }

    #[test]
    fn kv_changes() {
        let v = |s: &str| Observed::Entries(vec![("k".into(), 0, Some(s.into()))]);
        assert_eq!(events(None, &Observed::Entries(vec![])), vec![]);
        assert_eq!(events(None, &v("a")), vec![EventKind::Changed]);
        assert_eq!(events(Some(&v("a")), &v("a")), vec![]);
        assert_eq!(events(Some(&v("a")), &v("b")), vec![EventKind::Changed]);
        assert_eq!(
            events(Some(&v("b")), &Observed::Entries(vec![])),
            vec![EventKind::Changed]
        );
    }
}
