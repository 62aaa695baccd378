"""Crash/resume, Ctrl-C, non-finite losses, determinism, corrupted caches."""

from __future__ import annotations

import json
import os
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
    from icrm.synthetic import write_task

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
        time.sleep(0.05)


def final_weights(directory: Path) -> dict:
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path, env, noisy_data):
    extra = ["--save-steps", "4", "--logging-steps", "1"]  # per-step losses, comparable across the resume
    reference = run(train_args(noisy_data, tmp_path / "ref", *extra), env)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out"
    proc = subprocess.Popen(train_args(noisy_data, out, *extra), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = tmp_path / ".out.partial"
    wait_for_checkpoint(work, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and work.exists()

    resumed = run(train_args(noisy_data, out, *extra, "--resume"), env)
    assert resumed.returncode == 0, resumed.stderr
    assert not work.exists()
    ref, got = final_weights(tmp_path / "ref"), final_weights(out)
    assert ref.keys() == got.keys()
    for key in ref:
        np.testing.assert_allclose(got[key].numpy(), ref[key].numpy(), atol=1e-6, err_msg=key)
    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got_metrics = json.loads((out / "metrics.json").read_text())
    ref_losses = {e["step"]: e["loss"] for e in ref_metrics["log_history"] if "loss" in e}
    got_losses = {e["step"]: e["loss"] for e in got_metrics["log_history"] if "loss" in e}
    for step in (9, 10, 11, 12):  # steps run after the resume
        assert got_losses[step] == pytest.approx(ref_losses[step], abs=1e-6)
    ref_state = json.loads((tmp_path / "ref" / "icrm_state.json").read_text())
    got_state = json.loads((out / "icrm_state.json").read_text())
    assert got_state["consistency_ema"] == pytest.approx(ref_state["consistency_ema"], abs=1e-6)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, env, noisy_data):
    out = tmp_path / "out"
    proc = subprocess.Popen(train_args(noisy_data, out, "--save-steps", "4", "--max-steps", "400"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = tmp_path / ".out.partial"
    wait_for_checkpoint(work, 4, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr
    checkpoints = sorted((work / "trainer").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and int(checkpoints[-1].name.split("-")[1]) > 4  # saved at the interrupt, not just at step 4
    assert not out.exists()


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


def test_corrupted_generator_cache_is_recomputed_with_a_warning(tmp_path, tiny_rm, caplog):
    from icrm.data import encode
    from icrm.generator import cached_generation_weights

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
