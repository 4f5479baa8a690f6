//! The API's route table and its OpenAPI 3.1 description (`/api/openapi.json`).

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::MAX_BODY_BYTES;
use crate::{definitions, find};

/// One tool route.
pub(super) struct Op {
    pub(super) method: Method,
    pub(super) path: &'static str,
    pub(super) tool: &'static str,
    pub(super) summary: &'static str,
    pub(super) tag: &'static str,
}

pub(super) fn ops() -> Vec<Op> {
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
            Method::POST,
            "/api/upgrades/promote-channel",
            "promote_channel",
            "Take a release completed on one channel to another",
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
