//! # fleetgate-trust — signed release manifests and the trust they rest on
//!
//! **Where it sits.** A leaf library under the SIGN stage (orchestrator), the
//! node agent (before applying anything) and gossip (before forwarding). It
//! depends on no other fleetgate crate and does no network I/O; its only
//! I/O is reading key/trust files and the floor directory it is handed.
//!
//! **What it owns.**
//! - [`canonical`]: [`to_canonical_bytes`] — byte-exact Python
//!   `json.dumps(obj, sort_keys=True, separators=(',', ':'))` (ASCII escaped,
//!   floats refused) — and [`parse_strict`] (duplicate keys refused).
//! - Keys: [`SigningKey`] (zeroized, secret never in `Debug` or errors;
//!   [`SigningKey::generate`], [`SigningKey::from_file`] (seed hex, HART's
//!   `MASTER_PRIVATE_KEY_HEX` form), [`SigningKey::from_env`]
//!   (`FLEETGATE_SIGNING_KEY_HEX`, then HART's `MASTER_PRIVATE_KEY_HEX`,
//!   `HEVOLVE_MASTER_PRIVATE_KEY_HEX`, `HEVOLVE_MASTER_PRIVATE_KEY`),
//!   [`SigningKey::load`]), [`PublicKey`], [`keygen`] (seed hex at `out`,
//!   mode 0600; public hex at `out.pub`). **Key id** = first 16 hex chars of
//!   `sha256(public key bytes)` ([`key_id`]).
//! - The signed-document primitive ([`sign_document`], [`add_signature`],
//!   [`verify_document`], [`verify_document_value`]): signatures in
//!   `master_signature` (hex; the first signer) and
//!   `signatures: [{key_id, sig}]` (the others); signed bytes = canonical
//!   bytes of the received object minus those two fields. Used for
//!   manifests, keyring rotation, and node enrollment certificates.
//! - [`Keyring`] (the trust file: keys, k-of-n threshold, validity windows,
//!   [`Keyring::rotate`]).
//! - [`Manifest`] (with [`HashScheme`]: how its code hash was computed),
//!   [`sign_manifest_detached`] / [`sign_manifest`] / [`sign_manifest_value`],
//!   [`verify_manifest`] / [`verify_manifest_detached`] /
//!   [`verify_manifest_value`] / [`verify_with_pubkey`], [`dev_mode_manifest`].
//! - [`cosign`]: a manifest's k-of-n co-signatures live in a detached file
//!   (`release_manifest.json.sigs`), so the manifest keeps exactly one
//!   signature and HART's verifier accepts it; [`add_manifest_signature`],
//!   and the bundle that carries both to a node ([`bundle`]).
//! - [`Floor`]: the persisted anti-rollback floor.
//! - [`provenance`]: the release's in-toto Statement v1 / SLSA Provenance v1, whose
//!   SHA-256 the manifest carries in `provenance_sha256`.
//! - [`ratelimit`]: a pure per-source token bucket (time passed in), used by the
//!   gossip and HTTP listeners.
//! - [`secret_env`]: secrets taken out of the environment (and out of the initial
//!   environment block `/proc/PID/environ` shows) into a zeroizing vault.
//!
//! **Invariants.** Verification works on the received bytes: size limit
//! ([`MAX_MANIFEST_BYTES`] = 64 KiB) before parsing; parse once, strip the
//! signature fields, canonicalise once; nothing is re-serialised from a
//! typed struct, so unknown fields are signed and preserved. Ed25519 is
//! verified with `verify_strict`. Each distinct trusted key counts once.
//! ([`batch`] checks many heartbeat signatures at once with the same answers but
//! one, which only a key's holder can provoke; nothing signed for trust uses it.)
//! Unsigned, dev-mode, expired and replayed manifests are refused; there is
//! no bypass. No `unwrap` on input from a file or peer.
//!
//! **Exit codes** ([`VerifyError::exit_code`]; `fleetgate manifest verify`
//! exits with them):
//!
//! | code | error | meaning |
//! |---|---|---|
//! | 0 | — | valid |
//! | 10 | `too_large` | over the size limit, refused before parsing |
//! | 11 | `malformed` | not JSON / not an object / duplicate key / float / bad or missing field |
//! | 12 | `unsigned` | no signature field |
//! | 13 | `bad_signature` | a signature does not match the content (tampered) |
//! | 14 | `unknown_key` | signed by a key not in the trust file |
//! | 15 | `below_threshold` | fewer than k distinct trusted keys signed |
//! | 16 | `expired` | `expires_at` ≤ now |
//! | 17 | `not_yet_valid` | signing key outside its window, or `built_at` in the future |
//! | 18 | `replayed` | `sequence` ≤ the anti-rollback floor |
//! | 19 | `dev_mode` | a dev-mode (unsigned) manifest |
//!
//! **How to test.** `cargo nextest run -p fleetgate-trust`. The suites:
//! `tests/python_compat.rs` (proptest: canonical bytes == Python 3, and
//! HART-style signing with Python `cryptography`, skipped loudly when
//! missing), `tests/wycheproof.rs` (every Ed25519 vector through
//! [`PublicKey::verify_strict`], and through [`verify_strict_batch`] beside valid
//! and forged signatures), `tests/manifest.rs` (round trip, tamper,
//! unknown key, thresholds, expiry, replay, size, rotation),
//! `tests/cli_module.rs` (the `fleetgate keygen` / `manifest` handlers in
//! `crates/fleetgate-cli/src/trust_cmd.rs`, compiled from here).

pub mod batch;
pub mod canonical;
pub mod cosign;
mod document;
mod error;
mod floor;
pub mod fsutil;
mod keyring;
mod keys;
mod manifest;
pub mod provenance;
pub mod ratelimit;
pub mod secret_env;

pub use batch::{BatchEntry, verify_strict_batch};
pub use canonical::{CanonicalError, ParseError, parse_strict, to_canonical_bytes};
pub use cosign::{
    COSIGNATURES_SUFFIX, SignedManifest, add_manifest_signature, bundle, cosignatures_path,
};
pub use document::{
    MASTER_SIGNATURE_FIELD, MAX_DOCUMENT_BYTES, MAX_SIGNATURES, SIGNATURE_FIELDS, SIGNATURES_FIELD,
    SignError, VerifiedDocument, add_signature, sign_document, signed_bytes, strip_signatures,
    verify_document, verify_document_value,
};
pub use error::VerifyError;
pub use floor::{FLOOR_FILE, FLOOR_SCHEMA_VERSION, Floor, FloorError};
pub use fsutil::FsError;
pub use keyring::{
    KEYRING_SCHEMA_VERSION, Keyring, KeyringError, MAX_KEYRING_BYTES, MAX_KEYS, TrustedKey,
};
pub use keys::{
    ENV_HART_SIGNING_KEY, ENV_SIGNING_KEY, KeyError, KeygenOutput, MAX_KEY_FILE_BYTES, PublicKey,
    SIGNING_KEY_ENV_VARS, SigningKey, key_id, keygen, public_path_for,
};
pub use manifest::{
    Artifact, DEV_MODE_FIELD, HashScheme, MANIFEST_SCHEMA_VERSION, MAX_ARTIFACTS,
    MAX_FUTURE_SKEW_SECS, MAX_MANIFEST_BYTES, Manifest, ManifestKind, RESERVED_ARTIFACT_NAME,
    RollbackOf, VerifiedManifest, VerifyOptions, dev_mode_manifest, is_sha256_hex, parse_rfc3339,
    random_canary_seed, rfc3339_seconds, sign_manifest, sign_manifest_detached,
    sign_manifest_value, sign_manifest_value_detached, unix_now, verify_manifest,
    verify_manifest_detached, verify_manifest_value, verify_with_pubkey,
};
