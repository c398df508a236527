//! The agent's own metrics, kept as go-metrics' `InmemSink` keeps them for
//! `/v1/agent/metrics`: 10 s intervals (the last minute of them) of
//! gauges, counters and samples, each keyed by name and labels; plus, when
//! `--prometheus-retention-time` is set, cumulative series for
//! `?format=prometheus` that expire when not updated for that long. Pure
//! bookkeeping: the time (Unix ms) is an argument.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// go-metrics' interval and retention (Consul's `telemetry` defaults).
pub const INTERVAL_MS: u64 = 10_000;
const RETAIN: usize = 6;

pub type Labels = BTreeMap<String, String>;
type Key = (String, Labels);

/// Count, sum, min, max and the sum of squares of the values seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Aggregate {
    pub count: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
}

impl Aggregate {
    fn add(&mut self, v: f64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The sample standard deviation (go-metrics' `Stddev`).
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0))
            .max(0.0)
            .sqrt()
    }
}

/// One interval's values.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// Unix seconds of its start.
    pub start: u64,
    pub gauges: BTreeMap<Key, f32>,
    pub counters: BTreeMap<Key, Aggregate>,
    pub samples: BTreeMap<Key, Aggregate>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge(f64),
    Counter(f64),
    Summary { count: u64, sum: f64 },
}

#[derive(Default)]
struct Inner {
    intervals: VecDeque<Interval>,
    /// name+labels → (last update ms, cumulative value), for Prometheus.
    cumulative: BTreeMap<Key, (u64, Kind)>,
}

/// The sink; cheap to share behind the server.
#[derive(Default)]
pub struct Sink {
    inner: Mutex<Inner>,
    /// 0: no Prometheus output.
    retention_ms: u64,
}

impl Sink {
    pub fn new(prometheus_retention_ms: u64) -> Sink {
        Sink {
            inner: Mutex::default(),
            retention_ms: prometheus_retention_ms,
        }
    }

    fn with<R>(&self, now_ms: u64, f: impl FnOnce(&mut Interval, &mut Inner) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let start = now_ms / INTERVAL_MS * INTERVAL_MS / 1000;
        if inner.intervals.back().is_none_or(|i| i.start != start) {
            inner.intervals.push_back(Interval {
                start,
                ..Interval::default()
            });
            while inner.intervals.len() > RETAIN {
                inner.intervals.pop_front();
            }
        }
        let mut current = inner.intervals.pop_back().unwrap_or_default();
        let r = f(&mut current, &mut inner);
        inner.intervals.push_back(current);
        r
    }

    pub fn set_gauge(&self, now_ms: u64, name: &str, labels: Labels, v: f64) {
        let key = (name.to_string(), labels);
        self.with(now_ms, |i, inner| {
            i.gauges.insert(key.clone(), v as f32);
            inner.cumulative.insert(key, (now_ms, Kind::Gauge(v)));
        });
    }

    pub fn incr_counter(&self, now_ms: u64, name: &str, labels: Labels, v: f64) {
        let key = (name.to_string(), labels);
        self.with(now_ms, |i, inner| {
            i.counters.entry(key.clone()).or_default().add(v);
            let total = match inner.cumulative.get(&key) {
                Some((_, Kind::Counter(t))) => t + v,
                _ => v,
            };
            inner.cumulative.insert(key, (now_ms, Kind::Counter(total)));
        });
    }

    pub fn add_sample(&self, now_ms: u64, name: &str, labels: Labels, v: f64) {
        let key = (name.to_string(), labels);
        self.with(now_ms, |i, inner| {
            i.samples.entry(key.clone()).or_default().add(v);
            let (count, sum) = match inner.cumulative.get(&key) {
                Some((_, Kind::Summary { count, sum })) => (count + 1, sum + v),
                _ => (1, v),
            };
            inner
                .cumulative
                .insert(key, (now_ms, Kind::Summary { count, sum }));
        });
    }

    /// The most recent finished interval, or the current one when it is
    /// the only one; `None` before anything was recorded.
    pub fn latest(&self) -> Option<Interval> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let n = inner.intervals.len();
        match n {
            0 => None,
            1 => inner.intervals.back().cloned(),
            _ => inner.intervals.get(n - 2).cloned(),
        }
    }

    /// Whether Prometheus output is on (a positive retention).
    pub fn prometheus_enabled(&self) -> bool {
        self.retention_ms > 0
    }

    /// The Prometheus text exposition of the series updated within the
    /// retention time: names with `_` for `.`, samples as summaries.
    pub fn prometheus(&self, now_ms: u64) -> String {
        use std::fmt::Write as _;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let retention = self.retention_ms;
        inner
            .cumulative
            .retain(|_, (at, _)| now_ms.saturating_sub(*at) <= retention);
        let mut by_name: BTreeMap<String, Vec<(&Labels, Kind)>> = BTreeMap::new();
        for ((name, labels), (_, kind)) in &inner.cumulative {
            let flat: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            by_name.entry(flat).or_default().push((labels, *kind));
        }
        let mut out = String::new();
        for (name, series) in by_name {
            let kind = match series[0].1 {
                Kind::Gauge(_) => "gauge",
                Kind::Counter(_) => "counter",
                Kind::Summary { .. } => "summary",
            };
            let _ = writeln!(out, "# HELP {name} {name}\n# TYPE {name} {kind}");
            for (labels, k) in series {
                let l = prometheus_labels(labels);
                match k {
                    Kind::Gauge(v) | Kind::Counter(v) => {
                        let _ = writeln!(out, "{name}{l} {v}");
                    }
                    Kind::Summary { count, sum } => {
                        let _ = writeln!(out, "{name}_sum{l} {sum}");
                        let _ = writeln!(out, "{name}_count{l} {count}");
                    }
                }
            }
        }
        out
    }
}

fn prometheus_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn intervals_aggregate_like_go_metrics() {
        let s = Sink::new(60_000);
        assert!(s.latest().is_none());
        s.incr_counter(1_000, "consul.raft.apply", Labels::new(), 1.0);
        s.incr_counter(2_000, "consul.raft.apply", Labels::new(), 3.0);
        s.add_sample(3_000, "consul.api.http", Labels::new(), 2.0);
        s.add_sample(4_000, "consul.api.http", Labels::new(), 4.0);
        // Only one interval: the current one.
        let i = s.latest().unwrap();
        let c = i.counters[&("consul.raft.apply".into(), Labels::new())];
        assert_eq!((c.count, c.sum, c.min, c.max), (2, 4.0, 1.0, 3.0));
        let h = i.samples[&("consul.api.http".into(), Labels::new())];
        assert_eq!(h.mean(), 3.0);
        assert!((h.stddev() - 2f64.sqrt()).abs() < 1e-9);
        // A second interval begins: the first is the latest finished one.
        s.set_gauge(12_000, "consul.runtime.sys_bytes", Labels::new(), 5.0);
        assert_eq!(s.latest().unwrap().start, 0);
        let text = s.prometheus(12_000);
        assert!(text.contains("# TYPE consul_raft_apply counter\nconsul_raft_apply 4\n"));
        assert!(text.contains("consul_api_http_count 2\n"));
        assert!(text.contains("consul_runtime_sys_bytes 5\n"));
        // Expired after the retention time.
        assert!(!s.prometheus(100_000).contains("consul_raft_apply"));
    }
}
