//! The `git` scheme reads a tracked file from the working tree only when its bytes are
//! the commit's blob: whatever the working tree holds (edits, deletions, CRLF
//! conversion, a directory where a file was, a symlink), the code hash equals the one
//! computed from the object database alone (a bare clone), and it is hashed in parallel
//! (more files than one thread takes).

use fleetgate_codehash::code_hash_at;
use fleetgate_core::config::CodeHashConfig;
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

#[test]
fn the_working_tree_never_changes_the_git_scheme_hash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = git2::Repository::init(&root).unwrap();
    // Enough files for several threads, of varied sizes (empty, small, 200 KB).
    for i in 0..300 {
        let body: Vec<u8> = (0..(i * 677) % 200_000)
            .map(|j| (j * 31 + i) as u8)
            .collect();
        write(&root, &format!("src/m{}/f{i}.rs", i % 7), &body);
    }
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
