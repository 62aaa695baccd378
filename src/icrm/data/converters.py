"""Public datasets into icrm's formats (docs/design.md#data-formats), and splits that keep a prompt on one side.

Pure functions of the rows read: the ``icrm data`` commands (:mod:`icrm.commands.data`) read the
files and write the results.
"""

from __future__ import annotations

import random
import re

from .answers import extract_answer
from .chat import first_user_turn
from .readers import DataError, Row

GSM8K_SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def check_test_fraction(source: str, test_fraction: float) -> None:
    """A test share must leave both sides of a split something: 0 < ``test_fraction`` < 1."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(source, f"test fraction must be in (0, 1), got {test_fraction}")


def gsm8k_best_of_n_rows(rows: list[Row], source: str) -> list[dict]:
    """GSM8K example model solutions → best-of-N rows (prompt, candidates, labels, answer), one per question.

    Each question has four graded solutions (GPT-3 6B/175B, fine-tuned and
    verifier-selected); the answer is the number after ``####`` in ``ground_truth``.
    """
    converted = []
    for row in rows:
        question, truth = row.data.get("question"), row.data.get("ground_truth")
        if not isinstance(question, str) or not isinstance(truth, str):
            raise DataError(source, "expected `question` and `ground_truth` text", row.line, "question")
        candidates, labels = [], []
        for solver in GSM8K_SOLVERS:
            entry = row.data.get(solver)
            if not isinstance(entry, dict) or "solution" not in entry or "is_correct" not in entry:
                raise DataError(source, "expected {solution, is_correct}", row.line, solver)
            candidates.append(entry["solution"])
            labels.append(int(bool(entry["is_correct"])))
        converted.append({"prompt": question, "candidates": candidates, "labels": labels,
                          "answer": extract_answer(truth)})
    return converted


def split_questions(rows: list[dict], test_fraction: float, seed: int) -> dict[str, list[dict]]:
    """``{"train": …, "test": …}``: the rows shuffled with ``seed``, the last ``test_fraction`` of them for test."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    cut = int(round(len(rows) * (1.0 - test_fraction)))
    return {"train": rows[:cut], "test": rows[cut:]}


def pointwise_rows(bon_rows: list[dict]) -> list[dict]:
    """Best-of-N rows → one pointwise row (prompt, response, label) per candidate."""
    return [{"prompt": r["prompt"], "response": c, "label": y}
            for r in bon_rows for c, y in zip(r["candidates"], r["labels"])]


def gsm8k_sft_rows(rows: list[Row], source: str) -> list[dict]:
    """GSM8K ``question``/``answer`` rows → pointwise rows (label 1) for ``icrm sft``.

    The ``<<…>>`` calculator annotations are removed; the final ``#### N`` is kept.
    """
    converted = []
    for row in rows:
        question, answer = row.data.get("question"), row.data.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise DataError(source, "expected `question` and `answer` text", row.line, "question")
        converted.append({"prompt": question, "response": re.sub(r"<<[^>]*>>", "", answer), "label": 1})
    return converted


def split_by_prompt_groups(
    rows: list[Row], examples: list, test_fraction: float, seed: int
) -> tuple[list[dict], list[dict], int]:
    """``(train, test, number of prompt groups)``: the raw rows split with no prompt on both sides.

    Rows are grouped by their example's first user turn (HH dialogues often
    share an opening question) and whole groups, shuffled with ``seed``, fill
    the test side until it holds ``test_fraction`` of the examples.
    """
    groups: dict[str, list[dict]] = {}
    by_line = {row.line: row.data for row in rows}
    for example in examples:
        groups.setdefault(" ".join(first_user_turn(example.prompt).lower().split()), []).append(by_line[example.line])
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_test = int(round(len(examples) * test_fraction))
    test, train = [], []
    for key in keys:
        (test if len(test) < n_test else train).extend(groups[key])
    return train, test, len(keys)
