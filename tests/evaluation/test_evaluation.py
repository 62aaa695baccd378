"""Metric functions of icrm.evaluation against hand-computed values."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from icrm.evaluation import (
    bon_metrics,
    expected_pass_at_n,
    expected_random_at_n,
    pairwise_metrics,
    plot_accuracy_bars,
    plot_bon_curve,
    plot_loss_curves,
    plot_margin_histogram,
    reward_normalizer,
    rewardbench2_metrics,
    rewardbench2_subsets,
    rewardbench_example_counts,
    rewardbench_sections,
)

# --------------------------------------------------------------------------- #
# pairwise
# --------------------------------------------------------------------------- #


def test_ties_count_half():
    result = pairwise_metrics([1.0, 2.0, 0.0, 5.0], [0.0, 2.0, 1.0, 5.0])
    # correct, tie, wrong, tie -> (1 + .5 + 0 + .5) / 4
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["example_accuracy"] == pytest.approx(0.5)
    assert result["n"] == 4
    assert result["subsets"] == {}
    assert result["sections"] == {"all": {"accuracy": pytest.approx(0.5), "n": 4}}
    assert result["length_buckets"] == []


def test_reward_stats():
    stats = pairwise_metrics([1.0, 3.0], [0.0, 0.0])["reward_stats"]
    assert stats == pytest.approx(
        {"chosen_mean": 2.0, "chosen_std": 1.0, "rejected_mean": 0.0, "rejected_std": 0.0, "margin_mean": 2.0}
    )


def test_rewardbench_sections_use_official_weights_and_overall_is_mean_of_sections():
    # Chat: alpacaeval-easy 3 pairs (all correct), mt-bench-easy 1 pair (wrong)
    # Safety: donotanswer 2 pairs (one correct, one tie)
    subsets = ["alpacaeval-easy"] * 3 + ["mt-bench-easy"] + ["donotanswer"] * 2
    chosen = [1, 1, 1, 0, 1, 0]
    rejected = [0, 0, 0, 1, 0, 0]
    result = pairwise_metrics(chosen, rejected, subsets)

    # official EXAMPLE_COUNTS weights: alpacaeval-easy 100, mt-bench-easy 28 (not the 3 and 1 pairs here)
    chat = (1.0 * 100 + 0.0 * 28) / (100 + 28)
    safety = (1 + 0.5) / 2
    assert result["sections"] == {
        "Chat": {"accuracy": pytest.approx(chat), "n": 4},
        "Safety": {"accuracy": pytest.approx(safety), "n": 2},
    }
    assert result["accuracy"] == pytest.approx((chat + safety) / 2)
    assert result["example_accuracy"] == pytest.approx(4.5 / 6)
    assert result["subsets"] == {
        "alpacaeval-easy": {"accuracy": 1.0, "n": 3},
        "donotanswer": {"accuracy": 0.75, "n": 2},
        "mt-bench-easy": {"accuracy": 0.0, "n": 1},
    }
    assert result["benchmark"] == "RewardBench" and result["ties"] == "half"
    json.dumps(result)  # JSON-friendly


def test_reasoning_weighs_math_like_all_code_subsets_together():
    # math-prm counts 984 = 6 x 164 (each hep-* subset), as in the official EXAMPLE_COUNTS
    subsets = ["math-prm", "hep-go", "hep-rust"]
    result = pairwise_metrics([1, 0, 1], [0, 1, 0], subsets)
    assert result["sections"]["Reasoning"]["accuracy"] == pytest.approx((984 * 1 + 164 * 0 + 164 * 1) / (984 + 328))


def test_ties_as_loss_reproduce_the_official_rewardbench_script():
    # official run_rm.py: results = [1 if chosen > rejected else 0 ...]
    result = pairwise_metrics([1.0, 2.0, 0.0, 5.0], [0.0, 2.0, 1.0, 5.0], ties="loss")
    assert result["accuracy"] == pytest.approx(0.25)
    assert result["ties"] == "loss" and result["benchmark"] is None
    with pytest.raises(ValueError, match="ties must be one of half, loss"):
        pairwise_metrics([1.0], [0.0], ties="draw")


def test_section_mapping_resource():
    sections = rewardbench_sections()
    assert list(sections) == ["Chat", "Chat Hard", "Safety", "Reasoning"]
    assert "llmbar-adver-GPTOut" in sections["Chat Hard"]
    assert "math-prm" in sections["Reasoning"] and "hep-rust" in sections["Reasoning"]
    all_subsets = [s for subsets in sections.values() for s in subsets]
    assert len(all_subsets) == len(set(all_subsets)) == 23
    counts = rewardbench_example_counts()
    assert set(counts) == set(all_subsets)
    assert counts["math-prm"] == 984 and counts["xstest-should-respond"] == 250 and counts["mt-bench-hard"] == 37
    assert rewardbench2_subsets() == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]


def test_non_rewardbench_subsets_give_one_section():
    result = pairwise_metrics([1, 0, 1], [0, 1, 0], ["a", "b", "b"])
    assert result["sections"] == {"all": {"accuracy": pytest.approx(2 / 3), "n": 3}}
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["subsets"]["a"] == {"accuracy": 1.0, "n": 1}
    assert result["subsets"]["b"] == {"accuracy": 0.5, "n": 2}


def test_mixed_known_and_unknown_subsets_raise():
    with pytest.raises(ValueError, match="'my-subset'"):
        pairwise_metrics([1, 0], [0, 1], ["alpacaeval-easy", "my-subset"])
    with pytest.raises(ValueError, match="without a subset"):
        pairwise_metrics([1, 0], [0, 1], ["alpacaeval-easy", None])


def test_pairwise_validation():
    with pytest.raises(ValueError, match=r"differ in length \(2 vs 1\)"):
        pairwise_metrics([1, 2], [0])
    with pytest.raises(ValueError, match="line 2"):
        pairwise_metrics([1, float("nan")], [0, 0])
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_metrics([], [])


def test_length_buckets():
    chosen = [1, 1, 0, 1, 0, 1]
    rejected = [0, 0, 1, 0, 0, 0]
    chosen_len = [200, 150, 100, 105, 50, 10]
    rejected_len = [100, 100, 100, 100, 100, 100]
    # diffs: +100 longer, +50 longer, 0 similar, +5 similar (<= 10.5), -50 shorter (tie), -90 shorter
    result = pairwise_metrics(chosen, rejected, chosen_lengths=chosen_len, rejected_lengths=rejected_len)
    assert result["length_buckets"] == [
        {"bucket": "chosen longer", "accuracy": 1.0, "n": 2},
        {"bucket": "similar", "accuracy": 0.5, "n": 2},
        {"bucket": "chosen shorter", "accuracy": 0.75, "n": 2},
    ]
    empty = pairwise_metrics([1], [0], chosen_lengths=[10], rejected_lengths=[10])["length_buckets"]
    assert empty[0] == {"bucket": "chosen longer", "accuracy": None, "n": 0}
    with pytest.raises(ValueError, match="both"):
        pairwise_metrics([1], [0], chosen_lengths=[1])


# --------------------------------------------------------------------------- #
# RewardBench 2
# --------------------------------------------------------------------------- #


def test_rewardbench2_best_of_4_and_ties_at_the_top():
    scores = [
        [3.0, 1.0, 2.0, 0.0],  # chosen strictly highest: 1
        [3.0, 3.0, 2.0, 0.0],  # chosen ties one rejected at the top: 1/2 (official), 0 with ties="loss"
        [1.0, 1.0, 1.0, 1.0],  # four-way tie: 1/4, or 0
        [1.0, 3.0, 2.0, 0.0],  # a rejected one is highest: 0
        [2.0, 5.0, 1.0, 0.0],  # two chosen: the first is the one scored, the second competes: 0
    ]
    subsets = ["Math", "Math", "Focus", "Focus", "Safety"]
    half = rewardbench2_metrics(scores, [1, 1, 1, 1, 2], subsets)
    math_, focus, safety = (1 + 0.5) / 2, (0.25 + 0) / 2, 0.0
    assert half["subsets"] == {
        "Focus": {"accuracy": pytest.approx(focus), "n": 2},
        "Math": {"accuracy": pytest.approx(math_), "n": 2},
        "Safety": {"accuracy": 0.0, "n": 1},
    }
    assert half["sections"] == half["subsets"]
    assert half["accuracy"] == pytest.approx((math_ + focus + safety) / 3)
    assert half["benchmark"] == "RewardBench 2" and half["n"] == 5
    loss = rewardbench2_metrics(scores, [1, 1, 1, 1, 2], subsets, ties="loss")
    assert loss["subsets"]["Math"]["accuracy"] == pytest.approx(0.5)
    assert loss["subsets"]["Focus"]["accuracy"] == 0.0
    json.dumps(half)


def test_rewardbench2_without_subsets_is_plain_best_of_k_accuracy():
    result = rewardbench2_metrics([[2.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 2.0]], [1, 1, 1])
    assert result["subsets"] == {}
    assert result["sections"] == {"all": {"accuracy": pytest.approx(1.5 / 3), "n": 3}}
    assert result["accuracy"] == pytest.approx(0.5) and result["benchmark"] is None


def test_rewardbench2_ties_subset_formula():
    rows = [  # (id, scores with the correct answers first, number correct)
        ("ref:0", [5.0, 1.0, 2.0], 1),  # gap 5 - 2 = 3 > 0: accurate
        ("tied:0", [4.0, 3.0, 3.5, 0.0, 1.0], 3),  # gap 3 - 1 = 2, spread 4 - 3 = 1: accurate
        ("ref:1", [1.0, 2.0], 1),  # gap 1 - 2 = -1: wrong
        ("tied:1", [2.0, 2.0, 0.5], 2),  # gap 2 - 0.5 = 1.5, spread 0: accurate
        ("tied:2", [1.0, 0.0, 2.0], 2),  # no ref twin: counts in tied accuracy only; gap 0 - 2 = -2: wrong
    ]
    ids = [r[0] for r in rows]
    result = rewardbench2_metrics([r[1] for r in rows], [r[2] for r in rows], ["Ties"] * 5, ids)
    tied_accuracy, ref_accuracy = 2 / 3, 1 / 2
    # prompts 0 and 1 have both rows
    gap_tied, gap_ref, spread = (2.0, 1.5), (3.0, -1.0), (1.0, 0.0)
    preferred = sum(t > s for t, s in zip(gap_tied, spread)) / 2
    preferred_hard = sum(min(r, t) > s for r, t, s in zip(gap_ref, gap_tied, spread)) / 2
    margin = (math.tanh(min(3, 2) / 1 - 1) + -1.0) / 2  # prompt 1: min(-1, 1.5) / 0 = -inf, tanh(-inf) = -1
    expected = 0.3 * tied_accuracy + 0.3 * ref_accuracy + 0.2 * preferred + 0.2 * preferred_hard + 0.01 * margin
    assert result["subsets"] == {"Ties": {"accuracy": pytest.approx(expected), "n": 5}}
    assert result["ties_subset"] == pytest.approx(
        {
            "score": expected,
            "tied_accuracy": tied_accuracy,
            "ref_accuracy": ref_accuracy,
            "correctness_preferred": preferred,
            "correctness_preferred_hard": preferred_hard,
            "correctness_margin_score": margin,
        }
    )
    # 0/0 in the margin term counts 0
    zero = rewardbench2_metrics([[1.0, 1.0], [1.0, 1.0, 1.0]], [1, 2], ["Ties", "Ties"], ["ref:3", "tied:3"])
    assert zero["ties_subset"]["correctness_margin_score"] == 0.0
    assert zero["accuracy"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([[1.0, 0.0]], [1], ["Math"], [None]), {}, None),
        (([[1.0, 0.0], [1.0, 0.0]], [1, 1], ["Math", "mine"]), {}, "mix RewardBench 2 subsets with unknown subset"),
        (([[1.0, 0.0], [1.0, 0.0]], [1, 1], ["a", None]), {}, r"1 row\(s\) without a subset"),
        (([[1.0, 0.0]], [1], ["Ties"], ["7"]), {}, "row 1: a Ties row needs an id 'ref:N' or 'tied:N'"),
        (([[1.0, 0.0]], [1], ["Ties"], ["ref:1"]), {}, "no prompt has both"),
        (([[1.0, 0.0], [1.0, 0.0]], [1, 1], ["Ties"] * 2, ["ref:1", "tied:1"]), {}, "single correct answer"),
        (([[1.0, 0.0], [1.0]], [1, 1]), {}, "row 2: needs at least one chosen and one rejected"),
        (([[1.0, float("nan")]], [1]), {}, "row 1: a reward is not finite"),
        (([[1.0, 0.0]], [1]), {"ties": "both"}, "ties must be one of"),
        (([], []), {}, "no rows"),
    ],
)
def test_rewardbench2_validation(args, kwargs, message):
    if message is None:
        assert rewardbench2_metrics(*args, **kwargs)["accuracy"] == 1.0
        return
    with pytest.raises(ValueError, match=message):
        rewardbench2_metrics(*args, **kwargs)


def test_reward_normalizer():
    assert reward_normalizer([1.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert reward_normalizer([4.0, 4.0]) == (4.0, 1e-6)


# --------------------------------------------------------------------------- #
# best-of-N
# --------------------------------------------------------------------------- #


def brute_force(scores, labels, n):
    """Average over every n-subset: (accuracy with split ties, pass, random)."""
    acc, pas, rnd = [], [], []
    for subset in itertools.combinations(range(len(scores)), n):
        top = max(scores[i] for i in subset)
        tied = [labels[i] for i in subset if scores[i] == top]
        acc.append(sum(tied) / len(tied))
        pas.append(max(labels[i] for i in subset))
        rnd.append(sum(labels[i] for i in subset) / n)
    return np.mean(acc), np.mean(pas), np.mean(rnd)


def test_pass_and_random_match_enumeration_and_closed_forms():
    scores = [[0.3, 0.9, 0.1, 0.5, 0.7]]
    labels = [[0, 1, 0, 1, 0]]  # k=5, c=2
    result = bon_metrics(scores, labels, [1, 2, 3, 4, 5], n_draws=32)  # C(5, n) <= 10: exact
    assert result["n"] == [1, 2, 3, 4, 5]
    assert result["num_prompts"] == 1
    for n in range(1, 6):
        acc, pas, rnd = brute_force(scores[0], labels[0], n)
        assert result["pass"][str(n)] == pytest.approx(pas)
        assert result["pass"][str(n)] == pytest.approx(expected_pass_at_n(5, 2, n))
        assert result["random"][str(n)] == pytest.approx(rnd)
        assert result["random"][str(n)] == pytest.approx(expected_random_at_n(5, 2, n))
        assert result["accuracy"][str(n)] == pytest.approx(acc)
    assert result["pass"]["1"] == pytest.approx(0.4) and result["pass"]["4"] == pytest.approx(1.0)
    assert result["accuracy"]["5"] == 1.0  # the top-scoring candidate (0.9) is correct


def test_closed_forms():
    assert expected_pass_at_n(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert expected_pass_at_n(4, 0, 2) == 0.0
    assert expected_random_at_n(4, 1, 3) == 0.25


def test_sampled_subsets_approach_closed_forms_and_are_seeded():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(200, 16)).tolist()
    labels = (rng.random((200, 16)) < 0.3).astype(int).tolist()
    a = bon_metrics(scores, labels, [4], n_draws=64, seed=3)
    b = bon_metrics(scores, labels, [4, 8], n_draws=64, seed=3)
    assert a["accuracy"]["4"] == b["accuracy"]["4"]  # independent of which other n are requested
    expected_pass = np.mean([expected_pass_at_n(16, sum(row), 4) for row in labels])
    assert a["pass"]["4"] == pytest.approx(expected_pass, abs=0.02)
    assert a["random"]["4"] == pytest.approx(np.mean(labels), abs=0.01)


def test_accuracy_splits_credit_among_tied_top_candidates():
    result = bon_metrics([[2.0, 2.0, 2.0, 1.0]], [[1, 0, 0, 1]], [4, 1])
    assert result["n"] == [1, 4]
    assert result["accuracy"]["4"] == pytest.approx(1 / 3)
    assert result["accuracy"]["1"] == pytest.approx(0.5)  # n=1: random pick
    acc, _, _ = brute_force([2.0, 2.0, 2.0, 1.0], [1, 0, 0, 1], 2)
    assert bon_metrics([[2.0, 2.0, 2.0, 1.0]], [[1, 0, 0, 1]], [2])["accuracy"]["2"] == pytest.approx(acc)


def test_majority_vote():
    scores = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    labels = [[1, 1, 0, 0], [0, 1, 0]]
    answers = [["42", "42", "7", "7"], ["5", "6", None]]
    # Row 2 has only 3 candidates, so n=4 must fail
    with pytest.raises(ValueError, match="line 2: n=4 exceeds the 3 candidates"):
        bon_metrics(scores, labels, [4, 3], answers=answers)
    result = bon_metrics(scores, labels, [3], answers=answers)
    # row 1, n=3: {42,42,7} twice -> "42" (correct), {42,7,7} twice -> "7" (wrong): 0.5
    # row 2, n=3: None does not vote, "5" and "6" tie 1-1 -> half credit ("6" is correct): 0.5
    assert result["majority"]["3"] == pytest.approx(0.5)
    single = bon_metrics([scores[0]], [labels[0]], [4, 1], answers=[answers[0]])
    assert single["majority"]["4"] == pytest.approx(0.5)  # "42" and "7" tie 2-2 -> half credit
    # n=1: the single answer wins -> its correctness: 2 of 4 candidates answer "42"
    assert single["majority"]["1"] == pytest.approx(0.5)
    clear = bon_metrics([[0, 0, 0]], [[0, 1, 0]], [3], answers=[["9", "9", "8"]])
    assert clear["majority"]["3"] == 1.0  # "9" is correct because one "9" candidate has label 1
    nobody = bon_metrics([[0, 0]], [[1, 0]], [2], answers=[[None, None]])
    assert nobody["majority"]["2"] == 0.0
    assert "majority" not in bon_metrics([[0, 0]], [[1, 0]], [2])


def brute_majority(answers, labels, n):
    correct = {a for a, y in zip(answers, labels) if a is not None and y == 1}
    credits = []
    for subset in itertools.combinations(range(len(answers)), n):
        votes = {}
        for i in subset:
            if answers[i] is not None:
                votes[answers[i]] = votes.get(answers[i], 0) + 1
        if not votes:
            credits.append(0.0)
            continue
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        credits.append(sum(a in correct for a in winners) / len(winners))
    return float(np.mean(credits))


def test_majority_matches_brute_force():
    answers = ["1", "2", "1", None, "3", "2"]
    labels = [0, 1, 0, 0, 0, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    result = bon_metrics([scores], [labels], [1, 2, 3, 6], answers=[answers], n_draws=100)
    for n in (1, 2, 3, 6):
        assert result["majority"][str(n)] == pytest.approx(brute_majority(answers, labels, n))


def test_bon_validation_messages():
    with pytest.raises(ValueError, match=r"line 2: candidates and labels differ in length \(4 vs 3\)"):
        bon_metrics([[0, 1], [0, 1, 2, 3]], [[0, 1], [0, 1, 1]], [1])
    with pytest.raises(ValueError, match="line 1: n=8 exceeds the 4 candidates"):
        bon_metrics([[0, 1, 2, 3]], [[0, 1, 1, 0]], [1, 8])
    with pytest.raises(ValueError, match="at least 1"):
        bon_metrics([[0, 1]], [[0, 1]], [0, 1])
    with pytest.raises(ValueError, match="line 1: labels must be 0 or 1"):
        bon_metrics([[0, 1]], [[0, 2]], [1])
    with pytest.raises(ValueError, match="line 1: candidates and answers differ"):
        bon_metrics([[0, 1]], [[0, 1]], [1], answers=[["a"]])


def test_bon_result_is_json_friendly():
    result = bon_metrics([[0.1, 0.2]], [[0, 1]], [1, 2], answers=[["a", "b"]])
    assert set(result) == {"n", "accuracy", "pass", "random", "majority", "num_prompts"}
    assert json.loads(json.dumps(result)) == result


# --------------------------------------------------------------------------- #
# plots
# --------------------------------------------------------------------------- #


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png_files(tmp_path):
    margin = plot_margin_histogram([1.0, 2.0, 0.5], [0.0, 2.5, 0.1], tmp_path / "margins.png")
    bon = bon_metrics([[0.1, 0.5, 0.2, 0.9]], [[0, 1, 0, 1]], [1, 2, 4], answers=[["a", "b", "a", "b"]])
    curve = plot_bon_curve(bon, tmp_path / "sub" / "bon.png", title="BoN")
    bars = plot_accuracy_bars(
        {"bt": {"test": 0.6, "reversed": 0.3}, "icrm": {"test": 0.7, "reversed": 0.5}},
        tmp_path / "bars.png",
        "accuracy per split",
    )
    losses = plot_loss_curves({"bt": [(1, 0.7), (2, 0.6)], "icrm": [(1, 0.8), (2, 0.5)]}, tmp_path / "loss.png")
    for path in (margin, curve, bars, losses):
        assert _is_png(Path(path))
    # only the four PNGs (and the subfolder), no leftover temporary files
    leftovers = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert leftovers == ["bars.png", "bon.png", "loss.png", "margins.png"]
