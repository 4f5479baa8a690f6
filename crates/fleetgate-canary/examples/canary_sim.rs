//! Replays the canary simulation for any seed and traffic level.
//!
//! `cargo run -p fleetgate-canary --release --example canary_sim -- [SEED] [NODES] [CANARIES] [REQ_PER_NODE] [BASE_RATE] [RATIO] [WINDOWS] [ON_INCONCLUSIVE] [WATCH_HELD_SECS]`
//!
//! Defaults: seed 0xf1ee70a7e52026, 10 nodes, 1 canary, 1000 requests/node/interval,
//! base rate 0.01, ratio 2.0, 2000 windows, `extend`, 0 s. Prints the figures as JSON.

use fleetgate_canary::sim::{SimParams, simulate};
use fleetgate_canary::{JudgeConfig, OnInconclusive};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn seed(args: &[String]) -> u64 {
    match args.first() {
        Some(s) if s.starts_with("0x") => u64::from_str_radix(&s[2..], 16).unwrap_or_else(|_| {
            eprintln!("SEED {s:?} is not a hex number");
            std::process::exit(2)
        }),
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("SEED {s:?} is not a number");
            std::process::exit(2)
        }),
        None => 0x00F1_EE70_A7E5_2026,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let p = SimParams {
        seed: seed(&args),
        nodes: arg(&args, 1, 10usize),
        canary_nodes: arg(&args, 2, 1usize),
        requests_per_node: arg(&args, 3, 1000u64),
        base_rate: arg(&args, 4, 0.01f64),
        canary_ratio: arg(&args, 5, 2.0f64),
        windows: arg(&args, 6, 2000usize),
        config: JudgeConfig {
            on_inconclusive: match args.get(7).map(String::as_str) {
                None | Some("extend") => OnInconclusive::Extend,
                Some("hold") => OnInconclusive::Hold,
                Some("rollback") => OnInconclusive::Rollback,
                Some(other) => {
                    eprintln!("ON_INCONCLUSIVE {other:?} is not extend, hold or rollback");
                    std::process::exit(2)
                }
            },
            ..JudgeConfig::default()
        },
        watch_held_secs: arg(&args, 8, 0u64),
    };
    if p.canary_nodes == 0 || p.canary_nodes >= p.nodes {
        eprintln!("CANARIES must be at least 1 and below NODES");
        std::process::exit(2);
    }
    let r = simulate(&p);
    println!(
        "{}",
        serde_json::json!({
            "seed": format!("{:#x}", p.seed),
            "nodes": p.nodes,
            "canary_nodes": p.canary_nodes,
            "requests_per_node_per_interval": p.requests_per_node,
            "base_rate": p.base_rate,
            "canary_ratio": p.canary_ratio,
            "windows": r.windows,
            "rollbacks": r.rollbacks,
            "rollback_rate": r.rollback_rate,
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
}
