#!/bin/sh
# BENCHMARK: report the figures in app.conf in github-action-benchmark format.
set -eu
mkdir -p target
startup=$(sed -n 's/^startup_ms=//p' app.conf)
tput=$(sed -n 's/^throughput_ops=//p' app.conf)
printf '[{"name":"startup","unit":"ms","value":%s},{"name":"throughput","unit":"ops/s","value":%s}]\n' "$startup" "$tput" > target/bench.json
cat target/bench.json
