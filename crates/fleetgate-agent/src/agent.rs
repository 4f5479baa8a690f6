//! The runtime: executes the commands of [`crate::machine`], persists the journal
//! before each one (write-ahead), and verifies manifests before the machine sees them.

use crate::artifacts::ArtifactError;
use crate::backup::Backups;
use crate::config::NodeConfig;
use crate::health::{Probe, probe};
use crate::machine::{
    self, ApplyReport, Command, Event, Installed, Journal, Kind, MachineError, Outcome, Phase,
    Policy, Target,
};
use crate::slots::{SlotError, Slots};
use crate::supervisor::{AppSpec, Supervisor};
use fleetgate_trust::{Floor, FloorError, Keyring, KeyringError, SigningKey, VerifyError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Journal file name inside the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// Largest journal read.
const MAX_JOURNAL_BYTES: u64 = 4 * 1024 * 1024;
/// Env var naming a crash point (tests only): the agent SIGKILLs itself there.
pub const CRASH_ENV: &str = "FLEETGATE_AGENT_CRASH_AT";

/// Why the agent could not start or keep going.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The trust file.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The `tls_ca_file` could not be read or holds no PEM certificate.
    #[error("invalid node config: `tls_ca_file` {}: {reason}", path.display())]
    TlsCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent's own TLS certificate or key (`tls_cert_file`, `tls_key_file`).
    #[error("invalid node config: {0}")]
    TlsServer(#[from] fleetgate_net::tls::TlsError),
    /// The identity key.
    #[error("failed to load the node identity key {}: {source}", path.display())]
    IdentityKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: fleetgate_trust::KeyError,
    },
    /// The enrollment certificate.
    #[error("enrollment certificate {}: {reason}", path.display())]
    Enrollment {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The anti-rollback floor.
    #[error(transparent)]
    Floor(#[from] FloorError),
    /// Another agent holds the state directory.
    #[error("state directory {} is locked by another agent ({holder}); run one agent per state directory", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// Pid recorded by the holder.
        holder: String,
    },
    /// The journal is unreadable; it is left in place, never reset.
    #[error("failed to read the agent journal {}: {reason}; it was left untouched — inspect it or move it aside", path.display())]
    CorruptJournal {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file-system operation.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The apply state machine refused an event (a bug).
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// Binding a listener.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A background task panicked or was cancelled.
    #[error("agent task failed: {0}")]
    Task(String),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AgentError + use<'a> {
    move |source| AgentError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Why an apply request was refused or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The manifest failed verification (signature, keyring, expiry, floor, size, shape).
    #[error("manifest refused: {0}")]
    Verify(#[from] VerifyError),
    /// A rollback manifest lacks what the node needs to return.
    #[error("rollback manifest sequence {sequence} refused: {reason}")]
    BadRollback {
        /// Sequence.
        sequence: u64,
        /// What is missing.
        reason: String,
    },
    /// Another apply is running (applies run one at a time; the caller may retry).
    #[error("another apply is in progress (phase {phase}); retry when it is done")]
    Busy {
        /// Phase of the apply in flight.
        phase: String,
    },
    /// An agent update (manifest kind `agent`) this node does not take: `self_update` is
    /// off, it is not newer than the last one, one is being tried, or its build could not
    /// be fetched.
    #[error("agent update sequence {sequence} refused: {reason}")]
    SelfUpdate {
        /// Sequence.
        sequence: u64,
        /// Why.
        reason: String,
        /// The same manifest may be taken later (its build could not be fetched or
        /// stored, or another update is being tried); `false` for refusals that stand
        /// (self-update off, not newer, malformed).
        retryable: bool,
    },
    /// The agent failed internally (journal, state machine).
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl ApplyError {
    /// Stable snake_case reason for JSON.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Verify(v) => v.name(),
            Self::BadRollback { .. } => "bad_rollback",
            Self::Busy { .. } => "busy",
            Self::SelfUpdate { .. } => "self_update",
            Self::Agent(_) => "internal",
        }
    }
}

/// What `GET /status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Node id.
    pub node_id: String,
    /// Committed version.
    pub version: Option<String>,
    /// Committed code hash.
    pub code_hash: Option<String>,
    /// Committed slot.
    pub slot: Option<String>,
    /// The committed version in full.
    pub current: Option<Installed>,
    /// The version before it.
    pub previous: Option<Installed>,
    /// Anti-rollback floor (highest committed sequence).
    pub floor: u64,
    /// Phase of an apply in flight.
    pub apply_phase: Option<Phase>,
    /// The last apply's report.
    pub last_report: Option<ApplyReport>,
    /// Releases refused from now on.
    pub bad: Vec<machine::BadRelease>,
    /// A process of the app is alive.
    pub app_running: bool,
    /// Exits of the app since it was last started.
    pub app_exits: usize,
    /// Last health check result.
    pub healthy: bool,
    /// Last health check detail.
    pub health_detail: String,
    /// Heartbeat delivery.
    pub heartbeats: crate::heartbeat::HeartbeatStats,
    /// The binary this agent runs.
    pub agent_binary: Option<PathBuf>,
    /// The last agent update (`self_update`), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_update: Option<crate::selfupdate::UpdateRecord>,
    /// Reads of the node's feed: pull mode's polls, or push mode's catch-up reads
    /// (`None` in push mode until the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<crate::pull::PullStats>,
}

pub(crate) struct Inner {
    pub(crate) cfg: NodeConfig,
    keyring: Keyring,
    pub(crate) identity: SigningKey,
    policy: Policy,
    slots: Slots,
    backups: Backups,
    sup: Supervisor,
    journal: Mutex<Journal>,
    journal_path: PathBuf,
    floor: Mutex<Floor>,
    apply_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) http: reqwest::Client,
    pub(crate) last_probe: Mutex<Probe>,
    hb_stats: Mutex<crate::heartbeat::HeartbeatStats>,
    pull_stats: Mutex<crate::pull::PullStats>,
    /// Where a manifest taken from the feed goes to reach the running gossip node (set
    /// while gossip runs; see [`Agent::offer_to_gossip`]).
    gossip_offer: Mutex<Option<tokio::sync::mpsc::Sender<Vec<u8>>>>,
    /// A binary to exec instead of this one (an agent update, or a return from one).
    restart: tokio::sync::watch::Sender<Option<PathBuf>>,
    metrics: crate::metrics::AgentMetrics,
    _lock: File,
}

/// The node agent: verified, journaled, health-gated apply. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node_id", &self.inner.cfg.node_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Test-only crash point: when `FLEETGATE_AGENT_CRASH_AT` is `<name>` or
/// `<name>:<sequence>`, the agent SIGKILLs itself here (a power cut: nothing flushed).
fn crash_point(name: &str, sequence: u64) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name || v == format!("{name}:{sequence}")) {
        tracing::error!(
            point = name,
            "crash point reached: killing the agent (test)"
        );
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Loads the journal (missing: empty; unreadable: error, never reset).
///
/// # Errors
/// [`AgentError::CorruptJournal`].
pub fn load_journal(path: &Path) -> Result<Journal, AgentError> {
    let corrupt = |reason: String| AgentError::CorruptJournal {
        path: path.to_owned(),
        reason,
    };
    let bytes = match fleetgate_trust::fsutil::read_capped(path, MAX_JOURNAL_BYTES) {
        Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => b,
        Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
            return Err(corrupt(format!(
                "{}, more than {MAX_JOURNAL_BYTES}",
                fleetgate_trust::fsutil::Oversize(size)
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let j: Journal = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if j.schema_version != machine::JOURNAL_SCHEMA_VERSION {
        return Err(corrupt(format!(
            "schema_version {} is not supported; this agent reads {}",
            j.schema_version,
            machine::JOURNAL_SCHEMA_VERSION
        )));
    }
    Ok(j)
}

fn verify_enrollment(
    path: &Path,
    cfg: &NodeConfig,
    keyring: &Keyring,
    identity: &SigningKey,
) -> Result<(), AgentError> {
    let bad = |reason: String| AgentError::Enrollment {
        path: path.to_owned(),
        reason,
    };
    let bytes =
        fleetgate_trust::fsutil::read_limited(path, fleetgate_trust::MAX_DOCUMENT_BYTES as u64)
            .map_err(|e| bad(e.to_string()))?;
    let doc = fleetgate_trust::verify_document(&bytes, keyring, fleetgate_trust::unix_now())
        .map_err(|e| bad(e.to_string()))?;
    let field = |k: &str| {
        doc.value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    if field("type") != "fleetgate-enrollment" {
        return Err(bad(format!(
            "type is {:?}, expected \"fleetgate-enrollment\"",
            field("type")
        )));
    }
    if field("node_id") != cfg.node_id {
        return Err(bad(format!(
            "it is for node {:?}, this node is {:?}",
            field("node_id"),
            cfg.node_id
        )));
    }
    if field("public_key") != identity.public_key_hex() {
        return Err(bad(format!(
            "it certifies key {}, the identity key is {}",
            field("public_key"),
            identity.public_key_hex()
        )));
    }
    Ok(())
}

fn tail(bytes: &[u8], n: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].trim().to_owned()
}

impl Agent {
    /// Opens the agent: locks the state directory, loads the trust file, identity key,
    /// enrollment certificate (if configured), floor and journal. Does not start
    /// anything; call [`Agent::recover`] next (as [`crate::run_node`] does).
    ///
    /// # Errors
    /// [`AgentError`] naming the file or setting.
    pub fn open(cfg: NodeConfig) -> Result<Self, AgentError> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(io_err("create state directory", &cfg.state_dir))?;
        let lock_path = cfg.state_dir.join("agent.lock");
        let lock_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {
                let _ = std::fs::write(&lock_path, format!("pid {}\n", std::process::id()));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AgentError::Locked {
                    dir: cfg.state_dir.clone(),
                    holder: std::fs::read_to_string(&lock_path)
                        .unwrap_or_default()
                        .trim()
                        .chars()
                        .take(100)
                        .collect(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let keyring = Keyring::load(&cfg.trust_file)?;
        let identity =
            SigningKey::from_file(&cfg.identity_key).map_err(|source| AgentError::IdentityKey {
                path: cfg.identity_key.clone(),
                source,
            })?;
        if let Some(cert) = &cfg.enrollment_cert {
            verify_enrollment(cert, &cfg, &keyring, &identity)?;
        }
        let floor = Floor::open(&cfg.state_dir)?;
        let journal_path = cfg.state_dir.join(JOURNAL_FILE);
        let journal = load_journal(&journal_path)?;
        let http = http_client(&cfg)?;
        Ok(Self {
            inner: Arc::new(Inner {
                policy: Policy {
                    has_install: cfg.install.is_some(),
                    backup: cfg.backup.is_some() || cfg.pre_apply.is_some(),
                },
                slots: Slots::new(&cfg.state_dir),
                backups: Backups::new(
                    &cfg.state_dir,
                    cfg.backup
                        .as_ref()
                        .map(|b| b.paths.clone())
                        .unwrap_or_default(),
                    cfg.backup.as_ref().map_or(3, |b| b.keep as usize),
                ),
                sup: Supervisor::new(
                    cfg.state_dir.join("app.pid"),
                    Duration::from_secs(cfg.drain_secs),
                ),
                journal: Mutex::new(journal),
                journal_path,
                floor: Mutex::new(floor),
                apply_lock: Arc::new(tokio::sync::Mutex::new(())),
                http,
                last_probe: Mutex::new(Probe::default()),
                hb_stats: Mutex::new(crate::heartbeat::HeartbeatStats::default()),
                pull_stats: Mutex::new(crate::pull::PullStats::default()),
                gossip_offer: Mutex::new(None),
                restart: tokio::sync::watch::Sender::new(None),
                metrics: crate::metrics::AgentMetrics::default(),
                keyring,
                identity,
                cfg,
                _lock: lock_file,
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    /// A copy of the journal as last persisted.
    #[must_use]
    pub fn journal(&self) -> Journal {
        lock(&self.inner.journal).clone()
    }

    /// Finishes or undoes an apply the previous agent process left in the journal, stops
    /// any app it left running, and starts the committed version. Call once at start.
    ///
    /// # Errors
    /// [`AgentError`] (journal write, state machine).
    pub async fn recover(&self) -> Result<Option<ApplyReport>, AgentError> {
        let _guard = self.inner.apply_lock.clone().lock_owned().await;
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.drive(Event::Recover).await })
            .await
            .map_err(|e| AgentError::Task(e.to_string()))?
    }

    /// Verifies a signed manifest and applies it. Applies run one at a time: while one
    /// runs, another call gets [`ApplyError::Busy`] at once. The apply runs in its own
    /// task, so dropping the returned future does not interrupt it.
    ///
    /// # Errors
    /// [`ApplyError`]: refused before anything was done. A failed apply is not an error:
    /// it is an [`ApplyReport`] with `success: false`.
    pub async fn apply(&self, manifest: &[u8]) -> Result<ApplyReport, ApplyError> {
        let r = self.apply_counted(manifest).await;
        match &r {
            Ok(report) => self.inner.metrics.outcome(report.outcome.as_str()),
            Err(e) => self.inner.metrics.refused(e.reason()),
        }
        r
    }

    /// The counters and current state in the Prometheus text format (`GET /metrics`).
    #[must_use]
    pub fn metrics(&self) -> String {
        self.inner.metrics.render(&self.status())
    }

    /// Record the gossip node's counters for `/metrics`.
    pub(crate) fn gossip_stats(&self, stats: fleetgate_gossip::Stats) {
        self.inner.metrics.gossip(stats);
    }

    async fn apply_counted(&self, manifest: &[u8]) -> Result<ApplyReport, ApplyError> {
        let guard = self
            .inner
            .apply_lock
            .clone()
            .try_lock_owned()
            .map_err(|_| ApplyError::Busy {
                phase: lock(&self.inner.journal)
                    .apply
                    .as_ref()
                    .map_or("verify", |a| a.phase.as_str())
                    .to_owned(),
            })?;
        let target = match self.inner.verify(manifest)? {
            Checked::Fresh(target) => target,
            Checked::AgentUpdate(m) => {
                let _guard = guard;
                return self.stage_agent_update(*m).await;
            }
            Checked::BelowFloor { target, error } => {
                let journal = lock(&self.inner.journal).clone();
                return machine::already_applied(&journal, &target, fleetgate_trust::unix_now())
                    .ok_or(ApplyError::Verify(error));
            }
        };
        let inner = self.inner.clone();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            let prev_ok = inner.previous_slot_usable(&target).await;
            let r = inner
                .drive(Event::Verified {
                    target,
                    previous_slot_present: prev_ok,
                })
                .await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "apply failed internally; recovering");
                if let Err(e2) = inner.drive(Event::Recover).await {
                    tracing::error!(error = %e2, "recovery after the internal failure failed too");
                }
            }
            r
        });
        let report = handle
            .await
            .map_err(|e| AgentError::Task(e.to_string()))??;
        report.ok_or_else(|| {
            ApplyError::Agent(AgentError::Task(
                "the apply ended without a report".to_owned(),
            ))
        })
    }

    /// Runs the health check once and remembers the result (for status and heartbeats).
    pub async fn check_health(&self) -> Probe {
        let p = match self.inner.sup.spec() {
            Some(spec) => {
                probe(
                    &self.inner.cfg.health,
                    &self.inner.http,
                    &spec.dir,
                    &spec.environment(),
                )
                .await
            }
            None => Probe {
                healthy: false,
                detail: "the app is not running".into(),
                counters: None,
            },
        };
        let mut last = lock(&self.inner.last_probe);
        let counters = p.counters.clone().or_else(|| last.counters.clone());
        *last = Probe {
            counters,
            ..p.clone()
        };
        p
    }

    /// The status (`GET /status`).
    #[must_use]
    pub fn status(&self) -> Status {
        let j = self.journal();
        let floor = lock(&self.inner.floor).sequence();
        let probe = lock(&self.inner.last_probe).clone();
        Status {
            node_id: self.inner.cfg.node_id.clone(),
            version: j.current.as_ref().map(|c| c.version.clone()),
            code_hash: j.current.as_ref().map(|c| c.code_hash.clone()),
            slot: j.current.as_ref().map(|c| c.slot.clone()),
            current: j.current.clone(),
            previous: j.previous.clone(),
            floor,
            apply_phase: j.apply.as_ref().map(|a| a.phase),
            last_report: j.last_report.clone(),
            bad: j.bad.clone(),
            app_running: self.inner.sup.alive(),
            app_exits: self.inner.sup.exits(),
            healthy: probe.healthy,
            health_detail: probe.detail,
            heartbeats: lock(&self.inner.hb_stats).clone(),
            pull: {
                let p = lock(&self.inner.pull_stats).clone();
                (self.inner.cfg.mode == crate::DeliveryMode::Pull || p.polls > 0).then_some(p)
            },
            agent_binary: std::env::current_exe().ok(),
            agent_update: crate::selfupdate::load(&self.inner.cfg.state_dir)
                .ok()
                .flatten(),
        }
    }

    /// Takes a verified agent update: checks that this node opted in and that it is newer
    /// than the last one, downloads the build, records the update as `trying`, and asks
    /// the process to exec it ([`crate::selfupdate`]). Called with the apply lock held.
    async fn stage_agent_update(
        &self,
        m: fleetgate_trust::Manifest,
    ) -> Result<ApplyReport, ApplyError> {
        use crate::selfupdate::{self, UpdateRecord, UpdateState};
        let refuse = |reason: String| ApplyError::SelfUpdate {
            sequence: m.sequence,
            reason,
            retryable: false,
        };
        let later = |reason: String| ApplyError::SelfUpdate {
            sequence: m.sequence,
            reason,
            retryable: true,
        };
        let cfg = &self.inner.cfg;
        if !cfg.self_update {
            return Err(refuse(
                "self_update is off on this node (set `self_update = true` in node.toml to take agent updates)".into(),
            ));
        }
        // A damaged record (set aside at start, or damaged since): the last update's
        // sequence is unknown, so a reverted build could be offered again. Refused, not
        // retried, until an operator has looked.
        if let Some(aside) = selfupdate::damaged(&cfg.state_dir) {
            return Err(refuse(format!(
                "the agent update record was damaged and set aside as {}: agent updates are refused until an operator checks that file and removes it",
                aside.display()
            )));
        }
        let last = match selfupdate::read(&cfg.state_dir).map_err(later)? {
            selfupdate::Record::Missing => None,
            selfupdate::Record::Good(rec) => Some(rec),
            selfupdate::Record::Damaged(e) => {
                return Err(refuse(format!(
                    "the agent update record is damaged ({e}): agent updates are refused until an operator checks it and removes it"
                )));
            }
        };
        if let Some(r) = &last {
            if m.sequence <= r.sequence {
                return Err(refuse(format!(
                    "not newer than the last agent update (sequence {}, {:?})",
                    r.sequence, r.state
                )));
            }
            if r.state == UpdateState::Trying {
                return Err(later(format!(
                    "agent update {} is being tried; wait until it confirmed itself or was reverted",
                    r.sequence
                )));
            }
        }
        let [binary] = m.artifacts.as_slice() else {
            return Err(refuse("it must list exactly one artifact".into()));
        };
        let base = cfg
            .artifacts_url
            .clone()
            .ok_or_else(|| refuse("artifacts_url is not set".into()))?;
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| later(format!("cannot tell which binary runs: {e}")))?;
        let dir = cfg.state_dir.join(selfupdate::BIN_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| later(format!("{}: {e}", dir.display())))?;
        let dest = dir.join(&binary.sha256);
        let kept = selfupdate::file_sha256(&dest).is_ok_and(|sha| sha == binary.sha256);
        if !kept {
            let partial = dir.join(format!("{}.partial", binary.sha256));
            let _ = std::fs::remove_file(&partial);
            crate::artifacts::download(&self.inner.http, &base, binary, &partial)
                .await
                .map_err(|e| {
                    let _ = std::fs::remove_file(&partial);
                    later(format!("the build was not fetched: {e}"))
                })?;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
                .and_then(|()| std::fs::rename(&partial, &dest))
                .map_err(|e| later(format!("{}: {e}", dest.display())))?;
        }
        let now = fleetgate_trust::unix_now();
        let rec = UpdateRecord {
            sequence: m.sequence,
            version: m.version.clone(),
            sha256: binary.sha256.clone(),
            binary: dest.clone(),
            previous: exe,
            state: UpdateState::Trying,
            // Counted just before the exec (`selfupdate::count_try`): a kill before
            // it must not revert a build that never ran.
            tries: 0,
            staged_at: now,
            detail: format!(
                "staged; the new build must confirm itself within {} s",
                cfg.self_update_grace_secs
            ),
            watchdog_pid: None,
        };
        selfupdate::save(&cfg.state_dir, &rec).map_err(later)?;
        tracing::info!(version = %m.version, binary = %dest.display(), "agent update staged; restarting onto it");
        self.request_restart(dest);
        Ok(ApplyReport {
            success: true,
            outcome: Outcome::Applied,
            kind: Kind::Agent,
            sequence: m.sequence,
            version: m.version,
            code_hash: binary.sha256.clone(),
            running: self.journal().current,
            failed_phase: None,
            detail: format!(
                "agent update staged: the agent restarts onto it and must confirm itself within {} s, or returns to this build",
                cfg.self_update_grace_secs
            ),
            at: now,
        })
    }

    /// Ask the process to stop and exec `binary` (an agent update or a return from one).
    pub fn request_restart(&self, binary: PathBuf) {
        self.inner.restart.send_replace(Some(binary));
    }

    /// Receives restart requests ([`Agent::request_restart`]).
    #[must_use]
    pub fn restart_requests(&self) -> tokio::sync::watch::Receiver<Option<PathBuf>> {
        self.inner.restart.subscribe()
    }

    pub(crate) fn record_poll(&self, update: impl FnOnce(&mut crate::pull::PullStats)) {
        update(&mut lock(&self.inner.pull_stats));
    }

    /// Connects (or, with `None`, disconnects) the running gossip node, which takes the
    /// manifests offered with [`Agent::offer_to_gossip`].
    pub(crate) fn set_gossip_offer(&self, tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>) {
        *lock(&self.inner.gossip_offer) = tx;
    }

    /// Hands a verified manifest this node took from its feed to its running gossip node,
    /// which spreads it as if it had been delivered by gossip (so peers that missed the
    /// order learn of it). False when no gossip node runs (it reads `gossip_held.json`
    /// when it starts) or the hand-off queue is full (a newer one is on its way).
    pub(crate) fn offer_to_gossip(&self, manifest: &[u8]) -> bool {
        lock(&self.inner.gossip_offer)
            .as_ref()
            .is_some_and(|tx| tx.try_send(manifest.to_vec()).is_ok())
    }

    /// The counters the app last reported through its health endpoint.
    #[must_use]
    pub fn last_counters(&self) -> Option<crate::health::Counters> {
        lock(&self.inner.last_probe).counters.clone()
    }

    /// The anti-rollback floor (highest committed sequence).
    #[must_use]
    pub fn floor(&self) -> u64 {
        lock(&self.inner.floor).sequence()
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    pub(crate) fn identity(&self) -> &SigningKey {
        &self.inner.identity
    }

    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn record_heartbeat(&self, r: &Result<(u64, u64), String>, resynced: bool) {
        let mut s = lock(&self.inner.hb_stats);
        s.resyncs += u64::from(resynced);
        match r {
            Ok((epoch, seq)) => {
                s.sent += 1;
                s.consecutive_failures = 0;
                s.last_epoch = *epoch;
                s.last_seq = *seq;
            }
            Err(e) => {
                s.failed += 1;
                s.consecutive_failures += 1;
                s.last_error = Some(e.clone());
            }
        }
    }

    /// Waits for an apply in flight to end, then stops the app (drain, then kill).
    pub async fn shutdown(&self) {
        let _guard = self.inner.apply_lock.lock().await;
        self.inner.sup.stop().await;
    }
}

/// A manifest that passed every check of [`Inner::verify`] but, perhaps, the floor.
enum Checked {
    /// An agent update (its sequence is checked against earlier agent updates only).
    AgentUpdate(Box<fleetgate_trust::Manifest>),
    /// Above the floor: apply it.
    Fresh(Target),
    /// Valid in every way except that its sequence is at or below the floor.
    BelowFloor {
        /// What it asks for.
        target: Target,
        /// The [`VerifyError::Replayed`] to answer unless it was already applied.
        error: VerifyError,
    },
}

/// Checks the body of `POST /apply` (a signed release manifest or rollback order; gossip
/// deliveries are the same bytes): [`fleetgate_trust::verify_manifest`] with `opts`, then
/// what the manifest asks this node to run. [`Agent::apply`] calls it with every check but
/// the floor, which it checks last (a replay of a manifest applied here is answered
/// `already_applied`). Public so that the fuzz targets (`fuzz/`) run exactly this code.
///
/// # Errors
/// [`ApplyError::Verify`] (refused by verification, or a release without `git_sha`),
/// [`ApplyError::BadRollback`] (a rollback order without `return_to_code_hash`).
pub fn check_apply_body(
    bytes: &[u8],
    keyring: &Keyring,
    now: u64,
    opts: &fleetgate_trust::VerifyOptions,
) -> Result<(fleetgate_trust::VerifiedManifest, Target), ApplyError> {
    let v = fleetgate_trust::verify_manifest(bytes, keyring, now, opts)?;
    let target = Inner::target(v.manifest.clone(), bytes)?;
    Ok((v, target))
}

impl Inner {
    /// Verifies signatures, keyring, expiry and shape against everything but the floor,
    /// then checks the floor last, so that a manifest refused only because it is
    /// replayed can be recognised as one this node already applied.
    fn verify(&self, bytes: &[u8]) -> Result<Checked, ApplyError> {
        let now = fleetgate_trust::unix_now();
        let mut floor = lock(&self.floor);
        let opts = fleetgate_trust::VerifyOptions {
            floor: None,
            ..floor.verify_options()
        };
        let v = fleetgate_trust::verify_manifest(bytes, &self.keyring, now, &opts)?;
        if v.manifest.kind == fleetgate_trust::ManifestKind::Agent {
            return Ok(Checked::AgentUpdate(Box::new(v.manifest)));
        }
        let target = Inner::target(v.manifest.clone(), bytes)?;
        let below_floor = floor.check(&v.manifest).err();
        if let Some(back) = v.clock_stepped_back_by {
            tracing::warn!(seconds = back, "the clock is behind the last verified time");
        }
        if below_floor.is_none()
            && let Err(e) = floor.record_verified(now)
        {
            tracing::warn!(error = %e, "failed to record the verification time");
        }
        drop(floor);
        Ok(match below_floor {
            None => Checked::Fresh(target),
            Some(error) => Checked::BelowFloor { target, error },
        })
    }

    /// What a verified manifest asks for.
    fn target(m: fleetgate_trust::Manifest, bytes: &[u8]) -> Result<Target, ApplyError> {
        let manifest_sha256 = hex::encode(Sha256::digest(bytes));
        match m.kind {
            fleetgate_trust::ManifestKind::Release => {
                if m.git_sha.is_empty() {
                    return Err(ApplyError::Verify(VerifyError::Malformed {
                        what: "manifest",
                        reason: "git_sha is empty; the node fetches that commit".into(),
                    }));
                }
                Ok(Target {
                    kind: Kind::Release,
                    sequence: m.sequence,
                    version: m.version,
                    code_hash: m.code_hash,
                    git_sha: m.git_sha,
                    manifest_sha256,
                    hash_scheme: m.hash_scheme,
                    revokes: None,
                    artifacts: m.artifacts,
                })
            }
            fleetgate_trust::ManifestKind::Agent => Err(ApplyError::SelfUpdate {
                sequence: m.sequence,
                reason: "an agent update is not a release".into(),
                retryable: false,
            }),
            fleetgate_trust::ManifestKind::Rollback => {
                let bad = |reason: &str| ApplyError::BadRollback {
                    sequence: m.sequence,
                    reason: reason.to_owned(),
                };
                let code_hash = m
                    .return_to_code_hash
                    .clone()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| {
                        bad("return_to_code_hash is missing; the node cannot verify what it returns to")
                    })?;
                Ok(Target {
                    kind: Kind::Rollback,
                    sequence: m.sequence,
                    version: m.return_to_version.clone().unwrap_or_default(),
                    code_hash,
                    git_sha: m.return_to_git_sha.clone().unwrap_or_default(),
                    manifest_sha256,
                    hash_scheme: m.hash_scheme,
                    revokes: m.rollback_of.map(|of| machine::Revoked {
                        sequence: of.sequence,
                        version: of.version,
                        code_hash: of.code_hash.filter(|h| !h.is_empty()),
                    }),
                    artifacts: m.artifacts,
                })
            }
        }
    }

    async fn previous_slot_usable(&self, target: &Target) -> bool {
        let prev = lock(&self.journal).previous.clone();
        let Some(prev) = prev.filter(|p| p.code_hash == target.code_hash) else {
            return false;
        };
        let slots = self.slots.clone();
        let cfg = self.cfg.code_hash.clone();
        let scheme = target.hash_scheme;
        tokio::task::spawn_blocking(move || {
            slots.exists(&prev.slot)
                && slots
                    .verify(&prev.slot, &prev.git_sha, &prev.code_hash, scheme, &cfg)
                    .inspect_err(|e| tracing::warn!(error = %e, "previous slot is unusable; fetching instead"))
                    .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    fn persist(&self, j: &Journal) -> Result<(), AgentError> {
        let mut bytes = serde_json::to_vec_pretty(j).map_err(|e| AgentError::Io {
            action: "serialise journal",
            path: self.journal_path.clone(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        crate::write_atomic(&self.journal_path, &bytes, 0o644)
            .map_err(io_err("write journal", &self.journal_path))?;
        *lock(&self.journal) = j.clone();
        Ok(())
    }

    /// Runs the machine from `first` until no command produces an event.
    async fn drive(&self, first: Event) -> Result<Option<ApplyReport>, AgentError> {
        let mut next = Some(first);
        let mut report = None;
        while let Some(ev) = next.take() {
            let before = lock(&self.journal).clone();
            let (j, cmds) = machine::step(&self.policy, &before, ev, fleetgate_trust::unix_now())?;
            if j != before {
                self.persist(&j)?;
            }
            let phase = j.apply.as_ref().map(|a| (a.phase, a.target.sequence));
            if phase != before.apply.as_ref().map(|a| (a.phase, a.target.sequence))
                && let Some((p, seq)) = phase
            {
                tracing::info!(phase = p.as_str(), sequence = seq, "apply phase");
                crash_point(p.as_str(), seq);
            }
            for c in cmds {
                if let Some(ev) = self.exec(c, &mut report).await {
                    next = Some(ev);
                }
            }
        }
        Ok(report)
    }

    fn spec(&self, app: &Installed) -> AppSpec {
        AppSpec {
            dir: self.slots.path(&app.slot),
            slot: app.slot.clone(),
            version: app.version.clone(),
            code_hash: app.code_hash.clone(),
            command: self.cfg.start.clone(),
            env: self.cfg.env.clone(),
        }
    }

    async fn exec(&self, cmd: Command, report: &mut Option<ApplyReport>) -> Option<Event> {
        match cmd {
            Command::FetchSlot {
                artifacts, slot, ..
            } if !artifacts.is_empty() => {
                Some(match self.fetch_artifacts(&slot, &artifacts).await {
                    Ok(()) => Event::Fetched,
                    Err(e) => {
                        let _ = self.slots.remove(&slot);
                        Event::FetchFailed {
                            permanent: e.is_permanent(),
                            reason: e.to_string(),
                        }
                    }
                })
            }
            Command::FetchSlot {
                slot,
                git_sha,
                code_hash,
                hash_scheme,
                ..
            } => {
                let slots = self.slots.clone();
                let remote = self.cfg.remote.clone();
                let cfg = self.cfg.code_hash.clone();
                let r = tokio::task::spawn_blocking(move || {
                    slots.fetch(&slot, &remote, &git_sha, &code_hash, hash_scheme, &cfg)
                })
                .await;
                Some(match r {
                    Ok(Ok(_)) => Event::Fetched,
                    Ok(Err(e)) => Event::FetchFailed {
                        permanent: SlotError::is_permanent(&e),
                        reason: e.to_string(),
                    },
                    Err(e) => Event::FetchFailed {
                        reason: format!("fetch task failed: {e}"),
                        permanent: false,
                    },
                })
            }
            Command::RunInstall { slot } => Some(self.run_install(&slot).await),
            Command::StopApp => {
                self.sup.stop().await;
                Some(Event::Stopped)
            }
            Command::StartApp { app } => Some(match self.sup.start(self.spec(&app)) {
                Ok(()) => Event::Started,
                Err(e) => Event::StartFailed {
                    reason: e.to_string(),
                },
            }),
            Command::WaitHealthy => Some(match self.wait_healthy().await {
                Ok(()) => Event::Healthy,
                Err(reason) => Event::Unhealthy { reason },
            }),
            Command::Commit { slot, sequence } => Some(match self.commit(&slot, sequence) {
                Ok(()) => Event::Committed,
                Err(reason) => Event::CommitFailed { reason },
            }),
            Command::Backup { slot, id } => Some(self.backup(&slot, &id).await),
            Command::RestoreData { id } => {
                let slot = lock(&self.journal).current.as_ref().map(|c| c.slot.clone());
                if let Some(p) = self.restore_data(&id, slot.as_deref()).await {
                    tracing::error!(backup = %id, "{p}");
                }
                None
            }
            Command::RestoreRevoked { id, slot } => {
                if self.backups.is_kept(&id) {
                    if let Some(p) = self.restore_data(&id, Some(&slot)).await {
                        tracing::error!(backup = %id, "{p}");
                    }
                } else {
                    tracing::warn!(backup = %id, "the revoked release's pre-apply backup is no longer kept: its data stays as that release left it");
                }
                None
            }
            Command::PruneBackups => {
                let backups = self.backups.clone();
                match tokio::task::spawn_blocking(move || backups.prune()).await {
                    Ok(Ok(removed)) if !removed.is_empty() => {
                        tracing::info!(?removed, "old backups removed");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "failed to prune backups"),
                    Err(e) => tracing::warn!(error = %e, "backup prune task failed"),
                }
                None
            }
            Command::RestorePrevious { previous, restore } => {
                self.sup.stop().await;
                let restored = match &restore {
                    Some(id) => {
                        let slot = previous.as_ref().map(|p| p.slot.as_str());
                        self.restore_data(id, slot).await
                    }
                    None => None,
                };
                let problem = match previous {
                    None => Some("no previous version to restart; the app is stopped".into()),
                    Some(prev) if !self.slots.exists(&prev.slot) => Some(format!(
                        "the previous slot {} is missing; the app is stopped",
                        prev.slot
                    )),
                    Some(prev) => {
                        if self.slots.current().as_deref() != Some(prev.slot.as_str())
                            && let Err(e) = self.slots.switch_current(&prev.slot)
                        {
                            tracing::error!(error = %e, "failed to point current back");
                        }
                        match self.sup.start(self.spec(&prev)) {
                            Err(e) => Some(e.to_string()),
                            Ok(()) => self.wait_healthy().await.err().map(|r| {
                                format!("the previous version is not healthy either: {r}")
                            }),
                        }
                    }
                };
                let problem = match (restored, problem) {
                    (None, p) => p,
                    (Some(r), None) => Some(r),
                    (Some(r), Some(p)) => Some(format!("{r}; {p}")),
                };
                Some(Event::RolledBack { problem })
            }
            Command::KillApp => {
                self.sup.stop().await;
                None
            }
            Command::RunApp { app } => {
                if self.slots.current().as_deref() != Some(app.slot.as_str())
                    && let Err(e) = self.slots.switch_current(&app.slot)
                {
                    tracing::error!(error = %e, "failed to repair the current link");
                }
                if let Err(e) = self.sup.start(self.spec(&app)) {
                    tracing::error!(error = %e, "failed to start the committed version");
                }
                None
            }
            Command::RaiseFloor { sequence } => {
                if let Err(e) = lock(&self.floor).commit(sequence, fleetgate_trust::unix_now()) {
                    tracing::error!(error = %e, "failed to raise the anti-rollback floor");
                }
                None
            }
            Command::RemoveSlot { slot } => {
                if let Err(e) = self.slots.remove(&slot) {
                    tracing::warn!(error = %e, "failed to remove a slot");
                }
                None
            }
            Command::PruneSlots { keep } => {
                match self.slots.prune(&keep) {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(?removed, "old slots removed");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "failed to prune slots"),
                }
                None
            }
            Command::Report(r) => {
                match r.outcome {
                    Outcome::Applied | Outcome::Noop | Outcome::AlreadyApplied => {
                        tracing::info!(outcome = ?r.outcome, version = %r.version, sequence = r.sequence, "{}", r.detail);
                    }
                    _ => {
                        tracing::warn!(outcome = ?r.outcome, version = %r.version, sequence = r.sequence, "{}", r.detail);
                    }
                }
                *report = Some(r);
                None
            }
        }
    }

    async fn run_install(&self, slot: &str) -> Event {
        let Some(cmd) = &self.cfg.install else {
            return Event::InstallDone;
        };
        match self.run_in_slot("install", cmd, slot).await {
            Ok(()) => Event::InstallDone,
            Err(reason) => Event::InstallFailed { reason },
        }
    }

    /// Downloads the release's artifacts (size and digest checked while streaming) and
    /// installs them into a fresh slot ([`crate::artifacts`]).
    async fn fetch_artifacts(
        &self,
        slot: &str,
        artifacts: &[fleetgate_trust::Artifact],
    ) -> Result<(), ArtifactError> {
        let base = self
            .cfg
            .artifacts_url
            .clone()
            .ok_or(ArtifactError::NoSource)?;
        let slot_err = |e: SlotError| ArtifactError::Local {
            slot: slot.to_owned(),
            reason: e.to_string(),
        };
        let (partial, downloads) = self.slots.begin_partial(slot).map_err(slot_err)?;
        let mut got = Vec::with_capacity(artifacts.len());
        for (i, a) in artifacts.iter().enumerate() {
            let dest = downloads.join(i.to_string());
            crate::artifacts::download(&self.http, &base, a, &dest).await?;
            tracing::info!(artifact = %a.name, bytes = a.size, "artifact downloaded and verified");
            got.push((a.clone(), dest));
        }
        let limits = crate::artifacts::Limits::default();
        tokio::task::spawn_blocking(move || crate::artifacts::install(&partial, &got, limits))
            .await
            .map_err(|e| ArtifactError::Local {
                slot: slot.to_owned(),
                reason: format!("install task failed: {e}"),
            })??;
        self.slots.finish_partial(slot).map_err(slot_err)?;
        Ok(())
    }

    /// `pre_apply`, then the snapshot (blocking work off the runtime).
    async fn backup(&self, slot: &str, id: &str) -> Event {
        if let Some(cmd) = &self.cfg.pre_apply
            && let Err(reason) = self.run_in_slot("pre_apply", cmd, slot).await
        {
            return Event::BackupFailed { reason };
        }
        if self.backups.is_empty() {
            return Event::BackedUp { id: None };
        }
        let backups = self.backups.clone();
        let owned = id.to_owned();
        let now = fleetgate_trust::unix_now();
        match tokio::task::spawn_blocking(move || backups.snapshot(&owned, now)).await {
            Ok(Ok(c)) => {
                tracing::info!(
                    backup = %id,
                    files = c.files,
                    reflinked = c.reflinked,
                    bytes = c.bytes,
                    skipped = c.skipped,
                    "pre-apply backup taken"
                );
                Event::BackedUp {
                    id: Some(id.to_owned()),
                }
            }
            Ok(Err(e)) => Event::BackupFailed {
                reason: format!("backup {id}: {e}"),
            },
            Err(e) => Event::BackupFailed {
                reason: format!("backup {id}: task failed: {e}"),
            },
        }
    }

    /// Restores backup `id` (the app is stopped), then runs `post_rollback` in `slot`
    /// (the version about to start). Returns the problem, if any.
    async fn restore_data(&self, id: &str, slot: Option<&str>) -> Option<String> {
        let backups = self.backups.clone();
        let owned = id.to_owned();
        let restored = tokio::task::spawn_blocking(move || backups.restore(&owned)).await;
        let mut problem = match restored {
            Ok(Ok(c)) => {
                tracing::info!(backup = %id, files = c.files, "data restored from the pre-apply backup");
                None
            }
            Ok(Err(e)) => Some(format!("restoring the pre-apply backup failed: {e}")),
            Err(e) => Some(format!("restoring the pre-apply backup failed: task: {e}")),
        };
        if let (Some(cmd), Some(slot)) = (&self.cfg.post_rollback, slot)
            && let Err(e) = self.run_in_slot("post_rollback", cmd, slot).await
        {
            problem = Some(match problem {
                Some(p) => format!("{p}; {e}"),
                None => e,
            });
        }
        problem
    }

    /// Runs a configured command (`install`, a hook) with `sh -c` in a slot, with the
    /// `[env]` table and the slot's `FLEETGATE_*` variables, within
    /// `install_timeout_secs`. `Err` says what failed, with the output's tail.
    async fn run_in_slot(&self, what: &str, cmd: &str, slot: &str) -> Result<(), String> {
        let dir = self.slots.path(slot);
        let env = AppSpec {
            dir: dir.clone(),
            slot: slot.to_owned(),
            version: String::new(),
            code_hash: String::new(),
            command: String::new(),
            env: self.cfg.env.clone(),
        }
        .environment();
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let timeout = Duration::from_secs(self.cfg.install_timeout_secs);
        match tokio::time::timeout(timeout, c.output()).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "{what} `{cmd}` in slot {slot} exited with {}: {}",
                out.status,
                tail(&[out.stdout, out.stderr].concat(), 1000)
            )),
            Ok(Err(e)) => Err(format!("{what} `{cmd}` in slot {slot}: {e}")),
            Err(_) => Err(format!(
                "{what} `{cmd}` in slot {slot} timed out after {timeout:?}"
            )),
        }
    }

    async fn wait_healthy(&self) -> Result<(), String> {
        let grace = Duration::from_secs(self.cfg.health_grace_secs);
        let interval = Duration::from_millis(self.cfg.health.interval_ms);
        let deadline = Instant::now() + grace;
        let Some(spec) = self.sup.spec() else {
            return Err("the app is not running".into());
        };
        let env = spec.environment();
        loop {
            let exits = self.sup.exits();
            if exits >= self.cfg.crash_loop as usize {
                return Err(format!(
                    "crash loop: the app exited {exits} times within the {}s grace window (limit {})",
                    grace.as_secs(),
                    self.cfg.crash_loop
                ));
            }
            let p = probe(&self.cfg.health, &self.http, &spec.dir, &env).await;
            if p.healthy && self.sup.alive() {
                *lock(&self.last_probe) = p;
                return Ok(());
            }
            if Instant::now() + interval > deadline {
                return Err(format!(
                    "no healthy answer within {}s ({} exits); last check: {}",
                    grace.as_secs(),
                    self.sup.exits(),
                    p.detail
                ));
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn commit(&self, slot: &str, sequence: u64) -> Result<(), String> {
        self.slots.switch_current(slot).map_err(|e| e.to_string())?;
        crash_point("commit_switched", sequence);
        lock(&self.floor)
            .commit(sequence, fleetgate_trust::unix_now())
            .map_err(|e| e.to_string())?;
        crash_point("commit_floor", sequence);
        Ok(())
    }
}

/// Largest `tls_ca_file` read.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// The agent's HTTP client: rustls; with `tls_ca_file`, only those roots are trusted.
fn http_client(cfg: &NodeConfig) -> Result<reqwest::Client, AgentError> {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(path) = &cfg.tls_ca_file {
        let ca_err = |reason: String| AgentError::TlsCa {
            path: path.clone(),
            reason,
        };
        let pem = match fleetgate_trust::fsutil::read_capped(path, MAX_CA_BYTES) {
            Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => b,
            Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
                return Err(ca_err(format!(
                    "{}, more than the {MAX_CA_BYTES}-byte limit",
                    fleetgate_trust::fsutil::Oversize(size)
                )));
            }
            Err(e) => return Err(ca_err(e.to_string())),
        };
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ca_err(format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate in the file".to_owned()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| AgentError::Task(format!("build HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_trust::{
        Manifest, ManifestKind, RollbackOf, VerifyOptions, rfc3339_seconds, sign_manifest,
    };

    const NOW: u64 = 1_800_000_000;

    fn release(sequence: u64) -> Manifest {
        Manifest {
            version: "v1.6.0".into(),
            git_sha: "a".repeat(40),
            code_hash: "c".repeat(64),
            built_at: rfc3339_seconds(NOW - 60),
            sequence,
            expires_at: NOW + 3600,
            canary_seed: "00ff".into(),
            ..Manifest::default()
        }
    }

    #[test]
    fn check_apply_body_says_what_a_release_and_a_rollback_order_ask_for() {
        let key = SigningKey::from_seed(&[7; 32]);
        let ring = Keyring::single(key.public_key());
        let opts = VerifyOptions::default();

        let body = sign_manifest(&release(6), &[&key]).unwrap();
        let (v, t) = check_apply_body(&body, &ring, NOW, &opts).unwrap();
        assert_eq!((v.manifest.sequence, t.kind), (6, Kind::Release));
        assert_eq!((t.version.as_str(), t.git_sha.len()), ("v1.6.0", 40));
        assert_eq!(t.manifest_sha256, hex::encode(Sha256::digest(&body)));

        let order = |return_to_code_hash: Option<String>| Manifest {
            kind: ManifestKind::Rollback,
            version: "v1.5.0".into(),
            rollback_of: Some(RollbackOf {
                sequence: 6,
                version: "v1.6.0".into(),
                code_hash: Some("c".repeat(64)),
            }),
            return_to_version: Some("v1.5.0".into()),
            return_to_code_hash,
            ..release(7)
        };
        let body = sign_manifest(&order(Some("b".repeat(64))), &[&key]).unwrap();
        let (_, t) = check_apply_body(&body, &ring, NOW, &opts).unwrap();
        assert_eq!((t.kind, t.code_hash), (Kind::Rollback, "b".repeat(64)));
        assert_eq!(t.revokes.map(|r| r.sequence), Some(6));
        let body = sign_manifest(&order(None), &[&key]).unwrap();
        assert!(matches!(
            check_apply_body(&body, &ring, NOW, &opts),
            Err(ApplyError::BadRollback { sequence: 7, .. })
        ));

        let no_commit = Manifest {
            git_sha: String::new(),
            ..release(8)
        };
        let body = sign_manifest(&no_commit, &[&key]).unwrap();
        assert!(matches!(
            check_apply_body(&body, &ring, NOW, &opts),
            Err(ApplyError::Verify(VerifyError::Malformed { .. }))
        ));
        let other = SigningKey::from_seed(&[9; 32]);
        let body = sign_manifest(&release(9), &[&other]).unwrap();
        assert!(matches!(
            check_apply_body(&body, &ring, NOW, &opts),
            Err(ApplyError::Verify(_))
        ));
    }
}
