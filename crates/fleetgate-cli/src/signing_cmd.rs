//! `fleetgate manifest sign-request|submit`: SIGN with the key held elsewhere
//! (`[signing] mode = "external"`). The orchestrator writes a signing request and waits;
//! the signer — another process, machine or CI job — signs it with `sign-request`; the
//! signed manifest comes back with `submit`, which accepts it only if it is the request,
//! field for field, and verifies against the trust file.

use crate::{open, print_json};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use fleetgate_runtime::external_sign;
use fleetgate_trust::SigningKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The external-signing subcommands of `fleetgate manifest`.
#[derive(Debug, Subcommand)]
pub enum ExternalCmd {
    /// The signer's side of `[signing] mode = "external"`: sign a signing request
    /// (`state/signing-request.json`, written by SIGN) with your key. Needs no config or
    /// state; run it where the key is (another machine, a CI job).
    SignRequest(SignRequestArgs),
    /// Hand a manifest signed elsewhere (`manifest sign-request`) to the run waiting in
    /// SIGN. Accepted only if it is this run's signing request, field for field, and
    /// verifies against the trust file; SIGN passes at its next check.
    Submit(SubmitArgs),
}

/// `fleetgate manifest sign-request`.
#[derive(Debug, Args)]
pub struct SignRequestArgs {
    /// The signing request (JSON).
    pub request: PathBuf,
    /// Secret key file (seed hex). Default: $FLEETGATE_SIGNING_KEY_HEX, then the other
    /// key variables (see `fleetgate config --env`).
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Where to write the signed manifest.
    #[arg(long, default_value = "signed_manifest.json")]
    pub out: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `fleetgate manifest submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The signed manifest.
    pub file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Runs one external-signing subcommand.
pub fn run(cfg_path: Option<&Path>, cmd: ExternalCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ExternalCmd::SignRequest(a) => {
            let request = fleetgate_trust::fsutil::read_limited(
                &a.request,
                fleetgate_trust::MAX_MANIFEST_BYTES as u64,
            )
            .with_context(|| format!("cannot read the signing request {}", a.request.display()))?;
            let key = SigningKey::load(a.key_file.as_deref())?;
            let signed = external_sign::sign_request(&request, &key)
                .with_context(|| format!("{}", a.request.display()))?;
            fleetgate_store::write_atomic(&a.out, &signed, None)
                .with_context(|| format!("cannot write {}", a.out.display()))?;
            if a.json {
                print_json(&serde_json::json!({
                    "signed": a.out, "key_id": key.key_id(), "request": a.request,
                }))?;
            } else {
                println!(
                    "signed {} with key {} → {}\nhand it to the orchestrator: fleetgate manifest submit {}",
                    a.request.display(),
                    key.key_id(),
                    a.out.display(),
                    a.out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ExternalCmd::Submit(a) => {
            let signed = fleetgate_trust::fsutil::read_limited(
                &a.file,
                fleetgate_trust::MAX_MANIFEST_BYTES as u64,
            )
            .with_context(|| format!("cannot read {}", a.file.display()))?;
            let report = open(cfg_path, false)?.submit_manifest(&signed)?;
            if a.json {
                print_json(&report)?;
            } else {
                println!(
                    "accepted for run {} ({}, sequence {}, signed by {}) → {}",
                    report.run_id,
                    report.version,
                    report.sequence,
                    report.key_ids.join(", "),
                    report.manifest_file.display()
                );
                match &report.pending {
                    None => println!(
                        "SIGN passes at its next check (`fleetgate advance` / a running `run`)"
                    ),
                    Some(p) => println!("SIGN still waits: {p}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
