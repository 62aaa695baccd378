"""CLI tests of score / bon / data synth / data gsm8k-bon on tiny models and the shipped data."""

from __future__ import annotations

import json

import pytest
from helpers import GSM8K_SOLUTIONS, write_jsonl


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_rm):
    path = tmp_path_factory.mktemp("rm") / "rm"
    shared_stats = tiny_rm.reward_stats  # tiny_rm is shared by the whole session: leave it as found
    tiny_rm.reward_stats = {"mean": 0.5, "std": 2.0, "n": 10}
    tiny_rm.save_pretrained(path)
    tiny_rm.reward_stats = shared_stats
    return path


def test_score_adds_rewards_to_every_format(tmp_path, cli, rm_dir, tiny_rm):
    pair = write_jsonl(tmp_path / "pair.jsonl", [{"prompt": "hello", "chosen": "world", "rejected": "dog"}])
    point = write_jsonl(tmp_path / "point.jsonl", [{"prompt": "hello", "response": "world", "label": 1}])
    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": "hello", "candidates": ["world", "dog"], "labels": [1, 0]}])
    for data, key in ((pair, "chosen_reward"), (point, "reward"), (bon, "rewards")):
        out = tmp_path / f"{data.stem}.scored.jsonl"
        result = cli("score", "--model", rm_dir, "--data", data, "--output", out)
        assert result.exit_code == 0, result.output
        row = json.loads(out.read_text())
        assert key in row
    expected = tiny_rm.score(["hello"], ["world"])[0]
    assert json.loads((tmp_path / "point.scored.jsonl").read_text())["reward"] == pytest.approx(expected, abs=1e-5)
    out = tmp_path / "norm.jsonl"
    assert cli("score", "--model", rm_dir, "--data", point, "--output", out, "--normalize").exit_code == 0
    assert json.loads(out.read_text())["reward"] == pytest.approx((expected - 0.5) / 2.0, abs=1e-5)


def test_bon_on_shipped_gsm8k_solutions(tmp_path, cli, rm_dir):
    converted = tmp_path / "gsm8k"
    result = cli("data", "gsm8k-bon", "--data", GSM8K_SOLUTIONS, "--output", converted, "--seed", "0")
    assert result.exit_code == 0, result.output
    train = [json.loads(l) for l in (converted / "bon_train.jsonl").read_text().splitlines()]
    test = [json.loads(l) for l in (converted / "bon_test.jsonl").read_text().splitlines()]
    assert len(train) + len(test) == 1319
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert all(len(r["candidates"]) == 4 == len(r["labels"]) for r in test)
    small = write_jsonl(tmp_path / "small.jsonl", test[:12])
    report_path = tmp_path / "report.json"
    result = cli("bon", "--model", rm_dir, "--data", small, "--n", "1,2,4", "--output", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["n"] == [1, 2, 4] and report["num_prompts"] == 12
    labels = [r["labels"] for r in test[:12]]
    assert report["pass"]["4"] == pytest.approx(sum(any(l) for l in labels) / 12)
    assert report["random"]["1"] == pytest.approx(sum(sum(l) / 4 for l in labels) / 12)
    assert "majority" in report and report_path.with_suffix(".png").exists()


@pytest.mark.parametrize(
    "row, args, message",
    [
        ({"prompt": "q", "candidates": ["a", "b"], "labels": [1]}, [], ":1: labels: 1 labels for 2 candidates"),
        ({"prompt": "q", "candidates": ["a", "b"], "labels": [1, 0]}, ["--n", "1,4"], ":1: candidates: n=4 exceeds the 2"),
        ({"prompt": "q", "candidates": ["a", "b"]}, [], ":1: labels: best-of-N needs"),
    ],
)
def test_bon_bad_input(tmp_path, cli, rm_dir, row, args, message):
    data = write_jsonl(tmp_path / "b.jsonl", [row])
    out = tmp_path / "report.json"
    result = cli("bon", "--model", rm_dir, "--data", data, "--output", out, *args)
    assert result.exit_code == 2 and message in result.stderr
    assert not out.exists()


def test_eval_unknown_subset_names_mixed_with_rewardbench(tmp_path, cli, rm_dir):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "subset": "alpacaeval-easy"},
        {"prompt": "q", "chosen": "a", "rejected": "b", "subset": "my-own-subset"},
    ]
    result = cli("eval", "--model", rm_dir, "--data", write_jsonl(tmp_path / "e.jsonl", rows), "--output", tmp_path / "m.json")
    assert result.exit_code == 2 and "my-own-subset" in result.stderr
    assert not (tmp_path / "m.json").exists()


def test_eval_rewardbench_sections(tmp_path, cli, rm_dir):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "subset": s}
        for s in ("alpacaeval-easy", "mt-bench-hard", "donotanswer", "math-prm")
    ]
    out = tmp_path / "m.json"
    result = cli("eval", "--model", rm_dir, "--data", write_jsonl(tmp_path / "e.jsonl", rows), "--output", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics["sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}


def test_data_synth_writes_files(tmp_path, cli):
    result = cli("data", "synth", "--task", "noisy", "--output", tmp_path / "noisy", "--n-train", "20", "--n-test", "10")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "noisy" / "train.jsonl").read_text().splitlines()) == 20
    bad = cli("data", "synth", "--task", "nope", "--output", tmp_path / "x")
    assert bad.exit_code == 2 and "nope" in bad.stderr


def test_score_per_token_writes_process_rewards(tmp_path, cli, rm_dir, tiny_rm):
    data = write_jsonl(tmp_path / "pair.jsonl", [{"prompt": "hello", "chosen": "the lazy dog", "rejected": "fox"}])
    out = tmp_path / "scored.jsonl"
    result = cli("score", "--model", rm_dir, "--data", data, "--output", out, "--per-token", "--generator", "self")
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())
    chosen = row["token_rewards"][0]
    assert "".join(chosen["tokens"]) == "the lazy dog<|end|>"
    assert chosen["r"][-1] == pytest.approx(row["chosen_reward"], abs=1e-5)
    assert len(chosen["r"]) == len(chosen["delta"]) == len(chosen["w"]) == len(chosen["tokens"])
    assert all(0.0 <= w <= 1.0 for w in chosen["w"])


def test_score_keeps_the_input_columns_and_needs_no_label(tmp_path, cli, rm_dir, tiny_rm):
    """Rows come back as they were read (string prompts stay strings, extra columns stay), plus the scores."""
    rows = [
        {"prompt": "hello", "response": "world", "source": "web", "meta": {"k": [1, 2]}},  # no label
        {"prompt": "hello", "completion": "dog"},  # TRL's prompt-completion row
        {"prompt": [{"role": "user", "content": "hello"}], "response": "fox", "label": 1, "id": 7},
    ]
    data = write_jsonl(tmp_path / "point.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    result = cli("score", "--model", rm_dir, "--data", data, "--output", out)
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in row.items() if k != "reward"} for row in scored] == rows
    expected = tiny_rm.score(["hello"] * 3, ["world", "dog", "fox"])
    assert [row["reward"] for row in scored] == pytest.approx(expected, abs=1e-5)

    pairs = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}]
    data = write_jsonl(tmp_path / "hh.jsonl", pairs)  # an implicit prompt: the conversations stay whole
    assert cli("score", "--model", rm_dir, "--data", data, "--output", out, "--overwrite").exit_code == 0
    scored = json.loads(out.read_text())
    assert (scored["chosen"], scored["rejected"]) == (pairs[0]["chosen"], pairs[0]["rejected"])
    assert scored["chosen_reward"] == pytest.approx(tiny_rm.score(["hi"], ["hello"])[0], abs=1e-5)


def test_training_still_needs_labels_on_pointwise_rows(tmp_path, cli):
    data = write_jsonl(tmp_path / "point.jsonl", [{"prompt": "hello", "response": "world"}])
    result = cli("train", "--data", data, "--output", tmp_path / "out", "--method", "grm", "--max-steps", "1")
    assert result.exit_code == 2 and "point.jsonl:1: label: missing column" in result.stderr, result.output


def test_score_writes_back_parquet_columns_json_has_no_type_for(tmp_path, cli, rm_dir):
    import pandas as pd

    data = tmp_path / "pairs.parquet"
    pd.DataFrame({"prompt": ["hello"], "chosen": ["world"], "rejected": ["dog"], "n": [3],
                  "when": [pd.Timestamp("2024-01-02 03:04:05")]}).to_parquet(data)
    out = tmp_path / "scored.jsonl"
    result = cli("score", "--model", rm_dir, "--data", data, "--output", out)
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())
    assert (row["n"], row["when"]) == (3, "2024-01-02T03:04:05") and "chosen_reward" in row


def test_explain_reads_unlabelled_pointwise_rows(tmp_path, cli, rm_dir):
    """Explaining needs no label, as scoring needs none."""
    data = write_jsonl(tmp_path / "point.jsonl", [{"prompt": "hello", "response": "the lazy dog"}])
    out = tmp_path / "explain"
    result = cli("explain", "--model", rm_dir, "--data", data, "--output", out)
    assert result.exit_code == 0, result.output
    page = (out / "example-0001.html").read_text()
    assert "lazy" in page and "response" in page
