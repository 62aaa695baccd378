"""The training options as light dataclasses: ICRM's own fields, and the ``TrainingArguments`` recipe of the commands.

Both are read by the CLI to build its options (defaults, help, flags) without
importing torch or TRL; :class:`~icrm.training.ICRMConfig` inherits
:class:`ICRMArguments`, so the library and ``icrm train`` share one definition
of each ICRM option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..data import DEFAULT_SEPARATOR
from ..settings import setting


@dataclass
class ICRMArguments:
    """ICRM's fields of :class:`~icrm.training.ICRMConfig` (documented there), declared without TRL."""

    method: str = setting("icrm", "bt, grm, icrm, icrm-nosft; prm or prm-icrm (step labels, stepwise data).")
    lambda_: float | None = setting(
        None, "Consistency weight λ in [0, 1] (default: the method's).", flag="--lambda"
    )
    sft_weight: float | None = setting(None, "SFT weight α >= 0 (default: the method's).")
    sft_backbone_grad: float = setting(
        1e-3, "Scale of the SFT gradient into the backbone (the SFT head gets all of it)."
    )
    generator: str = setting("self", "PATH of a frozen causal LM, 'self' or 'uniform'.")
    generator_temperature: float | None = setting(
        None, "Temperature of w_t (default: 0.7 for pointwise and stepwise data, as the reference; else 1)."
    )
    generator_top_p: float | None = setting(
        None, "Top-p of w_t (default: 0.8 for pointwise and stepwise data, as the reference; else 1)."
    )
    generator_batch_size: int = setting(16, "Batch size of the generator pass.")
    head_dropout: float = setting(0.1, "Dropout before the value head in training (TRL's ValueHead).")
    cache_dir: str | None = setting(None, "Cache of generator probabilities [default: $ICRM_CACHE or ~/.cache/icrm].")
    truncation: str = setting("left", "Over-long rows: left (cut the prompt's left) or drop (skip them).")
    allow_pickle: bool = setting(False, "Allow pickle (.bin) weights (unsafe).")
    step_separator: str = setting(
        DEFAULT_SEPARATOR,
        "Joins the steps of stepwise rows (and splits responses into steps); in bash, $'\\n\\n' is a blank line.",
    )
    padding_free: bool | None = setting(
        None,
        "Run each batch as one packed sequence, no padding: same results, less compute "
        "(default: on where the model's attention packs at no extra cost, e.g. SDPA or flash attention).",
        flag="--packing",
    )
    # TRL's default (True) goes to activation_checkpointing in ICRMConfig.__post_init__: set here, it would warn.
    gradient_checkpointing: bool | None = setting(
        None, "Deprecated alias of activation_checkpointing (default: on, as in TRL)."
    )


@dataclass
class TrainingOptions:
    """The ``TrainingArguments`` fields icrm's training commands set, with ``icrm train``'s defaults.

    The commands are recipes, not drop-ins: their defaults are the reference
    run's (``learning_rate`` 1e-5, cosine schedule, 3 % warmup, float32 unless
    ``bf16``), where ``ICRMConfig`` keeps TRL's. :data:`RECIPES` holds each
    other command's differences from these, so every default lives here.
    """

    num_train_epochs: float = setting(1.0, "Training epochs.", flag="--epochs")
    max_steps: int = setting(-1, "Stop after this many optimizer steps (overrides --epochs).")
    per_device_train_batch_size: int = setting(
        8, "Examples (pairs; GRPO: completions) per device per step.", flag="--batch-size"
    )
    gradient_accumulation_steps: int = setting(1, "Gradient accumulation steps.", flag="--grad-accum")
    learning_rate: float = setting(1e-5, "Peak learning rate (after warmup).", flag="--lr")
    warmup_steps: float = setting(0.03, "Warmup: a ratio of all steps if < 1, else steps.", flag="--warmup")
    lr_scheduler_type: str = setting(
        "cosine", "Learning-rate schedule: cosine, linear, constant, ...", flag="--scheduler"
    )
    seed: int = setting(0, "Random seed (the same seed gives the same result).")
    bf16: bool = setting(False, "bf16 mixed precision (a GPU, or a CPU with bf16 matmuls: avx512_bf16 or AMX).")
    logging_steps: int = setting(10, "Log the loss terms every K optimizer steps.")
    save_steps: int = setting(0, "Checkpoint every K steps (for --resume); 0 = only at the end.")

    @classmethod
    def recipe(cls, command: str) -> TrainingOptions:
        """The defaults of ``command`` (``train``, ``sft``, ``dpo``, ``grpo``)."""
        return cls(**RECIPES[command])

    def trainer_kwargs(self, group_by_length: bool = False) -> dict:
        """``TrainingArguments`` keyword arguments (a ``warmup_steps`` below 1 is a ratio, as transformers reads it).

        ``save_steps`` > 0 keeps periodic checkpoints (model, optimizer, scheduler,
        RNG and data position) for ``--resume``. ``group_by_length`` batches rows
        of similar length together (less padding, faster; a different data order).
        """
        import torch

        checkpoints = self.save_steps > 0
        return {
            **dataclasses.asdict(self),
            "save_steps": self.save_steps if checkpoints else 500,
            "save_strategy": "steps" if checkpoints else "no",
            "save_total_limit": 2 if checkpoints else None,
            "per_device_eval_batch_size": self.per_device_train_batch_size,
            "data_seed": self.seed,
            "report_to": [],
            "remove_unused_columns": False,
            "dataloader_num_workers": 0,
            "use_cpu": not torch.cuda.is_available(),
            "train_sampling_strategy": "group_by_length" if group_by_length else "random",
        }


# Each command's defaults that differ from TrainingOptions' (icrm train's). sft trains tiny generators and
# policies from scratch in the demo; dpo and grpo take TRL's DPOConfig/GRPOConfig learning rate and schedule.
RECIPES: dict[str, dict] = {
    "train": {},
    "sft": {"learning_rate": 1e-3},
    "dpo": {"learning_rate": 1e-6, "warmup_steps": 0.1, "lr_scheduler_type": "linear"},
    "grpo": {"learning_rate": 1e-6, "warmup_steps": 0.0, "lr_scheduler_type": "linear", "logging_steps": 1},
}
