"""Judging policies: the true reward of the synthetic tasks, and paired win/tie/lose rates.

The true reward is the way to see whether DPO on a reward model's pairs
improved what the data rewards, not only what the reward model likes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..data import Message
from ..errors import UserError

TRUE_REWARD = "true-reward"  # the judge name that picks the synthetic task's true reward


def synthetic_task_of(prompts_source: str) -> str | None:
    """The task named in ``task.json`` beside a file written by ``icrm data synth``, if any."""
    info = Path(prompts_source).parent / "task.json"
    try:
        return json.loads(info.read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def true_reward_judge(task: str) -> Callable[[list[Message], str], float]:
    """A judge that knows the answer: ``#good - #bad`` words, or 1/0 correctness for arithmetic and addition."""
    from ..data import CALCULATION_TASKS, TASKS, arithmetic_is_correct, true_reward

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task in CALCULATION_TASKS:
        return lambda prompt, response: float(arithmetic_is_correct(prompt[-1]["content"], response))
    return lambda prompt, response: true_reward(task, response)


def outcome_rates(rewards: list[float], baseline: list[float]) -> dict[str, float]:
    """Win/tie/lose shares of paired rewards (sample j of a prompt vs the baseline's sample j).

    Pairing the j-th samples compares two independent draws per prompt, the
    same as one-sample-per-prompt win rates, with N times the data.
    """
    if len(rewards) != len(baseline) or not rewards:
        raise ValueError("win rates need the same, non-zero number of rewards on both sides")
    n = len(rewards)
    wins = sum(a > b for a, b in zip(rewards, baseline))
    ties = sum(a == b for a, b in zip(rewards, baseline))
    return {"win_rate": wins / n, "tie_rate": ties / n, "lose_rate": (n - wins - ties) / n}
