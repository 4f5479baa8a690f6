//! Operator control through the pure machine: pause, resume, promote (abort is the
//! existing rollback). Every test asserts the exact commands and the resulting state.

use fleetgate_core::fleet::{
    CanaryProgress, CanarySelection, DeployMode, DeployProgress, DeployStep, step_slice,
};
use fleetgate_core::{
    Command, Event, FleetStageProgress, GateFacts, NO_REASON, Outcome, PipelineState, Stage,
    TransitionError, Verdict, Version, handle, resume,
};
use serde_json::json;

fn at(stage: Stage) -> PipelineState {
    let mut s = PipelineState::idle();
    handle(
        &mut s,
        Event::Start {
            version: Version::parse("v1.0.0").unwrap(),
            git_sha: "abc".into(),
            run_id: "run-1".into(),
            channel: None,
            now: 1.0,
        },
    )
    .unwrap();
    while s.stage != stage {
        gate(&mut s, Verdict::passed("ok", json!({}))).unwrap();
        assert!(s.stage.is_gated(), "walked past {stage}");
    }
    s
}

fn gate(s: &mut PipelineState, verdict: Verdict) -> Result<Vec<Command>, TransitionError> {
    let (stage, epoch) = (s.stage, s.epoch);
    handle(
        s,
        Event::GateEvaluated {
            stage,
            epoch,
            verdict,
            facts: GateFacts::default(),
            now: 2.0,
        },
    )
}

fn pause(s: &mut PipelineState, now: f64) -> Result<Vec<Command>, TransitionError> {
    handle(
        s,
        Event::Pause {
            by: "operator alice".into(),
            reason: "looking at the dashboards".into(),
            now,
        },
    )
}

fn resume_at(s: &mut PipelineState, now: f64) -> Result<Vec<Command>, TransitionError> {
    handle(
        s,
        Event::Resume {
            by: "operator bob".into(),
            reason: String::new(),
            now,
        },
    )
}

fn promote(s: &mut PipelineState, now: f64) -> Result<Vec<Command>, TransitionError> {
    handle(
        s,
        Event::Promote {
            by: "operator carol".into(),
            reason: "traffic too thin; checked by hand".into(),
            now,
        },
    )
}

/// CANARY with its window open at t=100 for 600 s.
fn open_canary() -> PipelineState {
    let mut s = at(Stage::Canary);
    let epoch = s.epoch;
    handle(
        &mut s,
        Event::FleetProgress {
            epoch,
            progress: FleetStageProgress::Canary(CanaryProgress {
                first_sent_at: Some(90),
                window_start: Some(100),
                deadline: Some(700),
                ..CanaryProgress::default()
            }),
        },
    )
    .unwrap();
    s
}

#[test]
fn a_paused_run_accepts_no_gate_result_until_resumed() {
    let mut s = at(Stage::Testing);
    let epoch = s.epoch;
    assert_eq!(pause(&mut s, 10.0).unwrap(), []);
    assert_eq!(s.stage, Stage::Testing);
    assert_eq!(
        s.epoch,
        epoch + 1,
        "a gate pass already running is discarded"
    );
    let p = s.paused.clone().unwrap();
    assert_eq!(p.by, "operator alice");
    assert_eq!(p.reason, "looking at the dashboards");
    let h = s.stage_history.last().unwrap();
    assert_eq!(h.stage, Stage::Testing);
    assert_eq!(
        h.reason.as_deref(),
        Some("paused by operator alice: looking at the dashboards")
    );
    // Even a result under the current epoch is refused while paused.
    let before = s.clone();
    let err = gate(&mut s, Verdict::passed("ok", json!({}))).unwrap_err();
    assert!(
        matches!(
            err,
            TransitionError::Paused {
                stage: Stage::Testing,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s, before);
    let ep = s.epoch;
    let err = handle(
        &mut s,
        Event::Checkpoint {
            stage: Stage::Testing,
            epoch: ep,
            data: json!({}),
        },
    )
    .unwrap_err();
    assert!(matches!(err, TransitionError::Paused { .. }));
    // Crash recovery does not evaluate a paused run's gate.
    assert_eq!(resume(&s), []);
    assert!(matches!(
        pause(&mut s, 11.0).unwrap_err(),
        TransitionError::AlreadyPaused { .. }
    ));

    let cmds = resume_at(&mut s, 15.0).unwrap();
    assert_eq!(s.paused, None);
    assert_eq!(
        cmds,
        [Command::EvaluateGate {
            stage: Stage::Testing,
            epoch: s.epoch
        }]
    );
    assert_eq!(s.epoch, epoch + 2);
    let h = s.stage_history.last().unwrap();
    assert_eq!(
        h.reason.as_deref(),
        Some(format!("resumed by operator bob: {NO_REASON}").as_str())
    );
    assert!(h.detail.as_deref().unwrap().starts_with("paused 5s"));
    gate(&mut s, Verdict::passed("ok", json!({}))).unwrap();
    assert_eq!(s.stage, Stage::Auditing);
    assert!(matches!(
        resume_at(&mut s, 16.0).unwrap_err(),
        TransitionError::NotPaused { .. }
    ));
}

#[test]
fn pause_and_resume_need_a_run() {
    let mut s = PipelineState::idle();
    assert!(matches!(
        pause(&mut s, 1.0).unwrap_err(),
        TransitionError::NoRun {
            action: "pause",
            stage: Stage::Idle
        }
    ));
    assert!(matches!(
        promote(&mut s, 1.0).unwrap_err(),
        TransitionError::NoRun { .. }
    ));
    assert_eq!(s, PipelineState::idle());
}

#[test]
fn resuming_moves_an_open_canary_window_by_the_paused_time() {
    let mut s = open_canary();
    pause(&mut s, 200.0).unwrap();
    // The window's progress cannot be saved while paused: nothing is sent.
    let epoch = s.epoch;
    assert!(matches!(
        handle(
            &mut s,
            Event::FleetProgress {
                epoch,
                progress: FleetStageProgress::Canary(CanaryProgress::default()),
            },
        )
        .unwrap_err(),
        TransitionError::Paused { .. }
    ));
    resume_at(&mut s, 320.4).unwrap();
    let c = s.canary.clone().unwrap();
    assert_eq!(c.paused_secs, 120);
    assert_eq!(c.deadline, Some(820));
    assert_eq!(
        c.window_start,
        Some(100),
        "samples are still judged from the start"
    );
    assert_eq!(c.first_sent_at, Some(90));
    // A second pause adds up.
    pause(&mut s, 400.0).unwrap();
    resume_at(&mut s, 410.0).unwrap();
    assert_eq!(s.canary.as_ref().unwrap().paused_secs, 130);
}

#[test]
fn resuming_before_the_window_opens_moves_the_report_grace() {
    let mut s = at(Stage::Canary);
    let epoch = s.epoch;
    handle(
        &mut s,
        Event::FleetProgress {
            epoch,
            progress: FleetStageProgress::Canary(CanaryProgress {
                first_selection_attempt_at: Some(80),
                first_sent_at: Some(90),
                ..CanaryProgress::default()
            }),
        },
    )
    .unwrap();
    pause(&mut s, 100.0).unwrap();
    resume_at(&mut s, 160.0).unwrap();
    let c = s.canary.unwrap();
    assert_eq!(
        (c.first_selection_attempt_at, c.first_sent_at),
        (Some(140), Some(150))
    );
    assert_eq!(c.paused_secs, 0);
}

#[test]
fn promote_ends_an_open_canary_window_as_passed_by_the_operator() {
    let mut s = open_canary();
    // The judge held it as inconclusive (pending): today nothing else moves it on.
    gate(
        &mut s,
        Verdict::pending(
            "inconclusive: 40 more requests needed",
            json!({"samples": 7}),
        ),
    )
    .unwrap();
    let cmds = promote(&mut s, 300.0).unwrap();
    assert_eq!(s.stage, Stage::Deploying);
    assert_eq!(
        cmds,
        [Command::EvaluateGate {
            stage: Stage::Deploying,
            epoch: s.epoch
        }]
    );
    let r = &s.gate_results[&Stage::Canary];
    assert_eq!(r.verdict.outcome, Outcome::Passed);
    let p = r.promoted.as_ref().expect("marked as promoted");
    assert_eq!(p.by, "operator carol");
    assert_eq!(p.reason, "traffic too thin; checked by hand");
    assert!(r.verdict.detail.starts_with("promoted by operator carol"));
    assert!(r.verdict.detail.contains("NOT judged a pass"));
    assert!(
        r.verdict
            .detail
            .contains("inconclusive: 40 more requests needed")
    );
    assert_eq!(
        r.verdict.figures,
        json!({"samples": 7}),
        "the judge's figures are kept"
    );
    let h = s.stage_history.last().unwrap();
    assert_eq!((h.from, h.stage), (Some(Stage::Canary), Stage::Deploying));
    assert_eq!(
        h.reason.as_deref(),
        Some("promoted by operator carol: traffic too thin; checked by hand")
    );
    // The state round-trips with the promotion.
    let back: PipelineState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn promote_is_refused_outside_an_open_canary_window_and_while_paused() {
    let mut s = at(Stage::Signing);
    let before = s.clone();
    assert!(matches!(
        promote(&mut s, 5.0).unwrap_err(),
        TransitionError::NotPromotable { .. }
    ));
    assert_eq!(s, before);

    let mut s = at(Stage::Canary);
    let err = promote(&mut s, 5.0).unwrap_err();
    assert!(err.to_string().contains("not open yet"), "{err}");
    assert_eq!(s.stage, Stage::Canary);

    let mut s = open_canary();
    pause(&mut s, 150.0).unwrap();
    assert!(matches!(
        promote(&mut s, 160.0).unwrap_err(),
        TransitionError::Paused { .. }
    ));
    assert_eq!(s.stage, Stage::Canary);
}

#[test]
fn abort_of_a_paused_run_rolls_back_and_clears_the_pause() {
    let mut s = open_canary();
    pause(&mut s, 150.0).unwrap();
    let cmds = handle(
        &mut s,
        Event::Rollback {
            reason: "abort".into(),
            now: 160.0,
        },
    )
    .unwrap();
    assert_eq!(s.stage, Stage::RolledBack);
    assert_eq!(s.paused, None);
    assert!(cmds.iter().any(|c| matches!(c, Command::Deliver(_))));
}

/// DEPLOY with two judged steps: the first passed, the second's window open at t=300.
fn open_step() -> PipelineState {
    let mut s = at(Stage::Deploying);
    let epoch = s.epoch;
    let mut d = DeployProgress::new(DeployMode::Push, 200, 3600);
    let mut first = DeployStep::new(0.25);
    first.passed = Some("deploy step 1/2 (25% of the fleet): healthy".into());
    let mut second = DeployStep::new(0.5);
    second.progress = CanaryProgress {
        selection: Some(CanarySelection {
            nodes: vec!["n3".into()],
            baseline: vec!["n4".into()],
            seed: "00".into(),
            eligible: 4,
            per_region: Default::default(),
            selected_at: 290,
            fencing_epoch: 0,
        }),
        first_sent_at: Some(290),
        window_start: Some(300),
        deadline: Some(900),
        ..CanaryProgress::default()
    };
    d.steps = vec![first, second];
    handle(
        &mut s,
        Event::FleetProgress {
            epoch,
            progress: FleetStageProgress::Deploy(d),
        },
    )
    .unwrap();
    s
}

#[test]
fn promote_during_a_phased_deploy_ends_the_open_step_recorded_as_the_operators() {
    let mut s = open_step();
    let epoch = s.epoch;
    let cmds = promote(&mut s, 400.0).unwrap();
    assert_eq!(
        s.stage,
        Stage::Deploying,
        "the next step is in the same stage"
    );
    assert_eq!(
        cmds,
        [Command::EvaluateGate {
            stage: Stage::Deploying,
            epoch: epoch + 1
        }]
    );
    let d = s.deploy.as_ref().unwrap();
    let step = &d.steps[1];
    let passed = step.passed.as_deref().unwrap();
    assert!(
        passed.starts_with(
            "deploy step 2/2 (50% of the fleet) promoted by operator carol: traffic too thin"
        ) && passed.contains("NOT judged a pass"),
        "{passed}"
    );
    assert_eq!(step.promoted.as_ref().unwrap().by, "operator carol");
    assert_eq!(
        d.current_step(),
        None,
        "every step is done: the whole fleet is next"
    );
    let h = s.stage_history.last().unwrap();
    assert_eq!(
        h.reason.as_deref(),
        Some("deploy step 2 promoted by operator carol: traffic too thin; checked by hand")
    );
    // Nothing left to promote.
    let before = s.clone();
    assert!(matches!(
        promote(&mut s, 401.0).unwrap_err(),
        TransitionError::NotPromotable { .. }
    ));
    assert_eq!(s, before);
}

#[test]
fn promote_refuses_a_step_whose_window_is_not_open() {
    let mut s = open_step();
    if let Some(d) = &mut s.deploy {
        d.steps[1].progress.window_start = None;
        d.steps[1].progress.deadline = None;
    }
    let before = s.clone();
    let err = promote(&mut s, 400.0).unwrap_err();
    assert!(
        err.to_string().contains("deploy step 2/2 is not open yet"),
        "{err}"
    );
    assert_eq!(s, before);
}

#[test]
fn resuming_moves_an_open_step_window_and_the_deploy_deadline_by_the_paused_time() {
    let mut s = open_step();
    pause(&mut s, 400.0).unwrap();
    resume_at(&mut s, 460.0).unwrap();
    let d = s.deploy.as_ref().unwrap();
    assert_eq!(d.deadline, 200 + 3600 + 60);
    let step = &d.steps[1].progress;
    assert_eq!(step.deadline, Some(960));
    assert_eq!(step.paused_secs, 60);
    let detail = s.stage_history.last().unwrap().detail.clone().unwrap();
    assert!(
        detail.contains("the deploy deadline")
            && detail.contains("the deploy step 2 window's deadline"),
        "{detail}"
    );
}

#[test]
fn a_step_slice_adds_the_ranked_nodes_not_yet_updated_and_judges_them_against_the_rest() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let updated = ["a".to_owned()].into_iter().collect();
    let eligible = s(&["a", "b", "c", "d", "e"]);
    let (slice, baseline) = step_slice(&s(&["a", "c"]), &updated, &eligible);
    assert_eq!(slice, s(&["c"]));
    assert_eq!(baseline, s(&["b", "d", "e"]));
    // A ranked node that is not eligible now (down) is still sent the release; the
    // baseline holds only eligible nodes.
    let (slice, baseline) = step_slice(&s(&["a", "x"]), &updated, &eligible);
    assert_eq!(slice, s(&["x"]));
    assert_eq!(baseline, s(&["b", "c", "d", "e"]));
    let (slice, _) = step_slice(&s(&["a"]), &updated, &eligible);
    assert!(slice.is_empty());
}
