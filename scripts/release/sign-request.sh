#!/usr/bin/env bash
# Sign an external-mode signing request and verify the result before handing it on.
#
#   sign-request.sh --request signing-request.json --trust trust.json [--output FILE]
#
# The key comes from FLEETGATE_SIGNING_KEY_HEX (never an argument, never printed). The
# fleetgate binary is $FLEETGATE_BIN, else fleetgate on PATH. Signs with `fleetgate
# manifest sign-request`, then `fleetgate manifest verify --trust` must accept the result:
# a key the trust file does not list fails here, in CI, not later on the orchestrator.
# Prints manifest=PATH (for $GITHUB_OUTPUT). The orchestrator takes it with
# `fleetgate manifest submit FILE`.
set -euo pipefail

die() {
  printf 'sign-request: error: %s\n' "$*" >&2
  exit 1
}

request=""
trust=""
output="signed_manifest.json"
while [ $# -gt 0 ]; do
  case "$1" in
  --request) request="${2-}"; shift 2 ;;
  --trust) trust="${2-}"; shift 2 ;;
  --output) output="${2-}"; shift 2 ;;
  -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$request" ] || die "--request is required (the orchestrator's state/signing-request.json)"
[ -f "$request" ] || die "--request $request: no such file"
[ -n "$trust" ] || die "--trust is required (the trust file your nodes pin)"
[ -f "$trust" ] || die "--trust $trust: no such file"
[ -n "${FLEETGATE_SIGNING_KEY_HEX:-}" ] || die "FLEETGATE_SIGNING_KEY_HEX is empty: pass the key from a secret"
bin="${FLEETGATE_BIN:-}"
if [ -z "$bin" ]; then
  bin="$(command -v fleetgate)" || die "fleetgate is not on PATH and FLEETGATE_BIN is not set"
fi

tmp="$output.partial"
rm -f -- "$tmp"
if ! "$bin" manifest sign-request "$request" --out "$tmp" >&2; then
  rm -f -- "$tmp"
  die "fleetgate manifest sign-request refused $request (above)"
fi
if ! "$bin" manifest verify --trust "$trust" "$tmp" >&2; then
  rm -f -- "$tmp"
  die "the signed manifest does not verify against $trust (above): is the key one the trust file lists?"
fi
mv -f -- "$tmp" "$output"
echo "manifest=$output"
