"""Lazy package exports: a package names its public API once, and a name's module is imported on first use.

Every icrm package lists its public names by submodule in its ``__init__``. Other packages import
them through the package (``from ..data import load_examples``), so a package can split or merge its
modules without its users changing. Importing on first use keeps a light command light: ``icrm
data split`` never imports torch because ``icrm.data``'s tokenizing modules are not touched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose ``exports`` map a submodule to its names."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{home[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__, sorted(home)
