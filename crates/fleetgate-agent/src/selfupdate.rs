//! Self-update of the agent, opt-in (`self_update = true`; off by default).
//!
//! A manifest of kind `agent` carries a new agent build as its one artifact. The agent
//! verifies it like any manifest (keyring, expiry; its sequence against earlier agent
//! updates, never the release floor), downloads the binary from `artifacts_url` into
//! `<state_dir>/agent-bin/<sha256>` (size and digest checked), keeps the binary it runs,
//! writes [`UpdateRecord`] (`agent_update.json`, atomically) in state `trying`, stops, and
//! execs the new build with the same arguments. What happens next is decided at every
//! start by [`on_start`], from the record and the binary that starts:
//!
//! | record | the starting binary | then |
//! |---|---|---|
//! | none / `reverted` | any | run |
//! | `trying` | the new build | run, and confirm within `self_update_grace_secs` ([`confirm`]) or return to the old binary |
//! | `trying` | another (the service manager restarted the old one: the new build died) | `reverted`, run |
//! | `confirmed` | another (a restart from the service's fixed path) | exec the new build (digest checked) |
//! | `confirmed` | the new build | run |
//!
//! So a build that crashes, hangs in start-up or never gets its app healthy is undone
//! without anyone's help: by the confirmation deadline, or — when it died — by the old
//! binary the service manager (systemd `Restart=always`) starts again. A build that hangs
//! before it can even watch its own deadline is ended by the watchdog ([`watch`]) the old
//! binary starts beside it (standalone `fleetgate-agent` only), and then undone the same way. An update that was
//! reverted is never tried again; a newer one may be.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The record's file name under the state directory.
pub const RECORD_FILE: &str = "agent_update.json";
/// Where agent builds are kept, by SHA-256, under the state directory.
pub const BIN_DIR: &str = "agent-bin";

/// Where an agent update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// The new build was exec'd and has not confirmed itself yet.
    Trying,
    /// The new build confirmed itself: it is the agent from now on.
    Confirmed,
    /// The new build did not confirm itself; the old binary runs.
    Reverted,
}

/// The last agent update (`<state_dir>/agent_update.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRecord {
    /// The update manifest's sequence; agent updates at or below it are refused.
    pub sequence: u64,
    /// The new build's version (from the manifest).
    pub version: String,
    /// The new build's SHA-256.
    pub sha256: String,
    /// The new build (`<state_dir>/agent-bin/<sha256>`).
    pub binary: PathBuf,
    /// The binary that staged it (returned to on a revert).
    pub previous: PathBuf,
    /// Where it stands.
    pub state: UpdateState,
    /// Times the new build was exec'd before confirming.
    pub tries: u32,
    /// When it was staged (unix seconds).
    pub staged_at: u64,
    /// What happened last, for `GET /status`.
    pub detail: String,
    /// The watchdog process ([`watch`]) started with the new build, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_pid: Option<u32>,
}

/// What a starting agent does ([`on_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// Run as usual.
    Run,
    /// Exec this binary instead (with the same arguments).
    Exec(PathBuf),
    /// Run, then [`confirm`] this update.
    Confirm(UpdateRecord),
}

/// Where a damaged record is moved by [`on_start`], under the state directory. While it
/// is there agent updates are refused: the last update's sequence is unknown, so a build
/// that was reverted could be offered again. An operator checks it and removes it.
pub const DAMAGED_FILE: &str = "agent_update.json.damaged";

/// How the record reads.
#[derive(Debug)]
pub enum Record {
    /// No update was ever staged.
    Missing,
    /// The record.
    Good(UpdateRecord),
    /// The file is there but does not parse (what the parser said, with the path).
    Damaged(String),
}

/// Reads the record.
///
/// # Errors
/// The file exists but cannot be read (named).
pub fn read(state_dir: &Path) -> Result<Record, String> {
    let path = state_dir.join(RECORD_FILE);
    // A few hundred bytes when written by the agent; read at most 1 MiB of whatever is there.
    match fleetgate_trust::fsutil::read_capped(&path, 1 << 20) {
        Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => Ok(match serde_json::from_slice(&b) {
            Ok(rec) => Record::Good(rec),
            Err(e) => Record::Damaged(format!("{}: {e}", path.display())),
        }),
        Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => Ok(Record::Damaged(format!(
            "{}: {}, more than the 1 MiB a record may hold",
            path.display(),
            fleetgate_trust::fsutil::Oversize(size)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::Missing),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The record, if an update was ever staged.
///
/// # Errors
/// The file cannot be read or parsed (named).
pub fn load(state_dir: &Path) -> Result<Option<UpdateRecord>, String> {
    match read(state_dir)? {
        Record::Missing => Ok(None),
        Record::Good(rec) => Ok(Some(rec)),
        Record::Damaged(e) => Err(e),
    }
}

/// The damaged record [`on_start`] set aside, while it is there.
pub fn damaged(state_dir: &Path) -> Option<PathBuf> {
    let path = state_dir.join(DAMAGED_FILE);
    path.exists().then_some(path)
}

/// Writes the record atomically.
///
/// # Errors
/// The write failed (named).
pub fn save(state_dir: &Path, rec: &UpdateRecord) -> Result<(), String> {
    let path = state_dir.join(RECORD_FILE);
    let bytes = serde_json::to_vec_pretty(rec).map_err(|e| e.to_string())?;
    crate::write_atomic(&path, &bytes, 0o644).map_err(|e| format!("{}: {e}", path.display()))
}

/// SHA-256 of a file, hex.
///
/// # Errors
/// The file cannot be read.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    canon(a) == canon(b)
}

/// Decides what an agent started as `exe` does (see the table in the module docs),
/// updating the record first when the decision changes it. A record that does not parse
/// is moved to [`DAMAGED_FILE`] and the agent runs (a node is not kept down by it; agent
/// updates are refused until an operator removes that file).
///
/// # Errors
/// The record cannot be read, written or set aside.
pub fn on_start(state_dir: &Path, exe: &Path) -> Result<Startup, String> {
    let mut rec = match read(state_dir)? {
        Record::Missing => return Ok(Startup::Run),
        Record::Good(rec) => rec,
        Record::Damaged(e) => {
            let aside = state_dir.join(DAMAGED_FILE);
            std::fs::rename(state_dir.join(RECORD_FILE), &aside)
                .map_err(|io| format!("{e}; setting it aside as {}: {io}", aside.display()))?;
            tracing::error!(
                "the agent update record is damaged ({e}); set aside as {} and running {}: agent updates are refused until an operator checks that file and removes it",
                aside.display(),
                exe.display()
            );
            return Ok(Startup::Run);
        }
    };
    let is_new = same_file(exe, &rec.binary);
    match (rec.state, is_new) {
        (UpdateState::Reverted, _) | (UpdateState::Confirmed, true) => Ok(Startup::Run),
        (UpdateState::Trying, true) => Ok(Startup::Confirm(rec)),
        (UpdateState::Trying, false) if rec.tries >= 1 => {
            rec.state = UpdateState::Reverted;
            rec.detail = format!(
                "agent {} ({}) was started {} time(s) but never confirmed itself (it exited or the node restarted); back on {}",
                rec.version,
                short(&rec.sha256),
                rec.tries,
                exe.display()
            );
            tracing::warn!("{}", rec.detail);
            save(state_dir, &rec)?;
            Ok(Startup::Run)
        }
        (UpdateState::Trying | UpdateState::Confirmed, false) => {
            match file_sha256(&rec.binary) {
                Ok(sha) if sha == rec.sha256 => {}
                other => {
                    // The kept build is gone or altered: stay on this binary.
                    rec.state = UpdateState::Reverted;
                    rec.detail = format!(
                        "the kept agent build {} is missing or altered ({}); staying on {}",
                        rec.binary.display(),
                        match other {
                            Ok(sha) => format!("SHA-256 {}", short(&sha)),
                            Err(e) => e.to_string(),
                        },
                        exe.display()
                    );
                    tracing::error!("{}", rec.detail);
                    save(state_dir, &rec)?;
                    return Ok(Startup::Run);
                }
            }
            Ok(Startup::Exec(rec.binary.clone()))
        }
    }
}

/// Counts a try of the build being tried, when `binary` is that build: called once the
/// agent has stopped, just before it execs `binary` ([`crate::run_node_updating`]), so a
/// kill before that point (while the update is staged, or while the node shuts down)
/// leaves the try uncounted and the next start of the old binary tries the build
/// instead of reverting an update that never ran.
///
/// # Errors
/// The record cannot be read or written.
pub fn count_try(state_dir: &Path, binary: &Path) -> Result<(), String> {
    let Some(mut rec) = load(state_dir)? else {
        return Ok(());
    };
    if rec.state == UpdateState::Trying && same_file(binary, &rec.binary) {
        rec.tries += 1;
        save(state_dir, &rec)?;
    }
    Ok(())
}

/// Seconds the watchdog allows beyond the grace period before it ends a build that
/// neither confirmed itself nor returned to the old one.
pub const WATCHDOG_MARGIN_SECS: u64 = 10;

/// The watchdog of a new build that is being tried (the old binary runs it as
/// `fleetgate-agent --self-update-watchdog STATE_DIR PID SECS`, a process of its own):
/// while the record says `trying` and `pid` lives, it waits; when `limit` passes first —
/// the new build hangs before it could confirm itself or give up — it kills `pid`, so that
/// the service manager starts the old binary, which reverts the update. Returns once the
/// update is settled, the process is gone, or it was killed.
pub fn watch(state_dir: &Path, pid: u32, limit: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else { return };
    let target = Pid::from_raw(raw);
    let started = std::time::Instant::now();
    loop {
        let trying = matches!(load(state_dir), Ok(Some(r)) if r.state == UpdateState::Trying);
        if !trying || kill(target, None).is_err() {
            return;
        }
        if started.elapsed() >= limit {
            tracing::error!(
                pid,
                "the new agent build neither confirmed itself nor gave up in time; ending it"
            );
            let _ = kill(target, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reaps the watchdog (a child of this process since the exec) once it has seen the
/// update settled; gives up after a few seconds.
async fn reap(pid: Option<u32>) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Some(raw) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    for _ in 0..20 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(250)).await,
            _ => return,
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// Run by a new build on its first start: waits until the app it supervises (if one is
/// installed) is healthy, then marks the update confirmed. Returns the binary to go back
/// to when `grace` passes first (the record then says `reverted`).
pub async fn confirm(
    agent: &crate::Agent,
    mut rec: UpdateRecord,
    grace: Duration,
) -> Option<PathBuf> {
    let state_dir = agent.config().state_dir.clone();
    let started = tokio::time::Instant::now();
    loop {
        let installed = agent.journal().current.is_some();
        let probe = if installed {
            Some(agent.check_health().await)
        } else {
            None
        };
        if probe.as_ref().is_none_or(|p| p.healthy) {
            rec.state = UpdateState::Confirmed;
            rec.detail = format!(
                "agent {} ({}) confirmed itself after {} s{}",
                rec.version,
                short(&rec.sha256),
                started.elapsed().as_secs(),
                if installed {
                    " with the app healthy"
                } else {
                    " (no app installed)"
                }
            );
            tracing::info!("{}", rec.detail);
            if let Err(e) = save(&state_dir, &rec) {
                tracing::error!(error = %e, "the confirmed agent update was not recorded");
            }
            reap(rec.watchdog_pid).await;
            return None;
        }
        if started.elapsed() >= grace {
            rec.state = UpdateState::Reverted;
            rec.detail = format!(
                "agent {} ({}) did not get the app healthy within {} s ({}); back to {}",
                rec.version,
                short(&rec.sha256),
                grace.as_secs(),
                probe.map(|p| p.detail).unwrap_or_default(),
                rec.previous.display()
            );
            tracing::warn!("{}", rec.detail);
            if let Err(e) = save(&state_dir, &rec) {
                tracing::error!(error = %e, "the reverted agent update was not recorded");
            }
            reap(rec.watchdog_pid).await;
            return Some(rec.previous.clone());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path, state: UpdateState, tries: u32) -> UpdateRecord {
        let binary = dir.join("new-agent");
        std::fs::write(&binary, b"new build").unwrap();
        let rec = UpdateRecord {
            sequence: 9,
            version: "2.0.0".into(),
            sha256: file_sha256(&binary).unwrap(),
            binary,
            previous: dir.join("old-agent"),
            state,
            tries,
            staged_at: 1,
            detail: String::new(),
            watchdog_pid: None,
        };
        save(dir, &rec).unwrap();
        rec
    }

    #[test]
    fn each_start_is_decided_by_the_record_and_the_starting_binary() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = d.join("old-agent");
        std::fs::write(&old, b"old build").unwrap();
        assert_eq!(on_start(d, &old).unwrap(), Startup::Run);

        // Staged, not yet exec'd (killed in between, any number of times): the old
        // binary execs the new one; the try is counted just before the exec.
        let rec = record(d, UpdateState::Trying, 0);
        for _ in 0..2 {
            assert_eq!(
                on_start(d, &old).unwrap(),
                Startup::Exec(rec.binary.clone())
            );
            assert_eq!(load(d).unwrap().unwrap().tries, 0);
        }
        count_try(d, &old).unwrap();
        assert_eq!(
            load(d).unwrap().unwrap().tries,
            0,
            "not the build being tried"
        );
        count_try(d, &rec.binary).unwrap();
        assert_eq!(load(d).unwrap().unwrap().tries, 1);
        // The new build starts: it must confirm itself.
        assert!(matches!(
            on_start(d, &rec.binary).unwrap(),
            Startup::Confirm(_)
        ));
        // It died; the service manager starts the old binary again: reverted, for good.
        assert_eq!(on_start(d, &old).unwrap(), Startup::Run);
        let after = load(d).unwrap().unwrap();
        assert_eq!(after.state, UpdateState::Reverted);
        assert!(after.detail.contains("never confirmed"), "{}", after.detail);
        assert_eq!(on_start(d, &old).unwrap(), Startup::Run);
        assert_eq!(on_start(d, &rec.binary).unwrap(), Startup::Run);

        // Confirmed: a restart from the service's fixed path goes to the new build.
        let rec = record(d, UpdateState::Confirmed, 1);
        assert_eq!(
            on_start(d, &old).unwrap(),
            Startup::Exec(rec.binary.clone())
        );
        assert_eq!(on_start(d, &rec.binary).unwrap(), Startup::Run);
        // ... unless the kept build was altered: then the old binary stays.
        std::fs::write(&rec.binary, b"tampered").unwrap();
        assert_eq!(on_start(d, &old).unwrap(), Startup::Run);
        let after = load(d).unwrap().unwrap();
        assert_eq!(after.state, UpdateState::Reverted);
        assert!(
            after.detail.contains("missing or altered"),
            "{}",
            after.detail
        );
    }

    #[test]
    fn a_damaged_record_is_set_aside_and_the_agent_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains(RECORD_FILE), "{e}");
        assert_eq!(
            on_start(dir.path(), Path::new("/bin/true")).unwrap(),
            Startup::Run
        );
        // Kept for the operator, byte for byte; the next start finds no record.
        let aside = damaged(dir.path()).expect("set aside");
        assert_eq!(std::fs::read(&aside).unwrap(), b"{not json");
        assert!(!dir.path().join(RECORD_FILE).exists());
        assert_eq!(
            on_start(dir.path(), Path::new("/bin/true")).unwrap(),
            Startup::Run
        );
        assert!(damaged(dir.path()).is_some(), "still there until removed");
    }
}
