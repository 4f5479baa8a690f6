//! The orchestrator: start, advance, run, rollback, status — over the durable state.

use crate::fleet::{DeliveryError, ProgressRef};
use crate::gates::{self, GateContext, resolve};
use crate::{RuntimeError, codehash, now};
use fleetgate_core::config::Config;
use fleetgate_core::{
    Command, Effect, EffectAction, Event, PipelineState, Stage, TransitionError, Verdict, Version,
    handle,
};
use fleetgate_store::{OrchestratorLock, StateDir, TransactError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What happened during `advance`/`run`, for progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A gate started.
    GateStarted {
        /// Stage.
        stage: Stage,
        /// Version.
        version: String,
        /// The gate command's log file, for the stages that run one (BUILD, TEST, AUDIT,
        /// BENCHMARK).
        log: Option<PathBuf>,
    },
    /// A gate returned a verdict that was committed.
    GateFinished {
        /// Stage.
        stage: Stage,
        /// Verdict.
        verdict: Verdict,
        /// Stage after the commit.
        now_at: Stage,
    },
    /// A gate result was discarded because the run moved on (rollback).
    Discarded {
        /// Stage the gate was for.
        stage: Stage,
        /// Why.
        reason: String,
    },
    /// An outbox effect was delivered.
    Delivered {
        /// Effect id.
        id: String,
        /// What was done.
        note: String,
    },
    /// An outbox effect could not be delivered (it stays queued).
    DeliveryFailed {
        /// Effect id.
        id: String,
        /// Why.
        error: String,
    },
    /// An outbox effect can never be carried out; it was dropped and the reason recorded
    /// in the run's `failure_detail`.
    Abandoned {
        /// Effect id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The run is paused by an operator: nothing is evaluated or sent until it is resumed.
    Paused {
        /// Stage held.
        stage: Stage,
        /// Who paused it.
        by: String,
        /// Why.
        reason: String,
    },
    /// High availability: another orchestrator holds the pipeline lease; this one is the
    /// standby and waits to take the run over when the lease expires.
    Standby {
        /// Who holds it and until when.
        detail: String,
    },
    /// High availability: this orchestrator took the pipeline lease and resumes the run
    /// from the shared state.
    TookOver {
        /// The lease taken (holder, epoch).
        detail: String,
    },
    /// Waiting before checking a pending gate again.
    Waiting {
        /// Stage.
        stage: Stage,
        /// Seconds.
        secs: u64,
    },
}

/// High availability: the pipeline lease as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseInfo {
    /// The lease row (holder, epoch, expiry and since: the database's clock).
    pub lease: fleetgate_fleet::Lease,
    /// Held by this orchestrator (this host and state directory).
    pub ours: bool,
    /// Seconds until it expires unless renewed (negative: expired).
    pub expires_in_secs: i64,
    /// One line for people.
    pub summary: String,
}

/// The result of one `advance`.
#[derive(Debug, Clone)]
pub struct AdvanceReport {
    /// The gate evaluated.
    pub stage: Stage,
    /// Its verdict.
    pub verdict: Verdict,
    /// False when the verdict was discarded (a rollback or a pause landed meanwhile) or
    /// no gate ran because the run is paused.
    pub committed: bool,
    /// The run is paused (no gate was evaluated, or the pass was cut short by the pause).
    pub paused: bool,
    /// The state after.
    pub state: PipelineState,
}

/// Find and load the config: `--config PATH`, else `$FLEETGATE_CONFIG`, else
/// `./fleetgate.toml`. Returns the config and the directory paths are relative to.
pub fn load_config(path: Option<&Path>) -> Result<(Config, PathBuf), RuntimeError> {
    let path: PathBuf = match path {
        Some(p) => p.to_owned(),
        None => std::env::var_os("FLEETGATE_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("fleetgate.toml")),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| crate::ConfigProblem::Read {
        path: path.clone(),
        source: e,
    })?;
    let cfg = Config::parse(&text, |k| std::env::var(k).ok()).map_err(|e| {
        crate::ConfigProblem::Parse {
            path: path.clone(),
            source: Box::new(e),
        }
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let base = base
        .canonicalize()
        .map_err(|e| RuntimeError::io("resolve config directory", &base, e))?;
    Ok((cfg, base))
}

/// Roll back the run in the state directory `state_dir` (needs no orchestrator lock: it
/// wins over a gate that is running in another process).
pub fn rollback_in(state_dir: &Path, reason: &str) -> Result<PipelineState, RuntimeError> {
    rollback_store(&StateDir::open(state_dir)?, reason)
}

fn rollback_store(store: &StateDir, reason: &str) -> Result<PipelineState, RuntimeError> {
    let state = store
        .transact(|s| {
            handle(
                s,
                Event::Rollback {
                    reason: reason.to_owned(),
                    now: now(),
                },
            )
            .map(|_| s.clone())
        })
        .map_err(flatten)?;
    store.archive_run(&state)?;
    Ok(state)
}

/// An operator's control of the run in `state_dir`: [`Event::Pause`], [`Event::Resume`] or
/// [`Event::Promote`] (build it with the current time). Needs no orchestrator lock: a
/// `run` in another process sees it at its next pass, and a gate pass already running is
/// discarded (the epoch moved). Returns the state after.
pub fn operator_in(state_dir: &Path, event: Event) -> Result<PipelineState, RuntimeError> {
    operator_store(&StateDir::open(state_dir)?, event)
}

fn operator_store(store: &StateDir, event: Event) -> Result<PipelineState, RuntimeError> {
    store
        .transact(|s| handle(s, event.clone()).map(|_| s.clone()))
        .map_err(flatten)
}

/// `fleetgate pause`: hold the run at its current stage.
pub fn pause_in(state_dir: &Path, by: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
    operator_in(
        state_dir,
        Event::Pause {
            by: by.to_owned(),
            reason: reason.to_owned(),
            now: now(),
        },
    )
}

/// `fleetgate resume`: let a paused run go on (the paused time does not count against
/// the stage's window or deadline).
pub fn resume_in(state_dir: &Path, by: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
    operator_in(
        state_dir,
        Event::Resume {
            by: by.to_owned(),
            reason: reason.to_owned(),
            now: now(),
        },
    )
}

/// `fleetgate promote`: end the open CANARY window now and move on to DEPLOY (or, in a
/// phased DEPLOY, end the open step's window and move on to the next step), recorded as
/// passed by the operator.
pub fn promote_in(state_dir: &Path, by: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
    operator_in(
        state_dir,
        Event::Promote {
            by: by.to_owned(),
            reason: reason.to_owned(),
            now: now(),
        },
    )
}

pub(crate) fn flatten(e: TransactError<TransitionError>) -> RuntimeError {
    match e {
        TransactError::Store(s) => RuntimeError::Store(s),
        TransactError::Rejected(t) => RuntimeError::Transition(t),
    }
}

/// An orchestrator bound to one config and state directory.
#[derive(Debug)]
pub struct Orchestrator {
    ctx: GateContext,
    store: StateDir,
    /// High availability: the keeper of the pipeline lease (`[state] store = "postgres"`).
    keeper: Option<std::sync::Arc<crate::ha::LeaseKeeper>>,
    _lock: Option<OrchestratorLock>,
}

impl Orchestrator {
    /// Open without taking the orchestrator lock (for reads, `start`, `rollback`).
    pub fn open_shared(cfg: Config, base: &Path) -> Result<Orchestrator, RuntimeError> {
        let state_dir = resolve(base, &cfg.state_dir);
        let repo = resolve(base, &cfg.repo);
        let store = StateDir::open(&state_dir)?;
        // The signing key file is hidden from every gate command this process runs.
        if let Some(key_file) = &cfg.signing.key_file {
            crate::sandbox::protect_path(&resolve(base, key_file));
        }
        let ctx = GateContext {
            cfg,
            base: base.to_owned(),
            repo,
            state_dir,
            fleet: Default::default(),
        };
        let (store, keeper) = if ctx.cfg.state.store == fleetgate_core::config::StateStore::Postgres
        {
            let shared =
                std::sync::Arc::new(crate::ha::RegistryState::new(ctx.fleet.connect(&ctx)?));
            let keeper = shared.keeper().clone();
            (store.with_shared(shared), Some(keeper))
        } else {
            (store, None)
        };
        Ok(Orchestrator {
            ctx,
            store,
            keeper,
            _lock: None,
        })
    }

    /// Open and take the exclusive orchestrator lock (for `advance`, `run`, `watch`).
    pub fn open(cfg: Config, base: &Path) -> Result<Orchestrator, RuntimeError> {
        let mut o = Orchestrator::open_shared(cfg, base)?;
        o._lock = Some(o.store.lock_orchestrator()?);
        // Under the orchestrator lock nobody else makes pipeline checkouts: every run
        // directory but the current run's, and every temporary clone, is stale. Capture
        // directories (`bench-*`) belong to captures, which clean their own.
        // The current run id is read without `load`, whose handling of a corrupt file
        // (moved aside, reported) belongs to the caller; an unreadable file cleans nothing.
        let current = match std::fs::read(o.store.state_path()) {
            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .map(|v| v.get("run_id").and_then(|r| r.as_str()).map(str::to_owned)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
            Err(_) => None,
        };
        if let Some(current) = current {
            crate::checkout::clean_stale(
                &o.ctx.state_dir.join("work"),
                &|name| !name.starts_with(crate::gates::CAPTURE_PREFIX),
                current.as_deref(),
            );
        }
        Ok(o)
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.ctx.cfg
    }

    /// The gate context.
    pub fn context(&self) -> &GateContext {
        &self.ctx
    }

    /// The state directory.
    pub fn store(&self) -> &StateDir {
        &self.store
    }

    /// The current state.
    pub fn status(&self) -> Result<PipelineState, RuntimeError> {
        Ok(self.store.load()?)
    }

    /// Resolve the commit for a version: `git_sha` if given (any revision), else the tag
    /// named like the version. Fails closed when neither exists.
    pub fn resolve_version(
        &self,
        version: &Version,
        git_sha: Option<&str>,
    ) -> Result<String, RuntimeError> {
        match git_sha {
            Some(rev) => codehash::resolve_commit(&self.ctx.repo, rev),
            None => {
                codehash::resolve_commit(&self.ctx.repo, &format!("refs/tags/{}", version.as_str()))
                    .map_err(|_| {
                        RuntimeError::Git(crate::GitError::NoTag {
                            version: version.to_string(),
                            repo: self.ctx.repo.clone(),
                        })
                    })
            }
        }
    }

    /// The version of the commit `rev` (e.g. `HEAD`): the highest valid version tag that
    /// points at it, else `auto-<unix seconds>` (HART's fallback for an untagged commit).
    /// Returns the version and the commit.
    pub fn version_at(&self, rev: &str) -> Result<(Version, String), RuntimeError> {
        let repo_path = &self.ctx.repo;
        let sha = codehash::resolve_commit(repo_path, rev)?;
        let repo = git2::Repository::open(repo_path)
            .map_err(|e| RuntimeError::git(repo_path, "open the repository", e))?;
        let names = repo
            .tag_names(None)
            .map_err(|e| RuntimeError::git(repo_path, "list tags", e))?;
        let mut best: Option<(semver::Version, Version)> = None;
        for name in names.iter().flatten().flatten() {
            let Ok(v) = Version::parse(name) else {
                continue;
            };
            let Some(sv) = v.semver() else { continue };
            let at = codehash::resolve_commit(repo_path, &format!("refs/tags/{name}"));
            if at.is_ok_and(|c| c == sha) && best.as_ref().is_none_or(|(b, _)| &sv > b) {
                best = Some((sv, v));
            }
        }
        let version = match best {
            Some((_, v)) => v,
            None => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                Version::parse(&format!("auto-{secs}"))?
            }
        };
        Ok((version, sha))
    }

    /// Start a run of `version`.
    pub fn start(
        &self,
        version: &str,
        git_sha: Option<&str>,
    ) -> Result<PipelineState, RuntimeError> {
        self.start_on(version, git_sha, None)
    }

    /// [`Orchestrator::start`] for the nodes of one release channel (`None`: the
    /// default channel, `stable`).
    pub fn start_on(
        &self,
        version: &str,
        git_sha: Option<&str>,
        channel: Option<&str>,
    ) -> Result<PipelineState, RuntimeError> {
        if let Some(c) = channel {
            fleetgate_fleet::validate_channel(c)
                .map_err(|e| RuntimeError::Invalid(crate::InvalidInput::Channel(e)))?;
        }
        let version = Version::parse(version)?;
        let sha = self.resolve_version(&version, git_sha)?;
        let run_id = new_run_id(&version);
        self.store
            .transact(|s| {
                handle(
                    s,
                    Event::Start {
                        version: version.clone(),
                        git_sha: sha.clone(),
                        run_id: run_id.clone(),
                        channel: channel.map(str::to_owned),
                        now: now(),
                    },
                )
                .map(|_| s.clone())
            })
            .map_err(flatten)
    }

    /// Take the release `version` that completed last on another channel to channel `to`
    /// (`fleetgate promote-channel`, the `promote_channel` tool): a new run of the same
    /// commit on `to`, so every gate runs again and the canary and steps judge it on
    /// `to`'s nodes. Returns the started run and the channel the release came from.
    pub fn promote_channel(
        &self,
        version: &str,
        to: &str,
    ) -> Result<(PipelineState, String), RuntimeError> {
        fleetgate_fleet::validate_channel(to)
            .map_err(|e| RuntimeError::Invalid(crate::InvalidInput::Channel(e)))?;
        let state = self.status()?;
        // Each channel's completed release: `stable`'s is `last_completed`.
        let records: Vec<(&str, &fleetgate_core::CompletedRelease)> = state
            .last_completed
            .iter()
            .map(|r| (fleetgate_core::DEFAULT_CHANNEL, r))
            .chain(state.channel_releases.iter().map(|(c, r)| (c.as_str(), r)))
            .collect();
        let Some((from, sha)) = records
            .iter()
            .find(|(c, r)| *c != to && r.version == version)
            .map(|(c, r)| ((*c).to_owned(), r.git_sha.clone()))
        else {
            return Err(RuntimeError::Refused(crate::Refusal::NotOnAChannel {
                version: version.to_owned(),
                to: to.to_owned(),
                completed: records
                    .iter()
                    .map(|(c, r)| format!("{} on `{c}`", r.version))
                    .collect(),
            }));
        };
        let started = self.start_on(version, Some(&sha), Some(to))?;
        Ok((started, from))
    }

    /// Roll back the current run.
    pub fn rollback(&self, reason: &str) -> Result<PipelineState, RuntimeError> {
        rollback_store(&self.store, reason)
    }

    /// Pause the current run (see [`pause_in`]).
    pub fn pause(&self, by: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
        operator_store(
            &self.store,
            Event::Pause {
                by: by.to_owned(),
                reason: reason.to_owned(),
                now: now(),
            },
        )
    }

    /// Resume the paused run (see [`resume_in`]).
    pub fn resume(&self, by: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
        operator_store(
            &self.store,
            Event::Resume {
                by: by.to_owned(),
                reason: reason.to_owned(),
                now: now(),
            },
        )
    }

    /// Promote the open canary window (see [`promote_in`]).
    pub fn promote(&self, by: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
        operator_store(
            &self.store,
            Event::Promote {
                by: by.to_owned(),
                reason: reason.to_owned(),
                now: now(),
            },
        )
    }

    /// High availability: who holds the pipeline lease (`None` without a shared state
    /// store, or before anyone took it).
    pub fn lease(&self) -> Result<Option<LeaseInfo>, RuntimeError> {
        if self.keeper.is_none() {
            return Ok(None);
        }
        let link = self.ctx.fleet.connect(&self.ctx)?;
        let lease = link
            .block_on(link.registry().lease(crate::fleet::LEASE_NAME))
            .map_err(|e| crate::fleet::link::fleet_op("failed to read the pipeline lease", e))?;
        let now = link.db_now();
        Ok(lease.map(|l| LeaseInfo {
            ours: l.holder == link.holder(),
            summary: crate::fleet::link::describe_lease(&l, now),
            expires_in_secs: l.expires_at - now,
            lease: l,
        }))
    }

    /// High availability: take or renew the pipeline lease and lead (keep it renewed in
    /// the background); [`RuntimeError::Fenced`] while another orchestrator holds it.
    /// A no-op without a shared state store.
    pub fn ensure_leader(&self) -> Result<(), RuntimeError> {
        if let Some(k) = &self.keeper {
            self.ctx.fleet.get(&self.ctx)?;
            k.lead();
        }
        Ok(())
    }

    /// High availability: wait (as the standby) until this orchestrator holds the
    /// pipeline lease, reporting who holds it meanwhile.
    fn await_lease(&self, progress: &mut dyn FnMut(Progress)) -> Result<(), RuntimeError> {
        let Some(keeper) = &self.keeper else {
            return Ok(());
        };
        let was_leader = keeper.is_leader();
        let mut waited = false;
        let mut shown_at: Option<std::time::Instant> = None;
        loop {
            match self.ensure_leader() {
                Ok(()) => {
                    if waited || !was_leader {
                        let fence = self.ctx.fleet.connect(&self.ctx)?.fence();
                        progress(Progress::TookOver {
                            detail: format!(
                                "holding the pipeline lease at epoch {}{}",
                                fence.epoch,
                                if waited {
                                    " (the previous holder stopped renewing it): resuming the run from the shared state"
                                } else {
                                    ""
                                }
                            ),
                        });
                    }
                    return Ok(());
                }
                Err(e) if e.is_fenced() => {
                    waited = true;
                    if shown_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        progress(Progress::Standby {
                            detail: e.to_string(),
                        });
                        shown_at = Some(std::time::Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Carry out the outbox effects (rollback orders) and record each result. Returns the
    /// state afterwards. Effects that cannot be delivered stay in the outbox.
    pub fn deliver_outbox(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PipelineState, RuntimeError> {
        let state = self.store.load()?;
        for effect in &state.outbox {
            let store = &self.store;
            let id = effect.id.clone();
            let mut persist = |p: &fleetgate_core::fleet::RevocationProgress| {
                store
                    .transact(|s| {
                        handle(
                            s,
                            Event::EffectProgress {
                                id: id.clone(),
                                progress: p.clone(),
                            },
                        )
                        .map(|_| ())
                    })
                    .map_err(flatten)
            };
            let result = deliver(&self.ctx, &state, effect, &mut persist);
            let event = match &result {
                Ok(note) => {
                    progress(Progress::Delivered {
                        id: effect.id.clone(),
                        note: note.clone(),
                    });
                    Event::EffectDone {
                        id: effect.id.clone(),
                    }
                }
                Err(DeliveryError::Retry(e)) => {
                    progress(Progress::DeliveryFailed {
                        id: effect.id.clone(),
                        error: e.clone(),
                    });
                    Event::EffectFailed {
                        id: effect.id.clone(),
                        error: e.clone(),
                    }
                }
                Err(DeliveryError::Never(reason)) => {
                    progress(Progress::Abandoned {
                        id: effect.id.clone(),
                        reason: reason.clone(),
                    });
                    Event::EffectAbandoned {
                        id: effect.id.clone(),
                        reason: reason.clone(),
                    }
                }
            };
            self.store
                .transact(|s| handle(s, event).map(|_| ()))
                .map_err(flatten)?;
        }
        Ok(self.store.load()?)
    }

    /// Evaluate the current stage's gate once and commit its verdict (compare-and-swap on
    /// stage and epoch: discarded if a rollback landed meanwhile).
    pub fn advance(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<AdvanceReport, RuntimeError> {
        // With a shared state store only the lease holder evaluates gates.
        self.ensure_leader()?;
        let mut snapshot = self.store.load()?;
        if snapshot.stage.is_gated() && snapshot.git_sha.is_empty() {
            snapshot = self.pin_commit(snapshot)?;
        }
        let stage = snapshot.stage;
        if !stage.is_gated() && !snapshot.outbox.is_empty() {
            // A finished run with effects still queued (a rollback order sent by hand, or
            // one whose delivery failed): deliver them; nothing else is left to do.
            return self.deliver_queued(stage, snapshot.outbox.len(), progress);
        }
        if !stage.is_gated() {
            return Err(RuntimeError::NoActiveRun { stage });
        }
        if let Some(p) = &snapshot.paused {
            progress(Progress::Paused {
                stage,
                by: p.by.clone(),
                reason: p.reason.clone(),
            });
            return Ok(AdvanceReport {
                stage,
                verdict: Verdict::pending(
                    format!(
                        "paused by {}: {}; nothing is evaluated or sent until `fleetgate resume`",
                        p.by, p.reason
                    ),
                    serde_json::json!({"paused": p}),
                ),
                committed: false,
                paused: true,
                state: snapshot,
            });
        }
        let epoch = snapshot.epoch;
        let log = matches!(
            stage,
            Stage::Building | Stage::Testing | Stage::Auditing | Stage::Benchmarking
        )
        .then(|| self.ctx.log_path(&snapshot, stage));
        progress(Progress::GateStarted {
            stage,
            version: snapshot.version.clone(),
            log,
        });
        let store = &self.store;
        let mut checkpoint = |mut progress: ProgressRef<'_>| -> Result<(), RuntimeError> {
            // Whether it changes anything is known from the progress alone (no copy of
            // the whole state, which holds one entry per delivery); the state read back
            // lets go of its older progress before the new one goes in, and DEPLOY's is
            // moved in and back out rather than copied.
            let mut lent = false;
            let written = store.transact_returning(|s| {
                if progress.is_in(s) {
                    return Ok(((), false));
                }
                match progress {
                    ProgressRef::Canary(_) => s.canary = None,
                    ProgressRef::Deploy(_) => s.deploy = None,
                }
                lent = true;
                let event = Event::FleetProgress {
                    epoch,
                    progress: progress.lend(),
                };
                handle(s, event).map(|_| ((), true))
            });
            match written {
                Ok(((), mut state)) => {
                    if lent {
                        progress.take_back(&mut state)?;
                    }
                    Ok(())
                }
                Err(TransactError::Rejected(t)) => Err(RuntimeError::Superseded(t)),
                Err(TransactError::Store(s)) => Err(RuntimeError::Store(s)),
            }
        };
        let (verdict, facts) =
            match gates::evaluate(&self.ctx, &mut snapshot, stage, &mut checkpoint) {
                Ok(v) => v,
                Err(RuntimeError::Superseded(refused)) => {
                    let reason = refused.to_string();
                    progress(Progress::Discarded {
                        stage,
                        reason: reason.clone(),
                    });
                    let state = self.store.load()?;
                    return Ok(AdvanceReport {
                        stage,
                        verdict: Verdict::failed(reason, serde_json::Value::Null),
                        committed: false,
                        paused: state.paused.is_some(),
                        state,
                    });
                }
                Err(e) => return Err(e),
            };
        // The commit reads the state afresh: the snapshot is not held through it.
        drop(snapshot);
        let event = Event::GateEvaluated {
            stage,
            epoch,
            verdict: verdict.clone(),
            facts,
            now: now(),
        };
        // A gate's evaluation always changes the state (its record counts the check):
        // no copy of the whole state is made to find out, nor to return it.
        let committed = self.store.transact_returning(|s| {
            let cmds = handle(s, event)?;
            Ok::<_, TransitionError>((cmds, true))
        });
        match committed {
            Ok((cmds, state)) => {
                progress(Progress::GateFinished {
                    stage,
                    verdict: verdict.clone(),
                    now_at: state.stage,
                });
                let state = if cmds.iter().any(|c| matches!(c, Command::Deliver(_))) {
                    self.deliver_outbox(progress)?
                } else {
                    state
                };
                if cmds.iter().any(|c| matches!(c, Command::Finished { .. })) {
                    self.store.archive_run(&state)?;
                }
                Ok(AdvanceReport {
                    stage,
                    verdict,
                    committed: true,
                    paused: false,
                    state,
                })
            }
            Err(TransactError::Rejected(
                e @ (TransitionError::Stale { .. } | TransitionError::Paused { .. }),
            )) => {
                progress(Progress::Discarded {
                    stage,
                    reason: e.to_string(),
                });
                let state = self.store.load()?;
                Ok(AdvanceReport {
                    stage,
                    verdict,
                    committed: false,
                    paused: state.paused.is_some(),
                    state,
                })
            }
            Err(e) => Err(flatten(e)),
        }
    }

    /// A run without a commit (adopted from a HART state file: HART's `start_upgrade`
    /// defaults `git_sha` to `""`) gets the commit of the tag named like its version, the
    /// same rule as `start` without `git_sha`, recorded before any gate runs. Without such a
    /// tag the state is left as it is and BUILD fails closed on the missing commit.
    fn pin_commit(&self, snapshot: PipelineState) -> Result<PipelineState, RuntimeError> {
        let Ok(version) = Version::parse(&snapshot.version) else {
            return Ok(snapshot);
        };
        let Ok(sha) = self.resolve_version(&version, None) else {
            return Ok(snapshot);
        };
        let epoch = snapshot.epoch;
        self.store
            .transact(|s| {
                if s.epoch == epoch && s.git_sha.is_empty() {
                    s.git_sha = sha.clone();
                }
                Ok::<_, std::convert::Infallible>(s.clone())
            })
            .map_err(|e| match e {
                TransactError::Store(s) => RuntimeError::Store(s),
                TransactError::Rejected(never) => match never {},
            })
    }

    /// A version to release next, if there is one: a version tag newer than anything run
    /// so far (the run in `state` and the last completed release), else `auto-<unix>` for
    /// HEAD when its code hash differs from the last completed release's. Returns the
    /// version and its commit.
    pub fn detect_new_version(
        &self,
        state: &PipelineState,
    ) -> Result<Option<(String, String)>, RuntimeError> {
        let repo_path = &self.ctx.repo;
        let repo = git2::Repository::open(repo_path)
            .map_err(|e| RuntimeError::git(repo_path, "open the repository", e))?;
        let seen = [
            Some(state.version.as_str()),
            state.last_completed.as_ref().map(|c| c.version.as_str()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|v| Version::parse(v).ok()?.semver())
        .max();
        let mut best = None;
        let names = repo
            .tag_names(None)
            .map_err(|e| RuntimeError::git(repo_path, "list tags", e))?;
        for name in names.iter().flatten().flatten() {
            let Ok(v) = Version::parse(name) else {
                continue;
            };
            let Some(sv) = v.semver() else { continue };
            if seen.as_ref().is_some_and(|s| &sv <= s) {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| &sv > b) {
                best = Some((sv, name.to_owned()));
            }
        }
        if let Some((_, tag)) = best {
            let sha = codehash::resolve_commit(repo_path, &format!("refs/tags/{tag}"))?;
            return Ok(Some((tag, sha)));
        }
        if state.stage == Stage::Idle && state.last_completed.is_none() {
            return Ok(None); // nothing released yet and no tag: wait for a tag
        }
        let head = codehash::code_hash_with(
            codehash::scheme_of(self.ctx.cfg.stages.build.hash_scheme),
            repo_path,
            "HEAD",
            &self.ctx.cfg.code_hash,
            &self.ctx.state_dir.join("work").join("watch-hash"),
        )?;
        let known = [
            state.code_hash.as_deref(),
            state
                .last_completed
                .as_ref()
                .and_then(|c| c.code_hash.as_deref()),
        ];
        if known.iter().flatten().any(|h| *h == head.code_hash) {
            return Ok(None);
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Ok(Some((format!("auto-{secs}"), head.commit)))
    }

    fn deliver_queued(
        &self,
        stage: Stage,
        queued: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<AdvanceReport, RuntimeError> {
        let mut abandoned = 0usize;
        let state = self.deliver_outbox(&mut |p| {
            if matches!(p, Progress::Abandoned { .. }) {
                abandoned += 1;
            }
            progress(p)
        })?;
        let left = state.outbox.len();
        let delivered = queued.saturating_sub(left + abandoned);
        let figures = serde_json::json!({"queued": queued, "delivered": delivered, "abandoned": abandoned, "undelivered": left});
        let verdict = if left == 0 {
            Verdict::passed(
                format!(
                    "the run is `{stage}`; of {queued} queued effect(s), {delivered} delivered, {abandoned} abandoned (see failure_detail)"
                ),
                figures,
            )
        } else {
            Verdict::pending(
                format!(
                    "the run is `{stage}`; {left} of {queued} queued effect(s) could not be delivered yet (kept; advance again to retry)"
                ),
                figures,
            )
        };
        Ok(AdvanceReport {
            stage,
            verdict,
            committed: true,
            paused: false,
            state,
        })
    }

    /// How long `run` keeps retrying a finished run's queued effects before it returns
    /// with them still queued: the longer of the apply timeout and three heartbeat
    /// timeouts (a node that is restarting its app answers busy meanwhile).
    fn delivery_deadline(&self) -> Duration {
        let c = &self.ctx.cfg.canary;
        let secs = c
            .apply_timeout_secs
            .max(c.heartbeat_timeout_secs.saturating_mul(3))
            .max(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(300))
    }

    /// Advance until the run reaches a terminal state, sleeping between pending checks.
    /// While the run is paused it evaluates nothing and waits (reporting the pause once)
    /// until an operator resumes, promotes or aborts it.
    /// A finished run's queued effects (rollback orders) are retried until delivered or
    /// until the delivery deadline (see `delivery_deadline`), then left queued.
    pub fn run(&self, progress: &mut dyn FnMut(Progress)) -> Result<PipelineState, RuntimeError> {
        self.run_until(progress, false)
    }

    /// As [`Orchestrator::run`], but returns the state as soon as the run is paused — an
    /// operator's pause, or a canary held as inconclusive — instead of waiting for an
    /// operator: for unattended callers (the demo, scripts) that must never wait forever.
    /// The run stays paused; `state.paused` says by whom and why.
    ///
    /// # Errors
    /// As [`Orchestrator::run`].
    pub fn run_unattended(
        &self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PipelineState, RuntimeError> {
        self.run_until(progress, true)
    }

    fn run_until(
        &self,
        progress: &mut dyn FnMut(Progress),
        return_when_paused: bool,
    ) -> Result<PipelineState, RuntimeError> {
        let poll = Duration::from_secs(
            u64::try_from(self.ctx.cfg.run.poll_interval_secs)
                .unwrap_or(5)
                .max(1),
        );
        let mut delivering_since: Option<std::time::Instant> = None;
        let mut shown_pause: Option<fleetgate_core::OperatorAction> = None;
        loop {
            self.await_lease(progress)?;
            let state = self.store.load()?;
            if !state.stage.is_gated() {
                if state.outbox.is_empty() {
                    return Ok(state);
                }
                // A finished run's queued effects (rollback orders) are retried until every
                // node that may run the release obeyed, or until the delivery deadline;
                // what is left stays queued for `fleetgate outbox`.
                let since = *delivering_since.get_or_insert_with(std::time::Instant::now);
                let report = match self.deliver_queued(state.stage, state.outbox.len(), progress) {
                    // The lease was lost: back to standby.
                    Err(e) if e.is_fenced() && self.keeper.is_some() => continue,
                    r => r?,
                };
                if report.state.outbox.is_empty() || since.elapsed() >= self.delivery_deadline() {
                    return Ok(report.state);
                }
                progress(Progress::Waiting {
                    stage: state.stage,
                    secs: poll.as_secs(),
                });
                std::thread::sleep(poll);
                continue;
            }
            if let Some(p) = &state.paused {
                if return_when_paused {
                    progress(Progress::Paused {
                        stage: state.stage,
                        by: p.by.clone(),
                        reason: p.reason.clone(),
                    });
                    return Ok(state);
                }
                if shown_pause.as_ref() != Some(p) {
                    progress(Progress::Paused {
                        stage: state.stage,
                        by: p.by.clone(),
                        reason: p.reason.clone(),
                    });
                    shown_pause = Some(p.clone());
                }
                std::thread::sleep(poll);
                continue;
            }
            // The pass reads the state itself: this copy (at 100,000 nodes, 90,000
            // deliveries in DEPLOY) is not held through it.
            drop(state);
            let report = match self.advance(progress) {
                // The lease was lost mid-pass (nothing was written): back to standby.
                Err(e) if e.is_fenced() && self.keeper.is_some() => continue,
                r => r?,
            };
            if report.paused {
                continue;
            }
            if report.committed && report.verdict.outcome == fleetgate_core::Outcome::Pending {
                let secs = u64::try_from(self.ctx.cfg.run.poll_interval_secs).unwrap_or(5);
                progress(Progress::Waiting {
                    stage: report.stage,
                    secs,
                });
                std::thread::sleep(Duration::from_secs(secs));
            }
        }
    }
}

fn new_run_id(version: &Version) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}-{:04x}",
        t.as_secs(),
        version.as_str(),
        (t.subsec_nanos() ^ std::process::id()) & 0xffff
    )
}

/// Deliver one effect: a rollback order, revoking the release fleet-wide.
fn deliver(
    ctx: &GateContext,
    state: &PipelineState,
    effect: &Effect,
    persist: crate::fleet::revoke::PersistRevocation<'_>,
) -> Result<String, DeliveryError> {
    match &effect.action {
        EffectAction::SendRollback { scope, reason } => {
            crate::fleet::send_rollback(ctx, state, effect, *scope, reason, persist)
        }
    }
}
