"""Turn public datasets into icrm's formats (DESIGN.md §2)."""

from __future__ import annotations

import random
from pathlib import Path

from .data import DataError, read_rows
from .outputs import staged_directory, write_jsonl
from .scoring import extract_answer

GSM8K_SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k_best_of_n(source: str | Path, output: str | Path, seed: int = 0, test_fraction: float = 0.5) -> dict:
    """GSM8K example model solutions → best-of-N and pointwise files, split by question.

    Each question has four graded solutions (GPT-3 6B/175B, fine-tuned and
    verifier-selected). Questions are shuffled with ``seed`` and split, so no
    question is in both halves. Writes ``bon_{train,test}.jsonl`` (prompt,
    candidates, labels, answer) and ``pointwise_{train,test}.jsonl`` (one row
    per solution) into ``output``.
    """
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
    with staged_directory(output) as staging:
        for name, part in halves.items():
            write_jsonl(staging / f"bon_{name}.jsonl", part)
            points = [
                {"prompt": r["prompt"], "response": c, "label": y}
                for r in part
                for c, y in zip(r["candidates"], r["labels"])
            ]
            write_jsonl(staging / f"pointwise_{name}.jsonl", points)
    return {name: len(part) for name, part in halves.items()}
