//! The agent's HTTP endpoint (axum).
//!
//! * `POST /apply` — body: the signed manifest bytes (at most 64 KiB, refused before
//!   reading further). Answers the JSON [`crate::ApplyReport`]:
//!   200 when the apply ended `applied` or `noop`; 422 when it ended `failed` or
//!   `rolled_back` (the release was bad; the previous version runs); 409 `refused` for a
//!   release that already failed here. Refusals before anything is done answer
//!   `{"success": false, "error": "<message>", "reason": "<name>"}`: 413 `too_large`,
//!   400 `malformed`, 401 `unsigned` / `bad_signature` / `unknown_key` /
//!   `below_threshold` / `dev_mode`, 422 `expired` / `not_yet_valid` / `bad_rollback`,
//!   409 `replayed` (sequence at or below the floor), 409 `busy` (another apply runs:
//!   applies are never queued; retry), 500 `internal`.
//! * `GET /status` — [`crate::Status`].
//! * `GET /health` — the agent's own liveness: `{"success": true, "node_id", "version"}`.
//!
//! The apply itself is authenticated by the manifest's signatures (trust keyring,
//! threshold, expiry, anti-rollback floor); there is no other way in.

use crate::agent::{Agent, ApplyError};
use crate::machine::Outcome;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use fleetgate_trust::{MAX_MANIFEST_BYTES, VerifyError};
use serde_json::{Value, json};

/// The agent's routes.
pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/apply", post(apply))
        .route("/status", get(status))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES))
        .with_state(agent)
}

fn refuse(status: StatusCode, reason: &str, error: String) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"success": false, "reason": reason, "error": error})),
    )
}

/// HTTP status of a refused apply.
#[must_use]
pub fn status_for(e: &ApplyError) -> StatusCode {
    match e {
        ApplyError::Verify(v) => match v {
            VerifyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            VerifyError::Malformed { .. } => StatusCode::BAD_REQUEST,
            VerifyError::Unsigned { .. }
            | VerifyError::BadSignature { .. }
            | VerifyError::UnknownKey { .. }
            | VerifyError::BelowThreshold { .. }
            | VerifyError::DevMode => StatusCode::UNAUTHORIZED,
            VerifyError::Expired { .. } | VerifyError::NotYetValid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            VerifyError::Replayed { .. } => StatusCode::CONFLICT,
        },
        ApplyError::BadRollback { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ApplyError::Busy { .. } => StatusCode::CONFLICT,
        ApplyError::Agent(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn apply(
    State(agent): State<Agent>,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, Json<Value>) {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "malformed"
            };
            return refuse(
                status,
                reason,
                format!(
                    "manifest refused: {} (limit {MAX_MANIFEST_BYTES} bytes)",
                    rejection.body_text()
                ),
            );
        }
    };
    match agent.apply(&body).await {
        Ok(report) => {
            let status = match report.outcome {
                Outcome::Applied | Outcome::Noop => StatusCode::OK,
                Outcome::Refused => StatusCode::CONFLICT,
                Outcome::Failed | Outcome::RolledBack | Outcome::Interrupted => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            let body = serde_json::to_value(&report).unwrap_or(Value::Null);
            (status, Json(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "apply refused");
            refuse(status_for(&e), e.reason(), e.to_string())
        }
    }
}

async fn status(State(agent): State<Agent>) -> Json<Value> {
    let mut v = serde_json::to_value(agent.status()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("success".into(), Value::Bool(true));
    }
    Json(v)
}

async fn health(State(agent): State<Agent>) -> Json<Value> {
    let s = agent.status();
    Json(json!({"success": true, "node_id": s.node_id, "version": s.version}))
}
