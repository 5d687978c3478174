#!/usr/bin/env bash
# Two controllers (kubernetes.instance blue and green) in one namespace on the real API server,
# each with a pool named "example", each with leader election on by default names, and workers
# that get their broker login from rabbitmq.workerSecret, run by the node simulator:
# - each creates exactly its own Jobs and, over many ticks, never counts the other's (exact
#   counts); each holds its own Lease (<instance>-leader);
# - every Job has JOBPOOL_AMQP_USERNAME/PASSWORD as secretKeyRef, JOBPOOL_AMQP_URL without user
#   info, the CA volume, and no copy of the password anywhere in its JSON;
# - every Job (and the Pod the Job controller makes of it) has the restricted Pod Security
#   fields; a template that asks for more keeps it, and the controller warns once;
# - the workers log in as a broker user whose password is S3cr:t@x/%y and drain both queues,
#   every message run exactly once; green's over amqps:// with the CA from rabbitmq.caSecret,
#   to a TLS listener that requires a client certificate, which they show from
#   rabbitmq.certSecret (the node simulator mounts the Secrets as a kubelet would);
# - blue (successfulHistory 0) deletes its finished Jobs; green's (history 10) all stay;
# - blue's config names no namespace: it works in POD_NAMESPACE; without POD_NAME, its
#   TemplateRejected Event is warned about once instead of dropped in silence.
set -u
: "${JOBPOOL_TEST_KUBE_SERVER:?run me through tests/integration/kube-run.sh}"
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/kube-run.sh}"
. "$(dirname "$0")/lib.sh" instances inst
NS=inst-it-$RANDOM; NB=3; NG=5
WUSER=inst-worker; WPASS='S3cr:t@x/%y'
chmod 0755 "$T"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; [ -z "${KEEP:-}" ] || cp -r "$T" "$KEEP"; rm -rf "$T"; }
trap cleanup EXIT
it_broker_login
it_need jobpool-controller jobpool-worker jp-publish
# Jobs of one instance ("" for every Job of pool example): the count
njobs() {
  local sel="jobpool.dev%2Fpool%3Dexample${1:+%2Cjobpool.dev%2Finstance%3D$1}"
  k GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=$sel" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'
}
wait_for() { # SECONDS CMD...: until CMD succeeds
  local end=$(( $(date +%s) + $1 )); shift
  while ! "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.3; done
}
counts_are() { [ "$(njobs blue)" = "$1" ] && [ "$(njobs green)" = "$2" ] && [ "$(njobs)" = "$3" ]; }

k POST /api/v1/namespaces "{\"metadata\":{\"name\":\"$NS\"}}" >/dev/null
# The broker user workers log in as, with a password full of URL syntax, and its Secret.
mq PUT "/api/users/$WUSER" "$(jq -n --arg p "$WPASS" '{password:$p,tags:""}')" >/dev/null
mq PUT "/api/permissions/%2F/$WUSER" '{"configure":".*","write":".*","read":".*"}' >/dev/null
k POST "/api/v1/namespaces/$NS/secrets" "$(jq -n --arg u "$WUSER" --arg p "$WPASS" \
  '{metadata:{name:"jobpool-worker"},stringData:{username:$u,password:$p}}')" >/dev/null
# green's workers reach the broker over amqps:// (socat with a certificate of a private CA in
# front of it, requiring a client certificate that CA signed): the CA only reaches them through
# rabbitmq.caSecret, their certificate through rabbitmq.certSecret.
mkdir -p "$T/tls"
( cd "$T/tls" &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=jobpool inst CA" &&
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" &&
  printf 'subjectAltName=DNS:localhost\n' > ext &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext &&
  openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=green worker" &&
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2
) >/dev/null 2>&1 || bad "could not make a test CA and certificates with openssl"
TLSPORT=$(free_port)
command -v socat >/dev/null || bad "socat is not installed (tests/env/deps.sh test installs it)"
socat "OPENSSL-LISTEN:$TLSPORT,bind=127.0.0.1,cert=$T/tls/srv.pem,key=$T/tls/srv.key,cafile=$T/tls/ca.pem,verify=1,reuseaddr,fork" \
  "TCP:127.0.0.1:$JOBPOOL_TEST_AMQP_PORT" 2>"$T/socat.log" &
pids+=($!)
k POST "/api/v1/namespaces/$NS/secrets" "$(jq -n --rawfile ca "$T/tls/ca.pem" \
  '{metadata:{name:"rabbitmq-ca"},stringData:{"ca.crt":$ca}}')" >/dev/null
k POST "/api/v1/namespaces/$NS/secrets" "$(jq -n --rawfile c "$T/tls/client.pem" --rawfile key "$T/tls/client.key" \
  '{metadata:{name:"rabbitmq-client"},type:"kubernetes.io/tls",stringData:{"tls.crt":$c,"tls.key":$key}}')" >/dev/null
for q in inst.blue inst.green inst.broken inst.rx.one inst.rx.two; do
  mq DELETE "/api/queues/%2F/$q" >/dev/null 2>&1
  mq PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
done

# One write per task, so that concurrent workers never interleave their lines.
printf '#!/bin/sh\nbody=$(cat)\nprintf "%%s\\n" "$body" >> "$1"\n' > "$T/task.sh"
chmod 0755 "$T/task.sh"
config() { # INSTANCE QUEUE HISTORY [EXTRA-CONTAINER-YAML]
  cat <<EOC
pollInterval: 500ms
backend: kube
log: {level: debug}
metrics: {address: ""}
$(rabbitmq_yaml)
  workerSecret: {name: jobpool-worker}
  caSecret: {name: rabbitmq-ca}
kubernetes: {inCluster: false, kubeconfig: $KUBECONFIG, namespace: $NS, instance: $1}
leaderElection: {enabled: true, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 1s}
pools:
  - name: example
    queue: $2
    maxActive: 20
    idleTimeout: 3s
    successfulHistory: $3
    ttlSecondsAfterFinished: 3600
    jobTemplate:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: worker
              image: registry.example/worker:1
              args: ["--", "$T/task.sh", "$T/ran.$1"]
${4:-}
EOC
}
# blue names no namespace: it must take POD_NAMESPACE (the downward API), not the kubeconfig
# context's "default".
config blue inst.blue 0 | sed "s/, namespace: $NS//" > "$T/blue.yaml"
# A pool whose template the API server rejects: its TemplateRejected Event has no object to
# name without POD_NAME, which blue must say (once), not drop in silence.
cat >> "$T/blue.yaml" <<EOC
  - name: broken
    queue: inst.broken
    maxActive: 1
    jobTemplate: {template: {spec: {restartPolicy: Never, containers: []}}}
EOC
# green's template asks for more than "restricted": kept as written, and warned about once.
config green inst.green 10 "              securityContext: {allowPrivilegeEscalation: true}" |
  sed "s|amqpUrl: amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT|amqpUrl: amqps://localhost:$TLSPORT|" \
  > "$T/green.yaml"
grep -q "amqpUrl: amqps://localhost:$TLSPORT" "$T/green.yaml" || bad "green's config has no amqps:// URL"
sed -i 's|^  caSecret: {name: rabbitmq-ca}$|&\n  certSecret: {name: rabbitmq-client}|' "$T/green.yaml"
grep -q "certSecret: {name: rabbitmq-client}" "$T/green.yaml" || bad "green's config has no certSecret"
# And a regex pool: each Job is given one concrete queue.
cat >> "$T/green.yaml" <<EOC
  - name: rx
    queueRegex: '^inst[.]rx[.]'
    maxActive: 10
    idleTimeout: 3s
    jobTemplate:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: worker
              image: registry.example/worker:1
              args: ["--", "$T/task.sh", "$T/ran.rx"]
EOC

echo "== two instances, one namespace, a pool named example each"
seq -f "b%g" 1 $NB | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" inst.blue --confirm 2>/dev/null
seq -f "g%g" 1 $NG | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" inst.green --confirm 2>/dev/null
echo x | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" inst.broken --confirm 2>/dev/null
printf 'inst.rx.one 1\ninst.rx.one 2\n' | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" inst.rx.one --confirm 2>/dev/null
echo 'inst.rx.two 1' | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" inst.rx.two --confirm 2>/dev/null
for i in blue green; do
  env -u POD_NAME POD_NAMESPACE=$NS "$B/jobpool-controller" --config "$T/$i.yaml" >> "$T/$i.log" 2>&1 &
  pids+=($!)
done
check "blue makes $NB Jobs and green $NG, $((NB + NG)) in all" wait_for 30 counts_are $NB $NG $((NB + NG))
sleep 4 # eight more ticks each: neither counts the other's pending Jobs as its own
check "still exactly $NB blue, $NG green ($(njobs blue), $(njobs green), $(njobs) in all)" \
  counts_are $NB $NG $((NB + NG))
for i in blue green; do
  holder=$(k GET "/apis/coordination.k8s.io/v1/namespaces/$NS/leases/$i-leader" | jq -r '.spec.holderIdentity // ""')
  check "$i holds its own Lease $i-leader (${holder:-none})" [ -n "$holder" ]
done
# The pool's retries back off with jitter (a retry came 14.7 s after the first rejection once):
# wait for the second rejection rather than assuming it has come, then count the warnings.
rejected_twice() { [ "$(grep -c 'rejected (422)' "$T/blue.log")" -ge 2 ]; }
check "blue's rejected template is retried (a second 422 within 60 s)" wait_for 60 rejected_twice
check "blue's rejected template: the Event without POD_NAME is warned about exactly once" \
  [ "$(grep -c 'event TemplateRejected not recorded: POD_NAME is not set' "$T/blue.log")" = 1 ]

rxq() { # the queue of each Job of pool rx, from its env and from its annotation, sorted
  k GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev%2Fpool%3Drx" | jq -r \
    '[.items[] | (.spec.template.spec.containers[0].env[] | select(.name == "JOBPOOL_QUEUE") | .value) + "=" + .metadata.annotations["jobpool.dev/queue"]] | sort | join(" ")'
}
check "the regex pool's Jobs get one concrete queue each, by backlog ($(rxq))" \
  [ "$(rxq)" = "inst.rx.one=inst.rx.one inst.rx.one=inst.rx.one inst.rx.two=inst.rx.two" ]

echo "== the Jobs: the broker login by reference, restricted by default"
k GET "/apis/batch/v1/namespaces/$NS/jobs?labelSelector=jobpool.dev%2Fpool%3Dexample" > "$T/jobs.json"
k GET "/api/v1/namespaces/$NS/pods?labelSelector=jobpool.dev%2Fpool%3Dexample" > "$T/pods.json"
check "no Job or Pod holds the password, raw or encoded" bash -c \
  "! grep -qF -e '$WPASS' -e 'S3cr%3At%40x%2F%25y' -e '$RABBITMQ_PASSWORD' '$T/jobs.json' '$T/pods.json'"
python3 - "$T/jobs.json" "$T/pods.json" "$JOBPOOL_TEST_AMQP_PORT" "$TLSPORT" > "$T/shape.txt" <<'EOP'
import json, sys
jobs = json.load(open(sys.argv[1]))["items"]
pods = json.load(open(sys.argv[2]))["items"]
urls = {"blue": "amqp://127.0.0.1:%s" % sys.argv[3], "green": "amqps://localhost:%s" % sys.argv[4]}
bad = []
def need(ok, what):
    if not ok:
        bad.append(what)
for j in jobs:
    inst = j["metadata"]["labels"].get("jobpool.dev/instance")
    need(inst in ("blue", "green"), "instance label")
    need(j["spec"]["template"]["metadata"]["labels"].get("jobpool.dev/instance") == inst,
         "pod template instance label")
for o, inst, ps in [(j["metadata"]["name"], j["metadata"]["labels"].get("jobpool.dev/instance"),
                     j["spec"]["template"]["spec"]) for j in jobs] + \
                   [(p["metadata"]["name"], p["metadata"]["labels"].get("jobpool.dev/instance"),
                     p["spec"]) for p in pods]:
    c = ps["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    need(env.get("JOBPOOL_AMQP_URL", {}).get("value") == urls.get(inst), o + " url")
    for v, key in (("JOBPOOL_AMQP_USERNAME", "username"), ("JOBPOOL_AMQP_PASSWORD", "password")):
        ref = env.get(v, {}).get("valueFrom", {}).get("secretKeyRef", {})
        need(ref == {"name": "jobpool-worker", "key": key} and "value" not in env.get(v, {}),
             o + " " + v)
    need(env.get("JOBPOOL_CA_FILE", {}).get("value") == "/etc/jobpool/ca/ca.crt", o + " ca file")
    need(any(m["mountPath"] == "/etc/jobpool/ca" and m.get("readOnly") for m in c.get("volumeMounts", [])),
         o + " ca mount")
    need(any(v.get("secret", {}).get("secretName") == "rabbitmq-ca" for v in ps.get("volumes", [])),
         o + " ca volume")
    # green's workers show a client certificate; blue's have none to show.
    cert = {"JOBPOOL_CERT_FILE": "/etc/jobpool/cert/tls.crt", "JOBPOOL_KEY_FILE": "/etc/jobpool/cert/tls.key"}
    for v, f in cert.items():
        need(env.get(v, {}).get("value") == (f if inst == "green" else None), o + " " + v)
    need(any(m["mountPath"] == "/etc/jobpool/cert" and m.get("readOnly") for m in c.get("volumeMounts", []))
         == (inst == "green"), o + " cert mount")
    need(any(v.get("secret", {}).get("secretName") == "rabbitmq-client" for v in ps.get("volumes", []))
         == (inst == "green"), o + " cert volume")
    need(ps.get("automountServiceAccountToken") is False, o + " automount")
    sc = ps.get("securityContext", {})
    need(sc.get("runAsNonRoot") is True, o + " runAsNonRoot")
    need(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", o + " seccomp")
    csc = c.get("securityContext", {})
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], o + " drop ALL")
    need(csc.get("allowPrivilegeEscalation") in (False, True), o + " allowPrivilegeEscalation")
n_true = sum(1 for j in jobs
             if j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"])
green = sum(1 for j in jobs if j["metadata"]["labels"].get("jobpool.dev/instance") == "green")
need(n_true == green, "the template's allowPrivilegeEscalation true kept on green's Jobs only")
need(len(pods) >= len(jobs) and jobs, "a pod for every Job")
print("shape-ok" if not bad else "shape-bad: " + ", ".join(bad[:8]))
EOP
check "Jobs and Pods: secretKeyRef login, URL, CA, client certificate (green's), restricted fields ($(cat "$T/shape.txt"))" \
  grep -qx shape-ok "$T/shape.txt"
check "green warns once that its template asks for more than restricted" bash -c \
  "[ \$(grep -c 'asks for more than Pod Security' '$T/green.log') = 1 ] && grep -q 'allowPrivilegeEscalation=true' '$T/green.log'"
check "blue does not" bash -c "! grep -q 'asks for more' '$T/blue.log'"

echo "== the node simulator runs them: workers log in from the Secret"
python3 "$JOBPOOL_ROOT/tests/e2e/nodesim.py" --namespace "$NS" --worker "$B/jobpool-worker" \
  --log-dir "$T" > "$T/nodesim.log" 2>&1 &
pids+=($!)
ran() { cat "$T"/ran.* 2>/dev/null | grep -c .; }
check "all $((NB + NG + 3)) messages ran" wait_for 60 bash -c "[ \$(cat $T/ran.* 2>/dev/null | grep -c .) -ge $((NB + NG + 3)) ]"
sleep 2
check "each exactly once (blue: $(sort "$T/ran.blue" 2>/dev/null | grep . | tr '\n' ' '))" \
  [ "$(grep . "$T/ran.blue" 2>/dev/null | sort | tr '\n' ' ')" = "b1 b2 b3 " ]
check "green: $(grep . "$T/ran.green" 2>/dev/null | sort | tr '\n' ' ')" \
  [ "$(grep . "$T/ran.green" 2>/dev/null | sort | tr '\n' ' ')" = "g1 g2 g3 g4 g5 " ]
check "regex pool: each queue's messages once ($(sort "$T/ran.rx" 2>/dev/null | tr '\n' ' '))" \
  [ "$(sort "$T/ran.rx" 2>/dev/null | tr '\n' ' ')" = "inst.rx.one 1 inst.rx.one 2 inst.rx.two 1 " ]
logins=$(mq GET /api/connections 2>/dev/null | jq -r --arg u "$WUSER" '[.[] | select(.user == $u)] | length')
check "workers logged in as $WUSER (no worker left connected: ${logins:-?})" [ "${logins:-x}" = 0 ]
check "the workers never printed the password" bash -c "! cat '$T'/example-*.log | grep -qF '$WPASS'"
check "green's workers verified the broker with the CA from caSecret (no TLS failure logged)" \
  bash -c "! cat '$T'/example-*.log '$T'/rx-*.log 2>/dev/null | grep -qi 'verification failed'"
check "the TLS listener refused no handshake (green's workers showed the certificate from certSecret)" \
  bash -c "! grep -q 'SSL_accept' '$T/socat.log'"
wait_for 30 counts_are 0 $NG $NG
check "blue (successfulHistory 0) deletes its finished Jobs; green keeps all $NG ($(njobs blue), $(njobs green))" \
  counts_are 0 $NG $NG
for i in blue green; do
  check "$i's log holds no password" bash -c "! grep -qF -e '$WPASS' -e '$RABBITMQ_PASSWORD' '$T/$i.log'"
done

for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; pids=()
mq DELETE "/api/users/$WUSER" >/dev/null
k DELETE "/api/v1/namespaces/$NS" >/dev/null
it_end "$T/blue.log" "$T/green.log" "$T/nodesim.log"
