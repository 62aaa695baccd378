"""Prototype variants of the consistency regularizer (benchmark-only; the paper's form stays the default).

``two-sided`` — why. The paper's per-pair term (docs/design.md#consistency-regularizer, as the
reference code computes it)

    ℓ_t = -½ [ log d_t · sg(d_{t+1}) + sg(d_t) · log d_{t+1} ]

is only the ``p log q`` half of a cross-entropy. It is *not* minimised at
``d_t = d_{t+1}``: ``-p log q`` keeps falling as ``q → 1`` whatever ``p`` is,
so besides tying neighbours together it pushes every response prefix of the
chosen side above the rejected side's mean reward (and every rejected prefix
below the chosen mean), weighted by ``w_t`` — a dense, per-prefix copy of the
(possibly flipped) pair label, applied most strongly at the predictable filler
tokens that carry no information about the label. With noisy labels that is
more signal to memorise, not less. The two-sided form uses the full binary
cross-entropy

    ℓ_t = ½ [ BCE(d_t; sg d_{t+1}) + BCE(d_{t+1}; sg d_t) ],
    BCE(q; p) = -[p log q + (1-p) log(1-q)],

whose gradient in ``q`` is ``(q - p) / (q (1 - q))``: zero exactly when
neighbouring prefixes agree, so it only says "do not change the reward at a
predictable token" and leaves the direction to the (1-λ)·BT term. Everything
else (squashing against the other side's mean, ``w_t`` weights, ``N_pairs``
normaliser, EMA of the mean ``d``) is unchanged, so the comparison isolates
that one term.

Measured (benchmarks/REPRODUCTION.md, 5 seeds, λ = 0.3 and 0.5): no gain on the
noisy task (Δ vs BT -0.0 [-1.7, +1.6] at λ = 0.3) and it loses the paper form's
gain on the length probe (reversed split +0.6 vs +11.1 points over BT), so it is
*not* recommended as an option. It still makes the reward more local
(benchmarks/locality.py), which says the paper form's probe gain comes from its
dense one-sided push, not from consistency as such.

Code change, were it wanted (src/icrm/losses.py, ``consistency_loss``), behind
an option such as ``ICRMConfig.consistency_form: str = "paper"`` (``"paper" |
"two-sided"``) passed through ``ICRMTrainer._consistency``:

    per_pair = -0.5 * (log(left+eps)*right.detach() + left.detach()*log(right+eps))
    if form == "two-sided":
        per_pair = per_pair - 0.5 * (torch.log1p(-left + eps) * (1 - right).detach()
                                     + (1 - left).detach() * torch.log1p(-right + eps))
"""

from __future__ import annotations

import torch

from icrm import losses
from icrm.training import ICRMTrainer


def two_sided_consistency_loss(d, pair_weights, ema, *, update_ema=True, momentum=losses.EMA_MOMENTUM, eps=losses.EPS):
    """:func:`icrm.losses.consistency_loss` with the full binary cross-entropy per pair."""
    pair_weights = pair_weights.detach()
    left, right = d[:, :-1], d[:, 1:]
    n_pairs = (pair_weights > 0).sum().clamp(min=1)
    per_pair = -0.5 * (
        torch.log(left + eps) * right.detach()
        + torch.log1p(-left + eps) * (1 - right).detach()
        + left.detach() * torch.log(right + eps)
        + (1 - left).detach() * torch.log1p(-right + eps)
    )
    raw = (per_pair * pair_weights).sum() / n_pairs
    normalizer = (((left + right) / 2).detach() * pair_weights).sum() / n_pairs
    ema = ema.detach()
    if update_ema:
        ema = momentum * ema + (1.0 - momentum) * normalizer.to(ema.dtype)
    return losses.ConsistencyOutput(loss=raw / (ema + eps), raw=raw, normalizer=normalizer, ema=ema)


class TwoSidedTrainer(ICRMTrainer):
    """ICRMTrainer whose consistency term is :func:`two_sided_consistency_loss`."""

    def _consistency(self, rm, inputs, rewards, hidden, training):
        original = losses.consistency_loss
        losses.consistency_loss = two_sided_consistency_loss
        try:
            return super()._consistency(rm, inputs, rewards, hidden, training)
        finally:
            losses.consistency_loss = original


VARIANTS = {"two-sided": TwoSidedTrainer}
