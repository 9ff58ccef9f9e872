"""Pod volumes as host directories, and each container's mount plan.

Volumes live under STATE/pods/<uid>/volumes/<name> (removed with the pod); a
persistentVolumeClaim is STATE/pvc/<namespace>/<claim>, which outlives pods. Secret, ConfigMap
and downwardAPI files reflect the objects at pod start (no live update).
"""
import os
import shutil

from .container_env import ConfigError, ObjectCache, field_ref


class VolumeError(Exception):
    """A volume cannot be set up yet (missing Secret or claim): the pod stays ContainerCreating."""


class MountError(ConfigError):
    reason = "CreateContainerError"


def pod_dir(state_dir, uid):
    return os.path.join(state_dir, "pods", uid)


def claim_dir(state_dir, namespace, claim):
    return os.path.join(state_dir, "pvc", namespace, claim)


def _safe_join(root, rel):
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise VolumeError("invalid file path %r" % rel)
    return os.path.join(root, *parts)


def _write_files(root, files):
    """files: [(relative path, bytes, mode)]"""
    for rel, data, mode in files:
        path = _safe_join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)


def _key_files(kind, src, data, ns):
    """Files of a secret/configMap volume source given the object's data (None = missing)."""
    name = src.get("secretName") if kind == "Secret" else src.get("name")
    optional = src.get("optional") is True
    if data is None:
        if optional:
            return []
        raise VolumeError('%s "%s" not found' % (kind.lower(), name))
    mode = src.get("defaultMode", 0o644)
    items = src.get("items")
    if not items:
        return [(k, v, mode) for k, v in sorted(data.items())]
    files = []
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise VolumeError("couldn't find key %s in %s %s/%s" % (it["key"], kind, ns, name))
        files.append((it["path"], data[it["key"]], it.get("mode", mode)))
    return files


def _downward_files(pod, src):
    mode = src.get("defaultMode", 0o644)
    files = []
    for it in src.get("items") or []:
        path = (it.get("fieldRef") or {}).get("fieldPath", "")
        if path in ("metadata.labels", "metadata.annotations"):
            m = pod["metadata"].get(path.split(".")[1]) or {}
            value = "".join('%s="%s"\n' % kv for kv in sorted(m.items()))
        else:
            try:
                value = field_ref(pod, path)
            except ConfigError as e:
                raise VolumeError(str(e)) from None
        files.append((it["path"], value.encode(), it.get("mode", mode)))
    return files


def _host_path(src):
    path, typ = src.get("path", ""), src.get("type", "")
    if not os.path.exists(path):
        if typ != "DirectoryOrCreate":
            raise VolumeError("hostPath %s does not exist" % path)
        os.makedirs(path, 0o755)
    return path


def prepare(api, pod, state_dir):
    """{volume name: (host path, kind)} for every volume of `pod`; raises VolumeError."""
    ns = pod["metadata"]["namespace"]
    root = os.path.join(pod_dir(state_dir, pod["metadata"]["uid"]), "volumes")
    cache = ObjectCache(api, ns)
    out = {}
    for v in pod["spec"].get("volumes") or []:
        name = v["name"]
        path = os.path.join(root, name)
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            if api.get("/api/v1/namespaces/%s/persistentvolumeclaims/%s" % (ns, claim)) is None:
                raise VolumeError('persistentvolumeclaim "%s" not found' % claim)
            path = claim_dir(state_dir, ns, claim)
            os.makedirs(path, exist_ok=True)
            out[name] = (path, "persistentVolumeClaim")
            continue
        if "hostPath" in v:
            out[name] = (_host_path(v["hostPath"]), "hostPath")
            continue
        if "secret" in v:
            kind, files = "secret", _key_files("Secret", v["secret"], cache.data("Secret", v["secret"].get("secretName", "")), ns)
        elif "configMap" in v:
            kind, files = "configMap", _key_files("ConfigMap", v["configMap"], cache.data("ConfigMap", v["configMap"].get("name", "")), ns)
        elif "downwardAPI" in v:
            kind, files = "downwardAPI", _downward_files(pod, v["downwardAPI"])
        elif "emptyDir" in v:
            kind, files = "emptyDir", []
        else:
            other = sorted(k for k in v if k != "name")
            raise VolumeError("volume %s: type %s is not supported by kube-testbed" % (name, other))
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, 0o755)
        _write_files(path, files)
        out[name] = (path, kind)
    return out


def _is_under(path, parent):
    return path != parent and path.startswith(parent.rstrip("/") + "/")


def _nonempty_dir(path):
    try:
        return os.path.isdir(path) and bool(os.listdir(path))
    except OSError:
        return False


def mount_plan(container, volume_paths):
    """[{source, target, readOnly, kind, skip}] for `container`, parents before children.

    kube-testbed never mounts over a non-empty host directory (a mount namespace hides it only
    from the container, but /etc or /tmp hidden is not what a test means): an emptyDir there
    (typically /tmp) is skipped and the container uses the host directory; anything else is a
    CreateContainerError."""
    plan = []
    for vm in container.get("volumeMounts") or []:
        if vm["name"] not in volume_paths:
            raise MountError("volumeMount %s names no volume of the pod" % vm["name"])
        source, kind = volume_paths[vm["name"]]
        if vm.get("subPath"):
            source = _safe_join(source, vm["subPath"])
            if not os.path.exists(source):
                os.makedirs(source, 0o755)
        target = os.path.normpath(vm.get("mountPath", ""))
        if not target.startswith("/") or target == "/":
            raise MountError("mountPath %r must be an absolute path other than /" % vm.get("mountPath"))
        read_only = vm.get("readOnly") is True or kind in ("secret", "configMap", "downwardAPI")
        plan.append({"name": vm["name"], "source": source, "target": target, "readOnly": read_only,
                     "kind": kind, "skip": None})
    plan.sort(key=lambda m: m["target"].count("/"))
    for m in plan:
        if any(_is_under(m["target"], o["target"]) for o in plan if not o["skip"]):
            continue  # inside another volume of this container, not on the host
        if _nonempty_dir(os.path.realpath(m["target"])):
            if m["kind"] != "emptyDir":
                raise MountError("mountPath %s is a non-empty host directory: kube-testbed does not mount over it"
                                 % m["target"])
            m["skip"] = "emptyDir %s not mounted over the non-empty host directory %s: the container uses it" % (
                m["name"], m["target"])
    return plan


def remove_pod_dir(state_dir, uid):
    shutil.rmtree(pod_dir(state_dir, uid), ignore_errors=True)
