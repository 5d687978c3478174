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
# - an invalid spec (minActive > maxActive) and a name the config file holds are not served, and
#   their Ready condition says why (JobPools in other namespaces: jobpool_ns);
# - a JobPool with its own broker connection (spec.connectionSecretRef): with the Secret missing
#   it is not served (ConnectionSecretNotFound) and starts nothing; once the Secret exists it
#   drains a queue on a vhost only the Secret's user may use (the controller's own user has no
#   permission there, so the workers must log in as that user); its depth is read with the
#   Secret's login (a wrong password on the broker gives DepthUnavailable); its Jobs get the URL
#   and the login by secretKeyRef, no password in any Job or in the controller's log; a broken
#   Secret gives ConnectionSecretInvalid naming the key, starts nothing while the other pool
#   goes on, and recovers when fixed; with the broker behind TLS, the Secret's ca.crt is what
#   the depth reads (https) and the workers (amqps) trust, and another CA is refused.
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
$(worker_template '  ' "$out")
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
apply_pool 2 "" clash
why() { [ "$(cond Ready reason "$1" "${2:-default}")" = "$3" ]; }
wait_until 10 why bad default InvalidSpec
check "invalid spec: Ready False, InvalidSpec: $(cond Ready message bad)" \
  [ "$(cond Ready status bad)/$(cond Ready message bad)" = "False/spec.minActive: must be <= maxActive (2), got 3" ]
wait_until 10 why clash default NameClash
check "name clash with the file: Ready False, NameClash" [ "$(cond Ready status clash)/$(cond Ready reason clash)" = "False/NameClash" ]
check "no Jobs for the unserved JobPools" [ "$(awk '$2 == "ADDED" && $4 == "bad"' "$E2E_WORK/jobs.events" | wc -l)" = 0 ]

# -- its own broker connection (connectionSecretRef) -------------------------------------------
own=$(scenario_dir jobpool-own)
opw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mgmt PUT /api/vhosts/e2e-own '{}' >/dev/null
mgmt PUT /api/users/e2e-own "{\"password\":\"$opw\",\"tags\":\"management\"}" >/dev/null
mgmt PUT /api/permissions/e2e-own/e2e-own '{"configure":".*","write":".*","read":".*"}' >/dev/null
mgmt DELETE "/api/permissions/e2e-own/$JOBPOOL_TEST_RMQ_USER" >/dev/null 2>&1 || true
omgmt() { JOBPOOL_TEST_RMQ_USER=e2e-own JOBPOOL_TEST_RMQ_PASS=$opw mgmt "$@"; }
omgmt PUT /api/queues/e2e-own/e2e.own '{"durable":true}' >/dev/null || bad "declare e2e.own as the Secret's user"
opublish() { JOBPOOL_TEST_RMQ_USER=e2e-own JOBPOOL_TEST_RMQ_PASS=$opw \
  $TOOL publish --vhost e2e-own --queue e2e.own --count "$1" --start "$2" --sleep 0 --log "$own/pub"; }
own_secret() { # KEY=VALUE...: the Secret own-rabbitmq as exactly these keys (created or replaced)
  local args=() kv
  for kv in "$@"; do args+=(--from-literal="$kv"); done
  kc create secret generic own-rabbitmq -n default "${args[@]}" --dry-run=client -o json |
    kc apply -f - >/dev/null
}
good_secret() { own_secret managementUrl="$JOBPOOL_TEST_MGMT_URL" \
  amqpUrl="amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT/e2e-own" username=e2e-own password="$opw"; }
kc apply -f - >/dev/null <<EOF || bad "kubectl apply of JobPool own failed"
apiVersion: jobpool.dev/v1alpha1
kind: JobPool
metadata: {name: own, namespace: default}
spec:
  queue: e2e.own
  maxActive: 4
  idleTimeout: 10s
  connectionSecretRef: {name: own-rabbitmq}
$(worker_template '  ' "$own" -)
EOF
owned() { awk '$2 == "ADDED" && $4 == "own"' "$E2E_WORK/jobs.events" | wc -l; }
own_done() { [ "$(lines "$own/done")" -ge "$1" ]; }
wait_until 20 why own default ConnectionSecretNotFound
check "no Secret: Ready False, ConnectionSecretNotFound: $(cond Ready message own)" \
  [ "$(cond Ready status own)/$(cond Ready message own)" = "False/Secret default/own-rabbitmq (spec.connectionSecretRef) not found" ]
opublish 3 1 || bad "publish to e2e.own"
sleep $((4 * POLL))
check "no Secret: no Job started with 3 messages waiting ($(owned))" [ "$(owned)" = 0 ]
good_secret
wait_until 60 own_done 3
opublish 5 4 || bad "publish to e2e.own"
wait_until 60 own_done 8
check "with its Secret: the JobPool drained e2e.own on vhost e2e-own ($(lines "$own/done") of 8 done)" [ "$(lines "$own/done")" = 8 ]
check "each exactly once" bash -c "cut -d' ' -f1 '$own/done' | sort -n | diff -q - <(seq 1 8) >/dev/null"
check "the controller's own user has no permission on vhost e2e-own: the workers logged in as the Secret's" \
  bash -c "! curl -fsS -m 5 -u '$JOBPOOL_TEST_RMQ_USER:$JOBPOOL_TEST_RMQ_PASS' '$JOBPOOL_TEST_MGMT_URL/api/permissions/e2e-own/$JOBPOOL_TEST_RMQ_USER' >/dev/null 2>&1"
wait_until 20 why own default Serving
check "with its Secret: Ready True, Serving" [ "$(cond Ready status own)/$(cond Ready reason own)" = "True/Serving" ]
job=$(kc get jobs -n default -l jobpool.dev/pool=own -o json)
env_of() { jq -c --arg n "$1" '[.items[0].spec.template.spec.containers[0].env[] | select(.name == $n)][0]' <<< "$job"; }
check "its Jobs: JOBPOOL_AMQP_URL is the Secret's URL, no login in it ($(env_of JOBPOOL_AMQP_URL))" \
  [ "$(env_of JOBPOOL_AMQP_URL | jq -r .value)" = "amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT/e2e-own" ]
check "its Jobs: the login by secretKeyRef to own-rabbitmq ($(env_of JOBPOOL_AMQP_PASSWORD))" \
  [ "$(env_of JOBPOOL_AMQP_USERNAME | jq -c .valueFrom)/$(env_of JOBPOOL_AMQP_PASSWORD | jq -c .valueFrom)" = \
    '{"secretKeyRef":{"key":"username","name":"own-rabbitmq"}}/{"secretKeyRef":{"key":"password","name":"own-rabbitmq"}}' ]
check "its Jobs: JOBPOOL_VHOST is the URL's vhost e2e-own" [ "$(env_of JOBPOOL_VHOST | jq -r .value)" = e2e-own ]
check "no password in any Job" bash -c "! grep -qF '$opw' <<< '$job'"
# The depth is read with the Secret's login: change the user's password on the broker only.
mgmt PUT /api/users/e2e-own '{"password":"not-the-secrets","tags":"management"}' >/dev/null
wait_until 20 why own default DepthUnavailable
check "a wrong password on the broker: Ready False, DepthUnavailable ($(cond Ready message own))" \
  [ "$(cond Ready reason own)" = DepthUnavailable ]
mgmt PUT /api/users/e2e-own "{\"password\":\"$opw\",\"tags\":\"management\"}" >/dev/null
wait_until 30 why own default Serving
check "the password back: Ready True again" [ "$(cond Ready reason own)" = Serving ]
# A broken Secret: read again within 30 s (CONNS_REREAD_MS, less up to a fifth).
own_secret amqpUrl="amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT/e2e-own" username=e2e-own password="$opw"
t_break=$(now_ms)
wait_until 60 why own default ConnectionSecretInvalid
msg=$(cond Ready message own)
check "Secret without managementUrl: ConnectionSecretInvalid within $(( ($(now_ms) - t_break) / 1000 )) s: $msg" \
  bash -c "[ '$(cond Ready status own)' = False ] && grep -q '^Secret default/own-rabbitmq: key managementUrl: required' <<< '$msg'"
c_own=$(owned)
opublish 2 9 || bad "publish to e2e.own"
$TOOL publish --queue e2e.jp --count 2 --start $((T + 1)) --sleep 0 --log "$out/pub5" || bad "publish"
wait_until 60 done_n $((T + 2))
check "broken Secret: the other JobPool goes on (2 more done on e2e.jp)" [ "$(lines "$out/done")" = $((T + 2)) ]
check "broken Secret: no Job started for own ($(( $(owned) - c_own )))" [ "$(owned)" = "$c_own" ]
good_secret
t_fix=$(now_ms)
wait_until 60 own_done 10
check "fixed Secret: the 2 waiting messages ran within $(( ($(now_ms) - t_fix) / 1000 )) s ($(lines "$own/done") of 10)" \
  bash -c "cut -d' ' -f1 '$own/done' | sort -n | diff -q - <(seq 1 10) >/dev/null"
wait_until 20 why own default Serving
check "fixed Secret: Ready True" [ "$(cond Ready reason own)" = Serving ]
# -- its own CA: the broker behind TLS (socat), trusted through the Secret's ca.crt -------------
# The controller reads the depth over https and the workers consume over amqps, both verifying
# against the CA the Secret holds (the system's CAs do not know it); another CA is refused.
tls="$own/tls"; mkdir -p "$tls"
( cd "$tls" &&
  for ca in ca other; do
    openssl req -x509 -newkey rsa:2048 -nodes -keyout $ca.key -out $ca.pem -days 2 -subj "/CN=jobpool $ca CA" || exit 1
  done &&
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" &&
  printf 'subjectAltName=DNS:localhost\n' > ext &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext
) >/dev/null 2>&1 || bad "could not make a test CA and certificate with openssl"
tls_m=$(free_port); tls_a=$(free_port)
socat "OPENSSL-LISTEN:$tls_m,bind=127.0.0.1,cert=$tls/srv.pem,key=$tls/srv.key,verify=0,reuseaddr,fork" \
  "TCP:127.0.0.1:${JOBPOOL_TEST_MGMT_URL##*:}" 2>/dev/null &
socat_m=$!
socat "OPENSSL-LISTEN:$tls_a,bind=127.0.0.1,cert=$tls/srv.pem,key=$tls/srv.key,verify=0,reuseaddr,fork" \
  "TCP:127.0.0.1:$JOBPOOL_TEST_AMQP_PORT" 2>/dev/null &
socat_a=$!
tls_secret() { # NAME CA-FILE: a Secret for the broker behind TLS, trusting CA-FILE
  kc create secret generic "$1" -n default --from-literal=managementUrl="https://localhost:$tls_m" \
    --from-literal=amqpUrl="amqps://localhost:$tls_a/e2e-own" --from-literal=username=e2e-own \
    --from-literal=password="$opw" --from-file=ca.crt="$2" --dry-run=client -o json | kc apply -f - >/dev/null
}
tls_secret own-tls "$tls/ca.pem"
tls_secret own-otherca "$tls/other.pem"
# A Secret name not read before is read at once.
kc patch jobpool own -n default --type merge -p '{"spec":{"connectionSecretRef":{"name":"own-otherca"}}}' >/dev/null
wait_until 20 why own default DepthUnavailable
check "ca.crt of another CA: Ready False, DepthUnavailable ($(cond Ready message own))" \
  [ "$(cond Ready reason own)" = DepthUnavailable ]
kc patch jobpool own -n default --type merge -p '{"spec":{"connectionSecretRef":{"name":"own-tls"}}}' >/dev/null
wait_until 20 why own default Serving
check "ca.crt of the broker's CA: the depth is read over https (Ready $(cond Ready reason own))" \
  [ "$(cond Ready reason own)" = Serving ]
opublish 3 11 || bad "publish to e2e.own"
wait_until 60 own_done 13
check "over amqps with the Secret's CA: the 3 messages ran ($(lines "$own/done") of 13)" \
  bash -c "cut -d' ' -f1 '$own/done' | sort -n | diff -q - <(seq 1 13) >/dev/null"
job=$(kc get jobs -n default -l jobpool.dev/pool=own -o json)
tls_jobs=$(jq -c '[.items[] | select(any(.spec.template.spec.volumes[]?; .secret.secretName == "own-tls"))
  | .spec.template.spec.containers[0].env[] | select(.name == "JOBPOOL_CA_FILE") | .value] | unique' <<< "$job")
check "its Jobs: the Secret own-tls mounted for the CA, JOBPOOL_CA_FILE pointing into it ($tls_jobs)" \
  [ "$tls_jobs" = '["/etc/jobpool/ca/ca.crt"]' ]
kill "$socat_m" "$socat_a" 2>/dev/null; wait "$socat_m" "$socat_a" 2>/dev/null

check "the Secret's password never in the controller's log" bash -c "! grep -qF '$opw' '$CTRL_LOG'"

kc delete jobpool --all -n default --wait=false >/dev/null 2>&1
kc delete secret own-rabbitmq own-tls own-otherca -n default >/dev/null 2>&1
delete_jobs jp
delete_jobs own
finish
