//! BUILD's artifacts: the built files a release ships (`[stages.build] artifacts`).
//!
//! After the build command succeeds, [`collect`] finds every regular file of the
//! checkout that a pattern matches (globs relative to the checkout; `*` does not cross
//! `/`; `.git` is never searched; symlinks are not followed), copies each into the
//! content-addressed store `<state_dir>/artifacts/<sha256>` (copied to a temporary name,
//! hashed as stored, fsynced, renamed: a file under its digest is always complete), and
//! returns the list BUILD records in its verdict. A pattern that matches nothing fails
//! the gate. SIGN reads the list back ([`recorded`]), checks every stored file still
//! hashes to its digest ([`check_stored`]) and signs it into the manifest. `fleet serve`
//! serves the store at `GET /artifacts/{sha256}`.

use std::io::Read;
use std::path::{Path, PathBuf};

use fleetgate_core::{PipelineState, Stage};
use fleetgate_trust::{Artifact, MAX_ARTIFACTS};
use sha2::{Digest, Sha256};

use crate::RuntimeError;

/// The store's directory under the state directory.
#[must_use]
pub fn store_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("artifacts")
}

/// Collects and stores the files `patterns` match in `checkout`. `Ok(Err(message))`:
/// the gate fails with that message (a pattern matched nothing, too many files, a name
/// a node could not install).
///
/// # Errors
/// [`RuntimeError::Io`] when the checkout cannot be read or the store written.
pub fn collect(
    checkout: &Path,
    patterns: &[String],
    state_dir: &Path,
) -> Result<Result<Vec<Artifact>, String>, RuntimeError> {
    let mut matchers = Vec::with_capacity(patterns.len());
    for p in patterns {
        match globset::GlobBuilder::new(p).literal_separator(true).build() {
            Ok(g) => matchers.push((p, g.compile_matcher(), 0usize)),
            Err(e) => return Ok(Err(format!("artifact pattern {p:?} is not a glob: {e}"))),
        }
    }
    let mut files = Vec::new();
    walk(checkout, checkout, &mut files)?;
    files.sort();
    let mut chosen = Vec::new();
    for rel in files {
        let mut hit = false;
        for (_, m, n) in &mut matchers {
            if m.is_match(&rel) {
                *n += 1;
                hit = true;
            }
        }
        if hit {
            chosen.push(rel);
        }
    }
    if let Some((p, _, _)) = matchers.iter().find(|(_, _, n)| *n == 0) {
        return Ok(Err(format!(
            "artifact pattern {p:?} matched no file in the checkout after the build command"
        )));
    }
    if chosen.len() > MAX_ARTIFACTS {
        return Ok(Err(format!(
            "the artifact patterns match {} files; a release ships at most {MAX_ARTIFACTS}",
            chosen.len()
        )));
    }
    let store = store_dir(state_dir);
    std::fs::create_dir_all(&store).map_err(|e| RuntimeError::io("create", &store, e))?;
    sweep_stale_copies(&store);
    let mut out = Vec::with_capacity(chosen.len());
    for rel in chosen {
        let src = checkout.join(&rel);
        let tmp = store.join(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::copy(&src, &tmp).map_err(|e| RuntimeError::io("copy", &src, e))?;
        let (sha256, size) = hash_file(&tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| RuntimeError::io("sync", &tmp, e))?;
        let dest = store.join(&sha256);
        std::fs::rename(&tmp, &dest).map_err(|e| RuntimeError::io("store", &dest, e))?;
        let a = Artifact {
            name: rel,
            sha256,
            size,
        };
        if let Err(e) = a.validate() {
            return Ok(Err(e));
        }
        out.push(a);
    }
    std::fs::File::open(&store)
        .and_then(|d| d.sync_all())
        .map_err(|e| RuntimeError::io("sync", &store, e))?;
    Ok(Ok(out))
}

/// The artifacts BUILD recorded for this run (`None`: BUILD recorded none — a source
/// release, or a BUILD of an earlier fleetgate).
#[must_use]
pub fn recorded(state: &PipelineState) -> Option<Result<Vec<Artifact>, String>> {
    let v = state
        .gate_results
        .get(&Stage::Building)?
        .verdict
        .figures
        .get("artifacts")?;
    Some(
        serde_json::from_value(v.clone())
            .map_err(|e| format!("BUILD's artifact list is unreadable: {e}")),
    )
}

/// Checks every artifact is in the store with its size and digest. `Err`: which one is
/// not.
///
/// # Errors
/// A message naming the artifact.
pub fn check_stored(state_dir: &Path, artifacts: &[Artifact]) -> Result<(), String> {
    let store = store_dir(state_dir);
    for a in artifacts {
        let p = store.join(&a.sha256);
        let (sha, size) = hash_file(&p).map_err(|e| {
            format!(
                "artifact {} ({}) is not in the store: {e}",
                a.name, a.sha256
            )
        })?;
        if sha != a.sha256 || size != a.size {
            return Err(format!(
                "artifact {} in the store changed since BUILD: {size} bytes hashing to {sha}, BUILD stored {} bytes hashing to {}",
                a.name, a.size, a.sha256
            ));
        }
    }
    Ok(())
}

/// One artifact [`export`] placed (or found) in the export directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exported {
    /// Its name in the manifest.
    pub name: String,
    /// Its SHA-256 (the file's name in the directory).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is now.
    pub path: PathBuf,
    /// False when the directory already held it (same size and digest).
    pub copied: bool,
}

/// Copies `artifacts` from the store into `dir` as `dir/<sha256>`, the layout `[artifacts]
/// base_url` and the nodes' `artifacts_url` serve (upload `dir` to the static server or
/// object store). Each copy is written under a temporary name, checked against its digest
/// and size, fsynced and renamed; a file already there with the right digest is left as
/// it is; a temporary copy a killed export left there is removed first. `Ok(Err(message))`:
/// an artifact is missing from the store or changed since BUILD.
///
/// # Errors
/// [`RuntimeError::Io`] when `dir` cannot be created or written.
pub fn export(
    state_dir: &Path,
    artifacts: &[Artifact],
    dir: &Path,
) -> Result<Result<Vec<Exported>, String>, RuntimeError> {
    if let Err(e) = check_stored(state_dir, artifacts) {
        return Ok(Err(e));
    }
    std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
    sweep_stale_copies(dir);
    let store = store_dir(state_dir);
    let mut out = Vec::with_capacity(artifacts.len());
    for a in artifacts {
        let dest = dir.join(&a.sha256);
        let there = dest.is_file()
            && hash_file(&dest).is_ok_and(|(sha, size)| sha == a.sha256 && size == a.size);
        if !there {
            let tmp = dir.join(format!(".{}.tmp-{}", a.sha256, std::process::id()));
            std::fs::copy(store.join(&a.sha256), &tmp)
                .map_err(|e| RuntimeError::io("copy the artifact to", &tmp, e))?;
            let (sha, size) = hash_file(&tmp)?;
            if sha != a.sha256 || size != a.size {
                let _ = std::fs::remove_file(&tmp);
                return Ok(Err(format!(
                    "artifact {} changed while it was copied to {}",
                    a.name,
                    dest.display()
                )));
            }
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| RuntimeError::io("sync", &tmp, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| RuntimeError::io("rename", &dest, e))?;
        }
        out.push(Exported {
            name: a.name.clone(),
            sha256: a.sha256.clone(),
            size: a.size,
            path: dest,
            copied: !there,
        });
    }
    Ok(Ok(out))
}

/// How long a temporary copy may go untouched before it is taken for a leftover even when
/// a process with its pid is running (the pid was reused).
const STALE_COPY_SECS: u64 = 15 * 60;

/// Removes the temporary copies a killed BUILD (`.tmp-<pid>` in the store) or a killed
/// [`export`] (`.<sha256>.tmp-<pid>` in its directory) left in `dir`: those whose process
/// is gone (on Linux, no `/proc/<pid>`) or that nothing wrote to for
/// [`STALE_COPY_SECS`]. A copy in progress in a live process is left alone; other files
/// are never touched. Best effort: a file that cannot be removed stays.
fn sweep_stale_copies(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temporary_copy_pid) else {
            continue;
        };
        let gone = cfg!(target_os = "linux") && !Path::new(&format!("/proc/{pid}")).exists();
        let untouched = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age.as_secs() >= STALE_COPY_SECS);
        if (gone || untouched) && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed a leftover temporary copy");
        }
    }
}

/// The pid in a temporary copy's name: `.tmp-<pid>` or `.<64 hex>.tmp-<pid>`.
fn temporary_copy_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let pid = match rest.strip_prefix("tmp-") {
        Some(pid) => pid,
        None => {
            let (sha, pid) = rest.split_once(".tmp-")?;
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            pid
        }
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn hash_file(p: &Path) -> Result<(String, u64), RuntimeError> {
    let mut f = std::fs::File::open(p).map_err(|e| RuntimeError::io("open", p, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| RuntimeError::io("read", p, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Relative `/`-separated paths of the regular files under `dir` (not `.git`, symlinks
/// not followed).
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), RuntimeError> {
    for e in std::fs::read_dir(dir).map_err(|e| RuntimeError::io("read", dir, e))? {
        let e = e.map_err(|e| RuntimeError::io("read", dir, e))?;
        let ft = e
            .file_type()
            .map_err(|err| RuntimeError::io("inspect", &e.path(), err))?;
        let path = e.path();
        if ft.is_dir() {
            if dir == root && e.file_name() == ".git" {
                continue;
            }
            walk(root, &path, out)?;
        } else if ft.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_pick_built_files_store_them_by_digest_and_fail_when_they_match_nothing() {
        let t = tempfile::tempdir().unwrap();
        let co = t.path().join("checkout");
        let state = t.path().join("state");
        std::fs::create_dir_all(co.join("target/release/deps")).unwrap();
        std::fs::create_dir_all(co.join("dist")).unwrap();
        std::fs::create_dir_all(co.join(".git")).unwrap();
        std::fs::write(co.join("target/release/app"), b"ELF").unwrap();
        std::fs::write(co.join("target/release/deps/app-123"), b"dep").unwrap();
        std::fs::write(co.join("dist/app.tar.gz"), b"tgz").unwrap();
        std::fs::write(co.join(".git/app"), b"no").unwrap();
        let pats = vec!["target/release/app".to_owned(), "dist/*.tar.gz".to_owned()];
        let got = collect(&co, &pats, &state).unwrap().unwrap();
        let names: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, vec!["dist/app.tar.gz", "target/release/app"]);
        for a in &got {
            let stored = std::fs::read(store_dir(&state).join(&a.sha256)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&stored)), a.sha256);
            assert_eq!(stored.len() as u64, a.size);
        }
        check_stored(&state, &got).unwrap();
        // `*` does not cross `/`; a pattern matching nothing fails the gate.
        let e = collect(&co, &["target/*".to_owned()], &state)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("matched no file"), "{e}");
        // A stored file that changed is caught before signing.
        std::fs::write(store_dir(&state).join(&got[0].sha256), b"evil").unwrap();
        let e = check_stored(&state, &got).unwrap_err();
        assert!(e.contains("changed since BUILD"), "{e}");
    }

    #[test]
    fn an_export_or_build_killed_mid_copy_leaves_no_temporary_file_behind_the_next_one() {
        let t = tempfile::tempdir().unwrap();
        let co = t.path().join("checkout");
        let state = t.path().join("state");
        std::fs::create_dir_all(co.join("dist")).unwrap();
        std::fs::write(co.join("dist/app"), b"ELF").unwrap();
        let got = collect(&co, &["dist/app".to_owned()], &state)
            .unwrap()
            .unwrap();
        let sha = got[0].sha256.clone();
        let out = t.path().join("export");
        let store = store_dir(&state);
        std::fs::create_dir_all(&out).unwrap();
        // What a killed `artifacts export` and a killed BUILD leave: a partial copy
        // under the name of a process that is gone (no such pid).
        let dead = format!(".{sha}.tmp-4294967");
        std::fs::write(out.join(&dead), b"EL").unwrap();
        std::fs::write(store.join(".tmp-4294967"), b"E").unwrap();
        // A copy in progress by a live process (this one) is left alone; one by the
        // same pid but untouched for an hour is stale (the pid was reused).
        let live = format!(".{}.tmp-{}", "f".repeat(64), std::process::id());
        std::fs::write(out.join(&live), b"E").unwrap();
        let old = format!(".{}.tmp-{}", "0".repeat(64), std::process::id());
        std::fs::write(out.join(&old), b"E").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(out.join(&old))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        // Files that are not such temporaries stay whatever they are.
        std::fs::write(out.join("README"), b"mine").unwrap();
        std::fs::write(out.join(".tmp-notapid"), b"mine").unwrap();

        let exported = export(&state, &got, &out).unwrap().unwrap();
        assert_eq!(exported.len(), 1);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = vec![
            live,
            sha.clone(),
            ".tmp-notapid".to_owned(),
            "README".to_owned(),
        ];
        want.sort();
        assert_eq!(names, want);
        // BUILD's store is swept the same way when the next BUILD stores into it.
        collect(&co, &["dist/app".to_owned()], &state)
            .unwrap()
            .unwrap();
        assert!(!store.join(".tmp-4294967").exists());
    }
}
