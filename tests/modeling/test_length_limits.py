"""--max-length of score / eval / bon / explain / serve: the model's position limit by default, train's rules."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from helpers import write_jsonl
from starlette.testclient import TestClient

from icrm.data import TokenizeStats, encode, encode_steps, fit_length
from icrm.errors import UserError
from icrm.evaluation import score_steps
from icrm.outputs import OUTPUT_MARKER

TRAINED_AT = 24  # the checkpoint's training --max-length
POSITIONS = 2048  # the tiny model's position limit (max_position_embeddings)
LONG = "the quick brown fox jumps over the lazy dog " * 6  # about 60 tokens
SHORT_PAIR = {"prompt": "hello", "chosen": "the lazy dog", "rejected": "the quick fox"}
LONG_PROMPT_PAIR = {"prompt": LONG, "chosen": "hello world", "rejected": "how are you"}
LONG_RESPONSE_PAIR = {"prompt": "hello", "chosen": "the dog", "rejected": LONG}


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_rm):
    path = tmp_path_factory.mktemp("rm") / "rm"
    saved = tiny_rm.training_config
    tiny_rm.training_config = {"max_length": TRAINED_AT}
    try:
        tiny_rm.save_pretrained(path)
    finally:
        tiny_rm.training_config = saved
    return path


def by_hand(rm, prompt: str, response: str, max_length: int) -> float:
    """The reward of a sequence cut as `icrm train` cuts it (prompt tokens from the left)."""
    seq = fit_length(encode(rm.tokenizer, [{"role": "user", "content": prompt}], response), max_length, "left",
                     TokenizeStats())
    return float(rm.sequence_rewards([seq])[0][-1])


def test_default_is_the_position_limit_and_prompts_are_cut_from_the_left(tmp_path, cli, rm_dir, tiny_rm):
    data = write_jsonl(tmp_path / "pairs.jsonl", [SHORT_PAIR, LONG_PROMPT_PAIR, LONG_RESPONSE_PAIR])
    seq = encode(tiny_rm.tokenizer, [{"role": "user", "content": "hello"}], LONG)
    assert seq.length - seq.start > TRAINED_AT  # a response the checkpoint was never trained on at full length
    out = tmp_path / "scored.jsonl"
    result = cli("score", "--model", rm_dir, "--data", data, "--output", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["chosen_reward"] == pytest.approx(tiny_rm.score([LONG], ["hello world"])[0], abs=1e-5)
    assert rows[2]["rejected_reward"] == pytest.approx(tiny_rm.score(["hello"], [LONG])[0], abs=1e-5)  # longer than trained
    metrics = tmp_path / "m.json"
    assert cli("eval", "--model", rm_dir, "--data", data, "--output", metrics).exit_code == 0
    counts = json.loads(metrics.read_text())
    assert (counts["max_length"], counts["truncated"], counts["dropped_over_length"]) == (POSITIONS, 0, 0)

    data = write_jsonl(tmp_path / "pairs.jsonl", [SHORT_PAIR, LONG_PROMPT_PAIR])
    result = cli("score", "--model", rm_dir, "--data", data, "--output", out, "--max-length", str(TRAINED_AT), "--overwrite")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["chosen_reward"] == pytest.approx(by_hand(tiny_rm, LONG, "hello world", TRAINED_AT), abs=1e-5)
    assert rows[0]["chosen_reward"] == pytest.approx(tiny_rm.score(["hello"], ["the lazy dog"])[0], abs=1e-5)
    assert cli("eval", "--model", rm_dir, "--data", data, "--output", metrics, "--max-length", str(TRAINED_AT),
               "--overwrite").exit_code == 0
    assert json.loads(metrics.read_text())["truncated"] == 2  # both sides


def test_a_response_beyond_the_position_limit_is_an_error(tmp_path, cli, rm_dir, tiny_rm):
    too_long = "the quick brown fox jumps over the lazy dog " * 300
    assert len(tiny_rm.tokenizer(too_long)["input_ids"]) > POSITIONS
    data = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": "hi", "candidates": ["the dog", too_long], "labels": [1, 0]}])
    result = cli("bon", "--model", rm_dir, "--data", data, "--output", tmp_path / "b.json")
    assert result.exit_code == 2, result.output
    assert "bon.jsonl:1: candidates: candidate 2: " in result.stderr
    assert f"response tokens do not fit in --max-length {POSITIONS}" in result.stderr


def test_serve_and_score_share_the_default(tiny_rm, monkeypatch):
    """One rule for both: the position limit as it is, and none where the model has none (serve then bounds it)."""
    from icrm.modeling import resolve_max_length
    from icrm.serve import DEFAULT_MAX_LENGTH, ServeConfig, create_app

    monkeypatch.setattr(tiny_rm.config, "max_position_embeddings", 4 * POSITIONS)
    assert resolve_max_length(tiny_rm, None) == 4 * POSITIONS
    with TestClient(create_app(tiny_rm, ServeConfig())) as client:
        assert client.get("/health").json()["max_length"] == 4 * POSITIONS
    monkeypatch.setattr(tiny_rm, "config", SimpleNamespace(model_type="llama"))  # a model that records no limit
    assert resolve_max_length(tiny_rm, None) is None
    with TestClient(create_app(tiny_rm, ServeConfig())) as client:
        assert client.get("/health").json()["max_length"] == DEFAULT_MAX_LENGTH
    with pytest.raises(UserError, match="at least 8"):
        resolve_max_length(tiny_rm, 4)


@pytest.mark.parametrize(
    "command, row, message",
    [
        ("score", LONG_RESPONSE_PAIR, "data.jsonl:2: rejected: "),
        ("eval", LONG_RESPONSE_PAIR, "data.jsonl:2: rejected: "),
        ("bon", {"prompt": "hi", "candidates": ["the dog", LONG], "labels": [1, 0]}, "data.jsonl:2: candidates: candidate 2: "),
        ("explain", LONG_RESPONSE_PAIR, "data.jsonl:2: rejected: "),
    ],
)
def test_a_response_that_cannot_fit_is_an_error_or_skipped(tmp_path, cli, rm_dir, command, row, message):
    first = {"prompt": "hi", "candidates": ["the dog", "a fox"], "labels": [1, 0]} if command == "bon" else SHORT_PAIR
    data = write_jsonl(tmp_path / "data.jsonl", [first, row])
    out = tmp_path / ("out" if command == "explain" else "out.json")
    result = cli(command, "--model", rm_dir, "--data", data, "--output", out, "--max-length", str(TRAINED_AT))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + str(data.parent) + "/" + message), lines
    assert f"response tokens do not fit in --max-length {TRAINED_AT}" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out*"))

    result = cli(command, "--model", rm_dir, "--data", data, "--output", out, "--max-length", str(TRAINED_AT),
                 "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "warning: skipped 1 row(s)" in result.stderr and f"longer than --max-length {TRAINED_AT}" in result.stderr
    if command == "score":
        assert len(out.read_text().splitlines()) == 1
    elif command == "explain":
        assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "example-0001.html", "index.html"]
    else:
        report = json.loads(out.read_text())
        assert report["dropped_over_length"] == 1 and report["num_prompts" if command == "bon" else "n"] == 1


def test_explain_single_response_and_limits_beyond_the_positions(tmp_path, cli, rm_dir):
    out = tmp_path / "page.html"
    result = cli("explain", "--model", rm_dir, "--prompt", "hi", "--response", LONG, "--output", out, "--max-length", "24")
    assert result.exit_code == 2 and "--response: " in result.stderr and "do not fit in --max-length 24" in result.stderr
    result = cli("explain", "--model", rm_dir, "--prompt", "hi", "--response", LONG, "--output", out)
    assert result.exit_code == 0, result.output
    data = write_jsonl(tmp_path / "d.jsonl", [SHORT_PAIR])
    result = cli("eval", "--model", rm_dir, "--data", data, "--max-length", "5000")
    assert result.exit_code == 2 and "--max-length 5000 exceeds the model's position limit of 2048 tokens" in result.stderr


# ------------------------------------------------------------------ step scores

STEPS = ["hello world", "the lazy dog", "how are you"]
LONG_CHAIN = {"prompt": LONG, "completions": STEPS, "labels": [True, True, False]}
SHORT_CHAIN = {"prompt": "hello", "completions": ["the dog", "a fox"], "labels": [True, True]}


def steps_by_hand(rm, prompt: str, steps: list[str], max_length: int) -> list[float]:
    """Step scores of a chain cut from the left by hand: the input ids' last `max_length`, step ends shifted."""
    seq = encode_steps(rm.tokenizer, [{"role": "user", "content": prompt}], steps)
    cut = seq.length - max_length
    assert cut > 0 and seq.start > cut  # the prompt is cut, not the response
    ids = torch.tensor([seq.input_ids[cut:]])
    with torch.no_grad():
        rewards = rm(ids, torch.ones_like(ids)).rewards[0]
    return [float(rewards[end - cut]) for end in seq.step_ends]


def test_step_rewards_are_read_on_the_cut_sequence(tiny_rm):
    tiny_rm.eval()
    expected = steps_by_hand(tiny_rm, LONG, STEPS, TRAINED_AT)
    assert tiny_rm.step_rewards(LONG, STEPS, max_length=TRAINED_AT) == pytest.approx(expected, abs=1e-5)
    assert tiny_rm.step_rewards(LONG, STEPS)[0] != pytest.approx(expected[0], abs=1e-3)  # the cut changes them
    assert expected[-1] == pytest.approx(by_hand(tiny_rm, LONG, "\n".join(STEPS), TRAINED_AT), abs=1e-5)
    with pytest.raises(ValueError, match="chain 0: .* response tokens do not fit in max_length=8"):
        tiny_rm.step_rewards("hi", [LONG], max_length=8)


def test_cli_step_scores_follow_max_length(tmp_path, cli, rm_dir, tiny_rm):
    """score --per-step, stepwise eval and bon --aggregate read step scores on sequences cut to --max-length."""
    tiny_rm.eval()
    expected = steps_by_hand(tiny_rm, LONG, STEPS, TRAINED_AT)
    chains = write_jsonl(tmp_path / "chains.jsonl", [SHORT_CHAIN, LONG_CHAIN])
    out = tmp_path / "scored.jsonl"
    cut_at = ("--max-length", str(TRAINED_AT))
    result = cli("score", "--model", rm_dir, "--data", chains, "--per-step", "--output", out, *cut_at)
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text().splitlines()[1])
    assert row["step_rewards"] == pytest.approx(expected, abs=1e-5)
    assert row["step_rewards"][-1] == pytest.approx(row["reward"], abs=1e-5)

    metrics = tmp_path / "m.json"
    result = cli("eval", "--model", rm_dir, "--data", chains, "--output", metrics, *cut_at)
    assert result.exit_code == 0, result.output
    report = json.loads(metrics.read_text())
    assert (report["max_length"], report["truncated"], report["dropped_over_length"]) == (TRAINED_AT, 1, 0)
    right = [r for r, y in zip(expected, LONG_CHAIN["labels"]) if y] + tiny_rm.step_rewards("hello", ["the dog", "a fox"])
    wrong = [r for r, y in zip(expected, LONG_CHAIN["labels"]) if not y]
    auroc = sum((a > b) + 0.5 * (a == b) for a in right for b in wrong) / (len(right) * len(wrong))
    assert report["steps"]["step_auroc"] == pytest.approx(auroc)

    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": LONG, "candidates": ["\n".join(STEPS), "a fox"], "labels": [0, 1]}])
    result = cli("bon", "--model", rm_dir, "--data", bon, "--aggregate", "min", "--n", "2", "--output", tmp_path / "b.json",
                 *cut_at)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    right_wins = min(steps_by_hand(tiny_rm, LONG, ["a fox"], TRAINED_AT)) > min(expected)
    assert (report["accuracy"]["2"], report["truncated"]) == (float(right_wins), 2)
    cut = score_steps(tiny_rm, [[{"role": "user", "content": LONG}]], [STEPS], max_length=TRAINED_AT)  # bon's path
    assert cut[0] == pytest.approx(expected, abs=1e-5)


def test_stepwise_eval_skips_a_chain_that_cannot_fit(tmp_path, cli, rm_dir):
    chains = write_jsonl(tmp_path / "chains.jsonl", [SHORT_CHAIN, {"prompt": "hi", "completions": [LONG], "labels": [True]}])
    result = cli("eval", "--model", rm_dir, "--data", chains, "--output", tmp_path / "m.json", "--max-length", "24")
    assert result.exit_code == 2 and "chains.jsonl:2: completions: " in result.stderr, result.output
    result = cli("eval", "--model", rm_dir, "--data", chains, "--output", tmp_path / "m.json", "--max-length", "24",
                 "--skip-invalid")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert (report["n"], report["dropped_over_length"]) == (1, 1)
