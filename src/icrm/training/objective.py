"""The ICRM objective of one batch, from the pure losses of :mod:`icrm.losses`:

    L = (1-λ)·L_outcome + λ·L_ICRM + α·L_SFT

``L_outcome`` is Bradley–Terry for pairs (``margin`` in the batch), the step
loss for process-supervised methods, else the pointwise BCE. The trainer runs
this and logs its terms; keeping it apart keeps what is optimized readable
without transformers' plumbing around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import losses
from ..modeling import RewardModel, head_generation_weights
from .config import ConfigFieldError, ICRMConfig


@dataclass
class BatchObjective:
    """A batch's loss, its logged terms (``bt``/``bce``/``prm``, ``accuracy``, ``icrm``…, ``sft``) and outcome rewards."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    outcome: torch.Tensor
    pairwise: bool


def batch_objective(model, rm: RewardModel, inputs, args: ICRMConfig) -> BatchObjective:
    """The ICRM objective of a batch, which says its data by its keys.

    ``margin``: pairs, all chosen rows then all rejected; ``labels``: graded
    single responses. ``model`` is what runs (wrapped for distribution, if so)
    and ``rm`` the :class:`RewardModel` inside it; in training the consistency
    term's running normalizer is updated.
    """
    mask = inputs["attention_mask"]
    lam, alpha = args.consistency_weight, args.sft_coef
    pairwise = "margin" in inputs
    positions = sft_positions(inputs, pairwise) if alpha > 0 else None
    rewards, hidden, sft_loss = model(
        inputs["input_ids"], mask, lm_positions=positions, lm_grad_scale=args.sft_backbone_grad,
        packed=inputs.get("packed"),
    )
    outcome = RewardModel.outcome(rewards, mask)
    terms: dict[str, torch.Tensor] = {}

    if pairwise:
        half = outcome.shape[0] // 2
        chosen, rejected = outcome[:half], outcome[half:]
        margin = inputs["margin"] if inputs["margin"].any() else None
        terms["bt"] = losses.bradley_terry(chosen, rejected, margin, args.center_rewards_coefficient or 0.0)
        terms["accuracy"] = (chosen > rejected).float().mean() + 0.5 * (chosen == rejected).float().mean()
        loss = (1.0 - lam) * terms["bt"]
    elif args.process_supervised:
        terms["prm"], terms["accuracy"] = process_term(inputs, rewards)
        loss = (1.0 - lam) * terms["prm"]
    else:
        terms["bce"] = losses.pointwise_bce(outcome, inputs["labels"])
        terms["accuracy"] = ((outcome > 0).float() == inputs["labels"]).float().mean()
        loss = (1.0 - lam) * terms["bce"]

    if lam > 0:
        consistency = consistency_term(rm, inputs, rewards, hidden, args, model.training)
        terms["icrm"], terms["icrm_raw"] = consistency.loss, consistency.raw
        terms["icrm_ema"] = consistency.ema
        loss = loss + lam * consistency.loss
    if alpha > 0:
        terms["sft"] = sft_loss
        loss = loss + alpha * terms["sft"]
    return BatchObjective(loss, terms, outcome, pairwise)


def consistency_term(rm: RewardModel, inputs, rewards, hidden, args: ICRMConfig,
                     training: bool) -> losses.ConsistencyOutput:
    """``L_ICRM``: adjacent rewards pulled toward their targets, each pair weighted by the generator's ``w_t``."""
    response = inputs["response_mask"]
    weights = generation_weights(rm, inputs, hidden, args)
    pair_weights = losses.adjacent_pair_weights(response, weights)
    pair_mask = losses.adjacent_pair_mask(response)
    if "margin" in inputs:
        half = rewards.shape[0] // 2
        d_c, d_r = losses.pairwise_consistency_targets(
            rewards[:half], response[:half], rewards[half:], response[half:]
        )
        d = torch.cat([d_c, d_r])
    else:
        labels = inputs["labels"]
        if args.process_supervised:
            labels = losses.step_token_labels(inputs["step_positions"], inputs["step_labels"], rewards.shape[1])
        d = losses.pointwise_consistency_targets(rewards, labels)
    out = losses.consistency_loss(d, pair_weights, pair_mask, rm.consistency_ema, update_ema=training)
    if training:
        rm.consistency_ema.copy_(out.ema)
    return out


def process_term(inputs, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The PRM loss and the step accuracy (σ(r) > 0.5 agrees with the step label)."""
    if "step_positions" not in inputs:
        raise ConfigFieldError(ICRMConfig, "method", "prm and prm-icrm need stepwise data (prompt, completions, labels)")
    positions, labels = inputs["step_positions"], inputs["step_labels"]
    valid = positions >= 0
    picked = losses.gather_steps(rewards, positions)[valid]
    return losses.step_bce(rewards, positions, labels), ((picked > 0).float() == labels[valid]).float().mean()


def generation_weights(rm: RewardModel, inputs, hidden, args: ICRMConfig) -> torch.Tensor:
    """``w_t`` from the cache, the frozen copy of the RM's LM head (``self``), or ones."""
    if "gen_weights" in inputs:
        return inputs["gen_weights"]
    if args.generator == "uniform":
        return torch.ones_like(inputs["response_mask"], dtype=hidden.dtype)
    temperature, top_p = args.generator_sampling(pointwise="margin" not in inputs)
    return head_generation_weights(
        hidden, inputs["input_ids"], inputs["response_mask"], rm.generator_head, temperature, top_p
    )


def sft_positions(inputs, pairwise: bool) -> torch.Tensor:
    """Positions that predict a token of a chosen (or correct) response."""
    response = inputs["response_mask"]
    if pairwise:
        rows = torch.zeros(response.shape[0], dtype=torch.bool, device=response.device)
        rows[: response.shape[0] // 2] = True
    else:
        rows = inputs["labels"] > 0.5
    positions = torch.zeros_like(response)
    positions[:, :-1] = response[:, 1:] & rows[:, None]
    return positions
