//! Ed25519 keys: generation, loading (file or environment), `keygen`, key ids.
//!
//! A secret key is stored the way HART's `MASTER_PRIVATE_KEY_HEX` holds it:
//! the 32-byte Ed25519 seed as 64 hex characters (surrounding whitespace is
//! ignored). The secret is zeroized on drop, never formatted by `Debug`, and
//! never quoted in an error message.
//!
//! A **key id** is the first 16 hex characters (8 bytes) of
//! `sha256(public key bytes)`, lowercase: see [`key_id`].

use crate::fsutil::{FsError, atomic_write, read_limited};
use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize as _, Zeroizing};

/// Env var read first by [`SigningKey::from_env`].
pub const ENV_SIGNING_KEY: &str = "FLEETGATE_SIGNING_KEY_HEX";
/// HART's env var, read second by [`SigningKey::from_env`].
pub const ENV_HART_SIGNING_KEY: &str = "MASTER_PRIVATE_KEY_HEX";
/// Every env var [`SigningKey::from_env`] reads, in order: fleetgate's own name, then
/// HART's (`MASTER_PRIVATE_KEY_HEX` of its CI, `HEVOLVE_MASTER_PRIVATE_KEY_HEX`,
/// `HEVOLVE_MASTER_PRIVATE_KEY` of its runtime; all hold the seed as 64 hex). Processes
/// that run other code (gate commands) get none of them.
pub const SIGNING_KEY_ENV_VARS: &[&str] = &[
    ENV_SIGNING_KEY,
    ENV_HART_SIGNING_KEY,
    "HEVOLVE_MASTER_PRIVATE_KEY_HEX",
    "HEVOLVE_MASTER_PRIVATE_KEY",
];
/// Largest secret-key file accepted.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret is not 64 hex characters (the secret itself is never shown).
    #[error(
        "load signing key from {source_name}: {reason} (expected the 32-byte Ed25519 seed as 64 hex characters)"
    )]
    BadSecret {
        /// Where it came from: a path or an env var name.
        source_name: String,
        /// What is wrong, without the secret.
        reason: String,
    },
    /// A public key that is not 64 hex characters or not a curve point.
    #[error("parse public key {value:?}: {reason}")]
    BadPublicKey {
        /// The offending text (public, safe to show).
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// No key file given and neither env var set.
    #[error(
        "find a signing key: no key file given and neither ${ENV_SIGNING_KEY} nor ${ENV_HART_SIGNING_KEY} is set; create one with `fleetgate keygen --out PATH`"
    )]
    NoKey,
    /// `keygen` would overwrite an existing file.
    #[error("write key to {}: the file exists; pass --force to replace it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The OS random generator failed.
    #[error("generate a key: the OS random generator failed: {0}")]
    Random(String),
    /// Reading or writing a key file failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Key id of a public key: the first 16 lowercase hex characters of
/// `sha256(public_key_bytes)`.
#[must_use]
pub fn key_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(&digest[..8])
}

/// A trusted (verifying) Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parses 64 hex characters (whitespace around them ignored).
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] when it is not hex, not 32 bytes, or not a
    /// valid curve point.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::BadPublicKey {
            value: text.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        if trimmed.len() != 64 {
            return Err(bad("not 64 hex characters"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(trimmed, &mut bytes).map_err(|_| bad("not hex"))?;
        Self::from_bytes(&bytes).map_err(|_| bad("not a valid Ed25519 point"))
    }

    /// From the 32 raw bytes.
    ///
    /// # Errors
    /// When the bytes do not decode to a curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ed25519_dalek::SignatureError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).map(Self)
    }

    /// The 32 raw bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Lowercase hex of the 32 bytes.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// This key's id, see [`key_id`].
    #[must_use]
    pub fn key_id(&self) -> String {
        key_id(self.0.as_bytes())
    }

    /// Strict Ed25519 verification (`verify_strict`: canonical `S`, no
    /// small-order `R` or key).
    ///
    /// # Errors
    /// When the signature does not verify.
    pub fn verify_strict(
        &self,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), ed25519_dalek::SignatureError> {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// A secret Ed25519 signing key. Zeroized on drop; `Debug` shows only the
/// public half.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A fresh key from the OS random generator (`getrandom`).
    ///
    /// # Errors
    /// [`KeyError::Random`] when the OS generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// From the 32-byte seed.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// From the seed as 64 hex characters (HART's `MASTER_PRIVATE_KEY_HEX`).
    /// `source_name` only labels errors (a path or env var name).
    ///
    /// # Errors
    /// [`KeyError::BadSecret`]; the message never contains the secret.
    pub fn from_seed_hex(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadSecret {
            source_name: source_name.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.len() != 64 {
            return Err(bad(format!(
                "it is {} characters long, not 64",
                trimmed.chars().count()
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(trimmed, &mut *seed)
            .map_err(|_| bad("it contains a non-hex character".to_owned()))?;
        Ok(Self::from_seed(&seed))
    }

    /// Reads a seed-hex key file (at most [`MAX_KEY_FILE_BYTES`]).
    ///
    /// # Errors
    /// File errors, or [`KeyError::BadSecret`].
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(read_limited(path, MAX_KEY_FILE_BYTES)?);
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::BadSecret {
            source_name: path.display().to_string(),
            reason: "it is not UTF-8 text".to_owned(),
        })?;
        Self::from_seed_hex(text, &path.display().to_string())
    }

    /// Reads the first set of [`SIGNING_KEY_ENV_VARS`]: `$FLEETGATE_SIGNING_KEY_HEX`, else
    /// HART's `$MASTER_PRIVATE_KEY_HEX`, `$HEVOLVE_MASTER_PRIVATE_KEY_HEX`,
    /// `$HEVOLVE_MASTER_PRIVATE_KEY`. `Ok(None)` when none is set (or all are empty).
    /// Read from the [`crate::secret_env`] vault when the process sealed them.
    ///
    /// # Errors
    /// [`KeyError::BadSecret`] when the first set variable is not a seed.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        for &name in SIGNING_KEY_ENV_VARS {
            if crate::secret_env::is_sealed(name) || std::env::var_os(name).is_some() {
                let Some(mut value) = crate::secret_env::var(name) else {
                    return Err(KeyError::BadSecret {
                        source_name: format!("${name}"),
                        reason: "it is not UTF-8".to_owned(),
                    });
                };
                if value.trim().is_empty() {
                    value.zeroize();
                    continue;
                }
                return Self::from_seed_hex(&value, &format!("${name}")).map(Some);
            }
        }
        Ok(None)
    }

    /// The key file when given, else the env vars, else [`KeyError::NoKey`].
    ///
    /// # Errors
    /// As [`Self::from_file`] / [`Self::from_env`], or [`KeyError::NoKey`].
    pub fn load(key_file: Option<&Path>) -> Result<Self, KeyError> {
        match key_file {
            Some(path) => Self::from_file(path),
            None => Self::from_env()?.ok_or(KeyError::NoKey),
        }
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Lowercase hex of the public key.
    #[must_use]
    pub fn public_key_hex(&self) -> String {
        self.public_key().to_hex()
    }

    /// Id of the public key, see [`key_id`].
    #[must_use]
    pub fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    /// Ed25519 signature over `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    fn seed_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

/// What [`keygen`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenOutput {
    /// The secret seed file (mode 0600).
    pub secret_path: PathBuf,
    /// `<secret_path>.pub`, the public key hex.
    pub public_path: PathBuf,
    /// Public key hex.
    pub public_key_hex: String,
    /// Key id.
    pub key_id: String,
}

/// `<path>.pub`.
#[must_use]
pub fn public_path_for(secret_path: &Path) -> PathBuf {
    let mut os = secret_path.as_os_str().to_owned();
    os.push(".pub");
    PathBuf::from(os)
}

/// Generates a key and writes the seed hex to `out` (created with mode 0600
/// in a temp file beside it, fsynced, renamed into place — never readable by
/// others, not even briefly) and the public key hex to `out.pub` (0644).
/// Refuses to overwrite an existing `out` unless `force`.
///
/// # Errors
/// [`KeyError::Exists`], [`KeyError::Random`], or file errors.
pub fn keygen(out: &Path, force: bool) -> Result<KeygenOutput, KeyError> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(KeyError::Exists {
            path: out.to_owned(),
        });
    }
    let key = SigningKey::generate()?;
    let mut secret = key.seed_hex();
    secret.push('\n');
    crate::fsutil::ensure_parent_dir(out)?;
    atomic_write(out, secret.as_bytes(), 0o600)?;
    let public_path = public_path_for(out);
    let public_key_hex = key.public_key_hex();
    atomic_write(
        &public_path,
        format!("{public_key_hex}\n").as_bytes(),
        0o644,
    )?;
    Ok(KeygenOutput {
        secret_path: out.to_owned(),
        public_path,
        public_key_hex,
        key_id: key.key_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keygen_makes_a_private_directory_for_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys/nested/release.key");
        keygen(&out, false).unwrap();
        let meta = std::fs::metadata(dir.path().join("keys")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let key = std::fs::metadata(&out).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        let key = SigningKey::from_seed(&[7u8; 32]);
        let full = hex::encode(Sha256::digest(key.public_key().to_bytes()));
        assert_eq!(key.key_id(), full[..16]);
        assert_eq!(key.key_id().len(), 16);
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = SigningKey::from_seed(&[0xab; 32]);
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&"ab".repeat(32)), "{dbg}");
        assert!(dbg.contains(&key.public_key_hex()));
    }

    #[test]
    fn bad_secret_errors_do_not_quote_it() {
        let secret = format!("{}zz", "a".repeat(62));
        let err = SigningKey::from_seed_hex(&secret, "$X")
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&secret[..20]), "{err}");
        assert!(err.contains("non-hex"), "{err}");
        let err = SigningKey::from_seed_hex("abcd", "$X")
            .unwrap_err()
            .to_string();
        assert!(err.contains("4 characters long"), "{err}");
    }

    #[test]
    fn keygen_writes_0600_secret_and_pub_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("release.key");
        let made = keygen(&out, false).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SigningKey::from_file(&out).unwrap();
        assert_eq!(loaded.public_key_hex(), made.public_key_hex);
        let pubtext = std::fs::read_to_string(dir.path().join("release.key.pub")).unwrap();
        assert_eq!(pubtext.trim(), made.public_key_hex);
        assert!(matches!(keygen(&out, false), Err(KeyError::Exists { .. })));
        let again = keygen(&out, true).unwrap();
        assert_ne!(again.public_key_hex, made.public_key_hex);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
