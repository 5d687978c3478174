#!/usr/bin/env bash
# The controller with the local backend on the real broker from run.sh: what a worker and its task
# inherit. The task dumps its environment and its descriptors, and its worker's (the parent).
# No controller secret (RABBITMQ_PASSWORD, the password's value, a canary variable) reaches the
# task; the worker has only the allow-list, worker.env and what the controller sets; the task has
# no descriptor beyond 0, 1 and 2, and the worker holds exactly one socket (its AMQP connection),
# not the controller's keep-alive connection to the management API.
set -u
: "${JOBPOOL_TEST_AMQP_URL:?run me through tests/integration/run.sh}"
. "$(dirname "$0")/lib.sh" local_isolation.test iso-test
ctl=""
cleanup() { [ -z "$ctl" ] || { kill -TERM "$ctl" 2>/dev/null; wait "$ctl" 2>/dev/null; }; rm -rf "$T"; }
trap cleanup EXIT
it_need jobpool-controller jobpool-worker jp-publish
it_broker_login
# Stand-ins for what a controller's environment holds: another credential, an API token.
export JP_CANARY_TOKEN=canary-$RANDOM$RANDOM LC_MESSAGES=C TZ=UTC

# The task: its own environment and descriptors, then its worker's, seen from /proc.
cat > "$T/task.sh" <<'EOT'
#!/bin/sh
read -r id
env > "$OUT/task-env.$id"
tr '\0' '\n' < /proc/$PPID/environ > "$OUT/worker-env.$id"
for f in /proc/$PPID/fd/*; do readlink "$f"; done > "$OUT/worker-fd.$id"
# dash holds this script open on fd 10 (close-on-exec): list the descriptors of the process as
# it is after one more exec, from outside (ls), so neither dash's nor ls's own handle shows.
exec > "$OUT/task-fd.$id"
exec sh -c 'ls /proc/$$/fd'
EOT
chmod +x "$T/task.sh"
q=iso
api PUT "/api/queues/%2F/$q" '{"durable":true}' >/dev/null
port=$(free_port)
# Management depth: the controller keeps a libcurl connection to the management API open.
cat > "$T/c.yaml" <<EOC
pollInterval: 500ms
backend: local
metrics: {address: "127.0.0.1:$port"}
$(rabbitmq_yaml management)
pools:
  - name: iso
    queue: $q
    maxActive: 4
    idleTimeout: 3s
    worker:
      command: [jobpool-worker, --, $T/task.sh]
      env: {OUT: $T, GREETING: "hello world", TZ: Europe/Paris}
EOC
echo "== local workers: environment and descriptors"
"$B/jobpool-controller" --config "$T/c.yaml" --worker "$B/jobpool-worker" > "$T/ctl.log" 2>&1 &
ctl=$!
printf 'm1\nm2\nm3\n' | "$B/jp-publish" "${JOBPOOL_TEST_AMQP_URL%/}" "$q" --confirm 2>/dev/null
for _ in $(seq 1 400); do [ "$(ls "$T"/task-fd.* 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.05; done
sleep 0.3
kill -TERM "$ctl"; wait "$ctl"; ctl=""
n=$(ls "$T"/task-fd.* 2>/dev/null | wc -l)
check "three tasks ran ($n)" [ "$n" = 3 ]
[ "$n" -gt 0 ] || { echo "local_isolation.test: no task ran; controller log:"; tail -n 20 "$T/ctl.log"; }
for f in "$T"/task-env.*; do
  id=${f##*.}
  check "$id: task env has no RABBITMQ_PASSWORD/USERNAME" bash -c "! grep -q '^RABBITMQ_' '$f'"
  check "$id: task env has no broker password value" bash -c "! grep -qF '$RABBITMQ_PASSWORD' '$f'"
  check "$id: task env has no controller canary" bash -c "! grep -qF '$JP_CANARY_TOKEN' '$f'"
  check "$id: task env has no JOBPOOL_AMQP_* or result file" bash -c "! grep -qE '^JOBPOOL_(AMQP_|RESULT_FILE)' '$f'"
  check "$id: task env has PATH, the locale, and worker.env (TZ overridden)" \
    bash -c "grep -q '^PATH=' '$f' && grep -qx 'LC_MESSAGES=C' '$f' && grep -qx 'GREETING=hello world' '$f' && grep -qx 'TZ=Europe/Paris' '$f' && grep -qx 'JOBPOOL_QUEUE=$q' '$f'"
  w=$T/worker-env.$id
  # The worker itself: exactly the allow-list, worker.env and what the controller sets.
  extra=$(grep -vE '^(PATH|HOME|LANG|LANGUAGE|TZ|LC_[A-Z_]*|OUT|GREETING|JOBPOOL_(POOL|QUEUE|VHOST|AMQP_URL|RESULT_FILE))=' "$w" | cut -d= -f1 | tr '\n' ' ')
  check "$id: worker env holds nothing else (extra: '${extra}')" [ -z "$extra" ]
  check "$id: worker env has no controller canary or RABBITMQ_PASSWORD" \
    bash -c "! grep -qF '$JP_CANARY_TOKEN' '$w' && ! grep -q '^RABBITMQ_' '$w'"
  fds=$(tr '\n' ' ' < "$T/task-fd.$id")
  check "$id: task descriptors are 0 1 2 only (got: $fds)" [ "$fds" = "0 1 2 " ]
  socks=$(grep -c '^socket:' "$T/worker-fd.$id")
  check "$id: worker holds one socket, its AMQP connection (got $socks: $(tr '\n' ' ' < "$T/worker-fd.$id"))" [ "$socks" = 1 ]
done
check "password absent from the controller log" bash -c "! grep -qF '$RABBITMQ_PASSWORD' '$T/ctl.log'"

it_end
