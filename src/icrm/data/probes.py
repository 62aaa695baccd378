"""Real chat preference pairs for a small model: held-out instructions, rows that fit, and two robustness probes.

A reward model can score well on held-out pairs by preferring whatever judges
happened to prefer on average — the longer answer, the more courteous one. Two
probes on the same held-out pairs show whether it does: the pairs whose chosen
response is the *shorter* one (a length-follower gets them wrong), and a
verbosity attack that appends the same polite, content-free paragraph to every
rejected response (a model that rewards padding then prefers the rejected one).
Rows are plain dicts with a ``prompt`` (a string or chat messages) and string ``chosen`` and ``rejected``.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from .chat import first_user_turn, messages_of
from .tokenize import encode

VERBOSITY_PADDING = (
    "\n\nI hope this helps! Please let me know if you have any other questions or if there is anything else I can "
    "do for you. It is always a pleasure to assist, and I am happy to provide further details, clarifications or "
    "examples whenever you need them. Thank you for your patience, and have a wonderful day!"
)


def split_by_instruction(rows: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, test)`` with no instruction on both sides: a ``test_fraction`` of the instructions is held out.

    An instruction is a prompt's first user turn, so dialogues that open with
    the same question stay on one side.
    """
    keys = [first_user_turn(row["prompt"]) for row in rows]
    prompts = sorted(set(keys))
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: round(len(prompts) * test_fraction)])
    return [r for r, k in zip(rows, keys) if k not in held], [r for r, k in zip(rows, keys) if k in held]


def fitting(rows: Iterable[dict], tokenizer, max_length: int) -> Iterator[dict]:
    """The rows whose prompt with either response fits ``max_length`` tokens through the chat template, uncut."""
    for row in rows:
        prompt = messages_of(row["prompt"])
        if all(encode(tokenizer, prompt, row[side]).length <= max_length for side in ("chosen", "rejected")):
            yield row


def chosen_shorter(rows: list[dict]) -> list[dict]:
    """The length-reversed probe: pairs whose chosen response has fewer characters than the rejected one."""
    return [row for row in rows if len(row["chosen"]) < len(row["rejected"])]


def verbosity_attack(rows: list[dict]) -> list[dict]:
    """The verbosity probe: every rejected response with :data:`VERBOSITY_PADDING` appended."""
    return [{**row, "rejected": row["rejected"] + VERBOSITY_PADDING} for row in rows]
