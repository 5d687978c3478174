#!/usr/bin/env bash
# run.sh: the end-to-end suite. Starts a private RabbitMQ, a kube-apiserver with the Job
# controller, the node simulator and a Job recorder; runs each scenario (default: burst trickle
# failures faults pendingguard orphans skew scale tasktime jobpool jobpool_ns jobpool_leader latency, or the names given); prints "e2e: N passed, N failed" over all checks;
# stops exactly what it started. B=build dir with jobpool-controller and jobpool-worker.
# E2E_TIMELINE_OUT=DIR copies each scenario's publish and start logs and the Job log there.
# Sizes: E2E_BURST_N, E2E_TRICKLE_SECONDS, E2E_LAT_N, E2E_FAIL_N, E2E_FAULT_N, E2E_SCALE_POOLS,
# E2E_SCALE_MSGS (defaults are the issue's). E2E_KEEP=1 keeps the work dir with all logs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
B=${B:-$root/build}
export CONTROLLER=${CONTROLLER:-$B/jobpool-controller}
export WORKER=${WORKER:-$B/jobpool-worker}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(burst trickle failures faults pendingguard orphans skew scale tasktime jobpool jobpool_ns jobpool_leader latency)

die() { echo "e2e: FAILED: $*"; echo "e2e: 0 passed, 1 failed"; exit 1; }
for x in "$CONTROLLER" "$WORKER"; do [ -x "$x" ] || die "no $x (make B=... all)"; done
for t in jq curl python3; do command -v "$t" >/dev/null || die "$t is not installed"; done

E2E_WORK=$(mktemp -d /tmp/jobpool-e2e.XXXXXX)
export E2E_WORK
pids=()
RMQ_DIR=; KUBE_DIR=
cleanup() {
  local p
  if [ -f "$E2E_WORK/controller.pids" ]; then
    while read -r p; do kill -KILL "$p" 2>/dev/null || true; done < "$E2E_WORK/controller.pids"
  fi
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$p" 2>/dev/null || true
  done
  [ -z "$KUBE_DIR" ] || "$root/tests/env/kube.sh" stop "$KUBE_DIR" >/dev/null 2>&1 || true
  [ -z "$RMQ_DIR" ] || "$root/tests/env/rabbitmq.sh" stop "$RMQ_DIR" >/dev/null 2>&1 || true
  if [ "${E2E_KEEP:-0}" = 1 ]; then echo "e2e: logs kept in $E2E_WORK"; else rm -rf "$E2E_WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "e2e: starting RabbitMQ and the control plane (work dir $E2E_WORK)"
rmq_env=$("$root/tests/env/rabbitmq.sh" start) || die "RabbitMQ did not start (tests/env/rabbitmq.sh)"
eval "$rmq_env"; RMQ_DIR=$JOBPOOL_RMQ_DIR
# The Job controller's client rate: upstream's 20 QPS caps this 1-node cluster near 4 Jobs/s
# (each Job costs it about 4 writes); 100 lets the 5,000-Job scale run finish in minutes.
kube_env=$(JOBPOOL_KUBE_AUDIT=1 JOBPOOL_KUBE_KCM_QPS=${E2E_KCM_QPS:-100} "$root/tests/env/kube.sh" start) || die "the control plane did not start (tests/env/kube.sh)"
eval "$kube_env"; KUBE_DIR=$JOBPOOL_KUBE_DIR
export JOBPOOL_RMQ_DIR JOBPOOL_TEST_AMQP_URL JOBPOOL_TEST_MGMT_URL JOBPOOL_TEST_RMQ_USER \
  JOBPOOL_TEST_RMQ_PASS JOBPOOL_TEST_AMQP_PORT JOBPOOL_KUBE_DIR KUBECONFIG \
  JOBPOOL_TEST_KUBE_SERVER JOBPOOL_TEST_KUBE_TOKEN JOBPOOL_TEST_KUBE_CA

# The workers' broker URL, from a real Secret (the node simulator resolves envFrom).
secret=$(jq -n --arg u "$JOBPOOL_TEST_AMQP_URL" \
  '{apiVersion:"v1",kind:"Secret",metadata:{name:"rabbitmq-worker"},stringData:{JOBPOOL_AMQP_URL:$u}}')
curl -fsS -m 20 --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" \
  -H 'content-type: application/json' -X POST --data "$secret" \
  "$JOBPOOL_TEST_KUBE_SERVER/api/v1/namespaces/default/secrets" >/dev/null || die "cannot create the Secret"

mkdir -p "$E2E_WORK/pods"
python3 "$here/nodesim.py" --worker "$WORKER" --pods "${E2E_NODE_PODS:-110}" \
  --events "$E2E_WORK/sim.events" --log-dir "$E2E_WORK/pods" --stats-interval 30 \
  >"$E2E_WORK/nodesim.log" 2>&1 &
pids+=($!); echo "$!" > "$E2E_WORK/nodesim.pid"
python3 "$here/tool.py" jobwatch --out "$E2E_WORK/jobs.events" >"$E2E_WORK/jobwatch.log" 2>&1 &
pids+=($!)
sleep 1
kill -0 "$(cat "$E2E_WORK/nodesim.pid")" 2>/dev/null || { cat "$E2E_WORK/nodesim.log"; die "the node simulator exited"; }

tp=0; tf=0; failed=()
for s in "${scenarios[@]}"; do
  [ -f "$here/$s.sh" ] || { echo "e2e: no scenario $s"; tf=$((tf + 1)); failed+=("$s"); continue; }
  echo "== e2e: $s"
  SCEN=$s bash "$here/$s.sh"
  if [ -f "$E2E_WORK/$s.result" ]; then
    read -r p f < "$E2E_WORK/$s.result"
  else
    p=0; f=1; echo "  FAIL: $s ended without a result"
  fi
  tp=$((tp + p)); tf=$((tf + f))
  [ "$f" = 0 ] || failed+=("$s")
done
# The raw events behind the timelines bench/e2e.sh plots: each scenario's publishes and task
# starts, and the Job recorder's log.
if [ -n "${E2E_TIMELINE_OUT:-}" ]; then
  for s in "${scenarios[@]}"; do
    [ -f "$E2E_WORK/$s/pub" ] || continue
    mkdir -p "$E2E_TIMELINE_OUT/$s" && cp "$E2E_WORK/$s/pub" "$E2E_WORK/$s/started" "$E2E_TIMELINE_OUT/$s/"
  done
  cp "$E2E_WORK/jobs.events" "$E2E_TIMELINE_OUT/" 2>/dev/null || true
fi
if [ -n "${E2E_FIGURES_OUT:-}" ] && [ -d "$E2E_WORK/figures" ]; then
  mkdir -p "$E2E_FIGURES_OUT" && cp "$E2E_WORK"/figures/*.json "$E2E_FIGURES_OUT"/
fi
[ ${#failed[@]} -eq 0 ] || { echo "e2e: failed scenarios: ${failed[*]}"; E2E_KEEP=1; }
echo "e2e: $tp passed, $tf failed"
[ "$tf" = 0 ]
