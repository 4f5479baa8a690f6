//! A rollback by hand during CANARY, with a real fleet: the rollback order is queued, the
//! next `advance` delivers it although the run has ended, the canary node goes back to
//! the last good version, and the next run may start. With no completed release to return
//! to, the order is abandoned with the reason recorded instead of blocking every later run.

mod common;
use common::{Fleet, code, text};
use std::time::{Duration, Instant};

/// A bound on each command, so a wedged one fails the test saying where the pipeline
/// stood instead of hanging until the harness kills it with nothing to show.
const STEP_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_rollback_by_hand_during_canary_is_delivered_by_the_next_advance() {
    let fleet = Fleet::prepare(4);
    // A history to judge the canary against: on a fleet seconds old the judge can hold a
    // healthy release inconclusive for good (seen in CI: +24%, 95% CI -14% to +78%).
    fleet.wait_for_history(30);
    // v2.0.0 completes: it is the last good release a rollback returns to.
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let out = fleet.run();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let before = fleet.code_hashes();
    // v2.5.0 is healthy; the operator rolls it back during its canary window anyway.
    fleet.tag_release("v2.5.0");
    assert_eq!(code(&fleet.fg(&["start", "v2.5.0"])), 0);
    let canary = fleet.stop_in_canary_window();
    assert_ne!(
        fleet.code_hashes(),
        before,
        "the canary node runs the release"
    );

    // A long reason (80 kB: an operator pasting a log, or a verdict naming thousands of
    // nodes) must not make the signed order too large for the nodes' verifiers (64 KiB):
    // the order carries it cut short, the state keeps it whole.
    let reason = format!("operator: p99 up; {}", "details ".repeat(10_000));
    let out = fleet.fg_within(&["rollback", "--reason", &reason], STEP_LIMIT);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "rolled_back");
    assert_eq!(
        s["rollback_reason"],
        reason.trim(),
        "the state keeps the whole reason"
    );
    assert_eq!(
        s["outbox"].as_array().unwrap().len(),
        1,
        "a rollback order is queued: {s}"
    );
    // Starting again is refused until it is delivered, and says how.
    let refused = fleet.fg(&["start", "v2.5.0"]);
    assert_eq!(code(&refused), 1);
    assert!(
        text(&refused).contains("fleetgate outbox retry"),
        "{}",
        text(&refused)
    );

    let out = fleet.fg_within(&["advance"], STEP_LIMIT);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("to v2.0.0: obeyed by 4 node(s)"),
        "{}",
        text(&out)
    );
    let s = fleet.status();
    assert_eq!(s["outbox"], serde_json::json!([]), "{s}");
    assert_eq!(s["stage"], "rolled_back");

    let t = Instant::now();
    while fleet.code_hashes() != before {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "canary node {canary} did not return to v2.0.0: {:?}",
            fleet.code_hashes()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is left queued: the next run may start.
    assert_eq!(code(&fleet.fg(&["start", "v2.5.0"])), 0);
    assert_eq!(code(&fleet.fg(&["rollback", "--reason", "end of test"])), 0);
}

#[test]
fn a_rollback_order_with_nothing_to_return_to_is_abandoned_not_left_blocking() {
    // The fleet was provisioned by hand (v1.0.0): no run has completed, so a rollback of
    // the first run has no release to send the canary node back to.
    let fleet = Fleet::prepare(3);
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let mut run = fleet.spawn(&["run"]);
    fleet.wait_until("the canary window", |s| {
        s["canary"].get("window_start").is_some()
    });
    let _ = run.kill();
    let _ = run.wait();
    assert_eq!(code(&fleet.fg(&["rollback", "--reason", "operator"])), 0);
    assert_eq!(fleet.status()["outbox"].as_array().unwrap().len(), 1);
    let out = fleet.fg_within(&["advance"], STEP_LIMIT);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("NOT sent"), "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["outbox"], serde_json::json!([]), "{s}");
    let detail = s["failure_detail"].as_str().unwrap();
    assert!(
        detail.contains("was not sent: no completed release"),
        "{detail}"
    );
    // The pipeline is not stuck: the next run starts.
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    assert_eq!(code(&fleet.fg(&["rollback", "--reason", "end of test"])), 0);
}
