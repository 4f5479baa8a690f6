//! The gates. Each evaluation returns a verdict (never an `Err`): anything that goes
//! wrong — a missing command, report, key or fleet — is a failed verdict that says what
//! is missing and what to do.

use crate::bench_store::{self, Snapshot};
use crate::checkout::checkout;
use crate::codehash::{code_hash_at, sha256_file};
use crate::exec::run_shell;
use crate::{RuntimeError, junit, now};
use fleetgate_core::bench::{ComparePolicy, compare, parse_results};
use fleetgate_core::config::Config;
use fleetgate_core::{GateFacts, PipelineState, Stage, Verdict, Version};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a gate needs to know.
#[derive(Debug, Clone)]
pub struct GateContext {
    /// The validated configuration.
    pub cfg: Config,
    /// Directory of the config file (paths are relative to it).
    pub base: PathBuf,
    /// The repository of the software being released.
    pub repo: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

impl GateContext {
    fn checkout_dir(&self, state: &PipelineState) -> PathBuf {
        let run = state.run_id.clone().unwrap_or_else(|| "run".into());
        self.state_dir.join("work").join(run)
    }

    fn log_path(&self, state: &PipelineState, stage: Stage) -> PathBuf {
        let run = state.run_id.clone().unwrap_or_else(|| "run".into());
        self.state_dir
            .join("logs")
            .join(run)
            .join(format!("{}.log", stage.as_str()))
    }

    fn env(&self, state: &PipelineState, stage: Stage) -> Vec<(&'static str, String)> {
        vec![
            ("FLEETGATE_VERSION", state.version.clone()),
            ("FLEETGATE_GIT_SHA", state.git_sha.clone()),
            ("FLEETGATE_RUN_ID", state.run_id.clone().unwrap_or_default()),
            ("FLEETGATE_STAGE", stage.as_str().to_owned()),
            ("FLEETGATE_STATE_DIR", self.state_dir.display().to_string()),
        ]
    }
}

fn timeout(t: Option<i64>) -> Duration {
    Duration::from_secs(t.and_then(|t| u64::try_from(t).ok()).unwrap_or(3600))
}

/// Evaluate the gate of `stage` for the run in `state`.
pub fn evaluate(ctx: &GateContext, state: &PipelineState, stage: Stage) -> (Verdict, GateFacts) {
    let r = match stage {
        Stage::Building => build(ctx, state),
        Stage::Testing => test(ctx, state).map(|v| (v, GateFacts::default())),
        Stage::Auditing => audit(ctx, state).map(|v| (v, GateFacts::default())),
        Stage::Benchmarking => benchmark(ctx, state).map(|v| (v, GateFacts::default())),
        Stage::Signing => Ok((sign_unavailable(ctx), GateFacts::default())),
        Stage::Canary => Ok((
            Verdict::failed(
                "CANARY gate unavailable: this build has no fleet registry to select canary nodes from \
                 (the fleet/canary component is not wired into the pipeline yet); the run cannot be \
                 deployed and fails closed",
                json!({"missing": "fleet registry"}),
            ),
            GateFacts::default(),
        )),
        Stage::Deploying => Ok((
            Verdict::failed(
                "DEPLOY gate unavailable: this build has no gossip dissemination wired into the \
                 pipeline yet; the run fails closed",
                json!({"missing": "gossip dissemination"}),
            ),
            GateFacts::default(),
        )),
        Stage::Idle | Stage::Completed | Stage::RolledBack | Stage::Failed => Ok((
            Verdict::failed(format!("`{stage}` has no gate"), serde_json::Value::Null),
            GateFacts::default(),
        )),
    };
    match r {
        Ok(v) => v,
        Err(e) => (
            Verdict::failed(
                format!("{} gate could not run: {e}", stage.gate_name()),
                json!({"error": e.to_string()}),
            ),
            GateFacts::default(),
        ),
    }
}

fn sign_unavailable(ctx: &GateContext) -> Verdict {
    let _ = ctx;
    Verdict::failed(
        "SIGN gate unavailable: release signing is not wired into the pipeline in this build; \
         no manifest can be produced, so the run fails closed",
        json!({"missing": "release signing"}),
    )
}

fn missing_command(stage: Stage, key: &str) -> Verdict {
    Verdict::failed(
        format!(
            "no {} command configured: set `[stages.{key}] command = \"…\"` in fleetgate.toml \
             (or `skip = \"reason\"` to skip it explicitly)",
            stage.gate_name()
        ),
        json!({"missing": format!("stages.{key}.command")}),
    )
}

/// Run a configured command in the run's checkout; Ok(None) when it exited 0.
fn run_step(
    ctx: &GateContext,
    state: &PipelineState,
    stage: Stage,
    command: &str,
    t: Option<i64>,
) -> Result<(Option<Verdict>, serde_json::Value, PathBuf), RuntimeError> {
    let dir = checkout(
        &ctx.repo,
        &state.git_sha,
        &ctx.checkout_dir(state),
        stage == Stage::Building,
    )?;
    let log = ctx.log_path(state, stage);
    let limit = timeout(t);
    let out = run_shell(command, &dir, &ctx.env(state, stage), limit, &log)?;
    let figures = json!({
        "command": command, "exit_code": out.code, "timed_out": out.timed_out,
        "seconds": (out.seconds * 1000.0).round() / 1000.0, "log": log.display().to_string(),
    });
    if out.success() {
        Ok((None, figures, dir))
    } else {
        let detail = format!(
            "{} command `{}` {}; output tail:\n{}",
            stage.gate_name(),
            command,
            out.describe(limit),
            if out.tail.is_empty() {
                "(no output)".to_owned()
            } else {
                out.tail.clone()
            }
        );
        Ok((Some(Verdict::failed(detail, figures.clone())), figures, dir))
    }
}

fn build(ctx: &GateContext, state: &PipelineState) -> Result<(Verdict, GateFacts), RuntimeError> {
    let hash = code_hash_at(&ctx.repo, &state.git_sha, &ctx.cfg.code_hash)?;
    let facts = GateFacts {
        code_hash: Some(hash.code_hash.clone()),
        ..GateFacts::default()
    };
    let mut figures = json!({
        "code_hash": hash.code_hash, "file_manifest_hash": hash.file_manifest_hash,
        "files": hash.files.len(), "commit": hash.commit,
    });
    let b = &ctx.cfg.stages.build;
    if let Some(reason) = &b.skip {
        let mut v = Verdict::skipped(format!(
            "build command: {reason} (code hash {} computed)",
            hash.code_hash
        ));
        v.figures = figures;
        return Ok((v, facts));
    }
    let Some(cmd) = &b.command else {
        return Ok((missing_command(Stage::Building, "build"), facts));
    };
    let (failed, run, _) = run_step(ctx, state, Stage::Building, cmd, b.timeout_secs)?;
    figures["build"] = run;
    if let Some(mut v) = failed {
        v.figures = figures;
        return Ok((v, facts));
    }
    Ok((
        Verdict::passed(
            format!(
                "code hash {} over {} files; build command exited 0",
                hash.code_hash,
                hash.files.len()
            ),
            figures,
        ),
        facts,
    ))
}

fn test(ctx: &GateContext, state: &PipelineState) -> Result<Verdict, RuntimeError> {
    let t = &ctx.cfg.stages.test;
    if let Some(reason) = &t.skip {
        return Ok(Verdict::skipped(reason.clone()));
    }
    let Some(cmd) = &t.command else {
        return Ok(missing_command(Stage::Testing, "test"));
    };
    let Some(report) = &t.junit_report else {
        return Ok(Verdict::failed(
            "no JUnit report configured: set `[stages.test] junit_report = \"path/to/junit.xml\"` \
             (the TEST gate only passes on a report it has read)",
            json!({"missing": "stages.test.junit_report"}),
        ));
    };
    let dir = checkout(&ctx.repo, &state.git_sha, &ctx.checkout_dir(state), false)?;
    let report_path = dir.join(report);
    // A report left from an earlier attempt must never be read as this run's result.
    let _ = std::fs::remove_file(&report_path);
    let (failed, run, _) = run_step(ctx, state, Stage::Testing, cmd, t.timeout_secs)?;
    let counts = match junit::read_counts(&report_path) {
        Ok(c) => c,
        Err(e) => {
            let why = failed
                .as_ref()
                .map(|f| format!(" (the test command also failed: {})", f.detail))
                .unwrap_or_default();
            return Ok(Verdict::failed(
                format!("TEST gate: {e}{why}"),
                json!({"run": run, "report": report}),
            ));
        }
    };
    let mut v = counts.verdict(ctx.cfg.min_pass_rate());
    v.figures["run"] = run;
    v.figures["report"] = json!(report);
    if failed.is_some() && v.outcome == fleetgate_core::Outcome::Passed {
        v.detail = format!(
            "{} (the test command exited non-zero, but the report's pass rate meets the minimum)",
            v.detail
        );
    }
    Ok(v)
}

fn audit(ctx: &GateContext, state: &PipelineState) -> Result<Verdict, RuntimeError> {
    let a = &ctx.cfg.stages.audit;
    if let Some(reason) = &a.skip {
        return Ok(Verdict::skipped(reason.clone()));
    }
    let Some(cmd) = &a.command else {
        return Ok(missing_command(Stage::Auditing, "audit"));
    };
    let (failed, run, dir) = run_step(ctx, state, Stage::Auditing, cmd, a.timeout_secs)?;
    if let Some(v) = failed {
        return Ok(v);
    }
    let mut checked = Vec::new();
    let mut bad = Vec::new();
    for (rel, pinned) in &a.guardrails {
        let p = dir.join(rel);
        match sha256_file(&p) {
            Ok(actual) if actual.eq_ignore_ascii_case(pinned) => {
                checked.push(json!({"file": rel, "sha256": actual}))
            }
            Ok(actual) => bad.push(format!("{rel}: sha256 {actual}, pinned {pinned}")),
            Err(e) => bad.push(format!(
                "{rel}: cannot be read in the release checkout ({e})"
            )),
        }
    }
    let figures = json!({"run": run, "guardrails_checked": checked, "guardrail_mismatches": bad});
    if !bad.is_empty() {
        return Ok(Verdict::failed(
            format!(
                "guardrail files do not match their pins: {}",
                bad.join("; ")
            ),
            figures,
        ));
    }
    Ok(Verdict::passed(
        format!(
            "audit command exited 0; {} guardrail file(s) match their pins",
            checked.len()
        ),
        figures,
    ))
}

/// Run the benchmark command in `dir` and read its results (used by the gate and by
/// `bench capture`).
pub fn capture(
    ctx: &GateContext,
    state: &PipelineState,
    tier: &str,
) -> Result<Result<Snapshot, Verdict>, RuntimeError> {
    let b = &ctx.cfg.stages.benchmark;
    let Some(cmd) = &b.command else {
        return Ok(Err(missing_command(Stage::Benchmarking, "benchmark")));
    };
    let Some(results) = &b.results else {
        return Ok(Err(Verdict::failed(
            "no benchmark results file configured: set `[stages.benchmark] results = \"path/to/bench.json\"`",
            json!({"missing": "stages.benchmark.results"}),
        )));
    };
    let dir = checkout(&ctx.repo, &state.git_sha, &ctx.checkout_dir(state), false)?;
    let results_path = dir.join(results);
    let _ = std::fs::remove_file(&results_path);
    let (failed, run, _) = run_step(ctx, state, Stage::Benchmarking, cmd, b.timeout_secs)?;
    if let Some(v) = failed {
        return Ok(Err(v));
    }
    let text = match std::fs::read_to_string(&results_path) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Err(Verdict::failed(
                format!(
                    "the benchmark command exited 0 but its results file {results} cannot be read: {e}"
                ),
                json!({"run": run}),
            )));
        }
    };
    match parse_results(&text) {
        Ok(benchmarks) => Ok(Ok(Snapshot {
            version: state.version.clone(),
            git_sha: state.git_sha.clone(),
            captured_at: now(),
            tier: tier.to_owned(),
            benchmarks,
        })),
        Err(e) => Ok(Err(Verdict::failed(
            format!("{results}: {e}"),
            json!({"run": run}),
        ))),
    }
}

/// The comparison policy from the config.
pub fn policy(cfg: &Config) -> ComparePolicy {
    ComparePolicy {
        tolerance: cfg.bench_tolerance(),
        tolerances: cfg.stages.benchmark.tolerances.clone(),
        directions: cfg.stages.benchmark.directions.clone(),
    }
}

fn benchmark(ctx: &GateContext, state: &PipelineState) -> Result<Verdict, RuntimeError> {
    if let Some(reason) = &ctx.cfg.stages.benchmark.skip {
        return Ok(Verdict::skipped(reason.clone()));
    }
    let snap = match capture(ctx, state, "gate")? {
        Ok(s) => s,
        Err(v) => return Ok(v),
    };
    bench_store::save(&ctx.state_dir, &snap)?;
    let Some(last) = &state.last_completed else {
        return Ok(Verdict::passed(
            format!(
                "first run: no completed version to compare against; stored {} benchmark(s) as the baseline for the next run",
                snap.benchmarks.len()
            ),
            json!({"baseline": null, "benchmarks": snap.benchmarks}),
        ));
    };
    let base_version = Version::parse(&last.version)?;
    let Some(base) = bench_store::load(&ctx.state_dir, &base_version)? else {
        return Ok(Verdict::failed(
            format!(
                "the last completed version {} has no benchmark snapshot in {}; cannot compare (capture one with `fleetgate bench capture {}`)",
                last.version,
                bench_store::dir(&ctx.state_dir).display(),
                last.version
            ),
            json!({"baseline": last.version}),
        ));
    };
    let report = compare(&base.benchmarks, &snap.benchmarks, &policy(&ctx.cfg));
    let figures = json!({"baseline": base.version, "comparison": report});
    if report.passed() {
        Ok(Verdict::passed(
            format!(
                "{} benchmark(s) match or beat {} within tolerance",
                report.benchmarks.len(),
                base.version
            ),
            figures,
        ))
    } else {
        Ok(Verdict::failed(
            format!(
                "regression against {}: {}",
                base.version,
                report.failure_summary()
            ),
            figures,
        ))
    }
}

/// Relative paths in the config are relative to the config file's directory.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}
