//! The fleet HTTP routes over a real socket (127.0.0.1:0) with reqwest, on SQLite and
//! (when FLEETGATE_TEST_PG_URL is set) PostgreSQL; and a canary flow fed by heartbeats
//! that arrive over HTTP.

mod common;

use std::time::Duration;

use common::*;
use fleetgate_canary::{Command, Event, FailureKind, Judge, JudgeConfig, select_canary};
use fleetgate_fleet::{DeployStatus, Heartbeat, Registry, SignedHeartbeat, unix_now};
use serde_json::Value;

async fn serve(reg: Registry) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, fleetgate_fleet::http::router(reg))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn post(client: &reqwest::Client, base: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/api/fleet/heartbeat"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn heartbeat_endpoint_over_a_real_socket() {
    for db in backends().await {
        let reg = db.registry().await;
        let key = node_key(1);
        reg.enroll(&cert_for("n1", &key, "eu"), &keyring(), unix_now())
            .await
            .unwrap();
        let base = serve(reg.clone()).await;
        let client = reqwest::Client::new();
        let now = unix_now() as u64;

        let (s, v) = post(&client, &base, signed(&heartbeat("n1", 1, now), &key)).await;
        assert_eq!((s, v["success"].as_bool()), (200, Some(true)), "{v}");
        assert_eq!(v["seq"], 1);

        let (s, v) = post(&client, &base, signed(&heartbeat("n1", 1, now), &key)).await;
        assert_eq!(s, 409, "{v}");
        assert_eq!(v["success"], false);
        assert!(v["error"].as_str().unwrap().contains("replayed"), "{v}");

        let mut env = SignedHeartbeat::sign(&heartbeat("n1", 2, now), &key);
        env.signature.clear();
        let (s, _) = post(&client, &base, env.to_json()).await;
        assert_eq!(s, 401);

        let (s, _) = post(
            &client,
            &base,
            signed(&heartbeat("n1", 2, now), &node_key(5)),
        )
        .await;
        assert_eq!(s, 401);

        let (s, v) = post(
            &client,
            &base,
            signed(&heartbeat("ghost", 1, now), &node_key(5)),
        )
        .await;
        assert_eq!(s, 403, "{v}");

        let (s, v) = post(&client, &base, vec![b'x'; 20 * 1024]).await;
        assert_eq!(s, 413, "{v}");
        assert_eq!(v["success"], false);

        let (s, _) = post(&client, &base, b"{not json".to_vec()).await;
        assert_eq!(s, 400);

        let (s, _) = post(
            &client,
            &base,
            signed(&heartbeat("n1", 3, now - 3600), &key),
        )
        .await;
        assert_eq!(s, 422);

        let v: Value = client
            .get(format!("{base}/api/fleet/peers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["success"], true);
        assert_eq!(v["peers"][0]["id"], "n1");
        assert_eq!(v["peers"][0]["last_seq"], 1);
        assert_eq!(v["peers"][0]["master_key_verified"], true);

        let r = client
            .get(format!("{base}/api/fleet/peers/n1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let r = client
            .get(format!("{base}/api/fleet/peers/ghost"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("ghost"));
        db.cleanup().await;
    }
}

/// A node that heartbeats over HTTP.
struct Node {
    id: String,
    key: fleetgate_trust::SigningKey,
    seq: u64,
    requests: u64,
    exceptions: u64,
    code_hash: String,
}

impl Node {
    async fn beat(&mut self, client: &reqwest::Client, base: &str) {
        self.seq += 1;
        self.requests += 1000;
        let hb = Heartbeat {
            bench: Default::default(),
            code_hash: self.code_hash.clone(),
            exceptions_total: self.exceptions,
            healthy: true,
            node_id: self.id.clone(),
            requests_total: self.requests,
            sent_at: unix_now() as u64,
            seq: self.seq,
            version: "2.0.0".into(),
        };
        let (s, v) = post(
            client,
            base,
            SignedHeartbeat::sign(&hb, &self.key).to_json(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
}

/// Runs one canary window: select, persist, then sample the registry every (synthetic)
/// interval while the nodes heartbeat over HTTP. `bad_hash` makes the canaries report a
/// code hash that is not the manifest's.
async fn canary_window(
    reg: &Registry,
    base: &str,
    run: &str,
    prefix: &str,
    bad_hash: bool,
) -> Command {
    let client = reqwest::Client::new();
    let mut nodes: Vec<Node> = (0..10u8)
        .map(|i| Node {
            id: format!("{prefix}-{i}"),
            key: node_key(i + prefix.len() as u8 * 16),
            seq: 0,
            requests: 0,
            exceptions: 0,
            code_hash: "manifest-hash".into(),
        })
        .collect();
    for n in &mut nodes {
        let region = if n.id.ends_with(['0', '1', '2', '3']) {
            "us"
        } else {
            "eu"
        };
        reg.enroll(&cert_for(&n.id, &n.key, region), &keyring(), unix_now())
            .await
            .unwrap();
        n.beat(&client, base).await;
    }
    let start = unix_now();
    let eligible = reg.eligible_peers(start, 60).await.unwrap();
    assert_eq!(eligible.len(), 10);
    let selection = select_canary(run.as_bytes(), &eligible, 0.2, 1).unwrap();
    assert_eq!(selection.nodes.len(), 2);
    assert_eq!(selection.per_region.values().sum::<usize>(), 2);

    let lease = reg
        .acquire_lease("pipeline", run, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("lease free");
    reg.persist_selection(run, &selection, &lease.fence(), start)
        .await
        .unwrap();
    // Idempotent for a resumed run.
    reg.persist_selection(run, &selection, &lease.fence(), start)
        .await
        .unwrap();
    assert_eq!(reg.load_selection(run).await.unwrap().unwrap(), selection);

    let baseline: Vec<String> = eligible
        .iter()
        .map(|e| e.id.clone())
        .filter(|id| !selection.contains(id))
        .collect();
    let config = JudgeConfig {
        window_secs: 40,
        sample_interval_secs: 10,
        heartbeat_timeout_secs: 60,
        min_canary_requests: 1000,
        ..JudgeConfig::default()
    };
    let mut judge = Judge::new(
        config,
        "manifest-hash",
        selection.nodes.clone(),
        baseline.clone(),
        start as u64,
    )
    .unwrap();
    let mut k = 0;
    loop {
        let at = start + k * 10;
        for n in &mut nodes {
            if selection.contains(&n.id) && bad_hash {
                n.code_hash = "something-else".into();
            }
            if k > 0 {
                n.beat(&client, base).await;
            }
        }
        // Heartbeats carry the server's receive time; sample at the later of the two.
        let sample_at = at.max(unix_now());
        let sample = reg
            .sample(&selection.nodes, &baseline, sample_at)
            .await
            .unwrap();
        assert_eq!(sample.nodes.len(), 10);
        let cmds = judge.on_event(Event::Sample(sample)).unwrap();
        for c in cmds {
            match c {
                Command::Promote { .. } => {
                    reg.release_lease(&lease).await.unwrap();
                    return c;
                }
                Command::Rollback { .. } => {
                    for id in &selection.nodes {
                        reg.record_deployment_status(
                            run,
                            id,
                            DeployStatus::RollbackSent,
                            "canary failed",
                            &lease.fence(),
                            unix_now(),
                        )
                        .await
                        .unwrap();
                    }
                    reg.release_lease(&lease).await.unwrap();
                    return c;
                }
                Command::SampleAt { .. } | Command::ExtendWindow { .. } => {}
            }
        }
        k += 1;
        assert!(k < 20, "no verdict");
    }
}

#[tokio::test]
async fn canary_flow_fed_by_http_heartbeats() {
    for db in backends().await {
        let reg = db.registry().await;
        let base = serve(reg.clone()).await;

        let cmd = canary_window(&reg, &base, "run-healthy", "ok", false).await;
        assert!(
            matches!(cmd, Command::Promote { .. }),
            "[{}] {cmd:?}",
            db.name
        );
        for p in reg.list_peers().await.unwrap() {
            reg.remove_peer(&p.id).await.unwrap();
        }
        let cmd = canary_window(&reg, &base, "run-bad-hash", "bad", true).await;
        let Command::Rollback { verdict } = cmd else {
            panic!("[{}] expected a rollback, got {cmd:?}", db.name)
        };
        assert_eq!(verdict.failure, Some(FailureKind::Hard));
        assert!(
            verdict.reason.contains("something-else"),
            "{}",
            verdict.reason
        );
        let st = reg.deployment_statuses("run-bad-hash").await.unwrap();
        assert_eq!(st.len(), 2);
        assert!(st.iter().all(|d| d.status == DeployStatus::RollbackSent));
        db.cleanup().await;
    }
}
