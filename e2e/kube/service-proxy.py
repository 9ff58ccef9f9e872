#!/usr/bin/env python3
"""service-proxy.py - a Service stand-in on loopback, for pods run by process-kubelet.py.

    service-proxy.py --env-file /tmp/kube-testbed/env --namespace NS --service NAME \\
        --listen 127.0.0.1:PORT [--port NAME|NUMBER]
    service-proxy.py --env-file ENV --forward NS/NAME[:PORT]=127.0.0.1:PORT [--forward ...]

For each Service: every --interval seconds (default 0.5) it reads the Service (its selector and
the chosen port: --port by name or number, default the first) and the pods its selector picks
that are Ready, not being deleted and have a podIP; the port's targetPort (a number, or a
container port's name looked up in each pod) gives the backend port. Each accepted TCP
connection goes to the next ready backend in turn (round robin; a refused connection tries the
next one), bytes are copied both ways with half-closes passed on. With no ready backend the
connection is accepted and closed at once.

Why not Endpoints: the API server rejects loopback addresses in Endpoints, and pods of
process-kubelet.py have loopback podIPs; so this proxy finds the ready pods itself, the way the
endpoints controller would. A listen port 0 picks a free port. Once listening, it prints one
line per Service on stdout, `SERVICE_PROXY NS/NAME HOST:PORT` (also written to --ready-file).
Python 3 stdlib only (asyncio); stops on SIGTERM/SIGINT.
"""
import argparse
import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ktb import api as kapi  # noqa: E402
from ktb.api import ApiError  # noqa: E402

PROG = "service-proxy"
CONNECT_TIMEOUT = 3
TRIES = 3


def log(msg):
    kapi.log(PROG, msg)


def target_port(service_port, pod):
    """The backend port of `pod` for a Service port, or None (a named port the pod lacks)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod["spec"]["containers"]:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return p["containerPort"]
    return None


def is_ready(pod):
    st = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    return ready and st.get("podIP") and not pod["metadata"].get("deletionTimestamp")


def choose_port(service, selector):
    ports = (service.get("spec") or {}).get("ports") or []
    if selector is None:
        return ports[0] if ports else None
    for p in ports:
        if p.get("name") == selector or str(p.get("port")) == str(selector):
            return p
    return None


def ready_backends(service, port_selector, pods):
    """[(ip, port)] of the Service's ready pods, sorted (a stable round-robin order)."""
    sp = choose_port(service, port_selector)
    if sp is None:
        return []
    out = []
    for p in pods:
        port = target_port(sp, p)
        if is_ready(p) and port is not None:
            out.append((p["status"]["podIP"], port))
    return sorted(out)


class Forward:
    """One Service, its listening socket and its ready backends."""

    def __init__(self, namespace, service, port, listen):
        self.ns, self.service, self.port = namespace, service, port
        host, _, lport = listen.rpartition(":")
        self.host, self.lport = host or "127.0.0.1", int(lport)
        self.backends = []
        self.next = 0
        self.label = "%s/%s" % (namespace, service)

    def refresh(self, api):
        """Blocking (runs in a thread): re-read the Service and its pods."""
        svc = api.get("/api/v1/namespaces/%s/services/%s" % (self.ns, self.service))
        selector = ((svc or {}).get("spec") or {}).get("selector")
        backends = []
        if svc is not None and selector:
            q = ",".join("%s=%s" % kv for kv in sorted(selector.items()))
            pods = api.req("GET", "/api/v1/namespaces/%s/pods" % self.ns, query={"labelSelector": q})["items"]
            backends = ready_backends(svc, self.port, pods)
        if backends != self.backends:
            log("%s: ready backends: %s" % (self.label, ", ".join("%s:%s" % b for b in backends) or "none"))
            self.backends = backends

    def candidates(self):
        """Backends starting at the next one in turn."""
        b = self.backends
        if not b:
            return []
        i = self.next % len(b)
        self.next += 1
        return b[i:] + b[:i]

    async def handle(self, reader, writer):
        upstream = None
        for ip, port in self.candidates()[:TRIES]:
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(ip, port), CONNECT_TIMEOUT)
                break
            except (OSError, asyncio.TimeoutError) as e:
                log("%s: backend %s:%s: %s" % (self.label, ip, port, e or "timeout"))
        if upstream is None:
            await close_cleanly(reader, writer)
            return
        ur, uw = upstream
        await asyncio.gather(pipe(reader, uw, writer), pipe(ur, writer, uw))
        for w in (writer, uw):
            w.close()


async def close_cleanly(reader, writer):
    """FIN, not RST: send EOF, discard what the client still sends (briefly), then close."""
    try:
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 1)
    except (ConnectionError, OSError, asyncio.TimeoutError):
        pass
    writer.close()


async def pipe(src, dst, other):
    """Copy src -> dst, then pass the EOF on; on an error close both sides."""
    try:
        while True:
            data = await src.read(65536)
            if not data:
                break
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()
        other.close()


async def refresher(api, forwards, interval):
    while True:
        for f in forwards:
            try:
                await asyncio.to_thread(f.refresh, api)
            except (ApiError, OSError) as e:
                log("%s: %s" % (f.label, e))
        await asyncio.sleep(interval)


async def serve(api, forwards, a):
    for f in forwards:  # first backends before the first connection
        try:
            await asyncio.to_thread(f.refresh, api)
        except (ApiError, OSError) as e:
            log("%s: %s" % (f.label, e))
    servers, lines = [], []
    for f in forwards:
        server = await asyncio.start_server(f.handle, f.host, f.lport)
        host, port = server.sockets[0].getsockname()[:2]
        servers.append(server)
        lines.append("SERVICE_PROXY %s %s:%s\n" % (f.label, host, port))
    sys.stdout.write("".join(lines))
    sys.stdout.flush()
    if a.ready_file:
        with open(a.ready_file + ".new", "w") as fh:
            fh.write("".join(lines))
        os.replace(a.ready_file + ".new", a.ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(refresher(api, forwards, a.interval))
    await stop.wait()
    task.cancel()
    for s in servers:
        s.close()


def parse_forward(spec):
    """NS/NAME[:PORT]=HOST:PORT -> Forward"""
    svc, sep, listen = spec.partition("=")
    ns, slash, name = svc.partition("/")
    if not sep or not slash or not name or ":" not in listen:
        raise SystemExit("%s: --forward wants NS/NAME[:PORT]=HOST:PORT, got %r" % (PROG, spec))
    name, _, port = name.partition(":")
    return Forward(ns, name, port or None, listen)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kapi.add_connection_args(ap)
    ap.add_argument("--namespace")
    ap.add_argument("--service")
    ap.add_argument("--listen", help="HOST:PORT (port 0 = any free port)")
    ap.add_argument("--port", help="the Service port, by name or number (default the first)")
    ap.add_argument("--forward", action="append", default=[], metavar="NS/NAME[:PORT]=HOST:PORT")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--ready-file", help="write the SERVICE_PROXY lines here once listening")
    a = ap.parse_args()
    forwards = [parse_forward(f) for f in a.forward]
    if a.service or a.namespace or a.listen:
        if not (a.service and a.namespace and a.listen):
            raise SystemExit("%s: --namespace, --service and --listen go together" % PROG)
        forwards.append(Forward(a.namespace, a.service, a.port, a.listen))
    if not forwards:
        raise SystemExit("%s: nothing to forward (--service or --forward)" % PROG)
    api, _ = kapi.api_from_args(a, PROG)
    asyncio.run(serve(api, forwards, a))


if __name__ == "__main__":
    main()
