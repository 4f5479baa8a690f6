//! # fleetgate-fleet — the fleet registry
//!
//! **Where it sits.** Under the orchestrator runtime and the CLI (`fleetgate fleet
//! enroll|list|remove|show`). It stores the fleet in a database through sqlx and serves
//! the heartbeat endpoint the node agents call. Decisions (who is canary, is the canary
//! healthy) are not made here but in the pure `fleetgate-canary` crate; this crate feeds
//! it (eligible peers, samples) and stores what it decided (selection, deployment status).
//!
//! **What it owns.**
//! * [`Registry::connect`]: SQLite by default (`sqlite://PATH`: a file, created if
//!   missing, WAL), PostgreSQL when the URL says `postgres://`. Migrations are embedded
//!   (`migrations/sqlite`, `migrations/postgres`: the SQL differs) and run at connect.
//!   Tables: `peers`, `heartbeats` (time series), `leases`, `canary_selections`,
//!   `deployments`, `channels`, `pipeline_state`, `pipeline_files`.
//! * Enrollment ([`enroll`]): a certificate `{type, node_id, public_key, region, address,
//!   issued_at}` signed by the trust keys with `fleetgate-trust`'s signed-document
//!   primitive; a peer that presents a valid one is `master_key_verified`.
//! * Heartbeats ([`heartbeat`]): Ed25519-signed by the node key, size-limited, replay
//!   protected (strictly increasing `(epoch, seq)` — a higher signed epoch resets the seq
//!   window, so a node re-syncs after an inflated seq — and a bounded `sent_at` age),
//!   stored as a time series; the endpoint checks their signatures in batches across
//!   requests ([`sigbatch`]) and stores them in batches ([`ingest`]: group commit, a
//!   bounded queue, 429 when it is full).
//! * Leases with fencing epochs ([`lease`]): one orchestrator at a time advances the
//!   pipeline; writes from a deposed one are refused in the same statement. Lease times
//!   are the database's clock.
//! * The run's shared state ([`shared`], `[state] store = "postgres"`): the state
//!   document and the files later stages need, written under the lease with
//!   compare-and-swap on the revision, so a standby orchestrator can finish a run.
//! * Canary queries ([`canary`]): eligible peers, judge samples, the persisted selection,
//!   per-node deployment status.
//! * The HTTP routes ([`http::router`]) for the orchestrator's server to mount.
//! * Re-exported from `fleetgate-net` (its own crate, so the node agent gets them without
//!   sqlx): the per-source rate limit every HTTP listener of fleetgate puts in front
//!   ([`limit`]: 429 with `Retry-After`), and HTTPS for those listeners ([`tls`]: rustls
//!   from PEM files, handshakes off the accept loop).
//!
//! **What it must never do.** Trust a peer's word without a signature; accept a heartbeat
//! from an unknown, removed or unverifiable node; panic on input from a peer or the
//! database; make canary or pipeline decisions; print a database password (URLs are
//! redacted in errors).
//!
//! **How to test.** `cargo nextest run -p fleetgate-fleet`. Every registry test runs
//! against a fresh SQLite file and, when `FLEETGATE_TEST_PG_URL` is set (CI:
//! `postgres://postgres@127.0.0.1:5432/test`), against PostgreSQL too, each test in its
//! own schema (dropped afterwards). Without the variable the tests say
//! "PostgreSQL skipped" on stderr.

/// Runs `$body` with `$pool` bound to the concrete pool (compiled once per backend).
macro_rules! with_pool {
    ($reg:expr, |$pool:ident| $body:expr) => {
        match &$reg.pool {
            $crate::registry::Pool::Sqlite($pool) => $body,
            $crate::registry::Pool::Postgres($pool) => $body,
        }
    };
}

pub mod canary;
pub mod channel;
pub mod enroll;
pub mod error;
pub mod feed;
pub mod heartbeat;
pub mod http;
pub mod ingest;
mod keycache;
pub mod lease;
pub mod metrics;
pub mod registry;
pub mod shared;
pub mod sigbatch;

/// The HTTP edge, defined in `fleetgate-net` (the node agent uses it without the registry)
/// and re-exported here for the orchestrator's listeners.
#[doc(inline)]
pub use fleetgate_net::{limit, tls};

pub use canary::{DeployStatus, DeploymentRecord};
pub use channel::{Channel, DEFAULT_CHANNEL, validate_channel};
pub use enroll::{CERT_TYPE, CertFields, issue_cert, validate_node_id, verify_cert};
pub use error::{EnrollError, FleetError, HeartbeatError};
pub use feed::{FeedEntry, FeedWrite, MAX_FEED_MANIFEST};
pub use heartbeat::{
    DEFAULT_RETENTION_SECS, Heartbeat, HeartbeatPolicy, HeartbeatRecord, SignedHeartbeat,
    VerifiedHeartbeat, parse_heartbeat,
};
pub use lease::{Fence, Lease};
pub use registry::{Backend, Peer, PeerStatus, Registry, redact_url, unix_now};
pub use shared::{COMPRESS_ABOVE, MAX_SHARED_DOC, SharedDoc, SharedFile, SharedWriteError};
