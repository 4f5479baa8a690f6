//! The CANARY gate: the runtime half of [`fleetgate_core::fleet::CanaryMachine`]. Each pass
//! observes the canary nodes' latest heartbeats, ticks the machine, and carries out what
//! it asks: select (persisted before any node is contacted), send the signed manifest
//! (each node marked in flight and persisted first), and run the health judge over the
//! window from the registry's stored heartbeats.

use super::link::{FleetLink, fleet_op, now_secs};
use super::{Checkpoint, MAX_TICKS, ProgressRef, manifest_bytes};
use crate::RuntimeError;
use crate::gates::GateContext;
use fleetgate_canary::{Eligible, Judge, JudgeConfig, OnInconclusive, select_canary};
use fleetgate_core::config::InconclusivePolicy;
use fleetgate_core::fleet::{
    CanaryEvent, CanaryMachine, CanaryParams, CanaryProgress, CanarySelection, FleetCommand,
    JudgeDecision,
};
use fleetgate_core::{PipelineState, Verdict};
use serde_json::Value;
use std::collections::{BTreeSet, VecDeque};

/// Most pre-update history samples read per judge pass.
const HISTORY_SAMPLES: u64 = 60;

pub(crate) fn judge_config(ctx: &GateContext) -> JudgeConfig {
    let c = &ctx.cfg.canary;
    let pos = |v: i64| u64::try_from(v).unwrap_or(0);
    JudgeConfig {
        window_secs: pos(c.window_secs),
        sample_interval_secs: pos(c.sample_interval_secs),
        heartbeat_timeout_secs: pos(c.heartbeat_timeout_secs),
        max_exception_rate_increase: c.max_exception_rate_increase,
        min_canary_requests: pos(c.min_requests),
        on_inconclusive: match c.inconclusive_policy() {
            InconclusivePolicy::Extend => OnInconclusive::Extend,
            InconclusivePolicy::Hold => OnInconclusive::Hold,
            InconclusivePolicy::Rollback => OnInconclusive::Rollback,
        },
        max_window_secs: pos(c.max_window()),
        detect_exception_rate_increase: c.detect_exception_rate_increase,
        pre_window_secs: pos(c.pre_window_secs),
        ..JudgeConfig::default()
    }
}

/// The CANARY machine's settings from the config and the run.
pub fn params(ctx: &GateContext, state: &PipelineState) -> CanaryParams {
    CanaryParams {
        code_hash: state.code_hash.clone().unwrap_or_default(),
        window_secs: ctx.cfg.canary.window_secs,
        report_grace_secs: ctx.cfg.canary.heartbeat_timeout_secs,
        selection_timeout_secs: ctx.cfg.canary.selection_timeout_secs,
    }
}

/// One pass of CANARY.
pub fn canary(
    ctx: &GateContext,
    link: &FleetLink,
    state: &mut PipelineState,
    checkpoint: Checkpoint<'_>,
) -> Result<Verdict, RuntimeError> {
    // The gate's working copy of the progress (see `gates::evaluate`).
    let taken = state.canary.take();
    let state = &*state;
    let bytes = manifest_bytes(ctx, state)?;
    if let Some(held) = channel_paused(link, state)? {
        return Ok(held);
    }
    // Before anything is sent: the artifacts must be where the nodes fetch them.
    if taken.as_ref().is_none_or(|p| p.deliveries.is_empty())
        && let Some(held) = super::published::artifacts_missing(ctx, link, &bytes)?
    {
        return Ok(held);
    }
    let params = params(ctx, state);
    let revoked = || super::revoke::revoked_code_hashes(ctx, state);
    let mut progress = taken.unwrap_or_default();
    let mut persist = |p: &CanaryProgress| checkpoint(ProgressRef::Canary(p));
    let mut select = |t: i64| select(ctx, link, state, t);
    let mut selected = |s: &CanarySelection| record_selection(link, state, s);
    run_phase(
        ctx,
        link,
        &bytes,
        &mut progress,
        Phase {
            params: &params,
            window_secs: ctx.cfg.canary.window_secs,
            what: "canary",
            kill_point: "canary-sent",
            revoked_code: &revoked,
            persist: &mut persist,
            select: &mut select,
            selected: &mut selected,
        },
    )
}

/// While the run's channel is paused its nodes get nothing: the fleet stages hold
/// (pending, nothing sent, windows judged on when it resumes).
pub(crate) fn channel_paused(
    link: &FleetLink,
    state: &PipelineState,
) -> Result<Option<Verdict>, RuntimeError> {
    let channel = state.run_channel();
    let paused = link
        .block_on(link.registry().channel_paused(channel))
        .map_err(|e| fleet_op("failed to read the channel", e))?;
    Ok(paused.then(|| {
        Verdict::pending(
            format!(
                "channel `{channel}` is paused: its nodes get nothing until `fleetgate fleet channel resume {channel}`"
            ),
            serde_json::json!({"channel": channel, "channel_paused": true}),
        )
    }))
}

/// A canary-like phase: the CANARY gate, or one step of a phased DEPLOY.
pub(crate) struct Phase<'a> {
    /// The machine's settings.
    pub params: &'a CanaryParams,
    /// The judge's window (seconds).
    pub window_secs: i64,
    /// What it is called in logs.
    pub what: &'static str,
    /// The test kill point right after a send.
    pub kill_point: &'static str,
    /// Code of rejected releases, left out of the judge's pre-update history (read when
    /// a judge is built, not at every pass); when it cannot be known (`Err`), the judge
    /// gets no pre-update history and compares the canary with the baseline only.
    pub revoked_code: &'a dyn Fn() -> Result<BTreeSet<String>, String>,
    /// Persist the phase's progress (before an outside effect).
    pub persist: &'a mut dyn FnMut(&CanaryProgress) -> Result<(), RuntimeError>,
    /// Select the nodes (when the machine asks).
    pub select: &'a mut dyn FnMut(i64) -> Result<CanaryEvent, RuntimeError>,
    /// Called once a selection is persisted.
    pub selected: &'a mut dyn FnMut(&CanarySelection) -> Result<(), RuntimeError>,
}

/// One pass of a canary-like phase over `progress`.
pub(crate) fn run_phase(
    ctx: &GateContext,
    link: &FleetLink,
    bytes: &[u8],
    progress: &mut CanaryProgress,
    phase: Phase<'_>,
) -> Result<Verdict, RuntimeError> {
    let Phase {
        params,
        window_secs,
        what,
        kill_point,
        revoked_code,
        persist,
        select,
        selected,
    } = phase;
    let t = now_secs();
    let mut m = CanaryMachine { progress, params };
    observe(link, &mut m, t)?;
    let mut queue: VecDeque<FleetCommand> = m.handle(CanaryEvent::Tick { now: t }).into();
    let mut ticks = 1;
    while let Some(cmd) = queue.pop_front() {
        match cmd {
            FleetCommand::Persist => persist(m.progress)?,
            FleetCommand::SelectCanary => {
                let event = select(t)?;
                let selection = match &event {
                    CanaryEvent::Selected { selection } => Some(selection.clone()),
                    _ => None,
                };
                let was_selected = selection.is_some();
                queue.extend(m.handle(event));
                if let Some(selection) = selection {
                    // The state file first: a restart then reuses this selection, so the
                    // registry's copy (which refuses a different one) always matches.
                    persist(m.progress)?;
                    selected(&selection)?;
                }
                if was_selected && ticks < MAX_TICKS {
                    ticks += 1;
                    queue.extend(m.handle(CanaryEvent::Tick { now: t }));
                }
            }
            FleetCommand::Send { nodes } => {
                let answers = link.send(&nodes, bytes);
                fleetgate_store::kill_point(kill_point);
                for (node, answer) in answers {
                    tracing::debug!(node = %node, answer = ?answer, "{what} apply answered");
                    super::push_coalesced(
                        &mut queue,
                        m.handle(CanaryEvent::Answered { node, answer }),
                    );
                }
                if ticks < MAX_TICKS {
                    ticks += 1;
                    let t2 = now_secs();
                    observe(link, &mut m, t2)?;
                    queue.extend(m.handle(CanaryEvent::Tick { now: t2 }));
                }
            }
            FleetCommand::Judge {
                window_start,
                canary,
                baseline,
            } => {
                let window = Window {
                    start: window_start,
                    secs: window_secs,
                    paused_secs: m.progress.paused_secs,
                };
                let event = judge(
                    ctx,
                    link,
                    (&params.code_hash, revoked_code),
                    window,
                    canary,
                    baseline,
                )?;
                queue.extend(m.handle(event));
            }
            FleetCommand::Verdict(v) => return Ok(v),
            FleetCommand::ListTargets | FleetCommand::Publish => {
                return Err(crate::FleetFailure::Internal(
                    "a CANARY machine asked for a DEPLOY command",
                )
                .into());
            }
        }
    }
    Ok(Verdict::pending(
        format!("{what}: waiting for the next pass"),
        super::delivery_summary(&m.progress.deliveries),
    ))
}

fn observe(link: &FleetLink, m: &mut CanaryMachine<'_>, t: i64) -> Result<(), RuntimeError> {
    let nodes: Vec<String> = m
        .progress
        .selection
        .as_ref()
        .map(|s| s.nodes.clone())
        .unwrap_or_default();
    let mut seen = link.observe_many(&nodes, t)?;
    for node in nodes {
        let observed = seen.remove(&node);
        m.handle(CanaryEvent::Observed { node, observed });
    }
    Ok(())
}

fn select(
    ctx: &GateContext,
    link: &FleetLink,
    state: &PipelineState,
    t: i64,
) -> Result<CanaryEvent, RuntimeError> {
    let timeout = u64::try_from(ctx.cfg.canary.heartbeat_timeout_secs).unwrap_or(60);
    let eligible: Vec<Eligible> = link
        .block_on(
            link.registry()
                .eligible_in_channel(t, timeout, Some(state.run_channel())),
        )
        .map_err(|e| fleet_op("failed to list eligible peers", e))?;
    let (seed_hex, seed) = canary_seed(state)?;
    let min = usize::try_from(ctx.cfg.canary.min_nodes).unwrap_or(1);
    let selection = match select_canary(&seed, &eligible, ctx.cfg.canary.pct, min) {
        Ok(s) => s,
        Err(e) => {
            let enrolled = link
                .block_on(link.registry().peer_count())
                .map_err(|e| fleet_op("failed to count peers", e))?;
            return Ok(CanaryEvent::TooFewPeers {
                enrolled,
                eligible: eligible.len(),
                reason: format!("cannot select canary nodes: {e}"),
                now: t,
            });
        }
    };
    let chosen: BTreeSet<&str> = selection.nodes.iter().map(String::as_str).collect();
    let baseline: Vec<String> = eligible
        .iter()
        .filter(|e| !chosen.contains(e.id.as_str()))
        .map(|e| e.id.clone())
        .collect();
    Ok(CanaryEvent::Selected {
        selection: CanarySelection {
            nodes: selection.nodes.clone(),
            baseline,
            seed: seed_hex,
            eligible: selection.eligible,
            per_region: selection.per_region.clone(),
            selected_at: t,
            fencing_epoch: link.fencing_epoch(),
        },
    })
}

/// The signed manifest's `canary_seed`, as hex and bytes: it ranks the nodes for the
/// canary and for every DEPLOY step.
pub(crate) fn canary_seed(state: &PipelineState) -> Result<(String, Vec<u8>), RuntimeError> {
    let seed_hex = state
        .manifest
        .as_ref()
        .and_then(|m| m.get("canary_seed"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let seed = hex::decode(&seed_hex)
        .map_err(|e| RuntimeError::Fleet(crate::FleetFailure::BadCanarySeed(e)))?;
    Ok((seed_hex, seed))
}

/// The selection is also recorded in the registry (under the lease), so any node or a
/// standby can check it.
fn record_selection(
    link: &FleetLink,
    state: &PipelineState,
    s: &CanarySelection,
) -> Result<(), RuntimeError> {
    let selection = fleetgate_canary::Selection {
        seed_hex: s.seed.clone(),
        eligible: s.eligible,
        pct: 0.0,
        min: 0,
        nodes: s.nodes.clone(),
        per_region: s.per_region.clone(),
    };
    let run_id = state.run_id.clone().unwrap_or_default();
    link.block_on(link.registry().persist_selection(
        &run_id,
        &selection,
        &link.fence(),
        link.db_now(),
    ))
    .map_err(|e| fleet_op("failed to record the canary selection", e))
}

/// Replay the window from the heartbeats stored in the registry, sampling when the judge
/// asks (`SampleAt`), so a restarted orchestrator judges exactly the same samples.
///
/// History points, in time order, from `start − pre` to `start`: `HISTORY_SAMPLES` spread
/// evenly over the whole span (the judge uses the counters' changes, not the cadence)
/// plus the last `HISTORY_SAMPLES / 2` sample intervals before the start, so a fleet or
/// node only seconds old still has its history counted (with points 30 s apart, a node
/// up for 20 s had none, and the judge fell back to comparing nodes with each other).
fn history_points(start: u64, pre: u64, interval: u64) -> Vec<u64> {
    if pre == 0 {
        return Vec::new();
    }
    let from = start.saturating_sub(pre);
    let step = interval.max(pre.div_ceil(HISTORY_SAMPLES));
    let mut points: Vec<u64> = (0..)
        .map(|k| from + k * step)
        .take_while(|t| *t <= start)
        .chain(
            (0..HISTORY_SAMPLES / 2)
                .map(|k| start.saturating_sub(k * interval))
                .filter(|t| *t >= from),
        )
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// A judged window: when it opened, its length, and how long the run was paused in it.
struct Window {
    start: i64,
    secs: i64,
    paused_secs: i64,
}

/// How long after a sample time the registry's heartbeats at or before it are taken as
/// final: a heartbeat is stamped with the endpoint's clock when it arrives and written
/// within a batch (well under a second), so only an endpoint clock behind the
/// orchestrator's by more than this could add one later.
const SETTLE_SECS: u64 = 120;

/// The judge between checks of one orchestrator process: its state after the history and
/// every window sample up to a settled time (older than [`SETTLE_SECS`] plus a sample
/// interval), so a check reads only the samples after it instead of replaying the whole
/// window (at 100,000 nodes, each sample is a read of every node's latest heartbeat).
/// Derived data only: it is valid for exactly the inputs in `key`, a restarted
/// orchestrator replays from the registry, and a replay gives the same verdict because
/// the samples it covers can no longer change.
#[derive(Debug)]
pub(crate) struct JudgeMemo {
    key: [u8; 32],
    judge: Judge,
    /// The next window sample time to feed.
    next: u64,
    decided: bool,
}

/// What a memo is valid for: the judge's configuration, the expected code hash, the
/// window's start and both node sets, in order.
fn memo_key(
    config: &JudgeConfig,
    code_hash: &str,
    start: u64,
    canary: &[String],
    baseline: &[String],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config).unwrap_or_default());
    for part in [code_hash.as_bytes(), &start.to_be_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    for set in [canary, baseline] {
        h.update((set.len() as u64).to_be_bytes());
        for n in set {
            h.update((n.len() as u64).to_be_bytes());
            h.update(n.as_bytes());
        }
    }
    h.finalize().into()
}

/// Takes the judge kept between checks out of `link` (to be dropped: it holds per-node
/// state for every node of the fleet). A later check replays from the registry.
pub(crate) fn forget_judge(link: &FleetLink) -> Option<JudgeMemo> {
    link.judge_memo
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
}

fn judge(
    ctx: &GateContext,
    link: &FleetLink,
    (code_hash, revoked): (&str, &dyn Fn() -> Result<BTreeSet<String>, String>),
    window: Window,
    canary: Vec<String>,
    baseline: Vec<String>,
) -> Result<CanaryEvent, RuntimeError> {
    let config = window_config(ctx, &window);
    let interval = u64::try_from(ctx.cfg.canary.sample_interval_secs)
        .unwrap_or(30)
        .max(1);
    let now = u64::try_from(now_secs()).unwrap_or(0);
    let start = u64::try_from(window.start).unwrap_or(0);
    let mut memo = link.judge_memo.lock().unwrap_or_else(|p| p.into_inner());
    let (canary_ids, baseline_ids) = (canary.clone(), baseline.clone());
    judge_with(
        JudgeInput {
            config,
            code_hash,
            revoked,
            start,
            interval,
            now,
            canary,
            baseline,
        },
        &mut memo,
        |t, history| {
            let what = if history {
                "failed to read the pre-update history"
            } else {
                "failed to read samples"
            };
            link.block_on(link.registry().sample(&canary_ids, &baseline_ids, t as i64))
                .map_err(|e| fleet_op(what, e))
        },
    )
}

/// The judge's settings for `window` (its length, the time the run was paused in it).
fn window_config(ctx: &GateContext, window: &Window) -> JudgeConfig {
    // The window's clock stopped while the run was paused: its deadline (and the longest
    // extension) move by the paused time. Heartbeats taken meanwhile still count as
    // evidence: the canary nodes kept running the release.
    let paused = u64::try_from(window.paused_secs).unwrap_or(0);
    let mut config = judge_config(ctx);
    // A window of another length (a DEPLOY step's) keeps the canary's extension.
    let secs = u64::try_from(window.secs).unwrap_or(0);
    let extension = config.max_window_secs.saturating_sub(config.window_secs);
    config.window_secs = secs.saturating_add(paused);
    config.max_window_secs = secs.saturating_add(extension).saturating_add(paused);
    config
}

/// One judge check's inputs.
struct JudgeInput<'a> {
    config: JudgeConfig,
    code_hash: &'a str,
    /// Code of rejected releases (left out of the history); read when a judge is built.
    /// Not part of the memo's key: no order is signed while a window is judged.
    revoked: &'a dyn Fn() -> Result<BTreeSet<String>, String>,
    start: u64,
    interval: u64,
    now: u64,
    canary: Vec<String>,
    baseline: Vec<String>,
}

/// Judge the window as of `input.now` from the samples `sample(t, is_history)` gives,
/// starting from `memo` when it was made for the same inputs, and leave in `memo` the
/// judge as of its last settled sample.
fn judge_with(
    input: JudgeInput<'_>,
    memo: &mut Option<JudgeMemo>,
    mut sample: impl FnMut(u64, bool) -> Result<fleetgate_canary::Sample, RuntimeError>,
) -> Result<CanaryEvent, RuntimeError> {
    let JudgeInput {
        config,
        code_hash,
        revoked,
        start,
        interval,
        now,
        canary,
        baseline,
    } = input;
    let judge_err = |e| RuntimeError::Fleet(crate::FleetFailure::Judge(e));
    let key = memo_key(&config, code_hash, start, &canary, &baseline);
    let settled = now.saturating_sub(interval.saturating_add(SETTLE_SECS));
    let (mut judge, mut next, mut decided) = match memo.take().filter(|m| m.key == key) {
        Some(m) => (m.judge, m.next, m.decided),
        None => {
            let revoked = revoked();
            let mut judge = Judge::new(config, code_hash, canary, baseline, start)
                .map_err(judge_err)?
                .with_revoked_code(revoked.clone().unwrap_or_default());
            // Each canary node is judged against its own rate before the update
            // (difference in differences): feed the stored heartbeats of
            // `pre_window_secs` before the window. At most `HISTORY_SAMPLES` samples: the
            // judge uses the counters' changes over the history, not its cadence. Without
            // knowing which code was rolled back, no history: a rejected release's
            // intervals counted as a node's natural rate could hide a regression.
            let pre = match &revoked {
                Ok(_) => judge.config().pre_window_secs,
                Err(reason) => {
                    tracing::warn!(%reason, "the rolled-back releases cannot be read: the canary is judged against the baseline only, without each node's pre-update history");
                    0
                }
            };
            for t in history_points(start, pre, interval) {
                judge
                    .on_event(fleetgate_canary::Event::History(sample(t, true)?))
                    .map_err(judge_err)?;
            }
            (judge, start + interval, false)
        }
    };
    // The history ends at `start`: nothing is kept before that is settled.
    let keep = |judge: &Judge, next: u64, decided: bool| {
        (start <= settled).then(|| JudgeMemo {
            key,
            judge: judge.clone(),
            next,
            decided,
        })
    };
    let mut kept = None;
    while next <= now && !decided {
        if next > settled && kept.is_none() {
            kept = keep(&judge, next, decided);
        }
        let cmds = judge
            .on_event(fleetgate_canary::Event::Sample(sample(next, false)?))
            .map_err(judge_err)?;
        let at = next;
        next = at + interval;
        for c in cmds {
            match c {
                fleetgate_canary::Command::SampleAt { at: want } => next = want.max(at + 1),
                fleetgate_canary::Command::ExtendWindow { until } => {
                    tracing::info!(until, "canary window extended for more data");
                }
                fleetgate_canary::Command::Hold { verdict } => {
                    tracing::info!(reason = %verdict.reason, "canary inconclusive: held for an operator");
                }
                fleetgate_canary::Command::Promote { .. }
                | fleetgate_canary::Command::Rollback { .. } => decided = true,
            }
        }
    }
    if kept.is_none() && !decided {
        // Every sample fed is settled (or none was due yet).
        kept = keep(&judge, next, decided);
    }
    if !decided {
        judge
            .on_event(fleetgate_canary::Event::Tick { now })
            .map_err(judge_err)?;
    }
    // A decided window needs no memo: the gate moves on.
    *memo = if decided { None } else { kept };
    let v = judge.verdict().clone();
    let figures = serde_json::to_value(&v).unwrap_or(Value::Null);
    let decision = match v.decision {
        fleetgate_canary::Decision::Pass => JudgeDecision::Pass,
        fleetgate_canary::Decision::Pending => JudgeDecision::Pending,
        fleetgate_canary::Decision::Fail => JudgeDecision::Fail,
        fleetgate_canary::Decision::Inconclusive => JudgeDecision::Inconclusive,
    };
    let detail = match decision {
        JudgeDecision::Pending => format!("{} samples, {}", v.samples, v.reason),
        JudgeDecision::Pass | JudgeDecision::Fail | JudgeDecision::Inconclusive => v.reason,
    };
    Ok(CanaryEvent::Judged {
        decision,
        detail,
        figures,
    })
}

#[cfg(test)]
mod tests {
    use super::{JudgeInput, JudgeMemo, SETTLE_SECS, history_points, judge_with};
    use fleetgate_canary::{JudgeConfig, NodeReport, Sample};
    use fleetgate_core::fleet::CanaryEvent;

    const START: u64 = 1_000_000;
    const INTERVAL: u64 = 30;

    /// A fleet's heartbeats as of `t`: 5 canary nodes on the release after the start,
    /// 20 baseline nodes, every node with its own steady exception rate.
    fn fleet_at(t: u64) -> Sample {
        let node = |id: String, i: u64, canary: bool| NodeReport {
            heartbeat_at: Some(t),
            healthy: Some(true),
            code_hash: Some(if canary && t > START { "new" } else { "old" }.into()),
            exceptions_total: t * (2 + i % 3) / 100,
            requests_total: t * 10,
            bench: Default::default(),
            node_id: id,
        };
        let mut nodes: Vec<NodeReport> = (0..5).map(|i| node(format!("c{i}"), i, true)).collect();
        nodes.extend((0..20).map(|i| node(format!("b{i}"), i, false)));
        Sample { at: t, nodes }
    }

    /// What the gate hands the judge as the rolled-back code.
    type Revoked = dyn Fn() -> Result<std::collections::BTreeSet<String>, String>;

    /// The gate's inputs for the fleet of [`fleet_at`] as of `now`, with `revoked` as the
    /// code the pipeline rolled back.
    fn input(now: u64, revoked: &Revoked) -> JudgeInput<'_> {
        JudgeInput {
            config: JudgeConfig {
                window_secs: 1200,
                max_window_secs: 2400,
                sample_interval_secs: INTERVAL,
                pre_window_secs: 600,
                min_canary_requests: 10,
                ..JudgeConfig::default()
            },
            code_hash: "new",
            revoked,
            start: START,
            interval: INTERVAL,
            now,
            canary: (0..5).map(|i| format!("c{i}")).collect(),
            baseline: (0..20).map(|i| format!("b{i}")).collect(),
        }
    }

    fn check(now: u64, memo: &mut Option<JudgeMemo>, read: &mut Vec<u64>) -> CanaryEvent {
        let none = || Ok(std::collections::BTreeSet::new());
        judge_with(input(now, &none), memo, |t, _| {
            read.push(t);
            Ok(fleet_at(t))
        })
        .unwrap()
    }

    #[test]
    fn a_memoized_judge_gives_the_replays_verdict_and_rereads_only_unsettled_samples() {
        let (first, second) = (START + 600, START + 900);
        // A fresh replay at the second check (a restarted orchestrator).
        let mut fresh_reads = Vec::new();
        let replay = check(second, &mut None, &mut fresh_reads);
        // One process checking twice.
        let mut memo = None;
        let mut reads = Vec::new();
        let at_first = check(first, &mut memo, &mut reads);
        assert!(
            matches!(&at_first, CanaryEvent::Judged { detail, .. } if detail.contains("samples")),
            "{at_first:?}"
        );
        let kept = memo
            .as_ref()
            .expect("a judge past its settled samples is kept");
        let settled = first - INTERVAL - SETTLE_SECS;
        assert!(kept.next > settled && kept.next <= first, "{}", kept.next);
        reads.clear();
        let memoized = check(second, &mut memo, &mut reads);
        assert_eq!(memoized, replay, "the same verdict and figures as a replay");
        // The second check read the samples from the first unsettled one on, each once,
        // and no history: a late heartbeat for any of them is still seen.
        let expected: Vec<u64> = fresh_reads
            .iter()
            .copied()
            .filter(|t| *t > settled && *t > START)
            .collect();
        assert_eq!(reads, expected);
        assert!(
            reads.len() * 3 < fresh_reads.len(),
            "{} of {}",
            reads.len(),
            fresh_reads.len()
        );
    }

    #[test]
    fn a_memo_is_used_only_for_the_inputs_it_was_made_for() {
        let mut memo = None;
        let mut reads = Vec::new();
        check(START + 600, &mut memo, &mut reads);
        assert!(memo.is_some());
        let mut other = memo.take();
        if let Some(m) = &mut other {
            m.key[0] ^= 1;
        }
        reads.clear();
        let replayed = check(START + 900, &mut other, &mut reads);
        assert_eq!(replayed, check(START + 900, &mut None, &mut Vec::new()));
        assert!(
            reads.iter().any(|t| *t < START),
            "the history was read again"
        );
        // A window not settled yet keeps nothing.
        let mut early = None;
        check(START + INTERVAL, &mut early, &mut Vec::new());
        assert!(early.is_none());
    }

    /// The baseline's change the judge reports at `START + 300` when baseline node b0 ran
    /// code "bad" (10× the exceptions) for the first half of the 600 s history, with
    /// `revoked` as the gate's revoked code.
    fn baseline_change_after_a_rejected_release(revoked: Result<&[&str], &str>) -> f64 {
        judged_after_a_rejected_release(revoked, &mut Vec::new())["criteria"][0]["figures"]
            ["baseline_change"]
            .as_f64()
            .unwrap()
    }

    /// The judge's figures for that fleet; `history_reads` gets the history samples read.
    fn judged_after_a_rejected_release(
        revoked: Result<&[&str], &str>,
        history_reads: &mut Vec<u64>,
    ) -> serde_json::Value {
        let bad = |t: u64| t.saturating_sub(START - 600).min(300);
        let at = |t: u64| {
            let mut s = fleet_at(t);
            for n in &mut s.nodes {
                n.exceptions_total = t * 10 / 50;
                if n.node_id == "b0" {
                    n.exceptions_total += bad(t) * 10 * 18 / 100;
                    let on_bad = (START - 600 < t) && (t <= START - 300);
                    n.code_hash = Some(if on_bad { "bad" } else { "old" }.into());
                }
            }
            s
        };
        let revoked: Result<std::collections::BTreeSet<String>, String> = revoked
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .map_err(str::to_owned);
        let revoked = move || revoked.clone();
        let input = input(START + 300, &revoked);
        let CanaryEvent::Judged { figures, .. } = judge_with(input, &mut None, |t, history| {
            if history {
                history_reads.push(t);
            }
            Ok(at(t))
        })
        .unwrap() else {
            panic!("not judged");
        };
        figures
    }

    #[test]
    fn the_gate_hands_the_revoked_code_to_the_judge() {
        // Told that "bad" was rolled back, the judge leaves b0's time on it out: the
        // baseline did not change. Not told, b0's "natural" rate is inflated and the
        // baseline seems to have improved by a fifth in the window.
        let told = baseline_change_after_a_rejected_release(Ok(&["bad"]));
        assert!((told - 1.0).abs() < 0.02, "{told}");
        let not_told = baseline_change_after_a_rejected_release(Ok(&[]));
        assert!(not_told < 0.9, "{not_told}");
    }

    #[test]
    fn when_the_rolled_back_code_cannot_be_read_the_judge_gets_no_history() {
        let mut reads = Vec::new();
        let known = judged_after_a_rejected_release(Ok(&["bad"]), &mut reads);
        assert!(!reads.is_empty());
        assert_eq!(
            known["criteria"][0]["statistic"]["method"], "diff_in_diff",
            "{known}"
        );
        // Unknown: not one history sample is read, and the canary is compared with the
        // baseline over the same time only.
        reads.clear();
        let unknown = judged_after_a_rejected_release(
            Err("manifests/rollback-x.json: unreadable"),
            &mut reads,
        );
        assert!(reads.is_empty(), "{reads:?}");
        assert_eq!(
            unknown["criteria"][0]["statistic"]["method"], "cross_section",
            "{unknown}"
        );
    }

    #[test]
    fn history_points_cover_the_span_and_are_dense_near_the_start() {
        assert!(history_points(10_000, 0, 1).is_empty());
        let p = history_points(10_000, 1800, 1);
        assert_eq!(p.first(), Some(&8_200));
        assert_eq!(p.last(), Some(&10_000));
        assert!(p.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        // Every one of the last 30 seconds is a point: a node up for 20 s has history.
        assert!((9_971..=10_000).all(|t| p.contains(&t)));
        assert!(p.len() <= 61 + 30, "{} points", p.len());
        // Near time zero nothing underflows.
        assert_eq!(history_points(5, 1800, 1), vec![0, 1, 2, 3, 4, 5]);
    }
}
