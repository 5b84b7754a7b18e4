#!/bin/sh
# bgslot-release.sh: one blue/green release from a CI pipeline, the step every example pipeline
# (github-actions.yaml, gitlab-ci.yaml, pipeline.sh) runs.
#
#   bgslot release RELEASE --tag TAG --verify-cmd smoke-check.sh [--clean] -o json > REPORT
#
# deploys TAG to the idle slot, checks stage, swaps, checks production (swapping back when that
# fails), optionally cleans the old slot; then prints a short summary of the JSON report and exits
# with bgslot's own exit code:
#   0  released (or installed, the first time)
#   1  failed: helm error, timeout, or a verification failed. Production is unchanged (stage check
#      failed: the new version stays staged) or was swapped back (production check failed)
#   2  usage: a bad variable or argument (also this script's own configuration errors)
#   3  refused by a safety check, nothing changed (e.g. the idle slot still holds a version: see
#      RELEASE_REPLACE)
#   4  locked: another bgslot is releasing this release, nothing changed
#   5  across several clusters (--targets FILE): they are left on different versions (a swap-back
#      failed); the summary names each cluster's version and the command that ends the mix
#   >128  bgslot was killed by a signal
#
# Configuration (environment):
#   RELEASE_NAME       the Helm release (required)
#   RELEASE_TAG        the image tag to release, e.g. the commit SHA (the repository stays what
#                      production runs)                                  } one of the two
#   RELEASE_IMAGE      or a whole image reference: REPO:TAG, REPO@sha256:... } is required
#   RELEASE_NAMESPACE  its namespace (default: HELM_NAMESPACE, else the kube context's)
#   RELEASE_CLEAN      true: disable the old slot after the drain delay (default false: it keeps
#                      running for `bgslot rollback`, and the next release is refused, exit 3,
#                      unless RELEASE_REPLACE is true)
#   RELEASE_MIN_AGE    the drain delay before the clean (bgslot's default: 30s)
#   RELEASE_REPLACE    true: overwrite a version left in the idle slot (a candidate whose stage check
#                      failed, or the previous production when RELEASE_CLEAN is false)
#   RELEASE_TIMEOUT    how long to wait for the new slot to be ready (bgslot's default: 5m)
#   RELEASE_REPORT     where the JSON report goes (default bgslot-report.json)
#   VERIFY_CMD         the verify command, split into words as a shell would and run without a
#                      shell (default: sh smoke-check.sh next to this script; see its SMOKE_*
#                      variables). Set it empty to release without verification.
#   BGSLOT             the bgslot binary (default: bgslot on PATH)
# bgslot itself reads KUBECONFIG, HELM_KUBECONTEXT, HELM_BIN. Arguments are passed on to
# `bgslot release` (e.g. --values deploy/values.yaml, --wait-for-lock 10m, --create-namespace, or
# --targets deploy/targets.yaml to release several clusters in lockstep).
set -eu

say() { printf 'bgslot-release: %s\n' "$*"; }
usage_error() { say "error: $*" >&2; exit 2; }
# $1 as one shell word, for --verify-cmd (bgslot splits it as a shell would).
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
is_true() {
  case $2 in
    true | 1 | yes) return 0 ;;
    false | 0 | no | '') return 1 ;;
    *) usage_error "$1 is true or false, not '$2'" ;;
  esac
}

here=$(cd "$(dirname "$0")" && pwd)
bgslot=${BGSLOT:-bgslot}
name=${RELEASE_NAME:-}
report=${RELEASE_REPORT:-bgslot-report.json}
[ -n "$name" ] || usage_error "RELEASE_NAME is not set (the Helm release to release)"
command -v "$bgslot" >/dev/null 2>&1 || usage_error "bgslot not found: '$bgslot' (install it or set BGSLOT)"

# Our flags go after the caller's arguments (clap takes them in any order).
if [ -n "${RELEASE_TAG:-}" ] && [ -n "${RELEASE_IMAGE:-}" ]; then
  usage_error "set RELEASE_TAG or RELEASE_IMAGE, not both"
elif [ -n "${RELEASE_TAG:-}" ]; then
  set -- "$@" --tag "$RELEASE_TAG"
elif [ -n "${RELEASE_IMAGE:-}" ]; then
  set -- "$@" --image "$RELEASE_IMAGE"
else
  usage_error "RELEASE_TAG (or RELEASE_IMAGE) is not set: which version to release?"
fi
[ -n "${RELEASE_NAMESPACE:-}" ] && set -- "$@" --namespace "$RELEASE_NAMESPACE"
[ -n "${RELEASE_TIMEOUT:-}" ] && set -- "$@" --timeout "$RELEASE_TIMEOUT"
if is_true RELEASE_CLEAN "${RELEASE_CLEAN:-}"; then
  set -- "$@" --clean
  [ -n "${RELEASE_MIN_AGE:-}" ] && set -- "$@" --min-age "$RELEASE_MIN_AGE"
fi
is_true RELEASE_REPLACE "${RELEASE_REPLACE:-}" && set -- "$@" --replace
verify=${VERIFY_CMD-sh $(quote "$here/smoke-check.sh")}
[ -n "$verify" ] && set -- "$@" --verify-cmd "$verify"

mkdir -p "$(dirname "$report")"
say "bgslot release $name $*"

# bgslot runs in the background so that a SIGTERM or SIGINT to this script (a cancelled job) is
# passed on: bgslot then stops cleanly (it lets a running helm finish, releases the lock and
# reports what it left) and this script still prints the summary.
"$bgslot" release "$name" "$@" --output json >"$report" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || :' INT TERM HUP
code=0
wait "$pid" || code=$?
# A trapped signal ends `wait` early while bgslot still runs: wait for it again.
while kill -0 "$pid" 2>/dev/null; do
  code=0
  wait "$pid" || code=$?
done
trap - INT TERM HUP

# The summary, read from the JSON report without jq: serde_json pretty-prints one field per
# line, top-level fields indented by two spaces, array items by four.
field() {
  sed -n "s/^  \"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p; s/^  \"$1\": \\([^\"]*[^\",]\\),\\{0,1\\}\$/\\1/p" "$report" | head -n 1
}
items() {
  sed -n "/^  \"$1\": \\[\$/,/^  \\]/s/^    \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" "$report"
}
# A run across several clusters: one line per target (its fields are indented by six spaces;
# its own report, nested deeper, is skipped): name, production slot, version, phase, swapped
# back, and the command that ends a mix there.
target_rows() {
  awk '
    function value(line) { sub(/^[^:]*: /, "", line); sub(/,$/, "", line); gsub(/^"|"$/, "", line); return line }
    /^      "name": / { name = value($0) }
    /^      "production_slot": / { slot = value($0) }
    /^      "version": / { version = value($0) }
    /^      "phase": / { phase = value($0) }
    /^      "swapped_back": / { back = value($0) }
    /^      "command": / { printf "%s\t%s\t%s\t%s\t%s\t%s\n", name, slot, version, phase, back, value($0) }
  ' "$report"
}
targets_summary() {
  target_rows | while IFS="$(printf '\t')" read -r t_name t_slot t_version t_phase t_back t_command; do
    t_line="$t_name: production ($t_slot) runs $t_version, reached $t_phase"
    if [ "$t_back" = true ]; then t_line="$t_line, swapped back"; fi
    line "$t_line"
    if [ "$t_command" != null ]; then line "  end the mix on $t_name: $t_command"; fi
  done
}
step_operations() {
  sed -n '/^  "steps": \[$/,/^  \]/s/^      "operation": "\(.*\)",\{0,1\}$/\1/p' "$report"
}
# A JSON string's escapes (\" \\ \n) as text, continued lines indented.
text() {
  printf '%s\n' "$1" | awk '{ gsub(/\\"/, "\""); gsub(/\\n/, "\n      "); gsub(/\\\\/, "\\"); print }'
}
line() { printf '  %s\n' "$*"; }
one_line() { tr '\n' ' ' | sed 's/ $//'; }

summary() {
  if [ "$(sed -n 1p "$report")" != "{" ]; then
    say "$name: bgslot exited with $code and wrote no JSON report to $report"
  elif [ "$code" -eq 0 ] && [ -n "$(field run)" ]; then
    say "$name released across clusters (run $(field run)): every target serves the new version"
    targets_summary
    line "next: $(text "$(field next)")"
  elif [ "$code" -eq 0 ]; then
    first=$(step_operations | head -n 1)
    if [ "$first" = install ]; then done=installed; else done=released; fi
    say "$name $done: production ($(field production_slot)) runs $(field image), revision $(field revision), namespace $(field namespace)"
    verified=$(items verified | one_line)
    line "verified against: ${verified:-nothing (no VERIFY_CMD)}"
    line "steps: $(step_operations | one_line)"
    line "next: $(text "$(field next)")"
  else
    say "$name NOT released: exit $code ($(field kind))"
    line "error: $(text "$(field error)")"
    items caused_by | while IFS= read -r cause; do
      line "caused by: $(text "$cause")"
    done
    hint=$(field hint)
    [ -n "$hint" ] && [ "$hint" != null ] && line "hint: $(text "$hint")"
    if [ -n "$(field run)" ]; then targets_summary; fi
  fi
  case $code in
    0) ;;
    1) line "exit 1: the release failed; the causes above say whether production is unchanged or was swapped back" ;;
    2) line "exit 2: bgslot rejected its command line: check the RELEASE_* variables and the arguments" ;;
    3) line "exit 3: refused by a safety check; nothing was changed" ;;
    4) line "exit 4: another bgslot holds the release lock (another pipeline or a person is releasing $name); nothing was changed" ;;
    5) line "exit 5: the clusters are left on different versions; run the command named for each one above" ;;
    *) line "exit $code: bgslot did not finish (killed by a signal?); run \`bgslot status $name\`" ;;
  esac
  line "report: $report"
}

out=$(summary)
printf '%s\n' "$out"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  fence='```'
  printf '### bgslot release %s\n\n%s\n%s\n%s\n' "$name" "$fence" "$out" "$fence" >>"$GITHUB_STEP_SUMMARY"
fi
exit "$code"
