//! The README's main command, end to end: `fleetgate demo` with real node agents.

mod common;
use common::{bin, code, text};

#[test]
fn the_demo_releases_v2_to_every_node_and_the_canary_catches_v3() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["demo", "--nodes", "5", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    for line in [
        "[ok] v2.0.0 run ended `completed`",
        "[ok] every node runs v2.0.0 (5/5 by code hash)",
        "[ok] v3.0.0 caught by the canary, run ended `rolled_back`",
        "[ok] the rollback order was delivered (outbox empty)",
        "[ok] every node back on / still on v2.0.0 (5/5 by code hash)",
        "demo OK",
    ] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
    // No agent or app process outlives the demo.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let leftovers: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(dir.path().to_str().unwrap()))
        .map(str::to_owned)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
