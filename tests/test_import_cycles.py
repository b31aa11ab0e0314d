"""No import cycles among fwxtwisted's modules, type-only imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fwxtwisted"

#: Cycles known today, each a frozenset of modules; the test fails on any other cycle,
#: and on an allowed one that is gone (so the entry is removed with the cycle).
ALLOWED_CYCLES: set[frozenset[str]] = set()


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def importGraph() -> dict[str, set[str]]:
    """Module to the package's modules it imports, anywhere in it (functions and
    C{if TYPE_CHECKING:} blocks included: a type-only cycle still ties two modules)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        isPackage = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if isPackage else name.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                if target.split(".")[0] != PACKAGE.name:
                    continue
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        onStack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                following = pending.pop()
                if following not in index:
                    index[following] = low[following] = counter
                    counter += 1
                    stack.append(following)
                    onStack.add(following)
                    work.append((following, sorted(graph[following])))
                elif following in onStack:
                    low[node] = min(low[node], index[following])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    onStack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.add(frozenset(group))
    return found


def test_cycleFinder() -> None:
    """The finder itself sees a cycle, and only the modules in it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_graphSeesTypeCheckingImports() -> None:
    """An import under TYPE_CHECKING counts (transfers names datachannels only there)."""
    graph = importGraph()
    assert "fwxtwisted.filters.ftp.datachannels" in graph["fwxtwisted.filters.ftp.transfers"]


def test_noImportCycles() -> None:
    """No cycle but the allowed ones; an allowed one that is gone must leave the list."""
    found = cycles(importGraph())
    unexpected = [sorted(group) for group in found - ALLOWED_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"
    gone = [sorted(group) for group in ALLOWED_CYCLES - found]
    assert not gone, f"allowed cycles that no longer exist (remove them from the list): {gone}"
