"""A pod's status from its containers, as a kubelet reports it."""
from . import api as kapi


def _code(c):
    return c.state.get("terminated", {}).get("exitCode")


def initialized(inits):
    return all(c.done and _code(c) == 0 for c in inits)


def phase(inits, mains):
    """Pending / Running / Succeeded / Failed (ContainerRun lists: init and main containers).
    `done` means exited with no restart to come (restart policy)."""
    if any(c.done and _code(c) != 0 for c in inits):
        return "Failed"
    if any(not (c.done and _code(c) == 0) for c in inits):
        return "Pending"
    if mains and all(c.done for c in mains):
        return "Succeeded" if all(_code(c) == 0 for c in mains) else "Failed"
    if any(not c.ever_ran for c in mains):
        return "Pending"
    return "Running"


class ConditionClock:
    """lastTransitionTime of each condition: changes only when its status changes."""

    def __init__(self):
        self.seen = {}

    def condition(self, typ, ok, reason=None):
        status = "True" if ok else "False"
        if self.seen.get(typ, (None,))[0] != status:
            self.seen[typ] = (status, kapi.now())
        c = {"type": typ, "status": status, "lastProbeTime": None, "lastTransitionTime": self.seen[typ][1]}
        if reason and not ok:
            c["reason"] = reason
        return c


def pod_status(pod, clock, inits, mains, pod_ip, start_time):
    ph = phase(inits, mains)
    containers_ready = ph == "Running" and all(c.ready for c in mains)
    not_ready = "PodCompleted" if ph in ("Succeeded", "Failed") else "ContainersNotReady"
    status = {
        "phase": ph,
        "conditions": [clock.condition("Initialized", initialized(inits), "ContainersNotInitialized"),
                       clock.condition("Ready", containers_ready, not_ready),
                       clock.condition("ContainersReady", containers_ready, not_ready),
                       clock.condition("PodScheduled", True)],
        "hostIP": "127.0.0.1", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": start_time,
        "containerStatuses": [c.status() for c in mains],
        "qosClass": (pod.get("status") or {}).get("qosClass") or "BestEffort",
    }
    if inits:
        status["initContainerStatuses"] = [c.status() for c in inits]
    return status
