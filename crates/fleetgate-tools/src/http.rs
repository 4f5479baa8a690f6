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

use std::collections::BTreeMap;
use std::path::Path;
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
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::{ErrorKind, Toolbox, definitions, find};

/// The largest request body accepted (413 above). Heartbeats have their own, smaller
/// limit ([`fleetgate_fleet::HeartbeatPolicy::max_bytes`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The shortest API token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;
/// The longest API token accepted.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// How many tool calls may run at once; further calls get 503 with `Retry-After`.
pub const MAX_CONCURRENT_CALLS: usize = 16;

/// Why an API token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("cannot read the API token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("the API token environment variable ${var} is not set (or is not valid UTF-8)")]
    EnvUnset {
        /// The variable.
        var: String,
    },
    /// The token is empty.
    #[error(
        "the API token from {origin} is empty; put a random token of at least {MIN_TOKEN_CHARS} characters there (e.g. `openssl rand -hex 32`)"
    )]
    Empty {
        /// Where it came from.
        origin: String,
    },
    /// The token is too short.
    #[error(
        "the API token from {origin} is {len} characters long; at least {MIN_TOKEN_CHARS} are required (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Where it came from.
        origin: String,
        /// Its length.
        len: usize,
    },
    /// The token is too long.
    #[error(
        "the API token from {origin} is {len} bytes long; at most {MAX_TOKEN_BYTES} are accepted"
    )]
    TooLong {
        /// Where it came from.
        origin: String,
        /// Its length.
        len: usize,
    },
    /// The token holds a character that cannot travel in an HTTP header.
    #[error(
        "the API token from {origin} contains whitespace or a character outside visible ASCII, which cannot be sent in an `Authorization` header"
    )]
    BadChar {
        /// Where it came from.
        origin: String,
    },
}

/// The API's access policy: the bearer token every mutating request must present, and
/// whether reads are open to anyone who can reach the server.
///
/// `Debug` never shows the token.
pub struct ApiAuth {
    token: Box<[u8]>,
    origin: String,
    open_reads: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("token", &"<redacted>")
            .field("origin", &self.origin)
            .field("open_reads", &self.open_reads)
            .finish()
    }
}

impl ApiAuth {
    /// A policy with `token` (surrounding whitespace trimmed); `origin` says where it
    /// came from, for messages. Refuses an empty token, one shorter than
    /// [`MIN_TOKEN_CHARS`] or longer than [`MAX_TOKEN_BYTES`], and one with characters
    /// other than visible ASCII. Reads are closed; see [`ApiAuth::with_open_reads`].
    pub fn new(token: &str, origin: &str) -> Result<ApiAuth, AuthError> {
        let token = token.trim();
        let origin = origin.to_owned();
        if token.is_empty() {
            return Err(AuthError::Empty { origin });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::BadChar { origin });
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong {
                origin,
                len: token.len(),
            });
        }
        if token.len() < MIN_TOKEN_CHARS {
            return Err(AuthError::TooShort {
                origin,
                len: token.len(),
            });
        }
        Ok(ApiAuth {
            token: token.as_bytes().into(),
            origin,
            open_reads: false,
        })
    }

    /// The token in the file `path` (whitespace trimmed). A file that group or others
    /// can read is accepted with a warning (secrets mounted by container runtimes often
    /// are), but `chmod 600` it.
    pub fn from_file(path: &Path) -> Result<ApiAuth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    "the API token file {} is accessible to group or others (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    meta.permissions().mode() & 0o777,
                    path.display()
                );
            }
        }
        ApiAuth::new(&text, &format!("the file {}", path.display()))
    }

    /// The token in the environment variable `var` (whitespace trimmed), or in the vault
    /// of `fleetgate_trust::secret_env` when the process sealed that variable.
    pub fn from_env(var: &str) -> Result<ApiAuth, AuthError> {
        let text = fleetgate_trust::secret_env::var(var).ok_or_else(|| AuthError::EnvUnset {
            var: var.to_owned(),
        })?;
        ApiAuth::new(&text, &format!("${var}"))
    }

    /// Let requests that change nothing through without a token (`open = true`).
    pub fn with_open_reads(mut self, open: bool) -> ApiAuth {
        self.open_reads = open;
        self
    }

    /// Reads need no token.
    pub fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// Where the token came from (`the file PATH` or `$VAR`), never the token.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `presented` is the token. Constant time in the token's content and length: both
    /// sides are compared as zero-padded [`MAX_TOKEN_BYTES`] buffers, plus their lengths.
    pub fn verify(&self, presented: &[u8]) -> bool {
        if presented.len() > MAX_TOKEN_BYTES {
            // Only says "longer than any token can be", which is public.
            return false;
        }
        let mut ours = [0u8; MAX_TOKEN_BYTES];
        let mut theirs = [0u8; MAX_TOKEN_BYTES];
        ours[..self.token.len()].copy_from_slice(&self.token);
        theirs[..presented.len()].copy_from_slice(presented);
        let same_len = (self.token.len() as u64).ct_eq(&(presented.len() as u64));
        let same = ours[..].ct_eq(&theirs[..]) & same_len;
        ours.fill(0);
        same.into()
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Changes nothing: open when `open_reads`.
    Read,
    /// Changes state: always needs the token.
    Mutate,
}

/// One tool route.
struct Op {
    method: Method,
    path: &'static str,
    tool: &'static str,
    summary: &'static str,
    tag: &'static str,
}

fn ops() -> Vec<Op> {
    let op = |method: Method, path, tool, summary, tag| Op {
        method,
        path,
        tool,
        summary,
        tag,
    };
    vec![
        op(
            Method::GET,
            "/api/upgrades/status",
            "check_upgrade_status",
            "Pipeline status",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/start",
            "start_upgrade",
            "Start a run",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/advance",
            "advance_upgrade_pipeline",
            "Evaluate the current gate once",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/rollback",
            "rollback_upgrade",
            "Roll back the run in progress",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/pause",
            "pause_upgrade",
            "Hold the run at its current stage",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/resume",
            "resume_upgrade",
            "Let a paused run go on",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/promote",
            "promote_upgrade",
            "End the open canary window early (passed by the operator)",
            "upgrades",
        ),
        op(
            Method::POST,
            "/api/upgrades/approve",
            "approve_upgrade",
            "Record a signed approval (or get the unsigned request)",
            "upgrades",
        ),
        op(
            Method::GET,
            "/api/upgrades/canary-health",
            "check_canary_health",
            "The canary's health verdict",
            "upgrades",
        ),
        op(
            Method::GET,
            "/api/benchmarks",
            "list_benchmarks",
            "Registered benchmarks",
            "benchmarks",
        ),
        op(
            Method::POST,
            "/api/benchmarks",
            "register_benchmark",
            "Register a benchmark definition",
            "benchmarks",
        ),
        op(
            Method::GET,
            "/api/benchmarks/history",
            "get_benchmark_history",
            "Stored benchmark snapshots",
            "benchmarks",
        ),
        op(
            Method::GET,
            "/api/benchmarks/compare",
            "compare_benchmarks",
            "Compare two versions' snapshots",
            "benchmarks",
        ),
        op(
            Method::POST,
            "/api/benchmarks/capture",
            "capture_benchmark",
            "Capture a benchmark snapshot",
            "benchmarks",
        ),
    ]
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
        if access == Access::Read && self.auth.open_reads {
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

/// The OpenAPI 3.1 document of the API (as served at `/api/openapi.json` by a server
/// whose reads are open when `open_reads`).
pub fn openapi(open_reads: bool) -> Value {
    let bearer = json!([{"bearerAuth": []}]);
    let read_security = if open_reads {
        json!([])
    } else {
        bearer.clone()
    };
    let err = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let common = |security_needed: bool| {
        let mut r = Map::new();
        r.insert(
            "400".into(),
            err("the body is not JSON, or the query string is malformed"),
        );
        if security_needed {
            r.insert(
                "401".into(),
                err("missing or invalid bearer token; nothing was run"),
            );
        }
        r
    };

    let mut paths = Map::new();
    for op in ops() {
        let Some(def) = find(op.tool) else { continue };
        let read = def.read_only;
        let security = if read {
            read_security.clone()
        } else {
            bearer.clone()
        };
        let mut responses = common(!(read && open_reads));
        responses.insert(
            "200".into(),
            json!({"description": "the tool succeeded", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ToolResult"}}}}),
        );
        responses.insert("422".into(), err("the tool answered `success: false`: `error_kind` is `invalid_arguments` or `failed`; `error` says why"));
        responses.insert("409".into(), err("`error_kind` `locked` (another orchestrator holds the state directory, or a capture of the same version is running) or `refused` (the pipeline refused the transition)"));
        responses.insert(
            "404".into(),
            err("`error_kind` `not_found`: no such snapshot"),
        );
        responses.insert(
            "500".into(),
            err("`error_kind` `config` or `corrupt_state`: the server's config or state file"),
        );
        responses.insert(
            "503".into(),
            err("too many tool calls running; retry after `Retry-After` seconds"),
        );
        let mut operation = json!({
            "operationId": def.name,
            "summary": op.summary,
            "description": def.description,
            "tags": [op.tag],
            "security": security,
            "x-fleetgate-tool": def.name,
            "x-fleetgate-read-only": read,
            "x-fleetgate-destructive": def.destructive,
            "x-fleetgate-idempotent": def.idempotent,
        });
        if op.method == Method::GET {
            operation["parameters"] = query_parameters(&def.input_schema);
        } else {
            responses.insert(
                "413".into(),
                err(&format!("the body is larger than {MAX_BODY_BYTES} bytes")),
            );
            let required = def
                .input_schema
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty());
            operation["requestBody"] = json!({
                "required": required,
                "description": if required { "the tool's arguments" } else { "the tool's arguments (an empty body means `{}`)" },
                "content": {"application/json": {"schema": def.input_schema}},
            });
        }
        operation["responses"] = Value::Object(responses);
        let method = op.method.as_str().to_ascii_lowercase();
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = operation;
    }

    let names: Vec<&str> = definitions().iter().map(|d| d.name).collect();
    let mut generic_responses = common(true);
    generic_responses.insert("200".into(), json!({"description": "the tool succeeded", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ToolResult"}}}}));
    generic_responses.insert("404".into(), err("no tool of that name"));
    generic_responses.insert(
        "413".into(),
        err(&format!("the body is larger than {MAX_BODY_BYTES} bytes")),
    );
    generic_responses.insert(
        "422".into(),
        err("the tool answered `success: false`; the body says why"),
    );
    generic_responses.insert(
        "503".into(),
        err("too many tool calls running; retry after `Retry-After` seconds"),
    );
    paths.insert(
        "/api/tools/{name}".into(),
        json!({"post": {
            "operationId": "call_tool",
            "summary": "Call any tool by name",
            "description": "Calls the tool `name` with the body as its arguments (the JSON Schema of each tool's arguments is the request body of its own route, and `fleetgate tools export --format json-schema`). Tools that change something need the bearer token; read-only tools follow the server's read policy.",
            "tags": ["tools"],
            "security": if open_reads { json!([{}, {"bearerAuth": []}]) } else { bearer.clone() },
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "enum": names}}],
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": generic_responses,
        }}),
    );

    let fleet_err = |d: &str| err(d);
    paths.insert(
        "/api/fleet/heartbeat".into(),
        json!({"post": {
            "operationId": "post_heartbeat",
            "summary": "A node's signed heartbeat",
            "description": "Sent by node agents. Needs no bearer token: `payload` (the heartbeat JSON) must be signed by the enrolled node's Ed25519 key, and its `seq` must be new (replay protection).",
            "tags": ["fleet"],
            "security": [],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["payload", "signature"],
                "additionalProperties": false,
                "properties": {
                    "payload": {"type": "string", "description": "the heartbeat JSON (node_id, seq, sent_at, version, code_hash, healthy, exceptions_total, requests_total, bench), exactly the signed bytes"},
                    "signature": {"type": "string", "description": "Ed25519 signature over `payload`, hex"}
                }
            }}}},
            "responses": {
                "200": {"description": "recorded", "content": {"application/json": {"schema": {"type": "object", "properties": {"success": {"const": true}, "node_id": {"type": "string"}, "seq": {"type": "integer"}, "at": {"type": "integer"}}}}}},
                "400": fleet_err("malformed heartbeat"),
                "401": fleet_err("unsigned, or the signature does not verify"),
                "403": fleet_err("unknown or removed node"),
                "409": fleet_err("replayed sequence number"),
                "413": fleet_err("too large"),
                "422": fleet_err("too old, or from the future"),
                "503": fleet_err("this server has no fleet registry"),
            },
        }}),
    );
    let mut peer_responses = common(!open_reads);
    peer_responses.remove("400");
    peer_responses.insert("200".into(), json!({"description": "the peers", "content": {"application/json": {"schema": {"type": "object", "properties": {"success": {"const": true}, "peers": {"type": "array", "items": {"type": "object"}}}}}}}));
    paths.insert(
        "/api/fleet/peers".into(),
        json!({"get": {
            "operationId": "list_peers",
            "summary": "The fleet registry's peers",
            "tags": ["fleet"],
            "security": read_security,
            "responses": peer_responses,
        }}),
    );
    let mut one_peer = common(!open_reads);
    one_peer.remove("400");
    one_peer.insert("200".into(), json!({"description": "the peer", "content": {"application/json": {"schema": {"type": "object", "properties": {"success": {"const": true}, "peer": {"type": "object"}}}}}}));
    one_peer.insert("404".into(), err("no peer with that id"));
    paths.insert(
        "/api/fleet/peers/{id}".into(),
        json!({"get": {
            "operationId": "show_peer",
            "summary": "One peer",
            "tags": ["fleet"],
            "security": read_security,
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": one_peer,
        }}),
    );
    let mut runs_responses = common(!open_reads);
    runs_responses.remove("400");
    runs_responses.insert("200".into(), json!({"description": "the finished runs, newest first (at most 100)", "content": {"application/json": {"schema": {"type": "object", "properties": {"success": {"const": true}, "runs": {"type": "array", "items": {"type": "object", "properties": {
        "run_id": {"type": ["string", "null"]}, "version": {"type": "string"}, "git_sha": {"type": "string"}, "channel": {"type": "string"},
        "stage": {"type": "string", "description": "how it ended: completed, rolled_back, failed (or unreadable)"},
        "started_at": {"type": ["number", "null"]}, "ended_at": {"type": ["number", "null"]},
        "failure_detail": {"type": ["string", "null"]}, "rollback_reason": {"type": ["string", "null"]}}}}}}}}}));
    paths.insert(
        "/api/upgrades/runs".into(),
        json!({"get": {
            "operationId": "list_runs",
            "summary": "The finished runs (the run archive)",
            "tags": ["upgrades"],
            "security": read_security,
            "responses": runs_responses,
        }}),
    );
    paths.insert(
        "/api/openapi.json".into(),
        json!({"get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {"200": {"description": "the OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}},
        }}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fleetgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The fleetgate release pipeline over HTTP: the same tools as the MCP server (HART's names and result shapes: `{\"success\": true, ...}` or `{\"success\": false, \"error\": \"...\"}`), the fleet's heartbeat and peer routes. Operations that change something need `Authorization: Bearer <token>`.",
        },
        "tags": [
            {"name": "upgrades", "description": "The release pipeline"},
            {"name": "benchmarks", "description": "Benchmark snapshots and registered benchmarks"},
            {"name": "tools", "description": "Any tool by name"},
            {"name": "fleet", "description": "Node heartbeats and the peer registry"},
            {"name": "meta", "description": "This description"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The token `fleetgate serve` was started with (`--token-file` or `$FLEETGATE_API_TOKEN`)."}
            },
            "schemas": {
                "ToolResult": {"type": "object", "required": ["success"], "properties": {"success": {"const": true}}, "additionalProperties": true},
                "Error": {"type": "object", "required": ["success", "error"], "properties": {"success": {"const": false}, "error": {"type": "string"}}, "additionalProperties": true},
            },
        },
    })
}

/// A GET tool's arguments as query parameters (one per schema property).
fn query_parameters(schema: &Value) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return json!([]);
    };
    Value::Array(
        props
            .iter()
            .map(|(name, s)| {
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": s,
                });
                if let Some(d) = s.get("description") {
                    p["description"] = d.clone();
                }
                p
            })
            .collect(),
    )
}
