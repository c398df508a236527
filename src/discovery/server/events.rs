//! Consul's user events (`consul event`, `/v1/event`) without serf: what
//! an agent fires, how it reaches every agent of the cluster, and the
//! per-agent ring buffer `event/list` reads.
//!
//! Delivery is best-effort, as serf's user events are, on the member list of
//! `cluster`: the firing agent stamps the event with its Lamport clock and
//! pushes it at once to every member not known to have left (servers and
//! client agents alike, each call on its own task so a dead member costs
//! nothing). Repair rides on the probes every agent already sends every
//! member each 500 ms: a probe carries the event clock and the IDs of the
//! events the prober received within [`REPAIR_WINDOW`] (at most the newest
//! `REPAIR_MAX`), and the answer
//! carries the answerer's events of that window the prober lacks. So an
//! agent that was unreachable for a while (paused, partitioned, its pushes
//! lost) gets what it missed within a probe of being reachable again, as
//! serf's push/pull sync would bring it. An agent that starts afresh takes
//! its first peer's event clock as its floor and ignores older events, as
//! Consul's join with `ignoreOld` does, so a restart does not replay history.
//!
//! On receipt an agent keeps an event only when the node filter matches its
//! node name and, with a service filter, one of its services matches (by
//! service ID, as Consul's agent scans its local services) with one of its
//! tags matching the tag filter, if any. Kept events enter a ring of
//! [`RING`] (oldest dropped); `_rexec` (remote exec, disabled in Consul by
//! default) is dropped with a log line.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::cluster::Status;
use super::Server;
use crate::discovery::api::event::{compile, UserEvent};

/// Events an agent keeps for `event/list` (Consul's `eventBuf`).
pub const RING: usize = 256;
/// serf's `UserEventSizeLimit`, which Consul does not raise.
pub const SIZE_LIMIT: usize = 512;
/// The event version Consul writes and understands.
pub const VERSION: u64 = 1;
/// Consul's remote-exec event, disabled by default.
const REMOTE_EXEC: &str = "_rexec";
/// Events received this recently are offered to members that lack them.
pub const REPAIR_WINDOW: Duration = Duration::from_secs(30);
/// At most this many events are offered for repair (the newest): four
/// rings' worth, which bounds what a probe carries after a flood.
const REPAIR_MAX: usize = 4 * RING;
/// How long an event's ID is remembered so a repair cannot deliver it twice.
const SEEN_FOR: Duration = Duration::from_secs(600);
/// At most this many remembered IDs (the oldest are forgotten first).
const SEEN_MAX: usize = 8192;
/// One push's deadline.
const PUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// The serf user-event name prefix Consul gossips events under.
const SERF_PREFIX: &str = "consul:event:";

/// What a probe says about the events its sender has: its event clock and
/// the IDs it received within [`REPAIR_WINDOW`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub clock: u64,
    pub ids: Vec<String>,
}

/// One agent's events.
pub struct Events {
    book: Mutex<Book>,
    /// Bumped whenever the ring takes an event: wakes blocking lists.
    kept: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Book {
    /// serf's event Lamport clock: the time the next fired event gets.
    clock: u64,
    /// Events older than this (Lamport) predate this agent's first contact.
    floor: u64,
    /// Whether the floor was taken from a peer yet.
    synced: bool,
    ring: VecDeque<UserEvent>,
    /// Every event received (kept or not) within the repair window, oldest first.
    recent: VecDeque<(Instant, UserEvent)>,
    /// IDs received within [`SEEN_FOR`], oldest first, and as a set.
    seen: VecDeque<(Instant, String)>,
    seen_ids: HashSet<String>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            book: Mutex::default(),
            kept: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Book {
    fn prune(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REPAIR_WINDOW)
        {
            self.recent.pop_front();
        }
        while self.recent.len() > REPAIR_MAX {
            self.recent.pop_front();
        }
        while let Some((at, id)) = self.seen.front() {
            if now.duration_since(*at) <= SEEN_FOR && self.seen.len() <= SEEN_MAX {
                break;
            }
            self.seen_ids.remove(id);
            self.seen.pop_front();
        }
    }
}

impl Events {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Lamport time the next fired event gets.
    pub fn clock(&self) -> u64 {
        self.book().clock
    }

    /// Stamp an event fired here with the clock, and advance it.
    pub fn stamp(&self, ev: &mut UserEvent) {
        let mut b = self.book();
        ev.ltime = b.clock;
        b.clock += 1;
    }

    /// A peer's event clock: witnessed (Lamport), and taken as the floor on
    /// this agent's first contact.
    pub fn witness(&self, clock: u64) {
        let mut b = self.book();
        if !b.synced {
            b.synced = true;
            b.floor = clock;
        }
        b.clock = b.clock.max(clock);
    }

    /// An event arrived: true when it is new here (not seen, not older than
    /// the floor). New events are remembered for dedup and repair.
    pub fn receive(&self, ev: &UserEvent, now: Instant) -> bool {
        let mut b = self.book();
        b.clock = b.clock.max(ev.ltime.saturating_add(1));
        b.prune(now);
        if ev.ltime < b.floor || b.seen_ids.contains(&ev.id) {
            return false;
        }
        b.seen_ids.insert(ev.id.clone());
        b.seen.push_back((now, ev.id.clone()));
        b.recent.push_back((now, ev.clone()));
        true
    }

    /// Keep an event in the ring (it passed this agent's filters).
    pub fn keep(&self, ev: UserEvent) {
        {
            let mut b = self.book();
            if b.ring.len() == RING {
                b.ring.pop_front();
            }
            b.ring.push_back(ev);
        }
        self.kept.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The ring, oldest first, only events named `name` when given.
    pub fn list(&self, name: Option<&str>) -> Vec<UserEvent> {
        self.book()
            .ring
            .iter()
            .filter(|e| name.is_none_or(|n| e.name == n))
            .cloned()
            .collect()
    }

    /// Changes whenever the ring takes an event.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.kept.subscribe()
    }

    /// What a probe from this agent says about its events.
    pub fn digest(&self, now: Instant) -> Digest {
        let mut b = self.book();
        b.prune(now);
        Digest {
            clock: b.clock,
            ids: b.recent.iter().map(|(_, e)| e.id.clone()).collect(),
        }
    }

    /// The events of the repair window a peer's digest lacks.
    pub fn missing(&self, theirs: &Digest, now: Instant) -> Vec<UserEvent> {
        let mut b = self.book();
        b.prune(now);
        if b.recent.is_empty() {
            return Vec::new();
        }
        let have: HashSet<&str> = theirs.ids.iter().map(String::as_str).collect();
        b.recent
            .iter()
            .filter(|(_, e)| !have.contains(e.id.as_str()))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// Consul's `validateUserEventParams` and serf's size limits, in their
/// order, with their texts (Consul answers each with 500). `clock` is the
/// Lamport time the event would be sent at (it is part of serf's message).
pub fn validate(ev: &UserEvent, clock: u64) -> Result<(), String> {
    if ev.name.is_empty() {
        return Err("User event missing name".to_string());
    }
    if !ev.tag_filter.is_empty() && ev.service_filter.is_empty() {
        return Err("Cannot provide tag filter without service filter".to_string());
    }
    for (what, re) in [
        ("node", &ev.node_filter),
        ("service", &ev.service_filter),
        ("tag", &ev.tag_filter),
    ] {
        if !re.is_empty() {
            compile(re).map_err(|e| format!("Invalid {what} filter: {e}"))?;
        }
    }
    let encoded = msgpack::consul_event(ev);
    let serf_name = SERF_PREFIX.len() + ev.name.len();
    if serf_name + encoded > SIZE_LIMIT {
        return Err(format!(
            "user event exceeds configured limit of {SIZE_LIMIT} bytes before encoding"
        ));
    }
    if msgpack::serf_message(clock, serf_name, encoded) > SIZE_LIMIT {
        return Err(format!(
            "encoded user event exceeds configured limit of {SIZE_LIMIT} bytes after encoding"
        ));
    }
    Ok(())
}

/// The sizes of the two msgpack encodings serf's limit applies to.
mod msgpack {
    use super::UserEvent;

    /// A string in the msgpack spec Consul's handle writes (`WriteExt`: str8).
    fn str_new(len: usize) -> usize {
        len + match len {
            0..32 => 1,
            32..256 => 2,
            256..65536 => 3,
            _ => 5,
        }
    }

    /// `[]byte` as `bin` (Consul's handle).
    fn bin(len: usize) -> usize {
        len + match len {
            0..256 => 2,
            256..65536 => 3,
            _ => 5,
        }
    }

    /// A string or `[]byte` in the old spec serf's zero handle writes (raw).
    fn raw_old(len: usize) -> usize {
        len + match len {
            0..32 => 1,
            32..65536 => 3,
            _ => 5,
        }
    }

    fn uint(v: u64) -> usize {
        match v {
            0..=127 => 1,
            128..=255 => 2,
            256..=65535 => 3,
            65536..=0xffff_ffff => 5,
            _ => 9,
        }
    }

    /// Consul's msgpack of a `UserEvent`: a map of `ID`, `n`, `v` and the
    /// non-empty `p`, `nf`, `sf`, `tf` (`LTime` is not encoded).
    pub fn consul_event(ev: &UserEvent) -> usize {
        let payload = ev.payload_bytes().len();
        let mut size = 1 + str_new(2) + str_new(ev.id.len());
        size += str_new(1) + str_new(ev.name.len());
        size += str_new(1) + uint(ev.version);
        if payload > 0 {
            size += str_new(1) + bin(payload);
        }
        for f in [&ev.node_filter, &ev.service_filter, &ev.tag_filter] {
            if !f.is_empty() {
                size += str_new(2) + str_new(f.len());
            }
        }
        size
    }

    /// serf's encoded `messageUserEvent` (type byte, then a map of `LTime`,
    /// `Name`, `Payload`, `CC`).
    pub fn serf_message(ltime: u64, name: usize, payload: usize) -> usize {
        1 + 1
            + raw_old(5)
            + uint(ltime)
            + raw_old(4)
            + raw_old(name)
            + raw_old(7)
            + raw_old(payload)
            + raw_old(2)
            + 1
    }
}

impl Server {
    /// This agent's events.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Fire an event from this agent (already validated): stamp it, take
    /// it in here and push it to every member not known to have left.
    pub fn fire_event(&self, mut ev: UserEvent) {
        self.events().stamp(&mut ev);
        self.receive_event(&ev);
        for m in self.members().others() {
            if m.status == Status::Left {
                continue;
            }
            let (client, ev) = (self.client().clone(), ev.clone());
            tokio::spawn(async move {
                let addr = m.info.cluster_addr();
                if let Err(e) = client
                    .call::<_, ()>(&addr, "/event", &ev, PUSH_TIMEOUT)
                    .await
                {
                    tracing::debug!(
                        "event {} not pushed to {}: {e}; probes will repair it",
                        ev.id,
                        m.info.name
                    );
                }
            });
        }
    }

    /// An event arrived (pushed, repaired, or fired here): kept in the ring
    /// when it is new and this agent passes its filters.
    pub(crate) fn receive_event(&self, ev: &UserEvent) {
        if !self.events().receive(ev, Instant::now()) {
            return;
        }
        if ev.version > VERSION {
            tracing::warn!(
                "event {} has version {}: it may have unsupported features",
                ev.name,
                ev.version
            );
        }
        if !self.event_is_for_me(ev) {
            return;
        }
        if ev.name == REMOTE_EXEC {
            tracing::info!("ignoring remote exec event, disabled.");
            return;
        }
        tracing::debug!("new event {} ({})", ev.name, ev.id);
        self.events().keep(ev.clone());
    }

    /// Consul's `shouldProcessUserEvent`: the node filter against this
    /// node's name; the service filter against this node's service IDs,
    /// with the tag filter against that service's tags. A filter that does
    /// not compile drops the event.
    fn event_is_for_me(&self, ev: &UserEvent) -> bool {
        let matches = |re: &str, text: &str| compile(re).is_ok_and(|r| r.is_match(text));
        if !ev.node_filter.is_empty() && !matches(&ev.node_filter, &self.config().node) {
            return false;
        }
        if ev.service_filter.is_empty() {
            return true;
        }
        let Ok(service) = compile(&ev.service_filter) else {
            return false;
        };
        let tag = match ev.tag_filter.as_str() {
            "" => None,
            t => match compile(t) {
                Ok(r) => Some(r),
                Err(_) => return false,
            },
        };
        let node = self.config().node.clone();
        let services = self
            .read(|s| s.catalog_node(&node).0)
            .map(|ns| ns.services)
            .unwrap_or_default();
        services.iter().any(|s| {
            service.is_match(&s.id)
                && tag
                    .as_ref()
                    .is_none_or(|t| s.tags.iter().any(|tag| t.is_match(tag)))
        })
    }

    /// The event part of this agent's probes.
    pub(crate) fn event_digest(&self) -> Digest {
        self.events().digest(Instant::now())
    }

    /// A peer's probe or answer: witness its clock, take in what it sent.
    pub(crate) fn heard_events(&self, digest: &Digest, sent: &[UserEvent]) {
        self.events().witness(digest.clock);
        for ev in sent {
            self.receive_event(ev);
        }
    }

    /// The events a prober lacks, for the answer to its probe.
    pub(crate) fn events_missing(&self, theirs: &Digest) -> Vec<UserEvent> {
        self.events().missing(theirs, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, ltime: u64) -> UserEvent {
        UserEvent {
            id: id.to_string(),
            name: "deploy".to_string(),
            payload: None,
            node_filter: String::new(),
            service_filter: String::new(),
            tag_filter: String::new(),
            version: 1,
            ltime,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_256() {
        let e = Events::default();
        for i in 0..300 {
            e.keep(event(&format!("id-{i}"), i));
        }
        let list = e.list(None);
        assert_eq!(list.len(), RING);
        assert_eq!(list[0].id, "id-44");
        assert_eq!(list[RING - 1].id, "id-299");
        assert!(e.list(Some("other")).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_new_once_and_repaired_within_the_window() {
        let (a, b) = (Events::default(), Events::default());
        // Both were in touch before the event (their floors are set).
        a.witness(0);
        b.witness(0);
        let now = Instant::now();
        let mut ev = event("e1", 0);
        a.stamp(&mut ev);
        assert!(a.receive(&ev, now));
        assert!(!a.receive(&ev, now), "a duplicate is not new");
        // b has not seen it: a's answer to b's probe carries it.
        let missing = a.missing(&b.digest(now), now);
        assert_eq!(missing, vec![ev.clone()]);
        b.witness(a.digest(now).clock);
        assert!(b.receive(&missing[0], now));
        assert!(a.missing(&b.digest(now), now).is_empty());
        // Past the window nothing is offered any more.
        let later = now + REPAIR_WINDOW + Duration::from_secs(1);
        assert!(a.missing(&Digest::default(), later).is_empty());
        assert!(!a.receive(&ev, later), "still remembered as seen");
        // A flood: only the newest REPAIR_MAX are offered.
        for i in 0..REPAIR_MAX + 10 {
            assert!(b.receive(&event(&format!("f{i}"), 5), later));
        }
        let ids = b.digest(later).ids;
        assert_eq!(ids.len(), REPAIR_MAX);
        assert_eq!(ids[0], "f10");
    }

    #[test]
    fn a_fresh_agent_ignores_events_from_before_its_first_contact() {
        let e = Events::default();
        e.witness(10);
        let now = Instant::now();
        assert!(!e.receive(&event("old", 9), now));
        assert!(e.receive(&event("new", 10), now));
        let mut mine = event("mine", 0);
        e.stamp(&mut mine);
        assert_eq!(mine.ltime, 11, "the clock witnessed the event");
    }

    #[test]
    fn validation_follows_consul_and_serfs_limits() {
        let mut ev = event("b54fe110-7af5-cafc-d1fb-afc8ba432b1c", 0);
        assert_eq!(validate(&ev, 0), Ok(()));
        ev.tag_filter = "v1".to_string();
        assert_eq!(
            validate(&ev, 0).unwrap_err(),
            "Cannot provide tag filter without service filter"
        );
        ev.tag_filter.clear();
        ev.node_filter = "[a".to_string();
        assert_eq!(
            validate(&ev, 0).unwrap_err(),
            "Invalid node filter: error parsing regexp: missing closing ]: `[a`"
        );
        ev.node_filter.clear();
        // Name "deploy": Consul's msgpack is 59 + n bytes for an n-byte
        // payload, serf's message around it 108 + n, "consul:event:deploy"
        // 19: the after-encoding limit binds first (n <= 404), the
        // before-encoding one from n = 435.
        let payload = |n: usize| Some(crate::discovery::api::gofmt::base64_encode(&vec![b'x'; n]));
        ev.payload = payload(404);
        assert_eq!(validate(&ev, 0), Ok(()));
        ev.payload = payload(405);
        assert_eq!(
            validate(&ev, 0).unwrap_err(),
            "encoded user event exceeds configured limit of 512 bytes after encoding"
        );
        ev.payload = payload(435);
        assert_eq!(
            validate(&ev, 0).unwrap_err(),
            "user event exceeds configured limit of 512 bytes before encoding"
        );
    }
}
