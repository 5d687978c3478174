#!/usr/bin/env bash
# faults: a burst through four faults in turn: workers SIGKILLed mid-task, RabbitMQ restarted,
# the API server stopped for 20 s, the controller SIGKILLed and restarted. Proves no message is
# lost: every message published was acked after its task ran or sits in the dead-letter queue,
# and the work queue ends empty (delivery is at least once, so a task may run twice).
. "$(dirname "$0")/lib.sh"
N=${E2E_FAULT_N:-300}; MAXA=30; DOWN_S=${E2E_APISERVER_DOWN_S:-20}
out=$(scenario_dir faults)
declare_dlq e2e.faults.dlx e2e.faults.dlq
declare_queue e2e.faults '{"x-dead-letter-exchange":"e2e.faults.dlx"}'
cfg="$E2E_WORK/faults.yaml"
config_header "$cfg" 1s
pool_yaml faults e2e.faults "$out" "    maxActive: $MAXA
    maxStartPerTick: $MAXA
    maxAttempts: 5
    idleTimeout: 10s
    pendingTimeout: 2m
    successfulHistory: 10
    failedHistory: 10" >> "$cfg"
ctrl_start "$cfg"
# Tasks of 3 s: the SIGKILL below must land while tasks run. With 1 s tasks on a loaded machine
# the runs seen in flight could all end before the simulator acted on the signal, and the kill
# then hit only workers still waiting for a message (seen twice: 0 runs cut short).
TASK_S=${E2E_FAULT_TASK_S:-3}
say "publishing $N persistent messages (task: sleep $TASK_S s)"
$TOOL publish --queue e2e.faults --count "$N" --sleep "$TASK_S" --log "$out/pub" || bad "publish"
ndone() { cut -d' ' -f1 "$out/done" | sort -u | wc -l; }
at_least() { [ "$(ndone)" -ge "$1" ]; }

# Tasks running now: started runs without an end yet.
inflight() { echo $(( $(lines "$out/started") - $(lines "$out/done") - $(lines "$out/failed") )); }
inflight_ge() { [ "$(inflight)" -ge "$1" ]; }
wait_until 300 at_least $(( N / 5 ))
wait_until 60 inflight_ge 3
say "fault 1: SIGKILL every running worker, $(inflight) of them mid-task"
kill -USR1 "$(cat "$E2E_WORK/nodesim.pid")"
sleep 1
killed=$(inflight)

wait_until 300 at_least $(( 2 * N / 5 ))
say "fault 2: restart RabbitMQ ($(ndone) done)"
"$(dirname "$0")/../env/rabbitmq.sh" restart "$JOBPOOL_RMQ_DIR" >/dev/null 2>"$out/rmq-restart.err" \
  && ok "RabbitMQ restarted" || bad "RabbitMQ restart: $(tail -n 3 "$out/rmq-restart.err")"

wait_until 300 at_least $(( 3 * N / 5 ))
say "fault 3: stop the API server for $DOWN_S s ($(ndone) done)"
"$(dirname "$0")/../env/kube.sh" apiserver-stop "$JOBPOOL_KUBE_DIR"
sleep "$DOWN_S"
"$(dirname "$0")/../env/kube.sh" apiserver-start "$JOBPOOL_KUBE_DIR" 2>"$out/api-restart.err" \
  && ok "API server back" || bad "API server restart: $(tail -n 3 "$out/api-restart.err")"

wait_until 300 at_least $(( 4 * N / 5 ))
say "fault 4: SIGKILL the controller and start it again ($(ndone) done)"
kill -KILL "$CTRL_PID"; wait "$CTRL_PID" 2>/dev/null
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null
sleep 2
ctrl_start "$cfg"

dlq_ids() { $TOOL peek --queue e2e.faults.dlq; }
accounted() { [ "$( (cut -d' ' -f1 "$out/done"; dlq_ids) | sort -u | wc -l)" -ge "$N" ]; }
wait_until 600 accounted
wait_until 120 queue_drained e2e.faults
dlq_ids | sort -n > "$out/dlq"
cut -d' ' -f1 "$out/done" | sort -nu > "$out/done.ids"
sort -nu "$out/done.ids" "$out/dlq" > "$out/accounted"
check "every one of the $N messages was acked after its task ran or is in the DLQ ($(lines "$out/accounted"))" \
  diff -q "$out/accounted" <(seq 1 "$N")
check "no message both done and dead-lettered" [ -z "$(comm -12 <(sort -u "$out/done.ids") <(sort -u "$out/dlq"))" ]
check "workers were killed mid-task ($killed task runs running then)" [ "$killed" -ge 1 ]
check "the killed tasks never finished: $(inflight) runs cut short" [ "$(inflight)" -ge 1 ]
check_drained e2e.faults
say "done $(lines "$out/done.ids") (runs: $(lines "$out/done"), so $(( $(lines "$out/done") - $(lines "$out/done.ids") )) ran twice), dead-lettered $(lines "$out/dlq"), runs cut short $(inflight)"
settled() { set -- $(job_counts faults); [ "$4" = 0 ] && [ "$(sim_running faults)" = 0 ]; }
check "nothing active at the end" wait_until 120 settled
figures faults "{\"messages\": $N, \"acked\": $(lines "$out/done.ids"), \"task_runs\": $(lines "$out/done"), \"runs_cut_short\": $(inflight), \"dead_lettered\": $(lines "$out/dlq")}"
delete_jobs faults
finish
