//! `fleetgate outbox list|retry|abandon`: the effects (rollback orders) a run ordered and
//! that were not delivered yet. A queued effect blocks the next `start`; these commands
//! deliver it again now or give up on it, with the reason kept in the run's history.

use crate::{exit, open, output, print_json};
use clap::Subcommand;
use fleetgate_core::EffectAction;
use fleetgate_runtime::outbox::{self, OutboxEntry, RetryOutcome};
use std::path::Path;
use std::process::ExitCode;

/// `fleetgate outbox …`.
#[derive(Debug, Subcommand)]
pub enum OutboxCmd {
    /// List the queued effects: id, what they do, attempts, last error, and their run.
    List {
        /// Machine-readable output (an array of effects).
        #[arg(long)]
        json: bool,
    },
    /// Deliver a queued effect again now (clears its attempt count; every queued effect is
    /// tried). Exit 0 when ID was delivered, 1 when it is still queued or can never be
    /// delivered. Takes the orchestrator lock (exit 5 while `run`/`watch` hold it).
    Retry {
        /// The effect's id (see `fleetgate outbox list`).
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Give up on a queued effect: it is dropped from the outbox (so `start` is accepted
    /// again) and the reason, and who gave up, are recorded in the run's history and
    /// failure detail. Takes the orchestrator lock (exit 5 while `run`/`watch` hold it).
    Abandon {
        /// The effect's id (see `fleetgate outbox list`).
        id: String,
        /// Why it is abandoned (required; recorded).
        #[arg(long)]
        reason: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Run one `outbox` subcommand.
pub fn run(cfg_path: Option<&Path>, cmd: OutboxCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        OutboxCmd::List { json } => {
            let list = open(cfg_path, false)?.outbox_list()?;
            if json {
                print_json(&list)?;
            } else {
                print_list(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        OutboxCmd::Retry { id, json } => {
            let o = open(cfg_path, true)?;
            let mut show = output::progress_printer(json);
            let report = o.outbox_retry(&id, &mut show)?;
            let left = outbox::entries(&report.state);
            if json {
                let mut v = serde_json::to_value(&report.outcome)?;
                v["id"] = serde_json::json!(report.id);
                v["outbox"] = serde_json::to_value(&left)?;
                print_json(&v)?;
            } else {
                match &report.outcome {
                    RetryOutcome::Delivered { note } => println!("{id} delivered: {note}"),
                    RetryOutcome::Failed { error } => println!(
                        "{id} NOT delivered: {error}\nit stays queued; retry later, or give up on it with `fleetgate outbox abandon {id} --reason TEXT`"
                    ),
                    RetryOutcome::Abandoned { reason } => println!(
                        "{id} can never be delivered and was dropped: {reason} (recorded in the run's failure detail)"
                    ),
                }
                if !left.is_empty() {
                    println!("{} effect(s) still queued:", left.len());
                    print_list(&left);
                }
            }
            Ok(ExitCode::from(match report.outcome {
                RetryOutcome::Delivered { .. } => exit::OK,
                RetryOutcome::Failed { .. } | RetryOutcome::Abandoned { .. } => exit::ERROR,
            }))
        }
        OutboxCmd::Abandon { id, reason, json } => {
            let o = open(cfg_path, true)?;
            let state = o.outbox_abandon(&id, &reason)?;
            if json {
                print_json(&serde_json::json!({"abandoned": id, "state": state}))?;
            } else {
                let by = state
                    .stage_history
                    .last()
                    .and_then(|h| h.reason.as_deref())
                    .unwrap_or("");
                println!("{by}");
                if state.outbox.is_empty() {
                    println!("the outbox is empty; `fleetgate start <version>` is accepted");
                } else {
                    println!("{} effect(s) still queued:", state.outbox.len());
                    print_list(&outbox::entries(&state));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn what(action: &EffectAction) -> String {
    match action {
        EffectAction::SendRollback { scope, .. } => {
            let scope = serde_json::to_value(scope)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("send_rollback scope={scope}")
        }
    }
}

fn print_list(list: &[OutboxEntry]) {
    if list.is_empty() {
        println!("the outbox is empty: nothing is waiting to be delivered");
        return;
    }
    println!("{:<34} {:<28} {:>8}  RUN", "ID", "ACTION", "ATTEMPTS");
    for e in list {
        println!(
            "{:<34} {:<28} {:>8}  {} ({} at `{}`)",
            e.id,
            what(&e.action),
            e.attempts,
            e.run_id.as_deref().unwrap_or("?"),
            e.version,
            e.stage
        );
        match &e.action {
            EffectAction::SendRollback { reason, .. } => {
                println!("{:<34} reason: {}", "", reason.lines().next().unwrap_or(""));
            }
        }
        println!(
            "{:<34} last error: {}",
            "",
            e.last_error
                .as_deref()
                .unwrap_or("none (not attempted yet)")
        );
    }
}
