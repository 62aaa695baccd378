"""DPO pairs from scored candidates: the best and the worst of each prompt, when they say something.

The selection rules are pure functions of lists of rewards, so they can be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import Message
from .prompts import prompt_key


@dataclass(frozen=True)
class Pick:
    """The chosen/rejected candidate indices of one prompt, or why there is no pair.

    ``reason`` is ``ok``, ``identical`` (only one distinct text), ``tie``
    (best and worst rewards equal) or ``gap`` (reward gap below the minimum).
    """

    reason: str
    chosen: int | None = None
    rejected: int | None = None


def pick_pair(candidates: list[str], rewards: list[float], min_gap: float = 0.0) -> Pick:
    """Best and worst candidate by reward, if they make an informative preference pair.

    Duplicate texts count once (the first one's index and reward is used), so
    identical samples are never a pair even when batching gives them rewards
    that differ in the last bit. Ties among the best (or worst) go to the
    earliest candidate. A pair whose reward gap is below ``min_gap`` is left
    out: small gaps are mostly reward-model noise, and DPO on noise teaches
    the policy nothing true.
    """
    if len(candidates) != len(rewards):
        raise ValueError(f"{len(candidates)} candidates but {len(rewards)} rewards")
    first: dict[str, int] = {}
    for index, text in enumerate(candidates):
        first.setdefault(text, index)
    distinct = list(first.values())
    if len(distinct) < 2:
        return Pick("identical")
    best = max(distinct, key=lambda i: (rewards[i], -i))
    worst = min(distinct, key=lambda i: (rewards[i], i))
    gap = rewards[best] - rewards[worst]
    if gap == 0:
        return Pick("tie")
    if gap < min_gap:
        return Pick("gap")
    return Pick("ok", best, worst)


def conversational_pair(prompt: list[Message], chosen: str, rejected: str) -> dict:
    """One preference pair as a TRL conversational row: ``chosen``/``rejected`` one assistant message each.

    TRL applies the chat template only to conversational rows, and the policy
    was sampled through its chat template.
    """
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def make_dpo_pairs(
    prompts: list[list[Message]],
    candidates: list[list[str]],
    rewards: list[list[float]],
    min_gap: float = 0.0,
    exclude: set[str] | frozenset[str] = frozenset(),
    ids: list[str | None] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """DPO rows in TRL's conversational format, and counts of what was left out and why.

    Prompts whose :func:`~icrm.policy.prompt_key` is in ``exclude`` are
    dropped first (``overlap``). Rows are :func:`conversational_pair` rows;
    ``chosen_reward``/``rejected_reward`` record the judge's scores, and icrm
    can also read these rows as pairwise data.
    """
    counts = {"prompts": len(prompts), "pairs": 0, "overlap": 0, "identical": 0, "tie": 0, "gap": 0}
    rows = []
    for index, (prompt, texts, scores) in enumerate(zip(prompts, candidates, rewards, strict=True)):
        if prompt_key(prompt) in exclude:
            counts["overlap"] += 1
            continue
        pick = pick_pair(texts, scores, min_gap)
        if pick.reason != "ok":
            counts[pick.reason] += 1
            continue
        row = {
            **conversational_pair(prompt, texts[pick.chosen], texts[pick.rejected]),
            "chosen_reward": scores[pick.chosen],
            "rejected_reward": scores[pick.rejected],
        }
        if ids is not None and ids[index] is not None:
            row["id"] = ids[index]
        rows.append(row)
    counts["pairs"] = len(rows)
    return rows, counts
