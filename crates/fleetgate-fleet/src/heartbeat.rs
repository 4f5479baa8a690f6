//! Signed, replay-protected heartbeats.
//!
//! Wire form (the body of `POST /api/fleet/heartbeat`):
//! `{"payload": "<heartbeat JSON>", "signature": "<128 hex chars>"}` where the signature
//! is Ed25519 (node identity key) over exactly the UTF-8 bytes of `payload`. The payload
//! is the [`Heartbeat`] as compact JSON with sorted keys (what [`SignedHeartbeat::sign`]
//! produces). Signing the transmitted bytes, rather than a re-serialisation, keeps the
//! benchmark floats out of the canonicalisation problem.
//!
//! Checks, in order: size limit before parsing; envelope and payload shape (unknown
//! fields refused); known, not removed node; signature (`verify_strict`) with the
//! enrolled key; `sent_at` not older than `max_age_secs` nor ahead by more than
//! `max_future_skew_secs`; `(epoch, seq)` strictly above the last accepted pair, compared
//! in that order (the first heartbeat of a node must have `seq ≥ 1`), with `epoch` at
//! most [`MAX_EPOCH_STEP`] above the last accepted epoch. The check and the insert
//! happen in one transaction with a conditional update, so two copies racing in are not
//! both accepted.
//!
//! **Epochs: re-sync without an operator.** A node must never reuse an `(epoch, seq)`.
//! Within an epoch `seq` strictly increases; a higher epoch resets the window, so any
//! `seq` (from 1) is accepted again. One validly signed heartbeat with an inflated `seq`
//! (a bug, a clock jump on a node deriving `seq` from its clock) therefore no longer
//! locks the node out: its next heartbeat, signed with a higher epoch, is accepted. The
//! bump is authenticated like every heartbeat (the node key signs the epoch), and replay
//! protection is unchanged: an `(epoch, seq)` at or below the stored pair is refused.
//! The refusal (`409`) tells the node the stored pair (`last_epoch`, `last_seq`), so a
//! node that lost its counter re-syncs with `last_epoch + 1`. Heartbeats without an
//! `epoch` field (older agents) are epoch 0.

use std::collections::BTreeMap;

/// Node ids per statement in the batched reads (well under SQLite's and PostgreSQL's
/// limits on bound parameters).
pub(crate) const READ_CHUNK: usize = 2000;

use fleetgate_trust::PublicKey;
use serde::{Deserialize, Serialize};

use crate::error::{FleetError, HeartbeatError};
use crate::registry::{PeerStatus, Pool, Registry, to_i64};
use crate::sigbatch::SigBatcher;
use fleetgate_node_api::validate_node_id;

/// How far above the last accepted epoch a heartbeat's epoch may be. An agent steps its
/// epoch by one (per restart or re-sync); the cap keeps a single heartbeat from pushing
/// the epoch to where the node could never go above it again.
pub const MAX_EPOCH_STEP: u64 = 1 << 20;

pub use fleetgate_node_api::{Heartbeat, SignedHeartbeat};

/// Limits applied to incoming heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatPolicy {
    /// Largest body accepted (default 16 KiB).
    pub max_bytes: usize,
    /// Oldest `sent_at` accepted, in seconds before now (default 300).
    pub max_age_secs: u64,
    /// Largest clock skew into the future accepted (default 60).
    pub max_future_skew_secs: u64,
    /// Most benchmark figures in one heartbeat (default 64).
    pub max_bench_entries: usize,
    /// How long raw heartbeats are kept (default one day): older ones are deleted by the
    /// endpoint's writer ([`Registry::prune_heartbeats`]), except a node's own latest
    /// ones when it sent nothing newer. The canary judge reads the window and the
    /// pre-window history (`[canary] pre_window_secs`), so this must cover both.
    pub retention_secs: u64,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024,
            max_age_secs: 300,
            max_future_skew_secs: 60,
            max_bench_entries: 64,
            retention_secs: DEFAULT_RETENTION_SECS,
        }
    }
}

/// Default of [`HeartbeatPolicy::retention_secs`]: one day.
pub const DEFAULT_RETENTION_SECS: u64 = 86_400;

/// A stored heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    /// Node id.
    pub node_id: String,
    /// When the orchestrator received it (unix seconds, orchestrator clock).
    pub at: i64,
    /// When the node sent it (node clock).
    pub sent_at: i64,
    /// Epoch of `seq`.
    #[serde(default)]
    pub epoch: i64,
    /// Sequence number.
    pub seq: i64,
    /// Version.
    pub version: String,
    /// Code hash.
    pub code_hash: String,
    /// Health check.
    pub healthy: bool,
    /// Cumulative exceptions.
    pub exceptions_total: i64,
    /// Cumulative requests.
    pub requests_total: i64,
    /// Benchmark figures.
    pub bench: BTreeMap<String, f64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct HeartbeatRow {
    node_id: String,
    at: i64,
    sent_at: i64,
    epoch: i64,
    seq: i64,
    version: String,
    code_hash: String,
    healthy: bool,
    exceptions_total: i64,
    requests_total: i64,
    bench: String,
}

impl TryFrom<HeartbeatRow> for HeartbeatRecord {
    type Error = FleetError;
    fn try_from(r: HeartbeatRow) -> Result<Self, FleetError> {
        let bench = serde_json::from_str(&r.bench).map_err(|_| FleetError::Corrupt {
            what: "heartbeat bench JSON",
            value: r.bench.chars().take(200).collect(),
        })?;
        Ok(Self {
            node_id: r.node_id,
            at: r.at,
            sent_at: r.sent_at,
            epoch: r.epoch,
            seq: r.seq,
            version: r.version,
            code_hash: r.code_hash,
            healthy: r.healthy,
            exceptions_total: r.exceptions_total,
            requests_total: r.requests_total,
            bench,
        })
    }
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), HeartbeatError> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(HeartbeatError::Malformed(format!(
            "{field} {:?} must be at most {max} printable characters",
            v.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// Parses and checks an envelope without touching the database (size, shape, fields).
pub fn parse_heartbeat(
    body: &[u8],
    policy: &HeartbeatPolicy,
) -> Result<(SignedHeartbeat, Heartbeat), HeartbeatError> {
    if body.len() > policy.max_bytes {
        return Err(HeartbeatError::TooLarge {
            size: body.len(),
            limit: policy.max_bytes,
        });
    }
    let env: SignedHeartbeat = serde_json::from_slice(body).map_err(|e| {
        HeartbeatError::Malformed(format!(
            "expected {{\"payload\": string, \"signature\": hex}}: {e}"
        ))
    })?;
    let hb: Heartbeat = serde_json::from_str(&env.payload)
        .map_err(|e| HeartbeatError::Malformed(format!("payload: {e}")))?;
    validate_node_id(&hb.node_id).map_err(|r| HeartbeatError::Malformed(format!("node_id {r}")))?;
    check_text("version", &hb.version, 128)?;
    check_text("code_hash", &hb.code_hash, 128)?;
    if hb.bench.len() > policy.max_bench_entries {
        return Err(HeartbeatError::Malformed(format!(
            "{} benchmark figures, at most {} allowed",
            hb.bench.len(),
            policy.max_bench_entries
        )));
    }
    for name in hb.bench.keys() {
        check_text("benchmark name", name, 128)?;
    }
    if env.signature.is_empty() {
        return Err(HeartbeatError::Unsigned {
            node_id: hb.node_id,
        });
    }
    Ok((env, hb))
}

/// A heartbeat whose envelope, node, signature and times were checked
/// ([`Registry::verify_heartbeat`]), ready to be stored with others in one transaction
/// ([`Registry::store_heartbeats`]). Replay protection is decided when it is stored.
#[derive(Debug, Clone)]
pub struct VerifiedHeartbeat {
    record: HeartbeatRecord,
    bench_json: String,
    floor: i64,
    /// The enrolled key (hex) the signature was verified with; stored only while it is
    /// still the node's key.
    key: String,
}

impl VerifiedHeartbeat {
    /// The node it is from.
    pub fn node_id(&self) -> &str {
        &self.record.node_id
    }
}

impl Registry {
    /// Verifies and stores one heartbeat (the HTTP body), received at `now`.
    pub async fn record_heartbeat(
        &self,
        body: &[u8],
        policy: &HeartbeatPolicy,
        now: i64,
    ) -> Result<HeartbeatRecord, HeartbeatError> {
        let v = self.verify_heartbeat(body, policy, now).await?;
        self.store_heartbeats(vec![v])
            .await?
            .pop()
            .unwrap_or_else(|| {
                Err(HeartbeatError::Registry(FleetError::Invalid {
                    what: "heartbeat batch",
                    value: "empty answer".into(),
                    expected: "one result per heartbeat",
                }))
            })
    }

    /// Verifies and stores heartbeats received at `now`, the verified ones in one
    /// transaction; one result per body, in order.
    pub async fn record_heartbeats(
        &self,
        bodies: &[Vec<u8>],
        policy: &HeartbeatPolicy,
        now: i64,
    ) -> Result<Vec<Result<HeartbeatRecord, HeartbeatError>>, FleetError> {
        let mut out: Vec<Option<Result<HeartbeatRecord, HeartbeatError>>> = Vec::new();
        let mut verified = Vec::new();
        let mut slots = Vec::new();
        for body in bodies {
            match self.verify_heartbeat(body, policy, now).await {
                Ok(v) => {
                    slots.push(out.len());
                    verified.push(v);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        for (slot, r) in slots
            .into_iter()
            .zip(self.store_heartbeats(verified).await?)
        {
            out[slot] = Some(r);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Checks one heartbeat (the HTTP body) received at `now`: size and shape, a known,
    /// not removed node, its signature, its age and its epoch step. Reads the registry,
    /// writes nothing.
    pub async fn verify_heartbeat(
        &self,
        body: &[u8],
        policy: &HeartbeatPolicy,
        now: i64,
    ) -> Result<VerifiedHeartbeat, HeartbeatError> {
        self.verify_heartbeat_with(body, policy, now, None).await
    }

    /// [`Self::verify_heartbeat`], the signature checked by `sigs` together with other
    /// requests' (the heartbeat endpoint's path; same answers).
    pub async fn verify_heartbeat_batched(
        &self,
        body: &[u8],
        policy: &HeartbeatPolicy,
        now: i64,
        sigs: &SigBatcher,
    ) -> Result<VerifiedHeartbeat, HeartbeatError> {
        self.verify_heartbeat_with(body, policy, now, Some(sigs))
            .await
    }

    async fn verify_heartbeat_with(
        &self,
        body: &[u8],
        policy: &HeartbeatPolicy,
        now: i64,
        sigs: Option<&SigBatcher>,
    ) -> Result<VerifiedHeartbeat, HeartbeatError> {
        let (env, hb) = parse_heartbeat(body, policy)?;
        let bad_sig = || HeartbeatError::BadSignature {
            node_id: hb.node_id.clone(),
        };
        let mut sig = [0u8; 64];
        if env.signature.len() != 128 || hex::decode_to_slice(&env.signature, &mut sig).is_err() {
            return Err(bad_sig());
        }
        // The node's key: cached (a hint, re-checked when the heartbeat is stored) or
        // read; a signature that fails with a cached key is checked with a fresh one. A
        // forged heartbeat leaves the cached key alone (it is replaced only by a key that
        // verifies), so forgeries cannot make every later heartbeat of the node miss.
        let cached = match self.keys.get(&hb.node_id) {
            Some((hex, key)) => {
                let ok = match sigs {
                    Some(b) => b.verify(key, env.payload.as_bytes(), sig).await,
                    None => key.verify_strict(env.payload.as_bytes(), &sig).is_ok(),
                };
                ok.then_some(hex)
            }
            None => None,
        };
        let key_hex = match cached {
            Some(hex) => hex,
            None => {
                let peer = self
                    .find_peer(&hb.node_id)
                    .await?
                    .ok_or_else(|| HeartbeatError::UnknownNode(hb.node_id.clone()))?;
                if peer.status == PeerStatus::Removed {
                    return Err(HeartbeatError::Removed(hb.node_id));
                }
                let key = PublicKey::from_hex(&peer.public_key).map_err(|_| {
                    HeartbeatError::Registry(FleetError::Corrupt {
                        what: "peer public key",
                        value: peer.public_key.clone(),
                    })
                })?;
                key.verify_strict(env.payload.as_bytes(), &sig)
                    .map_err(|_| bad_sig())?;
                self.keys.put(&hb.node_id, peer.public_key.clone(), key);
                peer.public_key
            }
        };

        let now_u = u64::try_from(now).unwrap_or(0);
        if hb.sent_at.saturating_add(policy.max_age_secs) < now_u {
            return Err(HeartbeatError::TooOld {
                node_id: hb.node_id,
                sent_at: hb.sent_at,
                now: now_u,
                max_age: policy.max_age_secs,
            });
        }
        if hb.sent_at > now_u.saturating_add(policy.max_future_skew_secs) {
            return Err(HeartbeatError::FromFuture {
                node_id: hb.node_id,
                sent_at: hb.sent_at,
                now: now_u,
                skew: policy.max_future_skew_secs,
            });
        }
        let seq = to_i64("seq", hb.seq)?;
        let epoch = to_i64("epoch", hb.epoch)?;
        // The epoch step is checked against the stored pair when the heartbeat is stored.
        let sent_at = to_i64("sent_at", hb.sent_at)?;
        let exceptions = to_i64("exceptions_total", hb.exceptions_total)?;
        let requests = to_i64("requests_total", hb.requests_total)?;
        let floor = to_i64("floor", hb.floor)?;
        // Non-finite figures are dropped: they cannot be judged.
        let bench: BTreeMap<String, f64> = hb
            .bench
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let bench_json = serde_json::to_string(&bench).unwrap_or_else(|_| "{}".into());
        Ok(VerifiedHeartbeat {
            floor,
            record: HeartbeatRecord {
                node_id: hb.node_id,
                at: now,
                sent_at,
                epoch,
                seq,
                version: hb.version,
                code_hash: hb.code_hash,
                healthy: hb.healthy,
                exceptions_total: exceptions,
                requests_total: requests,
                bench,
            },
            bench_json,
            key: key_hex,
        })
    }

    /// Stores verified heartbeats in one transaction (one commit for the batch: group
    /// commit) and a few statements whatever the batch's size: the nodes' stored pairs
    /// are read (locked on PostgreSQL; SQLite's write lock is taken first), each
    /// heartbeat is accepted only if its `(epoch, seq)` is above its node's pair so far
    /// and within the epoch step (in batch order, as one after another), each node's
    /// pair is advanced once with compare-and-swap on the pair read, and the accepted
    /// heartbeats are inserted in one multi-row statement — so two heartbeats of one
    /// node in a batch, or racing batches, never both pass. One result per heartbeat, in order; `Err` only when the
    /// database failed (then nothing of the batch was stored).
    pub async fn store_heartbeats(
        &self,
        batch: Vec<VerifiedHeartbeat>,
    ) -> Result<Vec<Result<HeartbeatRecord, HeartbeatError>>, FleetError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let step = to_i64("epoch step", MAX_EPOCH_STEP)?;
        let mut ids: Vec<&str> = batch.iter().map(|v| v.record.node_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let accepted: Vec<bool> = match &self.pool {
            Pool::Postgres(pool) => store_batch_pg(pool, &batch, &ids, step).await?,
            Pool::Sqlite(pool) => store_batch_sqlite(pool, &batch, &ids, step).await?,
        };
        let mut out = Vec::with_capacity(batch.len());
        for (v, ok) in batch.into_iter().zip(accepted) {
            if ok {
                out.push(Ok(v.record));
                continue;
            }
            let r = v.record;
            // Refused: the next heartbeat of this node reads its key afresh.
            self.keys.evict(&r.node_id);
            let current = self.find_peer(&r.node_id).await?;
            out.push(Err(match current {
                None => HeartbeatError::UnknownNode(r.node_id),
                Some(p) if p.status == PeerStatus::Removed => HeartbeatError::Removed(r.node_id),
                // Enrolled again with another key since the signature was checked.
                Some(p) if p.public_key != v.key => {
                    HeartbeatError::BadSignature { node_id: r.node_id }
                }
                Some(p) if r.epoch > p.last_epoch.saturating_add(step) => {
                    HeartbeatError::EpochJump {
                        node_id: r.node_id,
                        epoch: u64::try_from(r.epoch).unwrap_or(0),
                        last_epoch: u64::try_from(p.last_epoch).unwrap_or(0),
                        max_step: MAX_EPOCH_STEP,
                    }
                }
                Some(p) => HeartbeatError::Replayed {
                    node_id: r.node_id,
                    epoch: u64::try_from(r.epoch).unwrap_or(0),
                    seq: u64::try_from(r.seq).unwrap_or(0),
                    last_epoch: u64::try_from(p.last_epoch).unwrap_or(0),
                    last_seq: u64::try_from(p.last_seq).unwrap_or(0),
                },
            }));
        }
        Ok(out)
    }

    /// Deletes the heartbeats received before `cutoff` of every node that has one at or
    /// after it (a node that went silent keeps its last ones, so `fleet show` still says
    /// what it last reported). With one heartbeat per node every `i` seconds, a node's
    /// rows are then bounded by about `retention / i` plus what it sent before going
    /// silent: storage per node does not grow with time. Returns how many were deleted.
    pub async fn prune_heartbeats(&self, cutoff: i64) -> Result<u64, FleetError> {
        const SQL: &str = "DELETE FROM heartbeats WHERE at < $1 AND EXISTS (
            SELECT 1 FROM heartbeats newer WHERE newer.node_id = heartbeats.node_id AND newer.at >= $1)";
        Ok(with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(cutoff)
                .execute(pool)
                .await
                .map_err(FleetError::db("prune old heartbeats"))?
                .rows_affected()
        }))
    }

    /// How many heartbeats are stored for each node (for sizing and tests).
    pub async fn heartbeat_counts(&self) -> Result<BTreeMap<String, i64>, FleetError> {
        const SQL: &str = "SELECT node_id, COUNT(*) FROM heartbeats GROUP BY node_id";
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .fetch_all(pool)
                .await
                .map_err(FleetError::db("count heartbeats"))?
        });
        Ok(rows.into_iter().collect())
    }

    /// Heartbeats of `nodes` received in `[from, to]`, oldest first.
    pub async fn heartbeats_between(
        &self,
        nodes: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<HeartbeatRecord>, FleetError> {
        const SQL: &str = "SELECT node_id, at, sent_at, epoch, seq, version, code_hash, healthy, exceptions_total, requests_total, bench
            FROM heartbeats WHERE node_id = $1 AND at >= $2 AND at <= $3 ORDER BY at, epoch, seq";
        let mut out = Vec::new();
        for node in nodes {
            let rows: Vec<HeartbeatRow> = with_pool!(self, |pool| {
                sqlx::query_as(SQL)
                    .bind(node)
                    .bind(from)
                    .bind(to)
                    .fetch_all(pool)
                    .await
                    .map_err(FleetError::db("read heartbeats"))?
            });
            for r in rows {
                out.push(HeartbeatRecord::try_from(r)?);
            }
        }
        out.sort_by(|a, b| {
            (a.at, &a.node_id, a.epoch, a.seq).cmp(&(b.at, &b.node_id, b.epoch, b.seq))
        });
        Ok(out)
    }

    /// The latest heartbeat received at or before `at` of each of `nodes` that has one,
    /// by node id: [`Registry::latest_heartbeat`] for many nodes at once, a few thousand
    /// per statement (a canary sample or a DEPLOY pass over a large fleet is then a few
    /// round trips instead of one per node).
    pub async fn latest_heartbeats(
        &self,
        nodes: &[String],
        at: i64,
    ) -> Result<BTreeMap<String, HeartbeatRecord>, FleetError> {
        let mut out = BTreeMap::new();
        self.visit_latest_heartbeats(nodes, at, |h| {
            out.insert(h.node_id.clone(), h);
        })
        .await?;
        Ok(out)
    }

    /// [`Registry::latest_heartbeats`] handed to `visit` one at a time, in node id order,
    /// as each statement's rows arrive: a caller that keeps only part of each heartbeat
    /// (a canary sample, a DEPLOY pass over 100,000 nodes) never holds them all at once.
    pub async fn visit_latest_heartbeats(
        &self,
        nodes: &[String],
        at: i64,
        mut visit: impl FnMut(HeartbeatRecord) + Send,
    ) -> Result<(), FleetError> {
        let mut ids: Vec<&str> = nodes.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        // Driven by the node list, one index probe per node ((node_id, at) on both
        // backends): PostgreSQL through a LATERAL join over the bound array, SQLite
        // (which has no LATERAL) through a correlated row-value subquery per listed id.
        const PG: &str =
            "SELECT h.node_id, h.at, h.sent_at, h.epoch, h.seq, h.version, h.code_hash,
                h.healthy, h.exceptions_total, h.requests_total, h.bench
            FROM unnest($1::text[]) AS n(id)
            CROSS JOIN LATERAL (SELECT * FROM heartbeats l WHERE l.node_id = n.id AND l.at <= $2
                ORDER BY l.at DESC, l.epoch DESC, l.seq DESC LIMIT 1) h";
        for chunk in ids.chunks(READ_CHUNK) {
            let rows: Vec<HeartbeatRow> = match &self.pool {
                Pool::Postgres(pool) => sqlx::query_as(PG)
                    .bind(chunk)
                    .bind(at)
                    .fetch_all(pool)
                    .await
                    .map_err(FleetError::db("read the latest heartbeats"))?,
                Pool::Sqlite(pool) => {
                    let mut q = sqlx::QueryBuilder::new("WITH n(id) AS (VALUES ");
                    let mut sep = q.separated(", ");
                    for id in chunk {
                        sep.push("(")
                            .push_bind_unseparated((*id).to_owned())
                            .push_unseparated(")");
                    }
                    q.push(
                        ") SELECT h.node_id, h.at, h.sent_at, h.epoch, h.seq, h.version, h.code_hash,
                                h.healthy, h.exceptions_total, h.requests_total, h.bench
                         FROM n JOIN heartbeats h ON h.node_id = n.id
                          AND (h.at, h.epoch, h.seq) = (SELECT l.at, l.epoch, l.seq FROM heartbeats l
                               WHERE l.node_id = n.id AND l.at <= ",
                    );
                    q.push_bind(at)
                        .push(" ORDER BY l.at DESC, l.epoch DESC, l.seq DESC LIMIT 1)");
                    q.build_query_as()
                        .fetch_all(pool)
                        .await
                        .map_err(FleetError::db("read the latest heartbeats"))?
                }
            };
            for r in rows {
                visit(HeartbeatRecord::try_from(r)?);
            }
        }
        Ok(())
    }

    /// The latest heartbeat of `node` received at or before `at`.
    pub async fn latest_heartbeat(
        &self,
        node: &str,
        at: i64,
    ) -> Result<Option<HeartbeatRecord>, FleetError> {
        const SQL: &str = "SELECT node_id, at, sent_at, epoch, seq, version, code_hash, healthy, exceptions_total, requests_total, bench
            FROM heartbeats WHERE node_id = $1 AND at <= $2 ORDER BY at DESC, epoch DESC, seq DESC LIMIT 1";
        let row: Option<HeartbeatRow> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(node)
                .bind(at)
                .fetch_optional(pool)
                .await
                .map_err(FleetError::db("read latest heartbeat"))?
        });
        row.map(HeartbeatRecord::try_from).transpose()
    }
}

/// The nodes' stored state as a batch reads it: `(last_epoch, last_seq, not removed,
/// public key)` by node id.
type StoredPairs = BTreeMap<String, (i64, i64, bool, String)>;

fn stored_pairs(rows: Vec<(String, i64, i64, String, String)>) -> StoredPairs {
    rows.into_iter()
        .map(|(id, e, q, st, key)| (id, (e, q, st != "removed", key)))
        .collect()
}

/// Decides a batch in order, as one heartbeat after another would be: whether each is
/// accepted against its node's stored pair (and the ones accepted before it in the
/// batch), and for each node the index of its last accepted heartbeat.
fn decide<'a>(
    batch: &'a [VerifiedHeartbeat],
    stored: &StoredPairs,
    step: i64,
) -> (Vec<bool>, BTreeMap<&'a str, usize>) {
    let mut pair: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut accepted = Vec::with_capacity(batch.len());
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, v) in batch.iter().enumerate() {
        let r = &v.record;
        let ok = match stored.get(r.node_id.as_str()) {
            // Not removed, and still enrolled with the key that verified it.
            Some(&(e0, q0, active, ref key)) if active && *key == v.key => {
                let (e, q) = *pair.get(r.node_id.as_str()).unwrap_or(&(e0, q0));
                let above = e < r.epoch || (e == r.epoch && q < r.seq);
                above && e >= r.epoch - step
            }
            _ => false,
        };
        if ok {
            pair.insert(&r.node_id, (r.epoch, r.seq));
            last.insert(&r.node_id, i);
        }
        accepted.push(ok);
    }
    (accepted, last)
}

/// A heartbeat stays accepted only if its node's pair moved in this transaction (the
/// compare-and-swap found the pair the batch read).
fn keep_moved(
    accepted: &mut [bool],
    batch: &[VerifiedHeartbeat],
    moved: &std::collections::BTreeSet<String>,
) {
    for (ok, v) in accepted.iter_mut().zip(batch) {
        *ok = *ok && moved.contains(&v.record.node_id);
    }
}

/// PostgreSQL: the batch in three statements whose text does not depend on its size
/// (columns bound as arrays and read back with `unnest`), so each is parsed and planned
/// once per connection and then only executed — a statement per batch size, or one bind
/// per value, costs the server a parse and a plan of hundreds of parameters every time.
/// The peers are locked in id order (`ORDER BY id FOR UPDATE`): racing batches wait for
/// each other, never deadlock.
async fn store_batch_pg(
    pool: &sqlx::PgPool,
    batch: &[VerifiedHeartbeat],
    ids: &[&str],
    step: i64,
) -> Result<Vec<bool>, FleetError> {
    const READ: &str = "SELECT id, last_epoch, last_seq, status, public_key FROM peers \
         WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE";
    const ADVANCE: &str = "UPDATE peers SET last_seq = v.seq, last_epoch = v.epoch, \
         last_heartbeat = v.at, current_version = v.version, code_hash = v.code_hash, \
         last_healthy = v.healthy, last_floor = v.floor \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], \
         $6::text[], $7::bool[], $8::bigint[], $9::bigint[], $10::bigint[]) \
         AS v(id, seq, epoch, at, version, code_hash, healthy, floor, prev_epoch, prev_seq) \
         WHERE peers.id = v.id AND peers.last_epoch = v.prev_epoch \
         AND peers.last_seq = v.prev_seq AND peers.status <> 'removed' RETURNING peers.id";
    const INSERT: &str = "INSERT INTO heartbeats (node_id, at, sent_at, seq, version, \
         code_hash, healthy, exceptions_total, requests_total, bench, epoch) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
         $5::text[], $6::text[], $7::bool[], $8::bigint[], $9::bigint[], $10::text[], \
         $11::bigint[])";
    let mut tx = pool
        .begin()
        .await
        .map_err(FleetError::db("begin heartbeat transaction"))?;
    // 1. The nodes' stored pairs, locked until the commit.
    let rows: Vec<(String, i64, i64, String, String)> = sqlx::query_as(READ)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(FleetError::db("read the peers of a heartbeat batch"))?;
    let stored = stored_pairs(rows);
    // 2. Decide in order.
    let (mut accepted, last) = decide(batch, &stored, step);
    // 3. Advance each node's pair once, to its last accepted heartbeat, only if the stored
    //    pair is still the one read (compare-and-swap).
    let mut moved = std::collections::BTreeSet::new();
    if !last.is_empty() {
        let rows = last.iter().map(|(id, i)| (*id, &batch[*i], &stored[*id]));
        let (mut id, mut seq, mut epoch, mut at, mut version, mut hash, mut healthy) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut floor, mut prev_epoch, mut prev_seq) = (vec![], vec![], vec![]);
        for (node, v, (e0, q0, _, _)) in rows {
            let r = &v.record;
            id.push(node);
            seq.push(r.seq);
            epoch.push(r.epoch);
            at.push(r.at);
            version.push(r.version.as_str());
            hash.push(r.code_hash.as_str());
            healthy.push(r.healthy);
            floor.push(v.floor);
            prev_epoch.push(*e0);
            prev_seq.push(*q0);
        }
        let rows: Vec<(String,)> = sqlx::query_as(ADVANCE)
            .bind(id)
            .bind(seq)
            .bind(epoch)
            .bind(at)
            .bind(version)
            .bind(hash)
            .bind(healthy)
            .bind(floor)
            .bind(prev_epoch)
            .bind(prev_seq)
            .fetch_all(&mut *tx)
            .await
            .map_err(FleetError::db("update the peers of a heartbeat batch"))?;
        moved = rows.into_iter().map(|r| r.0).collect();
    }
    keep_moved(&mut accepted, batch, &moved);
    // 4. The accepted heartbeats, in one statement.
    if accepted.iter().any(|a| *a) {
        let (mut node, mut at, mut sent_at, mut seq, mut version, mut hash) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut healthy, mut exceptions, mut requests, mut bench, mut epoch) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (v, _) in batch.iter().zip(&accepted).filter(|(_, a)| **a) {
            let r = &v.record;
            node.push(r.node_id.as_str());
            at.push(r.at);
            sent_at.push(r.sent_at);
            seq.push(r.seq);
            version.push(r.version.as_str());
            hash.push(r.code_hash.as_str());
            healthy.push(r.healthy);
            exceptions.push(r.exceptions_total);
            requests.push(r.requests_total);
            bench.push(v.bench_json.as_str());
            epoch.push(r.epoch);
        }
        sqlx::query(INSERT)
            .bind(node)
            .bind(at)
            .bind(sent_at)
            .bind(seq)
            .bind(version)
            .bind(hash)
            .bind(healthy)
            .bind(exceptions)
            .bind(requests)
            .bind(bench)
            .bind(epoch)
            .execute(&mut *tx)
            .await
            .map_err(FleetError::db("store heartbeats"))?;
    }
    tx.commit()
        .await
        .map_err(FleetError::db("commit heartbeats"))?;
    Ok(accepted)
}

/// `rows` as one JSON array for `json_each` (strings, integers and booleans only: it
/// cannot fail, and a failure would name itself).
fn as_json(rows: &impl Serialize) -> Result<String, FleetError> {
    serde_json::to_string(rows).map_err(|e| FleetError::Invalid {
        what: "heartbeat batch",
        value: e.to_string(),
        expected: "values JSON can hold",
    })
}

/// SQLite: the batch under the write lock, taken first (`BEGIN IMMEDIATE`: a read that
/// later writes would otherwise deadlock with another writer instead of waiting for it).
/// As on PostgreSQL, the statements' texts do not depend on the batch: SQLite has no
/// arrays, so each statement gets the batch as one JSON array and reads it back with
/// `json_each` (a row per node as an array, `value->>k` its `k`-th column). Nothing
/// comes back a row at a time (sqlx hands each row over from its SQLite thread): the
/// peers read are one JSON row, and the pairs advanced a count — under `BEGIN IMMEDIATE`
/// no other writer can move a pair between the read and the update. A statement
/// with a clause per node would not do: SQLite allows 500 terms in a compound `SELECT`,
/// and a batch holds up to [`crate::ingest::MAX_BATCH`] nodes.
async fn store_batch_sqlite(
    pool: &sqlx::SqlitePool,
    batch: &[VerifiedHeartbeat],
    ids: &[&str],
    step: i64,
) -> Result<Vec<bool>, FleetError> {
    const READ: &str = "SELECT json_group_array(json_array(id, last_epoch, last_seq, \
         status, public_key)) FROM peers WHERE id IN (SELECT value FROM json_each(?1))";
    const ADVANCE: &str = "UPDATE peers SET last_seq = v.seq, last_epoch = v.epoch, \
         last_heartbeat = v.at, current_version = v.version, code_hash = v.code_hash, \
         last_healthy = v.healthy, last_floor = v.floor \
         FROM (SELECT value->>0 AS id, value->>1 AS seq, value->>2 AS epoch, value->>3 AS at, \
         value->>4 AS version, value->>5 AS code_hash, value->>6 AS healthy, \
         value->>7 AS floor, value->>8 AS prev_epoch, value->>9 AS prev_seq \
         FROM json_each(?1)) AS v \
         WHERE peers.id = v.id AND peers.last_epoch = v.prev_epoch \
         AND peers.last_seq = v.prev_seq AND peers.status <> 'removed'";
    const INSERT: &str = "INSERT INTO heartbeats (node_id, at, sent_at, seq, version, \
         code_hash, healthy, exceptions_total, requests_total, bench, epoch) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
         value->>6, value->>7, value->>8, value->>9, value->>10 FROM json_each(?1)";
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(FleetError::db("begin heartbeat transaction"))?;
    // 1. The nodes' stored pairs.
    let (read,): (String,) = sqlx::query_as(READ)
        .bind(as_json(&ids)?)
        .fetch_one(&mut *tx)
        .await
        .map_err(FleetError::db("read the peers of a heartbeat batch"))?;
    let rows: Vec<(String, i64, i64, String, String)> =
        serde_json::from_str(&read).map_err(|e| FleetError::Invalid {
            what: "peers of a heartbeat batch, as read",
            value: e.to_string(),
            expected: "a JSON array of [id, last_epoch, last_seq, status, public_key]",
        })?;
    let stored = stored_pairs(rows);
    // 2. Decide in order.
    let (mut accepted, last) = decide(batch, &stored, step);
    // 3. Advance each node's pair once, to its last accepted heartbeat, only if the
    //    stored pair is still the one read (compare-and-swap).
    let mut moved = std::collections::BTreeSet::new();
    if !last.is_empty() {
        let rows: Vec<_> = last
            .iter()
            .map(|(id, i)| {
                let v = &batch[*i];
                let r = &v.record;
                let (e0, q0, _, _) = stored[*id];
                let (version, hash) = (&r.version, &r.code_hash);
                (
                    *id, r.seq, r.epoch, r.at, version, hash, r.healthy, v.floor, e0, q0,
                )
            })
            .collect();
        let advanced = sqlx::query(ADVANCE)
            .bind(as_json(&rows)?)
            .execute(&mut *tx)
            .await
            .map_err(FleetError::db("update the peers of a heartbeat batch"))?
            .rows_affected();
        // Under the write lock nothing changed the pairs read: every one advances. Were it
        // otherwise the batch fails whole (nothing is committed) rather than guess.
        if advanced != rows.len() as u64 {
            return Err(FleetError::Invalid {
                what: "heartbeat batch",
                value: format!("{advanced} of {} peers advanced", rows.len()),
                expected: "every peer read under the write lock to advance",
            });
        }
        moved = rows.iter().map(|r| r.0.to_owned()).collect();
    }
    keep_moved(&mut accepted, batch, &moved);
    // 4. The accepted heartbeats, in one statement.
    if accepted.iter().any(|a| *a) {
        let rows: Vec<_> = batch
            .iter()
            .zip(&accepted)
            .filter(|(_, a)| **a)
            .map(|(v, _)| {
                let r = &v.record;
                (
                    &r.node_id,
                    r.at,
                    r.sent_at,
                    r.seq,
                    &r.version,
                    &r.code_hash,
                    r.healthy,
                    r.exceptions_total,
                    r.requests_total,
                    &v.bench_json,
                    r.epoch,
                )
            })
            .collect();
        sqlx::query(INSERT)
            .bind(as_json(&rows)?)
            .execute(&mut *tx)
            .await
            .map_err(FleetError::db("store heartbeats"))?;
    }
    tx.commit()
        .await
        .map_err(FleetError::db("commit heartbeats"))?;
    Ok(accepted)
}
