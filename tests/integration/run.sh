#!/usr/bin/env bash
# Run the integration tests against a real RabbitMQ started for this run (tests/env/rabbitmq.sh).
# Runs every binary given and every tests/integration/*.test.sh, then stops the broker.
# A broker that cannot start is a failure, never a skip.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mktemp)
if ! "$root/tests/env/rabbitmq.sh" start > "$out"; then
  echo "integration: FAILED: the RabbitMQ broker could not be started (see above)"
  echo "integration: 0 passed, 1 failed"
  [ -z "${JOBPOOL_SUMMARY:-}" ] || echo "integration 0 1" >> "$JOBPOOL_SUMMARY"
  rm -f "$out"; exit 1
fi
# shellcheck disable=SC1090
. "$out"; rm -f "$out"
trap '"$root/tests/env/rabbitmq.sh" stop "$JOBPOOL_RMQ_DIR"' EXIT
export JOBPOOL_ROOT="$root" JOBPOOL_BUILD="${B:-$root/build}"
scripts=()
# TEST_SCRIPTS="worker metrics" runs only those scripts ("none": no script).
for s in "$here"/*.test.sh; do
  [ -f "$s" ] || continue
  if [ -n "${TEST_SCRIPTS:-}" ]; then
    case " $TEST_SCRIPTS " in *" $(basename "$s" .test.sh) "*) ;; *) continue ;; esac
  fi
  scripts+=("$s")
done
"$root/tests/run-tests.sh" integration "$@" "${scripts[@]}"
