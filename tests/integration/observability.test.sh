#!/usr/bin/env bash
# What an operator reads, from a live controller (local backend) on the real broker from run.sh:
# - jobpool_task_wait_seconds and jobpool_task_duration_seconds: messages published with a known
#   AMQP timestamp (100 s ago) land in the right buckets with the right count and sum; messages
#   without one count in the duration histogram only (their wait is unknown);
# - /debug/pools is JSON with the pool's last decision, and `jobpool-controller status` prints it
#   as a table and as the same JSON;
# - every expression of the chart's Grafana dashboard and alert rules names only metrics, labels
#   and label values this live controller exports (tests/integration/promql_refs.py, which first
#   proves on the same scrape that it reports an unknown metric, label or value).
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
. "$(dirname "$0")/lib.sh" observability.test obs-test
ctl=""
cleanup() { [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }; rm -rf "$T"; }
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
it_broker_login
# The task runs one second and records that it ran.
printf '#!/bin/sh\ncat > /dev/null\nsleep 1\necho done >> "$TASK_LOG"\n' > "$T/task.sh"
chmod +x "$T/task.sh"
export TASK_LOG=$T/tasks; : > "$TASK_LOG"
NT=6; NU=3; AGO=100
q=obs-q
api PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
port=$(free_port)
cat > "$T/config.yaml" <<EOC
pollInterval: 500ms
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml amqp)
pools:
  - name: obs
    queue: $q
    maxActive: 4
    idleTimeout: 2s
    pendingTimeout: 2m
    worker:
      command: [jobpool-worker, --, $T/task.sh]
      env: {TASK_LOG: {env: TASK_LOG}}
EOC
echo "== task wait and duration: $NT messages stamped $AGO s ago, $NU without a timestamp"
seq 1 $NT | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" $q --confirm --timestamp $(( $(date +%s) - AGO )) 2>/dev/null
seq 1 $NU | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" $q --confirm 2>/dev/null
"$B/jobpool-controller" --config "$T/config.yaml" --worker "$B/jobpool-worker" > "$T/ctl.log" 2>&1 &
ctl=$!
total=$((NT + NU))
for _ in $(seq 1 120); do   # at most 60 s
  [ "$(wc -l < "$TASK_LOG")" -ge $total ] &&
    [ "$( { ps --ppid "$ctl" --no-headers -o comm || true; } | grep -c jobpool-worker)" = 0 ] && break
  sleep 0.5
done
sleep 1.5   # a few more passes: every finished worker has been listed
curl -fsS "http://127.0.0.1:$port/metrics" > "$T/metrics.txt"
m() { awk -v k="$1" '$1 == k {print $2}' "$T/metrics.txt"; }
w_count=$(m 'jobpool_task_wait_seconds_count{pool="obs"}'); w_sum=$(m 'jobpool_task_wait_seconds_sum{pool="obs"}')
d_count=$(m 'jobpool_task_duration_seconds_count{pool="obs"}'); d_sum=$(m 'jobpool_task_duration_seconds_sum{pool="obs"}')
echo "  figures: wait count=$w_count sum=$w_sum; duration count=$d_count sum=$d_sum"
check "all $total tasks ran ($(wc -l < "$TASK_LOG"))" [ "$(wc -l < "$TASK_LOG")" = $total ]
check "wait observed for the $NT stamped messages only (count $w_count)" [ "$w_count" = $NT ]
check "wait sum between $NT x $AGO s and $NT x $((AGO + 30)) s ($w_sum)" \
  awk -v s="${w_sum:-0}" -v n=$NT -v a=$AGO 'BEGIN { exit !(s >= n * a && s <= n * (a + 30)) }'
check "no stamped wait under 60 s, all under 120 s" \
  [ "$(m 'jobpool_task_wait_seconds_bucket{pool="obs",le="60"}')/$(m 'jobpool_task_wait_seconds_bucket{pool="obs",le="120"}')" = "0/$NT" ]
check "duration observed for all $total tasks (count $d_count)" [ "$d_count" = $total ]
check "duration sum between $total x 1 s and $total x 10 s ($d_sum)" \
  awk -v s="${d_sum:-0}" -v n=$total 'BEGIN { exit !(s >= n && s <= n * 10) }'
check "no task ran under 0.5 s" [ "$(m 'jobpool_task_duration_seconds_bucket{pool="obs",le="0.5"}')" = 0 ]
check "the alerting gauges are there" bash -c "grep -q '^jobpool_pool_max_active{pool=\"obs\"} 4$' '$T/metrics.txt' &&
  grep -q '^jobpool_pool_pending_timeout_seconds{pool=\"obs\"} 120$' '$T/metrics.txt' &&
  grep -q '^jobpool_queue_depth_ok{pool=\"obs\"} 1$' '$T/metrics.txt' &&
  grep -q '^jobpool_last_tick_timestamp_seconds ' '$T/metrics.txt'"

echo "== /debug/pools"
curl -fsS -D "$T/pools.hdr" "http://127.0.0.1:$port/debug/pools" > "$T/pools.json"
check "served as application/json" grep -qi '^content-type: application/json' "$T/pools.hdr"
check "the pool's last decision, with its numbers" python3 - "$T/pools.json" <<'EOP'
import json, sys, time
d = json.load(open(sys.argv[1]))
p = {x["name"]: x for x in d["pools"]}["obs"]
need = ["decided_at", "depth_ok", "ready", "active", "pending", "waiting", "running", "start",
        "reason", "sample_age_seconds", "last_error", "max_active", "tasks_total"]
missing = [k for k in need if k not in p]
assert not missing, missing
assert p["max_active"] == 4 and p["ready"] == 0 and p["active"] == 0 and p["tasks_total"] == 9, p
assert p["reason"] == "idle" and p["last_error"] is None and p["depth_ok"] is True, p
assert abs(time.time() - p["decided_at"]) < 30, p
assert d["leader"] is True and d["ready"] is True, d
EOP

echo "== jobpool-controller status"
"$B/jobpool-controller" status --address "127.0.0.1:$port" > "$T/status.txt"; rc=$?
cat "$T/status.txt" | sed 's/^/  | /'
check "status exits 0 ($rc)" [ "$rc" = 0 ]
check "the table has the header and the pool's row with its numbers" bash -c "
  grep -qE '^POOL +READY +ACTIVE +PENDING +WAITING +RUNNING +MAX +START +TASKS +REASON' '$T/status.txt' &&
  grep -qE '^obs +0 +0 +0 +0 +0 +4 +0 +9 +idle ' '$T/status.txt' &&
  grep -q '^controller .*: leader yes, ready yes' '$T/status.txt'"
"$B/jobpool-controller" status --address ":$port" -o json > "$T/status.json"; rc=$?
check "status -o json (\":PORT\" means this host) is the endpoint's JSON ($rc)" python3 -c "
import json, sys
a, b = json.load(open('$T/status.json')), json.load(open('$T/pools.json'))
assert [p['name'] for p in a['pools']] == [p['name'] for p in b['pools']] == ['obs']
assert a['pools'][0]['tasks_total'] == b['pools'][0]['tasks_total'] == 9"
"$B/jobpool-controller" status --address 127.0.0.1:1 > /dev/null 2> "$T/status.err"; rc=$?
check "status against nothing: exit 1 and one line naming the address ($rc)" \
  bash -c "[ $rc = 1 ] && grep -q '127.0.0.1:1/debug/pools: connection refused' '$T/status.err'"
"$B/jobpool-controller" status -o yaml > /dev/null 2>&1; rc=$?
check "status -o yaml is a usage error (exit $rc)" [ "$rc" = 2 ]

kill -TERM "$ctl"; wait "$ctl"; ctl=""

echo "== the chart's dashboard and alert rules against what this controller exports"
# A second run with a pool whose worker command cannot be started, so that the scrape also has
# jobpool_errors_total series (source, code) next to the first run's figures.
api PUT "/api/queues/%2F/obs-broken" '{"durable":true}' >/dev/null
echo x | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" obs-broken --confirm 2>/dev/null
sed -e "s#queue: $q#queue: obs-broken#" -e "s#- name: obs#- name: broken#" \
  -e "s#command: \[jobpool-worker, --, $T/task.sh\]#command: [$T/no-such-worker]#" "$T/config.yaml" > "$T/broken.yaml"
grep -q "no-such-worker" "$T/broken.yaml" || echo "  (the broken config did not take: see $T/broken.yaml)"
"$B/jobpool-controller" --config "$T/broken.yaml" > "$T/broken.log" 2>&1 &
ctl=$!
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/metrics" > "$T/metrics2.txt" 2>/dev/null &&
    grep -q '^jobpool_errors_total{pool="broken",source="local",code="spawn"}' "$T/metrics2.txt" && break
  sleep 0.5
done
kill -TERM "$ctl"; wait "$ctl"; ctl=""
check "a start that fails is counted as errors_total{source=\"local\",code=\"spawn\"}" \
  grep -q '^jobpool_errors_total{pool="broken",source="local",code="spawn"} [1-9]' "$T/metrics2.txt"
refs="python3 $JOBPOOL_ROOT/tests/integration/promql_refs.py --scrape $T/metrics.txt --scrape $T/metrics2.txt"
check "the checker itself reports unknown metrics, labels and values" $refs --self-test
# The rules as a user with a per-pool threshold for this pool would render them.
bin=$("$JOBPOOL_ROOT/tests/env/tools.sh")
"$bin/helm" template jobpool "$JOBPOOL_ROOT/charts/jobpool" --set prometheusRule.enabled=true \
  --set prometheusRule.taskWaitP95.pools.obs=60 --show-only templates/prometheusrule.yaml > "$T/rule.yaml"
check "every dashboard expression names exported metrics, labels and values" \
  $refs --dashboard "$JOBPOOL_ROOT/charts/jobpool/dashboards/jobpool.json"
check "every alert expression names exported metrics, labels and values" $refs --rules "$T/rule.yaml"
it_end "$T/ctl.log"
