//! The code hash: [`fleetgate_codehash`], re-exported here so `fleetgate_runtime::codehash`
//! keeps naming the one definition (see that crate for the exact bytes of both schemes),
//! plus what needs the runtime's clean checkout: [`hart_code_hash_at`] (HART's scheme over
//! a checkout of a commit) and [`code_hash_with`] (either scheme for a revision).
//!
//! The fallible functions keep returning [`RuntimeError`] here (thin wrappers that shadow
//! the re-exported ones): a [`CodeHashError`] becomes [`RuntimeError::CodeHash`], with
//! the same message.

use crate::RuntimeError;
pub use fleetgate_codehash::*;
use fleetgate_core::config::CodeHashConfig as PipelineCodeHash;
use std::path::Path;

/// The code hash crate's filter for the orchestrator's `[code_hash]` table.
#[must_use]
pub fn filter_of(cfg: &PipelineCodeHash) -> CodeHashConfig {
    CodeHashConfig {
        include: cfg.include.clone(),
        exclude: cfg.exclude.clone(),
    }
}

/// The manifest's scheme for the configured one.
#[must_use]
pub fn scheme_of(cfg: fleetgate_core::config::HashScheme) -> HashScheme {
    match cfg {
        fleetgate_core::config::HashScheme::Git => HashScheme::Git,
        fleetgate_core::config::HashScheme::Hart => HashScheme::Hart,
    }
}

/// Resolve a revision (tag, branch, sha, `HEAD`) to a full commit id
/// ([`fleetgate_codehash::resolve_commit`]).
///
/// # Errors
/// The repository cannot be opened or `rev` is not a commit in it.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<String, RuntimeError> {
    Ok(fleetgate_codehash::resolve_commit(repo, rev)?)
}

/// The `git` scheme's code hash of `rev` in the repository at `repo`
/// ([`fleetgate_codehash::code_hash_at`]).
///
/// # Errors
/// As [`fleetgate_codehash::code_hash_at`].
pub fn code_hash_at(
    repo: &Path,
    rev: &str,
    cfg: &PipelineCodeHash,
) -> Result<CodeHash, RuntimeError> {
    Ok(fleetgate_codehash::code_hash_at(
        repo,
        rev,
        &filter_of(cfg),
    )?)
}

/// HART's code hash of the tree at `root` on disk
/// ([`fleetgate_codehash::hart_code_hash_dir`]).
///
/// # Errors
/// As [`fleetgate_codehash::hart_code_hash_dir`].
pub fn hart_code_hash_dir(root: &Path, commit: String) -> Result<CodeHash, RuntimeError> {
    Ok(fleetgate_codehash::hart_code_hash_dir(root, commit)?)
}

/// HART's code hash of commit `rev` of `repo`: a clean checkout of the commit is made at
/// `scratch` (replacing whatever is there), hashed on disk, and removed.
///
/// # Errors
/// The commit cannot be resolved or checked out, or as [`hart_code_hash_dir`].
pub fn hart_code_hash_at(repo: &Path, rev: &str, scratch: &Path) -> Result<CodeHash, RuntimeError> {
    let sha = resolve_commit(repo, rev)?;
    let dir = crate::checkout::checkout(repo, &sha, scratch, true)?;
    let result = hart_code_hash_dir(&dir, sha);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "failed to remove the hash checkout");
    }
    result
}

/// The code hash of `rev` under `scheme`: [`code_hash_at`] for `git` (with `cfg`'s
/// globs), [`hart_code_hash_at`] for `hart` (checked out at `scratch`).
///
/// # Errors
/// As the scheme's function.
pub fn code_hash_with(
    scheme: HashScheme,
    repo: &Path,
    rev: &str,
    cfg: &PipelineCodeHash,
    scratch: &Path,
) -> Result<CodeHash, RuntimeError> {
    match scheme {
        HashScheme::Git => code_hash_at(repo, rev, cfg),
        HashScheme::Hart => hart_code_hash_at(repo, rev, scratch),
    }
}
