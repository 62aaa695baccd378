"""`icrm demo --quick` end to end, as a new user runs it (a real subprocess), and the process stage at a toy size."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import ICRM_BIN


@pytest.mark.slow
def test_demo_quick_writes_report_plots_and_metrics(tmp_path):
    icrm = ICRM_BIN
    env = {**os.environ, "ICRM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "demo"
    done = subprocess.run([icrm, "--quiet", "demo", "--quick", "--output", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("report.md", "metrics.json", "accuracy.png", "shortcut.png", "losses.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    methods, splits = {"BT", "GRM", "ICRM"}, {"noisy/test", "noisy/train"}
    assert set(metrics["accuracy"]) == methods
    for method in methods:
        for split in splits:
            value = metrics["accuracy"][method][split]
            assert isinstance(value, float) and 0.0 <= value <= 1.0
    shortcut = metrics["shortcut"]
    assert (shortcut["task"], shortcut["lambda"], shortcut["n_test"]) == ("length", 0.3, 500)  # BENCHMARKS.md §1a's
    assert set(shortcut["accuracy"]) == {"BT", "ICRM"}
    assert metrics["bon"] == {} and not (out / "bon.png").exists()  # best-of-N is full mode's
    assert set(metrics["losses"]["noisy"]["BT"]) == {"bt", "icrm", "sft"} and not metrics["losses"]["noisy"]["BT"]["sft"]
    report = (out / "report.md").read_text()
    # The report leads with the measured BT-vs-ICRM comparison: its first section, before any table.
    lead = report.split("\n## ")[1]
    assert lead.startswith("BT against ICRM in this run") and report.index(lead) < report.index("|")
    bt, icrm = shortcut["accuracy"]["BT"], shortcut["accuracy"]["ICRM"]
    for split in ("length/test_mixed", "length/test_reversed"):
        gap = 100 * (icrm[split] - bt[split])
        assert f"`{split}` BT {bt[split]:.3f}, ICRM {icrm[split]:.3f} ({gap:+.1f} points)" in lead
    verdict = "ICRM follows it less" if icrm["length/test_mixed"] > bt["length/test_mixed"] and \
        icrm["length/test_reversed"] > bt["length/test_reversed"] else "does not show ICRM's lead"
    assert verdict in lead
    noisy_bt, noisy_icrm = metrics["accuracy"]["BT"]["noisy/test"], metrics["accuracy"]["ICRM"]["noisy/test"]
    assert f"`noisy/test` BT {noisy_bt:.3f}, ICRM {noisy_icrm:.3f}" in lead and "**Noisy labels: " in lead
    share = metrics["attribution"]["decisive_share"]
    assert f"{share['BT']:.0%} (BT), {share['ICRM']:.0%} (ICRM) of Σ|Δr|" in report
    assert "noisy/test" in report and "![accuracy](accuracy.png)" in report and "![shortcut](shortcut.png)" in report
    assert "scored against those training labels, flips included" in report
    assert "without `--quick` adds" in report and "## Process rewards" not in report and "process" not in metrics
    assert not list(tmp_path.glob(".demo.partial-*"))


@pytest.mark.slow
def test_demo_process_stage_trains_three_models_and_shows_one_chain(tmp_path):
    """The process stage at a toy size: the shown chain is the data's, its rewards are each saved model's."""
    from dataclasses import replace

    from icrm.commands.demo import FULL, QUICK, demo_chain
    from icrm.commands.demo.process import process_stage
    from icrm.data import load_examples
    from icrm.modeling import RewardModel

    assert FULL.process and not QUICK.process
    settings = replace(FULL, steps_train=64, steps_test=40, steps_epochs=1.0)
    process = process_stage(tmp_path, settings)
    test = load_examples(str(tmp_path / "data" / "steps" / "test.jsonl")).examples
    shown = test[demo_chain(test)]
    assert (process["chain"]["steps"], process["chain"]["labels"]) == (shown.steps, shown.labels)
    assert set(process["step_rewards"]) == set(process["test"]) == {"BT", "ICRM", "PRM"}
    for method, rewards in process["step_rewards"].items():
        rm = RewardModel.from_pretrained(str(tmp_path / "models" / f"steps-{method.lower()}"))
        assert rewards == pytest.approx(rm.step_rewards(shown.prompt, shown.steps), abs=1e-5)
        assert rm.training_config["method"] == {"BT": "bt", "ICRM": "icrm", "PRM": "prm"}[method]
        assert 0.0 <= process["test"][method]["step_auroc"] <= 1.0
    page = (tmp_path / "steps-explain.html").read_text()
    assert all(method in page for method in ("BT", "ICRM", "PRM")) and "✓" in page and "✗" in page  # step labels
    assert (tmp_path / "steps-explain.png").stat().st_size > 0
