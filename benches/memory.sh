#!/usr/bin/env bash
# Resident memory of (1) an idle node agent and the fleet endpoint, from a 3-node demo
# fleet, and (2) an orchestrator process reading a registry of 10,000 peers.
# Usage: cargo build --release --bin fleetgate && bash benches/memory.sh
set -euo pipefail
bin=${FLEETGATE_BIN:-target/release/fleetgate}
work=$(mktemp -d)
trap 'pkill -TERM -f "$work" 2>/dev/null || true; sleep 2; rm -rf "$work"' EXIT

"$bin" demo --prepare-only --nodes 3 --dir "$work" >/dev/null
sleep 5
echo "idle node agents (VmRSS):"
for p in $(pgrep -f "$work/nodes/.*/node.toml"); do grep VmRSS "/proc/$p/status"; done
echo "fleet endpoint (fleetgate fleet serve):"
grep VmRSS "/proc/$(pgrep -o -f "$work/fleetgate.toml fleet serve")/status"

# 10,000 peers in the registry (rows as enrollment writes them), then an orchestrator
# process that loads them all.
python3 - "$work/state/fleet.db" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
now = int(time.time())
db.executemany(
    "INSERT INTO peers (id, address, public_key, master_key_verified, status, region, enrolled_at, last_heartbeat, code_hash, current_version) VALUES (?,?,?,?,?,?,?,?,?,?)",
    [(f"bulk-{i:05}", f"http://10.0.{i//250}.{i%250}:7100", "ab" * 32, 1, "active", ["eu", "us", "ap"][i % 3], now, now, "cd" * 32, "v1.0.0") for i in range(10000)],
)
db.commit()
PY
echo "orchestrator listing 10,003 peers (fleetgate fleet list --json), peak RSS:"
/usr/bin/time -f "  max RSS %M KiB, %e s" "$bin" --config "$work/fleetgate.toml" fleet list --json >/dev/null
echo "orchestrator status with a 10,003-peer registry, peak RSS:"
/usr/bin/time -f "  max RSS %M KiB, %e s" "$bin" --config "$work/fleetgate.toml" status >/dev/null
