//! The pipeline state machine, driven event by event; every test asserts the exact
//! commands and the resulting state.

use fleetgate_core::{
    Command, EffectAction, Event, GateFacts, Outcome, PipelineState, RollbackScope, Stage,
    TransitionError, Verdict, Version, handle,
};
use serde_json::json;

fn start(state: &mut PipelineState, v: &str) -> Vec<Command> {
    handle(
        state,
        Event::Start {
            version: Version::parse(v).unwrap(),
            git_sha: "abc".into(),
            run_id: format!("run-{v}"),
            channel: None,
            now: 1.0,
        },
    )
    .unwrap()
}

fn gate(state: &mut PipelineState, verdict: Verdict) -> Result<Vec<Command>, TransitionError> {
    let (stage, epoch) = (state.stage, state.epoch);
    handle(
        state,
        Event::GateEvaluated {
            stage,
            epoch,
            verdict,
            facts: GateFacts::default(),
            now: 2.0,
        },
    )
}

fn pass(state: &mut PipelineState) -> Vec<Command> {
    gate(state, Verdict::passed("ok", json!({}))).unwrap()
}

fn fail(state: &mut PipelineState) -> Vec<Command> {
    gate(state, Verdict::failed("broken", json!({"n": 1}))).unwrap()
}

/// Walk to `stage` by passing every gate before it.
fn at(stage: Stage) -> PipelineState {
    let mut s = PipelineState::idle();
    start(&mut s, "v1.0.0");
    while s.stage != stage {
        pass(&mut s);
        assert!(
            s.stage.is_gated() || s.stage == stage,
            "walked past {stage}"
        );
    }
    s
}

#[test]
fn a_clean_run_visits_every_stage_in_order_and_completes() {
    let mut s = PipelineState::idle();
    assert_eq!(
        start(&mut s, "v1.0.0"),
        [Command::EvaluateGate {
            stage: Stage::Building,
            epoch: 1
        }]
    );
    let mut seen = vec![s.stage];
    loop {
        let cmds = pass(&mut s);
        seen.push(s.stage);
        if s.stage == Stage::Completed {
            assert_eq!(
                cmds,
                [Command::Finished {
                    stage: Stage::Completed
                }]
            );
            break;
        }
        assert_eq!(
            cmds,
            [Command::EvaluateGate {
                stage: s.stage,
                epoch: s.epoch
            }]
        );
    }
    assert_eq!(
        seen,
        [
            Stage::Building,
            Stage::Testing,
            Stage::Auditing,
            Stage::Benchmarking,
            Stage::Signing,
            Stage::Canary,
            Stage::Deploying,
            Stage::Completed
        ]
    );
    let hist: Vec<Stage> = s.stage_history.iter().map(|h| h.stage).collect();
    assert_eq!(hist, seen);
    assert_eq!(s.last_completed.as_ref().unwrap().version, "v1.0.0");
    assert_eq!(s.passed_gates().len(), 7);
}

#[test]
fn failures_go_where_the_spec_table_says_with_rollback_orders_for_touched_nodes() {
    let cases = [
        (Stage::Building, Stage::Failed, None),
        (Stage::Testing, Stage::Failed, None),
        (Stage::Auditing, Stage::Failed, None),
        (Stage::Benchmarking, Stage::RolledBack, None),
        (Stage::Signing, Stage::Failed, None),
        (
            Stage::Canary,
            Stage::RolledBack,
            Some(RollbackScope::Canary),
        ),
        (
            Stage::Deploying,
            Stage::RolledBack,
            Some(RollbackScope::All),
        ),
    ];
    for (stage, end, scope) in cases {
        let mut s = at(stage);
        let cmds = fail(&mut s);
        assert_eq!(s.stage, end, "{stage}");
        assert!(
            s.failure_detail.as_deref().unwrap().contains("broken"),
            "{stage}"
        );
        assert_eq!(s.gate_results[&stage].verdict.outcome, Outcome::Failed);
        match scope {
            None => {
                assert_eq!(cmds, [Command::Finished { stage: end }], "{stage}");
                assert!(s.outbox.is_empty());
            }
            Some(scope) => {
                assert_eq!(s.outbox.len(), 1, "{stage}");
                assert!(
                    matches!(&s.outbox[0].action, EffectAction::SendRollback { scope: sc, .. } if *sc == scope)
                );
                assert_eq!(
                    cmds,
                    [
                        Command::Deliver(Box::new(s.outbox[0].clone())),
                        Command::Finished { stage: end }
                    ]
                );
            }
        }
    }
}

#[test]
fn pending_never_fails_and_keeps_the_epoch() {
    let mut s = at(Stage::Canary);
    let epoch = s.epoch;
    for i in 1..=5 {
        let cmds = gate(&mut s, Verdict::pending("window open", json!({"i": i}))).unwrap();
        assert_eq!(
            cmds,
            [Command::Recheck {
                stage: Stage::Canary,
                epoch
            }]
        );
        assert_eq!(s.stage, Stage::Canary);
        assert_eq!(s.gate_results[&Stage::Canary].checks, i);
    }
    assert_eq!(s.epoch, epoch);
}

#[test]
fn start_only_from_idle_or_terminal() {
    let mut s = at(Stage::Testing);
    let e = handle(
        &mut s,
        Event::Start {
            version: Version::parse("v2.0.0").unwrap(),
            git_sha: "x".into(),
            run_id: "r2".into(),
            channel: None,
            now: 3.0,
        },
    )
    .unwrap_err();
    assert!(matches!(
        e,
        TransitionError::AlreadyActive {
            stage: Stage::Testing,
            ..
        }
    ));
    assert_eq!(s.version, "v1.0.0");
    fail(&mut s);
    start(&mut s, "v2.0.0");
    assert_eq!(s.stage, Stage::Building);
    assert_eq!(s.stage_history.len(), 1, "a new run starts a new history");
}

#[test]
fn rollback_wins_over_a_gate_that_was_running() {
    let mut s = at(Stage::Auditing);
    let (stage, epoch) = (s.stage, s.epoch);
    // The gate starts under `epoch`; meanwhile a rollback lands.
    handle(
        &mut s,
        Event::Rollback {
            reason: "operator said so".into(),
            now: 5.0,
        },
    )
    .unwrap();
    assert_eq!(s.stage, Stage::RolledBack);
    // The gate finishes and reports a pass: it must be discarded.
    let late = handle(
        &mut s,
        Event::GateEvaluated {
            stage,
            epoch,
            verdict: Verdict::passed("ok", json!({})),
            facts: GateFacts::default(),
            now: 6.0,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            late,
            TransitionError::Stale {
                current_stage: Stage::RolledBack,
                ..
            }
        ),
        "{late}"
    );
    assert_eq!(s.stage, Stage::RolledBack);
    assert_eq!(s.rollback_reason.as_deref(), Some("operator said so"));
    assert!(!s.gate_results.contains_key(&Stage::Auditing));
}

#[test]
fn rollback_rules() {
    let mut idle = PipelineState::idle();
    assert!(matches!(
        handle(
            &mut idle,
            Event::Rollback {
                reason: "x".into(),
                now: 1.0
            }
        ),
        Err(TransitionError::NotActive { stage: Stage::Idle })
    ));
    let mut s = at(Stage::Building);
    assert_eq!(
        handle(
            &mut s,
            Event::Rollback {
                reason: "  ".into(),
                now: 1.0
            }
        ),
        Err(TransitionError::EmptyReason)
    );
    // From CANARY or DEPLOY a manual rollback orders the rollback message; before, it doesn't.
    for (stage, scope) in [
        (Stage::Signing, None),
        (Stage::Canary, Some(RollbackScope::Canary)),
        (Stage::Deploying, Some(RollbackScope::All)),
    ] {
        let mut s = at(stage);
        let cmds = handle(
            &mut s,
            Event::Rollback {
                reason: "bad".into(),
                now: 9.0,
            },
        )
        .unwrap();
        assert_eq!(s.stage, Stage::RolledBack);
        assert_eq!(s.outbox.len(), usize::from(scope.is_some()), "{stage}");
        assert_eq!(
            cmds.last(),
            Some(&Command::Finished {
                stage: Stage::RolledBack
            })
        );
        // A second rollback is refused: the run is terminal.
        assert!(
            handle(
                &mut s,
                Event::Rollback {
                    reason: "again".into(),
                    now: 9.0
                }
            )
            .is_err()
        );
    }
}

#[test]
fn undelivered_rollback_blocks_the_next_start_until_acknowledged() {
    let mut s = at(Stage::Canary);
    fail(&mut s);
    let id = s.outbox[0].id.clone();
    let e = handle(
        &mut s,
        Event::Start {
            version: Version::parse("v2.0.0").unwrap(),
            git_sha: "x".into(),
            run_id: "r2".into(),
            channel: None,
            now: 3.0,
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, TransitionError::UndeliveredRollback { .. }),
        "{e}"
    );
    handle(
        &mut s,
        Event::EffectFailed {
            id: id.clone(),
            error: "node down".into(),
        },
    )
    .unwrap();
    assert_eq!(s.outbox[0].attempts, 1);
    assert_eq!(
        fleetgate_core::resume(&s),
        [Command::Deliver(Box::new(s.outbox[0].clone()))]
    );
    handle(&mut s, Event::EffectDone { id: id.clone() }).unwrap();
    assert!(s.outbox.is_empty());
    assert!(handle(&mut s, Event::EffectDone { id }).is_err());
    start(&mut s, "v2.0.0");
}

#[test]
fn checkpoints_are_fenced_by_epoch_and_the_state_round_trips() {
    let mut s = at(Stage::Canary);
    let epoch = s.epoch;
    handle(
        &mut s,
        Event::Checkpoint {
            stage: Stage::Canary,
            epoch,
            data: json!({"nodes": ["a"]}),
        },
    )
    .unwrap();
    assert_eq!(s.stage_data[&Stage::Canary], json!({"nodes": ["a"]}));
    assert!(
        handle(
            &mut s,
            Event::Checkpoint {
                stage: Stage::Canary,
                epoch: epoch - 1,
                data: json!(1)
            }
        )
        .is_err()
    );
    let text = serde_json::to_string(&s).unwrap();
    let back: PipelineState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for hart_field in [
        "stage",
        "version",
        "git_sha",
        "started_at",
        "stage_history",
        "code_hash",
        "failure_detail",
        "rollback_reason",
    ] {
        assert!(
            v.get(hart_field).is_some(),
            "missing HART field {hart_field}"
        );
    }
    assert_eq!(v["stage"], "canary");
    assert_eq!(v["stage_history"][0]["stage"], "building");
}

#[test]
fn reads_a_hart_state_file() {
    let hart = r#"{"schema_version":1,"stage":"building","version":"v2.0","git_sha":"","started_at":1771864669.14,"stage_history":[{"stage":"building","at":1771864669.14}]}"#;
    let s: PipelineState = serde_json::from_str(hart).unwrap();
    assert_eq!(s.stage, Stage::Building);
    assert_eq!(s.started_at, Some(1771864669.14));
}

#[test]
fn an_abandoned_effect_leaves_the_outbox_records_why_and_unblocks_start() {
    let mut s = at(Stage::Canary);
    fail(&mut s);
    let id = s.outbox[0].id.clone();
    let before = s.failure_detail.clone().unwrap_or_default();
    assert_eq!(
        handle(
            &mut s,
            Event::EffectAbandoned {
                id: id.clone(),
                reason: "no completed release".into(),
            },
        )
        .unwrap(),
        []
    );
    assert!(s.outbox.is_empty());
    let detail = s.failure_detail.clone().unwrap();
    assert!(detail.starts_with(&before), "{detail}");
    assert!(
        detail.ends_with(&format!(
            "rollback order {id} was not sent: no completed release"
        )),
        "{detail}"
    );
    let e = handle(
        &mut s,
        Event::EffectAbandoned {
            id: id.clone(),
            reason: "again".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(e, TransitionError::UnknownEffect { .. }), "{e}");
    handle(
        &mut s,
        Event::Start {
            version: Version::parse("v2.0.0").unwrap(),
            git_sha: "x".into(),
            run_id: "r2".into(),
            channel: None,
            now: 3.0,
        },
    )
    .unwrap();
    assert_eq!(s.stage, Stage::Building);
}

#[test]
fn a_completed_release_records_the_hash_scheme_its_manifest_was_signed_with() {
    use fleetgate_core::config::HashScheme;
    for (manifest, want) in [
        (json!({"sequence": 7}), HashScheme::Git),
        (
            json!({"sequence": 7, "hash_scheme": "git"}),
            HashScheme::Git,
        ),
        (
            json!({"sequence": 7, "hash_scheme": "hart"}),
            HashScheme::Hart,
        ),
    ] {
        let mut s = at(Stage::Signing);
        let epoch = s.epoch;
        handle(
            &mut s,
            Event::GateEvaluated {
                stage: Stage::Signing,
                epoch,
                verdict: Verdict::passed("signed", json!({})),
                facts: GateFacts {
                    code_hash: None,
                    manifest: Some(manifest.clone()),
                    sequence: Some(7),
                },
                now: 3.0,
            },
        )
        .unwrap();
        while s.stage != Stage::Completed {
            pass(&mut s);
        }
        let c = s.last_completed.unwrap();
        assert_eq!(c.hash_scheme, Some(want), "{manifest}");
        assert_eq!(c.sequence, Some(7));
    }
}

fn provisioned(version: &str, hash: &str, seq: u64) -> Event {
    Event::Provisioned {
        release: fleetgate_core::CompletedRelease {
            version: version.into(),
            git_sha: "abc".into(),
            code_hash: Some(hash.into()),
            run_id: format!("provision-{seq}"),
            sequence: Some(seq),
            hash_scheme: None,
            artifacts: None,
        },
        nodes: vec!["n1".into(), "n2".into()],
        detail: "2/2 healthy".into(),
        now: 5.0,
    }
}

#[test]
fn provisioning_records_the_first_release_between_runs_only() {
    let mut s = PipelineState::idle();
    assert_eq!(
        handle(&mut s, provisioned("v1.0.0", "h1", 40)).unwrap(),
        vec![]
    );
    let done = s.last_completed.clone().unwrap();
    assert_eq!(
        (
            done.version.as_str(),
            done.code_hash.as_deref(),
            done.sequence
        ),
        ("v1.0.0", Some("h1"), Some(40))
    );
    assert_eq!(s.last_sequence, 40);
    assert_eq!(s.stage, Stage::Idle);
    let last = s.stage_history.last().unwrap();
    assert_eq!(
        last.reason.as_deref(),
        Some("provisioned v1.0.0 on 2 node(s): n1, n2")
    );
    assert_eq!(last.detail.as_deref(), Some("2/2 healthy"));

    // Newly enrolled nodes get the same release: history grows, the record stays.
    handle(&mut s, provisioned("v1.0.0", "h1", 41)).unwrap();
    assert_eq!(s.last_completed.as_ref().unwrap().sequence, Some(40));
    assert_eq!(s.last_sequence, 41);
    assert_eq!(s.stage_history.len(), 2);

    // Another version (or the same name with other code) goes through a run.
    let before = s.clone();
    for ev in [
        provisioned("v1.1.0", "h2", 42),
        provisioned("v1.0.0", "h9", 42),
    ] {
        let e = handle(&mut s, ev).unwrap_err();
        assert!(matches!(e, TransitionError::NotProvisionable { .. }), "{e}");
        assert!(e.to_string().contains("fleetgate start"), "{e}");
        assert_eq!(s, before);
    }

    // Not while a run is in progress.
    let mut running = at(Stage::Canary);
    let before = running.clone();
    let e = handle(&mut running, provisioned("v1.0.0", "h1", 50)).unwrap_err();
    assert!(
        e.to_string().contains("in progress at stage `canary`"),
        "{e}"
    );
    assert_eq!(running, before);
}

fn start_on(state: &mut PipelineState, v: &str, channel: Option<&str>) {
    handle(
        state,
        Event::Start {
            version: Version::parse(v).unwrap(),
            git_sha: format!("sha-{v}"),
            run_id: format!("run-{v}"),
            channel: channel.map(str::to_owned),
            now: 1.0,
        },
    )
    .unwrap();
}

fn complete(state: &mut PipelineState) {
    while state.stage != Stage::Completed {
        pass(state);
    }
}

#[test]
fn each_channel_keeps_its_own_completed_release_and_rollback_target() {
    let mut s = PipelineState::idle();
    start_on(&mut s, "v1.0.0", None);
    assert_eq!(s.run_channel(), "stable");
    complete(&mut s);
    assert_eq!(s.last_completed.as_ref().unwrap().version, "v1.0.0");

    // A beta run: judged and completed on beta; stable's record stays.
    start_on(&mut s, "v2.0.0", Some("beta"));
    assert_eq!(s.channel.as_deref(), Some("beta"));
    assert_eq!(
        s.rollback_target().unwrap().version,
        "v1.0.0",
        "a channel that never completed a release returns to stable's"
    );
    complete(&mut s);
    assert_eq!(s.channel_releases["beta"].version, "v2.0.0");
    assert_eq!(s.last_completed.as_ref().unwrap().version, "v1.0.0");

    // The next beta run returns beta's nodes to beta's release; the records survive.
    start_on(&mut s, "v3.0.0", Some("beta"));
    assert_eq!(s.rollback_target().unwrap().version, "v2.0.0");
    assert_eq!(s.completed_on("stable").unwrap().version, "v1.0.0");
    // Naming the default channel is the same as naming none.
    let mut t = PipelineState::idle();
    start_on(&mut t, "v1.0.0", Some("stable"));
    assert_eq!(t.channel, None);
    complete(&mut t);
    assert_eq!(t.last_completed.as_ref().unwrap().version, "v1.0.0");
    assert!(t.channel_releases.is_empty());
}
