//! Slots: one directory per installed version under `<state_dir>/slots/`, and the
//! `current` symlink that names the committed one.
//!
//! A slot is fetched into `slots/.partial-<name>` and renamed into place only when the
//! checkout is complete, so a `slots/<name>` directory is always a whole checkout. Its
//! code hash is computed with the scheme the manifest names: `git` with
//! [`fleetgate_codehash::worktree_code_hash`] (the definition's formula over the
//! checkout's bytes, one SHA-256 pass: equal to the manifest's hash only if the files
//! on disk are the signed ones), and on a mismatch [`fleetgate_codehash::code_hash_at`]
//! (THE definition, over the commit's tree) and a file-by-file comparison name what
//! differs; `hart` with
//! [`fleetgate_codehash::hart_code_hash_dir`] over the checked-out files on disk
//! (before the install step runs). Either way what will run is exactly what was signed.

use fleetgate_codehash::CodeHashConfig;
use fleetgate_trust::HashScheme;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Why a slot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// A git operation failed (remote missing, commit not found, checkout).
    #[error("failed to {action} (remote {remote}, commit {commit}): {message}")]
    Git {
        /// What.
        action: &'static str,
        /// The remote.
        remote: String,
        /// The commit.
        commit: String,
        /// libgit2's message.
        message: String,
        /// The commit is not in the remote (the release is wrong, not the network).
        missing_commit: bool,
    },
    /// The checked-out tree does not hash to the manifest's code hash.
    #[error(
        "code hash mismatch in slot {slot}: the manifest says {expected}, commit {commit} hashes to {actual}"
    )]
    CodeHashMismatch {
        /// The slot.
        slot: String,
        /// The commit.
        commit: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A file on disk differs from the commit's tree.
    #[error("slot {slot}: file {path} on disk does not match the commit's tree ({reason})")]
    TreeMismatch {
        /// The slot.
        slot: String,
        /// The file.
        path: String,
        /// What differs.
        reason: String,
    },
    /// The manifest names no commit to fetch.
    #[error("the manifest names no commit to fetch for version {version}")]
    NoCommit {
        /// The version.
        version: String,
    },
    /// Computing the code hash failed.
    #[error("failed to compute the code hash of slot {slot}: {message}")]
    Hash {
        /// The slot.
        slot: String,
        /// Why.
        message: String,
    },
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
    /// A slot name that could escape the slots directory.
    #[error("invalid slot name {0:?}")]
    BadName(String),
}

impl SlotError {
    /// The release itself is wrong (never retried), rather than a transient failure.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Git { missing_commit, .. } => *missing_commit,
            Self::CodeHashMismatch { .. }
            | Self::TreeMismatch { .. }
            | Self::NoCommit { .. }
            | Self::BadName(_) => true,
            Self::Hash { .. } | Self::Io { .. } => false,
        }
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SlotError + use<'a> {
    move |source| SlotError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The slots directory and the `current` link.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
    current_link: PathBuf,
}

fn check_name(name: &str) -> Result<(), SlotError> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SlotError::BadName(name.to_owned()));
    }
    Ok(())
}

impl Slots {
    /// Slots under `<state_dir>/slots`, link at `<state_dir>/current`.
    #[must_use]
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("slots"),
            current_link: state_dir.join("current"),
        }
    }

    /// `slots/<name>`.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether `slots/<name>` exists.
    #[must_use]
    pub fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.path(name).is_dir()
    }

    /// Where `current` points (the slot name), if it exists.
    #[must_use]
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(&self.current_link).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Fetches `commit` from `remote` into a new slot `name` and verifies it.
    ///
    /// # Errors
    /// [`SlotError`]; on error nothing is left at `slots/<name>`.
    pub fn fetch(
        &self,
        name: &str,
        remote: &str,
        commit: &str,
        expected_code_hash: &str,
        scheme: HashScheme,
        cfg: &CodeHashConfig,
    ) -> Result<PathBuf, SlotError> {
        check_name(name)?;
        if commit.is_empty() {
            return Err(SlotError::NoCommit {
                version: name.to_owned(),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let dest = self.path(name);
        let partial = self.dir.join(format!(".partial-{name}"));
        remove_dir_if_exists(&partial)?;
        remove_dir_if_exists(&dest)?;
        let git = |action: &'static str, e: git2::Error, missing: bool| SlotError::Git {
            action,
            remote: remote.to_owned(),
            commit: commit.to_owned(),
            message: e.message().to_owned(),
            missing_commit: missing,
        };
        {
            let repo = git2::Repository::init(&partial).map_err(|e| git("init slot", e, false))?;
            let mut r = repo
                .remote_anonymous(remote)
                .map_err(|e| git("open remote", e, false))?;
            r.fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                None,
                None,
            )
            .map_err(|e| git("fetch", e, false))?;
            let oid = git2::Oid::from_str(commit).map_err(|e| git("parse commit id", e, true))?;
            let c = repo
                .find_commit(oid)
                .map_err(|e| git("find the commit after fetch", e, true))?;
            repo.checkout_tree(
                c.as_object(),
                Some(git2::build::CheckoutBuilder::new().force()),
            )
            .map_err(|e| git("check out", e, false))?;
            repo.set_head_detached(oid)
                .map_err(|e| git("detach HEAD", e, false))?;
        }
        match verify_tree(&partial, name, commit, expected_code_hash, scheme, cfg) {
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        }
        fsync_dir(&partial)?;
        std::fs::rename(&partial, &dest).map_err(io("move slot into place at", &dest))?;
        fsync_dir(&self.dir)?;
        Ok(dest)
    }

    /// Empties `slots/.partial-<name>` and `slots/.download-<name>` for an install
    /// from built artifacts ([`crate::artifacts`]); returns both.
    ///
    /// # Errors
    /// [`SlotError::Io`].
    pub fn begin_partial(&self, name: &str) -> Result<(PathBuf, PathBuf), SlotError> {
        check_name(name)?;
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let partial = self.dir.join(format!(".partial-{name}"));
        let downloads = self.dir.join(format!(".download-{name}"));
        for p in [&partial, &downloads, &self.path(name)] {
            remove_dir_if_exists(p)?;
        }
        for p in [&partial, &downloads] {
            std::fs::create_dir(p).map_err(io("create", p))?;
        }
        Ok((partial, downloads))
    }

    /// Moves a complete `slots/.partial-<name>` into place and drops its downloads.
    ///
    /// # Errors
    /// [`SlotError::Io`].
    pub fn finish_partial(&self, name: &str) -> Result<PathBuf, SlotError> {
        check_name(name)?;
        let partial = self.dir.join(format!(".partial-{name}"));
        let dest = self.path(name);
        fsync_dir(&partial)?;
        std::fs::rename(&partial, &dest).map_err(io("move slot into place at", &dest))?;
        fsync_dir(&self.dir)?;
        remove_dir_if_exists(&self.dir.join(format!(".download-{name}")))?;
        Ok(dest)
    }

    /// Re-verifies an existing slot (used before reusing the previous slot): a slot
    /// installed from artifacts against the digests recorded at install
    /// ([`crate::artifacts::verify_files`]), a checkout against the code hash.
    ///
    /// # Errors
    /// As [`Self::fetch`]'s verification.
    pub fn verify(
        &self,
        name: &str,
        commit: &str,
        expected_code_hash: &str,
        scheme: HashScheme,
        cfg: &CodeHashConfig,
    ) -> Result<(), SlotError> {
        check_name(name)?;
        if crate::artifacts::is_artifact_slot(&self.path(name)) {
            return crate::artifacts::verify_files(&self.path(name)).map_err(|reason| {
                SlotError::TreeMismatch {
                    slot: name.to_owned(),
                    path: crate::artifacts::FILES_LIST.to_owned(),
                    reason,
                }
            });
        }
        verify_tree(
            &self.path(name),
            name,
            commit,
            expected_code_hash,
            scheme,
            cfg,
        )
    }

    /// Points `current` at `slots/<name>` atomically (symlink to a temporary name, rename
    /// over `current`, fsync the directory).
    ///
    /// # Errors
    /// [`SlotError::Io`].
    pub fn switch_current(&self, name: &str) -> Result<(), SlotError> {
        check_name(name)?;
        let parent = self
            .current_link
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        let tmp = parent.join(format!(".current.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let target = Path::new("slots").join(name);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io("create symlink", &tmp))?;
        std::fs::rename(&tmp, &self.current_link)
            .map_err(io("switch current to", &self.current_link))?;
        fsync_dir(&parent)
    }

    /// Removes `slots/<name>` and its partial download, if present.
    ///
    /// # Errors
    /// [`SlotError::Io`].
    pub fn remove(&self, name: &str) -> Result<(), SlotError> {
        check_name(name)?;
        remove_dir_if_exists(&self.dir.join(format!(".partial-{name}")))?;
        remove_dir_if_exists(&self.dir.join(format!(".download-{name}")))?;
        remove_dir_if_exists(&self.path(name))
    }

    /// Removes every slot (and partial download) not in `keep`.
    ///
    /// # Errors
    /// [`SlotError::Io`].
    pub fn prune(&self, keep: &[String]) -> Result<Vec<String>, SlotError> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(io("list", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            remove_dir_if_exists(&entry.path())?;
            removed.push(name);
        }
        Ok(removed)
    }
}

fn remove_dir_if_exists(p: &Path) -> Result<(), SlotError> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", p)(e)),
    }
}

fn fsync_dir(p: &Path) -> Result<(), SlotError> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", p))
}

fn verify_tree(
    dir: &Path,
    slot: &str,
    commit: &str,
    expected: &str,
    scheme: HashScheme,
    cfg: &CodeHashConfig,
) -> Result<(), SlotError> {
    let hash_err = |e: fleetgate_codehash::CodeHashError| SlotError::Hash {
        slot: slot.to_owned(),
        message: e.to_string(),
    };
    if scheme == HashScheme::Hart {
        // HART's scheme hashes the files on disk: that is what will run.
        let ch =
            fleetgate_codehash::hart_code_hash_dir(dir, commit.to_owned()).map_err(hash_err)?;
        if ch.code_hash != expected {
            return Err(SlotError::CodeHashMismatch {
                slot: slot.to_owned(),
                commit: commit.to_owned(),
                expected: expected.to_owned(),
                actual: ch.code_hash,
            });
        }
        return Ok(());
    }
    // One pass: the commit's tracked files as they are on disk, SHA-256 only. A match
    // proves the files that will run are the signed ones; anything else (an edited,
    // missing or unreadable file, or a commit that hashes differently) is diagnosed
    // below from the commit's own objects, which name what differs.
    if fleetgate_codehash::worktree_code_hash(dir, commit, cfg)
        .is_ok_and(|ch| ch.code_hash == expected)
    {
        return Ok(());
    }
    let ch = fleetgate_codehash::code_hash_at(dir, commit, cfg).map_err(hash_err)?;
    if ch.code_hash != expected {
        return Err(SlotError::CodeHashMismatch {
            slot: slot.to_owned(),
            commit: commit.to_owned(),
            expected: expected.to_owned(),
            actual: ch.code_hash,
        });
    }
    // The hash covers the commit's tree; check the working tree we will run matches it.
    for (path, want) in &ch.files {
        let p = dir.join(path);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| SlotError::TreeMismatch {
            slot: slot.to_owned(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let got = if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&p).map_err(io("read link", &p))?;
            hex::encode(Sha256::digest(t.as_os_str().as_encoded_bytes()))
        } else if meta.is_dir() {
            // A submodule: its hash is the commit id, not checked out by this agent.
            continue;
        } else {
            let bytes = std::fs::read(&p).map_err(io("read", &p))?;
            hex::encode(Sha256::digest(&bytes))
        };
        if &got != want {
            return Err(SlotError::TreeMismatch {
                slot: slot.to_owned(),
                path: path.clone(),
                reason: format!("sha256 {got}, tree says {want}"),
            });
        }
    }
    Ok(())
}
