//! Prints rounds and messages to full coverage for one broadcast, for N = 1k, 10k, 100k
//! (and any N given as arguments), over a few seeds, with a real signed manifest
//! (verified for real once, then by hash of identical bytes).
//!
//! Columns: rounds to 99.9% and 100% after the publish, their bounds from issue 5,
//! messages per node sent until 100% (all kinds), push messages per node over the whole
//! push phase, all messages per node over the same period, and the push bound.
//!
//! `cargo run --release -p fleetgate-gossip --example figures [N...] [--seeds K] [--loss P] [--push-only]`

use std::sync::Arc;

use fleetgate_gossip::fixtures::Signer;
use fleetgate_gossip::node::ceil_log10;
use fleetgate_gossip::sim::{SIM_EPOCH_MS, broadcast, median};
use fleetgate_gossip::{CachingVerifier, GossipConfig};

fn main() {
    let mut ns = Vec::new();
    let mut seeds = 5u64;
    let mut loss = 0.0;
    let mut push_only = false;
    let mut cfg = GossipConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => seeds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seeds),
            "--loss" => loss = args.next().and_then(|s| s.parse().ok()).unwrap_or(loss),
            "--push-only" => push_only = true,
            "--mult" => cfg.retransmit_mult = args.next().and_then(|s| s.parse().ok()).unwrap_or(4),
            "--dup" => cfg.duplicate_cost = args.next().and_then(|s| s.parse().ok()).unwrap_or(1),
            n => ns.extend(n.parse::<usize>().ok()),
        }
    }
    if ns.is_empty() {
        ns = vec![1_000, 10_000, 100_000];
    }
    let signer = Signer::new(7, SIM_EPOCH_MS / 1000 - 3600);
    let manifest = signer.release(1, "v1.0.0").expect("sign");
    if push_only {
        cfg.anti_entropy_interval_ms = None;
    }
    println!(
        "fanout {} | retransmit_mult {} | duplicate_cost {} | anti-entropy {:?} ms | loss {loss} | {} seeds | manifest {} bytes",
        cfg.fanout,
        cfg.retransmit_mult,
        cfg.duplicate_cost,
        cfg.anti_entropy_interval_ms,
        seeds,
        manifest.len()
    );
    println!(
        "{:>7} {:>5} | {:>8} {:>8} | {:>8} {:>8} | {:>9} {:>9} {:>9} | {:>9}",
        "N",
        "seed",
        "r99.9%",
        "r100%",
        "bnd99.9",
        "bnd100",
        "@100%/nd",
        "push/node",
        "all/node",
        "bnd push"
    );
    for &n in &ns {
        let log4 = (n as f64).ln() / 4f64.ln();
        let b999 = log4.ceil() as u64 + 4;
        let b100 = (log4 + (n as f64).ln() / 3.0).ceil() as u64 + 3;
        let bmsg = 4 * ceil_log10(n as u64 + 1);
        let verifier = Arc::new(CachingVerifier::new(signer.verifier()));
        let mut r999 = Vec::new();
        let mut r100 = Vec::new();
        for seed in 1..=seeds {
            let t = std::time::Instant::now();
            let f = broadcast(n, &cfg, loss, seed, &manifest, 100, |_| {
                Arc::clone(&verifier)
            })
            .expect("simulation");
            println!(
                "{:>7} {:>5} | {:>8} {:>8} | {:>8} {:>8} | {:>9.2} {:>9.2} {:>9.2} | {:>9}   ({:.1?})",
                n,
                seed,
                fmt(f.rounds_999),
                fmt(f.rounds_100),
                b999,
                b100,
                f.to_full_per_node,
                f.push_per_node,
                f.total_per_node,
                bmsg,
                t.elapsed()
            );
            r999.push(f.rounds_999);
            r100.push(f.rounds_100);
        }
        println!(
            "{:>7} median | {:>8} {:>8}",
            n,
            fmt(median(&r999)),
            fmt(median(&r100))
        );
    }
}

fn fmt(r: Option<u64>) -> String {
    r.map_or_else(|| "never".to_owned(), |r| r.to_string())
}
