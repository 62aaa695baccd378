"""DPO of a policy on preference pairs, with TRL's ``DPOTrainer``.

Any pairwise data works, not only ``dpo-pairs`` output, because rows go
through icrm's validating loader first. The reference model is a frozen copy
of the starting policy (with LoRA, TRL uses the base model with the adapter
switched off instead).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..data import PairExample
from ..modeling import lora_config
from .pairs import conversational_pair
from .settings import DPOSettings
from .trainers import train_with_trl


def dpo_rows(examples: list[PairExample]) -> list[dict]:
    """Validated pairwise examples as TRL conversational rows (see :func:`~icrm.policy.make_dpo_pairs`)."""
    return [conversational_pair(ex.prompt, ex.chosen, ex.rejected) for ex in examples]


def run_dpo(model, tokenizer, examples: list[PairExample], training: dict, settings: DPOSettings, directory: Path):
    """Train ``model`` with DPO on ``examples`` and save the policy (LoRA merged) in ``directory``.

    ``training`` holds ``TrainingArguments`` fields (see
    :meth:`icrm.training.TrainingOptions.trainer_kwargs`). Returns the trainer, whose
    ``train_dataset`` holds the pairs that fit ``max_length``, and
    ``train()``'s result.
    """
    import datasets
    from trl import DPOConfig, DPOTrainer

    dataset = datasets.Dataset.from_list(dpo_rows(examples))
    peft_config = lora_config(settings.lora_r, settings.lora_alpha)
    ref_model = None if peft_config else copy.deepcopy(model).eval().requires_grad_(False)
    config = {**training, "remove_unused_columns": True, "beta": settings.beta, "loss_type": [settings.loss_type],
              "max_length": settings.max_length, "activation_checkpointing": settings.gradient_checkpointing}
    return train_with_trl(DPOTrainer, DPOConfig, "DPO", config, directory, model, tokenizer, peft_config,
                          ref_model=ref_model, train_dataset=dataset)


def plot_dpo_loss(history: list[dict], path: Path) -> None:
    """The DPO training loss by step, from a trainer's log history (nothing when it logged no loss)."""
    from ..evaluation import plot_loss_curves

    curve = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    if curve:
        plot_loss_curves({"dpo": curve}, path, title="DPO loss")
