#!/usr/bin/env bash
# orphans: a pool renamed while its workers run (the controller restarted with the new config).
# The old pool's Jobs are orphans: still listed (by the managed-by label, not by a configured
# pool name). Proves: while they run they count against maxActiveTotal (the renamed pool starts
# no more than the cap leaves), they are never deleted while running (every old task finishes),
# and once finished they are deleted with reason "orphaned"; every message runs exactly once.
. "$(dirname "$0")/lib.sh"
CAP=4
out=$(scenario_dir orphans)
declare_queue e2e.orphans
write_cfg() { # POOL-NAME
  config_header "$cfg" 1s
  sed -i "s/^pools:/maxActiveTotal: $CAP\npools:/" "$cfg"
  pool_yaml "$1" e2e.orphans "$out" "    maxActive: 10
    idleTimeout: 10s
    successfulHistory: 10" >> "$cfg"
}
cfg="$E2E_WORK/orphans.yaml"
write_cfg orph-old
say "four long tasks under pool orph-old"
$TOOL publish --queue e2e.orphans --count $CAP --sleep 12 --log "$out/pub" || bad "publish"
ctrl_start "$cfg"
four_running() { [ "$(sim_running orph-old)" = $CAP ]; }
wait_until 60 four_running || bad "the first $CAP tasks did not start"
ctrl_stop
say "renamed to orph-new, four more messages"
write_cfg orph-new
$TOOL publish --queue e2e.orphans --count $CAP --start $((CAP + 1)) --sleep 1 --log "$out/pub2" || bad "publish"
ctrl_start "$cfg"
# Sample both pools' unfinished Jobs until every message ran, from one listing each time (one
# resourceVersion: two separate reads could see a Job finish in one and its successor in the
# other).
unfinished_both() {
  kapi GET "/apis/batch/v1/namespaces/default/jobs?labelSelector=app.kubernetes.io%2Fmanaged-by%3Djobpool" |
    jq -r '[.items[] | {p: .metadata.labels["jobpool.dev/pool"],
        u: ([(.status.conditions // [])[] | select(.status == "True" and (.type == "Complete" or .type == "Failed"))] | length == 0)}
      | select(.u)] | "\(map(select(.p == "orph-old")) | length) \(map(select(.p == "orph-new")) | length)"'
}
: > "$out/samples"
all_done() { [ "$(lines "$out/done")" -ge $((2 * CAP)) ]; }
t_end=$(( $(date +%s) + 120 ))
while ! all_done && [ "$(date +%s)" -lt "$t_end" ]; do
  unfinished_both >> "$out/samples"
  sleep 0.5
done
over=$(awk -v cap=$CAP '$1 + $2 > cap { n++ } END { print n + 0 }' "$out/samples")
overlap=$(awk '$1 > 0 && $2 == 0 { n++ } END { print n + 0 }' "$out/samples")
check "every message ran ($(lines "$out/done") of $((2 * CAP)))" all_done
check "old + new unfinished Jobs never above maxActiveTotal $CAP ($over of $(lines "$out/samples") samples above)" [ "$over" = 0 ]
check "the renamed pool waited while the orphans ran ($overlap samples with orphans only)" [ "$overlap" -gt 0 ]
once() { [ "$(cut -d' ' -f1 "$out/started" | sort -n | uniq | wc -l)" = $((2 * CAP)) ] && [ "$(lines "$out/started")" = $((2 * CAP)) ]; }
check "each message ran exactly once ($(lines "$out/started") starts)" once
check "no orphan was killed while running (no exit code >= 128)" \
  bash -c "awk '\$2 == \"exited\" && index(\$4, \"orph-old-\") == 1 && \$5 >= 128 { bad = 1 } END { exit bad }' '$E2E_WORK/sim.events'"
trimmed() { [ "$(job_counts orph-old | cut -d' ' -f1)" = 0 ]; }
wait_until 30 trimmed
check "the finished orphans were deleted ($(job_counts orph-old | cut -d' ' -f1) left)" trimmed
n=$(ctrl_metrics | awk '/^jobpool_workers_deleted_total\{pool="orph-old",reason="orphaned"\}/ {print $2}')
check "deleted_total{reason=orphaned} counts the $CAP (${n:-0})" [ "${n:-0}" = $CAP ]
check "the renamed pool's Jobs are kept as history ($(job_counts orph-new | cut -d' ' -f1))" \
  [ "$(job_counts orph-new | cut -d' ' -f1)" = $CAP ]
check_drained e2e.orphans
delete_jobs orph-new
finish
