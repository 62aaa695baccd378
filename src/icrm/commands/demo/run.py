"""``icrm demo``'s runner: every stage in turn into one staged folder, then the plots, metrics and report."""

from __future__ import annotations

import time
from pathlib import Path

from ...evaluation import plot_accuracy_bars, plot_bon_comparison, plot_loss_terms
from ...outputs import staged_directory, write_json
from .figures import plot_dpo, plot_process
from .policy import dpo_stage
from .preference import explain_page, preference_task
from .process import process_stage
from .report import render_report
from .settings import FULL, QUICK, SHORTCUT_LAMBDA, SHORTCUT_METHODS, SHORTCUT_TASK, SHORTCUT_TEST
from .verification import run_verification


def run_demo(output: str | Path, quick: bool = False, overwrite: bool = False) -> dict:
    """Run the whole demo into ``output`` (written atomically); returns metrics.

    ``output`` may be an earlier demo's folder; anything else that exists needs
    ``overwrite`` (:func:`icrm.outputs.check_output`).
    """
    import torch

    settings = QUICK if quick else FULL
    start = time.time()
    results: dict[str, dict[str, float]] = {}
    losses: dict[str, dict] = {}
    bon_results: dict[str, dict] = {}
    shortcut: dict[str, dict[str, float]] = {}
    with staged_directory(output, "demo", overwrite) as root:
        preference_task(SHORTCUT_TASK, root, settings, shortcut, losses, SHORTCUT_METHODS, SHORTCUT_TEST)
        preference_task("noisy", root, settings, results, losses)
        if settings.probes:
            preference_task("suffix", root, settings, results, losses)
        dpo = dpo_stage(root, settings) if settings.dpo else None
        agreement = run_verification(root, settings, bon_results) if settings.verification else None
        process = process_stage(root, settings) if settings.process else None
        attribution = explain_page(root)
        metrics = {
            "mode": "quick" if quick else "full",
            "settings": settings.__dict__,
            "threads": torch.get_num_threads(),
            "shortcut": {"task": SHORTCUT_TASK, "lambda": SHORTCUT_LAMBDA, "n_train": settings.n_train,
                         "n_test": SHORTCUT_TEST, "accuracy": shortcut},
            "accuracy": results,
            "bon": bon_results,
            "bon_agreement": agreement,
            "attribution": attribution,
            "losses": losses,
        }
        if dpo is not None:
            metrics["dpo"] = dpo
            plot_dpo(dpo, root / "dpo.png")
        if process is not None:
            metrics["process"] = process
            plot_process(process, root / "steps.png")
        plot_accuracy_bars(shortcut, root / "shortcut.png",
                           f"Length shortcut: BT vs ICRM (λ = {SHORTCUT_LAMBDA}), {SHORTCUT_TEST} held-out pairs")
        plot_accuracy_bars(results, root / "accuracy.png", "Pairwise accuracy per split")
        if bon_results:
            plot_bon_comparison(bon_results, root / "bon.png", "Best-of-N on step-checked addition (held-out problems)")
        plot_loss_terms(losses["noisy"], root / "losses.png", "Training losses on the noisy task")
        elapsed = time.time() - start
        metrics["elapsed_s"] = elapsed
        write_json(root / "metrics.json", metrics)
        (root / "report.md").write_text(render_report(metrics, elapsed))
    return metrics
