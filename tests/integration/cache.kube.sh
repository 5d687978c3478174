#!/usr/bin/env bash
# The watch cache under faults, on the real API server and Job controller from kube-run.sh, with
# tests/fixtures/kubeproxy.py between the controller and the server (no kubelet: pods stay
# Pending, so every Job created for a message stays pending and the count is exact):
# - relist during a burst: a jobs watch ends with 410 Gone while the controller is creating Jobs,
#   the relist's answer and the watch after it arrive late: exactly one Job per message;
# - a lost create: the server creates a Job but its answer never arrives, and the watch shows it
#   only seconds later: no second Job for that message;
# - a stale watch: the pods watch stalls (the connection stays open, nothing comes), then every
#   pods request gets 503 with Retry-After: 3600. While the cache is older than its bound the
#   pools hold (no starts for waiting messages, no history delete), jobpool_cache_age_seconds
#   grows and jobpool_cache_stale is 1; once the proxy lets go the cache is current again within
#   the bound (Retry-After is capped at 30 s) and the pools resume.
set -u
: "${JOBPOOL_TEST_KUBE_SERVER:?run me through tests/integration/kube-run.sh}"
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/kube-run.sh}"
. "$(dirname "$0")/lib.sh" cache cache
NS=cache-it
ctl=""; proxy=""
stop_ctl() { [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }; ctl=""; }
cleanup() {
  stop_ctl
  [ -z "$proxy" ] || { kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null; }
  rm -rf "$T"
}
trap cleanup EXIT
k() { # METHOD PATH [BODY [CONTENT-TYPE]]: straight to the API server, not through the proxy
  curl -sS --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" \
    -X "$1" -H "content-type: ${4:-application/json}" ${3:+--data "$3"} "$JOBPOOL_TEST_KUBE_SERVER$2"
}
# jobs POOL: "name complete" per line, for the pool's Jobs (complete: 1 when Complete=True).
jobs() {
  k GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev%2Fpool%3D$1" |
    python3 -c 'import json,sys
for j in json.load(sys.stdin)["items"]:
    done = any(c["type"] == "Complete" and c["status"] == "True" for c in j.get("status", {}).get("conditions") or [])
    print(j["metadata"]["name"], int(done))'
}
njobs() { jobs "$1" | wc -l; }
it_broker_login
publish() { seq -f "m%g" 1 "$2" | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$1" --confirm 2>/dev/null; }
it_need jobpool-controller jp-publish
# wait_for SECS CMD...: true as soon as CMD succeeds within SECS seconds.
wait_for() { local end=$(( $(date +%s) + $1 )); shift; while ! "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.5; done; }

python3 "$JOBPOOL_ROOT/tests/fixtures/kubeproxy.py" "$JOBPOOL_TEST_KUBE_SERVER" "$JOBPOOL_TEST_KUBE_CA" > "$T/proxy.port" 2> "$T/proxy.log" &
proxy=$!
wait_for 10 test -s "$T/proxy.port" || { echo "cache: FAILED: kubeproxy did not start: $(cat "$T/proxy.log")"; exit 1; }
PPORT=$(cat "$T/proxy.port")
pctl() { curl -fsS -m 5 "http://127.0.0.1:$PPORT/_proxy?$1" >/dev/null; }
pstat() { curl -fsS -m 5 "http://127.0.0.1:$PPORT/_proxy/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
MPORT=$(free_port)
metric() { # NAME{LABELS}: its value now, "" when absent
  curl -fsS -m 5 "http://127.0.0.1:$MPORT/metrics" 2>/dev/null | awk -v n="$1" '$1 == n { print $2 }'
}

k POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$NS\"}}" >/dev/null
for q in cache-burst cache-lost cache-stale; do
  mq DELETE "/api/queues/%2F/$q" >/dev/null 2>&1
  mq PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
done
( umask 077; cat > "$T/kubeconfig" <<EOK
apiVersion: v1
kind: Config
current-context: proxied
clusters:
- name: proxied
  cluster: {server: "http://127.0.0.1:$PPORT"}
users:
- name: admin
  user: {token: "$JOBPOOL_TEST_KUBE_TOKEN"}
contexts:
- name: proxied
  context: {cluster: proxied, user: admin, namespace: $NS}
EOK
)
pool() { # NAME MAX-START-PER-TICK
  cat <<EOP
  - name: $1
    queue: cache-$1
    maxActive: 100
    maxStartPerTick: $2
    successfulHistory: 0
    failedHistory: 0
    pendingTimeout: 10m
    jobTemplate:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers: [{name: worker, image: registry.example/worker:1}]
EOP
}
cat > "$T/config.yaml" <<EOC
pollInterval: 500ms
backend: kube
metrics: {address: "127.0.0.1:$MPORT"}
$(rabbitmq_yaml amqp)
kubernetes:
  inCluster: false
  kubeconfig: $T/kubeconfig
  namespace: $NS
pools:
$(pool burst 4)
$(pool lost 20)
$(pool stale 20)
EOC
"$B/jobpool-controller" --config "$T/config.yaml" >> "$T/ctl.log" 2>&1 &
ctl=$!
reporting() { [ -n "$(metric 'jobpool_cache_stale{kind="pods"}')" ]; }
check "the controller reports its caches' age" wait_for 30 reporting

echo "== a relist in the middle of a burst: exactly one Job per message"
N=40
publish cache-burst $N
at_least() { [ "$(njobs "$1")" -ge "$2" ]; }
wait_for 30 at_least burst 4
# The open jobs watch ends with 410 Gone; the relist's list arrives 3 s after the server answered
# it, and every event of the watch after it 3 s late, while the controller goes on creating.
pctl "gone_jobs=1&delay_jobs_list_ms=3000&delay_jobs_watch_ms=3000"
wait_for 60 at_least burst $N
sleep 8 # 16 more ticks, past every delayed event
relisted() { [ "$(pstat gone_sent)" -ge 1 ] && [ "$(pstat jobs_lists_delayed)" -ge 1 ]; }
check "the relist happened during the burst (410 sent: $(pstat gone_sent), lists delayed: $(pstat jobs_lists_delayed))" relisted
check "exactly $N Jobs for $N messages ($(njobs burst))" [ "$(njobs burst)" = $N ]
pctl "delay_jobs_list_ms=0&delay_jobs_watch_ms=0"

echo "== a create whose answer is lost: no second Job"
# The server creates the Job but the answer is dropped, and the watch shows it only 5 s later.
pctl "drop_job_posts=1&delay_jobs_watch_ms=5000"
publish cache-lost 3
wait_for 30 at_least lost 3
sleep 10 # 20 more ticks, the delayed events included
check "one create's answer was dropped ($(pstat posts_dropped))" [ "$(pstat posts_dropped)" = 1 ]
check "exactly 3 Jobs for 3 messages ($(njobs lost))" [ "$(njobs lost)" = 3 ]
check "the controller said the answer was lost" grep -q "the create's answer was lost" "$T/ctl.log"
pctl "delay_jobs_watch_ms=0"

echo "== a stale pods watch: the pools hold, then recover within the bound"
publish cache-stale 2
wait_for 30 at_least stale 2
stale_is() { [ "$(metric 'jobpool_cache_stale{kind="pods"}')" = "$1" ]; }
check "the cache is current before the fault" stale_is 0
t0=$(date +%s)
pctl "stall_pods=1"
check "the stalled pods cache is reported stale" wait_for 90 stale_is 1
t_stale=$(( $(date +%s) - t0 ))
echo "  figure: stale reported ${t_stale} s after the pods watch stalled (bound 30 s)"
pctl "fail_pods=503&retry_after=3600&stall_pods=0"
jobs stale | awk '{print $1}' | sort > "$T/before"
# While it holds: more messages wait, and one Job finishes (successfulHistory 0 would delete it).
publish cache-stale 3
first=$(head -n 1 "$T/before")
pod=$(k GET "/api/v1/namespaces/$NS/pods?labelSelector=job-name%3D$first" |
  python3 -c 'import json,sys; i=json.load(sys.stdin)["items"]; print(i[0]["metadata"]["name"] if i else "")')
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
[ -n "$pod" ] && k PATCH "/api/v1/namespaces/$NS/pods/$pod/status" \
  "{\"status\":{\"phase\":\"Succeeded\",\"containerStatuses\":[{\"name\":\"worker\",\"ready\":false,\"restartCount\":0,\"image\":\"registry.example/worker:1\",\"imageID\":\"\",\"state\":{\"terminated\":{\"exitCode\":0,\"reason\":\"Completed\",\"startedAt\":\"$now\",\"finishedAt\":\"$now\"}}}]}}" \
  application/merge-patch+json >/dev/null
complete() { jobs stale | grep -q "^$first 1$"; }
check "a Job of the held pool finished" wait_for 30 complete
a1=$(metric 'jobpool_cache_age_seconds{kind="pods"}')
sleep 6 # 12 ticks with 5 messages waiting and a finished Job beyond successfulHistory
a2=$(metric 'jobpool_cache_age_seconds{kind="pods"}')
jobs stale | awk '{print $1}' | sort > "$T/during"
check "no Job started and none deleted while stale ($(wc -l < "$T/during") Jobs, were $(wc -l < "$T/before"))" \
  cmp -s "$T/before" "$T/during"
aging() { stale_is 1 && python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if b > a > 30 else 1)' "${a1:-0}" "${a2:-0}"; }
check "still stale, and the metric shows the age growing ($a1 s, then $a2 s)" aging
check "one log line said the pods cache went stale" [ "$(grep -c 'the pods cache is .* old' "$T/ctl.log")" = 1 ]
t1=$(date +%s)
pctl "fail_pods=0"
check "current again once the proxy lets go" wait_for 60 stale_is 0
t_rec=$(( $(date +%s) - t1 ))
echo "  figure: current again ${t_rec} s after the proxy let go (bound: Retry-After capped at 30 s, plus one list)"
check "recovered within 45 s ($t_rec s)" [ "$t_rec" -le 45 ]
check "one log line said it is current again" grep -q "the pods cache is current again" "$T/ctl.log"
resumed() { [ "$(jobs stale | grep -c ' 0$')" = 5 ] && ! jobs stale | grep -q ' 1$'; }
check "the pool resumed: the finished Job deleted, 5 pending Jobs for 5 messages" wait_for 30 resumed
stop_ctl
k DELETE "/api/v1/namespaces/$NS" >/dev/null
for q in cache-burst cache-lost cache-stale; do mq DELETE "/api/queues/%2F/$q" >/dev/null 2>&1; done
it_end "$T/ctl.log"
