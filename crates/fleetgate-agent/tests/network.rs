//! Heartbeats to a real HTTP orchestrator stand-in that is down, then up; manifests
//! arriving by gossip over real UDP on 127.0.0.1.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use common::*;
use fleetgate_agent::heartbeat::{Heartbeat, SignedHeartbeat};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn heartbeats_survive_an_unreachable_orchestrator_and_carry_signed_app_counters() {
    let orch_port = free_port();
    let f = Fixture::new(Opts {
        orchestrator: Some(format!("http://127.0.0.1:{orch_port}")),
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    // Orchestrator down: failures are counted, the agent keeps going.
    wait_until(Duration::from_secs(10), "two failed heartbeats", || {
        status(&f)["heartbeats"]["failed"].as_u64().unwrap_or(0) >= 2
    });
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}");

    // Orchestrator comes up: heartbeats arrive without any restart.
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/api/fleet/heartbeat",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body.to_vec());
                axum::Json(serde_json::json!({"success": true}))
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", orch_port)))
        .unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    wait_until(Duration::from_secs(10), "three heartbeats received", || {
        got.lock().unwrap().len() >= 3
    });
    let bodies = got.lock().unwrap().clone();
    let mut last_seq = 0;
    for b in &bodies {
        let env: SignedHeartbeat = serde_json::from_slice(b).expect("envelope");
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&env.signature, &mut sig).expect("hex signature");
        f.identity
            .public_key()
            .verify_strict(env.payload.as_bytes(), &sig)
            .expect("signed by the node identity key");
        let hb: Heartbeat = serde_json::from_str(&env.payload).expect("payload");
        assert!(
            hb.seq > last_seq,
            "seq strictly increases: {} after {last_seq}",
            hb.seq
        );
        last_seq = hb.seq;
        assert_eq!(hb.node_id, "node-1");
        assert_eq!(hb.version, "v1.0.0");
        assert_eq!(hb.code_hash, v1.code_hash);
        assert!(hb.healthy);
        assert!(
            hb.requests_total > 0,
            "the app's counter is forwarded: {hb:?}"
        );
        assert_eq!(hb.exceptions_total, 0);
        assert!(hb.sent_at + 60 >= fleetgate_trust::unix_now());
    }
    let s = status(&f);
    assert_eq!(s["heartbeats"]["consecutive_failures"], 0, "{s}");
    rt.block_on(node.shutdown()).unwrap();
}

#[test]
fn manifests_arriving_by_gossip_are_verified_and_applied() {
    let f = Fixture::new(Opts {
        extra:
            "gossip_listen = \"127.0.0.1:0\"\ngossip_round_ms = 100\ngossip_anti_entropy_secs = 1\n"
                .into(),
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let agent_gossip = node.gossip_addr().expect("gossip runs");
    let keyring = fleetgate_trust::Keyring::load(&f.dir.path().join("keys/trust.json")).unwrap();
    let cfg = fleetgate_gossip::GossipConfig {
        round_interval_ms: 100,
        anti_entropy_interval_ms: Some(1000),
        ..fleetgate_gossip::GossipConfig::default()
    };
    let publisher = rt
        .block_on(fleetgate_gossip::runtime::spawn_udp(
            cfg,
            "127.0.0.1:0".parse().unwrap(),
            [agent_gossip],
            Arc::new(fleetgate_gossip::TrustVerifier::new(keyring)),
            None,
        ))
        .unwrap();
    rt.block_on(publisher.publish(f.manifest(1, &v1))).unwrap();
    wait_until(Duration::from_secs(15), "v1 running via gossip", || {
        f.app_version().is_some_and(|v| v.0 == "v1.0.0")
    });
    rt.block_on(publisher.publish(f.manifest(2, &v2))).unwrap();
    wait_until(Duration::from_secs(15), "v2 running via gossip", || {
        f.app_version().is_some_and(|v| v.0 == "v2.0.0") && status(&f)["floor"] == 2
    });
    assert!(f.state().join(fleetgate_agent::gossip::HELD_FILE).exists());
    // A forged manifest sent by gossip never reaches the app.
    let rogue = fleetgate_trust::SigningKey::from_seed(&[9; 32]);
    let v3 = f.commit("v3.0.0", "healthy");
    let forged = fleetgate_trust::sign_manifest(&f.manifest_struct(3, &v3), &[&rogue]).unwrap();
    assert!(
        rt.block_on(publisher.publish(forged)).is_err(),
        "the publisher refuses it too"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(f.app_version().unwrap().0, "v2.0.0");
    rt.block_on(publisher.shutdown()).unwrap();
    rt.block_on(node.shutdown()).unwrap();
}
