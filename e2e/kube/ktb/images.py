"""Image map of the process kubelet, and the claims a process kubelet publishes on its Node.

Matching rule: a map key with a tag or digest (`nixcache:test`, `repo@sha256:...`) matches that
exact image string; a key without one (`nixcache`, `registry:5000/team/nixcache`) matches every
tag and digest of that repository. Strings are compared as written: `nixcache:test` and
`docker.io/library/nixcache:test` are different images.
"""
import json
import time

from . import api

# Node annotation: {"images": [map keys], "namespaces": [...] (empty = all)}; fake-kubelet.py
# leaves unscheduled pods that a live process kubelet claims alone.
CLAIMS_ANNOTATION = "kube-testbed/process-kubelet"
# A node whose Ready heartbeat is older than this no longer claims anything.
CLAIM_FRESH_SECONDS = 40


def split_image(image):
    """`reg:5000/repo:tag@sha256:x` -> (`reg:5000/repo`, has_tag_or_digest)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    repo = name[:colon] if colon > slash else name
    return repo, repo != image


def parse_image_map(entries):
    """`IMAGE=BINARY` strings -> dict."""
    out = {}
    for e in entries:
        image, sep, binary = e.partition("=")
        if not sep or not image or not binary:
            raise ValueError("--image-map wants IMAGE=BINARY, got %r" % e)
        out[image] = binary
    return out


def lookup(image_map, image):
    """The map key matching `image` (exact first, then a tagless key of its repository), or None."""
    if not image:
        return None
    if image in image_map:
        return image
    repo, _ = split_image(image)
    for key in image_map:
        key_repo, tagged = split_image(key)
        if not tagged and key_repo == repo:
            return key
    return None


def first_image(pod):
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return containers[0].get("image", "")


def claims_annotation(image_map, namespaces):
    return json.dumps({"images": sorted(image_map), "namespaces": sorted(namespaces)})


def live_claims(nodes, own_node=None, now=None):
    """[(images dict, namespaces set)] of process-kubelet Nodes with a fresh Ready heartbeat."""
    out = []
    for n in nodes:
        md = n.get("metadata") or {}
        raw = (md.get("annotations") or {}).get(CLAIMS_ANNOTATION)
        if not raw or md.get("name") == own_node:
            continue
        ready = [c for c in (n.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        beat = api.parse_time(ready[0].get("lastHeartbeatTime")) if ready else None
        if beat is None or (now if now is not None else time.time()) - beat > CLAIM_FRESH_SECONDS:
            continue
        try:
            c = json.loads(raw)
        except ValueError:
            continue
        out.append(({k: "" for k in c.get("images") or []}, set(c.get("namespaces") or [])))
    return out


def claimed(claims, pod):
    """Whether one of `claims` (from live_claims) covers `pod`."""
    ns = pod["metadata"]["namespace"]
    image = first_image(pod)
    return any(lookup(images, image) and (not nss or ns in nss) for images, nss in claims)
