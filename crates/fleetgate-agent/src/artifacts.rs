//! Built artifacts: download by digest, check, and install into a fresh slot.
//!
//! A release manifest that lists `artifacts` (name, SHA-256, size; signed with the rest)
//! is installed from them instead of from a git checkout. For each artifact the agent
//! GETs `{artifacts_url}/{sha256}` (the orchestrator's content-addressed store, or any
//! static server), streams it to disk while counting and hashing — more bytes than the
//! signed size abort the download at once — and uses it only when both size and digest
//! match. It is then installed into `slots/.partial-<slot>`:
//!
//! - `.tar`, `.tar.gz`, `.tgz`: unpacked at the slot's root, **safely**: every entry path
//!   is relative with no `..`; only regular files, directories and symlinks whose target
//!   stays inside the slot are created — judged alone as each is made, then again once
//!   every entry is in place, followed through the other links as the kernel would (a
//!   chain of links that each stay inside but together lead out, or a loop, is refused);
//!   hard links, device files and FIFOs are refused;
//!   nothing is written through a symlink or over an existing file; modes are kept
//!   without setuid/setgid/sticky or group/other write; the total size, the number of
//!   entries and the ratio of unpacked to compressed bytes are limited ([`Limits`]).
//! - `.zip`: unpacked under the same rules (stored or deflated entries; encrypted
//!   entries refused; a symlink is an entry whose Unix mode says so, its target is its
//!   content).
//! - anything else: placed at `name` (parents created), mode 0755.
//!
//! The slot gets `.fleetgate-files.json`: the SHA-256 of every regular file installed,
//! so a kept slot is verified again before it is reused ([`verify_files`]). Any refusal
//! leaves nothing: the caller removes the partial slot.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use fleetgate_trust::Artifact;

/// The file, in an artifact slot, listing the SHA-256 of each installed file.
pub const FILES_LIST: &str = fleetgate_trust::RESERVED_ARTIFACT_NAME;

/// Limits on what unpacking one release may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes written in total (all artifacts).
    pub max_bytes: u64,
    /// Entries (files, directories, links) in total.
    pub max_entries: u64,
    /// Unpacked bytes per compressed byte of a compressed archive.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 30,
            max_entries: 200_000,
            max_ratio: 200,
        }
    }
}

/// Why an artifact was not installed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The manifest lists artifacts but `artifacts_url` is not configured.
    #[error(
        "the release ships built artifacts but this node has no `artifacts_url` in node.toml; set it to where the orchestrator serves them (e.g. https://fleet.example.com:7000/artifacts)"
    )]
    NoSource,
    /// The server could not be reached or the transfer broke.
    #[error("failed to download artifact {name} from {url}: {message}")]
    Transport {
        /// The artifact.
        name: String,
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The server answered something other than 200.
    #[error("failed to download artifact {name}: {url} answered HTTP {status}")]
    Status {
        /// The artifact.
        name: String,
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// More or fewer bytes than the signed size.
    #[error("artifact {name}: the manifest says {expected} bytes, the download has {got}")]
    Size {
        /// The artifact.
        name: String,
        /// Signed size.
        expected: u64,
        /// Received (or at least this many, when cut off).
        got: u64,
    },
    /// The bytes do not hash to the signed digest.
    #[error("artifact {name}: SHA-256 is {actual}, the manifest says {expected}")]
    Digest {
        /// The artifact.
        name: String,
        /// Signed digest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// An archive entry that would escape the slot or is not allowed.
    #[error("artifact {name}: entry {entry:?} refused: {reason}")]
    Unsafe {
        /// The artifact.
        name: String,
        /// The entry's path.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A limit was reached.
    #[error("artifact {name}: {what} exceeds the limit of {limit}")]
    Limit {
        /// The artifact.
        name: String,
        /// What (bytes, entries, compression ratio).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The archive is damaged or of an unsupported kind.
    #[error("artifact {name}: {reason}")]
    Format {
        /// The artifact.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The node could not prepare or finish the slot (disk, permissions, a failed
    /// task): the node's fault, not the release's.
    #[error("slot {slot}: {reason}")]
    Local {
        /// The slot.
        slot: String,
        /// What failed.
        reason: String,
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
}

impl ArtifactError {
    /// The release itself is wrong (digest, size, unsafe or oversized archive): never
    /// retried on this node. Network and configuration problems are not.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Size { .. }
                | Self::Digest { .. }
                | Self::Unsafe { .. }
                | Self::Limit { .. }
                | Self::Format { .. }
        )
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError {
    let path = path.to_owned();
    move |source| ArtifactError::Io {
        action,
        path,
        source,
    }
}

/// Downloads `artifact` from `{base_url}/{sha256}` into `dest` (created new), checking
/// size while streaming and the digest at the end.
///
/// # Errors
/// [`ArtifactError`]; `dest` may hold a partial download (the caller's partial slot).
pub async fn download(
    client: &reqwest::Client,
    base_url: &str,
    artifact: &Artifact,
    dest: &Path,
) -> Result<(), ArtifactError> {
    let url = format!("{}/{}", base_url.trim_end_matches('/'), artifact.sha256);
    let name = &artifact.name;
    let transport = |e: reqwest::Error| ArtifactError::Transport {
        name: name.clone(),
        url: url.clone(),
        message: e.to_string(),
    };
    let mut resp = client.get(&url).send().await.map_err(transport)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(ArtifactError::Status {
            name: name.clone(),
            url: url.clone(),
            status: resp.status().as_u16(),
        });
    }
    if let Some(len) = resp.content_length()
        && len != artifact.size
    {
        return Err(ArtifactError::Size {
            name: name.clone(),
            expected: artifact.size,
            got: len,
        });
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io("create", dest))?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        got = got.saturating_add(chunk.len() as u64);
        if got > artifact.size {
            return Err(ArtifactError::Size {
                name: name.clone(),
                expected: artifact.size,
                got,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io("write", dest))?;
    }
    if got != artifact.size {
        return Err(ArtifactError::Size {
            name: name.clone(),
            expected: artifact.size,
            got,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if actual != artifact.sha256 {
        return Err(ArtifactError::Digest {
            name: name.clone(),
            expected: artifact.sha256.clone(),
            actual,
        });
    }
    file.sync_all().map_err(io("sync", dest))?;
    Ok(())
}

/// What kind of file an artifact is, by its name.
fn archive_kind(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Some("tar.gz")
    } else if n.ends_with(".tar") {
        Some("tar")
    } else if n.ends_with(".zip") {
        Some("zip")
    } else {
        None
    }
}

/// Installs downloaded artifacts (`(artifact, downloaded file)`, digests already
/// checked) into `root`, then writes [`FILES_LIST`].
///
/// # Errors
/// [`ArtifactError`]; the caller removes `root`.
pub fn install(
    root: &Path,
    downloaded: &[(Artifact, PathBuf)],
    limits: Limits,
) -> Result<(), ArtifactError> {
    let mut w = Writer {
        root: root.to_owned(),
        limits,
        bytes: 0,
        entries: 0,
        files: BTreeMap::new(),
        links: Vec::new(),
    };
    for (a, file) in downloaded {
        match archive_kind(&a.name) {
            Some("tar.gz") => {
                let f = std::fs::File::open(file).map_err(io("open", file))?;
                let budget = a.size.saturating_mul(limits.max_ratio).max(1 << 20);
                w.unpack_tar(&a.name, flate2::read::GzDecoder::new(f), Some(budget))?;
            }
            Some("tar") => {
                let f = std::fs::File::open(file).map_err(io("open", file))?;
                w.unpack_tar(&a.name, f, None)?;
            }
            Some(_) => {
                let f = std::fs::File::open(file).map_err(io("open", file))?;
                let budget = a.size.saturating_mul(limits.max_ratio).max(1 << 20);
                w.unpack_zip(&a.name, f, budget)?;
            }
            None => {
                let rel = safe_rel(&a.name, Path::new(&a.name))?;
                let mut f = std::fs::File::open(file).map_err(io("open", file))?;
                w.write_file(&a.name, &rel, &mut f, 0o755, None)?;
            }
        }
    }
    // Each link was judged alone as it was made; followed through the others (made
    // before or after it), it must still stay inside.
    for (name, rel) in &w.links {
        if let Some(reason) = escapes(root, rel) {
            return Err(ArtifactError::Unsafe {
                name: name.clone(),
                entry: rel.display().to_string(),
                reason,
            });
        }
    }
    let list = serde_json::to_vec_pretty(&w.files).unwrap_or_default();
    let path = root.join(FILES_LIST);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .and_then(|mut f| f.write_all(&list).and_then(|()| f.sync_all()))
        .map_err(io("write", &path))?;
    Ok(())
}

/// Checks every file [`FILES_LIST`] names still hashes to its recorded digest.
///
/// # Errors
/// A message naming the first file that differs or is missing.
pub fn verify_files(root: &Path) -> Result<(), String> {
    let path = root.join(FILES_LIST);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let files: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    for (rel, want) in files {
        let p = root.join(&rel);
        let mut f = std::fs::File::open(&p).map_err(|e| format!("{rel}: {e}"))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("{rel}: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if got != want {
            return Err(format!("{rel} hashes to {got}, it was installed as {want}"));
        }
    }
    Ok(())
}

/// Whether a slot was installed from artifacts.
#[must_use]
pub fn is_artifact_slot(root: &Path) -> bool {
    root.join(FILES_LIST).is_file()
}

/// A relative path of normal components only (`.` parts dropped).
fn safe_rel(name: &str, p: &Path) -> Result<PathBuf, ArtifactError> {
    let unsafe_ = |reason: &str| ArtifactError::Unsafe {
        name: name.to_owned(),
        entry: p.display().to_string(),
        reason: reason.to_owned(),
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_("the path contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_("the path is absolute"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(unsafe_("the path is empty"));
    }
    if out == Path::new(FILES_LIST) {
        return Err(unsafe_("the name is reserved by the agent"));
    }
    Ok(out)
}

struct Writer {
    root: PathBuf,
    limits: Limits,
    bytes: u64,
    entries: u64,
    files: BTreeMap<String, String>,
    /// Every symlink made: `(artifact, path in the slot)`.
    links: Vec<(String, PathBuf)>,
}

impl Writer {
    fn count_entry(&mut self, name: &str) -> Result<(), ArtifactError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArtifactError::Limit {
                name: name.to_owned(),
                what: "the number of entries",
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Refuses a path whose existing ancestors (inside the root) include a symlink, then
    /// creates the missing parent directories.
    fn prepare_parent(&self, name: &str, rel: &Path) -> Result<(), ArtifactError> {
        let mut cur = self.root.clone();
        let parent = rel.parent().unwrap_or(Path::new(""));
        for c in parent.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ArtifactError::Unsafe {
                        name: name.to_owned(),
                        entry: rel.display().to_string(),
                        reason: "it would be written through a symlink".into(),
                    });
                }
                Ok(m) if !m.is_dir() => {
                    return Err(ArtifactError::Unsafe {
                        name: name.to_owned(),
                        entry: rel.display().to_string(),
                        reason: format!("{} is not a directory", c.as_os_str().to_string_lossy()),
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&cur).map_err(io("create", &cur))?;
                }
                Err(e) => return Err(io("inspect", &cur)(e)),
            }
        }
        Ok(())
    }

    /// Writes one regular file (new; never over an existing one), within the limits.
    fn write_file(
        &mut self,
        name: &str,
        rel: &Path,
        src: &mut dyn Read,
        mode: u32,
        budget: Option<&mut u64>,
    ) -> Result<(), ArtifactError> {
        self.count_entry(name)?;
        self.prepare_parent(name, rel)?;
        let dest = self.root.join(rel);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ArtifactError::Unsafe {
                        name: name.to_owned(),
                        entry: rel.display().to_string(),
                        reason: "a file of that name was already installed".into(),
                    }
                } else {
                    io("create", &dest)(e)
                }
            })?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut budget = budget;
        loop {
            let n = src.read(&mut buf).map_err(|e| ArtifactError::Format {
                name: name.to_owned(),
                reason: format!("reading {}: {e}", rel.display()),
            })?;
            if n == 0 {
                break;
            }
            self.bytes += n as u64;
            if self.bytes > self.limits.max_bytes {
                return Err(ArtifactError::Limit {
                    name: name.to_owned(),
                    what: "the unpacked size in bytes",
                    limit: self.limits.max_bytes,
                });
            }
            if let Some(b) = budget.as_deref_mut() {
                if (n as u64) > *b {
                    return Err(ArtifactError::Limit {
                        name: name.to_owned(),
                        what: "the compression ratio (unpacked bytes per compressed byte)",
                        limit: self.limits.max_ratio,
                    });
                }
                *b -= n as u64;
            }
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(io("write", &dest))?;
        }
        f.sync_all().map_err(io("sync", &dest))?;
        let perm = std::fs::Permissions::from_mode(mode & 0o755);
        std::fs::set_permissions(&dest, perm).map_err(io("set mode of", &dest))?;
        self.files.insert(
            rel.to_string_lossy().into_owned(),
            hex::encode(hasher.finalize()),
        );
        Ok(())
    }

    /// Creates directory `rel` (an existing directory is fine).
    fn make_dir(&mut self, name: &str, rel: &Path) -> Result<(), ArtifactError> {
        self.count_entry(name)?;
        self.prepare_parent(name, rel)?;
        let dest = self.root.join(rel);
        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(ArtifactError::Unsafe {
                name: name.to_owned(),
                entry: rel.display().to_string(),
                reason: "a non-directory of that name exists".into(),
            }),
            Err(_) => std::fs::create_dir(&dest).map_err(io("create", &dest)),
        }
    }

    /// Creates symlink `rel` → `target`, only when the target stays inside the slot.
    fn make_link(&mut self, name: &str, rel: &Path, target: &Path) -> Result<(), ArtifactError> {
        let unsafe_ = |reason: String| ArtifactError::Unsafe {
            name: name.to_owned(),
            entry: rel.display().to_string(),
            reason,
        };
        if !stays_inside(rel, target) {
            return Err(unsafe_(format!(
                "the symlink points outside the slot ({})",
                target.display()
            )));
        }
        self.prepare_parent(name, rel)?;
        let dest = self.root.join(rel);
        std::os::unix::fs::symlink(target, &dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                unsafe_("a file of that name was already installed".into())
            } else {
                io("create link", &dest)(e)
            }
        })?;
        self.links.push((name.to_owned(), rel.to_owned()));
        Ok(())
    }

    fn unpack_zip(
        &mut self,
        name: &str,
        file: std::fs::File,
        budget: u64,
    ) -> Result<(), ArtifactError> {
        let format = |e: zip::result::ZipError| ArtifactError::Format {
            name: name.to_owned(),
            reason: format!("not a readable zip archive: {e}"),
        };
        let mut budget = budget;
        let mut archive = zip::ZipArchive::new(file).map_err(format)?;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(format)?;
            let raw = PathBuf::from(entry.name().map_err(format)?.into_owned());
            let unsafe_ = |reason: &str| ArtifactError::Unsafe {
                name: name.to_owned(),
                entry: raw.display().to_string(),
                reason: reason.to_owned(),
            };
            if entry.encrypted() {
                return Err(unsafe_("encrypted entries are not installed"));
            }
            let kind = entry.unix_mode().map_or(0, |m| m & 0o170_000);
            if entry.is_dir() {
                if raw.components().all(|c| matches!(c, Component::CurDir)) {
                    continue;
                }
                self.make_dir(name, &safe_rel(name, &raw)?)?;
            } else if entry.is_symlink() {
                let rel = safe_rel(name, &raw)?;
                self.count_entry(name)?;
                let mut target = String::new();
                (&mut entry)
                    .take(4096)
                    .read_to_string(&mut target)
                    .map_err(|e| ArtifactError::Format {
                        name: name.to_owned(),
                        reason: format!("reading the target of {}: {e}", raw.display()),
                    })?;
                self.make_link(name, &rel, Path::new(&target))?;
            } else if kind != 0 && kind != 0o100_000 {
                return Err(unsafe_("device files, FIFOs and sockets are not installed"));
            } else {
                let rel = safe_rel(name, &raw)?;
                let mode = entry.unix_mode().unwrap_or(0o644);
                self.write_file(name, &rel, &mut entry, mode, Some(&mut budget))?;
            }
        }
        Ok(())
    }

    fn unpack_tar(
        &mut self,
        name: &str,
        reader: impl Read,
        budget: Option<u64>,
    ) -> Result<(), ArtifactError> {
        let format = |e: std::io::Error| ArtifactError::Format {
            name: name.to_owned(),
            reason: format!("not a readable tar archive: {e}"),
        };
        let mut budget = budget;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(format)? {
            let mut entry = entry.map_err(format)?;
            let raw = entry.path().map_err(format)?.into_owned();
            let kind = entry.header().entry_type();
            let unsafe_ = |reason: &str| ArtifactError::Unsafe {
                name: name.to_owned(),
                entry: raw.display().to_string(),
                reason: reason.to_owned(),
            };
            if matches!(kind, tar::EntryType::XGlobalHeader) {
                continue;
            }
            // A directory entry "./" is the root itself.
            if kind.is_dir() && raw.components().all(|c| matches!(c, Component::CurDir)) {
                continue;
            }
            let rel = safe_rel(name, &raw)?;
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mode = entry.header().mode().unwrap_or(0o644);
                    self.write_file(name, &rel, &mut entry, mode, budget.as_mut())?;
                }
                tar::EntryType::Directory => self.make_dir(name, &rel)?,
                tar::EntryType::Symlink => {
                    self.count_entry(name)?;
                    let target = entry
                        .link_name()
                        .map_err(format)?
                        .ok_or_else(|| unsafe_("a symlink without a target"))?
                        .into_owned();
                    self.make_link(name, &rel, &target)?;
                }
                tar::EntryType::Link => return Err(unsafe_("hard links are not installed")),
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(unsafe_("device files are not installed"));
                }
                tar::EntryType::Fifo => return Err(unsafe_("FIFOs are not installed")),
                other => {
                    return Err(unsafe_(&format!("entry type {other:?} is not installed")));
                }
            }
        }
        Ok(())
    }
}

/// Whether a symlink at `rel` (relative to the slot) pointing to `target` resolves,
/// lexically, to a path inside the slot.
fn stays_inside(rel: &Path, target: &Path) -> bool {
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The most symlinks [`escapes`] follows resolving one path (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Resolves the symlink at `rel` inside `root` the way the kernel would, following every
/// symlink met on the way (as they are on disk now), without leaving `root`: `Some(why)`
/// when the resolution leaves the slot or loops. A component that does not exist is
/// taken as it is written (a dangling link must not point outside either).
fn escapes(root: &Path, rel: &Path) -> Option<String> {
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    let push_rev = |pending: &mut Vec<std::ffi::OsString>, p: &Path| -> bool {
        let mut parts = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(x) => parts.push(x.to_owned()),
                Component::CurDir => {}
                Component::ParentDir => parts.push("..".into()),
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        pending.extend(parts.into_iter().rev());
        true
    };
    push_rev(&mut pending, rel);
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if at.pop().is_none() {
                return Some(format!(
                    "the symlink, followed through the links around it, points outside the slot ({})",
                    rel.display()
                ));
            }
            continue;
        }
        at.push(part);
        let here: PathBuf = at.iter().fold(root.to_owned(), |p, c| p.join(c));
        let is_link = std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Some(format!(
                "the symlink is part of a loop (more than {MAX_LINK_HOPS} links followed)"
            ));
        }
        let Ok(target) = std::fs::read_link(&here) else {
            return Some("the symlink cannot be read back".into());
        };
        at.pop();
        if !push_rev(&mut pending, &target) {
            return Some(format!(
                "the symlink, followed through the links around it, points outside the slot ({})",
                target.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(name: &str, bytes: &[u8]) -> Artifact {
        Artifact {
            name: name.into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }

    /// A tar with raw headers (so hostile paths the `tar` builder would refuse can be
    /// written): `(path, type, body, link target)`.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, body, link) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let old = h.as_old_mut();
                old.name[..path.len()].copy_from_slice(path.as_bytes());
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append(&h, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Installs one archive from bytes into a fresh root under `t`; returns the result
    /// and the root.
    fn try_install(
        t: &Path,
        name: &str,
        bytes: &[u8],
        limits: Limits,
    ) -> (Result<(), ArtifactError>, PathBuf) {
        let root = t.join("slot");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let file = t.join("download");
        std::fs::write(&file, bytes).unwrap();
        (install(&root, &[(art(name, bytes), file)], limits), root)
    }

    /// Every path under `t` except the slot root and the download itself.
    fn outside(t: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(t)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "slot" && n != "download")
            .collect();
        v.sort();
        v
    }

    /// Installing `bytes` as artifact `name` is refused as permanent, saying `why`, with
    /// nothing written outside the slot.
    fn assert_refused(t: &Path, name: &str, bytes: &[u8], what: &str, why: &str) {
        let (r, _) = try_install(t, name, bytes, Limits::default());
        let e = r.expect_err(what);
        assert!(e.is_permanent(), "{what}: {e}");
        assert!(e.to_string().contains(why), "{what}: {e}");
        assert!(outside(t).is_empty(), "{what}: {:?}", outside(t));
    }

    /// `bin/app` holds `body`, mode 0755; `app` links to it; the file list verifies.
    fn assert_app_unpacked(root: &Path, body: &[u8]) {
        assert_eq!(std::fs::read(root.join("bin/app")).unwrap(), body);
        let mode = std::fs::metadata(root.join("bin/app"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(
            std::fs::read_link(root.join("app")).unwrap(),
            Path::new("bin/app")
        );
        verify_files(root).unwrap();
    }

    #[test]
    fn a_good_tar_gz_unpacks_with_modes_links_and_a_file_list_that_verifies() {
        let t = tempfile::tempdir().unwrap();
        let tar = raw_tar(&[
            ("./", tar::EntryType::Directory, b"", ""),
            ("bin/", tar::EntryType::Directory, b"", ""),
            (
                "bin/app",
                tar::EntryType::Regular,
                b"#!/bin/sh\necho hi\n",
                "",
            ),
            ("share/VERSION", tar::EntryType::Regular, b"v2\n", ""),
            ("app", tar::EntryType::Symlink, b"", "bin/app"),
            ("share/up", tar::EntryType::Symlink, b"", "../bin/app"),
        ]);
        let (r, root) = try_install(t.path(), "dist/app.tar.gz", &gz(&tar), Limits::default());
        r.unwrap();
        assert_app_unpacked(&root, b"#!/bin/sh\necho hi\n");
        std::fs::write(root.join("share/VERSION"), "tampered").unwrap();
        let e = verify_files(&root).unwrap_err();
        assert!(e.contains("share/VERSION"), "{e}");
    }

    #[test]
    fn hostile_archives_are_refused_with_nothing_written_outside_the_slot() {
        let t = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "traversal",
                raw_tar(&[("../escaped", tar::EntryType::Regular, b"x", "")]),
                "`..`",
            ),
            (
                "deep traversal",
                raw_tar(&[("a/../../escaped", tar::EntryType::Regular, b"x", "")]),
                "`..`",
            ),
            (
                "absolute path",
                raw_tar(&[("/tmp/escaped-abs", tar::EntryType::Regular, b"x", "")]),
                "absolute",
            ),
            (
                "symlink escape",
                raw_tar(&[("evil", tar::EntryType::Symlink, b"", "../../")]),
                "outside the slot",
            ),
            (
                "absolute symlink",
                raw_tar(&[("evil", tar::EntryType::Symlink, b"", "/etc")]),
                "outside the slot",
            ),
            (
                // Each link alone stays inside (`a/b/s` points at the slot's root), but
                // `t` followed through `s` lands three levels above the slot.
                "symlink chain escape",
                raw_tar(&[
                    ("a/b/s", tar::EntryType::Symlink, b"", "../.."),
                    ("t", tar::EntryType::Symlink, b"", "a/b/s/../../.."),
                ]),
                "followed through",
            ),
            (
                // The same with the links in the other order: the link `t` goes
                // through is made after `t`.
                "symlink chain escape, through a later link",
                raw_tar(&[
                    ("t", tar::EntryType::Symlink, b"", "a/b/s/../../.."),
                    ("a/b/s", tar::EntryType::Symlink, b"", "../.."),
                ]),
                "followed through",
            ),
            (
                "symlink loop",
                raw_tar(&[
                    ("x", tar::EntryType::Symlink, b"", "y"),
                    ("y", tar::EntryType::Symlink, b"", "x"),
                ]),
                "loop",
            ),
            (
                "write through a symlink",
                raw_tar(&[
                    ("d", tar::EntryType::Symlink, b"", "."),
                    ("d/x", tar::EntryType::Regular, b"x", ""),
                ]),
                "through a symlink",
            ),
            (
                "hardlink",
                raw_tar(&[
                    ("a", tar::EntryType::Regular, b"x", ""),
                    ("b", tar::EntryType::Link, b"", "/etc/passwd"),
                ]),
                "hard links",
            ),
            (
                "device file",
                raw_tar(&[("null", tar::EntryType::Char, b"", "")]),
                "device files",
            ),
            (
                "fifo",
                raw_tar(&[("pipe", tar::EntryType::Fifo, b"", "")]),
                "FIFOs",
            ),
            (
                "duplicate",
                raw_tar(&[
                    ("a", tar::EntryType::Regular, b"1", ""),
                    ("a", tar::EntryType::Regular, b"2", ""),
                ]),
                "already installed",
            ),
            (
                "reserved name",
                raw_tar(&[(FILES_LIST, tar::EntryType::Regular, b"{}", "")]),
                "reserved",
            ),
        ];
        for (what, tar, why) in cases {
            for (name, bytes) in [("x.tar", tar.clone()), ("x.tar.gz", gz(&tar))] {
                assert_refused(t.path(), name, &bytes, what, why);
            }
        }
    }

    #[test]
    fn a_zip_bomb_and_oversized_archives_stop_at_the_limits() {
        let t = tempfile::tempdir().unwrap();
        // 64 MiB of zeros compress to ~64 KiB: a ratio near 1000.
        let zeros = vec![0u8; 64 << 20];
        let bomb = gz(&{
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_path("zeros").unwrap();
            h.set_size(zeros.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &zeros[..]).unwrap();
            b.into_inner().unwrap()
        });
        let (r, root) = try_install(
            t.path(),
            "bomb.tar.gz",
            &bomb,
            Limits {
                max_ratio: 100,
                ..Limits::default()
            },
        );
        let e = r.unwrap_err();
        assert!(e.to_string().contains("compression ratio"), "{e}");
        let written = std::fs::metadata(root.join("zeros")).map_or(0, |m| m.len());
        assert!(
            written <= bomb.len() as u64 * 100,
            "stopped at the budget: {written}"
        );
        // Total size and entry count.
        let tar = raw_tar(&[
            ("a", tar::EntryType::Regular, &[1u8; 1000], ""),
            ("b", tar::EntryType::Regular, &[2u8; 1000], ""),
        ]);
        let small = Limits {
            max_bytes: 1500,
            ..Limits::default()
        };
        let e = try_install(t.path(), "x.tar", &tar, small).0.unwrap_err();
        assert!(e.to_string().contains("unpacked size"), "{e}");
        let few = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        let e = try_install(t.path(), "x.tar", &tar, few).0.unwrap_err();
        assert!(e.to_string().contains("number of entries"), "{e}");
        // Garbage is a format error, a zip is refused with a message.
        let e = try_install(t.path(), "x.tar.gz", b"not gzip", Limits::default())
            .0
            .unwrap_err();
        assert!(matches!(e, ArtifactError::Format { .. }), "{e}");
        let e = try_install(t.path(), "x.zip", b"PK", Limits::default())
            .0
            .unwrap_err();
        assert!(matches!(e, ArtifactError::Format { .. }), "{e}");
    }

    /// A zip of `(path, kind, body)`: kind `f` file (0755), `d` directory, `l` symlink
    /// (body = target).
    fn zip_of(entries: &[(&str, char, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755);
        for (path, kind, body) in entries {
            match kind {
                'd' => w.add_directory(*path, opts).unwrap(),
                'l' => w
                    .add_symlink(*path, String::from_utf8_lossy(body), opts)
                    .unwrap(),
                _ => {
                    w.start_file(*path, opts).unwrap();
                    w.write_all(body).unwrap();
                }
            }
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn a_zip_unpacks_like_a_tar_and_hostile_zips_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let good = zip_of(&[
            ("bin/", 'd', b""),
            ("bin/app", 'f', b"#!/bin/sh\n"),
            ("app", 'l', b"bin/app"),
        ]);
        let (r, root) = try_install(t.path(), "dist/app.zip", &good, Limits::default());
        r.unwrap();
        assert_app_unpacked(&root, b"#!/bin/sh\n");
        let zeros = vec![0u8; 64 << 20];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("traversal", zip_of(&[("../escaped", 'f', b"x")]), "`..`"),
            (
                "absolute",
                zip_of(&[("/tmp/escaped-zip", 'f', b"x")]),
                "absolute",
            ),
            (
                "symlink escape",
                zip_of(&[("evil", 'l', b"../../etc")]),
                "outside the slot",
            ),
            (
                "symlink chain escape",
                zip_of(&[("a/b/s", 'l', b"../.."), ("t", 'l', b"a/b/s/../../..")]),
                "followed through",
            ),
            (
                "write through a symlink",
                zip_of(&[("d", 'l', b"."), ("d/x", 'f', b"x")]),
                "through a symlink",
            ),
            (
                "overwrite through a second entry",
                zip_of(&[("a", 'f', b"1"), ("a/", 'd', b"")]),
                "non-directory",
            ),
            (
                "bomb",
                zip_of(&[("zeros", 'f', &zeros)]),
                "compression ratio",
            ),
        ];
        for (what, bytes, why) in cases {
            assert_refused(t.path(), "x.zip", &bytes, what, why);
        }
    }

    #[test]
    fn failures_of_the_node_are_retried_and_failures_of_the_release_are_not() {
        let local = ArtifactError::Local {
            slot: "2-ab".into(),
            reason: "No space left on device".into(),
        };
        let io = ArtifactError::Io {
            action: "write",
            path: PathBuf::from("/x"),
            source: std::io::Error::other("disk"),
        };
        assert!(
            !local.is_permanent() && !io.is_permanent() && !ArtifactError::NoSource.is_permanent()
        );
        let digest = ArtifactError::Digest {
            name: "a".into(),
            expected: "0".into(),
            actual: "1".into(),
        };
        assert!(digest.is_permanent());
    }

    #[test]
    fn a_plain_file_is_placed_at_its_name_executable() {
        let t = tempfile::tempdir().unwrap();
        let (r, root) = try_install(t.path(), "bin/server", b"\x7fELF...", Limits::default());
        r.unwrap();
        let m = std::fs::metadata(root.join("bin/server")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        verify_files(&root).unwrap();
    }

    #[test]
    fn symlink_targets_are_judged_from_where_the_link_sits() {
        assert!(stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(stays_inside(Path::new("a/link"), Path::new("../c")));
        assert!(!stays_inside(Path::new("link"), Path::new("../c")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../c")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("/c")));
        assert!(stays_inside(Path::new("a/link"), Path::new("./x/../y")));
    }
}
