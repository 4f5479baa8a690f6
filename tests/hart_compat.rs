//! HART compatibility through the real binary, checked against Python reimplementations
//! written from HART's published formulas (no HART code):
//!
//! - `fleetgate manifest sign --hash-scheme hart` and the pipeline with
//!   `[stages.build] hash_scheme = "hart"` put HART's `compute_code_hash` and
//!   `file_manifest_hash` in the manifest, over a tree with nested packages, skipped
//!   directories (`tests/`, `venv/`, `__pycache__`, …), CRLF bytes, an empty file and
//!   non-ASCII names (one outside the BMP, so `json.dumps` writes a surrogate pair);
//! - a k-of-n co-signed manifest still passes a HART-style verifier (strip
//!   `master_signature` only, Ed25519 over `json.dumps(sort_keys=True,
//!   separators=(',', ':'))`), its co-signatures being in `release_manifest.json.sigs`.
//!
//! Needs `python3` and, for the verifier, Python's `cryptography`: without them the tests
//! are skipped loudly through `fleetgate-testkit` (listed by `cargo xtask test`), except
//! when `CI=true`, where they fail.

mod common;
use common::{Env, code, git, text};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// HART's code hash, file manifest hash and the files it hashes, reimplemented from the
/// description: walk the tree on disk, only `*.py` regular files (symlinks followed),
/// never entering the skipped directory names at any depth; sorted `relpath:sha256`
/// lines joined by "\n" without a trailing one; the file manifest is `json.dumps` with
/// `sort_keys=True` and default separators.
const HART_HASH_PY: &str = r#"
import hashlib, json, os, sys

SKIPPED = {'__pycache__', 'venv310', 'venv', '.venv', '.git', '.idea', 'agent_data',
           'tests', 'node_modules', 'hevolve_backend.egg-info', 'autogen-0.2.37',
           '.pycharm_plugin'}

def python_files(top, here):
    for name in sorted(os.listdir(here)):
        full = os.path.join(here, name)
        if os.path.isdir(full):
            if name not in SKIPPED:
                yield from python_files(top, full)
        elif os.path.isfile(full) and os.path.splitext(name)[1] == '.py':
            yield os.path.relpath(full, top).replace(os.sep, '/'), full

def sha256_of(path):
    with open(path, 'rb') as fh:
        return hashlib.sha256(fh.read()).hexdigest()

root = sys.argv[1]
entries = sorted(python_files(root, root))
digests = {rel: sha256_of(full) for rel, full in entries}
lines = '\n'.join('%s:%s' % (rel, digests[rel]) for rel, _ in entries)
print(json.dumps({
    'code_hash': hashlib.sha256(lines.encode('utf-8')).hexdigest(),
    'file_manifest_hash': hashlib.sha256(json.dumps(digests, sort_keys=True).encode('utf-8')).hexdigest(),
    'files': [rel for rel, _ in entries],
}))
"#;

/// A HART-style verifier: strip `master_signature` only, canonical JSON, Ed25519 under
/// `master_public_key`. With a co-signature file and `{key_id: public hex}`, also checks
/// each detached signature over the same bytes and the file's `signed_sha256`.
const HART_VERIFY_PY: &str = r#"
import hashlib, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

with open(sys.argv[1], encoding='utf-8') as fh:
    doc = json.load(fh)
sig = bytes.fromhex(doc.pop('master_signature'))
payload = json.dumps(doc, sort_keys=True, separators=(',', ':')).encode('utf-8')
result = {'fields': sorted(doc.keys())}
try:
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc['master_public_key'])).verify(sig, payload)
    result['hart_valid'] = True
except InvalidSignature:
    result['hart_valid'] = False
if len(sys.argv) > 3:
    with open(sys.argv[2], encoding='utf-8') as fh:
        sigs = json.load(fh)
    keys = {k: Ed25519PublicKey.from_public_bytes(bytes.fromhex(v))
            for k, v in json.loads(sys.argv[3]).items()}
    result['signed_sha256_matches'] = sigs['signed_sha256'] == hashlib.sha256(payload).hexdigest()
    valid = 0
    for entry in sigs['signatures']:
        try:
            keys[entry['key_id']].verify(bytes.fromhex(entry['sig']), payload)
            valid += 1
        except (InvalidSignature, KeyError):
            pass
    result['cosignatures_valid'] = valid
print(json.dumps(result))
"#;

fn python_available() -> bool {
    if std::env::var_os("FLEETGATE_SKIP_PYTHON_TESTS").is_some() {
        fleetgate_testkit::skip(
            "python3",
            "FLEETGATE_SKIP_PYTHON_TESTS is set; HART compatibility NOT checked",
        );
        return false;
    }
    fleetgate_testkit::require(
        "python3",
        "python3",
        &["--version"],
        "python3 is not installed; HART compatibility NOT checked",
    )
}

/// Whether Python's `cryptography` can be imported (a skip outside CI, a failure in CI).
fn cryptography_available() -> bool {
    fleetgate_testkit::require(
        "Python's cryptography",
        "python3",
        &["-c", "import cryptography"],
        "HART verifier compatibility NOT checked; install it with `pip install cryptography` \
         (Debian: apt-get install python3-cryptography)",
    )
}

fn python(script: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed (or set FLEETGATE_SKIP_PYTHON_TESTS=1)");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The files HART hashes in [`python_tree`], in HART's order.
const EXPECTED_FILES: [&str; 12] = [
    "Z.py",
    "a.py",
    "a/b.py",
    "a_b.py",
    "app.py",
    "dir.py/inner.py",
    "link.py",
    "pkg/__init__.py",
    "pkg/crlf.py",
    "pkg/données.py",
    "pkg/sub/deep/leaf.py",
    "pkg/émoji_😀.py",
];

/// A Python project: nested packages, every skipped directory name (also nested), CRLF
/// bytes, an empty file, non-ASCII names (one outside the BMP), ordering traps
/// (`a.py` < `a/b.py` < `a_b.py`), a directory named like a module, a symlink to a module,
/// and files HART does not hash (`.pyc`, `.PY`, a bare `.py`, other extensions).
fn python_tree(root: &Path) {
    write(root, "app.py", b"print('hello')\n");
    write(root, "Z.py", b"Z = 1\n");
    write(root, "a.py", b"A = 1\n");
    write(root, "a/b.py", b"B = 1\n");
    write(root, "a_b.py", b"AB = 1\n");
    write(root, "dir.py/inner.py", b"INNER = 1\n");
    write(root, "pkg/__init__.py", b"");
    write(root, "pkg/crlf.py", b"x = 1\r\ny = 2\r\n");
    write(root, "pkg/données.py", "d = 'é'\n".as_bytes());
    write(root, "pkg/émoji_😀.py", "e = '😀'\n".as_bytes());
    write(root, "pkg/sub/deep/leaf.py", b"LEAF = 1\n");
    std::os::unix::fs::symlink("app.py", root.join("link.py")).unwrap();
    for skipped in [
        "tests/test_app.py",
        "pkg/tests/test_pkg.py",
        "venv/lib/site.py",
        "venv310/x.py",
        ".venv/x.py",
        "pkg/__pycache__/crlf.cpython-312.py",
        ".idea/x.py",
        "agent_data/state.py",
        "node_modules/x.py",
        "hevolve_backend.egg-info/x.py",
        "autogen-0.2.37/x.py",
        ".pycharm_plugin/x.py",
        "pkg/sub/node_modules/y.py",
    ] {
        write(root, skipped, b"SKIPPED = True\n");
    }
    for other in [
        "README.md",
        "pkg/crlf.pyc",
        "pkg/UPPER.PY",
        ".py",
        "setup.cfg",
        "pkg/data.json",
    ] {
        write(root, other, b"not hashed\n");
    }
}

fn init_repo(root: &Path) {
    git(root, &["init", "-q", "-b", "main"]);
    // Keep the CRLF bytes as they are, in the blob and in every checkout.
    git(root, &["config", "core.autocrlf", "false"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "python tree"]);
}

fn manifest_sign(env: &Env, repo: &Path, key: &Path, out: &Path, scheme: &str) -> Value {
    let o = env.fg(&[
        "manifest",
        "sign",
        "--version",
        "v1.0.0",
        "--repo",
        p(repo),
        "--hash-scheme",
        scheme,
        "--key-file",
        p(key),
        "--output",
        p(out),
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

#[test]
fn manifest_sign_with_the_hart_scheme_writes_harts_code_hash_and_file_manifest_hash() {
    if !python_available() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path();
    let repo = d.join("py");
    std::fs::create_dir_all(&repo).unwrap();
    python_tree(&repo);
    init_repo(&repo);
    // Not committed: must not count (the hash is over a clean checkout of the commit).
    write(&repo, "pkg/uncommitted.py", b"LOCAL = 1\n");
    let key = d.join("a.key");
    assert_eq!(code(&env.fg(&["keygen", "--out", p(&key)])), 0);

    // What HART computes on a clean clone of the commit (made by git, not fleetgate).
    let clone = d.join("clone");
    git(
        d,
        &[
            "clone",
            "-q",
            "-c",
            "core.autocrlf=false",
            p(&repo),
            p(&clone),
        ],
    );
    let hart = python(HART_HASH_PY, &[p(&clone)]);
    let files: Vec<&str> = hart["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files, EXPECTED_FILES, "the reimplementation's file set");
    assert_eq!(
        std::fs::read(clone.join("pkg/crlf.py")).unwrap(),
        b"x = 1\r\ny = 2\r\n",
        "the checkout keeps CRLF"
    );

    let m = manifest_sign(&env, &repo, &key, &d.join("hart.json"), "hart");
    assert_eq!(m["hash_scheme"], "hart");
    assert_eq!(m["code_hash"], hart["code_hash"], "HART's code hash");
    assert_eq!(
        m["file_manifest_hash"], hart["file_manifest_hash"],
        "HART's file manifest hash"
    );
    let out = env.fg(&[
        "manifest",
        "verify",
        "--pubkey",
        std::fs::read_to_string(d.join("a.key.pub")).unwrap().trim(),
        p(&d.join("hart.json")),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hash_scheme"], "hart");

    // The git scheme hashes every tracked file's blob: a different value, and the
    // manifest does not name its (default) scheme, as before.
    let g = manifest_sign(&env, &repo, &key, &d.join("git.json"), "git");
    assert!(g.get("hash_scheme").is_none(), "{g}");
    assert_ne!(g["code_hash"], hart["code_hash"]);

    // HART's scheme has no include/exclude.
    let o = env.fg(&[
        "manifest",
        "sign",
        "--version",
        "v1.0.0",
        "--repo",
        p(&repo),
        "--hash-scheme",
        "hart",
        "--exclude",
        "pkg/**",
        "--key-file",
        p(&key),
        "--output",
        p(&d.join("x.json")),
    ]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("--hash-scheme git only"), "{}", text(&o));
}

#[test]
fn the_pipeline_with_hash_scheme_hart_builds_and_signs_harts_hashes() {
    if !python_available() {
        return;
    }
    let env = Env::new();
    env.edit_config(
        "[stages.build]\n",
        "[stages.build]\nhash_scheme = \"hart\"\n",
    );
    env.commit_tag("v1.1.0", |app| {
        python_tree(app);
        git(app, &["config", "core.autocrlf", "false"]);
    });
    // A file the build step would leave behind must not enter the hash either.
    env.edit_config(
        "command = \"sh build.sh\"",
        "command = \"sh build.sh && echo 'X = 1' > generated.py\"",
    );
    let clone = env.dir.path().join("clone");
    git(
        env.dir.path(),
        &[
            "clone",
            "-q",
            "-c",
            "core.autocrlf=false",
            "--branch",
            "v1.1.0",
            p(&env.app),
            p(&clone),
        ],
    );
    let hart = python(HART_HASH_PY, &[p(&clone)]);

    let out = env.fg(&["start", "v1.1.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for _ in 0..5 {
        let out = env.fg(&["advance"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let s = env.status();
    assert_eq!(
        s["gate_results"]["signing"]["outcome"], "passed",
        "{}",
        s["gate_results"]
    );
    assert_eq!(
        s["code_hash"], hart["code_hash"],
        "BUILD recorded HART's hash"
    );
    assert_eq!(
        s["gate_results"]["building"]["figures"]["hash_scheme"],
        "hart"
    );
    let m: Value = serde_json::from_slice(
        &std::fs::read(env.state_dir().join("release_manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["hash_scheme"], "hart");
    assert_eq!(m["code_hash"], hart["code_hash"]);
    assert_eq!(m["file_manifest_hash"], hart["file_manifest_hash"]);
    // The pipeline's manifest names its provenance statement; HART's verifier, which signs
    // over every field but master_signature, still accepts it (and the field is covered).
    assert_eq!(
        m["provenance_sha256"].as_str().map(str::len),
        Some(64),
        "{m}"
    );
    if cryptography_available() {
        let mp = env.state_dir().join("release_manifest.json");
        let v = python(HART_VERIFY_PY, &[p(&mp)]);
        assert_eq!(v["hart_valid"], true, "{v}");
        assert!(
            v["fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "provenance_sha256"),
            "{v}"
        );
        let forged = env.dir.path().join("forged.json");
        let mut fm = m.clone();
        fm["provenance_sha256"] = "0".repeat(64).into();
        std::fs::write(&forged, serde_json::to_vec(&fm).unwrap()).unwrap();
        assert_eq!(python(HART_VERIFY_PY, &[p(&forged)])["hart_valid"], false);
    }
}

#[test]
fn a_co_signed_manifest_still_passes_a_hart_style_verifier() {
    if !python_available() || !cryptography_available() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path();
    for k in ["a", "b", "c"] {
        let o = env.fg(&["keygen", "--out", p(&d.join(format!("{k}.key")))]);
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    let pubhex = |k: &str| {
        std::fs::read_to_string(d.join(format!("{k}.key.pub")))
            .unwrap()
            .trim()
            .to_owned()
    };
    let trust = d.join("trust-2of3.json");
    let o = env.fg(&[
        "trust",
        "init",
        "--key",
        p(&d.join("a.key.pub")),
        "--key",
        p(&d.join("b.key.pub")),
        "--key",
        p(&d.join("c.key.pub")),
        "--threshold",
        "2",
        "--out",
        p(&trust),
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let m = d.join("release_manifest.json");
    let sigs = d.join("release_manifest.json.sigs");
    manifest_sign(&env, &env.app, &d.join("a.key"), &m, "hart");
    let verify = || env.fg(&["manifest", "verify", "--trust", p(&trust), p(&m), "--json"]);
    assert_eq!(code(&verify()), 15, "one of two signatures");

    let before = std::fs::read(&m).unwrap();
    let o = env.fg(&["trust", "sign", p(&m), "--key-file", p(&d.join("b.key"))]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains(".sigs"), "{}", text(&o));
    assert_eq!(
        std::fs::read(&m).unwrap(),
        before,
        "co-signing leaves the manifest's bytes alone"
    );
    assert!(sigs.exists());
    let o = verify();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["key_ids"].as_array().unwrap().len(), 2, "{v}");

    // HART's verifier: one signature over everything but master_signature.
    let key_ids: Value = serde_json::json!({
        v["key_ids"][1].as_str().unwrap(): pubhex("b"),
    });
    let hart = python(HART_VERIFY_PY, &[p(&m), p(&sigs), &key_ids.to_string()]);
    assert_eq!(hart["hart_valid"], true, "{hart}");
    assert!(
        !hart["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "signatures"),
        "no co-signature inside the manifest: {hart}"
    );
    assert_eq!(hart["signed_sha256_matches"], true, "{hart}");
    assert_eq!(hart["cosignatures_valid"], 1, "{hart}");

    // The verifier can say no: a changed field fails it.
    let tampered = d.join("tampered.json");
    std::fs::write(
        &tampered,
        String::from_utf8(before)
            .unwrap()
            .replace("v1.0.0", "v6.6.6"),
    )
    .unwrap();
    assert_eq!(python(HART_VERIFY_PY, &[p(&tampered)])["hart_valid"], false);

    // A third signer: still one signature in the manifest, three in total.
    let o = env.fg(&["trust", "sign", p(&m), "--key-file", p(&d.join("c.key"))]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(python(HART_VERIFY_PY, &[p(&m)])["hart_valid"], true);
    let v: Value = serde_json::from_slice(&verify().stdout).unwrap();
    assert_eq!(v["key_ids"].as_array().unwrap().len(), 3, "{v}");

    // Signing a new manifest at the same path drops the old co-signatures with it.
    manifest_sign(&env, &env.app, &d.join("a.key"), &m, "git");
    assert!(!sigs.exists(), "stale co-signatures removed");
    assert_eq!(code(&verify()), 15);
}
