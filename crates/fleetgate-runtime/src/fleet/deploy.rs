//! The DEPLOY gate: the runtime half of [`fleetgate_core::fleet::DeployMachine`]. Each pass
//! observes every node's latest heartbeat, ticks the machine, and carries out what it
//! asks: list the targets, hand the manifest to gossip or push it to each target (marked
//! in flight and persisted first), and judge convergence.

use super::canary::{Phase, run_phase};
use super::link::{FleetLink, fleet_op, now_secs};
use super::{Checkpoint, MAX_TICKS, ProgressRef, manifest_bytes, publish_gossip};
use crate::RuntimeError;
use crate::gates::GateContext;
use fleetgate_core::fleet::{
    CanaryEvent, CanaryMachine, CanaryParams, CanaryProgress, CanarySelection, DeployEvent,
    DeployMachine, DeployMode, DeployObserved, DeployParams, DeployProgress, DeployStep,
    FleetCommand, step_slice,
};
use fleetgate_core::{Outcome, PipelineState, Verdict};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Agents asked per pass whether they refused the release (`GET /status`).
const STATUS_ASKS_PER_PASS: usize = 1024;

/// One pass of DEPLOY.
pub fn deploy(
    ctx: &GateContext,
    link: &FleetLink,
    state: &mut PipelineState,
    checkpoint: Checkpoint<'_>,
) -> Result<Verdict, RuntimeError> {
    // The gate's working copy of the progress (see `gates::evaluate`).
    let taken = state.deploy.take();
    let state = &*state;
    let bytes = manifest_bytes(ctx, state)?;
    if let Some(held) = super::canary::channel_paused(link, state)? {
        return Ok(held);
    }
    let t = now_secs();
    let channel = state.run_channel().to_owned();
    let mode = if ctx.cfg.deploy.gossip_seeds.is_empty() || taken.is_some() {
        DeployMode::Push
    } else {
        // Gossip reaches every node: only when every node is in the run's channel.
        let elsewhere: usize = link
            .block_on(link.registry().channels())
            .map_err(|e| fleet_op("failed to count the nodes of each channel", e))?
            .iter()
            .filter(|c| c.name != channel)
            .map(|c| c.nodes)
            .sum();
        if elsewhere == 0 {
            DeployMode::Gossip
        } else {
            tracing::info!(
                channel = %channel,
                elsewhere,
                "DEPLOY pushes to the channel's nodes: gossip would reach the nodes of other channels"
            );
            DeployMode::Push
        }
    };
    let mut progress = taken.unwrap_or_else(|| {
        let mut p = DeployProgress::new(mode, t, ctx.cfg.deploy.deadline_secs);
        p.steps = ctx
            .cfg
            .deploy
            .judged_steps()
            .into_iter()
            .map(DeployStep::new)
            .collect();
        p
    });
    if let Some(v) = steps(ctx, link, state, &bytes, &mut progress, &mut *checkpoint)? {
        return Ok(v);
    }
    // Every window is judged: the judge kept between checks (the canary's or the last
    // step's, over every node of the fleet) is of no further use in this run.
    drop(super::canary::forget_judge(link));
    // The canary and the steps' nodes run the release already.
    let mut updated = canary_nodes(state);
    let mut seen: BTreeSet<String> = updated.iter().cloned().collect();
    for n in progress.step_nodes() {
        if seen.insert(n.clone()) {
            updated.push(n);
        }
    }
    let params = DeployParams {
        code_hash: state.code_hash.clone().unwrap_or_default(),
        canary: updated,
        success_pct: ctx.cfg.deploy.success_pct,
        max_failure_pct: ctx.cfg.deploy.max_failure_pct,
    };
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
                checkpoint(ProgressRef::Deploy(&mut *m.progress))?;
            }
            FleetCommand::ListTargets => {
                let mut nodes = link
                    .block_on(link.registry().release_targets(Some(&channel)))
                    .map_err(|e| fleet_op("failed to list the channel's nodes", e))?;
                nodes.retain(|id| !seen.contains(id));
                queue.extend(m.handle(DeployEvent::Targets { nodes }));
                if ticks < MAX_TICKS {
                    ticks += 1;
                    queue.extend(m.handle(DeployEvent::Tick { now: t }));
                }
            }
            FleetCommand::Publish => {
                // Pull-mode nodes are outside the gossip mesh: their feeds carry it.
                let unfed = link.put_feeds(&m.progress.targets, &bytes);
                let mut note = publish_gossip(ctx, link, &bytes)?;
                if !unfed.is_empty() {
                    note.push_str(&format!(
                        "; the pull feed of {} node(s) could not be written",
                        unfed.len()
                    ));
                }
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
                    tracing::debug!(node = %node, answer = ?answer, "deploy apply answered");
                    super::push_coalesced(
                        &mut queue,
                        m.handle(DeployEvent::Answered { node, answer }),
                    );
                }
                if ticks < MAX_TICKS {
                    ticks += 1;
                    let t2 = now_secs();
                    observe(ctx, link, &mut m, seq, t2)?;
                    queue.extend(m.handle(DeployEvent::Tick { now: t2 }));
                }
            }
            FleetCommand::Verdict(v) => {
                // The verdict rests on this pass's observations: record them with it (a
                // node seen on the release is a done delivery), or the finished run's
                // record shows as queued the nodes that converged through their feeds
                // since the last write (25,000 of 90,000 at 100,000 nodes). Written only
                // if they changed anything.
                checkpoint(ProgressRef::Deploy(&mut *m.progress))?;
                return Ok(v);
            }
            FleetCommand::SelectCanary | FleetCommand::Judge { .. } => {
                return Err(RuntimeError::Fleet(crate::FleetFailure::Internal(
                    "the DEPLOY machine asked for a CANARY command",
                )));
            }
        }
    }
    Ok(Verdict::pending(
        "deploy: waiting for the next pass",
        super::delivery_summary(&m.progress.deliveries),
    ))
}

fn canary_nodes(state: &PipelineState) -> Vec<String> {
    state
        .canary
        .as_ref()
        .and_then(|c| c.selection.as_ref())
        .map(|s| s.nodes.clone())
        .unwrap_or_default()
}

/// The judged steps of a phased DEPLOY (`[deploy] steps`), in order: each step's slice is
/// selected (persisted first), sent the release and judged like the canary against the
/// nodes not yet updated. Returns the pass's verdict while a step is open or has failed;
/// `None` once every step has passed (the whole fleet is next).
fn steps(
    ctx: &GateContext,
    link: &FleetLink,
    state: &PipelineState,
    bytes: &[u8],
    progress: &mut DeployProgress,
    checkpoint: Checkpoint<'_>,
) -> Result<Option<Verdict>, RuntimeError> {
    let total = progress.steps.len();
    let revoked = || super::revoke::revoked_code_hashes(ctx, state);
    while let Some(i) = progress.current_step() {
        let t = now_secs();
        let fraction = progress.steps[i].fraction;
        let label = format!(
            "deploy step {}/{total} ({:.0}% of the fleet)",
            i + 1,
            fraction * 100.0
        );
        if t > progress.deadline {
            return Ok(Some(Verdict::failed(
                format!(
                    "{label}: the deploy deadline passed ({}s, deploy.deadline_secs)",
                    ctx.cfg.deploy.deadline_secs
                ),
                serde_json::to_value(&progress.steps[i]).unwrap_or(Value::Null),
            )));
        }
        let params = CanaryParams {
            window_secs: step_window(ctx),
            ..super::canary::params(ctx, state)
        };
        if progress.steps[i].progress.selection.is_none() {
            match select_step(ctx, link, state, progress, i, t)? {
                Err(why) => {
                    progress.steps[i].passed = Some(format!("{label}: skipped: {why}"));
                    tracing::info!(step = i + 1, "{why}");
                    checkpoint(ProgressRef::Deploy(&mut *progress))?;
                    continue;
                }
                Ok(selection) => {
                    CanaryMachine {
                        progress: &mut progress.steps[i].progress,
                        params: &params,
                    }
                    .handle(CanaryEvent::Selected { selection });
                    checkpoint(ProgressRef::Deploy(&mut *progress))?;
                }
            }
        }
        let mut step = progress.steps[i].progress.clone();
        let verdict = {
            let mut base = progress.clone();
            let mut persist = |p: &CanaryProgress| {
                base.steps[i].progress = p.clone();
                checkpoint(ProgressRef::Deploy(&mut base))
            };
            let mut select = |_: i64| -> Result<CanaryEvent, RuntimeError> {
                Err(RuntimeError::Fleet(crate::FleetFailure::Internal(
                    "a deploy step is selected before it is run",
                )))
            };
            run_phase(
                ctx,
                link,
                bytes,
                &mut step,
                Phase {
                    params: &params,
                    window_secs: params.window_secs,
                    what: "deploy step",
                    kill_point: "step-sent",
                    revoked_code: &revoked,
                    persist: &mut persist,
                    select: &mut select,
                    selected: &mut |_| Ok(()),
                },
            )?
        };
        progress.steps[i].progress = step;
        let detail = verdict
            .detail
            .strip_prefix("canary ")
            .unwrap_or(&verdict.detail);
        let detail = format!("{label}: {detail}");
        match verdict.outcome {
            Outcome::Passed => {
                tracing::info!(step = i + 1, "{detail}");
                progress.steps[i].passed = Some(detail);
                checkpoint(ProgressRef::Deploy(&mut *progress))?;
            }
            Outcome::Failed => return Ok(Some(Verdict::failed(detail, verdict.figures))),
            Outcome::Pending => return Ok(Some(Verdict::pending(detail, verdict.figures))),
        }
    }
    Ok(None)
}

/// A step's judging window: `[deploy] step_window_secs`, else the canary's.
fn step_window(ctx: &GateContext) -> i64 {
    ctx.cfg
        .deploy
        .step_window_secs
        .unwrap_or(ctx.cfg.canary.window_secs)
}

/// Step `i`'s slice: the hash-ranked `fraction` of the eligible nodes (ranked by the
/// manifest's canary seed, like the canary), less the nodes that run the release already;
/// its baseline is every other eligible node not updated. `Err(why)` when there is
/// nothing to judge (no node added, or none left to compare with).
fn select_step(
    ctx: &GateContext,
    link: &FleetLink,
    state: &PipelineState,
    progress: &DeployProgress,
    i: usize,
    t: i64,
) -> Result<Result<CanarySelection, String>, RuntimeError> {
    let timeout = u64::try_from(ctx.cfg.canary.heartbeat_timeout_secs).unwrap_or(60);
    let eligible = link
        .block_on(
            link.registry()
                .eligible_in_channel(t, timeout, Some(state.run_channel())),
        )
        .map_err(|e| fleet_op("failed to list eligible peers", e))?;
    let (seed_hex, seed) = super::canary::canary_seed(state)?;
    let fraction = progress.steps[i].fraction;
    let ranked = match fleetgate_canary::select_canary(&seed, &eligible, fraction, 1) {
        Ok(s) => s.nodes,
        Err(e) => return Ok(Err(format!("no slice to select: {e}"))),
    };
    let mut updated: BTreeSet<String> = canary_nodes(state).into_iter().collect();
    updated.extend(progress.step_nodes());
    let ids: Vec<String> = eligible.iter().map(|e| e.id.clone()).collect();
    let (slice, baseline) = step_slice(&ranked, &updated, &ids);
    if slice.is_empty() {
        return Ok(Err(format!(
            "{:.0}% of the {} eligible nodes run the release already",
            fraction * 100.0,
            ids.len()
        )));
    }
    if baseline.is_empty() {
        return Ok(Err(format!(
            "the slice ({}) is the rest of the fleet: no node is left to compare it with; the whole-fleet step updates it",
            slice.join(", ")
        )));
    }
    Ok(Ok(CanarySelection {
        nodes: slice,
        baseline,
        seed: seed_hex,
        eligible: ids.len(),
        per_region: BTreeMap::new(),
        selected_at: t,
        fencing_epoch: link.fencing_epoch(),
    }))
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
        .map_err(|e| fleet_op("failed to list peers", e))?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let nodes = m.nodes();
    let mut seen = link.observe_many(&nodes, t)?;
    // Only a node that is behind can have refused the release: ask its agent (a bounded
    // number per pass, concurrently; on a large fleet they are asked in turn).
    let behind: Vec<String> = nodes
        .iter()
        .filter(|n| {
            seen.get(*n)
                .is_none_or(|o| o.code_hash != m.params.code_hash)
        })
        .cloned()
        .collect();
    let refused = link.agents_refused(&behind, seq, STATUS_ASKS_PER_PASS);
    for node in nodes {
        let observed = seen.remove(&node);
        let refused_release = refused.contains(&node);
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
