//! Detached co-signatures of a release manifest (k-of-n), and the bundle that carries a
//! manifest with them to a node.
//!
//! HART's verifier strips only `master_signature` before it checks the signature, so
//! any further signature *inside* the manifest would enter the signed bytes and fail it.
//! A manifest therefore always carries exactly one signature, `master_signature`, over
//! the canonical bytes; the other signers' signatures (over the same bytes) live beside
//! it in a **co-signature file**, `release_manifest.json.sigs` ([`cosignatures_path`]):
//!
//! ```json
//! {
//!   "type": "fleetgate-cosignatures",
//!   "schema_version": 1,
//!   "signed_sha256": "<hex SHA-256 of the manifest's signed bytes>",
//!   "signatures": [{"key_id": "<16 hex>", "sig": "<128 hex>"}]
//! }
//! ```
//!
//! `signed_sha256` binds the file to one manifest: a co-signature file of another
//! manifest is refused as malformed, never silently ignored.
//!
//! Between fleetgate components (the orchestrator's `POST /apply`, gossip, the archived
//! `manifests/<seq>.json`) a co-signed manifest travels as a **bundle**:
//! `{"fleetgate_bundle": 1, "manifest": {…}, "cosignatures": {…}}`
//! ([`bundle`]). A manifest without co-signatures travels as itself, so a single-key
//! fleet never sees a bundle. [`crate::verify_manifest`] reads a plain manifest, a
//! bundle, and (read only, never produced) the manifests of earlier fleetgate versions
//! that embedded a `signatures` array.

use crate::canonical::parse_strict;
use crate::document::{
    MASTER_SIGNATURE_FIELD, MAX_DOCUMENT_BYTES, SIGNATURES_FIELD, SignError, json_kind,
    parse_limited, render, signature_entry, signed_bytes, verify_sig_by,
};
use crate::error::VerifyError;
use crate::keys::SigningKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `type` of a co-signature file.
pub const COSIGNATURES_TYPE: &str = "fleetgate-cosignatures";
/// Format version of a co-signature file.
pub const COSIGNATURES_SCHEMA_VERSION: u64 = 1;
/// Suffix appended to a manifest's path to name its co-signature file.
pub const COSIGNATURES_SUFFIX: &str = ".sigs";
/// Marker field (value 1) of a bundle: manifest plus co-signatures in one object.
pub const BUNDLE_FIELD: &str = "fleetgate_bundle";
/// Version written in [`BUNDLE_FIELD`].
pub const BUNDLE_VERSION: u64 = 1;

/// `<manifest path>.sigs`.
#[must_use]
pub fn cosignatures_path(manifest: &Path) -> PathBuf {
    let mut p = manifest.as_os_str().to_owned();
    p.push(COSIGNATURES_SUFFIX);
    PathBuf::from(p)
}

/// A signed manifest as files: the manifest (one `master_signature`) and, when other
/// keys signed too, its co-signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// The bytes of `release_manifest.json`.
    pub manifest: Vec<u8>,
    /// The bytes of `release_manifest.json.sigs`, when there are co-signatures.
    pub cosignatures: Option<Vec<u8>>,
}

impl SignedManifest {
    /// What to send to a node: the manifest itself, or a bundle when it is co-signed.
    ///
    /// # Errors
    /// When the parts do not parse (they came from this crate, so they do).
    pub fn transport_bytes(&self) -> Result<Vec<u8>, SignError> {
        bundle(&self.manifest, self.cosignatures.as_deref())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether a JSON object is a release manifest (HART's two required fields are there),
/// as opposed to another signed document (trust file, enrollment certificate).
#[must_use]
pub fn is_manifest_object(obj: &Map<String, Value>) -> bool {
    obj.contains_key("code_hash") && obj.contains_key("version")
}

/// Renders a co-signature file for the manifest whose signed bytes are `message`.
pub(crate) fn render_cosignatures(message: &[u8], entries: Vec<Value>) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("type".into(), Value::String(COSIGNATURES_TYPE.into()));
    obj.insert(
        "schema_version".into(),
        Value::from(COSIGNATURES_SCHEMA_VERSION),
    );
    obj.insert("signed_sha256".into(), Value::String(sha256_hex(message)));
    obj.insert(SIGNATURES_FIELD.into(), Value::Array(entries));
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(obj)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Checks a parsed co-signature file against the manifest's signed bytes and returns its
/// signature entries (validated later, with the manifest's own, by the verifier).
pub(crate) fn cosignature_entries(
    cosig: &Map<String, Value>,
    message: &[u8],
) -> Result<Vec<Value>, String> {
    for k in cosig.keys() {
        if !["type", "schema_version", "signed_sha256", SIGNATURES_FIELD].contains(&k.as_str()) {
            return Err(format!("the co-signature file has an unknown field {k:?}"));
        }
    }
    if cosig.get("type").and_then(Value::as_str) != Some(COSIGNATURES_TYPE) {
        return Err(format!(
            "the co-signature file's type is not {COSIGNATURES_TYPE:?}"
        ));
    }
    match cosig.get("schema_version").and_then(Value::as_u64) {
        Some(COSIGNATURES_SCHEMA_VERSION) => {}
        other => {
            return Err(format!(
                "co-signature file schema_version {other:?} is not supported; this fleetgate reads {COSIGNATURES_SCHEMA_VERSION}"
            ));
        }
    }
    let want = sha256_hex(message);
    match cosig.get("signed_sha256").and_then(Value::as_str) {
        Some(got) if got == want => {}
        Some(got) => {
            return Err(format!(
                "the co-signature file is for another manifest (signed_sha256 {got}; this manifest's signed bytes hash to {want})"
            ));
        }
        None => return Err("the co-signature file has no signed_sha256 string".into()),
    }
    match cosig.get(SIGNATURES_FIELD) {
        Some(Value::Array(list)) => Ok(list.clone()),
        Some(other) => Err(format!(
            "the co-signature file's signatures is a {}, not an array",
            json_kind(other)
        )),
        None => Err("the co-signature file has no signatures array".into()),
    }
}

/// Splits a received object into (manifest object, co-signature entries): a bundle is
/// unpacked and its co-signatures checked against the manifest; a plain manifest has
/// none.
pub(crate) fn split_bundle(
    obj: Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<Value>), VerifyError> {
    let malformed = |reason: String| VerifyError::Malformed {
        what: "manifest",
        reason,
    };
    if !obj.contains_key(BUNDLE_FIELD) {
        return Ok((obj, Vec::new()));
    }
    if obj.get(BUNDLE_FIELD).and_then(Value::as_u64) != Some(BUNDLE_VERSION) {
        return Err(malformed(format!(
            "bundle version {} is not supported; this fleetgate reads {BUNDLE_VERSION}",
            obj[BUNDLE_FIELD]
        )));
    }
    if let Some(k) = obj
        .keys()
        .find(|k| ![BUNDLE_FIELD, "manifest", "cosignatures"].contains(&k.as_str()))
    {
        return Err(malformed(format!("the bundle has an unknown field {k:?}")));
    }
    let Some(Value::Object(manifest)) = obj.get("manifest") else {
        return Err(malformed("the bundle has no manifest object".into()));
    };
    let Some(Value::Object(cosig)) = obj.get("cosignatures") else {
        return Err(malformed("the bundle has no cosignatures object".into()));
    };
    let message = signed_bytes(manifest).map_err(|e| malformed(e.to_string()))?;
    let entries = cosignature_entries(cosig, &message).map_err(malformed)?;
    Ok((manifest.clone(), entries))
}

/// Joins a manifest's bytes and its co-signature file's bytes into what a node is sent:
/// the manifest bytes unchanged when there is no co-signature file (or it lists no
/// signature), else a bundle `{"fleetgate_bundle": 1, "manifest", "cosignatures"}`.
///
/// # Errors
/// When either part does not parse, or the co-signature file belongs to another
/// manifest.
pub fn bundle(manifest: &[u8], cosignatures: Option<&[u8]>) -> Result<Vec<u8>, SignError> {
    let Some(cosig_bytes) = cosignatures else {
        return Ok(manifest.to_vec());
    };
    let m = object(parse_strict(manifest)?)?;
    let c = object(parse_strict(cosig_bytes)?)?;
    let message = signed_bytes(&m)?;
    let entries = cosignature_entries(&c, &message)
        .map_err(|reason| SignError::InvalidManifest { reason })?;
    if entries.is_empty() {
        return Ok(manifest.to_vec());
    }
    let mut out = Map::new();
    out.insert(BUNDLE_FIELD.into(), Value::from(BUNDLE_VERSION));
    out.insert("manifest".into(), Value::Object(m));
    out.insert("cosignatures".into(), Value::Object(c));
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(out)).unwrap_or_default();
    bytes.push(b'\n');
    Ok(bytes)
}

fn object(v: Value) -> Result<Map<String, Value>, SignError> {
    match v {
        Value::Object(o) => Ok(o),
        other => Err(SignError::NotAnObject {
            found: json_kind(&other),
        }),
    }
}

/// Adds `key`'s signature to a manifest: to an unsigned manifest as its
/// `master_signature` (the manifest is rewritten), otherwise as an entry of the
/// co-signature file (created when `cosignatures` is `None`). A manifest of an earlier
/// fleetgate that embedded a `signatures` array is converted on the way: those
/// signatures move to the co-signature file and the manifest keeps only
/// `master_signature`, so HART's verifier accepts it again.
///
/// Returns the new files; `manifest` is unchanged unless it had to be rewritten.
///
/// # Errors
/// Parse errors, [`SignError::AlreadySigned`] when this key's signature is already
/// there, [`SignError::InvalidManifest`] when the co-signature file belongs to another
/// manifest, [`SignError::Canonical`].
pub fn add_manifest_signature(
    manifest: &[u8],
    cosignatures: Option<&[u8]>,
    key: &SigningKey,
) -> Result<SignedManifest, SignError> {
    if manifest.len() > crate::MAX_MANIFEST_BYTES {
        return Err(SignError::InvalidManifest {
            reason: format!(
                "it is {} bytes, over the {}-byte limit",
                manifest.len(),
                crate::MAX_MANIFEST_BYTES
            ),
        });
    }
    let mut m = object(parse_strict(manifest)?)?;
    let message = signed_bytes(&m)?;
    let mut entries = match m.remove(SIGNATURES_FIELD) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(SignError::InvalidManifest {
                reason: format!("signatures is a {}, not an array", json_kind(&other)),
            });
        }
    };
    let rewritten = !entries.is_empty();
    if let Some(bytes) = cosignatures {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(SignError::InvalidManifest {
                reason: format!(
                    "the co-signature file is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
                    bytes.len()
                ),
            });
        }
        let c = object(parse_strict(bytes)?)?;
        let more = cosignature_entries(&c, &message)
            .map_err(|reason| SignError::InvalidManifest { reason })?;
        entries.extend(more);
    }
    let id = key.key_id();
    let pk = key.public_key();
    let signed_by_key = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| verify_sig_by(&pk, &message, s))
    };
    let listed = entries.iter().any(|e| {
        e.get("key_id").and_then(Value::as_str) == Some(id.as_str()) || signed_by_key(e.get("sig"))
    });
    if listed || signed_by_key(m.get(MASTER_SIGNATURE_FIELD)) {
        return Err(SignError::AlreadySigned { key_id: id });
    }
    let master_present = m
        .get(MASTER_SIGNATURE_FIELD)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let manifest_out = if master_present {
        entries.push(signature_entry(key, &message));
        if rewritten {
            render(&m)
        } else {
            manifest.to_vec()
        }
    } else {
        m.insert(
            MASTER_SIGNATURE_FIELD.to_owned(),
            Value::String(hex::encode(key.sign(&message))),
        );
        render(&m)
    };
    Ok(SignedManifest {
        manifest: manifest_out,
        cosignatures: (!entries.is_empty()).then(|| render_cosignatures(&message, entries)),
    })
}

/// Parses a co-signature file read from disk (size-limited) and joins it to a
/// manifest's object for verification.
pub(crate) fn join_detached(
    manifest: Map<String, Value>,
    cosignatures: &[u8],
) -> Result<(Map<String, Value>, Vec<Value>), VerifyError> {
    let c = parse_limited(cosignatures, MAX_DOCUMENT_BYTES, "co-signatures")?;
    let message = signed_bytes(&manifest).map_err(|e| VerifyError::Malformed {
        what: "manifest",
        reason: e.to_string(),
    })?;
    let entries = cosignature_entries(&c, &message).map_err(|reason| VerifyError::Malformed {
        what: "co-signatures",
        reason,
    })?;
    Ok((manifest, entries))
}
