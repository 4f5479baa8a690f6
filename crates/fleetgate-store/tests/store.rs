//! The state directory against a real filesystem.

use fleetgate_core::{Event, PipelineState, Stage, Version, handle};
use fleetgate_store::{StateDir, StoreError, TransactError};
use std::fs;
use std::path::PathBuf;

fn started() -> PipelineState {
    let mut s = PipelineState::idle();
    handle(
        &mut s,
        Event::Start {
            version: Version::parse("v1.2.3").unwrap(),
            git_sha: "deadbeef".into(),
            run_id: "r1".into(),
            channel: None,
            now: 10.5,
        },
    )
    .unwrap();
    s
}

#[test]
fn missing_file_is_idle_and_saved_state_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path().join("state")).unwrap();
    assert_eq!(dir.load().unwrap().stage, Stage::Idle);
    let s = started();
    dir.save(&s).unwrap();
    assert_eq!(dir.load().unwrap(), s);
    // No temp files left behind.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["upgrade_state.json"]);
}

#[test]
fn corrupt_file_is_moved_aside_and_reported_never_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    fs::write(dir.state_path(), b"{\"stage\": \"building\", trunc").unwrap();
    let err = dir.load().unwrap_err();
    let StoreError::Corrupt { moved_to, .. } = &err else {
        panic!("expected Corrupt, got {err}")
    };
    assert!(err.to_string().contains("moved aside"), "{err}");
    assert_eq!(
        fs::read(moved_to).unwrap(),
        b"{\"stage\": \"building\", trunc"
    );
    assert!(!dir.state_path().exists());
    assert_eq!(dir.quarantined(), vec![moved_to.clone()]);
    // A JSON file that is not a state (unknown stage) is corrupt too.
    fs::write(dir.state_path(), br#"{"stage": "launching"}"#).unwrap();
    assert!(matches!(dir.load(), Err(StoreError::Corrupt { .. })));
    assert_eq!(dir.quarantined().len(), 2);
}

#[test]
fn a_hart_state_file_is_adopted_kept_and_upgraded_on_the_next_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    // HART's file, byte for byte as its orchestrator writes it mid-run (indent=2).
    let hart = "{\n  \"stage\": \"benchmarking\",\n  \"version\": \"v2.0.0\",\n  \"git_sha\": \"\",\n  \"started_at\": 1771864669.14,\n  \"stage_history\": [\n    {\"stage\": \"building\", \"at\": 1771864669.14},\n    {\"stage\": \"benchmarking\", \"at\": 1771864680.5}\n  ],\n  \"code_hash\": \"ab12\"\n}";
    fs::write(dir.state_path(), hart).unwrap();
    let s = dir.load().unwrap();
    assert_eq!(s.stage, Stage::Building, "fleetgate re-runs the gates");
    assert_eq!(s.version, "v2.0.0");
    assert_eq!(s.started_at, Some(1771864669.14));
    assert_eq!(s.stage_history.len(), 3);
    assert!(dir.quarantined().is_empty(), "not quarantined");
    // The original is kept beside it, and the state file is untouched until a write.
    assert_eq!(fs::read_to_string(dir.hart_original_path()).unwrap(), hart);
    assert_eq!(fs::read_to_string(dir.state_path()).unwrap(), hart);
    // The next write upgrades it; later loads read fleetgate's format.
    dir.transact(|st| {
        st.git_sha = "deadbeef".into();
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.state_path()).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["git_sha"], "deadbeef");
    assert_eq!(dir.load().unwrap().stage, Stage::Building);
    assert_eq!(fs::read_to_string(dir.hart_original_path()).unwrap(), hart);
}

#[test]
fn an_idle_hart_state_file_is_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    fs::write(
        dir.state_path(),
        r#"{"stage": "idle", "version": "", "git_sha": "", "started_at": 0, "stage_history": []}"#,
    )
    .unwrap();
    let s = dir.load().unwrap();
    assert_eq!(s.stage, Stage::Idle);
    assert_eq!(s.started_at, None);
    assert!(dir.hart_original_path().exists());
}

#[test]
fn newer_schema_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let text = r#"{"schema_version": 99, "stage": "idle"}"#;
    fs::write(dir.state_path(), text).unwrap();
    assert!(matches!(
        dir.load(),
        Err(StoreError::TooNew { found: 99, .. })
    ));
    assert_eq!(fs::read_to_string(dir.state_path()).unwrap(), text);
    // A whole state of a newer schema (it would parse as this one) is refused too.
    let mut newer = fleetgate_core::PipelineState::idle();
    newer.schema_version = 99;
    let text = serde_json::to_string(&newer).unwrap();
    fs::write(dir.state_path(), &text).unwrap();
    assert!(matches!(
        dir.load(),
        Err(StoreError::TooNew { found: 99, .. })
    ));
    assert_eq!(fs::read_to_string(dir.state_path()).unwrap(), text);
}

#[test]
fn second_orchestrator_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let held = dir.lock_orchestrator().unwrap();
    let err = dir.lock_orchestrator().unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }));
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    dir.lock_orchestrator().unwrap();
}

#[test]
fn transact_saves_only_on_ok_and_sees_the_latest_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    dir.save(&started()).unwrap();
    let r: Result<(), TransactError<String>> = dir.transact(|s| {
        s.stage = Stage::Failed;
        Err("refused".to_owned())
    });
    assert!(matches!(r, Err(TransactError::Rejected(_))));
    assert_eq!(dir.load().unwrap().stage, Stage::Building);
    let other = StateDir::open(tmp.path()).unwrap();
    other
        .transact(|s| {
            handle(
                s,
                Event::Rollback {
                    reason: "stop".into(),
                    now: 11.0,
                },
            )
            .map(|_| ())
        })
        .unwrap();
    assert_eq!(dir.load().unwrap().stage, Stage::RolledBack);
}

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../state/upgrade_state.schema.json")
}

fn generated_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PipelineState)).unwrap()
}

/// The committed schema equals the one generated from the Rust types. To accept a change:
/// `UPDATE_SNAPSHOTS=1 cargo nextest run -p fleetgate-store`.
#[test]
fn committed_schema_matches_the_types() {
    let generated = serde_json::to_string_pretty(&generated_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::write(schema_path(), &generated).unwrap();
    }
    let committed =
        fs::read_to_string(schema_path()).expect("state/upgrade_state.schema.json exists");
    assert_eq!(
        committed, generated,
        "state schema changed: rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    );
}

#[test]
fn written_files_validate_against_the_committed_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(schema_path()).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let mut s = started();
    for st in [Stage::Testing, Stage::Auditing] {
        let (stage, epoch) = (s.stage, s.epoch);
        handle(
            &mut s,
            Event::GateEvaluated {
                stage,
                epoch,
                verdict: fleetgate_core::Verdict::passed("ok", serde_json::json!({"passed": 3})),
                facts: Default::default(),
                now: 12.0,
            },
        )
        .unwrap();
        assert_eq!(s.stage, st);
    }
    handle(
        &mut s,
        Event::Rollback {
            reason: "x".into(),
            now: 13.0,
        },
    )
    .unwrap();
    dir.save(&s).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.state_path()).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&written)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // And the schema is not vacuous: a wrong stage name is refused.
    let mut bad = written.clone();
    bad["stage"] = "launching".into();
    assert!(!validator.is_valid(&bad));
}

/// Found by the `state_load` fuzz target: serde_json's default float parser is not
/// correctly rounded, so a timestamp could change by one ULP at every save and load
/// (`1796198509.198944` written, `1796198509.1989439` read back). The workspace enables
/// serde_json's `float_roundtrip`; a saved state loads back equal.
#[test]
fn a_saved_state_loads_back_equal_to_the_last_bit_of_its_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateDir::open(dir.path()).unwrap();
    let mut state = PipelineState::idle();
    state.started_at = Some(1_796_198_509.198_944);
    for at in [
        1_796_198_509.198_944,
        1_796_198_509.198_943_9,
        0.1 + 0.2,
        1e-300,
    ] {
        state
            .stage_history
            .push(fleetgate_core::state::HistoryEntry {
                stage: Stage::Building,
                at,
                from: None,
                reason: None,
                detail: None,
                epoch: None,
            });
    }
    for _ in 0..3 {
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
    }
}

/// A state file that is JSON but not a state object, or whose `schema_version` is not a
/// whole number, is moved aside as corrupt with its bytes kept: never read as a HART
/// file (which has no `schema_version`), never a panic.
#[test]
fn json_that_is_not_a_state_object_is_moved_aside_as_corrupt() {
    for text in [
        "[]",
        "\"x\"",
        "null",
        "42",
        r#"{"schema_version": null, "stage": "idle"}"#,
        r#"{"schema_version": "1", "stage": "idle"}"#,
        r#"{"schema_version": -1, "stage": "idle"}"#,
        r#"{"schema_version": 1.5, "stage": "idle"}"#,
        r#"{"schema_version": [], "stage": "idle"}"#,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        fs::write(dir.state_path(), text).unwrap();
        let err = dir.load().unwrap_err();
        let StoreError::Corrupt { moved_to, .. } = &err else {
            panic!("{text}: expected Corrupt, got {err}")
        };
        assert!(
            err.to_string().contains("not a fleetgate state"),
            "{text}: {err}"
        );
        assert_eq!(fs::read_to_string(moved_to).unwrap(), text);
        assert!(
            !dir.hart_original_path().exists(),
            "{text}: adopted as HART's"
        );
    }
}

/// A small state is written indented (read at a terminal); a fleet-sized one compact (a
/// third smaller on disk and in every copy on its way to the shared store); both read
/// back equal.
#[test]
fn a_fleet_sized_state_is_written_compact_and_reads_back_equal() {
    use fleetgate_core::fleet::{DeployMode, DeployProgress, NodeDelivery};
    let dir = tempfile::tempdir().unwrap();
    let store = StateDir::open(dir.path()).unwrap();
    let mut state = started();
    store.save(&state).unwrap();
    let small = fs::read_to_string(store.state_path()).unwrap();
    assert!(small.contains("\n  \"stage\": "), "{small}");

    let mut deploy = DeployProgress::new(DeployMode::Push, 1_765_000_000, 3600);
    deploy.deliveries = (0..20_000)
        .map(|i| NodeDelivery::new(format!("sim-{i:06}"), true))
        .collect();
    state.deploy = Some(deploy);
    store.save(&state).unwrap();
    let big = fs::read(store.state_path()).unwrap();
    assert!(big.len() > fleetgate_store::PRETTY_UP_TO, "{}", big.len());
    assert!(!big.starts_with(b"{\n"), "written indented");
    assert_eq!(big.last(), Some(&b'\n'));
    let pretty = serde_json::to_vec_pretty(&state).unwrap();
    assert!(
        big.len() * 4 < pretty.len() * 3,
        "{} vs {}",
        big.len(),
        pretty.len()
    );
    assert_eq!(store.load().unwrap(), state);
}

/// A state that would not fit the limit is refused before anything is written: the file
/// on disk stays the last good state (never written, then quarantined on the next read).
#[test]
fn a_state_over_the_size_limit_is_refused_and_the_last_good_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateDir::open(dir.path()).unwrap();
    let good = started();
    store.save(&good).unwrap();
    let before = fs::read(store.state_path()).unwrap();
    let mut huge = good.clone();
    let limit = usize::try_from(fleetgate_store::MAX_STATE_BYTES).unwrap();
    huge.failure_detail = Some("x".repeat(limit));
    let err = store.save(&huge).unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { len } if len > fleetgate_store::MAX_STATE_BYTES),
        "{err}"
    );
    assert!(err.to_string().contains("not written"), "{err}");
    assert_eq!(fs::read(store.state_path()).unwrap(), before);
    // Through a transaction too: refused, nothing written, the state reads back as it was.
    let err = store
        .transact_reporting(|s| {
            s.failure_detail = huge.failure_detail.clone();
            Ok::<_, std::convert::Infallible>(((), true))
        })
        .unwrap_err();
    assert!(
        matches!(err, TransactError::Store(StoreError::TooLarge { .. })),
        "{err}"
    );
    assert_eq!(store.load().unwrap(), good);
}

/// A state file whose size the file system does not tell (a symlink to a device, a FIFO
/// left by a tool) is read only up to the limit: an endless one is quarantined as too
/// large instead of being read into memory until the process dies. The size a `stat`
/// gives is not what is read either (a file can grow between the two).
#[cfg(unix)]
#[test]
fn an_endless_state_file_is_read_only_up_to_the_limit_and_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.state_path()).unwrap();
    let err = dir.load().unwrap_err();
    let StoreError::Corrupt { moved_to, .. } = &err else {
        panic!("expected Corrupt, got {err}")
    };
    let text = err.to_string();
    assert!(text.contains("byte limit"), "{text}");
    assert!(
        text.contains(&format!(
            "more than {} bytes",
            fleetgate_store::MAX_STATE_BYTES
        )),
        "{text}"
    );
    assert_eq!(dir.quarantined(), vec![moved_to.clone()]);
    assert!(!dir.state_path().exists(), "moved aside");
    // The record of releases the same way.
    std::os::unix::fs::symlink("/dev/zero", tmp.path().join("releases.json")).unwrap();
    assert!(dir.load().is_err());
    assert_eq!(dir.quarantined().len(), 2);
}
