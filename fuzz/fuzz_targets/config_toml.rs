//! `fleetgate.toml`: `Config::parse` with environment overrides.
//!
//! Input: the file's text; after a NUL byte, the environment as `NAME=value` lines
//! (`FLEETGATE_*` overrides and HART's fallbacks).
#![no_main]

use std::collections::HashMap;

use fleetgate_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: HashMap<&str, &str> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    let _ = Config::parse(file, |k| env.get(k).map(|v| (*v).to_owned()));
});
