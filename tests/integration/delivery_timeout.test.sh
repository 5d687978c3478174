#!/usr/bin/env bash
# The broker's delivery timeout against the controller and its local workers: a broker of its own
# started with consumer_timeout 3 s (checked every 0.5 s), a task that sleeps 10 s, maxAttempts 2.
#  1. no taskTimeout: the broker takes the message back at ~3 s; the worker stops the task, the
#     next worker counts that attempt; after two attempts the message is dead-lettered. It never
#     runs twice at the same time, and it does not loop.
#  2. taskTimeout 1s: the worker stops the task itself while it still holds the message; the same
#     two attempts, then the dead-letter queue, and the broker never has to step in. The
#     controller warns that 1s plus the worker's 25s grace reaches the 3 s consumer_timeout.
set -u
. "$(dirname "$0")/lib.sh" delivery_timeout.test dt-test
ctl=""; rmq_dir=""
cleanup() {
  [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }
  [ -z "$rmq_dir" ] || "$JOBPOOL_ROOT/tests/env/rabbitmq.sh" stop "$rmq_dir" >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
# RabbitMQ 3.10 checks consumer_timeout on each channel's tick (60 s by default); tick faster so
# the test need not wait a minute per attempt.
if ! JOBPOOL_RMQ_CONF='consumer_timeout = 3000' JOBPOOL_RMQ_RABBIT_ENV='{channel_tick_interval, 500}' \
    "$JOBPOOL_ROOT/tests/env/rabbitmq.sh" start > "$T/rmq.env"; then
  echo "delivery_timeout.test: FAILED: the broker with consumer_timeout 3 s could not be started"
  exit 1
fi
. "$T/rmq.env"; rmq_dir=$JOBPOOL_RMQ_DIR
it_broker_login
take() { # QUEUE: every ready message as JSON, taken out
  api POST "/api/queues/%2F/$1/get" '{"count":100,"ackmode":"ack_requeue_false","encoding":"auto"}'
}

# The task records its start and its end (by SIGTERM or at the end of its 10 s).
cat > "$T/task.sh" <<'EOT'
#!/bin/sh
cat > /dev/null
echo "$JOBPOOL_ATTEMPT start $(date +%s%N)" >> "$OUT/runs"
trap 'echo "$JOBPOOL_ATTEMPT end $(date +%s%N) term" >> "$OUT/runs"; exit 143' TERM
sleep 10 & wait $!
echo "$JOBPOOL_ATTEMPT end $(date +%s%N) done" >> "$OUT/runs"
EOT
chmod +x "$T/task.sh"
api PUT /api/exchanges/%2F/dt.dlx '{"type":"fanout","durable":true}' >/dev/null
api PUT /api/queues/%2F/dt.dead '{"durable":true}' >/dev/null
api POST /api/bindings/%2F/e/dt.dlx/q/dt.dead '{"routing_key":""}' >/dev/null

scenario() { # NAME EXTRA-POOL-YAML
  local name=$1 extra=$2 q=dt-$1 port
  echo "== delivery timeout: $name"
  api PUT "/api/queues/%2F/$q" '{"durable":true,"arguments":{"x-dead-letter-exchange":"dt.dlx"}}' >/dev/null
  port=$(free_port)
  mkdir -p "$T/$name"; : > "$T/$name/runs"
  cat > "$T/$name/c.yaml" <<EOC
pollInterval: 500ms
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml amqp)
  consumerTimeout: 3s
pools:
  - name: dt
    queue: $q
    maxActive: 4
    maxAttempts: 2
    idleTimeout: 2s
$extra
    worker:
      command: [jobpool-worker, --, $T/task.sh]
      env: {OUT: $T/$name}
EOC
  "$B/jobpool-controller" --config "$T/$name/c.yaml" --worker "$B/jobpool-worker" > "$T/$name/ctl.log" 2>&1 &
  ctl=$!
  echo "$name" | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$q" --confirm 2>/dev/null
  local dead=0
  for _ in $(seq 1 600); do # at most 60 s
    dead=$(take dt.dead | tee "$T/$name/dead.json" | jq length)
    [ "$dead" -gt 0 ] && break
    sleep 0.1
  done
  sleep 4 # anything still going would start again now: it must not
  kill -TERM "$ctl"; wait "$ctl"; ctl=""
  local runs ends overlap longest
  ends=$(grep -c ' end ' "$T/$name/runs")
  runs=$(awk '$2 == "start" {print $1}' "$T/$name/runs" | tr '\n' ' ')
  overlap=$(awk '{print $3, ($2 == "start" ? 1 : -1)}' "$T/$name/runs" | sort -n | awk '{c += $2; if (c > m) m = c} END {print m + 0}')
  longest=$(awk '$2 == "start" {s[$1] = $3} $2 == "end" {d = ($3 - s[$1]) / 1e6; if (d > m) m = d} END {printf "%d", m}' "$T/$name/runs")
  echo "  figures: runs by attempt: $runs; longest run ${longest} ms; most at once: $overlap"
  check "$name: dead-lettered once (dead-letter queue holds $dead)" [ "$dead" = 1 ]
  check "$name: with x-jobpool-attempt 2" [ "$(jq -c '[.[].properties.headers["x-jobpool-attempt"]]' "$T/$name/dead.json")" = '[2]' ]
  check "$name: the task ran exactly twice, as attempts 1 and 2 (runs: $runs)" [ "$runs" = "1 2 " ]
  check "$name: each run was stopped (ends: $ends, by SIGTERM: $(grep -c ' term$' "$T/$name/runs"))" \
    [ "$(grep -c ' term$' "$T/$name/runs")" = 2 ]
  check "$name: never twice at the same time (at most $overlap at once)" [ "$overlap" = 1 ]
  check "$name: the work queue is empty" [ "$(take "$q" | jq length)" = 0 ]
  check "$name: the password never reached the log" bash -c "! grep -qF '$RABBITMQ_PASSWORD' '$T/$name/ctl.log'"
}

scenario broker ""
check "broker: the broker's 406 was seen and the task stopped" \
  grep -q 'the broker.s delivery timeout (consumer_timeout) took the message back' "$T/broker/ctl.log"
check "broker: the next worker counted the attempt" \
  grep -q 'message redelivered: attempt 1 of 2 ended unsettled.*requeued as attempt 2' "$T/broker/ctl.log"
check "broker: the last attempt was dead-lettered without running" \
  grep -q 'its last attempt (2 of 2) ended unsettled.*dead-letter' "$T/broker/ctl.log"
check "broker: no start-time warning without a taskTimeout" bash -c "! grep -q 'reaches the broker' '$T/broker/ctl.log'"

scenario task-timeout "    taskTimeout: 1s"
check "task-timeout: the controller warns that 1s + 25s grace reaches consumer_timeout 3s" \
  grep -q 'taskTimeout 1s plus the worker.s 25s grace reaches the broker.s consumer_timeout' "$T/task-timeout/ctl.log"
check "task-timeout: the worker stopped the task itself; the broker never stepped in" \
  bash -c "grep -q 'task ran past its timeout' '$T/task-timeout/ctl.log' && ! grep -q PRECONDITION_FAILED '$T/task-timeout/ctl.log'"

it_end
