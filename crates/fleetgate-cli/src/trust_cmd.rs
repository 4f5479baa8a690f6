//! `fleetgate keygen`, `fleetgate manifest sign|verify` and
//! `fleetgate trust init|sign|rotate`: thin clap front ends over
//! `fleetgate-trust`.
//!
//! Mount with `Keygen(trust_cmd::KeygenArgs)`, `#[command(subcommand)]
//! Manifest(trust_cmd::ManifestCmd)` and `#[command(subcommand)]
//! Trust(trust_cmd::TrustCmd)`, dispatching to [`run_keygen`],
//! [`run_manifest`] and [`run_trust`].
//!
//! `manifest verify` exits 0 only when the manifest is valid; otherwise with
//! the refusal's code (10..=19, [`MANIFEST_EXIT_HELP`]) and one line on
//! stderr (plus a JSON object on stdout with `--json`). Other errors (a
//! missing file, a bad trust file) are returned as `anyhow` errors (exit 1).

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use fleetgate_trust::{
    Floor, HashScheme, Keyring, KeyringError, Manifest, ManifestKind, PublicKey, RollbackOf,
    SigningKey, TrustedKey, VerifyError, VerifyOptions, cosignatures_path, fsutil, keygen,
    random_canary_seed, rfc3339_seconds, sign_manifest_detached, unix_now,
    verify_manifest_detached,
};
use serde_json::json;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit-code table for `manifest verify` (also usable as clap `after_help`).
pub const MANIFEST_EXIT_HELP: &str = "\
EXIT CODES:
  0   the manifest is valid
  1   error (missing file, unreadable trust file, bad arguments)
  10  too_large        over the 64 KiB limit, refused before parsing
  11  malformed        not JSON, duplicate key, float, missing or bad field
  12  unsigned         no master_signature / signatures
  13  bad_signature    a signature does not match the content (tampered)
  14  unknown_key      signed by a key that is not in the trust file
  15  below_threshold  fewer than k distinct trusted keys signed
  16  expired          expires_at is not in the future
  17  not_yet_valid    signing key outside its window, or built_at in the future
  18  replayed         sequence not above the anti-rollback floor
  19  dev_mode         a dev-mode (unsigned) manifest";

/// `fleetgate keygen`: make a signing key.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret seed (64 hex chars, mode 0600); the public
    /// key hex goes to PATH.pub.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Replace an existing key file.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `fleetgate manifest …`.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing buys nothing"
)]
pub enum ManifestCmd {
    /// Build and sign a release manifest (accepts HART's sign_release.py
    /// arguments).
    Sign(SignArgs),
    /// Verify a signed manifest; exit 0 only when it is valid.
    #[command(after_help = MANIFEST_EXIT_HELP)]
    Verify(VerifyArgs),
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A new release.
    Release,
    /// A rollback order (needs --rollback-of, --rollback-of-version,
    /// --return-to-version).
    Rollback,
    /// A new build of the node agent (needs --agent-binary): taken only by nodes with
    /// `self_update = true`.
    Agent,
}

/// `--hash-scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashSchemeArg {
    /// Every file git tracks at the commit (blob bytes), with --include/--exclude.
    Git,
    /// HART's compute_code_hash: the *.py files of a clean checkout of the commit, on
    /// disk, outside HART's skipped directories.
    Hart,
}

impl From<HashSchemeArg> for HashScheme {
    fn from(a: HashSchemeArg) -> Self {
        match a {
            HashSchemeArg::Git => HashScheme::Git,
            HashSchemeArg::Hart => HashScheme::Hart,
        }
    }
}

/// `fleetgate manifest sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Release version.
    #[arg(long)]
    pub version: String,
    /// Commit being released (not with --repo, which resolves --rev).
    #[arg(long, conflicts_with_all = ["repo", "agent_binary"])]
    pub git_sha: Option<String>,
    /// Code hash (hex SHA-256; HART's scheme).
    #[arg(long, conflicts_with_all = ["repo", "agent_binary"])]
    pub code_hash: Option<String>,
    /// File manifest hash (HART's --manifest-hash).
    #[arg(long, conflicts_with_all = ["repo", "agent_binary"])]
    pub manifest_hash: Option<String>,
    /// Guardrail hash.
    #[arg(long, default_value = "")]
    pub guardrail_hash: String,
    /// With --kind agent: the new agent build. The manifest lists it as its one artifact
    /// (name, SHA-256, size) and its code hash is the binary's SHA-256; serve the file as
    /// `{artifacts_url}/{sha256}` (see --artifacts-dir).
    #[arg(long, value_name = "PATH", conflicts_with = "repo")]
    pub agent_binary: Option<PathBuf>,
    /// With --agent-binary: also copy the binary into this directory, named by its
    /// SHA-256 (an artifact store `fleet serve` or any static server can serve).
    #[arg(long, value_name = "DIR", requires = "agent_binary")]
    pub artifacts_dir: Option<PathBuf>,
    /// Compute git sha, code hash and file manifest hash from this git
    /// repository at --rev (files git tracks at that commit).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Revision to hash with --repo.
    #[arg(long, default_value = "HEAD", requires = "repo")]
    pub rev: String,
    /// With --repo: hash only tracked files matching these globs (repeatable).
    #[arg(long, requires = "repo")]
    pub include: Vec<String>,
    /// With --repo: leave out tracked files matching these globs (repeatable).
    #[arg(long, requires = "repo")]
    pub exclude: Vec<String>,
    /// How the code hash and file manifest hash are computed (with --repo), or were
    /// computed (with --code-hash/--manifest-hash); written to the manifest as
    /// `hash_scheme` unless `git`.
    #[arg(long, value_enum, default_value_t = HashSchemeArg::Git)]
    pub hash_scheme: HashSchemeArg,
    /// Where to write the signed manifest.
    #[arg(long, default_value = "release_manifest.json")]
    pub output: PathBuf,
    /// Secret key file (seed hex). Default: $FLEETGATE_SIGNING_KEY_HEX, then
    /// $MASTER_PRIVATE_KEY_HEX.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Release sequence, strictly increasing per fleet. Default: the current
    /// unix time in seconds (increases between releases on a sane clock).
    #[arg(long)]
    pub sequence: Option<u64>,
    /// Lifetime of the manifest (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub expires_in: Duration,
    /// Manifest kind.
    #[arg(long, value_enum, default_value_t = KindArg::Release)]
    pub kind: KindArg,
    /// Rollback: sequence of the release it undoes.
    #[arg(long, value_name = "SEQ")]
    pub rollback_of: Option<u64>,
    /// Rollback: version of the release it undoes.
    #[arg(long, value_name = "VERSION")]
    pub rollback_of_version: Option<String>,
    /// Rollback: version to return to.
    #[arg(long)]
    pub return_to_version: Option<String>,
    /// Rollback: code hash to return to.
    #[arg(long)]
    pub return_to_code_hash: Option<String>,
    /// Rollback: commit to return to.
    #[arg(long)]
    pub return_to_git_sha: Option<String>,
    /// Canary seed (hex). Default: 32 random bytes.
    #[arg(long)]
    pub canary_seed: Option<String>,
    /// Orchestrator lease epoch (fencing token); 0 when unused.
    #[arg(long, default_value_t = 0)]
    pub fencing_epoch: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `fleetgate manifest verify`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("trust_source").required(true).args(["trust", "pubkey"])))]
pub struct VerifyArgs {
    /// Trust file (keyring with threshold).
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// A single pinned public key (hex), HART's model; also accepts HART
    /// legacy manifests without sequence or expiry.
    #[arg(long, value_name = "HEX")]
    pub pubkey: Option<String>,
    /// The signed manifest.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// Its detached co-signature file (k-of-n). Default: MANIFEST.sigs when it exists.
    #[arg(long, value_name = "FILE")]
    pub sigs: Option<PathBuf>,
    /// Anti-rollback floor directory: refuse sequences not above it.
    #[arg(long, value_name = "DIR")]
    pub floor_dir: Option<PathBuf>,
    /// With --floor-dir: raise the floor to this manifest's sequence when it
    /// is valid.
    #[arg(long, requires = "floor_dir")]
    pub commit: bool,
    /// Machine-readable output (a JSON object on stdout).
    #[arg(long)]
    pub json: bool,
}

/// `fleetgate trust …`: the trust file and key rotation.
#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Write a new, unsigned trust file.
    Init(TrustInitArgs),
    /// Add your signature to a signed document: a proposed trust file
    /// (rewritten in place), or a release manifest that needs k-of-n signatures
    /// (the signature goes to FILE.sigs; FILE keeps its one master_signature,
    /// so HART's verifier still accepts it).
    Sign(TrustSignArgs),
    /// Replace the trust file with a new one signed by k current keys and k'
    /// of its own keys, with a higher version.
    Rotate(TrustRotateArgs),
}

/// `fleetgate trust init`.
#[derive(Debug, Args)]
pub struct TrustInitArgs {
    /// A trusted public key: 64 hex chars or a `.pub` file (repeatable).
    #[arg(long = "key", value_name = "HEX|FILE", required = true)]
    pub keys: Vec<String>,
    /// Signatures required (k).
    #[arg(long, default_value_t = 1)]
    pub threshold: usize,
    /// Trust file version; a rotation must raise it.
    #[arg(long = "trust-version", default_value_t = 1)]
    pub trust_version: u64,
    /// Where to write it.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `fleetgate trust sign`.
#[derive(Debug, Args)]
pub struct TrustSignArgs {
    /// The document to co-sign (rewritten in place).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Secret key file. Default: the signing-key env vars.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// `fleetgate trust rotate`.
#[derive(Debug, Args)]
pub struct TrustRotateArgs {
    /// The current trust file (replaced on success; the old one is kept as
    /// FILE.prev).
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    /// The proposed, signed trust file.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
}

/// Runs `fleetgate keygen`.
///
/// # Errors
/// When the key cannot be generated or written (e.g. it exists without --force).
pub fn run_keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let made = keygen(&args.out, args.force)?;
    if args.json {
        println!(
            "{}",
            json!({
                "success": true,
                "secret_path": made.secret_path,
                "public_path": made.public_path,
                "public_key": made.public_key_hex,
                "key_id": made.key_id,
            })
        );
    } else {
        println!(
            "wrote secret key {} (mode 0600) and public key {}",
            made.secret_path.display(),
            made.public_path.display()
        );
        println!("public key: {}", made.public_key_hex);
        println!("key id:     {}", made.key_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `fleetgate manifest sign|verify`.
///
/// # Errors
/// Sign: any failure. Verify: only failures to read the inputs (a refused
/// manifest is an exit code, not an error).
pub fn run_manifest(cmd: ManifestCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ManifestCmd::Sign(args) => run_sign(args),
        ManifestCmd::Verify(args) => run_verify(args),
    }
}

struct Hashes {
    git_sha: String,
    code_hash: String,
    file_manifest_hash: String,
}

fn hashes(args: &SignArgs) -> anyhow::Result<Hashes> {
    if let Some(repo) = &args.repo {
        let scheme = HashScheme::from(args.hash_scheme);
        if scheme == HashScheme::Hart && !(args.include.is_empty() && args.exclude.is_empty()) {
            bail!(
                "--include/--exclude apply to --hash-scheme git only; HART's scheme hashes every *.py file \
                 outside its fixed list of skipped directories"
            );
        }
        let cfg = fleetgate_core::config::CodeHashConfig {
            include: args.include.clone(),
            exclude: args.exclude.clone(),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let scratch =
            std::env::temp_dir().join(format!("fleetgate-hash-{}-{nanos}", std::process::id()));
        let h =
            fleetgate_runtime::codehash::code_hash_with(scheme, repo, &args.rev, &cfg, &scratch)
                .with_context(|| {
                    format!(
                        "compute the {scheme} code hash of {} at {}",
                        repo.display(),
                        args.rev
                    )
                })?;
        return Ok(Hashes {
            git_sha: h.commit,
            code_hash: h.code_hash,
            file_manifest_hash: h.file_manifest_hash,
        });
    }
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .with_context(|| {
                format!("{flag} is required unless --repo is given (an agent update takes --kind agent --agent-binary PATH instead)")
            })
    };
    Ok(Hashes {
        git_sha: need(&args.git_sha, "--git-sha")?,
        code_hash: need(&args.code_hash, "--code-hash")?,
        file_manifest_hash: need(&args.manifest_hash, "--manifest-hash")?,
    })
}

/// `--agent-binary`: the build as the manifest's one artifact, copied into
/// `--artifacts-dir` by digest when given.
fn agent_build(args: &SignArgs) -> anyhow::Result<(Hashes, fleetgate_trust::Artifact)> {
    let path = args
        .agent_binary
        .as_deref()
        .context("--kind agent needs --agent-binary PATH (the new agent build)")?;
    let bytes =
        std::fs::read(path).with_context(|| format!("read the agent build {}", path.display()))?;
    let sha = fleetgate_trust::provenance::sha256_hex(&bytes);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("fleetgate-agent")
        .to_owned();
    let artifact = fleetgate_trust::Artifact {
        name,
        sha256: sha.clone(),
        size: bytes.len() as u64,
    };
    if let Some(dir) = &args.artifacts_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        fsutil::atomic_write(&dir.join(&sha), &bytes, 0o644)?;
    }
    Ok((
        Hashes {
            git_sha: String::new(),
            code_hash: sha.clone(),
            file_manifest_hash: sha,
        },
        artifact,
    ))
}

fn run_sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKey::load(args.key_file.as_deref())?;
    let now = unix_now();
    let kind = match args.kind {
        KindArg::Release => ManifestKind::Release,
        KindArg::Rollback => ManifestKind::Rollback,
        KindArg::Agent => ManifestKind::Agent,
    };
    let (h, artifacts) = if kind == ManifestKind::Agent {
        let (h, a) = agent_build(&args)?;
        (h, vec![a])
    } else {
        if args.agent_binary.is_some() {
            bail!("--agent-binary needs --kind agent");
        }
        (hashes(&args)?, Vec::new())
    };
    let rollback_of = match (kind, args.rollback_of, &args.rollback_of_version) {
        (ManifestKind::Release | ManifestKind::Agent, None, None) => None,
        (ManifestKind::Release | ManifestKind::Agent, _, _) => {
            bail!("--rollback-of and --rollback-of-version need --kind rollback")
        }
        (ManifestKind::Rollback, Some(sequence), Some(version)) => Some(RollbackOf {
            sequence,
            version: version.clone(),
            code_hash: None,
        }),
        (ManifestKind::Rollback, _, _) => {
            bail!("--kind rollback needs --rollback-of SEQ and --rollback-of-version VERSION")
        }
    };
    let canary_seed = match args.canary_seed {
        Some(s) => s,
        None => random_canary_seed().context("generate a canary seed")?,
    };
    let manifest = Manifest {
        version: args.version,
        git_sha: h.git_sha,
        code_hash: h.code_hash,
        file_manifest_hash: h.file_manifest_hash,
        hash_scheme: args.hash_scheme.into(),
        guardrail_hash: args.guardrail_hash,
        built_at: rfc3339_seconds(now),
        sequence: args.sequence.unwrap_or(now),
        expires_at: now.saturating_add(args.expires_in.as_secs()),
        kind,
        rollback_of,
        return_to_version: args.return_to_version,
        return_to_code_hash: args.return_to_code_hash,
        return_to_git_sha: args.return_to_git_sha,
        canary_seed,
        fencing_epoch: args.fencing_epoch,
        artifacts,
        ..Manifest::default()
    };
    let signed = sign_manifest_detached(&manifest, &[&key])?;
    let bytes = signed.manifest;
    // Belt and braces: what we write must verify with our own key.
    let verified = verify_manifest_detached(
        &bytes,
        None,
        &Keyring::single(key.public_key()),
        now,
        &VerifyOptions::default(),
    )
    .context("verify the manifest just signed")?;
    // Co-signatures of an earlier manifest at this path would be refused with this one.
    let sigs = cosignatures_path(&args.output);
    let removed_sigs = match std::fs::remove_file(&sigs) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("remove stale co-signatures {}", sigs.display()));
        }
    };
    fsutil::atomic_write(&args.output, &bytes, 0o644)?;
    let m = &verified.manifest;
    if args.json {
        println!(
            "{}",
            json!({
                "success": true,
                "output": args.output,
                "version": m.version,
                "kind": m.kind.as_str(),
                "sequence": m.sequence,
                "expires_at": m.expires_at,
                "key_id": key.key_id(),
                "code_hash": m.code_hash,
                "file_manifest_hash": m.file_manifest_hash,
                "hash_scheme": m.hash_scheme.as_str(),
                "removed_stale_cosignatures": removed_sigs,
            })
        );
    } else {
        if removed_sigs {
            eprintln!(
                "fleetgate: removed {} (co-signatures of the manifest this one replaces)",
                sigs.display()
            );
        }
        println!(
            "signed {} {} (sequence {}, expires {}) with key {} -> {}",
            m.kind.as_str(),
            m.version,
            m.sequence,
            rfc3339_seconds(m.expires_at),
            key.key_id(),
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads at most `limit` bytes, or returns the file's real size when it is
/// larger (so the refusal names it) without reading it.
fn read_capped(path: &Path, limit: usize) -> anyhow::Result<Result<Vec<u8>, u64>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("open manifest {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("read manifest {}", path.display()))?;
    if buf.len() > limit {
        return Ok(Err(len.max(buf.len() as u64)));
    }
    Ok(Ok(buf))
}

fn refuse(err: &VerifyError, json_out: bool, path: &Path) -> ExitCode {
    eprintln!("fleetgate: {}: {err}", path.display());
    if json_out {
        println!(
            "{}",
            json!({
                "success": false,
                "valid": false,
                "manifest": path,
                "error": err.name(),
                "exit_code": err.exit_code(),
                "message": err.to_string(),
            })
        );
    }
    ExitCode::from(err.exit_code())
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (keyring, allow_legacy) = match (&args.trust, &args.pubkey) {
        (Some(path), None) => (Keyring::load(path)?, false),
        (None, Some(hex)) => (Keyring::single(PublicKey::from_hex(hex)?), true),
        _ => bail!("give exactly one of --trust FILE or --pubkey HEX"),
    };
    let mut floor = match &args.floor_dir {
        Some(dir) => Some(Floor::open(dir)?),
        None => None,
    };
    let mut opts = floor
        .as_ref()
        .map(Floor::verify_options)
        .unwrap_or_default();
    opts.allow_legacy_hart = allow_legacy;
    let now = unix_now();

    let bytes = match read_capped(&args.manifest, fleetgate_trust::MAX_MANIFEST_BYTES)? {
        Ok(b) => b,
        Err(size) => {
            let err = VerifyError::TooLarge {
                what: "manifest",
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: fleetgate_trust::MAX_MANIFEST_BYTES,
            };
            return Ok(refuse(&err, args.json, &args.manifest));
        }
    };
    let sigs_path = match &args.sigs {
        Some(p) => Some(p.clone()),
        None => Some(cosignatures_path(&args.manifest)).filter(|p| p.exists()),
    };
    let sigs = match &sigs_path {
        Some(p) => Some(
            fsutil::read_limited(p, fleetgate_trust::MAX_DOCUMENT_BYTES as u64)
                .with_context(|| format!("read co-signatures {}", p.display()))?,
        ),
        None => None,
    };
    let verified = match verify_manifest_detached(&bytes, sigs.as_deref(), &keyring, now, &opts) {
        Ok(v) => v,
        Err(err) => return Ok(refuse(&err, args.json, &args.manifest)),
    };
    let mut warnings = Vec::new();
    if let Some(back) = verified.clock_stepped_back_by {
        warnings.push(format!(
            "the clock is {back}s behind the last verified time; that later time was used"
        ));
    }
    if verified.legacy_hart {
        warnings.push(
            "HART legacy manifest: it has no sequence or expiry, so neither was checked".to_owned(),
        );
    }
    let mut committed = false;
    if args.commit
        && let Some(floor) = floor.as_mut()
    {
        floor.commit(verified.manifest.sequence, now)?;
        committed = true;
    }
    let m = &verified.manifest;
    if args.json {
        println!(
            "{}",
            json!({
                "success": true,
                "valid": true,
                "manifest": args.manifest,
                "version": m.version,
                "kind": m.kind.as_str(),
                "sequence": m.sequence,
                "expires_at": m.expires_at,
                "code_hash": m.code_hash,
                "git_sha": m.git_sha,
                "key_ids": verified.key_ids,
                "hash_scheme": m.hash_scheme.as_str(),
                "cosignatures": sigs_path,
                "legacy_hart": verified.legacy_hart,
                "floor_committed": committed,
                "warnings": warnings,
            })
        );
    } else {
        for w in &warnings {
            eprintln!("fleetgate: warning: {w}");
        }
        println!(
            "valid: {} {} (sequence {}) signed by {}{}",
            m.kind.as_str(),
            m.version,
            m.sequence,
            verified.key_ids.join(", "),
            if committed { "; floor raised" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `trust sign` of a release manifest: the signature goes to the co-signature file;
/// the manifest is rewritten only when it was unsigned (it gets `master_signature`) or
/// carried the embedded `signatures` of an earlier fleetgate (they move out).
fn cosign_manifest(file: &Path, bytes: &[u8], key: &SigningKey) -> anyhow::Result<ExitCode> {
    let sigs_path = cosignatures_path(file);
    let existing = if sigs_path.exists() {
        Some(
            fsutil::read_limited(&sigs_path, fleetgate_trust::MAX_DOCUMENT_BYTES as u64)
                .with_context(|| format!("read co-signatures {}", sigs_path.display()))?,
        )
    } else {
        None
    };
    let signed = fleetgate_trust::add_manifest_signature(bytes, existing.as_deref(), key)?;
    // Co-signatures first: a crash before the manifest is rewritten leaves signatures
    // that are counted once however often they appear.
    if let Some(c) = &signed.cosignatures {
        fsutil::atomic_write(&sigs_path, c, 0o644)?;
    }
    if signed.manifest != bytes {
        fsutil::atomic_write(file, &signed.manifest, 0o644)?;
    }
    let had_master = matches!(
        fleetgate_trust::parse_strict(bytes),
        Ok(serde_json::Value::Object(ref o))
            if o.get("master_signature").and_then(serde_json::Value::as_str).is_some_and(|s| !s.is_empty())
    );
    let to = if had_master { &sigs_path } else { file };
    println!(
        "added the signature of key {} to {} (manifest {})",
        key.key_id(),
        to.display(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `fleetgate trust init|sign|rotate`.
///
/// # Errors
/// Any failure to read, validate, sign or write; a refused rotation exits
/// with the verification code instead.
pub fn run_trust(cmd: TrustCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TrustCmd::Init(args) => {
            if !args.force && args.out.exists() {
                bail!(
                    "write trust file {}: it exists; pass --force to replace it",
                    args.out.display()
                );
            }
            let keys = args
                .keys
                .iter()
                .map(|k| {
                    let text = if Path::new(k).is_file() {
                        std::fs::read_to_string(k)
                            .with_context(|| format!("read public key {k}"))?
                    } else {
                        k.clone()
                    };
                    Ok(TrustedKey::new(PublicKey::from_hex(&text)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ring = Keyring::new(args.trust_version, args.threshold, keys)?;
            fsutil::atomic_write(&args.out, &ring.to_bytes(), 0o644)?;
            println!(
                "wrote trust file {} (version {}, {}-of-{}): {}",
                args.out.display(),
                ring.version(),
                ring.threshold(),
                ring.keys().len(),
                ring.keys()
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        TrustCmd::Sign(args) => {
            let key = SigningKey::load(args.key_file.as_deref())?;
            let bytes =
                fsutil::read_limited(&args.file, fleetgate_trust::MAX_DOCUMENT_BYTES as u64)?;
            let is_manifest = matches!(
                fleetgate_trust::parse_strict(&bytes),
                Ok(serde_json::Value::Object(ref o)) if fleetgate_trust::cosign::is_manifest_object(o)
            );
            if is_manifest {
                return cosign_manifest(&args.file, &bytes, &key);
            }
            let signed = fleetgate_trust::add_signature(&bytes, &key)?;
            fsutil::atomic_write(&args.file, &signed, 0o644)?;
            println!(
                "added the signature of key {} to {}",
                key.key_id(),
                args.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        TrustCmd::Rotate(args) => {
            let current = Keyring::load(&args.trust)?;
            let new_bytes =
                fsutil::read_limited(&args.new, fleetgate_trust::MAX_KEYRING_BYTES as u64)?;
            let new = match current.rotate(&new_bytes, unix_now()) {
                Ok(new) => new,
                Err(
                    e @ (KeyringError::NotSignedByCurrent { .. }
                    | KeyringError::NotSignedByNew { .. }),
                ) => {
                    let code = match &e {
                        KeyringError::NotSignedByCurrent { source, .. }
                        | KeyringError::NotSignedByNew { source, .. } => source.exit_code(),
                        _ => 1,
                    };
                    eprintln!("fleetgate: {e}");
                    return Ok(ExitCode::from(code));
                }
                Err(e) => return Err(e.into()),
            };
            let old = fsutil::read_limited(&args.trust, fleetgate_trust::MAX_KEYRING_BYTES as u64)?;
            let mut prev = args.trust.clone().into_os_string();
            prev.push(".prev");
            fsutil::atomic_write(Path::new(&prev), &old, 0o644)?;
            fsutil::atomic_write(&args.trust, &new_bytes, 0o644)?;
            println!(
                "rotated {} to version {} ({}-of-{}): {}; previous kept as {}",
                args.trust.display(),
                new.version(),
                new.threshold(),
                new.keys().len(),
                new.keys()
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                Path::new(&prev).display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
