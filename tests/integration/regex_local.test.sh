#!/usr/bin/env bash
# A queueRegex pool with the local backend on the real broker from run.sh: three matching
# queues with different backlogs (30, 12, 3) and a fourth that does not match, maxActive 6
# shared by them. The controller logs in as a broker user whose password is S3cr:t@x/%y (the
# local backend must percent-encode it into the workers' URL).
# - every message of the three queues runs exactly once, on a worker given its own queue;
# - never more than maxActive workers at a time, and the small queue is not starved: its
#   first message runs before the big queue is half done;
# - the queue that does not match is left alone; no worker is left at the end.
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
. "$(dirname "$0")/lib.sh" regex_local.test regex-test
MAX=6; NA=30; NB=12; NC=3
RUSER=jp-regex; RPASS='S3cr:t@x/%y'
ctl=""
admin() { curl -fsS -u "$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS" -X "$1" -H 'content-type: application/json' ${3:+--data "$3"} "$JOBPOOL_TEST_MGMT_URL$2"; }
cleanup() {
  [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }
  admin DELETE "/api/users/$RUSER" >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
# The controller's own user: the management API for the queue listing (monitoring), and the
# workers' login through the URL the local backend builds.
admin PUT "/api/users/$RUSER" "$(jq -n --arg p "$RPASS" '{password:$p,tags:"monitoring"}')" >/dev/null
admin PUT "/api/permissions/%2F/$RUSER" '{"configure":".*","write":".*","read":".*"}' >/dev/null
for q in rx.alpha rx.beta rx.gamma rx-other; do
  admin DELETE "/api/queues/%2F/$q" >/dev/null 2>&1
  admin PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
done
cat > "$T/task.sh" <<'EOT'
#!/bin/sh
read -r id
echo "$JOBPOOL_QUEUE $id $(date +%s%N)" >> "$TASK_LOG"
sleep 0.3
EOT
chmod +x "$T/task.sh"
port=$(free_port)
cat > "$T/config.yaml" <<EOC
pollInterval: 500ms
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml)
pools:
  - name: rx
    queueRegex: '^rx[.]'
    maxActive: $MAX
    idleTimeout: 3s
    worker: {command: [jobpool-worker, --, $T/task.sh], env: {TASK_LOG: $T/tasks}}
EOC
TASK_LOG=$T/tasks; : > "$TASK_LOG"
seq -f "alpha-%g" 1 $NA | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" rx.alpha --confirm 2>/dev/null
seq -f "beta-%g" 1 $NB | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" rx.beta --confirm 2>/dev/null
seq -f "gamma-%g" 1 $NC | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" rx.gamma --confirm 2>/dev/null
seq -f "other-%g" 1 4 | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" rx-other --confirm 2>/dev/null

echo "== a regex pool over three queues (backlogs $NA, $NB, $NC), local backend, maxActive $MAX"
RABBITMQ_USERNAME=$RUSER RABBITMQ_PASSWORD=$RPASS \
  "$B/jobpool-controller" --config "$T/config.yaml" --worker "$B/jobpool-worker" --log-level debug \
  > "$T/ctl.log" 2>&1 &
ctl=$!
TOTAL=$((NA + NB + NC)); peak=0
for _ in $(seq 1 1200); do   # at most 120 s
  n=$( { ps --ppid "$ctl" --no-headers -o comm || true; } | grep -c jobpool-worker)
  [ "$n" -gt "$peak" ] && peak=$n
  [ "$(grep -c . "$TASK_LOG")" -ge "$TOTAL" ] && [ "$n" = 0 ] && break
  kill -0 "$ctl" 2>/dev/null || break
  sleep 0.1
done
sleep 1
check "all $TOTAL messages ran ($(grep -c . "$TASK_LOG"))" [ "$(grep -c . "$TASK_LOG")" = $TOTAL ]
check "each exactly once" [ "$(awk '{print $2}' "$TASK_LOG" | sort | uniq -d | wc -l)" = 0 ]
check "each on a worker given its own queue" \
  [ "$(awk '{split($2, a, "-"); if ("rx." a[1] != $1) bad++} END {print bad + 0}' "$TASK_LOG")" = 0 ]
for q in alpha:$NA beta:$NB gamma:$NC; do
  check "rx.${q%%:*}: ${q#*:} ran" [ "$(grep -c "^rx.${q%%:*} " "$TASK_LOG")" = "${q#*:}" ]
done
check "never more than $MAX workers at once (peak $peak)" [ "$peak" -le $MAX ]
echo "  figures: $(grep -c 'exited code=' "$T/ctl.log") workers started for $TOTAL messages, $(grep -c '(no task)' "$T/ctl.log") found none"
first_gamma=$(grep -n '^rx.gamma ' "$TASK_LOG" | head -1 | cut -d: -f1)
check "the small queue is served early, not starved (first gamma at line ${first_gamma:-none} of $TOTAL)" \
  [ -n "$first_gamma" ] && [ "$first_gamma" -le $((TOTAL / 2)) ]
check "no worker left" [ "$( { ps --ppid "$ctl" --no-headers -o comm || true; } | grep -c jobpool-worker)" = 0 ]
ready() { admin GET "/api/queues/%2F/$1" | jq -r '.messages_ready // -1'; }
for _ in $(seq 1 40); do [ "$(ready rx.alpha)$(ready rx.beta)$(ready rx.gamma)" = 000 ] && break; sleep 0.5; done
check "the three queues are empty" [ "$(ready rx.alpha)$(ready rx.beta)$(ready rx.gamma)" = 000 ]
check "the queue that does not match keeps its 4 messages" [ "$(admin POST /api/queues/%2F/rx-other/get '{"count":10,"ackmode":"ack_requeue_true","encoding":"auto"}' | jq length)" = 4 ]
check "the password never reached the log, raw or encoded" bash -c \
  "! grep -qF -e '$RPASS' -e 'S3cr%3At%40x%2F%25y' '$T/ctl.log'"
kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; ctl=""
for q in rx.alpha rx.beta rx.gamma rx-other; do admin DELETE "/api/queues/%2F/$q" >/dev/null 2>&1; done
it_end "$T/ctl.log"
