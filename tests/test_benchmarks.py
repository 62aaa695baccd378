"""The benchmark scripts' shared runner (benchmarks/reproduction.py), called as the other scripts call it."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def reproduction(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import reproduction

    monkeypatch.setitem(reproduction.SETTINGS, "epochs", 1.0)
    return reproduction


def test_run_row_without_a_backbone_starts_from_the_sft_model(tmp_path, reproduction):
    """attribution.py, locality.py and dpo_loop.py pass no backbone: the reward model starts from the generator."""
    from icrm.modeling import build_causal_lm, train_tokenizer

    data, sft = tmp_path / "data", tmp_path / "sft"
    reproduction.write_task("noisy", data, seed=0, n_train=16, n_test=8, flip=0.25)
    tokenizer = train_tokenizer((data / "train.jsonl").read_text().splitlines(), 300)
    build_causal_lm("tiny", tokenizer, seed=0).save_pretrained(sft)
    tokenizer.save_pretrained(sft)
    accuracy = reproduction.run_row(reproduction.ROWS[0], data, sft, tmp_path, 0, ["test"])
    assert set(accuracy) == {"test"} and 0.0 <= accuracy["test"] <= 1.0
    assert (tmp_path / "rm" / "model.safetensors").exists()
