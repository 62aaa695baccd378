"""``icrm eval``, ``score``, ``bon`` and ``explain``: options, then the runners in ``icrm.commands``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..evaluation import ScoringOptions
from .app import ConfigOption, command, length_summary, print_summary
from .options import (
    OverwriteOpt,
    SeedOpt,
    SkipOpt,
    SplitOpt,
    StepSepOpt,
    option,
    settings_options,
)


@command("eval")
@settings_options(scoring=ScoringOptions)
def eval_cmd(
    *,
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise rows, or RewardBench 2 rows (chosen/rejected lists)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="metrics.json to write (+ a margin plot for pairs)."
    ),
    ties: str = typer.Option(
        "half", "--ties", help="A tie at the top: half (split credit; RewardBench 2's rule) or loss (RewardBench 1's)."
    ),
    step_threshold: float = typer.Option(
        0.5, "--step-threshold", help="Stepwise data: a step is predicted wrong when σ(r) is below this."
    ),
    step_separator: str = StepSepOpt,
    split: Optional[str] = SplitOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N rows."),
    scoring: ScoringOptions,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Pairwise accuracy, or RewardBench 2 scores.

    Scored as their authors do: pairs per subset, RewardBench section and length bucket, with a margin histogram
    (--output); RewardBench 2 rows per subset.
    """
    from ..commands.evaluate import evaluate_pairs

    metrics = evaluate_pairs(
        model, data, output, split=split, limit=limit, ties=ties, step_threshold=step_threshold,
        step_separator=step_separator, scoring=scoring, overwrite=overwrite,
    )
    if "steps" in metrics:
        summary = {k: _rounded(metrics["steps"][k]) for k in ("step_auroc", "first_error_f1", "localization")}
        summary["outcome_auroc"] = _rounded(metrics["outcome"]["auroc"])
    else:
        summary = {"accuracy": round(metrics["accuracy"], 4)}
    shown, notes = length_summary(metrics)
    print_summary({**summary, "n": metrics["n"], **shown, "output": str(output) if output else "-"}, notes)


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


@command()
@settings_options(scoring=ScoringOptions)
def score(
    *,
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise, pointwise or best-of-N data."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL with a reward per response."),
    normalize: bool = typer.Option(False, "--normalize", help="z-score with the training reward mean/std."),
    per_token: bool = typer.Option(False, "--per-token", help="Also write per-token (process) rewards r_t and Δr_t."),
    generator: Optional[str] = typer.Option(None, "--generator", help="With --per-token: add w_t from PATH or self."),
    per_step: bool = typer.Option(
        False, "--per-step", help="Also write step rewards (stepwise steps, or responses split at --step-separator)."
    ),
    step_separator: str = StepSepOpt,
    split: Optional[str] = SplitOpt,
    scoring: ScoringOptions,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Add a reward to every response of a data file."""
    from ..commands.score import score_file

    counts = score_file(
        model, data, output, normalize=normalize, split=split, per_token=per_token, generator=generator,
        per_step=per_step, step_separator=step_separator, scoring=scoring, overwrite=overwrite,
    )
    shown, notes = length_summary(counts)
    print_summary({"rows": counts["rows"], **shown, "output": str(output)}, notes)


@command()
@settings_options(scoring=ScoringOptions)
def bon(
    *,
    model: str = typer.Option(..., "--model", "-m", help="Reward model directory (icrm or any HF sequence classifier)."),
    data: str = typer.Option(..., "--data", "-d", help="Best-of-N data: prompt, candidates, labels and/or answer."),
    n: Optional[str] = typer.Option(None, "--n", help="Comma-separated n values (default 1,2,4,... up to all)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="report.json to write (+ a PNG curve)."),
    draws: int = typer.Option(32, "--draws", help="Random candidate subsets per prompt when n < all."),
    aggregate: str = typer.Option(
        "last", "--aggregate", help="Rank by step rewards: last (= the outcome reward), min or mean σ(r) of the steps."
    ),
    step_separator: str = StepSepOpt,
    seed: int = SeedOpt,
    scoring: ScoringOptions,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Best-of-N: accuracy@n, pass@n, random@n, majority@n.

    accuracy@n picks the highest-reward of n candidates; pass@n is the oracle ceiling and random@n the floor;
    majority@n (with answers) votes on the final answer.
    """
    from ..commands.bon import best_of_n

    report = best_of_n(
        model, data, output, ns=n, n_draws=draws, seed=seed, aggregate_steps=aggregate, step_separator=step_separator,
        scoring=scoring, overwrite=overwrite,
    )
    summary = {f"accuracy@{k}": round(v, 4) for k, v in report["accuracy"].items()}
    for metric in ("random", "majority", "pass"):
        summary.update({f"{metric}@{k}": round(v, 4) for k, v in report.get(metric, {}).items()})
    shown, notes = length_summary(report)
    summary.update(shown)
    summary["output"] = str(output) if output else "-"
    print_summary(summary, notes)


@command()
def explain(
    model: list[str] = typer.Option(..., "--model", "-m", help="Reward model dir; repeat to compare models row by row."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML page (or a directory, with --data)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A prompt (with --response)."),
    response: Optional[str] = typer.Option(None, "--response", help="The response to explain (with --prompt)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Explain the first --limit rows of a data file."),
    limit: int = typer.Option(20, "--limit", help="With --data: the first N rows."),
    generator: Optional[str] = typer.Option(None, "--generator", help="Show generator probabilities w (PATH or self)."),
    png: bool = typer.Option(False, "--png", help="Also render PNGs with matplotlib."),
    max_length: Optional[int] = option(ScoringOptions, "max_length"),
    per_step: bool = typer.Option(
        False, "--per-step", help="Mark step boundaries and scores (stepwise rows always; others split at --step-separator)."
    ),
    step_separator: str = StepSepOpt,
    skip_invalid: bool = SkipOpt,
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Per-token reward heatmap (HTML, optional PNG).

    Each response token is coloured by its reward change Δr; step scores are marked (--per-step).
    """
    from ..commands.explain import explain_to_files

    written = explain_to_files(
        model, output, prompt=prompt, response=response, data=data, limit=limit, generator=generator, png=png,
        max_length=max_length, per_step=per_step, step_separator=step_separator, skip_invalid=skip_invalid,
        overwrite=overwrite,
    )
    print_summary({"written": ", ".join(str(p) for p in written)})
