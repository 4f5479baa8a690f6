//! Prometheus metrics of the fleet endpoint (text exposition format 0.0.4, written by
//! hand: a handful of counters and gauges need no client library) and the health probes.
//!
//! * Counters kept by the heartbeat route: `fleetgate_heartbeats_accepted_total`,
//!   `fleetgate_heartbeats_refused_total{reason}` (one reason per [`HeartbeatError`] kind).
//! * Gauges read from the registry at scrape time: `fleetgate_fleet_peers{status}`,
//!   `fleetgate_fleet_peers_running{version}`, `fleetgate_fleet_cached_node_keys`.
//!
//! Label values are escaped as the format requires; nothing here is secret (no keys, no
//! addresses).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::HeartbeatError;
use crate::registry::Registry;

/// Heartbeat counters, shared by the route that counts and the one that reports.
#[derive(Debug, Default)]
pub struct FleetMetrics {
    accepted: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// The label of a refused heartbeat.
pub fn refusal_reason(e: &HeartbeatError) -> &'static str {
    match e {
        HeartbeatError::TooLarge { .. } => "too_large",
        HeartbeatError::Malformed(_) => "malformed",
        HeartbeatError::Unsigned { .. } => "unsigned",
        HeartbeatError::BadSignature { .. } => "bad_signature",
        HeartbeatError::UnknownNode(_) => "unknown_node",
        HeartbeatError::Removed(_) => "removed",
        HeartbeatError::Replayed { .. } => "replayed",
        HeartbeatError::EpochJump { .. } => "epoch_jump",
        HeartbeatError::TooOld { .. } => "too_old",
        HeartbeatError::FromFuture { .. } => "from_future",
        HeartbeatError::Registry(_) => "registry",
    }
}

impl FleetMetrics {
    /// A fresh set, shared.
    pub fn new() -> Arc<FleetMetrics> {
        Arc::default()
    }

    /// One heartbeat accepted.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// One heartbeat refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        let mut m = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(reason).or_default() += 1;
    }

    /// The counters and the registry's gauges in the text format.
    ///
    /// # Errors
    /// The registry cannot be read (the caller answers 503).
    pub async fn render(&self, registry: &Registry) -> Result<String, crate::FleetError> {
        let peers = registry.list_peers().await?;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP fleetgate_heartbeats_accepted_total Signed heartbeats accepted since this server started.\n# TYPE fleetgate_heartbeats_accepted_total counter\nfleetgate_heartbeats_accepted_total {}",
            self.accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP fleetgate_heartbeats_refused_total Heartbeats refused since this server started, by reason.\n# TYPE fleetgate_heartbeats_refused_total counter"
        );
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (reason, n) in refused {
            let _ = writeln!(
                out,
                "fleetgate_heartbeats_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP fleetgate_fleet_cached_node_keys Node keys the heartbeat route holds verified in memory.\n# TYPE fleetgate_fleet_cached_node_keys gauge\nfleetgate_fleet_cached_node_keys {}",
            registry.cached_node_keys()
        );
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_version: BTreeMap<String, u64> = BTreeMap::new();
        for p in &peers {
            *by_status.entry(p.status.as_str().to_owned()).or_default() += 1;
            let v = p.current_version.clone().unwrap_or_else(|| "none".into());
            *by_version.entry(v).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP fleetgate_fleet_peers Enrolled peers, by status.\n# TYPE fleetgate_fleet_peers gauge"
        );
        for (status, n) in by_status {
            let _ = writeln!(
                out,
                "fleetgate_fleet_peers{{status=\"{}\"}} {n}",
                escape(&status)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fleetgate_fleet_peers_running Peers by the version their last heartbeat reported (\"none\": not yet).\n# TYPE fleetgate_fleet_peers_running gauge"
        );
        for (version, n) in by_version {
            let _ = writeln!(
                out,
                "fleetgate_fleet_peers_running{{version=\"{}\"}} {n}",
                escape(&version)
            );
        }
        Ok(out)
    }
}

pub use fleetgate_net::prom::escape;
