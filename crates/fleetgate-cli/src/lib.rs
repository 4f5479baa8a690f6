//! fleetgate-cli: the `fleetgate` command-line tool, as a library so the binary is a
//! three-line shim and tests can drive it.
//!
//! This file holds the argument grammar, the dispatch and the exit codes; the command
//! handlers live in one file per job: `pipeline_cmd` (start, advance, run, watch, status,
//! rollback), `outbox_cmd`, `bench_cmd`, `fleet_cmd`, `trust_cmd`, `tools_cmd`,
//! `serve_cmd`, `tls_cmd` (HTTPS for the servers, `fleet ca`), `provenance_cmd`,
//! `signing_cmd`, `demo`. Errors under `--json` are JSON on stdout (`print_error_json`).
//!
//! Where it sits: the top. It parses arguments (clap), loads the config, calls
//! `fleetgate-runtime`, and renders human or `--json` output. It is the only crate that
//! uses `anyhow`. Exit codes are documented in [`exit`] and in `fleetgate --help`.
//!
//! Testing: the end-to-end tests in the workspace's top-level `tests/` run the real
//! binary as a child process.

mod approve_cmd;
mod artifacts_cmd;
mod bench_cmd;
#[cfg(test)]
mod config_key_tests;
pub mod demo;
mod demo_app;
mod fleet_cmd;
mod memory;
mod outbox_cmd;
mod output;
mod pipeline_cmd;
mod provenance_cmd;
mod serve_cmd;
mod signing_cmd;
mod simulate_cmd;
mod tls_cmd;
mod tools_cmd;
pub mod trust_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetgate_core::{Outcome, Stage};
use fleetgate_runtime::{Orchestrator, Progress, RuntimeError, load_config, sandbox};
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
        /// The release channel whose nodes the run updates (canary, steps, DEPLOY);
        /// default `stable`, every node's channel unless set (`fleetgate fleet channel`).
        #[arg(long)]
        channel: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Take a release that completed on one channel to another (e.g. `beta` → `stable`):
    /// starts a run of the same version and commit on the nodes of `--to` (every gate
    /// runs again, the canary and steps judge it on that channel's nodes).
    PromoteChannel {
        /// The version: the release completed last on another channel.
        version: String,
        /// The channel to take it to.
        #[arg(long)]
        to: String,
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
    /// Hold the run at its current stage: nothing is evaluated or sent (a running
    /// `fleetgate run` waits) until `fleetgate resume`.
    Pause {
        /// Why (recorded in the history with who paused).
        #[arg(long, default_value = "")]
        reason: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Let a paused run go on (the paused time does not count against a canary window or
    /// the deploy deadline).
    Resume {
        /// Why (recorded in the history).
        #[arg(long, default_value = "")]
        reason: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve a stage of `[approval] before` for the current run with a signed approval
    /// (the stage's gate waits for `[approval] required` distinct approvers). Also
    /// `--request` / `--sign` / `--submit` to sign where the key is.
    Approve(approve_cmd::ApproveArgs),
    /// End the open canary window now and move on to DEPLOY (in a phased DEPLOY: end the
    /// open step's window and start the next step), recorded as passed by the operator
    /// (never as a judged pass). The way out of a canary or step held as inconclusive.
    Promote {
        /// Why (recorded in the history and the canary gate's result).
        #[arg(long, default_value = "")]
        reason: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Abort the run: the same as `fleetgate rollback`.
    Abort {
        /// Why (recorded in the state and sent with the rollback order).
        #[arg(long, default_value = "aborted by an operator (no reason given)")]
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
    Bench(bench_cmd::BenchCmd),
    /// Generate an Ed25519 signing key (secret seed hex, mode 0600) and `PATH.pub`.
    Keygen(trust_cmd::KeygenArgs),
    /// Sign or verify release manifests; external signing (sign-request, submit).
    #[command(subcommand)]
    Manifest(ManifestTop),
    /// Trust files (keyrings): create, co-sign, rotate.
    #[command(subcommand)]
    Trust(trust_cmd::TrustCmd),
    /// The run's built artifacts: export them for the static server or object store of
    /// `[artifacts] base_url`.
    #[command(subcommand)]
    Artifacts(artifacts_cmd::ArtifactsCmd),
    /// Release provenance (in-toto Statement v1, SLSA Provenance v1) that SIGN writes and
    /// the signed manifest names by digest: show it, or verify it against a manifest.
    #[command(subcommand)]
    Provenance(provenance_cmd::ProvenanceCmd),
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
    /// Serve the agent tools over MCP on stdio (for AI agents: Claude, Cursor, …).
    /// stdout carries only protocol messages; logs go to stderr.
    Mcp,
    /// The agent tools without MCP: export their definitions, list them, call one.
    #[command(subcommand)]
    Tools(tools_cmd::ToolsCmd),
    /// Print a shell completion script: `fleetgate completions bash >
    /// /etc/bash_completion.d/fleetgate` (zsh: a file `_fleetgate` on `$fpath`; fish:
    /// `~/.config/fish/completions/fleetgate.fish`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of fleetgate: `fleetgate man | man -l -`; with
    /// `--out-dir DIR`, write one page per command (`fleetgate.1`, `fleetgate-start.1`, …).
    Man {
        /// Write every page into this directory instead of printing the top one.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Show the effective configuration, or the environment variables that override it.
    Config {
        /// List the environment variables instead.
        #[arg(long)]
        env: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `fleetgate manifest …`: signing and verifying, and the external-signing pair.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing buys nothing"
)]
pub enum ManifestTop {
    /// Sign and verify.
    #[command(flatten)]
    Trust(trust_cmd::ManifestCmd),
    /// External signing.
    #[command(flatten)]
    External(signing_cmd::ExternalCmd),
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // The gate isolation helper (a gate command about to run): nothing else happens in
    // this process, and it holds no secret.
    let mut args = std::env::args_os().skip(1);
    if let Some(stage) = args.next().and_then(|a| a.into_string().ok())
        && (stage == sandbox::HELPER_ARG || stage == sandbox::INIT_ARG)
    {
        let rest: Vec<std::ffi::OsString> = args.collect();
        return sandbox::helper_main(&stage, &rest);
    }
    // Before anything else (one thread): the secret variables leave the environment
    // (and /proc/self/environ) for a zeroizing vault, the process becomes non-dumpable,
    // and gate commands are run through this binary's helper.
    sandbox::harden_process(fleetgate_runtime::exec::SECRET_ENV);
    default_sigpipe();
    memory::fixed_mmap_threshold();
    if let Ok(exe) = std::env::current_exe() {
        sandbox::set_helper(exe);
    }
    let json = wants_json(std::env::args_os().skip(1));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version: not an error.
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            if json {
                print_error_json(first_line(&e.to_string()), "usage", exit::USAGE);
            } else {
                let _ = e.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = error_code(&e);
            // The whole chain, each cause once (an error that quotes its source in its
            // message would otherwise print it twice).
            let text = fleetgate_core::error_chain(e.as_ref());
            if json {
                print_error_json(&text, error_kind(&e), code);
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(code)
        }
    }
}

/// `--json` anywhere among the arguments (before a `--`): errors are then printed as
/// JSON on stdout too, so a machine reading stdout never gets plain text.
fn wants_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(|l| l.trim_start_matches("error: ").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// An error under `--json`: `{"success": false, "error", "error_kind", "exit_code"}` on
/// stdout (the same `error_kind` names as the tools and the HTTP API), and the plain line
/// on stderr for a person watching.
fn print_error_json(error: &str, kind: &str, code: u8) {
    let v = serde_json::json!({
        "success": false,
        "error": error,
        "error_kind": kind,
        "exit_code": code,
    });
    println!("{v}");
    eprintln!("error: {error}");
}

/// The `error_kind` of a command's error: the tools' names (`locked`, `corrupt_state`,
/// `refused`, `invalid_arguments`, `config`, `not_found`, `failed`).
fn error_kind(e: &anyhow::Error) -> &'static str {
    use fleetgate_tools::ErrorKind;
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<RuntimeError>() {
            return ErrorKind::of(r).as_str();
        }
        if let Some(s) = cause.downcast_ref::<fleetgate_store::StoreError>() {
            return match s {
                fleetgate_store::StoreError::Locked { .. } => ErrorKind::Locked.as_str(),
                fleetgate_store::StoreError::Corrupt { .. }
                | fleetgate_store::StoreError::TooNew { .. } => ErrorKind::CorruptState.as_str(),
                _ => ErrorKind::Failed.as_str(),
            };
        }
        if cause
            .downcast_ref::<fleetgate_core::TransitionError>()
            .is_some()
        {
            return ErrorKind::Refused.as_str();
        }
        if cause
            .downcast_ref::<fleetgate_core::VersionError>()
            .is_some()
        {
            return ErrorKind::InvalidArguments.as_str();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return ErrorKind::NotFound.as_str();
        }
    }
    ErrorKind::Failed.as_str()
}

/// `fleetgate status | head -2`: a closed pipe ends the process quietly, as it does any
/// Unix tool, instead of a panic in `println!` (Rust ignores SIGPIPE by default). Every
/// state change is written atomically before its effect, so being ended there is as safe
/// as a kill.
fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in `main`, while the process has one thread, and it only
    // restores the default disposition (no handler function runs).
    #[allow(unsafe_code)]
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The log filter: `FLEETGATE_LOG`, else the conventional `RUST_LOG`, else `warn`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn error_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause
            .downcast_ref::<RuntimeError>()
            .is_some_and(RuntimeError::is_fenced)
        {
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
    if exclusive {
        warn_if_isolation_degraded();
    }
    Ok(if exclusive {
        Orchestrator::open(cfg, &base)?
    } else {
        Orchestrator::open_shared(cfg, &base)?
    })
}

/// Said loudly once per process, before any gate runs: gates may reach the secrets.
pub(crate) fn warn_if_isolation_degraded() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let iso = sandbox::isolation();
        if iso.level != "full" {
            eprintln!("warning: {}", iso.line());
        }
    });
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The key path `init`'s template sets (`[signing] key_file`).
const INIT_KEY_PATH: &str = "keys/release.key";

/// Adds `/keys/release.key` to `.gitignore` (created if missing; nothing written when a
/// line already ignores it).
fn ignore_release_key(path: &Path) -> anyhow::Result<()> {
    let rule = format!("/{INIT_KEY_PATH}");
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    if text
        .lines()
        .any(|l| l.trim() == rule || l.trim() == INIT_KEY_PATH)
    {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# fleetgate: the release signing key must never be committed\n");
    text.push_str(&rule);
    text.push('\n');
    fleetgate_store::write_atomic(path, text.as_bytes(), Some(0o644))?;
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
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let ignore = dir.unwrap_or(Path::new(".")).join(".gitignore");
            ignore_release_key(&ignore)
                .with_context(|| format!("failed to write {}", ignore.display()))?;
            println!(
                "wrote {} — edit the stage commands, then `fleetgate start <version>`",
                path.display()
            );
            println!(
                "{} ignores {INIT_KEY_PATH}: the release key never goes into git (SIGN refuses a tracked key)",
                ignore.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "fleetgate", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { out_dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("failed to create {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("failed to write pages into {}", dir.display()))?;
                    println!("wrote the manual pages into {}", dir.display());
                }
                None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config { env, json } => {
            if env && json {
                let overrides: Vec<_> = fleetgate_core::config::env_overrides()
                    .into_iter()
                    .map(|(key, var)| serde_json::json!({"variable": var, "key": key}))
                    .collect();
                let other: Vec<_> = fleetgate_core::config::other_env()
                    .into_iter()
                    .map(|(var, what)| serde_json::json!({"variable": var, "meaning": what}))
                    .collect();
                print_json(&serde_json::json!({"overrides": overrides, "other": other}))?;
                return Ok(ExitCode::SUCCESS);
            }
            if env {
                for (key, var) in fleetgate_core::config::env_overrides() {
                    println!("{var:<48} {key}");
                }
                println!();
                println!("# read outside the config file (fleetgate's own names first)");
                for (var, what) in fleetgate_core::config::other_env() {
                    println!("{var:<48} {what}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (cfg, base) = load_config(cfg_path)?;
            if json {
                print_json(&serde_json::json!({"base_dir": base, "config": cfg}))?;
                return Ok(ExitCode::SUCCESS);
            }
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
            channel,
            json,
        } => pipeline_cmd::start(
            cfg_path,
            &version,
            git_sha.as_deref(),
            channel.as_deref(),
            json,
        ),
        Cmd::PromoteChannel { version, to, json } => {
            pipeline_cmd::promote_channel(cfg_path, &version, &to, json)
        }
        Cmd::Advance { json } => pipeline_cmd::advance(cfg_path, json),
        Cmd::Run { json } => pipeline_cmd::run(cfg_path, json),
        Cmd::Watch { once } => pipeline_cmd::watch(cfg_path, once),
        Cmd::Status { json } => pipeline_cmd::status(cfg_path, json),
        Cmd::Rollback { reason, json } | Cmd::Abort { reason, json } => {
            pipeline_cmd::rollback(cfg_path, &reason, json)
        }
        Cmd::Pause { reason, json } => pipeline_cmd::control(cfg_path, "pause", &reason, json),
        Cmd::Resume { reason, json } => pipeline_cmd::control(cfg_path, "resume", &reason, json),
        Cmd::Approve(a) => approve_cmd::run(cfg_path, a),
        Cmd::Promote { reason, json } => pipeline_cmd::control(cfg_path, "promote", &reason, json),
        Cmd::Outbox(cmd) => outbox_cmd::run(cfg_path, cmd),
        Cmd::Bench(cmd) => {
            warn_if_isolation_degraded();
            bench_cmd::run(cfg_path, cmd)
        }
        Cmd::Demo(args) => {
            warn_if_isolation_degraded();
            demo::run(args)
        }
        // Provisioning sends releases to nodes: it excludes `run`/`watch` like they do
        // each other (the orchestrator lock); the other fleet commands only read or enroll.
        Cmd::Fleet(fleet_cmd::FleetCmd::Ca(cmd)) => tls_cmd::run_ca(cmd),
        Cmd::Fleet(cmd) => {
            let exclusive = matches!(cmd, fleet_cmd::FleetCmd::Provision { .. });
            fleet_cmd::run(&open(cfg_path, exclusive)?, cmd)
        }
        Cmd::CanaryHealth { json } => fleet_cmd::canary_health(&open(cfg_path, false)?, json),
        Cmd::Node(NodeCmd::Run { config }) => {
            let cfg = fleetgate_agent::NodeConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            match rt.block_on(fleetgate_agent::run_node_updating(cfg))? {
                fleetgate_agent::Exit::Stopped => Ok(ExitCode::SUCCESS),
                fleetgate_agent::Exit::Exec(binary) => {
                    // An agent update (or a return from one): become that build, which
                    // takes `--config` like `fleetgate-agent`.
                    drop(rt);
                    use std::os::unix::process::CommandExt as _;
                    let config = std::fs::canonicalize(&config).unwrap_or(config);
                    let err = std::process::Command::new(&binary)
                        .arg("--config")
                        .arg(&config)
                        .exec();
                    anyhow::bail!("failed to exec the agent build {}: {err}", binary.display())
                }
            }
        }
        Cmd::DemoApp(args) => demo_app::run(args),
        Cmd::Mcp => {
            warn_if_isolation_degraded();
            let toolbox = fleetgate_tools::Toolbox::new(cli.config.clone());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(fleetgate_tools::mcp::McpServer::new(toolbox).serve_stdio())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tools(cmd) => {
            warn_if_isolation_degraded();
            tools_cmd::run(cli.config.clone(), cmd)
        }
        Cmd::Serve(args) => {
            warn_if_isolation_degraded();
            serve_cmd::run(cfg_path, args)
        }
        Cmd::Keygen(args) => trust_cmd::run_keygen(args),
        Cmd::Manifest(ManifestTop::Trust(cmd)) => trust_cmd::run_manifest(cmd),
        Cmd::Manifest(ManifestTop::External(cmd)) => signing_cmd::run(cfg_path, cmd),
        Cmd::Trust(cmd) => trust_cmd::run_trust(cmd),
        Cmd::Provenance(cmd) => provenance_cmd::run(cfg_path, cmd),
        Cmd::Artifacts(cmd) => artifacts_cmd::run(cfg_path, cmd),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
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
