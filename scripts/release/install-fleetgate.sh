#!/usr/bin/env bash
# Install a released fleetgate binary, checksum-verified, without building it.
#
#   install-fleetgate.sh --version vX.Y.Z --base-url URL [--sha256 HEX] [--dest DIR]
#                        [--target TRIPLE]
#
# Downloads fleetgate-VERSION-TARGET.tar.gz (the asset release.yml publishes) from
# BASE_URL/VERSION/ (GitHub releases: https://github.com/OWNER/REPO/releases/download;
# the sign-release action passes the repository it was taken from) and checks its SHA-256:
#   --sha256 HEX  the digest you pinned (in your workflow, next to the version): the
#                 download must match it. This is what protects you from a replaced
#                 release asset; use it.
#   otherwise     the release's own .sha256 file is fetched and must match (this only
#                 catches a corrupt or truncated download; a warning says so).
# Then it unpacks only the one expected member (fleetgate-VERSION-TARGET/fleetgate) into
# DEST (default $RUNNER_TEMP/fleetgate-bin, else ./fleetgate-bin), checks that it runs
# (`fleetgate --version`), and prints `path=DEST/fleetgate` (append it to
# $GITHUB_OUTPUT). Fails closed, naming what was wrong: no version, a malformed digest,
# a download error, a checksum mismatch, an archive without the binary.
#
# Environment: FLEETGATE_RELEASES_URL, the base URL when --base-url is not given.
set -euo pipefail

die() {
  printf 'install-fleetgate: error: %s\n' "$*" >&2
  exit 1
}

version=""
sha256=""
dest=""
base_url="${FLEETGATE_RELEASES_URL:-}"
target="x86_64-unknown-linux-gnu"
while [ $# -gt 0 ]; do
  case "$1" in
  --version) version="${2-}"; shift 2 ;;
  --sha256) sha256="${2-}"; shift 2 ;;
  --dest) dest="${2-}"; shift 2 ;;
  --base-url) base_url="${2-}"; shift 2 ;;
  --target) target="${2-}"; shift 2 ;;
  -h | --help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$version" ] || die "--version is required (a release tag such as v1.4.0)"
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] ||
  die "--version '$version' is not a release tag vMAJOR.MINOR.PATCH"
[ -n "$base_url" ] || die "--base-url is required (where the releases are, e.g. https://github.com/OWNER/REPO/releases/download)"
[[ "$target" =~ ^[a-z0-9_]+(-[a-z0-9_]+)+$ ]] || die "--target '$target' is not a target triple"
if [ -n "$sha256" ]; then
  sha256="$(printf '%s' "$sha256" | tr 'A-F' 'a-f')"
  [[ "$sha256" =~ ^[0-9a-f]{64}$ ]] || die "--sha256 must be 64 hex characters (the SHA-256 of the .tar.gz), got '$sha256'"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed to download the release"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is needed to verify the release"
if [ -z "$dest" ]; then
  dest="${RUNNER_TEMP:-$PWD}/fleetgate-bin"
fi

name="fleetgate-${version}-${target}"
url="${base_url%/}/${version}/${name}.tar.gz"
work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT

fetch() {
  # --fail: an HTTP error is an error, not a saved error page.
  curl --fail --silent --show-error --location --proto '=https,http' --retry 3 \
    --max-filesize 536870912 --output "$2" "$1" ||
    die "downloading $1 failed"
}

echo "install-fleetgate: downloading $url" >&2
fetch "$url" "$work/$name.tar.gz"
actual="$(sha256sum "$work/$name.tar.gz" | cut -d' ' -f1)"
if [ -n "$sha256" ]; then
  [ "$actual" = "$sha256" ] ||
    die "checksum mismatch for $name.tar.gz: expected (--sha256) $sha256, downloaded $actual; refusing to install"
  echo "install-fleetgate: sha256 $actual matches the pinned digest" >&2
else
  fetch "$url.sha256" "$work/$name.tar.gz.sha256"
  published="$(cut -d' ' -f1 <"$work/$name.tar.gz.sha256" | tr 'A-F' 'a-f')"
  [[ "$published" =~ ^[0-9a-f]{64}$ ]] || die "$url.sha256 does not start with a SHA-256 digest"
  [ "$actual" = "$published" ] ||
    die "checksum mismatch for $name.tar.gz: the release's .sha256 says $published, downloaded $actual; refusing to install"
  echo "install-fleetgate: warning: verified against the release's own .sha256 only; pin the digest with --sha256 $actual" >&2
fi

# Only the one member, as a regular file: nothing else in the archive is written.
member="$name/fleetgate"
# The listing is written whole before it is searched: `tar -t | grep -q` stops reading at
# the first match, tar dies of SIGPIPE, and under pipefail a good archive would fail.
tar -tzf "$work/$name.tar.gz" > "$work/members" || die "$name.tar.gz cannot be listed"
grep -qxF "$member" "$work/members" || die "$name.tar.gz has no $member"
mkdir -p "$work/x"
tar -xzf "$work/$name.tar.gz" -C "$work/x" --no-same-owner --no-same-permissions "$member"
[ -f "$work/x/$member" ] && [ ! -L "$work/x/$member" ] || die "$member in $name.tar.gz is not a regular file"
mkdir -p "$dest"
# Replaced in one rename: killed at any point, DEST/fleetgate is the old binary or the
# new one, never half of it.
install -m 0755 "$work/x/$member" "$dest/.fleetgate.partial"
mv -f "$dest/.fleetgate.partial" "$dest/fleetgate"
reported="$("$dest/fleetgate" --version 2>&1)" || die "$dest/fleetgate does not run: $reported"
echo "install-fleetgate: installed $reported at $dest/fleetgate" >&2
echo "path=$dest/fleetgate"
