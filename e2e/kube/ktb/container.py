"""One container of a pod as a local process: start (through container_init.py), exit status,
probes, restarts with back-off, termination of its whole process group."""
import json
import os
import select
import signal
import subprocess
import sys
import time

from . import api as kapi
from .container_env import ConfigError, container_process
from .probes import ProbeState, run_probe
from .volumes import mount_plan

INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "container_init.py")
# A container that ran this long before exiting restarts without back-off (a kubelet: 10 min).
BACKOFF_RESET_SECONDS = 60


class Options:
    """What every container of a kubelet shares (set from the command line)."""

    def __init__(self, image_map, base_env, log_dir, probe_period_cap, backoff_base, backoff_max):
        self.image_map, self.base_env, self.log_dir = image_map, base_env, log_dir
        self.probe_period_cap, self.backoff_base, self.backoff_max = probe_period_cap, backoff_base, backoff_max


class ContainerRun:
    def __init__(self, spec, binary, opts, log_path, kill_grace):
        self.spec, self.binary, self.opts, self.log_path = spec, binary, opts, log_path
        self.kill_grace = kill_grace  # the pod's terminationGracePeriodSeconds, for probe kills
        self.name = spec["name"]
        self.state = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state = None
        self.restart_count = 0
        self.backoff_n = 0
        self.proc = None
        self.env = {}
        self.started_at = None  # (RFC 3339, monotonic) of the running process
        self.next_start = 0.0
        self.done = False  # exited and will not be restarted
        self.ever_ran = False
        self.ready = self.started = False
        self.kill_deadline = None
        self.probes = {}

    # ---------------------------------------------------------------- start
    def wants_start(self, t):
        return self.proc is None and not self.done and t >= self.next_start

    def start(self, api, pod, volume_paths):
        """Start the process; a configuration problem leaves the container waiting (retried)."""
        try:
            base = dict(self.opts.base_env, HOSTNAME=pod_hostname(pod))
            argv, env = container_process(api, pod, self.spec, self.binary, base)
            mounts = mount_plan(self.spec, volume_paths)
        except ConfigError as e:
            self.state = {"waiting": {"reason": e.reason, "message": str(e)}}
            self.next_start = time.monotonic() + 1
            return
        self._spawn(argv, env, mounts, pod_hostname(pod))

    def _spawn(self, argv, env, mounts, hostname):
        error = ""
        r, w = os.pipe()
        plan = {"argv": argv, "env": env, "mounts": mounts, "workingDir": self.spec.get("workingDir"),
                "hostname": hostname, "status_fd": w, "kubelet_pid": os.getpid()}
        with open(self.log_path, "ab") as logf:
            logf.write(("==> kube-testbed %s: container %s start #%d: %s\n" % (
                kapi.now(), self.name, self.restart_count, " ".join(argv))).encode())
            logf.flush()
            try:
                self.proc = subprocess.Popen([sys.executable, INIT], env={"KTB_CONTAINER_PLAN": json.dumps(plan)},
                                             stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                             pass_fds=(w,), start_new_session=True, cwd="/")
            except OSError as e:
                self.proc, error = None, "cannot start %s: %s" % (INIT, e)
        os.close(w)
        try:
            if self.proc is not None:
                error = _read_until_eof(r, 10)
        finally:
            os.close(r)
        self.started_at = (kapi.now(), time.monotonic())
        self.ever_ran = True
        if error:
            if self.proc is not None:
                self.proc.wait()
            self.proc = None
            self._terminated(128, "StartError", error)
            return
        self.env = env
        self.state = {"running": {"startedAt": self.started_at[0]}}
        self.ready = self.started = False
        self.probes = {kind: ProbeState(self.spec[kind + "Probe"], self.opts.probe_period_cap)
                       for kind in ("startup", "readiness", "liveness") if self.spec.get(kind + "Probe")}

    # ---------------------------------------------------------------- exit
    def poll(self):
        """The exit code if the process ended since the last call, else None."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            return None
        self._kill_group(signal.SIGKILL)  # what the container left behind goes with it
        self.proc = None
        code = rc if rc >= 0 else 128 - rc
        self._terminated(code, "Completed" if code == 0 else "Error", None)
        return code

    def _terminated(self, code, reason, message):
        t = self.started_at[0] if self.started_at else kapi.now()
        term = {"exitCode": code, "reason": reason, "startedAt": t, "finishedAt": kapi.now()}
        if message:
            term["message"] = message
        self.state = {"terminated": term}
        self.ready = self.started = False
        self.kill_deadline = None

    def schedule_restart(self, t):
        """After an exit the restart policy wants restarted: CrashLoopBackOff, then start."""
        ran = t - self.started_at[1] if self.started_at else 0
        if ran >= BACKOFF_RESET_SECONDS:
            self.backoff_n = 0
        delay = 0 if self.backoff_n == 0 else min(self.opts.backoff_base * 2 ** (self.backoff_n - 1), self.opts.backoff_max)
        self.backoff_n += 1
        self.last_state = self.state
        self.restart_count += 1
        self.next_start = t + delay
        self.state = {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": "back-off %gs restarting failed container %s" % (delay, self.name)}}

    # ---------------------------------------------------------------- probes
    def probe(self, t, pod_ip):
        """Run the probes that are due; a failed startup or liveness probe terminates."""
        if self.proc is None or self.kill_deadline is not None:
            return
        startup = self.probes.get("startup")
        if startup and startup.result is not True:
            if startup.due(t):
                startup.record(*run_probe(startup, pod_ip, self.spec, self.proc.pid, self.env), time.monotonic())
                if startup.result is False:
                    self._probe_kill("startup", startup)
                elif startup.result:
                    for kind in ("readiness", "liveness"):
                        if kind in self.probes:
                            self.probes[kind].reset(time.monotonic())
            if startup.result is not True:
                return
        self.started = True
        liveness = self.probes.get("liveness")
        if liveness and liveness.due(t):
            liveness.record(*run_probe(liveness, pod_ip, self.spec, self.proc.pid, self.env), time.monotonic())
            if liveness.result is False:
                self._probe_kill("liveness", liveness)
                return
        readiness = self.probes.get("readiness")
        if readiness is None:
            self.ready = True
        elif readiness.due(t):
            readiness.record(*run_probe(readiness, pod_ip, self.spec, self.proc.pid, self.env), time.monotonic())
            if readiness.result is not None:
                self.ready = readiness.result

    def _probe_kill(self, kind, state):
        kapi.log("process-kubelet", "container %s: %s probe failed %d times (%s), restarting" % (
            self.name, kind, state.failures, state.message))
        self.ready = False
        self.terminate(self.kill_grace)

    # ---------------------------------------------------------------- stop
    def terminate(self, grace):
        """SIGTERM now (SIGKILL for grace 0), SIGKILL once `grace` seconds passed (see tick)."""
        if self.proc is None:
            return
        if grace <= 0:
            self._kill_group(signal.SIGKILL)
        else:
            self._kill_group(signal.SIGTERM)
        self.kill_deadline = time.monotonic() + max(grace, 0)

    def tick(self, t):
        if self.proc is not None and self.kill_deadline is not None and t >= self.kill_deadline:
            self._kill_group(signal.SIGKILL)

    def kill_now(self):
        if self.proc is not None:
            self._kill_group(signal.SIGKILL)
            self.proc.wait()
            self.poll()

    def _kill_group(self, sig):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except OSError:
            pass

    # ---------------------------------------------------------------- status
    def status(self):
        s = {"name": self.name, "image": self.spec.get("image", ""),
             "imageID": "process://" + (self.binary or ""), "ready": self.ready, "started": self.started,
             "restartCount": self.restart_count, "state": self.state}
        if self.proc is not None:
            s["containerID"] = "process://%d" % self.proc.pid
        if self.last_state:
            s["lastState"] = self.last_state
        return s


def pod_hostname(pod):
    """spec.hostname, else the pod's name, cut to 63 characters as a kubelet does."""
    name = pod["spec"].get("hostname") or pod["metadata"]["name"]
    return name[:63].rstrip("-.")


def _read_until_eof(fd, timeout):
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")
