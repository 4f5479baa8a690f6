//! High availability on PostgreSQL (`[state] store = "postgres"`): orchestrator A runs a
//! release into CANARY (or DEPLOY) and is SIGKILLed, its state directory deleted;
//! orchestrator B — its own config and empty state directory, the same registry — waits
//! for A's lease to expire, takes it and finishes *the same run* (same run id, canary
//! selection and window) from the shared state. A revived A is fenced out and changes
//! nothing. A bad release handed over the same way ends `rolled_back` with every node
//! back on the last good release. Releases ship built artifacts, which live in A's state
//! directory and in the shared run state: the nodes B deploys to get them from the
//! shared copy.

mod common;
use common::{Fleet, code, history, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Ha {
    fleet: Fleet,
    /// The standby's config: the demo's, with its own state directory.
    b: PathBuf,
}

fn ha_fleet() -> Option<Ha> {
    let url = common::pg_schema("the high-availability test needs it")?;
    let fleet = Fleet::prepare_with(4, &["--database-url", &url, "--lease-ttl-secs", "6"]);
    let a = std::fs::read_to_string(fleet.config()).unwrap();
    assert!(a.contains("store = \"postgres\""), "{a}");
    // Releases of built artifacts (as in tests/artifact_release.rs): A's BUILD stores
    // them in A's state directory, which dies with A; B's rollback orders list them and
    // the nodes B deploys to download them from `fleet serve`, which must find them in
    // the shared run state.
    let a = a.replacen(
        "command = \"sh build.sh\"\n",
        "command = \"sh build.sh\"\nartifacts = [\"app.conf\", \"build/*.env\"]\n",
        1,
    );
    assert!(
        a.contains("artifacts = ["),
        "the demo config has a build command"
    );
    std::fs::write(fleet.config(), &a).unwrap();
    let b = fleet.dir.path().join("fleetgate-b.toml");
    std::fs::write(
        &b,
        a.replacen("state_dir = \"state\"", "state_dir = \"state-b\"", 1),
    )
    .unwrap();
    fleet.wait_for_history(30);
    Some(Ha { fleet, b })
}

fn fg_on(config: &Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn status_on(config: &Path) -> Value {
    let out = fg_on(config, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `start` as A, retried while the lease of the previous run's orchestrator (B) has not
/// expired yet (refused with exit 5, nothing changed).
fn start_as_a(ha: &Ha, version: &str) {
    let t = Instant::now();
    loop {
        let out = ha.fleet.fg(&["start", version]);
        if code(&out) == 0 {
            return;
        }
        assert_eq!(code(&out), 5, "{}", text(&out));
        assert!(text(&out).contains("pipeline lease"), "{}", text(&out));
        assert!(t.elapsed() < Duration::from_secs(60), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Handover {
    /// A's state (from the shared store) just before A was killed.
    before: Value,
    /// The state when B's `run` ended.
    after: Value,
    /// B's output.
    out: Output,
}

/// A runs `version` until `kill_when` holds; A is SIGKILLed and its state directory
/// deleted; B runs the rest. While B holds the lease, a revived A is refused.
fn handover(ha: &Ha, version: &str, what: &str, kill_when: impl Fn(&Value) -> bool) -> Handover {
    start_as_a(ha, version);
    let mut a = ha.fleet.spawn(&["run"]);
    let before = ha.fleet.wait_until(what, kill_when);
    let _ = a.kill(); // SIGKILL
    let _ = a.wait();
    let held = status_on(&ha.b)["lease"].clone();
    assert_eq!(held["ours"], false, "A held the lease: {held}");
    let a_expiry = held["lease"]["expires_at"].as_i64().unwrap();
    std::fs::remove_dir_all(ha.fleet.dir.path().join("state")).unwrap();

    let b = ha.fleet.background_on(&ha.b, &["run"]);
    // B takes the lease only once A's has expired (the database's clock).
    let t = Instant::now();
    let taken = loop {
        let s = status_on(&ha.b);
        if s["lease"]["ours"] == true {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "B did not take the lease: {}",
            s["lease"]
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let since = taken["lease"]["lease"]["since"].as_i64().unwrap();
    assert!(
        since >= a_expiry,
        "B took the lease at {since}, before A's expired at {a_expiry}"
    );
    eprintln!(
        "handover: A's lease expired at {a_expiry}, B held it from {since} ({} s later, 1 s resolution)",
        since - a_expiry
    );
    assert!(
        taken["lease"]["lease"]["epoch"].as_i64().unwrap()
            > held["lease"]["epoch"].as_i64().unwrap(),
        "a takeover raises the fencing epoch: {} then {}",
        held,
        taken["lease"]
    );

    // A revived (empty state directory, same config) is fenced out: refused, nothing run.
    let out = ha.fleet.fg(&["advance"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("another orchestrator holds the pipeline lease"),
        "{}",
        text(&out)
    );
    let revived = ha.fleet.status();
    assert_eq!(revived["run_id"], before["run_id"], "A sees the shared run");
    assert_eq!(revived["lease"]["ours"], false);
    // The revived A's reads rebuilt its mirror, artifacts included; `fleet serve` (on A's
    // directory here) is left with no copy of its own, as on a host of its own: the nodes
    // B deploys to are served from the shared run state.
    let _ = std::fs::remove_dir_all(ha.fleet.dir.path().join("state").join("artifacts"));

    let out = b.wait_within(Duration::from_secs(240));
    assert!(
        text(&out).contains("resuming the run from the shared state"),
        "{}",
        text(&out)
    );
    let after = status_on(&ha.b);
    assert_eq!(
        after["run_id"], before["run_id"],
        "the same run, finished by B"
    );
    Handover { before, after, out }
}

#[test]
fn a_standby_finishes_a_run_killed_in_canary_and_rolls_back_a_bad_one() {
    let Some(ha) = ha_fleet() else { return };

    // A good release, A killed with the canary window open.
    let h = handover(&ha, "v2.0.0", "the canary window open", |s| {
        s["stage"] == "canary" && s["canary"]["window_start"].is_i64()
    });
    assert_eq!(code(&h.out), 0, "{}", text(&h.out));
    assert_eq!(h.after["stage"], "completed", "{}", h.after);
    // Same canary selection, seed and window as A's.
    assert_eq!(
        h.after["canary"]["selection"],
        h.before["canary"]["selection"]
    );
    assert_eq!(
        h.after["canary"]["window_start"],
        h.before["canary"]["window_start"]
    );
    assert_eq!(h.after["manifest"], h.before["manifest"]);
    let hist = history(&h.after);
    assert_eq!(
        hist.iter().filter(|s| *s == "canary").count(),
        1,
        "no stage repeated: {hist:?}"
    );
    assert_eq!(h.after["last_completed"]["version"], "v2.0.0");
    ha.fleet
        .wait_all_on(h.after["code_hash"].as_str().unwrap(), "after the handover");

    // A bad release handed over the same way: rolled back, every node on v2.0.0 again.
    // (A starts it — once B's lease expired — with its state directory rebuilt from the
    // shared store: the last completed release is there.)
    let good = h.after["code_hash"].as_str().unwrap().to_owned();
    let h = handover(&ha, "v3.0.0", "the canary window open", |s| {
        s["stage"] == "canary" && s["canary"]["window_start"].is_i64()
    });
    assert_eq!(h.after["stage"], "rolled_back", "{}", h.after);
    assert_eq!(h.after["last_completed"]["version"], "v2.0.0");
    assert_eq!(
        h.after["outbox"],
        serde_json::json!([]),
        "the rollback order was delivered"
    );
    ha.fleet.wait_all_on(&good, "after the handover");
}

#[test]
fn a_standby_finishes_a_run_killed_in_deploy() {
    let Some(ha) = ha_fleet() else { return };
    let h = handover(&ha, "v2.0.0", "DEPLOY", |s| s["stage"] == "deploying");
    assert_eq!(code(&h.out), 0, "{}", text(&h.out));
    assert_eq!(h.after["stage"], "completed", "{}", h.after);
    assert_eq!(
        h.after["canary"]["selection"],
        h.before["canary"]["selection"]
    );
    let hist = history(&h.after);
    assert_eq!(
        hist.iter().filter(|s| *s == "deploying").count(),
        1,
        "no stage repeated: {hist:?}"
    );
    ha.fleet
        .wait_all_on(h.after["code_hash"].as_str().unwrap(), "after the handover");
}

/// The registry out of reach (the database down, or a wrong address): `status` shows the
/// local mirror, saying where the shared state lives and why it could not be read; a
/// write is refused naming the database, each cause said once; nothing changed.
#[test]
fn with_the_registry_out_of_reach_status_shows_the_mirror_and_a_write_is_refused() {
    let Some(url) = common::pg_schema("the high-availability test needs it") else {
        return;
    };
    let fleet = Fleet::prepare_with(2, &["--database-url", &url, "--lease-ttl-secs", "6"]);
    assert_eq!(code(&fleet.fg(&["start", "v2.0.0"])), 0);
    let before = fleet.status();
    let live = std::fs::read_to_string(fleet.config()).unwrap();
    let dead_url = "postgres://postgres@127.0.0.1:1/test";
    assert!(live.contains(&url));
    let dead = fleet.dir.path().join("fleetgate-dead.toml");
    std::fs::write(&dead, live.replace(&url, dead_url)).unwrap();

    let out = fg_on(&dead, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["run_id"], before["run_id"], "the mirror's run: {s}");
    assert_eq!(s["stage"], "building");
    let note = s["state_store"]["mirror_only"].as_str().unwrap_or_default();
    assert!(
        note.contains("is unreachable")
            && note.contains("local mirror")
            && note.contains("127.0.0.1:1"),
        "{s}"
    );
    assert!(
        s["lease"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("fleet database"),
        "{s}"
    );
    let human = text(&fg_on(&dead, &["status"]));
    assert!(
        human.contains("WARNING:") && human.contains("local mirror"),
        "{human}"
    );

    let out = fg_on(&dead, &["advance"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("failed to open the fleet registry"), "{err}");
    assert_eq!(
        err.matches("connect to the fleet database").count(),
        1,
        "each cause said once: {err}"
    );
    // Nothing changed (the lease's figures are relative to now).
    let without_lease = |mut v: Value| {
        v.as_object_mut().unwrap().remove("lease");
        v
    };
    assert_eq!(without_lease(fleet.status()), without_lease(before));
}
