#!/usr/bin/env bash
# Start and stop a private Kubernetes control plane on loopback for tests: Debian's etcd plus
# kube-apiserver and kube-controller-manager 1.20 built by tests/env/kube-build.sh (cached).
#   eval "$(tests/env/kube.sh start)"   prints export lines: KUBECONFIG, JOBPOOL_KUBE_DIR,
#                                        JOBPOOL_TEST_KUBE_SERVER/_TOKEN (admin)/_CA
#   tests/env/kube.sh env  [DIR]         prints the export lines again
#   tests/env/kube.sh stop [DIR]         kills exactly the processes it started, removes DIR
#   tests/env/kube.sh apiserver-stop|apiserver-start [DIR]   fault injection (the e2e faults test)
#   JOBPOOL_KUBE_AUDIT=1 at start: audit every request's metadata to DIR/log/audit.log
#   JOBPOOL_KUBE_KCM_QPS=N: the controller-manager's client rate (upstream default 20)
#   JOBPOOL_KUBE_MAX_MUTATING=N at start: kube-apiserver --max-mutating-requests-inflight N
#     with priority and fairness off (which would otherwise pool the limit with the read one),
#     so a bench can provoke the server's 429s (upstream default 200, fairness on)
# No kubelet runs: Jobs get real Pods from the Job controller, but nothing runs them.
# Errors go to stderr with the logs' tails; the exit code is then non-zero.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "kube.sh: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

print_env() {
  # shellcheck disable=SC1091
  . "$dir/env"
  echo "export JOBPOOL_KUBE_DIR='$dir'"
  echo "export KUBECONFIG='$dir/admin.kubeconfig'"
  echo "export JOBPOOL_TEST_KUBE_SERVER='https://127.0.0.1:$API_PORT'"
  echo "export JOBPOOL_TEST_KUBE_TOKEN='$(cat "$dir/admin.token")'"
  echo "export JOBPOOL_TEST_KUBE_CA='$dir/pki/ca.crt'"
}

tails() {
  local f
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] || continue
    echo "---- $(basename "$f") (last 25 lines)" >&2
    tail -n 25 "$f" >&2
  done
}

halt() {
  [ -d "$dir" ] || return 0
  local f pid
  # Reverse start order: controller-manager, apiserver, etcd.
  for f in kcm apiserver etcd; do
    [ -f "$dir/$f.pid" ] || continue
    pid=$(cat "$dir/$f.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$f.pid"
  done
}

wait_ready() { # URL SECONDS PIDFILE NAME TLS-OPTION: until the URL answers HTTP 200 (the
  # status, not the body: /readyz lists "ok" checks even while it fails)
  local url=$1 secs=$2 pidf=$3 name=$4 tlsopt=$5 code i
  for i in $(seq 1 $((secs * 4))); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -m 2 $tlsopt \
      -H "Authorization: Bearer $(cat "$dir/admin.token")" "$url" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    if ! kill -0 "$(cat "$pidf")" 2>/dev/null; then
      tails; die "$name exited during start-up (logs above, in $dir/log)"
    fi
    sleep 0.25
  done
  tails; die "$name: $url did not answer 200 within $secs s (last status: ${code:-none})"
}

launch_apiserver() { # (re)start the API server of instance $dir; ready when /readyz is 200.
  # With JOBPOOL_KUBE_AUDIT=1 at start, every request is audited (metadata only) to
  # $dir/log/audit.log, so tests can count one client's requests by its user agent.
  # shellcheck disable=SC1091
  . "$dir/env"
  local audit=()
  if [ "${AUDIT:-0}" = 1 ]; then
    printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n' > "$dir/audit-policy.yaml"
    audit=(--audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/log/audit.log"
           --audit-log-format json --audit-log-maxsize 2000 --audit-log-maxbackup 1)
  fi
  local inflight=()
  [ -z "${MAX_MUTATING:-}" ] ||
    inflight=(--max-mutating-requests-inflight "$MAX_MUTATING" --enable-priority-and-fairness=false)
  setsid "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --insecure-port 0 \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --cert-dir "$dir/certs" \
    --client-ca-file "$dir/pki/ca.crt" \
    --token-auth-file "$dir/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-account-issuer "https://kubernetes.default.svc" \
    --api-audiences "https://kubernetes.default.svc" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --feature-gates TTLAfterFinished=true \
    --enable-admission-plugins NamespaceLifecycle,ServiceAccount \
    --allow-privileged=false --profiling=false \
    "${inflight[@]}" \
    --logtostderr=true --v=1 "${audit[@]}" \
    >>"$dir/log/kube-apiserver.log" 2>&1 </dev/null &
  echo $! > "$dir/apiserver.pid"
  wait_ready "https://127.0.0.1:$API_PORT/readyz" 90 "$dir/apiserver.pid" kube-apiserver \
    "--cacert $dir/pki/ca.crt"
}

start() {
  local t0 bin
  t0=$(date +%s.%N)
  bin=$("$here/kube-build.sh" | tail -n1) || die "kube-build.sh failed"
  [ -x "$bin/kube-apiserver" ] || die "no kube-apiserver in $bin"
  command -v etcd >/dev/null || "$here/deps.sh" kube >&2
  command -v etcd >/dev/null || die "etcd not installed (tests/env/deps.sh kube)"

  dir=$(mktemp -d /tmp/jobpool-kube.XXXXXX)
  mkdir -p "$dir/log" "$dir/pki" "$dir/etcd" "$dir/certs"
  chmod 0700 "$dir/etcd"
  local etcd_port peer_port api_port kcm_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
  cat > "$dir/env" <<EOF
ETCD_PORT=$etcd_port
PEER_PORT=$peer_port
API_PORT=$api_port
KCM_PORT=$kcm_port
BIN=$bin
AUDIT=${JOBPOOL_KUBE_AUDIT:-0}
MAX_MUTATING=${JOBPOOL_KUBE_MAX_MUTATING:-}
EOF
  trap 'rc=$?; if [ $rc -ne 0 ]; then halt; rm -rf "$dir"; fi' EXIT

  # A CA that signs the apiserver's serving cert, the service-account key pair, the admin token.
  # The certificates are dated an hour back (libfaketime, when installed), so that a client run
  # with its clock behind (the skew scenario: faketime -10m) still finds them valid.
  (
    cd "$dir/pki"
    openssl() { if command -v faketime >/dev/null; then faketime -f -1h openssl "$@"; else command openssl "$@"; fi; }
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=jobpool-test-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key \
      -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile ext.cnf -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || die "openssl failed"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/admin.token"
  chmod 0600 "$dir/admin.token"
  echo "$(cat "$dir/admin.token"),admin,admin-uid,system:masters" > "$dir/tokens.csv"

  setsid etcd --name jobpool-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "jobpool-test=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level warn \
    >"$dir/log/etcd.log" 2>&1 </dev/null &
  echo $! > "$dir/etcd.pid"
  local i
  for i in $(seq 1 80); do
    curl -fsS -m 1 "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || { tails; die "etcd exited during start-up"; }
    sleep 0.25
  done

  launch_apiserver

  cat > "$dir/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: jobpool-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    tokenFile: $dir/admin.token
contexts:
- name: jobpool-test
  context: {cluster: jobpool-test, user: admin, namespace: default}
current-context: jobpool-test
EOF
  chmod 0600 "$dir/admin.kubeconfig"

  setsid "$bin/kube-controller-manager" \
    --kubeconfig "$dir/admin.kubeconfig" \
    --authentication-kubeconfig "$dir/admin.kubeconfig" \
    --authorization-kubeconfig "$dir/admin.kubeconfig" \
    --controllers job,garbagecollector,ttl-after-finished,serviceaccount,serviceaccount-token,namespace \
    --service-account-private-key-file "$dir/pki/sa.key" \
    --root-ca-file "$dir/pki/ca.crt" \
    --use-service-account-credentials=false \
    --feature-gates TTLAfterFinished=true \
    --leader-elect=false \
    --kube-api-qps "${JOBPOOL_KUBE_KCM_QPS:-20}" --kube-api-burst "$(( ${JOBPOOL_KUBE_KCM_QPS:-20} * 3 / 2 ))" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --port 0 \
    --cert-dir "$dir/certs" \
    --logtostderr=true --v=1 \
    >"$dir/log/kube-controller-manager.log" 2>&1 </dev/null &
  echo $! > "$dir/kcm.pid"
  # Its serving cert is self-signed (generated into --cert-dir): only its health is checked.
  wait_ready "https://127.0.0.1:$kcm_port/healthz" 60 "$dir/kcm.pid" kube-controller-manager -k
  # The default namespace's ServiceAccount shows the service-account controller is working.
  for i in $(seq 1 120); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -m 2 --cacert "$dir/pki/ca.crt" \
      -H "Authorization: Bearer $(cat "$dir/admin.token")" \
      "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts/default" || true)
    [ "$code" = 200 ] && break
    kill -0 "$(cat "$dir/kcm.pid")" 2>/dev/null || { tails; die "kube-controller-manager exited"; }
    sleep 0.25
  done
  [ "$code" = 200 ] || { tails; die "the default ServiceAccount never appeared"; }
  echo "$(date +%s.%N) $t0" | awk '{printf "%.1f\n", $1 - $2}' > "$dir/startup_seconds"
  echo "kube.sh: control plane ready in $(cat "$dir/startup_seconds") s ($dir)" >&2
  trap - EXIT
  print_env
}

cmd=${1:-}
case "$cmd" in
  start) start ;;
  env) dir=${2:-${JOBPOOL_KUBE_DIR:-}}; [ -n "$dir" ] && [ -f "$dir/env" ] || die "no such instance"; print_env ;;
  stop)
    dir=${2:-${JOBPOOL_KUBE_DIR:-}}
    [ -n "$dir" ] || die "stop: which instance? (DIR or JOBPOOL_KUBE_DIR)"
    case "$dir" in /tmp/jobpool-kube.*) ;; *) die "stop: $dir is not a kube.sh instance" ;; esac
    halt; rm -rf "$dir" ;;
  apiserver-stop|apiserver-start) # fault injection: stop / start only the API server
    dir=${2:-${JOBPOOL_KUBE_DIR:-}}
    case "$dir" in /tmp/jobpool-kube.*) [ -f "$dir/env" ] || die "no such instance" ;;
      *) die "$cmd: $dir is not a kube.sh instance" ;; esac
    if [ "$cmd" = apiserver-stop ]; then
      pid=$(cat "$dir/apiserver.pid" 2>/dev/null || true)
      [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$dir/apiserver.pid"
    else
      launch_apiserver
    fi ;;
  *) echo "usage: $0 start|stop [DIR]|env [DIR]|apiserver-stop [DIR]|apiserver-start [DIR]" >&2; exit 2 ;;
esac
