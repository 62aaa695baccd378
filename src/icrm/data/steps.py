"""Process rewards: step boundaries, step-level metrics and step-score aggregation.

A chain of steps is one response: the steps joined by a separator (TRL's
stepwise-supervision default ``"\\n"``), with no trailing separator. A step's
score is the prefix reward read at the last token of its own text; the last
step's score is read where the outcome reward is (the last real token, e.g.
the end-of-turn token that closes the answer), so a reward model's outcome
reward *is* its last step's score, and a process RM's training target there
is the outcome.

Everything here is a pure function of strings, character offsets and numbers,
checked against hand-computed values in tests/data/test_steps.py. Metrics follow
ProcessBench (arXiv 2412.06559) where it defines them:

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
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

DEFAULT_SEPARATOR = "\n"
AGGREGATES = ("last", "min", "mean")


# ------------------------------------------------------------------ step text


def join_steps(steps: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> str:
    """The response a chain of steps makes: the steps with the separator between them."""
    return separator.join(steps)


def split_steps(text: str, separator: str = DEFAULT_SEPARATOR) -> list[str]:
    """Split a response into steps at ``separator`` so that joining them gives ``text`` back.

    An empty piece (a doubled or trailing separator) is glued onto the step
    before it, and leading empty pieces onto the first non-empty step, so
    every step has a last character to read its score at.
    """
    if not separator:
        raise ValueError("the step separator must not be empty")
    steps: list[str] = []
    pending = None  # leading empty pieces, waiting for the first real step
    for piece in text.split(separator):
        if steps and not piece:
            steps[-1] += separator
        elif not steps and not piece:
            pending = "" if pending is None else pending + separator
        elif not steps:
            steps.append(piece if pending is None else pending + separator + piece)
        else:
            steps.append(piece)
    if not steps:
        raise ValueError("the response has no step text")
    return steps


def step_char_ends(steps: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> list[int]:
    """Exclusive character end of each step's own text inside the joined response."""
    if not steps:
        raise ValueError("a chain needs at least one step")
    ends, at = [], 0
    for k, step in enumerate(steps):
        if not step:
            raise ValueError(f"step {k} is empty")
        at += len(step)
        ends.append(at)
        at += len(separator)
    return ends


def tokens_at_chars(offsets: Sequence[tuple[int, int]], char_ends: Sequence[int]) -> list[int]:
    """Index of the token holding the character just before each exclusive ``char_end``.

    ``offsets`` are a fast tokenizer's ``(start, end)`` character spans. If a
    step's last character shares a token with what follows (a tokenizer that
    merges ``"5\\n"``), that token is the step's: a score cannot be read between
    two characters of one token, and this one has seen the whole step. If the
    character is split over several tokens (bytes of one character), the last
    of them is taken, the first point where the character is complete.
    """
    starts = [start for start, _ in offsets]
    positions = []
    for end in char_ends:
        index = bisect_right(starts, end - 1) - 1
        if index < 0 or offsets[index][1] < end:
            raise ValueError(f"no token holds the character at offset {end - 1}")
        positions.append(index)
    return positions


def first_error(labels: Sequence[int]) -> int:
    """Index of the first wrong step (label 0), or −1 if every step is right."""
    return next((k for k, y in enumerate(labels) if not y), -1)


def labels_from_first_error(n_steps: int, first_wrong: int) -> list[int]:
    """Step labels of a ProcessBench row: right before the first wrong step, wrong from it on.

    ProcessBench annotates only the first error; a prefix that contains a
    wrong step is a wrong prefix, which is what a prefix reward scores.
    """
    if not -1 <= first_wrong < n_steps:
        raise ValueError(f"the first wrong step must be -1 or in 0..{n_steps - 1}, got {first_wrong}")
    cut = n_steps if first_wrong < 0 else first_wrong
    return [1] * cut + [0] * (n_steps - cut)


# ------------------------------------------------------------------- scores


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def aggregate(scores: Sequence[float], how: str) -> float:
    """One score for a chain from its step rewards: ``last``, ``min`` or ``mean``.

    ``last`` and ``min`` return the reward ``r`` itself (ranking by ``σ(r)`` is
    the same and ``r`` keeps the precision ``σ`` loses near 1); ``mean`` is the
    mean of ``σ(r)``, the step probabilities PRM papers average.
    """
    if how not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    if not scores:
        raise ValueError("no step scores to aggregate")
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    return float(np.mean([sigmoid(s) for s in scores]))


# ------------------------------------------------------------------ metrics


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (label 1 = positive), ties counting half; None if one class is absent.

    The Mann–Whitney form: the share of (positive, negative) pairs in which the
    positive scores higher, computed from average ranks.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, a run of ties sharing its average rank (as Spearman and Mann–Whitney need)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(x)]):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return ranks


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


# -------------------------------------------------------------------- plot

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


def plot_step_profile(step_scores, step_labels, path, title: str = "Step scores"):
    """Two panels of :func:`step_profile`: where σ(r) falls on chains with an error, and right chains."""
    from ..plots import new_figure, save_png

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
