//! A release of built artifacts through the whole pipeline on a real fleet (issue 20):
//! `[stages.build] artifacts` makes BUILD store the built files by digest — a plain file
//! and a `.tar.gz` of the build's output — SIGN lists them in the signed manifest, `fleet
//! serve` serves them at `/artifacts/{sha256}`, and every agent (`artifacts_url`; one of
//! them in pull mode, taking the release from its feed) downloads, checks and installs
//! them into a fresh slot, unpacking the archive — no checkout — and runs the release
//! from there through CANARY and DEPLOY. With `[artifacts] base_url` (a static server),
//! CANARY holds, sending nothing, until `fleetgate artifacts export` has published them
//! there.

mod common;
use common::{Fleet, code, text};
use serde_json::Value;
use sha2::Digest as _;
use std::time::Duration;

/// A static file server over a directory (Python's `http.server`), stopped on drop.
struct StaticServer(std::process::Child);

impl StaticServer {
    fn start(dir: &std::path::Path, port: u16) -> StaticServer {
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (the tests need it; .ci/run installs it)");
        let server = StaticServer(child);
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "http.server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_release_of_built_artifacts_reaches_every_node_and_runs_from_them() {
    // One of the three nodes is behind NAT (pull mode): it takes the release, and its
    // artifacts, through its feed.
    let fleet = Fleet::prepare_with(3, &["--pull-nodes", "1"]);
    // Ship the config the app reads as a plain file and the build's output as a
    // `.tar.gz` the agents unpack into the slot; the nodes' install step skips the build
    // when the built file is already there.
    let path = fleet.config();
    let conf = std::fs::read_to_string(&path).unwrap();
    let edited = conf.replacen(
        "command = \"sh build.sh\"\n",
        "command = \"sh build.sh && mkdir -p dist && tar -czf dist/build.tar.gz build\"\n\
         artifacts = [\"app.conf\", \"dist/*.tar.gz\"]\n",
        1,
    );
    assert_ne!(conf, edited, "the demo config has a build command");
    // `[artifacts] base_url`: a static HTTP server (Python's http.server over a
    // directory), empty at first: CANARY holds until the artifacts are published there.
    let published = fleet.dir.path().join("published");
    std::fs::create_dir_all(&published).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let edited = format!("{edited}\n[artifacts]\nbase_url = \"http://127.0.0.1:{port}/\"\n");
    std::fs::write(&path, edited).unwrap();
    fleet.wait_for_history(30);

    let out = fleet.fg(&["start", "v2.0.0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run = fleet.background(&["run"]);
    let held_detail = |what: &str, needle: &'static str| {
        let held = fleet.wait_until(what, |s| {
            s["stage"] == "canary"
                && s["gate_results"]["canary"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(needle))
        });
        let detail = held["gate_results"]["canary"]["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        (held, detail)
    };
    // The server is not up yet: the first artifact is asked for, the other is not.
    let (_, detail) = held_detail("CANARY held: no artifact server", "not reachable");
    assert!(
        detail.contains("waiting for 2 of 2 artifact(s) to be published")
            && detail.contains("1 more artifact(s): not asked"),
        "{detail}"
    );
    // Up, but empty.
    let _static = StaticServer::start(&published, port);
    let (held, detail) = held_detail("CANARY held for the unpublished artifacts", "HTTP 404");
    assert!(
        detail.contains("waiting for 2 of 2 artifact(s) to be published")
            && detail.contains("app.conf")
            && detail.contains("dist/build.tar.gz"),
        "{detail}"
    );
    assert!(
        held["canary"].is_null()
            || held["canary"]["deliveries"]
                .as_array()
                .is_none_or(Vec::is_empty),
        "nothing sent while held: {}",
        held["canary"]
    );
    // The operator publishes them: exported by digest, served, and the run goes on.
    let out = fleet.fg(&["artifacts", "export", published.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let exported: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = exported["artifacts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{exported}");
    for a in list {
        let file = published.join(a["sha256"].as_str().unwrap());
        assert_eq!(
            hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap())),
            a["sha256"].as_str().unwrap()
        );
        assert_eq!(a["copied"], true, "{a}");
    }
    // Exporting again copies nothing.
    let out = fleet.fg(&["artifacts", "export", published.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        again["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["copied"] == false),
        "{again}"
    );
    let out = run.wait_within(Duration::from_secs(300));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "completed", "{s}");
    let build = &s["gate_results"]["building"];
    assert!(
        build["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("2 artifact(s)"),
        "{build}"
    );

    // The signed manifest lists both files, and the store holds exactly those bytes.
    let state = fleet.dir.path().join("state");
    let m: Value =
        serde_json::from_slice(&std::fs::read(state.join("release_manifest.json")).unwrap())
            .unwrap();
    let arts = m["artifacts"]
        .as_array()
        .expect("artifacts in the manifest");
    let names: Vec<&str> = arts.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["app.conf", "dist/build.tar.gz"], "{m}");
    let tar_art = &arts[1];
    let archive = state
        .join("artifacts")
        .join(tar_art["sha256"].as_str().unwrap());
    assert_eq!(
        hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap())),
        tar_art["sha256"].as_str().unwrap()
    );
    // What the archive holds (read with the system's tar, as an operator would).
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(&archive)
        .arg("build/app.env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stored = out.stdout;
    assert!(
        String::from_utf8_lossy(&stored).contains("version=v2.0.0"),
        "built by BUILD for v2.0.0"
    );

    // The completed release keeps its artifact list: a later rollback order returning to
    // it lists them, so a node that lost the slot downloads them again.
    assert_eq!(
        s["last_completed"]["artifacts"], m["artifacts"],
        "{}",
        s["last_completed"]
    );

    // Every node runs it, from a slot installed from the artifacts (not a checkout).
    let hash = s["code_hash"].as_str().unwrap().to_owned();
    fleet.wait_all_on(&hash, "v2.0.0 from artifacts");
    let nodes = fleet.dir.path().join("nodes");
    let mut seen = 0;
    for n in std::fs::read_dir(&nodes).unwrap().flatten() {
        let current = n.path().join("state/current");
        let slot = std::fs::canonicalize(&current).unwrap();
        assert!(
            slot.join(".fleetgate-files.json").is_file(),
            "{}: installed from artifacts",
            slot.display()
        );
        assert!(
            !slot.join(".git").exists(),
            "{}: not a checkout",
            slot.display()
        );
        assert_eq!(std::fs::read(slot.join("build/app.env")).unwrap(), stored);
        seen += 1;
    }
    assert_eq!(seen, 3);
}
