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
//! # What it must never do
//! * Store, forward or deliver a manifest that did not pass the verifier (keyring,
//!   signature, expiry, anti-rollback floor) — there is no bypass.
//! * Panic or allocate without bound on peer input: every message is size-checked
//!   ([`wire::MAX_MESSAGE_BYTES`]) before parsing; malformed input is dropped and counted.
//! * Apply anything itself: it only delivers verified manifests to the application.
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
pub use runtime::{GossipHandle, RuntimeError, spawn};
pub use transport::{LinkModel, MemNetwork, MemTransport, Transport, TransportError, UdpTransport};
pub use trust_adapter::{TrustVerifier, reject_of};
pub use verify::{CachingVerifier, ManifestKind, Reject, Verified, Verifier};
pub use wire::{DecodeError, Head, MAX_MANIFEST_BYTES, MAX_MESSAGE_BYTES, Message};
