"""The CPU thread default: free cores from the load, or what the user set, applied by every command and the API."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from icrm.errors import UserError
from icrm.threads import MAX_DEFAULT, apply_default_threads, default_threads, set_threads


@pytest.mark.parametrize(
    "cores, load, expected",
    [
        (2, 0.0, 2),  # idle: every core
        (2, 0.4, 2),  # a short blip rounds away
        (2, 0.6, 1),  # one busy process beside us
        (2, 1.4, 1),
        (2, 3.7, 1),  # overloaded: never below one
        (16, 0.0, MAX_DEFAULT),  # tiny models gain little from more
        (8, 5.5, 2),  # 8 - round(5.5) = 2
    ],
)
def test_free_cores_from_load(cores, load, expected):
    assert default_threads({}, cores=cores, load=load) == expected


def test_environment_wins_over_the_load():
    assert default_threads({"OMP_NUM_THREADS": "3"}, cores=2, load=5.0) == 3
    assert default_threads({"OMP_NUM_THREADS": "4,2"}, cores=2, load=0.0) == 4  # OpenMP's nested form
    assert default_threads({"ICRM_THREADS": "1", "OMP_NUM_THREADS": "3"}, cores=8, load=0.0) == 1
    assert default_threads({"OMP_NUM_THREADS": " "}, cores=2, load=0.0) == 2  # empty = unset


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_environment_value(value):
    with pytest.raises(UserError, match=r"\$ICRM_THREADS must be a positive integer"):
        default_threads({"ICRM_THREADS": value}, cores=2, load=0.0)


def test_every_command_applies_the_thread_count(tmp_path, cli, monkeypatch):
    before = torch.get_num_threads()
    try:
        result = cli("--threads", "1", "data", "synth", "--task", "noisy", "--output", tmp_path / "a", "--n-test", "2")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("ICRM_THREADS", "2")
        assert cli("data", "synth", "--task", "noisy", "--output", tmp_path / "b", "--n-test", "2").exit_code == 0
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("ICRM_THREADS", "lots")
        bad = cli("data", "synth", "--task", "noisy", "--output", tmp_path / "c", "--n-test", "2")
        assert bad.exit_code == 2 and "$ICRM_THREADS must be a positive integer" in bad.stderr
        assert not (tmp_path / "c").exists()
    finally:
        torch.set_num_threads(before)



def fresh_python(code: str, cwd, **env: str) -> list[int]:
    """Run ``code`` in a new process in ``cwd``, with no thread variable but ``env``; its printed numbers."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ICRM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [int(word) for word in done.stdout.split()]


def test_python_api_applies_the_default_once(tmp_path):
    code = (
        "import torch; from icrm import ICRMTrainer, ICRMConfig; start = torch.get_num_threads()\n"
        "rows = [{'prompt': 'q', 'chosen': 'yes', 'rejected': 'no'}] * 2\n"
        "args = lambda: ICRMConfig(output_dir='out', use_cpu=True, report_to=[])\n"
        "ICRMTrainer('tiny', args(), train_dataset=rows); applied = torch.get_num_threads()\n"
        "torch.set_num_threads(start); ICRMTrainer('tiny', args(), train_dataset=rows)\n"
        "print(start, applied, torch.get_num_threads())"
    )
    start = fresh_python("import torch; print(torch.get_num_threads())", tmp_path)[0]
    # a count torch does not start with; once applied, never again in that process (the load has changed since)
    assert fresh_python(code, tmp_path, ICRM_THREADS=str(start + 1)) == [start, start + 1, start]


def test_python_api_keeps_the_programs_own_thread_count(tmp_path, tiny_rm):
    tiny_rm.save_pretrained(tmp_path / "rm")
    code = (
        "import torch; mine = torch.get_num_threads() + 2; torch.set_num_threads(mine)\n"
        f"from icrm import RewardModel; RewardModel.from_pretrained({str(tmp_path / 'rm')!r})\n"
        "print(mine, torch.get_num_threads())"
    )
    mine, after = fresh_python(code, tmp_path, ICRM_THREADS="1")
    assert after == mine


def test_the_command_lines_count_is_kept_by_the_api(monkeypatch):
    before = torch.get_num_threads()
    try:
        set_threads(before + 1)  # `icrm --threads N`, before any model loads
        monkeypatch.setenv("ICRM_THREADS", "1")
        apply_default_threads()
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
