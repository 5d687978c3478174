#!/usr/bin/env bash
# jobpool-worker against the real RabbitMQ started by run.sh: ack, retry and dead-letter,
# SIGTERM with grace, SIGKILL redelivery, idle timeout, 50 concurrent workers, bad input,
# big bodies, lost connection, and the password never printed.
# Needs JOBPOOL_TEST_AMQP_URL, JOBPOOL_TEST_MGMT_URL, JOBPOOL_TEST_RMQ_USER/PASS, JOBPOOL_BUILD.
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
JOBPOOL_ROOT=${JOBPOOL_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
W=${JOBPOOL_BUILD:-$JOBPOOL_ROOT/build}/jobpool-worker
U=$JOBPOOL_TEST_AMQP_URL              # ends in "/": the worker reads that as vhost "/"
UT=${U%/}/%2F                         # amqp-tools want the vhost spelled out
PASS=$JOBPOOL_TEST_RMQ_PASS
T=$(mktemp -d /tmp/jobpool-worker-test.XXXXXX)
pass=0; fail=0; failed=()
bgpids=()
cleanup() {
  for p in "${bgpids[@]}"; do kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); failed+=("$*"); echo "  FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

[ -x "$W" ] || { echo "worker.test: FAILED: no worker binary at $W (run make B=... all)"; exit 1; }

api() { # METHOD PATH [BODY]
  curl -fsS -u "$JOBPOOL_TEST_RMQ_USER:$PASS" -X "$1" -H 'content-type: application/json' \
    ${3:+--data "$3"} "$JOBPOOL_TEST_MGMT_URL$2"
}
declare_q() { # NAME [ARGUMENTS-JSON]
  api DELETE "/api/queues/%2F/$1" >/dev/null 2>&1
  api PUT "/api/queues/%2F/$1" "{\"durable\":true,\"arguments\":${2:-{\}}}" >/dev/null
}
publish() { # QUEUE BODY [PROPERTIES-JSON]: synchronous, through the management API
  local body; body=$(jq -n --arg q "$1" --arg b "$2" --argjson p "${3:-{\}}" \
    '{properties:($p + {delivery_mode:2}),routing_key:$q,payload:$b,payload_encoding:"string"}')
  api POST /api/exchanges/%2F/amq.default/publish "$body" | jq -e '.routed' >/dev/null
}
peek() { # QUEUE: every ready message as JSON, left in the queue (not lagged like the stats)
  # Taken and published back as they were, not requeued: a requeue marks a message redelivered,
  # and the worker counts a redelivered message as a spent attempt (docs/worker.md).
  local m x; m=$(api POST "/api/queues/%2F/$1/get" '{"count":1000,"ackmode":"ack_requeue_false","encoding":"auto"}')
  while read -r x; do
    [ -n "$x" ] || continue
    api POST /api/exchanges/%2F/amq.default/publish "$(echo "$x" | jq -c --arg q "$1" \
      '{properties, routing_key:$q, payload, payload_encoding}')" >/dev/null
  done < <(echo "$m" | jq -c '.[]')
  echo "$m"
}
count() { peek "$1" | jq length; }
count_rq() { # QUEUE: the same by a requeue, for a queue whose message was redelivered anyway
  api POST "/api/queues/%2F/$1/get" '{"count":1000,"ackmode":"ack_requeue_true","encoding":"auto"}' | jq length
}
# The worker never sees the test's own copies of the credentials, so a leak is the worker's.
# Background runs use "${WENV[@]}" "$W" directly so that $! is the worker's own pid.
WENV=(env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_AMQP_URL="$U")
worker() { "${WENV[@]}" "$W" "$@"; }

echo "== worker: success acks and the queue ends empty"
declare_q wt.ok
publish wt.ok 'hello task' '{"message_id":"m-1","correlation_id":"c-1","headers":{"X-Trace-Id":"abc.1","n":7}}'
JOBPOOL_QUEUE=wt.ok worker --idle-timeout 5s -- sh -c "cat > '$T/ok.body'; env > '$T/ok.env'" \
  >"$T/ok.out" 2>"$T/ok.err"; rc=$?
check "exit 0 (got $rc)" [ "$rc" = 0 ]
check "body on stdin" [ "$(cat "$T/ok.body" 2>/dev/null)" = "hello task" ]
check "JOBPOOL_MESSAGE_ID" grep -qx 'JOBPOOL_MESSAGE_ID=m-1' "$T/ok.env"
check "JOBPOOL_CORRELATION_ID" grep -qx 'JOBPOOL_CORRELATION_ID=c-1' "$T/ok.env"
check "JOBPOOL_ATTEMPT=1" grep -qx 'JOBPOOL_ATTEMPT=1' "$T/ok.env"
check "JOBPOOL_REDELIVERED=false" grep -qx 'JOBPOOL_REDELIVERED=false' "$T/ok.env"
check "header X-Trace-Id -> JOBPOOL_HEADER_X_TRACE_ID" grep -qx 'JOBPOOL_HEADER_X_TRACE_ID=abc.1' "$T/ok.env"
check "integer header n -> JOBPOOL_HEADER_N=7" grep -qx 'JOBPOOL_HEADER_N=7' "$T/ok.env"
check "JOBPOOL_QUEUE inherited" grep -qx 'JOBPOOL_QUEUE=wt.ok' "$T/ok.env"
check "task env has no JOBPOOL_AMQP_URL" bash -c "! grep -q '^JOBPOOL_AMQP_URL' '$T/ok.env'"
check "task env has no broker password" bash -c "! grep -qF '$PASS' '$T/ok.env'"
check "queue empty after ack" [ "$(count wt.ok)" = 0 ]

echo "== worker: URL from JOBPOOL_AMQP_URL_FILE, JSON logs"
publish wt.ok 'from file'
printf '%s\n' "$U" > "$T/url"
env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_AMQP_URL_FILE="$T/url" \
  JOBPOOL_QUEUE=wt.ok JOBPOOL_LOG_FORMAT=json "$W" --idle-timeout=5s -- cat >"$T/file.out" 2>"$T/file.err"; rc=$?
check "exit 0 with the URL from a file (got $rc)" [ "$rc" = 0 ]
check "task output passes through" [ "$(cat "$T/file.out")" = "from file" ]
check "every log line is JSON" eval 'jq -e -s "length > 0 and all(.[]; .level and .msg)" "$T/file.err" >/dev/null'
check "queue empty" [ "$(count wt.ok)" = 0 ]

echo "== worker: failure retries up to --max-attempts, then the dead-letter queue"
api PUT /api/exchanges/%2F/wt.dlx '{"type":"fanout","durable":true}' >/dev/null
declare_q wt.dlq
api POST /api/bindings/%2F/e/wt.dlx/q/wt.dlq '{"routing_key":""}' >/dev/null
declare_q wt.fail '{"x-dead-letter-exchange":"wt.dlx"}'
publish wt.fail 'poison' '{"message_id":"p-1","headers":{"keep":"me"}}'
codes=""
for i in 1 2 3; do
  JOBPOOL_QUEUE=wt.fail worker --idle-timeout 5s --max-attempts 3 -- \
    sh -c "cat >/dev/null; echo \"\$JOBPOOL_ATTEMPT \$JOBPOOL_HEADER_KEEP\" >> '$T/attempts'; exit 3" \
    >/dev/null 2>>"$T/fail.err"; codes="$codes$? "
  if [ "$i" -lt 3 ]; then
    check "after attempt $i: one message with x-jobpool-attempt=$((i + 1))" \
      [ "$(peek wt.fail | jq -c '[.[].properties.headers["x-jobpool-attempt"]]')" = "[$((i + 1))]" ]
  fi
done
check "each run exits with the task's code 3 (got $codes)" [ "$codes" = "3 3 3 " ]
check "the task saw attempts 1,2,3 and the copied header" \
  [ "$(tr '\n' ',' < "$T/attempts")" = "1 me,2 me,3 me," ]
check "work queue empty after the last attempt" [ "$(count wt.fail)" = 0 ]
dl=$(peek wt.dlq)
check "dead-letter queue holds it with x-jobpool-attempt=3" \
  [ "$(echo "$dl" | jq -c '[.[] | [.payload, .properties.headers["x-jobpool-attempt"], .properties.message_id]]')" = '[["poison",3,"p-1"]]' ]
check "dead-lettered by rejection (x-death reason rejected)" \
  [ "$(echo "$dl" | jq -r '.[0].properties.headers["x-death"][0].reason')" = rejected ]
JOBPOOL_QUEUE=wt.fail worker --idle-timeout 1s -- false >/dev/null 2>"$T/fail4.err"; rc=$?
check "a fourth worker finds nothing: exit 0, 'no task'" bash -c "[ $rc = 0 ] && grep -q 'no task' '$T/fail4.err'"

echo "== worker: a task killed by a signal counts as a failure (128+N)"
declare_q wt.sig
publish wt.sig 'x'
JOBPOOL_QUEUE=wt.sig worker --idle-timeout 5s -- sh -c 'kill -KILL $$' >/dev/null 2>"$T/sig.err"; rc=$?
check "exit 137 (got $rc)" [ "$rc" = 137 ]
check "requeued as attempt 2" [ "$(peek wt.sig | jq -c '[.[].properties.headers["x-jobpool-attempt"]]')" = '[2]' ]

echo "== worker: SIGTERM during a long task that ignores it: grace, SIGKILL, requeue, 143"
declare_q wt.term
publish wt.term 'long'
"${WENV[@]}" JOBPOOL_QUEUE=wt.term "$W" --idle-timeout 5s --grace 1s -- \
  sh -c "trap '' TERM; echo \$\$ > '$T/term.pid'; sleep 30" >/dev/null 2>"$T/term.err" &
wp=$!; bgpids+=("$wp")
for _ in $(seq 1 100); do [ -s "$T/term.pid" ] && break; sleep 0.05; done
t0=$(ms); kill -TERM "$wp"; wait "$wp"; rc=$?; t1=$(ms)
echo "  measured: SIGTERM to exit with --grace 1s: $((t1 - t0)) ms"
check "exit 143 (got $rc)" [ "$rc" = 143 ]
check "exit after the grace, not before and not much later ($((t1 - t0)) ms in [1000, 2500])" \
  eval '[ $((t1 - t0)) -ge 1000 ] && [ $((t1 - t0)) -le 2500 ]'
alive_in_group() { ps -o stat= -g "$1" 2>/dev/null | grep -vc '^Z'; } # zombies await reaping
for _ in $(seq 1 20); do [ "$(alive_in_group "$(cat "$T/term.pid")")" = 0 ] && break; sleep 0.05; done
check "the task's whole process group was killed (sh and its sleep)" \
  [ "$(alive_in_group "$(cat "$T/term.pid")")" = 0 ]
m=$(peek wt.term)
# Put back as a confirmed copy with the same attempt (a nack would come back redelivered, and a
# redelivered message counts as a spent attempt), marked for the next task's JOBPOOL_REDELIVERED.
check "message still in the queue, same attempt, not counted" \
  [ "$(echo "$m" | jq -c '[.[] | [.payload, .redelivered, .properties.headers["x-jobpool-attempt"], .properties.headers["x-jobpool-redelivered"]]]')" = '[["long",false,1,true]]' ]

echo "== worker: SIGTERM during a task that stops cleanly within the grace: acked"
api DELETE /api/queues/%2F/wt.term/contents >/dev/null
publish wt.term 'clean'
"${WENV[@]}" JOBPOOL_QUEUE=wt.term "$W" --idle-timeout 5s --grace 10s -- \
  sh -c "trap 'echo stopping; exit 0' TERM; echo \$\$ > '$T/term2.pid'; sleep 30 & wait" >"$T/term2.out" 2>"$T/term2.err" &
wp=$!; bgpids+=("$wp")
for _ in $(seq 1 100); do [ -s "$T/term2.pid" ] && break; sleep 0.05; done
t0=$(ms); kill -TERM "$wp"; wait "$wp"; rc=$?; t1=$(ms)
kill -KILL -- "-$(cat "$T/term2.pid")" 2>/dev/null # its background sleep
echo "  measured: SIGTERM to exit for a task that honours it: $((t1 - t0)) ms"
check "the task got the forwarded SIGTERM" grep -q stopping "$T/term2.out"
check "exit 0 (got $rc)" [ "$rc" = 0 ]
check "message acked: queue empty" [ "$(count wt.term)" = 0 ]

echo "== worker: SIGTERM while waiting for a message exits 0 at once"
declare_q wt.wait
"${WENV[@]}" JOBPOOL_QUEUE=wt.wait "$W" --idle-timeout 30s -- true >/dev/null 2>"$T/wait.err" &
wp=$!; bgpids+=("$wp")
for _ in $(seq 1 100); do grep -q 'waiting up to' "$T/wait.err" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
t0=$(ms); kill -TERM "$wp"; wait "$wp"; rc=$?; t1=$(ms)
echo "  measured: SIGTERM while idle to exit: $((t1 - t0)) ms"
check "exit 0 (got $rc)" [ "$rc" = 0 ]
check "within 500 ms ($((t1 - t0)) ms)" [ $((t1 - t0)) -le 500 ]

echo "== worker: SIGKILL of the worker mid-task: the broker redelivers, nothing is lost"
declare_q wt.kill
publish wt.kill 'survivor' '{"message_id":"k-1"}'
"${WENV[@]}" JOBPOOL_QUEUE=wt.kill "$W" --idle-timeout 5s -- \
  sh -c "echo \$\$ > '$T/kill.pid'; sleep 30" >/dev/null 2>"$T/kill.err" &
wp=$!; bgpids+=("$wp")
for _ in $(seq 1 100); do [ -s "$T/kill.pid" ] && break; sleep 0.05; done
kill -KILL "$wp"; wait "$wp" 2>/dev/null
kill -KILL -- "-$(cat "$T/kill.pid")" 2>/dev/null # the orphaned task's group
for _ in $(seq 1 50); do [ "$(count_rq wt.kill)" = 1 ] && break; sleep 0.1; done
check "message back in the queue after the worker died" [ "$(count_rq wt.kill)" = 1 ]
# The next worker counts the attempt that died with its worker (an OOM-killed task must not loop
# forever): requeued as attempt 2 without running it; the one after runs it.
JOBPOOL_QUEUE=wt.kill worker --idle-timeout 5s -- sh -c "touch '$T/kill.ran'" \
  >/dev/null 2>>"$T/kill.err"; rc=$?
check "a new worker counts the dead attempt, runs nothing, exits 0 (exit $rc)" \
  eval '[ "$rc" = 0 ] && [ ! -e "$T/kill.ran" ]'
check "requeued as attempt 2, not redelivered, marked" \
  [ "$(peek wt.kill | jq -c '[.[] | [.payload, .redelivered, .properties.headers["x-jobpool-attempt"], .properties.headers["x-jobpool-redelivered"]]]')" = '[["survivor",false,2,true]]' ]
JOBPOOL_QUEUE=wt.kill worker --idle-timeout 5s -- sh -c "cat > '$T/kill.body'; env > '$T/kill.env'" \
  >/dev/null 2>>"$T/kill.err"; rc=$?
check "the worker after it processes it (exit $rc)" [ "$rc" = 0 ]
check "same body" [ "$(cat "$T/kill.body")" = survivor ]
check "JOBPOOL_REDELIVERED=true, JOBPOOL_ATTEMPT=2" \
  eval 'grep -qx JOBPOOL_REDELIVERED=true "$T/kill.env" && grep -qx JOBPOOL_ATTEMPT=2 "$T/kill.env"'
check "queue empty" [ "$(count wt.kill)" = 0 ]
publish wt.kill 'doomed' '{"headers":{"x-jobpool-attempt":3}}'
"${WENV[@]}" JOBPOOL_QUEUE=wt.kill "$W" --idle-timeout 5s -- sh -c "echo \$\$ > '$T/kill2.pid'; sleep 30" \
  >/dev/null 2>>"$T/kill.err" & wp=$!; bgpids+=("$wp")
for _ in $(seq 1 100); do [ -s "$T/kill2.pid" ] && break; sleep 0.05; done
kill -KILL "$wp"; wait "$wp" 2>/dev/null; kill -KILL -- "-$(cat "$T/kill2.pid")" 2>/dev/null
for _ in $(seq 1 50); do [ "$(count_rq wt.kill)" = 1 ] && break; sleep 0.1; done
JOBPOOL_QUEUE=wt.kill worker --idle-timeout 5s --max-attempts 3 -- sh -c "touch '$T/kill2.ran'" \
  >/dev/null 2>>"$T/kill.err"; rc=$?
check "a redelivered last attempt is dead-lettered without running (exit $rc, queue $(count wt.kill))" \
  eval '[ "$rc" = 0 ] && [ ! -e "$T/kill2.ran" ] && [ "$(count wt.kill)" = 0 ]'
check "it says so" grep -q 'last attempt (3 of 3) ended unsettled' "$T/kill.err"

echo "== worker: broker connection lost mid-task: the task finishes, exit 75, redelivered"
declare_q wt.lost
publish wt.lost 'lost'
"${WENV[@]}" JOBPOOL_QUEUE=wt.lost "$W" --idle-timeout 5s -- \
  sh -c "cat >/dev/null; touch '$T/lost.started'; while [ ! -e '$T/lost.go' ]; do sleep 0.1; done; touch '$T/lost.done'" >/dev/null 2>"$T/lost.err" &
wp=$!; bgpids+=("$wp")
for _ in $(seq 1 100); do [ -e "$T/lost.started" ] && break; sleep 0.05; done
closed=0
for _ in $(seq 1 100); do # the management API lists a new connection after about 1 s
  name=$(api GET /api/connections | jq -r \
    '[.[] | select(.client_properties.connection_name // "" | startswith("jobpool-worker queue=wt.lost "))][0].name // empty')
  if [ -n "$name" ]; then
    api DELETE "/api/connections/$(jq -rn --arg n "$name" '$n|@uri')" >/dev/null && closed=1 && break
  fi
  sleep 0.1
done
sleep 0.5; touch "$T/lost.go" # the task ends only after its connection was closed
wait "$wp"; rc=$?
check "the test closed the worker's connection on the broker" [ "$closed" = 1 ]
check "the task ran to its end" [ -e "$T/lost.done" ]
check "exit 75 (got $rc)" [ "$rc" = 75 ]
check "it says the ack could not be sent" grep -q 'ack could not be sent' "$T/lost.err"
for _ in $(seq 1 50); do [ "$(count wt.lost)" = 1 ] && break; sleep 0.1; done
check "message redelivered to the queue" [ "$(count wt.lost)" = 1 ]

echo "== worker: idle timeout with an empty queue"
declare_q wt.idle
t0=$(ms); JOBPOOL_QUEUE=wt.idle worker --idle-timeout 2s -- true >/dev/null 2>"$T/idle.err"; rc=$?; t1=$(ms)
echo "  measured: --idle-timeout 2s exited after $((t1 - t0)) ms"
check "exit 0 (got $rc)" [ "$rc" = 0 ]
check "logs 'no task'" grep -q 'no task' "$T/idle.err"
check "exit within timeout + 1 s ($((t1 - t0)) ms in [2000, 3000])" eval '[ $((t1 - t0)) -ge 2000 ] && [ $((t1 - t0)) -le 3000 ]'
t0=$(ms); JOBPOOL_QUEUE=wt.idle worker --idle-timeout 500ms -- true >/dev/null 2>&1; rc=$?; t1=$(ms)
echo "  measured: --idle-timeout 500ms exited after $((t1 - t0)) ms"
check "500ms form: exit 0 within 1.5 s ($((t1 - t0)) ms)" eval '[ "$rc" = 0 ] && [ $((t1 - t0)) -le 1500 ]'

echo "== worker: 50 concurrent workers on 50 messages"
declare_q wt.conc
mkdir -p "$T/conc"
for i in $(seq 1 50); do publish wt.conc "msg-$i" "{\"message_id\":\"id-$i\"}" || bad "publish msg-$i"; done
t0=$(ms)
cpids=()
for i in $(seq 1 50); do
  "${WENV[@]}" JOBPOOL_QUEUE=wt.conc "$W" --idle-timeout 20s -- \
    sh -c "b=\$(cat); echo \"\$b \$JOBPOOL_MESSAGE_ID\" > \"$T/conc/task.\$\$\"; sleep 0.2" \
    >/dev/null 2>"$T/conc/worker.$i.err" &
  cpids+=($!)
done
bgpids+=("${cpids[@]}")
rcs=0
for p in "${cpids[@]}"; do wait "$p" || rcs=$((rcs + 1)); done
t1=$(ms)
echo "  measured: 50 workers, 50 messages: all done in $((t1 - t0)) ms"
check "all 50 workers exit 0 ($rcs did not)" [ "$rcs" = 0 ]
check "50 tasks ran" [ "$(ls "$T/conc" | grep -c '^task\.')" = 50 ]
check "each message processed exactly once (bodies msg-1..msg-50, ids matching)" \
  [ "$(cat "$T/conc"/task.* | sort -t- -k2n | tr '\n' ',')" = "$(seq 1 50 | sed 's/.*/msg-& id-&/' | tr '\n' ',')" ]
check "each worker took exactly one message" \
  eval '[ "$(grep -l "took message" "$T"/conc/worker.*.err | wc -l)" = 50 ] && [ "$(cat "$T"/conc/worker.*.err | grep -c "took message")" = 50 ]'
check "no message redelivered" bash -c "! grep -q 'redelivered=true' '$T'/conc/worker.*.err"
check "queue empty" [ "$(count wt.conc)" = 0 ]

echo "== worker: 5 MB body (far above frame_max 128 KiB)"
declare_q wt.big
head -c 3900000 /dev/urandom | base64 -w 0 | head -c 5242880 > "$T/big"
amqp-publish -u "$UT" -r wt.big -p < "$T/big" || bad "publish 5 MB"
want=$(sha256sum < "$T/big" | cut -d' ' -f1)
JOBPOOL_QUEUE=wt.big worker --idle-timeout 5s -- sh -c "sha256sum > '$T/big.sum'; exit 1" >/dev/null 2>"$T/big.err"; rc=$?
check "first run: the task read all 5 MB intact" [ "$(cut -d' ' -f1 "$T/big.sum")" = "$want" ]
check "first run: task exit 1 passed through (got $rc)" [ "$rc" = 1 ]
JOBPOOL_QUEUE=wt.big worker --idle-timeout 5s -- sh -c "sha256sum > '$T/big.sum2'; echo \$JOBPOOL_ATTEMPT >> '$T/big.sum2'" >/dev/null 2>>"$T/big.err"; rc=$?
check "the republished 5 MB copy is intact and is attempt 2" \
  [ "$(tr '\n' ' ' < "$T/big.sum2")" = "$want  - 2 " ]
check "second run exit 0 (got $rc)" [ "$rc" = 0 ]
amqp-publish -u "$UT" -r wt.big -p < "$T/big"
JOBPOOL_QUEUE=wt.big worker --idle-timeout 5s -- true >/dev/null 2>>"$T/big.err"; rc=$?
check "a task that never reads its 5 MB stdin: exit 0, acked" eval '[ "$rc" = 0 ] && [ "$(count wt.big)" = 0 ]'

echo "== worker: bad input: one line on stderr and exit 2"
declare_q wt.bad
expect2() { # NAME PATTERN CMD...
  local name=$1 pat=$2; shift 2
  "$@" >/dev/null 2>"$T/bad.err"; local rc=$?
  local lines; lines=$(grep -vc ' info ' "$T/bad.err") # the one line besides progress notes
  cat "$T/bad.err" >> "$T/bad.all"
  if [ "$rc" = 2 ] && [ "$lines" = 1 ] && grep -q -- "$pat" "$T/bad.err"; then ok "$name: $(grep -v ' info ' "$T/bad.err" | cut -c1-160)"
  else bad "$name: rc=$rc lines=$lines: $(cat "$T/bad.err")"; fi
}
ENVW=(env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_QUEUE=wt.bad)
expect2 "bad URL scheme" "bad broker url" "${ENVW[@]}" JOBPOOL_AMQP_URL="http://jobpool:$PASS@127.0.0.1/" "$W" -- true
expect2 "bad URL port" "bad broker url" "${ENVW[@]}" JOBPOOL_AMQP_URL="amqp://jobpool:$PASS@127.0.0.1:notaport/" "$W" -- true
expect2 "no URL" "no broker url" "${ENVW[@]}" "$W" -- true
expect2 "missing queue" "does not exist" env -u JOBPOOL_TEST_AMQP_URL JOBPOOL_AMQP_URL="$U" JOBPOOL_QUEUE=wt.nosuch "$W" -- true
expect2 "no queue" "no queue" env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_QUEUE JOBPOOL_AMQP_URL="$U" "$W" -- true
expect2 "wrong password" "access refused" "${ENVW[@]}" JOBPOOL_AMQP_URL="amqp://jobpool:wrong-$PASS@${U#*@}" "$W" -- true
expect2 "unknown vhost" "access refused" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" JOBPOOL_VHOST=no-such-vhost "$W" -- true
expect2 "empty command" "no task command" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" --
expect2 "empty command string" "no task command" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" -- ""
expect2 "command not found in PATH" "cannot run task command" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" -- no-such-command-jobpool
printf 'echo hi\n' > "$T/notexec"; chmod 0644 "$T/notexec"
expect2 "command path not executable" "cannot run task command" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" -- "$T/notexec"
expect2 "command is a directory" "cannot run task command" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" -- /tmp
printf '\177ELF-not-really' > "$T/badexec"; chmod 0755 "$T/badexec"
publish wt.bad 'keep me'
expect2 "command passes the check but exec fails (ENOEXEC)" "cannot run task command" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" --idle-timeout 5s -- "$T/badexec"
check "...and that message went back to the queue unharmed" [ "$(peek wt.bad | jq -c '[.[] | [.payload, (.properties.headers // {})["x-jobpool-attempt"]]]')" = '[["keep me",null]]' ]
api DELETE /api/queues/%2F/wt.bad/contents >/dev/null
expect2 "bad duration" "bad value" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" --idle-timeout 5x -- true
expect2 "bad max-attempts" "bad value" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" --max-attempts 0 -- true
expect2 "unknown flag" "unknown option" "${ENVW[@]}" JOBPOOL_AMQP_URL="$U" "$W" --bogus -- true
"${ENVW[@]}" JOBPOOL_AMQP_URL="amqp://jobpool:$PASS@127.0.0.1:1/" "$W" -- true >/dev/null 2>"$T/unreach.err"; rc=$?
cat "$T/unreach.err" >> "$T/bad.all"
check "unreachable broker is not bad input: exit 69 (got $rc)" [ "$rc" = 69 ]
check "bad-input runs left the queue untouched (no consumer ran)" [ "$(count wt.bad)" = 0 ]
"$W" --help > "$T/help" 2>&1; rc=$?
check "--help exits 0 and documents the exit codes" bash -c "[ $rc = 0 ] && grep -q '^  75' '$T/help' && grep -q '^  143' '$T/help'"
check "--version" bash -c "'$W' --version | grep -q '^jobpool-worker '"

echo "== worker: amqps with a CA file and server-name verification (socat TLS in front of the broker)"
mkdir -p "$T/tls"
( cd "$T/tls" &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=jobpool test CA" &&
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" &&
  printf 'subjectAltName=DNS:localhost\n' > ext &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext
) >/dev/null 2>&1 || bad "could not make a test CA and certificate with openssl"
tp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if ! command -v socat >/dev/null; then
  bad "socat is not installed (tests/env/deps.sh test installs it)"
else
  socat "OPENSSL-LISTEN:$tp,bind=127.0.0.1,cert=$T/tls/srv.pem,key=$T/tls/srv.key,verify=0,reuseaddr,fork" \
    "TCP:127.0.0.1:$(p=${U##*:}; echo "${p%%/*}")" 2>/dev/null &
  sp=$!; bgpids+=("$sp")
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$tp") 2>/dev/null && break; sleep 0.1; done
  declare_q wt.tls
  publish wt.tls 'over tls'
  TU="amqps://jobpool:$PASS@localhost:$tp/"
  env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_AMQP_URL="$TU" JOBPOOL_QUEUE=wt.tls \
    "$W" --idle-timeout 5s --ca-file "$T/tls/ca.pem" -- cat >"$T/tls.out" 2>"$T/tls.err"; rc=$?
  check "amqps://localhost with the right CA: task ran, exit 0 (got $rc)" \
    eval '[ "$rc" = 0 ] && [ "$(cat "$T/tls.out")" = "over tls" ] && [ "$(count wt.tls)" = 0 ]'
  expect2 "amqps to a name the certificate does not carry (127.0.0.1)" "hostname verification failed" \
    env -u JOBPOOL_TEST_AMQP_URL JOBPOOL_AMQP_URL="amqps://jobpool:$PASS@127.0.0.1:$tp/" JOBPOOL_QUEUE=wt.tls \
    JOBPOOL_CA_FILE="$T/tls/ca.pem" "$W" -- cat
  expect2 "amqps with a CA that did not sign the certificate" "peer cert verification failed" \
    env -u JOBPOOL_TEST_AMQP_URL JOBPOOL_AMQP_URL="$TU" JOBPOOL_QUEUE=wt.tls "$W" --ca-file /etc/ssl/certs/ca-certificates.crt -- cat
  kill "$sp"; wait "$sp" 2>/dev/null
fi

echo "== worker: amqps with a client certificate (socat that requires one in front of the broker)"
( cd "$T/tls" &&
  openssl req -newkey rsa:2048 -nodes -keyout cli.key -out cli.csr -subj "/CN=jobpool worker" &&
  openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cli.pem -days 2 &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca2.key -out ca2.pem -days 2 -subj "/CN=another CA" &&
  openssl req -newkey rsa:2048 -nodes -keyout oth.key -out oth.csr -subj "/CN=jobpool worker" &&
  openssl x509 -req -in oth.csr -CA ca2.pem -CAkey ca2.key -CAcreateserial -out oth.pem -days 2 &&
  openssl pkey -in cli.key -aes256 -passout pass:jobpool-test -out cli-enc.key
) >/dev/null 2>&1 || bad "could not make client certificates with openssl"
mp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if ! command -v socat >/dev/null; then
  bad "socat is not installed (tests/env/deps.sh test installs it)"
else
  # verify=1 with a cafile: socat refuses a client without a certificate signed by the test CA.
  socat "OPENSSL-LISTEN:$mp,bind=127.0.0.1,cert=$T/tls/srv.pem,key=$T/tls/srv.key,cafile=$T/tls/ca.pem,verify=1,reuseaddr,fork" \
    "TCP:127.0.0.1:$(p=${U##*:}; echo "${p%%/*}")" 2>/dev/null &
  sp=$!; bgpids+=("$sp")
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$mp") 2>/dev/null && break; sleep 0.1; done
  declare_q wt.mtls
  MU="amqps://jobpool:$PASS@localhost:$mp/"
  MENV=(env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_QUEUE=wt.mtls JOBPOOL_CA_FILE="$T/tls/ca.pem")
  publish wt.mtls 'mtls flags'
  "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" "$W" --idle-timeout 5s --cert-file "$T/tls/cli.pem" \
    --key-file "$T/tls/cli.key" -- cat >"$T/mtls1.out" 2>"$T/mtls1.err"; rc=$?
  check "--cert-file/--key-file: task ran, exit 0, message consumed (got $rc)" \
    eval '[ "$rc" = 0 ] && [ "$(cat "$T/mtls1.out")" = "mtls flags" ] && [ "$(count wt.mtls)" = 0 ]'
  publish wt.mtls 'mtls env'
  "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" JOBPOOL_CERT_FILE="$T/tls/cli.pem" JOBPOOL_KEY_FILE="$T/tls/cli.key" \
    "$W" --idle-timeout 5s -- cat >"$T/mtls2.out" 2>"$T/mtls2.err"; rc=$?
  check "JOBPOOL_CERT_FILE/JOBPOOL_KEY_FILE: task ran, exit 0, message consumed (got $rc)" \
    eval '[ "$rc" = 0 ] && [ "$(cat "$T/mtls2.out")" = "mtls env" ] && [ "$(count wt.mtls)" = 0 ]'
  publish wt.mtls 'keep me'
  expect2 "no client certificate: the broker refuses the handshake" "refused the handshake: .*no client certificate" \
    "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" "$W" --idle-timeout 5s -- cat
  check "...and the message is still in the queue" [ "$(count wt.mtls)" = 1 ]
  expect2 "a client certificate signed by another CA: refused" "refused the handshake: .*$T/tls/oth.pem" \
    "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" "$W" --idle-timeout 5s --cert-file "$T/tls/oth.pem" --key-file "$T/tls/oth.key" -- cat
  check "...and the message is still in the queue" [ "$(count wt.mtls)" = 1 ]
  expect2 "only --cert-file" "--key-file.* is missing" \
    "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" "$W" --cert-file "$T/tls/cli.pem" -- cat
  expect2 "a client certificate with amqp://" "a client certificate needs amqps://" \
    "${MENV[@]}" JOBPOOL_AMQP_URL="$U" "$W" --cert-file "$T/tls/cli.pem" --key-file "$T/tls/cli.key" -- cat
  expect2 "a key that does not match the certificate" "cannot load client certificate .* with key $T/tls/oth.key" \
    "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" "$W" --cert-file "$T/tls/cli.pem" --key-file "$T/tls/oth.key" -- cat
  expect2 "an encrypted key" "with key $T/tls/cli-enc.key" \
    "${MENV[@]}" JOBPOOL_AMQP_URL="$MU" "$W" --cert-file "$T/tls/cli.pem" --key-file "$T/tls/cli-enc.key" -- cat
  check "...and after all of these the message is still in the queue" [ "$(count wt.mtls)" = 1 ]
  kill "$sp"; wait "$sp" 2>/dev/null
fi

echo "== worker: the example task from docs/worker.md"
declare_q wt.example
publish wt.example 'three little words' '{"message_id":"ex-1","headers":{"priority":"high"}}'
publish wt.example '' '{"message_id":"ex-2"}'
JOBPOOL_QUEUE=wt.example worker --idle-timeout 5s -- "$JOBPOOL_ROOT/worker-image/example/task.sh" \
  >"$T/example.out" 2>"$T/example.err"; rc=$?
check "word count printed, exit 0 (got $rc)" eval \
  '[ "$rc" = 0 ] && grep -qx "message ex-1 (attempt 1, priority high): 3 words" "$T/example.out"'
JOBPOOL_QUEUE=wt.example worker --idle-timeout 5s --max-attempts 1 -- "$JOBPOOL_ROOT/worker-image/example/task.sh" \
  >>"$T/example.out" 2>>"$T/example.err"; rc=$?
check "empty message fails with 1 and, at --max-attempts 1, is dead-lettered (queue empty)" \
  eval '[ "$rc" = 1 ] && grep -q "empty message" "$T/example.err" && [ "$(count wt.example)" = 0 ]'

echo "== worker: progress report for the controller, and defaults from the environment"
declare_q wt.progress
JOBPOOL_RESULT_FILE="$T/progress" JOBPOOL_IDLE_TIMEOUT=700ms JOBPOOL_QUEUE=wt.progress \
  worker -- true >"$T/progress.out" 2>"$T/progress.err"; rc=$?
check "JOBPOOL_IDLE_TIMEOUT=700ms honoured (exit $rc)" grep -q "within 700 ms" "$T/progress.err"
check "idle exit reports no-task" [ "$(cat "$T/progress" 2>/dev/null)" = no-task ]
publish wt.progress 'p1'
JOBPOOL_RESULT_FILE="$T/progress2" JOBPOOL_QUEUE=wt.progress worker --idle-timeout 5s -- \
  sh -c "env > '$T/progress.env'; cat '$T/progress2' > '$T/progress.seen'" >"$T/progress2.out" 2>"$T/progress2.err"; rc=$?
check "while the task runs it reports task, wait unknown without a timestamp (exit $rc)" \
  [ "$(cat "$T/progress.seen" 2>/dev/null)" = "task wait=unknown" ]
check "when it ended, the task's duration too ($(cat "$T/progress2" 2>/dev/null))" \
  grep -qxE 'task wait=unknown duration=0\.[0-9]{3}' "$T/progress2"
check "the task does not get the worker's report file" bash -c "! grep -q '^JOBPOOL_RESULT_FILE=' '$T/progress.env'"
# A message stamped 42 s ago (AMQP timestamps are whole seconds): it waited 42 to 43 s; a task
# of 0.3 s ran 0.3 s and then some; a stamp from a clock 10 s ahead counts as no wait; one a
# day and more ahead (milliseconds, say) is unknown.
publish wt.progress 'p2' "{\"timestamp\":$(( $(date +%s) - 42 ))}"
JOBPOOL_RESULT_FILE="$T/progress4" JOBPOOL_QUEUE=wt.progress worker --idle-timeout 5s -- sleep 0.3 \
  >"$T/progress4.out" 2>"$T/progress4.err"
check "a stamped message reports its wait and the duration ($(cat "$T/progress4" 2>/dev/null))" \
  awk '$1 == "task" { split($2, w, "="); split($3, d, "=");
    exit !(w[1] == "wait" && w[2] >= 42 && w[2] < 44 && d[1] == "duration" && d[2] >= 0.3 && d[2] < 5) }' "$T/progress4"
publish wt.progress 'p3' "{\"timestamp\":$(( $(date +%s) + 10 ))}"
JOBPOOL_RESULT_FILE="$T/progress5" JOBPOOL_QUEUE=wt.progress worker --idle-timeout 5s -- true \
  >"$T/progress5.out" 2>"$T/progress5.err"
check "a timestamp slightly ahead (clock skew) is no wait" grep -q '^task wait=0.000 ' "$T/progress5"
publish wt.progress 'p4' "{\"timestamp\":$(( $(date +%s) * 1000 ))}"
JOBPOOL_RESULT_FILE="$T/progress6" JOBPOOL_QUEUE=wt.progress worker --idle-timeout 5s -- true \
  >"$T/progress6.out" 2>"$T/progress6.err"
check "a timestamp in milliseconds is unknown, not a negative wait" grep -q '^task wait=unknown ' "$T/progress6"
"${WENV[@]}" JOBPOOL_RESULT_FILE="$T/progress3" JOBPOOL_QUEUE=wt.progress "$W" --idle-timeout 10s -- true \
  >"$T/progress3.out" 2>"$T/progress3.err" & wp=$!; bgpids+=("$wp")
for _ in $(seq 1 200); do [ -e "$T/progress3" ] && break; sleep 0.02; done
check "a waiting worker reports waiting once it consumes" [ "$(cat "$T/progress3" 2>/dev/null)" = waiting ]
kill -TERM "$wp"; wait "$wp" 2>/dev/null
check "a bad JOBPOOL_MAX_ATTEMPTS is bad input (exit 2)" bash -c \
  "JOBPOOL_MAX_ATTEMPTS=zero JOBPOOL_QUEUE=wt.progress '$W' -- true 2>/dev/null; [ \$? = 2 ]"

echo "== worker: login from JOBPOOL_AMQP_USERNAME/PASSWORD (and _FILE), taken as they are"
# What a Job gets from rabbitmq.workerSecret: a URL without user info, and the login as raw
# values from a Secret (secretKeyRef). A password full of URL syntax must work unencoded.
WPASS='S3cr:t@x/%y'
api PUT /api/users/wt-raw "$(jq -n --arg p "$WPASS" '{password:$p,tags:""}')" >/dev/null
declare_q wt.raw
api PUT /api/permissions/%2F/wt-raw '{"configure":".*","write":".*","read":".*"}' >/dev/null
HOSTPART=${U#*@}
publish wt.raw 'raw login'
env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_AMQP_URL="amqp://$HOSTPART" \
  JOBPOOL_AMQP_USERNAME=wt-raw JOBPOOL_AMQP_PASSWORD="$WPASS" JOBPOOL_QUEUE=wt.raw \
  "$W" --idle-timeout 5s -- sh -c "cat > '$T/raw.body'; env > '$T/raw.env'" >"$T/raw.out" 2>"$T/raw.err"; rc=$?
check "exit 0 logged in as wt-raw with '$WPASS' unencoded (got $rc)" [ "$rc" = 0 ]
check "the task ran" [ "$(cat "$T/raw.body" 2>/dev/null)" = "raw login" ]
check "task env has no JOBPOOL_AMQP_USERNAME/PASSWORD" bash -c "! grep -q '^JOBPOOL_AMQP_\(USERNAME\|PASSWORD\)' '$T/raw.env'"
check "task env has no copy of the password" bash -c "! grep -qF '$WPASS' '$T/raw.env'"
check "queue empty" [ "$(count wt.raw)" = 0 ]
publish wt.raw 'raw from files'
printf 'wt-raw\n' > "$T/raw.user"; printf '%s\n' "$WPASS" > "$T/raw.pass"
# The URL's own user info (the admin) is overridden by the files.
env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_AMQP_URL="$U" \
  JOBPOOL_AMQP_USERNAME_FILE="$T/raw.user" JOBPOOL_AMQP_PASSWORD_FILE="$T/raw.pass" \
  JOBPOOL_QUEUE=wt.raw "$W" --idle-timeout 5s -- sh -c "cat > '$T/raw2.body'; env > '$T/raw2.env'" \
  >"$T/raw2.out" 2>"$T/raw2.err"; rc=$?
check "exit 0 with the login from _FILE variables (got $rc)" [ "$rc" = 0 ]
check "the task ran" [ "$(cat "$T/raw2.body" 2>/dev/null)" = "raw from files" ]
check "task env has no _FILE variables" bash -c "! grep -q '^JOBPOOL_AMQP_.*_FILE=' '$T/raw2.env'"
conn_user=$(api GET /api/connections | jq -r '[.[] | select(.client_properties.connection_name // "" | test("queue=wt.raw"))] | length')
check "no connection left behind ($conn_user)" [ "${conn_user:-0}" = 0 ]
env -u JOBPOOL_TEST_AMQP_URL -u JOBPOOL_TEST_RMQ_PASS JOBPOOL_AMQP_URL="amqp://$HOSTPART" \
  JOBPOOL_AMQP_USERNAME=wt-raw JOBPOOL_AMQP_PASSWORD="wrong-$WPASS" JOBPOOL_QUEUE=wt.raw \
  "$W" --idle-timeout 2s -- true >"$T/raw3.out" 2>"$T/raw3.err"; rc=$?
check "a wrong raw password: exit 2, access refused (got $rc)" \
  bash -c "[ $rc = 2 ] && grep -q 'access refused' '$T/raw3.err'"
check "the raw password is never printed" bash -c "! grep -qF '$WPASS' '$T'/raw*.err '$T'/raw*.out"
api DELETE /api/users/wt-raw >/dev/null

echo "== worker: the password never appears in any worker output"
cat "$T"/*.err "$T"/*.out "$T"/conc/*.err "$T/bad.all" > "$T/all-output" 2>/dev/null
check "checked $(wc -l < "$T/all-output") lines of output" [ "$(wc -l < "$T/all-output")" -gt 100 ]
check "password absent" bash -c "! grep -qF '$PASS' '$T/all-output'"
check "redacted URL shown instead" grep -qF 'jobpool:***@' "$T/all-output"

echo
[ $fail -eq 0 ] || printf 'worker.test: failed: %s\n' "${failed[@]}"
echo "worker.test: $pass passed, $fail failed"
[ $fail -eq 0 ]
