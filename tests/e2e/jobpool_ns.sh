#!/usr/bin/env bash
# jobpool_ns: JobPools in several namespaces, the controller running with only the chart's RBAC
# (the ServiceAccount token of a rendered Role or ClusterRole, never an admin credential).
# Proves, on the real API server with a node simulator per namespace:
# - watchNamespaces [ns1, ns2] (a Role in each, rendered by the chart): a JobPool `jp` in ns1 and
#   one of the same name in ns2 are two pools: each gets its own Jobs in its own namespace (for its
#   own queue), each queue drains with every message done once, each status is written in its own
#   namespace, ScaledUp Events are recorded there, and metrics tell them apart (pool="ns1/jp");
# - a JobPool `jp` in ns3, outside watchNamespaces, is not served: no Job, no status at all (the
#   controller may not even read it), and its messages wait;
# - no watchNamespaces (the chart's ClusterRole): the same controller serves ns3 too, and ns3's
#   waiting messages drain there;
# - neither run hits a 403: the chart's rules are enough, and kubectl auth can-i shows they stop
#   short of Secrets and of the unlisted namespace.
. "$(dirname "$0")/lib.sh"
out=$(scenario_dir jobpool_ns)
bin=$("$E2E_HERE/../env/tools.sh") || { bad "tests/env/tools.sh could not install kubectl/helm"; finish; exit 1; }
kc() { "$bin/kubectl" "$@" 2> >(grep -v 'version skew\|^WARNING: version difference' >&2); }
chart="$E2E_HERE/../../charts/jobpool"
NSS=(e2e-ns1 e2e-ns2 e2e-ns3)
SIM_PIDS=()
stop_all() {
  ctrl_stop
  local p
  for p in "${SIM_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${SIM_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

kc apply -f "$chart/crds/jobpools.jobpool.dev.yaml" >/dev/null &&
  kc wait --for condition=established --timeout=60s crd/jobpools.jobpool.dev >/dev/null \
  || { bad "the CRD does not install"; finish; exit 1; }
for ns in "${NSS[@]}"; do
  kc create namespace "$ns" >/dev/null 2>&1
  # The workers' template names this Secret: in a JobPool's namespace, as its owner would have it.
  kc -n "$ns" create secret generic rabbitmq-worker --from-literal=JOBPOOL_AMQP_URL="$JOBPOOL_TEST_AMQP_URL" >/dev/null 2>&1
  mkdir -p "$out/pods-$ns"
  python3 "$E2E_HERE/nodesim.py" --worker "$WORKER" --namespace "$ns" --node-name "nodesim-$ns" --pods 20 \
    --events "$out/sim-$ns.events" --log-dir "$out/pods-$ns" >"$out/nodesim-$ns.log" 2>&1 &
  SIM_PIDS+=($!)
  declare_queue "e2e.$ns"
  scenario_dir "jobpool_ns/$ns" >/dev/null
done

# The chart's RBAC for RELEASE (and its ServiceAccount and Lease), applied as helm would, and a
# kubeconfig holding only that ServiceAccount's token (1.20's token controller writes a Secret).
rbac_for() { # RELEASE [HELM-SET...]
  local rel=$1; shift
  "$bin/helm" template "$rel" "$chart" -n default --set rabbitmq.auth.password=unused "$@" \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml --show-only templates/lease.yaml \
    > "$out/$rel.rbac.yaml" && kc apply -f "$out/$rel.rbac.yaml" >/dev/null || return 1
  local secret="" i d="$out/$rel.sa"
  mkdir -p "$d"
  for i in $(seq 1 40); do
    secret=$(kc -n default get sa "$rel" -o jsonpath='{.secrets[0].name}' 2>/dev/null)
    [ -n "$secret" ] && break; sleep 0.25
  done
  [ -n "$secret" ] || return 1
  kc -n default get secret "$secret" -o jsonpath='{.data.token}' | base64 -d > "$d/token"
  cat > "$d/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$JOBPOOL_TEST_KUBE_SERVER", certificate-authority: $JOBPOOL_TEST_KUBE_CA}}]
users: [{name: sa, user: {tokenFile: $d/token}}]
contexts: [{name: c, context: {cluster: c, user: sa, namespace: default}}]
current-context: c
KC
  [ -s "$d/token" ]
}
# config FILE RELEASE INSTANCE [WATCH-NAMESPACES-YAML]: the controller as that release's
# ServiceAccount, JobPools only, leader through the chart's Lease: lib.sh's config with that
# kubeconfig, and the instance, namespaces and Lease after its kubernetes section (its last).
config() {
  config_header "$1" 1s
  sed -i "s#^  kubeconfig: .*#  kubeconfig: $out/$2.sa/kubeconfig#; /^pools:\$/d" "$1"
  { echo "  instance: $3"
    [ -z "${4:-}" ] || echo "  watchNamespaces: $4"
    echo "leaderElection: {enabled: true, leaseName: $2-leader}"
    echo "pools: []"; } >> "$1"
}
apply_jp() { # NAMESPACE
  kc apply -f - >/dev/null <<JP
apiVersion: jobpool.dev/v1alpha1
kind: JobPool
metadata: {name: jp, namespace: $1}
spec:
  queue: e2e.$1
  maxActive: 4
  idleTimeout: 10s
  successfulHistory: 50
$(worker_template '  ' "$out/$1")
JP
}
# jobs NAMESPACE: "count queues" of the Jobs of pool jp there (queues: the distinct annotations).
jobs() {
  kapi GET "/apis/batch/v1/namespaces/$1/jobs?labelSelector=jobpool.dev/pool%3Djp" |
    jq -r '"\(.items | length) \([.items[].metadata.annotations["jobpool.dev/queue"]] | unique | join(","))"'
}
status() { kc get jobpool jp -n "$1" -o json | jq -r "$2"; }
ready_reason() { status "$1" '[.status.conditions[]? | select(.type=="Ready")][0] | "\(.status)/\(.reason)"'; }
done_n() { [ "$(lines "$out/$1/done")" -ge "$2" ]; }
ids() { cut -d' ' -f1 "$out/$1/done" | sort -n | tr '\n' ' '; }
no_403() {
  if grep -qiE 'forbidden|\(403\)' "$CTRL_LOG"; then bad "$1: the controller hit a 403:"; grep -iE 'forbidden|\(403\)' "$CTRL_LOG" | head -5 | sed 's/^/    /'
  else ok "$1: no 403 in the controller's log (the chart's rules are enough)"; fi
}

for p in "${SIM_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || bad "a node simulator exited: $(tail -3 "$out"/nodesim-*.log)"; done

# -- watchNamespaces [ns1, ns2]: a Role in each ---------------------------------------------------
if ! rbac_for jobpool-listed --set "watchNamespaces={e2e-ns1,e2e-ns2}"; then bad "the chart's Roles or the token did not apply"; finish; exit 1; fi
sakc=$out/jobpool-listed.sa/kubeconfig
can() { KUBECONFIG=$sakc "$bin/kubectl" auth can-i "$@" 2>/dev/null; }
check "as the listed release: Jobs, JobPools and get on Secrets in ns1 and ns2 yes; Jobs, JobPools and Secrets in ns3, a list of Secrets, cluster-wide lists no" \
  [ "$(can create jobs -n e2e-ns1)$(can patch jobpools --subresource=status -n e2e-ns2)$(can get secrets -n e2e-ns1)$(can list jobpools -n e2e-ns3)$(can create jobs -n e2e-ns3)$(can get secrets -n e2e-ns3)$(can list secrets -n e2e-ns1)$(can list jobs --all-namespaces)" = yesyesyesnonononono ]
for ns in "${NSS[@]}"; do apply_jp "$ns"; done
config "$E2E_WORK/jobpool_ns.yaml" jobpool-listed default-jobpool-listed "[e2e-ns1, e2e-ns2]"
N=6
$TOOL publish --queue e2e.e2e-ns1 --count $N --start 1 --sleep 0 --log "$out/pub1" || bad "publish"
$TOOL publish --queue e2e.e2e-ns2 --count $N --start 101 --sleep 0 --log "$out/pub2" || bad "publish"
$TOOL publish --queue e2e.e2e-ns3 --count 3 --start 201 --sleep 0 --log "$out/pub3" || bad "publish"
ctrl_start "$E2E_WORK/jobpool_ns.yaml"
wait_until 120 done_n e2e-ns1 $N; wait_until 60 done_n e2e-ns2 $N
check "ns1/jp drained its own queue: messages 1-$N done once each ($(ids e2e-ns1))" [ "$(ids e2e-ns1)" = "$(seq 1 $N | tr '\n' ' ')" ]
check "ns2/jp drained its own queue: messages 101-$((100 + N)) done once each ($(ids e2e-ns2))" [ "$(ids e2e-ns2)" = "$(seq 101 $((100 + N)) | tr '\n' ' ')" ]
check_drained e2e.e2e-ns1; check_drained e2e.e2e-ns2
j1=$(jobs e2e-ns1); j2=$(jobs e2e-ns2)
check "ns1's Jobs are in ns1, all for queue e2e.e2e-ns1 ($j1)" bash -c "[ ${j1% *} -ge $N ] && [ '${j1#* }' = e2e.e2e-ns1 ]"
check "ns2's Jobs are in ns2, all for queue e2e.e2e-ns2 ($j2)" bash -c "[ ${j2% *} -ge $N ] && [ '${j2#* }' = e2e.e2e-ns2 ]"
settled() { [ "$(status "$1" .status.active)" = 0 ] && [ "$(status "$1" .status.succeeded)" -ge $N ]; }
wait_until 30 settled e2e-ns1; wait_until 30 settled e2e-ns2
for ns in e2e-ns1 e2e-ns2; do
  check "$ns/jp status, written in $ns: Ready $(ready_reason $ns), succeeded $(status $ns .status.succeeded) >= $N, observedGeneration $(status $ns .status.observedGeneration)" \
    [ "$(ready_reason $ns)/$(status $ns '.status.succeeded >= '$N)/$(status $ns .status.observedGeneration)" = "True/Serving/true/$(status $ns .metadata.generation)" ]
  check "$ns: a ScaledUp Event from jobpool about a Job there" \
    bash -c "'$bin/kubectl' -n $ns get events -o json 2>/dev/null | jq -e '[.items[] | select(.source.component==\"jobpool\" and .reason==\"ScaledUp\" and .involvedObject.kind==\"Job\" and .involvedObject.namespace==\"$ns\")] | length > 0' >/dev/null"
done
m=$(ctrl_metrics)
started() { awk -v p="$1" '$1 == "jobpool_workers_started_total{pool=\"" p "\"}" { print $2 }' <<<"$m"; }
check "metrics tell the two jp apart: started e2e-ns1/jp=$(started e2e-ns1/jp), e2e-ns2/jp=$(started e2e-ns2/jp)" \
  bash -c "[ '$(started e2e-ns1/jp)' -ge $N ] && [ '$(started e2e-ns2/jp)' -ge $N ]"
check "ns3 (not listed) is not served: no Job there ($(jobs e2e-ns3)), no status ($(status e2e-ns3 .status)), its 3 messages wait ($(queue_ready e2e.e2e-ns3))" \
  [ "$(jobs e2e-ns3)/$(status e2e-ns3 .status)/$(queue_ready e2e.e2e-ns3)" = "0 /null/3" ]
check "the Lease in default is held by this controller" [ -n "$(kc -n default get lease jobpool-listed-leader -o jsonpath='{.spec.holderIdentity}')" ]
no_403 "listed namespaces"
ctrl_stop

# -- no watchNamespaces: the chart's ClusterRole ----------------------------------------------------
if ! rbac_for jobpool-all; then bad "the chart's ClusterRole or the token did not apply"; finish; exit 1; fi
sakc=$out/jobpool-all.sa/kubeconfig
check "as the all-namespaces release: Jobs, JobPools and get on Secrets anywhere yes; a list of Secrets, the Lease outside default no" \
  [ "$(can create jobs -n e2e-ns3)$(can list jobpools --all-namespaces)$(can get secrets -n e2e-ns3)$(can list secrets -n e2e-ns3)$(can update leases/jobpool-all-leader -n e2e-ns3)" = yesyesyesnono ]
config "$E2E_WORK/jobpool_ns.yaml" jobpool-all default-jobpool-all
ctrl_start "$E2E_WORK/jobpool_ns.yaml"
wait_until 90 done_n e2e-ns3 3
check "every namespace: ns3/jp is served and its 3 waiting messages ran there ($(ids e2e-ns3))" [ "$(ids e2e-ns3)" = "201 202 203 " ]
check "ns3's Jobs are in ns3 ($(jobs e2e-ns3))" [ "$(jobs e2e-ns3)" = "3 e2e.e2e-ns3" ]
$TOOL publish --queue e2e.e2e-ns2 --count 2 --start 201 --sleep 0 --log "$out/pub4" || bad "publish"
wait_until 60 done_n e2e-ns2 $((N + 2))
check "and ns2/jp goes on under the cluster-wide watch ($(lines "$out/e2e-ns2/done") done)" [ "$(lines "$out/e2e-ns2/done")" = $((N + 2)) ]
wait_until 30 settled e2e-ns3
check "ns3/jp status written there: Ready $(ready_reason e2e-ns3)" [ "$(ready_reason e2e-ns3)" = True/Serving ]
no_403 "every namespace"
ctrl_stop

for ns in "${NSS[@]}"; do kc delete namespace "$ns" --wait=false >/dev/null 2>&1; done
kc delete -f "$out/jobpool-listed.rbac.yaml" -f "$out/jobpool-all.rbac.yaml" --wait=false >/dev/null 2>&1
finish
