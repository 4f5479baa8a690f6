//! Secrets handed to the process in environment variables, taken out of the environment.
//!
//! A variable's value stays readable in `/proc/PID/environ` for the life of the process
//! even after `unsetenv`: that file shows the *initial* environment block (the bytes the
//! kernel copied onto the stack at `execve`), not libc's current `environ`. [`seal`]
//! therefore copies each named variable into a process-wide vault (zeroized when
//! replaced) and then overwrites the whole `NAME=value` entry in that block with NUL
//! bytes, through `/proc/self/mem` (the block's address range is in `/proc/self/stat`).
//! After that `getenv(NAME)` finds nothing, children do not inherit the variable, and
//! `/proc/PID/environ` shows no trace of it. [`var`] reads the vault first, then the
//! environment (for processes that never sealed).
//!
//! Call [`seal`] early, while the process has a single thread (the CLI does it first
//! thing in `main`).

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::sync::Mutex;
use zeroize::Zeroizing;

static VAULT: Mutex<BTreeMap<String, Zeroizing<Vec<u8>>>> = Mutex::new(BTreeMap::new());

/// Why the initial environment block could not be scrubbed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// `/proc/self/stat` or `/proc/self/mem` could not be read or written.
    #[error("scrub the initial environment block through /proc/self/{what}: {source}")]
    Proc {
        /// `stat` or `mem`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/stat` has no usable `env_start` / `env_end` fields.
    #[error("scrub the initial environment block: /proc/self/stat has no env_start/env_end")]
    NoRange,
}

/// What [`seal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Variables that were set and are now only in the vault.
    pub taken: Vec<String>,
    /// Entries overwritten in the initial environment block.
    pub scrubbed: usize,
}

/// Move the variables `names` out of the environment into the vault and overwrite their
/// entries in the initial environment block. Variables that are not set are skipped; a
/// name already in the vault keeps its vaulted value unless the environment has one.
///
/// # Errors
/// [`SealError`] when the block could not be scrubbed: the values are in the vault
/// anyway (so [`var`] works), but `/proc/PID/environ` may still show them.
pub fn seal(names: &[&str]) -> Result<Sealed, SealError> {
    let mut sealed = Sealed::default();
    {
        let mut vault = VAULT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            if let Some(v) = std::env::var_os(name) {
                vault.insert((*name).to_owned(), Zeroizing::new(v.into_encoded_bytes()));
                sealed.taken.push((*name).to_owned());
            }
        }
    }
    sealed.scrubbed = scrub_initial_environ(names)?;
    Ok(sealed)
}

/// The value of `name`: from the vault if [`seal`] took it, else from the environment.
/// `None` when unset or not UTF-8.
#[must_use]
pub fn var(name: &str) -> Option<Zeroizing<String>> {
    let vault = VAULT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(v) = vault.get(name) {
        return std::str::from_utf8(v)
            .ok()
            .map(|s| Zeroizing::new(s.to_owned()));
    }
    drop(vault);
    std::env::var_os(name)
        .and_then(|v| v.into_string().ok())
        .map(Zeroizing::new)
}

/// True when [`seal`] took `name` out of the environment.
#[must_use]
pub fn is_sealed(name: &str) -> bool {
    VAULT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains_key(name)
}

/// `[env_start, env_end)` of this process, from `/proc/self/stat` (fields 50 and 51).
fn environ_range() -> Result<(u64, u64), SealError> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|source| SealError::Proc {
        what: "stat",
        source,
    })?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or(SealError::NoRange)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| -> Result<u64, SealError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or(SealError::NoRange)
    };
    let (start, end) = (field(50)?, field(51)?);
    if end <= start || end - start > 64 * 1024 * 1024 {
        return Err(SealError::NoRange);
    }
    Ok((start, end))
}

/// Overwrite every `NAME=…` entry of `names` in the initial environment block with NULs.
/// Returns how many entries were overwritten.
fn scrub_initial_environ(names: &[&str]) -> Result<usize, SealError> {
    let (start, end) = environ_range()?;
    let mem_err = |source| SealError::Proc {
        what: "mem",
        source,
    };
    let mut mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .map_err(mem_err)?;
    let len = usize::try_from(end - start).map_err(|_| SealError::NoRange)?;
    let mut block = Zeroizing::new(vec![0u8; len]);
    mem.seek(SeekFrom::Start(start)).map_err(mem_err)?;
    mem.read_exact(&mut block).map_err(mem_err)?;
    let mut count = 0;
    let mut offset = 0usize;
    for entry in block.split(|b| *b == 0) {
        let hit = names.iter().any(|n| {
            entry.len() > n.len() && entry.starts_with(n.as_bytes()) && entry[n.len()] == b'='
        });
        if hit {
            let zeros = vec![0u8; entry.len()];
            mem.seek(SeekFrom::Start(start + offset as u64))
                .map_err(mem_err)?;
            mem.write_all(&zeros).map_err(mem_err)?;
            count += 1;
        }
        offset += entry.len() + 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_of_the_environment_block_is_found() {
        let (start, end) = environ_range().unwrap();
        assert!(end > start);
    }

    /// Sealing in a child process (the test harness is multi-threaded, and sealing is
    /// process-wide): the child re-runs this test binary with a marker variable.
    #[test]
    fn sealed_variables_leave_proc_environ_and_stay_in_the_vault() {
        const CHILD: &str = "FLEETGATE_TRUST_SEAL_CHILD";
        const SECRET: &str = "FLEETGATE_TRUST_SEAL_SECRET";
        if std::env::var_os(CHILD).is_some() {
            let before = std::fs::read("/proc/self/environ").unwrap();
            assert!(contains(&before, b"seal-canary-0123456789"));
            let sealed = seal(&[SECRET, "FLEETGATE_TRUST_NOT_SET"]).unwrap();
            assert_eq!(sealed.taken, vec![SECRET.to_owned()]);
            assert_eq!(sealed.scrubbed, 1);
            let after = std::fs::read("/proc/self/environ").unwrap();
            assert!(
                !contains(&after, b"seal-canary-0123456789"),
                "value still in environ"
            );
            assert!(
                !contains(&after, SECRET.as_bytes()),
                "name still in environ"
            );
            assert!(
                contains(&after, b"FLEETGATE_TRUST_KEPT=kept"),
                "other entries kept"
            );
            assert!(std::env::var_os(SECRET).is_none());
            assert_eq!(
                var(SECRET).as_deref().map(String::as_str),
                Some("seal-canary-0123456789")
            );
            assert!(is_sealed(SECRET));
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "secret_env::tests::sealed_variables_leave_proc_environ_and_stay_in_the_vault",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env(SECRET, "seal-canary-0123456789")
            .env("FLEETGATE_TRUST_KEPT", "kept")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran the test: {text}");
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }
}
