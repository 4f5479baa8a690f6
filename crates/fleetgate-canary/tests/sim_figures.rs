//! Simulation figures for the canary judge (seeded, deterministic).
//!
//! `cargo test -p fleetgate-canary --release --test sim_figures -- --nocapture`
//! prints the seed, the traffic level and the figures; the assertions are the targets
//! of issue 4: A/A false rollbacks ≤ 1% over 10,000 windows, a canary at 2× the
//! baseline exception rate detected in a median of ≤ 2 sampling intervals.

use fleetgate_canary::JudgeConfig;
use fleetgate_canary::sim::{SimParams, simulate};

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
        config: JudgeConfig::default(),
    }
}

fn describe(p: &SimParams) -> String {
    format!(
        "seed={:#x} windows={} fleet={} nodes ({} canary) traffic={} req/node/interval base_rate={} canary_ratio={} window={}s interval={}s delta={} alpha={} beta={}",
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
        p.config.beta
    )
}

#[test]
fn sim_figures_aa_false_rollbacks() {
    let p = params(1.0, 10_000);
    let r = simulate(&p);
    println!("A/A: {}", describe(&p));
    println!(
        "A/A: false rollbacks {} of {} windows = {:.3}% (passes {})",
        r.rollbacks,
        r.windows,
        r.rollback_rate * 100.0,
        r.passes
    );
    assert_eq!(r.rollbacks + r.passes, r.windows);
    assert!(
        r.rollback_rate <= 0.01,
        "false rollback rate {} > 1% (seed {:#x})",
        r.rollback_rate,
        SEED
    );
}

#[test]
fn sim_figures_doubled_exception_rate_detection() {
    let p = params(2.0, 2_000);
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
    let mut p = params(2.0, 2_000);
    p.nodes = 20;
    p.canary_nodes = 2;
    let r = simulate(&p);
    println!("2x/20 nodes: {}", describe(&p));
    println!(
        "2x/20 nodes: detected {} of {}; median {:?}, p90 {:?} intervals",
        r.rollbacks, r.windows, r.median_detection_intervals, r.p90_detection_intervals
    );
    let mut aa = params(1.0, 2_000);
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
