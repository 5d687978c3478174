#!/usr/bin/env bash
# bench/latency.sh: issue 16's target 3. Runs the e2e latency scenario (tests/e2e/latency.sh:
# real RabbitMQ, kube-apiserver, Job controller, node simulator; 60 messages at random gaps of
# 0.5-3 s, once with depthSource amqp and once with the management source, default 2 s poll)
# and prints publish -> Job created, -> pod running and -> task start, with the management
# API's own lag beside them, plus the machine, versions and load. Asserts nothing about time;
# the scenario's checks decide the exit code. B: the build dir; E2E_LAT_N, E2E_LAT_SOURCES,
# E2E_POLL, E2E_LAT_MGMT_LAG (rabbitmq.managementLag for the management run) as in the scenario;
# JOBPOOL_RMQ_CONF (tests/env/rabbitmq.sh) tunes the broker, e.g. its statistics intervals:
#   JOBPOOL_RMQ_CONF=$'collect_statistics_interval = 1000\nmanagement.sample_retention_policies.global.minute = 1\n...' \
#     E2E_LAT_SOURCES=management E2E_LAT_MGMT_LAG=2s bench/latency.sh   (docs/rabbitmq.md)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
figs=$(mktemp -d /tmp/jobpool-bench-lat.XXXXXX)
trap '[ -z "${KEEP:-}" ] || { mkdir -p "$KEEP" && cp -r "$figs"/. "$KEEP"/; }; rm -rf "$figs"' EXIT
load0=$(cut -d' ' -f1-3 /proc/loadavg)
E2E_FIGURES_OUT=$figs "$root/tests/e2e/run.sh" latency
rc=$?
load1=$(cut -d' ' -f1-3 /proc/loadavg)
kv=$(readlink "${XDG_CACHE_HOME:-$HOME/.cache}/jobpool/kube/current" 2>/dev/null)
echo
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "versions: RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null), kube-apiserver ${kv:-?}, etcd $(dpkg-query -W -f '${Version}' etcd-server 2>/dev/null), jobpool $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"
echo "load average (1, 5, 15 min): $load0 at the start, $load1 at the end"
s() { awk -v x="$1" 'BEGIN { if (x == "" || x == "null") print "-"; else printf "%.2f", x / 1000 }'; }
echo
echo "| depth source | poll | messages | publish→Job created p50 / p99 / max s | publish→pod running p50 / p99 s | publish→task start p50 / p99 s | management lag p50 / p90 / p99 / max s | waste |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for f in "$figs"/latency-*.json; do
  [ -f "$f" ] || continue
  j() { jq -r "$1 // \"\"" "$f"; }
  printf '| %s | %s | %s | %s / %s / %s | %s / %s | %s / %s | %s / %s / %s / %s | %s |\n' \
    "$(j .source)" "$(j .poll)" "$(j .messages)" \
    "$(s "$(j .pub_to_job_p50_ms)")" "$(s "$(j .pub_to_job_p99_ms)")" "$(s "$(j .pub_to_job_max_ms)")" \
    "$(s "$(j .pub_to_pod_p50_ms)")" "$(s "$(j .pub_to_pod_p99_ms)")" \
    "$(s "$(j .pub_to_task_p50_ms)")" "$(s "$(j .pub_to_task_p99_ms)")" \
    "$(s "$(j .lag_p50_ms)")" "$(s "$(j .lag_p90_ms)")" "$(s "$(j .lag_p99_ms)")" "$(s "$(j .lag_p100_ms)")" \
    "$(j .waste_ratio)"
done
exit $rc
