#!/usr/bin/env python3
"""process-kubelet.py - a kubelet that really runs pods, as local processes (tests only; root).

    process-kubelet.py --env-file /tmp/kube-testbed/env \\
        --image-map nixcache:test=/path/to/nixcache [--image-map IMAGE=BINARY ...] \\
        [--node-name process-node] [--namespace NS ...] [--log-dir DIR] [--state-dir DIR]

Which pods: those whose first container's image matches an --image-map key (see ktb/images.py:
a key with a tag or digest matches exactly, a key without one matches every tag of its
repository), in the --namespace(s) given (default: all), without the annotation
`kube-testbed/ignore: "true"`. It registers its own Node (--node-name, default process-node) with
those claims in the annotation `kube-testbed/process-kubelet`, binds the unscheduled pods it
claims (nodeSelector checked against the node's labels; affinity and taints ignored) and runs
the pods bound to it. fake-kubelet.py leaves pods claimed by a live process kubelet alone and
keeps faking every other pod, so both can run on one control plane. Wait for the
PROCESS_KUBELET_NODE=... lines on stdout (or --ready-file) before creating pods.

What a pod gets:
  * a loopback address 127.A.B.C of --pod-cidr (default 127.N.0.0/16, N from the node name) as
    status.podIP/podIPs (hostIP 127.0.0.1). There is no network namespace: as the stand-in for
    one, `0.0.0.0` and `[::]` in args and env values (`--listen 0.0.0.0:8501`, `--bind 0.0.0.0`)
    are rewritten to the pod's address, so replicas listen on distinct addresses. A program
    that binds all addresses by itself will clash with its replicas. kube-apiserver 1.20 takes
    loopback pod IPs, but rejects them in Endpoints (the endpoints controller logs
    FailedToUpdateEndpoint): reach Services through service-proxy.py;
  * per container one process: container.command, else the mapped binary as the image's
    entrypoint, then args, with Kubernetes `$(VAR)` expansion (a command that cannot be
    executed: exit code 128, reason StartError). Env: the kubelet's PATH, HOME=/root, HOSTNAME,
    --pass-env/--env, then the container's envFrom and env (literal values,
    secretKeyRef, configMapKeyRef, fieldRef: metadata.name/namespace/uid/labels/annotations,
    spec.nodeName/serviceAccountName, status.podIP/podIPs/hostIP). A missing Secret, ConfigMap
    or key that is not optional leaves the container waiting (CreateContainerConfigError), retried;
  * volumes (ktb/volumes.py): secret (items, defaultMode), configMap, downwardAPI, emptyDir,
    hostPath, persistentVolumeClaim (STATE/pvc/NS/CLAIM, kept across pods; the claim must exist).
    Each container runs in a private mount namespace (and a UTS namespace: its hostname is the
    pod's name, as HOSTNAME says) with each volume bind-mounted at its
    mountPath (missing mount points are created on the host as empty directories); a non-empty
    host directory is never mounted over: an emptyDir there (e.g. /tmp) is skipped, anything
    else is a CreateContainerError. Secret files are those of the Secret at pod start;
  * probes: httpGet, tcpSocket and exec (nsenter into the container's mount namespace) for
    startup, readiness and liveness, with initialDelaySeconds, periodSeconds (at most
    --probe-period-cap if set), timeoutSeconds, success/failureThreshold. Ready without a
    readiness probe once started. A failed startup or liveness probe restarts the container;
  * restartPolicy: Always restarts an exited process, OnFailure a failed one (back-off
    --backoff-base doubling up to --backoff-max, shorter than a kubelet's for tests); a Never
    pod ends Succeeded or Failed, an OnFailure pod Succeeded, with the exit codes in
    containerStatuses (the Job controller counts them). Init containers run one by one first;
  * deletion (deletionTimestamp): SIGTERM to each container's process group, SIGKILL after the
    deletion's grace period, then the deletion is finished (DELETE gracePeriodSeconds=0);
  * logs: every container's stdout+stderr, with a header line per start, appended to
    LOG_DIR/<namespace>_<pod>.log (the path is in this program's log).
Not done: runAsUser/runAsGroup/fsGroup and readOnlyRootFilesystem (processes run as root on the
host's file system), resource limits, activeDeadlineSeconds of the pod (the Job controller
enforces the Job's), projected volumes, events, `kubectl logs/exec`.

On SIGTERM/SIGINT (or --max-seconds, or the API server unreachable for --give-up seconds):
every process gets SIGTERM, SIGKILL after --exit-grace, and the Node is deleted (--keep-node
keeps it) so that the pods left on it are garbage-collected. Processes also die with the
kubelet if it is killed (PR_SET_PDEATHSIG).
"""
import argparse
import hashlib
import os
import shutil
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ktb import api as kapi  # noqa: E402
from ktb import images  # noqa: E402
from ktb.api import ApiError, pod_path  # noqa: E402
from ktb.container import Options  # noqa: E402
from ktb.node import Node  # noqa: E402
from ktb.pod_worker import IpPool, PodWorker  # noqa: E402

PROG = "process-kubelet"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Kubelet:
    def __init__(self, api, a):
        self.api, self.a = api, a
        self.image_map = images.parse_image_map(a.image_map)
        self.namespaces = set(a.namespace)
        self.state_dir = a.state_dir
        self.opts = Options(self.image_map, base_env(a), a.log_dir, a.probe_period_cap, a.backoff_base, a.backoff_max)
        self.ips = IpPool(a.pod_cidr)
        labels = dict(kv.split("=", 1) for kv in a.node_label)
        self.node = Node(api, a.node_name, labels, images.claims_annotation(self.image_map, self.namespaces),
                         a.kubelet_version)
        self.workers = {}  # pod uid -> PodWorker
        self.finished = set()  # uids whose worker ended, while the pod is still listed
        self.ignored = set()  # uids of pods bound here that this kubelet cannot run (logged once)
        self.exiting = False
        self.stop = threading.Event()

    def log(self, msg):
        kapi.log(PROG, msg)

    # ---------------------------------------------------------------- which pods
    def claims(self, pod):
        md = pod["metadata"]
        if (md.get("annotations") or {}).get("kube-testbed/ignore") == "true":
            return False
        if self.namespaces and md["namespace"] not in self.namespaces:
            return False
        return images.lookup(self.image_map, images.first_image(pod)) is not None

    def binaries(self, pod):
        """{container name: mapped binary or None} (a container with command needs none)."""
        out = {}
        for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]:
            key = images.lookup(self.image_map, c.get("image", ""))
            out[c["name"]] = self.image_map[key] if key else None
        return out

    def list_pods(self, field_selector):
        paths = ["/api/v1/namespaces/%s/pods" % ns for ns in sorted(self.namespaces)] or ["/api/v1/pods"]
        pods = []
        for path in paths:
            pods += self.api.req("GET", path, query={"fieldSelector": field_selector})["items"]
        return pods

    # ---------------------------------------------------------------- loop
    def schedule(self):
        for p in self.list_pods("spec.nodeName="):
            md = p["metadata"]
            if self.claims(p) and not md.get("deletionTimestamp") and self.node.selector_matches(p):
                try:
                    self.api.req("POST", pod_path(p, "/binding"), {
                        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"], "uid": md["uid"]},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": self.node.name}})
                    self.log("bound %s -> %s" % (kapi.pod_name(p), self.node.name))
                except ApiError as e:
                    if e.code not in (404, 409):
                        raise

    def sync(self):
        live = set()
        for p in self.list_pods("spec.nodeName=" + self.node.name):
            live.add(p["metadata"]["uid"])
            self.dispatch(p)
        for uid, w in list(self.workers.items()):
            if uid not in live:
                w.vanish()
            if not w.is_alive():
                del self.workers[uid]
                self.finished.add(uid)
        self.finished &= live
        self.ignored &= live

    def dispatch(self, pod):
        md = pod["metadata"]
        uid = md["uid"]
        if uid in self.workers:
            self.workers[uid].update(pod)
        elif md.get("deletionTimestamp"):
            self.finish_deletion(pod)  # nothing of it runs here
        elif uid in self.finished or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            pass
        elif self.claims(pod):
            w = PodWorker(self, pod, self.binaries(pod))
            self.workers[uid] = w
            w.start()
        elif uid not in self.ignored:
            self.ignored.add(uid)
            self.log("pod %s is bound here but not claimed (image %s, namespace, or ignore annotation): left alone"
                     % (kapi.pod_name(pod), images.first_image(pod)))

    def finish_deletion(self, pod):
        """What a kubelet does once a deleted pod's containers are gone."""
        try:
            self.api.req("DELETE", pod_path(pod), {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                                   "preconditions": {"uid": pod["metadata"]["uid"]}})
            self.log("deleted %s" % kapi.pod_name(pod))
        except ApiError as e:
            if e.code not in (404, 409):
                self.log("deleting %s: %s" % (kapi.pod_name(pod), e))
        except OSError as e:
            self.log("deleting %s: %s" % (kapi.pod_name(pod), e))

    def run(self):
        shutil.rmtree(os.path.join(self.state_dir, "pods"), ignore_errors=True)
        os.makedirs(self.a.log_dir, exist_ok=True)
        self.node.register()
        self.announce()
        deadline = time.monotonic() + self.a.max_seconds if self.a.max_seconds > 0 else None
        last_ok = time.monotonic()
        try:
            while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    self.node.heartbeat()
                    self.schedule()
                    self.sync()
                    last_ok = time.monotonic()
                except (ApiError, OSError) as e:
                    self.log("API: %s" % e)
                    if time.monotonic() - last_ok > self.a.give_up:
                        self.log("API server unreachable for %ss, exiting" % self.a.give_up)
                        break
                self.stop.wait(self.a.interval)
        finally:
            self.shutdown()

    def announce(self):
        lines = "".join("%s=%s\n" % kv for kv in (
            ("PROCESS_KUBELET_NODE", self.node.name), ("PROCESS_KUBELET_POD_CIDR", self.a.pod_cidr),
            ("PROCESS_KUBELET_STATE_DIR", self.state_dir), ("PROCESS_KUBELET_LOG_DIR", self.a.log_dir),
            ("PROCESS_KUBELET_PID", os.getpid())))
        sys.stdout.write(lines)
        sys.stdout.flush()
        if self.a.ready_file:
            with open(self.a.ready_file + ".new", "w") as f:
                f.write(lines)
            os.replace(self.a.ready_file + ".new", self.a.ready_file)
        self.log("node %s up; images %s; namespaces %s; logs in %s" % (
            self.node.name, ", ".join("%s=%s" % kv for kv in sorted(self.image_map.items())),
            ", ".join(sorted(self.namespaces)) or "all", self.a.log_dir))

    def shutdown(self):
        self.exiting = True
        for w in self.workers.values():
            w.request_stop(self.a.exit_grace)
        for w in self.workers.values():
            w.join(self.a.exit_grace + 5)
        if not self.a.keep_node:
            try:
                self.node.delete()
            except (ApiError, OSError) as e:
                self.log("deleting node %s: %s" % (self.node.name, e))
        self.log("stopped")


def base_env(a):
    """The environment every container starts from (its image's environment, so to speak)."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "HOME": "/root"}
    for name in a.pass_env:
        if name in os.environ:
            env[name] = os.environ[name]
    for kv in a.env:
        k, sep, v = kv.partition("=")
        if not sep:
            raise SystemExit("%s: --env wants NAME=VALUE, got %r" % (PROG, kv))
        env[k] = v
    return env


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kapi.add_connection_args(ap)
    ap.add_argument("--image-map", action="append", required=True, metavar="IMAGE=BINARY",
                    help="run pods of IMAGE with BINARY as the image's entrypoint (repeatable)")
    ap.add_argument("--node-name", default="process-node")
    ap.add_argument("--node-label", action="append", default=[], metavar="KEY=VALUE", help="extra Node label")
    ap.add_argument("--namespace", action="append", default=[], help="only pods of this namespace (repeatable)")
    ap.add_argument("--pod-cidr", help="loopback range of pod IPs (default 127.N.0.0/16, N from the node name)")
    ap.add_argument("--state-dir", help="volumes and claims (default /tmp/process-kubelet-NODE)")
    ap.add_argument("--log-dir", help="container logs (default STATE_DIR/logs)")
    ap.add_argument("--ready-file", help="write the PROCESS_KUBELET_* lines here once the node is registered")
    ap.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                    help="pass this variable of the kubelet's environment to every container")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set in every container")
    ap.add_argument("--probe-period-cap", type=float, default=0, help="probe at least this often (seconds; 0 = as asked)")
    ap.add_argument("--backoff-base", type=float, default=1.0, help="first restart back-off (seconds)")
    ap.add_argument("--backoff-max", type=float, default=10.0, help="longest restart back-off (seconds)")
    ap.add_argument("--exit-grace", type=float, default=2.0, help="SIGTERM->SIGKILL delay when the kubelet exits")
    ap.add_argument("--keep-node", action="store_true", help="do not delete the Node on exit")
    ap.add_argument("--interval", type=float, default=0.5, help="API polling interval (seconds)")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop after this long (0 = until killed)")
    ap.add_argument("--give-up", type=float, default=60, help="exit when the API server is unreachable this long")
    ap.add_argument("--kubelet-version", default="v1.20.2")
    a = ap.parse_args(argv)
    if a.pod_cidr is None:
        a.pod_cidr = "127.%d.0.0/16" % (20 + hashlib.sha256(a.node_name.encode()).digest()[0] % 200)
    a.state_dir = os.path.abspath(a.state_dir or "/tmp/process-kubelet-" + a.node_name)
    a.log_dir = os.path.abspath(a.log_dir or os.path.join(a.state_dir, "logs"))
    return a


def main():
    a = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("%s: must run as root (mount namespaces, bind mounts)" % PROG)
    api, _ = kapi.api_from_args(a, PROG)
    try:
        k = Kubelet(api, a)
    except ValueError as e:
        raise SystemExit("%s: %s" % (PROG, e))
    signal.signal(signal.SIGTERM, lambda *_: k.stop.set())
    signal.signal(signal.SIGINT, lambda *_: k.stop.set())
    k.run()


if __name__ == "__main__":
    main()
