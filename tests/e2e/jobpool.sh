#!/usr/bin/env bash
# jobpool: pools as JobPool objects, with the controller serving JobPools only (pools: []).
# Proves, on the real API server with the node simulator:
# - a JobPool applied with kubectl drains its queue, each message once; its status carries the
#   figures and conditions, and `kubectl get jobpools` (kubectl 1.35) prints the columns;
# - status is written only on change: none while nothing changes;
# - live changes without a restart: maxActive raised takes effect within 2 polls, lowered holds
#   within 2 polls, and no running Job is deleted (no task starts twice);
# - the pause annotation stops new starts (Paused condition True), unpausing drains the queue;
# - deleting the JobPool mid-run starts nothing more, its running Jobs finish, and no message
#   is lost (recreated, the pool drains the rest);
# - an invalid spec (minActive > maxActive), a name the config file holds, and a JobPool in
#   another namespace are not served, and their Ready condition says why.
. "$(dirname "$0")/lib.sh"
POLL=1
out=$(scenario_dir jobpool)
bin=$("$E2E_HERE/../env/tools.sh") || { bad "tests/env/tools.sh could not install kubectl"; finish; exit 1; }
kc() { "$bin/kubectl" "$@" 2> >(grep -v 'version skew\|^WARNING: version difference' >&2); }
crd="$E2E_HERE/../../charts/jobpool/crds/jobpools.jobpool.dev.yaml"
kc apply -f "$crd" >/dev/null && kc wait --for condition=established --timeout=60s crd/jobpools.jobpool.dev >/dev/null \
  || { bad "the CRD does not install"; finish; exit 1; }
declare_queue e2e.jp
declare_queue e2e.jpclash

cfg="$E2E_WORK/jobpool.yaml"
config_header "$cfg" ${POLL}s
# The file holds one pool, so that a JobPool of that name clashes; JobPools come on top.
pool_yaml clash e2e.jpclash "$out" "    maxActive: 1" >> "$cfg"
ctrl_start "$cfg"

apply_pool() { # MAXACTIVE [EXTRA-SPEC-LINES [NAME [NAMESPACE]]]
  kc apply -f - >/dev/null <<EOF
apiVersion: jobpool.dev/v1alpha1
kind: JobPool
metadata: {name: ${3:-jp}, namespace: ${4:-default}}
spec:
  queue: e2e.jp
  maxActive: $1
  maxStartPerTick: 20
  idleTimeout: 10s
  successfulHistory: 50
${2:-}
  jobTemplate:
    backoffLimit: 0
    template:
      spec:
        restartPolicy: Never
        terminationGracePeriodSeconds: 5
        containers:
          - name: worker
            image: jobpool/worker:e2e
            args: [--, $TASK, $out]
            envFrom: [{secretRef: {name: rabbitmq-worker}}]
EOF
}
status() { kc get jobpool "${2:-jp}" -n "${3:-default}" -o json | jq -r "$1"; }
cond() { status "[.status.conditions[]? | select(.type==\"$1\")] | .[0].${2:-status}" "${3:-jp}" "${4:-default}"; }
# Unfinished Jobs of pool jp, counted by the recorder (every Job it saw created and not done).
unfinished() { recorded_unfinished jp; }
none_unfinished() { [ "$(unfinished)" = 0 ]; }
is_paused() { [ "$(cond Paused)" = True ]; }
created() { awk '$2 == "ADDED" && $4 == "jp"' "$E2E_WORK/jobs.events" | wc -l; }

# -- end to end -------------------------------------------------------------------------------
apply_pool 4 || bad "kubectl apply of the JobPool failed"
N=12
$TOOL publish --queue e2e.jp --count $N --sleep 1 --log "$out/pub" || bad "publish"
done_n() { [ "$(lines "$out/done")" -ge "$1" ]; }
wait_until 120 done_n $N
check "the JobPool drained its queue: $N messages done ($(lines "$out/done"))" [ "$(lines "$out/done")" = $N ]
check "each exactly once" [ "$(cut -d' ' -f1 "$out/done" | sort -u | wc -l)" = $N ]
settled() { [ "$(unfinished)" = 0 ] && [ "$(status .status.active)" = 0 ] && [ "$(status .status.ready)" = 0 ]; }
wait_until 30 settled
check "status: observedGeneration $(status .status.observedGeneration) = generation $(status .metadata.generation)" \
  [ "$(status .status.observedGeneration)" = "$(status .metadata.generation)" ]
check "status: Ready True (Serving)" [ "$(cond Ready)/$(cond Ready reason)" = "True/Serving" ]
check "status: Active False (Idle) once drained" [ "$(cond Active)/$(cond Active reason)" = "False/Idle" ]
check "status: Paused False" [ "$(cond Paused)" = False ]
check "status: succeeded $(status .status.succeeded) >= $N finished Jobs kept (wasted $(status .status.wasted))" \
  [ "$(status .status.succeeded)" -ge $N ]
check "status: lastScaleTime set ($(status .status.lastScaleTime))" [ "$(status '.status.lastScaleTime // ""')" != "" ]
kc get jobpools -n default > "$out/get.txt" 2>&1
check "kubectl get jobpools prints NAME QUEUE READY ACTIVE PENDING MAX WASTED AGE" \
  [ "$(head -1 "$out/get.txt" | tr -s ' ')" = "NAME QUEUE READY ACTIVE PENDING MAX WASTED AGE" ]
check "kubectl get jobpools shows jp: queue e2e.jp, ready 0, active 0, pending 0, max 4" \
  grep -qE '^jp +e2e\.jp +0 +0 +0 +4 +[0-9]+ ' "$out/get.txt"

# -- status writes only on change --------------------------------------------------------------
audit="$JOBPOOL_KUBE_DIR/log/audit.log"
status_writes() { grep -c '"requestURI":"/apis/jobpool.dev/v1alpha1/namespaces/default/jobpools/jp/status"' "$audit"; }
w0=$(status_writes); sleep $((6 * POLL)); w1=$(status_writes)
check "no status write while nothing changes ($((w1 - w0)) in 6 polls)" [ "$w1" = "$w0" ]

# -- live maxActive ------------------------------------------------------------------------------
: > "$out/started.before"; cp "$out/started" "$out/started.before"
apply_pool 2
M=16
$TOOL publish --queue e2e.jp --count $M --start $((N + 1)) --sleep 4 --log "$out/pub2" || bad "publish"
sleep $((3 * POLL + 4))
max_seen=0
for _ in $(seq 1 8); do u=$(unfinished); [ "$u" -gt "$max_seen" ] && max_seen=$u; sleep 0.5; done
check "maxActive 2 holds: at most 2 unfinished Jobs (max $max_seen)" [ "$max_seen" -le 2 ]
apply_pool 6
raised=0
for _ in $(seq 1 $((4 * POLL * 2 + 6))); do [ "$(unfinished)" -gt 2 ] && { raised=1; break; }; sleep 0.5; done
check "maxActive raised to 6: more than 2 Jobs within 2 polls and the pod start" [ "$raised" = 1 ]
sleep 3
apply_pool 1
t_low=$(now_ms); sleep $((2 * POLL))
c_low=$(created); u_low=$(unfinished)
over=0
for _ in $(seq 1 16); do
  # Jobs started after the change: only when fewer than 1 is left unfinished.
  [ "$(created)" -gt "$c_low" ] && [ "$u_low" -ge 1 ] && [ "$(unfinished)" -gt 1 ] && over=1
  sleep 0.5
done
check "maxActive lowered to 1: no Job started over the new cap after 2 polls" [ "$over" = 0 ]
wait_until 180 done_n $((N + M))
check "all $M messages done once more ($(( $(lines "$out/done") - N )))" \
  bash -c "cut -d' ' -f1 '$out/done' | sort -n | diff -q - <(seq 1 $((N + M))) >/dev/null"
restarted=$(( $(lines "$out/started") - $(lines "$out/done") ))
check "no running Job was deleted: no task started twice ($(lines "$out/started") starts, $(lines "$out/done") done)" \
  [ "$restarted" = 0 ]
wait_until 30 settled

# -- pause and unpause ----------------------------------------------------------------------------
apply_pool 4
kc annotate jobpool jp -n default jobpool.dev/paused=true --overwrite >/dev/null
wait_until 10 is_paused
check "paused: the Paused condition is True ($(cond Paused reason))" [ "$(cond Paused)" = True ]
c0=$(created)
P=5
$TOOL publish --queue e2e.jp --count $P --start $((N + M + 1)) --sleep 0 --log "$out/pub3" || bad "publish"
sleep $((6 * POLL))
check "paused: no Job started in 6 polls with $P messages waiting ($(( $(created) - c0 )) started)" [ "$(created)" = "$c0" ]
check "paused: the messages wait ($(queue_ready e2e.jp) ready)" [ "$(queue_ready e2e.jp)" = $P ]
kc annotate jobpool jp -n default jobpool.dev/paused- >/dev/null
wait_until 60 done_n $((N + M + P))
check "unpaused: the $P messages ran" [ "$(lines "$out/done")" = $((N + M + P)) ]
check "unpaused: the Paused condition is False" [ "$(cond Paused)" = False ]
wait_until 30 settled

# -- delete mid-run ---------------------------------------------------------------------------------
D=10
d0=$(lines "$out/done")
$TOOL publish --queue e2e.jp --count $D --start $((N + M + P + 1)) --sleep 5 --log "$out/pub4" || bad "publish"
running_some() { [ "$(( $(lines "$out/started") - $(lines "$out/done") ))" -ge 2 ]; }
wait_until 30 running_some
kc delete jobpool jp -n default --wait=true >/dev/null
sleep $((2 * POLL))
c_del=$(created); s_del=$(lines "$out/started")
sleep $((5 * POLL + 6))
check "deleted: no Job started after the deletion took effect ($(( $(created) - c_del )))" [ "$(created)" = "$c_del" ]
wait_until 30 none_unfinished
check "deleted: its running Jobs finished ($(unfinished) unfinished)" [ "$(unfinished)" = 0 ]
ran=$(( $(lines "$out/done") - d0 )); waiting=$(queue_ready e2e.jp)
check "deleted: nothing lost: $ran done + $waiting still queued = $D" [ $((ran + waiting)) = $D ]
check "deleted: the tasks that started all finished ($s_del started, $(lines "$out/done") done)" \
  [ "$(lines "$out/started")" = "$(lines "$out/done")" ]
apply_pool 4
wait_until 90 done_n $((N + M + P + D))
T=$((N + M + P + D))
check "recreated: the rest ran; every message of all $T done exactly once ($(lines "$out/done") done)" \
  bash -c "cut -d' ' -f1 '$out/done' | sort -n | diff -q - <(seq 1 $T) >/dev/null"

# -- JobPools that are not served say why --------------------------------------------------------
apply_pool 2 "  minActive: 3" bad
kc create namespace e2e-other >/dev/null 2>&1
apply_pool 2 "" elsewhere e2e-other
apply_pool 2 "" clash
why() { [ "$(cond Ready reason "$1" "${2:-default}")" = "$3" ]; }
wait_until 10 why bad default InvalidSpec
check "invalid spec: Ready False, InvalidSpec: $(cond Ready message bad)" \
  [ "$(cond Ready status bad)/$(cond Ready message bad)" = "False/spec.minActive: must be <= maxActive (2), got 3" ]
wait_until 10 why clash default NameClash
check "name clash with the file: Ready False, NameClash" [ "$(cond Ready status clash)/$(cond Ready reason clash)" = "False/NameClash" ]
wait_until 10 why elsewhere e2e-other NamespaceNotServed
check "another namespace: Ready False, NamespaceNotServed" [ "$(cond Ready reason elsewhere e2e-other)" = NamespaceNotServed ]
check "no Jobs for the unserved JobPools" [ "$(awk '$2 == "ADDED" && ($4 == "bad" || $4 == "elsewhere")' "$E2E_WORK/jobs.events" | wc -l)" = 0 ]

kc delete jobpool --all -n default --wait=false >/dev/null 2>&1
kc delete namespace e2e-other --wait=false >/dev/null 2>&1
delete_jobs jp
finish
