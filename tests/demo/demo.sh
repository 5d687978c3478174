#!/usr/bin/env bash
# make demo: jobpool's main job on one machine, no cluster needed.
# Starts a private RabbitMQ, runs the controller with the local backend, publishes a burst of
# tasks (each sleeps 0.2-2 s and writes a line), shows one line per second while workers rise
# to maxActive, drain the queue and fall back to zero, then prints a summary and writes a
# timeline CSV and a PNG plot under demo-out/. Every process it started is stopped at the end.
#   DEMO_TASKS=200 DEMO_MAX=20 tests/demo/demo.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tests/env/common.sh"
B=${B:-$root/build}
tasks=${DEMO_TASKS:-200}
max=${DEMO_MAX:-20}
out=${DEMO_OUT:-$root/demo-out}
ctl=$B/jobpool-controller
worker=$B/jobpool-worker
[ -x "$ctl" ] && [ -x "$worker" ] && [ -x "$B/jp-publish" ] || { echo "demo: build first (make all)" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d /tmp/jobpool-demo.XXXXXX)
ctl_pid=""
rmq_dir=""
cleanup() {
  [ -z "$ctl_pid" ] || { kill -TERM "$ctl_pid" 2>/dev/null; wait "$ctl_pid" 2>/dev/null || true; }
  [ -z "$rmq_dir" ] || "$root/tests/env/rabbitmq.sh" stop "$rmq_dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "demo: starting RabbitMQ (about 15 s)..."
"$root/tests/env/rabbitmq.sh" start > "$work/rmq.env"
# shellcheck disable=SC1091
. "$work/rmq.env"
rmq_dir=$JOBPOOL_RMQ_DIR
mgmt() { curl -fsS -u "$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS" "$@"; }
mgmt -X PUT -H 'content-type: application/json' -d '{"durable":true}' \
  "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/demo-tasks" >/dev/null

metrics_port=$(free_port)
cat > "$work/task.sh" <<'EOT'
#!/bin/sh
# A demo task: the message body is how long to work, in seconds.
read -r task secs
start=$(date +%s.%N)
sleep "$secs"
echo "$task $JOBPOOL_MESSAGE_ID $start $(date +%s.%N)" >> "$DEMO_DONE"
EOT
chmod +x "$work/task.sh"
cat > "$work/config.yaml" <<EOC
pollInterval: 500ms
backend: local
log: {format: text, level: info}
metrics: {address: "127.0.0.1:$metrics_port"}
$(rabbitmq_yaml amqp)
pools:
  - name: demo
    queue: demo-tasks
    maxActive: $max
    maxStartPerTick: $max
    idleTimeout: 2s
    worker:
      command: [jobpool-worker, --, $work/task.sh]
      env: {DEMO_DONE: $work/done.log}
EOC
"$ctl" --check-config "$work/config.yaml" >/dev/null

export DEMO_DONE="$work/done.log" RABBITMQ_USERNAME="$JOBPOOL_TEST_RMQ_USER" RABBITMQ_PASSWORD="$JOBPOOL_TEST_RMQ_PASS"
: > "$DEMO_DONE"
# As the image runs it: GnuTLS, which libcurl's dependencies load but never use, not started.
GNUTLS_NO_IMPLICIT_INIT=1 "$ctl" --config "$work/config.yaml" --worker "$worker" > "$out/controller.log" 2>&1 &
ctl_pid=$!

echo "demo: publishing $tasks tasks of 0.2-2 s each to queue demo-tasks"
python3 - "$tasks" > "$work/bodies" <<'EOP'
import random, sys
random.seed(7)
for i in range(int(sys.argv[1])):
    print("task-%d %.1f" % (i + 1, random.uniform(0.2, 2.0)))
EOP
t0=$(date +%s.%N)
amqp_url="${JOBPOOL_TEST_AMQP_URL%/}"  # no trailing "/": amqp-tools reads that as vhost ""
"$B/jp-publish" "$amqp_url" demo-tasks --confirm < "$work/bodies" 2>/dev/null

children() { { ps --ppid "$ctl_pid" --no-headers 2>/dev/null || true; } | wc -l; }
metric() { # NAME STATE-or-empty
  local line
  line=$(curl -fsS -m 1 "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep "^$1{" | grep "pool=\"demo\"" | grep "${2:-}" | head -n1) || true
  echo "${line##* }" | cut -d. -f1
}
echo "time_s,ready,workers,pending,running,done" > "$out/timeline.csv"
printf '%6s %7s %8s %8s %8s %6s %9s\n' time ready workers pending running done "rate/s"
peak=0; last_done=0; idle_ticks=0; deadline=$(( $(date +%s) + 600 ))
while :; do
  sleep 1
  now=$(date +%s.%N)
  t=$(awk -v a="$now" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
  ready=$(metric jobpool_queue_messages_ready); ready=${ready:-0} # the controller's own reading
  procs=$(children)
  pending=$(metric jobpool_workers 'state="pending"'); running=$(metric jobpool_workers 'state="running"')
  done_n=$(wc -l < "$DEMO_DONE")
  [ "$procs" -gt "$peak" ] && peak=$procs
  printf '%6s %7s %8s %8s %8s %6s %9s\n' "$t" "$ready" "$procs" "${pending:-0}" "${running:-0}" "$done_n" "$((done_n - last_done))"
  echo "$t,$ready,$procs,${pending:-0},${running:-0},$done_n" >> "$out/timeline.csv"
  last_done=$done_n
  if [ "$done_n" -ge "$tasks" ] && [ "$procs" -eq 0 ]; then idle_ticks=$((idle_ticks + 1)); fi
  [ "$idle_ticks" -ge 2 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { echo "demo: gave up after 600 s" >&2; break; }
done

started=$(metric jobpool_workers_started_total); wasted=$(metric jobpool_workers_wasted_total)
uniq_done=$(awk '{print $1}' "$DEMO_DONE" | sort -u | wc -l)
task_peak=$(awk '{print $(NF-1), 1; print $NF, -1}' "$DEMO_DONE" | sort -n | awk '{c+=$2; if (c>m) m=c} END {print m+0}')
drain=$(tail -n1 "$out/timeline.csv" | cut -d, -f1)
cat <<EOS

demo summary
  tasks published        $tasks
  tasks completed        $(wc -l < "$DEMO_DONE") ($uniq_done distinct)
  workers started        ${started:-?}
  wasted workers         ${wasted:-?} (found no task)
  peak workers           $peak (maxActive $max); peak tasks running at once: $task_peak
  workers left running   $(children)
  elapsed                ${drain} s
EOS
if command -v gnuplot >/dev/null; then
  gnuplot <<EOG
set terminal pngcairo size 900,450 noenhanced
set output "$out/timeline.png"
set datafile separator ","
set title "jobpool demo: $tasks tasks, maxActive $max"
set xlabel "seconds"
set ylabel "count"
set key top right
plot "$out/timeline.csv" using 1:2 with lines lw 2 title "queue ready", \
     "" using 1:3 with lines lw 2 title "workers", \
     "" using 1:6 with lines lw 2 title "tasks done"
EOG
  echo "  plot                   $out/timeline.png"
fi
echo "  timeline               $out/timeline.csv"
echo "  controller log         $out/controller.log"
[ "$uniq_done" -eq "$tasks" ]
