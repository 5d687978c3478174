# lib.sh: helpers the e2e scenarios source: checks, the broker and API server calls, the
# controller's config and life cycle, and the figures each scenario leaves for bench/e2e.sh.
# Needs the environment tests/e2e/run.sh exports (E2E_WORK, CONTROLLER, the service URLs).
# shellcheck shell=bash
set -u
: "${E2E_WORK:?run the scenarios through tests/e2e/run.sh}"
E2E_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL="python3 $E2E_HERE/tool.py"
TASK="$E2E_HERE/task.sh"
SCEN=${SCEN:-$(basename "$0" .sh)}
pass=0; fail=0
CTRL_PID=; SAMPLER_PID=

say() { echo "[$SCEN] $*"; }
ok() { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# The scenario's result line for run.sh; stops what the scenario started.
finish() {
  ctrl_stop
  echo "$pass $fail" > "$E2E_WORK/$SCEN.result"
  echo "[$SCEN] $pass passed, $fail failed"
  [ "$fail" = 0 ]
}
trap 'ctrl_stop' EXIT

# wait_until SECS CMD...: true as soon as CMD succeeds, false after SECS seconds.
wait_until() {
  local secs=$1 t_end; shift
  t_end=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$t_end" ]; do
    "$@" && return 0
    sleep 1
  done
  "$@"
}

# scenario_dir NAME: its output dir with the task's (empty) result files.
scenario_dir() { mkdir -p "$E2E_WORK/$1"; touch "$E2E_WORK/$1/started" "$E2E_WORK/$1/done" "$E2E_WORK/$1/failed"; echo "$E2E_WORK/$1"; }
lines() { wc -l < "$1"; }

# ---- RabbitMQ -------------------------------------------------------------------------------
mgmt() { # METHOD PATH [BODY]
  curl -fsS -m 10 -u "$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS" -X "$1" \
    -H 'content-type: application/json' ${3:+--data "$3"} "$JOBPOOL_TEST_MGMT_URL$2"
}
declare_queue() { # NAME [ARGUMENTS-JSON]: a fresh durable queue
  mgmt DELETE "/api/queues/%2F/$1" >/dev/null 2>&1 || true
  mgmt PUT "/api/queues/%2F/$1" "{\"durable\":true,\"arguments\":${2:-{\}}}" >/dev/null
}
declare_dlq() { # EXCHANGE QUEUE: a fanout dead-letter exchange and its queue
  mgmt PUT "/api/exchanges/%2F/$1" '{"type":"fanout","durable":true}' >/dev/null
  declare_queue "$2"
  mgmt POST "/api/bindings/%2F/e/$1/q/$2" '{"routing_key":""}' >/dev/null
}
# Exact counts, asked of the queue process itself through the test broker's own rabbitmqctl.
# The management API's messages_ready/_unacknowledged are statistics that trail the queue by
# 5-10 s: a check that reads them right after the last ack can see work that is already done.
# queue_counts QUEUE: "ready unacked consumers"; fails (prints nothing) when the broker does not
# answer or has no such queue, so a check never passes on a read that did not happen.
queue_counts() {
  "$E2E_HERE/../env/rabbitmq.sh" ctl "$JOBPOOL_RMQ_DIR" list_queues -q --no-table-headers \
    name messages_ready messages_unacknowledged consumers 2>/dev/null |
    awk -F'\t' -v q="$1" '$1 == q { print $2, $3, $4; found = 1 } END { exit !found }'
}
queue_ready() { queue_counts "$1" | cut -d' ' -f1; }
queue_unacked() { queue_counts "$1" | cut -d' ' -f2; }
# queue_drained QUEUE: 0 ready and 0 unacked now, by the exact count.
queue_drained() { [ "$(queue_counts "$1" | cut -d' ' -f1-2)" = "0 0" ]; }
# check_drained QUEUE: the check that QUEUE ends empty. Acks of exited workers reach the queue
# process a moment after the process exits, so the exact count is waited on with a deadline.
check_drained() {
  if wait_until "${2:-30}" queue_drained "$1"; then ok "queue $1 empty: 0 ready, 0 unacked (rabbitmqctl)"
  else bad "queue $1 empty: ready unacked consumers = '$(queue_counts "$1" || echo "no answer")' (rabbitmqctl)"; fi
}

# ---- Kubernetes -----------------------------------------------------------------------------
kapi() { # METHOD PATH [BODY]
  curl -fsS -m 20 --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" \
    -X "$1" -H 'content-type: application/json' ${3:+--data "$3"} "$JOBPOOL_TEST_KUBE_SERVER$2"
}
# job_counts POOL: "total complete failed unfinished" for the pool's Jobs now.
job_counts() {
  kapi GET "/apis/batch/v1/namespaces/default/jobs?labelSelector=jobpool.dev/pool%3D$1" |
    jq -r '[.items[] | [(.status.conditions // [])[] | select(.status=="True") | .type]] |
      "\(length) \(map(select(index("Complete"))) | length) \(map(select(index("Failed"))) | length) \(map(select(index("Complete") == null and index("Failed") == null)) | length)"'
}
delete_jobs() { # POOL: the scenario's Jobs, and their Pods with them
  kapi DELETE "/apis/batch/v1/namespaces/default/jobs?labelSelector=jobpool.dev/pool%3D$1&propagationPolicy=Background" >/dev/null 2>&1 || true
}
# Jobs of pools named PREFIX* that the recorder saw created and not yet finished (cheap at 5,000).
recorded_unfinished() {
  awk -v p="$1" 'index($4, p) == 1 { if ($2 == "ADDED") n[$3] = 1; else if ($2 == "DONE") delete n[$3] }
    END { c = 0; for (k in n) c++; print c }' "$E2E_WORK/jobs.events"
}
# Processes the node simulator runs now for POOL's pods (from its event log).
sim_running() {
  awk -v p="$1-" 'index($4, p) == 1 { if ($2 == "started") n[$3] = 1; else if ($2 == "exited") delete n[$3] }
    END { c = 0; for (k in n) c++; print c }' "$E2E_WORK/sim.events"
}

# ---- the controller -------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# config_header FILE [POLL]: the global part of a controller config for this environment.
config_header() {
  CTRL_METRICS_PORT=$(free_port)
  cat > "$1" <<EOF
pollInterval: ${E2E_POLL:-${2:-1s}}
backend: kube
log: {format: text, level: info}
metrics: {address: "127.0.0.1:$CTRL_METRICS_PORT"}
rabbitmq:
  managementUrl: $JOBPOOL_TEST_MGMT_URL
  amqpUrl: amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT
  vhost: /
  username: {env: RABBITMQ_USERNAME}
  password: {env: RABBITMQ_PASSWORD}
  timeout: 3s
kubernetes:
  inCluster: false
  kubeconfig: $KUBECONFIG
  namespace: default
pools:
EOF
}

# worker_template INDENT OUTDIR [SECRET]: the jobTemplate of a pool (a file's or a JobPool's)
# whose Jobs run tests/e2e/task.sh in jobpool-worker (the node simulator maps the image to the
# worker binary), writing to OUTDIR; each line indented by INDENT. The workers' broker login
# comes from Secret SECRET (default rabbitmq-worker; "-": none, the pool's own connection).
worker_template() {
  local secret=${3:-rabbitmq-worker}
  {
    cat <<EOF
jobTemplate:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 5
      containers:
        - name: worker
          image: jobpool/worker:e2e
          args: [--, $TASK, $2]
EOF
    [ "$secret" = - ] || echo "          envFrom: [{secretRef: {name: $secret}}]"
  } | sed "s/^/$1/"
}

# pool_yaml NAME QUEUE OUTDIR [EXTRA-YAML-LINES]: one pool of the config file (worker_template).
pool_yaml() {
  cat <<EOF
  - name: $1
    queue: $2
${4:-}
$(worker_template '    ' "$3")
EOF
}

# ctrl_start CONFIG: runs the controller in the background; CTRL_PID, CTRL_LOG; samples its
# memory and CPU into $E2E_WORK/$SCEN.proc. CTRL_ENV (NAME=VALUE words) is added to the
# controller's environment only.
ctrl_start() {
  CTRL_LOG="$E2E_WORK/$SCEN.controller.log"
  # shellcheck disable=SC2086
  RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS \
    env ${CTRL_ENV:-} "$CONTROLLER" --config "$1" ${E2E_CTL_FLAGS:-} >>"$CTRL_LOG" 2>&1 </dev/null &
  CTRL_PID=$!
  echo "$CTRL_PID" >> "$E2E_WORK/controller.pids"
  $TOOL sample --pid "$CTRL_PID" --out "$E2E_WORK/$SCEN.proc" --interval 1 &
  SAMPLER_PID=$!
  echo "$SAMPLER_PID" >> "$E2E_WORK/controller.pids"
  sleep 0.5
  kill -0 "$CTRL_PID" 2>/dev/null || { bad "controller exited at start (log: $CTRL_LOG)"; tail -n 20 "$CTRL_LOG"; }
}
ctrl_stop() { # SIGTERM, then SIGKILL after 10 s
  [ -n "${CTRL_PID:-}" ] || return 0
  kill -TERM "$CTRL_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 40); do kill -0 "$CTRL_PID" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$CTRL_PID" 2>/dev/null || true
  wait "$CTRL_PID" 2>/dev/null || true
  [ -z "${SAMPLER_PID:-}" ] || { kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; }
  CTRL_PID=; SAMPLER_PID=
}
ctrl_metrics() { curl -fsS -m 5 "http://127.0.0.1:$CTRL_METRICS_PORT/metrics"; }
# Reconcile passes so far: the first pool's histogram count (every pool gets one per tick).
ctrl_ticks() {
  ctrl_metrics | awk '/^jobpool_reconcile_duration_seconds_count\{pool=/ && !n { n = $2 } END { print n + 0 }'
}
CTRL_WINDOW_T0=0; CTRL_WINDOW_TICKS0=0
ctrl_window_begin() { CTRL_WINDOW_T0=$(now_ms); CTRL_WINDOW_TICKS0=$(ctrl_ticks || echo 0); }
# ctrl_figures: JSON with the controller's peak RSS, private dirty, CPU and API requests per
# tick over the window since ctrl_window_begin.
ctrl_figures() {
  local t1 ticks1 ticks clk
  t1=$(now_ms); ticks1=$(ctrl_ticks || echo 0); clk=$(getconf CLK_TCK)
  ticks=$(( ${ticks1:-0} - ${CTRL_WINDOW_TICKS0:-0} ))
  local audit
  audit=$($TOOL auditcount --audit "$JOBPOOL_KUBE_DIR/log/audit.log" --ua jobpool/ \
    --after-ms "$CTRL_WINDOW_T0" --before-ms "$t1")
  awk -v t0="$CTRL_WINDOW_T0" -v t1="$t1" -v ticks="$ticks" -v clk="$clk" '
    $1 >= t0 && $1 <= t1 { if (!seen) { c0 = $4; seen = 1 } c1 = $4; if ($3 > hwm) hwm = $3; if ($5 > pd) pd = $5 }
    END {
      printf "{\"ticks\": %d, \"peak_rss_kb\": %d, \"private_dirty_kb\": %d, \"cpu_ms_per_tick\": %.2f}\n",
        ticks, hwm, pd, (ticks > 0 ? (c1 - c0) * 1000.0 / clk / ticks : 0)
    }' "$E2E_WORK/$SCEN.proc" |
    jq -c --argjson a "$audit" '. + {api_requests: $a.requests,
      api_requests_per_tick: (if .ticks > 0 then ($a.requests / .ticks * 100 | round / 100) else null end),
      api_by_verb: $a.by_verb}'
}

# figures NAME JSON...: merged into $E2E_WORK/figures/NAME.json for bench/e2e.sh.
figures() {
  local name=$1; shift
  mkdir -p "$E2E_WORK/figures"
  printf '%s\n' "$@" | jq -s 'add' > "$E2E_WORK/figures/$name.json"
  say "figures: $(jq -c . "$E2E_WORK/figures/$name.json")"
}
