//! Shared fixture: a real release repository (git2), real keys and trust file, a
//! node.toml, the test app binary, and helpers to sign manifests and talk HTTP.

#![allow(dead_code)]

use fleetgate_codehash::CodeHashConfig;
use fleetgate_trust::{
    Keyring, Manifest, ManifestKind, RollbackOf, SigningKey, TrustedKey, rfc3339_seconds,
    sign_manifest, unix_now,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_fleetgate-agent");
pub const APP_BIN: &str = env!("CARGO_BIN_EXE_fleetgate-test-app");

/// A port free now, and never one this process was handed before: the kernel may give
/// the same port to two `bind(0)` calls in a row once the first listener is closed (a
/// CI run saw the agent and its app get one port, and the app crash-loop on it).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// One release commit.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    pub sha: String,
    pub code_hash: String,
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub signer: SigningKey,
    pub identity: SigningKey,
    pub app_port: u16,
    pub agent_port: u16,
    pub config_path: PathBuf,
}

pub struct Opts {
    pub grace_secs: u64,
    pub orchestrator: Option<String>,
    pub install: Option<String>,
    /// Extra top-level TOML lines (tables may follow them).
    pub extra: String,
    /// Extra `[env]` lines.
    pub env: String,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            grace_secs: 4,
            orchestrator: None,
            install: Some("test -f VERSION && echo installed > .installed".into()),
            extra: String::new(),
            env: String::new(),
        }
    }
}

impl Fixture {
    pub fn new(opts: Opts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("release-repo");
        git2::Repository::init(&repo).expect("init repo");
        let signer = SigningKey::from_seed(&rand_seed(1));
        let identity_seed = rand_seed(2);
        let identity = SigningKey::from_seed(&identity_seed);
        let keyring =
            Keyring::new(1, 1, vec![TrustedKey::new(signer.public_key())]).expect("keyring");
        std::fs::create_dir_all(dir.path().join("keys")).expect("keys dir");
        std::fs::write(dir.path().join("keys/trust.json"), keyring.to_bytes()).expect("trust");
        std::fs::write(
            dir.path().join("keys/node.key"),
            hex::encode(identity_seed) + "\n",
        )
        .expect("node key");
        let app_port = free_port();
        let agent_port = free_port();
        let orchestrator = opts
            .orchestrator
            .map(|u| format!("orchestrator = \"{u}\"\nheartbeat_interval_secs = 1\nheartbeat_max_backoff_secs = 1\n"))
            .unwrap_or_default();
        let install = opts
            .install
            .map(|i| format!("install = {i:?}\n"))
            .unwrap_or_default();
        let config = format!(
            r#"node_id = "node-1"
identity_key = "keys/node.key"
trust_file = "keys/trust.json"
state_dir = "state"
remote = "release-repo"
listen = "127.0.0.1:{agent_port}"
{install}start = "exec '{APP_BIN}'"
health_grace_secs = {grace}
drain_secs = 2
crash_loop = 3
{orchestrator}
{extra}
[env]
PORT = "{app_port}"
{env}

[health]
http = "http://127.0.0.1:{app_port}/health"
interval_ms = 100
timeout_ms = 1000
"#,
            grace = opts.grace_secs,
            extra = opts.extra,
            env = opts.env,
        );
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).expect("config");
        Self {
            dir,
            repo,
            signer,
            identity,
            app_port,
            agent_port,
            config_path,
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A SQLite fleet registry in the fixture's directory with `node-1` registered under
    /// its identity key, at an address nothing answers on.
    pub fn registry_with_node(&self, rt: &tokio::runtime::Runtime) -> fleetgate_fleet::Registry {
        let db = self.dir.path().join("fleet.db");
        let reg = rt
            .block_on(fleetgate_fleet::Registry::connect(&format!(
                "sqlite://{}",
                db.display()
            )))
            .unwrap();
        let now = i64::try_from(unix_now()).unwrap();
        rt.block_on(reg.register_unverified(
            "node-1",
            "http://127.0.0.1:1",
            &self.identity.public_key_hex(),
            "r1",
            now,
        ))
        .unwrap();
        reg
    }

    pub fn config(&self) -> fleetgate_agent::NodeConfig {
        fleetgate_agent::NodeConfig::load(&self.config_path).expect("config loads")
    }

    /// Commits `VERSION` and `MODE` (healthy | unhealthy | crash) on top of HEAD.
    pub fn commit(&self, version: &str, mode: &str) -> Release {
        self.commit_with(version, mode, &[])
    }

    /// As [`Fixture::commit`], with extra files (`(path, content)`; an empty content
    /// removes the file from the tree).
    pub fn commit_with(&self, version: &str, mode: &str, files: &[(&str, &str)]) -> Release {
        let r = git2::Repository::open(&self.repo).expect("open");
        std::fs::write(self.repo.join("VERSION"), format!("{version}\n")).expect("write");
        std::fs::write(self.repo.join("MODE"), format!("{mode}\n")).expect("write");
        let mut idx = r.index().expect("index");
        idx.add_path(Path::new("VERSION")).expect("add");
        idx.add_path(Path::new("MODE")).expect("add");
        for (path, content) in files {
            if content.is_empty() {
                let _ = std::fs::remove_file(self.repo.join(path));
                let _ = idx.remove_path(Path::new(path));
            } else {
                std::fs::write(self.repo.join(path), content).expect("write");
                idx.add_path(Path::new(path)).expect("add");
            }
        }
        idx.write().expect("write index");
        let tree = r.find_tree(idx.write_tree().expect("tree")).expect("tree");
        let sig = git2::Signature::now("t", "t@example.invalid").expect("sig");
        let parent = r.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = r
            .commit(Some("HEAD"), &sig, &sig, version, &tree, &parents)
            .expect("commit");
        let sha = oid.to_string();
        let ch = fleetgate_codehash::code_hash_at(&self.repo, &sha, &CodeHashConfig::default())
            .expect("code hash");
        Release {
            version: version.to_owned(),
            sha,
            code_hash: ch.code_hash,
        }
    }

    pub fn manifest_struct(&self, seq: u64, rel: &Release) -> Manifest {
        let now = unix_now();
        Manifest {
            version: rel.version.clone(),
            git_sha: rel.sha.clone(),
            code_hash: rel.code_hash.clone(),
            file_manifest_hash: "f".repeat(64),
            guardrail_hash: String::new(),
            built_at: rfc3339_seconds(now - 10),
            sequence: seq,
            expires_at: now + 3600,
            canary_seed: "00ff".into(),
            ..Manifest::default()
        }
    }

    pub fn manifest(&self, seq: u64, rel: &Release) -> Vec<u8> {
        sign_manifest(&self.manifest_struct(seq, rel), &[&self.signer]).expect("sign")
    }

    pub fn rollback(&self, seq: u64, undoes: (u64, &Release), to: &Release) -> Vec<u8> {
        self.rollback_naming(seq, undoes, to, false)
    }

    /// A rollback order; with `name_code_hash`, `rollback_of.code_hash` is set too.
    pub fn rollback_naming(
        &self,
        seq: u64,
        undoes: (u64, &Release),
        to: &Release,
        name_code_hash: bool,
    ) -> Vec<u8> {
        let mut m = self.manifest_struct(seq, undoes.1);
        m.kind = ManifestKind::Rollback;
        m.rollback_of = Some(RollbackOf {
            sequence: undoes.0,
            version: undoes.1.version.clone(),
            code_hash: name_code_hash.then(|| undoes.1.code_hash.clone()),
        });
        m.return_to_version = Some(to.version.clone());
        m.return_to_code_hash = Some(to.code_hash.clone());
        m.return_to_git_sha = Some(to.sha.clone());
        sign_manifest(&m, &[&self.signer]).expect("sign rollback")
    }

    pub fn agent_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.agent_port)
    }

    /// Starts the agent binary as a child process (stderr to `agent-<n>.log`).
    pub fn spawn_agent(&self, crash_at: Option<&str>, n: u32) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{n}.log")))
            .expect("log file");
        let mut cmd = std::process::Command::new(AGENT_BIN);
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .env_remove(fleetgate_agent::CRASH_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(c) = crash_at {
            cmd.env(fleetgate_agent::CRASH_ENV, c);
        }
        cmd.spawn().expect("spawn agent")
    }

    pub fn agent_log(&self, n: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{n}.log"))).unwrap_or_default()
    }

    /// `GET /version` of the app: (version, slot, pid).
    pub fn app_version(&self) -> Option<(String, String, i32)> {
        let body = http_get(&format!("http://127.0.0.1:{}/version", self.app_port))?.1;
        let mut it = body.split_whitespace();
        Some((
            it.next()?.to_owned(),
            it.next()?.to_owned(),
            it.next()?.parse().ok()?,
        ))
    }

    pub fn current_link(&self) -> Option<String> {
        std::fs::read_link(self.state().join("current"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    pub fn floor(&self) -> u64 {
        fleetgate_trust::Floor::open(&self.state())
            .expect("floor")
            .sequence()
    }
}

fn rand_seed(n: u8) -> [u8; 32] {
    // Distinct per fixture and per role, deterministic per test is not needed: use the
    // clock and the pid so parallel tests never share keys by accident.
    let mut s = [n; 32];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    s[..16].copy_from_slice(&t.to_le_bytes());
    s[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    s[31] = n;
    s
}

/// Minimal blocking HTTP/1.1 client (std only): (status, body).
pub fn http(method: &str, url: &str, body: &[u8]) -> Option<(u16, String)> {
    http_full(method, url, body).map(|(status, _, body)| (status, body))
}

/// As [`http`], with the response head (status line and headers) too.
pub fn http_full(method: &str, url: &str, body: &[u8]) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // The agent's axum answers are not chunked for JSON bodies; the app sends
    // content-length. Good enough for tests.
    Some((status, head.to_owned(), body.to_owned()))
}

/// The value of header `name` (case-insensitive) in a response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn http_get(url: &str) -> Option<(u16, String)> {
    http("GET", url, b"")
}

pub fn post_apply(f: &Fixture, manifest: &[u8]) -> (u16, serde_json::Value) {
    let (status, body) = http("POST", &f.agent_url("/apply"), manifest).expect("POST /apply");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, v)
}

/// [`post_apply`], retried while the agent answers 503 `busy` (as a caller should).
pub fn post_apply_retrying(f: &Fixture, manifest: &[u8]) -> (u16, serde_json::Value) {
    let start = Instant::now();
    loop {
        let (code, v) = post_apply(f, manifest);
        if code != 503 || start.elapsed() > Duration::from_secs(30) {
            return (code, v);
        }
        assert_eq!(v["retryable"], true, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(f: &Fixture) -> serde_json::Value {
    let (_, body) = http_get(&f.agent_url("/status")).expect("GET /status");
    serde_json::from_str(&body).expect("status JSON")
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Whether `pid` is a live (non-zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Kills and reaps a child, ignoring errors.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops the app recorded in the state's pid file (tests clean up after themselves).
pub fn kill_app(f: &Fixture) {
    if let Ok(b) = std::fs::read(f.state().join("app.pid"))
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
        && let Some(pid) = v.get("pid").and_then(serde_json::Value::as_i64)
        && pid > 1
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
