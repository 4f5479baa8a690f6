//! `fleetgate.toml`: the one configuration file, with every scalar key overridable by an
//! environment variable. Parsing and validation are pure: the caller passes the file text
//! and the environment.
//!
//! Env names are `FLEETGATE_` + the key path in upper case joined by `_`
//! (`[canary] pct` → `FLEETGATE_CANARY_PCT`, `[stages.test] min_pass_rate` →
//! `FLEETGATE_STAGES_TEST_MIN_PASS_RATE`). Aliases: `FLEETGATE_CANARY_DURATION_SECONDS`,
//! HART's `HEVOLVE_CANARY_PCT` and `HEVOLVE_CANARY_DURATION_SECONDS`.
//!
//! HART's location variables fill a key only when fleetgate has no setting of its own (the
//! key is absent from the file and its `FLEETGATE_` variable is unset):
//! `HEVOLVE_DB_PATH` (absolute, not `:memory:`) → `state_dir = <dir of it>/agent_data`
//! (where HART keeps `upgrade_state.json`), `HEVOLVE_CODE_ROOT` → `repo`. The other HART
//! variables are listed by [`other_env`]; [`hart_env_warnings`] reports the ones fleetgate
//! reads but never obeys (`HEVOLVE_DEV_MODE` never skips a gate).

use crate::bench::Direction;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rejected configuration, naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or type error.
    #[error("failed to parse the config: {0}")]
    Parse(String),
    /// An environment override that does not parse.
    #[error("environment variable {var}={value:?} (for config key `{key}`) is not a valid {kind}")]
    Env {
        /// Variable name.
        var: String,
        /// Its value.
        value: String,
        /// The key it overrides.
        key: String,
        /// Expected kind.
        kind: &'static str,
    },
    /// A value outside its allowed range.
    #[error("invalid config value for `{key}`: {value} ({expected})")]
    Invalid {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// Two keys that say different things about the same setting.
    #[error("conflicting config values: `{key}` = {value} and `{other}` = {other_value} ({hint})")]
    Conflict {
        /// The key to remove or change.
        key: String,
        /// Its value as given.
        value: String,
        /// The key it contradicts.
        other: String,
        /// That key's value as given.
        other_value: String,
        /// What to do.
        hint: &'static str,
    },
}

/// The root of `fleetgate.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Git repository of the software being released (relative to the config file).
    #[serde(default = "default_repo")]
    pub repo: String,
    /// State directory (relative to the config file).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Gate settings.
    #[serde(default)]
    pub stages: Stages,
    /// Code hash include/exclude globs.
    #[serde(default)]
    pub code_hash: CodeHashConfig,
    /// Signing.
    #[serde(default)]
    pub signing: SigningConfig,
    /// Fleet registry.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Canary.
    #[serde(default)]
    pub canary: CanaryConfig,
    /// Deploy.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// The autonomous loop (`run`, `watch`).
    #[serde(default)]
    pub run: RunConfig,
    /// Registered benchmarks (`register_benchmark`): which of them may run.
    #[serde(default)]
    pub benchmarks: BenchmarksConfig,
    /// HTTPS: the CA the orchestrator trusts for `https://` node addresses, and the
    /// certificate its servers present.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Signed approvals a stage waits for before its gate runs.
    #[serde(default)]
    pub approval: ApprovalConfig,
    /// Where the run's state lives: the local state file (default) or the shared
    /// PostgreSQL registry (high availability).
    #[serde(default)]
    pub state: StateConfig,
    /// Where the nodes fetch a release's built artifacts.
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
}

/// `[artifacts]`: where the nodes fetch the built files a release ships
/// (`[stages.build] artifacts`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// A static HTTP(S) server or object store that serves each artifact as
    /// `{base_url}/{sha256}` (fill it with `fleetgate artifacts export DIR`); the nodes'
    /// `artifacts_url` names the same place. Before CANARY sends a release that ships
    /// artifacts to any node, every one must be there at its signed size, else the gate
    /// holds (pending, naming what is missing; nothing sent). Unset (the default): the
    /// orchestrator's own store, which `fleet serve` serves at `/artifacts/{sha256}`.
    pub base_url: Option<String>,
}

impl ArtifactsConfig {
    /// `base_url` without a trailing `/`, if set.
    #[must_use]
    pub fn base(&self) -> Option<&str> {
        self.base_url.as_deref().map(|u| u.trim_end_matches('/'))
    }
}

/// `[state]`: where the run's state lives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `file` (default): the state file in `state_dir` is the run's state. `postgres`:
    /// the run's state (the same JSON document), the completed-release record, signed
    /// manifests and benchmark baselines live in the `[fleet] database_url` PostgreSQL
    /// registry, written only by the holder of the pipeline lease; `state_dir` keeps a
    /// local mirror. A standby orchestrator on another machine takes the run over when
    /// the holder stops renewing the lease.
    pub store: StateStore,
}

/// `[state] store`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StateStore {
    /// The local state file.
    #[default]
    File,
    /// The shared PostgreSQL registry.
    Postgres,
}

/// `[approval]`: stages that wait for `required` distinct signed approvals (`fleetgate
/// approve`) from `keys` before their gate runs (nothing is built, signed or sent
/// before). Unset (`before = []`, the default): no stage waits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Gates that wait: any of `build`, `test`, `audit`, `benchmark`, `sign`, `canary`,
    /// `deploy`.
    pub before: Vec<String>,
    /// Distinct approvers needed (default 1 when `before` is set).
    pub required: Option<i64>,
    /// The approvers' Ed25519 public keys (64 hex each; `fleetgate keygen` writes them
    /// as `KEY.pub`). An approval verifies against exactly these.
    pub keys: Vec<String>,
}

impl ApprovalConfig {
    /// The gate names `before` may hold, with their stage.
    pub const GATES: [(&'static str, crate::Stage); 7] = [
        ("build", crate::Stage::Building),
        ("test", crate::Stage::Testing),
        ("audit", crate::Stage::Auditing),
        ("benchmark", crate::Stage::Benchmarking),
        ("sign", crate::Stage::Signing),
        ("canary", crate::Stage::Canary),
        ("deploy", crate::Stage::Deploying),
    ];

    /// The gate name of `stage` (`deploy` for `deploying`), if it has a gate.
    #[must_use]
    pub fn gate_of(stage: crate::Stage) -> Option<&'static str> {
        Self::GATES
            .iter()
            .find(|(_, s)| *s == stage)
            .map(|(n, _)| *n)
    }

    /// Whether `stage` waits for approvals.
    #[must_use]
    pub fn applies_to(&self, stage: crate::Stage) -> bool {
        Self::gate_of(stage).is_some_and(|g| self.before.iter().any(|b| b == g))
    }

    /// Approvals needed.
    #[must_use]
    pub fn required(&self) -> usize {
        usize::try_from(self.required.unwrap_or(1)).unwrap_or(1)
    }
}

fn default_repo() -> String {
    ".".into()
}
fn default_state_dir() -> String {
    "state".into()
}

/// `[stages.*]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// `[stages.build]`.
    #[serde(default)]
    pub build: BuildStage,
    /// `[stages.test]`.
    #[serde(default)]
    pub test: TestStage,
    /// `[stages.audit]`.
    #[serde(default)]
    pub audit: AuditStage,
    /// `[stages.benchmark]`.
    #[serde(default)]
    pub benchmark: BenchmarkStage,
}

/// `[stages.build]`: the build command and how the code hash is computed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildStage {
    /// Shell command (`sh -c`), run in a clean checkout of the version's commit.
    pub command: Option<String>,
    /// Kill the command after this many seconds (default 3600).
    pub timeout_secs: Option<i64>,
    /// Explicitly skip the command, with a reason shown in `status`.
    pub skip: Option<String>,
    /// How the code hash and file manifest hash are computed (default `git`).
    #[serde(default)]
    pub hash_scheme: HashScheme,
    /// Built files to ship (globs relative to the checkout, e.g. `target/release/app`,
    /// `dist/*.tar.gz`): after the command succeeds, BUILD stores every match
    /// content-addressed under `<state_dir>/artifacts/` and the signed manifest lists
    /// each (name, sha256, size); nodes download them instead of checking out the commit.
    /// A pattern that matches no file fails BUILD. Empty: a source release.
    #[serde(default)]
    pub artifacts: Vec<String>,
}

/// `[stages.build] hash_scheme`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HashScheme {
    /// Every file git tracks at the release commit (blob bytes), with the
    /// `[code_hash]` include/exclude globs.
    #[default]
    Git,
    /// HART's `compute_code_hash`: the `*.py` files of a clean checkout of the release
    /// commit, as bytes on disk (no include/exclude).
    Hart,
}

/// `[stages.test]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestStage {
    /// Test command.
    pub command: Option<String>,
    /// JUnit XML report the command writes (relative to the checkout).
    pub junit_report: Option<String>,
    /// Minimum pass rate in [0, 1] (default 0.95).
    pub min_pass_rate: Option<f64>,
    /// Timeout (default 3600 s).
    pub timeout_secs: Option<i64>,
    /// Explicit skip reason.
    pub skip: Option<String>,
}

/// `[stages.audit]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditStage {
    /// Audit command (e.g. `cargo deny check`).
    pub command: Option<String>,
    /// Timeout (default 3600 s).
    pub timeout_secs: Option<i64>,
    /// Pinned guardrail files: path (relative to the checkout) → SHA-256 hex.
    #[serde(default)]
    pub guardrails: BTreeMap<String, String>,
    /// Explicit skip reason.
    pub skip: Option<String>,
}

/// `[stages.benchmark]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkStage {
    /// Benchmark command.
    pub command: Option<String>,
    /// Results file in github-action-benchmark format (relative to the checkout).
    pub results: Option<String>,
    /// Default relative tolerance (default 0.05).
    pub tolerance: Option<f64>,
    /// Per-benchmark tolerances.
    #[serde(default)]
    pub tolerances: BTreeMap<String, f64>,
    /// Per-unit directions.
    #[serde(default)]
    pub directions: BTreeMap<String, Direction>,
    /// Timeout (default 3600 s), per repeat.
    pub timeout_secs: Option<i64>,
    /// How many times the command runs (default 3, at most 20): each benchmark's value is
    /// the median of the repeats, and a change beyond the tolerance fails only when every
    /// new repeat is worse than every baseline repeat (the noise band). 1 = single-shot.
    pub repeats: Option<i64>,
    /// Explicit skip reason.
    pub skip: Option<String>,
}

/// `[code_hash]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeHashConfig {
    /// Only tracked files matching one of these globs (empty = all).
    #[serde(default)]
    pub include: Vec<String>,
    /// Tracked files matching one of these globs are left out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `[signing]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Secret key file (hex seed). Else `FLEETGATE_SIGNING_KEY_HEX`, `MASTER_PRIVATE_KEY_HEX`,
    /// `HEVOLVE_MASTER_PRIVATE_KEY_HEX`, `HEVOLVE_MASTER_PRIVATE_KEY` (the first set one).
    pub key_file: Option<String>,
    /// Trust file (keyring) the signed manifest must verify against.
    pub trust_file: Option<String>,
    /// Manifest lifetime in seconds (default 30 days).
    pub expires_in_secs: Option<i64>,
    /// Who signs: `local` (default: SIGN signs with `key_file` / the key variables) or
    /// `external` (SIGN writes a signing request and waits, pending, for a manifest signed
    /// by a trusted key elsewhere — `fleetgate manifest sign-request` on the signer's
    /// machine, `fleetgate manifest submit` here; this host then holds no signing secret).
    pub mode: Option<SigningMode>,
}

/// `[signing] mode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    /// SIGN signs with the configured key.
    #[default]
    Local,
    /// SIGN waits for a manifest signed elsewhere.
    External,
}

/// `[fleet]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `sqlite://…` (default, under the state dir) or `postgres://…`.
    pub database_url: Option<String>,
    /// Lifetime of the pipeline lease (seconds, default 120): another orchestrator on the
    /// same database can take over only after the holder stopped renewing it this long.
    pub lease_ttl_secs: Option<i64>,
    /// How long the fleet endpoint keeps raw heartbeats (seconds, default 86400): older
    /// ones are deleted once a minute, except a silent node's last ones, so storage per
    /// node stays bounded. Must cover `[canary] pre_window_secs` plus the longest canary
    /// window (the judge reads both).
    pub heartbeat_retention_secs: Option<i64>,
}

/// `[tls]` (paths relative to the config file).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA certificate(s) trusted for `https://` node addresses when the orchestrator
    /// sends releases and rollback orders (the fleet CA from `fleetgate fleet ca init`);
    /// unset: the platform's trust store.
    pub ca_file: Option<String>,
    /// PEM certificate chain `fleetgate serve` and `fleetgate fleet serve` present when no
    /// `--tls-cert` is given.
    pub cert_file: Option<String>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<String>,
}

/// `[canary]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Fraction of eligible peers, in (0, 1].
    pub pct: f64,
    /// At least this many canary nodes.
    pub min_nodes: i64,
    /// Window length in seconds.
    pub window_secs: i64,
    /// Sampling interval in seconds.
    pub sample_interval_secs: i64,
    /// Tolerance: the largest relative exception-rate increase that must still pass
    /// (default 0.1 = +10%). The canary's false-rollback bound (1%) holds at and below it.
    pub max_exception_rate_increase: f64,
    /// The absolute exception rate (exceptions per request, in (0, 1]) a release may show
    /// where there is no baseline to compare with: `fleetgate fleet provision`, the first
    /// release onto empty nodes (default 0.05).
    pub max_exception_rate: f64,
    /// The relative increase that must be caught (95% power). Default
    /// `max(2 × max_exception_rate_increase, 0.5)`; must exceed the tolerance. Between
    /// the two lies the test's indifference zone. Read it through
    /// [`CanaryConfig::detect_increase`].
    pub detect_exception_rate_increase: Option<f64>,
    /// Seconds of pre-update heartbeats the judge compares each canary node with (its
    /// own rate before the update; default 1800, 0 = compare with the baseline only).
    pub pre_window_secs: i64,
    /// A node silent this long is failed.
    pub heartbeat_timeout_secs: i64,
    /// A canary without any exception passes the exception test only after serving this
    /// many requests (default 1000); the sequential test may pass earlier on evidence.
    pub min_requests: i64,
    /// When the window ends with too little data and nothing failed (thin traffic):
    /// `"extend"` (default: keep judging until `max_window_secs`, then hold), `"hold"`
    /// (inconclusive: neither promoted nor rolled back, an operator decides) or
    /// `"rollback"`. Read it through [`CanaryConfig::inconclusive_policy`].
    pub on_inconclusive: Option<String>,
    /// Deprecated alias of `on_inconclusive`: `"fail"` means `"rollback"`, `"extend"`
    /// means `"extend"`. Setting both to different policies is an error.
    pub on_insufficient_data: Option<String>,
    /// With `on_inconclusive = "extend"`: judge until this many seconds after the window
    /// start, then hold. At least `window_secs`; default `2 × window_secs`. Read it
    /// through [`CanaryConfig::max_window`].
    pub max_window_secs: Option<i64>,
    /// Fewer eligible peers than the canary needs is pending for this many seconds after
    /// CANARY starts (a fleet still forming), then a failure with the counts (default 300).
    pub selection_timeout_secs: i64,
    /// Seconds to wait for one node's apply endpoint to answer.
    pub apply_timeout_secs: i64,
}

/// What an inconclusive canary window leads to (`[canary] on_inconclusive`, resolved
/// with its deprecated alias `on_insufficient_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InconclusivePolicy {
    /// Keep judging until `max_window_secs`, then hold.
    Extend,
    /// Hold at once: inconclusive, an operator promotes or rolls back.
    Hold,
    /// Roll back ("insufficient data").
    Rollback,
}

impl InconclusivePolicy {
    /// Parses `on_inconclusive` (`extend`, `hold`, `rollback`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "extend" => Some(Self::Extend),
            "hold" => Some(Self::Hold),
            "rollback" => Some(Self::Rollback),
            _ => None,
        }
    }

    /// Parses the deprecated `on_insufficient_data` (`fail`, `extend`).
    pub fn parse_legacy(value: &str) -> Option<Self> {
        match value {
            "fail" => Some(Self::Rollback),
            "extend" => Some(Self::Extend),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extend => "extend",
            Self::Hold => "hold",
            Self::Rollback => "rollback",
        }
    }
}

impl CanaryConfig {
    /// The policy in force: `on_inconclusive`, else the deprecated `on_insufficient_data`,
    /// else `extend`. On a validated config the two never disagree; an unreadable value
    /// (only possible on an unvalidated config) counts as `rollback` (fail closed).
    pub fn inconclusive_policy(&self) -> InconclusivePolicy {
        match (&self.on_inconclusive, &self.on_insufficient_data) {
            (Some(v), _) => InconclusivePolicy::parse(v).unwrap_or(InconclusivePolicy::Rollback),
            (None, Some(v)) => {
                InconclusivePolicy::parse_legacy(v).unwrap_or(InconclusivePolicy::Rollback)
            }
            (None, None) => InconclusivePolicy::Extend,
        }
    }

    /// `detect_exception_rate_increase`, defaulting to
    /// `max(2 × max_exception_rate_increase, 0.5)`.
    pub fn detect_increase(&self) -> f64 {
        self.detect_exception_rate_increase
            .unwrap_or((2.0 * self.max_exception_rate_increase).max(0.5))
    }

    /// `max_window_secs`, defaulting to `2 × window_secs`, never below `window_secs`.
    pub fn max_window(&self) -> i64 {
        self.max_window_secs
            .unwrap_or_else(|| self.window_secs.saturating_mul(2))
            .max(self.window_secs)
    }
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            pct: 0.10,
            min_nodes: 1,
            window_secs: 1800,
            sample_interval_secs: 30,
            max_exception_rate_increase: 0.1,
            max_exception_rate: 0.05,
            detect_exception_rate_increase: None,
            pre_window_secs: 1800,
            heartbeat_timeout_secs: 60,
            min_requests: 1000,
            on_inconclusive: None,
            on_insufficient_data: None,
            max_window_secs: None,
            selection_timeout_secs: 300,
            apply_timeout_secs: 300,
        }
    }
}

/// `[deploy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// Fraction of reachable verified peers that must report the new version.
    pub success_pct: f64,
    /// Fraction of nodes failing their health check that triggers a rollback.
    pub max_failure_pct: f64,
    /// Give up (and roll back) after this many seconds.
    pub deadline_secs: i64,
    /// Gossip addresses (`host:port`, UDP) of fleet nodes: DEPLOY hands the manifest to
    /// gossip through them. Empty: DEPLOY pushes it to every node's apply endpoint.
    pub gossip_seeds: Vec<String>,
    /// How long the orchestrator's gossip node keeps pushing and answering pulls after
    /// it publishes (milliseconds).
    pub gossip_linger_ms: i64,
    /// Phased rollout: cumulative fractions of the fleet, increasing, the last `1.0`
    /// (e.g. `[0.25, 0.5, 1.0]`). Each step below `1.0` pushes the release to the next
    /// hash-ranked slice and judges it like the canary, against the nodes not yet
    /// updated, for `step_window_secs`, before the next; the last step is the whole
    /// fleet (gossip or push, judged on convergence). Empty: the canary, then the whole
    /// fleet at once.
    pub steps: Vec<f64>,
    /// Each step's judging window (seconds); default `canary.window_secs`. Extended on
    /// thin evidence like the canary's (up to `step_window_secs + canary.max_window_secs
    /// − canary.window_secs`).
    pub step_window_secs: Option<i64>,
}

impl DeployConfig {
    /// The steps judged before the whole fleet (the fractions below `1.0`).
    #[must_use]
    pub fn judged_steps(&self) -> Vec<f64> {
        self.steps.iter().copied().filter(|f| *f < 1.0).collect()
    }
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            success_pct: 1.0,
            max_failure_pct: 0.05,
            deadline_secs: 3600,
            gossip_seeds: Vec::new(),
            gossip_linger_ms: 5000,
            steps: Vec::new(),
            step_window_secs: None,
        }
    }
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Seconds between checks of a pending gate.
    pub poll_interval_secs: i64,
    /// `watch`: seconds between checks for a new version.
    pub watch_interval_secs: i64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            poll_interval_secs: 5,
            watch_interval_secs: 60,
        }
    }
}

/// `[benchmarks]`: the operator's allowlist for benchmarks registered by agents or
/// `fleetgate bench register`. A registered benchmark runs (in `bench capture` and the
/// BENCHMARK gate) only while its name is listed here with the SHA-256 of its definition,
/// so changing a definition withdraws its approval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BenchmarksConfig {
    /// Registered benchmark name → the `definition_hash` shown by `fleetgate bench list`.
    pub allowed: BTreeMap<String, String>,
    /// Kill a registered benchmark after this many seconds (default 600).
    pub timeout_secs: Option<i64>,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Float,
    Int,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Float => "number",
            Kind::Int => "integer",
        }
    }
}

/// Every scalar key that an environment variable may override.
const KEYS: &[(&str, Kind)] = &[
    ("repo", Kind::Str),
    ("state_dir", Kind::Str),
    ("stages.build.command", Kind::Str),
    ("stages.build.timeout_secs", Kind::Int),
    ("stages.build.skip", Kind::Str),
    ("stages.build.hash_scheme", Kind::Str),
    ("stages.test.command", Kind::Str),
    ("stages.test.junit_report", Kind::Str),
    ("stages.test.min_pass_rate", Kind::Float),
    ("stages.test.timeout_secs", Kind::Int),
    ("stages.test.skip", Kind::Str),
    ("stages.audit.command", Kind::Str),
    ("stages.audit.timeout_secs", Kind::Int),
    ("stages.audit.skip", Kind::Str),
    ("stages.benchmark.command", Kind::Str),
    ("stages.benchmark.results", Kind::Str),
    ("stages.benchmark.tolerance", Kind::Float),
    ("stages.benchmark.timeout_secs", Kind::Int),
    ("stages.benchmark.repeats", Kind::Int),
    ("tls.ca_file", Kind::Str),
    ("tls.cert_file", Kind::Str),
    ("tls.key_file", Kind::Str),
    ("stages.benchmark.skip", Kind::Str),
    ("signing.key_file", Kind::Str),
    ("signing.trust_file", Kind::Str),
    ("signing.expires_in_secs", Kind::Int),
    ("signing.mode", Kind::Str),
    ("fleet.database_url", Kind::Str),
    ("fleet.lease_ttl_secs", Kind::Int),
    ("fleet.heartbeat_retention_secs", Kind::Int),
    ("state.store", Kind::Str),
    ("canary.pct", Kind::Float),
    ("canary.min_nodes", Kind::Int),
    ("canary.window_secs", Kind::Int),
    ("canary.sample_interval_secs", Kind::Int),
    ("canary.max_exception_rate_increase", Kind::Float),
    ("canary.max_exception_rate", Kind::Float),
    ("canary.detect_exception_rate_increase", Kind::Float),
    ("canary.pre_window_secs", Kind::Int),
    ("canary.heartbeat_timeout_secs", Kind::Int),
    ("canary.min_requests", Kind::Int),
    ("canary.on_inconclusive", Kind::Str),
    ("canary.on_insufficient_data", Kind::Str),
    ("canary.max_window_secs", Kind::Int),
    ("canary.selection_timeout_secs", Kind::Int),
    ("canary.apply_timeout_secs", Kind::Int),
    ("deploy.success_pct", Kind::Float),
    ("deploy.max_failure_pct", Kind::Float),
    ("deploy.deadline_secs", Kind::Int),
    ("deploy.gossip_linger_ms", Kind::Int),
    ("deploy.step_window_secs", Kind::Int),
    ("run.poll_interval_secs", Kind::Int),
    ("run.watch_interval_secs", Kind::Int),
    ("benchmarks.timeout_secs", Kind::Int),
];

/// Extra names accepted for a key (checked after the canonical name loses).
const ALIASES: &[(&str, &str)] = &[
    ("FLEETGATE_CANARY_DURATION_SECONDS", "canary.window_secs"),
    ("HEVOLVE_CANARY_DURATION_SECONDS", "canary.window_secs"),
    ("HEVOLVE_CANARY_PCT", "canary.pct"),
];

/// HART's location variables: used for a key only when fleetgate has no setting of its
/// own for it (see the module doc).
const HART_FALLBACKS: &[(&str, &str)] = &[
    ("HEVOLVE_DB_PATH", "state_dir"),
    ("HEVOLVE_CODE_ROOT", "repo"),
];

/// Environment variables read outside the config file, with what they do (for
/// `fleetgate config --env`). fleetgate's own names are read first.
pub fn other_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "FLEETGATE_SIGNING_KEY_HEX",
            "signing key (Ed25519 seed, 64 hex) when [signing] key_file is unset; read first",
        ),
        (
            "MASTER_PRIVATE_KEY_HEX",
            "signing key, HART's CI name; read when FLEETGATE_SIGNING_KEY_HEX is unset",
        ),
        (
            "HEVOLVE_MASTER_PRIVATE_KEY_HEX",
            "signing key, HART's name; read after the two above",
        ),
        (
            "HEVOLVE_MASTER_PRIVATE_KEY",
            "signing key, HART's runtime name; read last",
        ),
        (
            "FLEETGATE_API_TOKEN",
            "bearer token of `fleetgate serve` for mutating calls",
        ),
        (
            "FLEETGATE_CONFIG",
            "the config file when --config is not given",
        ),
        (
            "FLEETGATE_PROGRESS_SECS",
            "how often `run`/`advance` say a gate is still running (seconds, default 15)",
        ),
        (
            "HEVOLVE_DEV_MODE",
            "HART's dev mode: recognised and reported as a warning; it never skips or weakens a gate",
        ),
        (
            "HEVOLVE_CODE_HASH_PRECOMPUTED",
            "HART's baked-in code hash: recognised and reported; fleetgate always computes the code hash itself",
        ),
    ]
}

/// Warnings about HART variables that are set but never obeyed, for `status` and `start`
/// (and the matching tools). Empty when none is set.
pub fn hart_env_warnings(env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut w = Vec::new();
    if let Some(v) = set("HEVOLVE_DEV_MODE") {
        w.push(format!(
            "HEVOLVE_DEV_MODE={:?} is set: fleetgate ignores it; every gate runs as configured (skip gates only with `[stages.<gate>] skip = \"<reason>\"`)",
            v.chars().take(40).collect::<String>()
        ));
    }
    if set("HEVOLVE_CODE_HASH_PRECOMPUTED").is_some() {
        w.push("HEVOLVE_CODE_HASH_PRECOMPUTED is set: fleetgate ignores it; BUILD always computes the code hash from the release commit".to_owned());
    }
    w
}

/// `state_dir` from `HEVOLVE_DB_PATH`: `<dir of the database>/agent_data`, as HART resolves
/// it. `None` for a relative path or `:memory:` (HART then uses `./agent_data`; fleetgate
/// keeps its own default).
fn state_dir_from_db_path(db_path: &str) -> Option<String> {
    let p = std::path::Path::new(db_path.trim());
    if db_path.trim() == ":memory:" || !p.is_absolute() {
        return None;
    }
    let dir = p.parent()?;
    Some(dir.join("agent_data").to_string_lossy().into_owned())
}

/// Every key path of the config file, sections included (`canary`, `canary.pct`,
/// `stages.audit.guardrails`, …), read from the config's JSON schema. Entries of free-form
/// tables (a guardrail's name) are not listed.
pub fn key_paths() -> Vec<String> {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let mut out = Vec::new();
    walk_schema(root, root, "", &mut out, 0);
    out.sort();
    out.dedup();
    out
}

fn walk_schema(
    root: &serde_json::Value,
    node: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    if let Some(def) = node
        .get("$ref")
        .and_then(serde_json::Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| root.get("$defs").and_then(|d| d.get(name)))
    {
        walk_schema(root, def, prefix, out, depth + 1);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for sub in node
            .get(combinator)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            walk_schema(root, sub, prefix, out, depth + 1);
        }
    }
    if let Some(props) = node
        .get("properties")
        .and_then(serde_json::Value::as_object)
    {
        for (name, sub) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.push(path.clone());
            walk_schema(root, sub, &path, out, depth + 1);
        }
    }
}

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    format!("FLEETGATE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Every overridable key with its environment variable (for `--help` and docs).
pub fn env_overrides() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = KEYS
        .iter()
        .map(|(k, _)| ((*k).to_owned(), env_name(k)))
        .collect();
    for (var, key) in ALIASES {
        v.push(((*key).to_owned(), (*var).to_owned()));
    }
    for (var, key) in HART_FALLBACKS {
        v.push((
            format!(
                "{key} (only when neither the file nor {} sets it)",
                env_name(key)
            ),
            (*var).to_owned(),
        ));
    }
    v
}

/// A TOML error's message without the excerpt of the (re-serialised) text.
fn first_message(e: &toml::de::Error) -> String {
    e.message().to_owned()
}

impl Config {
    /// Parse the file text, apply overrides from `env` (a lookup function), validate.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (key, kind) in KEYS {
            let canonical = env_name(key);
            let found = env(&canonical).map(|v| (canonical.clone(), v)).or_else(|| {
                ALIASES
                    .iter()
                    .filter(|(_, k)| k == key)
                    .find_map(|(var, _)| env(var).map(|v| ((*var).to_owned(), v)))
            });
            if let Some((var, raw)) = found {
                let value = match kind {
                    Kind::Str => toml::Value::String(raw.clone()),
                    Kind::Float => {
                        raw.trim()
                            .parse::<f64>()
                            .map(toml::Value::Float)
                            .map_err(|_| ConfigError::Env {
                                var: var.clone(),
                                value: raw.clone(),
                                key: (*key).to_owned(),
                                kind: kind.name(),
                            })?
                    }
                    Kind::Int => raw
                        .trim()
                        .parse::<i64>()
                        .map(toml::Value::Integer)
                        .map_err(|_| ConfigError::Env {
                            var: var.clone(),
                            value: raw.clone(),
                            key: (*key).to_owned(),
                            kind: kind.name(),
                        })?,
                };
                set_path(&mut doc, key, value);
            }
        }
        for (var, key) in HART_FALLBACKS {
            if doc.contains_key(*key) {
                continue;
            }
            let Some(raw) = env(var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let value = match *key {
                "state_dir" => state_dir_from_db_path(&raw),
                _ => Some(raw.trim().to_owned()),
            };
            if let Some(value) = value {
                doc.insert((*key).to_owned(), toml::Value::String(value));
            }
        }
        let merged = toml::to_string(&doc).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let cfg: Config = toml::from_str(&merged).map_err(|merged_err| {
            // Report the error against the file the user wrote (its lines and columns),
            // not against the re-serialised overlay; only an error that the overrides
            // brought in is reported as theirs.
            match toml::from_str::<Config>(text) {
                Err(file_err) => ConfigError::Parse(file_err.to_string()),
                Ok(_) => ConfigError::Parse(format!(
                    "after applying the environment overrides (`fleetgate config --env` lists them): {}",
                    first_message(&merged_err)
                )),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults, as `fleetgate init` documents them.
    pub fn defaults() -> Config {
        Config {
            repo: default_repo(),
            state_dir: default_state_dir(),
            stages: Stages::default(),
            code_hash: CodeHashConfig::default(),
            signing: SigningConfig::default(),
            fleet: FleetConfig::default(),
            canary: CanaryConfig::default(),
            deploy: DeployConfig::default(),
            run: RunConfig::default(),
            benchmarks: BenchmarksConfig::default(),
            tls: TlsConfig::default(),
            approval: ApprovalConfig::default(),
            state: StateConfig::default(),
            artifacts: ArtifactsConfig::default(),
        }
    }

    /// TEST's minimum pass rate.
    pub fn min_pass_rate(&self) -> f64 {
        self.stages.test.min_pass_rate.unwrap_or(0.95)
    }

    /// BENCHMARK's default tolerance.
    pub fn bench_tolerance(&self) -> f64 {
        self.stages.benchmark.tolerance.unwrap_or(0.05)
    }

    /// `[stages.benchmark] repeats` (default 3).
    pub fn bench_repeats(&self) -> u32 {
        self.stages
            .benchmark
            .repeats
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(3)
    }

    /// Check every range; the first offending key is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn frac(key: &str, v: f64, zero_ok: bool) -> Result<(), ConfigError> {
            let ok = v.is_finite() && v <= 1.0 && if zero_ok { v >= 0.0 } else { v > 0.0 };
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key: key.into(),
                    value: v.to_string(),
                    expected: if zero_ok {
                        "a fraction in [0, 1]"
                    } else {
                        "a fraction in (0, 1]"
                    },
                })
            }
        }
        fn positive(key: &str, v: i64) -> Result<(), ConfigError> {
            if v > 0 {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key: key.into(),
                    value: v.to_string(),
                    expected: "a positive number of seconds",
                })
            }
        }
        fn nonneg_f(key: &str, v: f64) -> Result<(), ConfigError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key: key.into(),
                    value: v.to_string(),
                    expected: "a finite number ≥ 0",
                })
            }
        }
        fn nonempty(key: &str, v: &str) -> Result<(), ConfigError> {
            if v.trim().is_empty() {
                Err(ConfigError::Invalid {
                    key: key.into(),
                    value: format!("{v:?}"),
                    expected: "a non-empty string",
                })
            } else {
                Ok(())
            }
        }
        nonempty("repo", &self.repo)?;
        nonempty("state_dir", &self.state_dir)?;
        if let Some(r) = self.fleet.heartbeat_retention_secs {
            let needed = self
                .canary
                .pre_window_secs
                .saturating_add(self.canary.max_window());
            if r < needed {
                return Err(ConfigError::Invalid {
                    key: "fleet.heartbeat_retention_secs".into(),
                    value: r.to_string(),
                    expected: "at least `[canary] pre_window_secs` plus the longest canary window (`max_window_secs`): the judge reads both",
                });
            }
        }
        if let Some(url) = &self.artifacts.base_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            let host = url.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok
                || host.is_empty()
                || host.starts_with('/')
                || url.contains(['?', '#'])
                || url.chars().any(char::is_whitespace)
                || url.len() > 2048
            {
                return Err(ConfigError::Invalid {
                    key: "artifacts.base_url".into(),
                    value: format!("{url:?}"),
                    expected: "an http:// or https:// URL with a host and no query or fragment (artifacts are fetched as {base_url}/{sha256})",
                });
            }
        }
        if self.state.store == StateStore::Postgres {
            let url = self.fleet.database_url.as_deref().unwrap_or("");
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid {
                    key: "state.store".into(),
                    value: "\"postgres\"".into(),
                    expected: "`[fleet] database_url = \"postgres://…\"` beside it (the shared registry the state lives in)",
                });
            }
        }
        let s = &self.stages;
        for (k, t) in [
            ("stages.build.timeout_secs", s.build.timeout_secs),
            ("stages.test.timeout_secs", s.test.timeout_secs),
            ("stages.audit.timeout_secs", s.audit.timeout_secs),
            ("stages.benchmark.timeout_secs", s.benchmark.timeout_secs),
            ("signing.expires_in_secs", self.signing.expires_in_secs),
            ("fleet.lease_ttl_secs", self.fleet.lease_ttl_secs),
            (
                "fleet.heartbeat_retention_secs",
                self.fleet.heartbeat_retention_secs,
            ),
            ("benchmarks.timeout_secs", self.benchmarks.timeout_secs),
        ] {
            if let Some(t) = t {
                positive(k, t)?;
            }
        }
        if let Some(r) = s.benchmark.repeats
            && !(1..=20).contains(&r)
        {
            return Err(ConfigError::Invalid {
                key: "stages.benchmark.repeats".into(),
                value: r.to_string(),
                expected: "an integer from 1 to 20",
            });
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: if self.tls.cert_file.is_some() {
                    "tls.key_file".into()
                } else {
                    "tls.cert_file".into()
                },
                value: "(unset)".into(),
                expected: "tls.cert_file and tls.key_file set together",
            });
        }
        for (k, c) in [
            ("stages.build.command", &s.build.command),
            ("stages.test.command", &s.test.command),
            ("stages.audit.command", &s.audit.command),
            ("stages.benchmark.command", &s.benchmark.command),
            ("stages.test.junit_report", &s.test.junit_report),
            ("stages.benchmark.results", &s.benchmark.results),
        ] {
            if let Some(c) = c {
                nonempty(k, c)?;
            }
        }
        if s.build.artifacts.len() > 64 {
            return Err(ConfigError::Invalid {
                key: "stages.build.artifacts".into(),
                value: format!("{} patterns", s.build.artifacts.len()),
                expected: "at most 64 patterns",
            });
        }
        for a in &s.build.artifacts {
            if a.trim().is_empty()
                || a.starts_with('/')
                || a.split('/').any(|p| p == "..")
                || a.chars().any(char::is_control)
            {
                return Err(ConfigError::Invalid {
                    key: "stages.build.artifacts".into(),
                    value: format!("{a:?}"),
                    expected: "relative glob patterns inside the checkout (no leading `/`, no `..`), e.g. \"target/release/app\"",
                });
            }
        }
        if s.build.hash_scheme == HashScheme::Hart {
            for (k, globs) in [
                ("code_hash.include", &self.code_hash.include),
                ("code_hash.exclude", &self.code_hash.exclude),
            ] {
                if !globs.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: k.into(),
                        value: format!("{globs:?}"),
                        expected: "no globs with stages.build.hash_scheme = \"hart\" (HART's scheme \
                                   hashes every *.py file outside its fixed skip list)",
                    });
                }
            }
        }
        if let Some(r) = s.test.min_pass_rate {
            frac("stages.test.min_pass_rate", r, true)?;
        }
        if let Some(t) = s.benchmark.tolerance {
            nonneg_f("stages.benchmark.tolerance", t)?;
        }
        for (name, t) in &s.benchmark.tolerances {
            nonneg_f(&format!("stages.benchmark.tolerances.{name:?}"), *t)?;
        }
        for (path, sha) in &s.audit.guardrails {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid {
                    key: format!("stages.audit.guardrails.{path:?}"),
                    value: sha.clone(),
                    expected: "a SHA-256 as 64 hex characters",
                });
            }
        }
        for (name, sha) in &self.benchmarks.allowed {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid {
                    key: format!("benchmarks.allowed.{name:?}"),
                    value: sha.clone(),
                    expected: "the benchmark's definition_hash (64 hex characters, from `fleetgate bench list`)",
                });
            }
        }
        let c = &self.canary;
        frac("canary.pct", c.pct, false)?;
        if c.min_nodes < 1 {
            return Err(ConfigError::Invalid {
                key: "canary.min_nodes".into(),
                value: c.min_nodes.to_string(),
                expected: "an integer ≥ 1",
            });
        }
        positive("canary.window_secs", c.window_secs)?;
        positive("canary.sample_interval_secs", c.sample_interval_secs)?;
        positive("canary.heartbeat_timeout_secs", c.heartbeat_timeout_secs)?;
        positive("canary.apply_timeout_secs", c.apply_timeout_secs)?;
        if c.min_requests < 0 {
            return Err(ConfigError::Invalid {
                key: "canary.min_requests".into(),
                value: c.min_requests.to_string(),
                expected: "an integer ≥ 0",
            });
        }
        positive("canary.selection_timeout_secs", c.selection_timeout_secs)?;
        let policy = match &c.on_inconclusive {
            Some(v) => Some(
                InconclusivePolicy::parse(v).ok_or_else(|| ConfigError::Invalid {
                    key: "canary.on_inconclusive".into(),
                    value: format!("{v:?}"),
                    expected: "\"extend\", \"hold\" or \"rollback\"",
                })?,
            ),
            None => None,
        };
        if let Some(v) = &c.on_insufficient_data {
            let legacy = InconclusivePolicy::parse_legacy(v).ok_or_else(|| ConfigError::Invalid {
                key: "canary.on_insufficient_data".into(),
                value: format!("{v:?}"),
                expected: "\"fail\" or \"extend\" (deprecated: use canary.on_inconclusive = \"rollback\" | \"extend\" | \"hold\")",
            })?;
            if let (Some(p), Some(given)) = (policy, &c.on_inconclusive)
                && p != legacy
            {
                return Err(ConfigError::Conflict {
                    key: "canary.on_insufficient_data".into(),
                    value: format!("{v:?}"),
                    other: "canary.on_inconclusive".into(),
                    other_value: format!("{given:?}"),
                    hint: "on_insufficient_data is a deprecated alias (\"fail\" = \"rollback\", \"extend\" = \"extend\"); remove it and keep on_inconclusive",
                });
            }
        }
        if let Some(m) = c.max_window_secs
            && m < c.window_secs
        {
            return Err(ConfigError::Invalid {
                key: "canary.max_window_secs".into(),
                value: m.to_string(),
                expected: "at least canary.window_secs (the extension ends this many seconds after the window start)",
            });
        }
        nonneg_f(
            "canary.max_exception_rate_increase",
            c.max_exception_rate_increase,
        )?;
        if !(c.max_exception_rate > 0.0 && c.max_exception_rate <= 1.0) {
            return Err(ConfigError::Invalid {
                key: "canary.max_exception_rate".into(),
                value: c.max_exception_rate.to_string(),
                expected: "a fraction of requests in (0, 1] (e.g. 0.05 = 5%)",
            });
        }
        let detect = c.detect_increase();
        if !(detect.is_finite() && detect > c.max_exception_rate_increase) {
            return Err(ConfigError::Invalid {
                key: "canary.detect_exception_rate_increase".into(),
                value: detect.to_string(),
                expected: "a finite number above canary.max_exception_rate_increase (the increase that must be caught, above the one that must still pass)",
            });
        }
        if c.pre_window_secs < 0 {
            return Err(ConfigError::Invalid {
                key: "canary.pre_window_secs".into(),
                value: c.pre_window_secs.to_string(),
                expected: "a number of seconds ≥ 0 (0: no pre-update history)",
            });
        }
        if c.sample_interval_secs > c.window_secs {
            return Err(ConfigError::Invalid {
                key: "canary.sample_interval_secs".into(),
                value: c.sample_interval_secs.to_string(),
                expected: "at most canary.window_secs",
            });
        }
        frac("deploy.success_pct", self.deploy.success_pct, false)?;
        frac("deploy.max_failure_pct", self.deploy.max_failure_pct, true)?;
        positive("deploy.deadline_secs", self.deploy.deadline_secs)?;
        positive("deploy.gossip_linger_ms", self.deploy.gossip_linger_ms)?;
        let steps = &self.deploy.steps;
        let increasing = steps.windows(2).all(|w| w[0] < w[1]);
        let in_range = steps.iter().all(|f| f.is_finite() && *f > 0.0 && *f <= 1.0);
        let valid = increasing && in_range && steps.last() == Some(&1.0);
        if !steps.is_empty() && !valid {
            return Err(ConfigError::Invalid {
                key: "deploy.steps".into(),
                value: format!("{steps:?}"),
                expected: "increasing fractions of the fleet in (0, 1], the last 1.0 (e.g. [0.25, 0.5, 1.0])",
            });
        }
        if let Some(w) = self.deploy.step_window_secs {
            positive("deploy.step_window_secs", w)?;
            if c.sample_interval_secs > w {
                return Err(ConfigError::Invalid {
                    key: "deploy.step_window_secs".into(),
                    value: w.to_string(),
                    expected: "at least canary.sample_interval_secs",
                });
            }
        }
        for seed in &self.deploy.gossip_seeds {
            if seed.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "deploy.gossip_seeds".into(),
                    value: format!("{seed:?}"),
                    expected: "UDP socket addresses such as \"127.0.0.1:7400\"",
                });
            }
        }
        positive("run.poll_interval_secs", self.run.poll_interval_secs)?;
        positive("run.watch_interval_secs", self.run.watch_interval_secs)?;
        let a = &self.approval;
        for b in &a.before {
            if !ApprovalConfig::GATES.iter().any(|(n, _)| n == b) {
                return Err(ConfigError::Invalid {
                    key: "approval.before".into(),
                    value: format!("{b:?}"),
                    expected: "gate names: build, test, audit, benchmark, sign, canary, deploy",
                });
            }
        }
        if !a.before.is_empty() || a.required.is_some() || !a.keys.is_empty() {
            for k in &a.keys {
                let hex = k.trim();
                if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ConfigError::Invalid {
                        key: "approval.keys".into(),
                        value: format!("{:?}", k.chars().take(80).collect::<String>()),
                        expected: "Ed25519 public keys, 64 hex characters each (the KEY.pub of `fleetgate keygen`)",
                    });
                }
            }
            let required = a.required.unwrap_or(1);
            let distinct: std::collections::BTreeSet<String> = a
                .keys
                .iter()
                .map(|k| k.trim().to_ascii_lowercase())
                .collect();
            if required < 1 || usize::try_from(required).map_or(true, |r| r > distinct.len()) {
                return Err(ConfigError::Invalid {
                    key: "approval.required".into(),
                    value: required.to_string(),
                    expected: "between 1 and the number of distinct approval.keys (an approval no one can give would wait forever)",
                });
            }
        }
        Ok(())
    }
}

fn set_path(doc: &mut toml::Table, key: &str, value: toml::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    for part in &parts[..parts.len() - 1] {
        let entry = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else { return };
        table = t;
    }
    table.insert(parts[parts.len() - 1].to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_overridable_key_is_a_key_of_the_schema() {
        let paths = key_paths();
        assert!(
            paths.iter().any(|p| p == "stages.audit.guardrails"),
            "{paths:?}"
        );
        for (key, _) in KEYS {
            assert!(paths.iter().any(|p| p == key), "{key} not in {paths:?}");
        }
    }
    use std::collections::HashMap;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Config::parse(text, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.canary.pct, 0.10);
        assert_eq!(c.canary.window_secs, 1800);
        assert_eq!(c.canary.min_nodes, 1);
        assert_eq!(c.canary.max_exception_rate_increase, 0.1);
        assert_eq!(c.canary.detect_increase(), 0.5);
        assert_eq!(c.canary.pre_window_secs, 1800);
        assert_eq!(c.min_pass_rate(), 0.95);
        assert_eq!(c.bench_tolerance(), 0.05);
        assert_eq!(c.deploy.success_pct, 1.0);
        assert_eq!(c.state_dir, "state");
    }

    #[test]
    fn artifacts_base_url_is_an_http_url_without_query() {
        assert_eq!(parse("", &[]).unwrap().artifacts.base(), None);
        let c = parse(
            "[artifacts]\nbase_url = \"https://cdn.example.com/r/\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.artifacts.base(), Some("https://cdn.example.com/r"));
        for bad in [
            "ftp://x/a",
            "https://",
            "https:///path",
            "https://x/a?sig=1",
            "https://x/a#f",
            "https://x/a b",
        ] {
            let err = parse(&format!("[artifacts]\nbase_url = {bad:?}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("artifacts.base_url"), "{bad}: {err}");
        }
        assert!(parse("[artifacts]\nbase = \"https://x\"\n", &[]).is_err());
    }

    #[test]
    fn hash_scheme_defaults_to_git_and_hart_refuses_include_exclude() {
        assert_eq!(
            parse("", &[]).unwrap().stages.build.hash_scheme,
            HashScheme::Git
        );
        let c = parse("[stages.build]\nhash_scheme = \"hart\"\n", &[]).unwrap();
        assert_eq!(c.stages.build.hash_scheme, HashScheme::Hart);
        assert!(parse("[stages.build]\nhash_scheme = \"sha1\"\n", &[]).is_err());
        let err = parse(
            "[stages.build]\nhash_scheme = \"hart\"\n[code_hash]\nexclude = [\"docs/**\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("code_hash.exclude"), "{err}");
        assert!(
            parse("[code_hash]\nexclude = [\"docs/**\"]\n", &[]).is_ok(),
            "globs stay valid with git"
        );
    }

    #[test]
    fn env_overrides_every_kind_and_hart_aliases() {
        let c = parse(
            "[canary]\npct = 0.2\n[stages.test]\ncommand = \"x\"\n",
            &[
                ("HEVOLVE_CANARY_PCT", "0.3"),
                ("HEVOLVE_CANARY_DURATION_SECONDS", "60"),
                ("FLEETGATE_STAGES_TEST_MIN_PASS_RATE", "0.5"),
                ("FLEETGATE_STAGES_BUILD_COMMAND", "make"),
            ],
        )
        .unwrap();
        assert_eq!(c.canary.pct, 0.3);
        assert_eq!(c.canary.window_secs, 60);
        assert_eq!(c.min_pass_rate(), 0.5);
        assert_eq!(c.stages.build.command.as_deref(), Some("make"));
        assert_eq!(c.stages.test.command.as_deref(), Some("x"));
        // The canonical name wins over an alias.
        let c = parse(
            "",
            &[
                ("HEVOLVE_CANARY_PCT", "0.3"),
                ("FLEETGATE_CANARY_PCT", "0.4"),
            ],
        )
        .unwrap();
        assert_eq!(c.canary.pct, 0.4);
    }

    #[test]
    fn hart_location_variables_fill_only_absent_keys() {
        let c = parse(
            "",
            &[
                ("HEVOLVE_DB_PATH", "/var/lib/hart/hevolve.db"),
                ("HEVOLVE_CODE_ROOT", "/opt/hart"),
            ],
        )
        .unwrap();
        assert_eq!(c.state_dir, "/var/lib/hart/agent_data");
        assert_eq!(c.repo, "/opt/hart");
        // fleetgate's own setting wins: the file's key, or the FLEETGATE_ variable.
        let c = parse(
            "state_dir = \"st\"\n",
            &[("HEVOLVE_DB_PATH", "/var/lib/hart/hevolve.db")],
        )
        .unwrap();
        assert_eq!(c.state_dir, "st");
        let c = parse(
            "",
            &[
                ("HEVOLVE_DB_PATH", "/var/lib/hart/hevolve.db"),
                ("FLEETGATE_STATE_DIR", "mine"),
                ("HEVOLVE_CODE_ROOT", "/opt/hart"),
                ("FLEETGATE_REPO", "/src"),
            ],
        )
        .unwrap();
        assert_eq!(c.state_dir, "mine");
        assert_eq!(c.repo, "/src");
        // A relative path or an in-memory database keeps the default, as HART does.
        for db in ["hevolve.db", ":memory:"] {
            let c = parse("", &[("HEVOLVE_DB_PATH", db)]).unwrap();
            assert_eq!(c.state_dir, "state", "{db}");
        }
        let listed: Vec<String> = env_overrides().into_iter().map(|(_, v)| v).collect();
        assert!(listed.contains(&"HEVOLVE_DB_PATH".to_owned()));
        assert!(listed.contains(&"FLEETGATE_STATE_DIR".to_owned()));
    }

    #[test]
    fn hart_dev_mode_is_reported_never_obeyed() {
        let none = hart_env_warnings(|_| None);
        assert!(none.is_empty());
        let w = hart_env_warnings(|k| (k == "HEVOLVE_DEV_MODE").then(|| "true".to_owned()));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("every gate runs"), "{w:?}");
    }

    #[test]
    fn detect_threshold_must_exceed_the_tolerance() {
        let c = parse("[canary]\nmax_exception_rate_increase = 0.5\n", &[]).unwrap();
        assert_eq!(c.canary.detect_increase(), 1.0);
        let c = parse("[canary]\ndetect_exception_rate_increase = 0.3\n", &[]).unwrap();
        assert_eq!(c.canary.detect_increase(), 0.3);
        let err = parse(
            "[canary]\nmax_exception_rate_increase = 0.4\ndetect_exception_rate_increase = 0.3\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("canary.detect_exception_rate_increase"),
            "{err}"
        );
        let err = parse("", &[("FLEETGATE_CANARY_PRE_WINDOW_SECS", "-5")]).unwrap_err();
        assert!(err.to_string().contains("canary.pre_window_secs"), "{err}");
    }

    #[test]
    fn inconclusive_policy_defaults_to_extend_up_to_twice_the_window() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.canary.inconclusive_policy(), InconclusivePolicy::Extend);
        assert_eq!(c.canary.max_window(), 3600);
        assert_eq!(c.canary.selection_timeout_secs, 300);
        assert_eq!(c.canary.min_requests, 1000);
        // The default follows window_secs.
        let c = parse("[canary]\nwindow_secs = 600\n", &[]).unwrap();
        assert_eq!(c.canary.max_window(), 1200);
        let c = parse(
            "[canary]\non_inconclusive = \"hold\"\nmax_window_secs = 1800\nselection_timeout_secs = 60\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.canary.inconclusive_policy(), InconclusivePolicy::Hold);
        assert_eq!(c.canary.max_window(), 1800);
        assert_eq!(c.canary.selection_timeout_secs, 60);
    }

    #[test]
    fn inconclusive_keys_have_env_overrides() {
        let c = parse(
            "[canary]\non_inconclusive = \"hold\"\n",
            &[
                ("FLEETGATE_CANARY_ON_INCONCLUSIVE", "rollback"),
                ("FLEETGATE_CANARY_MAX_WINDOW_SECS", "5400"),
                ("FLEETGATE_CANARY_SELECTION_TIMEOUT_SECS", "30"),
                ("FLEETGATE_CANARY_MIN_REQUESTS", "200"),
            ],
        )
        .unwrap();
        assert_eq!(c.canary.inconclusive_policy(), InconclusivePolicy::Rollback);
        assert_eq!(c.canary.max_window(), 5400);
        assert_eq!(c.canary.selection_timeout_secs, 30);
        assert_eq!(c.canary.min_requests, 200);
        let listed: Vec<String> = env_overrides().into_iter().map(|(_, v)| v).collect();
        for var in [
            "FLEETGATE_CANARY_ON_INCONCLUSIVE",
            "FLEETGATE_CANARY_ON_INSUFFICIENT_DATA",
            "FLEETGATE_CANARY_MAX_WINDOW_SECS",
            "FLEETGATE_CANARY_SELECTION_TIMEOUT_SECS",
        ] {
            assert!(listed.iter().any(|v| v == var), "{var} not listed");
        }
    }

    #[test]
    fn on_insufficient_data_is_a_deprecated_alias() {
        let policy = |text: &str, env: &[(&str, &str)]| {
            parse(text, env).map(|c| c.canary.inconclusive_policy())
        };
        let fail = "[canary]\non_insufficient_data = \"fail\"\n";
        let extend = "[canary]\non_insufficient_data = \"extend\"\n";
        assert_eq!(policy(fail, &[]), Ok(InconclusivePolicy::Rollback));
        assert_eq!(policy(extend, &[]), Ok(InconclusivePolicy::Extend));
        assert_eq!(
            policy("", &[("FLEETGATE_CANARY_ON_INSUFFICIENT_DATA", "fail")]),
            Ok(InconclusivePolicy::Rollback)
        );
        // Both set, saying the same thing: accepted.
        assert_eq!(
            policy(
                "[canary]\non_insufficient_data = \"fail\"\non_inconclusive = \"rollback\"\n",
                &[]
            ),
            Ok(InconclusivePolicy::Rollback)
        );
        // Both set, saying different things: refused, naming both keys.
        let e = parse(
            "[canary]\non_insufficient_data = \"fail\"\non_inconclusive = \"hold\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflicting config values: `canary.on_insufficient_data` = \"fail\" and `canary.on_inconclusive` = \"hold\" (on_insufficient_data is a deprecated alias (\"fail\" = \"rollback\", \"extend\" = \"extend\"); remove it and keep on_inconclusive)"
        );
        let e = parse(extend, &[("FLEETGATE_CANARY_ON_INCONCLUSIVE", "rollback")]).unwrap_err();
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
    }

    #[test]
    fn invalid_inconclusive_settings_name_the_key() {
        let e = parse("[canary]\non_inconclusive = \"wait\"\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config value for `canary.on_inconclusive`: \"wait\" (\"extend\", \"hold\" or \"rollback\")"
        );
        let e = parse("", &[("FLEETGATE_CANARY_ON_INCONCLUSIVE", "Extend")]).unwrap_err();
        assert!(e.to_string().contains("`canary.on_inconclusive`"), "{e}");
        let e = parse("[canary]\non_insufficient_data = \"hold\"\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("`canary.on_insufficient_data`: \"hold\""),
            "{e}"
        );
        let e = parse("[canary]\nwindow_secs = 600\nmax_window_secs = 599\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid config value for `canary.max_window_secs`: 599 (at least canary.window_secs"),
            "{e}"
        );
        // Equal to the window is allowed (hold as soon as the window ends).
        assert!(parse("[canary]\nwindow_secs = 600\nmax_window_secs = 600\n", &[]).is_ok());
        for v in ["0", "-1"] {
            let e = parse("", &[("FLEETGATE_CANARY_SELECTION_TIMEOUT_SECS", v)]).unwrap_err();
            assert!(
                e.to_string().contains("`canary.selection_timeout_secs`"),
                "{e}"
            );
        }
        let e = parse("", &[("FLEETGATE_CANARY_MAX_WINDOW_SECS", "long")]).unwrap_err();
        assert!(
            e.to_string().contains("FLEETGATE_CANARY_MAX_WINDOW_SECS"),
            "{e}"
        );
    }

    #[test]
    fn init_template_parses_and_lists_the_canary_keys() {
        let text = include_str!("../../fleetgate-cli/src/init_template.toml");
        let c = parse(text, &[]).unwrap();
        assert_eq!(c.canary.inconclusive_policy(), InconclusivePolicy::Extend);
        assert_eq!(
            c.canary,
            CanaryConfig {
                on_inconclusive: Some("extend".into()),
                ..CanaryConfig::default()
            }
        );
        for key in [
            "min_requests =",
            "on_inconclusive =",
            "max_window_secs =",
            "selection_timeout_secs =",
            "max_exception_rate_increase =",
            "detect_exception_rate_increase =",
            "pre_window_secs =",
            "max_exception_rate =",
        ] {
            assert!(text.contains(key), "init template lacks `{key}`");
        }
    }

    #[test]
    fn deploy_steps_must_increase_to_the_whole_fleet() {
        let c = parse(
            "[deploy]\nsteps = [0.25, 0.5, 1.0]\nstep_window_secs = 600\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.deploy.judged_steps(), [0.25, 0.5]);
        assert_eq!(c.deploy.step_window_secs, Some(600));
        assert!(parse("", &[]).unwrap().deploy.judged_steps().is_empty());
        for bad in [
            "[0.5, 0.25, 1.0]",
            "[0.5]",
            "[0.0, 1.0]",
            "[0.5, 0.5, 1.0]",
            "[0.5, 1.5]",
        ] {
            let e = parse(&format!("[deploy]\nsteps = {bad}\n"), &[]).unwrap_err();
            assert!(e.to_string().contains("`deploy.steps`"), "{bad}: {e}");
        }
        let e = parse("[deploy]\nsteps = [0.5, 1.0]\nstep_window_secs = 0\n", &[]).unwrap_err();
        assert!(e.to_string().contains("`deploy.step_window_secs`"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = parse("[canary]\npct = 1.5\n", &[]).unwrap_err();
        assert!(e.to_string().contains("`canary.pct`"), "{e}");
        let e = parse("", &[("FLEETGATE_CANARY_PCT", "0")]).unwrap_err();
        assert!(e.to_string().contains("`canary.pct`"), "{e}");
        let e = parse("[canary]\nwindow_secs = -5\n", &[]).unwrap_err();
        assert!(e.to_string().contains("`canary.window_secs`: -5"), "{e}");
        let e = parse("", &[("FLEETGATE_CANARY_WINDOW_SECS", "soon")]).unwrap_err();
        assert!(
            e.to_string().contains("FLEETGATE_CANARY_WINDOW_SECS"),
            "{e}"
        );
        let e = parse("[canary]\npcent = 0.1\n", &[]).unwrap_err();
        assert!(e.to_string().contains("pcent"), "{e}");
        let e = parse("[stages.audit.guardrails]\n\"a\" = \"abc\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("guardrails"), "{e}");
    }
}
