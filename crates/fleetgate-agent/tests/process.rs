//! The supervisor against real process groups, and start-up checks of the identity.

mod common;

use common::*;
use fleetgate_agent::supervisor::{AppSpec, Supervisor};
use std::time::{Duration, Instant};

fn spec(dir: &std::path::Path, command: &str) -> AppSpec {
    AppSpec {
        dir: dir.to_owned(),
        slot: "1-test".into(),
        version: "v1".into(),
        code_hash: "00".into(),
        command: command.into(),
        env: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_then_kills_the_whole_process_group() {
    let d = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(d.path().join("app.pid"), Duration::from_secs(1));
    // Ignores SIGTERM and forks a grandchild that ignores it too.
    sup.start(spec(
        d.path(),
        "trap '' TERM; (trap '' TERM; while :; do sleep 0.05; done) & echo $! > child.pid; while :; do sleep 0.05; done",
    ))
    .unwrap();
    let child_pid = loop {
        if let Ok(s) = std::fs::read_to_string(d.path().join("child.pid"))
            && let Ok(p) = s.trim().parse::<i32>()
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(sup.alive());
    let t = Instant::now();
    sup.stop().await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "waited for the drain: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "then killed: {took:?}");
    assert!(!pid_alive(child_pid), "the forked grandchild is gone too");
    assert!(!sup.alive());
    assert!(!d.path().join("app.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_app_stops_at_once_and_exits_are_counted() {
    let d = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(d.path().join("app.pid"), Duration::from_secs(5));
    sup.start(spec(d.path(), "exit 7")).unwrap();
    let t = Instant::now();
    while sup.exits() < 2 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sup.exits() >= 2, "restarted and counted: {}", sup.exits());
    sup.stop().await;
    sup.start(spec(d.path(), "exec sleep 30")).unwrap();
    assert_eq!(sup.exits(), 0, "a new start resets the count");
    let t = Instant::now();
    sup.stop().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn an_enrollment_certificate_for_another_node_or_key_is_refused_at_start() {
    let f = Fixture::new(Opts::default());
    let cert = |node: &str, key: &str| {
        fleetgate_trust::sign_document(
            &serde_json::json!({
                "type": "fleetgate-enrollment",
                "node_id": node,
                "public_key": key,
                "region": "eu",
                "address": "http://127.0.0.1:1",
                "issued_at": 1,
            }),
            &[&f.signer],
        )
        .unwrap()
    };
    let path = f.dir.path().join("keys/node.cert.json");
    let mut cfg = f.config();
    cfg.enrollment_cert = Some(path.clone());
    let me = f.identity.public_key_hex();

    std::fs::write(&path, cert("node-2", &me)).unwrap();
    let e = fleetgate_agent::Agent::open(cfg.clone()).unwrap_err();
    assert!(e.to_string().contains("node-2"), "{e}");

    let other = fleetgate_trust::SigningKey::from_seed(&[5; 32]).public_key_hex();
    std::fs::write(&path, cert("node-1", &other)).unwrap();
    let e = fleetgate_agent::Agent::open(cfg.clone()).unwrap_err();
    assert!(e.to_string().contains("certifies key"), "{e}");

    let rogue = fleetgate_trust::SigningKey::from_seed(&[6; 32]);
    let forged = fleetgate_trust::sign_document(
        &serde_json::json!({"type": "fleetgate-enrollment", "node_id": "node-1", "public_key": me}),
        &[&rogue],
    )
    .unwrap();
    std::fs::write(&path, forged).unwrap();
    assert!(fleetgate_agent::Agent::open(cfg.clone()).is_err());

    std::fs::write(&path, cert("node-1", &me)).unwrap();
    fleetgate_agent::Agent::open(cfg).expect("a valid certificate is accepted");
}
