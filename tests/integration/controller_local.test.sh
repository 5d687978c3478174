#!/usr/bin/env bash
# The controller with the local backend on the real broker from run.sh: 300 tasks, maxActive 20.
# For each depth source: every task runs exactly once, never more than 20 workers at a time,
# no worker left at the end, fewer than 5% of the workers started wasted (found no message),
# and the broker password never reaches the controller's log.
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
. "$(dirname "$0")/lib.sh" controller_local.test ctl-test
N=${N:-300}; MAX=20
ctl=""
cleanup() { [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }; rm -rf "$T"; }
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
it_broker_login
cat > "$T/task.sh" <<'EOT'
#!/bin/sh
read -r id
echo "$id start $(date +%s%N)" >> "$TASK_LOG"
sleep 0.2
echo "$id end $(date +%s%N)" >> "$TASK_LOG"
EOT
chmod +x "$T/task.sh"

for source in ${SOURCES:-management amqp}; do
  echo "== controller, local backend, depthSource $source: $N tasks, maxActive $MAX"
  q=ctl-$source
  api PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
  port=$(free_port)
  cat > "$T/$source.yaml" <<EOC
pollInterval: 500ms
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml $source)
pools:
  - name: ctl
    queue: $q
    maxActive: $MAX
    maxStartPerTick: $MAX
    idleTimeout: 3s
    worker:
      command: [jobpool-worker, --, $T/task.sh]
      env: {TASK_LOG: {env: TASK_LOG}}
EOC
  export TASK_LOG=$T/$source.tasks; : > "$TASK_LOG"
  "$B/jobpool-controller" --config "$T/$source.yaml" --worker "$B/jobpool-worker" ${CTL_FLAGS:-} > "$T/$source.log" 2>&1 &
  ctl=$!
  seq -f "task-%g" 1 "$N" | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$q" --confirm 2>/dev/null
  peak=0; idle=0
  for _ in $(seq 1 2400); do   # at most 120 s
    n=$( { ps --ppid "$ctl" --no-headers -o comm || true; } | grep -c jobpool-worker)
    [ "$n" -gt "$peak" ] && peak=$n
    done_n=$(grep -c ' end ' "$TASK_LOG")
    if [ "$done_n" -ge "$N" ] && [ "$n" -eq 0 ]; then idle=$((idle + 1)); [ $idle -ge 10 ] && break; fi
    sleep 0.05
  done
  metrics=$(curl -fsS "http://127.0.0.1:$port/metrics")
  started=$(echo "$metrics" | awk '/^jobpool_workers_started_total/ {print $2}')
  wasted=$(echo "$metrics" | awk '/^jobpool_workers_wasted_total/ {print $2}')
  kill -TERM "$ctl"; wait "$ctl"; rc=$?; ctl=""
  [ -z "${KEEP_LOG:-}" ] || cp "$T/$source.log" "$KEEP_LOG.$source"
  runs=$(grep -c ' end ' "$TASK_LOG"); uniq=$(grep ' end ' "$TASK_LOG" | cut -d' ' -f1 | sort -u | wc -l)
  overlap=$(awk '{print $3, ($2 == "start" ? 1 : -1)}' "$TASK_LOG" | sort -n | awk '{c += $2; if (c > m) m = c} END {print m + 0}')
  echo "  figures: started=${started:-?} wasted=${wasted:-?} peak_workers=$peak peak_tasks=$overlap"
  check "all $N tasks ran ($runs runs)" [ "$runs" = "$N" ]
  check "each exactly once ($uniq distinct)" [ "$uniq" = "$N" ]
  check "never more than $MAX workers (peak $peak)" [ "$peak" -le $MAX ]
  check "never more than $MAX tasks at once (peak $overlap)" [ "$overlap" -le $MAX ]
  check "workers started: at least one per task (${started:-?})" [ "${started:-0}" -ge "$N" ]
  check "wasted < 5% of started (${wasted:-?} of ${started:-?})" \
    awk -v w="${wasted:-999999}" -v s="${started:-1}" 'BEGIN { exit !(w * 100 < 5 * s) }'
  check "queue empty" [ "$(api GET "/api/queues/%2F/$q/get" >/dev/null 2>&1; api POST "/api/queues/%2F/$q/get" '{"count":10,"ackmode":"ack_requeue_true","encoding":"auto"}' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ]
  check "clean exit on SIGTERM (rc $rc)" [ "$rc" = 0 ]
  check "password absent from the controller log" bash -c "! grep -qF '$RABBITMQ_PASSWORD' '$T/$source.log'"
done
echo "== shutdown: SIGTERM drains the local workers without losing the message; a second exits at once"
api PUT "/api/queues/%2F/ctl-stop" '{"durable":true}' >/dev/null
sed -e "s/queue: ctl-$source/queue: ctl-stop/" -e "s#$T/task.sh#$T/slow.sh#" "$T/$source.yaml" > "$T/stop.yaml"  # the last depth source's config
sed -e 's/env: {TASK_LOG/env: {STUBBORN: "1", TASK_LOG/' "$T/stop.yaml" > "$T/stop2.yaml"
# The task records its pid, then sleeps; with STUBBORN set it ignores SIGTERM.
printf '#!/bin/sh\necho $$ >> "$TASK_LOG"\n[ -z "$STUBBORN" ] || trap "" TERM\nexec sleep 30\n' > "$T/slow.sh"
chmod +x "$T/slow.sh"
export TASK_LOG=$T/stop.tasks; : > "$TASK_LOG"
echo one | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" ctl-stop --confirm 2>/dev/null
"$B/jobpool-controller" --config "$T/stop.yaml" --worker "$B/jobpool-worker" > "$T/stop.log" 2>&1 &
ctl=$!
for _ in $(seq 1 200); do [ -s "$TASK_LOG" ] && break; sleep 0.05; done
task=$(head -n1 "$TASK_LOG")
t0=$(date +%s%N); kill -TERM "$ctl"; wait "$ctl"; rc=$?; t1=$(date +%s%N); ctl=""
echo "  figures: SIGTERM with a task running: exit $rc after $(( (t1 - t0) / 1000000 )) ms"
check "SIGTERM with a task running exits 0 (got $rc)" [ "$rc" = 0 ]
check "the task was stopped, no process left (task pid $task)" bash -c "! kill -0 '$task' 2>/dev/null"
requeued=$(api POST "/api/queues/%2F/ctl-stop/get" '{"count":10,"ackmode":"ack_requeue_true","encoding":"auto"}' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
check "the interrupted task's message is back in the queue ($requeued)" [ "$requeued" = 1 ]
: > "$TASK_LOG"
"$B/jobpool-controller" --config "$T/stop2.yaml" --worker "$B/jobpool-worker" > "$T/stop2.log" 2>&1 &
ctl=$!
for _ in $(seq 1 200); do [ -s "$TASK_LOG" ] && break; sleep 0.05; done
task=$(head -n1 "$TASK_LOG")
kill -TERM "$ctl"; sleep 0.5
check "a task that ignores SIGTERM keeps the first shutdown waiting" kill -0 "$ctl"
t0=$(date +%s%N); kill -TERM "$ctl"; wait "$ctl"; rc=$?; t1=$(date +%s%N); ctl=""
echo "  figures: second SIGTERM: exit $rc after $(( (t1 - t0) / 1000000 )) ms"
check "a second SIGTERM exits at once with 130 (got $rc)" [ "$rc" = 130 ]
kill -KILL "$task" 2>/dev/null; pkill -KILL -f "jobpool-worker.*$T/slow.sh" 2>/dev/null; sleep 0.3

it_end
