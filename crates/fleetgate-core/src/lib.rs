//! fleetgate-core: the pure heart of fleetgate.
//!
//! Where it sits: below every other crate. It owns the stage table, the persisted
//! pipeline state type, the pipeline state machine (`(state, event) -> (state, commands)`),
//! gate verdicts, version validation, benchmark comparison and the config model.
//!
//! What it must never do: I/O of any kind, reading the clock, spawning, or depending on
//! tokio. Time and randomness arrive as values in events, so every decision here is a
//! deterministic function that unit tests can pin exactly.
//!
//! Testing: `cargo nextest run -p fleetgate-core`. The state machine is tested by feeding
//! event sequences and asserting the exact commands and resulting state.

pub mod bench;
pub mod config;
pub mod fleet;
pub mod machine;
pub mod stage;
pub mod state;
pub mod verdict;
pub mod version;

pub use machine::{
    Command, Event, FleetStageProgress, GateFacts, NO_REASON, TransitionError, handle, resume,
};
pub use stage::{OnFailure, RollbackScope, Stage};
pub use state::{
    CompletedRelease, DEFAULT_CHANNEL, Effect, EffectAction, GateRecord, HistoryEntry,
    OperatorAction, PipelineState, SCHEMA_VERSION,
};
pub use verdict::{Outcome, Verdict};
pub use version::{Version, VersionError};

/// `e` with its sources, each once (`error sending request for url (…): client error
/// (Connect): tcp connect error: Connection refused (os error 111)`): an HTTP client's
/// error names the URL, its causes say what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Summary of a JUnit report, and the TEST gate's decision on it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TestCounts {
    /// Test cases that passed.
    pub passed: u64,
    /// Test cases with a failure.
    pub failed: u64,
    /// Test cases with an error.
    pub errored: u64,
    /// Skipped test cases (not counted in the pass rate).
    pub skipped: u64,
}

impl TestCounts {
    /// Tests that ran (passed + failed + errored).
    pub fn ran(&self) -> u64 {
        self.passed + self.failed + self.errored
    }

    /// passed / ran, or None when nothing ran.
    pub fn pass_rate(&self) -> Option<f64> {
        let ran = self.ran();
        (ran > 0).then(|| self.passed as f64 / ran as f64)
    }

    /// The TEST gate's verdict: zero tests is a failure; below `min_pass_rate` fails.
    pub fn verdict(&self, min_pass_rate: f64) -> Verdict {
        let figures = serde_json::json!({
            "passed": self.passed, "failed": self.failed, "errored": self.errored,
            "skipped": self.skipped, "ran": self.ran(), "pass_rate": self.pass_rate(),
            "min_pass_rate": min_pass_rate,
        });
        match self.pass_rate() {
            None => Verdict::failed(
                format!(
                    "no test ran (the report lists {} skipped and nothing else): zero tests is a failure",
                    self.skipped
                ),
                figures,
            ),
            Some(rate) if rate < min_pass_rate => Verdict::failed(
                format!(
                    "pass rate {:.2}% is below the minimum {:.2}% ({} passed, {} failed, {} errored, {} skipped)",
                    rate * 100.0,
                    min_pass_rate * 100.0,
                    self.passed,
                    self.failed,
                    self.errored,
                    self.skipped
                ),
                figures,
            ),
            Some(rate) => Verdict::passed(
                format!(
                    "{} of {} tests passed ({:.2}% ≥ {:.2}%), {} skipped",
                    self.passed,
                    self.ran(),
                    rate * 100.0,
                    min_pass_rate * 100.0,
                    self.skipped
                ),
                figures,
            ),
        }
    }
}

#[cfg(test)]
mod error_chain_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request for url (http://n1/apply)")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_is_named_once() {
        let e = Outer(Middle(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        )));
        assert_eq!(
            super::error_chain(&e),
            "error sending request for url (http://n1/apply): client error (Connect): Connection refused"
        );
        // A source whose words are already in the message is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("reading the body: {0}")]
        struct Echo(#[source] std::io::Error);
        let e = Echo(std::io::Error::other("reset"));
        assert_eq!(super::error_chain(&e), "reading the body: reset");
    }
}
