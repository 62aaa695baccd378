"""Loss functions of icrm.losses against values computed by hand (docs/design.md#the-objective).

Every expected number below is computed independently with plain Python
``math`` on small literal values, never by calling the function under test.
Gradients are checked through ``.grad`` so the stop-gradient parts of the
method (generator weights, the other side's mean, the ``sg(d)`` factors, the
normalizer) are pinned down too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from icrm.losses import (
    EMA_INIT,
    EMA_MOMENTUM,
    EPS,
    adjacent_pair_mask,
    adjacent_pair_weights,
    bradley_terry,
    consistency_loss,
    gather_steps,
    masked_mean,
    pairwise_consistency_targets,
    pointwise_bce,
    pointwise_consistency_targets,
    scale_grad,
    sft_nll,
    step_bce,
    step_token_labels,
)

DT = torch.float64


def t(values, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=DT, requires_grad=requires_grad)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x))


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def assert_close(got: torch.Tensor, expected) -> None:
    """Elementwise comparison of a tensor with a (nested) list of hand-computed floats."""
    torch.testing.assert_close(got.detach().to(DT), torch.tensor(expected, dtype=DT), rtol=1e-9, atol=1e-12)


def assert_grad(tensor: torch.Tensor, expected) -> None:
    assert tensor.grad is not None
    assert_close(tensor.grad, expected)


def no_grad_or_zero(tensor: torch.Tensor) -> bool:
    return tensor.grad is None or bool(torch.all(tensor.grad == 0))


def test_constants_match_design():
    assert EMA_MOMENTUM == 0.95
    assert EMA_INIT == 0.5
    assert 0 < EPS < 1e-4


# --------------------------------------------------------------------------- #
# Bradley–Terry
# --------------------------------------------------------------------------- #

RC = [1.5, -0.3, 0.2]
RR = [0.5, 0.4, 0.2]


def test_bradley_terry_plain():
    expected = -sum(log_sigmoid(c - r) for c, r in zip(RC, RR)) / 3
    assert bradley_terry(t(RC), t(RR)).item() == approx(expected)


def test_bradley_terry_margin_is_per_pair():
    margin = [0.25, 0.0, 1.0]
    expected = -sum(log_sigmoid(c - r - m) for c, r, m in zip(RC, RR, margin)) / 3
    got = bradley_terry(t(RC), t(RR), margin=t(margin)).item()
    assert got == approx(expected)
    # a positive margin asks for a larger gap, so the loss goes up
    assert got > bradley_terry(t(RC), t(RR)).item()


def test_bradley_terry_center_rewards_coefficient():
    coef = 0.01
    bt = -sum(log_sigmoid(c - r) for c, r in zip(RC, RR)) / 3
    center = sum((c + r) ** 2 for c, r in zip(RC, RR)) / 3
    got = bradley_terry(t(RC), t(RR), center_rewards_coefficient=coef).item()
    assert got == approx(bt + coef * center)


def test_bradley_terry_margin_and_center_together():
    margin = [0.1, -0.2, 0.3]
    coef = 0.5
    bt = -sum(log_sigmoid(c - r - m) for c, r, m in zip(RC, RR, margin)) / 3
    center = sum((c + r) ** 2 for c, r in zip(RC, RR)) / 3
    got = bradley_terry(t(RC), t(RR), margin=t(margin), center_rewards_coefficient=coef).item()
    assert got == approx(bt + coef * center)


def test_bradley_terry_gradient():
    rc, rr = t(RC, requires_grad=True), t(RR, requires_grad=True)
    bradley_terry(rc, rr).backward()
    # d/dR_c of -log σ(R_c - R_r) / n = -(1 - σ(R_c - R_r)) / n
    expected = [-(1 - sigmoid(c - r)) / 3 for c, r in zip(RC, RR)]
    assert_grad(rc, expected)
    assert_grad(rr, [-g for g in expected])


# --------------------------------------------------------------------------- #
# pointwise BCE
# --------------------------------------------------------------------------- #


def test_pointwise_bce():
    rewards = [2.0, -1.0, 0.3, -0.7]
    labels = [1, 0, 0, 1]
    expected = -sum(
        z * math.log(sigmoid(r)) + (1 - z) * math.log(1 - sigmoid(r)) for r, z in zip(rewards, labels)
    ) / len(rewards)
    assert pointwise_bce(t(rewards), torch.tensor(labels)).item() == approx(expected)
    # bool labels are accepted too
    bool_labels = torch.tensor([bool(z) for z in labels])
    assert pointwise_bce(t(rewards), bool_labels).item() == approx(expected)


# --------------------------------------------------------------------------- #
# masks: masked mean, adjacent pairs
# --------------------------------------------------------------------------- #

# Two rows x four positions.  Row 0: prompt at 0, response at 1..3.
# Row 1: prompt at 0, response at 1..2, padding at 3.
MASK = [[0, 1, 1, 1], [0, 1, 1, 0]]
W = [[0.9, 0.8, 0.6, 0.7], [0.5, 0.4, 0.3, 0.2]]


def test_masked_mean_ignores_prompt_and_padding():
    values = [[10.0, 1.0, 2.0, 6.0], [-5.0, 3.0, 5.0, 100.0]]
    got = masked_mean(t(values), torch.tensor(MASK))
    assert_close(got, [(1.0 + 2.0 + 6.0) / 3, (3.0 + 5.0) / 2])


def test_masked_mean_empty_row_is_zero_not_nan():
    got = masked_mean(t([[1.0, 2.0]]), torch.tensor([[0, 0]]))
    assert got.tolist() == [0.0]


def test_adjacent_pair_weights():
    got = adjacent_pair_weights(torch.tensor(MASK), t(W))
    # pair (t, t+1) counts only when both are response tokens; its weight is w_t
    expected = [
        [0.0, 0.8, 0.6],  # (0,1): prompt->response excluded; (1,2) w_1; (2,3) w_2
        [0.0, 0.4, 0.0],  # (1,2) w_1; (2,3): response->padding excluded
    ]
    assert got.shape == (2, 3)
    assert_close(got, expected)


def test_adjacent_pair_weights_left_padding():
    # left padding: pad pad prompt resp resp resp
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]])
    w = t([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    got = adjacent_pair_weights(mask, w)
    assert_close(got, [[0.0, 0.0, 0.0, 0.4, 0.5]])


def test_adjacent_pair_mask_counts_pairs_not_weights():
    assert adjacent_pair_mask(torch.tensor(MASK)).tolist() == PM.tolist()


def test_consistency_loss_counts_zero_weight_pairs():
    """A pair whose connecting token has p ≈ 0 still counts in N_pairs (the reference counts by mask).

    Counting only pairs with w > 0 would divide by 2 here instead of 3 and
    silently drop such pairs from the average.
    """
    pw = [[0.0, 0.8, 0.0], [0.0, 0.4, 0.0]]  # pair (0, 2) has w = 0 (e.g. a float16 underflow)
    out = consistency_loss(t(D), t(pw), PM, torch.tensor(0.5, dtype=DT))
    raw, norm = _hand_raw_and_normalizer(D, [(0, 1, 0.8), (0, 2, 0.0), (1, 1, 0.4)])
    assert raw == approx(sum(_ell(D, b, i) * w for b, i, w in [(0, 1, 0.8), (1, 1, 0.4)]) / 3)
    assert out.raw.item() == approx(raw)
    assert out.normalizer.item() == approx(norm)


def test_adjacent_pair_weights_are_stop_gradient():
    w = t(W, requires_grad=True)
    pw = adjacent_pair_weights(torch.tensor(MASK), w)
    assert not pw.requires_grad
    assert w.grad is None


# --------------------------------------------------------------------------- #
# pairwise consistency targets
# --------------------------------------------------------------------------- #

R_CHOSEN = [[9.0, 0.5, 1.0, 1.5], [-9.0, 0.2, -0.4, 7.0]]
R_REJECTED = [[4.0, 0.0, -0.5, 0.3], [3.0, 0.6, 0.1, -8.0]]
MASK_C = [[0, 1, 1, 1], [0, 1, 1, 0]]
MASK_R = [[0, 1, 1, 0], [0, 0, 1, 1]]


def _row_mean(values, mask):
    picked = [v for v, m in zip(values, mask) if m]
    return sum(picked) / len(picked)


def test_pairwise_consistency_targets_values():
    d_c, d_r = pairwise_consistency_targets(
        t(R_CHOSEN), torch.tensor(MASK_C), t(R_REJECTED), torch.tensor(MASK_R)
    )
    for b in range(2):
        mean_c = _row_mean(R_CHOSEN[b], MASK_C[b])
        mean_r = _row_mean(R_REJECTED[b], MASK_R[b])
        assert_close(d_c[b], [sigmoid(r - mean_r) for r in R_CHOSEN[b]])
        assert_close(d_r[b], [1 - sigmoid(r - mean_c) for r in R_REJECTED[b]])


def test_pairwise_consistency_targets_use_masked_not_full_mean():
    # the reference code's full-row mean would differ here (prompt/padding rewards are huge)
    d_c, _ = pairwise_consistency_targets(
        t(R_CHOSEN), torch.tensor(MASK_C), t(R_REJECTED), torch.tensor(MASK_R)
    )
    full_mean_r = sum(R_REJECTED[0]) / 4
    assert d_c[0, 1].item() != approx(sigmoid(R_CHOSEN[0][1] - full_mean_r))


def test_pairwise_consistency_targets_stop_gradient_through_other_mean():
    rc, rr = t(R_CHOSEN, requires_grad=True), t(R_REJECTED, requires_grad=True)
    d_c, d_r = pairwise_consistency_targets(rc, torch.tensor(MASK_C), rr, torch.tensor(MASK_R))

    d_c.sum().backward()
    assert no_grad_or_zero(rr)  # the rejected mean is sg(.)
    # d σ(r_c - m)/d r_c = σ(1-σ), elementwise only
    expected = []
    for b in range(2):
        mean_r = _row_mean(R_REJECTED[b], MASK_R[b])
        expected.append([sigmoid(r - mean_r) * (1 - sigmoid(r - mean_r)) for r in R_CHOSEN[b]])
    assert_grad(rc, expected)

    rc.grad = None
    rr.grad = None
    d_c, d_r = pairwise_consistency_targets(rc, torch.tensor(MASK_C), rr, torch.tensor(MASK_R))
    d_r.sum().backward()
    assert no_grad_or_zero(rc)  # the chosen mean is sg(.)
    expected = []
    for b in range(2):
        mean_c = _row_mean(R_CHOSEN[b], MASK_C[b])
        expected.append([-sigmoid(r - mean_c) * (1 - sigmoid(r - mean_c)) for r in R_REJECTED[b]])
    assert_grad(rr, expected)


# --------------------------------------------------------------------------- #
# pointwise consistency targets
# --------------------------------------------------------------------------- #


def test_pointwise_consistency_targets():
    rewards = [[0.3, -1.2, 2.0], [0.3, -1.2, 2.0]]
    got = pointwise_consistency_targets(t(rewards), torch.tensor([1, 0]))
    assert_close(got[0], [sigmoid(r) for r in rewards[0]])  # z = 1
    assert_close(got[1], [1 - sigmoid(r) for r in rewards[1]])  # z = 0
    got_bool = pointwise_consistency_targets(t(rewards), torch.tensor([True, False]))
    assert_close(got_bool, got.tolist())


# --------------------------------------------------------------------------- #
# consistency loss
# --------------------------------------------------------------------------- #

D = [[0.2, 0.7, 0.6, 0.9], [0.5, 0.3, 0.4, 0.1]]
# pair weights [B, L-1]: row 0 has pairs (1,2) and (2,3), row 1 has pair (1,2)
PW = [[0.0, 0.8, 0.6], [0.0, 0.4, 0.0]]
PAIRS = [(0, 1, 0.8), (0, 2, 0.6), (1, 1, 0.4)]  # (row, t, w_t)
N_PAIRS = 3
PM = torch.tensor([[False, True, True], [False, True, False]])  # the pairs of MASK


def _ell(d, b, i):
    a, c = d[b][i], d[b][i + 1]
    return -0.5 * (math.log(a + EPS) * c + a * math.log(c + EPS))


def _hand_raw_and_normalizer(d, pairs):
    raw = norm = 0.0
    for b, i, w in pairs:
        a, c = d[b][i], d[b][i + 1]
        ell = -0.5 * (math.log(a + EPS) * c + a * math.log(c + EPS))
        raw += ell * w
        norm += (a + c) / 2 * w
    return raw / len(pairs), norm / len(pairs)


def test_consistency_loss_one_step_by_hand():
    out = consistency_loss(t(D), t(PW), PM, torch.tensor(0.5, dtype=DT))
    raw, norm = _hand_raw_and_normalizer(D, PAIRS)
    ema = 0.95 * 0.5 + 0.05 * norm
    assert out.raw.item() == approx(raw)
    assert out.normalizer.item() == approx(norm)
    assert out.ema.item() == approx(ema)
    assert out.loss.item() == approx(raw / (ema + EPS))


def test_consistency_loss_literal_numbers():
    # the same sums written out, so a reader can check them on paper
    l1 = -0.5 * (math.log(0.7) * 0.6 + 0.7 * math.log(0.6))
    l2 = -0.5 * (math.log(0.6) * 0.9 + 0.6 * math.log(0.9))
    l3 = -0.5 * (math.log(0.3) * 0.4 + 0.3 * math.log(0.4))
    raw = (0.8 * l1 + 0.6 * l2 + 0.4 * l3) / 3
    norm = (0.8 * 0.65 + 0.6 * 0.75 + 0.4 * 0.35) / 3  # = 0.37
    assert norm == pytest.approx(0.37)
    out = consistency_loss(t(D), t(PW), PM, torch.tensor(0.5, dtype=DT))
    assert out.raw.item() == pytest.approx(raw, rel=1e-6)
    assert out.normalizer.item() == pytest.approx(0.37, rel=1e-9)
    assert out.ema.item() == pytest.approx(0.95 * 0.5 + 0.05 * 0.37, rel=1e-9)  # 0.4935
    assert out.loss.item() == pytest.approx(raw / 0.4935, rel=1e-6)


def test_consistency_loss_ema_across_two_steps():
    d2 = [[0.1, 0.15, 0.2, 0.25], [0.9, 0.95, 0.85, 0.8]]
    pw2 = [[0.0, 1.0, 0.5], [0.0, 0.2, 0.0]]
    pairs2 = [(0, 1, 1.0), (0, 2, 0.5), (1, 1, 0.2)]

    step1 = consistency_loss(t(D), t(PW), PM, torch.tensor(EMA_INIT, dtype=DT))
    step2 = consistency_loss(t(d2), t(pw2), torch.tensor(pw2) > 0, step1.ema)

    raw1, n1 = _hand_raw_and_normalizer(D, PAIRS)
    raw2, n2 = _hand_raw_and_normalizer(d2, pairs2)
    ema1 = 0.95 * 0.5 + 0.05 * n1
    ema2 = 0.95 * ema1 + 0.05 * n2
    assert step1.ema.item() == approx(ema1)
    assert step2.ema.item() == approx(ema2)
    assert step2.raw.item() == approx(raw2)
    assert step2.loss.item() == approx(raw2 / (ema2 + EPS))


def test_consistency_loss_without_ema_update():
    ema = torch.tensor(0.3, dtype=DT)
    out = consistency_loss(t(D), t(PW), PM, ema, update_ema=False)
    raw, norm = _hand_raw_and_normalizer(D, PAIRS)
    assert out.ema.item() == approx(0.3)
    assert ema.item() == approx(0.3)  # the input is not modified in place
    assert out.normalizer.item() == approx(norm)  # still reported
    assert out.loss.item() == approx(raw / (0.3 + EPS))


def test_consistency_loss_ignores_masked_positions():
    # values of d outside response pairs (weight 0) must not matter, even extreme ones
    d_other = [[1e-30, 0.7, 0.6, 0.9], [0.999, 0.3, 0.4, 0.0]]
    a = consistency_loss(t(D), t(PW), PM, torch.tensor(0.5, dtype=DT))
    b = consistency_loss(t(d_other), t(PW), PM, torch.tensor(0.5, dtype=DT))
    assert b.loss.item() == approx(a.loss.item())
    assert b.normalizer.item() == approx(a.normalizer.item())


def test_consistency_loss_gradient_is_stop_gradient_form():
    d = t(D, requires_grad=True)
    ema0 = 0.5
    out = consistency_loss(d, t(PW), PM, torch.tensor(ema0, dtype=DT))
    out.loss.backward()

    _, norm = _hand_raw_and_normalizer(D, PAIRS)
    ema = 0.95 * ema0 + 0.05 * norm
    scale = 1.0 / (N_PAIRS * (ema + EPS))

    # d_t receives -½ w_t sg(d_{t+1}) / (d_t+ε) as the left end of pair t and
    # -½ w_{t-1} sg(d_{t-1}) / (d_t+ε) as the right end of pair t-1.
    expected = [[0.0] * 4 for _ in range(2)]
    naive = [[0.0] * 4 for _ in range(2)]
    for b, i, w in PAIRS:
        a, c = D[b][i], D[b][i + 1]
        expected[b][i] += -0.5 * w * c / (a + EPS) * scale
        expected[b][i + 1] += -0.5 * w * a / (c + EPS) * scale
        # the gradient without the sg(.) factors would also carry the log terms
        naive[b][i] += -0.5 * w * (c / (a + EPS) + math.log(c + EPS)) * scale
        naive[b][i + 1] += -0.5 * w * (a / (c + EPS) + math.log(a + EPS)) * scale

    assert_grad(d, expected)
    got = d.grad.tolist()
    assert got[0][1] != approx(naive[0][1])
    assert got[0][2] != approx(naive[0][2])
    # positions outside response pairs get exactly zero gradient
    assert got[0][0] == 0.0 and got[1][0] == 0.0 and got[1][3] == 0.0


def test_consistency_loss_normalizer_and_ema_carry_no_gradient():
    d = t(D, requires_grad=True)
    out = consistency_loss(d, t(PW), PM, torch.tensor(0.5, dtype=DT, requires_grad=True))
    assert not out.normalizer.requires_grad
    assert not out.ema.requires_grad
    assert out.raw.requires_grad and out.loss.requires_grad


def test_generator_weights_get_no_gradient_through_the_pipeline():
    w = t(W, requires_grad=True)
    d = t(D, requires_grad=True)
    pw = adjacent_pair_weights(torch.tensor(MASK), w)
    out = consistency_loss(d, pw, adjacent_pair_mask(torch.tensor(MASK)), torch.tensor(0.5, dtype=DT))
    out.loss.backward()
    assert no_grad_or_zero(w)
    assert d.grad is not None


def test_end_to_end_rewards_to_consistency_loss():
    """Rewards -> targets -> pair weights -> loss, every step by hand."""
    rc, rr = t(R_CHOSEN, requires_grad=True), t(R_REJECTED, requires_grad=True)
    mc, mr = torch.tensor(MASK_C), torch.tensor(MASK_R)
    w_c = t([[0.9, 0.8, 0.6, 0.7], [0.5, 0.4, 0.3, 0.2]])
    w_r = t([[0.1, 0.3, 0.2, 0.9], [0.6, 0.7, 0.5, 0.4]])
    d_c, d_r = pairwise_consistency_targets(rc, mc, rr, mr)
    d = torch.cat([d_c, d_r])
    pw = torch.cat([adjacent_pair_weights(mc, w_c), adjacent_pair_weights(mr, w_r)])
    pm = torch.cat([adjacent_pair_mask(mc), adjacent_pair_mask(mr)])
    out = consistency_loss(d, pw, pm, torch.tensor(0.5, dtype=DT))

    hand_d = []
    for b in range(2):
        mean_r = _row_mean(R_REJECTED[b], MASK_R[b])
        hand_d.append([sigmoid(r - mean_r) for r in R_CHOSEN[b]])
    for b in range(2):
        mean_c = _row_mean(R_CHOSEN[b], MASK_C[b])
        hand_d.append([1 - sigmoid(r - mean_c) for r in R_REJECTED[b]])
    # pairs: chosen row 0 (1,2),(2,3); chosen row 1 (1,2); rejected row 0 (1,2); rejected row 1 (2,3)
    pairs = [(0, 1, 0.8), (0, 2, 0.6), (1, 1, 0.4), (2, 1, 0.3), (3, 2, 0.5)]
    raw, norm = _hand_raw_and_normalizer(hand_d, pairs)
    ema = 0.95 * 0.5 + 0.05 * norm
    assert out.raw.item() == approx(raw)
    assert out.loss.item() == approx(raw / (ema + EPS))

    out.loss.backward()
    assert rc.grad is not None and rr.grad is not None
    assert torch.isfinite(rc.grad).all() and torch.isfinite(rr.grad).all()


# --------------------------------------------------------------------------- #
# gradient scaling and SFT
# --------------------------------------------------------------------------- #


def test_scale_grad_identity_forward_scaled_backward():
    x = t([1.0, -2.0, 3.0], requires_grad=True)
    y = scale_grad(x, 1e-3)
    assert y.tolist() == [1.0, -2.0, 3.0]
    upstream = t([0.5, 2.0, -4.0])
    y.backward(upstream)
    assert_grad(x, [1e-3 * 0.5, 1e-3 * 2.0, 1e-3 * -4.0])


def test_scale_grad_only_affects_the_scaled_path():
    x = t([2.0], requires_grad=True)
    # loss = 3 * x (direct) + 5 * scale_grad(x, 0.1)  ->  grad = 3 + 0.5
    (3 * x + 5 * scale_grad(x, 0.1)).sum().backward()
    assert_grad(x, [3.5])


def test_sft_nll():
    logits = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
    targets = [0, 2]
    expected = 0.0
    for row, y in zip(logits, targets):
        log_z = math.log(sum(math.exp(v) for v in row))
        expected += -(row[y] - log_z)
    expected /= len(targets)
    # hidden states times an identity head are the logits
    eye = torch.eye(3, dtype=DT)
    assert sft_nll(t(logits), eye, torch.tensor(targets)).item() == pytest.approx(expected, rel=1e-6)
    # computed in float32 whatever the input dtype
    got_half = sft_nll(torch.tensor(logits, dtype=torch.bfloat16), eye.bfloat16(), torch.tensor(targets))
    assert got_half.dtype == torch.float32
    assert got_half.item() == pytest.approx(expected, rel=2e-2)


def test_sft_nll_averages_per_sequence_first():
    # three tokens: two from sequence 4, one from sequence 9
    logits = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -2.0, 0.0]]
    targets = [0, 2, 1]
    nll = []
    for row, y in zip(logits, targets):
        nll.append(-(row[y] - math.log(sum(math.exp(v) for v in row))))
    expected = ((nll[0] + nll[1]) / 2 + nll[2]) / 2  # not (nll[0] + nll[1] + nll[2]) / 3
    got = sft_nll(t(logits), torch.eye(3, dtype=DT), torch.tensor(targets), torch.tensor([4, 4, 9]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() != pytest.approx(sum(nll) / 3, rel=1e-3)


@pytest.mark.parametrize("chunk_rows", [None, 3, 7])
def test_sft_nll_gradients_equal_the_plain_heads(chunk_rows):
    # the fused head computes its gradients in the forward pass, chunk by chunk;
    # they must equal autograd's through materialized logits and cross-entropy
    torch.manual_seed(0)
    hidden, weight = torch.randn(10, 4, requires_grad=True), torch.randn(11, 4, requires_grad=True)
    targets, rows = torch.randint(0, 11, (10,)), torch.tensor([0, 0, 0, 2, 2, 5, 5, 5, 5, 5])
    nll = F.cross_entropy(hidden @ weight.t(), targets, reduction="none")
    plain = torch.stack([nll[rows == r].mean() for r in (0, 2, 5)]).mean()
    (3.0 * plain).backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    fused = sft_nll(hidden, weight, targets, rows, chunk_rows=chunk_rows)
    (3.0 * fused).backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(hidden.grad, expected[0])
    torch.testing.assert_close(weight.grad, expected[1])


def test_sft_nll_under_no_grad_is_the_same_value_without_a_graph():
    torch.manual_seed(0)
    hidden, weight = torch.randn(6, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    targets = torch.randint(0, 9, (6,))
    with torch.no_grad():
        evaluated = sft_nll(hidden, weight, targets)
    assert evaluated.grad_fn is None
    assert evaluated.item() == pytest.approx(sft_nll(hidden, weight, targets).item(), rel=1e-6)


def test_sft_nll_of_no_tokens_is_zero_and_still_reaches_the_head():
    weight = torch.randn(5, 4, requires_grad=True)
    loss = sft_nll(torch.zeros(0, 4), weight, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(weight.grad, torch.zeros(5, 4))


# ------------------------------------------------------------------ process (PRM) loss


def test_step_bce_reads_each_steps_position_and_averages_over_all_steps():
    rewards = t([[0.5, 1.0, -2.0, 0.3], [0.2, -0.7, 0.9, 4.0]], requires_grad=True)
    positions = torch.tensor([[1, 3], [2, -1]])
    labels = t([[1.0, 0.0], [0.0, 0.0]])
    assert_close(gather_steps(rewards, positions), [[1.0, 0.3], [0.9, 0.2]])  # -1 pads read position 0
    loss = step_bce(rewards, positions, labels)
    # three real steps: r=1.0 (z=1), r=0.3 (z=0), r=0.9 (z=0)
    expected = (-log_sigmoid(1.0) - math.log(1 - sigmoid(0.3)) - math.log(1 - sigmoid(0.9))) / 3
    assert loss.item() == approx(expected)
    loss.backward()
    # d/dr BCE = σ(r) - z, / 3 steps; nothing reaches unread positions
    assert_grad(rewards, [[0.0, (sigmoid(1.0) - 1) / 3, 0.0, sigmoid(0.3) / 3], [0.0, 0.0, sigmoid(0.9) / 3, 0.0]])


def test_step_token_labels_give_every_token_its_steps_label():
    positions = torch.tensor([[1, 3], [2, -1]])
    labels = t([[1.0, 0.0], [1.0, 0.0]])
    # row 0: tokens 0-1 belong to step 0 (ends at 1), 2-3 to step 1, 4 (after the last step) keeps step 1's
    # row 1: one step ending at 2; every token gets its label
    assert_close(step_token_labels(positions, labels, 5), [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])


def test_pointwise_consistency_targets_with_a_label_per_token():
    rewards = [[0.4, -1.2, 2.0]]
    got = pointwise_consistency_targets(t(rewards), t([[1.0, 1.0, 0.0]]))
    assert_close(got, [[sigmoid(0.4), sigmoid(-1.2), 1 - sigmoid(2.0)]])
