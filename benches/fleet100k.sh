#!/usr/bin/env bash
# A whole pipeline run (CANARY and DEPLOY) against N simulated nodes on PostgreSQL, with
# the orchestrator's resident memory sampled once a second (benches/README.md, "CANARY and
# DEPLOY over 100,000 simulated nodes").
#
#   cargo build --release --bin fleetgate
#   bash benches/fleet100k.sh [NODES] [WORK_DIR]        # default 100000, /tmp/fg100k
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`); uses the schema
# `fg<NODES>` (dropped and recreated). Takes about 25 minutes at 100,000 nodes: enrolment,
# 10 minutes of pre-update history (pre_window_secs = 600), then the run. Writes to WORK_DIR:
# run.log (the orchestrator), rss.tsv (unix seconds, VmRSS KiB, VmHWM KiB), time.txt
# (/usr/bin/time -v), sim.json (the simulator's summary), serve.log.
#
# FLEETGATE_BENCH_HEAPTRACK=1: the orchestrator's `run` under heaptrack, profile in
# WORK_DIR/heap.zst (`heaptrack_print -f heap.zst --print-peaks 1`); rss.tsv stays empty
# then (the sampled process is heaptrack's child) and the run is slower.
#
# FLEETGATE_BENCH_TAKEOVER=SECS: a standby orchestrator B (same database, its own state
# directory `state-b`; lease_ttl_secs = 30) runs beside A from the start; A is SIGKILLed SECS seconds after
# DEPLOY started, and B takes the lease once it has expired and finishes the run. Then
# run-b.log, time-b.txt, and rss.tsv has a fourth column (A or B). Log lines carry the
# unix second they were printed at.
set -euo pipefail
NODES=${1:-100000}
WORK=${2:-/tmp/fg100k}
HERE=$(cd "$(dirname "$0")/.." && pwd)
FG=${FLEETGATE_BIN:-$HERE/target/release/fleetgate}
PORT=${FLEETGATE_BENCH_PORT:-7323}
SCHEMA="fg${NODES}"
PG="postgres://postgres@127.0.0.1:5432/test"
WARMUP=${FLEETGATE_BENCH_WARMUP_SECS:-660}
TAKEOVER=${FLEETGATE_BENCH_TAKEOVER:-}
stamp() { perl -MPOSIX -ne '$|=1; print time(), " ", $_'; }

[ -x "$FG" ] || { echo "build it first: cargo build --release --bin fleetgate" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is required" >&2; exit 1; }

psql -q "$PG" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA;"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
git init -q . && git -c user.email=b@b -c user.name=bench commit -q --allow-empty -m init
"$FG" init >/dev/null
mkdir -p keys
"$FG" keygen --out keys/release.key >/dev/null
"$FG" trust init --key keys/release.key.pub --out keys/trust.json >/dev/null
python3 - "$PG" "$SCHEMA" <<'EOF'
import re, sys
url = f"{sys.argv[1]}?options[search_path]={sys.argv[2]}"
t = open("fleetgate.toml").read()
def section(name, body):
    global t
    t = re.sub(r"(?ms)^\[" + re.escape(name) + r"\]\n.*?(?=^\[)", f"[{name}]\n{body}\n", t, count=1)
section("stages.build", 'command = "true"')
section("stages.test", 'skip = "bench"')
section("stages.audit", 'skip = "bench"')
section("stages.benchmark", 'skip = "bench"')
t = t.replace('database_url = "sqlite://state/fleet.db"', f'database_url = "{url}"')
t = t.replace('store = "file"', 'store = "postgres"')
for k, v in {"pct": "0.10", "window_secs": "300", "sample_interval_secs": "60",
             "pre_window_secs": "600", "heartbeat_timeout_secs": "180"}.items():
    t = re.sub(rf"(?m)^{k} = \S+", f"{k} = {v}", t, count=1)
import os
if os.environ.get("FLEETGATE_BENCH_TAKEOVER"):
    t = re.sub(r"(?m)^# lease_ttl_secs = \d+.*$", "lease_ttl_secs = 30", t, count=1)
    assert "\nlease_ttl_secs = 30" in t, "no lease_ttl_secs line in fleetgate.toml"
open("fleetgate.toml", "w").write(t)
EOF
git add fleetgate.toml .gitignore && git -c user.email=b@b -c user.name=bench commit -q -m config

"$FG" fleet serve --listen "127.0.0.1:$PORT" > serve.log 2>&1 &
SERVE=$!
SIM=
trap 'kill $SERVE ${SIM:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

echo "enrolling $NODES nodes"
/usr/bin/time -f "enrolled in %e s" "$FG" fleet simulate --nodes "$NODES" \
  --endpoint "http://127.0.0.1:$PORT" --interval 60 --duration 1 --concurrency 8 > /dev/null
"$FG" fleet simulate --nodes "$NODES" --endpoint "http://127.0.0.1:$PORT" --interval 60 \
  --duration 3000 --concurrency 128 --pull-every 1 --json > sim.json 2> sim.log &
SIM=$!
echo "pre-update history: ${WARMUP} s"
sleep "$WARMUP"

"$FG" start v1.0.2 --git-sha HEAD
RUNWRAP=()
if [ -n "${FLEETGATE_BENCH_HEAPTRACK:-}" ]; then
  command -v heaptrack >/dev/null || { echo "FLEETGATE_BENCH_HEAPTRACK needs heaptrack (apt-get install heaptrack)" >&2; exit 1; }
  RUNWRAP=(heaptrack -o "$WORK/heap")
fi
/usr/bin/time -v -o time.txt "${RUNWRAP[@]}" "$FG" run 2> >(stamp > run.log) > /dev/null &
RUN=$!
RUN_B=
if [ -n "$TAKEOVER" ]; then
  sed 's/^state_dir = "state"/state_dir = "state-b"/' fleetgate.toml > fleetgate-b.toml
  grep -q '^state_dir = "state-b"' fleetgate-b.toml || { echo "no state_dir in fleetgate.toml" >&2; exit 1; }
  /usr/bin/time -v -o time-b.txt "$FG" --config fleetgate-b.toml run 2> >(stamp > run-b.log) > /dev/null &
  RUN_B=$!
fi
sleep 0.5
: > rss.tsv
sample() { # $1 = the /usr/bin/time pid, $2 = label
  local pid
  pid=$(pgrep -P "$1" -x fleetgate | head -n1 || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    awk -v t="$(date +%s)" -v w="$2" '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{print t"\t"r"\t"h"\t"w}' "/proc/$pid/status" >> rss.tsv || true
  fi
}
KILLED=
while kill -0 $RUN 2>/dev/null || { [ -n "$RUN_B" ] && kill -0 $RUN_B 2>/dev/null; }; do
  kill -0 $RUN 2>/dev/null && sample $RUN A
  [ -n "$RUN_B" ] && kill -0 $RUN_B 2>/dev/null && sample $RUN_B B
  if [ -n "$TAKEOVER" ] && [ -z "$KILLED" ]; then
    DEPLOY_AT=$(grep -m1 -E '^[0-9]+ \[DEPLOY' run.log | cut -d' ' -f1 || true)
    if [ -n "$DEPLOY_AT" ] && [ "$(date +%s)" -ge $((DEPLOY_AT + TAKEOVER)) ]; then
      pkill -KILL -P $RUN -x fleetgate || true
      KILLED=$(date +%s)
      echo "DEPLOY started at $DEPLOY_AT; A SIGKILLed at $KILLED" | tee takeover.txt
    fi
  fi
  sleep 1
done
wait $RUN || true
[ -n "$RUN_B" ] && { wait $RUN_B || true; }
kill $SIM 2>/dev/null || true
wait $SIM 2>/dev/null || true
"$FG" status | sed -n 1,20p   # sed reads it all: `| head` would end status with SIGPIPE under pipefail
grep -E "Maximum resident|Elapsed" time.txt
for w in A B; do
  awk -v w=$w '$4==w && $3>m {m=$3} END{if (m) printf "%s: peak VmHWM %.0f MiB\n", w, m/1024}' rss.tsv
done
if [ -n "$TAKEOVER" ]; then
  grep -E "Maximum resident|Elapsed" time-b.txt
  grep -m1 -E "LEASE" run-b.log || true
  tail -3 run-b.log
fi
