//! Release trust through the real binary: keygen, sign with HART's arguments or from a
//! repository, verify, and each refusal with its own exit code.

mod common;
use common::{Env, code, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `a.key` and a trust file of its public key, in the environment's directory.
fn key_and_trust(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = env.dir.path();
    let key = d.join("a.key");
    let out = env.fg(&["keygen", "--out", p(&key)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let trust = d.join("trust.json");
    let out = env.fg(&[
        "trust",
        "init",
        "--key",
        p(&d.join("a.key.pub")),
        "--out",
        p(&trust),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    (key, trust)
}

#[test]
fn sign_verify_round_trip_and_every_refusal_has_its_exit_code() {
    let env = Env::new();
    let d = env.dir.path();
    let key = d.join("a.key");
    let out = env.fg(&["keygen", "--out", p(&key)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let seed = std::fs::read_to_string(&key).unwrap();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !text(&out).contains(seed.trim()),
        "the secret is never printed"
    );
    let pubhex = std::fs::read_to_string(d.join("a.key.pub"))
        .unwrap()
        .trim()
        .to_owned();
    let trust = d.join("trust.json");
    assert_eq!(
        code(&env.fg(&[
            "trust",
            "init",
            "--key",
            p(&d.join("a.key.pub")),
            "--out",
            p(&trust)
        ])),
        0
    );

    // HART's sign_release.py arguments.
    let m = d.join("release_manifest.json");
    let out = env.fg(&[
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
        p(&m),
        "--key-file",
        p(&key),
        "--sequence",
        "10",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec!["manifest", "verify", "--trust", p(&trust)];
        args.extend_from_slice(extra);
        args.push(p(file));
        env.fg(&args)
    };
    assert_eq!(code(&verify(&m, &[])), 0);
    assert_eq!(
        code(&env.fg(&["manifest", "verify", "--pubkey", &pubhex, p(&m)])),
        0
    );

    // Tampered signed field → 13.
    let text_m = std::fs::read_to_string(&m).unwrap();
    let tampered = d.join("tampered.json");
    std::fs::write(&tampered, text_m.replace("v1.0.0", "v6.6.6")).unwrap();
    let out = verify(&tampered, &[]);
    assert_eq!(code(&out), 13, "{}", text(&out));

    // Unknown key → 14.
    let other = d.join("b.key");
    env.fg(&["keygen", "--out", p(&other)]);
    let m2 = d.join("other.json");
    env.fg(&[
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
        p(&m2),
        "--key-file",
        p(&other),
    ]);
    assert_eq!(code(&verify(&m2, &[])), 14);

    // Below threshold (2-of-2 with one signature) → 15.
    let trust2 = d.join("trust2.json");
    env.fg(&[
        "trust",
        "init",
        "--key",
        p(&d.join("a.key.pub")),
        "--key",
        p(&d.join("b.key.pub")),
        "--threshold",
        "2",
        "--out",
        p(&trust2),
    ]);
    let out = env.fg(&["manifest", "verify", "--trust", p(&trust2), p(&m)]);
    assert_eq!(code(&out), 15, "{}", text(&out));

    // Expired → 16.
    let expired = d.join("expired.json");
    let out = env.fg(&[
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
        p(&expired),
        "--key-file",
        p(&key),
        "--expires-in",
        "1s",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Valid (0) until its expiry passes, then refused as expired (16).
    let t = std::time::Instant::now();
    loop {
        let out = verify(&expired, &[]);
        match code(&out) {
            16 => break,
            0 => assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "a manifest signed with --expires-in 1s still verifies after {:?}",
                t.elapsed()
            ),
            other => panic!("exit {other} before expiry: {}", text(&out)),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Replayed sequence against a floor → 18.
    let floor = d.join("floor");
    assert_eq!(
        code(&verify(&m, &["--floor-dir", p(&floor), "--commit"])),
        0
    );
    let out = verify(&m, &["--floor-dir", p(&floor)]);
    assert_eq!(code(&out), 18, "{}", text(&out));

    // Oversized → 10, malformed → 11, unsigned → 12.
    let big = d.join("big.json");
    std::fs::write(&big, format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000))).unwrap();
    assert_eq!(code(&verify(&big, &[])), 10);
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert_eq!(code(&verify(&bad, &[])), 11);
    let unsigned = d.join("unsigned.json");
    let mut v: serde_json::Value = serde_json::from_str(&text_m).unwrap();
    v.as_object_mut().unwrap().remove("master_signature");
    std::fs::write(&unsigned, v.to_string()).unwrap();
    assert_eq!(code(&verify(&unsigned, &[])), 12);

    // --json on a refusal names the reason.
    let out = verify(&tampered, &["--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["error"], "bad_signature");
}

#[test]
fn sign_from_a_repository_matches_the_pipeline_code_hash() {
    let env = Env::new();
    let m = env.dir.path().join("m.json");
    let out = env.fg(&[
        "manifest",
        "sign",
        "--repo",
        p(&env.app),
        "--rev",
        "v1.0.0",
        "--version",
        "v1.0.0",
        "--output",
        p(&m),
        "--key-file",
        p(&env.app.join("keys/release.key")),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    env.fg(&["start", "v1.0.0"]);
    env.fg(&["advance"]);
    let s = env.status();
    let mv: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_eq!(mv["code_hash"], s["code_hash"]);
    assert_eq!(
        code(&env.fg(&[
            "manifest",
            "verify",
            "--trust",
            p(&env.app.join("keys/trust.json")),
            p(&m)
        ])),
        0
    );
}

/// Issue 20: an agent update signed from the build itself — one artifact named after the
/// file, its SHA-256 as the code hash, copied into the artifact store by digest — which
/// verifies like any manifest; `--kind agent` without the build is refused.
#[test]
fn an_agent_update_is_signed_from_the_build_and_stored_by_digest() {
    let env = Env::new();
    let d = env.dir.path();
    let (key, trust) = key_and_trust(&env);
    let build = d.join("fleetgate-agent");
    std::fs::write(&build, b"#!/bin/sh\necho new agent\n").unwrap();
    let store = d.join("store");
    let m = d.join("agent_manifest.json");
    let out = env.fg(&[
        "manifest",
        "sign",
        "--kind",
        "agent",
        "--version",
        "agent-2.0.0",
        "--agent-binary",
        p(&build),
        "--artifacts-dir",
        p(&store),
        "--output",
        p(&m),
        "--key-file",
        p(&key),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let sha = fleetgate_trust::provenance::sha256_hex(&std::fs::read(&build).unwrap());
    assert_eq!(v["kind"], "agent", "{v}");
    assert_eq!(v["code_hash"], sha.as_str(), "{v}");
    assert_eq!(
        v["artifacts"],
        serde_json::json!([{"name": "fleetgate-agent", "sha256": sha, "size": 25}])
    );
    assert_eq!(
        std::fs::read(store.join(&sha)).unwrap(),
        std::fs::read(&build).unwrap()
    );
    let out = env.fg(&["manifest", "verify", "--trust", p(&trust), p(&m)]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    let out = env.fg(&[
        "manifest",
        "sign",
        "--kind",
        "agent",
        "--version",
        "x",
        "--output",
        p(&d.join("x.json")),
        "--key-file",
        p(&key),
    ]);
    assert_ne!(code(&out), 0);
    assert!(text(&out).contains("--agent-binary"), "{}", text(&out));
}
