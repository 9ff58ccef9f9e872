"""The life of one pod on the process kubelet, in a thread of its own: loopback IP, volumes,
init containers, containers with restarts and probes, status reports, graceful deletion."""
import ipaddress
import threading
import time
import traceback

from . import volumes
from .api import ApiError, now, pod_name, pod_path
from .container import ContainerRun
from .pod_status import ConditionClock, phase, pod_status

TICK = 0.2


class IpPool:
    """Distinct loopback addresses for the pods of one kubelet: the stand-in for pod networking.
    Addresses are handed out in turn (a freed one comes back last), never x.x.x.0 or x.x.x.255."""

    def __init__(self, cidr):
        self.net = ipaddress.ip_network(cidr)
        if not self.net.subnet_of(ipaddress.ip_network("127.0.0.0/8")):
            raise ValueError("--pod-cidr %s is not inside 127.0.0.0/8" % cidr)
        self.lock = threading.Lock()
        self.by_uid = {}
        self.next = 0

    def allocate(self, uid):
        with self.lock:
            if uid in self.by_uid:
                return self.by_uid[uid]
            used = set(self.by_uid.values())
            for _ in range(self.net.num_addresses):
                ip = str(self.net[self.next % self.net.num_addresses])
                self.next += 1
                if ip not in used and ip.rsplit(".", 1)[1] not in ("0", "255"):
                    self.by_uid[uid] = ip
                    return ip
            raise RuntimeError("pod CIDR %s exhausted" % self.net)

    def release(self, uid):
        with self.lock:
            self.by_uid.pop(uid, None)


def deletion_grace(pod):
    md = pod["metadata"]
    grace = md.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    return max(float(grace), 0.0)


class PodWorker(threading.Thread):
    """`ctx` is the kubelet: api, opts (container.Options), state_dir, ips, exiting, log()."""

    def __init__(self, ctx, pod, binaries):
        super().__init__(name="pod " + pod_name(pod), daemon=True)
        self.ctx, self.pod, self.uid, self.label = ctx, pod, pod["metadata"]["uid"], pod_name(pod)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop_grace = None  # set once the pod is deleted (or the kubelet exits)
        self.deleting = self.vanished = False
        self.clock = ConditionClock()
        self.sent = None
        self.ip = None
        self.start_time = (pod.get("status") or {}).get("startTime") or now()
        md, spec = pod["metadata"], pod["spec"]
        self.log_path = "%s/%s_%s.log" % (ctx.opts.log_dir, md["namespace"], md["name"])
        grace = spec.get("terminationGracePeriodSeconds", 30)
        run = lambda c: ContainerRun(c, binaries.get(c["name"]), ctx.opts, self.log_path, grace)  # noqa: E731
        self.inits = [run(c) for c in spec.get("initContainers") or []]
        self.mains = [run(c) for c in spec["containers"]]

    # ---------------------------------------------------------------- from the main loop
    def update(self, pod):
        with self.lock:
            self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.request_stop(deletion_grace(pod), deleting=True)

    def vanish(self):
        """The pod is gone from the API (force-deleted): kill at once, report nothing."""
        self.vanished = True
        self.request_stop(0)

    def request_stop(self, grace, deleting=False):
        with self.lock:
            self.deleting = self.deleting or deleting
            self.stop_grace = grace if self.stop_grace is None else min(self.stop_grace, grace)
        self.wake.set()

    def stopping(self):
        return self.stop_grace is not None

    # ---------------------------------------------------------------- thread
    def run(self):
        try:
            self.ip = self.ctx.ips.allocate(self.uid)
            self.ctx.log("pod %s: IP %s, log %s" % (self.label, self.ip, self.log_path))
            vols = self.setup_volumes()
            if vols is not None:
                self.run_containers(vols)
        except Exception:  # a kubelet bug must not leave processes behind or go unseen
            self.ctx.log("pod %s: kubelet error\n%s" % (self.label, traceback.format_exc()))
            self.kill_all(0)
            self.report(extra={"phase": "Failed", "reason": "KubeletError",
                               "message": "process-kubelet error, see its log"})
        try:
            while not self.stopping():
                self.sleep(1)
        finally:
            self.teardown()

    def sleep(self, seconds):
        if self.wake.wait(seconds):
            self.wake.clear()

    def view(self):
        """The pod with the status fields a container may read (status.podIP for POD_IP)."""
        with self.lock:
            pod = dict(self.pod)
        pod["status"] = dict(pod.get("status") or {}, podIP=self.ip, podIPs=[{"ip": self.ip}], hostIP="127.0.0.1")
        return pod

    def setup_volumes(self):
        while not self.stopping():
            try:
                return volumes.prepare(self.ctx.api, self.view(), self.ctx.state_dir)
            except volumes.VolumeError as e:
                msg = "MountVolume.SetUp failed: %s" % e
            except (ApiError, OSError) as e:
                msg = "volumes: %s" % e
            for c in self.inits + self.mains:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": msg}}
            self.report()
            self.sleep(1)
        return None

    def active(self):
        """Init containers one by one until each succeeded, then all containers."""
        for c in self.inits:
            if not c.done:
                return [c]
            if c.state.get("terminated", {}).get("exitCode") != 0:
                return []
        return self.mains

    def run_containers(self, vols):
        while not self.stopping():
            t = time.monotonic()
            for c in self.active():
                if c.wants_start(t):
                    c.start(self.ctx.api, self.view(), vols)
                    if c.proc is None and "terminated" in c.state:
                        self.after_exit(c, c.state["terminated"]["exitCode"], t)
            for c in self.inits + self.mains:
                code = c.poll()
                if code is not None:
                    self.after_exit(c, code, t)
                c.probe(t, self.ip)
                c.tick(t)
            self.report()
            if phase(self.inits, self.mains) in ("Succeeded", "Failed"):
                return
            self.sleep(TICK)

    def after_exit(self, c, code, t):
        policy = self.pod["spec"].get("restartPolicy") or "Always"
        init = c in self.inits
        restart = policy == "Always" and not init or policy != "Never" and code != 0
        self.ctx.log("pod %s: container %s exited %d%s" % (self.label, c.name, code, ", restarting" if restart else ""))
        if restart:
            c.schedule_restart(t)
        else:
            c.done = True

    def report(self, extra=None):
        status = pod_status(self.view(), self.clock, self.inits, self.mains, self.ip, self.start_time)
        status.update(extra or {})
        if status == self.sent or self.vanished:
            return
        try:
            self.ctx.api.patch(pod_path(self.pod, "/status"), {"status": status})
        except ApiError as e:
            if e.code == 404:
                self.vanish()
            else:
                self.ctx.log("pod %s: status: %s" % (self.label, e))
            return
        except OSError as e:
            self.ctx.log("pod %s: status: %s (retrying)" % (self.label, e))
            return
        old = self.sent or {}
        ready = lambda s: [c["status"] for c in s.get("conditions", []) if c["type"] == "Ready"]  # noqa: E731
        if old.get("phase") != status["phase"] or ready(old) != ready(status):
            self.ctx.log("pod %s: %s, Ready=%s" % (self.label, status["phase"], ready(status)[0]))
        self.sent = status

    # ---------------------------------------------------------------- stop
    def kill_all(self, grace):
        """SIGTERM every process group, SIGKILL what is left after `grace` seconds."""
        everyone = self.inits + self.mains
        for c in everyone:
            c.terminate(grace)
        deadline = time.monotonic() + grace
        while any(c.proc for c in everyone) and time.monotonic() < deadline:
            for c in everyone:
                c.poll()
            time.sleep(0.05)
        for c in everyone:
            c.kill_now()

    def teardown(self):
        grace = self.stop_grace or 0
        if any(c.proc for c in self.inits + self.mains):
            self.ctx.log("pod %s: stopping (grace %gs)" % (self.label, grace))
        self.kill_all(grace)
        volumes.remove_pod_dir(self.ctx.state_dir, self.uid)
        self.ctx.ips.release(self.uid)
        if self.deleting and not self.vanished:
            self.ctx.finish_deletion(self.pod)  # its containers are gone, even when the kubelet exits
