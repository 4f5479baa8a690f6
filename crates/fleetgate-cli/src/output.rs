//! Human-readable rendering of states, progress and comparisons.

use fleetgate_core::bench::CompareReport;
use fleetgate_core::{Outcome, PipelineState, Stage};
use fleetgate_runtime::Progress;
use std::path::PathBuf;

/// Format a unix time as RFC 3339 (UTC, seconds).
pub fn when(t: f64) -> String {
    if !(t.is_finite() && t >= 0.0) {
        return "?".into();
    }
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t);
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Characters of one line of a reason or detail that `status` prints; the rest is
/// counted (`status --json` has it all). A reason written by an older build could hold a
/// name per node (270 kB at 10,000 canary nodes).
const STATUS_LINE_CHARS: usize = 2_000;

/// `line` cut to [`STATUS_LINE_CHARS`] characters, with how much was left out.
fn clip(line: &str) -> std::borrow::Cow<'_, str> {
    match line.char_indices().nth(STATUS_LINE_CHARS) {
        None => line.into(),
        Some((at, _)) => format!(
            "{}… ({} more bytes; `status --json` has all of it)",
            &line[..at],
            line.len() - at
        )
        .into(),
    }
}

fn ago(t: f64) -> String {
    let now = fleetgate_runtime::now();
    let secs = (now - t).max(0.0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// One line for a progress event.
pub fn progress_line(p: &Progress) -> String {
    match p {
        Progress::GateStarted {
            stage,
            version,
            log,
        } => match log {
            Some(log) => format!(
                "[{:<9}] {version}: running gate… (log: {})",
                stage.gate_name(),
                log.display()
            ),
            None => format!("[{:<9}] {version}: running gate…", stage.gate_name()),
        },
        Progress::GateFinished {
            stage,
            verdict,
            now_at,
        } => {
            let word = crate::outcome_word(verdict.outcome);
            let first = verdict.detail.lines().next().unwrap_or("");
            let skipped = if verdict.skipped {
                " (skipped by config)"
            } else {
                ""
            };
            let arrow = if *now_at != *stage {
                format!(" → {now_at}")
            } else {
                String::new()
            };
            let mut s = format!("[{:<9}] {word}{skipped}: {first}{arrow}", stage.gate_name());
            if verdict.outcome == Outcome::Failed {
                for l in verdict.detail.lines().skip(1).take(20) {
                    s.push_str("\n            | ");
                    s.push_str(l);
                }
            }
            s
        }
        Progress::Discarded { stage, reason } => {
            format!("[{:<9}] result discarded: {reason}", stage.gate_name())
        }
        Progress::Delivered { id, note } => format!("[OUTBOX   ] {id}: {note}"),
        Progress::DeliveryFailed { id, error } => {
            format!("[OUTBOX   ] {id}: NOT delivered: {error} (kept; retried on the next advance)")
        }
        Progress::Abandoned { id, reason } => {
            format!(
                "[OUTBOX   ] {id}: NOT sent, and it never can be: {reason} (recorded in the run's failure detail)"
            )
        }
        Progress::Waiting { stage, secs } => format!(
            "[{:<9}] pending; checking again in {secs}s",
            stage.gate_name()
        ),
        Progress::Paused { stage, by, reason } => format!(
            "[{:<9}] PAUSED by {by}: {reason}; nothing is evaluated or sent until `fleetgate resume`",
            stage.gate_name()
        ),
        Progress::Standby { detail } => {
            format!("[STANDBY  ] waiting for the pipeline lease: {detail}")
        }
        Progress::TookOver { detail } => format!("[LEASE    ] {detail}"),
    }
}

/// A progress callback printing to stderr (silent with --json, where stdout is for data
/// and stderr is left quiet for machines). While a gate runs, a line every
/// `FLEETGATE_PROGRESS_SECS` (default 15) says how long it has run and where its log is;
/// the finished line says how long it took.
pub fn progress_printer(json: bool) -> impl FnMut(Progress) {
    let every = progress_every();
    let mut ticker: Option<Ticker> = None;
    move |p| {
        if json {
            return;
        }
        let took = ticker.take().map(Ticker::stop);
        let mut line = progress_line(&p);
        if let (Progress::GateFinished { .. }, Some(took)) = (&p, took) {
            let first = line.find('\n').unwrap_or(line.len());
            line.insert_str(first, &format!(" (took {})", span(took)));
        }
        eprintln!("{line}");
        if let Progress::GateStarted { stage, log, .. } = &p {
            ticker = Some(Ticker::start(stage.gate_name(), log.clone(), every));
        }
    }
}

/// Seconds for people: `45s`, `1m 5s`.
fn span(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn progress_every() -> std::time::Duration {
    let secs = std::env::var("FLEETGATE_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(15);
    std::time::Duration::from_secs(secs)
}

/// Says "still running" every `every` until stopped.
struct Ticker {
    started: std::time::Instant,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn start(gate: &'static str, log: Option<PathBuf>, every: std::time::Duration) -> Ticker {
        let started = std::time::Instant::now();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                let ran = span(started.elapsed().as_secs());
                match &log {
                    Some(l) => eprintln!(
                        "[{gate:<9}] still running after {ran} (log: {})",
                        l.display()
                    ),
                    None => eprintln!("[{gate:<9}] still running after {ran}"),
                }
            }
        });
        Ticker {
            started,
            stop,
            thread,
        }
    }

    /// Stops the ticker; returns the seconds the gate ran.
    fn stop(self) -> u64 {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        self.started.elapsed().as_secs()
    }
}

/// Print the state for a human.
pub fn print_status(s: &PipelineState, quarantined: &[PathBuf]) {
    for q in quarantined {
        println!(
            "WARNING: a corrupt state file was moved aside to {} (inspect or delete it)",
            q.display()
        );
    }
    if s.stage == Stage::Idle && s.run_id.is_none() {
        println!("stage: idle (no run yet) — start one with `fleetgate start <version>`");
    } else {
        println!("stage:    {}", s.stage);
        if let Some(p) = &s.paused {
            println!(
                "PAUSED:   by {} since {} ({} ago): {} — `fleetgate resume` to go on",
                p.by,
                when(p.at),
                ago(p.at),
                p.reason
            );
        }
        println!("version:  {}  commit {}", s.version, s.git_sha);
        if let Some(c) = &s.channel {
            println!("channel:  {c}");
        }
        if let Some(run) = &s.run_id {
            println!("run:      {run}  epoch {}", s.epoch);
        }
        if let Some(t) = s.started_at {
            println!("started:  {} ({} ago)", when(t), ago(t));
        }
        if let Some(h) = &s.code_hash {
            println!("code:     {h}");
        }
        println!("gates:");
        for st in Stage::GATED {
            match s.gate_results.get(&st) {
                Some(r) => {
                    let word = if r.verdict.skipped {
                        "SKIPPED"
                    } else {
                        crate::outcome_word(r.verdict.outcome)
                    };
                    let first = clip(r.verdict.detail.lines().next().unwrap_or(""));
                    let checks = if r.checks > 1 {
                        format!(" ({} checks)", r.checks)
                    } else {
                        String::new()
                    };
                    let word = if r.promoted.is_some() {
                        "PROMOTED"
                    } else {
                        word
                    };
                    println!("  {:<10} {:<8} {first}{checks}", st.gate_name(), word);
                }
                None if st == s.stage => println!("  {:<10} {:<8}", st.gate_name(), "next"),
                None => {}
            }
        }
        let path: Vec<&str> = s
            .stage_history
            .iter()
            .filter(|h| h.from != Some(h.stage))
            .map(|h| h.stage.as_str())
            .collect();
        println!("history:  {}", path.join(" → "));
        for h in s.stage_history.iter().filter(|h| {
            h.reason.as_deref().is_some_and(|r| {
                r.starts_with("paused by")
                    || r.starts_with("resumed by")
                    || r.contains("promoted by")
            })
        }) {
            println!(
                "operator: {} {}",
                when(h.at),
                h.reason.as_deref().unwrap_or("")
            );
        }
        if let Some(f) = &s.failure_detail {
            println!("failure:  {}", clip(f.lines().next().unwrap_or("")));
            for l in f.lines().skip(1).take(20) {
                println!("          | {}", clip(l));
            }
        }
        if let Some(r) = &s.rollback_reason {
            println!("rollback: {}", clip(r));
        }
        if let Some(c) = &s.canary
            && let Some(sel) = &c.selection
        {
            let window = match (c.window_start, c.deadline) {
                (Some(a), Some(b)) => format!("window {} → {}", when(a as f64), when(b as f64)),
                _ => "window not open yet".to_owned(),
            };
            println!(
                "canary:   {} of {} eligible node(s), {window}",
                sel.nodes.len(),
                sel.eligible
            );
            print_deliveries(&c.deliveries);
        }
        if let Some(d) = &s.deploy {
            let total = d.steps.len();
            for (i, step) in d.steps.iter().enumerate() {
                let state = match (&step.passed, &step.progress.selection) {
                    (Some(p), _) => {
                        let short = p.split_once(": ").map_or(p.as_str(), |(_, r)| r);
                        format!("done — {}", short.lines().next().unwrap_or(""))
                    }
                    (None, Some(sel)) => match (step.progress.window_start, step.progress.deadline)
                    {
                        (Some(a), Some(b)) => format!(
                            "{} node(s) judged against {}, window {} → {}",
                            sel.nodes.len(),
                            sel.baseline.len(),
                            when(a as f64),
                            when(b as f64)
                        ),
                        _ => format!(
                            "{} node(s), waiting for them to report the release",
                            sel.nodes.len()
                        ),
                    },
                    (None, None) => "not started".to_owned(),
                };
                println!(
                    "step {}/{total}: {:.0}% of the fleet: {state}",
                    i + 1,
                    step.fraction * 100.0
                );
                if step.passed.is_none() {
                    print_deliveries(&step.progress.deliveries);
                }
            }
            println!(
                "deploy:   {:?} to {} target(s){}",
                d.mode,
                d.targets.len(),
                d.published
                    .as_deref()
                    .map(|p| format!("; {p}"))
                    .unwrap_or_default()
            );
            print_deliveries(&d.deliveries);
        }
        for e in &s.outbox {
            println!(
                "pending:  effect {} ({:?}) — {} attempt(s){}",
                e.id,
                e.action,
                e.attempts,
                e.last_error
                    .as_ref()
                    .map(|x| format!(", last error: {x}"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(c) = &s.last_completed {
        println!(
            "last completed release: {} ({})",
            c.version,
            c.git_sha.get(..12).unwrap_or(&c.git_sha)
        );
    }
    for (channel, c) in &s.channel_releases {
        println!(
            "last completed on `{channel}`: {} ({})",
            c.version,
            c.git_sha.get(..12).unwrap_or(&c.git_sha)
        );
    }
}

fn print_deliveries(ds: &[fleetgate_core::fleet::NodeDelivery]) {
    // On a large fleet: how many per status, then the first few not done (`--json` has
    // every one).
    const SHOWN: usize = 20;
    if ds.len() > SHOWN {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for d in ds {
            *counts
                .entry(format!("{:?}", d.status).to_lowercase())
                .or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("          {} deliveries: {}", ds.len(), counts.join(", "));
    }
    let open: Vec<&fleetgate_core::fleet::NodeDelivery> = if ds.len() > SHOWN {
        ds.iter()
            .filter(|d| d.status != fleetgate_core::fleet::DeliveryStatus::Done)
            .take(SHOWN)
            .collect()
    } else {
        ds.iter().collect()
    };
    for d in open {
        println!(
            "          {:<16} {:<9} {} attempt(s){}",
            d.node,
            format!("{:?}", d.status).to_lowercase(),
            d.attempts,
            d.detail
                .as_deref()
                .map(|x| format!(" — {}", x.chars().take(120).collect::<String>()))
                .unwrap_or_default()
        );
    }
}

/// Print a benchmark comparison.
pub fn print_comparison(old: &str, new: &str, r: &CompareReport) {
    println!("{old} → {new}");
    for b in &r.benchmarks {
        let change = b
            .change
            .map(|c| format!("{:+.1}%", c * 100.0))
            .unwrap_or_else(|| "—".into());
        let fmt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_else(|| "—".into());
        println!(
            "  {:<32} {:>12} → {:<12} {:<8} {:>8}  {}",
            b.name,
            fmt(b.baseline),
            fmt(b.current),
            b.unit,
            change,
            b.status
        );
    }
    println!(
        "{}",
        if r.passed() {
            "no regression"
        } else {
            "REGRESSION"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::{STATUS_LINE_CHARS, clip};

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary_and_says_how_much_is_left_out() {
        assert_eq!(clip("short"), "short");
        let exact = "é".repeat(STATUS_LINE_CHARS);
        assert_eq!(clip(&exact), exact.as_str());
        let long = format!("{}{}", "é".repeat(STATUS_LINE_CHARS), "x".repeat(268_000));
        let cut = clip(&long);
        assert!(cut.starts_with(&exact), "{}", &cut[..10]);
        assert!(
            cut.ends_with("… (268000 more bytes; `status --json` has all of it)"),
            "{}",
            &cut[cut.len() - 80..]
        );
    }
}
