"""The README's quick start works exactly as written (commands and Python snippets)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path):
    icrm_bin = str(Path(shutil.which("icrm") or Path(sys.executable).with_name("icrm")).parent)
    env = {**os.environ, "PATH": icrm_bin + os.pathsep + os.environ["PATH"], "ICRM_CACHE": str(tmp_path / "cache")}
    blocks = quick_start_blocks()
    assert [kind for kind, _ in blocks] == ["bash", "python", "python"]
    commands = [line for line in blocks[0][1].splitlines() if line.startswith("icrm ")]
    assert len(commands) >= 7
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    outputs = []
    for _, code in blocks[1:]:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    hf_score = float(outputs[0].strip().splitlines()[-1])
    from icrm.modeling import RewardModel

    rm = RewardModel.from_pretrained(str(tmp_path / "runs" / "rm-icrm"))
    ours = rm.score(["Describe the weather in Paris."], ["it is clear and excellent"])[0]
    assert hf_score == pytest.approx(ours, abs=1e-5)
    assert (tmp_path / "runs" / "explain" / "index.html").exists()
    assert (tmp_path / "runs" / "eval-icrm.json").exists()
