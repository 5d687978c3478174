#!/usr/bin/env bash
# /metrics the way users scrape it: promtool's linter on the text, then a real Prometheus (Debian's
# 2.42) on loopback scraping the metrics module every second, checked through its query API.
# Serves a known set of figures with build/tests/metrics_demo (the metrics module alone).
# Needs JOBPOOL_BUILD (set by run.sh); prometheus, promtool, curl and python3 (tests/env/deps.sh).
set -u
root=${JOBPOOL_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${JOBPOOL_BUILD:-$root/build}
demo=$build/tests/metrics_demo
T=$(mktemp -d /tmp/jobpool-metrics-test.XXXXXX)
pass=0; fail=0; failed=()
demo_pid=; prom_pid=
cleanup() {
  [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
  [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); failed+=("$*"); echo "  FAIL: $*"; }
die() { echo "metrics.test: FAILED: $*"; exit 1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

for tool in prometheus promtool curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run tests/env/deps.sh test)"
done
if [ ! -x "$demo" ]; then
  make -C "$root" --no-print-directory B="$build" "$build/tests/metrics_demo" >/dev/null ||
    die "could not build $demo"
fi

# A port nobody listens on right now (the kernel picks it; released before prometheus binds).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # SECONDS COMMAND...: retry every 0.2 s
  local until=$(( $(date +%s) + $1 )); shift
  while ! "$@"; do [ "$(date +%s)" -ge "$until" ] && return 1; sleep 0.2; done
}

# ---- the endpoint -------------------------------------------------------------------------
"$demo" 127.0.0.1:0 "$T/port" 2>"$T/demo.log" & demo_pid=$!
wait_for 10 test -s "$T/port" || die "metrics_demo did not start: $(cat "$T/demo.log")"
port=$(cat "$T/port")
target=127.0.0.1:$port
echo "  metrics_demo pid $demo_pid serves $target"

curl -fsS -D "$T/headers" "http://$target/metrics" -o "$T/metrics.txt" || die "GET /metrics failed"
check "content type is the 0.0.4 text format" \
  grep -qi '^Content-Type: text/plain; version=0.0.4; charset=utf-8' "$T/headers"
promtool check metrics < "$T/metrics.txt" > "$T/promtool.out" 2>&1; prc=$?
check "promtool check metrics: clean (exit 0, no findings)" \
  test "$prc" -eq 0 -a ! -s "$T/promtool.out"
[ -s "$T/promtool.out" ] && sed 's/^/    promtool: /' "$T/promtool.out"
check "healthz 200 while the loop ticks" \
  test "$(curl -s -o /dev/null -w '%{http_code}' "http://$target/healthz")" = 200
check "readyz 200 after the first pass" \
  test "$(curl -s -o /dev/null -w '%{http_code}' "http://$target/readyz")" = 200

# ---- a real Prometheus --------------------------------------------------------------------
pport=$(free_port)
mkdir -p "$T/data"
cat > "$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: jobpool
    static_configs:
      - targets: ['$target']
EOF
promtool check config "$T/prometheus.yml" >/dev/null 2>&1 || die "promtool rejects the scrape config"
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/data" \
  --web.listen-address="127.0.0.1:$pport" --log.level=warn > "$T/prom.log" 2>&1 & prom_pid=$!
api=http://127.0.0.1:$pport
ready() { kill -0 "$prom_pid" 2>/dev/null && curl -fs -o /dev/null "$api/-/ready"; }
wait_for 60 ready || die "prometheus did not become ready: $(tail -5 "$T/prom.log")"
echo "  prometheus pid $prom_pid on 127.0.0.1:$pport, scraping job=\"jobpool\" every 1s"

# query EXPR: prints one line per series, "label=value,... value", labels sorted, __name__ first.
query() {
  curl -fsS --get --data-urlencode "query=$1" "$api/api/v1/query" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["status"] == "success", r
for s in r["data"]["result"]:
    m = s["metric"]
    keys = sorted(k for k in m if k != "__name__")
    name = m.get("__name__", "")
    print(",".join([name] + ["%s=%s" % (k, m[k]) for k in keys]), s["value"][1])
'
}
up_is_1() { [ "$(query 'up{job="jobpool"}')" = "up,instance=$target,job=jobpool 1" ]; }
check 'up{job="jobpool"} == 1' wait_for 30 up_is_1
query 'up{job="jobpool"}' | sed 's/^/    /'

# expect EXPR EXPECTED-OUTPUT (exact, all lines)
expect() {
  local got; got=$(query "$1" | sort)
  if [ "$got" = "$(printf '%s\n' "$2" | sort)" ]; then ok "$1"; else
    bad "$1"; echo "    expected: $2"; echo "    got:      $got"; fi
}
L="instance=$target,job=jobpool"
expect 'jobpool_build_info' "jobpool_build_info,$L,version=0.1.0 1"
expect 'jobpool_leader' "jobpool_leader,$L 1"
expect 'jobpool_queue_messages_ready' "jobpool_queue_messages_ready,$L,pool=mail 0
jobpool_queue_messages_ready,$L,pool=thumbs 40"
expect 'jobpool_queue_messages_unacked{pool="thumbs"}' \
  "jobpool_queue_messages_unacked,$L,pool=thumbs 17"
expect 'jobpool_queue_depth_age_seconds{pool="thumbs"}' \
  "jobpool_queue_depth_age_seconds,$L,pool=thumbs 4.6"
expect 'jobpool_workers{pool="thumbs"}' "jobpool_workers,$L,pool=thumbs,state=failed 2
jobpool_workers,$L,pool=thumbs,state=pending 3
jobpool_workers,$L,pool=thumbs,state=running 17
jobpool_workers,$L,pool=thumbs,state=succeeded 10"
expect 'jobpool_workers_started_total{pool="thumbs"}' \
  "jobpool_workers_started_total,$L,pool=thumbs 20"
expect 'jobpool_workers_deleted_total{pool="thumbs"}' \
  "jobpool_workers_deleted_total,$L,pool=thumbs,reason=failed_history 0
jobpool_workers_deleted_total,$L,pool=thumbs,reason=orphaned 0
jobpool_workers_deleted_total,$L,pool=thumbs,reason=pending_timeout 1
jobpool_workers_deleted_total,$L,pool=thumbs,reason=succeeded_history 4"
expect 'jobpool_workers_wasted_total' "jobpool_workers_wasted_total,$L,pool=mail 0
jobpool_workers_wasted_total,$L,pool=thumbs 3"
expect 'jobpool_errors_total' \
  "jobpool_errors_total,code=config,$L,source=config 1
jobpool_errors_total,code=invalid,$L,pool=mail,source=kubernetes 1
jobpool_errors_total,code=timeout,$L,pool=thumbs,source=rabbitmq 1"
expect 'jobpool_reconcile_duration_seconds_count' \
  "jobpool_reconcile_duration_seconds_count,$L,pool=mail 1
jobpool_reconcile_duration_seconds_count,$L,pool=thumbs 2"
expect 'jobpool_reconcile_duration_seconds_bucket{pool="thumbs",le=~"0.01|0.025|0.5|\\+Inf"}' \
  "jobpool_reconcile_duration_seconds_bucket,$L,le=+Inf,pool=thumbs 2
jobpool_reconcile_duration_seconds_bucket,$L,le=0.01,pool=thumbs 0
jobpool_reconcile_duration_seconds_bucket,$L,le=0.025,pool=thumbs 1
jobpool_reconcile_duration_seconds_bucket,$L,le=0.5,pool=thumbs 2"
# The documented PromQL works: waste ratio and backlog per pool (docs/metrics.md).
expect 'sum by (pool) (jobpool_workers_wasted_total) / sum by (pool) (jobpool_workers_started_total{pool="thumbs"})' \
  ",pool=thumbs 0.15"
expect 'sum by (pool) (jobpool_queue_messages_ready) - sum by (pool) (jobpool_workers{state=~"pending|running"})' \
  ",pool=mail 0
,pool=thumbs 20"
# Counters move between scrapes: the demo starts a "mail" worker every 200 ms.
grows() { [ "$(query 'increase(jobpool_workers_started_total{pool="mail"}[5s]) > 0' | wc -l)" = 1 ]; }
check 'jobpool_workers_started_total{pool="mail"} increases between scrapes' wait_for 20 grows

echo
[ "$fail" -eq 0 ] || echo "metrics.test: failed: ${failed[*]}"
echo "metrics.test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
