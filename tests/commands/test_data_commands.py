"""The ``icrm data`` commands convert text to text: they run without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import GSM8K_SOLUTIONS, SHARED, write_jsonl

# Runs the CLI in a fresh interpreter and prints the torch modules it imported.
RUN_CLI = """
import sys
from icrm.cli import app
try:
    app(sys.argv[1:])
except SystemExit as stop:
    assert not stop.code, f"exit code {stop.code}"
print(sorted(name for name in sys.modules if name.split(".")[0] == "torch"))
"""


@pytest.mark.parametrize("command", ["synth", "gsm8k-bon", "gsm8k-sft", "split"])
def test_data_commands_do_not_import_torch(tmp_path, command):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"question {k}", "chosen": "a good answer", "rejected": "a bad answer"} for k in range(10)])
    args = {
        "synth": ["--task", "steps", "--n-train", "20", "--n-test", "5", "--output", tmp_path / "out"],
        "gsm8k-bon": ["--data", GSM8K_SOLUTIONS, "--output", tmp_path / "out"],
        "gsm8k-sft": ["--data", SHARED / "gsm8k" / "train.jsonl.gz", "--output", tmp_path / "out.jsonl"],
        "split": ["--data", pairs, "--output", tmp_path / "out"],
    }[command]
    result = subprocess.run([sys.executable, "-c", RUN_CLI, "--quiet", "data", command, *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out").exists() or (tmp_path / "out.jsonl").exists()


def test_split_keeps_rows_as_read_and_each_prompt_on_one_side(tmp_path):
    from icrm.commands.data import split_by_prompt

    rows = [{"prompt": f"Question {k // 2}?", "chosen": f"yes {k}", "rejected": f"no {k}", "extra": k} for k in range(20)]
    counts = split_by_prompt(write_jsonl(tmp_path / "pairs.jsonl", rows), tmp_path / "out", test_fraction=0.3)
    sides = {name: [json.loads(line) for line in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
             for name in ("train", "test")}
    assert counts == {"train": len(sides["train"]), "test": len(sides["test"]), "prompt_groups": 10}
    assert counts["test"] == 6 and sorted(sides["train"] + sides["test"], key=lambda r: r["extra"]) == rows
    assert not {r["prompt"] for r in sides["train"]} & {r["prompt"] for r in sides["test"]}
