"""RewardBench 1 and 2 as their authors score them: the official tables and the scoring rules.

The section map and subset weights of RewardBench and the subset list of
RewardBench 2 are data, in ``icrm/resources/rewardbench_sections.json``
(copied from the official ``rewardbench/constants.py``). RewardBench's
pairwise accuracy pools its subsets into sections here
(:func:`rewardbench_section_scores`, used by
:func:`~icrm.evaluation.pairwise_metrics`); RewardBench 2 rows, one prompt's
chosen responses and then its rejected ones, are scored by
:func:`rewardbench2_metrics`, with the Ties subset's own formula. Both
benchmarks share the rule for a tie at the top (:data:`TIES`). Everything is a
pure function of rewards scored elsewhere, so it can be checked against
hand-computed values; the expected numbers follow github.com/allenai/reward-bench.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np


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


def subset_to_section() -> dict[str, str]:
    """RewardBench subset name -> its section."""
    return {subset: section for section, subsets in _load_sections().items() for subset in subsets}


def rewardbench_section_scores(subsets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """RewardBench's sections (``{name: {accuracy, n}}``) from its subsets' (same shape), as its authors pool them.

    A section's accuracy is the average of its subsets' accuracies weighted by
    the official ``EXAMPLE_COUNTS`` (:func:`rewardbench_example_counts`);
    sections with no subset present are left out rather than scored 0.
    """
    counts = rewardbench_example_counts()
    sections = {}
    for section, members in _load_sections().items():
        present = [s for s in members if s in subsets]
        if present:
            accuracy = np.average([subsets[s]["accuracy"] for s in present], weights=[counts[s] for s in present])
            sections[section] = {"accuracy": float(accuracy), "n": sum(subsets[s]["n"] for s in present)}
    return sections


# How a tie at the top is credited. "half": the credit is split among the tied
# responses (a pair's tie scores 1/2, a k-way tie for best-of-N scores 1/k), so
# a reward model that scores everything the same gets the chance level; this is
# RewardBench 2's official rule. "loss": a tie earns nothing, as RewardBench 1's
# official script (``1 if chosen > rejected else 0``) counts it.
TIES = ("half", "loss")


def check_ties(ties: str) -> None:
    """Raise unless ``ties`` is one of :data:`TIES`."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)} (got {ties!r})")


def reject_mixed_subsets(names: Sequence[str | None], known: set[str], benchmark: str) -> None:
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


def accuracy_entry(credit: np.ndarray) -> dict[str, Any]:
    """``{accuracy, n}`` of a subset or section: the mean credit of its rows and their count."""
    return {"accuracy": float(credit.mean()), "n": int(credit.size)}


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
    check_ties(ties)
    if not scores:
        raise ValueError("no rows to evaluate")
    names: list[str | None] = [None] * len(scores) if subsets is None else list(subsets)
    row_ids: list[str | None] = [None] * len(scores) if ids is None else list(ids)
    if not len(num_correct) == len(names) == len(row_ids) == len(scores):
        raise ValueError(
            f"scores, num_correct, subsets and ids differ in length "
            f"({len(scores)}, {len(num_correct)}, {len(names)}, {len(row_ids)})"
        )
    reject_mixed_subsets(names, set(rewardbench2_subsets()), "RewardBench 2")
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
            subset_results[name] = accuracy_entry(np.asarray(groups[name]))
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
