"""Typer options made from the library's settings dataclasses: the default, help and flag of each come from its field.

``option(TrainingOptions.recipe("sft"), "learning_rate")`` is ``--lr`` with
``icrm sft``'s default and the field's help; a class instead of an instance
gives the class's default. Options that belong to no library setting
(``--data``, ``--output``, ...) are written where their command is; those several commands share are
written once here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from ..modeling import ModelSpec
from ..policy import DPOSettings
from ..settings import default_of, flag_of, help_of
from ..training import ICRMArguments, TrainingOptions


def option(settings: type | object, name: str, *decls: str, **typer_kwargs: Any) -> Any:
    """The typer option of field ``name``: its flag (or ``decls``, e.g. ``"--packing/--no-packing"``) and any
    short flags, the field's default and help; ``typer_kwargs`` add typer-only settings (``show_default``, ``min``)."""
    flags = [d for d in decls if d.startswith("--")] or [flag_of(settings, name)]
    shorts = [d for d in decls if not d.startswith("--")]
    return typer.Option(default_of(settings, name), *flags, *shorts, help=help_of(settings, name), **typer_kwargs)


# The options several commands share.
ModelOpt = option(ModelSpec, "name", "-m")
LoraROpt = option(ModelSpec, "lora_r")
LoraAlphaOpt = option(ModelSpec, "lora_alpha")
MaxLenOpt = option(DPOSettings, "max_length")
ScoreMaxLenOpt = typer.Option(
    None, "--max-length", show_default=False,
    help="Max tokens of prompt+response; a longer prompt loses tokens from the left, a longer response is an error "
         "(or skipped with --skip-invalid) [default: the model's position limit].",
)
TruncOpt = option(ICRMArguments, "truncation")
SeedOpt = option(TrainingOptions, "seed")
SplitOpt = typer.Option(None, "--split", help="Split of a saved or hub dataset [default: train].")
ScoreBatchOpt = typer.Option(16, "--batch-size", help="Sequences per forward pass.")
GradCkptOpt = option(DPOSettings, "gradient_checkpointing")
SkipOpt = option(DPOSettings, "skip_invalid")
TrustOpt = option(ModelSpec, "trust_remote_code")
PickleOpt = option(ModelSpec, "allow_pickle")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run of the same command and output.")
StepSepOpt = option(ICRMArguments, "step_separator", show_default="'\\n'")
OverwriteOpt = typer.Option(
    False, "--overwrite",
    help="Replace an existing --output file, or a folder this command did not write (without it, only an empty "
    "folder or this command's earlier output folder is replaced).",
)


PackingOpt = option(ICRMArguments, "padding_free", "--packing/--no-packing")


def _training_options(command: str) -> dict:
    """The ``TrainingArguments`` options of ``command``, with its recipe's defaults (:class:`TrainingOptions`)."""
    recipe = TrainingOptions.recipe(command)
    return {f.name: option(recipe, f.name) for f in dataclasses.fields(TrainingOptions)}


TRAINING_OPTIONS = {command: _training_options(command) for command in ("train", "sft", "dpo", "grpo")}
