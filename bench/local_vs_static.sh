#!/usr/bin/env bash
# Local mode against the static pool users would otherwise run (the Kubernetes docs' work-queue
# pattern): drain N tasks of T seconds with jobpool (maxActive M, local backend) and with M
# long-lived `amqp-consume -p 1` consumers, on the same private broker. Prints the drain times
# and their ratio, idle CPU and memory once the queue is empty, and the process counts.
# Asserts nothing about time.   N=300 T=0.5 M=20 bench/local_vs_static.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/env/common.sh"
B=${B:-$root/build}
N=${N:-300}; T=${T:-0.5}; M=${M:-20}; RUNS=${RUNS:-3}; POLL=${POLL:-500ms}
for b in jobpool-controller jobpool-worker jp-publish; do
  [ -x "$B/$b" ] || { echo "bench: build first (make all)" >&2; exit 1; }
done
work=$(mktemp -d /tmp/jobpool-bench.XXXXXX)
pids=()
rmq_dir=""
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$rmq_dir" ] || "$root/tests/env/rabbitmq.sh" stop "$rmq_dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$root/tests/env/rabbitmq.sh" start > "$work/env"
# shellcheck disable=SC1091
. "$work/env"; rmq_dir=$JOBPOOL_RMQ_DIR
url=${JOBPOOL_TEST_AMQP_URL%/}
export RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS
curl -fsS -u "$RABBITMQ_USERNAME:$RABBITMQ_PASSWORD" -X PUT -H 'content-type: application/json' \
  -d '{"durable":true}' "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/bench" >/dev/null
cat > "$work/task.sh" <<EOT
#!/bin/sh
cat > /dev/null
sleep $T
echo x >> "\$BENCH_DONE"
EOT
chmod +x "$work/task.sh"
seq 1 "$N" > "$work/bodies"

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
# cpu_ticks PID...: utime+stime of the processes, in clock ticks
cpu_ticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kib() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/status" ] && t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
wait_done() { # COUNT-FILE N
  local i; for i in $(seq 1 6000); do [ "$(wc -l < "$1")" -ge "$2" ] && return 0; sleep 0.05; done; return 1
}
idle_figures() { # label pid...: CPU% and RSS over 5 s once idle
  local t0 t1; t0=$(cpu_ticks "$@"); sleep 5; t1=$(cpu_ticks "$@")
  local hz; hz=$(getconf CLK_TCK)
  echo "$(awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.2f", 100 * d / hz / 5 }') $(rss_kib "$@")"
}

run_jobpool() {
  local port; port=$(free_port)
  cat > "$work/jp.yaml" <<EOC
pollInterval: $POLL
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml amqp)
pools:
  - name: bench
    queue: bench
    maxActive: $M
    maxStartPerTick: $M
    idleTimeout: 2s
    worker: {command: [jobpool-worker, --, $work/task.sh], env: {BENCH_DONE: $work/done.jp}}
EOC
  export BENCH_DONE=$work/done.jp; : > "$BENCH_DONE"
  "$B/jobpool-controller" --config "$work/jp.yaml" --worker "$B/jobpool-worker" --log-level warn \
    2> "$work/jp.log" & local cpid=$!; pids+=("$cpid")
  sleep 1
  local t0; t0=$(now)
  "$B/jp-publish" "$url" bench < "$work/bodies" 2>/dev/null
  wait_done "$BENCH_DONE" "$N" || { echo "bench: jobpool did not finish" >&2; exit 1; }
  local t1; t1=$(now)
  # Let the last workers exit, then measure the idle controller.
  local i; for i in $(seq 1 100); do [ "$( { ps --ppid "$cpid" --no-headers || true; } | wc -l)" -eq 0 ] && break; sleep 0.1; done
  local procs; procs=$( { ps --ppid "$cpid" --no-headers || true; } | wc -l)
  local idle; idle=$(idle_figures "$cpid")
  local started; started=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^jobpool_workers_started_total/ {print $2}')
  kill -TERM "$cpid"; wait "$cpid" || true
  echo "$(sub "$t1" "$t0") $procs $idle ${started:-?}"
}

run_static() {
  export BENCH_DONE=$work/done.st; : > "$BENCH_DONE"
  local cps=() i
  for i in $(seq 1 "$M"); do
    amqp-consume --url="$url" -q bench -p 1 "$work/task.sh" 2>/dev/null & cps+=($!); pids+=($!)
  done
  sleep 1
  local t0; t0=$(now)
  "$B/jp-publish" "$url" bench < "$work/bodies" 2>/dev/null
  wait_done "$BENCH_DONE" "$N" || { echo "bench: static pool did not finish" >&2; exit 1; }
  local t1; t1=$(now)
  sleep 0.5
  local idle; idle=$(idle_figures "${cps[@]}")
  echo "$(sub "$t1" "$t0") ${#cps[@]} $idle"
  for i in "${cps[@]}"; do kill -TERM "$i" 2>/dev/null || true; wait "$i" 2>/dev/null || true; done
}

echo "bench: $N tasks of ${T}s, $M workers, poll $POLL, $RUNS runs each (broker $(dpkg-query -W -f='${Version}' rabbitmq-server))"
jp=(); st=()
for r in $(seq 1 "$RUNS"); do
  read -r jd jprocs jcpu jrss jstarted < <(run_jobpool)
  read -r sd sprocs scpu srss < <(run_static)
  printf 'run %d: jobpool %6.2f s (%s workers started)   static %6.2f s\n' "$r" "$jd" "$jstarted" "$sd"
  jp+=("$jd"); st+=("$sd")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mj=$(med "${jp[@]}"); ms=$(med "${st[@]}")
echo
printf '%-28s %12s %12s\n' "" jobpool "static pool"
printf '%-28s %12s %12s\n' "median drain time (s)" "$mj" "$ms"
printf '%-28s %12s\n' "ratio jobpool/static" "$(awk -v a="$mj" -v b="$ms" 'BEGIN { printf "%.3f", a / b }')"
printf '%-28s %12s %12s\n' "idle CPU after drain (%)" "$jcpu" "$scpu"
printf '%-28s %12s %12s\n' "idle RSS after drain (KiB)" "$jrss" "$srss"
printf '%-28s %12s %12s\n' "worker processes when empty" "$jprocs" "$sprocs"
