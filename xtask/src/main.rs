//! `cargo xtask`: the project's own commands, in Rust so they work on any machine with a
//! Rust toolchain (no shell one-liners).
//!
//! `cargo xtask test [ARGS…]` is the README's test command:
//! 1. installs `cargo-nextest` (`cargo install cargo-nextest --locked`) when it is missing;
//! 2. runs `cargo nextest run --workspace ARGS…` (with `--profile ci --locked` when
//!    `CI=true`), then the doc tests (`cargo test --workspace --doc`), which nextest does
//!    not run;
//! 3. prints which tests were skipped for want of something outside the toolchain
//!    (PostgreSQL, `python3`, Python's `cryptography`, a browser), as recorded by
//!    `fleetgate-testkit` in the file named by `FLEETGATE_SKIP_LOG`, and a closing line
//!    `xtask test: N passed, N failed, N skipped`.
//!
//! In CI those tests never skip: `fleetgate-testkit` fails them instead.
//!
//! `cargo xtask fuzz [--secs N] [--dev] [TARGET…]` runs the cargo-fuzz targets of `fuzz/` (all of
//! them, or those named), one after the other, each for N seconds (default 60), and
//! prints a table: seconds, executions, executions per second, crashes. It needs the
//! nightly toolchain (it says so and fails when there is none) and installs `cargo-fuzz`
//! (`cargo install cargo-fuzz --locked`) when it is missing. New inputs the fuzzer finds
//! go to `fuzz/target/corpus/<target>`; the committed seeds in `fuzz/corpus/<target>`
//! are only read. A crash fails the command; its input is in `fuzz/artifacts/<target>/`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask test [NEXTEST ARGS…]

Runs the whole test suite: installs cargo-nextest if it is missing, runs
`cargo nextest run --workspace` (profile `ci` and --locked when CI=true) and the doc
tests, then lists the tests that were skipped because something outside the Rust
toolchain is missing (PostgreSQL via FLEETGATE_TEST_PG_URL, python3, Python's
`cryptography`, chromium) and ends with `xtask test: N passed, N failed, N skipped`.
Arguments are passed to nextest (e.g. `cargo xtask test -p fleetgate-core`; then the doc
tests are not run).

Environment: CI=true makes every such test required (a missing tool fails it).

usage: cargo xtask fuzz [--secs N] [--dev] [TARGET…]

Runs the fuzz targets of fuzz/ (all, or those named) one at a time for N seconds each
(default 60) on one core, and prints seconds, executions, executions/s and crashes per
target. Needs the nightly toolchain; installs cargo-fuzz if it is missing. Fails on the
first crash (the input is kept in fuzz/artifacts/TARGET/). --dev builds the targets
unoptimised (much faster to compile, slower to fuzz): CI's few-seconds smoke run.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => match test(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask test: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fuzz") => match fuzz(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask fuzz: {e}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "xtask: unknown command {}\n\n{USAGE}",
                other.map_or_else(|| "(none)".to_owned(), |c| format!("`{c}`"))
            );
            ExitCode::from(2)
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

fn test(extra: &[String]) -> Result<ExitCode, String> {
    let root = workspace_root();
    ensure_nextest()?;

    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let log_dir = target.join("xtask");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let skip_log = log_dir.join("skipped.tsv");
    match std::fs::remove_file(&skip_log) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot clear {}: {e}", skip_log.display())),
    }

    let ci = in_ci();
    let mut nextest = cargo();
    nextest
        .current_dir(&root)
        .args(["nextest", "run", "--workspace"]);
    if ci {
        nextest.args(["--profile", "ci", "--locked"]);
    } else if extra.is_empty() {
        // The whole suite: every failure is worth seeing, not just the first.
        nextest.arg("--no-fail-fast");
    }
    nextest.args(extra).env("FLEETGATE_SKIP_LOG", &skip_log);
    eprintln!("xtask test: running {}", describe(&nextest));
    let (nextest_ok, nextest_counts) = run_counting(nextest, Stream::Stderr, parse_nextest)?;

    // Doc tests: nextest cannot run them. Skipped when the caller narrowed the run.
    let mut doc_counts = Counts::default();
    let mut doc_ok = true;
    if extra.is_empty() {
        let mut doc = cargo();
        doc.current_dir(&root)
            .args(["test", "--workspace", "--doc"])
            .env("FLEETGATE_SKIP_LOG", &skip_log);
        if ci {
            doc.arg("--locked");
        }
        eprintln!("\nxtask test: running {}", describe(&doc));
        (doc_ok, doc_counts) = run_counting(doc, Stream::Stdout, parse_libtest)?;
    }

    let skipped_for_tools = report_skips(&skip_log);
    let passed = (nextest_counts.passed + doc_counts.passed).saturating_sub(skipped_for_tools);
    let failed = nextest_counts.failed + doc_counts.failed;
    let skipped = nextest_counts.skipped + doc_counts.skipped + skipped_for_tools;
    let ok = nextest_ok && doc_ok;
    // A failing run whose output we could not parse must not read as "0 failed".
    let failed = if ok { failed } else { failed.max(1) };
    println!("\nxtask test: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Installs cargo-nextest from crates.io when `cargo nextest` is not available.
fn ensure_nextest() -> Result<(), String> {
    let present = cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask test: cargo-nextest is not installed; installing it once with \
         `cargo install cargo-nextest --locked` (a few minutes)…"
    );
    let status = cargo()
        .args(["install", "cargo-nextest", "--locked"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo install cargo-nextest --locked` failed ({status}); install it by hand and \
             run `cargo xtask test` again"
        ));
    }
    Ok(())
}

/// `cargo +nightly …` through rustup, whatever toolchain runs the xtask itself.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly");
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// What one fuzz target did.
struct FuzzRun {
    target: String,
    secs: f64,
    execs: u64,
    crashes: u64,
}

fn fuzz(args: &[String]) -> Result<ExitCode, String> {
    let mut secs: u64 = 60;
    let mut dev = false;
    let mut wanted = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dev" => dev = true,
            "--secs" => {
                let v = it.next().ok_or("--secs needs a number of seconds")?;
                secs = v.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--secs {v:?}: expected a positive number of seconds")
                })?;
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option {flag:?}\n\n{USAGE}"));
            }
            target => wanted.push(target.to_owned()),
        }
    }
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");

    let nightly = nightly_cargo()
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !nightly.status.success() {
        return Err(format!(
            "fuzzing needs the nightly toolchain (libFuzzer instrumentation), and `cargo +nightly` \
             does not run: {}\ninstall it with `rustup toolchain install nightly` and run again",
            String::from_utf8_lossy(&nightly.stderr).trim()
        ));
    }
    let has_fuzz = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_fuzz {
        eprintln!(
            "xtask fuzz: cargo-fuzz is not installed; installing it with `cargo install cargo-fuzz --locked`…"
        );
        let status = cargo()
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .map_err(|e| format!("cannot run cargo install: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`cargo install cargo-fuzz --locked` failed ({status})"
            ));
        }
    }
    if in_ci() {
        // cargo-fuzz has no --locked: check that fuzz/Cargo.lock is up to date first.
        let status = nightly_cargo()
            .current_dir(&fuzz_dir)
            .args(["fetch", "--locked"])
            .status()
            .map_err(|e| format!("cannot run cargo fetch: {e}"))?;
        if !status.success() {
            return Err("fuzz/Cargo.lock is out of date (`cargo +nightly fetch --locked` in fuzz/ failed); update and commit it".into());
        }
    }

    let listed = nightly_cargo()
        .current_dir(&root)
        .args(["fuzz", "list"])
        .output()
        .map_err(|e| format!("cannot run cargo fuzz list: {e}"))?;
    let all: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if !listed.status.success() || all.is_empty() {
        return Err(format!(
            "`cargo fuzz list` found no targets: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        ));
    }
    if let Some(unknown) = wanted.iter().find(|w| !all.contains(w)) {
        return Err(format!(
            "no fuzz target {unknown:?}; the targets are: {}",
            all.join(", ")
        ));
    }
    let targets = if wanted.is_empty() { all } else { wanted };

    // Sanitizer `none`: the code is safe Rust (unsafe_code is denied), so AddressSanitizer
    // would find nothing a panic does not, at a third of the speed. Build and run must
    // use the same flags, or `run` rebuilds everything.
    // `--dev` (CI's smoke run): an unoptimised build, several times faster to compile;
    // it fuzzes slower, which a few seconds per target does not mind.
    let mut flags = vec!["--sanitizer", "none"];
    if dev {
        flags.push("--dev");
    }
    let flags = flags.as_slice();
    let mut build = nightly_cargo();
    build.current_dir(&root).args(["fuzz", "build"]).args(flags);
    eprintln!("xtask fuzz: {}", describe(&build));
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo fuzz build: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo fuzz build` failed ({status})"));
    }

    let mut runs = Vec::new();
    let mut failed = None;
    for target in &targets {
        let work = fuzz_dir.join("target").join("corpus").join(target);
        std::fs::create_dir_all(&work)
            .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut run = nightly_cargo();
        run.current_dir(&root)
            .args(["fuzz", "run"])
            .args(flags)
            .arg(target)
            .arg(&work);
        if seeds.is_dir() {
            run.arg(&seeds);
        }
        run.args([
            "--".to_owned(),
            format!("-max_total_time={secs}"),
            "-timeout=10".to_owned(),
            "-rss_limit_mb=2048".to_owned(),
            "-print_final_stats=1".to_owned(),
        ]);
        eprintln!("\nxtask fuzz: {}", describe(&run));
        let started = std::time::Instant::now();
        let out = run
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run cargo fuzz run: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let execs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let crashed = !out.status.success();
        if crashed {
            eprintln!("{log}");
        } else if let Some(last) = log.lines().rev().find(|l| l.starts_with("Done ")) {
            eprintln!("{last}");
        }
        runs.push(FuzzRun {
            target: target.clone(),
            secs: started.elapsed().as_secs_f64(),
            execs,
            crashes: u64::from(crashed),
        });
        if crashed {
            failed = Some(target.clone());
            break;
        }
    }

    println!("\n| target | seconds | executions | exec/s | crashes |\n|---|---:|---:|---:|---:|");
    for r in &runs {
        // Executions per second over the fuzzing time, not the start-up.
        let rate = r.execs as f64 / (secs as f64).min(r.secs).max(1.0);
        println!(
            "| {} | {:.0} | {} | {:.0} | {} |",
            r.target, r.secs, r.execs, rate, r.crashes
        );
    }
    if let Some(t) = failed {
        eprintln!(
            "\nxtask fuzz: `{t}` crashed; the input is in fuzz/artifacts/{t}/. Reproduce with \
             `cargo +nightly fuzz run -s none {t} fuzz/artifacts/{t}/<file>`, fix it, add a \
             regression test in the crate that owns the code and the input to fuzz/corpus/{t}/."
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Runs `cmd`, passing the chosen stream through line by line while `parse` reads the
/// counts from it; the other stream is inherited.
fn run_counting(
    mut cmd: Command,
    stream: Stream,
    parse: fn(&str, &mut Counts),
) -> Result<(bool, Counts), String> {
    match stream {
        Stream::Stdout => cmd.stdout(Stdio::piped()),
        Stream::Stderr => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", describe(&cmd)))?;
    let pipe: Box<dyn std::io::Read> = match stream {
        Stream::Stdout => Box::new(child.stdout.take().ok_or("no stdout pipe")?),
        Stream::Stderr => Box::new(child.stderr.take().ok_or("no stderr pipe")?),
    };
    let mut counts = Counts::default();
    let mut reader = BufReader::new(pipe);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("reading {}: {e}", describe(&cmd))),
        }
        let _ = match stream {
            Stream::Stdout => std::io::stdout().write_all(&raw),
            Stream::Stderr => std::io::stderr().write_all(&raw),
        };
        parse(&strip_ansi(&String::from_utf8_lossy(&raw)), &mut counts);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", describe(&cmd)))?;
    Ok((status.success(), counts))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The number before `word` in `line` ("318 passed" → 318), if any.
fn count_before(line: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches('.') == word)
        .and_then(|w| w[0].parse().ok())
}

/// nextest's closing line: `Summary [ 200s] 318 tests run: 318 passed, 7 skipped`.
fn parse_nextest(line: &str, counts: &mut Counts) {
    if line.trim_start().starts_with("Summary") && line.contains("tests run:")
        || line.contains("test run:")
    {
        counts.passed = count_before(line, "passed").unwrap_or(0);
        counts.failed =
            count_before(line, "failed").unwrap_or(0) + count_before(line, "timed").unwrap_or(0);
        counts.skipped = count_before(line, "skipped").unwrap_or(0);
    }
}

/// libtest's per-binary line: `test result: ok. 3 passed; 0 failed; 1 ignored; …`.
fn parse_libtest(line: &str, counts: &mut Counts) {
    if line.starts_with("test result:") {
        counts.passed += count_before(line, "passed").unwrap_or(0);
        counts.failed += count_before(line, "failed").unwrap_or(0);
        counts.skipped += count_before(line, "ignored").unwrap_or(0);
    }
}

/// Prints the skip records grouped by what was missing; returns how many distinct tests
/// skipped (they counted as passed in the runner's figures).
fn report_skips(log: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(log) else {
        return 0;
    };
    let mut by_tool: std::collections::BTreeMap<String, Vec<(String, String)>> =
        std::collections::BTreeMap::new();
    let mut tests = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(test), Some(what), why) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        tests.insert(test.to_owned());
        by_tool
            .entry(what.to_owned())
            .or_default()
            .push((test.to_owned(), why.unwrap_or("").to_owned()));
    }
    if tests.is_empty() {
        return 0;
    }
    println!(
        "\nxtask test: {} test(s) did not check everything, because something outside the \
         Rust toolchain is missing (CI provides all of it):",
        tests.len()
    );
    for (what, entries) in &by_tool {
        println!(
            "  needs {what} ({} test(s)): {}",
            entries.len(),
            entries[0].1
        );
        for (test, _) in entries {
            println!("    - {test}");
        }
    }
    tests.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nextest_and_libtest_summaries() {
        let mut c = Counts::default();
        parse_nextest(
            "     Summary [ 200.1s] 318 tests run: 316 passed, 2 failed, 7 skipped",
            &mut c,
        );
        assert_eq!((c.passed, c.failed, c.skipped), (316, 2, 7));
        let mut d = Counts::default();
        parse_libtest(
            "test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s",
            &mut d,
        );
        parse_libtest("test result: ok. 4 passed; 0 failed; 0 ignored", &mut d);
        assert_eq!((d.passed, d.failed, d.skipped), (7, 1, 2));
        assert_eq!(strip_ansi("\u{1b}[32;1mSummary\u{1b}[0m x"), "Summary x");
    }
}
