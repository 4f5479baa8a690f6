//! Gate isolation: gate commands (BUILD, TEST, AUDIT, BENCHMARK, registered benchmarks)
//! run where they cannot obtain the orchestrator's secrets — the signing key and the API
//! token — by any means open to them.
//!
//! Two halves:
//!
//! - **The orchestrator process** ([`harden_process`], called first thing by the CLI):
//!   the secret variables are moved into a zeroizing vault and their entries overwritten
//!   in the initial environment block that `/proc/PID/environ` shows
//!   ([`fleetgate_trust::secret_env`]), and the process is made non-dumpable
//!   (`PR_SET_DUMPABLE 0`: another process of the same non-root user can no longer read
//!   its `/proc/PID/environ` or `/proc/PID/mem`, nor ptrace it, nor get a core dump).
//! - **Each gate command** runs through the helper ([`HELPER_ARG`], a hidden subcommand
//!   of the `fleetgate` binary, see [`set_helper`] and [`helper_main`]) in new user, PID
//!   and mount namespaces:
//!   1. stage 1 (`fleetgate __gate-exec`) unshares user + mount + PID namespaces, maps
//!      its own uid/gid to 0, makes `/` private, bind-mounts `/dev/null` over every
//!      protected file ([`protect_path`]: the `[signing] key_file`, the API token file)
//!      and an empty read-only tmpfs over a protected directory, and replaces `/dev` with
//!      a tmpfs holding only `null zero full random urandom tty`, `shm` and `pts` (as root
//!      the gate would otherwise be able to read the raw disk the key file is on);
//!   2. stage 2 (`fleetgate __gate-init`) is PID 1 of the new PID namespace: it mounts a
//!      fresh `/proc` (only the gate's own processes are in it — no ancestor's
//!      `/proc/PID/environ` or `/proc/PID/mem`, nothing to ptrace), then enters one more
//!      user + mount namespace, which *locks* the mounts above (the kernel marks mounts
//!      copied into a less privileged mount namespace `MNT_LOCKED`: the gate, root of its
//!      own namespace, can neither unmount them nor bind their parent elsewhere to look
//!      beneath), and runs the gate as its child, reaping orphans, exiting with the gate's
//!      code (128 + signal when it was killed). When PID 1 exits the kernel kills
//!      everything left in the namespace, and the whole tree stays in the process group
//!      `exec.rs` kills on a timeout.
//!
//! Gates keep what they legitimately need: the filesystem (the checkout, the toolchain
//! in `PATH`, `$HOME`, `/tmp`), the network (loopback included), and files they create
//! are owned by the orchestrator's user.
//!
//! Whether this works is probed once per process (the helper runs the whole setup with
//! `--probe`); [`isolation`] reports the result, the CLI prints it at start when
//! degraded and in `status`. When the namespaces do not work (no unprivileged user
//! namespaces), the helper falls back to **Landlock** (`--landlock`): the gate runs in a
//! Landlock domain that allows every file access but, like any Landlock domain, cannot
//! read `/proc/PID/environ|mem` of, ptrace, or signal a process outside it — every
//! ancestor included, as root too; the key file then stays readable, so this is
//! reported as degraded. Without either (or without a helper binary) gate commands run
//! as before — without the secrets in their environment, the orchestrator
//! non-dumpable — and the report says what is missing.
//! `FLEETGATE_REQUIRE_GATE_ISOLATION=1` makes gates fail whenever isolation is degraded.

use crate::RuntimeError;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use serde::Serialize;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The hidden subcommand of the `fleetgate` binary that runs a gate command isolated:
/// `fleetgate __gate-exec [--probe] [--hide PATH]... -- PROGRAM ARGS...`.
pub const HELPER_ARG: &str = "__gate-exec";
/// Stage 2 of the helper (PID 1 of the gate's PID namespace).
pub const INIT_ARG: &str = "__gate-init";
/// Exit code of the helper when the isolation could not be set up (the gate did not run).
pub const EXIT_SETUP_FAILED: u8 = 125;
/// Set to `1` to make gates fail when isolation is degraded instead of running them.
pub const ENV_REQUIRE: &str = "FLEETGATE_REQUIRE_GATE_ISOLATION";

static HELPER: OnceLock<PathBuf> = OnceLock::new();
static PROTECTED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static PROBE: OnceLock<Mode> = OnceLock::new();

/// What the probe found usable.
#[derive(Debug, Clone)]
enum Mode {
    /// User + PID + mount namespaces (full isolation).
    Namespaces,
    /// Namespaces failed (why); Landlock works.
    Landlock(String),
    /// Neither: why not namespaces, why not Landlock.
    Direct(String, String),
}
static HARDENING: Mutex<Option<Hardening>> = Mutex::new(None);

/// Register the binary whose `main` dispatches [`HELPER_ARG`] and [`INIT_ARG`] to
/// [`helper_main`] (the `fleetgate` CLI registers itself). Without one, gate isolation
/// is degraded. The first registration wins.
pub fn set_helper(path: PathBuf) {
    let _ = HELPER.set(path);
}

/// Hide `path` (a file or directory) from every gate command started from now on. Paths
/// are canonicalized when they exist (a symlink hides its target).
pub fn protect_path(path: &Path) {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    PROTECTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(p);
}

/// The paths [`protect_path`] registered.
pub fn protected_paths() -> Vec<PathBuf> {
    PROTECTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// What [`harden_process`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hardening {
    /// Secret variables moved out of the environment into the vault.
    pub sealed: Vec<String>,
    /// The initial environment block no longer holds them.
    pub environ_scrubbed: bool,
    /// `PR_SET_DUMPABLE 0` took effect.
    pub non_dumpable: bool,
    /// What failed, if anything.
    pub problems: Vec<String>,
}

/// Harden the orchestrator process: seal the secret variables `names` (see
/// [`fleetgate_trust::secret_env::seal`]) and make the process non-dumpable. Call it
/// while the process has one thread; calling it again seals more names.
pub fn harden_process(names: &[&str]) -> Hardening {
    let mut h = HARDENING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .unwrap_or(Hardening {
            environ_scrubbed: true,
            ..Hardening::default()
        });
    match fleetgate_trust::secret_env::seal(names) {
        Ok(s) => {
            for n in s.taken {
                if !h.sealed.contains(&n) {
                    h.sealed.push(n);
                }
            }
        }
        Err(e) => {
            h.environ_scrubbed = false;
            h.problems.push(e.to_string());
        }
    }
    match nix::sys::prctl::set_dumpable(false) {
        Ok(()) => h.non_dumpable = true,
        Err(e) => h.problems.push(format!("prctl(PR_SET_DUMPABLE, 0): {e}")),
    }
    *HARDENING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(h.clone());
    h
}

/// How gate commands are isolated in this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Isolation {
    /// `full` or `degraded`.
    pub level: &'static str,
    /// Gates run in their own user, PID and mount namespaces.
    pub namespaces: bool,
    /// Gates run in a Landlock domain (the fallback without namespaces).
    pub landlock: bool,
    /// The orchestrator process is non-dumpable.
    pub orchestrator_non_dumpable: bool,
    /// The secret variables were sealed (taken out of `/proc/self/environ`).
    pub environment_sealed: bool,
    /// Files and directories hidden from gates.
    pub hidden_paths: Vec<String>,
    /// Each mechanism that is missing, and why.
    pub missing: Vec<String>,
}

impl Isolation {
    /// One line for humans: `gate isolation: full (…)` or
    /// `gate isolation: DEGRADED (…): gates may be able to read …`.
    pub fn line(&self) -> String {
        if self.missing.is_empty() {
            format!(
                "gate isolation: full (user+pid+mount namespaces, fresh /proc and /dev, {} protected path(s) hidden, orchestrator non-dumpable, secret variables sealed)",
                self.hidden_paths.len()
            )
        } else {
            format!(
                "gate isolation: DEGRADED ({}): gate commands may be able to read the signing key or the API token",
                self.missing.join("; ")
            )
        }
    }
}

/// The isolation gate commands get in this process (probes the helper once).
pub fn isolation() -> Isolation {
    let mut missing = Vec::new();
    let mode = probe();
    match mode {
        Mode::Namespaces => {}
        Mode::Landlock(ns) => missing.push(format!(
            "no namespaces: {ns}; fallback Landlock: ancestors' /proc/PID/environ|mem and ptrace are blocked, but the key file and raw devices are not hidden"
        )),
        Mode::Direct(ns, ll) => {
            missing.push(format!("no namespaces: {ns}"));
            missing.push(format!("no Landlock: {ll}"));
        }
    }
    let h = HARDENING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (non_dumpable, sealed) = match &h {
        Some(h) => (h.non_dumpable, h.environ_scrubbed),
        None => (false, false),
    };
    match &h {
        None => missing.push(
            "the orchestrator process was not hardened (harden_process was not called)".into(),
        ),
        Some(h) => missing.extend(h.problems.iter().cloned()),
    }
    Isolation {
        level: if missing.is_empty() {
            "full"
        } else {
            "degraded"
        },
        namespaces: matches!(mode, Mode::Namespaces),
        landlock: matches!(mode, Mode::Landlock(_)),
        orchestrator_non_dumpable: non_dumpable,
        environment_sealed: sealed,
        hidden_paths: protected_paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        missing,
    }
}

fn probe() -> &'static Mode {
    PROBE.get_or_init(|| {
        let Some(helper) = HELPER.get() else {
            let why = "no gate helper binary registered (run gates through the `fleetgate` binary, or call fleetgate_runtime::sandbox::set_helper)".to_owned();
            return Mode::Direct(why.clone(), why);
        };
        let ns = match run_probe(helper, &[]) {
            Ok(()) => return Mode::Namespaces,
            Err(why) => why,
        };
        match run_probe(helper, &["--landlock"]) {
            Ok(()) => Mode::Landlock(ns),
            Err(ll) => Mode::Direct(ns, ll),
        }
    })
}

/// Run the helper's `--probe` with `extra` arguments: `Ok` when the setup worked.
fn run_probe(helper: &Path, extra: &[&str]) -> Result<(), String> {
    let mut child = Command::new(helper)
        .arg(HELPER_ARG)
        .args(extra)
        .args(["--probe", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the gate helper {}: {e}", helper.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the gate helper's probe did not finish within 20s".into());
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    Err(err
        .trim()
        .trim_start_matches("fleetgate gate isolation: ")
        .to_owned())
}

/// The command that runs `program args` for a gate: through the helper when isolation
/// works, else directly (`Ok(None)`: the caller runs it as before), or an error when
/// [`ENV_REQUIRE`] asks for isolation and it is not available.
pub(crate) fn gate_command(
    program: &OsStr,
    args: &[OsString],
) -> Result<Option<Command>, RuntimeError> {
    let mode = probe();
    let iso = isolation();
    if iso.level != "full" {
        if std::env::var_os(ENV_REQUIRE).is_some_and(|v| v == "1") {
            return Err(crate::ConfigProblem::IsolationRequired {
                env: ENV_REQUIRE,
                missing: iso.missing.clone(),
            }
            .into());
        }
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| {
            tracing::warn!("{}", iso.line());
        });
    }
    let landlock = match mode {
        Mode::Namespaces => false,
        Mode::Landlock(_) => true,
        Mode::Direct(..) => return Ok(None),
    };
    let helper = HELPER
        .get()
        .ok_or(crate::ConfigProblem::IsolationHelperMissing)?;
    let mut cmd = Command::new(helper);
    cmd.arg(HELPER_ARG);
    if landlock {
        cmd.arg("--landlock");
    }
    for p in protected_paths() {
        cmd.arg("--hide").arg(p);
    }
    cmd.arg("--").arg(program).args(args);
    Ok(Some(cmd))
}

/// Entry point of the helper: `args` are the process arguments after the subcommand
/// name ([`HELPER_ARG`] for stage 1, [`INIT_ARG`] for stage 2). Never returns to the
/// caller's own logic: the binary exits with the returned code.
pub fn helper_main(stage: &str, args: &[OsString]) -> ExitCode {
    let parsed = match HelperArgs::parse(args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let r = if stage == INIT_ARG {
        stage2(&parsed)
    } else {
        stage1(&parsed)
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("fleetgate gate isolation: {why}");
    ExitCode::from(EXIT_SETUP_FAILED)
}

#[derive(Debug, Default)]
struct HelperArgs {
    probe: bool,
    landlock: bool,
    hide: Vec<PathBuf>,
    command: Vec<OsString>,
}

impl HelperArgs {
    fn parse(args: &[OsString]) -> Result<HelperArgs, String> {
        let mut out = HelperArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--probe") => out.probe = true,
                Some("--landlock") => out.landlock = true,
                Some("--hide") => {
                    let p = it.next().ok_or("--hide needs a path")?;
                    out.hide.push(PathBuf::from(p));
                }
                Some("--") => {
                    out.command = it.cloned().collect();
                    break;
                }
                _ => return Err(format!("unexpected helper argument {a:?}")),
            }
        }
        if out.command.is_empty() {
            return Err("no command given after --".into());
        }
        Ok(out)
    }

    fn to_args(&self) -> Vec<OsString> {
        let mut v = Vec::new();
        if self.probe {
            v.push("--probe".into());
        }
        if self.landlock {
            v.push("--landlock".into());
        }
        for p in &self.hide {
            v.push("--hide".into());
            v.push(p.clone().into_os_string());
        }
        v.push("--".into());
        v.extend(self.command.iter().cloned());
        v
    }
}

fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {path} ({text:?}): {e}"))
}

/// Map the current uid/gid to 0 in the user namespace just created.
fn map_ids(uid: u32, gid: u32) -> Result<(), String> {
    // Must precede gid_map for an unprivileged writer; a nested namespace inherits
    // "deny" and may refuse the write, which is fine.
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    write_file("/proc/self/uid_map", &format!("0 {uid} 1\n"))?;
    write_file("/proc/self/gid_map", &format!("0 {gid} 1\n"))
}

fn mount_err(what: &str, target: &Path) -> impl FnOnce(nix::Error) -> String {
    let t = target.display().to_string();
    let w = what.to_owned();
    move |e| format!("{w} {t}: {e}")
}

fn stage1(a: &HelperArgs) -> Result<u8, String> {
    if a.landlock {
        return landlock_exec(a);
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    // The running binary itself, even if its file was replaced or removed meanwhile.
    let exe = PathBuf::from("/proc/self/exe");
    nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID,
    )
    .map_err(|e| format!("unshare(user, mount, pid namespaces): {e}"))?;
    map_ids(uid, gid)?;
    let none: Option<&str> = None;
    nix::mount::mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(mount_err("make private", Path::new("/")))?;
    for p in &a.hide {
        hide(p)?;
    }
    fresh_dev()?;
    let mut child = Command::new(&exe)
        .arg(INIT_ARG)
        .args(a.to_args())
        .spawn()
        .map_err(|e| format!("start stage 2 ({}): {e}", exe.display()))?;
    let status = child.wait().map_err(|e| format!("wait for stage 2: {e}"))?;
    Ok(exit_code_of(status))
}

fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(255),
        (None, None) => 1,
    }
}

/// Cover `p`: `/dev/null` over a file, an empty read-only tmpfs over a directory.
fn hide(p: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("inspect protected path {}: {e}", p.display())),
    };
    if meta.is_dir() {
        nix::mount::mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=0555"),
        )
        .map_err(mount_err("hide directory", p))
    } else {
        nix::mount::mount(Some("/dev/null"), p, none, MsFlags::MS_BIND, none)
            .map_err(mount_err("hide file", p))
    }
}

/// Replace `/dev` with a tmpfs holding only the harmless devices (bound from the real
/// ones), `shm` and a private `pts`.
fn fresh_dev() -> Result<(), String> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let none: Option<&str> = None;
    let mut keep = Vec::new();
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let path = format!("/dev/{name}");
        if let Ok(fd) = nix::fcntl::open(
            path.as_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            keep.push((name, fd));
        }
    }
    let dev = Path::new("/dev");
    nix::mount::mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(mount_err("mount a fresh", dev))?;
    for (name, fd) in &keep {
        let target = dev.join(name);
        std::fs::File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        nix::mount::mount(Some(source.as_str()), &target, none, MsFlags::MS_BIND, none)
            .map_err(mount_err("bind device", &target))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("create /dev/{link}: {e}"))?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(|e| format!("create /dev/shm: {e}"))?;
    nix::mount::mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(mount_err("mount", &shm))?;
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(|e| format!("create /dev/pts: {e}"))?;
    // A private devpts is a convenience (tests that need a terminal); not every kernel
    // allows it in a user namespace, and nothing secret depends on it.
    let _ = nix::mount::mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    Ok(())
}

/// The fallback without namespaces: enter a Landlock domain that allows every file
/// access (so the gate keeps the filesystem) and scopes signals and abstract sockets;
/// any domain keeps its processes from reading `/proc/PID/environ|mem` of, or tracing,
/// processes outside it. Then become the gate command (same PID, same process group).
fn landlock_exec(a: &HelperArgs) -> Result<u8, String> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
        path_beneath_rules,
    };
    use std::os::unix::ffi::OsStringExt as _;
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| format!("Landlock: {e}");
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_all(abi)))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(format!(
            "Landlock is not enforced by this kernel ({:?})",
            status.landlock
        ));
    }
    if a.probe {
        let parent = nix::unistd::getppid();
        return match std::fs::read(format!("/proc/{parent}/environ")) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(0),
            Err(e) => Err(format!(
                "Landlock probe: reading the parent's environ gave {e}"
            )),
            Ok(_) => Err("Landlock did not block reading the parent's environ".into()),
        };
    }
    let argv = a
        .command
        .iter()
        .map(|s| std::ffi::CString::new(s.clone().into_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "a command argument contains a NUL byte".to_owned())?;
    let program = argv.first().ok_or("no command given after --")?;
    let e = nix::unistd::execvp(program, &argv).unwrap_err();
    Err(format!("start {program:?}: {e}"))
}

fn stage2(a: &HelperArgs) -> Result<u8, String> {
    use nix::sys::wait::{WaitStatus, waitpid};
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getpid().as_raw() != 1 {
        return Err("stage 2 is not PID 1 of a new PID namespace".into());
    }
    let proc_dir = Path::new("/proc");
    nix::mount::mount(
        Some("proc"),
        proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("mount a fresh", proc_dir))?;
    // Lock everything above: a mount namespace owned by a less privileged user
    // namespace gets its inherited mounts marked MNT_LOCKED.
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(user, mount namespaces) to lock the mounts: {e}"))?;
    map_ids(0, 0)?;
    if a.probe {
        return probe_checks(a);
    }
    let (program, args) = a.command.split_first().ok_or("no command given after --")?;
    let child = Command::new(program)
        .args(args)
        .spawn()
        .map_err(|e| format!("start {program:?}: {e}"))?;
    let child_pid = nix::unistd::Pid::from_raw(
        i32::try_from(child.id()).map_err(|_| "child pid out of range".to_owned())?,
    );
    // PID 1: reap every orphan, return when our child ends.
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child_pid => {
                return Ok(u8::try_from(code & 0xff).unwrap_or(1));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child_pid => {
                return Ok(u8::try_from(128 + (sig as i32)).unwrap_or(255));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("wait for the gate command: {e}")),
        }
    }
}

/// What `--probe` checks after the full setup.
fn probe_checks(a: &HelperArgs) -> Result<u8, String> {
    let own = std::fs::read_link("/proc/self").map_err(|e| format!("read /proc/self: {e}"))?;
    if own != Path::new("1") {
        return Err(format!(
            "the fresh /proc does not show this process as 1 ({own:?})"
        ));
    }
    for p in &a.hide {
        if p.is_file() && std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) != 0 {
            return Err(format!("{} is still readable", p.display()));
        }
    }
    if nix::mount::umount("/proc").is_ok() {
        return Err("the gate could unmount /proc (mounts are not locked)".into());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_arguments_round_trip() {
        let args: Vec<OsString> = [
            "--hide",
            "/a/key",
            "--probe",
            "--",
            "sh",
            "-c",
            "echo --hide",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let p = HelperArgs::parse(&args).unwrap();
        assert!(p.probe);
        assert_eq!(p.hide, vec![PathBuf::from("/a/key")]);
        assert_eq!(p.command.len(), 3);
        let again = HelperArgs::parse(&p.to_args()).unwrap();
        assert_eq!(again.command, p.command);
        assert_eq!(again.hide, p.hide);
        assert!(HelperArgs::parse(&[OsString::from("--")]).is_err());
        assert!(HelperArgs::parse(&[OsString::from("--bogus")]).is_err());
    }

    #[test]
    fn without_a_helper_isolation_is_degraded_and_says_why() {
        let iso = isolation();
        assert_eq!(iso.level, "degraded");
        assert!(!iso.namespaces);
        assert!(iso.line().contains("DEGRADED"), "{}", iso.line());
        assert!(
            iso.line().contains("no gate helper binary"),
            "{}",
            iso.line()
        );
    }
}
