"""Best-of-N metrics, as ``icrm bon`` reports them: accuracy@n, pass@n, random@n and majority@n.

A pure function of the candidates' rewards and labels scored elsewhere. Which
n of a prompt's k candidates are "the first n" is arbitrary, so every metric
is averaged over size-n subsets: all of them when there are few, else a
seeded random sample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


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
