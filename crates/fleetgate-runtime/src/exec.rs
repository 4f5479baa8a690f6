//! Running gate commands: `sh -c` (or an argv without a shell, for registered
//! benchmarks) in the run's checkout, output to a log file, a timeout
//! that kills the whole process group, and the tail of the output for failure details.
//! Every command runs isolated from the orchestrator's secrets when the machine allows
//! it (see [`crate::sandbox`]): through the `fleetgate __gate-exec` helper, in its own
//! user, PID and mount namespaces.

use crate::RuntimeError;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variables that hold fleetgate's secrets: never passed to a gate command
/// (the release's own build, test and benchmark scripts must not see the signing key or
/// the API token of the orchestrator that runs them).
pub const SECRET_ENV: &[&str] = &[
    fleetgate_trust::ENV_SIGNING_KEY,
    fleetgate_trust::ENV_HART_SIGNING_KEY,
    "HEVOLVE_MASTER_PRIVATE_KEY_HEX",
    "HEVOLVE_MASTER_PRIVATE_KEY",
    "FLEETGATE_API_TOKEN",
];

/// How many bytes of output end up in a failure detail.
pub const TAIL_BYTES: u64 = 2048;

/// The result of a finished command.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// True when it was killed for exceeding its timeout.
    pub timed_out: bool,
    /// The last [`TAIL_BYTES`] of combined stdout/stderr.
    pub tail: String,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl CommandOutcome {
    /// Exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// "exit code 2" / "timed out after …" / "killed by a signal".
    pub fn describe(&self, timeout: Duration) -> String {
        if self.timed_out {
            format!("timed out after {}s and was killed", timeout.as_secs())
        } else {
            match self.code {
                Some(c) => format!("exited with code {c}"),
                None => "was killed by a signal".to_owned(),
            }
        }
    }
}

/// Run `command` with `sh -c` in `cwd`, appending output to `log`.
pub fn run_shell(
    command: &str,
    cwd: &Path,
    env: &[(&str, String)],
    timeout: Duration,
    log: &Path,
) -> Result<CommandOutcome, RuntimeError> {
    run(
        OsStr::new("sh"),
        &[OsString::from("-c"), OsString::from(command)],
        command,
        cwd,
        env,
        timeout,
        log,
    )
}

/// Run `argv[0]` with the arguments `argv[1..]` directly — no shell, so nothing in the
/// arguments is interpreted — in `cwd`, appending output to `log`. A relative program
/// path (`./bench.sh`, `scripts/bench`) is taken relative to `cwd`.
pub fn run_argv(
    argv: &[String],
    cwd: &Path,
    env: &[(&str, String)],
    timeout: Duration,
    log: &Path,
) -> Result<CommandOutcome, RuntimeError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(crate::ConfigProblem::EmptyCommand.into());
    };
    let program_path = if program.contains('/') && !Path::new(program).is_absolute() {
        cwd.join(program).display().to_string()
    } else {
        program.clone()
    };
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    run(
        OsStr::new(&program_path),
        &args,
        &argv.join(" "),
        cwd,
        env,
        timeout,
        log,
    )
}

fn run(
    program: &OsStr,
    args: &[OsString],
    label: &str,
    cwd: &Path,
    env: &[(&str, String)],
    timeout: Duration,
    log: &Path,
) -> Result<CommandOutcome, RuntimeError> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RuntimeError::io("create log directory", parent, e))?;
    }
    let out = File::create(log).map_err(|e| RuntimeError::io("create log file", log, e))?;
    let err = out
        .try_clone()
        .map_err(|e| RuntimeError::io("open log file", log, e))?;
    let mut cmd = match crate::sandbox::gate_command(program, args)? {
        Some(isolated) => isolated,
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    let started = Instant::now();
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    for k in SECRET_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::io("start", Path::new(label), e))?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut timed_out = false;
    let status = loop {
        match child
            .try_wait()
            .map_err(|e| RuntimeError::io("wait for", Path::new(label), e))?
        {
            Some(status) => break status,
            None if started.elapsed() >= timeout => {
                timed_out = true;
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                break child
                    .wait()
                    .map_err(|e| RuntimeError::io("wait for", Path::new(label), e))?;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // Reap stragglers left in the group (background jobs of the script).
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    Ok(CommandOutcome {
        code: status.code(),
        timed_out,
        tail: tail(log),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The last [`TAIL_BYTES`] of a file, lossily decoded.
pub fn tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_owned()
}
