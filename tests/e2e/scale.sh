#!/usr/bin/env bash
# scale: 100 pools and 5,000 Jobs (50 messages per pool, successfulHistory 50, so every Job is
# kept). Proves the controller serves them all (every message done, every Job finished) from its
# watch cache: LIST pages stay far below one per tick (one per pool per tick would be 100). Prints peak RSS, private dirty, CPU
# per tick and API requests per tick early and late in the run; asserts no timing.
. "$(dirname "$0")/lib.sh"
P=${E2E_SCALE_POOLS:-100}; M=${E2E_SCALE_MSGS:-50}; N=$(( P * M ))
MAXA=${E2E_SCALE_MAX:-5}; RSS_BUDGET_KB=${E2E_RSS_BUDGET_KB:-262144}
out=$(scenario_dir scale)
cfg="$E2E_WORK/scale.yaml"
config_header "$cfg" 2s
for i in $(seq 0 $(( P - 1 ))); do
  q=$(printf 'e2e.scale.%03d' "$i")
  declare_queue "$q"
  pool_yaml "$(printf 'scale%03d' "$i")" "$q" "$out" "    maxActive: $MAXA
    maxStartPerTick: $MAXA
    idleTimeout: 10s
    successfulHistory: $M
    failedHistory: $M" >> "$cfg"
done
ctrl_start "$cfg"
sleep 3
ctrl_window_begin
say "publishing $N messages over $P queues"
$TOOL publish --queue e2e.scale. --queues "$P" --count "$N" --log "$out/pub" || bad "publish"
half() { [ "$(lines "$out/done")" -ge $(( N / 2 )) ]; }
wait_until $(( 300 + N )) half
early=$(ctrl_figures)
ctrl_window_begin
done_all() { [ "$(lines "$out/done")" -ge "$N" ]; }
wait_until $(( 300 + N )) done_all
settled() { [ "$(recorded_unfinished scale)" = 0 ]; }
wait_until 180 settled
late=$(ctrl_figures)
# An idle window at the full Job count: the steady state's request rate.
ctrl_window_begin; sleep 20; idle=$(ctrl_figures)
njobs=$(curl -fsS -m 120 --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" \
  "$JOBPOOL_TEST_KUBE_SERVER/apis/batch/v1/namespaces/default/jobs?labelSelector=app.kubernetes.io/managed-by%3Djobpool" | jq '.items | length')
check "all $N messages processed ($(lines "$out/done") runs, $(cut -d' ' -f1 "$out/done" | sort -u | wc -l) distinct)" \
  [ "$(cut -d' ' -f1 "$out/done" | sort -u | wc -l)" = "$N" ]
check "$N Jobs or more kept in the cluster ($njobs)" [ "$njobs" -ge "$N" ]
check "nothing left unfinished ($(recorded_unfinished scale) Jobs)" settled
# A LIST page per pool per tick would be >= $P per tick; the cache relists only on its resync.
lists=$(jq -s '[.[].api_by_verb | to_entries[] | select(.key | startswith("list")) | .value] | add // 0' \
  <<< "$early $late $idle")
ticks=$(jq -s 'map(.ticks) | add' <<< "$early $late $idle")
check "Jobs and Pods come from the watch cache: $lists LIST pages in $ticks ticks" [ "$lists" -lt "$ticks" ]
hwm=$(jq -s 'map(.peak_rss_kb) | max' <<< "$early $late $idle")
check "controller peak RSS $hwm kB within $RSS_BUDGET_KB kB" [ "$hwm" -le "$RSS_BUDGET_KB" ]
say "early: $early"
say "late:  $late"
say "idle:  $idle"
rep=$($TOOL report --pub "$out/pub" --jobs "$E2E_WORK/jobs.events" --started "$out/started" \
  --sim "$E2E_WORK/sim.events" --pool scale)
figures scale "$rep" "{\"pools\": $P, \"jobs_kept\": $njobs, \"early\": $early, \"late\": $late, \"idle\": $idle}" \
  "$(jq -c '{ticks, peak_rss_kb, private_dirty_kb, cpu_ms_per_tick, api_requests_per_tick}' <<< "$late")"
for i in $(seq 0 $(( P - 1 ))); do delete_jobs "$(printf 'scale%03d' "$i")"; done
finish
