"""A minimal Kubernetes REST client: bearer token, JSON, loopback API servers only."""
import calendar
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class ApiError(Exception):
    """The API server answered with an HTTP error status."""

    def __init__(self, method, path, code, body):
        super().__init__("%s %s -> HTTP %s: %s" % (method, path, code, body[:400]))
        self.code = code
        self.body = body


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_micro():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def parse_time(s):
    """RFC 3339 (as the API server writes it) -> epoch seconds, or None."""
    if not s:
        return None
    try:
        return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def log(prog, *a):
    """One line on stderr, written at once (threads log concurrently)."""
    sys.stderr.write(" ".join([now(), prog + ":"] + [str(x) for x in a]) + "\n")
    sys.stderr.flush()


class Api:
    def __init__(self, server, token, ca_file, timeout=15):
        u = urllib.parse.urlparse(server)
        host = u.hostname or ""
        if host not in ("localhost", "::1") and not host.startswith("127."):
            raise SystemExit("refusing non-loopback API server %s" % server)
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl._create_unverified_context()

    def req(self, method, path, body=None, ctype="application/json", query=None):
        """JSON in, JSON out; raises ApiError on an HTTP error and OSError when unreachable."""
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.server + path, data=data, method=method)
        r.add_header("Authorization", "Bearer " + self.token)
        r.add_header("Accept", "application/json")
        if data is not None:
            r.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(r, context=self.ctx, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise ApiError(method, path, e.code, e.read().decode(errors="replace")) from None

    def get(self, path, **query):
        """The object, or None when it does not exist."""
        try:
            return self.req("GET", path, query=query or None)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def patch(self, path, body, kind="merge"):
        ctype = {"merge": "application/merge-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}[kind]
        return self.req("PATCH", path, body, ctype=ctype)


def read_env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


def add_connection_args(ap):
    ap.add_argument("--env-file", help="KEY=VALUE file from kube-control-plane.sh (KUBE_API_SERVER, KUBE_TOKEN, KUBE_CA_FILE)")
    ap.add_argument("--server", help="API server URL (default $KUBE_API_SERVER)")
    ap.add_argument("--token", help="bearer token (default $KUBE_TOKEN)")
    ap.add_argument("--ca-file", help="CA of the API server (default $KUBE_CA_FILE)")


def api_from_args(a, prog):
    env = dict(os.environ)
    if a.env_file:
        env.update(read_env_file(a.env_file))
    server = a.server or env.get("KUBE_API_SERVER")
    token = a.token or env.get("KUBE_TOKEN")
    if not server or not token:
        raise SystemExit("%s: need --server/--token or --env-file (or KUBE_API_SERVER/KUBE_TOKEN)" % prog)
    return Api(server, token, a.ca_file or env.get("KUBE_CA_FILE")), env


def pod_path(pod, sub=""):
    md = pod["metadata"]
    return "/api/v1/namespaces/%s/pods/%s%s" % (md["namespace"], md["name"], sub)


def pod_name(pod):
    return pod["metadata"]["namespace"] + "/" + pod["metadata"]["name"]
