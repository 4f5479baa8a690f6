//! The demo fleet: the registry, the fleet endpoint (`fleetgate fleet serve`), N node
//! agents enrolled and provisioned with v1.0.0 — and the readiness checks that say when
//! it is really up: the endpoint answers, every agent answers, and the registry shows
//! every node eligible for a canary on v1.0.0. Every wait is on a condition with a
//! deadline; a process that died is reported with its log.

use anyhow::Context;
use fleetgate_runtime::{Orchestrator, load_config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the fleet endpoint may take to answer after it was started.
const ENDPOINT_DEADLINE: Duration = Duration::from_secs(60);
/// How long every agent may take to answer on its apply port.
const AGENTS_DEADLINE: Duration = Duration::from_secs(60);
/// How long provisioning v1.0.0 may take to show on every agent.
const PROVISION_DEADLINE: Duration = Duration::from_secs(90);
/// How long the registry may take to show every node eligible on v1.0.0.
const ELIGIBLE_DEADLINE: Duration = Duration::from_secs(90);
/// The address a pull-mode demo node enrolls with: nothing answers there, as nothing
/// reaches a node behind NAT.
const UNREACHABLE: &str = "http://127.0.0.1:1";
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(100);

/// A free local port below Linux's ephemeral range (32768–60999): a port the system
/// handed out for `bind(0)` can be taken, before the agent binds it, as the source port of
/// any outgoing connection on the machine; one below that range cannot. Random among
/// 20000–32767 and checked free, so concurrent demo fleets rarely meet either. A port is
/// handed out once per process: the fleet picks all its ports before any agent binds
/// one, so "free now" alone would let two nodes draw the same app port (about 1.5% of
/// demo runs with 10 nodes), and the node whose app cannot bind crash-loops.
fn pick_port(free: impl Fn(u16) -> bool) -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..500 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + u16::try_from(h.finish() % 12_768).unwrap_or(0);
        if !handed_out.contains(&port) && free(port) {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free local port between 20000 and 32767 after 500 tries")
}

fn free_udp_port() -> anyhow::Result<u16> {
    pick_port(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    pick_port(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// One node agent of the demo fleet.
pub(super) struct Node {
    /// Node id (`node-01`…).
    pub(super) id: String,
    /// Base URL of its agent.
    pub(super) address: String,
    child: Option<Child>,
    log: PathBuf,
}

/// The running fleet: stopped on drop unless `keep`.
pub(super) struct Fleet {
    pub(super) nodes: Vec<Node>,
    server: Option<Child>,
    /// Leave every process running when dropped.
    pub(super) keep: bool,
    /// When every node was found running v1.0.0 (its history starts then).
    pub(super) provisioned_at: Option<Instant>,
}

/// Pre-update history the demo gives the fleet before its first canary: the judge
/// compares each canary node with its own rate before the update, and with only a few
/// seconds of it a good release can stay inconclusive (held for an operator).
pub(super) const PRE_HISTORY: Duration = Duration::from_secs(30);

impl Fleet {
    /// Waits until the fleet has run v1.0.0 for [`PRE_HISTORY`] (returns at once when it
    /// has, or when nothing was provisioned), checking the agents meanwhile.
    pub(super) fn wait_for_history(&mut self) -> anyhow::Result<()> {
        let Some(since) = self.provisioned_at else {
            return Ok(());
        };
        let left = PRE_HISTORY.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Ok(());
        }
        println!(
            "  letting the fleet report {}s of v1.0.0 history before the first canary ({}s to go)",
            PRE_HISTORY.as_secs(),
            left.as_secs()
        );
        let until = Instant::now() + left;
        while Instant::now() < until {
            for n in &mut self.nodes {
                if let Some(c) = n.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    anyhow::bail!(
                        "the agent of {} exited ({status}) while the fleet built its history; see {}",
                        n.id,
                        n.log.display()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(250).min(until - Instant::now()));
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let server = self.server.take();
        let children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .chain(server)
            .collect();
        for c in &children {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        for mut c in children {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// What [`prepare`] needs: the workspace laid out by the caller.
pub(super) struct Plan<'a> {
    /// Workspace directory.
    pub(super) dir: &'a Path,
    /// The sample application's repository (with `keys/`).
    pub(super) app: &'a Path,
    /// The orchestrator config (rewritten here with the gossip seeds).
    pub(super) config: &'a Path,
    /// The `fleetgate` executable.
    pub(super) exe: &'a Path,
    /// Number of node agents.
    pub(super) nodes: u16,
    /// Leave the processes running when the fleet is dropped.
    pub(super) keep: bool,
    /// Node-to-node spread σ of the apps' natural exception rate (`--node-error-spread`).
    pub(super) error_spread: f64,
    /// Leave the nodes empty (no v1.0.0 provisioned).
    pub(super) empty_nodes: bool,
    /// How many of the nodes (the last ones) run in pull mode behind a simulated NAT.
    pub(super) pull_nodes: u16,
}

/// Node `i`'s factor on the app's exception rate: exp(σ·Z − σ²/2), Z standard normal
/// drawn (Box–Muller over SplitMix64) from a seed fixed per node index, so a fleet's
/// spread is the same on every run. Mean 1 over nodes; 1 exactly when σ = 0.
pub(super) fn error_scale(sigma: f64, i: u16) -> f64 {
    if sigma == 0.0 {
        return 1.0;
    }
    let mut x = 0x5eed_0012_0000_0000_u64 ^ u64::from(i);
    let mut uniform = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // (0, 1]: never 0, so ln is finite.
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let (u1, u2) = (uniform(), uniform());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (sigma * z - sigma * sigma / 2.0).exp()
}

/// A prepared fleet and the orchestrator that drives it.
pub(super) struct Prepared {
    /// The processes.
    pub(super) fleet: Fleet,
    /// The orchestrator (config with the gossip seeds).
    pub(super) orchestrator: Orchestrator,
}

/// The last lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => format!("({} is empty)", path.display()),
        Ok(t) => {
            let lines: Vec<&str> = t.lines().collect();
            let from = lines.len().saturating_sub(20);
            format!("{}:\n{}", path.display(), lines[from..].join("\n"))
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Fails if `child` has exited, with its log.
fn ensure_running(child: &mut Child, what: &str, log: &Path) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        anyhow::bail!("{what} exited at start ({status}); {}", log_tail(log));
    }
    Ok(())
}

/// Start the fleet and return once it is ready for a canary: the registry exists
/// (created and migrated here, before any other process opens it), the fleet endpoint
/// answers, every agent answers and runs v1.0.0, and the registry shows every node
/// eligible (verified, active, a heartbeat within `[canary] heartbeat_timeout_secs`) on
/// v1.0.0 — the query CANARY selects its nodes with.
pub(super) fn prepare(plan: &Plan<'_>) -> anyhow::Result<Prepared> {
    let Plan {
        dir,
        app,
        config,
        exe,
        nodes,
        keep,
        error_spread,
        empty_nodes,
        pull_nodes,
    } = *plan;
    if pull_nodes > nodes {
        anyhow::bail!("--pull-nodes {pull_nodes} is more than the {nodes} nodes of the fleet");
    }
    let (cfg, base) = load_config(Some(config))?;
    let db_url = fleetgate_runtime::fleet::database_url(&fleetgate_runtime::gates::GateContext {
        cfg: cfg.clone(),
        base: base.clone(),
        repo: base.join(&cfg.repo),
        state_dir: base.join(&cfg.state_dir),
        fleet: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    // The registry is created and migrated here, before `fleet serve` or any agent's
    // enrollment can open it.
    let reg = rt
        .block_on(fleetgate_fleet::Registry::connect(&db_url))
        .with_context(|| {
            format!(
                "failed to create the fleet registry {}",
                fleetgate_fleet::redact_url(&db_url)
            )
        })?;
    let mut fleet = Fleet {
        nodes: Vec::new(),
        server: None,
        keep,
        provisioned_at: None,
    };
    let hb_port = free_port()?;
    let hb_url = format!("http://127.0.0.1:{hb_port}");
    let serve_log = dir.join("fleet-serve.log");
    let server = Command::new(exe)
        .arg("--config")
        .arg(config)
        .args([
            "fleet",
            "serve",
            "--listen",
            &format!("127.0.0.1:{hb_port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&serve_log)?)
        .spawn()
        .context("failed to start `fleetgate fleet serve`")?;
    let server = fleet.server.insert(server);
    wait_for_endpoint(&rt, &http, server, &hb_url, &serve_log)?;
    println!("  orchestrator: registry {db_url}, heartbeat endpoint {hb_url}/api/fleet/heartbeat");

    // N node agents, enrolled, each supervising the app in its own slots.
    let key = fleetgate_trust::SigningKey::load(Some(&app.join("keys/release.key")))?;
    let keyring = fleetgate_trust::Keyring::load(&app.join("keys/trust.json"))?;
    let gossip_ports: Vec<u16> = (0..nodes)
        .map(|_| free_udp_port())
        .collect::<anyhow::Result<_>>()?;
    for i in 1..=nodes {
        let id = format!("node-{i:02}");
        let ndir = dir.join("nodes").join(&id);
        std::fs::create_dir_all(&ndir)?;
        let ident = fleetgate_trust::keygen(&ndir.join("identity.key"), false)?;
        let (apply_port, app_port) = (free_port()?, free_port()?);
        let address = format!("http://127.0.0.1:{apply_port}");
        let region = if i % 2 == 0 { "us" } else { "eu" };
        // A pull node is "behind NAT": it enrolls with an address nothing answers on.
        let pull = i > nodes - pull_nodes;
        let fields = fleetgate_fleet::CertFields {
            node_id: id.clone(),
            public_key: ident.public_key_hex.clone(),
            region: region.into(),
            address: if pull {
                UNREACHABLE.to_owned()
            } else {
                address.clone()
            },
            issued_at: fleetgate_trust::unix_now(),
        };
        let cert = fleetgate_fleet::issue_cert(&fields, &[&key])?;
        std::fs::write(ndir.join("enrollment.cert"), &cert)?;
        rt.block_on(reg.enroll(&cert, &keyring, fleetgate_fleet::unix_now()))?;
        let node_toml = format!(
            r#"node_id = "{id}"
identity_key = "identity.key"
enrollment_cert = "enrollment.cert"
trust_file = {trust:?}
state_dir = "state"
remote = {remote:?}
artifacts_url = "{hb_url}/artifacts"
listen = "127.0.0.1:{apply_port}"
install = "test -f build/app.env || sh build.sh"
start = {start:?}
health_grace_secs = 15
drain_secs = 2
orchestrator = "{hb_url}"
heartbeat_interval_secs = 1
heartbeat_max_backoff_secs = 5
{delivery}
[env]
PORT = "{app_port}"
DEMO_ERROR_SCALE = "{error_scale:.4}"

[health]
http = "http://127.0.0.1:{app_port}/health"
"#,
            trust = app.join("keys/trust.json").display().to_string(),
            remote = app.display().to_string(),
            start = format!("exec '{}' demo-app", exe.display()),
            error_scale = error_scale(error_spread, i),
            delivery = if pull {
                "mode = \"pull\"\npoll_interval_secs = 1\n".to_owned()
            } else {
                let pushed = nodes - pull_nodes;
                format!(
                    "gossip_listen = \"127.0.0.1:{}\"\nseeds = {:?}\ngossip_round_ms = 200\ngossip_anti_entropy_secs = 2\n",
                    gossip_ports[usize::from(i - 1)],
                    (1..=3u16)
                        .map(|k| format!(
                            "127.0.0.1:{}",
                            gossip_ports[usize::from((i - 1 + k) % pushed)]
                        ))
                        .collect::<Vec<_>>()
                )
            },
        );
        std::fs::write(ndir.join("node.toml"), node_toml)?;
        let log_path = ndir.join("agent.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(exe)
            .args(["node", "run", "--config"])
            .arg(ndir.join("node.toml"))
            .env("FLEETGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start the agent of {id}"))?;
        fleet.nodes.push(Node {
            id,
            address,
            child: Some(child),
            log: log_path,
        });
    }
    if error_spread > 0.0 {
        let scales: Vec<String> = (1..=nodes)
            .map(|i| format!("{:.2}", error_scale(error_spread, i)))
            .collect();
        println!(
            "  node-to-node spread σ = {error_spread}: each node's natural exception rate × [{}]",
            scales.join(", ")
        );
    }
    println!(
        "  started {} node agents (logs: {}/nodes/*/agent.log)",
        fleet.nodes.len(),
        dir.display()
    );
    // DEPLOY hands releases to gossip through three of the nodes.
    let seeds: Vec<String> = gossip_ports
        .iter()
        .take(usize::from(nodes - pull_nodes).min(3))
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let mut text = std::fs::read_to_string(config)?;
    text = text.replace(
        "[deploy]\n",
        &format!(
            "[deploy]\ngossip_seeds = [{}]\ngossip_linger_ms = 3000\n",
            seeds.join(", ")
        ),
    );
    std::fs::write(config, text)?;
    let (cfg, base) = load_config(Some(config))?;
    let o = Orchestrator::open(cfg, &base)?;

    if empty_nodes {
        wait_for_agents(&rt, &http, &mut fleet)?;
        let timeout = u64::try_from(o.config().canary.heartbeat_timeout_secs).unwrap_or(60);
        wait_for_eligible(&rt, &reg, &mut fleet, "", timeout, &serve_log)?;
        println!(
            "  {} nodes enrolled and heartbeating, running nothing yet",
            fleet.nodes.len()
        );
        rt.block_on(reg.close());
        return Ok(Prepared {
            fleet,
            orchestrator: o,
        });
    }
    // Provision v1.0.0 on every node with a signed manifest, as an installer would.
    let v1 = fleetgate_runtime::codehash::code_hash_at(app, "v1.0.0", &o.config().code_hash)?;
    let seq = fleetgate_trust::unix_now();
    let provision = fleetgate_trust::Manifest {
        schema_version: fleetgate_trust::MANIFEST_SCHEMA_VERSION,
        version: "v1.0.0".into(),
        git_sha: v1.commit.clone(),
        code_hash: v1.code_hash.clone(),
        file_manifest_hash: v1.file_manifest_hash.clone(),
        hash_scheme: fleetgate_trust::HashScheme::Git,
        guardrail_hash: String::new(),
        built_at: fleetgate_trust::rfc3339_seconds(seq),
        master_public_key: key.public_key_hex(),
        sequence: seq,
        expires_at: seq + 3600,
        kind: fleetgate_trust::ManifestKind::Release,
        rollback_of: None,
        return_to_version: None,
        return_to_code_hash: None,
        return_to_git_sha: None,
        canary_seed: fleetgate_trust::random_canary_seed().map_err(|e| anyhow::anyhow!("{e}"))?,
        key_ids: vec![key.key_id()],
        fencing_epoch: 0,
        provenance_sha256: None,
        artifacts: Vec::new(),
        extra: serde_json::Map::new(),
    };
    let bytes = fleetgate_trust::sign_manifest(&provision, &[&key])?;
    o.store()
        .transact(|s| {
            fleetgate_core::handle(s, fleetgate_core::Event::SequenceUsed { sequence: seq })
                .map(|_| ())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_for_agents(&rt, &http, &mut fleet)?;
    // Pushed nodes get the manifest on /apply; pull nodes find it in their feed.
    let pushed = usize::from(nodes - pull_nodes);
    for n in &fleet.nodes[pushed..] {
        rt.block_on(reg.put_feed(&n.id, seq, &bytes, fleetgate_fleet::unix_now()))
            .with_context(|| format!("failed to write the feed of {}", n.id))?;
    }
    let targets: Vec<(String, String)> = fleet.nodes[..pushed]
        .iter()
        .map(|n| (n.id.clone(), n.address.clone()))
        .collect();
    let results = rt.block_on(post_all(&targets, &bytes));
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(k, r)| r.as_ref().err().map(|e| format!("{k}: {e}")))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "provisioning v1.0.0 failed on {} node(s): {}",
            failed.len(),
            failed.join("; ")
        );
    }
    let (n, hashes) = wait_converged(&fleet, &v1.code_hash, PROVISION_DEADLINE);
    if n != fleet.nodes.len() {
        anyhow::bail!(
            "v1.0.0 was provisioned but only {n}/{} agents report it after {}s: {}",
            fleet.nodes.len(),
            PROVISION_DEADLINE.as_secs(),
            describe_hashes(&hashes)
        );
    }
    println!(
        "  provisioned v1.0.0 on {n}/{} nodes (code hash {})",
        fleet.nodes.len(),
        &v1.code_hash[..12]
    );
    // Ready for a canary only when the registry — what CANARY selects from — shows
    // every node eligible and reporting v1.0.0 in its heartbeats.
    let timeout = u64::try_from(o.config().canary.heartbeat_timeout_secs).unwrap_or(60);
    wait_for_eligible(&rt, &reg, &mut fleet, &v1.code_hash, timeout, &serve_log)?;
    fleet.provisioned_at = Some(Instant::now());
    rt.block_on(reg.close());
    Ok(Prepared {
        fleet,
        orchestrator: o,
    })
}

/// Waits until the fleet endpoint answers `GET /api/fleet/peers`; fails at once, with
/// its log, if the process exited.
fn wait_for_endpoint(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    server: &mut Child,
    base: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let url = format!("{base}/api/fleet/peers");
    let deadline = Instant::now() + ENDPOINT_DEADLINE;
    loop {
        ensure_running(server, "`fleetgate fleet serve`", log)?;
        let answer = rt.block_on(async { http.get(&url).send().await?.error_for_status() });
        match answer {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => anyhow::bail!(
                "the fleet endpoint did not answer at {url} within {}s ({e}); {}",
                ENDPOINT_DEADLINE.as_secs(),
                log_tail(log)
            ),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits until every agent answers `GET /health`; fails at once, with its log, if an
/// agent exited.
fn wait_for_agents(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + AGENTS_DEADLINE;
    for n in &mut fleet.nodes {
        let url = format!("{}/health", n.address);
        loop {
            if let Some(c) = n.child.as_mut() {
                ensure_running(c, &format!("the agent of {}", n.id), &n.log)?;
            }
            let answer = rt.block_on(async { http.get(&url).send().await?.error_for_status() });
            match answer {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => anyhow::bail!(
                    "the agent of {} did not come up at {} within {}s ({e}); {}",
                    n.id,
                    n.address,
                    AGENTS_DEADLINE.as_secs(),
                    log_tail(&n.log)
                ),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }
    Ok(())
}

/// Waits until `Registry::eligible_peers` (the query CANARY selects with) lists every
/// node and each one's latest heartbeat reports `code_hash`.
fn wait_for_eligible(
    rt: &tokio::runtime::Runtime,
    reg: &fleetgate_fleet::Registry,
    fleet: &mut Fleet,
    code_hash: &str,
    heartbeat_timeout_secs: u64,
    serve_log: &Path,
) -> anyhow::Result<()> {
    let want: Vec<String> = fleet.nodes.iter().map(|n| n.id.clone()).collect();
    let deadline = Instant::now() + ELIGIBLE_DEADLINE;
    loop {
        if let Some(s) = fleet.server.as_mut() {
            ensure_running(s, "`fleetgate fleet serve`", serve_log)?;
        }
        let now = fleetgate_fleet::unix_now();
        let eligible: Vec<String> = rt
            .block_on(reg.eligible_peers(now, heartbeat_timeout_secs))?
            .into_iter()
            .map(|e| e.id)
            .collect();
        let peers = rt.block_on(reg.list_peers())?;
        let ready = want.iter().all(|id| {
            eligible.contains(id)
                && peers
                    .iter()
                    .any(|p| &p.id == id && p.code_hash.as_deref() == Some(code_hash))
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let table: Vec<String> = peers
                .iter()
                .map(|p| {
                    format!(
                        "{}: eligible={} verified={} status={} last heartbeat {} code {}",
                        p.id,
                        eligible.contains(&p.id),
                        p.master_key_verified,
                        p.status.as_str(),
                        p.last_heartbeat
                            .map(|t| format!("{}s ago", now - t))
                            .unwrap_or_else(|| "never".into()),
                        p.code_hash.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            anyhow::bail!(
                "the registry does not show every node eligible on v1.0.0 (code {code_hash}) \
                 after {}s (heartbeat timeout {heartbeat_timeout_secs}s):\n  {}\n(see {}/nodes/*/agent.log); {}",
                ELIGIBLE_DEADLINE.as_secs(),
                table.join("\n  "),
                serve_log.parent().unwrap_or(serve_log).display(),
                log_tail(serve_log)
            );
        }
        std::thread::sleep(POLL);
    }
}

fn describe_hashes(hashes: &BTreeMap<String, Option<String>>) -> String {
    hashes
        .iter()
        .map(|(id, h)| format!("{id}: {}", h.as_deref().unwrap_or("no answer")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn get_json(url: &str) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .ok()?;
        c.get(url).send().await.ok()?.json().await.ok()
    })
}

/// node id → committed code hash, as each agent reports on `GET /status`.
fn fleet_code_hashes(fleet: &Fleet) -> BTreeMap<String, Option<String>> {
    fleet
        .nodes
        .iter()
        .map(|n| {
            let h = get_json(&format!("{}/status", n.address))
                .and_then(|v| v["code_hash"].as_str().map(str::to_owned));
            (n.id.clone(), h)
        })
        .collect()
}

/// Polls every agent's `/status` until all report `hash` or `within` has passed; returns
/// how many do and what each reports.
pub(super) fn wait_converged(
    fleet: &Fleet,
    hash: &str,
    within: Duration,
) -> (usize, BTreeMap<String, Option<String>>) {
    let deadline = Instant::now() + within;
    loop {
        let hashes = fleet_code_hashes(fleet);
        let n = hashes
            .values()
            .filter(|h| h.as_deref() == Some(hash))
            .count();
        if n == fleet.nodes.len() || Instant::now() > deadline {
            return (n, hashes);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

async fn post_all(
    nodes: &[(String, String)],
    bytes: &[u8],
) -> BTreeMap<String, Result<serde_json::Value, String>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default();
    let mut set = tokio::task::JoinSet::new();
    for (id, addr) in nodes {
        let (c, id, url, body) = (
            client.clone(),
            id.clone(),
            format!("{addr}/apply"),
            bytes.to_vec(),
        );
        set.spawn(async move {
            let r = match c.post(&url).body(body).send().await {
                Err(e) => Err(e.to_string()),
                Ok(resp) if resp.status().is_success() => Ok(resp.json().await.unwrap_or_default()),
                Ok(resp) => Err(format!(
                    "HTTP {}: {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                )),
            };
            (id, r)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(Ok((id, r))) = set.join_next().await {
        out.insert(id, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{error_scale, pick_port};

    #[test]
    fn a_port_is_handed_out_once_even_before_anyone_binds_it() {
        // 1,000 draws from 12,768 ports: without the record of handed-out ports two of
        // them meet with probability 1 − e^(−39); nothing binds them in between.
        let ports: Vec<u16> = (0..1000).map(|_| pick_port(|_| true).unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| (20_000..32_768).contains(p)));
    }

    #[test]
    fn node_error_scales_are_lognormal_with_mean_one_and_fixed_per_node() {
        assert_eq!(error_scale(0.0, 3), 1.0);
        let scales: Vec<f64> = (1..=64).map(|i| error_scale(0.3, i)).collect();
        assert_eq!(
            scales,
            (1..=64).map(|i| error_scale(0.3, i)).collect::<Vec<_>>()
        );
        let mean = scales.iter().sum::<f64>() / 64.0;
        assert!((0.85..1.15).contains(&mean), "mean factor {mean}");
        let logs: Vec<f64> = scales.iter().map(|s| s.ln()).collect();
        let m = logs.iter().sum::<f64>() / 64.0;
        let sd = (logs.iter().map(|l| (l - m).powi(2)).sum::<f64>() / 63.0).sqrt();
        assert!((0.2..0.4).contains(&sd), "σ of ln(factor) {sd}");
    }
}
