//! `fleetgate fleet provision`: the first release onto a fleet whose nodes run nothing,
//! through the signed, health-gated apply, judged on absolute criteria and recorded as the
//! completed release — so the first run has a baseline and its rollback a target.

mod common;
use common::{Fleet, code, git, text};
use serde_json::Value;

fn provision(fleet: &Fleet, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["fleet", "provision", "--observe-secs", "3", "--json"];
    all.extend_from_slice(args);
    let out = fleet.fg(&all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code(&out), report, text(&out))
}

#[test]
fn a_first_release_on_empty_nodes_is_recorded_and_a_bad_first_run_returns_to_it() {
    let fleet = Fleet::prepare_with(3, &["--empty-nodes"]);
    let app = fleet.dir.path().join("sample-app");
    assert!(
        fleet.code_hashes().iter().all(|(_, h)| h.is_empty()),
        "{:?}",
        fleet.code_hashes()
    );
    assert!(fleet.status()["last_completed"].is_null());

    // Bad input is named, and nothing is sent or recorded.
    // Under --json the error carries its kind: a typed RuntimeError variant mapped
    // (FleetFailure::UnknownNode is the caller's input; GitError::NoTag a failure).
    let (rc, err, out) = provision(&fleet, &["v1.0.0", "--node", "no-such-node"]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("--node no-such-node: no such peer"), "{out}");
    assert_eq!(err["error_kind"], "invalid_arguments", "{out}");
    let (rc, err, out) = provision(&fleet, &["v9.9.9"]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("no tag named v9.9.9"), "{out}");
    assert_eq!(err["error_kind"], "failed", "{out}");
    assert!(fleet.code_hashes().iter().all(|(_, h)| h.is_empty()));
    assert!(fleet.status()["last_completed"].is_null());

    // A release whose health check fails is installed nowhere and recorded nowhere.
    let conf = std::fs::read_to_string(app.join("app.conf")).unwrap();
    std::fs::write(app.join("app.conf"), format!("{conf}healthy=false\n")).unwrap();
    git(&app, &["commit", "-qam", "v0.9.0 (unhealthy)"]);
    git(&app, &["tag", "v0.9.0"]);
    let (rc, report, out) = provision(&fleet, &["v0.9.0", "--timeout-secs", "20"]);
    assert_eq!(rc, 4, "{out}");
    assert_eq!(report["passed"], false, "{out}");
    assert!(
        report["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was recorded"),
        "{report}"
    );
    assert!(fleet.status()["last_completed"].is_null());
    assert!(
        fleet.code_hashes().iter().all(|(_, h)| h.is_empty()),
        "the failed release was reverted on every node: {:?}",
        fleet.code_hashes()
    );

    // v1.0.0: sent to every empty node, each runs it healthy, recorded.
    let (rc, report, out) = provision(&fleet, &["v1.0.0"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(report["passed"], true, "{out}");
    let v1 = report["code_hash"].as_str().unwrap().to_owned();
    let nodes = report["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 3, "{report}");
    for (id, n) in nodes {
        assert_eq!(n["answer"], "applied", "{id}: {n}");
        assert_eq!(n["ok"], true, "{id}: {n}");
    }
    assert!(fleet.code_hashes().iter().all(|(_, h)| *h == v1));
    let s = fleet.status();
    assert_eq!(s["last_completed"]["version"], "v1.0.0", "{s}");
    assert_eq!(s["last_completed"]["code_hash"], v1.as_str());
    let entry = s["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        entry["reason"].as_str().unwrap(),
        format!(
            "provisioned v1.0.0 on 3 node(s): {}",
            nodes.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    );
    // The record of completed releases outside the state file has it too.
    let releases: Value = serde_json::from_slice(
        &std::fs::read(fleet.dir.path().join("state/releases.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        releases["last_completed"]["version"], "v1.0.0",
        "{releases}"
    );

    // Again (as after a crash): nothing is sent, every node is counted as it is.
    let (rc, report, out) = provision(&fleet, &["v1.0.0"]);
    assert_eq!(rc, 0, "{out}");
    for (id, n) in report["nodes"].as_object().unwrap() {
        assert_eq!(n["answer"], "already", "{id}: {n}");
    }
    // Another version goes through a run.
    let (rc, _, out) = provision(&fleet, &["v2.0.0"]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("fleetgate start v2.0.0"), "{out}");

    // The first run of a bad release (10x exception rate): CANARY fails and the rollback
    // order returns the canary node to v1.0.0 — there is a completed release to return to.
    assert_eq!(code(&fleet.fg(&["start", "v3.0.0"])), 0);
    let out = fleet.run();
    assert_eq!(code(&out), 4, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "rolled_back", "{s}");
    assert_eq!(s["outbox"].as_array().map(Vec::len), Some(0), "{s}");
    let detail = s["failure_detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("no completed release"), "{detail}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let hashes = fleet.code_hashes();
        if hashes.iter().all(|(_, h)| *h == v1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every node back on v1.0.0: {hashes:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
