#!/usr/bin/env bash
# process-kubelet-selftest.sh - checks process-kubelet.py and service-proxy.py against a running
# kube-testbed control plane (kube-control-plane.sh start), in a namespace of its own, with its
# own process kubelet (node ktb-selftest-PID) and Service stand-in. Needs root, kubectl, curl.
#
#   e2e/kube/process-kubelet-selftest.sh        prints "N passed, N failed"; exit 1 on a failure
#
# Environment: KTB_STATE (default /tmp/kube-testbed: its env file gives the API server),
# KEEP=1 keeps the work dir (logs) after success. The unit tests (test_ktb.py) run first.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENV_FILE=${KTB_STATE:-/tmp/kube-testbed}/env
[ -f "$ENV_FILE" ] || { echo "no control plane: $ENV_FILE missing (run kube-control-plane.sh start)" >&2; exit 2; }
set -a; . "$ENV_FILE"; set +a

NS=ktb-selftest-$$
NODE=ktb-selftest-$$
WORK=$(mktemp -d /tmp/process-kubelet-selftest.XXXXXX)
MNT=/var/lib/ktb-selftest-$$   # mount points the pods' volumes get (created empty on the host)
PASS=0 FAIL=0 KUBELET_PID= PROXY_PID=

ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local desc=$1; shift; if "$@"; then ok "$desc"; else bad "$desc"; fi; }
k() { kubectl -n "$NS" "$@"; }
wait_until() {  # seconds cmd...
  local end=$((SECONDS + $1)); shift
  until "$@" 2>/dev/null; do [ $SECONDS -ge "$end" ] && return 1; sleep 0.3; done
}
jp() { k get "$1" -o "jsonpath=$2" 2>/dev/null; }

no_pods() { [ -z "$(k get pods -o name $* 2>/dev/null)" ]; }
cleanup() {
  if [ -n "$KUBELET_PID" ]; then  # its pods are deleted while it runs (afterwards: pod GC)
    k delete deployment,job,pod --all --wait=false >/dev/null 2>&1
    wait_until 15 no_pods
  fi
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  [ -n "$KUBELET_PID" ] && kill "$KUBELET_PID" 2>/dev/null && wait "$KUBELET_PID" 2>/dev/null
  # what was left on the (now deleted) node: no kubelet finishes its deletion
  k delete pod --all --grace-period=0 --force >/dev/null 2>&1
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
  rm -rf "$MNT"
  if [ "$FAIL" != 0 ] || [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- unit tests
if (cd "$HERE" && python3 -m unittest -q test_ktb >"$WORK/unittest.log" 2>&1); then ok "unit tests (test_ktb.py)"
else bad "unit tests (test_ktb.py)"; tail -30 "$WORK/unittest.log"; fi

# ---------------------------------------------------------------- kubelet + namespace
# A fake-kubelet.py older than the process kubelet's claims binds every pod it sees: then the
# test pods are pinned to the node (spec.nodeName), and binding goes untested.
PIN=
fake=$(tr '\0' '\n' <"/proc/${FAKE_KUBELET_PID:-0}/cmdline" 2>/dev/null | grep 'fake-kubelet\.py$')
if [ -n "$fake" ] && ! grep -q 'images.claimed' "$fake"; then
  echo "note: the running $fake predates process-kubelet claims: test pods pinned to node $NODE"
  PIN="nodeName: $NODE"
fi
kubectl create namespace "$NS" >/dev/null
python3 "$HERE/process-kubelet.py" --env-file "$ENV_FILE" --node-name "$NODE" --namespace "$NS" \
  --image-map ktb-selftest/python:1=/usr/bin/python3 --image-map ktb-selftest/sh=/bin/sh \
  --state-dir "$WORK/state" --log-dir "$WORK/logs" --probe-period-cap 1 --ready-file "$WORK/kubelet.ready" \
  >"$WORK/kubelet.out" 2>"$WORK/kubelet.log" &
KUBELET_PID=$!
check "process kubelet registers its node" wait_until 15 test -s "$WORK/kubelet.ready"
# 1.20's ServiceAccount admission rejects pods until the namespace's token exists
wait_until 30 sh -c "[ -n \"\$(kubectl -n $NS get sa default -o jsonpath='{.secrets[0].name}')\" ]"

k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: hunter2, file: file-content}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: out}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      $PIN
      terminationGracePeriodSeconds: 5
      volumes: [{name: www, emptyDir: {}}]
      initContainers:
      - name: page
        image: ktb-selftest/sh:1
        command: [sh, -c, 'echo "hello from \$(POD_NAME)" > $MNT/www/index.html']
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        volumeMounts: [{name: www, mountPath: $MNT/www}]
      containers:
      - name: web
        image: ktb-selftest/python:1
        args: [-m, http.server, "8000", --bind, 0.0.0.0]
        workingDir: $MNT/www
        ports: [{name: http, containerPort: 8000}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 5}
        volumeMounts: [{name: www, mountPath: $MNT/www}]
EOF

# ---------------------------------------------------------------- Deployment, Service stand-in
web_ready() { [ "$(jp deployment/web '{.status.readyReplicas}')" = "$1" ]; }
check "2 web replicas Ready" wait_until 30 web_ready 2
ips=$(k get pods -l app=web -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | sort -u)
check "distinct loopback podIPs ($(echo $ips))" test "$(echo "$ips" | grep -c '^127\.')" = 2

python3 "$HERE/service-proxy.py" --env-file "$ENV_FILE" --namespace "$NS" --service web --listen 127.0.0.1:0 \
  --ready-file "$WORK/proxy.ready" >/dev/null 2>"$WORK/proxy.log" &
PROXY_PID=$!
wait_until 10 test -s "$WORK/proxy.ready"
ADDR=$(awk '{print $3}' "$WORK/proxy.ready")
for i in 1 2 3 4; do curl -sf --max-time 5 "http://$ADDR/index.html"; done >"$WORK/answers"
check "the Service stand-in spreads over both replicas" test "$(sort -u "$WORK/answers" | grep -c '^hello from web-')" = 2

pids=$(k get pods -l app=web -o jsonpath='{range .items[*]}{.status.containerStatuses[0].containerID}{"\n"}{end}' | sed 's,process://,,')
k scale deployment web --replicas=1 >/dev/null
check "scaled to 1: one pod left" wait_until 20 sh -c "[ \$(kubectl -n $NS get pods -l app=web -o name | wc -l) = 1 ]"
alive=0; for p in $pids; do [ -d "/proc/$p" ] && alive=$((alive + 1)); done
check "scaled to 1: one process killed" test "$alive" = 1
for i in 1 2 3; do curl -sf --max-time 5 "http://$ADDR/index.html"; done >"$WORK/answers1"
check "the Service stand-in answers from the one replica" test "$(sort -u "$WORK/answers1" | wc -l)" = 1

# ---------------------------------------------------------------- Jobs
k apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 0
  template:
    spec:
      $PIN
      restartPolicy: Never
      containers: [{name: main, image: ktb-selftest/sh:1, command: [sh, -c, 'exit 3']}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: reads-secret}
spec:
  backoffLimit: 0
  template:
    spec:
      $PIN
      restartPolicy: Never
      volumes:
      - {name: creds, secret: {secretName: creds, items: [{key: file, path: file.txt}]}}
      - {name: out, persistentVolumeClaim: {claimName: out}}
      containers:
      - name: main
        image: ktb-selftest/sh:1
        command: [sh, -c, 'echo "\$TOKEN \$(cat $MNT/creds/file.txt) \$MY_NS" > $MNT/out/result']
        env:
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
        - {name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        volumeMounts: [{name: creds, mountPath: $MNT/creds}, {name: out, mountPath: $MNT/out}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-secret}
spec:
  $PIN
  restartPolicy: Never
  containers:
  - name: main
    image: ktb-selftest/sh:1
    command: [sh, -c, 'exit 0']
    env: [{name: X, valueFrom: {secretKeyRef: {name: missing, key: x}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  $PIN
  containers: [{name: main, image: ktb-selftest/sh:1, command: [sh, -c, 'exit 1']}]
EOF
job_cond() { [ "$(jp "job/$1" "{.status.conditions[?(@.type==\"$2\")].status}")" = True ]; }
check "Job 'exit 3' Failed" wait_until 30 job_cond fails Failed
code=$(k get pods -l job-name=fails -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}')
check "its pod reports exit code 3 (got '$code')" test "$code" = 3
check "Job reading a Secret (env + file) Succeeded" wait_until 30 job_cond reads-secret Complete
result=$(cat "$WORK/state/pvc/$NS/out/result" 2>/dev/null)
check "it wrote 'hunter2 file-content $NS' on its claim (got '$result')" test "$result" = "hunter2 file-content $NS"
check "its mounts stayed private (host mount points empty)" \
  test -d "$MNT/creds" -a -d "$MNT/out" -a -z "$(find "$MNT/creds" "$MNT/out" -mindepth 1)"
waiting() { [ "$(jp pod/no-secret '{.status.containerStatuses[0].state.waiting.reason}')" = CreateContainerConfigError ]; }
check "a missing Secret: CreateContainerConfigError" wait_until 15 waiting
restarted() { [ "$(jp pod/crash '{.status.containerStatuses[0].restartCount}')" -ge 1 ]; }
check "restartPolicy Always restarts an exited container" wait_until 15 restarted

# ---------------------------------------------------------------- deletion, kubelet exit
k delete job --all --wait=false >/dev/null; k delete pod no-secret crash --wait=false >/dev/null
check "deleted pods are finished by the kubelet" wait_until 20 no_pods -l app!=web
last=$(k get pods -l app=web -o jsonpath='{.items[0].status.containerStatuses[0].containerID}' | sed 's,process://,,')
kill "$KUBELET_PID"; wait "$KUBELET_PID" 2>/dev/null; KUBELET_PID=
check "kubelet exit kills its processes" test -n "$last" -a ! -d "/proc/$last"
gone() { ! kubectl get node "$NODE" >/dev/null 2>&1; }
check "kubelet exit deletes its node" wait_until 5 gone

if [ "$FAIL" != 0 ]; then
  echo "--- kubelet log (tail)"; tail -40 "$WORK/kubelet.log"
  echo "--- container logs: $WORK/logs"; tail -n 5 "$WORK"/logs/*.log 2>/dev/null | tail -60
fi
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
