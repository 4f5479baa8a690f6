//! The tools (HART's ten, plus pause, resume and promote): definitions (name, description, argument schema, hints) and the
//! dispatcher that runs them against an orchestrator.

use crate::args;
use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_runtime::bench_registry::{self, BenchmarkDef, Tier};
use fleetgate_runtime::{
    FleetFailure, Orchestrator, Progress, RuntimeError, bench_store, gates, load_config,
};
use fleetgate_store::StoreError;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The longest `reason` accepted by `rollback_upgrade`.
pub const MAX_REASON_CHARS: usize = 2000;
/// The longest version or revision string accepted.
pub const MAX_VERSION_CHARS: usize = 128;
/// The reason recorded when `rollback_upgrade` is called without one (HART's `reason`
/// defaults to `""`).
pub const DEFAULT_ROLLBACK_REASON: &str = "no reason given (rollback_upgrade called without one)";
/// HART's default `metrics_file` for a benchmark registered with `run_command`.
pub const HART_METRICS_FILE: &str = "results.json";

/// One tool's definition.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// The tool's name (HART's).
    pub name: &'static str,
    /// What it does, written for the agent that decides whether to call it.
    pub description: &'static str,
    /// JSON Schema of its arguments (an object schema, subschemas inlined).
    pub input_schema: Value,
    /// It changes nothing.
    pub read_only: bool,
    /// It can undo or stop work (rollback).
    pub destructive: bool,
    /// Calling it twice with the same arguments has the effect of calling it once.
    pub idempotent: bool,
}

fn schema<T: JsonSchema>() -> Value {
    let mut v = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
        // The struct's own doc names the tool; the tool's description says more.
        o.remove("description");
        // Tools with no arguments still take an (empty) object.
        o.entry("properties").or_insert_with(|| json!({}));
    }
    v
}

/// The tools: HART's ten in HART's order, then fleetgate's operator controls.
pub fn definitions() -> Vec<ToolDef> {
    vec![
        ToolDef {
            name: "check_upgrade_status",
            description: "Show the upgrade pipeline: the current stage, version, commit, gate verdicts with their figures, history, and whether a new version is waiting (a version tag newer than anything run, or a changed code hash at HEAD). HART's keys too: `pipeline` (the state) and `new_version` (null or {new_version_detected, version, git_sha, previous_hash}). Start here; `next_step` says what to call next.",
            input_schema: schema::<args::NoArgs>(),
            read_only: true,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "capture_benchmark",
            description: "Run the configured benchmark command (and the operator-allowed registered benchmarks of `tier`, default fast) in a clean checkout of `version` and store the results as that version's snapshot. Without `version`: the run in progress, else the version tag at `git_sha` (default HEAD), else auto-<unix seconds>. Use it to record a baseline before an upgrade. Can take minutes.",
            input_schema: schema::<args::CaptureBenchmark>(),
            read_only: false,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "compare_benchmarks",
            description: "Compare the stored benchmark snapshots of two versions, direction-aware and within the configured tolerance. `safe` (= `passed`) is false if any benchmark regressed or is missing; `reason` and `regressions` name them. Any regression means: do not upgrade (or roll back).",
            input_schema: schema::<args::CompareBenchmarks>(),
            read_only: true,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "start_upgrade",
            description: "Start the seven-stage pipeline (BUILD, TEST, AUDIT, BENCHMARK, SIGN, CANARY, DEPLOY) for `new_version`. Allowed only when no run is in progress. Then call advance_upgrade_pipeline until the run ends.",
            input_schema: schema::<args::StartUpgrade>(),
            read_only: false,
            destructive: false,
            idempotent: false,
        },
        ToolDef {
            name: "advance_upgrade_pipeline",
            description: "Evaluate the current stage's gate once and commit its verdict: `passed` moves to the next stage, `pending` (canary window open, deploy converging) means call again later, `failed` ends the run (failed or rolled back). Gate commands can take minutes. Fails if another orchestrator holds the state directory.",
            input_schema: schema::<args::NoArgs>(),
            read_only: false,
            destructive: false,
            idempotent: false,
        },
        ToolDef {
            name: "check_canary_health",
            description: "The CANARY gate's latest health verdict: for each of the five criteria (exception rate vs the baseline nodes, health check, heartbeat, code hash integrity, benchmarks) the figures, the threshold, the statistic and the decision, plus the canary nodes. `healthy` is false as soon as any criterion failed. `canary_active` is false (and nothing else is judged) when no canary ran in this run.",
            input_schema: schema::<args::NoArgs>(),
            read_only: true,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "rollback_upgrade",
            description: "Roll back the run in progress, from any stage, with a reason (optional, but say why). It always wins over a gate that is running; nodes that may have received the release get a signed rollback order to the last good version. `rolled_back_from` is the stage it left. Call it on ANY degradation.",
            input_schema: schema::<args::RollbackUpgrade>(),
            read_only: false,
            destructive: true,
            idempotent: false,
        },
        ToolDef {
            name: "get_benchmark_history",
            description: "List every stored benchmark snapshot (one per version), oldest first, with its results.",
            input_schema: schema::<args::NoArgs>(),
            read_only: true,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "register_benchmark",
            description: "Record a benchmark definition (a program and its arguments as `command`, or HART's `run_command` string, and the results file it writes). Registering runs, clones and fetches nothing (`repo_url` is recorded only): the benchmark runs in capture_benchmark and the BENCHMARK gate only after the operator allows its exact definition (`definition_hash`) in the config, and then without a shell. `installed` says whether it is allowed yet.",
            input_schema: schema::<args::RegisterBenchmark>(),
            read_only: false,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "list_benchmarks",
            description: "List the registered benchmarks with their definition hashes and whether the operator has allowed each one (and if not, why), plus the configured benchmark command.",
            input_schema: schema::<args::NoArgs>(),
            read_only: true,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "pause_upgrade",
            description: "Hold the run in progress at its current stage, with a reason: no gate is evaluated and nothing is sent to the fleet until resume_upgrade (a gate pass already running is discarded); advance_upgrade_pipeline answers `paused`. Recorded in the history with who and why. Refused when nothing runs or the run is already paused.",
            input_schema: schema::<args::OperatorControl>(),
            read_only: false,
            destructive: false,
            idempotent: false,
        },
        ToolDef {
            name: "resume_upgrade",
            description: "Let a paused run go on from where it was held. The paused time does not count: an open canary window's deadline (and DEPLOY's) move by it. Recorded in the history with who and why.",
            input_schema: schema::<args::OperatorControl>(),
            read_only: false,
            destructive: false,
            idempotent: false,
        },
        ToolDef {
            name: "promote_upgrade",
            description: "End the open CANARY window now and move on to DEPLOY, recorded as passed BY THE OPERATOR (gate result `promoted` with who and why; never as a judged pass); during a phased DEPLOY (`[deploy] steps`), end the open step's window and move on to the next step, recorded the same way. The way out of a canary or step held as inconclusive (too little traffic). Refused outside an open window and while paused. To stop instead, call rollback_upgrade.",
            input_schema: schema::<args::OperatorControl>(),
            read_only: false,
            destructive: false,
            idempotent: false,
        },
        ToolDef {
            name: "approve_upgrade",
            description: "Approvals for the stages of `[approval] before` (signed documents, not a boolean: the stage's gate waits for `required` distinct approvers of `[approval] keys`). Without `approval`: returns the unsigned approval request of the current run for `stage`, to be signed where an approver's key is (`fleetgate approve --sign REQUEST --key-file KEY`). With `approval` (the signed document): verifies it against the approval keys and this run and stage, records it, and says how many approvals the stage has. Refused: a key that is not an approver, another run, version or stage, a stage that does not wait.",
            input_schema: schema::<args::ApproveUpgrade>(),
            read_only: false,
            destructive: false,
            idempotent: true,
        },
        ToolDef {
            name: "promote_channel",
            description: "Take a release that completed on one channel to another (`beta` → `stable`): starts a new run of the same commit on channel `to`, so every gate runs again and the canary and DEPLOY steps judge it on `to`'s nodes. `version` must be the release completed last on a channel other than `to`. Allowed only when no run is in progress; then call advance_upgrade_pipeline until the run ends.",
            input_schema: schema::<args::PromoteChannel>(),
            read_only: false,
            destructive: false,
            idempotent: false,
        },
    ]
}

/// The definition of the tool `name`.
pub fn find(name: &str) -> Option<ToolDef> {
    definitions().into_iter().find(|d| d.name == name)
}

/// Runs tools against the project of one config file.
#[derive(Debug, Clone)]
pub struct Toolbox {
    config: Option<PathBuf>,
    /// The orchestrator the last call that takes no orchestrator lock opened, with the
    /// config it was opened from: reused while the config file says the same, so a
    /// server answering a poll every second keeps one registry connection (with `[state]
    /// store = "postgres"`: one pool, one lease keeper, one mirror of the shared state)
    /// instead of opening them for every call.
    shared: std::sync::Arc<std::sync::Mutex<Option<Opened>>>,
}

/// A cached [`Orchestrator`] and what it was opened from.
#[derive(Debug)]
struct Opened {
    cfg: fleetgate_core::config::Config,
    base: PathBuf,
    orchestrator: std::sync::Arc<Orchestrator>,
}

/// Why a tool answered `success: false`: the result's `error_kind`, so an agent (or the
/// HTTP status) can branch without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An argument is missing, of the wrong type, unknown, or out of range.
    InvalidArguments,
    /// No tool of that name.
    UnknownTool,
    /// The config file is missing or invalid.
    Config,
    /// Another orchestrator holds the state directory (or the fleet's pipeline lease), or
    /// a capture of the same version is running.
    Locked,
    /// The state file is corrupt (moved aside) or newer than this fleetgate.
    CorruptState,
    /// The pipeline refused the transition (a run is active, nothing to roll back, …).
    Refused,
    /// What was asked about does not exist (a snapshot, a canary verdict).
    NotFound,
    /// Anything else went wrong (git, a command, I/O); the message says what.
    Failed,
}

impl ErrorKind {
    /// The snake_case name used in results.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArguments => "invalid_arguments",
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::Config => "config",
            ErrorKind::Locked => "locked",
            ErrorKind::CorruptState => "corrupt_state",
            ErrorKind::Refused => "refused",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Failed => "failed",
        }
    }

    /// Parse a result's `error_kind`.
    pub fn parse(s: &str) -> Option<ErrorKind> {
        [
            ErrorKind::InvalidArguments,
            ErrorKind::UnknownTool,
            ErrorKind::Config,
            ErrorKind::Locked,
            ErrorKind::CorruptState,
            ErrorKind::Refused,
            ErrorKind::NotFound,
            ErrorKind::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug)]
struct ToolError {
    kind: ErrorKind,
    message: String,
}

impl ToolError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> ToolError {
        ToolError {
            kind,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorKind::InvalidArguments, message)
    }

    fn context(mut self, prefix: &str) -> ToolError {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl ErrorKind {
    /// The kind of a runtime error, as tools, the HTTP API and `fleetgate … --json`
    /// report it.
    pub fn of(e: &RuntimeError) -> ErrorKind {
        match e {
            RuntimeError::Store(
                StoreError::Locked { .. }
                | StoreError::Shared(
                    fleetgate_store::SharedError::Fenced(_)
                    | fleetgate_store::SharedError::Conflict(_),
                ),
            )
            | RuntimeError::Fenced(_)
            | RuntimeError::Busy(_) => ErrorKind::Locked,
            RuntimeError::Store(
                StoreError::Corrupt { .. }
                | StoreError::TooNew { .. }
                | StoreError::Shared(fleetgate_store::SharedError::Damaged(_)),
            ) => ErrorKind::CorruptState,
            RuntimeError::Transition(_)
            | RuntimeError::NoActiveRun { .. }
            | RuntimeError::Refused(_) => ErrorKind::Refused,
            RuntimeError::Version(_)
            | RuntimeError::Invalid(_)
            | RuntimeError::Fleet(
                FleetFailure::UnknownNode { .. } | FleetFailure::NodeNotReady { .. },
            ) => ErrorKind::InvalidArguments,
            RuntimeError::Config(_) => ErrorKind::Config,
            RuntimeError::CodeHash(e) if e.is_config() => ErrorKind::Config,
            RuntimeError::Io { .. }
            | RuntimeError::Git(_)
            | RuntimeError::CodeHash(_)
            | RuntimeError::Report(_)
            | RuntimeError::Encode { .. }
            | RuntimeError::Store(_)
            | RuntimeError::Fleet(_)
            | RuntimeError::Superseded(_) => ErrorKind::Failed,
        }
    }
}

impl From<RuntimeError> for ToolError {
    fn from(e: RuntimeError) -> ToolError {
        ToolError::new(ErrorKind::of(&e), e.to_string())
    }
}

type ToolResult = Result<Value, ToolError>;

impl Toolbox {
    /// Tools for the project whose config is `config` (else `$FLEETGATE_CONFIG`, else
    /// `./fleetgate.toml`, looked up at each call).
    pub fn new(config: Option<PathBuf>) -> Toolbox {
        Toolbox {
            config,
            shared: std::sync::Arc::default(),
        }
    }

    /// Call the tool `name` with `args` (a JSON object; `null` means no arguments). Blocks
    /// until the tool is done (gate commands can take minutes): from async code, call it
    /// on a blocking thread. Always returns `{"success": bool, ...}`.
    pub fn call(&self, name: &str, args: Value) -> Value {
        self.call_with_progress(name, args, &mut |_| {})
    }

    /// [`Toolbox::call`], reporting progress lines (a gate started, a verdict, a delivery)
    /// to `progress` as they happen.
    pub fn call_with_progress(
        &self,
        name: &str,
        args: Value,
        progress: &mut dyn FnMut(String),
    ) -> Value {
        let args = if args.is_null() { json!({}) } else { args };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch(name, args, progress)
        }));
        match outcome {
            Ok(Ok(mut v)) => {
                if let Some(o) = v.as_object_mut() {
                    // `success` first, like HART's results.
                    let mut out = serde_json::Map::new();
                    out.insert("success".into(), json!(true));
                    for (k, val) in std::mem::take(o) {
                        if k != "success" {
                            out.insert(k, val);
                        }
                    }
                    Value::Object(out)
                } else {
                    json!({"success": true, "result": v})
                }
            }
            Ok(Err(e)) => {
                json!({"success": false, "error": e.message, "error_kind": e.kind.as_str()})
            }
            Err(_) => {
                json!({"success": false, "error_kind": "failed", "error": format!("internal error: the tool `{name}` panicked; nothing was committed after the panic (check `check_upgrade_status`)")})
            }
        }
    }

    fn dispatch(&self, name: &str, args: Value, progress: &mut dyn FnMut(String)) -> ToolResult {
        match name {
            "check_upgrade_status" => parse::<args::NoArgs>(name, args).and_then(|_| self.status()),
            "capture_benchmark" => parse(name, args).and_then(|a| self.capture(a)),
            "compare_benchmarks" => parse(name, args).and_then(|a| self.compare(a)),
            "start_upgrade" => parse(name, args).and_then(|a| self.start(a)),
            "advance_upgrade_pipeline" => {
                parse::<args::NoArgs>(name, args).and_then(|_| self.advance(progress))
            }
            "check_canary_health" => {
                parse::<args::NoArgs>(name, args).and_then(|_| self.canary_health())
            }
            "rollback_upgrade" => parse(name, args).and_then(|a| self.rollback(a)),
            "get_benchmark_history" => {
                parse::<args::NoArgs>(name, args).and_then(|_| self.history())
            }
            "register_benchmark" => parse(name, args).and_then(|a| self.register(a)),
            "list_benchmarks" => parse::<args::NoArgs>(name, args).and_then(|_| self.list()),
            "pause_upgrade" | "resume_upgrade" | "promote_upgrade" => {
                parse(name, args).and_then(|a| self.control(name, a))
            }
            "approve_upgrade" => parse(name, args).and_then(|a| self.approve(a)),
            "promote_channel" => parse(name, args).and_then(|a| self.promote_channel(a)),
            other => Err(ToolError::new(
                ErrorKind::UnknownTool,
                format!(
                    "unknown tool {:?}; the tools are: {}",
                    truncate(other, 80),
                    definitions()
                        .iter()
                        .map(|d| d.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The pipeline state in the state file (for `/metrics` and `/readyz`).
    ///
    /// # Errors
    /// The config or the state file cannot be read; the message says which.
    pub fn pipeline_state(&self) -> Result<fleetgate_core::PipelineState, String> {
        let o = self.open(false).map_err(|e| e.message)?;
        o.status().map_err(|e| e.to_string())
    }

    /// The finished runs of the run archive (`state/runs/`), newest first, at most `limit`
    /// (see [`crate::metrics::run_archive`]).
    ///
    /// # Errors
    /// The config cannot be read.
    pub fn run_history(&self, limit: usize) -> Result<Vec<Value>, String> {
        let o = self.open(false).map_err(|e| e.message)?;
        let mut runs = crate::metrics::run_archive(&o.store().path().join("runs"));
        runs.truncate(limit);
        Ok(runs)
    }

    /// The pipeline metrics for `/metrics`: the state file's and the run archive's.
    ///
    /// # Errors
    /// The config or the state cannot be read (the caller answers 503).
    pub fn pipeline_metrics(&self) -> Result<String, String> {
        let o = self.open(false).map_err(|e| e.message)?;
        let state = o.status().map_err(|e| e.to_string())?;
        let mut text = crate::metrics::pipeline(&state);
        text.push_str(&crate::metrics::runs(&crate::metrics::archived_runs(
            &o.store().path().join("runs"),
        )));
        Ok(text)
    }

    /// The heartbeat endpoint's policy under this toolbox's config (the defaults when the
    /// config cannot be read: the tools then say why).
    pub fn heartbeat_policy(&self) -> fleetgate_fleet::HeartbeatPolicy {
        load_config(self.config.as_deref())
            .map(|(cfg, _)| fleetgate_runtime::fleet::heartbeat_policy(&cfg))
            .unwrap_or_default()
    }

    /// The orchestrator for one call: a new one holding the orchestrator lock when
    /// `exclusive` (`advance`), else the cached one while the config is unchanged.
    fn open(&self, exclusive: bool) -> Result<std::sync::Arc<Orchestrator>, ToolError> {
        let (cfg, base) = load_config(self.config.as_deref())?;
        if exclusive {
            return Ok(std::sync::Arc::new(Orchestrator::open(cfg, &base)?));
        }
        let mut cached = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = cached.as_ref()
            && o.cfg == cfg
            && o.base == base
        {
            return Ok(o.orchestrator.clone());
        }
        let orchestrator = std::sync::Arc::new(Orchestrator::open_shared(cfg.clone(), &base)?);
        *cached = Some(Opened {
            cfg,
            base,
            orchestrator: orchestrator.clone(),
        });
        Ok(orchestrator)
    }

    fn status(&self) -> ToolResult {
        let o = self.open(false)?;
        let state = o.status()?;
        let (detected, detection_error) = match o.detect_new_version(&state) {
            Ok(d) => (d, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let next_step = next_step(&state, detected.as_ref());
        let mut v = summary(&state);
        let o_warn: Vec<String> = o
            .store()
            .quarantined()
            .iter()
            .map(|p| format!("a corrupt state file was moved aside to {}", p.display()))
            .collect();
        v["stage_history"] = json!(state.stage_history);
        v["gate_results"] = json!(
            state
                .gate_results
                .iter()
                .map(|(stage, r)| (
                    stage.as_str().to_owned(),
                    json!({"outcome": r.verdict.outcome, "detail": r.verdict.detail, "skipped": r.verdict.skipped, "figures": r.verdict.figures, "promoted": r.promoted})
                ))
                .collect::<serde_json::Map<_, _>>()
        );
        v["skipped_gates"] = json!(state.skipped_gates());
        v["last_completed"] = json!(state.last_completed);
        v["outbox_pending"] = json!(state.outbox.len());
        v["new_version_detected"] = json!(detected.is_some());
        // HART's shape: null, or {new_version_detected, version, previous_hash} (HART adds
        // the new code hash; fleetgate computes it in BUILD) plus the commit.
        v["new_version"] = match &detected {
            Some((version, sha)) => json!({
                "new_version_detected": true,
                "version": version,
                "git_sha": sha,
                "previous_hash": state.code_hash.as_deref().or(state.last_completed.as_ref().and_then(|c| c.code_hash.as_deref())),
            }),
            None => Value::Null,
        };
        if let Some(e) = detection_error {
            v["new_version_error"] = json!(e);
        }
        v["pipeline"] = hart_pipeline(&state);
        let mut warnings = o_warn;
        warnings.extend(fleetgate_store::adoption_warning(&state));
        warnings.extend(env_warnings());
        v["warnings"] = json!(warnings);
        v["next_step"] = json!(next_step);
        Ok(v)
    }

    fn start(&self, a: args::StartUpgrade) -> ToolResult {
        check_len("new_version", &a.new_version, MAX_VERSION_CHARS)?;
        let git_sha = given(a.git_sha.as_deref());
        if let Some(sha) = git_sha {
            check_len("git_sha", sha, MAX_VERSION_CHARS)?;
        }
        let channel = a.channel.as_deref();
        if let Some(c) = channel {
            check_len("channel", c, MAX_VERSION_CHARS)?;
        }
        let o = self.open(false)?;
        let state = o.start_on(&a.new_version, git_sha, channel).map_err(|e| {
            ToolError::from(e).context(&format!("start_upgrade({})", a.new_version))
        })?;
        let mut v = summary(&state);
        v["warnings"] = json!(env_warnings());
        v["next_step"] = json!("call advance_upgrade_pipeline to run the BUILD gate");
        Ok(v)
    }

    fn promote_channel(&self, a: args::PromoteChannel) -> ToolResult {
        check_len("version", &a.version, MAX_VERSION_CHARS)?;
        check_len("to", &a.to, MAX_VERSION_CHARS)?;
        let o = self.open(false)?;
        let (state, from) = o.promote_channel(&a.version, &a.to).map_err(|e| {
            ToolError::from(e).context(&format!("promote_channel({} to {})", a.version, a.to))
        })?;
        let mut v = summary(&state);
        v["promoted_from"] = json!(from);
        v["warnings"] = json!(env_warnings());
        v["next_step"] = json!("call advance_upgrade_pipeline to run the BUILD gate");
        Ok(v)
    }

    fn advance(&self, sink: &mut dyn FnMut(String)) -> ToolResult {
        let o = self.open(true)?;
        let mut progress = Vec::new();
        let report = o.advance(&mut |p: Progress| {
            let line = progress_line(&p);
            sink(line.clone());
            progress.push(line);
        })?;
        let mut v = summary(&report.state);
        v["stage_evaluated"] = json!(report.stage);
        v["outcome"] = json!(report.verdict.outcome);
        v["detail"] = json!(report.verdict.detail);
        v["figures"] = report.verdict.figures.clone();
        v["skipped"] = json!(report.verdict.skipped);
        v["committed"] = json!(report.committed);
        // HART: a gate still working answers `in_progress: true`.
        v["in_progress"] = json!(report.verdict.outcome == Outcome::Pending);
        v["progress"] = json!(progress);
        v["paused"] = json!(report.state.paused);
        v["next_step"] = json!(if report.paused {
            "the run is paused: nothing was evaluated; call resume_upgrade to go on (or rollback_upgrade to abort)".to_owned()
        } else if !report.committed {
            "the verdict was discarded because the run moved on (a rollback landed); call check_upgrade_status".to_owned()
        } else {
            match (report.verdict.outcome, report.state.stage) {
                (_, Stage::Completed) => {
                    "the run completed: every node runs the new version".to_owned()
                }
                (_, Stage::RolledBack) => "the run was rolled back; see failure_detail".to_owned(),
                (_, Stage::Failed) => "the run failed; see failure_detail".to_owned(),
                (Outcome::Pending, s) => format!(
                    "the {} gate is pending; call advance_upgrade_pipeline again in a few seconds",
                    s.gate_name()
                ),
                (_, s) => format!(
                    "call advance_upgrade_pipeline to run the {} gate",
                    s.gate_name()
                ),
            }
        });
        Ok(v)
    }

    fn rollback(&self, a: args::RollbackUpgrade) -> ToolResult {
        check_len("reason", &a.reason, MAX_REASON_CHARS)?;
        // HART's `reason` is optional; the rollback order still carries one.
        let reason = if a.reason.trim().is_empty() {
            DEFAULT_ROLLBACK_REASON.to_owned()
        } else {
            a.reason
        };
        let o = self.open(false)?;
        let state = o
            .rollback(&reason)
            .map_err(|e| ToolError::from(e).context("rollback_upgrade"))?;
        let mut v = summary(&state);
        v["rolled_back_from"] = json!(
            state
                .stage_history
                .last()
                .filter(|h| h.stage == Stage::RolledBack)
                .and_then(|h| h.from)
        );
        v["reason"] = json!(reason);
        v["rollback_order_queued"] = json!(!state.outbox.is_empty());
        v["next_step"] = json!(if state.outbox.is_empty() {
            "rolled back; no node had received the release, so no rollback order is needed"
        } else {
            "rolled back; the signed rollback order is queued: call advance_upgrade_pipeline (or run `fleetgate advance`) to deliver it"
        });
        Ok(v)
    }

    fn control(&self, tool: &str, a: args::OperatorControl) -> ToolResult {
        check_len("reason", &a.reason, MAX_REASON_CHARS)?;
        let o = self.open(false)?;
        let by = format!("{} (tool {tool})", fleetgate_runtime::outbox::operator());
        let result = match tool {
            "pause_upgrade" => o.pause(&by, &a.reason),
            "resume_upgrade" => o.resume(&by, &a.reason),
            _ => o.promote(&by, &a.reason),
        };
        let state = result.map_err(|e| ToolError::from(e).context(tool))?;
        let mut v = summary(&state);
        v["stage_history"] = json!(state.stage_history.last());
        v["next_step"] = json!(match tool {
            "pause_upgrade" =>
                "paused: nothing is evaluated or sent; call resume_upgrade to go on, promote_upgrade is refused while paused, rollback_upgrade aborts",
            "resume_upgrade" =>
                "resumed: call advance_upgrade_pipeline (a running `fleetgate run` goes on by itself)",
            _ => "promoted: the run is at DEPLOY; call advance_upgrade_pipeline",
        });
        Ok(v)
    }

    fn approve(&self, a: args::ApproveUpgrade) -> ToolResult {
        use fleetgate_runtime::approval;
        check_len("reason", &a.reason, MAX_REASON_CHARS)?;
        let o = self.open(false)?;
        let state = o.status()?;
        let state_dir = o.store().path().to_owned();
        let ctx = |e: RuntimeError| ToolError::from(e).context("approve_upgrade");
        match a.approval {
            Some(doc) => {
                let bytes = serde_json::to_vec(&doc).map_err(|e| {
                    ToolError::new(ErrorKind::InvalidArguments, format!("approval: {e}"))
                })?;
                let s = approval::submit(&state_dir, o.config(), &state, &bytes).map_err(ctx)?;
                let left = s.required.saturating_sub(s.approvals);
                Ok(json!({
                    "success": true,
                    "approval": s,
                    "next_step": if left == 0 {
                        "approved: the stage runs at the next advance_upgrade_pipeline".to_owned()
                    } else {
                        format!("{left} more approval(s) needed from other keys")
                    },
                }))
            }
            None => {
                let gate =
                    approval::resolve_gate(o.config(), &state, a.stage.as_deref()).map_err(ctx)?;
                let request =
                    approval::request(&state, &gate, &a.reason, fleetgate_trust::unix_now())
                        .map_err(ctx)?;
                let t = approval::tally(&state_dir, o.config(), &state, &gate);
                Ok(json!({
                    "success": true,
                    "request": request,
                    "approved_by": t.approved_by,
                    "required": o.config().approval.required(),
                    "next_step": "sign `request` with an approver's key (`fleetgate approve --sign REQUEST --key-file KEY`) and call approve_upgrade with it as `approval`",
                }))
            }
        }
    }

    fn canary_health(&self) -> ToolResult {
        let o = self.open(false)?;
        let state = o.status()?;
        let Some(rec) = state.gate_results.get(&Stage::Canary) else {
            // HART's answer when no canary is running.
            return Ok(json!({
                "canary_active": false,
                "stage": state.stage,
                "version": state.version,
                "run_id": state.run_id,
                "message": format!(
                    "no canary: the CANARY gate has not run in this run (the pipeline is at `{}`)",
                    state.stage
                ),
            }));
        };
        let f = &rec.verdict.figures;
        let active = state.stage == Stage::Canary;
        let until = if active {
            fleetgate_runtime::now()
        } else {
            rec.last_checked_at
        };
        Ok(json!({
            "canary_active": active,
            "reason": rec.verdict.detail,
            "elapsed_seconds": (until - rec.first_checked_at).max(0.0),
            "duration_seconds": o.config().canary.window_secs,
            "stage": state.stage,
            "version": state.version,
            "run_id": state.run_id,
            "outcome": rec.verdict.outcome,
            "healthy": rec.verdict.outcome != Outcome::Failed,
            "detail": rec.verdict.detail,
            "criteria": f.get("criteria").cloned().unwrap_or(Value::Null),
            "canary_nodes": f.get("canary").cloned().unwrap_or(Value::Null),
            "baseline_nodes": f.get("baseline_nodes").cloned().unwrap_or(Value::Null),
            "verdict": f,
            "checks": rec.checks,
            "last_checked_at": rec.last_checked_at,
            "promoted": rec.promoted,
            "paused": state.paused,
            "selection": state.canary.as_ref().and_then(|c| c.selection.as_ref()), "canary": &state.canary,
        }))
    }

    fn capture(&self, a: args::CaptureBenchmark) -> ToolResult {
        check_len("version", &a.version, MAX_VERSION_CHARS)?;
        let git_sha = given(a.git_sha.as_deref());
        if let Some(sha) = git_sha {
            check_len("git_sha", sha, MAX_VERSION_CHARS)?;
        }
        let o = self.open(false)?;
        let (v, sha) = if !a.version.is_empty() {
            let v = fleetgate_core::Version::parse(&a.version)
                .map_err(|e| ToolError::invalid(format!("`version`: {e}")))?;
            let sha = o.resolve_version(&v, git_sha)?;
            (v, sha)
        } else {
            // HART detects the version when none is given: the run in progress, else the
            // version tag at the commit (HEAD by default), else `auto-<unix seconds>`.
            let state = o.status()?;
            match git_sha {
                None if state.is_active() => {
                    let v = fleetgate_core::Version::parse(&state.version).map_err(|e| {
                        ToolError::new(
                            ErrorKind::Failed,
                            format!("the run in progress has a version fleetgate cannot use: {e}"),
                        )
                    })?;
                    let sha = if state.git_sha.is_empty() {
                        o.resolve_version(&v, None)?
                    } else {
                        state.git_sha.clone()
                    };
                    (v, sha)
                }
                rev => o.version_at(rev.unwrap_or("HEAD"))?,
            }
        };
        let (snap, path) = match gates::capture_version(o.context(), &v, sha, a.tier.as_str()) {
            Ok(Ok(s)) => s,
            Ok(Err(verdict)) => return Err(ToolError::new(ErrorKind::Failed, verdict.detail)),
            Err(e) => return Err(e.into()),
        };
        let mut out = json!(snap);
        out["path"] = json!(path.display().to_string());
        // HART's key: the snapshot as one object.
        out["snapshot"] = json!(snap);
        Ok(out)
    }

    fn compare(&self, a: args::CompareBenchmarks) -> ToolResult {
        let o = self.open(false)?;
        let dir = &o.context().state_dir;
        let load = |field: &str, ver: &str| -> Result<bench_store::Snapshot, ToolError> {
            check_len(field, ver, MAX_VERSION_CHARS)?;
            let v = fleetgate_core::Version::parse(ver)
                .map_err(|e| ToolError::invalid(format!("`{field}`: {e}")))?;
            bench_store::load(dir, &v)
                ?
                .ok_or_else(|| ToolError::new(ErrorKind::NotFound, format!("no benchmark snapshot for {ver} (`{field}`); capture one with capture_benchmark(version={ver:?})")))
        };
        let old = load("old_version", &a.old_version)?;
        let new = load("new_version", &a.new_version)?;
        let report = fleetgate_core::bench::compare(
            &old.benchmarks,
            &new.benchmarks,
            &gates::policy(o.config()),
        );
        let reason = if report.passed() {
            "all metrics pass".to_owned()
        } else {
            format!("Regressions: {}", report.failure_summary())
        };
        Ok(json!({
            "safe": report.passed(),
            "reason": reason,
            "old_version": a.old_version,
            "new_version": a.new_version,
            "passed": report.passed(),
            "regressions": if report.passed() { Value::Null } else { json!(report.failure_summary()) },
            "report": report,
        }))
    }

    fn history(&self) -> ToolResult {
        let o = self.open(false)?;
        let all = bench_store::history(&o.context().state_dir)?;
        let snapshots: Vec<Value> = all
            .iter()
            .map(|snap| {
                let mut e = json!(snap);
                // HART's keys for each entry.
                e["timestamp"] = json!(snap.captured_at);
                e["benchmark_count"] = json!(snap.benchmarks.len());
                e
            })
            .collect();
        Ok(json!({"count": all.len(), "snapshots": snapshots}))
    }

    fn register(&self, a: args::RegisterBenchmark) -> ToolResult {
        let hart_form = a.run_command.is_some();
        let command = match (a.command, a.run_command) {
            (Some(_), Some(_)) => {
                return Err(ToolError::invalid(
                    "register_benchmark: give `command` (a list) or `run_command` (HART's string), not both",
                ));
            }
            (Some(c), None) => c,
            (None, Some(rc)) => bench_registry::split_run_command(&rc)
                .map_err(|e| ToolError::invalid(e.to_string()))?,
            (None, None) => {
                return Err(ToolError::invalid(
                    "register_benchmark: give `command` (program and arguments) or `run_command`; fleetgate never clones `repo_url`, so the benchmark must be a program in the release checkout",
                ));
            }
        };
        let results = match (a.results, a.metrics_file) {
            (Some(_), Some(_)) => {
                return Err(ToolError::invalid(
                    "register_benchmark: give `results` or `metrics_file` (HART's name), not both",
                ));
            }
            (Some(r), None) | (None, Some(r)) if !r.is_empty() => r,
            _ if hart_form => HART_METRICS_FILE.to_owned(),
            _ => {
                return Err(ToolError::invalid(
                    "register_benchmark: `results` is required: the results file the command writes, relative to the checkout",
                ));
            }
        };
        let tier = a
            .tier
            .unwrap_or(if hart_form { Tier::Heavy } else { Tier::All });
        let o = self.open(false)?;
        let def = BenchmarkDef {
            name: a.name,
            command,
            results,
            tier,
            repo_url: a.repo_url.filter(|u| !u.is_empty()),
            description: a.description,
            registered_at: fleetgate_runtime::now(),
            requires_gpu: a.requires_gpu,
            min_vram_gb: a.min_vram_gb,
        };
        let (def, replaced) =
            // The definition's own checks come back as `Invalid`: the caller's arguments.
            bench_registry::register(&o.context().state_dir, def)?;
        let hash = def.definition_hash();
        let allowed = o
            .config()
            .benchmarks
            .allowed
            .get(&def.name)
            .is_some_and(|pin| pin.eq_ignore_ascii_case(&hash));
        Ok(json!({
            // HART's keys: `installed` is true once the benchmark can run, i.e. once the
            // operator allowed this exact definition.
            "name": def.name,
            "installed": allowed,
            "benchmark": def,
            "definition_hash": hash,
            "replaced": replaced,
            "allowed": allowed,
            "note": if allowed {
                "recorded; the config allows this exact definition, so it runs in capture_benchmark and the BENCHMARK gate".to_owned()
            } else {
                format!("recorded only: nothing was run or fetched. It runs once the operator reviews it and adds `{} = \"{hash}\"` under [benchmarks.allowed] in the config", def.name)
            },
        }))
    }

    fn list(&self) -> ToolResult {
        let o = self.open(false)?;
        let listed = bench_registry::list(&o.context().state_dir, &o.config().benchmarks.allowed)?;
        Ok(json!({
            "count": listed.len(),
            "benchmarks": listed,
            "configured_command": o.config().stages.benchmark.command,
        }))
    }
}

fn progress_line(p: &Progress) -> String {
    match p {
        Progress::GateStarted { stage, version, .. } => {
            format!("{}: running the gate for {version}", stage.gate_name())
        }
        Progress::GateFinished {
            stage,
            verdict,
            now_at,
        } => format!(
            "{}: {:?} → {now_at}: {}",
            stage.gate_name(),
            verdict.outcome,
            verdict.detail.lines().next().unwrap_or("")
        ),
        Progress::Discarded { stage, reason } => {
            format!("{}: result discarded: {reason}", stage.gate_name())
        }
        Progress::Delivered { id, note } => format!("outbox {id}: {note}"),
        Progress::DeliveryFailed { id, error } => {
            format!("outbox {id}: not delivered ({error}); kept for the next advance")
        }
        Progress::Abandoned { id, reason } => {
            format!("outbox {id}: not sent and never can be ({reason}); recorded in failure_detail")
        }
        Progress::Waiting { stage, secs } => {
            format!("{}: pending, next check in {secs}s", stage.gate_name())
        }
        Progress::Paused { stage, by, reason } => format!(
            "{}: paused by {by}: {reason}; nothing is evaluated until resumed",
            stage.gate_name()
        ),
        Progress::Standby { detail } => format!("standby: {detail}"),
        Progress::TookOver { detail } => format!("lease: {detail}"),
    }
}

/// What HART's `get_status()` returns: its state file's fields (`started_at` is 0 when
/// idle, as HART writes it).
fn hart_pipeline(s: &PipelineState) -> Value {
    let mut v = json!({
        "stage": s.stage,
        "version": s.version,
        "git_sha": s.git_sha,
        "started_at": s.started_at.unwrap_or(0.0),
        "stage_history": s.stage_history,
    });
    for (k, val) in [
        ("code_hash", &s.code_hash),
        ("failure_detail", &s.failure_detail),
        ("rollback_reason", &s.rollback_reason),
    ] {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    v
}

/// HART variables that are set but never obeyed (`HEVOLVE_DEV_MODE`, …).
fn env_warnings() -> Vec<String> {
    fleetgate_core::config::hart_env_warnings(|k| std::env::var(k).ok())
}

/// An optional string argument: absent and `""` (HART's default) are the same.
fn given(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The fields every pipeline result carries.
fn summary(s: &PipelineState) -> Value {
    json!({
        "stage": s.stage,
        "version": s.version,
        "git_sha": s.git_sha,
        "run_id": s.run_id,
        "started_at": s.started_at,
        "code_hash": s.code_hash,
        "failure_detail": s.failure_detail,
        "rollback_reason": s.rollback_reason,
        "active": s.stage.is_gated(),
        "paused": s.paused,
        "channel": s.run_channel(),
    })
}

fn next_step(s: &PipelineState, detected: Option<&(String, String)>) -> String {
    if s.stage.is_gated() {
        return format!(
            "a run of {} is at `{}`: call advance_upgrade_pipeline (or rollback_upgrade on any degradation)",
            s.version, s.stage
        );
    }
    match detected {
        Some((v, _)) => format!(
            "new version {v} detected: capture_benchmark for the current version if you want a baseline, then start_upgrade(new_version={v:?})"
        ),
        None => "nothing to do: no new version detected".to_owned(),
    }
}

fn parse<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, ToolError> {
    if !args.is_object() {
        return Err(ToolError::invalid(format!(
            "{tool}: arguments must be a JSON object, got {}",
            kind(&args)
        )));
    }
    serde_json::from_value(args)
        .map_err(|e| ToolError::invalid(format!("{tool}: invalid arguments: {e}")))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_len(field: &str, v: &str, max: usize) -> Result<(), ToolError> {
    if v.chars().count() > max {
        Err(ToolError::invalid(format!(
            "`{field}` is {} characters long; at most {max} are accepted",
            v.chars().count()
        )))
    } else {
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
