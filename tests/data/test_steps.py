"""Process rewards: step text, step-boundary tokens and stepwise data against hand values."""

from __future__ import annotations

import pytest
from helpers import write_jsonl

from icrm.data import (
    DataError,
    RewardCollator,
    RewardDataset,
    encode,
    encode_steps,
    join_steps,
    labels_from_first_error,
    load_examples,
    split_steps,
    step_char_ends,
    tokenize_examples,
    tokens_at_chars,
)

# ------------------------------------------------------------------ step text


def test_split_steps_joins_back_and_glues_empty_pieces():
    assert split_steps("a\nb\nc") == ["a", "b", "c"]
    assert split_steps("a\n\nb\n") == ["a\n", "b\n"]
    assert split_steps("\n\na\nb") == ["\n\na", "b"]
    assert split_steps("one. two. three", ". ") == ["one", "two", "three"]
    for text in ("a\n\nb\n", "\n\na\nb", "x"):
        assert join_steps(split_steps(text)) == text
    with pytest.raises(ValueError):
        split_steps("\n\n")


def test_step_char_ends():
    assert step_char_ends(["ab", "c", "def"], "\n") == [2, 4, 8]
    assert step_char_ends(["ab", "c"], " :: ") == [2, 7]
    with pytest.raises(ValueError, match="step 1 is empty"):
        step_char_ends(["a", ""])


def test_tokens_at_chars_picks_the_token_holding_the_last_character():
    # tokens: "ab" (0-2), "c\n" (2-4), "d" (4-5)
    offsets = [(0, 2), (2, 4), (4, 5)]
    assert tokens_at_chars(offsets, [2, 3, 5]) == [0, 1, 2]
    # a character split into two byte tokens that share its span: the last of them
    assert tokens_at_chars([(0, 1), (1, 2), (1, 2), (2, 3)], [2]) == [2]


def _merging_tokenizer():
    """A BPE tokenizer whose vocabulary merges "5" and "\\n" into one token, and a one-line chat template."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["q", "#", "a", "b", " ", "=", "5", "\n", "5\n", "<pad>"])}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[("5", "\n")])),
                                  pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}#{% endfor %}"
    return tok


def test_step_ends_when_step_text_and_separator_merge_into_one_token():
    tok = _merging_tokenizer()
    seq = encode_steps(tok, [{"role": "user", "content": "q"}], ["a = 5", "b = 5"], "\n")
    # "q#a = 5\nb = 5#" -> q # a ' ' = ' ' "5\n" b ' ' = ' ' 5 #
    assert tok.convert_ids_to_tokens(seq.input_ids) == ["q", "#", "a", " ", "=", " ", "5\n", "b", " ", "=", " ", "5", "#"]
    assert seq.start == 2
    # step 1's last character "5" is inside the merged "5\n" (index 6): its score is read there;
    # the last step's score is read at the last token, where the outcome reward is.
    assert seq.step_ends == [6, 12]
    assert encode(tok, [{"role": "user", "content": "q"}], "a = 5\nb = 5").input_ids == seq.input_ids


def test_step_ends_with_the_tiny_tokenizer(tiny_rm):
    tok = tiny_rm.tokenizer
    steps = ["the fox", "café", "jumps over"]
    seq = encode_steps(tok, [{"role": "user", "content": "hello"}], steps)
    text_up_to = lambda end: tok.decode(seq.input_ids[seq.start : end])
    assert text_up_to(seq.step_ends[0] + 1) == "the fox"
    # "é" is two byte tokens for this tokenizer: step 2 is complete only after the second one
    assert text_up_to(seq.step_ends[1] + 1) == "the fox\ncafé"
    assert text_up_to(seq.step_ends[1]).endswith("caf\ufffd")
    assert seq.step_ends[-1] == seq.length - 1 and tok.decode(seq.input_ids[-1:]) == "<|end|>"


# ------------------------------------------------------------------ data


def test_stepwise_rows_load_as_step_examples(tmp_path):
    rows = [
        {"prompt": "2+2, then +1?", "completions": ["2+2 = 4", "4+1 = 5"], "labels": [True, True], "id": "a"},
        {"prompt": [{"role": "user", "content": "1+1?"}], "completions": ["1+1 = 3"], "labels": [0]},
    ]
    loaded = load_examples(write_jsonl(tmp_path / "s.jsonl", rows))
    assert loaded.format == "stepwise"
    first, second = loaded.examples
    assert first.steps == ["2+2 = 4", "4+1 = 5"] and first.labels == [1, 1] and first.id == "a"
    assert first.response == "2+2 = 4\n4+1 = 5" and first.label == 1
    assert second.label == 0 and second.prompt == [{"role": "user", "content": "1+1?"}]
    spaced = load_examples(tmp_path / "s.jsonl", step_separator=" ; ").examples[0]
    assert spaced.response == "2+2 = 4 ; 4+1 = 5"


def test_processbench_rows_load_with_labels_from_the_first_error(tmp_path):
    rows = [
        {"problem": "p", "steps": ["s1", "s2", "s3"], "label": 1, "id": "x"},
        {"problem": "q", "steps": ["t1", "t2"], "label": -1},
    ]
    loaded = load_examples(write_jsonl(tmp_path / "pb.jsonl", rows), expect=("stepwise",))
    assert loaded.format == "stepwise"
    assert [ex.labels for ex in loaded.examples] == [[1, 0, 0], [1, 1]]
    assert loaded.examples[0].prompt == [{"role": "user", "content": "p"}]
    assert labels_from_first_error(3, 0) == [0, 0, 0] and labels_from_first_error(2, -1) == [1, 1]


@pytest.mark.parametrize(
    "row, field, message",
    [
        ({"prompt": "p", "completions": ["a", "b"], "labels": [True]}, "labels", "one label per step"),
        ({"prompt": "p", "completions": ["a", ""], "labels": [True, True]}, "completions", "step 1 is empty"),
        ({"prompt": "p", "completions": [], "labels": []}, "completions", "non-empty list"),
        ({"prompt": "p", "completions": ["a"], "labels": ["maybe"]}, "labels", "label must be"),
        ({"prompt": "p", "completions": ["a"]}, "labels", "missing column"),
        ({"problem": "p", "steps": ["a", "b"], "label": 2}, "label", "step index below 2"),
        ({"problem": "p", "steps": ["a"], "label": True}, "label", "step index"),
    ],
)
def test_bad_stepwise_rows_name_line_and_field(tmp_path, row, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError, match=f"bad.jsonl:1: {field}: .*{message}"):
        load_examples(path)


def test_collator_gives_step_positions_and_labels(tmp_path, tiny_rm):
    rows = [
        {"prompt": "hi", "completions": ["the fox", "jumps over"], "labels": [True, False]},
        {"prompt": "hi", "completions": ["hello world"], "labels": [True]},
    ]
    examples = load_examples(write_jsonl(tmp_path / "s.jsonl", rows)).examples
    items, _, _ = tokenize_examples(examples, tiny_rm.tokenizer, 64)
    batch = RewardCollator(tiny_rm.tokenizer.pad_token_id)([RewardDataset(examples, items)[i] for i in range(2)])
    ends = [seqs[0].step_ends for seqs in items]
    assert batch["step_positions"].tolist() == [ends[0], [ends[1][0], -1]]
    assert batch["step_labels"].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert batch["labels"].tolist() == [0.0, 1.0]  # the outcome: the last step's label
    assert ends[0][-1] == items[0][0].length - 1


def test_truncation_shifts_step_positions(tmp_path, tiny_rm):
    rows = [{"prompt": "hello world " * 20, "completions": ["the fox", "jumps over"], "labels": [True, True]}]
    examples = load_examples(write_jsonl(tmp_path / "s.jsonl", rows)).examples
    (full,), _, _ = tokenize_examples(examples, tiny_rm.tokenizer, 1024)
    (cut,), _, stats = tokenize_examples(examples, tiny_rm.tokenizer, full[0].length - 5)
    assert stats.truncated == 1
    assert [cut[0].input_ids[e] for e in cut[0].step_ends] == [full[0].input_ids[e] for e in full[0].step_ends]
    assert cut[0].step_ends == [e - 5 for e in full[0].step_ends]


def test_step_rewards_read_at_step_ends_and_end_in_the_outcome(tiny_rm):
    steps = ["the fox", "jumps over", "the lazy dog"]
    prompt = "hello"
    step_scores = tiny_rm.step_rewards(prompt, steps)
    token_scores = tiny_rm.token_rewards(prompt, join_steps(steps))
    seq = encode_steps(tiny_rm.tokenizer, [{"role": "user", "content": prompt}], steps)
    assert step_scores == pytest.approx([float(token_scores[e - seq.start]) for e in seq.step_ends], abs=1e-6)
    assert step_scores[-1] == pytest.approx(tiny_rm.score([prompt], [join_steps(steps)])[0], abs=1e-6)
    batch = tiny_rm.step_rewards_batch([prompt, "hi"], [steps, ["hello world"]], batch_size=1)
    assert batch[0] == pytest.approx(step_scores, abs=1e-5) and len(batch[1]) == 1
