"""Attribution metrics on ``Δr``: how much of a reward's movement falls where it should.

Benchmarks with known decisive tokens (or a known true reward per token)
score explanations with these.
"""

from __future__ import annotations

import math
from typing import Sequence as Seq

import numpy as np

from ..evaluation import average_ranks


def decisive_share(delta: Seq[float], decisive: Seq[bool]) -> float:
    """Share of the total ``|Δr|`` that falls on decisive tokens (NaN if all ``Δr`` are 0)."""
    if len(delta) != len(decisive):
        raise ValueError(f"{len(delta)} deltas but {len(decisive)} decisive flags")
    mag = np.abs(np.asarray(delta, dtype=np.float64))
    total = mag.sum()
    if total == 0:
        return float("nan")
    return float(mag[np.asarray(decisive, dtype=bool)].sum() / total)


def rank_correlation(delta: Seq[float], true_delta: Seq[float]) -> float:
    """Spearman correlation (ties get average ranks); NaN when undefined."""
    if len(delta) != len(true_delta):
        raise ValueError(f"{len(delta)} deltas but {len(true_delta)} reference values")
    a, b = np.asarray(delta, dtype=np.float64), np.asarray(true_delta, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    if denom == 0:
        return float("nan")
    return float((ra * rb).sum() / denom)
