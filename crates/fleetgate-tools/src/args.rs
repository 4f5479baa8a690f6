//! The tools' argument types. Their JSON Schemas are generated from these types
//! ([`crate::definitions`]) and snapshot-tested (`schemas/tools.json`).
//!
//! Every type refuses unknown fields, so a misspelt argument is an error that names it
//! rather than a silently ignored value.

use fleetgate_runtime::bench_registry::Tier;
use schemars::JsonSchema;
use serde::Deserialize;

/// No arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `start_upgrade`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartUpgrade {
    /// The version to release: semver with an optional leading `v` (`v2.1.0`), or
    /// `auto-<unix seconds>`. Without `git_sha`, the git tag of that name is released.
    pub new_version: String,
    /// The commit to release (a SHA or any git revision). Default: the tag named
    /// `new_version`.
    #[serde(default)]
    pub git_sha: Option<String>,
}

/// `rollback_upgrade`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackUpgrade {
    /// Why the run is rolled back (recorded in the state and carried by the rollback
    /// order). 1-2000 characters.
    pub reason: String,
}

/// `capture_benchmark`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBenchmark {
    /// The version to label the snapshot with (semver with optional `v`, or
    /// `auto-<unix seconds>`).
    pub version: String,
    /// The commit to measure. Default: the tag named `version`.
    #[serde(default)]
    pub git_sha: Option<String>,
    /// Which registered benchmarks to run besides the configured benchmark command:
    /// `fast`, `heavy` or `all` (default).
    #[serde(default)]
    pub tier: Tier,
}

/// `compare_benchmarks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareBenchmarks {
    /// The baseline version (a stored snapshot).
    pub old_version: String,
    /// The candidate version (a stored snapshot).
    pub new_version: String,
}

/// `register_benchmark`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBenchmark {
    /// Name, 1-64 characters of `[A-Za-z0-9._-]`. Registering an existing name replaces
    /// its definition (and withdraws its approval if what runs changed).
    pub name: String,
    /// The program and its arguments, e.g. `["./scripts/bench.sh", "--quick"]`. Run
    /// without a shell, in a clean checkout of the version measured, and only once the
    /// operator has allowed this exact definition in the config.
    pub command: Vec<String>,
    /// The results file the command writes, relative to the checkout, in
    /// github-action-benchmark format: `[{"name", "unit", "value"}]`.
    pub results: String,
    /// `fast`, `heavy` or `all` (default): which `capture_benchmark` tiers run it.
    #[serde(default)]
    pub tier: Tier,
    /// Where the benchmark comes from, for the operator's review. Recorded only: it is
    /// never cloned or fetched.
    #[serde(default)]
    pub repo_url: Option<String>,
    /// What it measures.
    #[serde(default)]
    pub description: Option<String>,
}
