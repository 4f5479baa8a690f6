//! `examples/grafana/fleetgate.json` charts what fleetgate exports: every metric a panel
//! queries is one that `serve`, `fleet serve` or the agent writes on `/metrics` (a typo
//! or a renamed metric is a blank panel in production), and every exported metric has a
//! panel. The exported names are read from the three modules that write them.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `fleetgate_…` words in `text` (crate names such as `fleetgate_core` excluded by the
/// caller's filter).
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("fleetgate_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start + "fleetgate_".len();
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end] == b'_' || b[end].is_ascii_digit())
        {
            end += 1;
        }
        if boundary {
            out.insert(text[start..end].trim_end_matches('_').to_owned());
        }
        i = end;
    }
    out
}

/// The metric names the `/metrics` writers emit: names that appear in a `# TYPE` line or
/// as a quoted name passed to the writer.
fn exported() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in [
        "crates/fleetgate-tools/src/metrics.rs",
        "crates/fleetgate-fleet/src/metrics.rs",
        "crates/fleetgate-agent/src/metrics.rs",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        // Only the code before the unit tests, and only metric-shaped names.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for line in code.lines() {
            let l = line.trim_start();
            if l.starts_with("//") || l.starts_with("use ") {
                continue;
            }
            for n in names(l) {
                if ![
                    "fleetgate_core",
                    "fleetgate_fleet",
                    "fleetgate_gossip",
                    "fleetgate_net",
                    "fleetgate_store",
                ]
                .contains(&n.as_str())
                {
                    out.insert(n);
                }
            }
        }
    }
    out
}

#[test]
fn the_dashboard_charts_every_exported_metric_and_nothing_else() {
    let text = std::fs::read_to_string(root().join("examples/grafana/fleetgate.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {p}"
        );
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            queried.extend(names(t["expr"].as_str().expect("expr")));
        }
    }
    let exported = exported();
    assert!(exported.len() >= 20, "the writers were read: {exported:?}");
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "panels query metrics nothing exports: {unknown:?}"
    );
    let uncharted: Vec<_> = exported.difference(&queried).collect();
    assert!(
        uncharted.is_empty(),
        "exported metrics without a panel: {uncharted:?}"
    );
}
