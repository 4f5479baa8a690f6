//! `[approval]`: a stage that waits for signed approvals before its gate runs.
//!
//! An **approval** is a signed document of `fleetgate-trust` (canonical JSON, Ed25519,
//! `master_signature`):
//!
//! ```json
//! {"type": "fleetgate-approval", "run_id": "…", "version": "v2.0.0", "git_sha": "…",
//!  "stage": "deploy", "reason": "…", "approved_at": 1796000000, "master_signature": "…"}
//! ```
//!
//! It is bound to one run (run id, version, commit) and one gate, so it cannot be replayed
//! for another release or stage. [`submit`] verifies it against exactly the
//! `[approval] keys` (threshold 1 per document) and stores it as
//! `state/approvals/<run>/<gate>/<key id>.json` (atomically; the same key approving twice
//! replaces its approval, it does not count twice). The gate ([`waiting`]) re-verifies
//! every stored file each time it looks — a file edited on disk counts for nothing — and
//! holds the stage (*pending*, nothing built, signed or sent) until `required` distinct
//! keys approved. Approvals are facts about a run, not state-machine transitions: a
//! crash loses none (they are files written before the answer) and repeats none.

use crate::{ConfigProblem, InvalidInput, Refusal, RuntimeError, TrustStep};
use fleetgate_core::config::{ApprovalConfig, Config};
use fleetgate_core::{PipelineState, Stage, Verdict};
use fleetgate_trust::{Keyring, PublicKey, SigningKey, TrustedKey};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The document type of an approval.
pub const APPROVAL_TYPE: &str = "fleetgate-approval";

/// Largest approval file read.
const MAX_APPROVAL_BYTES: u64 = 16 * 1024;

/// Where the approvals of `gate` for the run are kept.
#[must_use]
pub fn dir(state_dir: &Path, state: &PipelineState, gate: &str) -> PathBuf {
    state_dir.join("approvals").join(run_key(state)).join(gate)
}

fn run_key(state: &PipelineState) -> String {
    let raw = state
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{}-epoch{}", state.version, state.epoch));
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The approvers' keyring: `[approval] keys`, each enough on its own (threshold 1).
///
/// # Errors
/// [`RuntimeError::Config`] when no key is configured or one does not parse.
pub fn keyring(cfg: &Config) -> Result<Keyring, RuntimeError> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    for k in &cfg.approval.keys {
        let pk = PublicKey::from_hex(k).map_err(|e| ConfigProblem::ApprovalKey {
            key: k.clone(),
            source: e,
        })?;
        if !keys.iter().any(|t| t.id == pk.key_id()) {
            keys.push(TrustedKey::new(pk));
        }
    }
    if keys.is_empty() {
        return Err(ConfigProblem::Missing {
            key: "approval.keys",
            why: "list the approvers' public keys (KEY.pub of `fleetgate keygen`)",
        }
        .into());
    }
    Keyring::new(0, 1, keys).map_err(|e| RuntimeError::trust(TrustStep::ApprovalKeyring, e))
}

/// The gate an approval is for: `stage` when given (it must be in `[approval] before`),
/// else the current stage's gate when it waits, else the only gate that does.
///
/// # Errors
/// [`RuntimeError::Invalid`] naming what to pass instead.
pub fn resolve_gate(
    cfg: &Config,
    state: &PipelineState,
    stage: Option<&str>,
) -> Result<String, RuntimeError> {
    let before = &cfg.approval.before;
    if before.is_empty() {
        return Err(InvalidInput::NoApprovalGate.into());
    }
    if let Some(s) = stage {
        let s = s.trim().to_ascii_lowercase();
        let s = match s.as_str() {
            "deploying" => "deploy".to_owned(),
            "building" => "build".to_owned(),
            "testing" => "test".to_owned(),
            "auditing" => "audit".to_owned(),
            "benchmarking" => "benchmark".to_owned(),
            "signing" => "sign".to_owned(),
            _ => s,
        };
        return if before.contains(&s) {
            Ok(s)
        } else {
            Err(InvalidInput::NotAnApprovalStage {
                stage: s,
                before: before.clone(),
            }
            .into())
        };
    }
    if let Some(g) = ApprovalConfig::gate_of(state.stage).filter(|g| before.iter().any(|b| b == g))
    {
        return Ok(g.to_owned());
    }
    match before.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(InvalidInput::WhichApprovalStage {
            before: before.clone(),
        }
        .into()),
    }
}

/// The unsigned approval of `gate` for the run in `state`.
///
/// # Errors
/// [`RuntimeError::NoActiveRun`] when no run is in progress.
pub fn request(
    state: &PipelineState,
    gate: &str,
    reason: &str,
    now: u64,
) -> Result<Value, RuntimeError> {
    if !state.stage.is_gated() {
        return Err(RuntimeError::NoActiveRun { stage: state.stage });
    }
    Ok(json!({
        "type": APPROVAL_TYPE,
        "run_id": run_key(state),
        "version": state.version,
        "git_sha": state.git_sha,
        "stage": gate,
        "reason": reason,
        "approved_at": now,
    }))
}

/// Signs an approval request (see [`request`]) with `key`.
///
/// # Errors
/// [`RuntimeError::Invalid`] for a request that is not one, or already signed.
pub fn sign(request: &Value, key: &SigningKey) -> Result<Vec<u8>, RuntimeError> {
    let obj = request.as_object().ok_or(InvalidInput::ApprovalNotObject)?;
    if obj.get("type").and_then(Value::as_str) != Some(APPROVAL_TYPE) {
        return Err(InvalidInput::NotAnApprovalRequest.into());
    }
    if obj.contains_key("master_signature") || obj.contains_key("signatures") {
        return Err(InvalidInput::ApprovalAlreadySigned.into());
    }
    fleetgate_trust::sign_document(request, &[key])
        .map_err(|e| InvalidInput::ApprovalSign(e).into())
}

/// What [`submit`] recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    /// The gate approved.
    pub stage: String,
    /// The approver's key id.
    pub key_id: String,
    /// Distinct approvals of this gate for this run now.
    pub approvals: usize,
    /// Approvals needed.
    pub required: usize,
    /// Where it was stored.
    pub path: PathBuf,
}

/// Why a signed approval does not count for `state`, or the approving key id.
fn check(
    bytes: &[u8],
    keyring: &Keyring,
    state: &PipelineState,
    gate: &str,
) -> Result<String, String> {
    let doc = fleetgate_trust::verify_document(bytes, keyring, fleetgate_trust::unix_now())
        .map_err(|e| format!("not signed by an approval key: {e}"))?;
    let p = doc.payload();
    let field = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if field("type") != APPROVAL_TYPE {
        return Err(format!("not an approval (`type` is {:?})", field("type")));
    }
    for (k, want) in [
        ("run_id", run_key(state)),
        ("version", state.version.clone()),
        ("git_sha", state.git_sha.clone()),
        ("stage", gate.to_owned()),
    ] {
        let got = field(k);
        if got != want {
            return Err(format!(
                "it approves `{k}` {got:?}, but the run has {want:?} (an approval is for one run and one stage)"
            ));
        }
    }
    doc.key_ids
        .first()
        .cloned()
        .ok_or_else(|| "no key id".to_owned())
}

/// Verifies a signed approval against `[approval] keys` and the run in `state`, and
/// stores it.
///
/// # Errors
/// [`RuntimeError::Refused`] naming why it does not count (untrusted key, another run or
/// stage, a stage that does not wait); [`RuntimeError::Io`] when it cannot be stored.
pub fn submit(
    state_dir: &Path,
    cfg: &Config,
    state: &PipelineState,
    bytes: &[u8],
) -> Result<Submitted, RuntimeError> {
    if !state.stage.is_gated() {
        return Err(RuntimeError::NoActiveRun { stage: state.stage });
    }
    let keyring = keyring(cfg)?;
    let value: Value = serde_json::from_slice(bytes).map_err(InvalidInput::ApprovalJson)?;
    let gate = value
        .get("stage")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !cfg.approval.before.contains(&gate) {
        return Err(Refusal::ApprovalStage {
            stage: gate,
            before: cfg.approval.before.clone(),
        }
        .into());
    }
    let key_id =
        check(bytes, &keyring, state, &gate).map_err(|reason| Refusal::Approval { reason })?;
    let d = dir(state_dir, state, &gate);
    std::fs::create_dir_all(&d).map_err(|e| RuntimeError::io("create", &d, e))?;
    let path = d.join(format!("{key_id}.json"));
    fleetgate_store::write_atomic(&path, bytes, Some(0o644))
        .map_err(|e| RuntimeError::io("write", &path, e))?;
    let t = tally(state_dir, cfg, state, &gate);
    Ok(Submitted {
        stage: gate,
        key_id,
        approvals: t.approved_by.len(),
        required: cfg.approval.required(),
        path,
    })
}

/// The approvals of one gate as stored now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Key ids of the distinct valid approvals.
    pub approved_by: Vec<String>,
    /// Stored files that do not count, with why.
    pub ignored: Vec<(String, String)>,
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_APPROVAL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_APPROVAL_BYTES {
        return Err(format!("larger than {MAX_APPROVAL_BYTES} bytes"));
    }
    Ok(bytes)
}

/// Re-verifies every stored approval of `gate` for the run.
#[must_use]
pub fn tally(state_dir: &Path, cfg: &Config, state: &PipelineState, gate: &str) -> Tally {
    let mut t = Tally::default();
    let Ok(keyring) = keyring(cfg) else {
        return t;
    };
    let Ok(entries) = std::fs::read_dir(dir(state_dir, state, gate)) else {
        return t;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let r = read_limited(&f).and_then(|b| check(&b, &keyring, state, gate));
        match r {
            Ok(id) if !t.approved_by.contains(&id) => t.approved_by.push(id),
            Ok(_) => {}
            Err(why) => t.ignored.push((name, why)),
        }
    }
    t
}

/// The pending verdict of a gate that still waits for approvals; `None` when `stage`
/// does not wait or has them all.
#[must_use]
pub fn waiting(
    state_dir: &Path,
    cfg: &Config,
    state: &PipelineState,
    stage: Stage,
) -> Option<Verdict> {
    if !cfg.approval.applies_to(stage) {
        return None;
    }
    let gate = ApprovalConfig::gate_of(stage)?;
    let t = tally(state_dir, cfg, state, gate);
    let required = cfg.approval.required();
    if t.approved_by.len() >= required {
        return None;
    }
    let ignored = if t.ignored.is_empty() {
        String::new()
    } else {
        format!(
            "; ignored: {}",
            t.ignored
                .iter()
                .map(|(f, why)| format!("{f} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Some(Verdict::pending(
        format!(
            "waiting for approvals: {} of {required} before {} (approved by: {}); approve with `fleetgate approve --stage {gate} --key-file KEY`{ignored}",
            t.approved_by.len(),
            stage.gate_name(),
            if t.approved_by.is_empty() {
                "nobody yet".to_owned()
            } else {
                t.approved_by.join(", ")
            }
        ),
        json!({"approval": {"stage": gate, "required": required, "approved_by": t.approved_by,
            "ignored": t.ignored}}),
    ))
}
