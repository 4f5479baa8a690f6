//! The anti-rollback floor: the highest release sequence a node (or
//! orchestrator) has committed to, and the last wall-clock time it verified
//! a manifest, persisted in a state directory.
//!
//! File `<dir>/trust_floor.json`:
//! `{"schema_version": 1, "sequence": 42, "last_verified_at": 1767225600}`.
//! Written atomically (temp file in the same directory, fsync, rename, fsync
//! of the directory). A missing file means floor 0; a corrupt one is an
//! error, never silently reset. One writer at a time: the caller holds the
//! state directory's lock.
//!
//! Clock policy: a clock that is behind `last_verified_at` is **reported,
//! not fatal** ([`Floor::clock_stepped_back_by`], and
//! [`crate::VerifiedManifest::clock_stepped_back_by`]), and verification
//! uses `max(now, last_verified_at)` as the time, so a clock stepped
//! backward can neither revive an expired manifest nor brick the node.

use crate::error::VerifyError;
use crate::fsutil::{FsError, atomic_write, read_limited};
use crate::manifest::{Manifest, VerifyOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name inside the floor directory.
pub const FLOOR_FILE: &str = "trust_floor.json";
/// Floor file format version.
pub const FLOOR_SCHEMA_VERSION: u32 = 1;
const MAX_FLOOR_BYTES: u64 = 4096;

/// Why the floor could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// File system error.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The floor file exists but is not valid; it is left in place.
    #[error("read anti-rollback floor {}: {reason}; it was left untouched — inspect it, or restore it from a backup", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Committing a sequence lower than the floor.
    #[error(
        "raise anti-rollback floor: sequence {requested} is below the committed floor {current}"
    )]
    Regression {
        /// Current floor.
        current: u64,
        /// Requested sequence.
        requested: u64,
    },
    /// The directory could not be created.
    #[error("create anti-rollback floor directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorFile {
    schema_version: u32,
    sequence: u64,
    last_verified_at: u64,
}

/// The persisted anti-rollback floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    path: PathBuf,
    sequence: u64,
    last_verified_at: u64,
}

impl Floor {
    /// Opens (creating the directory if needed) the floor in `dir`.
    ///
    /// # Errors
    /// [`FloorError::Corrupt`] for an invalid file; file errors.
    pub fn open(dir: &Path) -> Result<Self, FloorError> {
        std::fs::create_dir_all(dir).map_err(|source| FloorError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FLOOR_FILE);
        if !path.exists() {
            return Ok(Self {
                path,
                sequence: 0,
                last_verified_at: 0,
            });
        }
        let bytes = read_limited(&path, MAX_FLOOR_BYTES)?;
        let corrupt = |reason: String| FloorError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: FloorFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.schema_version != FLOOR_SCHEMA_VERSION {
            return Err(corrupt(format!(
                "schema_version {} is not supported; this fleetgate reads {FLOOR_SCHEMA_VERSION}",
                file.schema_version
            )));
        }
        Ok(Self {
            path,
            sequence: file.sequence,
            last_verified_at: file.last_verified_at,
        })
    }

    /// Highest committed sequence (0 when none).
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Last verified wall-clock time (unix seconds; 0 when none).
    #[must_use]
    pub fn last_verified_at(&self) -> u64 {
        self.last_verified_at
    }

    /// The floor file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Options that make [`crate::verify_manifest`] enforce this floor and
    /// clock policy.
    #[must_use]
    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            floor: Some(self.sequence),
            last_verified_at: Some(self.last_verified_at),
            allow_legacy_hart: false,
        }
    }

    /// Refuses a manifest whose sequence is not above the floor. The rule is
    /// the same for both kinds: a `release` must be newer than anything
    /// committed, and a `rollback` — although it returns to an older
    /// *version* — must carry a new, higher *sequence*.
    ///
    /// # Errors
    /// [`VerifyError::Replayed`].
    pub fn check(&self, manifest: &Manifest) -> Result<(), VerifyError> {
        if manifest.sequence <= self.sequence {
            return Err(VerifyError::Replayed {
                sequence: manifest.sequence,
                floor: self.sequence,
            });
        }
        Ok(())
    }

    /// Seconds the clock `now` is behind the last verified time, if it is.
    #[must_use]
    pub fn clock_stepped_back_by(&self, now: u64) -> Option<u64> {
        (self.last_verified_at > now).then(|| self.last_verified_at - now)
    }

    /// Raises the floor to `sequence` (equal is a no-op for the sequence)
    /// and records `now` as verified (never lowering it), durably.
    ///
    /// # Errors
    /// [`FloorError::Regression`] when `sequence` is below the floor; file
    /// errors (the floor in memory is then unchanged).
    pub fn commit(&mut self, sequence: u64, now: u64) -> Result<(), FloorError> {
        if sequence < self.sequence {
            return Err(FloorError::Regression {
                current: self.sequence,
                requested: sequence,
            });
        }
        self.persist(sequence, self.last_verified_at.max(now))
    }

    /// Records `now` as the last verified time without changing the
    /// sequence.
    ///
    /// # Errors
    /// File errors.
    pub fn record_verified(&mut self, now: u64) -> Result<(), FloorError> {
        self.persist(self.sequence, self.last_verified_at.max(now))
    }

    fn persist(&mut self, sequence: u64, last_verified_at: u64) -> Result<(), FloorError> {
        let file = FloorFile {
            schema_version: FLOOR_SCHEMA_VERSION,
            sequence,
            last_verified_at,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        atomic_write(&self.path, &bytes, 0o644)?;
        self.sequence = sequence;
        self.last_verified_at = last_verified_at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(seq: u64) -> Manifest {
        Manifest {
            sequence: seq,
            ..Manifest::default()
        }
    }

    #[test]
    fn floor_persists_and_rejects_old_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let mut floor = Floor::open(dir.path()).unwrap();
        assert_eq!(floor.sequence(), 0);
        floor.check(&manifest(1)).unwrap();
        floor.commit(5, 1000).unwrap();
        let reopened = Floor::open(dir.path()).unwrap();
        assert_eq!(
            (reopened.sequence(), reopened.last_verified_at()),
            (5, 1000)
        );
        assert_eq!(
            reopened.check(&manifest(5)),
            Err(VerifyError::Replayed {
                sequence: 5,
                floor: 5
            })
        );
        assert!(reopened.check(&manifest(4)).is_err());
        reopened.check(&manifest(6)).unwrap();
        let mut rollback = manifest(5);
        rollback.kind = crate::ManifestKind::Rollback;
        assert!(
            reopened.check(&rollback).is_err(),
            "a rollback needs a higher sequence too"
        );
        assert!(matches!(
            floor.commit(3, 2000),
            Err(FloorError::Regression {
                current: 5,
                requested: 3
            })
        ));
        assert_eq!(floor.clock_stepped_back_by(900), Some(100));
        assert_eq!(floor.clock_stepped_back_by(1000), None);
        floor.commit(5, 10).unwrap();
        assert_eq!(floor.last_verified_at(), 1000, "never lowered");
    }

    #[test]
    fn corrupt_floor_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FLOOR_FILE), b"{not json").unwrap();
        let err = Floor::open(dir.path()).unwrap_err();
        assert!(matches!(err, FloorError::Corrupt { .. }), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(FLOOR_FILE)).unwrap(),
            b"{not json"
        );
    }
}
