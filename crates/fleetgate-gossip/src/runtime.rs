//! The tokio runtime: drives one [`Node`] over a [`Transport`] with the wall clock.
//!
//! It owns no protocol logic: it feeds ticks (every `round_interval_ms`), received
//! datagrams and publish commands to the node, and executes the outputs — sends go to
//! the transport, deliveries to a `watch` channel (the application only ever needs the
//! newest verified manifest, and a slow application never stalls gossip), drops to
//! `tracing`.
//!
//! The listener drops datagrams from a source address (`ip:port`) beyond
//! `max_messages_per_source_per_round` per round (burst: four rounds' worth) before the
//! node sees them ([`fleetgate_trust::ratelimit`]). Keyed by port too, so a whole fleet
//! on one host (every node on 127.0.0.1) is never throttled by its own members.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetgate_trust::ratelimit::{RateLimit, RateLimiter};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::node::{
    Delivered, DropReason, GossipConfig, Input, Node, NodeError, Output, PeerAddr, PeerList,
    Source, Stats,
};
use crate::transport::{Transport, TransportError, UdpTransport};
use crate::verify::{Verified, Verifier};
use crate::wire::Head;

/// A runtime failure.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The gossip task has stopped.
    #[error("failed to reach the gossip task: it has stopped")]
    Stopped,
    /// The published manifest was refused by this node.
    #[error("failed to publish the manifest: {0}")]
    Rejected(DropReason),
    /// The gossip task panicked.
    #[error("failed to join the gossip task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Why [`spawn_udp`] could not start a node.
#[derive(Debug, Error)]
pub enum StartError {
    /// The UDP endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The configuration or the held manifest was refused.
    #[error(transparent)]
    Node(#[from] NodeError),
}

enum Command {
    Publish(Vec<u8>, Reply),
    Snapshot(oneshot::Sender<(Stats, Option<Head>)>),
    Inject(Input),
    Shutdown,
}

/// Handle to a running gossip node.
pub struct GossipHandle<V> {
    cmd: mpsc::Sender<Command>,
    delivered: watch::Receiver<Option<Delivered>>,
    task: JoinHandle<Node<V>>,
    addr: PeerAddr,
}

/// Unix time in milliseconds from the system clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh seed for a production node's peer choice (from the OS-seeded thread RNG).
/// Simulations pass their own seeds instead.
pub fn random_seed() -> u64 {
    rand::random()
}

/// The usual way to start a node agent's gossip: bind UDP at `bind`, know `peers` (seed
/// addresses; more are learned), restore the manifest held before a restart (verified
/// again; peers that lack it pull it), and run on the current tokio runtime.
pub async fn spawn_udp<V>(
    cfg: GossipConfig,
    bind: PeerAddr,
    peers: impl IntoIterator<Item = PeerAddr>,
    verifier: V,
    held: Option<&[u8]>,
) -> Result<GossipHandle<V>, StartError>
where
    V: Verifier + Send + 'static,
{
    let transport = UdpTransport::bind(bind).await?;
    let me = transport.local_addr();
    let peers = std::sync::Arc::new(PeerList::new(peers));
    let mut node = Node::new(cfg, me, peers, verifier, random_seed())?;
    node.set_cookie_secret(rand::random());
    if let Some(m) = held {
        node.restore(m, unix_ms())?;
    }
    Ok(spawn(node, transport))
}

/// Run `node` over `transport` on the current tokio runtime until shut down.
pub fn spawn<T, V>(node: Node<V>, transport: T) -> GossipHandle<V>
where
    T: Transport,
    V: Verifier + Send + 'static,
{
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (del_tx, del_rx) = watch::channel(node.held());
    let addr = transport.local_addr();
    let task = tokio::spawn(run(node, transport, cmd_rx, del_tx));
    GossipHandle {
        cmd: cmd_tx,
        delivered: del_rx,
        task,
        addr,
    }
}

async fn run<T: Transport, V: Verifier>(
    mut node: Node<V>,
    mut transport: T,
    mut cmds: mpsc::Receiver<Command>,
    delivered: watch::Sender<Option<Delivered>>,
) -> Node<V> {
    let round_ms = node.config().round_interval_ms.max(1);
    let per_round = node.config().max_messages_per_source_per_round.max(1);
    let per_sec = u64::from(per_round).saturating_mul(1000) / round_ms;
    let mut limiter: RateLimiter<PeerAddr> = RateLimiter::new(RateLimit::new(
        per_round.saturating_mul(4),
        u32::try_from(per_sec).unwrap_or(u32::MAX),
    ));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(node.config().round_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The node verifies expiry with the time of its latest tick: give it one first.
    let first = node.handle(Input::Tick { now_ms: unix_ms() });
    execute(first, &transport, &delivered, &mut None);
    loop {
        let mut reply = None;
        let outs = tokio::select! {
            _ = tick.tick() => node.handle(Input::Tick { now_ms: unix_ms() }),
            r = transport.recv() => match r {
                Ok((from, bytes)) => {
                    let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if limiter.check(&from, now).is_ok() {
                        node.handle(Input::Message { from, bytes })
                    } else {
                        tracing::debug!(%from, refused = limiter.refused(), "gossip: over the per-source rate limit, dropped");
                        Vec::new()
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gossip: receive failed");
                    // Do not spin on a persistent error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Vec::new()
                }
            },
            c = cmds.recv() => match c {
                Some(Command::Publish(manifest, tx)) => {
                    reply = Some(tx);
                    node.handle(Input::Publish { manifest })
                }
                Some(Command::Snapshot(tx)) => {
                    let _ = tx.send((node.stats().clone(), node.head()));
                    Vec::new()
                }
                Some(Command::Inject(input)) => node.handle(input),
                Some(Command::Shutdown) | None => return node,
            },
        };
        execute(outs, &transport, &delivered, &mut reply);
        if let Some(tx) = reply.take() {
            // Defensive: a publish always yields `Published` or a local `Drop`; never
            // leave the caller waiting if that ever changes.
            let _ = tx.send(Err(RuntimeError::Rejected(DropReason::Malformed)));
        }
    }
}

type Reply = oneshot::Sender<Result<Verified, RuntimeError>>;

fn execute<T: Transport>(
    outs: Vec<Output>,
    transport: &T,
    delivered: &watch::Sender<Option<Delivered>>,
    reply: &mut Option<Reply>,
) {
    for o in outs {
        match o {
            Output::Send { to, bytes, kind } => {
                if let Err(e) = transport.send(to, &bytes) {
                    tracing::debug!(error = %e, ?kind, "gossip: send failed");
                }
            }
            Output::Deliver(d) => {
                tracing::info!(
                    sequence = d.verified.sequence,
                    kind = ?d.verified.kind,
                    "gossip: delivered a verified manifest"
                );
                delivered.send_replace(Some(d));
            }
            Output::Published(v) => {
                if let Some(tx) = reply.take() {
                    let _ = tx.send(Ok(v));
                }
            }
            Output::Drop { source, reason } => match source {
                Source::Local => {
                    if let Some(tx) = reply.take() {
                        let _ = tx.send(Err(RuntimeError::Rejected(reason)));
                    }
                }
                Source::Peer(from) => {
                    tracing::debug!(%from, reason = reason.as_str(), "gossip: dropped");
                }
            },
        }
    }
}

impl<V> GossipHandle<V> {
    /// The node's gossip address.
    pub fn addr(&self) -> PeerAddr {
        self.addr
    }

    /// Publish a signed manifest from this node (the orchestrator's DEPLOY stage, or a
    /// rollback order). Resolves once this node verified and installed it.
    pub async fn publish(&self, manifest: Vec<u8>) -> Result<Verified, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Publish(manifest, tx))
            .await
            .map_err(|_| RuntimeError::Stopped)?;
        rx.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// The node's counters and held head.
    pub async fn snapshot(&self) -> Result<(Stats, Option<Head>), RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Snapshot(tx))
            .await
            .map_err(|_| RuntimeError::Stopped)?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// Feed an input directly (tests, or an embedder with its own message source).
    pub async fn inject(&self, input: Input) -> Result<(), RuntimeError> {
        self.cmd
            .send(Command::Inject(input))
            .await
            .map_err(|_| RuntimeError::Stopped)
    }

    /// Newest verified manifest delivered (or restored) so far; await `changed()` on it
    /// to learn of the next one.
    pub fn deliveries(&self) -> watch::Receiver<Option<Delivered>> {
        self.delivered.clone()
    }

    /// Stop the task and get the node back (with its state, e.g. to restart it later).
    pub async fn shutdown(self) -> Result<Node<V>, RuntimeError> {
        // If the task already ended, joining reports how.
        let _ = self.cmd.send(Command::Shutdown).await;
        Ok(self.task.await?)
    }
}
