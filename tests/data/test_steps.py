"""Process rewards: step text, step-boundary tokens, stepwise data and step metrics against hand values."""

from __future__ import annotations

import json
import math

import pytest
from helpers import write_jsonl

from icrm.data import (
    DataError,
    RewardCollator,
    RewardDataset,
    aggregate,
    auroc,
    encode,
    encode_steps,
    first_error,
    first_error_f1,
    join_steps,
    labels_from_first_error,
    load_examples,
    localization,
    predicted_first_error,
    split_steps,
    step_char_ends,
    step_metrics,
    step_profile,
    tokenize_examples,
    tokens_at_chars,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


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


# ------------------------------------------------------------------ scores


def test_aggregate():
    scores = [2.0, -1.0, 0.5]
    assert aggregate(scores, "last") == 0.5
    assert aggregate(scores, "min") == -1.0
    assert aggregate(scores, "mean") == pytest.approx((sig(2.0) + sig(-1.0) + sig(0.5)) / 3)
    with pytest.raises(ValueError):
        aggregate(scores, "max")


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


# ------------------------------------------------------------------ metrics


def test_auroc_by_hand():
    # pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # a tie counts half: pos 1 vs neg 1 (0.5), pos 1 vs neg 0 (1) -> 1.5/2
    assert auroc([1.0, 1.0, 0.0], [1, 0, 0]) == pytest.approx(0.75)
    assert auroc([0.3, 0.2], [1, 1]) is None


def test_first_error_and_prediction():
    assert first_error([1, 1, 0, 1]) == 2 and first_error([1, 1]) == -1
    assert predicted_first_error([2.0, -0.1, 3.0]) == 1
    assert predicted_first_error([2.0, 3.0]) == -1
    assert predicted_first_error([2.0, 3.0], threshold=0.9) == 0  # σ(2) = 0.881 < 0.9


CHAINS = [  # (step scores, first wrong step)
    ([2.0, -1.0, -2.0], 1),  # predicted 1: right
    ([2.0, 2.0, -1.0], 0),  # predicted 2: wrong
    ([1.0, 1.0], -1),  # predicted none: right
    ([1.0, -1.0], -1),  # predicted 1: wrong
    ([3.0], -1),  # right
]


def test_first_error_f1_by_hand():
    out = first_error_f1([c for c, _ in CHAINS], [f for _, f in CHAINS])
    assert out["accuracy_erroneous"] == pytest.approx(1 / 2) and out["accuracy_correct"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))  # 4/7
    assert out["n_erroneous"] == 2 and out["n_correct"] == 3
    assert first_error_f1([[1.0]], [-1])["f1"] is None
    assert first_error_f1([[1.0], [1.0]], [-1, 0])["f1"] == 0.0


def test_localization_by_hand():
    # chain 1: σ = 1, .881, .269, .119 -> drops .119, .612, .150: largest at step 1 = the first error
    # chain 2: σ = 1, .881, .881, .269 -> drops .119, 0, .612: largest at step 2, the error is at 0
    assert localization([c for c, _ in CHAINS], [f for _, f in CHAINS]) == pytest.approx(0.5)
    # σ = 1, .75, .5 -> drops .25, .25: a tie splits the credit
    assert localization([[math.log(3), 0.0]], [1]) == pytest.approx(0.5)
    assert localization([[1.0]], [-1]) is None


def test_step_metrics_overall_and_by_number_of_steps():
    scores = [c for c, _ in CHAINS]
    labels = [labels_from_first_error(len(c), f) for c, f in CHAINS]
    out = step_metrics(scores, labels)
    flat_scores = [s for c in scores for s in c]
    flat_labels = [y for row in labels for y in row]
    assert out["step_auroc"] == pytest.approx(auroc(flat_scores, flat_labels))
    assert out["first_error_f1"] == pytest.approx(4 / 7) and out["localization"] == pytest.approx(0.5)
    assert out["n_chains"] == 5 and out["n_steps"] == 11 and out["threshold"] == 0.5
    assert set(out["by_num_steps"]) == {"1", "2", "3"}
    three = out["by_num_steps"]["3"]  # chains 1 and 2: both erroneous
    assert three["n_chains"] == 2 and three["first_error_f1"] is None
    assert three["first_error_accuracy_erroneous"] == pytest.approx(0.5) and three["localization"] == pytest.approx(0.5)
    # labels of chains 1-2: [1,0,0], [0,0,0]; scores 2,-1,-2 | 2,2,-1: the positive (2) beats the
    # negatives -1, -2, -1 and ties the two 2s
    assert three["step_auroc"] == pytest.approx((3 + 2 * 0.5) / 5)
    two = out["by_num_steps"]["2"]
    assert two["first_error_accuracy_correct"] == pytest.approx(0.5) and two["localization"] is None
    json.dumps(out)
    with pytest.raises(ValueError, match="line 2"):
        step_metrics([[1.0], [1.0, 2.0]], [[1], [1]])


def test_step_profile():
    profile = step_profile([[2.0, -1.0], [0.0, 0.0]], [[1, 0], [1, 1]])
    assert profile["erroneous"] == {-1: (pytest.approx(sig(2.0)), 1), 0: (pytest.approx(sig(-1.0)), 1)}
    assert profile["correct"] == {0: (0.5, 1), 1: (0.5, 1)}


def test_average_ranks_share_ties():
    import numpy as np

    from icrm.data import average_ranks

    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
