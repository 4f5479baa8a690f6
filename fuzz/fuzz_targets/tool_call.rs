//! Tool calls as `serve` takes them (`POST /api/tools/{name}` and the per-tool routes):
//! the body through `tool_args_from_body`, then `Toolbox::call`. The config file does not
//! exist, so every call stops at the config after its arguments were checked: the
//! arguments and what the tools check before opening the project are fuzzed, nothing
//! is run. Checks: every answer is an object with a boolean `success`.
//!
//! Input: selector byte (the tool: index into `definitions()`, past the end an unknown
//! name), then the body.
#![no_main]

use std::sync::LazyLock;

use fleetgate_tools::http::tool_args_from_body;
use fleetgate_tools::{Toolbox, definitions};
use libfuzzer_sys::fuzz_target;

static TOOLBOX: LazyLock<Toolbox> = LazyLock::new(|| {
    let dir = fleetgate_fuzz::scratch_dir("tools");
    Toolbox::new(Some(dir.join("missing").join("fleetgate.toml")))
});

fuzz_target!(|data: &[u8]| {
    let Some((sel, body)) = fleetgate_fuzz::split_first(data) else {
        return;
    };
    let defs = definitions();
    let name = defs
        .get(usize::from(sel) % (defs.len() + 1))
        .map_or("no_such_tool", |d| d.name);
    let Ok(args) = tool_args_from_body(body) else {
        return;
    };
    let answer = TOOLBOX.call(name, args);
    assert!(
        answer
            .get("success")
            .is_some_and(serde_json::Value::is_boolean),
        "an answer without a boolean success: {answer}"
    );
});
