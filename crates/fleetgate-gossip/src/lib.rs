//! fleetgate-gossip: disseminates signed release and rollback manifests to every node of
//! the fleet by gossip (push rumor mongering plus pull anti-entropy).
//!
//! # Where it sits
//! The orchestrator hands a signed manifest to gossip at the DEPLOY stage (and a signed
//! rollback manifest when a run rolls back); the node agent embeds a gossip node and
//! applies what it delivers. This crate owns the protocol, its wire format, the
//! transports, the tokio runtime that drives a node, and the deterministic simulator.
//!
//! # Layout (engine / runtime split)
//! * [`node`]: the protocol as a pure state machine, `Node::handle(Input) -> Vec<Output>`.
//!   No I/O, no clock, randomness only from a seeded [`rng::Rng`].
//! * [`wire`]: the versioned, size-limited binary envelope.
//! * [`verify`]: the injected [`Verifier`]; [`TrustVerifier`] adapts `fleetgate-trust`.
//! * [`transport`]: the [`Transport`] trait, over UDP (tokio) and in memory.
//! * [`runtime`]: a tokio task driving a node over a transport.
//! * [`sim`]: a seeded, deterministic, synchronous simulator of whole clusters (loss,
//!   offline nodes, scripted operations) that produces the dissemination figures.
//!
//! # Protocol in one paragraph
//! A node that installs a manifest newer than what it held pushes it, each round, to
//! `fanout` (3) random peers, spending at most `retransmit_mult × ⌈log₁₀(n+1)⌉`
//! transmissions (memberlist's retransmit limit) and giving one up for every duplicate
//! push it receives (loss of interest: a duplicate means the rumor is widespread).
//! Every `anti_entropy_interval_ms` (10 s) — and every round, a few times, after a
//! start, a return from being away, or a pull that nobody answered — it sends its
//! digest (sequence, SHA-256) to a random peer, which answers with the manifest if it
//! holds a newer one, or with its own digest (then the asker sends its manifest if the
//! peer is behind). Higher sequence wins, so a rollback (issued with a higher sequence)
//! supersedes the release it undoes.
//!
//! # Architecture invariants
//! * Verify before store, forward or deliver; there is no bypass. Identical bytes to the
//!   held manifest are recognised by comparison and not re-verified.
//! * Every drop is counted by a closed [`DropReason`] and surfaced as
//!   [`Output::Drop`]; nothing that was dropped is ever forwarded.
//! * Answers to unauthenticated requests (digests, stale pushes) are rate-limited per
//!   round, and an anti-entropy answer nobody asked for is dropped.
//! * No amplification: a sender that is not a verified member (a configured peer, or one
//!   that proved its address with a cookie) never gets more bytes than it sent — a probe
//!   gets a 21-byte challenge, only a probe carrying the cookie back gets the manifest,
//!   and only proven peers are learned (see [`node`]). The runtime drops datagrams from
//!   one `ip:port` beyond `max_messages_per_source_per_round` before the node sees them.
//! * The state machine is deterministic given its seed and inputs; the simulator
//!   replays any run from its seed.
//!
//! # API boundary
//! Embedders use [`Node`] + [`runtime::spawn`] with a [`Transport`] and a
//! [`TrustVerifier`]; they publish with [`GossipHandle::publish`] and read the newest
//! verified manifest from [`GossipHandle::deliveries`]. Membership is the static peer
//! list given at construction plus peers learned from well-formed messages (capped);
//! learned addresses are unauthenticated and only ever used as gossip targets.
//!
//! # What it must never do
//! * Store, forward or deliver a manifest that did not pass the verifier (keyring,
//!   signature, expiry, anti-rollback floor).
//! * Panic or allocate without bound on peer input: every message is size-checked
//!   ([`wire::MAX_MESSAGE_BYTES`]) before parsing; malformed input is dropped and counted.
//! * Do I/O, read the clock or use ambient randomness in [`node`].
//! * Apply anything itself: it only delivers verified manifests to the application.
//!
//! # Figures (simulator, real Ed25519-signed manifests)
//! N = 1000, no loss, push only, 101 seeds: median 8 rounds to 99.9% (bound
//! ⌈log₄N⌉+4 = 9) and 8 to 100% (bound ⌈log₄N + lnN/3⌉+3 = 11); at most 9.89 push
//! messages per node (bound 4⌈log₁₀(N+1)⌉ = 16). 30% loss, 50 seeds: 100% within 8–17
//! rounds (bound: two anti-entropy intervals = 20). 20% of nodes powered off or
//! partitioned during the broadcast: all caught up 2–3 rounds after returning (bound:
//! one interval = 10). `examples/figures.rs` prints these for N = 1k, 10k, 100k.
//!
//! # How to test
//! `cargo nextest run -p fleetgate-gossip` runs unit tests, the shared transport suite
//! (in-memory and real UDP on 127.0.0.1) and the simulator figures in a fast form;
//! `cargo nextest run -p fleetgate-gossip --cargo-profile release --run-ignored all` runs
//! the full figures. A failing simulator test prints its seed; replay it with
//! `FLEETGATE_SIM_SEEDS=<seed>`. `cargo run --release -p fleetgate-gossip --example
//! figures` prints rounds and messages to full coverage for N = 1k, 10k, 100k.

pub mod fixtures;
pub mod node;
pub mod rng;
pub mod runtime;
pub mod sim;
pub mod transport;
mod trust_adapter;
pub mod verify;
pub mod wire;

pub use node::{
    ConfigError, Delivered, DropReason, GossipConfig, Input, Node, NodeError, Output, PeerAddr,
    PeerList, SendKind, Source, Stats,
};
pub use runtime::{GossipHandle, RuntimeError, StartError, spawn, spawn_udp};
pub use transport::{LinkModel, MemNetwork, MemTransport, Transport, TransportError, UdpTransport};
pub use trust_adapter::{TrustVerifier, reject_of};
pub use verify::{CachingVerifier, ManifestKind, Reject, Verified, Verifier};
pub use wire::{
    CHALLENGE_BYTES, COOKIE_BYTES, Cookie, DecodeError, Head, MAX_MANIFEST_BYTES,
    MAX_MESSAGE_BYTES, Message,
};
