#!/usr/bin/env bash
# The controller's own cost at scale, against the real API server and broker: P pools with M
# ready messages each and no kubelet, so the controller creates P*M Jobs that stay pending (their
# pods too). Once every Job exists it measures the steady state for W seconds: peak RSS (VmHWM),
# private dirty memory (smaps_rollup), CPU per tick, and API requests per tick (from the API
# server's audit log, by the controller's user agent). Prints figures, asserts nothing.
#   P=100 M=50 W=60 bench/controller_scale.sh
# HEAP=1: glibc's figures for the heap (in use, free), before and after a malloc_trim.
# MASSIF=1: afterwards, a second controller under massif against the same Jobs; prints where
# the heap's peak goes.
# CALLGRIND=1: afterwards, a second controller under callgrind (Debian's valgrind) against the
# same Jobs, collecting only inside reconcile_pass and dumping after each one, so that each dump
# is one tick; prints the instructions of the last tick it finished and its largest costs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/tests/env/common.sh"
B=${B:-$root/build}
P=${P:-100}; M=${M:-50}; W=${W:-60}; POLL_S=2
for b in jobpool-controller jp-publish; do [ -x "$B/$b" ] || { echo "bench: build first" >&2; exit 1; }; done
work=$(mktemp -d /tmp/jobpool-scale.XXXXXX)
ctl=""; rmq_dir=""; kube_dir=""
cleanup() {
  [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null || true; }
  [ -z "$kube_dir" ] || "$root/tests/env/kube.sh" stop "$kube_dir" >/dev/null 2>&1 || true
  [ -z "$rmq_dir" ] || "$root/tests/env/rabbitmq.sh" stop "$rmq_dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$root/tests/env/rabbitmq.sh" start > "$work/rmq.env"; . "$work/rmq.env"; rmq_dir=$JOBPOOL_RMQ_DIR
JOBPOOL_KUBE_AUDIT=1 JOBPOOL_KUBE_KCM_QPS=200 "$root/tests/env/kube.sh" start > "$work/kube.env"
. "$work/kube.env"; kube_dir=$JOBPOOL_KUBE_DIR
export RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS
k() { curl -sS --cacert "$JOBPOOL_TEST_KUBE_CA" -H "Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN" "$JOBPOOL_TEST_KUBE_SERVER$1"; }
# The private control plane's default namespace holds only this run's objects; a list with a
# label selector has no remainingItemCount, so count without one.
count() { k "$1?limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]) + d["metadata"].get("remainingItemCount", 0))'; }
count_jobs() { count /apis/batch/v1/namespaces/default/jobs; }
count_pods() { count /api/v1/namespaces/default/pods; }

cat > "$work/config.yaml" <<EOC
pollInterval: ${POLL_S}s
backend: kube
metrics: {address: ""}
$(rabbitmq_yaml)
kubernetes: {inCluster: false, kubeconfig: $KUBECONFIG, namespace: default, qps: 200}
pools:
EOC
for i in $(seq 1 "$P"); do
  q=$(printf 'scale-%03d' "$i")
  curl -fsS -u "$RABBITMQ_USERNAME:$RABBITMQ_PASSWORD" -X PUT -H 'content-type: application/json' \
    -d '{"durable":true}' "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/$q" >/dev/null
  seq 1 "$M" | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$q" 2>/dev/null
  cat >> "$work/config.yaml" <<EOC
  - name: $q
    queue: $q
    maxActive: $M
    maxStartPerTick: $M
    pendingTimeout: 1h
    jobTemplate: {template: {spec: {restartPolicy: Never, containers: [{name: w, image: example/w:1}]}}}
EOC
done
# As in the image (Dockerfile): GnuTLS is loaded (through libcurl) but never initialised.
GNUTLS_NO_IMPLICIT_INIT=1 "$B/jobpool-controller" --config "$work/config.yaml" --log-level warn 2> "$work/ctl.log" &
ctl=$!
t0=$(date +%s)
# RSS_TRACE=FILE: the controller's RSS every half second from its start ("seconds KiB"), to
# tell when the peak is made.
tracer=""
if [ -n "${RSS_TRACE:-}" ]; then
  ( while kill -0 "$ctl" 2>/dev/null; do
      echo "$(date +%s.%N | cut -c1-14) $(awk '/VmRSS/ {print $2}' /proc/$ctl/status 2>/dev/null)"
      sleep 0.5
    done > "$RSS_TRACE" ) &
  tracer=$!
fi
for _ in $(seq 1 600); do
  [ "$(count_jobs)" -ge $((P * M)) ] && [ "$(count_pods)" -ge $((P * M)) ] && break
  sleep 2
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench: $(count_jobs) Jobs and $(count_pods) pods after $(( $(date +%s) - t0 )) s"
sleep 10 # let the last events settle
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$ctl/stat"; }
reqs() { grep -c '"userAgent":"jobpool/' "$kube_dir/log/audit.log" || true; }
c0=$(cpu); r0=$(reqs); s0=$(date +%s.%N)
sleep "$W"
c1=$(cpu); r1=$(reqs); s1=$(date +%s.%N)
ticks=$(awk -v a="$s0" -v b="$s1" -v p="$POLL_S" 'BEGIN { printf "%d", (b - a) / p }')
echo
echo "steady state: $P pools, $((P * M)) live Jobs, ${W}s (${ticks} ticks of ${POLL_S}s)"
printf '  %-34s %s\n' "peak RSS (VmHWM)" "$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$ctl/status)"
printf '  %-34s %s\n' "RSS now" "$(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$ctl/status)"
printf '  %-34s %s\n' "private dirty (smaps_rollup)" "$(awk '/Private_Dirty/ {printf "%.1f MiB", $2/1024}' /proc/$ctl/smaps_rollup)"
printf '  %-34s %s\n' "CPU per tick" "$(awk -v d=$((c1 - c0)) -v hz="$hz" -v t="$ticks" 'BEGIN { printf "%.1f ms", 1000 * d / hz / t }')"
printf '  %-34s %s\n' "API requests per tick (steady)" "$(awk -v d=$((r1 - r0)) -v t="$ticks" 'BEGIN { printf "%.2f", d / t }')"
printf '  %-34s %s\n' "threads" "$(awk '/Threads/ {print $2}' /proc/$ctl/status)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# SMAPS=file: keep the controller's whole smaps, to see which mappings hold the memory (the
# heap, the other threads' malloc arenas, thread stacks, libraries).
[ -z "${SMAPS:-}" ] || cp "/proc/$ctl/smaps" "$SMAPS"
if [ -n "$tracer" ]; then
  kill "$tracer" 2>/dev/null || true
  # In the steady window the RSS moves with the ticks: the tick's snapshot is given back when
  # the pass ends, so the lowest samples are between ticks and the highest inside one.
  awk -v t0="$t0" -v a="$s0" -v b="$s1" 'NF == 2 && $2 > max {max = $2; at = $1}
    NF == 2 && $1 >= a && $1 <= b { if (!lo || $2 < lo) lo = $2; if ($2 > hi) hi = $2 } END {
    if (max) printf "  %-34s %.1f MiB, %.0f s after the start\n", "RSS trace: highest sample", max / 1024, at - t0
    if (lo) printf "  %-34s %.1f MiB lowest (between ticks), %.1f MiB highest\n", "RSS trace: steady window", lo / 1024, hi / 1024 }' "$RSS_TRACE"
fi
# HEAP=1: how much of that is free space inside the heap: glibc's own figures (malloc_stats,
# through Debian's gdb), then the same figures after malloc_trim(0) gives back every free page.
if [ "${HEAP:-0}" = 1 ]; then
  heapstat() {
    local n; n=$(wc -l < "$work/ctl.log")
    gdb -p "$ctl" -batch -ex 'call (void) malloc_stats()' >/dev/null 2>&1 || true
    sleep 0.2
    # malloc_stats: one arena (M_ARENA_MAX 1), then the totals with the mmapped blocks. gdb
    # cannot call into a controller whose binary was rebuilt meanwhile: then nothing prints.
    tail -n +"$((n + 1))" "$work/ctl.log" | awk '/bytes/ {v[++k] = $NF} END {
      if (k >= 4) printf "  %-34s %.1f MiB mapped, %.1f MiB in use; with mmapped blocks %.1f / %.1f MiB\n",
        "glibc heap", v[1] / 1048576, v[2] / 1048576, v[3] / 1048576, v[4] / 1048576
      else print "  glibc: no figures (gdb could not call malloc_stats)" }'
    printf '  %-34s %s\n' "RSS / private dirty $1" "$(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$ctl/status) / $(awk '/Private_Dirty/ {printf "%.1f MiB", $2/1024}' /proc/$ctl/smaps_rollup)"
  }
  heapstat "now"
  gdb -p "$ctl" -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1 || true
  heapstat "after malloc_trim"
fi

[ "${CALLGRIND:-0}" = 1 ] || [ "${MASSIF:-0}" = 1 ] || exit 0
kill -TERM "$ctl"; wait "$ctl" 2>/dev/null || true; ctl=""
if [ "${MASSIF:-0}" = 1 ]; then
  # Where the heap goes: a second controller under massif (Debian's valgrind) against the same
  # Jobs for MASSIF_S seconds (its first list, then steady ticks); the peak snapshot's tree.
  ms=${MASSIF_OUT:-$work/massif.out}
  GNUTLS_NO_IMPLICIT_INIT=1 valgrind --tool=massif --threshold=2 --massif-out-file="$ms" \
    "$B/jobpool-controller" --config "$work/config.yaml" --log-level warn 2> "$work/ms.log" &
  ctl=$!
  sleep "${MASSIF_S:-90}"
  kill -TERM "$ctl"; wait "$ctl" 2>/dev/null || true; ctl=""
  echo
  echo "massif ($P pools, $((P * M)) Jobs, ${MASSIF_S:-90} s): $ms"
  ms_print "$ms" | sed -n '/Detailed snapshots/,$p' | awk '/\(peak\)/ {p = 1} p' | sed -n '1,80p'
  exit 0
fi
cg=${CG_OUT:-$work/cg}; mkdir -p "$cg"
GNUTLS_NO_IMPLICIT_INIT=1 valgrind --tool=callgrind --toggle-collect=reconcile_pass --dump-after=reconcile_pass \
  --callgrind-out-file="$cg/callgrind.out" \
  "$B/jobpool-controller" --config "$work/config.yaml" --log-level warn 2> "$work/cg.log" &
ctl=$!
# Until two ticks after the first one that saw the Job cache (ticks before it return early).
for _ in $(seq 1 ${CG_WAIT:-300}); do
  [ "$(find "$cg" -name 'callgrind.out.*' -size +20k | wc -l)" -ge 3 ] && break
  sleep 2
done
kill -TERM "$ctl"; wait "$ctl" 2>/dev/null || true; ctl=""
last=$(find "$cg" -name 'callgrind.out.*' -size +20k | sort -t. -k3 -n | tail -n 2 | head -n 1)
[ -n "$last" ] || { echo "callgrind: no full tick dumped (see $work/cg.log)"; exit 1; }
echo
echo "callgrind, one tick ($P pools, $((P * M)) Jobs): $(basename "$last")"
callgrind_annotate --inclusive=yes "$last" 2>/dev/null | sed -n '1,40p' | grep -v '^$'
echo "-- self cost --"
callgrind_annotate "$last" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '1,20p'
