"""The run package's modules import one another without a cycle (counting imports inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import codenas.run

RUN = Path(codenas.run.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(RUN.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``codenas.run.*`` module -> the ``codenas.run.*`` modules it imports anywhere in its text."""
    modules = {_module_name(p): p for p in RUN.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                            else node.module for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_run_modules():
    graph = import_graph()
    assert "codenas.run.report" in graph["codenas.run.stages"]  # the report stage calls the report
    assert "codenas.run.stages" not in set().union(*(graph[m] for m in graph if m.startswith("codenas.run.report")))
    assert _cycle(graph) is None
