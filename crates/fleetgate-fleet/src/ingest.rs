//! Group commit for the heartbeat endpoint: requests verify their heartbeat themselves
//! (in parallel, on the server's worker threads) and hand it to a writer task, which
//! stores whatever has queued up meanwhile in one transaction
//! ([`Registry::store_heartbeats`]) and answers each request with its own result. Under
//! load a batch grows to [`MAX_BATCH`] and the commit cost is shared. SQLite has one
//! writer (it takes one write transaction at a time whatever we do); PostgreSQL has
//! [`PG_WRITERS`], so that one batch is built and sent while another waits for its
//! commit (racing batches lock their nodes' rows in id order: they wait for each other,
//! never deadlock, and never both accept one heartbeat). A queue of
//! [`QUEUE`] heartbeats bounds the memory, and a request that finds it full is refused
//! at once ([`Overloaded`]: the endpoint answers 429 with `Retry-After`), never queued
//! without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::{FleetError, HeartbeatError};
use crate::heartbeat::{HeartbeatRecord, VerifiedHeartbeat};
use crate::registry::Registry;

/// Most heartbeats stored in one transaction.
pub const MAX_BATCH: usize = 512;
/// Most heartbeats waiting for the writer.
pub const QUEUE: usize = 8192;
/// Writer tasks storing batches at once on PostgreSQL (one on SQLite).
pub const PG_WRITERS: usize = 4;
/// Times a batch the database aborted in a conflict (deadlock, busy) is run again.
const TRANSIENT_RETRIES: usize = 3;

type Reply = oneshot::Sender<Result<HeartbeatRecord, HeartbeatError>>;

/// The ingest queue was full: nothing was stored; retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// The writer of one endpoint (started on the first heartbeat, inside the server's
/// runtime).
pub struct Ingest {
    registry: Registry,
    retention: i64,
    clock: crate::http::Clock,
    tx: std::sync::OnceLock<mpsc::Sender<(VerifiedHeartbeat, Reply)>>,
}

impl Ingest {
    /// A writer for `registry` that keeps raw heartbeats for `retention_secs` (see
    /// [`crate::HeartbeatPolicy::retention_secs`]; pruned at most once a minute, after a
    /// batch, by the clock `clock`).
    pub fn new(registry: Registry, retention_secs: u64, clock: crate::http::Clock) -> Ingest {
        Ingest {
            registry,
            retention: i64::try_from(retention_secs).unwrap_or(i64::MAX),
            clock,
            tx: std::sync::OnceLock::new(),
        }
    }

    /// Store `v` with the next batch and return its result; [`Overloaded`] at once when
    /// [`QUEUE`] heartbeats are already waiting.
    pub async fn submit(
        &self,
        v: VerifiedHeartbeat,
    ) -> Result<Result<HeartbeatRecord, HeartbeatError>, Overloaded> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let writers = if self.registry.is_postgres() {
                PG_WRITERS
            } else {
                1
            };
            let shared = Arc::new(Shared {
                rx: Mutex::new(rx),
                pruned_at: AtomicI64::new(i64::MIN),
            });
            for _ in 0..writers {
                tokio::spawn(writer(
                    self.registry.clone(),
                    shared.clone(),
                    self.retention,
                    self.clock.clone(),
                ));
            }
            tx
        });
        Self::enqueue(tx, v).await
    }

    async fn enqueue(
        tx: &mpsc::Sender<(VerifiedHeartbeat, Reply)>,
        v: VerifiedHeartbeat,
    ) -> Result<Result<HeartbeatRecord, HeartbeatError>, Overloaded> {
        let (reply, answer) = oneshot::channel();
        tx.try_send((v, reply)).map_err(|_| Overloaded)?;
        Ok(answer.await.unwrap_or_else(|_| {
            Err(HeartbeatError::Registry(FleetError::Batch(
                "the ingest writer stopped before answering".into(),
            )))
        }))
    }
}

/// Seconds between two prunings of old heartbeats.
pub const PRUNE_EVERY_SECS: i64 = 60;

/// What the writers of one endpoint share: the queue (a writer holds it while it waits
/// for heartbeats, and lets go once it has taken a batch) and when old heartbeats were
/// last pruned (one writer prunes per period).
struct Shared {
    rx: Mutex<mpsc::Receiver<(VerifiedHeartbeat, Reply)>>,
    pruned_at: AtomicI64,
}

impl Shared {
    /// Whether the caller should prune now: true for one caller per period.
    fn claim_pruning(&self, now: i64) -> bool {
        let last = self.pruned_at.load(Ordering::Relaxed);
        now.saturating_sub(last) >= PRUNE_EVERY_SECS
            && self
                .pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

async fn writer(
    registry: Registry,
    shared: Arc<Shared>,
    retention: i64,
    clock: crate::http::Clock,
) {
    let mut items = Vec::with_capacity(MAX_BATCH);
    loop {
        let taken = shared
            .rx
            .lock()
            .await
            .recv_many(&mut items, MAX_BATCH)
            .await;
        if taken == 0 {
            break;
        }
        let now = clock();
        if shared.claim_pruning(now) {
            match registry
                .prune_heartbeats(now.saturating_sub(retention))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned heartbeats older than the retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune old heartbeats"),
            }
        }
        let (batch, replies): (Vec<VerifiedHeartbeat>, Vec<Reply>) = items.drain(..).unzip();
        let (size, started) = (batch.len(), std::time::Instant::now());
        // A batch the database aborted in a conflict with another writer (a deadlock
        // with a feed or status write on PostgreSQL) wrote nothing: run it again.
        let mut stored = registry.store_heartbeats(batch.clone()).await;
        for _ in 0..TRANSIENT_RETRIES {
            match &stored {
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, size, "heartbeat batch aborted by the database; retrying");
                    stored = registry.store_heartbeats(batch.clone()).await;
                }
                _ => break,
            }
        }
        tracing::debug!(
            size,
            micros = started.elapsed().as_micros(),
            "heartbeat batch stored"
        );
        match stored {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a batch of heartbeats could not be stored");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(HeartbeatError::Registry(FleetError::Batch(
                        msg.clone(),
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::HeartbeatPolicy;
    use crate::{CertFields, Heartbeat, SignedHeartbeat, issue_cert};
    use fleetgate_trust::{Keyring, SigningKey};

    /// Of writers racing at the same moment, one prunes; the next may prune a period
    /// later, not before (the clock going back never claims it).
    #[test]
    fn one_writer_claims_each_pruning_period() {
        let (_tx, rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            rx: Mutex::new(rx),
            pruned_at: AtomicI64::new(i64::MIN),
        });
        let race = |now: i64| {
            let claims: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| shared.claim_pruning(now)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            claims.into_iter().filter(|c| *c).count()
        };
        assert_eq!(race(1_000), 1);
        assert_eq!(race(1_000), 0);
        assert_eq!(race(1_000 + PRUNE_EVERY_SECS - 1), 0);
        assert_eq!(race(900), 0);
        assert_eq!(race(1_000 + PRUNE_EVERY_SECS), 1);
        assert_eq!(race(1_000 + PRUNE_EVERY_SECS), 0);
    }

    /// A full queue refuses at once (nothing waits without bound), and what was queued
    /// is answered once the writer runs.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let reg = Registry::connect(&url).await.unwrap();
        let master = SigningKey::from_seed(&[7; 32]);
        let node = SigningKey::from_seed(&[8; 32]);
        let now = crate::unix_now();
        let cert = issue_cert(
            &CertFields {
                node_id: "n1".into(),
                public_key: node.public_key_hex(),
                region: "eu".into(),
                address: "http://127.0.0.1:1".into(),
                issued_at: u64::try_from(now).unwrap(),
            },
            &[&master],
        )
        .unwrap();
        let keyring = Keyring::single(master.public_key());
        reg.enroll(&cert, &keyring, now).await.unwrap();
        let hb = |seq| Heartbeat {
            bench: Default::default(),
            code_hash: "h".into(),
            epoch: 0,
            exceptions_total: 0,
            floor: 0,
            healthy: true,
            node_id: "n1".into(),
            requests_total: seq,
            sent_at: u64::try_from(now).unwrap(),
            seq,
            version: "1".into(),
        };
        let policy = HeartbeatPolicy::default();
        let verified = |seq| {
            let body = SignedHeartbeat::sign(&hb(seq), &node).to_json();
            let reg = reg.clone();
            let policy = policy.clone();
            async move { reg.verify_heartbeat(&body, &policy, now).await.unwrap() }
        };
        // A queue of one whose writer has not started yet.
        let (tx, mut rx) = mpsc::channel(1);
        let first = tokio::spawn({
            let (tx, v) = (tx.clone(), verified(1).await);
            async move { Ingest::enqueue(&tx, v).await }
        });
        while tx.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            Ingest::enqueue(&tx, verified(2).await).await.unwrap_err(),
            Overloaded
        );
        // The writer starts: the queued heartbeat is stored and answered.
        let mut items = Vec::new();
        rx.recv_many(&mut items, MAX_BATCH).await;
        let (batch, replies): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let results = reg.store_heartbeats(batch).await.unwrap();
        for (reply, r) in replies.into_iter().zip(results) {
            reply.send(r).unwrap();
        }
        let rec = first.await.unwrap().unwrap().unwrap();
        assert_eq!((rec.node_id.as_str(), rec.seq), ("n1", 1));
    }
}
