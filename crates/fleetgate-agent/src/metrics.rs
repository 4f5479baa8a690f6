//! The agent's Prometheus metrics (`GET /metrics`): what it applied and refused since it
//! started, and what it runs now.
//!
//! * Counters: `fleetgate_agent_applies_total{outcome}` (every finished apply: `applied`,
//!   `noop`, `already_applied`, `rolled_back`, `failed`, `refused`, `interrupted`),
//!   `fleetgate_agent_apply_refusals_total{reason}` (manifests refused before anything was
//!   done: `replayed`, `bad_signature`, `busy`, …), `fleetgate_agent_heartbeats_sent_total`,
//!   `fleetgate_agent_heartbeats_failed_total`, `fleetgate_agent_heartbeat_resyncs_total`.
//! * Gossip (where it runs; sampled every 2 s): `fleetgate_agent_gossip_messages_total
//!   {direction, kind}`, `fleetgate_agent_gossip_dropped_total{reason}`,
//!   `fleetgate_agent_gossip_delivered_total`, `fleetgate_agent_gossip_duplicates_total`.
//! * Gauges: `fleetgate_agent_running_info{version, code_hash}` (1 for what is committed),
//!   `fleetgate_agent_floor_sequence` (the anti-rollback floor), `fleetgate_agent_healthy`,
//!   `fleetgate_agent_app_running`, `fleetgate_agent_app_exits`,
//!   `fleetgate_agent_apply_in_progress`, `fleetgate_agent_bad_releases` (releases this
//!   node refuses from now on).
//!
//! Counters start at zero when the agent starts (Prometheus' `rate()` handles resets).
//! Nothing here is secret: no keys, no addresses, no manifest bytes.

use crate::agent::Status;
use fleetgate_net::prom::{header, sample};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Apply counters, shared by the agent (which counts) and `/metrics` (which reports).
#[derive(Debug, Default)]
pub struct AgentMetrics {
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// The gossip node's counters, as last sampled (every [`GOSSIP_SAMPLE`]).
    gossip: Mutex<Option<fleetgate_gossip::Stats>>,
}

/// How often the gossip task samples its node's counters for `/metrics`.
pub const GOSSIP_SAMPLE: std::time::Duration = std::time::Duration::from_secs(2);

fn bump(m: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *m.entry(key).or_default() += 1;
}

fn snapshot(m: &Mutex<BTreeMap<&'static str, u64>>) -> BTreeMap<&'static str, u64> {
    m.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl AgentMetrics {
    /// One finished apply with this outcome.
    pub fn outcome(&self, outcome: &'static str) {
        bump(&self.outcomes, outcome);
    }

    /// One manifest refused before anything was done, for `reason`.
    pub fn refused(&self, reason: &'static str) {
        bump(&self.refusals, reason);
    }

    /// The gossip node's counters, sampled by the gossip task.
    pub fn gossip(&self, stats: fleetgate_gossip::Stats) {
        *self
            .gossip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stats);
    }

    /// The counters and the agent's current state (`status`) in the text format.
    #[must_use]
    pub fn render(&self, status: &Status) -> String {
        let mut out = String::new();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        header(
            &mut out,
            "fleetgate_agent_applies_total",
            "counter",
            "Applies finished since the agent started, by outcome.",
        );
        for (outcome, n) in snapshot(&self.outcomes) {
            sample(
                &mut out,
                "fleetgate_agent_applies_total",
                &[("outcome", outcome)],
                n as f64,
            );
        }
        header(
            &mut out,
            "fleetgate_agent_apply_refusals_total",
            "counter",
            "Manifests refused before anything was done, by reason.",
        );
        for (reason, n) in snapshot(&self.refusals) {
            sample(
                &mut out,
                "fleetgate_agent_apply_refusals_total",
                &[("reason", reason)],
                n as f64,
            );
        }
        let hb = &status.heartbeats;
        for (name, help, v) in [
            (
                "fleetgate_agent_heartbeats_sent_total",
                "Signed heartbeats the fleet endpoint accepted.",
                hb.sent,
            ),
            (
                "fleetgate_agent_heartbeats_failed_total",
                "Heartbeat attempts that failed (unreachable or refused).",
                hb.failed,
            ),
            (
                "fleetgate_agent_heartbeat_resyncs_total",
                "Times the heartbeat epoch was re-synced after a refusal as a replay.",
                hb.resyncs,
            ),
        ] {
            header(&mut out, name, "counter", help);
            sample(&mut out, name, &[], v as f64);
        }
        let gossip = self
            .gossip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(g) = gossip {
            render_gossip(&mut out, &g);
        }
        header(
            &mut out,
            "fleetgate_agent_running_info",
            "gauge",
            "The committed release (1), by version and code hash; absent before the first.",
        );
        if let Some(cur) = &status.current {
            sample(
                &mut out,
                "fleetgate_agent_running_info",
                &[("version", &cur.version), ("code_hash", &cur.code_hash)],
                1.0,
            );
        }
        for (name, help, v) in [
            (
                "fleetgate_agent_floor_sequence",
                "The anti-rollback floor: the highest committed manifest sequence.",
                status.floor as f64,
            ),
            (
                "fleetgate_agent_healthy",
                "The last health check passed (1) or not (0).",
                flag(status.healthy),
            ),
            (
                "fleetgate_agent_app_running",
                "A process of the app is alive (1) or not (0).",
                flag(status.app_running),
            ),
            (
                "fleetgate_agent_app_exits",
                "Exits of the app since it was last started.",
                status.app_exits as f64,
            ),
            (
                "fleetgate_agent_apply_in_progress",
                "An apply is running (1) or not (0).",
                flag(status.apply_phase.is_some()),
            ),
            (
                "fleetgate_agent_bad_releases",
                "Releases this node refuses from now on (they failed here).",
                status.bad.len() as f64,
            ),
        ] {
            header(&mut out, name, "gauge", help);
            sample(&mut out, name, &[], v);
        }
        out
    }
}

/// Gossip counters (present only where gossip runs): messages received and sent by kind,
/// inputs dropped by reason, manifests delivered, duplicates.
fn render_gossip(out: &mut String, g: &fleetgate_gossip::Stats) {
    use fleetgate_gossip::DropReason;
    let name = "fleetgate_agent_gossip_messages_total";
    header(
        out,
        name,
        "counter",
        "Gossip messages since the agent started, by direction and kind (received: all kinds).",
    );
    sample(
        out,
        name,
        &[("direction", "received"), ("kind", "any")],
        g.received as f64,
    );
    for (kind, n) in [
        ("push", g.sent_push),
        ("manifest", g.sent_manifest),
        ("digest", g.sent_digest),
        ("digest_reply", g.sent_digest_reply),
        ("challenge", g.sent_challenge),
    ] {
        sample(
            out,
            name,
            &[("direction", "sent"), ("kind", kind)],
            n as f64,
        );
    }
    let name = "fleetgate_agent_gossip_dropped_total";
    header(
        out,
        name,
        "counter",
        "Gossip inputs dropped, by reason (malformed, oversized, stale, rate_limited, a verification failure, …).",
    );
    for reason in DropReason::all() {
        sample(
            out,
            name,
            &[("reason", reason.as_str())],
            g.dropped(reason) as f64,
        );
    }
    for (name, help, v) in [
        (
            "fleetgate_agent_gossip_delivered_total",
            "Verified manifests gossip delivered to the agent.",
            g.delivered,
        ),
        (
            "fleetgate_agent_gossip_duplicates_total",
            "Copies of the held manifest received again (normal in gossip; not a drop).",
            g.duplicates,
        ),
    ] {
        header(out, name, "counter", help);
        sample(out, name, &[], v as f64);
    }
}
