"""Step boundaries: a chain of steps as one response, where each step ends in its text and tokens, and
the step labels of a chain annotated by its first wrong step.

A chain of steps is one response: the steps joined by a separator (TRL's
stepwise-supervision default ``"\\n"``), with no trailing separator. A step's
score is the prefix reward read at the last token of its own text; the last
step's score is read where the outcome reward is (the last real token, e.g.
the end-of-turn token that closes the answer), so a reward model's outcome
reward *is* its last step's score, and a process RM's training target there
is the outcome.

Everything here is a pure function of strings and character offsets, with no
numpy, so the CLI can read the default separator without loading it. The
metrics on step scores and their aggregation are :mod:`icrm.evaluation`'s.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

DEFAULT_SEPARATOR = "\n"


def join_steps(steps: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> str:
    """The response a chain of steps makes: the steps with the separator between them."""
    return separator.join(steps)


def split_steps(text: str, separator: str = DEFAULT_SEPARATOR) -> list[str]:
    """Split a response into steps at ``separator`` so that joining them gives ``text`` back.

    An empty piece (a doubled or trailing separator) is glued onto the step
    before it, and leading empty pieces onto the first non-empty step, so
    every step has a last character to read its score at.
    """
    if not separator:
        raise ValueError("the step separator must not be empty")
    steps: list[str] = []
    pending = None  # leading empty pieces, waiting for the first real step
    for piece in text.split(separator):
        if steps and not piece:
            steps[-1] += separator
        elif not steps and not piece:
            pending = "" if pending is None else pending + separator
        elif not steps:
            steps.append(piece if pending is None else pending + separator + piece)
        else:
            steps.append(piece)
    if not steps:
        raise ValueError("the response has no step text")
    return steps


def step_char_ends(steps: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> list[int]:
    """Exclusive character end of each step's own text inside the joined response."""
    if not steps:
        raise ValueError("a chain needs at least one step")
    ends, at = [], 0
    for k, step in enumerate(steps):
        if not step:
            raise ValueError(f"step {k} is empty")
        at += len(step)
        ends.append(at)
        at += len(separator)
    return ends


def tokens_at_chars(offsets: Sequence[tuple[int, int]], char_ends: Sequence[int]) -> list[int]:
    """Index of the token holding the character just before each exclusive ``char_end``.

    ``offsets`` are a fast tokenizer's ``(start, end)`` character spans. If a
    step's last character shares a token with what follows (a tokenizer that
    merges ``"5\\n"``), that token is the step's: a score cannot be read between
    two characters of one token, and this one has seen the whole step. If the
    character is split over several tokens (bytes of one character), the last
    of them is taken, the first point where the character is complete.
    """
    starts = [start for start, _ in offsets]
    positions = []
    for end in char_ends:
        index = bisect_right(starts, end - 1) - 1
        if index < 0 or offsets[index][1] < end:
            raise ValueError(f"no token holds the character at offset {end - 1}")
        positions.append(index)
    return positions


def labels_from_first_error(n_steps: int, first_wrong: int) -> list[int]:
    """Step labels of a ProcessBench row: right before the first wrong step, wrong from it on.

    ProcessBench annotates only the first error; a prefix that contains a
    wrong step is a wrong prefix, which is what a prefix reward scores.
    """
    if not -1 <= first_wrong < n_steps:
        raise ValueError(f"the first wrong step must be -1 or in 0..{n_steps - 1}, got {first_wrong}")
    cut = n_steps if first_wrong < 0 else first_wrong
    return [1] * cut + [0] * (n_steps - cut)
