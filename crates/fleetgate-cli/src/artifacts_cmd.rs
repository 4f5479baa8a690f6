//! `fleetgate artifacts export DIR`: the run's built artifacts, laid out as
//! `DIR/<sha256>` for the static server or object store of `[artifacts] base_url`.

use crate::{open, print_json};
use anyhow::bail;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `fleetgate artifacts …`.
#[derive(Debug, Subcommand)]
pub enum ArtifactsCmd {
    /// Copy the built artifacts of the current (or last) run — the files BUILD stored and
    /// SIGN listed in the signed manifest — into DIR, each named by its SHA-256 (checked
    /// as copied; files already there with the right digest are kept). Upload DIR to
    /// where `[artifacts] base_url` points: CANARY holds until every one is served there.
    Export {
        /// The directory to fill (created if missing).
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `artifacts` command.
pub fn run(cfg_path: Option<&Path>, cmd: ArtifactsCmd) -> anyhow::Result<ExitCode> {
    let ArtifactsCmd::Export { dir, json } = cmd;
    let o = open(cfg_path, false)?;
    let state = o.status()?;
    let listed = match fleetgate_runtime::artifacts::recorded(&state) {
        None => bail!(
            "run {} ({}) has no built artifacts: BUILD has not run yet, or `[stages.build] artifacts` is not set",
            state.run_id.as_deref().unwrap_or("none"),
            if state.version.is_empty() {
                "no version"
            } else {
                &state.version
            }
        ),
        Some(Err(e)) => bail!("{e}"),
        Some(Ok(list)) => list,
    };
    let exported = match fleetgate_runtime::artifacts::export(o.store().path(), &listed, &dir)? {
        Ok(e) => e,
        Err(e) => bail!("{e}"),
    };
    if json {
        print_json(&serde_json::json!({
            "version": state.version,
            "run_id": state.run_id,
            "dir": dir,
            "artifacts": exported,
        }))?;
    } else {
        for e in &exported {
            println!(
                "{} {}  {} ({} bytes)",
                if e.copied { "copied " } else { "present" },
                e.sha256,
                e.name,
                e.size
            );
        }
        let base = o.config().artifacts.base().map_or_else(
            || "the `[artifacts] base_url` server".to_owned(),
            |b| format!("{b}/"),
        );
        println!(
            "{} artifact(s) of {} in {}; serve each file as {base}<sha256>",
            exported.len(),
            state.version,
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
