//! Manifest, keyring and document behaviour a user would notice: every
//! refusal comes with its own error and exit code.

use fleetgate_trust::{
    Floor, Keyring, KeyringError, MAX_MANIFEST_BYTES, Manifest, ManifestKind, RollbackOf,
    SignError, SigningKey, TrustedKey, VerifyError, VerifyOptions, add_manifest_signature,
    add_signature, dev_mode_manifest, parse_strict, rfc3339_seconds, sign_document, sign_manifest,
    sign_manifest_value, verify_document, verify_manifest, verify_with_pubkey,
};
use serde_json::{Map, Value, json};

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn ring(keys: &[&SigningKey], threshold: usize) -> Keyring {
    Keyring::new(
        1,
        threshold,
        keys.iter()
            .map(|k| TrustedKey::new(k.public_key()))
            .collect(),
    )
    .expect("valid keyring")
}

fn manifest(sequence: u64) -> Manifest {
    Manifest {
        version: "v1.2.3".into(),
        git_sha: "a".repeat(40),
        code_hash: "c".repeat(64),
        file_manifest_hash: "f".repeat(64),
        guardrail_hash: "9".repeat(64),
        built_at: rfc3339_seconds(NOW - 60),
        sequence,
        expires_at: NOW + 86_400,
        canary_seed: "0123abcd".into(),
        ..Manifest::default()
    }
}

fn verify(bytes: &[u8], ring: &Keyring) -> Result<fleetgate_trust::VerifiedManifest, VerifyError> {
    verify_manifest(bytes, ring, NOW, &VerifyOptions::default())
}

fn object(bytes: &[u8]) -> Map<String, Value> {
    match parse_strict(bytes).expect("json") {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn round_trip_single_key_has_exactly_one_signature_field() {
    let k = key(1);
    let signed = sign_manifest(&manifest(1), &[&k]).expect("sign");
    let obj = object(&signed);
    assert!(obj.contains_key("master_signature"));
    assert!(!obj.contains_key("signatures"));
    let v = verify(&signed, &ring(&[&k], 1)).expect("verifies");
    assert_eq!(v.key_ids, vec![k.key_id()]);
    assert_eq!(v.manifest.master_public_key, k.public_key_hex());
    assert_eq!(v.manifest.key_ids, vec![k.key_id()]);
    let mut expected = manifest(1);
    expected.master_public_key = k.public_key_hex();
    expected.key_ids = vec![k.key_id()];
    assert_eq!(v.manifest, expected);
    assert!(!v.legacy_hart);
    // The pinned-key path accepts it too.
    verify_with_pubkey(&signed, &k.public_key_hex(), NOW).expect("pubkey verify");
}

/// Flip every byte of the signed file in turn. Whenever the change alters
/// the parsed document, verification must fail; when it does not (e.g.
/// whitespace), it must still pass.
#[test]
fn tampering_any_byte_fails() {
    let k = key(1);
    let r = ring(&[&k], 1);
    let mut m = manifest(3);
    m.extra.insert("build_host".into(), json!("ci-runner-7"));
    let signed = sign_manifest(&m, &[&k]).expect("sign");
    let original = parse_strict(&signed).expect("json");
    let mut failures = 0;
    for i in 0..signed.len() {
        for flip in [0x01u8, 0x20] {
            let mut t = signed.clone();
            t[i] ^= flip;
            let same = parse_strict(&t).is_ok_and(|v| v == original);
            match verify(&t, &r) {
                Ok(_) => assert!(
                    same,
                    "byte {i} ^ {flip:#x} changed the document yet it verified"
                ),
                Err(e) => {
                    assert!(
                        !same,
                        "byte {i} ^ {flip:#x} did not change the document but failed: {e}"
                    );
                    failures += 1;
                }
            }
        }
    }
    assert!(failures > signed.len(), "most flips must fail ({failures})");

    // A changed signed field reports a bad signature, exit code 13.
    for (field, new) in [
        ("version", json!("v9.9.9")),
        ("code_hash", json!("d".repeat(64))),
        ("sequence", json!(4)),
        ("expires_at", json!(NOW + 999_999)),
        ("build_host", json!("evil")),
    ] {
        let mut obj = object(&signed);
        obj.insert(field.into(), new);
        let err = verify(&serde_json::to_vec(&obj).expect("ser"), &r).unwrap_err();
        assert!(
            matches!(err, VerifyError::BadSignature { .. }),
            "{field}: {err}"
        );
        assert_eq!(err.exit_code(), 13);
    }
    // Adding a field is tampering too.
    let mut obj = object(&signed);
    obj.insert("injected".into(), json!(true));
    assert!(matches!(
        verify(&serde_json::to_vec(&obj).expect("ser"), &r),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn unknown_fields_are_signed_and_preserved() {
    let k = key(1);
    let mut v = serde_json::to_value(manifest(2)).expect("value");
    v["gate_results"] = json!({"test": {"passed": 120, "failed": 0}, "note": "ünïcode"});
    let signed = sign_manifest_value(&v, &[&k]).expect("sign");
    let verified = verify(&signed, &ring(&[&k], 1)).expect("verify");
    assert_eq!(
        verified.manifest.extra["gate_results"]["test"]["passed"],
        json!(120)
    );
    assert_eq!(verified.value["gate_results"]["note"], json!("ünïcode"));
}

#[test]
fn unknown_key_is_refused_with_code_14() {
    let signer = key(9);
    let signed = sign_manifest(&manifest(1), &[&signer]).expect("sign");
    let err = verify(&signed, &ring(&[&key(1), &key(2)], 1)).unwrap_err();
    assert_eq!(
        err,
        VerifyError::UnknownKey {
            what: "manifest",
            key_id: signer.key_id()
        }
    );
    assert_eq!(err.exit_code(), 14);
    assert!(err.to_string().contains("not in the trust file"), "{err}");
}

#[test]
fn threshold_counts_each_distinct_key_once() {
    let (a, b, c) = (key(1), key(2), key(3));
    let r = ring(&[&a, &b, &c], 2);

    let one = sign_manifest(&manifest(1), &[&a]).expect("sign");
    let err = verify(&one, &r).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::BelowThreshold {
                valid: 1,
                threshold: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 15);

    // The same key's signature twice (once as master, once in the list).
    let mut obj = object(&one);
    let sig = obj["master_signature"].clone();
    obj.insert(
        "signatures".into(),
        json!([{"key_id": a.key_id(), "sig": sig}]),
    );
    let twice = serde_json::to_vec(&obj).expect("ser");
    let err = verify(&twice, &r).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::BelowThreshold {
                valid: 1,
                threshold: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not counted again"), "{err}");
    // ... and co-signing with a key that already signed is refused.
    assert!(matches!(
        add_manifest_signature(&one, None, &a),
        Err(SignError::AlreadySigned { .. })
    ));
    assert!(matches!(
        sign_manifest(&manifest(1), &[&a, &a]),
        Err(SignError::DuplicateSigner { .. })
    ));

    // A valid signature plus one by an untrusted key is still one.
    let mixed = sign_manifest(&manifest(1), &[&a, &key(7)]).expect("sign");
    assert!(matches!(
        verify(&mixed, &r),
        Err(VerifyError::BelowThreshold { valid: 1, .. })
    ));

    // Two distinct trusted keys: accepted, both at once or co-signed later.
    let both = sign_manifest(&manifest(1), &[&a, &c]).expect("sign");
    assert_eq!(
        verify(&both, &r).expect("2 of 3").key_ids,
        vec![a.key_id(), c.key_id()]
    );
    let cosigned = add_manifest_signature(&one, None, &b)
        .expect("cosign")
        .transport_bytes()
        .expect("bundle");
    assert_eq!(
        verify(&cosigned, &r).expect("2 of 3").key_ids,
        vec![a.key_id(), b.key_id()]
    );
}

#[test]
fn expired_manifest_is_refused_with_code_16() {
    let k = key(1);
    let mut m = manifest(1);
    m.expires_at = NOW;
    let signed = sign_manifest(&m, &[&k]).expect("sign");
    let err = verify(&signed, &ring(&[&k], 1)).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Expired {
            expires_at: NOW,
            now: NOW
        }
    );
    assert_eq!(err.exit_code(), 16);
    verify_manifest(&signed, &ring(&[&k], 1), NOW - 1, &VerifyOptions::default())
        .expect("valid a second earlier");
}

#[test]
fn clock_stepped_back_is_reported_and_cannot_revive_an_expired_manifest() {
    let k = key(1);
    let r = ring(&[&k], 1);
    let signed = sign_manifest(&manifest(1), &[&k]).expect("sign");
    // Clock is 100 s behind the last verification: reported, still valid.
    let opts = VerifyOptions {
        last_verified_at: Some(NOW + 100),
        ..VerifyOptions::default()
    };
    let v = verify_manifest(&signed, &r, NOW, &opts).expect("valid");
    assert_eq!(v.clock_stepped_back_by, Some(100));
    // Last verified after expiry; a clock set back before it does not help.
    let opts = VerifyOptions {
        last_verified_at: Some(NOW + 86_400 + 5),
        ..VerifyOptions::default()
    };
    assert!(matches!(
        verify_manifest(&signed, &r, NOW, &opts),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn built_in_the_future_or_key_outside_window_is_code_17() {
    let k = key(1);
    let mut m = manifest(1);
    m.built_at = rfc3339_seconds(NOW + 3600);
    let signed = sign_manifest(&m, &[&k]).expect("sign");
    let err = verify(&signed, &ring(&[&k], 1)).unwrap_err();
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err}");
    assert_eq!(err.exit_code(), 17);

    let signed = sign_manifest(&manifest(1), &[&k]).expect("sign");
    let mut tk = TrustedKey::new(k.public_key());
    tk.not_after = Some(NOW - 1);
    let expired_key = Keyring::new(1, 1, vec![tk.clone()]).expect("ring");
    let err = verify(&signed, &expired_key).unwrap_err();
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains(&k.key_id()), "{err}");
    tk.not_after = None;
    tk.not_before = Some(NOW + 1);
    let future_key = Keyring::new(1, 1, vec![tk]).expect("ring");
    assert!(matches!(
        verify(&signed, &future_key),
        Err(VerifyError::NotYetValid { .. })
    ));
}

#[test]
fn replayed_sequence_is_refused_by_the_floor_with_code_18() {
    let k = key(1);
    let r = ring(&[&k], 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut floor = Floor::open(dir.path()).expect("floor");

    let v5 = sign_manifest(&manifest(5), &[&k]).expect("sign");
    let ok = verify_manifest(&v5, &r, NOW, &floor.verify_options()).expect("first time");
    floor.commit(ok.manifest.sequence, NOW).expect("commit");

    let floor = Floor::open(dir.path()).expect("reopen");
    for seq in [5, 4, 1] {
        let old = sign_manifest(&manifest(seq), &[&k]).expect("sign");
        let err = verify_manifest(&old, &r, NOW, &floor.verify_options()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Replayed {
                sequence: seq,
                floor: 5
            }
        );
        assert_eq!(err.exit_code(), 18);
    }
    verify_manifest(
        &sign_manifest(&manifest(6), &[&k]).expect("sign"),
        &r,
        NOW,
        &floor.verify_options(),
    )
    .expect("newer release");

    // A rollback order: same trust, a new higher sequence, older version.
    let mut rb = manifest(6);
    rb.kind = ManifestKind::Rollback;
    rb.rollback_of = Some(RollbackOf {
        sequence: 5,
        version: "v1.2.3".into(),
        code_hash: None,
    });
    rb.return_to_version = Some("v1.2.2".into());
    rb.return_to_code_hash = Some("b".repeat(64));
    let signed = sign_manifest(&rb, &[&k]).expect("sign rollback");
    let v = verify_manifest(&signed, &r, NOW, &floor.verify_options()).expect("rollback accepted");
    assert_eq!(v.manifest.kind, ManifestKind::Rollback);
    // Without a revoked code hash the signed object has no such key (older signers'
    // bytes are unchanged); with one, it is signed and read back.
    assert!(
        v.value["rollback_of"].get("code_hash").is_none(),
        "{:?}",
        v.value
    );
    let mut rb_hash = rb.clone();
    if let Some(of) = &mut rb_hash.rollback_of {
        of.code_hash = Some("c".repeat(64));
    }
    let signed_hash = sign_manifest(&rb_hash, &[&k]).expect("sign rollback with code hash");
    let vh = verify_manifest(&signed_hash, &r, NOW, &floor.verify_options())
        .expect("rollback with code hash accepted");
    assert_eq!(
        vh.manifest.rollback_of.and_then(|o| o.code_hash),
        Some("c".repeat(64))
    );
    let tampered = String::from_utf8(signed_hash)
        .expect("utf-8")
        .replace(&"c".repeat(64), &"d".repeat(64));
    assert!(matches!(
        verify_manifest(tampered.as_bytes(), &r, NOW, &floor.verify_options()),
        Err(VerifyError::BadSignature { .. })
    ));
    // A replayed rollback (old sequence) is refused like any release.
    let mut old_rb = rb.clone();
    old_rb.sequence = 5;
    old_rb.rollback_of = Some(RollbackOf {
        sequence: 4,
        version: "v1.2.2".into(),
        code_hash: None,
    });
    let signed = sign_manifest(&old_rb, &[&k]).expect("sign");
    assert!(matches!(
        verify_manifest(&signed, &r, NOW, &floor.verify_options()),
        Err(VerifyError::Replayed { .. })
    ));
    // An unsigned "rollback" is refused as unsigned.
    let mut obj = object(&sign_manifest(&rb, &[&k]).expect("sign"));
    obj.remove("master_signature");
    assert!(matches!(
        verify_manifest(
            &serde_json::to_vec(&obj).expect("ser"),
            &r,
            NOW,
            &floor.verify_options()
        ),
        Err(VerifyError::Unsigned { .. })
    ));
}

#[test]
fn oversized_input_is_refused_before_parsing_with_code_10() {
    let k = key(1);
    let mut m = manifest(1);
    m.extra
        .insert("padding".into(), json!("x".repeat(MAX_MANIFEST_BYTES)));
    let signed = sign_manifest(&m, &[&k]).expect("sign");
    let err = verify(&signed, &ring(&[&k], 1)).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::TooLarge {
                limit: MAX_MANIFEST_BYTES,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 10);
    // Not even valid JSON: still "too large", proving it was never parsed.
    let garbage = vec![b'{'; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(
        verify(&garbage, &ring(&[&k], 1)),
        Err(VerifyError::TooLarge { .. })
    ));
    let exact = vec![b' '; MAX_MANIFEST_BYTES];
    assert!(matches!(
        verify(&exact, &ring(&[&k], 1)),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn malformed_inputs_are_code_11_and_unsigned_is_12() {
    let k = key(1);
    let r = ring(&[&k], 1);
    let signed = sign_manifest(&manifest(1), &[&k]).expect("sign");
    let text = String::from_utf8(signed.clone()).expect("utf8");
    let dup = text.replacen('{', "{\"version\": \"v0.0.1\",", 1);
    let float = {
        let mut o = object(&signed);
        o.insert("weight".into(), json!(0.5));
        serde_json::to_vec(&o).expect("ser")
    };
    let bad_sig = {
        let mut o = object(&signed);
        o.insert("master_signature".into(), json!("zz"));
        serde_json::to_vec(&o).expect("ser")
    };
    for (name, input) in [
        ("not json", b"not json".to_vec()),
        ("array", b"[1,2]".to_vec()),
        ("truncated", signed[..signed.len() / 2].to_vec()),
        ("duplicate key", dup.into_bytes()),
        ("float", float),
        ("signature not hex", bad_sig),
    ] {
        let err = verify(&input, &r).unwrap_err();
        assert!(
            matches!(err, VerifyError::Malformed { .. }),
            "{name}: {err}"
        );
        assert_eq!(err.exit_code(), 11, "{name}");
    }
    // Signed but missing a required field.
    let mut v = serde_json::to_value(manifest(1)).expect("value");
    v.as_object_mut().expect("obj").remove("expires_at");
    let doc = sign_document(&v, &[&k]).expect("sign doc");
    let err = verify(&doc, &r).unwrap_err();
    assert!(
        err.to_string().contains("\"expires_at\" is missing"),
        "{err}"
    );

    let mut o = object(&signed);
    o.remove("master_signature");
    let err = verify(&serde_json::to_vec(&o).expect("ser"), &r).unwrap_err();
    assert_eq!(err, VerifyError::Unsigned { what: "manifest" });
    assert_eq!(err.exit_code(), 12);
    o.insert("master_signature".into(), json!(""));
    assert!(matches!(
        verify(&serde_json::to_vec(&o).expect("ser"), &r),
        Err(VerifyError::Unsigned { .. })
    ));
}

#[test]
fn dev_mode_manifest_is_never_accepted_code_19() {
    let k = key(1);
    let dev = dev_mode_manifest(&manifest(1));
    let err = verify(&dev, &ring(&[&k], 1)).unwrap_err();
    assert_eq!(err, VerifyError::DevMode);
    assert_eq!(err.exit_code(), 19);
    assert!(matches!(
        verify_with_pubkey(&dev, &k.public_key_hex(), NOW),
        Err(VerifyError::DevMode)
    ));
    let mut v = serde_json::to_value(manifest(1)).expect("value");
    v["dev_mode"] = json!(false);
    assert!(matches!(
        sign_manifest_value(&v, &[&k]),
        Err(SignError::DevMode)
    ));
    // Even a validly signed document carrying the marker is refused.
    let signed = sign_document(&v, &[&k]).expect("generic sign");
    assert_eq!(
        verify(&signed, &ring(&[&k], 1)).unwrap_err(),
        VerifyError::DevMode
    );
}

#[test]
fn invalid_manifests_are_not_signed() {
    let k = key(1);
    for (what, m) in [
        ("sequence 0", manifest(0)),
        (
            "no expiry",
            Manifest {
                expires_at: 0,
                ..manifest(1)
            },
        ),
        (
            "bad built_at",
            Manifest {
                built_at: "yesterday".into(),
                ..manifest(1)
            },
        ),
        (
            "bad seed",
            Manifest {
                canary_seed: "xyz".into(),
                ..manifest(1)
            },
        ),
        (
            "rollback without target",
            Manifest {
                kind: ManifestKind::Rollback,
                ..manifest(2)
            },
        ),
        (
            "release with rollback fields",
            Manifest {
                return_to_version: Some("v1".into()),
                ..manifest(2)
            },
        ),
    ] {
        assert!(
            matches!(
                sign_manifest(&m, &[&k]),
                Err(SignError::InvalidManifest { .. })
            ),
            "{what}"
        );
    }
    assert!(matches!(
        sign_manifest(&manifest(1), &[]),
        Err(SignError::NoKeys)
    ));
}

#[test]
fn legacy_hart_manifest_needs_a_pinned_pubkey() {
    let k = key(1);
    let legacy = json!({
        "version": "v2.0", "git_sha": "abc", "code_hash": "c".repeat(64),
        "file_manifest_hash": "f", "guardrail_hash": "", "built_at": "2026-01-01T00:00:00Z",
        "master_public_key": k.public_key_hex(),
    });
    let signed = sign_document(&legacy, &[&k]).expect("sign");
    let v = verify_with_pubkey(&signed, &k.public_key_hex(), NOW).expect("HART mode");
    assert!(v.legacy_hart);
    let err = verify(&signed, &ring(&[&k], 1)).unwrap_err();
    assert!(err.to_string().contains("HART legacy manifest"), "{err}");
    // And it can never pass a floor.
    let opts = VerifyOptions {
        floor: Some(0),
        allow_legacy_hart: true,
        ..VerifyOptions::default()
    };
    assert!(matches!(
        verify_manifest(&signed, &ring(&[&k], 1), NOW, &opts),
        Err(VerifyError::Replayed { .. })
    ));
}

#[test]
fn generic_documents_sign_and_verify_like_manifests() {
    let (a, b) = (key(1), key(2));
    let r = ring(&[&a, &b], 2);
    let cert = json!({"kind": "node_enrollment", "node_id": "node-17", "node_public_key": "ab".repeat(32), "issued_at": NOW});
    let signed = sign_document(&cert, &[&a, &b]).expect("sign");
    let v = verify_document(&signed, &r, NOW).expect("verify");
    assert_eq!(v.payload(), *cert.as_object().expect("obj"));
    let tampered = String::from_utf8(signed)
        .expect("utf8")
        .replace("node-17", "node-18");
    assert!(matches!(
        verify_document(tampered.as_bytes(), &r, NOW),
        Err(VerifyError::BadSignature { .. })
    ));
    assert!(matches!(
        sign_document(&json!({"x": 1.5}), &[&a]),
        Err(SignError::Canonical(_))
    ));
    assert!(matches!(
        sign_document(&json!([1]), &[&a]),
        Err(SignError::NotAnObject { .. })
    ));
}

#[test]
fn trust_file_loading_rejects_bad_files() {
    let a = key(1);
    let good = ring(&[&a, &key(2)], 2);
    let round = Keyring::from_bytes(&good.to_bytes(), "t").expect("round trip");
    assert_eq!(round, good);
    let base = good.to_value();
    let cases: Vec<(&str, Value)> = vec![
        ("threshold 0", {
            let mut v = base.clone();
            v["threshold"] = json!(0);
            v
        }),
        ("threshold > keys", {
            let mut v = base.clone();
            v["threshold"] = json!(3);
            v
        }),
        ("typo field", {
            let mut v = base.clone();
            v["treshold"] = json!(1);
            v
        }),
        ("schema 2", {
            let mut v = base.clone();
            v["schema_version"] = json!(2);
            v
        }),
        ("wrong id", {
            let mut v = base.clone();
            v["keys"][0]["id"] = json!("0000000000000000");
            v
        }),
        ("duplicate key", {
            let mut v = base.clone();
            let first = v["keys"][0].clone();
            v["keys"].as_array_mut().expect("keys").push(first);
            v
        }),
        ("bad public key", {
            let mut v = base.clone();
            v["keys"][1]["public_key"] = json!("zz");
            v
        }),
        (
            "empty",
            json!({"schema_version": 1, "version": 1, "threshold": 1, "keys": []}),
        ),
    ];
    for (name, v) in cases {
        let err =
            Keyring::from_bytes(&serde_json::to_vec(&v).expect("ser"), "trust.json").unwrap_err();
        assert!(matches!(err, KeyringError::Invalid { .. }), "{name}: {err}");
        assert!(err.to_string().contains("trust.json"), "{name}: {err}");
    }
}

#[test]
fn rotation_needs_k_current_signatures_and_k_new_and_a_higher_version() {
    let (k1, k2, k3, k4) = (key(1), key(2), key(3), key(4));
    let current = ring(&[&k1, &k2, &k3], 2);
    let new = Keyring::new(
        2,
        2,
        [&k2, &k3, &k4]
            .iter()
            .map(|k| TrustedKey::new(k.public_key()))
            .collect(),
    )
    .expect("new ring");

    // Signed by k1 alone: not enough current keys.
    let only_k1 = new.sign(&[&k1]).expect("sign");
    assert!(matches!(
        current.rotate(&only_k1, NOW),
        Err(KeyringError::NotSignedByCurrent {
            source: VerifyError::BelowThreshold { valid: 1, .. },
            ..
        })
    ));
    // k1 + k2 (current threshold) but only k2 of the new keys.
    let k1k2 = add_signature(&only_k1, &k2).expect("cosign");
    assert!(matches!(
        current.rotate(&k1k2, NOW),
        Err(KeyringError::NotSignedByNew { .. })
    ));
    // The new key holder co-signs: accepted.
    let full = add_signature(&k1k2, &k4).expect("cosign");
    let rotated = current.rotate(&full, NOW).expect("rotation accepted");
    assert_eq!(rotated, new);
    // The rotated keyring now trusts k4 and no longer k1.
    let m = sign_manifest(&manifest(1), &[&k4, &k2]).expect("sign");
    verify(&m, &rotated).expect("new keys verify");
    let m = sign_manifest(&manifest(1), &[&k1, &k3]).expect("sign");
    assert!(verify(&m, &rotated).is_err(), "k1 was rotated out");
    // Replaying the same keyring (not a higher version) is refused.
    assert!(matches!(
        rotated.rotate(&full, NOW),
        Err(KeyringError::NotNewer { current: 2, new: 2 })
    ));
    // A tampered rotation is refused.
    let tampered = String::from_utf8(full)
        .expect("utf8")
        .replace("\"threshold\": 2", "\"threshold\": 1");
    assert!(matches!(
        current.rotate(tampered.as_bytes(), NOW),
        Err(KeyringError::NotSignedByCurrent {
            source: VerifyError::BelowThreshold { valid: 0, .. } | VerifyError::BadSignature { .. },
            ..
        })
    ));
}

#[test]
fn newer_schema_version_is_refused_clearly() {
    let k = key(1);
    let mut v = serde_json::to_value(manifest(1)).expect("value");
    v["schema_version"] = json!(2);
    v["master_public_key"] = json!(k.public_key_hex());
    let signed = sign_document(&v, &[&k]).expect("sign");
    let err = verify(&signed, &ring(&[&k], 1)).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("schema_version 2 is not supported"),
        "{err}"
    );
}

/// What HART's verifier does: strip `master_signature` only, canonicalise the rest,
/// check one Ed25519 signature under `master_public_key`.
fn hart_verifies(manifest: &[u8]) -> bool {
    let mut obj = object(manifest);
    let Some(Value::String(sig)) = obj.remove("master_signature") else {
        return false;
    };
    let Some(pk) = obj
        .get("master_public_key")
        .and_then(Value::as_str)
        .and_then(|h| fleetgate_trust::PublicKey::from_hex(h).ok())
    else {
        return false;
    };
    let message = fleetgate_trust::to_canonical_bytes(&Value::Object(obj)).expect("canonical");
    let mut raw = [0u8; 64];
    hex::decode_to_slice(&sig, &mut raw).is_ok() && pk.verify_strict(&message, &raw).is_ok()
}

#[test]
fn co_signatures_are_detached_so_the_manifest_keeps_one_signature() {
    let (a, b, c) = (key(1), key(2), key(3));
    let r = ring(&[&a, &b, &c], 2);
    // Signed by two keys at once: the manifest has master_signature only.
    let both = fleetgate_trust::sign_manifest_detached(&manifest(1), &[&a, &c]).expect("sign");
    assert!(!object(&both.manifest).contains_key("signatures"));
    assert!(hart_verifies(&both.manifest), "HART's verifier accepts it");
    let sigs = both.cosignatures.clone().expect("a co-signature file");
    let v = fleetgate_trust::verify_manifest_detached(
        &both.manifest,
        Some(&sigs),
        &r,
        NOW,
        &VerifyOptions::default(),
    )
    .expect("2 of 3 through the detached file");
    assert_eq!(v.key_ids, vec![a.key_id(), c.key_id()]);
    assert!(
        !v.value.contains_key("signatures"),
        "value is the HART manifest"
    );
    // Without the file it is one signature short.
    assert!(matches!(
        fleetgate_trust::verify_manifest_detached(
            &both.manifest,
            None,
            &r,
            NOW,
            &VerifyOptions::default()
        ),
        Err(VerifyError::BelowThreshold { valid: 1, .. })
    ));

    // Co-signed later, by a signer who only has the files.
    let one = sign_manifest(&manifest(1), &[&a]).expect("sign");
    let cosigned = add_manifest_signature(&one, None, &b).expect("cosign");
    assert_eq!(cosigned.manifest, one, "the manifest file is not touched");
    assert!(hart_verifies(&cosigned.manifest));
    let third = add_manifest_signature(&cosigned.manifest, cosigned.cosignatures.as_deref(), &c)
        .expect("third");
    assert_eq!(third.manifest, one);
    let v = fleetgate_trust::verify_manifest_detached(
        &third.manifest,
        third.cosignatures.as_deref(),
        &r,
        NOW,
        &VerifyOptions::default(),
    )
    .expect("3 of 3");
    assert_eq!(v.key_ids.len(), 3);
    assert!(matches!(
        add_manifest_signature(&one, cosigned.cosignatures.as_deref(), &b),
        Err(SignError::AlreadySigned { .. })
    ));
    // The generic document co-signer refuses a manifest (it would embed the signature).
    assert!(matches!(
        add_signature(&one, &b),
        Err(SignError::ManifestCosignature)
    ));

    // The bundle (what nodes are sent) verifies through the plain entry point.
    let bundle = cosigned.transport_bytes().expect("bundle");
    assert!(object(&bundle).contains_key("fleetgate_bundle"));
    assert_eq!(verify(&bundle, &r).expect("bundle").key_ids.len(), 2);
    assert!(matches!(
        add_signature(&bundle, &c),
        Err(SignError::ManifestCosignature)
    ));
    // A single-signature manifest is sent as itself.
    assert_eq!(fleetgate_trust::bundle(&one, None).expect("plain"), one);

    // A co-signature file of another manifest is refused, not ignored.
    let other = sign_manifest(&manifest(2), &[&a]).expect("sign");
    let err = fleetgate_trust::verify_manifest_detached(
        &other,
        cosigned.cosignatures.as_deref(),
        &r,
        NOW,
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 11, "{err}");
    assert!(err.to_string().contains("another manifest"), "{err}");
    // A tampered co-signature is a bad signature.
    let mut c_obj = object(cosigned.cosignatures.as_deref().expect("file"));
    let entry = &mut c_obj["signatures"][0]["sig"];
    let flipped: String = entry
        .as_str()
        .expect("sig")
        .chars()
        .rev()
        .collect::<String>();
    *entry = Value::String(flipped);
    let tampered = serde_json::to_vec(&c_obj).expect("ser");
    assert!(matches!(
        fleetgate_trust::verify_manifest_detached(
            &one,
            Some(&tampered),
            &r,
            NOW,
            &VerifyOptions::default()
        ),
        Err(VerifyError::BelowThreshold { valid: 1, .. } | VerifyError::BadSignature { .. })
    ));
}

#[test]
fn an_embedded_signatures_array_of_an_earlier_version_is_read_and_moved_out() {
    let (a, b, c) = (key(1), key(2), key(3));
    let r = ring(&[&a, &b, &c], 2);
    // The old form: the second signature inside the manifest.
    let one = sign_manifest(&manifest(1), &[&a]).expect("sign");
    let mut obj = object(&one);
    let message = fleetgate_trust::signed_bytes(&obj).expect("bytes");
    obj.insert(
        "signatures".into(),
        json!([{"key_id": b.key_id(), "sig": hex::encode(b.sign(&message))}]),
    );
    let old = serde_json::to_vec_pretty(&obj).expect("ser");
    assert!(!hart_verifies(&old), "the reason it changed");
    assert_eq!(verify(&old, &r).expect("still read").key_ids.len(), 2);
    // Co-signing it converts it: the manifest loses the array, the file gains both.
    let converted = add_manifest_signature(&old, None, &c).expect("cosign");
    assert!(!object(&converted.manifest).contains_key("signatures"));
    assert!(hart_verifies(&converted.manifest));
    let v = fleetgate_trust::verify_manifest_detached(
        &converted.manifest,
        converted.cosignatures.as_deref(),
        &r,
        NOW,
        &VerifyOptions::default(),
    )
    .expect("3 of 3");
    assert_eq!(v.key_ids.len(), 3);
}

#[test]
fn hash_scheme_is_written_only_when_hart_and_is_signed() {
    let k = key(1);
    let r = ring(&[&k], 1);
    let git = sign_manifest(&manifest(1), &[&k]).expect("sign");
    assert!(
        !object(&git).contains_key("hash_scheme"),
        "git manifests unchanged"
    );
    assert_eq!(
        verify(&git, &r).expect("git").manifest.hash_scheme,
        fleetgate_trust::HashScheme::Git
    );
    let mut m = manifest(1);
    m.hash_scheme = fleetgate_trust::HashScheme::Hart;
    let hart = sign_manifest(&m, &[&k]).expect("sign");
    assert_eq!(object(&hart)["hash_scheme"], "hart");
    assert!(hart_verifies(&hart));
    assert_eq!(
        verify(&hart, &r).expect("hart").manifest.hash_scheme,
        fleetgate_trust::HashScheme::Hart
    );
    // Changing the scheme breaks the signature; an unknown scheme is malformed.
    let text = String::from_utf8(hart).expect("utf8");
    let swapped = text.replace("\"hash_scheme\": \"hart\"", "\"hash_scheme\": \"git\"");
    assert_ne!(swapped, text);
    assert!(matches!(
        verify(swapped.as_bytes(), &r),
        Err(VerifyError::BadSignature { .. })
    ));
    let mut v: Value = serde_json::to_value(&m).expect("value");
    v["hash_scheme"] = json!("blake3");
    assert!(matches!(
        sign_manifest_value(&v, &[&k]),
        Err(SignError::InvalidManifest { .. })
    ));
}

/// `provenance_sha256` (issue 13): signed like every field, verified by the keyring and
/// the pinned-key (HART) paths, left out when absent (older manifests keep their bytes),
/// validated when present, and a reader that does not know it keeps it as an unknown
/// field without breaking the signature.
#[test]
fn provenance_sha256_is_signed_optional_and_validated() {
    let k = key(1);
    let digest = "ab".repeat(32);
    let mut m = manifest(1);
    m.provenance_sha256 = Some(digest.clone());
    let signed = sign_manifest(&m, &[&k]).expect("sign");
    let v = verify(&signed, &ring(&[&k], 1)).expect("verifies");
    assert_eq!(
        v.manifest.provenance_sha256.as_deref(),
        Some(digest.as_str())
    );
    verify_with_pubkey(&signed, &k.public_key_hex(), NOW).expect("pinned key");

    // Covered by the signature: changed or removed, the manifest is refused.
    let mut obj = object(&signed);
    obj.insert("provenance_sha256".into(), json!("cd".repeat(32)));
    let changed = serde_json::to_vec(&obj).unwrap();
    assert!(matches!(
        verify(&changed, &ring(&[&k], 1)),
        Err(VerifyError::BadSignature { .. })
    ));
    obj.remove("provenance_sha256");
    let removed = serde_json::to_vec(&obj).unwrap();
    assert!(matches!(
        verify(&removed, &ring(&[&k], 1)),
        Err(VerifyError::BadSignature { .. })
    ));

    // Absent: not written at all.
    let plain = sign_manifest(&manifest(1), &[&k]).expect("sign");
    assert!(!object(&plain).contains_key("provenance_sha256"));

    // A reader without the field (an older agent: unknown fields kept as received) sees
    // it as an extra field and the signature still holds, because verification works on
    // the received bytes.
    #[derive(serde::Deserialize)]
    struct OlderReader {
        version: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    }
    let older: OlderReader = serde_json::from_slice(&signed).unwrap();
    assert_eq!(older.version, "v1.2.3");
    assert_eq!(older.extra["provenance_sha256"], json!(digest));

    // Present but not a SHA-256: refused at signing.
    let mut bad = manifest(1);
    bad.provenance_sha256 = Some("XYZ".into());
    assert!(matches!(
        sign_manifest(&bad, &[&k]),
        Err(SignError::InvalidManifest { .. })
    ));
}

#[test]
fn artifacts_are_signed_left_out_when_empty_and_checked_for_names_and_digests() {
    let k = key(1);
    let r = ring(&[&k], 1);
    // No artifacts: the field is absent, so source releases keep their exact bytes.
    let plain = sign_manifest(&manifest(1), &[&k]).expect("sign");
    assert!(!object(&plain).contains_key("artifacts"));
    let art = |name: &str, sha: &str| fleetgate_trust::Artifact {
        name: name.into(),
        sha256: sha.into(),
        size: 10,
    };
    let mut m = manifest(2);
    m.artifacts = vec![
        art("bin/app", &"a".repeat(64)),
        art("dist/app.tar.gz", &"b".repeat(64)),
    ];
    let signed = sign_manifest(&m, &[&k]).expect("sign");
    let v = verify(&signed, &r).expect("verifies");
    assert_eq!(v.manifest.artifacts, m.artifacts);
    // Tampering with a digest breaks the signature.
    let tampered =
        String::from_utf8(signed.clone())
            .unwrap()
            .replacen(&"a".repeat(64), &"e".repeat(64), 1);
    assert!(verify(tampered.as_bytes(), &r).is_err());
    // Bad names and digests are refused at signing, naming the artifact.
    for (bad, why) in [
        (art("../etc/passwd", &"a".repeat(64)), "not a relative path"),
        (art("/abs", &"a".repeat(64)), "not a relative path"),
        (art("a//b", &"a".repeat(64)), "not a relative path"),
        (art("app", "ABC"), "not 64 lowercase hex"),
        (
            art(fleetgate_trust::RESERVED_ARTIFACT_NAME, &"a".repeat(64)),
            "is reserved",
        ),
    ] {
        let mut m = manifest(3);
        m.artifacts = vec![bad];
        let e = sign_manifest(&m, &[&k]).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let mut m = manifest(3);
    m.artifacts = vec![art("app", &"a".repeat(64)), art("app", &"b".repeat(64))];
    let e = sign_manifest(&m, &[&k]).unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn an_agent_update_lists_exactly_its_binary_and_names_it_by_digest() {
    let k = key(1);
    let r = ring(&[&k], 1);
    let bin = fleetgate_trust::Artifact {
        name: "fleetgate-agent".into(),
        sha256: "d".repeat(64),
        size: 10,
    };
    let agent = |artifacts: Vec<fleetgate_trust::Artifact>, code_hash: &str| {
        let mut m = manifest(5);
        m.kind = fleetgate_trust::ManifestKind::Agent;
        m.code_hash = code_hash.into();
        m.artifacts = artifacts;
        m
    };
    let signed = sign_manifest(&agent(vec![bin.clone()], &"d".repeat(64)), &[&k]).expect("sign");
    let v = verify(&signed, &r).expect("verifies");
    assert_eq!(v.manifest.kind.as_str(), "agent");
    for (m, why) in [
        (agent(Vec::new(), &"d".repeat(64)), "exactly one artifact"),
        (
            agent(
                vec![
                    bin.clone(),
                    fleetgate_trust::Artifact {
                        name: "other".into(),
                        ..bin.clone()
                    },
                ],
                &"d".repeat(64),
            ),
            "exactly one artifact",
        ),
        (
            agent(vec![bin.clone()], &"e".repeat(64)),
            "its binary's SHA-256",
        ),
    ] {
        let e = sign_manifest(&m, &[&k]).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
}
