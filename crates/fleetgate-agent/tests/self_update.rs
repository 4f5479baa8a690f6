//! Self-update of the agent (issue 20), with the real `fleetgate-agent` process, a real
//! artifact server (`fleetgate_fleet::http::artifacts`) and the test acting as the
//! service manager (it starts the agent from a fixed path and starts it again when it
//! exits, as systemd `Restart=always` does):
//! - a new build is downloaded, exec'd in place (same process), confirms itself, and a
//!   restart from the fixed path goes to it; the release floor is not touched;
//! - an update whose build cannot be fetched yet is refused for now (503, retryable) and
//!   taken when offered again; a broken build (it exits at once) is undone by the old
//!   binary's next start, and is never tried again; one under which the app is not healthy returns to the old binary
//!   by itself; one that hangs is ended by the watchdog and undone;
//! - a node that did not opt in refuses agent updates.

mod common;

use common::*;
use fleetgate_trust::{Artifact, ManifestKind, sign_manifest};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

struct Node {
    f: Fixture,
    store: PathBuf,
    installed: PathBuf,
    _rt: tokio::runtime::Runtime,
    v1: Release,
}

impl Node {
    fn new(self_update: bool) -> Node {
        Node::with_grace(self_update, 20)
    }

    fn with_grace(self_update: bool, grace: u64) -> Node {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let art_port = free_port();
        let f = Fixture::new(Opts {
            extra: format!(
                "self_update = {self_update}\nself_update_grace_secs = {grace}\nartifacts_url = \"http://127.0.0.1:{art_port}/artifacts\"\n"
            ),
            ..Opts::default()
        });
        let store = f.dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", art_port)))
            .unwrap();
        let app = fleetgate_fleet::http::artifacts(store.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        // The service's fixed path: the agent as installed on the node.
        let installed = f.dir.path().join("bin/fleetgate-agent");
        std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
        std::fs::copy(AGENT_BIN, &installed).unwrap();
        let v1 = f.commit("v1.0.0", "healthy");
        Node {
            f,
            store,
            installed,
            _rt: rt,
            v1,
        }
    }

    /// Starts the agent from the fixed path, as the service manager does.
    fn start(&self, n: u32) -> Child {
        let log = std::fs::File::create(self.f.dir.path().join(format!("agent-{n}.log"))).unwrap();
        let child = std::process::Command::new(&self.installed)
            .arg("--config")
            .arg(&self.f.config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(30), "the agent answering", || {
            http_get(&self.f.agent_url("/status")).is_some()
        });
        child
    }

    /// A signed agent update shipping `build`, served by the artifact server.
    fn update(&self, seq: u64, version: &str, build: &[u8]) -> (Vec<u8>, String) {
        let sha = fleetgate_trust::provenance::sha256_hex(build);
        std::fs::write(self.store.join(&sha), build).unwrap();
        let mut m = self.f.manifest_struct(seq, &self.v1);
        m.kind = ManifestKind::Agent;
        m.version = version.into();
        m.code_hash = sha.clone();
        m.artifacts = vec![Artifact {
            name: "fleetgate-agent".into(),
            sha256: sha.clone(),
            size: build.len() as u64,
        }];
        (sign_manifest(&m, &[&self.f.signer]).unwrap(), sha)
    }

    fn status(&self) -> serde_json::Value {
        status(&self.f)
    }

    /// `GET /status`, or `Null` while the agent is not answering (it is restarting).
    fn try_status(&self) -> serde_json::Value {
        http_get(&self.f.agent_url("/status"))
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t.elapsed() < within,
            "the agent did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn provision(node: &Node) {
    let (code, r) = post_apply_retrying(&node.f, &node.f.manifest(1, &node.v1));
    assert_eq!(code, 200, "{r}");
    wait_until(Duration::from_secs(20), "v1 running", || {
        node.f.app_version().is_some_and(|v| v.0 == "v1.0.0")
    });
}

/// The service manager starts the agent again from its fixed path after the new build
/// died: the update is reverted, the installed binary runs, and so does v1.
fn restarted_and_reverted(node: &Node, n: u32) -> Child {
    let child = node.start(n);
    wait_until(Duration::from_secs(30), "the update reverted", || {
        node.try_status()["agent_update"]["state"] == "reverted"
    });
    assert_eq!(
        exe_of(child.id()),
        std::fs::canonicalize(&node.installed).unwrap()
    );
    wait_until(Duration::from_secs(20), "v1 running again", || {
        node.f.app_version().is_some_and(|v| v.0 == "v1.0.0")
    });
    child
}

/// Posts an agent update that the agent takes (it then restarts onto the build).
fn stage(node: &Node, m: &[u8]) {
    let (code, r) = post_apply(&node.f, m);
    assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(r["kind"], "agent", "{r}");
}

fn stop(node: &Node, mut child: Child) {
    kill(&mut child);
    kill_app(&node.f);
}

fn in_bin_dir(state: &Path, sha: &str) -> PathBuf {
    std::fs::canonicalize(state.join("agent-bin").join(sha)).unwrap()
}

#[test]
fn a_new_agent_build_is_execd_in_place_confirms_itself_and_survives_a_restart() {
    let node = Node::new(true);
    let mut child = node.start(1);
    provision(&node);
    let pid = child.id();

    // A new build: the same program with other bytes (a different digest).
    let mut build = std::fs::read(AGENT_BIN).unwrap();
    build.extend_from_slice(b"\n#fleetgate agent test build 2\n");
    let (m, sha) = node.update(500, "agent-2.0.0", &build);
    stage(&node, &m);

    // The same process (same pid) now runs the new build, and it confirmed itself.
    let new_bin = in_bin_dir(&node.f.state(), &sha);
    wait_until(Duration::from_secs(30), "the update confirmed", || {
        node.try_status()["agent_update"]["state"] == "confirmed"
    });
    assert_eq!(exe_of(pid), new_bin, "exec'd in place");
    assert!(child.try_wait().unwrap().is_none(), "never exited");
    let s = node.status();
    assert_eq!(s["version"], "v1.0.0", "{s}");
    assert_eq!(s["floor"], 1, "the release floor is the releases' own: {s}");
    wait_until(Duration::from_secs(20), "the app running again", || {
        node.f.app_version().is_some_and(|v| v.0 == "v1.0.0")
    });

    // The service manager restarts the agent from its fixed path: it goes to the new build.
    kill(&mut child);
    let child = node.start(2);
    let pid = child.id();
    wait_until(
        Duration::from_secs(30),
        "the restarted agent on the new build",
        || exe_of(pid) == new_bin && http_get(&node.f.agent_url("/status")).is_some(),
    );
    // The same update again is refused: it is not newer than the last one.
    let (code, r) = post_apply(&node.f, &m);
    assert_eq!(
        (code, r["reason"].as_str()),
        (422, Some("self_update")),
        "{r}"
    );
    assert!(r["error"].as_str().unwrap().contains("not newer"), "{r}");
    stop(&node, child);
}

#[test]
fn a_broken_agent_build_is_undone_by_itself_and_never_tried_again() {
    let node = Node::new(true);
    let mut child = node.start(1);
    provision(&node);
    let (_, _, app_pid) = node.f.app_version().unwrap();

    // A build that dies at once.
    let (m, sha) = node.update(
        500,
        "agent-broken",
        b"#!/bin/sh\necho broken build >&2\nexit 3\n",
    );
    // Offered while its build cannot be fetched yet: refused for now (503, retryable,
    // Retry-After), nothing recorded, so the same manifest is taken once it can be.
    let build = node.store.join(&sha);
    let kept = std::fs::read(&build).unwrap();
    std::fs::remove_file(&build).unwrap();
    let (code, head, body) = http_full("POST", &node.f.agent_url("/apply"), &m).unwrap();
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, r["retryable"].as_bool()), (503, Some(true)), "{r}");
    assert!(r["error"].as_str().unwrap().contains("not fetched"), "{r}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    assert!(node.status()["agent_update"].is_null());
    std::fs::write(&build, kept).unwrap();
    stage(&node, &m);
    let st = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(3), "the broken build ran in place and died");

    // The service manager starts the agent again from its fixed path: the update is
    // reverted, the old binary runs, and the app runs v1 again.
    let mut child = restarted_and_reverted(&node, 2);
    let s = node.status();
    assert!(
        s["agent_update"]["detail"]
            .as_str()
            .unwrap()
            .contains("never confirmed"),
        "{s}"
    );
    assert_ne!(
        node.f.app_version().unwrap().2,
        app_pid,
        "the app was restarted"
    );

    // Offered again, the broken build is refused (before anything is fetched or
    // recorded: the record still says reverted).
    let (code, r) = post_apply(&node.f, &m);
    assert_eq!(
        (code, r["reason"].as_str()),
        (422, Some("self_update")),
        "{r}"
    );
    assert_eq!(node.status()["agent_update"]["state"], "reverted");
    assert!(child.try_wait().unwrap().is_none());
    stop(&node, child);
}

#[test]
fn a_new_build_under_which_the_app_is_not_healthy_returns_to_the_old_one_by_itself() {
    let node = Node::with_grace(true, 4);
    let mut child = node.start(1);
    provision(&node);
    let pid = child.id();
    let mut build = std::fs::read(AGENT_BIN).unwrap();
    build.extend_from_slice(b"\n#fleetgate agent test build 3\n");
    let (m, _) = node.update(500, "agent-3.0.0", &build);
    // Under the new build the app's health check cannot pass: the node's config, which
    // the new build reads when it starts, now points the check at a port nothing serves.
    let cfg = std::fs::read_to_string(&node.f.config_path).unwrap();
    let broken = cfg.replace(
        &format!("http = \"http://127.0.0.1:{}/health\"", node.f.app_port),
        &format!("http = \"http://127.0.0.1:{}/health\"", free_port()),
    );
    assert_ne!(cfg, broken);
    std::fs::write(&node.f.config_path, broken).unwrap();
    stage(&node, &m);

    // Within the grace period it gives up and execs the old binary, in the same process.
    wait_until(Duration::from_secs(30), "the update reverted", || {
        node.try_status()["agent_update"]["state"] == "reverted"
    });
    wait_until(Duration::from_secs(10), "the old binary running", || {
        exe_of(pid) == std::fs::canonicalize(&node.installed).unwrap()
    });
    assert!(child.try_wait().unwrap().is_none(), "never exited");
    // The old binary answers again (it is starting right after the exec).
    wait_until(Duration::from_secs(30), "the old binary answering", || {
        !node.try_status().is_null()
    });
    let s = node.status();
    assert!(
        s["agent_update"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("did not get the app healthy within 4 s"),
        "{s}"
    );
    stop(&node, child);
}

#[test]
fn a_new_build_that_hangs_is_ended_by_the_watchdog_and_undone() {
    let node = Node::with_grace(true, 2);
    let mut child = node.start(1);
    provision(&node);
    // A build that never serves, never checks its deadline, never exits.
    let (m, _) = node.update(500, "agent-hangs", b"#!/bin/sh\nexec sleep 600\n");
    stage(&node, &m);
    // The watchdog the old binary left behind ends it after grace + margin.
    let st = wait_exit(&mut child, Duration::from_secs(40));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "killed by the watchdog: {st:?}"
    );
    let child = restarted_and_reverted(&node, 2);
    stop(&node, child);
}

#[test]
fn a_node_that_did_not_opt_in_refuses_agent_updates() {
    let node = Node::new(false);
    let mut child = node.start(1);
    provision(&node);
    let (m, sha) = node.update(500, "agent-2.0.0", b"#!/bin/sh\nexit 0\n");
    let (code, r) = post_apply(&node.f, &m);
    assert_eq!(
        (code, r["reason"].as_str()),
        (422, Some("self_update")),
        "{r}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("self_update is off"),
        "{r}"
    );
    assert!(!node.f.state().join("agent-bin").join(sha).exists());
    assert!(child.try_wait().unwrap().is_none());
    stop(&node, child);
}

/// A damaged update record (a disk that lost the write's data, a hand edit) neither keeps
/// the node down nor gets retried forever: the agent sets it aside and runs, and agent
/// updates are refused (422, not retryable) until an operator removes the file — the last
/// update's sequence is unknown, so a build that was undone could otherwise come back.
#[test]
fn a_damaged_update_record_is_set_aside_and_agent_updates_wait_for_an_operator() {
    let node = Node::new(true);
    let state = node.f.state();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("agent_update.json"), b"{\"sequence\": 7, \"vers").unwrap();
    let mut child = node.start(1);
    provision(&node);
    let aside = state.join("agent_update.json.damaged");
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        b"{\"sequence\": 7, \"vers",
        "kept byte for byte"
    );
    assert!(!state.join("agent_update.json").exists());

    let (m, sha) = node.update(500, "agent-2.0.0", b"#!/bin/sh\nexit 0\n");
    let (code, r) = post_apply(&node.f, &m);
    assert_eq!(
        (code, r["reason"].as_str(), r["retryable"].as_bool()),
        (422, Some("self_update"), None),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("agent_update.json.damaged"),
        "{r}"
    );
    assert!(!state.join("agent-bin").join(&sha).exists());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent kept running"
    );

    // The operator removes it: the update is taken.
    std::fs::remove_file(&aside).unwrap();
    stage(&node, &m);
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    kill_app(&node.f);
}
