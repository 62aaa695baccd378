"""--max-length of score / eval / bon / explain: the checkpoint's training length by default, train's rules."""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl

from icrm.data import TokenizeStats, encode, fit_length

TRAINED_AT = 24  # the checkpoint's training --max-length
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


def test_default_is_the_training_length_and_prompts_are_cut_from_the_left(tmp_path, cli, rm_dir, tiny_rm):
    data = write_jsonl(tmp_path / "pairs.jsonl", [SHORT_PAIR, LONG_PROMPT_PAIR])
    assert encode(tiny_rm.tokenizer, [{"role": "user", "content": LONG}], "hello world").length > TRAINED_AT
    out = tmp_path / "scored.jsonl"
    result = cli("score", "--model", rm_dir, "--data", data, "--output", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["chosen_reward"] == pytest.approx(by_hand(tiny_rm, LONG, "hello world", TRAINED_AT), abs=1e-5)
    assert rows[0]["chosen_reward"] == pytest.approx(tiny_rm.score(["hello"], ["the lazy dog"])[0], abs=1e-5)
    metrics = tmp_path / "m.json"
    assert cli("eval", "--model", rm_dir, "--data", data, "--output", metrics).exit_code == 0
    counts = json.loads(metrics.read_text())
    assert (counts["max_length"], counts["truncated"], counts["dropped_over_length"]) == (TRAINED_AT, 2, 0)  # both sides
    assert cli("eval", "--model", rm_dir, "--data", data, "--output", metrics, "--max-length", "200").exit_code == 0
    assert json.loads(metrics.read_text())["truncated"] == 0


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
    result = cli(command, "--model", rm_dir, "--data", data, "--output", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + str(data.parent) + "/" + message), lines
    assert f"response tokens do not fit in --max-length {TRAINED_AT}" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out*"))

    result = cli(command, "--model", rm_dir, "--data", data, "--output", out, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "warning: skipped 1 row(s)" in result.stderr and f"longer than --max-length {TRAINED_AT}" in result.stderr
    if command == "score":
        assert len(out.read_text().splitlines()) == 1
    elif command == "explain":
        assert sorted(p.name for p in out.iterdir()) == ["example-0001.html", "index.html"]
    else:
        report = json.loads(out.read_text())
        assert report["dropped_over_length"] == 1 and report["num_prompts" if command == "bon" else "n"] == 1


def test_explain_single_response_and_limits_beyond_the_positions(tmp_path, cli, rm_dir):
    out = tmp_path / "page.html"
    result = cli("explain", "--model", rm_dir, "--prompt", "hi", "--response", LONG, "--output", out)
    assert result.exit_code == 2 and "--response: " in result.stderr and "do not fit in --max-length 24" in result.stderr
    result = cli("explain", "--model", rm_dir, "--prompt", "hi", "--response", LONG, "--output", out, "--max-length", "100")
    assert result.exit_code == 0, result.output
    data = write_jsonl(tmp_path / "d.jsonl", [SHORT_PAIR])
    result = cli("eval", "--model", rm_dir, "--data", data, "--max-length", "5000")
    assert result.exit_code == 2 and "--max-length 5000 exceeds the model's position limit of 2048 tokens" in result.stderr
