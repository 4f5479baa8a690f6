//! Behaviour of the canary judge, one scenario per criterion, through one `Fleet` helper.

use fleetgate_canary::{
    BenchSpec, Command, Criterion, CriterionDecision, Decision, Direction, Event, FailureKind,
    Judge, JudgeConfig, JudgeError, NodeReport, OnInsufficientData, Sample,
};

const HASH: &str = "abc123";

/// A tiny scripted fleet: canary `c0`, baseline `b0..b3`, 30 s samples, 300 s window.
struct Fleet {
    judge: Judge,
    t: u64,
    nodes: Vec<NodeReport>,
}

fn config() -> JudgeConfig {
    JudgeConfig {
        window_secs: 300,
        sample_interval_secs: 30,
        heartbeat_timeout_secs: 60,
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
        self.t += 30;
        for n in &mut self.nodes {
            n.requests_total += 1000;
            n.exceptions_total += if n.node_id == "c0" { canary } else { base };
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
    assert_eq!(crit[0]["threshold"]["max_exception_rate_increase"], 0.5);
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
    assert!(v.reason.contains("1.50x the baseline"), "{}", v.reason);
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
    let mut f = Fleet::new(bench_config(Direction::LowerIsBetter));
    f.step(0, 0, |_| {});
    let c = f.run_healthy(9);
    assert!(is_rollback(&c));
    let v = f.judge.verdict();
    assert_eq!(v.failure, Some(FailureKind::InsufficientData));
    assert!(v.reason.starts_with("insufficient data"), "{}", v.reason);
}

#[test]
fn no_data_fails_with_insufficient_data_or_extends() {
    // Nodes heartbeat but serve no traffic at all.
    let mut f = Fleet::new(config());
    let mut c = Vec::new();
    for _ in 0..10 {
        c = f.step(0, 0, |n| n.requests_total = 0);
        for n in &mut f.nodes {
            n.requests_total = 0;
        }
    }
    assert!(is_rollback(&c));
    assert_eq!(
        f.judge.verdict().failure,
        Some(FailureKind::InsufficientData)
    );

    let cfg = JudgeConfig {
        on_insufficient_data: OnInsufficientData::Extend,
        max_extension_secs: 60,
        ..config()
    };
    let mut f = Fleet::new(cfg);
    for _ in 0..9 {
        f.step(0, 0, |_| {});
        for n in &mut f.nodes {
            n.requests_total = 0;
        }
    }
    let c = f.step(0, 0, |_| {});
    assert_eq!(c[0], Command::ExtendWindow { until: 1360 });
    assert_eq!(f.judge.verdict().decision, Decision::Pending);
    // Traffic arrives during the extension: enough requests with zero exceptions pass.
    let c = f.step(0, 0, |_| {});
    assert!(matches!(&c[..], [Command::Promote { .. }]), "{c:?}");
}

#[test]
fn extension_ends_in_failure_when_data_never_comes() {
    let cfg = JudgeConfig {
        on_insufficient_data: OnInsufficientData::Extend,
        max_extension_secs: 60,
        ..config()
    };
    let mut f = Fleet::new(cfg);
    let mut c = Vec::new();
    for _ in 0..12 {
        c = f.step(0, 0, |_| {});
        for n in &mut f.nodes {
            n.requests_total = 0;
        }
    }
    assert!(is_rollback(&c), "{c:?}");
    assert_eq!(
        f.judge.verdict().failure,
        Some(FailureKind::InsufficientData)
    );
}

#[test]
fn no_baseline_says_how_to_fix_it() {
    let mut j = Judge::new(config(), HASH, vec!["c0".to_owned()], Vec::new(), 0).unwrap();
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
        j.verdict()
            .reason
            .contains("canary.baseline_exception_rate"),
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
        "invalid canary setting canary.max_exception_rate_increase = -1: must be a finite number > 0"
    );
    let err = Judge::new(config(), HASH, Vec::new(), Vec::new(), 0).unwrap_err();
    assert_eq!(err, JudgeError::EmptyCanary);
    let err = Judge::new(config(), HASH, vec!["x".into()], vec!["x".into()], 0).unwrap_err();
    assert_eq!(err, JudgeError::OverlappingSets("x".into()));
}
