#!/usr/bin/env python3
"""Unit tests of the process kubelet and the Service stand-in (no API server needed).

    python3 -m unittest discover -s e2e/kube -p 'test_*.py'

The container test really starts a process through container_init.py (mount namespace, bind
mounts): it needs root and is skipped otherwise.
"""
import asyncio
import base64
import importlib.util
import os
import shutil
import socket
import tempfile
import time
import unittest

from ktb import images
from ktb.container import ContainerRun, Options
from ktb.container_env import ConfigError, command_line, container_process, resolve_env
from ktb.expand import expand, rewrite_listen
from ktb.pod_status import ConditionClock, phase, pod_status
from ktb.pod_worker import IpPool, PodWorker
from ktb.probes import ProbeState
from ktb.volumes import MountError, VolumeError, mount_plan, prepare

HERE = os.path.dirname(os.path.abspath(__file__))


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeApi:
    """GET by path from a dict; PATCHes are recorded."""

    def __init__(self, objects):
        self.objects = objects
        self.patches = []

    def get(self, path, **_):
        return self.objects.get(path)

    def patch(self, path, body, kind="merge"):
        self.patches.append((path, body))
        return {}


class FakeKubelet:
    """What a PodWorker needs of process-kubelet.py's Kubelet."""

    def __init__(self, root, api):
        self.api, self.state_dir, self.exiting = api, root, False
        self.opts = Options({}, {"PATH": "/usr/bin:/bin"}, root, 0, 0.1, 0.2)
        self.ips = IpPool("127.41.0.0/24")
        self.deleted = []

    def log(self, msg):
        pass

    def finish_deletion(self, pod):
        self.deleted.append(pod["metadata"]["name"])


def read(path):
    with open(path) as f:
        return f.read()


def secret(data):
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def pod(containers, volumes=None, ip="127.30.0.2"):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"containers": containers, "volumes": volumes or [], "nodeName": "process-node"},
            "status": {"podIP": ip, "hostIP": "127.0.0.1"}}


class ExpandTest(unittest.TestCase):
    def test_kubernetes_expansion(self):
        env = {"A": "1", "POD_IP": "127.1.0.2"}
        self.assertEqual(expand("$(A)-$(B)", env), "1-$(B)")
        self.assertEqual(expand("$$(A) $$ $x $(A", env), "$(A) $ $x $(A")
        self.assertEqual(expand("http://$(POD_IP):8501", env), "http://127.1.0.2:8501")
        self.assertEqual(expand("end$", env), "end$")

    def test_listen_rewrite(self):
        ip = "127.9.0.2"
        self.assertEqual(rewrite_listen("0.0.0.0:8501", ip), "127.9.0.2:8501")
        self.assertEqual(rewrite_listen("0.0.0.0", ip), ip)
        self.assertEqual(rewrite_listen("[::]:80", ip), "127.9.0.2:80")
        self.assertEqual(rewrite_listen("http://0.0.0.0:1/x", ip), "http://127.9.0.2:1/x")
        for untouched in ("10.0.0.0", "10.0.0.0:80", "1.0.0.0.0", "x0.0.0.0"):
            self.assertEqual(rewrite_listen(untouched, ip), untouched)


class ImagesTest(unittest.TestCase):
    def test_lookup(self):
        m = {"nixcache:test": "/bin/a", "python": "/usr/bin/python3", "reg:5000/team/tool": "/bin/t"}
        self.assertEqual(images.lookup(m, "nixcache:test"), "nixcache:test")
        self.assertIsNone(images.lookup(m, "nixcache:other"))
        self.assertIsNone(images.lookup(m, "nixcache"))
        self.assertEqual(images.lookup(m, "python:3.11"), "python")
        self.assertEqual(images.lookup(m, "python@sha256:abc"), "python")
        self.assertEqual(images.lookup(m, "reg:5000/team/tool:1"), "reg:5000/team/tool")
        self.assertIsNone(images.lookup(m, "reg:5000/team/other:1"))
        self.assertIsNone(images.lookup(m, ""))

    def test_claims_need_a_fresh_heartbeat(self):
        ann = images.claims_annotation({"nixcache:test": "/x"}, {"t1"})
        node = {"metadata": {"name": "process-node", "annotations": {images.CLAIMS_ANNOTATION: ann}},
                "status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": "2030-01-01T00:00:00Z"}]}}
        t = images.api.parse_time("2030-01-01T00:00:10Z")
        claims = images.live_claims([node], own_node="fake-node", now=t)
        p = pod([{"name": "c", "image": "nixcache:test"}])
        p["metadata"]["namespace"] = "t1"
        self.assertTrue(images.claimed(claims, p))
        p["metadata"]["namespace"] = "t2"
        self.assertFalse(images.claimed(claims, p))
        self.assertEqual(images.live_claims([node], now=t + 60), [])
        self.assertEqual(images.live_claims([node], own_node="process-node", now=t), [])


class EnvTest(unittest.TestCase):
    def api(self):
        return FakeApi({"/api/v1/namespaces/ns/secrets/db": secret({"url": "postgres://x"}),
                        "/api/v1/namespaces/ns/configmaps/cfg": {"data": {"level": "debug"}}})

    def test_env_sources_and_expansion(self):
        c = {"name": "c", "args": ["--advertise-url", "http://$(POD_IP):8501", "--listen", "0.0.0.0:8501", "$(HOME)"],
             "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                     {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                     {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                     {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                     {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                     {"name": "BIND", "value": "0.0.0.0:9"},
                     {"name": "BOTH", "value": "$(NS)/$(URL)"},
                     {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}}]}
        argv, env = container_process(self.api(), pod([c]), c, "/bin/serve", {"HOME": "/root"})
        self.assertEqual(argv, ["/bin/serve", "--advertise-url", "http://127.30.0.2:8501",
                                "--listen", "127.30.0.2:8501", "$(HOME)"])
        self.assertEqual(env["URL"], "postgres://x")
        self.assertEqual(env["LEVEL"], "debug")
        self.assertEqual(env["APP"], "x")
        self.assertEqual(env["BIND"], "127.30.0.2:9")
        self.assertEqual(env["BOTH"], "ns/postgres://x")
        self.assertEqual(env["HOME"], "/root")
        self.assertNotIn("OPT", env)

    def test_missing_refs_are_config_errors(self):
        for ref in ({"secretKeyRef": {"name": "nope", "key": "k"}},
                    {"secretKeyRef": {"name": "db", "key": "nokey"}},
                    {"configMapKeyRef": {"name": "cfg", "key": "nokey"}}):
            c = {"name": "c", "env": [{"name": "X", "valueFrom": ref}]}
            with self.assertRaises(ConfigError):
                resolve_env(self.api(), pod([c]), c)

    def test_command_replaces_the_entrypoint(self):
        self.assertEqual(command_line({"command": ["sh", "-c"], "args": ["exit $(N)"]}, "/bin/x", {"N": "3"}),
                         ["sh", "-c", "exit 3"])
        # no entrypoint: the args are the command line, as with an image without ENTRYPOINT
        self.assertEqual(command_line({"args": ["x"]}, None, {}), ["x"])
        with self.assertRaises(ConfigError):
            command_line({}, None, {})


class VolumeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_prepare_secret_items_and_modes(self):
        api = FakeApi({"/api/v1/namespaces/ns/secrets/key": secret({"secret-key": "k1", "other": "o"}),
                       "/api/v1/namespaces/ns/persistentvolumeclaims/data": {"metadata": {}}})
        vols = [{"name": "signing", "secret": {"secretName": "key", "defaultMode": 0o440,
                                               "items": [{"key": "secret-key", "path": "dir/secret-key"}]}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        out = prepare(api, pod([], vols), self.root)
        path, kind = out["signing"]
        self.assertEqual(kind, "secret")
        f = os.path.join(path, "dir", "secret-key")
        self.assertEqual(read(f), "k1")
        self.assertEqual(os.stat(f).st_mode & 0o777, 0o440)
        self.assertFalse(os.path.exists(os.path.join(path, "other")))
        self.assertEqual(out["data"][0], os.path.join(self.root, "pvc", "ns", "data"))
        self.assertTrue(os.path.isdir(out["tmp"][0]))

    def test_missing_secret_or_claim_waits(self):
        for v in ({"name": "s", "secret": {"secretName": "gone"}},
                  {"name": "d", "persistentVolumeClaim": {"claimName": "gone"}}):
            with self.assertRaises(VolumeError):
                prepare(FakeApi({}), pod([], [v]), self.root)
        out = prepare(FakeApi({}), pod([], [{"name": "s", "secret": {"secretName": "gone", "optional": True}}]), self.root)
        self.assertEqual(os.listdir(out["s"][0]), [])

    def test_never_mounts_over_a_non_empty_directory(self):
        busy = os.path.join(self.root, "busy")
        os.makedirs(os.path.join(busy, "inside"))
        vols = {"tmp": (self.root + "/v1", "emptyDir"), "key": (self.root + "/v2", "secret")}
        plan = mount_plan({"volumeMounts": [{"name": "tmp", "mountPath": busy}]}, vols)
        self.assertIn("not mounted", plan[0]["skip"])
        with self.assertRaises(MountError):
            mount_plan({"volumeMounts": [{"name": "key", "mountPath": busy}]}, vols)
        plan = mount_plan({"volumeMounts": [{"name": "key", "mountPath": busy + "/new/a"},
                                            {"name": "tmp", "mountPath": busy + "/new"}]}, vols)
        self.assertEqual([m["target"] for m in plan], [busy + "/new", busy + "/new/a"])
        self.assertEqual([m["readOnly"] for m in plan], [False, True])


class ProbeTest(unittest.TestCase):
    def test_thresholds(self):
        s = ProbeState({"httpGet": {}, "periodSeconds": 5, "failureThreshold": 2}, period_cap=1)
        self.assertEqual(s.period, 1)
        s.record(False, "", 0)
        self.assertIsNone(s.result)
        s.record(True, "", 1)
        self.assertTrue(s.result)
        s.record(False, "", 2)
        self.assertTrue(s.result)
        s.record(False, "", 3)
        self.assertFalse(s.result)
        self.assertEqual(s.next_due, 4)


class Run:
    def __init__(self, done=False, code=None, ran=True, ready=False):
        self.done, self.ever_ran, self.ready = done, ran, ready
        self.state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
        self.name = "c"

    def status(self):
        return {"name": self.name, "ready": self.ready, "state": self.state}


class StatusTest(unittest.TestCase):
    def test_phase(self):
        self.assertEqual(phase([], [Run(ran=False)]), "Pending")
        self.assertEqual(phase([], [Run()]), "Running")
        self.assertEqual(phase([], [Run(done=True, code=0)]), "Succeeded")
        self.assertEqual(phase([], [Run(done=True, code=0), Run(done=True, code=3)]), "Failed")
        self.assertEqual(phase([], [Run(done=True, code=0), Run()]), "Running")
        self.assertEqual(phase([Run(done=True, code=1)], [Run(ran=False)]), "Failed")
        self.assertEqual(phase([Run(code=1)], [Run(ran=False)]), "Pending")

    def test_ready_and_transition_times(self):
        clock = ConditionClock()
        p = pod([{"name": "c"}])
        s1 = pod_status(p, clock, [], [Run(ready=False)], "127.1.0.2", "t0")
        ready = [c for c in s1["conditions"] if c["type"] == "Ready"][0]
        self.assertEqual((ready["status"], ready["reason"]), ("False", "ContainersNotReady"))
        self.assertEqual(s1["podIPs"], [{"ip": "127.1.0.2"}])
        s2 = pod_status(p, clock, [], [Run(ready=False)], "127.1.0.2", "t0")
        self.assertEqual(s1, s2)  # nothing changed: nothing to report
        s3 = pod_status(p, clock, [], [Run(ready=True)], "127.1.0.2", "t0")
        self.assertEqual([c["status"] for c in s3["conditions"] if c["type"] == "Ready"], ["True"])


class IpPoolTest(unittest.TestCase):
    def test_distinct_addresses(self):
        pool = IpPool("127.40.0.0/30")
        got = [pool.allocate(uid) for uid in "abc"]
        self.assertEqual(pool.allocate("a"), got[0])
        self.assertEqual(sorted(got), ["127.40.0.1", "127.40.0.2", "127.40.0.3"])
        with self.assertRaises(RuntimeError):
            pool.allocate("d")
        pool.release("a")
        self.assertEqual(pool.allocate("d"), got[0])
        with self.assertRaises(ValueError):
            IpPool("10.0.0.0/24")


class ServiceProxyTest(unittest.TestCase):
    def test_ready_backends(self):
        sp = load_script("service-proxy")
        svc = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "m", "port": 9, "targetPort": 9090}]}}

        def p(ip, ready=True, deleting=False):
            x = {"metadata": {}, "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8501}]}]},
                 "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
            if deleting:
                x["metadata"]["deletionTimestamp"] = "now"
            return x

        pods = [p("127.1.0.3"), p("127.1.0.2"), p("127.1.0.4", ready=False), p("127.1.0.5", deleting=True)]
        self.assertEqual(sp.ready_backends(svc, None, pods), [("127.1.0.2", 8501), ("127.1.0.3", 8501)])
        self.assertEqual(sp.ready_backends(svc, "m", pods), [("127.1.0.2", 9090), ("127.1.0.3", 9090)])
        self.assertEqual(sp.ready_backends(svc, "nope", pods), [])
        f = sp.Forward("ns", "s", None, "127.0.0.1:0")
        f.backends = [("a", 1), ("b", 1)]
        self.assertEqual([f.candidates()[0] for _ in range(3)], [("a", 1), ("b", 1), ("a", 1)])

    def test_forwarding(self):
        """Bytes both ways with the half-close passed on; a refused backend is skipped; with no
        backend the connection is closed at once."""
        sp = load_script("service-proxy")

        async def echo(reader, writer):
            data = await reader.read()  # until the client's half-close
            writer.write(b"echo:" + data)
            await writer.drain()
            writer.close()

        async def scenario():
            backend = await asyncio.start_server(echo, "127.0.0.1", 0)
            port = backend.sockets[0].getsockname()[1]
            dead = socket.socket()
            dead.bind(("127.0.0.1", 0))  # bound, not listening: refuses
            f = sp.Forward("ns", "s", None, "127.0.0.1:0")
            proxy = await asyncio.start_server(f.handle, "127.0.0.1", 0)
            pport = proxy.sockets[0].getsockname()[1]

            async def call(payload):
                r, w = await asyncio.open_connection("127.0.0.1", pport)
                w.write(payload)
                w.write_eof()
                got = await asyncio.wait_for(r.read(), 5)
                w.close()
                return got

            self.assertEqual(await call(b"x"), b"")  # nothing ready
            f.backends = [("127.0.0.1", dead.getsockname()[1]), ("127.0.0.1", port)]
            answers = [await call(b"hi%d" % i) for i in range(2)]
            dead.close()
            proxy.close()
            backend.close()
            return answers

        self.assertEqual(asyncio.run(scenario()), [b"echo:hi0", b"echo:hi1"])


@unittest.skipUnless(os.geteuid() == 0, "needs root (mount namespace)")
class ContainerTest(unittest.TestCase):
    """A real process through container_init.py: env, a read-only secret mount, exit code."""

    def test_process_with_mounts(self):
        with tempfile.TemporaryDirectory() as root:
            src = os.path.join(root, "vol")
            os.makedirs(src)
            with open(os.path.join(src, "key"), "w") as f:
                f.write("s3cret")
            target = os.path.join(root, "mnt", "signing")
            out, seen = os.path.join(root, "out"), os.path.join(root, "mnt", "out")
            os.makedirs(out)
            spec = {"name": "c", "command": ["/bin/sh", "-c"],
                    "args": ["cat %s/key > %s/copy; echo $(X) > %s/x; touch %s/w 2>/dev/null; "
                             "cat /proc/sys/kernel/hostname > %s/h; exit 3" % (target, seen, seen, target, seen)],
                    "env": [{"name": "X", "value": "hello"}],
                    "volumeMounts": [{"name": "k", "mountPath": target}, {"name": "o", "mountPath": seen}]}
            opts = Options({}, {"PATH": "/usr/bin:/bin"}, root, 0, 1, 10)
            c = ContainerRun(spec, None, opts, os.path.join(root, "log"), 1)
            c.start(FakeApi({}), pod([spec]), {"k": (src, "secret"), "o": (out, "emptyDir")})
            self.assertIsNotNone(c.proc, c.state)
            deadline = time.monotonic() + 10
            code = None
            while code is None and time.monotonic() < deadline:
                code = c.poll()
                time.sleep(0.05)
            self.assertEqual(code, 3, read(os.path.join(root, "log")))
            self.assertEqual(c.state["terminated"]["reason"], "Error")
            self.assertEqual(read(os.path.join(out, "copy")), "s3cret")
            self.assertEqual(read(os.path.join(out, "x")), "hello\n")
            self.assertEqual(read(os.path.join(out, "h")), "p\n")  # the pod's name, in its own UTS namespace
            self.assertNotEqual(read("/proc/sys/kernel/hostname"), "p\n")
            self.assertFalse(os.path.exists(os.path.join(src, "w")))  # read-only mount
            self.assertEqual(os.listdir(target), [])  # the mounts were private to the container
            self.assertEqual(os.listdir(seen), [])

    def test_missing_binary_is_a_start_error(self):
        with tempfile.TemporaryDirectory() as root:
            spec = {"name": "c", "command": ["/nonexistent/binary"]}
            opts = Options({}, {"PATH": "/usr/bin:/bin"}, root, 0, 1, 10)
            c = ContainerRun(spec, None, opts, os.path.join(root, "log"), 1)
            c.start(FakeApi({}), pod([spec]), {})
            self.assertIsNone(c.proc)
            self.assertEqual(c.state["terminated"]["exitCode"], 128)
            self.assertEqual(c.state["terminated"]["reason"], "StartError")


@unittest.skipUnless(os.geteuid() == 0, "needs root (mount namespace)")
class PodWorkerTest(unittest.TestCase):
    """Whole pods through PodWorker with a recording API: phases, restarts, deletion."""

    def run_pod(self, spec, until, timeout=10):
        root = tempfile.mkdtemp()
        self.addCleanup(lambda: shutil.rmtree(root, ignore_errors=True))
        k = FakeKubelet(root, FakeApi({}))
        p = pod(spec["containers"])
        p["spec"].update(spec)
        w = PodWorker(k, p, {})
        w.start()
        self.addCleanup(lambda: (w.vanish(), w.join(5)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [b["status"] for _, b in k.api.patches]
            if statuses and until(statuses[-1]):
                return k, w, statuses
            time.sleep(0.05)
        self.fail("no status matched; last: %s" % (k.api.patches[-1:] or None))

    def test_never_ends_failed_with_the_exit_code(self):
        spec = {"restartPolicy": "Never", "initContainers": [{"name": "i", "command": ["true"]}],
                "containers": [{"name": "a", "command": ["sh", "-c", "exit 3"]}, {"name": "b", "command": ["true"]}]}
        _, _, statuses = self.run_pod(spec, lambda s: s["phase"] in ("Succeeded", "Failed"))
        last = statuses[-1]
        self.assertEqual(last["phase"], "Failed")
        self.assertEqual([c["state"]["terminated"]["exitCode"] for c in last["containerStatuses"]], [3, 0])
        self.assertEqual(last["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0)
        self.assertEqual(statuses[0]["phase"], "Pending")
        self.assertTrue(last["podIP"].startswith("127.41.0."))

    def test_on_failure_restarts_until_success(self):
        marker = tempfile.mkdtemp()
        self.addCleanup(lambda: shutil.rmtree(marker, ignore_errors=True))
        spec = {"restartPolicy": "OnFailure",
                "containers": [{"name": "a", "command": ["sh", "-c", "test -e $(M)/n && exit 0; touch $(M)/n; exit 1"],
                                "env": [{"name": "M", "value": marker}]}]}
        _, _, statuses = self.run_pod(spec, lambda s: s["phase"] == "Succeeded")
        self.assertEqual(statuses[-1]["containerStatuses"][0]["restartCount"], 1)
        self.assertEqual(statuses[-1]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1)

    def test_failed_liveness_probe_restarts(self):
        spec = {"containers": [{"name": "a", "command": ["sleep", "60"],
                                "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                                  "failureThreshold": 2}}],
                "terminationGracePeriodSeconds": 1}
        _, _, statuses = self.run_pod(spec, lambda s: s["containerStatuses"][0]["restartCount"] >= 1)
        last = statuses[-1]["containerStatuses"][0]["lastState"]["terminated"]
        self.assertEqual(last["exitCode"], 128 + 15)  # SIGTERM

    def test_startup_probe_gates_readiness(self):
        spec = {"containers": [{"name": "a", "command": ["sh", "-c", "sleep 1; touch $(D)/up; sleep 60"],
                                "env": [{"name": "D", "value": tempfile.mkdtemp()}],
                                "startupProbe": {"exec": {"command": ["sh", "-c", "test -e $D/up"]},
                                                 "periodSeconds": 1, "failureThreshold": 10}}]}
        self.addCleanup(lambda: shutil.rmtree(spec["containers"][0]["env"][0]["value"], ignore_errors=True))
        _, _, statuses = self.run_pod(spec, lambda s: s["containerStatuses"][0]["ready"])
        running = [s["containerStatuses"][0] for s in statuses if s["phase"] == "Running"]
        self.assertFalse(running[0]["started"])  # running, not started: the startup probe had not passed
        self.assertTrue(running[-1]["started"])

    def test_deletion_terminates_then_finishes(self):
        spec = {"terminationGracePeriodSeconds": 5,
                "containers": [{"name": "a", "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
                                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}
        k, w, statuses = self.run_pod(spec, lambda s: any(c["type"] == "Ready" and c["status"] == "True"
                                                          for c in s["conditions"]))
        pid = int(statuses[-1]["containerStatuses"][0]["containerID"].split("//")[1])
        deleted = dict(w.pod, metadata=dict(w.pod["metadata"], deletionTimestamp="x", deletionGracePeriodSeconds=5))
        t0 = time.monotonic()
        w.update(deleted)
        w.join(10)
        self.assertFalse(w.is_alive())
        self.assertLess(time.monotonic() - t0, 4)  # SIGTERM was enough: no wait for the grace period
        self.assertFalse(os.path.exists("/proc/%d" % pid))
        self.assertEqual(k.deleted, ["p"])


class FakeKubeletClaimsTest(unittest.TestCase):
    """fake-kubelet.py binds and fakes every pod but those a live process kubelet claims."""

    def test_claimed_pods_are_left_alone(self):
        fk = load_script("fake-kubelet")
        calls = []

        class Api:
            def req(self, method, path, body=None, ctype=None, ok404=False):
                calls.append((method, path))
                return {}

        args = type("A", (), {"no_node": False, "node_name": "fake-node", "exec": False})()
        k = fk.Kubelet(Api(), args)
        k.claims = [({"nixcache:test": ""}, {"t1"})]
        claimed = pod([{"name": "c", "image": "nixcache:test"}])
        claimed["metadata"]["namespace"] = "t1"
        claimed["spec"]["nodeName"] = ""
        k.handle(claimed)
        self.assertEqual(calls, [])
        other = dict(claimed, metadata=dict(claimed["metadata"], namespace="t2"))
        k.handle(other)
        self.assertIn(("POST", "/api/v1/namespaces/t2/pods/p/binding"), calls)


if __name__ == "__main__":
    unittest.main()
