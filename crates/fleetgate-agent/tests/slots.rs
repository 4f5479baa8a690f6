//! A slot is checked against the signed code hash from its files on disk: a fetched
//! checkout verifies, and any edit, deletion or retargeted symlink of a hashed file is
//! refused with the path named (the one-pass check in `verify_tree` must never accept
//! what the file-by-file comparison would refuse).

use fleetgate_agent::slots::{SlotError, Slots};
use fleetgate_codehash::CodeHashConfig;
use fleetgate_trust::HashScheme;
use std::path::Path;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn a_slot_verifies_only_while_its_files_on_disk_are_the_signed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let repo = git2::Repository::init(&src).unwrap();
    for i in 0..200 {
        write(
            &src,
            &format!("app/m{}/f{i}.py", i % 5),
            format!("print({i})\n").repeat(i).as_bytes(),
        );
    }
    std::os::unix::fs::symlink("app/m0/f0.py", src.join("entry")).unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let commit = repo
        .commit(Some("HEAD"), &sig, &sig, "c1", &tree, &[])
        .unwrap()
        .to_string();
    let cfg = CodeHashConfig::default();
    let expected = fleetgate_codehash::code_hash_at(&src, &commit, &cfg)
        .unwrap()
        .code_hash;

    let slots = Slots::new(&dir.path().join("state"));
    let slot = slots
        .fetch(
            "v1",
            src.to_str().unwrap(),
            &commit,
            &expected,
            HashScheme::Git,
            &cfg,
        )
        .unwrap();
    slots
        .verify("v1", &commit, &expected, HashScheme::Git, &cfg)
        .unwrap();

    // A wrong expected hash: the commit itself hashes differently.
    let e = slots
        .verify("v1", &commit, &"0".repeat(64), HashScheme::Git, &cfg)
        .unwrap_err();
    assert!(matches!(e, SlotError::CodeHashMismatch { .. }), "{e}");

    let original = std::fs::read(slot.join("app/m3/f8.py")).unwrap();
    let refused = |what: &str, path: &str| {
        let e = slots
            .verify("v1", &commit, &expected, HashScheme::Git, &cfg)
            .unwrap_err();
        assert!(
            matches!(&e, SlotError::TreeMismatch { path: p, .. } if p == path),
            "{what}: {e}"
        );
    };
    write(&slot, "app/m3/f8.py", b"import os; os.system('evil')\n");
    refused("an edited file", "app/m3/f8.py");
    write(&slot, "app/m3/f8.py", &original);
    slots
        .verify("v1", &commit, &expected, HashScheme::Git, &cfg)
        .unwrap();

    std::fs::remove_file(slot.join("app/m1/f1.py")).unwrap();
    refused("a deleted file", "app/m1/f1.py");
    write(&slot, "app/m1/f1.py", b"print(1)\n");
    slots
        .verify("v1", &commit, &expected, HashScheme::Git, &cfg)
        .unwrap();

    std::fs::remove_file(slot.join("entry")).unwrap();
    std::os::unix::fs::symlink("app/m1/f1.py", slot.join("entry")).unwrap();
    refused("a retargeted symlink", "entry");

    // Untracked files (what an install step leaves) do not matter.
    std::fs::remove_file(slot.join("entry")).unwrap();
    std::os::unix::fs::symlink("app/m0/f0.py", slot.join("entry")).unwrap();
    write(&slot, "venv/lib/site.py", b"installed");
    slots
        .verify("v1", &commit, &expected, HashScheme::Git, &cfg)
        .unwrap();
}
