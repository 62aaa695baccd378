"""Two CPU processes (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def losses(directory, key="loss"):
    history = json.loads((directory / "metrics.json").read_text())["log_history"]
    return [entry[key] for entry in history if key in entry]


@pytest.mark.slow
@pytest.mark.parametrize("method, tolerance", [("bt", 1e-5), ("icrm", 5e-3)])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, method, tolerance):
    from icrm.commands.data import write_task
    from icrm.data import example_texts, load_examples
    from icrm.modeling import build_causal_lm, train_tokenizer

    write_task("noisy", tmp_path / "data", seed=1, n_train=64, n_test=10)
    data = tmp_path / "data" / "train.jsonl"
    generator = tmp_path / "gen"  # a saved generator, so the cache path is exercised
    tok = train_tokenizer(example_texts(load_examples(data).examples), 1024)
    build_causal_lm("tiny", tok, seed=5).save_pretrained(generator)
    tok.save_pretrained(generator)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "ICRM_CACHE": str(tmp_path / "cache")}
    common = ["--quiet", "train", "--data", str(data), "--model", str(generator), "--method", method,
              "--generator", str(generator), "--max-steps", "4", "--max-length", "96", "--lr", "1e-3",
              "--logging-steps", "1", "--head-dropout", "0"]  # dropout masks are drawn per process
    one = subprocess.run([sys.executable, "-m", "icrm.cli", *common, "--batch-size", "8", "--output",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "icrm.cli",
                          *common, "--batch-size", "4", "--output", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=tolerance)
    if method == "icrm":
        assert len(list((tmp_path / "cache" / "genprobs").iterdir())) == 1  # computed once, shared
    assert not list(tmp_path.glob(".two.partial*"))
    assert (tmp_path / "two" / "model.safetensors").exists()
