"""``ICRMConfig``: TRL's ``RewardConfig`` plus ICRM's options, their checks, and the method presets.

The config is the one place a run's settings live: the trainer reads its
weights and generator settings from it, and :meth:`ICRMConfig.settings` is what
a run records and ``--resume`` compares. A method is a preset of the two
weights (consistency λ, SFT α); process-supervised methods also change which
loss the outcome term is.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import RewardConfig

from ..errors import UserError
from ..outputs import note
from ..settings import SettingError, check_settings
from .arguments import ICRMArguments

METHODS = {
    # name: (λ consistency weight, α SFT weight)
    "bt": (0.0, 0.0),
    "grm": (0.0, 1.0),
    "icrm": (0.1, 1.0),
    "icrm-nosft": (0.1, 0.0),
    "prm": (0.0, 0.0),
    "prm-icrm": (0.1, 0.0),
}
# Process-supervised methods train on each step's label (stepwise data only). prm-icrm's consistency
# term takes each token's target from its step's label, not the outcome's: with the outcome label, a
# chain that goes wrong at step 3 would push the prefixes of its right steps 1-2 down, against their labels.
PROCESS_METHODS = ("prm", "prm-icrm")
GENERATOR_SOURCES = ("self", "uniform")
POINTWISE_SAMPLING = (0.7, 0.8)  # the reference's temperature and top-p for w_t on graded responses
TRAINABLE_FORMATS = ("pairwise", "pointwise", "stepwise")  # icrm.data formats ICRMTrainer trains on
# TRL RewardConfig fields icrm has no use for: an error when set, rather than silently ignored.
UNSUPPORTED = {
    "chat_template_path": "set processing_class.chat_template instead",
    "eos_token": "every row is rendered with the chat template, which closes each turn itself",
    "activation_offloading": "not implemented",
    "pad_token": "deprecated in TRL; set processing_class.pad_token instead",
}


class ConfigError(UserError):
    """An option value that cannot work."""


class ConfigFieldError(ConfigError, SettingError):
    """A field of :class:`ICRMConfig` whose value cannot work: the message names the field, the CLI its flag."""


@dataclass
class ICRMConfig(ICRMArguments, RewardConfig):
    r"""Configuration of :class:`ICRMTrainer`: TRL's ``RewardConfig`` plus ICRM's options.

    Every field of TRL's ``RewardConfig`` and of ``transformers.TrainingArguments``
    keeps its name, meaning and default (``learning_rate=1e-4``, activation
    (gradient) checkpointing on, ``bf16=True``), with one difference: where
    TRL's bf16 default cannot work (no bf16 GPU and not ``use_cpu``, e.g. a
    CPU-only machine), training runs in float32 after a one-line note instead
    of failing. Checkpointing's default is set under transformers' current
    name, ``activation_checkpointing``, so that the default does not warn about
    the deprecated ``gradient_checkpointing``, which still works. How icrm
    reads TRL's own fields:

    * ``max_length`` (1024; ``None``: no limit): longest prompt+response in
      tokens. Longer rows lose prompt tokens from the left
      (``truncation="left"``, icrm's default) or are dropped, as TRL does
      (``truncation="drop"``); both are counted.
    * ``center_rewards_coefficient``: TRL's centering term ``c·mean((R_c+R_r)²)``.
    * ``disable_dropout`` (True): zero the backbone's dropout layers, as TRL
      does. The value head's dropout is ``head_dropout``, which this leaves alone.
    * ``model_init_kwargs``: keyword arguments of transformers'
      ``from_pretrained`` when ``model`` is a string (``dtype`` defaults to
      float32 as in TRL; ``"bfloat16"`` and friends are accepted as strings).
    * ``trust_remote_code``, ``dataset_num_proc`` (processes that tokenize),
      ``pad_to_multiple_of``: as in TRL.
    * ``chat_template_path``, ``eos_token``, ``activation_offloading``,
      ``pad_token``: not supported (an error when set).

    ICRM's fields:

    * ``method``: preset of (λ, α): ``bt`` (0, 0), ``grm`` (0, 1), ``icrm``
      (0.1, 1, the paper's), ``icrm-nosft`` (0.1, 0).
    * ``lambda_``: consistency weight λ in [0, 1] (the CLI's ``--lambda``;
      ``lambda`` is a Python keyword); None keeps the preset's.
    * ``sft_weight``: SFT weight α >= 0; None keeps the preset's.
    * ``sft_backbone_grad``: scale of the SFT gradient into the backbone (1e-3).
    * ``generator``: where ``w_t`` comes from: ``"self"`` (a frozen copy of
      the backbone's LM head), ``"uniform"`` (``w_t = 1``), or the path of a
      frozen causal LM with the same tokenizer (its pass runs at the start of
      ``train()`` and is cached on disk).
    * ``generator_temperature``, ``generator_top_p``: sampling settings ``w_t``
      is read under (None: 0.7/0.8 for pointwise data, as the reference; else 1/1).
    * ``generator_batch_size``: batch size of the generator pass.
    * ``head_dropout``: dropout before the value head in training (0.1, TRL's ValueHead).
    * ``cache_dir``: generator-probability cache (default ``~/.cache/icrm`` or ``$ICRM_CACHE``).
    * ``truncation``: ``left`` or ``drop`` (see ``max_length``).
    * ``allow_pickle``: also load pickle (``.bin``) weights when ``model`` is a path.
    * ``padding_free`` (TRL's name): the rows of a batch run through the
      backbone as one packed sequence with no padding (:mod:`icrm.modeling.packing`);
      losses and results are those of padded batches, up to float rounding.
      ``None`` (default): packed where the backbone's attention packs at no
      extra cost (SDPA, flash attention), padded otherwise.
    """

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigFieldError(self, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        checks = [
            ("lambda_", 0.0 <= self.consistency_weight <= 1.0, f"must be in [0, 1], got {self.consistency_weight}"),
            ("sft_weight", self.sft_coef >= 0, f"must be >= 0, got {self.sft_coef}"),
            ("truncation", self.truncation in ("left", "drop"), f"must be left or drop, got {self.truncation!r}"),
            ("max_length", self.max_length is None or self.max_length >= 8, f"must be at least 8, got {self.max_length}"),
            ("generator_temperature", self.generator_temperature is None or self.generator_temperature > 0,
             f"must be > 0, got {self.generator_temperature}"),
            ("generator_top_p", self.generator_top_p is None or 0.0 < self.generator_top_p <= 1.0,
             f"must be in (0, 1], got {self.generator_top_p}"),
            ("head_dropout", 0.0 <= self.head_dropout < 1.0, f"must be in [0, 1), got {self.head_dropout}"),
            ("step_separator", bool(self.step_separator), "must not be empty"),
        ]
        check_settings(self, checks, ConfigFieldError)
        for name, why in UNSUPPORTED.items():
            if getattr(self, name):
                raise ConfigError(f"ICRMConfig.{name} is not supported by icrm: {why}")
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            self.activation_checkpointing = True
        if self.bf16 is None and not self.fp16 and not self.use_cpu and not _bf16_device_available():
            self.bf16 = False  # TRL's default would stop here with transformers' "doesn't support bf16/gpu"
            note("no bf16 GPU here: training in float32 (pass bf16=False to skip this note)")
        super().__post_init__()
        if self.device.type == "cpu":
            self.dataloader_pin_memory = False  # as use_cpu=True does: no device to pin for, and torch warns
            if self.bf16 and not _bf16_cpu_fast():
                note("this CPU has no fast bf16 matmuls (no AVX-512): bf16=True trains several times slower than float32")

    def generator_sampling(self, pointwise: bool) -> tuple[float, float]:
        """(temperature, top-p) of ``w_t``: the reference's 0.7/0.8 for graded data, else the plain distribution."""
        default = POINTWISE_SAMPLING if pointwise else (1.0, 1.0)
        temperature = default[0] if self.generator_temperature is None else self.generator_temperature
        top_p = default[1] if self.generator_top_p is None else self.generator_top_p
        return temperature, top_p

    def resolve_sampling(self, data_format: str) -> None:
        """Fix the generator's sampling settings for this data (what the run records); stepwise rows are graded too."""
        self.generator_temperature, self.generator_top_p = self.generator_sampling(data_format != "pairwise")

    def check_format(self, data_format: str) -> None:
        """Process-supervised methods need step labels."""
        if self.process_supervised and data_format != "stepwise":
            raise ConfigFieldError(
                self, "method", f"{self.method} needs stepwise data (prompt, completions, labels), got {data_format}"
            )

    @property
    def process_supervised(self) -> bool:
        return self.method in PROCESS_METHODS

    @property
    def consistency_weight(self) -> float:
        return METHODS[self.method][0] if self.lambda_ is None else self.lambda_

    @property
    def sft_coef(self) -> float:
        return METHODS[self.method][1] if self.sft_weight is None else self.sft_weight

    def settings(self) -> dict:
        """The options that define a run, under their field names: saved in ``icrm_config.json``, compared by
        ``--resume``. ``lambda_`` and ``sft_weight`` are the resolved weights, not ``None``."""
        return {
            "method": self.method,
            "lambda_": self.consistency_weight,
            "sft_weight": self.sft_coef,
            "sft_backbone_grad": self.sft_backbone_grad,
            "center_rewards_coefficient": self.center_rewards_coefficient or 0.0,
            "generator": self.generator,
            "generator_temperature": self.generator_temperature,
            "generator_top_p": self.generator_top_p,
            "head_dropout": self.head_dropout,
            "disable_dropout": self.disable_dropout,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "step_separator": self.step_separator,
            "padding_free": self.padding_free,
            "learning_rate": self.learning_rate,
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "lr_scheduler_type": str(self.lr_scheduler_type),
            "warmup_steps": self.warmup_steps,
            "seed": self.seed,
        }


def _bf16_cpu_fast() -> bool:
    """Whether oneDNN has its AVX-512 bf16 kernels here (native with avx512_bf16/AMX); without, a far slower path."""
    import torch

    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _bf16_device_available() -> bool:
    """Whether transformers accepts ``bf16=True`` without ``use_cpu`` (the check it fails with otherwise)."""
    return is_torch_bf16_gpu_available() or is_torch_xla_available()
