//! Gate verdicts: what one evaluation of a gate concluded.

use serde::{Deserialize, Serialize};

/// The three outcomes a gate can return. `Pending` never fails a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The gate's condition holds; the run moves to the next stage.
    Passed,
    /// Not decided yet (canary window open, deploy converging): ask again later.
    Pending,
    /// The condition does not hold; the run goes to the stage's failure state.
    Failed,
}

/// One evaluation of a gate: the outcome, a one-line human explanation and the figures
/// it was decided on (counts, rates, thresholds), kept verbatim in the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    /// passed / pending / failed.
    pub outcome: Outcome,
    /// Human explanation; for failures, what failed and the evidence (e.g. an output tail).
    pub detail: String,
    /// Structured figures behind the decision.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub figures: serde_json::Value,
    /// The gate was skipped by an explicit config setting (shown in `status`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

impl Verdict {
    /// A passing verdict.
    pub fn passed(detail: impl Into<String>, figures: serde_json::Value) -> Verdict {
        Verdict {
            outcome: Outcome::Passed,
            detail: detail.into(),
            figures,
            skipped: false,
        }
    }
    /// A pending verdict.
    pub fn pending(detail: impl Into<String>, figures: serde_json::Value) -> Verdict {
        Verdict {
            outcome: Outcome::Pending,
            detail: detail.into(),
            figures,
            skipped: false,
        }
    }
    /// A failing verdict.
    pub fn failed(detail: impl Into<String>, figures: serde_json::Value) -> Verdict {
        Verdict {
            outcome: Outcome::Failed,
            detail: detail.into(),
            figures,
            skipped: false,
        }
    }
    /// A pass granted by an explicit `skip` in the config.
    pub fn skipped(reason: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Passed,
            detail: format!("SKIPPED by config: {}", reason.into()),
            figures: serde_json::Value::Null,
            skipped: true,
        }
    }
}
