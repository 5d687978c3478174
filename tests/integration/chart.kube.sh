#!/usr/bin/env bash
# Chart and manifests against a real kube-apiserver (tests/env/kube.sh) and RabbitMQ
# (tests/env/rabbitmq.sh): server-side dry runs of the chart and of deploy/, a helm install, and
# the RBAC proof: with only the chart ServiceAccount's token, the controller runs full reconcile
# passes that create and delete Jobs, and `kubectl auth can-i` shows what the account cannot do.
# Uses the control plane / broker named by KUBECONFIG / JOBPOOL_TEST_MGMT_URL when set (as
# tests/integration/kube-run.sh does), else starts its own and stops it. A service that cannot
# start is a failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
chart=$root/charts/jobpool
check="python3 $here/chart_check.py"
ctrl=${JOBPOOL_BUILD:-${B:-$root/build}}/jobpool-controller
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
die() { echo "FAIL - $*"; echo "chart.kube: $pass passed, $((fail + 1)) failed"; exit 1; }

bin=$("$root/tests/env/tools.sh") || die "tests/env/tools.sh could not install helm/kubectl"
helm=$bin/helm; kubectl=$bin/kubectl
[ -x "$ctrl" ] || die "$ctrl is not built (make all)"

tmp=$(mktemp -d)
own_kube=; own_rmq=; namespaces=()
cleanup() {
  local n
  for n in "${namespaces[@]}"; do "$kubectl" delete namespace "$n" --wait=false >/dev/null 2>&1; done
  [ -n "$own_rmq" ] && "$root/tests/env/rabbitmq.sh" stop "$own_rmq"
  [ -n "$own_kube" ] && "$root/tests/env/kube.sh" stop "$own_kube"
  rm -rf "$tmp"
}
trap cleanup EXIT

if [ -z "${KUBECONFIG:-}" ] || [ -z "${JOBPOOL_KUBE_DIR:-}" ]; then
  "$root/tests/env/kube.sh" start > "$tmp/kube.env" || die "the control plane could not be started (see above)"
  . "$tmp/kube.env"; own_kube=$JOBPOOL_KUBE_DIR
fi
if [ -z "${JOBPOOL_TEST_MGMT_URL:-}" ]; then
  "$root/tests/env/rabbitmq.sh" start > "$tmp/rmq.env" || die "the RabbitMQ broker could not be started (see above)"
  . "$tmp/rmq.env"; own_rmq=$JOBPOOL_RMQ_DIR
fi
export KUBECONFIG
echo "# API server $("$kubectl" version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'), kubectl $("$kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), helm $("$helm" version --template '{{.Version}}')"

newns() {  # a fresh namespace, deleted at exit
  "$kubectl" create namespace "$1" >/dev/null || die "cannot create namespace $1"
  namespaces+=("$1")
}
ns=jp-chart-$$
newns "$ns"

# -- server-side dry runs ------------------------------------------------------------------------
# kubectl 1.35 talks to the 1.20 API server fine for these calls (beyond the supported skew, so
# it warns): it validates against the server's OpenAPI v2 document and sends dryRun=All, and the
# API server runs its own validation and admission. The negative controls prove both happen.
dry() { "$kubectl" apply --dry-run=server "$@" 2>&1; }
# helm template cannot ask the server which APIs it has (helm install does): tell it the version,
# so the PodDisruptionBudget is policy/v1beta1 on this 1.20 server, as it would be when installed.
kv=$("$kubectl" version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
for v in "" "$chart/ci/three-pools-values.yaml"; do
  what="chart${v:+ with $(basename "$v")}"
  if out=$("$helm" template jobpool "$chart" -n "$ns" --kube-version "$kv" ${v:+-f "$v"} | dry -f -) \
     && [ "$(grep -c 'created (server dry run)' <<<"$out")" -ge 6 ]; then
    ok "kubectl apply --dry-run=server of the $what ($(grep -c 'created (server dry run)' <<<"$out") objects)"
  else bad "dry run of the $what:"; echo "$out" | sed 's/^/    /'; fi
done
"$helm" template jobpool "$chart" -n "$ns" --show-only templates/deployment.yaml > "$tmp/dep.yaml"
if out=$(sed 's/^  replicas: 1$/  replicas: 1\n  replicaz: 1/' "$tmp/dep.yaml" | dry -f -); then
  bad "negative control: an unknown Deployment field passed the dry run"
else grep -q 'unknown field "replicaz"' <<<"$out" && ok "negative control: an unknown field is refused (schema validation is on)" \
  || { bad "negative control: unexpected error:"; echo "$out" | sed 's/^/    /'; }; fi
if out=$(sed 's/runAsUser: 65532/runAsUser: -5/' "$tmp/dep.yaml" | dry -f -); then
  bad "negative control: runAsUser -5 passed the dry run"
else grep -q 'runAsUser: Invalid value: -5' <<<"$out" && ok "negative control: the API server's own validation runs (runAsUser -5 refused)" \
  || { bad "negative control: unexpected error:"; echo "$out" | sed 's/^/    /'; }; fi
# deploy/ targets namespace jobpool; the dry run cannot create it, so it must exist first. It is
# left in place: this control plane runs no namespace controller, so a deleted namespace would
# stay Terminating and refuse every later create in it.
phase=$("$kubectl" get namespace jobpool -o jsonpath='{.status.phase}' 2>/dev/null)
if [ -z "$phase" ]; then "$kubectl" create namespace jobpool >/dev/null || bad "cannot create namespace jobpool"
elif [ "$phase" != Active ]; then bad "namespace jobpool is $phase: the deploy/ dry run cannot work in it"; fi
if out=$(dry -k "$root/deploy") && [ "$(grep -c '(server dry run)' <<<"$out")" -eq "$($check kinds <("$kubectl" kustomize "$root/deploy") | wc -l)" ]; then
  ok "kubectl apply --dry-run=server -k deploy/ ($(grep -c '(server dry run)' <<<"$out") objects)"
else bad "dry run of deploy/:"; echo "$out" | sed 's/^/    /'; fi

# -- helm install --------------------------------------------------------------------------------
cat > "$tmp/values.yaml" <<V
rabbitmq:
  managementUrl: $JOBPOOL_TEST_MGMT_URL
  amqpUrl: amqp://127.0.0.1:${JOBPOOL_TEST_AMQP_PORT:-5672}
  auth: {username: $JOBPOOL_TEST_RMQ_USER, password: "$JOBPOOL_TEST_RMQ_PASS"}
pools:
  - name: rbac-proof
    queue: jp-rbac-proof-$$
    maxActive: 5
    pendingTimeout: 1s
    jobTemplate:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: worker
              image: jobpool/jobpool-worker:0.1.0
              args: ["--", "/bin/cat"]
V
if out=$("$helm" install jobpool "$chart" -n "$ns" -f "$tmp/values.yaml" 2>&1) && grep -q 'STATUS: deployed' <<<"$out"; then
  missing=()
  for o in serviceaccount/jobpool secret/jobpool configmap/jobpool "role/$ns-jobpool" "rolebinding/$ns-jobpool" \
           "clusterrole/$ns-jobpool" "clusterrolebinding/$ns-jobpool" \
           lease.coordination.k8s.io/jobpool-leader deployment/jobpool service/jobpool-metrics; do
    "$kubectl" -n "$ns" get "$o" >/dev/null 2>&1 || missing+=("$o")
  done
  if [ ${#missing[@]} -eq 0 ]; then ok "helm install created the ServiceAccount, Secret, ConfigMap, ClusterRole, ClusterRoleBinding, Role, RoleBinding, Lease, Deployment and Service"
  else bad "helm install: missing ${missing[*]}"; fi
  "$kubectl" -n "$ns" get role "$ns-jobpool" -o yaml > "$tmp/role.yaml"
  "$kubectl" get clusterrole "$ns-jobpool" -o yaml > "$tmp/clusterrole.yaml"
  if python3 - "$tmp/role.yaml" "$tmp/clusterrole.yaml" <<'PY'
import sys, yaml
def rules(p):
    r = yaml.safe_load(open(p))
    return {(g, res, tuple(v.get("resourceNames") or ())): v["verbs"] for v in r["rules"] for g in v["apiGroups"] for res in v["resources"]}
want_role = {("coordination.k8s.io", "leases", ("jobpool-leader",)): ["get", "update"]}
want_cluster = {("batch", "jobs", ()): ["create", "get", "list", "watch", "delete"], ("", "pods", ()): ["list", "watch"],
                ("", "events", ()): ["create"],
                ("jobpool.dev", "jobpools", ()): ["list", "watch"], ("jobpool.dev", "jobpools/status", ()): ["patch"],
                ("", "secrets", ()): ["get"]}
got = (rules(sys.argv[1]), rules(sys.argv[2]))
sys.exit(0 if got == (want_role, want_cluster) else "server-side rules: %r" % (got,))
PY
  then ok "the stored ClusterRole has exactly the six workload and JobPool rules (Secrets: get only), the Role only the Lease's (by name)"; else bad "RBAC rules on the server differ"; fi
  # An upgrade with a value the controller would reject never reaches the cluster, and the
  # stored rollout keeps the old pod until the new one is ready (no kubelet here runs pods, so
  # the rollout itself cannot be watched; what the API server's Deployment controller is given
  # can).
  gen0=$("$kubectl" -n "$ns" get deployment jobpool -o jsonpath='{.metadata.generation}')
  if out=$("$helm" upgrade jobpool "$chart" -n "$ns" --reuse-values --set pollInterval=50ms 2>&1); then
    bad "helm upgrade with pollInterval 50ms was accepted"
  elif grep -q 'pollInterval: must be at least 100ms' <<<"$out" && \
       [ "$("$kubectl" -n "$ns" get deployment jobpool -o jsonpath='{.metadata.generation}')" = "$gen0" ] && \
       [ "$("$helm" history jobpool -n "$ns" -o json 2>/dev/null | python3 -c 'import json,sys; h=json.load(sys.stdin); print(len(h), h[-1]["status"])')" = "1 deployed" ]; then
    ok "helm upgrade with a value the controller rejects (pollInterval 50ms) fails before touching the release"
  else bad "helm upgrade with pollInterval 50ms:"; echo "$out" | sed 's/^/    /'; fi
  if "$kubectl" -n "$ns" get deployment jobpool -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)["spec"]
st, c = d["strategy"], d["template"]["spec"]["containers"][0]
sys.exit(0 if st["type"] == "RollingUpdate" and st["rollingUpdate"]["maxUnavailable"] == 0
         and c["readinessProbe"]["httpGet"]["path"] == "/readyz" else 1)'; then
    ok "the stored Deployment rolls with maxUnavailable 0 behind a /readyz probe (a new pod that cannot start leaves the old one)"
  else bad "the stored Deployment can take the old pod away before the new one is ready"; fi
else bad "helm install failed:"; echo "$out" | sed 's/^/    /'; fi

# -- RBAC proof with the ServiceAccount's own token ----------------------------------------------
# 1.20 has no `kubectl create token`; its token controller writes a Secret for each account.
sa_kubeconfig() {  # NAMESPACE SA OUTDIR -> OUTDIR/kubeconfig with only that account's token
  local n=$1 sa=$2 d=$3 secret="" i server
  mkdir -p "$d"
  for i in $(seq 1 40); do
    secret=$("$kubectl" -n "$n" get sa "$sa" -o jsonpath='{.secrets[0].name}' 2>/dev/null)
    [ -n "$secret" ] && break; sleep 0.25
  done
  [ -n "$secret" ] || return 1
  "$kubectl" -n "$n" get secret "$secret" -o jsonpath='{.data.token}' | base64 -d > "$d/token"
  "$kubectl" -n "$n" get secret "$secret" -o jsonpath='{.data.ca\.crt}' | base64 -d > "$d/ca.crt"
  server=$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  cat > "$d/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$server", certificate-authority: $d/ca.crt}}]
users: [{name: sa, user: {tokenFile: $d/token}}]
contexts: [{name: c, context: {cluster: c, user: sa, namespace: $n}}]
current-context: c
KC
  [ -s "$d/token" ]
}
can() { KUBECONFIG=$sakc "$kubectl" auth can-i "$@" 2>/dev/null; }
expect() {  # yes|no VERB RESOURCE [FLAGS...]
  local want=$1; shift
  local got; got=$(can "$@")
  if [ "$got" = "$want" ]; then return 0; fi
  bad "as the ServiceAccount, can-i $* answered '$got', want '$want'"; return 1
}
if sa_kubeconfig "$ns" jobpool "$tmp/sa"; then
  sakc=$tmp/sa/kubeconfig
  [ "$(KUBECONFIG=$sakc "$kubectl" get configmap jobpool -o name 2>&1)" != configmap/jobpool ] \
    && ok "the token is the ServiceAccount's own (it cannot read ConfigMaps either)" \
    || bad "the ServiceAccount token can read ConfigMaps"
  allowed=0 denied=0 before=$fail
  for q in "create jobs" "get jobs" "list jobs" "watch jobs" "delete jobs" "list pods" "watch pods" \
           "create events" "list jobpools" "watch jobpools" "patch jobpools --subresource=status" \
           "get secrets" "get leases/jobpool-leader" "update leases/jobpool-leader"; do
    expect yes $q -n "$ns" && allowed=$((allowed + 1))
  done
  # By default JobPools are served in every namespace: Jobs, Pods, Events and JobPools anywhere.
  for q in "create jobs -n default" "delete jobs -n default" "list jobs --all-namespaces" \
           "watch pods --all-namespaces" "list jobpools --all-namespaces" "patch jobpools --subresource=status -n default" \
           "create events -n default" "get secrets -n default"; do
    expect yes $q && allowed=$((allowed + 1))
  done
  for q in "list secrets" "watch secrets" "update secrets" "update jobs" "patch jobs" "create pods" \
           "get pods" "delete pods" "create deployments" "patch events" "create leases" "get leases/other" \
           "update leases/other" "delete leases/jobpool-leader" "get configmaps" "create rolebindings" \
           "create jobpools" "update jobpools" "delete jobpools" "update jobpools --subresource=status"; do
    expect no $q -n "$ns" && denied=$((denied + 1))
  done
  for q in "list secrets -n default" "list secrets --all-namespaces" "get leases/jobpool-leader -n default" \
           "update leases/jobpool-leader -n default" "list namespaces" "list nodes"; do
    expect no $q && denied=$((denied + 1))
  done
  [ "$fail" -eq "$before" ] && ok "kubectl auth can-i as the ServiceAccount: $allowed needed verbs allowed (Jobs, Pods, Events, JobPools and get on the Secrets they name in every namespace; the Lease); $denied denied (listing or changing Secrets, unused verbs, other Leases, the Lease elsewhere, namespaces, nodes)"

  # A full reconcile pass, out of cluster, with only that token: the installed ConfigMap's config
  # with the in-cluster settings swapped for the token's kubeconfig.
  q=jp-rbac-proof-$$
  mgmt() { curl -sS -u "$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS" -H 'content-type: application/json' "$@"; }
  mgmt -X PUT "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/$q" -d '{"durable":false}' >/dev/null
  for i in 1 2 3; do
    mgmt -X POST "$JOBPOOL_TEST_MGMT_URL/api/exchanges/%2F/amq.default/publish" \
      -d "{\"properties\":{},\"routing_key\":\"$q\",\"payload\":\"task $i\",\"payload_encoding\":\"string\"}" >/dev/null
  done
  ready=0
  for i in $(seq 1 60); do  # the management API's counts lag by ~5 s
    ready=$(mgmt "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/$q" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("messages_ready", 0))')
    [ "$ready" = 3 ] && break; sleep 0.5
  done
  "$kubectl" -n "$ns" get configmap jobpool -o jsonpath='{.data.config\.yaml}' > "$tmp/config.yaml"
  python3 - "$tmp/config.yaml" "$sakc" "$ns" <<'PY'
import sys, yaml
p, kc, ns = sys.argv[1:]
c = yaml.safe_load(open(p))
c["kubernetes"].update({"inCluster": False, "kubeconfig": kc, "namespace": ns})
c["metrics"] = {"address": ""}
c["log"] = {"format": "text", "level": "debug"}   # a failed Event is logged at debug
yaml.safe_dump(c, open(p, "w"), sort_keys=False)
PY
  run_once() {
    RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS \
      timeout 60 "$ctrl" --config "$tmp/config.yaml" --once >> "$tmp/controller.log" 2>&1
  }
  jobs_of() { "$kubectl" -n "$ns" get jobs -l jobpool.dev/pool=rbac-proof -o name 2>/dev/null | sort; }
  if [ "$ready" != 3 ]; then bad "the queue never showed 3 ready messages (got $ready)"
  elif ! run_once; then bad "reconcile pass 1 as the ServiceAccount failed:"; sed 's/^/    /' "$tmp/controller.log"
  else
    first=$(jobs_of)
    if [ "$(wc -l <<<"$first")" -eq 3 ] && [ -n "$first" ]; then
      ok "reconcile pass as the ServiceAccount created 3 Jobs for 3 ready messages"
    else bad "pass 1 created $(grep -c . <<<"$first") Jobs, want 3:"; sed 's/^/    /' "$tmp/controller.log"; fi
    # No kubelet runs the pods, so they stay pending. A Job's pending age counts from when this
    # controller process first saw it (its own clock, never the API server's), so a single fresh
    # --once pass cannot time one out: run for a few ticks past pendingTimeout (1s) instead.
    run_ticks() {
      RABBITMQ_USERNAME=$JOBPOOL_TEST_RMQ_USER RABBITMQ_PASSWORD=$JOBPOOL_TEST_RMQ_PASS \
        timeout -s TERM 8 "$ctrl" --config "$tmp/config.yaml" >> "$tmp/controller.log" 2>&1
      local rc=$?
      [ "$rc" = 124 ] || [ "$rc" = 0 ]
    }
    if run_ticks; then
      left=$(comm -12 <(echo "$first") <(jobs_of))
      if [ -z "$left" ]; then ok "the controller as the ServiceAccount (leader through the chart's Lease) deleted the 3 Jobs that stayed pending past pendingTimeout"
      else bad "pass 2 left $(grep -c . <<<"$left") of the first Jobs:"; sed 's/^/    /' "$tmp/controller.log"; fi
    else bad "reconcile pass 2 as the ServiceAccount failed:"; sed 's/^/    /' "$tmp/controller.log"; fi
    # The Events of both runs (ScaledUp for the Jobs made, PendingTimeout for those deleted). A
    # listing that fails is tried again, and what kubectl said is kept for the failure message.
    events_of() {
      "$kubectl" -n "$ns" get events -o jsonpath='{range .items[*]}{.source.component} {.reason}{"\n"}{end}' \
        2>>"$tmp/events.err" > "$tmp/events.txt"
    }
    for _ in 1 2 3 4 5; do events_of && grep -q '^jobpool ScaledUp$' "$tmp/events.txt" && break; sleep 1; done
    if grep -q '^jobpool ScaledUp$' "$tmp/events.txt"; then
      ok "the ServiceAccount wrote its Events ($(sort "$tmp/events.txt" | uniq -c | grep jobpool | awk '{print $3 " x" $1}' | tr '\n' ' '))"
    else
      bad "no ScaledUp Event from the controller:"
      { echo "events listed:"; cat "$tmp/events.txt"; echo "kubectl said:"; cat "$tmp/events.err"
        echo "the controller's log:"; grep -iE 'event|created|jobs' "$tmp/controller.log"; } | sed 's/^/    /'
    fi
    grep -qiE 'forbidden|403' "$tmp/controller.log" && { bad "the controller hit a 403:"; grep -iE 'forbidden|403' "$tmp/controller.log" | sed 's/^/    /'; }
  fi
  mgmt -X DELETE "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/$q" >/dev/null
else bad "no token Secret appeared for ServiceAccount jobpool"; fi

# -- watchNamespaces: Roles in the listed namespaces, nothing cluster-wide ------------------------
ns2=$ns-x
newns "$ns2"
if out=$("$helm" install other "$chart" -n "$ns" --set "watchNamespaces={$ns2}" 2>&1); then
  if sa_kubeconfig "$ns" other-jobpool "$tmp/sa2"; then
    sakc=$tmp/sa2/kubeconfig before=$fail
    lease=other-jobpool-leader
    expect yes create jobs -n "$ns2"; expect yes list jobpools -n "$ns2"; expect yes patch jobpools --subresource=status -n "$ns2"
    expect yes create jobs -n "$ns"; expect yes update "leases/$lease" -n "$ns"
    expect no list jobpools -n "$ns"; expect no create jobs -n default; expect yes get secrets -n "$ns2"
    expect no get secrets -n "$ns"; expect no list secrets -n "$ns2"
    expect no list jobs --all-namespaces; expect no list jobpools --all-namespaces; expect no update "leases/$lease" -n "$ns2"
    "$kubectl" -n "$ns" get lease "$lease" >/dev/null 2>&1 || bad "no Lease $lease in $ns"
    "$kubectl" get clusterrole "$ns-other-jobpool" >/dev/null 2>&1 && bad "a ClusterRole was installed with watchNamespaces"
    [ "$fail" -eq "$before" ] && ok "watchNamespaces=$ns2: Jobs and JobPools there, the file's Jobs and the Lease in the release namespace, get on Secrets only where JobPools are served, nothing elsewhere, nothing cluster-wide; a second release beside the first"
  else bad "no token for ServiceAccount other-jobpool"; fi
  "$helm" uninstall other -n "$ns" >/dev/null 2>&1
else bad "helm install with watchNamespaces failed:"; echo "$out" | sed 's/^/    /'; fi

# -- helm uninstall ------------------------------------------------------------------------------
if "$helm" uninstall jobpool -n "$ns" >/dev/null 2>&1 && ! "$kubectl" -n "$ns" get role "$ns-jobpool" >/dev/null 2>&1 \
   && ! "$kubectl" get clusterrole "$ns-jobpool" >/dev/null 2>&1 \
   && ! "$kubectl" -n "$ns" get deployment jobpool >/dev/null 2>&1; then ok "helm uninstall removed the objects (the ClusterRole too)"
else bad "helm uninstall left objects behind"; fi

echo "chart.kube: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
