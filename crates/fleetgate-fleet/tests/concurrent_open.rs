//! Several processes (and several pools in one process) opening the same fresh SQLite
//! registry at the same moment all succeed: the file is created, switched to WAL and
//! migrated exactly once, and every opener can write to it.

use std::io::Read;
use std::process::{Command, Stdio};

use fleetgate_fleet::Registry;

/// Set in the child processes: the registry URL to open and the node id to write.
const CHILD_URL: &str = "FLEETGATE_TEST_RACE_URL";
const CHILD_ID: &str = "FLEETGATE_TEST_RACE_ID";
const THIS_TEST: &str = "separate_processes_opening_a_fresh_sqlite_file_all_succeed";

const PROCESSES: usize = 16;
const POOLS: usize = 16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

/// In a child: wait for the parent's go (its stdin closing), then open and write.
fn child(url: &str, id: &str) {
    let mut go = Vec::new();
    std::io::stdin().read_to_end(&mut go).expect("read stdin");
    let rt = runtime();
    rt.block_on(async {
        let reg = Registry::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{id}: connect: {e}"));
        reg.register_unverified(id, "http://127.0.0.1:1", &"ab".repeat(32), "eu", 1)
            .await
            .unwrap_or_else(|e| panic!("{id}: write: {e}"));
        reg.close().await;
    });
}

#[test]
fn separate_processes_opening_a_fresh_sqlite_file_all_succeed() {
    if let (Ok(url), Ok(id)) = (std::env::var(CHILD_URL), std::env::var(CHILD_ID)) {
        child(&url, &id);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("state/fleet.db").display());
    let exe = std::env::current_exe().expect("test binary");
    let mut children: Vec<(String, std::process::Child)> = (0..PROCESSES)
        .map(|i| {
            let id = format!("proc-{i:02}");
            let c = Command::new(&exe)
                .args([THIS_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_URL, &url)
                .env(CHILD_ID, &id)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the test binary");
            (id, c)
        })
        .collect();
    // Every child is started and blocked on its stdin: release them all at once.
    for (_, c) in &mut children {
        drop(c.stdin.take());
    }
    let failures: Vec<String> = children
        .into_iter()
        .filter_map(|(id, c)| {
            let out = c.wait_with_output().expect("wait for a child");
            (!out.status.success()).then(|| {
                format!(
                    "{id} ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {PROCESSES} processes failed to open the fresh registry:\n{}",
        failures.len(),
        failures.join("\n")
    );
    runtime().block_on(async {
        let reg = Registry::connect(&url)
            .await
            .expect("connect after the race");
        let ids: Vec<String> = reg
            .list_peers()
            .await
            .expect("list")
            .into_iter()
            .map(|p| p.id)
            .collect();
        let want: Vec<String> = (0..PROCESSES).map(|i| format!("proc-{i:02}")).collect();
        assert_eq!(ids, want, "every process wrote its peer");
    });
}

#[test]
fn many_pools_in_one_process_opening_a_fresh_sqlite_file_all_succeed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("fleet.db").display());
    runtime().block_on(async {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(POOLS));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..POOLS {
            let (url, start) = (url.clone(), start.clone());
            set.spawn(async move {
                start.wait().await;
                let id = format!("pool-{i:02}");
                let reg = Registry::connect(&url)
                    .await
                    .map_err(|e| format!("{id}: connect: {e}"))?;
                reg.register_unverified(&id, "http://127.0.0.1:1", &"cd".repeat(32), "us", 1)
                    .await
                    .map_err(|e| format!("{id}: write: {e}"))?;
                Ok::<Registry, String>(reg)
            });
        }
        let mut errors = Vec::new();
        let mut pools = Vec::new();
        while let Some(r) = set.join_next().await {
            match r.expect("task") {
                Ok(reg) => pools.push(reg),
                Err(e) => errors.push(e),
            }
        }
        assert!(errors.is_empty(), "{errors:#?}");
        let peers = pools[0].list_peers().await.expect("list");
        assert_eq!(peers.len(), POOLS);
        for reg in pools {
            reg.close().await;
        }
    });
}
