//! A deterministic, seeded simulation of canary windows, used to measure the judge's
//! false-rollback rate and detection delay.
//!
//! Each simulated window has `nodes` peers of which `canary_nodes` are canaries; every
//! node serves `requests_per_node` requests per sampling interval and raises
//! `Binomial(requests_per_node, rate)` exceptions, where the rate is `base_rate` for the
//! baseline and `base_rate · canary_ratio` for the canary. All nodes heartbeat, report
//! healthy and the right code hash, so only the exception criterion can fail. Sample 0
//! (at the window start) is the counters' reference; the detection delay is the index
//! of the sample at which the judge ordered the rollback.
//!
//! A window ends at the judge's `Promote` or `Rollback`. A window the judge holds
//! (inconclusive) is watched for `watch_held_secs` more — the judge keeps sampling, a
//! failure is still a rollback — and then counted as inconclusive (the operator's call).
//!
//! The generator is SplitMix64 seeded from `(seed, window index)`: the same seed gives
//! the same figures on every machine, and a single window can be replayed.

use crate::judge::{Command, Event, Judge, JudgeConfig, NodeReport, Sample};

/// SplitMix64: tiny, fast, deterministic, good enough for simulation.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    pub fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Exact `Binomial(n, p)` draw by geometric skipping (cost ∝ n·p).
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if p <= 0.0 || n == 0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let lq = (1.0 - p).ln();
        let (mut successes, mut trial) = (0u64, 0u64);
        loop {
            let skip = (self.next_open01().ln() / lq).floor();
            let skip = if skip.is_finite() && skip < n as f64 {
                skip as u64
            } else {
                n
            };
            trial = trial.saturating_add(skip + 1);
            if trial > n {
                return successes;
            }
            successes += 1;
        }
    }
}

/// Parameters of a simulation run.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Master seed (print it; it replays the run).
    pub seed: u64,
    /// Number of simulated canary windows.
    pub windows: usize,
    /// Peers in the fleet (canary + baseline).
    pub nodes: usize,
    /// Of which canaries.
    pub canary_nodes: usize,
    /// Mean requests per node per sampling interval.
    pub requests_per_node: u64,
    /// Fleet-average natural exception rate (exceptions per request).
    pub base_rate: f64,
    /// Canary rate after the update / the same node's natural rate (1.0 = A/A: the
    /// canary runs code as good as the baseline's).
    pub canary_ratio: f64,
    /// σ of the persistent node-to-node spread: each node's natural rate is
    /// `base_rate · exp(σ·Z − σ²/2)` (mean `base_rate`), drawn once per window.
    pub node_rate_spread: f64,
    /// Ratio between the busiest and the quietest node's traffic: each node's traffic
    /// weight is `exp(U·ln(ratio)) / ratio^½` (`U` uniform), drawn once per window
    /// (1.0 = every node serves `requests_per_node`).
    pub traffic_node_ratio: f64,
    /// Traffic varies by up to `±traffic_variation` between intervals (independently
    /// per node): an interval's requests are `weight · (1 + v·(2U − 1))`.
    pub traffic_variation: f64,
    /// Sampling intervals of pre-update history fed to the judge
    /// ([`Event::History`]), every node at its natural rate; 0 = none.
    pub history_intervals: u64,
    /// Judge configuration.
    pub config: JudgeConfig,
    /// How long a held (inconclusive) window keeps being sampled before it is counted
    /// as inconclusive (0: counted at the hold).
    pub watch_held_secs: u64,
}

impl Default for SimParams {
    /// The issue-4 setting: 10 nodes, 1 canary, 1,000 requests/node/interval, base 1%,
    /// A/A, every node alike, steady traffic, no history, the default judge.
    fn default() -> Self {
        Self {
            seed: 0x00F1_EE70_A7E5_2026,
            windows: 1000,
            nodes: 10,
            canary_nodes: 1,
            requests_per_node: 1000,
            base_rate: 0.01,
            canary_ratio: 1.0,
            node_rate_spread: 0.0,
            traffic_node_ratio: 1.0,
            traffic_variation: 0.0,
            history_intervals: 0,
            config: JudgeConfig::default(),
            watch_held_secs: 0,
        }
    }
}

/// Figures from a simulation run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimReport {
    /// Master seed.
    pub seed: u64,
    /// Windows simulated.
    pub windows: usize,
    /// Windows that ended in a rollback.
    pub rollbacks: usize,
    /// Windows that ended in a pass.
    pub passes: usize,
    /// Windows still held (inconclusive) at the end of their watch.
    pub inconclusive: usize,
    /// Windows the judge extended past `window_secs` (`on_inconclusive = "extend"`).
    pub extended: usize,
    /// Windows that were held at some point (whatever came after).
    pub held: usize,
    /// Rollbacks ordered at or after the end of the window (during an extension or a
    /// hold).
    pub late_rollbacks: usize,
    /// `rollbacks / windows`.
    pub rollback_rate: f64,
    /// For each rolled-back window, the sample index of the rollback (sorted).
    pub detection_intervals: Vec<u64>,
    /// Median detection interval over *all* windows (a window never detected counts as
    /// infinitely late); `None` when fewer than half were detected.
    pub median_detection_intervals: Option<u64>,
    /// 90th percentile of the same, `None` when fewer than 90% were detected.
    pub p90_detection_intervals: Option<u64>,
}

impl SplitMix64 {
    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_open01(), self.next_open01());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Runs the simulation. Panics only if `params.config` is invalid or `canary_nodes` is
/// 0 or not below `nodes` (programming errors in a test, not data).
pub fn simulate(params: &SimParams) -> SimReport {
    assert!(params.canary_nodes > 0 && params.canary_nodes < params.nodes);
    let canary: Vec<String> = (0..params.canary_nodes).map(|i| format!("c{i}")).collect();
    let baseline: Vec<String> = (params.canary_nodes..params.nodes)
        .map(|i| format!("b{i}"))
        .collect();
    let ids: Vec<&String> = canary.iter().chain(baseline.iter()).collect();
    let interval = params.config.sample_interval_secs;
    // The window opens after the history (times are unsigned).
    let start = params.history_intervals.saturating_add(1) * interval;
    let mut rollbacks = 0;
    let mut passes = 0;
    let mut inconclusive = 0;
    let mut extended = 0;
    let mut held = 0;
    let mut late_rollbacks = 0;
    let mut detection = Vec::new();
    for w in 0..params.windows {
        let mut rng = SplitMix64::new(
            params.seed
                ^ (w as u64)
                    .wrapping_mul(0xD6E8_FEB8_6659_FD93)
                    .rotate_left(17),
        );
        let sigma = params.node_rate_spread;
        let log_ratio = params.traffic_node_ratio.max(1.0).ln();
        let (rates, weights): (Vec<f64>, Vec<f64>) = (0..params.nodes)
            .map(|_| {
                let m = if sigma > 0.0 {
                    (sigma * rng.normal() - sigma * sigma / 2.0).exp()
                } else {
                    1.0
                };
                let wt = if log_ratio > 0.0 {
                    (rng.next_open01() * log_ratio - log_ratio / 2.0).exp()
                } else {
                    1.0
                };
                (params.base_rate * m, params.requests_per_node as f64 * wt)
            })
            .collect();
        let mut judge = Judge::new(
            params.config.clone(),
            "code",
            canary.clone(),
            baseline.clone(),
            start,
        )
        .expect("valid simulation config");
        let mut exc = vec![0u64; params.nodes];
        let mut req = vec![0u64; params.nodes];
        let step = |rng: &mut SplitMix64, updated: bool, exc: &mut [u64], req: &mut [u64]| {
            for i in 0..params.nodes {
                // No draw without variation: the issue-4 figures replay unchanged.
                let v = if params.traffic_variation > 0.0 {
                    params.traffic_variation * (2.0 * rng.next_open01() - 1.0)
                } else {
                    0.0
                };
                let n = (weights[i] * (1.0 + v)).round().max(0.0) as u64;
                let rate = if updated && i < params.canary_nodes {
                    rates[i] * params.canary_ratio
                } else {
                    rates[i]
                };
                exc[i] += rng.binomial(n, rate.min(1.0));
                req[i] += n;
            }
        };
        let report = |at: u64, exc: &[u64], req: &[u64]| Sample {
            at,
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, id)| NodeReport {
                    node_id: (*id).clone(),
                    heartbeat_at: Some(at),
                    healthy: Some(true),
                    code_hash: Some("code".into()),
                    exceptions_total: exc[i],
                    requests_total: req[i],
                    bench: Default::default(),
                })
                .collect(),
        };
        if params.history_intervals > 0 {
            for h in 0..=params.history_intervals {
                if h > 0 {
                    step(&mut rng, false, &mut exc, &mut req);
                }
                let at = start - (params.history_intervals - h) * interval;
                judge
                    .on_event(Event::History(report(at, &exc, &req)))
                    .expect("history before the window");
            }
            // The update restarts the canary processes: their counters start again.
            for i in 0..params.canary_nodes {
                exc[i] = 0;
                req[i] = 0;
            }
        }
        let mut k = 0u64;
        let mut watch_until = None;
        loop {
            let at = start + k * interval;
            if k > 0 {
                step(&mut rng, true, &mut exc, &mut req);
            }
            let commands = judge
                .on_event(Event::Sample(report(at, &exc, &req)))
                .expect("samples are in order");
            let mut done = false;
            for c in commands {
                match c {
                    Command::Rollback { .. } => {
                        rollbacks += 1;
                        if at >= start + params.config.window_secs {
                            late_rollbacks += 1;
                        }
                        detection.push(k);
                        done = true;
                    }
                    Command::Promote { .. } => {
                        passes += 1;
                        done = true;
                    }
                    Command::ExtendWindow { .. } => extended += 1,
                    Command::Hold { .. } => {
                        held += 1;
                        watch_until = Some(at.saturating_add(params.watch_held_secs));
                    }
                    Command::SampleAt { .. } => {}
                }
            }
            if done {
                break;
            }
            if watch_until.is_some_and(|until| at >= until) {
                inconclusive += 1;
                break;
            }
            k += 1;
        }
    }
    detection.sort_unstable();
    let quantile = |q: f64| -> Option<u64> {
        // Index into all windows; undetected windows sort after every detected one.
        let idx = ((q * params.windows as f64).ceil() as usize).max(1) - 1;
        detection.get(idx).copied()
    };
    SimReport {
        seed: params.seed,
        windows: params.windows,
        rollbacks,
        passes,
        inconclusive,
        extended,
        held,
        late_rollbacks,
        rollback_rate: rollbacks as f64 / params.windows as f64,
        median_detection_intervals: quantile(0.5),
        p90_detection_intervals: quantile(0.9),
        detection_intervals: detection,
    }
}

/// Wilson score interval `(low, high)` for `k` successes in `n` trials at `z` standard
/// deviations (z = 1.645: one-sided 95% bounds). `(0, 1)` when `n` is 0.
pub fn wilson_interval(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_mean_is_right_and_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let draws: Vec<u64> = (0..20_000).map(|_| a.binomial(1000, 0.01)).collect();
        let again: Vec<u64> = (0..20_000).map(|_| b.binomial(1000, 0.01)).collect();
        assert_eq!(draws, again);
        let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
        let var = draws
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / draws.len() as f64;
        assert!((mean - 10.0).abs() < 0.1, "mean {mean}");
        assert!((var - 9.9).abs() < 0.5, "variance {var}");
        assert_eq!(a.binomial(10, 1.0), 10);
        assert_eq!(a.binomial(10, 0.0), 0);
    }

    #[test]
    fn wilson_interval_brackets_the_rate() {
        // 30 of 10,000: the textbook Wilson 95% one-sided bounds are about 0.22% and 0.40%.
        let (lo, hi) = wilson_interval(30, 10_000, 1.645);
        assert!((lo - 0.00221).abs() < 0.0001, "{lo}");
        assert!((hi - 0.00404).abs() < 0.0001, "{hi}");
        let (lo, hi) = wilson_interval(0, 100, 1.645);
        assert!(lo < 1e-12, "{lo}");
        assert!(hi > 0.02 && hi < 0.03, "{hi}");
        assert_eq!(wilson_interval(0, 0, 1.645), (0.0, 1.0));
    }
}
