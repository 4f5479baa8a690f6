//! The fleet side of the orchestrator: the CANARY and DEPLOY gates and the delivery of
//! rollback orders, as the runtime half of the pure machines in
//! [`fleetgate_core::fleet`]. Each gate pass observes what the nodes run (their signed
//! heartbeats in the registry), ticks its machine, and carries out the commands: every
//! outside effect is persisted (typed, in the state file) before it is sent, every send
//! has an identity (run, node, sequence) and is harmless to repeat, and a node's answer
//! is classified by what it says it runs now ([`link::classify`]).
//!
//! - [`link`]: the one fleet connection per orchestrator (registry, lease, HTTP client).
//! - [`canary`], [`deploy`]: the gates.
//! - [`revoke`]: rollback orders as fleet-wide revocations.
//! - `published`: `[artifacts] base_url` holds CANARY until the release's artifacts are
//!   served there.
//!
//! The calls block; they are safe from inside a tokio runtime too (the link then blocks
//! on a helper thread instead of nesting runtimes).

pub mod canary;
pub mod deploy;
pub mod link;
mod published;
pub mod revoke;

pub use canary::canary;
pub use deploy::deploy;
pub use link::{FleetHandle, FleetLink, LEASE_NAME, classify, database_url};
pub use revoke::send_rollback;

use crate::RuntimeError;
use crate::gates::{GateContext, resolve};
use fleetgate_core::fleet::{CanaryProgress, DeployProgress};
use fleetgate_core::{FleetStageProgress, PipelineState};
use link::fleet_op;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Most machine ticks in one gate pass (select → send → judge).
pub(crate) const MAX_TICKS: u32 = 4;

/// A fleet stage's progress, borrowed from the gate that works on it. DEPLOY's is lent
/// mutably: the checkpoint moves it into the state it writes and back after the write,
/// so a pass over a large fleet never holds a second copy of one delivery per node.
#[derive(Debug)]
pub enum ProgressRef<'a> {
    /// CANARY's (one delivery per canary node: copied into the write).
    Canary(&'a CanaryProgress),
    /// DEPLOY's (one delivery per target: lent to the write).
    Deploy(&'a mut DeployProgress),
}

impl ProgressRef<'_> {
    /// Whether `state` holds this progress already (nothing to write).
    #[must_use]
    pub fn is_in(&self, state: &PipelineState) -> bool {
        match self {
            ProgressRef::Canary(p) => state.canary.as_ref() == Some(*p),
            ProgressRef::Deploy(p) => state.deploy.as_ref() == Some(&**p),
        }
    }

    /// The progress to hand to the state machine: CANARY's copied, DEPLOY's moved out (a
    /// placeholder left until [`ProgressRef::take_back`]).
    pub fn lend(&mut self) -> FleetStageProgress {
        match self {
            ProgressRef::Canary(p) => FleetStageProgress::Canary((*p).clone()),
            ProgressRef::Deploy(p) => {
                let placeholder = DeployProgress::new(p.mode, p.started_at, 0);
                FleetStageProgress::Deploy(std::mem::replace(&mut **p, placeholder))
            }
        }
    }

    /// Moves DEPLOY's progress back from the state it was written with. A state without
    /// it is an error, never a gate left working on the placeholder.
    pub fn take_back(&mut self, state: &mut PipelineState) -> Result<(), RuntimeError> {
        match self {
            ProgressRef::Canary(_) => Ok(()),
            ProgressRef::Deploy(p) => {
                **p = state.deploy.take().ok_or(RuntimeError::Fleet(
                    crate::FleetFailure::Internal(
                        "the state written by a DEPLOY checkpoint does not hold the progress lent to it",
                    ),
                ))?;
                Ok(())
            }
        }
    }
}

/// Persists a fleet stage's typed progress (under the epoch the gate started with) before
/// an outside effect; refused with [`RuntimeError::Superseded`] if the run moved on (the
/// pass then stops: a lent progress is not given back). See [`ProgressRef`].
pub type Checkpoint<'a> = &'a mut dyn FnMut(ProgressRef<'_>) -> Result<(), RuntimeError>;

/// Hand signed manifest bytes to gossip: a short-lived gossip node of the orchestrator
/// publishes them to the configured seeds, keeps pushing and answering pulls for
/// `gossip_linger_ms`, then leaves. The fleet's own anti-entropy carries it the rest of
/// the way.
pub fn publish_gossip(
    ctx: &GateContext,
    link: &FleetLink,
    bytes: &[u8],
) -> Result<String, RuntimeError> {
    let seeds: Vec<std::net::SocketAddr> = ctx
        .cfg
        .deploy
        .gossip_seeds
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let trust = ctx
        .cfg
        .signing
        .trust_file
        .as_deref()
        .ok_or(crate::ConfigProblem::Missing {
            key: "signing.trust_file",
            why: "gossip verifies what it sends against it",
        })?;
    let trust_path = resolve(&ctx.base, trust);
    let keyring = fleetgate_trust::Keyring::load(&trust_path)
        .map_err(|e| RuntimeError::trust(crate::TrustStep::TrustFile(trust_path.clone()), e))?;
    let linger =
        Duration::from_millis(u64::try_from(ctx.cfg.deploy.gossip_linger_ms).unwrap_or(5000));
    let cfg = fleetgate_gossip::GossipConfig {
        round_interval_ms: 200,
        ..fleetgate_gossip::GossipConfig::default()
    };
    let bind: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let bind = if seeds.iter().any(|s| !s.ip().is_loopback()) {
        ([0, 0, 0, 0], 0).into()
    } else {
        bind
    };
    link.block_on(async {
        let handle = fleetgate_gossip::spawn_udp(
            cfg,
            bind,
            seeds.clone(),
            fleetgate_gossip::TrustVerifier::new(keyring),
            None,
        )
        .await
        .map_err(|e| fleet_op("failed to start the orchestrator's gossip node", e))?;
        let verified = handle
            .publish(bytes.to_vec())
            .await
            .map_err(|e| fleet_op("gossip refused the manifest", e))?;
        tokio::time::sleep(linger).await;
        let _ = handle.shutdown().await;
        Ok(format!(
            "handed sequence {} to gossip through {} seed(s)",
            verified.sequence,
            seeds.len()
        ))
    })
}

/// The heartbeat endpoint's policy under `cfg` (`[fleet] heartbeat_retention_secs`).
pub fn heartbeat_policy(cfg: &fleetgate_core::config::Config) -> fleetgate_fleet::HeartbeatPolicy {
    let mut p = fleetgate_fleet::HeartbeatPolicy::default();
    if let Some(r) = cfg
        .fleet
        .heartbeat_retention_secs
        .and_then(|r| u64::try_from(r).ok())
    {
        p.retention_secs = r;
    }
    p
}

/// The exact signed bytes of the run's manifest (as SIGN archived them).
pub fn manifest_bytes(ctx: &GateContext, state: &PipelineState) -> Result<Vec<u8>, RuntimeError> {
    let seq = state
        .manifest
        .as_ref()
        .and_then(|m| m.get("sequence"))
        .and_then(Value::as_u64)
        .ok_or(crate::FleetFailure::NoSignedManifest)?;
    let path = manifest_file(ctx, seq);
    std::fs::read(&path).map_err(|e| RuntimeError::io("read signed manifest", &path, e))
}

pub(crate) fn manifest_file(ctx: &GateContext, seq: u64) -> PathBuf {
    ctx.state_dir.join("manifests").join(format!("{seq}.json"))
}

/// Why an outbox effect was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// It may work later (a node down, the registry unreachable): kept and retried.
    Retry(String),
    /// It can never work: abandoned, with the reason recorded in the run.
    Never(String),
}

impl From<String> for DeliveryError {
    fn from(e: String) -> DeliveryError {
        DeliveryError::Retry(e)
    }
}

/// Queues a machine's commands, dropping a [`FleetCommand::Persist`] that directly
/// follows another: nothing runs between the two, so the second would write the same
/// progress again (answers from thousands of nodes then cost one write, not one each).
pub(crate) fn push_coalesced(
    queue: &mut std::collections::VecDeque<fleetgate_core::fleet::FleetCommand>,
    cmds: Vec<fleetgate_core::fleet::FleetCommand>,
) {
    use fleetgate_core::fleet::FleetCommand;
    for c in cmds {
        if matches!(c, FleetCommand::Persist) && matches!(queue.back(), Some(FleetCommand::Persist))
        {
            continue;
        }
        queue.push_back(c);
    }
}

/// A pending pass's figures: deliveries counted by status (the progress itself, with
/// every delivery, is in the state already; a copy per pass would double a large
/// fleet's state).
pub(crate) fn delivery_summary(deliveries: &[fleetgate_core::fleet::NodeDelivery]) -> Value {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for d in deliveries {
        let status = serde_json::to_value(d.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry(status).or_default() += 1;
    }
    serde_json::json!({"deliveries": deliveries.len(), "by_status": counts})
}

#[cfg(test)]
mod tests {
    use super::{ProgressRef, push_coalesced};
    use fleetgate_core::fleet::{DeployMode, DeployProgress, FleetCommand, NodeDelivery};
    use fleetgate_core::{FleetStageProgress, PipelineState};
    use std::collections::VecDeque;

    #[test]
    fn a_lent_deploy_progress_comes_back_whole_or_not_at_all() {
        let mut working = DeployProgress::new(DeployMode::Push, 100, 3600);
        working.deliveries = (0..3)
            .map(|i| NodeDelivery::new(format!("n{i}"), true))
            .collect();
        let original = working.clone();
        let mut state = PipelineState::default();
        let mut lent = ProgressRef::Deploy(&mut working);
        assert!(!lent.is_in(&state));
        let FleetStageProgress::Deploy(p) = lent.lend() else {
            panic!("DEPLOY's progress lent as another stage's");
        };
        state.deploy = Some(p);
        assert!(lent.take_back(&mut state).is_ok());
        assert_eq!(working, original);
        assert_eq!(state.deploy, None);
        // A state that does not hold it: an error, not a gate working on the placeholder.
        let mut lent = ProgressRef::Deploy(&mut working);
        let _moved = lent.lend();
        let err = lent.take_back(&mut PipelineState::default()).unwrap_err();
        assert!(
            err.to_string().contains("does not hold the progress"),
            "{err}"
        );
    }

    #[test]
    fn a_persist_right_after_another_is_dropped_and_one_after_a_send_kept() {
        let send = || FleetCommand::Send {
            nodes: vec!["n1".into()],
        };
        let mut q = VecDeque::new();
        // Answers from three nodes, each asking to persist: one write.
        for _ in 0..3 {
            push_coalesced(&mut q, vec![FleetCommand::Persist]);
        }
        assert_eq!(q.len(), 1);
        // A send between two persists keeps both: the second records what it changed.
        push_coalesced(
            &mut q,
            vec![send(), FleetCommand::Persist, FleetCommand::Persist],
        );
        assert_eq!(
            q.into_iter().collect::<Vec<_>>(),
            vec![FleetCommand::Persist, send(), FleetCommand::Persist]
        );
    }
}
