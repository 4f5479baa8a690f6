//! Release channels on a real demo fleet of six node agents: three move to `beta`; a
//! release started on `beta` reaches only the beta nodes (canary, targets; pushed, not
//! gossiped, since gossip would reach every node); `promote-channel` (here the tool
//! `promote_channel`, the HTTP API's route) takes it to
//! `stable`, which is paused at first and gets nothing until it is resumed.

mod common;
use common::{Fleet, RUN_LIMIT, code, git, ids, text};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const BETA: [&str; 3] = ["node-01", "node-02", "node-03"];

/// Waits until every node's latest heartbeat matches `want(node)`.
fn wait_hashes(fleet: &Fleet, what: &str, want: impl Fn(&str) -> String) {
    let t = Instant::now();
    loop {
        let hashes = fleet.code_hashes();
        if hashes.iter().all(|(n, h)| *h == want(n)) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{what}: {hashes:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_beta_release_reaches_only_beta_and_a_paused_stable_gets_it_only_once_resumed() {
    let fleet = Fleet::prepare(6);
    fleet.wait_for_history(30);
    let v1 = fleet.code_hashes()[0].1.clone();
    wait_hashes(&fleet, "the provisioned fleet", |_| v1.clone());

    for n in BETA {
        let out = fleet.fg(&["fleet", "channel", "set", n, "beta"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    let out = fleet.fg(&["fleet", "channel", "set", "node-04", "Not A Channel"]);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out).contains("invalid channel name"),
        "{}",
        text(&out)
    );
    let channels: Value =
        serde_json::from_slice(&fleet.fg(&["fleet", "channel", "list", "--json"]).stdout).unwrap();
    let count = |name: &str| {
        channels
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["nodes"].as_u64().unwrap())
    };
    assert_eq!(
        (count("beta"), count("stable")),
        (Some(3), Some(3)),
        "{channels}"
    );
    let list = text(&fleet.fg(&["fleet", "list"]));
    assert!(list.contains("CHANNEL") && list.contains("beta"), "{list}");

    // A new commit, released on beta.
    let app = fleet.dir.path().join("sample-app");
    std::fs::write(app.join("NOTES"), "beta release\n").unwrap();
    git(&app, &["add", "NOTES"]);
    git(&app, &["commit", "-qm", "v4.1.0"]);
    git(&app, &["tag", "v4.1.0"]);
    let out = fleet.fg(&["start", "v4.1.0", "--channel", "beta"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("on channel `beta`"), "{}", text(&out));
    let out = fleet.run();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "completed", "{s}");
    assert_eq!(s["channel"], "beta");
    let beta: BTreeSet<String> = BETA.iter().map(|n| (*n).to_owned()).collect();
    let canary = ids(&s["canary"]["selection"]["nodes"]);
    let baseline = ids(&s["canary"]["selection"]["baseline"]);
    assert!(canary.is_subset(&beta) && baseline.is_subset(&beta), "{s}");
    assert_eq!(canary.len() + baseline.len(), 3, "{s}");
    assert_eq!(
        s["deploy"]["mode"], "push",
        "gossip would reach the stable nodes"
    );
    assert!(ids(&s["deploy"]["targets"]).is_subset(&beta), "{s}");
    assert_eq!(s["channel_releases"]["beta"]["version"], "v4.1.0");
    assert!(
        s["last_completed"].is_null(),
        "stable's record is not beta's: {}",
        s["last_completed"]
    );
    let v41 = s["code_hash"].as_str().unwrap().to_owned();
    wait_hashes(&fleet, "beta on v4.1.0, stable on v1.0.0", |n| {
        if BETA.contains(&n) {
            v41.clone()
        } else {
            v1.clone()
        }
    });

    // Only what a channel completed last can be promoted.
    let out = fleet.fg(&["promote-channel", "v9.9.9", "--to", "stable"]);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out).contains("v4.1.0 on `beta`"),
        "names what can be: {}",
        text(&out)
    );

    // Stable is paused: the promoted run gets to CANARY and sends nothing.
    let out = fleet.fg(&["fleet", "channel", "pause", "stable", "--reason", "freeze"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The same over the tools (and `POST /api/upgrades/promote-channel`): refused the same
    // way, then the promotion itself.
    let tool = |args: Value| -> Value {
        let out = fleet.fg(&[
            "tools",
            "call",
            "promote_channel",
            "--args",
            &args.to_string(),
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    let r = tool(serde_json::json!({"version": "v9.9.9", "to": "stable"}));
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["error_kind"], "refused", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("v4.1.0 on `beta`"),
        "{r}"
    );
    let r = tool(serde_json::json!({"version": "v4.1.0", "to": "stable"}));
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["promoted_from"], "beta", "{r}");
    assert_eq!(r["channel"], "stable", "{r}");
    assert_eq!(r["version"], "v4.1.0", "{r}");
    let run = fleet.background(&["run"]);
    let held = fleet.wait_until("CANARY held by the paused channel", |s| {
        s["stage"] == "canary"
            && s["gate_results"]["canary"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("channel `stable` is paused"))
    });
    assert!(
        held["canary"]["selection"].is_null(),
        "nothing selected or sent: {}",
        held["canary"]
    );
    let list = text(&fleet.fg(&["fleet", "channel", "list"]));
    assert!(list.contains("PAUSED (freeze)"), "{list}");
    let out = fleet.fg(&["fleet", "channel", "resume", "stable"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = run.wait_within(RUN_LIMIT);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = fleet.status();
    assert_eq!(s["stage"], "completed", "{s}");
    assert!(s["channel"].is_null(), "stable is the default channel: {s}");
    assert_eq!(s["last_completed"]["version"], "v4.1.0");
    assert_eq!(s["channel_releases"]["beta"]["version"], "v4.1.0");
    let stable: BTreeSet<String> = ["node-04", "node-05", "node-06"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    assert!(
        ids(&s["canary"]["selection"]["nodes"]).is_subset(&stable),
        "{s}"
    );
    wait_hashes(&fleet, "every node on v4.1.0", |_| v41.clone());
    println!("beta then stable: every node on {}", &v41[..12]);
}
