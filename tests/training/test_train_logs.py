"""What training logs and shows: TRL's reward metrics beside icrm's terms, loss windows weighted by rows and
ending at the last step, one kind of progress bar, and TRL's defaults working on a machine without bf16."""

from __future__ import annotations

import io
import json
import warnings

import pytest
from datasets import Dataset
from helpers import FORMATS, config
from rich.console import Console

import icrm.evaluation
import icrm.training.callbacks
import icrm.training.config
from icrm import ICRMConfig, ICRMTrainer, outputs
from icrm.commands.train import train_reward_model
from icrm.modeling import ModelSpec
from icrm.training import RichProgress

TRL_METRICS = {"min_reward", "mean_reward", "max_reward", "margin", "accuracy", "num_tokens"}


def test_trl_reward_metrics_are_logged_beside_icrm_terms(tmp_path, base):  # noqa: F811
    rows = FORMATS["standard"]  # 6 pairs: batches of 4 and 2
    held_out = [{"prompt": "Where is the sun?", "chosen": "Up.", "rejected": "Down there."},
                {"prompt": "What color is the sky?", "chosen": "Four.", "rejected": "Blue, mostly."},
                {"prompt": "How many legs has a dog?", "chosen": "In the sky.", "rejected": "Seven."}]
    # float32: evaluation batches a pair's rows with their prompt run once, rm.score runs each row alone, and
    # under bf16 autocast the two would differ by rounding
    args = config(tmp_path, max_steps=-1, num_train_epochs=2, logging_steps=1, bf16=False)
    trainer = ICRMTrainer(str(base), args, train_dataset=Dataset.from_list(rows), eval_dataset=Dataset.from_list(held_out))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4]
    for entry in logged:
        assert TRL_METRICS | {"bt", "icrm", "sft"} <= set(entry)
        assert entry["min_reward"] <= entry["mean_reward"] <= entry["max_reward"]
    tokens = sum(seq.length for seq in trainer.train_dataset.all_sequences())  # every non-padding token, each epoch
    assert [entry["num_tokens"] for entry in logged][1::2] == [tokens, 2 * tokens]

    metrics = trainer.evaluate()  # one batch of 3 pairs: its min, mean and max are the set's
    rm = trainer.reward_model
    chosen = rm.score([r["prompt"] for r in held_out], [r["chosen"] for r in held_out])
    rejected = rm.score([r["prompt"] for r in held_out], [r["rejected"] for r in held_out])
    assert metrics["eval_margin"] == pytest.approx(sum(c - r for c, r in zip(chosen, rejected)) / 3, abs=1e-5)
    assert metrics["eval_min_reward"] == pytest.approx(min(chosen + rejected), abs=1e-5)
    assert metrics["eval_max_reward"] == pytest.approx(max(chosen + rejected), abs=1e-5)
    assert metrics["eval_mean_reward"] == pytest.approx(sum(chosen + rejected) / 6, abs=1e-5)
    assert metrics["eval_num_tokens"] == 2 * tokens and {"eval_bt", "eval_icrm", "eval_sft"} <= set(metrics)


def test_logged_loss_weighs_rows_and_every_curve_ends_at_the_last_step(tmp_path, base, monkeypatch):  # noqa: F811
    """6 pairs in batches of 4 then 2: steps 2 and 4 are short. A short batch counts for its rows, and the
    last step (5, not a multiple of logging_steps) is logged with the loss and every term, over its 2 last steps."""
    plotted = {}
    monkeypatch.setattr(icrm.evaluation, "plot_loss_curves", lambda curves, path, **_: plotted.update(curves))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in FORMATS["standard"]))

    def run(name, logging_steps):
        args = ICRMConfig(output_dir=str(tmp_path / name), use_cpu=True, bf16=False, max_steps=5,
                          per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=logging_steps, report_to=[])
        return train_reward_model(str(data), str(tmp_path / name), args, ModelSpec(str(base)))["log_history"]

    single = {entry["step"]: entry for entry in run("every-step", 1) if "loss" in entry}  # each value: one batch's
    history = run("every-2", 2)
    windows = {2: [1, 2], 4: [3, 4], 5: [4, 5]}
    rows = {1: 4, 2: 2, 3: 4, 4: 2, 5: 4}
    logged = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in logged] == list(windows)
    for entry in logged:
        steps = windows[entry["step"]]
        for name in ("loss", "bt", "icrm", "sft", "accuracy", "margin"):
            expected = sum(single[s][name] * rows[s] for s in steps) / sum(rows[s] for s in steps)
            assert entry[name] == pytest.approx(expected, rel=1e-5, abs=1e-6), (entry["step"], name)
    summary = history[-1]
    assert "train_loss" in summary and not {"bt", "icrm", "sft"} & set(summary)  # no leftover terms, no loss-less point
    assert set(plotted) == {"loss", "bt", "icrm", "sft"}
    assert all([step for step, _ in curve] == list(windows) for curve in plotted.values())  # panels share steps


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_on_a_cpu_without_bf16_matmuls_says_it_is_slow(tmp_path, monkeypatch, capsys, fast):
    monkeypatch.setattr(icrm.training.config, "_bf16_cpu_fast", lambda: fast)
    monkeypatch.setitem(outputs.QUIET, "value", False)
    ICRMConfig(output_dir=str(tmp_path / "out"), bf16=True, use_cpu=True, report_to=[])
    ICRMConfig(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to=[])
    note = capsys.readouterr().err.strip()
    assert (note.count("slower than float32") == 1) != fast and note.count("\n") == 0


def test_config_defaults_warn_about_nothing_and_train_without_bf16(tmp_path, base, monkeypatch, capsys):  # noqa: F811
    """TRL's bf16 default stops transformers where there is no bf16 device; icrm trains in float32 after one line."""
    monkeypatch.setattr(icrm.training.config, "_bf16_device_available", lambda: False)  # as on a CPU-only machine
    monkeypatch.setitem(outputs.QUIET, "value", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers' FutureWarning about gradient_checkpointing, among others
        args = ICRMConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4, report_to=[])
    assert args.bf16 is False and args.activation_checkpointing and args.gradient_checkpointing  # TRL's checkpointing
    note = capsys.readouterr().err.strip()
    assert note.count("\n") == 0 and "bf16" in note and "float32" in note
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", UserWarning)  # e.g. torch's about pinning memory with no device to pin for
        trainer = ICRMTrainer(str(base), args, train_dataset=Dataset.from_list(FORMATS["standard"]))
        trainer.train()
    assert trainer.state.global_step == 1
    capsys.readouterr()
    monkeypatch.setattr(icrm.training.config, "_bf16_cpu_fast", lambda: True)  # a CPU with bf16 matmuls
    assert ICRMConfig(output_dir=str(tmp_path), use_cpu=True).bf16  # TRL's default, where it can run: unchanged
    assert capsys.readouterr().err == ""
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # the deprecated name still works
        old_name = ICRMConfig(output_dir=str(tmp_path), use_cpu=True, gradient_checkpointing=False)
    assert old_name.activation_checkpointing is False


@pytest.fixture
def default_logging():
    """transformers' logging as a user has it (the CLI tests in this process turn it down to errors)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    yield
    transformers.logging.set_verbosity(verbosity)


def test_training_draws_one_kind_of_bar_and_plain_lines_off_a_terminal(tmp_path, base, monkeypatch,  # noqa: F811
                                                                       default_logging):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    log = io.StringIO()
    monkeypatch.setattr(outputs, "console", Console(file=log, width=80))  # a file: not a terminal
    monkeypatch.setattr(icrm.training.callbacks, "console", outputs.console)
    monkeypatch.setitem(outputs.QUIET, "value", False)
    rows = Dataset.from_list(FORMATS["standard"])
    trainer = ICRMTrainer(str(base), config(tmp_path, logging_steps=1), train_dataset=rows)
    kinds = [type(callback) for callback in trainer.callback_handler.callbacks]
    assert ProgressCallback not in kinds and kinds.count(RichProgress) == 1
    trainer.train()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert "tokenizing train_dataset 6/6" in text and "training 2/2" in text and "step 2  loss=" in text
    quiet = ICRMTrainer(str(base), config(tmp_path, disable_tqdm=True), train_dataset=rows)
    kinds = [type(callback) for callback in quiet.callback_handler.callbacks]
    assert PrinterCallback in kinds and RichProgress not in kinds  # disable_tqdm: transformers' plain log lines, no bar



@pytest.mark.parametrize("interval, shown", [(0.0, ["work 1/3", "work 2/3", "work 3/3"]), (3600.0, ["work 3/3"])])
def test_progress_off_a_terminal_is_plain_lines(monkeypatch, interval, shown):
    """Redirected to a file, a bar is a line every LINE_INTERVAL_S seconds and one at the end, never a \\r."""
    log = io.StringIO()
    monkeypatch.setattr(outputs, "console", Console(file=log, width=80))
    monkeypatch.setitem(outputs.QUIET, "value", False)
    monkeypatch.setattr(outputs, "LINE_INTERVAL_S", interval)
    with outputs.progress("work", 3) as advance:
        for _ in range(3):
            advance(1)
    lines = log.getvalue().splitlines()
    assert [" ".join(line.split()[:2]) for line in lines] == shown
    assert "\r" not in log.getvalue()
    assert all(line.endswith(")") for line in lines)  # "(0:00:00)" or "(0:00:00, 0:00:00 left)"
