#!/usr/bin/env bash
# Benchmark of RabbitMQ depth reads: starts its own broker (tests/env/rabbitmq.sh), builds
# bench/rmq_depth.c, prints machine and broker versions and the figures. Asserts nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
B=${B:-build}
make --no-print-directory -s B="$B" "$B/bench/rmq_depth" >&2
env_file=$(mktemp)
"$root/tests/env/rabbitmq.sh" start > "$env_file"
# shellcheck disable=SC1090
. "$env_file"; rm -f "$env_file"
trap '"$root/tests/env/rabbitmq.sh" stop "$JOBPOOL_RMQ_DIR"' EXIT

echo "## RabbitMQ depth reads: $(date -u +%Y-%m-%d)"
echo
echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
     "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
curl -fsS -u "$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS" "$JOBPOOL_TEST_MGMT_URL/api/overview" |
  python3 -c 'import json,sys; o=json.load(sys.stdin); print("- broker: RabbitMQ %s on Erlang %s, default statistics interval" % (o["rabbitmq_version"], o["erlang_version"]))'
echo "- client: libcurl $(pkg-config --modversion libcurl), librabbitmq $(pkg-config --modversion librabbitmq), broker and client on the same loopback"
echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
"$root/$B/bench/rmq_depth"
echo
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
