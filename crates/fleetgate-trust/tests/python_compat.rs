//! Byte compatibility with Python 3 and HART.
//!
//! - A property test: for arbitrary JSON values (strings with non-ASCII,
//!   astral, control characters; nested objects/arrays; i64/u64), our
//!   canonical bytes equal Python's
//!   `json.dumps(v, sort_keys=True, separators=(',', ':'))`. Values are
//!   batched, one `python3` run per proptest case.
//! - HART interop in both directions, with Python's `cryptography` package
//!   implementing HART's `sign_release.py` / verifier. Skipped with a loud
//!   message when `cryptography` is not installed.
//!
//! Without `python3` (or with `FLEETGATE_SKIP_PYTHON_TESTS=1`) the tests are skipped
//! loudly through `fleetgate-testkit` (listed in `cargo xtask test`'s summary); in CI
//! they fail instead.

use fleetgate_trust::{
    Manifest, SigningKey, VerifyError, rfc3339_seconds, sign_manifest_value, to_canonical_bytes,
    unix_now, verify_with_pubkey,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::io::Write as _;
use std::process::{Command, Stdio};

fn python_available() -> bool {
    if std::env::var_os("FLEETGATE_SKIP_PYTHON_TESTS").is_some() {
        fleetgate_testkit::skip(
            "python3",
            "FLEETGATE_SKIP_PYTHON_TESTS is set; Python byte-compatibility NOT checked",
        );
        return false;
    }
    fleetgate_testkit::require(
        "python3",
        "python3",
        &["--version"],
        "python3 is not installed; Python byte-compatibility NOT checked",
    )
}

/// Runs `python3 -c script` with `stdin`, returns stdout; panics with stderr
/// on failure.
fn python(script: &str, stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (or set FLEETGATE_SKIP_PYTHON_TESTS=1)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("python3 ran");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const DUMPS_LINES: &str = r#"
import json, sys
data = sys.stdin.buffer.read().decode('utf-8')
out = []
for line in data.split('\n'):
    if line:
        out.append(json.dumps(json.loads(line), sort_keys=True, separators=(',', ':')))
sys.stdout.write('\n'.join(out) + '\n')
"#;

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap_or('?')),
        2 => prop::sample::select(vec![
            '"', '\\', '/', '\u{7f}', '\u{80}', 'é', '€', '\u{2028}', '\u{feff}',
            '\u{d7ff}', '\u{e000}', '\u{fffd}', '\u{ffff}', '\u{10000}', '😀',
            '\u{10ffff}', 'a', 'Z', ' ', '~',
        ]),
    ]
}

fn tricky_string() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..10).prop_map(|cs| cs.into_iter().collect())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((tricky_string(), inner), 0..6)
                .prop_map(|kvs| Value::Object(kvs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn canonical_bytes_equal_python_json_dumps(values in prop::collection::vec(json_value(), 1..80)) {
        if !python_available() {
            return Ok(());
        }
        let mut input = Vec::new();
        for v in &values {
            input.extend_from_slice(serde_json::to_string(v).expect("serialise").as_bytes());
            input.push(b'\n');
        }
        let out = python(DUMPS_LINES, &input);
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        prop_assert_eq!(lines.len(), values.len());
        for (v, py) in values.iter().zip(lines) {
            let ours = to_canonical_bytes(v).expect("no floats generated");
            prop_assert!(
                ours.as_slice() == py,
                "value {:?}\n ours:   {}\n python: {}",
                v,
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(py)
            );
        }
    }
}

fn has_cryptography() -> bool {
    if !python_available() {
        return false;
    }
    fleetgate_testkit::require(
        "Python's cryptography",
        "python3",
        &[
            "-c",
            "import cryptography.hazmat.primitives.asymmetric.ed25519",
        ],
        "HART signing interop NOT checked; install it with `pip install cryptography` \
         (Debian: apt-get install python3-cryptography)",
    )
}

/// HART's sign_release.py, reduced to its signing core: build the manifest,
/// sign json.dumps(sort_keys, separators) of it, add master_signature.
const HART_SIGN: &str = r#"
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization
seed = bytes.fromhex(sys.argv[1])
priv = Ed25519PrivateKey.from_private_bytes(seed)
pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
manifest = {
    'version': 'v2.0.1',
    'git_sha': 'a' * 40,
    'code_hash': 'c' * 64,
    'file_manifest_hash': 'f' * 64,
    'guardrail_hash': 'g' * 64,
    'built_at': '2026-01-31T12:00:00Z',
    'master_public_key': pub,
    'notes': 'caf\u00e9 \U0001F600 tab\there "quoted" back\\slash',
}
payload = json.dumps(manifest, sort_keys=True, separators=(',', ':'))
manifest['master_signature'] = priv.sign(payload.encode('utf-8')).hex()
sys.stdout.write(json.dumps(manifest, indent=2))
"#;

/// HART's verifier: strip master_signature, canonicalise, verify against the
/// pinned key. Exit 0 = valid, 1 = invalid.
const HART_VERIFY: &str = r#"
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
manifest = json.loads(sys.stdin.buffer.read().decode('utf-8'))
sig = manifest.get('master_signature')
if not sig:
    sys.exit(2)
payload = {k: v for k, v in manifest.items() if k != 'master_signature'}
canonical = json.dumps(payload, sort_keys=True, separators=(',', ':'))
pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sys.argv[1]))
try:
    pub.verify(bytes.fromhex(sig), canonical.encode('utf-8'))
except Exception:
    sys.exit(1)
sys.stdout.write(canonical)
"#;

#[test]
fn hart_signed_manifest_verifies_in_fleetgate() {
    if !has_cryptography() {
        return;
    }
    let seed = [0x42u8; 32];
    let out = Command::new("python3")
        .args(["-c", HART_SIGN, &hex::encode(seed)])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = SigningKey::from_seed(&seed);
    let verified = verify_with_pubkey(&out.stdout, &key.public_key_hex(), unix_now())
        .expect("a HART-signed manifest verifies in fleetgate");
    assert!(verified.legacy_hart);
    assert_eq!(verified.manifest.version, "v2.0.1");
    assert_eq!(verified.key_ids, vec![key.key_id()]);
    assert_eq!(
        verified.manifest.extra.get("notes"),
        Some(&json!("café 😀 tab\there \"quoted\" back\\slash"))
    );

    // One changed byte in a signed field and it no longer verifies.
    let text = String::from_utf8(out.stdout).expect("utf8");
    let tampered = text.replace("v2.0.1", "v2.0.2");
    assert!(matches!(
        verify_with_pubkey(tampered.as_bytes(), &key.public_key_hex(), unix_now()),
        Err(VerifyError::BadSignature { .. })
    ));
    // And a different pinned key refuses it.
    let other = SigningKey::from_seed(&[7; 32]);
    assert!(verify_with_pubkey(text.as_bytes(), &other.public_key_hex(), unix_now()).is_err());
}

fn fleetgate_manifest_value(key: &SigningKey) -> Value {
    let now = unix_now();
    let m = Manifest {
        version: "v3.1.0".into(),
        git_sha: "b".repeat(40),
        code_hash: "d".repeat(64),
        file_manifest_hash: "e".repeat(64),
        guardrail_hash: String::new(),
        built_at: rfc3339_seconds(now - 5),
        sequence: 7,
        expires_at: now + 3600,
        canary_seed: "00ff".into(),
        master_public_key: key.public_key_hex(),
        ..Manifest::default()
    };
    let mut v = serde_json::to_value(m).expect("value");
    v["release_notes"] = json!("naïve \u{1}\u{7f} 𝄞 / \"x\"");
    v
}

#[test]
fn fleetgate_signed_manifest_verifies_in_hart_verifier() {
    if !has_cryptography() {
        return;
    }
    let key = SigningKey::from_seed(&[0x11; 32]);
    let signed = sign_manifest_value(&fleetgate_manifest_value(&key), &[&key]).expect("sign");
    let obj: Map<String, Value> = serde_json::from_slice(&signed).expect("json");
    let sig_fields: Vec<&String> = obj.keys().filter(|k| k.contains("signature")).collect();
    assert_eq!(
        sig_fields,
        vec!["master_signature"],
        "exactly one signature field"
    );

    let run = |bytes: &[u8]| {
        let mut child = Command::new("python3")
            .args(["-c", HART_VERIFY, &key.public_key_hex()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write");
        child.wait_with_output().expect("python3 ran")
    };
    let out = run(&signed);
    assert!(
        out.status.success(),
        "HART verifier refused a fleetgate manifest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bytes HART signs/verifies are exactly ours.
    let verified = verify_with_pubkey(&signed, &key.public_key_hex(), unix_now()).expect("verify");
    assert_eq!(out.stdout, verified.signed_bytes);

    // The HART verifier really can fail: tamper one signed byte.
    let text = String::from_utf8(signed)
        .expect("utf8")
        .replace("v3.1.0", "v3.1.1");
    assert_eq!(run(text.as_bytes()).status.code(), Some(1));
}
