//! The apply state machine: pure `(journal, event) -> (journal, commands)`.
//!
//! No I/O, no clock (the time is an argument). The runtime ([`crate::agent`]) persists
//! the returned [`Journal`] **before** it executes the commands (write-ahead), executes
//! them in order, and feeds the result of the one command that produces an event back
//! into [`step`]. Because the journal names the phase an apply is in, a restarted agent
//! feeds [`Event::Recover`] and the machine finishes or undoes the apply:
//!
//! | phase when the agent died | on restart |
//! |---|---|
//! | `fetch`, `install`, `stop_old`, `backup` | undo: stop whatever app runs, remove the new slot, start the committed slot — the old version |
//! | `start_new`, `probe` | undo as above; the new version may have written to the backed-up paths, so they are restored from the pre-apply backup before the old version starts |
//! | `commit` | finish: start the new slot, switch `current`, raise the floor — the new version |
//! | `roll_back` | finish the rollback: start the committed (old) slot, remember the release as bad |
//!
//! The `current` pointer and [`Journal::current`] change only in the `commit` phase,
//! which is entered only after the new version passed its health check.
//!
//! **Backups.** With backed-up paths or a `pre_apply` hook configured
//! ([`Policy::backup`]), the old app is stopped, then the `backup` phase runs the hook and
//! snapshots the paths ([`Command::Backup`]), and only then does the new version start.
//! The snapshot's id is journaled ([`InFlight::backup`]) once it is complete; from then on
//! every way back to the old version — a failed health check, a failed commit, a crash
//! in `start_new` or `probe` — restores the paths from it before the old version starts
//! ([`Command::RestorePrevious`]'s `restore`, [`Command::RestoreData`]). A restore is
//! idempotent, so a crash during one repeats it. A backup that fails (disk full, a hook
//! exiting non-zero) restarts the old version untouched; the release is not remembered
//! as bad (the node, not the release, failed). A revocation order is a forward apply of
//! the older version: it takes its own backup (the data as the revoked release left it),
//! then, on a node that runs the revoked release, puts back the backup that release's
//! apply took — the data as it was before it — and runs `post_rollback` in the older
//! version's slot before that version starts ([`Command::RestoreRevoked`], in
//! `start_new`: undone like any start, from the apply's own backup). A backup no longer
//! kept leaves the data as the revoked release left it.
//!
//! **Idempotence.** The journal remembers the last [`MAX_APPLIED`] manifests this node
//! committed or no-op'd ([`Journal::applied`]: sequence, SHA-256 of the exact bytes, and
//! the code hash left running). A manifest refused by the floor whose digest is among
//! them, and whose code hash still runs, is answered by [`already_applied`] with
//! [`Outcome::AlreadyApplied`] (success, nothing done).
//!
//! **Revocation.** A rollback order names the release it revokes
//! ([`Target::revokes`]). Only a node that runs it — its committed version was installed
//! by that sequence, or has the revoked code hash when the order names one — switches
//! back to `return_to_*`; every other node only raises its floor to the order's sequence
//! ([`Outcome::Noop`]), so the revoked manifest is refused as replayed from then on. An
//! apply of the revoked release that is still in flight is never seen here: applies are
//! serialised (the order is answered `busy` until it ends), and after a crash
//! [`Event::Recover`] has finished (committed: the node runs it) or undone (it does not)
//! that apply before any order is verified.

use fleetgate_trust::HashScheme;
use serde::{Deserialize, Serialize};

/// Journal format version.
pub const JOURNAL_SCHEMA_VERSION: u32 = 1;
/// Most bad releases remembered (oldest forgotten first).
pub const MAX_BAD: usize = 256;
/// Most committed or no-op'd manifests remembered for idempotent answers (oldest
/// forgotten first).
pub const MAX_APPLIED: usize = 16;

/// `release`, `rollback` or `agent` (the manifest's kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A new version.
    Release,
    /// An order to return to an earlier version.
    Rollback,
    /// A new build of the agent itself (`selfupdate`); never a machine target.
    Agent,
}

/// A version installed in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    /// Version string.
    pub version: String,
    /// Code hash of the slot's tree.
    pub code_hash: String,
    /// Commit checked out in the slot.
    pub git_sha: String,
    /// Sequence of the manifest that installed it (0: installed out of band).
    pub sequence: u64,
    /// Slot directory name under `slots/`.
    pub slot: String,
    /// How `code_hash` was computed (from the manifest; absent = `git`).
    #[serde(default, skip_serializing_if = "HashScheme::is_git")]
    pub hash_scheme: HashScheme,
}

/// What a verified manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Manifest kind.
    pub kind: Kind,
    /// Manifest sequence.
    pub sequence: u64,
    /// Version to run (for a rollback: `return_to_version`).
    pub version: String,
    /// Code hash to run (for a rollback: `return_to_code_hash`).
    pub code_hash: String,
    /// Commit to fetch (for a rollback: `return_to_git_sha`, may be empty when the
    /// previous slot matches).
    pub git_sha: String,
    /// SHA-256 of the manifest bytes, hex.
    pub manifest_sha256: String,
    /// How `code_hash` was computed: the manifest's `hash_scheme` (absent = `git`).
    #[serde(default, skip_serializing_if = "HashScheme::is_git")]
    pub hash_scheme: HashScheme,
    /// For a rollback order: the release it revokes (`rollback_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revokes: Option<Revoked>,
    /// The built files to install instead of a checkout of `git_sha` (the manifest's
    /// `artifacts`; empty: a source release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<fleetgate_trust::Artifact>,
}

/// The release a rollback order revokes (the manifest's `rollback_of`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Sequence of the revoked release.
    pub sequence: u64,
    /// Its version (for messages).
    pub version: String,
    /// Its code hash, when the order names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_hash: Option<String>,
}

impl Revoked {
    /// Whether `running` is the revoked release: installed by its sequence, or on its
    /// code hash when the order names one.
    #[must_use]
    pub fn matches(&self, running: &Installed) -> bool {
        running.sequence == self.sequence
            || self
                .code_hash
                .as_deref()
                .is_some_and(|h| !h.is_empty() && h == running.code_hash)
    }
}

impl Target {
    /// The slot directory name: `<sequence>-<first 12 chars of the commit or code hash>`.
    #[must_use]
    pub fn slot_name(&self) -> String {
        let src = if self.git_sha.is_empty() {
            &self.code_hash
        } else {
            &self.git_sha
        };
        let short: String = src
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        format!("{}-{short}", self.sequence)
    }
}

/// Phase of an apply in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Fetching the commit into the new slot and verifying its code hash.
    Fetch,
    /// Running the install step in the new slot.
    Install,
    /// Stopping the running app.
    StopOld,
    /// The old app is stopped: running the `pre_apply` hook and snapshotting the
    /// backed-up paths.
    Backup,
    /// Starting the app from the new slot.
    StartNew,
    /// Waiting for the new app's health.
    Probe,
    /// Healthy: switching `current`, raising the floor.
    Commit,
    /// Unhealthy: restarting the previous version.
    RollBack,
}

impl Phase {
    /// The persisted name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Install => "install",
            Self::StopOld => "stop_old",
            Self::Backup => "backup",
            Self::StartNew => "start_new",
            Self::Probe => "probe",
            Self::Commit => "commit",
            Self::RollBack => "roll_back",
        }
    }
}

/// An apply in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// What is being applied.
    pub target: Target,
    /// Slot directory name of the new version.
    pub slot: String,
    /// The slot is the kept previous slot (not fetched; never removed on failure).
    pub reused_slot: bool,
    /// Current phase.
    pub phase: Phase,
    /// Why the apply is rolling back.
    #[serde(default)]
    pub failure: Option<String>,
    /// When it started (unix seconds).
    pub started_at: u64,
    /// The id of the complete pre-apply backup (`<state_dir>/backups/<id>`), once taken;
    /// a way back to the old version restores from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

impl InFlight {
    /// The id of this apply's backup: `<manifest sequence>-<slot>` (unique per apply, and
    /// ordered by the sequence that took it).
    #[must_use]
    pub fn backup_id(&self) -> String {
        format!("{}-{}", self.target.sequence, self.slot)
    }
}

/// A manifest this node committed or no-op'd (remembered for idempotent answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedManifest {
    /// Manifest sequence.
    pub sequence: u64,
    /// SHA-256 of the exact manifest bytes, hex.
    pub manifest_sha256: String,
    /// Code hash that ran once it was committed or no-op'd ("" when nothing ran).
    pub code_hash: String,
}

/// A release that failed on this node and is never retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadRelease {
    /// Manifest sequence.
    pub sequence: u64,
    /// Code hash.
    pub code_hash: String,
    /// Why it failed.
    pub reason: String,
}

/// How an apply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new version is running and committed.
    Applied,
    /// Already on that code hash; nothing was restarted.
    Noop,
    /// The new version failed its health check; the previous one runs again.
    RolledBack,
    /// Failed before the running app was touched (fetch, code hash, install).
    Failed,
    /// Refused without doing anything (a release that already failed here).
    Refused,
    /// The agent died mid-apply; on restart the apply was undone.
    Interrupted,
    /// This exact manifest was already committed or no-op'd here and what it left
    /// running still runs; nothing was done.
    AlreadyApplied,
}

impl Outcome {
    /// The snake_case name (as in JSON).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Noop => "noop",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Interrupted => "interrupted",
            Self::AlreadyApplied => "already_applied",
        }
    }

    /// Whether the node runs what the manifest asked for (`applied`, `noop`,
    /// `already_applied`).
    #[must_use]
    pub fn is_success(self) -> bool {
        match self {
            Self::Applied | Self::Noop | Self::AlreadyApplied => true,
            Self::RolledBack | Self::Failed | Self::Refused | Self::Interrupted => false,
        }
    }
}

/// The result of one apply, as `POST /apply` returns it and `GET /status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyReport {
    /// `true` for `applied`, `noop` and `already_applied`.
    pub success: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Manifest kind.
    pub kind: Kind,
    /// Manifest sequence.
    pub sequence: u64,
    /// Version asked for.
    pub version: String,
    /// Code hash asked for.
    pub code_hash: String,
    /// What runs now (after the apply).
    pub running: Option<Installed>,
    /// The phase the apply failed in, if it failed.
    #[serde(default)]
    pub failed_phase: Option<Phase>,
    /// Human-readable detail (the failure reason).
    pub detail: String,
    /// When it ended (unix seconds).
    pub at: u64,
}

/// The on-disk journal (`<state_dir>/journal.json`): the agent's whole durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// [`JOURNAL_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The committed version (what `current` points at).
    pub current: Option<Installed>,
    /// The version committed before it (its slot is kept for a fast rollback).
    pub previous: Option<Installed>,
    /// An apply in flight.
    pub apply: Option<InFlight>,
    /// Releases that failed here; never retried.
    pub bad: Vec<BadRelease>,
    /// The last apply's report.
    pub last_report: Option<ApplyReport>,
    /// The last [`MAX_APPLIED`] manifests committed or no-op'd here, oldest first
    /// (absent from journals written before it existed).
    #[serde(default)]
    pub applied: Vec<AppliedManifest>,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            schema_version: JOURNAL_SCHEMA_VERSION,
            current: None,
            previous: None,
            apply: None,
            bad: Vec::new(),
            last_report: None,
            applied: Vec::new(),
        }
    }
}

impl Journal {
    /// Whether `(sequence, code_hash)` failed here before.
    #[must_use]
    pub fn is_bad(&self, sequence: u64, code_hash: &str) -> bool {
        self.bad
            .iter()
            .any(|b| b.sequence == sequence && b.code_hash == code_hash)
    }
}

/// What the runtime feeds in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A manifest passed verification (signature, keyring, floor, expiry).
    Verified {
        /// What it asks for.
        target: Target,
        /// Whether the previous slot's directory is still on disk.
        previous_slot_present: bool,
    },
    /// The slot was fetched and its code hash matches.
    Fetched,
    /// Fetching or verifying the slot failed.
    FetchFailed {
        /// Why.
        reason: String,
        /// The release itself is wrong (code hash mismatch, missing commit): remember it
        /// as bad. `false` for transient failures (remote unreachable, disk full).
        permanent: bool,
    },
    /// The install step exited 0.
    InstallDone,
    /// The install step failed.
    InstallFailed {
        /// Why (exit status and output tail).
        reason: String,
    },
    /// The old app is stopped.
    Stopped,
    /// The `pre_apply` hook succeeded and the snapshot is complete (`None`: no paths are
    /// backed up, only the hook ran).
    BackedUp {
        /// The backup's id.
        id: Option<String>,
    },
    /// The hook or the snapshot failed; the old version is restarted untouched.
    BackupFailed {
        /// Why.
        reason: String,
    },
    /// The new app was spawned.
    Started,
    /// The new app could not be spawned.
    StartFailed {
        /// Why.
        reason: String,
    },
    /// The new app passed its health check.
    Healthy,
    /// The new app failed: grace window over, or crash loop.
    Unhealthy {
        /// Why.
        reason: String,
    },
    /// `current` switched and floor raised.
    Committed,
    /// Committing failed (I/O); the apply is rolled back.
    CommitFailed {
        /// Why.
        reason: String,
    },
    /// The previous version was restarted.
    RolledBack {
        /// Problem restarting it, if any (reported, nothing more can be done).
        problem: Option<String>,
    },
    /// The agent (re)started with this journal.
    Recover,
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Fetch `git_sha` into `slots/<slot>` and verify the tree's code hash equals
    /// `code_hash` — or, when `artifacts` is not empty, download them, check size and
    /// digest, and install them into the slot. Produces `Fetched` / `FetchFailed`.
    FetchSlot {
        /// The built files to install (empty: check out `git_sha`).
        artifacts: Vec<fleetgate_trust::Artifact>,
        /// Slot name.
        slot: String,
        /// Commit.
        git_sha: String,
        /// Expected code hash.
        code_hash: String,
        /// The scheme `code_hash` was computed with.
        hash_scheme: HashScheme,
    },
    /// Run the install step in the slot. Produces `InstallDone` / `InstallFailed`.
    RunInstall {
        /// Slot name.
        slot: String,
    },
    /// Stop the running app (drain, then kill its process group), including a stray one
    /// left by a previous agent process. Produces `Stopped`.
    StopApp,
    /// The app is stopped: run the `pre_apply` hook in the new slot, then snapshot the
    /// backed-up paths into `backups/<id>` (replacing a leftover of that id). Produces
    /// `BackedUp` / `BackupFailed`.
    Backup {
        /// The new slot (the hook's working directory).
        slot: String,
        /// The backup's id.
        id: String,
    },
    /// Start the app from a slot and supervise it. Produces `Started` / `StartFailed`.
    StartApp {
        /// The version to start.
        app: Installed,
    },
    /// Wait for health within the grace window. Produces `Healthy` / `Unhealthy`.
    WaitHealthy,
    /// Switch `current` to the slot atomically, raise the floor to `sequence`.
    /// Produces `Committed` / `CommitFailed`.
    Commit {
        /// Slot name.
        slot: String,
        /// Floor to raise to.
        sequence: u64,
    },
    /// Stop whatever runs; restore the backed-up paths from `restore` (when set) and
    /// run the `post_rollback` hook; start `previous` (if any). Produces `RolledBack`.
    RestorePrevious {
        /// The version to go back to.
        previous: Option<Installed>,
        /// The pre-apply backup to restore first.
        restore: Option<String>,
    },
    /// Restore the backed-up paths from a backup, then run the `post_rollback` hook (no
    /// event; the app must be stopped). Used when a crash interrupted the new version.
    RestoreData {
        /// The backup's id.
        id: String,
    },
    /// A revocation: put back the data as it was before the revoked release was applied,
    /// from the backup that apply took (`id`), when it is still kept, then run the
    /// `post_rollback` hook in `slot` (the version about to start). No event; the app is
    /// stopped. A backup no longer kept leaves the data as it is (logged).
    RestoreRevoked {
        /// The revoked release's pre-apply backup.
        id: String,
        /// The slot of the version that starts next.
        slot: String,
    },
    /// Remove all but the newest `keep` complete backups, and any partial one (no event).
    PruneBackups,
    /// Stop whatever app runs, as `StopApp`, without an event (recovery).
    KillApp,
    /// Start the app (no event; used at startup and after recovery).
    RunApp {
        /// The version to run.
        app: Installed,
    },
    /// Raise the anti-rollback floor (no event; used by a no-op apply).
    RaiseFloor {
        /// New floor.
        sequence: u64,
    },
    /// Remove a slot directory (and its partial download), if present (no event).
    RemoveSlot {
        /// Slot name.
        slot: String,
    },
    /// Remove every slot directory except these (no event).
    PruneSlots {
        /// Slots kept.
        keep: Vec<String>,
    },
    /// The apply is over (no event): answer the caller, log it.
    Report(ApplyReport),
}

/// The machine's static inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// An install step is configured.
    pub has_install: bool,
    /// Paths are backed up or a `pre_apply` hook is set: the `backup` phase runs.
    pub backup: bool,
}

/// An event that makes no sense in the journal's state (a runtime bug, never peer
/// input: peer input only reaches the machine as a verified [`Target`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("apply state machine: event {event} is not valid in phase {phase}")]
pub struct MachineError {
    /// The event.
    pub event: String,
    /// The phase (`idle` when no apply is in flight).
    pub phase: &'static str,
}

fn report(
    j: &Journal,
    target: &Target,
    outcome: Outcome,
    failed_phase: Option<Phase>,
    detail: impl Into<String>,
    now: u64,
) -> ApplyReport {
    ApplyReport {
        success: outcome.is_success(),
        outcome,
        kind: target.kind,
        sequence: target.sequence,
        version: target.version.clone(),
        code_hash: target.code_hash.clone(),
        running: j.current.clone(),
        failed_phase,
        detail: detail.into(),
        at: now,
    }
}

fn push_applied(j: &mut Journal, target: &Target) {
    let code_hash = j
        .current
        .as_ref()
        .map(|c| c.code_hash.clone())
        .unwrap_or_default();
    j.applied
        .retain(|a| a.manifest_sha256 != target.manifest_sha256);
    j.applied.push(AppliedManifest {
        sequence: target.sequence,
        manifest_sha256: target.manifest_sha256.clone(),
        code_hash,
    });
    if j.applied.len() > MAX_APPLIED {
        let extra = j.applied.len() - MAX_APPLIED;
        j.applied.drain(..extra);
    }
}

/// The answer to a verified manifest whose sequence is at or below the floor: an
/// [`Outcome::AlreadyApplied`] report when this exact manifest (same SHA-256) was
/// committed or no-op'd here and the code hash it left running still runs; `None` when
/// it is a replay to refuse (never applied here, forgotten, or superseded — e.g. a
/// release revoked since). Changes nothing: the journal is not written.
#[must_use]
pub fn already_applied(journal: &Journal, target: &Target, now: u64) -> Option<ApplyReport> {
    if journal.apply.is_some() {
        return None;
    }
    let running = journal
        .current
        .as_ref()
        .map_or("", |c| c.code_hash.as_str());
    let seen = journal
        .applied
        .iter()
        .find(|a| a.manifest_sha256 == target.manifest_sha256 && a.sequence == target.sequence)?;
    if seen.code_hash != running {
        return None;
    }
    let detail = match &journal.current {
        Some(cur) => format!(
            "manifest sequence {} was already applied on this node; it runs {} (code hash {}); nothing was done",
            target.sequence, cur.version, cur.code_hash
        ),
        None => format!(
            "manifest sequence {} was already applied on this node; nothing runs; nothing was done",
            target.sequence
        ),
    };
    Some(report(
        journal,
        target,
        Outcome::AlreadyApplied,
        None,
        detail,
        now,
    ))
}

fn push_bad(j: &mut Journal, target: &Target, reason: &str) {
    if !j.is_bad(target.sequence, &target.code_hash) {
        j.bad.push(BadRelease {
            sequence: target.sequence,
            code_hash: target.code_hash.clone(),
            reason: reason.chars().take(500).collect(),
        });
    }
    if j.bad.len() > MAX_BAD {
        let extra = j.bad.len() - MAX_BAD;
        j.bad.drain(..extra);
    }
}

fn event_name(ev: &Event) -> &'static str {
    match ev {
        Event::Verified { .. } => "verified",
        Event::Fetched => "fetched",
        Event::FetchFailed { .. } => "fetch_failed",
        Event::InstallDone => "install_done",
        Event::InstallFailed { .. } => "install_failed",
        Event::Stopped => "stopped",
        Event::BackedUp { .. } => "backed_up",
        Event::BackupFailed { .. } => "backup_failed",
        Event::Started => "started",
        Event::StartFailed { .. } => "start_failed",
        Event::Healthy => "healthy",
        Event::Unhealthy { .. } => "unhealthy",
        Event::Committed => "committed",
        Event::CommitFailed { .. } => "commit_failed",
        Event::RolledBack { .. } => "rolled_back",
        Event::Recover => "recover",
    }
}

/// Ends an apply that did not touch the running app: back to idle, report.
fn end_untouched(
    mut j: Journal,
    a: &InFlight,
    outcome: Outcome,
    reason: &str,
    bad: bool,
    now: u64,
) -> (Journal, Vec<Command>) {
    j.apply = None;
    if bad {
        push_bad(&mut j, &a.target, reason);
    }
    let r = report(&j, &a.target, outcome, Some(a.phase), reason, now);
    j.last_report = Some(r.clone());
    let mut cmds = Vec::new();
    if !a.reused_slot {
        cmds.push(Command::RemoveSlot {
            slot: a.slot.clone(),
        });
    }
    cmds.push(Command::Report(r));
    (j, cmds)
}

fn enter_rollback(mut j: Journal, mut a: InFlight, reason: String) -> (Journal, Vec<Command>) {
    a.failure = Some(format!("{}: {reason}", a.phase.as_str()));
    a.phase = Phase::RollBack;
    let previous = j.current.clone();
    let restore = a.backup.clone();
    j.apply = Some(a);
    (j, vec![Command::RestorePrevious { previous, restore }])
}

/// One transition. `now` is unix seconds (used in reports only).
///
/// # Errors
/// [`MachineError`] when the event does not fit the phase.
pub fn step(
    policy: &Policy,
    journal: &Journal,
    event: Event,
    now: u64,
) -> Result<(Journal, Vec<Command>), MachineError> {
    let mut j = journal.clone();
    let phase_name = j.apply.as_ref().map_or("idle", |a| a.phase.as_str());
    let wrong = |ev: &Event| MachineError {
        event: event_name(ev).to_owned(),
        phase: phase_name,
    };
    let Some(a) = j.apply.clone() else {
        return match event {
            Event::Recover => {
                let cmds = match &j.current {
                    Some(cur) => vec![
                        Command::KillApp,
                        Command::PruneSlots {
                            keep: kept_slots(&j),
                        },
                        Command::RunApp { app: cur.clone() },
                    ],
                    None => vec![Command::KillApp],
                };
                Ok((j, cmds))
            }
            Event::Verified {
                target,
                previous_slot_present,
            } => {
                if j.is_bad(target.sequence, &target.code_hash) {
                    let r = report(
                        &j,
                        &target,
                        Outcome::Refused,
                        None,
                        format!(
                            "release sequence {} (code hash {}) already failed on this node; it is not retried",
                            target.sequence, target.code_hash
                        ),
                        now,
                    );
                    j.last_report = Some(r.clone());
                    return Ok((j, vec![Command::Report(r)]));
                }
                if let Some(revoked) = &target.revokes
                    && !j.current.as_ref().is_some_and(|c| revoked.matches(c))
                {
                    let runs = j.current.as_ref().map_or_else(
                        || "nothing".to_owned(),
                        |c| format!("{} (sequence {})", c.version, c.sequence),
                    );
                    let detail = format!(
                        "this node does not run the revoked release {} (sequence {}); it runs {runs}; nothing switched, floor raised to {}",
                        revoked.version, revoked.sequence, target.sequence
                    );
                    let r = report(&j, &target, Outcome::Noop, None, detail, now);
                    j.last_report = Some(r.clone());
                    push_applied(&mut j, &target);
                    return Ok((
                        j,
                        vec![
                            Command::RaiseFloor {
                                sequence: target.sequence,
                            },
                            Command::Report(r),
                        ],
                    ));
                }
                if let Some(cur) = &mut j.current
                    && cur.code_hash == target.code_hash
                {
                    cur.sequence = cur.sequence.max(target.sequence);
                    let detail = format!(
                        "already running code hash {} (version {}); nothing restarted",
                        target.code_hash, cur.version
                    );
                    let r = report(&j, &target, Outcome::Noop, None, detail, now);
                    j.last_report = Some(r.clone());
                    push_applied(&mut j, &target);
                    return Ok((
                        j,
                        vec![
                            Command::RaiseFloor {
                                sequence: target.sequence,
                            },
                            Command::Report(r),
                        ],
                    ));
                }
                let reuse = previous_slot_present
                    && j.previous
                        .as_ref()
                        .is_some_and(|p| p.code_hash == target.code_hash);
                let (slot, phase, cmds) = if reuse {
                    let prev = j
                        .previous
                        .as_ref()
                        .map(|p| p.slot.clone())
                        .unwrap_or_default();
                    (prev, Phase::StopOld, vec![Command::StopApp])
                } else {
                    let slot = target.slot_name();
                    let cmd = Command::FetchSlot {
                        artifacts: target.artifacts.clone(),
                        slot: slot.clone(),
                        git_sha: target.git_sha.clone(),
                        code_hash: target.code_hash.clone(),
                        hash_scheme: target.hash_scheme,
                    };
                    (slot, Phase::Fetch, vec![cmd])
                };
                j.apply = Some(InFlight {
                    target,
                    slot,
                    reused_slot: reuse,
                    phase,
                    failure: None,
                    started_at: now,
                    backup: None,
                });
                Ok((j, cmds))
            }
            other => Err(wrong(&other)),
        };
    };

    let set_phase = |j: &mut Journal, p: Phase| {
        if let Some(x) = &mut j.apply {
            x.phase = p;
        }
    };
    let new_app = Installed {
        version: a.target.version.clone(),
        code_hash: a.target.code_hash.clone(),
        git_sha: a.target.git_sha.clone(),
        sequence: a.target.sequence,
        slot: a.slot.clone(),
        hash_scheme: a.target.hash_scheme,
    };
    match (a.phase, event) {
        (Phase::Fetch, Event::Fetched) => {
            if policy.has_install {
                set_phase(&mut j, Phase::Install);
                Ok((
                    j,
                    vec![Command::RunInstall {
                        slot: a.slot.clone(),
                    }],
                ))
            } else {
                set_phase(&mut j, Phase::StopOld);
                Ok((j, vec![Command::StopApp]))
            }
        }
        (Phase::Fetch, Event::FetchFailed { reason, permanent }) => Ok(end_untouched(
            j,
            &a,
            Outcome::Failed,
            &reason,
            permanent,
            now,
        )),
        (Phase::Install, Event::InstallDone) => {
            set_phase(&mut j, Phase::StopOld);
            Ok((j, vec![Command::StopApp]))
        }
        (Phase::Install, Event::InstallFailed { reason }) => {
            Ok(end_untouched(j, &a, Outcome::Failed, &reason, true, now))
        }
        (Phase::StopOld, Event::Stopped) if policy.backup => {
            set_phase(&mut j, Phase::Backup);
            Ok((
                j,
                vec![Command::Backup {
                    slot: a.slot.clone(),
                    id: a.backup_id(),
                }],
            ))
        }
        (Phase::StopOld, Event::Stopped) => {
            set_phase(&mut j, Phase::StartNew);
            Ok((j, vec![Command::StartApp { app: new_app }]))
        }
        (Phase::Backup, Event::BackedUp { id }) => {
            // A revocation of the release this node runs returns the data to where it
            // was before that release was applied too — once this apply's own backup (of
            // the data as the revoked release left it) is complete, and in `start_new`,
            // whose undo puts that backup back: a crash never leaves the revoked
            // release on the older data.
            let restore = match (&a.target.revokes, &j.current, &id) {
                (Some(revoked), Some(cur), Some(_)) if revoked.matches(cur) => {
                    Some(Command::RestoreRevoked {
                        id: format!("{}-{}", cur.sequence, cur.slot),
                        slot: a.slot.clone(),
                    })
                }
                _ => None,
            };
            if let Some(x) = &mut j.apply {
                x.phase = Phase::StartNew;
                x.backup = id;
            }
            let mut cmds: Vec<Command> = restore.into_iter().collect();
            cmds.push(Command::StartApp { app: new_app });
            Ok((j, cmds))
        }
        (Phase::Backup, Event::BackupFailed { reason }) => Ok(enter_rollback(j, a, reason)),
        (Phase::StartNew, Event::Started) => {
            set_phase(&mut j, Phase::Probe);
            Ok((j, vec![Command::WaitHealthy]))
        }
        (Phase::StartNew, Event::StartFailed { reason })
        | (Phase::Probe, Event::Unhealthy { reason })
        | (Phase::Commit, Event::CommitFailed { reason }) => Ok(enter_rollback(j, a, reason)),
        (Phase::Probe, Event::Healthy) => {
            set_phase(&mut j, Phase::Commit);
            Ok((
                j,
                vec![Command::Commit {
                    slot: a.slot.clone(),
                    sequence: a.target.sequence,
                }],
            ))
        }
        (Phase::Commit, Event::Committed) => {
            j.apply = None;
            if j.current.as_ref().map(|c| &c.slot) != Some(&new_app.slot) {
                j.previous = j.current.take();
            }
            j.current = Some(new_app);
            push_applied(&mut j, &a.target);
            let r = report(
                &j,
                &a.target,
                Outcome::Applied,
                None,
                format!(
                    "{} {} is running from slot {} and committed",
                    a.target.kind_str(),
                    a.target.version,
                    a.slot
                ),
                now,
            );
            j.last_report = Some(r.clone());
            let keep = kept_slots(&j);
            let mut cmds = vec![Command::PruneSlots { keep }];
            if policy.backup {
                cmds.push(Command::PruneBackups);
            }
            cmds.push(Command::Report(r));
            Ok((j, cmds))
        }
        (Phase::RollBack, Event::RolledBack { problem }) => {
            let reason = a.failure.clone().unwrap_or_else(|| "unknown".to_owned());
            j.apply = None;
            // A failed backup is the node's failure, not the release's: it may be retried.
            if failed_phase(&reason) != Phase::Backup {
                push_bad(&mut j, &a.target, &reason);
            }
            let detail = match &problem {
                None => format!("{reason}; the previous version was restarted"),
                Some(p) => format!("{reason}; restarting the previous version: {p}"),
            };
            let r = report(
                &j,
                &a.target,
                Outcome::RolledBack,
                Some(failed_phase(&reason)),
                detail,
                now,
            );
            j.last_report = Some(r.clone());
            let mut cmds = Vec::new();
            if !a.reused_slot {
                cmds.push(Command::RemoveSlot { slot: a.slot });
            }
            if policy.backup {
                cmds.push(Command::PruneBackups);
            }
            cmds.push(Command::Report(r));
            Ok((j, cmds))
        }
        (phase, Event::Recover) => match phase {
            Phase::Fetch
            | Phase::Install
            | Phase::StopOld
            | Phase::Backup
            | Phase::StartNew
            | Phase::Probe => {
                let reason = format!(
                    "the agent stopped during phase {}; the apply was undone",
                    phase.as_str()
                );
                let (mut j, mut cmds) =
                    end_untouched(j, &a, Outcome::Interrupted, &reason, false, now);
                let mut pre = vec![Command::KillApp];
                if let Some(id) = &a.backup {
                    pre.push(Command::RestoreData { id: id.clone() });
                }
                if let Some(cur) = &j.current {
                    pre.push(Command::RunApp { app: cur.clone() });
                }
                if policy.backup {
                    pre.push(Command::PruneBackups);
                }
                pre.append(&mut cmds);
                if let Some(r) = &mut j.last_report {
                    r.failed_phase = Some(phase);
                }
                Ok((j, pre))
            }
            Phase::Commit => Ok((
                j,
                vec![
                    Command::KillApp,
                    Command::RunApp { app: new_app },
                    Command::Commit {
                        slot: a.slot.clone(),
                        sequence: a.target.sequence,
                    },
                ],
            )),
            Phase::RollBack => {
                let previous = j.current.clone();
                let restore = a.backup.clone();
                Ok((j, vec![Command::RestorePrevious { previous, restore }]))
            }
        },
        (_, other) => Err(wrong(&other)),
    }
}

fn failed_phase(reason: &str) -> Phase {
    for p in [Phase::Backup, Phase::StartNew, Phase::Probe, Phase::Commit] {
        if reason.starts_with(p.as_str()) {
            return p;
        }
    }
    Phase::Probe
}

fn kept_slots(j: &Journal) -> Vec<String> {
    j.current
        .iter()
        .chain(j.previous.iter())
        .map(|i| i.slot.clone())
        .collect()
}

impl Target {
    fn kind_str(&self) -> &'static str {
        match self.kind {
            Kind::Release => "release",
            Kind::Rollback => "rollback to",
            Kind::Agent => "agent update to",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        has_install: true,
        backup: false,
    };

    fn target(seq: u64, hash: &str) -> Target {
        Target {
            kind: Kind::Release,
            sequence: seq,
            version: format!("v1.0.{seq}"),
            code_hash: hash.to_owned(),
            git_sha: format!("{hash}{hash}"),
            manifest_sha256: format!("sha-{seq}-{hash}"),
            hash_scheme: HashScheme::Git,
            revokes: None,
            artifacts: Vec::new(),
        }
    }

    /// A rollback order `seq` revoking `revoked_seq` (with its code hash, if given) and
    /// returning to `hash`.
    fn order(seq: u64, revoked_seq: u64, revoked_hash: Option<&str>, hash: &str) -> Target {
        Target {
            kind: Kind::Rollback,
            revokes: Some(Revoked {
                sequence: revoked_seq,
                version: format!("v1.0.{revoked_seq}"),
                code_hash: revoked_hash.map(str::to_owned),
            }),
            ..target(seq, hash)
        }
    }

    fn verified_target(t: Target) -> Event {
        Event::Verified {
            target: t,
            previous_slot_present: true,
        }
    }

    /// Drives a fresh apply of `ev` through every step to `Committed`.
    fn commit_all(j: &Journal, ev: Event) -> Journal {
        let mut j = on(j, ev).0;
        for ev in [
            Event::Fetched,
            Event::InstallDone,
            Event::Stopped,
            Event::Started,
            Event::Healthy,
            Event::Committed,
        ] {
            if j.apply.is_none() {
                break;
            }
            if j.apply.as_ref().is_some_and(|a| a.reused_slot)
                && matches!(ev, Event::Fetched | Event::InstallDone)
            {
                continue;
            }
            j = on(&j, ev).0;
        }
        assert!(j.apply.is_none(), "{j:?}");
        j
    }

    fn installed(seq: u64, hash: &str) -> Installed {
        let t = target(seq, hash);
        Installed {
            version: t.version.clone(),
            code_hash: t.code_hash.clone(),
            git_sha: t.git_sha.clone(),
            sequence: seq,
            slot: t.slot_name(),
            hash_scheme: HashScheme::Git,
        }
    }

    fn on(j: &Journal, ev: Event) -> (Journal, Vec<Command>) {
        step(&POLICY, j, ev, 100).unwrap()
    }

    fn base() -> Journal {
        Journal {
            current: Some(installed(1, "aaaa")),
            ..Journal::default()
        }
    }

    fn verified(seq: u64, hash: &str) -> Event {
        Event::Verified {
            target: target(seq, hash),
            previous_slot_present: true,
        }
    }

    const BACKUP: Policy = Policy {
        has_install: true,
        backup: true,
    };

    fn on_b(j: &Journal, ev: Event) -> (Journal, Vec<Command>) {
        step(&BACKUP, j, ev, 100).unwrap()
    }

    /// `base()` with release 2 applied up to the new app's start (phase `start_new`),
    /// backup `2-2-bbbbbbbb` taken.
    fn backed_up() -> Journal {
        let mut j = on_b(&base(), verified(2, "bbbb")).0;
        j = on_b(&j, Event::Fetched).0;
        j = on_b(&j, Event::InstallDone).0;
        let (j2, c) = on_b(&j, Event::Stopped);
        assert_eq!(
            c,
            vec![Command::Backup {
                slot: "2-bbbbbbbb".into(),
                id: "2-2-bbbbbbbb".into()
            }],
            "the backup is taken after the old app stopped, before the new one starts"
        );
        assert_eq!(j2.apply.as_ref().unwrap().phase, Phase::Backup);
        assert_eq!(j2.apply.as_ref().unwrap().backup, None, "not complete yet");
        let (j3, c) = on_b(
            &j2,
            Event::BackedUp {
                id: Some("2-2-bbbbbbbb".into()),
            },
        );
        assert!(matches!(&c[..], [Command::StartApp { app }] if app.slot == "2-bbbbbbbb"));
        assert_eq!(
            j3.apply.as_ref().unwrap().backup.as_deref(),
            Some("2-2-bbbbbbbb"),
            "journaled before the new version starts"
        );
        j3
    }

    fn backed_up_and_started() -> Journal {
        on_b(&backed_up(), Event::Started).0
    }

    #[test]
    fn an_unhealthy_release_restores_the_backup_before_the_old_version_starts() {
        let j = backed_up_and_started();
        let (j, c) = on_b(
            &j,
            Event::Unhealthy {
                reason: "503".into(),
            },
        );
        assert_eq!(
            c,
            vec![Command::RestorePrevious {
                previous: Some(installed(1, "aaaa")),
                restore: Some("2-2-bbbbbbbb".into()),
            }]
        );
        // Killed during the restore: recovery restores again (idempotent).
        let (_, c) = on_b(&j, Event::Recover);
        assert_eq!(
            c,
            vec![Command::RestorePrevious {
                previous: Some(installed(1, "aaaa")),
                restore: Some("2-2-bbbbbbbb".into()),
            }]
        );
        let (j, c) = on_b(&j, Event::RolledBack { problem: None });
        assert!(j.is_bad(2, "bbbb"));
        assert_eq!(c[1], Command::PruneBackups);
        assert!(matches!(&c[2], Command::Report(r) if r.outcome == Outcome::RolledBack));
    }

    #[test]
    fn a_crash_while_the_new_version_ran_restores_the_backup_on_restart() {
        let j = backed_up();
        for j in [j.clone(), on_b(&j, Event::Started).0] {
            let (r, c) = on_b(&j, Event::Recover);
            assert!(r.apply.is_none());
            assert_eq!(
                c[..3],
                [
                    Command::KillApp,
                    Command::RestoreData {
                        id: "2-2-bbbbbbbb".into()
                    },
                    Command::RunApp {
                        app: installed(1, "aaaa")
                    },
                ],
                "stop the new version, restore, then start the old one"
            );
        }
        // Before the backup completed the new version never ran: nothing to restore.
        let mut j = on_b(&base(), verified(2, "bbbb")).0;
        j = on_b(&j, Event::Fetched).0;
        j = on_b(&j, Event::InstallDone).0;
        j = on_b(&j, Event::Stopped).0;
        let (_, c) = on_b(&j, Event::Recover);
        assert!(
            !c.iter().any(|c| matches!(c, Command::RestoreData { .. })),
            "{c:?}"
        );
        assert!(
            c.contains(&Command::PruneBackups),
            "the partial backup goes"
        );
        // Healthy and committing: the new version stays, its data with it.
        let j = on_b(&backed_up_and_started(), Event::Healthy).0;
        let (_, c) = on_b(&j, Event::Recover);
        assert!(
            !c.iter().any(|c| matches!(
                c,
                Command::RestoreData { .. } | Command::RestorePrevious { .. }
            )),
            "{c:?}"
        );
    }

    #[test]
    fn a_failed_backup_restarts_the_old_version_and_the_release_may_be_retried() {
        let mut j = on_b(&base(), verified(2, "bbbb")).0;
        j = on_b(&j, Event::Fetched).0;
        j = on_b(&j, Event::InstallDone).0;
        j = on_b(&j, Event::Stopped).0;
        let (j, c) = on_b(
            &j,
            Event::BackupFailed {
                reason: "No space left on device".into(),
            },
        );
        assert_eq!(
            c,
            vec![Command::RestorePrevious {
                previous: Some(installed(1, "aaaa")),
                restore: None,
            }]
        );
        let (j, c) = on_b(&j, Event::RolledBack { problem: None });
        let Some(Command::Report(r)) = c.last() else {
            panic!("{c:?}")
        };
        assert_eq!(r.failed_phase, Some(Phase::Backup));
        assert!(!r.success);
        assert!(!j.is_bad(2, "bbbb"), "the node failed, not the release");
        let (_, c) = on_b(&j, verified(2, "bbbb"));
        assert!(matches!(&c[..], [Command::FetchSlot { .. }]), "{c:?}");
    }

    #[test]
    fn a_commit_prunes_old_backups_and_without_backups_nothing_changes() {
        let mut j = backed_up_and_started();
        j = on_b(&j, Event::Healthy).0;
        let (_, c) = on_b(&j, Event::Committed);
        assert_eq!(c[1], Command::PruneBackups);
        // The policy without backups: straight from stop to start, as before.
        let mut j = on(&base(), verified(2, "bbbb")).0;
        j = on(&j, Event::Fetched).0;
        j = on(&j, Event::InstallDone).0;
        let (_, c) = on(&j, Event::Stopped);
        assert!(matches!(&c[..], [Command::StartApp { .. }]), "{c:?}");
    }

    #[test]
    fn happy_path_emits_each_step_in_order() {
        let (j, c) = on(&base(), verified(2, "bbbb"));
        assert_eq!(
            c,
            vec![Command::FetchSlot {
                artifacts: Vec::new(),
                slot: "2-bbbbbbbb".into(),
                git_sha: "bbbbbbbb".into(),
                code_hash: "bbbb".into(),
                hash_scheme: HashScheme::Git,
            }]
        );
        let (j, c) = on(&j, Event::Fetched);
        assert_eq!(
            c,
            vec![Command::RunInstall {
                slot: "2-bbbbbbbb".into()
            }]
        );
        let (j, c) = on(&j, Event::InstallDone);
        assert_eq!(c, vec![Command::StopApp]);
        let (j, c) = on(&j, Event::Stopped);
        assert_eq!(
            c,
            vec![Command::StartApp {
                app: installed(2, "bbbb")
            }]
        );
        let (j, c) = on(&j, Event::Started);
        assert_eq!(c, vec![Command::WaitHealthy]);
        assert_eq!(j.current, Some(installed(1, "aaaa")), "not committed yet");
        let (j, c) = on(&j, Event::Healthy);
        assert_eq!(
            c,
            vec![Command::Commit {
                slot: "2-bbbbbbbb".into(),
                sequence: 2
            }]
        );
        let (j, c) = on(&j, Event::Committed);
        assert_eq!(j.current, Some(installed(2, "bbbb")));
        assert_eq!(j.previous, Some(installed(1, "aaaa")));
        assert!(j.apply.is_none());
        assert_eq!(
            c[0],
            Command::PruneSlots {
                keep: vec!["2-bbbbbbbb".into(), "1-aaaaaaaa".into()]
            }
        );
        let Command::Report(r) = &c[1] else {
            panic!("{c:?}")
        };
        assert_eq!(r.outcome, Outcome::Applied);
        assert!(r.success);
    }

    #[test]
    fn unhealthy_rolls_back_and_never_retries() {
        let mut j = on(&base(), verified(2, "bbbb")).0;
        for ev in [
            Event::Fetched,
            Event::InstallDone,
            Event::Stopped,
            Event::Started,
        ] {
            j = on(&j, ev).0;
        }
        let (j, c) = on(
            &j,
            Event::Unhealthy {
                reason: "no 2xx within 5s".into(),
            },
        );
        assert_eq!(
            c,
            vec![Command::RestorePrevious {
                previous: Some(installed(1, "aaaa")),
                restore: None,
            }]
        );
        let (j, c) = on(&j, Event::RolledBack { problem: None });
        assert_eq!(
            c[0],
            Command::RemoveSlot {
                slot: "2-bbbbbbbb".into()
            }
        );
        let Command::Report(r) = &c[1] else { panic!() };
        assert_eq!(r.outcome, Outcome::RolledBack);
        assert_eq!(r.failed_phase, Some(Phase::Probe));
        assert_eq!(r.running, Some(installed(1, "aaaa")));
        assert_eq!(j.current, Some(installed(1, "aaaa")));
        // The same release again: refused without any command but the report.
        let (_, c) = on(&j, verified(2, "bbbb"));
        assert!(matches!(&c[..], [Command::Report(r)] if r.outcome == Outcome::Refused));
    }

    #[test]
    fn already_on_hash_is_a_noop_that_raises_the_floor() {
        let (j, c) = on(&base(), verified(5, "aaaa"));
        assert_eq!(c[0], Command::RaiseFloor { sequence: 5 });
        assert!(matches!(&c[1], Command::Report(r) if r.outcome == Outcome::Noop && r.success));
        assert_eq!(j.current.unwrap().sequence, 5);
        assert!(j.apply.is_none());
    }

    #[test]
    fn failure_before_the_app_is_touched_keeps_it_running() {
        let j = on(&base(), verified(2, "bbbb")).0;
        let (j2, c) = on(
            &j,
            Event::FetchFailed {
                reason: "remote unreachable".into(),
                permanent: false,
            },
        );
        assert!(
            matches!(&c[..], [Command::RemoveSlot { .. }, Command::Report(r)] if r.outcome == Outcome::Failed)
        );
        assert!(j2.bad.is_empty(), "transient failures are retried");
        let j = on(&j, Event::Fetched).0;
        let (j, _) = on(
            &j,
            Event::InstallFailed {
                reason: "exit 2".into(),
            },
        );
        assert!(j.is_bad(2, "bbbb"));
        assert_eq!(j.current, Some(installed(1, "aaaa")));
    }

    #[test]
    fn rollback_manifest_reuses_the_previous_slot() {
        let mut j = base();
        j.previous = Some(installed(1, "0000"));
        let mut t = target(3, "0000");
        t.kind = Kind::Rollback;
        let (j2, c) = on(
            &j,
            Event::Verified {
                target: t.clone(),
                previous_slot_present: true,
            },
        );
        assert_eq!(c, vec![Command::StopApp]);
        assert!(j2.apply.as_ref().unwrap().reused_slot);
        assert_eq!(j2.apply.as_ref().unwrap().slot, "1-00000000");
        let (_, c) = on(
            &j,
            Event::Verified {
                target: t,
                previous_slot_present: false,
            },
        );
        assert!(matches!(c[0], Command::FetchSlot { .. }));
    }

    #[test]
    fn recovery_undoes_before_commit_and_finishes_after() {
        let mut j = on(&base(), verified(2, "bbbb")).0;
        let evs = [
            Event::Fetched,
            Event::InstallDone,
            Event::Stopped,
            Event::Started,
            Event::Healthy,
        ];
        for ev in evs {
            let phase = j.apply.as_ref().unwrap().phase;
            let (r, c) = on(&j, Event::Recover);
            assert!(r.apply.is_none(), "{phase:?}");
            assert_eq!(r.current, Some(installed(1, "aaaa")), "{phase:?}");
            assert_eq!(c[0], Command::KillApp);
            assert_eq!(
                c[1],
                Command::RunApp {
                    app: installed(1, "aaaa")
                }
            );
            assert!(
                matches!(c.last(), Some(Command::Report(r)) if r.outcome == Outcome::Interrupted)
            );
            j = on(&j, ev).0;
        }
        assert_eq!(j.apply.as_ref().unwrap().phase, Phase::Commit);
        let (r, c) = on(&j, Event::Recover);
        assert_eq!(
            c,
            vec![
                Command::KillApp,
                Command::RunApp {
                    app: installed(2, "bbbb")
                },
                Command::Commit {
                    slot: "2-bbbbbbbb".into(),
                    sequence: 2
                }
            ]
        );
        let (r, _) = on(&r, Event::Committed);
        assert_eq!(r.current, Some(installed(2, "bbbb")));
    }

    #[test]
    fn a_repeat_of_a_committed_manifest_is_already_applied_and_changes_nothing() {
        let j = commit_all(&base(), verified(2, "bbbb"));
        assert_eq!(j.current, Some(installed(2, "bbbb")));
        assert_eq!(
            j.applied,
            vec![AppliedManifest {
                sequence: 2,
                manifest_sha256: "sha-2-bbbb".into(),
                code_hash: "bbbb".into()
            }]
        );
        let r = already_applied(&j, &target(2, "bbbb"), 7).expect("already applied");
        assert_eq!(r.outcome, Outcome::AlreadyApplied);
        assert!(r.success);
        assert_eq!(r.running, Some(installed(2, "bbbb")));
        assert_eq!((r.sequence, r.failed_phase, r.at), (2, None, 7));
        // Same sequence, other bytes: a different manifest, a replay.
        let mut other = target(2, "bbbb");
        other.manifest_sha256 = "sha-forged-but-signed".into();
        assert_eq!(already_applied(&j, &other, 7), None);
        // Never applied here (the node started on seq 1 out of band): a replay.
        assert_eq!(already_applied(&j, &target(1, "aaaa"), 7), None);
        // A no-op counts as applied too.
        let (j, _) = on(&j, verified(3, "bbbb"));
        assert!(already_applied(&j, &target(3, "bbbb"), 7).is_some());
        assert!(already_applied(&j, &target(2, "bbbb"), 7).is_some());
    }

    #[test]
    fn a_superseded_or_revoked_release_is_not_already_applied() {
        let mut j = commit_all(&base(), verified(2, "bbbb"));
        j = commit_all(&j, verified_target(order(3, 2, None, "aaaa")));
        assert_eq!(j.current.as_ref().unwrap().code_hash, "aaaa");
        assert_eq!(
            already_applied(&j, &target(2, "bbbb"), 7),
            None,
            "the revoked release no longer runs: it is a replay"
        );
        let r = already_applied(&j, &order(3, 2, None, "aaaa"), 7).expect("the order");
        assert_eq!(r.outcome, Outcome::AlreadyApplied);
        assert_eq!(r.running.unwrap().code_hash, "aaaa");
    }

    #[test]
    fn an_apply_in_flight_is_never_already_applied() {
        let j = commit_all(&base(), verified(2, "bbbb"));
        let (j, _) = on(&j, verified(3, "cccc"));
        assert_eq!(already_applied(&j, &target(2, "bbbb"), 7), None);
    }

    #[test]
    fn the_applied_list_is_bounded() {
        let mut j = base();
        for seq in 2..(2 + MAX_APPLIED as u64 + 5) {
            j = on(&j, verified(seq, "aaaa")).0;
        }
        assert_eq!(j.applied.len(), MAX_APPLIED);
        assert_eq!(j.applied[0].sequence, 2 + 5, "oldest forgotten first");
        assert_eq!(already_applied(&j, &target(2, "aaaa"), 7), None);
    }

    #[test]
    fn a_rollback_order_for_a_release_this_node_does_not_run_only_raises_the_floor() {
        // On v1 (seq 1); the order revokes seq 2 and returns to v1 or to another version.
        for return_to in ["aaaa", "0000"] {
            let (j, c) = on(&base(), verified_target(order(3, 2, None, return_to)));
            assert_eq!(c[0], Command::RaiseFloor { sequence: 3 });
            let Command::Report(r) = &c[1] else {
                panic!("{c:?}")
            };
            assert_eq!((r.outcome, r.success), (Outcome::Noop, true));
            assert!(
                r.detail
                    .contains("does not run the revoked release v1.0.2 (sequence 2)"),
                "{}",
                r.detail
            );
            assert_eq!(c.len(), 2, "nothing fetched, stopped or started: {c:?}");
            assert_eq!(j.current, Some(installed(1, "aaaa")), "not switched");
            assert!(already_applied(&j, &order(3, 2, None, return_to), 7).is_some());
        }
        // An empty node does not run it either.
        let (j, c) = on(
            &Journal::default(),
            verified_target(order(3, 2, None, "aaaa")),
        );
        assert_eq!(c[0], Command::RaiseFloor { sequence: 3 });
        assert_eq!(j.current, None);
        // Nor does a node whose revoked apply failed (it is remembered as bad).
        let mut j = on(&base(), verified(2, "bbbb")).0;
        j = on(
            &j,
            Event::FetchFailed {
                reason: "code hash mismatch".into(),
                permanent: true,
            },
        )
        .0;
        let (_, c) = on(&j, verified_target(order(3, 2, None, "aaaa")));
        assert!(
            matches!(&c[..], [Command::RaiseFloor { sequence: 3 }, Command::Report(r)] if r.outcome == Outcome::Noop),
            "{c:?}"
        );
    }

    /// With backups, an order revoking the release this node runs puts back the backup
    /// that release's apply took, after its own backup and before the older version
    /// starts; a crash from then on restores the order's own backup (the data as the
    /// revoked release left it) and restarts the revoked release — never the revoked
    /// release on the older data. A release the node merely moved on from is not
    /// restored by a plain forward apply.
    #[test]
    fn a_rollback_order_with_backups_puts_the_revoked_releases_pre_apply_data_back() {
        let mut j = base();
        j.previous = Some(installed(1, "0000"));
        j.current = Some(installed(2, "bbbb"));
        let (j, c) = on_b(&j, verified_target(order(3, 2, None, "0000")));
        assert_eq!(c, vec![Command::StopApp]);
        let (j, c) = on_b(&j, Event::Stopped);
        let old_slot = installed(1, "0000").slot;
        assert_eq!(
            c,
            vec![Command::Backup {
                slot: old_slot.clone(),
                id: format!("3-{old_slot}"),
            }]
        );
        let (j, c) = on_b(
            &j,
            Event::BackedUp {
                id: Some(format!("3-{old_slot}")),
            },
        );
        let revoked_slot = installed(2, "bbbb").slot;
        assert_eq!(
            c,
            vec![
                Command::RestoreRevoked {
                    id: format!("2-{revoked_slot}"),
                    slot: old_slot.clone(),
                },
                Command::StartApp {
                    app: Installed {
                        version: "v1.0.3".into(),
                        sequence: 3,
                        ..installed(1, "0000")
                    }
                },
            ]
        );
        assert_eq!(j.apply.as_ref().unwrap().phase, Phase::StartNew);
        // Killed here: the order's own backup goes back, the revoked release restarts.
        let (_, c) = on_b(&j, Event::Recover);
        assert_eq!(c[0], Command::KillApp);
        assert_eq!(
            c[1],
            Command::RestoreData {
                id: format!("3-{old_slot}")
            }
        );
        assert!(
            matches!(&c[2], Command::RunApp { app } if app.code_hash == "bbbb"),
            "{c:?}"
        );

        // A forward release (no revocation) takes a backup and restores nothing.
        let (_, c) = on_b(&backed_up(), Event::Started);
        assert!(
            !c.iter()
                .any(|c| matches!(c, Command::RestoreRevoked { .. })),
            "{c:?}"
        );
        // Without backups (no own backup taken), an order restores nothing either.
        let mut j = base();
        j.previous = Some(installed(1, "0000"));
        j.current = Some(installed(2, "bbbb"));
        let (j, _) = on(&j, verified_target(order(3, 2, None, "0000")));
        let (_, c) = on(&j, Event::Stopped);
        assert!(matches!(&c[..], [Command::StartApp { .. }]), "{c:?}");
    }

    #[test]
    fn a_rollback_order_switches_a_node_that_runs_the_revoked_release() {
        let mut j = base();
        j.previous = Some(installed(1, "0000"));
        // By sequence.
        j.current = Some(installed(2, "bbbb"));
        let (j2, c) = on(&j, verified_target(order(3, 2, None, "0000")));
        assert_eq!(c, vec![Command::StopApp], "reuses the previous slot");
        assert_eq!(j2.apply.unwrap().target.sequence, 3);
        // By code hash: the revoked code runs under a later sequence (a no-op raised it).
        j.current = Some(installed(5, "bbbb"));
        let (_, c) = on(&j, verified_target(order(6, 2, Some("bbbb"), "0000")));
        assert_eq!(c, vec![Command::StopApp]);
        // Without the code hash, the sequence alone does not match: floor only.
        let (_, c) = on(&j, verified_target(order(6, 2, None, "0000")));
        assert_eq!(c[0], Command::RaiseFloor { sequence: 6 });
    }

    #[test]
    fn a_journal_written_before_the_applied_list_still_loads() {
        let old = r#"{
          "schema_version": 1,
          "current": {"version": "v1", "code_hash": "aaaa", "git_sha": "ab", "sequence": 1, "slot": "1-ab"},
          "previous": null,
          "apply": {
            "target": {"kind": "release", "sequence": 2, "version": "v2", "code_hash": "bbbb",
                       "git_sha": "cd", "manifest_sha256": "ff"},
            "slot": "2-cd", "reused_slot": false, "phase": "probe", "failure": null, "started_at": 5
          },
          "bad": [],
          "last_report": null
        }"#;
        let j: Journal = serde_json::from_str(old).expect("old journal loads");
        assert!(j.applied.is_empty());
        assert_eq!(j.apply.as_ref().unwrap().target.revokes, None);
        // Written back and read again, unchanged.
        let again: Journal = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(again, j);
        // An unknown field is still refused.
        let bad = old.replace("\"bad\": []", "\"bad\": [], \"surprise\": 1");
        assert!(serde_json::from_str::<Journal>(&bad).is_err());
    }

    #[test]
    fn events_out_of_phase_are_errors() {
        assert!(step(&POLICY, &base(), Event::Healthy, 0).is_err());
        let j = on(&base(), verified(2, "bbbb")).0;
        assert!(step(&POLICY, &j, Event::Committed, 0).is_err());
        assert!(step(&POLICY, &j, verified(3, "cccc"), 0).is_err());
    }
}
