//! Backups before apply, with real agent processes and a real app: a release whose new
//! version migrates the data and then fails its health check is rolled back and the data
//! directory is back to its pre-apply bytes before the old version starts; the same when
//! the agent is SIGKILLed while the new version runs, and when a rollback order revokes
//! the release the node runs; the hooks run in order.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// Every path under `root`: file bytes and mode, link target, directory mode.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                format!("link {}", std::fs::read_link(p).unwrap().display()),
            );
        } else if m.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            for e in std::fs::read_dir(p).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        } else {
            let bytes = std::fs::read(p).unwrap();
            out.insert(rel, format!("file {mode:o} {}", hex::encode(bytes)));
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A fixture backing up `data/` (beside node.toml), with both hooks logging to
/// `hooks.log`, and `DATA_DIR` in the app's environment.
fn fixture() -> Fixture {
    let f = Fixture::new(Opts {
        grace_secs: 3,
        extra: concat!(
            "pre_apply = \"echo pre_apply $FLEETGATE_SLOT >> \\\"$DATA_DIR/../hooks.log\\\"\"\n",
            "post_rollback = \"echo post_rollback $FLEETGATE_SLOT >> \\\"$DATA_DIR/../hooks.log\\\"\"\n",
            "[backup]\npaths = [\"data\"]\nkeep = 2\n",
        )
        .to_owned(),
        ..Opts::default()
    });
    let data = f.dir.path().join("data");
    std::fs::create_dir_all(data.join("sub/deep")).unwrap();
    std::fs::write(data.join("schema"), "v0\n").unwrap();
    std::fs::write(data.join("sub/deep/blob.bin"), [0u8, 1, 2, 254, 255]).unwrap();
    std::fs::set_permissions(
        data.join("sub/deep/blob.bin"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("schema", data.join("current-schema")).unwrap();
    // DATA_DIR for the app and the hooks.
    let cfg = std::fs::read_to_string(&f.config_path).unwrap();
    let cfg = cfg.replace(
        "[env]\n",
        &format!("[env]\nDATA_DIR = {:?}\n", data.display().to_string()),
    );
    std::fs::write(&f.config_path, cfg).unwrap();
    f
}

fn read(f: &Fixture, name: &str) -> String {
    std::fs::read_to_string(f.dir.path().join(name)).unwrap_or_default()
}

fn backups(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(f.state().join("backups"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_bad_release_that_migrated_the_data_is_rolled_back_with_the_data_restored() {
    let f = fixture();
    let data = f.dir.path().join("data");
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit_with("v2.0.0", "unhealthy", &[("MIGRATE", "yes\n")]);
    let slot1 = format!("1-{}", &v1.sha[..12]);
    let slot2 = format!("2-{}", &v2.sha[..12]);
    let mut agent = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}\n{}", f.agent_log(1));
    assert_eq!(r["outcome"], "applied", "{r}");
    // The data as v1 left it, plus what "v1" wrote while it ran.
    std::fs::write(data.join("sub/deep/blob.bin"), b"written while v1 ran").unwrap();
    let before = tree(&data);

    let (code, r) = post_apply(&f, &f.manifest(2, &v2));
    let log = f.agent_log(1);
    assert_eq!(code, 422, "{r}\n{log}");
    assert_eq!(r["outcome"], "rolled_back", "{r}\n{log}");
    assert_eq!(r["failed_phase"], "probe", "{r}");
    assert_eq!(
        read(&f, "migrations.log"),
        "migrated v2.0.0\n",
        "the bad version ran and migrated the data"
    );
    assert_eq!(
        tree(&data),
        before,
        "the data is back to its pre-apply bytes"
    );
    assert!(!data.join("v2.0.0.log").exists());
    assert_eq!(
        read(&f, "hooks.log"),
        format!("pre_apply {slot1}\npre_apply {slot2}\npost_rollback {slot1}\n"),
        "pre_apply before each apply (in the new slot), post_rollback in the old one"
    );
    let (ver, slot, _) = f.app_version().expect("v1 runs again");
    assert_eq!((ver.as_str(), slot.as_str()), ("v1.0.0", slot1.as_str()));
    assert_eq!(
        backups(&f),
        vec![format!("1-{slot1}"), format!("2-{slot2}")],
        "one backup per apply, the newest `keep` kept"
    );
    // A third apply (v1 again is a no-op; a good v3) prunes to `keep` = 2.
    let v3 = f.commit_with("v3.0.0", "healthy", &[("MIGRATE", "")]);
    let slot3 = format!("3-{}", &v3.sha[..12]);
    let (code, r) = post_apply(&f, &f.manifest(3, &v3));
    assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(
        backups(&f),
        vec![format!("2-{slot2}"), format!("3-{slot3}")]
    );
    kill(&mut agent);
    kill_app(&f);
}

/// A release that passed its own health check here but was caught by the fleet (its
/// canary judged it bad): the rollback order returns this node to the older version and
/// its data to where it was before the revoked release was applied — after a backup of
/// the data as the revoked release left it, and before the older version starts.
#[test]
fn a_rollback_order_for_the_release_this_node_runs_puts_the_data_back_as_before_it() {
    let f = fixture();
    let data = f.dir.path().join("data");
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit_with("v2.0.0", "healthy", &[("MIGRATE", "yes\n")]);
    let slot1 = format!("1-{}", &v1.sha[..12]);
    let slot2 = format!("2-{}", &v2.sha[..12]);
    let mut agent = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}\n{}", f.agent_log(1));
    std::fs::write(data.join("sub/deep/blob.bin"), b"written while v1 ran").unwrap();
    let before = tree(&data);

    let (code, r) = post_apply(&f, &f.manifest(2, &v2));
    assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(read(&f, "migrations.log"), "migrated v2.0.0\n");
    assert_ne!(tree(&data), before, "v2 migrated the data");
    let migrated = tree(&data);

    let (code, r) = post_apply(&f, &f.rollback(3, (2, &v2), &v1));
    let log = f.agent_log(1);
    assert_eq!(
        (code, r["outcome"].as_str()),
        (200, Some("applied")),
        "{r}\n{log}"
    );
    assert_eq!(
        tree(&data),
        before,
        "the data is back to its bytes before v2 was applied"
    );
    let (ver, slot, _) = f.app_version().expect("v1 runs again");
    assert_eq!((ver.as_str(), slot.as_str()), ("v1.0.0", slot1.as_str()));
    assert_eq!(
        read(&f, "hooks.log"),
        format!("pre_apply {slot1}\npre_apply {slot2}\npre_apply {slot1}\npost_rollback {slot1}\n"),
        "post_rollback in the slot of the version that starts"
    );
    // The data as v2 left it is kept too (the order's own backup), newest `keep` = 2.
    assert_eq!(
        backups(&f),
        vec![format!("2-{slot2}"), format!("3-{slot1}")]
    );
    let kept = f.state().join("backups").join(format!("3-{slot1}"));
    assert!(kept.join("backup.json").is_file());
    assert_ne!(migrated, before);
    kill(&mut agent);
    kill_app(&f);
}

#[test]
fn an_agent_killed_while_the_new_version_ran_restores_the_data_on_restart() {
    let f = fixture();
    let data = f.dir.path().join("data");
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit_with("v2.0.0", "healthy", &[("MIGRATE", "yes\n")]);
    let slot1 = format!("1-{}", &v1.sha[..12]);
    // Agent 1 dies right after journaling the probe phase of sequence 2: v2 was started
    // (and migrates the data), nothing is committed.
    let mut a1 = f.spawn_agent(Some("probe:2"), 1);
    wait_until(Duration::from_secs(20), "agent 1 listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let (code, r) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200, "{r}\n{}", f.agent_log(1));
    let before = tree(&data);
    let answer = http("POST", &f.agent_url("/apply"), &f.manifest(2, &v2));
    assert!(answer.is_none(), "agent 1 died: {answer:?}");
    a1.wait().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the orphaned v2 migrated the data",
        || read(&f, "migrations.log").contains("migrated v2.0.0"),
    );
    assert_ne!(tree(&data), before);

    let mut a2 = f.spawn_agent(None, 2);
    wait_until(Duration::from_secs(30), "agent 2 recovered onto v1", || {
        f.app_version().is_some_and(|(v, _, _)| v == "v1.0.0")
    });
    let s = status(&f);
    assert!(s["apply_phase"].is_null(), "{s}");
    assert_eq!(s["slot"], slot1.as_str(), "{s}");
    assert_eq!(s["last_report"]["outcome"], "interrupted", "{s}");
    assert_eq!(tree(&data), before, "restored before v1 started again");
    assert!(
        read(&f, "hooks.log").ends_with(&format!("post_rollback {slot1}\n")),
        "{}",
        read(&f, "hooks.log")
    );
    // The interrupted release was not the release's fault: it applies now, and this
    // time it stays (its migration with it).
    let (code, r) = post_apply(&f, &f.manifest(2, &v2));
    assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(
        std::fs::read_to_string(data.join("schema")).unwrap(),
        "v2.0.0\n"
    );
    kill(&mut a2);
    kill_app(&f);
}

#[test]
fn a_failing_pre_apply_hook_abandons_the_apply_and_the_old_version_keeps_running() {
    let f = Fixture::new(Opts {
        grace_secs: 3,
        extra: "pre_apply = \"test ! -f MIGRATE || { echo refusing migrations >&2; exit 7; }\"\n"
            .to_owned(),
        ..Opts::default()
    });
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit_with("v2.0.0", "healthy", &[("MIGRATE", "yes\n")]);
    let mut agent = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let (code, _) = post_apply(&f, &f.manifest(1, &v1));
    assert_eq!(code, 200);
    let (code, r) = post_apply(&f, &f.manifest(2, &v2));
    assert_eq!(code, 422, "{r}");
    assert_eq!(r["failed_phase"], "backup", "{r}");
    let detail = r["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("pre_apply") && detail.contains("refusing migrations"),
        "{detail}"
    );
    assert_eq!(f.app_version().unwrap().0, "v1.0.0");
    let s = status(&f);
    assert_eq!(
        s["bad"].as_array().map(Vec::len),
        Some(0),
        "not a bad release: {s}"
    );
    kill(&mut agent);
    kill_app(&f);
}
