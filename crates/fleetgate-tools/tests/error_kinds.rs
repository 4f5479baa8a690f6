//! `RuntimeError` is typed: callers match on the variant (and the data in it) instead of
//! parsing messages, and each kind maps to one `error_kind` (and so one HTTP status).
//! The errors here come from real calls (files, keys, the benchmark registry) where one
//! can be provoked cheaply; the rest of the mapping is pinned on constructed values.

use fleetgate_runtime::bench_registry::Tier;
use fleetgate_runtime::{
    BusyReason, ConfigProblem, FleetFailure, GitError, InvalidInput, LeaseHeld, Refusal,
    ReportError, RuntimeError, approval, load_config,
};
use fleetgate_tools::ErrorKind;
use std::path::PathBuf;

#[test]
fn a_missing_config_file_is_a_typed_config_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = load_config(Some(&path)).unwrap_err();
    match &err {
        RuntimeError::Config(ConfigProblem::Read { path: p, source }) => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected ConfigProblem::Read, got {other:?}"),
    }
    assert_eq!(ErrorKind::of(&err), ErrorKind::Config);
    assert!(err.to_string().contains("fleetgate init"), "{err}");
}

#[test]
fn a_config_that_does_not_parse_carries_the_parser_error_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleetgate.toml");
    std::fs::write(&path, "[canary]\nbaseline_exception_rate = 1\n").unwrap();
    let err = load_config(Some(&path)).unwrap_err();
    let RuntimeError::Config(ConfigProblem::Parse { path: p, source }) = &err else {
        panic!("expected ConfigProblem::Parse, got {err:?}");
    };
    assert_eq!(p, &path);
    assert!(
        source.to_string().contains("baseline_exception_rate"),
        "{source}"
    );
    assert_eq!(ErrorKind::of(&err), ErrorKind::Config);
}

#[test]
fn bad_caller_input_is_typed_and_reported_as_invalid_arguments() {
    let err = Tier::parse("slow").unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Invalid(InvalidInput::BenchTier(t)) if t == "slow"),
        "{err:?}"
    );
    assert_eq!(ErrorKind::of(&err), ErrorKind::InvalidArguments);

    let key = fleetgate_trust::SigningKey::from_seed(&[7; 32]);
    let err = approval::sign(&serde_json::json!([1, 2]), &key).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Invalid(InvalidInput::ApprovalNotObject)),
        "{err:?}"
    );
    let err = approval::sign(&serde_json::json!({"type": "other"}), &key).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Invalid(InvalidInput::NotAnApprovalRequest)
        ),
        "{err:?}"
    );
    assert_eq!(ErrorKind::of(&err), ErrorKind::InvalidArguments);
}

#[test]
fn every_kind_maps_to_its_error_kind() {
    let cases: Vec<(RuntimeError, ErrorKind)> = vec![
        (
            BusyReason::CaptureRunning {
                version: "v1.0.0".into(),
            }
            .into(),
            ErrorKind::Locked,
        ),
        (
            LeaseHeld {
                registry: "postgres://db/fleet".into(),
                holder: Some("other".into()),
                lease: "held by other".into(),
            }
            .into(),
            ErrorKind::Locked,
        ),
        (Refusal::NothingToSign.into(), ErrorKind::Refused),
        (
            RuntimeError::NoActiveRun {
                stage: fleetgate_core::Stage::Idle,
            },
            ErrorKind::Refused,
        ),
        (
            InvalidInput::TooManyBenchmarks { limit: 3 }.into(),
            ErrorKind::InvalidArguments,
        ),
        (
            FleetFailure::UnknownNode { node: "n9".into() }.into(),
            ErrorKind::InvalidArguments,
        ),
        (
            ConfigProblem::Missing {
                key: "signing.trust_file",
                why: "test",
            }
            .into(),
            ErrorKind::Config,
        ),
        (FleetFailure::NoSignedManifest.into(), ErrorKind::Failed),
        (
            GitError::NoTag {
                version: "v1.0.0".into(),
                repo: PathBuf::from("/r"),
            }
            .into(),
            ErrorKind::Failed,
        ),
        (
            ReportError::TooLarge {
                what: "JUnit report",
                path: PathBuf::from("r.xml"),
                size: fleetgate_trust::fsutil::Oversize(Some(10)),
                limit: 1,
            }
            .into(),
            ErrorKind::Failed,
        ),
    ];
    for (err, kind) in cases {
        assert_eq!(ErrorKind::of(&err), kind, "{err:?}");
        assert!(!err.to_string().is_empty(), "{err:?}");
    }
}
