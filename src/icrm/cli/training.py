"""``icrm sft`` and ``icrm train``: options, then the runners in ``icrm.commands``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..modeling import ModelSpec
from ..training import ICRMArguments, TrainingOptions
from .app import ConfigOption, app, guarded, print_summary
from .options import (
    TRAINING_OPTIONS,
    GradCkptOpt,
    LoraAlphaOpt,
    LoraROpt,
    MaxLenOpt,
    ModelOpt,
    OverwriteOpt,
    PackingOpt,
    PickleOpt,
    ResumeOpt,
    SkipOpt,
    StepSepOpt,
    TruncOpt,
    TrustOpt,
    option,
)


@app.command()
@guarded
def sft(
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or stepwise data."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    model: str = ModelOpt,
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["sft"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["sft"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["sft"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["sft"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["sft"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["sft"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["sft"]["lr_scheduler_type"],
    max_length: int = MaxLenOpt,
    truncation: str = TruncOpt,
    seed: int = TRAINING_OPTIONS["sft"]["seed"],
    bf16: bool = TRAINING_OPTIONS["sft"]["bf16"],
    save_steps: int = TRAINING_OPTIONS["sft"]["save_steps"],
    resume: bool = ResumeOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
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

    training = TrainingOptions(
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
        save_steps=save_steps,
    )
    args = TrainingArguments(output_dir=str(output), **training.trainer_kwargs())
    spec = ModelSpec(model, lora_r, lora_alpha, trust_remote_code, allow_pickle)
    metrics = train_sft(
        data, str(output), args, spec, max_length, truncation, skip_invalid, resume, responses, step_separator, packing,
        overwrite=overwrite,
    )
    print_summary({"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]})


@app.command()
@guarded
def train(
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or stepwise training data."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (the reward model)."),
    model: str = ModelOpt,
    method: str = option(ICRMArguments, "method"),
    generator: str = option(ICRMArguments, "generator"),
    generator_temperature: Optional[float] = option(ICRMArguments, "generator_temperature"),
    generator_top_p: Optional[float] = option(ICRMArguments, "generator_top_p"),
    head_dropout: float = option(ICRMArguments, "head_dropout"),
    lambda_: Optional[float] = option(ICRMArguments, "lambda_"),
    sft_weight: Optional[float] = option(ICRMArguments, "sft_weight"),
    sft_backbone_grad: float = option(ICRMArguments, "sft_backbone_grad"),
    center_rewards: float = typer.Option(
        0.0, "--center-rewards-coefficient", help="TRL's centering: adds c·mean((R_c + R_r)²) to pin the scale."
    ),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Data to evaluate on (same format)."),
    step_separator: str = StepSepOpt,
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["train"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["train"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["train"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["train"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["train"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["train"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["train"]["lr_scheduler_type"],
    max_length: int = MaxLenOpt,
    truncation: str = TruncOpt,
    seed: int = TRAINING_OPTIONS["train"]["seed"],
    bf16: bool = TRAINING_OPTIONS["train"]["bf16"],
    logging_steps: int = TRAINING_OPTIONS["train"]["logging_steps"],
    save_steps: int = TRAINING_OPTIONS["train"]["save_steps"],
    resume: bool = ResumeOpt,
    no_group_by_length: bool = typer.Option(
        False, "--no-group-by-length", help="Random batches instead of rows of similar length (more padding)."
    ),
    cache_dir: Optional[str] = option(ICRMArguments, "cache_dir"),
    activation_checkpointing: bool = GradCkptOpt,
    padding_free: Optional[bool] = PackingOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a reward model (BT or pointwise, + ICRM).

    Bradley–Terry (pairwise) or BCE (pointwise) loss, with the consistency and SFT regularizers.
    """
    from ..commands.train import train_reward_model
    from ..training import ICRMConfig

    if warmup_steps < 0:
        raise typer.BadParameter("--warmup must be >= 0")
    reward_config = ICRMConfig(
        output_dir=str(output),
        method=method,
        lambda_=lambda_,
        sft_weight=sft_weight,
        sft_backbone_grad=sft_backbone_grad,
        center_rewards_coefficient=center_rewards,
        generator=generator,
        generator_temperature=generator_temperature,
        generator_top_p=generator_top_p,
        head_dropout=head_dropout,
        cache_dir=cache_dir,
        max_length=max_length,
        truncation=truncation,
        step_separator=step_separator,
        eval_strategy="epoch" if eval_data else "no",
        activation_checkpointing=activation_checkpointing,
        padding_free=padding_free,
        **TrainingOptions(
            num_train_epochs=num_train_epochs, max_steps=max_steps,
            per_device_train_batch_size=per_device_train_batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
            warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
            logging_steps=logging_steps, save_steps=save_steps,
        ).trainer_kwargs(group_by_length=not no_group_by_length),
    )
    spec = ModelSpec(model, lora_r, lora_alpha, trust_remote_code, allow_pickle)
    metrics = train_reward_model(data, str(output), reward_config, spec, eval_data, skip_invalid, resume, overwrite)
    summary = {"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]}
    if "eval_accuracy" in metrics:
        summary["eval_accuracy"] = round(metrics["eval_accuracy"], 4)
    print_summary(summary)
