//! The HTTP surface the orchestrator's server mounts:
//!
//! * `POST /api/fleet/heartbeat` — body: a [`crate::SignedHeartbeat`]; answers
//!   `{"success": true, "node_id", "seq", "at"}` or `{"success": false, "error"}` with
//!   413 (too large), 400 (malformed), 401 (unsigned, bad signature), 403 (unknown or
//!   removed node), 409 (replayed (epoch, seq), or an epoch jump too large; the answer
//!   then carries `"reason": "replayed"`, `last_epoch` and `last_seq`, so the node can
//!   re-sync with epoch `last_epoch + 1`), 422 (too old / from the future), 429 with
//!   `Retry-After: 1` (the ingest queue is full: nothing was stored), 500 (database).
//!   The answer is `{"success": true, "node_id", "epoch", "seq", "at"}`. Each request
//!   parses its own heartbeat; the signatures are checked in batches across requests
//!   ([`crate::sigbatch`]) and the storing is batched ([`crate::ingest`]: one
//!   transaction for whatever queued up meanwhile); the answer comes after the commit.
//! * `GET /api/fleet/peers` — `{"success": true, "peers": [...]}`.
//! * `GET /api/fleet/peers/{id}` — `{"success": true, "peer": {...}}` or 404.
//! * `GET /healthz` — 200 `ok` while the process serves; `GET /readyz` — 200 `ready` when
//!   the registry answers, else 503 with the reason; `GET /metrics` — Prometheus text
//!   ([`crate::metrics`]): heartbeats accepted and refused by reason, peers by status and
//!   by running version.
//!
//! * `GET /artifacts/{sha256}` ([`artifacts`], mounted by `fleet serve`) — a release's
//!   built file from the orchestrator's content-addressed store, streamed with its
//!   `Content-Length`; 400 for anything but 64 lowercase hex characters, 404 when absent.
//!   With [`artifacts_shared`] (high availability) one the directory lacks is fetched
//!   from the shared run state's files, checked against its name and kept; 503 with
//!   `Retry-After` when that store does not answer.
//!   Nodes check size and digest against the signed manifest, so the route needs no
//!   authentication to be safe (what it serves is public to the fleet).
//!
//! The GET routes expose no secret (public keys, versions, certificates); mount them
//! behind the server's own authentication if peer addresses are sensitive.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::{FleetError, HeartbeatError};
use crate::heartbeat::HeartbeatPolicy;
use crate::metrics::FleetMetrics;
use crate::registry::{Registry, unix_now};

/// Source of the current time (unix seconds); tests and simulations inject their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    policy: HeartbeatPolicy,
    clock: Clock,
    metrics: Arc<FleetMetrics>,
    ingest: Arc<crate::ingest::Ingest>,
    sigs: Arc<crate::sigbatch::SigBatcher>,
}

/// The fleet routes with the default [`HeartbeatPolicy`] and the system clock.
pub fn router(registry: Registry) -> Router {
    router_with(registry, HeartbeatPolicy::default(), Arc::new(unix_now))
}

/// The fleet routes with an explicit policy and clock.
pub fn router_with(registry: Registry, policy: HeartbeatPolicy, clock: Clock) -> Router {
    router_counted(registry, policy, clock, FleetMetrics::new())
}

/// The fleet routes, counting heartbeats into `metrics` (shared with a server that
/// reports them on its own `/metrics`).
pub fn router_counted(
    registry: Registry,
    policy: HeartbeatPolicy,
    clock: Clock,
    metrics: Arc<FleetMetrics>,
) -> Router {
    let limit = policy.max_bytes;
    Router::new()
        .route("/api/fleet/heartbeat", post(post_heartbeat))
        .route("/api/fleet/peers", get(list_peers))
        .route("/api/fleet/peers/{id}", get(show_peer))
        .route("/api/fleet/feed/{id}", get(get_feed))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(AppState {
            ingest: Arc::new(crate::ingest::Ingest::new(
                registry.clone(),
                policy.retention_secs,
                clock.clone(),
            )),
            sigs: Arc::new(crate::sigbatch::SigBatcher::new()),
            registry,
            policy,
            clock,
            metrics,
        })
}

/// `GET /api/fleet/feed/{id}`: the latest signed manifest addressed to node `id`, with
/// `ETag: "<sha256>"`; `304` when `If-None-Match` names it; `404` when nothing was
/// addressed to the node yet. The body is the signed manifest as signed: the node
/// verifies it, so the feed needs no credentials (gossip spreads the same manifests).
async fn get_feed(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(reason) = crate::validate_node_id(&id) {
        return (StatusCode::BAD_REQUEST, format!("node id {reason}\n")).into_response();
    }
    let entry = match st.registry.feed(&id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("no manifest has been addressed to {id} yet\n"),
            )
                .into_response();
        }
        Err(e) => {
            tracing::warn!(node = %id, error = %e, "feed read failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the registry is unavailable\n",
            )
                .into_response();
        }
    };
    let etag = format!("\"{}\"", entry.sha256);
    let unchanged = headers
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let cache = [
        (axum::http::header::ETAG, etag),
        (axum::http::header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        StatusCode::OK,
        cache,
        [(CONTENT_TYPE, "application/json")],
        entry.manifest,
    )
        .into_response()
}

/// `GET /artifacts/{sha256}` from the directory `store` (files named by their SHA-256).
pub fn artifacts(store: std::path::PathBuf) -> Router {
    artifacts_shared(store, None)
}

/// Where [`artifacts_shared`] looks for an artifact its directory lacks: the files
/// stored beside the shared run state `name` in `registry` (high availability: the
/// orchestrator that built the release may be gone, its directory with it).
#[derive(Debug, Clone)]
pub struct SharedArtifacts {
    /// The registry holding the shared run state.
    pub registry: Registry,
    /// The shared run state's name.
    pub name: String,
}

struct ArtifactStore {
    dir: std::path::PathBuf,
    shared: Option<SharedArtifacts>,
    /// One fetch from the shared store at a time: nodes asking for the same missing
    /// artifact at once wait for the first fetch instead of each holding a copy.
    fetching: tokio::sync::Mutex<()>,
}

/// [`artifacts`], and an artifact missing from `store` is fetched from `shared` (when
/// given), checked against its name, kept in `store` and served.
pub fn artifacts_shared(store: std::path::PathBuf, shared: Option<SharedArtifacts>) -> Router {
    Router::new()
        .route("/artifacts/{sha256}", get(get_artifact))
        .with_state(Arc::new(ArtifactStore {
            dir: store,
            shared,
            fetching: tokio::sync::Mutex::new(()),
        }))
}

async fn get_artifact(
    State(store): State<Arc<ArtifactStore>>,
    Path(sha256): Path<String>,
) -> Response {
    if !fleetgate_trust::is_sha256_hex(&sha256) {
        return (
            StatusCode::BAD_REQUEST,
            "an artifact is named by its SHA-256: 64 lowercase hex characters\n",
        )
            .into_response();
    }
    let path = store.dir.join(&sha256);
    if let Some(r) = serve_file(&path).await {
        return r;
    }
    let Some(shared) = &store.shared else {
        return (StatusCode::NOT_FOUND, "no such artifact\n").into_response();
    };
    let _one = store.fetching.lock().await;
    if let Some(r) = serve_file(&path).await {
        return r; // fetched by the request before this one
    }
    let file = match shared
        .registry
        .shared_file(&shared.name, &format!("artifacts/{sha256}"))
        .await
    {
        Ok(Some(f)) => f,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such artifact\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "an artifact could not be read from the shared store");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(RETRY_AFTER, "5")],
                "the shared store does not answer; retry\n",
            )
                .into_response();
        }
    };
    let bytes = match file.content() {
        Ok(b) if fleetgate_trust::provenance::sha256_hex(&b) == sha256 => b,
        Ok(_) | Err(_) => {
            tracing::warn!(artifact = %sha256, "the shared store's copy of an artifact is damaged: not served");
            return (StatusCode::NOT_FOUND, "no such artifact\n").into_response();
        }
    };
    // Kept for the next node (a temporary name of this process's own, then renamed: a
    // file under its digest is always whole, even with two servers on one directory; a
    // kill in between leaves only a dot-file, which the state mirror ignores). A failure
    // to keep it does not stop this answer.
    let tmp = store
        .dir
        .join(format!(".{sha256}.fetch-{}", std::process::id()));
    let kept = tokio::fs::create_dir_all(&store.dir).await.is_ok()
        && tokio::fs::write(&tmp, &bytes).await.is_ok()
        && tokio::fs::rename(&tmp, &path).await.is_ok();
    if !kept {
        let _ = tokio::fs::remove_file(&tmp).await;
        tracing::warn!(artifact = %sha256, dir = %store.dir.display(), "an artifact fetched from the shared store could not be kept");
    }
    let len = bytes.len();
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "application/octet-stream".to_owned()),
            (axum::http::header::CONTENT_LENGTH, len.to_string()),
        ],
        bytes,
    )
        .into_response()
}

/// The file at `path`, streamed, if it is one.
async fn serve_file(path: &std::path::Path) -> Option<Response> {
    let file = tokio::fs::File::open(path).await.ok()?;
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return None,
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Some(
        (
            StatusCode::OK,
            [
                (CONTENT_TYPE, "application/octet-stream".to_owned()),
                (axum::http::header::CONTENT_LENGTH, len.to_string()),
            ],
            body,
        )
            .into_response(),
    )
}

/// `/healthz`, `/readyz` and `/metrics` of a server whose only job is the fleet endpoint
/// (`fleetgate fleet serve`).
pub fn probes(registry: Registry, metrics: Arc<FleetMetrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(
                |State((registry, _)): State<(Registry, Arc<FleetMetrics>)>| async move {
                    ready(&registry).await
                },
            ),
        )
        .route(
            "/metrics",
            get(
                |State((registry, metrics)): State<(Registry, Arc<FleetMetrics>)>| async move {
                    match metrics.render(&registry).await {
                        Ok(text) => (StatusCode::OK, [(CONTENT_TYPE, METRICS_TYPE)], text),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                            format!("the fleet registry does not answer: {e}\n"),
                        ),
                    }
                },
            ),
        )
        .with_state((registry, metrics))
}

/// The Prometheus text exposition format's content type.
pub const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Liveness: the process serves.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the registry answers a query.
pub async fn ready(registry: &Registry) -> (StatusCode, String) {
    match registry.list_peers().await {
        Ok(_) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the fleet registry does not answer: {e}\n"),
        ),
    }
}

fn fail(status: StatusCode, message: String) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"success": false, "error": message})))
}

/// HTTP status for a refused heartbeat.
pub fn status_for(err: &HeartbeatError) -> StatusCode {
    match err {
        HeartbeatError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        HeartbeatError::Malformed(_) => StatusCode::BAD_REQUEST,
        HeartbeatError::Unsigned { .. } | HeartbeatError::BadSignature { .. } => {
            StatusCode::UNAUTHORIZED
        }
        HeartbeatError::UnknownNode(_) | HeartbeatError::Removed(_) => StatusCode::FORBIDDEN,
        HeartbeatError::Replayed { .. } | HeartbeatError::EpochJump { .. } => StatusCode::CONFLICT,
        HeartbeatError::TooOld { .. } | HeartbeatError::FromFuture { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        HeartbeatError::Registry(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn post_heartbeat(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            state.metrics.refused("too_large");
            let (status, body) = fail(
                rejection.status(),
                format!(
                    "heartbeat refused: {} (limit {} bytes)",
                    rejection.body_text(),
                    state.policy.max_bytes
                ),
            );
            return (status, body).into_response();
        }
    };
    // Verified here (the signatures in batches across requests, by the endpoint's
    // checkers), stored by the ingest writer in batches (one commit per batch); a
    // full queue is refused at once (429).
    let verified = state
        .registry
        .verify_heartbeat_batched(&body, &state.policy, (state.clock)(), &state.sigs)
        .await;
    let stored = match verified {
        Ok(v) => match state.ingest.submit(v).await {
            Ok(r) => r,
            Err(crate::ingest::Overloaded) => {
                state.metrics.refused("overloaded");
                let (status, body) = fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    "heartbeat refused: the fleet endpoint's ingest queue is full; retry after 1 s"
                        .into(),
                );
                return (status, [(RETRY_AFTER, "1")], body).into_response();
            }
        },
        Err(e) => Err(e),
    };
    answer(&state, stored).into_response()
}

fn answer(
    state: &AppState,
    stored: Result<crate::HeartbeatRecord, HeartbeatError>,
) -> (StatusCode, Json<Value>) {
    match stored {
        Ok(rec) => {
            state.metrics.accepted();
            (
                StatusCode::OK,
                Json(
                    json!({"success": true, "node_id": rec.node_id, "epoch": rec.epoch, "seq": rec.seq, "at": rec.at}),
                ),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat refused");
            state.metrics.refused(crate::metrics::refusal_reason(&e));
            let (status, mut body) = fail(status_for(&e), e.to_string());
            // What the node needs to re-sync (its own numbers; nothing secret).
            let last = match &e {
                HeartbeatError::Replayed {
                    last_epoch,
                    last_seq,
                    ..
                } => Some((*last_epoch, *last_seq)),
                HeartbeatError::EpochJump { last_epoch, .. } => Some((*last_epoch, 0)),
                _ => None,
            };
            if let (Some((epoch, seq)), Some(o)) = (last, body.0.as_object_mut()) {
                o.insert("reason".into(), json!("replayed"));
                o.insert("last_epoch".into(), json!(epoch));
                o.insert("last_seq".into(), json!(seq));
            }
            (status, body)
        }
    }
}

async fn list_peers(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.registry.list_peers().await {
        Ok(peers) => (
            StatusCode::OK,
            Json(json!({"success": true, "peers": peers})),
        ),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn show_peer(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    match state.registry.peer(&id).await {
        Ok(peer) => (StatusCode::OK, Json(json!({"success": true, "peer": peer}))),
        Err(e @ FleetError::UnknownPeer(_)) => fail(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
