//! The `git` scheme reads a tracked file from the working tree only when its bytes are
//! the commit's blob: whatever the working tree holds (edits, deletions, CRLF
//! conversion, a directory where a file was, a symlink), the code hash equals the one
//! computed from the object database alone (a bare clone), and it is hashed in parallel
//! (more files than one thread takes). `worktree_code_hash` — the same formula over the
//! bytes on disk, to verify a checkout — equals it on a clean checkout and differs (or
//! fails, naming the file) as soon as a hashed file on disk is not the commit's.

use fleetgate_codehash::CodeHashConfig;
use fleetgate_codehash::{code_hash_at, worktree_code_hash};
use std::path::Path;

fn commit_all(repo: &git2::Repository, message: &str) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Enough files for several threads, of varied sizes (empty, small, 200 KB).
fn many_files(root: &Path) {
    for i in 0..300 {
        let body: Vec<u8> = (0..(i * 677) % 200_000)
            .map(|j| (j * 31 + i) as u8)
            .collect();
        write(root, &format!("src/m{}/f{i}.rs", i % 7), &body);
    }
}

#[test]
fn the_working_tree_never_changes_the_git_scheme_hash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = git2::Repository::init(&root).unwrap();
    many_files(&root);
    write(&root, "empty.txt", b"");
    write(&root, "text.txt", b"one\ntwo\nthree\n");
    write(&root, "edited.txt", b"committed\n");
    write(&root, "deleted.txt", b"gone from disk\n");
    write(&root, "became_dir.txt", b"a file in the commit\n");
    std::os::unix::fs::symlink("text.txt", root.join("link")).unwrap();
    let oid = commit_all(&repo, "c1");
    let rev = oid.to_string();
    let cfg = CodeHashConfig::default();

    // The reference: a bare clone has no working tree, every blob is inflated.
    let bare = dir.path().join("bare.git");
    git2::build::RepoBuilder::new()
        .bare(true)
        .clone(root.to_str().unwrap(), &bare)
        .unwrap();
    let reference = code_hash_at(&bare, &rev, &cfg).unwrap();
    assert_eq!(reference.files.len(), 306);

    // A clean working tree gives the same result.
    assert_eq!(code_hash_at(&root, &rev, &cfg).unwrap(), reference);

    // Edits, a deletion, a directory in a file's place, CRLF bytes, a retargeted
    // symlink and a new untracked file: still the commit's hash.
    write(&root, "edited.txt", b"edited locally, not committed\n");
    std::fs::remove_file(root.join("deleted.txt")).unwrap();
    std::fs::remove_file(root.join("became_dir.txt")).unwrap();
    write(&root, "became_dir.txt/inner", b"x");
    write(&root, "text.txt", b"one\r\ntwo\r\nthree\r\n");
    std::fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink("edited.txt", root.join("link")).unwrap();
    write(&root, "untracked.txt", b"not in the commit");
    write(&root, "src/m0/f0.rs", b"same length? no: different bytes");
    assert_eq!(code_hash_at(&root, &rev, &cfg).unwrap(), reference);

    // The working tree at another commit: files that differ come from the blobs.
    write(&root, "src/m1/f1.rs", b"changed in c2");
    commit_all(&repo, "c2");
    assert_eq!(code_hash_at(&root, &rev, &cfg).unwrap(), reference);
    assert_ne!(
        code_hash_at(&root, "HEAD", &cfg).unwrap().code_hash,
        reference.code_hash
    );
}

#[test]
fn the_working_tree_hash_equals_the_git_scheme_on_a_clean_checkout_and_sees_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = git2::Repository::init(&root).unwrap();
    many_files(&root);
    write(&root, "empty.txt", b"");
    write(&root, "text.txt", b"one\ntwo\n");
    write(&root, "docs/skip.md", b"excluded by the globs");
    std::os::unix::fs::symlink("text.txt", root.join("link")).unwrap();
    let rev = commit_all(&repo, "c1").to_string();
    let all = CodeHashConfig::default();
    let globbed = CodeHashConfig {
        exclude: vec!["docs/**".into()],
        ..CodeHashConfig::default()
    };
    for cfg in [&all, &globbed] {
        let reference = code_hash_at(&root, &rev, cfg).unwrap();
        assert_eq!(worktree_code_hash(&root, &rev, cfg).unwrap(), reference);
    }
    assert_eq!(
        worktree_code_hash(&root, &rev, &globbed)
            .unwrap()
            .files
            .len(),
        303,
        "the globs choose the files as in the git scheme"
    );
    let reference = code_hash_at(&root, &rev, &all).unwrap();

    // An untracked file does not count; a file outside the globs does not either.
    write(&root, "untracked.txt", b"not in the commit");
    write(&root, "docs/skip.md", b"edited, but excluded");
    assert_eq!(
        worktree_code_hash(&root, &rev, &globbed).unwrap(),
        code_hash_at(&root, &rev, &globbed).unwrap()
    );

    // Every kind of change to a hashed file changes the result (the git scheme keeps
    // the commit's), and the changed file's own digest is the one that differs.
    let changes: [(&str, &dyn Fn()); 4] = [
        ("src/m3/f10.rs", &|| {
            write(&root, "src/m3/f10.rs", b"edited")
        }),
        ("text.txt", &|| write(&root, "text.txt", b"one\r\ntwo\r\n")),
        ("empty.txt", &|| write(&root, "empty.txt", b"\0")),
        ("link", &|| {
            std::fs::remove_file(root.join("link")).unwrap();
            std::os::unix::fs::symlink("empty.txt", root.join("link")).unwrap();
        }),
    ];
    for (path, change) in changes {
        change();
        let seen = worktree_code_hash(&root, &rev, &all).unwrap();
        assert_ne!(seen.code_hash, reference.code_hash, "{path}");
        let differing: Vec<&String> = seen
            .files
            .keys()
            .filter(|k| seen.files[*k] != reference.files[*k])
            .collect();
        assert!(
            differing.contains(&&path.to_owned()),
            "{path}: {differing:?}"
        );
        assert_eq!(code_hash_at(&root, &rev, &all).unwrap(), reference);
    }

    // A tracked file missing, or a directory in its place: an error naming it.
    std::fs::remove_file(root.join("src/m0/f0.rs")).unwrap();
    let e = worktree_code_hash(&root, &rev, &all)
        .unwrap_err()
        .to_string();
    assert!(e.contains("src/m0/f0.rs"), "{e}");
    write(&root, "src/m0/f0.rs/inner", b"x");
    let e = worktree_code_hash(&root, &rev, &all)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("src/m0/f0.rs") && e.contains("not a regular file"),
        "{e}"
    );

    // A bare repository has no working tree to verify.
    let bare = dir.path().join("bare.git");
    git2::build::RepoBuilder::new()
        .bare(true)
        .clone(root.to_str().unwrap(), &bare)
        .unwrap();
    let e = worktree_code_hash(&bare, &rev, &all)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no working tree"), "{e}");
}
