#!/usr/bin/env bash
# Mutual TLS, the local backend on the real broker from run.sh, as a user sets it up from
# docs/rabbitmq.md: the broker's AMQP and management ports are reached only through TLS
# listeners (socat, in front of the real ones) that verify the peer's certificate against a
# private CA and refuse a client that shows none. The controller is configured with caFile,
# certFile and keyFile, and nothing else:
# - it reads the depth over amqps:// and https:// with its certificate, and its workers (which
#   get JOBPOOL_CA_FILE, JOBPOOL_CERT_FILE and JOBPOOL_KEY_FILE from it) run every message once;
# - without certFile/keyFile, or with a certificate of another CA, the listeners refuse it: the
#   controller says so (a TLS error) and starts no worker, and every message stays queued;
# - a pool whose worker.env points the workers at a foreign certificate: the workers are refused,
#   and no message is lost;
# - a key that does not belong to the certificate is reported, naming the file.
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
. "$(dirname "$0")/lib.sh" mtls.test mtls-test
ctl=""; socats=()
cleanup() {
  [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }
  for p in "${socats[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -z "${KEEP:-}" ] || cp -r "$T" "$KEEP"; rm -rf "$T"
}
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
it_broker_login
command -v socat >/dev/null || { echo "mtls.test: FAILED: socat is not installed (tests/env/deps.sh test installs it)"; exit 1; }

# A private CA, the listeners' certificate (localhost), a client certificate it signed, and a
# client certificate of another CA.
( cd "$T" &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=jobpool mtls CA" &&
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=localhost" &&
  printf 'subjectAltName=DNS:localhost\n' > srv.ext &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile srv.ext &&
  openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=jobpool" &&
  printf 'extendedKeyUsage=clientAuth\n' > client.ext &&
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 2 -subj "/CN=rogue" &&
  openssl req -newkey rsa:2048 -nodes -keyout other.key -out other.csr -subj "/CN=other"
) >/dev/null 2>&1 || { echo "mtls.test: FAILED: could not make the test certificates with openssl"; exit 1; }
chmod 0600 "$T"/*.key

# front PORT TARGET-PORT [OPTIONS]: a TLS listener on loopback that asks for a client
# certificate (TLS 1.3 unless OPTIONS say otherwise).
front() {
  socat "OPENSSL-LISTEN:$1,bind=127.0.0.1,cert=$T/srv.pem,key=$T/srv.key,cafile=$T/ca.pem,verify=1,reuseaddr,fork${3:+,$3}" \
    "TCP:127.0.0.1:$2" 2>>"$T/socat.log" &
  socats+=($!)
  local i
  for i in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "mtls.test: FAILED: the TLS listener on port $1 did not start"; exit 1
}
AP=$(free_port); MP=$(free_port); MP12=$(free_port)
front "$AP" "$JOBPOOL_TEST_AMQP_PORT"
front "$MP" "${JOBPOOL_TEST_MGMT_URL##*:}"
# TLS 1.2 refuses a certificate inside the handshake, so its alert always reaches the client;
# TLS 1.3 refuses it after, and the listener's reset can overtake the alert.
front "$MP12" "${JOBPOOL_TEST_MGMT_URL##*:}" max-version=TLS1.2

q=mtls
count() { api GET "/api/queues/%2F/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("messages", -1))'; }
# A message is counted by the statistics a few seconds after it is published: wait for it.
wait_count() { # QUEUE N
  local i
  for i in $(seq 1 100); do [ "$(count "$1")" = "$2" ] && return 0; sleep 0.2; done
  return 1
}
api DELETE "/api/queues/%2F/$q" >/dev/null 2>&1
api PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null

cat > "$T/task.sh" <<'EOT'
#!/bin/sh
body=$(cat)
printf '%s\n' "$body" >> "$OUT/ran"
EOT
chmod +x "$T/task.sh"

# config DEPTH [TLS-LINES] [WORKER-ENV-YAML]: the controller's config for the TLS listeners.
config() {
  cat <<EOC
pollInterval: 300ms
backend: local
log: {level: debug}
metrics: {address: ""}
rabbitmq:
  managementUrl: ${MGMT:-https://localhost:$MP}
  amqpUrl: amqps://localhost:$AP
  username: {env: RABBITMQ_USERNAME}
  password: {env: RABBITMQ_PASSWORD}
  depthSource: $1
  caFile: $T/ca.pem
${2:-}
pools:
  - name: mtls
    queue: $q
    maxActive: 4
    idleTimeout: 2s
    worker:
      command: [jobpool-worker, --, $T/task.sh]
      env: {OUT: $T${3:+, $3}}
EOC
}
own_cert="  certFile: $T/client.pem
  keyFile: $T/client.key"
# run NAME CONFIG-FILE SECONDS: the controller for that long, then SIGTERM; its log in NAME.log.
run() {
  "$B/jobpool-controller" --config "$2" --worker "$B/jobpool-worker" > "$T/$1.log" 2>&1 &
  ctl=$!
  local end=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -lt "$end" ] && kill -0 "$ctl" 2>/dev/null; do
    [ "${STOP_WHEN_DRAINED:-}" = 1 ] && [ -f "$T/ran" ] && [ "$(wc -l < "$T/ran")" -ge "$N" ] && break
    sleep 0.2
  done
  kill -TERM "$ctl" 2>/dev/null; wait "$ctl"; local rc=$?; ctl=""
  return $rc
}
publish() { # N
  seq 1 "$1" | sed 's/^/task-/' | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$q" --confirm 2>/dev/null
}
N=6

echo "== mtls: no client certificate, then one of another CA: refused, nothing started"
publish "$N"
wait_count "$q" "$N" || bad "the broker never counted the $N messages published"
# The management API reached directly, the depth over amqps:// through the listener.
MGMT=$JOBPOOL_TEST_MGMT_URL config amqp > "$T/none.yaml"
run none "$T/none.yaml" 4
# The listener's reset can overtake its alert: then the message says what it can.
check "without certFile: the controller's AMQP depth read says the broker requires a certificate" \
  grep -qE "amqp login: a SSL error occurred(: reason\(1116\): tlsv13 alert certificate required| before the broker's first AMQP frame \(a refused client certificate\?\)) err=\"tls" "$T/none.log"
check "without certFile: no worker was started" bash -c "! grep -q 'worker pid-' '$T/none.log'"
check "without certFile: no task ran" [ ! -e "$T/ran" ]
MGMT=https://localhost:$MP12 config management "  certFile: $T/rogue.pem
  keyFile: $T/rogue.key" > "$T/rogue.yaml"
run rogue "$T/rogue.yaml" 4
check "a certificate of another CA: the management read says the broker does not know its CA" \
  grep -q "GET https://localhost:$MP12/.*tls handshake or certificate verification failed: .*reason(1048).*: tlsv1 alert unknown ca" "$T/rogue.log"
check "a certificate of another CA: no task ran" [ ! -e "$T/ran" ]
check "every message is still queued ($N)" wait_count "$q" "$N"

echo "== mtls: a key that is not the certificate's"
config amqp "  certFile: $T/client.pem
  keyFile: $T/other.key" > "$T/mismatch.yaml"
run mismatch "$T/mismatch.yaml" 3
check "the mismatched key is reported, naming the file" grep -q "other.key" "$T/mismatch.log"
check "no task ran with a mismatched key" [ ! -e "$T/ran" ]

echo "== mtls: workers given a foreign certificate through worker.env are refused, nothing lost"
config amqp "$own_cert" "JOBPOOL_CERT_FILE: $T/rogue.pem, JOBPOOL_KEY_FILE: $T/rogue.key" > "$T/wrogue.yaml"
run wrogue "$T/wrogue.yaml" 6
check "the controller read the depth and started workers" grep -qE 'worker pid-[0-9]+ exited' "$T/wrogue.log"
check "no task ran with the foreign certificate" [ ! -e "$T/ran" ]
check "the workers said the broker refused their certificate, and exited 2" \
  bash -c "grep -q 'refused the handshake' '$T/wrogue.log' && grep -qE 'worker pid-[0-9]+ exited code=2\b' '$T/wrogue.log'"
check "every message is still queued ($N)" wait_count "$q" "$N"

echo "== mtls: the controller's and the workers' certificate: every message runs once"
config amqp "$own_cert" > "$T/ok.yaml"
STOP_WHEN_DRAINED=1 run ok "$T/ok.yaml" 60
ran=$(sort "$T/ran" 2>/dev/null | uniq | wc -l); lines=$(wc -l < "$T/ran" 2>/dev/null || echo 0)
check "all $N messages ran, each once (distinct $ran, runs $lines)" [ "$ran.$lines" = "$N.$N" ]
check "the queue is empty" wait_count "$q" 0
check "no TLS failure in the controller's log" bash -c "! grep -E ' (error|warn) ' '$T/ok.log' | grep -qiE 'tls|ssl|certif'"
rm -f "$T/ran"
publish 3
wait_count "$q" 3 || bad "the broker never counted 3 more messages"
config management "$own_cert" > "$T/okm.yaml"
N=3 STOP_WHEN_DRAINED=1 run okm "$T/okm.yaml" 60
check "depthSource management over https:// with the certificate: 3 ran" [ "$(wc -l < "$T/ran" 2>/dev/null || echo 0)" = 3 ]
check "the queue is empty again" wait_count "$q" 0
check "the broker password is in no log" bash -c "! grep -qF '$RABBITMQ_PASSWORD' '$T'/*.log"
it_end "$T/none.log" "$T/ok.log" "$T/socat.log"
