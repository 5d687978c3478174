#!/usr/bin/env bash
# trickle: one message per second for 60 s. Proves: every message runs once, and fewer than 5%
# of the workers started find no message (waste). Prints the pick-up latency (publish to task
# start) next to what it should be on an idle machine: pollInterval + the management API's depth
# lag + the Job-to-process start allowance; a timing bound is a figure, never a pass/fail check.
. "$(dirname "$0")/lib.sh"
SECS=${E2E_TRICKLE_SECONDS:-60}
POLL_S=1
# The depth lag: the management API's figures trail the queue by up to 10 s here (measured,
# docs/scaling.md), and the controller treats a sample as that old.
LAG_S=${E2E_DEPTH_LAG_S:-10}
START_S=${E2E_START_ALLOWANCE_S:-8}   # Job -> Pod -> bind -> process -> AMQP consume, loaded box
out=$(scenario_dir trickle)
declare_queue e2e.trickle
cfg="$E2E_WORK/trickle.yaml"
config_header "$cfg" "${POLL_S}s"
pool_yaml trickle e2e.trickle "$out" "    maxActive: 20
    idleTimeout: 10s
    successfulHistory: 10
    failedHistory: 5" >> "$cfg"
ctrl_start "$cfg"
sleep 2
ctrl_window_begin
say "publishing one message per second for $SECS s"
$TOOL publish --queue e2e.trickle --count "$SECS" --rate 1 --log "$out/pub" || bad "publish"
done_all() { [ "$(lines "$out/done")" -ge "$SECS" ]; }
wait_until 120 done_all
figs=$(ctrl_figures)
# Let late over-starts show up: they wait out idleTimeout and exit.
settled() { set -- $(job_counts trickle); [ "$4" = 0 ] && [ "$(sim_running trickle)" = 0 ]; }
wait_until 90 settled
rep=$($TOOL report --pub "$out/pub" --jobs "$E2E_WORK/jobs.events" --started "$out/started" \
  --sim "$E2E_WORK/sim.events" --pool trickle)
check "all $SECS messages processed once" [ "$(cut -d' ' -f1 "$out/done" | sort -un | wc -l)" = "$SECS" ]
check "no duplicate runs" [ "$(lines "$out/done")" = "$SECS" ]
# Latency is a figure, not a check: on a loaded machine it says more about the machine.
bound=$(( (POLL_S + LAG_S + START_S) * 1000 ))
say "pick-up latency: max $(jq .pub_to_task_max_ms <<< "$rep") ms, p99 $(jq .pub_to_task_p99_ms <<< "$rep") ms (expected on an idle machine: within poll + lag + start = $bound ms)"
w=$(jq .workers_started <<< "$rep"); t=$(jq .tasks_started <<< "$rep")
check "waste below 5% ($((w - t)) of $w workers found no message)" [ $(( (w - t) * 100 )) -lt $(( 5 * w )) ]
check_drained e2e.trickle
figures trickle "$rep" "$figs" "{\"pickup_bound_ms\": $bound}"
delete_jobs trickle
finish
