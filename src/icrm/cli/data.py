"""``icrm data``: the embedded tasks and the converters of public datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import ConfigOption, command, data_app, print_summary
from .options import OverwriteOpt, SeedOpt


@command("synth", data_app)
def data_synth(
    task: str = typer.Option(..., "--task", help="noisy, length, suffix, arithmetic, addition or steps."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the JSONL files."),
    seed: int = SeedOpt,
    n_train: Optional[int] = typer.Option(None, "--n-train", help="Training rows [default: the task's]."),
    n_test: Optional[int] = typer.Option(None, "--n-test", help="Test rows and best-of-N prompts [default: the task's]."),
    flip: Optional[float] = typer.Option(None, "--flip", help="Share of training labels flipped."),
    overwrite: bool = OverwriteOpt,
    config: Optional[Path] = ConfigOption,
):
    """Write an embedded synthetic task as ordinary data files."""
    from ..commands.data import write_task

    info = write_task(task, output, seed=seed, n_train=n_train, n_test=n_test, flip=flip, overwrite=overwrite)
    print_summary({"task": info["task"], "files": info["files"], "output": str(output)})


@command("gsm8k-bon", data_app)
def data_gsm8k_bon(
    data: str = typer.Option(..., "--data", "-d", help="GSM8K example_model_solutions.jsonl(.gz)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for bon_/pointwise_ train/test files."),
    seed: int = SeedOpt,
    test_fraction: float = typer.Option(0.5, "--test-fraction", help="Share of the questions in the test files."),
    overwrite: bool = OverwriteOpt,
):
    """GSM8K graded solutions → best-of-N and pointwise files.

    Split by question, so no question is on both sides.
    """
    from ..commands.data import gsm8k_best_of_n

    counts = gsm8k_best_of_n(data, output, seed, test_fraction, overwrite)
    print_summary({"questions": counts, "output": str(output)})


@command("gsm8k-sft", data_app)
def data_gsm8k_sft(
    data: str = typer.Option(..., "--data", "-d", help="GSM8K train.jsonl(.gz) with question/answer."),
    output: Path = typer.Option(..., "--output", "-o", help="Pointwise JSONL (label 1) for icrm sft."),
    overwrite: bool = OverwriteOpt,
):
    """GSM8K question/answer rows → SFT data for a generator/backbone."""
    from ..commands.data import gsm8k_sft

    print_summary({"rows": gsm8k_sft(data, output, overwrite), "output": str(output)})


@command("split", data_app)
def data_split(
    data: str = typer.Option(..., "--data", "-d", help="Any pairwise/pointwise/best-of-N file."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for train.jsonl and test.jsonl."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of the prompts in test.jsonl."),
    seed: int = SeedOpt,
    overwrite: bool = OverwriteOpt,
):
    """Split a data file by prompt (no prompt on both sides) with a fixed seed."""
    from ..commands.data import split_by_prompt

    counts = split_by_prompt(data, output, test_fraction, seed, overwrite)
    print_summary({**counts, "output": str(output)})
