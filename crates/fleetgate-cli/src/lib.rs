//! fleetgate-cli: the `fleetgate` command-line tool, as a library so the binary is a
//! three-line shim and tests can drive it.
//!
//! Where it sits: the top. It parses arguments (clap), loads the config, calls
//! `fleetgate-runtime`, and renders human or `--json` output. It is the only crate that
//! uses `anyhow`. Exit codes are documented in [`exit`] and in `fleetgate --help`.
//!
//! Testing: the end-to-end tests in the workspace's top-level `tests/` run the real
//! binary as a child process.

pub mod demo;
mod demo_app;
mod fleet_cmd;
mod outbox_cmd;
mod output;
mod serve_cmd;
pub mod trust_cmd;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_runtime::{Orchestrator, Progress, RuntimeError, bench_store, gates, load_config};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Documented process exit codes.
pub mod exit {
    /// Success (for `run`: the run completed).
    pub const OK: u8 = 0;
    /// An error: bad input, missing file, a refused transition.
    pub const ERROR: u8 = 1;
    /// Usage error (bad arguments).
    pub const USAGE: u8 = 2;
    /// The run ended `failed`.
    pub const RUN_FAILED: u8 = 3;
    /// The run ended `rolled_back`.
    pub const RUN_ROLLED_BACK: u8 = 4;
    /// Another orchestrator holds the state directory lock.
    pub const LOCKED: u8 = 5;
    /// The state file was corrupt (it was moved aside) or too new.
    pub const CORRUPT_STATE: u8 = 6;
}

const EXIT_HELP: &str = "\
EXIT CODES:
  0  success (`run`: the run completed; `advance`: the gate passed or is pending)
  1  error (bad input, missing file, refused transition)
  2  usage error
  3  the run ended `failed`
  4  the run ended `rolled_back`
  5  another orchestrator holds the state directory lock, or the pipeline lease of a
     shared fleet registry
  6  the state file is corrupt (moved aside) or newer than this fleetgate
  10-19  manifest verification failures (see `fleetgate manifest verify --help`)";

/// fleetgate — a staged, gated, crash-safe release pipeline: BUILD → TEST → AUDIT →
/// BENCHMARK → SIGN → CANARY → DEPLOY.
#[derive(Debug, Parser)]
#[command(name = "fleetgate", version, about, after_help = EXIT_HELP)]
pub struct Cli {
    /// Config file (default: $FLEETGATE_CONFIG, else ./fleetgate.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only add noise"
)]
enum Cmd {
    /// Write a commented example fleetgate.toml.
    Init {
        /// Where to write it.
        #[arg(long, default_value = "fleetgate.toml")]
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Start a run of VERSION (from `idle` or a finished run only).
    Start {
        /// Version (semver with optional leading `v`, or `auto-<unix seconds>`).
        version: String,
        /// Commit to release (any revision); default: the tag named VERSION.
        #[arg(long)]
        git_sha: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate the current stage's gate once and report the verdict.
    Advance {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Advance until the run ends, waiting between checks of pending gates.
    Run {
        /// Machine-readable output (the final state).
        #[arg(long)]
        json: bool,
    },
    /// Watch the repository: start and run a pipeline for every new version tag, or for a
    /// changed code hash at HEAD (as `auto-<unix>`). Runs until stopped.
    Watch {
        /// Check once, run what is found, and exit (for cron and tests).
        #[arg(long)]
        once: bool,
    },
    /// Show the pipeline state.
    Status {
        /// Machine-readable output (the state file, plus warnings).
        #[arg(long)]
        json: bool,
    },
    /// Roll back the run in progress (wins over a gate that is running).
    Rollback {
        /// Why (recorded in the state and sent with the rollback order).
        #[arg(long)]
        reason: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The outbox: effects (rollback orders) a run ordered that were not delivered yet —
    /// list them, deliver one again now, or give up on one with a reason.
    #[command(subcommand)]
    Outbox(outbox_cmd::OutboxCmd),
    /// Benchmark snapshots.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Generate an Ed25519 signing key (secret seed hex, mode 0600) and `PATH.pub`.
    Keygen(trust_cmd::KeygenArgs),
    /// Sign or verify release manifests.
    #[command(subcommand)]
    Manifest(trust_cmd::ManifestCmd),
    /// Trust files (keyrings): create, co-sign, rotate.
    #[command(subcommand)]
    Trust(trust_cmd::TrustCmd),
    /// The fleet registry: enroll, list, show, remove peers.
    #[command(subcommand)]
    Fleet(fleet_cmd::FleetCmd),
    /// The CANARY gate's latest health verdict: per criterion, the figures, threshold,
    /// statistic and decision.
    CanaryHealth {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The node agent: applies signed releases on this node, heartbeats.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The demo fleet's sample application (run by node agents; not for direct use).
    #[command(hide = true)]
    DemoApp(demo_app::DemoAppArgs),
    /// Run the demo: a sample application in a throwaway git repository, released
    /// through the pipeline with progress, a timeline and a summary.
    Demo(demo::DemoArgs),
    /// Serve the HTTP API until SIGTERM/SIGINT: the agent tools (/api/upgrades/…,
    /// /api/benchmarks…, /api/tools/NAME), node heartbeats and peers (/api/fleet/…) and
    /// the OpenAPI description (/api/openapi.json). Refuses to start without an API token.
    Serve(serve_cmd::ServeArgs),
    /// Serve the ten agent tools over MCP on stdio (for AI agents: Claude, Cursor, …).
    /// stdout carries only protocol messages; logs go to stderr.
    Mcp,
    /// The agent tools without MCP: export their definitions, list them, call one.
    #[command(subcommand)]
    Tools(ToolsCmd),
    /// Show the effective configuration, or the environment variables that override it.
    Config {
        /// List the environment variables instead.
        #[arg(long)]
        env: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Run the node agent until SIGTERM/SIGINT (see crates/fleetgate-agent/node.example.toml).
    Run {
        /// The node's config file.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ToolsCmd {
    /// Print the tool definitions as function-calling JSON.
    Export {
        /// `openai` (Chat Completions/Responses `tools`), `anthropic` (Messages `tools`), or
        /// `json-schema` (one argument schema per tool).
        #[arg(long, value_parser = ["openai", "anthropic", "json-schema"], default_value = "json-schema")]
        format: String,
    },
    /// List the tools with a one-line description.
    List,
    /// Call one tool and print its JSON result (exit 0 when `success` is true, else 1).
    Call {
        /// Tool name (see `fleetgate tools list`).
        name: String,
        /// Arguments as a JSON object, e.g. '{"new_version": "v2.0.0"}'.
        #[arg(long, default_value = "{}")]
        args: String,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Run the benchmark command for VERSION and store the snapshot.
    Capture {
        /// Version to label the snapshot with.
        version: String,
        /// Commit to measure (default: the tag named VERSION).
        #[arg(long)]
        git_sha: Option<String>,
        /// Tier label (fast, heavy, all).
        #[arg(long, default_value = "all")]
        tier: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Compare two stored snapshots (direction-aware, within tolerance).
    Compare(CompareArgs),
    /// List stored snapshots.
    History {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Record a benchmark definition (nothing is run). It runs in `bench capture` and the
    /// BENCHMARK gate once `[benchmarks.allowed]` pins its definition hash.
    Register {
        /// Name (`[A-Za-z0-9._-]`, at most 64 characters).
        name: String,
        /// Results file it writes (github-action-benchmark JSON), relative to the checkout.
        #[arg(long)]
        results: String,
        /// `fast`, `heavy` or `all`.
        #[arg(long, default_value = "all", value_parser = ["fast", "heavy", "all"])]
        tier: String,
        /// Where it comes from (recorded for review; never fetched).
        #[arg(long)]
        repo_url: Option<String>,
        /// What it measures.
        #[arg(long)]
        description: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The program and its arguments (run without a shell), after `--`.
        #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]")]
        command: Vec<String>,
    },
    /// List registered benchmarks, their definition hashes and whether each is allowed.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Baseline version.
    old_version: String,
    /// New version.
    new_version: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error_code(&e))
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn error_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(RuntimeError::Fenced(_)) = cause.downcast_ref::<RuntimeError>() {
            return exit::LOCKED;
        }
        let store = cause
            .downcast_ref::<RuntimeError>()
            .and_then(|r| {
                if let RuntimeError::Store(s) = r {
                    Some(s)
                } else {
                    None
                }
            })
            .or_else(|| cause.downcast_ref::<fleetgate_store::StoreError>());
        match store {
            Some(fleetgate_store::StoreError::Locked { .. }) => return exit::LOCKED,
            Some(
                fleetgate_store::StoreError::Corrupt { .. }
                | fleetgate_store::StoreError::TooNew { .. },
            ) => {
                return exit::CORRUPT_STATE;
            }
            _ => {}
        }
    }
    exit::ERROR
}

fn terminal_code(stage: Stage) -> u8 {
    match stage {
        Stage::Failed => exit::RUN_FAILED,
        Stage::RolledBack => exit::RUN_ROLLED_BACK,
        _ => exit::OK,
    }
}

fn open(cli_config: Option<&Path>, exclusive: bool) -> anyhow::Result<Orchestrator> {
    let (cfg, base) = load_config(cli_config)?;
    Ok(if exclusive {
        Orchestrator::open(cfg, &base)?
    } else {
        Orchestrator::open_shared(cfg, &base)?
    })
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg_path = cli.config.as_deref();
    match cli.command {
        Cmd::Init { path, force } => {
            if path.exists() && !force {
                anyhow::bail!(
                    "{} already exists (pass --force to overwrite)",
                    path.display()
                );
            }
            std::fs::write(&path, include_str!("init_template.toml"))
                .with_context(|| format!("failed to write {}", path.display()))?;
            println!(
                "wrote {} — edit the stage commands, then `fleetgate start <version>`",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config { env } => {
            if env {
                for (key, var) in fleetgate_core::config::env_overrides() {
                    println!("{var:<48} {key}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (cfg, base) = load_config(cfg_path)?;
            println!(
                "# effective configuration (paths relative to {})",
                base.display()
            );
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start {
            version,
            git_sha,
            json,
        } => {
            let o = open(cfg_path, false)?;
            let state = o.start(&version, git_sha.as_deref())?;
            if json {
                print_json(&state)?;
            } else {
                println!(
                    "started {} at {} (run {}); next: `fleetgate run` (or `fleetgate advance` one gate at a time)",
                    state.version,
                    short(&state.git_sha),
                    state.run_id.as_deref().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Advance { json } => {
            let o = open(cfg_path, true)?;
            let mut show = output::progress_printer(json);
            let report = o.advance(&mut show)?;
            if json {
                print_json(&serde_json::json!({
                    "stage": report.stage, "verdict": report.verdict, "committed": report.committed,
                    "state": report.state,
                }))?;
            }
            Ok(ExitCode::from(if report.committed {
                terminal_code(report.state.stage)
            } else {
                exit::OK
            }))
        }
        Cmd::Run { json } => {
            let o = open(cfg_path, true)?;
            let mut show = output::progress_printer(json);
            let state = o.run(&mut show)?;
            if json {
                print_json(&state)?;
            } else {
                output::print_status(&state, &o.store().quarantined());
            }
            Ok(ExitCode::from(terminal_code(state.stage)))
        }
        Cmd::Watch { once } => watch(cfg_path, once),
        Cmd::Status { json } => {
            let o = open(cfg_path, false)?;
            let state = o.status()?;
            let quarantined = o.store().quarantined();
            if json {
                let mut v = serde_json::to_value(&state)?;
                v["warnings"] = serde_json::json!(
                    quarantined
                        .iter()
                        .map(|p| format!("a corrupt state file was moved aside to {}", p.display()))
                        .collect::<Vec<_>>()
                );
                v["skipped_gates"] = serde_json::json!(state.skipped_gates());
                print_json(&v)?;
            } else {
                output::print_status(&state, &quarantined);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rollback { reason, json } => {
            let o = open(cfg_path, false)?;
            let state = o.rollback(&reason)?;
            if json {
                print_json(&state)?;
            } else {
                println!(
                    "rolled back {} (run {}): {}",
                    state.version,
                    state.run_id.as_deref().unwrap_or("?"),
                    reason
                );
                if !state.outbox.is_empty() {
                    println!(
                        "a rollback order for the nodes is queued; `fleetgate advance` delivers it (`fleetgate outbox list` shows it)"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Outbox(cmd) => outbox_cmd::run(cfg_path, cmd),
        Cmd::Bench(cmd) => bench(cfg_path, cmd),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Fleet(cmd) => fleet_cmd::run(&open(cfg_path, false)?, cmd),
        Cmd::CanaryHealth { json } => fleet_cmd::canary_health(&open(cfg_path, false)?, json),
        Cmd::Node(NodeCmd::Run { config }) => {
            let cfg = fleetgate_agent::NodeConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(fleetgate_agent::run_node(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::DemoApp(args) => demo_app::run(args),
        Cmd::Mcp => {
            let toolbox = fleetgate_tools::Toolbox::new(cli.config.clone());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(fleetgate_tools::mcp::McpServer::new(toolbox).serve_stdio())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tools(cmd) => tools(cli.config.clone(), cmd),
        Cmd::Serve(args) => serve_cmd::run(cfg_path, args),
        Cmd::Keygen(args) => trust_cmd::run_keygen(args),
        Cmd::Manifest(cmd) => trust_cmd::run_manifest(cmd),
        Cmd::Trust(cmd) => trust_cmd::run_trust(cmd),
    }
}

fn tools(config: Option<PathBuf>, cmd: ToolsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ToolsCmd::Export { format } => {
            let f = fleetgate_tools::export::Format::parse(&format)
                .with_context(|| format!("unknown format {format:?}"))?;
            print_json(&fleetgate_tools::export::export(f))?;
            Ok(ExitCode::SUCCESS)
        }
        ToolsCmd::List => {
            for d in fleetgate_tools::definitions() {
                let first = d.description.split(". ").next().unwrap_or(d.description);
                println!("{:<26} {}", d.name, first.trim_end_matches('.'));
            }
            Ok(ExitCode::SUCCESS)
        }
        ToolsCmd::Call { name, args } => {
            let args: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| format!("--args is not JSON: {args}"))?;
            let result = fleetgate_tools::Toolbox::new(config).call(&name, args);
            print_json(&result)?;
            Ok(ExitCode::from(if result["success"] == true {
                exit::OK
            } else {
                exit::ERROR
            }))
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn bench(cfg_path: Option<&Path>, cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    let toolbox = || fleetgate_tools::Toolbox::new(cfg_path.map(Path::to_owned));
    let o = open(cfg_path, false)?;
    let state_dir = o.context().state_dir.clone();
    match cmd {
        BenchCmd::Register {
            name,
            results,
            tier,
            repo_url,
            description,
            json,
            command,
        } => {
            let r = toolbox().call(
                "register_benchmark",
                serde_json::json!({"name": name, "command": command, "results": results,
                    "tier": tier, "repo_url": repo_url, "description": description}),
            );
            if r["success"] != true {
                anyhow::bail!(
                    "{}",
                    r["error"].as_str().unwrap_or("register_benchmark failed")
                );
            }
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "registered {} (definition_hash {})\n{}",
                    r["benchmark"]["name"].as_str().unwrap_or("?"),
                    r["definition_hash"].as_str().unwrap_or("?"),
                    r["note"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::List { json } => {
            let r = toolbox().call("list_benchmarks", serde_json::json!({}));
            if r["success"] != true {
                anyhow::bail!(
                    "{}",
                    r["error"].as_str().unwrap_or("list_benchmarks failed")
                );
            }
            if json {
                print_json(&r)?;
                return Ok(ExitCode::SUCCESS);
            }
            let empty = Vec::new();
            let list = r["benchmarks"].as_array().unwrap_or(&empty);
            if list.is_empty() {
                println!(
                    "no registered benchmarks (`fleetgate bench register NAME --results PATH -- PROGRAM ARGS…`)"
                );
            }
            for b in list {
                println!(
                    "{:<20} {:<6} {}  {}",
                    b["name"].as_str().unwrap_or("?"),
                    b["tier"].as_str().unwrap_or("?"),
                    b["definition_hash"].as_str().unwrap_or("?"),
                    if b["allowed"] == true {
                        "allowed".to_owned()
                    } else {
                        format!(
                            "NOT allowed: {}",
                            b["not_allowed_because"].as_str().unwrap_or("")
                        )
                    }
                );
                println!("{:<20} runs: {}", "", b["command"]);
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Capture {
            version,
            git_sha,
            tier,
            json,
        } => {
            let v = fleetgate_core::Version::parse(&version)?;
            let sha = o.resolve_version(&v, git_sha.as_deref())?;
            let mut st = PipelineState::idle();
            st.version = v.to_string();
            st.git_sha = sha;
            st.run_id = Some(format!("bench-{}", v.as_str()));
            match gates::capture(o.context(), &st, &tier)? {
                Ok(snap) => {
                    let path = bench_store::save(&state_dir, &snap)?;
                    if json {
                        print_json(&snap)?;
                    } else {
                        println!(
                            "stored {} benchmark(s) for {} in {}",
                            snap.benchmarks.len(),
                            v,
                            path.display()
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(verdict) => anyhow::bail!("{}", verdict.detail),
            }
        }
        BenchCmd::Compare(a) => {
            let load = |v: &str| -> anyhow::Result<bench_store::Snapshot> {
                let ver = fleetgate_core::Version::parse(v)?;
                bench_store::load(&state_dir, &ver)?
                    .with_context(|| format!("no benchmark snapshot for {v} (capture one with `fleetgate bench capture {v}`)"))
            };
            let (old, new) = (load(&a.old_version)?, load(&a.new_version)?);
            let report = fleetgate_core::bench::compare(
                &old.benchmarks,
                &new.benchmarks,
                &gates::policy(o.config()),
            );
            if a.json {
                print_json(
                    &serde_json::json!({"old_version": a.old_version, "new_version": a.new_version,
                    "passed": report.passed(), "report": report}),
                )?;
            } else {
                output::print_comparison(&a.old_version, &a.new_version, &report);
            }
            Ok(ExitCode::from(if report.passed() {
                exit::OK
            } else {
                exit::ERROR
            }))
        }
        BenchCmd::History { json } => {
            let all = bench_store::history(&state_dir)?;
            if json {
                print_json(&all)?;
            } else if all.is_empty() {
                println!(
                    "no benchmark snapshots in {}",
                    bench_store::dir(&state_dir).display()
                );
            } else {
                for s in &all {
                    println!(
                        "{:<20} {:<12} {} benchmark(s)  captured {}",
                        s.version,
                        short(&s.git_sha),
                        s.benchmarks.len(),
                        output::when(s.captured_at)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn watch(cfg_path: Option<&Path>, once: bool) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, true)?;
    let interval = std::time::Duration::from_secs(
        u64::try_from(o.config().run.watch_interval_secs).unwrap_or(60),
    );
    let mut show = output::progress_printer(false);
    let mut last_code = exit::OK;
    loop {
        let state = o.status()?;
        if state.stage.is_gated() || !state.outbox.is_empty() {
            eprintln!(
                "watch: resuming the run of {} at `{}`",
                state.version, state.stage
            );
            let end = o.run(&mut show)?;
            last_code = terminal_code(end.stage);
        } else if let Some((version, sha)) = o.detect_new_version(&state)? {
            eprintln!(
                "watch: new version {version} at {} — starting the pipeline",
                short(&sha)
            );
            o.start(&version, Some(&sha))?;
            let end = o.run(&mut show)?;
            eprintln!("watch: {version} ended `{}`", end.stage);
            last_code = terminal_code(end.stage);
        } else if once {
            eprintln!("watch: no new version");
        }
        if once {
            return Ok(ExitCode::from(last_code));
        }
        std::thread::sleep(interval);
    }
}

#[doc(hidden)]
pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Pending => "pending",
        Outcome::Failed => "FAILED",
    }
}

#[doc(hidden)]
pub fn progress_line(p: &Progress) -> String {
    output::progress_line(p)
}
