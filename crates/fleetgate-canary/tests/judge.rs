//! Behaviour of the canary judge, one scenario per criterion, through one `Fleet` helper.

use fleetgate_canary::{
    BenchSpec, Command, Criterion, CriterionDecision, Decision, Direction, Event, FailureKind,
    Judge, JudgeConfig, JudgeError, NodeReport, OnInconclusive, Sample, Verdict,
};

const HASH: &str = "abc123";

/// A tiny scripted fleet: canary `c0`, baseline `b0..b3`, 30 s samples, 300 s window.
struct Fleet {
    judge: Judge,
    t: u64,
    nodes: Vec<NodeReport>,
}

/// The scripted scenarios below were sized for the plain SPRT (no history, H0 = the
/// baseline's rate, H1 = +50%): tolerance 0, detect +50%.
fn config() -> JudgeConfig {
    JudgeConfig {
        window_secs: 300,
        sample_interval_secs: 30,
        heartbeat_timeout_secs: 60,
        max_exception_rate_increase: 0.0,
        detect_exception_rate_increase: Some(0.5),
        ..JudgeConfig::default()
    }
}

impl Fleet {
    fn new(config: JudgeConfig) -> Self {
        let ids = ["c0", "b0", "b1", "b2", "b3"];
        let judge = Judge::new(
            config,
            HASH,
            vec!["c0".to_owned()],
            ids[1..].iter().map(|s| s.to_string()),
            1000,
        )
        .unwrap();
        let nodes = ids
            .iter()
            .map(|id| NodeReport {
                node_id: id.to_string(),
                heartbeat_at: Some(1000),
                healthy: Some(true),
                code_hash: Some(HASH.into()),
                ..Default::default()
            })
            .collect();
        Self {
            judge,
            t: 1000,
            nodes,
        }
    }

    /// Advances one interval: every node serves 1000 requests with `base` exceptions,
    /// the canary with `canary` exceptions; `edit` may change the canary's report.
    fn step(&mut self, base: u64, canary: u64, edit: impl Fn(&mut NodeReport)) -> Vec<Command> {
        self.traffic(Load::per_node(1000, base, canary), edit)
    }

    /// Advances one interval with the given load.
    fn traffic(&mut self, load: Load, edit: impl Fn(&mut NodeReport)) -> Vec<Command> {
        self.t += 30;
        for n in &mut self.nodes {
            if n.node_id == "c0" {
                n.requests_total += load.canary_requests;
                n.exceptions_total += load.canary_exceptions;
            } else {
                n.requests_total += load.base_requests;
                n.exceptions_total += load.base_exceptions;
            }
            n.heartbeat_at = Some(self.t);
        }
        let mut nodes = self.nodes.clone();
        edit(&mut nodes[0]);
        self.nodes[0] = nodes[0].clone();
        self.judge
            .on_event(Event::Sample(Sample { at: self.t, nodes }))
            .unwrap()
    }

    fn run_healthy(&mut self, intervals: usize) -> Vec<Command> {
        let mut last = Vec::new();
        for _ in 0..intervals {
            last = self.step(10, 10, |_| {});
        }
        last
    }

    fn criterion(&self, c: Criterion) -> CriterionDecision {
        self.judge
            .verdict()
            .criteria
            .iter()
            .find(|v| v.criterion == c)
            .unwrap()
            .decision
    }
}

/// One interval's requests and exceptions, per node.
#[derive(Debug, Clone, Copy)]
struct Load {
    canary_requests: u64,
    canary_exceptions: u64,
    base_requests: u64,
    base_exceptions: u64,
}

impl Load {
    fn per_node(requests: u64, base_exceptions: u64, canary_exceptions: u64) -> Self {
        Self {
            canary_requests: requests,
            canary_exceptions,
            base_requests: requests,
            base_exceptions,
        }
    }
}

fn is_rollback(cmds: &[Command]) -> bool {
    cmds.iter().any(|c| matches!(c, Command::Rollback { .. }))
}

#[test]
fn healthy_canary_is_pending_until_the_window_ends_then_passes() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {}); // reference sample
    let cmds = f.run_healthy(8);
    assert_eq!(cmds, vec![Command::SampleAt { at: f.t + 30 }]);
    assert_eq!(f.judge.verdict().decision, Decision::Pending);
    let cmds = f.run_healthy(1);
    assert!(matches!(&cmds[..], [Command::Promote { .. }]), "{cmds:?}");
    let v = f.judge.verdict();
    assert_eq!(v.decision, Decision::Pass);
    assert_eq!(
        f.criterion(Criterion::Benchmark),
        CriterionDecision::Skipped
    );
    // Structured JSON: five criteria, each with figures, threshold, statistic, decision.
    let json = serde_json::to_value(v).unwrap();
    let crit = json["criteria"].as_array().unwrap();
    assert_eq!(crit.len(), 5);
    assert_eq!(crit[0]["criterion"], "exception_rate");
    assert_eq!(crit[0]["decision"], "pass");
    assert!(crit[0]["statistic"]["llr"].as_f64().unwrap() < -2.9);
    assert_eq!(crit[0]["threshold"]["max_exception_rate_increase"], 0.0);
    assert_eq!(crit[0]["threshold"]["detect_exception_rate_increase"], 0.5);
    assert_eq!(crit[0]["statistic"]["method"], "cross_section");
    assert_eq!(crit[2]["threshold"]["heartbeat_timeout_secs"], 60);
    // Decided: later events re-issue the final command.
    let again = f.judge.on_event(Event::Tick { now: f.t + 5 }).unwrap();
    assert!(matches!(&again[..], [Command::Promote { .. }]));
}

#[test]
fn raised_exception_rate_rolls_back_before_the_window_ends() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    let mut n = 0;
    let cmds = loop {
        n += 1;
        let c = f.step(10, 30, |_| {});
        if is_rollback(&c) || n > 9 {
            break c;
        }
    };
    assert!(is_rollback(&cmds), "not detected");
    assert!(n <= 3, "took {n} intervals");
    let v = f.judge.verdict();
    assert_eq!(v.failure, Some(FailureKind::Statistical));
    assert_eq!(
        f.criterion(Criterion::ExceptionRate),
        CriterionDecision::Fail
    );
    // The reason names both thresholds and the estimate with its interval: 30
    // exceptions against 10 per baseline node is +200%.
    assert!(
        v.reason
            .contains("canary exception rate is beyond the tolerance: estimated +200% against the baseline (95% CI"),
        "{}",
        v.reason
    );
    assert!(v.reason.contains("tolerance +0% (canary.max_exception_rate_increase), detect +50% (canary.detect_exception_rate_increase)"), "{}", v.reason);
}

#[test]
fn small_raw_ratio_is_not_a_rollback() {
    // One canary exception vs none in the baseline: infinite raw ratio, no evidence.
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    let cmds = f.step(0, 1, |_| {});
    assert!(!is_rollback(&cmds));
}

#[test]
fn failing_health_check_fails_after_consecutive_samples() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    let c = f.step(10, 10, |n| n.healthy = Some(false));
    assert!(!is_rollback(&c));
    let c = f.step(10, 10, |n| n.healthy = Some(false));
    assert!(is_rollback(&c));
    assert_eq!(f.criterion(Criterion::HealthCheck), CriterionDecision::Fail);
    assert_eq!(f.judge.verdict().failure, Some(FailureKind::Statistical));
}

#[test]
fn silent_node_is_a_hard_failure_at_the_next_sample() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    f.step(10, 10, |_| {});
    let last = f.t;
    f.step(10, 10, |n| n.heartbeat_at = Some(last));
    let c = f.step(10, 10, |n| n.heartbeat_at = Some(last));
    assert!(!is_rollback(&c), "60 s of silence is within the timeout");
    let c = f.step(10, 10, |n| n.heartbeat_at = Some(last));
    assert!(is_rollback(&c));
    let v = f.judge.verdict();
    assert_eq!(v.failure, Some(FailureKind::Hard));
    assert!(v.reason.contains("c0 silent for 90s"), "{}", v.reason);
}

#[test]
fn tick_without_samples_detects_silence() {
    let mut f = Fleet::new(config());
    let c = f.judge.on_event(Event::Tick { now: 1061 }).unwrap();
    assert!(is_rollback(&c));
    assert_eq!(f.criterion(Criterion::Heartbeat), CriterionDecision::Fail);
}

#[test]
fn wrong_code_hash_is_a_hard_failure_immediately() {
    let mut f = Fleet::new(config());
    let c = f.step(0, 0, |n| n.code_hash = Some("evil".into()));
    assert!(is_rollback(&c));
    let v = f.judge.verdict();
    assert_eq!(v.failure, Some(FailureKind::Hard));
    assert!(v.reason.contains("runs code hash evil"), "{}", v.reason);
}

#[test]
fn crash_loop_is_a_hard_failure() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    f.step(10, 10, |_| {});
    // Two counter resets (restarts) > max_restarts = 1.
    let c = f.step(10, 10, |n| {
        n.requests_total = 5;
        n.exceptions_total = 0;
    });
    assert!(!is_rollback(&c));
    let c = f.step(10, 10, |n| {
        n.requests_total = 3;
        n.exceptions_total = 0;
    });
    assert!(is_rollback(&c));
    assert!(f.judge.verdict().reason.contains("crash loop"));
    assert_eq!(f.judge.verdict().failure, Some(FailureKind::Hard));
}

fn bench_config(direction: Direction) -> JudgeConfig {
    JudgeConfig {
        benchmarks: vec![BenchSpec {
            name: "latency_ms".into(),
            direction,
            tolerance: 0.05,
            reference: None,
        }],
        ..config()
    }
}

fn with_bench(f: &mut Fleet, baseline: f64) {
    for n in &mut f.nodes[1..] {
        n.bench.insert("latency_ms".into(), baseline);
    }
}

#[test]
fn benchmark_regression_is_direction_aware() {
    // Lower is better: canary 20% slower fails after two samples.
    let mut f = Fleet::new(bench_config(Direction::LowerIsBetter));
    with_bench(&mut f, 100.0);
    f.step(0, 0, |n| {
        n.bench.insert("latency_ms".into(), 100.0);
    });
    let c = f.step(10, 10, |n| {
        n.bench.insert("latency_ms".into(), 120.0);
    });
    assert!(!is_rollback(&c));
    let c = f.step(10, 10, |_| {});
    assert!(is_rollback(&c));
    assert_eq!(f.criterion(Criterion::Benchmark), CriterionDecision::Fail);

    // Higher is better: the same figures are an improvement.
    let mut f = Fleet::new(bench_config(Direction::HigherIsBetter));
    with_bench(&mut f, 100.0);
    f.step(0, 0, |n| {
        n.bench.insert("latency_ms".into(), 120.0);
    });
    f.run_healthy(10);
    assert_eq!(f.judge.verdict().decision, Decision::Pass);
}

#[test]
fn missing_benchmark_is_never_a_pass() {
    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: OnInconclusive::Rollback,
        ..bench_config(Direction::LowerIsBetter)
    });
    f.step(0, 0, |_| {});
    let c = f.run_healthy(9);
    assert!(is_rollback(&c));
    let v = f.judge.verdict();
    assert_eq!(v.failure, Some(FailureKind::InsufficientData));
    assert!(v.reason.starts_with("insufficient data"), "{}", v.reason);

    // Default (extend, 600 s here): pending, then held — never promoted.
    let mut f = Fleet::new(JudgeConfig {
        max_window_secs: 600,
        ..bench_config(Direction::LowerIsBetter)
    });
    f.step(0, 0, |_| {});
    let c = f.run_healthy(9);
    assert_eq!(
        c,
        vec![
            Command::ExtendWindow { until: 1600 },
            Command::SampleAt { at: 1330 }
        ]
    );
    let c = f.run_healthy(10);
    assert!(
        matches!(
            &c[..],
            [Command::Hold { .. }, Command::SampleAt { at: 1630 }]
        ),
        "{c:?}"
    );
    let v = f.judge.verdict();
    assert_eq!(v.decision, Decision::Inconclusive);
    assert_eq!(
        v.more_requests_needed, None,
        "the exception test is not what is missing"
    );
    assert!(
        v.reason
            .starts_with("inconclusive: no canary figure or no reference yet for latency_ms"),
        "{}",
        v.reason
    );
}

#[test]
fn no_traffic_at_all_follows_the_policy() {
    // Nodes heartbeat but serve no traffic at all.
    let idle = Load::per_node(0, 0, 0);
    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: OnInconclusive::Rollback,
        ..config()
    });
    let mut c = Vec::new();
    for _ in 0..10 {
        c = f.traffic(idle, |_| {});
    }
    assert!(is_rollback(&c));
    assert_eq!(
        f.judge.verdict().failure,
        Some(FailureKind::InsufficientData)
    );

    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: OnInconclusive::Extend,
        max_window_secs: 360,
        ..config()
    });
    for _ in 0..9 {
        f.traffic(idle, |_| {});
    }
    let c = f.traffic(idle, |_| {});
    assert_eq!(
        c,
        vec![
            Command::ExtendWindow { until: 1360 },
            Command::SampleAt { at: 1330 }
        ]
    );
    assert_eq!(f.judge.verdict().decision, Decision::Pending);
    assert_eq!(f.judge.verdict().more_requests_needed, Some(1000));
    assert_eq!(f.judge.verdict().eta_secs, None, "no traffic, no rate");
    // Traffic arrives during the extension: enough requests with zero exceptions pass.
    let c = f.step(0, 0, |_| {});
    assert!(matches!(&c[..], [Command::Promote { .. }]), "{c:?}");
}

#[test]
fn extension_without_data_ends_held_not_failed() {
    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: OnInconclusive::Extend,
        max_window_secs: 360,
        ..config()
    });
    let idle = Load::per_node(0, 0, 0);
    let mut held = Vec::new();
    for _ in 0..16 {
        let c = f.traffic(idle, |_| {});
        assert!(!is_rollback(&c), "{c:?}");
        held.extend(c.into_iter().filter(|c| matches!(c, Command::Hold { .. })));
    }
    assert_eq!(held.len(), 1, "Hold is issued once: {held:?}");
    let v = f.judge.verdict();
    assert_eq!(v.decision, Decision::Inconclusive);
    assert_eq!(v.held_since, Some(1360));
    assert!(!f.judge.is_decided());
    // Ticks while held keep it held and ask for the next sample.
    let c = f.judge.on_event(Event::Tick { now: f.t + 10 }).unwrap();
    assert_eq!(c, vec![Command::SampleAt { at: f.t + 40 }]);
}

#[test]
fn no_baseline_says_how_to_fix_it() {
    let cfg = JudgeConfig {
        on_inconclusive: OnInconclusive::Rollback,
        ..config()
    };
    let mut j = Judge::new(cfg, HASH, vec!["c0".to_owned()], Vec::new(), 0).unwrap();
    let report = |t: u64, e: u64| NodeReport {
        node_id: "c0".into(),
        heartbeat_at: Some(t),
        healthy: Some(true),
        code_hash: Some(HASH.into()),
        exceptions_total: e,
        requests_total: t * 100,
        bench: Default::default(),
    };
    let mut last = Vec::new();
    for k in 0..=10 {
        last = j
            .on_event(Event::Sample(Sample {
                at: k * 30,
                nodes: vec![report(k * 30, k * 5)],
            }))
            .unwrap();
    }
    assert!(is_rollback(&last));
    assert!(
        j.verdict().reason.contains("baseline_exception_rate"),
        "{}",
        j.verdict().reason
    );
}

#[test]
fn a_restarted_orchestrator_resumes_the_same_window() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    f.step(10, 25, |_| {});
    let saved = serde_json::to_string(&f.judge).unwrap();
    let mut reference = f.judge.clone();
    f.judge = serde_json::from_str(&saved).unwrap();
    assert_eq!(f.judge, reference);
    let a = f.step(10, 25, |_| {});
    let nodes = f.nodes.clone();
    let b = reference
        .on_event(Event::Sample(Sample { at: f.t, nodes }))
        .unwrap();
    assert_eq!(a, b);
    assert!(is_rollback(&a), "two intervals at 2.5x should be detected");
}

#[test]
fn out_of_order_events_are_refused() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    let err = f.judge.on_event(Event::Tick { now: 5 }).unwrap_err();
    assert_eq!(err, JudgeError::OutOfOrder { at: 5, last: 1030 });
}

#[test]
fn invalid_config_names_the_key() {
    let cfg = JudgeConfig {
        max_exception_rate_increase: -1.0,
        ..config()
    };
    let err = Judge::new(cfg, HASH, vec!["c".into()], Vec::new(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid canary setting canary.max_exception_rate_increase = -1: must be a finite number >= 0"
    );
    let cfg = JudgeConfig {
        max_exception_rate_increase: 0.5,
        detect_exception_rate_increase: Some(0.4),
        ..config()
    };
    let err = Judge::new(cfg, HASH, vec!["c".into()], Vec::new(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid canary setting canary.detect_exception_rate_increase = 0.4: must be a finite number above canary.max_exception_rate_increase (the tolerance)"
    );
    // The default detect threshold follows the tolerance.
    let cfg = JudgeConfig {
        max_exception_rate_increase: 0.5,
        detect_exception_rate_increase: None,
        ..config()
    };
    assert_eq!(cfg.detect_increase(), 1.0);
    let err = Judge::new(config(), HASH, Vec::new(), Vec::new(), 0).unwrap_err();
    assert_eq!(err, JudgeError::EmptyCanary);
    let err = Judge::new(config(), HASH, vec!["x".into()], vec!["x".into()], 0).unwrap_err();
    assert_eq!(err, JudgeError::OverlappingSets("x".into()));
}

// ---- thin traffic: on_inconclusive × scenario -------------------------------------

/// The scenarios of the policy matrix. The window is 300 s (samples every 30 s from
/// t = 1030, the first being the counters' reference), `max_window_secs` 600.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// 10 requests per node per interval, no exception anywhere: 90 canary requests
    /// at the end of the window, far below `min_requests` (1000).
    ThinHealthy,
    /// 1000 requests per node per interval, 1% exceptions everywhere.
    ThickHealthy,
    /// 10 requests per node per interval; the canary raises 1 exception per interval,
    /// the baseline none. Each interval adds 0.31 to the SPRT's statistic: undecided at
    /// the end of the window (2.79), over the fail boundary (4.61) at the 15th counted
    /// interval, t = 1480, inside the extension.
    ThinBad,
    /// Thin healthy traffic, but the canary reports a foreign code hash at t = 1150.
    HardFailure,
}

/// A change of decision: `(time, decision, failure)`.
type Change = (u64, Decision, Option<FailureKind>);

/// `(time, decision, failure)` each time the decision changed, from a run of samples
/// up to t = 1900 (or the final verdict), and every command issued.
fn trace(policy: OnInconclusive, scenario: Scenario) -> (Vec<Change>, Vec<Command>) {
    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: policy,
        max_window_secs: 600,
        ..config()
    });
    let mut changes = Vec::new();
    let mut all = Vec::new();
    let mut last = Decision::Pending;
    while f.t < 1900 && !f.judge.is_decided() {
        let at = f.t + 30;
        let c = match scenario {
            Scenario::ThinHealthy => f.traffic(Load::per_node(10, 0, 0), |_| {}),
            Scenario::ThickHealthy => f.step(10, 10, |_| {}),
            Scenario::ThinBad => f.traffic(Load::per_node(10, 0, 1), |_| {}),
            Scenario::HardFailure => f.traffic(Load::per_node(10, 0, 0), |n| {
                if at >= 1150 {
                    n.code_hash = Some("evil".into());
                }
            }),
        };
        all.extend(c);
        let v = f.judge.verdict();
        if v.decision != last {
            changes.push((v.at, v.decision, v.failure));
            last = v.decision;
        }
    }
    (changes, all)
}

#[test]
fn every_policy_and_scenario_ends_in_the_exact_decision() {
    use Decision::{Fail, Inconclusive, Pass};
    use FailureKind::{Hard, InsufficientData, Statistical};
    use OnInconclusive::{Extend, Hold, Rollback};
    use Scenario::{HardFailure, ThickHealthy, ThinBad, ThinHealthy};
    let expected: [(OnInconclusive, Scenario, &[Change]); 12] = [
        (
            Rollback,
            ThinHealthy,
            &[(1300, Fail, Some(InsufficientData))],
        ),
        (Rollback, ThickHealthy, &[(1300, Pass, None)]),
        (Rollback, ThinBad, &[(1300, Fail, Some(InsufficientData))]),
        (Rollback, HardFailure, &[(1150, Fail, Some(Hard))]),
        (Extend, ThinHealthy, &[(1600, Inconclusive, None)]),
        (Extend, ThickHealthy, &[(1300, Pass, None)]),
        (Extend, ThinBad, &[(1480, Fail, Some(Statistical))]),
        (Extend, HardFailure, &[(1150, Fail, Some(Hard))]),
        (Hold, ThinHealthy, &[(1300, Inconclusive, None)]),
        (Hold, ThickHealthy, &[(1300, Pass, None)]),
        (
            Hold,
            ThinBad,
            &[(1300, Inconclusive, None), (1480, Fail, Some(Statistical))],
        ),
        (Hold, HardFailure, &[(1150, Fail, Some(Hard))]),
    ];
    for (policy, scenario, want) in expected {
        let (got, commands) = trace(policy, scenario);
        assert_eq!(got, want, "{policy:?} × {scenario:?}");
        // The window is extended exactly when the policy is extend and the window
        // ended undecided; a hold is announced exactly once, when first held.
        let extends: Vec<&Command> = commands
            .iter()
            .filter(|c| matches!(c, Command::ExtendWindow { .. }))
            .collect();
        let undecided_at_window_end = matches!(scenario, ThinHealthy | ThinBad);
        if policy == Extend && undecided_at_window_end {
            assert_eq!(extends, [&Command::ExtendWindow { until: 1600 }]);
        } else {
            assert!(extends.is_empty(), "{policy:?} × {scenario:?}: {extends:?}");
        }
        let holds = commands
            .iter()
            .filter(|c| matches!(c, Command::Hold { .. }))
            .count();
        let held = want.iter().any(|(_, d, _)| *d == Inconclusive);
        assert_eq!(holds, usize::from(held), "{policy:?} × {scenario:?}");
        // Nothing but a pass promotes; nothing but a failure rolls back.
        let promoted = commands
            .iter()
            .any(|c| matches!(c, Command::Promote { .. }));
        let rolled_back = is_rollback(&commands);
        let end = want.last().unwrap().1;
        assert_eq!(promoted, end == Pass, "{policy:?} × {scenario:?}");
        assert_eq!(rolled_back, end == Fail, "{policy:?} × {scenario:?}");
    }
}

#[test]
fn held_verdict_says_how_many_more_requests_are_needed() {
    // The case from the field: 0 exceptions in 341 canary requests when the window ends.
    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: OnInconclusive::Hold,
        ..config()
    });
    let load = |canary_requests| Load {
        canary_requests,
        canary_exceptions: 0,
        base_requests: 1000,
        base_exceptions: 5,
    };
    f.traffic(load(38), |_| {}); // reference sample
    for _ in 0..8 {
        f.traffic(load(38), |_| {});
    }
    let c = f.traffic(load(37), |_| {});
    let v = f.judge.verdict().clone();
    assert!(
        matches!(&c[..], [Command::Hold { verdict }, Command::SampleAt { at: 1330 }] if **verdict == v),
        "{c:?}"
    );
    assert_eq!(v.decision, Decision::Inconclusive);
    assert_eq!(v.failure, None);
    // min_requests (1000) − 341 = 659: fewer than the SPRT would need at these rates.
    assert_eq!(v.more_requests_needed, Some(659));
    // 341 requests in the 270 s between the first and the last sample.
    assert_eq!(v.eta_secs, Some((659.0f64 * 270.0 / 341.0).ceil() as u64));
    assert_eq!(
        v.reason,
        "inconclusive: 659 more requests needed at the current rate (about 522 s); \
         no canary exception yet, in 341 of the 1000 requests (canary.min_requests) that pass on that alone; \
         held: an operator decides (promote or roll back)"
    );
    // The figures move with the data while held; it is never promoted by itself.
    for _ in 0..30 {
        let c = f.traffic(load(38), |_| {});
        assert_eq!(c, vec![Command::SampleAt { at: f.t + 30 }]);
    }
    let v = f.judge.verdict();
    assert_eq!(v.decision, Decision::Inconclusive);
    assert_eq!(v.more_requests_needed, None, "{v:?}");
    assert!(
        v.reason.starts_with(&format!(
            "held for {}: the evidence is now complete",
            fleetgate_canary::judge::span(f.t - 1300)
        )),
        "{}",
        v.reason
    );
}

#[test]
fn needed_requests_come_from_the_sprt_when_the_canary_has_exceptions() {
    let mut f = Fleet::new(JudgeConfig {
        on_inconclusive: OnInconclusive::Hold,
        ..config()
    });
    // 100 requests per node per interval at 1% (1 exception per node per interval).
    for _ in 0..10 {
        f.traffic(Load::per_node(100, 1, 1), |_| {});
    }
    let v = f.judge.verdict();
    assert_eq!(v.decision, Decision::Inconclusive);
    let r = f.judge.rate_test();
    assert_eq!(r.canary_requests, 900);
    let expect = r.requests_to_accept(None).unwrap();
    assert_eq!(v.more_requests_needed, Some(expect));
    // At 1% with 4× the canary's traffic in the baseline, S drifts by about −0.0008
    // per canary request: a few thousand more requests.
    assert!((1000..5000).contains(&expect), "{expect}");
    assert_eq!(
        v.eta_secs,
        Some((expect as f64 * 270.0 / 900.0).ceil() as u64)
    );
    assert!(
        v.reason.starts_with(&format!(
            "inconclusive: {expect} more requests needed at the current rate"
        )),
        "{}",
        v.reason
    );
}

#[test]
fn hard_failures_while_extended_or_held_fail_at_once() {
    for policy in [OnInconclusive::Extend, OnInconclusive::Hold] {
        let mut f = Fleet::new(JudgeConfig {
            on_inconclusive: policy,
            max_window_secs: 600,
            ..config()
        });
        for _ in 0..12 {
            f.traffic(Load::per_node(10, 0, 0), |_| {});
        }
        assert!(!f.judge.is_decided(), "{policy:?}");
        // The canary goes silent after t = 1360.
        let last = f.t;
        let mut c = Vec::new();
        for _ in 0..3 {
            c = f.traffic(Load::per_node(10, 0, 0), |n| n.heartbeat_at = Some(last));
        }
        assert!(is_rollback(&c), "{policy:?}: {c:?}");
        let v = f.judge.verdict();
        assert_eq!(v.failure, Some(FailureKind::Hard), "{policy:?}");
        assert_eq!(v.at, 1450, "{policy:?}");
        // A crash loop while extended or held, too.
        let mut f = Fleet::new(JudgeConfig {
            on_inconclusive: policy,
            max_window_secs: 600,
            ..config()
        });
        for _ in 0..12 {
            f.traffic(Load::per_node(10, 0, 0), |_| {});
        }
        f.traffic(Load::per_node(10, 0, 0), |n| n.requests_total = 1);
        let c = f.traffic(Load::per_node(10, 0, 0), |n| n.requests_total = 0);
        assert!(is_rollback(&c), "{policy:?}: {c:?}");
        assert!(f.judge.verdict().reason.contains("crash loop"));
    }
}

#[test]
fn invalid_max_window_names_the_key() {
    let cfg = JudgeConfig {
        max_window_secs: 299,
        ..config()
    };
    let err = Judge::new(cfg, HASH, vec!["c".into()], Vec::new(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid canary setting canary.max_window_secs = 299: must be at least window_secs"
    );
}

#[test]
fn a_judge_persisted_with_on_insufficient_data_keeps_its_behaviour() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    let mut old = serde_json::to_value(&f.judge).unwrap();
    let cfg = old["config"].as_object_mut().unwrap();
    cfg.remove("on_inconclusive").unwrap();
    cfg.remove("max_window_secs").unwrap();
    cfg.insert("on_insufficient_data".into(), "fail".into());
    cfg.insert("max_extension_secs".into(), 900.into());
    let state = old.as_object_mut().unwrap();
    for key in ["first_sample_at", "last_sample_at", "held_since"] {
        state.remove(key).unwrap();
    }
    let j: Judge = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(j.config().on_inconclusive, OnInconclusive::Rollback);
    assert_eq!(j.config().max_window_secs, 1200);
    old["config"]["on_insufficient_data"] = "extend".into();
    let j: Judge = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(j.config().on_inconclusive, OnInconclusive::Extend);
    old["config"]
        .as_object_mut()
        .unwrap()
        .remove("on_insufficient_data");
    old["config"]
        .as_object_mut()
        .unwrap()
        .remove("max_extension_secs");
    let j: Judge = serde_json::from_value(old).unwrap();
    assert_eq!(j.config().on_inconclusive, OnInconclusive::Extend);
    assert_eq!(j.config().max_window_secs, 600);
    // Today's format round-trips.
    let again: Judge = serde_json::from_str(&serde_json::to_string(&f.judge).unwrap()).unwrap();
    assert_eq!(again, f.judge);
}

#[test]
fn verdict_json_stays_readable_both_ways() {
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    f.step(10, 10, |_| {});
    // Thick traffic, test undecided mid-window: the estimate is there…
    let v = f.judge.verdict().clone();
    assert!(v.more_requests_needed.is_some(), "{v:?}");
    let json = serde_json::to_value(&v).unwrap();
    assert!(json["more_requests_needed"].is_u64());
    // …and a verdict written before these fields existed still reads.
    let mut old = json.clone();
    for key in ["more_requests_needed", "eta_secs", "held_since"] {
        old.as_object_mut().unwrap().remove(key);
    }
    let back: Verdict = serde_json::from_value(old).unwrap();
    assert_eq!(back.more_requests_needed, None);
    assert_eq!(back.held_since, None);
    // Without an estimate the new fields are left out entirely.
    let mut f = Fleet::new(config());
    f.step(0, 0, |_| {});
    let c = f.step(0, 0, |n| n.code_hash = Some("evil".into()));
    assert!(is_rollback(&c));
    let json = serde_json::to_value(f.judge.verdict()).unwrap();
    for key in ["more_requests_needed", "eta_secs", "held_since"] {
        assert!(json.get(key).is_none(), "{key} in {json}");
    }
    assert_eq!(
        serde_json::to_value(Decision::Inconclusive).unwrap(),
        "inconclusive"
    );
}

// ---- pre-update history: each canary node against its own old rate ----------------

/// `c0` plus `b0..b3`, each node with its own natural rate (exceptions per 1000
/// requests), 10 intervals of history before t = 1000, then a 300 s window.
struct History {
    judge: Judge,
    totals: Vec<(u64, u64)>,
}

const IDS: [&str; 5] = ["c0", "b0", "b1", "b2", "b3"];

/// A judge of c0 against b0–b3 with 300 s of history (ten 30 s intervals).
fn history_judge() -> Judge {
    Judge::new(
        JudgeConfig {
            window_secs: 300,
            sample_interval_secs: 30,
            pre_window_secs: 300,
            ..JudgeConfig::default()
        },
        HASH,
        vec!["c0".to_owned()],
        IDS[1..].iter().map(|s| s.to_string()),
        1000,
    )
    .unwrap()
}

impl History {
    fn new(per_thousand: [u64; 5]) -> Self {
        let mut h = History {
            judge: history_judge(),
            totals: vec![(0, 0); 5],
        };
        for k in 0..=10u64 {
            if k > 0 {
                h.serve(per_thousand);
            }
            let cmds = h
                .judge
                .on_event(Event::History(h.sample(700 + 30 * k)))
                .unwrap();
            assert!(cmds.is_empty(), "{cmds:?}");
        }
        // The update restarts the canary: its counters start again.
        h.totals[0] = (0, 0);
        h
    }

    fn serve(&mut self, per_thousand: [u64; 5]) {
        for (t, e) in self.totals.iter_mut().zip(per_thousand) {
            t.0 += e;
            t.1 += 1000;
        }
    }

    fn sample(&self, at: u64) -> Sample {
        Sample {
            at,
            nodes: IDS
                .iter()
                .zip(&self.totals)
                .map(|(id, (e, n))| NodeReport {
                    node_id: id.to_string(),
                    heartbeat_at: Some(at),
                    healthy: Some(true),
                    code_hash: Some(HASH.into()),
                    exceptions_total: *e,
                    requests_total: *n,
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Runs the window at these rates; returns the final verdict.
    fn run(&mut self, per_thousand: [u64; 5]) -> Verdict {
        let mut at = 1000;
        self.judge.on_event(Event::Sample(self.sample(at))).unwrap();
        while !self.judge.is_decided() && at < 1300 {
            at += 30;
            self.serve(per_thousand);
            self.judge.on_event(Event::Sample(self.sample(at))).unwrap();
        }
        self.judge.verdict().clone()
    }
}

#[test]
fn a_canary_node_that_always_raised_more_is_judged_against_itself() {
    // c0 has always raised 30 per 1000, the baseline 10: the update changed nothing.
    let rates = [30, 10, 10, 10, 10];
    let mut h = History::new(rates);
    let v = h.run(rates);
    assert_eq!(v.decision, Decision::Pass, "{}", v.reason);
    let c = &v.criteria[0];
    assert_eq!(c.statistic["method"], "diff_in_diff");
    assert_eq!(c.figures["canary_history_requests"], 10_000);
    // Its own history, shrunk a little towards the fleet's rate by the spread prior.
    let increase = c.figures["estimate"]["increase"].as_f64().unwrap();
    assert!(increase.abs() < 0.05, "{increase}");
    // The same counts without history: 3× the baseline, rolled back.
    let mut f = Fleet::new(JudgeConfig {
        max_exception_rate_increase: 0.1,
        detect_exception_rate_increase: None,
        ..config()
    });
    f.step(0, 0, |_| {});
    let rolled_back = (0..3).any(|_| is_rollback(&f.step(10, 30, |_| {})));
    assert!(rolled_back, "{}", f.judge.verdict().reason);
}

#[test]
fn a_canary_at_three_times_its_own_old_rate_is_rolled_back() {
    // c0 used to raise 10 per 1000 and now 30, while its neighbours stay at 20 (a node
    // that always raised less than the rest now raises more): caught within a few intervals.
    let mut h = History::new([10, 20, 20, 20, 20]);
    let v = h.run([30, 20, 20, 20, 20]);
    assert_eq!(v.decision, Decision::Fail, "{}", v.reason);
    assert!(v.samples <= 4, "took {} samples", v.samples);
    assert!(
        v.reason.contains("against its own pre-update rate") && v.reason.contains("tolerance +10%"),
        "{}",
        v.reason
    );
}

#[test]
fn a_fleet_wide_change_is_not_blamed_on_the_canary() {
    // Every node doubles its rate in the window (a traffic mix or a dependency): the
    // baseline's change cancels it.
    let mut h = History::new([10, 10, 10, 10, 10]);
    let v = h.run([20, 20, 20, 20, 20]);
    assert_eq!(v.decision, Decision::Pass, "{}", v.reason);
    let change = v.criteria[0].figures["baseline_change"].as_f64().unwrap();
    assert!((change - 2.0).abs() < 1e-9, "{change}");
}

#[test]
fn history_must_come_before_the_window_and_the_first_sample() {
    let mut h = History::new([10; 5]);
    let err = h
        .judge
        .on_event(Event::History(h.sample(1001)))
        .unwrap_err();
    assert_eq!(
        err,
        JudgeError::MisplacedHistory {
            at: 1001,
            window_start: 1000
        }
    );
    let err = h.judge.on_event(Event::History(h.sample(600))).unwrap_err();
    assert_eq!(
        err,
        JudgeError::OutOfOrder {
            at: 600,
            last: 1000
        }
    );
    h.judge.on_event(Event::Sample(h.sample(1000))).unwrap();
    let err = h
        .judge
        .on_event(Event::History(h.sample(1000)))
        .unwrap_err();
    assert!(matches!(err, JudgeError::MisplacedHistory { .. }), "{err}");
}

#[test]
fn a_canary_restart_inside_the_history_ends_its_history() {
    // The canary's counters reset at 850: what it served after is not counted as its
    // old rate, and before that it has 5 intervals.
    let mut h = History {
        judge: Judge::new(
            JudgeConfig {
                window_secs: 300,
                sample_interval_secs: 30,
                ..JudgeConfig::default()
            },
            HASH,
            vec!["c0".to_owned()],
            IDS[1..].iter().map(|s| s.to_string()),
            1000,
        )
        .unwrap(),
        totals: vec![(0, 0); 5],
    };
    for k in 0..=10u64 {
        if k > 0 {
            h.serve([10; 5]);
        }
        if k == 5 {
            h.totals[0] = (0, 0);
        }
        h.judge
            .on_event(Event::History(h.sample(700 + 30 * k)))
            .unwrap();
    }
    h.totals[0] = (0, 0);
    let v = h.run([10; 5]);
    assert_eq!(v.criteria[0].figures["canary_history_requests"], 4_000);
    // 40 old exceptions alone are too few to pass a +50% test in ten intervals, but
    // every node ran alike before the update (the fleet's histories): that prior
    // makes up for the short history, and the alike canary passes.
    assert_eq!(v.decision, Decision::Pass, "{}", v.reason);
    assert_eq!(v.criteria[0].statistic["method"], "diff_in_diff");
}

#[test]
fn a_persisted_judge_with_history_resumes_identically() {
    let mut h = History::new([10, 12, 8, 10, 11]);
    h.judge.on_event(Event::Sample(h.sample(1000))).unwrap();
    let saved = serde_json::to_string(&h.judge).unwrap();
    let back: Judge = serde_json::from_str(&saved).unwrap();
    assert_eq!(back, h.judge);
}

#[test]
fn a_canary_restart_on_its_old_code_inside_the_history_keeps_counting() {
    // The canary's counters reset at 850 while it reports its old code (a reboot, the
    // provisioning): the counting goes on from zero, and all ten intervals are history.
    let mut h = History {
        judge: Judge::new(
            JudgeConfig {
                window_secs: 300,
                sample_interval_secs: 30,
                ..JudgeConfig::default()
            },
            HASH,
            vec!["c0".to_owned()],
            IDS[1..].iter().map(|s| s.to_string()),
            1000,
        )
        .unwrap(),
        totals: vec![(0, 0); 5],
    };
    for k in 0..=10u64 {
        if k > 0 {
            h.serve([10; 5]);
        }
        if k == 5 {
            h.totals[0] = (0, 0);
        }
        let mut old = h.sample(700 + 30 * k);
        for r in &mut old.nodes {
            r.code_hash = Some("0ld".into());
        }
        h.judge.on_event(Event::History(old)).unwrap();
    }
    h.totals[0] = (0, 0);
    let v = h.run([10; 5]);
    // 9 intervals × 1,000: all but the one the reset wiped (with the release's hash
    // reported, the history would have ended at the reset: 4,000, see above).
    assert_eq!(v.criteria[0].figures["canary_history_requests"], 9_000);
    assert_ne!(v.decision, Decision::Fail, "{}", v.reason);
}

/// A judge over `IDS` with 300 s of history that leaves out intervals on `revoked` code,
/// fed ten intervals in which node `i` serves 1,000 requests with `history(k)[i].1`
/// exceptions while running code `history(k)[i].0` (a node that changes code restarts,
/// its counters from zero). Its heartbeat names the code it runs, or with `lag` the code
/// it ran an interval before (as an agent does: the first heartbeat after a restart into
/// new code still names the old).
fn judge_with_history(
    revoked: &[&str],
    history: impl Fn(u64) -> [(&'static str, u64); 5],
) -> History {
    judge_with_lagging_history(revoked, false, history)
}

fn judge_with_lagging_history(
    revoked: &[&str],
    lag: bool,
    history: impl Fn(u64) -> [(&'static str, u64); 5],
) -> History {
    let mut h = History {
        judge: history_judge().with_revoked_code(revoked.iter().map(|s| s.to_string())),
        totals: vec![(0, 0); 5],
    };
    let mut code = history(0).map(|(c, _)| c);
    for k in 0..=10u64 {
        let now = history(k);
        let named = if lag { code } else { now.map(|(c, _)| c) };
        for (i, (c, e)) in now.iter().enumerate() {
            if *c != code[i] {
                h.totals[i] = (0, 0);
                code[i] = c;
            }
            if k > 0 {
                h.totals[i].0 += e;
                h.totals[i].1 += 1000;
            }
        }
        let mut s = h.sample(700 + 30 * k);
        for (r, c) in s.nodes.iter_mut().zip(named) {
            r.code_hash = Some(c.into());
        }
        h.judge.on_event(Event::History(s)).unwrap();
    }
    // The update restarts the canary: its counters start again.
    h.totals[0] = (0, 0);
    h
}

#[test]
fn a_baseline_node_that_ran_a_rolled_back_release_is_not_counted_on_it() {
    // b0 ran a rejected release (10× the exceptions) for the first four intervals of the
    // history, then was rolled back to the old code. That is not b0's natural rate: were
    // it counted, the baseline would seem to have halved its rate in the window, and the
    // canary, which runs exactly as before, would look twice as bad as it is.
    let fleet = |k: u64| {
        let b0 = if k <= 4 { ("bad", 100) } else { ("0ld", 10) };
        [("0ld", 10), b0, ("0ld", 10), ("0ld", 10), ("0ld", 10)]
    };
    let mut h = judge_with_history(&["bad"], fleet);
    let v = h.run([10; 5]);
    assert_eq!(v.decision, Decision::Pass, "{}", v.reason);
    let c = &v.criteria[0];
    assert_eq!(c.statistic["method"], "diff_in_diff");
    let change = c.figures["baseline_change"].as_f64().unwrap();
    assert!((change - 1.0).abs() < 1e-9, "baseline change {change}");
    let increase = c.figures["estimate"]["increase"].as_f64().unwrap();
    assert!(increase.abs() < 0.05, "{increase}");
    // Not told the release was rejected, the judge counts it and reads the healthy canary
    // as far worse than it is.
    let mut unaware = judge_with_history(&[], fleet);
    let v = unaware.run([10; 5]);
    let increase = v.criteria[0].figures["estimate"]["increase"]
        .as_f64()
        .unwrap();
    assert!(increase > 0.3, "{increase}");
}

#[test]
fn a_canary_node_that_ran_a_rolled_back_release_is_judged_against_its_old_code() {
    // c0 ran a rejected release (10× the exceptions) early in the history and was rolled
    // back; the new release doubles its old code's rate. Against a history that counted the
    // rejected release, the doubled rate would look like an improvement and pass.
    let fleet = |k: u64| {
        let c0 = if k <= 4 { ("bad", 100) } else { ("0ld", 10) };
        [c0, ("0ld", 10), ("0ld", 10), ("0ld", 10), ("0ld", 10)]
    };
    let mut h = judge_with_history(&["bad"], fleet);
    let v = h.run([20, 10, 10, 10, 10]);
    assert_eq!(v.decision, Decision::Fail, "{}", v.reason);
    // Its history: the five intervals on the old code after the rollback (the one in
    // which it switched back restarted it; counting resumed from zero).
    assert_eq!(v.criteria[0].figures["canary_history_requests"], 6_000);
    let mut unaware = judge_with_history(&[], fleet);
    let v = unaware.run([20, 10, 10, 10, 10]);
    assert_ne!(v.decision, Decision::Fail, "{}", v.reason);
}

#[test]
fn the_restart_into_a_rolled_back_release_is_left_out_though_its_heartbeat_names_the_old_code() {
    // As above, but each heartbeat names the code of the interval before: the first one
    // after c0's restart into the rejected release still says "0ld", with 10× the
    // exceptions. Held back until the next heartbeat names the rejected code, it is left
    // out; the restart back to the old code (named "bad" a beat late) is too, and counting
    // resumes after it.
    let fleet = |k: u64| {
        let c0 = if (3..=6).contains(&k) {
            ("bad", 100)
        } else {
            ("0ld", 10)
        };
        [c0, ("0ld", 10), ("0ld", 10), ("0ld", 10), ("0ld", 10)]
    };
    let mut h = judge_with_lagging_history(&["bad"], true, fleet);
    let v = h.run([20, 10, 10, 10, 10]);
    assert_eq!(v.decision, Decision::Fail, "{}", v.reason);
    // Intervals 1–2 and 8–10 on the old code; 3 (the restart, named "0ld") is held back
    // and dropped, 4–7 name "bad".
    let c = &v.criteria[0].figures;
    assert_eq!(c["canary_history_requests"], 5_000);
    assert_eq!(c["canary_history_exceptions"], 50);
}

#[test]
fn a_fleet_that_moved_to_a_completed_release_inside_the_history_keeps_all_of_it() {
    // Every node moved from v1 to v2 (a DEPLOY that completed) in the middle of the
    // history: not a rejected release, so every interval still counts — the judge is not
    // left with seconds of history after each rollout.
    let fleet = |k: u64| [(if k <= 4 { "v1" } else { "v2" }, 10); 5];
    let mut h = judge_with_history(&["bad"], fleet);
    let v = h.run([10; 5]);
    assert_eq!(v.decision, Decision::Pass, "{}", v.reason);
    // All ten intervals (the one cut by the restart into v2 counts from zero).
    assert_eq!(v.criteria[0].figures["canary_history_requests"], 10_000);
}

#[test]
fn spans_read_as_people_write_them() {
    use fleetgate_canary::judge::span;
    assert_eq!(span(0), "0s");
    assert_eq!(span(45), "45s");
    assert_eq!(span(252), "4m 12s");
    assert_eq!(span(3605), "1h 0m 5s");
}

#[test]
fn a_verdict_over_thousands_of_failing_nodes_names_a_few_and_counts_the_rest() {
    // 5,000 canary nodes go silent (a partition): the reason names MAX_NAMED of them
    // and counts the others, so it stays readable and fits a signed rollback order.
    let canary: Vec<String> = (0..5_000).map(|i| format!("canary-node-{i:05}")).collect();
    let baseline: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    let mut judge = Judge::new(config(), HASH, canary.clone(), baseline.clone(), 1000).unwrap();
    let report = |id: &String, at: u64| NodeReport {
        node_id: id.clone(),
        heartbeat_at: Some(at),
        healthy: Some(true),
        code_hash: Some(HASH.into()),
        requests_total: at,
        ..Default::default()
    };
    let sample = |at: u64, canary_at: u64| Sample {
        at,
        nodes: canary
            .iter()
            .map(|id| report(id, canary_at))
            .chain(baseline.iter().map(|id| report(id, at)))
            .collect(),
    };
    judge.on_event(Event::Sample(sample(1030, 1030))).unwrap();
    let c = judge.on_event(Event::Sample(sample(1120, 1030))).unwrap();
    assert!(is_rollback(&c));
    let reason = &judge.verdict().reason;
    assert!(
        reason.contains("lost heartbeat: canary-node-00000 silent for 90s"),
        "{reason}"
    );
    assert!(reason.contains("and 4990 more"), "{reason}");
    assert_eq!(
        reason.matches("silent for").count(),
        fleetgate_canary::MAX_NAMED
    );
    assert!(reason.len() < 1024, "{} bytes", reason.len());
}

#[test]
fn per_node_figures_are_bounded_and_keep_the_nodes_that_fail() {
    // 5,000 canary nodes, one of them (late in the order) on the wrong code: each
    // criterion's figures name at most MAX_NODE_FIGURES nodes, that one among them, and
    // count the rest, so a verdict does not grow with the fleet.
    let canary: Vec<String> = (0..5_000).map(|i| format!("canary-node-{i:05}")).collect();
    let baseline: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    let mut judge = Judge::new(config(), HASH, canary.clone(), baseline.clone(), 1000).unwrap();
    let odd = "canary-node-04321";
    let report = |id: &String, at: u64| NodeReport {
        node_id: id.clone(),
        heartbeat_at: Some(at),
        healthy: Some(true),
        code_hash: Some(if id == odd {
            "f".repeat(64)
        } else {
            HASH.into()
        }),
        requests_total: at,
        ..Default::default()
    };
    let nodes = |at: u64| {
        canary
            .iter()
            .chain(&baseline)
            .map(|id| report(id, at))
            .collect()
    };
    judge
        .on_event(Event::Sample(Sample {
            at: 1030,
            nodes: nodes(1030),
        }))
        .unwrap();
    let verdict = serde_json::to_value(judge.verdict()).unwrap();
    let criteria = verdict["criteria"].as_array().unwrap();
    let limit = fleetgate_canary::MAX_NODE_FIGURES;
    for name in ["health_check", "heartbeat", "integrity"] {
        let c = criteria
            .iter()
            .find(|c| c["criterion"] == name)
            .unwrap_or_else(|| panic!("no {name} in {verdict}"));
        let f = &c["figures"];
        assert_eq!(f["nodes"].as_object().unwrap().len(), limit, "{name}");
        assert_eq!(f["nodes_total"], 5_000, "{name}");
        assert_eq!(f["omitted"], 5_000 - limit, "{name}");
    }
    let integrity = criteria
        .iter()
        .find(|c| c["criterion"] == "integrity")
        .unwrap();
    assert_eq!(integrity["decision"], "fail", "{integrity}");
    assert_eq!(
        integrity["figures"]["nodes"][odd]["mismatched_code_hash"],
        "f".repeat(64),
        "{integrity}"
    );
    assert_eq!(verdict["canary"].as_array().unwrap().len(), limit);
    assert_eq!(verdict["canary_nodes"], 5_000);
    let len = verdict.to_string().len();
    assert!(len < 64 * 1024, "{len} bytes");
}
