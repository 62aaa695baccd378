"""Process-reward metrics: how well step scores find the wrong steps of a chain.

Everything here is a pure function of step scores and step labels, checked
against hand-computed values in tests/evaluation/test_process_metrics.py. Metrics
follow ProcessBench (arXiv 2412.06559) where it defines them:

* ``step_auroc``: how well step scores separate right from wrong prefixes,
  pooled over all steps of all chains (ties count half);
* ``first_error_f1``: the predicted first wrong step is the first step with
  ``σ(r) < threshold`` (none: the chain is predicted right); the accuracies on
  chains with an error and on right chains are combined by their harmonic mean;
* ``localization``: on chains with an error, is the largest drop in ``σ(r)``
  at the first wrong step (before step 0, ``σ = 1``: nothing has gone wrong yet);
* ``by_num_steps``: the three, per chain length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .statistics import auroc, sigmoid


def first_error(labels: Sequence[int]) -> int:
    """Index of the first wrong step (label 0), or −1 if every step is right."""
    return next((k for k, y in enumerate(labels) if not y), -1)


def predicted_first_error(scores: Sequence[float], threshold: float = 0.5) -> int:
    """The first step with ``σ(r) < threshold``, or −1 (the chain is predicted right)."""
    return next((k for k, s in enumerate(scores) if sigmoid(s) < threshold), -1)


def first_error_f1(
    step_scores: Sequence[Sequence[float]], first_errors: Sequence[int], threshold: float = 0.5
) -> dict:
    """ProcessBench's score: accuracy on chains with an error, on right chains, and their harmonic mean.

    A chain with an error counts when the predicted first wrong step is the
    true one; a right chain counts when no step falls below the threshold.
    ``f1`` is None when either kind of chain is missing.
    """
    hits = {"erroneous": [], "correct": []}
    for scores, truth in zip(step_scores, first_errors, strict=True):
        kind = "erroneous" if truth >= 0 else "correct"
        hits[kind].append(predicted_first_error(scores, threshold) == truth)
    acc = {k: (float(np.mean(v)) if v else None) for k, v in hits.items()}
    a, b = acc["erroneous"], acc["correct"]
    f1 = None if a is None or b is None else (0.0 if a + b == 0 else 2 * a * b / (a + b))
    return {
        "f1": f1,
        "accuracy_erroneous": a,
        "accuracy_correct": b,
        "n_erroneous": len(hits["erroneous"]),
        "n_correct": len(hits["correct"]),
    }


def localization(step_scores: Sequence[Sequence[float]], first_errors: Sequence[int]) -> float | None:
    """Share of chains with an error whose largest drop in ``σ(r)`` is at the first wrong step.

    The drop at step ``k`` is ``σ(r_{k−1}) − σ(r_k)``, with ``σ(r_{−1}) = 1``.
    When several steps tie for the largest drop the credit is split among
    them. None when no chain has an error.
    """
    credits = []
    for scores, truth in zip(step_scores, first_errors, strict=True):
        if truth < 0:
            continue
        p = np.array([1.0] + [sigmoid(s) for s in scores])
        drops = p[:-1] - p[1:]
        top = np.flatnonzero(drops == drops.max())
        credits.append(float(truth in top) / top.size)
    return float(np.mean(credits)) if credits else None


def step_metrics(
    step_scores: Sequence[Sequence[float]], step_labels: Sequence[Sequence[int]], threshold: float = 0.5
) -> dict:
    """The ``"steps"`` block of ``icrm eval`` on stepwise data (keys as in the module docstring)."""
    if len(step_scores) != len(step_labels):
        raise ValueError(f"{len(step_scores)} chains of scores but {len(step_labels)} of labels")
    if not step_scores:
        raise ValueError("no chains to evaluate")
    for line, (scores, labels) in enumerate(zip(step_scores, step_labels), start=1):
        if len(scores) != len(labels) or not scores:
            raise ValueError(f"line {line}: {len(scores)} step scores for {len(labels)} step labels")
        if not all(math.isfinite(s) for s in scores):
            raise ValueError(f"line {line}: a step score is not finite")
    summary = _chain_metrics(step_scores, step_labels, threshold)
    by_length: dict[int, list[int]] = {}
    for i, labels in enumerate(step_labels):
        by_length.setdefault(len(labels), []).append(i)
    summary["by_num_steps"] = {
        str(n): _chain_metrics([step_scores[i] for i in rows], [step_labels[i] for i in rows], threshold)
        for n, rows in sorted(by_length.items())
    }
    summary["threshold"] = threshold
    return summary


def _chain_metrics(step_scores, step_labels, threshold: float) -> dict:
    firsts = [first_error(labels) for labels in step_labels]
    f1 = first_error_f1(step_scores, firsts, threshold)
    return {
        "n_chains": len(step_scores),
        "n_steps": sum(len(labels) for labels in step_labels),
        "step_auroc": auroc([s for row in step_scores for s in row], [y for row in step_labels for y in row]),
        "first_error_f1": f1["f1"],
        "first_error_accuracy_erroneous": f1["accuracy_erroneous"],
        "first_error_accuracy_correct": f1["accuracy_correct"],
        "localization": localization(step_scores, firsts),
    }


PROFILE_SPAN = 3  # steps shown on each side of the first wrong step


def step_profile(step_scores: Sequence[Sequence[float]], step_labels: Sequence[Sequence[int]]) -> dict:
    """Mean ``σ(r)`` by step: around the first wrong step of chains with an error, and along right chains.

    Returns ``{"erroneous": {offset: (mean, n)}, "correct": {index: (mean, n)}}``
    with offsets ``k − first_error`` within ±``PROFILE_SPAN``.
    """
    sums: dict[str, dict[int, list[float]]] = {"erroneous": {}, "correct": {}}
    for scores, labels in zip(step_scores, step_labels, strict=True):
        first = first_error(labels)
        for k, s in enumerate(scores):
            kind, x = ("correct", k) if first < 0 else ("erroneous", k - first)
            if kind == "erroneous" and abs(x) > PROFILE_SPAN:
                continue
            sums[kind].setdefault(x, []).append(sigmoid(s))
    return {kind: {x: (float(np.mean(v)), len(v)) for x, v in sorted(per.items())} for kind, per in sums.items()}
