//! The pipeline driven through the real binary: gates pass and fail for real, figures
//! land in `status`, rollback wins over a running gate, one orchestrator at a time, and a
//! corrupt state file is moved aside.

mod common;
use common::{Env, code, git, history, text};
use std::time::{Duration, Instant};

#[test]
fn a_good_version_passes_build_test_audit_benchmark_and_stops_closed_at_the_first_missing_stage() {
    let env = Env::new();
    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.fg(&["run"]);
    let s = env.status();
    for stage in ["building", "testing", "auditing", "benchmarking"] {
        assert_eq!(
            s["gate_results"][stage]["outcome"],
            "passed",
            "{stage}: {}",
            text(&out)
        );
    }
    assert_eq!(s["gate_results"]["testing"]["figures"]["passed"], 3);
    assert_eq!(s["gate_results"]["testing"]["figures"]["pass_rate"], 1.0);
    assert_eq!(s["code_hash"].as_str().unwrap().len(), 64);
    // SIGN produced a manifest that the CLI verifies against the trust file.
    assert_eq!(s["gate_results"]["signing"]["outcome"], "passed");
    let manifest = env.state_dir().join("release_manifest.json");
    let trust = env.app.join("keys/trust.json");
    let v = env.fg(&[
        "manifest",
        "verify",
        "--trust",
        trust.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(code(&v), 0, "{}", text(&v));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["code_hash"], s["code_hash"]);
    assert_eq!(m["version"], "v1.0.0");
    assert_eq!(s["manifest"]["sequence"], m["sequence"]);
    // With no enrolled node, CANARY fails closed (never passes) and the run rolls back.
    assert_eq!(
        history(&s),
        [
            "building",
            "testing",
            "auditing",
            "benchmarking",
            "signing",
            "canary",
            "rolled_back"
        ]
    );
    assert_eq!(s["gate_results"]["canary"]["outcome"], "failed");
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("no fleet (no node is enrolled"),
        "{}",
        s["failure_detail"]
    );
    assert_eq!(
        code(&out),
        4,
        "run exits 4 when the run ended rolled_back: {}",
        text(&out)
    );
    assert_eq!(
        s["outbox"],
        serde_json::json!([]),
        "no node was contacted, so no rollback order is left pending"
    );
    // The human status shows the figures too.
    let human = text(&env.fg(&["status"]));
    assert!(human.contains("3 of 3 tests passed"), "{human}");
}

#[test]
fn a_failing_test_suite_fails_the_run_at_test_with_the_counts() {
    let env = Env::new();
    env.commit_tag("v1.0.1", |app| {
        std::fs::write(
            app.join("tests/broken.t"),
            "echo 'expected 2, got 3' >&2; exit 1\n",
        )
        .unwrap()
    });
    assert_eq!(code(&env.fg(&["start", "v1.0.1"])), 0);
    let out = env.fg(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let s = env.status();
    assert_eq!(s["stage"], "failed");
    assert_eq!(history(&s), ["building", "testing", "failed"]);
    let f = &s["gate_results"]["testing"]["figures"];
    assert_eq!(
        (f["passed"].as_u64(), f["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(f["pass_rate"], 0.75);
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("pass rate 75.00% is below the minimum 95.00%")
    );
}

#[test]
fn zero_tests_is_a_failure_and_a_lower_minimum_lets_a_flaky_suite_through() {
    let env = Env::new();
    env.commit_tag("v1.0.1", |app| {
        for t in std::fs::read_dir(app.join("tests")).unwrap() {
            std::fs::remove_file(t.unwrap().path()).unwrap();
        }
        std::fs::write(app.join("tests/.keep"), "").unwrap();
    });
    env.fg(&["start", "v1.0.1"]);
    env.fg(&["run"]);
    let s = env.status();
    assert_eq!(s["stage"], "failed");
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("no test ran"),
        "{}",
        s["failure_detail"]
    );

    let env = Env::new();
    env.commit_tag("v1.0.1", |app| {
        std::fs::write(app.join("tests/broken.t"), "exit 1\n").unwrap()
    });
    env.fg(&["start", "v1.0.1"]);
    let mut cmd = env.command(&["run"]);
    cmd.env("FLEETGATE_STAGES_TEST_MIN_PASS_RATE", "0.7");
    cmd.output().unwrap();
    let s = env.status();
    assert_eq!(
        s["gate_results"]["testing"]["outcome"], "passed",
        "env override of min_pass_rate applies"
    );
}

#[test]
fn a_failing_audit_and_a_changed_guardrail_each_fail_the_run_at_audit() {
    let env = Env::new();
    env.commit_tag("v1.0.1", |app| {
        std::fs::write(app.join("notes.txt"), "FORBIDDEN_MARKER\n").unwrap()
    });
    env.fg(&["start", "v1.0.1"]);
    assert_eq!(code(&env.fg(&["run"])), 3);
    let s = env.status();
    assert_eq!(history(&s), ["building", "testing", "auditing", "failed"]);
    assert!(
        s["failure_detail"].as_str().unwrap().contains("notes.txt"),
        "output tail in detail: {}",
        s["failure_detail"]
    );
    assert_eq!(s["gate_results"]["auditing"]["figures"]["exit_code"], 1);

    let env = Env::new();
    env.commit_tag("v1.0.1", |app| {
        std::fs::write(app.join("policy/guardrails.toml"), "max_canary_pct = 1.0\n").unwrap()
    });
    env.fg(&["start", "v1.0.1"]);
    env.fg(&["run"]);
    let s = env.status();
    assert_eq!(s["stage"], "failed");
    let d = s["failure_detail"].as_str().unwrap();
    assert!(
        d.contains("guardrail files do not match their pins")
            && d.contains("policy/guardrails.toml"),
        "{d}"
    );
}

#[test]
fn a_benchmark_regression_against_the_last_completed_version_rolls_back_with_the_figures() {
    let env = Env::new();
    // v1.0.0 completed earlier: its snapshot is the baseline (captured with the CLI) and
    // the state records it as the last completed release.
    let out = env.fg(&["bench", "capture", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    completed_earlier(&env, "v1.0.0");
    // A newer snapshot of an unrelated version on disk must not become the baseline.
    env.commit_tag("v0.9.0-scratch", |app| {
        std::fs::write(
            app.join("app.conf"),
            "name=sample-app\nstartup_ms=1000\nthroughput_ops=1\n",
        )
        .unwrap()
    });
    env.fg(&["bench", "capture", "v0.9.0-scratch"]);
    env.commit_tag("v1.1.0", |app| {
        std::fs::write(
            app.join("app.conf"),
            "name=sample-app\nstartup_ms=200\nthroughput_ops=5000\n",
        )
        .unwrap()
    });
    env.fg(&["start", "v1.1.0"]);
    let out = env.fg(&["run"]);
    assert_eq!(code(&out), 4, "rolled back: {}", text(&out));
    let s = env.status();
    assert_eq!(s["stage"], "rolled_back");
    assert_eq!(
        history(&s),
        [
            "building",
            "testing",
            "auditing",
            "benchmarking",
            "rolled_back"
        ]
    );
    let d = s["failure_detail"].as_str().unwrap();
    assert!(
        d.contains("regression against v1.0.0") && d.contains("startup: 120 ms -> 200 ms (+66.7%"),
        "{d}"
    );
    assert_eq!(
        s["gate_results"]["benchmarking"]["figures"]["baseline"],
        "v1.0.0"
    );
    // Within tolerance passes: compare the stored snapshots directly.
    let out = env.fg(&["bench", "compare", "v1.0.0", "v1.1.0", "--json"]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["failures"], serde_json::json!(["startup"]));
    let hist = env.fg(&["bench", "history", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&hist.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Issue 15: a benchmark that moves 8.5% between runs on unchanged code. Single-shot, that
/// is a regression; with `repeats = 3` the medians still differ by more than the
/// tolerance, but the repeats overlap (noise), so the BENCHMARK gate passes — and a real
/// shift, every repeat slower, still fails.
#[test]
fn repeated_benchmarks_tell_noise_from_a_regression() {
    let env = Env::new();
    // Each repeat reports the next value of the version's list (a counter in the
    // checkout, which the repeats of one capture share).
    let noisy = r#"#!/bin/sh
set -eu
mkdir -p target
n=$(cat target/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > target/n
case "$FLEETGATE_VERSION:$n" in
  v1.0.0:1) v=100;; v1.0.0:2) v=108;; v1.0.0:3) v=95;;
  v1.0.1:1) v=108.5;; v1.0.1:2) v=97;; v1.0.1:3) v=112;;
  *) v=130;;
esac
printf '[{"name":"startup","unit":"ms","value":%s}]
' "$v" > target/bench.json
"#;
    env.commit_tag("v1.0.0-noisy", |app| {
        std::fs::write(app.join("bench.sh"), noisy).unwrap();
    });
    git(&env.app, &["tag", "-f", "v1.0.0"]);
    env.commit_tag("v1.0.1", |app| {
        std::fs::write(app.join("README.md"), "unchanged code, new commit\n").unwrap();
    });
    env.commit_tag("v1.0.2", |app| {
        std::fs::write(app.join("README.md"), "a slower release\n").unwrap();
    });
    // Single-shot: the 8.5% move is called a regression.
    let single = |args: &[&str]| {
        env.command(args)
            .env("FLEETGATE_STAGES_BENCHMARK_REPEATS", "1")
            .output()
            .unwrap()
    };
    assert_eq!(code(&single(&["bench", "capture", "v1.0.0"])), 0);
    assert_eq!(code(&single(&["bench", "capture", "v1.0.1"])), 0);
    let out = env.fg(&["bench", "compare", "v1.0.0", "v1.0.1", "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    // Three repeats (the default): the medians are 100 and 108.5, but the repeats
    // overlap.
    assert_eq!(code(&env.fg(&["bench", "capture", "v1.0.0"])), 0);
    completed_earlier(&env, "v1.0.0");
    assert_eq!(code(&env.fg(&["start", "v1.0.1"])), 0);
    let out = env.fg(&["run"]);
    let s = env.status();
    let bench = &s["gate_results"]["benchmarking"];
    assert_eq!(bench["outcome"], "passed", "{}", text(&out));
    let cmp = &bench["figures"]["comparison"]["benchmarks"][0];
    assert_eq!(cmp["status"], "within_noise", "{cmp}");
    assert_eq!(cmp["baseline"], 100.0);
    assert_eq!(cmp["current"], 108.5);
    assert_eq!(cmp["baseline_range"], serde_json::json!([95.0, 108.0]));
    assert_eq!(cmp["current_range"], serde_json::json!([97.0, 112.0]));
    for k in [2, 3] {
        let log = env
            .state_dir()
            .join("logs")
            .join(s["run_id"].as_str().unwrap())
            .join(format!("benchmarking.repeat-{k}.log"));
        assert!(log.exists(), "each repeat keeps its log: {}", log.display());
    }
    // Every repeat slower (130 ms): a regression, named with its figures.
    let out = env.fg(&["bench", "capture", "v1.0.2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.fg(&["bench", "compare", "v1.0.0", "v1.0.2", "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["failures"], serde_json::json!(["startup"]));
    assert_eq!(v["report"]["benchmarks"][0]["status"], "regressed");
    // The range is named in the config error when out of bounds.
    let out = env
        .command(&["status"])
        .env("FLEETGATE_STAGES_BENCHMARK_REPEATS", "0")
        .output()
        .unwrap();
    assert!(
        text(&out).contains("stages.benchmark.repeats"),
        "{}",
        text(&out)
    );
}

/// Records `version` as the last completed release in the state file (as an earlier run
/// would have), so BENCHMARK compares against its snapshot.
fn completed_earlier(env: &Env, version: &str) {
    let store = fleetgate::store::StateDir::open(env.state_dir()).unwrap();
    let mut st = store.load().unwrap();
    st.last_completed = Some(fleetgate::core::CompletedRelease {
        version: version.into(),
        git_sha: "0".repeat(40),
        code_hash: None,
        run_id: "earlier".into(),
        sequence: None,
        hash_scheme: None,
        artifacts: None,
    });
    store.save(&st).unwrap();
}

fn wait_for(path: &std::path::Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rollback_wins_over_a_gate_that_is_running_and_a_second_orchestrator_is_refused() {
    let env = Env::new();
    env.edit_config(
        "command = \"sh build.sh\"",
        "command = \"touch \\\"$FLEETGATE_STATE_DIR/build-started\\\"; while [ ! -f \\\"$FLEETGATE_STATE_DIR/release-build\\\" ]; do sleep 0.05; done; sh build.sh\"",
    );
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    let child = env
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&env.state_dir().join("build-started"));

    let second = env.fg(&["advance"]);
    assert_eq!(code(&second), 5, "{}", text(&second));
    assert!(
        text(&second).contains("another fleetgate orchestrator is already running"),
        "{}",
        text(&second)
    );

    let rb = env.fg(&["rollback", "--reason", "operator stop"]);
    assert_eq!(code(&rb), 0, "{}", text(&rb));
    std::fs::write(env.state_dir().join("release-build"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 4, "the run ends rolled_back: {}", text(&out));
    assert!(text(&out).contains("result discarded"), "{}", text(&out));

    let s = env.status();
    assert_eq!(s["stage"], "rolled_back");
    assert_eq!(s["rollback_reason"], "operator stop");
    assert_eq!(history(&s), ["building", "rolled_back"]);
    assert!(
        s["gate_results"].get("building").is_none(),
        "the late BUILD pass was discarded"
    );
    // It never comes back to life.
    let adv = env.fg(&["advance"]);
    assert_eq!(code(&adv), 1);
    assert!(text(&adv).contains("no run in progress"), "{}", text(&adv));
    let rb2 = env.fg(&["rollback", "--reason", "again"]);
    assert_eq!(code(&rb2), 1);
    assert!(text(&rb2).contains("nothing to roll back"));
}

#[test]
fn start_is_refused_while_active_and_bad_versions_are_refused() {
    let env = Env::new();
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    let again = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&again), 1);
    assert!(
        text(&again).contains("in progress at stage `building`"),
        "{}",
        text(&again)
    );
    let env = Env::new();
    for bad in ["../../etc", "v1.0", "1.0.0;rm -rf /"] {
        let out = env.fg(&["start", bad]);
        assert_eq!(code(&out), 1);
        assert!(text(&out).contains("invalid version"), "{}", text(&out));
    }
    let out = env.fg(&["start", "v9.9.9"]);
    assert!(text(&out).contains("no tag named v9.9.9"), "{}", text(&out));
    assert_eq!(env.status()["stage"], "idle");
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_reported_not_reset() {
    let env = Env::new();
    env.fg(&["start", "v1.0.0"]);
    let path = env.state_dir().join("upgrade_state.json");
    std::fs::write(&path, "{\"stage\": \"testing\", \"version\": ").unwrap();
    let out = env.fg(&["status"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        text(&out).contains("is corrupt") && text(&out).contains("moved aside"),
        "{}",
        text(&out)
    );
    let out = env.fg(&["status"]);
    assert!(
        text(&out).contains("WARNING: a corrupt state file was moved aside"),
        "{}",
        text(&out)
    );
    let kept: Vec<_> = std::fs::read_dir(env.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(
        std::fs::read_to_string(kept[0].path()).unwrap(),
        "{\"stage\": \"testing\", \"version\": "
    );
}

#[test]
fn invalid_config_values_are_rejected_naming_the_key() {
    let env = Env::new();
    let mut c = env.command(&["status"]);
    c.env("FLEETGATE_CANARY_PCT", "1.5");
    let out = c.output().unwrap();
    assert_eq!(code(&out), 1);
    assert!(text(&out).contains("`canary.pct`"), "{}", text(&out));
    env.edit_config("[run]", "[run]\nbogus_key = 1");
    let out = env.fg(&["status"]);
    assert!(text(&out).contains("bogus_key"), "{}", text(&out));
}

#[test]
fn sign_fails_closed_without_a_key_or_trust_file_and_tampering_is_caught() {
    let env = Env::new();
    std::fs::remove_file(env.app.join("keys/release.key")).unwrap();
    env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&env.fg(&["run"])), 3);
    let s = env.status();
    assert_eq!(history(&s).last().unwrap(), "failed");
    assert_eq!(s["gate_results"]["signing"]["outcome"], "failed");
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("no signing key"),
        "{}",
        s["failure_detail"]
    );

    let env = Env::new();
    env.edit_config("trust_file = \"keys/trust.json\"", "");
    env.fg(&["start", "v1.0.0"]);
    env.fg(&["run"]);
    let s = env.status();
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("no trust file configured"),
        "{}",
        s["failure_detail"]
    );

    // A trust file that does not hold the signing key: the manifest never verifies.
    let env = Env::new();
    let other = env.dir.path().join("other.key");
    assert_eq!(
        code(&env.fg(&["keygen", "--out", other.to_str().unwrap()])),
        0
    );
    let pubhex = std::fs::read_to_string(env.dir.path().join("other.key.pub")).unwrap();
    let trust = env.dir.path().join("other-trust.json");
    let out = env.fg(&[
        "trust",
        "init",
        "--key",
        env.dir.path().join("other.key.pub").to_str().unwrap(),
        "--out",
        trust.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{} {pubhex}", text(&out));
    env.edit_config(
        "trust_file = \"keys/trust.json\"",
        &format!("trust_file = {:?}", trust.to_str().unwrap()),
    );
    env.fg(&["start", "v1.0.0"]);
    env.fg(&["run"]);
    let s = env.status();
    assert_eq!(s["gate_results"]["signing"]["outcome"], "failed");
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{}",
        s["failure_detail"]
    );
}

#[test]
fn sign_refuses_a_signing_key_that_git_tracks_in_the_release_repository() {
    let env = Env::new();
    common::git(&env.app, &["add", "-f", "keys/release.key"]);
    env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&env.fg(&["run"])), 3);
    let s = env.status();
    assert_eq!(history(&s).last().unwrap(), "failed");
    assert_eq!(s["gate_results"]["signing"]["outcome"], "failed");
    let detail = s["failure_detail"].as_str().unwrap();
    assert!(
        detail.contains("is tracked by git") && detail.contains("keys/release.key"),
        "{detail}"
    );
    assert!(
        !env.state_dir().join("release_manifest.json").exists(),
        "nothing was signed"
    );
    // (The same key, git-ignored and untracked, signs: the first test of this file.)
}

#[test]
fn a_two_of_two_trust_file_keeps_sign_pending_until_co_signed() {
    let env = Env::new();
    let b = env.dir.path().join("b.key");
    env.fg(&["keygen", "--out", b.to_str().unwrap()]);
    let trust = env.dir.path().join("trust-2of2.json");
    let out = env.fg(&[
        "trust",
        "init",
        "--key",
        env.app.join("keys/release.key.pub").to_str().unwrap(),
        "--key",
        env.dir.path().join("b.key.pub").to_str().unwrap(),
        "--threshold",
        "2",
        "--out",
        trust.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    env.edit_config(
        "trust_file = \"keys/trust.json\"",
        &format!("trust_file = {:?}", trust.to_str().unwrap()),
    );
    env.fg(&["start", "v1.0.0"]);
    for _ in 0..5 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let s = env.status();
    assert_eq!(s["stage"], "signing");
    assert_eq!(s["gate_results"]["signing"]["outcome"], "pending");
    assert!(
        s["gate_results"]["signing"]["detail"]
            .as_str()
            .unwrap()
            .contains("signed by 1 of the 2 keys")
    );
    let seq = std::fs::read_to_string(env.state_dir().join("release_manifest.json")).unwrap();
    // Checking again does not re-sign: the same manifest waits for its co-signature.
    env.fg(&["advance"]);
    assert_eq!(
        std::fs::read_to_string(env.state_dir().join("release_manifest.json")).unwrap(),
        seq
    );
    let manifest = env.state_dir().join("release_manifest.json");
    let out = env.fg(&[
        "trust",
        "sign",
        manifest.to_str().unwrap(),
        "--key-file",
        b.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The co-signature went beside the manifest: the manifest keeps exactly one
    // signature, so HART's verifier (which strips only master_signature) accepts it.
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        seq,
        "the manifest is not rewritten"
    );
    let sigs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state_dir().join("release_manifest.json.sigs")).unwrap(),
    )
    .unwrap();
    assert_eq!(sigs["signatures"].as_array().unwrap().len(), 1, "{sigs}");
    env.fg(&["advance"]);
    let s = env.status();
    assert_eq!(
        s["gate_results"]["signing"]["outcome"], "passed",
        "{}",
        s["gate_results"]["signing"]
    );
    assert_eq!(s["stage"], "canary");
    assert!(
        s["manifest"].get("signatures").is_none(),
        "the recorded manifest is HART's: {}",
        s["manifest"]
    );
    // What the nodes are sent: the manifest with its co-signatures, as one bundle.
    let sequence = s["manifest"]["sequence"].as_u64().unwrap();
    let sent: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state_dir().join(format!("manifests/{sequence}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sent["fleetgate_bundle"], 1, "{sent}");
    assert_eq!(sent["cosignatures"], sigs);
}

#[test]
fn watch_starts_a_run_for_a_new_version_tag_and_not_twice() {
    let env = Env::new();
    let out = env.fg(&["watch", "--once"]);
    assert!(text(&out).contains("new version v1.0.0"), "{}", text(&out));
    let s = env.status();
    assert_eq!(s["version"], "v1.0.0");
    assert!(
        history(&s).len() > 2,
        "the run went through the gates: {:?}",
        history(&s)
    );
    let out = env.fg(&["watch", "--once"]);
    assert!(text(&out).contains("no new version"), "{}", text(&out));
    env.commit_tag("v1.1.0", |app| {
        std::fs::write(app.join("notes.txt"), "hello\n").unwrap()
    });
    let out = env.fg(&["watch", "--once"]);
    assert!(text(&out).contains("new version v1.1.0"), "{}", text(&out));
    assert_eq!(env.status()["version"], "v1.1.0");
}

#[test]
fn init_writes_a_commented_config_that_loads_and_every_env_override_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(code(&run(&["init"])), 0);
    let text_cfg = std::fs::read_to_string(dir.path().join("fleetgate.toml")).unwrap();
    assert!(
        text_cfg.contains("min_pass_rate = 0.95") && text_cfg.contains("# "),
        "commented template"
    );
    let out = run(&["config"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("window_secs = 1800"));
    assert_eq!(code(&run(&["init"])), 1, "never overwrites without --force");
    // The release key the template names is git-ignored, once, even after --force.
    assert_eq!(code(&run(&["init", "--force"])), 0);
    let ignore = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
    assert_eq!(
        ignore.lines().filter(|l| *l == "/keys/release.key").count(),
        1,
        "{ignore}"
    );
    assert!(text_cfg.contains("key_file = \"keys/release.key\""));
    common::git(dir.path(), &["init", "-q"]);
    let ignored = std::process::Command::new("git")
        .current_dir(dir.path())
        .args(["check-ignore", "-q", "keys/release.key"])
        .status()
        .unwrap();
    assert!(ignored.success(), "git ignores keys/release.key");
    let out = run(&["config", "--env"]);
    for var in [
        "FLEETGATE_CANARY_PCT",
        "HEVOLVE_CANARY_PCT",
        "HEVOLVE_CANARY_DURATION_SECONDS",
        "FLEETGATE_STAGES_TEST_MIN_PASS_RATE",
    ] {
        assert!(text(&out).contains(var), "{var} missing");
    }
}

#[test]
fn gate_commands_never_see_the_orchestrators_secrets() {
    let env = Env::new();
    env.edit_config(
        "command = \"sh build.sh\"",
        "command = \"env > \\\"$FLEETGATE_STATE_DIR/gate-env.txt\\\"; sh build.sh\"",
    );
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    let out = env
        .command(&["advance"])
        .env("FLEETGATE_SIGNING_KEY_HEX", "ab".repeat(32))
        .env("MASTER_PRIVATE_KEY_HEX", "cd".repeat(32))
        .env("FLEETGATE_API_TOKEN", "api-token-0123456789")
        .env("UNRELATED_SETTING", "kept")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let seen = std::fs::read_to_string(env.state_dir().join("gate-env.txt")).unwrap();
    assert!(seen.contains("FLEETGATE_VERSION=v1.0.0"), "{seen}");
    assert!(seen.contains("UNRELATED_SETTING=kept"), "{seen}");
    for secret in [
        "FLEETGATE_SIGNING_KEY_HEX",
        "MASTER_PRIVATE_KEY_HEX",
        "FLEETGATE_API_TOKEN",
    ] {
        assert!(
            !seen.contains(secret),
            "{secret} leaked to the gate command"
        );
    }
}

/// `fleetgate status | head -0`: the reader is gone before anything is written. The
/// process ends quietly (SIGPIPE, as any Unix tool), never with a panic; and `RUST_LOG`
/// is honoured when `FLEETGATE_LOG` is not set.
#[test]
fn a_closed_pipe_ends_the_cli_quietly_and_rust_log_is_honoured() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = env
        .command(&["status"])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "{:?} {stderr}",
        out.status
    );

    // `fleet list` opens the registry (its queries are logged at DEBUG).
    let quiet = env.fg(&["fleet", "list"]);
    assert_eq!(code(&quiet), 0, "{}", text(&quiet));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("DEBUG"));
    let out = env
        .command(&["fleet", "list"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DEBUG"),
        "RUST_LOG=debug shows debug events: {}",
        text(&out)
    );
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}
