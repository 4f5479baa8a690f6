//! Compiles `crates/fleetgate-cli/src/trust_cmd.rs` (the `fleetgate keygen`,
//! `manifest` and `trust` handlers) inside this crate's tests and drives it
//! through a clap parser shaped like the real `fleetgate` CLI.

#[path = "../../fleetgate-cli/src/trust_cmd.rs"]
mod trust_cmd;

use clap::{CommandFactory as _, Parser, Subcommand};
use fleetgate_trust::{SigningKey, VerifyError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "fleetgate", version)]
struct Cli {
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per test")]
enum Cmd {
    Keygen(trust_cmd::KeygenArgs),
    #[command(subcommand)]
    Manifest(trust_cmd::ManifestCmd),
    #[command(subcommand)]
    Trust(trust_cmd::TrustCmd),
}

fn run(args: &[&str]) -> anyhow::Result<ExitCode> {
    let cli = Cli::try_parse_from(std::iter::once("fleetgate").chain(args.iter().copied()))?;
    match cli.cmd {
        Cmd::Keygen(a) => trust_cmd::run_keygen(a),
        Cmd::Manifest(c) => trust_cmd::run_manifest(c),
        Cmd::Trust(c) => trust_cmd::run_trust(c),
    }
}

fn code(args: &[&str]) -> ExitCode {
    run(args).unwrap_or_else(|e| panic!("fleetgate {args:?} failed: {e:#}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn clap_definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn keygen_sign_verify_round_trip_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("release.key");
    let manifest = dir.path().join("release_manifest.json");
    assert_eq!(code(&["keygen", "--out", s(&key)]), ExitCode::SUCCESS);
    assert!(
        run(&["keygen", "--out", s(&key)]).is_err(),
        "no overwrite without --force"
    );
    let pubkey = std::fs::read_to_string(dir.path().join("release.key.pub")).expect("pub");
    let pubkey = pubkey.trim();

    // HART's sign_release.py arguments.
    let sign = |seq: &str, expires: &str| {
        code(&[
            "manifest",
            "sign",
            "--version",
            "v1.0.0",
            "--git-sha",
            &"a".repeat(40),
            "--code-hash",
            &"c".repeat(64),
            "--manifest-hash",
            &"f".repeat(64),
            "--guardrail-hash",
            &"9".repeat(64),
            "--output",
            s(&manifest),
            "--key-file",
            s(&key),
            "--sequence",
            seq,
            "--expires-in",
            expires,
        ])
    };
    assert_eq!(sign("10", "30d"), ExitCode::SUCCESS);
    let verify_pub = |extra: &[&str]| {
        let mut a = vec!["manifest", "verify", "--pubkey", pubkey, s(&manifest)];
        a.extend_from_slice(extra);
        code(&a)
    };
    assert_eq!(verify_pub(&[]), ExitCode::SUCCESS);
    assert_eq!(verify_pub(&["--json"]), ExitCode::SUCCESS);

    // Trust file with that key.
    let trust = dir.path().join("trust.json");
    let pubfile = dir.path().join("release.key.pub");
    assert_eq!(
        code(&["trust", "init", "--key", s(&pubfile), "--out", s(&trust)]),
        ExitCode::SUCCESS
    );
    let verify_trust = |extra: &[&str]| {
        let mut a = vec!["manifest", "verify", "--trust", s(&trust), s(&manifest)];
        a.extend_from_slice(extra);
        code(&a)
    };
    assert_eq!(verify_trust(&[]), ExitCode::SUCCESS);

    // Floor: commit, then the same sequence is a replay (18).
    let floor = dir.path().join("floor");
    assert_eq!(
        verify_trust(&["--floor-dir", s(&floor), "--commit"]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        verify_trust(&["--floor-dir", s(&floor)]),
        ExitCode::from(18)
    );
    assert_eq!(sign("11", "30d"), ExitCode::SUCCESS);
    assert_eq!(
        verify_trust(&["--floor-dir", s(&floor), "--json"]),
        ExitCode::SUCCESS
    );

    // Tampered byte in a signed field (13).
    let good = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(&manifest, good.replace("v1.0.0", "v1.0.1")).expect("write");
    assert_eq!(verify_trust(&[]), ExitCode::from(13));
    // Unknown key (14).
    std::fs::write(&manifest, &good).expect("write");
    let other = SigningKey::from_seed(&[5; 32]);
    assert_eq!(
        code(&[
            "manifest",
            "verify",
            "--pubkey",
            &other.public_key_hex(),
            s(&manifest)
        ]),
        ExitCode::from(14)
    );
    // Expired (16).
    // `manifest sign` refuses to write an already expired manifest ...
    assert!(
        run(&[
            "manifest",
            "sign",
            "--version",
            "v1",
            "--git-sha",
            "a",
            "--code-hash",
            "c",
            "--manifest-hash",
            "f",
            "--output",
            s(&manifest),
            "--key-file",
            s(&key),
            "--sequence",
            "12",
            "--expires-in",
            "0s"
        ])
        .is_err()
    );
    // ... so make one with the library.
    let now = fleetgate_trust::unix_now();
    let m = fleetgate_trust::Manifest {
        version: "v1.0.0".into(),
        code_hash: "c".repeat(64),
        built_at: fleetgate_trust::rfc3339_seconds(now - 100),
        sequence: 12,
        expires_at: now - 10,
        canary_seed: "00".into(),
        ..Default::default()
    };
    let signer = SigningKey::from_file(&key).expect("key");
    std::fs::write(
        &manifest,
        fleetgate_trust::sign_manifest(&m, &[&signer]).expect("sign"),
    )
    .expect("write");
    assert_eq!(verify_trust(&["--json"]), ExitCode::from(16));
    // Oversized (10) and malformed (11).
    std::fs::write(
        &manifest,
        vec![b' '; fleetgate_trust::MAX_MANIFEST_BYTES + 10],
    )
    .expect("write");
    assert_eq!(verify_trust(&[]), ExitCode::from(10));
    std::fs::write(&manifest, b"{\"version\": ").expect("write");
    assert_eq!(verify_trust(&[]), ExitCode::from(11));
    // Missing manifest file: an error (exit 1 in the binary), not a verdict.
    assert!(
        run(&[
            "manifest",
            "verify",
            "--trust",
            s(&trust),
            "/nonexistent/m.json"
        ])
        .is_err()
    );
    // --trust and --pubkey together is a usage error.
    assert!(
        run(&[
            "manifest",
            "verify",
            "--trust",
            s(&trust),
            "--pubkey",
            pubkey,
            s(&manifest)
        ])
        .is_err()
    );
    // No hashes, no --repo, no agent build: a clear error naming what is missing.
    let out = dir.path().join("nothing.json");
    let e = run(&[
        "manifest",
        "sign",
        "--version",
        "v1",
        "--output",
        s(&out),
        "--key-file",
        s(&key),
    ])
    .expect_err("hashes or --repo required");
    assert!(
        format!("{e:#}").contains("--git-sha is required unless --repo is given"),
        "{e:#}"
    );
    assert!(!out.exists());
}

#[test]
fn rollback_manifest_and_two_of_three_cosigning_via_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("k{i}.key")))
        .collect();
    for k in &keys {
        assert_eq!(code(&["keygen", "--out", s(k)]), ExitCode::SUCCESS);
    }
    let pubs: Vec<String> = keys.iter().map(|k| format!("{}.pub", s(k))).collect();
    let trust = dir.path().join("trust.json");
    assert_eq!(
        code(&[
            "trust",
            "init",
            "--key",
            &pubs[0],
            "--key",
            &pubs[1],
            "--key",
            &pubs[2],
            "--threshold",
            "2",
            "--out",
            s(&trust)
        ]),
        ExitCode::SUCCESS
    );
    let m = dir.path().join("rollback.json");
    assert_eq!(
        code(&[
            "manifest",
            "sign",
            "--version",
            "v1.0.1",
            "--git-sha",
            "abc",
            "--code-hash",
            "c0ffee",
            "--manifest-hash",
            "f00d",
            "--kind",
            "rollback",
            "--rollback-of",
            "20",
            "--rollback-of-version",
            "v1.0.1",
            "--return-to-version",
            "v1.0.0",
            "--sequence",
            "21",
            "--output",
            s(&m),
            "--key-file",
            s(&keys[0]),
        ]),
        ExitCode::SUCCESS
    );
    // One signature of a 2-of-3 keyring: below threshold (15).
    assert_eq!(
        code(&["manifest", "verify", "--trust", s(&trust), s(&m)]),
        ExitCode::from(15)
    );
    // The same key co-signing again is refused; a second key makes it valid.
    assert!(run(&["trust", "sign", s(&m), "--key-file", s(&keys[0])]).is_err());
    assert_eq!(
        code(&["trust", "sign", s(&m), "--key-file", s(&keys[2])]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        code(&["manifest", "verify", "--trust", s(&trust), s(&m), "--json"]),
        ExitCode::SUCCESS
    );
    // A rollback without its target is refused at signing.
    assert!(
        run(&[
            "manifest",
            "sign",
            "--version",
            "v1",
            "--git-sha",
            "a",
            "--code-hash",
            "c",
            "--manifest-hash",
            "f",
            "--kind",
            "rollback",
            "--output",
            s(&m),
            "--key-file",
            s(&keys[0]),
        ])
        .is_err()
    );
}

#[test]
fn trust_rotation_via_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("k{i}.key")))
        .collect();
    for p in &k {
        assert_eq!(code(&["keygen", "--out", s(p)]), ExitCode::SUCCESS);
    }
    let pubf = |i: usize| format!("{}.pub", s(&k[i]));
    let trust = dir.path().join("trust.json");
    assert_eq!(
        code(&[
            "trust",
            "init",
            "--key",
            &pubf(0),
            "--key",
            &pubf(1),
            "--threshold",
            "2",
            "--out",
            s(&trust)
        ]),
        ExitCode::SUCCESS
    );
    let new = dir.path().join("trust.new.json");
    assert_eq!(
        code(&[
            "trust",
            "init",
            "--key",
            &pubf(1),
            "--key",
            &pubf(2),
            "--threshold",
            "2",
            "--trust-version",
            "2",
            "--out",
            s(&new)
        ]),
        ExitCode::SUCCESS
    );
    // Unsigned proposal: refused with the "unsigned" code.
    assert_eq!(
        code(&["trust", "rotate", "--trust", s(&trust), s(&new)]),
        ExitCode::from(12)
    );
    for i in [0, 1] {
        assert_eq!(
            code(&["trust", "sign", s(&new), "--key-file", s(&k[i])]),
            ExitCode::SUCCESS
        );
    }
    // Current threshold met, but the new key k3 has not co-signed: 1 of 2 new keys.
    assert_eq!(
        code(&["trust", "rotate", "--trust", s(&trust), s(&new)]),
        ExitCode::from(15)
    );
    assert_eq!(
        code(&["trust", "sign", s(&new), "--key-file", s(&k[2])]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        code(&["trust", "rotate", "--trust", s(&trust), s(&new)]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        std::fs::read(&trust).expect("read"),
        std::fs::read(&new).expect("read")
    );
    assert!(dir.path().join("trust.json.prev").exists());
    // Replaying the same rotation is refused (not a higher version).
    assert!(run(&["trust", "rotate", "--trust", s(&trust), s(&new)]).is_err());
}

#[test]
fn sign_with_repo_hashes_the_tracked_files() {
    let git_ok = std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !git_ok {
        eprintln!("!!!!! SKIPPED: `git` is not installed; --repo signing NOT checked !!!!!");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    std::fs::write(repo.join("main.rs"), "fn main() {}\n").expect("write");
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git");
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "init"]);
    let key = dir.path().join("k.key");
    code(&["keygen", "--out", s(&key)]);
    let m = dir.path().join("m.json");
    assert_eq!(
        code(&[
            "manifest",
            "sign",
            "--version",
            "v0.1.0",
            "--repo",
            s(&repo),
            "--output",
            s(&m),
            "--key-file",
            s(&key)
        ]),
        ExitCode::SUCCESS
    );
    let expected = fleetgate_runtime::codehash::code_hash_at(&repo, "HEAD", &Default::default())
        .expect("hash");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).expect("read")).expect("json");
    assert_eq!(v["code_hash"], serde_json::json!(expected.code_hash));
    assert_eq!(v["git_sha"], serde_json::json!(expected.commit));
    assert_eq!(
        v["file_manifest_hash"],
        serde_json::json!(expected.file_manifest_hash)
    );
    // And --repo with --code-hash is a usage error.
    assert!(
        run(&[
            "manifest",
            "sign",
            "--version",
            "v1",
            "--repo",
            s(&repo),
            "--code-hash",
            "c",
            "--output",
            s(&m)
        ])
        .is_err()
    );
}

#[test]
fn verify_error_codes_match_the_help_table() {
    for (line, code) in trust_cmd::MANIFEST_EXIT_HELP.lines().skip(3).zip(10u8..) {
        let name = line.split_whitespace().nth(1).expect("name");
        let err = match code {
            10 => VerifyError::TooLarge {
                what: "manifest",
                size: 0,
                limit: 0,
            },
            11 => VerifyError::Malformed {
                what: "manifest",
                reason: String::new(),
            },
            12 => VerifyError::Unsigned { what: "manifest" },
            13 => VerifyError::BadSignature {
                what: "manifest",
                key_id: String::new(),
            },
            14 => VerifyError::UnknownKey {
                what: "manifest",
                key_id: String::new(),
            },
            15 => VerifyError::BelowThreshold {
                what: "manifest",
                valid: 0,
                threshold: 0,
                detail: String::new(),
            },
            16 => VerifyError::Expired {
                expires_at: 0,
                now: 0,
            },
            17 => VerifyError::NotYetValid {
                what: "manifest",
                now: 0,
                reason: String::new(),
            },
            18 => VerifyError::Replayed {
                sequence: 0,
                floor: 0,
            },
            _ => VerifyError::DevMode,
        };
        assert_eq!((err.exit_code(), err.name()), (code, name), "{line}");
    }
}
