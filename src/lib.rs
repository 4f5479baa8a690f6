//! fleetgate — an autonomous, staged, gated, crash-safe release pipeline.
//!
//! This is the facade crate that embedders depend on (with `default-features = false` to
//! leave out the command-line tool). It re-exports the public API of the components; the
//! types most embedders need are also at the top level ([`Orchestrator`],
//! [`AsyncOrchestrator`], [`RuntimeError`], [`Progress`], [`RunningNode`],
//! [`NodeConfig`], [`PipelineState`], [`Stage`], [`Verdict`]).
//!
//! | module | what it holds |
//! |---|---|
//! | [`core`] | the stage table, the pure pipeline state machine, the persisted state type, gate verdicts, version validation, benchmark comparison, the config model |
//! | [`store`] | the crash-safe state directory (atomic writes, locks, quarantine) |
//! | [`runtime`] | the orchestrator that runs gates and persists results |
//! | [`trust`] | signed release manifests, keys, keyrings and the anti-rollback floor |
//! | [`canary`] | canary selection and the statistical health judge (pure) |
//! | [`fleet`] | the peer registry (SQLite/PostgreSQL), heartbeats, leases, TLS listener, metrics |
//! | [`gossip`] | manifest dissemination (pure protocol, UDP runtime, simulator) |
//! | [`agent`] | the node agent a node runtime embeds to get signed updates applied |
//! | [`tools`] | the agent tools, their JSON Schemas, the MCP server and the HTTP API |
//!
//! # Embedding the orchestrator (blocking)
//!
//! A release job or a service without an async runtime drives a run to its end; progress
//! arrives through a callback, and every state change is already on disk when it does.
//!
//! ```no_run
//! use fleetgate::{Orchestrator, Progress, Stage, load_config};
//! let (cfg, base) = load_config(Some(std::path::Path::new("fleetgate.toml")))?;
//! let orchestrator = Orchestrator::open(cfg, &base)?;
//! orchestrator.start("v1.2.0", None)?;
//! let end = orchestrator.run(&mut |p: Progress| eprintln!("{p:?}"))?;
//! match end.stage {
//!     Stage::Completed => println!("every node runs v1.2.0"),
//!     other => println!("run ended {other}: {:?}", end.failure_detail),
//! }
//! # Ok::<(), fleetgate::RuntimeError>(())
//! ```
//!
//! # Embedding the orchestrator (async)
//!
//! Inside a tokio runtime use [`AsyncOrchestrator`]: each call runs on the blocking pool,
//! never on the reactor, and no runtime is nested.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleetgate::RuntimeError> {
//! use fleetgate::{AsyncOrchestrator, load_config};
//! let (cfg, base) = load_config(Some(std::path::Path::new("fleetgate.toml")))?;
//! let orchestrator = AsyncOrchestrator::open(cfg, &base).await?;
//! let state = orchestrator.status().await?;
//! println!("the pipeline is at {}", state.stage);
//! # Ok(()) }
//! ```
//!
//! # The agent inside a node runtime
//!
//! A node runtime that already runs tokio starts the agent next to its own work: it serves
//! `/apply` and `/status` (HTTPS with `tls_cert_file`), heartbeats to the fleet endpoint,
//! joins gossip, and applies only releases whose signed manifest verifies against the
//! node's trust file. [`RunningNode::shutdown`] stops it and waits for an apply in flight.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetgate::{NodeConfig, RunningNode};
//! let config = NodeConfig::load(std::path::Path::new("node.toml"))?;
//! let node = RunningNode::start(config).await?;
//! println!("agent on {}", node.addr());
//! // … the node runtime's own work …
//! let status = node.agent().status();
//! println!("running {:?}", status.version);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

#[doc(inline)]
pub use fleetgate_agent as agent;
#[doc(inline)]
pub use fleetgate_canary as canary;
#[doc(inline)]
pub use fleetgate_core as core;
#[doc(inline)]
pub use fleetgate_fleet as fleet;
#[doc(inline)]
pub use fleetgate_gossip as gossip;
#[doc(inline)]
pub use fleetgate_runtime as runtime;
#[doc(inline)]
pub use fleetgate_store as store;
#[doc(inline)]
pub use fleetgate_tools as tools;
#[doc(inline)]
pub use fleetgate_trust as trust;

#[doc(inline)]
pub use fleetgate_agent::{AgentError, NodeConfig, RunningNode};
#[doc(inline)]
pub use fleetgate_core::{PipelineState, Stage, Verdict, Version};
#[doc(inline)]
pub use fleetgate_runtime::{AsyncOrchestrator, Orchestrator, Progress, RuntimeError, load_config};
