//! Shared fixtures for the end-to-end tests: a sample application in a real git
//! repository in a temp dir, and the real `fleetgate` binary run as a child process.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// How long one `fleetgate run` on a demo fleet may take: its canary window (15 s,
/// extended to at most 120 s on thin evidence) and DEPLOY on a few nodes take well under
/// a minute even on a loaded 2-core machine; a run still going after this is held or wedged.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub app: PathBuf,
}

/// The `fleetgate` binary under test: cargo's, or `FLEETGATE_TEST_BIN` (a copy, so a long
/// run is not disturbed by a rebuild).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FLEETGATE_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleetgate").to_owned())
    })
}

impl Env {
    /// The sample application, committed and tagged v1.0.0.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        fleetgate_cli::demo::create_sample_repo(&app).unwrap();
        Env { dir, app }
    }

    pub fn config(&self) -> PathBuf {
        self.app.join("fleetgate.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.app.join("state")
    }

    /// Replace `from` by `to` in the (untracked-in-effect) config file.
    pub fn edit_config(&self, from: &str, to: &str) {
        let p = self.config();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(self.config()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("FLEETGATE_") || k.starts_with("HEVOLVE_") {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn fg(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn status(&self) -> Value {
        let out = self.fg(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Edit the working tree with `f`, commit everything and tag it.
    pub fn commit_tag(&self, tag: &str, f: impl FnOnce(&Path)) {
        f(&self.app);
        git(&self.app, &["add", "-A"]);
        git(&self.app, &["commit", "-q", "-m", tag]);
        git(&self.app, &["tag", tag]);
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stage names of `stage_history`.
pub fn history(state: &Value) -> Vec<String> {
    state["stage_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["stage"].as_str().unwrap().to_owned())
        .collect()
}

/// A running demo fleet (`fleetgate demo --prepare-only`): agents, apps, fleet endpoint.
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// Each peer's id and the code hash it last reported, from `fleet list --json`.
    pub fn code_hashes(&self) -> Vec<(String, String)> {
        self.peer_field("code_hash")
    }
    /// Each peer's id and its string `field` ("" when unset), from `fleet list --json`.
    pub fn peer_field(&self, field: &str) -> Vec<(String, String)> {
        let peers: Value =
            serde_json::from_slice(&self.fg(&["fleet", "list", "--json"]).stdout).unwrap();
        peers
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p[field].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
    /// A new healthy commit of the sample app, tagged `tag`.
    pub fn tag_release(&self, tag: &str) {
        let app = self.dir.path().join("sample-app");
        std::fs::write(app.join("NOTES"), format!("{tag}\n")).unwrap();
        git(&app, &["add", "NOTES"]);
        git(&app, &["commit", "-qm", tag]);
        git(&app, &["tag", tag]);
    }
    /// Runs the started pipeline until its canary window opens, then kills the run
    /// (the canary node keeps the release); returns the canary node.
    pub fn stop_in_canary_window(&self) -> String {
        let mut run = self.spawn(&["run"]);
        let s = self.wait_until("the canary window", |s| {
            s["canary"].get("window_start").is_some()
        });
        let _ = run.kill();
        let _ = run.wait();
        s["canary"]["selection"]["nodes"][0]
            .as_str()
            .unwrap()
            .to_owned()
    }
    pub fn prepare(nodes: u16) -> Fleet {
        Fleet::prepare_with(nodes, &[])
    }
    /// [`Fleet::prepare`] with more `demo` options (e.g. `--node-error-spread 0.5`).
    pub fn prepare_with(nodes: u16, extra: &[&str]) -> Fleet {
        let fleet = Fleet {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = Command::new(bin())
            .args([
                "demo",
                "--prepare-only",
                "--nodes",
                &nodes.to_string(),
                "--dir",
            ])
            .arg(fleet.dir.path())
            .args(extra)
            .output()
            .unwrap();
        // The demo returns only once the fleet endpoint answers and the registry shows
        // every node eligible for a canary on v1.0.0 (or fails, saying which part is not).
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert!(text(&out).contains("fleet ready"), "{}", text(&out));
        fleet
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("fleetgate.toml")
    }
    pub fn fg(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
    pub fn status(&self) -> Value {
        serde_json::from_slice(&self.fg(&["status", "--json"]).stdout).unwrap()
    }
    /// `fleetgate run`, bounded by [`RUN_LIMIT`]: a run that is held (an inconclusive
    /// canary waits for an operator) or wedged fails the test saying where it stood,
    /// instead of hanging until the harness kills it with nothing to show.
    pub fn run(&self) -> Output {
        self.fg_within(&["run"], RUN_LIMIT)
    }
    /// `fg`, bounded: a command still running after `limit` is killed and the test fails
    /// naming where the pipeline stood (its stage and latest gate verdict) and what the
    /// command printed — a held canary or a wedged run fails fast and says why.
    pub fn fg_within(&self, args: &[&str], limit: Duration) -> Output {
        self.background(args).wait_within(limit)
    }
    /// A `fleetgate` command started in the background, its output kept in files.
    pub fn background(&self, args: &[&str]) -> Running<'_> {
        self.background_on(&self.config(), args)
    }
    /// [`Fleet::background`] with another orchestrator's config (a standby's).
    pub fn background_on(&self, config: &Path, args: &[&str]) -> Running<'_> {
        let file = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempfile_in(self.dir.path())
                .unwrap()
        };
        let (out, err) = (file("fg-out"), file("fg-err"));
        let child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .unwrap();
        Running {
            fleet: self,
            args: args.join(" "),
            child,
            out,
            err,
        }
    }
    /// Waits until every node has heartbeated `n` times: the history each canary node is
    /// judged against (its own rate before the update) is then at least `n` seconds long.
    /// A canary judged against a history of a few seconds (a fleet just started) can be
    /// held inconclusive however long its window runs: the history's uncertainty does not
    /// shrink with more window data.
    pub fn wait_for_history(&self, n: i64) {
        let t = Instant::now();
        loop {
            let peers: Value =
                serde_json::from_slice(&self.fg(&["fleet", "list", "--json"]).stdout).unwrap();
            let least = peers
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["last_seq"].as_i64().unwrap_or(0))
                .min()
                .unwrap_or(0);
            if least >= n {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "the nodes did not heartbeat {n} times in 180 s: {peers}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    /// Waits until every node's latest heartbeat reports `hash` (heartbeats lag an apply
    /// by a second or two); fails after 120 s naming `what` and each node's hash.
    pub fn wait_all_on(&self, hash: &str, what: &str) {
        let t = Instant::now();
        loop {
            let hashes = self.code_hashes();
            if hashes.iter().all(|(_, h)| h == hash) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{what}: not every node runs {hash}: {hashes:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    pub fn wait_until(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

/// A `fleetgate` command running in the background ([`Fleet::background`]).
pub struct Running<'a> {
    fleet: &'a Fleet,
    args: String,
    child: Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Running<'_> {
    /// Waits for the command to end; one still running after `limit` is killed and the
    /// test fails naming the pipeline's stage, its latest verdict and the output's tail.
    pub fn wait_within(mut self, limit: Duration) -> Output {
        let t = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let s = self.fleet.status();
                let tail = |f: &tempfile::NamedTempFile| {
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(20)..].join("\n")
                };
                panic!(
                    "`fleetgate {}` still running after {limit:?}: stage `{}`, last verdict {}, \
                     failure {}\nstdout (tail):\n{}\nstderr (tail):\n{}",
                    self.args,
                    s["stage"],
                    s["gate_results"][s["stage"].as_str().unwrap_or("")],
                    s["failure_detail"],
                    tail(&self.out),
                    tail(&self.err),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Output {
            status,
            stdout: std::fs::read(self.out.path()).unwrap_or_default(),
            stderr: std::fs::read(self.err.path()).unwrap_or_default(),
        }
    }
}

impl Drop for Fleet {
    /// Stop every process of this fleet (agents stop their apps on SIGTERM).
    fn drop(&mut self) {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|pid| {
                // Agents and the fleet endpoint name the directory on their command line;
                // the apps agents supervise run with their working directory inside it
                // (an app whose agent was SIGKILLed is orphaned, not stopped).
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
                    || std::fs::read_link(format!("/proc/{pid}/cwd"))
                        .is_ok_and(|d| d.starts_with(&marker))
            })
            .collect();
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let t = Instant::now();
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && t.elapsed() < Duration::from_secs(15)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Asks the gossip node at `addr` what it holds (an anti-entropy probe that claims
/// nothing, from `sock`) and returns the manifest it answers with. The socket is not a
/// member the node knows, so it first proves its address: the node answers the first
/// probe with a small challenge (no amplification), and the probe that returns the
/// challenge's cookie with the manifest. A node handles the datagrams of one sender in
/// order, so its answer also means that everything `sock` sent it before was handled.
/// Asked again while unanswered (replies are rate-limited per round).
pub fn gossip_head(sock: &std::net::UdpSocket, addr: &str) -> Value {
    use fleetgate::gossip::Message;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let peer: std::net::SocketAddr = addr.parse().unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; fleetgate::gossip::MAX_MESSAGE_BYTES];
    let mut cookie = [0u8; fleetgate::gossip::COOKIE_BYTES];
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the gossip node at {addr} does not answer a probe"
        );
        let probe = Message::Probe { head: None, cookie }.encode().unwrap();
        sock.send_to(&probe, peer).unwrap();
        // Read until the answer from `peer` (other nodes may gossip to this socket too,
        // having learned it from the injected datagrams) or the read timeout.
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            if from != peer {
                continue;
            }
            // A `Challenge` asks for the probe again with its cookie; a `Manifest` (or,
            // holding nothing, a `DigestReply`) answers the proven probe; the node may
            // also gossip to this socket on its own (pushes, digests), which says nothing.
            if let Ok(Message::Challenge(c)) = Message::decode(&buf[..len]) {
                cookie = c;
                let probe = Message::Probe { head: None, cookie }.encode().unwrap();
                sock.send_to(&probe, peer).unwrap();
                continue;
            }
            match Message::decode(&buf[..len]) {
                Ok(Message::Manifest(m)) => return serde_json::from_slice(&m).unwrap(),
                Ok(Message::DigestReply(_)) => return Value::Null,
                _ => {}
            }
        }
    }
}

/// The strings of a JSON array (node ids), as a set; empty for anything else.
pub fn ids(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A PostgreSQL URL (from `FLEETGATE_TEST_PG_URL`) whose `search_path` is a fresh schema
/// of its own, or `None` (the test is recorded as skipped, `why` saying what for; CI
/// fails instead).
pub fn pg_schema(why: &str) -> Option<String> {
    let base = fleetgate_testkit::postgres_url(why)?;
    let schema = format!(
        "e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let out = Command::new("psql")
        .arg(&base)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE SCHEMA {schema}"),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "failed to create schema {schema}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("FLEETGATE_TEST_PG_URL is set but psql cannot run: {e}"),
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options[search_path]={schema}"))
}
