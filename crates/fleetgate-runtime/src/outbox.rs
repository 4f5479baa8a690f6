//! The outbox by hand (`fleetgate outbox list|retry|abandon`): what is queued, deliver it
//! again now, or give up on it with a reason that stays in the run's history. These need
//! the state directory only; `retry` delivers through [`Orchestrator::deliver_outbox`].

use crate::orchestrator::{Orchestrator, Progress};
use crate::{RuntimeError, now};
use fleetgate_core::{EffectAction, Event, PipelineState, Stage, TransitionError, handle};
use fleetgate_store::TransactError;
use serde::Serialize;

/// One queued effect, as `fleetgate outbox list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// The effect's id (`<run_id>-<n>`).
    pub id: String,
    /// What it does (`{"kind": "send_rollback", "scope": …, "reason": …}`).
    pub action: EffectAction,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
    /// The run it belongs to.
    pub run_id: Option<String>,
    /// That run's version.
    pub version: String,
    /// That run's stage now.
    pub stage: Stage,
}

/// What `outbox retry` achieved for the effect asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RetryOutcome {
    /// Delivered; it left the outbox.
    Delivered {
        /// What was done.
        note: String,
    },
    /// Not delivered; it stays queued.
    Failed {
        /// Why.
        error: String,
    },
    /// It can never be delivered; it left the outbox and the reason is in the run's
    /// `failure_detail`.
    Abandoned {
        /// Why.
        reason: String,
    },
}

/// The result of [`Orchestrator::outbox_retry`].
#[derive(Debug, Clone)]
pub struct RetryReport {
    /// The effect asked about.
    pub id: String,
    /// What happened to it.
    pub outcome: RetryOutcome,
    /// The state afterwards.
    pub state: PipelineState,
}

impl Orchestrator {
    /// The effects still queued in the outbox, in order.
    pub fn outbox_list(&self) -> Result<Vec<OutboxEntry>, RuntimeError> {
        Ok(entries(&self.store().load()?))
    }

    /// Deliver outbox effect `id` again now: its attempt count and last error are cleared
    /// ([`Event::EffectRetry`]), then the outbox is delivered (every queued effect is
    /// tried, `id` among them). An unknown id is an error listing the known ones.
    pub fn outbox_retry(
        &self,
        id: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<RetryReport, RuntimeError> {
        self.store()
            .transact(|s| handle(s, Event::EffectRetry { id: id.to_owned() }).map(|_| ()))
            .map_err(flatten)?;
        let mut outcome = None;
        let state = self.deliver_outbox(&mut |p| {
            match &p {
                Progress::Delivered { id: i, note } if i == id => {
                    outcome = Some(RetryOutcome::Delivered { note: note.clone() });
                }
                Progress::DeliveryFailed { id: i, error } if i == id => {
                    outcome = Some(RetryOutcome::Failed {
                        error: error.clone(),
                    });
                }
                Progress::Abandoned { id: i, reason } if i == id => {
                    outcome = Some(RetryOutcome::Abandoned {
                        reason: reason.clone(),
                    });
                }
                _ => {}
            }
            progress(p)
        })?;
        let outcome = match outcome {
            Some(o) => o,
            // Not reported (another process acknowledged it meanwhile): judge by the state.
            None => match state.outbox.iter().find(|e| e.id == id) {
                Some(e) => RetryOutcome::Failed {
                    error: e
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not attempted".to_owned()),
                },
                None => RetryOutcome::Delivered {
                    note: "no longer queued".to_owned(),
                },
            },
        };
        Ok(RetryReport {
            id: id.to_owned(),
            outcome,
            state,
        })
    }

    /// Give up on outbox effect `id`: it leaves the outbox, and the reason and who gave up
    /// ([`operator`]) are recorded in the run's `stage_history` and `failure_detail`
    /// ([`Event::EffectAbandonedBy`]). The run is archived again with the record. An unknown
    /// id is an error listing the known ones; an empty reason is refused.
    pub fn outbox_abandon(&self, id: &str, reason: &str) -> Result<PipelineState, RuntimeError> {
        let by = operator();
        let state = self
            .store()
            .transact(|s| {
                handle(
                    s,
                    Event::EffectAbandonedBy {
                        id: id.to_owned(),
                        reason: reason.to_owned(),
                        by: by.clone(),
                        now: now(),
                    },
                )
                .map(|_| s.clone())
            })
            .map_err(flatten)?;
        if state.run_id.is_some() && !state.stage.is_gated() {
            self.store().archive_run(&state)?;
        }
        Ok(state)
    }
}

/// The queued effects of `state`, with the run they belong to.
pub fn entries(state: &PipelineState) -> Vec<OutboxEntry> {
    state
        .outbox
        .iter()
        .map(|e| OutboxEntry {
            id: e.id.clone(),
            action: e.action.clone(),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            run_id: state.run_id.clone(),
            version: state.version.clone(),
            stage: state.stage,
        })
        .collect()
}

/// Who is acting, for the record: `operator <login>` from `$USER` or `$LOGNAME`.
pub fn operator() -> String {
    let login = ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    match login {
        Some(name) => format!("operator {}", name.trim()),
        None => "an operator (login unknown)".to_owned(),
    }
}

fn flatten(e: TransactError<TransitionError>) -> RuntimeError {
    match e {
        TransactError::Store(s) => RuntimeError::Store(s),
        TransactError::Rejected(t) => RuntimeError::Transition(t),
    }
}
