//! Registered benchmarks: definitions recorded by `register_benchmark` (an agent's tool
//! call) or `fleetgate bench register`, kept in `<state_dir>/benchmark_registry.json`.
//!
//! Registering records a definition and nothing else: nothing is cloned, fetched or run.
//! A definition runs — in `bench capture` and the BENCHMARK gate, in the clean checkout of
//! the release, as an argv without a shell — only while the operator's config lists its
//! name with its [`BenchmarkDef::definition_hash`] under `[benchmarks.allowed]`. Changing a
//! definition changes its hash and so withdraws the approval.

use crate::{InvalidInput, RuntimeError};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The registry file's name in the state directory.
pub const FILE: &str = "benchmark_registry.json";
/// The registry file is refused beyond this size.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// At most this many definitions.
pub const MAX_BENCHMARKS: usize = 256;
/// At most this many argv entries.
pub const MAX_ARGS: usize = 64;
/// At most this many bytes per argv entry, path or text field.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Which `capture_benchmark` tier a definition belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    // Plain comments, not doc comments: schemars then emits a plain `enum`, which every
    // function-calling dialect understands.
    // Quick benchmarks.
    Fast,
    // Long-running benchmarks.
    Heavy,
    // Every tier.
    #[default]
    All,
}

impl Tier {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Heavy => "heavy",
            Tier::All => "all",
        }
    }

    /// Parse `fast`, `heavy` or `all`.
    pub fn parse(s: &str) -> Result<Tier, RuntimeError> {
        match s {
            "fast" => Ok(Tier::Fast),
            "heavy" => Ok(Tier::Heavy),
            "all" => Ok(Tier::All),
            other => Err(InvalidInput::BenchTier(other.to_owned()).into()),
        }
    }

    /// Does a capture of tier `self` include a definition of tier `def`?
    pub fn includes(self, def: Tier) -> bool {
        self == Tier::All || def == Tier::All || self == def
    }
}

/// One registered benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkDef {
    /// Name (`[A-Za-z0-9._-]`, 1–64 characters); its results are stored as `NAME/<entry>`.
    pub name: String,
    /// The program and its arguments, run without a shell in the release checkout.
    pub command: Vec<String>,
    /// The results file it writes (github-action-benchmark JSON), relative to the checkout.
    pub results: String,
    /// Tier.
    pub tier: Tier,
    /// Where the benchmark came from (recorded for the operator's review; never fetched).
    pub repo_url: Option<String>,
    /// What it measures.
    pub description: Option<String>,
    /// When it was registered (unix seconds).
    pub registered_at: f64,
    /// HART's `requires_gpu`: recorded for the operator's review (fleetgate does not probe
    /// for a GPU; what runs is what the operator allowed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_gpu: bool,
    /// HART's `min_vram_gb`, recorded like `requires_gpu`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_vram_gb: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// HART's `run_command` (one string) as an argv, split the way a POSIX shell splits words
/// (quotes, backslashes) — and nothing more: the result runs without a shell, so `$VAR`,
/// globs, `;` and `|` stay literal arguments.
pub fn split_run_command(run_command: &str) -> Result<Vec<String>, RuntimeError> {
    let argv = shlex::split(run_command).ok_or(InvalidInput::RunCommandUnterminated)?;
    if argv.is_empty() {
        return Err(InvalidInput::RunCommandEmpty.into());
    }
    Ok(argv)
}

impl BenchmarkDef {
    /// SHA-256 (hex) over what decides what runs: name, command, results path and tier.
    pub fn definition_hash(&self) -> String {
        let canonical = serde_json::json!([self.name, self.command, self.results, self.tier]);
        hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// Check every field; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |field: &str, why: String| {
            Err(RuntimeError::Invalid(InvalidInput::BenchmarkField {
                field: field.to_owned(),
                why,
            }))
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad(
                "name",
                format!(
                    "{:?} must be 1-64 characters of [A-Za-z0-9._-]",
                    truncate(&self.name)
                ),
            );
        }
        if self.command.is_empty() || self.command.len() > MAX_ARGS {
            return bad(
                "command",
                format!(
                    "must be a program and its arguments as a list of 1-{MAX_ARGS} strings (it runs without a shell)"
                ),
            );
        }
        for (i, a) in self.command.iter().enumerate() {
            if a.len() > MAX_FIELD_BYTES || a.contains('\0') {
                return bad(
                    &format!("command[{i}]"),
                    format!("must be at most {MAX_FIELD_BYTES} bytes without NUL"),
                );
            }
        }
        if self.command[0].is_empty() {
            return bad("command[0]", "must name a program".into());
        }
        if self.command[0].contains('/') {
            relative_path("command[0]", &self.command[0])?;
        }
        relative_path("results", &self.results)?;
        if !self.min_vram_gb.is_finite() || self.min_vram_gb < 0.0 {
            return bad("min_vram_gb", "must be a number of GB ≥ 0".into());
        }
        for (field, v) in [
            ("repo_url", &self.repo_url),
            ("description", &self.description),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > MAX_FIELD_BYTES) {
                return bad(field, format!("must be at most {MAX_FIELD_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A path that must stay inside the checkout: relative, no `..`, no NUL.
fn relative_path(field: &'static str, p: &str) -> Result<(), RuntimeError> {
    let path = Path::new(p);
    let escapes = path.is_absolute()
        || p.contains('\0')
        || p.len() > MAX_FIELD_BYTES
        || p.is_empty()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir));
    if escapes {
        return Err(InvalidInput::BenchmarkPath {
            field,
            path: truncate(p),
        }
        .into());
    }
    Ok(())
}

/// One definition with its approval status, as `list_benchmarks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The definition.
    #[serde(flatten)]
    pub def: BenchmarkDef,
    /// Its hash (what `[benchmarks.allowed]` must pin).
    pub definition_hash: String,
    /// True when the config allows exactly this definition.
    pub allowed: bool,
    /// Why it does not run, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_allowed_because: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    schema_version: u32,
    benchmarks: BTreeMap<String, BenchmarkDef>,
}

/// The registry file of a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

fn load_file(state_dir: &Path) -> Result<RegistryFile, RuntimeError> {
    let p = path(state_dir);
    let bytes = match fleetgate_trust::fsutil::read_capped(&p, MAX_FILE_BYTES) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RegistryFile {
                schema_version: 1,
                benchmarks: BTreeMap::new(),
            });
        }
        Err(e) => return Err(RuntimeError::io("read", &p, e)),
        Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
            return Err(crate::ReportError::TooLarge {
                what: "the benchmark registry",
                path: p,
                size: fleetgate_trust::fsutil::Oversize(size),
                limit: MAX_FILE_BYTES,
            }
            .into());
        }
        Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => b,
    };
    let f: RegistryFile = serde_json::from_slice(&bytes).map_err(|e| {
        RuntimeError::Report(crate::ReportError::Malformed {
            what: "the benchmark registry",
            path: p.clone(),
            format: "JSON",
            source: e.into(),
        })
    })?;
    if f.schema_version != 1 {
        return Err(crate::ReportError::SchemaVersion {
            what: "the benchmark registry",
            path: p,
            found: u64::from(f.schema_version),
            supported: 1,
        }
        .into());
    }
    Ok(f)
}

/// Every registered definition, by name.
pub fn all(state_dir: &Path) -> Result<Vec<BenchmarkDef>, RuntimeError> {
    Ok(load_file(state_dir)?.benchmarks.into_values().collect())
}

/// Every definition with its approval under `allowed` (`[benchmarks.allowed]`).
pub fn list(
    state_dir: &Path,
    allowed: &BTreeMap<String, String>,
) -> Result<Vec<Listed>, RuntimeError> {
    Ok(all(state_dir)?
        .into_iter()
        .map(|def| {
            let hash = def.definition_hash();
            let why = match allowed.get(&def.name) {
                None => Some(format!(
                    "not in the config's allowlist: add `{} = \"{hash}\"` under [benchmarks.allowed] after reviewing it",
                    def.name
                )),
                Some(pin) if !pin.eq_ignore_ascii_case(&hash) => Some(format!(
                    "the definition changed since it was allowed (allowed {pin}, now {hash}): review it and update [benchmarks.allowed]"
                )),
                Some(_) => None,
            };
            Listed {
                definition_hash: hash,
                allowed: why.is_none(),
                not_allowed_because: why,
                def,
            }
        })
        .collect())
}

/// Record (or replace) a definition. Nothing is fetched or run. Returns the definition as
/// stored and whether an earlier one of that name was replaced.
pub fn register(state_dir: &Path, def: BenchmarkDef) -> Result<(BenchmarkDef, bool), RuntimeError> {
    def.validate()?;
    std::fs::create_dir_all(state_dir)
        .map_err(|e| RuntimeError::io("create state directory", state_dir, e))?;
    // A short exclusive lock so two registrations never lose one another.
    let lock_path = state_dir.join(format!("{FILE}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| RuntimeError::io("open", &lock_path, e))?;
    lock.lock()
        .map_err(|e| RuntimeError::io("lock", &lock_path, e))?;
    let mut f = load_file(state_dir)?;
    let replaced = f.benchmarks.contains_key(&def.name);
    if !replaced && f.benchmarks.len() >= MAX_BENCHMARKS {
        return Err(InvalidInput::TooManyBenchmarks {
            limit: MAX_BENCHMARKS,
        }
        .into());
    }
    f.benchmarks.insert(def.name.clone(), def.clone());
    let bytes = serde_json::to_vec_pretty(&f)
        .map_err(|e| RuntimeError::encode("the benchmark registry", e))?;
    let p = path(state_dir);
    fleetgate_store::write_atomic(&p, &bytes, None)
        .map_err(|e| RuntimeError::io("write", &p, e))?;
    Ok((def, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> BenchmarkDef {
        BenchmarkDef {
            name: name.into(),
            command: vec!["./bench.sh".into(), "--quick".into()],
            results: "target/b.json".into(),
            tier: Tier::Fast,
            repo_url: None,
            description: None,
            registered_at: 1.0,
            requires_gpu: false,
            min_vram_gb: 0.0,
        }
    }

    #[test]
    fn hart_run_command_is_split_without_a_shell() {
        assert_eq!(
            split_run_command("python bench.py --out 'my results.json' $HOME;rm").unwrap(),
            ["python", "bench.py", "--out", "my results.json", "$HOME;rm"]
        );
        assert!(split_run_command("python 'open").is_err());
        assert!(split_run_command("   ").is_err());
        // HART's extra fields are provenance: they do not change the definition hash.
        let mut gpu = def("g");
        gpu.requires_gpu = true;
        gpu.min_vram_gb = 8.0;
        assert_eq!(gpu.definition_hash(), def("g").definition_hash());
        gpu.min_vram_gb = -1.0;
        assert!(
            gpu.validate()
                .unwrap_err()
                .to_string()
                .contains("min_vram_gb")
        );
    }

    #[test]
    fn registration_is_recorded_and_approval_pins_the_definition() {
        let dir = tempfile::tempdir().unwrap();
        let (d, replaced) = register(dir.path(), def("lat")).unwrap();
        assert!(!replaced);
        let hash = d.definition_hash();
        let none = list(dir.path(), &BTreeMap::new()).unwrap();
        assert!(!none[0].allowed);
        assert!(
            none[0]
                .not_allowed_because
                .as_deref()
                .unwrap()
                .contains(&hash)
        );
        let allow = BTreeMap::from([("lat".to_owned(), hash.clone())]);
        assert!(list(dir.path(), &allow).unwrap()[0].allowed);
        // Changing what runs withdraws the approval.
        let mut changed = def("lat");
        changed.command.push("--evil".into());
        let (_, replaced) = register(dir.path(), changed).unwrap();
        assert!(replaced);
        let l = list(dir.path(), &allow).unwrap();
        assert!(!l[0].allowed);
        assert!(
            l[0].not_allowed_because
                .as_deref()
                .unwrap()
                .contains("changed")
        );
        // Provenance fields do not change the hash.
        let mut described = def("x");
        described.description = Some("d".into());
        assert_eq!(described.definition_hash(), def("x").definition_hash());
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        for (mutate, field) in [
            (
                Box::new(|d: &mut BenchmarkDef| d.name = "../x".into())
                    as Box<dyn Fn(&mut BenchmarkDef)>,
                "`name`",
            ),
            (Box::new(|d| d.command.clear()), "`command`"),
            (
                Box::new(|d| d.command[0] = "../../bin/sh".into()),
                "`command[0]`",
            ),
            (Box::new(|d| d.results = "/etc/passwd".into()), "`results`"),
            (Box::new(|d| d.results = "a/../../b".into()), "`results`"),
        ] {
            let mut d = def("ok");
            mutate(&mut d);
            let e = register(dir.path(), d).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        assert!(all(dir.path()).unwrap().is_empty(), "nothing was recorded");
    }

    #[test]
    fn tiers() {
        assert!(Tier::All.includes(Tier::Heavy));
        assert!(Tier::Fast.includes(Tier::All));
        assert!(!Tier::Fast.includes(Tier::Heavy));
        assert!(Tier::parse("medium").is_err());
    }
}
