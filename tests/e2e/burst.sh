#!/usr/bin/env bash
# burst: 500 messages at once, maxActive 50. Proves: every message processed exactly once, at
# most maxActive workers at a time, every Job completes, history trimmed to its limits, nothing
# left active or queued at the end.
. "$(dirname "$0")/lib.sh"
N=${E2E_BURST_N:-500}; MAXA=${E2E_BURST_MAX:-50}; SLEEP=${E2E_BURST_SLEEP:-1}
SH=10; FH=5
out=$(scenario_dir burst)
declare_queue e2e.burst
cfg="$E2E_WORK/burst.yaml"
config_header "$cfg" 1s
pool_yaml burst e2e.burst "$out" "    maxActive: $MAXA
    maxStartPerTick: $MAXA
    idleTimeout: 10s
    successfulHistory: $SH
    failedHistory: $FH" >> "$cfg"
ctrl_start "$cfg"
ctrl_window_begin
say "publishing $N messages (task: sleep $SLEEP s)"
$TOOL publish --queue e2e.burst --count "$N" --sleep "$SLEEP" --log "$out/pub" || bad "publish"
done_all() { [ "$(lines "$out/done")" -ge "$N" ]; }
wait_until $(( 120 + N * 2 )) done_all
figs=$(ctrl_figures)
say "all tasks ran; waiting for the Jobs to finish and the history to be trimmed"
settled() { set -- $(job_counts burst); [ "$4" = 0 ] && [ "$2" -le "$SH" ] && [ "$3" -le "$FH" ] && [ "$(sim_running burst)" = 0 ]; }
wait_until 90 settled
read -r total complete failedj unfinished <<< "$(job_counts burst)"
nlines=$(lines "$out/done")
uniq_ids=$(cut -d' ' -f1 "$out/done" 2>/dev/null | sort -un | wc -l)
rep=$($TOOL report --pub "$out/pub" --jobs "$E2E_WORK/jobs.events" --started "$out/started" \
  --sim "$E2E_WORK/sim.events" --pool burst)
check "all $N messages processed (done lines: $nlines)" [ "$nlines" = "$N" ]
check "each exactly once ($uniq_ids distinct ids)" [ "$uniq_ids" = "$N" ]
check "ids are exactly 1..$N" bash -c "cut -d' ' -f1 '$out/done' | sort -n | diff -q - <(seq 1 $N) >/dev/null"
maxrun=$(jq .max_running <<< "$rep"); maxact=$(jq .max_active_jobs <<< "$rep")
check "at most $MAXA workers running at once (max $maxrun)" [ "$maxrun" -le "$MAXA" ]
check "at most $MAXA unfinished Jobs at once (max $maxact)" [ "$maxact" -le "$MAXA" ]
check "no Job failed (recorder: $(jq .jobs_failed <<< "$rep"))" [ "$(jq .jobs_failed <<< "$rep")" = 0 ]
check "every Job created finished ($(jq .jobs_finished <<< "$rep")/$(jq .jobs_created <<< "$rep"))" \
  [ "$(jq .jobs_finished <<< "$rep")" = "$(jq .jobs_created <<< "$rep")" ]
check "history trimmed to successfulHistory $SH (have $complete)" [ "$complete" = "$SH" ]
check "no failed Jobs kept ($failedj)" [ "$failedj" = 0 ]
check "nothing active at the end (unfinished Jobs: $unfinished)" [ "$unfinished" = 0 ]
check "no worker process left ($(sim_running burst))" [ "$(sim_running burst)" = 0 ]
check_drained e2e.burst
figures burst "$rep" "$figs" "{\"max_active\": $MAXA}"
delete_jobs burst
finish
