//! Real signed manifests for simulations, examples and tests.
//!
//! Production manifests are signed at the SIGN stage; this module only makes it cheap
//! for a simulator or test to produce genuinely signed release/rollback manifests with
//! a deterministic key, and the matching [`TrustVerifier`].

use fleetgate_trust::{
    Keyring, Manifest, ManifestKind, RollbackOf, SignError, SigningKey, rfc3339_seconds,
    sign_manifest,
};

use crate::trust_adapter::TrustVerifier;

/// A deterministic release signer and its keyring.
pub struct Signer {
    key: SigningKey,
    /// Unix seconds used as `built_at`.
    pub built_at: u64,
    /// Unix seconds used as `expires_at`.
    pub expires_at: u64,
}

impl Signer {
    /// A signer whose key is derived from `seed`; manifests are built at `built_at`
    /// and expire 30 days later.
    pub fn new(seed: u8, built_at: u64) -> Self {
        Self {
            key: SigningKey::from_seed(&[seed; 32]),
            built_at,
            expires_at: built_at + 30 * 24 * 3600,
        }
    }

    /// The single-key keyring that trusts this signer.
    pub fn keyring(&self) -> Keyring {
        Keyring::single(self.key.public_key())
    }

    /// A verifier trusting this signer (no floor).
    pub fn verifier(&self) -> TrustVerifier {
        TrustVerifier::new(self.keyring())
    }

    fn base(&self, sequence: u64, version: &str) -> Manifest {
        Manifest {
            version: version.to_owned(),
            git_sha: format!("{sequence:040x}"),
            code_hash: format!("{:064x}", sequence.wrapping_mul(0x9E37_79B9)),
            file_manifest_hash: format!("{:064x}", sequence + 1),
            guardrail_hash: format!("{:064x}", sequence + 2),
            built_at: rfc3339_seconds(self.built_at),
            master_public_key: self.key.public_key_hex(),
            sequence,
            expires_at: self.expires_at,
            canary_seed: format!("{sequence:016x}"),
            ..Manifest::default()
        }
    }

    /// A signed release manifest for `version` with `sequence`.
    pub fn release(&self, sequence: u64, version: &str) -> Result<Vec<u8>, SignError> {
        sign_manifest(&self.base(sequence, version), &[&self.key])
    }

    /// A signed rollback manifest (`sequence`) undoing release `of` (`of_version`) and
    /// returning to `return_to`.
    pub fn rollback(
        &self,
        sequence: u64,
        of: u64,
        of_version: &str,
        return_to: &str,
    ) -> Result<Vec<u8>, SignError> {
        let m = Manifest {
            kind: ManifestKind::Rollback,
            rollback_of: Some(RollbackOf {
                sequence: of,
                version: of_version.to_owned(),
                code_hash: None,
            }),
            return_to_version: Some(return_to.to_owned()),
            ..self.base(sequence, return_to)
        };
        sign_manifest(&m, &[&self.key])
    }
}
