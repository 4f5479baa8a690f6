//! `[approval] before`: a stage waits for K distinct signed approvals from the configured
//! keys before its gate runs (issue 19). Through the binary: the SIGN gate of a real
//! pipeline holds (no manifest signed) until two approvers signed — one on the
//! orchestrator's host, one offline (`--request` / `--sign` / `--submit`) — and refuses an
//! approval from a key that is not an approver, a tampered one, and counts one key once.

mod common;
use common::{Env, code, text};
use serde_json::Value;

fn keygen(env: &Env, name: &str) -> (String, String) {
    let path = env.dir.path().join(name);
    let out = env.fg(&["keygen", "--out", path.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let public = std::fs::read_to_string(env.dir.path().join(format!("{name}.pub")))
        .unwrap()
        .trim()
        .to_owned();
    (path.to_str().unwrap().to_owned(), public)
}

fn signing_detail(env: &Env) -> String {
    let s = env.status();
    assert_eq!(s["stage"], "signing", "{s}");
    s["gate_results"]["signing"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn sign_waits_for_two_distinct_signed_approvals() {
    let env = Env::new();
    let (a_key, a_pub) = keygen(&env, "a.key");
    let (b_key, b_pub) = keygen(&env, "b.key");
    let (c_key, _) = keygen(&env, "c.key");
    let conf = std::fs::read_to_string(env.config()).unwrap();
    // Three approvals required from two keys: refused when loading the config.
    std::fs::write(
        env.config(),
        format!(
            "{conf}\n[approval]\nbefore = [\"sign\"]\nrequired = 3\nkeys = [{a_pub:?}, {b_pub:?}]\n"
        ),
    )
    .unwrap();
    let out = env.fg(&["status"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("approval.required"), "{}", text(&out));
    std::fs::write(
        env.config(),
        format!(
            "{conf}\n[approval]\nbefore = [\"sign\"]\nrequired = 2\nkeys = [{a_pub:?}, {b_pub:?}]\n"
        ),
    )
    .unwrap();

    let out = env.fg(&["start", "v1.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for _ in 0..5 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let detail = signing_detail(&env);
    assert!(
        detail.contains("waiting for approvals: 0 of 2 before SIGN"),
        "{detail}"
    );
    let manifest = env.state_dir().join("release_manifest.json");
    assert!(!manifest.exists(), "nothing is signed before the approvals");

    // A key that is not an approver: refused, named.
    let out = env.fg(&["approve", "--key-file", &c_key, "--json"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not signed by an approval key"),
        "{v}"
    );

    // The first approver, on this host; approving twice counts once.
    for _ in 0..2 {
        let out = env.fg(&["approve", "--key-file", &a_key, "--reason", "looks good"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert!(text(&out).contains("1 of 2 approval(s)"), "{}", text(&out));
    }
    env.fg(&["advance"]);
    let detail = signing_detail(&env);
    assert!(detail.contains("waiting for approvals: 1 of 2"), "{detail}");
    assert!(!manifest.exists());

    // The second approver, offline: request here, sign there, submit here.
    let req = env.dir.path().join("req.json");
    let out = env.fg(&["approve", "--request", "--out", req.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let signed = env.dir.path().join("approval-b.json");
    let out = env.fg(&[
        "approve",
        "--sign",
        req.to_str().unwrap(),
        "--key-file",
        &b_key,
        "--out",
        signed.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Tampered (another version): the signature no longer verifies.
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    forged["version"] = Value::String("v9.9.9".into());
    let forged_path = env.dir.path().join("forged.json");
    std::fs::write(&forged_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let out = env.fg(&["approve", "--submit", forged_path.to_str().unwrap()]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("approval refused"), "{}", text(&out));
    // The tool (also `POST /api/upgrades/approve`): without `approval`, the request and
    // who approved so far; with it, the approval recorded.
    let tool = |args: Value| -> Value {
        let out = env.fg(&[
            "tools",
            "call",
            "approve_upgrade",
            "--args",
            &args.to_string(),
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    let r = tool(serde_json::json!({}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["request"]["stage"], "sign", "{r}");
    assert_eq!(r["request"]["version"], "v1.0.0", "{r}");
    assert_eq!(r["approved_by"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["required"], 2, "{r}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    let r = tool(serde_json::json!({"approval": forged}));
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["error_kind"], "refused", "{r}");
    let r = tool(serde_json::json!({"approval": doc}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["approval"]["approvals"], 2, "{r}");
    assert_eq!(r["approval"]["stage"], "sign", "{r}");
    // Submitting the same approval by file as well counts it once.
    let out = env.fg(&["approve", "--submit", signed.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["approval"]["approvals"], 2, "{v}");

    // Now SIGN runs.
    env.fg(&["advance"]);
    let s = env.status();
    assert_eq!(s["gate_results"]["signing"]["outcome"], "passed", "{s}");
    assert_eq!(s["stage"], "canary");
    assert!(manifest.exists());
}
