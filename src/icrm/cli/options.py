"""Typer options made from the library's settings dataclasses: the default, help and flag of each come from its field.

``option(TrainingOptions.recipe("sft"), "learning_rate")`` is ``--lr`` with
``icrm sft``'s default and the field's help; a class instead of an instance
gives the class's default. Options that belong to no library setting
(``--data``, ``--output``, ``--overwrite``, ...) are written in ``main.py``.
"""

from __future__ import annotations

from typing import Any

import typer

from ..settings import default_of, flag_of, help_of


def option(settings: type | object, name: str, *decls: str, **typer_kwargs: Any) -> Any:
    """The typer option of field ``name``: its flag (or ``decls``, e.g. ``"--packing/--no-packing"``) and any
    short flags, the field's default and help; ``typer_kwargs`` add typer-only settings (``show_default``, ``min``)."""
    flags = [d for d in decls if d.startswith("--")] or [flag_of(settings, name)]
    shorts = [d for d in decls if not d.startswith("--")]
    return typer.Option(default_of(settings, name), *flags, *shorts, help=help_of(settings, name), **typer_kwargs)
