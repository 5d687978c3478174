#!/usr/bin/env bash
# Bursts of Job creates on a real API server, as the controller's own identity would make them:
# a ServiceAccount with the controller's Role, not the admin (whose group, system:masters, the
# server exempts from its in-flight limits). Starts its own control plane (tests/env/kube.sh),
# builds bench/kube_bench.c and runs `kube_bench burst`. Asserts nothing about time.
#   N=1000 bench/kube_burst.sh [QPS BURST ...]    (default: the client's defaults, then none)
#   JOBPOOL_KUBE_MAX_MUTATING=4 bench/kube_burst.sh   provokes the server's 429s
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
B=${B:-build}
N=${N:-1000}
make --no-print-directory -s B="$B" "$B/bench/kube_bench" >&2
env_file=$(mktemp)
"$root/tests/env/kube.sh" start > "$env_file"
# shellcheck disable=SC1090
. "$env_file"; rm -f "$env_file"
trap '"$root/tests/env/kube.sh" stop "$JOBPOOL_KUBE_DIR" >/dev/null 2>&1' EXIT
PATH="$("$root/tests/env/tools.sh"):$PATH"
kubectl create serviceaccount jp-bench >/dev/null
kubectl create role jp-bench --verb=create,list,watch,get,delete,deletecollection \
  --resource=jobs.batch >/dev/null
kubectl create rolebinding jp-bench --role=jp-bench --serviceaccount=default:jp-bench >/dev/null
tok=""
for _ in $(seq 1 60); do
  s=$(kubectl get serviceaccount jp-bench -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
  [ -n "$s" ] && tok=$(kubectl get secret "$s" -o jsonpath='{.data.token}' | base64 -d) && break
  sleep 0.5
done
[ -n "$tok" ] || { echo "kube_burst: no token for the ServiceAccount" >&2; exit 1; }
kc=$JOBPOOL_KUBE_DIR/bench.kubeconfig
sed -e '/tokenFile:/d' -e "s|^  user:\$|  user:\n    token: $tok|" "$KUBECONFIG" > "$kc"
echo "## Job bursts: $(date -u +%Y-%m-%d)"
echo
echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "- server: $("$(readlink -f "$HOME/.cache/jobpool/kube/current")/kube-apiserver" --version 2>/dev/null), max-mutating-requests-inflight ${JOBPOOL_KUBE_MAX_MUTATING:-200 (default, priority and fairness on)}"
echo "- client: a ServiceAccount's token, concurrency 8; Jobs with parallelism 0 (no pods)"
echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
[ $# -gt 0 ] || set -- 0 0 -1 10
KUBECONFIG=$kc "$root/$B/bench/kube_bench" burst "$N" "$@"
echo
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
