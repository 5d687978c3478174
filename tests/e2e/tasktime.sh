#!/usr/bin/env bash
# tasktime: task wait and duration on Kubernetes. 8 messages stamped 100 s ago and 4 without a
# timestamp, run as Jobs by the node simulator; each worker's termination message carries its
# figures. Proves: jobpool_task_wait_seconds counts the 8 stamped messages only, with a sum of
# 8 x 100 s and more; jobpool_task_duration_seconds counts all 12 tasks (1 s each); the counts
# stay put afterwards (each Job observed once, however many passes list it); `jobpool-controller
# status -o json` reports the same 12 tasks.
. "$(dirname "$0")/lib.sh"
NT=8; NU=4; AGO=100; N=$((NT + NU))
out=$(scenario_dir tasktime)
declare_queue e2e.tasktime
cfg="$E2E_WORK/tasktime.yaml"
config_header "$cfg" 1s
pool_yaml tasktime e2e.tasktime "$out" "    maxActive: 6
    idleTimeout: 10s
    successfulHistory: 20" >> "$cfg"
say "publishing $NT messages stamped $AGO s ago and $NU without a timestamp (task: sleep 1 s)"
$TOOL publish --queue e2e.tasktime --count $NT --sleep 1 --timestamp-ago $AGO --log "$out/pub" || bad "publish"
$TOOL publish --queue e2e.tasktime --count $NU --start $((NT + 1)) --sleep 1 --log "$out/pub" || bad "publish"
ctrl_start "$cfg"
done_all() { [ "$(lines "$out/done")" -ge "$N" ]; }
wait_until 180 done_all
settled() { set -- $(job_counts tasktime); [ "$4" = 0 ] && [ "$(sim_running tasktime)" = 0 ]; }
wait_until 90 settled
counted() { ctrl_metrics | grep -q "^jobpool_task_duration_seconds_count{pool=\"tasktime\"} $N\$"; }
wait_until 30 counted
ctrl_metrics > "$out/metrics.1"
sleep 3   # three more passes list the same finished Jobs
ctrl_metrics > "$out/metrics.2"
m() { awk -v k="$1" '$1 == k {print $2}' "$out/metrics.2"; }
w_count=$(m 'jobpool_task_wait_seconds_count{pool="tasktime"}'); w_sum=$(m 'jobpool_task_wait_seconds_sum{pool="tasktime"}')
d_count=$(m 'jobpool_task_duration_seconds_count{pool="tasktime"}'); d_sum=$(m 'jobpool_task_duration_seconds_sum{pool="tasktime"}')
say "figures: wait count=$w_count sum=$w_sum; duration count=$d_count sum=$d_sum"
check "all $N tasks ran ($(lines "$out/done"))" [ "$(lines "$out/done")" = $N ]
check "wait observed for the $NT stamped messages only (count $w_count)" [ "$w_count" = $NT ]
check "wait sum at least $NT x $AGO s, under $NT x $((AGO + 120)) s ($w_sum)" \
  awk -v s="${w_sum:-0}" -v n=$NT -v a=$AGO 'BEGIN { exit !(s >= n * a && s < n * (a + 120)) }'
check "no stamped wait under 60 s" [ "$(m 'jobpool_task_wait_seconds_bucket{pool="tasktime",le="60"}')" = 0 ]
check "duration observed for all $N tasks (count $d_count)" [ "$d_count" = $N ]
check "duration sum between $N x 1 s and $N x 10 s ($d_sum)" \
  awk -v s="${d_sum:-0}" -v n=$N 'BEGIN { exit !(s >= n && s <= n * 10) }'
check "no task ran under 0.5 s" [ "$(m 'jobpool_task_duration_seconds_bucket{pool="tasktime",le="0.5"}')" = 0 ]
check "each Job observed once: the histograms did not move over three more passes" \
  diff <(grep '^jobpool_task_' "$out/metrics.1") <(grep '^jobpool_task_' "$out/metrics.2")
"$CONTROLLER" status --address "127.0.0.1:$CTRL_METRICS_PORT" -o json > "$out/status.json"
check "status -o json: pool tasktime, $N tasks" \
  [ "$(jq -r '.pools[] | select(.name == "tasktime") | .tasks_total' "$out/status.json")" = $N ]
delete_jobs tasktime
finish
