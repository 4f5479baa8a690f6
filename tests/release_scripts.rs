//! The release scripts the GitHub workflows and the `sign-release` composite action run
//! (`scripts/release/*.sh`), run for real against a temp git repository with a tag and the
//! real `fleetgate` binary (handed to them as `FLEETGATE_BIN`): the signing job is tested
//! without GitHub.

mod common;
use common::{bin, code, git};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/release")
        .join(name)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A command with none of the caller's fleetgate, HART or CI variables, and the binary
/// under test as `FLEETGATE_BIN`.
fn clean(program: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETGATE_")
            || k.starts_with("HEVOLVE_")
            || k.starts_with("GITHUB_")
            || k.starts_with("RUNNER_")
            || k == "MASTER_PRIVATE_KEY_HEX"
        {
            c.env_remove(k);
        }
    }
    c.env("FLEETGATE_BIN", bin());
    c
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn both(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

fn fg(args: &[&str]) -> Output {
    let mut c = clean(Path::new(bin()));
    c.args(args);
    run(c)
}

/// `key=value` lines of a script's stdout.
fn outputs(out: &Output) -> std::collections::BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) is needed by this test");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn git_out(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The code hash and file manifest hash of `rev`, computed here from the README's
/// definition with git and sha256sum (not with fleetgate): `"{path}:{sha256}\n"` for every
/// tracked file sorted by path, hashed; and the hash of the compact, key-sorted JSON
/// object `{path: sha256}`.
fn expected_hashes(repo: &Path, rev: &str) -> (String, String) {
    let list = git_out(repo, &["ls-tree", "-r", "-z", "--name-only", rev]);
    let mut paths: Vec<String> = list
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    paths.sort();
    let mut lines = String::new();
    let mut files = serde_json::Map::new();
    for path in &paths {
        let blob = git_out(repo, &["cat-file", "blob", &format!("{rev}:{path}")]);
        let h = sha256_hex(&blob);
        lines.push_str(&format!("{path}:{h}\n"));
        files.insert(path.clone(), serde_json::Value::String(h));
    }
    let json = serde_json::to_string(&serde_json::Value::Object(files)).unwrap();
    (sha256_hex(lines.as_bytes()), sha256_hex(json.as_bytes()))
}

/// HART's code hash and file manifest hash of the tree at `dir`, computed here from the
/// README's description of the `hart` scheme (not with fleetgate): the `*.py` files on
/// disk, never entering a skipped directory; sorted `relpath:sha256` lines joined by "\n"
/// without a trailing one; `json.dumps({relpath: sha256}, sort_keys=True)` with Python's
/// default separators (ASCII names only here: no escaping needed).
fn expected_hart_hashes(dir: &Path) -> (String, String, Vec<String>) {
    const SKIPPED: [&str; 12] = [
        "__pycache__",
        "venv310",
        "venv",
        ".venv",
        ".git",
        ".idea",
        "agent_data",
        "tests",
        "node_modules",
        "hevolve_backend.egg-info",
        "autogen-0.2.37",
        ".pycharm_plugin",
    ];
    fn walk(top: &Path, here: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(here).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                if !SKIPPED.contains(&name.as_str()) {
                    walk(top, &path, out);
                }
            } else if name.len() > 3 && name.ends_with(".py") {
                let rel = path.strip_prefix(top).unwrap().to_str().unwrap().to_owned();
                out.push((rel, sha256_hex(&std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    let lines: Vec<String> = files.iter().map(|(p, h)| format!("{p}:{h}")).collect();
    let json: Vec<String> = files
        .iter()
        .map(|(p, h)| format!("\"{p}\": \"{h}\""))
        .collect();
    (
        sha256_hex(lines.join("\n").as_bytes()),
        sha256_hex(format!("{{{}}}", json.join(", ")).as_bytes()),
        files.into_iter().map(|(p, _)| p).collect(),
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    repo: PathBuf,
    key: String,
    trust: PathBuf,
    pubkey_file: PathBuf,
}

impl Fixture {
    /// A repository tagged v1.2.3 with a later commit on top (so HEAD is not the tag) and
    /// an untracked file; a release key from `fleetgate keygen` and its 1-of-1 trust file.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("README.md"), "the app\n").unwrap();
        std::fs::write(repo.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(repo.join("src/lib.rs"), "pub fn f() -> u8 { 1 }\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "v1.2.3"]);
        git(&repo, &["tag", "v1.2.3"]);
        std::fs::write(repo.join("src/lib.rs"), "pub fn f() -> u8 { 2 }\n").unwrap();
        git(&repo, &["commit", "-q", "-am", "after the tag"]);
        std::fs::write(repo.join("untracked.txt"), "not part of any release\n").unwrap();

        let key_file = dir.path().join("release.key");
        let out = fg(&["keygen", "--out", p(&key_file)]);
        assert_eq!(code(&out), 0, "{}", both(&out));
        let key = std::fs::read_to_string(&key_file)
            .unwrap()
            .trim()
            .to_owned();
        assert_eq!(key.len(), 64);
        let pubkey_file = dir.path().join("release.key.pub");
        let trust = dir.path().join("trust.json");
        let out = fg(&[
            "trust",
            "init",
            "--key",
            p(&pubkey_file),
            "--out",
            p(&trust),
        ]);
        assert_eq!(code(&out), 0, "{}", both(&out));
        Fixture {
            dir,
            repo,
            key,
            trust,
            pubkey_file,
        }
    }

    fn sign(&self, key: Option<&str>, args: &[&str]) -> Output {
        let mut c = clean(&script("sign-release.sh"));
        c.current_dir(self.dir.path()).args(args);
        if let Some(k) = key {
            c.env("FLEETGATE_SIGNING_KEY_HEX", k);
        }
        let out = run(c);
        self.assert_no_secret(&out);
        out
    }

    fn assert_no_secret(&self, out: &Output) {
        let all = both(out);
        for form in [self.key.to_lowercase(), self.key.to_uppercase()] {
            assert!(
                !all.contains(&form),
                "the signing key appears in the script's output:\n{all}"
            );
        }
    }

    fn verify(&self, manifest: &Path) -> Output {
        fg(&["manifest", "verify", "--trust", p(&self.trust), p(manifest)])
    }
}

fn validate(args: &[&str]) -> Output {
    let mut c = clean(&script("validate-tag.sh"));
    c.args(args);
    run(c)
}

#[test]
fn validate_tag_accepts_semver_with_v_and_refuses_malformed_and_duplicate_tags() {
    let out = validate(&["v1.2.3"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let o = outputs(&out);
    assert_eq!(o["tag"], "v1.2.3");
    assert_eq!(o["version"], "1.2.3");
    assert_eq!(o["prerelease"], "false");
    let out = validate(&["v2.0.0-rc.1+build.7"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert_eq!(outputs(&out)["prerelease"], "true");

    for bad in [
        "1.2",
        "v1.2",
        "v1.2.3.4",
        "1.2.3",
        "V1.2.3",
        "v01.2.3",
        "v1.2.3-",
        "v1.2.3-rc.01",
        "v1.2.3\nv9.9.9",
        "v1.2.3;id",
        "",
    ] {
        let out = validate(&[bad]);
        assert_eq!(code(&out), 1, "{bad:?} must be refused: {}", both(&out));
        assert!(stderr(&out).contains("error:"), "{bad:?}: {}", both(&out));
        assert!(stdout(&out).is_empty(), "{bad:?}: no outputs on refusal");
    }
    let long = format!("v1.2.3-{}", "a".repeat(130));
    assert_eq!(code(&validate(&[&long])), 1);
    // Longer than a pipe holds: refused with the message, not killed by SIGPIPE while the
    // tag is shortened for it.
    let huge = format!("v1.2.3-{}", "a".repeat(100_000));
    let out = validate(&[&huge]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("is longer than 128 bytes"),
        "{}",
        both(&out)
    );
    // No tag at all is a usage error.
    assert_eq!(code(&validate(&[])), 2);

    // Duplicates, from the git tags of a repository…
    let fx = Fixture::new();
    let out = validate(&["--git-repo", p(&fx.repo), "v1.2.3"]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("already exists"), "{}", both(&out));
    // …including the same version with other build metadata…
    let out = validate(&["--git-repo", p(&fx.repo), "v1.2.3+rebuild.2"]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("same version"), "{}", both(&out));
    // …or from a list of existing releases (a file, or stdin).
    let list = fx.dir.path().join("releases.txt");
    std::fs::write(&list, "# releases\nv1.0.0\n\n1.2.3\r\n").unwrap();
    let out = validate(&["--existing-tags", p(&list), "v1.2.3"]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    let mut c = clean(&script("validate-tag.sh"));
    c.args(["--existing-tags", "-", "v1.0.0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"v1.0.0\n").unwrap();
    assert_eq!(code(&child.wait_with_output().unwrap()), 1);

    // A new version passes both checks.
    let out = validate(&[
        "--git-repo",
        p(&fx.repo),
        "--existing-tags",
        p(&list),
        "v1.2.4",
    ]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(stderr(&out).contains("not a duplicate"), "{}", both(&out));
}

#[test]
fn sign_release_signs_the_tagged_commit_and_the_manifest_verifies() {
    let fx = Fixture::new();
    let manifest = fx.dir.path().join("dist/release_manifest.json");
    let out = fx.sign(
        Some(&fx.key),
        &[
            "--version",
            "v1.2.3",
            "--repo",
            p(&fx.repo),
            "--output",
            p(&manifest),
            "--trust",
            p(&fx.trust),
        ],
    );
    assert_eq!(code(&out), 0, "{}", both(&out));

    // What a node does: the manifest verifies against the trust file.
    let v = fx.verify(&manifest);
    assert_eq!(code(&v), 0, "{}", both(&v));

    // Bound to the tag's commit (not HEAD), with the hashes of the files git tracks there.
    let tag_sha = String::from_utf8(git_out(&fx.repo, &["rev-parse", "v1.2.3^{commit}"]))
        .unwrap()
        .trim()
        .to_owned();
    let head_sha = String::from_utf8(git_out(&fx.repo, &["rev-parse", "HEAD"]))
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(tag_sha, head_sha);
    let (code_hash, file_manifest_hash) = expected_hashes(&fx.repo, "v1.2.3");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["version"], "v1.2.3");
    assert_eq!(m["kind"], "release");
    assert_eq!(m["git_sha"], tag_sha.as_str());
    assert_eq!(m["code_hash"], code_hash.as_str());
    assert_eq!(m["file_manifest_hash"], file_manifest_hash.as_str());
    assert!(
        m["master_signature"]
            .as_str()
            .is_some_and(|s| s.len() == 128)
    );
    assert_ne!(code_hash, expected_hashes(&fx.repo, "HEAD").0);

    // The script prints what it signed, in $GITHUB_OUTPUT form, and the hashes for humans.
    let o = outputs(&out);
    assert_eq!(o["version"], "v1.2.3");
    assert_eq!(o["git_sha"], tag_sha);
    assert_eq!(o["code_hash"], code_hash);
    assert_eq!(o["file_manifest_hash"], file_manifest_hash);
    assert_eq!(o["hash_scheme"], "git", "the default scheme");
    assert!(m.get("hash_scheme").is_none(), "git is the field's absence");
    assert_eq!(o["manifest"], p(&manifest));
    assert_eq!(o["sequence"], m["sequence"].to_string());
    assert_eq!(o["key_id"], m["key_ids"][0].as_str().unwrap());
    assert!(stderr(&out).contains(&format!("code hash:          {code_hash}")));
    assert!(stderr(&out).contains(&format!("file manifest hash: {file_manifest_hash}")));

    // The trust can also be built from the public key alone (what the composite action
    // offers); a secret pasted with a trailing newline works.
    let manifest2 = fx.dir.path().join("m2.json");
    let out = fx.sign(
        Some(&format!("{}\n", fx.key)),
        &[
            "--version",
            "v1.2.3",
            "--repo",
            p(&fx.repo),
            "--output",
            p(&manifest2),
            "--pubkey",
            p(&fx.pubkey_file),
        ],
    );
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert_eq!(code(&fx.verify(&manifest2)), 0);
}

#[test]
fn sign_release_fails_closed_and_never_prints_the_key() {
    let fx = Fixture::new();
    let manifest = fx.dir.path().join("release_manifest.json");
    let args = |version: &'static str| -> Vec<String> {
        [
            "--version",
            version,
            "--repo",
            p(&fx.repo),
            "--output",
            p(&manifest),
            "--trust",
            p(&fx.trust),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let sign = |key: Option<&str>, a: &[String]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fx.sign(key, &a)
    };

    // No key: refused, naming the variable, before anything is signed.
    let out = sign(None, &args("v1.2.3"));
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("FLEETGATE_SIGNING_KEY_HEX"),
        "{}",
        both(&out)
    );
    assert!(stdout(&out).is_empty());
    // HART's variable is not a way around it.
    let mut c = clean(&script("sign-release.sh"));
    c.args(args("v1.2.3"))
        .env("MASTER_PRIVATE_KEY_HEX", &fx.key);
    let out = run(c);
    fx.assert_no_secret(&out);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("FLEETGATE_SIGNING_KEY_HEX"));
    // Empty (a secret the job cannot see) and malformed keys.
    for bad in ["", "  \n", "abc", &"g".repeat(64)] {
        let out = sign(Some(bad), &args("v1.2.3"));
        assert_eq!(code(&out), 1, "{bad:?}: {}", both(&out));
        assert!(stderr(&out).contains("FLEETGATE_SIGNING_KEY_HEX"));
    }
    assert!(!manifest.exists(), "nothing is written on a refusal");

    // Invalid tags and a tag the repository does not have.
    for bad in ["1.2", "v1.2.3.4", "v1.2.3;id"] {
        let out = sign(Some(&fx.key), &args(bad));
        assert_eq!(code(&out), 1, "{bad:?}: {}", both(&out));
        assert!(stderr(&out).contains("not a valid release tag"));
    }
    let out = sign(Some(&fx.key), &args("v9.9.9"));
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("refs/tags/v9.9.9"), "{}", both(&out));

    // No trust at all: never published unverified.
    let mut no_trust = args("v1.2.3");
    no_trust.truncate(6);
    let out = sign(Some(&fx.key), &no_trust);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("no trust"), "{}", both(&out));

    // A key the trust file does not list: fleetgate's unknown_key code, nothing written.
    let other = fx.dir.path().join("other.key");
    assert_eq!(code(&fg(&["keygen", "--out", p(&other)])), 0);
    let other_key = std::fs::read_to_string(&other).unwrap().trim().to_owned();
    let out = sign(Some(&other_key), &args("v1.2.3"));
    assert_eq!(code(&out), 14, "{}", both(&out));
    assert!(
        stderr(&out).contains("not in the trust file"),
        "{}",
        both(&out)
    );
    assert!(!both(&out).contains(&other_key));
    assert!(
        !manifest.exists(),
        "an unverified manifest is never written"
    );

    // A missing fleetgate binary is named.
    let mut c = clean(&script("sign-release.sh"));
    c.args(args("v1.2.3"))
        .env("FLEETGATE_SIGNING_KEY_HEX", &fx.key)
        .env("FLEETGATE_BIN", fx.dir.path().join("no-such-fleetgate"));
    let out = run(c);
    fx.assert_no_secret(&out);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("FLEETGATE_BIN"), "{}", both(&out));

    // Unknown arguments are usage errors.
    let mut a = args("v1.2.3");
    a.push("--key".to_owned());
    a.push(fx.key.clone());
    let out = sign(Some(&fx.key), &a);
    assert_eq!(code(&out), 2, "{}", both(&out));
}

#[test]
fn sign_release_with_hash_scheme_hart_signs_harts_code_hash_of_the_tag() {
    let fx = Fixture::new();
    // A Python release on top of the fixture: nested packages, CRLF bytes, an empty file,
    // directories HART never enters, files it does not hash; tagged v1.3.0, then changed.
    let repo = &fx.repo;
    git(repo, &["config", "core.autocrlf", "false"]);
    for (rel, bytes) in [
        ("app.py", &b"print('hello')\n"[..]),
        ("pkg/__init__.py", b""),
        ("pkg/crlf.py", b"x = 1\r\ny = 2\r\n"),
        ("pkg/sub/deep.py", b"DEEP = 1\n"),
        ("tests/test_app.py", b"SKIPPED = 1\n"),
        ("pkg/venv/site.py", b"SKIPPED = 1\n"),
        ("node_modules/x.py", b"SKIPPED = 1\n"),
        ("pkg/data.pyc", b"not hashed\n"),
    ] {
        let path = repo.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "v1.3.0"]);
    git(repo, &["tag", "v1.3.0"]);
    std::fs::write(repo.join("app.py"), "print('after the tag')\n").unwrap();
    git(repo, &["commit", "-q", "-am", "after v1.3.0"]);

    // What HART computes on a clean clone of the tag (made by git, not fleetgate).
    let clone = fx.dir.path().join("clone");
    git(
        fx.dir.path(),
        &[
            "clone",
            "-q",
            "-c",
            "core.autocrlf=false",
            "--branch",
            "v1.3.0",
            p(repo),
            p(&clone),
        ],
    );
    let (code_hash, file_manifest_hash, files) = expected_hart_hashes(&clone);
    assert_eq!(
        files,
        [
            "app.py",
            "pkg/__init__.py",
            "pkg/crlf.py",
            "pkg/sub/deep.py"
        ],
        "the files HART hashes"
    );

    let manifest = fx.dir.path().join("dist/release_manifest.json");
    let sign = |scheme: &str, out_file: &Path| {
        fx.sign(
            Some(&fx.key),
            &[
                "--version",
                "v1.3.0",
                "--repo",
                p(repo),
                "--output",
                p(out_file),
                "--trust",
                p(&fx.trust),
                "--hash-scheme",
                scheme,
            ],
        )
    };
    let out = sign("hart", &manifest);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert_eq!(code(&fx.verify(&manifest)), 0);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(
        m["hash_scheme"], "hart",
        "the manifest names its scheme: {m}"
    );
    assert_eq!(
        m["code_hash"],
        code_hash.as_str(),
        "HART's code hash of the tag"
    );
    assert_eq!(m["file_manifest_hash"], file_manifest_hash.as_str());
    let o = outputs(&out);
    assert_eq!(o["hash_scheme"], "hart");
    assert_eq!(o["code_hash"], code_hash);
    assert_eq!(o["file_manifest_hash"], file_manifest_hash);
    assert!(
        stderr(&out).contains("hash scheme:        hart"),
        "{}",
        both(&out)
    );

    // `git` (the default, said explicitly): the hashes of every tracked blob, no field.
    let git_manifest = fx.dir.path().join("git.json");
    let out = sign("git", &git_manifest);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&git_manifest).unwrap()).unwrap();
    assert!(g.get("hash_scheme").is_none(), "{g}");
    assert_eq!(g["code_hash"], expected_hashes(repo, "v1.3.0").0.as_str());
    assert_eq!(outputs(&out)["hash_scheme"], "git");

    // Anything else is a usage error, before anything is signed.
    let refused = fx.dir.path().join("refused.json");
    for bad in ["HART", "svn", ""] {
        let out = sign(bad, &refused);
        assert_eq!(code(&out), 2, "{bad:?}: {}", both(&out));
        assert!(
            stderr(&out).contains("--hash-scheme must be git or hart"),
            "{}",
            both(&out)
        );
        assert!(!refused.exists());
    }
}

/// A static HTTP/1.0 server on loopback for the download script: `files` by path, 404
/// otherwise. Serves until the test ends (the thread is detached with the listener).
fn serve_files(files: std::collections::BTreeMap<String, Vec<u8>>) -> String {
    use std::io::{BufRead as _, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let _ = match files.get(&path) {
                Some(body) => stream
                    .write_all(
                        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(body)),
                None => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            };
        }
    });
    format!("http://{addr}/releases/download")
}

/// A release archive as release.yml packages it (`fleetgate-TAG-TARGET/fleetgate` and
/// README.md), with a stand-in binary that prints its version: the script under test
/// downloads, verifies and unpacks; what the binary does is not its business.
fn release_tarball(dir: &Path, tag: &str, with_binary: bool) -> Vec<u8> {
    let name = format!("fleetgate-{tag}-x86_64-unknown-linux-gnu");
    let root = dir.join("pkg");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join(&name)).unwrap();
    std::fs::write(root.join(&name).join("README.md"), "fleetgate\n").unwrap();
    if with_binary {
        let bin = root.join(&name).join("fleetgate");
        std::fs::write(&bin, format!("#!/bin/sh\necho 'fleetgate {}'\n", &tag[1..])).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Documentation after the binary, listed at more than a pipe's 64 KiB: a check that
    // stops reading the listing at the binary (`tar -t | grep -q` under pipefail) kills
    // tar with SIGPIPE and calls a good archive broken.
    let docs = root.join(&name).join("doc");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..2_000 {
        std::fs::write(docs.join(format!("{i:04}-{}.md", "page".repeat(12))), "").unwrap();
    }
    let tgz = dir.join("out.tar.gz");
    let mut members = Vec::new();
    if with_binary {
        members.push(format!("{name}/fleetgate"));
    }
    members.extend([format!("{name}/README.md"), format!("{name}/doc")]);
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-czf")
        .arg(&tgz)
        .args(&members)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(&tgz).unwrap()
}

fn install(base_url: &str, dest: &Path, extra: &[&str]) -> Output {
    let mut c = clean(&script("install-fleetgate.sh"));
    c.args(["--base-url", base_url, "--dest", p(dest)])
        .args(extra);
    run(c)
}

#[test]
fn install_fleetgate_downloads_verifies_and_refuses_a_mismatch() {
    // The script downloads with curl (.ci/run installs it; never skipped in CI).
    if !fleetgate_testkit::require(
        "curl",
        "curl",
        &["--version"],
        "curl is not installed; install-fleetgate.sh NOT tested",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = "v2.3.4";
    let name = format!("fleetgate-{tag}-x86_64-unknown-linux-gnu.tar.gz");
    let good = release_tarball(dir.path(), tag, true);
    let digest = sha256_hex(&good);
    let mut files = std::collections::BTreeMap::new();
    files.insert(format!("/releases/download/{tag}/{name}"), good.clone());
    files.insert(
        format!("/releases/download/{tag}/{name}.sha256"),
        format!("{digest}  {name}\n").into_bytes(),
    );
    // v6.6.6: its .sha256 names another archive's digest (a corrupt or swapped asset).
    let other = release_tarball(dir.path(), "v6.6.6", true);
    let other_name = "fleetgate-v6.6.6-x86_64-unknown-linux-gnu.tar.gz";
    files.insert(format!("/releases/download/v6.6.6/{other_name}"), other);
    files.insert(
        format!("/releases/download/v6.6.6/{other_name}.sha256"),
        format!("{digest}  {other_name}\n").into_bytes(),
    );
    // v7.0.0: an archive without the binary.
    let empty = release_tarball(dir.path(), "v7.0.0", false);
    let empty_digest = sha256_hex(&empty);
    files.insert(
        "/releases/download/v7.0.0/fleetgate-v7.0.0-x86_64-unknown-linux-gnu.tar.gz".into(),
        empty,
    );
    let base = serve_files(files);

    // Pinned digest: installed, runs, `path=` printed for $GITHUB_OUTPUT.
    let dest = dir.path().join("bin");
    let out = install(
        &base,
        &dest,
        &["--version", tag, "--sha256", &digest.to_uppercase()],
    );
    assert_eq!(code(&out), 0, "{}", both(&out));
    let installed = dest.join("fleetgate");
    assert_eq!(outputs(&out)["path"], p(&installed));
    let v = run(Command::new(&installed));
    assert_eq!(stdout(&v).trim(), "fleetgate 2.3.4");
    assert!(
        stderr(&out).contains("matches the pinned digest"),
        "{}",
        both(&out)
    );
    // Only the binary was taken from the archive.
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1);

    // A pinned digest that does not match: refused, nothing installed.
    let dest2 = dir.path().join("bin2");
    let wrong = "ab".repeat(32);
    let out = install(&base, &dest2, &["--version", tag, "--sha256", &wrong]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!(
            "checksum mismatch for {name}: expected (--sha256) {wrong}, downloaded {digest}"
        )),
        "{}",
        both(&out)
    );
    assert!(!dest2.join("fleetgate").exists());

    // No pin: the release's own .sha256 is checked, with a warning to pin.
    let dest3 = dir.path().join("bin3");
    let out = install(&base, &dest3, &["--version", tag]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!("pin the digest with --sha256 {digest}")),
        "{}",
        both(&out)
    );
    // …and a .sha256 that does not match the archive refuses it.
    let out = install(&base, &dir.path().join("bin4"), &["--version", "v6.6.6"]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(stderr(&out).contains("checksum mismatch"), "{}", both(&out));
    assert!(!dir.path().join("bin4/fleetgate").exists());

    // An archive without the binary, a release that is not there, bad arguments.
    let out = install(
        &base,
        &dir.path().join("bin5"),
        &["--version", "v7.0.0", "--sha256", &empty_digest],
    );
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("has no fleetgate-v7.0.0-x86_64-unknown-linux-gnu/fleetgate"),
        "{}",
        both(&out)
    );
    let out = install(&base, &dir.path().join("bin6"), &["--version", "v9.9.9"]);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("downloading") && stderr(&out).contains("failed"),
        "{}",
        both(&out)
    );
    for (args, says) in [
        (vec!["--sha256", digest.as_str()], "--version is required"),
        (vec!["--version", "2.3.4"], "is not a release tag"),
        (
            vec!["--version", tag, "--sha256", "xyz"],
            "--sha256 must be 64 hex characters",
        ),
    ] {
        let out = install(&base, &dir.path().join("bin7"), &args);
        assert_eq!(code(&out), 1, "{args:?}: {}", both(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", both(&out));
    }
}

#[test]
fn sign_request_signs_an_external_request_and_verifies_it_against_the_trust_file() {
    let fx = Fixture::new();
    // A signing request as SIGN writes it: a manifest without the signer's fields.
    let signed = fx.dir.path().join("m.json");
    let out = fx.sign(
        Some(&fx.key),
        &[
            "--version",
            "v1.2.3",
            "--repo",
            p(&fx.repo),
            "--output",
            p(&signed),
            "--trust",
            p(&fx.trust),
        ],
    );
    assert_eq!(code(&out), 0, "{}", both(&out));
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    for f in [
        "master_public_key",
        "key_ids",
        "master_signature",
        "signatures",
    ] {
        m.as_object_mut().unwrap().remove(f);
    }
    let request = fx.dir.path().join("signing-request.json");
    std::fs::write(&request, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let sign_request = |key: Option<&str>, trust: &Path, output: &Path| {
        let mut c = clean(&script("sign-request.sh"));
        c.args([
            "--request",
            p(&request),
            "--trust",
            p(trust),
            "--output",
            p(output),
        ]);
        if let Some(k) = key {
            c.env("FLEETGATE_SIGNING_KEY_HEX", k);
        }
        run(c)
    };
    let output = fx.dir.path().join("signed_manifest.json");
    let out = sign_request(Some(&fx.key), &fx.trust, &output);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert_eq!(outputs(&out)["manifest"], p(&output));
    assert!(!both(&out).contains(&fx.key), "the key is never printed");
    assert_eq!(code(&fx.verify(&output)), 0);
    let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    for (k, v) in m.as_object().unwrap() {
        assert_eq!(&back[k], v, "field {k} comes back as requested");
    }

    // A key the trust file does not list: signed, but refused before it is handed on.
    let other_key = fx.dir.path().join("other.key");
    assert_eq!(code(&fg(&["keygen", "--out", p(&other_key)])), 0);
    let other = std::fs::read_to_string(&other_key)
        .unwrap()
        .trim()
        .to_owned();
    let refused = fx.dir.path().join("refused.json");
    let out = sign_request(Some(&other), &fx.trust, &refused);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("does not verify against"),
        "{}",
        both(&out)
    );
    assert!(!refused.exists() && !fx.dir.path().join("refused.json.partial").exists());
    assert!(!both(&out).contains(&other));

    // No key; a signed manifest given as the request.
    let out = sign_request(None, &fx.trust, &refused);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("FLEETGATE_SIGNING_KEY_HEX is empty"),
        "{}",
        both(&out)
    );
    let mut c = clean(&script("sign-request.sh"));
    c.args([
        "--request",
        p(&signed),
        "--trust",
        p(&fx.trust),
        "--output",
        p(&refused),
    ])
    .env("FLEETGATE_SIGNING_KEY_HEX", &fx.key);
    let out = run(c);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stderr(&out).contains("sign the request, not a signed manifest"),
        "{}",
        both(&out)
    );
    assert!(!refused.exists());
}
