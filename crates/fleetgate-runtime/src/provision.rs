//! `fleetgate fleet provision`: the first release onto empty (or newly enrolled) nodes.
//!
//! A run's CANARY compares canary nodes with baseline nodes that run the last completed
//! release; a fleet whose nodes run nothing yet has neither. Provisioning puts one release
//! on such nodes through the same signed apply the pipeline uses (a manifest that
//! verifies against the trust file, the node agent's health-gated install) and judges it
//! on absolute criteria only — every node answers that it runs the release, its signed
//! heartbeats report the release's code hash and a passing health check for the whole
//! observation, and the fleet's exception rate over that time stays at or below
//! `[canary] max_exception_rate` (judged once `[canary] min_requests` were served). A
//! release that passes becomes the completed release ([`Event::Provisioned`]): the
//! benchmark baseline and what a later rollback returns to.
//!
//! It is safe to run again after a crash: nodes that already run the release are
//! counted, not sent to again, and nothing is recorded until the checks pass.

use crate::codehash::{code_hash_with, scheme_of};
use crate::fleet::link::fleet_op;
use crate::gates::{ReleaseFields, release_manifest, resolve};
use crate::orchestrator::{Orchestrator, flatten};
use crate::{
    ConfigProblem, FleetFailure, InvalidInput, ManifestMismatch, RuntimeError, TrustStep, now,
};
use fleetgate_core::fleet::NodeAnswer;
use fleetgate_core::{CompletedRelease, Event, Version};
use fleetgate_fleet::PeerStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to provision, and where.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The release (a version tag, or any name with `git_sha`).
    pub version: Version,
    /// The commit; default: the tag named `version`.
    pub git_sha: Option<String>,
    /// The nodes to provision; empty = every active, verified peer whose heartbeats report
    /// no code yet.
    pub nodes: Vec<String>,
    /// A manifest signed elsewhere (required with `[signing] mode = "external"`); else it
    /// is signed with the configured key.
    pub manifest: Option<PathBuf>,
    /// How long every node must keep reporting the release, healthy, before it counts.
    pub observe: Duration,
    /// How long to wait for every node to report the release at all.
    pub timeout: Duration,
}

/// What one node did.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProvision {
    /// `already` (ran it before), `sent` (accepted the manifest), or what went wrong.
    pub answer: String,
    /// The code hash its latest heartbeat reports.
    pub code_hash: Option<String>,
    /// Its application's health check, from the latest heartbeat.
    pub healthy: Option<bool>,
    /// It passed every check.
    pub ok: bool,
    /// Why not, or what was seen.
    pub detail: String,
}

/// The outcome of a provisioning.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionReport {
    /// The release.
    pub version: String,
    /// Its commit.
    pub git_sha: String,
    /// Its code hash (the configured scheme).
    pub code_hash: String,
    /// The manifest sequence.
    pub sequence: u64,
    /// Every provisioned node.
    pub nodes: BTreeMap<String, NodeProvision>,
    /// Peers that were left alone, and why.
    pub skipped: BTreeMap<String, String>,
    /// Requests the provisioned nodes served during the observation.
    pub requests: u64,
    /// Exceptions among them.
    pub exceptions: u64,
    /// `passed`, `failed`, or `not judged` (fewer than `min_requests` requests).
    pub exception_check: String,
    /// Every check passed and the release is now the completed release.
    pub passed: bool,
    /// One line saying what was decided and why.
    pub detail: String,
}

/// A progress line for the operator.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&str);

impl Orchestrator {
    /// Put `req.version` on the empty (or the named) nodes of the fleet, judge it on
    /// absolute criteria, and record it as the completed release when it passes (see
    /// the module docs). A report with `passed: false` means it was sent but not
    /// recorded; errors mean nothing was decided (bad input, no nodes, no key, …).
    pub fn provision(
        &self,
        req: &ProvisionRequest,
        progress: ProgressFn<'_>,
    ) -> Result<ProvisionReport, RuntimeError> {
        let ctx = self.context();
        let cfg = self.config();
        let state = self.status()?;
        let refuse = |why: String| {
            RuntimeError::Transition(fleetgate_core::TransitionError::NotProvisionable {
                version: req.version.to_string(),
                why,
            })
        };
        if state.is_active() {
            return Err(refuse(format!(
                "a run of {} is in progress at stage `{}`; provisioning is for a fleet between runs",
                state.version, state.stage
            )));
        }
        let sha = self.resolve_version(&req.version, req.git_sha.as_deref())?;
        let scratch = ctx
            .state_dir
            .join("work")
            .join(format!("provision-{}-hash", std::process::id()));
        let hashes = code_hash_with(
            scheme_of(cfg.stages.build.hash_scheme),
            &ctx.repo,
            &sha,
            &cfg.code_hash,
            &scratch,
        )?;
        if let Some(done) = &state.last_completed
            && (done.version != req.version.as_str()
                || done.code_hash.as_deref() != Some(hashes.code_hash.as_str()))
        {
            return Err(refuse(format!(
                "the fleet's completed release is {} (code hash {}); new nodes are provisioned with that one, and a newer version goes through a run (`fleetgate start {}`)",
                done.version,
                done.code_hash.as_deref().unwrap_or("unknown"),
                req.version
            )));
        }

        let link = ctx.fleet.get(ctx)?;
        let peers = link
            .block_on(link.registry().list_peers())
            .map_err(|e| fleet_op("failed to list the fleet's peers", e))?;
        let mut targets: Vec<String> = Vec::new();
        let mut already: Vec<String> = Vec::new();
        let mut skipped = BTreeMap::new();
        if req.nodes.is_empty() {
            for p in &peers {
                let runs = p.code_hash.as_deref().unwrap_or_default();
                if p.status != PeerStatus::Active || !p.master_key_verified {
                    skipped.insert(
                        p.id.clone(),
                        format!("not an active, verified peer ({:?})", p.status),
                    );
                } else if runs == hashes.code_hash {
                    already.push(p.id.clone());
                } else if runs.is_empty() {
                    targets.push(p.id.clone());
                } else {
                    skipped.insert(
                        p.id.clone(),
                        format!(
                            "runs other code ({}): name it with --node to provision it",
                            short(runs)
                        ),
                    );
                }
            }
        } else {
            for id in &req.nodes {
                if targets.contains(id) || already.contains(id) {
                    continue; // `--node a --node a` sends once
                }
                let Some(p) = peers.iter().find(|p| &p.id == id) else {
                    return Err(FleetFailure::UnknownNode { node: id.clone() }.into());
                };
                if p.status != PeerStatus::Active || !p.master_key_verified {
                    return Err(FleetFailure::NodeNotReady {
                        node: id.clone(),
                        status: p.status,
                        verified: p.master_key_verified,
                    }
                    .into());
                }
                if p.code_hash.as_deref() == Some(hashes.code_hash.as_str()) {
                    already.push(id.clone());
                } else {
                    targets.push(id.clone());
                }
            }
        }
        if targets.is_empty() && already.is_empty() {
            return Err(FleetFailure::NothingToProvision {
                peers: peers.len(),
                skipped,
            }
            .into());
        }

        let (bytes, sequence) = if targets.is_empty() {
            (Vec::new(), 0)
        } else {
            self.provision_manifest(req, &sha, &hashes, link.fencing_epoch())?
        };
        let mut nodes: BTreeMap<String, NodeProvision> = already
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    NodeProvision {
                        answer: "already".into(),
                        code_hash: None,
                        healthy: None,
                        ok: false,
                        detail: String::new(),
                    },
                )
            })
            .collect();
        if !targets.is_empty() {
            progress(&format!(
                "sending {} (sequence {sequence}) to {} node(s): {}",
                req.version,
                targets.len(),
                targets.join(", ")
            ));
            for (id, answer) in link.send(&targets, &bytes) {
                let (name, detail) = describe(&answer, &hashes.code_hash);
                nodes.insert(
                    id,
                    NodeProvision {
                        answer: name,
                        code_hash: None,
                        healthy: None,
                        ok: false,
                        detail,
                    },
                );
            }
        }

        // Every node must report the release in a signed heartbeat…
        let ids: Vec<String> = nodes.keys().cloned().collect();
        let deadline = Instant::now() + req.timeout;
        let mut shown = Instant::now();
        let waiting = loop {
            let mut waiting = Vec::new();
            for id in &ids {
                let seen = link.observe(id, i64::MAX)?;
                let n = nodes.get_mut(id).expect("ids are the map's keys");
                n.code_hash = seen.as_ref().map(|o| o.code_hash.clone());
                n.healthy = seen.as_ref().map(|o| o.healthy);
                if !seen
                    .as_ref()
                    .is_some_and(|o| o.code_hash == hashes.code_hash && o.healthy)
                {
                    waiting.push(id.clone());
                }
            }
            if waiting.is_empty() || Instant::now() >= deadline {
                break waiting;
            }
            if shown.elapsed() >= Duration::from_secs(5) {
                progress(&format!(
                    "waiting for {} node(s) to report {} healthy: {}",
                    waiting.len(),
                    short(&hashes.code_hash),
                    waiting.join(", ")
                ));
                shown = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        for id in &waiting {
            let n = nodes.get_mut(id).expect("ids are the map's keys");
            n.detail = format!(
                "{}{}after {}s its latest heartbeat reports {} ({})",
                n.detail,
                if n.detail.is_empty() { "" } else { "; " },
                req.timeout.as_secs(),
                n.code_hash.as_deref().map_or("nothing", short),
                match n.healthy {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "no heartbeat",
                }
            );
        }

        // …and keep doing so, healthy, for the observation; its exceptions are counted.
        let mut counters = BTreeMap::new();
        if waiting.is_empty() {
            let start = link::now_secs();
            for id in &ids {
                let hb = link
                    .block_on(link.registry().latest_heartbeat(id, start))
                    .map_err(|e| fleet_op("failed to read heartbeat", e))?;
                if let Some(h) = hb {
                    counters.insert(id.clone(), (h.requests_total, h.exceptions_total));
                }
            }
            progress(&format!(
                "{} node(s) run {}; observing them for {}s",
                ids.len(),
                req.version,
                req.observe.as_secs()
            ));
            let until = Instant::now() + req.observe;
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(500).min(until - Instant::now()));
            }
        }
        let timeout = cfg.canary.heartbeat_timeout_secs;
        let end = link::now_secs();
        let (mut requests, mut exceptions) = (0u64, 0u64);
        for id in &ids {
            let n = nodes.get_mut(id).expect("ids are the map's keys");
            if waiting.contains(id) {
                continue;
            }
            let hb = link
                .block_on(link.registry().latest_heartbeat(id, end))
                .map_err(|e| fleet_op("failed to read heartbeat", e))?;
            let Some(h) = hb else {
                n.detail = "no heartbeat".into();
                continue;
            };
            n.code_hash = Some(h.code_hash.clone());
            n.healthy = Some(h.healthy);
            let (r0, e0) = counters.get(id).copied().unwrap_or((0, 0));
            // A restarted process starts its counters again.
            let (dr, de) = if h.requests_total < r0 {
                (h.requests_total, h.exceptions_total)
            } else {
                (h.requests_total - r0, (h.exceptions_total - e0).max(0))
            };
            requests += u64::try_from(dr).unwrap_or(0);
            exceptions += u64::try_from(de).unwrap_or(0);
            if h.code_hash != hashes.code_hash {
                n.detail = format!("now reports {} instead", short(&h.code_hash));
            } else if !h.healthy {
                n.detail = "its health check fails".into();
            } else if end - h.at > timeout {
                n.detail = format!(
                    "silent for {}s (heartbeat_timeout_secs {timeout})",
                    end - h.at
                );
            } else {
                n.ok = true;
                n.detail = format!("runs {} healthy", short(&hashes.code_hash));
            }
        }
        let max = cfg.canary.max_exception_rate;
        let min = u64::try_from(cfg.canary.min_requests).unwrap_or(0);
        let rate = if requests == 0 {
            0.0
        } else {
            exceptions as f64 / requests as f64
        };
        let exception_check = if requests > 0 && rate > max && requests >= min {
            "failed"
        } else if requests >= min.max(1) {
            "passed"
        } else {
            "not judged"
        };
        let bad: Vec<String> = nodes
            .iter()
            .filter(|(_, n)| !n.ok)
            .map(|(k, n)| {
                format!(
                    "{k}: {}",
                    if n.detail.is_empty() {
                        &n.answer
                    } else {
                        &n.detail
                    }
                )
            })
            .collect();
        let rate_text = format!(
            "{exceptions} exception(s) in {requests} request(s) ({:.2}%, ceiling canary.max_exception_rate {:.2}%)",
            rate * 100.0,
            max * 100.0
        );
        let passed = bad.is_empty() && exception_check != "failed";
        let detail = if !bad.is_empty() {
            format!(
                "{} of {} node(s) failed the checks: {}; nothing was recorded (the nodes that took it keep it: fix the release or the node and provision again)",
                bad.len(),
                nodes.len(),
                bad.join("; ")
            )
        } else if exception_check == "failed" {
            format!(
                "exception rate too high: {rate_text}; nothing was recorded (the nodes keep the release: provision a fixed one with a new version name after `fleetgate fleet remove` or a node reset)"
            )
        } else {
            format!(
                "{} node(s) run {} healthy for {}s; {rate_text}{}",
                nodes.len(),
                req.version,
                req.observe.as_secs(),
                if exception_check == "not judged" {
                    format!(
                        "; the exception rate was not judged (fewer than canary.min_requests = {min} requests)"
                    )
                } else {
                    String::new()
                }
            )
        };
        if passed {
            let release = CompletedRelease {
                version: req.version.to_string(),
                git_sha: sha.clone(),
                code_hash: Some(hashes.code_hash.clone()),
                hash_scheme: Some(cfg.stages.build.hash_scheme),
                artifacts: None,
                run_id: format!("provision-{}", link::now_secs()),
                sequence: (sequence > 0).then_some(sequence),
            };
            let ids = ids.clone();
            let d = detail.clone();
            self.store()
                .transact(|s| {
                    fleetgate_core::handle(
                        s,
                        Event::Provisioned {
                            release,
                            nodes: ids,
                            detail: d,
                            now: now(),
                        },
                    )
                    .map(|_| ())
                })
                .map_err(flatten)?;
        }
        Ok(ProvisionReport {
            version: req.version.to_string(),
            git_sha: sha,
            code_hash: hashes.code_hash,
            sequence,
            nodes,
            skipped,
            requests,
            exceptions,
            exception_check: exception_check.into(),
            passed,
            detail,
        })
    }

    /// The signed manifest to send and its sequence: the one given (verified against the
    /// trust file and checked to be this release), or one signed here with the configured
    /// key, its sequence reserved in the state first.
    fn provision_manifest(
        &self,
        req: &ProvisionRequest,
        sha: &str,
        hashes: &crate::codehash::CodeHash,
        fencing_epoch: i64,
    ) -> Result<(Vec<u8>, u64), RuntimeError> {
        use fleetgate_trust::{Keyring, ManifestKind, SigningKey, VerifyOptions};
        let ctx = self.context();
        let s = &ctx.cfg.signing;
        let Some(trust) = &s.trust_file else {
            return Err(ConfigProblem::Missing {
                key: "signing.trust_file",
                why: "nothing is sent that does not verify against the pinned keys (create one with `fleetgate trust init`)",
            }
            .into());
        };
        let trust_path = resolve(&ctx.base, trust);
        let ring = Keyring::load(&trust_path)
            .map_err(|e| RuntimeError::trust(TrustStep::TrustFile(trust_path.clone()), e))?;
        let now_secs = fleetgate_trust::unix_now();
        let external = s.mode == Some(fleetgate_core::config::SigningMode::External);
        let bytes = if let Some(path) = &req.manifest {
            let bytes = std::fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
            let v = fleetgate_trust::verify_manifest(
                &bytes,
                &ring,
                now_secs,
                &VerifyOptions::default(),
            )
            .map_err(|e| InvalidInput::ProvisionUnverified {
                path: path.clone(),
                source: e,
            })?;
            let m = &v.manifest;
            let mismatch = if m.kind != ManifestKind::Release {
                Some(ManifestMismatch::NotARelease)
            } else if m.version != req.version.as_str() {
                Some(ManifestMismatch::Version {
                    found: m.version.clone(),
                    expected: req.version.to_string(),
                })
            } else if m.code_hash != hashes.code_hash {
                Some(ManifestMismatch::CodeHash {
                    found: m.code_hash.clone(),
                    expected: hashes.code_hash.clone(),
                    sha: sha.to_owned(),
                })
            } else {
                None
            };
            if let Some(why) = mismatch {
                return Err(InvalidInput::ProvisionMismatch {
                    path: path.clone(),
                    why,
                }
                .into());
            }
            let seq = m.sequence;
            self.store()
                .transact(|st| {
                    fleetgate_core::handle(st, Event::SequenceUsed { sequence: seq }).map(|_| ())
                })
                .map_err(flatten)?;
            return Ok((bytes, seq));
        } else if external {
            return Err(ConfigProblem::ExternalSigning {
                version: req.version.to_string(),
                sha: sha.to_owned(),
            }
            .into());
        } else {
            let key_file = s.key_file.as_deref().map(|k| resolve(&ctx.base, k));
            let key = SigningKey::load(key_file.as_deref())
                .map_err(|e| RuntimeError::trust(TrustStep::SigningKey, e))?;
            // The sequence is reserved (written) before the manifest exists outside.
            let sequence = self
                .store()
                .transact(|st| {
                    let seq = st.last_sequence.saturating_add(1).max(now_secs);
                    fleetgate_core::handle(st, Event::SequenceUsed { sequence: seq }).map(|_| seq)
                })
                .map_err(flatten)?;
            let mut extra = serde_json::Map::new();
            extra.insert("provisioned".into(), serde_json::Value::Bool(true));
            let m = release_manifest(
                ctx,
                ReleaseFields {
                    version: req.version.to_string(),
                    git_sha: sha.to_owned(),
                    code_hash: hashes.code_hash.clone(),
                    file_manifest_hash: hashes.file_manifest_hash.clone(),
                    sequence,
                    now_secs,
                    fencing_epoch: u64::try_from(fencing_epoch).unwrap_or(0),
                    provenance_sha256: None,
                    artifacts: Vec::new(),
                    extra,
                },
                Some(&key),
            )?;
            let bytes = fleetgate_trust::sign_manifest(&m, &[&key])
                .map_err(|e| RuntimeError::trust(TrustStep::SignManifest, e))?;
            fleetgate_trust::verify_manifest(&bytes, &ring, now_secs, &VerifyOptions::default())
                .map_err(|e| RuntimeError::trust(TrustStep::VerifyProvision, e))?;
            bytes
        };
        let seq = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("sequence").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        Ok((bytes, seq))
    }
}

use crate::fleet::link;

/// A node's answer to the apply, as a short name and a detail.
fn describe(answer: &NodeAnswer, want: &str) -> (String, String) {
    match answer {
        NodeAnswer::Accepted {
            outcome,
            running_code_hash,
        } => (
            outcome.clone(),
            match running_code_hash {
                Some(h) if h != want => format!("accepted but runs {}", short(h)),
                _ => String::new(),
            },
        ),
        NodeAnswer::Unknown { error } => ("unknown".into(), error.clone()),
        NodeAnswer::BelowFloor { floor, .. } => (
            "below_floor".into(),
            format!(
                "the node's anti-rollback floor {} is at or above this manifest's sequence",
                floor.map_or("?".into(), |f| f.to_string())
            ),
        ),
        NodeAnswer::Failed {
            outcome, detail, ..
        } => (outcome.clone(), detail.clone()),
        NodeAnswer::Rejected { reason, detail } => (reason.clone(), detail.clone()),
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}
