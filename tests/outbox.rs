//! The outbox never wedges, and a quarantined state file loses no release history —
//! through the real binary.

mod common;
use common::{Env, code, text};
use fleetgate::core::{CompletedRelease, Effect, EffectAction, RollbackScope, Stage};
use fleetgate::store::StateDir;
use serde_json::{Value, json};

/// The sample app with a fleet registry that cannot be opened: no fleet is reachable.
fn without_fleet() -> Env {
    let env = Env::new();
    let p = env.config();
    let mut cfg = std::fs::read_to_string(&p).unwrap();
    assert!(
        !cfg.contains("[fleet]"),
        "the sample config has a [fleet] table"
    );
    cfg.push_str(
        "\n[fleet]\ndatabase_url = \"sqlite:///nonexistent-fleetgate-test-dir/fleet.db\"\n",
    );
    std::fs::write(&p, cfg).unwrap();
    env
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

#[test]
fn an_undeliverable_rollback_order_is_listed_retried_abandoned_and_start_is_accepted() {
    let env = without_fleet();
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    // The run was rolled back during CANARY after its canary node got the release; the
    // rollback order to that node cannot be delivered (no fleet is reachable).
    let store = StateDir::open(env.state_dir()).unwrap();
    let mut st = store.load().unwrap();
    let run = st.run_id.clone().unwrap();
    let id = format!("{run}-1");
    st.stage = Stage::RolledBack;
    st.rollback_reason = Some("canary unhealthy".into());
    let mut sent = fleetgate::core::fleet::NodeDelivery::new("node-x", true);
    sent.sending(0);
    st.canary = Some(fleetgate::core::fleet::CanaryProgress {
        deliveries: vec![sent],
        ..Default::default()
    });
    st.last_completed = Some(CompletedRelease {
        version: "v0.9.0".into(),
        git_sha: "0".repeat(40),
        code_hash: None,
        run_id: "earlier".into(),
        sequence: Some(5),
        hash_scheme: None,
        artifacts: None,
    });
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

    // `advance` cannot deliver it: it stays queued with the error.
    let out = env.fg(&["advance"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("NOT delivered"), "{}", text(&out));

    // list shows it, with its run.
    let out = env.fg(&["outbox", "list", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let list = json_of(&out);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let e = &list[0];
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["action"]["kind"], "send_rollback");
    assert_eq!(e["action"]["scope"], "canary");
    assert_eq!(e["attempts"], 1);
    assert!(e["last_error"].as_str().unwrap().len() > 5, "{e}");
    assert_eq!(e["run_id"], run.as_str());
    assert_eq!(e["stage"], "rolled_back");
    let human = text(&env.fg(&["outbox", "list"]));
    assert!(
        human.contains(&id) && human.contains("send_rollback scope=canary"),
        "{human}"
    );

    // start is refused and says exactly what to do.
    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    for want in [
        format!("`fleetgate outbox retry {id}`"),
        format!("`fleetgate outbox abandon {id} --reason TEXT`"),
    ] {
        assert!(text(&out).contains(&want), "{want} not in {}", text(&out));
    }

    // retry: tried again now, still not delivered (exit 1), attempts counted afresh.
    let out = env.fg(&["outbox", "retry", &id, "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let r = json_of(&out);
    assert_eq!(r["outcome"], "failed", "{r}");
    assert_eq!(r["outbox"][0]["attempts"], 1, "{r}");

    // Unknown ids are named, with the known ones.
    let out = env.fg(&["outbox", "abandon", "nope", "--reason", "x"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "no outbox effect with id nope (the outbox holds: {id})"
        )),
        "{}",
        text(&out)
    );
    let out = env.fg(&["outbox", "retry", "nope"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains(&id), "{}", text(&out));

    // abandon: dropped, with the reason and who in the history.
    let out = env
        .command(&[
            "outbox",
            "abandon",
            &id,
            "--reason",
            "node-x was reimaged by hand",
            "--json",
        ])
        .env("USER", "alice")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = env.status();
    assert_eq!(s["outbox"], json!([]));
    let last = s["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["stage"], "rolled_back");
    let why = last["reason"].as_str().unwrap();
    assert!(
        why.ends_with(&format!(
            "{id} was abandoned by operator alice after 1 attempt(s): node-x was reimaged by hand"
        )),
        "{why}"
    );
    assert!(
        s["failure_detail"]
            .as_str()
            .unwrap()
            .contains("node-x was reimaged by hand"),
        "{s}"
    );
    let archive_name: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let archived: Value = serde_json::from_slice(
        &std::fs::read(
            env.state_dir()
                .join("runs")
                .join(format!("{archive_name}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(archived["stage_history"], s["stage_history"]);
    assert_eq!(
        text(&env.fg(&["outbox", "list"])).trim(),
        "the outbox is empty: nothing is waiting to be delivered"
    );

    // The pipeline is not wedged.
    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn after_a_quarantined_state_file_the_next_run_still_compares_against_the_last_release() {
    let env = Env::new();
    // v1.0.0 ran BUILD…BENCHMARK for real (its benchmark snapshot is stored) and then,
    // here, completed: CANARY/DEPLOY need a fleet, so the completion is written directly.
    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    for _ in 0..5 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let store = StateDir::open(env.state_dir()).unwrap();
    let mut st = store.load().unwrap();
    assert_eq!(st.stage, Stage::Canary);
    let sequence = st.manifest.as_ref().unwrap()["sequence"].as_u64().unwrap();
    st.stage = Stage::Completed;
    st.last_completed = Some(CompletedRelease {
        version: st.version.clone(),
        git_sha: st.git_sha.clone(),
        code_hash: st.code_hash.clone(),
        run_id: st.run_id.clone().unwrap(),
        sequence: Some(sequence),
        hash_scheme: None,
        artifacts: None,
    });
    store.save(&st).unwrap();

    // The state file is damaged.
    std::fs::write(
        env.state_dir().join("upgrade_state.json"),
        "{\"stage\": \"compl",
    )
    .unwrap();
    let out = env.fg(&["status"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(
        text(&out).contains("moved aside")
            && text(&out).contains("was kept (last completed v1.0.0 from run"),
        "{}",
        text(&out)
    );
    let s = env.status();
    assert_eq!(s["stage"], "idle");
    assert_eq!(s["last_completed"]["version"], "v1.0.0");
    assert_eq!(s["last_sequence"], sequence);
    assert_eq!(s["warnings"].as_array().unwrap().len(), 1, "{s}");

    // The next run's BENCHMARK compares against v1.0.0: not a "first run".
    assert_eq!(code(&env.fg(&["start", "v1.0.1", "--git-sha", "HEAD"])), 0);
    for _ in 0..4 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let s = env.status();
    let bench = &s["gate_results"]["benchmarking"];
    assert_eq!(bench["outcome"], "passed", "{bench}");
    assert_eq!(bench["figures"]["baseline"], "v1.0.0", "{bench}");
    assert!(
        !bench["detail"].as_str().unwrap().contains("first run"),
        "{bench}"
    );
}
