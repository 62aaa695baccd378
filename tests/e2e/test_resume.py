"""Resume after Ctrl-C or kill -9, in the first epoch and a later one, equals the uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ICRM_BIN as ICRM
from helpers import run_process as run
from safetensors.torch import load_file


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


