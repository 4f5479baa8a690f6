//! Standalone node agent: `fleetgate-agent --config node.toml` (the same as
//! `fleetgate node run --config node.toml`). Used by the crash-recovery tests as a real
//! process that can be SIGKILLed. Logs go to stderr (`RUST_LOG` filters them). With
//! `self_update = true` it execs into a signed agent update (and back, if the update does
//! not confirm itself): run it under a service manager that restarts it.

use std::path::PathBuf;
use std::process::ExitCode;

/// Before exec'ing into a build that is being tried, start its watchdog (this binary,
/// `--self-update-watchdog`) and record its pid, so the new build reaps it.
fn start_watchdog(config: &fleetgate_agent::NodeConfig, binary: &std::path::Path) {
    use fleetgate_agent::selfupdate::{self, UpdateState};
    let Ok(Some(mut rec)) = selfupdate::load(&config.state_dir) else {
        return;
    };
    if rec.state != UpdateState::Trying || rec.binary != binary {
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    let limit = config.self_update_grace_secs + selfupdate::WATCHDOG_MARGIN_SECS;
    match std::process::Command::new(me)
        .arg("--self-update-watchdog")
        .arg(&config.state_dir)
        .arg(std::process::id().to_string())
        .arg(limit.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => {
            rec.watchdog_pid = Some(child.id());
            if let Err(e) = selfupdate::save(&config.state_dir, &rec) {
                eprintln!("warning: the watchdog's pid was not recorded: {e}");
            }
        }
        Err(e) => eprintln!("warning: no watchdog for the new agent build: {e}"),
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--self-update-watchdog") {
        let (Some(dir), Some(pid), Some(secs)) = (
            raw.get(2),
            raw.get(3).and_then(|p| p.parse().ok()),
            raw.get(4).and_then(|s| s.parse().ok()),
        ) else {
            eprintln!("usage: fleetgate-agent --self-update-watchdog STATE_DIR PID SECS");
            return ExitCode::from(2);
        };
        fleetgate_agent::selfupdate::watch(
            std::path::Path::new(dir),
            pid,
            std::time::Duration::from_secs(secs),
        );
        return ExitCode::SUCCESS;
    }
    let mut args = std::env::args().skip(1).peekable();
    // `fleetgate node run --config …` arguments work too: a node whose agent was started
    // that way keeps its arguments when it execs into an agent update.
    if args.peek().map(String::as_str) == Some("node") {
        args.next();
        if args.next().as_deref() != Some("run") {
            eprintln!("usage: fleetgate-agent --config node.toml");
            return ExitCode::from(2);
        }
    }
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(p)) => PathBuf::from(p),
        (Some(p), None) if !p.starts_with('-') => PathBuf::from(p),
        _ => {
            eprintln!("usage: fleetgate-agent --config node.toml");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match fleetgate_agent::NodeConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let watched = config.clone();
    match rt.block_on(fleetgate_agent::run_node_updating(config)) {
        Ok(fleetgate_agent::Exit::Stopped) => ExitCode::SUCCESS,
        Ok(fleetgate_agent::Exit::Exec(binary)) => {
            drop(rt);
            start_watchdog(&watched, &binary);
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new(&binary)
                .args(std::env::args_os().skip(1))
                .exec();
            // Still here: the exec failed. Exit non-zero; the service manager starts the
            // old binary again, which reverts an update that was being tried.
            eprintln!("error: failed to exec {}: {err}", binary.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
