#!/usr/bin/env bash
# e2e/kind/run.sh - nixcache on a real Kubernetes cluster (kind), end to end:
#
#   1. builds the proxy, operator and e2e Nix images (docker/Dockerfile, e2e/kind/nix-tools.Dockerfile)
#   2. creates a kind cluster and loads the images into it (imagePullPolicy: Never)
#   3. installs the chart (helm/nixcache-operator) with two operator replicas (leader election)
#   4. deploys PostgreSQL, MinIO and a signed upstream cache built inside the cluster by Nix
#   5. applies a 3-replica NixCache and waits for Ready
#   6. a Job with a real Nix client substitutes a closure through the Service, trusting only the
#      key in the NixCache's status.publicKey (signatures and NAR hashes checked)
#   7. scales the NixCache to 5 and back to 3
#   8. deletes the replica that downloads a large NAR, in the middle of that download; the client
#      still gets a verified copy, and the Deployment is back to 3 ready replicas
#   9. a last client substitutes the whole closure; then the NixCache is deleted and everything it
#      owned must be gone
#
# Needs docker (with an engine), kind, kubectl and helm on PATH, and about 4 GiB of memory for
# the cluster. Without them it prints `SKIP e2e: <reason>` and exits 0, or exits 1 when
# E2E_REQUIRED=1. Nothing but the images comes from the network.
#
# Settings (environment): KIND_CLUSTER (nixcache-e2e), KIND_NODE_IMAGE (kindest/node:v1.33.1),
# E2E_KEEP=1 keeps the cluster afterwards, E2E_SKIP_BUILD=1 reuses images already built,
# BIG_MIB (512: longer than the replicas' 25 s shutdown grace at 16 MiB/s) size of the large NAR, RATE_MIB (16) upstream MiB/s, and the third-party images
# POSTGRES_IMAGE, MINIO_IMAGE, MC_IMAGE.
set -euo pipefail

skip() {
  if [ "${E2E_REQUIRED:-0}" = 1 ]; then
    printf 'FAIL e2e: %s (E2E_REQUIRED=1)\n' "$1" >&2
    exit 1
  fi
  printf 'SKIP e2e: %s\n' "$1"
  exit 0
}

# Only shell builtins before this point: the checks must work with an empty PATH.
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool not found"
done
docker info >/dev/null 2>&1 || skip "no Docker engine (docker info failed)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/e2e/kind
CLUSTER=${KIND_CLUSTER:-nixcache-e2e}
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-docker.io/library/postgres:16-bookworm}
MINIO_IMAGE=${MINIO_IMAGE:-docker.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}
MC_IMAGE=${MC_IMAGE:-docker.io/minio/mc:RELEASE.2025-04-16T18-13-26Z}
BIG_MIB=${BIG_MIB:-512}
RATE_MIB=${RATE_MIB:-16}
OP_NS=nixcache-system
NS=nixcache-e2e
TAG=e2e
PROXY_IMAGE=nixcache:$TAG
OPERATOR_IMAGE=nixcache-operator:$TAG
NIX_IMAGE=nixcache-e2e-nix:$TAG
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
KCTL=(kubectl --context "kind-$CLUSTER")

SECONDS=0
step() { printf '\n[e2e %4ss] %s\n' "$SECONDS" "$*"; }
fail() {
  printf '\nFAIL e2e: %s\n' "$*" >&2
  exit 1
}

diagnostics() {
  step "diagnostics"
  "${KCTL[@]}" get nodes,pods,deploy,svc,jobs -A -o wide || true
  "${KCTL[@]}" -n "$NS" describe nixcache e2e || true
  "${KCTL[@]}" -n "$OP_NS" logs -l app.kubernetes.io/name=nixcache-operator --tail=100 --prefix || true
  "${KCTL[@]}" -n "$NS" logs -l app.kubernetes.io/instance=e2e --tail=50 --prefix || true
  "${KCTL[@]}" -n "$NS" logs -l app=nix-client --tail=50 --prefix || true
}

cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then diagnostics; fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    printf 'kept cluster %s (kind delete cluster --name %s)\n' "$CLUSTER" "$CLUSTER"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$status"
}

# Fills the __KEY__ placeholders of a manifest: render FILE KEY=VALUE...
render() {
  local file=$1 expr=() kv
  shift
  for kv in "$@"; do
    expr+=(-e "s|__${kv%%=*}__|${kv#*=}|g")
  done
  sed "${expr[@]}" "$file"
}

# Polls until a command succeeds: wait_for SECONDS DESCRIPTION COMMAND...
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 2
  done
}

jsonpath() { "${KCTL[@]}" -n "$NS" get "$1" -o "jsonpath=$2"; }

ready_replicas_are() { [ "$(jsonpath nixcache/e2e '{.status.readyReplicas}')" = "$1" ] &&
  [ "$(jsonpath deployment/e2e '{.status.readyReplicas}')" = "$1" ] &&
  [ "$(jsonpath deployment/e2e '{.status.replicas}')" = "$1" ]; }

random_secret() { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'; }

# Runs a Nix client Job for store path $2, named $1; does not wait.
start_client() {
  render "$HERE/manifests/client-job.yaml" NAME="$1" TARGET="$2" CACHE_URL="$CACHE_URL" \
    CACHE_KEY="$CACHE_KEY" NIX_IMAGE="$NIX_IMAGE" | "${KCTL[@]}" apply -f -
}

# Waits for client Job $1 (at most $2 seconds, default 600) and shows how it ended.
wait_client() {
  local deadline=$((SECONDS + ${2:-600})) succeeded failed
  while :; do
    succeeded=$(jsonpath "job/$1" '{.status.succeeded}')
    failed=$(jsonpath "job/$1" '{.status.failed}')
    [ "${succeeded:-0}" -ge 1 ] && break
    if [ "${failed:-0}" -ge 1 ] || [ "$SECONDS" -ge "$deadline" ]; then
      "${KCTL[@]}" -n "$NS" logs "job/$1" || true
      fail "Nix client $1 failed or timed out"
    fi
    sleep 3
  done
  "${KCTL[@]}" -n "$NS" logs "job/$1" | tail -n 3
}

# --------------------------------------------------------------------------------------------
step "1. images (version $VERSION)"
if [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
  docker build -f "$ROOT/docker/Dockerfile" --target nixcache --build-arg "VERSION=$VERSION" \
    -t "$PROXY_IMAGE" "$ROOT"
  docker build -f "$ROOT/docker/Dockerfile" --target nixcache-operator --build-arg "VERSION=$VERSION" \
    -t "$OPERATOR_IMAGE" "$ROOT"
  docker build -f "$HERE/nix-tools.Dockerfile" -t "$NIX_IMAGE" "$ROOT/e2e"
fi
for image in "$POSTGRES_IMAGE" "$MINIO_IMAGE" "$MC_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image"
done
# The images run as 65532 without a shell.
[ "$(docker image inspect -f '{{.Config.User}}' "$PROXY_IMAGE")" = 65532:65532 ] || fail "proxy image user"
[ "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$OPERATOR_IMAGE")" = "$VERSION" ] ||
  fail "operator image version label"

step "2. kind cluster $CLUSTER ($NODE_IMAGE)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
trap cleanup EXIT
kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 180s
kind load docker-image --name "$CLUSTER" "$PROXY_IMAGE" "$OPERATOR_IMAGE" "$NIX_IMAGE" \
  "$POSTGRES_IMAGE" "$MINIO_IMAGE" "$MC_IMAGE"

step "3. helm install (two operator replicas, leader election)"
helm --kube-context "kind-$CLUSTER" install nixcache-operator "$ROOT/helm/nixcache-operator" \
  --namespace "$OP_NS" --create-namespace \
  --set replicaCount=2 \
  --set image.repository=nixcache-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set proxyImage.repository=nixcache --set proxyImage.tag="$TAG" \
  --set logFormat=text \
  --wait --timeout 5m
"${KCTL[@]}" -n "$OP_NS" get lease nixcache-operator -o jsonpath='{.spec.holderIdentity}' |
  grep -q nixcache-operator || fail "no operator holds the leader Lease"

step "4. PostgreSQL, MinIO and the upstream cache"
"${KCTL[@]}" create namespace "$NS"
pg_password=$(random_secret)
s3_secret=$(random_secret)
# Secrets go straight from variables to the API server; none is printed.
"${KCTL[@]}" -n "$NS" create secret generic postgres --from-literal=password="$pg_password" >/dev/null
"${KCTL[@]}" -n "$NS" create secret generic postgres-url \
  --from-literal=url="postgres://nixcache:$pg_password@postgres.$NS.svc:5432/nixcache" >/dev/null
"${KCTL[@]}" -n "$NS" create secret generic minio \
  --from-literal=MINIO_ROOT_USER=nixcache --from-literal=MINIO_ROOT_PASSWORD="$s3_secret" >/dev/null
"${KCTL[@]}" -n "$NS" create secret generic s3 \
  --from-literal=AWS_ACCESS_KEY_ID=nixcache --from-literal=AWS_SECRET_ACCESS_KEY="$s3_secret" >/dev/null
render "$HERE/manifests/infra.yaml" POSTGRES_IMAGE="$POSTGRES_IMAGE" MINIO_IMAGE="$MINIO_IMAGE" \
  MC_IMAGE="$MC_IMAGE" | "${KCTL[@]}" apply -f -
render "$HERE/manifests/upstream.yaml" NIX_IMAGE="$NIX_IMAGE" BIG_MIB="$BIG_MIB" RATE_MIB="$RATE_MIB" |
  "${KCTL[@]}" apply -f -
"${KCTL[@]}" -n "$NS" rollout status deployment/postgres --timeout=5m
"${KCTL[@]}" -n "$NS" rollout status deployment/minio --timeout=5m
"${KCTL[@]}" -n "$NS" wait job/minio-bucket --for=condition=Complete --timeout=5m
"${KCTL[@]}" -n "$NS" rollout status deployment/upstream --timeout=15m
upstream_file() { "${KCTL[@]}" -n "$NS" exec deployment/upstream -c serve -- cat "/srv/cache/$1"; }
UPSTREAM_KEY=$(upstream_file upstream.pub)
ROOT_PATH=$(upstream_file root-path)
SMALL_PATH=$(upstream_file small-path)
BIG_PATH=$(upstream_file big-path)
echo "upstream key $UPSTREAM_KEY; root $ROOT_PATH"

step "5. a 3-replica NixCache"
render "$HERE/manifests/nixcache.yaml" UPSTREAM_KEY="$UPSTREAM_KEY" | "${KCTL[@]}" apply -f -
"${KCTL[@]}" -n "$NS" wait nixcache/e2e --for=condition=Ready --timeout=10m
wait_for 300 "3 ready replicas" ready_replicas_are 3
[ "$(jsonpath nixcache/e2e '{.status.image}')" = "docker.io/library/$PROXY_IMAGE" ] ||
  [ "$(jsonpath nixcache/e2e '{.status.image}')" = "$PROXY_IMAGE" ] ||
  fail "the proxies do not run the chart's proxyImage: $(jsonpath nixcache/e2e '{.status.image}')"
CACHE_KEY=$(jsonpath nixcache/e2e '{.status.publicKey}')
CACHE_URL=$(jsonpath nixcache/e2e '{.status.url}')
SELECTOR=$(jsonpath nixcache/e2e '{.status.selector}')
if [ -z "$CACHE_KEY" ] || [ -z "$CACHE_URL" ]; then fail "status.publicKey or status.url is empty"; fi
[ "$CACHE_KEY" != "$UPSTREAM_KEY" ] || fail "the proxy must sign with its own key"
echo "cache $CACHE_URL, key $CACHE_KEY"

step "6. a Nix client substitutes through the Service (trusting only status.publicKey)"
start_client client-small "$SMALL_PATH"
wait_client client-small

step "7. scale to 5 and back to 3"
"${KCTL[@]}" -n "$NS" scale nixcache/e2e --replicas=5
wait_for 300 "5 ready replicas" ready_replicas_are 5
"${KCTL[@]}" -n "$NS" scale nixcache/e2e --replicas=3
wait_for 300 "3 replicas again" ready_replicas_are 3

step "8. delete the replica downloading a ${BIG_MIB} MiB NAR, mid-download"
start_client client-big "$BIG_PATH"
holder=""
deadline=$((SECONDS + 180))
while [ -z "$holder" ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "no replica logged 'fetching NAR' for $BIG_PATH"
  sleep 1
  for pod in $("${KCTL[@]}" -n "$NS" get pods -l "$SELECTOR" -o name); do
    if "${KCTL[@]}" -n "$NS" logs "$pod" 2>/dev/null | grep 'fetching NAR' | grep -q -- "${BIG_PATH##*/}"; then
      holder=$pod
    fi
  done
done
sleep 3 # some MiB into the download (the upstream sends $RATE_MIB MiB/s)
echo "deleting $holder"
"${KCTL[@]}" -n "$NS" delete "$holder" --wait=false
wait_client client-big 900
wait_for 300 "3 ready replicas after the deletion" ready_replicas_are 3

step "9. the whole closure, then delete the NixCache"
start_client client-root "$ROOT_PATH"
wait_client client-root
"${KCTL[@]}" -n "$NS" get nixcache e2e -o jsonpath='{.metadata.uid}' >/dev/null
"${KCTL[@]}" -n "$NS" delete nixcache e2e --wait=true --timeout=2m
owned() {
  "${KCTL[@]}" -n "$NS" get deployments,services,jobs,cronjobs,secrets,horizontalpodautoscalers,poddisruptionbudgets,pods \
    -l app.kubernetes.io/instance=e2e,app.kubernetes.io/component!=signing-key -o name
}
gone() { [ -z "$(owned)" ]; }
wait_for 180 "the NixCache's children to be deleted" gone
# The generated key outlives its NixCache (clients trust it; spec.signing.deleteWithCache is unset).
"${KCTL[@]}" -n "$NS" get secret e2e-signing-key >/dev/null 2>&1 || fail "the signing key Secret was deleted with the NixCache"
"${KCTL[@]}" -n "$NS" delete secret e2e-signing-key

step "passed in ${SECONDS}s"
