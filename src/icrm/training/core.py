"""Training: the ICRM reward trainer, its config, and the ``sft``/``train`` entry points.

:class:`ICRMConfig` is TRL's ``RewardConfig`` (so ``transformers.
TrainingArguments``) plus ICRM's options, and :class:`ICRMTrainer` takes what
TRL's ``RewardTrainer`` takes: a TRL user changes two imports. Gradient
accumulation, bf16, accelerate/DeepSpeed/FSDP, checkpointing and resume come
from transformers; the trainer turns models and datasets into icrm's
(:class:`~icrm.modeling.RewardModel`, validated and tokenized rows) and its
``compute_loss`` combines the pure losses of :mod:`icrm.losses`:

    L = α·L_SFT + λ·L_ICRM + (1-λ)·L_BT      (or L_pt for pointwise data, L_PRM for prm methods)

``icrm train`` is :func:`train_reward_model`: the same trainer, plus the
file-level conveniences of a command (atomic output directory, resume,
Ctrl-C, metrics.json and plots).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import IntervalStrategy
from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import RewardConfig

from .. import losses
from ..data import (
    LoadedData,
    PairExample,
    PointExample,
    RewardCollator,
    RewardDataset,
    StepExample,
    TokenizeStats,
    example_texts,
    load_examples,
    tokenize_examples,
)
from ..errors import TrainingStopped, UserError
from ..modeling import (
    PRESETS,
    PackedRewardCollator,
    PackedSFTCollator,
    RewardModel,
    add_peft,
    build_causal_lm,
    head_generation_weights,
    load_causal_lm,
    load_tokenizer,
    lora_config,
    model_kind,
    prepare_tokenizer,
    train_tokenizer,
    use_packed_attention,
)
from ..outputs import (
    QUIET,
    check_output,
    console,
    mark_output,
    note,
    progress,
    progress_factory,
    replace_path,
    write_json,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel
from ..data import DEFAULT_SEPARATOR
from ..threads import apply_default_threads

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
TRAINABLE_FORMATS = ("pairwise", "pointwise", "stepwise")  # data.py formats ICRMTrainer trains on
# TRL RewardConfig fields icrm has no use for: an error when set, rather than silently ignored.
UNSUPPORTED = {
    "chat_template_path": "set processing_class.chat_template instead",
    "eos_token": "every row is rendered with the chat template, which closes each turn itself",
    "activation_offloading": "not implemented",
    "pad_token": "deprecated in TRL; set processing_class.pad_token instead",
}


class ConfigError(UserError):
    """An option value that cannot work."""


@dataclass
class ICRMConfig(RewardConfig):
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
      backbone as one packed sequence with no padding (:mod:`icrm.packing`);
      losses and results are those of padded batches, up to float rounding.
      ``None`` (default): packed where the backbone's attention packs at no
      extra cost (SDPA, flash attention), padded otherwise.
    """

    method: str = field(default="icrm", metadata={"help": "bt, grm, icrm, icrm-nosft, prm or prm-icrm"})
    lambda_: float | None = field(default=None, metadata={"help": "consistency weight λ (default: the method's)"})
    sft_weight: float | None = field(default=None, metadata={"help": "SFT weight α (default: the method's)"})
    sft_backbone_grad: float = field(default=1e-3, metadata={"help": "gradient scale of L_SFT into the backbone"})
    generator: str = field(default="self", metadata={"help": "PATH of a frozen causal LM, 'self' or 'uniform'"})
    generator_temperature: float | None = field(
        default=None, metadata={"help": "temperature of w_t (default: 0.7 for pointwise data, as the reference; else 1)"}
    )
    generator_top_p: float | None = field(
        default=None, metadata={"help": "top-p of w_t (default: 0.8 for pointwise data, as the reference; else 1)"}
    )
    generator_batch_size: int = 16
    head_dropout: float = field(default=0.1, metadata={"help": "dropout before the value head in training (TRL's ValueHead)"})
    cache_dir: str | None = None
    truncation: str = field(default="left", metadata={"help": "over-long rows: left (cut the prompt) or drop"})
    allow_pickle: bool = field(default=False, metadata={"help": "also load pickle (.bin) weights"})
    step_separator: str = field(
        default=DEFAULT_SEPARATOR, metadata={"help": "joins the steps of stepwise rows (as in TRL's PRMConfig)"}
    )
    padding_free: bool | None = field(
        default=None, metadata={"help": "pack each batch into one sequence, no padding (default: where free)"}
    )
    # TRL's default (True) goes to activation_checkpointing in __post_init__: set here, it would warn.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "deprecated alias of activation_checkpointing (default: on, as in TRL)"}
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        checks = [
            ("--lambda", "lambda_", 0.0 <= self.consistency_weight <= 1.0, f"must be in [0, 1], got {self.consistency_weight}"),
            ("--sft-weight", "sft_weight", self.sft_coef >= 0, f"must be >= 0, got {self.sft_coef}"),
            ("--truncation", "truncation", self.truncation in ("left", "drop"), f"must be left or drop, got {self.truncation!r}"),
            ("--max-length", "max_length", self.max_length is None or self.max_length >= 8,
             f"must be at least 8, got {self.max_length}"),
            ("--generator-temperature", "generator_temperature",
             self.generator_temperature is None or self.generator_temperature > 0, f"must be > 0, got {self.generator_temperature}"),
            ("--generator-top-p", "generator_top_p", self.generator_top_p is None or 0.0 < self.generator_top_p <= 1.0,
             f"must be in (0, 1], got {self.generator_top_p}"),
            ("--head-dropout", "head_dropout", 0.0 <= self.head_dropout < 1.0, f"must be in [0, 1), got {self.head_dropout}"),
            ("--step-separator", "step_separator", bool(self.step_separator), "must not be empty"),
        ]
        for option, name, ok, message in checks:
            if not ok:
                raise ConfigError(f"{option} {message} (ICRMConfig.{name})")
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
            raise ConfigError(
                f"--method {self.method} needs stepwise data (prompt, completions, labels), got {data_format}"
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
        """The options that define a run: saved in ``icrm_config.json``, compared by ``--resume``."""
        return {
            "method": self.method,
            "lambda": self.consistency_weight,
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
            "epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "lr_scheduler": str(self.lr_scheduler_type),
            "warmup": self.warmup_steps,
            "seed": self.seed,
        }


class ICRMTrainer(Trainer):
    """TRL's ``RewardTrainer``, trained with the ICRM objective.

    Args:
        model: what to train: ``"tiny"``/``"small"`` (a fresh small Llama and a
            BPE tokenizer trained on ``train_dataset``), a hub id or local path
            (a causal LM, which gets a new value head; any transformers sequence
            classifier with ``num_labels=1``; or an icrm checkpoint, which
            continues training), a loaded transformers ``PreTrainedModel``
            (causal LM or sequence classifier), or a :class:`RewardModel`.
        args: an :class:`ICRMConfig` (default: ``ICRMConfig("<model>-ICRM")``).
        data_collator: batches items of icrm's tokenized dataset (default:
            :class:`~icrm.data.RewardCollator`, chosen rows before rejected).
        train_dataset, eval_dataset: a ``datasets.Dataset`` or ``IterableDataset``
            (read into memory: the generator pass and length-grouped batches
            need every row) or a list of dicts, in TRL's formats — preference
            (``chosen``/``rejected``, standard or conversational, explicit
            ``prompt`` or implicit, optional ``margin``) or unpaired preference
            (``prompt``/``completion``/``label``, trained pointwise) — or
            icrm's (``response`` for ``completion``), or
            :func:`~icrm.data.load_examples` output. ``eval_dataset`` may be a
            dict of them. Rows are validated as ``icrm train`` validates files
            (:class:`~icrm.data.DataError` names the row, counted from 1) and
            tokenized here through the chat template.
        processing_class: the tokenizer (default: the model's own). A pad token
            distinct from EOS and a chat template are added where missing.
        compute_metrics: as in transformers (default :func:`pairwise_accuracy`).
        callbacks, optimizers, optimizer_cls_and_kwargs, preprocess_logits_for_metrics:
            as in transformers.
        peft_config: a peft config (e.g. ``LoraConfig``) for the backbone; the
            value head (and SFT head) are trained fully, and ``save_model``
            merges the adapters.

    ``train()`` first runs the generator pass (``args.generator`` a path: main
    process first, the others read the cache) and ends by recording the mean
    and std of the training rewards (for ``icrm score --normalize``).
    ``save_model(dir)`` writes icrm's checkpoint: a transformers
    sequence-classifier directory plus icrm's side files.
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: str | RewardModel | PreTrainedModel,
        args: ICRMConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        peft_config=None,
    ):
        from transformers import set_seed

        apply_default_threads()
        name = _model_name(model)
        if args is None:
            args = ICRMConfig(f"{name.rstrip('/').split('/')[-1]}-ICRM")
        elif not isinstance(args, ICRMConfig):
            raise TypeError(f"args must be an ICRMConfig (it takes every RewardConfig field), got {type(args).__name__}")
        if train_dataset is None:
            raise ConfigError("train_dataset is required")
        train_data = _examples(train_dataset, "train_dataset", args.step_separator)
        data_format = _data_format(train_data)
        args.check_format(data_format)
        eval_data = _map_eval(eval_dataset, lambda data, label: _examples(data, label, args.step_separator, data_format))
        args.resolve_sampling(data_format)
        if args.consistency_weight > 0 and args.generator not in GENERATOR_SOURCES:
            model_kind(args.generator)  # fail early on a path that is not a model

        set_seed(args.seed)  # a new value head (and LoRA) starts the same in every run and process
        rm = _reward_model(model, args, processing_class, train_data)
        if peft_config is not None:
            add_peft(rm, peft_config)
        if args.disable_dropout:
            for module in rm.decoder.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        rm.head_dropout.p = args.head_dropout
        args.padding_free = rm.use_padding_free(args.padding_free).padding_free  # None resolved: what the run records
        rm.prepare_training_heads(
            sft=args.sft_coef > 0, self_generator=args.consistency_weight > 0 and args.generator == "self"
        )
        rm.training_config = {"model": {"name": name}, **args.settings()}

        self.data_format = data_format
        self.data_stats: dict[str, dict] = {}
        self.generator_cache = "unused"  # or "hit"/"miss": where the generator weights came from
        tokenize = lambda data, label: self._tokenize(data, rm.tokenizer, args, label)
        super().__init__(
            model=rm,
            args=args,
            data_collator=data_collator
            or (PackedRewardCollator if rm.padding_free else RewardCollator)(rm.tokenizer.pad_token_id,
                                                                             args.pad_to_multiple_of),
            train_dataset=tokenize(train_data, "train_dataset"),
            eval_dataset=_map_eval(eval_data, tokenize),
            processing_class=rm.tokenizer,
            compute_metrics=compute_metrics or pairwise_accuracy,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self._records: dict[str, list[_BatchRecord]] = {"train": [], "eval": []}  # logged metrics of each batch
        self._logged_step = 0  # the last training step whose records were logged
        self._eval_prefix: str | None = None  # metric_key_prefix while evaluate() runs
        self._total_train_tokens = 0
        self.add_callback(LogLastStep())
        if any(isinstance(callback, ProgressCallback) for callback in self.callback_handler.callbacks):
            use_rich_progress(self)  # one kind of bar: icrm's (tokenizing, generator pass) and training's

    @property
    def reward_model(self) -> RewardModel:
        return self.accelerator.unwrap_model(self.model)

    # -- data

    def _tokenize(self, data: LoadedData | RewardDataset, tokenizer, args: ICRMConfig, label: str) -> RewardDataset:
        """Tokenized rows through the chat template, over-long ones cut or dropped (counted in ``data_stats``)."""
        if isinstance(data, RewardDataset):
            return data
        max_length = args.max_length or sys.maxsize
        if (args.dataset_num_proc or 1) > 1:
            items, kept, stats = _tokenize_in_processes(data.examples, tokenizer, max_length, args.truncation,
                                                        args.dataset_num_proc)
        else:
            with progress(f"tokenizing {label}", len(data.examples)) as advance:
                items, kept, stats = tokenize_examples(data.examples, tokenizer, max_length, args.truncation, advance)
        if not items:
            raise ConfigError(f"{data.source}: every row is longer than --max-length {max_length} (max_length)")
        self.data_stats[label] = {
            "examples": len(items), "skipped_rows": data.skipped, "truncated": stats.truncated,
            "dropped_over_length": stats.dropped,
        }
        return RewardDataset([data.examples[i] for i in kept], items)

    def _set_signature_columns_if_needed(self):
        # Items are RewardDataset dicts, not model inputs: what remove_unused_columns must keep.
        if self._signature_columns is None:
            self._signature_columns = ["sequences", "length", "weights", "margin", "label", "step_labels"]

    def _attach_generator_weights(self, datasets: list[RewardDataset]) -> None:
        """Generator weights ``w_t`` of every sequence, for ``generator=PATH``: computed once, cached on disk.

        The main process goes first and writes the cache; the others read it.
        """
        args = self.args
        todo = [d for d in datasets if d.weights is None]
        if args.consistency_weight == 0 or args.generator in GENERATOR_SOURCES or not todo:
            return
        from ..modeling import cached_generation_weights

        with args.main_process_first(desc="generator pass"):
            for dataset in todo:
                dataset.weights, hit = cached_generation_weights(
                    args.generator,
                    self.reward_model.tokenizer,
                    dataset.all_sequences(),
                    cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                    batch_size=args.generator_batch_size,
                    device=args.device,
                    trust_remote_code=args.trust_remote_code,
                    allow_pickle=args.allow_pickle,
                    progress_factory=progress_factory,
                    temperature=args.generator_temperature,
                    top_p=args.generator_top_p,
                )
                if self.generator_cache == "unused":
                    self.generator_cache = "hit" if hit else "miss"

    # -- entry points

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """The generator pass, transformers' training loop, then the training reward statistics."""
        self._attach_generator_weights(_reward_datasets(self.train_dataset, self.eval_dataset))
        self._records["train"].clear()
        self._logged_step = 0
        output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        # Collectives (under ZeRO-3 each rank holds shards): every rank takes part.
        self.reward_model.reward_stats = _reward_stats(self.reward_model, self.train_dataset)
        return output

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """transformers' ``evaluate``; a dataset given here is validated and tokenized like the training data.

        It leaves torch's random state as it found it (a dataloader draws its
        base seed from it), so evaluating during training does not change
        what the training learns.
        """
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            prepare = lambda data, label: self._tokenize(
                _examples(data, label, self.args.step_separator, self.data_format),
                self.reward_model.tokenizer, self.args, label,
            )
            eval_dataset = _map_eval(eval_dataset, prepare)
        self._attach_generator_weights(_reward_datasets(self.eval_dataset, eval_dataset))
        self._records["eval"].clear()
        outer, self._eval_prefix = self._eval_prefix, metric_key_prefix
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._eval_prefix = outer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write icrm's checkpoint to ``output_dir``: what ``icrm train`` writes, from the main process.

        A transformers sequence-classifier directory (``AutoModelForSequenceClassification``
        loads it; peft adapters merged, the live model untouched) plus the
        tokenizer and icrm's side files. Every process must call it (the state
        is gathered first, as under ZeRO-3). The trainer's own periodic
        checkpoints (``_internal_call``) keep the full training state instead,
        for ``resume_from_checkpoint``.
        """
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        full_state = self.accelerator.get_state_dict(self.model)
        if self.is_world_process_zero():
            self.reward_model.save_pretrained(output_dir or self.args.output_dir, full_state)

    # -- the objective
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The ICRM objective of a batch, which says its data by its keys.

        ``margin``: pairs, all chosen rows then all rejected; ``labels``: graded
        single responses. Each term is also logged (``bt``/``bce``/``prm``, ``icrm``, ``sft``,
        ``accuracy``), with what TRL's ``RewardTrainer`` logs (see :meth:`log`).
        """
        args: ICRMConfig = self.args
        rm: RewardModel = self.accelerator.unwrap_model(model)
        mask = inputs["attention_mask"]
        lam, alpha = args.consistency_weight, args.sft_coef
        pairwise = "margin" in inputs
        sft_positions = self._sft_positions(rm, inputs, pairwise) if alpha > 0 else None
        rewards, hidden, sft_logits = model(
            inputs["input_ids"], mask, lm_positions=sft_positions, lm_grad_scale=args.sft_backbone_grad,
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
            terms["prm"], terms["accuracy"] = self._process_loss(inputs, rewards)
            loss = (1.0 - lam) * terms["prm"]
        else:
            terms["bce"] = losses.pointwise_bce(outcome, inputs["labels"])
            terms["accuracy"] = ((outcome > 0).float() == inputs["labels"]).float().mean()
            loss = (1.0 - lam) * terms["bce"]

        if lam > 0:
            consistency = self._consistency(rm, inputs, rewards, hidden, model.training)
            terms["icrm"], terms["icrm_raw"] = consistency.loss, consistency.raw
            terms["icrm_ema"] = consistency.ema
            loss = loss + lam * consistency.loss
        if alpha > 0:
            terms["sft"] = self._sft(inputs, sft_positions, sft_logits, loss)
            loss = loss + alpha * terms["sft"]

        if model.training and not torch.isfinite(loss):
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise TrainingStopped(
                f"non-finite loss at step {self.state.global_step + 1} ({shown}); try a lower --lr. "
                f"The last good checkpoint (if --save-steps was set) is in {Path(self.args.output_dir).parent}",
                1,
            )
        logged = {"loss": loss, **terms, "min_reward": outcome.min(), "mean_reward": outcome.mean(),
                  "max_reward": outcome.max()}
        if pairwise:
            logged["margin"] = (chosen - rejected).mean()
        self._record(model.training, outcome.shape[0] // 2 if pairwise else outcome.shape[0], mask.sum(), logged)
        return (loss, {"rewards": outcome}) if return_outputs else loss

    def _record(self, training: bool, rows: int, tokens: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
        """Keep a batch's logged values, all processes' together (one gather): means, and the rewards' min and max."""
        names = list(values)
        local = torch.stack([value.detach().float() for value in (tokens.new_tensor(rows), tokens, *values.values())])
        stats = self.accelerator.gather(local[None]).view(-1, len(local))
        weights = stats[:, 0]
        merged = [weights.sum(), stats[:, 1].sum()]
        for column, name in enumerate(names, 2):
            value = stats[:, column]
            reduce = {"min_reward": value.min, "max_reward": value.max}.get(name)
            merged.append(reduce() if reduce else (value * weights).sum() / weights.sum())
        rows_total, token_total, *numbers = torch.stack(merged).tolist()
        if training:
            self._total_train_tokens += int(token_total)
        step = self.state.global_step + 1 if training else self.state.global_step
        self._records["train" if training else "eval"].append(_BatchRecord(step, rows_total, dict(zip(names, numbers))))

    def _consistency(self, rm: RewardModel, inputs, rewards, hidden, training: bool) -> losses.ConsistencyOutput:
        response = inputs["response_mask"]
        weights = self._generation_weights(rm, inputs, hidden)
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
            if self.args.process_supervised:
                labels = losses.step_token_labels(inputs["step_positions"], inputs["step_labels"], rewards.shape[1])
            d = losses.pointwise_consistency_targets(rewards, labels)
        out = losses.consistency_loss(d, pair_weights, pair_mask, rm.consistency_ema, update_ema=training)
        if training:
            rm.consistency_ema.copy_(out.ema)
        return out

    @staticmethod
    def _process_loss(inputs, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The PRM loss and the step accuracy (σ(r) > 0.5 agrees with the step label)."""
        if "step_positions" not in inputs:
            raise ConfigError("--method prm and prm-icrm need stepwise data (prompt, completions, labels)")
        positions, labels = inputs["step_positions"], inputs["step_labels"]
        valid = positions >= 0
        picked = losses.gather_steps(rewards, positions)[valid]
        return losses.step_bce(rewards, positions, labels), ((picked > 0).float() == labels[valid]).float().mean()

    def _generation_weights(self, rm: RewardModel, inputs, hidden) -> torch.Tensor:
        """``w_t`` from the cache, the frozen copy of the RM's LM head (``self``), or ones."""
        if "gen_weights" in inputs:
            return inputs["gen_weights"]
        if self.args.generator == "uniform":
            return torch.ones_like(inputs["response_mask"], dtype=hidden.dtype)
        temperature, top_p = self.args.generator_sampling(pointwise="margin" not in inputs)
        return head_generation_weights(
            hidden, inputs["input_ids"], inputs["response_mask"], rm.generator_head, temperature, top_p
        )

    @staticmethod
    def _sft_positions(rm: RewardModel, inputs, pairwise: bool) -> torch.Tensor:
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

    @staticmethod
    def _sft(inputs, positions: torch.Tensor, logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``-log π(y)`` of chosen (or correct) responses, per-sequence means averaged."""
        if not positions.any():
            return like.new_zeros(())
        targets = inputs["input_ids"][:, 1:][positions[:, :-1]]
        rows = positions.nonzero()[:, 0]
        return losses.sft_nll(logits, targets, rows)

    def _get_train_sampler(self, train_dataset=None):
        """transformers' length-grouped sampler, fed the lengths icrm already knows and seeded per epoch.

        With ``train_sampling_strategy="group_by_length"`` batches hold rows of
        similar length, which cuts padding (49 % → 13 % on HH); the default
        strategy is transformers' random sampler.
        """
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return self._length_grouped(dataset, batch) or super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        return self._length_grouped(eval_dataset, self.args.eval_batch_size) or super()._get_eval_sampler(eval_dataset)

    def _length_grouped(self, dataset, batch_size: int):
        if self.args.train_sampling_strategy != "group_by_length" or not isinstance(dataset, RewardDataset):
            return None
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return SeededLengthGroupedSampler(batch_size, dataset.lengths, seed)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoint the full training state (LoRA unmerged) with safetensors.

        ``save_model`` (unlike transformers' fallback ``save_file``) handles
        tied embeddings, whose tensors share memory.
        """
        from safetensors.torch import save_model

        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_model(self.accelerator.unwrap_model(self.model), os.path.join(output_dir, "model.safetensors"))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        outcome = outputs["rewards"].detach()
        if "margin" in inputs:
            half = outcome.shape[0] // 2
            logits = torch.stack([outcome[:half], outcome[half:]], dim=1)
            labels = torch.zeros(half, device=outcome.device)
        else:
            logits, labels = outcome, inputs["labels"]
        return loss.detach(), logits, labels

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add icrm's loss terms and TRL's reward metrics to a training step's or an evaluation's log.

        Each value is a mean over the batches since the last log, weighted by
        their rows (pairs, or graded responses), so a short last batch counts
        for its rows; ``loss`` is recomputed the same way. The last training
        step is always logged (:class:`LogLastStep`) and averages the last
        ``logging_steps`` steps, like every other point, even where that
        reaches back before the previous log. As in TRL: ``min_reward``,
        ``mean_reward``, ``max_reward`` (each batch's, averaged), ``margin``
        (chosen minus rejected, pairs only), ``num_tokens`` (non-padding tokens
        trained on so far, also in evaluation logs); ``accuracy`` counts ties
        half, where TRL counts them as wrong. Other logs (the run's closing
        summary) are left as they are.
        """
        if self._eval_prefix is not None:
            metrics = _weighted_means(self._records["eval"])
            metrics["num_tokens"] = self._total_train_tokens
            for name, value in metrics.items():  # compute_metrics' value over the whole set, where it has one, wins
                logs.setdefault(f"{self._eval_prefix}_{name}", value)
            self._records["eval"].clear()
        elif "loss" in logs and self._records["train"]:
            logs.update(_weighted_means(self._train_window()), num_tokens=self._total_train_tokens)
        super().log(logs, start_time)

    def _train_window(self) -> list[_BatchRecord]:
        """The records this training log averages; the last ``logging_steps`` steps' are kept for the last log."""
        step, every = self.state.global_step, self.state.logging_steps
        start = self._logged_step
        if step >= self.state.max_steps and self.args.logging_strategy == IntervalStrategy.STEPS:
            start = min(start, step - every)
        window = [record for record in self._records["train"] if start < record.step <= step]
        self._records["train"] = [record for record in self._records["train"] if record.step > step - every]
        self._logged_step = step
        return window


@dataclass
class _BatchRecord:
    """The values :meth:`ICRMTrainer.log` averages, of one batch (all processes together)."""

    step: int  # the optimizer step it belongs to
    rows: float  # pairs or graded responses: its weight
    values: dict[str, float]


def _weighted_means(records: list[_BatchRecord]) -> dict[str, float]:
    """Each value's mean over the records, weighted by their rows."""
    means = {}
    for name in {name: None for record in records for name in record.values}:
        having = [record for record in records if name in record.values]
        means[name] = sum(r.values[name] * r.rows for r in having) / sum(r.rows for r in having)
    return means


class LogLastStep(TrainerCallback):
    """Log the last training step too, so that every curve (the loss and each term) ends where training did."""

    def on_step_end(self, args, state, control, **kwargs):
        if args.logging_strategy == IntervalStrategy.STEPS and state.global_step >= state.max_steps:
            control.should_log = True


def _bf16_device_available() -> bool:
    """Whether transformers accepts ``bf16=True`` without ``use_cpu`` (the check it fails with otherwise)."""
    return is_torch_bf16_gpu_available() or is_torch_xla_available()


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped sampler, with an order that depends on the seed and the epoch alone.

    transformers' own draws each epoch's order from the global torch RNG, which
    by a later epoch also holds every dropout draw of the epochs before. A run
    resumed in that epoch skips to its checkpoint's batch before the RNG state
    is restored, so it drew another order and trained on other batches. As
    accelerate's ``SeedableRandomSampler`` does for the random order, the
    generator is reseeded with ``seed + epoch`` (the dataloader calls
    ``set_epoch`` each epoch), and the global RNG is left alone.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


def pairwise_accuracy(eval_pred) -> dict[str, float]:
    """``compute_metrics``: chosen above rejected (ties count half), or the sign of R matching the label."""
    logits = torch.as_tensor(eval_pred.predictions)
    if logits.ndim == 2:
        chosen, rejected = logits[:, 0], logits[:, 1]
        acc = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    else:
        acc = ((logits > 0).float() == torch.as_tensor(eval_pred.label_ids)).float()
    return {"accuracy": float(acc.double().mean())}  # float64, so k/n is exact (as in icrm eval)


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", "") or type(model).__name__


def _model_init_kwargs(args: ICRMConfig) -> dict:
    """``args.model_init_kwargs`` for ``from_pretrained``, with TRL's float32 default and string dtypes."""
    kwargs = dict(args.model_init_kwargs or {})
    dtype = kwargs.setdefault("dtype", torch.float32)
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"model_init_kwargs: unknown dtype {dtype!r} (e.g. 'bfloat16', 'float32', 'auto')")
        kwargs["dtype"] = getattr(torch, dtype)
    return kwargs


def _reward_model(model, args: ICRMConfig, tokenizer, data) -> RewardModel:
    """The :class:`RewardModel` that ``model`` names or holds (see :class:`ICRMTrainer`)."""
    if tokenizer is not None:
        prepare_tokenizer(tokenizer)
    if isinstance(model, RewardModel):
        model.tokenizer = tokenizer or model.tokenizer
        return model
    if not isinstance(model, str):
        tokenizer = tokenizer or load_tokenizer(_model_name(model), args.trust_remote_code)
        return RewardModel.from_model(model, tokenizer)
    if model in PRESETS:
        tokenizer = tokenizer or train_tokenizer(example_texts(data.examples), PRESETS[model]["vocab_size"])
        return RewardModel.from_causal_lm(build_causal_lm(model, tokenizer, args.seed), tokenizer)
    return RewardModel.from_pretrained(
        model, args.trust_remote_code, args.allow_pickle, tokenizer, **_model_init_kwargs(args)
    )


def _data_format(data: LoadedData | RewardDataset) -> str:
    if isinstance(data, LoadedData):
        return data.format
    first = data.examples[0]
    return "pairwise" if isinstance(first, PairExample) else "stepwise" if isinstance(first, StepExample) else "pointwise"


def _examples(dataset, name: str, step_separator: str, same_as: str | None = None) -> LoadedData | RewardDataset:
    """Validated rows of a dataset in any accepted form (see :class:`ICRMTrainer`).

    ``same_as``: the format the rows must have (the training data's, for evaluation).
    """
    if isinstance(dataset, (RewardDataset, LoadedData)):
        data = dataset
    else:
        expect = (same_as,) if same_as else TRAINABLE_FORMATS
        data = load_examples(dataset, name=name, expect=expect, step_separator=step_separator)
    fmt = _data_format(data)
    if fmt not in TRAINABLE_FORMATS or (same_as and fmt != same_as):
        wanted = same_as or " or ".join(TRAINABLE_FORMATS)
        raise ConfigError(f"{name}: has {fmt} rows, training needs {wanted} rows")
    return data


def _map_eval(eval_dataset, fn):
    """``fn(dataset, name)`` on an eval dataset, or on each of a dict of them (as transformers allows)."""
    if eval_dataset is None:
        return None
    if isinstance(eval_dataset, dict):
        return {key: fn(value, f"eval_dataset[{key!r}]") for key, value in eval_dataset.items()}
    return fn(eval_dataset, "eval_dataset")


def _reward_datasets(*datasets) -> list[RewardDataset]:
    """The tokenized datasets among these (each a dataset, a dict of them, a name or None)."""
    found = []
    for dataset in datasets:
        found += dataset.values() if isinstance(dataset, dict) else [dataset]
    return [d for d in found if isinstance(d, RewardDataset)]


def _tokenize_in_processes(examples: list, tokenizer, max_length: int, truncation: str, num_proc: int):
    """:func:`tokenize_examples` over ``num_proc`` processes (``dataset_num_proc``), results in order."""
    import multiprocessing
    from itertools import pairwise

    bounds = [len(examples) * k // num_proc for k in range(num_proc + 1)]
    chunks = [(examples[lo:hi], tokenizer, max_length, truncation) for lo, hi in pairwise(bounds)]
    with multiprocessing.Pool(num_proc) as pool:
        parts = pool.starmap(tokenize_examples, chunks)
    items, kept, stats = [], [], TokenizeStats()
    for lo, (part_items, part_kept, part_stats) in zip(bounds, parts):
        items += part_items
        kept += [lo + i for i in part_kept]
        stats.truncated += part_stats.truncated
        stats.dropped += part_stats.dropped
    return items, kept, stats


# ------------------------------------------------------------------ entry points


def trainer_arguments(
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 8,
    grad_accum: int = 1,
    lr: float = 1e-5,
    seed: int = 0,
    bf16: bool = False,
    warmup: float = 0.03,
    scheduler: str = "cosine",
    logging_steps: int = 10,
    save_steps: int = 0,
    group_by_length: bool = False,
) -> dict:
    """The ``TrainingArguments`` fields icrm's commands set (warmup < 1 is a ratio).

    ``save_steps`` > 0 keeps periodic checkpoints (model, optimizer, scheduler,
    RNG and data position) for ``--resume``. ``group_by_length`` batches rows
    of similar length together (less padding, faster; a different data order).
    """
    return dict(
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup,
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps if save_steps > 0 else 500,
        save_total_limit=2 if save_steps > 0 else None,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if group_by_length else "random",
    )


@dataclass
class ModelSpec:
    """What ``--model`` names and how to adapt it."""

    name: str = "tiny"
    lora_r: int = 0
    lora_alpha: int = 16
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def peft_config(self):
        """``--lora-r/--lora-alpha`` as a peft config, or None."""
        return lora_config(self.lora_r, self.lora_alpha)


def train_reward_model(
    data: str,
    output: str,
    config: ICRMConfig,
    spec: ModelSpec,
    eval_data: str | None = None,
    skip_invalid: bool = False,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """``icrm train``: :class:`ICRMTrainer` on data files, with a command's file handling.

    Every row is validated before anything is written. Training runs in
    ``.<output>.partial`` next to the output, which is renamed into place at
    the end; an interrupted or crashed run leaves it there for
    ``resume=True`` to continue from its last checkpoint (``--save-steps``).
    ``spec`` names the model, its LoRA adapters and its loading permissions.
    ``output`` may be an earlier ``train`` output; anything else there needs
    ``overwrite`` (:func:`icrm.outputs.check_output`).
    """
    check_output(output, "train", overwrite)
    step_separator = config.step_separator
    train_loaded = load_examples(data, expect=TRAINABLE_FORMATS, skip_invalid=skip_invalid, step_separator=step_separator)
    eval_loaded = None
    if eval_data:
        eval_loaded = load_examples(
            eval_data, expect=(train_loaded.format,), skip_invalid=skip_invalid, step_separator=step_separator
        )
    config.trust_remote_code, config.allow_pickle = spec.trust_remote_code, spec.allow_pickle
    config.resolve_sampling(train_loaded.format)
    resolved = {"data": data, "eval_data": eval_data, "model": asdict(spec), **config.settings()}
    with run_directory(output, "train", resume, resolved, config) as work:
        config.output_dir = str(work / "trainer")
        trainer = ICRMTrainer(
            spec.name, config, train_dataset=train_loaded, eval_dataset=eval_loaded, peft_config=spec.peft_config()
        )
        trainer.reward_model.training_config = {**resolved, "padding_free": trainer.reward_model.padding_free}
        result = _train(trainer, work, resume)
        metrics = {"train_loss": result.training_loss, "steps": result.global_step}
        if eval_loaded is not None:
            evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
            metrics.update(evals[-1] if evals else trainer.evaluate())
        trainer.save_model(str(work))
        if trainer.is_world_process_zero():
            stats = trainer.data_stats["train_dataset"]
            metrics.update(
                format=train_loaded.format,
                train_examples=stats["examples"],
                skipped_rows=stats["skipped_rows"],
                truncated=stats["truncated"],
                dropped_over_length=stats["dropped_over_length"],
                generator_cache=trainer.generator_cache,
                log_history=trainer.state.log_history,
            )
            write_json(work / "metrics.json", metrics)
            (work / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
            _plot_losses(trainer.state.log_history, work / "losses.png")
    return metrics


@contextlib.contextmanager
def run_directory(output: str, kind: str, resume: bool, resolved: dict, args: TrainingArguments):
    """The working directory of a run, marked as ``kind``'s output and renamed onto ``output`` when it succeeds.

    Only the main process touches the file system; the others wait for it.
    """
    from accelerate import PartialState

    state = PartialState()
    target = Path(output).absolute()
    work = target.with_name(f".{target.name}.partial")
    record = work / "run.json"
    if state.is_main_process:
        if resume:
            if not record.exists():
                raise ConfigError(f"--resume: no interrupted run of {output} (expected {work})")
            previous = json.loads(record.read_text())
            if previous != json.loads(json.dumps(resolved, default=str)):
                raise ConfigError(f"--resume: the options or data differ from the interrupted run in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            write_json(record, resolved)
    state.wait_for_everyone()
    try:
        yield work
    except UserError:
        if state.is_main_process and not resume:
            shutil.rmtree(work, ignore_errors=True)
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(work / "trainer", ignore_errors=True)
        record.unlink(missing_ok=True)
        mark_output(work, kind)
        replace_path(work, target)


class GracefulInterrupt(TrainerCallback):
    """On SIGINT, finish the current step, save a checkpoint and stop."""

    def __init__(self):
        self.requested = False

    def request(self, *_):
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class WholeRunLoss(TrainerCallback):
    """``train_loss`` over every step of a run, resumed or not.

    transformers averages the loss over the steps of one ``train()`` call and
    holds the loss of the steps since the last log in memory only. This logs
    at every checkpoint, so that a checkpoint's log history accounts for every
    step before it, and on a resumed run adds those steps back into the
    closing log's ``train_loss``, which it keeps as ``self.train_loss``.
    """

    def __init__(self):
        self.start = 0
        self.train_loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = state.global_step  # the checkpoint's step on a resume

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_loss" not in logs:
            return
        self.train_loss = logs["train_loss"]
        if self.start == 0 or state.global_step == 0:
            return
        total, logged = 0.0, 0
        for entry in state.log_history:
            if "loss" in entry and entry["step"] <= self.start:
                total += entry["loss"] * (entry["step"] - logged)
                logged = entry["step"]
        if logged != self.start:  # a checkpoint without a log at its step (older icrm): its steps' loss is lost
            return
        self.train_loss = (total + self.train_loss * (state.global_step - self.start)) / state.global_step
        state.log_history[-1]["train_loss"] = self.train_loss


def _train(trainer: Trainer, work: Path, resume: bool):
    """``trainer.train()`` with resume, Ctrl-C checkpointing and rich progress.

    The result's ``training_loss`` covers the whole run, also when resumed.
    """
    from transformers.trainer_utils import get_last_checkpoint

    use_rich_progress(trainer)
    interrupt = GracefulInterrupt()
    trainer.add_callback(interrupt)
    whole_run = WholeRunLoss()
    trainer.add_callback(whole_run)  # after the interrupt, whose checkpoint it must log
    checkpoint = get_last_checkpoint(str(work / "trainer")) if resume and (work / "trainer").is_dir() else None
    previous = signal.signal(signal.SIGINT, interrupt.request)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupt.requested:
        raise TrainingStopped(
            f"interrupted at step {trainer.state.global_step}; checkpoint saved in {work}; "
            "run the same command with --resume to continue",
            130,
        )
    result.metrics["train_loss"] = whole_run.train_loss
    return result._replace(training_loss=whole_run.train_loss)


class RichProgress(TrainerCallback):
    """A rich progress bar over optimizer steps, with the latest loss terms.

    Replaces transformers' tqdm bar; safe to use with ``evaluate()`` after
    training (which TRL's RichProgressCallback is not).
    """

    SHOWN = ("loss", "bt", "bce", "prm", "icrm", "sft", "accuracy", "eval_accuracy")

    def __init__(self):
        self._bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._bar = progress_factory("training", state.max_steps)
            if state.global_step:  # resumed: the bar covers the whole run
                self._bar(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            shown = "  ".join(f"{k}={logs[k]:.4g}" for k in self.SHOWN if isinstance(logs.get(k), (int, float)))
            if shown:
                console.print(f"[dim]step {state.global_step}[/dim]  {shown}")

    def on_train_end(self, args, state, control, **kwargs):
        self._bar = None


def use_rich_progress(trainer: Trainer) -> None:
    """Replace transformers' tqdm bar and log printer with ours (nothing under --quiet)."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not QUIET["value"] and not any(isinstance(c, RichProgress) for c in trainer.callback_handler.callbacks):
        trainer.add_callback(RichProgress())


@torch.no_grad()
def _reward_stats(rm: RewardModel, dataset: RewardDataset) -> dict[str, float]:
    """Mean/std of the trained model's outcome rewards on the training rows, stored for ``score --normalize``.

    The rows are scored as tokenized for training (no second tokenization),
    packed when training was.
    """
    from ..evaluation import reward_normalizer

    rewards = [float(r[-1]) for r in rm.sequence_rewards(dataset.all_sequences())]
    mean, std = reward_normalizer(rewards)
    return {"mean": mean, "std": std, "n": len(rewards)}


def _plot_losses(history: list[dict], path: Path) -> None:
    from ..evaluation import plot_loss_curves

    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in history:
        if "loss" not in entry:  # evaluations and the closing summary: the panels share the training steps
            continue
        for name in ("loss", "bt", "bce", "prm", "icrm", "sft"):
            if name in entry:
                curves[name].append((entry["step"], entry[name]))
    if curves:
        plot_loss_curves(dict(curves), path)


# ---------------------------------------------------------------------- SFT


class SFTCollator(RewardCollator):
    """Padded prompt+response batches with loss only on response tokens."""

    def __call__(self, items):
        batch = super().__call__(items)
        labels = batch["input_ids"].masked_fill(~batch.pop("response_mask"), -100)
        batch.pop("margin", None)
        batch.pop("labels", None)
        batch["labels"] = labels
        return batch


SFT_RESPONSES = {
    # --responses: (pairwise sides kept, pointwise labels kept)
    "chosen": (("chosen",), (1.0,)),
    "correct": (("chosen",), (1.0,)),
    "rejected": (("rejected",), (0.0,)),
    "both": (("chosen", "rejected"), (1.0, 0.0)),
    "all": (("chosen", "rejected"), (1.0, 0.0)),
}


def sft_examples(examples: list, responses: str) -> list[PointExample]:
    """The responses ``icrm sft --responses`` trains on, as (prompt, response) examples.

    ``chosen`` (pointwise: ``correct``) makes a policy that imitates good
    answers; ``both`` (pointwise: ``all``) makes the generator the reference
    code uses for ICRM weights, which has seen text like every response it
    will weigh, good and bad.
    """
    if responses not in SFT_RESPONSES:
        raise ConfigError(f"--responses must be one of {', '.join(SFT_RESPONSES)}, got {responses!r}")
    sides, labels = SFT_RESPONSES[responses]
    out = []
    for ex in examples:
        if isinstance(ex, PairExample):
            out.extend(PointExample(ex.prompt, getattr(ex, side), 1.0) for side in sides)
        elif float(ex.label > 0.5) in labels:
            out.append(PointExample(ex.prompt, ex.response, 1.0))
    return out


def train_sft(
    data: str,
    output: str,
    args: TrainingArguments,
    spec: ModelSpec,
    max_length: int = 1024,
    truncation: str = "left",
    skip_invalid: bool = False,
    resume: bool = False,
    responses: str = "chosen",
    step_separator: str = DEFAULT_SEPARATOR,
    packing: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """``icrm sft``: train a causal LM on the chosen, rejected or all responses.

    The result is a plain transformers causal-LM directory: a generator for
    ``--generator`` (train it on ``both``), a backbone for ``--model`` and a
    policy for sampling and DPO (train it on ``chosen``). ``packing``: each
    batch as one padding-free sequence (TRL's ``padding_free`` collator);
    ``None``: where the model's attention packs at no extra cost. ``output``
    may be an earlier ``sft`` output; anything else there needs ``overwrite``.
    """
    check_output(output, "sft", overwrite)
    loaded = load_examples(
        data, expect=("pairwise", "pointwise", "stepwise"), skip_invalid=skip_invalid, step_separator=step_separator
    )
    chosen = sft_examples(loaded.examples, responses)
    if not chosen:
        raise ConfigError(f"{data}: no {responses} responses to train on")
    if spec.name in PRESETS:
        tokenizer = train_tokenizer(example_texts(loaded.examples), PRESETS[spec.name]["vocab_size"])
        model = build_causal_lm(spec.name, tokenizer, args.seed)
    else:
        model, tokenizer = load_causal_lm(spec.name, spec.trust_remote_code, spec.allow_pickle)
    if spec.lora_r > 0:
        from peft import get_peft_model

        model = get_peft_model(model, spec.peft_config())
    packing = use_packed_attention(model, packing)
    with progress("tokenizing", len(chosen)) as advance:
        items, kept, stats = tokenize_examples(chosen, tokenizer, max_length, truncation, advance)
    if not items:
        raise ConfigError(f"{data}: every row is longer than --max-length {max_length}")
    dataset = RewardDataset([chosen[i] for i in kept], items)

    resolved = {"data": data, "responses": responses, "model": asdict(spec), "max_length": max_length, "seed": args.seed,
                "learning_rate": args.learning_rate, "epochs": args.num_train_epochs, "max_steps": args.max_steps,
                "packing": packing}
    with run_directory(output, "sft", resume, resolved, args) as work:
        args.output_dir = str(work / "trainer")
        collator = PackedSFTCollator(tokenizer.pad_token_id) if packing else SFTCollator(tokenizer.pad_token_id)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        result = _train(trainer, work, resume)
        metrics = {
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "train_examples": len(dataset),
            "truncated": stats.truncated,
            "dropped_over_length": stats.dropped,
            "log_history": trainer.state.log_history,
        }
        if trainer.is_world_process_zero():
            if spec.lora_r > 0:
                model = model.merge_and_unload()
            model.save_pretrained(work)
            tokenizer.save_pretrained(work)
            write_json(work / "metrics.json", metrics)
    return metrics
