"""End-to-end CLI runs of sft → train → eval on a slice of the real HH data."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import hf_score, write_jsonl

FAST = ["--max-steps", "3", "--batch-size", "4", "--max-length", "192", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, cli):
    """sft, then ICRM training with the SFT model as generator and backbone."""
    import gzip

    from helpers import HH_FILE

    root = tmp_path_factory.mktemp("pipeline")
    with gzip.open(HH_FILE, "rt") as handle:
        rows = [json.loads(line) for _, line in zip(range(200), handle)]
    rows = [r for r in rows if len(r["chosen"]) + len(r["rejected"]) < 1200][:40]
    data = write_jsonl(root / "hh.jsonl", rows)
    cache = root / "cache"
    sft = cli("sft", "--data", data, "--output", root / "sft", *FAST)
    assert sft.exit_code == 0, sft.output
    train = cli(
        "train", "--data", data, "--model", root / "sft", "--method", "icrm", "--generator", root / "sft",
        "--output", root / "rm", "--cache-dir", cache, "--eval-data", data, *FAST,
    )
    assert train.exit_code == 0, train.output
    return root, data, cache


def test_pipeline_writes_checkpoint_metrics_and_plots(pipeline):
    root, _, _ = pipeline
    rm_dir = root / "rm"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "icrm_config.json", "icrm_state.json",
                 "icrm_lm_head.safetensors", "metrics.json", "config.yaml", "losses.png"):
        assert (rm_dir / name).exists(), name
    assert not list(rm_dir.glob("*.bin"))
    metrics = json.loads((rm_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["generator_cache"] == "miss"
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    logged = {k for entry in metrics["log_history"] for k in entry}
    assert {"eval_bt", "eval_icrm", "eval_sft"} <= logged
    state = json.loads((rm_dir / "icrm_state.json").read_text())
    assert state["consistency_ema"] != 0.5  # the EMA moved during training and was saved


def test_eval_command_writes_accuracy(pipeline, cli):
    root, data, _ = pipeline
    out = root / "eval" / "metrics.json"
    as_trained = ("--max-length", "192")
    result = cli("eval", "--model", root / "rm", "--data", data, "--output", out, *as_trained)
    assert result.exit_code == 2 and "response tokens do not fit in --max-length 192" in result.stderr
    result = cli("eval", "--model", root / "rm", "--data", data, "--output", out, *as_trained, "--skip-invalid")
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["n"] + metrics["dropped_over_length"] == 40 and metrics["dropped_over_length"] > 0
    assert metrics["max_length"] == 192 and 0.0 <= metrics["accuracy"] <= 1.0
    trained = json.loads((root / "rm" / "metrics.json").read_text())
    assert trained["eval_accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)  # the same pairs, the same way
    assert (root / "eval" / "metrics_margins.png").exists()


def test_export_matches_transformers_through_chat_template(pipeline):
    from icrm.data import load_examples
    from icrm.modeling import RewardModel

    root, data, _ = pipeline
    rm = RewardModel.from_pretrained(str(root / "rm"))
    examples = load_examples(data).examples[:5]
    ours = rm.score([e.prompt for e in examples], [e.rejected for e in examples])
    theirs = [hf_score(root / "rm", e.prompt, e.rejected) for e in examples]
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert len(set(round(s, 4) for s in ours)) > 1  # not a constant function


def test_second_run_reuses_generator_cache_and_changes_invalidate_it(pipeline, cli, monkeypatch):
    import shutil

    import icrm.modeling.generator
    from icrm.modeling import load_causal_lm

    root, data, cache = pipeline
    shutil.copytree(root / "sft", root / "gen")  # a copy keeps the files' contents and times: the cache still holds
    args = ["train", "--data", data, "--model", root / "sft", "--generator", root / "gen", "--cache-dir", cache]
    loads = []
    real_load = icrm.modeling.generator.load_generator
    monkeypatch.setattr(icrm.modeling.generator, "load_generator", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    def cache_state(out, *extra):
        result = cli(*args, "--output", root / out, *FAST[:-2], "--lr", "1e-3", *extra)
        assert result.exit_code == 0, result.output
        return json.loads((root / out / "metrics.json").read_text())["generator_cache"]

    assert cache_state("again") == "hit" and loads == []  # a hit never loads the generator
    assert cache_state("shorter", "--max-length", "160") == "miss" and len(loads) == 1
    fewer = write_jsonl(root / "fewer.jsonl", [json.loads(l) for l in data.read_text().splitlines()[:30]])
    result = cli(*args[:2], fewer, *args[3:], "--output", root / "fewer", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((root / "fewer" / "metrics.json").read_text())["generator_cache"] == "miss"
    # the generator retrained in place (one weight changed, same files and sizes): the cache is stale
    model, tokenizer = load_causal_lm(str(root / "gen"))
    with torch.no_grad():
        model.model.norm.weight.add_(0.5)
    model.save_pretrained(root / "gen")
    assert cache_state("retrained") == "miss"


def test_continue_training_from_checkpoint(pipeline, cli):
    root, data, _ = pipeline
    result = cli("train", "--data", data, "--model", root / "rm", "--method", "bt", "--output", root / "rm2", *FAST)
    assert result.exit_code == 0, result.output
    config = json.loads((root / "rm2" / "icrm_config.json").read_text())
    assert config["method"] == "bt" and config["model"]["name"] == str(root / "rm")


@pytest.mark.parametrize("method", ["bt", "grm", "icrm-nosft"])
def test_each_preset_trains(tmp_path, hh_slice, cli, method):
    result = cli("train", "--data", hh_slice, "--method", method, "--generator", "uniform",
                 "--output", tmp_path / method, "--max-steps", "2", "--batch-size", "4", "--max-length", "128")
    assert result.exit_code == 0, result.output
    logged = {k for e in json.loads((tmp_path / method / "metrics.json").read_text())["log_history"] for k in e}
    assert ("sft" in logged) == (method == "grm") and ("icrm" in logged) == (method == "icrm-nosft")


def test_pointwise_training(tmp_path, cli):
    rows = [{"prompt": f"what is {i}+1?", "response": f"it is {i + 1 if i % 2 else i}", "label": i % 2} for i in range(16)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    result = cli("train", "--data", data, "--output", tmp_path / "rm", "--max-steps", "2", "--batch-size", "4",
                 "--max-length", "64", "--eval-data", data)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["format"] == "pointwise" and "eval_accuracy" in metrics


def test_config_file_supplies_options_and_command_line_wins(tmp_path, hh_slice, cli):
    config = tmp_path / "cfg.yaml"
    config.write_text("method: bt\nmax-steps: 2\nbatch_size: 4\nmax_length: 128\n")
    result = cli("train", "--data", hh_slice, "--output", tmp_path / "rm", "--config", config, "--max-steps", "1")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    saved = json.loads((tmp_path / "rm" / "icrm_config.json").read_text())
    assert metrics["steps"] == 1 and saved["method"] == "bt" and saved["per_device_train_batch_size"] == 4


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"prompt": "q", "chosen": "a"}], [], "bad.jsonl:1: rejected: missing column"),
        ([{"prompt": "q", "chosen": "", "rejected": "b"}], [], "bad.jsonl:1: chosen: empty response"),
        (None, [], "bad.jsonl:2: invalid JSON"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}], ["--method", "ppo"], "--method must be one of bt, grm, icrm, icrm-nosft, prm, prm-icrm, got 'ppo'"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}], ["--lambda", "1.5"], "--lambda must be in [0, 1]"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(tmp_path, cli, rows, extra, message):
    bad = tmp_path / "bad.jsonl"
    if rows is None:
        bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{not json}\n')
    else:
        write_jsonl(bad, rows)
    out = tmp_path / "out"
    result = cli("train", "--data", bad, "--output", out, *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"] or all(
        not p.name.startswith(".out") for p in tmp_path.iterdir()
    )


def test_generator_with_another_tokenizer_is_an_error(tmp_path, hh_slice, cli):
    from icrm.modeling import build_causal_lm, train_tokenizer

    tok = train_tokenizer(["completely different text corpus"] * 10, 300)
    other = tmp_path / "other-gen"
    build_causal_lm("tiny", tok).save_pretrained(other)
    tok.save_pretrained(other)
    result = cli("train", "--data", hh_slice, "--generator", other, "--output", tmp_path / "rm", "--max-steps", "1")
    assert result.exit_code == 2
    assert "tokenizer differs from the reward model's" in result.stderr
    assert not (tmp_path / "rm").exists()


def test_eval_accuracy_of_training_equals_icrm_eval(tmp_path, cli):
    """One accuracy: the run's eval_accuracy counts every pair, like `icrm eval` on the same model and file.

    13 test pairs in batches of 4 (4+4+4+1): a mean of per-batch accuracies would weight the last pair 4×.
    """
    assert cli("data", "synth", "--task", "noisy", "--output", tmp_path / "d", "--n-test", "13").exit_code == 0
    result = cli("train", "--data", tmp_path / "d" / "train.jsonl", "--eval-data", tmp_path / "d" / "test.jsonl",
                 "--method", "bt", "--output", tmp_path / "rm", "--max-steps", "6", "--batch-size", "4",
                 "--lr", "1e-3", "--max-length", "128")
    assert result.exit_code == 0, result.output
    trained = json.loads((tmp_path / "rm" / "metrics.json").read_text())["eval_accuracy"]
    result = cli("eval", "--model", tmp_path / "rm", "--data", tmp_path / "d" / "test.jsonl", "--output", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["n"] == 13
    assert trained == pytest.approx(evaluated["accuracy"], abs=1e-9)
    assert (trained * 26) == pytest.approx(round(trained * 26), abs=1e-9)  # k/13 (a tie counts half)
