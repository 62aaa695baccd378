"""A raw row to a validated example: which format the row is in, and its conversion.

Every field is checked here, before anything is trained or written, and a bad
value raises :class:`~icrm.data.DataError` naming the row and the field.
TRL's layouts are accepted as they come: implicit prompts (the shared start
of ``chosen`` and ``rejected``), prompt-completion rows, stepwise supervision,
and RewardBench 2's lists of chosen and rejected responses.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from .chat import Message, as_messages, messages_of, parse_hh_dialogue, response_text
from .examples import BonExample, PairExample, PointExample, StepExample
from .readers import DataError, Row
from .steps import labels_from_first_error

FORMAT_FIELDS = {
    "pairwise": ("chosen", "rejected"),
    "pointwise": ("response", "label"),
    "bon": ("candidates",),
    "stepwise": ("completions", "labels"),
    "processbench": ("problem", "steps", "label"),
}
FORMAT_ALIASES = {"processbench": "stepwise"}  # ProcessBench rows are stepwise examples
TOKENIZED_COLUMN = re.compile(r".*input_ids.*|(prompt|chosen|rejected|completion|response)_ids")  # TRL's tokenized rows


def _is_completion_list(value: Any) -> bool:
    """RewardBench 2 style: a list of response texts (a message list holds dicts)."""
    return isinstance(value, list) and not any(isinstance(item, dict) for item in value)


def detect_format(row: Row, source: str, require_labels: bool = True) -> str:
    """Which format (docs/design.md#format-detection) a row is in (TRL's ``completion`` counts as ``response``).

    ``chosen``/``rejected`` given as lists of responses (RewardBench 2 rows)
    are best-of-N rows: the chosen responses are its correct candidates.
    Without ``require_labels`` a response with no ``label`` is a pointwise
    row too (scoring needs no label; TRL's prompt-completion rows score as is).
    """
    if "candidates" not in row.data and any(_is_completion_list(row.data.get(k)) for k in ("chosen", "rejected")):
        return "bon"
    columns = set(row.data) | ({"response"} if "completion" in row.data else set())
    for name, fields in FORMAT_FIELDS.items():
        if all(f in columns for f in fields):
            return name
    if not require_labels and "response" in columns:
        return "pointwise"
    present = ", ".join(sorted(row.data)) or "none"
    if any(TOKENIZED_COLUMN.fullmatch(str(name)) for name in row.data):
        raise DataError(source, f"pre-tokenized data is not accepted (row has {present}): pass the text columns "
                        "(prompt with chosen/rejected, response/label, candidates or completions/labels); icrm "
                        "tokenizes them with the model's chat template", row.line)
    missing = (
        "chosen/rejected (pairwise), response/label (pointwise), candidates (best-of-N) "
        "or completions/labels (stepwise)"
    )
    closest = max(FORMAT_FIELDS.values(), key=lambda fields: sum(f in row.data for f in fields))
    if any(f in row.data for f in closest):
        absent = next(f for f in closest if f not in row.data)
        raise DataError(source, f"missing column (row has {present})", row.line, absent)
    raise DataError(source, f"no known columns: need {missing}; row has {present}", row.line)


def _split_implicit_prompt(row: Row, source: str) -> tuple[list[Message], str, str]:
    """TRL-style implicit prompt: chosen/rejected are whole conversations; their
    shared leading turns are the prompt and the rest is the answer.

    The answer may be several assistant turns (HH has a few rows where a stray
    "Human:" inside a turn splits it); they are joined. An empty final turn is
    a real answer here (in HH, saying nothing is sometimes the preferred
    reply), unlike an empty ``chosen``/``rejected`` column.
    """
    chosen, rejected = row.data["chosen"], row.data["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str) and parse_hh_dialogue(chosen) is None:
        return _split_shared_text(chosen, rejected, source, row.line)
    conv_c = as_messages(chosen, source, row.line, "chosen")
    conv_r = as_messages(rejected, source, row.line, "rejected")
    shared = 0
    while shared < min(len(conv_c), len(conv_r)) and conv_c[shared] == conv_r[shared]:
        shared += 1
    while shared > 0 and conv_c[shared - 1]["role"] == "assistant":
        shared -= 1  # the answer starts after the last shared user turn
    if shared == 0:
        raise DataError(source, "chosen and rejected share no prompt turn (implicit prompt)", row.line, "prompt")
    answers = []
    for name, conv in (("chosen", conv_c), ("rejected", conv_r)):
        tail = conv[shared:]
        if not tail or any(m["role"] != "assistant" for m in tail):
            raise DataError(source, "after the shared prompt, only assistant turns may follow", row.line, name)
        answers.append("\n\n".join(m["content"] for m in tail))
    return conv_c[:shared], answers[0], answers[1]


def _split_shared_text(chosen: str, rejected: str, source: str, line: int) -> tuple[list[Message], str, str]:
    """TRL's standard implicit prompt: the shared leading text is the prompt.

    The cut moves back to a word boundary, so "The answer is 4" against
    "The answer is 45" gives the prompt "The answer is", not "The answer is 4".
    """
    shared = os.path.commonprefix([chosen, rejected])
    rests = (chosen[len(shared):], rejected[len(shared):])
    if not (shared[-1:].isspace() or all(rest[:1].isspace() for rest in rests)):
        boundary = re.search(r"\s\S*$", shared)
        shared = shared[: boundary.start() if boundary else 0]
    if not shared.strip():
        raise DataError(source, "no prompt column, and chosen and rejected share no leading text", line, "prompt")
    answers = [response_text(text[len(shared):].strip(), source, line, name)
               for text, name in ((chosen, "chosen"), (rejected, "rejected"))]
    return messages_of(shared.strip()), answers[0], answers[1]


def _optional_float(row: Row, source: str, name: str) -> float | None:
    value = row.data.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(source, f"expected a number, got {type(value).__name__}", row.line, name)
    return float(value)


def _optional_str(row: Row, name: str) -> str | None:
    value = row.data.get(name)
    return None if value is None else str(value)


def _label(value: Any, source: str, line: int, name: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return int(value.strip().lower() in ("1", "true"))
    raise DataError(source, f"label must be 0/1 or true/false, got {value!r}", line, name)


def to_pair(row: Row, source: str) -> PairExample:
    """A pairwise row: ``prompt``, ``chosen``, ``rejected`` (or an implicit prompt), optional ``margin``."""
    if "prompt" in row.data and row.data["prompt"] is not None:
        prompt = as_messages(row.data["prompt"], source, row.line, "prompt")
        chosen, rejected = row.data["chosen"], row.data["rejected"]
        if isinstance(chosen, str) and isinstance(rejected, str) and prompt and prompt[-1]["role"] == "assistant":
            prompt = prompt[:-1]  # HH prompt strings end with an empty "Assistant:" turn
        chosen = response_text(chosen, source, row.line, "chosen")
        rejected = response_text(rejected, source, row.line, "rejected")
    else:
        prompt, chosen, rejected = _split_implicit_prompt(row, source)
    if chosen == rejected:
        raise DataError(source, "chosen and rejected are identical", row.line, "rejected")
    return PairExample(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=_optional_float(row, source, "margin"),
        subset=_optional_str(row, "subset"),
        id=_optional_str(row, "id"),
        line=row.line,
    )


def to_point(row: Row, source: str) -> PointExample:
    """A pointwise row: ``prompt``, ``response`` (or TRL's ``completion``) and ``label`` (absent: unlabelled)."""
    prompt = as_messages(row.data.get("prompt", ""), source, row.line, "prompt")
    column = "response" if "response" in row.data else "completion"  # TRL's unpaired preference
    return PointExample(
        prompt=prompt,
        response=response_text(row.data[column], source, row.line, column),
        label=_label(row.data["label"], source, row.line, "label") if "label" in row.data else None,
        id=_optional_str(row, "id"),
        line=row.line,
    )


def _completion_list(row: Row, source: str, name: str) -> list[str]:
    value = row.data.get(name)
    if not isinstance(value, list) or not value:
        raise DataError(source, "expected a non-empty list of responses", row.line, name)
    return [response_text(v, source, row.line, name) for v in value]


def _check_count(row: Row, source: str, name: str, expected: int) -> None:
    """RewardBench 2's count columns must agree with the lists they describe."""
    value = row.data.get(name)
    if value is not None and value != expected:
        raise DataError(source, f"is {value!r} but the row has {expected}", row.line, name)


def _rewardbench2_candidates(row: Row, source: str) -> tuple[list[str], list[int]]:
    """A RewardBench 2 row's ``chosen`` + ``rejected`` lists as labelled candidates, chosen first."""
    chosen = _completion_list(row, source, "chosen")
    rejected = _completion_list(row, source, "rejected")
    _check_count(row, source, "num_correct", len(chosen))
    _check_count(row, source, "num_incorrect", len(rejected))
    _check_count(row, source, "total_completions", len(chosen) + len(rejected))
    return chosen + rejected, [1] * len(chosen) + [0] * len(rejected)


def to_bon(row: Row, source: str) -> BonExample:
    """A best-of-N row: ``candidates`` with optional ``labels`` and ``answer``, or RewardBench 2's lists."""
    prompt = as_messages(row.data.get("prompt", ""), source, row.line, "prompt")
    if "candidates" not in row.data:
        texts, labels = _rewardbench2_candidates(row, source)
        return BonExample(prompt, texts, labels, None, _optional_str(row, "id"), row.line, _optional_str(row, "subset"))
    candidates = row.data["candidates"]
    if not isinstance(candidates, list) or not candidates:
        raise DataError(source, "expected a non-empty list of responses", row.line, "candidates")
    texts = [response_text(c, source, row.line, "candidates") for c in candidates]
    labels = row.data.get("labels")
    if labels is not None:
        if not isinstance(labels, list):
            raise DataError(source, "expected a list of 0/1 labels", row.line, "labels")
        if len(labels) != len(texts):
            raise DataError(
                source, f"{len(labels)} labels for {len(texts)} candidates (lengths must match)", row.line, "labels"
            )
        labels = [_label(v, source, row.line, "labels") for v in labels]
    answer, row_id, subset = (_optional_str(row, name) for name in ("answer", "id", "subset"))
    return BonExample(prompt, texts, labels, answer, row_id, row.line, subset)


def _step_texts(row: Row, source: str, name: str) -> list[str]:
    steps = row.data[name]
    if not isinstance(steps, list) or not steps:
        raise DataError(source, "expected a non-empty list of step texts", row.line, name)
    for k, step in enumerate(steps):
        if not isinstance(step, str) or not step:
            raise DataError(source, f"step {k} is {'empty' if step == '' else type(step).__name__}, expected text",
                            row.line, name)
    return steps


def to_step(row: Row, source: str) -> StepExample:
    """TRL stepwise supervision: ``prompt``, ``completions`` (steps), ``labels`` (a bool per step)."""
    prompt = as_messages(row.data.get("prompt", ""), source, row.line, "prompt")
    steps = _step_texts(row, source, "completions")
    labels = row.data["labels"]
    if not isinstance(labels, list) or len(labels) != len(steps):
        count = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise DataError(source, f"expected one label per step ({len(steps)} steps, labels: {count})", row.line,
                        "labels")
    labels = [_label(v, source, row.line, "labels") for v in labels]
    return StepExample(prompt, steps, labels, id=_optional_str(row, "id"), line=row.line)


def to_processbench(row: Row, source: str) -> StepExample:
    """ProcessBench: ``problem``, ``steps``, ``label`` = index of the first wrong step or −1."""
    prompt = as_messages(row.data["problem"], source, row.line, "problem")
    steps = _step_texts(row, source, "steps")
    first = row.data["label"]
    if isinstance(first, bool) or not isinstance(first, int) or not -1 <= first < len(steps):
        raise DataError(source, f"expected -1 or a step index below {len(steps)}, got {first!r}", row.line, "label")
    return StepExample(prompt, steps, labels_from_first_error(len(steps), first), id=_optional_str(row, "id"),
                       line=row.line)


CONVERTERS = {
    "pairwise": to_pair,
    "pointwise": to_point,
    "bon": to_bon,
    "stepwise": to_step,
    "processbench": to_processbench,
}
