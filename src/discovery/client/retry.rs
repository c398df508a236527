//! What a long-running client loop needs around `Client`: the blocking-query
//! index rules, backoff with jitter after errors, a rate limit on loops that
//! come back at once, and an outage logged when it starts and when it ends,
//! never once per retry.

use std::time::Duration;

use tokio::time::Instant;

/// The index to send with the next blocking query, after an answer carrying
/// `returned` to a query sent with `sent` (Consul's client rules): an index
/// that went backwards (a snapshot restore, the newest entry removed) starts
/// over at 0, which answers at once; an index of 0 is never waited on (1 is
/// always safe for data that does not exist yet).
pub fn next_index(sent: u64, returned: u64) -> u64 {
    if returned < sent {
        0
    } else {
        returned.max(1)
    }
}

/// Exponential backoff with full jitter between `initial` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The wait before the next attempt: a random point in the upper half of
    /// `initial * 2^attempt` (capped at `max`), so waiters spread out.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        exp / 2 + exp.mul_f64(rand::random::<f64>() / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A token bucket (burst 2 by default, as Consul's docs advise) that keeps a
/// blocking loop from spinning when its queries return at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: f64) -> RateLimit {
        RateLimit {
            tokens: burst,
            burst,
            per_second,
            last: Instant::now(),
        }
    }

    /// How long to wait before the next query (zero when a token is left).
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            let wait = (1.0 - self.tokens) / self.per_second;
            self.tokens = 0.0;
            self.last = now + Duration::from_secs_f64(wait);
            Duration::from_secs_f64(wait)
        }
    }
}

/// An outage of the agent as one story: `fail` logs its first error and
/// returns true only then; `recover` logs how long it lasted.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    since: Option<Instant>,
    failures: u64,
}

impl Outage {
    /// Record a failure; true when it starts an outage (the caller logs it).
    pub fn fail(&mut self, now: Instant) -> bool {
        self.failures += 1;
        if self.since.is_none() {
            self.since = Some(now);
            true
        } else {
            false
        }
    }

    /// Record a success; the outage's length and failed attempts when one ended.
    pub fn recover(&mut self, now: Instant) -> Option<(Duration, u64)> {
        let since = self.since.take()?;
        let failures = std::mem::take(&mut self.failures);
        Some((now.saturating_duration_since(since), failures))
    }

    pub fn since(&self) -> Option<Instant> {
        self.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(0, 17), 17);
        assert_eq!(next_index(17, 17), 17);
        assert_eq!(next_index(17, 20), 20);
        // Went backwards: start over with an immediate answer.
        assert_eq!(next_index(20, 5), 0);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[5..] {
            assert!(*x >= Duration::from_secs(1) && *x <= Duration::from_secs(2));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn rate_limit_allows_a_burst_then_spaces_queries() {
        let start = Instant::now();
        let mut r = RateLimit::new(10.0, 2.0);
        assert_eq!(r.take(start), Duration::ZERO);
        assert_eq!(r.take(start), Duration::ZERO);
        let w = r.take(start);
        assert!(w > Duration::from_millis(90) && w <= Duration::from_millis(100));
        // A second later the bucket is full again.
        let later = start + Duration::from_secs(2);
        assert_eq!(r.take(later), Duration::ZERO);
    }

    #[test]
    fn an_outage_is_reported_once() {
        let t0 = Instant::now();
        let mut o = Outage::default();
        assert_eq!(o.recover(t0), None);
        assert!(o.fail(t0));
        assert!(!o.fail(t0 + Duration::from_secs(1)));
        assert!(!o.fail(t0 + Duration::from_secs(2)));
        assert_eq!(
            o.recover(t0 + Duration::from_secs(10)),
            Some((Duration::from_secs(10), 3))
        );
        assert_eq!(o.since(), None);
    }
}
