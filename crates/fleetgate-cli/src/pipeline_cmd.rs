//! The pipeline commands: `start`, `advance`, `run`, `watch`, `status`, `rollback`
//! (`abort`), `pause`, `resume`, `promote`.

use crate::{exit, open, output, print_json, short, terminal_code};
use std::path::Path;
use std::process::ExitCode;

/// `fleetgate start VERSION [--git-sha REV]`.
pub fn start(
    cfg_path: Option<&Path>,
    version: &str,
    git_sha: Option<&str>,
    channel: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, false)?;
    let state = o.start_on(version, git_sha, channel)?;
    started(&state, json)
}

/// `fleetgate promote-channel VERSION --to CHANNEL`.
pub fn promote_channel(
    cfg_path: Option<&Path>,
    version: &str,
    to: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, false)?;
    let (state, from) = o.promote_channel(version, to)?;
    if !json {
        println!(
            "promoting {version} ({}) from `{from}` to `{to}`",
            short(&state.git_sha)
        );
    }
    started(&state, json)
}

fn started(state: &fleetgate_core::PipelineState, json: bool) -> anyhow::Result<ExitCode> {
    let warnings = hart_env_warnings();
    if json {
        let mut v = serde_json::to_value(state)?;
        v["warnings"] = serde_json::json!(warnings);
        print_json(&v)?;
    } else {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "started {} at {} on channel `{}` (run {}); next: `fleetgate run` (or `fleetgate advance` one gate at a time)",
            state.version,
            short(&state.git_sha),
            state.run_channel(),
            state.run_id.as_deref().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fleetgate advance`.
pub fn advance(cfg_path: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
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

/// `fleetgate run`.
pub fn run(cfg_path: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, true)?;
    let mut printer = output::progress_printer(json);
    let mut show = |p: fleetgate_runtime::Progress| {
        // Between two passes: what the last one read is freed.
        if matches!(p, fleetgate_runtime::Progress::Waiting { .. }) {
            crate::memory::release_free_memory();
        }
        printer(p);
    };
    let state = o.run(&mut show)?;
    if json {
        print_json(&state)?;
    } else {
        output::print_status(&state, &o.store().quarantined());
    }
    Ok(ExitCode::from(terminal_code(state.stage)))
}

/// `fleetgate status`.
pub fn status(cfg_path: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let (o, unreachable) = open_for_status(cfg_path)?;
    let state = o.status()?;
    let quarantined = o.store().quarantined();
    // High availability: where the state lives and who holds the pipeline lease.
    let lease = if let Some((_, e)) = &unreachable {
        Some(Err(e.clone()))
    } else if o.store().is_shared() {
        Some(o.lease().map_err(|e| e.to_string()))
    } else {
        None
    };
    let shared = match &unreachable {
        Some((store, _)) => Some(store.clone()),
        None => o.store().shared_description(),
    };
    let mirror = match &unreachable {
        Some((store, e)) => Some(format!(
            "the shared run state ({store}) is unreachable ({e}): this is the local mirror, possibly behind"
        )),
        None => o.store().mirror_note(),
    };
    if json {
        let mut v = serde_json::to_value(&state)?;
        if let Some(lease) = &lease {
            v["state_store"] = serde_json::json!({
                "shared": shared,
                "mirror_only": mirror,
            });
            v["lease"] = match lease {
                Ok(l) => serde_json::to_value(l)?,
                Err(e) => serde_json::json!({"error": e}),
            };
        }
        let mut warnings: Vec<String> = quarantined
            .iter()
            .map(|p| format!("a corrupt state file was moved aside to {}", p.display()))
            .collect();
        warnings.extend(fleetgate_store::adoption_warning(&state));
        warnings.extend(hart_env_warnings());
        v["warnings"] = serde_json::json!(warnings);
        v["skipped_gates"] = serde_json::json!(state.skipped_gates());
        v["gate_isolation"] = serde_json::to_value(fleetgate_runtime::sandbox::isolation())?;
        print_json(&v)?;
    } else {
        output::print_status(&state, &quarantined);
        if let Some(lease) = &lease {
            println!("state:    shared ({})", shared.clone().unwrap_or_default());
            if let Some(m) = &mirror {
                println!("WARNING:  {m}");
            }
            match lease {
                Ok(Some(l)) => println!(
                    "lease:    {}{}",
                    l.summary,
                    if l.ours { " (this orchestrator)" } else { "" }
                ),
                Ok(None) => println!("lease:    not taken yet"),
                Err(e) => println!("lease:    unknown ({e})"),
            }
        }
        for w in fleetgate_store::adoption_warning(&state)
            .into_iter()
            .chain(hart_env_warnings())
        {
            println!("warning: {w}");
        }
        println!("{}", fleetgate_runtime::sandbox::isolation().line());
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the pipeline for `status`. With `[state] store = "postgres"` and the registry
/// out of reach, the local mirror is opened alone instead (nothing is written through
/// it: it holds no lease), with where the shared state lives and why it could not be
/// read: `status` shows the mirror and says so, as it does when the registry fails
/// after opening.
fn open_for_status(
    cfg_path: Option<&Path>,
) -> anyhow::Result<(fleetgate_runtime::Orchestrator, Option<(String, String)>)> {
    let err = match open(cfg_path, false) {
        Ok(o) => return Ok((o, None)),
        Err(e) => e,
    };
    let (mut cfg, base) = fleetgate_runtime::load_config(cfg_path)?;
    if cfg.state.store != fleetgate_core::config::StateStore::Postgres {
        return Err(err);
    }
    let store = format!(
        "registry {}",
        fleetgate_fleet::redact_url(cfg.fleet.database_url.as_deref().unwrap_or_default())
    );
    cfg.state.store = fleetgate_core::config::StateStore::File;
    let o = fleetgate_runtime::Orchestrator::open_shared(cfg, &base)?;
    Ok((o, Some((store, fleetgate_core::error_chain(err.as_ref())))))
}

/// `fleetgate rollback --reason TEXT`.
pub fn rollback(cfg_path: Option<&Path>, reason: &str, json: bool) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, false)?;
    let state = o.rollback(reason)?;
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

/// `fleetgate pause|resume|promote [--reason TEXT]`.
pub fn control(
    cfg_path: Option<&Path>,
    action: &str,
    reason: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let o = open(cfg_path, false)?;
    let by = fleetgate_runtime::outbox::operator();
    let state = match action {
        "pause" => o.pause(&by, reason)?,
        "resume" => o.resume(&by, reason)?,
        _ => o.promote(&by, reason)?,
    };
    if json {
        print_json(&state)?;
    } else {
        let what = state
            .stage_history
            .last()
            .and_then(|h| h.reason.clone())
            .unwrap_or_default();
        println!(
            "{} (run {}, now at `{}`): {what}",
            state.version,
            state.run_id.as_deref().unwrap_or("?"),
            state.stage
        );
        println!(
            "{}",
            match action {
                "pause" =>
                    "nothing is evaluated or sent until `fleetgate resume` (`fleetgate abort --reason TEXT` rolls back)",
                "resume" =>
                    "a running `fleetgate run` goes on by itself; otherwise `fleetgate run`",
                _ => "next: DEPLOY (a running `fleetgate run` goes on by itself)",
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `fleetgate watch [--once]`.
pub fn watch(cfg_path: Option<&Path>, once: bool) -> anyhow::Result<ExitCode> {
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

/// HART variables that are set but never obeyed (`HEVOLVE_DEV_MODE`, …).
fn hart_env_warnings() -> Vec<String> {
    fleetgate_core::config::hart_env_warnings(|k| std::env::var(k).ok())
}
