//! GETTING-STARTED.md, followed command by command: every ```sh block of the guide, in
//! order, in one bash (with `set -euo pipefail` added, so any failing command fails the
//! test), with the real `fleetgate` binary on PATH, a fresh HOME and free ports. Then the
//! outcome the guide promises: every node on the good release, the bad one rolled back.

mod common;
use common::{bin, code, text};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The guide's shell blocks, in order.
fn guide_blocks() -> Vec<String> {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/GETTING-STARTED.md"))
        .expect("GETTING-STARTED.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in guide.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    // The guide runs under `set -o pipefail` here (and in many users' shells): a reader
    // that stops early (`grep -q`, `head`) kills the writer with SIGPIPE, the pipe fails,
    // and a wait loop built on it ends at once, nondeterministically — it let the guide
    // finish (and stop its agents) before the rollback reached the canary node.
    for line in blocks
        .iter()
        .flat_map(|b| b.lines())
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        for early in ["| grep -q", "| head"] {
            assert!(
                !line.contains(early),
                "`{line}`: `{early}` ends the writer early; under pipefail the pipe fails at random"
            );
        }
    }
    blocks
}

/// A base port with the 24 ports the guide uses free right now.
fn free_port_base() -> u16 {
    for _ in 0..200 {
        // Below the kernel's ephemeral range (32768–60999 by default), so the ports other
        // tests get from `bind(0)` cannot land on the guide's.
        let noise = u32::from(fastrand_u16()) ^ (std::process::id() % 12_000);
        let base = u16::try_from(20_000 + noise % 12_000).expect("below 32,000");
        if (0..24).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no 24 free consecutive ports");
}

fn fastrand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (t ^ (t >> 16)) as u16
}

#[test]
fn the_getting_started_guide_runs_as_written() {
    // The guide's service is Python, and it waits for the agents with curl.
    for (program, args) in [
        ("python3", &["--version"][..]),
        ("curl", &["--version"][..]),
    ] {
        if !fleetgate_testkit::require(
            program,
            program,
            args,
            &format!("{program} is not installed; GETTING-STARTED.md NOT followed"),
        ) {
            return;
        }
    }
    let blocks = guide_blocks();
    assert!(
        blocks.len() >= 6,
        "the guide has its six steps: {}",
        blocks.len()
    );
    let home = tempfile::tempdir().unwrap();
    let bindir = home.path().join("bin");
    std::fs::create_dir_all(&bindir).unwrap();
    std::os::unix::fs::symlink(bin(), bindir.join("fleetgate")).unwrap();
    let tour = home.path().join("fleetgate-tour");
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = home.path().join("guide.log");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .env("HOME", home.path())
        .env("PATH", path)
        .env("PORT_BASE", free_port_base().to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(home.path().join("guide.err")).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETGATE_") || k.starts_with("HEVOLVE_") {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the guide did not finish in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let err = std::fs::read_to_string(home.path().join("guide.err")).unwrap_or_default();
    assert!(
        status.success(),
        "the guide failed ({status}) after {:?}\n--- stdout\n{out}\n--- stderr\n{err}",
        started.elapsed()
    );
    assert!(out.contains("fleetgate run exited 4"), "{out}");
    println!("the guide ran in {:?}", started.elapsed());

    // What the guide promised, read back from the pipeline and the registry.
    let fg = |args: &[&str]| fleetgate(&tour, args).unwrap();
    let status = fg(&["status", "--json"]);
    assert_eq!(code(&status), 0, "{}", text(&status));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["stage"], "rolled_back", "{s}");
    assert_eq!(s["version"], "v1.2.0");
    assert_eq!(s["last_completed"]["version"], "v1.1.0", "{s}");
    // The guide waits (up to 30 s) for every node to report v1.1.0 while its agents run;
    // its shell's EXIT trap stops them, so the registry now holds their last heartbeats.
    let list = fg(&["fleet", "list", "--json"]);
    assert_eq!(code(&list), 0, "{}", text(&list));
    let peers: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let peers = peers
        .as_array()
        .or_else(|| peers["peers"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(peers.len(), 3, "{peers:?}");
    let behind: Vec<&serde_json::Value> = peers
        .iter()
        .filter(|p| p["current_version"] != "v1.1.0")
        .collect();
    assert!(
        behind.is_empty(),
        "every node back on v1.1.0: {behind:?}\n{}",
        diagnostics(&tour, &behind)
    );
}

/// What a failed wait needs to be understood: the run, its outbox, and the end of the
/// fleet endpoint's and the lagging nodes' logs (the guide's directory is a tempdir that
/// is gone once the test ends).
fn diagnostics(tour: &std::path::Path, behind: &[&serde_json::Value]) -> String {
    let fg = |args: &[&str]| {
        fleetgate(tour, args)
            .map(|o| text(&o))
            .unwrap_or_else(|e| format!("{args:?}: {e}"))
    };
    let tail = |path: std::path::PathBuf| {
        let all = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("{e}"));
        let lines: Vec<&str> = all.lines().collect();
        format!(
            "--- {} (last 150 lines)\n{}",
            path.display(),
            lines[lines.len().saturating_sub(150)..].join("\n")
        )
    };
    let mut out = vec![
        format!("--- status --json\n{}", fg(&["status", "--json"])),
        format!("--- outbox list\n{}", fg(&["outbox", "list"])),
        tail(tour.join("fleet.log")),
    ];
    if let Some(home) = tour.parent() {
        out.push(tail(home.join("guide.log")));
    }
    for p in behind {
        if let Some(id) = p["id"].as_str() {
            out.push(tail(tour.join("nodes").join(id).join("agent.log")));
        }
    }
    out.join("\n")
}

/// `fleetgate ARGS` run in the guide's directory.
fn fleetgate(tour: &std::path::Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(bin()).current_dir(tour).args(args).output()
}
