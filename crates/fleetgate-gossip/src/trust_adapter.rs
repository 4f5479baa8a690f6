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
            // Agent updates go to the nodes that opted in, by push or pull: gossip holds
            // one head per fleet, and an agent build must not displace the release.
            fleetgate_trust::ManifestKind::Agent => return Err(Reject::Malformed),
        };
        Ok(Verified {
            sequence: vm.manifest.sequence,
            manifest_hash: sha256(manifest),
            kind,
            expires_at: Some(vm.manifest.expires_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Signer;
    use crate::verify::CachingVerifier;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn maps_every_refusal_to_a_drop_category() {
        let s = Signer::new(1, NOW - 60);
        let v = s.verifier();
        let good = s.release(3, "v1.2.3").unwrap();
        let ok = v.verify(&good, NOW).unwrap();
        assert_eq!(ok.sequence, 3);
        assert_eq!(ok.kind, ManifestKind::Release);
        assert_eq!(ok.manifest_hash, sha256(&good));
        assert_eq!(ok.expires_at, Some(s.expires_at));

        let text = String::from_utf8(good.clone()).unwrap();
        let tampered = text.replace("v1.2.3", "v6.6.6");
        assert_eq!(
            v.verify(tampered.as_bytes(), NOW),
            Err(Reject::BadSignature)
        );
        let other = Signer::new(2, NOW - 60).release(3, "v1.2.3").unwrap();
        assert_eq!(v.verify(&other, NOW), Err(Reject::UntrustedKey));
        assert_eq!(v.verify(b"{\"version\":1", NOW), Err(Reject::Malformed));
        let mut obj: serde_json::Value = serde_json::from_slice(&good).unwrap();
        obj.as_object_mut()
            .unwrap()
            .remove("master_signature")
            .unwrap();
        let unsigned = serde_json::to_vec(&obj).unwrap();
        assert_eq!(v.verify(&unsigned, NOW), Err(Reject::Unsigned));
        assert_eq!(v.verify(&good, s.expires_at + 1), Err(Reject::Expired));
        assert_eq!(
            v.verify(&good, NOW - 3 * 24 * 3600),
            Err(Reject::NotYetValid)
        );
        assert_eq!(v.verify(&vec![b' '; 70 * 1024], NOW), Err(Reject::TooLarge));

        let rb = s.rollback(4, 3, "v1.2.3", "v1.2.2").unwrap();
        assert_eq!(v.verify(&rb, NOW).unwrap().kind, ManifestKind::Rollback);
    }

    #[test]
    fn a_k_of_n_bundle_verifies_and_its_manifest_alone_is_below_the_threshold() {
        use fleetgate_trust::{Manifest, SigningKey, TrustedKey, rfc3339_seconds};
        let (a, b) = (
            SigningKey::from_seed(&[1; 32]),
            SigningKey::from_seed(&[2; 32]),
        );
        let ring = Keyring::new(
            1,
            2,
            vec![
                TrustedKey::new(a.public_key()),
                TrustedKey::new(b.public_key()),
            ],
        )
        .unwrap();
        let m = Manifest {
            version: "v1.0.0".into(),
            git_sha: "a".repeat(40),
            code_hash: "c".repeat(64),
            built_at: rfc3339_seconds(NOW - 60),
            sequence: 3,
            expires_at: NOW + 3600,
            canary_seed: "00ff".into(),
            ..Manifest::default()
        };
        let signed = fleetgate_trust::sign_manifest_detached(&m, &[&a, &b]).unwrap();
        let bundle = signed.transport_bytes().unwrap();
        let v = TrustVerifier::new(ring);
        let ok = v.verify(&bundle, NOW).unwrap();
        assert_eq!(ok.sequence, 3);
        assert_eq!(ok.manifest_hash, sha256(&bundle));
        assert_eq!(
            v.verify(&signed.manifest, NOW),
            Err(Reject::UntrustedKey),
            "one of two signatures"
        );
    }

    #[test]
    fn floor_refuses_replays_and_only_rises() {
        let s = Signer::new(1, NOW - 60);
        let v = s.verifier().with_floor(3);
        assert_eq!(
            v.verify(&s.release(3, "v3.0.0").unwrap(), NOW),
            Err(Reject::BelowFloor)
        );
        assert!(v.verify(&s.release(4, "v4.0.0").unwrap(), NOW).is_ok());
        v.raise_floor(5);
        v.raise_floor(2);
        assert_eq!(v.floor(), 5);
        assert_eq!(
            v.verify(&s.release(4, "v4.0.0").unwrap(), NOW),
            Err(Reject::BelowFloor)
        );
    }

    #[test]
    fn caching_verifier_still_refuses_expired_and_never_caches_refusals() {
        let s = Signer::new(1, NOW - 60);
        let c = CachingVerifier::new(s.verifier());
        let good = s.release(1, "v1.0.0").unwrap();
        assert!(c.verify(&good, NOW).is_ok());
        assert!(c.verify(&good, NOW + 1).is_ok());
        assert_eq!(c.verify(&good, s.expires_at), Err(Reject::Expired));
        let forged = Signer::new(9, NOW - 60).release(1, "v1.0.0").unwrap();
        assert_eq!(c.verify(&forged, NOW), Err(Reject::UntrustedKey));
        assert_eq!(c.verify(&forged, NOW), Err(Reject::UntrustedKey));
    }
}
