//! The code hash's speed on a page-cached tree, side by side with the previous
//! implementation (one thread, every blob inflated), `sha256sum` over the same files and
//! HART's `compute_code_hash` in Python — all in one run, on one tree.
//!
//! `cargo run --release -p fleetgate-codehash --example hash_speed -- [FILES] [MB] [--repeat K]`
//! (defaults: 10,000 files, 200 MB, best of 5; `--keep` leaves the tree). Builds the tree in a temp dir (a git
//! repository with one commit, and a bare clone of it), warms the page cache, then times
//! each method K times and prints the best. 1,000 directories of 10 files each. Files are `*.py` so HART's formula hashes
//! all of them; the contents are incompressible.

use fleetgate_codehash::CodeHashConfig;
use fleetgate_codehash::{code_hash_at, worktree_code_hash};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let mut files = 10_000usize;
    let mut mb = 200usize;
    let mut repeat = 5u32;
    let mut keep = false;
    let mut pos = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--keep" {
            keep = true;
        } else if a == "--repeat" {
            repeat = args.next().and_then(|s| s.parse().ok()).unwrap_or(repeat);
        } else if let Ok(v) = a.parse::<usize>() {
            if pos == 0 {
                files = v;
            } else {
                mb = v;
            }
            pos += 1;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // `--keep` leaves the tree for other tools (removed with the temp dir otherwise).
    let (base, _guard) = if keep {
        (dir.keep(), None)
    } else {
        (dir.path().to_owned(), Some(dir))
    };
    let root = base.join("repo");
    if keep {
        println!("tree kept at {}", root.display());
    }
    let bytes = build_tree(&root, files, mb * 1_000_000);
    let bare = base.join("bare.git");
    git(
        &base,
        &[
            "clone",
            "-q",
            "--bare",
            root.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    // Write the new tree back to disk before timing (the kernel's flushing is not hashing):
    // a page-cached, clean tree is what is measured.
    let ok = Command::new("sync").status().expect("sync");
    assert!(ok.success(), "sync");
    let rev = "HEAD";
    let cfg = CodeHashConfig::default();
    // Warm the page cache (files and pack).
    let _ = code_hash_at(&root, rev, &cfg).expect("hash");
    let _ = code_hash_at(&bare, rev, &cfg).expect("hash");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!(
        "{files} files, {:.0} MB, {cpus} CPU(s); best of {repeat}",
        bytes as f64 / 1e6
    );
    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    let mut rows: Vec<(&str, Duration)> = Vec::new();

    let reference = sequential_blobs(&bare, rev);
    let worktree = code_hash_at(&root, rev, &cfg).expect("hash");
    let blobs = code_hash_at(&bare, rev, &cfg).expect("hash");
    assert_eq!(
        worktree.code_hash, reference,
        "worktree path = sequential blob path"
    );
    assert_eq!(
        blobs.code_hash, reference,
        "parallel blob path = sequential blob path"
    );
    assert_eq!(
        worktree_code_hash(&root, rev, &cfg)
            .expect("hash")
            .code_hash,
        reference,
        "checkout verification path = sequential blob path"
    );
    // The same bytes in memory, for the SHA-256 ceiling (no files, no git).
    let contents: Vec<Vec<u8>> = worktree
        .files
        .keys()
        .map(|p| std::fs::read(root.join(p)).expect("read"))
        .collect();

    rows.push((
        "fleetgate, verify a checkout against its code hash (worktree_code_hash)",
        best(repeat, || {
            worktree_code_hash(&root, rev, &cfg).expect("hash");
        }),
    ));
    rows.push((
        "fleetgate git scheme, clean checkout on disk (parallel, blob id checked)",
        best(repeat, || {
            code_hash_at(&root, rev, &cfg).expect("hash");
        }),
    ));
    rows.push((
        "fleetgate git scheme, bare repository (parallel, blobs inflated)",
        best(repeat, || {
            code_hash_at(&bare, rev, &cfg).expect("hash");
        }),
    ));
    rows.push((
        "previous implementation (one thread, blobs inflated)",
        best(repeat, || {
            sequential_blobs(&bare, rev);
        }),
    ));
    rows.push((
        "git ls-files -z | xargs -0 sha256sum",
        best(repeat, || {
            let ok = Command::new("sh")
                .arg("-c")
                .arg("git ls-files -z | xargs -0 sha256sum > /dev/null")
                .current_dir(&root)
                .status()
                .expect("sh");
            assert!(ok.success());
        }),
    ));
    rows.push((
        "HART compute_code_hash in Python (hashlib)",
        best(repeat, || {
            let ok = Command::new("python3")
                .arg("-c")
                .arg(HART_PY)
                .arg(&root)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("python3");
            assert!(ok.success());
        }),
    ));
    rows.push((
        "ceiling: SHA-256 of the same bytes in memory, one thread",
        best(repeat, || {
            for c in &contents {
                std::hint::black_box(Sha256::digest(c));
            }
        }),
    ));
    rows.push((
        "ceiling: SHA-256 of the same bytes in memory, one thread per CPU",
        best(repeat, || {
            std::thread::scope(|s| {
                for t in 0..cpus {
                    let contents = &contents;
                    s.spawn(move || {
                        for c in contents.iter().skip(t).step_by(cpus) {
                            std::hint::black_box(Sha256::digest(c));
                        }
                    });
                }
            });
        }),
    ));
    // Producing a hash to sign checks each file's git blob id too: a SHA-1 pass over the
    // same bytes. Both digests over memory, no files: the produce path's ceiling.
    rows.push((
        "ceiling: SHA-1 (blob id) + SHA-256 of the same bytes in memory, one thread per CPU",
        best(repeat, || {
            std::thread::scope(|s| {
                for t in 0..cpus {
                    let contents = &contents;
                    s.spawn(move || {
                        for c in contents.iter().skip(t).step_by(cpus) {
                            let mut id = sha1::Sha1::new();
                            id.update(format!("blob {}\0", c.len()).as_bytes());
                            id.update(c);
                            std::hint::black_box(id.finalize());
                            std::hint::black_box(Sha256::digest(c));
                        }
                    });
                }
            });
        }),
    ));
    let by_name = |prefix: &str| {
        rows.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, d)| *d)
            .expect("row")
    };
    let hart = by_name("HART");
    let sum = by_name("git ls-files");
    println!(
        "{:<84} {:>9} {:>8} {:>8} {:>8}",
        "method", "ms", "GB/s", "×HART", "×sha256sum"
    );
    for (name, d) in &rows {
        println!(
            "{name:<84} {:>9.1} {:>8.2} {:>8.1} {:>8.1}",
            d.as_secs_f64() * 1000.0,
            gbs(*d),
            hart.as_secs_f64() / d.as_secs_f64(),
            sum.as_secs_f64() / d.as_secs_f64()
        );
    }
}

/// HART's formula as its Python code computes it (`os.walk`, sorted, `*.py`, skipped
/// directories, `relpath:sha256` lines joined with "\n").
const HART_PY: &str = r#"
import hashlib, os, sys
root = sys.argv[1]
skip = {'__pycache__', 'venv310', 'venv', '.venv', '.git', '.idea', 'agent_data', 'tests',
        'node_modules', 'hevolve_backend.egg-info', 'autogen-0.2.37', '.pycharm_plugin'}
lines = []
for d, dirs, names in os.walk(root):
    dirs[:] = sorted(x for x in dirs if x not in skip)
    for n in sorted(names):
        if n.endswith('.py'):
            p = os.path.join(d, n)
            with open(p, 'rb') as f:
                h = hashlib.sha256(f.read()).hexdigest()
            lines.append(os.path.relpath(p, root).replace(os.sep, '/') + ':' + h)
lines.sort()
print(hashlib.sha256('\n'.join(lines).encode()).hexdigest())
"#;

fn best(k: u32, mut f: impl FnMut()) -> Duration {
    (0..k.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// The code hash as the previous implementation computed it: one thread, every blob
/// read (inflated) from the object database.
fn sequential_blobs(repo: &Path, rev: &str) -> String {
    let r = git2::Repository::open(repo).expect("open");
    let tree = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .and_then(|c| c.tree())
        .expect("tree");
    let mut files = std::collections::BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, e| {
        if e.kind() == Some(git2::ObjectType::Blob) {
            let blob = r.find_blob(e.id()).expect("blob");
            files.insert(
                format!("{root}{}", e.name().unwrap_or_default()),
                hex::encode(Sha256::digest(blob.content())),
            );
        }
        git2::TreeWalkResult::Ok
    })
    .expect("walk");
    fleetgate_codehash::hash_files(String::new(), files).code_hash
}

fn build_tree(root: &Path, files: usize, total: usize) -> usize {
    std::fs::create_dir_all(root).expect("mkdir");
    git(root, &["init", "-q"]);
    // No automatic `git gc` after the commit: with more than 6,700 loose objects it packs
    // them in the background, on one of the two CPUs, while the methods are timed (the
    // 200-MB figures before 2026-12-06 were taken beside it: every method about 2× slower).
    git(root, &["config", "gc.auto", "0"]);
    let per = total / files.max(1);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut written = 0;
    for i in 0..files {
        let d = root.join(format!("pkg{:02}/mod{:02}", i % 50, (i / 50) % 20));
        std::fs::create_dir_all(&d).expect("mkdir");
        let body: Vec<u8> = (0..per)
            .map(|_| {
                // xorshift: incompressible bytes, no dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        written += body.len();
        std::fs::write(d.join(format!("f{i}.py")), body).expect("write");
    }
    git(root, &["add", "-A"]);
    git(
        root,
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@example.com",
            "commit",
            "-q",
            "-m",
            "tree",
        ],
    );
    written
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git");
    assert!(ok.success(), "git {args:?}");
}
