//! [`RuntimeError`]: what can go wrong outside the gate verdicts, as typed variants.
//!
//! Each top-level variant is one *kind* of failure, which is what callers branch on (the
//! tools map it to an `error_kind` and an HTTP status); the inner enums say which failure
//! of that kind it was, with the data (paths, versions, run ids, stages) and the typed
//! source error, so an embedder can match on them without parsing messages. The
//! `Display` of every variant is the message a user sees: it names the input or setting
//! and what to do.

use fleetgate_core::Stage;
use std::path::PathBuf;

/// A boxed source error (downcast to the concrete type when needed).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    #[error(transparent)]
    Git(#[from] GitError),
    /// The code hash of a tree could not be computed.
    #[error(transparent)]
    CodeHash(#[from] fleetgate_codehash::CodeHashError),
    /// The configuration, or a key or trust file it names.
    #[error(transparent)]
    Config(#[from] ConfigProblem),
    /// A report file a gate reads (JUnit, benchmark snapshots, the benchmark registry).
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A document could not be encoded (an internal failure: nothing was written).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: BoxError,
    },
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
    #[error(transparent)]
    Fleet(#[from] FleetFailure),
    /// A checkpoint was refused because the run moved on (a rollback landed): the gate
    /// stops before its outside effect.
    #[error("the run moved on while the gate ran: {0}")]
    Superseded(#[source] fleetgate_core::TransitionError),
    /// Another orchestrator holds the pipeline lease on the shared registry: this one
    /// may not advance the fleet stages (nothing was changed).
    #[error(transparent)]
    Fenced(#[from] LeaseHeld),
    /// The same work is already being done by another call (a capture of the same
    /// version): nothing was run; retry when it has finished.
    #[error(transparent)]
    Busy(#[from] BusyReason),
    /// The command acts on a run in progress, and there is none (nothing was changed).
    #[error(
        "no run in progress (the pipeline is at `{stage}`); start one with `fleetgate start <version>`"
    )]
    NoActiveRun {
        /// Where the pipeline stands.
        stage: Stage,
    },
    /// The run's state does not allow the request now (nothing was changed): the reason
    /// says what it waits for.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The caller's input (an argument, a submitted document) is invalid; the variant
    /// names it and what is wrong (nothing was changed).
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
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

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> RuntimeError {
        RuntimeError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn git(
        path: &std::path::Path,
        action: &'static str,
        e: git2::Error,
    ) -> RuntimeError {
        RuntimeError::Git(GitError::Op {
            action,
            path: path.to_owned(),
            source: e,
        })
    }

    pub(crate) fn encode(what: &'static str, e: impl Into<BoxError>) -> RuntimeError {
        RuntimeError::Encode {
            what,
            source: e.into(),
        }
    }

    pub(crate) fn trust(step: TrustStep, e: impl Into<TrustFailure>) -> RuntimeError {
        RuntimeError::Config(ConfigProblem::Trust {
            step,
            source: Box::new(e.into()),
        })
    }
}

/// A git operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// An operation on a repository.
    #[error("failed to {action} in {}: {}", path.display(), source.message())]
    Op {
        /// What was being done.
        action: &'static str,
        /// The repository or checkout.
        path: PathBuf,
        /// git's error.
        source: git2::Error,
    },
    /// Cloning the release repository for a clean checkout.
    #[error("failed to clone {url} into {}: {}", into.display(), source.message())]
    Clone {
        /// The repository.
        url: String,
        /// The checkout directory.
        into: PathBuf,
        /// git's error.
        source: git2::Error,
    },
    /// A commit id that is not one.
    #[error("bad commit id {sha:?}: {}", source.message())]
    BadCommitId {
        /// As given.
        sha: String,
        /// git's error.
        source: git2::Error,
    },
    /// The commit is not in the repository.
    #[error("commit {sha} is not reachable from any ref of {url}: {}", source.message())]
    Unreachable {
        /// The commit.
        sha: String,
        /// The repository.
        url: String,
        /// git's error.
        source: git2::Error,
    },
    /// `start VERSION` without `--git-sha` and no tag of that name.
    #[error("no tag named {version} in {}; tag the release commit or pass --git-sha REV", repo.display())]
    NoTag {
        /// The version (and tag name).
        version: String,
        /// The repository.
        repo: PathBuf,
    },
}

/// The configuration, or a file or key it names, is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// The config file cannot be read.
    #[error(
        "failed to read config file {}: {source} (create one with `fleetgate init`, or pass --config PATH)",
        path.display()
    )]
    Read {
        /// The config file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The config file does not parse or validate.
    #[error("{source} (in {})", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with its key (boxed: keeps `RuntimeError` small).
        source: Box<fleetgate_core::config::ConfigError>,
    },
    /// A setting the operation needs is not set.
    #[error("`{key}` is not set: {why}")]
    Missing {
        /// The dotted config key.
        key: &'static str,
        /// What needs it, and how to set it.
        why: &'static str,
    },
    /// A key, keyring or signature step failed (signing key, trust file, co-signatures).
    #[error("{step}: {source}")]
    Trust {
        /// Which step.
        step: TrustStep,
        /// The trust crate's error (boxed: keeps `RuntimeError` small).
        source: Box<TrustFailure>,
    },
    /// `[approval] keys` holds a key that does not parse.
    #[error("approval.keys: {key:?}: {source}")]
    ApprovalKey {
        /// The key as configured.
        key: String,
        /// Why it does not parse.
        source: fleetgate_trust::KeyError,
    },
    /// `[signing] mode = "external"` and a step needs a manifest signed elsewhere.
    #[error(
        "[signing] mode = \"external\": this host holds no signing key; sign a manifest for {version} elsewhere (`fleetgate manifest sign --repo . --version {version} --git-sha {sha} …`) and pass it with --manifest FILE"
    )]
    ExternalSigning {
        /// The version to sign.
        version: String,
        /// Its commit.
        sha: String,
    },
    /// No randomness from the OS for the canary seed.
    #[error("no randomness for the canary seed: {0}")]
    NoRandomness(#[source] getrandom::Error),
    /// Gate isolation is required (`FLEETGATE_REQUIRE_ISOLATION=1`) but not available.
    #[error("gate isolation is required (${env}=1) but degraded: {}", missing.join("; "))]
    IsolationRequired {
        /// The variable that requires it.
        env: &'static str,
        /// What is missing.
        missing: Vec<String>,
    },
    /// The gate isolation helper binary is gone.
    #[error("gate isolation: the helper binary went missing")]
    IsolationHelperMissing,
    /// A benchmark command with an empty argv.
    #[error("a benchmark command must name a program (argv is empty)")]
    EmptyCommand,
    /// `[tls] ca_file` is unusable.
    #[error("`tls.ca_file` {}: {problem} (make a fleet CA with `fleetgate fleet ca init`)", path.display())]
    TlsCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: CaFileProblem,
    },
}

/// What is wrong with `[tls] ca_file`.
#[derive(Debug, thiserror::Error)]
pub enum CaFileProblem {
    /// It cannot be read.
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    /// Too large for a PEM bundle.
    #[error("{0}: not a PEM file")]
    TooLarge(fleetgate_trust::fsutil::Oversize),
    /// Not PEM.
    #[error("not a PEM certificate bundle: {0}")]
    NotPem(#[source] reqwest::Error),
    /// PEM without certificates.
    #[error("holds no PEM certificate")]
    Empty,
}

/// A signing or verification step (see [`ConfigProblem::Trust`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustStep {
    /// Loading the signing key for a release manifest.
    SigningKey,
    /// Signing the release manifest.
    SignManifest,
    /// Reading the co-signatures beside a manifest.
    ReadCosignatures(PathBuf),
    /// Bundling a manifest with its co-signatures.
    BundleCosigned,
    /// Loading the signing key for a rollback order.
    RollbackKey,
    /// Signing a rollback order.
    SignRollback,
    /// Checking a rollback order against the trust file.
    VerifyRollback,
    /// Loading the trust file.
    TrustFile(PathBuf),
    /// Checking a provisioning manifest against the trust file.
    VerifyProvision,
    /// Building the approvers' keyring.
    ApprovalKeyring,
}

impl std::fmt::Display for TrustStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustStep::SigningKey => f.write_str(
                "no signing key (set `signing.key_file`, or pass a manifest signed elsewhere with --manifest FILE)",
            ),
            TrustStep::SignManifest => f.write_str("failed to sign the manifest"),
            TrustStep::ReadCosignatures(p) => {
                write!(f, "cannot read the co-signatures {}", p.display())
            }
            TrustStep::BundleCosigned => f.write_str("failed to bundle the co-signed manifest"),
            TrustStep::RollbackKey => f.write_str("no signing key for the rollback order"),
            TrustStep::SignRollback => f.write_str("failed to sign the rollback order"),
            TrustStep::VerifyRollback => {
                f.write_str("the rollback order does not verify against the trust file")
            }
            TrustStep::TrustFile(p) => write!(f, "cannot use trust file {}", p.display()),
            TrustStep::VerifyProvision => {
                f.write_str("the provisioning manifest does not verify against the trust file")
            }
            TrustStep::ApprovalKeyring => f.write_str("approval.keys"),
        }
    }
}

/// The trust crate's error behind a [`TrustStep`].
#[derive(Debug, thiserror::Error)]
pub enum TrustFailure {
    /// A key.
    #[error(transparent)]
    Key(#[from] fleetgate_trust::KeyError),
    /// A keyring (trust file).
    #[error(transparent)]
    Keyring(#[from] fleetgate_trust::KeyringError),
    /// Signing.
    #[error(transparent)]
    Sign(#[from] fleetgate_trust::SignError),
    /// Verification.
    #[error(transparent)]
    Verify(#[from] fleetgate_trust::VerifyError),
    /// Reading a size-limited file.
    #[error(transparent)]
    Fs(#[from] fleetgate_trust::fsutil::FsError),
}

/// A report file a gate reads is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Over its size limit.
    #[error("{what} {} is {size}, over the {limit}-byte limit", path.display())]
    TooLarge {
        /// Which report.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size.
        size: fleetgate_trust::fsutil::Oversize,
        /// The limit.
        limit: u64,
    },
    /// Not in its format.
    #[error("{what} {} is not valid {format}: {source}", path.display())]
    Malformed {
        /// Which report.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The expected format.
        format: &'static str,
        /// The parser's error.
        source: BoxError,
    },
    /// Written by a newer fleetgate.
    #[error("{what} {} has schema_version {found}; this fleetgate reads {supported}", path.display())]
    SchemaVersion {
        /// Which report.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The file's version.
        found: u64,
        /// The version read.
        supported: u64,
    },
}

/// The fleet registry, a node, or the fleet machinery failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetFailure {
    /// An operation on the registry, the gossip node or the HTTP client.
    #[error("{action}: {source}")]
    Op {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        source: BoxError,
    },
    /// `--node ID` names no peer.
    #[error(
        "--node {node}: no such peer in the fleet registry (`fleetgate fleet list` shows them)"
    )]
    UnknownNode {
        /// As given.
        node: String,
    },
    /// `--node ID` names a peer that may not be sent a release.
    #[error(
        "--node {node}: not an active, verified peer ({status:?}, key verified: {verified}); enroll it first"
    )]
    NodeNotReady {
        /// The peer.
        node: String,
        /// Its status.
        status: fleetgate_fleet::PeerStatus,
        /// Whether its key was verified at enrollment.
        verified: bool,
    },
    /// Provisioning found no node without code.
    #[error(
        "no node to provision: the registry has {peers} peer(s) and none is an active, verified peer without code{} (enroll nodes with `fleetgate fleet enroll`, or name one with --node)",
        if skipped.is_empty() { String::new() } else {
            format!("; left alone: {}", skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; "))
        }
    )]
    NothingToProvision {
        /// Peers in the registry.
        peers: usize,
        /// Peers left alone, with why.
        skipped: std::collections::BTreeMap<String, String>,
    },
    /// The run reached a fleet stage without a signed manifest.
    #[error("the run has no signed manifest (SIGN did not pass)")]
    NoSignedManifest,
    /// The manifest's canary seed is not hex.
    #[error("manifest canary_seed is not hex: {0}")]
    BadCanarySeed(#[source] hex::FromHexError),
    /// The canary judge refused its configuration or an event.
    #[error("canary judge: {0}")]
    Judge(#[source] fleetgate_canary::JudgeError),
    /// A broken invariant of the fleet machines (a bug: report it).
    #[error("internal: {0}")]
    Internal(&'static str),
}

/// Another orchestrator holds the pipeline lease (see [`RuntimeError::Fenced`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "another orchestrator holds the pipeline lease on {registry} ({lease}); only the lease holder may advance the pipeline"
)]
pub struct LeaseHeld {
    /// The registry (credentials redacted).
    pub registry: String,
    /// The holder, if it could be read.
    pub holder: Option<String>,
    /// The lease as `status` describes it (holder, epoch, time left).
    pub lease: String,
}

/// The same work is already running (see [`RuntimeError::Busy`]).
#[derive(Debug, thiserror::Error)]
pub enum BusyReason {
    /// A capture of this version runs.
    #[error(
        "locked: a benchmark capture of {version} is already running; nothing was run — retry when it has finished (its snapshot then shows in get_benchmark_history)"
    )]
    CaptureRunning {
        /// The version.
        version: String,
    },
    /// The capture's directory is claimed.
    #[error("locked: the capture directory {id} is in use; retry")]
    CaptureDirInUse {
        /// The directory's name.
        id: String,
    },
}

/// Why the run's state does not allow the request now (see [`RuntimeError::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A signed manifest was submitted with no run in progress.
    #[error("no run is in progress: nothing waits for a signed manifest")]
    NothingToSign,
    /// A signed manifest was submitted while the run is not in SIGN.
    #[error(
        "run {run_id} ({version}) is in `{stage}`, not waiting in `signing`: the manifest was not accepted"
    )]
    NotSigning {
        /// The run.
        run_id: String,
        /// Its version.
        version: String,
        /// Where it stands.
        stage: Stage,
    },
    /// SIGN has not written the signing request yet.
    #[error(
        "run {run_id} has no signing request ({} does not exist): SIGN writes it when `[signing] mode = \"external\"`; run `fleetgate advance` first",
        path.display()
    )]
    NoSigningRequest {
        /// The run.
        run_id: String,
        /// Where the request would be.
        path: PathBuf,
    },
    /// The signing request on disk is another run's.
    #[error(
        "the signing request at {} is for run {}, not the run in progress ({run_id}); run `fleetgate advance` to write this run's request",
        path.display(), request_run.as_deref().unwrap_or("?")
    )]
    StaleSigningRequest {
        /// The request file.
        path: PathBuf,
        /// The run it is for.
        request_run: Option<String>,
        /// The run in progress.
        run_id: String,
    },
    /// An approval for a stage that does not wait for approvals.
    #[error(
        "the approval is for stage {stage:?}, which does not wait for approvals (approval.before = {before:?})"
    )]
    ApprovalStage {
        /// The approval's stage.
        stage: String,
        /// `[approval] before`.
        before: Vec<String>,
    },
    /// An approval that does not count (untrusted key, another run or stage, expired).
    #[error("approval refused: {reason}")]
    Approval {
        /// Why.
        reason: String,
    },
    /// `promote-channel` of a version no other channel completed last.
    #[error(
        "{version} is not the release completed last on a channel other than `{to}` (completed: {}); promote what a channel runs now",
        if completed.is_empty() { "none".to_owned() } else { completed.join(", ") }
    )]
    NotOnAChannel {
        /// The version asked for.
        version: String,
        /// The channel it was to go to.
        to: String,
        /// What each channel completed last (`v1.2.0 on `beta``).
        completed: Vec<String>,
    },
}

/// The caller's input is invalid (see [`RuntimeError::Invalid`]).
#[derive(Debug, thiserror::Error)]
pub enum InvalidInput {
    /// A channel name.
    #[error(transparent)]
    Channel(fleetgate_fleet::FleetError),
    /// A submitted manifest that is not JSON.
    #[error("the submitted manifest does not parse: {0}")]
    ManifestJson(#[source] serde_json::Error),
    /// A submitted manifest that is not the signing request.
    #[error(transparent)]
    NotTheRequest(crate::external_sign::ExternalSignError),
    /// A submitted manifest that does not verify.
    #[error("the submitted manifest does not verify against {}: {source}", trust_file.display())]
    ManifestUnverified {
        /// The trust file.
        trust_file: PathBuf,
        /// Why.
        source: fleetgate_trust::VerifyError,
    },
    /// `provision --manifest FILE` that does not verify.
    #[error("--manifest {}: does not verify against the trust file: {source}", path.display())]
    ProvisionUnverified {
        /// The file.
        path: PathBuf,
        /// Why.
        source: fleetgate_trust::VerifyError,
    },
    /// `provision --manifest FILE` that is not this release's.
    #[error("--manifest {}: {why}", path.display())]
    ProvisionMismatch {
        /// The file.
        path: PathBuf,
        /// How it differs.
        why: ManifestMismatch,
    },
    /// A benchmark tier that is not one.
    #[error("unknown benchmark tier {0:?}: use \"fast\", \"heavy\" or \"all\"")]
    BenchTier(String),
    /// `register_benchmark`'s `run_command` does not split into words.
    #[error("register_benchmark: `run_command` has an unterminated quote or a trailing backslash")]
    RunCommandUnterminated,
    /// `register_benchmark`'s `run_command` is empty.
    #[error(
        "register_benchmark: `run_command` is empty: give the program to run and its arguments (it runs in the release checkout; `repo_url` is never cloned)"
    )]
    RunCommandEmpty,
    /// A `register_benchmark` field out of its bounds.
    #[error("register_benchmark: `{field}` {why}")]
    BenchmarkField {
        /// The field (`command[2]` for an element).
        field: String,
        /// Its bounds.
        why: String,
    },
    /// A `register_benchmark` path outside the checkout.
    #[error(
        "register_benchmark: `{field}` {path:?} must be a relative path inside the release checkout (no `..`, not absolute)"
    )]
    BenchmarkPath {
        /// The field.
        field: &'static str,
        /// The path (truncated).
        path: String,
    },
    /// The benchmark registry is full.
    #[error("register_benchmark: the registry already holds {limit} benchmarks, the limit")]
    TooManyBenchmarks {
        /// The limit.
        limit: usize,
    },
    /// An approval while no stage waits for approvals.
    #[error("no stage waits for approvals: set `[approval] before = [\"deploy\"]` (and keys)")]
    NoApprovalGate,
    /// `--stage` that does not wait for approvals.
    #[error(
        "--stage {stage:?}: not a stage that waits for approvals (approval.before = {before:?})"
    )]
    NotAnApprovalStage {
        /// As given.
        stage: String,
        /// `[approval] before`.
        before: Vec<String>,
    },
    /// Several stages wait for approvals and none was named.
    #[error("which stage? pass --stage, one of {before:?}")]
    WhichApprovalStage {
        /// `[approval] before`.
        before: Vec<String>,
    },
    /// An approval request that is not a JSON object.
    #[error("the approval request is not a JSON object")]
    ApprovalNotObject,
    /// A JSON object that is not an approval request.
    #[error("not an approval request (`type` is not \"fleetgate-approval\")")]
    NotAnApprovalRequest,
    /// An approval request that carries signatures already.
    #[error("the approval request is already signed")]
    ApprovalAlreadySigned,
    /// Signing an approval failed.
    #[error("cannot sign the approval: {0}")]
    ApprovalSign(#[source] fleetgate_trust::SignError),
    /// A submitted approval that is not JSON.
    #[error("the approval is not JSON: {0}")]
    ApprovalJson(#[source] serde_json::Error),
}

/// How a manifest differs from the release it was passed for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestMismatch {
    /// Not a release manifest (a rollback order, an agent update).
    #[error("it is not a release manifest")]
    NotARelease,
    /// Another version.
    #[error("it is for {found}, not {expected}")]
    Version {
        /// The manifest's.
        found: String,
        /// The release's.
        expected: String,
    },
    /// Another code hash.
    #[error("its code hash {found} is not the commit's {expected} ({sha})")]
    CodeHash {
        /// The manifest's.
        found: String,
        /// The commit's.
        expected: String,
        /// The commit.
        sha: String,
    },
}
