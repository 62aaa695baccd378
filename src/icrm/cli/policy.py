"""The policy side: ``icrm sample``, ``dpo-pairs``, ``dpo``, ``compare-policies`` and ``grpo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..outputs import JSON_LOGS, console
from ..policy import DPOSettings, GRPOSettings, SamplingConfig
from ..training import TrainingOptions
from .app import SKIPPED_NOTE, ConfigOption, command, print_summary
from .options import OverwriteOpt, PickleOpt, ScoreBatchOpt, SkipOpt, TrustOpt, settings_options


@command()
@settings_options(sampling=SamplingConfig)
def sample(
    *,
    policy: str = typer.Option(..., "--policy", "-p", help="Policy directory (a causal LM with a chat template)."),
    prompts: str = typer.Option(..., "--prompts", help="JSONL with `prompt` (text or messages), or any data file."),
    output: Path = typer.Option(..., "--output", "-o", help="Best-of-N JSONL: prompt, candidates."),
    sampling: SamplingConfig,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Sample N responses per prompt from a policy.

    Written as best-of-N candidates.
    """
    from ..commands.sample import sample_to_file

    print_summary(sample_to_file(policy, prompts, output, sampling, trust_remote_code, allow_pickle, overwrite), {
        "truncated": f"samples cut at --max-new-tokens {sampling.max_new_tokens} before an end token",
        "empty_dropped": "empty samples left out of the candidates",
        "prompts_dropped": "prompts left with no candidate",
    })


@command("dpo-pairs")
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


@command()
@settings_options(settings=DPOSettings, training=TrainingOptions.recipe("dpo"), exclude={"training": ("save_steps",)})
def dpo(
    *,
    policy: str = typer.Option(..., "--policy", "-p", help="Starting policy (also the DPO reference)."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise data, e.g. from `icrm dpo-pairs`."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    settings: DPOSettings,
    training: TrainingOptions,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a policy with DPO (TRL's DPOTrainer).

    On chosen/rejected pairs, with the starting policy as the reference.
    """
    from ..commands.dpo import train_dpo

    metrics = train_dpo(policy, data, output, training.trainer_kwargs(), settings, overwrite)
    summary = {"output": str(output), "train_loss": round(metrics["train_loss"], 4), "steps": metrics["steps"]}
    if metrics["final_reward_accuracy"] is not None:
        summary["reward_accuracy"] = round(metrics["final_reward_accuracy"], 4)
    print_summary(summary)


@command("compare-policies")
@settings_options(sampling=SamplingConfig)
def compare_policies_cmd(
    *,
    policies: list[str] = typer.Option(..., "--policies", help="Policy dirs: --policies A B C (the first is the baseline)."),
    more: Optional[list[str]] = typer.Argument(None, help="More policy dirs (so `--policies A B C` works).", show_default=False),
    prompts: str = typer.Option(..., "--prompts", help="Prompts file (or any data file)."),
    judge: str = typer.Option(..., "--judge", help="Reward model dir, or true-reward (synthetic tasks)."),
    task: Optional[str] = typer.Option(None, "--task", help="Synthetic task for true-reward (default: from task.json)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="report.json to write."),
    sampling: SamplingConfig,
    trust_remote_code: bool = TrustOpt,
    allow_pickle: bool = PickleOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Compare policies: mean reward, win/tie/lose.

    Samples from each policy are judged by a reward model or the true reward; win/tie/lose is vs the first policy.
    """
    from ..commands.compare_policies import compare_policies

    report = compare_policies(
        list(policies) + list(more or []), prompts, judge, sampling, task=task, output=output,
        batch_size=sampling.batch_size, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, overwrite=overwrite,
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


@command()
@settings_options(settings=GRPOSettings, training=TrainingOptions.recipe("grpo"), exclude={"training": ("save_steps",)})
def grpo(
    *,
    policy: str = typer.Option(..., "--policy", "-p", help="Starting policy (a causal LM with a chat template)."),
    reward_model: str = typer.Option(..., "--reward-model", "-r", help="Reward model directory (the judge)."),
    prompts: str = typer.Option(..., "--prompts", help="JSONL with `prompt` (text or messages), or any data file."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (a causal LM)."),
    settings: GRPOSettings,
    training: TrainingOptions,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Train a policy with GRPO (TRL's GRPOTrainer).

    The reward model is the reward function.
    """
    from ..commands.grpo import train_grpo

    metrics = train_grpo(policy, reward_model, prompts, output, training.trainer_kwargs(), settings, overwrite)
    summary = {"output": str(output), "steps": metrics["steps"], "prompts": metrics["prompts"]}
    if metrics["final_reward"] is not None:
        summary.update(first_reward=round(metrics["first_reward"], 4), final_reward=round(metrics["final_reward"], 4))
    print_summary(summary)
