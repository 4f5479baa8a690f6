//! Adoption of a HART state file (`agent_data/upgrade_state.json` written by HART's
//! `UpgradeOrchestrator`): a JSON object without `schema_version`, holding
//! `stage, version, git_sha, started_at` (`0` when idle), `stage_history` and, once set,
//! `code_hash`, `failure_detail`, `rollback_reason`.
//!
//! It is mapped to fleetgate's state, not quarantined; the original bytes are kept beside
//! it (`upgrade_state.json.hart-orig`) before the first fleetgate write replaces it. The
//! mapping fails closed:
//! - an idle or finished HART state keeps its stage, version, commit and history;
//! - a HART run in a gated stage becomes a fleetgate run at `building`: fleetgate re-runs
//!   every gate itself (HART's verdicts are not carried over, and HART's code hash is not
//!   trusted in place of BUILD's), with the move recorded in `stage_history`;
//! - a run whose version fleetgate cannot use (HART accepts any string, e.g. `v2.0`)
//!   becomes `failed` with a `failure_detail` saying why, so nothing runs under it.

use fleetgate_core::{CompletedRelease, HistoryEntry, PipelineState, Stage, Version};
use serde::Deserialize;

/// Suffix of the kept original: `upgrade_state.json.hart-orig`.
pub const HART_ORIGINAL_SUFFIX: &str = "hart-orig";

/// HART's state file, as its orchestrator writes it. Unknown fields are ignored (HART
/// writes nothing else today; a later HART field must not make the file unreadable).
#[derive(Debug, Deserialize)]
struct HartState {
    stage: Stage,
    #[serde(default)]
    version: String,
    #[serde(default)]
    git_sha: String,
    #[serde(default)]
    started_at: Option<f64>,
    #[serde(default)]
    stage_history: Vec<HistoryEntry>,
    #[serde(default)]
    code_hash: Option<String>,
    #[serde(default)]
    failure_detail: Option<String>,
    #[serde(default)]
    rollback_reason: Option<String>,
}

/// Is `value` a HART state file (a JSON object without `schema_version`)?
pub fn is_hart(value: &serde_json::Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| !o.contains_key("schema_version"))
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Map a HART state to fleetgate's. `now` (unix seconds) stamps the adoption entry.
pub fn adopt(value: serde_json::Value, now: f64) -> Result<PipelineState, serde_json::Error> {
    let h: HartState = serde_json::from_value(value)?;
    let mut s = PipelineState::idle();
    // HART writes `started_at: 0` when idle.
    let started_at = h.started_at.filter(|t| t.is_finite() && *t > 0.0);
    s.stage = h.stage;
    s.version = h.version;
    s.git_sha = h.git_sha;
    s.started_at = started_at;
    s.stage_history = h.stage_history;
    s.code_hash = nonempty(h.code_hash);
    s.failure_detail = nonempty(h.failure_detail);
    s.rollback_reason = nonempty(h.rollback_reason);
    s.epoch = s.stage_history.len() as u64;
    if s.stage != Stage::Idle {
        let secs = started_at.map_or(0, |t| t as u64);
        let label: String = s
            .version
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        s.run_id = Some(format!("hart-{secs}-{label}"));
    }
    if s.stage == Stage::Completed && !s.git_sha.is_empty() && Version::parse(&s.version).is_ok() {
        // The version HART deployed: the next run's benchmark baseline and rollback target.
        // Without a commit it could be neither, so it is not recorded.
        s.last_completed = Some(CompletedRelease {
            version: s.version.clone(),
            git_sha: s.git_sha.clone(),
            code_hash: None,
            run_id: s.run_id.clone().unwrap_or_default(),
            sequence: None,
        });
    }
    if s.stage.is_gated() {
        let from = s.stage;
        s.epoch += 1;
        match Version::parse(&s.version) {
            Ok(_) => {
                s.stage = Stage::Building;
                // BUILD computes it again for this commit.
                s.code_hash = None;
                s.stage_history.push(HistoryEntry {
                    stage: Stage::Building,
                    at: now,
                    from: Some(from),
                    reason: Some(format!(
                        "adopted from a HART state file at `{from}`: fleetgate runs every gate again from BUILD (HART's verdicts are not carried over)"
                    )),
                    detail: None,
                    epoch: Some(s.epoch),
                });
            }
            Err(e) => {
                let detail = format!(
                    "adopted from a HART state file at `{from}`, but fleetgate cannot run it: {e}; start a new run with a valid version"
                );
                s.stage = Stage::Failed;
                s.failure_detail = Some(detail.clone());
                s.stage_history.push(HistoryEntry {
                    stage: Stage::Failed,
                    at: now,
                    from: Some(from),
                    reason: None,
                    detail: Some(detail),
                    epoch: Some(s.epoch),
                });
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idle_hart_state_with_started_at_zero() {
        let v = json!({"stage": "idle", "version": "", "git_sha": "", "started_at": 0, "stage_history": []});
        assert!(is_hart(&v));
        let s = adopt(v, 5.0).unwrap();
        assert_eq!(s.stage, Stage::Idle);
        assert_eq!(s.started_at, None);
        assert_eq!(s.run_id, None);
        assert!(s.stage_history.is_empty());
    }

    #[test]
    fn a_hart_run_in_a_gate_restarts_at_build() {
        let v = json!({"stage": "testing", "version": "v2.0.0", "git_sha": "", "started_at": 1771864669.14,
            "code_hash": "ab", "stage_history": [{"stage": "building", "at": 1771864669.14}, {"stage": "testing", "at": 1771864670.0}]});
        let s = adopt(v, 1771864700.0).unwrap();
        assert_eq!(s.stage, Stage::Building);
        assert_eq!(s.version, "v2.0.0");
        assert_eq!(s.started_at, Some(1771864669.14));
        assert_eq!(s.run_id.as_deref(), Some("hart-1771864669-v2.0.0"));
        assert_eq!(s.code_hash, None);
        assert_eq!(s.stage_history.len(), 3);
        assert_eq!(s.stage_history[2].from, Some(Stage::Testing));
        assert!(s.is_active());
    }

    #[test]
    fn a_hart_run_with_a_version_fleetgate_refuses_fails_closed() {
        let v = json!({"stage": "canary", "version": "v2.0", "git_sha": "", "started_at": 10.0, "stage_history": []});
        let s = adopt(v, 20.0).unwrap();
        assert_eq!(s.stage, Stage::Failed);
        assert!(s.failure_detail.unwrap().contains("v2.0"));
    }

    #[test]
    fn a_completed_hart_release_becomes_the_baseline() {
        let v = json!({"stage": "completed", "version": "v1.2.0", "git_sha": "abc", "started_at": 10.0,
            "stage_history": [{"stage": "completed", "at": 11.0}]});
        let s = adopt(v, 20.0).unwrap();
        assert_eq!(s.stage, Stage::Completed);
        assert_eq!(s.last_completed.unwrap().version, "v1.2.0");
        let no_sha =
            json!({"stage": "completed", "version": "v1.2.0", "git_sha": "", "started_at": 10.0});
        assert_eq!(adopt(no_sha, 20.0).unwrap().last_completed, None);
    }

    #[test]
    fn fleetgate_files_are_not_hart_files() {
        assert!(!is_hart(&json!({"schema_version": 1, "stage": "idle"})));
        assert!(!is_hart(&json!([1])));
        assert!(adopt(json!({"stage": "sideways"}), 1.0).is_err());
    }
}
