#!/usr/bin/env python3
"""List pairs of modules that import each other, per crate of the workspace.

A module "imports" another when its code names it through `use crate::..`,
`use super::..`, `use self::..`, a child module's name, or a full path
(`crate::store::topics::Topics`) anywhere in the file. Each path is resolved to the
deepest module it names, following `use` re-exports (`super::Topics` re-exported from
`topics` counts as `topics`).

Pairs where one module contains the other (`store` and `store::put`) are not circles:
a folder's `mod.rs` declares its parts and they use its shared types, one unit. A
circle is two modules neither of which contains the other, e.g. two siblings.

Exit status 1 when any pair is found, so CI fails on a new circle.
Usage: scripts/module-circles.py [workspace dir]
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(src):
    """Blank out comments, string and char literals (keeping line structure)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', src[i:i + 260])) and (i == 0 or not re.match(r"\w", src[i - 1])):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", src[i:j + 1]))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^\\'])'", src[i:i + 12])):
            out.append(" " * m.end())
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree, prefix=()):
    """Expand a use tree (`a::{b::C, d}`) into its full paths, as tuples of segments."""
    tree = tree.strip()
    if not tree:
        return []
    depth, parts, cur = 0, [], ""
    # Split a top-level `{...}` group only after the prefix.
    m = re.match(r"^((?:[\w$]+\s*::\s*)*)\{(.*)\}$", tree, re.S)
    if m:
        head = tuple(s.strip() for s in m.group(1).split("::") if s.strip())
        for ch in m.group(2):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        out = []
        for p in parts:
            out += expand_use(p, prefix + head)
        return out
    alias = None
    m = re.search(r"\s+as\s+(\w+)$", tree)
    if m:
        alias, tree = m.group(1), tree[:m.start()]
    segs = tuple(s.strip() for s in tree.split("::") if s.strip())
    if segs and segs[-1] == "self":
        segs, alias = segs[:-1], alias or (segs[-2] if len(segs) > 1 else None)
    return [(prefix + segs, alias)]


class Crate:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.modules = set()
        self.children = {}  # module -> set of child names
        self.bodies = []  # (module path, stripped text of that module's own code)
        self.uses = {}  # module -> {name brought in by `use`: its full path}

    def load(self, path, module, mod_dir):
        src = strip(path.read_text())
        self.add_module(module)
        self.walk(src, module, mod_dir, path.parent)

    def add_module(self, module):
        self.modules.add(module)
        if module:
            self.children.setdefault(module[:-1], set()).add(module[-1])

    def walk(self, src, module, mod_dir, file_dir):
        """Split `src` into this module's own text and its inline/file submodules."""
        own = []
        i = 0
        pat = re.compile(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
        while True:
            m = pat.search(src, i)
            if not m or not re.match(r"(^|[\s;{}\]])$", src[m.start() - 1:m.start()] or " "):
                if not m:
                    own.append(src[i:])
                    break
                own.append(src[i:m.end()])
                i = m.end()
                continue
            own.append(src[i:m.start()])
            name, kind, attrs = m.group(2), m.group(3), m.group(1)
            child = module + (name,)
            self.add_module(child)
            if kind == ";":
                pm = re.search(r'#\[path\s*=\s*"([^"]*)"\]', attrs)
                if pm:
                    f = file_dir / pm.group(1)
                else:
                    f = mod_dir / f"{name}.rs"
                    if not f.exists():
                        f = mod_dir / name / "mod.rs"
                if f.exists():
                    sub_dir = f.parent if f.name == "mod.rs" else f.parent / f.stem
                    self.load(f, child, sub_dir)
                i = m.end()
            else:
                depth, j = 1, m.end()
                while j < len(src) and depth:
                    depth += {"{": 1, "}": -1}.get(src[j], 0)
                    j += 1
                self.walk(src[m.end():j - 1], child, mod_dir / name, file_dir)
                i = j
        self.bodies.append((module, "".join(own)))

    def resolve(self, module, segs, depth=0):
        """The deepest known module a path names, or None if it leaves the crate."""
        segs = list(segs)
        if not segs:
            return None
        if segs[0] == "crate":
            base, segs = (), segs[1:]
        elif segs[0] in ("super", "self"):
            base = module
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
        elif segs[0] in self.children.get(module, ()):
            base = module
        else:
            return None
        target = base
        for k, s in enumerate(segs):
            if target + (s,) in self.modules:
                target = target + (s,)
                continue
            via = self.uses.get(target, {}).get(s)
            if via is not None and depth < 8:
                # An item imported or re-exported here: the module that defines it.
                found = self.resolve(target, via + tuple(segs[k + 1:]), depth + 1)
                if found is not None:
                    return found
            break
        return target

    def edges(self):
        edges = {}
        parsed = []
        for module, text in self.bodies:
            text = re.sub(r"\bpub\s*\([^)]*\)", "pub", text)
            uses = []
            for m in re.finditer(r"(?<![\w$:])use\s+([^;]*);", text):
                for path, alias in expand_use(m.group(1)):
                    uses.append(path)
                    if path and path[-1] not in ("*", "self"):
                        self.uses.setdefault(module, {})[alias or path[-1]] = path
            parsed.append((module, text, uses))
        for module, text, uses in parsed:
            paths = list(uses)
            text = re.sub(r"(?<![\w$:])use\s+[^;]*;", " ", text)
            for m in re.finditer(r"(?<![\w$:])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)", text):
                paths.append(tuple(s.strip() for s in m.group(1).split("::")))
            for p in paths:
                t = self.resolve(module, p)
                if t is not None and t != module:
                    edges.setdefault(module, set()).add(t)
        return edges

    def circles(self):
        e = self.edges()
        pairs = set()
        for a, targets in e.items():
            for b in targets:
                nested = a[:len(b)] == b or b[:len(a)] == a
                if not nested and a in e.get(b, ()):
                    pairs.add(tuple(sorted((a, b))))
        return sorted(pairs)


def crate_roots(ws):
    for member in sorted(p.parent for p in ws.glob("*/Cargo.toml")):
        src = member / "src"
        for root in [src / "lib.rs", src / "main.rs", *sorted(src.glob("bin/*.rs"))]:
            if root.exists():
                yield f"{member.name}:{root.relative_to(member)}", root
        for d in ("tests", "benches", "examples", "fuzz_targets"):
            for root in sorted((member / d).glob("*.rs")) + sorted((member / d).glob("*/main.rs")):
                yield f"{member.name}:{root.relative_to(member)}", root


def main():
    ws = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    found = 0
    for name, root in crate_roots(ws):
        crate = Crate(name, root)
        crate.load(root, (), root.parent)
        for a, b in crate.circles():
            fmt = lambda m: "::".join(("crate",) + m)
            print(f"{name}: {fmt(a)} <-> {fmt(b)}")
            found += 1
    if found:
        print(f"{found} module circle(s): two modules must not import each other", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
