//! Every Wycheproof Ed25519 vector (`tests/data/wycheproof-ed25519_test.json`,
//! copied from the shared vectors) through the crate's strict verify path,
//! [`PublicKey::verify_strict`] — the same call manifest, keyring and
//! document verification make.

use fleetgate_trust::PublicKey;
use serde_json::Value;

/// Vectors whose result deliberately differs from Wycheproof's expectation,
/// by tcId, with the reason. Empty: `verify_strict` agrees on every vector.
const KNOWN_DEVIATIONS: &[(u64, &str)] = &[];

#[derive(Debug, PartialEq)]
enum Outcome {
    Valid,
    Invalid,
}

#[test]
fn every_wycheproof_vector_gives_its_expected_result() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof-ed25519_test.json"
    );
    let data: Value =
        serde_json::from_slice(&std::fs::read(path).expect("vector file")).expect("json");
    let mut total = 0u64;
    let mut valid = 0u64;
    let mut deviations = Vec::new();
    for group in data["testGroups"].as_array().expect("testGroups") {
        let pk_hex = group["publicKey"]["pk"].as_str().expect("pk");
        let pk = <[u8; 32]>::try_from(hex::decode(pk_hex).expect("pk hex").as_slice())
            .ok()
            .and_then(|b| PublicKey::from_bytes(&b).ok());
        for t in group["tests"].as_array().expect("tests") {
            total += 1;
            let id = t["tcId"].as_u64().expect("tcId");
            let msg = hex::decode(t["msg"].as_str().expect("msg")).expect("msg hex");
            let sig = hex::decode(t["sig"].as_str().expect("sig")).expect("sig hex");
            let expected = match t["result"].as_str().expect("result") {
                "valid" => Outcome::Valid,
                "invalid" => Outcome::Invalid,
                other => {
                    panic!("tcId {id}: unexpected result {other:?} (no 'acceptable' in this file)")
                }
            };
            let got = match (&pk, <[u8; 64]>::try_from(sig.as_slice())) {
                (Some(pk), Ok(sig)) if pk.verify_strict(&msg, &sig).is_ok() => Outcome::Valid,
                _ => Outcome::Invalid,
            };
            if got == Outcome::Valid {
                valid += 1;
            }
            if got != expected {
                deviations.push((
                    id,
                    format!("expected {expected:?}, got {got:?} ({})", t["comment"]),
                ));
            }
        }
    }
    assert_eq!(
        total,
        data["numberOfTests"].as_u64().expect("numberOfTests"),
        "all vectors ran"
    );
    let ids: Vec<u64> = deviations.iter().map(|d| d.0).collect();
    let known: Vec<u64> = KNOWN_DEVIATIONS.iter().map(|d| d.0).collect();
    assert_eq!(ids, known, "deviations from Wycheproof: {deviations:#?}");
    eprintln!(
        "wycheproof: {total} vectors, {valid} valid, {} invalid, {} known deviations",
        total - valid,
        known.len()
    );
}
