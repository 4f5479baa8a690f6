//! `fleetgate bench capture|compare|history|register|list`: benchmark snapshots and
//! registered benchmark definitions.

use crate::{exit, open, output, print_json, short};
use anyhow::Context;
use clap::{Args, Subcommand};
use fleetgate_runtime::{bench_store, gates};
use std::path::Path;
use std::process::ExitCode;

/// `fleetgate bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
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
pub struct CompareArgs {
    /// Baseline version.
    old_version: String,
    /// New version.
    new_version: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Run one `bench` subcommand.
pub fn run(cfg_path: Option<&Path>, cmd: BenchCmd) -> anyhow::Result<ExitCode> {
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
            match gates::capture_version(o.context(), &v, sha, &tier)? {
                Ok((snap, path)) => {
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
