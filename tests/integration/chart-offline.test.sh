#!/usr/bin/env bash
# Offline chart tests (no cluster): helm lint, renders, schema rejections, the README's parameter
# table, the schema against readme-generator's, and deploy/ against a fresh `make manifests`.
# Run by `make chart-test` and by `make integration` (tests/integration/run.sh).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
chart=$root/charts/jobpool
check="python3 $here/chart_check.py"
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }

bin=$("$root/tests/env/tools.sh") || { echo "FAIL - tests/env/tools.sh could not install helm/kubectl"; exit 1; }
helm=$bin/helm; kubectl=$bin/kubectl; rg=$bin/readme-generator
python3 -c 'import yaml' 2>/dev/null || { echo "FAIL - python3-yaml is missing (tests/env/deps.sh test)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
render() { "$helm" template jobpool "$chart" --namespace jobpool "$@"; }

# -- lint ---------------------------------------------------------------------------------------
for v in "" "$chart/ci/three-pools-values.yaml"; do
  what=${v:+ with $(basename "$v")}
  if out=$("$helm" lint --strict "$chart" ${v:+-f "$v"} 2>&1) && ! grep -qE '\[(WARNING|ERROR)\]' <<<"$out"; then
    ok "helm lint --strict$what"
  else bad "helm lint --strict$what:"; echo "$out" | sed 's/^/    /'; fi
done

# -- renders ------------------------------------------------------------------------------------
if render > "$tmp/defaults.yaml" 2>"$tmp/err" && $check defaults "$tmp/defaults.yaml"; then
  ok "defaults render: SA, Secret, ConfigMap, Role (exact rules, the Lease by name), RoleBinding, Lease, Deployment (1 replica, rolling with maxUnavailable 0, hardened, probes, POD_NAME, no Secret checksum), Service; no namespace in the config"
else bad "defaults render"; cat "$tmp/err"; fi
if render -f "$chart/ci/three-pools-values.yaml" > "$tmp/three.yaml" 2>"$tmp/err" && $check three-pools "$tmp/three.yaml"; then
  ok "three-pool example renders 3 pools, 2 replicas with a PodDisruptionBudget, credentials from existingSecret"
else bad "three-pool example render"; cat "$tmp/err"; fi
if render --set 'watchNamespaces={team-a}' > "$tmp/ns1.yaml" 2>"$tmp/err" && $check namespaces "$tmp/ns1.yaml" team-a; then
  ok "one watchNamespace: a Role and RoleBinding there (Jobs, Pods, Events, JobPools) and in the release namespace (the Lease, the file's pools), no ClusterRole"
else bad "one watchNamespace"; cat "$tmp/err"; fi
if render --set 'watchNamespaces={team-a,jobpool,team-b}' > "$tmp/ns3.yaml" 2>"$tmp/err" &&
   $check namespaces "$tmp/ns3.yaml" team-a jobpool team-b; then
  ok "three watchNamespaces, the release's among them: a Role in each, JobPool rules where listed, the Lease's in the release namespace only"
else bad "three watchNamespaces"; cat "$tmp/err"; fi
# Shipped worker templates: the chart's defaults, its ci/ values and docs/examples.
$check config "$tmp/defaults.yaml" > "$tmp/defaults.cfg"; $check config "$tmp/three.yaml" > "$tmp/three.cfg"
if $check restricted "$tmp/defaults.cfg" "$tmp/three.cfg" "$root"/docs/examples/*.yaml; then
  ok "every shipped worker template passes Pod Security restricted (values.yaml, ci/, docs/examples)"
else bad "a shipped worker template fails Pod Security restricted"; fi
printf 'pools: [{name: a, queue: q, maxActive: 1, jobTemplate: {template: {spec: {containers: [{name: w, image: x}]}}}}]\n' > "$tmp/loose.cfg"
if $check restricted "$tmp/loose.cfg" 2>/dev/null; then bad "negative control: a bare template passed the restricted check"
else ok "negative control: a bare template fails the restricted check"; fi
# The workers' broker login reaches every Job by reference: the controller's by default, the
# workers' own, or an existing Secret; in the Jobs' namespace; never a password in the config.
for c in "default|jobpool|no|" "own user|jobpool-worker|yes|--set workers.auth.username=w --set workers.auth.password=S3cr:t@x/%y" \
         "existing Secret|tasks-login|no|--set workers.auth.existingSecret=tasks-login"; do
  IFS='|' read -r what name made flags <<<"$c"
  # shellcheck disable=SC2086
  if render $flags > "$tmp/w.yaml" 2>"$tmp/err" && $check workers "$tmp/w.yaml" "$name" "$made"; then
    where=""; [ "$made" = yes ] && where=" (rendered in the namespace of the Jobs)"
    ok "workers' login, $what: rabbitmq.workerSecret is $name$where"
  else bad "workers' login, $what"; cat "$tmp/err"; fi
done
if render --set rabbitmq.caSecret.name=rmq-ca --set rabbitmq.caSecret.key=ca.pem > "$tmp/ca.yaml" 2>"$tmp/err" &&
   [ "$($check config "$tmp/ca.yaml" | python3 -c 'import sys,yaml; r=yaml.safe_load(sys.stdin)["rabbitmq"]; print(r.get("caSecret"), r.get("caFile"))')" = \
     "{'name': 'rmq-ca', 'key': 'ca.pem'} /etc/jobpool/ca/ca.crt" ]; then
  ok "rabbitmq.caSecret reaches the workers (config caSecret) and the controller (caFile)"
else bad "rabbitmq.caSecret is not passed through"; cat "$tmp/err"; fi
# Mutual TLS: one kubernetes.io/tls Secret for the controller (mounted, certFile/keyFile) and
# the workers (certSecret); refused at render time without an amqps:// amqpUrl.
if render --set rabbitmq.amqpUrl=amqps://rabbitmq:5671 --set rabbitmq.certSecret.name=rmq-client \
     --set rabbitmq.certSecret.keyKey=client.key > "$tmp/cert.yaml" 2>"$tmp/err" &&
   [ "$($check config "$tmp/cert.yaml" | python3 -c 'import sys,yaml; r=yaml.safe_load(sys.stdin)["rabbitmq"]; print(r.get("certSecret"), r.get("certFile"), r.get("keyFile"))')" = \
     "{'name': 'rmq-client', 'certKey': 'tls.crt', 'keyKey': 'client.key'} /etc/jobpool/cert/tls.crt /etc/jobpool/cert/tls.key" ] &&
   python3 - "$tmp/cert.yaml" <<'EOP'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
ps = dep["spec"]["template"]["spec"]
vol = next(v for v in ps["volumes"] if v["name"] == "rabbitmq-cert")
assert vol["secret"]["secretName"] == "rmq-client", vol
assert vol["secret"]["items"] == [{"key": "tls.crt", "path": "tls.crt"}, {"key": "client.key", "path": "tls.key"}], vol
m = [m for m in ps["containers"][0]["volumeMounts"] if m["name"] == "rabbitmq-cert"]
assert m == [{"name": "rabbitmq-cert", "mountPath": "/etc/jobpool/cert", "readOnly": True}], m
EOP
then
  ok "rabbitmq.certSecret reaches the workers (config certSecret) and the controller (mounted, certFile and keyFile)"
else bad "rabbitmq.certSecret is not passed through"; cat "$tmp/err"; fi
if render --set rabbitmq.certSecret.name=rmq-client > /dev/null 2>"$tmp/err"; then
  bad "rabbitmq.certSecret with an amqp:// amqpUrl rendered"
elif grep -q "rabbitmq.certSecret: workers present the client certificate on amqpUrl, which must then be amqps://" "$tmp/err"; then
  ok "rabbitmq.certSecret with an amqp:// amqpUrl is refused, saying why"
else bad "rabbitmq.certSecret with amqp://: unexpected error: $(cat "$tmp/err")"; fi

# Names stay DNS labels and distinct between releases even past 63 characters.
long=controller-for-the-thumbnail-and-report-queues-of-the-media-team
render --set fullnameOverride=$long-a | $check kinds /dev/stdin | awk '{print $2}' | sort > "$tmp/long-a"
render --set fullnameOverride=$long-b | $check kinds /dev/stdin | awk '{print $2}' | sort > "$tmp/long-b"
if [ -s "$tmp/long-a" ] && ! grep -qE '/.{64,}' "$tmp/long-a" "$tmp/long-b" && [ -z "$(comm -12 "$tmp/long-a" "$tmp/long-b")" ]; then
  ok "two releases whose names share 63 characters get distinct object and Lease names of at most 63"
else bad "long release names collide or overflow:"; paste "$tmp/long-a" "$tmp/long-b" | sed 's/^/    /'; fi
if render --set metrics.serviceMonitor.enabled=true 2>"$tmp/err" | grep -q '^kind: ServiceMonitor$' \
   && ! render | grep -q '^kind: ServiceMonitor$'; then
  ok "ServiceMonitor only when metrics.serviceMonitor.enabled"
else bad "ServiceMonitor toggle"; cat "$tmp/err"; fi

# The Grafana dashboard: a ConfigMap with the sidecar's label, only when enabled, carrying
# dashboards/jobpool.json unchanged; the PrometheusRule only when enabled (its expressions are
# tested by tests/alerts/run.sh and against a live scrape by observability.test.sh).
if render --set grafanaDashboard.enabled=true --show-only templates/grafana-dashboard.yaml > "$tmp/dash.yaml" 2>"$tmp/err" &&
   python3 - "$tmp/dash.yaml" "$chart/dashboards/jobpool.json" <<'EOP' && ! render | grep -q 'grafana_dashboard'
import json, sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]
assert json.loads(cm["data"]["jobpool.json"]) == json.load(open(sys.argv[2]))
EOP
then ok "Grafana dashboard ConfigMap (label grafana_dashboard: \"1\", the JSON intact) only when grafanaDashboard.enabled"
else bad "Grafana dashboard ConfigMap"; cat "$tmp/err"; fi
if render --set prometheusRule.enabled=true 2>"$tmp/err" | grep -q '^kind: PrometheusRule$' \
   && ! render | grep -q '^kind: PrometheusRule$'; then
  ok "PrometheusRule only when prometheusRule.enabled"
else bad "PrometheusRule toggle"; cat "$tmp/err"; fi

# A config change rolls the Deployment; an unrelated change (a label) does not touch the checksum,
# nor does the password (no checksum is derived from it).
c0=$($check annotation "$tmp/defaults.yaml" checksum/config)
c1=$(render --set pollInterval=5s > "$tmp/c1.yaml" && $check annotation "$tmp/c1.yaml" checksum/config)
c2=$(render --set podLabels.team=x > "$tmp/c2.yaml" && $check annotation "$tmp/c2.yaml" checksum/config)
render --set rabbitmq.auth.password=other > "$tmp/c3.yaml"
a0=$(grep -A3 'annotations:' "$tmp/defaults.yaml" | grep checksum); a3=$(grep -A3 'annotations:' "$tmp/c3.yaml" | grep checksum)
if [ -n "$c0" ] && [ "$c0" != "$c1" ] && [ "$c0" = "$c2" ] && [ "$a0" = "$a3" ]; then ok "checksum/config follows the config and only the config (not the password)"
else bad "checksum/config: defaults=$c0 pollInterval=5s:$c1 podLabels:$c2; password change: '$a0' -> '$a3'"; fi

# The rendered config is accepted by the controller's own loader, when the controller is built.
ctrl=${JOBPOOL_BUILD:-${B:-$root/build}}/jobpool-controller
if [ -x "$ctrl" ] && "$ctrl" --help 2>&1 | grep -q -- --check-config; then
  printf 'pools: []\n' > "$tmp/nopools-values.yaml"
  render -f "$tmp/nopools-values.yaml" > "$tmp/nopools.yaml" 2>"$tmp/err" || cat "$tmp/err"
  for f in defaults three nopools cert; do
    $check config "$tmp/$f.yaml" > "$tmp/$f.config.yaml"
    if out=$("$ctrl" --check-config "$tmp/$f.config.yaml" 2>&1); then ok "jobpool-controller --check-config accepts the $f render's config"
    else bad "jobpool-controller --check-config rejects the $f render's config: $out"; fi
  done
else
  bad "cannot cross-check the rendered config: $ctrl is not built or has no --check-config"
fi

# -- schema: bad values are refused with a message that names the value -------------------------
reject() {  # WHAT WANT-MESSAGE VALUES-YAML
  printf '%s\n' "$3" > "$tmp/bad.yaml"
  if out=$(render -f "$tmp/bad.yaml" 2>&1); then bad "$1 was accepted"
  elif grep -qF -- "$2" <<<"$out"; then ok "$1 is refused: $2"
  else bad "$1: message lacks '$2':"; echo "$out" | sed 's/^/    /'; fi
}
reject "a negative maxActive" "at '/pools/0/maxActive': minimum: got -3, want 1" \
  "pools: [{name: a, queue: q, maxActive: -3}]"
reject "an unknown pool key" "at '/pools/0': additional properties 'maxActiv' not allowed" \
  "pools: [{name: a, queue: q, maxActive: 2, maxActiv: 3}]"
reject "an unknown top-level key" "additional properties 'replicas' not allowed" "replicas: 2"
reject "a pool name that is no DNS label" "at '/pools/0/name'" "pools: [{name: Thumbs_1, queue: q, maxActive: 2}]"
reject "a bad duration" "at '/pollInterval'" "pollInterval: 2 seconds"
jt='jobTemplate: {template: {spec: {containers: [{name: w, image: x}]}}}'
reject "a duplicate pool name" 'pools[1].name: "a" is used by another pool' \
  "pools: [{name: a, queue: q, maxActive: 2, $jt}, {name: a, queue: r, maxActive: 2, $jt}]"
reject "minActive above maxActive" "pools[0].minActive: 5 is more than maxActive (2)" \
  "pools: [{name: a, queue: q, maxActive: 2, minActive: 5, $jt}]"
reject "a pool without a jobTemplate" "at '/pools/0': missing property 'jobTemplate'" \
  "pools: [{name: a, queue: q, maxActive: 2}]"
reject "no credentials" "rabbitmq.auth: set existingSecret, or a password" "rabbitmq: {auth: {password: ''}}"
reject "a workers' user without a password" "workers.auth: set both username and password" "workers: {auth: {username: w}}"
reject "a watchNamespace listed twice" "at '/watchNamespaces': items at 0 and 1 are equal" "watchNamespaces: [a, a]"

# -- README table and schema against readme-generator-for-helm ----------------------------------
cp -r "$chart" "$tmp/chart"
if "$rg" -v "$tmp/chart/values.yaml" -r "$tmp/chart/README.md" -s "$tmp/generated.schema.json" > "$tmp/rg.log" 2>&1; then
  if diff -u "$chart/README.md" "$tmp/chart/README.md" > "$tmp/readme.diff"; then
    ok "README.md parameters table is up to date (make chart-readme)"
  else bad "README.md parameters table is out of date; run make chart-readme:"; sed 's/^/    /' "$tmp/readme.diff"; fi
  if $check schema "$tmp/generated.schema.json" "$chart/values.schema.json"; then
    ok "values.schema.json covers every ## @param with the same type"
  else bad "values.schema.json disagrees with values.yaml's ## @param lines"; fi
else bad "readme-generator failed:"; grep -v Skipping "$tmp/rg.log" | sed 's/^/    /'; fi

# -- deploy/ is the chart at default values ------------------------------------------------------
if "$root/deploy/generate.sh" "$tmp/deploy" && diff -r -x generate.sh "$root/deploy" "$tmp/deploy" > "$tmp/deploy.diff"; then
  ok "deploy/ matches a fresh make manifests"
else bad "deploy/ differs from the chart; run make manifests:"; sed 's/^/    /' "$tmp/deploy.diff" | head -40; fi
if "$kubectl" kustomize "$root/deploy" > "$tmp/kustomized.yaml" 2>"$tmp/err"; then
  $check kinds "$tmp/kustomized.yaml" | grep -v '^Namespace ' > "$tmp/k.kinds"
  render --include-crds | $check kinds /dev/stdin > "$tmp/h.kinds"
  if diff -u "$tmp/h.kinds" "$tmp/k.kinds" > "$tmp/kinds.diff" && grep -q '^Namespace /jobpool$' <(
       $check kinds "$tmp/kustomized.yaml"); then
    ok "kubectl kustomize deploy/ yields the chart's objects and CRDs plus the Namespace"
  else bad "kustomize deploy/ objects differ from helm template:"; cat "$tmp/kinds.diff"; fi
else bad "kubectl kustomize deploy/ failed"; cat "$tmp/err"; fi

echo "chart-offline: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
