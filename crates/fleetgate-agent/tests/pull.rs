//! Pull mode (issue 20) end to end: a node the orchestrator cannot reach polls its feed
//! from a real fleet endpoint (`fleetgate_fleet::http::router` over a SQLite registry),
//! applies releases and a rollback order from it, refuses a forged one, and its signed
//! heartbeats carry the outcome back — the code hash it runs and its floor.

mod common;

use common::*;
use fleetgate_trust::{SigningKey, sign_manifest};
use std::time::Duration;

struct Fleet {
    rt: tokio::runtime::Runtime,
    reg: fleetgate_fleet::Registry,
}

impl Fleet {
    /// A registry with `node-1` enrolled at an address nobody can reach (the node is
    /// behind NAT), served on `port`.
    fn serve(f: &Fixture, port: u16) -> Fleet {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let reg = f.registry_with_node(&rt);
        let app = fleetgate_fleet::http::router(reg.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Fleet { rt, reg }
    }

    fn put(&self, seq: u64, manifest: &[u8]) -> bool {
        let now = i64::try_from(fleetgate_trust::unix_now()).unwrap();
        self.rt
            .block_on(self.reg.put_feed("node-1", seq, manifest, now))
            .unwrap()
    }

    /// (code hash, reported floor) of the node's latest accepted heartbeat.
    fn reported(&self) -> (Option<String>, u64) {
        let hb = self
            .rt
            .block_on(self.reg.latest_heartbeat("node-1", i64::MAX))
            .unwrap();
        let floor = self
            .rt
            .block_on(self.reg.reported_floor("node-1"))
            .unwrap()
            .unwrap_or(0);
        (hb.map(|h| h.code_hash), floor)
    }
}

#[test]
fn a_node_behind_nat_pulls_releases_and_a_rollback_order_from_its_feed_and_refuses_a_forged_one() {
    let port = free_port();
    let f = Fixture::new(Opts {
        orchestrator: Some(format!("http://127.0.0.1:{port}")),
        extra: "mode = \"pull\"\npoll_interval_secs = 1\n".into(),
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let fleet = Fleet::serve(&f, port);
    let node = fleet
        .rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();

    // Nothing addressed to the node yet: it polls (404) and runs nothing.
    wait_until(
        Duration::from_secs(15),
        "a heartbeat with no release",
        || fleet.reported().0.as_deref() == Some(""),
    );
    assert_eq!(f.app_version(), None);

    // The orchestrator addresses v1, then v2: the node pulls and runs each.
    assert!(fleet.put(1, &f.manifest(1, &v1)));
    wait_until(Duration::from_secs(30), "v1 pulled and running", || {
        f.app_version().is_some_and(|v| v.0 == "v1.0.0")
    });
    let m2 = f.manifest(2, &v2);
    assert!(fleet.put(2, &m2));
    wait_until(Duration::from_secs(30), "v2 pulled and running", || {
        f.app_version().is_some_and(|v| v.0 == "v2.0.0")
    });
    wait_until(
        Duration::from_secs(15),
        "heartbeats report v2 and floor 2",
        || fleet.reported() == (Some(v2.code_hash.clone()), 2),
    );

    // The rollback order: pulled, obeyed, and its floor shows in the heartbeats (how the
    // orchestrator knows a node it cannot reach obeyed).
    assert!(fleet.put(3, &f.rollback(3, (2, &v2), &v1)));
    wait_until(Duration::from_secs(30), "rolled back to v1", || {
        f.app_version().is_some_and(|v| v.0 == "v1.0.0")
    });
    wait_until(
        Duration::from_secs(15),
        "heartbeats report v1 and floor 3",
        || fleet.reported() == (Some(v1.code_hash.clone()), 3),
    );

    // The feed only moves forward: the revoked release cannot be put back.
    assert!(!fleet.put(2, &m2));
    let held = fleet
        .rt
        .block_on(fleet.reg.feed("node-1"))
        .unwrap()
        .unwrap();
    assert_eq!(held.sequence, 3);

    // A forged manifest in the feed (signed by a key the node does not trust, at a
    // higher sequence): fetched and refused; the node stays on v1, floor 3.
    let forger = SigningKey::from_seed(&[7u8; 32]);
    let forged = sign_manifest(&f.manifest_struct(4, &v2), &[&forger]).unwrap();
    assert!(fleet.put(4, &forged));
    let (_, _, pid) = f.app_version().unwrap();
    wait_until(
        Duration::from_secs(15),
        "the forged manifest refused",
        || node.agent().status().pull.is_some_and(|p| p.refused >= 1),
    );
    let s = status(&f);
    assert_eq!(s["version"], "v1.0.0", "{s}");
    assert_eq!(s["floor"], 3, "{s}");
    assert_eq!(f.app_version().unwrap().2, pid, "never restarted");
    let outcome = s["pull"]["last_outcome"].as_str().unwrap_or_default();
    assert!(outcome.starts_with("refused"), "{s}");
    assert_eq!(
        s["pull"]["refused"], 1,
        "refused once, not again on every poll: {s}"
    );

    fleet.rt.block_on(node.shutdown()).unwrap();
}

/// The fleet endpoint over `reg` on `port`, as a task that can be stopped (an outage).
fn serve_on(
    rt: &tokio::runtime::Runtime,
    reg: &fleetgate_fleet::Registry,
    port: u16,
) -> tokio::task::JoinHandle<()> {
    let app = fleetgate_fleet::http::router(reg.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .unwrap();
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Waits until the node's heartbeats fail (its fleet endpoint is gone).
fn wait_for_a_failed_heartbeat(f: &Fixture) {
    wait_until(Duration::from_secs(15), "a failed heartbeat", || {
        status(f)["heartbeats"]["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
}

/// Push mode (issue 11, item 4): a node that is down, or cut off, while a rollback order
/// goes out never receives the push; the order waits in its feed. It reads the feed when
/// it starts — before `/apply` serves — and when its heartbeats get through again, so
/// the revoked release's signed manifest (valid for days) is refused when someone posts
/// it to `/apply` afterwards.
#[test]
fn a_push_node_that_missed_a_rollback_order_obeys_it_from_its_feed_before_anyone_can_replay_the_release()
 {
    let port = free_port();
    let f = Fixture::new(Opts {
        orchestrator: Some(format!("http://127.0.0.1:{port}")),
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let v3 = f.commit("v3.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = f.registry_with_node(&rt);
    let mut server = serve_on(&rt, &reg, port);
    let put = |seq: u64, m: &[u8]| {
        let now = i64::try_from(fleetgate_trust::unix_now()).unwrap();
        assert!(rt.block_on(reg.put_feed("node-1", seq, m, now)).unwrap());
    };

    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}");
    assert_eq!(f.floor(), 1);

    // Down while v2 (sequence 2) was canaried elsewhere and revoked (order 3).
    rt.block_on(node.shutdown()).unwrap();
    put(3, &f.rollback(3, (2, &v2), &v1));
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    assert_eq!(f.floor(), 3, "the order was obeyed before /apply served");
    let (code, r) = post_apply(&f, &f.manifest(2, &v2));
    assert_ne!(code, 200, "the revoked release was applied: {r}");
    assert_eq!(f.app_version().unwrap().0, "v1.0.0");

    // Cut off (the fleet endpoint is down) while v3 (sequence 4) was revoked (order 5):
    // once its heartbeats get through again, it reads its feed.
    server.abort();
    let _ = rt.block_on(&mut server);
    wait_for_a_failed_heartbeat(&f);
    put(5, &f.rollback(5, (4, &v3), &v1));
    let _server = serve_on(&rt, &reg, port);
    wait_until(Duration::from_secs(30), "the order obeyed", || {
        f.floor() == 5
    });
    let (code, r) = post_apply(&f, &f.manifest(4, &v3));
    assert_ne!(code, 200, "the revoked release was applied: {r}");
    assert_eq!(f.app_version().unwrap().0, "v1.0.0");
    let s = status(&f);
    assert!(s["pull"]["polls"].as_u64().unwrap() >= 2, "{s}");

    rt.block_on(node.shutdown()).unwrap();
}

/// A push node with gossip that was cut off while a rollback order went out takes the
/// order from its feed when its heartbeats recover — and hands it to its running gossip
/// node, so a gossip peer that missed the order too learns of it from this node (before,
/// only a gossip node started after the catch-up spread it).
#[test]
fn an_order_taken_from_the_feed_after_a_cut_is_gossiped_to_the_nodes_peers() {
    let port = free_port();
    let node_gossip = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let peer_gossip = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let f = Fixture::new(Opts {
        orchestrator: Some(format!("http://127.0.0.1:{port}")),
        extra: format!(
            "gossip_listen = \"{node_gossip}\"\nseeds = [\"{peer_gossip}\"]\ngossip_round_ms = 100\n"
        ),
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = f.registry_with_node(&rt);
    let mut server = serve_on(&rt, &reg, port);
    // The peer: a plain gossip node on a real UDP socket, trusting the same keys.
    let keyring = fleetgate_trust::Keyring::load(&f.dir.path().join("keys/trust.json")).unwrap();
    let peer = rt
        .block_on(fleetgate_gossip::runtime::spawn_udp(
            fleetgate_gossip::GossipConfig {
                round_interval_ms: 100,
                anti_entropy_interval_ms: Some(1000),
                ..fleetgate_gossip::GossipConfig::default()
            },
            peer_gossip,
            vec![node_gossip],
            std::sync::Arc::new(fleetgate_gossip::TrustVerifier::new(keyring)),
            None,
        ))
        .unwrap();
    let deliveries = peer.deliveries();

    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}");

    // Cut off while v2 (sequence 2) was canaried elsewhere and revoked (order 3).
    server.abort();
    let _ = rt.block_on(&mut server);
    wait_for_a_failed_heartbeat(&f);
    let order = f.rollback(3, (2, &v2), &v1);
    let now = i64::try_from(fleetgate_trust::unix_now()).unwrap();
    assert!(rt.block_on(reg.put_feed("node-1", 3, &order, now)).unwrap());
    assert!(deliveries.borrow().is_none(), "nothing was gossiped before");
    let _server = serve_on(&rt, &reg, port);
    wait_until(Duration::from_secs(30), "the order obeyed", || {
        f.floor() == 3
    });
    wait_until(
        Duration::from_secs(30),
        "the order gossiped to the peer",
        || {
            deliveries
                .borrow()
                .as_ref()
                .is_some_and(|d| d.verified.sequence == 3 && *d.manifest == *order)
        },
    );
    // And kept as what this node's gossip holds (served again after a restart).
    assert_eq!(
        std::fs::read(f.dir.path().join("state").join("gossip_held.json")).unwrap(),
        order
    );
    rt.block_on(node.shutdown()).unwrap();
    rt.block_on(peer.shutdown()).unwrap();
}
