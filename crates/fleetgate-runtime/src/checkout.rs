//! Clean checkouts: gate commands run in a fresh clone of the release commit under the
//! state directory, never in the operator's working copy (which may hold edits).
//!
//! Work directories live in `<state>/work/<name>`: a pipeline run's is named by its run
//! id (unique per run, reused by its later gates); a benchmark capture's is
//! `bench-<version>-<capture id>` (random, one per capture, removed when it ends). A
//! clone is made in a temporary sibling `.<name>.partial-<random>` and renamed into
//! place, so two checkouts never share a temporary directory, whatever their names.
//!
//! Liveness is an exclusive `flock` on `<state>/work/<name>.lock`, held by whoever uses
//! the directory ([`WorkLock`]). [`clean_stale`] removes only what it can lock itself, so
//! a cleaner (an orchestrator starting, a capture starting) never deletes a directory in
//! use by another process or thread; what a crash left behind is removed on the next
//! start.

use crate::{GitError, RuntimeError};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Suffix of a work directory's lock file.
const LOCK_SUFFIX: &str = ".lock";
/// Marker in the name of a temporary clone: `.<name>.partial-<random>`.
const PARTIAL_MARK: &str = ".partial-";

/// 16 random hex digits from the OS generator (falls back to time and pid, which is
/// still unique enough for a directory name, if the generator is unavailable).
pub(crate) fn random_suffix() -> String {
    let n = getrandom::u64().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    });
    format!("{n:016x}")
}

/// An exclusive claim on the work directory `<root>/<name>`: the `flock` on
/// `<root>/<name>.lock`, released when dropped. With [`WorkLock::remove_on_drop`], the
/// directory and the lock file are removed too (a capture's throwaway checkout).
#[derive(Debug)]
pub struct WorkLock {
    file: File,
    lock_path: PathBuf,
    dir: PathBuf,
    remove: bool,
}

impl WorkLock {
    /// Take the lock for `<root>/<name>` without waiting: `Ok(None)` when someone else
    /// holds it.
    pub fn try_claim(root: &Path, name: &str) -> Result<Option<WorkLock>, RuntimeError> {
        std::fs::create_dir_all(root).map_err(|e| RuntimeError::io("create", root, e))?;
        let lock_path = root.join(format!("{name}{LOCK_SUFFIX}"));
        // A cleaner may unlink the lock file between our open and our lock; a lock on
        // an unlinked file guards nothing, so check that the path still names the file
        // we locked, and try again if not.
        for _ in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(|e| RuntimeError::io("open work lock", &lock_path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(RuntimeError::io("lock", &lock_path, e));
                }
            }
            let held = file
                .metadata()
                .map_err(|e| RuntimeError::io("inspect work lock", &lock_path, e))?;
            match std::fs::metadata(&lock_path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                    return Ok(Some(WorkLock {
                        file,
                        lock_path,
                        dir: root.join(name),
                        remove: false,
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RuntimeError::io("inspect work lock", &lock_path, e)),
            }
        }
        Err(RuntimeError::io(
            "lock",
            &lock_path,
            std::io::Error::other("its lock file kept being replaced"),
        ))
    }

    /// Remove the directory and the lock file when this claim is dropped.
    pub fn remove_on_drop(mut self) -> WorkLock {
        self.remove = true;
        self
    }

    /// The work directory this claim guards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for WorkLock {
    fn drop(&mut self) {
        if self.remove {
            remove_with_partials(&self.dir, true);
            // Unlinked while still locked: a cleaner that opened it meanwhile fails its
            // inode check (or removes nothing), a new claim makes a fresh file.
            let _ = std::fs::remove_file(&self.lock_path);
        }
        let _ = self.file.unlock();
    }
}

/// `.<name>.partial-*` siblings of `dir` (and, with `dir_too`, `dir` itself), removed
/// best effort.
fn remove_with_partials(dir: &Path, dir_too: bool) -> usize {
    let mut removed = 0;
    let (Some(root), Some(name)) = (dir.parent(), dir.file_name()) else {
        return 0;
    };
    let prefix = format!(".{}{PARTIAL_MARK}", name.to_string_lossy());
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix)
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    if dir_too && dir.exists() && std::fs::remove_dir_all(dir).is_ok() {
        removed += 1;
    }
    removed
}

/// The work directory name an entry of `<state>/work` belongs to: `X` for `X`,
/// `X.lock` and `.X.partial-<random>`.
fn base_name(entry: &str) -> Option<&str> {
    if let Some(rest) = entry.strip_prefix('.') {
        let i = rest.rfind(PARTIAL_MARK)?;
        return Some(&rest[..i]).filter(|b| !b.is_empty());
    }
    Some(entry.strip_suffix(LOCK_SUFFIX).unwrap_or(entry)).filter(|b| !b.is_empty())
}

/// Remove what is stale under `root` (`<state>/work`): for each work directory name that
/// `owned` accepts and whose lock nobody holds, its temporary clones, and the directory
/// itself unless it is `keep` (the current run's checkout, reused by its later gates).
/// Names `owned` rejects and names in use are left alone. Returns how many directories
/// were removed. Best effort: a failure to remove one is logged, not returned.
pub fn clean_stale(root: &Path, owned: &dyn Fn(&str) -> bool, keep: Option<&str>) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut bases: Vec<String> = entries
        .flatten()
        .filter_map(|e| base_name(&e.file_name().to_string_lossy()).map(str::to_owned))
        .filter(|b| owned(b))
        .collect();
    bases.sort();
    bases.dedup();
    let mut removed = 0;
    for base in bases {
        match WorkLock::try_claim(root, &base) {
            Ok(Some(lock)) => {
                let is_kept = keep == Some(base.as_str());
                removed += remove_with_partials(&root.join(&base), !is_kept);
                if is_kept {
                    drop(lock);
                } else {
                    drop(lock.remove_on_drop());
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check a stale work directory"),
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %root.display(), "removed stale work directories");
    }
    removed
}

/// Make a checkout of `sha` at `dest`. With `fresh`, any existing directory is replaced
/// by a new clone (BUILD starts from a pristine tree, also after a crash); otherwise an
/// existing checkout at the same commit is reused, so later gates see the build's output.
/// The clone is made in a temporary directory of its own (`.<name>.partial-<random>`)
/// and renamed into place.
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
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(RuntimeError::io(
            "check out into",
            dest,
            std::io::Error::other("the checkout path has no parent directory or name"),
        ));
    };
    std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io("create", parent, e))?;
    let src = repo
        .canonicalize()
        .map_err(|e| RuntimeError::io("resolve", repo, e))?;
    let url = src.to_string_lossy().into_owned();
    let tmp = parent.join(format!(
        ".{}{PARTIAL_MARK}{}",
        name.to_string_lossy(),
        random_suffix()
    ));
    let result = clone_at(&url, sha, &tmp).and_then(|()| {
        std::fs::rename(&tmp, dest)
            .map_err(|e| RuntimeError::io("move checkout into place at", dest, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| dest.to_owned())
}

fn clone_at(url: &str, sha: &str, tmp: &Path) -> Result<(), RuntimeError> {
    let r = git2::build::RepoBuilder::new()
        .clone(url, tmp)
        .map_err(|e| GitError::Clone {
            url: url.to_owned(),
            into: tmp.to_owned(),
            source: e,
        })?;
    let oid = git2::Oid::from_str(sha).map_err(|e| GitError::BadCommitId {
        sha: sha.to_owned(),
        source: e,
    })?;
    r.find_commit(oid).map_err(|e| GitError::Unreachable {
        sha: sha.to_owned(),
        url: url.to_owned(),
        source: e,
    })?;
    r.set_head_detached(oid)
        .map_err(|e| RuntimeError::git(tmp, "detach HEAD", e))?;
    r.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .map_err(|e| RuntimeError::git(tmp, "check out", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_map_to_their_work_directory() {
        assert_eq!(base_name("bench-v4.0.3-ab"), Some("bench-v4.0.3-ab"));
        assert_eq!(base_name("bench-v4.0.3-ab.lock"), Some("bench-v4.0.3-ab"));
        assert_eq!(
            base_name(".1700-v4.0.2-77f3.partial-0011223344556677"),
            Some("1700-v4.0.2-77f3")
        );
        assert_eq!(base_name(".lock"), None);
        assert_eq!(base_name(".x"), None);
    }

    #[test]
    fn a_held_claim_is_refused_and_survives_cleaning() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let held = WorkLock::try_claim(root, "bench-v1-a").unwrap().unwrap();
        std::fs::create_dir_all(held.dir().join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".bench-v1-a.partial-1")).unwrap();
        std::fs::create_dir_all(root.join("bench-v1-b")).unwrap();
        std::fs::create_dir_all(root.join(".bench-v1-b.partial-2")).unwrap();
        std::fs::create_dir_all(root.join("1700-v1-77f3")).unwrap();
        assert!(WorkLock::try_claim(root, "bench-v1-a").unwrap().is_none());
        let removed = clean_stale(root, &|b| b.starts_with("bench-"), None);
        assert_eq!(removed, 2, "the stale capture and its temporary clone");
        assert!(held.dir().join("sub").is_dir(), "in use: kept");
        assert!(root.join(".bench-v1-a.partial-1").is_dir(), "in use: kept");
        assert!(!root.join("bench-v1-b").exists());
        assert!(!root.join("bench-v1-b.lock").exists());
        assert!(root.join("1700-v1-77f3").is_dir(), "not owned: kept");
        drop(held.remove_on_drop());
        assert!(!root.join("bench-v1-a").exists());
        assert!(!root.join("bench-v1-a.lock").exists());
        // The current run keeps its checkout but loses its temporary clones.
        std::fs::create_dir_all(root.join(".1700-v1-77f3.partial-9")).unwrap();
        std::fs::create_dir_all(root.join("1699-v0-0001")).unwrap();
        clean_stale(root, &|b| !b.starts_with("bench-"), Some("1700-v1-77f3"));
        assert!(root.join("1700-v1-77f3").is_dir());
        assert!(!root.join(".1700-v1-77f3.partial-9").exists());
        assert!(!root.join("1699-v0-0001").exists());
    }

    #[test]
    fn names_that_share_a_stem_get_their_own_temporary_clones() {
        // `bench-v4.0.3` and `bench-v4.0.5` used to share `bench-v4.0.partial`.
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let r = git2::Repository::init(&repo).unwrap();
        std::fs::write(repo.join("a.txt"), "a\n").unwrap();
        let mut idx = r.index().unwrap();
        idx.add_path(Path::new("a.txt")).unwrap();
        let tree = r.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@t.invalid").unwrap();
        let oid = r.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[]).unwrap();
        let sha = oid.to_string();
        let work = d.path().join("work");
        let handles: Vec<_> = [
            "bench-v4.0.3",
            "bench-v4.0.5",
            "1-v4.0.2-77f3",
            "2-v4.0.9-aa",
        ]
        .into_iter()
        .map(|n| {
            let (repo, sha, dest) = (repo.clone(), sha.clone(), work.join(n));
            std::thread::spawn(move || checkout(&repo, &sha, &dest, true))
        })
        .collect();
        for h in handles {
            let dir = h.join().unwrap().unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "a\n");
        }
        let left: Vec<String> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(left.is_empty(), "temporary clones left: {left:?}");
    }
}
