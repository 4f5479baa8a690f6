//! `[signing] mode = "external"` (issue 13): SIGN completes with the signature made by
//! another process that holds the key; the orchestrator never has it (no key file in its
//! config or on its disk, no key variable in its environment). A manifest that is not the
//! signing request, or is signed by an untrusted key, is refused.

mod common;
use common::{Env, code, text};
use std::process::Command;

/// The signer: `fleetgate manifest sign-request`, run with no config, from another
/// directory, holding the key.
fn sign_request(
    signer_dir: &std::path::Path,
    request: &std::path::Path,
    key: &std::path::Path,
    out: &std::path::Path,
) -> std::process::Output {
    let mut c = Command::new(common::bin());
    c.current_dir(signer_dir)
        .args(["manifest", "sign-request"])
        .arg(request)
        .arg("--key-file")
        .arg(key)
        .arg("--out")
        .arg(out);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETGATE_") || k.starts_with("HEVOLVE_") {
            c.env_remove(k);
        }
    }
    c.output().unwrap()
}

#[test]
fn external_signing_completes_sign_with_a_key_the_orchestrator_never_had() {
    let env = Env::new();
    // The key leaves the orchestrator's host: only the signer has it.
    let signer = env.dir.path().join("signer");
    std::fs::create_dir_all(&signer).unwrap();
    let key = signer.join("release.key");
    std::fs::rename(env.app.join("keys/release.key"), &key).unwrap();
    env.edit_config("key_file = \"keys/release.key\"", "mode = \"external\"");
    assert!(
        !std::fs::read_to_string(env.config())
            .unwrap()
            .contains("key_file")
    );

    assert_eq!(code(&env.fg(&["start", "v1.0.0"])), 0);
    for _ in 0..6 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let s = env.status();
    assert_eq!(s["stage"], "signing", "{}", s["gate_results"]);
    let sign = &s["gate_results"]["signing"];
    assert_eq!(sign["outcome"], "pending", "{sign}");
    assert!(
        sign["detail"]
            .as_str()
            .unwrap()
            .contains("externally signed manifest"),
        "{sign}"
    );
    let request = env.state_dir().join("signing-request.json");
    let req_bytes = std::fs::read(&request).unwrap();
    let req: serde_json::Value = serde_json::from_slice(&req_bytes).unwrap();
    assert!(req.get("master_signature").is_none() && req.get("master_public_key").is_none());
    assert_eq!(req["version"], "v1.0.0");
    assert_eq!(req["run_id"], s["run_id"]);
    assert!(!env.state_dir().join("release_manifest.json").exists());
    // The request carries the provenance statement's digest, so the signer signs it too.
    let statement = env.state_dir().join("provenance/v1.0.0.intoto.json");
    let st_bytes = std::fs::read(&statement).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        req["provenance_sha256"],
        hex::encode(sha2::Sha256::digest(&st_bytes))
    );
    // Checking again keeps the same request: its sequence and seed are fixed.
    env.fg(&["advance"]);
    assert_eq!(std::fs::read(&request).unwrap(), req_bytes);
    assert_eq!(
        std::fs::read(&statement).unwrap(),
        st_bytes,
        "and its statement"
    );

    // A signer that changes a field: refused, naming it.
    let mut altered = req.clone();
    altered["sequence"] = serde_json::json!(req["sequence"].as_u64().unwrap() + 1);
    let altered_req = signer.join("altered-request.json");
    std::fs::write(&altered_req, serde_json::to_vec(&altered).unwrap()).unwrap();
    let altered_signed = signer.join("altered.json");
    let out = sign_request(&signer, &altered_req, &key, &altered_signed);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.fg(&["manifest", "submit", altered_signed.to_str().unwrap()]);
    assert_ne!(
        code(&out),
        0,
        "an altered manifest was accepted: {}",
        text(&out)
    );
    assert!(text(&out).contains("`sequence`"), "{}", text(&out));
    // Nor may the signer swap the statement.
    let mut swapped = req.clone();
    swapped["provenance_sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&altered_req, serde_json::to_vec(&swapped).unwrap()).unwrap();
    let out = sign_request(&signer, &altered_req, &key, &altered_signed);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.fg(&["manifest", "submit", altered_signed.to_str().unwrap()]);
    assert_ne!(
        code(&out),
        0,
        "a swapped statement was accepted: {}",
        text(&out)
    );
    assert!(text(&out).contains("`provenance_sha256`"), "{}", text(&out));

    // A key the trust file does not pin: refused.
    let stranger = signer.join("stranger.key");
    assert_eq!(
        code(&env.fg(&["keygen", "--out", stranger.to_str().unwrap()])),
        0
    );
    let untrusted = signer.join("untrusted.json");
    assert_eq!(
        code(&sign_request(&signer, &request, &stranger, &untrusted)),
        0
    );
    let out = env.fg(&["manifest", "submit", untrusted.to_str().unwrap()]);
    assert_ne!(
        code(&out),
        0,
        "an untrusted signature was accepted: {}",
        text(&out)
    );
    assert!(text(&out).contains("does not verify"), "{}", text(&out));
    assert_eq!(env.status()["stage"], "signing");

    // The real signer.
    let signed = signer.join("signed.json");
    let out = sign_request(&signer, &request, &key, &signed);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.fg(&["manifest", "submit", signed.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["pending"].is_null(), "{report}");
    let out = env.fg(&["advance"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = env.status();
    assert_eq!(
        s["gate_results"]["signing"]["outcome"], "passed",
        "{}",
        s["gate_results"]["signing"]
    );
    assert_ne!(s["stage"], "signing");
    assert_eq!(s["manifest"]["sequence"], req["sequence"]);
    assert_eq!(s["manifest"]["canary_seed"], req["canary_seed"]);
    assert_eq!(s["manifest"]["provenance_sha256"], req["provenance_sha256"]);
    let out = env.fg(&[
        "provenance",
        "verify",
        "--manifest",
        env.state_dir()
            .join("release_manifest.json")
            .to_str()
            .unwrap(),
        "--statement",
        statement.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let verify = env.fg(&[
        "manifest",
        "verify",
        env.state_dir()
            .join("release_manifest.json")
            .to_str()
            .unwrap(),
        "--trust",
        env.app.join("keys/trust.json").to_str().unwrap(),
    ]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));
}
