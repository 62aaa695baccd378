"""The checkpoint format: what a model directory holds, and how a reward model is written and read back.

An icrm checkpoint is a plain transformers sequence-classification directory
(``AutoModelForSequenceClassification.from_pretrained`` loads it with no
custom code: value head saved as ``score``, ``num_labels=1``, ``pad_token_id``
set, LoRA merged) plus icrm side files: the LM head (and the SFT head, when
training added one), the training config, whose presence marks the directory
as icrm's, and the state of the consistency normalizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .loading import ModelError, check_model_path
from .peft import is_peft, merged_state_dict

ICRM_CONFIG = "icrm_config.json"
ICRM_STATE = "icrm_state.json"
LM_HEAD_FILE = "icrm_lm_head.safetensors"
WEIGHTS_FILE = "model.safetensors"


def model_kind(path: str) -> str:
    """``icrm`` (our checkpoint), ``classifier`` (any HF RM) or ``causal``; a missing local path fails here."""
    check_model_path(path)
    local = Path(path)
    if (local / ICRM_CONFIG).exists():
        return "icrm"
    config_file = local / "config.json"
    if local.is_dir() and not config_file.exists():
        raise ModelError(f"{path}: not a model directory (no config.json)")
    if config_file.exists():
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return "classifier"
    return "causal"


def linear_copy(weight: torch.Tensor) -> nn.Linear:
    """A bias-free linear layer holding a copy of ``weight`` (``[out, in]``): an LM head read back, or copied."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype, device=weight.device)
    layer.weight.data.copy_(weight)
    return layer


def write_checkpoint(rm, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write a :class:`~icrm.RewardModel` (``rm``) as a sequence-classification checkpoint + icrm side files.

    ``state_dict`` is the model's full state gathered by the caller, or its
    own state when None. LoRA adapters are merged first.
    """
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        state_dict = rm.state_dict()
    class_name = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(rm.config.model_type)
    if class_name is None:
        raise ModelError(f"transformers has no sequence classifier for model type {rm.config.model_type!r}")
    prefix = getattr(transformers, class_name).base_model_prefix
    if is_peft(rm.decoder):
        backbone = merged_state_dict(rm.decoder)
    else:
        backbone = {key[len("decoder."):]: value for key, value in state_dict.items() if key.startswith("decoder.")}
    weights = {f"{prefix}.{key}": value.detach().contiguous().cpu() for key, value in backbone.items()}
    weights["score.weight"] = state_dict["score_head.weight"].detach().contiguous().cpu()
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})

    config = rm.config.__class__.from_dict(rm.config.to_dict())
    config.architectures = [class_name]
    config.num_labels = 1
    config.pad_token_id = rm.tokenizer.pad_token_id
    config.save_pretrained(directory)
    rm.tokenizer.save_pretrained(directory)
    heads = {name: state_dict[f"{key}.weight"] for name, key in (("weight", "lm_head"), ("sft_weight", "sft_head"))
             if f"{key}.weight" in state_dict}
    if heads:
        save_file({k: v.detach().contiguous().cpu().clone() for k, v in heads.items()}, str(directory / LM_HEAD_FILE))
    state = {"consistency_ema": float(rm.consistency_ema), "reward_stats": rm.reward_stats}
    (directory / ICRM_STATE).write_text(json.dumps(state, indent=2))
    config_out = {"format": "icrm-reward-model", "version": 1, **rm.training_config}
    (directory / ICRM_CONFIG).write_text(json.dumps(config_out, indent=2, default=str))


def read_side_files(rm, directory: str | Path) -> None:
    """Give a :class:`~icrm.RewardModel` (``rm``) loaded from ``directory`` the icrm side files found there."""
    local = Path(directory)
    if (local / LM_HEAD_FILE).exists():
        heads = load_file(str(local / LM_HEAD_FILE))
        rm.lm_head = linear_copy(heads["weight"])
        rm.sft_head = linear_copy(heads["sft_weight"]) if "sft_weight" in heads else None
    if (local / ICRM_STATE).exists():
        state = json.loads((local / ICRM_STATE).read_text())
        rm.consistency_ema.fill_(state.get("consistency_ema", 0.5))
        rm.reward_stats = state.get("reward_stats", {})
    if (local / ICRM_CONFIG).exists():
        rm.training_config = json.loads((local / ICRM_CONFIG).read_text())
