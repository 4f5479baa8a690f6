//! The gates. Each evaluation returns a verdict (never an `Err`): anything that goes
//! wrong — a missing command, report, key or fleet — is a failed verdict that says what
//! is missing and what to do.

use crate::bench_store::{self, NotRun, Snapshot};
use crate::checkout::checkout;
use crate::codehash::{CodeHash, code_hash_with, scheme_of, sha256_file};
use crate::exec::run_shell;
use crate::{RuntimeError, junit, now};
use fleetgate_core::bench::{ComparePolicy, compare, parse_results};
use fleetgate_core::config::Config;
use fleetgate_core::{GateFacts, PipelineState, Stage, Verdict, Version};
use serde_json::json;
use sha2::Digest;
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
    /// The orchestrator's fleet connection (opened on first use, shared by clones).
    pub fleet: std::sync::Arc<crate::fleet::FleetHandle>,
}

impl GateContext {
    fn checkout_dir(&self, state: &PipelineState) -> PathBuf {
        let run = state.run_id.clone().unwrap_or_else(|| "run".into());
        self.state_dir.join("work").join(run)
    }

    /// The code hash of the run's commit under the configured scheme (`hart`: over a
    /// clean checkout of its own, made and removed here, so no gate command's output is
    /// ever hashed).
    fn code_hash(&self, state: &PipelineState) -> Result<CodeHash, RuntimeError> {
        let run = state.run_id.clone().unwrap_or_else(|| "run".into());
        let scratch = self.state_dir.join("work").join(format!("{run}-hash"));
        code_hash_with(
            scheme_of(self.cfg.stages.build.hash_scheme),
            &self.repo,
            &state.git_sha,
            &self.cfg.code_hash,
            &scratch,
        )
    }

    pub(crate) fn log_path(&self, state: &PipelineState, stage: Stage) -> PathBuf {
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

/// Evaluate the gate of `stage` for the run in `state`. `checkpoint` persists a stage's
/// progress (under the epoch the gate started with) before an outside effect. The fleet
/// gates take their stage's progress out of `state` as their working copy (on a large
/// fleet it holds one delivery per node: no second copy): `state` is the caller's
/// snapshot, not used after.
pub fn evaluate(
    ctx: &GateContext,
    state: &mut PipelineState,
    stage: Stage,
    checkpoint: crate::fleet::Checkpoint<'_>,
) -> Result<(Verdict, GateFacts), RuntimeError> {
    // `[approval] before`: the gate does not run (nothing built, signed or sent) until
    // enough signed approvals are in.
    if let Some(v) = crate::approval::waiting(&ctx.state_dir, &ctx.cfg, state, stage) {
        return Ok((v, GateFacts::default()));
    }
    let r = match stage {
        Stage::Building => build(ctx, state),
        Stage::Testing => test(ctx, state).map(|v| (v, GateFacts::default())),
        Stage::Auditing => audit(ctx, state).map(|v| (v, GateFacts::default())),
        Stage::Benchmarking => benchmark(ctx, state).map(|v| (v, GateFacts::default())),
        Stage::Signing => sign(ctx, state),
        Stage::Canary => ctx
            .fleet
            .get(ctx)
            .and_then(|link| crate::fleet::canary(ctx, &link, state, checkpoint))
            .map(|v| (v, GateFacts::default())),
        Stage::Deploying => ctx
            .fleet
            .get(ctx)
            .and_then(|link| crate::fleet::deploy(ctx, &link, state, checkpoint))
            .map(|v| (v, GateFacts::default())),
        Stage::Idle | Stage::Completed | Stage::RolledBack | Stage::Failed => Ok((
            Verdict::failed(format!("`{stage}` has no gate"), serde_json::Value::Null),
            GateFacts::default(),
        )),
    };
    match r {
        Ok(v) => Ok(v),
        // Not this orchestrator's turn, or the run moved on: no verdict at all.
        Err(e @ (RuntimeError::Fenced(_) | RuntimeError::Superseded(_))) => Err(e),
        Err(e) => Ok((
            Verdict::failed(
                format!("{} gate could not run: {e}", stage.gate_name()),
                json!({"error": e.to_string()}),
            ),
            GateFacts::default(),
        )),
    }
}

/// Where SIGN writes the signed manifest bytes (the exact bytes that were verified).
pub fn manifest_path(state_dir: &Path) -> PathBuf {
    state_dir.join("release_manifest.json")
}

pub(crate) fn guardrail_hash(cfg: &Config) -> Result<String, RuntimeError> {
    let map: serde_json::Map<String, serde_json::Value> = cfg
        .stages
        .audit
        .guardrails
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_ascii_lowercase())))
        .collect();
    let bytes = fleetgate_trust::to_canonical_bytes(&serde_json::Value::Object(map))
        .map_err(|e| RuntimeError::encode("the guardrail pins", e))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// An earlier attempt of this run left a manifest that is waiting for co-signatures:
/// reuse it instead of signing a new one.
fn pending_manifest(ctx: &GateContext, state: &PipelineState) -> Option<Vec<u8>> {
    let bytes = std::fs::read(manifest_path(&ctx.state_dir)).ok()?;
    if bytes.len() > fleetgate_trust::MAX_MANIFEST_BYTES {
        return None;
    }
    is_of_run(&bytes, state).then_some(bytes)
}

/// Whether a manifest (or signing request) is this run's: same version, commit, code
/// hash and run id, and a sequence above the last one released.
fn is_of_run(bytes: &[u8], state: &PipelineState) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let same = || -> Option<bool> {
        Some(
            v.get("version")?.as_str()? == state.version
                && v.get("git_sha")?.as_str()? == state.git_sha
                && v.get("code_hash")?.as_str() == state.code_hash.as_deref()
                && v.get("run_id").and_then(|r| r.as_str()) == state.run_id.as_deref()
                && v.get("sequence")?.as_u64()? > state.last_sequence,
        )
    };
    same().unwrap_or(false)
}

/// External signing: this run's signing request, if SIGN already wrote it.
fn external_request_of_run(ctx: &GateContext, state: &PipelineState) -> Option<PathBuf> {
    let path = crate::external_sign::request_path(&ctx.state_dir);
    let bytes = std::fs::read(&path).ok()?;
    is_of_run(&bytes, state).then_some(path)
}

/// SIGN's verdict while it waits for an externally signed manifest.
fn external_pending(request: &Path) -> (Verdict, GateFacts) {
    (
        Verdict::pending(
            format!(
                "waiting for an externally signed manifest ([signing] mode = \"external\"): where \
                 the key is, run `fleetgate manifest sign-request {req} --key-file KEY --out \
                 signed.json`, then here `fleetgate manifest submit signed.json`",
                req = request.display()
            ),
            json!({"signing": "external", "request": request.display().to_string()}),
        ),
        GateFacts::default(),
    )
}

/// The co-signature file beside the manifest, if there is one (size-limited).
fn read_cosignatures(path: &Path) -> Result<Option<Vec<u8>>, RuntimeError> {
    match fleetgate_trust::fsutil::read_limited(path, fleetgate_trust::MAX_DOCUMENT_BYTES as u64) {
        Ok(b) => Ok(Some(b)),
        Err(_) if !path.exists() => Ok(None),
        Err(e) => Err(RuntimeError::trust(
            crate::TrustStep::ReadCosignatures(path.to_owned()),
            e,
        )),
    }
}

fn sign(ctx: &GateContext, state: &PipelineState) -> Result<(Verdict, GateFacts), RuntimeError> {
    use fleetgate_trust::{Keyring, SigningKey, VerifyError, VerifyOptions};
    let s = &ctx.cfg.signing;
    let Some(trust_file) = &s.trust_file else {
        return Ok((
            Verdict::failed(
                "no trust file configured: set `[signing] trust_file = \"keys/trust.json\"` (create one with \
                 `fleetgate trust init`); a manifest is only released once it verifies against the pinned keys",
                json!({"missing": "signing.trust_file"}),
            ),
            GateFacts::default(),
        ));
    };
    let trust_path = resolve(&ctx.base, trust_file);
    let keyring = match Keyring::load(&trust_path) {
        Ok(k) => k,
        Err(e) => {
            return Ok((
                Verdict::failed(
                    format!("cannot use trust file {}: {e}", trust_path.display()),
                    json!({}),
                ),
                GateFacts::default(),
            ));
        }
    };
    let now_secs = fleetgate_trust::unix_now();
    let out = manifest_path(&ctx.state_dir);
    let sigs_path = fleetgate_trust::cosignatures_path(&out);

    // Only the holder of the registry's pipeline lease signs releases for the fleet; its
    // fencing epoch goes into the manifest.
    let fencing_epoch = u64::try_from(ctx.fleet.get(ctx)?.fencing_epoch()).unwrap_or(0);
    let external = s.mode == Some(fleetgate_core::config::SigningMode::External);
    let bytes = if let Some(existing) = pending_manifest(ctx, state) {
        existing
    } else if external && let Some(req) = external_request_of_run(ctx, state) {
        // The request was written at an earlier check: its fields are fixed; wait on.
        return Ok(external_pending(&req));
    } else {
        let key_file = s.key_file.as_deref().map(|k| resolve(&ctx.base, k));
        if !external && let Some(kf) = &key_file {
            let tracked = match key_tracked_by_git(&ctx.repo, kf) {
                Ok(t) => t,
                Err(e) => {
                    return Ok((
                        Verdict::failed(
                            format!(
                                "cannot tell whether the signing key {} is tracked by git in {}: {e}; refusing to sign",
                                kf.display(),
                                ctx.repo.display()
                            ),
                            json!({"key_file": kf.display().to_string()}),
                        ),
                        GateFacts::default(),
                    ));
                }
            };
            if let Some(rel) = tracked {
                let rel = rel.display().to_string();
                return Ok((
                    Verdict::failed(
                        format!(
                            "the signing key {} is tracked by git in the release repository ({rel}): whoever has \
                             the repository has the key. Refusing to sign. Remove it (`git rm --cached {rel}`, \
                             add it to .gitignore), make a new key outside the repository (`fleetgate keygen`), \
                             put its public key in the trust file and point `[signing] key_file` at it",
                            kf.display()
                        ),
                        json!({"tracked_key": rel}),
                    ),
                    GateFacts::default(),
                ));
            }
        }
        // External mode never reads a key, even one this host happens to have.
        let key = match (!external).then(|| SigningKey::load(key_file.as_deref())) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                return Ok((
                    Verdict::failed(
                        format!(
                            "no signing key: {e} (set `[signing] key_file`, or FLEETGATE_SIGNING_KEY_HEX / MASTER_PRIVATE_KEY_HEX / HEVOLVE_MASTER_PRIVATE_KEY_HEX / HEVOLVE_MASTER_PRIVATE_KEY); \
                             there is no unsigned path"
                        ),
                        json!({"missing": "signing key"}),
                    ),
                    GateFacts::default(),
                ));
            }
        };
        let Some(code_hash) = state.code_hash.clone() else {
            return Ok((
                Verdict::failed(
                    "the run has no code hash (BUILD did not record one)",
                    json!({}),
                ),
                GateFacts::default(),
            ));
        };
        let hashes = ctx.code_hash(state)?;
        if hashes.code_hash != code_hash {
            return Ok((
                Verdict::failed(
                    format!(
                        "the commit's code hash is now {} but BUILD recorded {code_hash}; refusing to sign",
                        hashes.code_hash
                    ),
                    json!({"built": code_hash, "now": hashes.code_hash}),
                ),
                GateFacts::default(),
            ));
        }
        let sequence = state.last_sequence.saturating_add(1).max(now_secs);
        let mut gate_summary = serde_json::Map::new();
        for (st, r) in &state.gate_results {
            gate_summary.insert(
                st.as_str().to_owned(),
                json!(if r.verdict.skipped {
                    "skipped"
                } else {
                    "passed"
                }),
            );
        }
        let mut extra = serde_json::Map::new();
        extra.insert("run_id".into(), json!(state.run_id));
        extra.insert("gates".into(), serde_json::Value::Object(gate_summary));
        // The provenance statement first: the manifest carries its digest, so the
        // signature covers the evidence it names.
        let release = crate::provenance::Release {
            code_hash: &code_hash,
            file_manifest_hash: &hashes.file_manifest_hash,
            hash_scheme: scheme_of(ctx.cfg.stages.build.hash_scheme).as_str(),
            sequence,
            now: now_secs,
        };
        let provenance_sha256 = match crate::provenance::write(ctx, state, &release)? {
            Ok((_, digest)) => digest,
            Err(msg) => {
                return Ok((
                    Verdict::failed(msg, json!({"provenance": "evidence changed or missing"})),
                    GateFacts::default(),
                ));
            }
        };
        // The artifacts BUILD stored, checked again byte for byte before they are signed.
        let artifacts = match crate::artifacts::recorded(state) {
            None if !ctx.cfg.stages.build.artifacts.is_empty() => {
                return Ok((
                    Verdict::failed(
                        "[stages.build] artifacts is set but BUILD recorded no artifacts for this run (configured after BUILD ran?): start the run again",
                        json!({"artifacts": "missing"}),
                    ),
                    GateFacts::default(),
                ));
            }
            None => Vec::new(),
            Some(Err(msg)) => {
                return Ok((
                    Verdict::failed(msg, json!({"artifacts": "unreadable"})),
                    GateFacts::default(),
                ));
            }
            Some(Ok(list)) => {
                if let Err(msg) = crate::artifacts::check_stored(&ctx.state_dir, &list) {
                    return Ok((
                        Verdict::failed(msg, json!({"artifacts": "changed or missing"})),
                        GateFacts::default(),
                    ));
                }
                list
            }
        };
        let manifest = release_manifest(
            ctx,
            ReleaseFields {
                version: state.version.clone(),
                git_sha: state.git_sha.clone(),
                code_hash,
                file_manifest_hash: hashes.file_manifest_hash,
                sequence,
                now_secs,
                fencing_epoch,
                provenance_sha256: Some(provenance_sha256),
                artifacts,
                extra,
            },
            key.as_ref(),
        )?;
        let Some(key) = key else {
            // External mode: write the request once; a signer elsewhere signs it.
            let req = crate::external_sign::request_path(&ctx.state_dir);
            let body = crate::external_sign::request_bytes(&manifest)?;
            fleetgate_store::write_atomic(&req, &body, None)
                .map_err(|e| RuntimeError::io("write", &req, e))?;
            return Ok(external_pending(&req));
        };
        let bytes = fleetgate_trust::sign_manifest(&manifest, &[&key])
            .map_err(|e| RuntimeError::trust(crate::TrustStep::SignManifest, e))?;
        // Co-signatures of an earlier manifest would be refused with this one: remove them
        // before the new manifest exists (a crash in between re-signs: no run id matches).
        match std::fs::remove_file(&sigs_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RuntimeError::io(
                    "remove stale co-signatures",
                    &sigs_path,
                    e,
                ));
            }
        }
        fleetgate_store::write_atomic(&out, &bytes, None)
            .map_err(|e| RuntimeError::io("write", &out, e))?;
        bytes
    };
    let sigs = read_cosignatures(&sigs_path)?;
    let verified = fleetgate_trust::verify_manifest_detached(
        &bytes,
        sigs.as_deref(),
        &keyring,
        now_secs,
        &VerifyOptions::default(),
    );
    match verified {
        Ok(v) => {
            let m = &v.manifest;
            let value = serde_json::Value::Object(v.value.clone());
            // What nodes are sent: the manifest itself, or with its co-signatures as a bundle.
            let bytes = fleetgate_trust::bundle(&bytes, sigs.as_deref())
                .map_err(|e| RuntimeError::trust(crate::TrustStep::BundleCosigned, e))?;
            let archive = ctx
                .state_dir
                .join("manifests")
                .join(format!("{}.json", m.sequence));
            if let Some(parent) = archive.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| RuntimeError::io("create", parent, e))?;
            }
            fleetgate_store::write_atomic(&archive, &bytes, None)
                .map_err(|e| RuntimeError::io("write", &archive, e))?;
            Ok((
                Verdict::passed(
                    format!(
                        "manifest for {} signed (sequence {}, expires {}) and verified against {} by {} of {} required key(s): {}",
                        m.version,
                        m.sequence,
                        fleetgate_trust::rfc3339_seconds(m.expires_at),
                        trust_path.display(),
                        v.key_ids.len(),
                        keyring.threshold(),
                        out.display()
                    ),
                    json!({"sequence": m.sequence, "key_ids": v.key_ids, "threshold": keyring.threshold(),
                    "manifest_file": out.display().to_string(), "expires_at": m.expires_at,
                    "provenance_sha256": m.provenance_sha256,
                    "provenance_file": m.provenance_sha256.as_ref().map(|_| {
                        crate::provenance::path(&ctx.state_dir, &m.version).display().to_string()
                    })}),
                ),
                GateFacts {
                    manifest: Some(value),
                    sequence: Some(m.sequence),
                    ..GateFacts::default()
                },
            ))
        }
        Err(VerifyError::BelowThreshold {
            valid, threshold, ..
        }) => Ok((
            Verdict::pending(
                format!(
                    "manifest signed by {valid} of the {threshold} keys the trust file requires; co-sign it with \
                     `fleetgate trust sign {} --key-file KEY` (writes the co-signatures to {}; the gate passes \
                     once it verifies)",
                    out.display(),
                    sigs_path.display()
                ),
                json!({"valid_signatures": valid, "threshold": threshold, "manifest_file": out.display().to_string()}),
            ),
            GateFacts::default(),
        )),
        Err(e) => Ok((
            Verdict::failed(
                format!(
                    "the signed manifest does not verify against {}: {e}",
                    trust_path.display()
                ),
                json!({"error": e.name(), "exit_code": e.exit_code()}),
            ),
            GateFacts::default(),
        )),
    }
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
    run_step_to(ctx, state, stage, command, t, &ctx.log_path(state, stage))
}

/// The log of the benchmark command's repeat `k` (1-based): the stage's log for the
/// first, `benchmarking.repeat-K.log` beside it for the others.
fn bench_repeat_log(ctx: &GateContext, state: &PipelineState, k: u32) -> PathBuf {
    let log = ctx.log_path(state, Stage::Benchmarking);
    if k == 1 {
        log
    } else {
        log.with_file_name(format!("{}.repeat-{k}.log", Stage::Benchmarking.as_str()))
    }
}

/// [`run_step`], its output logged to `log`.
fn run_step_to(
    ctx: &GateContext,
    state: &PipelineState,
    stage: Stage,
    command: &str,
    t: Option<i64>,
    log: &Path,
) -> Result<(Option<Verdict>, serde_json::Value, PathBuf), RuntimeError> {
    let dir = checkout(
        &ctx.repo,
        &state.git_sha,
        &ctx.checkout_dir(state),
        stage == Stage::Building,
    )?;
    let log = log.to_owned();
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
    let hash = ctx.code_hash(state)?;
    let facts = GateFacts {
        code_hash: Some(hash.code_hash.clone()),
        ..GateFacts::default()
    };
    let mut figures = json!({
        "code_hash": hash.code_hash, "file_manifest_hash": hash.file_manifest_hash,
        "files": hash.files.len(), "commit": hash.commit,
        "hash_scheme": scheme_of(ctx.cfg.stages.build.hash_scheme).as_str(),
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
    let (failed, run, dir) = run_step(ctx, state, Stage::Building, cmd, b.timeout_secs)?;
    figures["build"] = run;
    crate::provenance::attach(
        &ctx.state_dir,
        &mut figures,
        &[(ctx.log_path(state, Stage::Building), "log", "text/plain")],
    );
    if let Some(mut v) = failed {
        v.figures = figures;
        return Ok((v, facts));
    }
    let mut shipped = String::new();
    if !b.artifacts.is_empty() {
        match crate::artifacts::collect(&dir, &b.artifacts, &ctx.state_dir)? {
            Err(msg) => return Ok((Verdict::failed(msg, figures), facts)),
            Ok(list) => {
                let bytes: u64 = list.iter().map(|a| a.size).sum();
                shipped = format!(
                    "; {} artifact(s), {bytes} bytes, stored by digest: {}",
                    list.len(),
                    list.iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                figures["artifacts"] = json!(list);
            }
        }
    }
    Ok((
        Verdict::passed(
            format!(
                "code hash {} ({} scheme) over {} files; build command exited 0{shipped}",
                hash.code_hash,
                scheme_of(b.hash_scheme),
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
    // The report is kept beside the logs (the checkout is reused by later gates): the
    // bytes judged are the bytes kept, so the evidence digest is of what was judged.
    let kept = ctx
        .log_path(state, Stage::Testing)
        .with_file_name("junit.xml");
    let _ = std::fs::remove_file(&kept);
    let counts = match junit::read_counts_keeping(&report_path, Some(&kept)) {
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
    crate::provenance::attach(
        &ctx.state_dir,
        &mut v.figures,
        &[
            (ctx.log_path(state, Stage::Testing), "log", "text/plain"),
            (kept, "junit", "application/xml"),
        ],
    );
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
    let mut figures =
        json!({"run": run, "guardrails_checked": checked, "guardrail_mismatches": bad});
    crate::provenance::attach(
        &ctx.state_dir,
        &mut figures,
        &[(
            ctx.log_path(state, Stage::Auditing),
            "audit-output",
            "text/plain",
        )],
    );
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

/// Names of capture work directories and locks under `<state>/work` start with this.
pub const CAPTURE_PREFIX: &str = "bench-";

/// Capture a benchmark snapshot of `version` at commit `sha` and store it (the
/// `capture_benchmark` tool and `fleetgate bench capture`); returns it with its path.
///
/// One capture per version at a time: while one runs, another of the same version is
/// refused at once with [`RuntimeError::Busy`] (nothing run), so the stored snapshot is
/// never written by two captures at once. Captures of different versions run side by
/// side. Each runs in a checkout of its own, `work/bench-<version>-<capture id>` (its
/// `FLEETGATE_RUN_ID` and log directory carry the same name), removed when it ends;
/// capture directories left by a crash are removed before it starts.
pub fn capture_version(
    ctx: &GateContext,
    version: &Version,
    sha: String,
    tier: &str,
) -> Result<Result<(Snapshot, PathBuf), Verdict>, RuntimeError> {
    let root = ctx.state_dir.join("work");
    let per_version = format!("{CAPTURE_PREFIX}{}", version.as_str());
    let Some(_version_lock) = crate::checkout::WorkLock::try_claim(&root, &per_version)? else {
        return Err(crate::BusyReason::CaptureRunning {
            version: version.to_string(),
        }
        .into());
    };
    crate::checkout::clean_stale(&root, &|name| name.starts_with(CAPTURE_PREFIX), None);
    let id = format!("{per_version}-{}", crate::checkout::random_suffix());
    let Some(work) = crate::checkout::WorkLock::try_claim(&root, &id)? else {
        return Err(crate::BusyReason::CaptureDirInUse { id }.into());
    };
    let work = work.remove_on_drop();
    let mut st = PipelineState::idle();
    st.version = version.to_string();
    st.git_sha = sha;
    st.run_id = Some(id);
    let snap = match capture(ctx, &st, tier)? {
        Ok(s) => s,
        Err(v) => return Ok(Err(v)),
    };
    let path = bench_store::save(&ctx.state_dir, &snap)?;
    drop(work);
    Ok(Ok((snap, path)))
}

/// Run the benchmark command and every allowed registered benchmark of `tier` in the
/// release checkout and read their results (used by the gate and by `bench capture`).
/// Registered benchmarks that are not allowed are listed in the snapshot's `not_run`.
pub fn capture(
    ctx: &GateContext,
    state: &PipelineState,
    tier: &str,
) -> Result<Result<Snapshot, Verdict>, RuntimeError> {
    let b = &ctx.cfg.stages.benchmark;
    let filter = crate::bench_registry::Tier::parse(tier).unwrap_or_default();
    let registered = match crate::bench_registry::list(&ctx.state_dir, &ctx.cfg.benchmarks.allowed)
    {
        Ok(l) => l,
        Err(e) => {
            return Ok(Err(Verdict::failed(
                format!("cannot read the registered benchmarks: {e}"),
                json!({}),
            )));
        }
    };
    let (to_run, not_run): (Vec<_>, Vec<_>) = registered
        .into_iter()
        .filter(|l| filter.includes(l.def.tier))
        .partition(|l| l.allowed);
    let not_run: Vec<NotRun> = not_run
        .into_iter()
        .map(|l| NotRun {
            name: l.def.name,
            reason: l.not_allowed_because.unwrap_or_default(),
        })
        .collect();
    if b.command.is_none() && to_run.is_empty() {
        return Ok(Err(missing_command(Stage::Benchmarking, "benchmark")));
    }
    let mut benchmarks = Vec::new();
    if let Some(cmd) = &b.command {
        let Some(results) = &b.results else {
            return Ok(Err(Verdict::failed(
                "no benchmark results file configured: set `[stages.benchmark] results = \"path/to/bench.json\"`",
                json!({"missing": "stages.benchmark.results"}),
            )));
        };
        let dir = checkout(&ctx.repo, &state.git_sha, &ctx.checkout_dir(state), false)?;
        let results_path = dir.join(results);
        let repeats = ctx.cfg.bench_repeats();
        let mut runs = Vec::with_capacity(repeats as usize);
        for k in 1..=repeats {
            let _ = std::fs::remove_file(&results_path);
            let log = bench_repeat_log(ctx, state, k);
            let (failed, run, _) =
                run_step_to(ctx, state, Stage::Benchmarking, cmd, b.timeout_secs, &log)?;
            if let Some(mut v) = failed {
                if repeats > 1 {
                    v.detail = format!("repeat {k} of {repeats}: {}", v.detail);
                }
                return Ok(Err(v));
            }
            match read_results(&results_path, results) {
                Ok(entries) => runs.push(entries),
                Err(detail) => {
                    let detail = if repeats > 1 {
                        format!("repeat {k} of {repeats}: {detail}")
                    } else {
                        detail
                    };
                    return Ok(Err(Verdict::failed(detail, json!({"run": run}))));
                }
            }
        }
        match fleetgate_core::bench::combine_repeats(&runs) {
            Ok(entries) => benchmarks.extend(entries),
            Err(e) => {
                return Ok(Err(Verdict::failed(
                    format!("{results}: {e}"),
                    json!({"repeats": repeats}),
                )));
            }
        }
    }
    for l in &to_run {
        match run_registered(ctx, state, &l.def)? {
            Ok(entries) => benchmarks.extend(entries),
            Err(v) => return Ok(Err(v)),
        }
    }
    Ok(Ok(Snapshot {
        version: state.version.clone(),
        git_sha: state.git_sha.clone(),
        captured_at: now(),
        tier: tier.to_owned(),
        benchmarks,
        registered: to_run.iter().map(|l| l.def.name.clone()).collect(),
        not_run,
    }))
}

fn read_results(
    path: &Path,
    label: &str,
) -> Result<Vec<fleetgate_core::bench::BenchEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("the benchmark command exited 0 but its results file {label} cannot be read: {e}")
    })?;
    parse_results(&text).map_err(|e| format!("{label}: {e}"))
}

/// Run one allowed registered benchmark (argv, no shell) in the release checkout, as
/// many times as `[stages.benchmark] repeats` (the median of the repeats, every repeat
/// in `samples`, as for the configured command); its entries are named `NAME/<entry>`.
fn run_registered(
    ctx: &GateContext,
    state: &PipelineState,
    def: &crate::bench_registry::BenchmarkDef,
) -> Result<Result<Vec<fleetgate_core::bench::BenchEntry>, Verdict>, RuntimeError> {
    let dir = checkout(&ctx.repo, &state.git_sha, &ctx.checkout_dir(state), false)?;
    let results_path = dir.join(&def.results);
    let limit = Duration::from_secs(
        ctx.cfg
            .benchmarks
            .timeout_secs
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(600),
    );
    let repeats = ctx.cfg.bench_repeats();
    let repeat = |k: u32, detail: String| {
        if repeats > 1 {
            format!("repeat {k} of {repeats}: {detail}")
        } else {
            detail
        }
    };
    let mut runs = Vec::with_capacity(repeats as usize);
    for k in 1..=repeats {
        let _ = std::fs::remove_file(&results_path);
        let log = registered_log(ctx, state, &def.name, k, repeats);
        let figures = |out: Option<&crate::exec::CommandOutcome>| {
            json!({"registered_benchmark": def.name, "command": def.command,
                "repeat": k, "repeats": repeats,
                "exit_code": out.and_then(|o| o.code), "log": log.display().to_string()})
        };
        let out = match crate::exec::run_argv(
            &def.command,
            &dir,
            &ctx.env(state, Stage::Benchmarking),
            limit,
            &log,
        ) {
            Ok(o) => o,
            Err(e) => {
                return Ok(Err(Verdict::failed(
                    repeat(
                        k,
                        format!("registered benchmark `{}` could not start: {e}", def.name),
                    ),
                    figures(None),
                )));
            }
        };
        if !out.success() {
            return Ok(Err(Verdict::failed(
                repeat(
                    k,
                    format!(
                        "registered benchmark `{}` ({}) {}; output tail:\n{}",
                        def.name,
                        def.command.join(" "),
                        out.describe(limit),
                        if out.tail.is_empty() {
                            "(no output)"
                        } else {
                            &out.tail
                        }
                    ),
                ),
                figures(Some(&out)),
            )));
        }
        match read_results(&results_path, &def.results) {
            Ok(entries) => runs.push(entries),
            Err(detail) => {
                return Ok(Err(Verdict::failed(
                    repeat(k, format!("registered benchmark `{}`: {detail}", def.name)),
                    figures(Some(&out)),
                )));
            }
        }
    }
    match fleetgate_core::bench::combine_repeats(&runs) {
        Ok(entries) => Ok(Ok(entries
            .into_iter()
            .map(|mut e| {
                e.name = format!("{}/{}", def.name, e.name);
                e
            })
            .collect())),
        Err(e) => Ok(Err(Verdict::failed(
            format!("registered benchmark `{}`: {}: {e}", def.name, def.results),
            json!({"registered_benchmark": def.name, "repeats": repeats}),
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
    let saved = bench_store::save(&ctx.state_dir, &snap)?;
    let mut files = vec![(saved, "benchmark-results", "application/json")];
    if ctx.cfg.stages.benchmark.command.is_some() {
        for k in 1..=ctx.cfg.bench_repeats() {
            files.push((bench_repeat_log(ctx, state, k), "log", "text/plain"));
        }
    }
    let repeats = ctx.cfg.bench_repeats();
    for name in &snap.registered {
        for k in 1..=repeats {
            files.push((
                registered_log(ctx, state, name, k, repeats),
                "log",
                "text/plain",
            ));
        }
    }
    let mut v = judge_benchmarks(ctx, state, &snap)?;
    crate::provenance::attach(&ctx.state_dir, &mut v.figures, &files);
    Ok(v)
}

/// The log of a registered benchmark's run `k` of `repeats` (`benchmark-NAME.log` when
/// it runs once, `benchmark-NAME.repeat-K.log` otherwise).
fn registered_log(
    ctx: &GateContext,
    state: &PipelineState,
    name: &str,
    k: u32,
    repeats: u32,
) -> PathBuf {
    let file = if repeats > 1 {
        format!("benchmark-{name}.repeat-{k}.log")
    } else {
        format!("benchmark-{name}.log")
    };
    ctx.log_path(state, Stage::Benchmarking)
        .with_file_name(file)
}

/// The BENCHMARK verdict on a stored snapshot: against the last completed version's.
fn judge_benchmarks(
    ctx: &GateContext,
    state: &PipelineState,
    snap: &Snapshot,
) -> Result<Verdict, RuntimeError> {
    let Some(last) = state.rollback_target() else {
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

/// The key file's path inside `repo` when git tracks it there (in the index or the `HEAD`
/// commit); `None` when it is outside the work tree, untracked, or missing.
///
/// # Errors
/// The repository cannot be read (the caller fails closed).
fn key_tracked_by_git(repo: &Path, key: &Path) -> Result<Option<PathBuf>, String> {
    let Ok(key) = key.canonicalize() else {
        return Ok(None);
    };
    let repo = git2::Repository::open(repo).map_err(|e| e.message().to_owned())?;
    let Some(workdir) = repo.workdir() else {
        return Ok(None);
    };
    let workdir = workdir.canonicalize().map_err(|e| e.to_string())?;
    let Ok(rel) = key.strip_prefix(&workdir) else {
        return Ok(None);
    };
    let index = repo.index().map_err(|e| e.message().to_owned())?;
    if index.get_path(rel, 0).is_some() {
        return Ok(Some(rel.to_owned()));
    }
    let in_head = repo
        .head()
        .and_then(|h| h.peel_to_tree())
        .is_ok_and(|tree| tree.get_path(rel).is_ok());
    Ok(in_head.then(|| rel.to_owned()))
}

/// Relative paths in the config are relative to the config file's directory.
/// What differs between the release manifests this crate signs (SIGN's, and
/// `fleet provision`'s); the rest comes from the config.
pub(crate) struct ReleaseFields {
    pub(crate) version: String,
    pub(crate) git_sha: String,
    pub(crate) code_hash: String,
    pub(crate) file_manifest_hash: String,
    pub(crate) sequence: u64,
    pub(crate) now_secs: u64,
    pub(crate) fencing_epoch: u64,
    pub(crate) provenance_sha256: Option<String>,
    /// The built files BUILD collected (`[stages.build] artifacts`; empty: a source
    /// release).
    pub(crate) artifacts: Vec<fleetgate_trust::Artifact>,
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

/// A release manifest (unsigned) under the configured hash scheme, guardrail pins and
/// expiry, with a fresh canary seed; `key` names the signer (none: external signing).
pub(crate) fn release_manifest(
    ctx: &GateContext,
    f: ReleaseFields,
    key: Option<&fleetgate_trust::SigningKey>,
) -> Result<fleetgate_trust::Manifest, RuntimeError> {
    use fleetgate_trust::SigningKey;
    let expires_in = u64::try_from(ctx.cfg.signing.expires_in_secs.unwrap_or(30 * 24 * 3600))
        .unwrap_or(30 * 24 * 3600);
    Ok(fleetgate_trust::Manifest {
        schema_version: fleetgate_trust::MANIFEST_SCHEMA_VERSION,
        version: f.version,
        git_sha: f.git_sha,
        code_hash: f.code_hash,
        file_manifest_hash: f.file_manifest_hash,
        hash_scheme: scheme_of(ctx.cfg.stages.build.hash_scheme),
        guardrail_hash: guardrail_hash(&ctx.cfg)?,
        built_at: fleetgate_trust::rfc3339_seconds(f.now_secs),
        master_public_key: key.map(SigningKey::public_key_hex).unwrap_or_default(),
        sequence: f.sequence,
        expires_at: f.now_secs.saturating_add(expires_in),
        kind: fleetgate_trust::ManifestKind::Release,
        rollback_of: None,
        return_to_version: None,
        return_to_code_hash: None,
        return_to_git_sha: None,
        canary_seed: fleetgate_trust::random_canary_seed()
            .map_err(|e| RuntimeError::Config(crate::ConfigProblem::NoRandomness(e)))?,
        key_ids: key.map(SigningKey::key_id).into_iter().collect(),
        fencing_epoch: f.fencing_epoch,
        provenance_sha256: f.provenance_sha256,
        artifacts: f.artifacts,
        extra: f.extra,
    })
}

pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// The hash scheme of a completed release's `code_hash`: its record's (the scheme of its
/// signed manifest); for a record written before fleetgate kept it, the scheme of its
/// manifest archived at `state/manifests/<sequence>.json` (a manifest or a co-signed
/// bundle); only when neither exists, the configured scheme.
fn completed_hash_scheme(
    ctx: &GateContext,
    to: &fleetgate_core::CompletedRelease,
) -> fleetgate_trust::HashScheme {
    if let Some(s) = to.hash_scheme {
        return scheme_of(s);
    }
    let archived = to.sequence.and_then(|seq| {
        let path = ctx.state_dir.join("manifests").join(format!("{seq}.json"));
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let m = if doc.get(fleetgate_trust::cosign::BUNDLE_FIELD).is_some() {
            doc.get("manifest")?
        } else {
            &doc
        };
        // The archive must be the release recorded, not a later file at that path.
        (m.get("version")?.as_str()? == to.version && m.get("git_sha")?.as_str()? == to.git_sha)
            .then(
                || match m.get("hash_scheme").and_then(serde_json::Value::as_str) {
                    Some("hart") => fleetgate_trust::HashScheme::Hart,
                    _ => fleetgate_trust::HashScheme::Git,
                },
            )
    });
    archived.unwrap_or_else(|| {
        tracing::warn!(version = %to.version, "the completed release's record names no hash scheme and its manifest is not archived: assuming the configured one");
        scheme_of(ctx.cfg.stages.build.hash_scheme)
    })
}

/// Longest reason carried in a signed rollback order, in bytes: a manifest is refused
/// over `fleetgate_trust::MAX_MANIFEST_BYTES` by every verifier, the orchestrator's own
/// included, so an order carrying an unbounded reason (a verdict naming thousands of
/// nodes) could never be delivered. The whole reason stays in the run's state.
pub const MAX_ORDER_REASON_BYTES: usize = 2048;

/// `reason` cut to [`MAX_ORDER_REASON_BYTES`] at a character boundary, saying so.
fn order_reason(reason: &str) -> String {
    if reason.len() <= MAX_ORDER_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_ORDER_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes more: the whole reason is in the run's state)",
        &reason[..end],
        reason.len() - end
    )
}

/// Sign a rollback manifest returning the fleet to `to` (the last completed release).
pub fn sign_rollback(
    ctx: &GateContext,
    state: &PipelineState,
    to: &fleetgate_core::CompletedRelease,
    reason: &str,
) -> Result<Vec<u8>, RuntimeError> {
    use fleetgate_trust::{Keyring, Manifest, ManifestKind, RollbackOf, SigningKey, VerifyOptions};
    let s = &ctx.cfg.signing;
    let key_file = s.key_file.as_deref().map(|k| resolve(&ctx.base, k));
    let key = SigningKey::load(key_file.as_deref())
        .map_err(|e| RuntimeError::trust(crate::TrustStep::RollbackKey, e))?;
    let released = state.manifest.as_ref();
    let rel_seq = released
        .and_then(|m| m.get("sequence"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(state.last_sequence);
    let now_secs = fleetgate_trust::unix_now();
    let sequence = state
        .last_sequence
        .max(rel_seq)
        .saturating_add(1)
        .max(now_secs);
    let mut extra = serde_json::Map::new();
    extra.insert("run_id".into(), json!(state.run_id));
    extra.insert("reason".into(), json!(order_reason(reason)));
    let m = Manifest {
        schema_version: fleetgate_trust::MANIFEST_SCHEMA_VERSION,
        version: to.version.clone(),
        git_sha: to.git_sha.clone(),
        code_hash: to.code_hash.clone().unwrap_or_default(),
        file_manifest_hash: String::new(),
        // The scheme of `return_to_code_hash`: the one the returned-to release was signed
        // with, never the configured one (which may have changed since).
        hash_scheme: completed_hash_scheme(ctx, to),
        guardrail_hash: guardrail_hash(&ctx.cfg)?,
        built_at: fleetgate_trust::rfc3339_seconds(now_secs),
        master_public_key: key.public_key_hex(),
        sequence,
        expires_at: now_secs.saturating_add(
            u64::try_from(s.expires_in_secs.unwrap_or(30 * 24 * 3600)).unwrap_or(2_592_000),
        ),
        kind: ManifestKind::Rollback,
        rollback_of: Some(RollbackOf {
            sequence: rel_seq,
            version: state.version.clone(),
            code_hash: None,
        }),
        return_to_version: Some(to.version.clone()),
        return_to_code_hash: to.code_hash.clone(),
        return_to_git_sha: Some(to.git_sha.clone()),
        canary_seed: released
            .and_then(|m| m.get("canary_seed"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| "00".into()),
        key_ids: vec![key.key_id()],
        fencing_epoch: released
            .and_then(|m| m.get("fencing_epoch"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        provenance_sha256: None,
        // The returned-to release's built files, as it was signed with them: a node that
        // no longer keeps its slot downloads them again.
        artifacts: to
            .artifacts
            .as_ref()
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default(),
        extra,
    };
    let bytes = fleetgate_trust::sign_manifest(&m, &[&key])
        .map_err(|e| RuntimeError::trust(crate::TrustStep::SignRollback, e))?;
    if let Some(trust) = &s.trust_file {
        let path = resolve(&ctx.base, trust);
        let ring = Keyring::load(&path)
            .map_err(|e| RuntimeError::trust(crate::TrustStep::TrustFile(path.clone()), e))?;
        fleetgate_trust::verify_manifest(&bytes, &ring, now_secs, &VerifyOptions::default())
            .map_err(|e| RuntimeError::trust(crate::TrustStep::VerifyRollback, e))?;
    }
    Ok(bytes)
}
