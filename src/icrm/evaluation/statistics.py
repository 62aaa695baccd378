"""Numbers the score metrics share: σ of a reward, average ranks with ties, and AUROC.

Pure functions of numbers, used by the step metrics, by ``icrm eval``'s outcome
AUROC and by the explanation's rank correlation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def sigmoid(x: float) -> float:
    """σ(x), without overflow for large ``|x|``: a reward as the probability the reward model gives it."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, a run of ties sharing its average rank (as Spearman and Mann–Whitney need)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(x)]):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return ranks


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
