//! The tools' argument schemas: generated from the Rust types, committed as a snapshot
//! (`schemas/tools.json`), valid JSON Schema that accepts good arguments and refuses bad
//! ones — and the dispatcher answers every argument with `{"success": ...}`, never a panic.

use fleetgate_tools::export::{Format, export};
use fleetgate_tools::{Toolbox, definitions};
use serde_json::{Value, json};
use std::path::PathBuf;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/tools.json")
}

/// To accept a change: `UPDATE_SNAPSHOTS=1 cargo nextest run -p fleetgate-tools`.
#[test]
fn committed_schemas_match_the_types() {
    let generated = serde_json::to_string_pretty(&export(Format::JsonSchema)).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(snapshot_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(snapshot_path()).expect("schemas/tools.json exists");
    assert_eq!(
        committed, generated,
        "a tool schema changed: rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    );
}

#[test]
fn the_ten_hart_tools_in_order_then_the_operator_controls() {
    let names: Vec<&str> = definitions().iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        [
            "check_upgrade_status",
            "capture_benchmark",
            "compare_benchmarks",
            "start_upgrade",
            "advance_upgrade_pipeline",
            "check_canary_health",
            "rollback_upgrade",
            "get_benchmark_history",
            "register_benchmark",
            "list_benchmarks",
            "pause_upgrade",
            "resume_upgrade",
            "promote_upgrade",
            "approve_upgrade",
            "promote_channel"
        ]
    );
    for d in definitions() {
        assert_eq!(d.input_schema["type"], "object", "{}", d.name);
        assert!(
            d.description.len() > 40,
            "{} needs a real description",
            d.name
        );
    }
    let rollback = fleetgate_tools::find("rollback_upgrade").unwrap();
    assert!(rollback.destructive && !rollback.read_only);
    assert!(
        fleetgate_tools::find("check_upgrade_status")
            .unwrap()
            .read_only
    );
}

fn validator(tool: &str) -> jsonschema::Validator {
    let all = export(Format::JsonSchema);
    jsonschema::validator_for(&all["tools"][tool]).unwrap()
}

#[test]
fn schemas_accept_good_arguments_and_refuse_bad_ones() {
    let cases: &[(&str, Value, bool)] = &[
        ("start_upgrade", json!({"new_version": "v2.0.0"}), true),
        (
            "start_upgrade",
            json!({"new_version": "v2.0.0", "git_sha": "abc"}),
            true,
        ),
        ("start_upgrade", json!({}), false),
        ("start_upgrade", json!({"new_version": 2}), false),
        (
            "start_upgrade",
            json!({"new_version": "v2", "force": true}),
            false,
        ),
        ("rollback_upgrade", json!({"reason": "p99 up"}), true),
        // HART's defaults: `reason` optional, `capture_benchmark` without arguments,
        // `register_benchmark` with HART's arguments.
        ("rollback_upgrade", json!({}), true),
        ("rollback_upgrade", json!({"reason": 5}), false),
        ("capture_benchmark", json!({}), true),
        (
            "register_benchmark",
            json!({"name": "q", "repo_url": "https://x.invalid/q.git", "requires_gpu": true,
                   "min_vram_gb": 4.0, "run_command": "python bench.py", "metrics_file": "m.json"}),
            true,
        ),
        (
            "register_benchmark",
            json!({"name": "q", "requires_gpu": "yes"}),
            false,
        ),
        (
            "capture_benchmark",
            json!({"version": "v1.0.0", "tier": "fast"}),
            true,
        ),
        (
            "capture_benchmark",
            json!({"version": "v1.0.0", "tier": "medium"}),
            false,
        ),
        (
            "compare_benchmarks",
            json!({"old_version": "v1.0.0", "new_version": "v2.0.0"}),
            true,
        ),
        (
            "compare_benchmarks",
            json!({"old_version": "v1.0.0"}),
            false,
        ),
        (
            "register_benchmark",
            json!({"name": "lat", "command": ["./b.sh"], "results": "b.json"}),
            true,
        ),
        (
            "register_benchmark",
            json!({"name": "lat", "command": "./b.sh", "results": "b.json"}),
            false,
        ),
        ("check_upgrade_status", json!({}), true),
        ("check_upgrade_status", json!({"verbose": true}), false),
        ("list_benchmarks", json!({}), true),
    ];
    for (tool, args, ok) in cases {
        assert_eq!(validator(tool).is_valid(args), *ok, "{tool} {args}");
    }
}

#[test]
fn exports_carry_every_tool_in_each_format() {
    let openai = export(Format::OpenAi);
    let anthropic = export(Format::Anthropic);
    let responses = export(Format::OpenAiResponses);
    for (i, d) in definitions().iter().enumerate() {
        assert_eq!(openai[i]["type"], "function");
        assert_eq!(openai[i]["function"]["name"], d.name);
        assert_eq!(openai[i]["function"]["parameters"], d.input_schema);
        // The Responses API's shape is flat: no nested `function`.
        let r = responses[i].as_object().unwrap();
        assert_eq!(r["type"], "function");
        assert_eq!(r["name"], d.name);
        assert_eq!(r["description"], d.description);
        assert_eq!(r["parameters"], d.input_schema);
        assert!(!r.contains_key("function"), "{r:?}");
        assert_eq!(anthropic[i]["name"], d.name);
        assert_eq!(anthropic[i]["input_schema"], d.input_schema);
        assert_eq!(anthropic[i]["description"], d.description);
    }
}

/// Whatever the arguments, a call answers `{"success": bool, ...}` and a refusal says
/// what was wrong.
#[test]
fn every_tool_answers_every_argument_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let tb = Toolbox::new(Some(dir.path().join("missing.toml")));
    let long = "v".repeat(100_000);
    let weird = [
        Value::Null,
        json!(1),
        json!("x"),
        json!([]),
        json!({"zzz": 1}),
        json!({"new_version": "../../etc/passwd"}),
        json!({"new_version": long}),
        json!({"reason": ""}),
        json!({"reason": 7}),
        json!({"version": "v1.0.0", "tier": "all", "extra": null}),
        json!({"name": "a b", "command": [], "results": "/etc/x"}),
        json!({"old_version": "\u{0}", "new_version": "v1"}),
    ];
    for d in definitions() {
        for args in &weird {
            let r = tb.call(d.name, args.clone());
            assert!(r["success"].is_boolean(), "{} {args}: {r}", d.name);
            if r["success"] == false {
                assert!(
                    r["error_kind"]
                        .as_str()
                        .and_then(fleetgate_tools::ErrorKind::parse)
                        .is_some(),
                    "{} {args}: {r}",
                    d.name
                );
                assert!(
                    r["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{} {args}: {r}",
                    d.name
                );
            }
        }
    }
    let r = tb.call("start_upgrade", json!({"new_version": 2}));
    assert!(r["error"].as_str().unwrap().contains("invalid type"), "{r}");
    let r = tb.call(
        "start_upgrade",
        json!({"new_version": "v1.0.0", "force": true}),
    );
    assert!(r["error"].as_str().unwrap().contains("force"), "{r}");
    let r = tb.call("check_upgrade_status", json!({}));
    assert_eq!(r["success"], false);
    assert!(
        r["error"].as_str().unwrap().contains("missing.toml"),
        "a missing config is named: {r}"
    );
    assert_eq!(r["error_kind"], "config");
    let r = tb.call("drop_tables", json!({}));
    assert!(r["error"].as_str().unwrap().contains("unknown tool"), "{r}");
    assert_eq!(r["error_kind"], "unknown_tool");
}
