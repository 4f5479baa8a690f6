//! The outbox events an operator sends (`fleetgate outbox retry|abandon`): each test
//! asserts the exact commands and the exact state after.

use fleetgate_core::{
    Command, Effect, EffectAction, Event, GateFacts, HistoryEntry, PipelineState, RollbackScope,
    Stage, TransitionError, Verdict, Version, handle,
};
use serde_json::json;

/// A run that failed its CANARY gate: `rolled_back`, one rollback order queued, which one
/// delivery attempt failed.
fn rolled_back_with_a_failed_delivery() -> PipelineState {
    let mut s = PipelineState::idle();
    handle(
        &mut s,
        Event::Start {
            version: Version::parse("v1.0.0").unwrap(),
            git_sha: "abc".into(),
            run_id: "r1".into(),
            channel: None,
            now: 1.0,
        },
    )
    .unwrap();
    while s.stage != Stage::Canary {
        let (stage, epoch) = (s.stage, s.epoch);
        handle(
            &mut s,
            Event::GateEvaluated {
                stage,
                epoch,
                verdict: Verdict::passed("ok", json!({})),
                facts: GateFacts::default(),
                now: 2.0,
            },
        )
        .unwrap();
    }
    let epoch = s.epoch;
    handle(
        &mut s,
        Event::GateEvaluated {
            stage: Stage::Canary,
            epoch,
            verdict: Verdict::failed("sick", json!({})),
            facts: GateFacts::default(),
            now: 3.0,
        },
    )
    .unwrap();
    handle(
        &mut s,
        Event::EffectFailed {
            id: "r1-1".into(),
            error: "node n1: HTTP 409 replayed".into(),
        },
    )
    .unwrap();
    assert_eq!(s.stage, Stage::RolledBack);
    assert_eq!(
        s.outbox,
        [Effect {
            id: "r1-1".into(),
            action: EffectAction::SendRollback {
                scope: RollbackScope::Canary,
                reason: "CANARY gate failed: sick".into(),
            },
            attempts: 1,
            last_error: Some("node n1: HTTP 409 replayed".into()),
            revocation: None,
        }]
    );
    s
}

fn start_v2(s: &mut PipelineState) -> Result<Vec<Command>, TransitionError> {
    handle(
        s,
        Event::Start {
            version: Version::parse("v2.0.0").unwrap(),
            git_sha: "def".into(),
            run_id: "r2".into(),
            channel: None,
            now: 9.0,
        },
    )
}

#[test]
fn start_refused_by_a_queued_effect_names_it_and_the_two_commands() {
    let mut s = rolled_back_with_a_failed_delivery();
    let before = s.clone();
    let e = start_v2(&mut s).unwrap_err();
    assert_eq!(s, before);
    let msg = e.to_string();
    for want in [
        "cannot start v2.0.0",
        "effect r1-1 has not been delivered yet (rollback order to the canary nodes, 1 attempt(s), last error: node n1: HTTP 409 replayed); still queued: r1-1.",
        "`fleetgate outbox retry r1-1`",
        "`fleetgate outbox abandon r1-1 --reason TEXT`",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
}

#[test]
fn retry_clears_attempts_and_error_and_orders_the_delivery() {
    let mut s = rolled_back_with_a_failed_delivery();
    let mut want = s.clone();
    let cmds = handle(&mut s, Event::EffectRetry { id: "r1-1".into() }).unwrap();
    want.outbox[0].attempts = 0;
    want.outbox[0].last_error = None;
    assert_eq!(s, want);
    assert_eq!(cmds, [Command::Deliver(Box::new(want.outbox[0].clone()))]);
}

#[test]
fn retry_or_abandon_of_an_unknown_id_names_it_and_lists_the_known_ids() {
    let mut s = rolled_back_with_a_failed_delivery();
    let before = s.clone();
    let e = handle(&mut s, Event::EffectRetry { id: "r9-9".into() }).unwrap_err();
    assert_eq!(
        e,
        TransitionError::UnknownEffect {
            id: "r9-9".into(),
            known: vec!["r1-1".into()],
        }
    );
    assert_eq!(
        e.to_string(),
        "no outbox effect with id r9-9 (the outbox holds: r1-1)"
    );
    let e = handle(
        &mut s,
        Event::EffectAbandonedBy {
            id: "nope".into(),
            reason: "x".into(),
            by: "operator t".into(),
            now: 5.0,
        },
    )
    .unwrap_err();
    assert!(matches!(e, TransitionError::UnknownEffect { .. }), "{e}");
    assert_eq!(s, before);
    let e = handle(
        &mut PipelineState::idle(),
        Event::EffectRetry { id: "x".into() },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no outbox effect with id x (the outbox is empty)"
    );
}

#[test]
fn abandon_by_an_operator_is_recorded_in_history_and_unblocks_start() {
    let mut s = rolled_back_with_a_failed_delivery();
    let mut want = s.clone();
    let cmds = handle(
        &mut s,
        Event::EffectAbandonedBy {
            id: "r1-1".into(),
            reason: "  node n1 was reimaged by hand  ".into(),
            by: "operator alice".into(),
            now: 7.5,
        },
    )
    .unwrap();
    assert_eq!(cmds, []);
    let note = "rollback order to the canary nodes r1-1 was abandoned by operator alice after 1 attempt(s): node n1 was reimaged by hand";
    want.outbox.clear();
    want.failure_detail = Some(format!("CANARY gate failed: sick\n{note}"));
    want.stage_history.push(HistoryEntry {
        stage: Stage::RolledBack,
        at: 7.5,
        from: Some(Stage::RolledBack),
        reason: Some(note.into()),
        detail: Some("last delivery error: node n1: HTTP 409 replayed".into()),
        epoch: Some(want.epoch),
    });
    assert_eq!(s, want);
    start_v2(&mut s).unwrap();
    assert_eq!(s.stage, Stage::Building);
}

#[test]
fn abandon_needs_a_reason() {
    let mut s = rolled_back_with_a_failed_delivery();
    let before = s.clone();
    let e = handle(
        &mut s,
        Event::EffectAbandonedBy {
            id: "r1-1".into(),
            reason: " \n".into(),
            by: "operator t".into(),
            now: 5.0,
        },
    )
    .unwrap_err();
    assert_eq!(e, TransitionError::EmptyAbandonReason { id: "r1-1".into() });
    assert_eq!(s, before);
}
