"""The demo report's sections and plots, from a run's numbers (no training); the runs themselves are in tests/e2e/."""

from __future__ import annotations

import pytest


def test_demo_dpo_section_and_plot(tmp_path):
    """The full demo's policy-loop section and bar chart, from a metrics["dpo"] entry (no training)."""
    from icrm.commands.demo.figures import plot_dpo
    from icrm.commands.demo.report import dpo_report

    policy = {"mean_reward": 0.5, "std_reward": 1.0, "mean_words": 20.0, "win_rate": 0.3, "tie_rate": 0.4,
              "lose_rate": 0.3}
    dpo = {"prompts": 200, "samples_per_prompt": 4, "pairs": {"BT": 150, "ICRM": 151},
           "policies": {name: dict(policy) for name in ("SFT", "DPO-BT", "DPO-ICRM")}}
    plot_dpo(dpo, tmp_path / "dpo.png")
    assert (tmp_path / "dpo.png").stat().st_size > 0
    text = "\n".join(dpo_report(dpo))
    assert "| DPO-ICRM | 0.500 ± 1.00 | 0.30 / 0.40 / 0.30 | 20.0 |" in text and "![dpo](dpo.png)" in text


def _chain(steps: int, labels: list[int]):
    from icrm.data import StepExample

    return StepExample(prompt=[{"role": "user", "content": "p"}], steps=[f"s{k}" for k in range(steps)], labels=labels)


def test_demo_chain_is_the_first_that_goes_wrong_in_its_middle():
    from icrm.commands.demo import demo_chain

    chains = [
        _chain(5, [1, 1, 1, 1, 1]),  # right
        _chain(3, [1, 0, 0]),  # too short
        _chain(4, [0, 0, 0, 0]),  # wrong from the first step
        _chain(4, [1, 1, 1, 0]),  # wrong only at its last step
        _chain(4, [1, 1, 0, 0]),  # the one
        _chain(6, [1, 0, 0, 0, 0, 0]),
    ]
    assert demo_chain(chains) == 4
    with pytest.raises(ValueError, match="no test chain"):
        demo_chain(chains[:4])


def test_demo_process_section_and_plot(tmp_path):
    """The full demo's process-reward section from a metrics["process"] entry (no training), values by hand."""
    from icrm.commands.demo.figures import plot_process
    from icrm.commands.demo.report import process_report

    process = {
        "chain": {"id": "steps-test-00007", "prompt": "It is Monday. Count forward 1 day, then 2, then 1. What day is it?",
                  "steps": ["1 day after Monday is Tuesday", "2 days after Tuesday is Friday",
                            "1 day after Friday is Saturday", "2 days after Saturday is Monday"],
                  "labels": [1, 0, 0, 0]},
        "step_rewards": {"BT": [-1.0, -2.0, -3.0, -0.5], "ICRM": [0.5, 1.0, 2.0, 0.0], "PRM": [2.0, -1.0, -2.0, -3.0]},
        "test": {"BT": {"step_auroc": 0.5, "first_error_f1": None, "localization": 0.25},
                 "ICRM": {"step_auroc": 0.55, "first_error_f1": 0.1, "localization": 0.3},
                 "PRM": {"step_auroc": 0.9, "first_error_f1": 0.8, "localization": 0.85}},
        "n_test": 300,
        "n_train": 1000,
    }
    plot_process(process, tmp_path / "steps.png")
    assert (tmp_path / "steps.png").stat().st_size > 0
    text = "\n".join(process_report(process))
    # σ(−2) = 0.119, σ(1) = 0.731, σ(−1) = 0.269
    assert "| 2 | 2 days after Tuesday is Friday | ✗ wrong | 0.12 | 0.73 | 0.27 |" in text
    assert "| 1 | 1 day after Monday is Tuesday | ✓ right | 0.27 | 0.62 | 0.88 |" in text
    assert "* BT: σ(r) spans 0.05–0.38 on this chain; the first step below 0.5 is step 1, but the true first wrong step is 2." in text
    assert "* ICRM: σ(r) spans 0.50–0.88 on this chain; the first step below 0.5 is no step, but the true first wrong step is 2." in text  # σ(0) = 0.5 is not below
    assert "* PRM: σ(r) spans 0.05–0.88 on this chain; the first step below 0.5 is step 2, the true first wrong step." in text
    assert "| BT | outcome labels | 0.500 | n/a | 0.250 |" in text
    assert "below chance" not in text  # 0.5 is not below
    process["test"]["BT"]["step_auroc"] = 0.46
    text = "\n".join(process_report(process))
    assert "* BT's step AUROC, 0.460, is below chance (0.5, the dotted line in the plot)" in text
    assert "nothing trains its scores of unfinished chains" in text and "PRM's step AUROC" not in text
    assert "| PRM | step labels | 0.900 | 0.800 | 0.850 |" in text
    assert "![steps](steps.png)" in text and "![steps-explain](steps-explain.png)" in text




def _lead_metrics(length: dict, noisy: tuple[float, float], bon: dict | None = None) -> dict:
    return {
        "mode": "quick", "settings": {"n_test": 200},
        "shortcut": {"task": "length", "lambda": 0.3, "n_train": 300, "n_test": 500,
                     "accuracy": {m: {f"length/{s}": v for s, v in splits.items()} for m, splits in length.items()}},
        "accuracy": {"BT": {"noisy/test": noisy[0]}, "ICRM": {"noisy/test": noisy[1]}},
        "bon": bon or {},
    }


def test_demo_lead_says_where_bt_and_icrm_differ_and_where_they_tie():
    """The report's first section, from a run's numbers (no training): a lead, a tie, and a lead that did not show."""
    from icrm.commands.demo.report import lead

    ahead = {"BT": {"test_mixed": 0.5, "test_reversed": 0.018}, "ICRM": {"test_mixed": 0.53, "test_reversed": 0.078}}
    text = "\n".join(lead(_lead_metrics(ahead, (0.74, 0.725))))
    assert text.startswith("## BT against ICRM in this run")
    assert "**Length shortcut: ICRM follows it less than BT in this run**: `length/test_mixed` BT 0.500, ICRM 0.530 " \
           "(+3.0 points); `length/test_reversed` BT 0.018, ICRM 0.078 (+6.0 points)" in text
    # 2 standard errors of a 200-pair accuracy near 0.73: 2·√(0.7325·0.2675/200) = 6.3 points
    assert "**Noisy labels: they tie** (`noisy/test` BT 0.740, ICRM 0.725, -1.5 points; two standard errors of a " \
           "200-pair accuracy are 6.3 points)" in text
    assert "Best-of-N verifiers (without `--quick`): they tie" in text

    behind = {"BT": {"test_mixed": 0.55, "test_reversed": 0.05}, "ICRM": {"test_mixed": 0.54, "test_reversed": 0.09}}
    text = "\n".join(lead(_lead_metrics(behind, (0.70, 0.80))))
    assert "this run does not show ICRM's lead over BT" in text and "**Noisy labels: ICRM leads**" in text


def test_demo_bon_report_says_why_the_verifiers_tie():
    from icrm.commands.demo.report import bon_report, lead

    def result(accuracy: list[float]) -> dict:
        ns = ["1", "2", "4", "8"]
        return {"n": [1, 2, 4, 8], "num_prompts": 100, "accuracy": dict(zip(ns, accuracy)),
                "random": dict.fromkeys(ns, 0.4), "pass": dict.fromkeys(ns, 0.98), "majority": dict.fromkeys(ns, 0.42)}

    bon = {"BT": result([0.4, 0.62, 0.83, 0.95]), "ICRM": result([0.4, 0.62, 0.83, 0.95])}
    agreement = {"same_order": 100, "problems": 100, "distinct_candidates": 3.18, "mean_abs_score_gap": 0.8}
    text = "\n".join(bon_report(bon, agreement))
    assert "* The two verifiers differ by at most 0.000 at any n" in text
    assert "(their scores differ by 0.80 on average), but they put the right and the wrong candidates in the same " \
           "order in 100 of 100 problems" in text and "8 candidates hold 3.2 distinct ones on average" in text
    ahead = {"BT": {"test_mixed": 0.5, "test_reversed": 0.0}, "ICRM": {"test_mixed": 0.6, "test_reversed": 0.1}}
    text = "\n".join(lead({**_lead_metrics(ahead, (0.7, 0.7), bon), "mode": "full"}))
    assert "* **Best-of-8 verifiers: they tie** (BT 0.950, ICRM 0.950)" in text


def test_demo_package_exports_what_the_cli_and_the_benchmarks_import():
    import icrm.commands.demo as demo

    assert [name for name in demo.__all__ if not hasattr(demo, name)] == []
    assert {"run_demo", "run_verification", "FULL", "QUICK", "LABEL_FLIP", "DemoSettings", "demo_chain"} <= set(demo.__all__)


@pytest.mark.parametrize("args, message", [
    ([], "--real needs --data-dir (or $ICRM_SHARED_DATA)"),
    (["--data-dir", "nowhere"], "alpacaeval-prefs/train.jsonl.gz: not found; --data-dir must be the shared data folder"),
])
def test_real_demo_without_its_data_is_one_line_exit_2(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("ICRM_SHARED_DATA", raising=False)
    result = cli("demo", "--real", "--output", tmp_path / "demo", *args)
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: ") and message in result.stderr
    assert not (tmp_path / "demo").exists()


def test_real_report_says_when_bt_and_icrm_rank_every_pair_alike():
    from icrm.commands.demo.real import render_real_report
    from icrm.commands.demo.settings import REAL, REAL_EVALS

    scores = {name: 0.5 for name in REAL_EVALS}
    metrics = {"settings": vars(REAL), "threads": 1, "elapsed_s": 60.0,
               "pairs": {"train": 32, **{name: 8 for name in REAL_EVALS}},
               "accuracy": {"BT": dict(scores), "ICRM": dict(scores)}}
    assert "score alike on every column" in render_real_report(metrics)
    metrics["accuracy"]["ICRM"]["llmbar"] = 0.625
    text = render_real_report(metrics)
    assert "score alike" not in text and "| ICRM | 0.500 | 0.500 | 0.500 | 0.625 |" in text and "1 epoch," in text
