//! An agent process SIGKILLed at every step of an apply (the test-only crash point
//! `FLEETGATE_AGENT_CRASH_AT=<phase>:<sequence>` makes it kill itself right after the
//! journal records that step) restarts onto exactly the old or the new version: the
//! journal has no apply in flight, `current`, the journal and the running app agree, the
//! app the dead agent left running is gone, and only one app serves the port.

mod common;

use common::*;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Old,
    New,
}

fn crash_case(point: &str, bad_release: bool, expect: Expect) {
    let f = Fixture::new(Opts {
        grace_secs: 2,
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", if bad_release { "unhealthy" } else { "healthy" });
    let slot1 = format!("1-{}", &v1.sha[..12]);
    let slot2 = format!("2-{}", &v2.sha[..12]);

    // Agent 1: applies v1, then dies at `point` while applying v2.
    let mut a1 = f.spawn_agent(Some(&format!("{point}:2")), 1);
    wait_until(Duration::from_secs(20), "agent 1 listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}\n{}", f.agent_log(1));
    let m2 = f.manifest(2, &v2);
    let answer = http("POST", &f.agent_url("/apply"), &m2);
    let status_code = a1.wait().expect("agent 1 exits");
    assert!(
        answer.is_none(),
        "agent 1 should have died at {point}, answered {answer:?}\n{}",
        f.agent_log(1)
    );
    assert!(!status_code.success(), "{status_code:?}");
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.state().join("journal.json")).unwrap()).unwrap();
    assert!(
        !journal["apply"].is_null(),
        "the journal records the interrupted apply at {point}: {journal}"
    );
    // The app the dead agent left running (if any).
    let stray: Option<i32> = std::fs::read(f.state().join("app.pid"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pid"].as_i64())
        .map(|p| p as i32);

    // Agent 2: recovers.
    let mut a2 = f.spawn_agent(None, 2);
    wait_until(Duration::from_secs(30), "agent 2 listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    wait_until(Duration::from_secs(10), "the app answers", || {
        f.app_version().is_some()
    });
    let s = status(&f);
    let (want_version, want_slot, want_floor) = match expect {
        Expect::Old => ("v1.0.0", slot1.as_str(), 1),
        Expect::New => ("v2.0.0", slot2.as_str(), 2),
    };
    let log = f.agent_log(2);
    assert!(s["apply_phase"].is_null(), "{s}\n{log}");
    assert_eq!(s["version"], want_version, "{s}\n{log}");
    assert_eq!(s["slot"], want_slot, "{s}");
    assert_eq!(f.current_link().as_deref(), Some(want_slot), "{s}");
    assert_eq!(f.floor(), want_floor);
    let (ver, slot, pid) = f.app_version().unwrap();
    assert_eq!((ver.as_str(), slot.as_str()), (want_version, want_slot));
    if let Some(stray) = stray
        && stray != pid
    {
        assert!(!pid_alive(stray), "the stray app {stray} was stopped");
    }
    if expect == Expect::Old && !bad_release {
        assert!(
            !f.state().join("slots").join(&slot2).exists(),
            "the half-applied slot is removed"
        );
        // The interrupted release was not marked bad: it applies now.
        assert_eq!(s["last_report"]["outcome"], "interrupted", "{s}");
        let (code, r) = post_apply(&f, &m2);
        assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
        assert_eq!(f.app_version().unwrap().0, "v2.0.0");
    }
    if bad_release {
        assert_eq!(s["bad"][0]["sequence"], 2, "{s}");
        let (code, r) = post_apply(&f, &m2);
        assert_eq!((code, r["outcome"].as_str()), (409, Some("refused")), "{r}");
    }
    if expect == Expect::New {
        // Committed (the recovery finished it): the same manifest again is answered as
        // already applied, and nothing restarts.
        let (code, r) = post_apply(&f, &m2);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (200, Some("already_applied")),
            "{r}"
        );
        assert_eq!(r["running"]["slot"], want_slot, "{r}");
        assert_eq!(f.app_version().unwrap().2, pid, "not restarted");
        // An older manifest it never applied is still a replay.
        let (code, r) = post_apply(&f, &f.manifest(1, &v2));
        assert_eq!((code, r["reason"].as_str()), (409, Some("replayed")), "{r}");
        assert_eq!(r["floor"], 2, "{r}");
    }
    // Graceful stop of agent 2 stops its app.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a2.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = a2.wait().unwrap();
    assert!(st.success(), "{st:?}\n{}", f.agent_log(2));
    assert!(f.app_version().is_none(), "the app stopped with the agent");
    if std::env::var_os("SHOW_AGENT_LOGS").is_some() {
        eprintln!(
            "stray={stray:?}\n--- agent 1\n{}\n--- agent 2\n{}",
            f.agent_log(1),
            f.agent_log(2)
        );
    }
    kill_app(&f);
}

#[test]
fn killed_after_recording_fetch_restarts_on_old() {
    crash_case("fetch", false, Expect::Old);
}

#[test]
fn killed_after_recording_install_restarts_on_old() {
    crash_case("install", false, Expect::Old);
}

#[test]
fn killed_after_recording_stop_old_restarts_on_old() {
    crash_case("stop_old", false, Expect::Old);
}

#[test]
fn killed_after_recording_start_new_restarts_on_old() {
    crash_case("start_new", false, Expect::Old);
}

#[test]
fn killed_while_new_app_runs_unverified_restarts_on_old() {
    crash_case("probe", false, Expect::Old);
}

#[test]
fn killed_after_recording_commit_restarts_on_new() {
    crash_case("commit", false, Expect::New);
}

#[test]
fn killed_after_switching_current_restarts_on_new() {
    crash_case("commit_switched", false, Expect::New);
}

#[test]
fn killed_after_raising_floor_restarts_on_new() {
    crash_case("commit_floor", false, Expect::New);
}

#[test]
fn killed_during_rollback_of_a_bad_release_restarts_on_old() {
    crash_case("roll_back", true, Expect::Old);
}

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused() {
    let f = Fixture::new(Opts::default());
    let mut a1 = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent 1 listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let mut a2 = f.spawn_agent(None, 2);
    let st = a2.wait().unwrap();
    assert!(!st.success());
    let log = f.agent_log(2);
    assert!(log.contains("locked by another agent"), "{log}");
    kill(&mut a1);
}
