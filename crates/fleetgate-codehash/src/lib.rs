//! # fleetgate-codehash — the code hash, one definition
//!
//! **Where it sits.** Under the orchestrator runtime (the BUILD gate, provisioning, `fleetgate
//! manifest`; re-exported there as `fleetgate_runtime::codehash`) and the node agent (which
//! checks every slot it checks out against the manifest's hash). Both must compute the same
//! bytes, so the definition lives here, once, and depends only on `fleetgate-core` (the
//! `[code_hash]` config), `fleetgate-trust` (the manifest's [`HashScheme`], canonical JSON),
//! git2, globset and sha2 — an agent-only build does not pull the orchestrator for it.
//!
//! **What it owns.** The `git` scheme ([`code_hash_at`], over the commit's tree; and
//! [`worktree_code_hash`], the same formula over a checkout's bytes on disk, to verify a
//! checkout against a signed code hash in one SHA-256 pass) and HART's
//! scheme over a directory on disk ([`hart_code_hash_dir`]); the runtime adds
//! `hart_code_hash_at` (a clean checkout of a commit, then [`hart_code_hash_dir`]).
//!
//! **What it must never do.** Let a working copy change the `git` scheme's result (it
//! reads a tracked file from disk only when its bytes are the commit's blob, checked by
//! git blob id, else inflates the blob); skip a file it cannot read; change a byte of either definition (HART compatibility: `tests/hart_compat.rs`
//! of the `fleetgate` package checks it against a Python reimplementation of HART's code).
//!
//! **How to test.** `cargo nextest run -p fleetgate-codehash`, and the callers' tests
//! (`-p fleetgate-runtime`, `-p fleetgate-agent`, the `fleetgate` package's `hart_compat`).
//!
//! ## The definition
//!
//! Code hash: SHA-256 over sorted `relpath:sha256(file)` lines (HART's scheme) over the
//! files git tracks at a commit, as stored in the commit's tree (a working copy's file is
//! used only when its git blob id is the tree's, so local edits cannot leak into a
//! release); files are hashed in parallel.
//!
//! Exact definition (also in README): for every blob in the commit's tree whose path passes
//! the include/exclude globs, the line `"{path}:{hex(sha256(content))}\n"` where `path` is
//! the `/`-separated path relative to the repository root; the lines are sorted by the
//! path's bytes; `code_hash = hex(sha256(concatenation))`. A symlink contributes the
//! SHA-256 of its target string; a submodule contributes its commit id as the hash.
//! `file_manifest_hash = hex(sha256(json))` where `json` is the compact JSON object
//! `{path: sha256, …}` with sorted keys (Python's `json.dumps(sort_keys=True,
//! separators=(',', ':'))`).
//!
//! That is the `git` scheme. The `hart` scheme ([`hart_code_hash_dir`],
//! `[stages.build] hash_scheme = "hart"`) is HART's `compute_code_hash` byte for byte:
//! the files of a directory *on disk* (for a release: a clean checkout of the commit),
//! only regular files (symlinks followed) whose name ends in `.py` (not a bare `.py`),
//! never entering a directory named in [`HART_SKIP_DIRS`] at any depth; lines
//! `"{relpath}:{hex(sha256(bytes))}"` sorted by path, joined with `"\n"` and **no**
//! trailing newline; `code_hash = hex(sha256(lines))`. `file_manifest_hash` is the
//! SHA-256 of Python's `json.dumps({relpath: sha256}, sort_keys=True)` with the
//! *default* separators `", "` and `": "` (ASCII-escaped, `\uXXXX` with surrogate
//! pairs). Unlike HART it fails, rather than skipping silently, on an unreadable file or
//! directory, a symlink to a directory (HART would follow it, even in a loop), and a
//! name that is not UTF-8 or holds a backslash.

pub use fleetgate_trust::HashScheme;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which tracked files the `git` scheme covers: `[code_hash]` of the node's `node.toml`
/// (the orchestrator's `fleetgate.toml` has the same table, parsed by `fleetgate-core`
/// and handed over as this). Defined here, not in the orchestrator's config model, so a
/// node agent links the code hash without the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeHashConfig {
    /// Only tracked files matching one of these globs (empty = all).
    #[serde(default)]
    pub include: Vec<String>,
    /// Tracked files matching one of these globs are left out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Why a code hash could not be computed. The messages name the path, revision or glob.
#[derive(Debug, thiserror::Error)]
pub enum CodeHashError {
    /// I/O on a path (HART's scheme reads files on disk).
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A git operation on the repository.
    #[error("failed to {action} in {}: {}", repo.display(), source.message())]
    Git {
        /// What was being done.
        action: &'static str,
        /// The repository.
        repo: PathBuf,
        /// git's error.
        source: git2::Error,
    },
    /// A revision that does not resolve to a commit.
    #[error("failed to resolve commit {rev:?} in {}: {}", repo.display(), source.message())]
    Revision {
        /// As given.
        rev: String,
        /// The repository.
        repo: PathBuf,
        /// git's error.
        source: git2::Error,
    },
    /// A file name that is not UTF-8: no scheme can include it.
    #[error(
        "file name {name:?} is not UTF-8; the code hash cannot include it (exclude it or rename it)"
    )]
    NonUtf8Name {
        /// The name, lossily decoded.
        name: String,
    },
    /// A `[code_hash]` glob that does not parse.
    #[error("invalid glob {pattern:?} in code_hash.{key}: {source}")]
    Glob {
        /// `include` or `exclude`.
        key: &'static str,
        /// The pattern (empty when the set as a whole failed).
        pattern: String,
        /// The glob error.
        source: globset::Error,
    },
    /// HART's scheme would follow this symlink to a directory (possibly in a loop or out
    /// of the tree): refused.
    #[error(
        "{path} is a symlink to a directory; HART's code hash would follow it (possibly in a loop or out of the tree), fleetgate refuses to"
    )]
    SymlinkToDir {
        /// The path in the tree.
        path: String,
    },
    /// A name with a backslash, which HART's scheme turns into a path separator.
    #[error(
        "file name {path:?} holds a backslash, which HART's code hash turns into a path separator; rename it"
    )]
    Backslash {
        /// The path in the tree.
        path: String,
    },
}

impl CodeHashError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    fn git(path: &Path, action: &'static str, e: git2::Error) -> Self {
        Self::Git {
            action,
            repo: path.to_owned(),
            source: e,
        }
    }

    fn revision(repo: &Path, rev: &str, e: git2::Error) -> Self {
        Self::Revision {
            rev: rev.to_owned(),
            repo: repo.to_owned(),
            source: e,
        }
    }

    /// A problem of the configuration or of the tree (globs, names, symlinks) rather
    /// than of the repository or the disk: the operator fixes it.
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Glob { .. } | Self::SymlinkToDir { .. } | Self::Backslash { .. }
        )
    }
}

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

fn globset(patterns: &[String], key: &'static str) -> Result<Option<GlobSet>, CodeHashError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| CodeHashError::Glob {
            key,
            pattern: p.clone(),
            source: e,
        })?);
    }
    b.build().map(Some).map_err(|e| CodeHashError::Glob {
        key,
        pattern: String::new(),
        source: e,
    })
}

/// Resolve a revision (tag, branch, sha, `HEAD`) to a full commit id.
pub fn resolve_commit(repo: &Path, rev: &str) -> Result<String, CodeHashError> {
    let r =
        git2::Repository::open(repo).map_err(|e| CodeHashError::git(repo, "open repository", e))?;
    let commit = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| CodeHashError::revision(repo, rev, e))?;
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
) -> Result<CodeHash, CodeHashError> {
    let (r, commit, entries) = tracked_entries(repo, rev, cfg)?;
    let worktree = r.workdir().map(Path::to_owned);
    drop(r);
    let files = hash_entries(repo, worktree.as_deref(), entries)?;
    Ok(hash_files(commit, files))
}

/// The `git` scheme's formula over the **working tree's** bytes of the files `rev`
/// tracks (the paths, and the include/exclude globs, come from the commit's tree; the
/// content from disk): one SHA-256 pass per file, in parallel, no git blob id check and
/// no blob inflated.
///
/// It equals [`code_hash_at`] exactly when every hashed file on disk holds the commit's
/// bytes, so it is the way to *verify* a checkout against a code hash that was signed
/// (the node agent's slot): a match proves the files that will run are the signed ones
/// (SHA-256 collision resistance), a mismatch is a modified or incomplete checkout. It
/// is never the way to *produce* a code hash to sign — an edited working tree changes it
/// (that is what it is for); use [`code_hash_at`] for that. A symlink contributes the
/// SHA-256 of its target as on disk, a submodule its commit id from the tree, as in
/// [`code_hash_at`].
///
/// # Errors
/// The repository has no working tree, `rev` is not a commit, a glob is invalid, a name
/// is not UTF-8, or a tracked file cannot be read (missing, a directory, unreadable):
/// the error names it.
pub fn worktree_code_hash(
    repo: &Path,
    rev: &str,
    cfg: &CodeHashConfig,
) -> Result<CodeHash, CodeHashError> {
    let (r, commit, entries) = tracked_entries(repo, rev, cfg)?;
    let worktree = r
        .workdir()
        .map(Path::to_owned)
        .ok_or_else(|| CodeHashError::Io {
            action: "find the working tree of",
            path: repo.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a bare repository has no working tree",
            ),
        })?;
    drop(r);
    let parts = in_parallel(&entries, |part| {
        let mut buf = vec![0u8; 64 * 1024];
        part.map(|(path, oid, mode)| {
            let digest = if *mode == 0o160000 {
                oid.to_string()
            } else {
                disk_digest(&worktree.join(path), &mut buf)?
            };
            Ok((path.clone(), digest))
        })
        .collect::<Result<Vec<_>, CodeHashError>>()
    });
    let mut files = BTreeMap::new();
    for part in parts {
        files.extend(part?);
    }
    Ok(hash_files(commit, files))
}

/// SHA-256 of a tracked path as it is on disk: a symlink's target string, a regular
/// file's bytes (streamed through `buf`, reused between files).
fn disk_digest(full: &Path, buf: &mut [u8]) -> Result<String, CodeHashError> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(full).map_err(|e| CodeHashError::io("stat", full, e))?;
    if meta.file_type().is_symlink() {
        let target =
            std::fs::read_link(full).map_err(|e| CodeHashError::io("read link", full, e))?;
        return Ok(sha256_hex(target.as_os_str().as_encoded_bytes()));
    }
    if !meta.file_type().is_file() {
        return Err(CodeHashError::io(
            "hash",
            full,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a tracked file is not a regular file on disk",
            ),
        ));
    }
    // Streamed through one reused buffer: memory stays bounded whatever a file's size.
    let mut file = std::fs::File::open(full).map_err(|e| CodeHashError::io("read", full, e))?;
    let mut digest = Sha256::new();
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => digest.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CodeHashError::io("read", full, e)),
        }
    }
    Ok(hex::encode(digest.finalize()))
}

/// The commit `rev` resolves to (its id) and the entries of its tree that the code hash
/// covers (path, blob or submodule id, mode), filtered by the include/exclude globs.
#[allow(clippy::type_complexity)]
fn tracked_entries(
    repo: &Path,
    rev: &str,
    cfg: &CodeHashConfig,
) -> Result<(git2::Repository, String, Vec<(String, git2::Oid, i32)>), CodeHashError> {
    let r =
        git2::Repository::open(repo).map_err(|e| CodeHashError::git(repo, "open repository", e))?;
    let commit = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| CodeHashError::revision(repo, rev, e))?;
    let include = globset(&cfg.include, "include")?;
    let exclude = globset(&cfg.exclude, "exclude")?;
    let tree = commit
        .tree()
        .map_err(|e| CodeHashError::git(repo, "read tree", e))?;
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
    .map_err(|e| CodeHashError::git(repo, "walk tree", e))?;
    if let Some(path) = non_utf8 {
        return Err(CodeHashError::NonUtf8Name { name: path });
    }
    entries.retain(|(path, _, _)| {
        !(include.as_ref().is_some_and(|g| !g.is_match(path))
            || exclude.as_ref().is_some_and(|g| g.is_match(path)))
    });
    let id = commit.id().to_string();
    drop(tree);
    drop(commit);
    Ok((r, id, entries))
}

/// Entries per thread below which one thread does it all (thread start-up and a
/// repository open per thread cost more than hashing a few small files).
const PER_THREAD_MIN: usize = 64;

/// The SHA-256 of every entry's content, in parallel (one repository handle per
/// thread: git2's are not shared between threads). A regular file is read from the
/// working tree when there is one and its bytes are the entry's blob — checked by
/// recomputing the git blob id (SHA-1 of `"blob {len}\0"` and the bytes) and comparing
/// it with the tree's: reading a page-cached file beats inflating its blob, and a file
/// edited, converted (CRLF, filters) or missing on disk is read from the object database
/// instead, so the result never depends on the working tree. (Using disk bytes that are
/// not the blob would need a SHA-1 second preimage of a committed blob.)
fn hash_entries(
    repo: &Path,
    worktree: Option<&Path>,
    entries: Vec<(String, git2::Oid, i32)>,
) -> Result<BTreeMap<String, String>, CodeHashError> {
    let parts = in_parallel(&entries, |part| {
        let mut odb: Option<git2::Repository> = None;
        let mut out = Vec::new();
        // One read buffer per thread, reused for every file (not allocated and zeroed
        // 10,000 times over a large tree).
        let mut buf = vec![0u8; 64 * 1024];
        for (path, oid, mode) in part {
            let digest = if *mode == 0o160000 {
                oid.to_string()
            } else if let Some(d) =
                worktree.and_then(|w| from_worktree(w, path, *oid, *mode, &mut buf))
            {
                d
            } else {
                let r = match &mut odb {
                    Some(r) => r,
                    None => odb.insert(
                        git2::Repository::open(repo)
                            .map_err(|e| CodeHashError::git(repo, "open repository", e))?,
                    ),
                };
                let blob = r
                    .find_blob(*oid)
                    .map_err(|e| CodeHashError::git(repo, "read blob", e))?;
                sha256_hex(blob.content())
            };
            out.push((path.clone(), digest));
        }
        Ok(out)
    });
    let mut files = BTreeMap::new();
    for part in parts {
        files.extend(part?);
    }
    Ok(files)
}

/// Run `work` over `items` split across up to 8 threads (every `n`-th item to one
/// thread, so large and small files spread evenly), one thread when there are few.
fn in_parallel<'a, T: Sync, R: Send>(
    items: &'a [T],
    work: impl Fn(std::iter::StepBy<std::iter::Skip<std::slice::Iter<'a, T>>>) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(8)
        .min(items.len().div_ceil(PER_THREAD_MIN))
        .max(1);
    let part = |t: usize| items.iter().skip(t).step_by(threads);
    if threads == 1 {
        return vec![work(part(0))];
    }
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || work(part(t))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The SHA-256 of `path` in the working tree if it is a regular file whose bytes are
/// blob `oid` (see [`hash_entries`]); `None` to read the blob instead.
fn from_worktree(
    worktree: &Path,
    path: &str,
    oid: git2::Oid,
    mode: i32,
    buf: &mut [u8],
) -> Option<String> {
    use sha1::Sha1;
    use std::io::Read;
    if !matches!(mode, 0o100644 | 0o100755) || oid.as_bytes().len() != 20 {
        return None;
    }
    let full = worktree.join(path);
    let meta = std::fs::symlink_metadata(&full).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    // One streaming pass feeds both digests chunk by chunk (memory bounded whatever the
    // file's size; each chunk is hashed twice while it is in cache). The blob header
    // carries the size seen before reading: a file that changes size meanwhile cannot
    // match.
    let mut file = std::fs::File::open(&full).ok()?;
    let mut id = Sha1::new();
    id.update(format!("blob {}\0", meta.len()).as_bytes());
    let mut content = Sha256::new();
    let mut read: u64 = 0;
    loop {
        let n = file.read(buf).ok()?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > meta.len() {
            return None;
        }
        id.update(&buf[..n]);
        content.update(&buf[..n]);
    }
    if read != meta.len() || id.finalize().as_slice() != oid.as_bytes() {
        return None;
    }
    Some(hex::encode(content.finalize()))
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

/// Directories HART's `compute_code_hash` never enters, at any depth.
pub const HART_SKIP_DIRS: [&str; 12] = [
    "__pycache__",
    "venv310",
    "venv",
    ".venv",
    ".git",
    ".idea",
    "agent_data",
    "tests",
    "node_modules",
    "hevolve_backend.egg-info",
    "autogen-0.2.37",
    ".pycharm_plugin",
];

/// Whether HART hashes a file of this name: Python's `Path.suffix == ".py"`.
fn hart_is_py(name: &str) -> bool {
    name.len() > 3 && name.ends_with(".py")
}

fn walk_hart(
    dir: &Path,
    rel: &str,
    files: &mut BTreeMap<String, String>,
) -> Result<(), CodeHashError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CodeHashError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CodeHashError::io("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(CodeHashError::NonUtf8Name {
                name: path.display().to_string(),
            });
        };
        let link = entry
            .file_type()
            .map_err(|e| CodeHashError::io("inspect", &path, e))?
            .is_symlink();
        // Like Python's `is_dir()` / `is_file()`: symlinks are followed, a dangling one
        // is neither.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if link && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CodeHashError::io("inspect", &path, e)),
        };
        let child = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        if meta.is_dir() {
            if HART_SKIP_DIRS.contains(&name) {
                continue;
            }
            if link {
                return Err(CodeHashError::SymlinkToDir { path: child });
            }
            walk_hart(&path, &child, files)?;
        } else if meta.is_file() && hart_is_py(name) {
            if name.contains('\\') {
                return Err(CodeHashError::Backslash { path: child });
            }
            let bytes = std::fs::read(&path).map_err(|e| CodeHashError::io("read", &path, e))?;
            files.insert(child, sha256_hex(&bytes));
        }
    }
    Ok(())
}

/// HART's code hash and file manifest hash of the tree at `root` on disk (see the
/// module docs for the exact definition). `commit` is only recorded in the result.
///
/// # Errors
/// An unreadable file or directory, a symlink to a directory, a name that is not UTF-8
/// or holds a backslash.
pub fn hart_code_hash_dir(root: &Path, commit: String) -> Result<CodeHash, CodeHashError> {
    let mut files = BTreeMap::new();
    walk_hart(root, "", &mut files)?;
    // BTreeMap order is byte order, which for UTF-8 is Python's code-point order.
    let lines: Vec<String> = files.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let mut json = String::from("{");
    for (i, (k, v)) in files.iter().enumerate() {
        if i > 0 {
            json.push_str(", ");
        }
        json.push_str(&python_json_string(k));
        json.push_str(": ");
        json.push_str(&python_json_string(v));
    }
    json.push('}');
    Ok(CodeHash {
        commit,
        code_hash: sha256_hex(lines.join("\n").as_bytes()),
        file_manifest_hash: sha256_hex(json.as_bytes()),
        files,
    })
}

/// Python's `json.dumps(s)` of a string (ASCII-escaped).
fn python_json_string(s: &str) -> String {
    let bytes = fleetgate_trust::to_canonical_bytes(&serde_json::Value::String(s.to_owned()))
        .unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}
