"""Shared fixtures: tiny models built on the fly and slices of the shipped real data."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from helpers import HH_FILE, QA, write_jsonl

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


@pytest.fixture
def env(tmp_path):
    """The environment of a CLI subprocess: a private generator cache, one thread."""
    return {**os.environ, "ICRM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny causal LM and its tokenizer, saved as a hub checkpoint would be."""
    from icrm.modeling import build_causal_lm, train_tokenizer

    root = tmp_path_factory.mktemp("base")
    tok = train_tokenizer([" ".join(row) for row in QA] * 20, 400)
    build_causal_lm("tiny", tok, seed=0).save_pretrained(root)
    tok.save_pretrained(root)
    return root
