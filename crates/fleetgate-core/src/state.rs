//! The persisted pipeline state (`state/upgrade_state.json`).
//!
//! Field names are HART's (`stage`, `version`, `git_sha`, `started_at`, `stage_history`,
//! `code_hash`, `failure_detail`, `rollback_reason`) so existing tooling can read the file;
//! the rest is what crash recovery needs. `schema_version` is bumped on any incompatible
//! change; readers refuse files newer than they understand.

use crate::fleet::{CanaryProgress, DeployProgress, RevocationProgress};
use crate::stage::{RollbackScope, Stage};
use crate::verdict::{Outcome, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One entry of `stage_history` (HART: `{stage, at}`; fleetgate adds the rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    /// The stage entered.
    pub stage: Stage,
    /// When (unix seconds, float).
    pub at: f64,
    /// The stage left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Stage>,
    /// Why (for rollbacks and failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The verdict detail of the gate that caused the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The run epoch after the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// An operator's action on a run (pause, promote): who, why, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OperatorAction {
    /// Who (e.g. `operator alice`).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (unix seconds, float).
    pub at: f64,
}

/// The latest verdict of one gate in this run, with how often it was checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateRecord {
    /// The latest verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// First evaluation (unix seconds).
    pub first_checked_at: f64,
    /// Latest evaluation (unix seconds).
    pub last_checked_at: f64,
    /// Number of evaluations (pending gates are evaluated repeatedly).
    pub checks: u32,
    /// Set when an operator ended the gate early (`fleetgate promote`): the gate passed by
    /// an operator's decision, not by its judge; the verdict keeps the judge's last figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<OperatorAction>,
}

/// An outside effect the runtime must carry out, persisted before it is attempted and
/// removed only once it is acknowledged (the outbox). A restarted orchestrator re-issues
/// what is still here; receivers treat a repeat as a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Effect {
    /// Unique within the run (`<run_id>-<n>`).
    pub id: String,
    /// What to do.
    pub action: EffectAction,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// The last delivery error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A rollback order's delivery progress (signed sequence, per-node deliveries),
    /// persisted before each send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationProgress>,
}

/// The outside effects the pipeline orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EffectAction {
    /// Sign a rollback manifest and send it to the nodes in scope.
    SendRollback {
        /// Canary nodes only, or the whole fleet.
        scope: RollbackScope,
        /// The reason recorded for the rollback.
        reason: String,
    },
}

/// The version that last reached `completed`: the benchmark baseline and the version a
/// rollback returns the fleet to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompletedRelease {
    /// Version string.
    pub version: String,
    /// Commit.
    pub git_sha: String,
    /// Code hash.
    #[serde(default)]
    pub code_hash: Option<String>,
    /// Run that completed it.
    pub run_id: String,
    /// Manifest sequence, when it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// How `code_hash` was computed: the `hash_scheme` of the release's signed manifest
    /// (a rollback order that returns to this release names it, whatever the config says
    /// now). Absent in records written before fleetgate kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_scheme: Option<crate::config::HashScheme>,
    /// The built files the release shipped: its signed manifest's `artifacts` array, as
    /// signed (a rollback order that returns to this release lists them, so a node
    /// without the release's slot downloads it again). Absent for source releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<serde_json::Value>,
}

/// The whole persisted state of the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PipelineState {
    /// Format version of this file.
    pub schema_version: u32,
    /// Current stage (HART name).
    pub stage: Stage,
    /// Version of the current or last run ("" when none).
    #[serde(default)]
    pub version: String,
    /// Commit of the current or last run ("" when none).
    #[serde(default)]
    pub git_sha: String,
    /// When the current run started (unix seconds, float); null when idle.
    #[serde(default)]
    pub started_at: Option<f64>,
    /// Every stage the run entered, in order.
    #[serde(default)]
    pub stage_history: Vec<HistoryEntry>,
    /// The code hash computed by BUILD.
    #[serde(default)]
    pub code_hash: Option<String>,
    /// Why the run failed, if it did.
    #[serde(default)]
    pub failure_detail: Option<String>,
    /// Why the run was rolled back, if it was.
    #[serde(default)]
    pub rollback_reason: Option<String>,
    /// Identifier of the current run.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Bumped on every transition; a gate result computed under an older epoch is discarded.
    #[serde(default)]
    pub epoch: u64,
    /// Latest verdict per gated stage, keyed by stage name.
    #[serde(default)]
    pub gate_results: BTreeMap<Stage, GateRecord>,
    /// Data a stage checkpoints while it works (canary record, deploy progress, signing
    /// reservation), keyed by stage name. Written before the effect it describes.
    #[serde(default)]
    pub stage_data: BTreeMap<Stage, serde_json::Value>,
    /// The signed release manifest of this run, once SIGN passed.
    #[serde(default)]
    pub manifest: Option<serde_json::Value>,
    /// Outside effects ordered but not yet acknowledged.
    #[serde(default)]
    pub outbox: Vec<Effect>,
    /// The last version that reached `completed` on the default channel (`stable`; kept
    /// across runs).
    #[serde(default)]
    pub last_completed: Option<CompletedRelease>,
    /// The channel this run targets (`None`: the default channel, `stable`): its canary,
    /// DEPLOY steps and targets are nodes of that channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The last version that reached `completed` on each other channel (kept across
    /// runs): what a run on that channel returns its nodes to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_releases: BTreeMap<String, CompletedRelease>,
    /// Highest manifest sequence this orchestrator has ever reserved (kept across runs).
    #[serde(default)]
    pub last_sequence: u64,
    /// Number of effects ordered in this run (for effect ids).
    #[serde(default)]
    pub effects_ordered: u32,
    /// CANARY's typed progress (selection, deliveries, window), persisted before each
    /// outside effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryProgress>,
    /// DEPLOY's typed progress (targets, deliveries or gossip hand-off, deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployProgress>,
    /// Set while an operator holds the run (`fleetgate pause`): no gate is evaluated and
    /// nothing is sent until `fleetgate resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<OperatorAction>,
}

impl Default for PipelineState {
    fn default() -> Self {
        PipelineState::idle()
    }
}

/// The channel of a node nobody placed and of a run that names none.
pub const DEFAULT_CHANNEL: &str = "stable";

impl PipelineState {
    /// The channel this run targets.
    #[must_use]
    pub fn run_channel(&self) -> &str {
        self.channel.as_deref().unwrap_or(DEFAULT_CHANNEL)
    }

    /// The last completed release of `channel` (the default channel's is
    /// `last_completed`).
    #[must_use]
    pub fn completed_on(&self, channel: &str) -> Option<&CompletedRelease> {
        if channel == DEFAULT_CHANNEL {
            self.last_completed.as_ref()
        } else {
            self.channel_releases.get(channel)
        }
    }

    /// What a rollback of this run returns its nodes to: the last release completed on
    /// the run's channel, else (a channel that never completed one) the default
    /// channel's.
    #[must_use]
    pub fn rollback_target(&self) -> Option<&CompletedRelease> {
        self.completed_on(self.run_channel())
            .or(self.last_completed.as_ref())
    }

    /// A fresh, idle state.
    pub fn idle() -> PipelineState {
        PipelineState {
            schema_version: SCHEMA_VERSION,
            stage: Stage::Idle,
            version: String::new(),
            git_sha: String::new(),
            started_at: None,
            stage_history: Vec::new(),
            code_hash: None,
            failure_detail: None,
            rollback_reason: None,
            run_id: None,
            epoch: 0,
            gate_results: BTreeMap::new(),
            stage_data: BTreeMap::new(),
            manifest: None,
            outbox: Vec::new(),
            last_completed: None,
            channel: None,
            channel_releases: BTreeMap::new(),
            last_sequence: 0,
            effects_ordered: 0,
            canary: None,
            deploy: None,
            paused: None,
        }
    }

    /// True while a run is in one of the gated stages.
    pub fn is_active(&self) -> bool {
        self.stage.is_gated()
    }

    /// The gates that were skipped by config in this run.
    pub fn skipped_gates(&self) -> Vec<Stage> {
        self.gate_results
            .iter()
            .filter(|(_, r)| r.verdict.skipped)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The verdict of the current stage's gate, if it was evaluated.
    pub fn current_gate(&self) -> Option<&GateRecord> {
        self.gate_results.get(&self.stage)
    }

    /// Passed gates in pipeline order.
    pub fn passed_gates(&self) -> Vec<Stage> {
        Stage::GATED
            .into_iter()
            .filter(|s| {
                self.gate_results
                    .get(s)
                    .is_some_and(|r| r.verdict.outcome == Outcome::Passed)
            })
            .collect()
    }
}
