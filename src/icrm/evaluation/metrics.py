"""Metrics for reward models: pairwise accuracy, RewardBench 1 and 2 scores, best-of-N.

Everything here is a pure function of numbers that were scored elsewhere
(``icrm eval`` / ``icrm bon`` run the model and pass the rewards in), so the
metrics can be checked against hand-computed values without any model.

The plots go through :mod:`icrm.plots` (Agg canvas, all-or-nothing files).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..plots import new_figure, save_png

__all__ = [
    "LENGTH_BUCKETS",
    "TIES",
    "bon_metrics",
    "expected_pass_at_n",
    "expected_random_at_n",
    "pairwise_metrics",
    "parse_ties_id",
    "plot_accuracy_bars",
    "plot_bon_curve",
    "plot_loss_curves",
    "plot_loss_terms",
    "plot_margin_histogram",
    "reward_normalizer",
    "rewardbench2_metrics",
    "rewardbench2_subsets",
    "rewardbench_example_counts",
    "rewardbench_sections",
]

# Length buckets for pairwise accuracy. Length bias is one of the shortcuts a
# reward model can learn, so accuracy is reported separately for pairs where the
# chosen response is longer, of similar length, or shorter.
LENGTH_BUCKETS = ("chosen longer", "similar", "chosen shorter")
SIMILAR_LENGTH_FRACTION = 0.10  # |len_c - len_r| <= 10% of the longer one


# --------------------------------------------------------------------------- #
# RewardBench sections
# --------------------------------------------------------------------------- #


@lru_cache(maxsize=1)
def _load_resource() -> dict[str, Any]:
    text = resources.files("icrm").joinpath("resources", "rewardbench_sections.json").read_text("utf-8")
    return json.loads(text)


def _load_sections() -> dict[str, tuple[str, ...]]:
    return {section: tuple(subsets) for section, subsets in _load_resource()["sections"].items()}


def rewardbench_sections() -> dict[str, list[str]]:
    """RewardBench section -> subset names (Chat, Chat Hard, Safety, Reasoning).

    Kept as data in ``icrm/resources/rewardbench_sections.json`` (copied from
    ``SUBSET_MAPPING`` in the official ``rewardbench/constants.py``) so that
    the mapping can be read and corrected without touching code.
    """
    return {section: list(subsets) for section, subsets in _load_sections().items()}


def rewardbench_example_counts() -> dict[str, int]:
    """The official per-subset weights of RewardBench sections (``EXAMPLE_COUNTS``).

    They are the subsets' sizes, except math-prm, which counts 984 (6 x 164)
    instead of its 447 pairs so that math weighs as much as the six hep-* code
    subsets together in Reasoning.
    """
    return dict(_load_resource()["example_counts"])


def rewardbench2_subsets() -> list[str]:
    """The six RewardBench 2 subsets, whose unweighted mean is its leaderboard score."""
    return list(_load_resource()["rewardbench2_subsets"])


def _subset_to_section() -> dict[str, str]:
    return {subset: section for section, subsets in _load_sections().items() for subset in subsets}


# How a tie at the top is credited. "half": the credit is split among the tied
# responses (a pair's tie scores 1/2, a k-way tie for best-of-N scores 1/k), so
# a reward model that scores everything the same gets the chance level; this is
# RewardBench 2's official rule. "loss": a tie earns nothing, as RewardBench 1's
# official script (``1 if chosen > rejected else 0``) counts it.
TIES = ("half", "loss")


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)} (got {ties!r})")


def _reject_mixed_subsets(names: Sequence[str | None], known: set[str], benchmark: str) -> None:
    """Raise if some subset names belong to ``benchmark`` and others (or missing ones) do not.

    Mixing a benchmark's subset names with other names (or with rows that have
    no subset) is almost certainly a mistake in the data.
    """
    unknown = sorted({s for s in names if s is not None and s not in known})
    missing = sum(s is None for s in names)
    if not any(s in known for s in names) or not (unknown or missing):
        return
    problems = []
    if unknown:
        problems.append(f"unknown subset(s) {', '.join(repr(s) for s in unknown)}")
    if missing:
        problems.append(f"{missing} row(s) without a subset")
    raise ValueError(
        f"subset names mix {benchmark} subsets with " + " and ".join(problems)
        + f"; use only {benchmark} subset names, or none of them"
    )


# --------------------------------------------------------------------------- #
# Pairwise accuracy
# --------------------------------------------------------------------------- #


def _as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"line {bad[0] + 1}: {name} reward is not finite ({array[bad[0]]})")
    return array


def _accuracy_entry(credit: np.ndarray) -> dict[str, Any]:
    return {"accuracy": float(credit.mean()), "n": int(credit.size)}


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
    _check_ties(ties)
    c = _as_finite_array(chosen, "chosen")
    r = _as_finite_array(rejected, "rejected")
    if c.size != r.size:
        raise ValueError(f"chosen and rejected differ in length ({c.size} vs {r.size})")
    if c.size == 0:
        raise ValueError("no pairs to evaluate")
    credit = np.where(c > r, 1.0, np.where(c == r, 0.5 if ties == "half" else 0.0, 0.0))

    names: list[str | None] = [None] * c.size if subsets is None else list(subsets)
    if len(names) != c.size:
        raise ValueError(f"subsets has {len(names)} entries for {c.size} pairs")
    subset_results = {
        name: _accuracy_entry(credit[[i for i, s in enumerate(names) if s == name]])
        for name in sorted({s for s in names if s is not None})
    }
    lookup = _subset_to_section()
    _reject_mixed_subsets(names, set(lookup), "RewardBench")

    example_accuracy = float(credit.mean())
    if any(s in lookup for s in names):
        counts = rewardbench_example_counts()
        sections = {}
        for section, members in _load_sections().items():
            present = [s for s in members if s in subset_results]
            if present:
                accuracy = np.average(
                    [subset_results[s]["accuracy"] for s in present], weights=[counts[s] for s in present]
                )
                sections[section] = {"accuracy": float(accuracy), "n": sum(subset_results[s]["n"] for s in present)}
        accuracy = float(np.mean([entry["accuracy"] for entry in sections.values()]))
        benchmark = "RewardBench"
    else:
        sections = {"all": _accuracy_entry(credit)}
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


# --------------------------------------------------------------------------- #
# RewardBench 2
# --------------------------------------------------------------------------- #

_TIES_ID = re.compile(r"(ref|tied):(\d+)")


def parse_ties_id(row_id: str | None) -> tuple[str, int]:
    """``"ref:12"`` -> ("ref", 12), ``"tied:12"`` -> ("tied", 12).

    In RewardBench 2's Ties subset a "ref" row holds one correct answer and
    its "tied" twin (same number) several equally correct ones; the Ties
    score compares the two, so every Ties row needs such an id.
    """
    found = _TIES_ID.fullmatch(str(row_id).strip()) if row_id is not None else None
    if found is None:
        raise ValueError(f"a Ties row needs an id 'ref:N' or 'tied:N' (got {row_id!r})")
    return found.group(1), int(found.group(2))


def _best_of_k_credit(scores: np.ndarray, ties: str) -> float:
    """Credit of one best-of-k row whose first score is the chosen response's.

    As ``reroll_and_score_dataset`` in the official ``rewardbench/utils.py``
    does it: the first chosen response must reach the row's maximum; if it
    shares the maximum with others, ``ties="half"`` gives 1/(number at the
    maximum), the official rule, and ``ties="loss"`` gives 0.
    """
    top = scores == scores.max()
    if not top[0]:
        return 0.0
    return 1.0 / top.sum() if ties == "half" else float(top.sum() == 1)


def _ties_subset_score(rows: list[tuple[np.ndarray, int, tuple[str, int]]]) -> dict[str, float]:
    """The Ties score, as ``process_single_model`` in the official ``rewardbench/utils.py``.

    Rows are (scores, number of correct answers first in ``scores``, parsed
    id); rows sharing an id are pooled. Per prompt: ``gap`` = worst correct
    minus best incorrect score (accurate when > 0), ``spread`` = best minus
    worst correct score. Then, over the prompts that have both a "ref" and a
    "tied" row:

    ``score = 0.3 * tied accuracy + 0.3 * ref accuracy
    + 0.2 * mean(gap_tied > spread_tied)
    + 0.2 * mean(min(gap_ref, gap_tied) > spread_tied)
    + 0.01 * mean(tanh(min(gap_ref, gap_tied) / spread_tied - 1))``

    where the accuracies average over all ref (or tied) prompts and the
    tanh term counts 0 where it is 0/0 (and +-1 for x/0).
    """
    pooled: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    for scores, num_correct, key in rows:
        correct, incorrect = pooled.setdefault(key, ([], []))
        correct.extend(scores[:num_correct].tolist())
        incorrect.extend(scores[num_correct:].tolist())
    stats: dict[str, dict[int, tuple[float, float | None]]] = {"ref": {}, "tied": {}}
    for (kind, prompt), (correct, incorrect) in pooled.items():
        spread = max(correct) - min(correct) if len(correct) > 1 else None
        stats[kind][prompt] = (min(correct) - max(incorrect), spread)
    both = sorted(set(stats["ref"]) & set(stats["tied"]))
    if not both:
        raise ValueError("Ties subset: no prompt has both a 'ref:N' and a 'tied:N' row, so it cannot be scored")
    for prompt in both:
        if stats["tied"][prompt][1] is None:
            raise ValueError(f"Ties subset: 'tied:{prompt}' has a single correct answer (a tied row needs 2 or more)")
    gap_tied = np.array([stats["tied"][p][0] for p in both])
    gap_ref = np.array([stats["ref"][p][0] for p in both])
    spread = np.array([stats["tied"][p][1] for p in both])
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.nan_to_num(np.tanh(np.minimum(gap_ref, gap_tied) / spread - 1), nan=0.0)
    parts = {
        "tied_accuracy": float(np.mean([gap > 0 for gap, _ in stats["tied"].values()])),
        "ref_accuracy": float(np.mean([gap > 0 for gap, _ in stats["ref"].values()])),
        "correctness_preferred": float(np.mean(gap_tied > spread)),
        "correctness_preferred_hard": float(np.mean(np.minimum(gap_ref, gap_tied) > spread)),
        "correctness_margin_score": float(margin.mean()),
    }
    weights = {
        "tied_accuracy": 0.30,
        "ref_accuracy": 0.30,
        "correctness_preferred": 0.20,
        "correctness_preferred_hard": 0.20,
        "correctness_margin_score": 0.01,
    }
    return {"score": float(sum(weights[k] * parts[k] for k in weights)), **parts}


def rewardbench2_metrics(
    scores: Sequence[Sequence[float]],
    num_correct: Sequence[int],
    subsets: Sequence[str | None] | None = None,
    ids: Sequence[str | None] | None = None,
    *,
    ties: str = "half",
) -> dict[str, Any]:
    """RewardBench 2 scores of a reward model, as its authors compute them.

    Each row is one prompt's rewards: its ``num_correct`` chosen responses
    first, then the rejected ones (RewardBench 2's ``chosen`` + ``rejected``
    lists). This follows ``scripts/run_v2.py`` and ``rewardbench/utils.py`` of
    github.com/allenai/reward-bench:

    * every subset but Ties is best-of-k accuracy: a row scores 1 when its
      first chosen response gets the single highest reward, 1/m when it shares
      the highest reward with m - 1 others (``ties="half"``, the official rule;
      ``ties="loss"`` gives 0 instead), and 0 otherwise; other chosen
      responses of the row, if any, compete like rejected ones;
    * the Ties subset (name "ties" in any case) gets its own weighted score of
      accuracy and margins (see ``_ties_subset_score``) from rows whose ``id``
      is "ref:N" or "tied:N"; ``ties`` does not apply there;
    * the overall ``accuracy`` is the unweighted mean of the subset scores,
      as the leaderboard averages its six subsets. RewardBench 2 has no
      sections above its subsets, so ``sections`` repeats them.

    Without any subset there is one section, ``"all"``: the plain mean
    best-of-k accuracy. Rows without a subset next to rows with one, or
    RewardBench 2 subset names mixed with others, raise. Errors name the
    1-based row. Returns a JSON-friendly dict: ``accuracy``, ``n`` (rows),
    ``subsets`` and ``sections`` ({name: {accuracy, n}}), ``benchmark``
    ("RewardBench 2" when every subset is one of its six, else None),
    ``ties``, and with a Ties subset ``ties_subset`` (its score's parts).
    """
    _check_ties(ties)
    if not scores:
        raise ValueError("no rows to evaluate")
    names: list[str | None] = [None] * len(scores) if subsets is None else list(subsets)
    row_ids: list[str | None] = [None] * len(scores) if ids is None else list(ids)
    if not len(num_correct) == len(names) == len(row_ids) == len(scores):
        raise ValueError(
            f"scores, num_correct, subsets and ids differ in length "
            f"({len(scores)}, {len(num_correct)}, {len(names)}, {len(row_ids)})"
        )
    _reject_mixed_subsets(names, set(rewardbench2_subsets()), "RewardBench 2")
    if any(s is not None for s in names) and any(s is None for s in names):
        raise ValueError(f"{sum(s is None for s in names)} row(s) without a subset next to rows with one")

    groups: dict[str | None, list] = {}
    for row, (row_scores, k, name, row_id) in enumerate(zip(scores, num_correct, names, row_ids), start=1):
        s = np.asarray(row_scores, dtype=np.float64).reshape(-1)
        if not np.isfinite(s).all():
            raise ValueError(f"row {row}: a reward is not finite")
        if not 1 <= int(k) < s.size:
            raise ValueError(f"row {row}: needs at least one chosen and one rejected response ({k} of {s.size} chosen)")
        if name is not None and name.lower() == "ties":
            try:
                groups.setdefault(name, []).append((s, int(k), parse_ties_id(row_id)))
            except ValueError as err:
                raise ValueError(f"row {row}: {err}") from err
        else:
            groups.setdefault(name, []).append(_best_of_k_credit(s, ties))

    result: dict[str, Any] = {}
    subset_results = {}
    for name in sorted(groups, key=str):
        if name is not None and name.lower() == "ties":
            result["ties_subset"] = _ties_subset_score(groups[name])
            subset_results[name] = {"accuracy": result["ties_subset"]["score"], "n": len(groups[name])}
        else:
            subset_results[name] = _accuracy_entry(np.asarray(groups[name]))
    if None in subset_results:
        sections, subset_results = {"all": subset_results[None]}, {}
    else:
        sections = dict(subset_results)
    known = all(name in rewardbench2_subsets() for name in subset_results) and bool(subset_results)
    return {
        "accuracy": float(np.mean([entry["accuracy"] for entry in sections.values()])),
        "n": len(scores),
        "subsets": subset_results,
        "sections": sections,
        "benchmark": "RewardBench 2" if known else None,
        "ties": ties,
        **result,
    }


def reward_normalizer(rewards: Sequence[float]) -> tuple[float, float]:
    """Mean and std of rewards, for z-scoring them (``(r - mean) / std``).

    Reward models are only defined up to a shift (Bradley-Terry sees
    differences), so comparing or thresholding rewards across models needs a
    common scale. The std is floored at 1e-6 so a constant reward model does
    not cause a division by zero.
    """
    values = _as_finite_array(rewards, "reward")
    if values.size == 0:
        raise ValueError("no rewards to normalize")
    return float(values.mean()), max(float(values.std()), 1e-6)


# --------------------------------------------------------------------------- #
# Best-of-N
# --------------------------------------------------------------------------- #


def expected_pass_at_n(k: int, c: int, n: int) -> float:
    """Chance that a uniformly random n-subset of k candidates (c correct) holds a correct one."""
    return 1.0 - math.comb(k - c, n) / math.comb(k, n)


def expected_random_at_n(k: int, c: int, n: int) -> float:
    """Expected accuracy of a uniformly random pick: c/k for every subset size n."""
    return c / k


def _subsets(k: int, n: int, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Index subsets of size n out of k, shape (draws, n).

    All C(k, n) subsets when there are at most ``n_draws`` of them (exact, and
    the full set once when n == k); otherwise ``n_draws`` uniform random ones.
    """
    if math.comb(k, n) <= n_draws:
        return np.array(list(itertools.combinations(range(k), n)), dtype=np.int64).reshape(-1, n)
    return np.argsort(rng.random((n_draws, k)), axis=1)[:, :n]


def _mean_tied_credit(keys: np.ndarray, credit: np.ndarray) -> np.ndarray:
    """Per row: mean of ``credit`` over the positions where ``keys`` reaches its row maximum.

    This is how ties are scored: if several candidates (or answers) share the
    top score, each is picked with equal probability, so the credit is split.
    """
    top = keys == keys.max(axis=1, keepdims=True)
    return (credit * top).sum(axis=1) / top.sum(axis=1)


def _validate_bon_row(
    line: int,
    scores: Sequence[float],
    labels: Sequence[int],
    answers: Sequence[str | None] | None,
    max_n: int,
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.size != y.size:
        raise ValueError(f"line {line}: candidates and labels differ in length ({s.size} vs {y.size})")
    if s.size == 0:
        raise ValueError(f"line {line}: no candidates")
    if not np.isfinite(s).all():
        raise ValueError(f"line {line}: a candidate's reward is not finite")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = y[~np.isin(y, (0.0, 1.0))][0]
        raise ValueError(f"line {line}: labels must be 0 or 1 (got {bad:g})")
    if answers is not None and len(answers) != s.size:
        raise ValueError(f"line {line}: candidates and answers differ in length ({s.size} vs {len(answers)})")
    if max_n > s.size:
        raise ValueError(f"line {line}: n={max_n} exceeds the {s.size} candidates")
    return s, y


def bon_metrics(
    scores: Sequence[Sequence[float]],
    labels: Sequence[Sequence[int]],
    ns: Sequence[int],
    *,
    answers: Sequence[Sequence[str | None]] | None = None,
    n_draws: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Best-of-N metrics, as ``icrm bon`` reports them.

    For every prompt and every n, the reward model picks the highest-reward
    candidate of a size-n subset of the prompt's candidates. Which n
    candidates are "the first n" is arbitrary, so instead of using one subset
    the metrics are averaged over subsets: all C(k, n) of them when there are
    at most ``n_draws`` (exact; n == k uses the full set once), else
    ``n_draws`` uniform random subsets drawn from a generator seeded by
    ``(seed, row, n)`` (reproducible, and independent of which other n are
    requested). Per subset:

    * ``accuracy``: the picked candidate is correct; if several candidates tie
      for the top reward, the credit is split evenly among them.
    * ``pass``: oracle, some candidate in the subset is correct (the ceiling).
    * ``random``: expected accuracy of a uniformly random pick, the subset's
      mean label (the floor a reward model must beat).
    * ``majority`` (only with ``answers``): the most frequent answer in the
      subset wins, ties split evenly; an answer is correct if any candidate of
      the prompt with that answer has label 1. Candidates whose answer is None
      do not vote; a subset with no votes scores 0.

    Each metric is averaged over subsets, then over prompts. Rows are reported
    as 1-based "line N" in errors, matching the input file. Returns
    ``{"n": [...], "accuracy": {"n": float}, "pass": {...}, "random": {...},
    "majority": {...} (with answers), "num_prompts": int}`` with string keys.
    """
    ns = sorted({int(n) for n in ns})
    if not ns:
        raise ValueError("no n given")
    if ns[0] < 1:
        raise ValueError(f"n must be at least 1 (got {ns[0]})")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1 (got {n_draws})")
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels have different numbers of rows ({len(scores)} vs {len(labels)})")
    if answers is not None and len(answers) != len(scores):
        raise ValueError(f"scores and answers have different numbers of rows ({len(scores)} vs {len(answers)})")
    if not scores:
        raise ValueError("no prompts to evaluate")

    metrics = ["accuracy", "pass", "random"] + (["majority"] if answers is not None else [])
    totals = {metric: {n: 0.0 for n in ns} for metric in metrics}
    for row, (row_scores, row_labels) in enumerate(zip(scores, labels)):
        row_answers = None if answers is None else list(answers[row])
        s, y = _validate_bon_row(row + 1, row_scores, row_labels, row_answers, ns[-1])
        if row_answers is not None:
            # Answer ids per candidate (-1 = no answer) and whether each answer is correct.
            distinct = sorted({a for a in row_answers if a is not None})
            answer_id = np.array([-1 if a is None else distinct.index(a) for a in row_answers])
            answer_correct = np.array([y[answer_id == i].max() for i in range(len(distinct))])
        for n in ns:
            idx = _subsets(s.size, n, n_draws, np.random.default_rng([seed, row, n]))
            sub_scores, sub_labels = s[idx], y[idx]
            totals["accuracy"][n] += _mean_tied_credit(sub_scores, sub_labels).mean()
            totals["pass"][n] += sub_labels.max(axis=1).mean()
            totals["random"][n] += sub_labels.mean()
            if row_answers is not None and distinct:  # with no votes at all, majority gets no credit
                votes = (answer_id[idx][:, :, None] == np.arange(len(distinct))).sum(axis=1)
                credit = _mean_tied_credit(votes, np.broadcast_to(answer_correct, votes.shape))
                totals["majority"][n] += np.where(votes.max(axis=1) > 0, credit, 0.0).mean()

    num_prompts = len(scores)
    result: dict[str, Any] = {"n": ns}
    for metric in metrics:
        result[metric] = {str(n): float(totals[metric][n] / num_prompts) for n in ns}
    result["num_prompts"] = num_prompts
    return result


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def plot_margin_histogram(
    chosen: Sequence[float], rejected: Sequence[float], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Histogram of reward margins (chosen - rejected); mass right of 0 is accuracy."""
    margins = _as_finite_array(chosen, "chosen") - _as_finite_array(rejected, "rejected")
    figure = new_figure()
    ax = figure.add_subplot()
    ax.hist(margins, bins=min(50, max(10, margins.size // 10)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    accuracy = float(np.mean(np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0)))) if margins.size else 0.0
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
