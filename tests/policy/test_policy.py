"""Policy tools: prompts, sampling, DPO pair selection, DPO training, policy comparison.

Pair selection is tested as pure functions of lists of rewards; the commands
run end to end (sample → dpo-pairs → dpo → compare-policies) on a tiny SFT
policy trained on the synthetic noisy task.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from helpers import write_jsonl

from icrm.errors import UserError
from icrm.policy import (
    Pick,
    Prompt,
    SamplingConfig,
    load_prompts,
    make_dpo_pairs,
    outcome_rates,
    pick_pair,
    prompt_key,
    sample_hf,
)

# ------------------------------------------------------------ pair selection


def test_pick_pair_takes_best_as_chosen_and_worst_as_rejected():
    assert pick_pair(["a", "b", "c", "d"], [0.1, 0.9, -0.3, 0.2]) == Pick("ok", 1, 2)


def test_pick_pair_breaks_equal_rewards_toward_the_earliest_candidate():
    assert pick_pair(["a", "b", "c", "d"], [1.0, 1.0, 0.0, 0.0]) == Pick("ok", 0, 2)


def test_pick_pair_drops_ties_and_identical_texts():
    assert pick_pair(["a", "b"], [0.5, 0.5]).reason == "tie"
    assert pick_pair(["same", "same", "same"], [0.1, 0.2, 0.3]).reason == "identical"  # batching noise
    assert pick_pair(["only"], [1.0]).reason == "identical"
    # duplicates count once: the best distinct text vs the worst distinct text
    assert pick_pair(["a", "a", "b"], [2.0, 2.0001, 1.0]) == Pick("ok", 0, 2)


def test_pick_pair_gap_filter():
    assert pick_pair(["a", "b"], [1.0, 0.6], min_gap=0.5).reason == "gap"
    assert pick_pair(["a", "b"], [1.0, 0.5], min_gap=0.5) == Pick("ok", 0, 1)
    with pytest.raises(ValueError):
        pick_pair(["a", "b"], [1.0])


def test_make_dpo_pairs_counts_reasons_and_writes_trl_conversational_rows():
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    prompts = [user("Q one"), user("Q two"), user("Q three"), user("Q four"), user("Q five")]
    candidates = [["x", "y", "z"], ["p", "q"], ["same", "same"], ["u", "v"], ["m", "n"]]
    rewards = [[0.0, 2.0, -1.0], [1.0, 1.0], [0.3, 0.4], [0.0, 0.1], [5.0, 4.0]]
    exclude = {prompt_key(user("  q   FIVE "))}  # case and whitespace do not hide an overlap
    rows, counts = make_dpo_pairs(prompts, candidates, rewards, min_gap=0.5, exclude=exclude, ids=["a", None, None, None, None])
    assert counts == {"prompts": 5, "pairs": 1, "overlap": 1, "identical": 1, "tie": 1, "gap": 1}
    assert rows == [
        {
            "prompt": user("Q one"),
            "chosen": [{"role": "assistant", "content": "y"}],
            "rejected": [{"role": "assistant", "content": "z"}],
            "chosen_reward": 2.0,
            "rejected_reward": -1.0,
            "id": "a",
        }
    ]


def test_dpo_pair_rows_load_as_icrm_pairwise_data(tmp_path):
    from icrm.data import load_examples

    rows, _ = make_dpo_pairs([[{"role": "user", "content": "q"}]], [["good", "bad"]], [[1.0, 0.0]])
    loaded = load_examples(write_jsonl(tmp_path / "p.jsonl", rows), expect=("pairwise",))
    ex = loaded.examples[0]
    assert (ex.prompt, ex.chosen, ex.rejected) == ([{"role": "user", "content": "q"}], "good", "bad")


def test_outcome_rates():
    assert outcome_rates([1.0, 0.0, 2.0, 3.0], [0.0, 0.0, 5.0, 1.0]) == {
        "win_rate": 0.5, "tie_rate": 0.25, "lose_rate": 0.25
    }


# ------------------------------------------------------------------- prompts


def test_load_prompts_from_prompt_files_and_data_files(tmp_path):
    rows = [
        {"prompt": "plain", "id": 7},
        {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"prompt": "\n\nHuman: hello\n\nAssistant:"},  # HH prompt string with an empty assistant turn
    ]
    prompts = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [p.messages for p in prompts] == [
        [{"role": "user", "content": "plain"}],
        rows[1]["prompt"],
        [{"role": "user", "content": "hello"}],
    ]
    assert prompts[0].id == "7"
    pairs = [{"prompt": "q1", "chosen": "a", "rejected": "b"}, {"prompt": "q2", "chosen": "a", "rejected": "b"}]
    assert [p.messages[0]["content"] for p in load_prompts(write_jsonl(tmp_path / "pairs.jsonl", pairs))] == ["q1", "q2"]
    bon = [{"prompt": "q", "candidates": ["a", "b"]}]
    assert load_prompts(write_jsonl(tmp_path / "bon.jsonl", bon))[0].messages[0]["content"] == "q"


@pytest.mark.parametrize(
    "text, message",
    [("", "empty file"), ('{"question": "x"}\n', "prompt: missing column"), ('{"prompt": "  "}\n', "empty prompt")],
)
def test_load_prompts_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_prompts(path)


def test_sampling_config_validation(monkeypatch):
    with pytest.raises(UserError, match="^n must be at least 1"):
        SamplingConfig(n=0).validate()
    with pytest.raises(UserError, match="^top_p must be in"):
        SamplingConfig(top_p=0).validate()
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(UserError, match="needs vLLM"):
        SamplingConfig(engine="vllm").validate()


# ------------------------------------------------------------- end to end

SFT = ["--model", "tiny", "--max-steps", "20", "--batch-size", "8", "--max-length", "96", "--lr", "1e-3"]
RM = ["--model", "tiny", "--method", "bt", "--max-steps", "5", "--batch-size", "8", "--max-length", "96", "--lr", "1e-3"]
SAMPLING = ["--max-new-tokens", "16", "--seed", "0"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory, cli):
    """Synthetic data, a tiny SFT policy and a tiny BT reward model, then sample → pairs → DPO."""
    root = tmp_path_factory.mktemp("policy")
    synth = root / "synth"
    assert cli("data", "synth", "--task", "noisy", "--output", synth, "--n-train", "64", "--n-test", "6").exit_code == 0
    result = cli("sft", "--data", synth / "train.jsonl", "--output", root / "sft", *SFT)
    assert result.exit_code == 0, result.output
    result = cli("train", "--data", synth / "train.jsonl", "--output", root / "rm", *RM)
    assert result.exit_code == 0, result.output
    result = cli("sample", "--policy", root / "sft", "--prompts", synth / "prompts.jsonl", "--n", "3",
                 "--output", root / "cands.jsonl", *SAMPLING)
    assert result.exit_code == 0, result.output
    result = cli("dpo-pairs", "--model", root / "rm", "--data", root / "cands.jsonl", "--output", root / "pairs.jsonl")
    assert result.exit_code == 0, result.output
    result = cli("dpo", "--policy", root / "sft", "--data", root / "pairs.jsonl", "--output", root / "dpo",
                 "--max-steps", "2", "--batch-size", "4", "--lr", "1e-3", "--max-length", "96", "--logging-steps", "1")
    assert result.exit_code == 0, result.output
    return root


def test_sample_writes_best_of_n_rows(loop):
    rows = [json.loads(line) for line in (loop / "cands.jsonl").read_text().splitlines()]
    prompts = [json.loads(line)["prompt"] for line in (loop / "synth" / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == prompts
    assert all(1 <= len(r["candidates"]) <= 3 and all(c.strip() for c in r["candidates"]) for r in rows)
    assert sum(len(r["candidates"]) for r in rows) >= 15  # empty samples are rare and counted


def test_sample_is_reproducible_with_a_seed(loop, cli, tmp_path):
    again = tmp_path / "again.jsonl"
    result = cli("sample", "--policy", loop / "sft", "--prompts", loop / "synth" / "prompts.jsonl", "--n", "3",
                 "--output", again, *SAMPLING)
    assert result.exit_code == 0, result.output
    assert again.read_text() == (loop / "cands.jsonl").read_text()


def test_dpo_pairs_file_has_best_and_worst_with_rewards(loop):
    from icrm.modeling import RewardModel

    pairs = [json.loads(line) for line in (loop / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(set(p) >= {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"} for p in pairs)
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    first = pairs[0]
    chosen, rejected = first["chosen"][0]["content"], first["rejected"][0]["content"]
    rows = [json.loads(line) for line in (loop / "cands.jsonl").read_text().splitlines()]
    texts = next(r["candidates"] for r in rows if {chosen, rejected} <= set(r["candidates"]))
    rm = RewardModel.from_pretrained(str(loop / "rm"))
    scores = rm.score([first["prompt"]] * len(texts), texts)
    assert chosen == texts[max(range(len(texts)), key=scores.__getitem__)]
    assert rejected == texts[min(range(len(texts)), key=scores.__getitem__)]
    assert first["chosen_reward"] == pytest.approx(max(scores), abs=1e-4)


def test_dpo_pairs_exclude_prompts_of_a_test_file(loop, cli, tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = cli("dpo-pairs", "--model", loop / "rm", "--data", loop / "cands.jsonl", "--output", out,
                 "--exclude-prompts", loop / "synth" / "test.jsonl")
    assert result.exit_code == 2 and "no DPO pairs left" in result.stderr  # every prompt is a test prompt
    assert not out.exists()
    half = write_jsonl(tmp_path / "half.jsonl", [json.loads(line) for line in
                                                   (loop / "synth" / "test.jsonl").read_text().splitlines()[:3]])
    result = cli("dpo-pairs", "--model", loop / "rm", "--data", loop / "cands.jsonl", "--output", out,
                 "--exclude-prompts", half)
    assert result.exit_code == 0, result.output
    assert "overlap: 3  (prompts left out because they occur in --exclude-prompts)" in result.stderr


def test_sample_summary_says_what_truncated_means(loop, cli, tmp_path):
    result = cli("sample", "--policy", loop / "sft", "--prompts", loop / "synth" / "prompts.jsonl", "--n", "1",
                 "--output", tmp_path / "c.jsonl", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    assert re.search(r"truncated: \d+  \(samples cut at --max-new-tokens 2 before an end token\)", result.stderr)


def test_dpo_changes_the_policy_and_saves_a_plain_causal_lm(loop):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dpo_dir = loop / "dpo"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "config.yaml"):
        assert (dpo_dir / name).exists(), name
    metrics = json.loads((dpo_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["beta"] == 0.1 and metrics["pairs"] >= 1
    assert any("rewards/margins" in entry for entry in metrics["log_history"])
    before = AutoModelForCausalLM.from_pretrained(loop / "sft").state_dict()
    after = AutoModelForCausalLM.from_pretrained(dpo_dir).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    tok = AutoTokenizer.from_pretrained(dpo_dir)
    assert tok.eos_token == "<|end|>" and tok.chat_template
    assert not list(loop.glob(".dpo.partial-*"))


def test_python_api_draws_no_library_progress_bars(loop, tmp_path, capfd):
    """Only icrm's own bars: no tqdm from transformers ("Loading weights") or TRL's dataset maps."""
    import datasets
    from transformers.utils import logging as hf_logging

    from icrm.commands.dpo import train_dpo
    from icrm.modeling import RewardModel
    from icrm.policy import DPOSettings
    from icrm.training import TrainingOptions

    hf_logging.enable_progress_bar()  # as in a fresh Python session (CLI tests switch them off)
    datasets.enable_progress_bars()
    capfd.readouterr()
    RewardModel.from_pretrained(str(loop / "rm"))
    train_dpo(str(loop / "sft"), str(loop / "pairs.jsonl"), tmp_path / "dpo",
              TrainingOptions(max_steps=1, per_device_train_batch_size=4, learning_rate=1e-4).trainer_kwargs(), DPOSettings(max_length=96))
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Tokenizing" not in err and "it/s]" not in err, err[-1000:]
    assert hf_logging.is_progress_bar_enabled() and not datasets.utils.are_progress_bars_disabled()  # restored


def test_dpo_with_lora_merges_the_adapter(loop, cli, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dpo-lora"
    result = cli("dpo", "--policy", loop / "sft", "--data", loop / "pairs.jsonl", "--output", out,
                 "--max-steps", "1", "--warmup", "0", "--batch-size", "4", "--lr", "1e-2", "--lora-r", "4",
                 "--max-length", "96")
    assert result.exit_code == 0, result.output
    before = AutoModelForCausalLM.from_pretrained(loop / "sft").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()  # merged: no lora_A/lora_B weights left
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_compare_policies_under_true_reward_and_a_reward_model(loop, cli, tmp_path):
    out = tmp_path / "report.json"
    prompts = loop / "synth" / "prompts.jsonl"
    result = cli("compare-policies", "--policies", loop / "sft", loop / "dpo", "--prompts", prompts,
                 "--judge", "true-reward", "--n", "2", "--output", out, *SAMPLING)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["task"] == "noisy" and report["prompts"] == 6 and report["baseline"] == str(loop / "sft")
    base, dpo = report["policies"]
    assert base["policy"] == str(loop / "sft") and dpo["policy"] == str(loop / "dpo")
    assert (base["win_rate"], base["tie_rate"], base["lose_rate"]) == (0.0, 1.0, 0.0)
    assert base["is_baseline"] and not dpo["is_baseline"]  # why the first "ties itself" 100 %
    assert dpo["win_rate"] + dpo["tie_rate"] + dpo["lose_rate"] == pytest.approx(1.0)
    assert dpo["samples"] == 12 and dpo["mean_words"] > 0
    printed = " ".join(result.output.split())  # the console wraps long lines
    assert "words" in printed and "the baseline: win/tie/lose are against it" in printed, printed
    assert printed.count("win/tie/lose vs the baseline ") == 1, printed

    judged = cli("--log-format", "json", "compare-policies", "--policies", loop / "sft", "--policies", loop / "dpo",
                 "--prompts", prompts, "--judge", loop / "rm", "--n", "1", *SAMPLING)
    assert judged.exit_code == 0, judged.output
    report = json.loads(judged.stdout.strip().splitlines()[-1])
    assert report["judge"] == str(loop / "rm") and len(report["policies"]) == 2
    assert all(isinstance(p["mean_reward"], float) for p in report["policies"])


def test_left_padded_batches_generate_what_single_prompts_do(loop):
    from icrm.modeling import load_causal_lm

    model, tok = load_causal_lm(str(loop / "sft"))
    prompts = [Prompt([{"role": "user", "content": "Describe the weather in Tokyo."}]),
               Prompt([{"role": "user", "content": "How would you summarize the architecture in Nairobi?"}])]
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=12)
    batched = sample_hf(model, tok, prompts, greedy).texts
    alone = [sample_hf(model, tok, [p], greedy).texts[0] for p in prompts]
    assert batched == alone
    assert tok.padding_side == "right"  # restored for scoring/training code


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "case, message",
    [("empty", "no rows (empty file)"), ("n0", "--n must be at least 1"), ("vllm", "needs vLLM")],
)
def test_sample_bad_input_is_one_line_exit_2(loop, cli, tmp_path, monkeypatch, case, message):
    prompts = loop / "synth" / "prompts.jsonl"
    extra = []
    if case == "empty":
        prompts = tmp_path / "empty.jsonl"
        prompts.write_text("")
    elif case == "n0":
        extra = ["--n", "0"]
    else:
        monkeypatch.setitem(sys.modules, "vllm", None)
        extra = ["--engine", "vllm"]
    out = tmp_path / "cands.jsonl"
    result = cli("sample", "--policy", loop / "sft", "--prompts", prompts, "--output", out, *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_compare_policies_true_reward_needs_a_task(loop, cli, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hello"}])  # no task.json beside it
    result = cli("compare-policies", "--policies", loop / "sft", "--prompts", prompts, "--judge", "true-reward")
    assert result.exit_code == 2 and "--task" in result.stderr


def test_compare_policies_rejects_a_missing_judge_before_sampling(loop, cli, tmp_path):
    result = cli("compare-policies", "--policies", loop / "sft", "--prompts", loop / "synth" / "prompts.jsonl",
                 "--judge", tmp_path / "no-such-rm")
    assert result.exit_code == 2 and "no such reward model directory" in result.stderr


def test_dpo_rejects_an_unknown_loss_before_training(loop, cli, tmp_path):
    out = tmp_path / "dpo"
    result = cli("dpo", "--policy", loop / "sft", "--data", loop / "pairs.jsonl", "--output", out, "--loss-type", "nope")
    assert result.exit_code == 2 and "--loss-type must be one of" in result.stderr
    assert not out.exists()
