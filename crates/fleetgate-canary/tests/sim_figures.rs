//! Simulation figures for the canary judge (seeded, deterministic).
//!
//! `cargo test -p fleetgate-canary --release --test sim_figures -- --nocapture`
//! prints the seed, the traffic level and the figures; the assertions are the targets
//! of issue 4: A/A false rollbacks ≤ 1% over 10,000 windows, a canary at 2× the
//! baseline exception rate detected in a median of ≤ 2 sampling intervals; and of
//! issue 11: over thin traffic, where most windows end before the exception test is
//! decided, `on_inconclusive = "extend"` keeps the SPRT's guarantees (A/A false
//! rollbacks ≤ α = 1% with the one-sided 95% Wilson bound, a 2× canary never promoted:
//! caught, or held for an operator) and thin A/A windows end extended or held, not
//! rolled back.

use fleetgate_canary::sim::{SimParams, SimReport, simulate, wilson_interval};
use fleetgate_canary::{JudgeConfig, OnInconclusive};

const SEED: u64 = 0x00F1_EE70_A7E5_2026;

fn params(canary_ratio: f64, windows: usize) -> SimParams {
    SimParams {
        seed: SEED,
        windows,
        nodes: 10,
        canary_nodes: 1,
        requests_per_node: 1000,
        base_rate: 0.01,
        canary_ratio,
        // The issue-4 setting: every node alike, steady traffic, and the thresholds these
        // figures were first measured with (tolerance 0, detect +50%); since issue 12
        // the 30 minutes of history the runtime feeds by default (`pre_window_secs`).
        // Without history the judge must allow for a spread between nodes it cannot
        // yet rule out, and is slower (`spread_figures.rs`, benches/README.md).
        history_intervals: 60,
        config: JudgeConfig {
            max_exception_rate_increase: 0.0,
            detect_exception_rate_increase: Some(0.5),
            ..JudgeConfig::default()
        },
        watch_held_secs: 0,
        ..SimParams::default()
    }
}

fn describe(p: &SimParams) -> String {
    format!(
        "seed={:#x} windows={} fleet={} nodes ({} canary) traffic={} req/node/interval base_rate={} canary_ratio={} window={}s interval={}s delta={} alpha={} beta={} on_inconclusive={} max_window={}s min_requests={} watch_held={}s",
        p.seed,
        p.windows,
        p.nodes,
        p.canary_nodes,
        p.requests_per_node,
        p.base_rate,
        p.canary_ratio,
        p.config.window_secs,
        p.config.sample_interval_secs,
        p.config.max_exception_rate_increase,
        p.config.alpha,
        p.config.beta,
        p.config.on_inconclusive.as_str(),
        p.config.max_window_secs,
        p.config.min_canary_requests,
        p.watch_held_secs
    )
}

/// One-sided 95% bounds.
const Z95: f64 = 1.645;

fn outcome(label: &str, p: &SimParams, r: &SimReport) {
    let (lo, hi) = wilson_interval(r.rollbacks, r.windows, Z95);
    println!("{label}: {}", describe(p));
    println!(
        "{label}: rollbacks {} of {} = {:.3}% (95% bounds {:.3}%..{:.3}%; {} after the window), passes {}, extended {}, held {}, still inconclusive {}",
        r.rollbacks,
        r.windows,
        r.rollback_rate * 100.0,
        lo * 100.0,
        hi * 100.0,
        r.late_rollbacks,
        r.passes,
        r.extended,
        r.held,
        r.inconclusive
    );
    assert_eq!(r.rollbacks + r.passes + r.inconclusive, r.windows);
}

/// Thin traffic: 30 requests per node per interval, so the canary serves about 1,770
/// requests in a 30-minute window, while the SPRT needs about 3,600 on average to
/// accept an A/A canary (1% exceptions, δ = 0.5, 9 baseline nodes).
const THIN: u64 = 30;

fn thin(canary_ratio: f64, windows: usize, policy: OnInconclusive) -> SimParams {
    let mut p = params(canary_ratio, windows);
    p.requests_per_node = THIN;
    p.config.on_inconclusive = policy;
    p
}

fn assert_below_alpha(r: &SimReport) {
    let alpha = JudgeConfig::default().alpha;
    let (_, hi) = wilson_interval(r.rollbacks, r.windows, Z95);
    assert!(
        hi <= alpha,
        "false rollback rate {} (95% upper bound {hi}) > alpha {alpha} (seed {SEED:#x})",
        r.rollback_rate
    );
}

#[test]
fn sim_figures_thin_aa_with_extend_keeps_false_rollbacks_below_alpha() {
    // 2,000 windows keep the debug suite short; the long test below runs 10,000.
    let p = thin(1.0, 2_000, OnInconclusive::Extend);
    let r = simulate(&p);
    outcome("thin A/A extend", &p, &r);
    assert_below_alpha(&r);
    // Thin traffic really leaves most windows undecided at the end of the window, and
    // the extension goes on to twice the window.
    assert!(r.extended * 2 > r.windows, "only {} extended", r.extended);
    assert!(r.late_rollbacks > 0 && r.inconclusive > 0, "{r:?}");
}

/// The long version: 10,000 windows, then the same with an operator who never steps
/// in, so a held window is sampled for another hour (three hours of data per window).
/// Ville's inequality covers any amount of looking.
/// `cargo test -p fleetgate-canary --release --test sim_figures -- --ignored --nocapture`.
#[test]
#[ignore = "long (about a minute in release): run with --ignored / --run-ignored"]
fn sim_figures_thin_aa_long_runs_stay_below_alpha() {
    let p = thin(1.0, 10_000, OnInconclusive::Extend);
    let r = simulate(&p);
    outcome("thin A/A extend", &p, &r);
    assert_below_alpha(&r);
    let mut p = thin(1.0, 10_000, OnInconclusive::Extend);
    p.watch_held_secs = 3600;
    let r = simulate(&p);
    outcome("thin A/A extend, held windows watched 1 h", &p, &r);
    assert_below_alpha(&r);
}

#[test]
fn sim_figures_thin_aa_ends_extended_or_held_instead_of_rolled_back() {
    let windows = 1_000;
    let before = thin(1.0, windows, OnInconclusive::Rollback);
    let b = simulate(&before);
    outcome("thin A/A rollback", &before, &b);
    let after = thin(1.0, windows, OnInconclusive::Extend);
    let a = simulate(&after);
    outcome("thin A/A extend", &after, &a);
    let hold = thin(1.0, windows, OnInconclusive::Hold);
    let h = simulate(&hold);
    outcome("thin A/A hold", &hold, &h);
    // With "rollback" most healthy canaries are rolled back for lack of data at the end
    // of the window…
    assert!(b.late_rollbacks * 2 > windows, "{b:?}");
    // …with "extend" exactly those windows (same seed, same samples) are extended, and
    // with "hold" exactly those are held.
    assert_eq!(a.extended, b.late_rollbacks);
    assert_eq!(h.held, b.late_rollbacks);
    assert_eq!(h.inconclusive, h.held, "no held A/A window failed later");
    // Rolled back before the window ended: the same few windows whatever the policy.
    assert_eq!(b.rollbacks - b.late_rollbacks, h.rollbacks);
    assert_eq!(a.rollbacks - a.late_rollbacks, h.rollbacks);
    assert_below_alpha(&a);
    assert_below_alpha(&h);
    // The extension lets more of them pass on evidence; the rest are held.
    assert!(a.passes > b.passes, "{a:?}");
    assert!(a.inconclusive > 0 && a.held == a.inconclusive, "{a:?}");
    assert_eq!(h.passes, b.passes);
    assert_eq!(h.extended, 0);
}

#[test]
fn sim_figures_thin_doubled_exception_rate_is_never_promoted() {
    let beta = JudgeConfig::default().beta;
    let p = thin(2.0, 2_000, OnInconclusive::Extend);
    let r = simulate(&p);
    outcome("thin 2x extend", &p, &r);
    println!(
        "thin 2x extend: median {:?}, p90 {:?} intervals to detection",
        r.median_detection_intervals, r.p90_detection_intervals
    );
    // Since issue 12 the judge does not assume the nodes alike: 30 requests per node
    // per interval (18 exceptions in a node's 30-minute history) cannot rule out a
    // spread between nodes that would hide a 2× canary, so most windows are caught
    // and the rest held for an operator (measured: 60% caught within the extension,
    // 40% held; issue 11's first judge, which assumed alike nodes, caught ≥ 95%).
    assert!(r.rollbacks * 2 > r.windows, "{r:?}");
    assert_eq!(r.rollbacks + r.inconclusive, r.windows, "{r:?}");
    // A bad canary is never promoted for lack of data: at most the β misses pass.
    assert!(r.passes as f64 <= beta * r.windows as f64, "{r:?}");
}

/// 2,000 windows keep the debug suite short; the long test runs 10,000.
#[test]
fn sim_figures_aa_false_rollbacks() {
    aa_false_rollbacks(2_000);
}

#[test]
#[ignore = "long: run with --ignored in release"]
fn sim_figures_aa_false_rollbacks_long() {
    aa_false_rollbacks(10_000);
}

fn aa_false_rollbacks(windows: usize) {
    let p = params(1.0, windows);
    let r = simulate(&p);
    println!("A/A: {}", describe(&p));
    println!(
        "A/A: false rollbacks {} of {} windows = {:.3}% (passes {})",
        r.rollbacks,
        r.windows,
        r.rollback_rate * 100.0,
        r.passes
    );
    assert_eq!(r.rollbacks + r.passes + r.inconclusive, r.windows);
    assert!(
        r.rollback_rate <= 0.01,
        "false rollback rate {} > 1% (seed {:#x})",
        r.rollback_rate,
        SEED
    );
}

#[test]
fn sim_figures_doubled_exception_rate_detection() {
    let p = params(2.0, 1_000);
    let r = simulate(&p);
    println!("2x: {}", describe(&p));
    println!(
        "2x: detected {} of {} windows; median {:?} intervals, p90 {:?} intervals",
        r.rollbacks, r.windows, r.median_detection_intervals, r.p90_detection_intervals
    );
    let median = r
        .median_detection_intervals
        .expect("more than half detected");
    assert!(
        median <= 2,
        "median detection {median} intervals > 2 (seed {:#x})",
        SEED
    );
    assert!(
        r.rollbacks as f64 >= 0.95 * r.windows as f64,
        "power below 95%"
    );
}

#[test]
fn sim_figures_larger_fleet() {
    // 20 nodes, 2 canaries (the default 10%), same per-node traffic.
    let mut p = params(2.0, 1_000);
    p.nodes = 20;
    p.canary_nodes = 2;
    let r = simulate(&p);
    println!("2x/20 nodes: {}", describe(&p));
    println!(
        "2x/20 nodes: detected {} of {}; median {:?}, p90 {:?} intervals",
        r.rollbacks, r.windows, r.median_detection_intervals, r.p90_detection_intervals
    );
    let mut aa = params(1.0, 1_000);
    aa.nodes = 20;
    aa.canary_nodes = 2;
    let a = simulate(&aa);
    println!(
        "A/A/20 nodes: false rollbacks {} of {} = {:.3}%",
        a.rollbacks,
        a.windows,
        a.rollback_rate * 100.0
    );
    assert!(r.median_detection_intervals.is_some_and(|m| m <= 2));
    assert!(a.rollback_rate <= 0.01);
}
