//! The orchestrator killed with SIGKILL during CANARY and during DEPLOY, with a real
//! fleet of node agents: restarted, it resumes the same canary window (same nodes, same
//! deadline, samples kept in the registry) and the same deployment, and finishes.

mod common;
use common::{Fleet, code, text};
use serde_json::Value;
use std::process::Child;

fn kill(mut child: Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[test]
fn killed_during_canary_and_during_deploy_the_orchestrator_resumes_and_finishes() {
    let fleet = Fleet::prepare(4);
    // The canary must pass on the judge's verdict after the restart: each canary node is
    // judged against its own history, which a fleet started seconds ago does not have yet
    // (with ~20 s of it a healthy canary was once held inconclusive until RUN_LIMIT).
    fleet.wait_for_history(30);

    // --- CANARY ---
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let run = fleet.spawn(&["run"]);
    let before = fleet.wait_until("the canary window to be open for a few samples", |s| {
        s["stage"] == "canary"
            && s["canary"].get("window_start").is_some()
            && s["gate_results"]["canary"]["checks"].as_u64().unwrap_or(0) >= 3
    });
    // What an operator and an agent see of the live canary: every criterion with its
    // decision, statistic and threshold; the exception rate's estimate and thresholds.
    let health: Value =
        serde_json::from_slice(&fleet.fg(&["canary-health", "--json"]).stdout).unwrap();
    assert_eq!(health["success"], true, "{health}");
    assert!(health["checks"].as_u64().unwrap() >= 3, "{health}");
    let tool: Value =
        serde_json::from_slice(&fleet.fg(&["tools", "call", "check_canary_health"]).stdout)
            .unwrap();
    assert_eq!(tool["canary_active"], true, "{tool}");
    assert_eq!(tool["stage"], "canary", "{tool}");
    assert_eq!(tool["healthy"], true, "{tool}");
    assert_eq!(tool["version"], "v2.0.0", "{tool}");
    assert_eq!(
        tool["canary_nodes"].as_array().map(Vec::len),
        tool["selection"]["nodes"].as_array().map(Vec::len),
        "{tool}"
    );
    for criteria in [&health["verdict"]["criteria"], &tool["criteria"]] {
        let names: Vec<&str> = criteria
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["criterion"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 5, "{criteria}");
        for c in criteria.as_array().unwrap() {
            assert!(
                ["pass", "pending", "fail", "skipped"].contains(&c["decision"].as_str().unwrap()),
                "{c}"
            );
            assert!(
                c.get("statistic").is_some() && c.get("threshold").is_some(),
                "{c}"
            );
        }
        let rate = criteria
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["criterion"] == "exception_rate")
            .unwrap_or_else(|| panic!("no exception_rate in {names:?}"));
        // The detail says why it stands where it stands; once there is an estimate, it
        // is given with its interval and both thresholds.
        let detail = rate["detail"].as_str().unwrap();
        assert!(!detail.is_empty(), "{rate}");
        if detail.contains("estimated") {
            assert!(
                detail.contains("95% CI")
                    && detail.contains("(canary.max_exception_rate_increase)")
                    && detail.contains("(canary.detect_exception_rate_increase)"),
                "{detail}"
            );
        }
        for t in [
            "max_exception_rate_increase",
            "detect_exception_rate_increase",
        ] {
            assert!(rate["threshold"][t].is_number(), "{rate}");
        }
    }
    kill(run);
    let canary_before = before["canary"].clone();
    let checks_before = before["gate_results"]["canary"]["checks"].as_u64().unwrap();
    let out = fleet.run();
    assert_eq!(code(&out), 0, "the resumed run completes: {}", text(&out));
    let after = fleet.status();
    assert_eq!(after["stage"], "completed");
    let canary_after = &after["canary"];
    for key in ["window_start", "deadline", "selection", "first_sent_at"] {
        assert_eq!(
            canary_after[key], canary_before[key],
            "{key} changed across the restart"
        );
    }
    let rec = &after["gate_results"]["canary"];
    assert_eq!(rec["outcome"], "passed");
    assert!(
        rec["checks"].as_u64().unwrap() > checks_before,
        "checks continued from {checks_before}"
    );
    // The verdict covers the whole window from its original start: samples were kept.
    assert_eq!(
        rec["figures"]["window_start"],
        canary_before["window_start"]
    );
    assert!(
        rec["figures"]["samples"].as_u64().unwrap() >= 14,
        "{}",
        rec["figures"]
    );
    let history: Vec<&str> = after["stage_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "building",
            "testing",
            "auditing",
            "benchmarking",
            "signing",
            "canary",
            "deploying",
            "completed"
        ]
    );

    // --- DEPLOY ---
    assert_eq!(code(&fleet.fg(&["start", "v2.1.0"])), 0);
    let run = fleet.spawn(&["run"]);
    let before = fleet.wait_until("DEPLOY to have handed the release out", |s| {
        s["stage"] == "deploying" && s["deploy"]["listed"] == true
    });
    kill(run);
    let deploy_before = before["deploy"].clone();
    let out = fleet.run();
    assert_eq!(code(&out), 0, "the resumed run completes: {}", text(&out));
    let after = fleet.status();
    assert_eq!(after["stage"], "completed", "{}", after["failure_detail"]);
    for key in ["targets", "started_at", "deadline"] {
        assert_eq!(
            after["deploy"][key], deploy_before[key],
            "{key} changed across the restart"
        );
    }
    // Every node reports the new code hash.
    let peers: Value =
        serde_json::from_slice(&fleet.fg(&["fleet", "list", "--json"]).stdout).unwrap();
    let want = after["code_hash"].as_str().unwrap();
    let on: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["code_hash"].as_str())
        .collect();
    assert_eq!(on.len(), 4);
    assert!(on.iter().all(|h| *h == want), "{on:?} != {want}");
}
