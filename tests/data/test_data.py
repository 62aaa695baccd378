"""Data loading, validation, templating and tokenization."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
import torch
from helpers import HH_FILE, write_jsonl

from icrm.data import (
    DataError,
    PairExample,
    RewardCollator,
    encode,
    last_token_index,
    load_examples,
    parse_hh_dialogue,
    tokenize_examples,
)


def test_real_hh_file_loads_as_is():
    loaded = load_examples(HH_FILE)
    assert loaded.format == "pairwise"
    assert len(loaded.examples) == 2312 and loaded.skipped == 0
    assert loaded.examples[86].chosen == ""  # line 87: the preferred answer is to say nothing
    ex = loaded.examples[0]
    assert ex.prompt[0]["role"] == "user" and ex.prompt[-1]["role"] == "user"
    assert ex.chosen.startswith("No, sorry!")
    assert "Human:" not in ex.chosen and "Assistant:" not in ex.rejected


def test_hh_dialogue_parsing():
    text = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ciao"
    assert parse_hh_dialogue(text) == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    assert parse_hh_dialogue("plain text") is None


def test_implicit_prompt_from_message_lists(tmp_path):
    prompt = [{"role": "user", "content": "2+2?"}]
    row = {
        "chosen": prompt + [{"role": "assistant", "content": "4"}],
        "rejected": prompt + [{"role": "assistant", "content": "5"}],
    }
    ex = load_examples(write_jsonl(tmp_path / "d.jsonl", [row])).examples[0]
    assert ex.prompt == prompt and ex.chosen == "4" and ex.rejected == "5"


def test_explicit_prompt_with_message_responses_and_margin(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": "go away",
        "margin": 1.5,
        "subset": "chat",
    }
    ex = load_examples(write_jsonl(tmp_path / "d.jsonl", [row])).examples[0]
    assert (ex.chosen, ex.rejected, ex.margin, ex.subset) == ("hello", "go away", 1.5, "chat")


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet", ".jsonl.gz", "dir"])
def test_formats(tmp_path, suffix):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
    path = tmp_path / f"d{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif suffix == ".jsonl.gz":
        with gzip.open(path, "wt") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    examples = load_examples(path).examples
    assert [e.chosen for e in examples] == ["good 0", "good 1", "good 2"]


def test_pointwise_and_bon(tmp_path):
    point = load_examples(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "response": "a", "label": True}]))
    assert point.format == "pointwise" and point.examples[0].label == 1
    bon = load_examples(
        write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "candidates": ["a", "b"], "labels": [0, 1], "answer": 3}])
    )
    assert bon.format == "bon" and bon.examples[0].labels == [0, 1] and bon.examples[0].answer == "3"


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([{"prompt": "q", "chosen": "a"}], ":1: rejected: missing column"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "", "rejected": "b"}], ":2: chosen: empty response"),
        ([{"prompt": "q", "chosen": "a", "rejected": "a"}], ":1: rejected: chosen and rejected are identical"),
        ([{"prompt": "q", "chosen": 3, "rejected": "b"}], ":1: chosen: expected text, got int"),
        ([{"prompt": "q", "response": "a", "label": 7}], ":1: label: label must be 0/1"),
        ([{"prompt": "q", "candidates": ["a", "b"], "labels": [1]}], ":1: labels: 1 labels for 2 candidates"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "response": "a", "label": 1}], ":2: mixed formats"),
        ([{"chosen": "just text", "rejected": "other"}], ":1: prompt: no prompt column"),
        ([{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: b"}], ":1: prompt: chosen and rejected share no prompt turn"),
        ([{"chosen_input_ids": [1, 2], "rejected_input_ids": [1, 3]}], ":1: pre-tokenized data is not accepted (row has "
         "chosen_input_ids, rejected_input_ids): pass the text columns"),
        ([{"input_ids": [1, 2], "label": 1}], ":1: pre-tokenized data is not accepted"),
        ([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}], ":1: pre-tokenized data is not accepted"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, rows, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert str(err.value).startswith(str(path)) and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_json_line_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_examples(path)
    for name, text, column in (("cut.jsonl", '{"prompt": "q\n', 12), ("cut.json", '[{"prompt": "q', 13)):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError) as err:
            load_examples(tmp_path / name)
        assert str(err.value).endswith(f":1: invalid JSON (Unterminated string starting at column {column})")
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_examples(tmp_path / "empty.jsonl")


def test_skip_invalid_counts_bad_rows(tmp_path):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": "a"}]
    loaded = load_examples(write_jsonl(tmp_path / "d.jsonl", rows), skip_invalid=True)
    assert len(loaded.examples) == 1 and loaded.skipped == 1


def test_encode_marks_exactly_the_response(tiny_rm):
    tok = tiny_rm.tokenizer
    prompt = [{"role": "user", "content": "hello world"}]
    seq = encode(tok, prompt, "the lazy dog")
    decoded = tok.decode(seq.input_ids[seq.start :])
    assert decoded == "the lazy dog<|end|>"
    assert tok.decode(seq.input_ids[: seq.start]) == "<|user|>hello world<|end|><|assistant|>"


def test_truncation_cuts_prompt_left_or_drops(tiny_rm):
    tok = tiny_rm.tokenizer
    ex = PairExample([{"role": "user", "content": "hello world " * 30}], "the dog", "the fox")
    items, kept, stats = tokenize_examples([ex], tok, 24, "left")
    chosen = items[0][0]
    assert chosen.length == 24 and tok.decode(chosen.input_ids[chosen.start :]) == "the dog<|end|>"
    assert stats.truncated == 2 and kept == [0]
    items, kept, stats = tokenize_examples([ex], tok, 24, "drop")
    assert items == [] and stats.dropped == 2


def test_last_token_index_left_right_padding_and_pad_equals_eos():
    eos = pad = 2
    right = torch.tensor([[5, 6, eos, pad, pad], [5, 6, 7, 8, eos]])
    right_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_token_index(right_mask).tolist() == [2, 4]
    left_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(left_mask).tolist() == [4, 4]
    # A pad-id search would pick position 1 for row 0 (the EOS equals the pad id):
    assert (right[0] != pad).nonzero().max().item() == 1


def test_collator_puts_chosen_then_rejected(tiny_rm):
    ex = PairExample([{"role": "user", "content": "hello"}], "the dog jumps", "fox")
    items, _, _ = tokenize_examples([ex, ex], tiny_rm.tokenizer, 64)
    batch = RewardCollator(tiny_rm.tokenizer.pad_token_id)([{"sequences": s, "margin": 0.0} for s in items])
    assert batch["input_ids"].shape[0] == 4
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[0] == lengths[1] == items[0][0].length and lengths[2] == items[0][1].length
    assert batch["response_mask"][0].sum() == items[0][0].length - items[0][0].start
