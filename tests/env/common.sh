# tests/env/common.sh: helpers shared by the test, demo and bench scripts. Source it.

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# rabbitmq_yaml [DEPTH-SOURCE]: the controller config's rabbitmq section for the broker that
# tests/env/rabbitmq.sh started (its JOBPOOL_TEST_* variables); the credentials are read from
# RABBITMQ_USERNAME and RABBITMQ_PASSWORD, never written into the file.
rabbitmq_yaml() {
  cat <<EOY
rabbitmq:
  managementUrl: $JOBPOOL_TEST_MGMT_URL
  amqpUrl: amqp://127.0.0.1:$JOBPOOL_TEST_AMQP_PORT
  username: {env: RABBITMQ_USERNAME}
  password: {env: RABBITMQ_PASSWORD}
  depthSource: ${1:-management}
EOY
}
