#!/usr/bin/env bash
# Start and stop a private RabbitMQ (Debian's rabbitmq-server) on loopback for tests.
#   eval "$(tests/env/rabbitmq.sh start)"   prints export lines: JOBPOOL_RMQ_DIR, the URLs, a user
#   tests/env/rabbitmq.sh url  [DIR]         prints the AMQP and management URLs again
#   tests/env/rabbitmq.sh stop [DIR]         stops it, leaves no process behind, removes DIR
#   tests/env/rabbitmq.sh restart [DIR]      stops the node and starts it again on the same data
#   tests/env/rabbitmq.sh ctl DIR ARGS...     runs rabbitmqctl ARGS against that node (exact queue
#                                            counts from the queue processes: list_queues ...)
# JOBPOOL_RMQ_CONF, when set at start, is appended to the node's rabbitmq.conf (one setting per
# line), e.g. JOBPOOL_RMQ_CONF='consumer_timeout = 3000' for a broker with a 3 s delivery timeout;
# JOBPOOL_RMQ_RABBIT_ENV adds settings of the rabbit application that rabbitmq.conf cannot
# express to advanced.config, e.g. '{channel_tick_interval, 500}' (how often 3.10 checks them).
# Each instance has its own node name, ports, epmd, cookie, mnesia and log directories, so two
# can run side by side. Errors go to stderr with the broker's log tail; the exit code is non-zero.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "rabbitmq.sh: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

as_rabbit() {
  # shellcheck disable=SC1091
  . "$dir/env"
  runuser -u rabbitmq -- env HOME="$dir" RABBITMQ_NODENAME="$NODENAME" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" \
    RABBITMQ_DIST_PORT="$DIST_PORT" ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_PID_FILE="$dir/rabbit.pid" RABBITMQ_LOGS="$dir/log/rabbit.log" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" "$@"
}

api() { # METHOD PATH [BODY]: as the bootstrap guest user, which is allowed on loopback only
  curl -fsS -u guest:guest -X "$1" -H 'content-type: application/json' \
    ${3:+--data "$3"} "http://127.0.0.1:$MGMT_PORT$2"
}

launch() {
  as_rabbit setsid rabbitmq-server >>"$dir/log/stdout.log" 2>&1 </dev/null &
  echo $! > "$dir/launcher.pid"
  # Ready when the management API answers /api/overview (about 15 s on a cold start).
  local i
  for i in $(seq 1 120); do
    if curl -fsS -m 2 -u guest:guest "http://127.0.0.1:$MGMT_PORT/api/overview" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null; then
      tail -n 30 "$dir/log/stdout.log" "$dir"/log/*.log >&2 2>/dev/null || true
      echo "rabbitmq.sh: rabbitmq-server exited during start-up (logs above, in $dir/log)" >&2
      return 1
    fi
    sleep 0.5
  done
  tail -n 30 "$dir/log/stdout.log" >&2 || true
  die "management API did not answer on 127.0.0.1:$MGMT_PORT within 60 s"
}

halt() {
  [ -f "$dir/env" ] || return 0
  # shellcheck disable=SC1091
  . "$dir/env"
  local pid pgid
  for f in rabbit.pid launcher.pid; do
    [ -f "$dir/$f" ] || continue
    pid=$(cat "$dir/$f")
    kill -0 "$pid" 2>/dev/null || continue
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if [ -n "$pgid" ] && [ "$pgid" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]; then
      kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$dir/rabbit.pid" "$dir/launcher.pid"
  # The epmd this instance started listens on its own port: end it too.
  pid=$(ss -Hltnp "sport = :$EPMD_PORT" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1)
  [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
}

# write_instance: fresh ports, and the node's env, config, plugins and cookie in $dir.
write_instance() {
  AMQP_PORT=$(free_port); MGMT_PORT=$(free_port); DIST_PORT=$(free_port); EPMD_PORT=$(free_port)
  cat > "$dir/env" <<EOV
NODENAME=jobpool-$id@localhost
AMQP_PORT=$AMQP_PORT
MGMT_PORT=$MGMT_PORT
DIST_PORT=$DIST_PORT
EPMD_PORT=$EPMD_PORT
USER_NAME=jobpool
USER_PASS=$USER_PASS
EOV
  cat > "$dir/rabbitmq.conf" <<EOV
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
loopback_users.guest = true
log.console = false
log.file.level = warning
${JOBPOOL_RMQ_CONF:-}
EOV
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  if [ -n "${JOBPOOL_RMQ_RABBIT_ENV:-}" ]; then
    echo "[{rabbit, [$JOBPOOL_RMQ_RABBIT_ENV]}]." > "$dir/advanced.config"
  else
    echo '[].' > "$dir/advanced.config"
  fi
  head -c 20 /dev/urandom | base64 | tr -dc 'A-Z' | head -c 20 > "$dir/.erlang.cookie"
  chmod 0400 "$dir/.erlang.cookie"
  chown -R rabbitmq:rabbitmq "$dir"
}

print_env() {
  # shellcheck disable=SC1091
  . "$dir/env"
  echo "export JOBPOOL_RMQ_DIR='$dir'"
  echo "export JOBPOOL_TEST_AMQP_URL='amqp://$USER_NAME:$USER_PASS@127.0.0.1:$AMQP_PORT/'"
  echo "export JOBPOOL_TEST_MGMT_URL='http://127.0.0.1:$MGMT_PORT'"
  echo "export JOBPOOL_TEST_RMQ_USER='$USER_NAME'"
  echo "export JOBPOOL_TEST_RMQ_PASS='$USER_PASS'"
  echo "export JOBPOOL_TEST_AMQP_PORT='$AMQP_PORT'"
}

cmd=${1:-}
case "$cmd" in
  start)
    command -v rabbitmq-server >/dev/null || "$here/deps.sh" test >&2
    command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed"
    dir=$(mktemp -d /tmp/jobpool-rmq.XXXXXX)
    chmod 0755 "$dir"
    mkdir -p "$dir/mnesia" "$dir/log"
    id=$(basename "$dir" | tr -dc 'a-zA-Z0-9')
    USER_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9')
    # A node that dies while it starts, saying nothing (seen twice in a day of CI runs, with an
    # empty log; a port taken between free_port and the node's bind is one way), is started
    # again on fresh ports, at most three times; each failure is reported on stderr.
    trap 'halt; rm -rf "$dir"' ERR
    for attempt in 1 2 3; do
      write_instance
      if launch; then break; fi
      halt   # the failed node's epmd, and anything it left running
      rm -rf "$dir/mnesia" "$dir/log"
      mkdir -p "$dir/mnesia" "$dir/log"
      if [ "$attempt" = 3 ]; then
        rm -rf "$dir"
        die "rabbitmq-server did not start in 3 attempts (see above)"
      fi
      echo "rabbitmq.sh: starting again on fresh ports (attempt $((attempt + 1)) of 3)" >&2
    done
    # A user with a real password, so tests can prove it never reaches a log line.
    api PUT /api/users/jobpool "{\"password\":\"$USER_PASS\",\"tags\":\"administrator\"}" >/dev/null
    api PUT /api/permissions/%2F/jobpool '{"configure":".*","write":".*","read":".*"}' >/dev/null
    trap - ERR
    print_env
    ;;
  url)
    dir=${2:-${JOBPOOL_RMQ_DIR:-}}; [ -n "$dir" ] && [ -f "$dir/env" ] || die "no instance (give DIR)"
    print_env
    ;;
  restart)
    dir=${2:-${JOBPOOL_RMQ_DIR:-}}; [ -n "$dir" ] && [ -f "$dir/env" ] || die "no instance (give DIR)"
    . "$dir/env"
    halt
    launch || die "rabbitmq-server did not start again"
    ;;
  ctl)
    dir=${2:-}; [ -n "$dir" ] && [ -f "$dir/env" ] || die "no instance (give DIR)"
    shift 2
    . "$dir/env"
    # Debian's /usr/sbin wrapper resets HOME to /var/lib/rabbitmq (another cookie): call the tool.
    as_rabbit /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODENAME" "$@"
    ;;
  stop)
    dir=${2:-${JOBPOOL_RMQ_DIR:-}}; [ -n "$dir" ] || die "no instance (give DIR)"
    [ -d "$dir" ] || exit 0
    halt
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop|url|restart [DIR] | ctl DIR ARGS..." >&2; exit 2 ;;
esac
