"""``icrm demo``: the embedded end-to-end run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .app import command, print_summary
from .options import OverwriteOpt


@command()
def demo(
    output: Path = typer.Option(Path("icrm-demo"), "--output", "-o", help="Report directory."),
    quick: bool = typer.Option(False, "--quick", help="Smaller run: no probes, no DPO loop, no process rewards (about a minute on 2 cores)."),
    real: bool = typer.Option(False, "--real", help="Instead: BT and ICRM from SmolLM2-135M-Instruct (offline) on "
                              "real chat pairs, LLMBar, a verbosity attack and a per-token page."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="With --real: the shared data folder (alpacaeval-prefs/, llmbar/) "
        "[default: $ICRM_SHARED_DATA]."),
    overwrite: bool = OverwriteOpt,
):
    """Embedded end-to-end run on CPU, no downloads.

    Synthetic data, SFT, BT/GRM/ICRM reward models, evaluation, best-of-N verification (and, in full mode,
    the spurious-feature probes, a DPO loop and per-step rewards of BT, ICRM and a PRM on one chain),
    written as report.md with plots. --real: a real pretrained model on real preference data instead.
    """
    from ..commands.demo import run_demo, run_real_demo

    if real:
        folder = data_dir or os.environ.get("ICRM_SHARED_DATA")
        if folder is None:
            raise UserError("--real needs --data-dir (or $ICRM_SHARED_DATA): the shared data folder")
        metrics = run_real_demo(output, folder, overwrite)
    else:
        metrics = run_demo(output, quick, overwrite)
    summary = {f"{m} {split}": round(acc, 3) for m, per in metrics["accuracy"].items() for split, acc in per.items()}
    summary["report"] = str(Path(output) / "report.md")
    print_summary(summary)
