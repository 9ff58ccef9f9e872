"""The process kubelet's Node: registration with its claims, Ready heartbeat, Lease."""
import os
import time

from .api import ApiError, now, now_micro
from .images import CLAIMS_ANNOTATION

HEARTBEAT_SECONDS = 10
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"


class Node:
    def __init__(self, api, name, labels, claims, version):
        self.api, self.name, self.labels, self.claims, self.version = api, name, labels, claims, version
        self.last_beat = 0.0

    def all_labels(self):
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "node.kubernetes.io/process-kubelet": "true"}
        labels.update(self.labels)
        return labels

    def register(self):
        meta = {"name": self.name, "labels": self.all_labels(), "annotations": {CLAIMS_ANNOTATION: self.claims}}
        if self.api.get("/api/v1/nodes/" + self.name) is None:
            self.api.req("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": meta})
        else:
            self.api.patch("/api/v1/nodes/" + self.name, {"metadata": meta})
        self.heartbeat(force=True)

    def heartbeat(self, force=False):
        """Node status (Ready) and Lease every HEARTBEAT_SECONDS, as a kubelet does."""
        if not force and time.time() - self.last_beat < HEARTBEAT_SECONDS:
            return
        self.last_beat = time.time()
        try:
            self.api.patch("/api/v1/nodes/%s/status" % self.name, {"status": self.status()}, kind="strategic")
        except ApiError as e:
            if e.code != 404 or force:
                raise
            self.register()  # someone deleted the Node: a kubelet registers again
            return
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        try:
            self.api.patch(LEASE_PATH + self.name, {"spec": spec})
        except ApiError as e:
            if e.code != 404:
                raise
            self.api.req("POST", LEASE_PATH, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                              "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                                              "spec": spec})

    def status(self):
        t = now()

        def cond(typ, status, reason):
            return {"type": typ, "status": status, "reason": reason, "message": reason,
                    "lastHeartbeatTime": t, "lastTransitionTime": t}

        res = {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        return {
            "capacity": res, "allocatable": res,
            "conditions": [cond("Ready", "True", "KubeletReady"),
                           cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                           cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                           cond("PIDPressure", "False", "KubeletHasSufficientPID")],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"kubeletVersion": self.version, "kubeProxyVersion": self.version,
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "process://0", "osImage": "process-kubelet",
                         "kernelVersion": os.uname().release, "machineID": "", "systemUUID": "", "bootID": ""}}

    def selector_matches(self, pod):
        """The pod's nodeSelector against this node's labels (affinity and taints are ignored)."""
        labels = self.all_labels()
        return all(labels.get(k) == v for k, v in (pod["spec"].get("nodeSelector") or {}).items())

    def delete(self):
        for path in ("/api/v1/nodes/" + self.name, LEASE_PATH + self.name):
            try:
                self.api.req("DELETE", path)
            except ApiError as e:
                if e.code != 404:
                    raise
