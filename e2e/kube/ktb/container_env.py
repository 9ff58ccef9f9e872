"""A container's environment as a kubelet computes it: envFrom, then env (literal values with
`$(VAR)` expansion, secretKeyRef, configMapKeyRef, fieldRef); then its command line."""
import base64

from .expand import expand, rewrite_listen


class ConfigError(Exception):
    """The container cannot be created yet (a kubelet's CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


class ObjectCache:
    """Secrets and ConfigMaps of one namespace, each fetched at most once per container start."""

    def __init__(self, api, namespace):
        self.api, self.ns, self.objs = api, namespace, {}

    def get(self, kind, name):
        if (kind, name) not in self.objs:
            plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
            self.objs[kind, name] = self.api.get("/api/v1/namespaces/%s/%s/%s" % (self.ns, plural, name))
        return self.objs[kind, name]

    def data(self, kind, name):
        """{key: bytes} of the object, or None when it does not exist."""
        obj = self.get(kind, name)
        if obj is None:
            return None
        if kind == "Secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out


def key_ref(cache, kind, ref):
    """Value of a secretKeyRef/configMapKeyRef; None when optional and missing."""
    data = cache.data(kind, ref.get("name", ""))
    optional = ref.get("optional") is True
    if data is None:
        if optional:
            return None
        raise ConfigError('%s "%s" not found' % (kind.lower(), ref.get("name")))
    if ref.get("key") not in data:
        if optional:
            return None
        raise ConfigError("couldn't find key %s in %s %s/%s" % (ref.get("key"), kind, cache.ns, ref.get("name")))
    return data[ref["key"]].decode(errors="replace")


def field_ref(pod, path):
    md, spec, st = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
        "metadata.uid": md.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": st.get("hostIP"), "status.podIP": st.get("podIP"),
        "status.podIPs": ",".join(i["ip"] for i in st.get("podIPs") or []),
    }
    if path in simple:
        return simple[path] or ""
    for prefix, field in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return (md.get(field) or {}).get(path[len(prefix) + 2:-2], "")
    raise ConfigError("fieldRef %s is not supported by kube-testbed" % path)


def env_from(cache, container):
    env = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(field)
            if ref is None:
                continue
            data = cache.data(kind, ref.get("name", ""))
            if data is None:
                if ref.get("optional") is True:
                    continue
                raise ConfigError('%s "%s" not found' % (kind.lower(), ref.get("name")))
            env.update({prefix + k: v.decode(errors="replace") for k, v in data.items()})
    return env


def resolve_env(api, pod, container):
    """{name: value} of what `container` defines (envFrom and env) in `pod`, whose status.podIP
    is already set. Only these names take part in `$(VAR)` expansion, as in Kubernetes."""
    cache = ObjectCache(api, pod["metadata"]["namespace"])
    env = env_from(cache, container)
    for e in container.get("env") or []:
        name, src = e["name"], e.get("valueFrom")
        if src is None:
            env[name] = expand(e.get("value", ""), env)
        elif "secretKeyRef" in src or "configMapKeyRef" in src:
            kind, ref = ("Secret", src["secretKeyRef"]) if "secretKeyRef" in src else ("ConfigMap", src["configMapKeyRef"])
            value = key_ref(cache, kind, ref)
            if value is not None:
                env[name] = value
        elif "fieldRef" in src:
            env[name] = field_ref(pod, src["fieldRef"].get("fieldPath", ""))
        else:
            raise ConfigError("env %s: valueFrom %s is not supported by kube-testbed" % (name, sorted(src)))
    return env


def command_line(container, binary, env):
    """argv: container.command (else the mapped binary as the image's entrypoint) + args,
    `$(VAR)`-expanded with the container's environment."""
    command = container.get("command") or ([binary] if binary else [])
    argv = [expand(a, env) for a in list(command) + list(container.get("args") or [])]
    if not argv:
        raise ConfigError("no command: container.command is empty and the image maps to no binary")
    return argv


def container_process(api, pod, container, binary, base_env):
    """(argv, env): `base_env` (the image's environment, in Kubernetes terms) under what the
    container defines, with the wildcard listen addresses rewritten to the pod's IP."""
    defined = resolve_env(api, pod, container)
    argv = command_line(container, binary, defined)
    ip = pod["status"]["podIP"]
    env = dict(base_env)
    env.update({k: rewrite_listen(v, ip) for k, v in defined.items()})
    return [rewrite_listen(a, ip) for a in argv], env
