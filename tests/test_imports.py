"""The import graph of lightning_bert, read from the source (no module is imported): no circle, counting
function-level imports, and a training run never reaches the report."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "lightning_bert"
# What training may use of analysis/: it writes run records and draws its own loss curve, nothing more.
TRAINING_MAY_REACH = {"lightning_bert.analysis.runs", "lightning_bert.analysis.curves"}
# Circles another helper removes in parallel; the lead empties this at merge.


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module and package under `root` (a package's name is its __init__)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module an import statement anywhere in `tree` names (function bodies included; `if
    TYPE_CHECKING:` blocks, which never run, excluded): `import a.b`, `from a import b` (a.b when it is a
    module, else a) and relative imports resolved against `module`."""
    found: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            found.extend(f"{base}.{alias.name}" for alias in node.names)
            found.append(base)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports. Importing a.b.c also runs the packages a.b
    (their __init__): an edge to each one the importer is not itself inside."""
    names = module_names(root)
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        targets = set()
        for name in imported_names(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            if name not in names:
                continue
            parts = name.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[module] = {t for t in targets if t != module and not module.startswith(t + ".") and t in names}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete circle through a component, as `a -> b -> a`, for the failure message."""
    members, start = set(component), component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        step = next((n for n in nxt if n == start), None) or next((n for n in nxt if n not in seen), nxt[0])
        path.append(step)
        if step in seen:
            return " -> ".join(path[path.index(step):])
        seen.add(step)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def test_the_checker_sees_function_level_relative_and_package_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.c import helper\n")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")  # function-level, relative
    (pkg / "b.py").write_text("from .sub.d import x\n")  # also runs pkg/sub/__init__.py
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "sub" / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\nx = 1\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub", "pkg.sub.d"} and graph["pkg.sub.d"] == set()
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.sub"]]
    assert cycle_path(graph, circles(graph)[0]) == "pkg.a -> pkg.b -> pkg.sub -> pkg.c -> pkg.a"


def test_lightning_bert_has_no_import_circle() -> None:
    graph = import_graph(PACKAGE)
    assert "lightning_bert.eval.finetune" in graph["lightning_bert.train.fit"]  # function-level imports are counted
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(cycle_path(graph, c) for c in found)


def test_a_training_run_does_not_reach_the_report() -> None:
    """fit and everything it imports may write and read run records and draw a curve, never build the report."""
    graph = import_graph(PACKAGE)
    analysis = {m for m in graph if m.startswith("lightning_bert.analysis.")}
    reached = reachable(graph, "lightning_bert.train.fit")
    assert "lightning_bert.analysis.curves" in reached  # the check looks where it should
    assert not (reached & analysis) - TRAINING_MAY_REACH, sorted((reached & analysis) - TRAINING_MAY_REACH)
    assert not reached & {"lightning_bert.cli", "lightning_bert.__main__"}  # the dispatcher sits on top
