//! The demo's scripted scenario on a prepared fleet: v2.0.0 through all seven stages,
//! v3.0.0 caught by the canary, then the timeline, the checks and the summary.

use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_runtime::Orchestrator;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::fleet::{Fleet, wait_converged};

/// What the scenario found.
pub(super) struct Report {
    /// Each check and whether it held.
    pub(super) checks: Vec<(String, bool)>,
    /// node id → code hash after v3.0.0 (shown when a node is not back on v2.0.0).
    hashes: BTreeMap<String, Option<String>>,
    /// Nodes back on / still on v2.0.0 after v3.0.0.
    back_on_v2: usize,
}

impl Report {
    /// Every check held.
    pub(super) fn all_ok(&self) -> bool {
        self.checks.iter().all(|(_, ok)| *ok)
    }
}

/// Runs v2.0.0 (good) and v3.0.0 (bad) through the pipeline on `fleet`.
pub(super) fn run(fleet: &Fleet, o: &Orchestrator) -> anyhow::Result<Report> {
    let mut show = |p| println!("    {}", crate::output::progress_line(&p));
    let mut checks: Vec<(String, bool)> = Vec::new();

    // v2.0.0 through all seven stages.
    println!("\n== release v2.0.0 (good) ==");
    o.start("v2.0.0", None)?;
    let s2 = unattended(o, &mut show, "v2.0.0")?;
    print_timeline(&s2);
    let v2_hash = s2.code_hash.clone().unwrap_or_default();
    let (n2, _) = wait_converged(fleet, &v2_hash, Duration::from_secs(30));
    checks.push((
        "v2.0.0 run ended `completed`".into(),
        s2.stage == Stage::Completed,
    ));
    checks.push((
        format!(
            "every node runs v2.0.0 ({n2}/{} by code hash)",
            fleet.nodes.len()
        ),
        n2 == fleet.nodes.len(),
    ));

    // v3.0.0: the canary catches it.
    println!("\n== release v3.0.0 (bad: 10x exception rate) ==");
    o.start("v3.0.0", None)?;
    let s3 = unattended(o, &mut show, "v3.0.0")?;
    print_timeline(&s3);
    if let Some(r) = s3.gate_results.get(&Stage::Canary) {
        print_canary(&r.verdict.figures);
    }
    let (n3, hashes) = wait_converged(fleet, &v2_hash, Duration::from_secs(30));
    let caught = s3.stage == Stage::RolledBack
        && s3
            .gate_results
            .get(&Stage::Canary)
            .is_some_and(|r| r.verdict.outcome == Outcome::Failed);
    checks.push((
        "v3.0.0 caught by the canary, run ended `rolled_back`".into(),
        caught,
    ));
    checks.push((
        "the rollback order was delivered (outbox empty)".into(),
        s3.outbox.is_empty(),
    ));
    checks.push((
        format!(
            "every node back on / still on v2.0.0 ({n3}/{} by code hash)",
            fleet.nodes.len()
        ),
        n3 == fleet.nodes.len(),
    ));
    Ok(Report {
        checks,
        hashes,
        back_on_v2: n3,
    })
}

/// Runs to the end; a run that pauses (a canary held as inconclusive waits for an
/// operator) ends the demo with an error saying so, instead of waiting forever.
fn unattended(
    o: &Orchestrator,
    show: &mut dyn FnMut(fleetgate_runtime::Progress),
    version: &str,
) -> anyhow::Result<PipelineState> {
    let s = o.run_unattended(show)?;
    if let Some(p) = &s.paused {
        anyhow::bail!(
            "the {version} run was paused at {} by {}: {} — an operator decides with `fleetgate promote` or `fleetgate abort`; the unattended demo stops here",
            s.stage.as_str(),
            p.by,
            p.reason
        );
    }
    Ok(s)
}

/// The summary: each check, and what each node runs if one is not back on v2.0.0.
pub(super) fn print_summary(report: &Report, fleet: &Fleet, elapsed: Duration) {
    println!("\n== summary ({:.0}s) ==", elapsed.as_secs_f64());
    for (k, ok) in &report.checks {
        println!("  [{}] {k}", if *ok { "ok" } else { "FAILED" });
    }
    if report.back_on_v2 != fleet.nodes.len() {
        for (id, h) in &report.hashes {
            println!("    {id}: {}", h.as_deref().unwrap_or("no answer"));
        }
    }
}

/// How to poke at a fleet left running with `--keep`.
pub(super) fn print_keep_hints(fleet: &Fleet, config: &Path) {
    println!(
        "\nthe fleet keeps running (agents, apps); the heartbeat endpoint stops with this process. Try:"
    );
    println!("  fleetgate --config {} status", config.display());
    println!("  fleetgate --config {} fleet list", config.display());
    println!("  fleetgate --config {} canary-health", config.display());
    if let Some(n) = fleet.nodes.first() {
        println!("  curl {}/status", n.address);
    }
    println!(
        "  fleetgate --config {} tools call check_upgrade_status   # what an agent sees",
        config.display()
    );
    println!(
        "  fleetgate --config {} mcp   # the agent tools for an MCP client",
        config.display()
    );
}

fn print_canary(f: &serde_json::Value) {
    println!("    canary verdict: {}", f["reason"].as_str().unwrap_or(""));
    for c in f["criteria"].as_array().into_iter().flatten() {
        println!(
            "      {:<22} {:<12} {}",
            c["criterion"].as_str().unwrap_or("?"),
            c["decision"].as_str().unwrap_or("?"),
            c["detail"].as_str().unwrap_or("")
        );
    }
}

fn print_timeline(state: &PipelineState) {
    println!(
        "  timeline of {} (run {}):",
        state.version,
        state.run_id.as_deref().unwrap_or("?")
    );
    let t0 = state.started_at.unwrap_or(0.0);
    for h in &state.stage_history {
        let why = h
            .reason
            .as_deref()
            .map(|r| format!("  ({})", r.lines().next().unwrap_or("")))
            .unwrap_or_default();
        println!("    +{:>6.2}s  {}{}", h.at - t0, h.stage, why);
    }
}
