"""Crash/resume, Ctrl-C, non-finite losses, determinism, corrupted caches."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

ICRM = shutil.which("icrm") or str(Path(sys.executable).with_name("icrm"))


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


def run(args, env, **kw):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "ICRM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def wait_for_checkpoint(work: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while not (work / "trainer" / f"checkpoint-{step}" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.01)


def final_weights(directory: Path) -> dict:
    return load_file(str(directory / "model.safetensors"))


# Three epochs of 6 steps, a checkpoint every 2 steps and a log every 5 (so checkpoints fall between logs).
EPOCHS = ["--epochs", "3", "--batch-size", "8", "--max-length", "128", "--lr", "1e-3", "--seed", "3",
          "--save-steps", "2", "--logging-steps", "5"]
STEPS_PER_EPOCH, TOTAL_STEPS = 6, 18


@pytest.fixture(scope="module")
def method_data(tmp_path_factory):
    """48 training rows per method: preference pairs for icrm, step-labelled chains for prm."""
    from icrm.commands.data import write_task

    root = tmp_path_factory.mktemp("methods")
    write_task("noisy", root / "noisy", seed=1, n_train=48, n_test=10)
    write_task("steps", root / "steps", seed=1, n_train=48, n_test=10)
    return {"icrm": root / "noisy" / "train.jsonl", "prm": root / "steps" / "train.jsonl"}


def epochs_args(data, output, method, *extra, quiet=True):
    return [ICRM, *(["--quiet"] if quiet else []), "train", "--data", str(data), "--model", "tiny", "--method", method,
            "--output", str(output), *EPOCHS, *extra]


def loss_sums(history: list[dict]) -> dict[int, float]:
    """The loss summed over steps 1 to s, at each logged step s: comparable however the logs split the steps."""
    sums, total, last = {}, 0.0, 0
    for entry in history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
            sums[last] = total
    return sums


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, method_data):
    """The reference run of each method, made once."""
    root = tmp_path_factory.mktemp("uninterrupted")
    env = {**os.environ, "ICRM_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    for method, data in method_data.items():
        done = run(epochs_args(data, root / method, method), env)
        assert done.returncode == 0, done.stderr
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, how, after",
    [
        ("icrm", signal.SIGINT, 2),  # Ctrl-C in epoch 1
        ("icrm", signal.SIGKILL, 8),  # kill -9 in epoch 2, after its second step
        ("prm", signal.SIGKILL, 2),  # kill -9 in epoch 1
        ("prm", signal.SIGINT, 8),  # Ctrl-C in epoch 2 or 3
    ],
    ids=["icrm-ctrl-c-epoch-1", "icrm-kill-9-epoch-2", "prm-kill-9-epoch-1", "prm-ctrl-c-later-epoch"],
)
def test_resume_equals_uninterrupted_run(tmp_path, env, method_data, uninterrupted, method, how, after):
    """An interrupted run resumed to the end has the uninterrupted run's weights, train_loss, log and progress."""
    data, out, work = method_data[method], tmp_path / "out", tmp_path / ".out.partial"
    proc = subprocess.Popen(epochs_args(data, out, method), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(work, after, proc)
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=300)
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (work / "trainer").glob("checkpoint-*"))
    if how == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "interrupted at step" in stderr and "--resume" in stderr
        assert after < checkpoints[-1] < TOTAL_STEPS  # saved at the interrupt, before the end
    else:  # the kill lands a moment after checkpoint `after` appears: a quick run may have saved another
        assert after <= checkpoints[-1] < TOTAL_STEPS
    assert not out.exists()
    if after >= STEPS_PER_EPOCH:
        assert checkpoints[-1] >= STEPS_PER_EPOCH  # resumed in a later epoch

    resumed = run(epochs_args(data, out, method, "--resume", quiet=False), env)
    assert resumed.returncode == 0, resumed.stderr
    assert not work.exists()
    # The progress bar counts the whole run, not only the steps after the resume.
    assert f"{TOTAL_STEPS}/{TOTAL_STEPS}" in resumed.stderr
    assert not re.search(rf"(?<!\d){TOTAL_STEPS - checkpoints[-1]}/{TOTAL_STEPS}", resumed.stderr)  # not "8/18"

    ref, got = final_weights(uninterrupted / method), final_weights(out)
    assert ref.keys() == got.keys()
    for key in ref:
        np.testing.assert_allclose(got[key].numpy(), ref[key].numpy(), atol=1e-6, err_msg=key)
    ref_metrics = json.loads((uninterrupted / method / "metrics.json").read_text())
    got_metrics = json.loads((out / "metrics.json").read_text())
    assert got_metrics["steps"] == ref_metrics["steps"] == TOTAL_STEPS
    # train_loss averages all 18 steps: the logged windows before the checkpoint plus the steps after it. The
    # float32 step losses match to the weights' 1e-6; the rest is float64 arithmetic.
    assert got_metrics["train_loss"] == pytest.approx(ref_metrics["train_loss"], rel=1e-6)
    # The log has every entry of the uninterrupted run's (Ctrl-C adds one at the interrupt), with the same losses.
    ref_sums, got_sums = loss_sums(ref_metrics["log_history"]), loss_sums(got_metrics["log_history"])
    assert ref_sums.keys() <= got_sums.keys()
    for step, total in ref_sums.items():
        assert got_sums[step] == pytest.approx(total, rel=1e-6), step
    if method == "icrm":
        ref_state = json.loads((uninterrupted / method / "icrm_state.json").read_text())
        got_state = json.loads((out / "icrm_state.json").read_text())
        assert got_state["consistency_ema"] == pytest.approx(ref_state["consistency_ema"], abs=1e-6)


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
    from icrm.training import trainer_arguments

    config = ICRMConfig(output_dir=str(tmp_path / "out"), **trainer_arguments(batch_size=8, seed=3, group_by_length=True))
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
    causal = __import__("icrm.modeling.core", fromlist=["build_causal_lm"]).build_causal_lm("tiny", tiny_rm.tokenizer)
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
