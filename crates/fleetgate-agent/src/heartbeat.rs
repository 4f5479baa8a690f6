//! Signed heartbeats to the orchestrator.
//!
//! Every `heartbeat_interval_secs` the agent runs the app's health check and POSTs to
//! `{orchestrator}/api/fleet/heartbeat` the envelope `fleetgate-fleet` accepts:
//! `{"payload": "<heartbeat JSON>", "signature": "<hex Ed25519 over the payload bytes>"}`,
//! signed with the node identity key. The payload is [`Heartbeat`] serialised as compact
//! JSON with its keys in sorted order — the wire format is `fleetgate-node-api`'s, the one
//! definition the registry parses too.
//!
//! Every heartbeat carries `(epoch, seq)`, strictly increasing across restarts: both are
//! persisted (`<state_dir>/heartbeat_seq.json`, atomic write) before a heartbeat is
//! sent. Each start of the agent bumps the epoch (and `seq` starts again at 1), and so
//! does a refusal as a replay: the registry's 409 names the last accepted
//! `(last_epoch, last_seq)` and the agent continues with epoch `last_epoch + 1`, seq 1.
//! So one signed heartbeat with an inflated `seq` (or a counter file restored from an
//! old backup) costs one refused heartbeat, not the node's place in the fleet; the bump
//! is signed like every heartbeat, and the registry still refuses any `(epoch, seq)` at
//! or below what it accepted.
//!
//! When the orchestrator is unreachable or refuses, the agent keeps going: the pause
//! doubles from the interval up to `heartbeat_max_backoff_secs`, and returns to the
//! interval after the first accepted heartbeat. Each attempt is a fresh heartbeat (new
//! `seq`, new `sent_at`); nothing is queued.

use crate::agent::Agent;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest orchestrator answer read (it is only logged).
const MAX_ANSWER_BYTES: usize = 16 * 1024;

pub use fleetgate_node_api::{HEARTBEAT_PATH, Heartbeat, SignedHeartbeat};

/// Heartbeat delivery figures (shown in `GET /status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeartbeatStats {
    /// Accepted by the orchestrator.
    pub sent: u64,
    /// Failed attempts (unreachable or refused).
    pub failed: u64,
    /// Consecutive failures right now.
    pub consecutive_failures: u64,
    /// Last seq sent.
    pub last_seq: u64,
    /// Epoch of the last seq sent.
    pub last_epoch: u64,
    /// Times the agent re-synced its epoch after a refusal as a replay.
    pub resyncs: u64,
    /// Last error.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeqFile {
    next: u64,
    /// Absent in files written before epochs: 0.
    #[serde(default)]
    epoch: u64,
}

/// The persisted heartbeat `(epoch, seq)`.
#[derive(Debug)]
pub struct SeqCounter {
    path: PathBuf,
    epoch: u64,
    next: u64,
}

impl SeqCounter {
    /// Opens `<state_dir>/heartbeat_seq.json` (missing: epoch 0; unreadable: error) and
    /// starts a new epoch (persisted before it is used), `seq` from 1.
    ///
    /// # Errors
    /// A message naming the file, or the write error.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join("heartbeat_seq.json");
        let stored = match fleetgate_trust::fsutil::read_capped(&path, 4096) {
            Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => serde_json::from_slice::<SeqFile>(&b)
                .map_err(|e| format!("heartbeat sequence file {}: {e}", path.display()))?,
            Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
                return Err(format!(
                    "heartbeat sequence file {} is too large: {}, more than 4096",
                    path.display(),
                    fleetgate_trust::fsutil::Oversize(size)
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SeqFile { next: 1, epoch: 0 },
            Err(e) => return Err(format!("heartbeat sequence file {}: {e}", path.display())),
        };
        let mut c = Self {
            path,
            epoch: stored.epoch,
            next: stored.next.max(1),
        };
        c.start_epoch(stored.epoch.saturating_add(1))?;
        Ok(c)
    }

    fn persist(&self, epoch: u64, next: u64) -> Result<(), String> {
        let bytes = serde_json::to_vec(&SeqFile { next, epoch }).unwrap_or_default();
        crate::write_atomic(&self.path, &bytes, 0o644)
            .map_err(|e| format!("write {}: {e}", self.path.display()))
    }

    fn start_epoch(&mut self, epoch: u64) -> Result<(), String> {
        self.persist(epoch, 1)?;
        self.epoch = epoch;
        self.next = 1;
        Ok(())
    }

    /// The current epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes the next `(epoch, seq)`, persisting the one after it first.
    ///
    /// # Errors
    /// The write error (the seq is then not used).
    pub fn take(&mut self) -> Result<(u64, u64), String> {
        let seq = self.next;
        self.persist(self.epoch, seq.saturating_add(1))?;
        self.next = seq.saturating_add(1);
        Ok((self.epoch, seq))
    }

    /// The registry refused a heartbeat as a replay and last accepted one of epoch
    /// `last_epoch`: continue with epoch `last_epoch + 1`, seq 1 (persisted first).
    ///
    /// # Errors
    /// The write error.
    pub fn resync(&mut self, last_epoch: u64) -> Result<(), String> {
        self.start_epoch(last_epoch.saturating_add(1))
    }
}

/// Why a heartbeat was not accepted.
#[derive(Debug)]
enum SendError {
    /// Refused as a replay; the registry last accepted one of this epoch.
    Replayed { last_epoch: u64, message: String },
    /// Anything else (unreachable, refused for another reason).
    Other(String),
}

/// Builds the current heartbeat (runs the health check once).
pub async fn build(agent: &Agent, epoch: u64, seq: u64) -> Heartbeat {
    let probe = agent.check_health().await;
    let status = agent.status();
    let counters = agent.last_counters().unwrap_or_default();
    Heartbeat {
        bench: counters
            .bench
            .into_iter()
            .filter(|(k, v)| v.is_finite() && k.len() <= 128)
            .take(64)
            .collect(),
        code_hash: status.code_hash.unwrap_or_default(),
        epoch,
        exceptions_total: counters.exceptions_total,
        floor: agent.floor(),
        healthy: probe.healthy,
        node_id: status.node_id,
        requests_total: counters.requests_total,
        sent_at: fleetgate_trust::unix_now(),
        seq,
        version: status.version.unwrap_or_default(),
    }
}

/// Sends heartbeats until `shutdown` turns true. With `catch_up` (push mode: the node's
/// feed and the ETag of what it last took from it), reads the feed once whenever a
/// heartbeat gets through after one failed ([`crate::pull::catch_up`]).
pub async fn run(
    agent: Agent,
    base_url: String,
    mut catch_up: Option<(String, Option<String>)>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let url = format!("{}{HEARTBEAT_PATH}", base_url.trim_end_matches('/'));
    let interval = Duration::from_secs(agent.config().heartbeat_interval_secs);
    let cap = Duration::from_secs(agent.config().heartbeat_max_backoff_secs).max(interval);
    let mut seqs = match SeqCounter::open(&agent.config().state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "heartbeats disabled");
            return;
        }
    };
    let mut pause = interval;
    // Whether the last heartbeat got through (the node caught up with its feed at start).
    let mut through = true;
    loop {
        let result = match seqs.take() {
            Ok((epoch, seq)) => send_one(&agent, &url, epoch, seq)
                .await
                .map(|()| (epoch, seq)),
            Err(e) => Err(SendError::Other(e)),
        };
        let ok = result.is_ok();
        pause = match result {
            Ok(sent) => {
                agent.record_heartbeat(&Ok(sent), false);
                interval
            }
            Err(SendError::Replayed {
                last_epoch,
                message,
            }) => {
                // Re-sync at once: the next heartbeat is signed with a higher epoch.
                let resync = seqs.resync(last_epoch);
                tracing::warn!(error = %message, new_epoch = seqs.epoch(), "heartbeat refused as a replay; re-synced to a new epoch");
                agent.record_heartbeat(&Err(message), resync.is_ok());
                if let Err(e) = resync {
                    tracing::warn!(error = %e, "heartbeat epoch not persisted");
                    (pause * 2).min(cap)
                } else {
                    interval
                }
            }
            Err(SendError::Other(e)) => {
                tracing::warn!(error = %e, url = %url, retry_in = ?pause, "heartbeat failed");
                agent.record_heartbeat(&Err(e), false);
                (pause * 2).min(cap)
            }
        };
        if ok
            && !through
            && let Some((feed, etag)) = catch_up.as_mut()
        {
            // Cut off until now: an order may have gone out meanwhile (push mode).
            crate::pull::catch_up(&agent, feed, etag, "heartbeats recovered").await;
        }
        through = ok;
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

async fn send_one(agent: &Agent, url: &str, epoch: u64, seq: u64) -> Result<(), SendError> {
    let hb = build(agent, epoch, seq).await;
    let env = SignedHeartbeat::sign(&hb, agent.identity());
    let resp = agent
        .http_client()
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(&env)
        .send()
        .await
        .map_err(|e| SendError::Other(format!("POST {url}: {}", crate::error_chain(&e))))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.bytes().await.unwrap_or_default();
    let body = &body[..body.len().min(MAX_ANSWER_BYTES)];
    let text = String::from_utf8_lossy(body).into_owned();
    let message = format!("POST {url}: {status}: {}", text.trim());
    if status == reqwest::StatusCode::CONFLICT
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && v.get("reason").and_then(serde_json::Value::as_str) == Some("replayed")
        && let Some(last_epoch) = v.get("last_epoch").and_then(serde_json::Value::as_u64)
    {
        return Err(SendError::Replayed {
            last_epoch,
            message,
        });
    }
    Err(SendError::Other(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_seq_survive_restart_and_only_grow() {
        let d = tempfile::tempdir().unwrap();
        let mut c = SeqCounter::open(d.path()).unwrap();
        assert_eq!(c.take().unwrap(), (1, 1));
        assert_eq!(c.take().unwrap(), (1, 2));
        // A restart starts a new epoch.
        let mut c = SeqCounter::open(d.path()).unwrap();
        assert_eq!(c.take().unwrap(), (2, 1));
        // A refusal naming the registry's epoch moves past it.
        c.resync(7).unwrap();
        assert_eq!(c.take().unwrap(), (8, 1));
        let mut c = SeqCounter::open(d.path()).unwrap();
        assert_eq!(c.take().unwrap(), (9, 1));
        // A file from before epochs is epoch 0: the next is 1.
        std::fs::write(d.path().join("heartbeat_seq.json"), br#"{"next":40}"#).unwrap();
        let mut c = SeqCounter::open(d.path()).unwrap();
        assert_eq!(c.take().unwrap(), (1, 1));
        std::fs::write(d.path().join("heartbeat_seq.json"), b"{oops").unwrap();
        assert!(SeqCounter::open(d.path()).is_err());
    }
}
