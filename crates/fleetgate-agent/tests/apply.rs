//! The agent embedded in a host tokio runtime (`RunningNode`), a real release
//! repository, the real test app, real HTTP on 127.0.0.1.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn outcome(v: &serde_json::Value) -> &str {
    v["outcome"].as_str().unwrap_or("<none>")
}

#[test]
fn good_release_applies_bad_release_rolls_back_and_same_hash_is_a_noop() {
    let f = Fixture::new(Opts::default());
    let v1 = f.commit("v1.0.0", "healthy");
    let v2_bad = f.commit("v2.0.0", "unhealthy");
    let v3_crash = f.commit("v3.0.0", "crash");
    let v4 = f.commit("v4.0.0", "healthy");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    assert_eq!(node.addr().port(), f.agent_port);
    // Live, and not ready: an empty node runs no app.
    assert_eq!(
        http_get(&f.agent_url("/healthz")),
        Some((200, "ok\n".to_owned()))
    );
    let (code, text) = http_get(&f.agent_url("/readyz")).expect("GET /readyz");
    assert_eq!(
        (code, text.as_str()),
        (503, "not ready: the app is not running\n")
    );

    // 1. First release on an empty node: fetched, installed, started, healthy, committed.
    let m1 = f.manifest(1, &v1);
    let (code, r) = post_apply(&f, &m1);
    assert_eq!(code, 200, "{r}");
    wait_until(
        Duration::from_secs(10),
        "ready once v1 runs healthy",
        || http_get(&f.agent_url("/readyz")) == Some((200, "ready\n".to_owned())),
    );
    assert_eq!(outcome(&r), "applied", "{r}");
    assert_eq!(r["success"], true);
    let slot1 = format!("1-{}", &v1.sha[..12]);
    assert_eq!(r["running"]["slot"], slot1.as_str());
    let (ver, slot, pid1) = f.app_version().expect("app answers");
    assert_eq!((ver.as_str(), slot.as_str()), ("v1.0.0", slot1.as_str()));
    assert_eq!(f.current_link().as_deref(), Some(slot1.as_str()));
    assert!(
        f.state()
            .join("slots")
            .join(&slot1)
            .join(".installed")
            .exists()
    );
    assert_eq!(f.floor(), 1);

    // 1b. The same manifest again (a caller that lost the answer): success, nothing done.
    let exits_before = status(&f)["app_exits"].clone();
    let (code, r) = post_apply(&f, &m1);
    assert_eq!((code, outcome(&r)), (200, "already_applied"), "{r}");
    assert_eq!(r["success"], true);
    assert_eq!(r["sequence"], 1);
    assert_eq!(r["running"]["version"], "v1.0.0", "{r}");
    assert_eq!(r["running"]["code_hash"], v1.code_hash.as_str(), "{r}");
    assert_eq!(
        f.app_version().unwrap().2,
        pid1,
        "the app was not restarted"
    );
    let s = status(&f);
    assert_eq!(s["app_exits"], exits_before, "{s}");
    assert_eq!(
        s["last_report"]["outcome"], "applied",
        "a repeat is not a new apply"
    );

    // 2. Same code hash under a higher sequence: no restart, floor raised.
    let (code, r) = post_apply(&f, &f.manifest(2, &v1));
    assert_eq!((code, outcome(&r)), (200, "noop"), "{r}");
    assert_eq!(
        f.app_version().unwrap().2,
        pid1,
        "the app was not restarted"
    );
    assert_eq!(f.floor(), 2);

    // 3. An older manifest this node never applied: refused by the floor, with what runs.
    let (code, r) = post_apply(&f, &f.manifest(1, &v4));
    assert_eq!((code, r["reason"].as_str()), (409, Some("replayed")), "{r}");
    assert_eq!(r["success"], false);
    assert_eq!(r["floor"], 2, "{r}");
    assert_eq!(r["running"]["version"], "v1.0.0", "{r}");
    // The first manifest is older than the floor now but still what runs: already applied.
    let (code, r) = post_apply(&f, &m1);
    assert_eq!((code, outcome(&r)), (200, "already_applied"), "{r}");
    assert_eq!(f.app_version().unwrap().2, pid1);

    // 4. A release whose app never becomes healthy: rolled back to v1.
    let t = Instant::now();
    let (code, r) = post_apply(&f, &f.manifest(3, &v2_bad));
    assert_eq!((code, outcome(&r)), (422, "rolled_back"), "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("no healthy answer"),
        "{r}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "waited for the grace window"
    );
    let (ver, slot, pid) = f.app_version().expect("old app runs again");
    assert_eq!((ver.as_str(), slot.as_str()), ("v1.0.0", slot1.as_str()));
    assert_ne!(pid, pid1, "the previous version was restarted");
    assert_eq!(f.current_link().as_deref(), Some(slot1.as_str()));
    assert!(
        !f.state()
            .join("slots")
            .join(format!("3-{}", &v2_bad.sha[..12]))
            .exists(),
        "the bad slot is removed"
    );
    assert_eq!(f.floor(), 2, "the floor is not raised by a failed release");
    let s = status(&f);
    assert_eq!(s["version"], "v1.0.0");
    assert_eq!(s["bad"][0]["sequence"], 3);

    // 5. The same bad release again: refused without touching anything.
    let (code, r) = post_apply(&f, &f.manifest(3, &v2_bad));
    assert_eq!((code, outcome(&r)), (409, "refused"), "{r}");

    // 6. A crash-looping release fails fast (before the grace window ends).
    let t = Instant::now();
    let (code, r) = post_apply(&f, &f.manifest(4, &v3_crash));
    assert_eq!((code, outcome(&r)), (422, "rolled_back"), "{r}");
    assert!(r["detail"].as_str().unwrap().contains("crash loop"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(f.app_version().unwrap().0, "v1.0.0");

    // 7. A good release after the failures; v1 becomes `previous`.
    let (code, r) = post_apply(&f, &f.manifest(5, &v4));
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    assert_eq!(f.app_version().unwrap().0, "v4.0.0");
    let s = status(&f);
    assert_eq!(s["previous"]["version"], "v1.0.0");
    assert_eq!(s["floor"], 5);

    // 8. A rollback order returns to v1 through the kept previous slot (no fetch).
    let (code, r) = post_apply(&f, &f.rollback(6, (5, &v4), &v1));
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    assert_eq!(r["kind"], "rollback");
    let (ver, slot, _) = f.app_version().unwrap();
    assert_eq!((ver.as_str(), slot.as_str()), ("v1.0.0", slot1.as_str()));
    assert_eq!(f.current_link().as_deref(), Some(slot1.as_str()));
    assert_eq!(f.floor(), 6);

    // 9. What `GET /metrics` counted on the way (Prometheus text format).
    let (code, text) = http_get(&f.agent_url("/metrics")).expect("GET /metrics");
    assert_eq!(code, 200, "{text}");
    let value = |sample: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    };
    for (sample, want) in [
        ("fleetgate_agent_applies_total{outcome=\"applied\"}", 3.0), // 1, 7, 8
        (
            "fleetgate_agent_applies_total{outcome=\"already_applied\"}",
            2.0,
        ), // 1b, 3
        ("fleetgate_agent_applies_total{outcome=\"noop\"}", 1.0),    // 2
        (
            "fleetgate_agent_applies_total{outcome=\"rolled_back\"}",
            2.0,
        ), // 4, 6
        ("fleetgate_agent_applies_total{outcome=\"refused\"}", 1.0), // 5
        (
            "fleetgate_agent_apply_refusals_total{reason=\"replayed\"}",
            1.0,
        ), // 3
        ("fleetgate_agent_floor_sequence", 6.0),
        ("fleetgate_agent_apply_in_progress", 0.0),
        ("fleetgate_agent_bad_releases", 2.0),
    ] {
        assert_eq!(value(sample), Some(want), "{sample} in:\n{text}");
    }
    let running = format!(
        "fleetgate_agent_running_info{{version=\"v1.0.0\",code_hash=\"{}\"}}",
        v1.code_hash
    );
    assert_eq!(value(&running), Some(1.0), "{running} in:\n{text}");
    assert!(
        text.contains("# TYPE fleetgate_agent_applies_total counter"),
        "{text}"
    );

    rt.block_on(node.shutdown()).unwrap();
    assert!(f.app_version().is_none(), "shutdown stops the app");
}

#[test]
fn forged_unsigned_tampered_expired_oversized_and_malformed_manifests_are_refused() {
    let f = Fixture::new(Opts::default());
    let v1 = f.commit("v1.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();

    let check = |bytes: &[u8], want_code: u16, want_reason: &str| {
        let (code, r) = post_apply(&f, bytes);
        assert_eq!(
            (code, r["reason"].as_str()),
            (want_code, Some(want_reason)),
            "{r}"
        );
        assert_eq!(r["success"], false);
        assert!(!r["error"].as_str().unwrap().is_empty());
    };
    // Signed by a key the node does not trust.
    let rogue = fleetgate_trust::SigningKey::from_seed(&[9; 32]);
    let forged = fleetgate_trust::sign_manifest(&f.manifest_struct(1, &v1), &[&rogue]).unwrap();
    check(&forged, 401, "unknown_key");
    // Tampered after signing.
    let good = f.manifest(1, &v1);
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("v1.0.0", "v6.6.6");
    check(tampered.as_bytes(), 401, "bad_signature");
    // Signature stripped.
    let mut obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&good).unwrap();
    obj.remove("master_signature");
    check(&serde_json::to_vec(&obj).unwrap(), 401, "unsigned");
    // Expired.
    let mut m = f.manifest_struct(1, &v1);
    m.expires_at = fleetgate_trust::unix_now() - 1;
    m.built_at = fleetgate_trust::rfc3339_seconds(fleetgate_trust::unix_now() - 100);
    let expired = fleetgate_trust::sign_manifest(&m, &[&f.signer]);
    // sign_manifest validates shape, not time: it signs an expired manifest.
    check(&expired.unwrap(), 422, "expired");
    // Oversized body: refused before it is read.
    check(&vec![b' '; 70 * 1024], 413, "too_large");
    // Not JSON.
    check(b"{not json", 400, "malformed");

    // Nothing was applied, nothing runs; the genuine manifest still applies.
    let s = status(&f);
    assert!(s["version"].is_null(), "{s}");
    assert!(f.app_version().is_none());
    let (code, r) = post_apply(&f, &good);
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    rt.block_on(node.shutdown()).unwrap();
}

#[test]
fn a_second_apply_while_one_runs_gets_503_busy_with_retry_after() {
    let f = Fixture::new(Opts::default());
    let v1 = f.commit("v1.0.0", "unhealthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let m1 = f.manifest(1, &v1);
    let slow = std::thread::scope(|s| {
        let h = s.spawn(|| post_apply(&f, &m1));
        wait_until(Duration::from_secs(10), "apply in flight", || {
            !status(&f)["apply_phase"].is_null()
        });
        let (code, head, body) =
            http_full("POST", &f.agent_url("/apply"), &f.manifest(2, &v2)).expect("answer");
        let r: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((code, r["reason"].as_str()), (503, Some("busy")), "{r}");
        assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");
        assert_eq!(
            (r["success"].as_bool(), r["retryable"].as_bool()),
            (Some(false), Some(true)),
            "{r}"
        );
        assert!(!r["phase"].as_str().unwrap_or_default().is_empty(), "{r}");
        assert!(r["error"].as_str().unwrap().contains("in progress"), "{r}");
        let (code, text) = http_get(&f.agent_url("/readyz")).expect("GET /readyz");
        assert_eq!(code, 503, "{text}");
        assert!(text.contains("an apply is in progress"), "{text}");
        h.join().unwrap()
    });
    // v1 was unhealthy on an empty node: nothing to go back to.
    assert_eq!(outcome(&slow.1), "rolled_back", "{}", slow.1);
    assert!(
        slow.1["detail"]
            .as_str()
            .unwrap()
            .contains("no previous version")
    );
    rt.block_on(node.shutdown()).unwrap();
}

#[test]
fn a_node_running_the_revoked_release_switches_back_and_the_order_is_idempotent() {
    let f = Fixture::new(Opts::default());
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    let m2 = f.manifest(2, &v2);
    let (code, r) = post_apply(&f, &m2);
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    assert_eq!(f.app_version().unwrap().0, "v2.0.0");

    // The order revokes seq 2 (the release this node runs) and returns to v1.
    let order = f.rollback(3, (2, &v2), &v1);
    let (code, r) = post_apply(&f, &order);
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    assert_eq!(r["kind"], "rollback");
    assert_eq!(r["running"]["code_hash"], v1.code_hash.as_str(), "{r}");
    let (ver, _, pid) = f.app_version().unwrap();
    assert_eq!(ver, "v1.0.0");
    assert_eq!(f.floor(), 3);

    // The same order again (its sender crashed before recording the answer).
    let (code, r) = post_apply(&f, &order);
    assert_eq!((code, outcome(&r)), (200, "already_applied"), "{r}");
    assert_eq!(r["running"]["version"], "v1.0.0", "{r}");
    assert_eq!(f.app_version().unwrap().2, pid, "not restarted");

    // The revoked release, although this node committed it once: refused.
    let (code, r) = post_apply(&f, &m2);
    assert_eq!((code, r["reason"].as_str()), (409, Some("replayed")), "{r}");
    assert_eq!(
        (r["floor"].as_u64(), r["running"]["version"].as_str()),
        (Some(3), Some("v1.0.0")),
        "{r}"
    );
    assert_eq!(
        f.app_version().unwrap(),
        ("v1.0.0".to_owned(), format!("1-{}", &v1.sha[..12]), pid)
    );
    rt.block_on(node.shutdown()).unwrap();
}

#[test]
fn an_order_naming_the_revoked_code_hash_switches_back_whatever_sequence_installed_it() {
    let f = Fixture::new(Opts::default());
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    for (seq, rel) in [(1, &v1), (2, &v2)] {
        let (code, r) = post_apply(&f, &f.manifest(seq, rel));
        assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    }
    // v2 re-signed under seq 3: a no-op that records seq 3 for what runs.
    let (code, r) = post_apply(&f, &f.manifest(3, &v2));
    assert_eq!((code, outcome(&r)), (200, "noop"), "{r}");
    // An order naming only seq 2 would not match; one naming v2's code hash does.
    let (code, r) = post_apply(&f, &f.rollback_naming(4, (2, &v2), &v1, true));
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    assert_eq!(f.app_version().unwrap().0, "v1.0.0");
    assert_eq!(f.floor(), 4);
    rt.block_on(node.shutdown()).unwrap();
}

/// Adds `rel` with `bytes` to the fixture repository's index (committed by the next
/// [`Fixture::commit`]).
fn stage_file(f: &Fixture, rel: &str, bytes: &[u8]) {
    let path = f.repo.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let r = git2::Repository::open(&f.repo).unwrap();
    let mut idx = r.index().unwrap();
    idx.add_path(std::path::Path::new(rel)).unwrap();
    idx.write().unwrap();
}

#[test]
fn a_co_signed_release_hashed_with_harts_scheme_is_verified_with_that_scheme_and_applied() {
    let f = Fixture::new(Opts::default());
    // Two of two keys must sign.
    let cosigner = fleetgate_trust::SigningKey::from_seed(&[7; 32]);
    let ring = fleetgate_trust::Keyring::new(
        1,
        2,
        vec![
            fleetgate_trust::TrustedKey::new(f.signer.public_key()),
            fleetgate_trust::TrustedKey::new(cosigner.public_key()),
        ],
    )
    .unwrap();
    std::fs::write(f.dir.path().join("keys/trust.json"), ring.to_bytes()).unwrap();
    stage_file(&f, "app/main.py", b"print('v1')\r\n");
    stage_file(&f, "app/tests/test_main.py", b"assert True\n");
    let v1 = f.commit("v1.0.0", "healthy");
    let scratch = f.dir.path().join("hash-scratch");
    let hart = fleetgate_runtime::codehash::hart_code_hash_at(&f.repo, &v1.sha, &scratch).unwrap();
    assert_eq!(hart.files.keys().collect::<Vec<_>>(), ["app/main.py"]);
    assert_ne!(hart.code_hash, v1.code_hash, "the schemes differ");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt
        .block_on(fleetgate_agent::RunningNode::start(f.config()))
        .unwrap();
    let mut m = f.manifest_struct(1, &v1);
    m.hash_scheme = fleetgate_trust::HashScheme::Hart;
    m.code_hash = hart.code_hash.clone();
    m.file_manifest_hash = hart.file_manifest_hash.clone();
    let signed = fleetgate_trust::sign_manifest_detached(&m, &[&f.signer, &cosigner]).unwrap();
    // The manifest alone carries one of the two signatures.
    let (code, r) = post_apply(&f, &signed.manifest);
    assert_eq!(
        (code, r["reason"].as_str()),
        (401, Some("below_threshold")),
        "{r}"
    );
    // A manifest claiming the git scheme for HART's hash does not install.
    let mut wrong = m.clone();
    wrong.hash_scheme = fleetgate_trust::HashScheme::Git;
    wrong.sequence = 9;
    let wrong = fleetgate_trust::sign_manifest(&wrong, &[&f.signer, &cosigner]).unwrap();
    let (code, r) = post_apply(&f, &wrong);
    assert_eq!((code, outcome(&r)), (422, "failed"), "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("code hash mismatch"),
        "{r}"
    );

    // With its co-signatures (a bundle, as the orchestrator sends it): applied, and the
    // node runs (and reports) HART's code hash.
    let bundle = signed.transport_bytes().unwrap();
    let (code, r) = post_apply(&f, &bundle);
    assert_eq!((code, outcome(&r)), (200, "applied"), "{r}");
    assert_eq!(r["running"]["code_hash"], hart.code_hash.as_str(), "{r}");
    assert_eq!(r["running"]["hash_scheme"], "hart", "{r}");
    assert_eq!(status(&f)["code_hash"], hart.code_hash.as_str());
    let (code, r) = post_apply(&f, &bundle);
    assert_eq!((code, outcome(&r)), (200, "already_applied"), "{r}");
    rt.block_on(node.shutdown()).unwrap();
}
