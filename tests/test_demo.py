"""`icrm demo --quick` end to end, as a new user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_quick_writes_report_plots_and_metrics(tmp_path):
    icrm = shutil.which("icrm") or str(Path(sys.executable).with_name("icrm"))
    env = {**os.environ, "ICRM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "demo"
    done = subprocess.run([icrm, "--quiet", "demo", "--quick", "--output", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("report.md", "metrics.json", "accuracy.png", "bon.png", "losses.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    methods, splits = {"BT", "GRM", "ICRM"}, {"noisy/test", "noisy/train"}
    assert set(metrics["accuracy"]) == methods
    for method in methods:
        for split in splits:
            value = metrics["accuracy"][method][split]
            assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert set(metrics["bon"]) == {"BT", "ICRM"}
    for bon in metrics["bon"].values():
        assert set(bon["accuracy"]) == set(bon["majority"]) == {"1", "2", "4", "8"}
        assert bon["accuracy"]["8"] > bon["random"]["8"] + 0.2  # the verifiers learn the addition task
    assert set(metrics["losses"]["noisy"]["BT"]) == {"bt", "icrm", "sft"} and not metrics["losses"]["noisy"]["BT"]["sft"]
    report = (out / "report.md").read_text()
    assert "noisy/test" in report and "![accuracy](accuracy.png)" in report
    assert "| majority vote |" in report and "beats a random pick at every n > 1" in report
    assert not list(tmp_path.glob(".demo.partial-*"))


def test_demo_dpo_section_and_plot(tmp_path):
    """The full demo's policy-loop section and bar chart, from a metrics["dpo"] entry (no training)."""
    from icrm.demo import _dpo_report, _plot_dpo

    policy = {"mean_reward": 0.5, "std_reward": 1.0, "mean_words": 20.0, "win_rate": 0.3, "tie_rate": 0.4,
              "lose_rate": 0.3}
    dpo = {"prompts": 200, "samples_per_prompt": 4, "pairs": {"BT": 150, "ICRM": 151},
           "policies": {name: dict(policy) for name in ("SFT", "DPO-BT", "DPO-ICRM")}}
    _plot_dpo(dpo, tmp_path / "dpo.png")
    assert (tmp_path / "dpo.png").stat().st_size > 0
    text = "\n".join(_dpo_report(dpo))
    assert "| DPO-ICRM | 0.500 ± 1.00 | 0.30 / 0.40 / 0.30 | 20.0 |" in text and "![dpo](dpo.png)" in text
