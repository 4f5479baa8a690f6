//! The fleet side of the orchestrator: the CANARY and DEPLOY gates and the delivery of
//! rollback orders, over the registry (`fleetgate-fleet`), the pure canary decisions
//! (`fleetgate-canary`) and the node agents' apply endpoints.
//!
//! The orchestrator is synchronous; this module owns a small tokio runtime and blocks on
//! it. Do not call it from inside another tokio runtime (use `spawn_blocking`).

use crate::gates::{GateContext, resolve};
use crate::{RuntimeError, now};
use fleetgate_canary::{Eligible, Judge, JudgeConfig, OnInsufficientData, select_canary};
use fleetgate_core::{PipelineState, RollbackScope, Stage, Verdict};
use fleetgate_fleet::{DeployStatus, Fence, Registry};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// Name of the lease that fences pipeline writes to the registry.
pub const LEASE_NAME: &str = "fleetgate-pipeline";

/// A connection to the fleet: registry, lease, HTTP client.
pub struct FleetLink {
    rt: tokio::runtime::Runtime,
    registry: Registry,
    http: reqwest::Client,
    fence: Fence,
}

impl std::fmt::Debug for FleetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLink")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

/// The registry URL of a config: `[fleet] database_url`, else `sqlite://<state_dir>/fleet.db`.
pub fn database_url(ctx: &GateContext) -> String {
    match &ctx.cfg.fleet.database_url {
        Some(u) => match u.strip_prefix("sqlite://") {
            Some(path) if !path.starts_with('/') => {
                format!("sqlite://{}", resolve(&ctx.base, path).display())
            }
            _ => u.clone(),
        },
        None => format!("sqlite://{}", ctx.state_dir.join("fleet.db").display()),
    }
}

fn rt_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Fleet(format!("{what}: {e}"))
}

impl FleetLink {
    /// Connect to the registry and take (or renew) the pipeline lease. The holder is this
    /// state directory on this host, so a restarted orchestrator gets its own lease back.
    pub fn connect(ctx: &GateContext) -> Result<FleetLink, RuntimeError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| rt_err("failed to start the async runtime", e))?;
        let url = database_url(ctx);
        let registry = rt
            .block_on(Registry::connect(&url))
            .map_err(|e| rt_err("failed to open the fleet registry", e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let holder = format!("{}:{}", host.trim(), ctx.state_dir.display());
        let lease = rt
            .block_on(registry.acquire_lease(
                LEASE_NAME,
                &holder,
                Duration::from_secs(
                    u64::try_from(ctx.cfg.fleet.lease_ttl_secs.unwrap_or(120)).unwrap_or(120),
                ),
            ))
            .map_err(|e| rt_err("failed to take the pipeline lease", e))?;
        let Some(lease) = lease else {
            let current = rt.block_on(registry.lease(LEASE_NAME)).ok().flatten();
            return Err(RuntimeError::Fenced(format!(
                "another orchestrator holds the pipeline lease on {} ({}); only the lease holder may advance the pipeline",
                fleetgate_fleet::redact_url(&url),
                current
                    .map(|l| format!(
                        "holder {}, epoch {}, expires at {}",
                        l.holder, l.epoch, l.expires_at
                    ))
                    .unwrap_or_default()
            )));
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(
                u64::try_from(ctx.cfg.canary.apply_timeout_secs).unwrap_or(300),
            ))
            .build()
            .map_err(|e| rt_err("failed to build the HTTP client", e))?;
        Ok(FleetLink {
            rt,
            registry,
            http,
            fence: lease.fence(),
        })
    }

    /// The fencing epoch of this orchestrator's lease.
    pub fn fencing_epoch(&self) -> i64 {
        self.fence.epoch
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Block on a future.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// POST signed manifest bytes to each node's apply endpoint, concurrently.
    /// Returns node id → Ok(report) or Err(reason).
    pub fn send_to(
        &self,
        nodes: &[(String, String)],
        bytes: &[u8],
    ) -> BTreeMap<String, Result<Value, String>> {
        let bytes = bytes.to_vec();
        self.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for (id, address) in nodes {
                let url = format!("{}/apply", address.trim_end_matches('/'));
                let client = self.http.clone();
                let body = bytes.clone();
                let id = id.clone();
                set.spawn(async move {
                    let r = match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                    {
                        Err(e) => Err(format!("{url}: {e}")),
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp.text().await.unwrap_or_default();
                            let v: Value = serde_json::from_str(&text)
                                .unwrap_or_else(|_| json!({"body": text}));
                            if status.is_success() {
                                Ok(v)
                            } else {
                                Err(format!("{url}: HTTP {status}: {}", v))
                            }
                        }
                    };
                    (id, r)
                });
            }
            let mut out = BTreeMap::new();
            while let Some(joined) = set.join_next().await {
                if let Ok((id, r)) = joined {
                    out.insert(id, r);
                }
            }
            out
        })
    }

    fn record(
        &self,
        run_id: &str,
        results: &BTreeMap<String, Result<Value, String>>,
        ok: DeployStatus,
    ) {
        let now = now() as i64;
        for (id, r) in results {
            let (status, detail) = match r {
                Ok(v) => (ok, v.to_string()),
                Err(e) => (DeployStatus::Failed, e.clone()),
            };
            let detail: String = detail.chars().take(1000).collect();
            if let Err(e) = self.rt.block_on(self.registry.record_deployment_status(
                run_id,
                id,
                status,
                &detail,
                &self.fence,
                now,
            )) {
                tracing::warn!(node = %id, error = %e, "could not record deployment status");
            }
        }
    }

    /// Whether the node's agent lists the release `sequence` among the releases that
    /// failed there (and that it will not retry).
    fn agent_refused(&self, id: &str, sequence: u64) -> bool {
        let Ok(p) = self.rt.block_on(self.registry.peer(id)) else {
            return false;
        };
        let url = format!("{}/status", p.address.trim_end_matches('/'));
        let status: Option<Value> = self.rt.block_on(async {
            let resp = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .ok()?;
            resp.json().await.ok()
        });
        status
            .and_then(|s| s.get("bad").and_then(Value::as_array).cloned())
            .is_some_and(|bad| {
                bad.iter()
                    .any(|b| b.get("sequence").and_then(Value::as_u64) == Some(sequence))
            })
    }

    fn addresses(&self, ids: &[String]) -> Result<Vec<(String, String)>, RuntimeError> {
        let mut out = Vec::new();
        for id in ids {
            let p = self
                .rt
                .block_on(self.registry.peer(id))
                .map_err(|e| rt_err("failed to read peer", e))?;
            out.push((p.id, p.address));
        }
        Ok(out)
    }
}

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
    let trust = ctx.cfg.signing.trust_file.as_deref().ok_or_else(|| {
        RuntimeError::Config("gossip needs `[signing] trust_file` to verify what it sends".into())
    })?;
    let keyring = fleetgate_trust::Keyring::load(&resolve(&ctx.base, trust))
        .map_err(|e| RuntimeError::Config(e.to_string()))?;
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
        .map_err(|e| rt_err("failed to start the orchestrator's gossip node", e))?;
        let verified = handle
            .publish(bytes.to_vec())
            .await
            .map_err(|e| rt_err("gossip refused the manifest", e))?;
        tokio::time::sleep(linger).await;
        let _ = handle.shutdown().await;
        Ok(format!(
            "handed sequence {} to gossip through {} seed(s)",
            verified.sequence,
            seeds.len()
        ))
    })
}

/// The exact signed bytes of the run's manifest (as SIGN archived them).
pub fn manifest_bytes(ctx: &GateContext, state: &PipelineState) -> Result<Vec<u8>, RuntimeError> {
    let seq = state
        .manifest
        .as_ref()
        .and_then(|m| m.get("sequence"))
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            RuntimeError::Fleet("the run has no signed manifest (SIGN did not pass)".into())
        })?;
    let path = manifest_file(ctx, seq);
    std::fs::read(&path).map_err(|e| RuntimeError::io("read signed manifest", &path, e))
}

fn manifest_file(ctx: &GateContext, seq: u64) -> PathBuf {
    ctx.state_dir.join("manifests").join(format!("{seq}.json"))
}

fn judge_config(ctx: &GateContext) -> JudgeConfig {
    let c = &ctx.cfg.canary;
    let pos = |v: i64| u64::try_from(v).unwrap_or(0);
    JudgeConfig {
        window_secs: pos(c.window_secs),
        sample_interval_secs: pos(c.sample_interval_secs),
        heartbeat_timeout_secs: pos(c.heartbeat_timeout_secs),
        max_exception_rate_increase: c.max_exception_rate_increase,
        min_canary_requests: pos(c.min_requests),
        on_insufficient_data: if c.on_insufficient_data == "extend" {
            OnInsufficientData::Extend
        } else {
            OnInsufficientData::Fail
        },
        ..JudgeConfig::default()
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A gate that may persist progress before an outside effect.
pub type Checkpoint<'a> = &'a mut dyn FnMut(Value) -> Result<(), RuntimeError>;

/// CANARY: select (persisted before any node is contacted), send the manifest to the
/// canary nodes, then judge the window sample by sample from the registry's heartbeats.
pub fn canary(
    ctx: &GateContext,
    state: &PipelineState,
    checkpoint: Checkpoint<'_>,
) -> Result<Verdict, RuntimeError> {
    let link = FleetLink::connect(ctx)?;
    let bytes = manifest_bytes(ctx, state)?;
    let manifest = state.manifest.clone().unwrap_or(Value::Null);
    let code_hash = state.code_hash.clone().unwrap_or_default();
    let run_id = state.run_id.clone().unwrap_or_default();
    let t = now() as i64;
    let mut data = state
        .stage_data
        .get(&Stage::Canary)
        .cloned()
        .unwrap_or(Value::Null);
    if data.get("selection").is_none() {
        let timeout = u64::try_from(ctx.cfg.canary.heartbeat_timeout_secs).unwrap_or(60);
        let eligible: Vec<Eligible> = link
            .block_on(link.registry.eligible_peers(t, timeout))
            .map_err(|e| rt_err("failed to list eligible peers", e))?;
        let seed_hex = manifest
            .get("canary_seed")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let seed = hex::decode(&seed_hex)
            .map_err(|e| RuntimeError::Fleet(format!("manifest canary_seed is not hex: {e}")))?;
        let min = usize::try_from(ctx.cfg.canary.min_nodes).unwrap_or(1);
        let selection = match select_canary(&seed, &eligible, ctx.cfg.canary.pct, min) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Verdict::failed(
                    format!(
                        "cannot select canary nodes: {e} ({} eligible: verified, active, heartbeat within {timeout}s); enroll nodes with `fleetgate fleet enroll` and start their agents",
                        eligible.len()
                    ),
                    json!({"eligible": eligible.len()}),
                ));
            }
        };
        let chosen: BTreeSet<&str> = selection.nodes.iter().map(String::as_str).collect();
        let baseline: Vec<String> = eligible
            .iter()
            .filter(|e| !chosen.contains(e.id.as_str()))
            .map(|e| e.id.clone())
            .collect();
        link.block_on(
            link.registry
                .persist_selection(&run_id, &selection, &link.fence, t),
        )
        .map_err(|e| rt_err("failed to record the canary selection", e))?;
        data = json!({
            "selection": selection, "canary": selection.nodes, "baseline": baseline,
            "selected_at": t, "seed": seed_hex,
            // Written before any node is contacted: the nodes that may get the release.
            "contacted": selection.nodes, "fencing_epoch": link.fence.epoch,
        });
        checkpoint(data.clone())?;
    }
    let canary_nodes = strings(data.get("canary"));
    let baseline = strings(data.get("baseline"));
    if data.get("apply_results").is_none() {
        let results = link.send_to(&link.addresses(&canary_nodes)?, &bytes);
        link.record(&run_id, &results, DeployStatus::Applied);
        let summary: BTreeMap<&String, Value> = results
            .iter()
            .map(|(k, r)| {
                (
                    k,
                    match r {
                        Ok(v) => json!({"ok": true, "report": v}),
                        Err(e) => json!({"ok": false, "error": e}),
                    },
                )
            })
            .collect();
        data["apply_results"] = json!(summary);
        checkpoint(data.clone())?;
    }
    // A canary node whose agent could not apply the release (fetch, code hash, install,
    // or the new version failed its health check and was reverted there) fails the canary
    // at once: there is nothing to wait for.
    let failed: Vec<String> = data
        .get("apply_results")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, r)| r.get("ok").and_then(Value::as_bool) == Some(false))
                .map(|(id, r)| {
                    format!(
                        "{id}: {}",
                        r.get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .chars()
                            .take(400)
                            .collect::<String>()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !failed.is_empty() {
        return Ok(Verdict::failed(
            format!(
                "the release failed on {} canary node(s): {}",
                failed.len(),
                failed.join("; ")
            ),
            json!({"apply_results": data.get("apply_results")}),
        ));
    }
    // The window opens once every canary node reports the release's code hash in a
    // heartbeat (samples from before the switch would judge the old version).
    if data.get("window_start").is_none() {
        let mut waiting = Vec::new();
        for id in &canary_nodes {
            let hb = link
                .block_on(link.registry.latest_heartbeat(id, t))
                .map_err(|e| rt_err("failed to read heartbeat", e))?;
            if hb.as_ref().is_none_or(|h| h.code_hash != code_hash) {
                waiting.push(format!(
                    "{id} ({})",
                    hb.map(|h| h.code_hash.chars().take(12).collect::<String>())
                        .unwrap_or_else(|| "no heartbeat".into())
                ));
            }
        }
        let applied_at = data.get("applied_at").and_then(Value::as_i64).unwrap_or(t);
        if data.get("applied_at").is_none() {
            data["applied_at"] = json!(t);
            checkpoint(data.clone())?;
        }
        if !waiting.is_empty() {
            let grace = ctx.cfg.canary.heartbeat_timeout_secs;
            let figures =
                json!({"waiting_for": waiting, "apply_results": data.get("apply_results")});
            if t - applied_at > grace {
                return Ok(Verdict::failed(
                    format!(
                        "integrity: canary node(s) did not report the release's code hash {} within {grace}s of the apply: {}",
                        short(&code_hash),
                        waiting.join(", ")
                    ),
                    figures,
                ));
            }
            return Ok(Verdict::pending(
                format!(
                    "waiting for the canary nodes to report the release: {}",
                    waiting.join(", ")
                ),
                figures,
            ));
        }
        data["window_start"] = json!(t);
        data["deadline"] = json!(t + ctx.cfg.canary.window_secs);
        checkpoint(data.clone())?;
    }
    // Judge the window from the heartbeats stored in the registry: a restarted
    // orchestrator replays the same samples and resumes the same window.
    let window_start = data
        .get("window_start")
        .and_then(Value::as_u64)
        .unwrap_or(t as u64);
    let mut judge = Judge::new(
        judge_config(ctx),
        code_hash,
        canary_nodes.clone(),
        baseline.clone(),
        window_start,
    )
    .map_err(|e| RuntimeError::Fleet(format!("invalid canary judge: {e}")))?;
    let interval = u64::try_from(ctx.cfg.canary.sample_interval_secs)
        .unwrap_or(30)
        .max(1);
    let now_u = t as u64;
    let mut at = window_start + interval;
    while at <= now_u && !judge.is_decided() {
        let sample = link
            .block_on(link.registry.sample(&canary_nodes, &baseline, at as i64))
            .map_err(|e| rt_err("failed to read samples", e))?;
        judge
            .on_event(fleetgate_canary::Event::Sample(sample))
            .map_err(|e| RuntimeError::Fleet(e.to_string()))?;
        at += interval;
    }
    if !judge.is_decided() {
        judge
            .on_event(fleetgate_canary::Event::Tick { now: now_u })
            .map_err(|e| RuntimeError::Fleet(e.to_string()))?;
    }
    let v = judge.verdict().clone();
    let figures = serde_json::to_value(&v).unwrap_or(Value::Null);
    Ok(match v.decision {
        fleetgate_canary::Decision::Pass => Verdict::passed(
            format!("canary healthy for the whole window: {}", v.reason),
            figures,
        ),
        fleetgate_canary::Decision::Pending => Verdict::pending(
            format!(
                "canary window open ({} samples, {}s left): {}",
                v.samples,
                v.deadline.saturating_sub(now_u),
                v.reason
            ),
            figures,
        ),
        fleetgate_canary::Decision::Fail => {
            Verdict::failed(format!("canary unhealthy: {}", v.reason), figures)
        }
    })
}

/// DEPLOY: hand the manifest to the rest of the fleet, then wait until `success_pct` of
/// the reachable verified peers report its code hash (or fail on health / deadline).
pub fn deploy(
    ctx: &GateContext,
    state: &PipelineState,
    checkpoint: Checkpoint<'_>,
) -> Result<Verdict, RuntimeError> {
    let link = FleetLink::connect(ctx)?;
    let bytes = manifest_bytes(ctx, state)?;
    let code_hash = state.code_hash.clone().unwrap_or_default();
    let run_id = state.run_id.clone().unwrap_or_default();
    let t = now() as i64;
    let canary_nodes = strings(
        state
            .stage_data
            .get(&Stage::Canary)
            .and_then(|d| d.get("canary")),
    );
    let mut data = state
        .stage_data
        .get(&Stage::Deploying)
        .cloned()
        .unwrap_or(Value::Null);
    if data.get("targets").is_none() {
        let peers = link
            .block_on(link.registry.list_peers())
            .map_err(|e| rt_err("failed to list peers", e))?;
        let targets: Vec<String> = peers
            .iter()
            .filter(|p| p.master_key_verified && p.status == fleetgate_fleet::PeerStatus::Active)
            .filter(|p| !canary_nodes.contains(&p.id))
            .map(|p| p.id.clone())
            .collect();
        data = json!({"targets": targets, "broadcast": true, "started_at": t, "deadline": t + ctx.cfg.deploy.deadline_secs});
        checkpoint(data.clone())?;
    }
    let targets = strings(data.get("targets"));
    if data.get("apply_results").is_none() && data.get("gossip").is_none() {
        if ctx.cfg.deploy.gossip_seeds.is_empty() {
            // No gossip configured: push to every node's apply endpoint.
            let results = link.send_to(&link.addresses(&targets)?, &bytes);
            link.record(&run_id, &results, DeployStatus::Applied);
            let summary: BTreeMap<&String, Value> = results
                .iter()
                .map(|(k, r)| {
                    (
                        k,
                        match r {
                            Ok(v) => json!({"ok": true, "report": v}),
                            Err(e) => json!({"ok": false, "error": e}),
                        },
                    )
                })
                .collect();
            data["apply_results"] = json!(summary);
        } else {
            data["gossip"] = json!(publish_gossip(ctx, &link, &bytes)?);
        }
        checkpoint(data.clone())?;
    }
    // Convergence, from the nodes' own heartbeats.
    let timeout = u64::try_from(ctx.cfg.canary.heartbeat_timeout_secs).unwrap_or(60);
    let reachable: BTreeSet<String> = link
        .block_on(link.registry.eligible_peers(t, timeout))
        .map_err(|e| rt_err("failed to list peers", e))?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let all: Vec<String> = canary_nodes.iter().chain(targets.iter()).cloned().collect();
    let mut converged = Vec::new();
    let mut unhealthy = Vec::new();
    let mut behind = Vec::new();
    let seq = state
        .manifest
        .as_ref()
        .and_then(|m| m.get("sequence"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    for id in &all {
        let hb = link
            .block_on(link.registry.latest_heartbeat(id, t))
            .map_err(|e| rt_err("failed to read heartbeat", e))?;
        let failed_apply = data
            .get("apply_results")
            .and_then(|a| a.get(id))
            .and_then(|r| r.get("ok"))
            .and_then(Value::as_bool)
            == Some(false);
        match hb {
            Some(h) if h.code_hash == code_hash && h.healthy => converged.push(id.clone()),
            // Running the new version and unhealthy: a failure. Unhealthy on the old
            // version is usually a node restarting its app mid-apply: it is behind, unless
            // its agent says this release failed there.
            Some(h) if h.code_hash == code_hash => unhealthy.push(id.clone()),
            _ if failed_apply || link.agent_refused(id, seq) => unhealthy.push(id.clone()),
            _ => behind.push(id.clone()),
        }
    }
    let denom = all
        .iter()
        .filter(|id| reachable.contains(*id) || converged.contains(*id))
        .count()
        .max(1);
    let conv_ratio = converged.len() as f64 / denom as f64;
    let fail_ratio = unhealthy.len() as f64 / all.len().max(1) as f64;
    let deadline = data.get("deadline").and_then(Value::as_i64).unwrap_or(t);
    let figures = json!({
        "nodes": all.len(), "reachable": denom, "converged": converged.len(), "unhealthy": unhealthy,
        "behind": behind, "success_pct": ctx.cfg.deploy.success_pct, "max_failure_pct": ctx.cfg.deploy.max_failure_pct,
        "converged_ratio": conv_ratio, "deadline": deadline,
    });
    if fail_ratio > ctx.cfg.deploy.max_failure_pct {
        return Ok(Verdict::failed(
            format!(
                "{} of {} nodes failed to apply or are unhealthy ({:.1}% > {:.1}%): {}",
                unhealthy.len(),
                all.len(),
                fail_ratio * 100.0,
                ctx.cfg.deploy.max_failure_pct * 100.0,
                unhealthy.join(", ")
            ),
            figures,
        ));
    }
    if conv_ratio >= ctx.cfg.deploy.success_pct {
        return Ok(Verdict::passed(
            format!(
                "{} of {} reachable nodes run code hash {}",
                converged.len(),
                denom,
                short(&code_hash)
            ),
            figures,
        ));
    }
    if t > deadline {
        return Ok(Verdict::failed(
            format!(
                "deploy deadline passed with {} of {} reachable nodes converged; behind: {}",
                converged.len(),
                denom,
                behind.join(", ")
            ),
            figures,
        ));
    }
    Ok(Verdict::pending(
        format!("{} of {} reachable nodes converged", converged.len(), denom),
        figures,
    ))
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// Deliver a rollback order: a signed rollback manifest (higher sequence, returning to
/// the last completed release) sent to the nodes in scope. Returns a note, or an error
/// that keeps the effect in the outbox.
pub fn send_rollback(
    ctx: &GateContext,
    state: &PipelineState,
    effect_id: &str,
    scope: RollbackScope,
    reason: &str,
) -> Result<String, DeliveryError> {
    let contacted: Vec<String> = match scope {
        RollbackScope::Canary => strings(
            state
                .stage_data
                .get(&Stage::Canary)
                .and_then(|d| d.get("contacted")),
        ),
        RollbackScope::All => {
            let mut v = strings(
                state
                    .stage_data
                    .get(&Stage::Canary)
                    .and_then(|d| d.get("contacted")),
            );
            v.extend(strings(
                state
                    .stage_data
                    .get(&Stage::Deploying)
                    .and_then(|d| d.get("targets")),
            ));
            v
        }
    };
    // Nodes whose agent reported that the apply failed reverted on their own (the agent
    // never commits a release that failed its health check): nothing to undo there.
    let reverted: BTreeSet<String> = [Stage::Canary, Stage::Deploying]
        .iter()
        .filter_map(|st| {
            state
                .stage_data
                .get(st)
                .and_then(|d| d.get("apply_results"))
                .and_then(Value::as_object)
        })
        .flat_map(|m| {
            m.iter()
                .filter(|(_, r)| {
                    // 422: the agent reports the apply failed and was reverted; 409: it
                    // refused a release that failed there before. A timeout proves nothing.
                    r.get("ok").and_then(Value::as_bool) == Some(false)
                        && r.get("error")
                            .and_then(Value::as_str)
                            .is_some_and(|e| e.contains("HTTP 422") || e.contains("HTTP 409"))
                })
                .map(|(id, _)| id.clone())
        })
        .collect();
    let contacted: Vec<String> = contacted
        .into_iter()
        .filter(|id| !reverted.contains(id))
        .collect();
    if contacted.is_empty() {
        return Ok(format!(
            "rollback order ({scope:?}): no node runs the release ({} reverted on their own); nothing to undo",
            reverted.len()
        ));
    }
    let Some(last) = &state.last_completed else {
        // No retry can change this (a new completed release needs a new run, which this
        // queued order would block): the order is abandoned and the reason recorded.
        return Err(DeliveryError::Never(format!(
            "no completed release to return the {} contacted node(s) to ({}); they keep the release until a newer one is signed",
            contacted.len(),
            contacted.join(", ")
        )));
    };
    let path = ctx
        .state_dir
        .join("manifests")
        .join(format!("rollback-{effect_id}.json"));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) => {
            let b =
                crate::gates::sign_rollback(ctx, state, last, reason).map_err(|e| e.to_string())?;
            fleetgate_store::write_atomic(&path, &b, None)
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
            b
        }
    };
    let link = FleetLink::connect(ctx).map_err(|e| e.to_string())?;
    if scope == RollbackScope::All && !ctx.cfg.deploy.gossip_seeds.is_empty() {
        publish_gossip(ctx, &link, &bytes).map_err(|e| e.to_string())?;
    }
    let nodes = link.addresses(&contacted).map_err(|e| e.to_string())?;
    let results = link.send_to(&nodes, &bytes);
    let run_id = state.run_id.clone().unwrap_or_default();
    link.record(&run_id, &results, DeployStatus::RollbackSent);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(k, r)| r.as_ref().err().map(|e| format!("{k}: {e}")))
        .collect();
    if failed.is_empty() {
        Ok(format!(
            "rollback to {} sent to {} node(s): {}",
            last.version,
            contacted.len(),
            contacted.join(", ")
        ))
    } else {
        Err(DeliveryError::Retry(format!(
            "rollback to {} not accepted by {} node(s): {}",
            last.version,
            failed.len(),
            failed.join("; ")
        )))
    }
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
