//! The gossip protocol as a pure state machine: `Node::handle(Input) -> Vec<Output>`.
//!
//! No I/O, no clock, no ambient randomness: time arrives in [`Input::Tick`], bytes in
//! [`Input::Message`], and peer choice comes from a [`Rng`] seeded at construction.
//! A runtime ([`crate::runtime`] or [`crate::sim`]) executes the outputs.
//!
//! Protocol, per node:
//! * **Push (rumor mongering).** When a node installs a manifest newer than what it held,
//!   it pushes it, on each of the following rounds, to `fanout` random peers, until it
//!   has spent a budget of `retransmit_mult × ⌈log₁₀(n+1)⌉` transmissions (n = cluster
//!   size it knows of; memberlist's retransmit limit).
//! * **Pull anti-entropy.** Every `anti_entropy_interval_ms` (and on its first tick, so
//!   a restarted node syncs at once) a node sends its [`Head`] to one random peer. A peer
//!   holding something newer answers with the manifest; otherwise it answers with its own
//!   head, and if that is older the asker sends its manifest back. An unanswered pull is
//!   retried with another peer after `pull_timeout_ms`, up to `pull_retries` times.
//! * **Ordering.** Higher sequence wins, whatever the kind, so a rollback issued with a
//!   higher sequence supersedes the release it undoes. Equal sequence with a different
//!   hash (equivocation) and lower sequences are dropped.
//! * **Safety.** Everything is verified before it is stored, forwarded or delivered;
//!   every drop is counted by reason and reported as an [`Output::Drop`].
//! * **No amplification.** UDP source addresses can be spoofed, so a node never answers
//!   a sender that is not a *verified member* with more bytes than it sent. Verified
//!   members are the configured peers, peers learned from a proven probe, and any sender
//!   whose probe carries a valid address cookie. Anyone else's probe gets a
//!   [`Message::Challenge`] (21 bytes, smaller than any probe) holding a cookie,
//!   `SHA-256(secret ‖ window ‖ address)` truncated to 16 bytes, valid for the current
//!   and the previous `COOKIE_WINDOW_MS` window; a sender that really receives at its
//!   address sends it back in its next probe and is answered in full. Legacy digests
//!   (no cookie) from non-members are dropped ([`DropReason::Unproven`]); a stale
//!   manifest or push from a non-member is answered only if our manifest is no larger.
//!   Peers are learned only from proven probes, so a spoofed sender never ends up
//!   in the push rounds either. The cookie secret comes from the seed unless set with
//!   [`Node::set_cookie_secret`] (the UDP runtime sets 32 random bytes).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;

use crate::rng::Rng;
use crate::verify::{Reject, Verified, Verifier};
use crate::wire::{COOKIE_BYTES, Cookie, DecodeError, Head, Message};

/// Length of an address cookie's validity window (a cookie is accepted in its window and
/// the next one, so for 60 to 120 s).
pub const COOKIE_WINDOW_MS: u64 = 60_000;

/// Address of a gossip peer (its UDP/in-memory endpoint).
pub type PeerAddr = SocketAddr;

/// Tunables. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// Peers pushed to per round (default 3).
    pub fanout: usize,
    /// Length of a push round in milliseconds (default 1000).
    pub round_interval_ms: u64,
    /// Retransmit multiplier: a node sends one manifest at most
    /// `retransmit_mult × ⌈log₁₀(n+1)⌉` times in the push phase (default 4).
    pub retransmit_mult: u32,
    /// Push transmissions a node gives up each time it receives a push of the manifest it
    /// already holds: a duplicate means the rumor is already widespread (rumor
    /// mongering's "loss of interest"; default 1, 0 disables).
    pub duplicate_cost: u32,
    /// Anti-entropy period in milliseconds (`anti_entropy_secs`, default 10 s).
    /// `None` disables anti-entropy (push only; used to measure the push phase).
    pub anti_entropy_interval_ms: Option<u64>,
    /// How long to wait for an anti-entropy answer before asking another peer
    /// (default 1000 ms).
    pub pull_timeout_ms: u64,
    /// Extra peers asked when an anti-entropy exchange goes unanswered (default 3).
    pub pull_retries: u32,
    /// Pulls made, one per round, when a node starts or comes back after more than an
    /// anti-entropy interval away, until a peer holding a manifest at least as new as
    /// its own answers (default 5).
    pub catch_up_pulls: u32,
    /// Answers (to digests and stale pushes) sent per round at most; limits the
    /// amplification a spoofed sender can cause (default 64).
    pub max_replies_per_round: u32,
    /// Peers learned from incoming messages at most, beyond the static list
    /// (default 4096).
    pub max_learned_peers: usize,
    /// Messages one source address (`ip:port`) may send per round before the runtime
    /// drops the rest, with a burst of four rounds' worth (default 16; a peer needs at
    /// most about 4 per round). Enforced by the runtime's listener, not by the node.
    pub max_messages_per_source_per_round: u32,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            fanout: 3,
            round_interval_ms: 1000,
            retransmit_mult: 4,
            duplicate_cost: 1,
            anti_entropy_interval_ms: Some(10_000),
            pull_timeout_ms: 1000,
            pull_retries: 3,
            catch_up_pulls: 5,
            max_replies_per_round: 64,
            max_learned_peers: 4096,
            max_messages_per_source_per_round: 16,
        }
    }
}

/// An invalid [`GossipConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A field that must be positive is zero.
    #[error("invalid gossip config: `{0}` must be greater than 0")]
    Zero(&'static str),
}

impl GossipConfig {
    /// Check the values; called by [`Node::new`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fanout == 0 {
            return Err(ConfigError::Zero("fanout"));
        }
        if self.round_interval_ms == 0 {
            return Err(ConfigError::Zero("round_interval_ms"));
        }
        if self.retransmit_mult == 0 {
            return Err(ConfigError::Zero("retransmit_mult"));
        }
        if self.anti_entropy_interval_ms == Some(0) {
            return Err(ConfigError::Zero("anti_entropy_interval_ms"));
        }
        if self.pull_timeout_ms == 0 {
            return Err(ConfigError::Zero("pull_timeout_ms"));
        }
        Ok(())
    }

    /// Push transmissions one node spends on one manifest in a cluster of `n` nodes:
    /// `retransmit_mult × ⌈log₁₀(n+1)⌉`, and at least `fanout`.
    pub fn retransmit_budget(&self, n: usize) -> u32 {
        let budget = self
            .retransmit_mult
            .saturating_mul(ceil_log10(n as u64 + 1));
        budget.max(u32::try_from(self.fanout).unwrap_or(u32::MAX))
    }
}

/// Smallest `d` with `10^d >= x` (`x >= 1`).
pub fn ceil_log10(x: u64) -> u32 {
    let mut d = 0;
    let mut p: u64 = 1;
    while p < x {
        p = p.saturating_mul(10);
        d += 1;
    }
    d
}

/// The static peer list, shareable between many simulated nodes.
#[derive(Debug, Default)]
pub struct PeerList {
    addrs: Vec<PeerAddr>,
    index: HashSet<PeerAddr>,
}

impl PeerList {
    /// Deduplicated list of peers (it may include the node's own address; it is skipped).
    pub fn new(addrs: impl IntoIterator<Item = PeerAddr>) -> Self {
        let mut list = Self::default();
        for a in addrs {
            if list.index.insert(a) {
                list.addrs.push(a);
            }
        }
        list
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// No addresses.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[derive(Debug)]
struct Membership {
    me: PeerAddr,
    seeds: Arc<PeerList>,
    learned: Vec<PeerAddr>,
    learned_set: HashSet<PeerAddr>,
    max_learned: usize,
}

impl Membership {
    fn contains(&self, a: &PeerAddr) -> bool {
        self.seeds.index.contains(a) || self.learned_set.contains(a)
    }

    /// Returns `true` if `a` was new and added.
    fn learn(&mut self, a: PeerAddr) -> bool {
        if a == self.me || self.contains(&a) || self.learned.len() >= self.max_learned {
            return false;
        }
        self.learned_set.insert(a);
        self.learned.push(a);
        true
    }

    fn total(&self) -> usize {
        self.seeds.addrs.len() + self.learned.len()
    }

    fn peer_count(&self) -> usize {
        self.total() - usize::from(self.seeds.index.contains(&self.me))
    }

    fn get(&self, i: usize) -> PeerAddr {
        match self.seeds.addrs.get(i) {
            Some(a) => *a,
            None => self.learned[i - self.seeds.addrs.len()],
        }
    }

    /// Up to `k` distinct random peers, never `me`.
    fn sample(&self, rng: &mut Rng, k: usize, out: &mut Vec<PeerAddr>) {
        out.clear();
        let total = self.total();
        if self.peer_count() <= k {
            out.extend((0..total).map(|i| self.get(i)).filter(|a| *a != self.me));
            return;
        }
        while out.len() < k {
            let a = self.get(rng.below(total as u64) as usize);
            if a != self.me && !out.contains(&a) {
                out.push(a);
            }
        }
    }
}

/// Where an input came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The local application (a publish).
    Local,
    /// A peer.
    Peer(PeerAddr),
}

/// An event fed to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passes: unix milliseconds, non-decreasing (a smaller value is ignored).
    Tick {
        /// Current time in unix milliseconds.
        now_ms: u64,
    },
    /// Raw bytes from a peer, untrusted.
    Message {
        /// Sender address as reported by the transport.
        from: PeerAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// The local application publishes a signed manifest (release or rollback).
    Publish {
        /// Signed manifest bytes.
        manifest: Vec<u8>,
    },
}

/// Class of an outgoing message, for accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendKind {
    /// Rumor push (push phase).
    Push,
    /// Manifest sent to a peer known to be behind (anti-entropy).
    Manifest,
    /// Anti-entropy digest request.
    Digest,
    /// Anti-entropy digest answer.
    DigestReply,
    /// Address challenge to a probe from a sender that is not a verified member.
    Challenge,
}

/// A manifest handed to the application after verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The verified facts.
    pub verified: Verified,
    /// The exact signed bytes.
    pub manifest: Arc<[u8]>,
}

/// Why an input was dropped. Closed; each one is counted in [`Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum DropReason {
    /// Larger than the wire limit.
    #[error("message is oversized")]
    Oversized,
    /// Not a well-formed gossip message.
    #[error("message is malformed")]
    Malformed,
    /// The manifest failed verification.
    #[error("manifest rejected: {0}")]
    Unverified(Reject),
    /// Verified, but older than what this node holds.
    #[error("manifest is older than the one held")]
    Stale,
    /// Same sequence as the one held, different bytes.
    #[error("manifest has the same sequence as the one held but a different hash")]
    Equivocation,
    /// Over the per-round answer budget.
    #[error("answer budget for this round is spent")]
    RateLimited,
    /// An anti-entropy answer nobody asked this peer for.
    #[error("unsolicited anti-entropy answer")]
    Unsolicited,
    /// A request from a sender that is not a verified member and cannot be challenged
    /// (or answered) without sending it more bytes than it sent.
    #[error("request from an unverified address that cannot be answered without amplification")]
    Unproven,
}

impl DropReason {
    const SLOTS: usize = 7 + Reject::ALL.len();

    fn slot(self) -> usize {
        match self {
            DropReason::Oversized => 0,
            DropReason::Malformed => 1,
            DropReason::Stale => 2,
            DropReason::Equivocation => 3,
            DropReason::RateLimited => 4,
            DropReason::Unsolicited => 5,
            DropReason::Unproven => 6,
            DropReason::Unverified(r) => 7 + r.index(),
        }
    }

    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        [
            DropReason::Oversized,
            DropReason::Malformed,
            DropReason::Stale,
            DropReason::Equivocation,
            DropReason::RateLimited,
            DropReason::Unsolicited,
            DropReason::Unproven,
        ]
        .into_iter()
        .chain(Reject::ALL.into_iter().map(DropReason::Unverified))
    }

    /// Stable snake_case name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::Stale => "stale",
            DropReason::Equivocation => "equivocation",
            DropReason::RateLimited => "rate_limited",
            DropReason::Unsolicited => "unsolicited",
            DropReason::Unproven => "unproven",
            DropReason::Unverified(r) => r.as_str(),
        }
    }
}

impl From<DecodeError> for DropReason {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Oversized { .. } => DropReason::Oversized,
            DecodeError::Malformed(_) => DropReason::Malformed,
        }
    }
}

/// A command for the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` (an encoded [`Message`]) to `to`, best effort.
    Send {
        /// Destination.
        to: PeerAddr,
        /// Encoded message; shared between the targets of one round.
        bytes: Arc<[u8]>,
        /// What it is, for accounting.
        kind: SendKind,
    },
    /// A newly verified manifest, newer than anything held before: apply it.
    Deliver(Delivered),
    /// A local publish was verified and is now being gossiped.
    Published(Verified),
    /// An input was dropped (and counted).
    Drop {
        /// Who sent it.
        source: Source,
        /// Why.
        reason: DropReason,
    },
}

/// Counters kept by a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received from peers (well-formed or not).
    pub received: u64,
    /// Sends by kind: push, manifest, digest, digest reply.
    pub sent_push: u64,
    /// Manifests sent to peers known to be behind.
    pub sent_manifest: u64,
    /// Anti-entropy digests sent.
    pub sent_digest: u64,
    /// Anti-entropy digest answers sent.
    pub sent_digest_reply: u64,
    /// Address challenges sent.
    pub sent_challenge: u64,
    /// Manifests delivered to the application.
    pub delivered: u64,
    /// Copies of the held manifest received again (normal in gossip; not a drop).
    pub duplicates: u64,
    drops: [u64; DropReason::SLOTS],
}

impl Stats {
    /// Inputs dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.slot()]
    }

    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// All messages sent.
    pub fn sent_total(&self) -> u64 {
        self.sent_push
            + self.sent_manifest
            + self.sent_digest
            + self.sent_digest_reply
            + self.sent_challenge
    }

    /// Add another node's counters (for cluster totals).
    pub fn add(&mut self, o: &Stats) {
        self.received += o.received;
        self.sent_push += o.sent_push;
        self.sent_manifest += o.sent_manifest;
        self.sent_digest += o.sent_digest;
        self.sent_digest_reply += o.sent_digest_reply;
        self.sent_challenge += o.sent_challenge;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
}

#[derive(Debug)]
struct Current {
    verified: Verified,
    manifest: Arc<[u8]>,
    push_msg: Arc<[u8]>,
    manifest_msg: Arc<[u8]>,
}

impl Current {
    fn head(&self) -> Head {
        Head {
            sequence: self.verified.sequence,
            manifest_hash: self.verified.manifest_hash,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct PendingPull {
    peer: PeerAddr,
    deadline_ms: u64,
    retries_left: u32,
    /// The peer challenged this pull once already (a second challenge is not followed).
    challenged: bool,
}

/// Why a node could not be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A manifest given to [`Node::restore`] failed verification.
    #[error("failed to restore the held manifest: {0}")]
    Restore(Reject),
    /// A manifest given to [`Node::restore`] does not fit in a gossip message.
    #[error("failed to restore the held manifest: {0}")]
    RestoreSize(DecodeError),
}

/// One gossip participant. See the module docs for the protocol.
pub struct Node<V> {
    cfg: GossipConfig,
    members: Membership,
    verifier: V,
    rng: Rng,
    now_ms: u64,
    started: bool,
    current: Option<Current>,
    budget_left: u32,
    next_round_ms: u64,
    next_ae_ms: u64,
    pending: Option<PendingPull>,
    catch_up_left: u32,
    replies_this_round: u32,
    stats: Stats,
    scratch: Vec<PeerAddr>,
    cookie_secret: [u8; 32],
    /// Cookies peers handed this node (sent back in its probes to them).
    cookies: HashMap<PeerAddr, Cookie>,
}

impl<V: Verifier> Node<V> {
    /// A node at address `me`, knowing the static `peers`, verifying with `verifier`,
    /// choosing peers with a generator seeded by `seed`.
    pub fn new(
        cfg: GossipConfig,
        me: PeerAddr,
        peers: Arc<PeerList>,
        verifier: V,
        seed: u64,
    ) -> Result<Self, NodeError> {
        cfg.validate()?;
        let max_learned = cfg.max_learned_peers;
        Ok(Self {
            cfg,
            members: Membership {
                me,
                seeds: peers,
                learned: Vec::new(),
                learned_set: HashSet::new(),
                max_learned,
            },
            verifier,
            rng: Rng::seed_from_u64(seed),
            now_ms: 0,
            started: false,
            current: None,
            budget_left: 0,
            next_round_ms: 0,
            next_ae_ms: 0,
            pending: None,
            catch_up_left: 0,
            replies_this_round: 0,
            stats: Stats::default(),
            scratch: Vec::new(),
            cookie_secret: crate::verify::sha256(
                &[b"fleetgate-gossip cookie".as_slice(), &seed.to_be_bytes()].concat(),
            ),
            cookies: HashMap::new(),
        })
    }

    /// Set the secret address cookies are made with (production: 32 random bytes; by
    /// default it is derived from the seed, which suits simulations only).
    pub fn set_cookie_secret(&mut self, secret: [u8; 32]) {
        self.cookie_secret = secret;
    }

    /// This node's cookie for `addr` in cookie window `window`.
    fn cookie_in(&self, addr: PeerAddr, window: u64) -> Cookie {
        let mut input = Vec::with_capacity(32 + 8 + 19);
        input.extend_from_slice(&self.cookie_secret);
        input.extend_from_slice(&window.to_be_bytes());
        match addr {
            SocketAddr::V4(a) => {
                input.push(4);
                input.extend_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                input.push(6);
                input.extend_from_slice(&a.ip().octets());
            }
        }
        input.extend_from_slice(&addr.port().to_be_bytes());
        let h = crate::verify::sha256(&input);
        let mut c = [0u8; COOKIE_BYTES];
        c.copy_from_slice(&h[..COOKIE_BYTES]);
        c
    }

    /// This node's current cookie for `addr`.
    fn cookie_for(&self, addr: PeerAddr) -> Cookie {
        self.cookie_in(addr, self.now_ms / COOKIE_WINDOW_MS)
    }

    /// Is `cookie` this node's cookie for `addr`, of this window or the previous one?
    fn cookie_valid(&self, addr: PeerAddr, cookie: &Cookie) -> bool {
        if *cookie == [0; COOKIE_BYTES] {
            return false;
        }
        let w = self.now_ms / COOKIE_WINDOW_MS;
        let same = |c: Cookie| c.iter().zip(cookie).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same(self.cookie_in(addr, w)) | (w > 0 && same(self.cookie_in(addr, w - 1)))
    }

    /// Is `addr` a verified member: configured, or learned from a proven probe?
    fn is_member(&self, addr: &PeerAddr) -> bool {
        self.members.contains(addr)
    }

    /// Reload the manifest this node held before a restart (e.g. from disk). It is
    /// verified again; it is not delivered and not pushed (peers that lack it pull it).
    pub fn restore(&mut self, manifest: &[u8], now_ms: u64) -> Result<Verified, NodeError> {
        let v = self
            .verifier
            .verify(manifest, now_ms / 1000)
            .map_err(NodeError::Restore)?;
        let cur = make_current(v, manifest).map_err(NodeError::RestoreSize)?;
        self.current = Some(cur);
        self.budget_left = 0;
        Ok(v)
    }

    /// This node's address.
    pub fn addr(&self) -> PeerAddr {
        self.members.me
    }

    /// The manifest held, if any.
    pub fn head(&self) -> Option<Head> {
        self.current.as_ref().map(Current::head)
    }

    /// The verified facts and bytes of the manifest held, if any.
    pub fn held(&self) -> Option<Delivered> {
        self.current.as_ref().map(|c| Delivered {
            verified: c.verified,
            manifest: Arc::clone(&c.manifest),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Peers known (static and learned), excluding this node.
    pub fn peer_count(&self) -> usize {
        self.members.peer_count()
    }

    /// Is the node still making its start-up / return catch-up pulls?
    pub fn catching_up(&self) -> bool {
        self.catch_up_left > 0 || self.pending.is_some()
    }

    /// Push transmissions left for the held manifest.
    pub fn push_budget_left(&self) -> u32 {
        self.budget_left
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    /// Feed one input; returns the commands to execute, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Tick { now_ms } => self.on_tick(now_ms, &mut out),
            Input::Message { from, bytes } => self.on_message(from, &bytes, &mut out),
            Input::Publish { manifest } => self.on_publish(&manifest, &mut out),
        }
        out
    }

    fn drop(&mut self, source: Source, reason: DropReason, out: &mut Vec<Output>) {
        self.stats.drops[reason.slot()] += 1;
        out.push(Output::Drop { source, reason });
    }

    fn send(&mut self, to: PeerAddr, bytes: Arc<[u8]>, kind: SendKind, out: &mut Vec<Output>) {
        match kind {
            SendKind::Push => self.stats.sent_push += 1,
            SendKind::Manifest => self.stats.sent_manifest += 1,
            SendKind::Digest => self.stats.sent_digest += 1,
            SendKind::DigestReply => self.stats.sent_digest_reply += 1,
            SendKind::Challenge => self.stats.sent_challenge += 1,
        }
        out.push(Output::Send { to, bytes, kind });
    }

    fn digest_reply_msg(&self) -> Arc<[u8]> {
        // Digests have a fixed small size; encoding cannot fail.
        Message::DigestReply(self.head())
            .encode()
            .unwrap_or_default()
            .into()
    }

    /// The anti-entropy request to `to`, with the cookie `to` handed us (if any).
    fn probe_msg(&self, to: PeerAddr) -> Arc<[u8]> {
        Message::Probe {
            head: self.head(),
            cookie: self.cookies.get(&to).copied().unwrap_or([0; COOKIE_BYTES]),
        }
        .encode()
        .unwrap_or_default()
        .into()
    }

    fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if now_ms < self.now_ms {
            return;
        }
        let gap = now_ms - self.now_ms;
        self.now_ms = now_ms;
        let away = self
            .cfg
            .anti_entropy_interval_ms
            .is_some_and(|interval| gap > interval);
        if !self.started || away {
            // Start-up, or back after being away (suspended, powered off) for longer
            // than an anti-entropy interval: catch up now, one pull per round, until a
            // peer that holds something answers.
            self.started = true;
            self.next_round_ms = now_ms;
            self.next_ae_ms = now_ms;
            self.catch_up_left = self.cfg.catch_up_pulls;
        }
        if now_ms >= self.next_round_ms {
            self.next_round_ms = now_ms + self.cfg.round_interval_ms;
            self.replies_this_round = 0;
            self.push_round(out);
        }
        if let Some(p) = self.pending
            && now_ms >= p.deadline_ms
        {
            self.pending = None;
            if p.retries_left > 0 {
                self.start_pull(p.retries_left - 1, Some(p.peer), out);
            } else if self.cfg.catch_up_pulls > 0 {
                // No peer answered at all: this node is probably cut off. Keep pulling
                // (one digest per round) so it catches up as soon as the network heals.
                self.catch_up_left = self.cfg.catch_up_pulls;
            }
        }
        if let Some(interval) = self.cfg.anti_entropy_interval_ms {
            if now_ms >= self.next_ae_ms {
                // Jitter down by up to a quarter so nodes do not stay in lock-step.
                let jitter = self.rng.below(interval / 4 + 1);
                self.next_ae_ms = now_ms + interval - jitter;
                if self.pending.is_none() {
                    self.catch_up_left = self.catch_up_left.saturating_sub(1);
                    self.start_pull(self.cfg.pull_retries, None, out);
                }
            } else if self.catch_up_left > 0 && self.pending.is_none() {
                self.catch_up_left -= 1;
                self.start_pull(self.cfg.pull_retries, None, out);
            }
        }
    }

    fn push_round(&mut self, out: &mut Vec<Output>) {
        let Some(cur) = &self.current else { return };
        if self.budget_left == 0 {
            return;
        }
        let msg = Arc::clone(&cur.push_msg);
        let k = self.cfg.fanout.min(self.budget_left as usize);
        let mut targets = std::mem::take(&mut self.scratch);
        self.members.sample(&mut self.rng, k, &mut targets);
        for &to in &targets {
            self.send(to, Arc::clone(&msg), SendKind::Push, out);
        }
        // Spend the whole round's share even with fewer peers than `fanout`, so a
        // tiny cluster stops pushing too.
        self.budget_left -= k as u32;
        self.scratch = targets;
    }

    fn start_pull(&mut self, retries_left: u32, avoid: Option<PeerAddr>, out: &mut Vec<Output>) {
        let mut targets = std::mem::take(&mut self.scratch);
        self.members.sample(&mut self.rng, 2, &mut targets);
        let peer = match (targets.first().copied(), targets.get(1).copied()) {
            (Some(a), Some(b)) if Some(a) == avoid => Some(b),
            (first, _) => first,
        };
        self.scratch = targets;
        let Some(peer) = peer else { return };
        self.pending = Some(PendingPull {
            peer,
            deadline_ms: self.now_ms + self.cfg.pull_timeout_ms,
            retries_left,
            challenged: false,
        });
        let msg = self.probe_msg(peer);
        self.send(peer, msg, SendKind::Digest, out);
    }

    fn on_publish(&mut self, manifest: &[u8], out: &mut Vec<Output>) {
        match self.accept(Source::Local, manifest, out) {
            Accepted::Installed(v) => out.push(Output::Published(v)),
            // Publishing what is already held again (an orchestrator re-issuing its
            // command after a restart) re-arms the rumor.
            Accepted::Duplicate => {
                if let Some(cur) = &self.current {
                    let v = cur.verified;
                    self.budget_left = self.cfg.retransmit_budget(self.members.peer_count() + 1);
                    out.push(Output::Published(v));
                }
            }
            // Refusals were reported as drops.
            Accepted::Stale | Accepted::Refused => {}
        }
    }

    fn on_message(&mut self, from: PeerAddr, bytes: &[u8], out: &mut Vec<Output>) {
        self.stats.received += 1;
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.drop(Source::Peer(from), e.into(), out),
        };
        let len = bytes.len();
        match msg {
            Message::Push(m) => self.on_manifest(from, &m, true, len, out),
            Message::Manifest(m) => {
                if self.pending.is_some_and(|p| p.peer == from) {
                    self.pending = None;
                    let before = self.head();
                    self.on_manifest(from, &m, false, len, out);
                    if self.head() != before {
                        self.catch_up_left = 0;
                    }
                } else {
                    self.on_manifest(from, &m, false, len, out);
                }
            }
            Message::Digest(theirs) => self.on_digest(from, theirs, None, len, out),
            Message::Probe { head, cookie } => self.on_digest(from, head, Some(cookie), len, out),
            Message::Challenge(cookie) => self.on_challenge(from, cookie, out),
            Message::DigestReply(theirs) => {
                if self.pending.is_none_or(|p| p.peer != from) {
                    return self.drop(Source::Peer(from), DropReason::Unsolicited, out);
                }
                self.pending = None;
                if theirs.is_some() && !is_newer(self.head(), theirs) {
                    // A peer that holds something at least as new: we are in sync.
                    self.catch_up_left = 0;
                }
                if is_newer(self.head(), theirs)
                    && let Some(cur) = &self.current
                {
                    let msg = Arc::clone(&cur.manifest_msg);
                    self.send(from, msg, SendKind::Manifest, out);
                }
            }
        }
    }

    /// An anti-entropy request (`cookie` is `None` for a legacy digest) of `len` bytes.
    fn on_digest(
        &mut self,
        from: PeerAddr,
        theirs: Option<Head>,
        cookie: Option<Cookie>,
        len: usize,
        out: &mut Vec<Output>,
    ) {
        let proven = self.is_member(&from) || cookie.is_some_and(|c| self.cookie_valid(from, &c));
        if !proven {
            // Not a verified member: the source may be spoofed. Answer with at most as
            // many bytes as it sent: a challenge to a probe, nothing to a legacy digest.
            if cookie.is_some() && crate::wire::CHALLENGE_BYTES <= len {
                let msg: Arc<[u8]> = Message::Challenge(self.cookie_for(from))
                    .encode()
                    .unwrap_or_default()
                    .into();
                self.send(from, msg, SendKind::Challenge, out);
            } else {
                self.drop(Source::Peer(from), DropReason::Unproven, out);
            }
            return;
        }
        self.members.learn(from);
        if !self.take_reply_budget(from, out) {
            return;
        }
        if is_newer(self.head(), theirs)
            && let Some(cur) = &self.current
        {
            let msg = Arc::clone(&cur.manifest_msg);
            self.send(from, msg, SendKind::Manifest, out);
        } else {
            let msg = self.digest_reply_msg();
            self.send(from, msg, SendKind::DigestReply, out);
        }
    }

    /// A peer asks this node to prove its address: follow only a challenge to the pull
    /// in progress with that peer, once, by probing again with the cookie.
    fn on_challenge(&mut self, from: PeerAddr, cookie: Cookie, out: &mut Vec<Output>) {
        match self.pending {
            Some(p) if p.peer == from && !p.challenged => {
                self.pending = Some(PendingPull {
                    challenged: true,
                    deadline_ms: self.now_ms + self.cfg.pull_timeout_ms,
                    ..p
                });
                if self.cookies.len() >= self.cfg.max_learned_peers.saturating_add(1024)
                    && !self.cookies.contains_key(&from)
                {
                    self.cookies.clear();
                }
                self.cookies.insert(from, cookie);
                let msg = self.probe_msg(from);
                self.send(from, msg, SendKind::Digest, out);
            }
            _ => self.drop(Source::Peer(from), DropReason::Unsolicited, out),
        }
    }

    fn take_reply_budget(&mut self, from: PeerAddr, out: &mut Vec<Output>) -> bool {
        if self.replies_this_round >= self.cfg.max_replies_per_round {
            self.drop(Source::Peer(from), DropReason::RateLimited, out);
            return false;
        }
        self.replies_this_round += 1;
        true
    }

    fn on_manifest(
        &mut self,
        from: PeerAddr,
        manifest: &[u8],
        push: bool,
        len: usize,
        out: &mut Vec<Output>,
    ) {
        match self.accept(Source::Peer(from), manifest, out) {
            Accepted::Installed(_) | Accepted::Refused => {}
            Accepted::Duplicate => {
                if push {
                    self.budget_left = self.budget_left.saturating_sub(self.cfg.duplicate_cost);
                }
            }
            Accepted::Stale => {
                // The sender is behind (e.g. still pushing a release we already hold a
                // rollback for): bring it forward — a sender that is not a verified
                // member only if that is no more than it sent (it catches up by its own
                // probes otherwise).
                if let Some(cur) = &self.current {
                    let msg = Arc::clone(&cur.manifest_msg);
                    if (msg.len() <= len || self.is_member(&from))
                        && self.take_reply_budget(from, out)
                    {
                        self.send(from, msg, SendKind::Manifest, out);
                    }
                }
            }
        }
    }

    /// Verify and install `manifest` if newer.
    fn accept(&mut self, source: Source, manifest: &[u8], out: &mut Vec<Output>) -> Accepted {
        if let Some(cur) = &self.current
            && *cur.manifest == *manifest
        {
            // Identical bytes to what we verified already: a duplicate.
            self.stats.duplicates += 1;
            return Accepted::Duplicate;
        }
        let v = match self.verifier.verify(manifest, self.now_ms / 1000) {
            Ok(v) => v,
            Err(r) => {
                self.drop(source, DropReason::Unverified(r), out);
                return Accepted::Refused;
            }
        };
        if let Some(cur) = &self.current {
            let held = cur.verified;
            if v.sequence < held.sequence {
                self.drop(source, DropReason::Stale, out);
                return Accepted::Stale;
            }
            if v.sequence == held.sequence {
                if v.manifest_hash == held.manifest_hash {
                    self.stats.duplicates += 1;
                    return Accepted::Duplicate;
                }
                self.drop(source, DropReason::Equivocation, out);
                return Accepted::Refused;
            }
        }
        let cur = match make_current(v, manifest) {
            Ok(c) => c,
            Err(e) => {
                self.drop(source, e.into(), out);
                return Accepted::Refused;
            }
        };
        let manifest = Arc::clone(&cur.manifest);
        self.current = Some(cur);
        self.budget_left = self.cfg.retransmit_budget(self.members.peer_count() + 1);
        match source {
            Source::Peer(_) => {
                self.stats.delivered += 1;
                out.push(Output::Deliver(Delivered {
                    verified: v,
                    manifest,
                }));
            }
            Source::Local => {}
        }
        Accepted::Installed(v)
    }
}

/// Outcome of [`Node::accept`].
enum Accepted {
    Installed(Verified),
    Duplicate,
    Stale,
    Refused,
}

fn make_current(v: Verified, manifest: &[u8]) -> Result<Current, DecodeError> {
    let push_msg: Arc<[u8]> = Message::Push(manifest.to_vec()).encode()?.into();
    let manifest_msg: Arc<[u8]> = Message::Manifest(manifest.to_vec()).encode()?.into();
    Ok(Current {
        verified: v,
        manifest: manifest.into(),
        push_msg,
        manifest_msg,
    })
}

/// `true` when `mine` has a higher sequence than `theirs`.
fn is_newer(mine: Option<Head>, theirs: Option<Head>) -> bool {
    match (mine, theirs) {
        (Some(m), Some(t)) => m.sequence > t.sequence,
        (Some(_), None) => true,
        (None, Some(_)) | (None, None) => false,
    }
}

#[cfg(test)]
mod tests;
