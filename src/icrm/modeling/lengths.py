"""How long a scored sequence may be, and the tokenized responses that fit.

Scoring (``score``, ``eval``, ``bon``), ``explain`` and ``serve`` all apply
one length policy: by default the model's position limit, prompts cut from
the left when a sequence is too long, and a response that alone does not
fit is an error (or a skipped row). One module, so the commands cannot drift.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..data import (
    DataError,
    LoadedData,
    PairExample,
    PointExample,
    Sequence,
    StepExample,
    encode,
    responses_of,
    tokenize_examples,
)
from ..outputs import progress, warn
from ..settings import SettingError

if TYPE_CHECKING:
    from .reward_model import RewardModel


def position_limit(config) -> int | None:
    """The longest sequence a model's position embeddings cover, where its config says."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_max_length(rm: RewardModel, max_length: int | None) -> int | None:
    """``--max-length`` of score, eval, bon, explain and serve; by default the model's position limit.

    The training ``--max-length`` bounds what a training step costs, not what
    the model can read, so scoring does not inherit it: a checkpoint trained
    on short sequences still scores a longer solution. Beyond the position
    limit a model reads garbage, so asking for more is an error. ``None``: the
    model records no position limit (a plain transformers classifier without
    one), and the caller decides (scoring: no limit; ``icrm serve``: its own).
    """
    limit = position_limit(rm.config)
    if max_length is None:
        return limit
    if max_length < 8:
        raise SettingError(None, "max_length", f"must be at least 8, got {max_length}")
    if limit is not None and max_length > limit:
        raise SettingError(None, "max_length", f"{max_length} exceeds the model's position limit of {limit} tokens")
    return max_length


@dataclass
class Fitted:
    """The examples whose responses fit the length limit, and their sequences in ``flatten_responses`` order."""

    examples: list
    kept: list[int]  # their indices in the loaded data
    sequences: list[Sequence]
    max_length: int | None
    truncated: int = 0
    dropped: int = 0

    def counts(self) -> dict:
        return {"max_length": self.max_length, "truncated": self.truncated, "dropped_over_length": self.dropped}

    @property
    def group_size(self) -> int:
        """Sequences per example where every example has as many (a pair's 2, best-of-N's N), else 1.

        Scoring keeps an example's sequences in one batch, where they can share their prompt.
        """
        sizes = {len(_response_fields(example)) for example in self.examples}
        return sizes.pop() if len(sizes) == 1 else 1


def _response_fields(example) -> list[tuple[str, str]]:
    """``(field, label)`` of each response, for error messages (the field names of the data format)."""
    if isinstance(example, PairExample):
        return [("chosen", ""), ("rejected", "")]
    if isinstance(example, PointExample):
        return [("response", "")]
    if isinstance(example, StepExample):
        return [("completions", "")]  # TRL's stepwise column
    return [("candidates", f"candidate {i}: ") for i in range(1, len(example.candidates) + 1)]


def _too_long(tokenizer, example, max_length: int) -> tuple[str, str]:
    """``(field, message)`` for an example whose response alone is longer than ``max_length``."""
    for (name, label), response in zip(_response_fields(example), responses_of(example)):
        seq = encode(tokenizer, example.prompt, response)
        if seq.length - seq.start > max_length:
            return name, f"{label}{seq.length - seq.start} response tokens do not fit in --max-length {max_length}"
    raise AssertionError("tokenize_examples dropped an example whose responses fit")


def fit_examples(tokenizer, loaded: LoadedData, max_length: int | None, skip_invalid: bool = False) -> Fitted:
    """Tokenize every response the way ``icrm train`` does (:func:`icrm.data.tokenize_examples`).

    A sequence over ``max_length`` loses prompt tokens from the left
    (counted as ``truncated``); a response that alone is longer cannot be
    scored without losing its last token, where the reward is read: that is
    an error naming the file, line and field, or with ``skip_invalid`` the
    row is skipped, counted (``dropped_over_length``) and reported.
    """
    examples = loaded.examples
    with progress("tokenizing", len(examples)) as advance:
        items, kept, stats = tokenize_examples(examples, tokenizer, max_length or sys.maxsize, "left", advance)
    over = sorted(set(range(len(examples))) - set(kept))
    if over:
        first = examples[over[0]]
        name, message = _too_long(tokenizer, first, max_length)
        if not skip_invalid:
            hint = " (raise --max-length, or skip such rows with --skip-invalid)"
            raise DataError(loaded.source, message + hint, first.line, name)
        warn(f"skipped {len(over)} row(s) of {loaded.source} with a response longer than --max-length {max_length} "
             f"tokens; the first: {DataError(loaded.source, message, first.line, name)}")
    sequences = [seq for item in items for seq in item]
    return Fitted([examples[i] for i in kept], kept, sequences, max_length, stats.truncated, len(over))
