"""Crash/resume, Ctrl-C, non-finite losses, determinism, corrupted caches."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ICRM_BIN as ICRM
from helpers import run_process as run


@pytest.fixture(scope="module")
def noisy_data(tmp_path_factory):
    from icrm.commands.data import write_task

    root = tmp_path_factory.mktemp("noisy")
    write_task("noisy", root / "noisy", seed=1, n_train=96, n_test=20)
    return root / "noisy" / "train.jsonl"


def train_args(data, output, *extra):
    return [ICRM, "--quiet", "train", "--data", str(data), "--model", "tiny", "--method", "icrm", "--generator", "self",
            "--output", str(output), "--max-steps", "12", "--batch-size", "8", "--max-length", "96", "--lr", "1e-3",
            "--seed", "3", *extra]


def test_resume_without_an_interrupted_run_is_an_error(tmp_path, env, noisy_data):
    done = run(train_args(noisy_data, tmp_path / "out", "--resume"), env)
    assert done.returncode == 2 and "no interrupted run" in done.stderr


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, env, noisy_data):
    done = run(train_args(noisy_data, tmp_path / "out", "--lr", "1e30", "--method", "bt", "--warmup", "0"), env)
    assert done.returncode == 1, done.stderr
    assert "non-finite loss at step" in done.stderr and "try a lower --lr" in done.stderr
    assert not (tmp_path / "out").exists()


def test_same_seed_same_data_identical_checkpoints(tmp_path, env, noisy_data):
    for name in ("a", "b"):
        assert run(train_args(noisy_data, tmp_path / name, "--max-steps", "4"), env).returncode == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_length_grouped_batches_depend_on_the_seed_and_epoch_alone(tmp_path, noisy_data):
    """A resumed run skips through the same batches: the order ignores the global RNG (dropout draws) but not the epoch."""
    import torch

    from icrm import ICRMConfig, ICRMTrainer
    from icrm.data import load_examples
    from icrm.training import TrainingOptions

    config = ICRMConfig(output_dir=str(tmp_path / "out"), **TrainingOptions(seed=3).trainer_kwargs(group_by_length=True))
    trainer = ICRMTrainer("tiny", config, train_dataset=load_examples(str(noisy_data)))

    def batches(epoch: int) -> list:
        loader = trainer.get_train_dataloader()
        loader.set_epoch(epoch)  # as the training loop does
        return [batch["input_ids"] for batch in loader]

    def same(a: list, b: list) -> bool:
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

    second = batches(1)
    torch.manual_seed(123)  # another state of the global RNG, as after an epoch of dropout
    assert same(batches(1), second)
    assert not same(batches(0), second)


def test_corrupted_generator_cache_is_recomputed_with_a_warning(tmp_path, tiny_rm, caplog):
    from icrm.data import encode
    from icrm.modeling import cached_generation_weights

    gen = tmp_path / "gen"
    causal = __import__("icrm.modeling", fromlist=["build_causal_lm"]).build_causal_lm("tiny", tiny_rm.tokenizer)
    causal.save_pretrained(gen)
    tiny_rm.tokenizer.save_pretrained(gen)
    seqs = [encode(tiny_rm.tokenizer, [{"role": "user", "content": "hello"}], r) for r in ("the dog", "a fox jumps")]
    first, hit = cached_generation_weights(str(gen), tiny_rm.tokenizer, seqs, cache_dir=tmp_path / "c")
    assert not hit
    expected = np.array(first.flat)  # a copy: the memory map follows the file we corrupt below
    again, hit = cached_generation_weights(str(gen), tiny_rm.tokenizer, seqs, cache_dir=tmp_path / "c")
    assert hit and np.array_equal(np.asarray(again.flat), expected)
    probs = next((tmp_path / "c").glob("*/probs.npy"))
    probs.write_bytes(probs.read_bytes()[:-4])  # truncated
    with caplog.at_level("WARNING"):
        recomputed, hit = cached_generation_weights(str(gen), tiny_rm.tokenizer, seqs, cache_dir=tmp_path / "c")
    assert not hit and "corrupted or stale" in caplog.text
    assert np.array_equal(np.asarray(recomputed.flat), expected)
