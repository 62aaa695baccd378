"""Helpers the tests import (fixtures live in conftest.py): the shipped data, the CLI executable, file writing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def _find_shared_data() -> Path:
    """The real data shipped beside the repository (``../shared/data``), or $ICRM_SHARED_DATA."""
    if os.environ.get("ICRM_SHARED_DATA"):
        return Path(os.environ["ICRM_SHARED_DATA"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "data" / "hh-rlhf").is_dir():
            return parent / "shared" / "data"
    return here.parents[2] / "shared" / "data"


SHARED = _find_shared_data()
HH_FILE = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"
GSM8K_SOLUTIONS = SHARED / "gsm8k" / "example_model_solutions.jsonl.gz"

# The installed ``icrm`` executable, for tests that run the CLI as a user does (a real subprocess).
ICRM_BIN = shutil.which("icrm") or str(Path(sys.executable).with_name("icrm"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_process(args: list[str], env: dict, **kw):
    """Run a command to its end, its output captured as text."""
    import subprocess

    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, **kw)


# Prompts of both kinds (text and conversations, one with a system turn) and responses, as the server tests send them.
PROMPTS = [
    "hello world, how are you today?",
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the quick brown fox"}],
    "how are you?",
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}, {"role": "user", "content": "fox?"}],
]
RESPONSES = ["the lazy dog jumps", "quick brown fox jumps over", "hello hello world", "the dog today"]


def rendered(tokenizer, prompt, response) -> str:
    """The text a chat template makes of one prompt and response, as a client of ``/get_reward`` sends it."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
