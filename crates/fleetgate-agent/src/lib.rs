//! # fleetgate-agent — the node agent
//!
//! **Where it sits.** On every node of the fleet, as a daemon (`fleetgate-agent --config
//! node.toml` or `fleetgate node run --config node.toml`, which call
//! [`run_node_updating`]) or embedded in a host's tokio runtime
//! ([`RunningNode::start`] / [`run_node_until`]: no global state, shutdown by a future).
//! It receives signed manifests — over `POST /apply` from the orchestrator, from gossip
//! (`gossip_listen`, `seeds`) and, in pull mode, from its feed — and applies them to the
//! application it supervises. It
//! heartbeats to the orchestrator. It depends on `fleetgate-trust` (verification, floor),
//! `fleetgate-codehash` (the code hash definition), `fleetgate-net` (the HTTPS listener
//! and the per-source rate limit) and `fleetgate-store` (atomic writes) — never on the
//! orchestrator (`fleetgate-runtime`) or the registry (`fleetgate-fleet`, sqlx).
//!
//! **What it owns.**
//! - [`config`]: `node.toml` ([`NodeConfig`]); a commented example is
//!   `crates/fleetgate-agent/node.example.toml`.
//! - [`machine`]: the apply state machine, pure `(journal, event) -> (journal, commands)`.
//! - [`agent`]: the runtime that verifies manifests, executes the machine's commands and
//!   persists the journal (`<state_dir>/journal.json`) before each one.
//! - [`artifacts`]: releases of built files — downloaded from `artifacts_url` by digest,
//!   size and SHA-256 checked, archives unpacked safely into a fresh slot.
//! - [`backup`]: `[backup] paths` snapshotted into `backups/<id>` before a new version
//!   starts (old app stopped), restored before the old version restarts when the apply
//!   is undone; the `pre_apply` / `post_rollback` hooks.
//! - [`slots`]: `slots/<sequence>-<shortsha>` checkouts fetched with git2 and verified
//!   against the manifest's code hash; the atomic `current` symlink.
//! - [`supervisor`]: the app process (own process group, restart with backoff, exit
//!   counting, SIGTERM → drain → SIGKILL of the group, stray-app cleanup via `app.pid`).
//! - [`health`]: the health check and the counters the app reports through it.
//! - [`heartbeat`]: signed heartbeats in `fleetgate-fleet`'s wire format.
//! - [`http`]: `POST /apply`, `GET /status`, `GET /health`.
//! - [`pull`]: `mode = "pull"` — the node's feed polled with `If-None-Match`, applied
//!   through the same path as `POST /apply`.
//! - [`selfupdate`]: opt-in agent updates — staged by digest, exec'd in place, confirmed
//!   or reverted by the record `agent_update.json` at every start.
//! - [`gossip`]: a `fleetgate-gossip` UDP node whose verified deliveries are applied.
//!
//! **Apply, in order.** Verify the manifest (keyring and threshold, strict Ed25519,
//! expiry, anti-rollback floor, 64 KiB limit) → already on that code hash: no-op (the
//! floor is raised to the manifest's sequence, nothing restarts) → a release that failed
//! here before: refused → fetch the pinned commit into a new slot (the current slot is
//! untouched) → verify its code hash (and every hashed file on disk) → install → stop the
//! app (drain) → run `pre_apply`, back up `[backup] paths` → start it from the new slot →
//! wait for health within `health_grace_secs` (a crash loop — `crash_loop` exits — fails
//! at once) → healthy: switch `current`, raise the floor, record; unhealthy: stop it,
//! restore the backed-up paths, run `post_rollback`, restart the previous slot, remember
//! the release as bad. A rollback manifest is a revocation: a node that runs the revoked
//! release (`rollback_of`: its sequence, or its code hash when named) returns to `return_to_*`,
//! reusing the previous slot when its code hash matches; any other node only raises its
//! floor (no-op), so the revoked manifest is refused as replayed from then on.
//!
//! **Idempotent answers.** A manifest refused only by the floor whose exact bytes this
//! node committed or no-op'd (the journal keeps the last 16 digests), and whose code
//! still runs, is answered `already_applied` (success, nothing done), over HTTP and
//! gossip alike; "busy" is a retryable 503. See [`http`] for the full contract.
//!
//! **Architecture invariants.** The journal is written before every step's side
//! effect; `current` and the committed version change only after the new version was
//! healthy; so an agent killed at any instant restarts onto exactly the old or the new
//! version (see the table in [`machine`]). Two versions of the app never run at once: a
//! restarted agent first stops the app its predecessor left running. One agent per state
//! directory (`agent.lock`).
//!
//! **What it must never do.** Apply or fetch anything that did not verify; retry a
//! release that failed here; panic or read without bound on peer input (every body and
//! file read has a size limit); kill a process it did not start (pid files carry the
//! kernel start time); touch the current slot while preparing a new one.
//!
//! **How to test.** `cargo nextest run -p fleetgate-agent`. The unit tests cover the
//! config, the state machine (exact command lists) and the heartbeat format; the
//! integration tests in `tests/` build real git repositories with git2, run real agent
//! processes (`src/bin/fleetgate-agent.rs`) supervising a real app
//! (`src/bin/fleetgate-test-app.rs`, an HTTP server on 127.0.0.1 whose health depends on
//! files in its slot) and drive them over real HTTP: good release, bad release rolled
//! back, no-op, forged/unsigned/replayed/expired/oversized manifests refused, and an
//! agent SIGKILLed at every step of an apply (`FLEETGATE_AGENT_CRASH_AT=<phase>`, a
//! test-only crash point) recovering to exactly the old or the new version.

pub mod agent;
pub mod artifacts;
pub mod backup;
pub mod config;
pub mod gossip;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod pull;
pub mod selfupdate;
pub mod slots;
pub mod supervisor;

pub use agent::{Agent, AgentError, ApplyError, CRASH_ENV, JOURNAL_FILE, Status, check_apply_body};
pub use config::{ConfigError, DeliveryMode, HealthConfig, NodeConfig};
pub use health::Counters;
pub use machine::{ApplyReport, Installed, Journal, Outcome, Phase};

use std::future::Future;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Writes `bytes` to `path` durably and atomically (a new temp file created with `mode`,
/// fsync, rename, fsync of the directory): [`fleetgate_trust::fsutil::atomic_write`],
/// its error as the I/O error it wraps.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    fleetgate_trust::fsutil::atomic_write(path, bytes, mode).map_err(|e| match e {
        fleetgate_trust::fsutil::FsError::Io { source, .. } => source,
        other @ fleetgate_trust::fsutil::FsError::TooLarge { .. } => {
            std::io::Error::other(other.to_string())
        }
    })
}

/// An error and its sources, joined with `": "` (a source whose text is already in the
/// message is left out) — what a failed request says. The agent's own: it does not link
/// the orchestrator's `fleetgate-core`, whose `error_chain` the orchestrator uses.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// A started agent: endpoint bound, journal recovered, app started, heartbeats running.
#[derive(Debug)]
pub struct RunningNode {
    agent: Agent,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    heartbeats: Option<JoinHandle<()>>,
    pull: Option<JoinHandle<()>>,
    gossip: Option<(JoinHandle<()>, SocketAddr)>,
}

impl RunningNode {
    /// Opens the agent ([`Agent::open`]), binds `listen`, recovers the journal (finishing
    /// or undoing an interrupted apply, starting the committed version), then serves the
    /// endpoint and sends heartbeats. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`AgentError`] from opening, binding or recovery.
    pub async fn start(config: NodeConfig) -> Result<Self, AgentError> {
        let listen = config.listen;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(fleetgate_net::tls::server_config(cert, key)?),
            _ => None,
        };
        let agent = tokio::task::spawn_blocking(move || Agent::open(config))
            .await
            .map_err(|e| AgentError::Task(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| AgentError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AgentError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        if let Some(r) = agent.recover().await? {
            tracing::warn!(outcome = ?r.outcome, "recovered an interrupted apply: {}", r.detail);
        }
        // Push mode: orders sent while this node was down wait in its feed; obey them
        // before `/apply` serves (a revoked release's signed manifest stays valid).
        let catch_up = (agent.config().mode != DeliveryMode::Pull)
            .then(|| {
                agent
                    .config()
                    .orchestrator
                    .as_ref()
                    .and(pull::feed_url(agent.config()))
            })
            .flatten();
        let mut feed_etag = None;
        if let Some(url) = &catch_up {
            pull::catch_up(&agent, url, &mut feed_etag, "at start").await;
        }
        let (stop, rx) = watch::channel(false);
        let mut srv_rx = rx.clone();
        let svc = http::router(agent.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let stopped = async move {
            let _ = srv_rx.wait_for(|v| *v).await;
        };
        let server = match tls {
            None => tokio::spawn(
                axum::serve(listener, svc)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            ),
            Some(tls) => {
                use axum::serve::ListenerExt;
                let listener = fleetgate_net::tls::TlsListener::new(listener, tls)
                    .map_err(|source| AgentError::Bind {
                        addr: listen.to_string(),
                        source,
                    })?
                    .tap_io(|_| ());
                tokio::spawn(
                    axum::serve(listener, svc)
                        .with_graceful_shutdown(stopped)
                        .into_future(),
                )
            }
        };
        let heartbeats = agent.config().orchestrator.clone().map(|url| {
            let catch_up = catch_up.map(|feed| (feed, feed_etag));
            tokio::spawn(heartbeat::run(agent.clone(), url, catch_up, rx.clone()))
        });
        let pull = (agent.config().mode == DeliveryMode::Pull)
            .then(|| pull::feed_url(agent.config()))
            .flatten()
            .map(|url| tokio::spawn(pull::run(agent.clone(), url, rx.clone())));
        let gossip = match gossip::start(&agent, rx.clone()).await {
            Ok(g) => g,
            Err(e) => {
                let _ = stop.send(true);
                return Err(AgentError::Task(e));
            }
        };
        tracing::info!(%addr, node_id = %agent.config().node_id, "agent listening");
        Ok(Self {
            agent,
            addr,
            stop,
            server,
            heartbeats,
            pull,
            gossip,
        })
    }

    /// The bound gossip address, when gossip runs.
    #[must_use]
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.gossip.as_ref().map(|g| g.1)
    }

    /// The bound address of the endpoint.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The agent (apply, status).
    #[must_use]
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Stops serving and heartbeating, waits for an apply in flight, stops the app.
    ///
    /// # Errors
    /// [`AgentError::Task`] when the server task failed.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        let _ = self.stop.send(true);
        let served = self.server.await;
        if let Some(h) = self.heartbeats {
            let _ = h.await;
        }
        if let Some(p) = self.pull {
            let _ = p.await;
        }
        if let Some((g, _)) = self.gossip {
            let _ = g.await;
        }
        self.agent.shutdown().await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AgentError::Task(format!("HTTP server: {e}"))),
            Err(e) => Err(AgentError::Task(e.to_string())),
        }
    }
}

/// Runs the agent until `shutdown` completes, then shuts it down gracefully.
///
/// # Errors
/// [`AgentError`] from start-up or shutdown.
pub async fn run_node_until<F>(config: NodeConfig, shutdown: F) -> Result<(), AgentError>
where
    F: Future<Output = ()> + Send,
{
    let node = RunningNode::start(config).await?;
    shutdown.await;
    tracing::info!("agent shutting down");
    node.shutdown().await
}

/// Runs the agent until SIGINT or SIGTERM (what `fleetgate node run` calls).
///
/// # Errors
/// [`AgentError`] from start-up or shutdown.
pub async fn run_node(config: NodeConfig) -> Result<(), AgentError> {
    run_node_until(config, stop_signal()).await
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How [`run_node_updating`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by a signal.
    Stopped,
    /// Stopped to exec this binary with the same arguments (an agent update, a return
    /// from one, or a restart from the service's fixed path onto the confirmed build).
    Exec(std::path::PathBuf),
}

/// [`run_node`] with self-update ([`selfupdate`]; only with `self_update = true`): decides
/// at start whether this binary runs, confirms a new build, and returns
/// [`Exit::Exec`] when the process should become another binary — the caller (the
/// agent's `main`) execs it once the runtime is gone.
///
/// # Errors
/// [`AgentError`] from start-up, the update record, or shutdown.
pub async fn run_node_updating(config: NodeConfig) -> Result<Exit, AgentError> {
    let startup = if config.self_update {
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| AgentError::Task(format!("cannot tell which binary runs: {e}")))?;
        selfupdate::on_start(&config.state_dir, &exe).map_err(AgentError::Task)?
    } else {
        selfupdate::Startup::Run
    };
    let state_dir = config.state_dir.clone();
    if let selfupdate::Startup::Exec(binary) = startup {
        tracing::info!(binary = %binary.display(), "starting the agent's confirmed or pending build");
        selfupdate::count_try(&state_dir, &binary).map_err(AgentError::Task)?;
        return Ok(Exit::Exec(binary));
    }
    let grace = std::time::Duration::from_secs(config.self_update_grace_secs);
    let node = RunningNode::start(config).await?;
    let mut restart = node.agent().restart_requests();
    if let selfupdate::Startup::Confirm(rec) = startup {
        let agent = node.agent().clone();
        tokio::spawn(async move {
            if let Some(previous) = selfupdate::confirm(&agent, rec, grace).await {
                agent.request_restart(previous);
            }
        });
    }
    let exit = tokio::select! {
        () = stop_signal() => Exit::Stopped,
        r = restart.wait_for(Option::is_some) => match r {
            Ok(binary) => binary.clone().map_or(Exit::Stopped, Exit::Exec),
            Err(_) => Exit::Stopped,
        },
    };
    tracing::info!(?exit, "agent shutting down");
    node.shutdown().await?;
    if let Exit::Exec(binary) = &exit {
        selfupdate::count_try(&state_dir, binary).map_err(AgentError::Task)?;
    }
    Ok(exit)
}
