//! `fleetgate fleet enroll|list|show|remove|channel|provision|serve|ca|simulate` and
//! `fleetgate canary-health`.

use anyhow::Context;
use clap::Subcommand;
use fleetgate_core::Stage;
use fleetgate_fleet::{CertFields, Registry};
use fleetgate_runtime::Orchestrator;
use fleetgate_runtime::gates::resolve;
use std::path::PathBuf;
use std::process::ExitCode;

/// Fleet registry commands.
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Enroll a node: issue its enrollment certificate (signed by the release key, checked
    /// against the trust file) and record it as a verified peer.
    Enroll {
        /// Node id (`[A-Za-z0-9._-]`, at most 128 characters).
        #[arg(long)]
        node_id: String,
        /// The node's Ed25519 identity public key (hex), or a `.pub` file holding it.
        #[arg(long)]
        public_key: String,
        /// Base URL of the node agent (its apply endpoint), e.g. http://127.0.0.1:7101.
        #[arg(long)]
        address: String,
        /// Region label.
        #[arg(long, default_value = "default")]
        region: String,
        /// Release channel (`stable`, `beta`, `canary`, any name); changeable later with
        /// `fleetgate fleet channel set`.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Write the certificate here (the node agent presents it).
        #[arg(long)]
        cert_out: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List peers.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one peer with its latest heartbeat.
    Show {
        /// Node id.
        node_id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Release channels: which nodes a run targets (`start --channel`), and which get
    /// nothing for now (paused).
    #[command(subcommand)]
    Channel(ChannelCmd),
    /// Remove a peer (it no longer takes part; its heartbeats are refused).
    Remove {
        /// Node id.
        node_id: String,
    },
    /// Put the first release on empty (or newly enrolled) nodes and record it as the
    /// completed release, so later runs have a baseline and a rollback target.
    ///
    /// The release is sent as a signed manifest (signed here with `[signing] key_file`, or
    /// one signed elsewhere with --manifest) to every active, verified peer whose heartbeats
    /// report no code yet (or to the --node peers), and judged on absolute criteria: each
    /// node must report the release's code hash and a passing health check in its signed
    /// heartbeats for --observe-secs, and the exception rate over that time must stay at
    /// or below `[canary] max_exception_rate` (judged once `[canary] min_requests` were
    /// served). Only between runs; only the completed release once there is one (a newer
    /// version goes through `fleetgate start`). Safe to run again: nodes that already run
    /// it are counted, not sent to. Exit status 0 when it passed and was recorded, 4 when a
    /// check failed (nothing recorded).
    Provision {
        /// The release: a version tag (the commit it names), or any name with --git-sha.
        version: String,
        /// The commit (default: the tag named VERSION).
        #[arg(long)]
        git_sha: Option<String>,
        /// Provision only this node (repeat for more); default: every active, verified
        /// peer that runs no code yet.
        #[arg(long = "node", value_name = "NODE_ID")]
        nodes: Vec<String>,
        /// Send this manifest, signed elsewhere (required with `[signing] mode =
        /// "external"`): it must verify against the trust file and name VERSION and its
        /// code hash.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Seconds every node must keep reporting the release, healthy.
        #[arg(long, default_value_t = 60)]
        observe_secs: u64,
        /// Seconds to wait for every node to report the release at all.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Machine-readable output (the report).
        #[arg(long)]
        json: bool,
    },
    /// Serve the fleet endpoints only: POST /api/fleet/heartbeat (signed by node keys)
    /// and GET /api/fleet/peers[/ID]. Runs until SIGTERM/SIGINT.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7300")]
        listen: std::net::SocketAddr,
        /// HTTPS.
        #[command(flatten)]
        tls: crate::tls_cmd::TlsArgs,
    },
    /// The fleet's private CA for HTTPS (`fleetgate fleet ca init`).
    #[command(subcommand)]
    Ca(crate::tls_cmd::CaCmd),
    /// Virtual nodes heartbeating to a fleet endpoint: to size a fleet and measure the
    /// endpoint. Enrolls --nodes virtual nodes in this config's registry (reused by later
    /// runs), sends each one's signed heartbeat every --interval seconds for --duration
    /// seconds from --concurrency connections, and prints sent / accepted / refused, the
    /// accepted rate and latency p50 / p99 (--json for machines). The nodes only
    /// heartbeat; they do not apply releases.
    Simulate(crate::simulate_cmd::SimulateArgs),
}

/// `fleetgate fleet channel …`.
#[derive(Debug, Subcommand)]
pub enum ChannelCmd {
    /// Every channel: its nodes and whether it is paused.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Move a node to a channel (the next run on that channel includes it).
    Set {
        /// Node id.
        node_id: String,
        /// Channel name.
        channel: String,
    },
    /// Pause a channel: its nodes get nothing (a run on it holds, pending, sending
    /// nothing) until it is resumed.
    Pause {
        /// Channel name.
        channel: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused channel.
    Resume {
        /// Channel name.
        channel: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn channel_cmd(
    rt: &tokio::runtime::Runtime,
    reg: &Registry,
    now: i64,
    cmd: ChannelCmd,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ChannelCmd::List { json } => {
            let channels = rt.block_on(reg.channels())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&channels)?);
            } else if channels.is_empty() {
                println!("no channels: no node is enrolled");
            } else {
                println!("CHANNEL          NODES  STATE");
                for c in channels {
                    let state = if c.paused {
                        format!("PAUSED ({})", c.reason)
                    } else {
                        "active".to_owned()
                    };
                    println!("{:<16} {:<6} {state}", c.name, c.nodes);
                }
            }
        }
        ChannelCmd::Set { node_id, channel } => {
            rt.block_on(reg.set_peer_channel(&node_id, &channel))?;
            println!("{node_id} is in channel `{channel}`");
        }
        ChannelCmd::Pause { channel, reason } => {
            rt.block_on(reg.set_channel_paused(&channel, true, &reason, now))?;
            println!(
                "channel `{channel}` paused: its nodes get nothing until `fleetgate fleet channel resume {channel}`"
            );
        }
        ChannelCmd::Resume { channel, reason } => {
            rt.block_on(reg.set_channel_paused(&channel, false, &reason, now))?;
            println!("channel `{channel}` resumed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Run a fleet command.
pub fn run(o: &Orchestrator, cmd: FleetCmd) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let url = fleetgate_runtime::fleet::database_url(o.context());
    let reg = rt.block_on(Registry::connect(&url)).with_context(|| {
        format!(
            "failed to open the fleet registry {}",
            fleetgate_fleet::redact_url(&url)
        )
    })?;
    let now = fleetgate_fleet::unix_now();
    match cmd {
        FleetCmd::Enroll {
            node_id,
            public_key,
            address,
            region,
            channel,
            cert_out,
            json,
        } => {
            fleetgate_fleet::validate_channel(&channel)?;
            let public_key = if std::path::Path::new(&public_key).is_file() {
                std::fs::read_to_string(&public_key)?.trim().to_owned()
            } else {
                public_key
            };
            let cfg = o.config();
            let key_file = cfg
                .signing
                .key_file
                .as_deref()
                .map(|k| resolve(&o.context().base, k));
            let key = fleetgate_trust::SigningKey::load(key_file.as_deref())
                .context("enrollment certificates are signed with the release key")?;
            let trust = cfg
                .signing
                .trust_file
                .as_deref()
                .context("set `[signing] trust_file`: certificates are verified against it")?;
            let keyring = fleetgate_trust::Keyring::load(&resolve(&o.context().base, trust))?;
            let fields = CertFields {
                node_id,
                public_key,
                region,
                address,
                issued_at: u64::try_from(now).unwrap_or(0),
            };
            let cert = fleetgate_fleet::issue_cert(&fields, &[&key])?;
            let mut peer = rt.block_on(reg.enroll(&cert, &keyring, now))?;
            rt.block_on(reg.set_peer_channel(&peer.id, &channel))?;
            peer.channel = channel;
            if let Some(path) = &cert_out {
                fleetgate_store::write_atomic(path, &cert, None)
                    .with_context(|| format!("failed to write {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&peer)?);
            } else {
                println!(
                    "enrolled {} at {} (region {}, channel {}), master_key_verified = {}{}",
                    peer.id,
                    peer.address,
                    peer.region,
                    peer.channel,
                    peer.master_key_verified,
                    cert_out
                        .map(|p| format!("; certificate written to {}", p.display()))
                        .unwrap_or_default()
                );
            }
        }
        FleetCmd::Channel(cmd) => return channel_cmd(&rt, &reg, now, cmd),
        FleetCmd::List { json } => {
            let peers = rt.block_on(reg.list_peers())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else if peers.is_empty() {
                println!("no peers enrolled (use `fleetgate fleet enroll`)");
            } else {
                println!(
                    "ID               VERIFIED STATUS    REGION     CHANNEL    VERSION        CODE         HEALTH    LAST HEARTBEAT"
                );
                for p in peers {
                    let hb = p
                        .last_heartbeat
                        .map(|t| format!("{}s ago", (now - t).max(0)))
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{:<16} {:<8} {:<9} {:<10} {:<10} {:<14} {:<12} {:<9} {}",
                        p.id,
                        if p.master_key_verified { "yes" } else { "NO" },
                        p.status.as_str(),
                        p.region,
                        p.channel,
                        p.current_version.as_deref().unwrap_or("-"),
                        p.code_hash
                            .as_deref()
                            .map(|h| h.get(..12).unwrap_or(h))
                            .unwrap_or("-"),
                        match p.healthy {
                            Some(true) => "healthy",
                            Some(false) => "UNHEALTHY",
                            None => "-",
                        },
                        hb
                    );
                }
            }
        }
        FleetCmd::Show { node_id, json } => {
            let peer = rt.block_on(reg.peer(&node_id))?;
            let hb = rt.block_on(reg.latest_heartbeat(&node_id, now))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"peer": peer, "latest_heartbeat": hb})
                    )?
                );
            } else {
                println!("{}", serde_json::to_string_pretty(&peer)?);
                match hb {
                    Some(h) => println!("latest heartbeat: {}", serde_json::to_string(&h)?),
                    None => println!("latest heartbeat: none"),
                }
            }
        }
        // Dispatched in lib.rs before a registry is opened; routed here too for safety.
        FleetCmd::Ca(cmd) => return crate::tls_cmd::run_ca(cmd),
        FleetCmd::Simulate(args) => {
            drop(rt);
            return crate::simulate_cmd::run(o, args);
        }
        FleetCmd::Serve { listen, tls } => {
            drop(rt);
            let tls = tls
                .or_config(&o.context().cfg, &o.context().base)
                .server_config(listen)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            // High availability: the orchestrator that built a release may be gone with
            // its directory; the artifacts are in the shared run state too.
            let shared_artifacts = (o.config().state.store
                == fleetgate_core::config::StateStore::Postgres)
                .then(|| fleetgate_fleet::http::SharedArtifacts {
                    registry: reg.clone(),
                    name: fleetgate_runtime::ha::STATE_NAME.to_owned(),
                });
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("failed to listen on {listen}"))?;
                eprintln!("fleet endpoints on {}://{}/api/fleet/ and /artifacts/ (registry {})", crate::tls_cmd::scheme(&tls), listener.local_addr()?, fleetgate_fleet::redact_url(&url));
                let shutdown = async {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                    }
                };
                let metrics = fleetgate_fleet::metrics::FleetMetrics::new();
                let routes = fleetgate_fleet::http::router_counted(
                    reg.clone(),
                    fleetgate_runtime::fleet::heartbeat_policy(o.config()),
                    std::sync::Arc::new(fleetgate_fleet::unix_now),
                    metrics.clone(),
                )
                .merge(fleetgate_fleet::http::probes(reg, metrics))
                .merge(fleetgate_fleet::http::artifacts_shared(
                    fleetgate_runtime::artifacts::store_dir(&o.context().state_dir),
                    shared_artifacts,
                ));
                let app = fleetgate_fleet::limit::per_source(routes, fleetgate_fleet::limit::FLEET_LIMIT);
                crate::tls_cmd::serve_router(listener, tls, app, shutdown).await?;
                anyhow::Ok(())
            })?;
        }
        FleetCmd::Provision {
            version,
            git_sha,
            nodes,
            manifest,
            observe_secs,
            timeout_secs,
            json,
        } => {
            drop(rt);
            let req = fleetgate_runtime::provision::ProvisionRequest {
                version: fleetgate_core::Version::parse(&version)
                    .with_context(|| format!("VERSION {version:?}"))?,
                git_sha,
                nodes,
                manifest,
                observe: std::time::Duration::from_secs(observe_secs),
                timeout: std::time::Duration::from_secs(timeout_secs),
            };
            let report = o.provision(&req, &mut |line| eprintln!("  {line}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "provision {} ({}): {}",
                    report.version,
                    if report.passed {
                        "passed, recorded as the completed release"
                    } else {
                        "FAILED, not recorded"
                    },
                    report.detail
                );
                for (id, n) in &report.nodes {
                    println!(
                        "  {id:<16} {:<16} {}",
                        n.answer,
                        if n.ok { "ok" } else { "NOT OK" },
                    );
                    if !n.detail.is_empty() {
                        println!("  {:<16} {}", "", n.detail);
                    }
                }
                for (id, why) in &report.skipped {
                    println!("  {id:<16} left alone: {why}");
                }
            }
            return Ok(if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            });
        }
        FleetCmd::Remove { node_id } => {
            rt.block_on(reg.remove_peer(&node_id))?;
            println!("removed {node_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fleetgate canary-health`: the CANARY gate's latest verdict, per criterion.
pub fn canary_health(o: &Orchestrator, json: bool) -> anyhow::Result<ExitCode> {
    let state = o.status()?;
    let Some(rec) = state.gate_results.get(&Stage::Canary) else {
        if json {
            println!(
                "{}",
                serde_json::json!({"success": false, "error": "the CANARY gate has not run in this run", "stage": state.stage})
            );
        } else {
            println!(
                "the CANARY gate has not run in this run (stage: {})",
                state.stage
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let f = &rec.verdict.figures;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "success": true, "outcome": rec.verdict.outcome, "detail": rec.verdict.detail, "checks": rec.checks,
                "verdict": f, "selection": state.canary.as_ref().and_then(|c| c.selection.as_ref()), "canary": &state.canary,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "canary: {} — {}",
        crate::outcome_word(rec.verdict.outcome),
        rec.verdict.detail
    );
    if let Some(nodes) = f.get("canary") {
        println!(
            "canary nodes: {nodes}   baseline nodes: {}",
            f.get("baseline_nodes").cloned().unwrap_or_default()
        );
    }
    if let Some(criteria) = f.get("criteria").and_then(|c| c.as_array()) {
        for c in criteria {
            println!(
                "  {:<22} {:<12} {}",
                c["criterion"].as_str().unwrap_or("?"),
                c["decision"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("")
            );
            println!(
                "  {:<22} statistic {}  threshold {}",
                "", c["statistic"], c["threshold"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
