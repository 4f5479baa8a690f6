//! The canary health judge: a pure state machine `(state, event) -> commands`.
//!
//! The runtime feeds it [`Event::Sample`]s (the latest heartbeat figures of every canary
//! and baseline node, taken every `sample_interval_secs`) and [`Event::Tick`]s (time
//! passes without data), and executes the [`Command`]s it returns: take the next sample,
//! extend the window, hold an inconclusive verdict for an operator, promote, or roll
//! back. The whole [`Judge`] is serialisable, so the runtime persists it after every
//! event and a restarted orchestrator resumes the same window with the samples it
//! already judged.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sprt::{RateDecision, RateMethod, RateTest};

/// What to do when the window ends and the evidence is still inconclusive: a pending
/// criterion (typically the exception test, for lack of traffic) and no failed one.
///
/// Whatever the policy, a hard failure (crash loop, integrity mismatch, silent node) and
/// a failed criterion (exception rate too high, health check, benchmark) still fail at
/// the next sample: the policy only decides what *too little data* means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Keep judging (decision pending) until `max_window_secs` after the window start,
    /// then behave as [`OnInconclusive::Hold`] (default).
    #[default]
    Extend,
    /// Report [`Decision::Inconclusive`] at once: neither promoted nor rolled back; an
    /// operator decides. Sampling goes on, so failures are still caught.
    Hold,
    /// Fail the canary with "insufficient data" ([`FailureKind::InsufficientData`]).
    Rollback,
}

impl OnInconclusive {
    /// The configuration spelling (`"extend"`, `"hold"`, `"rollback"`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnInconclusive::Extend => "extend",
            OnInconclusive::Hold => "hold",
            OnInconclusive::Rollback => "rollback",
        }
    }
}

/// Which way is better for a benchmark figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Throughput-like figures.
    HigherIsBetter,
    /// Latency-like figures.
    LowerIsBetter,
}

/// A benchmark figure the canary nodes report and how far it may regress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSpec {
    /// Name of the figure in the heartbeat's `bench` map.
    pub name: String,
    /// Which way is better.
    pub direction: Direction,
    /// Allowed relative regression (0.05 = 5%).
    pub tolerance: f64,
    /// Reference value used when no baseline node reports the figure.
    #[serde(default)]
    pub reference: Option<f64>,
}

/// Judge configuration (the `[canary]` table of `fleetgate.toml`).
///
/// Serialised as part of a persisted [`Judge`]; a judge persisted before
/// `on_inconclusive` existed (with `on_insufficient_data` and `max_extension_secs`)
/// still loads, with the same behaviour it was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "JudgeConfigWire")]
pub struct JudgeConfig {
    /// Length of the window (`canary.window_secs`, default 1800).
    pub window_secs: u64,
    /// Sampling period (`canary.sample_interval_secs`, default 30).
    pub sample_interval_secs: u64,
    /// A canary node silent for longer fails hard (`canary.heartbeat_timeout_secs`, default 60).
    pub heartbeat_timeout_secs: u64,
    /// Tolerance: the largest relative exception-rate increase that must still pass
    /// (`canary.max_exception_rate_increase`, default 0.1). The exception test's H0.
    pub max_exception_rate_increase: f64,
    /// The relative increase that must be caught (`canary.detect_exception_rate_increase`;
    /// `None`: `max(2 × tolerance, 0.5)`, see [`JudgeConfig::detect_increase`]). The
    /// exception test's H1; must exceed the tolerance.
    pub detect_exception_rate_increase: Option<f64>,
    /// How much pre-update history the runtime should feed with [`Event::History`]
    /// (`canary.pre_window_secs`, default 1800; 0 = none, the judge then compares the
    /// canary with the baseline only).
    pub pre_window_secs: u64,
    /// False-rollback bound of the exception test (default 0.01).
    pub alpha: f64,
    /// Miss probability at `1+δ` of the exception test (default 0.05).
    pub beta: f64,
    /// Reference exception rate used for intervals without baseline traffic (default none).
    pub baseline_exception_rate: Option<f64>,
    /// A canary that raised no exception passes the exception criterion only after this
    /// many requests (`canary.min_requests`, default 1000).
    pub min_canary_requests: u64,
    /// More counter resets (restarts) than this on one canary node is a crash loop (default 1).
    pub max_restarts: u32,
    /// Consecutive samples with a failing health check (or a benchmark beyond tolerance)
    /// before the criterion fails (default 2).
    pub consecutive_failures: u32,
    /// Benchmarks to judge; empty = criterion skipped (shown as such in the verdict).
    pub benchmarks: Vec<BenchSpec>,
    /// What an inconclusive end of window means (`canary.on_inconclusive`, default extend).
    pub on_inconclusive: OnInconclusive,
    /// With [`OnInconclusive::Extend`], judging goes on until this many seconds after the
    /// window start, then the verdict is held (`canary.max_window_secs`, default
    /// `2 × window_secs`; at least `window_secs`).
    pub max_window_secs: u64,
}

/// What a persisted [`JudgeConfig`] may contain: today's keys and the older
/// `on_insufficient_data` / `max_extension_secs`.
#[derive(Deserialize)]
struct JudgeConfigWire {
    window_secs: u64,
    sample_interval_secs: u64,
    heartbeat_timeout_secs: u64,
    max_exception_rate_increase: f64,
    #[serde(default)]
    detect_exception_rate_increase: Option<f64>,
    #[serde(default)]
    pre_window_secs: u64,
    alpha: f64,
    beta: f64,
    baseline_exception_rate: Option<f64>,
    min_canary_requests: u64,
    max_restarts: u32,
    consecutive_failures: u32,
    benchmarks: Vec<BenchSpec>,
    #[serde(default)]
    on_inconclusive: Option<OnInconclusive>,
    #[serde(default)]
    max_window_secs: Option<u64>,
    #[serde(default)]
    on_insufficient_data: Option<LegacyOnInsufficientData>,
    #[serde(default)]
    max_extension_secs: Option<u64>,
}

/// The setting `on_inconclusive` replaced.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum LegacyOnInsufficientData {
    Fail,
    Extend,
}

impl From<JudgeConfigWire> for JudgeConfig {
    fn from(w: JudgeConfigWire) -> Self {
        let on_inconclusive = w.on_inconclusive.unwrap_or(match w.on_insufficient_data {
            Some(LegacyOnInsufficientData::Fail) => OnInconclusive::Rollback,
            Some(LegacyOnInsufficientData::Extend) | None => OnInconclusive::Extend,
        });
        let max_window_secs = w.max_window_secs.unwrap_or(match w.max_extension_secs {
            Some(ext) => w.window_secs.saturating_add(ext),
            None => w.window_secs.saturating_mul(2),
        });
        Self {
            window_secs: w.window_secs,
            sample_interval_secs: w.sample_interval_secs,
            heartbeat_timeout_secs: w.heartbeat_timeout_secs,
            max_exception_rate_increase: w.max_exception_rate_increase,
            detect_exception_rate_increase: w.detect_exception_rate_increase,
            pre_window_secs: w.pre_window_secs,
            alpha: w.alpha,
            beta: w.beta,
            baseline_exception_rate: w.baseline_exception_rate,
            min_canary_requests: w.min_canary_requests,
            max_restarts: w.max_restarts,
            consecutive_failures: w.consecutive_failures,
            benchmarks: w.benchmarks,
            on_inconclusive,
            max_window_secs,
        }
    }
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            window_secs: 1800,
            sample_interval_secs: 30,
            heartbeat_timeout_secs: 60,
            max_exception_rate_increase: 0.1,
            detect_exception_rate_increase: None,
            pre_window_secs: 1800,
            alpha: 0.01,
            beta: 0.05,
            baseline_exception_rate: None,
            min_canary_requests: 1000,
            max_restarts: 1,
            consecutive_failures: 2,
            benchmarks: Vec::new(),
            on_inconclusive: OnInconclusive::Extend,
            max_window_secs: 3600,
        }
    }
}

/// An invalid judge configuration or judge input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    /// A configuration value is out of range.
    #[error("invalid canary setting {key} = {value}: {expected}")]
    InvalidConfig {
        /// Key in the `[canary]` table.
        key: &'static str,
        /// Offending value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// No canary node to judge.
    #[error("the canary set is empty: select at least one canary node before judging")]
    EmptyCanary,
    /// A node is both canary and baseline.
    #[error("node {0:?} is listed both as canary and as baseline")]
    OverlappingSets(String),
    /// History after the window start or after the first sample.
    #[error(
        "history sample at {at} is misplaced: history must be at or before the window start {window_start} and come before the first sample"
    )]
    MisplacedHistory {
        /// Time of the rejected history sample.
        at: u64,
        /// The window start.
        window_start: u64,
    },
    /// An event older than the last one judged.
    #[error(
        "event at {at} is older than the last judged sample at {last}; refusing to go back in time"
    )]
    OutOfOrder {
        /// Time of the rejected event.
        at: u64,
        /// Time of the last judged event.
        last: u64,
    },
}

impl JudgeConfig {
    /// The increase the exception test must catch: `detect_exception_rate_increase`, or
    /// by default `max(2 × max_exception_rate_increase, 0.5)`.
    pub fn detect_increase(&self) -> f64 {
        self.detect_exception_rate_increase
            .unwrap_or((2.0 * self.max_exception_rate_increase).max(0.5))
    }

    /// Checks every value, naming the offending key.
    pub fn validate(&self) -> Result<(), JudgeError> {
        fn bad(key: &'static str, value: impl ToString, expected: &'static str) -> JudgeError {
            JudgeError::InvalidConfig {
                key,
                value: value.to_string(),
                expected,
            }
        }
        if self.window_secs == 0 {
            return Err(bad("canary.window_secs", 0, "must be > 0"));
        }
        if self.sample_interval_secs == 0 || self.sample_interval_secs > self.window_secs {
            return Err(bad(
                "canary.sample_interval_secs",
                self.sample_interval_secs,
                "must be > 0 and at most window_secs",
            ));
        }
        if self.max_window_secs < self.window_secs {
            return Err(bad(
                "canary.max_window_secs",
                self.max_window_secs,
                "must be at least window_secs",
            ));
        }
        if self.heartbeat_timeout_secs == 0 {
            return Err(bad("canary.heartbeat_timeout_secs", 0, "must be > 0"));
        }
        let d = self.max_exception_rate_increase;
        if !(d.is_finite() && d >= 0.0) {
            return Err(bad(
                "canary.max_exception_rate_increase",
                d,
                "must be a finite number >= 0",
            ));
        }
        let det = self.detect_increase();
        if !(det.is_finite() && det > d) {
            return Err(bad(
                "canary.detect_exception_rate_increase",
                det,
                "must be a finite number above canary.max_exception_rate_increase (the tolerance)",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(bad(
                "alpha (judge config)",
                self.alpha,
                "must be in (0, 0.5)",
            ));
        }
        if !(self.beta > 0.0 && self.beta < 0.5) {
            return Err(bad("beta (judge config)", self.beta, "must be in (0, 0.5)"));
        }
        if let Some(r) = self.baseline_exception_rate
            && !(r.is_finite() && r > 0.0 && r <= 1.0)
        {
            return Err(bad(
                "baseline_exception_rate (judge config)",
                r,
                "must be in (0, 1]",
            ));
        }
        if self.consecutive_failures == 0 {
            return Err(bad(
                "consecutive_failures (judge config)",
                0,
                "must be >= 1",
            ));
        }
        for b in &self.benchmarks {
            if !(b.tolerance.is_finite() && b.tolerance >= 0.0) {
                return Err(bad(
                    "benchmarks[].tolerance (judge config)",
                    format!("{} (benchmark {:?})", b.tolerance, b.name),
                    "must be a finite number >= 0",
                ));
            }
            if let Some(r) = b.reference
                && !r.is_finite()
            {
                return Err(bad(
                    "benchmarks[].reference (judge config)",
                    format!("{r} (benchmark {:?})", b.name),
                    "must be finite",
                ));
            }
        }
        Ok(())
    }
}

/// What one node reported, as of a sample (its latest heartbeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeReport {
    /// Node id.
    pub node_id: String,
    /// When its latest heartbeat arrived (unix seconds), if it ever sent one.
    pub heartbeat_at: Option<u64>,
    /// Its own health check, if reported.
    pub healthy: Option<bool>,
    /// Code hash of what it runs, if reported.
    pub code_hash: Option<String>,
    /// Cumulative exception count since the process started.
    pub exceptions_total: u64,
    /// Cumulative request count since the process started.
    pub requests_total: u64,
    /// Benchmark figures.
    #[serde(default)]
    pub bench: BTreeMap<String, f64>,
}

/// One sample: the latest report of each node at time `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Sample time (unix seconds).
    pub at: u64,
    /// Reports; nodes that are neither canary nor baseline are ignored, missing nodes
    /// simply have no new data.
    pub nodes: Vec<NodeReport>,
}

/// Input to the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new sample.
    Sample(Sample),
    /// Pre-update history: the reports of the canary and baseline nodes at a time at or
    /// before the window start, fed in time order before the first [`Event::Sample`]
    /// (every `sample_interval_secs` from `window_start − pre_window_secs`). Only the
    /// counters are used: consecutive history samples give each node's natural rate.
    /// A canary node's counter reset ends its history (the update restarted it).
    History(Sample),
    /// Time passed without a sample (checks heartbeat timeouts and the deadline).
    Tick {
        /// Current time (unix seconds).
        now: u64,
    },
}

/// Output of the judge, for the runtime to execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Keep sampling; take the next sample at `at`.
    SampleAt {
        /// When (unix seconds).
        at: u64,
    },
    /// The window ended inconclusive and `on_inconclusive = "extend"`: judging continues
    /// (with [`Command::SampleAt`]) until `until`. Issued once.
    ExtendWindow {
        /// New final deadline: window start + `max_window_secs` (unix seconds).
        until: u64,
    },
    /// The verdict became [`Decision::Inconclusive`]: neither promote nor roll back; show
    /// the verdict (`reason`, `more_requests_needed`, `eta_secs`) and wait for an operator
    /// decision. Issued once, together with a [`Command::SampleAt`]: keep sampling, a
    /// failure is still caught.
    Hold {
        /// The verdict.
        verdict: Box<Verdict>,
    },
    /// The window completed healthy: go on to DEPLOY.
    Promote {
        /// The verdict.
        verdict: Box<Verdict>,
    },
    /// The canary failed: send the rollback order to the canary nodes.
    Rollback {
        /// The verdict.
        verdict: Box<Verdict>,
    },
}

/// Overall decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Window complete and every criterion healthy.
    Pass,
    /// Keep sampling.
    Pending,
    /// Roll back.
    Fail,
    /// The window (and any extension) ended without enough evidence either way and no
    /// criterion failed: neither a pass nor a failure. The judge keeps sampling and still
    /// fails on a failing criterion, but never passes by itself; an operator decides.
    Inconclusive,
}

/// Why a failed verdict failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Crash loop, integrity mismatch, lost heartbeat: no waiting for the window.
    Hard,
    /// A criterion failed on the evidence (exception test, health check, benchmark).
    Statistical,
    /// The window ended without enough data and `on_inconclusive = "rollback"`.
    InsufficientData,
}

/// The five criteria.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// 1. exception rate, canary vs baseline.
    ExceptionRate,
    /// 2. the node's own health check (and crash loops).
    HealthCheck,
    /// 3. heartbeat responsiveness.
    Heartbeat,
    /// 4. code hash equals the manifest's.
    Integrity,
    /// 5. benchmark figures within tolerance.
    Benchmark,
}

/// Decision on one criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriterionDecision {
    /// Healthy on the evidence so far.
    Pass,
    /// Not enough data yet.
    Pending,
    /// Failed.
    Fail,
    /// Not configured (shown explicitly).
    Skipped,
}

/// Verdict on one criterion: the figures, the threshold, the statistic and the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionVerdict {
    /// Which criterion.
    pub criterion: Criterion,
    /// Its decision.
    pub decision: CriterionDecision,
    /// Whether a failure here is a hard failure.
    pub hard: bool,
    /// Observed figures.
    pub figures: serde_json::Value,
    /// The threshold(s) applied.
    pub threshold: serde_json::Value,
    /// The test statistic, where there is one.
    pub statistic: serde_json::Value,
    /// One line a human can read.
    pub detail: String,
}

/// The structured verdict (shown by `fleetgate canary-health --json` and kept in the state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Pass / pending / fail / inconclusive.
    pub decision: Decision,
    /// Set when `decision` is fail.
    pub failure: Option<FailureKind>,
    /// Summary.
    pub reason: String,
    /// Time of the judged event.
    pub at: u64,
    /// Window start.
    pub window_start: u64,
    /// Window end (before any extension).
    pub deadline: u64,
    /// Final deadline, if the window was extended.
    pub extended_until: Option<u64>,
    /// Samples judged.
    pub samples: u64,
    /// While the exception test waits for data: how many more canary requests, at the
    /// observed exception rates and traffic mix, it needs to pass (the smaller of the
    /// SPRT's expected distance to its accept boundary and, for a canary without
    /// exceptions, `min_canary_requests` minus the requests seen). `None` when the test
    /// is not waiting for data or the data do not point towards a pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_requests_needed: Option<u64>,
    /// `more_requests_needed` divided by the canary's request rate so far (seconds);
    /// `None` without an estimate or without canary traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
    /// When the verdict became [`Decision::Inconclusive`] (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<u64>,
    /// Canary node ids: the first [`MAX_NODE_FIGURES`] (`canary_nodes` counts them all;
    /// the run's canary selection lists every one).
    pub canary: Vec<String>,
    /// Number of canary nodes.
    #[serde(default)]
    pub canary_nodes: usize,
    /// Number of baseline nodes.
    pub baseline_nodes: usize,
    /// Per criterion, in the SPEC's order.
    pub criteria: Vec<CriterionVerdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
struct NodeTrack {
    last_exceptions: Option<u64>,
    last_requests: Option<u64>,
    last_heartbeat: Option<u64>,
    restarts: u32,
    unhealthy_streak: u32,
    last_healthy: Option<bool>,
    bad_code_hash: Option<String>,
    good_code_hash: bool,
    reports: u64,
    bench: BTreeMap<String, f64>,
}

/// The judge's whole state (serialisable; persist it after every event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judge {
    config: JudgeConfig,
    expected_code_hash: String,
    canary: BTreeSet<String>,
    baseline: BTreeSet<String>,
    window_start: u64,
    deadline: u64,
    extended_until: Option<u64>,
    nodes: BTreeMap<String, NodeTrack>,
    rate: RateTest,
    samples: u64,
    last_at: u64,
    bench_bad_streak: u32,
    /// Time of the first and of the latest sample (the canary's request rate).
    #[serde(default)]
    first_sample_at: Option<u64>,
    #[serde(default)]
    last_sample_at: Option<u64>,
    /// When the verdict became inconclusive; it stays so until a failure.
    #[serde(default)]
    held_since: Option<u64>,
    /// Per node, the counters of its latest history report; `None` once a canary
    /// node's history ended (a counter reset into the release's code).
    #[serde(default)]
    history: BTreeMap<String, Option<(u64, u64)>>,
    /// Time of the latest history sample.
    #[serde(default)]
    history_at: Option<u64>,
    /// Code hashes of releases the pipeline rejected and rolled back: a node's history
    /// intervals on such code are not its natural rate and are left out.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    revoked_code: BTreeSet<String>,
    /// Per node, the counts since a restart in the history, held back until the node's
    /// next report shows it is not on revoked code (a heartbeat names the new code a beat
    /// after the restart into it). Only while some code is revoked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    history_pending: BTreeMap<String, (u64, u64)>,
    verdict: Verdict,
}

/// Most nodes named in one criterion's detail: a verdict over 10,000 canary nodes must
/// stay readable, and its reason travels in a signed rollback order of bounded size.
pub const MAX_NAMED: usize = 10;

/// `items` joined by `sep`, at most [`MAX_NAMED`] of them, then how many more.
fn listed(items: &[String], sep: &str) -> String {
    let mut s = items
        .iter()
        .take(MAX_NAMED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(sep);
    if items.len() > MAX_NAMED {
        s.push_str(&format!("{sep}and {} more", items.len() - MAX_NAMED));
    }
    s
}

/// Most nodes given their own figures in one criterion's verdict: beyond it the verdict
/// (kept in the state, copied into every status answer) would grow with the fleet —
/// 2 MB of JSON per check at 10,000 canary nodes. Nodes that fail or hold a criterion
/// are listed first; the rest are counted.
pub const MAX_NODE_FIGURES: usize = 100;

/// A criterion's per-node figures, bounded by [`MAX_NODE_FIGURES`]: `{"nodes": {id:
/// figures, …}, "nodes_total": n, "omitted": n}`.
#[derive(Default)]
struct NodeFigures {
    notable: Vec<(String, serde_json::Value)>,
    rest: Vec<(String, serde_json::Value)>,
    total: usize,
}

impl NodeFigures {
    /// Adds a node's figures (made only when shown); `notable`: it fails or holds the
    /// criterion, and is kept before the others.
    fn push(&mut self, id: &str, notable: bool, figures: impl FnOnce() -> serde_json::Value) {
        self.total += 1;
        let full = self.notable.len() + self.rest.len() >= MAX_NODE_FIGURES;
        if notable && self.notable.len() < MAX_NODE_FIGURES {
            if full {
                self.rest.pop();
            }
            self.notable.push((id.to_owned(), figures()));
        } else if !notable && !full {
            self.rest.push((id.to_owned(), figures()));
        }
    }

    fn into_value(self) -> serde_json::Value {
        let shown = self.notable.len() + self.rest.len();
        let nodes: serde_json::Map<String, serde_json::Value> =
            self.notable.into_iter().chain(self.rest).collect();
        json!({"nodes": nodes, "nodes_total": self.total, "omitted": self.total - shown})
    }
}

impl Judge {
    /// Starts judging a window that opens at `window_start` (unix seconds).
    pub fn new(
        config: JudgeConfig,
        expected_code_hash: impl Into<String>,
        canary: impl IntoIterator<Item = String>,
        baseline: impl IntoIterator<Item = String>,
        window_start: u64,
    ) -> Result<Self, JudgeError> {
        config.validate()?;
        let canary: BTreeSet<String> = canary.into_iter().collect();
        let baseline: BTreeSet<String> = baseline.into_iter().collect();
        if canary.is_empty() {
            return Err(JudgeError::EmptyCanary);
        }
        if let Some(both) = canary.intersection(&baseline).next() {
            return Err(JudgeError::OverlappingSets(both.clone()));
        }
        let deadline = window_start.saturating_add(config.window_secs);
        let rate = RateTest::new(
            config.max_exception_rate_increase,
            config.detect_increase(),
            config.alpha,
            config.beta,
        );
        let nodes = canary
            .iter()
            .chain(baseline.iter())
            .map(|n| (n.clone(), NodeTrack::default()))
            .collect();
        let mut judge = Self {
            expected_code_hash: expected_code_hash.into(),
            verdict: Verdict {
                decision: Decision::Pending,
                failure: None,
                reason: "window opened, no sample yet".into(),
                at: window_start,
                window_start,
                deadline,
                extended_until: None,
                samples: 0,
                more_requests_needed: None,
                eta_secs: None,
                held_since: None,
                canary: canary.iter().take(MAX_NODE_FIGURES).cloned().collect(),
                canary_nodes: canary.len(),
                baseline_nodes: baseline.len(),
                criteria: Vec::new(),
            },
            config,
            canary,
            baseline,
            window_start,
            deadline,
            extended_until: None,
            nodes,
            rate,
            samples: 0,
            last_at: window_start,
            bench_bad_streak: 0,
            first_sample_at: None,
            last_sample_at: None,
            held_since: None,
            history: BTreeMap::new(),
            history_at: None,
            revoked_code: BTreeSet::new(),
            history_pending: BTreeMap::new(),
        };
        judge.verdict.criteria = judge.criteria(window_start);
        Ok(judge)
    }

    /// Leaves out of every node's pre-update history the intervals it spent on one of
    /// `code_hashes`: releases the pipeline rejected and rolled back. A node that ran a
    /// rejected release (10× the exceptions, say) inside the history and was returned to
    /// the old code would otherwise carry that rate as its "natural" one: as a baseline
    /// node it makes the baseline's rate seem to fall in the window (a healthy canary
    /// looks worse), as a canary node it makes a regression look like an improvement.
    /// Intervals on any other code — the releases completed before, the old code — still
    /// count. Call before the first [`Event::History`].
    #[must_use]
    pub fn with_revoked_code(mut self, code_hashes: impl IntoIterator<Item = String>) -> Self {
        self.revoked_code = code_hashes.into_iter().filter(|h| !h.is_empty()).collect();
        self
    }

    /// The latest verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The configuration in force.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// The exception-rate test state.
    pub fn rate_test(&self) -> &RateTest {
        &self.rate
    }

    /// Whether a final verdict (pass or fail) has been reached. Pending and inconclusive
    /// verdicts are not final: the judge wants more samples.
    pub fn is_decided(&self) -> bool {
        match self.verdict.decision {
            Decision::Pass | Decision::Fail => true,
            Decision::Pending | Decision::Inconclusive => false,
        }
    }

    /// Handles one event and returns the commands to execute. Once decided, the judge
    /// ignores new data and re-issues its final command (idempotent, for crash recovery).
    pub fn on_event(&mut self, event: Event) -> Result<Vec<Command>, JudgeError> {
        if let Some(cmd) = self.final_command() {
            return Ok(vec![cmd]);
        }
        let at = match &event {
            Event::History(s) => {
                if s.at > self.window_start || self.samples > 0 {
                    return Err(JudgeError::MisplacedHistory {
                        at: s.at,
                        window_start: self.window_start,
                    });
                }
                if let Some(last) = self.history_at
                    && s.at < last
                {
                    return Err(JudgeError::OutOfOrder { at: s.at, last });
                }
                self.history_at = Some(s.at);
                self.ingest_history(&s.nodes);
                return Ok(Vec::new());
            }
            Event::Sample(s) => s.at,
            Event::Tick { now } => *now,
        };
        if at < self.last_at {
            return Err(JudgeError::OutOfOrder {
                at,
                last: self.last_at,
            });
        }
        self.last_at = at;
        if let Event::Sample(sample) = event {
            self.ingest(sample);
        }
        Ok(self.evaluate(at))
    }

    fn final_command(&self) -> Option<Command> {
        match self.verdict.decision {
            Decision::Pass => Some(Command::Promote {
                verdict: Box::new(self.verdict.clone()),
            }),
            Decision::Fail => Some(Command::Rollback {
                verdict: Box::new(self.verdict.clone()),
            }),
            Decision::Pending | Decision::Inconclusive => None,
        }
    }

    fn ingest_history(&mut self, reports: &[NodeReport]) {
        for r in reports {
            let is_canary = self.canary.contains(&r.node_id);
            if !is_canary && !self.baseline.contains(&r.node_id) {
                continue;
            }
            let now = (r.exceptions_total, r.requests_total);
            let entry = self.history.entry(r.node_id.clone()).or_insert(Some(now));
            let Some((le, lr)) = *entry else {
                continue;
            };
            if r.code_hash
                .as_deref()
                .is_some_and(|h| self.revoked_code.contains(h))
            {
                // The interval ending here was served (at least in part) on a rejected
                // release: not the node's natural rate, nor is a restart just before it
                // (the restart into it, reported a beat before its code). Counting
                // resumes from here.
                *entry = Some(now);
                self.history_pending.remove(&r.node_id);
                continue;
            }
            if let Some((pe, pr)) = self.history_pending.remove(&r.node_id) {
                // The restart before this report was not into revoked code.
                self.rate.add_history(&r.node_id, is_canary, pe, pr);
            }
            if now.0 < le || now.1 < lr {
                // A restart. On a canary node running the release (or saying nothing of
                // its code) it is the update: its history ends there. Otherwise it is a
                // restart of the old code (a reboot, the provisioning): counting goes on
                // from zero.
                let old_code = r
                    .code_hash
                    .as_deref()
                    .is_some_and(|h| h != self.expected_code_hash);
                if is_canary && !old_code {
                    *entry = None;
                    continue;
                }
                if self.revoked_code.is_empty() {
                    self.rate.add_history(&r.node_id, is_canary, now.0, now.1);
                } else {
                    self.history_pending.insert(r.node_id.clone(), now);
                }
            } else {
                self.rate
                    .add_history(&r.node_id, is_canary, now.0 - le, now.1 - lr);
            }
            *entry = Some(now);
        }
        self.rate.recompute();
    }

    fn ingest(&mut self, sample: Sample) {
        // The history has ended: a restart it held back is not confirmed.
        self.history_pending.clear();
        self.samples += 1;
        self.first_sample_at.get_or_insert(sample.at);
        self.last_sample_at = Some(sample.at);
        let (mut ec, mut nc, mut eb, mut nb) = (0u64, 0u64, 0u64, 0u64);
        for r in sample.nodes {
            let is_canary = self.canary.contains(&r.node_id);
            let Some(t) = self.nodes.get_mut(&r.node_id) else {
                continue;
            };
            t.reports += 1;
            // Cumulative counters: a decrease means the process restarted.
            if let (Some(le), Some(lr)) = (t.last_exceptions, t.last_requests) {
                let (de, dr) = if r.exceptions_total < le || r.requests_total < lr {
                    t.restarts = t.restarts.saturating_add(1);
                    (r.exceptions_total, r.requests_total)
                } else {
                    (r.exceptions_total - le, r.requests_total - lr)
                };
                self.rate.observe_node(&r.node_id, is_canary, de, dr);
                if is_canary {
                    ec = ec.saturating_add(de);
                    nc = nc.saturating_add(dr);
                } else {
                    eb = eb.saturating_add(de);
                    nb = nb.saturating_add(dr);
                }
            }
            t.last_exceptions = Some(r.exceptions_total);
            t.last_requests = Some(r.requests_total);
            if let Some(hb) = r.heartbeat_at
                && hb >= self.window_start
            {
                t.last_heartbeat = Some(t.last_heartbeat.map_or(hb, |l| l.max(hb)));
            }
            match r.healthy {
                Some(true) => t.unhealthy_streak = 0,
                Some(false) => t.unhealthy_streak = t.unhealthy_streak.saturating_add(1),
                None => {}
            }
            if r.healthy.is_some() {
                t.last_healthy = r.healthy;
            }
            if let Some(h) = r.code_hash {
                if h == self.expected_code_hash {
                    t.good_code_hash = true;
                } else if t.bad_code_hash.is_none() {
                    t.bad_code_hash = Some(h);
                }
            }
            for (k, v) in r.bench {
                if v.is_finite() {
                    t.bench.insert(k, v);
                }
            }
        }
        self.rate
            .update(ec, nc, eb, nb, self.config.baseline_exception_rate);
        if !self.config.benchmarks.is_empty() {
            let (_, worse, _) = self.bench_eval();
            self.bench_bad_streak = if worse.is_empty() {
                0
            } else {
                self.bench_bad_streak.saturating_add(1)
            };
        }
    }

    fn canary_tracks(&self) -> impl Iterator<Item = (&String, &NodeTrack)> {
        self.nodes.iter().filter(|(k, _)| self.canary.contains(*k))
    }

    fn criteria(&self, now: u64) -> Vec<CriterionVerdict> {
        vec![
            self.exception_criterion(),
            self.health_criterion(),
            self.heartbeat_criterion(now),
            self.integrity_criterion(),
            self.bench_criterion(),
        ]
    }

    fn exception_criterion(&self) -> CriterionVerdict {
        let r = &self.rate;
        let estimate = r.estimate();
        let figures = json!({
            "canary_exceptions": r.canary_exceptions,
            "canary_requests": r.canary_requests,
            "canary_rate": r.canary_rate(),
            "baseline_exceptions": r.baseline_exceptions,
            "baseline_requests": r.baseline_requests,
            "baseline_rate": r.baseline_rate(),
            "observed_ratio": match (r.canary_rate(), r.baseline_rate()) {
                (Some(c), Some(b)) if b > 0.0 => Some(c / b),
                _ => None,
            },
            "estimate": estimate,
            "baseline_change": r.baseline_change(),
            "canary_history_requests": r.nodes.values().filter(|c| c.canary).map(|c| c.pre_requests).sum::<u64>(),
            "canary_history_exceptions": r.nodes.values().filter(|c| c.canary).map(|c| c.pre_exceptions).sum::<u64>(),
        });
        let threshold = json!({
            "max_exception_rate_increase": r.tolerance,
            "detect_exception_rate_increase": r.delta,
            "pre_window_secs": self.config.pre_window_secs,
            "alpha": self.config.alpha,
            "beta": self.config.beta,
            "fail_when_llr_at_least": r.upper,
            "accept_when_llr_at_most": r.lower,
            "baseline_exception_rate": self.config.baseline_exception_rate,
            "min_canary_requests": self.config.min_canary_requests,
        });
        let statistic = json!({
            "test": match r.method {
                RateMethod::DiffInDiff => "sequential likelihood ratio: each canary node against its own pre-update rate (its history, with the fleet's spread between nodes as the prior), corrected by the baseline's change (difference in differences, Poisson-gamma)",
                RateMethod::CrossSection => "sequential likelihood ratio: each canary node against the baseline nodes over the same time, allowing for their spread between nodes (negative binomial: a gamma prior for the canary's own rate from the baseline's counts)",
            },
            "method": r.method,
            "node_spread_cv2": r.dispersion,
            "llr": r.llr,
            "max_llr": r.max_llr,
            "informative_intervals": r.informative_intervals,
            "reference_intervals": r.reference_intervals,
        });
        let pct = |x: f64| {
            if x.is_finite() {
                format!("{:+.0}%", x * 100.0)
            } else {
                "unbounded".to_owned()
            }
        };
        let against = match r.method {
            RateMethod::DiffInDiff => "against its own pre-update rate",
            RateMethod::CrossSection => "against the baseline",
        };
        let estimate = match estimate {
            Some(e) => format!(
                "estimated {} {against} (95% CI {} to {})",
                pct(e.increase),
                pct(e.low),
                pct(e.high)
            ),
            None => format!("no estimate yet {against}"),
        };
        let thresholds = format!(
            "tolerance {} (canary.max_exception_rate_increase), detect {} (canary.detect_exception_rate_increase)",
            pct(r.tolerance),
            pct(r.delta)
        );
        let (decision, detail) = match r.decision() {
            RateDecision::Fail => (
                CriterionDecision::Fail,
                format!(
                    "canary exception rate is beyond the tolerance: {estimate}; {thresholds}; log likelihood ratio {:.2} >= {:.2}",
                    r.max_llr, r.upper
                ),
            ),
            RateDecision::Accept => (
                CriterionDecision::Pass,
                format!(
                    "canary exception rate is within the tolerance: {estimate}; {thresholds}; log likelihood ratio {:.2} <= {:.2}",
                    r.llr, r.lower
                ),
            ),
            RateDecision::Continue
                if r.canary_exceptions == 0
                    && r.canary_requests >= self.config.min_canary_requests =>
            {
                (
                    CriterionDecision::Pass,
                    format!("no canary exception in {} requests", r.canary_requests),
                )
            }
            RateDecision::Continue => {
                let why = if r.baseline_requests == 0
                    && self.config.baseline_exception_rate.is_none()
                    && r.canary_exceptions > 0
                {
                    "no baseline traffic to compare with (no baseline node reported requests; keep canary.pct below 1 so some nodes stay on the old release, or give the judge a fixed `baseline_exception_rate` when embedding it)".to_owned()
                } else if r.canary_exceptions == 0 {
                    format!(
                        "no canary exception yet, in {} of the {} requests (canary.min_requests) that pass on that alone",
                        r.canary_requests, self.config.min_canary_requests
                    )
                } else {
                    format!(
                        "not enough evidence yet ({} canary exceptions in {} requests; {estimate}; {thresholds})",
                        r.canary_exceptions, r.canary_requests
                    )
                };
                (CriterionDecision::Pending, why)
            }
        };
        CriterionVerdict {
            criterion: Criterion::ExceptionRate,
            decision,
            hard: false,
            figures,
            threshold,
            statistic,
            detail,
        }
    }

    fn health_criterion(&self) -> CriterionVerdict {
        let mut crash = Vec::new();
        let mut unhealthy = Vec::new();
        let mut unknown = Vec::new();
        let mut per_node = NodeFigures::default();
        for (id, t) in self.canary_tracks() {
            let notable = if t.restarts > self.config.max_restarts {
                crash.push(format!("{id} restarted {} times", t.restarts));
                true
            } else if t.unhealthy_streak >= self.config.consecutive_failures {
                unhealthy.push(format!(
                    "{id} failed its health check in {} consecutive samples",
                    t.unhealthy_streak
                ));
                true
            } else if t.last_healthy != Some(true) {
                unknown.push(id.clone());
                true
            } else {
                false
            };
            per_node.push(id, notable, || {
                json!({"healthy": t.last_healthy, "unhealthy_streak": t.unhealthy_streak, "restarts": t.restarts})
            });
        }
        let (decision, hard, detail) = if !crash.is_empty() {
            (
                CriterionDecision::Fail,
                true,
                format!("crash loop: {}", listed(&crash, "; ")),
            )
        } else if !unhealthy.is_empty() {
            (CriterionDecision::Fail, false, listed(&unhealthy, "; "))
        } else if !unknown.is_empty() {
            (
                CriterionDecision::Pending,
                false,
                format!("no healthy report yet from {}", listed(&unknown, ", ")),
            )
        } else {
            (
                CriterionDecision::Pass,
                false,
                "every canary node reports healthy".to_owned(),
            )
        };
        CriterionVerdict {
            criterion: Criterion::HealthCheck,
            decision,
            hard,
            figures: per_node.into_value(),
            threshold: json!({"consecutive_failures": self.config.consecutive_failures, "max_restarts": self.config.max_restarts}),
            statistic: serde_json::Value::Null,
            detail,
        }
    }

    fn heartbeat_criterion(&self, now: u64) -> CriterionVerdict {
        let timeout = self.config.heartbeat_timeout_secs;
        let mut silent = Vec::new();
        let mut waiting = Vec::new();
        let mut per_node = NodeFigures::default();
        for (id, t) in self.canary_tracks() {
            let since = t.last_heartbeat.unwrap_or(self.window_start);
            let silence = now.saturating_sub(since);
            let notable = if silence > timeout {
                silent.push(format!("{id} silent for {silence}s"));
                true
            } else if t.last_heartbeat.is_none() {
                waiting.push(id.clone());
                true
            } else {
                false
            };
            per_node.push(
                id,
                notable,
                || json!({"last_heartbeat": t.last_heartbeat, "silent_secs": silence}),
            );
        }
        let (decision, detail) = if !silent.is_empty() {
            (
                CriterionDecision::Fail,
                format!("lost heartbeat: {}", listed(&silent, "; ")),
            )
        } else if !waiting.is_empty() {
            (
                CriterionDecision::Pending,
                format!(
                    "no heartbeat yet in this window from {}",
                    listed(&waiting, ", ")
                ),
            )
        } else {
            (
                CriterionDecision::Pass,
                format!("every canary node heartbeat within {timeout}s"),
            )
        };
        CriterionVerdict {
            criterion: Criterion::Heartbeat,
            decision,
            hard: true,
            figures: per_node.into_value(),
            threshold: json!({"heartbeat_timeout_secs": timeout}),
            statistic: serde_json::Value::Null,
            detail,
        }
    }

    fn integrity_criterion(&self) -> CriterionVerdict {
        let mut bad = Vec::new();
        let mut unknown = Vec::new();
        let mut per_node = NodeFigures::default();
        for (id, t) in self.canary_tracks() {
            let notable = if let Some(h) = &t.bad_code_hash {
                bad.push(format!("{id} runs code hash {h}"));
                true
            } else if !t.good_code_hash {
                unknown.push(id.clone());
                true
            } else {
                false
            };
            per_node.push(id, notable, || {
                json!({"matches": t.good_code_hash && t.bad_code_hash.is_none(), "mismatched_code_hash": t.bad_code_hash})
            });
        }
        let (decision, detail) = if !bad.is_empty() {
            (
                CriterionDecision::Fail,
                format!(
                    "integrity mismatch (manifest code hash {}): {}",
                    self.expected_code_hash,
                    listed(&bad, "; ")
                ),
            )
        } else if !unknown.is_empty() {
            (
                CriterionDecision::Pending,
                format!("no code hash reported yet by {}", listed(&unknown, ", ")),
            )
        } else {
            (
                CriterionDecision::Pass,
                "every canary node runs the manifest's code hash".to_owned(),
            )
        };
        CriterionVerdict {
            criterion: Criterion::Integrity,
            decision,
            hard: true,
            figures: per_node.into_value(),
            threshold: json!({"expected_code_hash": self.expected_code_hash}),
            statistic: serde_json::Value::Null,
            detail,
        }
    }

    /// Per benchmark: figures, regressions beyond tolerance, and figures still missing.
    fn bench_eval(
        &self,
    ) -> (
        serde_json::Map<String, serde_json::Value>,
        Vec<String>,
        Vec<String>,
    ) {
        let mean = |ids: &BTreeSet<String>, name: &str| -> Option<f64> {
            let v: Vec<f64> = ids
                .iter()
                .filter_map(|id| self.nodes.get(id)?.bench.get(name).copied())
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let mut figures = serde_json::Map::new();
        let mut worse = Vec::new();
        let mut missing = Vec::new();
        for spec in &self.config.benchmarks {
            let canary = mean(&self.canary, &spec.name);
            let reference = mean(&self.baseline, &spec.name).or(spec.reference);
            let regression = match (canary, reference) {
                (Some(c), Some(r)) => {
                    let diff = match spec.direction {
                        Direction::HigherIsBetter => r - c,
                        Direction::LowerIsBetter => c - r,
                    };
                    Some(if r == 0.0 {
                        if diff > 0.0 { f64::INFINITY } else { 0.0 }
                    } else {
                        diff / r.abs()
                    })
                }
                _ => None,
            };
            figures.insert(
                spec.name.clone(),
                json!({
                    "canary": canary,
                    "reference": reference,
                    "regression": regression.map(|x| if x.is_finite() { json!(x) } else { json!("inf") }),
                    "tolerance": spec.tolerance,
                    "direction": spec.direction,
                }),
            );
            match regression {
                Some(x) if x > spec.tolerance => worse.push(format!(
                    "{} regressed by {} (tolerance {:.1}%)",
                    spec.name,
                    if x.is_finite() {
                        format!("{:.1}%", x * 100.0)
                    } else {
                        "an unbounded amount".into()
                    },
                    spec.tolerance * 100.0
                )),
                Some(_) => {}
                None => missing.push(spec.name.clone()),
            }
        }
        (figures, worse, missing)
    }

    fn bench_criterion(&self) -> CriterionVerdict {
        if self.config.benchmarks.is_empty() {
            return CriterionVerdict {
                criterion: Criterion::Benchmark,
                decision: CriterionDecision::Skipped,
                hard: false,
                figures: serde_json::Value::Null,
                threshold: serde_json::Value::Null,
                statistic: serde_json::Value::Null,
                detail:
                    "skipped: no canary benchmark criteria (the judge's `benchmarks` list is empty)"
                        .into(),
            };
        }
        let (figures, worse, missing) = self.bench_eval();
        let need = self.config.consecutive_failures;
        let (decision, detail) = if self.bench_bad_streak >= need {
            (CriterionDecision::Fail, worse.join("; "))
        } else if !worse.is_empty() {
            (
                CriterionDecision::Pending,
                format!(
                    "{} (sample {} of {need})",
                    worse.join("; "),
                    self.bench_bad_streak
                ),
            )
        } else if !missing.is_empty() {
            (
                CriterionDecision::Pending,
                format!(
                    "no canary figure or no reference yet for {}",
                    missing.join(", ")
                ),
            )
        } else {
            (
                CriterionDecision::Pass,
                "every benchmark within tolerance".to_owned(),
            )
        };
        CriterionVerdict {
            criterion: Criterion::Benchmark,
            decision,
            hard: false,
            figures: serde_json::Value::Object(figures),
            threshold: json!({"consecutive_failures": need}),
            statistic: json!({"consecutive_bad_samples": self.bench_bad_streak}),
            detail,
        }
    }

    /// While the exception test waits for data: more canary requests needed to pass
    /// (see [`Verdict::more_requests_needed`]) and the time they take at the canary's
    /// request rate so far.
    fn shortfall(&self, criteria: &[CriterionVerdict]) -> (Option<u64>, Option<u64>) {
        let waiting = criteria.iter().any(|c| {
            c.criterion == Criterion::ExceptionRate && c.decision == CriterionDecision::Pending
        });
        if !waiting {
            return (None, None);
        }
        let r = &self.rate;
        let by_test = r.requests_to_accept(self.config.baseline_exception_rate);
        let by_zero_rule = (r.canary_exceptions == 0).then(|| {
            self.config
                .min_canary_requests
                .saturating_sub(r.canary_requests)
        });
        let more = match (by_test, by_zero_rule) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let eta = more.and_then(|n| {
            let span = self.last_sample_at?.checked_sub(self.first_sample_at?)?;
            if span == 0 || r.canary_requests == 0 {
                return None;
            }
            let secs = n as f64 * span as f64 / r.canary_requests as f64;
            // `as` saturates; the estimate is finite and non-negative here.
            Some(secs.ceil() as u64)
        });
        (more, eta)
    }

    fn evaluate(&mut self, now: u64) -> Vec<Command> {
        let criteria = self.criteria(now);
        let failed: Vec<&CriterionVerdict> = criteria
            .iter()
            .filter(|c| c.decision == CriterionDecision::Fail)
            .collect();
        let pending: Vec<&CriterionVerdict> = criteria
            .iter()
            .filter(|c| c.decision == CriterionDecision::Pending)
            .collect();
        let (more, eta) = self.shortfall(&criteria);
        let final_deadline = self
            .window_start
            .saturating_add(self.config.max_window_secs);
        let why = pending
            .iter()
            .map(|c| c.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let inconclusive = match (more, eta) {
            (Some(n), Some(e)) => format!(
                "inconclusive: {n} more requests needed at the current rate (about {e} s); {why}"
            ),
            (Some(n), None) => {
                format!("inconclusive: {n} more requests needed at the current rate; {why}")
            }
            (None, _) => format!("inconclusive: {why}"),
        };
        let (decision, failure, reason) = if !failed.is_empty() {
            let hard = failed.iter().any(|c| c.hard);
            let reason = failed
                .iter()
                .map(|c| c.detail.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            (
                Decision::Fail,
                Some(if hard {
                    FailureKind::Hard
                } else {
                    FailureKind::Statistical
                }),
                reason,
            )
        } else if let Some(since) = self.held_since {
            // Held: never a pass by itself, whatever arrives later.
            let held = span(now.saturating_sub(since));
            let reason = if pending.is_empty() {
                format!(
                    "held for {held}: the evidence is now complete and no criterion fails; an operator decides (promote or roll back)"
                )
            } else {
                format!(
                    "{inconclusive}; held for {held}: an operator decides (promote or roll back)"
                )
            };
            (Decision::Inconclusive, None, reason)
        } else if now < self.deadline {
            (
                Decision::Pending,
                None,
                format!(
                    "{} left, no criterion failing (the window closes at unix {})",
                    span(self.deadline - now),
                    self.deadline
                ),
            )
        } else if pending.is_empty() {
            (
                Decision::Pass,
                None,
                "window complete and every criterion healthy".into(),
            )
        } else {
            match self.config.on_inconclusive {
                OnInconclusive::Rollback => (
                    Decision::Fail,
                    Some(FailureKind::InsufficientData),
                    format!("insufficient data: {why}"),
                ),
                OnInconclusive::Extend if now < final_deadline => (
                    Decision::Pending,
                    None,
                    format!(
                        "window extended: {} left (until unix {final_deadline}): {inconclusive}",
                        span(final_deadline - now)
                    ),
                ),
                OnInconclusive::Extend | OnInconclusive::Hold => (
                    Decision::Inconclusive,
                    None,
                    format!("{inconclusive}; held: an operator decides (promote or roll back)"),
                ),
            }
        };
        let mut commands = Vec::new();
        if decision == Decision::Pending && now >= self.deadline && self.extended_until.is_none() {
            self.extended_until = Some(final_deadline);
            commands.push(Command::ExtendWindow {
                until: final_deadline,
            });
        }
        let newly_held = decision == Decision::Inconclusive && self.held_since.is_none();
        if newly_held {
            self.held_since = Some(now);
        }
        self.verdict = Verdict {
            decision,
            failure,
            reason,
            at: now,
            window_start: self.window_start,
            deadline: self.deadline,
            extended_until: self.extended_until,
            samples: self.samples,
            more_requests_needed: more,
            eta_secs: eta,
            held_since: self.held_since,
            canary: self.canary.iter().take(MAX_NODE_FIGURES).cloned().collect(),
            canary_nodes: self.canary.len(),
            baseline_nodes: self.baseline.len(),
            criteria,
        };
        let next = Command::SampleAt {
            at: now.saturating_add(self.config.sample_interval_secs),
        };
        match decision {
            Decision::Pending => commands.push(next),
            Decision::Inconclusive => {
                if newly_held {
                    commands.push(Command::Hold {
                        verdict: Box::new(self.verdict.clone()),
                    });
                }
                commands.push(next);
            }
            Decision::Pass | Decision::Fail => commands.extend(self.final_command()),
        }
        commands
    }
}

/// A duration for people: `4m 12s`, `1h 0m 5s`, `45s`.
pub fn span(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}
