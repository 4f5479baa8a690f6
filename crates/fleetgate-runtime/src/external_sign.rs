//! `[signing] mode = "external"`: SIGN with no signing secret on the orchestrator's host.
//!
//! 1. SIGN checks the code hash as in local mode, then writes a **signing request**
//!    (`state/signing-request.json`: the complete manifest — version, commit, code hash,
//!    sequence, expiry, canary seed, fencing epoch, run id — without `master_public_key`,
//!    `key_ids` and `master_signature`) and stays *pending*. The request is written once
//!    per run, so every field is fixed before anyone signs.
//! 2. The signer — another process, another machine, a CI job — holds the key and runs
//!    `fleetgate manifest sign-request REQUEST --key-file KEY` ([`sign_request`]): it
//!    fills in its public key and key id and signs the canonical bytes.
//! 3. `fleetgate manifest submit FILE` ([`Orchestrator::submit_manifest`]) checks that the
//!    signed manifest is the request, field for field (the signer can add nothing and
//!    change nothing but the three signer fields), that it verifies against the trust
//!    file (a k-of-n keyring may still want co-signatures: `fleetgate trust sign`), and
//!    writes it where SIGN looks. SIGN passes at its next check exactly as in local mode.

use crate::gates::{manifest_path, resolve};
use crate::orchestrator::Orchestrator;
use crate::{ConfigProblem, InvalidInput, Refusal, RuntimeError, TrustStep};
use fleetgate_core::Stage;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The fields the signer fills in; every other field must come back as requested.
const SIGNER_FIELDS: [&str; 4] = [
    "master_public_key",
    "key_ids",
    "master_signature",
    "signatures",
];

/// Where SIGN writes the signing request of the current run.
#[must_use]
pub fn request_path(state_dir: &Path) -> PathBuf {
    state_dir.join("signing-request.json")
}

/// Why a signing request or a submitted manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExternalSignError {
    /// Not JSON, not an object, or too large.
    #[error("{what} is not a manifest: {reason}")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The signed manifest differs from the request in a field the signer may not set.
    #[error(
        "the signed manifest is not the signing request: field `{field}` is {got} but the request has {want}"
    )]
    Altered {
        /// The field.
        field: String,
        /// Its value in the signed manifest (`absent` if missing).
        got: String,
        /// Its value in the request (`absent` if missing).
        want: String,
    },
    /// Signing failed (invalid manifest fields, dev key, …).
    #[error("cannot sign the request: {0}")]
    Sign(#[from] fleetgate_trust::SignError),
}

fn object(what: &'static str, bytes: &[u8]) -> Result<Map<String, Value>, ExternalSignError> {
    if bytes.len() > fleetgate_trust::MAX_MANIFEST_BYTES {
        return Err(ExternalSignError::Malformed {
            what,
            reason: format!(
                "{} bytes, more than the {} a manifest may have",
                bytes.len(),
                fleetgate_trust::MAX_MANIFEST_BYTES
            ),
        });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ExternalSignError::Malformed {
            what,
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(ExternalSignError::Malformed {
            what,
            reason: e.to_string(),
        }),
    }
}

/// The request for `manifest`: its JSON without the signer's fields.
pub(crate) fn request_bytes(manifest: &fleetgate_trust::Manifest) -> Result<Vec<u8>, RuntimeError> {
    let mut value = serde_json::to_value(manifest)
        .map_err(|e| RuntimeError::encode("the signing request", e))?;
    if let Value::Object(m) = &mut value {
        for f in SIGNER_FIELDS {
            m.remove(f);
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&value)
        .map_err(|e| RuntimeError::encode("the signing request", e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The signer's side: signs a signing request with `key` and returns the manifest bytes
/// to submit.
///
/// # Errors
/// [`ExternalSignError::Malformed`] for a request that is not a JSON object or already
/// carries a signature; [`ExternalSignError::Sign`] when the manifest is invalid.
pub fn sign_request(
    request: &[u8],
    key: &fleetgate_trust::SigningKey,
) -> Result<Vec<u8>, ExternalSignError> {
    let req = object("the signing request", request)?;
    if let Some(f) = SIGNER_FIELDS.iter().find(|f| req.contains_key(**f)) {
        return Err(ExternalSignError::Malformed {
            what: "the signing request",
            reason: format!("it already has `{f}` (sign the request, not a signed manifest)"),
        });
    }
    Ok(fleetgate_trust::sign_manifest_value(
        &Value::Object(req),
        &[key],
    )?)
}

/// Checks that `signed` is `request` plus the signer's fields, and nothing else.
///
/// # Errors
/// [`ExternalSignError::Malformed`] or [`ExternalSignError::Altered`].
pub fn check_against_request(request: &[u8], signed: &[u8]) -> Result<(), ExternalSignError> {
    let want = object("the signing request", request)?;
    let mut got = object("the submitted manifest", signed)?;
    for f in SIGNER_FIELDS {
        got.remove(f);
    }
    let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_owned(), Value::to_string);
    for field in want.keys().chain(got.keys()) {
        if want.get(field) != got.get(field) {
            return Err(ExternalSignError::Altered {
                field: field.clone(),
                got: show(got.get(field)),
                want: show(want.get(field)),
            });
        }
    }
    Ok(())
}

/// What `manifest submit` did.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    /// The run the manifest was accepted for.
    pub run_id: String,
    /// Its version.
    pub version: String,
    /// Its sequence.
    pub sequence: u64,
    /// The signers' key ids.
    pub key_ids: Vec<String>,
    /// Where it was written (SIGN reads it at its next check).
    pub manifest_file: PathBuf,
    /// `None` when it verifies against the trust file now; else what is still missing
    /// (co-signatures of a k-of-n keyring).
    pub pending: Option<String>,
}

impl Orchestrator {
    /// Accepts a manifest signed elsewhere for the run waiting in SIGN (external mode).
    ///
    /// # Errors
    /// [`RuntimeError::Refused`] when no run waits in SIGN or it has no signing request;
    /// [`RuntimeError::Invalid`] for a manifest that is not the request or does not verify
    /// against the trust file; [`RuntimeError::Config`] without a usable trust file; I/O
    /// errors writing it.
    pub fn submit_manifest(&self, signed: &[u8]) -> Result<SubmitReport, RuntimeError> {
        use fleetgate_trust::{Keyring, VerifyError, VerifyOptions};
        let ctx = self.context();
        let state = self.store().load()?;
        let Some(run_id) = state.run_id.clone() else {
            return Err(Refusal::NothingToSign.into());
        };
        if state.stage != Stage::Signing {
            return Err(Refusal::NotSigning {
                run_id,
                version: state.version.clone(),
                stage: state.stage,
            }
            .into());
        }
        let req_path = request_path(&ctx.state_dir);
        let request = match std::fs::read(&req_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Refusal::NoSigningRequest {
                    run_id,
                    path: req_path,
                }
                .into());
            }
            Err(e) => return Err(RuntimeError::io("read", &req_path, e)),
        };
        let req_run = object("the signing request", &request)
            .ok()
            .and_then(|m| m.get("run_id").and_then(Value::as_str).map(str::to_owned));
        if req_run.as_deref() != Some(run_id.as_str()) {
            return Err(Refusal::StaleSigningRequest {
                path: req_path,
                request_run: req_run,
                run_id,
            }
            .into());
        }
        check_against_request(&request, signed)
            .map_err(|e| RuntimeError::Invalid(InvalidInput::NotTheRequest(e)))?;
        let Some(trust_file) = &ctx.cfg.signing.trust_file else {
            return Err(ConfigProblem::Missing {
                key: "signing.trust_file",
                why: "a manifest is only accepted once it verifies against the pinned keys",
            }
            .into());
        };
        let trust_path = resolve(&ctx.base, trust_file);
        let keyring = Keyring::load(&trust_path)
            .map_err(|e| RuntimeError::trust(TrustStep::TrustFile(trust_path.clone()), e))?;
        let now = fleetgate_trust::unix_now();
        let (sequence, key_ids, pending) = match fleetgate_trust::verify_manifest_detached(
            signed,
            None,
            &keyring,
            now,
            &VerifyOptions::default(),
        ) {
            Ok(v) => (v.manifest.sequence, v.key_ids, None),
            Err(VerifyError::BelowThreshold {
                valid, threshold, ..
            }) => {
                let m: fleetgate_trust::Manifest = serde_json::from_slice(signed)
                    .map_err(|e| RuntimeError::Invalid(InvalidInput::ManifestJson(e)))?;
                (
                    m.sequence,
                    m.key_ids.clone(),
                    Some(format!(
                        "signed by {valid} of the {threshold} keys the trust file requires: co-sign it \
                         with `fleetgate trust sign {} --key-file KEY`",
                        manifest_path(&ctx.state_dir).display()
                    )),
                )
            }
            Err(e) => {
                return Err(InvalidInput::ManifestUnverified {
                    trust_file: trust_path,
                    source: e,
                }
                .into());
            }
        };
        let out = manifest_path(&ctx.state_dir);
        let sigs = fleetgate_trust::cosignatures_path(&out);
        match std::fs::remove_file(&sigs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("remove stale co-signatures", &sigs, e)),
        }
        fleetgate_store::write_atomic(&out, signed, None)
            .map_err(|e| RuntimeError::io("write", &out, e))?;
        Ok(SubmitReport {
            run_id,
            version: state.version,
            sequence,
            key_ids,
            manifest_file: out,
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Vec<u8> {
        br#"{"version":"v1.0.0","git_sha":"abc","sequence":7,"run_id":"r1"}"#.to_vec()
    }

    #[test]
    fn a_signed_request_matches_and_an_altered_one_is_named() {
        let want = request();
        let signed = br#"{"version":"v1.0.0","git_sha":"abc","sequence":7,"run_id":"r1",
            "master_public_key":"aa","key_ids":["k"],"master_signature":"ss"}"#;
        check_against_request(&want, signed).unwrap();
        let altered = br#"{"version":"v1.0.0","git_sha":"abc","sequence":8,"run_id":"r1",
            "master_signature":"ss"}"#;
        let e = check_against_request(&want, altered).unwrap_err();
        assert!(e.to_string().contains("`sequence` is 8"), "{e}");
        let added = br#"{"version":"v1.0.0","git_sha":"abc","sequence":7,"run_id":"r1",
            "rollback_of":"x","master_signature":"ss"}"#;
        let e = check_against_request(&want, added).unwrap_err();
        assert!(e.to_string().contains("`rollback_of`"), "{e}");
        assert!(check_against_request(&want, b"[1]").is_err());
    }
}
