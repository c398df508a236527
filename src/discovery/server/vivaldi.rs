//! Network coordinates: a port of serf's Vivaldi client
//! (`hashicorp/serf/coordinate`), with serf's `DefaultConfig`, which Consul
//! uses unchanged. Pure: no I/O, no clock; the round-trip times are
//! arguments and the one random choice (the direction to move when two
//! coordinates coincide) draws from the caller's RNG.
//!
//! A [`Client`] holds this node's [`Coordinate`]; every measured RTT to a
//! peer whose coordinate is known moves it ([`Client::update`]).
//! [`Coordinate::distance_to`] is the estimated RTT between two nodes, in
//! seconds, as `lib.ComputeDistance` computes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// serf's `DefaultConfig()`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub dimensionality: usize,
    pub vivaldi_error_max: f64,
    pub vivaldi_ce: f64,
    pub vivaldi_cc: f64,
    pub adjustment_window_size: usize,
    /// Seconds.
    pub height_min: f64,
    pub latency_filter_size: usize,
    pub gravity_rho: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dimensionality: 8,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

/// Below this, a vector is taken as zero (serf's `zeroThreshold`).
const ZERO_THRESHOLD: f64 = 1.0e-6;
/// RTT samples above this are refused (serf's `maxRTT`), seconds.
const MAX_RTT: f64 = 10.0;

/// A point in the Vivaldi space plus a height, an adjustment and an
/// error estimate. All values but `error` are in seconds.
///
/// It is part of the replicated state (serde for the log and snapshots,
/// like the state's own types); equality is bitwise so the state stays
/// `Eq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Coordinate {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

impl PartialEq for Coordinate {
    fn eq(&self, o: &Coordinate) -> bool {
        self.vec.len() == o.vec.len()
            && self
                .vec
                .iter()
                .zip(&o.vec)
                .all(|(a, b)| a.to_bits() == b.to_bits())
            && self.error.to_bits() == o.error.to_bits()
            && self.adjustment.to_bits() == o.adjustment.to_bits()
            && self.height.to_bits() == o.height.to_bits()
    }
}

impl Eq for Coordinate {}

impl Coordinate {
    /// A fresh coordinate: the origin, the maximum error, the minimum height.
    pub fn new(config: &Config) -> Coordinate {
        Coordinate {
            vec: vec![0.0; config.dimensionality],
            error: config.vivaldi_error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// No NaN or infinite component (serf's `IsValid`).
    pub fn is_valid(&self) -> bool {
        self.vec
            .iter()
            .chain([&self.error, &self.adjustment, &self.height])
            .all(|f| f.is_finite())
    }

    /// Same dimensionality (serf's `IsCompatibleWith`).
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// `‖a−b‖ + a.height + b.height`, without the adjustments.
    fn raw_distance_to(&self, other: &Coordinate) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    /// The estimated RTT in seconds: the adjusted distance when it is
    /// positive, else the raw one, truncated to whole nanoseconds as serf's
    /// `time.Duration` does. `+Inf` for incompatible coordinates (Consul's
    /// `lib.ComputeDistance`).
    pub fn distance_to(&self, other: &Coordinate) -> f64 {
        if !self.is_compatible_with(other) {
            return f64::INFINITY;
        }
        let raw = self.raw_distance_to(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        let dist = if adjusted > 0.0 { adjusted } else { raw };
        (dist * 1.0e9).trunc() / 1.0e9
    }

    /// Move by `force` along the unit vector from `other` (serf's
    /// `ApplyForce`); the height grows or shrinks with the force too.
    fn apply_force(
        &self,
        config: &Config,
        force: f64,
        other: &Coordinate,
        rng: &mut impl rand::Rng,
    ) -> Coordinate {
        let mut ret = self.clone();
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, rng);
        for (v, u) in ret.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        if mag > ZERO_THRESHOLD {
            ret.height = (ret.height + other.height) * force / mag + ret.height;
            ret.height = ret.height.max(config.height_min);
        }
        ret
    }
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector from `b` to `a` and the distance between them; a random
/// direction (and 0) when they coincide.
fn unit_vector_at(a: &[f64], b: &[f64], rng: &mut impl rand::Rng) -> (Vec<f64>, f64) {
    let mut ret = diff(a, b);
    let mag = magnitude(&ret);
    if mag > ZERO_THRESHOLD {
        return (ret.iter().map(|x| x / mag).collect(), mag);
    }
    for x in ret.iter_mut() {
        *x = rng.random::<f64>() - 0.5;
    }
    let mag = magnitude(&ret);
    if mag > ZERO_THRESHOLD {
        return (ret.iter().map(|x| x / mag).collect(), 0.0);
    }
    let mut ret = vec![0.0; ret.len()];
    if let Some(first) = ret.first_mut() {
        *first = 1.0;
    }
    (ret, 0.0)
}

/// Why an RTT sample was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    #[error("dimensions aren't compatible")]
    Dimensionality,
    #[error("coordinate is invalid")]
    Invalid,
    #[error(
        "round trip time not in valid range, duration {0}s is not a positive value less than 10s"
    )]
    RttOutOfRange(f64),
}

/// One node's Vivaldi state: its coordinate, the latency filter per peer
/// and the adjustment window (serf's `coordinate.Client`).
#[derive(Debug, Clone)]
pub struct Client {
    coord: Coordinate,
    origin: Coordinate,
    config: Config,
    adjustment_index: usize,
    adjustment_samples: Vec<f64>,
    latency_filter: BTreeMap<String, Vec<f64>>,
    resets: u64,
}

impl Client {
    pub fn new(config: Config) -> Client {
        Client {
            coord: Coordinate::new(&config),
            origin: Coordinate::new(&config),
            adjustment_index: 0,
            adjustment_samples: vec![0.0; config.adjustment_window_size],
            latency_filter: BTreeMap::new(),
            resets: 0,
            config,
        }
    }

    /// This node's current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// How many times the coordinate was reset after becoming invalid.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Drop what was kept about a peer that left.
    pub fn forget(&mut self, node: &str) {
        self.latency_filter.remove(node);
    }

    /// One RTT sample (seconds) to `node`, whose coordinate is `other`:
    /// the filtered RTT moves this node's coordinate (serf's `Update`).
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: f64,
        rng: &mut impl rand::Rng,
    ) -> Result<&Coordinate, UpdateError> {
        if !self.coord.is_compatible_with(other) {
            return Err(UpdateError::Dimensionality);
        }
        if !other.is_valid() {
            return Err(UpdateError::Invalid);
        }
        // `!(..)` so a NaN is refused too.
        if !(0.0..=MAX_RTT).contains(&rtt) {
            return Err(UpdateError::RttOutOfRange(rtt));
        }
        let rtt = self.filter(node, rtt);
        self.update_vivaldi(other, rtt, rng);
        self.update_adjustment(other, rtt);
        self.update_gravity(rng);
        if !self.coord.is_valid() {
            self.resets += 1;
            self.coord = Coordinate::new(&self.config);
        }
        Ok(&self.coord)
    }

    /// The median of the last few samples from `node`.
    fn filter(&mut self, node: &str, rtt: f64) -> f64 {
        let samples = self.latency_filter.entry(node.to_string()).or_default();
        samples.push(rtt);
        if samples.len() > self.config.latency_filter_size {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64, rng: &mut impl rand::Rng) {
        let c = &self.config;
        let dist = self.coord.distance_to(other);
        let rtt = rtt.max(ZERO_THRESHOLD);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        self.coord.error =
            c.vivaldi_ce * weight * wrongness + self.coord.error * (1.0 - c.vivaldi_ce * weight);
        self.coord.error = self.coord.error.min(c.vivaldi_error_max);
        let force = c.vivaldi_cc * weight * (rtt - dist);
        self.coord = self.coord.apply_force(c, force, other, rng);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let window = self.config.adjustment_window_size;
        if window == 0 {
            return;
        }
        // The raw distance: the adjustments themselves must not feed back.
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance_to(other);
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * window as f64);
    }

    fn update_gravity(&mut self, rng: &mut impl rand::Rng) {
        let dist = self.origin.distance_to(&self.coord);
        let force = -(dist / self.config.gravity_rho).powi(2);
        self.coord = self
            .coord
            .apply_force(&self.config, force, &self.origin, rng);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn distance_follows_serf() {
        let cfg = Config::default();
        let origin = Coordinate::new(&cfg);
        let mut a = Coordinate::new(&cfg);
        a.vec[0] = 0.001;
        // 1 ms apart plus both heights (10 µs each).
        assert!((a.distance_to(&origin) - 0.001_02).abs() < 1e-12);
        // A negative adjustment that would make it negative is ignored.
        a.adjustment = -1.0;
        assert!((a.distance_to(&origin) - 0.001_02).abs() < 1e-12);
        let short = Coordinate {
            vec: vec![0.0; 3],
            ..origin.clone()
        };
        assert_eq!(short.distance_to(&origin), f64::INFINITY);
    }

    #[test]
    fn bad_samples_are_refused() {
        let cfg = Config::default();
        let mut rng = StdRng::seed_from_u64(1);
        let mut c = Client::new(cfg);
        let other = Coordinate::new(&cfg);
        assert!(matches!(
            c.update("b", &other, -0.1, &mut rng),
            Err(UpdateError::RttOutOfRange(_))
        ));
        assert!(matches!(
            c.update("b", &other, 11.0, &mut rng),
            Err(UpdateError::RttOutOfRange(_))
        ));
        let mut nan = other.clone();
        nan.vec[2] = f64::NAN;
        assert_eq!(
            c.update("b", &nan, 0.01, &mut rng).err(),
            Some(UpdateError::Invalid)
        );
        let short = Coordinate {
            vec: vec![0.0; 2],
            ..other
        };
        assert_eq!(
            c.update("b", &short, 0.01, &mut rng).err(),
            Some(UpdateError::Dimensionality)
        );
        assert_eq!(c.coordinate(), &Coordinate::new(&cfg));
    }

    #[test]
    fn two_nodes_settle_at_their_rtt() {
        let cfg = Config::default();
        let mut rng = StdRng::seed_from_u64(7);
        let (mut a, mut b) = (Client::new(cfg), Client::new(cfg));
        let rtt = 0.020;
        for _ in 0..200 {
            let cb = b.coordinate().clone();
            a.update("b", &cb, rtt, &mut rng).unwrap();
            let ca = a.coordinate().clone();
            b.update("a", &ca, rtt, &mut rng).unwrap();
        }
        let est = a.coordinate().distance_to(b.coordinate());
        assert!((est - rtt).abs() < 0.001, "estimate {est}");
        assert!(a.coordinate().error < 0.1);
    }

    #[test]
    fn the_filter_takes_the_median_of_three() {
        let mut c = Client::new(Config::default());
        assert_eq!(c.filter("x", 0.3), 0.3);
        assert_eq!(c.filter("x", 0.1), 0.3);
        assert_eq!(c.filter("x", 0.2), 0.2);
        // 0.3 falls out of the window.
        assert_eq!(c.filter("x", 0.15), 0.15);
        assert_eq!(c.filter("y", 0.9), 0.9);
    }

    /// serf's `TestPerformance_Height` shape: nodes on a plane whose RTTs
    /// also include a per-node access-link height, each node sampling
    /// random peers. The estimated RTTs converge on the real ones.
    #[test]
    fn converges_on_a_plane_with_heights() {
        let cfg = Config::default();
        let mut rng = StdRng::seed_from_u64(42);
        let n = 25;
        // Positions within a 100 ms square, heights 1–10 ms.
        let nodes: Vec<([f64; 2], f64)> = (0..n)
            .map(|_| {
                (
                    [rng.random::<f64>() * 0.1, rng.random::<f64>() * 0.1],
                    0.001 + rng.random::<f64>() * 0.009,
                )
            })
            .collect();
        let truth = |i: usize, j: usize| {
            let (a, b) = (&nodes[i], &nodes[j]);
            let d = ((a.0[0] - b.0[0]).powi(2) + (a.0[1] - b.0[1]).powi(2)).sqrt();
            d + a.1 + b.1
        };
        let mut clients: Vec<Client> = (0..n).map(|_| Client::new(cfg)).collect();
        let average_error = |clients: &[Client]| {
            let mut sum = 0.0;
            let mut count = 0.0;
            for i in 0..n {
                for j in (i + 1)..n {
                    let est = clients[i].coordinate().distance_to(clients[j].coordinate());
                    sum += (est - truth(i, j)).abs() / truth(i, j);
                    count += 1.0;
                }
            }
            sum / count
        };
        let before = average_error(&clients);
        for _ in 0..1000 {
            for i in 0..n {
                let j = loop {
                    let j = rng.random_range(0..n);
                    if j != i {
                        break j;
                    }
                };
                let other = clients[j].coordinate().clone();
                clients[i]
                    .update(&j.to_string(), &other, truth(i, j), &mut rng)
                    .unwrap();
            }
        }
        let after = average_error(&clients);
        assert!(before > 0.5, "a fresh space is far off: {before}");
        assert!(after < 0.1, "average relative error {after}");
        for c in &clients {
            assert!(c.coordinate().is_valid());
            assert!(c.coordinate().error < 0.5, "{:?}", c.coordinate());
        }
    }
}
