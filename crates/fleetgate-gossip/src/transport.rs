//! Transports: the [`Transport`] trait, real UDP sockets (tokio) and an in-memory
//! network, plus the [`LinkModel`] (loss, offline nodes, cut links) shared by the
//! in-memory transport and the simulator.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::node::PeerAddr;
use crate::rng::Rng;
use crate::wire::MAX_MESSAGE_BYTES;

/// A transport failure.
#[derive(Debug, Error)]
pub enum TransportError {
    /// Binding the local endpoint failed.
    #[error("failed to bind gossip endpoint {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: PeerAddr,
        /// Cause.
        source: io::Error,
    },
    /// An address is already bound in the in-memory network.
    #[error("failed to bind in-memory gossip endpoint {0}: address in use")]
    AddrInUse(PeerAddr),
    /// Sending failed (the message is lost; gossip tolerates it).
    #[error("failed to send {len} bytes to {to}: {source}")]
    Send {
        /// Destination.
        to: PeerAddr,
        /// Message length.
        len: usize,
        /// Cause.
        source: io::Error,
    },
    /// The message is larger than [`MAX_MESSAGE_BYTES`]; not sent.
    #[error("failed to send {len} bytes to {to}: over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge {
        /// Destination.
        to: PeerAddr,
        /// Message length.
        len: usize,
    },
    /// Receiving failed.
    #[error("failed to receive a gossip message: {0}")]
    Recv(io::Error),
    /// The in-memory network was shut down.
    #[error("failed to receive a gossip message: the in-memory network is closed")]
    Closed,
}

/// A best-effort datagram transport for gossip.
///
/// `recv` must be cancel-safe (it is used in `tokio::select!`): dropping its future
/// before completion must not lose a message that was already taken off the wire.
pub trait Transport: Send + 'static {
    /// The address peers reach this endpoint at.
    fn local_addr(&self) -> PeerAddr;
    /// Send one message without waiting; loss is acceptable.
    fn send(&self, to: PeerAddr, bytes: &[u8]) -> Result<(), TransportError>;
    /// Wait for the next message. The returned bytes may be up to
    /// [`MAX_MESSAGE_BYTES`]` + 1` long (longer datagrams are truncated to that, so the
    /// node sees them as oversized).
    fn recv(&mut self) -> impl Future<Output = Result<(PeerAddr, Vec<u8>), TransportError>> + Send;
}

/// Gossip over UDP: one datagram per message, the source address is the sender's
/// gossip address.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    local: PeerAddr,
    buf: Vec<u8>,
}

impl UdpTransport {
    /// Bind `addr` (port 0 for an ephemeral port).
    pub async fn bind(addr: PeerAddr) -> Result<Self, TransportError> {
        let bind_err = |source| TransportError::Bind { addr, source };
        let socket = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let local = socket.local_addr().map_err(bind_err)?;
        Ok(Self {
            socket,
            local,
            buf: vec![0; 65_536],
        })
    }
}

impl Transport for UdpTransport {
    fn local_addr(&self) -> PeerAddr {
        self.local
    }

    fn send(&self, to: PeerAddr, bytes: &[u8]) -> Result<(), TransportError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(TransportError::TooLarge {
                to,
                len: bytes.len(),
            });
        }
        self.socket
            .try_send_to(bytes, to)
            .map(|_| ())
            .map_err(|source| TransportError::Send {
                to,
                len: bytes.len(),
                source,
            })
    }

    async fn recv(&mut self) -> Result<(PeerAddr, Vec<u8>), TransportError> {
        loop {
            match self.socket.recv_from(&mut self.buf).await {
                Ok((n, from)) => {
                    let n = n.min(MAX_MESSAGE_BYTES + 1);
                    return Ok((from, self.buf[..n].to_vec()));
                }
                // An ICMP "port unreachable" from an earlier send surfaces here on some
                // platforms; it says nothing about this socket.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(TransportError::Recv(e)),
            }
        }
    }
}

/// Decides the fate of each message: lost at random with probability `loss` (seeded),
/// lost if either end is down or their link is cut.
#[derive(Debug)]
pub struct LinkModel {
    rng: Rng,
    loss: f64,
    down: HashSet<PeerAddr>,
    cut: HashSet<(PeerAddr, PeerAddr)>,
}

impl LinkModel {
    /// A model losing `loss` of messages, decided by a generator seeded with `seed`.
    pub fn new(seed: u64, loss: f64) -> Self {
        Self {
            rng: Rng::seed_from_u64(seed),
            loss,
            down: HashSet::new(),
            cut: HashSet::new(),
        }
    }

    /// Change the loss rate.
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    /// Mark `a` down (every message to or from it is lost) or up.
    pub fn set_down(&mut self, a: PeerAddr, down: bool) {
        if down {
            self.down.insert(a);
        } else {
            self.down.remove(&a);
        }
    }

    /// Cut or restore the link between `a` and `b` (both directions).
    pub fn set_cut(&mut self, a: PeerAddr, b: PeerAddr, cut: bool) {
        let key = if a <= b { (a, b) } else { (b, a) };
        if cut {
            self.cut.insert(key);
        } else {
            self.cut.remove(&key);
        }
    }

    /// Does a message from `from` to `to` arrive? Consumes randomness only for the
    /// loss decision, so a run's stream depends only on the sequence of sends.
    pub fn delivers(&mut self, from: PeerAddr, to: PeerAddr) -> bool {
        if self.down.contains(&to) || self.down.contains(&from) {
            return false;
        }
        if !self.cut.is_empty() {
            let key = if from <= to { (from, to) } else { (to, from) };
            if self.cut.contains(&key) {
                return false;
            }
        }
        !self.rng.chance(self.loss)
    }
}

type Mailbox = mpsc::UnboundedSender<(PeerAddr, Vec<u8>)>;

#[derive(Debug)]
struct MemInner {
    mailboxes: HashMap<PeerAddr, (u64, Mailbox)>,
    next_id: u64,
    link: LinkModel,
}

/// An in-memory datagram network for tests: endpoints bound to any address, seeded
/// loss, nodes taken down, links cut. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct MemNetwork {
    inner: Arc<Mutex<MemInner>>,
}

impl MemNetwork {
    /// A network losing `loss` of messages, seeded with `seed`.
    pub fn new(seed: u64, loss: f64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemInner {
                mailboxes: HashMap::new(),
                next_id: 0,
                link: LinkModel::new(seed, loss),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bind an endpoint at `addr`.
    pub fn bind(&self, addr: PeerAddr) -> Result<MemTransport, TransportError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        if inner
            .mailboxes
            .get(&addr)
            .is_some_and(|(_, m)| !m.is_closed())
        {
            return Err(TransportError::AddrInUse(addr));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.mailboxes.insert(addr, (id, tx));
        Ok(MemTransport {
            net: self.clone(),
            local: addr,
            id,
            rx,
        })
    }

    /// Put raw bytes in `to`'s mailbox as if sent by `from`, bypassing size limits and
    /// the link model (to test what a hostile sender can do).
    pub fn send_raw(&self, from: PeerAddr, to: PeerAddr, bytes: Vec<u8>) {
        if let Some((_, mb)) = self.lock().mailboxes.get(&to) {
            let _ = mb.send((from, bytes));
        }
    }

    /// Apply `f` to the link model (loss, down, cut).
    pub fn with_links<T>(&self, f: impl FnOnce(&mut LinkModel) -> T) -> T {
        f(&mut self.lock().link)
    }
}

/// An endpoint of a [`MemNetwork`]. Dropping it unbinds the address.
#[derive(Debug)]
pub struct MemTransport {
    net: MemNetwork,
    local: PeerAddr,
    id: u64,
    rx: mpsc::UnboundedReceiver<(PeerAddr, Vec<u8>)>,
}

impl Transport for MemTransport {
    fn local_addr(&self) -> PeerAddr {
        self.local
    }

    fn send(&self, to: PeerAddr, bytes: &[u8]) -> Result<(), TransportError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(TransportError::TooLarge {
                to,
                len: bytes.len(),
            });
        }
        let mut inner = self.net.lock();
        if !inner.link.delivers(self.local, to) {
            return Ok(());
        }
        if let Some((_, mb)) = inner.mailboxes.get(&to) {
            // A closed mailbox is an endpoint that went away: lost, like UDP.
            let _ = mb.send((self.local, bytes.to_vec()));
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<(PeerAddr, Vec<u8>), TransportError> {
        self.rx.recv().await.ok_or(TransportError::Closed)
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        let mut inner = self.net.lock();
        if inner
            .mailboxes
            .get(&self.local)
            .is_some_and(|(id, _)| *id == self.id)
        {
            inner.mailboxes.remove(&self.local);
        }
    }
}
