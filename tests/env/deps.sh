#!/usr/bin/env bash
# Install the Debian packages that building, testing and the demo need. Idempotent: when every
# package is already installed it does nothing and prints nothing.
#   tests/env/deps.sh [build|test|kube|images|tools|all]   (default: test)
set -euo pipefail

build=(make gcc pkg-config libc6-dev librabbitmq-dev libcurl4-openssl-dev libcjson-dev
       libyaml-dev libcmocka-dev libssl-dev)
test=(rabbitmq-server amqp-tools valgrind cppcheck clang libclang-rt-14-dev python3 curl
      openssl gnuplot-nox procps iproute2 prometheus python3-yaml jq socat faketime)
kube=(etcd-server golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev
      golang-github-json-iterator-go-dev unzip)
images=(podman debootstrap)
# tests/env/tools.sh (helm, kubectl, readme-generator come from npm); asked for only when the npm
# command is missing, since some machines carry npm inside another nodejs package.
tools=(npm unzip)

case "${1:-test}" in
  build)  want=("${build[@]}") ;;
  test)   want=("${build[@]}" "${test[@]}") ;;
  kube)   want=("${kube[@]}") ;;
  images) want=("${images[@]}") ;;
  tools)  want=("${tools[@]}") ;;
  all)    want=("${build[@]}" "${test[@]}" "${kube[@]}" "${images[@]}") ;;
  *) echo "usage: $0 [build|test|kube|images|tools|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# rabbitmq-server's postinst tries to start the service; there is no init system here.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
fi
apt_stamp=/var/lib/apt/periodic/jobpool-update-stamp
if [ ! -e "$apt_stamp" ] || [ -n "$(find "$apt_stamp" -mmin +720)" ]; then
  apt-get update -q >/dev/null
  mkdir -p "$(dirname "$apt_stamp")" && touch "$apt_stamp"
fi
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
