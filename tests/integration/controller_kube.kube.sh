#!/usr/bin/env bash
# The controller with the kube backend against the real API server and Job controller from
# kube-run.sh (no kubelet: pods stay Pending until this test finishes them by hand).
# - N ready messages give exactly N Jobs, with the labels, annotation, env and template;
# - pending Jobs cover their messages: further ticks, a SIGKILL and restart, and a restart
#   with a changed config create no more Jobs and delete none;
# - once their pods finish, history cleanup keeps exactly successfulHistory Jobs;
# - the broker password and the API token never reach the controller's log.
set -u
: "${JOBPOOL_TEST_KUBE_SERVER:?run me through tests/integration/kube-run.sh}"
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/kube-run.sh}"
. "$(dirname "$0")/lib.sh" controller_kube ctlkube
N=7; HIST=3; NS=ctl-it
ctl=""
stop_ctl() { [ -z "$ctl" ] || { kill -"${1:-TERM}" "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }; ctl=""; }
cleanup() { stop_ctl; rm -rf "$T"; }
trap cleanup EXIT
jobs() { k GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev%2Fpool%3Dthumbs"; }
njobs() { jobs | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }
it_broker_login
it_need jobpool-controller jp-publish

k POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$NS\"}}" >/dev/null
mq PUT /api/queues/%2F/thumbs '{"durable":true}' >/dev/null
write_config() { # IDLE-TIMEOUT
  cat > "$T/config.yaml" <<EOC
pollInterval: 500ms
backend: kube
metrics: {address: ""}
$(rabbitmq_yaml amqp)
kubernetes:
  inCluster: false
  kubeconfig: $KUBECONFIG
  namespace: $NS
pools:
  - name: thumbs
    queue: thumbs
    maxActive: 50
    idleTimeout: $1
    taskTimeout: 20m
    successfulHistory: $HIST
    ttlSecondsAfterFinished: 3600
    pendingTimeout: 10m
    jobTemplate:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: worker
              image: registry.example/thumbs:1.4
              args: ["--", "/app/make-thumbnail", "--size", "128"]
              env: [{name: THUMB_QUALITY, value: "85"}]
EOC
}
start_ctl() {
  "$B/jobpool-controller" --config "$T/config.yaml" --log-level debug >> "$T/ctl.log" 2>&1 &
  ctl=$!
}
wait_jobs() { # COUNT: up to 20 s
  local i; for i in $(seq 1 100); do [ "$(njobs)" = "$1" ] && return 0; sleep 0.2; done; return 1
}

echo "== controller, kube backend: $N ready messages"
write_config 30s
seq -f "m%g" 1 $N | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" thumbs --confirm 2>/dev/null
start_ctl
check "$N Jobs created" wait_jobs $N
sleep 3 # six more ticks: the pending Jobs cover the messages, which are still ready
check "no more than $N after six more ticks ($(njobs))" [ "$(njobs)" = $N ]
jobs > "$T/jobs.json"
python3 - "$T/jobs.json" > "$T/shape.txt" <<'EOP'
import json, re, sys
items = json.load(open(sys.argv[1]))["items"]
ok = True
for j in items:
    m = j["metadata"]; c = j["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    # The controller names each Job itself, as generateName would, so that a create whose
    # answer is lost is recognised when it shows up.
    checks = [re.fullmatch(r"thumbs-[bcdfghjklmnpqrstvwxz2456789]{5}", m["name"]) is not None,
              m["labels"].get("app.kubernetes.io/managed-by") == "jobpool",
              m["labels"].get("jobpool.dev/pool") == "thumbs",
              len(m.get("annotations", {}).get("jobpool.dev/config-hash", "")) == 16,
              j["spec"]["template"]["metadata"]["labels"].get("jobpool.dev/pool") == "thumbs",
              c["image"] == "registry.example/thumbs:1.4",
              c["args"] == ["--", "/app/make-thumbnail", "--size", "128"],
              env.get("THUMB_QUALITY") == "85", env.get("JOBPOOL_POOL") == "thumbs",
              env.get("JOBPOOL_QUEUE") == "thumbs", env.get("JOBPOOL_VHOST") == "/",
              env.get("JOBPOOL_IDLE_TIMEOUT") == "30s", env.get("JOBPOOL_TASK_TIMEOUT") == "20m",
              env.get("JOBPOOL_RESULT_FILE") == "/dev/termination-log",
              j["spec"].get("ttlSecondsAfterFinished") == 3600, j["spec"].get("backoffLimit") == 0]
    if not all(checks):
        ok = False; print("bad job", m["name"], checks)
print("shape-ok" if ok and items else "shape-bad")
EOP
check "every Job carries the labels, annotation, env and template" grep -qx shape-ok "$T/shape.txt"

echo "== restarts never duplicate and never delete"
stop_ctl KILL
start_ctl; sleep 3
check "SIGKILL + restart: still $N Jobs ($(njobs))" [ "$(njobs)" = $N ]
stop_ctl TERM
write_config 45s # a config change: new hash for new Jobs, the existing ones stay
start_ctl; sleep 3
check "config change + restart: still $N Jobs, none deleted ($(njobs))" [ "$(njobs)" = $N ]

echo "== finished Jobs: history keeps exactly successfulHistory=$HIST"
mq DELETE /api/queues/%2F/thumbs/contents >/dev/null   # the tasks are done: nothing left ready
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
pods=$(k GET "/api/v1/namespaces/$NS/pods?labelSelector=jobpool.dev%2Fpool%3Dthumbs" |
  python3 -c 'import json,sys; print(" ".join(p["metadata"]["name"] for p in json.load(sys.stdin)["items"]))')
for p in $pods; do
  k PATCH "/api/v1/namespaces/$NS/pods/$p/status" \
    "{\"status\":{\"phase\":\"Succeeded\",\"containerStatuses\":[{\"name\":\"worker\",\"ready\":false,\"restartCount\":0,\"image\":\"registry.example/thumbs:1.4\",\"imageID\":\"\",\"state\":{\"terminated\":{\"exitCode\":0,\"reason\":\"Completed\",\"message\":\"task\",\"startedAt\":\"$now\",\"finishedAt\":\"$now\"}}}]}}" \
    application/merge-patch+json >/dev/null
done
check "history trimmed to $HIST" wait_jobs $HIST
sleep 2
check "and stays at $HIST, no new Jobs for an empty queue ($(njobs))" [ "$(njobs)" = $HIST ]
stop_ctl TERM
check "the password never reached the log" bash -c "! grep -qF '$RABBITMQ_PASSWORD' '$T/ctl.log'"
check "the API token never reached the log" bash -c "! grep -qF '$JOBPOOL_TEST_KUBE_TOKEN' '$T/ctl.log'"
check "ScaledUp event recorded" bash -c "k() { :; }; curl -sS --cacert '$JOBPOOL_TEST_KUBE_CA' -H 'Authorization: Bearer $JOBPOOL_TEST_KUBE_TOKEN' '$JOBPOOL_TEST_KUBE_SERVER/api/v1/namespaces/$NS/events' | grep -q ScaledUp"
k DELETE "/api/v1/namespaces/$NS" >/dev/null
it_end "$T/ctl.log"
