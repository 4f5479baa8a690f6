//! The tools' argument types. Their JSON Schemas are generated from these types
//! ([`crate::definitions`]) and snapshot-tested (`schemas/tools.json`).
//!
//! Every type refuses unknown fields, so a misspelt argument is an error that names it
//! rather than a silently ignored value. Every argument HART's tools take is accepted with
//! HART's default and optionality (see README, "HART compatibility").

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
    /// The commit to release (a SHA or any git revision). Default (absent or `""`, HART's
    /// default): the tag named `new_version`.
    #[serde(default)]
    pub git_sha: Option<String>,
    /// The release channel whose nodes the run updates (canary, steps, DEPLOY): a name of
    /// letters, digits, `-`, `_` or `.`. Default (absent): `stable`, every node's channel
    /// unless set otherwise (`fleetgate fleet channel`). Not in HART.
    #[serde(default)]
    pub channel: Option<String>,
}

/// `promote_channel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteChannel {
    /// The version: the release completed last on a channel other than `to` (e.g. what
    /// `beta` runs now).
    pub version: String,
    /// The channel to take it to (e.g. `stable`).
    pub to: String,
}

/// `rollback_upgrade`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackUpgrade {
    /// Why the run is rolled back (recorded in the state and carried by the rollback
    /// order), at most 2000 characters. Optional as in HART (default `""`); without one,
    /// a default reason saying so is recorded.
    #[serde(default)]
    pub reason: String,
}

/// `pause_upgrade`, `resume_upgrade` and `promote_upgrade`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorControl {
    /// Why (recorded in the run's history with who acted), at most 2000 characters.
    /// Optional; without one, "no reason given" is recorded.
    #[serde(default)]
    pub reason: String,
}

/// `approve_upgrade`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveUpgrade {
    /// A signed approval (`fleetgate approve --sign`, or any Ed25519 signer of the
    /// canonical request) to record. Without it, the unsigned request for the current run
    /// is returned, to be signed where the approver's key is.
    #[serde(default)]
    pub approval: Option<serde_json::Value>,
    /// Which stage the request is for (a gate of `[approval] before`); default: the
    /// current stage when it waits, else the only one that does. Ignored with `approval`.
    #[serde(default)]
    pub stage: Option<String>,
    /// Why, for the request (signed with it), at most 2000 characters.
    #[serde(default)]
    pub reason: String,
}

/// `capture_benchmark`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBenchmark {
    /// The version to label the snapshot with (semver with optional `v`, or
    /// `auto-<unix seconds>`). Optional as in HART: absent or `""` means the run in
    /// progress (its version and commit), else the version tag at `git_sha` (default
    /// HEAD), else `auto-<unix seconds>` for that commit.
    #[serde(default)]
    pub version: String,
    /// The commit to measure (a SHA or any git revision). Default (absent or `""`): the
    /// tag named `version`.
    #[serde(default)]
    pub git_sha: Option<String>,
    /// Which registered benchmarks to run besides the configured benchmark command:
    /// `fast` (default, as in HART), `heavy` or `all`.
    #[serde(default = "fast")]
    pub tier: Tier,
}

fn fast() -> Tier {
    Tier::Fast
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
    /// operator has allowed this exact definition in the config. Give this or
    /// `run_command`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// HART's form of `command`: one string, split into program and arguments like a
    /// POSIX shell would split words (quotes, backslashes), but never run by a shell: no
    /// variables, globs, pipes or `;`.
    #[serde(default)]
    pub run_command: Option<String>,
    /// The results file the command writes, relative to the checkout, in
    /// github-action-benchmark format: `[{"name", "unit", "value"}]`. Give this or
    /// `metrics_file`; with `run_command` and neither, `results.json` (HART's default).
    #[serde(default)]
    pub results: Option<String>,
    /// HART's name for `results`.
    #[serde(default)]
    pub metrics_file: Option<String>,
    /// `fast`, `heavy` or `all`: which `capture_benchmark` tiers run it. Default `all`,
    /// or `heavy` for HART's form (`run_command`), the tier HART gives benchmarks
    /// registered from a repository.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Where the benchmark comes from, for the operator's review. Recorded only: it is
    /// never cloned or fetched.
    #[serde(default)]
    pub repo_url: Option<String>,
    /// What it measures.
    #[serde(default)]
    pub description: Option<String>,
    /// HART: the benchmark needs a GPU. Recorded for the operator (fleetgate does not
    /// probe GPUs; it runs what the operator allowed). Default false.
    #[serde(default)]
    pub requires_gpu: bool,
    /// HART: the GPU memory it needs, in GB. Recorded like `requires_gpu`. Default 0.
    #[serde(default)]
    pub min_vram_gb: f64,
}
