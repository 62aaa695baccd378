"""Process-reward metrics and step-score aggregation of icrm.evaluation against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from icrm.data import labels_from_first_error
from icrm.evaluation import (
    aggregate,
    auroc,
    average_ranks,
    first_error,
    first_error_f1,
    localization,
    predicted_first_error,
    step_metrics,
    step_profile,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_aggregate():
    scores = [2.0, -1.0, 0.5]
    assert aggregate(scores, "last") == 0.5
    assert aggregate(scores, "min") == -1.0
    assert aggregate(scores, "mean") == pytest.approx((sig(2.0) + sig(-1.0) + sig(0.5)) / 3)
    with pytest.raises(ValueError):
        aggregate(scores, "max")


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
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
