//! Heartbeat signatures checked in batches across requests.
//!
//! Each heartbeat request parses its body and finds its node's key itself; the
//! signature check goes to a [`SigBatcher`], whose checkers take whatever signatures
//! queue up within [`LINGER`] of the first (up to [`MAX_BATCH`]) and check them together with
//! [`fleetgate_trust::verify_strict_batch`] on the checker's task — about a third of the
//! work per signature of checking each alone, with `verify_strict`'s answers (see that
//! module for the one difference, which only a node's own key can provoke). Under
//! light load a batch is one signature, checked alone, a millisecond late.
//! A full queue does not refuse anything: the request checks its signature itself.

use std::sync::{Arc, OnceLock};

use fleetgate_trust::{BatchEntry, PublicKey, verify_strict_batch};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most signatures checked in one batch.
pub const MAX_BATCH: usize = 64;
/// Most signatures waiting for a checker; beyond it a request checks its own.
pub const QUEUE: usize = 4096;
/// How long a checker waits for more signatures once it has one (the latency a
/// heartbeat may gain; a full batch goes at once).
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

struct Job {
    key: PublicKey,
    message: Vec<u8>,
    signature: [u8; 64],
    reply: oneshot::Sender<bool>,
}

/// The signature checkers of one endpoint (started on first use, inside the server's
/// runtime: one per CPU, at most four).
#[derive(Default)]
pub struct SigBatcher {
    tx: OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for SigBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigBatcher")
            .field("started", &self.tx.get().is_some())
            .finish()
    }
}

impl SigBatcher {
    /// A batcher whose checkers start with the first signature.
    #[must_use]
    pub fn new() -> SigBatcher {
        SigBatcher::default()
    }

    /// Whether `signature` over `message` verifies with `key` (strictly, as
    /// [`PublicKey::verify_strict`]).
    pub async fn verify(&self, key: PublicKey, message: &[u8], signature: [u8; 64]) -> bool {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            let checkers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            for _ in 0..checkers {
                tokio::spawn(checker(rx.clone()));
            }
            tx
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            message: message.to_vec(),
            signature,
            reply,
        };
        match tx.try_send(job) {
            Ok(()) => match answer.await {
                Ok(ok) => ok,
                // The checker went away (the runtime is shutting down): check here.
                Err(_) => key.verify_strict(message, &signature).is_ok(),
            },
            Err(_) => key.verify_strict(message, &signature).is_ok(),
        }
    }
}

async fn checker(rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                break;
            }
            // Signatures arrive one per request: wait up to LINGER for more, so a batch
            // is large enough to pay (the other checker takes the next one meanwhile).
            let deadline = tokio::time::Instant::now() + LINGER;
            while jobs.len() < MAX_BATCH {
                let room = MAX_BATCH - jobs.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut jobs, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        tracing::debug!(
            size = jobs.len(),
            batched = jobs.len() >= fleetgate_trust::batch::MIN_BATCH,
            "heartbeat signatures checked together (batched: one batch equation; else one by one)"
        );
        // Checked here, on the checker's task: a full batch takes about a millisecond of
        // one worker, and handing it to a blocking thread cost more in switches than it
        // spared (10-15% more endpoint CPU per heartbeat, benches/README.md).
        let entries: Vec<BatchEntry<'_>> = jobs
            .iter()
            .map(|j| BatchEntry {
                key: &j.key,
                message: &j.message,
                signature: &j.signature,
            })
            .collect();
        let answers = verify_strict_batch(&entries);
        drop(entries);
        for (job, ok) in jobs.drain(..).zip(answers) {
            let _ = job.reply.send(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_trust::SigningKey;

    /// Many requests at once, a few forged: each gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_answer_each_signature() {
        let batcher = Arc::new(SigBatcher::new());
        let mut tasks = Vec::new();
        for i in 0..300u32 {
            let batcher = batcher.clone();
            tasks.push(tokio::spawn(async move {
                let mut seed = [7u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                let key = SigningKey::from_seed(&seed);
                let msg = format!("heartbeat {i}").into_bytes();
                let mut sig = key.sign(&msg);
                let forged = i % 37 == 5;
                if forged {
                    sig[40] ^= 4;
                }
                let ok = batcher.verify(key.public_key(), &msg, sig).await;
                (forged, ok)
            }));
        }
        let mut forged = 0;
        for t in tasks {
            let (was_forged, ok) = t.await.expect("task");
            assert_eq!(ok, !was_forged);
            forged += usize::from(was_forged);
        }
        assert_eq!(forged, 8, "the forged ones were among them");
    }
}
