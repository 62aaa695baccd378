"""The README's quick start works exactly as written (commands and Python snippets)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section_blocks(heading: str) -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


def run_commands(block: str, cwd, env) -> None:
    commands = [line for line in block.splitlines() if line.startswith("icrm ")]
    assert commands
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path):
    icrm_bin = str(Path(shutil.which("icrm") or Path(sys.executable).with_name("icrm")).parent)
    env = {**os.environ, "PATH": icrm_bin + os.pathsep + os.environ["PATH"], "ICRM_CACHE": str(tmp_path / "cache")}
    blocks = section_blocks("Quick start")
    assert [kind for kind, _ in blocks] == ["bash", "python", "python"]
    run_commands(blocks[0][1], tmp_path, env)
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

    (policy_block,) = section_blocks("Policy side: best-of-N samples, DPO pairs, DPO")
    run_commands(policy_block[1], tmp_path, env)
    report = json.loads((tmp_path / "runs" / "compare.json").read_text())
    assert len(report["policies"]) == 2

    serve_block, grpo_block = section_blocks("Online RL: a reward server for OpenRLHF, GRPO with TRL")
    run_commands(grpo_block[1], tmp_path, env)
    report = json.loads((tmp_path / "runs" / "compare-rl.json").read_text())
    assert [p["policy"] for p in report["policies"]] == ["runs/policy", "runs/dpo", "runs/grpo"]
    if shutil.which("curl") is None:
        pytest.skip("no curl: the icrm serve example was not run")
    with socket.socket() as probe:  # the README's port may be taken on a test machine: use a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = serve_block[1].replace("5000", str(port))
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reward, scored, metrics = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert reward["rewards"][0] == pytest.approx(hf_score, abs=1e-5)
    assert scored["rewards"][0] == pytest.approx(hf_score, abs=1e-5) == scored["token_rewards"][0][-1]
    assert metrics["requests"] == {"get_reward": 1, "score": 1}

@pytest.mark.slow
def test_process_rewards_section_runs_as_written(tmp_path):
    icrm_bin = str(Path(shutil.which("icrm") or Path(sys.executable).with_name("icrm")).parent)
    env = {**os.environ, "PATH": icrm_bin + os.pathsep + os.environ["PATH"], "ICRM_CACHE": str(tmp_path / "cache")}
    (commands, code) = section_blocks("Process rewards: step labels, step scores, PRMs")
    assert [commands[0], code[0]] == ["bash", "python"]
    run_commands(commands[1], tmp_path, env)
    done = subprocess.run([sys.executable, "-c", code[1]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(scores) == 2
    runs = tmp_path / "runs"
    report = json.loads((runs / "steps-eval-prm.json").read_text())
    assert report["steps"]["step_auroc"] > 0.5  # the PRM learns the step check (BENCHMARKS.md §6: ~0.87)
    assert json.loads((runs / "steps-bon-min.json").read_text())["aggregate"] == "min"
    assert (runs / "steps-explain" / "example-0001.png").exists()
