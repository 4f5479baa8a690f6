//! Crash safety: the orchestrator is a real child process killed with SIGKILL right
//! before and right after each of its state writes (every transition of a run), then
//! restarted. The run must resume to the same end, with its history intact, and no gate
//! whose result was durably recorded may run again.

mod common;
use common::{Env, code, history, text};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

/// Each gate command also appends its stage to `effects.log`: the outside effect we count.
fn instrumented() -> Env {
    let env = Env::new();
    for (cmd, stage) in [
        ("sh build.sh", "building"),
        ("sh test.sh", "testing"),
        ("sh audit.sh", "auditing"),
        ("sh bench.sh", "benchmarking"),
    ] {
        env.edit_config(
            &format!("command = \"{cmd}\""),
            &format!(
                "command = \"echo {stage} >> \\\"$FLEETGATE_STATE_DIR/effects.log\\\" && {cmd}\""
            ),
        );
    }
    // One effect per gate run: the benchmark command runs once, not `repeats` times.
    env.edit_config("[stages.benchmark]", "[stages.benchmark]\nrepeats = 1");
    env
}

fn effects(env: &Env) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(env.state_dir().join("effects.log")).unwrap_or_default();
    let mut m = BTreeMap::new();
    for l in text.lines() {
        *m.entry(l.to_owned()).or_insert(0) += 1;
    }
    m
}

fn outcomes(s: &serde_json::Value) -> BTreeMap<String, String> {
    s["gate_results"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn killed_before_or_after_any_state_write_the_run_resumes_to_the_same_end() {
    // Reference run, no crash.
    let reference = instrumented();
    assert_eq!(code(&reference.fg(&["start", "v1.0.0"])), 0);
    let ref_out = reference.fg(&["run"]);
    let ref_state = reference.status();
    let ref_history = history(&ref_state);
    let ref_outcomes = outcomes(&ref_state);
    let ref_effects = effects(&reference);
    assert!(ref_effects.values().all(|n| *n == 1), "{ref_effects:?}");
    // `run` writes the state once per gate verdict; with no pending gate that is one write
    // per history entry after the first (written by `start`).
    let writes = ref_history.len() - 1;
    assert!(
        writes >= 5,
        "reference run too short: {ref_history:?} {}",
        text(&ref_out)
    );

    for n in 1..=writes {
        for phase in ["before-write", "after-write"] {
            let env = instrumented();
            assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
            let mut crashing = env.command(&["run"]);
            crashing.env("FLEETGATE_TEST_CRASH_AT", format!("{phase}:{n}"));
            let out = crashing.output().unwrap();
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{phase}:{n} was not killed: {}",
                text(&out)
            );

            let on_disk = env.status();
            // The state on disk is exactly the one before or after write n, never torn.
            let expect_len = if phase == "before-write" { n } else { n + 1 };
            assert_eq!(history(&on_disk), ref_history[..expect_len], "{phase}:{n}");

            let resumed = env.fg(&["run"]);
            assert_eq!(
                code(&resumed),
                code(&ref_out),
                "{phase}:{n}: {}",
                text(&resumed)
            );
            let end = env.status();
            assert_eq!(history(&end), ref_history, "{phase}:{n}: history intact");
            assert_eq!(outcomes(&end), ref_outcomes, "{phase}:{n}");
            assert_eq!(
                end["run_id"], on_disk["run_id"],
                "{phase}:{n}: same run resumed"
            );
            let ats: Vec<f64> = end["stage_history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["at"].as_f64().unwrap())
                .collect();
            assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{phase}:{n}: {ats:?}");

            // Outside effects: a gate whose verdict was written never runs again; the gate
            // whose verdict was lost (killed before its write) runs exactly once more.
            let got = effects(&env);
            let lost_stage = &ref_history[n - 1];
            for (stage, count) in &ref_effects {
                let want = if phase == "before-write" && stage == lost_stage {
                    count + 1
                } else {
                    *count
                };
                assert_eq!(
                    got.get(stage),
                    Some(&want),
                    "{phase}:{n}: {stage} ran {:?} times; all: {got:?}",
                    got.get(stage)
                );
            }
        }
    }
}
