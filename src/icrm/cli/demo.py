"""``icrm demo``: the embedded end-to-end run."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import command, print_summary
from .options import OverwriteOpt


@command()
def demo(
    output: Path = typer.Option(Path("icrm-demo"), "--output", "-o", help="Report directory."),
    quick: bool = typer.Option(False, "--quick", help="Smaller run: no probes, no DPO loop, no process rewards (about a minute on 2 cores)."),
    overwrite: bool = OverwriteOpt,
):
    """Embedded end-to-end run on CPU, no downloads.

    Synthetic data, SFT, BT/GRM/ICRM reward models, evaluation, best-of-N verification (and, in full mode,
    the spurious-feature probes, a DPO loop and per-step rewards of BT, ICRM and a PRM on one chain),
    written as report.md with plots.
    """
    from ..commands.demo import run_demo

    metrics = run_demo(output, quick, overwrite)
    summary = {f"{m} {split}": round(acc, 3) for m, per in metrics["accuracy"].items() for split, acc in per.items()}
    summary["report"] = str(Path(output) / "report.md")
    print_summary(summary)
