//! The HTTP API (`fleetgate serve`): the tools over HTTP, JSON in and out, plus the
//! fleet routes nodes heartbeat to, and an OpenAPI 3.1 description.
//!
//! Routes (every tool route answers what [`Toolbox::call`] returns):
//!
//! | method | path | tool |
//! |---|---|---|
//! | GET  | `/api/upgrades/status` | `check_upgrade_status` |
//! | POST | `/api/upgrades/start` | `start_upgrade` (`{"new_version", "git_sha"?}`) |
//! | POST | `/api/upgrades/advance` | `advance_upgrade_pipeline` (empty body or `{}`) |
//! | POST | `/api/upgrades/rollback` | `rollback_upgrade` (`{"reason"?}`) |
//! | POST | `/api/upgrades/pause` | `pause_upgrade` (`{"reason"?}`) |
//! | POST | `/api/upgrades/approve` | `approve_upgrade` (`{"approval"?, "stage"?, "reason"?}`) |
//! | POST | `/api/upgrades/resume` | `resume_upgrade` (`{"reason"?}`) |
//! | POST | `/api/upgrades/promote` | `promote_upgrade` (`{"reason"?}`) |
//! | GET  | `/api/upgrades/canary-health` | `check_canary_health` |
//! | GET  | `/api/benchmarks` | `list_benchmarks` |
//! | POST | `/api/benchmarks` | `register_benchmark` |
//! | GET  | `/api/benchmarks/history` | `get_benchmark_history` |
//! | GET  | `/api/benchmarks/compare?old_version=&new_version=` | `compare_benchmarks` |
//! | POST | `/api/benchmarks/capture` | `capture_benchmark` |
//! | POST | `/api/tools/{name}` | any tool, arguments as the body |
//! | POST | `/api/fleet/heartbeat` | a node's signed heartbeat ([`fleetgate_fleet::http`]) |
//! | GET  | `/api/fleet/peers`, `/api/fleet/peers/{id}` | the registry's peers |
//! | GET  | `/api/openapi.json` | this API's OpenAPI 3.1 document (always open) |
//! | GET  | `/metrics` | Prometheus text: the pipeline ([`crate::metrics`]) and the fleet (a read) |
//! | GET  | `/healthz`, `/readyz` | liveness; readiness (state file and registry answer); open |
//!
//! GET routes take their arguments from the query string (each parameter a string
//! field); POST routes from the JSON body (an empty body means `{}`).
//!
//! Statuses: 200 the tool succeeded; when it answered `success: false` (the body is
//! passed through), by its `error_kind`: 409 `locked` (another orchestrator) or `refused`
//! (a run is active, nothing to roll back), 404 `not_found` (no such snapshot), 500 `config` or `corrupt_state` (the server's own files), 422 otherwise
//! (`invalid_arguments`, `failed`); 400 a body that is not JSON or a malformed query; 401 a missing or wrong
//! bearer token (with `WWW-Authenticate: Bearer`; nothing was run); 404 an unknown route
//! or tool; 405 a wrong method; 413 a body over [`MAX_BODY_BYTES`]; 429 more requests
//! from one source address than [`fleetgate_fleet::limit::API_LIMIT`] allows (with
//! `Retry-After`, `error_kind` `rate_limited`; checked first, nothing was run; serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`); 503 more than
//! [`MAX_CONCURRENT_CALLS`] tool calls already running (`error_kind` `busy`, with
//! `Retry-After`; nothing was run). Every body is JSON
//! (`{"success": false, "error": "...", "error_kind": "..."}` on error; the answers given
//! before any tool runs carry `invalid_request` (400), `unauthorized` (401), `not_found`
//! (404), `method_not_allowed` (405), `too_large` (413), `rate_limited` (429) or `busy`
//! (503)).
//!
//! Invariants:
//! - Every route that changes something requires `Authorization: Bearer <token>`,
//!   compared in constant time ([`ApiAuth`]); the check runs before the body is read, so
//!   an unauthenticated request runs nothing. Reads (GET, and read-only tools through
//!   `/api/tools/{name}`) need it too unless the server was started with open reads.
//!   The only exceptions: `/api/openapi.json`, and `POST /api/fleet/heartbeat`, which
//!   carries its own Ed25519 signature by an enrolled node key, verified by
//!   `fleetgate-fleet`.
//! - Tool calls block (gate commands run for minutes), so they run on tokio's blocking
//!   pool, never on an async worker (the fleet gates start their own runtime and would
//!   panic there). A call that has started runs to its end even if the client goes away:
//!   its verdict is committed by compare-and-swap like any other.
//! - No input makes a handler panic; the token is never logged, echoed or Debug-printed.
//!
//! Parts: this module holds the router and its handlers; `auth` the token policy
//! ([`ApiAuth`]); `openapi` the route table both build from and [`openapi`]'s document.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::{ErrorKind, Toolbox, definitions, find};

mod auth;
mod openapi;

pub use auth::{ApiAuth, AuthError, MAX_TOKEN_BYTES, MIN_TOKEN_CHARS};
pub use openapi::openapi;
use openapi::ops;

/// The largest request body accepted (413 above). Heartbeats have their own, smaller
/// limit ([`fleetgate_fleet::HeartbeatPolicy::max_bytes`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How many tool calls may run at once; further calls get 503 with `Retry-After`.
pub const MAX_CONCURRENT_CALLS: usize = 16;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Changes nothing: open when `open_reads`.
    Read,
    /// Changes state: always needs the token.
    Mutate,
}

struct App {
    toolbox: Toolbox,
    auth: ApiAuth,
    calls: Arc<Semaphore>,
    openapi: Value,
    registry: Option<fleetgate_fleet::Registry>,
    fleet_metrics: Arc<fleetgate_fleet::metrics::FleetMetrics>,
}

type Shared = Arc<App>;

/// The API: the tool routes over `toolbox`, the fleet routes over `registry` (without
/// one they answer 503), and `/api/openapi.json`, guarded by `auth`.
pub fn router(
    toolbox: Toolbox,
    registry: Option<fleetgate_fleet::Registry>,
    auth: ApiAuth,
) -> Router {
    let fleet_metrics = fleetgate_fleet::metrics::FleetMetrics::new();
    let policy = toolbox.heartbeat_policy();
    let app: Shared = Arc::new(App {
        toolbox,
        openapi: openapi(auth.open_reads()),
        auth,
        calls: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
        registry: registry.clone(),
        fleet_metrics: fleet_metrics.clone(),
    });

    let mut by_path: BTreeMap<&'static str, MethodRouter<Shared>> = BTreeMap::new();
    for op in ops() {
        let tool = op.tool;
        let entry = by_path.remove(op.path).unwrap_or_default();
        let entry = if op.method == Method::GET {
            entry.get(move |State(app): State<Shared>, req: Request| {
                call_route(app, tool, ArgsIn::Query, req)
            })
        } else {
            entry.post(move |State(app): State<Shared>, req: Request| {
                call_route(app, tool, ArgsIn::Body, req)
            })
        };
        by_path.insert(op.path, entry);
    }
    let mut api = Router::new();
    for (path, mr) in by_path {
        api = api.route(path, mr);
    }
    let api = api
        .route("/api/tools/{name}", post(call_named))
        .route("/api/openapi.json", get(serve_openapi))
        .route("/api/upgrades/runs", get(runs_route))
        .route("/metrics", get(metrics_route))
        .route("/readyz", get(readyz))
        .route("/healthz", get(fleetgate_fleet::http::healthz))
        .merge(crate::page::router())
        .with_state(app.clone());

    let fleet = match registry {
        Some(reg) => fleetgate_fleet::http::router_counted(
            reg,
            policy,
            Arc::new(fleetgate_fleet::unix_now),
            fleet_metrics,
        ),
        None => Router::new()
            .route("/api/fleet/heartbeat", post(no_registry))
            .route("/api/fleet/peers", get(no_registry))
            .route("/api/fleet/peers/{id}", get(no_registry)),
    }
    .layer(axum::middleware::from_fn_with_state(app, fleet_guard));

    let routes = api
        .merge(fleet)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Outermost: a flood is refused before authentication or any body is read.
    fleetgate_fleet::limit::per_source(routes, fleetgate_fleet::limit::API_LIMIT)
        .layer(axum::middleware::map_response(no_store))
}

#[derive(Debug, Clone, Copy)]
enum ArgsIn {
    Query,
    Body,
}

fn fail(status: StatusCode, error: impl Into<String>) -> Response {
    (
        status,
        Json(json!({
            "success": false,
            "error": error.into(),
            "error_kind": transport_kind(status),
        })),
    )
        .into_response()
}

/// The `error_kind` of an answer the server gives before (or instead of) a tool call.
fn transport_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "busy",
        _ => "failed",
    }
}

fn unauthorized(error: &str, invalid_token: bool) -> Response {
    let challenge = if invalid_token {
        r#"Bearer realm="fleetgate", error="invalid_token""#
    } else {
        r#"Bearer realm="fleetgate""#
    };
    let mut r = fail(StatusCode::UNAUTHORIZED, error);
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    r
}

impl App {
    /// `Ok` if the request may go on.
    fn authorize(&self, access: Access, headers: &HeaderMap) -> Result<(), Box<Response>> {
        if access == Access::Read && self.auth.open_reads() {
            return Ok(());
        }
        let what = match access {
            Access::Read => "reading",
            Access::Mutate => "this operation",
        };
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            let msg = if headers.get(AUTHORIZATION).is_none() {
                format!(
                    "{what} requires the API token: send `Authorization: Bearer <token>` (the token `fleetgate serve` was started with)"
                )
            } else {
                "send exactly one `Authorization` header".to_owned()
            };
            return Err(Box::new(unauthorized(&msg, false)));
        };
        let token = value.to_str().ok().and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim_matches(' '))
        });
        let Some(token) = token else {
            return Err(Box::new(unauthorized(
                "the `Authorization` header must be `Bearer <token>`",
                false,
            )));
        };
        if self.auth.verify(token.as_bytes()) {
            Ok(())
        } else {
            tracing::warn!("API request refused: invalid bearer token");
            Err(Box::new(unauthorized(
                "the bearer token is not valid",
                true,
            )))
        }
    }

    /// Run `tool` with `args` on the blocking pool and answer its result.
    async fn run_tool(&self, tool: &'static str, args: Value) -> Response {
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "success": false,
                    "error_kind": "busy",
                    "error": format!(
                        "busy: {MAX_CONCURRENT_CALLS} tool calls are already running; nothing was run, retry in a few seconds"
                    ),
                })),
            )
                .into_response();
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        };
        let toolbox = self.toolbox.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            toolbox.call(tool, args)
        })
        .await;
        match joined {
            Ok(v) => {
                let status = status_of(&v);
                tracing::info!(tool, status = status.as_u16(), "API tool call");
                (status, Json(v)).into_response()
            }
            Err(e) => fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "internal error: the tool `{tool}` did not finish ({e}); check the pipeline status"
                ),
            ),
        }
    }
}

/// The HTTP status of a tool's result: 200 on success, else by its `error_kind`.
pub fn status_of(result: &Value) -> StatusCode {
    if result.get("success") == Some(&Value::Bool(true)) {
        return StatusCode::OK;
    }
    match result
        .get("error_kind")
        .and_then(Value::as_str)
        .and_then(ErrorKind::parse)
    {
        Some(ErrorKind::Locked | ErrorKind::Refused) => StatusCode::CONFLICT,
        Some(ErrorKind::NotFound | ErrorKind::UnknownTool) => StatusCode::NOT_FOUND,
        Some(ErrorKind::Config | ErrorKind::CorruptState) => StatusCode::INTERNAL_SERVER_ERROR,
        Some(ErrorKind::InvalidArguments | ErrorKind::Failed) | None => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

fn access_of(tool: &str) -> Access {
    match find(tool) {
        Some(d) if d.read_only => Access::Read,
        _ => Access::Mutate,
    }
}

async fn call_route(app: Shared, tool: &'static str, from: ArgsIn, req: Request) -> Response {
    if let Err(r) = app.authorize(access_of(tool), req.headers()) {
        return *r;
    }
    let args = match from {
        ArgsIn::Query => query_args(&req),
        ArgsIn::Body => body_args(req).await,
    };
    match args {
        Ok(args) => app.run_tool(tool, args).await,
        Err(r) => *r,
    }
}

async fn call_named(
    State(app): State<Shared>,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let name = match name {
        Ok(axum::extract::Path(n)) => n,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(def) = definitions().into_iter().find(|d| d.name == name) else {
        return fail(
            StatusCode::NOT_FOUND,
            format!(
                "no tool named {:?}; the tools are: {}",
                name.chars().take(80).collect::<String>(),
                definitions()
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    call_route(app, def.name, ArgsIn::Body, req).await
}

/// The query string as a JSON object of strings (`Null` when there is none).
fn query_args(req: &Request) -> Result<Value, Box<Response>> {
    if req.uri().query().is_none_or(str::is_empty) {
        return Ok(Value::Null);
    }
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(req.uri()).map_err(|e| {
        Box::new(fail(
            StatusCode::BAD_REQUEST,
            format!("malformed query string: {}", e.body_text()),
        ))
    })?;
    let mut out = Map::new();
    for (k, v) in pairs {
        if out.contains_key(&k) {
            return Err(Box::new(fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "the query parameter {:?} is given more than once",
                    k.chars().take(80).collect::<String>()
                ),
            )));
        }
        out.insert(k, Value::String(v));
    }
    Ok(Value::Object(out))
}

/// The body as JSON (`Null` when empty).
async fn body_args(req: Request) -> Result<Value, Box<Response>> {
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            "this endpoint takes its arguments as a JSON object in the body, not in the query string",
        )));
    }
    let body = Bytes::from_request(req, &()).await.map_err(|rejection| {
        let status = rejection.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than {MAX_BODY_BYTES} bytes")
        } else {
            format!("could not read the request body: {}", rejection.body_text())
        };
        Box::new(fail(status, msg))
    })?;
    tool_args_from_body(&body).map_err(|e| Box::new(fail(StatusCode::BAD_REQUEST, e)))
}

/// The arguments of a tool call from its HTTP body, as `serve` reads them before
/// [`crate::Toolbox::call`]: an empty (or all-whitespace) body is `null` (no arguments),
/// anything else must be JSON. Public so that the fuzz targets (`fuzz/`) run exactly this
/// code.
///
/// # Errors
/// The message of the 400 answer when the body is not JSON.
pub fn tool_args_from_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| {
        format!("the request body is not valid JSON ({e}); send a JSON object of the tool's arguments, e.g. {{\"reason\": \"...\"}}")
    })
}

async fn fleet_guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let access = match *req.method() {
        // Signed by the node's key; the fleet crate verifies it.
        Method::POST if req.uri().path() == "/api/fleet/heartbeat" => None,
        Method::GET | Method::HEAD => Some(Access::Read),
        _ => Some(Access::Mutate),
    };
    if let Some(access) = access
        && let Err(r) = app.authorize(access, req.headers())
    {
        return *r;
    }
    next.run(req).await
}

/// `GET /metrics`: the pipeline's metrics from the state file, then the fleet's (a read:
/// the token unless `--open-reads`).
async fn metrics_route(State(app): State<Shared>, req: Request) -> Response {
    if let Err(r) = app.authorize(Access::Read, req.headers()) {
        return *r;
    }
    let toolbox = app.toolbox.clone();
    let mut text = match tokio::task::spawn_blocking(move || toolbox.pipeline_metrics()).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return fail(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Some(reg) = &app.registry {
        match app.fleet_metrics.render(reg).await {
            Ok(fleet) => text.push_str(&fleet),
            Err(e) => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the fleet registry does not answer: {e}"),
                );
            }
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            fleetgate_fleet::http::METRICS_TYPE,
        )],
        text,
    )
        .into_response()
}

/// Most runs `GET /api/upgrades/runs` lists.
const MAX_LISTED_RUNS: usize = 100;

/// `GET /api/upgrades/runs`: the finished runs, newest first (a read: the token unless
/// `--open-reads`).
async fn runs_route(State(app): State<Shared>, req: Request) -> Response {
    if let Err(r) = app.authorize(Access::Read, req.headers()) {
        return *r;
    }
    let toolbox = app.toolbox.clone();
    match tokio::task::spawn_blocking(move || toolbox.run_history(MAX_LISTED_RUNS)).await {
        Ok(Ok(runs)) => Json(json!({"success": true, "runs": runs})).into_response(),
        Ok(Err(e)) => fail(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /readyz` (open): 200 when the state file reads and the registry answers.
async fn readyz(State(app): State<Shared>) -> Response {
    let toolbox = app.toolbox.clone();
    match tokio::task::spawn_blocking(move || toolbox.pipeline_state()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the pipeline state does not read: {e}\n"),
            )
                .into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    match &app.registry {
        Some(reg) => fleetgate_fleet::http::ready(reg).await.into_response(),
        None => (StatusCode::OK, "ready\n").into_response(),
    }
}

async fn no_registry() -> Response {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "this server has no fleet registry; heartbeats and peers are not served",
    )
}

async fn serve_openapi(State(app): State<Shared>) -> Response {
    Json(app.openapi.clone()).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    fail(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}; the API is described at /api/openapi.json",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; see /api/openapi.json",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

async fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}
