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
//! * The sequential exception-rate test (module [`sprt`]): a Wald SPRT on the canary's
//!   share of exceptions given the total (conditional binomial, weighted by requests),
//!   H0 `ratio = 1` vs H1 `ratio = 1 + max_exception_rate_increase`, failing when the log
//!   likelihood ratio reaches `ln(1/α)` (α = 0.01) and accepting at `ln(β/(1−α))`
//!   (β = 0.05). The likelihood ratio is a martingale under H0, so by Ville's inequality
//!   checking it at every sample keeps the false-rollback rate at or below α. See
//!   [`sprt`] for the derivation and assumptions.
//! * A deterministic, seeded fleet simulator (module [`sim`]) that measures the
//!   false-rollback rate (A/A), the detection delay and how thin traffic ends
//!   (extended, inconclusive).
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
    FailureKind, Judge, JudgeConfig, JudgeError, NodeReport, OnInconclusive, Sample, Verdict,
};
pub use select::{
    Eligible, SelectError, Selection, canary_count, is_member, rank_key, select_canary,
};
pub use sprt::{NodeCounts, RateDecision, RateEstimate, RateMethod, RateTest};
