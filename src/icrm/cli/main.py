"""The ``icrm`` entry point: every command module registers its commands on the one app."""

from __future__ import annotations

# Importing a module registers its commands, in the order ``icrm --help`` lists them.
# isort: off
from . import training  # noqa: F401
from . import scoring  # noqa: F401
from . import demo  # noqa: F401
from . import policy  # noqa: F401
from . import serve  # noqa: F401
from . import convert  # noqa: F401
from . import data  # noqa: F401
# isort: on
from .app import app


def main() -> None:
    app()
