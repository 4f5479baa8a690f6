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

/// A raw HTTP/1.1 GET on loopback: (status, body).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|b| b.1).unwrap_or("");
    (status, body.to_owned())
}

#[test]
fn demo_keep_leaves_the_updates_page_running_and_prints_its_url_and_token() {
    // Whatever happens next, nothing of this demo outlives the test: the fixture's drop
    // stops every process of the directory (agents, servers, and the apps they started).
    let fleet = common::Fleet {
        dir: tempfile::tempdir().unwrap(),
    };
    let dir = &fleet.dir;
    let out = std::process::Command::new(bin())
        .args(["demo", "--keep", "--nodes", "3", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    let url = t
        .lines()
        .find_map(|l| {
            l.split("the Updates page (fleetgate serve, left running): ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no page URL in:\n{t}"))
        .trim()
        .to_owned();
    let token = t
        .lines()
        .find_map(|l| l.split("sign in with the API token ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token in:\n{t}"))
        .to_owned();
    let file = dir.path().join("api.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, page) = get(&url, None);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("fleetgate") && page.contains("/ui/updates.js"),
        "{page}"
    );
    let api = format!("{url}api/upgrades/status");
    assert_eq!(get(&api, None).0, 401, "the API needs the token");
    let (status, body) = get(&api, Some(&token));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["stage"], "rolled_back",
        "the demo ends with v3.0.0 rolled back: {v}"
    );
}
