#!/usr/bin/env bash
# Benchmark of Job creates and lists against a real kube-apiserver: starts its own control plane
# (tests/env/kube.sh) unless KUBECONFIG points at one already (JOBPOOL_KUBE_DIR set), builds
# bench/kube_bench.c and prints a markdown table. Asserts nothing.
#   bench/kube_jobs.sh [CREATE_N [LIST_N]]     (defaults 200 and 5000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
B=${B:-build}
make --no-print-directory -s B="$B" "$B/bench/kube_bench" >&2
if [ -z "${JOBPOOL_KUBE_DIR:-}" ]; then
  env_file=$(mktemp)
  "$root/tests/env/kube.sh" start > "$env_file"
  # shellcheck disable=SC1090
  . "$env_file"; rm -f "$env_file"
  trap '"$root/tests/env/kube.sh" stop "$JOBPOOL_KUBE_DIR"' EXIT
fi
echo "## Kubernetes API: $(date -u +%Y-%m-%d)"
echo
echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
     "$(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
echo "- server: $("$(readlink -f "$HOME/.cache/jobpool/kube/current")/kube-apiserver" --version 2>/dev/null || echo kube-apiserver) with etcd $(etcd --version | sed -n 's/^etcd Version: //p'), on loopback with the client"
echo "- client: libcurl $(pkg-config --modversion libcurl); Jobs with parallelism 0 (no pods)"
echo
"$root/$B/bench/kube_bench" "$@"
