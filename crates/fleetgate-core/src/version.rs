//! Version strings: validated before they reach a path, a command or a message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted version string.
pub const MAX_VERSION_LEN: usize = 128;

/// A validated version: semver with an optional leading `v` (`v2.1.0`, `1.0.0-rc.1+b7`),
/// or `auto-<unix seconds>` as HART generates when no tag describes the commit.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid version {value:?}: {reason} (expected semver such as `v1.2.3` or `auto-<unix seconds>`)"
)]
pub struct VersionError {
    /// The offending input (truncated to a printable length).
    pub value: String,
    /// What was wrong with it.
    pub reason: String,
}

impl Version {
    /// Validate a version string.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let err = |reason: &str| VersionError {
            value: s.chars().take(MAX_VERSION_LEN).collect(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > MAX_VERSION_LEN {
            return Err(err("it is longer than 128 bytes"));
        }
        if let Some(ts) = s.strip_prefix("auto-") {
            if !ts.is_empty() && ts.len() <= 12 && ts.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(Version(s.to_owned()));
            }
            return Err(err(
                "`auto-` must be followed by unix seconds (digits only)",
            ));
        }
        let bare = s.strip_prefix('v').unwrap_or(s);
        match semver::Version::parse(bare) {
            Ok(_) => Ok(Version(s.to_owned())),
            Err(e) => Err(err(&format!("not semver: {e}"))),
        }
    }

    /// The version as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The semver value, if this is not an `auto-` version.
    pub fn semver(&self) -> Option<semver::Version> {
        semver::Version::parse(self.0.strip_prefix('v').unwrap_or(&self.0)).ok()
    }
}

impl TryFrom<String> for Version {
    type Error = VersionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Version::parse(&value)
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_semver_and_auto() {
        for ok in ["1.0.0", "v2.0.0", "v1.2.3-rc.1+build.5", "auto-1771864669"] {
            assert_eq!(Version::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_anything_that_could_escape_a_path_or_command() {
        for bad in [
            "",
            "v2.0",
            "../../etc/passwd",
            "1.0.0; rm -rf /",
            "v1.0.0/../x",
            "auto-",
            "auto-12a",
            "V1.0.0",
            "1.0.0\n",
            "vv1.0.0",
        ] {
            let e = Version::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid version"), "{bad:?}: {e}");
        }
        assert!(Version::parse(&"1".repeat(200)).is_err());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Version>("\"v1.0.0\"").is_ok());
        assert!(serde_json::from_str::<Version>("\"../x\"").is_err());
    }
}
