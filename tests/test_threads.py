"""The CPU thread default: free cores from the load, or what the user set, applied by every command."""

from __future__ import annotations

import pytest
import torch

from icrm.errors import UserError
from icrm.threads import MAX_DEFAULT, default_threads


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
