//! Rollback orders as fleet-wide revocations. An order is a signed manifest of kind
//! `rollback` with a sequence above the release it undoes. It is signed once (the file
//! `manifests/rollback-<effect>.json` and its sequence are persisted before anything is
//! sent), handed to gossip when gossip is configured, and pushed to every verified peer:
//! nodes that may have the release must obey it (required), the rest get it best effort.
//! Every node that takes it raises its anti-rollback floor past the release, so the
//! revoked manifest can never be applied again anywhere; only nodes running the revoked
//! release switch back. A re-sent order that a node already obeyed counts as delivered.

use super::link::{FleetLink, fleet_op, now_secs};
use super::{DeliveryError, publish_gossip};
use crate::RuntimeError;
use crate::gates::GateContext;
use fleetgate_core::fleet::{DeliveryStatus, NodeDelivery, RevocationProgress, RevocationStep};
use fleetgate_core::{Effect, PipelineState, RollbackScope};
use fleetgate_fleet::DeployStatus;
use std::collections::BTreeSet;

/// Persists a rollback order's progress (in its outbox effect) before an outside effect.
pub type PersistRevocation<'a> = &'a mut dyn FnMut(&RevocationProgress) -> Result<(), RuntimeError>;

/// The nodes that may have received the release of the run in `state`: canary nodes the
/// manifest was sent to, the nodes of DEPLOY's steps it was sent to, and DEPLOY's targets
/// (all of them with gossip, the ones it was pushed to otherwise).
pub fn may_have_release(state: &PipelineState) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(c) = &state.canary {
        for d in &c.deliveries {
            if d.attempts > 0 || d.status == DeliveryStatus::Done {
                out.insert(d.node.clone());
            }
        }
    }
    if let Some(d) = &state.deploy {
        for step in &d.steps {
            for x in &step.progress.deliveries {
                if x.attempts > 0 || x.status == DeliveryStatus::Done {
                    out.insert(x.node.clone());
                }
            }
        }
        match d.mode {
            fleetgate_core::fleet::DeployMode::Gossip => out.extend(d.targets.iter().cloned()),
            fleetgate_core::fleet::DeployMode::Push => {
                for x in &d.deliveries {
                    if x.attempts > 0 || x.status == DeliveryStatus::Done {
                        out.insert(x.node.clone());
                    }
                }
            }
        }
    }
    out
}

/// Deliver one rollback order. Returns a note when every node that may run the release
/// obeyed it; [`DeliveryError::Retry`] while some have not (kept in the outbox);
/// [`DeliveryError::Never`] when it can never be carried out.
pub fn send_rollback(
    ctx: &GateContext,
    state: &PipelineState,
    effect: &Effect,
    scope: RollbackScope,
    reason: &str,
    persist: PersistRevocation<'_>,
) -> Result<String, DeliveryError> {
    let link = ctx.fleet.get(ctx).map_err(|e| e.to_string())?;
    let mut progress = match &effect.revocation {
        // An order planned before the progress named the code it returns to: the last
        // completed release (no run can complete while this order is queued).
        Some(p) if p.return_to_code_hash.is_none() => {
            let mut p = p.clone();
            p.return_to_code_hash = state.rollback_target().and_then(|l| l.code_hash.clone());
            p
        }
        Some(p) => p.clone(),
        None => {
            let Some(p) = plan(ctx, &link, state, effect, scope, reason)? else {
                return Ok(format!(
                    "rollback order ({scope:?}): no node was sent the release; nothing to undo"
                ));
            };
            persist(&p).map_err(|e| e.to_string())?;
            p
        }
    };
    let bytes = order_bytes(ctx, &effect.id).map_err(|e| e.to_string())?;
    let run_id = state.run_id.clone().unwrap_or_default();
    // A node that fetched the order from its pull feed says so only in its heartbeats
    // (its reported floor): look before sending again.
    let open: Vec<String> = progress
        .deliveries
        .iter()
        .filter(|d| !d.settled())
        .map(|d| d.node.clone())
        .collect();
    if !open.is_empty() {
        let before = progress.clone();
        let seen = link
            .observe_many(&open, now_secs())
            .map_err(|e| e.to_string())?;
        for node in &open {
            progress.observed(node, seen.get(node));
        }
        if progress != before {
            persist(&progress).map_err(|e| e.to_string())?;
        }
    }
    for _ in 0..3 {
        let now = now_secs();
        match progress.step(now) {
            RevocationStep::Publish => {
                let note = publish_gossip(ctx, &link, &bytes).map_err(|e| e.to_string())?;
                progress.published = Some(note);
                persist(&progress).map_err(|e| e.to_string())?;
            }
            RevocationStep::Send(nodes) => {
                persist(&progress).map_err(|e| e.to_string())?;
                let answers = link.send(&nodes, &bytes);
                fleetgate_store::kill_point("rollback-sent");
                for (node, answer) in answers {
                    tracing::debug!(node = %node, answer = ?answer, "rollback order answered");
                    progress.answered(&node, answer);
                }
                persist(&progress).map_err(|e| e.to_string())?;
                record(&link, &run_id, &progress, &nodes);
            }
            RevocationStep::Delivered(note) => return Ok(note),
            RevocationStep::Waiting(note) => {
                // With gossip, a node that may have the release but is down gets the
                // order by anti-entropy when it returns: it does not hold the order up.
                if progress.published.is_some() {
                    let down = unreachable(ctx, &link, &progress)?;
                    if !down.is_empty() {
                        for d in progress
                            .deliveries
                            .iter_mut()
                            .filter(|d| d.required && down.contains(&d.node) && !d.settled())
                        {
                            d.status = DeliveryStatus::Skipped;
                            d.detail = Some(
                                "unreachable: gossip anti-entropy delivers the order when it returns"
                                    .into(),
                            );
                        }
                        persist(&progress).map_err(|e| e.to_string())?;
                        continue;
                    }
                }
                return Err(DeliveryError::Retry(note));
            }
        }
    }
    match progress.step(now_secs()) {
        RevocationStep::Delivered(note) => Ok(note),
        RevocationStep::Publish | RevocationStep::Send(_) | RevocationStep::Waiting(_) => {
            persist(&progress).map_err(|e| e.to_string())?;
            Err(DeliveryError::Retry(format!(
                "rollback order (sequence {}) not yet obeyed everywhere; retried on the next pass",
                progress.sequence
            )))
        }
    }
}

fn unreachable(
    ctx: &GateContext,
    link: &FleetLink,
    p: &RevocationProgress,
) -> Result<BTreeSet<String>, DeliveryError> {
    let timeout = u64::try_from(ctx.cfg.canary.heartbeat_timeout_secs).unwrap_or(60);
    let t = now_secs();
    let eligible: BTreeSet<String> = link
        .block_on(link.registry().eligible_peers(t, timeout))
        .map_err(|e| fleet_op("failed to list peers", e).to_string())?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut down = BTreeSet::new();
    for d in &p.deliveries {
        if eligible.contains(&d.node) {
            continue;
        }
        down.insert(d.node.clone());
    }
    Ok(down)
}

fn record(link: &FleetLink, run_id: &str, p: &RevocationProgress, nodes: &[String]) {
    let t = link.db_now();
    let nodes: BTreeSet<&String> = nodes.iter().collect();
    for d in p.deliveries.iter().filter(|d| nodes.contains(&d.node)) {
        let status = match d.status {
            DeliveryStatus::Done => DeployStatus::RolledBack,
            DeliveryStatus::Queued | DeliveryStatus::InFlight => DeployStatus::RollbackSent,
            DeliveryStatus::Failed | DeliveryStatus::Skipped => DeployStatus::Failed,
        };
        let detail: String = d
            .detail
            .clone()
            .unwrap_or_default()
            .chars()
            .take(1000)
            .collect();
        if let Err(e) = link.block_on(link.registry().record_deployment_status(
            run_id,
            &d.node,
            status,
            &detail,
            &link.fence(),
            t,
        )) {
            tracing::warn!(node = %d.node, error = %e, "could not record the rollback status");
        }
    }
}

fn order_path(ctx: &GateContext, effect_id: &str) -> std::path::PathBuf {
    ctx.state_dir
        .join("manifests")
        .join(format!("rollback-{effect_id}.json"))
}

fn order_bytes(ctx: &GateContext, effect_id: &str) -> Result<Vec<u8>, RuntimeError> {
    let path = order_path(ctx, effect_id);
    std::fs::read(&path).map_err(|e| RuntimeError::io("read the signed rollback order", &path, e))
}

/// Sign the order (or reuse the one signed before a crash) and plan its deliveries.
fn plan(
    ctx: &GateContext,
    link: &FleetLink,
    state: &PipelineState,
    effect: &Effect,
    scope: RollbackScope,
    reason: &str,
) -> Result<Option<RevocationProgress>, DeliveryError> {
    let required = may_have_release(state);
    if required.is_empty() {
        return Ok(None);
    }
    let Some(last) = state.rollback_target() else {
        // No retry can change this (a new completed release needs a new run, which this
        // queued order would block): the order is abandoned and the reason recorded.
        return Err(DeliveryError::Never(format!(
            "no completed release to return the {} node(s) that may run the release to ({}); they keep it until a newer one is signed",
            required.len(),
            required.iter().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let path = order_path(ctx, &effect.id);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) => {
            let b =
                crate::gates::sign_rollback(ctx, state, last, reason).map_err(|e| e.to_string())?;
            // `manifests/` exists once SIGN archived a release here, but not in a state
            // directory that never ran SIGN (a moved or restored one).
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
            }
            fleetgate_store::write_atomic(&path, &b, None)
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
            b
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "the signed rollback order {} is not JSON: {e}",
            path.display()
        )
    })?;
    let sequence = v
        .get("sequence")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            format!(
                "the signed rollback order {} has no sequence",
                path.display()
            )
        })?;
    let peers = link
        .block_on(link.registry().release_targets(None))
        .map_err(|e| fleet_op("failed to list the fleet's nodes", e).to_string())?;
    let mut deliveries: Vec<NodeDelivery> = required
        .iter()
        .map(|n| NodeDelivery::new(n.clone(), true))
        .collect();
    for id in peers.into_iter().filter(|id| !required.contains(id)) {
        deliveries.push(NodeDelivery::new(id, false));
    }
    // In node-id order: each answer and observation finds its node by binary search.
    deliveries.sort_by(|a, b| a.node.cmp(&b.node));
    tracing::info!(effect = %effect.id, ?scope, sequence, nodes = deliveries.len(), "rollback order planned");
    Ok(Some(RevocationProgress {
        sequence,
        revoked_code_hash: state.code_hash.clone().unwrap_or_default(),
        return_to_version: last.version.clone(),
        return_to_code_hash: last.code_hash.clone(),
        deliveries,
        published: None,
        gossip: !ctx.cfg.deploy.gossip_seeds.is_empty(),
    }))
}

/// Largest signed manifest read back from `manifests/` when collecting revoked code.
const MAX_ORDER_BYTES: u64 = 1024 * 1024;

/// The code hashes of releases this orchestrator rejected and rolled back, from the
/// signed rollback orders it keeps in `manifests/` (each order names the release it undoes
/// by sequence; that release's archived manifest gives the code hash): the canary judge
/// leaves a node's history on such code out of its "rate before the update".
///
/// Orders are applied in sequence order, and an order's return-to code is not revoked
/// (a release identical in code to the one it returns to revokes nothing); nor is the
/// code of a release completed on any channel now. A rollback order that cannot be read
/// or parsed, or whose release's manifest is gone, makes the whole answer unknown
/// (`Err`, naming the file): counted, a rejected release's intervals would inflate a
/// node's "natural" rate and hide a regression, so the caller judges without per-node
/// history instead.
///
/// # Errors
/// A message naming the rollback order that could not be read, and why.
pub fn revoked_code_hashes(
    ctx: &GateContext,
    state: &PipelineState,
) -> Result<BTreeSet<String>, String> {
    let dir = ctx.state_dir.join("manifests");
    let read = |path: &std::path::Path| -> Option<serde_json::Value> {
        let file = std::fs::File::open(path).ok()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_ORDER_BYTES + 1),
            &mut bytes,
        )
        .ok()?;
        if bytes.len() as u64 > MAX_ORDER_BYTES {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        // A co-signed release is archived as a bundle around its manifest.
        if doc.get(fleetgate_trust::cosign::BUNDLE_FIELD).is_some() {
            doc.get("manifest").cloned()
        } else {
            Some(doc)
        }
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        // No order was ever signed here.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut orders: Vec<(u64, String, Option<String>)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("rollback-") && name.ends_with(".json")) {
            continue;
        }
        let path = entry.path();
        let parsed = read(&path).and_then(|v| {
            let sequence = v.get("sequence")?.as_u64()?;
            let of = v.get("rollback_of")?;
            let revoked = match of.get("code_hash").and_then(serde_json::Value::as_str) {
                Some(h) => h.to_owned(),
                None => {
                    let release = read(&super::manifest_file(ctx, of.get("sequence")?.as_u64()?))?;
                    release.get("code_hash")?.as_str()?.to_owned()
                }
            };
            let back = v
                .get("return_to_code_hash")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            Some((sequence, revoked, back))
        });
        match parsed {
            Some(o) => orders.push(o),
            None => {
                return Err(format!(
                    "{}: the rollback order, or the archived manifest of the release it undoes, cannot be read or lacks its sequence and code hash",
                    path.display()
                ));
            }
        }
    }
    orders.sort();
    let mut revoked = BTreeSet::new();
    for (_, code, back) in orders {
        revoked.insert(code);
        if let Some(back) = back {
            revoked.remove(&back);
        }
    }
    for done in state
        .last_completed
        .iter()
        .chain(state.channel_releases.values())
    {
        if let Some(h) = &done.code_hash {
            revoked.remove(h);
        }
    }
    revoked.remove("");
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::revoked_code_hashes;
    use crate::gates::GateContext;
    use fleetgate_core::{CompletedRelease, PipelineState};
    use serde_json::json;

    fn ctx(dir: &std::path::Path) -> GateContext {
        GateContext {
            cfg: fleetgate_core::config::Config::parse("", |_| None).unwrap(),
            base: dir.to_owned(),
            repo: dir.to_owned(),
            state_dir: dir.to_owned(),
            fleet: Default::default(),
        }
    }

    fn write(dir: &std::path::Path, name: &str, v: serde_json::Value) {
        let m = dir.join("manifests");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join(name), serde_json::to_vec(&v).unwrap()).unwrap();
    }

    fn release(dir: &std::path::Path, seq: u64, code: &str) {
        write(
            dir,
            &format!("{seq}.json"),
            json!({"kind": "release", "sequence": seq, "code_hash": code}),
        );
    }

    fn order(dir: &std::path::Path, effect: &str, seq: u64, of: u64, back: &str) {
        write(
            dir,
            &format!("rollback-{effect}.json"),
            json!({"kind": "rollback", "sequence": seq, "code_hash": back,
                   "rollback_of": {"sequence": of, "version": "v"},
                   "return_to_code_hash": back}),
        );
    }

    #[test]
    fn the_code_of_every_rolled_back_release_is_revoked_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ctx = ctx(d);
        let mut state = PipelineState::idle();
        // No state directory contents yet: nothing revoked.
        assert!(revoked_code_hashes(&ctx, &state).unwrap().is_empty());
        release(d, 1, "good1");
        release(d, 2, "bad2");
        order(d, "r2-1", 3, 2, "good1");
        release(d, 4, "good4");
        // A co-signed release is archived as a bundle.
        write(
            d,
            "5.json",
            json!({"fleetgate_bundle": 1, "manifest": {"kind": "release", "sequence": 5, "code_hash": "bad5"}, "signatures": []}),
        );
        order(d, "r5-1", 6, 5, "good4");
        // A release identical in code to the one it returns to revokes nothing.
        release(d, 7, "good4");
        order(d, "r7-1", 8, 7, "good4");
        // The code of a release completed since (the same code shipped again and
        // completed) is not revoked.
        release(d, 9, "bad2");
        state.last_completed = Some(CompletedRelease {
            version: "v9".into(),
            git_sha: "s".into(),
            code_hash: Some("bad2".into()),
            run_id: "r9".into(),
            sequence: Some(9),
            hash_scheme: None,
            artifacts: None,
        });
        let revoked = revoked_code_hashes(&ctx, &state).unwrap();
        assert_eq!(
            revoked.into_iter().collect::<Vec<_>>(),
            vec!["bad5".to_owned()]
        );
    }

    #[test]
    fn an_order_that_cannot_be_read_makes_the_answer_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ctx = ctx(d);
        let state = PipelineState::idle();
        release(d, 1, "good1");
        release(d, 2, "bad2");
        order(d, "r2-1", 3, 2, "good1");
        assert!(revoked_code_hashes(&ctx, &state).unwrap().contains("bad2"));
        // An order whose release manifest is gone: which code it revoked is unknown.
        order(d, "r10-1", 11, 10, "good1");
        let err = revoked_code_hashes(&ctx, &state).unwrap_err();
        assert!(err.contains("rollback-r10-1.json"), "{err}");
        std::fs::remove_file(d.join("manifests/rollback-r10-1.json")).unwrap();
        // A file that is not JSON.
        std::fs::write(d.join("manifests/rollback-r12-1.json"), b"{not json").unwrap();
        let err = revoked_code_hashes(&ctx, &state).unwrap_err();
        assert!(err.contains("rollback-r12-1.json"), "{err}");
        std::fs::remove_file(d.join("manifests/rollback-r12-1.json")).unwrap();
        // Larger than any signed order.
        std::fs::write(
            d.join("manifests/rollback-r13-1.json"),
            vec![b' '; usize::try_from(super::MAX_ORDER_BYTES).unwrap() + 1],
        )
        .unwrap();
        assert!(revoked_code_hashes(&ctx, &state).is_err());
    }
}
