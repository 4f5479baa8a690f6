//! `fleetgate provenance show|verify`: the release's in-toto / SLSA v1 provenance
//! statement (written by SIGN; its SHA-256 is the signed manifest's `provenance_sha256`).

use crate::{open, print_json};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fleetgate_runtime::provenance as rt;
use fleetgate_trust::provenance::{
    ByproductCheck, MAX_STATEMENT_BYTES, Statement, check_against_manifest, check_byproducts,
    parse_statement, sha256_hex,
};
use fleetgate_trust::{
    Keyring, PublicKey, VerifyOptions, cosignatures_path, fsutil, unix_now,
    verify_manifest_detached,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes of `provenance verify`.
pub const PROVENANCE_EXIT_HELP: &str = "\
EXIT CODES:
  0      the manifest verifies, names this statement, and no evidence file found differs
  1      error (missing file, unreadable trust file, bad arguments)
  10-19  the manifest itself is refused (as `fleetgate manifest verify`: 13 bad_signature,
         14 unknown_key, 16 expired, …)
  20     the statement is not the one the manifest names (digest, subject or format)
  21     an evidence file differs from the digest the statement records";

/// Exit code: the statement does not belong to the manifest.
pub const EXIT_STATEMENT_MISMATCH: u8 = 20;
/// Exit code: an evidence file was changed.
pub const EXIT_EVIDENCE_MISMATCH: u8 = 21;

/// `fleetgate provenance …`.
#[derive(Debug, Subcommand)]
pub enum ProvenanceCmd {
    /// Show a release's provenance statement: the commit and code hash it attests, the
    /// builder, the run, each gate's outcome and every piece of evidence (logs, JUnit
    /// report, audit output, benchmark results) with its SHA-256 and whether the file in
    /// the state directory still has it.
    Show(ShowArgs),
    /// Verify a provenance statement against a signed manifest: the manifest's signatures
    /// (trust file or pinned key, as `manifest verify`), that its `provenance_sha256` is
    /// the statement's SHA-256 and its subject is the manifest's release, and that every
    /// evidence file present still has the digest the statement records.
    #[command(after_help = PROVENANCE_EXIT_HELP)]
    Verify(VerifyArgs),
}

/// `fleetgate provenance show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The release version. Default: the version of the current or last run.
    pub version: Option<String>,
    /// Machine-readable output (the statement, its digest and the evidence checks).
    #[arg(long)]
    pub json: bool,
}

/// `fleetgate provenance verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The signed release manifest (`state/release_manifest.json`, or a node's copy).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The statement (`state/provenance/<version>.intoto.json`).
    #[arg(long, value_name = "FILE")]
    pub statement: PathBuf,
    /// Trust file (keyring with threshold). Default: `[signing] trust_file` of the
    /// configuration.
    #[arg(long, value_name = "FILE", conflicts_with = "pubkey")]
    pub trust: Option<PathBuf>,
    /// A single pinned public key (hex) instead of a trust file.
    #[arg(long, value_name = "HEX")]
    pub pubkey: Option<String>,
    /// The manifest's detached co-signature file. Default: MANIFEST.sigs when it exists.
    #[arg(long, value_name = "FILE")]
    pub sigs: Option<PathBuf>,
    /// Directory the evidence names are relative to. Default: the state directory the
    /// statement lies in (the parent of its `provenance/` directory).
    #[arg(long, value_name = "DIR")]
    pub evidence_dir: Option<PathBuf>,
    /// Machine-readable output (a JSON object on stdout).
    #[arg(long)]
    pub json: bool,
}

/// Runs one `provenance` subcommand.
pub fn run(cfg_path: Option<&Path>, cmd: ProvenanceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ProvenanceCmd::Show(a) => show(cfg_path, &a),
        ProvenanceCmd::Verify(a) => verify(cfg_path, &a),
    }
}

fn read_statement(path: &Path) -> anyhow::Result<Vec<u8>> {
    fsutil::read_limited(path, MAX_STATEMENT_BYTES as u64)
        .with_context(|| format!("cannot read the provenance statement {}", path.display()))
}

fn short(d: &str) -> &str {
    d.get(..16).unwrap_or(d)
}

fn print_checks(checks: &[ByproductCheck]) {
    for c in checks {
        let note = match c.status {
            "match" => "ok".to_owned(),
            "missing" => "not present here".to_owned(),
            "mismatch" => format!(
                "CHANGED: now {}",
                c.actual.as_deref().map_or("?", |d| short(d))
            ),
            _ => "REFUSED: not a plain relative path, or no sha256".to_owned(),
        };
        println!("    {}  sha256 {}…  {note}", c.name, short(&c.recorded));
    }
}

fn describe(st: &Statement) {
    let p = &st.predicate;
    for s in &st.subject {
        let digests: Vec<String> = s.digest.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!(
            "  subject      {}  {}",
            s.name.as_deref().unwrap_or("_"),
            digests.join(" ")
        );
    }
    println!("  builder      {}", p.run_details.builder.id);
    println!("  build type   {}", p.build_definition.build_type);
    let m = &p.run_details.metadata;
    println!(
        "  run          {} (started {}, signed {})",
        m.invocation_id.as_deref().unwrap_or("?"),
        m.started_on.as_deref().unwrap_or("?"),
        m.finished_on.as_deref().unwrap_or("?")
    );
    if let Some(gates) = p
        .build_definition
        .internal_parameters
        .get("gates")
        .and_then(|g| g.as_object())
    {
        let list: Vec<String> = gates
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
            .collect();
        println!("  gates        {}", list.join(", "));
    }
    println!("  evidence     {} file(s):", p.run_details.byproducts.len());
}

fn show(cfg_path: Option<&Path>, a: &ShowArgs) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, false)?;
    let state_dir = o.context().state_dir.clone();
    let version = match &a.version {
        Some(v) => fleetgate_core::Version::parse(v)?.to_string(),
        None => {
            let st = o.store().load()?;
            if st.version.is_empty() {
                bail!("no run yet: name a VERSION (`fleetgate provenance show v1.2.0`)");
            }
            st.version
        }
    };
    let path = rt::path(&state_dir, &version);
    let bytes = match std::fs::metadata(&path) {
        Ok(_) => read_statement(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{version} has no provenance statement ({} does not exist): SIGN writes it when it signs a release",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let st = parse_statement(&bytes)?;
    let digest = sha256_hex(&bytes);
    let checks = check_byproducts(&st, &state_dir);
    // Does a manifest of this version (the current one, or one archived by SIGN) name it?
    let found = manifest_of(&state_dir, &version, &digest);
    let named = found.as_ref().map(|(_, n)| *n);
    let manifest_path = found.map(|(p, _)| p).unwrap_or_default();
    if a.json {
        print_json(&json!({
            "version": version,
            "file": path,
            "sha256": digest,
            "manifest_names_it": named,
            "evidence": checks,
            "statement": st,
        }))?;
    } else {
        println!("provenance of {version}: {}", path.display());
        println!("  sha256       {digest}");
        match named {
            Some(true) => println!(
                "  manifest     {} names it (provenance_sha256)",
                manifest_path.display()
            ),
            Some(false) => println!(
                "  manifest     {} is {version}'s but names ANOTHER statement",
                manifest_path.display()
            ),
            None => println!("  manifest     none of {version} in the state directory"),
        }
        describe(&st);
        print_checks(&checks);
    }
    Ok(ExitCode::SUCCESS)
}

/// A manifest of `version` in the state directory — `release_manifest.json`, then the
/// archive `manifests/*.json` (newest first; bundles too) — preferring one whose
/// `provenance_sha256` is `digest`: its path, and whether it names `digest`.
fn manifest_of(state_dir: &Path, version: &str, digest: &str) -> Option<(PathBuf, bool)> {
    let mut candidates = vec![fleetgate_runtime::gates::manifest_path(state_dir)];
    if let Ok(entries) = std::fs::read_dir(state_dir.join("manifests")) {
        let mut archived: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        archived.sort();
        archived.reverse();
        candidates.extend(archived);
    }
    let mut other = None;
    for path in candidates {
        let Ok(bytes) = fsutil::read_limited(&path, fleetgate_trust::MAX_DOCUMENT_BYTES as u64)
        else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let m = if v.get("manifest").is_some_and(serde_json::Value::is_object) {
            &v["manifest"]
        } else {
            &v
        };
        if m["version"] != version {
            continue;
        }
        if m["provenance_sha256"] == digest {
            return Some((path, true));
        }
        other.get_or_insert(path);
    }
    other.map(|p| (p, false))
}

fn keyring(cfg_path: Option<&Path>, a: &VerifyArgs) -> anyhow::Result<(Keyring, bool)> {
    if let Some(hex) = &a.pubkey {
        return Ok((Keyring::single(PublicKey::from_hex(hex)?), true));
    }
    let path = match &a.trust {
        Some(p) => p.clone(),
        None => {
            let (cfg, base) = fleetgate_runtime::load_config(cfg_path)?;
            let Some(t) = &cfg.signing.trust_file else {
                bail!(
                    "give --trust FILE or --pubkey HEX (no `[signing] trust_file` in the configuration)"
                );
            };
            fleetgate_runtime::gates::resolve(&base, t)
        }
    };
    Ok((
        Keyring::load(&path)
            .with_context(|| format!("cannot use trust file {}", path.display()))?,
        false,
    ))
}

fn fail(json_out: bool, code: u8, error: &str, message: &str) -> ExitCode {
    eprintln!("fleetgate: {message}");
    if json_out {
        println!(
            "{}",
            json!({"valid": false, "error": error, "exit_code": code, "message": message})
        );
    }
    ExitCode::from(code)
}

fn verify(cfg_path: Option<&Path>, a: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let (ring, allow_legacy) = keyring(cfg_path, a)?;
    let manifest = fsutil::read_limited(&a.manifest, fleetgate_trust::MAX_MANIFEST_BYTES as u64)
        .with_context(|| format!("cannot read the manifest {}", a.manifest.display()))?;
    let sigs_path = a
        .sigs
        .clone()
        .or_else(|| Some(cosignatures_path(&a.manifest)).filter(|p| p.exists()));
    let sigs = match &sigs_path {
        Some(p) => Some(
            fsutil::read_limited(p, fleetgate_trust::MAX_DOCUMENT_BYTES as u64)
                .with_context(|| format!("cannot read co-signatures {}", p.display()))?,
        ),
        None => None,
    };
    let opts = VerifyOptions {
        allow_legacy_hart: allow_legacy,
        ..VerifyOptions::default()
    };
    let verified =
        match verify_manifest_detached(&manifest, sigs.as_deref(), &ring, unix_now(), &opts) {
            Ok(v) => v,
            Err(e) => {
                return Ok(fail(
                    a.json,
                    e.exit_code(),
                    e.name(),
                    &format!("{}: {e}", a.manifest.display()),
                ));
            }
        };
    let statement = read_statement(&a.statement)?;
    let st = match check_against_manifest(&statement, &verified.manifest) {
        Ok(st) => st,
        Err(e) => {
            return Ok(fail(
                a.json,
                EXIT_STATEMENT_MISMATCH,
                "statement_mismatch",
                &format!("{}: {e}", a.statement.display()),
            ));
        }
    };
    let evidence_dir = a.evidence_dir.clone().or_else(|| {
        let parent = a.statement.parent()?;
        (parent.file_name()? == "provenance")
            .then(|| parent.parent().map(Path::to_owned))
            .flatten()
    });
    let checks = evidence_dir
        .as_deref()
        .map(|d| check_byproducts(&st, d))
        .unwrap_or_default();
    let bad: Vec<&ByproductCheck> = checks.iter().filter(|c| c.is_bad()).collect();
    let present = checks.iter().filter(|c| c.status == "match").count();
    if a.json {
        print_json(&json!({
            "valid": bad.is_empty(),
            "manifest": a.manifest,
            "statement": a.statement,
            "version": verified.manifest.version,
            "sequence": verified.manifest.sequence,
            "key_ids": verified.key_ids,
            "provenance_sha256": verified.manifest.provenance_sha256,
            "evidence_dir": evidence_dir,
            "evidence": checks,
            "error": (!bad.is_empty()).then_some("evidence_mismatch"),
        }))?;
    } else {
        println!(
            "manifest {} ({} sequence {}) verifies, signed by {}; it names this statement (sha256 {})",
            a.manifest.display(),
            verified.manifest.version,
            verified.manifest.sequence,
            verified.key_ids.join(", "),
            verified
                .manifest
                .provenance_sha256
                .as_deref()
                .unwrap_or("?")
        );
        describe(&st);
        if evidence_dir.is_none() {
            println!("    (no evidence directory: give --evidence-dir to re-hash the files)");
        }
        print_checks(&checks);
        println!(
            "{present} of {} evidence file(s) re-hashed and matching",
            st.predicate.run_details.byproducts.len()
        );
    }
    if let Some(first) = bad.first() {
        // (with --json, the object above already says so)
        return Ok(fail(
            false,
            EXIT_EVIDENCE_MISMATCH,
            "evidence_mismatch",
            &format!(
                "evidence {} does not have the digest the statement records ({} evidence file(s) differ)",
                first.name,
                bad.len()
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
