//! Gossip with real node agents: a node that is down while DEPLOY broadcasts catches up
//! on its own when it returns, and forged or tampered manifests injected into gossip are
//! refused by every node.

mod common;
use common::{Fleet, RUN_LIMIT, bin, code, gossip_head, text};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn agent_pid(fleet: &Fleet, node: &str) -> Option<i32> {
    let needle = format!("nodes/{node}/node.toml");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).into_owned();
        (cmd.contains(&needle) && cmd.contains(fleet.dir.path().to_str()?)).then_some(pid)
    })
}

fn node_conf(fleet: &Fleet, node: &str) -> PathBuf {
    fleet.dir.path().join("nodes").join(node).join("node.toml")
}

fn conf_value(fleet: &Fleet, node: &str, key: &str) -> String {
    let text = std::fs::read_to_string(node_conf(fleet, node)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("{key} not in node.toml"))
}

fn agent_status(fleet: &Fleet, node: &str) -> Option<Value> {
    let addr = conf_value(fleet, node, "listen");
    let out = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "3", &format!("http://{addr}/status")])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn a_node_down_during_the_broadcast_catches_up_and_forged_gossip_is_refused_everywhere() {
    let fleet = Fleet::prepare(5);
    let nodes: Vec<String> = (1..=5).map(|i| format!("node-{i:02}")).collect();
    // v2.0.0 must pass its canary on the judge's verdict: each canary node is judged
    // against its own history, which a fleet started seconds ago does not have yet.
    fleet.wait_for_history(30);

    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let run = fleet.background(&["run"]);
    // Once the canary window is open, take a non-canary node down (SIGKILL of its agent).
    let s = fleet.wait_until("the canary window", |s| {
        s["canary"].get("window_start").is_some()
    });
    let canary: Vec<String> =
        serde_json::from_value(s["canary"]["selection"]["nodes"].clone()).unwrap();
    let victim = nodes.iter().find(|n| !canary.contains(n)).unwrap().clone();
    let pid = agent_pid(&fleet, &victim).expect("victim agent running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = run.wait_within(RUN_LIMIT);
    assert_eq!(
        code(&out),
        0,
        "v2.0.0 completes without the victim: {}\n{}",
        fleet.status()["failure_detail"],
        text(&out)
    );
    let done = fleet.status();
    assert_eq!(done["stage"], "completed");
    let v2 = done["code_hash"].as_str().unwrap().to_owned();
    assert!(
        done["gate_results"]["deploying"]["figures"]["behind"]
            .as_array()
            .unwrap()
            .is_empty()
            || done["gate_results"]["deploying"]["figures"]["reachable"].as_u64() == Some(4)
    );

    // The victim comes back: no new push happens; it catches up on its own (from its
    // feed as it starts, or by gossip anti-entropy) and its gossip then holds the release
    // like every other node's (checked below).
    let log = std::fs::File::create(
        fleet
            .dir
            .path()
            .join("nodes")
            .join(&victim)
            .join("agent-restart.log"),
    )
    .unwrap();
    let mut restarted = std::process::Command::new(bin())
        .args(["node", "run", "--config"])
        .arg(node_conf(&fleet, &victim))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let h =
            agent_status(&fleet, &victim).and_then(|s| s["code_hash"].as_str().map(str::to_owned));
        if h.as_deref() == Some(v2.as_str()) {
            break;
        }
        // Catching up is a gossip pull, a clone and install, and the health grace
        // (15 s) before the agent commits: on a loaded 2-core machine that took over 60 s.
        assert!(
            t.elapsed() < Duration::from_secs(150),
            "{victim} did not catch up: {h:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Forged (unknown key, higher sequence) and tampered (genuine signature, edited code
    // hash) manifests pushed straight into every node's gossip port.
    let genuine: Value = serde_json::from_slice(
        &std::fs::read(fleet.dir.path().join("state/release_manifest.json")).unwrap(),
    )
    .unwrap();
    let mut tampered = genuine.clone();
    tampered["code_hash"] = Value::String("f".repeat(64));
    tampered["sequence"] = Value::from(genuine["sequence"].as_u64().unwrap() + 1000);
    let rogue = fleetgate::trust::SigningKey::generate().unwrap();
    let mut forged_m: fleetgate::trust::Manifest = serde_json::from_value(genuine.clone()).unwrap();
    forged_m.sequence += 2000;
    forged_m.code_hash = "e".repeat(64);
    forged_m.master_public_key = rogue.public_key_hex();
    forged_m.key_ids = vec![rogue.key_id()];
    let forged = fleetgate::trust::sign_manifest(&forged_m, &[&rogue]).unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for manifest in [forged, serde_json::to_vec(&tampered).unwrap()] {
        let mut msg = b"FGG\x01\x01".to_vec();
        msg.extend_from_slice(&u32::try_from(manifest.len()).unwrap().to_be_bytes());
        msg.extend_from_slice(&manifest);
        for n in &nodes {
            sock.send_to(&msg, conf_value(&fleet, n, "gossip_listen"))
                .unwrap();
        }
    }
    // Each node's gossip answers, after the injected datagrams, with the genuine manifest:
    // it handled them (datagrams from one sender are handled in order) and kept the
    // genuine one.
    for n in &nodes {
        let held = gossip_head(&sock, &conf_value(&fleet, n, "gossip_listen"));
        assert_eq!(
            (&held["sequence"], &held["code_hash"]),
            (&genuine["sequence"], &genuine["code_hash"]),
            "{n}'s gossip holds another manifest after the injection: {held}"
        );
    }
    for n in &nodes {
        let s = agent_status(&fleet, n).unwrap_or_else(|| panic!("{n} is not answering"));
        assert_eq!(
            s["code_hash"].as_str(),
            Some(v2.as_str()),
            "{n} changed: {s}"
        );
        assert_eq!(
            s["floor"], genuine["sequence"],
            "{n}: the floor did not move"
        );
    }
    // The fleet is on v2 by its heartbeats too (the victim's first heartbeat since it
    // caught up may still be on its way).
    let t = Instant::now();
    loop {
        let out = fleet.fg(&["fleet", "list", "--json"]);
        let peers: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        let behind: Vec<String> = peers
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["code_hash"].as_str() != Some(v2.as_str()))
            .map(|p| format!("{}: {} (seq {})", p["id"], p["code_hash"], p["last_seq"]))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the registry still shows these nodes off v2 after {:?}: {behind:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = nix::unistd::Pid::from_raw(restarted.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = restarted.wait();
}
