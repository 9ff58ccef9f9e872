#!/usr/bin/env python3
"""Fails when modules of a crate use each other in a cycle.

For every module, its child modules (each standing for itself and everything below it) must use
each other without a cycle: `a` may use `b`, or `b` may use `a`, never both (directly or through
siblings). A module using its own parent or child is not counted: the parent owns the child.
Paths are read from the source (`use` trees, and `crate::`/`super::`/`self::` paths in code), so
a path written only inside a macro string is missed; inline `mod x { }` blocks count as their file.

Usage: module-cycles.py CRATE_SRC_DIR...   (exit 1 and the cycles when there are any)
"""
import os
import re
import sys


def module_files(src):
    """Maps module paths (tuples) to their files, for lib.rs and every module under src/."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        if parts and parts[0] == "bin":
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            stem = f[:-3]
            if stem in ("lib", "main") and not parts:
                mods.setdefault((), os.path.join(dirpath, f))
            elif stem == "mod":
                mods[parts] = os.path.join(dirpath, f)
            else:
                mods[parts + (stem,)] = os.path.join(dirpath, f)
    return mods


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def use_paths(tree):
    """Expands a use tree (`crate::{a::B, c::{D, E}}`) into its paths."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        depth, start, items = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(s[start:i])
                start = i + 1
        items.append(s[start:])
        for item in filter(None, items):
            brace = item.find("{")
            if brace >= 0:
                walk(prefix + item[:brace].rstrip(":").split("::"), item[brace + 1:item.rindex("}")])
            else:
                out.append(prefix + item.split(" as ")[0].split("as")[0].split("::"))

    walk([], tree)
    return [[p for p in path if p] for path in out]


def resolve(path, here, mods):
    """The module a path starting with crate/super/self names (its longest module prefix)."""
    if not path:
        return None
    if path[0] == "crate":
        base, rest = (), path[1:]
    elif path[0] in ("super", "self"):
        base, rest = here, path
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = base
    for i in range(1, len(rest) + 1):
        if base + tuple(rest[:i]) in mods:
            best = base + tuple(rest[:i])
        else:
            break
    return best


def edges_of(src):
    mods = module_files(src)
    edges = set()
    for mod, path in mods.items():
        with open(path) as f:
            text = strip(f.read())
        # A file-module's `super` is its parent; a mod.rs's `self` is the directory module.
        paths = []
        for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text):
            paths += use_paths(m.group(1))
        for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", text):
            paths.append(m.group(1).split("::"))
        for p in paths:
            target = resolve(p, mod, mods)
            if target is not None and target != mod:
                edges.add((mod, target))
    return mods, edges


def sibling_cycles(edges):
    graphs = {}
    for a, b in edges:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        if n == len(a) or n == len(b):
            continue  # parent and child
        parent = a[:n]
        graphs.setdefault(parent, {}).setdefault(a[n], set()).add(b[n])
    cycles = []
    for parent, graph in sorted(graphs.items()):
        for scc in strongly_connected(graph):
            if len(scc) > 1:
                cycles.append((parent, sorted(scc)))
    return cycles


def strongly_connected(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            out.append(scc)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    found = False
    for src in sys.argv[1:]:
        mods, edges = edges_of(src)
        for parent, scc in sibling_cycles(edges):
            found = True
            where = "::".join(("crate",) + parent)
            print(f"{src}: cycle among {where}::{{{', '.join(scc)}}}")
            members = set(scc)
            for a, b in sorted(edges):
                if a[:len(parent)] == parent and b[:len(parent)] == parent and \
                        len(a) > len(parent) and len(b) > len(parent) and \
                        a[len(parent)] in members and b[len(parent)] in members and \
                        a[len(parent)] != b[len(parent)]:
                    print(f"    {'::'.join(a)} -> {'::'.join(b)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
