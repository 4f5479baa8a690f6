//! [`TrustVerifier`]: the production [`Verifier`], backed by `fleetgate-trust`.

use std::sync::atomic::{AtomicU64, Ordering};

use fleetgate_trust::{Keyring, VerifyError, VerifyOptions, verify_manifest};

use crate::verify::{ManifestKind, Reject, Verified, Verifier, sha256};

/// Verifies manifests with a trust keyring (k-of-n threshold, key windows, strict
/// Ed25519), expiry, and an anti-rollback floor (a manifest whose sequence is at or
/// below the floor is refused as a replay).
///
/// The floor is atomic so the node agent can raise it after it commits a release while
/// the gossip node (which owns a clone of an `Arc<TrustVerifier>`) keeps running.
/// Restore the held manifest with [`crate::Node::restore`] before raising the floor to
/// its sequence.
#[derive(Debug)]
pub struct TrustVerifier {
    keyring: Keyring,
    /// 0 means "no floor" (release sequences start at 1).
    floor: AtomicU64,
}

impl TrustVerifier {
    /// Verify against `keyring`, with no floor yet.
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring,
            floor: AtomicU64::new(0),
        }
    }

    /// Refuse sequences at or below `floor` (from `fleetgate_trust::Floor::sequence`).
    #[must_use]
    pub fn with_floor(self, floor: u64) -> Self {
        self.floor.store(floor, Ordering::SeqCst);
        self
    }

    /// Raise the floor (never lowers it).
    pub fn raise_floor(&self, floor: u64) {
        self.floor.fetch_max(floor, Ordering::SeqCst);
    }

    /// The current floor (0 = none).
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }
}

/// Map the trust crate's refusal to a gossip drop category.
pub fn reject_of(e: &VerifyError) -> Reject {
    match e {
        VerifyError::TooLarge { .. } => Reject::TooLarge,
        VerifyError::Malformed { .. } => Reject::Malformed,
        VerifyError::Unsigned { .. } | VerifyError::DevMode => Reject::Unsigned,
        VerifyError::BadSignature { .. } => Reject::BadSignature,
        VerifyError::UnknownKey { .. } | VerifyError::BelowThreshold { .. } => Reject::UntrustedKey,
        VerifyError::Expired { .. } => Reject::Expired,
        VerifyError::NotYetValid { .. } => Reject::NotYetValid,
        VerifyError::Replayed { .. } => Reject::BelowFloor,
    }
}

impl Verifier for TrustVerifier {
    fn verify(&self, manifest: &[u8], now_unix_secs: u64) -> Result<Verified, Reject> {
        let floor = self.floor();
        let opts = VerifyOptions {
            floor: (floor > 0).then_some(floor),
            ..VerifyOptions::default()
        };
        let vm = verify_manifest(manifest, &self.keyring, now_unix_secs, &opts).map_err(|e| {
            let r = reject_of(&e);
            tracing::debug!(error = %e, "gossip: manifest refused");
            r
        })?;
        let kind = match vm.manifest.kind {
            fleetgate_trust::ManifestKind::Release => ManifestKind::Release,
            fleetgate_trust::ManifestKind::Rollback => ManifestKind::Rollback,
        };
        Ok(Verified {
            sequence: vm.manifest.sequence,
            manifest_hash: sha256(manifest),
            kind,
            expires_at: Some(vm.manifest.expires_at),
        })
    }
}
