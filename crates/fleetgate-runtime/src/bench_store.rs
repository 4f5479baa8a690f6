//! Benchmark snapshots, one file per version under `<state_dir>/benchmarks/`.

use crate::RuntimeError;
use fleetgate_core::Version;
use fleetgate_core::bench::BenchEntry;
use std::path::{Path, PathBuf};

/// A stored snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Version measured.
    pub version: String,
    /// Commit measured.
    pub git_sha: String,
    /// When (unix seconds).
    pub captured_at: f64,
    /// Tier label (`fast`, `heavy`, `all`), free-form.
    #[serde(default)]
    pub tier: String,
    /// The results.
    pub benchmarks: Vec<BenchEntry>,
    /// Registered benchmarks that ran (their entries are named `NAME/<entry>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered: Vec<String>,
    /// Registered benchmarks of this tier that did not run, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<NotRun>,
}

/// A registered benchmark left out of a capture.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NotRun {
    /// Its name.
    pub name: String,
    /// Why (not allowed, or changed since it was allowed).
    pub reason: String,
}

/// The snapshot directory of a state dir.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("benchmarks")
}

/// Path of a version's snapshot (the version is validated, so it is a safe file name).
pub fn path(state_dir: &Path, version: &Version) -> PathBuf {
    dir(state_dir).join(format!("{}.json", version.as_str()))
}

fn malformed(p: &Path, e: serde_json::Error) -> RuntimeError {
    RuntimeError::Report(crate::ReportError::Malformed {
        what: "benchmark snapshot",
        path: p.to_owned(),
        format: "JSON",
        source: e.into(),
    })
}

/// Store a snapshot atomically (overwrites the same version: idempotent).
pub fn save(state_dir: &Path, snap: &Snapshot) -> Result<PathBuf, RuntimeError> {
    let v = Version::parse(&snap.version)?;
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(|e| RuntimeError::io("create", &d, e))?;
    let p = path(state_dir, &v);
    let mut bytes = serde_json::to_vec_pretty(snap)
        .map_err(|e| RuntimeError::encode("the benchmark snapshot", e))?;
    bytes.push(b'\n');
    fleetgate_store::write_atomic(&p, &bytes, None)
        .map_err(|e| RuntimeError::io("write", &p, e))?;
    Ok(p)
}

/// Load a version's snapshot, if one exists.
pub fn load(state_dir: &Path, version: &Version) -> Result<Option<Snapshot>, RuntimeError> {
    let p = path(state_dir, version);
    match std::fs::read(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("read", &p, e)),
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| malformed(&p, e)),
    }
}

/// Every stored snapshot, oldest first.
pub fn history(state_dir: &Path) -> Result<Vec<Snapshot>, RuntimeError> {
    let d = dir(state_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(RuntimeError::io("list", &d, e)),
        Ok(e) => e,
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let b = std::fs::read(&p).map_err(|e| RuntimeError::io("read", &p, e))?;
        let s: Snapshot = serde_json::from_slice(&b).map_err(|e| malformed(&p, e))?;
        out.push(s);
    }
    out.sort_by(|a, b| a.captured_at.total_cmp(&b.captured_at));
    Ok(out)
}
