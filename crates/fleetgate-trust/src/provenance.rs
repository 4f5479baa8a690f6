//! Release provenance: an [in-toto Statement v1] whose predicate is [SLSA Provenance v1].
//!
//! SIGN writes one per release (`state/provenance/<version>.intoto.json`, canonical
//! JSON) and puts the SHA-256 of that file in the signed manifest's `provenance_sha256`,
//! so the manifest signature covers the statement too. The statement names:
//!
//! - `subject`: the release — its code hash (`sha256`) and commit (`gitCommit`), and its
//!   file manifest hash;
//! - `buildDefinition`: [`BUILD_TYPE`], the external parameters (version, repository,
//!   commit, digest of the effective configuration), internal ones (run id, sequence,
//!   each gate's outcome) and the source commit as the resolved dependency;
//! - `runDetails`: [`BUILDER_ID`], the run id as `invocationId`, when the run started and
//!   when SIGN wrote the statement, and one `byproducts` entry per piece of gate evidence
//!   (build and test logs, the JUnit report, audit output, benchmark results) with its
//!   SHA-256 and its path relative to the state directory as `name`.
//!
//! [`check_against_manifest`] ties a statement to a verified manifest; [`check_byproducts`]
//! re-hashes the evidence files a statement names.
//!
//! [in-toto Statement v1]: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
//! [SLSA Provenance v1]: https://slsa.dev/spec/v1.0/provenance

use crate::canonical::{CanonicalError, parse_strict, to_canonical_bytes};
use crate::manifest::{Manifest, is_sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

/// The statement's `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The statement's `predicateType`.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// `buildDefinition.buildType` of a fleetgate release: the parameters are the ones
/// [`ProvenanceInputs`] describes.
pub const BUILD_TYPE: &str = "https://example.invalid/fleetgate/provenance/release/v1";
/// `runDetails.builder.id`: the fleetgate orchestrator that ran the gates and signed.
pub const BUILDER_ID: &str = "https://example.invalid/fleetgate/orchestrator";
/// Largest statement read from anywhere; checked before parsing.
pub const MAX_STATEMENT_BYTES: usize = 1024 * 1024;

/// An in-toto ResourceDescriptor (every field optional; fleetgate always sets `digest`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    /// Name within the statement (evidence: its path relative to the state directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A URI naming the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm → hex digest (`sha256`, `gitCommit`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// Where it can be fetched, if not `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Extra facts (fleetgate: `stage` and `evidence` kind for byproducts).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

/// The in-toto Statement v1 with an SLSA Provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The release.
    pub subject: Vec<ResourceDescriptor>,
    /// [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The provenance.
    pub predicate: Provenance,
}

/// SLSA Provenance v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The inputs.
    pub build_definition: BuildDefinition,
    /// This execution.
    pub run_details: RunDetails,
}

/// `buildDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// [`BUILD_TYPE`].
    pub build_type: String,
    /// Parameters under outside control.
    pub external_parameters: Map<String, Value>,
    /// Parameters set by the orchestrator.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub internal_parameters: Map<String, Value>,
    /// The source commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// `runDetails`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    /// Who built.
    pub builder: Builder,
    /// When, and which run.
    #[serde(default)]
    pub metadata: BuildMetadata,
    /// The gates' evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

/// `runDetails.builder`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    /// [`BUILDER_ID`].
    pub id: String,
    /// Component → version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// `runDetails.metadata`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    /// The run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// When the run started (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    /// When SIGN wrote the statement (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
}

/// One piece of gate evidence (becomes a `byproducts` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Path relative to the state directory (`logs/<run>/testing.log`).
    pub name: String,
    /// Lowercase hex SHA-256 of the file when the gate read it.
    pub sha256: String,
    /// The gate's stage (`building`, `testing`, …).
    pub stage: String,
    /// What it is: `log`, `junit`, `audit-output`, `benchmark-results`.
    pub kind: String,
    /// MIME type.
    pub media_type: String,
}

/// What a release's statement is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvenanceInputs {
    /// Release version.
    pub version: String,
    /// The released commit.
    pub git_sha: String,
    /// The code hash (hex SHA-256).
    pub code_hash: String,
    /// The file manifest hash ("" when none).
    pub file_manifest_hash: String,
    /// `git` / `hart`.
    pub hash_scheme: String,
    /// The repository (remote URL, or its path).
    pub repository: String,
    /// SHA-256 of the effective configuration as `fleetgate config` prints it.
    pub config_sha256: String,
    /// The run id.
    pub run_id: String,
    /// The manifest sequence.
    pub sequence: u64,
    /// Run start, unix seconds.
    pub started_at: Option<u64>,
    /// When the statement is written, unix seconds.
    pub finished_at: u64,
    /// Gate name → outcome (`passed` / `skipped`).
    pub gates: BTreeMap<String, String>,
    /// Every piece of evidence, in gate order.
    pub evidence: Vec<Evidence>,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    /// Too large, not JSON, not a Statement v1 with an SLSA Provenance v1 predicate.
    #[error("the provenance statement is malformed: {0}")]
    Malformed(String),
    /// It has no canonical JSON form.
    #[error("the provenance statement cannot be written: {0}")]
    Canonical(#[from] CanonicalError),
    /// The manifest names no statement.
    #[error("the manifest has no provenance_sha256: it names no provenance statement")]
    NotInManifest,
    /// The statement file is not the one the manifest names.
    #[error(
        "the provenance statement's SHA-256 is {file}, but the signed manifest names {manifest}"
    )]
    DigestMismatch {
        /// The manifest's `provenance_sha256`.
        manifest: String,
        /// SHA-256 of the statement bytes.
        file: String,
    },
    /// The statement describes another release.
    #[error("the provenance statement is not this release's: {0}")]
    SubjectMismatch(String),
}

/// Lowercase hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn descriptor(name: &str, digest: &[(&str, &str)]) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(name.to_owned()),
        digest: digest
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ResourceDescriptor::default()
    }
}

/// Name of the file manifest subject of `version`.
#[must_use]
pub fn file_manifest_subject(version: &str) -> String {
    format!("{version}.file-manifest")
}

impl Statement {
    /// The statement of a release.
    #[must_use]
    pub fn new(i: &ProvenanceInputs) -> Self {
        let mut subject = vec![descriptor(
            &i.version,
            &[
                ("sha256", i.code_hash.as_str()),
                ("gitCommit", i.git_sha.as_str()),
            ],
        )];
        if !i.file_manifest_hash.is_empty() {
            subject.push(descriptor(
                &file_manifest_subject(&i.version),
                &[("sha256", i.file_manifest_hash.as_str())],
            ));
        }
        let mut external = Map::new();
        external.insert("version".into(), Value::from(i.version.clone()));
        external.insert("repository".into(), Value::from(i.repository.clone()));
        external.insert("gitSha".into(), Value::from(i.git_sha.clone()));
        external.insert("configSha256".into(), Value::from(i.config_sha256.clone()));
        let mut internal = Map::new();
        internal.insert("runId".into(), Value::from(i.run_id.clone()));
        internal.insert("sequence".into(), Value::from(i.sequence));
        internal.insert("hashScheme".into(), Value::from(i.hash_scheme.clone()));
        internal.insert(
            "gates".into(),
            Value::Object(
                i.gates
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect(),
            ),
        );
        let source = ResourceDescriptor {
            uri: Some(format!("git+{}", i.repository)),
            digest: [("gitCommit".to_owned(), i.git_sha.clone())].into(),
            ..ResourceDescriptor::default()
        };
        let byproducts = i
            .evidence
            .iter()
            .map(|e| {
                let mut annotations = Map::new();
                annotations.insert("stage".into(), Value::from(e.stage.clone()));
                annotations.insert("evidence".into(), Value::from(e.kind.clone()));
                ResourceDescriptor {
                    name: Some(e.name.clone()),
                    digest: [("sha256".to_owned(), e.sha256.clone())].into(),
                    media_type: Some(e.media_type.clone()),
                    annotations,
                    ..ResourceDescriptor::default()
                }
            })
            .collect();
        Self {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject,
            predicate_type: PREDICATE_TYPE.to_owned(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.to_owned(),
                    external_parameters: external,
                    internal_parameters: internal,
                    resolved_dependencies: vec![source],
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: BUILDER_ID.to_owned(),
                        version: [("fleetgate".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]
                            .into(),
                    },
                    metadata: BuildMetadata {
                        invocation_id: Some(i.run_id.clone()),
                        started_on: i.started_at.map(crate::rfc3339_seconds),
                        finished_on: Some(crate::rfc3339_seconds(i.finished_at)),
                    },
                    byproducts,
                },
            },
        }
    }

    /// The statement's file bytes: canonical JSON (sorted keys, no whitespace), the bytes
    /// `provenance_sha256` is computed over.
    ///
    /// # Errors
    /// [`ProvenanceError::Canonical`] (a float in a parameter).
    pub fn to_canonical(&self) -> Result<Vec<u8>, ProvenanceError> {
        let v = serde_json::to_value(self)
            .map_err(|e| ProvenanceError::Malformed(format!("cannot serialise it: {e}")))?;
        Ok(to_canonical_bytes(&v)?)
    }

    /// The release subject (the one with a `gitCommit` digest).
    #[must_use]
    pub fn release_subject(&self) -> Option<&ResourceDescriptor> {
        self.subject
            .iter()
            .find(|s| s.digest.contains_key("gitCommit"))
    }
}

/// Parses statement bytes: size-limited, strict JSON (no duplicate keys), `_type` and
/// `predicateType` as fleetgate writes them, and every subject with a digest.
///
/// # Errors
/// [`ProvenanceError::Malformed`] naming what is wrong.
pub fn parse_statement(bytes: &[u8]) -> Result<Statement, ProvenanceError> {
    if bytes.len() > MAX_STATEMENT_BYTES {
        return Err(ProvenanceError::Malformed(format!(
            "{} bytes, more than the {MAX_STATEMENT_BYTES} a statement may have",
            bytes.len()
        )));
    }
    let value = parse_strict(bytes).map_err(|e| ProvenanceError::Malformed(e.to_string()))?;
    let kind = value.get("_type").and_then(Value::as_str);
    if kind != Some(STATEMENT_TYPE) {
        return Err(ProvenanceError::Malformed(format!(
            "_type is {kind:?}, not {STATEMENT_TYPE:?}"
        )));
    }
    let ptype = value.get("predicateType").and_then(Value::as_str);
    if ptype != Some(PREDICATE_TYPE) {
        return Err(ProvenanceError::Malformed(format!(
            "predicateType is {ptype:?}, not {PREDICATE_TYPE:?}"
        )));
    }
    let st: Statement =
        serde_json::from_value(value).map_err(|e| ProvenanceError::Malformed(e.to_string()))?;
    if st.subject.is_empty() || st.subject.iter().any(|s| s.digest.is_empty()) {
        return Err(ProvenanceError::Malformed(
            "every statement needs at least one subject, each with a digest".into(),
        ));
    }
    Ok(st)
}

/// Checks that `bytes` is the statement `manifest` names: its SHA-256 is the manifest's
/// `provenance_sha256`, it parses ([`parse_statement`]), and its release subject has the
/// manifest's code hash and commit (and its file manifest subject the manifest's file
/// manifest hash). Call it with a manifest whose signature was verified.
///
/// # Errors
/// [`ProvenanceError`] naming the first failed check.
pub fn check_against_manifest(
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<Statement, ProvenanceError> {
    let Some(want) = &manifest.provenance_sha256 else {
        return Err(ProvenanceError::NotInManifest);
    };
    let got = sha256_hex(bytes);
    if !is_sha256_hex(want) || *want != got {
        return Err(ProvenanceError::DigestMismatch {
            manifest: want.clone(),
            file: got,
        });
    }
    let st = parse_statement(bytes)?;
    let Some(release) = st.release_subject() else {
        return Err(ProvenanceError::SubjectMismatch(
            "no subject has a gitCommit digest".into(),
        ));
    };
    let field = |k: &str| release.digest.get(k).map_or("", String::as_str);
    if field("gitCommit") != manifest.git_sha {
        return Err(ProvenanceError::SubjectMismatch(format!(
            "subject commit {} but the manifest's git_sha is {}",
            field("gitCommit"),
            manifest.git_sha
        )));
    }
    if field("sha256") != manifest.code_hash {
        return Err(ProvenanceError::SubjectMismatch(format!(
            "subject sha256 {} but the manifest's code_hash is {}",
            field("sha256"),
            manifest.code_hash
        )));
    }
    if release.name.as_deref() != Some(manifest.version.as_str()) {
        return Err(ProvenanceError::SubjectMismatch(format!(
            "subject name {:?} but the manifest's version is {}",
            release.name, manifest.version
        )));
    }
    if !manifest.file_manifest_hash.is_empty() {
        let name = file_manifest_subject(&manifest.version);
        let fm = st
            .subject
            .iter()
            .find(|s| s.name.as_deref() == Some(name.as_str()))
            .and_then(|s| s.digest.get("sha256"));
        if fm != Some(&manifest.file_manifest_hash) {
            return Err(ProvenanceError::SubjectMismatch(format!(
                "subject {name} has sha256 {fm:?} but the manifest's file_manifest_hash is {}",
                manifest.file_manifest_hash
            )));
        }
    }
    Ok(st)
}

/// What re-hashing one byproduct found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ByproductCheck {
    /// Its name (path relative to the evidence directory).
    pub name: String,
    /// The digest the statement records.
    pub recorded: String,
    /// `match`, `mismatch`, `missing`, or `refused` (a name that is not a plain relative
    /// path, or no sha256 recorded).
    pub status: &'static str,
    /// The digest of the file now, when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

impl ByproductCheck {
    /// Whether this byproduct is bad (changed, or unreadable by name): `missing` is not.
    #[must_use]
    pub fn is_bad(&self) -> bool {
        matches!(self.status, "mismatch" | "refused")
    }
}

/// The path of a byproduct named `name` under `dir`, if `name` is a plain relative path
/// (no root, no `..`): a statement from elsewhere cannot point outside `dir`.
#[must_use]
pub fn byproduct_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let plain = !name.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    plain.then(|| dir.join(p))
}

/// Lowercase hex SHA-256 of a file, read in pieces.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Re-hashes every byproduct of `st` found under `dir` (the state directory the
/// statement was written in).
#[must_use]
pub fn check_byproducts(st: &Statement, dir: &Path) -> Vec<ByproductCheck> {
    st.predicate
        .run_details
        .byproducts
        .iter()
        .map(|b| {
            let name = b.name.clone().unwrap_or_default();
            let recorded = b.digest.get("sha256").cloned().unwrap_or_default();
            let path = byproduct_path(dir, &name);
            let (status, actual) = match path {
                _ if !is_sha256_hex(&recorded) => ("refused", None),
                None => ("refused", None),
                Some(p) => match sha256_file(&p) {
                    Ok(d) if d == recorded => ("match", Some(d)),
                    Ok(d) => ("mismatch", Some(d)),
                    Err(_) => ("missing", None),
                },
            };
            ByproductCheck {
                name,
                recorded,
                status,
                actual,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ProvenanceInputs {
        ProvenanceInputs {
            version: "v1.0.0".into(),
            git_sha: "a".repeat(40),
            code_hash: "b".repeat(64),
            file_manifest_hash: "c".repeat(64),
            hash_scheme: "git".into(),
            repository: "file:///srv/app".into(),
            config_sha256: "d".repeat(64),
            run_id: "run-1".into(),
            sequence: 7,
            started_at: Some(1_800_000_000),
            finished_at: 1_800_000_100,
            gates: [("building".to_owned(), "passed".to_owned())].into(),
            evidence: vec![Evidence {
                name: "logs/run-1/building.log".into(),
                sha256: "e".repeat(64),
                stage: "building".into(),
                kind: "log".into(),
                media_type: "text/plain".into(),
            }],
        }
    }

    fn manifest_for(bytes: &[u8]) -> Manifest {
        Manifest {
            version: "v1.0.0".into(),
            git_sha: "a".repeat(40),
            code_hash: "b".repeat(64),
            file_manifest_hash: "c".repeat(64),
            provenance_sha256: Some(sha256_hex(bytes)),
            ..Manifest::default()
        }
    }

    #[test]
    fn a_statement_round_trips_in_canonical_form_and_matches_its_manifest() {
        let st = Statement::new(&inputs());
        let bytes = st.to_canonical().unwrap();
        assert!(bytes.starts_with(br#"{"_type":"https://in-toto.io/Statement/v1","predicate":"#));
        assert_eq!(parse_statement(&bytes).unwrap(), st);
        let m = manifest_for(&bytes);
        assert_eq!(check_against_manifest(&bytes, &m).unwrap(), st);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["predicate"]["runDetails"]["metadata"]["startedOn"],
            "2027-01-15T08:00:00Z"
        );
        assert_eq!(
            v["predicate"]["runDetails"]["byproducts"][0]["digest"]["sha256"],
            "e".repeat(64)
        );
    }

    #[test]
    fn another_statement_or_release_is_named() {
        let bytes = Statement::new(&inputs()).to_canonical().unwrap();
        let mut m = manifest_for(&bytes);
        m.provenance_sha256 = None;
        assert_eq!(
            check_against_manifest(&bytes, &m),
            Err(ProvenanceError::NotInManifest)
        );
        let mut other = inputs();
        other.run_id = "run-2".into();
        let other = Statement::new(&other).to_canonical().unwrap();
        let m = manifest_for(&bytes);
        assert!(matches!(
            check_against_manifest(&other, &m),
            Err(ProvenanceError::DigestMismatch { .. })
        ));
        let mut wrong = inputs();
        wrong.code_hash = "f".repeat(64);
        let wrong = Statement::new(&wrong).to_canonical().unwrap();
        let m = manifest_for(&wrong);
        let e = check_against_manifest(&wrong, &m).unwrap_err();
        assert!(e.to_string().contains("code_hash"), "{e}");
        let dup = br#"{"_type":"https://in-toto.io/Statement/v1","_type":"x"}"#;
        assert!(matches!(
            parse_statement(dup),
            Err(ProvenanceError::Malformed(_))
        ));
    }

    #[test]
    fn byproducts_are_rehashed_and_names_cannot_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs/run-1")).unwrap();
        std::fs::write(dir.path().join("logs/run-1/building.log"), b"built\n").unwrap();
        let mut i = inputs();
        i.evidence[0].sha256 = sha256_hex(b"built\n");
        i.evidence.push(Evidence {
            name: "../outside".into(),
            ..i.evidence[0].clone()
        });
        i.evidence.push(Evidence {
            name: "logs/run-1/gone.log".into(),
            ..i.evidence[0].clone()
        });
        let st = Statement::new(&i);
        let c = check_byproducts(&st, dir.path());
        let status: Vec<_> = c.iter().map(|c| c.status).collect();
        assert_eq!(status, ["match", "refused", "missing"]);
        std::fs::write(dir.path().join("logs/run-1/building.log"), b"forged\n").unwrap();
        assert_eq!(check_byproducts(&st, dir.path())[0].status, "mismatch");
        assert!(byproduct_path(dir.path(), "/etc/passwd").is_none());
    }
}
