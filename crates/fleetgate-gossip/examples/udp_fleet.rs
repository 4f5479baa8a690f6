//! N gossip nodes on real loopback UDP sockets in one process (the production runtime,
//! real Ed25519 verification on every node), one broadcast, measured: the time (and so
//! the rounds) until 99.9% and 100% of the nodes hold the manifest, next to the
//! simulator's rounds for the same N and configuration.
//!
//! Every node knows every other (full membership, as in the simulator) and runs its own
//! round timer; a round is `round_interval_ms` of wall time, so "rounds" here is elapsed
//! time divided by the interval, rounded up. Node timers are not aligned (as on a real
//! fleet), so the figure can differ from the simulator's lock-step rounds by one.
//!
//! `cargo run --release -p fleetgate-gossip --example udp_fleet -- [N] [--interval-ms MS] [--runs K]`
//! (defaults: N = 1000, 200 ms, 3 runs). Needs N open files (`ulimit -n`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_gossip::fixtures::Signer;
use fleetgate_gossip::node::{Node, PeerList};
use fleetgate_gossip::runtime::unix_ms;
use fleetgate_gossip::sim::{SIM_EPOCH_MS, broadcast};
use fleetgate_gossip::{GossipConfig, Transport, UdpTransport, spawn};

#[tokio::main]
async fn main() {
    let mut n = 1000usize;
    let mut interval_ms = 200u64;
    let mut runs = 3u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--interval-ms" => interval_ms = parse(args.next(), "--interval-ms"),
            "--runs" => runs = parse(args.next(), "--runs"),
            other => n = parse(Some(other.to_owned()), "N"),
        }
    }
    let cfg = GossipConfig {
        round_interval_ms: interval_ms,
        // Scaled with the round so pulls and anti-entropy keep their default round counts.
        pull_timeout_ms: interval_ms,
        anti_entropy_interval_ms: Some(interval_ms * 10),
        ..GossipConfig::default()
    };
    // The simulator, same N and configuration, for comparison.
    let sim_signer = Signer::new(7, SIM_EPOCH_MS / 1000 - 3600);
    let sim_manifest = sim_signer.release(1, "v1.0.0").expect("sign");
    let sim = broadcast(n, &cfg, 0.0, 1, &sim_manifest, 200, |_| {
        Arc::new(sim_signer.verifier())
    })
    .expect("simulate");
    println!(
        "N {n} | fanout {} | round {interval_ms} ms | simulator (seed 1): 99.9% in {:?} rounds, 100% in {:?}",
        cfg.fanout, sim.rounds_999, sim.rounds_100
    );
    println!(
        "{:>3} | {:>10} {:>6} | {:>10} {:>6} | {:>12} | {:>8}",
        "run", "99.9% ms", "rounds", "100% ms", "rounds", "msgs/node", "start s"
    );
    for run in 1..=runs {
        let started = Instant::now();
        let signer = Signer::new(7, unix_ms() / 1000 - 60);
        let manifest = signer.release(u64::from(run), "v1.0.0").expect("sign");
        let mut transports = Vec::with_capacity(n);
        for _ in 0..n {
            transports.push(
                UdpTransport::bind("127.0.0.1:0".parse().expect("addr"))
                    .await
                    .expect("bind a UDP socket (raise `ulimit -n` for large N)"),
            );
        }
        let peers = Arc::new(PeerList::new(transports.iter().map(|t| t.local_addr())));
        let mut handles = Vec::with_capacity(n);
        for (i, t) in transports.into_iter().enumerate() {
            let mut node = Node::new(
                cfg.clone(),
                t.local_addr(),
                Arc::clone(&peers),
                Arc::new(signer.verifier()),
                rand::random::<u64>() ^ i as u64,
            )
            .expect("node");
            node.set_cookie_secret(rand::random());
            handles.push(spawn(node, t));
        }
        // Let every node run a few rounds before the broadcast (as the simulator settles).
        tokio::time::sleep(Duration::from_millis(interval_ms * 3)).await;
        let start_secs = started.elapsed().as_secs_f64();
        let before: u64 = sent_total(&handles).await;
        let t0 = Instant::now();
        let mut arrivals = tokio::task::JoinSet::new();
        // The publisher holds it from the start (its own application published it).
        let mut times = vec![Duration::ZERO];
        for h in &handles[1..] {
            let mut rx = h.deliveries();
            arrivals.spawn(async move {
                rx.wait_for(Option::is_some).await.ok()?;
                Some(t0.elapsed())
            });
        }
        handles[0].publish(manifest).await.expect("publish");
        let deadline = Duration::from_millis(interval_ms * 200);
        while let Ok(Some(r)) = tokio::time::timeout(deadline, arrivals.join_next()).await {
            if let Ok(Some(t)) = r {
                times.push(t);
            }
        }
        // Messages sent until every node held it (or the deadline), all kinds.
        let after: u64 = sent_total(&handles).await;
        times.sort();
        let at = |share: f64| {
            let k = ((n as f64) * share).ceil() as usize;
            times.get(k.saturating_sub(1)).copied()
        };
        let show = |t: Option<Duration>| match t {
            Some(t) => (
                format!("{:.0}", t.as_secs_f64() * 1000.0),
                format!("{}", (t.as_millis() as u64).div_ceil(interval_ms)),
            ),
            None => ("-".into(), "never".into()),
        };
        let (ms999, r999) = show(at(0.999));
        let (ms100, r100) = show(if times.len() == n {
            times.last().copied()
        } else {
            None
        });
        println!(
            "{run:>3} | {ms999:>10} {r999:>6} | {ms100:>10} {r100:>6} | {:>12.1} | {start_secs:>8.1}",
            after.saturating_sub(before) as f64 / n as f64
        );
        for h in handles {
            let _ = h.shutdown().await;
        }
    }
}

async fn sent_total<V>(handles: &[fleetgate_gossip::GossipHandle<V>]) -> u64 {
    let mut total = 0;
    for h in handles {
        if let Ok((s, _)) = h.snapshot().await {
            total += s.sent_total();
        }
    }
    total
}

fn parse<T: std::str::FromStr>(s: Option<String>, what: &str) -> T {
    match s.as_deref().map(str::parse) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("{what}: expected a number, got {s:?}");
            std::process::exit(2);
        }
    }
}
