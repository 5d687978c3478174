# tests/integration/lib.sh: what the integration scripts share. Source it first:
#   . "$(dirname "$0")/lib.sh" NAME TAG
# It sets JOBPOOL_ROOT, B (the build dir), T (a fresh temp dir /tmp/jobpool-TAG.XXXXXX, which
# the script's own cleanup removes), the pass/fail counters, and sources tests/env/common.sh.
# NAME is what the summary line and the failure messages say.
set -u
JOBPOOL_ROOT=${JOBPOOL_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
. "$JOBPOOL_ROOT/tests/env/common.sh"
B=${JOBPOOL_BUILD:-$JOBPOOL_ROOT/build}
IT_NAME=$1
T=$(mktemp -d "/tmp/jobpool-$2.XXXXXX")
pass=0; fail=0; failed=()

ok() { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); failed+=("$*"); echo "  FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# it_need BIN...: each must be built in $B, or the script fails now, saying which.
it_need() {
  local b
  for b in "$@"; do [ -x "$B/$b" ] || { echo "$IT_NAME: FAILED: no $b in $B"; exit 1; }; done
}

# it_broker_login: the broker's test credentials as the controller reads them (RABBITMQ_USERNAME
# and RABBITMQ_PASSWORD), and api METHOD PATH [BODY] for its management API.
it_broker_login() {
  export RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS
}
api() {
  curl -fsS -u "$RABBITMQ_USERNAME:$RABBITMQ_PASSWORD" -X "$1" -H 'content-type: application/json' \
    ${3:+--data "$3"} "$JOBPOOL_TEST_MGMT_URL$2"
}
mq() { api "$@"; }

# k METHOD PATH [BODY [CONTENT-TYPE]]: the API server from kube-run.sh, as its admin.
k() {
  curl -sS --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" \
    -X "$1" -H "content-type: ${4:-application/json}" ${3:+--data "$3"} "$JOBPOOL_TEST_KUBE_SERVER$2"
}

# it_end [FILE...]: the summary; on a failure each failed check again and the tail of each FILE.
# Its status is the script's.
it_end() {
  echo
  if [ "$fail" -ne 0 ]; then
    printf '%s: failed: %s\n' "$IT_NAME" "${failed[@]}"
    local f
    for f in "$@"; do [ -f "$f" ] && { echo "-- $f"; tail -n 30 "$f"; }; done
  fi
  echo "$IT_NAME: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
