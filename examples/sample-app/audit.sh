#!/bin/sh
# AUDIT: refuse a tree that carries the FORBIDDEN marker outside this script.
set -eu
if grep -rl 'FORBIDDEN''_MARKER' --exclude-dir=.git --exclude-dir=target --exclude-dir=build . ; then
  echo "audit: forbidden marker found in the files above" >&2
  exit 1
fi
echo "audit: clean"
