#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager from Debian's own `kubernetes` source package
# and cache them outside the repo, keyed by version. Prints the cache directory on success.
# A cold build takes about 10 minutes on 2 cores; a warm cache returns at once.
set -euo pipefail

cache=${JOBPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobpool}
if [ -x "$cache/kube/current/kube-apiserver" ] && [ -x "$cache/kube/current/kube-controller-manager" ]; then
  readlink -f "$cache/kube/current"; exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
"$here/deps.sh" kube

# deb-src entries for the machine's own Debian suites, derived from its deb entries, so that no
# mirror is named here.
src=/etc/apt/sources.list.d/jobpool-deb-src.sources
if ! apt-get source --print-uris kubernetes >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "kube-build.sh: need root to add deb-src entries" >&2; exit 1; }
  : > "$src.tmp"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ "$f" = "$src" ] && continue
    grep -q '^Types:.*\bdeb\b' "$f" || continue
    grep -q '^Suites:.*bookworm' "$f" || continue
    sed -e 's/^Types:.*/Types: deb-src/' "$f" >> "$src.tmp"; echo >> "$src.tmp"
  done
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*bookworm.*\)/deb-src \1/p' /etc/apt/sources.list > /etc/apt/sources.list.d/jobpool-deb-src.list
  fi
  mv "$src.tmp" "$src"
  apt-get update -q >/dev/null
fi

work=$(mktemp -d /tmp/jobpool-kube-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source -q --download-only kubernetes >/dev/null
dpkg-source -x --skip-patches ./kubernetes_*.dsc src >/dev/null 2>&1 || dpkg-source -x ./kubernetes_*.dsc src >/dev/null
cd src
# Apply Debian's patches if dpkg-source skipped them.
if [ -d debian/patches ] && [ -f debian/patches/series ] && [ ! -d .pc ]; then
  while read -r p; do
    case "$p" in ''|'#'*) continue ;; esac
    patch -p1 -s < "debian/patches/$p" || true
  done < debian/patches/series
fi
version=$(dpkg-parsechangelog -S Version)

# The vendored reflect2 1.0.1 crashes kube-apiserver under Go >= 1.18 (SIGSEGV in mapiterinit on
# the first Job write); take Debian's newer reflect2 and json-iterator instead.
for pkg in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$pkg"
  mkdir -p "vendor/$pkg"
  cp -r "/usr/share/gocode/src/$pkg/." "vendor/$pkg/"
  find "vendor/$pkg" -name '*_test.go' -delete
done

mkdir -p "$work/.go/src/k8s.io"
ln -s "$work/src" "$work/.go/src/k8s.io/kubernetes"
cd "$work/.go/src/k8s.io/kubernetes"
start=$(date +%s)
GOPATH="$work/.go" GO111MODULE=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GOCACHE="$work/.gocache" \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" KUBE_BUILD_PLATFORMS=linux/amd64 \
  >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
echo "kube-build.sh: built kubernetes $version in $(( $(date +%s) - start )) s" >&2

dest="$cache/kube/$version"
mkdir -p "$dest"
for b in kube-apiserver kube-controller-manager; do
  f=$(find "$work/src/_output" -type f -name "$b" | head -n1)
  [ -n "$f" ] || { echo "kube-build.sh: $b not found after the build" >&2; exit 1; }
  install -m 0755 "$f" "$dest/$b"
done
ln -sfn "$version" "$cache/kube/current"
echo "$dest"
