"""Typer options made from the library's settings dataclasses: the default, help and flag of each come from its field.

``option(TrainingOptions.recipe("sft"), "learning_rate")`` is ``--lr`` with
``icrm sft``'s default and the field's help; a class instead of an instance
gives the class's default. :func:`settings_options` makes a whole dataclass
options of a command, so a command names its settings once, not field by
field. Options that belong to no library setting (``--data``, ``--output``,
...) are written where their command is; those several commands share are
written once here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, Callable

import typer

from ..evaluation import ScoringOptions
from ..modeling import ModelSpec
from ..policy import DPOSettings
from ..settings import default_of, flag_of, help_of
from ..training import ICRMArguments, TrainingOptions

# The one-letter spellings of options made from settings (the others are written with their option).
SHORT_FLAGS = {"--model": "-m"}


def option(settings: type | object, name: str, *decls: str, **typer_kwargs: Any) -> Any:
    """The typer option of field ``name``: its flag (or ``decls``, e.g. ``"--packing/--no-packing"``) and any
    short flags, the field's default and help; ``typer_kwargs`` add typer-only settings (``show_default``, ``min``).

    A default typer cannot print as it is (the newline of ``--step-separator``) is shown as a Python literal.
    """
    flags = [d for d in decls if d.startswith("--")] or [flag_of(settings, name)]
    shorts = [d for d in decls if not d.startswith("--")]
    default = default_of(settings, name)
    if isinstance(default, str) and not default.isprintable():
        typer_kwargs.setdefault("show_default", repr(default))
    return typer.Option(default, *flags, *shorts, help=help_of(settings, name), **typer_kwargs)


def settings_options(exclude: dict[str, tuple[str, ...]] | None = None, **settings_of: type | object) -> Callable:
    """A command's options made from whole settings dataclasses: one option per field, one dataclass per keyword.

    ``@settings_options(training=TrainingOptions.recipe("train"), model=ModelSpec)`` on
    ``def train(*, ..., model: ModelSpec, training: TrainingOptions, ...)`` puts the options of ``ModelSpec``'s
    fields where ``model`` stands in the signature typer reads (and ``TrainingOptions``' with the ``train``
    recipe's defaults where ``training`` stands), and calls ``train`` with the dataclasses built from their
    values. ``exclude`` names the fields of a keyword the command does not offer: they keep the settings' value.
    A field that is ``bool | None`` (unset: the library decides) gets both spellings, ``--packing/--no-packing``.
    """
    exclude = exclude or {}
    offered = {
        keyword: [f.name for f in dataclasses.fields(settings) if f.name not in exclude.get(keyword, ())]
        for keyword, settings in settings_of.items()
    }

    def decorate(command: Callable) -> Callable:
        parameters = []
        for parameter in inspect.signature(command).parameters.values():
            if parameter.name in settings_of:
                parameters += _field_parameters(settings_of[parameter.name], offered[parameter.name])
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        names = [p.name for p in parameters]
        if len(names) != len(set(names)):
            raise TypeError(f"{command.__name__}: an option is offered twice in {names}")

        @functools.wraps(command)
        def wrapper(**values):
            for keyword, settings in settings_of.items():
                fields = {name: values.pop(name) for name in offered[keyword]}
                values[keyword] = (
                    settings(**fields) if isinstance(settings, type) else dataclasses.replace(settings, **fields)
                )
            return command(**values)

        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}  # resolved: typer reads these
        return wrapper

    return decorate


def _field_parameters(settings: type | object, names: list[str]) -> list[inspect.Parameter]:
    """The keyword parameters of ``names`` as typer reads them: the field's resolved type, its option as default."""
    types = typing.get_type_hints(settings if isinstance(settings, type) else type(settings))
    parameters = []
    for name in names:
        flag = flag_of(settings, name)
        decls = [f"{flag}/--no-{flag[2:]}"] if types[name] == bool | None else [flag]
        decls += [SHORT_FLAGS[flag]] if flag in SHORT_FLAGS else []
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=option(settings, name, *decls), annotation=types[name]
        ))
    return parameters


# The options several commands share.
OverwriteOpt = typer.Option(
    False, "--overwrite",
    help="Replace an existing --output file, or a folder this command did not write (without it, only an empty "
    "folder or this command's earlier output folder is replaced).",
)
MaxLenOpt = option(DPOSettings, "max_length")
SeedOpt = option(TrainingOptions, "seed")
SplitOpt = typer.Option(None, "--split", help="Split of a saved or hub dataset [default: train].")
ScoreBatchOpt = option(ScoringOptions, "batch_size")
SkipOpt = option(DPOSettings, "skip_invalid")
TrustOpt = option(ModelSpec, "trust_remote_code")
PickleOpt = option(ModelSpec, "allow_pickle")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run of the same command and output.")
StepSepOpt = option(ICRMArguments, "step_separator")
PackingOpt = option(ICRMArguments, "padding_free", "--packing/--no-packing")

