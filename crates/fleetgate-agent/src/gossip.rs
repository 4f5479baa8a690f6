//! Gossip wiring: a `fleetgate-gossip` node over UDP at `gossip_listen`, seeded with
//! `seeds`, whose verified deliveries are applied through [`Agent::apply`] (verified
//! again there, with the agent's own floor and bad-release list).
//!
//! The newest delivered manifest is kept at `<state_dir>/gossip_held.json` (atomic
//! write) and restored at start, so a restarted node keeps serving it to peers that
//! pull; a manifest the node took from its feed to catch up ([`crate::pull::catch_up`])
//! is kept there too, and, when gossip already runs (heartbeats recovered after a cut),
//! published from this node so its peers learn of it. After each apply the gossip verifier's floor is raised to the agent's floor.
//! When an apply is busy (one already runs), the delivery is retried every 500 ms; only
//! the newest delivery matters (the channel holds one).
//!
//! A delivery of a manifest this node already committed or no-op'd is answered
//! `already_applied` by the agent: nothing restarts. One at or below the agent's floor
//! that it did not apply (older, superseded, or revoked by a rollback order) is refused
//! as replayed and changes nothing.

use crate::agent::{Agent, ApplyError};
use fleetgate_gossip::{GossipConfig, TrustVerifier};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// File holding the newest delivered manifest.
pub const HELD_FILE: &str = "gossip_held.json";

/// Starts gossip when `gossip_listen` is configured; returns the task and the bound
/// address.
///
/// # Errors
/// A message naming the address when the node cannot start.
pub async fn start(
    agent: &Agent,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<(JoinHandle<()>, std::net::SocketAddr)>, String> {
    let cfg = agent.config();
    let Some(bind) = cfg.gossip_listen else {
        if !cfg.seeds.is_empty() {
            tracing::warn!("seeds are set but gossip_listen is not: gossip is off");
        }
        return Ok(None);
    };
    let gcfg = GossipConfig {
        round_interval_ms: cfg.gossip_round_ms,
        anti_entropy_interval_ms: Some(cfg.gossip_anti_entropy_secs * 1000),
        ..GossipConfig::default()
    };
    let seeds: Vec<std::net::SocketAddr> =
        cfg.seeds.iter().filter_map(|s| s.parse().ok()).collect();
    let held_path = cfg.state_dir.join(HELD_FILE);
    let held = match fleetgate_trust::fsutil::read_capped(
        &held_path,
        fleetgate_trust::MAX_MANIFEST_BYTES as u64,
    ) {
        Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => Some(b),
        _ => None,
    };
    let verifier = Arc::new(TrustVerifier::new(agent.keyring().clone()));
    let handle = match fleetgate_gossip::runtime::spawn_udp(
        gcfg.clone(),
        bind,
        seeds.clone(),
        verifier.clone(),
        held.as_deref(),
    )
    .await
    {
        Ok(h) => h,
        Err(e) if held.is_some() => {
            tracing::warn!(error = %e, "the held gossip manifest no longer verifies; starting without it");
            fleetgate_gossip::runtime::spawn_udp(gcfg, bind, seeds, verifier.clone(), None)
                .await
                .map_err(|e| format!("failed to start gossip on {bind}: {e}"))?
        }
        Err(e) => return Err(format!("failed to start gossip on {bind}: {e}")),
    };
    verifier.raise_floor(agent.floor());
    let addr = handle.addr();
    let mut deliveries = handle.deliveries();
    // What was restored is already applied (or refused) here.
    deliveries.borrow_and_update();
    let agent = agent.clone();
    // Manifests the node takes from its feed while gossip runs (heartbeats recovered
    // after a cut): published from this node so its peers learn of them too.
    let (offer_tx, mut offers) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    agent.set_gossip_offer(Some(offer_tx));
    let mut sample = tokio::time::interval(crate::metrics::GOSSIP_SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sample.tick() => {
                    if let Ok((stats, _)) = handle.snapshot().await {
                        agent.gossip_stats(stats);
                    }
                }
                changed = deliveries.changed() => {
                    if changed.is_err() {
                        tracing::error!("gossip task stopped");
                        break;
                    }
                    let newest = { deliveries.borrow_and_update().clone() };
                    let Some(d) = newest else { continue };
                    if let Err(e) = crate::write_atomic(&held_path, &d.manifest, 0o644) {
                        tracing::warn!(error = %e, "failed to keep the gossip manifest");
                    }
                    apply_delivered(&agent, &d.manifest, &mut stop).await;
                    verifier.raise_floor(agent.floor());
                }
                Some(manifest) = offers.recv() => {
                    match handle.publish(manifest.clone()).await {
                        Ok(v) => {
                            tracing::info!(sequence = v.sequence, "gossiping the manifest taken from the feed");
                            if let Err(e) = crate::write_atomic(&held_path, &manifest, 0o644) {
                                tracing::warn!(error = %e, "failed to keep the gossip manifest");
                            }
                        }
                        // Older than (or the same as) what gossip holds: nothing to spread.
                        Err(e) => tracing::debug!(error = %e, "the manifest taken from the feed is not gossiped"),
                    }
                }
                () = stopped(&mut stop) => break,
            }
        }
        agent.set_gossip_offer(None);
        if let Err(e) = handle.shutdown().await {
            tracing::warn!(error = %e, "gossip shutdown");
        }
    });
    tracing::info!(%addr, "gossip listening");
    Ok(Some((task, addr)))
}

async fn apply_delivered(agent: &Agent, manifest: &[u8], stop: &mut watch::Receiver<bool>) {
    loop {
        match agent.apply(manifest).await {
            Ok(r) if r.outcome == crate::Outcome::AlreadyApplied => {
                tracing::debug!(
                    sequence = r.sequence,
                    "gossip manifest already applied: {}",
                    r.detail
                );
                return;
            }
            Ok(r) => {
                tracing::info!(outcome = ?r.outcome, sequence = r.sequence, "gossip manifest applied: {}", r.detail);
                return;
            }
            Err(ApplyError::Busy { .. }) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stopped(stop) => return,
                }
            }
            Err(e @ ApplyError::Verify(fleetgate_trust::VerifyError::Replayed { .. })) => {
                tracing::info!(error = %e, "gossip manifest refused: at or below this node's floor and not applied here");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "gossip manifest refused by the agent");
                return;
            }
        }
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
