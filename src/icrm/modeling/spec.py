"""``ModelSpec``: what ``--model`` names and how to adapt it, as a light settings dataclass the CLI reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting


@dataclass
class ModelSpec:
    """The model a training command starts from, its LoRA adapters and what loading it may do."""

    name: str = setting(
        "tiny", "tiny, small, smollm2-135m, a local model or checkpoint directory, a .gguf file, or a hub id.",
        flag="--model",
    )
    lora_r: int = setting(0, "LoRA rank on all linear layers (0 = full fine-tuning).")
    lora_alpha: int = setting(16, "LoRA alpha.")
    trust_remote_code: bool = setting(False, "Allow model code from the checkpoint (unsafe).")
    allow_pickle: bool = setting(False, "Allow pickle (.bin) weights (unsafe).")

    def peft_config(self):
        """``--lora-r/--lora-alpha`` as a peft config, or None."""
        from .peft import lora_config

        return lora_config(self.lora_r, self.lora_alpha)
