//! Gate isolation through the real binary: a hostile BUILD command
//! (`tests/gate_attack.py`) tries every way open to it to obtain the signing key and the
//! API token — its environment, every ancestor's and every visible process's
//! `/proc/PID/environ` and `/proc/PID/mem`, ptrace, the key file, raw block devices —
//! while the orchestrator holds the key both in environment variables and in
//! `[signing] key_file`, and the token in `FLEETGATE_API_TOKEN`, under a parent shell
//! that has them all in its environment. It must find nothing, while the same attempts
//! against canaries it may legitimately reach succeed (so the test cannot pass by not
//! trying). As root, and again as an unprivileged user (`setpriv --reuid=65534`); and
//! with the kernel refusing user namespaces, where the Landlock fallback must still keep
//! every process outside the gate out of its reach and the report must say "degraded".

mod common;
use common::{Env, bin, code, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENV_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const HART_KEY: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const TOKEN: &str = "api-token-4b1d7e0c9a2f6d8e";
const ATTACK: &str = include_str!("gate_attack.py");

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

struct Attack {
    report: Value,
    loot: Vec<u8>,
    /// The key file's secret (seed hex).
    key_file_secret: String,
    /// A public string inside the canary file (the trust file).
    canary_file_text: String,
    out: std::process::Output,
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// How the orchestrator is run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Under {
    /// As the test's user.
    Me,
    /// As uid/gid 65534 (`setpriv`).
    Nobody,
    /// In a user namespace that may create no more user namespaces, so the kernel
    /// refuses the gate's namespaces (the Landlock fallback then applies).
    NoUserns,
}

/// A command running `program` as `under` says, without the test's own fleetgate
/// variables.
fn as_user(under: Under, program: &str) -> Command {
    let mut c = match under {
        Under::Me => Command::new(program),
        Under::Nobody => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                program,
            ]);
            c
        }
        Under::NoUserns => {
            let mut c = Command::new("unshare");
            c.args([
                "--user",
                "--map-root-user",
                "--",
                "sh",
                "-c",
                "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
                "sh",
                program,
            ]);
            c
        }
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETGATE_") || k.starts_with("HEVOLVE_") || k == "MASTER_PRIVATE_KEY_HEX"
        {
            c.env_remove(k);
        }
    }
    c
}

/// Start v1.0.0 with the hostile build command and advance once (BUILD) under a parent
/// shell holding every secret in its environment.
fn run_attack(under: Under) -> Attack {
    let env = Env::new();
    let root = env.dir.path().to_owned();
    let out_dir = root.join("attack-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::create_dir_all(root.join("home")).unwrap();
    let script = root.join("gate_attack.py");
    std::fs::write(&script, ATTACK).unwrap();
    let key_file = env.app.join("keys/release.key");
    let canary_file = env.app.join("keys/trust.json");
    let pid_file = out_dir.join("orchestrator.pid");
    let key_file_secret = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    let canary_file_text = std::fs::read_to_string(env.app.join("keys/release.key.pub"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        std::fs::read_to_string(&canary_file)
            .unwrap()
            .contains(&canary_file_text)
    );
    env.edit_config(
        "command = \"sh build.sh\"",
        &format!(
            "command = \"{} {} {} {} {} {} && sh build.sh\"",
            python(),
            script.display(),
            out_dir.display(),
            key_file.display(),
            canary_file.display(),
            pid_file.display()
        ),
    );
    if under == Under::Nobody {
        chown_tree(&root, 65534);
    }
    let fg = |args: &[&str]| {
        as_user(under, bin())
            .arg("--config")
            .arg(env.config())
            .args(args)
            .env("HOME", root.join("home"))
            .output()
            .unwrap()
    };
    let out = fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // `sh` stays the orchestrator's parent (no exec), with the secrets in its environ.
    let out = as_user(under, "sh")
        .args([
            "-c",
            "\"$FG\" --config \"$CFG\" advance & echo $! > \"$PIDFILE\"; wait $!",
        ])
        .env("FG", bin())
        .env("CFG", env.config())
        .env("PIDFILE", &pid_file)
        .env("HOME", root.join("home"))
        .env("FLEETGATE_SIGNING_KEY_HEX", ENV_KEY)
        .env("MASTER_PRIVATE_KEY_HEX", HART_KEY)
        .env("FLEETGATE_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    let report_path = out_dir.join("report.json");
    let report: Value = serde_json::from_slice(
        &std::fs::read(&report_path)
            .unwrap_or_else(|e| panic!("the gate wrote no report ({e}): {}", text(&out))),
    )
    .unwrap();
    let loot = std::fs::read(out_dir.join("loot.bin")).unwrap();
    let status = fg(&["status", "--json"]);
    assert_eq!(code(&status), 0, "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["gate_results"]["building"]["outcome"],
        "passed",
        "{}",
        text(&out)
    );
    let level = if under == Under::NoUserns {
        "degraded"
    } else {
        "full"
    };
    assert_eq!(status["gate_isolation"]["level"], level, "{status:#}");
    Attack {
        report,
        loot,
        key_file_secret,
        canary_file_text,
        out,
    }
}

/// The attempts on processes were made and worked on the canaries, and no process gave
/// away a secret (environment, /proc/PID/environ, /proc/PID/mem, ptrace).
fn assert_no_secret_from_a_process(a: &Attack) {
    let r = &a.report;
    let attempts = &r["attempts"];
    let ctx = format!("{r:#}\n{}", text(&a.out));
    // Not vacuous: the same ways work against what the gate may reach.
    assert!(attempts["own_environment"].as_u64().unwrap() > 0, "{ctx}");
    assert!(attempts["canary_environ"].as_u64().unwrap() > 0, "{ctx}");
    assert!(
        attempts["canary_mem"]["bytes"].as_u64().unwrap() > 0,
        "{ctx}"
    );
    assert_eq!(attempts["canary_ptrace"], "attached", "{ctx}");
    assert_eq!(r["canary_in_loot"], true, "{ctx}");
    assert!(attempts["canary_file"].as_u64().unwrap() > 0, "{ctx}");
    assert!(contains(&a.loot, &a.canary_file_text), "{ctx}");
    // Every ancestor was tried, and the orchestrator's own PID.
    let ancestors = r["ancestors"].as_array().unwrap();
    assert!(!ancestors.is_empty(), "{ctx}");
    assert!(r["orchestrator_pid"].as_u64().is_some(), "{ctx}");
    for p in r["visible_pids"].as_array().unwrap() {
        if *p != r["self"] && *p != r["canary_child"] {
            assert!(
                !attempts[format!("environ:{p}")].is_null(),
                "environ of visible {p} not tried: {ctx}"
            );
        }
    }
    for p in r["targets"].as_array().unwrap() {
        for way in ["environ", "mem", "ptrace"] {
            assert!(
                !attempts[format!("{way}:{p}")].is_null(),
                "{way} of {p} not tried: {ctx}"
            );
        }
    }
    for p in ancestors {
        assert!(
            r["targets"].as_array().unwrap().contains(p),
            "ancestor {p} not a target: {ctx}"
        );
    }
    for (what, secret) in [
        ("$FLEETGATE_SIGNING_KEY_HEX", ENV_KEY),
        ("$MASTER_PRIVATE_KEY_HEX", HART_KEY),
        ("$FLEETGATE_API_TOKEN", TOKEN),
    ] {
        assert!(
            !contains(&a.loot, secret),
            "the gate obtained {what}: {ctx}"
        );
    }
}

/// Full isolation: nothing from any process, nor from the key file or the disk.
fn assert_found_nothing(a: &Attack) {
    assert_no_secret_from_a_process(a);
    let attempts = &a.report["attempts"];
    let ctx = format!("{:#}\n{}", a.report, text(&a.out));
    assert_eq!(
        attempts["key_file"],
        serde_json::json!(0),
        "the key file read as something: {ctx}"
    );
    assert!(
        !contains(&a.loot, &a.key_file_secret),
        "the gate obtained the key file's key: {ctx}"
    );
    assert_eq!(
        attempts["block_devices"],
        serde_json::json!([]),
        "block devices visible: {ctx}"
    );
}

#[test]
fn a_hostile_build_gate_obtains_neither_the_signing_key_nor_the_api_token() {
    let a = run_attack(Under::Me);
    assert_found_nothing(&a);
}

#[test]
fn the_same_as_an_unprivileged_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED as a separate case: the suite already runs as a non-root user, so the test above is the unprivileged one"
        );
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        panic!("setpriv (util-linux) is needed to run the orchestrator as uid 65534");
    }
    let a = run_attack(Under::Nobody);
    assert_found_nothing(&a);
}

/// The detector itself: the same script, run without isolation under a shell holding a
/// secret and with the key file readable, finds both — so the tests above could fail.
#[test]
fn without_isolation_the_same_attack_finds_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_owned();
    let script = root.join("gate_attack.py");
    std::fs::write(&script, ATTACK).unwrap();
    let key_file = root.join("release.key");
    let secret_in_file = "aa11bb22cc33dd44ee55ff6600778899aa11bb22cc33dd44ee55ff6600778899";
    std::fs::write(&key_file, secret_in_file).unwrap();
    let canary = root.join("public.txt");
    std::fs::write(&canary, "public").unwrap();
    let pid_file = root.join("parent.pid");
    let out = Command::new("sh")
        .args([
            "-c",
            "echo $$ > \"$PIDFILE\"; env -u FLEETGATE_SIGNING_KEY_HEX \"$PY\" \"$SCRIPT\" \"$OUT\" \"$KEY\" \"$CANARY\" \"$PIDFILE\"; exit $?",
        ])
        .env("PIDFILE", &pid_file)
        .env("PY", python())
        .env("SCRIPT", &script)
        .env("OUT", &root)
        .env("KEY", &key_file)
        .env("CANARY", &canary)
        .env("FLEETGATE_SIGNING_KEY_HEX", ENV_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let loot = std::fs::read(root.join("loot.bin")).unwrap();
    assert!(
        contains(&loot, ENV_KEY),
        "an ancestor's environ was not read"
    );
    assert!(contains(&loot, secret_in_file), "the key file was not read");
}

/// A gate that times out is killed with everything it started, even a process that left
/// its process group with `setsid` (the PID namespace dies with its PID 1): the escapee
/// holds a lock, which is free again once `advance` returned.
#[test]
fn a_timed_out_gate_is_killed_with_everything_it_started_even_in_a_new_session() {
    let env = Env::new();
    let lock = env.dir.path().join("held.lock");
    let marker = env.dir.path().join("held");
    std::fs::write(&lock, "").unwrap();
    env.edit_config(
        "command = \"sh build.sh\"\ntimeout_secs = 120",
        &format!(
            "command = \"setsid flock {} sh -c 'echo held > {}; sleep 300' & sleep 300\"\ntimeout_secs = 2",
            lock.display(),
            marker.display()
        ),
    );
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    let out = env.fg(&["advance"]);
    let s = env.status();
    let building = &s["gate_results"]["building"];
    assert_eq!(building["outcome"], "failed", "{}", text(&out));
    assert!(
        building["detail"].as_str().unwrap().contains("timed out"),
        "{building}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "held",
        "the escapee never ran"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let free = Command::new("flock")
            .args(["-n", lock.to_str().unwrap(), "true"])
            .status()
            .unwrap()
            .success();
        if free {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process that left the gate's process group still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Where the kernel refuses user namespaces (here: a user namespace whose
/// `user.max_user_namespaces` is 0), every command that runs gates says so at start,
/// `status` says so with the reason, and `FLEETGATE_REQUIRE_GATE_ISOLATION=1` turns the
/// gate into a failure instead of running it unisolated.
#[test]
fn degraded_isolation_is_said_at_start_and_in_status_and_can_be_required() {
    let env = Env::new();
    let no_userns = |args: &[&str], require: bool| {
        let mut c = Command::new("unshare");
        c.args([
            "--user",
            "--map-root-user",
            "--",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
            "sh",
            bin(),
            "--config",
        ])
        .arg(env.config())
        .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("FLEETGATE_") || k.starts_with("HEVOLVE_") {
                c.env_remove(k);
            }
        }
        if require {
            c.env("FLEETGATE_REQUIRE_GATE_ISOLATION", "1");
        }
        c.output().unwrap()
    };
    let probe = no_userns(&["status"], false);
    if code(&probe) != 0 && text(&probe).contains("unshare") {
        panic!(
            "this machine cannot run `unshare --user` to simulate a kernel without user namespaces: {}",
            text(&probe)
        );
    }
    assert_eq!(code(&probe), 0, "{}", text(&probe));
    let said = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        said.contains(
            "gate isolation: DEGRADED (no namespaces: unshare(user, mount, pid namespaces)"
        ),
        "{said}"
    );
    assert_eq!(code(&no_userns(&["start", "v1.0.0"], false)), 0);
    // Required: the gate fails, naming why, and never ran.
    let out = no_userns(&["advance"], true);
    assert!(
        text(&out).contains("warning: gate isolation: DEGRADED"),
        "{}",
        text(&out)
    );
    let s = env.status();
    assert_eq!(s["gate_results"]["building"]["outcome"], "failed");
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("gate isolation is required"),
        "{s:#}"
    );
    assert!(
        !env.state_dir()
            .join("work")
            .join(s["run_id"].as_str().unwrap())
            .join("build")
            .exists()
    );
    let status = no_userns(&["status", "--json"], false);
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["gate_isolation"]["level"], "degraded");
    assert_eq!(v["gate_isolation"]["namespaces"], false);
    assert_eq!(v["gate_isolation"]["landlock"], true, "{v:#}");
    assert_eq!(v["gate_isolation"]["orchestrator_non_dumpable"], true);
    assert_eq!(v["gate_isolation"]["environment_sealed"], true);
}

/// Without user namespaces the Landlock fallback still keeps every process outside the
/// gate (ancestors, the orchestrator) out of its reach; the key file is then readable,
/// which is why it is reported as degraded (asserted here so the report stays true).
#[test]
fn without_namespaces_the_landlock_fallback_keeps_processes_out_of_reach() {
    let a = run_attack(Under::NoUserns);
    assert_no_secret_from_a_process(&a);
    // The gate's own shell (the script's parent) is inside the domain; every other
    // target — the helper's ancestors, the orchestrator, the shell above it — is not.
    let own_shell = &a.report["ancestors"][0];
    let outside: Vec<&Value> = a.report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| *p != own_shell)
        .collect();
    assert!(outside.len() >= 3, "{:#}", a.report);
    for p in outside {
        assert_ne!(
            a.report["attempts"][format!("ptrace:{p}")],
            "attached",
            "{:#}",
            a.report
        );
        assert!(
            a.report["attempts"][format!("environ:{p}")]["error"]
                .as_str()
                .is_some(),
            "{:#}",
            a.report
        );
    }
    assert!(
        contains(&a.loot, &a.key_file_secret),
        "the fallback hides the key file after all: update the degraded report"
    );
}
