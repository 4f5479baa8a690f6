//! Pull mode through the whole pipeline on a real fleet (issue 20): two of three nodes
//! are "behind NAT" (`demo --pull-nodes 2`: enrolled at an address nothing answers on,
//! outside gossip, polling their feed on `fleet serve`). A release of built files reaches
//! every node through CANARY and DEPLOY, installed from its artifacts; a rollback by hand during the next canary reaches every
//! node too, and its delivery completes because the pull nodes' heartbeats report the
//! order's floor — no push answer ever comes from them. DEPLOY pushes (no gossip seeds):
//! its finished record says every target's delivery is done, the pull nodes' too.

mod common;
use common::{Fleet, code, text};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn releases_and_rollback_orders_reach_nodes_the_orchestrator_cannot_reach() {
    let fleet = Fleet::prepare_with(3, &["--pull-nodes", "2"]);
    let unreachable: Vec<String> = fleet
        .peer_field("address")
        .into_iter()
        .filter(|(_, a)| a == "http://127.0.0.1:1")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(unreachable, vec!["node-02", "node-03"]);
    // Releases ship built files (`[stages.build] artifacts`): the pull nodes download them
    // from `fleet serve` too, no checkout.
    let path = fleet.config();
    let conf = std::fs::read_to_string(&path).unwrap();
    let edited = conf.replacen(
        "command = \"sh build.sh\"\n",
        "command = \"sh build.sh\"\nartifacts = [\"app.conf\", \"build/*.env\"]\n",
        1,
    );
    assert_ne!(conf, edited, "the demo config has a build command");
    // DEPLOY in push mode (no gossip seeds): the pushes to the pull nodes fail, and they
    // take the release from their feeds — the finished record must still say done.
    let edited: String = edited
        .lines()
        .map(|l| {
            if l.starts_with("gossip_seeds") {
                "gossip_seeds = []\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(edited.contains("\ngossip_seeds = []\n"), "{edited}");
    std::fs::write(&path, edited).unwrap();
    fleet.wait_for_history(30);

    // v2.0.0 through CANARY and DEPLOY: every node runs it, the pull nodes from their feed.
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let out = fleet.fg_within(&["run"], Duration::from_secs(300));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "completed", "{s}");
    // The record of the finished DEPLOY says what its verdict saw: every target's delivery
    // done, the pull nodes' included (no push answer ever came from them).
    assert_eq!(s["deploy"]["mode"], "push", "{s}");
    let deliveries = s["deploy"]["deliveries"].as_array().unwrap();
    assert!(!deliveries.is_empty(), "{s}");
    for d in deliveries {
        assert_eq!(d["status"], "done", "{d}");
    }
    let v2 = s["code_hash"].as_str().unwrap().to_owned();
    fleet.wait_all_on(&v2, "v2.0.0 on pushed and pull nodes");
    for n in ["node-01", "node-02", "node-03"] {
        let current = fleet.dir.path().join("nodes").join(n).join("state/current");
        let slot = std::fs::canonicalize(&current).unwrap();
        assert!(
            slot.join(".fleetgate-files.json").is_file() && !slot.join(".git").exists(),
            "{n}: v2.0.0 installed from its artifacts, not checked out"
        );
    }

    // v2.5.0 canaries; the operator rolls it back by hand.
    fleet.tag_release("v2.5.0");
    assert_eq!(code(&fleet.fg(&["start", "v2.5.0"])), 0);
    let canary = fleet.stop_in_canary_window();
    assert!(
        fleet
            .code_hashes()
            .iter()
            .any(|(id, h)| *id == canary && *h != v2),
        "the canary node {canary} runs v2.5.0: {:?}",
        fleet.code_hashes()
    );
    let out = fleet.fg(&["rollback", "--reason", "operator"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Each `advance` delivers what it can; the order is delivered once every node that
    // may run v2.5.0 obeyed it — for a pull node, once its heartbeat shows the floor.
    let t = Instant::now();
    let mut last = String::new();
    while !fleet.status()["outbox"]
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the rollback order was not delivered: {last}"
        );
        last = text(&fleet.fg(&["advance"]));
        std::thread::sleep(Duration::from_millis(500));
    }
    fleet.wait_all_on(&v2, "every node back on v2.0.0");
    // Every node's floor is past the order, the pull nodes' included (status of each
    // agent on its local port, as an operator on the node would see it).
    for n in ["node-01", "node-02", "node-03"] {
        let toml =
            std::fs::read_to_string(fleet.dir.path().join("nodes").join(n).join("node.toml"))
                .unwrap();
        let listen = toml
            .lines()
            .find_map(|l| l.strip_prefix("listen = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let body = http_get(&listen, "/status");
        let st: Value = serde_json::from_str(&body).unwrap();
        // Pull nodes took releases from their feeds; the push node only read its (empty)
        // feed once as it started, to catch up.
        let fetched = st["pull"]["fetched"].as_u64().unwrap_or(0);
        assert_eq!(fetched > 0, n != "node-01", "{n}: {st}");
        assert!(
            st["floor"].as_u64().unwrap_or(0) > 0 && st["code_hash"] == v2.as_str(),
            "{n}: {st}"
        );
    }
}

/// `GET http://{addr}{path}` over a plain socket: the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
