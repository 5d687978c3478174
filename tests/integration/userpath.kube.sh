#!/usr/bin/env bash
# The user's path (issue 12, item 9): docs/install.md followed as written, on the real API server
# (tests/env/kube.sh) and broker (tests/env/rabbitmq.sh), with nothing created by hand.
#   1. helm install with only the broker's addresses and credentials set;
#   2. the controller pod run from what the chart installed (tests/integration/podrun.py: the
#      Deployment's command, env, ConfigMap and ServiceAccount token, in-cluster), the Jobs' pods
#      run by the node simulator (tests/e2e/nodesim.py, which resolves secretKeyRef env as a
#      kubelet does: the workers' login reaches them only that way);
#   3. messages on the default pool's queue are drained, each run exactly once;
#   4. helm upgrade adding a queueRegex pool, as install.md shows; a new controller pod (the
#      rollout) drains two matching queues;
#   5. kubectl apply -k of an overlay of deploy/ that moves everything to another namespace and
#      sets the broker, as install.md shows; its controller drains the default queue there.
# Queue counts are exact (rabbitmqctl through tests/env/rabbitmq.sh ctl), waited on with a deadline.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
B=${JOBPOOL_BUILD:-${B:-$root/build}}
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
die() { echo "FAIL - $*"; echo "userpath: $pass passed, $((fail + 1)) failed"; exit 1; }

bin=$("$root/tests/env/tools.sh") || die "tests/env/tools.sh could not install helm/kubectl"
helm=$bin/helm; kubectl=$bin/kubectl; export KUBECTL=$kubectl
for x in "$B/jobpool-controller" "$B/jobpool-worker"; do [ -x "$x" ] || die "$x is not built (make all)"; done
[ -n "${KUBECONFIG:-}" ] && [ -n "${JOBPOOL_TEST_MGMT_URL:-}" ] && [ -n "${JOBPOOL_RMQ_DIR:-}" ] ||
  die "run through tests/integration/kube-run.sh (needs the control plane and the broker)"
unshare -m --propagation private true 2>/dev/null || die "unshare -m is not permitted: the controller pod cannot get its in-cluster token path"
export KUBECONFIG

tmp=$(mktemp -d)
pids=(); namespaces=()
stop_pids() { local p; for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; pids=(); }
cleanup() {
  stop_pids
  local n; for n in "${namespaces[@]}"; do "$kubectl" delete namespace "$n" --wait=false >/dev/null 2>&1; done
  [ "${KEEP:-0}" = 1 ] && echo "# logs kept in $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mgmt() { curl -fsS -m 10 -u "$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS" -H 'content-type: application/json' "$@"; }
declare_queue() { mgmt -X PUT "$JOBPOOL_TEST_MGMT_URL/api/queues/%2F/$1" -d '{"durable":true}' >/dev/null; }
publish() { # QUEUE BODY
  mgmt -X POST "$JOBPOOL_TEST_MGMT_URL/api/exchanges/%2F/amq.default/publish" \
    -d "{\"properties\":{\"delivery_mode\":2},\"routing_key\":\"$1\",\"payload\":\"$2\",\"payload_encoding\":\"string\"}" |
    grep -q '"routed":true'
}
counts() { # QUEUE: "ready unacked" now, exact (the queue process, not the lagging statistics)
  "$root/tests/env/rabbitmq.sh" ctl "$JOBPOOL_RMQ_DIR" list_queues -q --no-table-headers name messages_ready \
    messages_unacknowledged 2>/dev/null | awk -F'\t' -v q="$1" '$1 == q { print $2, $3; f = 1 } END { exit !f }'
}
wait_until() { local t=$(( $(date +%s) + $1 )); shift; while [ "$(date +%s)" -lt "$t" ]; do "$@" && return 0; sleep 1; done; "$@"; }
# ran_once DIR BODY...: each body was printed by exactly one worker (the default pools run
# /bin/cat, which prints the body without a newline, so the worker's next log line follows it).
ran_once() { local d=$1 b; shift; for b in "$@"; do [ "$(cat "$d"/*.log 2>/dev/null | grep -o -F -- "$b" | wc -l)" = 1 ] || return 1; done; }
drained() { # DIR QUEUE:BODY...: every queue 0 ready 0 unacked, every body run once
  local d=$1 qb; shift
  for qb in "$@"; do [ "$(counts "${qb%%:*}")" = "0 0" ] || return 1; done
  ran_once "$d" "${@#*:}"
}

# run_ctrl NS DEPLOYMENT TAG: the controller pod of that Deployment; run_sim NS TAG: a node
# simulator for NS, pod logs in TAG/pods; run_env: both. stop_pids stops them.
run_ctrl() {
  local ns=$1 dep=$2 tag=$3
  mkdir -p "$tmp/$tag"
  python3 "$here/podrun.py" --namespace "$ns" --deployment "$dep" --binary "$B/jobpool-controller" \
    --workdir "$tmp/$tag" --metrics-address "127.0.0.1:$(free_port)" > "$tmp/$tag/controller.log" 2>&1 &
  pids+=($!)
  sleep 2
  kill -0 "${pids[-1]}" 2>/dev/null || { bad "$tag: the controller pod exited:"; tail -n 20 "$tmp/$tag/controller.log" | sed 's/^/    /'; return 1; }
}
run_sim() {
  local ns=$1 tag=$2
  mkdir -p "$tmp/$tag/pods"
  python3 "$root/tests/e2e/nodesim.py" --namespace "$ns" --worker "$B/jobpool-worker" \
    --events "$tmp/$tag/sim.events" --log-dir "$tmp/$tag/pods" > "$tmp/$tag/nodesim.log" 2>&1 &
  pids+=($!)
  sleep 1
  kill -0 "${pids[-1]}" 2>/dev/null || { bad "$tag: the node simulator exited:"; tail -n 20 "$tmp/$tag/nodesim.log" | sed 's/^/    /'; return 1; }
}
run_env() { run_ctrl "$1" "$2" "$3" && run_sim "$1" "$3"; }
show_logs() { # TAG
  echo "    -- controller (last lines)"; tail -n 15 "$tmp/$1/controller.log" | sed 's/^/    /'
  echo "    -- node simulator (last lines)"; tail -n 8 "$tmp/$1/nodesim.log" | sed 's/^/    /'
  echo "    -- a worker log"; tail -n 5 "$(ls "$tmp/$1/pods"/*.log 2>/dev/null | head -n1)" 2>/dev/null | sed 's/^/    /'
}
no_secret_in_jobs() { # NS: no Job carries the broker password as a literal
  ! "$kubectl" -n "$1" get jobs -o json | grep -qF -- "$JOBPOOL_TEST_RMQ_PASS"
}

amqp=amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT
ns=jp-user-$$
namespaces+=("$ns")

# -- 1. install.md: helm install with the broker's addresses and credentials ---------------------
if out=$("$helm" install jobpool "$root/charts/jobpool" --namespace "$ns" --create-namespace \
      --set rabbitmq.managementUrl="$JOBPOOL_TEST_MGMT_URL" --set rabbitmq.amqpUrl="$amqp" \
      --set rabbitmq.auth.username="$JOBPOOL_TEST_RMQ_USER" --set rabbitmq.auth.password="$JOBPOOL_TEST_RMQ_PASS" 2>&1); then
  ok "helm install with only the broker's addresses and credentials"
else die "helm install: $out"; fi

# -- 2, 3. the default pool drains ----------------------------------------------------------------
declare_queue jobpool-example
bodies=(); for i in 1 2 3 4 5 6; do bodies+=("jobpool-example:userpath-default-$i"); done
if run_env "$ns" jobpool helm; then
  for qb in "${bodies[@]}"; do publish "${qb%%:*}" "${qb#*:}" || bad "publish $qb"; done
  if wait_until 150 drained "$tmp/helm/pods" "${bodies[@]}"; then
    ok "the default pool drained its queue: ${#bodies[@]} messages, each run once by a worker Job (0 ready, 0 unacked)"
  else bad "the default pool did not drain (jobpool-example: $(counts jobpool-example))"; show_logs helm; fi
  no_secret_in_jobs "$ns" && ok "no Job holds the broker password as a literal (secretKeyRef only)" \
    || bad "a Job carries the broker password in clear"
  lbl=$("$kubectl" -n "$ns" get jobs -o jsonpath='{.items[*].metadata.labels.jobpool\.dev/instance}' | tr ' ' '\n' | sort -u | tr '\n' ' ')
  # JobPools in every namespace (the default): the instance carries the release namespace.
  [ "$lbl" = "$ns-jobpool " ] && ok "every Job carries the release's instance label (jobpool.dev/instance=$ns-jobpool)" \
    || bad "instance labels on the Jobs: '$lbl'"
fi
stop_pids

# -- two releases in one namespace, each with a pool called example, side by side ---------------
# The second release keeps 1 finished Job (successfulHistory: 1). The first keeps 10, and its 6
# from above. Each lists, counts and trims only Jobs with its own instance label: the second
# never trims the first's, and neither counts the other's as covering its messages.
cat > "$tmp/second.yaml" <<'V'
pools:
  - name: example
    queue: jobpool-example-2
    maxActive: 10
    successfulHistory: 1
    jobTemplate:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: worker
              image: localhost/jobpool-worker:0.1.0
              args: ["--", "/bin/cat"]
V
if out=$("$helm" install second "$root/charts/jobpool" --namespace "$ns" -f "$tmp/second.yaml" \
      --set rabbitmq.managementUrl="$JOBPOOL_TEST_MGMT_URL" --set rabbitmq.amqpUrl="$amqp" \
      --set rabbitmq.auth.username="$JOBPOOL_TEST_RMQ_USER" --set rabbitmq.auth.password="$JOBPOOL_TEST_RMQ_PASS" 2>&1); then
  declare_queue jobpool-example-2
  two=("jobpool-example:userpath-first-1" "jobpool-example:userpath-first-2" "jobpool-example:userpath-first-3"
       "jobpool-example-2:userpath-second-1" "jobpool-example-2:userpath-second-2" "jobpool-example-2:userpath-second-3")
  if run_ctrl "$ns" jobpool two-first && run_ctrl "$ns" second-jobpool two-second && run_sim "$ns" two; then
    for qb in "${two[@]}"; do publish "${qb%%:*}" "${qb#*:}" || bad "publish $qb"; done
    if wait_until 150 drained "$tmp/two/pods" "${two[@]}"; then
      ok "two releases in one namespace, both with a pool called example, drained their own queues"
    else bad "two releases: not drained (jobpool-example: $(counts jobpool-example), -2: $(counts jobpool-example-2))"; show_logs two-first; show_logs two-second; fi
    done_of() { "$kubectl" -n "$ns" get jobs -l "jobpool.dev/instance=$1" -o json |
      python3 -c 'import json,sys; print(sum(1 for j in json.load(sys.stdin)["items"] if (j.get("status") or {}).get("succeeded")))'; }
    settled() { [ "$(done_of "$ns-second-jobpool")" = 1 ] && [ "$(done_of "$ns-jobpool")" = 9 ]; }
    if wait_until 60 settled; then
      ok "each release trimmed only its own history: second keeps 1 finished Job, the first all 9 of its own"
    else bad "histories: second has $(done_of "$ns-second-jobpool") finished Jobs (want 1), the first $(done_of "$ns-jobpool") (want 9)"; fi
  fi
  stop_pids
  "$helm" uninstall second --namespace "$ns" >/dev/null 2>&1
else bad "helm install of a second release: $out"; fi

# -- 4. install.md: add a regex pool with helm upgrade; the new pod (the rollout) serves it ------
# The values file install.md shows (docs/install.md, "More pools"), written out by the test:
python3 - "$root/docs/install.md" "$tmp/pools.yaml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"<!-- pools.yaml -->\n```yaml\n(.*?)```", text, re.S)
if not m:
    sys.exit("docs/install.md has no pools.yaml example")
open(sys.argv[2], "w").write(m.group(1))
PY
[ -s "$tmp/pools.yaml" ] || bad "docs/install.md lost its pools.yaml example"
if out=$("$helm" upgrade jobpool "$root/charts/jobpool" --namespace "$ns" --reuse-values -f "$tmp/pools.yaml" 2>&1); then
  ok "helm upgrade --reuse-values -f pools.yaml (install.md's example, with a queueRegex pool)"
  declare_queue reports.daily; declare_queue reports.weekly
  rb=("reports.daily:userpath-regex-1" "reports.daily:userpath-regex-2" "reports.weekly:userpath-regex-3" "reports.weekly:userpath-regex-4")
  if run_env "$ns" jobpool upgrade; then
    for qb in "${rb[@]}"; do publish "${qb%%:*}" "${qb#*:}" || bad "publish $qb"; done
    if wait_until 150 drained "$tmp/upgrade/pods" "${rb[@]}"; then
      ok "the queueRegex pool drained reports.daily and reports.weekly, each message run once"
    else bad "the regex pool did not drain (daily: $(counts reports.daily), weekly: $(counts reports.weekly))"; show_logs upgrade; fi
  fi
  stop_pids
else bad "helm upgrade: $out"; fi
"$helm" uninstall jobpool --namespace "$ns" >/dev/null 2>&1

# -- 5. install.md: kubectl apply -k, through an overlay that moves everything to a namespace ----
kns=jp-kust-$$
namespaces+=("$kns")
# install.md's two overlay steps, run as written next to a deploy/ (a link to this checkout's),
# then the example's broker, namespace and credentials swapped for this test's.
mkdir -p "$tmp/k" && ln -s "$root/deploy" "$tmp/k/deploy"
python3 - "$root/docs/install.md" "$tmp/k" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for marker, lang, out in (("overlay/config.yaml", "sh", "config.sh"), ("overlay/kustomization.yaml", "yaml", "kustomization.yaml")):
    m = re.search(r"<!-- %s -->\n```%s\n(.*?)```" % (re.escape(marker), lang), text, re.S)
    if not m:
        sys.exit("docs/install.md has no %s example" % marker)
    open("%s/%s" % (sys.argv[2], out), "w").write(m.group(1))
PY
(cd "$tmp/k" && bash -e config.sh) || bad "install.md's overlay/config.yaml step failed"
mv "$tmp/k/kustomization.yaml" "$tmp/k/overlay/kustomization.yaml" 2>/dev/null
sed -i -e "s|http://rabbitmq.messaging:15672|$JOBPOOL_TEST_MGMT_URL|" -e "s|amqp://rabbitmq.messaging:5672|$amqp|" "$tmp/k/overlay/config.yaml"
sed -i -e "s|^namespace: shop |namespace: $kns |" \
  -e "s|literals: \[username=jobpool, password=change-me\]|literals: [username=$JOBPOOL_TEST_RMQ_USER, password=$JOBPOOL_TEST_RMQ_PASS]|" \
  "$tmp/k/overlay/kustomization.yaml"
grep -q "$JOBPOOL_TEST_MGMT_URL" "$tmp/k/overlay/config.yaml" && grep -q "^namespace: $kns " "$tmp/k/overlay/kustomization.yaml" ||
  bad "the overlay example no longer has the lines the test fills in"
if out=$("$kubectl" apply -k "$tmp/k/overlay" 2>&1); then
  ok "kubectl apply -k of install.md's overlay of deploy/ (namespace $kns)"
  got=$("$kubectl" kustomize "$tmp/k/overlay" | python3 -c '
import sys, yaml
objs = [o for o in yaml.safe_load_all(sys.stdin) if o]
cluster = ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")
ns = {o["metadata"].get("namespace") for o in objs if o["kind"] not in cluster}
subj = {s.get("namespace") for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o["subjects"]}
cm = [yaml.safe_load(o["data"]["config.yaml"]) for o in objs if o["kind"] == "ConfigMap"][0]
print(sorted(ns), sorted(subj), cm["kubernetes"].get("namespace"))')
  [ "$got" = "['$kns'] ['$kns'] None" ] && ok "every namespaced object, the bindings' subject and (by not naming one) the config follow the overlay's namespace" \
    || bad "the overlay left something behind: $got"
  declare_queue jobpool-example
  kb=(); for i in 1 2 3; do kb+=("jobpool-example:userpath-kustomize-$i"); done
  if run_env "$kns" jobpool kustomize; then
    for qb in "${kb[@]}"; do publish "${qb%%:*}" "${qb#*:}" || bad "publish $qb"; done
    if wait_until 150 drained "$tmp/kustomize/pods" "${kb[@]}"; then
      ok "the overlay's controller, in $kns, drained the default queue with Jobs in $kns"
    else bad "the overlay's controller did not drain jobpool-example ($(counts jobpool-example))"; show_logs kustomize; fi
    [ "$("$kubectl" -n "$kns" get jobs -o name | grep -c .)" -ge 1 ] || bad "no Job was created in $kns"
  fi
  stop_pids
else bad "kubectl apply -k overlay: $out"; fi

echo "userpath: $pass passed, $fail failed"
[ "$fail" = 0 ]
