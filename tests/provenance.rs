//! Release provenance through the real binary: a real pipeline run's SIGN writes an in-toto
//! Statement v1 / SLSA Provenance v1 that validates against the committed JSON Schema
//! (`state/provenance.intoto.schema.json`, written from the specs), the signed manifest
//! carries the SHA-256 of exactly that file, every evidence digest is the digest of the
//! file it names, and `fleetgate provenance verify` catches a changed statement, a changed
//! piece of evidence and a manifest that names another statement.

mod common;
use common::{Env, code, text};
use serde_json::Value;
use sha2::Digest as _;
use std::path::{Path, PathBuf};

fn sha256_file(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

fn schema() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("state/provenance.intoto.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// One release through BUILD … SIGN (CANARY then fails closed: no fleet).
fn released() -> Env {
    let env = Env::new();
    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let _ = env.fg(&["run"]);
    let s = env.status();
    assert_eq!(
        s["gate_results"]["signing"]["outcome"], "passed",
        "{}",
        s["gate_results"]
    );
    env
}

#[test]
fn sign_writes_a_schema_valid_statement_whose_digest_the_signed_manifest_carries() {
    let env = released();
    let state = env.state_dir();
    let statement = state.join("provenance/v1.0.0.intoto.json");
    let bytes = std::fs::read(&statement).expect("SIGN wrote the statement");
    let st: Value = serde_json::from_slice(&bytes).unwrap();

    // The schema accepts it, and can say no.
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    let errors: Vec<String> = validator.iter_errors(&st).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{st:#}");
    let mut broken = st.clone();
    broken["predicate"]["runDetails"]["metadata"]["finishedOn"] = "yesterday".into();
    assert!(!validator.is_valid(&broken));
    let mut broken = st.clone();
    broken["subject"][0]["digest"]["sha256"] = "ABC".into();
    assert!(!validator.is_valid(&broken));
    let mut broken = st.clone();
    broken["predicate"]["buildDefinition"]
        .as_object_mut()
        .unwrap()
        .remove("buildType");
    assert!(!validator.is_valid(&broken));

    // The signed manifest names exactly this file.
    let manifest_path = state.join("release_manifest.json");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(m["provenance_sha256"], sha256_file(&statement));
    assert_eq!(
        bytes,
        fleetgate_trust::to_canonical_bytes(&st).unwrap(),
        "canonical JSON"
    );

    // The subject is the release; the parameters and the run are this run's.
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["subject"][0]["name"], "v1.0.0");
    assert_eq!(st["subject"][0]["digest"]["sha256"], m["code_hash"]);
    assert_eq!(st["subject"][0]["digest"]["gitCommit"], m["git_sha"]);
    assert_eq!(
        st["subject"][1]["digest"]["sha256"],
        m["file_manifest_hash"]
    );
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(def["externalParameters"]["version"], "v1.0.0");
    assert_eq!(def["externalParameters"]["gitSha"], m["git_sha"]);
    assert_eq!(
        def["resolvedDependencies"][0]["digest"]["gitCommit"],
        m["git_sha"]
    );
    assert_eq!(def["internalParameters"]["sequence"], m["sequence"]);
    let run = &st["predicate"]["runDetails"];
    assert_eq!(run["metadata"]["invocationId"], m["run_id"]);
    assert!(
        run["metadata"]["startedOn"].as_str().unwrap()
            <= run["metadata"]["finishedOn"].as_str().unwrap()
    );
    // The effective configuration's digest is what `fleetgate config` prints (less its
    // comment line).
    let cfg = env.fg(&["config"]);
    let cfg = String::from_utf8(cfg.stdout).unwrap();
    let body = cfg.split_once('\n').unwrap().1;
    assert_eq!(
        def["externalParameters"]["configSha256"],
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    );

    // Every gate's evidence is there, and each digest is its file's.
    let byproducts = run["byproducts"].as_array().unwrap();
    let kinds: Vec<(String, String)> = byproducts
        .iter()
        .map(|b| {
            (
                b["annotations"]["stage"].as_str().unwrap().to_owned(),
                b["annotations"]["evidence"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("building", "log"),
        ("testing", "log"),
        ("testing", "junit"),
        ("auditing", "audit-output"),
        ("benchmarking", "benchmark-results"),
        ("benchmarking", "log"),
    ] {
        assert!(
            kinds.iter().any(|k| (k.0.as_str(), k.1.as_str()) == want),
            "{want:?} missing from {kinds:?}"
        );
    }
    for b in byproducts {
        let file = state.join(b["name"].as_str().unwrap());
        assert_eq!(
            b["digest"]["sha256"],
            sha256_file(&file),
            "{}",
            file.display()
        );
    }
    let junit = byproducts
        .iter()
        .find(|b| b["annotations"]["evidence"] == "junit")
        .unwrap();
    let report = std::fs::read_to_string(state.join(junit["name"].as_str().unwrap())).unwrap();
    assert!(report.contains("<testcase"), "{report}");

    // SIGN's verdict names the file and digest.
    let s = env.status();
    assert_eq!(
        s["gate_results"]["signing"]["figures"]["provenance_sha256"],
        m["provenance_sha256"]
    );
}

#[test]
fn provenance_verify_and_show_check_the_manifest_the_statement_and_the_evidence() {
    let env = released();
    let state = env.state_dir();
    let statement = state.join("provenance/v1.0.0.intoto.json");
    let manifest = state.join("release_manifest.json");
    let trust = env.app.join("keys/trust.json");
    let verify = |st: &Path, extra: &[&str]| {
        let mut a = vec![
            "provenance",
            "verify",
            "--manifest",
            p(&manifest),
            "--statement",
            p(st),
            "--json",
        ];
        a.extend_from_slice(extra);
        env.fg(&a)
    };

    let out = verify(&statement, &["--trust", p(&trust)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    let checks = v["evidence"].as_array().unwrap();
    assert!(checks.len() >= 6, "{v}");
    assert!(checks.iter().all(|c| c["status"] == "match"), "{v}");
    // The trust file of the configuration is the default; a pinned key works too
    // (HART's single-key model).
    let out = verify(&statement, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let out = verify(
        &statement,
        &["--pubkey", m["master_public_key"].as_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.fg(&[
        "manifest",
        "verify",
        "--pubkey",
        m["master_public_key"].as_str().unwrap(),
        p(&manifest),
    ]);
    assert_eq!(code(&out), 0, "single-key verification: {}", text(&out));

    // `show` for the last run's version, human and JSON.
    let out = env.fg(&["provenance", "show"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let human = text(&out);
    assert!(human.contains("names it (provenance_sha256)"), "{human}");
    assert!(human.contains("junit.xml"), "{human}");
    let out = env.fg(&["provenance", "show", "v1.0.0", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["sha256"], m["provenance_sha256"]);
    assert_eq!(shown["manifest_names_it"], true);
    let out = env.fg(&["provenance", "show", "v9.9.9"]);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out).contains("no provenance statement"),
        "{}",
        text(&out)
    );

    // A statement that is not byte for byte the one the manifest names: 20.
    let other = env.dir.path().join("other.intoto.json");
    let changed = String::from_utf8(std::fs::read(&statement).unwrap())
        .unwrap()
        .replace("\"passed\"", "\"skipped\"");
    std::fs::write(&other, changed).unwrap();
    let out = verify(&other, &["--evidence-dir", p(&state)]);
    assert_eq!(code(&out), 20, "{}", text(&out));
    assert!(text(&out).contains("statement_mismatch"), "{}", text(&out));

    // Evidence changed after the release: 21, naming it.
    let junit = state.join(
        m["run_id"]
            .as_str()
            .map(|r| format!("logs/{r}/junit.xml"))
            .unwrap(),
    );
    std::fs::write(&junit, "<testsuites/>").unwrap();
    let out = verify(&statement, &[]);
    assert_eq!(code(&out), 21, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"], "evidence_mismatch");
    assert!(
        v["evidence"].as_array().unwrap().iter().any(
            |c| c["status"] == "mismatch" && c["name"].as_str().unwrap().ends_with("junit.xml")
        ),
        "{v}"
    );
    // Evidence that is simply not here (a copy of the statement elsewhere) is not a failure.
    let elsewhere = env.dir.path().join("copy.intoto.json");
    std::fs::copy(&statement, &elsewhere).unwrap();
    let out = verify(&elsewhere, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // A manifest changed to name the forged statement no longer verifies.
    let forged = env.dir.path().join("forged_manifest.json");
    let mut fm = m.clone();
    fm["provenance_sha256"] = sha256_file(&other).into();
    std::fs::write(&forged, serde_json::to_vec(&fm).unwrap()).unwrap();
    let out = env.fg(&[
        "provenance",
        "verify",
        "--manifest",
        p(&forged),
        "--statement",
        p(&other),
        "--trust",
        p(&trust),
    ]);
    assert_eq!(code(&out), 13, "bad_signature: {}", text(&out));
}

#[test]
fn sign_refuses_when_a_gates_evidence_changed_after_the_gate_read_it() {
    let env = Env::new();
    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // BUILD, TEST, AUDIT, BENCHMARK.
    for _ in 0..4 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let s = env.status();
    assert_eq!(s["stage"], "signing", "{}", s["gate_results"]);
    let run = s["run_id"].as_str().unwrap();
    std::fs::write(
        env.state_dir().join(format!("logs/{run}/auditing.log")),
        "audit: all clear (forged)\n",
    )
    .unwrap();
    let _ = env.fg(&["advance"]);
    let s = env.status();
    assert_eq!(s["gate_results"]["signing"]["outcome"], "failed");
    let detail = s["gate_results"]["signing"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("auditing.log") && detail.contains("changed"),
        "{detail}"
    );
    assert!(
        !env.state_dir().join("release_manifest.json").exists(),
        "nothing signed"
    );
}
