"""``icrm sft`` and ``icrm train``: options, then the runners in ``icrm.commands``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from ..modeling import ModelSpec
from ..policy import DPOSettings
from ..training import ICRMArguments, TrainingOptions
from .app import ConfigOption, command, print_summary
from .options import (
    MaxLenOpt,
    OverwriteOpt,
    PackingOpt,
    ResumeOpt,
    SkipOpt,
    StepSepOpt,
    option,
    settings_options,
)


@command()
@settings_options(model=ModelSpec, training=TrainingOptions.recipe("sft"), exclude={"training": ("logging_steps",)})
def sft(
    *,
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or stepwise data."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    model: ModelSpec,
    training: TrainingOptions,
    max_length: int = MaxLenOpt,
    truncation: str = option(ICRMArguments, "truncation"),
    resume: bool = ResumeOpt,
    skip_invalid: bool = SkipOpt,
    responses: str = typer.Option(
        "chosen", "--responses",
        help="Which responses to learn: chosen|rejected|both (pointwise, stepwise: correct|all). "
        "A policy: chosen. A generator for --generator: both.",
    ),
    step_separator: str = StepSepOpt,
    packing: Optional[bool] = PackingOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a causal LM (generator, policy) by SFT.

    On the chosen, rejected or all responses (--responses).
    """
    from transformers import TrainingArguments

    from ..commands.sft import train_sft

    args = TrainingArguments(output_dir=str(output), **training.trainer_kwargs())
    metrics = train_sft(
        data, str(output), args, model, max_length, truncation, skip_invalid, resume, responses, step_separator, packing,
        overwrite=overwrite,
    )
    print_summary({"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]})


@command()
@settings_options(
    model=ModelSpec, icrm=ICRMArguments, training=TrainingOptions.recipe("train"),
    # API-only: the generator pass's batch, --allow-pickle (the model's), the deprecated gradient_checkpointing
    exclude={"icrm": ("generator_batch_size", "allow_pickle", "gradient_checkpointing")},
)
def train(
    *,
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or stepwise training data."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (the reward model)."),
    model: ModelSpec,
    icrm: ICRMArguments,
    center_rewards: float = typer.Option(
        0.0, "--center-rewards-coefficient", help="TRL's centering: adds c·mean((R_c + R_r)²) to pin the scale."
    ),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Data to evaluate on (same format)."),
    max_length: int = MaxLenOpt,
    training: TrainingOptions,
    resume: bool = ResumeOpt,
    no_group_by_length: bool = typer.Option(
        False, "--no-group-by-length", help="Random batches instead of rows of similar length (more padding)."
    ),
    activation_checkpointing: bool = option(DPOSettings, "gradient_checkpointing"),
    skip_invalid: bool = SkipOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a reward model (BT or pointwise, + ICRM).

    Bradley–Terry (pairwise) or BCE (pointwise) loss, with the consistency and SFT regularizers.
    """
    from ..commands.train import train_reward_model
    from ..training import ICRMConfig

    if training.warmup_steps < 0:
        raise typer.BadParameter("--warmup must be >= 0")
    reward_config = ICRMConfig(
        output_dir=str(output),
        **dataclasses.asdict(icrm),
        center_rewards_coefficient=center_rewards,
        max_length=max_length,
        eval_strategy="epoch" if eval_data else "no",
        activation_checkpointing=activation_checkpointing,
        **training.trainer_kwargs(group_by_length=not no_group_by_length),
    )
    metrics = train_reward_model(data, str(output), reward_config, model, eval_data, skip_invalid, resume, overwrite)
    summary = {"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]}
    if "eval_accuracy" in metrics:
        summary["eval_accuracy"] = round(metrics["eval_accuracy"], 4)
    print_summary(summary)
