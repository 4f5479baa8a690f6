//! `fleetgate tools export|list|call`: the agent tools without MCP.

use crate::{exit, print_json};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// `fleetgate tools …`.
#[derive(Debug, Subcommand)]
pub enum ToolsCmd {
    /// Print the tool definitions as function-calling JSON.
    Export {
        /// `openai` (Chat Completions `tools`: nested `function`), `openai-responses`
        /// (Responses API `tools`: flat), `anthropic` (Messages `tools`), or `json-schema`
        /// (one argument schema per tool).
        #[arg(long, value_parser = ["openai", "openai-responses", "anthropic", "json-schema"], default_value = "json-schema")]
        format: String,
    },
    /// List the tools with a one-line description.
    List {
        /// Machine-readable output: name, read-only, description.
        #[arg(long)]
        json: bool,
    },
    /// Call one tool and print its JSON result (exit 0 when `success` is true, else 1).
    Call {
        /// Tool name (see `fleetgate tools list`).
        name: String,
        /// Arguments as a JSON object, e.g. '{"new_version": "v2.0.0"}'.
        #[arg(long, default_value = "{}")]
        args: String,
    },
}

/// Run one `tools` subcommand.
pub fn run(config: Option<PathBuf>, cmd: ToolsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ToolsCmd::Export { format } => {
            let f = fleetgate_tools::export::Format::parse(&format)
                .with_context(|| format!("unknown format {format:?}"))?;
            print_json(&fleetgate_tools::export::export(f))?;
            Ok(ExitCode::SUCCESS)
        }
        ToolsCmd::List { json: true } => {
            let list: Vec<_> = fleetgate_tools::definitions()
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "name": d.name,
                        "read_only": d.read_only,
                        "description": d.description,
                    })
                })
                .collect();
            print_json(&list)?;
            Ok(ExitCode::SUCCESS)
        }
        ToolsCmd::List { json: false } => {
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
