"""Startup, readiness and liveness probes (httpGet, tcpSocket, exec) with a kubelet's counters."""
import http.client
import socket
import ssl
import subprocess
import time


class ProbeState:
    """Counters of one probe of one container run. `result` is None until a threshold is met,
    then True (successThreshold successes in a row) or False (failureThreshold failures)."""

    def __init__(self, spec, period_cap=0):
        self.spec = spec
        period = spec.get("periodSeconds") or 10
        self.period = min(period, period_cap) if period_cap > 0 else period
        self.timeout = spec.get("timeoutSeconds") or 1
        self.failure_threshold = spec.get("failureThreshold") or 3
        self.success_threshold = spec.get("successThreshold") or 1
        self.initial_delay = spec.get("initialDelaySeconds") or 0
        self.reset(time.monotonic())

    def reset(self, started):
        self.next_due = started + self.initial_delay
        self.successes = self.failures = 0
        self.result = None
        self.message = ""

    def due(self, t):
        return t >= self.next_due

    def record(self, ok, message, t):
        self.next_due = t + self.period
        self.message = message
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.success_threshold:
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.failure_threshold:
                self.result = False


def resolve_port(port, container):
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    raise ValueError("no container port named %r" % port)


def _http(action, pod_ip, container, timeout):
    port = resolve_port(action.get("port"), container)
    host = action.get("host") or pod_ip
    if action.get("scheme", "HTTP").upper() == "HTTPS":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": "kube-probe/1.20", "Accept": "*/*"}
    headers.update({h["name"]: h["value"] for h in action.get("httpHeaders") or []})
    try:
        conn.request("GET", action.get("path") or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    return 200 <= status < 400, "HTTP probe %s:%s%s -> %s" % (host, port, action.get("path") or "/", status)


def _tcp(action, pod_ip, container, timeout):
    port = resolve_port(action.get("port"), container)
    host = action.get("host") or pod_ip
    socket.create_connection((host, port), timeout=timeout).close()
    return True, "TCP probe %s:%s connected" % (host, port)


def _exec(action, pid, env, timeout):
    """The command in the container's mount namespace, with its environment."""
    argv = ["nsenter", "-t", str(pid), "-m", "--"] + list(action.get("command") or [])
    r = subprocess.run(argv, env=env, timeout=timeout, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return r.returncode == 0, "exec probe exit %d: %s" % (r.returncode, r.stdout[-200:].decode(errors="replace"))


def run_probe(state, pod_ip, container, pid, env):
    """(ok, message) of one probe attempt; any error is a failure."""
    spec = state.spec
    try:
        if "httpGet" in spec:
            return _http(spec["httpGet"], pod_ip, container, state.timeout)
        if "tcpSocket" in spec:
            return _tcp(spec["tcpSocket"], pod_ip, container, state.timeout)
        if "exec" in spec:
            return _exec(spec["exec"], pid, env, state.timeout)
        return False, "probe handler %s is not supported by kube-testbed" % sorted(spec)
    except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired) as e:
        return False, "probe failed: %s" % e
