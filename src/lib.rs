//! fleetgate — an autonomous, staged, gated, crash-safe release pipeline.
//!
//! This is the facade crate that embedders depend on. It re-exports the public API of the
//! components; the types most embedders need are also at the top level. Cargo features
//! choose what is built:
//!
//! | feature | gives | builds |
//! |---|---|---|
//! | *(none)* | [`trust`] | the manifest and key formats |
//! | `agent` | + [`agent`], [`gossip`], [`codehash`], [`net`]; [`RunningNode`], [`NodeConfig`], [`AgentError`] | the node agent: git2, axum, reqwest, tokio — no sqlx, no MCP server, no orchestrator, not even the pipeline's state machine and config model |
//! | `orchestrator` | + [`core`], [`store`], [`runtime`], [`tools`], [`canary`], [`fleet`], [`gossip`], [`codehash`], [`net`]; [`Orchestrator`], [`AsyncOrchestrator`], [`RuntimeError`], [`Progress`], [`load_config`], [`PipelineState`], [`Stage`], [`Verdict`], [`Version`] | the release pipeline, the sqlx registry (SQLite, PostgreSQL), the MCP server and HTTP API |
//! | `cli` (default) | `orchestrator` + `agent` + the `fleetgate` binary | everything |
//!
//! A node runtime that only runs the agent depends on
//! `fleetgate = { version = "0.1", default-features = false, features = ["agent"] }`; a
//! service that drives releases on `features = ["orchestrator"]`.
//!
//! | module | feature | what it holds |
//! |---|---|---|
//! | [`core`] | `orchestrator` | the stage table, the pure pipeline state machine, the persisted state type, gate verdicts, version validation, benchmark comparison, the config model |
//! | [`store`] | `orchestrator` | the crash-safe state directory (atomic writes, locks, quarantine) |
//! | [`trust`] | — | signed release manifests, keys, keyrings and the anti-rollback floor |
//! | [`codehash`] | `agent` or `orchestrator` | the code hash (git-tree and HART schemes), one definition for orchestrator and agent |
//! | [`net`] | `agent` or `orchestrator` | the HTTPS listener and per-source rate limit of every fleetgate listener |
//! | [`gossip`] | `agent` or `orchestrator` | manifest dissemination (pure protocol, UDP runtime, simulator) |
//! | [`agent`] | `agent` | the node agent a node runtime embeds to get signed updates applied |
//! | [`runtime`] | `orchestrator` | the orchestrator that runs gates and persists results |
//! | [`canary`] | `orchestrator` | canary selection and the statistical health judge (pure) |
//! | [`fleet`] | `orchestrator` | the peer registry (SQLite/PostgreSQL), heartbeats, leases, metrics |
//! | [`tools`] | `orchestrator` | the agent tools, their JSON Schemas, the MCP server and the HTTP API |
//!
//! # Embedding the orchestrator (blocking; feature `orchestrator`)
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
//! # Errors are typed
//!
//! [`RuntimeError`]'s variants are the kinds a caller branches on (config, invalid input,
//! refused, busy, fenced, …); each holds a typed reason with its data and source error,
//! so nothing needs parsing a message (the tools map the kind to `error_kind` and an HTTP
//! status).
//!
//! ```no_run
//! use fleetgate::runtime::{ConfigProblem, Refusal};
//! use fleetgate::{Orchestrator, RuntimeError, load_config};
//! let (cfg, base) = match load_config(None) {
//!     Err(RuntimeError::Config(ConfigProblem::Read { path, .. })) => {
//!         eprintln!("no config at {}: run `fleetgate init`", path.display());
//!         return Ok(());
//!     }
//!     other => other?,
//! };
//! let orchestrator = Orchestrator::open(cfg, &base)?;
//! match orchestrator.submit_manifest(b"{}") {
//!     Err(RuntimeError::Refused(Refusal::NotSigning { run_id, stage, .. })) => {
//!         println!("run {run_id} is in {stage}, not waiting for a signature")
//!     }
//!     Err(RuntimeError::Fenced(held)) => println!("standby: {}", held.registry),
//!     other => println!("{other:?}"),
//! }
//! # Ok::<(), fleetgate::RuntimeError>(())
//! ```
//!
//! # Embedding the orchestrator (async; feature `orchestrator`)
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
//! # The agent inside a node runtime (feature `agent`)
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

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_core as core;
#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_store as store;
#[doc(inline)]
pub use fleetgate_trust as trust;

#[cfg(any(feature = "agent", feature = "orchestrator"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "agent", feature = "orchestrator"))))]
#[doc(inline)]
pub use fleetgate_codehash as codehash;
#[cfg(any(feature = "agent", feature = "orchestrator"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "agent", feature = "orchestrator"))))]
#[doc(inline)]
pub use fleetgate_gossip as gossip;
#[cfg(any(feature = "agent", feature = "orchestrator"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "agent", feature = "orchestrator"))))]
#[doc(inline)]
pub use fleetgate_net as net;

#[cfg(feature = "agent")]
#[cfg_attr(docsrs, doc(cfg(feature = "agent")))]
#[doc(inline)]
pub use fleetgate_agent as agent;

#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_canary as canary;
#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_fleet as fleet;
#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_runtime as runtime;
#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_tools as tools;

#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_core::{PipelineState, Stage, Verdict, Version};

#[cfg(feature = "agent")]
#[cfg_attr(docsrs, doc(cfg(feature = "agent")))]
#[doc(inline)]
pub use fleetgate_agent::{AgentError, NodeConfig, RunningNode};

#[cfg(feature = "orchestrator")]
#[cfg_attr(docsrs, doc(cfg(feature = "orchestrator")))]
#[doc(inline)]
pub use fleetgate_runtime::{AsyncOrchestrator, Orchestrator, Progress, RuntimeError, load_config};
