//! The MCP server: the tools over the Model Context Protocol, on stdio
//! (`fleetgate mcp`), with the official Rust SDK (`rmcp`).
//!
//! `tools/list` returns every tool with its description, its argument schema and hints
//! (read-only, destructive, idempotent). `tools/call` runs the tool on a blocking thread
//! and answers with the tool's JSON result both as `structuredContent` and as text;
//! `isError` is true when the tool returned `success: false`. An unknown tool name is a
//! JSON-RPC invalid-params error. A call made with a `progressToken` gets
//! `notifications/progress` for each step (gate started, verdict, delivery) and, while a
//! long gate runs, every [`PROGRESS_EVERY`].
//!
//! stdout carries only protocol messages; logs go to stderr.

use crate::{Toolbox, definitions, find};
use rmcp::ServiceExt;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::Value;
use std::sync::Arc;

/// How often a long tool call reports that it is still running (with a progress token).
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the server tells the agent at `initialize`.
pub const INSTRUCTIONS: &str = "fleetgate moves a new version of the software through seven gated stages (BUILD, TEST, AUDIT, BENCHMARK, SIGN, CANARY, DEPLOY) and ends with the fleet on the new signed version or back on the last good one. Typical session: check_upgrade_status; capture_benchmark for the current version if you want a baseline; start_upgrade(new_version); call advance_upgrade_pipeline repeatedly (a `pending` gate means call again later) while watching check_canary_health during CANARY; call rollback_upgrade(reason) on ANY degradation. pause_upgrade / resume_upgrade hold and release the run; promote_upgrade ends an open canary (or DEPLOY step) window early (recorded as the operator's decision); a stage configured to wait for approvals stays pending until approve_upgrade records enough signed approvals. Every result is JSON with `success`; on `success: false` read `error`.";

/// A failure to run the MCP server.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The transport closed during the handshake or the service failed to start.
    #[error("failed to start the MCP server on stdio: {0}")]
    Start(String),
    /// The service task ended abnormally.
    #[error("the MCP server stopped abnormally: {0}")]
    Stopped(String),
}

/// The MCP handler over a [`Toolbox`].
#[derive(Debug, Clone)]
pub struct McpServer {
    toolbox: Arc<Toolbox>,
}

impl McpServer {
    /// A server for the tools of `toolbox`.
    pub fn new(toolbox: Toolbox) -> McpServer {
        McpServer {
            toolbox: Arc::new(toolbox),
        }
    }

    /// The tools as MCP describes them.
    pub fn tools() -> Vec<Tool> {
        definitions()
            .into_iter()
            .map(|d| {
                let schema = match d.input_schema {
                    Value::Object(o) => o,
                    _ => serde_json::Map::new(),
                };
                Tool::new(d.name, d.description, Arc::new(schema)).with_annotations(
                    ToolAnnotations::new()
                        .read_only(d.read_only)
                        .destructive(d.destructive)
                        .idempotent(d.idempotent)
                        .open_world(false),
                )
            })
            .collect()
    }

    /// Serve on stdin/stdout until the client closes the connection.
    pub async fn serve_stdio(self) -> Result<(), McpError> {
        let running = self
            .serve(rmcp::transport::io::stdio())
            .await
            .map_err(|e| McpError::Start(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| McpError::Stopped(e.to_string()))?;
        Ok(())
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("fleetgate", env!("CARGO_PKG_VERSION"))
                    .with_title("fleetgate release pipeline"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(McpServer::tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if find(&name).is_none() {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?}; call tools/list for the ten fleetgate tools",
                    name.chars().take(80).collect::<String>()
                ),
                None,
            ));
        }
        let token = request
            .meta
            .as_ref()
            .and_then(|m| m.get_progress_token())
            .or_else(|| context.meta.get_progress_token());
        let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let toolbox = self.toolbox.clone();
        let tool = name.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut task = tokio::task::spawn_blocking(move || {
            toolbox.call_with_progress(&tool, args, &mut |line| {
                let _ = tx.send(line);
            })
        });
        // With a progress token, report each step and, during a long gate, a line every
        // PROGRESS_EVERY, so a client that resets its timeout on progress keeps waiting.
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        let mut step = 0u32;
        let joined = loop {
            let line = tokio::select! {
                joined = &mut task => break joined,
                Some(line) = rx.recv() => line,
                _ = tick.tick() => format!("{name}: still running after {}s", started.elapsed().as_secs()),
            };
            if let Some(token) = &token {
                step += 1;
                let _ = context
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), f64::from(step))
                            .with_message(line),
                    )
                    .await;
            }
        };
        let result = joined.map_err(|e| {
            ErrorData::internal_error(format!("the tool `{name}` did not finish: {e}"), None)
        })?;
        tracing::info!(tool = %name, success = %result["success"], "tool call");
        let ok = result["success"] == Value::Bool(true);
        Ok(if ok {
            CallToolResult::structured(result)
        } else {
            CallToolResult::structured_error(result)
        }
        .into())
    }
}
