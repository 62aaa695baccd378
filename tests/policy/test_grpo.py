"""``icrm grpo``: TRL's GRPOTrainer with an icrm checkpoint as the reward function.

A tiny SFT policy and a tiny BT reward model on the synthetic noisy task; two
GRPO steps; ``compare-policies`` on the result. TRL's own reward code is
checked to give icrm's scores for the same conversations.
"""

from __future__ import annotations

import json

import pytest
import torch

SFT = ["--model", "tiny", "--max-steps", "20", "--batch-size", "8", "--max-length", "96", "--lr", "1e-3"]
RM = ["--model", "tiny", "--method", "bt", "--max-steps", "5", "--batch-size", "8", "--max-length", "96", "--lr", "1e-3"]
GRPO = ["--num-generations", "4", "--batch-size", "8", "--max-completion-length", "12", "--max-steps", "2",
        "--lr", "1e-3", "--seed", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("grpo")
    synth = root / "synth"
    assert cli("data", "synth", "--task", "noisy", "--output", synth, "--n-train", "48", "--n-test", "6").exit_code == 0
    result = cli("sft", "--data", synth / "train.jsonl", "--output", root / "sft", *SFT)
    assert result.exit_code == 0, result.output
    result = cli("train", "--data", synth / "train.jsonl", "--output", root / "rm", *RM)
    assert result.exit_code == 0, result.output
    result = cli("grpo", "--policy", root / "sft", "--reward-model", root / "rm", "--prompts", synth / "train.jsonl",
                 "--exclude-prompts", synth / "test.jsonl", "--output", root / "grpo", *GRPO)
    assert result.exit_code == 0, result.output
    return root


def test_grpo_trains_and_saves_a_plain_causal_lm(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run / "grpo"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "config.yaml", "rewards.png"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    train_prompts = [json.loads(line)["prompt"] for line in (run / "synth" / "train.jsonl").read_text().splitlines()]
    test_prompts = {json.loads(line)["prompt"] for line in (run / "synth" / "test.jsonl").read_text().splitlines()}
    overlap = sum(p in test_prompts for p in train_prompts)
    assert metrics["steps"] == 2 and metrics["num_generations"] == 4
    assert (metrics["prompts"], metrics["overlap"]) == (len(train_prompts) - overlap, overlap)
    logged = [entry for entry in metrics["log_history"] if "reward" in entry]
    assert len(logged) == 2 and metrics["final_reward"] == logged[-1]["reward"]
    before = AutoModelForCausalLM.from_pretrained(run / "sft").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert not list(run.glob(".grpo.partial-*"))


def test_trl_scores_an_icrm_checkpoint_exactly_as_icrm_does(run):
    """TRL's reward path (chat template of the RM, right padding, last non-pad logit) == RewardModel.score."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from icrm.modeling import RewardModel, load_causal_lm

    model, tokenizer = load_causal_lm(str(run / "sft"))
    prompts = [[{"role": "user", "content": "Describe the weather in Oslo."}],
               [{"role": "system", "content": "be brief"}, {"role": "user", "content": "How is the food in Lima?"}],
               [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "Describe the markets in Cairo."}]]
    texts = ["it is clear and excellent today", " well here is my view", "rude"]
    args = GRPOConfig(output_dir=str(run / "trl-check"), num_generations=3, per_device_train_batch_size=3,
                      bf16=False, use_cpu=True, report_to=[])
    trainer = GRPOTrainer(model=model, reward_funcs=str(run / "rm"), args=args, processing_class=tokenizer,
                          train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]))
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    trl_rewards = trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, completions, [[0]] * 3)
    ours = RewardModel.from_pretrained(str(run / "rm")).score(prompts, texts)
    assert trl_rewards[:, 0].tolist() == pytest.approx(ours, abs=1e-5)


def test_compare_policies_works_on_grpo_output(run, cli, tmp_path):
    out = tmp_path / "report.json"
    result = cli("compare-policies", "--policies", run / "sft", run / "grpo", "--prompts", run / "synth" / "prompts.jsonl",
                 "--judge", run / "rm", "--n", "2", "--max-new-tokens", "12", "--output", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [p["policy"] for p in report["policies"]] == [str(run / "sft"), str(run / "grpo")]
    grpo = report["policies"][1]
    assert grpo["samples"] == 12 and grpo["win_rate"] + grpo["tie_rate"] + grpo["lose_rate"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-generations", "3"], "must be a multiple of --num-generations (3)"),
        (["--num-generations", "1"], "--num-generations must be at least 2"),
        (["--loss-type", "ppo"], "--loss-type must be one of"),
        (["--scale-rewards", "yes"], "--scale-rewards must be one of"),
        (["--reward-model", "POLICY"], "not a reward model"),
        (["--reward-model", "MISSING"], "no such directory"),
        (["--exclude-prompts", "PROMPTS"], "nothing to train on"),
    ],
)
def test_grpo_bad_input_is_one_line_exit_2_and_writes_nothing(run, cli, tmp_path, extra, message):
    names = {"POLICY": run / "sft", "MISSING": tmp_path / "nope", "PROMPTS": run / "synth" / "prompts.jsonl"}
    extra = [str(names.get(e, e)) for e in extra]
    out = tmp_path / "grpo"
    result = cli("grpo", "--policy", run / "sft", "--reward-model", run / "rm", "--prompts",
                 run / "synth" / "prompts.jsonl", "--output", out, *GRPO, *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()
