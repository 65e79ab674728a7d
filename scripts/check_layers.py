#!/usr/bin/env python3
"""Fails when an import circle between tether's top-level modules comes back.

A top-level module is each file or folder directly under `src/` (`lib.rs` and `main.rs`
are the roots, not modules). Every `crate::` path in non-test code counts, wherever it
appears: `use` lines, `use crate::{a, b::{c}}` groups, and paths inline in expressions
or types (`crate::a::f(..)`, `$crate::a` in macros), as well as `super::` chains that
climb to the crate root. Test code is left out: `tests.rs` files, items marked
`#[cfg(test)]` (inline `mod tests { .. }` and `mod tests;` files alike).

On failure it prints every strongly connected component of the module graph with more
than one module, and the file:line of each edge inside it, so the way out is visible.

    check_layers.py [SRC_DIR]     check a tree (default: src/ beside this script)
    check_layers.py --self-test   prove the check catches what it claims to
"""

import contextlib
import io
import os
import re
import sys
import tempfile

TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<line_comment>//[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<raw_string>b?r(?P<hashes>\#*)")
  | (?P<string>b?"(?:\\.|[^"\\])*")
  | (?P<char>b?'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^'\\\n])')
  | (?P<lifetime>'[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>\$?(?:r\#)?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<path_sep>::)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(text):
    """(kind, value, line) for identifiers and punctuation; comments and literals dropped."""
    pos, line, out = 0, 1, []
    while pos < len(text):
        m = TOKEN.match(text, pos)
        kind = m.lastgroup if m.lastgroup != "hashes" else "raw_string"
        end = m.end()
        if m.group("block_comment"):
            depth, i = 1, end
            while depth and i < len(text):
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            end = i
            kind = "block_comment"
        elif m.group("raw_string") is not None:
            close = '"' + m.group("hashes")
            i = text.find(close, end)
            end = len(text) if i < 0 else i + len(close)
            kind = "raw_string"
        if kind in ("ident", "path_sep", "punct"):
            value = m.group(0)
            if kind == "ident":
                value = value.lstrip("$")
                if value.startswith("r#"):
                    value = value[2:]
            out.append((kind, value, line))
        line += text.count("\n", pos, end)
        pos = end
    return out


def skip_item(toks, i):
    """Index just past the item starting at toks[i] (ends at `;` or a balanced `{}`)."""
    depth = 0
    while i < len(toks):
        v = toks[i][1]
        if v in "([":
            depth += 1
        elif v in ")]":
            depth -= 1
        elif v == ";" and depth == 0:
            return i + 1
        elif v == "{" and depth == 0:
            return skip_block(toks, i)
        i += 1
    return i


def skip_block(toks, i):
    """toks[i] is `{`: index just past its matching `}`."""
    depth = 0
    while i < len(toks):
        if toks[i][1] == "{":
            depth += 1
        elif toks[i][1] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def group_heads(toks, i):
    """toks[i] is `{` of a use group: the first segment of each top-level entry."""
    heads, depth, expect = [], 0, True
    while i < len(toks):
        kind, v, line = toks[i]
        if v == "{":
            depth += 1
            if depth == 1:
                expect = True
        elif v == "}":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and v == ",":
            expect = True
        elif depth == 1 and expect and kind == "ident":
            heads.append((v, line))
            expect = False
        i += 1
    return heads


def module_path(rel):
    """Module path of a file relative to src/: net/listener.rs -> [net, listener]."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def is_cfg_test(toks, i):
    """toks[i] is `#`: is this exactly `#[cfg(test)]`?"""
    vals = [t[1] for t in toks[i : i + 7]]
    return vals == ["#", "[", "cfg", "(", "test", ")", "]"]


def references(text, rel):
    """(top module, line) for every crate-level path in non-test code, plus the
    files of `#[cfg(test)] mod x;` declarations (to leave out)."""
    toks = tokens(text)
    base = module_path(rel)
    refs, test_files = [], []
    stack = []  # inline `mod x {` nesting: (name, depth at which it closes)
    depth, i = 0, 0
    while i < len(toks):
        kind, v, line = toks[i]
        if v == "#" and is_cfg_test(toks, i):
            j = i + 7
            # Further attributes on the same item.
            while j < len(toks) and toks[j][1] == "#":
                j = skip_item_attr(toks, j)
            k = j
            while k < len(toks) and toks[k][1] in ("pub", "(", "crate", "super", "in", ")"):
                k += 1
            if k + 2 < len(toks) and toks[k][1] == "mod" and toks[k + 2][1] == ";":
                name = toks[k + 1][1]
                folder = os.path.dirname(rel) if rel.endswith("mod.rs") else rel[:-3]
                test_files.append(os.path.join(folder, name + ".rs"))
                test_files.append(os.path.join(folder, name, "mod.rs"))
            i = skip_item(toks, j)
            continue
        if v == "mod" and kind == "ident" and i + 2 < len(toks) and toks[i + 2][1] == "{":
            stack.append((toks[i + 1][1], depth))
            i += 2
            continue
        if v == "{":
            depth += 1
        elif v == "}":
            depth -= 1
            if stack and stack[-1][1] == depth:
                stack.pop()
        elif v == "crate" and kind == "ident" and i + 1 < len(toks) and toks[i + 1][0] == "path_sep":
            i = target(toks, i + 2, [], refs)
            continue
        elif v == "super" and kind == "ident" and (i == 0 or toks[i - 1][0] != "path_sep"):
            here = base + [s[0] for s in stack]
            j = i
            while j + 1 < len(toks) and toks[j][1] == "super" and toks[j + 1][0] == "path_sep":
                here = here[:-1]
                j += 2
            if j > i:
                i = target(toks, j, here, refs)
                continue
        i += 1
    return refs, test_files


def skip_item_attr(toks, j):
    """toks[j] is `#` of an attribute: index past its `]`."""
    depth = 0
    while j < len(toks):
        if toks[j][1] == "[":
            depth += 1
        elif toks[j][1] == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


def target(toks, j, here, refs):
    """After a path prefix that resolved to module `here`: record the top module."""
    if here:
        refs.append((here[0], toks[j - 1][2]))
        return j
    if j < len(toks) and toks[j][1] == "{":
        refs.extend(group_heads(toks, j))
    elif j < len(toks) and toks[j][0] == "ident":
        refs.append((toks[j][1], toks[j][2]))
    return j


def graph(src):
    tops = set()
    for name in os.listdir(src):
        full = os.path.join(src, name)
        if os.path.isdir(full):
            tops.add(name)
        elif name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            tops.add(name[:-3])
    files = []
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs") and name != "tests.rs":
                rel = os.path.relpath(os.path.join(root, name), src)
                if rel not in ("lib.rs", "main.rs"):
                    files.append(rel)
    edges, skipped = {}, set()
    parsed = {}
    for rel in sorted(files):
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            parsed[rel] = references(f.read(), rel)
        skipped.update(parsed[rel][1])
    for rel, (refs, _) in parsed.items():
        if rel in skipped:
            continue
        me = rel.split(os.sep)[0]
        me = me[:-3] if me.endswith(".rs") else me
        for to, line in refs:
            if to in tops and to != me:
                edges.setdefault(me, {}).setdefault(to, []).append(f"{rel}:{line}")
    return tops, edges


def components(nodes, edges):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check(src, quiet=False):
    """Number of circles found; prints them."""
    tops, edges = graph(src)
    circles = [c for c in components(tops, edges) if len(c) > 1]
    for comp in circles:
        print(f"circle: {{{', '.join(comp)}}}")
        for a in comp:
            for b in sorted(edges.get(a, {})):
                if b in comp:
                    where = edges[a][b]
                    more = f" (+{len(where) - 3} more)" if len(where) > 3 else ""
                    print(f"  {a} -> {b}: {', '.join(where[:3])}{more}")
    if not circles and not quiet:
        print(f"no circles between the {len(tops)} top-level modules")
    return len(circles)


FIXTURES = {
    # An inline call in one direction and a nested use group in the other.
    "inline_and_group": ({
        "a.rs": "pub fn x() { let _ = crate::b::y(); }\n",
        "b.rs": "use crate::{c, a::{x}};\npub fn y() {}\n",
        "c.rs": "",
    }, 1),
    # super::super:: from a nested file climbs to the root.
    "super_chain": ({
        "a/mod.rs": "pub mod inner;\n",
        "a/inner.rs": "fn f() { super::super::b::g(); }\n",
        "b.rs": "use crate::a;\npub fn g() {}\n",
    }, 1),
    # Test code does not count: an inline cfg(test) module, a cfg(test) mod file, tests.rs.
    "tests_excluded": ({
        "a.rs": "use crate::b;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
        "b.rs": "#[cfg(test)]\nmod check;\n#[cfg(test)]\nmod tests;\n/// crate::a in a comment\nconst S: &str = \"crate::a::x\";\n",
        "b/check.rs": "use crate::a;\n",
        "b/tests.rs": "use crate::a;\n",
    }, 0),
    # A `$crate::` path in a macro body is a dependency too.
    "macro_path": ({
        "a.rs": "macro_rules! m { () => { $crate::b::y() } }\n",
        "b.rs": "pub(crate) fn y() { crate::a::z() }\n",
    }, 1),
    # An inline module's super:: counts from the inline module.
    "inline_mod": ({
        "a.rs": "mod inner { fn f() { super::super::b::g(); } }\n",
        "b.rs": "pub fn g() { let _ = crate::a::X; }\n",
    }, 1),
    # One-way layering passes.
    "one_way": ({
        "a.rs": "use crate::b::y;\nfn f() { crate::b::y(); }\n",
        "b.rs": "pub fn y() { self::z(); super::c::w(); }\nfn z() {}\n",
        "c.rs": "pub fn w() {}\n",
    }, 0),
}


def self_test():
    failed = 0
    for name, (files, want) in FIXTURES.items():
        with tempfile.TemporaryDirectory() as tmp:
            for rel, text in files.items():
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
            report = io.StringIO()
            with contextlib.redirect_stdout(report):
                got = check(tmp, quiet=True)
            if got != want:
                print(f"FAIL {name}: {got} circle(s), expected {want}\n{report.getvalue()}", end="")
                failed += 1
    print(f"self-test: {len(FIXTURES) - failed} of {len(FIXTURES)} fixtures as expected")
    return 1 if failed else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    src = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    return 1 if check(os.path.normpath(src)) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
