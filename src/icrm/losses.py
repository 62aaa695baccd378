"""Loss functions of icrm, as pure functions of tensors.

Nothing here knows about models, tokenizers or trainers: every function takes
rewards, masks and weights and returns tensors, so each one can be checked
against a value computed by hand (tests/base/test_losses.py). docs/design.md#the-objective
is the specification; the names below follow its notation.

Shapes: ``B`` rows, ``L`` positions. ``rewards[b, t]`` is the reward of the
prefix ending at token ``t``; ``response_mask[b, t]`` is 1 on response tokens;
``weights[b, t]`` is the generator probability of token ``t + 1`` given the
prefix ending at ``t`` (always treated as a constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-8
EMA_MOMENTUM = 0.95
EMA_INIT = 0.5


def bradley_terry(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """``-mean log σ(R_c - R_r - margin)`` plus TRL's optional centering term.

    The centering term ``coef * mean((R_c + R_r)^2)`` pins the reward scale,
    which otherwise drifts freely under a pairwise loss.
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
    return loss


def pointwise_bce(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``BCE(σ(R), z)`` for graded responses (e.g. a verified math answer)."""
    return F.binary_cross_entropy_with_logits(rewards, labels.to(rewards.dtype))


def gather_steps(rewards: torch.Tensor, step_positions: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` rewards at each step's score position (``step_positions`` is −1 where a row has no step k)."""
    return rewards.gather(1, step_positions.clamp(min=0))


def step_bce(rewards: torch.Tensor, step_positions: torch.Tensor, step_labels: torch.Tensor) -> torch.Tensor:
    """The process (PRM) loss: ``BCE(σ(r), z)`` at every step's score position.

    Averaged over all steps of the batch, as TRL's PRMTrainer averages its
    labelled tokens, so a long chain weighs more than a short one.
    """
    valid = step_positions >= 0
    picked = gather_steps(rewards, step_positions)[valid]
    return F.binary_cross_entropy_with_logits(picked, step_labels[valid].to(rewards.dtype))


def step_token_labels(step_positions: torch.Tensor, step_labels: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, width]``: each token gets the label of its step, the first step whose score position is at or after it.

    Tokens after a row's last step (padding) get its last step's label, tokens
    of the prompt its first step's; the consistency term masks both out.
    """
    valid = step_positions >= 0
    tokens = torch.arange(width, device=step_positions.device)
    ended = ((step_positions[:, None, :] < tokens[None, :, None]) & valid[:, None, :]).sum(-1)
    last = (valid.sum(-1, keepdim=True) - 1).clamp(min=0)
    return step_labels.gather(1, torch.minimum(ended, last))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is set, per row."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def adjacent_pair_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """Which pairs of adjacent prefixes ``(t, t+1)`` count, bool ``[B, L-1]``.

    A pair counts when both ends are response tokens (``s <= t < e``),
    whatever its weight: a connecting token the generator finds unlikely
    (``w_t ≈ 0``) still counts in ``N_pairs``, as in the reference.
    """
    return response_mask[:, :-1].bool() & response_mask[:, 1:].bool()


def adjacent_pair_weights(response_mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weight of each pair of adjacent prefixes ``(t, t+1)``, shape ``[B, L-1]``.

    The weight of a counted pair (:func:`adjacent_pair_mask`) is ``w_t``, the
    probability of the token that connects them; other pairs weigh 0.
    """
    return weights[:, :-1].detach() * adjacent_pair_mask(response_mask).to(weights.dtype)


def pairwise_consistency_targets(
    chosen_rewards: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_rewards: torch.Tensor,
    rejected_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squash each prefix reward against the other side's mean reward.

    ``d_c = σ(r_c - sg(mean r_r))``, ``d_r = 1 - σ(r_r - sg(mean r_c))``: the
    probability, seen from that prefix, that its response is the right one.
    The reference code averages over all positions (prompt and padding
    included); we average over response tokens only.
    """
    mean_c = masked_mean(chosen_rewards, chosen_mask).detach()
    mean_r = masked_mean(rejected_rewards, rejected_mask).detach()
    d_c = torch.sigmoid(chosen_rewards - mean_r[:, None])
    d_r = 1.0 - torch.sigmoid(rejected_rewards - mean_c[:, None])
    return d_c, d_r


def pointwise_consistency_targets(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``d = σ(r)`` for a correct response, ``1 - σ(r)`` for a wrong one.

    ``labels`` is ``[B]`` (one per response) or ``[B, L]`` (one per token,
    e.g. each token's step label from :func:`step_token_labels`).
    """
    p = torch.sigmoid(rewards)
    z = labels.to(rewards.dtype)
    z = z[:, None] if z.ndim == 1 else z
    return z * p + (1.0 - z) * (1.0 - p)


@dataclass
class ConsistencyOutput:
    """The regularizer, its raw form, and the normalizer state after the step."""

    loss: torch.Tensor
    raw: torch.Tensor
    normalizer: torch.Tensor
    ema: torch.Tensor


def consistency_loss(
    d: torch.Tensor,
    pair_weights: torch.Tensor,
    pair_mask: torch.Tensor,
    ema: torch.Tensor,
    *,
    update_ema: bool = True,
    momentum: float = EMA_MOMENTUM,
    eps: float = EPS,
) -> ConsistencyOutput:
    """Intra-trajectory consistency of ``d`` along each trajectory.

    For each adjacent pair ``(t, t+1)`` with weight ``w_t``:
    ``ℓ_t = -½ [log(d_t + ε)·sg(d_{t+1}) + sg(d_t)·log(d_{t+1} + ε)]``, a
    symmetric cross-entropy that pulls each side towards the other; a
    high-probability connecting token makes the pull strong. ``L_raw = Σ ℓ_t
    w_t / N_pairs``, where ``N_pairs`` counts the pairs of ``pair_mask``.
    Since ℓ scales with ``d`` itself, it is divided by an EMA of
    ``n = sg(Σ ((d_t + d_{t+1})/2) w_t / N_pairs)`` so the regularizer keeps a
    stable magnitude as rewards separate. The EMA moves only when
    ``update_ema`` (training steps) and is updated before it divides.

    ``d`` is ``[B, L]``; ``pair_weights`` and ``pair_mask`` are ``[B, L-1]``
    from :func:`adjacent_pair_weights` and :func:`adjacent_pair_mask`;
    ``ema`` is a scalar tensor.
    """
    pair_weights = pair_weights.detach()
    left, right = d[:, :-1], d[:, 1:]
    n_pairs = pair_mask.sum().clamp(min=1)
    per_pair = -0.5 * (torch.log(left + eps) * right.detach() + left.detach() * torch.log(right + eps))
    raw = (per_pair * pair_weights).sum() / n_pairs
    normalizer = (((left + right) / 2).detach() * pair_weights).sum() / n_pairs
    ema = ema.detach()
    if update_ema:
        ema = momentum * ema + (1.0 - momentum) * normalizer.to(ema.dtype)
    return ConsistencyOutput(loss=raw / (ema + eps), raw=raw, normalizer=normalizer, ema=ema)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale``.

    The SFT regularizer uses it on the backbone's hidden states so the
    language-modelling loss trains the LM head fully but nudges the shared
    backbone only slightly (1e-3 in the reference), without a second forward.
    """
    return _ScaleGrad.apply(x, scale)


class _LinearCrossEntropy(torch.autograd.Function):
    """``Σ_i w_i · CE(hidden_i · Wᵀ, y_i)``, its gradients computed in the forward pass chunk by chunk.

    A ``[N, V]`` logits matrix is never held whole and none is kept for the
    backward pass: each chunk's softmax becomes its gradient and is folded
    into ``∂hidden`` and ``∂W`` at once, the way fused linear cross-entropy
    kernels (Liger's, Apple's cut cross-entropy) spare memory. Same matmuls
    as the plain head; ``∂W`` adds up over the chunks in place. The saved
    gradients are scaled in place, so the graph cannot run backward twice.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, token_weights, chunk_rows: int):
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start : start + chunk_rows]
            y, w = targets[start : start + chunk_rows, None], token_weights[start : start + chunk_rows, None]
            logits = (h @ weight.t()).float()
            loss -= (torch.log_softmax(logits, dim=-1).gather(1, y) * w).sum()
            if not (need_hidden or need_weight):
                continue
            grad = torch.softmax(logits, dim=-1)
            del logits
            grad.scatter_add_(1, y, -torch.ones_like(w)).mul_(w)
            grad = grad.to(weight.dtype)
            if need_hidden:
                grad_hidden[start : start + chunk_rows] = grad @ weight
            if need_weight:
                first = grad_weight is None
                grad_weight = torch.empty_like(weight) if first else grad_weight
                grad_weight.addmm_(grad.t(), h, beta=0 if first else 1)
        if need_weight and grad_weight is None:
            grad_weight = torch.zeros_like(weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        for grad in (grad_hidden, grad_weight):
            if grad is not None:
                grad.mul_(grad_loss.to(grad.dtype))
        return grad_hidden, grad_weight, None, None, None


def sft_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """``-log π(y)`` under the LM head ``weight``, averaged over each sequence's tokens, then over sequences.

    ``hidden`` is ``[N, H]`` at the positions that predict each target token,
    ``weight`` the head's ``[V, H]`` matrix, ``targets`` ``[N]``, ``rows``
    ``[N]`` the sequence each token belongs to. Per-sequence means first (the
    reference's ``logps / valid_length``), so a long response counts as much
    as a short one; without ``rows`` all tokens form one sequence. Computed
    in float32 whatever the inputs' dtype, in chunks of ``chunk_rows``
    positions (by default as many as keep a chunk's logits near 2**23
    values, small enough for the allocator to reuse), never materializing
    the whole ``[N, V]`` logits.
    """
    if rows is None:
        rows = targets.new_zeros(targets.shape)
    _, index = torch.unique(rows, return_inverse=True)
    counts = torch.bincount(index).float()
    token_weights = 1.0 / (counts[index] * max(len(counts), 1))
    chunk_rows = chunk_rows or max(1, 2**23 // weight.shape[0])
    if not torch.is_grad_enabled():  # a Function sees its inputs' requires_grad even under no_grad
        hidden, weight = hidden.detach(), weight.detach()
    return _LinearCrossEntropy.apply(hidden, weight, targets, token_weights, chunk_rows)
