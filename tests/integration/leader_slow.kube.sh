#!/usr/bin/env bash
# Leader election under a slow broker, on the real API server: two replicas, 20 pools, and a
# management API that answers in 2.9 s (tests/fixtures/delayproxy.py in front of the real
# broker: the depths are real), so one pass lasts about a minute, fifteen times the 4 s Lease.
# The leader is frozen (SIGSTOP, as a long GC pause or a stalled VM) in the middle of its pass
# for longer than the Lease; the standby takes over; the old leader then resumes where it was.
# Proves, from the API server's audit log (each replica known by the identity in its user
# agent):
# - the leader keeps its Lease through a pass far longer than leaseDuration (the renewal does
#   not wait for the pass), and its /healthz stays 200 during that pass;
# - the standby takes over while the leader is frozen;
# - no write from the old holder comes after the new holder's first write (it stops acting
#   the moment its renewDeadline has passed, even in the middle of a pass);
# - one Job per message: 20 Jobs for 20 messages.
set -u
: "${JOBPOOL_TEST_KUBE_SERVER:?run me through tests/integration/kube-run.sh}"
: "${JOBPOOL_KUBE_DIR:?run me through tests/integration/kube-run.sh}"
. "$(dirname "$0")/lib.sh" leader_slow leader-slow
NS=leader-slow; POOLS=20; DELAY=2.9
AUDIT="$JOBPOOL_KUBE_DIR/log/audit.log"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
njobs() { k GET "/apis/batch/v1/namespaces/$NS/jobs" | jq '.items | length'; }
it_broker_login
it_need jobpool-controller
[ -f "$AUDIT" ] || { echo "leader_slow: FAILED: no audit log at $AUDIT (kube.sh with JOBPOOL_KUBE_AUDIT=1)"; exit 1; }

k POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$NS\"}}" >/dev/null
for i in $(seq -w 0 $((POOLS - 1))); do
  mq DELETE "/api/queues/%2F/slow-$i" >/dev/null 2>&1
  mq PUT "/api/queues/%2F/slow-$i" '{"durable":true}' >/dev/null
  echo "m$i" | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "slow-$i" --confirm 2>/dev/null
done
python3 "$JOBPOOL_ROOT/tests/fixtures/delayproxy.py" "$JOBPOOL_TEST_MGMT_URL" "$DELAY" > "$T/proxy.port" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$T/proxy.port" ] && break; sleep 0.1; done
pport=$(cat "$T/proxy.port")
t0=$(date +%s%N)
curl -fsS -o /dev/null -u "$RABBITMQ_USERNAME:$RABBITMQ_PASSWORD" "http://127.0.0.1:$pport/api/queues/%2F/slow-00" ||
  bad "the delaying proxy does not answer"
took=$(( ($(date +%s%N) - t0) / 1000000 ))
check "the management API behind the proxy answers in about ${DELAY}s (${took} ms)" [ "$took" -ge 2800 ]

{
  cat <<EOC
pollInterval: 2s
backend: kube
metrics: {address: "127.0.0.1:@PORT@"}
rabbitmq:
  managementUrl: http://127.0.0.1:$pport
  amqpUrl: amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT
  username: {env: RABBITMQ_USERNAME}
  password: {env: RABBITMQ_PASSWORD}
  timeout: 10s
kubernetes: {inCluster: false, kubeconfig: $KUBECONFIG, namespace: $NS}
leaderElection:
  enabled: true
  leaseName: jobpool-slow
  leaseDuration: 4s
  renewDeadline: 3s
  retryPeriod: 1s
pools:
EOC
  for i in $(seq -w 0 $((POOLS - 1))); do
    cat <<EOP
  - name: slow-$i
    queue: slow-$i
    maxActive: 5
    jobTemplate:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: w, image: example/w:1}]
EOP
  done
} > "$T/config.in"

declare -A port pid
start() { # NAME
  port[$1]=$(free_port)
  sed "s/@PORT@/${port[$1]}/" "$T/config.in" > "$T/$1.yaml"
  "$B/jobpool-controller" --config "$T/$1.yaml" >> "$T/$1.log" 2>&1 &
  pid[$1]=$!; pids+=($!)
}
metric() { curl -fsS -m 2 "http://127.0.0.1:${port[$1]}/metrics" 2>/dev/null | awk -v m="$2" '$1 == m {print $2}'; }
healthz() { curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${port[$1]}/healthz"; }
ident() { echo "$(hostname)_${pid[$1]}"; }

echo "== a leads a pass of $POOLS pools at ${DELAY}s each"
start a
for _ in $(seq 1 100); do [ "$(metric a jobpool_leader)" = 1 ] && break; sleep 0.1; done
check "a leads" [ "$(metric a jobpool_leader)" = 1 ]
start b
sleep 10
check "a still leads 10 s into its pass (leaseDuration 4s)" [ "$(metric a jobpool_leader)" = 1 ]
check "b follows ($(metric b jobpool_leader))" [ "$(metric b jobpool_leader)" = 0 ]
check "a's /healthz is 200 in the middle of its pass ($(healthz a))" [ "$(healthz a)" = 200 ]

echo "== a frozen for 40 s: b takes over"
kill -STOP "${pid[a]}"
took=
for s in $(seq 1 40); do
  sleep 1
  [ -z "$took" ] && [ "$(metric b jobpool_leader)" = 1 ] && took=$s
done
check "b took over while a was frozen (after ${took:-more than 40} s)" [ -n "$took" ]
kill -CONT "${pid[a]}"
echo "== a resumes in the middle of its pass"
fenced() { grep -q "stopped acting in the middle of a pass" "$T/a.log"; }
for _ in $(seq 1 120); do fenced && break; sleep 1; done
check "a noticed its lease lapsed and stopped acting" fenced
for _ in $(seq 1 60); do [ "$(njobs)" -ge $POOLS ] && break; sleep 1; done
sleep 4
check "one Job per message: $(njobs) Jobs for $POOLS messages" [ "$(njobs)" = $POOLS ]

ida=$(ident a); idb=$(ident b)
python3 - "$AUDIT" "$ida" "$idb" > "$T/audit.txt" <<'EOF'
import json, sys
audit, ida, idb = sys.argv[1:4]
writes = {"create", "update", "patch", "delete", "deletecollection"}
ev = {ida: [], idb: []}
for line in open(audit):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    ua = e.get("userAgent", "")
    if e.get("verb") not in writes:
        continue
    for who in ev:
        if ua.endswith("(%s)" % who):
            r = e.get("objectRef", {})
            ev[who].append((e["requestReceivedTimestamp"], e["verb"], r.get("resource", "")))
first_b = min(ev[idb])[0] if ev[idb] else None
late = [w for w in ev[ida] if first_b and w[0] >= first_b]
print(len(ev[ida]), len(ev[idb]), len(late), first_b or "-")
for w in late[:5]:
    print(" late write from the old holder: %s %s %s" % w)
EOF
read -r na nb late first_b < "$T/audit.txt"
echo "  audit: a sent $na writes, b sent $nb (its first at $first_b); a after that: $late"
sed -n '2,$p' "$T/audit.txt"
both() { [ "$na" -gt 0 ] && [ "$nb" -gt 0 ]; }
check "both replicas are in the audit log by their user agent" both
check "no write from the old holder after the new holder's first write ($late)" [ "$late" = 0 ]
check "no password in either log" bash -c "! cat '$T'/*.log | grep -qF '$RABBITMQ_PASSWORD'"
for n in a b; do kill -TERM "${pid[$n]}" 2>/dev/null; wait "${pid[$n]}" 2>/dev/null; done
k DELETE "/api/v1/namespaces/$NS" >/dev/null
for i in $(seq -w 0 $((POOLS - 1))); do mq DELETE "/api/queues/%2F/slow-$i" >/dev/null 2>&1; done
it_end "$T/a.log" "$T/b.log"
