#!/bin/sh
# smoke-check.sh: the verify command of `bgslot release --verify-cmd` (bgslot-release.sh passes it).
#
# bgslot runs it twice per release: against stage after the deploy, and against production after
# the swap (a failure there makes bgslot swap back). bgslot sets:
#   BGSLOT_TARGET     stage | production
#   BGSLOT_URL        the Service's URL: the ingress host when the chart has one
#                     (ingress.host / ingress.stageHost), else http://SERVICE.NAMESPACE.svc.cluster.local:PORT/
#   BGSLOT_SERVICE, BGSLOT_NAMESPACE, BGSLOT_SLOT (blue|green), BGSLOT_TAG (the version released)
#
# It GETs the URL until it answers (curl -f: an HTTP status >= 400 is a failure), retrying, and
# optionally checks the answer. Configuration (all optional):
#   SMOKE_PATH             appended to the URL, e.g. healthz or /version
#   SMOKE_STAGE_URL        use this URL for the stage check instead of BGSLOT_URL (a runner outside
#   SMOKE_PRODUCTION_URL   the cluster cannot resolve *.svc.cluster.local: a stage hostname, a
#                          port-forward, an internal load balancer)
#   SMOKE_EXPECT           a text the answer must contain
#   SMOKE_EXPECT_TAG       true: the answer must contain BGSLOT_TAG (a version endpoint proves the
#                          Service reaches the new version, not an old one behind a cache)
#   SMOKE_ATTEMPTS         tries before giving up (default 5)
#   SMOKE_INTERVAL         seconds between tries (default 2)
#   SMOKE_TIMEOUT          seconds per try (default 5)
#   SMOKE_CMD              the fetch command, the URL is appended (default: curl -fsS --max-time
#                          $SMOKE_TIMEOUT); e.g. "wget -q -O- -T 5" on a busybox image, or
#                          "curl -fsS -H 'Authorization: Bearer ...'"; it must print the body on
#                          stdout and exit non-zero on failure
# Exit 0 when a try passed, 1 when all failed, 2 when misconfigured.
set -eu

say() { printf 'smoke-check: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 2; }

target=${BGSLOT_TARGET:-}
case $target in
  stage) url=${SMOKE_STAGE_URL:-${BGSLOT_URL:-}} ;;
  production) url=${SMOKE_PRODUCTION_URL:-${BGSLOT_URL:-}} ;;
  *) die "BGSLOT_TARGET is '$target', not stage or production: this script is run by bgslot release --verify-cmd" ;;
esac
[ -n "$url" ] || die "no URL for $target: BGSLOT_URL is empty and SMOKE_$(echo "$target" | tr '[:lower:]' '[:upper:]')_URL is not set"
if [ -n "${SMOKE_PATH:-}" ]; then
  url="${url%/}/${SMOKE_PATH#/}"
fi

attempts=${SMOKE_ATTEMPTS:-5}
interval=${SMOKE_INTERVAL:-2}
timeout=${SMOKE_TIMEOUT:-5}
for n in "$attempts" "$interval" "$timeout"; do
  case $n in '' | *[!0-9]*) die "SMOKE_ATTEMPTS, SMOKE_INTERVAL and SMOKE_TIMEOUT are whole numbers, not '$n'" ;; esac
done
[ "$attempts" -ge 1 ] || die "SMOKE_ATTEMPTS must be at least 1"
cmd=${SMOKE_CMD:-curl -fsS --max-time $timeout}

expect=${SMOKE_EXPECT:-}
expect_tag=
case ${SMOKE_EXPECT_TAG:-false} in
  true | 1 | yes) expect_tag=${BGSLOT_TAG:?SMOKE_EXPECT_TAG is set but bgslot gave no BGSLOT_TAG} ;;
  false | 0 | no | '') ;;
  *) die "SMOKE_EXPECT_TAG is true or false, not '$SMOKE_EXPECT_TAG'" ;;
esac

# Why the answer in $body is wrong, or nothing when it is right.
wrong_answer() {
  for want in "$expect" "$expect_tag"; do
    [ -z "$want" ] && continue
    case $body in
      *"$want"*) ;;
      *) printf "the answer does not contain '%s': %.200s" "$want" "$body"; return ;;
    esac
  done
}

what="$target (${BGSLOT_SERVICE:-?} -> ${BGSLOT_SLOT:-?}, version ${BGSLOT_TAG:-?})"
i=1
while :; do
  say "$what: GET $url (try $i of $attempts)"
  # eval: SMOKE_CMD may hold quoted words; the URL is passed as a variable, never re-parsed.
  if body=$(eval "$cmd \"\$url\""); then
    reason=$(wrong_answer)
    if [ -z "$reason" ]; then
      say "$what: passed"
      exit 0
    fi
    say "$what: $reason"
  else
    say "$what: the request failed (exit $?)"
  fi
  if [ "$i" -ge "$attempts" ]; then
    say "$what: FAILED after $attempts tries"
    exit 1
  fi
  i=$((i + 1))
  sleep "$interval"
done
