"""The normalized examples every format loads into, and the responses each one holds.

Whatever the columns of a row (docs/design.md#data-formats), training,
scoring and evaluation see one of four shapes: a pair, a labelled point, a
best-of-N prompt with its candidates, or a chain of labelled steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .chat import Message
from .steps import DEFAULT_SEPARATOR, join_steps


@dataclass
class PairExample:
    """A prompt with a preferred (``chosen``) and a dispreferred (``rejected``) response."""

    prompt: list[Message]
    chosen: str
    rejected: str
    margin: float | None = None
    subset: str | None = None
    id: str | None = None
    line: int = 0


@dataclass
class PointExample:
    """A prompt with one response and its 0/1 label."""

    prompt: list[Message]
    response: str
    label: float | None  # None: an unlabelled row, which only scoring reads (``require_labels=False``)
    id: str | None = None
    line: int = 0


@dataclass
class BonExample:
    """A prompt with N candidate responses, their 0/1 labels and the reference answer, where known."""

    prompt: list[Message]
    candidates: list[str]
    labels: list[int] | None = None
    answer: str | None = None
    id: str | None = None
    line: int = 0
    subset: str | None = None


@dataclass
class StepExample:
    """A chain of steps with a label per step (TRL's stepwise supervision).

    The response is the steps joined by ``separator``; the outcome label is
    the last step's, which is what outcome methods (grm, icrm on pointwise
    data) train on. ProcessBench rows load as this too (see
    :func:`icrm.data.labels_from_first_error`).
    """

    prompt: list[Message]
    steps: list[str]
    labels: list[int]
    separator: str = DEFAULT_SEPARATOR
    id: str | None = None
    line: int = 0

    @property
    def response(self) -> str:
        return join_steps(self.steps, self.separator)

    @property
    def label(self) -> int:
        return self.labels[-1]


def responses_of(example) -> list[str]:
    """The responses of an example: chosen and rejected, the response, or the candidates."""
    if isinstance(example, PairExample):
        return [example.chosen, example.rejected]
    if isinstance(example, (PointExample, StepExample)):
        return [example.response]
    return list(example.candidates)


def flatten_responses(examples: Iterable) -> tuple[list, list[str]]:
    """Parallel lists of (prompt, response), one entry per response of every example."""
    prompts, responses = [], []
    for ex in examples:
        texts = responses_of(ex)
        prompts.extend([ex.prompt] * len(texts))
        responses.extend(texts)
    return prompts, responses


def example_texts(examples: Iterable) -> Iterable[str]:
    """All prompt and response text, e.g. to train a tokenizer on."""
    for ex in examples:
        for message in ex.prompt:
            yield message["content"]
        yield from responses_of(ex)
