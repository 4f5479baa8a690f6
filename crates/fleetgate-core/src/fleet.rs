//! CANARY, DEPLOY and rollback delivery as pure, level-triggered machines.
//!
//! The fleet stages act on many nodes that crash, restart, lose packets and answer late,
//! so they are driven like a Kubernetes controller: each pass the runtime first feeds what
//! it **observes** (each node's latest signed heartbeat), then a `Tick`; the machine
//! compares the desired state with the observed one and answers with [`FleetCommand`]s
//! (select, send, publish, judge, verdict). The runtime carries them out and feeds the
//! results back as events. Progress is typed and persisted in [`PipelineState`] (and, for
//! rollback orders, in the outbox effect) *before* the outside effect it describes, so a
//! killed orchestrator resumes exactly where it stood.
//!
//! Every outside effect has an identity — (run, node, manifest sequence) — and sending it
//! twice is harmless: the node agent answers a manifest it already committed with
//! `already_applied`. A node's answer is classified into a [`NodeAnswer`] by what the node
//! says it *runs now*, never by an HTTP status alone.
//!
//! No I/O, no clock: time arrives in events.
//!
//! [`PipelineState`]: crate::PipelineState

use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Seconds before an unanswered or failed send to a node is tried again: 2, 4, 8 … 60.
#[must_use]
pub fn backoff_secs(attempts: u32) -> i64 {
    (1_i64 << attempts.clamp(1, 6)).min(60)
}

/// How many times a best-effort delivery (a node that never got the release) is tried
/// before it is given up; gossip anti-entropy carries a revocation the rest of the way.
pub const BEST_EFFORT_ATTEMPTS: u32 = 3;

/// What a node answered to a signed manifest, classified by the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeAnswer {
    /// The node committed the manifest (`applied`, `noop`, `already_applied`).
    Accepted {
        /// The agent's outcome name.
        outcome: String,
        /// The code hash it runs now, when it said.
        running_code_hash: Option<String>,
    },
    /// Nothing is known: busy, unreachable, timed out, a server error. Try again.
    Unknown {
        /// What happened.
        error: String,
    },
    /// The manifest's sequence is at or below the node's anti-rollback floor.
    BelowFloor {
        /// The node's floor.
        floor: Option<u64>,
        /// The code hash it runs now, when it said.
        running_code_hash: Option<String>,
    },
    /// The node tried, and the release failed there (it runs its previous version again),
    /// or it refuses a release that failed there before.
    Failed {
        /// The agent's outcome name (`failed`, `rolled_back`, `refused`, `interrupted`).
        outcome: String,
        /// The agent's detail.
        detail: String,
        /// The code hash it runs now, when it said.
        running_code_hash: Option<String>,
    },
    /// Refused for good before anything was done (signature, expiry, malformed order).
    Rejected {
        /// The agent's reason name.
        reason: String,
        /// The agent's message.
        detail: String,
    },
}

/// What the registry says one node runs now (its latest signed heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Code hash it reports.
    pub code_hash: String,
    /// Its application's health check.
    pub healthy: bool,
    /// When the heartbeat was received (unix seconds).
    pub at: i64,
    /// The anti-rollback floor it reports (0 when its agent does not report one).
    pub floor: u64,
}

/// What a delivery wants from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal<'a> {
    /// Run this code hash (a release).
    Run(&'a str),
    /// Stop running this code hash and raise the floor past the order (a rollback order).
    Revoke(&'a str),
}

/// The state of one node's delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// To be sent (again) once `next_attempt_at` has passed.
    Queued,
    /// Persisted as being sent; no answer recorded yet (a kill or a lost answer). Sent
    /// again after `next_attempt_at` unless the goal is observed first.
    InFlight,
    /// The goal holds (answered or observed).
    Done,
    /// The goal cannot be reached on this node (the release failed or is refused there).
    Failed,
    /// A best-effort delivery that was given up (the node never got the release and did
    /// not answer).
    Skipped,
}

/// One node's delivery of one signed manifest: the effect (run, node, sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeDelivery {
    /// Node id.
    pub node: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Sends so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not sent again before this time (unix seconds).
    #[serde(default)]
    pub next_attempt_at: i64,
    /// Must reach `done` for the delivery to be complete (the node may have the release).
    /// Otherwise best effort: given up after [`BEST_EFFORT_ATTEMPTS`].
    #[serde(default = "yes")]
    pub required: bool,
    /// The last answer.
    // Boxed: a DEPLOY holds one delivery per node, most with no answer kept (an
    // unreachable node's error is its `detail`), and an inline answer would make every
    // one of them as large as the largest answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_answer: Option<Box<NodeAnswer>>,
    /// Why it is where it is (the failure or the last error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn yes() -> bool {
    true
}

impl NodeDelivery {
    /// A delivery not sent yet.
    #[must_use]
    pub fn new(node: impl Into<String>, required: bool) -> NodeDelivery {
        NodeDelivery {
            node: node.into(),
            status: DeliveryStatus::Queued,
            attempts: 0,
            next_attempt_at: 0,
            required,
            last_answer: None,
            detail: None,
        }
    }

    /// Whether it should be sent now.
    #[must_use]
    pub fn due(&self, now: i64) -> bool {
        matches!(
            self.status,
            DeliveryStatus::Queued | DeliveryStatus::InFlight
        ) && now >= self.next_attempt_at
    }

    /// Whether it is settled (nothing more to send).
    #[must_use]
    pub fn settled(&self) -> bool {
        matches!(
            self.status,
            DeliveryStatus::Done | DeliveryStatus::Failed | DeliveryStatus::Skipped
        )
    }

    /// Mark as being sent. Persist this before sending.
    pub fn sending(&mut self, now: i64) {
        self.status = DeliveryStatus::InFlight;
        self.attempts = self.attempts.saturating_add(1);
        self.next_attempt_at = now.saturating_add(backoff_secs(self.attempts));
    }

    fn retry(&mut self, detail: String) {
        if !self.required && self.attempts >= BEST_EFFORT_ATTEMPTS {
            self.status = DeliveryStatus::Skipped;
            self.detail = Some(format!(
                "given up after {} attempts: {detail}",
                self.attempts
            ));
        } else {
            self.status = DeliveryStatus::Queued;
            self.detail = Some(detail);
        }
    }

    /// Record the node's answer, deciding from what it runs now.
    pub fn answered(&mut self, goal: &Goal<'_>, answer: NodeAnswer) {
        if self.settled() {
            return;
        }
        let running = match &answer {
            NodeAnswer::Accepted {
                running_code_hash, ..
            }
            | NodeAnswer::BelowFloor {
                running_code_hash, ..
            }
            | NodeAnswer::Failed {
                running_code_hash, ..
            } => running_code_hash.clone(),
            NodeAnswer::Unknown { .. } | NodeAnswer::Rejected { .. } => None,
        };
        let runs = |h: &str| running.as_deref() == Some(h);
        match (goal, &answer) {
            (_, NodeAnswer::Unknown { error }) => self.retry(error.clone()),
            (Goal::Run(_), NodeAnswer::Accepted { outcome, .. }) => {
                self.status = DeliveryStatus::Done;
                self.detail = Some(outcome.clone());
            }
            (Goal::Run(h), NodeAnswer::BelowFloor { floor, .. }) => {
                if runs(h) {
                    self.status = DeliveryStatus::Done;
                    self.detail = Some("already runs the release".into());
                } else {
                    self.status = DeliveryStatus::Failed;
                    self.detail = Some(format!(
                        "the node refuses the release: its anti-rollback floor {} is above it (a newer release or a rollback order superseded it); it runs {}",
                        floor.map_or_else(|| "?".into(), |f| f.to_string()),
                        running.as_deref().map_or("nothing reported", short)
                    ));
                }
            }
            (
                Goal::Run(_),
                NodeAnswer::Failed {
                    outcome, detail, ..
                },
            ) => {
                self.status = DeliveryStatus::Failed;
                self.detail = Some(format!("{outcome}: {}", clip(detail, 400)));
            }
            (Goal::Run(_) | Goal::Revoke(_), NodeAnswer::Rejected { reason, detail }) => {
                self.status = DeliveryStatus::Failed;
                self.detail = Some(format!("refused ({reason}): {}", clip(detail, 400)));
            }
            (Goal::Revoke(bad), NodeAnswer::Accepted { outcome, .. }) => {
                if runs(bad) {
                    self.retry(format!(
                        "answered {outcome} but still runs the revoked code hash {}",
                        short(bad)
                    ));
                } else {
                    self.status = DeliveryStatus::Done;
                    self.detail = Some(outcome.clone());
                }
            }
            (Goal::Revoke(bad), NodeAnswer::BelowFloor { floor, .. }) => {
                // Its floor is at or above the order: it obeyed this order (or a newer one).
                if runs(bad) {
                    self.status = DeliveryStatus::Failed;
                    self.detail = Some(format!(
                        "floor {} is past the order, yet it still runs the revoked code hash {}",
                        floor.map_or_else(|| "?".into(), |f| f.to_string()),
                        short(bad)
                    ));
                } else {
                    self.status = DeliveryStatus::Done;
                    self.detail = Some("already obeyed the order".into());
                }
            }
            (
                Goal::Revoke(bad),
                NodeAnswer::Failed {
                    outcome, detail, ..
                },
            ) => {
                if running.is_some() && !runs(bad) {
                    self.status = DeliveryStatus::Done;
                    self.detail = Some(format!("{outcome}; it does not run the revoked release"));
                } else {
                    self.retry(format!(
                        "returning failed ({outcome}): {}",
                        clip(detail, 400)
                    ));
                }
            }
        }
        // An unreachable node's answer is its error, kept in `detail` already: not twice
        // (a DEPLOY to many pull-mode nodes keeps one per node in the state).
        self.last_answer = match answer {
            NodeAnswer::Unknown { .. } => None,
            other => Some(Box::new(other)),
        };
    }

    /// Record what the node's latest heartbeat says it runs. A release is delivered once
    /// the node reports its code hash (the answer may have been lost). A revocation needs
    /// the node's answer: a heartbeat does not show the floor.
    pub fn observed(&mut self, goal: &Goal<'_>, obs: Option<&Observed>) {
        if let (Goal::Run(h), Some(o)) = (goal, obs)
            && o.code_hash == *h
            && !self.settled()
        {
            self.status = DeliveryStatus::Done;
            self.detail = Some("reports the release's code hash".into());
        }
    }
}

/// Marks every delivery that is due at `now` as being sent and returns their nodes
/// (persist before sending).
fn send_due(deliveries: &mut [NodeDelivery], now: i64) -> Vec<String> {
    deliveries
        .iter_mut()
        .filter(|d| d.due(now))
        .map(|d| {
            d.sending(now);
            d.node.clone()
        })
        .collect()
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The commands a fleet machine asks the runtime to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetCommand {
    /// Persist the machine's progress (before any command after it).
    Persist,
    /// List the eligible peers and select the canary; feed [`CanaryEvent::Selected`] or
    /// [`CanaryEvent::TooFewPeers`].
    SelectCanary,
    /// List the deploy targets (verified, active peers that are not canary nodes); feed
    /// [`DeployEvent::Targets`].
    ListTargets,
    /// POST the signed manifest to these nodes (marked in flight and persisted already);
    /// feed one answer per node.
    Send {
        /// Node ids.
        nodes: Vec<String>,
    },
    /// Hand the signed manifest to gossip; feed [`DeployEvent::Published`].
    Publish,
    /// Run the canary health judge over the window; feed [`CanaryEvent::Judged`].
    Judge {
        /// Window start (unix seconds).
        window_start: i64,
        /// Canary nodes.
        canary: Vec<String>,
        /// Baseline nodes.
        baseline: Vec<String>,
    },
    /// The gate's verdict for this pass.
    Verdict(Verdict),
}

// ---------------------------------------------------------------------------------------
// CANARY

/// The canary selection, persisted before any canary node is contacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CanarySelection {
    /// Chosen nodes, in rank order.
    pub nodes: Vec<String>,
    /// The other eligible nodes at selection time: the baseline.
    pub baseline: Vec<String>,
    /// The seed, hex (the manifest's `canary_seed`).
    pub seed: String,
    /// Eligible peers it was chosen from.
    pub eligible: usize,
    /// Canary slots per region.
    #[serde(default)]
    pub per_region: BTreeMap<String, usize>,
    /// When (unix seconds).
    pub selected_at: i64,
    /// The pipeline lease's fencing epoch at selection.
    #[serde(default)]
    pub fencing_epoch: i64,
}

/// The judge's decision on the window so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JudgeDecision {
    /// Healthy for the whole window.
    Pass,
    /// Keep sampling.
    Pending,
    /// Too little traffic to decide: waits for more, or for an operator.
    Inconclusive,
    /// Roll back.
    Fail,
}

/// The persisted progress of CANARY.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CanaryProgress {
    /// When the first selection attempt was made (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_selection_attempt_at: Option<i64>,
    /// The selection, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<CanarySelection>,
    /// One delivery of the release manifest per canary node.
    #[serde(default)]
    pub deliveries: Vec<NodeDelivery>,
    /// When the manifest was first sent (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sent_at: Option<i64>,
    /// Canary nodes whose heartbeat reported the release's code hash.
    #[serde(default)]
    pub reporting: BTreeSet<String>,
    /// When the window opened: every canary node reported the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<i64>,
    /// `window_start + window_secs + paused_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
    /// Seconds the run was paused while the window was open: the window's clock stops
    /// while paused, so the judge's window (and `max_window_secs`) is this much longer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paused_secs: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Settings of the CANARY machine.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryParams {
    /// The release's code hash.
    pub code_hash: String,
    /// Window length.
    pub window_secs: i64,
    /// A canary node must report the release within this many seconds of the first send.
    pub report_grace_secs: i64,
    /// Too few eligible peers is pending this long, then failed.
    pub selection_timeout_secs: i64,
}

/// An input to the CANARY machine.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryEvent {
    /// A node's latest heartbeat (fed for every canary node at the start of a pass).
    Observed {
        /// Node.
        node: String,
        /// What it reports, if it ever heartbeated.
        observed: Option<Observed>,
    },
    /// Decide what to do now.
    Tick {
        /// Unix seconds.
        now: i64,
    },
    /// The canary was selected.
    Selected {
        /// The selection.
        selection: CanarySelection,
    },
    /// Not enough eligible peers to select from.
    TooFewPeers {
        /// Peers enrolled in the registry (0: there is no fleet at all, which fails at
        /// once instead of waiting for it to form).
        enrolled: usize,
        /// Eligible peers.
        eligible: usize,
        /// Why the selection failed.
        reason: String,
        /// Unix seconds.
        now: i64,
    },
    /// A canary node answered the manifest.
    Answered {
        /// Node.
        node: String,
        /// Its answer.
        answer: NodeAnswer,
    },
    /// The judge's decision on the window so far.
    Judged {
        /// Decision.
        decision: JudgeDecision,
        /// Its explanation.
        detail: String,
        /// Its per-criterion figures.
        figures: serde_json::Value,
    },
}

/// The CANARY machine: its persisted progress and its settings.
#[derive(Debug)]
pub struct CanaryMachine<'a> {
    /// Progress (persisted by the runtime on [`FleetCommand::Persist`]).
    pub progress: &'a mut CanaryProgress,
    /// Settings.
    pub params: &'a CanaryParams,
}

impl CanaryMachine<'_> {
    /// Feed one event; returns the commands to carry out, in order.
    pub fn handle(&mut self, event: CanaryEvent) -> Vec<FleetCommand> {
        let p = &mut *self.progress;
        let goal = Goal::Run(&self.params.code_hash);
        match event {
            CanaryEvent::Observed { node, observed } => {
                if let Some(d) = find_delivery(&mut p.deliveries, &node) {
                    d.observed(&goal, observed.as_ref());
                }
                if observed
                    .as_ref()
                    .is_some_and(|o| o.code_hash == self.params.code_hash)
                {
                    p.reporting.insert(node);
                } else {
                    p.reporting.remove(&node);
                }
                Vec::new()
            }
            CanaryEvent::Selected { selection } => {
                p.deliveries = selection
                    .nodes
                    .iter()
                    .map(|n| NodeDelivery::new(n.clone(), true))
                    .collect();
                sort_deliveries(&mut p.deliveries);
                p.selection = Some(selection);
                vec![FleetCommand::Persist]
            }
            CanaryEvent::TooFewPeers {
                enrolled,
                eligible,
                reason,
                now,
            } => {
                let first = *p.first_selection_attempt_at.get_or_insert(now);
                let waited = now.saturating_sub(first);
                let limit = self.params.selection_timeout_secs;
                let figures = json!({"enrolled": enrolled, "eligible": eligible, "waited_secs": waited, "selection_timeout_secs": limit});
                let hint = "enroll nodes with `fleetgate fleet enroll` and start their agents";
                if enrolled == 0 {
                    vec![FleetCommand::Verdict(Verdict::failed(
                        format!(
                            "cannot select canary nodes: no fleet (no node is enrolled in the registry); {hint}"
                        ),
                        figures,
                    ))]
                } else if waited >= limit {
                    vec![FleetCommand::Verdict(Verdict::failed(
                        format!(
                            "cannot select canary nodes after {waited}s: {reason} ({eligible} eligible: verified, active, recent heartbeat); {hint}"
                        ),
                        figures,
                    ))]
                } else {
                    vec![
                        FleetCommand::Persist,
                        FleetCommand::Verdict(Verdict::pending(
                            format!(
                                "the fleet is forming: {reason} ({eligible} eligible); waiting up to {}s more ({hint})",
                                limit - waited
                            ),
                            figures,
                        )),
                    ]
                }
            }
            CanaryEvent::Answered { node, answer } => {
                if let Some(d) = find_delivery(&mut p.deliveries, &node) {
                    d.answered(&goal, answer);
                }
                vec![FleetCommand::Persist]
            }
            CanaryEvent::Judged {
                decision,
                detail,
                figures,
            } => vec![FleetCommand::Verdict(match decision {
                JudgeDecision::Pass => Verdict::passed(
                    format!("canary healthy for the whole window: {detail}"),
                    figures,
                ),
                JudgeDecision::Pending => {
                    Verdict::pending(format!("canary window open: {detail}"), figures)
                }
                JudgeDecision::Inconclusive => Verdict::pending(
                    if detail.starts_with("inconclusive") {
                        detail
                    } else {
                        format!("inconclusive: {detail}")
                    },
                    figures,
                ),
                JudgeDecision::Fail => {
                    Verdict::failed(format!("canary unhealthy: {detail}"), figures)
                }
            })],
            CanaryEvent::Tick { now } => self.tick(now),
        }
    }

    fn tick(&mut self, now: i64) -> Vec<FleetCommand> {
        let params = self.params;
        let p = &mut *self.progress;
        let Some(selection) = p.selection.clone() else {
            p.first_selection_attempt_at.get_or_insert(now);
            return vec![FleetCommand::SelectCanary];
        };
        let failed: Vec<String> = p
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::Failed)
            .map(|d| format!("{}: {}", d.node, d.detail.as_deref().unwrap_or("?")))
            .collect();
        if !failed.is_empty() {
            return vec![FleetCommand::Verdict(Verdict::failed(
                format!(
                    "the release failed on {} canary node(s): {}",
                    failed.len(),
                    failed.join("; ")
                ),
                json!({"failed": failed.len()}),
            ))];
        }
        if p.window_start.is_none() {
            let due = send_due(&mut p.deliveries, now);
            if !due.is_empty() {
                p.first_sent_at.get_or_insert(now);
                return vec![FleetCommand::Persist, FleetCommand::Send { nodes: due }];
            }
            let waiting: Vec<String> = selection
                .nodes
                .iter()
                .filter(|n| !p.reporting.contains(*n))
                .cloned()
                .collect();
            let undelivered: Vec<&NodeDelivery> =
                p.deliveries.iter().filter(|d| !d.settled()).collect();
            if waiting.is_empty() && undelivered.is_empty() {
                // Samples from before the switch would judge the old version: the window
                // opens once every canary node reports the release.
                p.window_start = Some(now);
                p.deadline = Some(now.saturating_add(params.window_secs));
                return vec![
                    FleetCommand::Persist,
                    FleetCommand::Judge {
                        window_start: now,
                        canary: selection.nodes.clone(),
                        baseline: selection.baseline.clone(),
                    },
                ];
            }
            let sent_at = p.first_sent_at.unwrap_or(now);
            // Counts, not lists: the progress holds every delivery already.
            let figures = json!({"waiting_for": waiting.len(), "undelivered": undelivered.len()});
            let mut names: Vec<String> = waiting.clone();
            let mut named: BTreeSet<&str> = waiting.iter().map(String::as_str).collect();
            for d in &undelivered {
                if named.insert(&d.node) {
                    names.push(d.node.clone());
                }
            }
            let described = name_by_detail(names.iter().map(|n| {
                let d = find_delivery_ref(&p.deliveries, n);
                let detail = d
                    .filter(|d| !d.settled())
                    .and_then(|d| d.detail.as_deref())
                    .filter(|x| !x.trim().is_empty())
                    .map(|x| clip(x, 160));
                (n.clone(), detail)
            }));
            if now.saturating_sub(sent_at) > params.report_grace_secs {
                return vec![FleetCommand::Verdict(Verdict::failed(
                    format!(
                        "integrity: canary node(s) did not report the release's code hash {} within {}s of the apply: {}",
                        short(&params.code_hash),
                        params.report_grace_secs,
                        described
                    ),
                    figures,
                ))];
            }
            return vec![FleetCommand::Verdict(Verdict::pending(
                format!("waiting for the canary nodes to report the release: {described}"),
                figures,
            ))];
        }
        vec![FleetCommand::Judge {
            window_start: p.window_start.unwrap_or(now),
            canary: selection.nodes.clone(),
            baseline: selection.baseline.clone(),
        }]
    }
}

// ---------------------------------------------------------------------------------------
// DEPLOY

/// How DEPLOY hands the manifest to the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployMode {
    /// Gossip through the configured seeds; every node pulls what it misses.
    Gossip,
    /// POST to every target's apply endpoint (no gossip seeds configured).
    Push,
}

/// The most node ids a DEPLOY verdict's figures list per kind (`unhealthy`, `behind`);
/// `unhealthy_count` and `behind_count` count them all.
pub const MAX_FIGURE_NODES: usize = 100;

/// The persisted progress of DEPLOY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployProgress {
    /// Gossip or push.
    pub mode: DeployMode,
    /// Verified, active peers that were not canary nodes, listed at the start.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Whether the targets were listed.
    #[serde(default)]
    pub listed: bool,
    /// Push mode: one delivery per target.
    #[serde(default)]
    pub deliveries: Vec<NodeDelivery>,
    /// Gossip mode: when it was handed to gossip, and what gossip said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// When DEPLOY started (unix seconds).
    pub started_at: i64,
    /// Give up after this (unix seconds).
    pub deadline: i64,
    /// Phased rollout (`[deploy] steps` below `1.0`), fixed when DEPLOY starts: each is
    /// pushed and judged in turn before the whole fleet is targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<DeployStep>,
}

/// One judged step of a phased DEPLOY: the next hash-ranked slice of the fleet gets the
/// release and is judged like the canary, against the nodes not yet updated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployStep {
    /// The fraction of the fleet that runs the release once this step is done.
    pub fraction: f64,
    /// The step, run as a canary: its slice (`selection.nodes`), the nodes not yet
    /// updated (`selection.baseline`), one delivery per slice node, the window.
    #[serde(default)]
    pub progress: CanaryProgress,
    /// Set when the step is over and the next may start: why (judged healthy, promoted
    /// by an operator, or nothing to judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<String>,
    /// The operator who ended the step's window early, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<crate::state::OperatorAction>,
}

impl DeployStep {
    /// A step not started yet.
    #[must_use]
    pub fn new(fraction: f64) -> DeployStep {
        DeployStep {
            fraction,
            progress: CanaryProgress::default(),
            passed: None,
            promoted: None,
        }
    }
}

/// A step's slice and baseline. `ranked` is the hash-ranked selection of the step's
/// fraction of the `eligible` nodes; `updated` are the nodes that run the release
/// already (the canary and the earlier steps). The slice is what `ranked` adds; the
/// baseline is every eligible node not updated and not in the slice.
#[must_use]
pub fn step_slice(
    ranked: &[String],
    updated: &BTreeSet<String>,
    eligible: &[String],
) -> (Vec<String>, Vec<String>) {
    let slice: Vec<String> = ranked
        .iter()
        .filter(|n| !updated.contains(*n))
        .cloned()
        .collect();
    let in_slice: BTreeSet<&String> = slice.iter().collect();
    let baseline = eligible
        .iter()
        .filter(|n| !updated.contains(*n) && !in_slice.contains(n))
        .cloned()
        .collect();
    (slice, baseline)
}

impl DeployProgress {
    /// A DEPLOY that has not done anything yet.
    #[must_use]
    pub fn new(mode: DeployMode, now: i64, deadline_secs: i64) -> DeployProgress {
        DeployProgress {
            mode,
            targets: Vec::new(),
            listed: false,
            deliveries: Vec::new(),
            published: None,
            started_at: now,
            deadline: now.saturating_add(deadline_secs),
            steps: Vec::new(),
        }
    }

    /// The step being worked on: the first that has not passed.
    #[must_use]
    pub fn current_step(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.passed.is_none())
    }

    /// The nodes the steps selected so far (they may have the release).
    #[must_use]
    pub fn step_nodes(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| s.progress.selection.as_ref())
            .flat_map(|sel| sel.nodes.iter().cloned())
            .collect()
    }
}

/// What the runtime observed of one node for DEPLOY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployObserved {
    /// Its latest heartbeat.
    pub observed: Option<Observed>,
    /// Its heartbeat is recent enough to count it as reachable.
    pub reachable: bool,
    /// Its agent lists this release among those that failed there.
    pub refused_release: bool,
}

/// Settings of the DEPLOY machine.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployParams {
    /// The release's code hash.
    pub code_hash: String,
    /// The canary nodes (they run the release already).
    pub canary: Vec<String>,
    /// Fraction of reachable nodes that must run the release.
    pub success_pct: f64,
    /// Fraction of failed nodes that fails DEPLOY.
    pub max_failure_pct: f64,
}

/// An input to the DEPLOY machine.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployEvent {
    /// What one node runs (fed for every node at the start of a pass).
    Observed {
        /// Node.
        node: String,
        /// Observation.
        observed: DeployObserved,
    },
    /// Decide what to do now.
    Tick {
        /// Unix seconds.
        now: i64,
    },
    /// The targets were listed.
    Targets {
        /// Node ids.
        nodes: Vec<String>,
    },
    /// Gossip took the manifest.
    Published {
        /// What gossip said.
        note: String,
    },
    /// A target answered the pushed manifest.
    Answered {
        /// Node.
        node: String,
        /// Answer.
        answer: NodeAnswer,
    },
}

/// The DEPLOY machine.
#[derive(Debug)]
pub struct DeployMachine<'a> {
    /// Persisted progress.
    pub progress: &'a mut DeployProgress,
    /// Settings.
    pub params: &'a DeployParams,
    /// This pass's observations (not persisted: observed anew every pass), cut down to
    /// what the verdict needs (at 100,000 nodes a whole heartbeat per node was 12 MB).
    pub observed: BTreeMap<String, NodeSeen>,
}

/// What a DEPLOY pass keeps of one node's observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSeen {
    /// Its latest heartbeat reports the release's code hash.
    pub runs_release: bool,
    /// That heartbeat reports a healthy application.
    pub healthy: bool,
    /// Its heartbeat is recent enough to count it as reachable.
    pub reachable: bool,
    /// Its agent lists this release among those that failed there.
    pub refused_release: bool,
}

impl DeployMachine<'_> {
    /// Feed one event; returns the commands to carry out, in order.
    pub fn handle(&mut self, event: DeployEvent) -> Vec<FleetCommand> {
        let goal = Goal::Run(&self.params.code_hash);
        match event {
            DeployEvent::Observed { node, observed } => {
                if let Some(d) = find_delivery(&mut self.progress.deliveries, &node) {
                    d.observed(&goal, observed.observed.as_ref());
                }
                let heartbeat = observed.observed.as_ref();
                let seen = NodeSeen {
                    runs_release: heartbeat.is_some_and(|h| h.code_hash == self.params.code_hash),
                    healthy: heartbeat.is_some_and(|h| h.healthy),
                    reachable: observed.reachable,
                    refused_release: observed.refused_release,
                };
                self.observed.insert(node, seen);
                Vec::new()
            }
            DeployEvent::Targets { nodes } => {
                let p = &mut *self.progress;
                p.listed = true;
                if p.mode == DeployMode::Push {
                    p.deliveries = nodes
                        .iter()
                        .map(|n| NodeDelivery::new(n.clone(), true))
                        .collect();
                    sort_deliveries(&mut p.deliveries);
                }
                p.targets = nodes;
                vec![FleetCommand::Persist]
            }
            DeployEvent::Published { note } => {
                self.progress.published = Some(note);
                vec![FleetCommand::Persist]
            }
            DeployEvent::Answered { node, answer } => {
                if let Some(d) = find_delivery(&mut self.progress.deliveries, &node) {
                    d.answered(&goal, answer);
                }
                vec![FleetCommand::Persist]
            }
            DeployEvent::Tick { now } => self.tick(now),
        }
    }

    /// Every node DEPLOY judges: the canary nodes and the targets.
    #[must_use]
    pub fn nodes(&self) -> Vec<String> {
        let mut all = self.params.canary.clone();
        let mut seen: BTreeSet<&String> = self.params.canary.iter().collect();
        for t in &self.progress.targets {
            if seen.insert(t) {
                all.push(t.clone());
            }
        }
        all
    }

    fn tick(&mut self, now: i64) -> Vec<FleetCommand> {
        if !self.progress.listed {
            return vec![FleetCommand::ListTargets];
        }
        match self.progress.mode {
            DeployMode::Gossip if self.progress.published.is_none() => {
                return vec![FleetCommand::Publish];
            }
            DeployMode::Gossip => {}
            DeployMode::Push => {
                let due = send_due(&mut self.progress.deliveries, now);
                if !due.is_empty() {
                    return vec![FleetCommand::Persist, FleetCommand::Send { nodes: due }];
                }
            }
        }
        let all = self.nodes();
        let hash = self.params.code_hash.as_str();
        let (mut converged, mut unhealthy, mut behind) = (Vec::new(), Vec::new(), Vec::new());
        for id in &all {
            let o = self.observed.get(id).copied().unwrap_or_default();
            let failed_delivery = find_delivery_ref(&self.progress.deliveries, id)
                .is_some_and(|d| d.status == DeliveryStatus::Failed);
            if o.runs_release && o.healthy {
                converged.push(id.clone());
            } else if o.runs_release || failed_delivery || o.refused_release {
                // Running the new version and unhealthy: a failure. Unhealthy on the old
                // version is usually a node restarting its app mid-apply: it is behind,
                // unless the release failed there.
                unhealthy.push(id.clone());
            } else {
                behind.push(id.clone());
            }
        }
        let converged_set: BTreeSet<&String> = converged.iter().collect();
        let denom = all
            .iter()
            .filter(|id| {
                self.observed.get(*id).is_some_and(|o| o.reachable) || converged_set.contains(id)
            })
            .count()
            .max(1);
        let conv_ratio = converged.len() as f64 / denom as f64;
        let fail_ratio = unhealthy.len() as f64 / all.len().max(1) as f64;
        let deadline = self.progress.deadline;
        // The verdict's figures name at most `MAX_FIGURE_NODES` nodes per list and count
        // them all: they are kept in the state with the verdict, and at 100,000 nodes
        // the whole lists were 90,000 ids on every pass.
        let figures = json!({
            "mode": self.progress.mode, "nodes": all.len(), "reachable": denom,
            "converged": converged.len(),
            "unhealthy": &unhealthy[..unhealthy.len().min(MAX_FIGURE_NODES)],
            "unhealthy_count": unhealthy.len(),
            "behind": &behind[..behind.len().min(MAX_FIGURE_NODES)],
            "behind_count": behind.len(),
            "success_pct": self.params.success_pct, "max_failure_pct": self.params.max_failure_pct,
            "converged_ratio": conv_ratio, "deadline": deadline,
        });
        let verdict = if fail_ratio > self.params.max_failure_pct {
            Verdict::failed(
                format!(
                    "{} of {} nodes failed to apply or are unhealthy ({:.1}% > {:.1}%): {}",
                    unhealthy.len(),
                    all.len(),
                    fail_ratio * 100.0,
                    self.params.max_failure_pct * 100.0,
                    name_some(&unhealthy)
                ),
                figures,
            )
        } else if conv_ratio >= self.params.success_pct {
            Verdict::passed(
                format!(
                    "{} of {} reachable nodes run code hash {}",
                    converged.len(),
                    denom,
                    short(hash)
                ),
                figures,
            )
        } else if now > deadline {
            Verdict::failed(
                format!(
                    "deploy deadline passed with {} of {} reachable nodes converged; behind: {}",
                    converged.len(),
                    denom,
                    name_some(&behind)
                ),
                figures,
            )
        } else {
            Verdict::pending(
                format!("{} of {} reachable nodes converged", converged.len(), denom),
                figures,
            )
        };
        vec![FleetCommand::Verdict(verdict)]
    }
}

// ---------------------------------------------------------------------------------------
// Rollback orders: fleet-wide revocation

/// The persisted progress of one rollback order (kept in its outbox effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RevocationProgress {
    /// The signed order's sequence (above the release it revokes).
    pub sequence: u64,
    /// The revoked release's code hash: only nodes running it switch back.
    pub revoked_code_hash: String,
    /// The version the order returns to.
    pub return_to_version: String,
    /// The code hash the order returns to. When it is the revoked one (the release was
    /// the last good commit again under a new version), running it is obeying the order:
    /// a node's floor past the order alone shows it took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to_code_hash: Option<String>,
    /// One delivery per node: required for nodes that may have the release, best effort
    /// for the rest of the fleet (their floor rises past the release).
    pub deliveries: Vec<NodeDelivery>,
    /// Handed to gossip (every node's floor rises, including nodes that were down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// Whether gossip is configured.
    #[serde(default)]
    pub gossip: bool,
}

/// The next step of a rollback order's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStep {
    /// Hand the order to gossip, then feed [`RevocationProgress::published`].
    Publish,
    /// Mark these nodes in flight (done), persist, send, and feed each answer.
    Send(Vec<String>),
    /// Every required node obeyed; the order is delivered.
    Delivered(String),
    /// Some nodes have not obeyed yet (retried later).
    Waiting(String),
}

impl RevocationProgress {
    /// Decide the next step at `now`. For [`RevocationStep::Send`], the nodes are marked
    /// in flight: persist before sending.
    pub fn step(&mut self, now: i64) -> RevocationStep {
        if self.gossip && self.published.is_none() {
            return RevocationStep::Publish;
        }
        let due = send_due(&mut self.deliveries, now);
        if !due.is_empty() {
            return RevocationStep::Send(due);
        }
        let open: Vec<String> = self
            .deliveries
            .iter()
            .filter(|d| d.required && d.status != DeliveryStatus::Done)
            .map(|d| {
                format!(
                    "{} ({:?}: {})",
                    d.node,
                    d.status,
                    d.detail.as_deref().unwrap_or("no answer yet")
                )
            })
            .collect();
        let done = self
            .deliveries
            .iter()
            .filter(|d| d.status == DeliveryStatus::Done)
            .count();
        let skipped = self
            .deliveries
            .iter()
            .filter(|d| {
                matches!(d.status, DeliveryStatus::Skipped | DeliveryStatus::Failed) && !d.required
            })
            .count();
        if open.is_empty() {
            RevocationStep::Delivered(format!(
                "rollback order (sequence {}) to {}: obeyed by {done} node(s){}{}",
                self.sequence,
                self.return_to_version,
                if skipped > 0 {
                    format!(", {skipped} unreachable node(s) left to gossip")
                } else {
                    String::new()
                },
                self.published
                    .as_deref()
                    .map(|p| format!("; {p}"))
                    .unwrap_or_default()
            ))
        } else {
            RevocationStep::Waiting(format!(
                "rollback order (sequence {}) not yet obeyed by {} node(s) that may run the release: {}",
                self.sequence,
                open.len(),
                open.join("; ")
            ))
        }
    }

    /// An operator asks for the order to be sent again now: every node that has not
    /// obeyed it (including required nodes that refused it) is queued without back-off.
    pub fn retry_now(&mut self) {
        for d in &mut self.deliveries {
            let again = match d.status {
                DeliveryStatus::Queued | DeliveryStatus::InFlight => true,
                DeliveryStatus::Failed => d.required,
                DeliveryStatus::Done | DeliveryStatus::Skipped => false,
            };
            if again {
                d.status = DeliveryStatus::Queued;
                d.next_attempt_at = 0;
            }
        }
    }

    /// Record what a node's latest heartbeat says: a node whose reported floor reached
    /// the order's sequence and that runs another code hash obeyed the order (a pull-mode
    /// node fetched it from its feed; no push answer will come).
    pub fn observed(&mut self, node: &str, obs: Option<&Observed>) {
        let Some(o) = obs else { return };
        if o.floor < self.sequence || o.code_hash == self.to_stop() {
            return;
        }
        if let Some(d) = self
            .deliveries
            .iter_mut()
            .find(|d| d.node == node && !d.settled())
        {
            d.status = DeliveryStatus::Done;
            d.detail = Some(format!(
                "its heartbeat reports floor {} (at or past the order) and code hash {}",
                o.floor,
                short(&o.code_hash)
            ));
        }
    }

    /// Record a node's answer.
    pub fn answered(&mut self, node: &str, answer: NodeAnswer) {
        let bad = self.to_stop().to_owned();
        if let Some(d) = find_delivery(&mut self.deliveries, node) {
            d.answered(&Goal::Revoke(&bad), answer);
        }
    }

    /// The code hash a node must stop running: the revoked one, or none (`""`, which no
    /// node reports) when the order returns to that very code.
    fn to_stop(&self) -> &str {
        if self.return_to_code_hash.as_deref() == Some(self.revoked_code_hash.as_str()) {
            ""
        } else {
            &self.revoked_code_hash
        }
    }
}

/// Deliveries are kept in node-id order, so a node's is found by binary search (a
/// DEPLOY over a large fleet looks every node up on every pass).
fn sort_deliveries(deliveries: &mut [NodeDelivery]) {
    deliveries.sort_by(|a, b| a.node.cmp(&b.node));
}

/// `node`'s delivery: by binary search, else (progress written before deliveries were
/// kept in order) by a scan.
fn find_delivery<'a>(
    deliveries: &'a mut [NodeDelivery],
    node: &str,
) -> Option<&'a mut NodeDelivery> {
    match deliveries.binary_search_by(|d| d.node.as_str().cmp(node)) {
        Ok(i) => deliveries.get_mut(i),
        Err(_) => deliveries.iter_mut().find(|d| d.node == node),
    }
}

/// [`find_delivery`], shared.
fn find_delivery_ref<'a>(deliveries: &'a [NodeDelivery], node: &str) -> Option<&'a NodeDelivery> {
    match deliveries.binary_search_by(|d| d.node.as_str().cmp(node)) {
        Ok(i) => deliveries.get(i),
        Err(_) => deliveries.iter().find(|d| d.node == node),
    }
}

/// Nodes for a message, grouped by what their delivery last said, the largest group
/// first: `a, b, c, d, e and 1503 more (connection refused); f (HTTP 409: busy); g, h`
/// (nodes with nothing to say last). At most 5 names per group and 5 groups: at 10,000
/// canary nodes behind one unreachable address, one line instead of the same error
/// repeated for 20 names (the figures carry the counts).
fn name_by_detail(nodes: impl Iterator<Item = (String, Option<String>)>) -> String {
    const GROUPS: usize = 5;
    let mut by_detail: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut plain: Vec<String> = Vec::new();
    for (node, detail) in nodes {
        match detail {
            Some(d) => by_detail.entry(d).or_default().push(node),
            None => plain.push(node),
        }
    }
    let mut groups: Vec<(String, Vec<String>)> = by_detail.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let few = |nodes: &[String]| {
        const SHOWN: usize = 5;
        if nodes.len() <= SHOWN {
            nodes.join(", ")
        } else {
            format!(
                "{} and {} more",
                nodes[..SHOWN].join(", "),
                nodes.len() - SHOWN
            )
        }
    };
    let mut parts: Vec<String> = groups
        .iter()
        .take(GROUPS)
        .map(|(detail, nodes)| format!("{} ({detail})", few(nodes)))
        .collect();
    let rest: usize = groups.iter().skip(GROUPS).map(|(_, n)| n.len()).sum();
    if rest > 0 {
        parts.push(format!(
            "{rest} more node(s) for {} other reason(s)",
            groups.len() - GROUPS
        ));
    }
    if !plain.is_empty() {
        parts.push(few(&plain));
    }
    parts.join("; ")
}

/// Node names for a message: all of them up to 20, else the first 20 and how many more
/// (the figures carry the full lists).
fn name_some(nodes: &[String]) -> String {
    const SHOWN: usize = 20;
    if nodes.len() <= SHOWN {
        return nodes.join(", ");
    }
    format!(
        "{} and {} more",
        nodes[..SHOWN].join(", "),
        nodes.len() - SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::name_by_detail;

    #[test]
    fn nodes_are_named_a_few_per_reason_the_largest_group_first() {
        let refused =
            "http://127.0.0.1:9/apply: connection refused; the manifest waits in its pull feed";
        let mut nodes: Vec<(String, Option<String>)> = (0..1523)
            .map(|i| (format!("sim-{i:05}"), Some(refused.to_owned())))
            .collect();
        nodes.push(("busy-1".into(), Some("HTTP 409: busy".into())));
        nodes.push(("quiet-1".into(), None));
        nodes.push(("quiet-2".into(), None));
        let line = name_by_detail(nodes.into_iter());
        assert_eq!(
            line,
            format!(
                "sim-00000, sim-00001, sim-00002, sim-00003, sim-00004 and 1518 more ({refused}); busy-1 (HTTP 409: busy); quiet-1, quiet-2"
            )
        );
        assert_eq!(line.matches("connection refused").count(), 1);

        // Many distinct reasons: five groups, the rest counted.
        let line = name_by_detail((0..8).map(|i| (format!("n{i}"), Some(format!("reason {i}")))));
        assert!(
            line.ends_with("n4 (reason 4); 3 more node(s) for 3 other reason(s)"),
            "{line}"
        );
        assert_eq!(name_by_detail(std::iter::empty()), "");
        assert_eq!(name_by_detail([("a".to_owned(), None)].into_iter()), "a");
    }
}
