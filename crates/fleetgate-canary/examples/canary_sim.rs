//! Replays the canary simulation for any seed, fleet and traffic.
//!
//! `cargo run -p fleetgate-canary --release --example canary_sim -- [--seed N|0xHEX]
//! [--nodes 10] [--canaries 1] [--requests 1000] [--base-rate 0.01] [--ratio 2.0]
//! [--windows 2000] [--node-rate-spread 0] [--traffic-node-ratio 1] [--traffic-variation 0]
//! [--history-intervals 0] [--tolerance 0.1] [--detect 0.5] [--on-inconclusive extend]
//! [--watch-held-secs 0] [--json]`
//!
//! `--node-rate-spread S` gives each node the natural rate `base · exp(S·Z − S²/2)`;
//! `--traffic-node-ratio 3` makes the busiest node serve up to 3× the quietest;
//! `--traffic-variation 0.5` varies each node's traffic ±50% between intervals;
//! `--history-intervals 60` feeds 60 intervals of pre-update history to the judge.
//! Prints one line of figures, or JSON with `--json`.

use fleetgate_canary::sim::{SimParams, simulate, wilson_interval};
use fleetgate_canary::{JudgeConfig, OnInconclusive};

fn fail(msg: String) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn parse<T: std::str::FromStr>(flag: &str, value: Option<&String>) -> T {
    let Some(v) = value else {
        fail(format!("{flag} needs a value"))
    };
    v.parse()
        .unwrap_or_else(|_| fail(format!("{flag} {v:?} is not a valid value")))
}

fn seed(flag: &str, value: Option<&String>) -> u64 {
    match value {
        Some(s) if s.starts_with("0x") => u64::from_str_radix(&s[2..], 16)
            .unwrap_or_else(|_| fail(format!("{flag} {s:?} is not a hex number"))),
        other => parse(flag, other),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut p = SimParams {
        canary_ratio: 2.0,
        windows: 2000,
        ..SimParams::default()
    };
    let mut config = JudgeConfig::default();
    let mut json = false;
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let v = args.get(i + 1);
        i += 2;
        match flag {
            "--json" => {
                json = true;
                i -= 1;
            }
            "--seed" => p.seed = seed(flag, v),
            "--nodes" => p.nodes = parse(flag, v),
            "--canaries" => p.canary_nodes = parse(flag, v),
            "--requests" => p.requests_per_node = parse(flag, v),
            "--base-rate" => p.base_rate = parse(flag, v),
            "--ratio" => p.canary_ratio = parse(flag, v),
            "--windows" => p.windows = parse(flag, v),
            "--node-rate-spread" => p.node_rate_spread = parse(flag, v),
            "--traffic-node-ratio" => p.traffic_node_ratio = parse(flag, v),
            "--traffic-variation" => p.traffic_variation = parse(flag, v),
            "--history-intervals" => p.history_intervals = parse(flag, v),
            "--tolerance" => config.max_exception_rate_increase = parse(flag, v),
            "--detect" => config.detect_exception_rate_increase = Some(parse(flag, v)),
            "--watch-held-secs" => p.watch_held_secs = parse(flag, v),
            "--on-inconclusive" => {
                config.on_inconclusive = match v.map(String::as_str) {
                    Some("extend") => OnInconclusive::Extend,
                    Some("hold") => OnInconclusive::Hold,
                    Some("rollback") => OnInconclusive::Rollback,
                    other => fail(format!(
                        "--on-inconclusive {other:?} is not extend, hold or rollback"
                    )),
                }
            }
            other => fail(format!(
                "unknown argument {other:?} (see the example's doc comment)"
            )),
        }
    }
    if p.canary_nodes == 0 || p.canary_nodes >= p.nodes {
        fail("--canaries must be at least 1 and below --nodes".into());
    }
    if let Err(e) = config.validate() {
        fail(e.to_string());
    }
    p.config = config;
    let r = simulate(&p);
    let (lo, hi) = wilson_interval(r.rollbacks, r.windows, 1.645);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "seed": format!("{:#x}", p.seed),
                "nodes": p.nodes,
                "canary_nodes": p.canary_nodes,
                "requests_per_node_per_interval": p.requests_per_node,
                "base_rate": p.base_rate,
                "canary_ratio": p.canary_ratio,
                "node_rate_spread": p.node_rate_spread,
                "traffic_node_ratio": p.traffic_node_ratio,
                "traffic_variation": p.traffic_variation,
                "history_intervals": p.history_intervals,
                "max_exception_rate_increase": p.config.max_exception_rate_increase,
                "detect_exception_rate_increase": p.config.detect_increase(),
                "windows": r.windows,
                "rollbacks": r.rollbacks,
                "rollback_rate": r.rollback_rate,
                "rollback_rate_95": [lo, hi],
                "on_inconclusive": p.config.on_inconclusive.as_str(),
                "watch_held_secs": p.watch_held_secs,
                "passes": r.passes,
                "extended": r.extended,
                "held": r.held,
                "inconclusive": r.inconclusive,
                "late_rollbacks": r.late_rollbacks,
                "median_detection_intervals": r.median_detection_intervals,
                "p90_detection_intervals": r.p90_detection_intervals,
            })
        );
    } else {
        println!(
            "seed {:#x}: {} of {} windows rolled back ({:.2}%, 95% bounds {:.2}%..{:.2}%), {} passed, {} inconclusive; median {:?}, p90 {:?} intervals to a rollback",
            p.seed,
            r.rollbacks,
            r.windows,
            r.rollback_rate * 100.0,
            lo * 100.0,
            hi * 100.0,
            r.passes,
            r.inconclusive,
            r.median_detection_intervals,
            r.p90_detection_intervals
        );
    }
}
