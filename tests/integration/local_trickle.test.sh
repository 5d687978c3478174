#!/usr/bin/env bash
# A trickle on the local backend under the management depth source (the lagging one), on the real
# broker from run.sh: one message every 0.5 s, 0.2 s tasks, so most workers start, take their
# message and exit between two observes. Counted from the workers' own reports (a wrapper around
# jobpool-worker records each worker and whether it said "no task"), not from lagged statistics:
# every message runs exactly once, one worker per message, none wasted (docs/scaling.md).
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
. "$(dirname "$0")/lib.sh" local_trickle.test trickle-test
N=${TRICKLE_N:-40}
ctl=""
cleanup() { [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }; rm -rf "$T"; }
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
it_broker_login

cat > "$T/task.sh" <<'EOT'
#!/bin/sh
read -r id
echo "$id" >> "$OUT/tasks"
sleep 0.2
EOT
# The controller runs this as its jobpool-worker: one line per worker, with its exit code and
# whether it exited idle ("no task").
cat > "$T/worker.sh" <<'EOW'
#!/bin/sh
"$REAL_WORKER" "$@" 2> "$OUT/w.$$.log"
rc=$?
echo "$$ $rc $(grep -c 'no task' "$OUT/w.$$.log")" >> "$OUT/workers"
exit $rc
EOW
chmod +x "$T/task.sh" "$T/worker.sh"
q=trickle
api PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
port=$(free_port)
cat > "$T/c.yaml" <<EOC
pollInterval: 500ms
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml management)
pools:
  - name: trickle
    queue: $q
    maxActive: 10
    idleTimeout: 3s
    worker:
      command: [jobpool-worker, --, $T/task.sh]
      env: {OUT: $T, REAL_WORKER: $B/jobpool-worker}
EOC
: > "$T/tasks"; : > "$T/workers"
echo "== trickle: $N single messages every 0.5 s, 0.2 s tasks, local backend, depthSource management"
"$B/jobpool-controller" --config "$T/c.yaml" --worker "$T/worker.sh" > "$T/ctl.log" 2>&1 &
ctl=$!
sleep 1
for i in $(seq 1 "$N"); do
  echo "t$i" | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$q" --confirm 2>/dev/null
  sleep 0.5
done
# Wait for every task, then for every worker (a duplicate would wait out idleTimeout) and for the
# sample to catch up (the lag the controller allows is 10 s: a duplicate can start until then).
for _ in $(seq 1 600); do [ "$(wc -l < "$T/tasks")" -ge "$N" ] && break; sleep 0.1; done
sleep 12
for _ in $(seq 1 100); do
  [ "$( { ps --ppid "$ctl" --no-headers || true; } | wc -l)" -eq 0 ] && break; sleep 0.1
done
kill -TERM "$ctl"; wait "$ctl"; ctl=""
runs=$(wc -l < "$T/tasks"); uniq=$(sort -u "$T/tasks" | wc -l)
workers=$(wc -l < "$T/workers")
wasted=$(awk '$3 > 0' "$T/workers" | wc -l)
failed_w=$(awk '$2 != 0' "$T/workers" | wc -l)
echo "  figures: messages=$N task_runs=$runs workers=$workers wasted=$wasted failed=$failed_w"
check "every message ran ($runs runs of $N)" [ "$runs" = "$N" ]
check "each exactly once ($uniq distinct)" [ "$uniq" = "$N" ]
check "one worker per message: $workers workers for $N messages" [ "$workers" = "$N" ]
check "no worker wasted (found no message): $wasted" [ "$wasted" = 0 ]
check "no worker failed: $failed_w" [ "$failed_w" = 0 ]

it_end
