"""Turn public datasets into icrm's formats (docs/design.md#data-formats)."""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..outputs import check_output, staged_directory, write_jsonl
from .answers import extract_answer
from .core import DataError, read_rows

GSM8K_SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k_best_of_n(
    source: str | Path, output: str | Path, seed: int = 0, test_fraction: float = 0.5, overwrite: bool = False
) -> dict:
    """GSM8K example model solutions → best-of-N and pointwise files, split by question.

    Each question has four graded solutions (GPT-3 6B/175B, fine-tuned and
    verifier-selected). Questions are shuffled with ``seed`` and split, so no
    question is in both halves. Writes ``bon_{train,test}.jsonl`` (prompt,
    candidates, labels, answer) and ``pointwise_{train,test}.jsonl`` (one row
    per solution) into ``output`` (see :func:`icrm.outputs.check_output` for ``overwrite``).
    """
    check_output(output, "data gsm8k-bon", overwrite)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(str(source), f"test fraction must be in (0, 1), got {test_fraction}")
    rows = []
    for row in read_rows(source):
        question, truth = row.data.get("question"), row.data.get("ground_truth")
        if not isinstance(question, str) or not isinstance(truth, str):
            raise DataError(str(source), "expected `question` and `ground_truth` text", row.line, "question")
        candidates, labels = [], []
        for solver in GSM8K_SOLVERS:
            entry = row.data.get(solver)
            if not isinstance(entry, dict) or "solution" not in entry or "is_correct" not in entry:
                raise DataError(str(source), "expected {solution, is_correct}", row.line, solver)
            candidates.append(entry["solution"])
            labels.append(int(bool(entry["is_correct"])))
        rows.append({"prompt": question, "candidates": candidates, "labels": labels, "answer": extract_answer(truth)})
    random.Random(seed).shuffle(rows)
    cut = int(round(len(rows) * (1.0 - test_fraction)))
    halves = {"train": rows[:cut], "test": rows[cut:]}
    with staged_directory(output, "data gsm8k-bon", overwrite) as staging:
        for name, part in halves.items():
            write_jsonl(staging / f"bon_{name}.jsonl", part)
            points = [
                {"prompt": r["prompt"], "response": c, "label": y}
                for r in part
                for c, y in zip(r["candidates"], r["labels"])
            ]
            write_jsonl(staging / f"pointwise_{name}.jsonl", points)
    return {name: len(part) for name, part in halves.items()}


def gsm8k_sft(source: str | Path, output: str | Path, overwrite: bool = False) -> int:
    """GSM8K ``question``/``answer`` rows → pointwise rows (label 1) for ``icrm sft``.

    The ``<<…>>`` calculator annotations are removed; the final ``#### N`` is kept.
    """
    check_output(output, None, overwrite)
    rows = []
    for row in read_rows(source):
        question, answer = row.data.get("question"), row.data.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise DataError(str(source), "expected `question` and `answer` text", row.line, "question")
        rows.append({"prompt": question, "response": re.sub(r"<<[^>]*>>", "", answer), "label": 1})
    write_jsonl(output, rows)
    return len(rows)


def split_by_prompt(
    source: str | Path, output: str | Path, test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False
) -> dict[str, int]:
    """Split a data file into ``train.jsonl``/``test.jsonl`` with no prompt in both.

    Rows are grouped by their first user turn (HH dialogues often share an
    opening question) and whole groups are assigned to one side.
    """
    from .core import load_examples

    check_output(output, "data split", overwrite)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(str(source), f"test fraction must be in (0, 1), got {test_fraction}")
    rows = read_rows(source)
    loaded = load_examples(source)
    groups: dict[str, list[dict]] = {}
    by_line = {row.line: row.data for row in rows}
    for example in loaded.examples:
        first = next((m["content"] for m in example.prompt if m["role"] == "user"), "")
        groups.setdefault(" ".join(first.lower().split()), []).append(by_line[example.line])
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_test = int(round(len(loaded.examples) * test_fraction))
    test, train = [], []
    for key in keys:
        (test if len(test) < n_test else train).extend(groups[key])
    with staged_directory(output, "data split", overwrite) as staging:
        write_jsonl(staging / "train.jsonl", train)
        write_jsonl(staging / "test.jsonl", test)
    return {"train": len(train), "test": len(test), "prompt_groups": len(keys)}
