"""The policy commands' settings: sampling, DPO and GRPO, as light dataclasses the CLI builds its options from.

Each ``validate`` fails before any model is loaded, naming the field
(:class:`~icrm.settings.SettingError`; the CLI shows the flag).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..modeling import ModelSpec
from ..settings import SettingError, check_settings, help_of, setting

ENGINES = ("hf", "vllm")
# The losses TRL 1.x's DPOTrainer implements; it only rejects others mid-training.
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
# What TRL 1.x's GRPOConfig accepts (it only rejects others mid-training).
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")
GRADIENT_CHECKPOINTING = "Recompute activations in the backward pass (less memory, slower)."
MAX_LENGTH = "Max tokens of prompt+response."


@dataclass
class SamplingConfig:
    """How to sample: N per prompt, the decoding knobs, the seed, the batch and the engine.

    ``temperature=0`` means greedy decoding (then all N samples are equal).
    ``top_k=0`` disables top-k, so plain temperature/top-p sampling is the
    same under transformers (whose own default is top-k 50) and vLLM.
    """

    n: int = setting(4, "Samples per prompt.")
    temperature: float = setting(1.0, "Sampling temperature (0 = greedy).")
    top_p: float = setting(1.0, "Nucleus sampling threshold.")
    top_k: int = setting(0, "Top-k sampling (0 = off).")
    max_new_tokens: int = setting(128, "Longest response, in tokens.")
    seed: int = setting(0, "Random seed (the same seed gives the same result).")
    batch_size: int = setting(16, "Sequences per generate (or scoring) call.")
    engine: str = setting("hf", "hf (transformers generate) or vllm (if installed).")

    def validate(self) -> None:
        """Fail before any model is loaded, naming the field."""
        check_settings(self, [
            ("n", self.n >= 1, f"must be at least 1, got {self.n}"),
            ("temperature", self.temperature >= 0, f"must be >= 0, got {self.temperature}"),
        ])
        check_top_p_top_k(self, self.top_p, self.top_k)
        check_settings(self, [
            ("max_new_tokens", self.max_new_tokens >= 1, f"must be at least 1, got {self.max_new_tokens}"),
            ("batch_size", self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
            ("engine", self.engine in ENGINES, f"must be one of {', '.join(ENGINES)}, got {self.engine!r}"),
        ])
        if self.engine == "vllm":
            require_vllm()


def check_top_p_top_k(settings: object, top_p: float, top_k: int) -> None:
    """The nucleus and top-k limits every sampler here accepts: top-p in (0, 1], top-k >= 0 (0 = off)."""
    check_settings(settings, [
        ("top_p", 0 < top_p <= 1, f"must be in (0, 1], got {top_p}"),
        ("top_k", top_k >= 0, f"must be >= 0 (0 = off), got {top_k}"),
    ])


def require_vllm():
    """The vllm module, or a one-line error saying how to get it (it is an optional dependency)."""
    try:
        import vllm
    except ImportError as err:
        raise SettingError(SamplingConfig, "engine", "{field} vllm needs vLLM, which is not installed (pip install vllm), or use {field} hf") from err
    return vllm


@dataclass
class DPOSettings:
    """``icrm dpo`` options that are not ``TrainingArguments`` fields."""

    beta: float = setting(0.1, "DPO β: higher stays closer to the reference.")
    loss_type: str = setting("sigmoid", "TRL loss: sigmoid, ipo, hinge, robust, ...")
    max_length: int = setting(1024, MAX_LENGTH)
    lora_r: int = setting(0, help_of(ModelSpec, "lora_r"))
    lora_alpha: int = setting(16, help_of(ModelSpec, "lora_alpha"))
    gradient_checkpointing: bool = setting(False, GRADIENT_CHECKPOINTING)
    skip_invalid: bool = setting(False, "Skip and count bad rows instead of stopping.")
    trust_remote_code: bool = setting(False, help_of(ModelSpec, "trust_remote_code"))
    allow_pickle: bool = setting(False, help_of(ModelSpec, "allow_pickle"))

    def validate(self) -> None:
        """Fail before any model is loaded, naming the field."""
        check_settings(self, [
            ("beta", self.beta > 0, f"must be > 0, got {self.beta}"),
            ("loss_type", self.loss_type in DPO_LOSS_TYPES,
             f"must be one of {', '.join(DPO_LOSS_TYPES)}, got {self.loss_type!r}"),
            ("max_length", self.max_length >= 8, f"must be at least 8, got {self.max_length}"),
        ])


@dataclass
class GRPOSettings:
    """``icrm grpo`` options that are not ``TrainingArguments`` fields (TRL's names and defaults)."""

    num_generations: int = setting(8, "Completions per prompt (the GRPO group).")
    max_completion_length: int = setting(256, "Longest completion, in tokens.")
    beta: float = setting(0.0, "KL weight to the starting policy (0: no reference model).")
    loss_type: str = setting("dapo", "TRL loss: dapo, grpo, dr_grpo, bnpo, ...")
    epsilon: float = setting(0.2, "Clipping range of the policy ratio.")
    scale_rewards: str = setting("group", "Divide advantages by the std of: group, batch, none.")
    temperature: float = setting(1.0, "Sampling temperature (> 0: GRPO compares distinct samples).")
    top_p: float = setting(1.0, help_of(SamplingConfig, "top_p"))
    top_k: int = setting(0, help_of(SamplingConfig, "top_k"))
    lora_r: int = setting(0, help_of(ModelSpec, "lora_r"))
    lora_alpha: int = setting(16, help_of(ModelSpec, "lora_alpha"))
    gradient_checkpointing: bool = setting(False, GRADIENT_CHECKPOINTING)
    exclude_prompts: str | None = setting(None, "Drop prompts that occur in this file (e.g. a test set).")
    trust_remote_code: bool = setting(False, help_of(ModelSpec, "trust_remote_code"))
    allow_pickle: bool = setting(False, help_of(ModelSpec, "allow_pickle"))

    def validate(self) -> None:
        """Fail before any model is loaded, naming the field."""
        check_settings(self, [
            ("num_generations", self.num_generations >= 2,
             f"must be at least 2 (GRPO compares completions), got {self.num_generations}"),
            ("max_completion_length", self.max_completion_length >= 1,
             f"must be at least 1, got {self.max_completion_length}"),
            ("beta", self.beta >= 0, f"must be >= 0, got {self.beta}"),
            ("loss_type", self.loss_type in GRPO_LOSS_TYPES,
             f"must be one of {', '.join(GRPO_LOSS_TYPES)}, got {self.loss_type!r}"),
            ("scale_rewards", self.scale_rewards in SCALE_REWARDS,
             f"must be one of {', '.join(SCALE_REWARDS)}, got {self.scale_rewards!r}"),
            ("temperature", self.temperature > 0, f"must be > 0 (GRPO needs distinct samples), got {self.temperature}"),
        ])
        check_top_p_top_k(self, self.top_p, self.top_k)
