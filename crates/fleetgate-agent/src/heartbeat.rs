//! Signed heartbeats to the orchestrator.
//!
//! Every `heartbeat_interval_secs` the agent runs the app's health check and POSTs to
//! `{orchestrator}/api/fleet/heartbeat` the envelope `fleetgate-fleet` accepts:
//! `{"payload": "<heartbeat JSON>", "signature": "<hex Ed25519 over the payload bytes>"}`,
//! signed with the node identity key. The payload is [`Heartbeat`] serialised as compact
//! JSON with its keys in sorted order (the struct's fields are declared alphabetically,
//! exactly as `fleetgate_fleet::Heartbeat`).
//!
//! `seq` is strictly increasing across restarts: the next value is persisted
//! (`<state_dir>/heartbeat_seq.json`, atomic write) before a heartbeat is sent.
//!
//! When the orchestrator is unreachable or refuses, the agent keeps going: the pause
//! doubles from the interval up to `heartbeat_max_backoff_secs`, and returns to the
//! interval after the first accepted heartbeat. Each attempt is a fresh heartbeat (new
//! `seq`, new `sent_at`); nothing is queued.

use crate::agent::Agent;
use fleetgate_trust::SigningKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest orchestrator answer read (it is only logged).
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What a node reports. Fields in alphabetical order: the JSON has sorted keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Benchmark figures by name (from the app's health body).
    #[serde(default)]
    pub bench: BTreeMap<String, f64>,
    /// Code hash of what the node runs ("" when nothing is installed).
    pub code_hash: String,
    /// Cumulative exceptions the app reported.
    pub exceptions_total: u64,
    /// The app's own health check passed.
    pub healthy: bool,
    /// Node id.
    pub node_id: String,
    /// Cumulative requests the app reported.
    pub requests_total: u64,
    /// Send time (unix seconds).
    pub sent_at: u64,
    /// Strictly increasing per node, from 1.
    pub seq: u64,
    /// Version the node runs ("" when nothing is installed).
    pub version: String,
}

/// The wire envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHeartbeat {
    /// The heartbeat JSON, exactly the signed bytes.
    pub payload: String,
    /// Ed25519 signature over `payload`, hex.
    pub signature: String,
}

impl SignedHeartbeat {
    /// Serialises and signs.
    #[must_use]
    pub fn sign(hb: &Heartbeat, key: &SigningKey) -> Self {
        // Non-finite bench figures are dropped by `collect` below in `build`; serde_json
        // cannot fail on the rest.
        let payload = serde_json::to_string(hb).unwrap_or_default();
        let signature = hex::encode(key.sign(payload.as_bytes()));
        Self { payload, signature }
    }
}

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
    /// Last error.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeqFile {
    next: u64,
}

/// The persisted heartbeat sequence.
#[derive(Debug)]
pub struct SeqCounter {
    path: PathBuf,
    next: u64,
}

impl SeqCounter {
    /// Opens `<state_dir>/heartbeat_seq.json` (missing: start at 1; unreadable: error).
    ///
    /// # Errors
    /// A message naming the file.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let path = state_dir.join("heartbeat_seq.json");
        let next = match std::fs::read(&path) {
            Ok(b) if b.len() <= 4096 => {
                serde_json::from_slice::<SeqFile>(&b)
                    .map_err(|e| format!("heartbeat sequence file {}: {e}", path.display()))?
                    .next
            }
            Ok(_) => {
                return Err(format!(
                    "heartbeat sequence file {} is too large",
                    path.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(format!("heartbeat sequence file {}: {e}", path.display())),
        };
        Ok(Self {
            path,
            next: next.max(1),
        })
    }

    /// Takes the next seq, persisting the one after it first.
    ///
    /// # Errors
    /// The write error (the seq is then not used).
    pub fn take(&mut self) -> Result<u64, String> {
        let seq = self.next;
        let bytes = serde_json::to_vec(&SeqFile { next: seq + 1 }).unwrap_or_default();
        fleetgate_store::write_atomic(&self.path, &bytes, Some(0o644))
            .map_err(|e| format!("write {}: {e}", self.path.display()))?;
        self.next = seq + 1;
        Ok(seq)
    }
}

/// Builds the current heartbeat (runs the health check once).
pub async fn build(agent: &Agent, seq: u64) -> Heartbeat {
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
        exceptions_total: counters.exceptions_total,
        healthy: probe.healthy,
        node_id: status.node_id,
        requests_total: counters.requests_total,
        sent_at: fleetgate_trust::unix_now(),
        seq,
        version: status.version.unwrap_or_default(),
    }
}

/// Sends heartbeats until `shutdown` turns true.
pub async fn run(agent: Agent, base_url: String, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let url = format!("{}/api/fleet/heartbeat", base_url.trim_end_matches('/'));
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
    loop {
        let result = match seqs.take() {
            Ok(seq) => send_one(&agent, &url, seq).await.map(|()| seq),
            Err(e) => Err(e),
        };
        agent.record_heartbeat(&result);
        pause = match result {
            Ok(_) => interval,
            Err(e) => {
                tracing::warn!(error = %e, url = %url, retry_in = ?pause, "heartbeat failed");
                (pause * 2).min(cap)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

async fn send_one(agent: &Agent, url: &str, seq: u64) -> Result<(), String> {
    let hb = build(agent, seq).await;
    let env = SignedHeartbeat::sign(&hb, agent.identity());
    let resp = agent
        .http_client()
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(&env)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER_BYTES)]).into_owned();
    Err(format!("POST {url}: {status}: {}", text.trim()))
}

/// `e` with its sources (`error sending request: … : invalid peer certificate: UnknownIssuer`),
/// so a TLS failure names its cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_sorted_keys_and_verifies() {
        let key = SigningKey::from_seed(&[7; 32]);
        let hb = Heartbeat {
            bench: BTreeMap::from([("rps".into(), 1.5)]),
            code_hash: "ab".into(),
            exceptions_total: 2,
            healthy: true,
            node_id: "n1".into(),
            requests_total: 9,
            sent_at: 100,
            seq: 3,
            version: "v1".into(),
        };
        let s = SignedHeartbeat::sign(&hb, &key);
        assert_eq!(
            s.payload,
            r#"{"bench":{"rps":1.5},"code_hash":"ab","exceptions_total":2,"healthy":true,"node_id":"n1","requests_total":9,"sent_at":100,"seq":3,"version":"v1"}"#
        );
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&s.signature, &mut sig).unwrap();
        key.public_key()
            .verify_strict(s.payload.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn seq_survives_restart_and_only_grows() {
        let d = tempfile::tempdir().unwrap();
        let mut c = SeqCounter::open(d.path()).unwrap();
        assert_eq!(c.take().unwrap(), 1);
        assert_eq!(c.take().unwrap(), 2);
        let mut c = SeqCounter::open(d.path()).unwrap();
        assert_eq!(c.take().unwrap(), 3);
        std::fs::write(d.path().join("heartbeat_seq.json"), b"{oops").unwrap();
        assert!(SeqCounter::open(d.path()).is_err());
    }
}
