//! `fleetgate demo`: a throwaway workspace with the sample application in a git
//! repository, run through the pipeline with progress, a timeline and a summary.
//!
//! The sample application's files are embedded in the binary, so the demo works from an
//! installed `fleetgate` as well as from a checkout.

use anyhow::Context;
use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_runtime::{Orchestrator, load_config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The sample application (examples/sample-app), embedded.
pub const SAMPLE_APP: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../examples/sample-app/README.md"),
    ),
    (
        "app.conf",
        include_str!("../../../examples/sample-app/app.conf"),
    ),
    (
        "build.sh",
        include_str!("../../../examples/sample-app/build.sh"),
    ),
    (
        "test.sh",
        include_str!("../../../examples/sample-app/test.sh"),
    ),
    (
        "audit.sh",
        include_str!("../../../examples/sample-app/audit.sh"),
    ),
    (
        "bench.sh",
        include_str!("../../../examples/sample-app/bench.sh"),
    ),
    (
        "tests/config_has_name.t",
        include_str!("../../../examples/sample-app/tests/config_has_name.t"),
    ),
    (
        "tests/build_artifact.t",
        include_str!("../../../examples/sample-app/tests/build_artifact.t"),
    ),
    (
        "tests/figures_are_numbers.t",
        include_str!("../../../examples/sample-app/tests/figures_are_numbers.t"),
    ),
    (
        "policy/guardrails.toml",
        include_str!("../../../examples/sample-app/policy/guardrails.toml"),
    ),
    (
        "fleetgate.toml",
        include_str!("../../../examples/sample-app/fleetgate.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/sample-app/.gitignore"),
    ),
];

/// Options of `fleetgate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of node agents to start (real processes on 127.0.0.1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub nodes: u16,
    /// Workspace directory (default: a new directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the workspace and the node agents running afterwards, and print how to poke
    /// at them.
    #[arg(long)]
    pub keep: bool,
    /// Only set the fleet up (workspace, agents, fleet endpoint, v1.0.0 provisioned),
    /// leave it running and exit: for driving the pipeline by hand or from tests.
    #[arg(long)]
    pub prepare_only: bool,
}

fn commit_all(repo: &git2::Repository, message: &str, tag: &str) -> anyhow::Result<git2::Oid> {
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("fleetgate demo", "demo@fleetgate.invalid")?;
    let parents: Vec<git2::Commit<'_>> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    let oid = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parent_refs)?;
    let obj = repo.find_object(oid, None)?;
    repo.tag_lightweight(tag, &obj, false)?;
    Ok(oid)
}

/// Write the sample application into `dir` as a git repository tagged `v1.0.0`, with a
/// release key and trust file under `keys/` (git-ignored).
pub fn create_sample_repo(dir: &Path) -> anyhow::Result<()> {
    for (rel, text) in SAMPLE_APP {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("failed to write {}", p.display()))?;
    }
    let repo = git2::Repository::init(dir)?;
    commit_all(&repo, "sample-app v1.0.0", "v1.0.0")?;
    create_keys(dir)?;
    Ok(())
}

/// Replace `key=value` in the sample app's app.conf, commit, and tag.
fn release(dir: &Path, tag: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let p = dir.join("app.conf");
    let text = std::fs::read_to_string(&p)?;
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key}=")) {
                found = true;
                format!("{key}={value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(format!("{key}={value}"));
    }
    std::fs::write(&p, out.join("\n") + "\n")?;
    let repo = git2::Repository::open(dir)?;
    commit_all(&repo, &format!("sample-app {tag}"), tag)?;
    Ok(())
}

/// A release signing key (`keys/release.key`, mode 0600) and a 1-of-1 trust file
/// (`keys/trust.json`) for the sample app; `keys/` is git-ignored.
pub fn create_keys(dir: &Path) -> anyhow::Result<()> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let out = fleetgate_trust::keygen(&keys.join("release.key"), false)?;
    let public = fleetgate_trust::PublicKey::from_hex(&out.public_key_hex)?;
    let ring = fleetgate_trust::Keyring::single(public);
    fleetgate_store::write_atomic(&keys.join("trust.json"), &ring.to_bytes(), None)?;
    Ok(())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Node {
    id: String,
    address: String,
    child: Option<std::process::Child>,
}

struct Fleet {
    nodes: Vec<Node>,
    server: Option<std::process::Child>,
    keep: bool,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let server = self.server.take();
        let children: Vec<std::process::Child> = self
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
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if std::time::Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
        }
    }
}

fn get_json(url: &str) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
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

fn wait_converged(
    fleet: &Fleet,
    hash: &str,
    secs: u64,
) -> (usize, BTreeMap<String, Option<String>>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let hashes = fleet_code_hashes(fleet);
        let n = hashes
            .values()
            .filter(|h| h.as_deref() == Some(hash))
            .count();
        if n == fleet.nodes.len() || std::time::Instant::now() > deadline {
            return (n, hashes);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

const DEMO_CONFIG: &str = r#"
# fleetgate.toml written by `fleetgate demo` (short windows so the demo takes about a minute)
repo = "sample-app"
state_dir = "state"

[stages.build]
command = "sh build.sh"
timeout_secs = 120

[stages.test]
command = "sh test.sh"
junit_report = "target/junit.xml"
min_pass_rate = 0.95

[stages.audit]
command = "sh audit.sh"
[stages.audit.guardrails]
"policy/guardrails.toml" = "GUARDRAIL"

[stages.benchmark]
command = "sh bench.sh"
results = "target/bench.json"
tolerance = 0.05

[signing]
key_file = "sample-app/keys/release.key"
trust_file = "sample-app/keys/trust.json"

[canary]
pct = 0.10
min_nodes = 1
window_secs = 15
sample_interval_secs = 1
max_exception_rate_increase = 0.5
heartbeat_timeout_secs = 10
min_requests = 1000
apply_timeout_secs = 120

[deploy]
success_pct = 1.0
max_failure_pct = 0.05
deadline_secs = 180

[run]
poll_interval_secs = 1
"#;

/// Run the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let t0 = std::time::Instant::now();
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let d =
                std::env::temp_dir().join(format!("fleetgate-demo-{secs}-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
    };
    let app = dir.join("sample-app");
    if app.exists() {
        anyhow::bail!("{} already exists: pass an empty --dir", app.display());
    }
    std::fs::create_dir_all(&app)?;
    let exe = std::env::current_exe().context("cannot find the fleetgate executable")?;
    println!("fleetgate demo — workspace {}", dir.display());

    // 1. The sample application: v1.0.0 (what the fleet runs), v2.0.0 (good), v3.0.0
    //    (starts fine, but raises its exception rate tenfold).
    create_sample_repo(&app)?;
    release(&app, "v2.0.0", "feature_greeting", "on")?;
    release(&app, "v3.0.0", "error_rate", "0.10")?;
    // v2.1.0 (good again, from v3's tree with the error rate restored): for driving
    // further runs by hand after the demo.
    release(&app, "v2.1.0", "error_rate", "0.01")?;
    println!(
        "  sample app: {} (tags v1.0.0, v2.0.0 good, v3.0.0 bad: 10x exception rate)",
        app.display()
    );
    let guardrail = fleetgate_runtime::codehash::sha256_file(&app.join("policy/guardrails.toml"))?;
    let config = dir.join("fleetgate.toml");
    std::fs::write(&config, DEMO_CONFIG.replace("GUARDRAIL", &guardrail))?;
    let (cfg, base) = load_config(Some(&config))?;
    let db_url = fleetgate_runtime::fleet::database_url(&fleetgate_runtime::gates::GateContext {
        cfg: cfg.clone(),
        base: base.clone(),
        repo: base.join(&cfg.repo),
        state_dir: base.join(&cfg.state_dir),
    });
    let keep = args.keep || args.prepare_only;
    let mut fleet = Fleet {
        nodes: Vec::new(),
        server: None,
        keep,
    };
    let hb_port = free_port()?;
    let hb_url = format!("http://127.0.0.1:{hb_port}");
    let server = std::process::Command::new(&exe)
        .arg("--config")
        .arg(&config)
        .args([
            "fleet",
            "serve",
            "--listen",
            &format!("127.0.0.1:{hb_port}"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("fleet-serve.log"))?)
        .spawn()
        .context("failed to start `fleetgate fleet serve`")?;
    fleet.server = Some(server);
    println!("  orchestrator: registry {db_url}, heartbeat endpoint {hb_url}/api/fleet/heartbeat");

    // 2. N node agents, enrolled, each supervising the app in its own slots.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reg = rt.block_on(fleetgate_fleet::Registry::connect(&db_url))?;
    let key = fleetgate_trust::SigningKey::load(Some(&app.join("keys/release.key")))?;
    let keyring = fleetgate_trust::Keyring::load(&app.join("keys/trust.json"))?;
    let gossip_ports: Vec<u16> = (0..args.nodes)
        .map(|_| free_udp_port())
        .collect::<anyhow::Result<_>>()?;
    for i in 1..=args.nodes {
        let id = format!("node-{i:02}");
        let ndir = dir.join("nodes").join(&id);
        std::fs::create_dir_all(&ndir)?;
        let ident = fleetgate_trust::keygen(&ndir.join("identity.key"), false)?;
        let (apply_port, app_port) = (free_port()?, free_port()?);
        let address = format!("http://127.0.0.1:{apply_port}");
        let region = if i % 2 == 0 { "us" } else { "eu" };
        let fields = fleetgate_fleet::CertFields {
            node_id: id.clone(),
            public_key: ident.public_key_hex.clone(),
            region: region.into(),
            address: address.clone(),
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
listen = "127.0.0.1:{apply_port}"
install = "sh build.sh"
start = {start:?}
health_grace_secs = 15
drain_secs = 2
orchestrator = "{hb_url}"
heartbeat_interval_secs = 1
heartbeat_max_backoff_secs = 5
gossip_listen = "127.0.0.1:{gossip_port}"
seeds = {seeds:?}
gossip_round_ms = 200
gossip_anti_entropy_secs = 2

[env]
PORT = "{app_port}"

[health]
http = "http://127.0.0.1:{app_port}/health"
"#,
            trust = app.join("keys/trust.json").display().to_string(),
            remote = app.display().to_string(),
            start = format!("exec '{}' demo-app", exe.display()),
            gossip_port = gossip_ports[usize::from(i - 1)],
            seeds = (1..=3u16)
                .map(|k| format!(
                    "127.0.0.1:{}",
                    gossip_ports[usize::from((i - 1 + k) % args.nodes)]
                ))
                .collect::<Vec<_>>(),
        );
        std::fs::write(ndir.join("node.toml"), node_toml)?;
        let log = std::fs::File::create(ndir.join("agent.log"))?;
        let child = std::process::Command::new(&exe)
            .args(["node", "run", "--config"])
            .arg(ndir.join("node.toml"))
            .env("FLEETGATE_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start the agent of {id}"))?;
        fleet.nodes.push(Node {
            id,
            address,
            child: Some(child),
        });
    }
    println!(
        "  started {} node agents (logs: {}/nodes/*/agent.log)",
        fleet.nodes.len(),
        dir.display()
    );
    // DEPLOY hands releases to gossip through three of the nodes.
    let seeds: Vec<String> = gossip_ports
        .iter()
        .take(3)
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let mut text = std::fs::read_to_string(&config)?;
    text = text.replace(
        "[deploy]\n",
        &format!(
            "[deploy]\ngossip_seeds = [{}]\ngossip_linger_ms = 3000\n",
            seeds.join(", ")
        ),
    );
    std::fs::write(&config, text)?;
    let (cfg, base) = load_config(Some(&config))?;
    let o = Orchestrator::open(cfg, &base)?;

    // 3. Provision v1.0.0 on every node with a signed manifest, as an installer would.
    let v1 = fleetgate_runtime::codehash::code_hash_at(&app, "v1.0.0", &o.config().code_hash)?;
    let seq = fleetgate_trust::unix_now();
    let provision = fleetgate_trust::Manifest {
        schema_version: fleetgate_trust::MANIFEST_SCHEMA_VERSION,
        version: "v1.0.0".into(),
        git_sha: v1.commit.clone(),
        code_hash: v1.code_hash.clone(),
        file_manifest_hash: v1.file_manifest_hash.clone(),
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
        extra: serde_json::Map::new(),
    };
    let bytes = fleetgate_trust::sign_manifest(&provision, &[&key])?;
    o.store()
        .transact(|s| {
            fleetgate_core::handle(s, fleetgate_core::Event::SequenceUsed { sequence: seq })
                .map(|_| ())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_for_agents(&fleet, 30)?;
    let targets: Vec<(String, String)> = fleet
        .nodes
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
    let (n, _) = wait_converged(&fleet, &v1.code_hash, 60);
    println!(
        "  provisioned v1.0.0 on {n}/{} nodes (code hash {})",
        fleet.nodes.len(),
        &v1.code_hash[..12]
    );
    // Let every node report a few heartbeats on v1 before the first canary.
    std::thread::sleep(std::time::Duration::from_secs(3));
    if args.prepare_only {
        println!(
            "\nfleet ready (agents, apps and the fleet endpoint keep running). Config: {}",
            config.display()
        );
        println!(
            "  fleetgate --config {} start v2.0.0 && fleetgate --config {} run",
            config.display(),
            config.display()
        );
        println!("  stop everything: pkill -f {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }

    let mut show = |p| println!("    {}", crate::output::progress_line(&p));
    let mut checks: Vec<(String, bool)> = Vec::new();

    // 4. v2.0.0 through all seven stages.
    println!("\n== release v2.0.0 (good) ==");
    o.start("v2.0.0", None)?;
    let s2 = o.run(&mut show)?;
    print_timeline(&s2);
    let v2_hash = s2.code_hash.clone().unwrap_or_default();
    let (n2, _) = wait_converged(&fleet, &v2_hash, 30);
    checks.push((
        "v2.0.0 run ended `completed`".into(),
        s2.stage == Stage::Completed,
    ));
    checks.push((
        format!(
            "every node runs v2.0.0 ({n2}/{} by code hash)",
            fleet.nodes.len()
        ),
        n2 == fleet.nodes.len(),
    ));

    // 5. v3.0.0: the canary catches it.
    println!("\n== release v3.0.0 (bad: 10x exception rate) ==");
    o.start("v3.0.0", None)?;
    let s3 = o.run(&mut show)?;
    print_timeline(&s3);
    if let Some(r) = s3.gate_results.get(&Stage::Canary) {
        print_canary(&r.verdict.figures);
    }
    let (n3, hashes) = wait_converged(&fleet, &v2_hash, 30);
    let caught = s3.stage == Stage::RolledBack
        && s3
            .gate_results
            .get(&Stage::Canary)
            .is_some_and(|r| r.verdict.outcome == Outcome::Failed);
    checks.push((
        "v3.0.0 caught by the canary, run ended `rolled_back`".into(),
        caught,
    ));
    checks.push((
        "the rollback order was delivered (outbox empty)".into(),
        s3.outbox.is_empty(),
    ));
    checks.push((
        format!(
            "every node back on / still on v2.0.0 ({n3}/{} by code hash)",
            fleet.nodes.len()
        ),
        n3 == fleet.nodes.len(),
    ));

    println!("\n== summary ({:.0}s) ==", t0.elapsed().as_secs_f64());
    for (k, ok) in &checks {
        println!("  [{}] {k}", if *ok { "ok" } else { "FAILED" });
    }
    if n3 != fleet.nodes.len() {
        for (id, h) in &hashes {
            println!("    {id}: {}", h.as_deref().unwrap_or("no answer"));
        }
    }
    let all_ok = checks.iter().all(|(_, ok)| *ok);
    if args.keep {
        println!(
            "\nthe fleet keeps running (agents, apps); the heartbeat endpoint stops with this process. Try:"
        );
        println!("  fleetgate --config {} status", config.display());
        println!("  fleetgate --config {} fleet list", config.display());
        println!("  fleetgate --config {} canary-health", config.display());
        println!("  curl {}/status", fleet.nodes[0].address);
        println!(
            "  fleetgate --config {} tools call check_upgrade_status   # what an agent sees",
            config.display()
        );
        println!(
            "  fleetgate --config {} mcp   # the agent tools for an MCP client",
            config.display()
        );
    } else {
        drop(fleet);
        drop(o);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if all_ok {
        println!("\ndemo OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\ndemo FAILED: see the checks above (workspace {})",
            dir.display()
        );
        Ok(ExitCode::from(crate::exit::ERROR))
    }
}

fn wait_for_agents(fleet: &Fleet, secs: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    for n in &fleet.nodes {
        while get_json(&format!("{}/health", n.address)).is_none() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the agent of {} did not come up at {} (see its agent.log)",
                    n.id,
                    n.address
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(())
}

async fn post_all(
    nodes: &[(String, String)],
    bytes: &[u8],
) -> BTreeMap<String, Result<serde_json::Value, String>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
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

fn print_canary(f: &serde_json::Value) {
    println!("    canary verdict: {}", f["reason"].as_str().unwrap_or(""));
    for c in f["criteria"].as_array().into_iter().flatten() {
        println!(
            "      {:<22} {:<12} {}",
            c["criterion"].as_str().unwrap_or("?"),
            c["decision"].as_str().unwrap_or("?"),
            c["detail"].as_str().unwrap_or("")
        );
    }
}

fn print_timeline(state: &PipelineState) {
    println!(
        "  timeline of {} (run {}):",
        state.version,
        state.run_id.as_deref().unwrap_or("?")
    );
    let t0 = state.started_at.unwrap_or(0.0);
    for h in &state.stage_history {
        let why = h
            .reason
            .as_deref()
            .map(|r| format!("  ({})", r.lines().next().unwrap_or("")))
            .unwrap_or_default();
        println!("    +{:>6.2}s  {}{}", h.at - t0, h.stage, why);
    }
}
