//! The state directory backed by a shared store (high availability, `[state] store =
//! "postgres"`): the shared copy is the run's state, the local directory its mirror.
//!
//! - Before every read-modify-write ([`StateDir::transact`]) the shared document is
//!   pulled; when its revision differs from the one this process last saw, the local
//!   mirror (the files later stages need, then the state file) is rewritten from it. So
//!   a standby orchestrator on an empty state directory resumes exactly where the last
//!   holder stood.
//! - Every state write goes to the local file first, then to the shared store, which
//!   accepts it only from the holder of the pipeline lease and only at the revision this
//!   process read (compare-and-swap). A refused write is an error: the caller stops
//!   before any outside effect, and the next pull replaces the local file (which is then
//!   ahead of the shared one) with the shared copy.
//! - Plain reads ([`StateDir::load`], for `status`) fall back to the local mirror when
//!   the shared store cannot be reached, and say so ([`StateDir::mirror_note`]).

use crate::{StateDir, StoreError, io_err, write_atomic};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Files of the state directory that live in the shared store too (the completed-release
/// record and the run's signed manifest).
pub const SHARED_FILES: [&str; 2] = ["releases.json", "release_manifest.json"];
/// Directories whose files live in the shared store too: signed manifests by sequence,
/// benchmark baselines, provenance, approvals, the archive of finished runs, and BUILD's
/// artifacts (by digest: a standby's SIGN checks and signs them, its rollback orders
/// list them, and `fleet serve` fetches one it lacks from the store).
pub const SHARED_DIRS: [&str; 6] = [
    "manifests",
    "benchmarks",
    "provenance",
    "approvals",
    "runs",
    "artifacts",
];
/// Largest file mirrored (larger ones are logged once and left local): the state file's
/// own limit. A run archive over 100,000 nodes is about 16 MB (stored compressed).
pub const MAX_SHARED_FILE: u64 = 64 * 1024 * 1024;

/// Why the shared store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// This orchestrator does not hold the pipeline lease: nothing was written.
    #[error("{0}")]
    Fenced(String),
    /// The shared state moved on since this orchestrator read it: nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// The shared store could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
    /// What the shared store holds is damaged (a file whose content is not the digest
    /// recorded with it, or does not inflate): nothing of it was taken.
    #[error("{0}")]
    Damaged(String),
}

/// A shared home of the run's state, written only by the pipeline lease's holder.
pub trait SharedStore: Send + Sync + std::fmt::Debug {
    /// The stored state document and its revision; `None` before the first write.
    fn fetch(&self) -> Result<Option<(Vec<u8>, i64)>, SharedError>;
    /// The stored revision alone (`None` before the first write): lets a reader that
    /// already holds it skip fetching the document, which can be tens of megabytes on a
    /// large fleet.
    fn revision(&self) -> Result<Option<i64>, SharedError> {
        Ok(self.fetch()?.map(|(_, rev)| rev))
    }
    /// The stored files, handed to `each` one at a time (path relative to the state
    /// directory, content): a store that keeps them compressed inflates one file at a
    /// time, so a standby taking over does not hold every run's archive at once. A file
    /// for which `skip(path, sha256 hex)` is true is already held by the reader as it is
    /// stored: it is neither fetched nor handed over. Stops at the first error `each`
    /// returns.
    ///
    /// # Errors
    /// The store failed or holds a damaged file, or `each` failed.
    fn fetch_files(
        &self,
        skip: &dyn Fn(&str, &str) -> bool,
        each: &mut dyn FnMut(String, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Store `doc` (and `files`) if this process holds the pipeline lease and the stored
    /// revision is `expected_rev` (0: none yet). Returns the new revision.
    fn put(
        &self,
        doc: &[u8],
        expected_rev: i64,
        files: &[(String, Vec<u8>)],
    ) -> Result<i64, SharedError>;
    /// Where it is, for messages (no secrets).
    fn describe(&self) -> String;
}

/// What this process knows of the shared copy.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Revision last pulled or written; `None`: unknown (pull before writing).
    rev: Option<i64>,
    /// Each file as last pulled or written: its SHA-256 (not its bytes: the mirrored
    /// files include the archive of every finished run) and what `stat` said of it then.
    files: BTreeMap<String, Known>,
    /// Set when the last read fell back to the local mirror.
    mirror: Option<String>,
    /// Bytes read from mirrored files to learn whether they changed (see [`Known`]).
    read_bytes: u64,
}

/// A mirrored file as this process last wrote, read or pushed it. A write of the state
/// directory (every gate's checkpoint) checks every mirrored file for changes; one whose
/// size, modification time, inode and device are as recorded is taken as unchanged
/// without being read, so a write does not read back the archive of every finished run.
/// As git does with its index ("racy git"), a file modified less than [`RACY_SECS`]
/// before it was recorded is not trusted by its stat (a coarse file-system clock could
/// give a rewrite the same time): it is read again until it is older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    digest: [u8; 32],
    stat: Option<Stat>,
}

/// What `stat` says of a file, for [`Known`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
    dev: u64,
}

/// Seconds within which a file's modification time makes its stat untrusted ([`Known`]).
const RACY_SECS: i64 = 2;

impl Stat {
    fn of(meta: &fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    fn of_path(path: &Path) -> Option<Stat> {
        fs::symlink_metadata(path).ok().map(|m| Stat::of(&m))
    }

    /// The stat to record now: `None` when the file is too recent to be trusted by it.
    fn to_record(self) -> Option<Stat> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        (self.mtime < now.saturating_sub(RACY_SECS)).then_some(self)
    }
}

/// The shared side of a [`StateDir`].
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SharedStore>,
    pub(crate) sync: Arc<Mutex<SyncState>>,
}

impl Shared {
    fn sync(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A relative path without `..`, `.` or empty parts (a path from the shared store is
/// input: it must stay inside the state directory).
fn safe_rel(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'))
        && (SHARED_FILES.contains(&path)
            || SHARED_DIRS
                .iter()
                .any(|d| path.strip_prefix(d).is_some_and(|r| r.starts_with('/'))))
}

fn hex_of(digest: &[u8; 32]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The mirrored files under `rel` that changed since `known` (path, bytes, what is now
/// known of them); files unchanged by `stat` are not read (see [`Known`]).
fn collect(
    root: &Path,
    rel: &str,
    depth: u32,
    known: &mut SyncState,
    out: &mut Vec<(String, Vec<u8>, Known)>,
) {
    let path = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return;
    };
    if meta.is_file() {
        let stat = Stat::of(&meta);
        let was = known.files.get(rel).copied();
        if was.is_some_and(|k| k.stat == Some(stat)) {
            return;
        }
        if meta.len() > MAX_SHARED_FILE {
            tracing::warn!(path = %path.display(), "not mirrored to the shared store: over {MAX_SHARED_FILE} bytes");
            // Said once (per change of the file), not at every state write.
            known.files.insert(
                rel.to_owned(),
                Known {
                    digest: [0; 32],
                    stat: Some(stat),
                },
            );
        } else if let Ok(b) = fs::read(&path) {
            known.read_bytes += b.len() as u64;
            let now = Known {
                digest: digest(&b),
                stat: stat.to_record(),
            };
            if was.is_some_and(|k| k.digest == now.digest) {
                // The same bytes (touched, or rewritten alike): remember the new stat.
                known.files.insert(rel.to_owned(), now);
            } else {
                out.push((rel.to_owned(), b, now));
            }
        }
    } else if meta.is_dir() && depth < 4 {
        for e in fs::read_dir(&path).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temporary files of atomic writes and locks are not state.
            if name.starts_with('.') || name.ends_with(".lock") || name.ends_with(".tmp") {
                continue;
            }
            collect(root, &format!("{rel}/{name}"), depth + 1, known, out);
        }
    }
}

impl StateDir {
    /// Back this state directory with a shared store (see the module docs).
    #[must_use]
    pub fn with_shared(mut self, store: Arc<dyn SharedStore>) -> StateDir {
        self.shared = Some(Shared {
            store,
            sync: Arc::default(),
        });
        self
    }

    /// Whether the run's state lives in a shared store.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared store, described (None for a plain state directory).
    pub fn shared_description(&self) -> Option<String> {
        self.shared.as_ref().map(|s| s.store.describe())
    }

    /// Set when the last [`StateDir::load`] could not reach the shared store and
    /// returned the local mirror: why.
    pub fn mirror_note(&self) -> Option<String> {
        self.shared.as_ref().and_then(|s| s.sync().mirror.clone())
    }

    /// Rewrite the local mirror from the shared copy when it changed since this process
    /// last saw it. Files first, the state file last.
    pub(crate) fn pull(&self) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        // The revision first: when it is the one this process last saw, the local file
        // is the shared document and the document itself is not fetched.
        let rev = shared.store.revision()?;
        {
            let mut sync = shared.sync();
            sync.mirror = None;
            match rev {
                None => {
                    // Nothing shared yet: the first write inserts this directory's state.
                    sync.rev = Some(0);
                    return Ok(());
                }
                Some(rev) if sync.rev == Some(rev) => return Ok(()),
                Some(_) => {}
            }
        }
        let fetched = shared.store.fetch()?;
        let mut sync = shared.sync();
        let Some((doc, rev)) = fetched else {
            // Nothing shared yet: the first write inserts this directory's state.
            sync.rev = Some(0);
            return Ok(());
        };
        if sync.rev == Some(rev) {
            return Ok(());
        }
        drop(sync);
        let mut fetched = Vec::new();
        // What the mirror holds already is not fetched again: a file this process
        // recorded with that digest and unchanged since (by its stat), or an artifact
        // present under its digest (`artifacts/<sha256>` is named by its content; SIGN
        // and every node check it against that name).
        let skip = |rel: &str, sha256: &str| {
            let path = self.dir.join(rel);
            if rel.strip_prefix("artifacts/") == Some(sha256) && path.is_file() {
                return true;
            }
            let known = shared.sync().files.get(rel).copied();
            known.is_some_and(|k| {
                hex_of(&k.digest) == sha256 && k.stat.is_some() && k.stat == Stat::of_path(&path)
            })
        };
        shared.store.fetch_files(&skip, &mut |rel, bytes| {
            if !safe_rel(&rel) {
                tracing::warn!(path = %rel, "the shared store holds a file outside the mirrored paths: ignored");
                return Ok(());
            }
            let path = self.dir.join(&rel);
            let digest = digest(&bytes);
            let known = shared.sync().files.get(&rel).copied();
            let same = known.is_some_and(|k| {
                k.digest == digest && k.stat.is_some() && k.stat == Stat::of_path(&path)
            });
            if !same && fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                }
                write_atomic(&path, &bytes, None).map_err(io_err("write", &path))?;
            }
            let stat = Stat::of_path(&path).and_then(Stat::to_record);
            fetched.push((rel, Known { digest, stat }));
            Ok(())
        })?;
        let mut sync = shared.sync();
        sync.files.extend(fetched);
        let path = self.state_path();
        if fs::read(&path).ok().as_deref() != Some(doc.as_slice()) {
            write_atomic(&path, &doc, None).map_err(io_err("write", &path))?;
        }
        sync.rev = Some(rev);
        Ok(())
    }

    /// [`StateDir::pull`] for a read: a shared store that cannot be reached, or holds a
    /// damaged file, leaves the local mirror in place, noted for `status` (a write is
    /// refused instead: it would build on a state this process could not read).
    pub(crate) fn pull_for_read(&self) -> Result<(), StoreError> {
        let (what, e) = match self.pull() {
            Err(StoreError::Shared(SharedError::Unavailable(e))) => ("is unreachable", e),
            Err(StoreError::Shared(SharedError::Damaged(e))) => ("holds damaged data", e),
            other => return other,
        };
        tracing::warn!(error = %e, "the shared run state {what}: reading the local mirror");
        if let Some(s) = &self.shared {
            s.sync().mirror = Some(format!(
                "the shared run state ({}) {what} ({e}): this is the local mirror, possibly behind",
                s.store.describe()
            ));
        }
        Ok(())
    }

    /// Store the state document `doc` (the state file's bytes) and every mirrored file
    /// that changed in the shared store, under the lease, at the revision last seen.
    pub(crate) fn push(&self, doc: &[u8]) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let known = shared.sync().rev;
        let expected = match known {
            Some(r) => r,
            None => shared.store.revision()?.unwrap_or(0),
        };
        let mut changed = Vec::new();
        {
            let mut sync = shared.sync();
            for f in SHARED_FILES {
                collect(&self.dir, f, 0, &mut sync, &mut changed);
            }
            for d in SHARED_DIRS {
                collect(&self.dir, d, 0, &mut sync, &mut changed);
            }
        }
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut files = Vec::with_capacity(changed.len());
        let mut digests = Vec::with_capacity(changed.len());
        for (p, b, k) in changed {
            files.push((p, b));
            digests.push(k);
        }
        match shared.store.put(doc, expected, &files) {
            Ok(rev) => {
                let mut sync = shared.sync();
                sync.rev = Some(rev);
                sync.files
                    .extend(files.into_iter().map(|(p, _)| p).zip(digests));
                Ok(())
            }
            Err(e) => {
                // The local file is now ahead of the shared copy: the next pull replaces it.
                shared.sync().rev = None;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SharedError, SharedStore, safe_rel};
    use crate::StateDir;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    /// An in-memory shared store that counts document fetches.
    #[derive(Debug, Default)]
    struct Counting {
        doc: Mutex<Option<(Vec<u8>, i64)>>,
        fetches: AtomicU32,
        /// Paths of the files each put carried.
        pushed: Mutex<Vec<Vec<String>>>,
        /// The files stored, by path.
        files: Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
        /// Paths of the files handed to readers.
        handed: Mutex<Vec<String>>,
    }

    impl SharedStore for Counting {
        fn fetch(&self) -> Result<Option<(Vec<u8>, i64)>, SharedError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Ok(self.doc.lock().unwrap().clone())
        }
        fn revision(&self) -> Result<Option<i64>, SharedError> {
            Ok(self.doc.lock().unwrap().as_ref().map(|(_, r)| *r))
        }
        fn fetch_files(
            &self,
            skip: &dyn Fn(&str, &str) -> bool,
            each: &mut dyn FnMut(String, Vec<u8>) -> Result<(), crate::StoreError>,
        ) -> Result<(), crate::StoreError> {
            let files = self.files.lock().unwrap().clone();
            for (path, bytes) in files {
                if skip(&path, &super::hex_of(&super::digest(&bytes))) {
                    continue;
                }
                self.handed.lock().unwrap().push(path.clone());
                each(path, bytes)?;
            }
            Ok(())
        }
        fn put(
            &self,
            doc: &[u8],
            expected_rev: i64,
            files: &[(String, Vec<u8>)],
        ) -> Result<i64, SharedError> {
            self.pushed
                .lock()
                .unwrap()
                .push(files.iter().map(|(p, _)| p.clone()).collect());
            self.files.lock().unwrap().extend(files.iter().cloned());
            let mut stored = self.doc.lock().unwrap();
            let rev = stored.as_ref().map_or(0, |(_, r)| *r);
            if rev != expected_rev {
                return Err(SharedError::Conflict(format!(
                    "at {rev}, not {expected_rev}"
                )));
            }
            *stored = Some((doc.to_vec(), rev + 1));
            Ok(rev + 1)
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    #[test]
    fn the_document_is_fetched_only_when_its_revision_moved() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting::default());
        let dir = StateDir::open(tmp.path())
            .unwrap()
            .with_shared(store.clone());
        // Writes of this process: the revision it wrote is the one it knows.
        for version in ["v1", "v2", "v3"] {
            dir.transact(|s| {
                s.version = version.into();
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        assert_eq!(store.fetches.load(Ordering::SeqCst), 0);
        assert_eq!(dir.load().unwrap().version, "v3");
        assert_eq!(store.fetches.load(Ordering::SeqCst), 0);
        // Another holder wrote: the next read fetches that document, once.
        let (doc, rev) = store.doc.lock().unwrap().clone().unwrap();
        let other = String::from_utf8(doc).unwrap().replace("\"v3\"", "\"v4\"");
        *store.doc.lock().unwrap() = Some((other.into_bytes(), rev + 1));
        assert_eq!(dir.load().unwrap().version, "v4");
        assert_eq!(dir.load().unwrap().version, "v4");
        assert_eq!(store.fetches.load(Ordering::SeqCst), 1);
    }

    /// BUILD's artifacts travel with the run: a standby on an empty state directory
    /// finds them in its mirror (its SIGN checks them there), and a reader that holds an
    /// artifact already, or a file unchanged since it last pulled it, does not fetch it.
    #[test]
    fn artifacts_reach_a_standby_and_what_a_mirror_holds_is_not_fetched_again() {
        use sha2::Digest;
        let store = Arc::new(Counting::default());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = StateDir::open(a.path()).unwrap().with_shared(store.clone());
        let bytes = b"the built binary".to_vec();
        let rel = format!(
            "artifacts/{}",
            super::hex_of(&sha2::Sha256::digest(&bytes).into())
        );
        std::fs::create_dir_all(a.path().join("artifacts")).unwrap();
        std::fs::write(a.path().join(&rel), &bytes).unwrap();
        std::fs::create_dir_all(a.path().join("runs")).unwrap();
        std::fs::write(a.path().join("runs/r1.json"), b"{}").unwrap();
        leader
            .transact(|s| {
                s.version = "v1".into();
                Ok::<_, ()>(())
            })
            .unwrap();
        assert!(store.pushed.lock().unwrap().concat().contains(&rel));

        let standby = StateDir::open(b.path()).unwrap().with_shared(store.clone());
        assert_eq!(standby.load().unwrap().version, "v1");
        assert_eq!(std::fs::read(b.path().join(&rel)).unwrap(), bytes);
        assert_eq!(
            *store.handed.lock().unwrap(),
            [rel.clone(), "runs/r1.json".to_owned()]
        );

        // The leader moves on; the standby pulls again: nothing it holds is handed over.
        store.handed.lock().unwrap().clear();
        leader
            .transact(|s| {
                s.version = "v2".into();
                Ok::<_, ()>(())
            })
            .unwrap();
        // A new reader process on the standby's directory knows nothing of it but the
        // artifact, present under its digest.
        let fresh = StateDir::open(b.path()).unwrap().with_shared(store.clone());
        assert_eq!(fresh.load().unwrap().version, "v2");
        assert_eq!(*store.handed.lock().unwrap(), ["runs/r1.json".to_owned()]);
        store.handed.lock().unwrap().clear();
        leader
            .transact(|s| {
                s.version = "v3".into();
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(standby.load().unwrap().version, "v3");
        let handed = store.handed.lock().unwrap().clone();
        assert!(!handed.contains(&rel), "{handed:?}");
    }

    /// A shared store whose mirrored file is damaged: a read returns the local mirror
    /// and says why (not "unreachable"); a write is refused, naming the damage.
    #[test]
    fn a_damaged_shared_file_is_named_a_read_keeps_the_mirror_and_a_write_is_refused() {
        #[derive(Debug)]
        struct Damaged(Counting);
        impl SharedStore for Damaged {
            fn fetch(&self) -> Result<Option<(Vec<u8>, i64)>, SharedError> {
                self.0.fetch()
            }
            fn fetch_files(
                &self,
                _skip: &dyn Fn(&str, &str) -> bool,
                _each: &mut dyn FnMut(String, Vec<u8>) -> Result<(), crate::StoreError>,
            ) -> Result<(), crate::StoreError> {
                Err(SharedError::Damaged(
                    "the shared state file runs/r1.json: its SHA-256 is not the recorded one"
                        .into(),
                )
                .into())
            }
            fn put(
                &self,
                doc: &[u8],
                expected_rev: i64,
                files: &[(String, Vec<u8>)],
            ) -> Result<i64, SharedError> {
                self.0.put(doc, expected_rev, files)
            }
            fn describe(&self) -> String {
                "memory".into()
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Damaged(Counting::default()));
        let dir = StateDir::open(tmp.path())
            .unwrap()
            .with_shared(store.clone());
        dir.transact(|s| {
            s.version = "v1".into();
            Ok::<_, ()>(())
        })
        .unwrap();
        // Another holder wrote since: this process must fetch, and the files are damaged.
        let (doc, rev) = store.0.doc.lock().unwrap().clone().unwrap();
        let other = String::from_utf8(doc).unwrap().replace("\"v1\"", "\"v2\"");
        *store.0.doc.lock().unwrap() = Some((other.into_bytes(), rev + 1));
        assert_eq!(dir.load().unwrap().version, "v1", "the local mirror");
        let note = dir.mirror_note().expect("a note for status");
        assert!(note.contains("holds damaged data"), "{note}");
        assert!(note.contains("runs/r1.json"), "{note}");
        assert!(!note.contains("unreachable"), "{note}");
        let err = dir
            .transact(|s| {
                s.version = "v3".into();
                Ok::<_, ()>(())
            })
            .unwrap_err();
        match err {
            crate::TransactError::Store(crate::StoreError::Shared(e @ SharedError::Damaged(_))) => {
                let msg = crate::StoreError::Shared(e).to_string();
                assert!(msg.contains("runs/r1.json"), "{msg}");
            }
            other => panic!("expected the damage to be named, got {other:?}"),
        }
        assert_eq!(
            store.0.doc.lock().unwrap().as_ref().map(|(_, r)| *r),
            Some(rev + 1),
            "nothing written"
        );
    }

    /// A state write checks the mirrored files for changes without reading back the ones
    /// whose stat is as recorded (the archive of every finished run), reads again a file
    /// modified too recently to be trusted by its stat, and pushes exactly what changed.
    #[test]
    fn a_state_write_reads_back_only_mirrored_files_that_may_have_changed() {
        use std::time::{Duration, SystemTime};
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting::default());
        let dir = StateDir::open(tmp.path())
            .unwrap()
            .with_shared(store.clone());
        let age = |rel: &str| {
            std::fs::File::options()
                .write(true)
                .open(tmp.path().join(rel))
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(3600))
                .unwrap();
        };
        std::fs::create_dir_all(tmp.path().join("runs")).unwrap();
        let archive = vec![b'a'; 1 << 20];
        crate::write_atomic(&tmp.path().join("runs/r1.json"), &archive, None).unwrap();
        std::fs::create_dir_all(tmp.path().join("manifests")).unwrap();
        crate::write_atomic(&tmp.path().join("manifests/1.json"), b"{}", None).unwrap();
        age("runs/r1.json");
        age("manifests/1.json");
        let write = |v: &str| {
            dir.transact(|s| {
                s.version = v.into();
                Ok::<_, ()>(())
            })
            .unwrap();
        };
        let read_bytes = || dir.shared.as_ref().unwrap().sync().read_bytes;
        let last_push = || store.pushed.lock().unwrap().last().cloned().unwrap();

        write("v1");
        assert_eq!(last_push(), ["manifests/1.json", "runs/r1.json"]);
        assert_eq!(read_bytes(), (1 << 20) + 2);
        // Unchanged and old: not read again, nothing pushed.
        write("v2");
        assert_eq!(last_push(), Vec::<String>::new());
        assert_eq!(read_bytes(), (1 << 20) + 2, "the archive was read again");

        // Rewritten (a new file, modified just now): pushed; then read at each write
        // while it is too recent to be trusted by its stat, but not pushed again.
        let archive2 = vec![b'b'; 1 << 20];
        crate::write_atomic(&tmp.path().join("runs/r1.json"), &archive2, None).unwrap();
        write("v3");
        assert_eq!(last_push(), ["runs/r1.json"]);
        write("v4");
        assert_eq!(last_push(), Vec::<String>::new());
        assert_eq!(read_bytes(), 3 * (1 << 20) + 2);
        // Once old enough, it is trusted by its stat again.
        age("runs/r1.json");
        write("v5");
        write("v6");
        assert_eq!(last_push(), Vec::<String>::new());
        assert_eq!(read_bytes(), 4 * (1 << 20) + 2);
        // An edit in place that keeps the size changes the modification time: pushed.
        std::fs::write(tmp.path().join("runs/r1.json"), vec![b'c'; 1 << 20]).unwrap();
        write("v7");
        assert_eq!(last_push(), ["runs/r1.json"]);
    }

    #[test]
    fn only_mirrored_relative_paths_are_written() {
        for ok in [
            "releases.json",
            "manifests/3.json",
            "runs/a-b.json",
            "benchmarks/v1/x.json",
        ] {
            assert!(safe_rel(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "manifests/../../x",
            "manifests",
            "upgrade_state.json",
            "work/x",
            "manifests//x",
            "./releases.json",
            "manifests\\..\\x",
        ] {
            assert!(!safe_rel(bad), "{bad}");
        }
    }
}
