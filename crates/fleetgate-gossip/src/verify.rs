//! Manifest verification, injected into the node.
//!
//! The node never interprets manifest contents itself: every manifest bytes it receives
//! or is asked to publish go through a [`Verifier`] *before* they are stored, forwarded
//! or delivered. The production implementation is [`crate::TrustVerifier`] (keyring,
//! signature threshold, expiry and anti-rollback floor from `fleetgate-trust`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// What a manifest is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// Move the fleet to a new version.
    Release,
    /// Move the fleet back; supersedes any release with a lower sequence.
    Rollback,
}

/// The facts gossip needs about a manifest that passed verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Monotonic release sequence: higher supersedes lower.
    pub sequence: u64,
    /// SHA-256 of the exact manifest bytes.
    pub manifest_hash: [u8; 32],
    /// Release or rollback.
    pub kind: ManifestKind,
    /// Unix seconds after which the manifest is no longer valid, if it expires.
    pub expires_at: Option<u64>,
}

/// Why a manifest was refused. Closed set of categories so drops can be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum Reject {
    /// Not parseable as a manifest.
    #[error("manifest is malformed")]
    Malformed,
    /// Carries no signature.
    #[error("manifest is unsigned")]
    Unsigned,
    /// A signature does not verify (forged or tampered).
    #[error("manifest signature does not verify")]
    BadSignature,
    /// Signed, but not by enough trusted keys.
    #[error("manifest is not signed by enough trusted keys")]
    UntrustedKey,
    /// Past its expiry time.
    #[error("manifest has expired")]
    Expired,
    /// Signing key outside its validity window, or built in the future.
    #[error("manifest is not valid yet")]
    NotYetValid,
    /// Sequence at or below this node's anti-rollback floor (a replay).
    #[error("manifest sequence is below the anti-rollback floor")]
    BelowFloor,
    /// Larger than the verifier accepts.
    #[error("manifest is too large")]
    TooLarge,
    /// Any other verification failure (fail closed).
    #[error("manifest failed verification")]
    Other,
}

impl Reject {
    /// Every variant, in a fixed order (for counters).
    pub const ALL: [Reject; 9] = [
        Reject::Malformed,
        Reject::Unsigned,
        Reject::BadSignature,
        Reject::UntrustedKey,
        Reject::Expired,
        Reject::NotYetValid,
        Reject::BelowFloor,
        Reject::TooLarge,
        Reject::Other,
    ];

    /// Position in [`Reject::ALL`].
    pub fn index(self) -> usize {
        match self {
            Reject::Malformed => 0,
            Reject::Unsigned => 1,
            Reject::BadSignature => 2,
            Reject::UntrustedKey => 3,
            Reject::Expired => 4,
            Reject::NotYetValid => 5,
            Reject::BelowFloor => 6,
            Reject::TooLarge => 7,
            Reject::Other => 8,
        }
    }

    /// Stable snake_case name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed_manifest",
            Reject::Unsigned => "unsigned",
            Reject::BadSignature => "bad_signature",
            Reject::UntrustedKey => "untrusted_key",
            Reject::Expired => "expired",
            Reject::NotYetValid => "not_yet_valid",
            Reject::BelowFloor => "below_floor",
            Reject::TooLarge => "manifest_too_large",
            Reject::Other => "verification_failed",
        }
    }
}

/// Verifies signed manifest bytes. Must be pure with respect to its inputs plus its own
/// trust configuration, and must never panic on arbitrary bytes.
pub trait Verifier {
    /// Verify `manifest` at wall-clock time `now_unix_secs`.
    fn verify(&self, manifest: &[u8], now_unix_secs: u64) -> Result<Verified, Reject>;
}

impl<T: Verifier + ?Sized> Verifier for Arc<T> {
    fn verify(&self, manifest: &[u8], now_unix_secs: u64) -> Result<Verified, Reject> {
        (**self).verify(manifest, now_unix_secs)
    }
}

impl<T: Verifier + ?Sized> Verifier for &T {
    fn verify(&self, manifest: &[u8], now_unix_secs: u64) -> Result<Verified, Reject> {
        (**self).verify(manifest, now_unix_secs)
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Wraps a real verifier and remembers successful results by the SHA-256 of the exact
/// bytes, so identical bytes are verified cryptographically once. Expiry is still
/// checked on every call. Intended for large simulations where many simulated nodes
/// share one trust configuration; a single real node gains nothing from it.
pub struct CachingVerifier<V> {
    inner: V,
    cache: Mutex<HashMap<[u8; 32], Verified>>,
}

impl<V: Verifier> CachingVerifier<V> {
    /// Cache results of `inner`.
    pub fn new(inner: V) -> Self {
        Self {
            inner,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Verifier> Verifier for CachingVerifier<V> {
    fn verify(&self, manifest: &[u8], now_unix_secs: u64) -> Result<Verified, Reject> {
        let key = sha256(manifest);
        let hit = self
            .cache
            .lock()
            .map_err(|_| Reject::Other)?
            .get(&key)
            .copied();
        if let Some(v) = hit {
            return match v.expires_at {
                Some(exp) if now_unix_secs >= exp => Err(Reject::Expired),
                Some(_) | None => Ok(v),
            };
        }
        let v = self.inner.verify(manifest, now_unix_secs)?;
        self.cache.lock().map_err(|_| Reject::Other)?.insert(key, v);
        Ok(v)
    }
}
