#!/bin/sh
# A plain shell pipeline (a cron job, a Jenkins `sh` step, a laptop): build the image of the
# current commit, push it, and release it blue/green with bgslot-release.sh (next to this file).
#
#   IMAGE=registry.example.com/acme/web RELEASE_NAME=web RELEASE_NAMESPACE=shop \
#     ci/pipeline.sh --values deploy/values.yaml
#
# It takes the RELEASE_* and SMOKE_* variables of bgslot-release.sh and smoke-check.sh (it sets
# RELEASE_IMAGE to IMAGE:COMMIT; RELEASE_CLEAN defaults to true) and passes its arguments on to
# `bgslot release`. Its exit code is bgslot's: 0 released, 1 failed (production unchanged or
# swapped back), 2 usage, 3 refused, 4 locked.
#
# Nothing queues two runs of this script, so it waits up to 10 minutes for a release lock another
# bgslot holds (instead of exit 4 at once).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
IMAGE=${IMAGE:?set IMAGE to the repository of the app image, e.g. registry.example.com/acme/web}
sha=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "pipeline: the work tree has uncommitted changes; the image would not match commit $sha" >&2
  exit 2
fi

docker build -t "$IMAGE:$sha" .
docker push "$IMAGE:$sha"

# Release exactly the image just pushed (the repository too, so the first release installs it).
RELEASE_IMAGE="$IMAGE:$sha"
RELEASE_CLEAN=${RELEASE_CLEAN:-true}
RELEASE_REPORT=${RELEASE_REPORT:-bgslot-report-$sha.json}
export RELEASE_IMAGE RELEASE_CLEAN RELEASE_REPORT
exec sh "$here/bgslot-release.sh" --wait-for-lock=10m "$@"
