//! Releases of built artifacts, with a real agent process, a real HTTP artifact server
//! and a real app binary shipped inside a `.tar.gz`: the release is downloaded by
//! digest, checked, unpacked into a fresh slot and run from there; a bad one rolls back
//! to the kept slot; a hostile archive, a wrong digest and a wrong size are each refused,
//! remembered as bad, with nothing written outside the slots.

mod common;

use common::*;
use fleetgate_trust::{Artifact, sign_manifest};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A static artifact server on 127.0.0.1: `GET /artifacts/<path>` answers the bytes
/// registered under `<path>`, else 404.
#[derive(Clone)]
struct Server {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let served = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    loop {
                        let mut h = String::new();
                        match reader.read_line(&mut h) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if h == "\r\n" || h == "\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let body = path
                        .strip_prefix("/artifacts/")
                        .and_then(|k| served.lock().unwrap().get(k).cloned());
                    let _ = match body {
                        Some(b) => write!(
                            stream,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            b.len()
                        )
                        .and_then(|()| stream.write_all(&b)),
                        None => write!(
                            stream,
                            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        ),
                    };
                });
            }
        });
        Self { files, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/artifacts", self.port)
    }

    /// Serves `bytes` under `key` (normally its SHA-256).
    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(key.to_owned(), bytes);
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A `.tar.gz` of `(path, bytes, mode)`.
fn tar_gz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(bytes.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    e.finish().unwrap()
}

/// The app binary, shipped: `bin/app` plus the files it reads.
fn app_archive(version: &str, mode: &str) -> Vec<u8> {
    let app = std::fs::read(APP_BIN).unwrap();
    tar_gz(&[
        ("bin/app", &app, 0o755),
        ("VERSION", format!("{version}\n").as_bytes(), 0o644),
        ("MODE", format!("{mode}\n").as_bytes(), 0o644),
    ])
}

/// A fixture whose node runs `./bin/app` from the slot and fetches artifacts from `srv`.
fn fixture(srv: &Server) -> Fixture {
    let f = Fixture::new(Opts {
        grace_secs: 3,
        install: None,
        extra: format!("artifacts_url = {:?}\n", srv.url()),
        ..Opts::default()
    });
    let cfg = std::fs::read_to_string(&f.config_path).unwrap();
    let cfg = cfg.replace(
        &format!("start = \"exec '{APP_BIN}'\""),
        "start = \"exec ./bin/app\"",
    );
    assert!(cfg.contains("exec ./bin/app"));
    std::fs::write(&f.config_path, cfg).unwrap();
    f
}

/// A signed release `seq` of commit `rel` shipping `artifacts`.
fn artifact_manifest(f: &Fixture, seq: u64, rel: &Release, artifacts: Vec<Artifact>) -> Vec<u8> {
    let mut m = f.manifest_struct(seq, rel);
    m.artifacts = artifacts;
    sign_manifest(&m, &[&f.signer]).expect("sign")
}

fn shipped(srv: &Server, name: &str, bytes: Vec<u8>) -> Artifact {
    let a = Artifact {
        name: name.into(),
        sha256: sha(&bytes),
        size: bytes.len() as u64,
    };
    srv.put(&a.sha256, bytes);
    a
}

/// Names directly under `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
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
fn a_built_binary_in_an_archive_is_downloaded_checked_unpacked_and_run() {
    let srv = Server::start();
    let f = fixture(&srv);
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let mut agent = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let a1 = shipped(&srv, "dist/app.tar.gz", app_archive("v1.0.0", "healthy"));
    let (code, r) = post_apply(&f, &artifact_manifest(&f, 1, &v1, vec![a1]));
    assert_eq!(
        (code, r["outcome"].as_str()),
        (200, Some("applied")),
        "{r}\n{}",
        f.agent_log(1)
    );
    let slot1 = format!("1-{}", &v1.sha[..12]);
    let (ver, slot, _) = f.app_version().expect("the shipped binary runs");
    assert_eq!((ver.as_str(), slot.as_str()), ("v1.0.0", slot1.as_str()));
    let installed = f.state().join("slots").join(&slot1);
    assert!(installed.join("bin/app").is_file());
    assert!(!installed.join(".git").exists(), "not a checkout");
    // A bad build (its health check fails) rolls back to the kept slot.
    let a2 = shipped(&srv, "dist/app.tar.gz", app_archive("v2.0.0", "unhealthy"));
    let (code, r) = post_apply(&f, &artifact_manifest(&f, 2, &v2, vec![a2]));
    assert_eq!(
        (code, r["outcome"].as_str()),
        (422, Some("rolled_back")),
        "{r}"
    );
    assert_eq!(f.app_version().unwrap().1, slot1);
    // Only the kept slot remains; no download or partial directory is left behind.
    assert_eq!(names(&f.state().join("slots")), vec![slot1.clone()]);
    kill(&mut agent);
    kill_app(&f);
}

#[test]
fn hostile_or_mismatched_artifacts_are_refused_remembered_and_leave_nothing() {
    let srv = Server::start();
    let f = fixture(&srv);
    let v1 = f.commit("v1.0.0", "healthy");
    let mut agent = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let a1 = shipped(&srv, "app.tar.gz", app_archive("v1.0.0", "healthy"));
    let (code, r) = post_apply(&f, &artifact_manifest(&f, 1, &v1, vec![a1]));
    assert_eq!(code, 200, "{r}\n{}", f.agent_log(1));
    let before_root = names(f.dir.path());
    let before_slots = names(&f.state().join("slots"));

    // A traversal entry (written with a raw header: the builder refuses such paths).
    let traversal = {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"../../escaped");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&b.into_inner().unwrap()).unwrap();
        e.finish().unwrap()
    };
    let good = app_archive("v1.1.0", "healthy");
    let mut wrong_digest = shipped(&srv, "app.tar.gz", good.clone());
    srv.put(&wrong_digest.sha256, app_archive("v6.6.6", "healthy"));
    wrong_digest.size = srv.files.lock().unwrap()[&wrong_digest.sha256].len() as u64;
    let mut wrong_size = shipped(&srv, "app2.tar.gz", {
        let mut g = good.clone();
        g.push(0);
        g
    });
    wrong_size.size -= 1;
    let cases = [
        ("traversal", shipped(&srv, "evil.tar.gz", traversal), "`..`"),
        ("wrong digest", wrong_digest, "SHA-256"),
        ("wrong size", wrong_size, "bytes"),
    ];
    for (seq, (what, artifact, why)) in (2u64..).zip(cases) {
        let rel = f.commit(&format!("v1.{seq}.0"), "healthy");
        let m = artifact_manifest(&f, seq, &rel, vec![artifact]);
        let (code, r) = post_apply(&f, &m);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (422, Some("failed")),
            "{what}: {r}"
        );
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "{what}: {detail}");
        assert_eq!(
            f.app_version().unwrap().0,
            "v1.0.0",
            "{what}: v1 keeps running"
        );
        assert_eq!(
            names(f.dir.path()),
            before_root,
            "{what}: nothing outside the slots"
        );
        assert_eq!(names(&f.state().join("slots")), before_slots, "{what}");
        // Remembered: the same release is refused without a download.
        let (code, r) = post_apply(&f, &m);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (409, Some("refused")),
            "{what}: {r}"
        );
    }
    // A node without `artifacts_url` refuses an artifact release (and may get it later).
    kill(&mut agent);
    let cfg = std::fs::read_to_string(&f.config_path).unwrap();
    std::fs::write(
        &f.config_path,
        cfg.lines()
            .filter(|l| !l.starts_with("artifacts_url"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let mut agent = f.spawn_agent(None, 2);
    wait_until(Duration::from_secs(20), "agent 2 listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let rel = f.commit("v1.9.0", "healthy");
    let a = shipped(&srv, "app.tar.gz", app_archive("v1.9.0", "healthy"));
    let (code, r) = post_apply(&f, &artifact_manifest(&f, 9, &rel, vec![a]));
    assert_eq!((code, r["outcome"].as_str()), (422, Some("failed")), "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("artifacts_url"),
        "{r}"
    );
    assert_eq!(
        status(&f)["bad"].as_array().map(Vec::len),
        Some(3),
        "not remembered as bad"
    );
    kill(&mut agent);
    kill_app(&f);
}

#[test]
fn a_rollback_order_to_an_artifact_release_reuses_its_verified_slot_or_downloads_it_again() {
    let srv = Server::start();
    let f = fixture(&srv);
    let v1 = f.commit("v1.0.0", "healthy");
    let v2 = f.commit("v2.0.0", "healthy");
    let mut agent = f.spawn_agent(None, 1);
    wait_until(Duration::from_secs(20), "agent listening", || {
        http_get(&f.agent_url("/health")).is_some()
    });
    let a1 = shipped(&srv, "app.tar.gz", app_archive("v1.0.0", "healthy"));
    let a2 = shipped(&srv, "app.tar.gz", app_archive("v2.0.0", "healthy"));
    let order = |seq: u64, revoked: (u64, &Release)| {
        let mut m = f.manifest_struct(seq, revoked.1);
        m.kind = fleetgate_trust::ManifestKind::Rollback;
        m.rollback_of = Some(fleetgate_trust::RollbackOf {
            sequence: revoked.0,
            version: revoked.1.version.clone(),
            code_hash: None,
        });
        m.return_to_version = Some(v1.version.clone());
        m.return_to_code_hash = Some(v1.code_hash.clone());
        m.return_to_git_sha = Some(v1.sha.clone());
        m.artifacts = vec![a1.clone()];
        sign_manifest(&m, &[&f.signer]).expect("sign")
    };
    let slot1 = format!("1-{}", &v1.sha[..12]);
    for (release_seq, order_seq, drop_slot) in [(2u64, 3u64, false), (4, 5, true)] {
        let m2 = artifact_manifest(&f, release_seq, &v2, vec![a2.clone()]);
        if release_seq == 2 {
            let m1 = artifact_manifest(&f, 1, &v1, vec![a1.clone()]);
            let (code, r) = post_apply(&f, &m1);
            assert_eq!(code, 200, "{r}");
        }
        let (code, r) = post_apply(&f, &m2);
        assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
        let previous = status(&f)["previous"]["slot"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if drop_slot {
            // The kept slot is gone (pruned, disk replaced): the order's artifacts are
            // downloaded again into a new slot.
            std::fs::remove_dir_all(f.state().join("slots").join(&previous)).unwrap();
        }
        let (code, r) = post_apply(&f, &order(order_seq, (release_seq, &v2)));
        assert_eq!((code, r["outcome"].as_str()), (200, Some("applied")), "{r}");
        let (ver, slot, _) = f.app_version().unwrap();
        assert_eq!(ver, "v1.0.0");
        if drop_slot {
            assert_eq!(
                slot,
                format!("{order_seq}-{}", &v1.sha[..12]),
                "a fresh slot"
            );
        } else {
            assert_eq!(slot, slot1, "the kept slot, verified from its digests");
        }
        assert!(
            f.state()
                .join("slots")
                .join(&slot)
                .join(".fleetgate-files.json")
                .is_file()
        );
    }
    kill(&mut agent);
    kill_app(&f);
}
