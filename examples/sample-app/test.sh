#!/bin/sh
# TEST: run each tests/*.t snippet with sh; write a JUnit report to target/junit.xml.
set -u
mkdir -p target
out=target/junit.xml
cases=""
n=0; failed=0
for t in tests/*.t; do
  [ -f "$t" ] || continue
  n=$((n + 1))
  name=$(basename "$t" .t)
  if msg=$(sh "$t" 2>&1); then
    cases="$cases<testcase classname=\"sample\" name=\"$name\"/>"
  else
    failed=$((failed + 1))
    esc=$(printf '%s' "$msg" | sed 's/&/\&amp;/g; s/</\&lt;/g; s/"/\&quot;/g' | head -c 500)
    cases="$cases<testcase classname=\"sample\" name=\"$name\"><failure message=\"$esc\"/></testcase>"
  fi
done
printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="sample" tests="%s" failures="%s" errors="0"><testsuite name="sample" tests="%s" failures="%s" errors="0" skipped="0">%s</testsuite></testsuites>\n' \
  "$n" "$failed" "$n" "$failed" "$cases" > "$out"
echo "$n tests, $failed failed"
[ "$failed" -eq 0 ]
