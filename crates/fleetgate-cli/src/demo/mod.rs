//! `fleetgate demo`: a throwaway workspace with the sample application in a git
//! repository, run through the pipeline with progress, a timeline and a summary.
//!
//! The sample application's files are embedded in the binary, so the demo works from an
//! installed `fleetgate` as well as from a checkout.
//!
//! * `fleet`: the fleet set-up and its readiness checks (also `--prepare-only`);
//! * `scenario`: the scripted releases, the checks and the summary.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod fleet;
mod scenario;

/// The sample application (examples/sample-app), embedded.
pub const SAMPLE_APP: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../../examples/sample-app/README.md"),
    ),
    (
        "app.conf",
        include_str!("../../../../examples/sample-app/app.conf"),
    ),
    (
        "build.sh",
        include_str!("../../../../examples/sample-app/build.sh"),
    ),
    (
        "test.sh",
        include_str!("../../../../examples/sample-app/test.sh"),
    ),
    (
        "audit.sh",
        include_str!("../../../../examples/sample-app/audit.sh"),
    ),
    (
        "bench.sh",
        include_str!("../../../../examples/sample-app/bench.sh"),
    ),
    (
        "tests/config_has_name.t",
        include_str!("../../../../examples/sample-app/tests/config_has_name.t"),
    ),
    (
        "tests/build_artifact.t",
        include_str!("../../../../examples/sample-app/tests/build_artifact.t"),
    ),
    (
        "tests/figures_are_numbers.t",
        include_str!("../../../../examples/sample-app/tests/figures_are_numbers.t"),
    ),
    (
        "policy/guardrails.toml",
        include_str!("../../../../examples/sample-app/policy/guardrails.toml"),
    ),
    (
        "fleetgate.toml",
        include_str!("../../../../examples/sample-app/fleetgate.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../../examples/sample-app/.gitignore"),
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
    /// With --prepare-only: leave the nodes empty (no v1.0.0), as a new fleet is before
    /// its first release — put one on it with `fleetgate fleet provision v1.0.0`.
    #[arg(long, requires = "prepare_only")]
    pub empty_nodes: bool,
    /// With --prepare-only: the fleet registry at this URL instead of the embedded SQLite
    /// file. A `postgres://` URL also keeps the run's state there (`[state] store =
    /// "postgres"`): orchestrators on other machines (their own config and state
    /// directory, the same URL) are standbys that take a run over when its orchestrator
    /// dies.
    #[arg(long, requires = "prepare_only", value_name = "URL")]
    pub database_url: Option<String>,
    /// With --database-url: the pipeline lease's lifetime in seconds (how long a standby
    /// waits after the holder stopped renewing it).
    #[arg(long, requires = "database_url", value_name = "SECS")]
    pub lease_ttl_secs: Option<u32>,
    /// Node-to-node spread σ of the apps' natural exception rate: node i's rate is the
    /// release's `error_rate` × exp(σ·Zᵢ − σ²/2) (Zᵢ standard normal, drawn from a fixed
    /// seed; mean factor 1), set as `DEMO_ERROR_SCALE` in the node's `[env]`. Real nodes
    /// differ like this (hardware, region, tenant mix); the canary judge must not mistake
    /// it for a regression. 0 (the default) = identical nodes.
    #[arg(long, default_value_t = 0.0, value_parser = parse_spread)]
    pub node_error_spread: f64,
    /// How many of the nodes (the last ones) run in pull mode, as nodes behind NAT do:
    /// the orchestrator cannot reach them (they enroll with an address nothing answers
    /// on, and stay out of gossip), so every release and rollback order reaches them
    /// through their feed on the fleet endpoint, polled every second.
    #[arg(long, default_value_t = 0)]
    pub pull_nodes: u16,
}

/// With `--keep`: `fleetgate serve` (the API and the Updates page) on a free local port
/// with a fresh API token written 0600 to `api.token` in the workspace, left running like
/// the agents. Returns the page's URL, the token file and the token.
fn start_page(exe: &Path, config: &Path, dir: &Path) -> anyhow::Result<(String, PathBuf, String)> {
    use std::io::Read as _;
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("no randomness for the API token")?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let token_file = dir.join("api.token");
    fleetgate_store::write_atomic(&token_file, token.as_bytes(), Some(0o600))?;
    let port = fleet::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    std::process::Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", &addr, "--token-file"])
        .arg(&token_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log"))?)
        .spawn()
        .context("failed to start `fleetgate serve`")?;
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        anyhow::ensure!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "`fleetgate serve` did not listen on {addr} within 30 s (see {})",
            dir.join("serve.log").display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok((format!("http://{addr}/"), token_file, token))
}

fn parse_spread(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (σ, e.g. 0.3)"))?;
    if v.is_finite() && (0.0..=2.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("σ must be between 0 and 2, got {s}"))
    }
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
# Thin evidence (a loaded machine slows the apps' traffic) extends the window: the
# judge keeps judging up to 2 minutes before it holds the release for an operator.
max_window_secs = 120
sample_interval_secs = 1
max_exception_rate_increase = 0.5
# Each canary node is judged against its own rate before the update (the heartbeats
# of pre_window_secs, default 1800): the demo fleet is seconds old, so its history is
# short, and the fleet's spread between nodes (seen in every node's history) fills in.
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

/// The `[fleet]` (and, for PostgreSQL, `[state]`) sections of a demo on a registry at
/// `url`.
fn shared_registry_config(url: &str, lease_ttl_secs: Option<u32>) -> String {
    let mut t = format!(
        "\n[fleet]\ndatabase_url = {}\n",
        toml::Value::String(url.to_owned())
    );
    if let Some(ttl) = lease_ttl_secs {
        t.push_str(&format!("lease_ttl_secs = {ttl}\n"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        t.push_str(
            "\n# The run's state lives in the registry: a standby orchestrator (its own config\n\
             # and state_dir, this database_url) takes a run over when its orchestrator dies.\n\
             [state]\nstore = \"postgres\"\n",
        );
    }
    t
}

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
    let mut config_text = DEMO_CONFIG.replace("GUARDRAIL", &guardrail);
    if let Some(url) = &args.database_url {
        config_text.push_str(&shared_registry_config(url, args.lease_ttl_secs));
    }
    std::fs::write(&config, config_text)?;

    // 2. The fleet: registry, fleet endpoint, N agents on v1.0.0, ready for a canary.
    //    A `--prepare-only` fleet that fails to come up is stopped, not left behind.
    let fleet::Prepared {
        mut fleet,
        orchestrator: o,
    } = fleet::prepare(&fleet::Plan {
        dir: &dir,
        app: &app,
        config: &config,
        exe: &exe,
        nodes: args.nodes,
        keep: args.keep,
        error_spread: args.node_error_spread,
        empty_nodes: args.empty_nodes,
        pull_nodes: args.pull_nodes,
    })?;
    if args.prepare_only {
        fleet.keep = true;
        println!(
            "\nfleet ready (agents, apps and the fleet endpoint keep running). Config: {}",
            config.display()
        );
        if args.empty_nodes {
            println!(
                "  the nodes run nothing yet: fleetgate --config {} fleet provision v1.0.0",
                config.display()
            );
        }
        println!(
            "  fleetgate --config {} start v2.0.0 && fleetgate --config {} run",
            config.display(),
            config.display()
        );
        if !args.empty_nodes {
            println!(
                "  (start after about {}s: the canary judges each node against its own v1.0.0 \
                 history, and a fleet started seconds ago can be held inconclusive)",
                fleet::PRE_HISTORY.as_secs()
            );
        }
        println!("  stop everything: pkill -f {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }

    // 3. The scenario: v2.0.0 released, v3.0.0 caught by the canary.
    fleet.wait_for_history()?;
    let report = scenario::run(&fleet, &o)?;
    scenario::print_summary(&report, &fleet, t0.elapsed());
    if args.keep {
        scenario::print_keep_hints(&fleet, &config);
        match start_page(&exe, &config, &dir) {
            Ok((url, token_file, token)) => {
                println!("\nthe Updates page (fleetgate serve, left running): {url}");
                println!(
                    "  sign in with the API token {token} (in {}, mode 0600)",
                    token_file.display()
                );
            }
            Err(e) => println!("\nthe Updates page did not start: {e:#}"),
        }
    } else {
        drop(fleet);
        drop(o);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if report.all_ok() {
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
