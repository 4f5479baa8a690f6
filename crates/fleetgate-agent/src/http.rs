//! The agent's HTTP endpoint (axum).
//!
//! * `POST /apply` — body: the signed manifest bytes (at most 64 KiB, refused before
//!   reading further). The answer says what the node runs now, so a caller can decide
//!   from it (and repeat a request safely):
//!
//! | status | body | when |
//! |---|---|---|
//! | 200 | [`crate::ApplyReport`], `outcome` `applied` | the manifest was applied and committed |
//! | 200 | report, `noop` | already on that code hash, or a rollback order for a release this node does not run: nothing restarted, floor raised to its sequence |
//! | 200 | report, `already_applied` | this exact manifest (same SHA-256) was committed or no-op'd here and what it left running still runs: nothing done |
//! | 409 | report, `refused` | a release that already failed here (never retried) |
//! | 422 | report, `failed` / `rolled_back` / `interrupted` | the release was bad (or the apply was cut short); the previous version runs (`running`) |
//! | 409 | `{"success": false, "reason": "replayed", "error", "floor": u64, "running": Installed \| null}` | sequence at or below the floor and not already applied (older, superseded or revoked) |
//! | 503 + `Retry-After: 1` | `{"success": false, "reason": "busy", "retryable": true, "error", "phase"}` | another apply runs (never queued): retry |
//! | 413 | refusal, `too_large` | body over 64 KiB |
//! | 400 | refusal, `malformed` | not a manifest |
//! | 401 | refusal, `unsigned` / `bad_signature` / `unknown_key` / `below_threshold` / `dev_mode` | not trusted |
//! | 422 | refusal, `expired` / `not_yet_valid` / `bad_rollback` | not valid now, or a rollback the node cannot follow |
//! | 500 | refusal, `internal` | journal or task failure |
//! | 429 + `Retry-After` | `{"success": false, "error_kind": "rate_limited", "error"}` | more requests from one source address than [`fleetgate_net::limit::AGENT_LIMIT`] allows (any route; checked first) |
//!
//!   A refusal is `{"success": false, "reason": "<snake_case>", "error": "<message>"}`
//!   (plus the fields shown above); a report has `success`, `outcome`, `kind`,
//!   `sequence`, `version`, `code_hash`, `running`, `failed_phase`, `detail`, `at`.
//! * `GET /status` — [`crate::Status`].
//! * `GET /health` — the agent's own liveness: `{"success": true, "node_id", "version"}`.
//! * `GET /healthz` — 200 `ok` while the agent serves (liveness). `GET /readyz` — 200
//!   `ready` when the node can take traffic: its app runs, its last health check passed
//!   and no apply is in progress; else 503 with the reason (a load balancer's check).
//! * `GET /metrics` — Prometheus text format ([`crate::metrics`]): applies by outcome,
//!   refusals by reason, heartbeat counters, what runs, the floor, health.
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
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetgate_trust::{MAX_MANIFEST_BYTES, VerifyError};
use serde_json::{Value, json};

/// The agent's routes.
pub fn router(agent: Agent) -> Router {
    let routes = Router::new()
        .route("/apply", post(apply))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES))
        .with_state(agent);
    fleetgate_net::limit::per_source(routes, fleetgate_net::limit::AGENT_LIMIT)
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
        ApplyError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ApplyError::SelfUpdate {
            retryable: true, ..
        } => StatusCode::SERVICE_UNAVAILABLE,
        ApplyError::SelfUpdate { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ApplyError::Agent(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// HTTP status of a finished apply.
#[must_use]
pub fn status_for_outcome(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Applied | Outcome::Noop | Outcome::AlreadyApplied => StatusCode::OK,
        Outcome::Refused => StatusCode::CONFLICT,
        Outcome::Failed | Outcome::RolledBack | Outcome::Interrupted => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

/// Seconds a `busy` caller should wait before retrying.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;
/// Seconds a caller should wait before offering an agent update again whose build could
/// not be fetched or which waits for another update to settle.
pub const SELF_UPDATE_RETRY_AFTER_SECS: u64 = 10;

fn refusal(agent: &Agent, e: &ApplyError) -> Response {
    let mut body = json!({"success": false, "reason": e.reason(), "error": e.to_string()});
    match e {
        ApplyError::Verify(VerifyError::Replayed { floor, .. }) => {
            body["floor"] = json!(floor);
            body["running"] = serde_json::to_value(agent.journal().current).unwrap_or(Value::Null);
        }
        ApplyError::Busy { phase } => {
            body["retryable"] = Value::Bool(true);
            body["phase"] = Value::String(phase.clone());
            let mut r = (status_for(e), Json(body)).into_response();
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(BUSY_RETRY_AFTER_SECS),
            );
            return r;
        }
        ApplyError::SelfUpdate {
            retryable: true, ..
        } => {
            body["retryable"] = Value::Bool(true);
            let mut r = (status_for(e), Json(body)).into_response();
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(SELF_UPDATE_RETRY_AFTER_SECS),
            );
            return r;
        }
        ApplyError::Verify(_)
        | ApplyError::BadRollback { .. }
        | ApplyError::SelfUpdate { .. }
        | ApplyError::Agent(_) => {}
    }
    (status_for(e), Json(body)).into_response()
}

async fn apply(State(agent): State<Agent>, body: Result<Bytes, BytesRejection>) -> Response {
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
            )
            .into_response();
        }
    };
    match agent.apply(&body).await {
        Ok(report) => {
            let body = serde_json::to_value(&report).unwrap_or(Value::Null);
            (status_for_outcome(report.outcome), Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "apply refused");
            refusal(&agent, &e)
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

async fn metrics(State(agent): State<Agent>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        agent.metrics(),
    )
        .into_response()
}

async fn readyz(State(agent): State<Agent>) -> (StatusCode, String) {
    let s = agent.status();
    let why = if let Some(phase) = &s.apply_phase {
        Some(format!("an apply is in progress ({phase:?})"))
    } else if !s.app_running {
        Some("the app is not running".to_owned())
    } else if !s.healthy {
        Some("the app's last health check failed".to_owned())
    } else {
        None
    };
    match why {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(w) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {w}\n")),
    }
}

async fn health(State(agent): State<Agent>) -> Json<Value> {
    let s = agent.status();
    Json(json!({"success": true, "node_id": s.node_id, "version": s.version}))
}
