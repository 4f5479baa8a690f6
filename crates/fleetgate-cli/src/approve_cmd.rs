//! `fleetgate approve`: signed approvals for the stages of `[approval] before`.
//!
//! * `fleetgate approve --key-file KEY [--stage deploy] [--reason TEXT]`: on the
//!   orchestrator's host, sign an approval of the current run and record it.
//! * `fleetgate approve --request [--stage deploy] [--out FILE]`: the unsigned approval of
//!   the current run, to sign where the key is…
//! * `fleetgate approve --sign REQUEST --key-file KEY --out FILE`: …there (no config or
//!   state needed)…
//! * `fleetgate approve --submit FILE`: …and record it back on the orchestrator's host.

use crate::print_json;
use anyhow::Context as _;
use clap::Args;
use fleetgate_runtime::approval;
use fleetgate_trust::SigningKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `fleetgate approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The stage approved (a gate of `[approval] before`: build, test, audit, benchmark,
    /// sign, canary, deploy). Default: the current stage when it waits, else the only
    /// stage that does.
    #[arg(long)]
    pub stage: Option<String>,
    /// The approver's secret key file (seed hex, from `fleetgate keygen`); its public key
    /// must be in `[approval] keys`. Default: $FLEETGATE_SIGNING_KEY_HEX and the other
    /// key variables.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Why (recorded in the signed approval).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Write the unsigned approval of the current run (to --out or stdout) instead of
    /// signing it here.
    #[arg(long, conflicts_with_all = ["sign", "submit"])]
    pub request: bool,
    /// Sign this approval request (from `--request`) with --key-file; needs no config.
    #[arg(long, value_name = "REQUEST", conflicts_with = "submit")]
    pub sign: Option<PathBuf>,
    /// Record an approval signed elsewhere (`--sign`).
    #[arg(long, value_name = "FILE")]
    pub submit: Option<PathBuf>,
    /// Where `--request` / `--sign` write (default: stdout / approval-signed.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fleetgate_trust::fsutil::read_limited(path, 64 * 1024)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn report(s: &approval::Submitted, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(&serde_json::json!({"success": true, "approval": s}))?;
    } else {
        let left = s.required.saturating_sub(s.approvals);
        println!(
            "approved `{}` with key {}: {} of {} approval(s){}",
            s.stage,
            s.key_id,
            s.approvals,
            s.required,
            if left == 0 {
                " — the stage goes on at its next check".to_owned()
            } else {
                format!(" — {left} more needed")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `fleetgate approve`.
pub fn run(cfg_path: Option<&Path>, a: ApproveArgs) -> anyhow::Result<ExitCode> {
    if let Some(req) = &a.sign {
        let request: serde_json::Value = serde_json::from_slice(&read(req)?)
            .with_context(|| format!("{} is not JSON", req.display()))?;
        let key = SigningKey::load(a.key_file.as_deref())?;
        let signed = approval::sign(&request, &key)?;
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("approval-signed.json"));
        fleetgate_store::write_atomic(&out, &signed, Some(0o644))
            .with_context(|| format!("cannot write {}", out.display()))?;
        if a.json {
            print_json(
                &serde_json::json!({"success": true, "signed": out, "key_id": key.key_id()}),
            )?;
        } else {
            println!(
                "signed the approval with key {} → {}\nrecord it on the orchestrator's host: fleetgate approve --submit {}",
                key.key_id(),
                out.display(),
                out.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let o = crate::open(cfg_path, false)?;
    let state = o.status()?;
    let state_dir = o.store().path().to_owned();
    if let Some(file) = &a.submit {
        let s = approval::submit(&state_dir, o.config(), &state, &read(file)?)?;
        return report(&s, a.json);
    }
    let gate = approval::resolve_gate(o.config(), &state, a.stage.as_deref())?;
    let request = approval::request(&state, &gate, &a.reason, fleetgate_trust::unix_now())?;
    if a.request {
        let bytes = serde_json::to_vec_pretty(&request)?;
        match &a.out {
            Some(out) => {
                fleetgate_store::write_atomic(out, &bytes, Some(0o644))
                    .with_context(|| format!("cannot write {}", out.display()))?;
                if a.json {
                    print_json(&serde_json::json!({"success": true, "request": out}))?;
                } else {
                    println!(
                        "approval request for `{gate}` of {} → {}\nsign it where the key is: fleetgate approve --sign {} --key-file KEY --out approval-signed.json",
                        state.version,
                        out.display(),
                        out.display()
                    );
                }
            }
            None => println!("{}", String::from_utf8_lossy(&bytes)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let key = SigningKey::load(a.key_file.as_deref())?;
    let signed = approval::sign(&request, &key)?;
    let s = approval::submit(&state_dir, o.config(), &state, &signed)?;
    report(&s, a.json)
}
