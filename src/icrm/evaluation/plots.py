"""The evaluation figures: reward margins, best-of-N curves, accuracy bars, training-loss panels and step
scores around the first wrong step.

Each takes numbers a metric or a training log produced and writes one PNG
through :mod:`icrm.plots` (Agg canvas, all-or-nothing files); training, the
policy commands and the demo draw their loss curves here too.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..plots import new_figure, save_png
from .pairwise import as_finite_array, pair_credit
from .process import first_error, step_profile


def plot_margin_histogram(
    chosen: Sequence[float], rejected: Sequence[float], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Histogram of reward margins (chosen - rejected); mass right of 0 is accuracy."""
    margins = as_finite_array(chosen, "chosen") - as_finite_array(rejected, "rejected")
    figure = new_figure()
    ax = figure.add_subplot()
    ax.hist(margins, bins=min(50, max(10, margins.size // 10)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    accuracy = float(np.mean(pair_credit(margins))) if margins.size else 0.0
    ax.set_xlabel("reward margin (chosen - rejected)")
    ax.set_ylabel("pairs")
    ax.set_title(title or f"Reward margins (n={margins.size}, accuracy={accuracy:.3f})")
    return save_png(figure, path)


_BON_STYLES = {
    "pass": ("pass@n (oracle)", "tab:green", "--"),
    "accuracy": ("reward model", "tab:blue", "-"),
    "majority": ("majority vote", "tab:orange", "-."),
    "random": ("random pick", "tab:gray", ":"),
}


def _bon_axes(figure, ns: list[int], title: str):
    ax = figure.add_subplot()
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("n (candidates per prompt)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    return ax


def plot_bon_curve(bon_result: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Best-of-N accuracy vs n (log2 axis), between the random floor and the oracle ceiling."""
    ns = [int(n) for n in bon_result["n"]]
    figure = new_figure()
    ax = _bon_axes(figure, ns, title or f"Best-of-N ({bon_result.get('num_prompts', '?')} prompts)")
    for metric, (label, color, style) in _BON_STYLES.items():
        if metric in bon_result:
            values = [bon_result[metric][str(n)] for n in ns]
            ax.plot(ns, values, marker="o", label=label, color=color, linestyle=style)
    ax.legend()
    return save_png(figure, path)


_VERIFIER_STYLES = (("tab:blue", "o", "-"), ("tab:purple", "s", "--"), ("tab:red", "^", "-."), ("tab:brown", "D", ":"))


def plot_bon_comparison(
    results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """accuracy@n of several verifiers on the same candidates, with the oracle, majority and random curves.

    Verifiers get distinct markers and dash patterns, so curves that coincide
    stay visible; the legend sits outside the axes, so it covers none of them.
    """
    first = next(iter(results.values()))
    ns = [int(n) for n in first["n"]]
    figure = new_figure(width=7.6)
    ax = _bon_axes(figure, ns, title or f"Best-of-N ({first.get('num_prompts', '?')} prompts)")
    for (name, result), (color, marker, style) in zip(results.items(), itertools.cycle(_VERIFIER_STYLES)):
        values = [result["accuracy"][str(n)] for n in ns]
        ax.plot(ns, values, marker=marker, color=color, linestyle=style, markerfacecolor="none", label=f"{name} verifier")
    for metric in ("pass", "majority", "random"):
        if metric in first:
            label, color, style = _BON_STYLES[metric]
            ax.plot(ns, [first[metric][str(n)] for n in ns], color=color, linestyle=style, marker=".", label=label)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return save_png(figure, path)


def plot_accuracy_bars(
    table: Mapping[str, Mapping[str, float]], path: str | os.PathLike, title: str
) -> Path:
    """Grouped bars: one group per split, one bar per method (``table[method][split]``)."""
    methods = list(table)
    splits = list(dict.fromkeys(split for row in table.values() for split in row))
    figure = new_figure(width=max(6.4, 1.3 * len(splits) + 2))
    ax = figure.add_subplot()
    width = 0.8 / max(1, len(methods))
    positions = np.arange(len(splits))
    for i, method in enumerate(methods):
        values = [table[method].get(split, np.nan) for split in splits]
        bars = ax.bar(positions + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":", label="chance (0.5)")
    ax.set_xticks(positions, [split.replace("/", "\n") for split in splits])  # "task/split" on two lines
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return save_png(figure, path)


LOSS_TERMS = {
    "loss": "total loss",
    "bt": "Bradley–Terry: −log σ(R_c − R_r)",
    "bce": "pointwise BCE",
    "icrm": "consistency L_ICRM (÷ its EMA)",
    "sft": "SFT: −log π(chosen)",
}


def plot_loss_terms(
    runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: str | os.PathLike, title: str = "Training loss"
) -> Path:
    """One panel per loss term, one line per run (``runs[run][term] = [(step, value), ...]``).

    Terms live on different scales and not every method has every term, so
    each gets its own axes (a total that includes an SFT term is not
    comparable with one that does not). A run keeps its colour in every
    panel; the legend sits below the panels, where it covers no curve.
    """
    present = {term for run in runs.values() for term, history in run.items() if history}
    terms = [t for t in LOSS_TERMS if t in present] + sorted(present - set(LOSS_TERMS))
    figure = new_figure(width=max(6.4, 3.4 * len(terms)), height=3.8)
    colours = {name: f"C{i}" for i, name in enumerate(runs)}
    for i, term in enumerate(terms or ["loss"], start=1):
        ax = figure.add_subplot(1, max(1, len(terms)), i)
        for name, run in runs.items():
            if run.get(term):
                steps, values = zip(*run[term])
                ax.plot(steps, values, color=colours[name], label=name)
        ax.set_title(LOSS_TERMS.get(term, term), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    figure.suptitle(title)
    named = [name for name in runs if name]
    if named:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colours[name]) for name in named]
        figure.legend(handles, named, loc="lower center", ncol=len(named), frameon=False)
    figure.tight_layout(rect=(0, 0.08 if named else 0, 1, 1))
    return save_png(figure, path, tight=False)


def plot_loss_curves(
    histories: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike, title: str = "Training loss"
) -> Path:
    """Training curves of one run, one panel each (``histories[term] = [(step, value), ...]``)."""
    return plot_loss_terms({"": dict(histories)}, path, title)


def plot_step_profile(step_scores, step_labels, path, title: str = "Step scores") -> Path:
    """Two panels of :func:`step_profile`: where σ(r) falls on chains with an error, and right chains."""
    profile = step_profile(step_scores, step_labels)
    figure = new_figure(width=9.0, height=3.6)
    panels = (
        ("erroneous", "chains with an error", "step − first wrong step", "tab:red"),
        ("correct", "right chains", "step (0 = first)", "tab:green"),
    )
    for i, (kind, name, xlabel, colour) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, 2, i)
        points = profile[kind]
        if points:
            xs = list(points)
            ax.plot(xs, [points[x][0] for x in xs], marker="o", color=colour)
            ax.set_xticks(xs)
        if kind == "erroneous":
            ax.axvline(-0.5, color="gray", linestyle=":", linewidth=1)
        ax.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean σ(r) at the step's end")
        n = sum(1 for labels in step_labels if (first_error(labels) >= 0) == (kind == "erroneous"))
        ax.set_title(f"{title}: {name} (n={n})", fontsize=10)
        ax.grid(True, alpha=0.3)
    return save_png(figure, path)
