"""The layer rule: a module imports only modules below it, and never another module's private names.

The order below is the architecture (docs/architecture.md): base utilities, then data, then models,
then the library's features, then the command runners, then the CLI. Imports inside functions count
too, so a cycle cannot hide behind a lazy import. A new module must be placed in the order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "icrm"

LAYERS = {
    "base": ["errors", "threads", "outputs", "plots", "losses"],
    "data": ["answers", "steps", "data", "synthetic", "converters"],
    "modeling": ["packing", "modeling", "generator", "lengths"],
    "features": ["evaluation", "explain", "scoring", "training", "policy", "grpo", "serve"],
    "commands": ["demo"],
    "cli": ["cli"],
}
ORDER = [module for modules in LAYERS.values() for module in modules]
FACADES = {"__init__"}  # the package's lazy public exports: they re-export from every layer by design


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every import of another icrm module in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                module = node.module or ""
            elif node.module and node.module.startswith("icrm."):
                module = node.module.removeprefix("icrm.")
            else:
                continue
            names = [alias.name for alias in node.names]
            if not module:  # ``from . import losses``
                found.extend((name, [], node.lineno) for name in names)
            else:
                found.append((module.split(".")[0], names, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[1], [], node.lineno) for alias in node.names
                         if alias.name.startswith("icrm."))
    return found


def violations(graph: dict[str, list[tuple[str, list[str], int]]], order: list[str]) -> list[str]:
    """Upward or sideways-up imports, imports of unplaced modules, and imports of private names."""
    rank = {module: i for i, module in enumerate(order)}
    found = []
    for importer, imports in graph.items():
        for module, names, line in imports:
            where = f"{importer}.py:{line} imports {module}"
            if importer not in rank or module not in rank:
                found.append(f"{where}: place {importer if importer not in rank else module} in LAYERS")
            elif rank[module] >= rank[importer]:
                found.append(f"{where}, which is not below it")
            private = [name for name in names if name.startswith("_")]
            if private:
                found.append(f"{where}'s private {', '.join(private)}")
    return found


def test_every_module_is_placed_in_a_layer():
    modules = {path.stem for path in SRC.glob("*.py")} - FACADES
    assert sorted(modules - set(ORDER)) == [], "place new modules in LAYERS"
    assert sorted(set(ORDER) - modules) == [], "LAYERS names a module that no longer exists"
    assert len(ORDER) == len(set(ORDER))


def test_imports_only_go_down_and_never_reach_private_names():
    graph = {path.stem: imports_of(path) for path in SRC.glob("*.py") if path.stem not in FACADES}
    assert violations(graph, ORDER) == []


@pytest.mark.parametrize("graph, problem", [
    ({"data": [("scoring", ["extract_answer"], 3)], "scoring": []}, "data.py:3 imports scoring, which is not below it"),
    ({"a": [("b", [], 1)], "b": [("a", [], 2)]}, "a.py:1 imports b, which is not below it"),  # a cycle
    ({"serve": [("data", ["_as_messages"], 7)], "data": []}, "serve.py:7 imports data's private _as_messages"),
    ({"new": [("data", [], 1)], "data": []}, "new.py:1 imports data: place new in LAYERS"),
])
def test_the_checker_finds_each_kind_of_violation(graph, problem):
    order = ["a", "b", "data", "scoring", "serve"]
    assert problem in violations(graph, order)


def test_imports_inside_functions_are_read(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from .scoring import _private\n    import icrm.data\n")
    assert imports_of(module) == [("scoring", ["_private"], 2), ("data", [], 3)]
