"""The layer rule: a unit imports only units below it, through their public names.

A unit is a base module (``icrm/errors.py``) or a package (``icrm/data/``). The order below is the
architecture (docs/architecture.md): base utilities, data, models, the library's features, the
command runners, the CLI. Across units, an import names the package (``from ..data import
load_examples``), never one of its modules, so a package can rearrange its modules freely; only
``commands`` is a set of separate modules, one per command, that the CLI imports one by one. Inside
a package, modules import each other without a cycle. No module imports another module's private
(``_``) names. Imports inside functions count too, so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "icrm"

LAYERS = {
    "base": ["errors", "settings", "exports", "threads", "outputs", "plots", "losses"],
    "data": ["data"],
    "modeling": ["modeling"],
    "features": ["evaluation", "explain", "training", "policy", "serve"],
    "commands": ["commands"],
    "cli": ["cli"],
}
ORDER = [unit for units in LAYERS.values() for unit in units]
BY_MODULE = {"commands"}  # imported module by module, not through a package's exports


def module_name(path: Path) -> str:
    """``data.readers`` for ``src/icrm/data/readers.py``; ``data`` for its ``__init__``."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` for every import of an icrm module in ``path`` (module ``name``)."""
    package = name.split(".")[:-1] if path.stem != "__init__" else name.split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module + ".").startswith("icrm."):
                target = node.module.removeprefix("icrm").removeprefix(".")
            else:
                continue
            names = [alias.name for alias in node.names]
            if not node.module:  # ``from .. import losses``: each name is a module
                found.extend((".".join(filter(None, [target, n])), [], node.lineno) for n in names)
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name.removeprefix("icrm."), [], node.lineno) for alias in node.names
                         if alias.name.startswith("icrm."))
    return found


def import_graph(src: Path = SRC) -> dict[str, list[tuple[str, list[str], int]]]:
    """Every module's icrm imports; package ``__init__`` files only re-export and are left out."""
    return {module_name(path): imports_of(path, module_name(path))
            for path in sorted(src.rglob("*.py")) if path.stem not in ("__init__", "__main__")}


def violations(graph: dict[str, list[tuple[str, list[str], int]]], order: list[str]) -> list[str]:
    """Imports that go up or sideways, reach into another unit's modules or private names, or close a cycle."""
    rank = {unit: i for i, unit in enumerate(order)}
    found = []
    inside = {}  # module -> modules of its own unit that it imports
    for importer, imports in graph.items():
        unit = importer.split(".")[0]
        for target, names, line in imports:
            where = f"{importer}:{line} imports {target}"
            other = target.split(".")[0]
            if unit not in rank or other not in rank:
                found.append(f"{where}: place {unit if unit not in rank else other} in LAYERS")
                continue
            if other == unit:
                inside.setdefault(importer, set()).add(target)
            elif rank[other] >= rank[unit]:
                found.append(f"{where}, which is not below it")
            elif target != other and other not in BY_MODULE:
                found.append(f"{where}: import from the package {other}, not its modules")
            private = [name for name in names if name.startswith("_")]
            if private and target != importer:
                found.append(f"{where}'s private {', '.join(private)}")
    found.extend(f"cycle: {' -> '.join(cycle)}" for cycle in cycles(inside))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one, by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_every_unit_is_placed_in_a_layer():
    units = {module.split(".")[0] for module in import_graph()}
    assert sorted(units - set(ORDER)) == [], "place new modules or packages in LAYERS"
    assert sorted(set(ORDER) - units) == [], "LAYERS names a unit that no longer exists"
    assert len(ORDER) == len(set(ORDER))


def test_imports_only_go_down_through_packages_and_never_reach_private_names():
    assert violations(import_graph(), ORDER) == []


@pytest.mark.parametrize("package", [unit for unit in ORDER if (SRC / unit).is_dir() and unit not in BY_MODULE])
def test_every_name_a_package_exports_exists_and_every_import_through_it_is_exported(package):
    module = importlib.import_module(f"icrm.{package}")
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
    imported = {name for imports in import_graph().values() for target, names, _ in imports if target == package
                for name in names}
    assert sorted(imported - set(module.__all__)) == []


@pytest.mark.parametrize("graph, problem", [
    ({"data.core": [("evaluation", ["extract_answer"], 3)]}, "data.core:3 imports evaluation, which is not below it"),
    ({"serve.app": [("data", ["_as_messages"], 7)]}, "serve.app:7 imports data's private _as_messages"),
    ({"serve.app": [("data.core", ["as_messages"], 7)]},
     "serve.app:7 imports data.core: import from the package data, not its modules"),
    ({"new.thing": [("data", [], 1)]}, "new.thing:1 imports data: place new in LAYERS"),
    ({"data.a": [("data.b", [], 1)], "data.b": [("data.a", [], 2)]}, "cycle: data.a -> data.b -> data.a"),
    ({"data.a": [("data.b", ["_x"], 1)]}, "data.a:1 imports data.b's private _x"),
])
def test_the_checker_finds_each_kind_of_violation(graph, problem):
    assert problem in violations(graph, ["errors", "data", "evaluation", "serve"])


def test_commands_are_imported_module_by_module():
    graph = {"cli.main": [("commands.score", ["score_file"], 4)]}
    assert violations(graph, ["commands", "cli"]) == []


def test_a_command_may_be_a_package_of_modules():
    graph = {
        "cli.main": [("commands.demo", ["run_demo"], 4)],
        "commands.demo.run": [("commands.demo.report", ["render_report"], 2), ("data", ["SUFFIX"], 3)],
        "commands.demo.report": [("commands.bon", ["best_of_n"], 5)],
    }
    assert violations(graph, ["data", "commands", "cli"]) == []
    graph["commands.demo.report"].append(("commands.demo.run", ["_private"], 6))
    assert violations(graph, ["data", "commands", "cli"]) == [
        "commands.demo.report:6 imports commands.demo.run's private _private",
        "cycle: commands.demo.report -> commands.demo.run -> commands.demo.report"]


def test_imports_inside_functions_and_relative_levels_are_read(tmp_path):
    (tmp_path / "policy").mkdir()
    module = tmp_path / "policy" / "pairs.py"
    module.write_text("from .sampling import x\ndef f():\n    from ..evaluation import _private\n"
                      "    from .. import losses\n    import icrm.data\n")
    assert imports_of(module, "policy.pairs") == [
        ("policy.sampling", ["x"], 1), ("evaluation", ["_private"], 3), ("losses", [], 4), ("data", [], 5)]
