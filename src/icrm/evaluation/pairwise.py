"""Pairwise preference accuracy, as ``icrm eval`` reports it, and the reward scale.

A pure function of the rewards of chosen and rejected responses scored
elsewhere: overall and per-subset accuracy (RewardBench's sections when the
subsets are its own, :mod:`icrm.evaluation.rewardbench`), the reward
statistics, and accuracy split by length, a direct read-out of length bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .rewardbench import (
    accuracy_entry,
    check_ties,
    reject_mixed_subsets,
    rewardbench_section_scores,
    subset_to_section,
)

# Length buckets for pairwise accuracy. Length bias is one of the shortcuts a
# reward model can learn, so accuracy is reported separately for pairs where the
# chosen response is longer, of similar length, or shorter.
LENGTH_BUCKETS = ("chosen longer", "similar", "chosen shorter")
SIMILAR_LENGTH_FRACTION = 0.10  # |len_c - len_r| <= 10% of the longer one


def as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    """``values`` as a flat float array; raises, naming the 1-based line, at the first non-finite one."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"line {bad[0] + 1}: {name} reward is not finite ({array[bad[0]]})")
    return array


def pair_credit(margins: np.ndarray, ties: str = "half") -> np.ndarray:
    """Each pair's credit from its margin (chosen - rejected): 1 above 0, 0 below, and a tie 1/2 or 0 as ``ties`` says."""
    return np.where(margins > 0, 1.0, np.where(margins == 0, 0.5 if ties == "half" else 0.0, 0.0))


def _length_buckets(
    credit: np.ndarray, chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]
) -> list[dict[str, Any]]:
    """Accuracy split by how the chosen response's length compares with the rejected one's.

    A reward model that has learned "longer is better" looks good on the
    "chosen longer" bucket and bad on "chosen shorter"; the gap between the
    two is a direct read-out of length bias.
    """
    lc = np.asarray(chosen_lengths, dtype=np.float64).reshape(-1)
    lr = np.asarray(rejected_lengths, dtype=np.float64).reshape(-1)
    if lc.size != credit.size or lr.size != credit.size:
        raise ValueError(
            f"length lists must have one entry per pair ({credit.size}); "
            f"got {lc.size} chosen and {lr.size} rejected lengths"
        )
    diff = lc - lr
    similar = np.abs(diff) <= SIMILAR_LENGTH_FRACTION * np.maximum(lc, lr)
    masks = {
        "chosen longer": ~similar & (diff > 0),
        "similar": similar,
        "chosen shorter": ~similar & (diff < 0),
    }
    buckets = []
    for name in LENGTH_BUCKETS:
        selected = credit[masks[name]]
        accuracy = float(selected.mean()) if selected.size else None
        buckets.append({"bucket": name, "accuracy": accuracy, "n": int(selected.size)})
    return buckets


def pairwise_metrics(
    chosen: Sequence[float],
    rejected: Sequence[float],
    subsets: Sequence[str | None] | None = None,
    *,
    chosen_lengths: Sequence[int] | None = None,
    rejected_lengths: Sequence[int] | None = None,
    ties: str = "half",
) -> dict[str, Any]:
    """Pairwise preference accuracy of a reward model, as ``icrm eval`` reports it.

    A pair counts as correct when ``chosen > rejected``; a tie counts as half
    correct with ``ties="half"`` (the default: a reward model that gives every
    response the same reward scores 0.5, the chance level) or as wrong with
    ``ties="loss"``, which is what the official RewardBench script does and
    what reproduces its leaderboard.

    Sections: when every pair's ``subset`` is a RewardBench subset, the result
    is RewardBench's score as its authors compute it (``scripts/run_rm.py`` and
    ``calculate_scores_per_section`` in github.com/allenai/reward-bench): a
    section's accuracy is the average of its subsets' accuracies weighted by
    the official ``EXAMPLE_COUNTS`` (see :func:`rewardbench_example_counts`),
    and the overall ``accuracy`` is the unweighted mean of the sections
    present, the leaderboard's score for a model run on the RewardBench data
    (the paper's table also averaged in "Prior Sets", a separate data set, at
    half weight; icrm does not). Sections with no pairs are left out rather
    than scored 0. Otherwise there is one section, ``"all"``, and ``accuracy``
    is the plain accuracy over all pairs. ``example_accuracy`` is always the
    plain mean over pairs. Mixing RewardBench subset names with other names
    (or with rows that have no subset) raises.

    Returns a JSON-friendly dict with keys ``accuracy``, ``example_accuracy``,
    ``n``, ``subsets`` ({name: {accuracy, n}}), ``sections`` ({name:
    {accuracy, n}}), ``benchmark`` ("RewardBench" or None), ``ties``,
    ``reward_stats`` (chosen/rejected mean and population std, mean margin)
    and ``length_buckets`` (a list of {bucket, accuracy, n}; empty unless both
    length lists are given; accuracy is None for an empty bucket).
    """
    check_ties(ties)
    c = as_finite_array(chosen, "chosen")
    r = as_finite_array(rejected, "rejected")
    if c.size != r.size:
        raise ValueError(f"chosen and rejected differ in length ({c.size} vs {r.size})")
    if c.size == 0:
        raise ValueError("no pairs to evaluate")
    credit = pair_credit(c - r, ties)

    names: list[str | None] = [None] * c.size if subsets is None else list(subsets)
    if len(names) != c.size:
        raise ValueError(f"subsets has {len(names)} entries for {c.size} pairs")
    subset_results = {
        name: accuracy_entry(credit[[i for i, s in enumerate(names) if s == name]])
        for name in sorted({s for s in names if s is not None})
    }
    lookup = subset_to_section()
    reject_mixed_subsets(names, set(lookup), "RewardBench")

    example_accuracy = float(credit.mean())
    if any(s in lookup for s in names):
        sections = rewardbench_section_scores(subset_results)
        accuracy = float(np.mean([entry["accuracy"] for entry in sections.values()]))
        benchmark = "RewardBench"
    else:
        sections = {"all": accuracy_entry(credit)}
        accuracy = example_accuracy
        benchmark = None

    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("give both chosen_lengths and rejected_lengths, or neither")
    buckets = [] if chosen_lengths is None else _length_buckets(credit, chosen_lengths, rejected_lengths)

    return {
        "accuracy": accuracy,
        "example_accuracy": example_accuracy,
        "n": int(c.size),
        "subsets": subset_results,
        "sections": sections,
        "benchmark": benchmark,
        "ties": ties,
        "reward_stats": {
            "chosen_mean": float(c.mean()),
            "chosen_std": float(c.std()),
            "rejected_mean": float(r.mean()),
            "rejected_std": float(r.std()),
            "margin_mean": float((c - r).mean()),
        },
        "length_buckets": buckets,
    }


def reward_normalizer(rewards: Sequence[float]) -> tuple[float, float]:
    """Mean and std of rewards, for z-scoring them (``(r - mean) / std``).

    Reward models are only defined up to a shift (Bradley-Terry sees
    differences), so comparing or thresholding rewards across models needs a
    common scale. The std is floored at 1e-6 so a constant reward model does
    not cause a division by zero.
    """
    values = as_finite_array(rewards, "reward")
    if values.size == 0:
        raise ValueError("no rewards to normalize")
    return float(values.mean()), max(float(values.std()), 1e-6)
