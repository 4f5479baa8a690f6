//! Small file helpers shared by keys, the floor, trust files, journals, configs and
//! reports: bounded reads and durable atomic writes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The OS refused.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "rename", …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is bigger than allowed; it was not read.
    #[error("read {}: the file is larger than the {limit}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What [`read_capped`] found in a file.
#[derive(Debug)]
pub enum Limited {
    /// The whole file: at most the limit.
    Bytes(Vec<u8>),
    /// More than the limit: the file system's size of a regular file (`Some`), or `None`
    /// when reading went past the limit although the size said otherwise (a device, a
    /// FIFO, a file that grew while it was read).
    TooBig(Option<u64>),
}

/// The size of a file over its limit, for messages: the file system's (`"N bytes"`), or
/// unknown when reading went past the limit although the size said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize(pub Option<u64>);

impl std::fmt::Display for Oversize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n} bytes"),
            None => f.write_str(
                "of no size the file system tells, or grew while read (read past the limit)",
            ),
        }
    }
}

/// The file at `path`, read whole if it holds at most `limit` bytes. What is read is
/// bounded, not only the size a `stat` gives: a file can grow between the two, and a
/// device or FIFO (a symlink to `/dev/zero`, say) has no size at all, so a check of the
/// size alone would read it until memory runs out. Every file fleetgate reads whole
/// (journals, configs, CA bundles, reports, keys, trust files) goes through here
/// or [`read_limited`].
///
/// # Errors
/// Opening or reading the file failed (`NotFound` when it does not exist).
pub fn read_capped(path: &Path, limit: u64) -> std::io::Result<Limited> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Ok(Limited::TooBig(Some(len)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(Limited::TooBig(None));
    }
    Ok(Limited::Bytes(bytes))
}

/// Reads at most `limit` bytes; a longer file is an error, detected without
/// reading past the limit.
///
/// # Errors
/// [`FsError::TooLarge`] or [`FsError::Io`].
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FsError> {
    let file = File::open(path).map_err(io("open", path))?;
    let mut buf = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io("read", path))?;
    if buf.len() as u64 > limit {
        return Err(FsError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(buf)
}

/// Creates the directory that will hold `file` (and its parents) when missing, new
/// directories mode 0700: key files are written into them.
///
/// # Errors
/// [`FsError::Io`] when the directory cannot be created.
pub fn ensure_parent_dir(file: &Path) -> Result<(), FsError> {
    use std::os::unix::fs::DirBuilderExt as _;
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create directory", dir)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` durably and atomically: a new temp file in the
/// same directory created with `mode` (so it is never more readable than
/// that), fsync, rename over `path`, fsync of the directory.
///
/// # Errors
/// [`FsError::Io`] naming the step that failed; the temp file is removed.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let mut suffix = [0u8; 6];
    // A clash only makes create_new fail; the pid keeps it unlikely anyway.
    let _ = getrandom::fill(&mut suffix);
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        hex::encode(suffix)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
