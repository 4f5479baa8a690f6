//! Backups of the app's data before an apply, and their restore on the way back.
//!
//! `[backup] paths` names files or directories outside the slots (the app's data). Before
//! a new version starts, with the old app stopped, [`Backups::snapshot`] copies each into
//! `<state_dir>/backups/.partial-<id>/<n>` — reflinked where the file system allows
//! (btrfs, XFS: instant, no extra space), else copied — writes `backup.json` (which path
//! is which entry, and which did not exist), fsyncs, and renames the directory to
//! `backups/<id>`: a `backups/<id>` directory is always a complete backup.
//!
//! [`Backups::restore`] puts every path back as it was: it copies the entry to a sibling
//! `.<name>.fleetgate-restore`, moves the live path aside to `.<name>.fleetgate-old`,
//! renames the copy into place and removes the old one — so the path is at every instant
//! either the data as the new version left it or the backup, and a restore interrupted
//! at any point is simply run again (the backup itself is never changed). A path that
//! did not exist at backup time is removed.
//!
//! Copied: regular files (bytes and permission bits), directories, symlinks (as links,
//! never followed). Sockets and FIFOs are skipped (they are recreated by the app);
//! device files are refused. Ownership and timestamps are not kept.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file naming a backup's entries.
const INDEX_FILE: &str = "backup.json";
/// Prefix of a backup being written.
const PARTIAL: &str = ".partial-";

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file-system operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A backed-up path holds a device file.
    #[error("{} is a device file; backups copy files, directories and symlinks only", path.display())]
    Device {
        /// The file.
        path: PathBuf,
    },
    /// The backup to restore is missing or its index is unreadable.
    #[error("backup {id} is missing or damaged: {reason}")]
    Damaged {
        /// The backup's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

/// One backed-up path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The live path (absolute).
    path: PathBuf,
    /// Whether it existed at backup time (if not, a restore removes it).
    existed: bool,
}

/// The backup's index (`backup.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    /// The entries; entry `n` is stored as `<backup>/<n>`.
    entries: Vec<Entry>,
    /// When it was taken (unix seconds).
    taken_at: u64,
}

/// What a snapshot did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Regular files copied.
    pub files: u64,
    /// Of them, reflinked (shared blocks, no bytes copied).
    pub reflinked: u64,
    /// Bytes in the copied files.
    pub bytes: u64,
    /// Sockets and FIFOs skipped.
    pub skipped: u64,
}

/// The backups directory (`<state_dir>/backups`) and the paths it backs up.
#[derive(Debug, Clone)]
pub struct Backups {
    dir: PathBuf,
    paths: Vec<PathBuf>,
    keep: usize,
}

impl Backups {
    /// `paths` are absolute (the config resolved them).
    #[must_use]
    pub fn new(state_dir: &Path, paths: Vec<PathBuf>, keep: usize) -> Self {
        Self {
            dir: state_dir.join("backups"),
            paths,
            keep: keep.max(1),
        }
    }

    /// Where backup `id` is kept.
    #[must_use]
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Whether any path is backed up.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Copies every path into `backups/<id>` (a leftover backup of that id, complete or
    /// partial, is replaced) and makes it durable.
    ///
    /// # Errors
    /// [`BackupError`] naming the file; nothing is left under `backups/<id>`.
    pub fn snapshot(&self, id: &str, now: u64) -> Result<Copied, BackupError> {
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let partial = self.dir.join(format!("{PARTIAL}{id}"));
        let done = self.path(id);
        remove_any(&partial)?;
        remove_any(&done)?;
        std::fs::create_dir(&partial).map_err(io("create", &partial))?;
        let result = self.fill(&partial, now);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
            return result;
        }
        std::fs::rename(&partial, &done).map_err(io("rename into place", &done))?;
        sync_dir(&self.dir)?;
        result
    }

    fn fill(&self, partial: &Path, now: u64) -> Result<Copied, BackupError> {
        let mut copied = Copied::default();
        let mut entries = Vec::with_capacity(self.paths.len());
        for (n, p) in self.paths.iter().enumerate() {
            let existed = match std::fs::symlink_metadata(p) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(io("inspect", p)(e)),
            };
            if existed {
                copy_tree(p, &partial.join(n.to_string()), &mut copied)?;
            }
            entries.push(Entry {
                path: p.clone(),
                existed,
            });
        }
        let index = Index {
            entries,
            taken_at: now,
        };
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| BackupError::Damaged {
            id: partial.display().to_string(),
            reason: e.to_string(),
        })?;
        let index_path = partial.join(INDEX_FILE);
        crate::write_atomic(&index_path, &bytes, 0o600).map_err(io("write", &index_path))?;
        sync_tree(partial)?;
        Ok(copied)
    }

    /// Whether the complete backup `id` is kept (its index is there).
    #[must_use]
    pub fn is_kept(&self, id: &str) -> bool {
        self.path(id).join(INDEX_FILE).is_file()
    }

    /// Puts every backed-up path back as it was in backup `id` (idempotent).
    ///
    /// # Errors
    /// [`BackupError`]: the backup is missing or damaged, or a copy or rename failed
    /// (the path is then either as the new version left it or restored; run it again).
    pub fn restore(&self, id: &str) -> Result<Copied, BackupError> {
        let dir = self.path(id);
        let index_path = dir.join(INDEX_FILE);
        let damaged = |reason: String| BackupError::Damaged {
            id: id.to_owned(),
            reason,
        };
        let bytes = std::fs::read(&index_path)
            .map_err(|e| damaged(format!("{}: {e}", index_path.display())))?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("{}: {e}", index_path.display())))?;
        let mut copied = Copied::default();
        for (n, entry) in index.entries.iter().enumerate() {
            let live = &entry.path;
            let (Some(parent), Some(name)) = (live.parent(), live.file_name()) else {
                return Err(damaged(format!(
                    "entry {} is not a restorable path",
                    live.display()
                )));
            };
            let name = name.to_string_lossy();
            let fresh = parent.join(format!(".{name}.fleetgate-restore"));
            let old = parent.join(format!(".{name}.fleetgate-old"));
            remove_any(&fresh)?;
            if entry.existed {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
                copy_tree(&dir.join(n.to_string()), &fresh, &mut copied)?;
                sync_tree(&fresh)?;
            }
            if std::fs::symlink_metadata(live).is_ok() {
                remove_any(&old)?;
                std::fs::rename(live, &old).map_err(io("move aside", live))?;
            }
            if entry.existed {
                std::fs::rename(&fresh, live).map_err(io("rename into place", live))?;
            }
            sync_dir(parent)?;
            remove_any(&old)?;
        }
        Ok(copied)
    }

    /// Removes partial backups and all but the newest `keep` complete ones (newest by
    /// the manifest sequence that starts the id). Returns the ids removed.
    ///
    /// # Errors
    /// [`BackupError`] when the directory cannot be read or a backup removed.
    pub fn prune(&self) -> Result<Vec<String>, BackupError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.dir)(e)),
        };
        let mut complete = Vec::new();
        let mut removed = Vec::new();
        for e in entries {
            let e = e.map_err(io("read", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PARTIAL) {
                remove_any(&e.path())?;
                removed.push(name);
            } else {
                let seq = name
                    .split('-')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                complete.push((seq, name));
            }
        }
        complete.sort();
        let extra = complete.len().saturating_sub(self.keep);
        for (_, name) in complete.into_iter().take(extra) {
            remove_any(&self.dir.join(&name))?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// The ids of the complete backups, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<(u64, String)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(PARTIAL))
            .map(|n| {
                let seq = n.split('-').next().and_then(|s| s.parse().ok());
                (seq.unwrap_or(0), n)
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, n)| n).collect()
    }
}

/// Removes a file, symlink or directory tree; absent is fine.
fn remove_any(p: &Path) -> Result<(), BackupError> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("inspect", p)(e)),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(io("remove", p)),
        Ok(_) => std::fs::remove_file(p).map_err(io("remove", p)),
    }
}

/// Copies `src` (file, symlink or directory tree; never following symlinks) to `dst`,
/// which must not exist.
fn copy_tree(src: &Path, dst: &Path, copied: &mut Copied) -> Result<(), BackupError> {
    let meta = std::fs::symlink_metadata(src).map_err(io("inspect", src))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(io("read link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(io("create link", dst))?;
    } else if ft.is_dir() {
        std::fs::create_dir(dst).map_err(io("create", dst))?;
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(io("read", src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io("read", src))?;
        names.sort();
        for name in names {
            copy_tree(&src.join(&name), &dst.join(&name), copied)?;
        }
        std::fs::set_permissions(dst, meta.permissions()).map_err(io("set mode of", dst))?;
    } else if ft.is_file() {
        if reflink_copy::reflink_or_copy(src, dst)
            .map_err(io("copy", src))?
            .is_none()
        {
            copied.reflinked += 1;
        }
        copied.files += 1;
        copied.bytes += meta.len();
        let mode = std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777);
        std::fs::set_permissions(dst, mode).map_err(io("set mode of", dst))?;
    } else if ft.is_socket() || ft.is_fifo() {
        copied.skipped += 1;
    } else {
        return Err(BackupError::Device {
            path: src.to_owned(),
        });
    }
    Ok(())
}

/// fsyncs every file and directory under `p` (a fresh copy, before it is renamed into
/// place: the rename must not become durable before the bytes).
fn sync_tree(p: &Path) -> Result<(), BackupError> {
    let meta = std::fs::symlink_metadata(p).map_err(io("inspect", p))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p).map_err(io("read", p))? {
            let e = e.map_err(io("read", p))?;
            sync_tree(&e.path())?;
        }
        sync_dir(p)
    } else if meta.is_file() {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(io("sync", p))
    } else {
        Ok(())
    }
}

fn sync_dir(p: &Path) -> Result<(), BackupError> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every path under `root` with what it is: file bytes and mode, link target, dir.
    fn tree(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link {}", std::fs::read_link(p).unwrap().display()),
                );
            } else if m.is_dir() {
                out.insert(rel, format!("dir {:o}", m.permissions().mode() & 0o777));
                for e in std::fs::read_dir(p).unwrap() {
                    walk(root, &e.unwrap().path(), out);
                }
            } else {
                let bytes = std::fs::read(p).unwrap();
                out.insert(
                    rel,
                    format!(
                        "file {:o} {}",
                        m.permissions().mode() & 0o777,
                        hex::encode(bytes)
                    ),
                );
            }
        }
        if root.exists() {
            walk(root, root, &mut out);
        }
        out
    }

    #[test]
    fn a_restore_puts_back_files_dirs_links_and_modes_and_removes_what_was_absent() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("schema"), "v1\n").unwrap();
        std::fs::write(data.join("sub/blob.bin"), [0u8, 1, 2, 255]).unwrap();
        std::fs::set_permissions(data.join("sub/blob.bin"), PermissionsExt::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("schema", data.join("link")).unwrap();
        let single = t.path().join("settings.json");
        std::fs::write(&single, "{}").unwrap();
        let absent = t.path().join("cache");
        let b = Backups::new(
            &t.path().join("state"),
            vec![data.clone(), single.clone(), absent.clone()],
            2,
        );
        let before = (tree(&data), std::fs::read(&single).unwrap());
        let c = b.snapshot("2-2-abc", 7).unwrap();
        assert_eq!((c.files, c.bytes), (3, 9), "{c:?}");
        assert_eq!(b.list(), vec!["2-2-abc".to_owned()]);

        // The new version rewrites, deletes and creates.
        std::fs::write(data.join("schema"), "v2\n").unwrap();
        std::fs::remove_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("v2.log"), "x").unwrap();
        std::fs::write(&single, "{\"v\":2}").unwrap();
        std::fs::create_dir(&absent).unwrap();
        std::fs::write(absent.join("c"), "c").unwrap();

        b.restore("2-2-abc").unwrap();
        assert_eq!((tree(&data), std::fs::read(&single).unwrap()), before);
        assert!(!absent.exists(), "a path absent at backup time is removed");
        // Again: idempotent, and the backup is unchanged by a restore.
        b.restore("2-2-abc").unwrap();
        assert_eq!((tree(&data), std::fs::read(&single).unwrap()), before);
        // No leftovers beside the restored paths.
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("fleetgate"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_restore_interrupted_after_moving_the_live_path_aside_completes_when_run_again() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a"), "old").unwrap();
        let b = Backups::new(&t.path().join("state"), vec![data.clone()], 3);
        b.snapshot("1-1-a", 1).unwrap();
        std::fs::write(data.join("a"), "new").unwrap();
        // A crash between "move aside" and "rename into place": the live path is gone,
        // the old one and a half-written restore copy lie beside it.
        std::fs::rename(&data, t.path().join(".data.fleetgate-old")).unwrap();
        std::fs::create_dir(t.path().join(".data.fleetgate-restore")).unwrap();
        b.restore("1-1-a").unwrap();
        assert_eq!(std::fs::read_to_string(data.join("a")).unwrap(), "old");
        assert!(!t.path().join(".data.fleetgate-old").exists());
        assert!(!t.path().join(".data.fleetgate-restore").exists());
    }

    #[test]
    fn prune_keeps_the_newest_by_sequence_and_drops_partials() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("d");
        std::fs::write(&data, "x").unwrap();
        let b = Backups::new(&t.path().join("state"), vec![data], 2);
        for id in ["9-9-a", "10-10-b", "11-2-c"] {
            b.snapshot(id, 1).unwrap();
        }
        std::fs::create_dir(b.dir.join(".partial-12-12-d")).unwrap();
        let removed = b.prune().unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(b.list(), vec!["10-10-b".to_owned(), "11-2-c".to_owned()]);
    }

    #[test]
    fn a_damaged_or_missing_backup_is_an_error_naming_it_and_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("d");
        std::fs::write(&data, "live").unwrap();
        let b = Backups::new(&t.path().join("state"), vec![data.clone()], 2);
        let e = b.restore("5-5-x").unwrap_err();
        assert!(e.to_string().contains("backup 5-5-x is missing"), "{e}");
        b.snapshot("5-5-x", 1).unwrap();
        std::fs::write(b.path("5-5-x").join(INDEX_FILE), "{").unwrap();
        let e = b.restore("5-5-x").unwrap_err();
        assert!(matches!(e, BackupError::Damaged { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&data).unwrap(), "live");
    }

    #[test]
    fn a_fifo_is_skipped_and_a_failed_snapshot_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a"), "a").unwrap();
        nix::unistd::mkfifo(&data.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let b = Backups::new(&t.path().join("state"), vec![data.clone()], 2);
        let c = b.snapshot("1-1-a", 1).unwrap();
        assert_eq!((c.files, c.skipped), (1, 1));
        // A file that cannot be backed up fails the snapshot, naming it, and no partial
        // backup is left: a device file as root (who reads anything), an unreadable
        // file otherwise.
        let bad = data.join("bad");
        if nix::unistd::geteuid().is_root() {
            nix::sys::stat::mknod(
                &bad,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::S_IRUSR,
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
        } else {
            std::fs::write(&bad, "secret").unwrap();
            std::fs::set_permissions(&bad, PermissionsExt::from_mode(0o000)).unwrap();
        }
        let e = b.snapshot("2-2-b", 1).unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        assert_eq!(b.list(), vec!["1-1-a".to_owned()]);
        std::fs::remove_file(&bad).unwrap();
        let names: Vec<_> = std::fs::read_dir(&b.dir).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
