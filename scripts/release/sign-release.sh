#!/usr/bin/env bash
# Sign a release with fleetgate and verify it against the trust keys, failing closed.
#
#   FLEETGATE_SIGNING_KEY_HEX=… scripts/release/sign-release.sh \
#       --version vX.Y.Z [--repo DIR] [--rev REV] [--output FILE] \
#       (--trust TRUST.json | --pubkey HEX|FILE.pub) [--expires-in 30d] \
#       [--hash-scheme git|hart]
#
#   --version     the release tag; validated by validate-tag.sh (semver with a leading v).
#   --repo        the git repository to hash (default: .).
#   --rev         the commit to hash (default: refs/tags/VERSION, so the tag must exist
#                 and the manifest is bound to the commit it names).
#   --output      where the signed manifest goes (default: release_manifest.json). It is
#                 written only after it verified; on any failure it is left untouched.
#   --trust       the trust file the manifest must verify against (the one nodes pin).
#   --pubkey      or: one public key (64 hex chars or a .pub file); a 1-of-1 trust file
#                 is built from it with `fleetgate trust init`.
#   --expires-in  lifetime of the manifest (fleetgate's default: 30d).
#   --hash-scheme how the code hash and file manifest hash are computed (default: git):
#                 `git`, fleetgate's own (every file git tracks at the commit, blob
#                 bytes); `hart`, HART's `compute_code_hash` (the *.py files of a clean
#                 checkout of the commit, bytes on disk), so HART nodes accept the release.
#                 It must be the scheme of the `[stages.build] hash_scheme` your
#                 orchestrator and nodes use; the manifest names it (`hash_scheme`, left
#                 out for `git`).
#
# The secret comes only from $FLEETGATE_SIGNING_KEY_HEX (the 32-byte Ed25519 seed as 64 hex
# characters, what `fleetgate keygen` writes). It is never an argument, never printed and
# is handed to `fleetgate manifest sign` alone. $MASTER_PRIVATE_KEY_HEX is ignored.
# The fleetgate binary is ${FLEETGATE_BIN:-fleetgate}.
#
# Steps: `fleetgate manifest sign --repo … --rev … --version … --hash-scheme …` (code
# hash and file manifest hash of the commit under that scheme), then `fleetgate manifest
# verify --trust …`, then cross-checks of the verified manifest (version, git sha, hash
# scheme, hash shapes).
#
# stdout, on success, in $GITHUB_OUTPUT format:
#   version=…  git_sha=…  code_hash=…  file_manifest_hash=…  hash_scheme=…  key_id=…
#   sequence=…  manifest=…
# Progress and errors go to stderr. Exit codes: 0 signed and verified; 1 refused (with the
# reason); 2 usage; the code of `fleetgate manifest verify` (10-19) when it refuses.
set -euo pipefail
set +x # never trace: the key is in this process's environment
export LC_ALL=C

me="sign-release"
say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$me" "$*" >&2
  exit 1
}
usage() {
  cat >&2 <<EOF
usage: $0 --version vX.Y.Z [--repo DIR] [--rev REV] [--output FILE]
          (--trust TRUST.json | --pubkey HEX|FILE.pub) [--expires-in DURATION]
          [--hash-scheme git|hart]
The signing key is read from the environment variable FLEETGATE_SIGNING_KEY_HEX only.
EOF
  exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

version=""
repo="."
rev=""
output="release_manifest.json"
trust=""
pubkey=""
expires_in=""
hash_scheme="git"
while [ $# -gt 0 ]; do
  case "$1" in
    --version | --repo | --rev | --output | --trust | --pubkey | --expires-in | --hash-scheme)
      [ $# -ge 2 ] || usage
      case "$1" in
        --version) version="$2" ;;
        --repo) repo="$2" ;;
        --rev) rev="$2" ;;
        --output) output="$2" ;;
        --trust) trust="$2" ;;
        --pubkey) pubkey="$2" ;;
        --expires-in) expires_in="$2" ;;
        --hash-scheme) hash_scheme="$2" ;;
      esac
      shift 2
      ;;
    -h | --help) usage ;;
    *)
      say "unknown argument: $(printf '%s' "${1:0:80}" | tr -c '[:print:]' '?')"
      usage
      ;;
  esac
done

# 1. The key: present and well-formed, checked before anything else runs. From here on
#    it lives in a shell variable that no child process inherits.
if [ -z "${FLEETGATE_SIGNING_KEY_HEX+set}" ]; then
  die "FLEETGATE_SIGNING_KEY_HEX is not set: export the release signing key (64 hex characters, from \`fleetgate keygen\`) in FLEETGATE_SIGNING_KEY_HEX; in GitHub Actions pass the secret as an env var: FLEETGATE_SIGNING_KEY_HEX: \${{ secrets.FLEETGATE_SIGNING_KEY_HEX }}"
fi
signing_key="$FLEETGATE_SIGNING_KEY_HEX"
unset FLEETGATE_SIGNING_KEY_HEX MASTER_PRIVATE_KEY_HEX
# Surrounding whitespace (a pasted secret's newline) is dropped, as fleetgate does.
signing_key="${signing_key#"${signing_key%%[![:space:]]*}"}"
signing_key="${signing_key%"${signing_key##*[![:space:]]}"}"
if [ -z "$signing_key" ]; then
  die "FLEETGATE_SIGNING_KEY_HEX is empty: the secret is missing or not available to this job (a fork's pull request, or an environment that does not hold it)"
fi
if ! [[ "$signing_key" =~ ^[0-9a-fA-F]{64}$ ]]; then
  die "FLEETGATE_SIGNING_KEY_HEX is not a signing key: expected the Ed25519 seed as 64 hex characters, got ${#signing_key} characters$([[ "$signing_key" =~ ^[0-9a-fA-F]*$ ]] || printf ' including non-hex ones')"
fi

# 2. The arguments.
[ -n "$version" ] || {
  say "--version is required"
  usage
}
case "$hash_scheme" in
  git | hart) ;;
  *)
    say "--hash-scheme must be git or hart, not \"$(printf '%s' "${hash_scheme:0:40}" | tr -c '[:print:]' '?')\""
    usage
    ;;
esac
if [ -n "$trust" ] && [ -n "$pubkey" ]; then
  say "give one of --trust and --pubkey, not both"
  usage
fi
if [ -z "$trust" ] && [ -z "$pubkey" ]; then
  die "no trust: give --trust FILE (the trust file nodes pin) or --pubkey HEX; a manifest is never published unverified"
fi
"$here/validate-tag.sh" "$version" >/dev/null || die "refusing to sign: the version is not a valid release tag"
[ -n "$rev" ] || rev="refs/tags/$version"

fleetgate="${FLEETGATE_BIN:-fleetgate}"
if ! command -v "$fleetgate" >/dev/null 2>&1; then
  die "the fleetgate binary \"$fleetgate\" was not found: build it (cargo build --release --bin fleetgate) and set FLEETGATE_BIN to its path, or put fleetgate on PATH"
fi

command -v git >/dev/null 2>&1 || die "git is required"
git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || die "$repo is not a git repository"
git_sha="$(git -C "$repo" rev-parse --verify --quiet "${rev}^{commit}")" ||
  die "$rev does not name a commit in $repo$([ "$rev" = "refs/tags/$version" ] && printf ' (the tag %s must exist: fetch tags, e.g. actions/checkout with fetch-depth: 0)' "$version")"

if [ -n "$trust" ] && [ ! -r "$trust" ]; then
  die "cannot read the trust file $trust"
fi

out_dir="$(dirname -- "$output")"
mkdir -p -- "$out_dir" || die "cannot create the output directory $out_dir"

work="$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/sign-release.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT

if [ -n "$pubkey" ]; then
  "$fleetgate" trust init --key "$pubkey" --out "$work/trust.json" >"$work/trust-init.log" 2>&1 || {
    cat "$work/trust-init.log" >&2
    die "cannot build a trust file from --pubkey"
  }
  trust="$work/trust.json"
  say "trust: a 1-of-1 trust file built from the given public key"
else
  say "trust: $trust"
fi

# 3. Sign. The key reaches fleetgate through its environment only (not argv).
sign_args=(manifest sign --repo "$repo" --rev "$rev" --version "$version"
  --hash-scheme "$hash_scheme" --output "$work/release_manifest.json" --json)
[ -z "$expires_in" ] || sign_args+=(--expires-in "$expires_in")
say "signing $version ($git_sha) of $repo, hash scheme $hash_scheme"
if ! signed="$(FLEETGATE_SIGNING_KEY_HEX="$signing_key" "$fleetgate" "${sign_args[@]}")"; then
  die "fleetgate manifest sign failed (see above)"
fi
signing_key=""

# 4. Verify against the trust keys, as a node would.
set +e
verified="$("$fleetgate" manifest verify --trust "$trust" --json "$work/release_manifest.json")"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  key_id="$(printf '%s' "$signed" | sed -n -E 's/.*"key_id": *"([0-9a-f]*)".*/\1/p')"
  case "$rc" in
    14) why="the key in FLEETGATE_SIGNING_KEY_HEX (key id ${key_id:-?}) is not in the trust file: wrong secret, or the trust file was not updated after a key rotation" ;;
    15) why="the trust file needs more than one signature (k-of-n); this script signs with one key: co-sign with \`fleetgate trust sign\` and verify by hand" ;;
    17) why="the signing key is outside its validity window in the trust file, or the clock is wrong" ;;
    1) why="the trust file could not be read or is invalid" ;;
    *) why="see the message above" ;;
  esac
  printf '%s: error: the signed manifest does NOT verify against %s (fleetgate manifest verify exit %s): %s; nothing was written to %s\n' \
    "$me" "$trust" "$rc" "$why" "$output" >&2
  exit "$rc"
fi

# 5. Cross-check what verified against what was asked for.
field() { # field NAME < json: the string or number value of NAME
  sed -n -E "s/.*\"$1\": *\"?([^\",}]*)\"?[,}]?.*/\1/p" | head -n 1
}
m="$work/release_manifest.json"
v_version="$(field version <<<"$verified")"
v_sha="$(field git_sha <<<"$verified")"
v_code="$(field code_hash <<<"$verified")"
v_seq="$(field sequence <<<"$verified")"
m_code="$(field code_hash <"$m")"
m_files="$(field file_manifest_hash <"$m")"
# The manifest names a non-default scheme; `git` is the field's absence.
m_scheme="$(field hash_scheme <"$m")"
v_scheme="$(field hash_scheme <<<"$verified")"
key_id="$(field key_id <<<"$signed")"
[ "$v_version" = "$version" ] || die "the verified manifest is for version \"$v_version\", not $version"
[ "$v_sha" = "$git_sha" ] || die "the verified manifest names commit $v_sha, not $git_sha ($rev)"
[[ "$v_code" =~ ^[0-9a-f]{64}$ ]] || die "the verified manifest has no well-formed code_hash"
[ "$m_code" = "$v_code" ] || die "the manifest file's code_hash differs from the verified one"
[[ "$m_files" =~ ^[0-9a-f]{64}$ ]] || die "the manifest has no well-formed file_manifest_hash"
[[ "$v_seq" =~ ^[0-9]+$ ]] || die "the verified manifest has no sequence"
[ "${m_scheme:-git}" = "$hash_scheme" ] ||
  die "the manifest names hash scheme \"${m_scheme:-git}\", not $hash_scheme"
[ "${v_scheme:-git}" = "$hash_scheme" ] ||
  die "the verified manifest's hash scheme is \"${v_scheme:-git}\", not $hash_scheme"

# 6. Publish the verified file atomically.
tmp_out="$(mktemp "$out_dir/.release_manifest.XXXXXX")"
if ! { cp -- "$m" "$tmp_out" && chmod 0644 "$tmp_out" && mv -f -- "$tmp_out" "$output"; }; then
  rm -f -- "$tmp_out"
  die "cannot write $output"
fi

say "verified: $version signed by key $key_id (sequence $v_seq)"
say "git sha:            $git_sha"
say "code hash:          $v_code"
say "file manifest hash: $m_files"
say "hash scheme:        $hash_scheme"
say "manifest:           $output"
printf 'version=%s\ngit_sha=%s\ncode_hash=%s\nfile_manifest_hash=%s\nhash_scheme=%s\nkey_id=%s\nsequence=%s\nmanifest=%s\n' \
  "$version" "$git_sha" "$v_code" "$m_files" "$hash_scheme" "$key_id" "$v_seq" "$output"
