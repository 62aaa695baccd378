"""The Python API as a TRL user calls it: ``ICRMTrainer``/``ICRMConfig`` with RewardTrainer's arguments,
TRL's dataset formats, peft, and a checkpoint transformers loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from helpers import FORMATS, QA, ROWS, config, hf_score, user

from icrm import DataError, ICRMTrainer, RewardModel

README = Path(__file__).resolve().parents[1] / "README.md"
def saved_weights(directory) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "model.safetensors"))


def assert_transformers_scores_like_icrm(directory) -> list[float]:
    """The export scores in AutoModelForSequenceClassification (through the chat template) as RewardModel.score does."""
    ours = RewardModel.from_pretrained(str(directory)).score([q for q, _, _ in QA], [c for _, c, _ in QA])
    theirs = [hf_score(directory, user(q), c) for q, c, _ in QA]
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert len({round(s, 5) for s in ours}) > 1  # not a constant function
    return ours


@pytest.mark.parametrize("fmt, lora", [(fmt, False) for fmt in FORMATS] + [("standard", True), ("unpaired", True)])
def test_trl_formats_train_and_export_a_transformers_reward_model(tmp_path, base, fmt, lora):
    from peft import LoraConfig

    trainer = ICRMTrainer(
        model=str(base),
        args=config(tmp_path),
        train_dataset=Dataset.from_list(FORMATS[fmt]),
        peft_config=LoraConfig(r=4, lora_alpha=8, modules_to_save=["score"]) if lora else None,
    )
    # the rows as icrm understood them: prompt turns and responses, split as TRL splits them
    examples = trainer.train_dataset.examples
    if fmt == "unpaired":
        assert trainer.data_format == "pointwise"
        assert [(e.prompt, e.response, e.label) for e in examples] == [
            (user(q), text, label) for q, c, r in ROWS for text, label in ((c, 1), (r, 0))]
    else:
        assert [(e.prompt, e.chosen, e.rejected) for e in examples] == [(user(q), c, r) for q, c, r in ROWS]
        assert [e.margin for e in examples] == [0.5 if fmt == "standard" else None] * len(ROWS)
    trainer.train()
    assert trainer.state.global_step == 2
    assert trainer.reward_model.decoder.is_activation_checkpointing  # TRL's default gradient_checkpointing=True
    trainer.save_model(str(tmp_path / "rm"))
    assert_transformers_scores_like_icrm(tmp_path / "rm")

    weights, before = saved_weights(tmp_path / "rm"), saved_weights(base)
    assert not any("lora" in key for key in weights)  # adapters merged
    assert any(not torch.equal(weights[k], before[k]) for k in before if k.startswith("model.layers."))  # trained
    if lora:
        # the export merged a copy: the trainer's model still trains its adapters, and saves the same again
        assert "lora" in " ".join(n for n, p in trainer.reward_model.named_parameters() if p.requires_grad)
        trainer.save_model(str(tmp_path / "again"))
        assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "rm" / "model.safetensors").read_bytes()


def test_readme_python_api_runs_as_written(tmp_path):
    """The README's Python API blocks, each alone, after a small version of the quick start's data and generator
    (test_readme.py runs them after the real one and checks what they print)."""
    from icrm.commands.data import write_task
    from icrm.data import example_texts, load_examples
    from icrm.modeling import build_causal_lm, train_tokenizer

    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    write_task("noisy", tmp_path / "runs" / "noisy", seed=0, n_train=24, n_test=4)
    tok = train_tokenizer(example_texts(load_examples(tmp_path / "runs" / "noisy" / "train.jsonl").examples), 1024)
    build_causal_lm("tiny", tok).save_pretrained(tmp_path / "runs" / "gen")
    tok.save_pretrained(tmp_path / "runs" / "gen")
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "ICRM_CACHE": str(tmp_path / "cache")}
    for code in blocks:  # each on its own, in a fresh interpreter
        done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("rm-api", "rm-lora"):
        saved = json.loads((tmp_path / "runs" / name / "icrm_config.json").read_text())
        assert saved["method"] == "icrm" and saved["model"]["name"] == "runs/gen"
        rm = RewardModel.from_pretrained(str(tmp_path / "runs" / name))
        prompt = [{"role": "user", "content": "Describe the weather in Paris."}]
        assert rm.score([prompt], ["it is clear"]) == pytest.approx([hf_score(tmp_path / "runs" / name, prompt, "it is clear")],
                                                                   abs=1e-5)
    assert saved["generator"] == "self"
    assert json.loads((tmp_path / "runs" / "rm-api" / "icrm_config.json").read_text())["generator"] == "runs/gen"
    assert len(list((tmp_path / "cache").rglob("meta.json"))) == 1  # the generator pass of the first block


def test_loaded_models_and_presets(tmp_path, base):
    """model= a PreTrainedModel (causal LM or sequence classifier, with processing_class), a RewardModel, or 'tiny'."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    data = Dataset.from_list(FORMATS["standard"])
    causal = AutoModelForCausalLM.from_pretrained(base)
    trainer = ICRMTrainer(causal, config(tmp_path / "a"), train_dataset=data, processing_class=AutoTokenizer.from_pretrained(base))
    assert trainer.reward_model.decoder is causal.model  # the given model, with a value head beside it
    classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    trainer = ICRMTrainer(classifier, config(tmp_path / "b", method="bt"), train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(base))
    assert trainer.reward_model.score_head is classifier.score  # its score head is the value head
    trainer.train()
    trainer.save_model(str(tmp_path / "b-rm"))
    assert_transformers_scores_like_icrm(tmp_path / "b-rm")
    rm = RewardModel.from_pretrained(str(base))
    trainer = ICRMTrainer(rm, config(tmp_path / "c", pad_to_multiple_of=16), train_dataset=data)
    assert trainer.reward_model is rm
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape[1] == 16 and batch["attention_mask"].sum(1).max() < 16
    tiny = ICRMTrainer("tiny", config(tmp_path / "d"), train_dataset=data).reward_model
    assert "Blue" in tiny.tokenizer.decode(tiny.tokenizer.encode("Blue")) and tiny.config.num_hidden_layers == 2


def test_evaluate_accuracy_is_the_share_of_pairs_ranked_right(tmp_path, base):
    trainer = ICRMTrainer(str(base), config(tmp_path, learning_rate=1e-2), train_dataset=Dataset.from_list(FORMATS["standard"]))
    trainer.train()
    held_out = [{"prompt": "Where is the sun?", "chosen": "Up.", "rejected": "Down there."},
                {"prompt": "What color is the sky?", "chosen": "Four.", "rejected": "Blue, mostly."},
                {"prompt": "How many legs has a dog?", "chosen": "In the sky.", "rejected": "Seven."}]
    metrics = trainer.evaluate(Dataset.from_list(held_out))
    rm = trainer.reward_model
    chosen = rm.score([r["prompt"] for r in held_out], [r["chosen"] for r in held_out])
    rejected = rm.score([r["prompt"] for r in held_out], [r["rejected"] for r in held_out])
    by_hand = sum((c > r) + 0.5 * (c == r) for c, r in zip(chosen, rejected)) / len(held_out)
    assert metrics["eval_accuracy"] == pytest.approx(by_hand)
    assert {"eval_loss", "eval_bt", "eval_icrm", "eval_sft"} <= set(metrics)


def test_evaluating_during_training_does_not_change_what_is_learnt(tmp_path, base):
    """An eval dataloader draws its seed from torch's RNG; evaluate() gives the draw back, so dropout is unchanged."""
    rows = Dataset.from_list(FORMATS["standard"])
    weights = []
    for name, evaluated in (("plain", {}), ("evaluated", {"eval_dataset": rows})):
        options = {"eval_strategy": "steps", "eval_steps": 1} if evaluated else {}
        trainer = ICRMTrainer(str(base), config(tmp_path / name, max_steps=3, **options), train_dataset=rows, **evaluated)
        trainer.train()
        weights.append({k: v.clone() for k, v in trainer.reward_model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_evaluate_reads_a_given_dataset_as_the_training_data(tmp_path, base):
    """The dataset given to ``evaluate`` must have the training format, and its steps are joined by step_separator."""
    chains = [{"prompt": q, "completions": [c, "So it is."], "labels": [True, True]} for q, c, _ in QA] + [
        {"prompt": q, "completions": ["Let me see.", r], "labels": [True, False]} for q, _, r in QA]
    data = Dataset.from_list(chains)
    trainer = ICRMTrainer(str(base), config(tmp_path, step_separator=" ; "), train_dataset=data)
    metrics = trainer.evaluate(data)
    rewards = trainer.reward_model.score([r["prompt"] for r in chains], [" ; ".join(r["completions"]) for r in chains])
    assert metrics["eval_min_reward"] == pytest.approx(min(rewards), abs=1e-5)
    assert metrics["eval_max_reward"] == pytest.approx(max(rewards), abs=1e-5)
    assert metrics["eval_mean_reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
    with pytest.raises(DataError, match=r"^eval_dataset:1: .*needs stepwise data, got pairwise"):
        trainer.evaluate(Dataset.from_list(FORMATS["standard"]))


def test_generator_pass_runs_at_the_start_of_train(tmp_path, base):
    args = config(tmp_path, generator=str(base), cache_dir=str(tmp_path / "cache"))
    trainer = ICRMTrainer(str(base), args, train_dataset=Dataset.from_list(FORMATS["unpaired"]))
    assert not (tmp_path / "cache").exists() and trainer.generator_cache == "unused"
    trainer.train()
    (meta,) = (tmp_path / "cache").rglob("meta.json")
    assert trainer.generator_cache == "miss" and trainer.train_dataset.weights is not None
    # pointwise data: the reference's sampling settings, recorded in the checkpoint's config
    assert (json.loads(meta.read_text())["temperature"], args.generator_top_p) == (0.7, 0.8)
    assert trainer.reward_model.training_config["generator_temperature"] == 0.7


def test_bad_rows_and_options_are_one_line_errors(tmp_path, base):
    from datasets import DatasetDict

    from icrm.training import ConfigError

    rows = FORMATS["standard"][:2] + [{"prompt": "q", "chosen": " ", "rejected": "b"}]
    with pytest.raises(DataError, match=r"^train_dataset:3: chosen: empty response$"):
        ICRMTrainer(str(base), config(tmp_path), train_dataset=Dataset.from_list(rows))
    with pytest.raises(DataError, match=r"^eval_dataset:1: .*needs pairwise data, got pointwise"):
        ICRMTrainer(str(base), config(tmp_path), train_dataset=Dataset.from_list(FORMATS["standard"]),
                    eval_dataset=Dataset.from_list(FORMATS["unpaired"]))
    with pytest.raises(DataError, match="pass one split"):
        ICRMTrainer(str(base), config(tmp_path), train_dataset=DatasetDict(train=Dataset.from_list(FORMATS["standard"])))
    with pytest.raises(ConfigError, match=r"^lambda_ must be in \[0, 1\], got 2.0$"):
        config(tmp_path, lambda_=2.0)
    with pytest.raises(ConfigError, match="ICRMConfig.eos_token is not supported"):
        config(tmp_path, eos_token="<|end|>")


def test_parallel_tokenization_and_iterable_datasets_give_the_same_rows(tmp_path, base):
    data = Dataset.from_list(FORMATS["conversational"] * 3)
    serial = ICRMTrainer(str(base), config(tmp_path, max_length=13), train_dataset=data)
    assert serial.data_stats["train_dataset"]["truncated"] > 0  # a prompt cut from the left
    for args, dataset in ((config(tmp_path, max_length=13, dataset_num_proc=2), data),
                          (config(tmp_path, max_length=13), data.to_iterable_dataset())):
        other = ICRMTrainer(str(base), args, train_dataset=dataset)
        assert other.train_dataset.items == serial.train_dataset.items and other.data_stats == serial.data_stats


def test_import_icrm_stays_light():
    code = "import sys, icrm; print('torch' in sys.modules); icrm.ICRMTrainer; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["False", "True"], done.stderr[-2000:]


def test_cli_gradient_checkpointing_option(tmp_path, cli):
    rows = [{"prompt": q, "completion": c, "label": 1} for q, c, _ in QA] + [
        {"prompt": q, "completion": r, "label": 0} for q, _, r in QA]
    data = tmp_path / "unpaired.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = cli("train", "--data", data, "--output", tmp_path / "rm", "--max-steps", "1", "--gradient-checkpointing")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["format"] == "pointwise" and metrics["train_examples"] == 6
