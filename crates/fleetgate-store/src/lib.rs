//! fleetgate-store: the durable, crash-safe home of the pipeline state.
//!
//! Where it sits: between the pure core (which decides) and the runtime (which acts).
//! It owns the state directory: `upgrade_state.json`, the record of completed releases
//! `releases.json`, the orchestrator lock, the short transaction lock, quarantined
//! corrupt files, and the archive of finished runs.
//!
//! Invariants:
//! - Every write is atomic and durable: temp file in the same directory, fsync, rename,
//!   fsync of the directory. A reader sees the old file or the new one, never a mix.
//! - One orchestrator at a time: [`StateDir::lock_orchestrator`] takes an exclusive,
//!   non-blocking lock; a second gets [`StoreError::Locked`] naming the holder.
//! - Read-modify-write goes through [`StateDir::transact`], under a short exclusive lock,
//!   so a `rollback` from another process and a finishing gate never lose each other's
//!   write (the compare-and-swap on the run epoch happens inside).
//! - A corrupt file is never reset to idle: it is moved aside (`*.corrupt-<unix>`) and
//!   reported as [`StoreError::Corrupt`]; later `status` calls list it.
//! - A file with a newer `schema_version` than this build knows is refused, untouched.
//! - A file without `schema_version` is HART's state file: it is adopted (mapped to
//!   fleetgate's state, see [`hart`]), its original kept as `upgrade_state.json.hart-orig`
//!   before anything else is written; the next state write upgrades the file in place.
//! - The record of completed releases (`last_completed`, a bounded history of completed
//!   releases, the highest manifest sequence ever used) lives in `releases.json` as well as
//!   in the state, so a quarantined state file costs the run, not the release history. It
//!   is written before the state file (it can only be ahead of it), its `last_sequence`
//!   never goes down, and [`StateDir::load`] merges it into the state it returns (see
//!   [`ReleaseRecord::merged_with`]).
//!
//! Test hook: `FLEETGATE_TEST_CRASH_AT=before-write:N|after-write:N` makes the process
//! SIGKILL itself around its N-th state write (1-based); [`kill_point`] names points
//! outside the store. It exists so the crash-safety
//! test can kill a real orchestrator at every transition; it can only lose progress,
//! never skip a check.
//!
//! Testing: `cargo nextest run -p fleetgate-store`.

pub mod hart;
mod releases;
pub mod shared;

pub use hart::{ADOPTED_REASON_PREFIX, HART_ORIGINAL_SUFFIX, adoption_warning};
pub use releases::{RELEASE_HISTORY_LIMIT, RELEASES_FILE, RELEASES_SCHEMA_VERSION, ReleaseRecord};
pub use shared::{SharedError, SharedStore};

use fleetgate_core::{PipelineState, SCHEMA_VERSION};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The state file name inside the state directory.
pub const STATE_FILE: &str = "upgrade_state.json";
/// Largest state file accepted, and written: a state file is a few KiB for a small fleet
/// and grows ~200 bytes per node a run sends the release to (CANARY and DEPLOY track each
/// delivery: 16 MB measured at 100,000 nodes, written compact); this bounds a bad file. A state that would not fit
/// is refused before it is written ([`StoreError::TooLarge`]), never written and then
/// quarantined on the next read.
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Plain I/O failure on a path.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The state would be larger than [`MAX_STATE_BYTES`]: not written (it could not be
    /// read back).
    #[error(
        "the state would be {len} bytes, over the {MAX_STATE_BYTES} byte limit of a state file: not written (a run over this many nodes needs a smaller fleet per run, e.g. channels)"
    )]
    TooLarge {
        /// Its size.
        len: u64,
    },
    /// Another orchestrator holds the lock.
    #[error(
        "another fleetgate orchestrator is already running on state directory {dir} ({holder}); stop it first, or use a different state_dir"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// What the lock file says about the holder.
        holder: String,
    },
    /// A file of the state directory (the state file or `releases.json`) could not be
    /// parsed; it has been moved aside.
    #[error(
        "the {what} {path} is corrupt ({reason}); it was moved aside to {moved_to} and nothing was reset — {note}"
    )]
    Corrupt {
        /// Which file: `state file` or `record of completed releases`.
        what: &'static str,
        /// The original path.
        path: PathBuf,
        /// Where it now is.
        moved_to: PathBuf,
        /// Parser message.
        reason: String,
        /// What was kept and what to do.
        note: String,
    },
    /// The state file was written by a newer fleetgate.
    #[error(
        "the state file {path} has schema_version {found}, newer than this fleetgate understands ({supported}); upgrade fleetgate — the file was left untouched"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u64,
        /// Ours.
        supported: u32,
    },
    /// Serialisation failed (should not happen for well-formed state).
    #[error("failed to serialise the state: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The shared store of the run's state (`[state] store = "postgres"`) refused or
    /// failed; nothing was changed there.
    #[error("the shared run state: {0}")]
    Shared(#[from] SharedError),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    shared: Option<shared::Shared>,
}

/// Held for the life of an orchestrator process; dropping it releases the lock.
#[derive(Debug)]
pub struct OrchestratorLock {
    _file: File,
}

static WRITES: AtomicU32 = AtomicU32::new(0);

/// Test hook: `FLEETGATE_TEST_CRASH_AT=<name>` makes the process SIGKILL itself when it
/// reaches the named point (`canary-sent`, `deploy-sent`, `rollback-sent`: after a
/// manifest was sent to nodes and before their answers were recorded).
pub fn kill_point(name: &str) {
    if std::env::var("FLEETGATE_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

fn crash_point(phase: &str) {
    let Ok(spec) = std::env::var("FLEETGATE_TEST_CRASH_AT") else {
        return;
    };
    let Some((p, n)) = spec.split_once(':') else {
        return;
    };
    let Ok(n) = n.trim().parse::<u32>() else {
        return;
    };
    if p == phase && WRITES.load(Ordering::SeqCst) == n {
        // Flush nothing, clean up nothing: this is a power cut.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Write `bytes` to `path` atomically and durably: temp file beside it, fsync, rename,
/// fsync of the directory. `mode` sets the file's permission bits (e.g. 0o600).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode.unwrap_or(0o644));
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl StateDir {
    /// Open (creating if needed) a state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create state directory", &dir))?;
        Ok(StateDir { dir, shared: None })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/upgrade_state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Take the exclusive orchestrator lock, or fail at once naming the holder.
    pub fn lock_orchestrator(&self) -> Result<OrchestratorLock, StoreError> {
        let path = self.dir.join("orchestrator.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(StoreError::Locked {
                    dir: self.dir.clone(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.chars().take(200).collect()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let note = format!("pid {} on {}", std::process::id(), host.trim());
        file.set_len(0)
            .map_err(io_err("truncate lock file", &path))?;
        file.write_all(note.as_bytes())
            .map_err(io_err("write lock file", &path))?;
        Ok(OrchestratorLock { _file: file })
    }

    /// `<dir>/releases.json`.
    pub fn releases_path(&self) -> PathBuf {
        self.dir.join(RELEASES_FILE)
    }

    /// Load the state: idle if there is no file yet; a corrupt file is moved aside and
    /// reported; a newer schema is refused. The record of completed releases
    /// (`releases.json`) is merged in: an idle state after a lost or quarantined state
    /// file still carries `last_completed` and `last_sequence`. A corrupt `releases.json`
    /// is moved aside and reported the same way (the next write rebuilds it from the state).
    ///
    /// With a shared store, the shared copy is pulled first (see [`shared`]); when it
    /// cannot be reached, the local mirror is read and [`StateDir::mirror_note`] says so.
    pub fn load(&self) -> Result<PipelineState, StoreError> {
        self.pull_for_read()?;
        self.load_local()
    }

    fn load_local(&self) -> Result<PipelineState, StoreError> {
        let record = self.releases()?;
        let mut state = self.load_state_file(&record)?;
        let merged = record.merged_with(&state);
        state.last_completed = merged.last_completed;
        state.last_sequence = merged.last_sequence;
        Ok(state)
    }

    /// The record of completed releases as it is on disk (empty when there is none yet).
    /// A corrupt file is moved aside and reported; a newer schema is refused.
    pub fn releases(&self) -> Result<ReleaseRecord, StoreError> {
        let path = self.releases_path();
        let bytes = match read_bounded(&path)? {
            Read::Missing => return Ok(ReleaseRecord::default()),
            Read::TooBig(len) => {
                return self.quarantine_releases(&path, too_big(len));
            }
            Read::Bytes(b) => b,
        };
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return self.quarantine_releases(&path, format!("not JSON: {e}")),
        };
        let found = value
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(1);
        if found > u64::from(RELEASES_SCHEMA_VERSION) {
            return Err(StoreError::TooNew {
                path,
                found,
                supported: RELEASES_SCHEMA_VERSION,
            });
        }
        match serde_json::from_value::<ReleaseRecord>(value) {
            Ok(mut r) => {
                r.schema_version = RELEASES_SCHEMA_VERSION;
                Ok(r)
            }
            Err(e) => self.quarantine_releases(
                &path,
                format!("not a fleetgate record of completed releases: {e}"),
            ),
        }
    }

    fn load_state_file(&self, record: &ReleaseRecord) -> Result<PipelineState, StoreError> {
        let path = self.state_path();
        let bytes = match read_bounded(&path)? {
            Read::Missing => return Ok(PipelineState::idle()),
            Read::TooBig(len) => return self.quarantine_state(&path, too_big(len), record),
            Read::Bytes(b) => b,
        };
        // The document is parsed straight into the state: a `serde_json::Value` tree of a
        // large fleet's state (tens of MB of JSON) would take several times that in memory.
        // The usual case is one parse: a document that is a state of this schema or an
        // older one (`schema_version` is a required field, so a HART file never parses
        // here). Anything else takes the slow path below, which says what it is.
        if let Ok(mut s) = serde_json::from_slice::<PipelineState>(&bytes) {
            if s.schema_version > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    path,
                    found: u64::from(s.schema_version),
                    supported: SCHEMA_VERSION,
                });
            }
            s.schema_version = SCHEMA_VERSION;
            return Ok(s);
        }
        // A probe reads the one field that decides how (skipping the rest unallocated).
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            return self.quarantine_state(&path, format!("not JSON: {e}"), record);
        }
        let probe = serde_json::from_slice::<Probe>(&bytes).unwrap_or_default();
        if probe.object && probe.schema_version.is_none() {
            let value: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return self.quarantine_state(&path, format!("not JSON: {e}"), record),
            };
            if hart::is_hart(&value) {
                return self.adopt_hart(&path, &bytes, value, record);
            }
        }
        let found = probe.schema_version.and_then(|v| v.as_u64()).unwrap_or(1);
        if found > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        match serde_json::from_slice::<PipelineState>(&bytes) {
            Ok(mut s) => {
                s.schema_version = SCHEMA_VERSION;
                Ok(s)
            }
            Err(e) => self.quarantine_state(&path, format!("not a fleetgate state: {e}"), record),
        }
    }

    /// `<dir>/upgrade_state.json.hart-orig`: the HART state file as it was when fleetgate
    /// adopted it.
    pub fn hart_original_path(&self) -> PathBuf {
        self.dir
            .join(format!("{STATE_FILE}.{HART_ORIGINAL_SUFFIX}"))
    }

    fn adopt_hart(
        &self,
        path: &Path,
        bytes: &[u8],
        value: serde_json::Value,
        record: &ReleaseRecord,
    ) -> Result<PipelineState, StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let state = match hart::adopt(value, now) {
            Ok(s) => s,
            Err(e) => {
                return self.quarantine_state(
                    path,
                    format!("a HART state file (no schema_version) that cannot be mapped: {e}"),
                    record,
                );
            }
        };
        // Keep the original before any write can replace it. An earlier adoption's copy is
        // never overwritten: a different original goes beside it with a timestamp.
        let orig = self.hart_original_path();
        let keep = match fs::read(&orig) {
            Ok(existing) if existing == bytes => None,
            Ok(_) => Some(self.dir.join(format!(
                "{STATE_FILE}.{HART_ORIGINAL_SUFFIX}-{}",
                now as u64
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(orig),
            Err(e) => return Err(io_err("read", &orig)(e)),
        };
        if let Some(keep) = keep {
            write_atomic(&keep, bytes, None).map_err(io_err("keep the HART original", &keep))?;
            tracing::warn!(path = %path.display(), original = %keep.display(), stage = %state.stage, "adopted a HART state file; the next write upgrades it to fleetgate's format");
        }
        Ok(state)
    }

    fn quarantine_state<T>(
        &self,
        path: &Path,
        reason: String,
        record: &ReleaseRecord,
    ) -> Result<T, StoreError> {
        let kept = match &record.last_completed {
            Some(c) => format!(
                "the record of completed releases in {RELEASES_FILE} was kept (last completed {} from run {}, {} release(s) in its history, last manifest sequence {}): the next run compares against {} and a rollback returns to it",
                c.version,
                c.run_id,
                record.history.len(),
                record.last_sequence,
                c.version
            ),
            None if record.last_sequence > 0 => format!(
                "{RELEASES_FILE} was kept (no completed release yet, last manifest sequence {})",
                record.last_sequence
            ),
            None => format!(
                "there is no record of a completed release in {RELEASES_FILE}, so the next run starts without a baseline"
            ),
        };
        self.quarantine(
            path,
            STATE_FILE,
            "state file",
            reason,
            format!(
                "the run in it is lost; inspect it, then restore it or start a new run; {kept}"
            ),
        )
    }

    fn quarantine_releases<T>(&self, path: &Path, reason: String) -> Result<T, StoreError> {
        self.quarantine(
            path,
            RELEASES_FILE,
            "record of completed releases",
            reason,
            format!(
                "inspect it; the state file's last completed release and manifest sequence are kept and {RELEASES_FILE} is rewritten from them on the next state write (the older history in the moved file is not restored)"
            ),
        )
    }

    fn quarantine<T>(
        &self,
        path: &Path,
        name: &str,
        what: &'static str,
        reason: String,
        note: String,
    ) -> Result<T, StoreError> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut moved_to = self.dir.join(format!("{name}.corrupt-{secs}"));
        let mut n = 1;
        while moved_to.exists() {
            moved_to = self.dir.join(format!("{name}.corrupt-{secs}-{n}"));
            n += 1;
        }
        fs::rename(path, &moved_to).map_err(io_err("move aside corrupt file", path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        tracing::error!(path = %path.display(), moved_to = %moved_to.display(), %reason, "corrupt {what} moved aside");
        Err(StoreError::Corrupt {
            what,
            path: path.to_owned(),
            moved_to,
            reason,
            note,
        })
    }

    /// Corrupt files (state file, `releases.json`) that were moved aside and are still
    /// there (for `status`).
    pub fn quarantined(&self) -> Vec<PathBuf> {
        let prefixes = [
            format!("{STATE_FILE}.corrupt-"),
            format!("{RELEASES_FILE}.corrupt-"),
        ];
        let mut v: Vec<PathBuf> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                prefixes.iter().any(|p| name.starts_with(p.as_str()))
            })
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    /// Write the state atomically and durably. When the state's record of completed
    /// releases (`last_completed`, `last_sequence`) is ahead of `releases.json`, that file
    /// is written first, so it is never behind the state file.
    pub fn save(&self, state: &PipelineState) -> Result<(), StoreError> {
        let bytes = document(state)?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(StoreError::TooLarge {
                len: bytes.len() as u64,
            });
        }
        let path = self.state_path();
        WRITES.fetch_add(1, Ordering::SeqCst);
        self.save_releases(state)?;
        // A kill here is a crash between the two writes: `releases.json` ahead of the state.
        crash_point("before-write");
        write_atomic(&path, &bytes, None).map_err(io_err("write", &path))?;
        crash_point("after-write");
        self.push(&bytes)?;
        Ok(())
    }

    fn save_releases(&self, state: &PipelineState) -> Result<(), StoreError> {
        let on_disk = self.releases()?;
        let merged = on_disk.merged_with(state);
        if merged == on_disk {
            return Ok(());
        }
        let mut bytes = serde_json::to_vec_pretty(&merged)?;
        bytes.push(b'\n');
        let path = self.releases_path();
        write_atomic(&path, &bytes, None).map_err(io_err("write", &path))
    }

    /// Read-modify-write under the short transaction lock. `f` sees the freshest state
    /// on disk; if it returns `Ok`, the (possibly changed) state is saved when it differs.
    pub fn transact<R, E>(
        &self,
        f: impl FnOnce(&mut PipelineState) -> Result<R, E>,
    ) -> Result<R, TransactError<E>> {
        self.transact_reporting(|state| {
            let before = state.clone();
            let r = f(state)?;
            let changed = *state != before;
            Ok((r, changed))
        })
    }

    /// [`StateDir::transact`] for a change that knows whether it changed the state (`f`
    /// returns it beside its result): no copy of the whole state is made to find out,
    /// which matters when a large fleet's state is tens of megabytes. Saved only when `f`
    /// returns `Ok` with `true`.
    pub fn transact_reporting<R, E>(
        &self,
        f: impl FnOnce(&mut PipelineState) -> Result<(R, bool), E>,
    ) -> Result<R, TransactError<E>> {
        self.transact_returning(f).map(|(r, _)| r)
    }

    /// [`StateDir::transact_reporting`] that returns the state as written (or as read,
    /// when `f` changed nothing): the caller gets it without a copy.
    pub fn transact_returning<R, E>(
        &self,
        f: impl FnOnce(&mut PipelineState) -> Result<(R, bool), E>,
    ) -> Result<(R, PipelineState), TransactError<E>> {
        let path = self.dir.join("state.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TransactError::Store(io_err("open lock file", &path)(e)))?;
        file.lock()
            .map_err(|e| TransactError::Store(io_err("lock", &path)(e)))?;
        // With a shared store: its copy, strictly (a write must start from it).
        self.pull().map_err(TransactError::Store)?;
        let mut state = self.load_local().map_err(TransactError::Store)?;
        let (r, changed) = f(&mut state).map_err(TransactError::Rejected)?;
        if changed {
            self.save(&state).map_err(TransactError::Store)?;
        }
        drop(file);
        Ok((r, state))
    }

    /// Keep a copy of a finished run under `runs/<run_id>.json` (history is never lost).
    pub fn archive_run(&self, state: &PipelineState) -> Result<PathBuf, StoreError> {
        let dir = self.dir.join("runs");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let id = state.run_id.clone().unwrap_or_else(|| "unknown".into());
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}.json"));
        {
            // Let go of the document before the state file is read for the shared store
            // (a large fleet's state is tens of MB).
            let bytes = document(state)?;
            write_atomic(&path, &bytes, None).map_err(io_err("write", &path))?;
        }
        if self.shared.is_some() {
            // The archive goes to the shared store with the state as it stands.
            let doc = fs::read(self.state_path()).map_err(io_err("read", &self.state_path()))?;
            self.push(&doc)?;
        }
        Ok(path)
    }
}

/// States up to this size are written indented, for a reader at a terminal; larger ones
/// (a fleet's per-node deliveries) compact: a third smaller, and every copy of the
/// document on its way to the disk and the shared store is that much smaller.
pub const PRETTY_UP_TO: usize = 1024 * 1024;

/// The state document's bytes (JSON and a newline), indented up to [`PRETTY_UP_TO`].
fn document(state: &PipelineState) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = serde_json::to_vec(state)?;
    if bytes.len() <= PRETTY_UP_TO {
        bytes = serde_json::to_vec_pretty(state)?;
    }
    bytes.push(b'\n');
    Ok(bytes)
}

/// What [`StateDir::load_state_file`] reads of a state document before parsing it whole:
/// whether it is an object and its `schema_version` (`Some(Null)` when present as null;
/// HART's files have none).
#[derive(Debug, Default)]
struct Probe {
    object: bool,
    schema_version: Option<serde_json::Value>,
}

impl<'de> serde::Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Probe, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Probe;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Probe, A::Error> {
                let mut probe = Probe {
                    object: true,
                    schema_version: None,
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "schema_version" {
                        probe.schema_version = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(probe)
            }
        }
        d.deserialize_map(Visit)
    }
}

enum Read {
    Missing,
    TooBig(TooBig),
    Bytes(Vec<u8>),
}

/// How much of an oversized file was seen.
enum TooBig {
    /// The file system's size of a regular file.
    Len(u64),
    /// A file whose size was not told (a device, a FIFO) or that grew while it was read:
    /// only the limit and one byte more were read.
    Endless,
}

/// The file at `path`, read whole if it holds at most [`MAX_STATE_BYTES`]. What is read
/// is bounded, not only the size a `stat` gives (as `fleetgate_trust::fsutil::read_capped`,
/// which this crate does not depend on): a file can grow between the two, and a device
/// or FIFO (a symlink to `/dev/zero`, say) has no size at all.
fn read_bounded(path: &Path) -> Result<Read, StoreError> {
    use std::io::Read as _;
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e) => return Err(io_err("open", path)(e)),
        Ok(f) => f,
    };
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len > MAX_STATE_BYTES {
        return Ok(Read::TooBig(TooBig::Len(len)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Ok(Read::TooBig(TooBig::Endless));
    }
    Ok(Read::Bytes(bytes))
}

fn too_big(seen: TooBig) -> String {
    match seen {
        TooBig::Len(len) => format!("{len} bytes, over the {MAX_STATE_BYTES} byte limit"),
        TooBig::Endless => format!(
            "more than {MAX_STATE_BYTES} bytes (read up to the limit; the file system gave no size, or the file grew while it was read), over the {MAX_STATE_BYTES} byte limit"
        ),
    }
}

/// A failed [`StateDir::transact`].
#[derive(Debug, thiserror::Error)]
pub enum TransactError<E> {
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The closure refused; nothing was written.
    #[error(transparent)]
    Rejected(E),
}
