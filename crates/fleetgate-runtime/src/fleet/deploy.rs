//! The DEPLOY gate: the runtime half of [`fleetgate_core::fleet::DeployMachine`]. Each pass
//! observes every node's latest heartbeat, ticks the machine, and carries out what it
//! asks: list the targets, hand the manifest to gossip or push it to each target (marked
//! in flight and persisted first), and judge convergence.

use super::link::{FleetLink, now_secs, rt_err};
use super::{Checkpoint, MAX_TICKS, manifest_bytes, publish_gossip};
use crate::RuntimeError;
use crate::gates::GateContext;
use fleetgate_core::fleet::{
    DeployEvent, DeployMachine, DeployMode, DeployObserved, DeployParams, DeployProgress,
    FleetCommand,
};
use fleetgate_core::{FleetStageProgress, PipelineState, Verdict};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One pass of DEPLOY.
pub fn deploy(
    ctx: &GateContext,
    link: &FleetLink,
    state: &PipelineState,
    checkpoint: Checkpoint<'_>,
) -> Result<Verdict, RuntimeError> {
    let bytes = manifest_bytes(ctx, state)?;
    let t = now_secs();
    let params = DeployParams {
        code_hash: state.code_hash.clone().unwrap_or_default(),
        canary: state
            .canary
            .as_ref()
            .and_then(|c| c.selection.as_ref())
            .map(|s| s.nodes.clone())
            .unwrap_or_default(),
        success_pct: ctx.cfg.deploy.success_pct,
        max_failure_pct: ctx.cfg.deploy.max_failure_pct,
    };
    let mode = if ctx.cfg.deploy.gossip_seeds.is_empty() {
        DeployMode::Push
    } else {
        DeployMode::Gossip
    };
    let mut progress = state
        .deploy
        .clone()
        .unwrap_or_else(|| DeployProgress::new(mode, t, ctx.cfg.deploy.deadline_secs));
    let seq = state
        .manifest
        .as_ref()
        .and_then(|m| m.get("sequence"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut m = DeployMachine {
        progress: &mut progress,
        params: &params,
        observed: BTreeMap::new(),
    };
    observe(ctx, link, &mut m, seq, t)?;
    let mut queue: VecDeque<FleetCommand> = m.handle(DeployEvent::Tick { now: t }).into();
    let mut ticks = 1;
    while let Some(cmd) = queue.pop_front() {
        match cmd {
            FleetCommand::Persist => {
                checkpoint(FleetStageProgress::Deploy(m.progress.clone()))?;
            }
            FleetCommand::ListTargets => {
                let peers = link
                    .block_on(link.registry().list_peers())
                    .map_err(|e| rt_err("failed to list peers", e))?;
                let nodes: Vec<String> = peers
                    .iter()
                    .filter(|p| {
                        p.master_key_verified && p.status == fleetgate_fleet::PeerStatus::Active
                    })
                    .filter(|p| !params.canary.contains(&p.id))
                    .map(|p| p.id.clone())
                    .collect();
                queue.extend(m.handle(DeployEvent::Targets { nodes }));
                if ticks < MAX_TICKS {
                    ticks += 1;
                    queue.extend(m.handle(DeployEvent::Tick { now: t }));
                }
            }
            FleetCommand::Publish => {
                let note = publish_gossip(ctx, link, &bytes)?;
                queue.extend(m.handle(DeployEvent::Published { note }));
                if ticks < MAX_TICKS {
                    ticks += 1;
                    let t2 = now_secs();
                    observe(ctx, link, &mut m, seq, t2)?;
                    queue.extend(m.handle(DeployEvent::Tick { now: t2 }));
                }
            }
            FleetCommand::Send { nodes } => {
                let answers = link.send(&nodes, &bytes);
                fleetgate_store::kill_point("deploy-sent");
                for (node, answer) in answers {
                    tracing::info!(node = %node, answer = ?answer, "deploy apply answered");
                    queue.extend(m.handle(DeployEvent::Answered { node, answer }));
                }
                if ticks < MAX_TICKS {
                    ticks += 1;
                    let t2 = now_secs();
                    observe(ctx, link, &mut m, seq, t2)?;
                    queue.extend(m.handle(DeployEvent::Tick { now: t2 }));
                }
            }
            FleetCommand::Verdict(v) => return Ok(v),
            FleetCommand::SelectCanary | FleetCommand::Judge { .. } => {
                return Err(RuntimeError::Fleet(
                    "internal: the DEPLOY machine asked for a CANARY command".into(),
                ));
            }
        }
    }
    Ok(Verdict::pending(
        "deploy: waiting for the next pass",
        serde_json::to_value(&*m.progress).unwrap_or(Value::Null),
    ))
}

fn observe(
    ctx: &GateContext,
    link: &FleetLink,
    m: &mut DeployMachine<'_>,
    seq: u64,
    t: i64,
) -> Result<(), RuntimeError> {
    if !m.progress.listed {
        return Ok(());
    }
    let timeout = u64::try_from(ctx.cfg.canary.heartbeat_timeout_secs).unwrap_or(60);
    let reachable: BTreeSet<String> = link
        .block_on(link.registry().eligible_peers(t, timeout))
        .map_err(|e| rt_err("failed to list peers", e))?
        .into_iter()
        .map(|e| e.id)
        .collect();
    for node in m.nodes() {
        let observed = link.observe(&node, t)?;
        let runs_release = observed
            .as_ref()
            .is_some_and(|o| o.code_hash == m.params.code_hash);
        // Only a node that is behind can have refused the release: ask its agent.
        let refused_release = !runs_release && link.agent_refused(&node, seq);
        m.handle(DeployEvent::Observed {
            observed: DeployObserved {
                observed,
                reachable: reachable.contains(&node),
                refused_release,
            },
            node,
        });
    }
    Ok(())
}
