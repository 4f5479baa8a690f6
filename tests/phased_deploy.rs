//! Phased DEPLOY (`[deploy] steps`) on a real demo fleet of six node agents: after the
//! canary, half the fleet gets the release and is judged like the canary against the
//! nodes not yet updated, then the whole fleet.
//! - A good release passes the step and completes, even with the orchestrator killed
//!   right after it sent the release to the step's nodes (resumed with `run`).
//! - A bad release whose canary an operator promoted (`fleetgate promote`) is caught by
//!   the step: the run rolls back and every node — canary and step nodes — is back on the
//!   last good release.

mod common;
use common::{Fleet, RUN_LIMIT, code, ids, text};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

fn set_steps(fleet: &Fleet) {
    let path = fleet.config();
    let conf = std::fs::read_to_string(&path).unwrap();
    let edited = conf.replacen(
        "deadline_secs = 180\n",
        "deadline_secs = 600\nsteps = [0.5, 1.0]\nstep_window_secs = 15\n",
        1,
    );
    assert_ne!(conf, edited);
    assert!(
        edited.contains("steps = [0.5, 1.0]"),
        "the demo config has [deploy]"
    );
    std::fs::write(&path, edited).unwrap();
}

/// The step's slice, its baseline and the canary are disjoint, and together are the
/// fleet; returns the slice.
fn check_step_selection(s: &Value) -> BTreeSet<String> {
    let canary = ids(&s["canary"]["selection"]["nodes"]);
    let step = &s["deploy"]["steps"][0];
    let slice = ids(&step["progress"]["selection"]["nodes"]);
    let baseline = ids(&step["progress"]["selection"]["baseline"]);
    assert!(!slice.is_empty() && !baseline.is_empty(), "{step}");
    assert!(slice.is_disjoint(&canary), "{slice:?} vs canary {canary:?}");
    assert!(baseline.is_disjoint(&canary) && baseline.is_disjoint(&slice));
    assert_eq!(canary.len() + slice.len() + baseline.len(), 6, "{s}");
    // 50% of six nodes: three, less the canary node if it ranks among them.
    assert!((2..=3).contains(&slice.len()), "{slice:?}");
    slice
}

#[test]
fn phased_deploy_passes_a_good_release_through_its_step_and_catches_a_bad_one_there() {
    let fleet = Fleet::prepare(6);
    set_steps(&fleet);
    fleet.wait_for_history(30);
    a_good_release_passes_its_step_even_when_killed_after_the_step_was_sent(&fleet);
    a_bad_release_promoted_past_its_canary_is_caught_by_the_step_and_rolled_back_everywhere(&fleet);
}

fn a_good_release_passes_its_step_even_when_killed_after_the_step_was_sent(fleet: &Fleet) {
    fleet.tag_release("v4.1.0");
    let out = fleet.fg(&["start", "v4.1.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Killed right after the step's nodes were sent the release, before their answers
    // were recorded.
    let out = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(fleet.config())
        .arg("run")
        .env("FLEETGATE_TEST_CRASH_AT", "step-sent")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "deploying", "{s}");
    let step = &s["deploy"]["steps"][0];
    assert!(step["passed"].is_null(), "{step}");
    assert!(
        step["progress"]["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "in_flight"),
        "persisted as in flight before the send: {step}"
    );

    let out = fleet.run();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "completed", "{s}");
    let slice = check_step_selection(&s);
    let passed = s["deploy"]["steps"][0]["passed"].as_str().unwrap_or("");
    assert!(
        passed.starts_with("deploy step 1/1 (50% of the fleet): healthy for the whole window"),
        "{passed}"
    );
    // The whole-fleet step targeted only the nodes neither the canary nor the step had.
    let targets = ids(&s["deploy"]["targets"]);
    assert!(targets.is_disjoint(&slice), "{targets:?} vs {slice:?}");
    let hash = s["code_hash"].as_str().unwrap();
    fleet.wait_all_on(hash, "after the completed run");

    let out = fleet.fg(&["status"]);
    assert!(
        text(&out).contains("step 1/1: 50% of the fleet: done"),
        "{}",
        text(&out)
    );
    println!("v4.1.0 completed through its step ({slice:?}): {passed}");
}

/// The second half of the test below (its fleet has a completed release to return to).
fn a_bad_release_promoted_past_its_canary_is_caught_by_the_step_and_rolled_back_everywhere(
    fleet: &Fleet,
) {
    let good = fleet.status()["last_completed"]["code_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // v3.0.0 raises the exception rate tenfold; the canary would catch it, so an
    // operator ends the canary window early, as an operator might wrongly do.
    let out = fleet.fg(&["start", "v3.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run = fleet.background(&["run"]);
    fleet.wait_until("the canary window to open", |s| {
        !s["canary"]["window_start"].is_null()
    });
    let out = fleet.fg(&["promote", "--reason", "test: skip the canary"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    let status = run.wait_within(RUN_LIMIT).status;
    let s = fleet.status();
    assert_eq!(status.code(), Some(4), "run exits 4 for rolled_back: {s}");
    assert_eq!(s["stage"], "rolled_back", "{s}");
    let detail = s["failure_detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("deploy step 1/1 (50% of the fleet): unhealthy"),
        "the step caught it: {detail}"
    );
    let slice = check_step_selection(&s);
    // The step's nodes got the release, so the rollback order had to reach them.
    assert!(
        s["outbox"].as_array().is_none_or(|o| o.is_empty()),
        "{}",
        s["outbox"]
    );
    fleet.wait_all_on(&good, "after the rollback");
    println!("v3.0.0 promoted past its canary, caught on {slice:?}: {detail}");
}
