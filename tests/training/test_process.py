"""Process supervision: the prm / prm-icrm losses in the trainer, outcome methods on stepwise rows, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_jsonl

from icrm import losses
from icrm.commands.train import train_reward_model
from icrm.data import RewardCollator, RewardDataset, StepExample, tokenize_examples
from icrm.evaluation import sigmoid
from icrm.modeling import ModelSpec, RewardModel, build_causal_lm, train_tokenizer
from icrm.training import ConfigError, ICRMConfig, ICRMTrainer, TrainingOptions

CHAINS = [
    ("hello", ["the fox", "jumps over", "the dog"], [1, 1, 0]),
    ("how are you", ["fine", "thanks"], [0, 0]),
    ("hello world", ["the quick fox"], [1]),
]


@pytest.fixture
def rm() -> RewardModel:
    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog", "hello world, how are you? fine thanks"] * 20, 400)
    return RewardModel.from_causal_lm(build_causal_lm("tiny", tok, seed=0), tok)


def dataset_of(rm: RewardModel) -> RewardDataset:
    examples = [StepExample([{"role": "user", "content": p}], s, y) for p, s, y in CHAINS]
    items, _, _ = tokenize_examples(examples, rm.tokenizer, 64)
    return RewardDataset(examples, items)


def batch_of(rm: RewardModel) -> dict:
    dataset = dataset_of(rm)
    return RewardCollator(rm.tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


def loss_of(rm: RewardModel, tmp_path, method: str, **config) -> tuple[torch.Tensor, torch.Tensor, dict]:
    args = ICRMConfig(output_dir=str(tmp_path), method=method, generator="uniform", disable_tqdm=True,
                      **config, **TrainingOptions(per_device_train_batch_size=4, max_steps=1).trainer_kwargs())
    trainer = ICRMTrainer(model=rm, args=args, train_dataset=dataset_of(rm))
    rm.eval()  # no head dropout, no EMA update
    batch = batch_of(rm)
    with torch.no_grad():
        loss = trainer.compute_loss(rm, batch)
        rewards = rm(batch["input_ids"], batch["attention_mask"]).rewards
    return loss, rewards, batch


def test_prm_loss_is_bce_at_every_step_end(rm, tmp_path):
    loss, rewards, batch = loss_of(rm, tmp_path, "prm")
    ends = batch["step_positions"]
    by_hand = []
    for row, (_, _, labels) in enumerate(CHAINS):
        for k, z in enumerate(labels):
            r = float(rewards[row, ends[row, k]])
            by_hand.append(-torch.log(torch.tensor(sigmoid(r) if z else 1 - sigmoid(r))))
    assert float(loss) == pytest.approx(float(torch.stack(by_hand).mean()), rel=1e-5)


def test_prm_icrm_adds_consistency_with_each_tokens_step_label(rm, tmp_path):
    loss, rewards, batch = loss_of(rm, tmp_path, "prm-icrm")
    response = batch["response_mask"]
    token_labels = losses.step_token_labels(batch["step_positions"], batch["step_labels"], rewards.shape[1])
    # chain 1 is right for its first two steps, wrong from the third: its tokens' targets change there
    first_row = token_labels[0][response[0]]
    assert first_row[0] == 1 and first_row[-1] == 0
    d = losses.pointwise_consistency_targets(rewards, token_labels)
    ones = torch.ones_like(rewards)
    consistency = losses.consistency_loss(d, losses.adjacent_pair_weights(response, ones),
                                          losses.adjacent_pair_mask(response), rm.consistency_ema, update_ema=False)
    prm = losses.step_bce(rewards, batch["step_positions"], batch["step_labels"])
    assert float(loss) == pytest.approx(float(0.9 * prm + 0.1 * consistency.loss), rel=1e-5)


def test_outcome_methods_train_on_the_last_steps_label(rm, tmp_path):
    loss, rewards, batch = loss_of(rm, tmp_path, "icrm-nosft")
    assert batch["labels"].tolist() == [0.0, 0.0, 1.0]
    outcome = RewardModel.outcome(rewards, batch["attention_mask"])
    response = batch["response_mask"]
    d = losses.pointwise_consistency_targets(rewards, batch["labels"])
    consistency = losses.consistency_loss(d, losses.adjacent_pair_weights(response, torch.ones_like(rewards)),
                                          losses.adjacent_pair_mask(response), rm.consistency_ema, update_ema=False)
    expected = 0.9 * losses.pointwise_bce(outcome, batch["labels"]) + 0.1 * consistency.loss
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_prm_needs_stepwise_data(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b", "label": 1}] * 4)
    config = ICRMConfig(output_dir=str(tmp_path / "rm"), method="prm", **TrainingOptions(max_steps=1).trainer_kwargs())
    with pytest.raises(ConfigError, match="^method prm needs stepwise data"):
        train_reward_model(str(data), str(tmp_path / "rm"), config, ModelSpec("tiny"))
    assert not (tmp_path / "rm").exists()


# ------------------------------------------------------------------ CLI

FAST = ["--max-steps", "4", "--batch-size", "8", "--max-length", "128", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def steps_run(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("steps")
    made = cli("data", "synth", "--task", "steps", "--output", root / "data", "--n-train", "48", "--n-test", "12")
    assert made.exit_code == 0, made.output
    for method in ("prm", "icrm"):
        done = cli("train", "--data", root / "data" / "train.jsonl", "--method", method, "--output", root / method,
                   "--eval-data", root / "data" / "test.jsonl", *FAST)
        assert done.exit_code == 0, done.output
    return root


def test_prm_trains_and_evaluates_step_by_step(steps_run, cli):
    root = steps_run
    metrics = json.loads((root / "prm" / "metrics.json").read_text())
    assert metrics["format"] == "stepwise" and any("prm" in entry for entry in metrics["log_history"])
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    for data in ("test.jsonl", "test_processbench.jsonl"):
        out = root / f"eval-{data}.json"
        done = cli("eval", "--model", root / "prm", "--data", root / "data" / data, "--output", out)
        assert done.exit_code == 0, done.output
        report = json.loads(out.read_text())
        assert set(report["steps"]) >= {"step_auroc", "first_error_f1", "localization", "by_num_steps"}
        assert report["n"] == 12 and report["format"] == "stepwise"
    assert (root / "eval-test.jsonl_steps.png").exists()
    # the ProcessBench copy of the test chains gives the same numbers
    a, b = (json.loads((root / f"eval-{d}.json").read_text())["steps"] for d in ("test.jsonl", "test_processbench.jsonl"))
    assert a == b


def test_score_per_step_ends_in_the_outcome_reward(steps_run, cli):
    root = steps_run
    out = root / "scored.jsonl"
    done = cli("score", "--model", root / "icrm", "--data", root / "data" / "test.jsonl", "--output", out, "--per-step")
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["step_rewards"]) == len(r["completions"]) for r in rows)
    assert all(r["step_rewards"][-1] == pytest.approx(r["reward"], abs=1e-5) for r in rows)
    normalized = root / "scored-z.jsonl"
    done = cli("score", "--model", root / "icrm", "--data", root / "data" / "test.jsonl", "--output", normalized,
               "--per-step", "--normalize")
    assert done.exit_code == 0, done.output
    stats = json.loads((root / "icrm" / "icrm_state.json").read_text())["reward_stats"]
    for raw, z in zip(rows, (json.loads(line) for line in normalized.read_text().splitlines())):
        assert z["step_rewards"] == pytest.approx([(r - stats["mean"]) / stats["std"] for r in raw["step_rewards"]])
        assert z["step_rewards"][-1] == pytest.approx(z["reward"], abs=1e-4)
    bon_out = root / "bon-scored.jsonl"
    done = cli("score", "--model", root / "prm", "--data", root / "data" / "bon.jsonl", "--output", bon_out, "--per-step")
    assert done.exit_code == 0, done.output
    row = json.loads(bon_out.read_text().splitlines()[0])
    assert [len(s) for s in row["step_rewards"]] == [c.count("\n") + 1 for c in row["candidates"]]


def test_bon_aggregates_step_scores(steps_run, cli):
    from icrm.data import load_examples, split_steps
    from icrm.evaluation import aggregate, bon_metrics

    root = steps_run
    reports = {}
    for how in ("last", "min", "mean"):
        out = root / f"bon-{how}.json"
        done = cli("bon", "--model", root / "prm", "--data", root / "data" / "bon.jsonl", "--aggregate", how,
                   "--n", "1,8", "--output", out)
        assert done.exit_code == 0, done.output
        reports[how] = json.loads(out.read_text())
        assert reports[how]["aggregate"] == how
    rm = RewardModel.from_pretrained(str(root / "prm"))
    examples = load_examples(root / "data" / "bon.jsonl").examples
    steps = [[rm.step_rewards(ex.prompt, split_steps(c)) for c in ex.candidates] for ex in examples]
    for how in ("min", "mean"):
        scores = [[aggregate(s, how) for s in row] for row in steps]
        expected = bon_metrics(scores, [ex.labels for ex in examples], [1, 8])
        assert reports[how]["accuracy"]["8"] == pytest.approx(expected["accuracy"]["8"])
    assert cli("bon", "--model", root / "prm", "--data", root / "data" / "bon.jsonl", "--aggregate", "max").exit_code == 2


def test_explain_marks_step_boundaries(steps_run, cli):
    root = steps_run
    out = root / "explain"
    done = cli("explain", "--model", root / "icrm", "--model", root / "prm", "--data", root / "data" / "test.jsonl",
               "--limit", "2", "--png", "--output", out)
    assert done.exit_code == 0, done.output
    first = json.loads((root / "data" / "test.jsonl").read_text().splitlines()[0])
    page = (out / "example-0001.html").read_text()
    n = len(first["completions"])
    assert page.count('class="step') == 2 * n  # every step of both models' rows
    assert f"step {n}: σ(r)=" in page and ("✓" in page or "✗" in page)
    assert (out / "example-0001.png").stat().st_size > 0
    single = root / "one.html"
    done = cli("explain", "--model", root / "prm", "--prompt", "It is Monday. Count forward 1 day. What day is it?",
               "--response", "1 day after Monday is Tuesday", "--per-step", "--output", single)
    assert done.exit_code == 0, done.output
    assert single.read_text().count('class="step"') == 1


def test_bad_process_options_exit_2_with_one_line(steps_run, cli, tmp_path):
    root = steps_run
    pointwise = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b", "label": 1}] * 4)
    bad_labels = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a", "completions": ["x", "y"], "labels": [True]}])
    cases = [
        (("train", "--data", pointwise, "--method", "prm", "--output", tmp_path / "rm"), "needs stepwise data"),
        (("train", "--data", bad_labels, "--method", "prm", "--output", tmp_path / "rm"), "s.jsonl:1: labels:"),
        (("eval", "--model", root / "prm", "--data", root / "data" / "test.jsonl", "--step-threshold", "1.5"),
         "--step-threshold must be in (0, 1)"),
        (("eval", "--model", root / "prm", "--data", root / "data" / "test.jsonl", "--step-separator", ""),
         "step separator must not be empty"),
        (("bon", "--model", root / "prm", "--data", root / "data" / "bon.jsonl", "--aggregate", "product"),
         "--aggregate must be one of last, min, mean"),
    ]
    for args, message in cases:
        done = cli(*args)
        assert done.exit_code == 2, (args, done.output)
        assert message in done.output and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "rm").exists()
