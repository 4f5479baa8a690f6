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
mod asynchronous;
pub mod bench_registry;
pub mod bench_store;
pub mod checkout;
pub mod codehash;
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
pub use orchestrator::{
    AdvanceReport, Orchestrator, Progress, load_config, operator_in, pause_in, promote_in,
    resume_in, rollback_in,
};

use std::path::{Path, PathBuf};

/// A failure of the runtime (not a gate verdict: gates turn most of these into failed
/// verdicts with the message as detail).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// I/O on a path.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A git operation.
    #[error("{0}")]
    Git(String),
    /// The configuration.
    #[error("{0}")]
    Config(String),
    /// A report file.
    #[error("{0}")]
    Report(String),
    /// The state store.
    #[error(transparent)]
    Store(#[from] fleetgate_store::StoreError),
    /// The state machine refused the event.
    #[error(transparent)]
    Transition(#[from] fleetgate_core::TransitionError),
    /// A version string.
    #[error(transparent)]
    Version(#[from] fleetgate_core::VersionError),
    /// The fleet registry or a node.
    #[error("{0}")]
    Fleet(String),
    /// A checkpoint was refused because the run moved on (a rollback landed): the gate
    /// stops before its outside effect.
    #[error("the run moved on while the gate ran: {0}")]
    Superseded(String),
    /// Another orchestrator holds the pipeline lease on the shared registry: this one
    /// may not advance the fleet stages (nothing was changed).
    #[error("{0}")]
    Fenced(String),
    /// The same work is already being done by another call (a capture of the same
    /// version): nothing was run; retry when it has finished.
    #[error("{0}")]
    Busy(String),
    /// The command acts on a run in progress, and there is none (nothing was changed).
    #[error(
        "no run in progress (the pipeline is at `{stage}`); start one with `fleetgate start <version>`"
    )]
    NoActiveRun {
        /// Where the pipeline stands.
        stage: fleetgate_core::Stage,
    },
    /// The run's state does not allow the request now (nothing was changed): the message
    /// says what it waits for.
    #[error("{0}")]
    Refused(String),
    /// The caller's input (an argument, a submitted document) is invalid; the message
    /// names it and what is wrong (nothing was changed).
    #[error("{0}")]
    Invalid(String),
}

impl RuntimeError {
    /// Refused because another orchestrator holds the pipeline lease (or this one lost
    /// it): nothing was changed. Includes a shared-state write the registry refused.
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            RuntimeError::Fenced(_)
                | RuntimeError::Store(fleetgate_store::StoreError::Shared(
                    fleetgate_store::SharedError::Fenced(_)
                ))
        )
    }
}

impl From<fleetgate_codehash::CodeHashError> for RuntimeError {
    fn from(e: fleetgate_codehash::CodeHashError) -> Self {
        use fleetgate_codehash::CodeHashError as E;
        match e {
            E::Io {
                action,
                path,
                source,
            } => RuntimeError::Io {
                action,
                path,
                source,
            },
            E::Git(m) => RuntimeError::Git(m),
            E::Config(m) => RuntimeError::Config(m),
        }
    }
}

impl RuntimeError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn git(path: &Path, action: &str, e: git2::Error) -> RuntimeError {
        RuntimeError::Git(format!(
            "failed to {action} in {}: {}",
            path.display(),
            e.message()
        ))
    }
}

/// Unix time in seconds (float), as the state file records it.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
