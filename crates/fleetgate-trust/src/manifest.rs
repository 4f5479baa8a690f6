//! The release manifest: its fields, signing, and verification.

use crate::cosign::{SignedManifest, join_detached, render_cosignatures, split_bundle};
use crate::document::{
    MASTER_SIGNATURE_FIELD, SIGNATURES_FIELD, SignError, VerifiedDocument, check_signers,
    json_kind, parse_limited, render, signature_entry, signed_bytes, verify_object,
};
use crate::error::VerifyError;
use crate::keyring::Keyring;
use crate::keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest manifest accepted from anywhere; checked before parsing.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Manifest format version written by this crate. A manifest without
/// `schema_version` is a HART legacy manifest (see [`VerifyOptions`]).
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;
/// Marker field of a dev-mode (unsigned) manifest; its presence, with any
/// value, makes every verifier refuse the manifest ([`VerifyError::DevMode`]).
pub const DEV_MODE_FIELD: &str = "dev_mode";
/// How far in the future `built_at` may lie (clock skew between the signer
/// and the verifier) before the manifest is "not yet valid".
pub const MAX_FUTURE_SKEW_SECS: u64 = 300;

/// Fields a schema-1 manifest must carry.
const V1_REQUIRED: [&str; 13] = [
    "version",
    "git_sha",
    "code_hash",
    "file_manifest_hash",
    "guardrail_hash",
    "built_at",
    "master_public_key",
    "sequence",
    "expires_at",
    "kind",
    "canary_seed",
    "key_ids",
    "fencing_epoch",
];
/// fleetgate-only fields; a legacy (HART) manifest must have none.
const FLEETGATE_FIELDS: [&str; 7] = [
    "sequence",
    "expires_at",
    "kind",
    "canary_seed",
    "key_ids",
    "fencing_epoch",
    "provenance_sha256",
];

/// `release`, `rollback` or `agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    /// A new version to roll out.
    #[default]
    Release,
    /// An order to return to an earlier version. It still carries a new,
    /// higher `sequence`.
    Rollback,
    /// A new build of the node agent itself, applied only by nodes that opted in
    /// (`self_update = true`). `artifacts` lists exactly the agent binary and
    /// `code_hash` is its SHA-256; its `sequence` is compared with earlier agent updates
    /// only, never with the release floor.
    Agent,
}

impl ManifestKind {
    /// `"release"` / `"rollback"` / `"agent"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Rollback => "rollback",
            Self::Agent => "agent",
        }
    }
}

/// How a manifest's `code_hash` and `file_manifest_hash` were computed (the manifest's
/// `hash_scheme`; absent means `git`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashScheme {
    /// fleetgate's own: every file git tracks at the commit (blob bytes), lines
    /// `path:sha256\n`, compact JSON file manifest.
    #[default]
    Git,
    /// HART's `compute_code_hash`: the `*.py` files of the checked-out tree on disk,
    /// lines joined by `\n` without a trailing one, file manifest with Python's default
    /// `json.dumps` separators.
    Hart,
}

impl HashScheme {
    /// `"git"` / `"hart"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Git => "git",
            Self::Hart => "hart",
        }
    }

    /// Whether this is the default (`git`), which manifests leave out.
    #[must_use]
    pub fn is_git(&self) -> bool {
        *self == Self::Git
    }
}

impl std::fmt::Display for HashScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HashScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "git" => Ok(Self::Git),
            "hart" => Ok(Self::Hart),
            other => Err(format!(
                "hash scheme {other:?} is not known; use \"git\" or \"hart\""
            )),
        }
    }
}

/// The release a rollback undoes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackOf {
    /// Sequence of the undone release.
    pub sequence: u64,
    /// Version of the undone release.
    pub version: String,
    /// Code hash of the undone release, when the signer names it. A node that runs
    /// this code hash (under whatever sequence) counts as running the revoked release.
    /// Absent from manifests that do not set it (their signed bytes are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_hash: Option<String>,
}

/// Most artifacts one manifest lists.
pub const MAX_ARTIFACTS: usize = 256;

/// A built file a release ships (like a TUF target): the node downloads it by its
/// digest, checks size and SHA-256 before use, and installs it into the new slot
/// (archives unpacked, other files placed at `name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Relative path (`/`-separated, no `..`, no leading `/`, ≤ 255 bytes): where a plain
    /// file is placed in the slot; an archive (`.tar`, `.tar.gz`, `.tgz`, `.zip`) is
    /// unpacked at the slot's root.
    pub name: String,
    /// SHA-256 of the file, 64 lowercase hex characters.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The one artifact name no release may use: the agent records the digest of every file
/// it installed into a slot under this name.
pub const RESERVED_ARTIFACT_NAME: &str = ".fleetgate-files.json";

impl Artifact {
    /// Checks the name and the digest.
    ///
    /// # Errors
    /// A message naming the artifact and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        let bad_part = n
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\\'));
        if n.is_empty() || n.len() > 255 || bad_part || n.chars().any(char::is_control) {
            return Err(format!(
                "artifact name {n:?} is not a relative path of plain `/`-separated parts (no `..`, `.`, empty part, backslash or control character; ≤ 255 bytes)"
            ));
        }
        if n == RESERVED_ARTIFACT_NAME {
            return Err(format!(
                "artifact name {n:?} is reserved: the agent writes the list of installed files there"
            ));
        }
        if !is_sha256_hex(&self.sha256) {
            return Err(format!(
                "artifact {n:?}: sha256 {:?} is not 64 lowercase hex characters",
                self.sha256
            ));
        }
        Ok(())
    }
}

/// A release manifest. HART's fields first, then fleetgate's. Unknown fields
/// a signer added are kept in `extra` (and were covered by the signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; [`MANIFEST_SCHEMA_VERSION`], or 0 for a HART legacy
    /// manifest (which has no fleetgate fields).
    #[serde(default)]
    pub schema_version: u32,
    /// Release version (e.g. `v1.4.0`).
    pub version: String,
    /// Commit being released.
    #[serde(default)]
    pub git_sha: String,
    /// HART code hash (hex SHA-256).
    pub code_hash: String,
    /// Hash of the file manifest.
    #[serde(default)]
    pub file_manifest_hash: String,
    /// How `code_hash` and `file_manifest_hash` were computed. Left out of the JSON
    /// when `git` (the default), so such manifests are byte-identical to earlier ones.
    #[serde(default, skip_serializing_if = "HashScheme::is_git")]
    pub hash_scheme: HashScheme,
    /// Hash of the pinned guardrail files ("" when none).
    #[serde(default)]
    pub guardrail_hash: String,
    /// Build time, RFC 3339 UTC seconds (`2026-01-31T12:00:00Z`).
    #[serde(default)]
    pub built_at: String,
    /// Hex public key of the key that made `master_signature`.
    #[serde(default)]
    pub master_public_key: String,
    /// Release sequence, strictly increasing per fleet (≥ 1).
    #[serde(default)]
    pub sequence: u64,
    /// Expiry, unix seconds; refused at or after this time.
    #[serde(default)]
    pub expires_at: u64,
    /// `release` or `rollback`.
    #[serde(default)]
    pub kind: ManifestKind,
    /// For a rollback: the release it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<RollbackOf>,
    /// For a rollback: the version to return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to_version: Option<String>,
    /// For a rollback: code hash of the version to return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to_code_hash: Option<String>,
    /// For a rollback: commit of the version to return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to_git_sha: Option<String>,
    /// Canary selection seed (hex).
    #[serde(default)]
    pub canary_seed: String,
    /// Ids of the keys that signed at creation (informational: verification
    /// trusts the keyring, never this list).
    #[serde(default)]
    pub key_ids: Vec<String>,
    /// Orchestrator lease epoch (fencing token); 0 when unused.
    #[serde(default)]
    pub fencing_epoch: u64,
    /// SHA-256 (lowercase hex) of the release's provenance statement file: an in-toto
    /// Statement v1 with an SLSA Provenance v1 predicate, in canonical JSON, naming the
    /// digests of every gate's evidence (see [`crate::provenance`]). Signed like every
    /// other field; left out of the JSON when absent (rollback orders, manifests signed
    /// by hand), so such manifests are byte-identical to earlier ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance_sha256: Option<String>,
    /// The built files the release ships (at most [`MAX_ARTIFACTS`], distinct names).
    /// Left out of the JSON when empty (source releases: the node fetches `git_sha`), so
    /// such manifests are byte-identical to earlier ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Fields this version does not know, preserved as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            schema_version: MANIFEST_SCHEMA_VERSION,
            version: String::new(),
            git_sha: String::new(),
            code_hash: String::new(),
            file_manifest_hash: String::new(),
            hash_scheme: HashScheme::Git,
            guardrail_hash: String::new(),
            built_at: String::new(),
            master_public_key: String::new(),
            sequence: 0,
            expires_at: 0,
            kind: ManifestKind::Release,
            rollback_of: None,
            return_to_version: None,
            return_to_code_hash: None,
            return_to_git_sha: None,
            canary_seed: String::new(),
            key_ids: Vec::new(),
            fencing_epoch: 0,
            provenance_sha256: None,
            artifacts: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// `unix` seconds as RFC 3339 UTC with seconds precision
/// (`2026-01-31T12:00:00Z`), the `built_at` format.
#[must_use]
pub fn rfc3339_seconds(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Parses an RFC 3339 UTC time (`…Z`) to unix seconds.
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Current unix time in seconds (0 if the clock is before 1970).
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh random canary seed: 32 bytes as hex.
///
/// # Errors
/// When the OS random generator fails.
pub fn random_canary_seed() -> Result<String, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(hex::encode(seed))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is a SHA-256 digest as fleetgate writes them: 64 lowercase hex characters.
#[must_use]
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Whether this is a HART legacy manifest (no fleetgate fields).
    #[must_use]
    pub fn is_legacy(&self) -> bool {
        self.schema_version == 0
    }

    /// `built_at` as unix seconds, when it parses.
    #[must_use]
    pub fn built_at_unix(&self) -> Option<u64> {
        parse_rfc3339(&self.built_at)
    }

    /// Checks a schema-1 manifest's fields for consistency.
    ///
    /// # Errors
    /// A message naming the offending field and value.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != MANIFEST_SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is not supported; this fleetgate reads {MANIFEST_SCHEMA_VERSION}",
                self.schema_version
            ));
        }
        if self.version.trim().is_empty() {
            return Err("version is empty".to_owned());
        }
        if self.code_hash.trim().is_empty() {
            return Err("code_hash is empty".to_owned());
        }
        if self.built_at_unix().is_none() {
            return Err(format!(
                "built_at {:?} is not an RFC 3339 UTC time such as 2026-01-31T12:00:00Z",
                self.built_at
            ));
        }
        if self.sequence == 0 {
            return Err("sequence is 0; release sequences start at 1".to_owned());
        }
        if self.expires_at == 0 {
            return Err("expires_at is 0; set an expiry (unix seconds)".to_owned());
        }
        if PublicKey::from_hex(&self.master_public_key).is_err() {
            return Err(format!(
                "master_public_key {:?} is not a 64-hex-character Ed25519 public key",
                self.master_public_key
            ));
        }
        if !is_hex(&self.canary_seed) {
            return Err(format!(
                "canary_seed {:?} is not a non-empty hex string",
                self.canary_seed
            ));
        }
        if let Some(p) = &self.provenance_sha256
            && !is_sha256_hex(p)
        {
            return Err(format!(
                "provenance_sha256 {p:?} is not a SHA-256 digest (64 lowercase hex characters)"
            ));
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return Err(format!(
                "artifacts lists {} files; at most {MAX_ARTIFACTS}",
                self.artifacts.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for a in &self.artifacts {
            a.validate()?;
            if !names.insert(a.name.as_str()) {
                return Err(format!("artifact name {:?} is listed twice", a.name));
            }
        }
        match self.kind {
            ManifestKind::Release => {
                if self.sets_rollback_fields() {
                    return Err(
                        "a release manifest must not set rollback_of or return_to_*; use kind \"rollback\""
                            .to_owned(),
                    );
                }
            }
            ManifestKind::Rollback => {
                let Some(of) = &self.rollback_of else {
                    return Err(
                        "a rollback manifest must name the release it undoes in rollback_of"
                            .to_owned(),
                    );
                };
                if of.sequence >= self.sequence {
                    return Err(format!(
                        "rollback sequence {} must be above the sequence it undoes ({})",
                        self.sequence, of.sequence
                    ));
                }
                if self
                    .return_to_version
                    .as_deref()
                    .is_none_or(|v| v.trim().is_empty())
                {
                    return Err("a rollback manifest must set return_to_version".to_owned());
                }
            }
            ManifestKind::Agent => {
                if self.sets_rollback_fields() {
                    return Err(
                        "an agent update must not set rollback_of or return_to_*".to_owned()
                    );
                }
                let [binary] = self.artifacts.as_slice() else {
                    return Err(format!(
                        "an agent update lists exactly one artifact, the agent binary; it lists {}",
                        self.artifacts.len()
                    ));
                };
                if binary.sha256 != self.code_hash {
                    return Err(format!(
                        "an agent update's code_hash must be its binary's SHA-256 ({}), not {:?}",
                        binary.sha256, self.code_hash
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether any of `rollback_of` / `return_to_*` is set (only rollback orders may).
    fn sets_rollback_fields(&self) -> bool {
        self.rollback_of.is_some()
            || self.return_to_version.is_some()
            || self.return_to_code_hash.is_some()
            || self.return_to_git_sha.is_some()
    }

    /// Parses a manifest object (without signature fields). Legacy (HART)
    /// manifests are accepted only when `allow_legacy`.
    fn from_object(obj: &Map<String, Value>, allow_legacy: bool) -> Result<Self, String> {
        let has_schema = obj.contains_key("schema_version");
        if has_schema {
            if let Some(missing) = V1_REQUIRED.iter().find(|f| !obj.contains_key(**f)) {
                return Err(format!("the required field {missing:?} is missing"));
            }
        } else {
            if let Some(f) = FLEETGATE_FIELDS.iter().find(|f| obj.contains_key(**f)) {
                return Err(format!(
                    "it has the fleetgate field {f:?} but no schema_version"
                ));
            }
            if !allow_legacy {
                return Err(
                    "it is a HART legacy manifest (no schema_version, sequence or expiry); \
                     it is accepted only with a single pinned public key (--pubkey)"
                        .to_owned(),
                );
            }
        }
        let m: Self =
            serde_json::from_value(Value::Object(obj.clone())).map_err(|e| e.to_string())?;
        if has_schema {
            if m.schema_version == 0 {
                return Err("schema_version 0 is not valid".to_owned());
            }
            m.validate()?;
        }
        Ok(m)
    }
}

/// Options for [`verify_manifest`]. `Default` is the safe choice: no floor,
/// no legacy manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Highest sequence already committed (the anti-rollback floor, from
    /// [`crate::Floor::sequence`]); a manifest with `sequence <= floor` is
    /// [`VerifyError::Replayed`].
    pub floor: Option<u64>,
    /// Last wall-clock time a manifest was verified here. When the clock is
    /// behind it, that later time is used for expiry and key windows (a
    /// clock stepped backward cannot revive an expired manifest) and the
    /// step is reported in [`VerifiedManifest::clock_stepped_back_by`].
    pub last_verified_at: Option<u64>,
    /// Accept HART legacy manifests (no `schema_version`, sequence or
    /// expiry). Only [`verify_with_pubkey`] sets it; such a manifest never
    /// passes a floor (its sequence counts as 0).
    pub allow_legacy_hart: bool,
}

/// A manifest that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    /// The typed manifest.
    pub manifest: Manifest,
    /// Distinct trusted keys whose signatures verified.
    pub key_ids: Vec<String>,
    /// The received object (with signatures and unknown fields).
    pub value: Map<String, Value>,
    /// The exact bytes the signatures cover.
    pub signed_bytes: Vec<u8>,
    /// A HART legacy manifest (no sequence or expiry checks were possible).
    pub legacy_hart: bool,
    /// Seconds the clock is behind the last verified time, if it is.
    pub clock_stepped_back_by: Option<u64>,
}

fn malformed(reason: String) -> VerifyError {
    VerifyError::Malformed {
        what: "manifest",
        reason,
    }
}

/// Verifies a manifest's bytes: size ≤ [`MAX_MANIFEST_BYTES`] (before
/// parsing), strict JSON, no dev-mode marker, signatures by ≥ k distinct
/// trusted keys valid at `now` (strict Ed25519), well-formed schema-1
/// fields, not expired, not built in the future, and above the floor.
///
/// # Errors
/// The [`VerifyError`] naming the first failed check.
pub fn verify_manifest(
    bytes: &[u8],
    keyring: &Keyring,
    now: u64,
    opts: &VerifyOptions,
) -> Result<VerifiedManifest, VerifyError> {
    let obj = parse_limited(bytes, MAX_MANIFEST_BYTES, "manifest")?;
    verify_manifest_object(obj, keyring, now, opts)
}

/// [`verify_manifest`] for an already parsed object (e.g. embedded in a
/// size-limited gossip message parsed with [`crate::parse_strict`]).
///
/// # Errors
/// As [`verify_manifest`].
pub fn verify_manifest_value(
    value: Value,
    keyring: &Keyring,
    now: u64,
    opts: &VerifyOptions,
) -> Result<VerifiedManifest, VerifyError> {
    match value {
        Value::Object(obj) => verify_manifest_object(obj, keyring, now, opts),
        other => Err(malformed(format!(
            "it is a JSON {}, not an object",
            json_kind(&other)
        ))),
    }
}

fn verify_manifest_object(
    obj: Map<String, Value>,
    keyring: &Keyring,
    now: u64,
    opts: &VerifyOptions,
) -> Result<VerifiedManifest, VerifyError> {
    let (manifest, cosignatures) = split_bundle(obj)?;
    verify_parts(manifest, cosignatures, keyring, now, opts)
}

/// Verifies a manifest file together with its detached co-signature file (when there
/// is one; see [`crate::cosign`]): both size-limited before parsing, the co-signature
/// file bound to this manifest by its `signed_sha256`, every signature counted once
/// per distinct trusted key. Otherwise as [`verify_manifest`].
///
/// # Errors
/// As [`verify_manifest`]; a co-signature file of another manifest is
/// [`VerifyError::Malformed`].
pub fn verify_manifest_detached(
    manifest: &[u8],
    cosignatures: Option<&[u8]>,
    keyring: &Keyring,
    now: u64,
    opts: &VerifyOptions,
) -> Result<VerifiedManifest, VerifyError> {
    let obj = parse_limited(manifest, MAX_MANIFEST_BYTES, "manifest")?;
    let Some(cosig) = cosignatures else {
        return verify_manifest_object(obj, keyring, now, opts);
    };
    if obj.contains_key(crate::cosign::BUNDLE_FIELD) {
        return Err(malformed(
            "it is a bundle, which carries its own co-signatures; verify it without a co-signature file"
                .into(),
        ));
    }
    let (manifest, entries) = join_detached(obj, cosig)?;
    verify_parts(manifest, entries, keyring, now, opts)
}

fn verify_parts(
    manifest: Map<String, Value>,
    cosignatures: Vec<Value>,
    keyring: &Keyring,
    now: u64,
    opts: &VerifyOptions,
) -> Result<VerifiedManifest, VerifyError> {
    if manifest.contains_key(DEV_MODE_FIELD) {
        return Err(VerifyError::DevMode);
    }
    let last = opts.last_verified_at.unwrap_or(0);
    let clock_stepped_back_by = (last > now).then(|| last - now);
    let effective_now = now.max(last);

    // The verifier counts `master_signature` plus a `signatures` list; detached
    // co-signatures join the (legacy, embedded) list for that purpose only.
    let mut combined = manifest.clone();
    if !cosignatures.is_empty() {
        let mut list = match combined.remove(SIGNATURES_FIELD) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(malformed(format!(
                    "signatures is a {}, not an array",
                    json_kind(&other)
                )));
            }
        };
        list.extend(cosignatures);
        combined.insert(SIGNATURES_FIELD.to_owned(), Value::Array(list));
    }
    let VerifiedDocument {
        signed_bytes,
        key_ids,
        ..
    } = verify_object(combined, keyring, effective_now, "manifest")?;
    let value = manifest;
    let payload = crate::document::strip_signatures(&value);
    let manifest = Manifest::from_object(&payload, opts.allow_legacy_hart).map_err(malformed)?;

    if !manifest.is_legacy() {
        if manifest.expires_at <= effective_now {
            return Err(VerifyError::Expired {
                expires_at: manifest.expires_at,
                now: effective_now,
            });
        }
        if let Some(built) = manifest.built_at_unix()
            && built > effective_now.saturating_add(MAX_FUTURE_SKEW_SECS)
        {
            return Err(VerifyError::NotYetValid {
                what: "manifest",
                now: effective_now,
                reason: format!(
                    "built_at {} lies more than {MAX_FUTURE_SKEW_SECS}s in the future",
                    manifest.built_at
                ),
            });
        }
    }
    if let Some(floor) = opts.floor
        && manifest.sequence <= floor
    {
        return Err(VerifyError::Replayed {
            sequence: manifest.sequence,
            floor,
        });
    }
    Ok(VerifiedManifest {
        legacy_hart: manifest.is_legacy(),
        manifest,
        key_ids,
        value,
        signed_bytes,
        clock_stepped_back_by,
    })
}

/// HART's single-key case: verifies against one pinned public key
/// (threshold 1). HART legacy manifests (no fleetgate fields) are accepted;
/// schema-1 manifests get every check (expiry included). No floor.
///
/// # Errors
/// [`VerifyError::Malformed`] when `pubkey_hex` is not a public key, else
/// as [`verify_manifest`].
pub fn verify_with_pubkey(
    bytes: &[u8],
    pubkey_hex: &str,
    now: u64,
) -> Result<VerifiedManifest, VerifyError> {
    let pk = PublicKey::from_hex(pubkey_hex).map_err(|e| VerifyError::Malformed {
        what: "trusted public key",
        reason: e.to_string(),
    })?;
    let opts = VerifyOptions {
        allow_legacy_hart: true,
        ..VerifyOptions::default()
    };
    verify_manifest(bytes, &Keyring::single(pk), now, &opts)
}

/// Signs a manifest and returns the bytes to send to a node: with one key, the manifest
/// itself (exactly one signature field, `master_signature`, as HART expects); with more,
/// a bundle of the manifest and its detached co-signatures ([`crate::cosign`]). To write
/// `release_manifest.json` (and `.sigs`), use [`sign_manifest_detached`].
///
/// # Errors
/// As [`sign_manifest_detached`].
pub fn sign_manifest(manifest: &Manifest, keys: &[&SigningKey]) -> Result<Vec<u8>, SignError> {
    sign_manifest_detached(manifest, keys)?.transport_bytes()
}

/// [`sign_manifest`] for a JSON object (keeps any extra fields; they are
/// signed too).
///
/// # Errors
/// As [`sign_manifest`].
pub fn sign_manifest_value(value: &Value, keys: &[&SigningKey]) -> Result<Vec<u8>, SignError> {
    sign_manifest_value_detached(value, keys)?.transport_bytes()
}

/// Signs a manifest: sets `master_public_key` to the first key's public key and
/// `key_ids` to the signers' ids, validates it, and returns the files to write: the
/// manifest with the first key's `master_signature` (the only signature field in it, so
/// HART's verifier accepts it), and, with more keys, the co-signature file holding the
/// others' signatures over the same bytes.
///
/// # Errors
/// [`SignError::InvalidManifest`], [`SignError::DevMode`], [`SignError::NoKeys`],
/// [`SignError::DuplicateSigner`], [`SignError::Canonical`].
pub fn sign_manifest_detached(
    manifest: &Manifest,
    keys: &[&SigningKey],
) -> Result<SignedManifest, SignError> {
    let value = serde_json::to_value(manifest).map_err(|e| SignError::InvalidManifest {
        reason: e.to_string(),
    })?;
    sign_manifest_value_detached(&value, keys)
}

/// [`sign_manifest_detached`] for a JSON object (keeps any extra fields; they are
/// signed too).
///
/// # Errors
/// As [`sign_manifest_detached`].
pub fn sign_manifest_value_detached(
    value: &Value,
    keys: &[&SigningKey],
) -> Result<SignedManifest, SignError> {
    let Value::Object(obj) = value else {
        return Err(SignError::NotAnObject {
            found: json_kind(value),
        });
    };
    if obj.contains_key(DEV_MODE_FIELD) {
        return Err(SignError::DevMode);
    }
    check_signers(keys)?;
    let (first, rest) = keys.split_first().ok_or(SignError::NoKeys)?;
    let mut obj = crate::document::strip_signatures(obj);
    obj.insert(
        "master_public_key".to_owned(),
        Value::String(first.public_key_hex()),
    );
    obj.insert(
        "key_ids".to_owned(),
        Value::Array(keys.iter().map(|k| Value::String(k.key_id())).collect()),
    );
    Manifest::from_object(&obj, false).map_err(|reason| SignError::InvalidManifest { reason })?;
    let message = signed_bytes(&obj)?;
    obj.insert(
        MASTER_SIGNATURE_FIELD.to_owned(),
        Value::String(hex::encode(first.sign(&message))),
    );
    let cosignatures = (!rest.is_empty()).then(|| {
        render_cosignatures(
            &message,
            rest.iter().map(|k| signature_entry(k, &message)).collect(),
        )
    });
    Ok(SignedManifest {
        manifest: render(&obj),
        cosignatures,
    })
}

/// The bytes of a dev-mode manifest: unsigned, marked with
/// `"dev_mode": true`. For the SIGN stage's explicit dev mode only; every
/// verifier refuses it with [`VerifyError::DevMode`].
#[must_use]
pub fn dev_mode_manifest(manifest: &Manifest) -> Vec<u8> {
    let mut obj = match serde_json::to_value(manifest) {
        Ok(Value::Object(obj)) => obj,
        _ => Map::new(),
    };
    obj.insert(DEV_MODE_FIELD.to_owned(), Value::Bool(true));
    render(&obj)
}
