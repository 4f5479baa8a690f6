//! Every Wycheproof Ed25519 vector (`tests/data/wycheproof-ed25519_test.json`,
//! copied from the shared vectors) through the crate's strict verify path,
//! [`PublicKey::verify_strict`] — the same call manifest, keyring and
//! document verification make — and through [`verify_strict_batch`] (the
//! heartbeat endpoint's path), each vector among valid and forged signatures,
//! which must give every entry `verify_strict`'s answer.

use fleetgate_trust::{BatchEntry, PublicKey, SigningKey, verify_strict_batch};
use proptest::prelude::*;
use serde_json::Value;

/// Vectors whose result deliberately differs from Wycheproof's expectation,
/// by tcId, with the reason. Empty: `verify_strict` agrees on every vector.
const KNOWN_DEVIATIONS: &[(u64, &str)] = &[];

#[derive(Debug, PartialEq)]
enum Outcome {
    Valid,
    Invalid,
}

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof-ed25519_test.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("vector file")).expect("json")
}

/// One vector: key (None when it does not decode), message, signature (None when not
/// 64 bytes), Wycheproof's expected result and comment.
struct Vector {
    id: u64,
    key: Option<PublicKey>,
    msg: Vec<u8>,
    sig: Option<[u8; 64]>,
    expected: Outcome,
    comment: String,
}

fn all_vectors() -> Vec<Vector> {
    let data = vectors();
    let mut out = Vec::new();
    for group in data["testGroups"].as_array().expect("testGroups") {
        let pk_hex = group["publicKey"]["pk"].as_str().expect("pk");
        let key = <[u8; 32]>::try_from(hex::decode(pk_hex).expect("pk hex").as_slice())
            .ok()
            .and_then(|b| PublicKey::from_bytes(&b).ok());
        for t in group["tests"].as_array().expect("tests") {
            let sig = hex::decode(t["sig"].as_str().expect("sig")).expect("sig hex");
            let id = t["tcId"].as_u64().expect("tcId");
            let expected = match t["result"].as_str().expect("result") {
                "valid" => Outcome::Valid,
                "invalid" => Outcome::Invalid,
                other => {
                    panic!("tcId {id}: unexpected result {other:?} (no 'acceptable' in this file)")
                }
            };
            out.push(Vector {
                id,
                expected,
                comment: t["comment"].to_string(),
                key,
                msg: hex::decode(t["msg"].as_str().expect("msg")).expect("msg hex"),
                sig: <[u8; 64]>::try_from(sig.as_slice()).ok(),
            });
        }
    }
    out
}

/// `count` valid signatures by fresh keys, over distinct messages.
fn valid_entries(count: usize, tag: u8) -> Vec<(PublicKey, Vec<u8>, [u8; 64])> {
    (0..count)
        .map(|i| {
            let mut seed = [tag; 32];
            seed[0] = u8::try_from(i % 256).expect("small");
            let key = SigningKey::from_seed(&seed);
            let msg = format!("heartbeat {tag} {i}").into_bytes();
            let sig = key.sign(&msg);
            (key.public_key(), msg, sig)
        })
        .collect()
}

fn strict_answers(entries: &[(PublicKey, Vec<u8>, [u8; 64])]) -> Vec<bool> {
    entries
        .iter()
        .map(|(k, m, s)| k.verify_strict(m, s).is_ok())
        .collect()
}

fn batch_answers(entries: &[(PublicKey, Vec<u8>, [u8; 64])]) -> Vec<bool> {
    let batch: Vec<BatchEntry<'_>> = entries
        .iter()
        .map(|(key, message, signature)| BatchEntry {
            key,
            message,
            signature,
        })
        .collect();
    verify_strict_batch(&batch)
}

/// Every vector with a decodable key and a 64-byte signature, in the middle of a batch
/// of valid signatures (so the batch equation, not the one-by-one fallback, answers
/// first), and all of them in one batch: each entry gets `verify_strict`'s answer.
#[test]
fn every_wycheproof_vector_gets_the_strict_answer_in_a_batch() {
    let checkable: Vec<(PublicKey, Vec<u8>, [u8; 64], u64)> = all_vectors()
        .into_iter()
        .filter_map(|v| Some((v.key?, v.msg, v.sig?, v.id)))
        .collect();
    assert!(checkable.len() > 100, "the vectors were read");
    let mut disagreements = Vec::new();
    for (key, msg, sig, id) in &checkable {
        let mut batch = valid_entries(7, 1);
        batch.insert(3, (*key, msg.clone(), *sig));
        let (strict, batched) = (strict_answers(&batch), batch_answers(&batch));
        if strict != batched {
            disagreements.push((*id, strict[3], batched[3]));
        }
    }
    let mut together: Vec<(PublicKey, Vec<u8>, [u8; 64])> = checkable
        .iter()
        .map(|(k, m, s, _)| (*k, m.clone(), *s))
        .collect();
    together.extend(valid_entries(64, 2));
    let (strict, batched) = (strict_answers(&together), batch_answers(&together));
    for (i, (s, b)) in strict.iter().zip(&batched).enumerate() {
        if s != b {
            let id = checkable.get(i).map_or(u64::MAX, |c| c.3);
            disagreements.push((id, *s, *b));
        }
    }
    assert!(
        disagreements.is_empty(),
        "(tcId, strict, batch) that disagree: {disagreements:?}"
    );
    assert!(
        strict.iter().filter(|ok| !**ok).count() > 50,
        "invalid vectors were in the batch"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random batches with some entries forged (a flipped bit in the signature or the
    /// message, or another entry's key): each entry gets `verify_strict`'s answer, so
    /// a forgery never rides on a batch of valid signatures.
    #[test]
    fn a_batch_answers_each_entry_as_strict_does(
        len in 1usize..80,
        forged in proptest::collection::vec((0usize..80, 0u8..3, 0usize..512), 0..6),
        tag in 3u8..250,
    ) {
        let mut batch = valid_entries(len, tag);
        for (at, how, bit) in forged {
            let at = at % len;
            match how {
                0 => batch[at].2[bit % 64] ^= 1 << (bit % 8),
                1 => {
                    let m = &mut batch[at].1;
                    let i = bit % m.len();
                    m[i] ^= 1 << (bit % 8);
                }
                _ => batch[at].0 = batch[(at + 1) % len].0,
            }
        }
        prop_assert_eq!(batch_answers(&batch), strict_answers(&batch));
    }
}

#[test]
fn every_wycheproof_vector_gives_its_expected_result() {
    let all = all_vectors();
    let total = all.len() as u64;
    let mut valid = 0u64;
    let mut deviations = Vec::new();
    for v in &all {
        let got = match (&v.key, &v.sig) {
            (Some(pk), Some(sig)) if pk.verify_strict(&v.msg, sig).is_ok() => Outcome::Valid,
            _ => Outcome::Invalid,
        };
        if got == Outcome::Valid {
            valid += 1;
        }
        if got != v.expected {
            deviations.push((
                v.id,
                format!("expected {:?}, got {got:?} ({})", v.expected, v.comment),
            ));
        }
    }
    assert_eq!(
        total,
        vectors()["numberOfTests"].as_u64().expect("numberOfTests"),
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
