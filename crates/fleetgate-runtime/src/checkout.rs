//! Clean checkouts: gate commands run in a fresh clone of the release commit under the
//! state directory, never in the operator's working copy (which may hold edits).

use crate::RuntimeError;
use std::path::{Path, PathBuf};

/// Make a checkout of `sha` at `dest`. With `fresh`, any existing directory is replaced
/// by a new clone (BUILD starts from a pristine tree, also after a crash); otherwise an
/// existing checkout at the same commit is reused, so later gates see the build's output.
pub fn checkout(repo: &Path, sha: &str, dest: &Path, fresh: bool) -> Result<PathBuf, RuntimeError> {
    if dest.exists() {
        if !fresh
            && let Ok(r) = git2::Repository::open(dest)
            && r.head()
                .ok()
                .and_then(|h| h.target())
                .map(|o| o.to_string())
                .as_deref()
                == Some(sha)
        {
            return Ok(dest.to_owned());
        }
        std::fs::remove_dir_all(dest)
            .map_err(|e| RuntimeError::io("remove stale checkout", dest, e))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io("create", parent, e))?;
    }
    let src = repo
        .canonicalize()
        .map_err(|e| RuntimeError::io("resolve", repo, e))?;
    let url = src.to_string_lossy().into_owned();
    let tmp = dest.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| RuntimeError::io("remove", &tmp, e))?;
    }
    let r = git2::build::RepoBuilder::new()
        .clone(&url, &tmp)
        .map_err(|e| {
            RuntimeError::Git(format!(
                "failed to clone {url} into {}: {}",
                tmp.display(),
                e.message()
            ))
        })?;
    let oid = git2::Oid::from_str(sha)
        .map_err(|e| RuntimeError::Git(format!("bad commit id {sha:?}: {}", e.message())))?;
    r.find_commit(oid).map_err(|e| {
        RuntimeError::Git(format!(
            "commit {sha} is not reachable from any ref of {url}: {}",
            e.message()
        ))
    })?;
    r.set_head_detached(oid)
        .map_err(|e| RuntimeError::git(&tmp, "detach HEAD", e))?;
    r.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .map_err(|e| RuntimeError::git(&tmp, "check out", e))?;
    drop(r);
    std::fs::rename(&tmp, dest)
        .map_err(|e| RuntimeError::io("move checkout into place at", dest, e))?;
    Ok(dest.to_owned())
}
