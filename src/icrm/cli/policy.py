"""The policy side: ``icrm sample``, ``dpo-pairs``, ``dpo``, ``compare-policies`` and ``grpo``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from ..outputs import JSON_LOGS, console
from ..policy import DPOSettings, GRPOSettings, SamplingConfig
from ..training import TrainingOptions
from .app import SKIPPED_NOTE, ConfigOption, app, guarded, print_summary
from .options import (
    TRAINING_OPTIONS,
    GradCkptOpt,
    LoraAlphaOpt,
    LoraROpt,
    MaxLenOpt,
    OverwriteOpt,
    PickleOpt,
    ScoreBatchOpt,
    SkipOpt,
    TrustOpt,
    option,
)

SamplingOpts = {f.name: option(SamplingConfig, f.name) for f in dataclasses.fields(SamplingConfig)}


@app.command()
@guarded
def sample(
    policy: str = typer.Option(..., "--policy", "-p", help="Policy directory (a causal LM with a chat template)."),
    prompts: str = typer.Option(..., "--prompts", help="JSONL with `prompt` (text or messages), or any data file."),
    output: Path = typer.Option(..., "--output", "-o", help="Best-of-N JSONL: prompt, candidates."),
    n: int = SamplingOpts["n"],
    temperature: float = SamplingOpts["temperature"],
    top_p: float = SamplingOpts["top_p"],
    top_k: int = SamplingOpts["top_k"],
    max_new_tokens: int = SamplingOpts["max_new_tokens"],
    engine: str = SamplingOpts["engine"],
    seed: int = SamplingOpts["seed"],
    batch_size: int = SamplingOpts["batch_size"],
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Sample N responses per prompt from a policy.

    Written as best-of-N candidates.
    """
    from ..commands.sample import sample_to_file

    sampling = SamplingConfig(n, temperature, top_p, top_k, max_new_tokens, seed, batch_size, engine)
    print_summary(sample_to_file(policy, prompts, output, sampling, trust_remote_code, allow_pickle, overwrite), {
        "truncated": f"samples cut at --max-new-tokens {max_new_tokens} before an end token",
        "empty_dropped": "empty samples left out of the candidates",
        "prompts_dropped": "prompts left with no candidate",
    })


@app.command("dpo-pairs")
@guarded
def dpo_pairs(
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory (the judge)."),
    data: str = typer.Option(..., "--data", "-d", help="Best-of-N candidates, e.g. from `icrm sample`."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL of prompt/chosen/rejected (TRL format)."),
    min_gap: float = typer.Option(0.0, "--min-gap", help="Keep a pair only if best - worst reward >= this."),
    exclude_prompts: Optional[str] = typer.Option(None, "--exclude-prompts", help="Drop prompts that occur in this file (e.g. a test set)."),
    batch_size: int = ScoreBatchOpt,
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Best and worst candidate per prompt as DPO pairs.

    Candidates are scored with the reward model.
    """
    from ..commands.dpo_pairs import build_dpo_pairs_file

    counts = build_dpo_pairs_file(
        model, data, output, min_gap=min_gap, exclude_prompts=exclude_prompts, batch_size=batch_size,
        skip_invalid=skip_invalid, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, overwrite=overwrite,
    )
    print_summary({**counts, "output": str(output)}, {
        "pairs": "prompts that gave a chosen/rejected pair",
        "overlap": "prompts left out because they occur in --exclude-prompts",
        "identical": "prompts whose candidates are all the same text",
        "tie": "prompts whose best and worst candidates have the same reward",
        "gap": f"prompts whose best-worst reward gap is below --min-gap {min_gap}",
        **SKIPPED_NOTE,
    })


@app.command()
@guarded
def dpo(
    policy: str = typer.Option(..., "--policy", "-p", help="Starting policy (also the DPO reference)."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise data, e.g. from `icrm dpo-pairs`."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    beta: float = option(DPOSettings, "beta"),
    loss_type: str = option(DPOSettings, "loss_type"),
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["dpo"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["dpo"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["dpo"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["dpo"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["dpo"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["dpo"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["dpo"]["lr_scheduler_type"],
    max_length: int = MaxLenOpt,
    gradient_checkpointing: bool = GradCkptOpt,
    logging_steps: int = TRAINING_OPTIONS["dpo"]["logging_steps"],
    seed: int = TRAINING_OPTIONS["dpo"]["seed"],
    bf16: bool = TRAINING_OPTIONS["dpo"]["bf16"],
    skip_invalid: bool = SkipOpt,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a policy with DPO (TRL's DPOTrainer).

    On chosen/rejected pairs, with the starting policy as the reference.
    """
    from ..commands.dpo import train_dpo

    training = TrainingOptions(
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
        logging_steps=logging_steps,
    ).trainer_kwargs()
    settings = DPOSettings(beta, loss_type, max_length, lora_r, lora_alpha, gradient_checkpointing, skip_invalid,
                           trust_remote_code, allow_pickle)
    metrics = train_dpo(policy, data, output, training, settings, overwrite)
    summary = {"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]}
    if metrics["final_reward_accuracy"] is not None:
        summary["reward_accuracy"] = round(metrics["final_reward_accuracy"], 4)
    print_summary(summary)


@app.command("compare-policies")
@guarded
def compare_policies_cmd(
    policies: list[str] = typer.Option(..., "--policies", help="Policy dirs: --policies A B C (the first is the baseline)."),
    more: Optional[list[str]] = typer.Argument(None, help="More policy dirs (so `--policies A B C` works).", show_default=False),
    prompts: str = typer.Option(..., "--prompts", help="Prompts file (or any data file)."),
    judge: str = typer.Option(..., "--judge", help="Reward model dir, or true-reward (synthetic tasks)."),
    task: Optional[str] = typer.Option(None, "--task", help="Synthetic task for true-reward (default: from task.json)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="report.json to write."),
    n: int = SamplingOpts["n"],
    temperature: float = SamplingOpts["temperature"],
    top_p: float = SamplingOpts["top_p"],
    top_k: int = SamplingOpts["top_k"],
    max_new_tokens: int = SamplingOpts["max_new_tokens"],
    engine: str = SamplingOpts["engine"],
    seed: int = SamplingOpts["seed"],
    batch_size: int = SamplingOpts["batch_size"],
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Compare policies: mean reward, win/tie/lose.

    Samples from each policy are judged by a reward model or the true reward; win/tie/lose is vs the first policy.
    """
    from ..commands.compare_policies import compare_policies

    sampling = SamplingConfig(n, temperature, top_p, top_k, max_new_tokens, seed, batch_size, engine)
    report = compare_policies(
        list(policies) + list(more or []), prompts, judge, sampling, task=task, output=output, batch_size=batch_size,
        trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, overwrite=overwrite,
    )
    if JSON_LOGS["value"] or output is None:
        print(json.dumps(report, default=str))
    else:
        for i, entry in enumerate(report["policies"]):
            versus = ("the baseline: win/tie/lose are against it" if i == 0 else
                      f"win/tie/lose vs the baseline {entry['win_rate']:.3f}/{entry['tie_rate']:.3f}/{entry['lose_rate']:.3f}")
            console.print(
                f"[bold]{entry['policy']}[/bold]: reward {entry['mean_reward']:.4f}, words {entry['mean_words']:.1f}, "
                + versus
            )
        console.print(f"[bold]output[/bold]: {output}")


@app.command()
@guarded
def grpo(
    policy: str = typer.Option(..., "--policy", "-p", help="Starting policy (a causal LM with a chat template)."),
    reward_model: str = typer.Option(..., "--reward-model", "-r", help="Reward model directory (the judge)."),
    prompts: str = typer.Option(..., "--prompts", help="JSONL with `prompt` (text or messages), or any data file."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    num_generations: int = option(GRPOSettings, "num_generations"),
    max_completion_length: int = option(GRPOSettings, "max_completion_length"),
    beta: float = option(GRPOSettings, "beta"),
    loss_type: str = option(GRPOSettings, "loss_type"),
    epsilon: float = option(GRPOSettings, "epsilon"),
    scale_rewards: str = option(GRPOSettings, "scale_rewards"),
    temperature: float = option(GRPOSettings, "temperature"),
    top_p: float = option(GRPOSettings, "top_p"),
    top_k: int = option(GRPOSettings, "top_k"),
    exclude_prompts: Optional[str] = option(GRPOSettings, "exclude_prompts"),
    lora_r: int = LoraROpt,
    lora_alpha: int = LoraAlphaOpt,
    num_train_epochs: float = TRAINING_OPTIONS["grpo"]["num_train_epochs"],
    max_steps: int = TRAINING_OPTIONS["grpo"]["max_steps"],
    per_device_train_batch_size: int = TRAINING_OPTIONS["grpo"]["per_device_train_batch_size"],
    gradient_accumulation_steps: int = TRAINING_OPTIONS["grpo"]["gradient_accumulation_steps"],
    learning_rate: float = TRAINING_OPTIONS["grpo"]["learning_rate"],
    warmup_steps: float = TRAINING_OPTIONS["grpo"]["warmup_steps"],
    lr_scheduler_type: str = TRAINING_OPTIONS["grpo"]["lr_scheduler_type"],
    gradient_checkpointing: bool = option(GRPOSettings, "gradient_checkpointing"),
    logging_steps: int = TRAINING_OPTIONS["grpo"]["logging_steps"],
    seed: int = TRAINING_OPTIONS["grpo"]["seed"],
    bf16: bool = TRAINING_OPTIONS["grpo"]["bf16"],
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a policy with GRPO (TRL's GRPOTrainer).

    The reward model is the reward function.
    """
    from ..commands.grpo import train_grpo

    training = TrainingOptions(
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate,
        warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, seed=seed, bf16=bf16,
        logging_steps=logging_steps,
    ).trainer_kwargs()
    settings = GRPOSettings(
        num_generations, max_completion_length, beta, loss_type, epsilon, scale_rewards, temperature, top_p, top_k,
        lora_r, lora_alpha, gradient_checkpointing, exclude_prompts, trust_remote_code, allow_pickle,
    )
    metrics = train_grpo(policy, reward_model, prompts, output, training, settings, overwrite)
    summary = {"output": str(output), "steps": metrics["steps"], "prompts": metrics["prompts"]}
    if metrics["final_reward"] is not None:
        summary.update(first_reward=round(metrics["first_reward"], 4), final_reward=round(metrics["final_reward"], 4))
    print_summary(summary)
