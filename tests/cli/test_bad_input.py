"""The bad-input catalogue, at the command line: one line naming file/line/field, exit 2, no output left."""

from __future__ import annotations

import pytest
from helpers import write_jsonl

OK_PAIR = {"prompt": "q", "chosen": "a b", "rejected": "c d"}


def _write(tmp_path, content):
    path = tmp_path / "data.jsonl"
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_jsonl(path, content)
    return path


CASES = {
    "missing file": (None, [], "nope.jsonl: file not found"),
    "empty file": ("", [], "data.jsonl: no rows (empty file)"),
    "invalid JSON line": ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops\n', [], "data.jsonl:2: invalid JSON"),
    "cut-off JSON line": ('{"prompt": "q", "chosen": "a"\n', [], "data.jsonl:1: invalid JSON (Expecting ',' delimiter at column 30)"),
    "missing comma": ('{"prompt": "q" "chosen": "a"}\n', [], "data.jsonl:1: invalid JSON (Expecting ',' delimiter at column 16)"),
    "missing prompt (pointwise)": ([{"response": "a", "label": 1, "prompt": None}], [], "data.jsonl:1: prompt: expected a string"),
    "missing chosen": ([{"prompt": "q", "rejected": "b"}], [], "data.jsonl:1: chosen: missing column"),
    "missing rejected": ([{"prompt": "q", "chosen": "a"}], [], "data.jsonl:1: rejected: missing column"),
    "missing label": ([{"prompt": "q", "response": "a"}], [], "data.jsonl:1: label: missing column"),
    "number for text": ([{"prompt": "q", "chosen": 5, "rejected": "b"}], [], "data.jsonl:1: chosen: expected text, got int"),
    "label not 0/1": ([{"prompt": "q", "response": "a", "label": 3}], [], "data.jsonl:1: label: label must be 0/1"),
    "empty response": ([{"prompt": "q", "chosen": "  ", "rejected": "b"}], [], "data.jsonl:1: chosen: empty response"),
    "chosen == rejected": ([{"prompt": "q", "chosen": "a", "rejected": "a"}], [], "data.jsonl:1: rejected: chosen and rejected are identical"),
    "mixed formats": ([OK_PAIR, {"prompt": "q", "response": "a", "label": 1}], [], "data.jsonl:2: mixed formats"),
    "all rows too long": ([{"prompt": "q", "chosen": "word " * 200, "rejected": "other " * 200}], ["--max-length", "16"],
                          "every row is longer than --max-length 16"),
    "unknown method": ([OK_PAIR], ["--method", "dpo"], "--method must be one of bt, grm, icrm, icrm-nosft, prm, prm-icrm, got 'dpo'"),
    "lambda outside [0,1]": ([OK_PAIR], ["--lambda", "-0.1"], "--lambda must be in [0, 1]"),
    "model dir that is not a model": ([OK_PAIR], ["--model", "EMPTY_DIR"], "not a model directory"),
    "missing model dir": ([OK_PAIR], ["--model", "/nonexistent/model"], "error: /nonexistent/model: no such directory"),
    "missing generator dir": ([OK_PAIR], ["--generator", "./no/such/generator"], "./no/such/generator: no such directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_rejects_bad_input(tmp_path, cli, case):
    content, extra, message = CASES[case]
    data = tmp_path / "nope.jsonl" if content is None else _write(tmp_path, content)
    (tmp_path / "empty-dir").mkdir()
    extra = [str(tmp_path / "empty-dir") if a == "EMPTY_DIR" else a for a in extra]
    out = tmp_path / "out"
    result = cli("train", "--data", data, "--output", out, "--max-steps", "1", *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_skip_invalid_skips_and_counts(tmp_path, cli):
    import json

    data = _write(tmp_path, [OK_PAIR, {"prompt": "q", "chosen": "a", "rejected": "a"}, dict(OK_PAIR, chosen="e f")])
    result = cli("train", "--data", data, "--output", tmp_path / "out", "--max-steps", "1", "--skip-invalid",
                 "--method", "bt")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["skipped_rows"] == 1 and metrics["train_examples"] == 2
    assert (f"warning: skipped 1 invalid row(s) of {data} (--skip-invalid); the first: "
            f"{data}:2: rejected: chosen and rejected are identical") in result.stderr  # shown even under --quiet


def test_eval_with_a_directory_that_is_not_a_reward_model(tmp_path, cli):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"model_type": "llama"}')
    data = _write(tmp_path, [OK_PAIR])
    result = cli("eval", "--model", tmp_path / "junk", "--data", data, "--output", tmp_path / "m.json")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("command", ["eval", "score", "sft", "sample"])
def test_missing_local_model_says_so(tmp_path, cli, command):
    data = _write(tmp_path, [OK_PAIR])
    model = {"sft": "--model", "sample": "--policy"}.get(command, "--model")
    extra = ["--prompts", data] if command == "sample" else ["--data", data]
    result = cli(command, model, tmp_path / "missing", *extra, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {tmp_path / 'missing'}: no such directory"


@pytest.mark.parametrize("command, option", [("eval", "--model"), ("score", "--model"), ("sample", "--policy"),
                                             ("train", "--generator")])
def test_a_typo_in_a_local_model_path_fails_at_once(tmp_path, cli, monkeypatch, command, option):
    """`runs/rm-icrn` beside `runs/` is a local path: one line, the likely name, and no hub retries."""
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    (tmp_path / "runs" / "rm-icrm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    data = _write(tmp_path, [OK_PAIR])
    extra = ["--prompts", data] if command == "sample" else ["--data", data]
    result = cli(command, option, "runs/rm-icrn", *extra, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: runs/rm-icrn: no such directory in runs/ (did you mean runs/rm-icrm?)"
    assert not (tmp_path / "out").exists()


def test_a_hub_id_offline_says_so(tmp_path, cli):
    """Under HF_HUB_OFFLINE=1 (set for every test) a hub id missing from the cache fails naming the setting."""
    data = _write(tmp_path, [OK_PAIR])
    result = cli("eval", "--model", "no-such-org/no-such-model", "--data", data)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: no-such-org/no-such-model: no such directory, and not in the hub cache "
                                     "(HF_HUB_OFFLINE=1)")


@pytest.mark.parametrize(
    "command, rows, message",
    [
        ("eval", [{"prompt": "q", "response": "a", "label": 1}],
         "data.jsonl:1: pointwise rows (response/label) give icrm eval nothing to compare: score them with icrm score"),
        ("score", [{"chosen_input_ids": [1, 2], "rejected_input_ids": [1, 3]}],
         "data.jsonl:1: pre-tokenized data is not accepted (row has chosen_input_ids, rejected_input_ids)"),
        ("train", '{"prompt": "q", "chosen": "a\n', "data.jsonl:1: invalid JSON (Unterminated string starting at column 27)"),
    ],
)
def test_data_the_command_cannot_use_says_what_to_pass(tmp_path, cli, tiny_rm, command, rows, message):
    model = tmp_path / "rm"
    tiny_rm.save_pretrained(model)
    args = ["--max-steps", "1"] if command == "train" else ["--model", model]
    out = tmp_path / "out"
    result = cli(command, "--data", _write(tmp_path, rows), "--output", out, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}/{message}"), lines
    assert not out.exists()
