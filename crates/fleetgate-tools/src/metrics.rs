//! The pipeline's Prometheus metrics for `fleetgate serve`'s `/metrics` (text exposition
//! format 0.0.4), rendered from the state file: which stage the run is at, since when,
//! how long it spent in each stage it left, each gate's latest outcome, the outbox depth,
//! whether the run is paused, the health judge's decision, statistic and thresholds per
//! criterion (canary and an open DEPLOY step); and from the run archive (`state/runs/`), how many runs
//! ended how ([`runs`]: kept on disk, so it survives restarts). The fleet's own metrics
//! (heartbeats, peers) come from [`fleetgate_fleet::metrics`] and follow.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_fleet::metrics::escape;

/// The pipeline metrics of `state` (pure: the caller reads the state).
pub fn pipeline(state: &PipelineState) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP fleetgate_pipeline_stage 1 for the stage the pipeline is at, 0 for the others.\n# TYPE fleetgate_pipeline_stage gauge"
    );
    for s in Stage::ALL {
        let _ = writeln!(
            out,
            "fleetgate_pipeline_stage{{stage=\"{}\"}} {}",
            s.as_str(),
            u8::from(s == state.stage)
        );
    }
    let _ = writeln!(
        out,
        "# HELP fleetgate_pipeline_run_info The run in the state file (1), labelled with its version and id.\n# TYPE fleetgate_pipeline_run_info gauge\nfleetgate_pipeline_run_info{{version=\"{}\",run_id=\"{}\"}} 1",
        escape(&state.version),
        escape(state.run_id.as_deref().unwrap_or(""))
    );
    if let Some(entered) = state.stage_history.last().map(|h| h.at) {
        let _ = writeln!(
            out,
            "# HELP fleetgate_pipeline_stage_entered_timestamp_seconds When the pipeline entered its current stage.\n# TYPE fleetgate_pipeline_stage_entered_timestamp_seconds gauge\nfleetgate_pipeline_stage_entered_timestamp_seconds {entered}"
        );
    }
    let mut spent: BTreeMap<&'static str, f64> = BTreeMap::new();
    for w in state.stage_history.windows(2) {
        let secs = w[1].at - w[0].at;
        if secs.is_finite() && secs >= 0.0 {
            *spent.entry(w[0].stage.as_str()).or_default() += secs;
        }
    }
    let _ = writeln!(
        out,
        "# HELP fleetgate_pipeline_stage_duration_seconds Seconds the run spent in each stage it has left (the current stage is not counted until it ends).\n# TYPE fleetgate_pipeline_stage_duration_seconds gauge"
    );
    for (stage, secs) in spent {
        let _ = writeln!(
            out,
            "fleetgate_pipeline_stage_duration_seconds{{stage=\"{stage}\"}} {secs:.3}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP fleetgate_pipeline_paused 1 while an operator holds the run.\n# TYPE fleetgate_pipeline_paused gauge\nfleetgate_pipeline_paused {}",
        u8::from(state.paused.is_some())
    );
    let _ = writeln!(
        out,
        "# HELP fleetgate_outbox_depth Effects (rollback orders) ordered and not delivered yet.\n# TYPE fleetgate_outbox_depth gauge\nfleetgate_outbox_depth {}",
        state.outbox.len()
    );
    let _ = writeln!(
        out,
        "# HELP fleetgate_gate_outcome The latest verdict of each gate of the run (1 on its outcome).\n# TYPE fleetgate_gate_outcome gauge"
    );
    for (stage, rec) in &state.gate_results {
        for (o, name) in [
            (Outcome::Passed, "passed"),
            (Outcome::Pending, "pending"),
            (Outcome::Failed, "failed"),
        ] {
            let _ = writeln!(
                out,
                "fleetgate_gate_outcome{{stage=\"{}\",outcome=\"{name}\"}} {}",
                stage.as_str(),
                u8::from(rec.verdict.outcome == o)
            );
        }
    }
    criteria(&mut out, state);
    if let Some(last) = &state.last_completed {
        let _ = writeln!(
            out,
            "# HELP fleetgate_last_completed_info The last release that completed (the one a rollback returns to).\n# TYPE fleetgate_last_completed_info gauge\nfleetgate_last_completed_info{{version=\"{}\"}} 1",
            escape(&last.version)
        );
    }
    out
}

/// The health judge's latest word per criterion, for the canary (`phase="canary"`) and
/// an open DEPLOY step (`phase="deploy_step"`): the decision, and every number of its
/// statistic and threshold (`name` is the figure's key, nested keys joined with `.`).
fn criteria(out: &mut String, state: &PipelineState) {
    let judged: Vec<(&str, &Vec<serde_json::Value>)> =
        [(Stage::Canary, "canary"), (Stage::Deploying, "deploy_step")]
            .into_iter()
            .filter_map(|(stage, phase)| {
                let rec = state.gate_results.get(&stage)?;
                Some((phase, rec.verdict.figures.get("criteria")?.as_array()?))
            })
            .collect();
    let _ = writeln!(
        out,
        "# HELP fleetgate_canary_criterion The health judge's latest decision per criterion (1 on it).\n# TYPE fleetgate_canary_criterion gauge"
    );
    for (phase, list) in &judged {
        for c in *list {
            let name = c
                .get("criterion")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown");
            let decision = c.get("decision").and_then(|v| v.as_str()).unwrap_or("");
            for d in ["pass", "pending", "fail", "skipped"] {
                let _ = writeln!(
                    out,
                    "fleetgate_canary_criterion{{phase=\"{phase}\",criterion=\"{}\",decision=\"{d}\"}} {}",
                    escape(name),
                    u8::from(d == decision)
                );
            }
        }
    }
    for (metric, key, help) in [
        (
            "fleetgate_canary_statistic",
            "statistic",
            "The judge's test statistic per criterion (each number of it, by name).",
        ),
        (
            "fleetgate_canary_threshold",
            "threshold",
            "The thresholds the judge applies per criterion (each number, by name).",
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for (phase, list) in &judged {
            for c in *list {
                let name = c
                    .get("criterion")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown");
                let mut numbers = Vec::new();
                if let Some(v) = c.get(key) {
                    flatten_numbers("", v, &mut numbers);
                }
                for (figure, v) in numbers {
                    let _ = writeln!(
                        out,
                        "{metric}{{phase=\"{phase}\",criterion=\"{}\",name=\"{}\"}} {v}",
                        escape(name),
                        escape(&figure)
                    );
                }
            }
        }
    }
}

/// Every finite number in `v` with its key path (`a.b`); at most 64, nesting at most 4.
fn flatten_numbers(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    if out.len() >= 64 || prefix.matches('.').count() >= 4 {
        return;
    }
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.push((prefix.to_owned(), x));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_numbers(&key, x, out);
            }
        }
        _ => {}
    }
}

/// Largest archived run file read for [`archived_runs`].
const MAX_ARCHIVED_RUN_BYTES: u64 = 4 * 1024 * 1024;

/// How the runs archived in `runs_dir` (`state/runs/*.json`, one per finished run) ended,
/// by their final stage (`completed`, `rolled_back`, `failed`); unreadable files count as
/// `unreadable`. A missing directory is no runs.
#[must_use]
pub fn archived_runs(runs_dir: &Path) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for run in run_archive(runs_dir) {
        let stage = run["stage"].as_str().unwrap_or("unreadable").to_owned();
        *by.entry(stage).or_default() += 1;
    }
    by
}

/// One summary per run archived in `runs_dir`, newest first: `run_id`, `version`,
/// `git_sha`, `channel`, `stage` (how it ended), `started_at`, `ended_at` (its last
/// history entry), `failure_detail`, `rollback_reason`; a file that does not read is
/// `{"file", "stage": "unreadable"}`. A missing directory is no runs.
#[must_use]
pub fn run_archive(runs_dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let file = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let doc = std::fs::metadata(&p)
            .ok()
            .filter(|m| m.len() <= MAX_ARCHIVED_RUN_BYTES)
            .and_then(|_| std::fs::read(&p).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|v| v.get("stage").and_then(|s| s.as_str()).is_some());
        let Some(v) = doc else {
            out.push(serde_json::json!({"file": file, "stage": "unreadable"}));
            continue;
        };
        let ended_at = v["stage_history"]
            .as_array()
            .and_then(|h| h.last())
            .and_then(|h| h.get("at"))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        out.push(serde_json::json!({
            "file": file,
            "run_id": v["run_id"],
            "version": v["version"],
            "git_sha": v["git_sha"],
            "channel": v.get("channel").and_then(|c| c.as_str()).unwrap_or(fleetgate_core::DEFAULT_CHANNEL),
            "stage": v["stage"],
            "started_at": v["started_at"],
            "ended_at": ended_at,
            "failure_detail": v["failure_detail"],
            "rollback_reason": v["rollback_reason"],
        }));
    }
    out.sort_by(|a, b| {
        let t = |v: &serde_json::Value| v["ended_at"].as_f64().unwrap_or(0.0);
        t(b).total_cmp(&t(a))
    });
    out
}

/// `fleetgate_runs_total{outcome}` from [`archived_runs`].
#[must_use]
pub fn runs(by_outcome: &BTreeMap<String, u64>) -> String {
    let mut out = String::from(
        "# HELP fleetgate_runs_total Finished runs in the run archive, by how they ended.\n# TYPE fleetgate_runs_total counter\n",
    );
    for (outcome, n) in by_outcome {
        let _ = writeln!(
            out,
            "fleetgate_runs_total{{outcome=\"{}\"}} {n}",
            escape(outcome)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_durations_come_from_the_history_and_runs_from_the_archive() {
        let mut v = serde_json::to_value(PipelineState::idle()).unwrap();
        v["stage"] = serde_json::json!("canary");
        v["stage_history"] = serde_json::json!([
            {"stage": "building", "at": 100.0},
            {"stage": "testing", "at": 112.5},
            {"stage": "signing", "at": 130.0},
            {"stage": "canary", "at": 131.0},
        ]);
        let state: PipelineState = serde_json::from_value(v).unwrap();
        let text = pipeline(&state);
        for line in [
            "fleetgate_pipeline_stage_duration_seconds{stage=\"building\"} 12.500",
            "fleetgate_pipeline_stage_duration_seconds{stage=\"testing\"} 17.500",
            "fleetgate_pipeline_stage_duration_seconds{stage=\"signing\"} 1.000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains("duration_seconds{stage=\"canary\"}"),
            "{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        assert!(archived_runs(&dir.path().join("runs")).is_empty());
        for (name, body) in [
            ("a.json", r#"{"stage": "completed"}"#),
            ("b.json", r#"{"stage": "rolled_back"}"#),
            ("c.json", r#"{"stage": "completed"}"#),
            ("d.json", "not json"),
            ("notes.txt", "ignored"),
        ] {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let by = archived_runs(dir.path());
        let text = runs(&by);
        for line in [
            "fleetgate_runs_total{outcome=\"completed\"} 2",
            "fleetgate_runs_total{outcome=\"rolled_back\"} 1",
            "fleetgate_runs_total{outcome=\"unreadable\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert_eq!(by.values().sum::<u64>(), 4);
    }

    #[test]
    fn the_judges_word_per_criterion_is_exported_for_the_canary_and_a_deploy_step() {
        let mut v = serde_json::to_value(PipelineState::idle()).unwrap();
        v["stage"] = serde_json::json!("deploying");
        let criteria = |llr: f64, decision: &str| {
            serde_json::json!({"criteria": [
                {"criterion": "exception_rate", "decision": decision, "hard": false,
                 "figures": {}, "detail": "",
                 "threshold": {"max_increase": 0.5, "bounds": {"accept": -2.9, "reject": 4.6}},
                 "statistic": {"test": "sequential likelihood ratio", "llr": llr,
                               "node_spread_cv2": 0.04, "ci": [0.1, 0.3]}},
                {"criterion": "heartbeat", "decision": "pass", "hard": true,
                 "figures": {}, "detail": "", "threshold": {}, "statistic": null},
            ]})
        };
        v["gate_results"] = serde_json::json!({
            "canary": {"outcome": "passed", "detail": "ok", "figures": criteria(-3.1, "pass"),
                       "checks": 9, "first_checked_at": 0.5, "last_checked_at": 1.0},
            "deploying": {"outcome": "failed", "detail": "step", "figures": criteria(5.2, "fail"),
                          "checks": 4, "first_checked_at": 1.5, "last_checked_at": 2.0},
        });
        let state: PipelineState = serde_json::from_value(v).unwrap();
        let text = pipeline(&state);
        for line in [
            "fleetgate_canary_criterion{phase=\"canary\",criterion=\"exception_rate\",decision=\"pass\"} 1",
            "fleetgate_canary_criterion{phase=\"canary\",criterion=\"exception_rate\",decision=\"fail\"} 0",
            "fleetgate_canary_criterion{phase=\"deploy_step\",criterion=\"exception_rate\",decision=\"fail\"} 1",
            "fleetgate_canary_criterion{phase=\"canary\",criterion=\"heartbeat\",decision=\"pass\"} 1",
            "fleetgate_canary_statistic{phase=\"canary\",criterion=\"exception_rate\",name=\"llr\"} -3.1",
            "fleetgate_canary_statistic{phase=\"deploy_step\",criterion=\"exception_rate\",name=\"llr\"} 5.2",
            "fleetgate_canary_statistic{phase=\"canary\",criterion=\"exception_rate\",name=\"node_spread_cv2\"} 0.04",
            "fleetgate_canary_threshold{phase=\"canary\",criterion=\"exception_rate\",name=\"bounds.reject\"} 4.6",
            "fleetgate_canary_threshold{phase=\"deploy_step\",criterion=\"exception_rate\",name=\"max_increase\"} 0.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // Text and arrays are not numbers to chart.
        assert!(!text.contains("name=\"test\""), "{text}");
        assert!(!text.contains("name=\"ci"), "{text}");
        // An idle pipeline has the families and no samples.
        let idle = pipeline(&PipelineState::idle());
        assert!(idle.contains("# TYPE fleetgate_canary_statistic gauge"));
        assert!(!idle.contains("fleetgate_canary_statistic{"), "{idle}");
    }

    #[test]
    fn an_idle_pipeline_has_one_stage_set_and_an_empty_outbox() {
        let text = pipeline(&PipelineState::idle());
        assert!(
            text.contains("fleetgate_pipeline_stage{stage=\"idle\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fleetgate_pipeline_stage{stage=\"canary\"} 0"),
            "{text}"
        );
        assert!(text.contains("fleetgate_outbox_depth 0"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("fleetgate_pipeline_stage{") && l.ends_with(" 1"))
                .count(),
            1
        );
    }
}
