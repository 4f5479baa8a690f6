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
    // A datagram that is not gossip is dropped and counted by reason on `/metrics`, with
    // the deliveries and the messages by kind.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"not a gossip message", agent_gossip).unwrap();
    let value = |text: &str, sample: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(-1.0)
    };
    let mut text = String::new();
    wait_until(
        Duration::from_secs(15),
        "gossip counters on /metrics",
        || {
            text = http_get(&f.agent_url("/metrics"))
                .map(|r| r.1)
                .unwrap_or_default();
            value(
                &text,
                "fleetgate_agent_gossip_dropped_total{reason=\"malformed\"}",
            ) >= 1.0
        },
    );
    assert!(
        value(&text, "fleetgate_agent_gossip_delivered_total") >= 2.0,
        "v1 and v2 were delivered: {text}"
    );
    assert!(
        value(
            &text,
            "fleetgate_agent_gossip_messages_total{direction=\"received\",kind=\"any\"}"
        ) >= 3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "fleetgate_agent_gossip_dropped_total{reason=\"oversized\"}"
        ),
        0.0,
        "{text}"
    );
    rt.block_on(publisher.shutdown()).unwrap();
    rt.block_on(node.shutdown()).unwrap();
}

#[test]
fn a_rollback_order_revokes_a_release_this_node_never_ran_over_http_and_gossip() {
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
    let m1 = f.manifest(1, &v1);
    let (code, r) = post_apply(&f, &m1);
    assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    let (_, slot1, pid1) = f.app_version().expect("v1 runs");
    let exits = status(&f)["app_exits"].clone();

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
            [node.gossip_addr().expect("gossip runs")],
            Arc::new(fleetgate_gossip::TrustVerifier::new(keyring)),
            None,
        ))
        .unwrap();
    let held = || std::fs::read(f.state().join(fleetgate_agent::gossip::HELD_FILE)).ok();

    // 1. The manifest it committed over HTTP arrives again by gossip: a harmless no-op.
    rt.block_on(publisher.publish(m1.clone())).unwrap();
    wait_until(Duration::from_secs(15), "m1 delivered by gossip", || {
        held().as_deref() == Some(&m1[..])
    });

    // 2. A rollback order for release seq 2, which this node never ran: floor only.
    let order = f.rollback(3, (2, &v2), &v1);
    let (code, r) = post_apply_retrying(&f, &order);
    assert_eq!((code, r["outcome"].as_str()), (200, Some("noop")), "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("does not run the revoked release v2.0.0 (sequence 2)"),
        "{r}"
    );
    assert_eq!(f.floor(), 3);
    assert_eq!(r["running"]["version"], "v1.0.0", "{r}");
    // The same order again: already applied.
    let (code, r) = post_apply_retrying(&f, &order);
    assert_eq!(
        (code, r["outcome"].as_str()),
        (200, Some("already_applied")),
        "{r}"
    );

    // 3. The revoked release over HTTP: replayed, with the floor and what runs.
    let m2 = f.manifest(2, &v2);
    let (code, r) = post_apply_retrying(&f, &m2);
    assert_eq!((code, r["reason"].as_str()), (409, Some("replayed")), "{r}");
    assert_eq!(r["floor"], 3, "{r}");
    assert_eq!(r["running"]["version"], "v1.0.0", "{r}");

    // 4. The revoked release by gossip: delivered to the agent, refused.
    rt.block_on(publisher.publish(m2.clone())).unwrap();
    wait_until(Duration::from_secs(15), "m2 delivered by gossip", || {
        held().as_deref() == Some(&m2[..])
    });
    // A later manifest by gossip (v1 under seq 4: a no-op) is applied only after the
    // delivery of m2 was handled, so once the floor is 4, m2 was refused.
    rt.block_on(publisher.publish(f.manifest(4, &v1))).unwrap();
    wait_until(Duration::from_secs(15), "seq 4 applied by gossip", || {
        status(&f)["floor"] == 4
    });
    let s = status(&f);
    assert_eq!(s["version"], "v1.0.0", "{s}");
    assert_eq!(s["last_report"]["sequence"], 4, "{s}");
    assert_eq!(
        f.app_version(),
        Some(("v1.0.0".to_owned(), slot1, pid1)),
        "never restarted"
    );
    assert_eq!(s["app_exits"], exits, "{s}");
    rt.block_on(publisher.shutdown()).unwrap();
    rt.block_on(node.shutdown()).unwrap();
}

/// Issue 13: one validly signed heartbeat with an inflated `seq` (or a clock jump on a
/// node deriving `seq` from its clock) used to lock the node out: the registry refused
/// every later heartbeat as a replay until the node's counter caught up. The agent now
/// re-syncs through a signed epoch bump, without anyone editing the database, and a
/// replay of what was accepted is still refused.
#[test]
fn a_node_locked_out_by_an_inflated_seq_recovers_and_replays_stay_refused() {
    let orch_port = free_port();
    let f = Fixture::new(Opts {
        orchestrator: Some(format!("http://127.0.0.1:{orch_port}")),
        ..Opts::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = f.registry_with_node(&rt);
    let now = fleetgate_trust::unix_now();
    // The poisoned heartbeat: signed by the node's own key, seq far in the future.
    let inflated = fleetgate_fleet::Heartbeat {
        bench: Default::default(),
        code_hash: String::new(),
        exceptions_total: 0,
        floor: 0,
        healthy: true,
        node_id: "node-1".into(),
        requests_total: 0,
        sent_at: now,
        seq: 4_000_000_000_000,
        version: String::new(),
        ..serde_json::from_value(serde_json::json!({
            "code_hash": "", "exceptions_total": 0, "healthy": true, "node_id": "node-1",
            "requests_total": 0, "sent_at": 0, "seq": 1, "version": ""
        }))
        .unwrap()
    };
    let poisoned = fleetgate_fleet::SignedHeartbeat::sign(&inflated, &f.identity).to_json();
    let policy = fleetgate_fleet::HeartbeatPolicy::default();
    rt.block_on(reg.record_heartbeat(&poisoned, &policy, i64::try_from(now).unwrap()))
        .expect("the inflated heartbeat is validly signed: accepted");

    let app = fleetgate_fleet::http::router(reg.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", orch_port)))
        .unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let stored = || {
        rt.block_on(reg.heartbeats_between(&["node-1".into()], 0, i64::MAX))
            .unwrap()
    };
    wait_until(
        Duration::from_secs(20),
        "a heartbeat of the agent accepted after the inflated one",
        || stored().len() >= 2,
    );
    let s = status(&f);
    assert_eq!(s["heartbeats"]["consecutive_failures"], 0, "{s}");
    // The agent's start bumped the epoch past the poisoned one.
    let latest = stored().last().cloned().unwrap();
    assert!(latest.epoch >= 1, "{latest:?}");
    // Poisoned again, now within the agent's own epoch: its next heartbeat is refused
    // as a replay, it re-syncs to a higher epoch from the 409, and is accepted again.
    let again = fleetgate_fleet::Heartbeat {
        epoch: u64::try_from(latest.epoch).unwrap(),
        sent_at: fleetgate_trust::unix_now(),
        ..inflated.clone()
    };
    let poisoned_again = fleetgate_fleet::SignedHeartbeat::sign(&again, &f.identity).to_json();
    rt.block_on(reg.record_heartbeat(
        &poisoned_again,
        &policy,
        i64::try_from(fleetgate_trust::unix_now()).unwrap(),
    ))
    .expect("accepted: above the agent's own (epoch, seq)");
    wait_until(
        Duration::from_secs(20),
        "the agent re-synced to a higher epoch and was accepted",
        || stored().last().is_some_and(|h| h.epoch > latest.epoch),
    );
    let s = status(&f);
    assert!(s["heartbeats"]["resyncs"].as_u64().unwrap_or(0) >= 1, "{s}");
    // Replay protection kept: the accepted inflated heartbeat, sent again, is refused.
    let err = rt
        .block_on(reg.record_heartbeat(&poisoned, &policy, i64::try_from(now).unwrap()))
        .expect_err("a replay is refused");
    assert!(
        matches!(err, fleetgate_fleet::HeartbeatError::Replayed { .. }),
        "{err}"
    );
    rt.block_on(node.shutdown()).unwrap();
}
