//! # fleetgate-canary — the CANARY stage's decisions, without I/O
//!
//! **Where it sits.** Below the runtime: `fleetgate-runtime` (the CANARY stage) asks
//! [`select_canary`] which peers to update, then drives a [`Judge`] with samples read
//! from the fleet registry (`fleetgate-fleet`) and executes the [`Command`]s it returns.
//! Nodes use [`is_member`] to check their own membership.
//!
//! **What it owns.**
//! * Reproducible canary selection (module [`select`]): rank by `SHA-256(seed ‖ node id)`,
//!   `k = min(n, max(min, ceil(pct·n)))`, spread across regions by largest remainder.
//! * The health judge (module [`judge`]), a pure state machine
//!   `(Judge, Event) -> (Judge, Vec<Command>)` over the SPEC's five criteria, producing a
//!   structured [`Verdict`] (per criterion: figures, threshold, statistic, decision).
//! * The sequential exception-rate test (module [`sprt`]): H0 "the canary's rate is
//!   `1 + max_exception_rate_increase` times what it would be on the old code" (the
//!   tolerance: must still pass) against H1 "`1 + detect_exception_rate_increase`
//!   times" (must be caught), failing when the log likelihood ratio reaches `ln(1/α)`
//!   (α = 0.01) and accepting at `ln(β/(1−α))` (β = 0.05). Each canary node is compared
//!   with its own pre-update rate, corrected by the baseline's change over the same
//!   time (difference in differences, below), the fleet's spread between nodes serving
//!   as the prior that the node's own history updates; without history, with the
//!   baseline nodes over the same time, allowing for their spread (negative binomial).
//!   See [`sprt`] for the derivation.
//! * A deterministic, seeded fleet simulator (module [`sim`]) that measures the
//!   false-rollback rate (A/A), the detection delay and how thin traffic ends
//!   (extended, inconclusive).
//!
//! **Why difference in differences (issue 12).** Real nodes differ persistently in
//! their natural exception rate (hardware, region, tenant mix). A test that compares the
//! canary with the baseline — the binomial SPRT this crate used, and in effect every
//! canary analysis that pools nodes — reads the canary node's own persistent
//! difference as evidence, and the evidence grows without bound as the window goes
//! on: with a per-node spread of σ = 0.3 (rate × `exp(σZ − σ²/2)`) it rolled back
//! 25.7% of healthy releases. The options considered:
//! * *A rank test over per-node, per-interval rates*, as Kayenta does (Mann–Whitney U
//!   between canary and baseline cells; Netflix/Google, "Automated Canary Analysis",
//!   2018). Robust to outliers and to the scale of the metric, but its cells are not
//!   independent: the same canary node contributes every interval, so a persistent
//!   node difference is again significant given enough intervals; it is also a
//!   fixed-sample test, not one that may be looked at every interval.
//! * *Overdispersion* (quasi-Poisson: Wedderburn 1974; McCullagh & Nelder,
//!   *Generalized Linear Models*, 1989, §4.5; or the gamma–Poisson / negative binomial
//!   model): estimate the spread between nodes from the baseline nodes and judge the
//!   canary against it. Sound, but it can only judge the canary against the spread:
//!   with σ = 0.3 a canary at 2× its old rate is a 2.3σ node, indistinguishable from an
//!   ordinary one. It is the fallback when there is no history (a runtime that feeds
//!   none, a brand-new fleet): the canary's own rate gets a gamma prior whose variance
//!   is a *high* estimate of the baseline nodes' spread (method of moments,
//!   DerSimonian & Laird 1986, from Pearson's X² raised to its one-sided 95% bound),
//!   and the same closed-form Bayes factor as below. A scaled conditional-binomial
//!   statistic (this crate's first fallback) was tried and measured 0.8–2.3% false
//!   rollbacks at σ 0.1–0.5: early in the window the spread is not yet significant,
//!   and a test that may be looked at every interval must not assume it away. Healthy
//!   windows on a spread fleet now end *inconclusive* (held for an operator), not
//!   rolled back; alike nodes still decide.
//! * *Difference in differences* (Card & Krueger 1994; Angrist & Pischke, *Mostly
//!   Harmless Econometrics*, 2009, ch. 5): compare each canary node with **its own**
//!   rate before the update, and correct by the baseline's change over the same time
//!   (traffic mix, time of day, a dependency's outage move every node). The node's
//!   persistent difference cancels exactly, and the registry already stores the
//!   heartbeats it needs. The history's own noise is carried, not ignored: the node's
//!   old rate is integrated out over its posterior (Poisson–gamma), which gives a
//!   closed-form Bayes factor — the two-Poisson-rates conditional binomial
//!   (Przyborowski & Wilenski 1940) in likelihood-ratio form — a martingale under
//!   H0, so Ville's inequality still bounds the false-rollback rate when the test is
//!   looked at every interval (as in mixture SPRTs: Robbins 1970; Johari et al.,
//!   "Peeking at A/B tests", KDD 2017). This is the test used whenever every canary
//!   node has history. The prior the history updates is empirical Bayes (Robbins 1956;
//!   Efron & Morris 1975): the fleet's spread, estimated from every node's history
//!   (before the update they all ran the same code), so a short history (a young
//!   fleet, a recently restarted node) on a fleet of alike nodes still decides, while a
//!   spread fleet leans on each node's own history.
//!
//! Measured (module [`sim`], `tests/spread_figures.rs`; 10 nodes, 1 canary, base 1%,
//! traffic ×3 between nodes and ±50% between intervals, 30 minutes of history): A/A
//! false rollbacks ≤ 0.1% for every σ in {0, 0.1, 0.2, 0.3, 0.5} at 1,000 and at 100
//! requests/node/interval; at σ = 0.3 a 2× canary caught in every window, median 3
//! intervals; without history ≤ 0.1% (10 nodes) with most spread windows held.
//! Figures in `benches/README.md`.
//!
//! **Honest thresholds.** `max_exception_rate_increase` is a tolerance (the largest
//! increase that must still pass: false rollbacks ≤ α at and below it) and
//! `detect_exception_rate_increase` (default `max(2 × tolerance, 0.5)`) the increase
//! that must be caught (power ≥ 1 − β); the indifference zone lies between them. The
//! verdict's exception criterion shows both, and the current estimate of the increase
//! with a 95% confidence interval.
//!
//! **Feeding history.** The runtime feeds [`Event::History`] samples (the registry's
//! stored heartbeats of the canary and baseline nodes) from `window_start −
//! pre_window_secs` up to the window start, in time order, before the first
//! [`Event::Sample`]; only the counters' changes count, so the cadence may be sparse far
//! from the start, but must be dense near it (a young fleet or a recently restarted node
//! has only a few seconds of history). A canary node's counter reset into the release's
//! code (or an unnamed one) ends its history (the update restarted it); a reset that
//! reports another code hash is a restart of the old code, and counting goes on.
//!
//! **Verdict rules.** Crash loops (counter resets beyond `max_restarts`), integrity
//! mismatches and lost heartbeats fail *hard* at the next sample. The exception test,
//! health check and benchmarks fail *statistically*. The verdict passes only when the
//! window is over and every criterion passed (or is explicitly skipped: benchmarks with
//! none configured). Too little data is never a pass: when the window ends with a
//! criterion still pending (typically the exception test, for thin traffic) and none
//! failed, `on_inconclusive` decides — `extend` (default): keep judging until
//! `max_window_secs` after the window start, then hold; `hold`: the verdict becomes
//! [`Decision::Inconclusive`] (neither promote nor roll back: an operator decides, the
//! verdict says how many more canary requests the test needs and how long they take at
//! the current rate); `rollback`: fail with "insufficient data". Failures are caught in
//! every mode, during an extension and while held.
//!
//! **What it must never do.** No I/O, no clock, no randomness, no tokio: time comes in
//! with the events, randomness with the seed. Nothing here panics on data that came
//! from a node or a database; bad figures are ignored or fail closed.
//!
//! **How to test.** `cargo nextest run -p fleetgate-canary` (unit and property tests).
//! The simulation figures: `cargo test -p fleetgate-canary --release --test sim_figures
//! -- --nocapture` prints the seed, the traffic level, the A/A false-rollback rate and
//! the detection delays.

pub mod judge;
pub mod select;
pub mod sim;
pub mod sprt;

pub use judge::{
    BenchSpec, Command, Criterion, CriterionDecision, CriterionVerdict, Decision, Direction, Event,
    FailureKind, Judge, JudgeConfig, JudgeError, MAX_NAMED, MAX_NODE_FIGURES, NodeReport,
    OnInconclusive, Sample, Verdict,
};
pub use select::{
    Eligible, SelectError, Selection, canary_count, is_member, rank_key, select_canary,
};
pub use sprt::{NodeCounts, RateDecision, RateEstimate, RateMethod, RateTest};
