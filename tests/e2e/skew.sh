#!/usr/bin/env bash
# skew: the controller's clock 10 minutes ahead of the API server's, then 10 minutes behind
# (libfaketime preloaded into the controller only; its monotonic clock is left alone, as a
# machine's is when its wall clock is off). pendingTimeout is 5m, so comparing the controller's
# clock with a Job's creationTimestamp would call every new Job timed out at +10 min.
# Proves, for each skew: the log is written on the skewed clock (the skew is really applied),
# no pending_timeout delete happens, exactly one Job per message is made, each message runs
# once and the queue drains, and the controller does not spin (its timed waits hold under
# libfaketime, which returns them at once).
. "$(dirname "$0")/lib.sh"
N=${E2E_SKEW_N:-12}
lib=$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketimeMT.so.1$' | head -n1)
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
  bad "libfaketime is not installed (tests/env/deps.sh test installs faketime)"
  finish; exit 1
fi
run_skew() { # NAME OFFSET SECONDS
  local name=$1 off=$2 want=$3 out cfg
  out=$(scenario_dir "skew-$name")
  declare_queue "e2e.skew.$name"
  cfg="$E2E_WORK/skew-$name.yaml"
  config_header "$cfg" 1s
  pool_yaml "skew-$name" "e2e.skew.$name" "$out" "    maxActive: 20
    pendingTimeout: 5m
    idleTimeout: 10s
    successfulHistory: 50" >> "$cfg"
  say "controller clock $off: $N messages"
  $TOOL publish --queue "e2e.skew.$name" --count "$N" --sleep 2 --log "$out/pub" || bad "publish"
  local ctrl_t0; ctrl_t0=$(date +%s)
  CTRL_ENV="LD_PRELOAD=$lib FAKETIME=$off FAKETIME_DONT_FAKE_MONOTONIC=1" ctrl_start "$cfg"
  done_all() { [ "$(lines "$out/done")" -ge "$N" ]; }
  wait_until 120 done_all
  sleep 3 # three more ticks: a late duplicate would show now
  ctrl_metrics > "$out/metrics"
  # CPU the controller used so far (utime + stime, in clock ticks) against the seconds it ran:
  # libfaketime rewrites every timed wait, and a wait that returns at once made three of its
  # threads spin (2,500 API requests a second) until util_cond_wait_ms.
  local cpu_ticks hz=$(getconf CLK_TCK) ran_s=$(( $(date +%s) - ctrl_t0 ))
  cpu_ticks=$(awk '{print $14 + $15}' "/proc/$CTRL_PID/stat" 2>/dev/null || echo 0)
  ctrl_stop # its last line ("shutting down") is written now, on its clock
  local skew_s
  skew_s=$(( $(date -d "$(tail -n1 "$CTRL_LOG" | cut -d' ' -f1)" +%s) - $(date +%s) ))
  read -r total complete _ unfinished <<< "$(job_counts "skew-$name")"
  local timeouts
  timeouts=$(awk -v p="skew-$name" 'index($0, "jobpool_workers_deleted_total{pool=\"" p "\",reason=\"pending_timeout\"}") == 1 {print $2}' "$out/metrics")
  check "[$off] the controller's log clock is off by about $off (${skew_s}s)" \
    [ $(( skew_s - want < 60 && want - skew_s < 60 )) = 1 ]
  check "[$off] no busy loop under the faked clock: $((cpu_ticks * 1000 / hz)) ms of CPU in ${ran_s} s" \
    [ $(( cpu_ticks * 1000 / hz < ran_s * 300 )) = 1 ]
  check "[$off] no pending_timeout delete (${timeouts:-0})" [ "${timeouts:-0}" = 0 ]
  check "[$off] exactly one Job per message: $total Jobs for $N" [ "$total" = "$N" ]
  check "[$off] every Job completed ($complete), none left ($unfinished)" \
    bash -c "[ '$complete' = '$N' ] && [ '$unfinished' = 0 ]"
  once() { [ "$(cut -d' ' -f1 "$out/started" | sort -un | wc -l)" = "$N" ] && [ "$(lines "$out/started")" = "$N" ]; }
  check "[$off] each message ran exactly once ($(lines "$out/started") starts)" once
  check_drained "e2e.skew.$name"
  delete_jobs "skew-$name"
}
run_skew ahead +10m 600
run_skew behind -10m -600
finish
