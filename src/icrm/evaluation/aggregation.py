"""One score for a chain of steps from its step rewards, so best-of-N can rank chains by their steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .statistics import sigmoid

AGGREGATES = ("last", "min", "mean")


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
