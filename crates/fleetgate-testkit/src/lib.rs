//! Test-only helpers shared by fleetgate's test suites (a dev-dependency, never shipped).
//!
//! A test that needs something outside the Rust toolchain (PostgreSQL, `python3`, Python's
//! `cryptography` package, a browser) calls [`require`] or [`skip`] instead of silently
//! returning. Outside CI a missing tool is a *skip*: a loud line on stderr and a record in
//! the file named by `FLEETGATE_SKIP_LOG` (set by `cargo xtask test`, which prints every
//! record in its closing summary). In CI (`CI=true`, or `FLEETGATE_REQUIRE_ALL=1`) a skip
//! is a failure: CI installs everything, so a missing tool there is a broken CI script.

use std::io::Write as _;

/// Environment variable naming the file that skip records are appended to.
pub const SKIP_LOG_ENV: &str = "FLEETGATE_SKIP_LOG";

/// True when every test must run (CI): a missing tool then fails the test.
pub fn all_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
            .unwrap_or(false)
    };
    set("CI") || set("FLEETGATE_REQUIRE_ALL")
}

/// The running test's name: libtest names the thread after the test; nextest runs one
/// test per process, with the name as an argument.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Records that the calling test did not check what it exists to check, because `what`
/// is missing (`why` says how to provide it). Returns normally outside CI (the caller
/// then returns early); panics in CI.
pub fn skip(what: &str, why: &str) {
    let test = test_name();
    if all_required() {
        panic!("{test}: needs {what}, which is missing ({why}); CI must provide it");
    }
    eprintln!("\n!!!!! SKIPPED {test}: needs {what}: {why} !!!!!\n");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        // One short line per record, written with a single append: records from tests
        // running in parallel processes do not interleave.
        let line = format!("{test}\t{what}\t{}\n", why.replace(['\n', '\t'], " "));
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Runs `program args…` and reports whether it exited 0; a program that is not installed
/// (or fails) is [`skip`]ped with `why`. Use as `if !require(...) { return; }`.
pub fn require(what: &str, program: &str, args: &[&str], why: &str) -> bool {
    let ok = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(what, why);
    }
    ok
}

/// `FLEETGATE_TEST_PG_URL`, or a [`skip`] saying PostgreSQL was not tested.
pub fn postgres_url(purpose: &str) -> Option<String> {
    match std::env::var("FLEETGATE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                "PostgreSQL",
                &format!(
                    "FLEETGATE_TEST_PG_URL is not set ({purpose}); e.g. \
                     FLEETGATE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test"
                ),
            );
            None
        }
    }
}
