//! `releases.json`, the record of completed releases: it survives a quarantined state
//! file, is itself quarantined when corrupt, and is never behind the state file.

use fleetgate_core::config::HashScheme;
use fleetgate_core::{
    CompletedRelease, Event, GateFacts, PipelineState, Stage, Verdict, Version, handle,
};
use fleetgate_store::{RELEASE_HISTORY_LIMIT, ReleaseRecord, StateDir, StoreError};
use serde_json::json;
use std::fs;

fn started(version: &str, run: &str, base: PipelineState) -> PipelineState {
    let mut s = base;
    handle(
        &mut s,
        Event::Start {
            version: Version::parse(version).unwrap(),
            git_sha: format!("sha-{run}"),
            run_id: run.into(),
            channel: None,
            now: 1.0,
        },
    )
    .unwrap();
    s
}

/// Pass gates until the run is at `until`; SIGN reports manifest sequence `seq`.
fn pass_until(s: &mut PipelineState, until: Stage, seq: u64) {
    while s.stage != until {
        let (stage, epoch) = (s.stage, s.epoch);
        let signing = stage == Stage::Signing;
        let facts = GateFacts {
            sequence: signing.then_some(seq),
            manifest: signing.then(|| json!({"sequence": seq})),
            ..GateFacts::default()
        };
        handle(
            s,
            Event::GateEvaluated {
                stage,
                epoch,
                verdict: Verdict::passed("ok", json!({})),
                facts,
                now: 2.0,
            },
        )
        .unwrap();
    }
}

/// A run of `version` that reached `completed`, saved after every transition.
fn complete(dir: &StateDir, version: &str, run: &str, seq: u64) -> PipelineState {
    let mut s = started(version, run, dir.load().unwrap());
    dir.save(&s).unwrap();
    pass_until(&mut s, Stage::Deploying, seq);
    dir.save(&s).unwrap();
    pass_until(&mut s, Stage::Completed, seq);
    dir.save(&s).unwrap();
    s
}

fn release(version: &str, run: &str, seq: u64) -> CompletedRelease {
    CompletedRelease {
        version: version.into(),
        git_sha: format!("sha-{run}"),
        code_hash: None,
        run_id: run.into(),
        sequence: Some(seq),
        // SIGN's manifest (below) names no scheme: `git`.
        hash_scheme: Some(HashScheme::Git),
        artifacts: None,
    }
}

#[test]
fn a_completed_run_is_recorded_and_survives_a_corrupt_state_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    complete(&dir, "v1.0.0", "r1", 41);
    let done = complete(&dir, "v1.1.0", "r2", 42);
    assert_eq!(done.last_completed, Some(release("v1.1.0", "r2", 42)));

    let record: ReleaseRecord =
        serde_json::from_slice(&fs::read(dir.releases_path()).unwrap()).unwrap();
    assert_eq!(
        record,
        ReleaseRecord {
            schema_version: 1,
            last_completed: Some(release("v1.1.0", "r2", 42)),
            history: vec![release("v1.0.0", "r1", 41), release("v1.1.0", "r2", 42)],
            last_sequence: 42,
        }
    );

    fs::write(dir.state_path(), b"{\"stage\": \"completed\", \"vers").unwrap();
    let err = dir.load().unwrap_err();
    let StoreError::Corrupt { what, moved_to, .. } = &err else {
        panic!("expected Corrupt, got {err}")
    };
    assert_eq!(*what, "state file");
    let msg = err.to_string();
    assert!(
        msg.contains("moved aside")
            && msg.contains("was kept (last completed v1.1.0 from run r2, 2 release(s) in its history, last manifest sequence 42)"),
        "{msg}"
    );
    assert_eq!(dir.quarantined(), vec![moved_to.clone()]);

    let idle = dir.load().unwrap();
    assert_eq!(idle.stage, Stage::Idle);
    assert_eq!(idle.run_id, None);
    assert_eq!(idle.last_completed, Some(release("v1.1.0", "r2", 42)));
    assert_eq!(idle.last_sequence, 42);
    // The next run carries them on, and its own completion extends the history.
    let next = started("v1.2.0", "r3", idle);
    assert_eq!(next.last_completed, Some(release("v1.1.0", "r2", 42)));
    assert_eq!(next.last_sequence, 42);
    complete(&dir, "v1.2.0", "r3", 43);
    assert_eq!(dir.releases().unwrap().history.len(), 3);
}

#[test]
fn a_missing_state_file_loads_idle_with_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    complete(&dir, "v1.0.0", "r1", 7);
    fs::remove_file(dir.state_path()).unwrap();
    let s = dir.load().unwrap();
    assert_eq!(s.stage, Stage::Idle);
    assert_eq!(s.last_completed, Some(release("v1.0.0", "r1", 7)));
    assert_eq!(s.last_sequence, 7);
    assert!(dir.quarantined().is_empty());
}

#[test]
fn a_corrupt_record_is_moved_aside_and_reported_then_rebuilt_from_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let done = complete(&dir, "v1.0.0", "r1", 9);
    fs::write(dir.releases_path(), b"[1, 2").unwrap();
    let err = dir.load().unwrap_err();
    let StoreError::Corrupt {
        what,
        path,
        moved_to,
        ..
    } = &err
    else {
        panic!("expected Corrupt, got {err}")
    };
    assert_eq!(*what, "record of completed releases");
    assert_eq!(path, &dir.releases_path());
    assert_eq!(fs::read(moved_to).unwrap(), b"[1, 2");
    assert!(!dir.releases_path().exists());
    assert_eq!(dir.quarantined(), vec![moved_to.clone()]);
    assert!(err.to_string().contains("moved aside"), "{err}");
    // The state file was not touched: nothing of the run or the release is lost.
    assert_eq!(dir.load().unwrap(), done);
    // The next state write rebuilds the record from the state.
    dir.transact(|s| {
        s.failure_detail = Some("touched".into());
        Ok::<_, String>(())
    })
    .unwrap();
    let record = dir.releases().unwrap();
    assert_eq!(record.last_completed, Some(release("v1.0.0", "r1", 9)));
    assert_eq!(record.last_sequence, 9);
    // A JSON file that is not a record is corrupt too.
    fs::write(dir.releases_path(), br#"{"history": 3}"#).unwrap();
    assert!(matches!(dir.load(), Err(StoreError::Corrupt { .. })));
    assert_eq!(dir.quarantined().len(), 2);
}

#[test]
fn a_newer_record_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let text = r#"{"schema_version": 2, "last_sequence": 5, "shards": []}"#;
    fs::write(dir.releases_path(), text).unwrap();
    assert!(matches!(
        dir.load(),
        Err(StoreError::TooNew {
            found: 2,
            supported: 1,
            ..
        })
    ));
    assert!(matches!(
        dir.save(&PipelineState::idle()),
        Err(StoreError::TooNew { .. })
    ));
    assert_eq!(fs::read_to_string(dir.releases_path()).unwrap(), text);
}

#[test]
fn a_crash_between_the_two_writes_loads_the_larger_sequence_but_not_an_uncommitted_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    complete(&dir, "v1.0.0", "r1", 10);
    let mut s = started("v2.0.0", "r2", dir.load().unwrap());
    pass_until(&mut s, Stage::Deploying, 11);
    dir.save(&s).unwrap();
    let deploying = s.clone();

    // DEPLOY passes; the record is written, then the process dies before the state write.
    pass_until(&mut s, Stage::Completed, 11);
    let ahead = dir.releases().unwrap().merged_with(&s);
    fs::write(dir.releases_path(), serde_json::to_vec(&ahead).unwrap()).unwrap();
    let mut more = ahead.clone();
    more.last_sequence = 12; // e.g. a rollback order signed with the next sequence
    fs::write(dir.releases_path(), serde_json::to_vec(&more).unwrap()).unwrap();

    let loaded = dir.load().unwrap();
    assert_eq!(loaded.stage, Stage::Deploying);
    assert_eq!(loaded.last_sequence, 12, "the larger sequence wins");
    // The run is not completed on disk: it must not become its own rollback target.
    assert_eq!(loaded.last_completed, Some(release("v1.0.0", "r1", 10)));
    assert_eq!(
        PipelineState {
            last_sequence: 12,
            ..deploying.clone()
        },
        loaded
    );

    // Resumed, DEPLOY passes again: recorded once, sequence kept.
    let mut resumed = loaded.clone();
    pass_until(&mut resumed, Stage::Completed, 11);
    dir.save(&resumed).unwrap();
    let record = dir.releases().unwrap();
    assert_eq!(
        record.history,
        [release("v1.0.0", "r1", 10), release("v2.0.0", "r2", 11)]
    );
    assert_eq!(record.last_sequence, 12);

    // Or, the other end: resumed, the run is rolled back instead: the record drops the
    // completion that never happened and keeps the sequence.
    let tmp2 = tempfile::tempdir().unwrap();
    let dir2 = StateDir::open(tmp2.path()).unwrap();
    dir2.save(&deploying).unwrap();
    fs::write(dir2.releases_path(), serde_json::to_vec(&more).unwrap()).unwrap();
    dir2.transact(|s| {
        handle(
            s,
            Event::Rollback {
                reason: "bad".into(),
                now: 3.0,
            },
        )
        .map(|_| ())
    })
    .unwrap();
    let record = dir2.releases().unwrap();
    assert_eq!(record.last_completed, Some(release("v1.0.0", "r1", 10)));
    assert_eq!(record.history, [release("v1.0.0", "r1", 10)]);
    assert_eq!(record.last_sequence, 12);
    assert_eq!(
        dir2.load().unwrap().last_completed,
        Some(release("v1.0.0", "r1", 10))
    );
}

#[test]
fn an_old_state_file_does_not_lower_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    let first = complete(&dir, "v1.0.0", "r1", 3);
    complete(&dir, "v1.1.0", "r2", 4);
    // An operator restores the state file from an old copy.
    dir.save(&first).unwrap();
    let s = dir.load().unwrap();
    assert_eq!(s.last_completed, Some(release("v1.1.0", "r2", 4)));
    assert_eq!(s.last_sequence, 4);
    let record = dir.releases().unwrap();
    assert_eq!(record.last_completed, Some(release("v1.1.0", "r2", 4)));
    assert_eq!(record.last_sequence, 4);
}

#[test]
fn the_history_is_bounded_and_the_sequence_never_goes_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    for i in 1..=(RELEASE_HISTORY_LIMIT as u64 + 5) {
        complete(&dir, &format!("v1.{i}.0"), &format!("r{i}"), 100 + i);
    }
    let record = dir.releases().unwrap();
    assert_eq!(record.history.len(), RELEASE_HISTORY_LIMIT);
    assert_eq!(record.history[0].run_id, "r6");
    assert_eq!(
        record.last_completed.as_ref().unwrap().run_id,
        format!("r{}", RELEASE_HISTORY_LIMIT + 5)
    );
    let top = record.last_sequence;
    let mut low = dir.load().unwrap();
    low.last_sequence = 1;
    dir.save(&low).unwrap();
    assert_eq!(dir.releases().unwrap().last_sequence, top);
    assert_eq!(dir.load().unwrap().last_sequence, top);
}

fn schema_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../state/releases.schema.json")
}

/// The committed schema of `releases.json` equals the one generated from the Rust type,
/// and a written file validates against it. To accept a change:
/// `UPDATE_SNAPSHOTS=1 cargo nextest run -p fleetgate-store`.
#[test]
fn the_committed_schema_matches_and_written_records_validate() {
    let generated = serde_json::to_value(schemars::schema_for!(ReleaseRecord)).unwrap();
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::write(schema_path(), &text).unwrap();
    }
    let committed = fs::read_to_string(schema_path()).expect("state/releases.schema.json exists");
    assert_eq!(
        committed, text,
        "releases.json schema changed: rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    );
    let validator = jsonschema::validator_for(&generated).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    complete(&dir, "v1.0.0", "r1", 3);
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.releases_path()).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&written)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut bad = written.clone();
    bad["last_sequence"] = json!("many");
    assert!(!validator.is_valid(&bad));
}
