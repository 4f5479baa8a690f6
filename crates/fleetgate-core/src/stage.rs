//! The stages of a run and the fixed shape of the pipeline (the SPEC's table).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A persisted pipeline state name. The serialised names are HART's, lowercase.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Resting: no run in progress.
    Idle,
    /// BUILD gate: code hash computed, build command exits 0.
    Building,
    /// TEST gate: JUnit report read, pass rate ≥ `min_pass_rate`.
    Testing,
    /// AUDIT gate: audit command exits 0, guardrail files match their pins.
    Auditing,
    /// BENCHMARK gate: no regression against the last completed version.
    Benchmarking,
    /// SIGN gate: manifest built, signed, verified against the trust keys.
    Signing,
    /// CANARY gate: the canary sample stays healthy for the whole window.
    Canary,
    /// DEPLOY gate: the rest of the fleet has applied the manifest.
    Deploying,
    /// Terminal: every stage passed.
    Completed,
    /// Terminal: rolled back (by a gate or by an operator).
    RolledBack,
    /// Terminal: a gate failed before any node was touched.
    Failed,
}

/// What a gated stage does when its gate fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// End the run `failed`.
    Fail,
    /// End the run `rolled_back`, with no node to tell (nothing was sent yet).
    RollBack,
    /// End the run `rolled_back` and send a rollback order to the given nodes.
    RollBackAndNotify(RollbackScope),
}

/// Which nodes must receive the rollback order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RollbackScope {
    /// Only the canary nodes received the release.
    Canary,
    /// The release went (or may have gone) to the whole fleet.
    All,
}

impl Stage {
    /// The gated stages, in pipeline order.
    pub const GATED: [Stage; 7] = [
        Stage::Building,
        Stage::Testing,
        Stage::Auditing,
        Stage::Benchmarking,
        Stage::Signing,
        Stage::Canary,
        Stage::Deploying,
    ];

    /// Every state, for listings and schemas.
    pub const ALL: [Stage; 11] = [
        Stage::Idle,
        Stage::Building,
        Stage::Testing,
        Stage::Auditing,
        Stage::Benchmarking,
        Stage::Signing,
        Stage::Canary,
        Stage::Deploying,
        Stage::Completed,
        Stage::RolledBack,
        Stage::Failed,
    ];

    /// The persisted (HART) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Idle => "idle",
            Stage::Building => "building",
            Stage::Testing => "testing",
            Stage::Auditing => "auditing",
            Stage::Benchmarking => "benchmarking",
            Stage::Signing => "signing",
            Stage::Canary => "canary",
            Stage::Deploying => "deploying",
            Stage::Completed => "completed",
            Stage::RolledBack => "rolled_back",
            Stage::Failed => "failed",
        }
    }

    /// The operator-facing gate name (`BUILD`, `TEST`, …) of a gated stage.
    pub const fn gate_name(self) -> &'static str {
        match self {
            Stage::Building => "BUILD",
            Stage::Testing => "TEST",
            Stage::Auditing => "AUDIT",
            Stage::Benchmarking => "BENCHMARK",
            Stage::Signing => "SIGN",
            Stage::Canary => "CANARY",
            Stage::Deploying => "DEPLOY",
            Stage::Idle => "IDLE",
            Stage::Completed => "COMPLETED",
            Stage::RolledBack => "ROLLED_BACK",
            Stage::Failed => "FAILED",
        }
    }

    /// Parse a persisted name.
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `completed`, `rolled_back` or `failed`.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Stage::Completed | Stage::RolledBack | Stage::Failed)
    }

    /// One of the seven gated stages (a run is in progress).
    pub const fn is_gated(self) -> bool {
        match self {
            Stage::Building
            | Stage::Testing
            | Stage::Auditing
            | Stage::Benchmarking
            | Stage::Signing
            | Stage::Canary
            | Stage::Deploying => true,
            Stage::Idle | Stage::Completed | Stage::RolledBack | Stage::Failed => false,
        }
    }

    /// A new run may start from here.
    pub const fn can_start(self) -> bool {
        matches!(self, Stage::Idle) || self.is_terminal()
    }

    /// Where a passed gate leads.
    pub const fn next(self) -> Option<Stage> {
        match self {
            Stage::Building => Some(Stage::Testing),
            Stage::Testing => Some(Stage::Auditing),
            Stage::Auditing => Some(Stage::Benchmarking),
            Stage::Benchmarking => Some(Stage::Signing),
            Stage::Signing => Some(Stage::Canary),
            Stage::Canary => Some(Stage::Deploying),
            Stage::Deploying => Some(Stage::Completed),
            Stage::Idle | Stage::Completed | Stage::RolledBack | Stage::Failed => None,
        }
    }

    /// What a failed gate does (the SPEC's "on failure" column).
    pub const fn on_failure(self) -> Option<OnFailure> {
        match self {
            Stage::Building | Stage::Testing | Stage::Auditing | Stage::Signing => {
                Some(OnFailure::Fail)
            }
            Stage::Benchmarking => Some(OnFailure::RollBack),
            Stage::Canary => Some(OnFailure::RollBackAndNotify(RollbackScope::Canary)),
            Stage::Deploying => Some(OnFailure::RollBackAndNotify(RollbackScope::All)),
            Stage::Idle | Stage::Completed | Stage::RolledBack | Stage::Failed => None,
        }
    }

    /// Which nodes have (possibly) received the release while the run sits in this stage,
    /// and so must be told when it is rolled back by hand.
    pub const fn rollback_scope(self) -> Option<RollbackScope> {
        match self {
            Stage::Canary => Some(RollbackScope::Canary),
            Stage::Deploying => Some(RollbackScope::All),
            Stage::Idle
            | Stage::Building
            | Stage::Testing
            | Stage::Auditing
            | Stage::Benchmarking
            | Stage::Signing
            | Stage::Completed
            | Stage::RolledBack
            | Stage::Failed => None,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_spec() {
        // (stage, next on pass, state on failure) — the SPEC's pipeline table.
        let table = [
            (Stage::Building, Stage::Testing, Stage::Failed),
            (Stage::Testing, Stage::Auditing, Stage::Failed),
            (Stage::Auditing, Stage::Benchmarking, Stage::Failed),
            (Stage::Benchmarking, Stage::Signing, Stage::RolledBack),
            (Stage::Signing, Stage::Canary, Stage::Failed),
            (Stage::Canary, Stage::Deploying, Stage::RolledBack),
            (Stage::Deploying, Stage::Completed, Stage::RolledBack),
        ];
        for (stage, next, fail) in table {
            assert_eq!(stage.next(), Some(next), "{stage}");
            let on_fail = match stage.on_failure() {
                Some(OnFailure::Fail) => Stage::Failed,
                Some(OnFailure::RollBack | OnFailure::RollBackAndNotify(_)) => Stage::RolledBack,
                None => panic!("{stage} has no failure target"),
            };
            assert_eq!(on_fail, fail, "{stage}");
        }
        assert_eq!(Stage::GATED.len(), table.len());
    }

    #[test]
    fn names_round_trip_and_are_hart_names() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "idle",
                "building",
                "testing",
                "auditing",
                "benchmarking",
                "signing",
                "canary",
                "deploying",
                "completed",
                "rolled_back",
                "failed"
            ]
        );
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(Stage::parse("BUILDING"), None);
    }
}
