#!/usr/bin/env bash
# pendingguard: a pending-timeout delete never kills a worker whose pod started after the
# decision. A slow node (a node simulator of its own, in its own namespace, keeps each pod
# Pending 5 s) and pendingTimeout 3s make the controller decide to delete the Job; a test-only
# delay between that decision and the delete (JOBPOOL_TEST_ACT_DELAY_MS=4000, which only waits)
# lets the pod start in between, as a pod reported Running just after a snapshot would.
# Proves: the controller saw the pod start in its live check and kept the Job; no
# pending_timeout delete is counted; no second Job was made; the message ran and was acked
# exactly once. (Before the live check, the Job was deleted on the snapshot's word.)
# Two more pools in the same run, neither of which is pending:
# - guard-unk: its pod is put in phase Unknown (as when a node stops reporting) while the task
#   runs; the Job is not deleted and the task finishes;
# - guard-retry: backoffLimit 1 and a failing task: between its two pods the Job has a failed
#   pod and no Running one; it is never deleted, both pods run, and no second Job is started
#   for the requeued message (the retry will take it).
. "$(dirname "$0")/lib.sh"
NS=e2e-guard
out=$(scenario_dir pendingguard)
kapi POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$NS\"}}" >/dev/null
secret=$(jq -n --arg u "$JOBPOOL_TEST_AMQP_URL" \
  '{apiVersion:"v1",kind:"Secret",metadata:{name:"rabbitmq-worker"},stringData:{JOBPOOL_AMQP_URL:$u}}')
kapi POST "/api/v1/namespaces/$NS/secrets" "$secret" >/dev/null || bad "cannot create the Secret in $NS"
mkdir -p "$E2E_WORK/guard-pods"
python3 "$E2E_HERE/nodesim.py" --worker "$WORKER" --namespace "$NS" --node-name nodesim-guard \
  --start-delay 5 --events "$out/sim.events" --log-dir "$E2E_WORK/guard-pods" \
  >"$out/nodesim.log" 2>&1 &
SIM=$!
echo "$SIM" >> "$E2E_WORK/controller.pids"
declare_queue e2e.guard
cfg="$E2E_WORK/pendingguard.yaml"
config_header "$cfg" 1s
sed -i "s/^  namespace: default/  namespace: $NS/" "$cfg"
pool_yaml guard e2e.guard "$out" "    maxActive: 5
    pendingTimeout: 3s
    idleTimeout: 10s" >> "$cfg"
out_unk=$(scenario_dir pendingguard-unk); out_retry=$(scenario_dir pendingguard-retry)
declare_queue e2e.guard.unk
declare_queue e2e.guard.retry
# pendingTimeout 8s: these pods start (at 5 s) before it, so only the Unknown phase and the
# retry can make them look pending.
pool_yaml guard-unk e2e.guard.unk "$out_unk" "    maxActive: 5
    pendingTimeout: 8s
    idleTimeout: 10s" >> "$cfg"
pool_yaml guard-retry e2e.guard.retry "$out_retry" "    maxActive: 5
    pendingTimeout: 8s
    maxAttempts: 2
    idleTimeout: 10s" | sed 's/backoffLimit: 0/backoffLimit: 1/' >> "$cfg"
$TOOL publish --queue e2e.guard --count 1 --sleep 2 --log "$out/pub" || bad "publish"
$TOOL publish --queue e2e.guard.unk --count 1 --sleep 20 --log "$out_unk/pub" || bad "publish"
$TOOL publish --queue e2e.guard.retry --count 1 --fail-mod 1 --log "$out_retry/pub" || bad "publish"
CTRL_ENV=JOBPOOL_TEST_ACT_DELAY_MS=4000 ctrl_start "$cfg"
# guard-unk: once its task runs, its pod's phase becomes Unknown.
unk_started() { [ "$(lines "$out_unk/started")" -ge 1 ]; }
wait_until 60 unk_started || bad "the guard-unk task did not start"
unk_pod=$(kapi GET "/api/v1/namespaces/$NS/pods?labelSelector=jobpool.dev/pool%3Dguard-unk" | jq -r '.items[0].metadata.name')
unk_job=$(kapi GET "/api/v1/namespaces/$NS/pods/$unk_pod" | jq -r '.metadata.labels["job-name"]')
curl -fsS -m 20 --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" \
  -X PATCH -H 'content-type: application/merge-patch+json' --data '{"status":{"phase":"Unknown"}}' \
  "$JOBPOOL_TEST_KUBE_SERVER/api/v1/namespaces/$NS/pods/$unk_pod/status" >/dev/null || bad "cannot set pod $unk_pod Unknown"
sleep 10 # past pendingTimeout: a Job taken for pending would be deleted by now
unk_alive=$(kapi GET "/apis/batch/v1/namespaces/$NS/jobs/$unk_job" | jq -r 'if .metadata.deletionTimestamp == null then "yes" else "deleting" end' 2>/dev/null)
check "guard-unk: Job $unk_job, whose pod is in phase Unknown, is still there (${unk_alive:-gone})" [ "$unk_alive" = yes ]
ran() { [ "$(lines "$out/done")" -ge 1 ] && [ "$(lines "$out_unk/done")" -ge 1 ] && [ "$(lines "$out_retry/failed")" -ge 2 ]; }
wait_until 90 ran
jobs_in_ns() { kapi GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev/pool%3Dguard" | jq -r '.items | length'; }
complete_in_ns() {
  kapi GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev/pool%3Dguard" |
    jq -r '[.items[] | select(any((.status.conditions // [])[]; .type == "Complete" and .status == "True"))] | length'
}
guard_done() { [ "$(complete_in_ns)" = 1 ]; }
wait_until 30 guard_done
sleep 3 # three more ticks: a late duplicate or delete would show now
timeouts=$(ctrl_metrics | awk '/^jobpool_workers_deleted_total\{pool="guard",reason="pending_timeout"\}/ {print $2}')
check "the controller decided the delete and its live check kept the Job" \
  grep -q "is no longer pending: not deleted" "$CTRL_LOG"
check "no pending_timeout delete counted (${timeouts:-0})" [ "${timeouts:-0}" = 0 ]
check "exactly one Job ($(jobs_in_ns)), and it completed ($(complete_in_ns))" \
  bash -c "[ '$(jobs_in_ns)' = 1 ] && [ '$(complete_in_ns)' = 1 ]"
check "the task started once ($(lines "$out/started")) and finished once ($(lines "$out/done"))" \
  bash -c "[ '$(lines "$out/started")' = 1 ] && [ '$(lines "$out/done")' = 1 ]"
check "no task was killed (no exit code >= 128)" \
  bash -c "awk '\$2 == \"exited\" && \$5 >= 128 { bad = 1 } END { exit bad }' '$out/sim.events'"
check_drained e2e.guard
unk_timeouts=$(ctrl_metrics | awk '/^jobpool_workers_deleted_total\{pool="guard-unk",reason="pending_timeout"\}/ {print $2}')
check "guard-unk: no pending_timeout delete (${unk_timeouts:-0}); its task finished ($(lines "$out_unk/done"))" \
  bash -c "[ '${unk_timeouts:-0}' = 0 ] && [ '$(lines "$out_unk/done")' = 1 ]"
retry_timeouts=$(ctrl_metrics | awk '/^jobpool_workers_deleted_total\{pool="guard-retry",reason="pending_timeout"\}/ {print $2}')
retry_jobs=$(kapi GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev/pool%3Dguard-retry")
check "guard-retry: no pending_timeout delete (${retry_timeouts:-0})" [ "${retry_timeouts:-0}" = 0 ]
check "guard-retry: one Job, with both of its pods failed ($(jq -c '[.items[] | .status.failed]' <<< "$retry_jobs"))" \
  [ "$(jq -c '[.items[] | .status.failed]' <<< "$retry_jobs")" = "[2]" ]
check "guard-retry: the task ran on attempts 1 and 2 ($(cut -d' ' -f4 "$out_retry/failed" | tr '\n' ' '))" \
  [ "$(cut -d' ' -f4 "$out_retry/failed" | sort | tr '\n' ' ')" = "1 2 " ]
ctrl_stop
kill -TERM "$SIM" 2>/dev/null; wait "$SIM" 2>/dev/null
kapi DELETE "/api/v1/namespaces/$NS" >/dev/null 2>&1 || true
finish
