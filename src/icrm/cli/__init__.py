"""The ``icrm`` command line: typer options and error reporting over ``icrm.commands``."""

from .main import app, main

__all__ = ["app", "main"]
