//! fleetgate-runtime: the part of the orchestrator that touches the world.
//!
//! Where it sits: it drives the pure state machine of `fleetgate-core`, persists through
//! `fleetgate-store`, and carries out the commands: clean checkouts of the release commit
//! (git2), the code hash (defined in `fleetgate-codehash`, re-exported as [`codehash`]),
//! gate commands (`sh -c` in the checkout), JUnit reports, benchmark snapshots, signing.
//! The CLI, the MCP server and embedders call [`Orchestrator`].
//!
//! Invariants:
//! - State is written (atomically) before an outside effect it orders, and a gate result
//!   is committed with a compare-and-swap on `(stage, epoch)` under the transaction lock:
//!   a rollback that landed while a gate ran always wins.
//! - Every gate fails closed: a missing command, report, key or fleet is a failure with a
//!   message naming what is missing; only an explicit `skip = "reason"` in the config
//!   passes a command gate without running it, and `status` shows it.
//!
//! Testing: `cargo nextest run -p fleetgate-runtime` (real git repositories in temp dirs,
//! real `sh` commands).

pub mod approval;
pub mod artifacts;
mod asynchronous;
pub mod bench_registry;
pub mod bench_store;
pub mod checkout;
pub mod codehash;
mod error;
pub mod exec;
pub mod external_sign;
pub mod fleet;
pub mod gates;
pub mod ha;
pub mod junit;
pub mod orchestrator;
pub mod outbox;
pub mod provenance;
pub mod provision;
pub mod sandbox;

pub use asynchronous::AsyncOrchestrator;
pub use error::{
    BoxError, BusyReason, CaFileProblem, ConfigProblem, FleetFailure, GitError, InvalidInput,
    LeaseHeld, ManifestMismatch, Refusal, ReportError, RuntimeError, TrustFailure, TrustStep,
};
pub use orchestrator::{
    AdvanceReport, Orchestrator, Progress, load_config, operator_in, pause_in, promote_in,
    resume_in, rollback_in,
};

/// Unix time in seconds (float), as the state file records it.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
