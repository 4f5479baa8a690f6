//! Code hash: SHA-256 over sorted `relpath:sha256(file)` lines (HART's scheme) over the
//! files git tracks at a commit, read from the commit's tree with git2 (never from a
//! working copy, so local edits cannot leak into a release).
//!
//! Exact definition (also in README): for every blob in the commit's tree whose path passes
//! the include/exclude globs, the line `"{path}:{hex(sha256(content))}\n"` where `path` is
//! the `/`-separated path relative to the repository root; the lines are sorted by the
//! path's bytes; `code_hash = hex(sha256(concatenation))`. A symlink contributes the
//! SHA-256 of its target string; a submodule contributes its commit id as the hash.
//! `file_manifest_hash = hex(sha256(json))` where `json` is the compact JSON object
//! `{path: sha256, …}` with sorted keys (Python's `json.dumps(sort_keys=True,
//! separators=(',', ':'))`).

use crate::RuntimeError;
use fleetgate_core::config::CodeHashConfig;
use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The hashes of one commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodeHash {
    /// The commit hashed.
    pub commit: String,
    /// SHA-256 over the sorted lines.
    pub code_hash: String,
    /// SHA-256 of the JSON file manifest.
    pub file_manifest_hash: String,
    /// path → sha256 of every file hashed.
    pub files: BTreeMap<String, String>,
}

fn globset(patterns: &[String], key: &str) -> Result<Option<GlobSet>, RuntimeError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| {
            RuntimeError::Config(format!("invalid glob {p:?} in code_hash.{key}: {e}"))
        })?);
    }
    b.build()
        .map(Some)
        .map_err(|e| RuntimeError::Config(format!("invalid globs in code_hash.{key}: {e}")))
}

/// Resolve a revision (tag, branch, sha, `HEAD`) to a full commit id.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<String, RuntimeError> {
    let r =
        git2::Repository::open(repo).map_err(|e| RuntimeError::git(repo, "open repository", e))?;
    let obj = r.revparse_single(rev).map_err(|e| {
        RuntimeError::Git(format!(
            "failed to resolve {rev:?} in {}: {}",
            repo.display(),
            e.message()
        ))
    })?;
    let commit = obj.peel_to_commit().map_err(|e| {
        RuntimeError::Git(format!(
            "{rev:?} in {} is not a commit: {}",
            repo.display(),
            e.message()
        ))
    })?;
    Ok(commit.id().to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compute the code hash of `rev` in the repository at `repo`.
pub fn code_hash_at(
    repo: &Path,
    rev: &str,
    cfg: &CodeHashConfig,
) -> Result<CodeHash, RuntimeError> {
    let r =
        git2::Repository::open(repo).map_err(|e| RuntimeError::git(repo, "open repository", e))?;
    let commit = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            RuntimeError::Git(format!(
                "failed to resolve commit {rev:?} in {}: {}",
                repo.display(),
                e.message()
            ))
        })?;
    let include = globset(&cfg.include, "include")?;
    let exclude = globset(&cfg.exclude, "exclude")?;
    let tree = commit
        .tree()
        .map_err(|e| RuntimeError::git(repo, "read tree", e))?;
    let mut entries: Vec<(String, git2::Oid, i32)> = Vec::new();
    let mut non_utf8: Option<String> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if matches!(
            entry.kind(),
            Some(git2::ObjectType::Blob) | Some(git2::ObjectType::Commit)
        ) {
            match std::str::from_utf8(entry.name_bytes()) {
                Ok(name) => entries.push((format!("{root}{name}"), entry.id(), entry.filemode())),
                Err(_) => {
                    non_utf8 = Some(format!(
                        "{root}{}",
                        String::from_utf8_lossy(entry.name_bytes())
                    ));
                    return git2::TreeWalkResult::Abort;
                }
            }
        }
        git2::TreeWalkResult::Ok
    })
    .or_else(|e| if non_utf8.is_some() { Ok(()) } else { Err(e) })
    .map_err(|e| RuntimeError::git(repo, "walk tree", e))?;
    if let Some(path) = non_utf8 {
        return Err(RuntimeError::Git(format!(
            "tracked file name {path:?} at {rev} is not UTF-8; the code hash cannot include it (exclude it or rename it)"
        )));
    }
    let mut files = BTreeMap::new();
    for (path, oid, mode) in entries {
        if include.as_ref().is_some_and(|g| !g.is_match(&path))
            || exclude.as_ref().is_some_and(|g| g.is_match(&path))
        {
            continue;
        }
        let digest = if mode == 0o160000 {
            oid.to_string()
        } else {
            let blob = r
                .find_blob(oid)
                .map_err(|e| RuntimeError::git(repo, "read blob", e))?;
            sha256_hex(blob.content())
        };
        files.insert(path, digest);
    }
    Ok(hash_files(commit.id().to_string(), files))
}

/// Build the [`CodeHash`] of a path → sha256 map.
pub fn hash_files(commit: String, files: BTreeMap<String, String>) -> CodeHash {
    let mut lines = String::new();
    let mut keys: Vec<&String> = files.keys().collect();
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for k in &keys {
        lines.push_str(k);
        lines.push(':');
        lines.push_str(&files[*k]);
        lines.push('\n');
    }
    let object: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    // Strings only: canonicalisation cannot fail (it refuses floats alone).
    let manifest =
        fleetgate_trust::to_canonical_bytes(&serde_json::Value::Object(object)).unwrap_or_default();
    CodeHash {
        commit,
        code_hash: sha256_hex(lines.as_bytes()),
        file_manifest_hash: sha256_hex(&manifest),
        files,
    }
}

/// SHA-256 of a file on disk (guardrail pins).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(sha256_hex(&std::fs::read(path)?))
}
