//! Operator control through the binary on a real demo fleet: a paused run evaluates and
//! sends nothing (`advance` and `run` report the pause) until it is resumed; a canary
//! configured with an hour-long window is promoted early by the operator and the run
//! completes, recorded as passed by the operator (who and why), never as a judged pass;
//! paused with that window open, the window's clock stops (no check runs, the deadline
//! moves by the time paused); DEPLOY then holds for a signed approval (`[approval]
//! before = ["deploy"]`), sending nothing until it is given.

mod common;
use common::{Fleet, code, history, text};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn a_paused_run_waits_for_resume_and_a_long_canary_is_promoted_early() {
    let fleet = Fleet::prepare(4);
    let cfg = fleet.config();
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(toml.contains("window_secs = 15"));
    // DEPLOY also waits for a signed approval.
    let key = fleet.dir.path().join("approver.key");
    let out = fleet.fg(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let approver = std::fs::read_to_string(fleet.dir.path().join("approver.key.pub")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{}\n[approval]\nbefore = [\"deploy\"]\nrequired = 1\nkeys = [{:?}]\n",
            toml.replacen("window_secs = 15", "window_secs = 3600", 1)
                .replacen("max_window_secs = 120", "max_window_secs = 3600", 1),
            approver.trim()
        ),
    )
    .unwrap();

    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let out = fleet.fg(&["pause", "--reason", "change freeze until the review"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let paused = fleet.status();
    assert_eq!(paused["stage"], "building");
    assert_eq!(paused["paused"]["reason"], "change freeze until the review");
    assert!(
        paused["paused"]["by"]
            .as_str()
            .unwrap()
            .contains("operator"),
        "{paused}"
    );
    // Pausing twice is refused and says by whom.
    let again = fleet.fg(&["pause"]);
    assert_ne!(code(&again), 0);
    assert!(text(&again).contains("already paused"), "{}", text(&again));
    // Promote is refused while paused (and outside a canary window anyway).
    assert_ne!(code(&fleet.fg(&["promote"])), 0);

    // `advance` reports the pause and evaluates nothing.
    let out = fleet.fg(&["advance", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], false);
    assert!(
        report["verdict"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("paused by"),
        "{report}"
    );
    assert_eq!(fleet.status(), paused, "advance changed nothing");
    // Human status says so.
    let human = text(&fleet.fg(&["status"]));
    assert!(human.contains("PAUSED:"), "{human}");

    // `run` sees the pause and waits: once it has said so, still nothing was evaluated.
    let mut run = Command::new(common::bin())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = run.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let t = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("run never reported the pause: {lines:?}"));
        let seen = line.contains("PAUSED by");
        lines.push(line);
        if seen {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{lines:?}");
    }
    let s = fleet.status();
    assert_eq!(s, paused, "a paused run evaluated nothing: {lines:?}");
    assert!(s["gate_results"].as_object().unwrap().is_empty());

    let out = fleet.fg(&["resume", "--reason", "review done"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.wait_until("the canary window to open", |s| {
        s["canary"].get("window_start").is_some()
            || matches!(
                s["stage"].as_str(),
                Some("completed" | "rolled_back" | "failed")
            )
    });
    assert_eq!(s["stage"], "canary", "{s}");
    assert!(s["paused"].is_null());
    let hist = s["stage_history"].as_array().unwrap();
    let resumed = format!(
        "resumed by {}: review done",
        paused["paused"]["by"].as_str().unwrap()
    );
    assert!(hist.iter().any(|h| h["reason"] == resumed.as_str()), "{s}");

    // Paused with the window open, the window's clock stops: no check runs while paused,
    // and on resume the deadline moves by the time spent paused.
    let open = fleet.wait_until("a first check of the window", |s| {
        s["gate_results"]["canary"]["checks"].as_u64().unwrap_or(0) >= 1
    });
    let deadline = open["canary"]["deadline"].as_i64().unwrap();
    let out = fleet.fg(&["pause", "--reason", "looking at a dashboard"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let held = fleet.status();
    assert_eq!(held["stage"], "canary", "{held}");
    let checks = held["gate_results"]["canary"]["checks"].clone();
    let paused_at = Instant::now();
    // What is under test is that time passes and nothing happens: watch it pass.
    while paused_at.elapsed() < Duration::from_secs(4) {
        let s = fleet.status();
        assert_eq!(
            s["gate_results"]["canary"]["checks"], checks,
            "a check ran while paused: {s}"
        );
        assert_eq!(s["canary"]["deadline"].as_i64(), Some(deadline), "{s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = fleet.fg(&["resume", "--reason", "dashboard fine"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    let paused_secs = s["canary"]["paused_secs"].as_i64().unwrap_or(0);
    assert!(paused_secs >= 4, "the window's clock stopped: {s}");
    assert_eq!(
        s["canary"]["deadline"].as_i64(),
        Some(deadline + paused_secs),
        "the deadline moved by the pause: {s}"
    );
    assert_eq!(s["canary"]["window_start"], open["canary"]["window_start"]);

    // The window is an hour long; the operator ends it now.
    let out = fleet.fg(&[
        "promote",
        "--reason",
        "dashboards clean; need it before the sale",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // DEPLOY holds for its approval: nothing is listed or sent, only the canary node
    // runs the release.
    let held = fleet.wait_until("DEPLOY waiting for its approval", |s| {
        s["stage"] == "deploying"
            && s["gate_results"]["deploying"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("waiting for approvals: 0 of 1 before DEPLOY"))
    });
    assert!(
        held["deploy"].is_null() || held["deploy"]["listed"] != true,
        "{held}"
    );
    let before = fleet.code_hashes();
    let release = held["code_hash"].as_str().unwrap().to_owned();
    assert_eq!(
        before.iter().filter(|(_, h)| *h == release).count(),
        1,
        "only the canary node runs it: {before:?}"
    );
    let out = fleet.fg(&[
        "approve",
        "--key-file",
        key.to_str().unwrap(),
        "--reason",
        "change board ok",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = Instant::now();
    let status = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "run did not finish after the promotion and the approval: {}",
            fleet.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{rest:?}");
    let s = fleet.status();
    assert_eq!(s["stage"], "completed", "{s}");
    let canary = &s["gate_results"]["canary"];
    assert_eq!(canary["outcome"], "passed");
    assert_eq!(
        canary["promoted"]["reason"],
        "dashboards clean; need it before the sale"
    );
    let detail = canary["detail"].as_str().unwrap();
    assert!(detail.starts_with("promoted by"), "{detail}");
    assert!(detail.contains("NOT judged a pass"), "{detail}");
    let h = history(&s);
    let at = h.iter().position(|x| x == "deploying").unwrap();
    assert_eq!(h[at - 1], "canary");
    assert!(
        s["stage_history"][at]["reason"]
            .as_str()
            .unwrap()
            .starts_with("promoted by"),
        "{s}"
    );
    let human = text(&fleet.fg(&["status"]));
    assert!(human.contains("PROMOTED"), "{human}");
    // Every node runs the release.
    let hashes = fleet.code_hashes();
    let want = s["code_hash"].as_str().unwrap();
    assert!(hashes.iter().all(|(_, h)| h == want), "{hashes:?}");
}
