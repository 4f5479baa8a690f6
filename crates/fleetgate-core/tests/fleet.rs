//! The fleet machines (CANARY, DEPLOY, rollback delivery): exact commands out for each
//! event, and the crash cases — a kill between persisting "in flight" and recording the
//! answer, a repeated answer, a lost answer, a late answer.

use fleetgate_core::Outcome;
use fleetgate_core::fleet::{
    CanaryEvent, CanaryMachine, CanaryParams, CanaryProgress, CanarySelection, DeliveryStatus,
    DeployEvent, DeployMachine, DeployMode, DeployObserved, DeployParams, DeployProgress,
    FleetCommand, Goal, JudgeDecision, MAX_FIGURE_NODES, NodeAnswer, NodeDelivery, Observed,
    RevocationProgress, RevocationStep,
};
use std::collections::BTreeMap;

const H: &str = "aaaaaaaaaaaaaaaaaaaa";
const OLD: &str = "oooooooooooooooooooo";

fn params() -> CanaryParams {
    CanaryParams {
        code_hash: H.into(),
        window_secs: 600,
        report_grace_secs: 60,
        selection_timeout_secs: 300,
    }
}

fn selection(nodes: &[&str], baseline: &[&str]) -> CanarySelection {
    CanarySelection {
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
        baseline: baseline.iter().map(|s| s.to_string()).collect(),
        seed: "00".into(),
        eligible: nodes.len() + baseline.len(),
        per_region: BTreeMap::new(),
        selected_at: 100,
        fencing_epoch: 1,
    }
}

fn accepted(outcome: &str, running: &str) -> NodeAnswer {
    NodeAnswer::Accepted {
        outcome: outcome.into(),
        running_code_hash: Some(running.into()),
    }
}

fn obs(hash: &str, at: i64) -> Option<Observed> {
    Some(Observed {
        code_hash: hash.into(),
        healthy: true,
        at,
        floor: 0,
    })
}

fn verdict(cmds: &[FleetCommand]) -> Option<&fleetgate_core::Verdict> {
    cmds.iter().find_map(|c| match c {
        FleetCommand::Verdict(v) => Some(v),
        _ => None,
    })
}

#[test]
fn canary_selects_first_then_persists_then_sends() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    assert_eq!(
        m.handle(CanaryEvent::Tick { now: 100 }),
        vec![FleetCommand::SelectCanary]
    );
    assert_eq!(
        m.handle(CanaryEvent::Selected {
            selection: selection(&["n1"], &["n2", "n3"])
        }),
        vec![FleetCommand::Persist]
    );
    // The send is persisted (in flight) before it is carried out.
    assert_eq!(
        m.handle(CanaryEvent::Tick { now: 100 }),
        vec![
            FleetCommand::Persist,
            FleetCommand::Send {
                nodes: vec!["n1".into()]
            }
        ]
    );
    assert_eq!(progress.deliveries[0].status, DeliveryStatus::InFlight);
    assert_eq!(progress.deliveries[0].attempts, 1);
    assert_eq!(progress.first_sent_at, Some(100));
}

#[test]
fn too_few_peers_is_pending_until_the_selection_timeout() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    m.handle(CanaryEvent::Tick { now: 1000 });
    let cmds = m.handle(CanaryEvent::TooFewPeers {
        enrolled: 3,
        eligible: 0,
        reason: "no eligible peers".into(),
        now: 1000,
    });
    assert_eq!(cmds[0], FleetCommand::Persist);
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Pending, "{}", v.detail);
    assert!(v.detail.contains("forming"), "{}", v.detail);
    let cmds = m.handle(CanaryEvent::TooFewPeers {
        enrolled: 3,
        eligible: 1,
        reason: "need 2".into(),
        now: 1299,
    });
    assert_eq!(verdict(&cmds).unwrap().outcome, Outcome::Pending);
    let cmds = m.handle(CanaryEvent::TooFewPeers {
        enrolled: 3,
        eligible: 1,
        reason: "need 2".into(),
        now: 1300,
    });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Failed);
    assert!(v.detail.contains("after 300s"), "{}", v.detail);
    assert_eq!(v.figures["eligible"], 1);
}

#[test]
fn no_fleet_at_all_fails_closed_at_once() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    m.handle(CanaryEvent::Tick { now: 1000 });
    let cmds = m.handle(CanaryEvent::TooFewPeers {
        enrolled: 0,
        eligible: 0,
        reason: "no eligible peers".into(),
        now: 1000,
    });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Failed);
    assert!(v.detail.contains("no fleet"), "{}", v.detail);
}

/// Killed after "in flight" was persisted and before the answer was recorded: the next
/// pass observes the node already runs the release and does not send again.
#[test]
fn canary_kill_after_send_resumes_from_observation() {
    let p = params();
    let mut progress = CanaryProgress::default();
    {
        let mut m = CanaryMachine {
            progress: &mut progress,
            params: &p,
        };
        m.handle(CanaryEvent::Tick { now: 100 });
        m.handle(CanaryEvent::Selected {
            selection: selection(&["n1"], &["n2"]),
        });
        m.handle(CanaryEvent::Tick { now: 100 });
    }
    // ...killed here. The restarted orchestrator reloads `progress` and observes.
    let mut reloaded = progress.clone();
    let mut m = CanaryMachine {
        progress: &mut reloaded,
        params: &p,
    };
    m.handle(CanaryEvent::Observed {
        node: "n1".into(),
        observed: obs(H, 105),
    });
    let cmds = m.handle(CanaryEvent::Tick { now: 110 });
    assert_eq!(
        cmds,
        vec![
            FleetCommand::Persist,
            FleetCommand::Judge {
                window_start: 110,
                canary: vec!["n1".into()],
                baseline: vec!["n2".into()]
            }
        ]
    );
    assert_eq!(reloaded.deliveries[0].status, DeliveryStatus::Done);
    assert_eq!(reloaded.deliveries[0].attempts, 1, "not sent twice");
    assert_eq!(reloaded.deadline, Some(710));
}

/// Killed before the answer, and the node has not switched yet: it is sent again after the
/// back-off; the agent answers `already_applied` or `busy`, neither is a failure.
#[test]
fn canary_resend_answers_are_not_failures() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    m.handle(CanaryEvent::Tick { now: 100 });
    m.handle(CanaryEvent::Selected {
        selection: selection(&["n1", "n2"], &["n3"]),
    });
    m.handle(CanaryEvent::Tick { now: 100 });
    // Still in flight, back-off not over: no resend, pending.
    let cmds = m.handle(CanaryEvent::Tick { now: 101 });
    assert_eq!(verdict(&cmds).unwrap().outcome, Outcome::Pending);
    // After the back-off both are sent again.
    let cmds = m.handle(CanaryEvent::Tick { now: 103 });
    assert_eq!(
        cmds,
        vec![
            FleetCommand::Persist,
            FleetCommand::Send {
                nodes: vec!["n1".into(), "n2".into()]
            }
        ]
    );
    m.handle(CanaryEvent::Answered {
        node: "n1".into(),
        answer: NodeAnswer::Unknown {
            error: "busy".into(),
        },
    });
    m.handle(CanaryEvent::Answered {
        node: "n2".into(),
        answer: accepted("already_applied", H),
    });
    assert_eq!(progress.deliveries[0].status, DeliveryStatus::Queued);
    assert_eq!(progress.deliveries[1].status, DeliveryStatus::Done);
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    let cmds = m.handle(CanaryEvent::Tick { now: 104 });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Pending, "{}", v.detail);
}

#[test]
fn canary_fails_at_once_when_the_release_failed_on_a_node() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    m.handle(CanaryEvent::Tick { now: 100 });
    m.handle(CanaryEvent::Selected {
        selection: selection(&["n1"], &["n2"]),
    });
    m.handle(CanaryEvent::Tick { now: 100 });
    m.handle(CanaryEvent::Answered {
        node: "n1".into(),
        answer: NodeAnswer::Failed {
            outcome: "rolled_back".into(),
            detail: "health check failed".into(),
            running_code_hash: Some(OLD.into()),
        },
    });
    let cmds = m.handle(CanaryEvent::Tick { now: 101 });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Failed);
    assert!(v.detail.contains("n1: rolled_back"), "{}", v.detail);
}

#[test]
fn canary_silent_node_fails_integrity_after_the_grace() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    m.handle(CanaryEvent::Tick { now: 100 });
    m.handle(CanaryEvent::Selected {
        selection: selection(&["n1"], &["n2"]),
    });
    m.handle(CanaryEvent::Tick { now: 100 });
    m.handle(CanaryEvent::Answered {
        node: "n1".into(),
        answer: accepted("applied", H),
    });
    m.handle(CanaryEvent::Observed {
        node: "n1".into(),
        observed: obs(OLD, 120),
    });
    let cmds = m.handle(CanaryEvent::Tick { now: 150 });
    assert_eq!(verdict(&cmds).unwrap().outcome, Outcome::Pending);
    let cmds = m.handle(CanaryEvent::Tick { now: 161 });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Failed);
    assert!(v.detail.starts_with("integrity"), "{}", v.detail);
}

#[test]
fn canary_judge_decisions_map_to_verdicts() {
    let p = params();
    let mut progress = CanaryProgress::default();
    let mut m = CanaryMachine {
        progress: &mut progress,
        params: &p,
    };
    for (d, o) in [
        (JudgeDecision::Pass, Outcome::Passed),
        (JudgeDecision::Pending, Outcome::Pending),
        (JudgeDecision::Inconclusive, Outcome::Pending),
        (JudgeDecision::Fail, Outcome::Failed),
    ] {
        let cmds = m.handle(CanaryEvent::Judged {
            decision: d,
            detail: "x".into(),
            figures: serde_json::Value::Null,
        });
        assert_eq!(verdict(&cmds).unwrap().outcome, o, "{d:?}");
    }
}

#[test]
fn release_delivery_decides_from_what_the_node_runs() {
    let g = Goal::Run(H);
    let mut d = NodeDelivery::new("n", true);
    d.sending(0);
    d.answered(
        &g,
        NodeAnswer::BelowFloor {
            floor: Some(5),
            running_code_hash: Some(H.into()),
        },
    );
    assert_eq!(d.status, DeliveryStatus::Done, "replayed but runs it");
    let mut d = NodeDelivery::new("n", true);
    d.sending(0);
    d.answered(
        &g,
        NodeAnswer::BelowFloor {
            floor: Some(9),
            running_code_hash: Some(OLD.into()),
        },
    );
    assert_eq!(
        d.status,
        DeliveryStatus::Failed,
        "superseded by a revocation"
    );
    // A late answer after the delivery settled changes nothing.
    d.answered(&g, accepted("applied", H));
    assert_eq!(d.status, DeliveryStatus::Failed);
}

#[test]
fn revocation_counts_a_node_that_already_obeyed_as_delivered() {
    let g = Goal::Revoke(H);
    for answer in [
        accepted("already_applied", OLD),
        accepted("noop", OLD),
        NodeAnswer::BelowFloor {
            floor: Some(10),
            running_code_hash: Some(OLD.into()),
        },
    ] {
        let mut d = NodeDelivery::new("n", true);
        d.sending(0);
        d.answered(&g, answer.clone());
        assert_eq!(d.status, DeliveryStatus::Done, "{answer:?}");
    }
    // Still running the revoked release: not delivered.
    let mut d = NodeDelivery::new("n", true);
    d.sending(0);
    d.answered(
        &g,
        NodeAnswer::BelowFloor {
            floor: Some(10),
            running_code_hash: Some(H.into()),
        },
    );
    assert_eq!(d.status, DeliveryStatus::Failed);
    // A heartbeat cannot show the floor: it never settles a revocation.
    let mut d = NodeDelivery::new("n", true);
    d.observed(&g, obs(OLD, 1).as_ref());
    assert_eq!(d.status, DeliveryStatus::Queued);
}

#[test]
fn revocation_publishes_then_sends_then_is_delivered_when_required_nodes_obey() {
    let mut p = RevocationProgress {
        sequence: 11,
        revoked_code_hash: H.into(),
        return_to_version: "v1".into(),
        return_to_code_hash: Some(OLD.into()),
        deliveries: vec![
            NodeDelivery::new("n1", true),
            NodeDelivery::new("n2", false),
        ],
        published: None,
        gossip: true,
    };
    assert_eq!(p.step(0), RevocationStep::Publish);
    p.published = Some("gossip".into());
    assert_eq!(
        p.step(0),
        RevocationStep::Send(vec!["n1".into(), "n2".into()])
    );
    p.answered(
        "n2",
        NodeAnswer::Unknown {
            error: "down".into(),
        },
    );
    p.answered("n1", accepted("applied", OLD));
    // The best-effort node is tried again a few times, then given up.
    for t in [10, 20] {
        assert_eq!(p.step(t), RevocationStep::Send(vec!["n2".into()]));
        p.answered(
            "n2",
            NodeAnswer::Unknown {
                error: "down".into(),
            },
        );
    }
    match p.step(100) {
        RevocationStep::Delivered(note) => {
            assert!(note.contains("obeyed by 1 node"), "{note}");
            assert!(note.contains("1 unreachable"), "{note}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.deliveries[1].status, DeliveryStatus::Skipped);
}

#[test]
fn revocation_waits_for_a_required_node_and_resends_after_a_kill() {
    let mut p = RevocationProgress {
        sequence: 11,
        revoked_code_hash: H.into(),
        return_to_version: "v1".into(),
        return_to_code_hash: Some(OLD.into()),
        deliveries: vec![NodeDelivery::new("n1", true)],
        published: None,
        gossip: false,
    };
    assert_eq!(p.step(0), RevocationStep::Send(vec!["n1".into()]));
    // Killed before the answer was recorded; the reloaded progress says in flight.
    let mut reloaded = p.clone();
    assert!(matches!(reloaded.step(1), RevocationStep::Waiting(_)));
    assert_eq!(reloaded.step(2), RevocationStep::Send(vec!["n1".into()]));
    // The node had obeyed the first send: it answers the repeat as already applied.
    reloaded.answered("n1", accepted("already_applied", OLD));
    assert!(matches!(reloaded.step(3), RevocationStep::Delivered(_)));
}

/// Issue 20: a pull-mode node cannot be pushed to — every send is `Unknown` — but it
/// fetches the order from its feed; its heartbeat's floor shows it obeyed. A floor below
/// the order, or the revoked code hash still running, proves nothing.
#[test]
fn a_revocation_is_delivered_to_a_pull_node_when_its_heartbeat_reports_the_floor() {
    let mut p = RevocationProgress {
        sequence: 11,
        revoked_code_hash: H.into(),
        return_to_version: "v1".into(),
        return_to_code_hash: Some(OLD.into()),
        deliveries: vec![NodeDelivery::new("pull", true)],
        published: None,
        gossip: false,
    };
    assert_eq!(p.step(0), RevocationStep::Send(vec!["pull".into()]));
    p.answered(
        "pull",
        NodeAnswer::Unknown {
            error: "unreachable; the manifest waits in its pull feed".into(),
        },
    );
    let seen = |hash: &str, floor: u64| Observed {
        code_hash: hash.into(),
        healthy: true,
        at: 5,
        floor,
    };
    p.observed("pull", Some(&seen(OLD, 10)));
    p.observed("pull", Some(&seen(H, 11)));
    p.observed("pull", None);
    p.observed("elsewhere", Some(&seen(OLD, 11)));
    assert!(matches!(p.step(1), RevocationStep::Waiting(_)));
    p.observed("pull", Some(&seen(OLD, 12)));
    assert_eq!(p.deliveries[0].status, DeliveryStatus::Done);
    match p.step(2) {
        RevocationStep::Delivered(note) => assert!(note.contains("obeyed by 1 node"), "{note}"),
        other => panic!("{other:?}"),
    }
}

fn deploy_params() -> DeployParams {
    DeployParams {
        code_hash: H.into(),
        canary: vec!["c1".into()],
        success_pct: 1.0,
        max_failure_pct: 0.34,
    }
}

fn seen(hash: &str, healthy: bool) -> DeployObserved {
    DeployObserved {
        observed: Some(Observed {
            code_hash: hash.into(),
            healthy,
            at: 1,
            floor: 0,
        }),
        reachable: true,
        refused_release: false,
    }
}

#[test]
fn deploy_push_lists_persists_sends_and_converges_on_heartbeats() {
    let p = deploy_params();
    let mut progress = DeployProgress::new(DeployMode::Push, 0, 3600);
    let mut m = DeployMachine {
        progress: &mut progress,
        params: &p,
        observed: BTreeMap::new(),
    };
    assert_eq!(
        m.handle(DeployEvent::Tick { now: 0 }),
        vec![FleetCommand::ListTargets]
    );
    assert_eq!(
        m.handle(DeployEvent::Targets {
            nodes: vec!["t1".into(), "t2".into()]
        }),
        vec![FleetCommand::Persist]
    );
    assert_eq!(
        m.handle(DeployEvent::Tick { now: 0 }),
        vec![
            FleetCommand::Persist,
            FleetCommand::Send {
                nodes: vec!["t1".into(), "t2".into()]
            }
        ]
    );
    // Killed here; next pass: both report the release.
    let mut reloaded = progress.clone();
    let mut m = DeployMachine {
        progress: &mut reloaded,
        params: &p,
        observed: BTreeMap::new(),
    };
    for n in ["c1", "t1", "t2"] {
        m.handle(DeployEvent::Observed {
            node: n.into(),
            observed: seen(H, true),
        });
    }
    let cmds = m.handle(DeployEvent::Tick { now: 5 });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Passed, "{}", v.detail);
    assert!(
        reloaded
            .deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Done && d.attempts == 1)
    );
}

#[test]
fn deploy_gossip_publishes_once_and_fails_on_unhealthy_nodes() {
    let p = deploy_params();
    let mut progress = DeployProgress::new(DeployMode::Gossip, 0, 3600);
    let mut m = DeployMachine {
        progress: &mut progress,
        params: &p,
        observed: BTreeMap::new(),
    };
    m.handle(DeployEvent::Tick { now: 0 });
    m.handle(DeployEvent::Targets {
        nodes: vec!["t1".into(), "t2".into()],
    });
    assert_eq!(
        m.handle(DeployEvent::Tick { now: 0 }),
        vec![FleetCommand::Publish]
    );
    assert_eq!(
        m.handle(DeployEvent::Published {
            note: "handed".into()
        }),
        vec![FleetCommand::Persist]
    );
    m.handle(DeployEvent::Observed {
        node: "c1".into(),
        observed: seen(H, true),
    });
    m.handle(DeployEvent::Observed {
        node: "t1".into(),
        observed: seen(H, false),
    });
    m.handle(DeployEvent::Observed {
        node: "t2".into(),
        observed: seen(OLD, true),
    });
    let cmds = m.handle(DeployEvent::Tick { now: 1 });
    assert_eq!(verdict(&cmds).unwrap().outcome, Outcome::Pending);
    m.handle(DeployEvent::Observed {
        node: "t2".into(),
        observed: DeployObserved {
            refused_release: true,
            ..seen(OLD, true)
        },
    });
    let cmds = m.handle(DeployEvent::Tick { now: 2 });
    let v = verdict(&cmds).unwrap();
    assert_eq!(v.outcome, Outcome::Failed, "{}", v.detail);
    assert!(v.detail.contains("t1, t2"), "{}", v.detail);
}

/// A gossip DEPLOY whose targets are listed and whose manifest was handed to gossip.
fn published_to(targets: Vec<String>, deadline_secs: i64) -> DeployProgress {
    let mut progress = DeployProgress::new(DeployMode::Gossip, 0, deadline_secs);
    progress.listed = true;
    progress.targets = targets;
    progress.published = Some("x".into());
    progress
}

#[test]
fn deploy_deadline_fails_with_the_nodes_behind() {
    let p = deploy_params();
    let mut progress = published_to(vec!["t1".into()], 10);
    let mut m = DeployMachine {
        progress: &mut progress,
        params: &p,
        observed: BTreeMap::new(),
    };
    m.handle(DeployEvent::Observed {
        node: "c1".into(),
        observed: seen(H, true),
    });
    m.handle(DeployEvent::Observed {
        node: "t1".into(),
        observed: seen(OLD, true),
    });
    let v = verdict(&m.handle(DeployEvent::Tick { now: 11 }))
        .unwrap()
        .clone();
    assert_eq!(v.outcome, Outcome::Failed);
    assert!(v.detail.contains("behind: t1"), "{}", v.detail);
}

/// A pass's verdict is kept in the state: over a large fleet its figures name a bounded
/// number of nodes per list and count the rest (at 100,000 nodes every pass listed the
/// 90,000 ids still behind).
#[test]
fn a_deploy_verdict_over_many_nodes_names_a_few_and_counts_them_all() {
    let p = deploy_params();
    let targets: Vec<String> = (0..250).map(|i| format!("t{i:03}")).collect();
    let mut progress = published_to(targets.clone(), 3600);
    let mut m = DeployMachine {
        progress: &mut progress,
        params: &p,
        observed: BTreeMap::new(),
    };
    m.handle(DeployEvent::Observed {
        node: "c1".into(),
        observed: seen(H, true),
    });
    for (i, n) in targets.iter().enumerate() {
        let observed = match i % 25 {
            0 => seen(H, false),
            1..=4 => seen(H, true),
            _ => seen(OLD, true),
        };
        m.handle(DeployEvent::Observed {
            node: n.clone(),
            observed,
        });
    }
    let v = verdict(&m.handle(DeployEvent::Tick { now: 1 }))
        .unwrap()
        .clone();
    assert_eq!(v.outcome, Outcome::Pending, "{}", v.detail);
    let f = &v.figures;
    assert_eq!(f["nodes"], 251);
    assert_eq!(f["converged"], 41);
    assert_eq!(f["unhealthy_count"], 10);
    assert_eq!(f["unhealthy"].as_array().unwrap().len(), 10);
    assert_eq!(f["behind_count"], 200);
    let behind = f["behind"].as_array().unwrap();
    assert_eq!(behind.len(), MAX_FIGURE_NODES);
    assert_eq!(behind[0], "t005");
}

/// A release that was the last good commit again under a new version (same code hash):
/// its rollback order returns to the code the nodes run, so "still runs the revoked code
/// hash" proves nothing; the floor past the order (heartbeat or answer) shows obedience.
/// (At 100,000 nodes such an order was retried forever.)
#[test]
fn a_rollback_order_returning_to_the_same_code_is_delivered_on_the_floor() {
    let mut p = RevocationProgress {
        sequence: 11,
        revoked_code_hash: H.into(),
        return_to_version: "v1".into(),
        return_to_code_hash: Some(H.into()),
        deliveries: vec![
            NodeDelivery::new("pull", true),
            NodeDelivery::new("push", true),
        ],
        published: None,
        gossip: false,
    };
    assert_eq!(
        p.step(0),
        RevocationStep::Send(vec!["pull".into(), "push".into()])
    );
    p.answered(
        "pull",
        NodeAnswer::Unknown {
            error: "unreachable; the manifest waits in its pull feed".into(),
        },
    );
    p.answered("push", accepted("applied", H));
    let seen = |floor: u64| Observed {
        code_hash: H.into(),
        healthy: true,
        at: 5,
        floor,
    };
    p.observed("pull", Some(&seen(10)));
    assert!(
        matches!(p.step(1), RevocationStep::Waiting(_)),
        "a floor below the order proves nothing"
    );
    p.observed("pull", Some(&seen(11)));
    assert!(
        matches!(p.step(2), RevocationStep::Delivered(_)),
        "{:?}",
        p.deliveries
    );
}
