#!/usr/bin/env bash
# failures: the task fails for 10% of the messages. Proves: a failing message is run exactly
# maxAttempts times, the dead-letter queue then holds exactly the poison messages, the others
# run once, and the failed-Job history is trimmed to failedHistory.
. "$(dirname "$0")/lib.sh"
N=${E2E_FAIL_N:-100}; ATTEMPTS=2; SH=10; FH=3
out=$(scenario_dir failures)
declare_dlq e2e.dlx e2e.failures.dlq
declare_queue e2e.failures '{"x-dead-letter-exchange":"e2e.dlx"}'
cfg="$E2E_WORK/failures.yaml"
config_header "$cfg" 1s
pool_yaml failures e2e.failures "$out" "    maxActive: 20
    maxStartPerTick: 20
    maxAttempts: $ATTEMPTS
    idleTimeout: 10s
    successfulHistory: $SH
    failedHistory: $FH" >> "$cfg"
ctrl_start "$cfg"
ctrl_window_begin
say "publishing $N messages, every 10th fails"
$TOOL publish --queue e2e.failures --count "$N" --fail-mod 10 --log "$out/pub" || bad "publish"
poison=$(( N / 10 ))
done_all() { [ "$(lines "$out/done")" -ge $(( N - poison )) ] && [ "$($TOOL peek --queue e2e.failures.dlq | wc -l)" -ge "$poison" ]; }
wait_until $(( 120 + N * 3 )) done_all
figs=$(ctrl_figures)
settled() { set -- $(job_counts failures); [ "$4" = 0 ] && [ "$2" -le "$SH" ] && [ "$3" -le "$FH" ] && [ "$(sim_running failures)" = 0 ]; }
wait_until 90 settled
read -r total complete failedj unfinished <<< "$(job_counts failures)"
seq 10 10 "$N" > "$out/poison.expected"
$TOOL peek --queue e2e.failures.dlq | sort -n > "$out/dlq"
check "the dead-letter queue holds exactly the $poison poison messages" diff -q "$out/dlq" "$out/poison.expected"
check "good messages each ran once" bash -c "cut -d' ' -f1 '$out/done' | sort -n | diff -q - <(seq 1 $N | awk '\$1 % 10')"
attempts_ok() { cut -d' ' -f1 "$out/failed" | sort -n | uniq -c | awk -v a="$ATTEMPTS" '$1 != a { bad = 1 } END { exit bad }'; }
check "each poison message ran exactly maxAttempts=$ATTEMPTS times ($(lines "$out/failed") failed runs)" attempts_ok
check "attempt numbers 1..$ATTEMPTS" bash -c "[ \"\$(cut -d' ' -f4 '$out/failed' | sort -u | tr '\n' ' ')\" = \"$(seq -s ' ' 1 $ATTEMPTS) \" ]"
check "failed-Job history kept at failedHistory $FH (have $failedj)" [ "$failedj" = "$FH" ]
check "successful history at $SH (have $complete)" [ "$complete" = "$SH" ]
check "nothing active at the end" [ "$unfinished" = 0 ]
check_drained e2e.failures
rep=$($TOOL report --pub "$out/pub" --jobs "$E2E_WORK/jobs.events" --started "$out/started" \
  --sim "$E2E_WORK/sim.events" --pool failures)
figures failures "$rep" "$figs"
delete_jobs failures
finish
