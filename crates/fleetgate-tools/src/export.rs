//! The tool definitions as plain function-calling JSON, for agent frameworks that do not
//! speak MCP: `fleetgate tools export --format openai|anthropic|json-schema`.

use crate::definitions;
use serde_json::{Value, json};

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions `tools`: `{"type": "function", "function": {"name",
    /// "description", "parameters"}}`.
    OpenAi,
    /// OpenAI Responses API `tools` (flat): `{"type": "function", "name", "description",
    /// "parameters"}`.
    OpenAiResponses,
    /// Anthropic Messages `tools`: `{"name", "description", "input_schema"}`.
    Anthropic,
    /// One JSON Schema (draft 2020-12) document per tool's arguments, by tool name.
    JsonSchema,
}

impl Format {
    /// Parse `openai`, `openai-responses`, `anthropic` or `json-schema`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "openai" => Some(Format::OpenAi),
            "openai-responses" => Some(Format::OpenAiResponses),
            "anthropic" => Some(Format::Anthropic),
            "json-schema" => Some(Format::JsonSchema),
            _ => None,
        }
    }
}

/// Every tool in `format`.
pub fn export(format: Format) -> Value {
    let defs = definitions();
    match format {
        Format::OpenAi => Value::Array(
            defs.into_iter()
                .map(|d| {
                    json!({"type": "function", "function": {
                        "name": d.name, "description": d.description, "parameters": d.input_schema,
                    }})
                })
                .collect(),
        ),
        Format::OpenAiResponses => Value::Array(
            defs.into_iter()
                .map(|d| {
                    json!({
                        "type": "function", "name": d.name, "description": d.description,
                        "parameters": d.input_schema,
                    })
                })
                .collect(),
        ),
        Format::Anthropic => Value::Array(
            defs.into_iter()
                .map(|d| {
                    json!({"name": d.name, "description": d.description, "input_schema": d.input_schema})
                })
                .collect(),
        ),
        Format::JsonSchema => {
            let mut tools = serde_json::Map::new();
            for d in defs {
                let mut schema = d.input_schema;
                if let Some(o) = schema.as_object_mut() {
                    let mut head = serde_json::Map::new();
                    head.insert(
                        "$schema".into(),
                        json!("https://json-schema.org/draft/2020-12/schema"),
                    );
                    head.insert("title".into(), json!(format!("{} arguments", d.name)));
                    head.insert("description".into(), json!(d.description));
                    for (k, v) in std::mem::take(o) {
                        head.insert(k, v);
                    }
                    *o = head;
                }
                tools.insert(d.name.to_owned(), schema);
            }
            json!({
                "description": "fleetgate agent tools: the JSON Schema of each tool's arguments. Every tool returns {\"success\": true, ...} or {\"success\": false, \"error\": \"...\"}.",
                "tools": tools,
            })
        }
    }
}
