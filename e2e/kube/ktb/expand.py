"""Kubernetes `$(VAR)` expansion, and the listen-address rewrite that stands in for a pod's own
network namespace."""
import re


def expand(s, env):
    """Kubernetes' expansion of command, args and env values: `$(NAME)` -> env[NAME] when defined
    (else left as written), `$$` -> `$`; anything else is copied."""
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c != "$" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        nxt = s[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = s.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = s[i + 2:close]
                out.append(env[name] if name in env else "$(" + name + ")")
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


# Every pod shares the host's network namespace, so a server listening on all addresses would
# clash with its own replicas. Each pod gets a loopback address instead, and the wildcard
# addresses in its args and env values are rewritten to it: `0.0.0.0:8501` -> `127.A.B.C:8501`,
# a bare `0.0.0.0` (`--bind 0.0.0.0`) -> `127.A.B.C`, and the same for `[::]`.
_WILDCARD = re.compile(r"(?<![\w.:])(?:0\.0\.0\.0|\[::\])(?![\w.])")


def rewrite_listen(s, pod_ip):
    return _WILDCARD.sub(pod_ip, s)
