"""The package tree is the architecture: no import cycles between modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mobiledeploy"


def _imports() -> dict[str, set[str]]:
    mods: dict[str, set[str]] = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(("mobiledeploy", *f.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mobiledeploy"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("mobiledeploy")}
        mods[name] = deps
    return {m: {d for d in deps if d in mods and d != m} for m, deps in mods.items()}


def test_no_import_cycles():
    graph, done, cycles = _imports(), set(), []

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            return
        if m not in done:
            done.add(m)
            for d in sorted(graph[m]):
                visit(d, stack + [m])

    assert len(graph) > 40  # the whole package was read
    for m in sorted(graph):
        visit(m, [])
    assert cycles == []
