//! fleetgate-tools: the ten agent tools, with HART's names and result shapes, for AI
//! agents that drive upgrades through tool calls — served over MCP ([`mcp`]), over HTTP
//! ([`http`]), or exported as plain function definitions ([`export`]).
//!
//! Where it sits: above `fleetgate-runtime`. A [`Toolbox`] opens the orchestrator from a
//! config file for every call (so a call always sees the current config and state, and
//! holds the orchestrator lock only while `advance_upgrade_pipeline` runs) and turns every
//! outcome into JSON: `{"success": true, ...}` or `{"success": false, "error": "..."}`.
//!
//! Invariants:
//! - A call never panics and never returns a Rust error: a bad argument, a missing config,
//!   a refused transition or a locked state directory is `success: false` with a message
//!   that names the input and what to do, and an [`ErrorKind`] as `error_kind`
//!   (`invalid_arguments`, `locked`, `refused`, …). Unknown argument fields are refused.
//! - `register_benchmark` records a definition only; nothing is cloned, fetched or run.
//!   A registered benchmark runs only when `[benchmarks.allowed]` pins its exact
//!   definition, and then without a shell (see `fleetgate_runtime::bench_registry`).
//! - The argument schemas are generated from the Rust types in [`args`]; the committed
//!   snapshot `schemas/tools.json` makes any change a visible diff.
//!
//! Testing: `cargo nextest run -p fleetgate-tools` (schemas, argument refusals, the HTTP
//! API over a real socket); the MCP server is tested as a client would use it, by spawning
//! `fleetgate mcp`, in the workspace's `tests/agent_tools.rs`.

pub mod args;
pub mod export;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod page;
mod toolbox;

pub use toolbox::{ErrorKind, ToolDef, Toolbox, definitions, find};
