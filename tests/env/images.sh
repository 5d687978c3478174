#!/usr/bin/env bash
# Build the controller image (./Dockerfile) and the worker image (worker-image/Dockerfile) with
# Debian's podman, then prove each one runs its binary, and print each image's size.
#   tests/env/images.sh [all|base|controller|worker]     (default: all: both images)
# The build context is the work tree; IMAGES_FROM=<git rev> builds that commit instead (a clean
# tree, useful while the work tree holds unfinished edits); IMAGES_CONTEXT=<dir> uses that dir.
# No Docker engine runs here and running a container fails (cgroups hybrid mode), so this
# follows the recipe in the design's "Images" section:
#   1. a debootstrap --variant=minbase bookworm tree (tarball cached outside the repo) is
#      imported as docker.io/library/debian:bookworm-slim, so FROM resolves locally;
#   2. containers.conf sets default_ulimits nofile/nproc to the current hard limits, without
#      which setrlimit is denied inside RUN steps;
#   3. podman build --isolation=chroot --pull=never;
#   4. podman create + podman export the image's filesystem, then chroot --userspec=UID:GID into
#      it as the image's user to run the packaged binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${JOBPOOL_CACHE:-$HOME/.cache/jobpool}/images
version=${VERSION:-$(sed -n 's/^VERSION *?= *//p' "$root/Makefile")}
base_ref=docker.io/library/debian:bookworm-slim
ctrl_ref=localhost/jobpool-controller:$version
worker_ref=localhost/jobpool-worker:$version

log()  { echo "images.sh: $*" >&2; }
fail() { echo "images.sh: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "podman build with chroot isolation and chroot(1) need root here"
"$here/deps.sh" images || fail "podman/debootstrap are missing and could not be installed"
mkdir -p "$cache"

# Step 2: a private containers.conf (CONTAINERS_CONF) so nothing system-wide is edited.
write_conf() {
  local nofile nproc
  nofile=$(awk '/^Max open files/ {print $5}' /proc/self/limits)
  nproc=$(awk '/^Max processes/ {print $4}' /proc/self/limits)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=1048576
  # podman 4.3 lowers its own RLIMIT_NPROC to 32768 at start-up (seen with strace), and a build
  # step cannot raise it back, so asking for more than that fails the same way.
  [ "$nproc" -gt 32768 ] && nproc=32768
  cat > "$cache/containers.conf" <<CONF
# Written by tests/env/images.sh: the hard limits of the build host, so setrlimit in RUN steps
# asks for nothing the host would deny.
[containers]
default_ulimits = [
  "nofile=$nofile:$nofile",
  "nproc=$nproc:$nproc",
]
CONF
  export CONTAINERS_CONF=$cache/containers.conf
}

# The mirror the host's apt already uses, so no mirror is named in this repository.
host_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
      /^Types:/  {deb = ($0 ~ /(^|[ \t])deb([ \t]|$)/)}
      /^URIs:/   {uri = $2}
      /^Suites:/ {if (deb && $0 ~ /[ \t]bookworm([ \t]|$)/) {print uri; exit}}')
  [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [ -n "$m" ] || fail "no bookworm deb entry found in the host's apt sources"
  echo "$m"
}

# Step 1: the base image.
base() {
  if podman image exists "$base_ref"; then return 0; fi
  local tarball=$cache/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    local dir
    dir=$(mktemp -d "$cache/rootfs.XXXXXX")
    log "debootstrap --variant=minbase bookworm (a few minutes, cached in $tarball)"
    debootstrap --variant=minbase bookworm "$dir" "$(host_mirror)" > "$cache/debootstrap.log" 2>&1 \
      || { rm -rf "$dir"; fail "debootstrap failed, see $cache/debootstrap.log"; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$dir"
  fi
  log "podman import $tarball as $base_ref"
  podman import --quiet "$tarball" "$base_ref" >/dev/null
}

# Step 3.
ctx=${IMAGES_CONTEXT:-$root}
if [ -n "${IMAGES_FROM:-}" ]; then
  ctx=$(mktemp -d "$cache/context.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  git -C "$root" archive "$IMAGES_FROM" | tar -x -C "$ctx" || fail "git archive $IMAGES_FROM failed"
fi

build_one() {  # REF DOCKERFILE
  local ref=$1 file=$ctx/$2
  log "podman build -f $2 -t $ref (context ${IMAGES_FROM:-$ctx})"
  podman build --isolation=chroot --pull=never --layers \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$(git -C "$root" rev-parse --short "${IMAGES_FROM:-HEAD}" 2>/dev/null || echo unknown)" \
    -f "$file" -t "$ref" "$ctx" > "$cache/build-$(basename "${ref%%:*}").log" 2>&1 \
    || { tail -n 30 "$cache/build-$(basename "${ref%%:*}").log" >&2; fail "podman build of $ref failed"; }
}

build_worker() {
  [ -f "$ctx/worker-image/Dockerfile" ] || fail "worker-image/Dockerfile does not exist"
  build_one "$worker_ref" worker-image/Dockerfile
}

# Step 4: run CMD... inside REF's exported filesystem as the image's own user.
run_in_image() {  # REF CMD...
  local ref=$1; shift
  local user ctr dir rc=0 out
  user=$(podman image inspect --format '{{.Config.User}}' "$ref")
  case "$user" in
    ''|0|0:*|root|root:*) fail "$ref runs as root (USER '$user'); it must be a non-root numeric user" ;;
    *[!0-9:]*) fail "$ref has a non-numeric USER '$user'" ;;
  esac
  [[ $user == *:* ]] || user=$user:$user
  dir=$(mktemp -d "$cache/export.XXXXXX")
  chmod 755 "$dir"   # it is the image's "/": mktemp's 0700 would lock its user out
  ctr=$(podman create --quiet "$ref" 2>/dev/null) || { rm -rf "$dir"; fail "podman create $ref failed"; }
  podman export "$ctr" | tar -C "$dir" -xf - || rc=$?
  podman rm --force "$ctr" >/dev/null 2>&1 || true
  [ $rc -eq 0 ] || { rm -rf "$dir"; fail "podman export $ref failed"; }
  out=$(env -i PATH=/usr/local/bin:/usr/bin:/bin "$(command -v chroot)" --userspec="$user" "$dir" "$@" 2>&1) || rc=$?
  rm -rf "$dir"
  printf '%s\n' "$out" | sed "s|^|  [$ref as $user] |" >&2
  [ $rc -eq 0 ] || fail "'$*' exited $rc inside $ref"
  printf '%s\n' "$out"
}

size_of() {
  podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.1f MB (%d bytes)", $1 / 1e6, $1}'
}

check_ctrl() {
  local out
  out=$(run_in_image "$ctrl_ref" jobpool-controller --version)
  grep -q "^jobpool-controller $version\$" <<<"$out" \
    || fail "controller image: --version printed '$out', want 'jobpool-controller $version'"
  echo "images: $ctrl_ref $(size_of "$ctrl_ref")"
}

check_worker() {
  local out
  out=$(run_in_image "$worker_ref" jobpool-worker --help)
  grep -qi 'usage' <<<"$out" || fail "worker image: --help printed no usage text"
  echo "images: $worker_ref $(size_of "$worker_ref")"
}

write_conf
case "${1:-all}" in
  base)       base ;;
  controller) base; build_one "$ctrl_ref" Dockerfile; check_ctrl ;;
  worker)     base; build_worker; check_worker ;;
  all)        base; build_one "$ctrl_ref" Dockerfile; build_worker; check_ctrl; check_worker
              echo "images: OK" ;;
  *) echo "usage: $0 [all|base|controller|worker]" >&2; exit 2 ;;
esac
