//! The CANARY stage against real node agents: a release whose app fails its health check
//! on the canary node, and a canary node that goes silent, each end the run
//! `rolled_back` without touching the rest of the fleet. (A raised exception rate is the
//! demo's v3.0.0, in tests/demo.rs.)

mod common;
use common::{Fleet, code, git, text};

fn agent_pid(fleet: &Fleet, node: &str) -> Option<i32> {
    let needle = format!("nodes/{node}/node.toml");
    let dir = fleet.dir.path().to_str()?.to_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)
            .into_owned();
        (cmd.contains(&needle) && cmd.contains(&dir)).then_some(pid)
    })
}

#[test]
fn an_unhealthy_release_and_a_silent_canary_node_each_roll_back() {
    let fleet = Fleet::prepare(4);
    let app = fleet.dir.path().join("sample-app");
    let before = fleet.code_hashes();

    // v2.2.0 starts but its health check fails: the canary node's agent reverts it and
    // reports the failure; the run rolls back at once, no other node is touched.
    let conf = std::fs::read_to_string(app.join("app.conf")).unwrap();
    std::fs::write(app.join("app.conf"), format!("{conf}healthy=false\n")).unwrap();
    git(&app, &["commit", "-qam", "v2.2.0 (unhealthy)"]);
    git(&app, &["tag", "v2.2.0"]);
    assert_eq!(code(&fleet.fg(&["start", "v2.2.0"])), 0);
    let out = fleet.run();
    assert_eq!(code(&out), 4, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "rolled_back");
    let detail = s["failure_detail"].as_str().unwrap();
    assert!(
        detail.contains("CANARY gate failed") && detail.contains("failed on 1 canary node"),
        "{detail}"
    );
    assert_eq!(fleet.code_hashes(), before, "every node still runs v1.0.0");

    // v2.0.0 with its canary node going silent mid-window (agent killed): the missing
    // heartbeat is a hard failure.
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let mut run = fleet.spawn(&["run"]);
    let s = fleet.wait_until("the canary window", |s| {
        s["canary"].get("window_start").is_some()
    });
    let canary = s["canary"]["selection"]["nodes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = agent_pid(&fleet, &canary).expect("canary agent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(4));
    let s = fleet.status();
    assert_eq!(s["stage"], "rolled_back");
    let verdict = &s["gate_results"]["canary"]["figures"];
    assert_eq!(verdict["failure"], "hard", "{verdict}");
    let hb = verdict["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == "heartbeat")
        .unwrap();
    assert_eq!(hb["decision"], "fail", "{hb}");
    // The window did not run to its end: the hard failure came at the next sample after
    // the timeout.
    let window_end = s["canary"]["deadline"].as_f64().unwrap();
    let ended = s["stage_history"].as_array().unwrap().last().unwrap()["at"]
        .as_f64()
        .unwrap();
    assert!(
        ended < window_end,
        "rolled back at {ended}, before the window end {window_end}"
    );
}
