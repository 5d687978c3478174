#!/usr/bin/env bash
# jobpool_leader: two controllers with leader election serving one JobPool. Proves, from the
# API server's audit log (each replica's identity is in its user agent):
# - while one leads, every JobPool status write comes from it, none from the follower;
# - after the leader is SIGKILLed mid-run, the new leader writes the status (it follows a
#   spec change: observedGeneration), no status write comes from the old one after the new
#   leader's first, and every message is done exactly once.
. "$(dirname "$0")/lib.sh"
POLL=1
out=$(scenario_dir jobpool_leader)
bin=$("$E2E_HERE/../env/tools.sh") || { bad "tests/env/tools.sh could not install kubectl"; finish; exit 1; }
kc() { "$bin/kubectl" "$@" 2> >(grep -v 'version skew\|^WARNING: version difference' >&2); }
kc apply -f "$E2E_HERE/../../charts/jobpool/crds/jobpools.jobpool.dev.yaml" >/dev/null &&
  kc wait --for condition=established --timeout=60s crd/jobpools.jobpool.dev >/dev/null ||
  { bad "the CRD does not install"; finish; exit 1; }
declare_queue e2e.jpl
audit="$JOBPOOL_KUBE_DIR/log/audit.log"
[ -f "$audit" ] || { bad "no audit log at $audit (run.sh starts the API server with JOBPOOL_KUBE_AUDIT=1)"; finish; exit 1; }

# Two replicas: each its own config (metrics port), one Lease.
declare -A cpid cport clog
start_replica() { # NAME
  local cfg="$E2E_WORK/jpl-$1.yaml"
  config_header "$cfg" ${POLL}s
  cport[$1]=$CTRL_METRICS_PORT
  sed -i 's/^pools:$/leaderElection: {enabled: true, leaseName: jpl-leader, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 1s}\npools: []/' "$cfg"
  clog[$1]="$E2E_WORK/jpl-$1.log"
  RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS \
    "$CONTROLLER" --config "$cfg" >>"${clog[$1]}" 2>&1 </dev/null &
  cpid[$1]=$!
  echo "$!" >> "$E2E_WORK/controller.pids"
}
ident() { sed -n 's/.*leader election on lease jpl-leader as \(.*\)$/\1/p' "${clog[$1]}" | head -1; }
leads() { [ "$(curl -fsS -m 1 "http://127.0.0.1:${cport[$1]}/metrics" 2>/dev/null | awk '/^jobpool_leader / {print $2}')" = 1 ]; }
# "MS IDENTITY" per JobPool status write, in order.
writes() {
  python3 - "$audit" <<'PY'
import json, re, sys
sys.path.insert(0, "")
for line in open(sys.argv[1]):
    if "/jobpools/jl/status" not in line:
        continue
    ev = json.loads(line)
    if ev.get("verb") != "patch" or ev.get("stage") != "ResponseComplete":
        continue
    code = (ev.get("responseStatus") or {}).get("code", 0)
    m = re.search(r"\((.*)\)", ev.get("userAgent", ""))
    print(ev["requestReceivedTimestamp"], m.group(1) if m else "?", code)
PY
}
apply_pool() { # MAXACTIVE
  kc apply -f - >/dev/null <<EOF
apiVersion: jobpool.dev/v1alpha1
kind: JobPool
metadata: {name: jl, namespace: default}
spec:
  queue: e2e.jpl
  maxActive: $1
  idleTimeout: 10s
$(worker_template '  ' "$out")
EOF
}

start_replica a; sleep 0.5; start_replica b
wait_until 20 bash -c "[ -n \"\$(sed -n 's/.*leader election on lease jpl-leader as //p' '${clog[a]}')\" ] && [ -n \"\$(sed -n 's/.*leader election on lease jpl-leader as //p' '${clog[b]}')\" ]"
one_leads() { leads a || leads b; }
wait_until 20 one_leads
if leads a; then L=a; F=b; else L=b; F=a; fi
idL=$(ident $L); idF=$(ident $F)
say "leader $L ($idL), follower $F ($idF)"
check "the replicas have distinct identities" [ -n "$idL" ] && [ "$idL" != "$idF" ]

apply_pool 3
N=14
$TOOL publish --queue e2e.jpl --count $N --sleep 2 --log "$out/pub" || bad "publish"
half() { [ "$(lines "$out/done")" -ge 5 ]; }
wait_until 90 half
writes > "$out/writes.before"
check "status written while $L leads ($(wc -l < "$out/writes.before") writes)" [ -s "$out/writes.before" ]
check "every status write so far is the leader's, none the follower's" \
  bash -c "! awk '{print \$2}' '$out/writes.before' | grep -vxF '$idL' >/dev/null"

kill -KILL "${cpid[$L]}"; wait "${cpid[$L]}" 2>/dev/null
took_over() { leads $F; }
wait_until 15 took_over
check "$F took over after the SIGKILL" leads $F
apply_pool 4
gen=$(kc get jobpool jl -o jsonpath='{.metadata.generation}')
follows() { [ "$(kc get jobpool jl -o jsonpath='{.status.observedGeneration}')" = "$gen" ]; }
wait_until 15 follows
check "the new leader's status follows the change (observedGeneration $gen)" follows
done_all() { [ "$(lines "$out/done")" -ge $N ]; }
wait_until 120 done_all
check "all $N messages done ($(lines "$out/done"))" [ "$(lines "$out/done")" = $N ]
check "each exactly once" [ "$(cut -d' ' -f1 "$out/done" | sort -u | wc -l)" = $N ]
writes > "$out/writes.after"
first_new=$(awk -v id="$idF" '$2 == id {print $1; exit}' "$out/writes.after")
check "the new leader wrote the status (first at ${first_new:-never})" [ -n "$first_new" ]
late=$(awk -v id="$idL" -v t="$first_new" '$2 == id && $1 > t' "$out/writes.after" | wc -l)
check "no status write from the old leader after the new leader's first ($late)" [ "$late" = 0 ]
check "every status write is from one of the two replicas" \
  bash -c "! awk '{print \$2}' '$out/writes.after' | grep -vxF -e '$idL' -e '$idF' >/dev/null"

kill -TERM "${cpid[$F]}" 2>/dev/null; wait "${cpid[$F]}" 2>/dev/null
kc delete jobpool jl --wait=false >/dev/null 2>&1
delete_jobs jl
finish
