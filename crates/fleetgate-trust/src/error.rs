//! [`VerifyError`]: every reason a signed document or manifest is refused,
//! each with its own process exit code.

/// Why a signed document (manifest, keyring, certificate) was refused.
///
/// Exit codes (see [`VerifyError::exit_code`]) — stable, documented in the
/// crate docs and README:
///
/// | code | variant | name |
/// |---|---|---|
/// | 10 | `TooLarge` | `too_large` |
/// | 11 | `Malformed` | `malformed` |
/// | 12 | `Unsigned` | `unsigned` |
/// | 13 | `BadSignature` | `bad_signature` |
/// | 14 | `UnknownKey` | `unknown_key` |
/// | 15 | `BelowThreshold` | `below_threshold` |
/// | 16 | `Expired` | `expired` |
/// | 17 | `NotYetValid` | `not_yet_valid` |
/// | 18 | `Replayed` | `replayed` |
/// | 19 | `DevMode` | `dev_mode` |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Larger than the limit; refused before parsing.
    #[error(
        "verify {what}: it is {size} bytes, over the {limit}-byte limit (refused before parsing)"
    )]
    TooLarge {
        /// "manifest", "document", "trust file".
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Not JSON, not an object, a duplicate key, a float in signed data, a
    /// missing or ill-typed field, a signature that is not 128 hex chars.
    #[error("verify {what}: it is malformed: {reason}")]
    Malformed {
        /// "manifest", "document", "trust file".
        what: &'static str,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// No `master_signature` (or an empty one) and no `signatures`.
    #[error(
        "verify {what}: it carries no signature (neither master_signature nor signatures is set)"
    )]
    Unsigned {
        /// "manifest", "document", "trust file".
        what: &'static str,
    },
    /// A signature made by a known key does not match the content: the
    /// document was changed after signing, or the signature was.
    #[error(
        "verify {what}: the signature by key {key_id} does not match the signed content (tampered or corrupted)"
    )]
    BadSignature {
        /// "manifest", "document", "trust file".
        what: &'static str,
        /// Key id the signature claims, or `?` when it matched no key.
        key_id: String,
    },
    /// Signed by a key that is not in the trust file.
    #[error(
        "verify {what}: it is signed by key {key_id}, which is not in the trust file; add the key (see key rotation) or use the right trust file"
    )]
    UnknownKey {
        /// The unknown key's id.
        key_id: String,
        /// "manifest", "document", "trust file".
        what: &'static str,
    },
    /// Fewer distinct trusted keys signed than the threshold.
    #[error(
        "verify {what}: {valid} distinct trusted key(s) signed it, the trust file requires {threshold}{detail}"
    )]
    BelowThreshold {
        /// "manifest", "document", "trust file".
        what: &'static str,
        /// Distinct valid trusted signers.
        valid: usize,
        /// Required k.
        threshold: usize,
        /// Other signature problems, "; …" or empty.
        detail: String,
    },
    /// `expires_at` is not in the future.
    #[error(
        "verify manifest: it expired at {expires_at} (unix seconds); the time now is {now}; sign a fresh manifest"
    )]
    Expired {
        /// The manifest's `expires_at`.
        expires_at: u64,
        /// The verification time.
        now: u64,
    },
    /// The signing key is outside its validity window, or the manifest was
    /// built in the future.
    #[error("verify {what}: it is not valid at time {now}: {reason}")]
    NotYetValid {
        /// "manifest", "document", "trust file".
        what: &'static str,
        /// The verification time.
        now: u64,
        /// Which key or field, and its window.
        reason: String,
    },
    /// Sequence not above the anti-rollback floor.
    #[error(
        "verify manifest: its sequence {sequence} is not above the anti-rollback floor {floor} (a replayed or older release; a rollback must carry a new, higher sequence)"
    )]
    Replayed {
        /// The manifest's sequence.
        sequence: u64,
        /// The highest sequence already committed.
        floor: u64,
    },
    /// A dev-mode (unsigned) manifest; never accepted.
    #[error(
        "verify manifest: it is a dev-mode manifest (dev_mode marker present), which no verifier accepts"
    )]
    DevMode,
}

impl VerifyError {
    /// Process exit code for this refusal (10..=19, one per variant).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::TooLarge { .. } => 10,
            Self::Malformed { .. } => 11,
            Self::Unsigned { .. } => 12,
            Self::BadSignature { .. } => 13,
            Self::UnknownKey { .. } => 14,
            Self::BelowThreshold { .. } => 15,
            Self::Expired { .. } => 16,
            Self::NotYetValid { .. } => 17,
            Self::Replayed { .. } => 18,
            Self::DevMode => 19,
        }
    }

    /// Stable snake_case name for JSON output.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed { .. } => "malformed",
            Self::Unsigned { .. } => "unsigned",
            Self::BadSignature { .. } => "bad_signature",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BelowThreshold { .. } => "below_threshold",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Replayed { .. } => "replayed",
            Self::DevMode => "dev_mode",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_in_range() {
        let all = [
            VerifyError::TooLarge {
                what: "m",
                size: 1,
                limit: 0,
            },
            VerifyError::Malformed {
                what: "m",
                reason: String::new(),
            },
            VerifyError::Unsigned { what: "m" },
            VerifyError::BadSignature {
                what: "m",
                key_id: String::new(),
            },
            VerifyError::UnknownKey {
                what: "m",
                key_id: String::new(),
            },
            VerifyError::BelowThreshold {
                what: "m",
                valid: 0,
                threshold: 1,
                detail: String::new(),
            },
            VerifyError::Expired {
                expires_at: 0,
                now: 0,
            },
            VerifyError::NotYetValid {
                what: "m",
                now: 0,
                reason: String::new(),
            },
            VerifyError::Replayed {
                sequence: 0,
                floor: 0,
            },
            VerifyError::DevMode,
        ];
        let codes: std::collections::BTreeSet<u8> =
            all.iter().map(VerifyError::exit_code).collect();
        assert_eq!(codes, (10..=19).collect());
        let names: std::collections::BTreeSet<&str> = all.iter().map(VerifyError::name).collect();
        assert_eq!(names.len(), 10);
    }
}
