//! Memory of a large fleet's state: builds the state of a DEPLOY over `N` nodes (10% canary,
//! push mode, every delivery answered), then measures resident memory (`VmRSS`, peak
//! `VmHWM` reset before each phase through `/proc/self/clear_refs`) for: holding it,
//! serializing it, a save, a load, and a checkpoint (`transact_reporting` replacing the
//! DEPLOY progress), with the time each takes. Linux only.
//!
//! `cargo run --release -p fleetgate-store --example state_memory -- 100000 [unreachable
//! [DETAIL]]`: with `unreachable`, the DEPLOY deliveries are as the first pass leaves them
//! over simulated nodes (one failed push each, its error as `detail`, no answer kept;
//! `DETAIL` replaces that error's text, to compare error forms).

use fleetgate_core::PipelineState;
use fleetgate_core::fleet::{
    CanaryProgress, CanarySelection, DeliveryStatus, DeployMode, DeployProgress, NodeAnswer,
    NodeDelivery,
};
use fleetgate_store::StateDir;

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn phase(name: &str, base: u64, f: impl FnOnce()) {
    reset_peak();
    let before = status_kb("VmRSS:");
    let t = std::time::Instant::now();
    f();
    let took = t.elapsed();
    let peak = status_kb("VmHWM:");
    let after = status_kb("VmRSS:");
    println!(
        "{name:<44} {:>7.1} ms  rss before {:>6.1} MB  peak {:>6.1} MB (+{:>6.1} over the base)  after {:>6.1} MB",
        took.as_secs_f64() * 1000.0,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(base)) as f64 / 1024.0,
        after as f64 / 1024.0
    );
}

/// The error a push to a simulated node (address port 9) leaves.
const UNREACHABLE: &str = "cannot connect to 127.0.0.1:9: Connection refused (os error 111)";

fn unreachable(node: &str, detail: &str) -> NodeDelivery {
    let mut d = NodeDelivery::new(node, true);
    d.status = DeliveryStatus::Queued;
    d.attempts = 1;
    d.next_attempt_at = 1_765_000_002;
    d.detail = Some(detail.to_owned());
    d
}

fn delivery(node: &str, code_hash: &str) -> NodeDelivery {
    let mut d = NodeDelivery::new(node, true);
    d.status = DeliveryStatus::Done;
    d.attempts = 1;
    d.next_attempt_at = 1_765_000_000;
    d.last_answer = Some(Box::new(NodeAnswer::Accepted {
        outcome: "applied".into(),
        running_code_hash: Some(code_hash.into()),
    }));
    d.detail = Some("applied".into());
    d
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let first_pass = std::env::args().nth(2).as_deref() == Some("unreachable");
    let detail = std::env::args()
        .nth(3)
        .unwrap_or_else(|| UNREACHABLE.to_owned());
    let code_hash = "825f69e63e37".repeat(5) + "abcd";
    let nodes: Vec<String> = (0..n).map(|i| format!("sim-{i:06}")).collect();
    let canary_n = n / 10;
    let base = status_kb("VmRSS:");
    println!(
        "{n} nodes{}; process base {:.1} MB",
        if first_pass {
            format!(", DEPLOY deliveries unreachable (\"{detail}\")")
        } else {
            String::new()
        },
        base as f64 / 1024.0
    );
    let mut state = PipelineState::default();
    phase("build the state", base, || {
        state.version = "v1.1.0".into();
        state.code_hash = Some(code_hash.clone());
        state.run_id = Some("run-1".into());
        let canary = CanaryProgress {
            selection: Some(CanarySelection {
                nodes: nodes[..canary_n].to_vec(),
                baseline: nodes[canary_n..].to_vec(),
                seed: "00".repeat(32),
                eligible: n,
                per_region: Default::default(),
                selected_at: 1_765_000_000,
                fencing_epoch: 1,
            }),
            deliveries: nodes[..canary_n]
                .iter()
                .map(|x| delivery(x, &code_hash))
                .collect(),
            reporting: nodes[..canary_n].iter().cloned().collect(),
            ..CanaryProgress::default()
        };
        state.canary = Some(canary);
        let mut deploy = DeployProgress::new(DeployMode::Push, 1_765_000_000, 3600);
        deploy.targets = nodes[canary_n..].to_vec();
        deploy.listed = true;
        deploy.deliveries = nodes[canary_n..]
            .iter()
            .map(|x| {
                if first_pass {
                    unreachable(x, &detail)
                } else {
                    delivery(x, &code_hash)
                }
            })
            .collect();
        state.deploy = Some(deploy);
    });
    drop(nodes);
    let held = status_kb("VmRSS:");
    let mut len = 0;
    phase("serialize (compact)", held, || {
        len = serde_json::to_vec(&state).map(|v| v.len()).unwrap_or(0);
    });
    println!("  state document: {:.1} MB", len as f64 / 1e6);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StateDir::open(dir.path()).expect("state dir");
    phase("save", held, || store.save(&state).expect("save"));
    phase("load (a second copy)", held, || {
        let loaded = store.load().expect("load");
        assert_eq!(
            loaded.deploy.as_ref().map(|d| d.deliveries.len()),
            Some(n - canary_n)
        );
    });
    // As the orchestrator's DEPLOY checkpoint: the state read back lets go of its older
    // progress, the gate's working copy is moved in, written, and moved back out.
    let mut working = state.deploy.take();
    drop(state);
    let held = status_kb("VmRSS:");
    phase(
        "checkpoint (transact_returning, progress lent)",
        held,
        || {
            let (_, mut written) = store
                .transact_returning(|s| {
                    if let Some(p) = working.as_mut() {
                        p.deliveries[0].attempts += 1;
                    }
                    s.deploy = working.take();
                    Ok::<_, std::convert::Infallible>(((), true))
                })
                .expect("checkpoint");
            working = written.deploy.take();
        },
    );
    assert!(working.is_some());
}
