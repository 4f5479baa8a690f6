//! fleetgate — an autonomous, staged, gated, crash-safe release pipeline.
//!
//! This is the facade crate that embedders depend on (with `default-features = false` to
//! leave out the command-line tool). It re-exports the public API of the components:
//!
//! - [`core`]: the stage table, the pure pipeline state machine, the persisted state
//!   type, gate verdicts, version validation, benchmark comparison, the config model.
//! - [`store`]: the crash-safe state directory (atomic writes, locks, quarantine).
//! - [`runtime`]: the orchestrator that runs gates and persists results.
//! - [`trust`]: signed release manifests, keys, keyrings and the anti-rollback floor.
//! - [`canary`]: canary selection and the statistical health judge (pure).
//! - [`fleet`]: the peer registry (SQLite/PostgreSQL), heartbeats, leases.
//! - [`gossip`]: manifest dissemination (pure protocol, UDP runtime, simulator).
//! - [`agent`]: the node agent a node runtime embeds to get signed updates applied.
//! - [`tools`]: the ten agent tools, their JSON Schemas, the MCP server and the HTTP API.
//!
//! ```no_run
//! use fleetgate::runtime::{Orchestrator, load_config};
//! let (cfg, base) = load_config(Some(std::path::Path::new("fleetgate.toml")))?;
//! let orchestrator = Orchestrator::open(cfg, &base)?;
//! orchestrator.start("v1.2.0", None)?;
//! let end = orchestrator.run(&mut |p| eprintln!("{p:?}"))?;
//! println!("run ended {}", end.stage);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use fleetgate_agent as agent;
pub use fleetgate_canary as canary;
pub use fleetgate_core as core;
pub use fleetgate_fleet as fleet;
pub use fleetgate_gossip as gossip;
pub use fleetgate_runtime as runtime;
pub use fleetgate_store as store;
pub use fleetgate_tools as tools;
pub use fleetgate_trust as trust;

pub use fleetgate_core::{PipelineState, Stage, Verdict, Version};
pub use fleetgate_runtime::{AsyncOrchestrator, Orchestrator, load_config};
