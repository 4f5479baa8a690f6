#!/usr/bin/env bash
# Heartbeat ingest through the real HTTP endpoint (benches/README.md, "Heartbeat ingest
# through the HTTP endpoint"): `fleetgate fleet serve` on SQLite or PostgreSQL, N simulated
# nodes enrolled once, then heartbeating at once-a-second each for DURATION seconds from
# 128 connections. Prints the simulator's summary (accepted/s, p50/p99, refused, errors),
# the server's CPU time per accepted heartbeat, and checks that every accepted heartbeat
# is stored (rows in the registry's heartbeats table = accepted).
#
#   cargo build --release --bin fleetgate
#   bash benches/ingest.sh sqlite|postgres [NODES] [DURATION] [WORK_DIR]
#
# Defaults: 20000 nodes, 15 s, /tmp/fg-ingest. PostgreSQL: 127.0.0.1:5432 (trust auth,
# database `test`), schema `fgingest` (dropped and recreated). The load generator shares
# the machine's cores with the server. FLEETGATE_BENCH_CONCURRENCY sets its connections
# (default 128; a closed loop holds at most that many heartbeats in flight).
set -euo pipefail
BACKEND=${1:?sqlite or postgres}
NODES=${2:-20000}
DURATION=${3:-15}
WORK=${4:-/tmp/fg-ingest}
HERE=$(cd "$(dirname "$0")/.." && pwd)
FG=${FLEETGATE_BIN:-$HERE/target/release/fleetgate}
PORT=${FLEETGATE_BENCH_PORT:-7324}
PG="postgres://postgres@127.0.0.1:5432/test"
SCHEMA=fgingest

[ -x "$FG" ] || { echo "build it first: cargo build --release --bin fleetgate" >&2; exit 1; }
case "$BACKEND" in
  sqlite) ;;
  postgres)
    command -v psql >/dev/null || { echo "psql is required" >&2; exit 1; }
    psql -q "$PG" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA;" ;;
  *) echo "backend: sqlite or postgres, not $BACKEND" >&2; exit 2 ;;
esac
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
"$FG" init >/dev/null
mkdir -p keys
"$FG" keygen --out keys/release.key >/dev/null
"$FG" trust init --key keys/release.key.pub --out keys/trust.json >/dev/null
if [ "$BACKEND" = postgres ]; then
  sed -i "s|database_url = \"sqlite://state/fleet.db\"|database_url = \"$PG?options[search_path]=$SCHEMA\"|" fleetgate.toml
  grep -q "options\[search_path\]=$SCHEMA" fleetgate.toml || { echo "no database_url line in fleetgate.toml" >&2; exit 1; }
fi

"$FG" fleet serve --listen "127.0.0.1:$PORT" > serve.log 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

sim() { "$FG" fleet simulate --nodes "$NODES" --endpoint "http://127.0.0.1:$PORT" --interval 1 "$@"; }
sim --duration 1 --concurrency 8 > /dev/null          # enrols the nodes (not measured)
rows() {
  if [ "$BACKEND" = postgres ]; then
    psql -qtA "$PG" -c "SELECT count(*) FROM $SCHEMA.heartbeats"
  else
    python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM heartbeats").fetchone()[0])' state/fleet.db
  fi
}
cpu() { awk '{print $14 + $15}' "/proc/$SERVE/stat"; }
before_rows=$(rows)
before_cpu=$(cpu)
sim --duration "$DURATION" --concurrency "${FLEETGATE_BENCH_CONCURRENCY:-128}" --json > sim.json
after_cpu=$(cpu)
after_rows=$(rows)
python3 - "$before_rows" "$after_rows" "$before_cpu" "$after_cpu" "$(getconf CLK_TCK)" "$BACKEND" <<'EOF'
import json, sys
b_rows, a_rows, b_cpu, a_cpu, tck = (int(x) for x in sys.argv[1:6])
s = json.load(open("sim.json"))
acc = s["accepted"]
stored = a_rows - b_rows
cpu_us = (a_cpu - b_cpu) / tck * 1e6 / max(acc, 1)
print(f"{sys.argv[6]}: sent {s['sent']}, accepted {acc} ({s['accepted_per_sec']:.0f}/s), "
      f"refused {sum(s['refused'].values())}, errors {s['errors']}, "
      f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
      f"server CPU {cpu_us:.0f} us per heartbeat, rows stored {stored}")
if stored != acc:
    sys.exit(f"{acc} heartbeats accepted but {stored} rows stored")
EOF
