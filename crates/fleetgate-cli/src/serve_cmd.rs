//! `fleetgate serve`: the HTTP API ([`fleetgate_tools::http`]) — the tools, the
//! fleet's heartbeat and peer routes, and `/api/openapi.json` — until SIGTERM/SIGINT.

use anyhow::Context;
use fleetgate_fleet::Registry;
use fleetgate_runtime::{Orchestrator, load_config};
use fleetgate_tools::Toolbox;
use fleetgate_tools::http::{ApiAuth, MIN_TOKEN_CHARS};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long in-flight requests may still run after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `fleetgate serve` arguments.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Beyond localhost, serve HTTPS (--tls-cert/--tls-key) or put
    /// a TLS-terminating proxy in front (--insecure-plain-http).
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// HTTPS.
    #[command(flatten)]
    pub tls: crate::tls_cmd::TlsArgs,
    /// File holding the API token (one line, at least 16 characters, e.g. from
    /// `openssl rand -hex 32`; keep it mode 0600). Takes precedence over --token-env.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the API token, used when --token-file is not given.
    /// It is taken out of the environment at start, so gate commands never see it (nor
    /// the signing key variables).
    #[arg(long, value_name = "VAR", default_value = "FLEETGATE_API_TOKEN")]
    pub token_env: String,
    /// Let reads through without the token: the GET routes (status, canary health,
    /// benchmarks, peers) and read-only tools via /api/tools/NAME. Operations that
    /// change something always need it.
    #[arg(long)]
    pub open_reads: bool,
}

/// Run the API server until SIGTERM/SIGINT.
pub fn run(config: Option<&Path>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Fail closed: no token, no server. The token never reaches a gate command: a
    // token file is hidden from them, a variable of another name is sealed like
    // FLEETGATE_API_TOKEN (out of the environment and /proc/self/environ).
    if let Some(path) = &args.token_file {
        fleetgate_runtime::sandbox::protect_path(path);
    } else {
        fleetgate_runtime::sandbox::harden_process(&[args.token_env.as_str()]);
    }
    let auth = match &args.token_file {
        Some(path) => ApiAuth::from_file(path)?,
        None => ApiAuth::from_env(&args.token_env).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n`fleetgate serve` refuses to start without an API token: write one of at least {MIN_TOKEN_CHARS} characters to a file (`openssl rand -hex 32 > api.token && chmod 600 api.token`) and pass `--token-file api.token`, or set ${}",
                args.token_env
            )
        })?,
    }
    .with_open_reads(args.open_reads);

    // Pin the config file the server was started with, so a later change of the
    // working directory or of $FLEETGATE_CONFIG cannot point the tools elsewhere.
    let config_path: PathBuf = match config {
        Some(p) => p.to_owned(),
        None => std::env::var_os("FLEETGATE_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("fleetgate.toml")),
    };
    let (cfg, base) = load_config(Some(&config_path))?;
    let tls_args = args.tls.clone().or_config(&cfg, &base);
    let tls = tls_args.server_config(args.listen)?;
    if let Some(key) = &tls_args.tls_key {
        // Read already; gate commands must not reach it.
        fleetgate_runtime::sandbox::protect_path(key);
    }
    let config_path = std::fs::canonicalize(&config_path).unwrap_or(config_path);
    let orchestrator = Orchestrator::open_shared(cfg, &base)?;
    let url = fleetgate_runtime::fleet::database_url(orchestrator.context());
    drop(orchestrator);
    let toolbox = Toolbox::new(Some(config_path.clone()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::connect(&url).await.with_context(|| {
            format!(
                "failed to open the fleet registry {}",
                fleetgate_fleet::redact_url(&url)
            )
        })?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = crate::tls_cmd::scheme(&tls);
        eprintln!(
            "fleetgate API on {scheme}://{addr}/api/ (OpenAPI: {scheme}://{addr}/api/openapi.json; config {}; registry {}; token from {}; reads {})",
            config_path.display(),
            fleetgate_fleet::redact_url(&url),
            auth.origin(),
            if auth.open_reads() {
                "open"
            } else {
                "need the token"
            },
        );
        let app = fleetgate_tools::http::router(toolbox, Some(registry), auth);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = crate::tls_cmd::serve_router(listener, tls, app, async {
            let _ = stop_rx.await;
        });
        tokio::select! {
            served = server => served.context("the HTTP server failed")?,
            () = async {
                shutdown_signal().await;
                eprintln!("shutting down: waiting up to {}s for requests in progress", SHUTDOWN_GRACE.as_secs());
                let _ = stop_tx.send(());
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                eprintln!("requests still in progress after {}s; exiting anyway (the pipeline state is crash-safe: `fleetgate status` shows where it stands)", SHUTDOWN_GRACE.as_secs());
            }
        }
        anyhow::Ok(())
    })?;
    // A gate still running on a blocking thread is abandoned, as if the process were
    // killed; its verdict was not committed and the next advance runs it again.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
