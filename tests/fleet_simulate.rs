//! `fleetgate fleet simulate` against a real `fleetgate fleet serve`: virtual nodes are
//! enrolled in the config's registry, heartbeat through the HTTP endpoint (batched
//! ingest), and every heartbeat sent is accepted, counted and stored; misbehaving nodes
//! report themselves unhealthy.

mod common;
use common::{Env, code, text};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A child process killed when dropped (a failing assertion does not leave it running).
struct Serve(std::process::Child);

impl Serve {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `fleetgate fleet serve` on a free port, once it listens: the child and its address.
fn fleet_serve(env: &Env) -> (Serve, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Serve(
        env.command(&["fleet", "serve", "--listen", &listen])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "fleet serve did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (serve, listen)
}

#[test]
fn simulated_nodes_heartbeat_through_the_endpoint_and_every_heartbeat_is_stored() {
    let env = Env::new();
    let (mut serve, listen) = fleet_serve(&env);

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
    serve.stop();
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

    // A URL that does not parse is named before any node is enrolled.
    let out = env.fg(&[
        "fleet",
        "simulate",
        "--nodes",
        "25",
        "--endpoint",
        "http://[not-a-host",
    ]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("--endpoint http://[not-a-host: not a URL"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("newly enrolled"), "{}", text(&out));
    let peers: Value =
        serde_json::from_slice(&env.fg(&["fleet", "list", "--json"]).stdout).unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 20, "nothing enrolled");
}

/// `--pull-every`: the virtual nodes poll their feeds like pull-mode agents, take a
/// manifest that verifies against the trust file and is above their floor, and report its
/// version, code hash and sequence (as floor) in their heartbeats; a tampered manifest is
/// refused and the node keeps what it ran; a node with nothing in its feed stays put.
#[test]
fn simulated_pull_nodes_take_verified_manifests_from_their_feeds_and_refuse_tampered_ones() {
    use fleetgate::trust::{Manifest, SigningKey, sign_manifest};
    let env = Env::new();
    let (mut serve, listen) = fleet_serve(&env);
    let endpoint = format!("http://{listen}");
    let simulate = |extra: &[&str]| {
        let mut args = vec![
            "fleet",
            "simulate",
            "--nodes",
            "4",
            "--endpoint",
            &endpoint,
            "--interval",
            "0.5",
            "--duration",
            "2",
            "--concurrency",
            "2",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = env.fg(&args);
        assert_eq!(code(&out), 0, "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Enroll the four nodes, then address a signed release to sim-00001 and sim-00002
    // and the same release with an edited code hash to sim-00003.
    assert_eq!(simulate(&[])["enrolled_new"], 4);
    let key = SigningKey::load(Some(&env.app.join("keys/release.key"))).unwrap();
    let code_hash = "c".repeat(64);
    let release = Manifest {
        version: "v2.0.0".into(),
        git_sha: "a".repeat(40),
        code_hash: code_hash.clone(),
        built_at: "2026-12-05T12:00:00Z".into(),
        canary_seed: "00ff".into(),
        sequence: 42,
        expires_at: u64::try_from(fleetgate::fleet::unix_now()).unwrap() + 3600,
        ..Manifest::default()
    };
    let signed = sign_manifest(&release, &[&key]).unwrap();
    let mut tampered: Value = serde_json::from_slice(&signed).unwrap();
    tampered["code_hash"] = Value::String("d".repeat(64));
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", env.state_dir().join("fleet.db").display());
        let reg = fleetgate::fleet::Registry::connect(&url).await.unwrap();
        let now = fleetgate::fleet::unix_now();
        let nodes = ["sim-00001".to_owned(), "sim-00002".to_owned()];
        let w = reg.put_feeds(&nodes, 42, &signed, now).await.unwrap();
        assert_eq!(w.changed, 2);
        reg.put_feed("sim-00003", 42, &tampered, now).await.unwrap();
        reg.close().await;
    });

    let s = simulate(&["--pull-every", "1"]);
    assert_eq!(s["refused"], serde_json::json!({}), "{s}");
    assert_eq!(s["feed_errors"], 0, "{s}");
    assert!(
        s["feed_polls"].as_u64().unwrap() >= 4,
        "every node polled: {s}"
    );
    assert_eq!(
        s["feed_fetched"], 3,
        "each fed node fetched its manifest once (then If-None-Match): {s}"
    );
    let applied = &s["applied"][&code_hash];
    assert_eq!(applied["nodes"], 2, "{s}");
    assert_eq!(applied["version"], "v2.0.0", "{s}");
    assert_eq!(s["applied"].as_object().unwrap().len(), 1, "{s}");
    let refused: u64 = s["feed_refused"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(refused, 1, "the tampered manifest: {s}");
    serve.stop();

    // What the nodes reported: the release (and its sequence as floor) where it verified.
    let peers: Value =
        serde_json::from_slice(&env.fg(&["fleet", "list", "--json"]).stdout).unwrap();
    let runs = |id: &str| {
        let p = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap();
        p["code_hash"].as_str().unwrap().to_owned()
    };
    assert_eq!(runs("sim-00001"), code_hash);
    assert_eq!(runs("sim-00002"), code_hash);
    assert_eq!(
        runs("sim-00003"),
        "simulated",
        "refused the tampered manifest"
    );
    assert_eq!(
        runs("sim-00004"),
        "simulated",
        "nothing was addressed to it"
    );
}
