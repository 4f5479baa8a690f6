//! HART drop-in, through the real binary: HART's tool calls (HART's arguments and
//! defaults, HART's result keys), adoption of HART's state file (idle and mid-run, and
//! where HART keeps it), and HART's environment variables (honoured, losing to
//! fleetgate's own names, never weakening a gate, never reaching gate commands).

mod common;
use common::{Env, code, text};
use serde_json::{Value, json};
use std::path::Path;

fn tool(env: &Env, name: &str, args: Value) -> Value {
    let out = env.fg(&["tools", "call", name, "--args", &args.to_string()]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}: {}", text(&out)))
}

#[test]
fn hart_style_tool_calls_succeed_and_answer_with_harts_keys() {
    let env = Env::new();

    // check_upgrade_status: HART's `pipeline` (its state dict) and `new_version`.
    let r = tool(&env, "check_upgrade_status", json!({}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["pipeline"]["stage"], "idle", "{r}");
    assert_eq!(
        r["pipeline"]["started_at"], 0.0,
        "HART writes 0 when idle: {r}"
    );
    assert_eq!(r["pipeline"]["stage_history"], json!([]));
    assert_eq!(r["new_version"]["new_version_detected"], true, "{r}");
    assert_eq!(r["new_version"]["version"], "v1.0.0");

    // capture_benchmark {}: HART's defaults (version detected: the tag at HEAD; tier fast).
    let r = tool(&env, "capture_benchmark", json!({}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["snapshot"]["version"], "v1.0.0", "{r}");
    assert_eq!(r["snapshot"]["tier"], "fast");
    assert!(!r["snapshot"]["benchmarks"].as_array().unwrap().is_empty());

    // get_benchmark_history: each entry carries HART's keys.
    let r = tool(&env, "get_benchmark_history", json!({}));
    assert_eq!(r["success"], true, "{r}");
    let e = &r["snapshots"][0];
    assert_eq!(e["version"], "v1.0.0");
    assert_eq!(e["tier"], "fast");
    assert!(e["timestamp"].as_f64().unwrap() > 1.0e9, "{e}");
    assert_eq!(
        e["benchmark_count"].as_u64().unwrap() as usize,
        e["benchmarks"].as_array().unwrap().len()
    );

    // compare_benchmarks: HART's `safe` and `reason`.
    let r = tool(
        &env,
        "compare_benchmarks",
        json!({"old_version": "v1.0.0", "new_version": "v1.0.0"}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["safe"], true, "{r}");
    assert_eq!(r["reason"], "all metrics pass");

    // register_benchmark with exactly HART's arguments: recorded, split without a shell,
    // heavy tier like HART's repository benchmarks, not runnable until allowed.
    let r = tool(
        &env,
        "register_benchmark",
        json!({"name": "quantum", "repo_url": "https://example.invalid/quantum.git",
               "requires_gpu": true, "min_vram_gb": 4.0,
               "run_command": "./bench.sh --out 'my results.json' $(touch pwned)",
               "metrics_file": "my results.json"}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["name"], "quantum");
    assert_eq!(r["installed"], false, "runs only once allowed: {r}");
    assert_eq!(
        r["benchmark"]["command"],
        json!([
            "./bench.sh",
            "--out",
            "my results.json",
            "$(touch",
            "pwned)"
        ])
    );
    assert_eq!(r["benchmark"]["results"], "my results.json");
    assert_eq!(r["benchmark"]["tier"], "heavy");
    assert_eq!(r["benchmark"]["requires_gpu"], true);
    assert_eq!(r["benchmark"]["min_vram_gb"], 4.0);
    // HART's minimal call names no command: refused with what to give, nothing recorded.
    let r = tool(
        &env,
        "register_benchmark",
        json!({"name": "cloned", "repo_url": "https://example.invalid/x.git"}),
    );
    assert_eq!(r["success"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("run_command"), "{r}");
    let r = tool(&env, "list_benchmarks", json!({}));
    assert_eq!(r["count"], 1, "{r}");
    assert_eq!(r["benchmarks"][0]["allowed"], false);
    assert!(
        !env.app.join("pwned").exists() && !env.dir.path().join("pwned").exists(),
        "nothing ran"
    );

    // check_canary_health with no canary: HART's answer, not an error.
    let r = tool(&env, "check_canary_health", json!({}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["canary_active"], false, "{r}");

    // start_upgrade with HART's default git_sha "": the tag of the version.
    let r = tool(
        &env,
        "start_upgrade",
        json!({"new_version": "v1.0.0", "git_sha": ""}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["stage"], "building");
    assert_eq!(r["git_sha"].as_str().unwrap().len(), 40, "{r}");

    // advance_upgrade_pipeline {}: BUILD runs and passes; HART's `in_progress` is true
    // only while a gate is still working.
    let r = tool(&env, "advance_upgrade_pipeline", json!({}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["stage_evaluated"], "building", "{r}");
    assert_eq!(r["outcome"], "passed", "{r}");
    assert_eq!(r["stage"], "testing", "{r}");
    assert_eq!(r["in_progress"], false, "{r}");

    // rollback_upgrade {}: HART's reason defaults to "", the state still records one.
    let r = tool(&env, "rollback_upgrade", json!({}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["rolled_back_from"], "testing", "{r}");
    assert_eq!(r["stage"], "rolled_back");
    let reason = r["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    assert_eq!(env.status()["rollback_reason"], reason);
}

const HART_IDLE: &str =
    r#"{"stage": "idle", "version": "", "git_sha": "", "started_at": 0, "stage_history": []}"#;

/// HART's orchestrator mid-run (its `start_upgrade` left `git_sha` empty).
const HART_TESTING: &str = r#"{
  "stage": "testing",
  "version": "v1.0.0",
  "git_sha": "",
  "started_at": 1771864669.14,
  "stage_history": [
    {"stage": "building", "at": 1771864669.14},
    {"stage": "testing", "at": 1771864671.5}
  ],
  "code_hash": "9f2c"
}"#;

/// HART's orchestrator in its canary window: the release already runs on canary nodes.
const HART_CANARY: &str = r#"{
  "stage": "canary",
  "version": "v1.0.0",
  "git_sha": "",
  "started_at": 1771864669.14,
  "stage_history": [
    {"stage": "building", "at": 1771864669.14},
    {"stage": "testing", "at": 1771864671.5},
    {"stage": "auditing", "at": 1771864680.0},
    {"stage": "benchmarking", "at": 1771864690.0},
    {"stage": "signing", "at": 1771864700.0},
    {"stage": "canary", "at": 1771864710.0}
  ],
  "code_hash": "9f2c"
}"#;

fn warnings(s: &Value) -> Vec<String> {
    s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

fn write_hart_state(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("upgrade_state.json"), text).unwrap();
}

#[test]
fn an_idle_hart_state_file_is_adopted_and_upgraded_on_the_next_write() {
    let env = Env::new();
    write_hart_state(&env.state_dir(), HART_IDLE);
    let s = env.status();
    assert_eq!(s["stage"], "idle");
    assert_eq!(s["started_at"], Value::Null);
    assert_eq!(s["warnings"], json!([]), "nothing quarantined: {s}");
    let orig = env.state_dir().join("upgrade_state.json.hart-orig");
    assert_eq!(std::fs::read_to_string(&orig).unwrap(), HART_IDLE);

    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(env.state_dir().join("upgrade_state.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk["schema_version"], 1, "upgraded: {on_disk}");
    assert_eq!(on_disk["stage"], "building");
    assert_eq!(std::fs::read_to_string(&orig).unwrap(), HART_IDLE, "kept");
}

#[test]
fn a_hart_run_in_progress_is_adopted_and_its_gates_run_again() {
    let env = Env::new();
    write_hart_state(&env.state_dir(), HART_TESTING);
    let s = env.status();
    assert_eq!(
        s["stage"], "building",
        "fleetgate runs every gate again: {s}"
    );
    assert_eq!(s["version"], "v1.0.0");
    assert_eq!(s["started_at"], 1771864669.14);
    assert_eq!(
        s["code_hash"],
        Value::Null,
        "HART's hash is not trusted for BUILD"
    );
    assert_eq!(
        common::history(&s),
        ["building", "testing", "building"],
        "HART's history is kept and the adoption recorded"
    );
    let adopted = &s["stage_history"][2];
    assert_eq!(adopted["from"], "testing");
    let reason = adopted["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("adopted from a HART state file at `testing`")
            && reason.contains("no evidence it can check")
            && reason.contains("nothing had left HART's orchestrator"),
        "{reason}"
    );
    assert_eq!(
        warnings(&s),
        [format!("this run was {reason}")],
        "status says why while the run is active"
    );
    // BUILD pins the commit HART left empty (the version's tag) and runs.
    let out = env.fg(&["advance", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = env.status();
    assert_eq!(s["stage"], "testing", "{s}");
    assert_eq!(s["git_sha"].as_str().unwrap().len(), 40, "{s}");
    assert!(s["code_hash"].is_string(), "BUILD computed it: {s}");
    assert_eq!(
        std::fs::read_to_string(env.state_dir().join("upgrade_state.json.hart-orig")).unwrap(),
        HART_TESTING
    );
}

#[test]
fn a_hart_run_adopted_in_its_canary_window_restarts_at_build_and_says_the_release_left() {
    let env = Env::new();
    write_hart_state(&env.state_dir(), HART_CANARY);
    let out = env.fg(&["status"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("warning: this run was adopted from a HART state file at `canary`"),
        "{}",
        text(&out)
    );
    let s = env.status();
    assert_eq!(s["stage"], "building", "{s}");
    assert_eq!(
        s["canary"],
        Value::Null,
        "HART kept no canary record to resume"
    );
    assert_eq!(s["manifest"], Value::Null, "nor a signed manifest");
    let last = s["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["from"], "canary");
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains("HART had already sent this release to its canary nodes")
            && reason.contains("no rollback order is sent"),
        "{reason}"
    );
    // The same over the tools.
    let r = tool(&env, "check_upgrade_status", json!({}));
    assert!(r["warnings"].to_string().contains("canary nodes"), "{r}");

    // BUILD runs; the file is fleetgate's from the first write on, and the warning stays
    // while the adopted run is active.
    let out = env.fg(&["advance"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(env.state_dir().join("upgrade_state.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk["schema_version"], 1);
    assert_eq!(on_disk["stage"], "testing");
    let s = env.status();
    assert!(warnings(&s)[0].contains("canary nodes"), "{s}");

    // Rolled back before fleetgate's own CANARY: as the reason said, no order is queued
    // (fleetgate never sent the release to any node), and the warning goes.
    let out = env.fg(&["rollback", "--reason", "operator", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = env.status();
    assert_eq!(s["stage"], "rolled_back");
    assert_eq!(s["outbox"], json!([]), "{s}");
    assert_eq!(warnings(&s), Vec::<String>::new());
}

#[test]
fn state_dir_follows_hevolve_db_path_unless_fleetgate_sets_it() {
    let env = Env::new();
    env.edit_config("state_dir = \"state\"\n", "");
    let hart = env.dir.path().join("hart");
    write_hart_state(&hart.join("agent_data"), HART_TESTING);
    let db = hart.join("hevolve.db");
    let status = |extra: &[(&str, &Path)]| -> Value {
        let mut c = env.command(&["status", "--json"]);
        c.env("HEVOLVE_DB_PATH", &db);
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // HART's location: beside $HEVOLVE_DB_PATH, in agent_data/.
    assert_eq!(status(&[])["version"], "v1.0.0");
    assert!(
        hart.join("agent_data/upgrade_state.json.hart-orig")
            .exists()
    );
    // fleetgate's own setting wins.
    let mine = env.dir.path().join("mine");
    let s = status(&[("FLEETGATE_STATE_DIR", &mine)]);
    assert_eq!(s["stage"], "idle", "{s}");
    assert!(mine.exists());
}

#[test]
fn hart_signing_key_variables_are_read_after_fleetgates_own() {
    let env = Env::new();
    let d = env.dir.path();
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let key = d.join(format!("{name}.key"));
        let out = env.fg(&["keygen", "--out", key.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let seed = std::fs::read_to_string(&key).unwrap().trim().to_owned();
        let public = std::fs::read_to_string(d.join(format!("{name}.key.pub")))
            .unwrap()
            .trim()
            .to_owned();
        keys.push((seed, public));
    }
    let sign = |vars: &[(&str, &str)]| -> String {
        let m = d.join("m.json");
        let mut c = env.command(&[
            "manifest",
            "sign",
            "--version",
            "v1.0.0",
            "--git-sha",
            &"a".repeat(40),
            "--code-hash",
            &"b".repeat(64),
            "--manifest-hash",
            &"c".repeat(64),
            "--output",
            m.to_str().unwrap(),
        ]);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        v["master_public_key"].as_str().unwrap().to_owned()
    };
    let (a, b) = (&keys[0], &keys[1]);
    assert_eq!(sign(&[("HEVOLVE_MASTER_PRIVATE_KEY_HEX", &a.0)]), a.1);
    assert_eq!(sign(&[("HEVOLVE_MASTER_PRIVATE_KEY", &a.0)]), a.1);
    assert_eq!(
        sign(&[
            ("HEVOLVE_MASTER_PRIVATE_KEY_HEX", &a.0),
            ("FLEETGATE_SIGNING_KEY_HEX", &b.0)
        ]),
        b.1,
        "fleetgate's own name wins"
    );
}

#[test]
fn hart_variables_never_reach_gate_commands_and_dev_mode_skips_nothing() {
    let env = Env::new();
    env.edit_config(
        "command = \"sh build.sh\"",
        "command = \"env > \\\"$FLEETGATE_STATE_DIR/gate-env.txt\\\"; sh build.sh\"",
    );
    // TEST fails in this release: HEVOLVE_DEV_MODE must not let it through.
    env.edit_config("command = \"sh test.sh\"", "command = \"exit 3\"");
    let with_hart = |args: &[&str]| {
        env.command(args)
            .env("HEVOLVE_MASTER_PRIVATE_KEY_HEX", "ab".repeat(32))
            .env("HEVOLVE_MASTER_PRIVATE_KEY", "cd".repeat(32))
            .env("HEVOLVE_DEV_MODE", "true")
            .output()
            .unwrap()
    };
    let out = with_hart(&["config", "--env"]);
    for var in [
        "HEVOLVE_DB_PATH",
        "HEVOLVE_CODE_ROOT",
        "HEVOLVE_MASTER_PRIVATE_KEY_HEX",
        "HEVOLVE_MASTER_PRIVATE_KEY",
        "HEVOLVE_DEV_MODE",
        "HEVOLVE_CODE_HASH_PRECOMPUTED",
        "FLEETGATE_STATE_DIR",
        "FLEETGATE_SIGNING_KEY_HEX",
    ] {
        assert!(text(&out).contains(var), "{var} missing from config --env");
    }
    let out = with_hart(&["start", "v1.0.0", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let started: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        started["warnings"][0]
            .as_str()
            .unwrap()
            .contains("HEVOLVE_DEV_MODE"),
        "{started}"
    );
    let out = with_hart(&["advance"]);
    assert_eq!(code(&out), 0, "BUILD passes: {}", text(&out));
    let seen = std::fs::read_to_string(env.state_dir().join("gate-env.txt")).unwrap();
    assert!(seen.contains("FLEETGATE_VERSION=v1.0.0"), "{seen}");
    assert!(
        seen.contains("HEVOLVE_DEV_MODE=true"),
        "ordinary variables pass"
    );
    for secret in [
        "HEVOLVE_MASTER_PRIVATE_KEY_HEX",
        "HEVOLVE_MASTER_PRIVATE_KEY",
    ] {
        assert!(
            !seen.contains(secret),
            "{secret} leaked to the gate command"
        );
    }
    let out = with_hart(&["advance"]);
    assert_ne!(code(&out), 0, "TEST failed: {}", text(&out));
    let out = with_hart(&["status", "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["stage"], "failed", "dev mode skipped nothing: {s}");
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("HEVOLVE_DEV_MODE")),
        "{s}"
    );
    let r = {
        let out = env
            .command(&["tools", "call", "check_upgrade_status"])
            .env("HEVOLVE_DEV_MODE", "1")
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert!(
        r["warnings"].to_string().contains("HEVOLVE_DEV_MODE"),
        "{r}"
    );
}

/// A run rolled back during CANARY after node-x got its release, with an earlier
/// completed release to return to (`record`): `advance` signs the rollback order into
/// `state/manifests/rollback-<effect>.json` (delivering it to node-x fails: no such node).
fn signed_rollback_order(env: &Env, record: fleetgate::core::CompletedRelease) -> Value {
    use fleetgate::core::{Effect, EffectAction, RollbackScope, Stage};
    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let store = fleetgate::store::StateDir::open(env.state_dir()).unwrap();
    let mut st = store.load().unwrap();
    let id = format!("{}-1", st.run_id.clone().unwrap());
    st.stage = Stage::RolledBack;
    st.rollback_reason = Some("canary unhealthy".into());
    let mut sent = fleetgate::core::fleet::NodeDelivery::new("node-x", true);
    sent.sending(0);
    st.canary = Some(fleetgate::core::fleet::CanaryProgress {
        deliveries: vec![sent],
        ..Default::default()
    });
    st.last_completed = Some(record);
    st.effects_ordered = 1;
    st.outbox.push(Effect {
        id: id.clone(),
        action: EffectAction::SendRollback {
            scope: RollbackScope::Canary,
            reason: "canary unhealthy".into(),
        },
        attempts: 0,
        last_error: None,
        revocation: None,
    });
    store.save(&st).unwrap();
    let _ = env.fg(&["advance"]);
    let order = env
        .state_dir()
        .join("manifests")
        .join(format!("rollback-{id}.json"));
    let bytes = std::fs::read(&order).unwrap_or_else(|e| {
        panic!(
            "no rollback order at {} ({e}); status: {}",
            order.display(),
            env.status()
        )
    });
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_rollback_order_names_the_hash_scheme_the_returned_to_release_was_signed_with() {
    use fleetgate::core::CompletedRelease;
    use fleetgate::core::config::HashScheme;
    let back = |scheme: Option<HashScheme>, sequence: Option<u64>| CompletedRelease {
        version: "v0.9.0".into(),
        git_sha: "0".repeat(40),
        code_hash: Some("ab".repeat(32)),
        run_id: "earlier".into(),
        sequence,
        hash_scheme: scheme,
        artifacts: None,
    };

    // The config now says `hart`; v0.9.0 was signed with `git`: the order says `git`
    // (a manifest leaves the default scheme out).
    let env = Env::new();
    env.edit_config(
        "[stages.build]\n",
        "[stages.build]\nhash_scheme = \"hart\"\n",
    );
    let order = signed_rollback_order(&env, back(Some(HashScheme::Git), Some(5)));
    assert_eq!(order["kind"], "rollback", "{order}");
    assert_eq!(order["return_to_code_hash"], "ab".repeat(32));
    assert!(
        order.get("hash_scheme").is_none(),
        "git, not the config's hart: {order}"
    );

    // The other way round: config `git`, v0.9.0 signed with `hart`.
    let env = Env::new();
    let order = signed_rollback_order(&env, back(Some(HashScheme::Hart), Some(5)));
    assert_eq!(order["hash_scheme"], "hart", "{order}");
    assert_eq!(order["return_to_code_hash"], "ab".repeat(32));

    // A record written before fleetgate kept the scheme: the archived manifest of its
    // sequence says which.
    let env = Env::new();
    let archive = env.state_dir().join("manifests");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(
        archive.join("5.json"),
        json!({"version": "v0.9.0", "git_sha": "0".repeat(40), "sequence": 5,
               "code_hash": "ab".repeat(32), "hash_scheme": "hart"})
        .to_string(),
    )
    .unwrap();
    let order = signed_rollback_order(&env, back(None, Some(5)));
    assert_eq!(order["hash_scheme"], "hart", "{order}");
}
