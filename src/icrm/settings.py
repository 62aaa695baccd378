"""One definition per option: a settings dataclass field holds its default, its help and its CLI spelling.

The library's settings (``ICRMConfig``'s own fields, the training recipe of
the commands, ``ServeConfig``, ``SamplingConfig``, ...) are dataclasses whose
fields are declared with :func:`setting`. The CLI builds each command's
options from those fields, so a name, a default or a help text is written
once; the library names fields in its errors and the CLI shows them as flags
(:func:`flag_of`). This module imports nothing heavy: ``icrm --help`` reads
these dataclasses without importing torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .errors import UserError


def setting(default: Any, help: str, flag: str | None = None) -> Any:
    """A dataclass field with its help text and, where ``--`` + the name with ``-`` for ``_`` does not fit, its flag.

    The flag is stored as transformers' ``aliases`` metadata (``HfArg``'s), so ``HfArgumentParser`` and
    ``TrlParser`` accept it next to the field name (``--lambda`` and ``--lambda_``).
    """
    metadata = {"help": help, **({"aliases": [flag]} if flag else {})}
    return dataclasses.field(default=default, metadata=metadata)


def field_of(settings: type | object, name: str) -> dataclasses.Field:
    """The field ``name`` of a settings dataclass (or of an instance's class)."""
    return {f.name: f for f in dataclasses.fields(settings)}[name]


def flag_of(settings: type | object | None, name: str) -> str:
    """The CLI spelling of a field: its ``flag`` (``lambda_`` → ``--lambda``), else ``--`` + the name, dashed.

    Fields the settings do not declare with :func:`setting` (TRL's own, in ``ICRMConfig``), and plain function
    arguments (``settings=None``), get the plain spelling.
    """
    names = {f.name: f for f in dataclasses.fields(settings)} if settings is not None else {}
    aliases = names[name].metadata.get("aliases") if name in names else None
    return aliases[0] if aliases else "--" + name.replace("_", "-")


def help_of(settings: type | object, name: str) -> str:
    return field_of(settings, name).metadata["help"]


def default_of(settings: type | object, name: str) -> Any:
    """The default of a field: an instance's value (a recipe's), else the class's default."""
    if not isinstance(settings, type):
        return getattr(settings, name)
    return field_of(settings, name).default


class SettingError(UserError):
    """A setting's value that cannot work, naming the field (``lambda_``); the CLI names its flag (``--lambda``).

    ``problem`` completes a sentence about the field (``"must be in [0, 1], got 2.0"``), or places it where
    ``{field}`` stands (``"data.jsonl: every row is longer than {field} 512"``). ``settings`` is the dataclass
    (or instance) that declares the field, which the CLI asks for the flag (:func:`flag_of`); ``None`` for a
    plain function argument.
    """

    def __init__(self, settings: type | object | None, name: str, problem: str):
        self.settings = settings if settings is None or isinstance(settings, type) else type(settings)
        self.name, self.problem = name, problem
        super().__init__(self._worded(name))

    def __reduce__(self):  # picklable across processes, as a plain UserError is
        return type(self), (self.settings, self.name, self.problem)

    def as_flag(self) -> str:
        """The message as the CLI shows it: the flag in place of the field name."""
        return self._worded(flag_of(self.settings, self.name))

    def _worded(self, name: str) -> str:
        return self.problem.replace("{field}", name) if "{field}" in self.problem else f"{name} {self.problem}"


def check_settings(
    settings: object, checks: Iterable[tuple[str, bool, str]], error: type[SettingError] = SettingError
) -> None:
    """Fail on the first ``(field, ok, problem)`` row that is not ok, naming its field: each settings dataclass
    lists its checks as one table, so a new field's check is one row."""
    for name, ok, problem in checks:
        if not ok:
            raise error(settings, name, problem)
