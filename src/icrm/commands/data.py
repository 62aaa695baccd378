"""``icrm data``: write the embedded synthetic tasks and converted public datasets as data files.

Text in, text out: nothing here, nor in the parts of :mod:`icrm.data` it uses, imports torch, so
these commands start quickly and run anywhere.
"""

from __future__ import annotations

from pathlib import Path

from ..data import (
    TASKS,
    check_test_fraction,
    gsm8k_best_of_n_rows,
    gsm8k_sft_rows,
    load_examples,
    pointwise_rows,
    read_rows,
    split_by_prompt_groups,
    split_questions,
)
from ..errors import UserError
from ..outputs import check_output, staged_directory, write_json, write_jsonl


def write_task(
    task: str,
    output: Path | str,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    flip: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate ``task`` and write its JSONL files and task.json into ``output``, atomically.

    Options left as None take the task's defaults (see the ``generate_*``
    functions of :mod:`icrm.data.synthetic`). Returns the task.json content: task, seed, sizes, flip
    rate, n_flipped, flipped_ids and the row count of each file. Raises
    UserError (a ValueError) for an unknown task, bad sizes or an
    ``output`` that is not safe to replace (:func:`icrm.outputs.check_output`;
    an earlier ``data synth`` folder is), before anything is written.
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    options = {k: v for k, v in (("n_train", n_train), ("n_test", n_test), ("flip", flip)) if v is not None}
    output = Path(output)
    check_output(output, "data synth", overwrite)
    data = TASKS[task](seed=seed, **options)
    with staged_directory(output, "data synth", overwrite) as staging:
        for name, rows in data.files.items():
            write_jsonl(staging / name, rows)
        write_json(staging / "task.json", data.info)
    return data.info


def gsm8k_best_of_n(
    source: str | Path, output: str | Path, seed: int = 0, test_fraction: float = 0.5, overwrite: bool = False
) -> dict:
    """GSM8K example model solutions → best-of-N and pointwise files, split by question.

    Questions are shuffled with ``seed`` and split, so no question is in both
    halves. Writes ``bon_{train,test}.jsonl`` (prompt, candidates, labels,
    answer) and ``pointwise_{train,test}.jsonl`` (one row per solution) into
    ``output`` (see :func:`icrm.outputs.check_output` for ``overwrite``).
    Returns the number of questions on each side.
    """
    check_output(output, "data gsm8k-bon", overwrite)
    check_test_fraction(str(source), test_fraction)
    halves = split_questions(gsm8k_best_of_n_rows(read_rows(source), str(source)), test_fraction, seed)
    with staged_directory(output, "data gsm8k-bon", overwrite) as staging:
        for name, part in halves.items():
            write_jsonl(staging / f"bon_{name}.jsonl", part)
            write_jsonl(staging / f"pointwise_{name}.jsonl", pointwise_rows(part))
    return {name: len(part) for name, part in halves.items()}


def gsm8k_sft(source: str | Path, output: str | Path, overwrite: bool = False) -> int:
    """GSM8K ``question``/``answer`` rows → one pointwise file (label 1) for ``icrm sft``; returns its row count."""
    check_output(output, None, overwrite)
    rows = gsm8k_sft_rows(read_rows(source), str(source))
    write_jsonl(output, rows)
    return len(rows)


def split_by_prompt(
    source: str | Path, output: str | Path, test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False
) -> dict[str, int]:
    """Split a data file into ``train.jsonl``/``test.jsonl`` with no prompt in both.

    Rows are written as read; see :func:`icrm.data.split_by_prompt_groups` for how prompts are grouped.
    """
    check_output(output, "data split", overwrite)
    check_test_fraction(str(source), test_fraction)
    rows = read_rows(source)
    train, test, n_groups = split_by_prompt_groups(rows, load_examples(source).examples, test_fraction, seed)
    with staged_directory(output, "data split", overwrite) as staging:
        write_jsonl(staging / "train.jsonl", train)
        write_jsonl(staging / "test.jsonl", test)
    return {"train": len(train), "test": len(test), "prompt_groups": n_groups}
