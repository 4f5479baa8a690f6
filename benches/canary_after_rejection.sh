#!/usr/bin/env bash
# The canary judge on a real demo fleet after a rejected release (benches/README.md, "The
# +34% on a healthy canary"): 6 nodes whose natural exception rates differ (σ 0.5),
# tolerance +25%, detect +75%; then releases of the sample app at the error rates in SEQ,
# each run to its end with `fleetgate run`; `wait` lets every node heartbeat ten more
# times. Prints each run's outcome, canary node and the exception criterion's estimate
# (95% CI), the baseline's change and the canary's history.
#
#   cargo build --bin fleetgate
#   bash benches/canary_after_rejection.sh [WORK_DIR] [before]
#
# `before` deletes the signed rollback orders from the state directory before each run:
# the judge then knows of no revoked code, as before it left such history out.
# SEQ defaults to "v4.0.0:0.01 v4.1.0:0.1 wait v4.2.0:0.01 v4.3.0:0.02 v4.4.0:0.01".
set -euo pipefail
D=${1:-/tmp/fg-canary-rejection}
BEFORE=${2:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
B=${FLEETGATE_BIN:-$HERE/target/debug/fleetgate}
rm -rf "$D"; mkdir -p "$D"
"$B" demo --prepare-only --nodes 6 --dir "$D" --node-error-spread 0.5 > "$D/prepare.log" 2>&1 \
  || { echo "demo --prepare-only failed: $D/prepare.log" >&2; exit 1; }
# Agents and the fleet endpoint name the directory on their command line: stop them at exit.
trap 'pkill -TERM -f -- "$D/" || true' EXIT
sed -i 's/^max_exception_rate_increase = 0.5$/max_exception_rate_increase = 0.25\ndetect_exception_rate_increase = 0.75\non_inconclusive = "extend"/' "$D/fleetgate.toml"
fg() { "$B" --config "$D/fleetgate.toml" "$@"; }
least() { fg fleet list --json | python3 -c 'import json,sys; print(min(p.get("last_seq") or 0 for p in json.load(sys.stdin)))'; }
until [ "$(least)" -ge 40 ]; do sleep 1; done
release() { # tag error_rate
  (cd "$D/sample-app" && echo "$1" > NOTES && sed -i "s/^error_rate=.*/error_rate=$2/" app.conf \
    && git add -A && git commit -qm "$1" && git tag "$1")
  if [ -n "$BEFORE" ]; then rm -f "$D"/state/manifests/rollback-*.json; fi
  fg start "$1" > /dev/null
  rc=0; fg run > "$D/run-$1.log" 2>&1 || rc=$?
  fg status --json > "$D/status-$1.json"
  python3 - "$D/status-$1.json" "$1" "$2" "$rc" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
f = s["gate_results"].get("canary", {}).get("figures") or {}
for c in f.get("criteria") or []:
    if c["criterion"] == "exception_rate":
        x = c["figures"]; e = x.get("estimate") or {}
        print("%s rate %s rc %s: %s, canary %s, estimate %+.1f%% (%+.1f%% to %+.1f%%), baseline change %.3f, canary history %s requests"
              % (sys.argv[2], sys.argv[3], sys.argv[4], s["stage"], ",".join(f.get("canary") or []),
                 100 * e.get("increase", 0), 100 * e.get("low", 0), 100 * e.get("high", 0),
                 x.get("baseline_change", 0), x.get("canary_history_requests")))
PY
}
for step in ${SEQ:-v4.0.0:0.01 v4.1.0:0.1 wait v4.2.0:0.01 v4.3.0:0.02 v4.4.0:0.01}; do
  if [ "$step" = wait ]; then
    n=$(least); until [ "$(least)" -ge $((n + 10)) ]; do sleep 1; done
    continue
  fi
  release "${step%%:*}" "${step##*:}"
done
