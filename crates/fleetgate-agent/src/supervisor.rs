//! Supervision of the application process.
//!
//! The app runs as `sh -c <start>` in its slot directory, in its **own process group**
//! (so a stop reaches every process it forked). The supervisor restarts it when it exits
//! (backoff 200 ms doubling to 5 s) and counts the exits, from which the apply runtime
//! judges a crash loop. A stop sends SIGTERM to the group, waits up to `drain_secs`, then
//! sends SIGKILL to the group.
//!
//! `<state_dir>/app.pid` records the group id and the kernel start time of the running
//! app. An agent that was killed leaves its app running; the next agent reads the file
//! and stops that process group first (only if the pid still names the same process —
//! the start time guards against a recycled pid), so two versions never run at once.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// Slot directory (working directory).
    pub dir: PathBuf,
    /// Slot name (`FLEETGATE_SLOT`).
    pub slot: String,
    /// Version (`FLEETGATE_VERSION`).
    pub version: String,
    /// Code hash (`FLEETGATE_CODE_HASH`).
    pub code_hash: String,
    /// Shell command.
    pub command: String,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
}

impl AppSpec {
    /// The environment given to the app, its install step and health command.
    #[must_use]
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.push(("FLEETGATE_SLOT".into(), self.slot.clone()));
        v.push((
            "FLEETGATE_SLOT_DIR".into(),
            self.dir.to_string_lossy().into_owned(),
        ));
        v.push(("FLEETGATE_VERSION".into(), self.version.clone()));
        v.push(("FLEETGATE_CODE_HASH".into(), self.code_hash.clone()));
        v
    }
}

/// Why the app could not be started.
#[derive(Debug, thiserror::Error)]
#[error("failed to start the app from slot {slot} (`sh -c {command:?}` in {}): {source}", dir.display())]
pub struct StartError {
    /// Slot.
    pub slot: String,
    /// Command.
    pub command: String,
    /// Directory.
    pub dir: PathBuf,
    /// OS error.
    pub source: std::io::Error,
}

#[derive(Debug, Serialize, Deserialize)]
struct PidFile {
    pid: i32,
    start_ticks: u64,
    slot: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped on every start/stop; a supervision loop exits when it is stale.
    generation: u64,
    spec: Option<AppSpec>,
    /// Running child: pid (= process group id).
    running: Option<i32>,
    /// Exit times of the current generation.
    exits: Vec<Instant>,
}

/// The app supervisor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Mutex<Inner>>,
    pidfile: PathBuf,
    drain: Duration,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kernel start time of a process (field 22 of `/proc/<pid>/stat`), if it exists.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether any non-zombie process is in process group `pgid` (scans `/proc`, so a
/// zombie left for a reaper that is slow does not count as running).
fn group_alive(pgid: i32) -> bool {
    if killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(i) = stat.rfind(')') else {
            return false;
        };
        let mut f = stat[i + 1..].split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|x| x.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

impl Supervisor {
    /// A supervisor recording the app at `pidfile`, draining for `drain`.
    #[must_use]
    pub fn new(pidfile: PathBuf, drain: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            pidfile,
            drain,
        }
    }

    /// Starts (and then supervises) the app. Any app already running must have been
    /// stopped with [`Self::stop`] first.
    ///
    /// # Errors
    /// [`StartError`] when `sh` cannot be spawned.
    pub fn start(&self, spec: AppSpec) -> Result<(), StartError> {
        let (generation, child) = {
            let mut g = lock(&self.inner);
            g.generation += 1;
            g.exits.clear();
            let child = self.spawn(&spec)?;
            g.spec = Some(spec.clone());
            g.running = Some(child.0);
            (g.generation, child)
        };
        let this = self.clone();
        tokio::spawn(async move { this.supervise(generation, spec, child).await });
        Ok(())
    }

    fn spawn(&self, spec: &AppSpec) -> Result<(i32, tokio::process::Child), StartError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&spec.command)
            .current_dir(&spec.dir)
            .envs(spec.environment())
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| StartError {
            slot: spec.slot.clone(),
            command: spec.command.clone(),
            dir: spec.dir.clone(),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default();
        let rec = PidFile {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            slot: spec.slot.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&rec)
            && let Err(e) = crate::write_atomic(&self.pidfile, &bytes, 0o644)
        {
            tracing::warn!(error = %e, path = %self.pidfile.display(), "failed to record the app pid");
        }
        tracing::info!(pid, slot = %spec.slot, version = %spec.version, "app started");
        Ok((pid, child))
    }

    async fn supervise(self, generation: u64, spec: AppSpec, first: (i32, tokio::process::Child)) {
        let mut current = first;
        let mut backoff = Duration::from_millis(200);
        loop {
            let (pid, mut child) = current;
            let status = child.wait().await;
            tracing::warn!(pid, slot = %spec.slot, ?status, "app exited");
            {
                let mut g = lock(&self.inner);
                if g.running == Some(pid) {
                    g.running = None;
                }
                if g.generation != generation {
                    return;
                }
                g.exits.push(Instant::now());
            }
            // Reap any process the app left in its group.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let mut g = lock(&self.inner);
            if g.generation != generation {
                return;
            }
            match self.spawn(&spec) {
                Ok(c) => {
                    g.running = Some(c.0);
                    current = c;
                }
                Err(e) => {
                    tracing::error!(error = %e, "restarting the app failed; giving up on this slot");
                    return;
                }
            }
        }
    }

    /// Exits of the app since the last [`Self::start`].
    #[must_use]
    pub fn exits(&self) -> usize {
        lock(&self.inner).exits.len()
    }

    /// The running app's spec, if one is supervised.
    #[must_use]
    pub fn spec(&self) -> Option<AppSpec> {
        lock(&self.inner).spec.clone()
    }

    /// Whether a process of the app is alive right now.
    #[must_use]
    pub fn alive(&self) -> bool {
        lock(&self.inner).running.is_some_and(group_alive)
    }

    /// Stops the supervised app and any stray app recorded in the pid file by an earlier
    /// agent process: SIGTERM to the process group, wait up to the drain deadline,
    /// SIGKILL to the group.
    pub async fn stop(&self) {
        let running = {
            let mut g = lock(&self.inner);
            g.generation += 1;
            g.spec = None;
            g.running.take()
        };
        let mut groups: Vec<i32> = running.into_iter().collect();
        if let Some(stray) = self.stray()
            && !groups.contains(&stray)
        {
            tracing::warn!(
                pgid = stray,
                "stopping an app left running by an earlier agent"
            );
            groups.push(stray);
        }
        for pgid in groups {
            stop_group(pgid, self.drain).await;
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }

    /// The process group recorded in the pid file, if it still names the same process.
    fn stray(&self) -> Option<i32> {
        let bytes = match fleetgate_trust::fsutil::read_capped(&self.pidfile, 4096).ok()? {
            fleetgate_trust::fsutil::Limited::Bytes(b) => b,
            fleetgate_trust::fsutil::Limited::TooBig(_) => return None,
        };
        let rec: PidFile = serde_json::from_slice(&bytes).ok()?;
        if rec.pid <= 1 {
            return None;
        }
        match start_ticks(rec.pid) {
            Some(t) if t == rec.start_ticks => Some(rec.pid),
            // The pid now names another process: not ours.
            Some(_) => None,
            // The leader is gone; other members of its group may remain.
            None => group_alive(rec.pid).then_some(rec.pid),
        }
    }

    /// The pid file's path.
    #[must_use]
    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }
}

async fn stop_group(pgid: i32, drain: Duration) {
    let pg = Pid::from_raw(pgid);
    if killpg(pg, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(
        pgid,
        "app did not stop within the drain deadline; killing its group"
    );
    let _ = killpg(pg, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && group_alive(pgid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
