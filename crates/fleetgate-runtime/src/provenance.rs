//! The runtime side of release provenance ([`fleetgate_trust::provenance`]): the gates
//! record the digest of each piece of evidence when they read it (`figures.evidence` of
//! their verdict), and SIGN gathers those records into the statement, checks that no
//! evidence file changed since its gate read it, and writes the statement to
//! `state/provenance/<version>.intoto.json`.

use crate::RuntimeError;
use crate::gates::GateContext;
use fleetgate_core::{PipelineState, Stage};
use fleetgate_trust::provenance::{Evidence, ProvenanceInputs, Statement, sha256_file};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The directory of the statements.
#[must_use]
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("provenance")
}

/// Where SIGN writes the statement of `version` (a validated version is a safe file
/// name).
#[must_use]
pub fn path(state_dir: &Path, version: &str) -> PathBuf {
    dir(state_dir).join(format!("{version}.intoto.json"))
}

/// A gate's record of one piece of evidence, for its verdict's `figures.evidence`:
/// `{"name": <path relative to the state dir>, "sha256", "kind", "media_type"}`. `None`
/// when the file does not exist or lies outside the state directory.
#[must_use]
pub fn record(state_dir: &Path, file: &Path, kind: &str, media_type: &str) -> Option<Value> {
    let rel = file.strip_prefix(state_dir).ok()?;
    let name = rel.to_str()?.to_owned();
    let sha256 = sha256_file(file).ok()?;
    Some(json!({"name": name, "sha256": sha256, "kind": kind, "media_type": media_type}))
}

/// Appends the records of `files` (path, kind, media type) that exist to
/// `figures.evidence`.
pub fn attach(state_dir: &Path, figures: &mut Value, files: &[(PathBuf, &str, &str)]) {
    let records: Vec<Value> = files
        .iter()
        .filter_map(|(p, kind, media)| record(state_dir, p, kind, media))
        .collect();
    if records.is_empty() {
        return;
    }
    if !figures.is_object() {
        *figures = json!({});
    }
    match figures.get_mut("evidence").and_then(Value::as_array_mut) {
        Some(list) => list.extend(records),
        None => figures["evidence"] = Value::Array(records),
    }
}

/// The evidence the passed gates of the run recorded, in pipeline order. Each file must
/// still have the digest its gate recorded: `Err` names the first that does not (the
/// statement would attest to something else than what the gate judged).
///
/// # Errors
/// A message for a failed verdict.
pub fn gather(state_dir: &Path, state: &PipelineState) -> Result<Vec<Evidence>, String> {
    let mut out = Vec::new();
    for stage in Stage::GATED {
        let Some(r) = state.gate_results.get(&stage) else {
            continue;
        };
        let Some(list) = r.verdict.figures.get("evidence").and_then(Value::as_array) else {
            continue;
        };
        for e in list {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let ev = Evidence {
                name: field("name"),
                sha256: field("sha256"),
                stage: stage.as_str().to_owned(),
                kind: field("kind"),
                media_type: field("media_type"),
            };
            let Some(p) = fleetgate_trust::provenance::byproduct_path(state_dir, &ev.name) else {
                return Err(format!(
                    "the {stage} gate recorded evidence {:?}, which is not a path inside the state directory",
                    ev.name
                ));
            };
            match sha256_file(&p) {
                Ok(d) if d == ev.sha256 => out.push(ev),
                Ok(d) => {
                    return Err(format!(
                        "the {stage} gate's evidence {} changed since the gate read it (sha256 {} then, {d} now); \
                         refusing to sign a release whose evidence differs from what its gate judged",
                        p.display(),
                        ev.sha256
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "the {stage} gate's evidence {} cannot be read ({e}); refusing to sign without it",
                        p.display()
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The repository as the statement names it: the `origin` remote's URL when there is
/// one, else `file://` and its absolute path.
fn repository(repo: &Path) -> String {
    let remote = git2::Repository::open(repo).ok().and_then(|r| {
        r.find_remote("origin")
            .ok()
            .and_then(|o| o.url().ok().map(str::to_owned))
    });
    remote.unwrap_or_else(|| {
        let abs = repo.canonicalize().unwrap_or_else(|_| repo.to_owned());
        format!("file://{}", abs.display())
    })
}

/// SHA-256 of the effective configuration as `fleetgate config` prints it (the TOML
/// after its comment line), so a verifier can recompute it.
///
/// # Errors
/// The configuration cannot be written as TOML.
pub fn config_sha256(cfg: &fleetgate_core::config::Config) -> Result<String, RuntimeError> {
    let text =
        toml::to_string_pretty(cfg).map_err(|e| RuntimeError::encode("the configuration", e))?;
    Ok(fleetgate_trust::provenance::sha256_hex(text.as_bytes()))
}

/// What SIGN knows when it builds the statement.
pub(crate) struct Release<'a> {
    pub code_hash: &'a str,
    pub file_manifest_hash: &'a str,
    pub hash_scheme: &'a str,
    pub sequence: u64,
    pub now: u64,
}

/// Builds the run's statement and writes it atomically; returns its path and SHA-256.
/// `Ok(Err(message))` when the evidence changed since its gate read it.
pub(crate) fn write(
    ctx: &GateContext,
    state: &PipelineState,
    rel: &Release<'_>,
) -> Result<Result<(PathBuf, String), String>, RuntimeError> {
    let evidence = match gather(&ctx.state_dir, state) {
        Ok(e) => e,
        Err(msg) => return Ok(Err(msg)),
    };
    let gates = state
        .gate_results
        .iter()
        .filter(|(st, _)| **st != Stage::Signing)
        .map(|(st, r)| {
            (
                st.as_str().to_owned(),
                if r.verdict.skipped {
                    "skipped"
                } else {
                    "passed"
                }
                .to_owned(),
            )
        })
        .collect();
    let inputs = ProvenanceInputs {
        version: state.version.clone(),
        git_sha: state.git_sha.clone(),
        code_hash: rel.code_hash.to_owned(),
        file_manifest_hash: rel.file_manifest_hash.to_owned(),
        hash_scheme: rel.hash_scheme.to_owned(),
        repository: repository(&ctx.repo),
        config_sha256: config_sha256(&ctx.cfg)?,
        run_id: state.run_id.clone().unwrap_or_default(),
        sequence: rel.sequence,
        started_at: state
            .started_at
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| t as u64),
        finished_at: rel.now,
        gates,
        evidence,
    };
    let bytes = Statement::new(&inputs)
        .to_canonical()
        .map_err(|e| RuntimeError::encode("the provenance statement", e))?;
    let p = path(&ctx.state_dir, &state.version);
    let d = dir(&ctx.state_dir);
    std::fs::create_dir_all(&d).map_err(|e| RuntimeError::io("create", &d, e))?;
    fleetgate_store::write_atomic(&p, &bytes, None)
        .map_err(|e| RuntimeError::io("write", &p, e))?;
    Ok(Ok((p, fleetgate_trust::provenance::sha256_hex(&bytes))))
}
