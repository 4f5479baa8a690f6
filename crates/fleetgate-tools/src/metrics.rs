//! The pipeline's Prometheus metrics for `fleetgate serve`'s `/metrics` (text exposition
//! format 0.0.4), rendered from the state file: which stage the run is at, since when,
//! each gate's latest outcome, the outbox depth, whether the run is paused. The fleet's
//! own metrics (heartbeats, peers) come from [`fleetgate_fleet::metrics`] and follow.

use std::fmt::Write as _;

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
    if let Some(last) = &state.last_completed {
        let _ = writeln!(
            out,
            "# HELP fleetgate_last_completed_info The last release that completed (the one a rollback returns to).\n# TYPE fleetgate_last_completed_info gauge\nfleetgate_last_completed_info{{version=\"{}\"}} 1",
            escape(&last.version)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
