//! The trust file (keyring): trusted public keys, a k-of-n threshold,
//! optional validity windows, and rotation.
//!
//! Format (JSON, `schema_version` 1; unknown fields are refused so a typo
//! such as `"treshold"` cannot silently fall back to a default):
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "version": 1,
//!   "threshold": 2,
//!   "keys": [
//!     {"id": "3f1c…(16 hex)", "public_key": "…(64 hex)", "name": "release-ci",
//!      "not_before": 1767225600, "not_after": 1798761600}
//!   ]
//! }
//! ```
//!
//! - `id` must equal the key id of `public_key` ([`crate::key_id`]);
//! - `not_before` / `not_after` are optional unix seconds; a key counts
//!   towards the threshold only when `not_before <= now < not_after`;
//! - `threshold` is k: 1 ≤ k ≤ number of distinct keys;
//! - `version` increases with every rotation (a rotation must raise it, so an
//!   old, once-valid keyring can never be replayed);
//! - a trust file may also carry `master_signature` / `signatures` (that is
//!   how a rotated keyring arrives); loading ignores them — the file on disk
//!   is trusted because the operator pinned it.

use crate::document::{SignError, render, sign_object, strip_signatures, verify_object};
use crate::error::VerifyError;
use crate::fsutil::{FsError, read_limited};
use crate::keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// Largest trust file read.
pub const MAX_KEYRING_BYTES: usize = 64 * 1024;
/// Most keys a trust file may list.
pub const MAX_KEYS: usize = 64;
/// Trust-file format version this crate reads and writes.
pub const KEYRING_SCHEMA_VERSION: u32 = 1;

/// Why a trust file was refused, or a rotation was.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Reading the file failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The content is not a valid trust file.
    #[error("load trust file {source_name}: {reason}")]
    Invalid {
        /// Path or "new keyring".
        source_name: String,
        /// What is wrong, naming the field or key.
        reason: String,
    },
    /// The proposed keyring is not signed by k of the *current* keys.
    #[error(
        "rotate trust file: the new keyring is not signed by {threshold} of the current keys: {source}"
    )]
    NotSignedByCurrent {
        /// Current k.
        threshold: usize,
        /// Why verification failed.
        source: VerifyError,
    },
    /// The proposed keyring is not signed by its own threshold of keys.
    #[error(
        "rotate trust file: the new keyring is not signed by {threshold} of its own keys (each new key holder must co-sign, proving the keys work): {source}"
    )]
    NotSignedByNew {
        /// New k.
        threshold: usize,
        /// Why verification failed.
        source: VerifyError,
    },
    /// The proposed keyring does not raise `version`.
    #[error(
        "rotate trust file: the new keyring has version {new}, not above the current version {current}"
    )]
    NotNewer {
        /// Current version.
        current: u64,
        /// Proposed version.
        new: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    schema_version: u32,
    #[serde(default)]
    version: u64,
    threshold: usize,
    keys: Vec<TrustedKeyFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeyFile {
    id: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_after: Option<u64>,
}

/// One trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// Key id ([`crate::key_id`] of `public_key`).
    pub id: String,
    /// The key.
    pub public_key: PublicKey,
    /// Optional human label.
    pub name: Option<String>,
    /// Valid from (unix seconds, inclusive).
    pub not_before: Option<u64>,
    /// Valid until (unix seconds, exclusive).
    pub not_after: Option<u64>,
}

impl TrustedKey {
    /// A key valid at all times.
    #[must_use]
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            id: public_key.key_id(),
            public_key,
            name: None,
            not_before: None,
            not_after: None,
        }
    }

    /// Whether the key counts at time `now`.
    #[must_use]
    pub fn valid_at(&self, now: u64) -> bool {
        self.not_before.is_none_or(|nb| now >= nb) && self.not_after.is_none_or(|na| now < na)
    }

    pub(crate) fn window_text(&self) -> String {
        match (self.not_before, self.not_after) {
            (Some(a), Some(b)) => format!("is valid only from {a} until {b}"),
            (Some(a), None) => format!("is valid only from {a}"),
            (None, Some(b)) => format!("was valid only until {b}"),
            (None, None) => "is always valid".to_owned(),
        }
    }
}

/// A validated set of trusted keys and a threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    version: u64,
    threshold: usize,
    keys: Vec<TrustedKey>,
}

impl Keyring {
    /// Builds and validates a keyring.
    ///
    /// # Errors
    /// [`KeyringError::Invalid`]: no keys, too many, a duplicate id, or a
    /// threshold outside 1..=distinct keys, or an empty window.
    pub fn new(
        version: u64,
        threshold: usize,
        keys: Vec<TrustedKey>,
    ) -> Result<Self, KeyringError> {
        let ring = Self {
            version,
            threshold,
            keys,
        };
        ring.validate("new keyring")?;
        Ok(ring)
    }

    /// One key, threshold 1, no window: HART's pinned-key model.
    #[must_use]
    pub fn single(public_key: PublicKey) -> Self {
        Self {
            version: 0,
            threshold: 1,
            keys: vec![TrustedKey::new(public_key)],
        }
    }

    fn validate(&self, source_name: &str) -> Result<(), KeyringError> {
        let invalid = |reason: String| KeyringError::Invalid {
            source_name: source_name.to_owned(),
            reason,
        };
        if self.keys.is_empty() {
            return Err(invalid("it lists no keys".to_owned()));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(invalid(format!(
                "it lists {} keys, more than the limit of {MAX_KEYS}",
                self.keys.len()
            )));
        }
        let mut ids = BTreeSet::new();
        let mut distinct = BTreeSet::new();
        for k in &self.keys {
            if k.id != k.public_key.key_id() {
                return Err(invalid(format!(
                    "key id {:?} does not match its public key {} (its id is {})",
                    k.id,
                    k.public_key.to_hex(),
                    k.public_key.key_id()
                )));
            }
            if !ids.insert(k.id.clone()) {
                return Err(invalid(format!("key id {} is listed twice", k.id)));
            }
            distinct.insert(k.public_key.to_bytes());
            if let (Some(a), Some(b)) = (k.not_before, k.not_after)
                && a >= b
            {
                return Err(invalid(format!(
                    "key {} has not_before {a} not before not_after {b}",
                    k.id
                )));
            }
        }
        if self.threshold == 0 || self.threshold > distinct.len() {
            return Err(invalid(format!(
                "threshold {} must be between 1 and the number of distinct keys ({})",
                self.threshold,
                distinct.len()
            )));
        }
        Ok(())
    }

    /// Parses a trust file's bytes (≤ [`MAX_KEYRING_BYTES`], checked before
    /// parsing). Signature fields, if present, are ignored.
    ///
    /// # Errors
    /// [`KeyringError::Invalid`] naming `source_name`.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self, KeyringError> {
        let obj = crate::document::parse_limited(bytes, MAX_KEYRING_BYTES, "trust file").map_err(
            |e| KeyringError::Invalid {
                source_name: source_name.to_owned(),
                reason: e.to_string(),
            },
        )?;
        Self::from_object(&obj, source_name)
    }

    fn from_object(obj: &Map<String, Value>, source_name: &str) -> Result<Self, KeyringError> {
        let invalid = |reason: String| KeyringError::Invalid {
            source_name: source_name.to_owned(),
            reason,
        };
        let file: KeyringFile = serde_json::from_value(Value::Object(strip_signatures(obj)))
            .map_err(|e| invalid(e.to_string()))?;
        if file.schema_version != KEYRING_SCHEMA_VERSION {
            return Err(invalid(format!(
                "schema_version {} is not supported; this fleetgate reads {KEYRING_SCHEMA_VERSION}",
                file.schema_version
            )));
        }
        let keys = file
            .keys
            .into_iter()
            .map(|k| {
                let public_key = PublicKey::from_hex(&k.public_key)
                    .map_err(|e| invalid(format!("key {:?}: {e}", k.id)))?;
                Ok(TrustedKey {
                    id: k.id,
                    public_key,
                    name: k.name,
                    not_before: k.not_before,
                    not_after: k.not_after,
                })
            })
            .collect::<Result<Vec<_>, KeyringError>>()?;
        let ring = Self {
            version: file.version,
            threshold: file.threshold,
            keys,
        };
        ring.validate(source_name)?;
        Ok(ring)
    }

    /// Reads and validates a trust file.
    ///
    /// # Errors
    /// File errors (including over [`MAX_KEYRING_BYTES`]) or
    /// [`KeyringError::Invalid`].
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let bytes = read_limited(path, MAX_KEYRING_BYTES as u64)?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The trust-file JSON (unsigned).
    #[must_use]
    pub fn to_value(&self) -> Value {
        let file = KeyringFile {
            schema_version: KEYRING_SCHEMA_VERSION,
            version: self.version,
            threshold: self.threshold,
            keys: self
                .keys
                .iter()
                .map(|k| TrustedKeyFile {
                    id: k.id.clone(),
                    public_key: k.public_key.to_hex(),
                    name: k.name.clone(),
                    not_before: k.not_before,
                    not_after: k.not_after,
                })
                .collect(),
        };
        serde_json::to_value(file).unwrap_or(Value::Null)
    }

    /// The trust file bytes, unsigned, ready to write.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.to_value() {
            Value::Object(obj) => render(&obj),
            _ => Vec::new(),
        }
    }

    /// The trust file bytes signed by `keys` (for a rotation: k current keys
    /// and k' of the new ones; more can co-sign later with
    /// [`crate::add_signature`]).
    ///
    /// # Errors
    /// As [`crate::sign_document`].
    pub fn sign(&self, keys: &[&SigningKey]) -> Result<Vec<u8>, SignError> {
        match self.to_value() {
            Value::Object(obj) => Ok(render(&sign_object(&obj, keys)?)),
            _ => Err(SignError::NotAnObject { found: "null" }),
        }
    }

    /// Rotation: accepts `new_signed_keyring_bytes` only when it is a valid
    /// trust file with a higher `version`, signed by at least `threshold` of
    /// **this** keyring's keys (valid at `now`) and by at least its own
    /// threshold of **its** keys. Returns the new keyring; the caller then
    /// replaces the trust file with those same bytes.
    ///
    /// # Errors
    /// [`KeyringError::NotSignedByCurrent`], [`KeyringError::NotSignedByNew`],
    /// [`KeyringError::NotNewer`], [`KeyringError::Invalid`].
    pub fn rotate(
        &self,
        new_signed_keyring_bytes: &[u8],
        now: u64,
    ) -> Result<Keyring, KeyringError> {
        let obj = crate::document::parse_limited(
            new_signed_keyring_bytes,
            MAX_KEYRING_BYTES,
            "trust file",
        )
        .map_err(|source| KeyringError::NotSignedByCurrent {
            threshold: self.threshold,
            source,
        })?;
        let verified = verify_object(obj, self, now, "trust file").map_err(|source| {
            KeyringError::NotSignedByCurrent {
                threshold: self.threshold,
                source,
            }
        })?;
        let new = Self::from_object(&verified.value, "new keyring")?;
        verify_object(verified.value, &new, now, "trust file").map_err(|source| {
            KeyringError::NotSignedByNew {
                threshold: new.threshold,
                source,
            }
        })?;
        if new.version <= self.version {
            return Err(KeyringError::NotNewer {
                current: self.version,
                new: new.version,
            });
        }
        Ok(new)
    }

    /// Required number of distinct valid signers (k).
    #[must_use]
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Rotation counter.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// All keys.
    #[must_use]
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The key with this id.
    #[must_use]
    pub fn key_by_id(&self, id: &str) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The key with these public key bytes.
    #[must_use]
    pub fn key_by_public(&self, pk: &PublicKey) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.public_key == *pk)
    }
}
