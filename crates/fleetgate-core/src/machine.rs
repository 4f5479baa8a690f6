//! The pipeline as a pure state machine: `(state, event) -> (state, commands)`.
//!
//! The runtime feeds [`Event`]s in, persists the state, and then carries out the
//! [`Command`]s that came out. Nothing here does I/O or reads a clock: time arrives in
//! the events. Every transition bumps `epoch`; a gate result carries the epoch it was
//! started under and is discarded if the run moved on meanwhile (a rollback always wins).

use crate::config::HashScheme;
use crate::fleet::{CanaryProgress, DeployProgress, RevocationProgress};
use crate::stage::{OnFailure, RollbackScope, Stage};
use crate::state::{
    CompletedRelease, Effect, EffectAction, GateRecord, HistoryEntry, OperatorAction, PipelineState,
};
use crate::verdict::{Outcome, Verdict};
use crate::version::Version;

/// Something that happened, fed to [`handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An operator or agent starts a run.
    Start {
        /// Validated version.
        version: Version,
        /// Resolved commit.
        git_sha: String,
        /// Fresh run identifier.
        run_id: String,
        /// The channel the run targets (`None`: the default channel).
        channel: Option<String>,
        /// Unix seconds.
        now: f64,
    },
    /// A gate finished one evaluation that was started under `epoch`.
    GateEvaluated {
        /// The stage whose gate ran.
        stage: Stage,
        /// The epoch read before the gate started.
        epoch: u64,
        /// What it concluded.
        verdict: Verdict,
        /// Values the gate learned that belong in the state (e.g. the code hash).
        facts: GateFacts,
        /// Unix seconds.
        now: f64,
    },
    /// A gate saves progress before an outside effect (e.g. the canary selection before
    /// any canary node is contacted). Does not change the stage or the epoch.
    Checkpoint {
        /// The stage saving data.
        stage: Stage,
        /// The epoch read before the gate started.
        epoch: u64,
        /// The stage's data, replacing what was there.
        data: serde_json::Value,
    },
    /// An operator, agent or gate orders a rollback.
    Rollback {
        /// Why.
        reason: String,
        /// Unix seconds.
        now: f64,
    },
    /// A manifest sequence was used outside a gate (a signed rollback order): later
    /// manifests must be numbered above it.
    SequenceUsed {
        /// The sequence.
        sequence: u64,
    },
    /// The runtime delivered an outbox effect.
    EffectDone {
        /// The effect's id.
        id: String,
    },
    /// The runtime tried an outbox effect and failed; it stays in the outbox.
    EffectFailed {
        /// The effect's id.
        id: String,
        /// The error.
        error: String,
    },
    /// The runtime found an outbox effect that can never be carried out (a rollback order
    /// with no completed release to return to): it leaves the outbox — so it no longer
    /// blocks the next start — and the reason is appended to `failure_detail`.
    EffectAbandoned {
        /// The effect's id.
        id: String,
        /// Why it can never be carried out.
        reason: String,
    },
    /// A fleet stage (CANARY or DEPLOY) saves its typed progress before an outside effect.
    /// Does not change the stage or the epoch.
    FleetProgress {
        /// The epoch read before the gate started.
        epoch: u64,
        /// The progress, replacing what was there.
        progress: FleetStageProgress,
    },
    /// A rollback order's delivery saves its progress before an outside effect.
    EffectProgress {
        /// The effect's id.
        id: String,
        /// The progress, replacing what was there.
        progress: RevocationProgress,
    },
    /// An operator asks for an outbox effect to be delivered again now: its attempt count
    /// and last error are cleared (the effect stays queued; the runtime delivers it next).
    EffectRetry {
        /// The effect's id.
        id: String,
    },
    /// An operator gives up on an outbox effect (`fleetgate outbox abandon ID --reason`):
    /// it leaves the outbox, the reason is appended to `failure_detail` (as for
    /// [`Event::EffectAbandoned`]) and an entry naming the effect, the reason and who gave
    /// up is added to `stage_history` (same stage, epoch unchanged).
    EffectAbandonedBy {
        /// The effect's id.
        id: String,
        /// Why (must not be empty).
        reason: String,
        /// Who gave up on it (e.g. `operator alice`).
        by: String,
        /// Unix seconds.
        now: f64,
    },
    /// An operator holds the run at its current stage (`fleetgate pause`): no gate result,
    /// checkpoint or fleet progress is accepted until [`Event::Resume`], so nothing is
    /// sent. Bumps the epoch, so a gate pass already running is discarded.
    Pause {
        /// Who.
        by: String,
        /// Why (may be empty: recorded as "no reason given").
        reason: String,
        /// Unix seconds.
        now: f64,
    },
    /// An operator lets a paused run go on. The time spent paused does not count against
    /// the stage: an open CANARY window's deadline (and its judge's window), a canary's
    /// report grace and selection timeout, and DEPLOY's deadline move by it.
    Resume {
        /// Who.
        by: String,
        /// Why (may be empty).
        reason: String,
        /// Unix seconds.
        now: f64,
    },
    /// An operator ends the open CANARY window early and moves on to DEPLOY: the gate is
    /// recorded as passed *by the operator* ([`GateRecord::promoted`]), never as judged.
    /// Also the way out of a canary held as inconclusive.
    Promote {
        /// Who.
        by: String,
        /// Why (may be empty).
        reason: String,
        /// Unix seconds.
        now: f64,
    },
    /// A release was put on (part of) the fleet outside a run (`fleetgate fleet
    /// provision`: the first release onto empty or newly enrolled nodes) and passed the
    /// absolute checks. It becomes the completed release — the benchmark baseline and
    /// what a rollback returns to — and an entry is added to `stage_history`. Refused while
    /// a run is in progress, and for a version other than the completed one (a newer
    /// version goes through a run).
    Provisioned {
        /// The release now on the nodes.
        release: CompletedRelease,
        /// The nodes that were checked running it.
        nodes: Vec<String>,
        /// What was checked (recorded as the history entry's detail).
        detail: String,
        /// Unix seconds.
        now: f64,
    },
}

/// The typed progress of one fleet stage.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetStageProgress {
    /// CANARY's.
    Canary(CanaryProgress),
    /// DEPLOY's.
    Deploy(DeployProgress),
}

impl FleetStageProgress {
    /// The stage it belongs to.
    pub fn stage(&self) -> Stage {
        match self {
            FleetStageProgress::Canary(_) => Stage::Canary,
            FleetStageProgress::Deploy(_) => Stage::Deploying,
        }
    }
}

/// Values a gate computed that the state keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateFacts {
    /// BUILD: the code hash of the version.
    pub code_hash: Option<String>,
    /// SIGN: the signed manifest.
    pub manifest: Option<serde_json::Value>,
    /// SIGN: the manifest sequence used.
    pub sequence: Option<u64>,
}

/// What the runtime must do after persisting the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Evaluate the gate of `stage` (the run is there now, under `epoch`).
    EvaluateGate {
        /// The stage.
        stage: Stage,
        /// The epoch to carry back in [`Event::GateEvaluated`].
        epoch: u64,
    },
    /// Evaluate the same gate again later (it returned pending).
    Recheck {
        /// The stage.
        stage: Stage,
        /// The epoch.
        epoch: u64,
    },
    /// Carry out an outbox effect, then report [`Event::EffectDone`] or
    /// [`Event::EffectFailed`].
    Deliver(Box<Effect>),
    /// The run reached a terminal stage.
    Finished {
        /// `completed`, `rolled_back` or `failed`.
        stage: Stage,
    },
}

/// Why an event was refused. The state is unchanged when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// `start` while a run is active.
    #[error(
        "cannot start {version}: a run of {active_version} is in progress at stage `{stage}` (roll it back or wait for it to finish)"
    )]
    AlreadyActive {
        /// The requested version.
        version: String,
        /// The version in progress.
        active_version: String,
        /// Its stage.
        stage: Stage,
    },
    /// `start` while a rollback order of the previous run is still undelivered.
    #[error(
        "cannot start {version}: the previous run's effect {first} has not been delivered yet ({first_detail}); still queued: {pending}. Retry it now with `fleetgate outbox retry {first}`, or give up on it with `fleetgate outbox abandon {first} --reason TEXT` (`fleetgate outbox list` shows every queued effect)"
    )]
    UndeliveredRollback {
        /// The requested version.
        version: String,
        /// Effect ids still pending.
        pending: String,
        /// The first pending effect's id (the one the suggested commands name).
        first: String,
        /// What the first pending effect does, its attempts and its last error.
        first_detail: String,
    },
    /// `rollback` with nothing in progress.
    #[error(
        "nothing to roll back: the pipeline is at `{stage}` (rollback is allowed from a running stage only)"
    )]
    NotActive {
        /// Current stage.
        stage: Stage,
    },
    /// A rollback needs a reason.
    #[error("a rollback needs a non-empty reason")]
    EmptyReason,
    /// A gate result that arrived after the run moved on; it is discarded.
    #[error(
        "discarded the {stage} gate result: it was computed under epoch {result_epoch}, but the run is now at `{current_stage}` epoch {current_epoch}"
    )]
    Stale {
        /// The stage the gate was for.
        stage: Stage,
        /// Epoch the gate started under.
        result_epoch: u64,
        /// Current stage.
        current_stage: Stage,
        /// Current epoch.
        current_epoch: u64,
    },
    /// An effect acknowledgement for an id that is not in the outbox.
    #[error("no outbox effect with id {id} ({})", known_effects(.known))]
    UnknownEffect {
        /// The id.
        id: String,
        /// The ids that are in the outbox.
        known: Vec<String>,
    },
    /// `pause`, `resume` or `promote` with no run in progress.
    #[error(
        "cannot {action}: no run in progress (the pipeline is at `{stage}`; start one with `fleetgate start VERSION`)"
    )]
    NoRun {
        /// `pause`, `resume` or `promote`.
        action: &'static str,
        /// Current stage.
        stage: Stage,
    },
    /// `pause` on a paused run.
    #[error("the run is already paused (by {by}: {reason}); `fleetgate resume` lets it go on")]
    AlreadyPaused {
        /// Who paused it.
        by: String,
        /// Why.
        reason: String,
    },
    /// `resume` on a run that is not paused.
    #[error("the run is not paused (it is at `{stage}`)")]
    NotPaused {
        /// Current stage.
        stage: Stage,
    },
    /// A gate result, checkpoint or promotion while the run is paused: refused, nothing is
    /// sent until it is resumed.
    #[error(
        "the run is paused at `{stage}` (by {by}: {reason}); nothing is evaluated or sent until `fleetgate resume`"
    )]
    Paused {
        /// Current stage.
        stage: Stage,
        /// Who paused it.
        by: String,
        /// Why.
        reason: String,
    },
    /// `promote` where there is no open canary window to end.
    #[error("cannot promote: {why}")]
    NotPromotable {
        /// Why.
        why: String,
    },
    /// `fleet provision` while a run is in progress, or of a version other than the
    /// completed release.
    #[error("cannot provision {version}: {why}")]
    NotProvisionable {
        /// The version asked for.
        version: String,
        /// Why.
        why: String,
    },
    /// An operator abandoned an effect without saying why.
    #[error("abandoning outbox effect {id} needs a non-empty reason (--reason TEXT)")]
    EmptyAbandonReason {
        /// The effect's id.
        id: String,
    },
}

fn known_effects(known: &[String]) -> String {
    if known.is_empty() {
        "the outbox is empty".to_owned()
    } else {
        format!("the outbox holds: {}", known.join(", "))
    }
}

fn unknown_effect(state: &PipelineState, id: String) -> TransitionError {
    TransitionError::UnknownEffect {
        id,
        known: state.outbox.iter().map(|e| e.id.clone()).collect(),
    }
}

/// Apply one event. On `Ok`, the caller must persist `state` before acting on the commands.
pub fn handle(state: &mut PipelineState, event: Event) -> Result<Vec<Command>, TransitionError> {
    match event {
        Event::Start {
            version,
            git_sha,
            run_id,
            channel,
            now,
        } => start(state, version, git_sha, run_id, channel, now),
        Event::GateEvaluated {
            stage,
            epoch,
            verdict,
            facts,
            now,
        } => {
            check_fresh(state, stage, epoch)?;
            Ok(gate_evaluated(state, stage, verdict, facts, now))
        }
        Event::Checkpoint { stage, epoch, data } => {
            check_fresh(state, stage, epoch)?;
            state.stage_data.insert(stage, data);
            Ok(Vec::new())
        }
        Event::Rollback { reason, now } => rollback(state, reason, now),
        Event::SequenceUsed { sequence } => {
            state.last_sequence = state.last_sequence.max(sequence);
            Ok(Vec::new())
        }
        Event::EffectDone { id } => {
            let before = state.outbox.len();
            state.outbox.retain(|e| e.id != id);
            if state.outbox.len() == before {
                return Err(unknown_effect(state, id));
            }
            Ok(Vec::new())
        }
        Event::EffectFailed { id, error } => {
            let Some(effect) = state.outbox.iter_mut().find(|e| e.id == id) else {
                return Err(unknown_effect(state, id));
            };
            effect.attempts += 1;
            effect.last_error = Some(error);
            Ok(Vec::new())
        }
        Event::FleetProgress { epoch, progress } => {
            check_fresh(state, progress.stage(), epoch)?;
            match progress {
                FleetStageProgress::Canary(p) => state.canary = Some(p),
                FleetStageProgress::Deploy(p) => state.deploy = Some(p),
            }
            Ok(Vec::new())
        }
        Event::EffectProgress { id, progress } => {
            let Some(effect) = state.outbox.iter_mut().find(|e| e.id == id) else {
                return Err(unknown_effect(state, id));
            };
            state.last_sequence = state.last_sequence.max(progress.sequence);
            effect.revocation = Some(progress);
            Ok(Vec::new())
        }
        Event::EffectAbandoned { id, reason } => {
            let before = state.outbox.len();
            state.outbox.retain(|e| e.id != id);
            if state.outbox.len() == before {
                return Err(unknown_effect(state, id));
            }
            let note = format!("rollback order {id} was not sent: {reason}");
            state.failure_detail = Some(match state.failure_detail.take() {
                Some(d) => format!("{d}\n{note}"),
                None => note,
            });
            Ok(Vec::new())
        }
        Event::EffectRetry { id } => {
            let Some(effect) = state.outbox.iter_mut().find(|e| e.id == id) else {
                return Err(unknown_effect(state, id));
            };
            effect.attempts = 0;
            effect.last_error = None;
            if let Some(r) = &mut effect.revocation {
                r.retry_now();
            }
            Ok(vec![Command::Deliver(Box::new(effect.clone()))])
        }
        Event::EffectAbandonedBy {
            id,
            reason,
            by,
            now,
        } => abandon_by(state, id, reason, by, now),
        Event::Pause { by, reason, now } => pause(state, by, reason, now),
        Event::Resume { by, reason, now } => resume_run(state, by, reason, now),
        Event::Promote { by, reason, now } => promote(state, by, reason, now),
        Event::Provisioned {
            release,
            nodes,
            detail,
            now,
        } => provisioned(state, release, &nodes, detail, now),
    }
}

/// The reason recorded when an operator gives none.
pub const NO_REASON: &str = "no reason given";

fn action(by: String, reason: String, now: f64) -> OperatorAction {
    let reason = reason.trim();
    OperatorAction {
        by,
        reason: if reason.is_empty() {
            NO_REASON.to_owned()
        } else {
            reason.to_owned()
        },
        at: now,
    }
}

fn note(state: &mut PipelineState, now: f64, reason: String, detail: Option<String>) {
    state.epoch += 1;
    state.stage_history.push(HistoryEntry {
        stage: state.stage,
        at: now,
        from: Some(state.stage),
        reason: Some(reason),
        detail,
        epoch: Some(state.epoch),
    });
}

fn pause(
    state: &mut PipelineState,
    by: String,
    reason: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    if !state.stage.is_gated() {
        return Err(TransitionError::NoRun {
            action: "pause",
            stage: state.stage,
        });
    }
    if let Some(p) = &state.paused {
        return Err(TransitionError::AlreadyPaused {
            by: p.by.clone(),
            reason: p.reason.clone(),
        });
    }
    let a = action(by, reason, now);
    let line = format!("paused by {}: {}", a.by, a.reason);
    state.paused = Some(a);
    note(state, now, line, None);
    Ok(Vec::new())
}

fn resume_run(
    state: &mut PipelineState,
    by: String,
    reason: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    if !state.stage.is_gated() {
        return Err(TransitionError::NoRun {
            action: "resume",
            stage: state.stage,
        });
    }
    let Some(paused) = state.paused.take() else {
        return Err(TransitionError::NotPaused { stage: state.stage });
    };
    // Whole seconds paused (the fleet machines count in whole unix seconds).
    let secs = (now - paused.at).max(0.0).round();
    let secs = if secs.is_finite() && secs < 1e15 {
        secs as i64
    } else {
        0
    };
    let mut moved = Vec::new();
    match state.stage {
        Stage::Canary => {
            if let Some(c) = &mut state.canary {
                shift_window(c, secs, "canary", &mut moved);
            }
        }
        Stage::Deploying => {
            if let Some(d) = &mut state.deploy {
                d.deadline = d.deadline.saturating_add(secs);
                moved.push("the deploy deadline".to_owned());
                if let Some(i) = d.current_step() {
                    let what = format!("deploy step {}", i + 1);
                    shift_window(&mut d.steps[i].progress, secs, &what, &mut moved);
                }
            }
        }
        Stage::Idle
        | Stage::Building
        | Stage::Testing
        | Stage::Auditing
        | Stage::Benchmarking
        | Stage::Signing
        | Stage::Completed
        | Stage::RolledBack
        | Stage::Failed => {}
    }
    let a = action(by, reason, now);
    let detail = if moved.is_empty() {
        format!("paused {secs}s (by {}: {})", paused.by, paused.reason)
    } else {
        format!(
            "paused {secs}s (by {}: {}); moved by {secs}s: {}",
            paused.by,
            paused.reason,
            moved.join(", ")
        )
    };
    note(
        state,
        now,
        format!("resumed by {}: {}", a.by, a.reason),
        Some(detail),
    );
    Ok(vec![Command::EvaluateGate {
        stage: state.stage,
        epoch: state.epoch,
    }])
}

/// A pause of `secs` stops a canary-like window's clock: the deadline (and the longest
/// extension) of an open window, else the report grace and the selection timeout.
fn shift_window(c: &mut CanaryProgress, secs: i64, what: &str, moved: &mut Vec<String>) {
    if c.window_start.is_some() {
        c.paused_secs = c.paused_secs.saturating_add(secs);
        c.deadline = c.deadline.map(|d| d.saturating_add(secs));
        moved.push(format!("the {what} window's deadline"));
    } else {
        if let Some(t) = &mut c.first_sent_at {
            *t = t.saturating_add(secs);
            moved.push(format!("the {what} report grace"));
        }
        if let Some(t) = &mut c.first_selection_attempt_at {
            *t = t.saturating_add(secs);
            moved.push(format!("the {what} selection timeout"));
        }
    }
}

fn promote(
    state: &mut PipelineState,
    by: String,
    reason: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    if !state.stage.is_gated() {
        return Err(TransitionError::NoRun {
            action: "promote",
            stage: state.stage,
        });
    }
    if let Some(p) = &state.paused {
        return Err(TransitionError::Paused {
            stage: state.stage,
            by: p.by.clone(),
            reason: p.reason.clone(),
        });
    }
    if state.stage == Stage::Deploying {
        return promote_step(state, by, reason, now);
    }
    if state.stage != Stage::Canary {
        return Err(TransitionError::NotPromotable {
            why: format!(
                "the run is at `{}`; only an open CANARY window or DEPLOY step window can be ended early",
                state.stage
            ),
        });
    }
    if state.canary.as_ref().and_then(|c| c.window_start).is_none() {
        return Err(TransitionError::NotPromotable {
            why: "the canary window is not open yet (every canary node must first report the release; until then DEPLOY would skip canary nodes that do not run it)".to_owned(),
        });
    }
    let a = action(by, reason, now);
    let last = state.gate_results.get(&Stage::Canary);
    let judged = last.map_or_else(
        || "the judge had not reported yet".to_owned(),
        |r| format!("the judge's last word: {}", r.verdict.detail),
    );
    let figures = last.map_or(serde_json::Value::Null, |r| r.verdict.figures.clone());
    let detail = format!(
        "promoted by {}: {} — the window was ended early, NOT judged a pass; {judged}",
        a.by, a.reason
    );
    let verdict = Verdict::passed(detail.clone(), figures);
    record(state, Stage::Canary, &verdict, now);
    if let Some(r) = state.gate_results.get_mut(&Stage::Canary) {
        r.promoted = Some(a.clone());
    }
    enter(
        state,
        Stage::Deploying,
        now,
        Some(format!("promoted by {}: {}", a.by, a.reason)),
        Some(detail),
    );
    Ok(vec![Command::EvaluateGate {
        stage: Stage::Deploying,
        epoch: state.epoch,
    }])
}

/// `promote` during a phased DEPLOY: the open step window ends now and the next step
/// starts on the next pass, recorded as promoted (never as judged).
fn promote_step(
    state: &mut PipelineState,
    by: String,
    reason: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    let last = state
        .gate_results
        .get(&Stage::Deploying)
        .map(|r| r.verdict.detail.clone());
    let Some(d) = &mut state.deploy else {
        return Err(TransitionError::NotPromotable {
            why: "DEPLOY has not started its steps yet".to_owned(),
        });
    };
    let Some(i) = d.current_step() else {
        return Err(TransitionError::NotPromotable {
            why: "no DEPLOY step is being judged (no `[deploy] steps`, or every step is done and the whole fleet is being updated)".to_owned(),
        });
    };
    let total = d.steps.len();
    let step = &mut d.steps[i];
    if step.progress.window_start.is_none() {
        return Err(TransitionError::NotPromotable {
            why: format!(
                "the window of deploy step {}/{total} is not open yet (every node of the step must first report the release)",
                i + 1
            ),
        });
    }
    let a = action(by, reason, now);
    let judged = last.map_or_else(
        || "the judge had not reported yet".to_owned(),
        |d| format!("the judge's last word: {d}"),
    );
    let detail = format!(
        "deploy step {}/{total} ({:.0}% of the fleet) promoted by {}: {} — the window was ended early, NOT judged a pass; {judged}",
        i + 1,
        step.fraction * 100.0,
        a.by,
        a.reason
    );
    step.passed = Some(detail.clone());
    step.promoted = Some(a.clone());
    note(
        state,
        now,
        format!("deploy step {} promoted by {}: {}", i + 1, a.by, a.reason),
        Some(detail),
    );
    Ok(vec![Command::EvaluateGate {
        stage: Stage::Deploying,
        epoch: state.epoch,
    }])
}

fn describe(action: &EffectAction) -> String {
    match action {
        EffectAction::SendRollback { scope, .. } => match scope {
            RollbackScope::Canary => "rollback order to the canary nodes".to_owned(),
            RollbackScope::All => "rollback order to the whole fleet".to_owned(),
        },
    }
}

fn abandon_by(
    state: &mut PipelineState,
    id: String,
    reason: String,
    by: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    let Some(pos) = state.outbox.iter().position(|e| e.id == id) else {
        return Err(unknown_effect(state, id));
    };
    let reason = reason.trim().to_owned();
    if reason.is_empty() {
        return Err(TransitionError::EmptyAbandonReason { id });
    }
    let effect = state.outbox.remove(pos);
    let what = describe(&effect.action);
    let note = format!(
        "{what} {id} was abandoned by {by} after {} attempt(s): {reason}",
        effect.attempts
    );
    state.failure_detail = Some(match state.failure_detail.take() {
        Some(d) => format!("{d}\n{note}"),
        None => note.clone(),
    });
    state.stage_history.push(HistoryEntry {
        stage: state.stage,
        at: now,
        from: Some(state.stage),
        reason: Some(note),
        detail: effect
            .last_error
            .map(|e| format!("last delivery error: {e}")),
        epoch: Some(state.epoch),
    });
    Ok(Vec::new())
}

fn provisioned(
    state: &mut PipelineState,
    release: CompletedRelease,
    nodes: &[String],
    detail: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    let refuse = |why: String| {
        Err(TransitionError::NotProvisionable {
            version: release.version.clone(),
            why,
        })
    };
    if state.is_active() {
        return refuse(format!(
            "a run of {} is in progress at stage `{}`; provisioning is for a fleet between runs",
            state.version, state.stage
        ));
    }
    if let Some(done) = &state.last_completed
        && (done.version != release.version || done.code_hash != release.code_hash)
    {
        return refuse(format!(
            "the fleet's completed release is {} (code hash {}); new nodes are provisioned with that one, and a newer version goes through a run (`fleetgate start {}`)",
            done.version,
            done.code_hash.as_deref().unwrap_or("unknown"),
            release.version
        ));
    }
    if let Some(seq) = release.sequence {
        state.last_sequence = state.last_sequence.max(seq);
    }
    let note = format!(
        "provisioned {} on {} node(s): {}",
        release.version,
        nodes.len(),
        nodes.join(", ")
    );
    state.stage_history.push(HistoryEntry {
        stage: state.stage,
        at: now,
        from: Some(state.stage),
        reason: Some(note),
        detail: Some(detail),
        epoch: Some(state.epoch),
    });
    // The record of the first provisioning stays (its run id and sequence); a later
    // provisioning of the same release onto new nodes only adds history.
    if state.last_completed.is_none() {
        state.last_completed = Some(release);
    }
    Ok(Vec::new())
}

/// The commands a freshly loaded state implies: crash recovery re-issues these.
pub fn resume(state: &PipelineState) -> Vec<Command> {
    let mut cmds: Vec<Command> = state
        .outbox
        .iter()
        .map(|e| Command::Deliver(Box::new(e.clone())))
        .collect();
    if state.stage.is_gated() && state.paused.is_none() {
        cmds.push(Command::EvaluateGate {
            stage: state.stage,
            epoch: state.epoch,
        });
    }
    cmds
}

fn check_fresh(state: &PipelineState, stage: Stage, epoch: u64) -> Result<(), TransitionError> {
    if let Some(p) = &state.paused {
        return Err(TransitionError::Paused {
            stage: state.stage,
            by: p.by.clone(),
            reason: p.reason.clone(),
        });
    }
    if state.stage != stage || state.epoch != epoch {
        return Err(TransitionError::Stale {
            stage,
            result_epoch: epoch,
            current_stage: state.stage,
            current_epoch: state.epoch,
        });
    }
    Ok(())
}

fn start(
    state: &mut PipelineState,
    version: Version,
    git_sha: String,
    run_id: String,
    channel: Option<String>,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    if !state.stage.can_start() {
        return Err(TransitionError::AlreadyActive {
            version: version.to_string(),
            active_version: state.version.clone(),
            stage: state.stage,
        });
    }
    if let Some(first) = state.outbox.first() {
        return Err(TransitionError::UndeliveredRollback {
            version: version.to_string(),
            pending: state
                .outbox
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            first: first.id.clone(),
            first_detail: format!(
                "{}, {} attempt(s), last error: {}",
                describe(&first.action),
                first.attempts,
                first.last_error.as_deref().unwrap_or("none yet")
            ),
        });
    }
    let from = state.stage;
    let epoch = state.epoch + 1;
    *state = PipelineState {
        version: version.to_string(),
        git_sha,
        started_at: Some(now),
        run_id: Some(run_id),
        epoch,
        last_completed: state.last_completed.take(),
        channel: channel.filter(|c| c != crate::state::DEFAULT_CHANNEL),
        channel_releases: std::mem::take(&mut state.channel_releases),
        last_sequence: state.last_sequence,
        ..PipelineState::idle()
    };
    state.stage = Stage::Building;
    state.stage_history.push(HistoryEntry {
        stage: Stage::Building,
        at: now,
        from: Some(from),
        reason: None,
        detail: None,
        epoch: Some(epoch),
    });
    Ok(vec![Command::EvaluateGate {
        stage: Stage::Building,
        epoch,
    }])
}

fn record(state: &mut PipelineState, stage: Stage, verdict: &Verdict, now: f64) {
    let entry = state
        .gate_results
        .entry(stage)
        .or_insert_with(|| GateRecord {
            verdict: verdict.clone(),
            first_checked_at: now,
            last_checked_at: now,
            checks: 0,
            promoted: None,
        });
    entry.verdict = verdict.clone();
    entry.last_checked_at = now;
    entry.checks += 1;
}

fn enter(
    state: &mut PipelineState,
    to: Stage,
    now: f64,
    reason: Option<String>,
    detail: Option<String>,
) {
    let from = state.stage;
    state.stage = to;
    state.epoch += 1;
    state.stage_history.push(HistoryEntry {
        stage: to,
        at: now,
        from: Some(from),
        reason,
        detail,
        epoch: Some(state.epoch),
    });
}

fn order(state: &mut PipelineState, action: EffectAction) -> Effect {
    state.effects_ordered += 1;
    let run = state.run_id.clone().unwrap_or_else(|| "run".to_owned());
    let effect = Effect {
        id: format!("{run}-{}", state.effects_ordered),
        action,
        attempts: 0,
        last_error: None,
        revocation: None,
    };
    state.outbox.push(effect.clone());
    effect
}

/// The hash scheme a signed manifest names (`hash_scheme`; its absence, or a value this
/// build does not know, is `git`, as the manifest format defines it).
fn manifest_hash_scheme(manifest: &serde_json::Value) -> HashScheme {
    match manifest
        .get("hash_scheme")
        .and_then(serde_json::Value::as_str)
    {
        Some("hart") => HashScheme::Hart,
        _ => HashScheme::Git,
    }
}

fn gate_evaluated(
    state: &mut PipelineState,
    stage: Stage,
    verdict: Verdict,
    facts: GateFacts,
    now: f64,
) -> Vec<Command> {
    record(state, stage, &verdict, now);
    if let Some(h) = facts.code_hash {
        state.code_hash = Some(h);
    }
    if let Some(m) = facts.manifest {
        state.manifest = Some(m);
    }
    if let Some(seq) = facts.sequence {
        state.last_sequence = state.last_sequence.max(seq);
    }
    match verdict.outcome {
        Outcome::Pending => vec![Command::Recheck {
            stage,
            epoch: state.epoch,
        }],
        Outcome::Passed => {
            let Some(next) = stage.next() else {
                // Only gated stages get here (check_fresh compared against the current
                // stage, and only gated stages are evaluated); a terminal has no next.
                return Vec::new();
            };
            enter(state, next, now, None, Some(verdict.detail.clone()));
            if next == Stage::Completed {
                let release = CompletedRelease {
                    version: state.version.clone(),
                    git_sha: state.git_sha.clone(),
                    code_hash: state.code_hash.clone(),
                    run_id: state.run_id.clone().unwrap_or_default(),
                    sequence: facts.sequence.or_else(|| {
                        state
                            .manifest
                            .as_ref()
                            .and_then(|m| m.get("sequence"))
                            .and_then(|s| s.as_u64())
                    }),
                    hash_scheme: state.manifest.as_ref().map(manifest_hash_scheme),
                    artifacts: state
                        .manifest
                        .as_ref()
                        .and_then(|m| m.get("artifacts"))
                        .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
                        .cloned(),
                };
                match state.channel.clone() {
                    Some(ch) => {
                        state.channel_releases.insert(ch, release);
                    }
                    None => state.last_completed = Some(release),
                }
                vec![Command::Finished {
                    stage: Stage::Completed,
                }]
            } else {
                vec![Command::EvaluateGate {
                    stage: next,
                    epoch: state.epoch,
                }]
            }
        }
        Outcome::Failed => {
            let reason = format!("{} gate failed: {}", stage.gate_name(), verdict.detail);
            match stage.on_failure() {
                Some(OnFailure::Fail) | None => {
                    state.failure_detail = Some(reason.clone());
                    enter(state, Stage::Failed, now, Some(reason), None);
                    vec![Command::Finished {
                        stage: Stage::Failed,
                    }]
                }
                Some(OnFailure::RollBack) => {
                    state.failure_detail = Some(reason.clone());
                    state.rollback_reason = Some(reason.clone());
                    enter(state, Stage::RolledBack, now, Some(reason), None);
                    vec![Command::Finished {
                        stage: Stage::RolledBack,
                    }]
                }
                Some(OnFailure::RollBackAndNotify(scope)) => {
                    state.failure_detail = Some(reason.clone());
                    state.rollback_reason = Some(reason.clone());
                    enter(state, Stage::RolledBack, now, Some(reason.clone()), None);
                    let effect = order(state, EffectAction::SendRollback { scope, reason });
                    vec![
                        Command::Deliver(Box::new(effect)),
                        Command::Finished {
                            stage: Stage::RolledBack,
                        },
                    ]
                }
            }
        }
    }
}

fn rollback(
    state: &mut PipelineState,
    reason: String,
    now: f64,
) -> Result<Vec<Command>, TransitionError> {
    if !state.stage.is_gated() {
        return Err(TransitionError::NotActive { stage: state.stage });
    }
    let reason = reason.trim().to_owned();
    if reason.is_empty() {
        return Err(TransitionError::EmptyReason);
    }
    let scope: Option<RollbackScope> = state.stage.rollback_scope();
    // An abort wins over a pause: the run ends.
    state.paused = None;
    state.rollback_reason = Some(reason.clone());
    enter(state, Stage::RolledBack, now, Some(reason.clone()), None);
    let mut cmds = Vec::new();
    if let Some(scope) = scope {
        let effect = order(state, EffectAction::SendRollback { scope, reason });
        cmds.push(Command::Deliver(Box::new(effect)));
    }
    cmds.push(Command::Finished {
        stage: Stage::RolledBack,
    });
    Ok(cmds)
}
