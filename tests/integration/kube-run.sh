#!/usr/bin/env bash
# Run the Kubernetes integration tests: start a private RabbitMQ (tests/env/rabbitmq.sh) and a
# private control plane (tests/env/kube.sh), run every binary given and every
# tests/integration/*.kube.sh script (or those KUBE_SCRIPTS names) with tests/run-tests.sh, then
# stop both.
# A service that cannot start is a failure, never a skip.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mktemp)
JOBPOOL_RMQ_DIR= JOBPOOL_KUBE_DIR=
cleanup() {
  [ -z "$JOBPOOL_KUBE_DIR" ] || "$root/tests/env/kube.sh" stop "$JOBPOOL_KUBE_DIR"
  [ -z "$JOBPOOL_RMQ_DIR" ] || "$root/tests/env/rabbitmq.sh" stop "$JOBPOOL_RMQ_DIR"
  rm -f "$out"
}
trap cleanup EXIT
if ! "$root/tests/env/rabbitmq.sh" start > "$out"; then
  echo "kube-integration: FAILED: the RabbitMQ broker could not be started (see above)"
  echo "kube-integration: 0 passed, 1 failed"
  [ -z "${JOBPOOL_SUMMARY:-}" ] || echo "kube-integration 0 1" >> "$JOBPOOL_SUMMARY"
  exit 1
fi
# shellcheck disable=SC1090
. "$out"
# The audit log (request metadata) lets leader_slow.kube.sh tell the replicas' writes apart.
if ! JOBPOOL_KUBE_AUDIT=1 "$root/tests/env/kube.sh" start > "$out"; then
  echo "kube-integration: FAILED: the Kubernetes control plane could not be started (see above)"
  echo "kube-integration: 0 passed, 1 failed"
  [ -z "${JOBPOOL_SUMMARY:-}" ] || echo "kube-integration 0 1" >> "$JOBPOOL_SUMMARY"
  exit 1
fi
# shellcheck disable=SC1090
. "$out"
export JOBPOOL_ROOT="$root" JOBPOOL_BUILD="${B:-$root/build}"
# KUBE_SCRIPTS="leader controller_kube" runs only those scripts ("none": no script).
scripts=()
for s in "$here"/*.kube.sh; do
  [ -f "$s" ] || continue
  if [ -n "${KUBE_SCRIPTS:-}" ]; then
    case " $KUBE_SCRIPTS " in *" $(basename "$s" .kube.sh) "*) ;; *) continue ;; esac
  fi
  scripts+=("$s")
done
"$root/tests/run-tests.sh" kube-integration "$@" "${scripts[@]}"
