//! `fleetgate fleet simulate` against a real `fleetgate fleet serve`: virtual nodes are
//! enrolled in the config's registry, heartbeat through the HTTP endpoint (batched
//! ingest), and every heartbeat sent is accepted, counted and stored; misbehaving nodes
//! report themselves unhealthy.

mod common;
use common::{Env, code, text};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn simulated_nodes_heartbeat_through_the_endpoint_and_every_heartbeat_is_stored() {
    let env = Env::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = env
        .command(&["fleet", "serve", "--listen", &listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "fleet serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let endpoint = format!("http://{listen}");
    let out = env.fg(&[
        "fleet",
        "simulate",
        "--nodes",
        "20",
        "--endpoint",
        &endpoint,
        "--interval",
        "0.5",
        "--duration",
        "2",
        "--concurrency",
        "4",
        "--bad-pct",
        "10",
        "--json",
    ]);
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["enrolled_new"], 20, "{s}");
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent >= 20, "every node heartbeated at least once: {s}");
    assert_eq!(s["accepted"].as_u64().unwrap(), sent, "{s}");
    assert_eq!(s["refused"], serde_json::json!({}), "{s}");

    // The registry holds every accepted heartbeat: each node's last seq counts its own.
    let peers: Value =
        serde_json::from_slice(&env.fg(&["fleet", "list", "--json"]).stdout).unwrap();
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), 20);
    let unhealthy: Vec<&str> = peers
        .iter()
        .filter(|p| p["healthy"] == false)
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(unhealthy, ["sim-00001", "sim-00011"], "10% misbehave");
    let mut stored = 0;
    for p in peers {
        let id = p["id"].as_str().unwrap();
        let show: Value =
            serde_json::from_slice(&env.fg(&["fleet", "show", id, "--json"]).stdout).unwrap();
        assert!(p["last_seq"].as_i64().unwrap() > 0, "{p}");
        assert_eq!(show["peer"]["id"], id, "{show}");
        stored += 1;
    }
    assert_eq!(stored, 20);

    // A second run reuses the enrollment and its sequence numbers are above the first's.
    let out = env.fg(&[
        "fleet",
        "simulate",
        "--nodes",
        "20",
        "--endpoint",
        &endpoint,
        "--duration",
        "1",
        "--json",
    ]);
    // (the endpoint is down now: every request is a transport error, exit 1)
    assert_eq!(code(&out), 1, "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["enrolled_new"], 0, "{s}");
}
