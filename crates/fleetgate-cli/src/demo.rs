//! `fleetgate demo`: a throwaway workspace with the sample application in a git
//! repository, run through the pipeline with progress, a timeline and a summary.
//!
//! The sample application's files are embedded in the binary, so the demo works from an
//! installed `fleetgate` as well as from a checkout.

use anyhow::Context;
use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_runtime::{Orchestrator, load_config};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The sample application (examples/sample-app), embedded.
pub const SAMPLE_APP: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../examples/sample-app/README.md"),
    ),
    (
        "app.conf",
        include_str!("../../../examples/sample-app/app.conf"),
    ),
    (
        "build.sh",
        include_str!("../../../examples/sample-app/build.sh"),
    ),
    (
        "test.sh",
        include_str!("../../../examples/sample-app/test.sh"),
    ),
    (
        "audit.sh",
        include_str!("../../../examples/sample-app/audit.sh"),
    ),
    (
        "bench.sh",
        include_str!("../../../examples/sample-app/bench.sh"),
    ),
    (
        "tests/config_has_name.t",
        include_str!("../../../examples/sample-app/tests/config_has_name.t"),
    ),
    (
        "tests/build_artifact.t",
        include_str!("../../../examples/sample-app/tests/build_artifact.t"),
    ),
    (
        "tests/figures_are_numbers.t",
        include_str!("../../../examples/sample-app/tests/figures_are_numbers.t"),
    ),
    (
        "policy/guardrails.toml",
        include_str!("../../../examples/sample-app/policy/guardrails.toml"),
    ),
    (
        "fleetgate.toml",
        include_str!("../../../examples/sample-app/fleetgate.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/sample-app/.gitignore"),
    ),
];

/// Options of `fleetgate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Workspace directory (default: a new directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the workspace afterwards and print how to poke at it.
    #[arg(long)]
    pub keep: bool,
}

fn commit_all(repo: &git2::Repository, message: &str, tag: &str) -> anyhow::Result<git2::Oid> {
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("fleetgate demo", "demo@fleetgate.invalid")?;
    let parents: Vec<git2::Commit<'_>> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    let oid = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parent_refs)?;
    let obj = repo.find_object(oid, None)?;
    repo.tag_lightweight(tag, &obj, false)?;
    Ok(oid)
}

/// Write the sample application into `dir` as a git repository tagged `v1.0.0`.
pub fn create_sample_repo(dir: &Path) -> anyhow::Result<()> {
    for (rel, text) in SAMPLE_APP {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("failed to write {}", p.display()))?;
    }
    let repo = git2::Repository::init(dir)?;
    commit_all(&repo, "sample-app v1.0.0", "v1.0.0")?;
    create_keys(dir)?;
    Ok(())
}

/// A release signing key (`keys/release.key`, mode 0600) and a 1-of-1 trust file
/// (`keys/trust.json`) for the sample app; `keys/` is git-ignored.
pub fn create_keys(dir: &Path) -> anyhow::Result<()> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let out = fleetgate_trust::keygen(&keys.join("release.key"), false)?;
    let public = fleetgate_trust::PublicKey::from_hex(&out.public_key_hex)?;
    let ring = fleetgate_trust::Keyring::single(public);
    fleetgate_store::write_atomic(&keys.join("trust.json"), &ring.to_bytes(), None)?;
    Ok(())
}

/// Run the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let d =
                std::env::temp_dir().join(format!("fleetgate-demo-{secs}-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
    };
    let app = dir.join("sample-app");
    if app.exists() {
        anyhow::bail!("{} already exists: pass an empty --dir", app.display());
    }
    std::fs::create_dir_all(&app)?;
    println!("fleetgate demo — workspace {}", dir.display());
    println!(
        "  sample application: {} (git repository, tag v1.0.0)",
        app.display()
    );
    create_sample_repo(&app)?;
    let config = app.join("fleetgate.toml");
    let (cfg, base) = load_config(Some(&config))?;
    let o = Orchestrator::open(cfg, &base)?;
    println!("\n== release v1.0.0 ==");
    o.start("v1.0.0", None)?;
    let mut show = |p| println!("  {}", crate::output::progress_line(&p));
    let state = o.run(&mut show)?;
    println!();
    print_timeline(&state);
    let ok = verdict(&state);
    println!("\n== summary ==");
    for line in &ok.1 {
        println!("  {line}");
    }
    if args.keep {
        println!("\nworkspace kept. Try:");
        println!("  fleetgate --config {} status", config.display());
        println!("  fleetgate --config {} bench history", config.display());
    } else {
        drop(o);
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("failed to remove {}", dir.display()))?;
    }
    if ok.0 {
        println!("\ndemo OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\ndemo FAILED: the pipeline did not behave as described above");
        Ok(ExitCode::from(crate::exit::ERROR))
    }
}

fn print_timeline(state: &PipelineState) {
    println!(
        "timeline of run {}:",
        state.run_id.as_deref().unwrap_or("?")
    );
    let t0 = state.started_at.unwrap_or(0.0);
    for h in &state.stage_history {
        let why = h
            .reason
            .as_deref()
            .map(|r| format!("  ({})", r.lines().next().unwrap_or("")))
            .unwrap_or_default();
        println!("  +{:>6.2}s  {}{}", h.at - t0, h.stage, why);
    }
}

/// What this build of the demo expects: every gate that exists passes, and the first
/// stage whose component is not wired in yet (CANARY) fails closed — it never passes —
/// and, since no node was contacted, the rollback order has nobody to tell.
fn verdict(state: &PipelineState) -> (bool, Vec<String>) {
    let mut lines = Vec::new();
    let mut ok = true;
    for st in [
        Stage::Building,
        Stage::Testing,
        Stage::Auditing,
        Stage::Benchmarking,
        Stage::Signing,
    ] {
        let passed = state
            .gate_results
            .get(&st)
            .is_some_and(|r| r.verdict.outcome == Outcome::Passed && !r.verdict.skipped);
        ok &= passed;
        lines.push(format!(
            "{:<10} {}",
            st.gate_name(),
            if passed { "passed" } else { "DID NOT PASS" }
        ));
    }
    let closed = state.stage == Stage::RolledBack
        && state.outbox.is_empty()
        && state
            .gate_results
            .get(&Stage::Canary)
            .is_some_and(|r| r.verdict.outcome == Outcome::Failed);
    ok &= closed;
    lines.push(format!(
        "{:<10} {}",
        "CANARY",
        if closed { "failed closed: the fleet is not wired into this build yet (as expected); run rolled_back" } else { "UNEXPECTED" }
    ));
    if let Some(m) = &state.manifest {
        lines.push(format!(
            "manifest   sequence {} signed by {}",
            m["sequence"], m["key_ids"]
        ));
    }
    (ok, lines)
}
