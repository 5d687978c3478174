#!/usr/bin/env bash
# The JobPool CRD on the real API server (tests/env/kube.sh), with kubectl 1.35:
# - it installs from charts/jobpool/crds and is Established; `kubectl explain` describes fields;
# - invalid JobPools are refused at apply time with the field path, and at every limit the
#   schema agrees with `jobpool-controller --check-config` on the same pool (both sides of each
#   boundary); the checks the schema cannot express are listed and must be the controller's;
# - defaults are filled in; status is a subresource; `kubectl get jobpools` prints the columns;
# - `jobpool-controller convert` output for the ScaledJobs in tests/fixtures/keda passes a
#   server-side dry run, and an unmappable ScaledJob gets FILE:LINE:COL and no output.
set -u
: "${KUBECONFIG:?run me through tests/integration/kube-run.sh}"
JOBPOOL_ROOT=${JOBPOOL_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${JOBPOOL_BUILD:-$JOBPOOL_ROOT/build}
ctrl=$B/jobpool-controller
crd=$JOBPOOL_ROOT/charts/jobpool/crds/jobpools.jobpool.dev.yaml
NS=jp-crd-$$
T=$(mktemp -d /tmp/jobpool-crd.XXXXXX)
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "  ok: $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL: $*"; }
die() { echo "  FAIL: $*"; echo "jobpool_crd: $pass passed, $((fail + 1)) failed"; exit 1; }
bin=$("$JOBPOOL_ROOT/tests/env/tools.sh") || die "tests/env/tools.sh could not install kubectl"
kubectl() { "$bin/kubectl" "$@" 2> >(grep -v 'version skew\|^WARNING: version difference' >&2); }
cleanup() { "$bin/kubectl" delete namespace "$NS" --wait=false >/dev/null 2>&1; rm -rf "$T"; }
trap cleanup EXIT
[ -x "$ctrl" ] || die "$ctrl is not built (make all)"

# -- install ------------------------------------------------------------------------------------
kubectl apply -f "$crd" >/dev/null 2>"$T/err" || { cat "$T/err"; die "the CRD does not apply"; }
kubectl wait --for condition=established --timeout=60s crd/jobpools.jobpool.dev >/dev/null \
  || die "the CRD is not Established within 60 s"
ok "the CRD applies and is Established"
kubectl create namespace "$NS" >/dev/null || die "cannot create namespace $NS"
# The API server publishes a new CRD's OpenAPI a moment after Established.
for _ in $(seq 1 40); do
  kubectl explain jobpool.spec.maxActive > "$T/explain" 2>/dev/null && break; sleep 0.5
done
if grep -q 'FIELD: *maxActive <integer>' "$T/explain" && grep -q 'The most workers of this pool' "$T/explain"; then
  ok "kubectl explain jobpool.spec.maxActive describes the field"
else bad "kubectl explain jobpool.spec.maxActive:"; sed 's/^/    /' "$T/explain"; fi
if kubectl explain jp.status.wasted 2>&1 | grep -q 'found no message'; then
  ok "kubectl explain jp.status.wasted (short name) describes the status figure"
else bad "kubectl explain jp.status.wasted"; fi

# -- the schema against the controller's own loader, at every limit --------------------------------
# Each case: NAME, a JSON object merged into a valid pool's spec, and the field path the
# rejection must name ("" when both must accept). Run as a server dry run and as a config file.
base='{"queue":"q","maxActive":5,"jobTemplate":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"w","image":"x"}]}}}}'
python3 - "$base" > "$T/cases.tsv" <<'EOF'
import json, sys
base = json.loads(sys.argv[1])
cases = [
    ("valid", {}, ""),
    ("maxActive 1", {"maxActive": 1}, ""), ("maxActive 0", {"maxActive": 0}, "spec.maxActive"),
    ("maxActive 100000", {"maxActive": 100000}, ""),
    ("maxActive 100001", {"maxActive": 100001}, "spec.maxActive"),
    ("maxActive missing", {"maxActive": None}, "spec.maxActive"),
    ("maxActive a string", {"maxActive": "5"}, "spec.maxActive"),
    ("minActive 0", {"minActive": 0}, ""), ("minActive -1", {"minActive": -1}, "spec.minActive"),
    ("spareWorkers -1", {"spareWorkers": -1}, "spec.spareWorkers"),
    ("spareWorkers 100000", {"spareWorkers": 100000}, ""),
    ("spareWorkers 100001", {"spareWorkers": 100001}, "spec.spareWorkers"),
    ("maxStartPerTick 0", {"maxStartPerTick": 0}, "spec.maxStartPerTick"),
    ("maxStartPerTick 1", {"maxStartPerTick": 1}, ""),
    ("messagesPerWorker 0", {"messagesPerWorker": 0}, "spec.messagesPerWorker"),
    ("messagesPerWorker 100001", {"messagesPerWorker": 100001}, "spec.messagesPerWorker"),
    ("maxAttempts 0", {"maxAttempts": 0}, "spec.maxAttempts"),
    ("maxAttempts 1000", {"maxAttempts": 1000}, ""),
    ("maxAttempts 1001", {"maxAttempts": 1001}, "spec.maxAttempts"),
    ("successfulHistory -1", {"successfulHistory": -1}, "spec.successfulHistory"),
    ("successfulHistory 0", {"successfulHistory": 0}, ""),
    ("failedHistory 100001", {"failedHistory": 100001}, "spec.failedHistory"),
    ("ttlSecondsAfterFinished null", {"ttlSecondsAfterFinished": None, "_keep_null": True}, ""),
    ("ttlSecondsAfterFinished -1", {"ttlSecondsAfterFinished": -1}, "spec.ttlSecondsAfterFinished"),
    ("ttlSecondsAfterFinished 2147483647", {"ttlSecondsAfterFinished": 2147483647}, ""),
    ("pendingTimeout 1m30s", {"pendingTimeout": "1m30s"}, ""),
    ("pendingTimeout without a unit", {"pendingTimeout": "300"}, "spec.pendingTimeout"),
    ("idleTimeout in words", {"idleTimeout": "30 seconds"}, "spec.idleTimeout"),
    ("idleTimeout 100ms", {"idleTimeout": "100ms"}, ""),
    ("queue and queueRegex", {"queueRegex": "^a"}, "spec"),
    ("neither queue nor queueRegex", {"queue": None}, "spec"),
    ("queueRegex alone", {"queue": None, "queueRegex": "^thumbs\\."}, ""),
    ("empty queue", {"queue": ""}, "spec.queue"),
    ("queue of 255", {"queue": "q" * 255}, ""),
    ("queue of 256", {"queue": "q" * 256}, "spec.queue"),
    ("empty vhost", {"vhost": ""}, "spec.vhost"),
    ("no jobTemplate", {"jobTemplate": None}, "spec.jobTemplate"),
    ("jobTemplate without template", {"jobTemplate": {"backoffLimit": 0}}, "spec.jobTemplate.template"),
    ("a whole Job as jobTemplate", {"jobTemplate": {"apiVersion": "batch/v1", "kind": "Job", "template": {}}}, "spec.jobTemplate"),
    ("jobTemplate a string", {"jobTemplate": "x"}, "spec.jobTemplate"),
]
for name, patch, path in cases:
    spec = dict(base)
    keep_null = patch.pop("_keep_null", False)
    for k, v in patch.items():
        if v is None and not keep_null:
            spec.pop(k, None)
        else:
            spec[k] = v
    print("\x1f".join([name, json.dumps(spec), path]))
EOF
# Names are the pool name too: 52 characters is the limit on both sides.
n52=$(printf 'a%.0s' $(seq 1 52)); n53=${n52}a
printf '%s\x1f%s\x1f%s\x1f%s\n' "name of 52 characters" "$base" "" "$n52" >> "$T/cases.tsv"
printf '%s\x1f%s\x1f%s\x1f%s\n' "name of 53 characters" "$base" "metadata.name" "$n53" >> "$T/cases.tsv"
printf '%s\x1f%s\x1f%s\x1f%s\n' "name with an underscore" "$base" "metadata.name" "a_b" >> "$T/cases.tsv"

agree=0
# Fields are split on \x1f: a tab would collapse the empty ones.
while IFS=$'\x1f' read -r name spec path pname; do
  pname=${pname:-p}
  printf '{"apiVersion":"jobpool.dev/v1alpha1","kind":"JobPool","metadata":{"name":"%s","namespace":"%s"},"spec":%s}\n' \
    "$pname" "$NS" "$spec" > "$T/jp.json"
  # --validate=false: the API server's own validation is under test, not kubectl's.
  out=$(kubectl apply --dry-run=server --validate=false -f "$T/jp.json" 2>&1); api=$?
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); s["spec"]["name"]=sys.argv[2]
print(json.dumps({"pools":[dict([("name",sys.argv[2])]+[(k,v) for k,v in s["spec"].items() if k!="name"])]}))' \
    "$T/jp.json" "$pname" > "$T/config.yaml"
  cfgout=$("$ctrl" --check-config "$T/config.yaml" 2>&1); cfg=$?
  if [ -z "$path" ]; then
    if [ $api -eq 0 ] && [ $cfg -eq 0 ]; then agree=$((agree + 1))
    else bad "$name: must be accepted: API server: $out; --check-config: $cfgout"; fi
  else
    if [ $api -ne 0 ] && grep -qF "$path" <<<"$out" && [ $cfg -ne 0 ]; then agree=$((agree + 1))
    else bad "$name: must be refused naming $path: API server (rc $api): $out; --check-config (rc $cfg): $cfgout"; fi
  fi
done < "$T/cases.tsv"
total=$(wc -l < "$T/cases.tsv")
[ "$agree" -eq "$total" ] && ok "at all $total limit cases the API server and --check-config agree; refusals name the field"

# What OpenAPI on 1.20 cannot say: the schema accepts these and the controller's loader refuses
# them (so the controller reports them in the JobPool's Ready condition).
while IFS=$'\t' read -r name patch; do
  spec=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); s.update(json.loads(sys.argv[2])); print(json.dumps(s))' "$base" "$patch")
  printf '{"apiVersion":"jobpool.dev/v1alpha1","kind":"JobPool","metadata":{"name":"p","namespace":"%s"},"spec":%s}\n' "$NS" "$spec" > "$T/jp.json"
  printf '{"pools":[%s]}\n' "$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); s["name"]="p"; print(json.dumps(s))' "$spec")" > "$T/config.yaml"
  if kubectl apply --dry-run=server -f "$T/jp.json" >/dev/null 2>&1 && ! "$ctrl" --check-config "$T/config.yaml" >/dev/null 2>&1; then
    ok "controller-only check: $name"
  else bad "controller-only check $name: expected schema accepts, --check-config refuses"; fi
done <<'EOF'
minActive above maxActive	{"minActive": 6}
pendingTimeout under 1s	{"pendingTimeout": "500ms"}
idleTimeout under 100ms	{"idleTimeout": "50ms"}
a regex that does not compile	{"queue": null, "queueRegex": "a("}
EOF

# -- defaults, status subresource, printer columns ------------------------------------------------
cat > "$T/min.yaml" <<EOF
apiVersion: jobpool.dev/v1alpha1
kind: JobPool
metadata: {name: thumbs, namespace: $NS}
spec:
  queue: thumbs
  maxActive: 7
  jobTemplate: {template: {spec: {restartPolicy: Never, containers: [{name: w, image: x}]}}}
EOF
kubectl apply -f "$T/min.yaml" >/dev/null 2>"$T/err" || { cat "$T/err"; die "a minimal JobPool does not apply"; }
got=$(kubectl get jobpool thumbs -n "$NS" -o json | python3 -c 'import json,sys; s=json.load(sys.stdin)["spec"]
print(" ".join(str(s.get(k)) for k in ["minActive","spareWorkers","maxStartPerTick","messagesPerWorker","maxAttempts","pendingTimeout","idleTimeout","successfulHistory","failedHistory","ttlSecondsAfterFinished"]))')
if [ "$got" = "0 0 20 1 3 5m 30s 10 10 600" ]; then ok "defaults filled in as docs/config.md gives them: $got"
else bad "defaults: got '$got'"; fi
# status cannot be written through the main resource, only through /status.
kubectl patch jobpool thumbs -n "$NS" --type merge -p '{"status":{"ready":99}}' >/dev/null 2>&1
kubectl patch jobpool thumbs -n "$NS" --subresource=status --type merge \
  -p '{"status":{"ready":4,"active":3,"pending":1,"running":2,"succeeded":5,"failed":1,"wasted":2,"conditions":[{"type":"Ready","status":"True","reason":"Serving","message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' >/dev/null 2>"$T/err" \
  || { cat "$T/err"; bad "a status patch through the status subresource is refused"; }
st=$(kubectl get jobpool thumbs -n "$NS" -o jsonpath='{.status.ready}')
[ "$st" = 4 ] && ok "status is written through the status subresource only" || bad "status.ready is '$st', want 4"
kubectl get jobpools -n "$NS" > "$T/get" 2>&1
head -1 "$T/get" | tr -s ' ' > "$T/head"
if [ "$(cat "$T/head")" = "NAME QUEUE READY ACTIVE PENDING MAX WASTED AGE" ] && grep -qE '^thumbs +thumbs +4 +3 +1 +7 +2 ' "$T/get"; then
  ok "kubectl get jobpools: NAME QUEUE READY ACTIVE PENDING MAX WASTED AGE, with the figures"
else bad "kubectl get jobpools printed:"; sed 's/^/    /' "$T/get"; fi
kubectl get jp -n "$NS" -o wide > "$T/wide" 2>&1
if head -1 "$T/wide" | grep -qE 'RUNNING +SUCCEEDED +FAILED +SERVING +PAUSED +REASON' && grep -qE ' 2 +5 +1 +True ' "$T/wide"; then
  ok "kubectl get jp -o wide adds REGEX, VHOST, RUNNING, SUCCEEDED, FAILED, SERVING, PAUSED, REASON"
else bad "kubectl get jp -o wide printed:"; sed 's/^/    /' "$T/wide"; fi
bad_status=$(kubectl patch jobpool thumbs -n "$NS" --subresource=status --type merge \
  -p '{"status":{"conditions":[{"type":"Ready","status":"maybe","reason":"x","message":"m","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' 2>&1)
grep -qE 'status.conditions(\[0\])?.status: Unsupported value: "maybe"' <<<"$bad_status" && ok "a condition status other than True/False/Unknown is refused" \
  || bad "a bad condition status: $bad_status"

# -- convert ----------------------------------------------------------------------------------------
for f in "$JOBPOOL_ROOT"/tests/fixtures/keda/*.yaml; do
  name=$(basename "$f")
  "$ctrl" convert "$f" > "$T/out.yaml" 2> "$T/notes"; rc=$?
  if [ "$name" = message-rate.yaml ]; then
    if [ $rc -ne 0 ] && [ ! -s "$T/out.yaml" ] && grep -q "^$f:18:15: ScaledJob rate: spec.triggers\[0\].metadata.mode: MessageRate cannot be mapped" "$T/notes"; then
      ok "convert $name: FILE:LINE:COL error, exit $rc, nothing printed"
    else bad "convert $name: rc $rc:"; cat "$T/notes" "$T/out.yaml" | sed 's/^/    /'; fi
    continue
  fi
  want=$(grep -c '^kind: ScaledJob' "$f"); skipped=$(grep -c 'skipped ScaledJob' "$T/notes")
  got=$(grep -c '^kind: JobPool' "$T/out.yaml")
  sed -i "s/^\(  namespace:\) .*/\1 $NS/" "$T/out.yaml"
  if [ $rc -ne 0 ] || [ "$got" -ne $((want - skipped)) ] || [ "$got" -eq 0 ]; then
    bad "convert $name: rc $rc, $got JobPools for $want ScaledJobs ($skipped skipped):"; sed 's/^/    /' "$T/notes"
  elif out=$(kubectl apply --dry-run=server -n "$NS" -f "$T/out.yaml" 2>&1); then
    ok "convert $name: $got JobPool(s) pass kubectl apply --dry-run=server"
  else bad "convert $name: the server refuses the output: $out"; sed 's/^/    /' "$T/out.yaml"; fi
  if grep -qiE 'not-this-one|guest:guest' "$T/out.yaml" "$T/notes"; then bad "convert $name repeats a password"; fi
done

echo "jobpool_crd: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
