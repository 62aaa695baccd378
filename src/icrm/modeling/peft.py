"""LoRA and other peft adapters on the reward model's backbone, and exporting them merged.

Adapters go on the backbone alone: the value head (and the SFT head training
adds) is trained fully. A checkpoint holds plain merged weights, so it loads
without peft; :func:`merged_state_dict` computes them without touching the
live model, which keeps training with its adapters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..settings import SettingError
from .loading import ModelError


def is_peft(module: nn.Module) -> bool:
    """Whether a backbone is wrapped by peft (adapters to merge on export)."""
    return hasattr(module, "peft_config") and hasattr(module, "get_base_model")


def lora_config(r: int, alpha: int, dropout: float = 0.0):
    """The LoRA setup of ``--lora-r/--lora-alpha``: every linear layer of the backbone; None (full
    fine-tuning) when ``r`` is 0, as reward models, DPO and GRPO policies all read it."""
    if r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear")


def add_peft(rm, peft_config):
    """Wrap a :class:`~icrm.RewardModel`'s backbone with peft adapters (e.g. a ``LoraConfig``); returns ``rm``.

    The config applies to the backbone alone, so its ``task_type`` is dropped
    and ``modules_to_save`` entries naming a head (``score``, ``classifier``,
    as TRL's docs suggest for a causal LM) are left out: the value head is
    trained fully anyway. The LM head is frozen (it is part of the pretrained
    backbone); the SFT head that training adds beside it is trained fully.
    """
    import dataclasses

    from peft import get_peft_model

    if is_peft(rm.decoder):
        raise ModelError("the backbone already has peft adapters: merge them first or pass no peft_config")
    kept = [m for m in (peft_config.modules_to_save or []) if m not in ("score", "classifier")]
    config = dataclasses.replace(peft_config, task_type=None, modules_to_save=kept or None)
    rm.decoder = get_peft_model(rm.decoder, config)
    if rm.lm_head is not None:
        rm.lm_head.requires_grad_(False)
    rm.score_head.requires_grad_(True)
    return rm


def add_lora(rm, r: int, alpha: int, dropout: float = 0.0):
    """LoRA on every linear layer of the backbone (``--lora-r``, at least 1); see :func:`add_peft`."""
    if r <= 0:
        raise SettingError(None, "lora_r", f"must be at least 1 to add LoRA, got {r}")
    return add_peft(rm, lora_config(r, alpha, dropout))


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state of a peft-wrapped model as if its adapters were merged, without touching it.

    Each adapter-wrapped layer is copied alone and merged (peft's own merge
    arithmetic), so memory grows by one layer at most and the live model
    keeps training with its adapters. Keys are those of the unwrapped model.
    """
    import copy

    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    base = model.get_base_model()
    state: dict[str, torch.Tensor] = {}
    wrapped: list[str] = []
    for name, module in base.named_modules():
        if any(name.startswith(f"{outer}.") for outer in wrapped):
            continue
        if isinstance(module, BaseTunerLayer):
            layer = copy.deepcopy(module)
            layer.merge()
            plain = layer.get_base_layer()
        elif isinstance(module, AuxiliaryTrainingWrapper):
            plain = copy.deepcopy(module).unload_and_optionally_merge_module(merge=True, safe_merge=False,
                                                                              adapter_names=None)
        else:
            continue
        wrapped.append(name)
        state.update({f"{name}.{key}": value for key, value in plain.state_dict().items()})
    for key, value in base.state_dict().items():
        if not any(key.startswith(f"{outer}.") for outer in wrapped):
            state[key] = value
    return state
