"""Shared fixtures: tiny models built on the fly and slices of the shipped real data."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest


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

os.environ.setdefault("ICRM_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _pick_threads() -> None:
    """The CLI's thread default, chosen once for the whole session and its subprocesses."""
    from icrm.threads import ENV, default_threads, set_threads

    os.environ[ENV] = str(default_threads())
    set_threads(int(os.environ[ENV]))


_pick_threads()


def pytest_configure(config):
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download from a hub
    os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICRM_CACHE", str(tmp_path / "icrm-cache"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def hh_rows() -> list[dict]:
    if not HH_FILE.exists():
        pytest.fail(f"shipped data missing: {HH_FILE}")
    with gzip.open(HH_FILE, "rt") as handle:
        return [json.loads(line) for _, line in zip(range(400), handle)]


@pytest.fixture
def hh_slice(tmp_path, hh_rows) -> Path:
    """40 real HH pairs (short ones, so CPU training is quick)."""
    short = [r for r in hh_rows if len(r["chosen"]) + len(r["rejected"]) < 1200][:40]
    return write_jsonl(tmp_path / "hh.jsonl", short)


@pytest.fixture(scope="session")
def tiny_rm():
    from icrm.modeling import RewardModel, build_causal_lm, train_tokenizer

    texts = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?"] * 20
    tokenizer = train_tokenizer(texts, 400)
    return RewardModel.from_causal_lm(build_causal_lm("tiny", tokenizer, seed=0), tokenizer)


@pytest.fixture(scope="session")
def cli():
    from typer.testing import CliRunner

    from icrm.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--quiet", *map(str, args)])

    return run
