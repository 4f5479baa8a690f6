//! CLI conventions (issue 15), through the real binary: under `--json` every outcome —
//! errors too — is one JSON document on stdout with an `error_kind`; `config` and
//! `tools list` speak JSON; shell completions and manual pages are generated.

mod common;
use common::{Env, bin, code, text};
use serde_json::Value;
use std::process::Command;

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts the JSON error shape and returns the document.
fn json_error(out: &std::process::Output, kind: &str, exit: i32) -> Value {
    assert_eq!(code(out), exit, "{}", text(out));
    let v = json_of(out);
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error_kind"], kind, "{v}");
    assert_eq!(v["exit_code"], exit, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the error says what: {v}"
    );
    v
}

#[test]
fn json_errors_name_their_kind_on_stdout() {
    let env = Env::new();
    // Bad input.
    let v = json_error(
        &env.fg(&["start", "v1.0", "--json"]),
        "invalid_arguments",
        1,
    );
    assert!(
        v["error"].as_str().unwrap().contains("invalid version"),
        "{v}"
    );
    // A refused transition: nothing to advance yet, then a second start.
    json_error(&env.fg(&["advance", "--json"]), "refused", 1);
    assert_eq!(code(&env.fg(&["start", "v1.0.0", "--json"])), 0);
    let v = json_error(&env.fg(&["start", "v1.0.0", "--json"]), "refused", 1);
    assert!(v["error"].as_str().unwrap().contains("in progress"), "{v}");
    // A usage error is JSON too when --json was asked for; without it, plain text.
    let v = json_error(&env.fg(&["status", "--json", "--bogus"]), "usage", 2);
    assert!(v["error"].as_str().unwrap().contains("--bogus"), "{v}");
    let plain = env.fg(&["status", "--bogus"]);
    assert_eq!(code(&plain), 2);
    assert!(plain.stdout.is_empty(), "{}", text(&plain));
    // A corrupt state file: its own kind and exit code.
    std::fs::write(env.state_dir().join("upgrade_state.json"), "{\"stage\": ").unwrap();
    let v = json_error(&env.fg(&["status", "--json"]), "corrupt_state", 6);
    assert!(v["error"].as_str().unwrap().contains("corrupt"), "{v}");
    // A config that does not load: named at its line in the file as written (not in
    // the re-serialised text the environment overrides are merged into).
    env.edit_config("[run]", "[run]\nbogus_key = 1");
    let written = std::fs::read_to_string(env.config()).unwrap();
    let line = 1 + written.lines().position(|l| l == "bogus_key = 1").unwrap();
    assert!(line > 20, "the typo is far down the file (line {line})");
    let v = json_error(&env.fg(&["status", "--json"]), "config", 1);
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("bogus_key"), "{v}");
    assert!(error.contains(&format!("line {line}")), "{v}");
    // An override that is wrong is reported as the override's.
    let mut c = env.command(&["status", "--json"]);
    c.env("FLEETGATE_CANARY_PCT", "lots");
    let out = c.output().unwrap();
    let v = json_error(&out, "config", 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("FLEETGATE_CANARY_PCT"),
        "{v}"
    );
}

#[test]
fn config_and_tools_list_speak_json() {
    let env = Env::new();
    let out = env.fg(&["config", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v = json_of(&out);
    assert!(v["config"]["canary"]["pct"].is_number(), "{v}");
    assert!(v["base_dir"].is_string(), "{v}");
    let out = env.fg(&["config", "--env", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v = json_of(&out);
    let overrides = v["overrides"].as_array().unwrap();
    assert!(
        overrides
            .iter()
            .any(|o| o["variable"] == "FLEETGATE_CANARY_PCT" && o["key"] == "canary.pct"),
        "{v}"
    );
    let out = env.fg(&["tools", "list", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let tools = json_of(&out);
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in [
        "start_upgrade",
        "advance_upgrade_pipeline",
        "rollback_upgrade",
        "check_upgrade_status",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let status = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "check_upgrade_status")
        .unwrap();
    assert_eq!(status["read_only"], true);
}

#[test]
fn completions_and_manual_pages_are_generated() {
    let run = |args: &[&str]| Command::new(bin()).args(args).output().unwrap();
    let bash = run(&["completions", "bash"]);
    assert_eq!(code(&bash), 0, "{}", text(&bash));
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("_fleetgate()"), "{script}");
    assert!(
        script.contains("provision"),
        "nested commands are completed"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(
        String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef fleetgate"),
        "{}",
        text(&zsh)
    );
    assert_eq!(code(&run(&["completions", "klingon"])), 2);

    let man = run(&["man"]);
    assert_eq!(code(&man), 0, "{}", text(&man));
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH fleetgate"), "{page}");
    assert!(
        page.contains("EXIT CODES"),
        "the exit codes are in the page"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for page in [
        "fleetgate.1",
        "fleetgate-start.1",
        "fleetgate-fleet-provision.1",
    ] {
        let p = dir.path().join(page);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}

/// A running gate says where its log is, how long it has run (every
/// `FLEETGATE_PROGRESS_SECS`), and how long it took.
#[test]
fn a_running_gate_shows_its_log_and_elapsed_time() {
    let env = Env::new();
    env.edit_config(
        "command = \"sh build.sh\"",
        "command = \"sh -c 'sleep 3 && sh build.sh'\"",
    );
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    let out = env
        .command(&["advance"])
        .env("FLEETGATE_PROGRESS_SECS", "1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let started = err
        .lines()
        .find(|l| l.contains("running gate…"))
        .unwrap_or_else(|| panic!("{err}"));
    let log = started
        .split("(log: ")
        .nth(1)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no log path: {started}"));
    assert!(log.ends_with("building.log"), "{started}");
    assert!(
        std::fs::metadata(log).is_ok(),
        "the log named is the gate's: {log}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("still running after") && l.contains(log)),
        "{err}"
    );
    let finished = err
        .lines()
        .find(|l| l.contains("PASSED") || l.contains("passed"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(finished.contains("(took "), "{finished}");
}
