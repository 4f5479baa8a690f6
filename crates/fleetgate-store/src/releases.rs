//! `releases.json`: the record of completed releases, kept beside the state file.
//!
//! The state file holds one run; if it is corrupt it is moved aside and the run is lost.
//! What must outlive a run — the last completed release (the benchmark baseline and the
//! version a rollback returns to), the releases completed before it, and the highest
//! manifest sequence ever used (a sequence must never be reused) — is also written here.
//!
//! Ordering: this file is written before the state file, so after a crash between the two
//! writes it is *ahead* of the state, never behind. [`ReleaseRecord::merged_with`] is the
//! one rule that reconciles the two, used both when loading (the state returned carries
//! the merged values) and when saving (the file written is the merged record).

use fleetgate_core::{CompletedRelease, PipelineState, Stage};
use serde::{Deserialize, Serialize};

/// The file name inside the state directory.
pub const RELEASES_FILE: &str = "releases.json";
/// The format version of `releases.json` this build writes.
pub const RELEASES_SCHEMA_VERSION: u32 = 1;
/// How many completed releases `history` keeps (oldest dropped first).
pub const RELEASE_HISTORY_LIMIT: usize = 50;

/// The contents of `releases.json` (JSON Schema: `state/releases.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleaseRecord {
    /// Format version of this file.
    pub schema_version: u32,
    /// The last release that reached `completed` (always the last entry of `history`).
    #[serde(default)]
    pub last_completed: Option<CompletedRelease>,
    /// Completed releases, oldest first, at most [`RELEASE_HISTORY_LIMIT`], one per run.
    #[serde(default)]
    pub history: Vec<CompletedRelease>,
    /// The highest manifest sequence ever reserved; never lowered.
    #[serde(default)]
    pub last_sequence: u64,
}

impl Default for ReleaseRecord {
    fn default() -> Self {
        ReleaseRecord {
            schema_version: RELEASES_SCHEMA_VERSION,
            last_completed: None,
            history: Vec::new(),
            last_sequence: 0,
        }
    }
}

impl ReleaseRecord {
    /// This record reconciled with `state` (the state file, or the state about to be
    /// written):
    ///
    /// - `last_sequence` is the larger of the two (a sequence is never reused).
    /// - A completion recorded here for the state's *current* run while the state is not
    ///   `completed` was written just before a state write that never landed (a crash
    ///   between the two writes): the run did not complete, so it is dropped. The run then
    ///   either completes again (and is recorded again) or ends otherwise — a rollback must
    ///   never "return" to the release it is undoing.
    /// - The state's `last_completed` is added to the history unless it is already there
    ///   (by run id) or is older (by manifest sequence) than the newest entry: a state file
    ///   restored from an old copy does not lower the record.
    /// - `last_completed` is the newest entry of the history.
    pub fn merged_with(&self, state: &PipelineState) -> ReleaseRecord {
        let mut history = self.history.clone();
        if state.stage != Stage::Completed
            && let Some(run) = &state.run_id
        {
            history.retain(|c| &c.run_id != run);
        }
        if let Some(c) = &state.last_completed {
            match history.iter().position(|h| h.run_id == c.run_id) {
                Some(i) => history[i] = c.clone(),
                None => {
                    let older = history
                        .last()
                        .and_then(|newest| Some(c.sequence? < newest.sequence?))
                        .unwrap_or(false);
                    if !older {
                        history.push(c.clone());
                    }
                }
            }
        }
        let excess = history.len().saturating_sub(RELEASE_HISTORY_LIMIT);
        history.drain(..excess);
        let last_completed = history.last().cloned();
        let last_sequence = [
            self.last_sequence,
            state.last_sequence,
            last_completed
                .as_ref()
                .and_then(|c| c.sequence)
                .unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        ReleaseRecord {
            schema_version: RELEASES_SCHEMA_VERSION,
            last_completed,
            history,
            last_sequence,
        }
    }
}
