"""Load, validate, template and tokenize preference data; collate batches.

Rows come from JSONL/JSON/Parquet/CSV files, a ``datasets.load_from_disk``
directory, or a hub dataset id. Every row is checked before anything is
trained or written, and a bad row raises :class:`DataError` naming the file,
the line (or row) and the field, which the CLI turns into a one-line message
and exit code 2.

Prompts are kept as chat-message lists and responses as the assistant's text.
Sequences are rendered with the tokenizer's chat template, exactly as a
transformers user would render ``[user, assistant]`` messages, so that the
scores icrm computes and the scores of the exported HF model agree.
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import UserError
from .steps import DEFAULT_SEPARATOR, join_steps, labels_from_first_error, step_char_ends, tokens_at_chars

Message = dict[str, str]


class DataError(UserError):
    """A problem with the user's input, located as precisely as possible."""

    def __init__(self, source: str, message: str, line: int | None = None, field: str | None = None):
        where = f"{source}:{line}" if line is not None else str(source)
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)
        self.source, self.line, self.field = source, line, field


# ---------------------------------------------------------------- reading rows


@dataclass
class Row:
    """One raw record and where it came from (1-based line or row number)."""

    line: int
    data: dict[str, Any]


def read_rows(source, split: str | None = None, name: str | None = None) -> list[Row]:
    """Read raw records from a file, a saved dataset directory, a hub id, or memory.

    In memory: a ``datasets.Dataset`` / ``IterableDataset`` (read through) or
    a list of dicts, named ``name`` in errors, rows numbered from 1.
    """
    if not isinstance(source, (str, Path)):
        return _read_in_memory(source, name or "dataset")
    path = Path(source)
    name = str(source)
    if path.is_dir():
        return _read_saved_dataset(path, split)
    if not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.endswith((".json", ".jsonl", ".csv", ".parquet", ".gz")):
            return _read_hub_dataset(name, split)
        raise DataError(name, "file not found")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind == ".jsonl":
            rows = _read_jsonl(path)
        elif kind == ".json":
            rows = _read_json(path)
        elif kind in (".parquet", ".csv"):
            rows = _read_table(path, kind)
        else:
            raise DataError(name, f"unknown file type {path.suffix!r} (expected .jsonl, .json, .parquet, .csv)")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise DataError(name, f"cannot read file ({err.__class__.__name__}: {err})") from err
    if not rows:
        raise DataError(name, "no rows (empty file)")
    return rows


def _open_text(path: Path):
    """Text of a (gzipped) file; a byte-order mark some editors write is skipped."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text.rstrip("\r\n"))  # with the newline, a cut-off row's error is at column 1 of the next line
            except json.JSONDecodeError as err:
                raise DataError(str(path), _invalid_json(err), number) from err
            if not isinstance(data, dict):
                raise DataError(str(path), "expected a JSON object per line", number)
            rows.append(Row(number, data))
    return rows


def _invalid_json(err: json.JSONDecodeError) -> str:
    """``invalid JSON (Expecting value at column 5)``; a message may end in "at" already ("… starting at")."""
    return f"invalid JSON ({err.msg.removesuffix(' at')} at column {err.colno})"


def _read_json(path: Path) -> list[Row]:
    with _open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(str(path), _invalid_json(err), err.lineno) from err
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(str(path), "expected a JSON list of objects (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise DataError(str(path), "expected a JSON list of objects")
    return [Row(i, item) for i, item in enumerate(data, start=1)]


def _read_table(path: Path, kind: str) -> list[Row]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if kind == ".parquet" else pd.read_csv(path, keep_default_na=False)
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(str(path), f"cannot read {kind[1:]} file ({err})") from err
    offset = 2 if kind == ".csv" else 1  # CSV line 1 is the header
    return [Row(i + offset, _plain(record)) for i, record in enumerate(frame.to_dict("records"))]


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays from pandas/arrow into plain Python values, and dates into ISO text.

    Plain means JSON-ready: ``icrm score`` writes every column back as read.
    """
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_saved_dataset(path: Path, split: str | None) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DataError(str(path), f"not a saved dataset directory ({err})") from err
    if isinstance(loaded, datasets.DatasetDict):
        split = split or ("train" if "train" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise DataError(str(path), f"no split {split!r} (have {', '.join(loaded)})")
        loaded = loaded[split]
    return [Row(i, _plain(record)) for i, record in enumerate(loaded, start=1)]


def _read_in_memory(dataset, name: str) -> list[Row]:
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise DataError(name, f"a DatasetDict; pass one split (e.g. dataset['train'], have {', '.join(dataset)})")
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset, list, tuple)):
        raise DataError(name, f"expected a datasets.Dataset or a list of dicts, got {type(dataset).__name__}")
    rows = []
    for number, record in enumerate(dataset, start=1):
        if not isinstance(record, dict):
            raise DataError(name, f"expected a dict per row, got {type(record).__name__}", number)
        rows.append(Row(number, _plain(record)))
    if not rows:
        raise DataError(name, "no rows (empty dataset)")
    return rows


def _read_hub_dataset(name: str, split: str | None) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except Exception as err:
        raise DataError(name, f"cannot load hub dataset ({err.__class__.__name__}: {err})") from err
    return [Row(i, _plain(record)) for i, record in enumerate(loaded, start=1)]


# ------------------------------------------------------------ normalized examples


@dataclass
class PairExample:
    prompt: list[Message]
    chosen: str
    rejected: str
    margin: float | None = None
    subset: str | None = None
    id: str | None = None
    line: int = 0


@dataclass
class PointExample:
    prompt: list[Message]
    response: str
    label: float | None  # None: an unlabelled row, which only scoring reads (``require_labels=False``)
    id: str | None = None
    line: int = 0


@dataclass
class BonExample:
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
    :func:`icrm.steps.labels_from_first_error`).
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


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_dialogue(text: str) -> list[Message] | None:
    """Split an Anthropic-HH style ``\\n\\nHuman: … \\n\\nAssistant: …`` string."""
    if not text.startswith("\n\nHuman:") and not text.startswith("Human:"):
        return None
    text = text if text.startswith("\n\n") else "\n\n" + text
    parts = _HH_TURN.split(text)[1:]
    messages = []
    for role, content in zip(parts[0::2], parts[1::2]):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    return messages


def messages_of(prompt: str | list[Message]) -> list[Message]:
    """A prompt as chat messages: a string is one user turn (what the API's ``prompt`` arguments accept)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def without_open_turn(messages: list[Message]) -> list[Message]:
    """The messages without a trailing empty assistant turn (an implicit prompt's "Assistant:" slot)."""
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"].strip():
        return messages[:-1]
    return messages


def as_messages(value: Any, source: str, line: int, name: str) -> list[Message]:
    """A data row's prompt field as validated messages (a string may hold an HH dialogue)."""
    if isinstance(value, str):
        return parse_hh_dialogue(value) or [{"role": "user", "content": value}]
    if isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(source, "expected a string or a list of {role, content} messages", line, name)


def response_text(value: Any, source: str, line: int, name: str) -> str:
    """The assistant text of a response given as a string or a message list."""
    if isinstance(value, list):
        messages = as_messages(value, source, line, name)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise DataError(source, "a message-list response must be one assistant message", line, name)
        value = messages[0]["content"]
    if not isinstance(value, str):
        raise DataError(source, f"expected text, got {type(value).__name__}", line, name)
    if not value.strip():
        raise DataError(source, "empty response", line, name)
    return value


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
    return [{"role": "user", "content": shared.strip()}], answers[0], answers[1]


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


@dataclass
class LoadedData:
    """Validated examples of one format, with a count of the rows skipped."""

    source: str
    format: str
    examples: list
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # each example's record as read, for outputs that echo it


def load_examples(
    source,
    *,
    expect: Iterable[str] | None = None,
    split: str | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    name: str | None = None,
    step_separator: str = DEFAULT_SEPARATOR,
    require_labels: bool = True,
) -> LoadedData:
    """Read and validate data; every row must be in one format.

    ``source`` is a path or hub id (see :func:`read_rows`), a
    ``datasets.Dataset``/``IterableDataset`` or a list of dicts (then errors
    call it ``name``). ``expect`` restricts the accepted formats (e.g.
    ``("pairwise",)`` for ``icrm eval``). With ``skip_invalid`` a bad row is
    counted and skipped instead of stopping the run. ``step_separator`` joins
    the steps of stepwise rows into their response. ``require_labels=False``
    accepts pointwise rows without ``label`` (see :func:`detect_format`).
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "dataset")
    if not step_separator:
        raise DataError(name, "the step separator must not be empty")
    rows = read_rows(source, split, name)
    if limit is not None:
        rows = rows[:limit]
    fmt = None
    examples, records, errors = [], [], []
    for row in rows:
        try:
            detected = detect_format(row, name, require_labels)
            kind = FORMAT_ALIASES.get(detected, detected)
            if fmt is None:
                if expect is not None and kind not in expect:
                    raise DataError(name, f"this command needs {' or '.join(expect)} data, got {kind}", row.line)
                fmt = kind
            elif kind != fmt:
                raise DataError(name, f"mixed formats in one file ({fmt} rows, then a {kind} row)", row.line)
            example = CONVERTERS[detected](row, name)
            if isinstance(example, StepExample):
                example.separator = step_separator
            examples.append(example)
            records.append(row.data)
        except DataError as err:
            if not skip_invalid:
                raise
            errors.append(str(err))
    if not examples:
        raise DataError(name, f"no valid rows ({len(errors)} skipped; first: {errors[0] if errors else '-'})")
    if errors:
        from ..outputs import warn

        warn(f"skipped {len(errors)} invalid row(s) of {name} (--skip-invalid); the first: {errors[0]}")
    return LoadedData(name, fmt, examples, skipped=len(errors), errors=errors, rows=records)


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


# ------------------------------------------------------------------ tokenizing


@dataclass
class Sequence:
    """A tokenized prompt+response; response tokens run from ``start`` to the end.

    ``step_ends`` (stepwise examples): the token index where each step's score is read.
    """

    input_ids: list[int]
    start: int
    step_ends: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizeStats:
    truncated: int = 0
    dropped: int = 0


def encode(tokenizer, prompt: list[Message], response: str, step_chars: list[int] | None = None) -> Sequence:
    """Render with the chat template and find where the response starts.

    The full conversation is tokenized in one piece, as a transformers user
    would, and the response is located by character offsets; tokenizing the
    prompt and the response separately could split the boundary differently.
    ``step_chars`` (exclusive character ends of steps in ``response``) asks
    for ``step_ends``: the token of each step's last character, except that
    the last step's score is read at the last token, where the outcome is.
    """
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prefix):
        raise ValueError("the chat template renders the prompt differently with and without a response")
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    start = next((i for i, (_, end) in enumerate(offsets) if end > len(prefix)), len(offsets))
    seq = Sequence(list(enc["input_ids"]), start)
    if step_chars is not None:
        at = full.find(response, len(prefix))
        if at < 0:
            raise ValueError("the chat template changes the response text, so its steps cannot be located")
        seq.step_ends = tokens_at_chars(offsets, [at + c for c in step_chars[:-1]]) + [seq.length - 1]
    return seq


def token_texts(tokenizer, prompt: list[Message], response: str, seq: Sequence, cut: int) -> list[str]:
    """The readable text of each response token of ``seq``.

    ``seq`` is :func:`encode`'s sequence less its first ``cut`` tokens (a
    prompt cut from the left; 0: uncut). Uses the fast tokenizer's character offsets into the rendered conversation,
    so the texts concatenate back to exactly the rendered response (a
    character split over several byte-level tokens goes to the first of them,
    the others get an empty string). Falls back to decoding token by token.
    """
    ids = seq.input_ids
    try:
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if list(enc["input_ids"])[cut:] == list(ids):
            offsets = offsets[cut:]
            prev_end = offsets[seq.start - 1][1] if seq.start > 0 else 0
            texts = []
            for begin, end in offsets[seq.start :]:
                begin = max(begin, prev_end)
                texts.append(full[begin:end] if end > begin else "")
                prev_end = max(prev_end, end)
            return texts
    except (NotImplementedError, KeyError, TypeError, ValueError):
        pass
    pieces = tokenizer.convert_ids_to_tokens(ids[seq.start :])
    return [tokenizer.convert_tokens_to_string([p]) for p in pieces]


def encode_steps(tokenizer, prompt: list[Message], steps: list[str], separator: str = DEFAULT_SEPARATOR) -> Sequence:
    """:func:`encode` of a chain of steps joined by ``separator``, with its ``step_ends``."""
    return encode(tokenizer, prompt, join_steps(steps, separator), step_char_ends(steps, separator))


def fit_length(seq: Sequence, max_length: int, truncation: str, stats: TokenizeStats) -> Sequence | None:
    """Cut an over-long sequence from the prompt's left, or drop it.

    A response that alone exceeds ``max_length`` is always dropped: cutting it
    would lose the final token, where the outcome reward is read.
    """
    if seq.length <= max_length:
        return seq
    response_len = seq.length - seq.start
    if truncation == "drop" or response_len > max_length:
        stats.dropped += 1
        return None
    stats.truncated += 1
    cut = seq.length - max_length
    return Sequence(seq.input_ids[cut:], seq.start - cut, [end - cut for end in seq.step_ends])


def cut_left(seq: Sequence, max_length: int, name: str) -> Sequence:
    """``seq`` with prompt tokens cut from the left to fit ``max_length``, for scoring one response.

    A response that alone is longer is a ``ValueError`` naming ``name``.
    """
    fitted = fit_length(seq, max_length, "left", TokenizeStats())
    if fitted is None:
        raise ValueError(f"{name}: {seq.length - seq.start} response tokens do not fit in max_length={max_length}")
    return fitted


def tokenize_examples(examples: list, tokenizer, max_length: int, truncation: str = "left", progress=None):
    """Tokenize pairwise or pointwise examples into lists of sequences.

    Returns ``(items, kept, stats)``: ``items[i]`` is the list of sequences of
    example ``kept[i]`` (chosen and rejected for a pair, one for a point).
    """
    if truncation not in ("left", "drop"):
        raise ValueError(f"truncation must be 'left' or 'drop', got {truncation!r}")
    stats = TokenizeStats()
    items, kept = [], []
    for index, ex in enumerate(examples):
        if isinstance(ex, StepExample):
            encoded = [encode_steps(tokenizer, ex.prompt, ex.steps, ex.separator)]
        else:
            encoded = [encode(tokenizer, ex.prompt, r) for r in responses_of(ex)]
        seqs = [fit_length(seq, max_length, truncation, stats) for seq in encoded]
        if progress is not None:
            progress()
        if any(s is None for s in seqs):
            continue
        items.append(seqs)
        kept.append(index)
    return items, kept, stats


# ------------------------------------------------------------------- batching


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, from the attention mask.

    Works for right and left padding and whatever ``pad_token_id`` is (it is
    often equal to EOS, which a pad-id search would mistake for padding).
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(-1)


class RewardCollator:
    """Pads a list of items into one batch: all first sequences, then all second.

    For pairs that puts every chosen row before every rejected row, so chosen
    and rejected go through the model in a single forward pass.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [seq for slot in range(len(items[0]["sequences"])) for seq in (it["sequences"][slot] for it in items)]
        width = max(s.length for s in seqs)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(seqs)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        response = torch.zeros((n, width), dtype=torch.bool)
        for row, seq in enumerate(seqs):
            input_ids[row, : seq.length] = torch.tensor(seq.input_ids)
            attention[row, : seq.length] = 1
            response[row, seq.start : seq.length] = True
        batch = {"input_ids": input_ids, "attention_mask": attention, "response_mask": response}
        if items[0].get("weights") is not None:
            weights = torch.zeros((n, width), dtype=torch.float32)
            flat = [w for slot in range(len(items[0]["weights"])) for w in (it["weights"][slot] for it in items)]
            for row, w in enumerate(flat):
                weights[row, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
            batch["gen_weights"] = weights
        if "margin" in items[0]:
            batch["margin"] = torch.tensor([it["margin"] for it in items], dtype=torch.float32)
        if "label" in items[0]:
            batch["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.float32)
        if "step_labels" in items[0]:
            batch.update(_step_batch(seqs, [it["step_labels"] for it in items]))
        return batch


def _step_batch(seqs: list[Sequence], labels: list[list[int]]) -> dict[str, torch.Tensor]:
    """``step_positions`` (token index of each step's score, −1 = no step) and ``step_labels``, ``[N, S]``."""
    width = max(len(row) for row in labels)
    positions = torch.full((len(seqs), width), -1, dtype=torch.long)
    targets = torch.zeros((len(seqs), width), dtype=torch.float32)
    for row, (seq, row_labels) in enumerate(zip(seqs, labels, strict=True)):
        positions[row, : len(seq.step_ends)] = torch.tensor(seq.step_ends, dtype=torch.long)
        targets[row, : len(row_labels)] = torch.tensor(row_labels, dtype=torch.float32)
    return {"step_positions": positions, "step_labels": targets}


class RewardDataset(torch.utils.data.Dataset):
    """Tokenized examples, with generator weights read lazily from the cache."""

    def __init__(self, examples: list, items: list[list[Sequence]], weights=None):
        self.examples, self.items, self.weights = examples, items, weights

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        seqs = self.items[index]
        item: dict[str, Any] = {"sequences": seqs, "length": max(s.length for s in seqs)}
        if self.weights is not None:
            base = index * len(seqs)
            item["weights"] = [self.weights[base + k] for k in range(len(seqs))]
        ex = self.examples[index]
        if isinstance(ex, PairExample):
            item["margin"] = ex.margin or 0.0
        else:
            item["label"] = ex.label
        if isinstance(ex, StepExample):
            item["step_labels"] = ex.labels
        return item

    @property
    def lengths(self) -> list[int]:
        return [max(s.length for s in seqs) for seqs in self.items]

    def all_sequences(self) -> list[Sequence]:
        return [seq for seqs in self.items for seq in seqs]
