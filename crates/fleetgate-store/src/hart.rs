//! Adoption of a HART state file (`agent_data/upgrade_state.json` written by HART's
//! `UpgradeOrchestrator`): a JSON object without `schema_version`, holding
//! `stage, version, git_sha, started_at` (`0` when idle), `stage_history` and, once set,
//! `code_hash`, `failure_detail`, `rollback_reason`.
//!
//! It is mapped to fleetgate's state, not quarantined; the original bytes are kept beside
//! it (`upgrade_state.json.hart-orig`) before the first fleetgate write replaces it. The
//! mapping fails closed:
//! - an idle or finished HART state keeps its stage, version, commit and history;
//! - a HART run in a gated stage (`building` … `deploying`) becomes a fleetgate run at
//!   `building`, whichever stage HART reached: fleetgate re-runs every gate itself. It
//!   cannot resume where HART stopped, because HART's file holds no evidence fleetgate
//!   could check: no gate results or reports, no signed manifest (SIGN, CANARY and DEPLOY
//!   need one), no canary record (nodes, seed, start, baseline), and a code hash over
//!   HART's working tree rather than over a commit. The move is recorded in
//!   `stage_history` with that reason ([`ADOPTED_REASON_PREFIX`]); from `canary` or
//!   `deploying` it also says that HART had already sent the release to nodes fleetgate
//!   does not know (a rollback before fleetgate's own CANARY sends them nothing), and
//!   [`adoption_warning`] repeats it in `status` while the adopted run is active;
//! - a run whose version fleetgate cannot use (HART accepts any string, e.g. `v2.0`)
//!   becomes `failed` with a `failure_detail` saying why, so nothing runs under it.

use fleetgate_core::config::HashScheme;
use fleetgate_core::{CompletedRelease, HistoryEntry, PipelineState, Stage, Version};
use serde::Deserialize;

/// Suffix of the kept original: `upgrade_state.json.hart-orig`.
pub const HART_ORIGINAL_SUFFIX: &str = "hart-orig";

/// How the `stage_history` entry of an adopted HART run's restart at BUILD begins.
pub const ADOPTED_REASON_PREFIX: &str = "adopted from a HART state file at";

/// Prefix of the run id given to an adopted HART run.
const HART_RUN_PREFIX: &str = "hart-";

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
        s.run_id = Some(format!("{HART_RUN_PREFIX}{secs}-{label}"));
    }
    if s.stage == Stage::Completed && !s.git_sha.is_empty() && Version::parse(&s.version).is_ok() {
        // The version HART deployed: the next run's benchmark baseline and rollback target.
        // Without a commit it could be neither, so it is not recorded. Its code hash is
        // HART's (HART's scheme), kept when well-formed: a rollback order returning to it
        // names it, and a node checks the slot it returns to against it (fails closed).
        let code_hash = s
            .code_hash
            .clone()
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|h| h.to_ascii_lowercase());
        s.last_completed = Some(CompletedRelease {
            version: s.version.clone(),
            git_sha: s.git_sha.clone(),
            hash_scheme: code_hash.as_ref().map(|_| HashScheme::Hart),
            artifacts: None,
            code_hash,
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
                    reason: Some(restart_reason(from)),
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

/// Why an adopted HART run restarts at BUILD, from the stage HART had reached.
fn restart_reason(from: Stage) -> String {
    let mut why = format!(
        "{ADOPTED_REASON_PREFIX} `{from}`: fleetgate runs every gate again from BUILD, because HART's file holds no evidence it can check (no gate results, no signed manifest, no canary record; its code hash is over HART's working tree, not the commit)"
    );
    match from {
        Stage::Canary => why.push_str(
            "; HART had already sent this release to its canary nodes: fleetgate does not know which, so if this run fails or is rolled back before its own CANARY no rollback order is sent and they keep the release",
        ),
        Stage::Deploying => why.push_str(
            "; HART had already sent this release to the fleet: fleetgate does not know which nodes, so if this run fails or is rolled back before its own CANARY no rollback order is sent and they keep the release",
        ),
        _ => why.push_str("; nothing had left HART's orchestrator"),
    }
    why
}

/// While an adopted HART run is still active: the reason it restarted at BUILD (for
/// `status`); `None` for every other state.
#[must_use]
pub fn adoption_warning(state: &PipelineState) -> Option<String> {
    if !state.is_active()
        || !state
            .run_id
            .as_deref()
            .is_some_and(|r| r.starts_with(HART_RUN_PREFIX))
    {
        return None;
    }
    state
        .stage_history
        .iter()
        .rev()
        .filter_map(|h| h.reason.as_deref())
        .find(|r| r.starts_with(ADOPTED_REASON_PREFIX))
        .map(|r| format!("this run was {r}"))
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
        let w = adoption_warning(&s).unwrap();
        assert!(
            w.contains("`testing`") && w.contains("nothing had left"),
            "{w}"
        );
    }

    #[test]
    fn a_hart_run_at_canary_or_deploying_says_the_release_already_left() {
        for (stage, said) in [("canary", "canary nodes"), ("deploying", "to the fleet")] {
            let v = json!({"stage": stage, "version": "v2.0.0", "git_sha": "", "started_at": 10.0,
                "stage_history": [{"stage": stage, "at": 11.0}]});
            let s = adopt(v, 20.0).unwrap();
            assert_eq!(s.stage, Stage::Building, "{stage}");
            let reason = s.stage_history[1].reason.as_deref().unwrap();
            assert!(reason.starts_with(ADOPTED_REASON_PREFIX), "{reason}");
            assert!(reason.contains(said), "{reason}");
            assert!(adoption_warning(&s).unwrap().contains(said));
        }
    }

    #[test]
    fn no_adoption_warning_once_the_run_ends_or_for_fleetgate_runs() {
        let v = json!({"stage": "testing", "version": "v2.0.0", "git_sha": "", "started_at": 10.0});
        let mut s = adopt(v, 20.0).unwrap();
        s.stage = Stage::Failed;
        assert_eq!(adoption_warning(&s), None);
        let mut own = PipelineState::idle();
        own.stage = Stage::Building;
        own.run_id = Some("r1".into());
        assert_eq!(adoption_warning(&own), None);
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
        let c = s.last_completed.unwrap();
        assert_eq!(c.version, "v1.2.0");
        assert_eq!(
            (c.code_hash, c.hash_scheme),
            (None, None),
            "no well-formed hash"
        );
        let with_hash = json!({"stage": "completed", "version": "v1.2.0", "git_sha": "abc",
            "started_at": 10.0, "code_hash": "AB".repeat(32)});
        let c = adopt(with_hash, 20.0).unwrap().last_completed.unwrap();
        assert_eq!(c.code_hash, Some("ab".repeat(32)));
        assert_eq!(
            c.hash_scheme,
            Some(HashScheme::Hart),
            "HART's hash, HART's scheme"
        );
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
