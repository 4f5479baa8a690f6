#!/usr/bin/env bash
# Validate a release tag before it is used in a path, a command or a message.
#
#   scripts/release/validate-tag.sh [--existing-tags FILE|-] [--git-repo DIR] TAG
#
# TAG must be SemVer 2.0.0 with a leading "v" (v1.2.3, v2.0.0-rc.1, v1.0.0+build.5),
# at most 128 bytes (fleetgate's own limit).
#
# Duplicates: with --existing-tags (one tag a line; "-" reads stdin; blank lines and
# lines starting with "#" are ignored) and/or --git-repo (the tags of that git
# repository), TAG is refused when it names a version already there. Two tags name the
# same version when they are equal once a leading "v" and any "+build" metadata are
# dropped (SemVer gives them the same precedence): v1.2.3, 1.2.3 and v1.2.3+b7 are one
# version.
#
# On success prints, on stdout, lines in GitHub's $GITHUB_OUTPUT format:
#   tag=v1.2.3
#   version=1.2.3
#   prerelease=false
# Messages go to stderr. Exit codes: 0 valid; 1 invalid or duplicate; 2 usage.
set -euo pipefail
set +x
export LC_ALL=C

me="validate-tag"
die() {
  printf '%s: error: %s\n' "$me" "$*" >&2
  exit 1
}
usage() {
  printf 'usage: %s [--existing-tags FILE|-] [--git-repo DIR] TAG\n' "$0" >&2
  exit 2
}

existing_files=()
git_repos=()
tag=""
have_tag=0
while [ $# -gt 0 ]; do
  case "$1" in
    --existing-tags)
      [ $# -ge 2 ] || usage
      existing_files+=("$2")
      shift 2
      ;;
    --git-repo)
      [ $# -ge 2 ] || usage
      git_repos+=("$2")
      shift 2
      ;;
    -h | --help) usage ;;
    --)
      shift
      [ $# -eq 1 ] || usage
      tag="$1"
      have_tag=1
      shift
      ;;
    -*) usage ;;
    *)
      [ "$have_tag" -eq 0 ] || usage
      tag="$1"
      have_tag=1
      shift
      ;;
  esac
done
[ "$have_tag" -eq 1 ] || usage

# Printable form for messages: never echo control characters back.
shown="$(printf '%s' "${tag:0:128}" | tr -c '[:print:]' '?')"

[ -n "$tag" ] || die "the tag is empty"
[ "${#tag}" -le 128 ] || die "tag ${shown}... is longer than 128 bytes"

num='(0|[1-9][0-9]*)'
pre_id='(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)'
build_id='[0-9A-Za-z-]+'
semver_re="^v${num}\\.${num}\\.${num}(-${pre_id}(\\.${pre_id})*)?(\\+${build_id}(\\.${build_id})*)?\$"

if ! [[ "$tag" =~ $semver_re ]]; then
  case "$tag" in
    v*) die "tag \"${shown}\" is not semver: expected vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] such as v1.2.3 (no leading zeros, exactly three numbers)" ;;
    *) die "tag \"${shown}\" must start with \"v\" followed by semver, such as v1.2.3" ;;
  esac
fi

version="${tag#v}"
# The version without build metadata: what decides whether two tags are one release.
key_of() {
  local t="${1#v}"
  printf '%s' "${t%%+*}"
}
mine="$(key_of "$tag")"
prerelease=false
case "${version%%+*}" in *-*) prerelease=true ;; esac

check_list() {
  # $1: a label for messages; stdin: one tag a line.
  local label="$1" line t
  while IFS= read -r line || [ -n "$line" ]; do
    t="${line%$'\r'}"
    t="$(printf '%s' "$t" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')"
    case "$t" in '' | '#'*) continue ;; esac
    if [ "$(key_of "$t")" = "$mine" ]; then
      if [ "$t" = "$tag" ]; then
        die "tag ${tag} already exists (${label}); a released version is never released again: bump the version"
      fi
      die "tag ${tag} names the same version as the existing tag $(printf '%s' "$t" | tr -c '[:print:]' '?') (${label}); bump the version"
    fi
  done
}

for f in ${existing_files[@]+"${existing_files[@]}"}; do
  if [ "$f" = "-" ]; then
    check_list "in the list on stdin"
  else
    [ -r "$f" ] || die "cannot read the list of existing tags ${f}"
    check_list "in ${f}" <"$f"
  fi
done

for repo in ${git_repos[@]+"${git_repos[@]}"}; do
  git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || die "${repo} is not a git repository"
  tags="$(git -C "$repo" tag --list)" || die "cannot list the tags of ${repo}"
  check_list "a git tag in ${repo}" <<<"$tags"
done

checked=""
if [ ${#existing_files[@]} -gt 0 ] || [ ${#git_repos[@]} -gt 0 ]; then
  checked=" and not a duplicate"
fi
printf '%s: %s is a valid release tag%s\n' "$me" "$tag" "$checked" >&2
printf 'tag=%s\nversion=%s\nprerelease=%s\n' "$tag" "$version" "$prerelease"
