//! The generic signed-document primitive: manifests, keyrings (rotation) and
//! node enrollment certificates all use it.
//!
//! A signed document is a JSON object. Its signatures live in two fields,
//! both excluded from the signed bytes:
//!
//! - `master_signature`: hex Ed25519 signature (HART's field; a document
//!   signed by one key has exactly this one signature field, so HART's
//!   verifier — which strips only `master_signature` — accepts it);
//! - `signatures`: `[{"key_id": "…", "sig": "…"}]`, the extra signatures of a
//!   k-of-n threshold — for trust files and certificates. A release manifest
//!   never carries it (its co-signatures are detached, see [`crate::cosign`]);
//!   manifests of earlier versions that did are still read.
//!
//! **Signed bytes** = [`to_canonical_bytes`] of the object without those two
//! fields. The verifier parses the *received* bytes once ([`parse_strict`]),
//! removes the two fields and canonicalises what is left, so every field
//! the signer put there — including ones this version does not know — is
//! covered, and nothing is re-serialised from a typed struct.

use crate::canonical::{CanonicalError, ParseError, parse_strict, to_canonical_bytes};
use crate::error::VerifyError;
use crate::keyring::Keyring;
use crate::keys::{PublicKey, SigningKey};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// HART's signature field.
pub const MASTER_SIGNATURE_FIELD: &str = "master_signature";
/// Extra k-of-n signatures: `[{"key_id", "sig"}]`.
pub const SIGNATURES_FIELD: &str = "signatures";
/// Fields removed before computing the signed bytes.
pub const SIGNATURE_FIELDS: [&str; 2] = [MASTER_SIGNATURE_FIELD, SIGNATURES_FIELD];
/// Largest signed document [`verify_document`] reads (checked before parsing).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most signatures one document may carry (bounds verification work).
pub const MAX_SIGNATURES: usize = 32;

/// Why a document could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No signing key given.
    #[error("sign document: no signing key given")]
    NoKeys,
    /// The same key was given twice.
    #[error("sign document: key {key_id} was given more than once")]
    DuplicateSigner {
        /// The repeated key.
        key_id: String,
    },
    /// The key already signed this document.
    #[error("sign document: key {key_id} has already signed it")]
    AlreadySigned {
        /// The key.
        key_id: String,
    },
    /// Only JSON objects can be signed.
    #[error("sign document: it is a JSON {found}, not an object")]
    NotAnObject {
        /// What it is.
        found: &'static str,
    },
    /// The content has no canonical form (a float, too deep).
    #[error("sign document: {0}")]
    Canonical(#[from] CanonicalError),
    /// An existing signed document could not be parsed.
    #[error("sign document: {0}")]
    Parse(#[from] ParseError),
    /// The manifest fails validation.
    #[error("sign manifest: {reason}")]
    InvalidManifest {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A manifest's further signatures go in its detached co-signature file.
    #[error(
        "sign document: it is a release manifest; its co-signatures go in the detached file \
         MANIFEST.sigs (use add_manifest_signature, or `fleetgate trust sign MANIFEST`)"
    )]
    ManifestCosignature,
    /// Refusing to sign a dev-mode manifest.
    #[error("sign manifest: it carries the dev_mode marker; dev-mode manifests are never signed")]
    DevMode,
}

/// A document whose signatures met the keyring's threshold.
#[derive(Debug, Clone)]
pub struct VerifiedDocument {
    /// The whole received object, signatures and unknown fields included.
    pub value: Map<String, Value>,
    /// The exact bytes the signatures cover.
    pub signed_bytes: Vec<u8>,
    /// Ids of the distinct trusted keys whose signatures verified (at least
    /// the threshold), in the order they were found.
    pub key_ids: Vec<String>,
}

impl VerifiedDocument {
    /// The object without its signature fields (what was signed).
    #[must_use]
    pub fn payload(&self) -> Map<String, Value> {
        strip_signatures(&self.value)
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The object minus [`SIGNATURE_FIELDS`].
#[must_use]
pub fn strip_signatures(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.iter()
        .filter(|(k, _)| !SIGNATURE_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The bytes a signature over `obj` covers: canonical JSON of `obj` minus
/// [`SIGNATURE_FIELDS`].
///
/// # Errors
/// When the content has no canonical form (floats, too deep).
pub fn signed_bytes(obj: &Map<String, Value>) -> Result<Vec<u8>, CanonicalError> {
    to_canonical_bytes(&Value::Object(strip_signatures(obj)))
}

/// Renders a signed object for writing: payload keys sorted, then
/// `master_signature`, then `signatures`; pretty-printed, trailing newline.
pub(crate) fn render(obj: &Map<String, Value>) -> Vec<u8> {
    let mut keys: Vec<&String> = obj
        .keys()
        .filter(|k| !SIGNATURE_FIELDS.contains(&k.as_str()))
        .collect();
    keys.sort();
    let mut out = Map::new();
    for k in keys {
        out.insert(k.clone(), obj[k].clone());
    }
    for f in SIGNATURE_FIELDS {
        if let Some(v) = obj.get(f) {
            out.insert(f.to_owned(), v.clone());
        }
    }
    // A Map of plain values always serialises.
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(out)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Signs `value` (a JSON object) with every key and returns the bytes to
/// write: the first key's signature goes in `master_signature`, the others
/// in `signatures`. Signature fields already in `value` are replaced.
///
/// # Errors
/// [`SignError::NoKeys`], [`SignError::DuplicateSigner`],
/// [`SignError::NotAnObject`], [`SignError::Canonical`].
pub fn sign_document(value: &Value, keys: &[&SigningKey]) -> Result<Vec<u8>, SignError> {
    let obj = value.as_object().ok_or(SignError::NotAnObject {
        found: json_kind(value),
    })?;
    Ok(render(&sign_object(obj, keys)?))
}

/// Refuses an empty key list and a key given twice.
pub(crate) fn check_signers(keys: &[&SigningKey]) -> Result<(), SignError> {
    if keys.is_empty() {
        return Err(SignError::NoKeys);
    }
    let mut seen = BTreeSet::new();
    for k in keys {
        if !seen.insert(k.public_key().to_bytes()) {
            return Err(SignError::DuplicateSigner { key_id: k.key_id() });
        }
    }
    Ok(())
}

pub(crate) fn sign_object(
    obj: &Map<String, Value>,
    keys: &[&SigningKey],
) -> Result<Map<String, Value>, SignError> {
    check_signers(keys)?;
    let (first, rest) = keys.split_first().ok_or(SignError::NoKeys)?;
    let mut out = strip_signatures(obj);
    let message = to_canonical_bytes(&Value::Object(out.clone()))?;
    out.insert(
        MASTER_SIGNATURE_FIELD.to_owned(),
        Value::String(hex::encode(first.sign(&message))),
    );
    if !rest.is_empty() {
        let sigs = rest.iter().map(|k| signature_entry(k, &message)).collect();
        out.insert(SIGNATURES_FIELD.to_owned(), Value::Array(sigs));
    }
    Ok(out)
}

pub(crate) fn signature_entry(key: &SigningKey, message: &[u8]) -> Value {
    let mut entry = Map::new();
    entry.insert("key_id".to_owned(), Value::String(key.key_id()));
    entry.insert(
        "sig".to_owned(),
        Value::String(hex::encode(key.sign(message))),
    );
    Value::Object(entry)
}

/// Adds one more signature to an already signed (or unsigned) document —
/// how k-of-n signers who do not share a machine co-sign a trust file or a
/// certificate. The signed content is untouched; an unsigned document gets
/// `master_signature`, otherwise a `signatures` entry is appended. Release
/// manifests are refused ([`SignError::ManifestCosignature`]): their
/// co-signatures are detached ([`crate::add_manifest_signature`]).
///
/// # Errors
/// Parse errors, [`SignError::AlreadySigned`] when this key's signature is
/// already there, [`SignError::Canonical`].
pub fn add_signature(signed: &[u8], key: &SigningKey) -> Result<Vec<u8>, SignError> {
    let value = parse_strict(signed)?;
    let Value::Object(mut obj) = value else {
        return Err(SignError::NotAnObject {
            found: json_kind(&value),
        });
    };
    if crate::cosign::is_manifest_object(&obj) || obj.contains_key(crate::cosign::BUNDLE_FIELD) {
        return Err(SignError::ManifestCosignature);
    }
    let message = signed_bytes(&obj)?;
    let pk = key.public_key();
    let id = key.key_id();
    let already = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(decode_sig)
            .is_some_and(|s| pk.verify_strict(&message, &s).is_ok())
    };
    let master_present = obj
        .get(MASTER_SIGNATURE_FIELD)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let in_list = obj
        .get(SIGNATURES_FIELD)
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().any(|e| {
                e.get("key_id").and_then(Value::as_str) == Some(id.as_str())
                    || already(e.get("sig"))
            })
        });
    if already(obj.get(MASTER_SIGNATURE_FIELD)) || in_list {
        return Err(SignError::AlreadySigned { key_id: id });
    }
    if master_present {
        let entry = signature_entry(key, &message);
        match obj.get_mut(SIGNATURES_FIELD) {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                obj.insert(SIGNATURES_FIELD.to_owned(), Value::Array(vec![entry]));
            }
        }
    } else {
        obj.insert(
            MASTER_SIGNATURE_FIELD.to_owned(),
            Value::String(hex::encode(key.sign(&message))),
        );
    }
    Ok(render(&obj))
}

/// Whether `sig_hex` is `pk`'s valid signature of `message`.
pub(crate) fn verify_sig_by(pk: &PublicKey, message: &[u8], sig_hex: &str) -> bool {
    decode_sig(sig_hex).is_some_and(|s| pk.verify_strict(message, &s).is_ok())
}

/// Lowercase hex only, so one signature has exactly one encoding.
fn decode_sig(text: &str) -> Option<[u8; 64]> {
    let mut sig = [0u8; 64];
    let lower = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lower && text.len() == 128 && hex::decode_to_slice(text, &mut sig).is_ok()).then_some(sig)
}

/// Verifies a signed document read from a file or a peer: size limit
/// ([`MAX_DOCUMENT_BYTES`]) before parsing, strict parse, signatures against
/// `keyring` at time `now` (unix seconds).
///
/// # Errors
/// Any [`VerifyError`] except the manifest-only ones (`Expired`,
/// `Replayed`, `DevMode`).
pub fn verify_document(
    bytes: &[u8],
    keyring: &Keyring,
    now: u64,
) -> Result<VerifiedDocument, VerifyError> {
    let obj = parse_limited(bytes, MAX_DOCUMENT_BYTES, "document")?;
    verify_object(obj, keyring, now, "document")
}

/// [`verify_document`] for an object already parsed (e.g. embedded in a
/// gossip message that was itself size-limited and parsed with
/// [`parse_strict`]).
///
/// # Errors
/// As [`verify_document`].
pub fn verify_document_value(
    value: Value,
    keyring: &Keyring,
    now: u64,
) -> Result<VerifiedDocument, VerifyError> {
    match value {
        Value::Object(obj) => verify_object(obj, keyring, now, "document"),
        other => Err(VerifyError::Malformed {
            what: "document",
            reason: format!("it is a JSON {}, not an object", json_kind(&other)),
        }),
    }
}

pub(crate) fn parse_limited(
    bytes: &[u8],
    limit: usize,
    what: &'static str,
) -> Result<Map<String, Value>, VerifyError> {
    if bytes.len() > limit {
        return Err(VerifyError::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    match parse_strict(bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(VerifyError::Malformed {
            what,
            reason: format!("it is a JSON {}, not an object", json_kind(&other)),
        }),
        Err(e) => Err(VerifyError::Malformed {
            what,
            reason: e.to_string(),
        }),
    }
}

enum Claim {
    /// `master_signature`: signer not named; any trusted key may match.
    Master([u8; 64]),
    /// A `signatures` entry naming its key.
    Named(String, [u8; 64]),
}

fn collect_claims(obj: &Map<String, Value>, what: &'static str) -> Result<Vec<Claim>, VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed { what, reason };
    let sig_hex = |field: &str, v: &str| {
        decode_sig(v).ok_or_else(|| {
            malformed(format!(
                "{field} is not a 128-character lowercase-hex Ed25519 signature"
            ))
        })
    };
    let mut claims = Vec::new();
    match obj.get(MASTER_SIGNATURE_FIELD) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => claims.push(Claim::Master(sig_hex(MASTER_SIGNATURE_FIELD, s)?)),
        Some(other) => {
            return Err(malformed(format!(
                "master_signature is a {}, not a string",
                json_kind(other)
            )));
        }
    }
    match obj.get(SIGNATURES_FIELD) {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            if list.len() > MAX_SIGNATURES {
                return Err(malformed(format!(
                    "signatures has {} entries, more than the limit of {MAX_SIGNATURES}",
                    list.len()
                )));
            }
            for (i, entry) in list.iter().enumerate() {
                let key_id = entry.get("key_id").and_then(Value::as_str);
                let sig = entry.get("sig").and_then(Value::as_str);
                let (Some(key_id), Some(sig)) = (key_id, sig) else {
                    return Err(malformed(format!(
                        "signatures[{i}] is not an object with string fields key_id and sig"
                    )));
                };
                let sig = sig_hex(&format!("signatures[{i}].sig"), sig)?;
                claims.push(Claim::Named(key_id.to_owned(), sig));
            }
        }
        Some(other) => {
            return Err(malformed(format!(
                "signatures is a {}, not an array",
                json_kind(other)
            )));
        }
    }
    Ok(claims)
}

pub(crate) fn verify_object(
    obj: Map<String, Value>,
    keyring: &Keyring,
    now: u64,
    what: &'static str,
) -> Result<VerifiedDocument, VerifyError> {
    let claims = collect_claims(&obj, what)?;
    if claims.is_empty() {
        return Err(VerifyError::Unsigned { what });
    }
    let message = signed_bytes(&obj).map_err(|e| VerifyError::Malformed {
        what,
        reason: e.to_string(),
    })?;

    let mut counted: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut key_ids = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    let mut duplicates = 0usize;

    for claim in &claims {
        let matched = match claim {
            Claim::Master(sig) => {
                let hit = keyring
                    .keys()
                    .iter()
                    .find(|k| k.public_key.verify_strict(&message, sig).is_ok());
                if hit.is_none() {
                    // Tell "signed by a key we do not trust" from "tampered":
                    // does it verify under the key the document names?
                    let named = obj
                        .get("master_public_key")
                        .and_then(Value::as_str)
                        .and_then(|h| PublicKey::from_hex(h).ok());
                    match named {
                        Some(pk)
                            if keyring.key_by_public(&pk).is_none()
                                && pk.verify_strict(&message, sig).is_ok() =>
                        {
                            unknown.push(pk.key_id());
                        }
                        Some(pk) if keyring.key_by_public(&pk).is_none() => {
                            // Names an untrusted key and does not verify under it either.
                            bad.push(pk.key_id());
                        }
                        Some(pk) => bad.push(pk.key_id()),
                        None => bad.push("?".to_owned()),
                    }
                }
                hit
            }
            Claim::Named(id, sig) => match keyring.key_by_id(id) {
                None => {
                    unknown.push(id.chars().take(64).collect());
                    None
                }
                Some(k) if k.public_key.verify_strict(&message, sig).is_ok() => Some(k),
                Some(k) => {
                    bad.push(k.id.clone());
                    None
                }
            },
        };
        let Some(key) = matched else { continue };
        if !key.valid_at(now) {
            outside.push(format!("key {} {}", key.id, key.window_text()));
            continue;
        }
        if counted.insert(key.public_key.to_bytes()) {
            key_ids.push(key.id.clone());
        } else {
            duplicates += 1;
        }
    }

    let threshold = keyring.threshold();
    if counted.len() >= threshold {
        return Ok(VerifiedDocument {
            value: obj,
            signed_bytes: message,
            key_ids,
        });
    }
    if counted.is_empty() {
        if let Some(key_id) = bad.first().cloned() {
            return Err(VerifyError::BadSignature { what, key_id });
        }
        if let Some(reason) = outside.first().cloned() {
            return Err(VerifyError::NotYetValid { what, now, reason });
        }
        if let Some(key_id) = unknown.first().cloned() {
            return Err(VerifyError::UnknownKey { what, key_id });
        }
    }
    let mut detail = String::new();
    if duplicates > 0 {
        detail.push_str(&format!(
            "; {duplicates} repeated signature(s) by an already counted key were not counted again"
        ));
    }
    for k in &bad {
        detail.push_str(&format!("; the signature by key {k} does not verify"));
    }
    for k in &unknown {
        detail.push_str(&format!("; key {k} is not in the trust file"));
    }
    for r in &outside {
        detail.push_str(&format!("; {r}"));
    }
    Err(VerifyError::BelowThreshold {
        what,
        valid: counted.len(),
        threshold,
        detail,
    })
}
