//! Typed errors of the fleet registry. Messages read after "failed to …".

/// Errors from the registry (database, leases, queries).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The database URL names neither SQLite nor PostgreSQL.
    #[error(
        "unsupported database URL {url:?}: use sqlite://PATH (default) or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl {
        /// The URL, password removed.
        url: String,
    },
    /// Connecting failed.
    #[error("connect to the fleet database {url}: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Creating the directory of the SQLite file failed.
    #[error("create the directory {path} for the fleet database: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The lock file guarding creation and migration of a SQLite registry could not be
    /// taken (I/O error, or another process held it past the deadline).
    #[error("lock {path} (held while the fleet database is created and migrated): {source}")]
    Lock {
        /// The lock file.
        path: String,
        /// OS error (`TimedOut` when another process held the lock too long).
        #[source]
        source: std::io::Error,
    },
    /// Running the embedded migrations failed.
    #[error("migrate the fleet database {url}: {source}")]
    Migrate {
        /// The URL, password removed.
        url: String,
        /// Migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("query the fleet database ({what}): {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// No peer with this id.
    #[error("no peer with id {0:?} in the fleet registry (see `fleetgate fleet list`)")]
    UnknownPeer(String),
    /// A value read from the database does not make sense.
    #[error("the fleet database holds an invalid {what}: {value:?}")]
    Corrupt {
        /// Column or object.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// A number does not fit the database's signed 64-bit integers.
    #[error("{field} = {value} is too large to store (maximum {max})", max = i64::MAX)]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// The caller no longer holds the lease (another orchestrator took over, or it expired).
    #[error(
        "lease {name:?} fenced: this orchestrator holds epoch {epoch}, but the lease is {current}; stop advancing the pipeline"
    )]
    Fenced {
        /// Lease name.
        name: String,
        /// Epoch the caller holds.
        epoch: u64,
        /// What the lease is now ("held by X at epoch N", "expired at T", "absent").
        current: String,
    },
    /// A batch of heartbeats could not be stored (nothing of it was).
    #[error("storing a batch of heartbeats failed: {0}")]
    Batch(String),
    /// A different canary selection is already recorded for this run.
    #[error(
        "run {run_id:?} already has a different canary selection recorded (nodes {existing:?}); a resumed run must reuse it"
    )]
    SelectionConflict {
        /// Run id.
        run_id: String,
        /// Nodes recorded before.
        existing: Vec<String>,
    },
    /// An argument is invalid.
    #[error("invalid {what}: {value:?} ({expected})")]
    Invalid {
        /// What.
        what: &'static str,
        /// The value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

impl FleetError {
    pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> FleetError {
        move |source| FleetError::Db { what, source }
    }

    /// A transaction the database aborted to resolve a conflict with another one
    /// (PostgreSQL: deadlock detected `40P01`, serialization failure `40001`; SQLite:
    /// busy or locked): nothing of it was written, and running it again may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        let FleetError::Db {
            source: sqlx::Error::Database(db),
            ..
        } = self
        else {
            return false;
        };
        matches!(
            db.code().as_deref(),
            Some("40P01" | "40001" | "5" | "6" | "517" | "262")
        )
    }
}

/// Why an enrollment certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The signature check failed (unsigned, bad signature, unknown key, too large, malformed).
    #[error("verify the enrollment certificate: {0}")]
    Verify(#[from] fleetgate_trust::VerifyError),
    /// A field is missing or invalid.
    #[error("enrollment certificate field {field}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What is wrong, with the value.
        reason: String,
    },
    /// Signing failed.
    #[error("sign the enrollment certificate: {0}")]
    Sign(#[from] fleetgate_trust::SignError),
    /// Storing failed.
    #[error(transparent)]
    Registry(#[from] FleetError),
}

/// Why a heartbeat was refused. Each maps to an HTTP status in [`crate::http`].
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// Over the size limit.
    #[error("heartbeat is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Size received.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Not a valid heartbeat envelope or payload.
    #[error("heartbeat is malformed: {0}")]
    Malformed(String),
    /// No signature.
    #[error(
        "heartbeat from {node_id:?} is unsigned; every heartbeat must be signed with the node key"
    )]
    Unsigned {
        /// Claimed node id.
        node_id: String,
    },
    /// Unknown node.
    #[error("heartbeat from unknown node {0:?}: enroll it first (`fleetgate fleet enroll`)")]
    UnknownNode(String),
    /// The node was removed from the fleet.
    #[error("heartbeat from node {0:?}, which was removed from the fleet")]
    Removed(String),
    /// Signature does not verify with the enrolled key.
    #[error(
        "heartbeat from {node_id:?}: the signature does not verify with the node's enrolled key"
    )]
    BadSignature {
        /// Claimed node id.
        node_id: String,
    },
    /// Sequence number not above the last accepted one.
    #[error(
        "heartbeat from {node_id:?} replayed: (epoch {epoch}, seq {seq}) is not above the last accepted (epoch {last_epoch}, seq {last_seq}); a node re-syncs by signing its next heartbeat with epoch {last_epoch} + 1"
    )]
    Replayed {
        /// Node id.
        node_id: String,
        /// Received epoch.
        epoch: u64,
        /// Received seq.
        seq: u64,
        /// Last accepted epoch.
        last_epoch: u64,
        /// Last accepted seq.
        last_seq: u64,
    },
    /// The epoch jumps further above the last accepted one than
    /// [`crate::heartbeat::MAX_EPOCH_STEP`] (so that no single heartbeat can push the epoch
    /// to where the node could never go above it).
    #[error(
        "heartbeat from {node_id:?} refused: epoch {epoch} is more than {max_step} above the last accepted epoch {last_epoch}; sign it with epoch {last_epoch} + 1"
    )]
    EpochJump {
        /// Node id.
        node_id: String,
        /// Received epoch.
        epoch: u64,
        /// Last accepted epoch.
        last_epoch: u64,
        /// The largest step accepted.
        max_step: u64,
    },
    /// `sent_at` too far in the past.
    #[error(
        "heartbeat from {node_id:?} is too old: sent at {sent_at}, now {now}, maximum age {max_age}s"
    )]
    TooOld {
        /// Node id.
        node_id: String,
        /// Claimed send time.
        sent_at: u64,
        /// Server time.
        now: u64,
        /// Limit.
        max_age: u64,
    },
    /// `sent_at` in the future beyond the allowed skew.
    #[error(
        "heartbeat from {node_id:?} is from the future: sent at {sent_at}, now {now}, allowed skew {skew}s"
    )]
    FromFuture {
        /// Node id.
        node_id: String,
        /// Claimed send time.
        sent_at: u64,
        /// Server time.
        now: u64,
        /// Allowed skew.
        skew: u64,
    },
    /// Storing failed.
    #[error(transparent)]
    Registry(#[from] FleetError),
}
