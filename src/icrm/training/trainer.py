"""``ICRMTrainer``: TRL's ``RewardTrainer``, trained with the ICRM objective, as one ``transformers.Trainer``.

A TRL user changes two imports. Gradient accumulation, bf16,
accelerate/DeepSpeed/FSDP, checkpointing and resume come from transformers;
the trainer turns models and datasets into icrm's (:mod:`.inputs`), runs the
generator pass, optimizes :func:`~.objective.batch_objective`, logs each loss
term the way TRL logs its own, and saves icrm's checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import IntervalStrategy

from ..data import LoadedData, RewardDataset
from ..errors import TrainingStopped
from ..modeling import RewardModel, add_peft, model_kind
from ..outputs import progress_factory
from ..threads import apply_default_threads
from .callbacks import LogLastStep, use_rich_progress
from .config import GENERATOR_SOURCES, ConfigError, ICRMConfig
from .inputs import (
    data_format,
    map_eval,
    model_name,
    reward_datasets,
    reward_model_of,
    tokenize_dataset,
    validated_examples,
)
from .objective import batch_objective
from .sampler import SeededLengthGroupedSampler

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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
        name = model_name(model)
        if args is None:
            args = ICRMConfig(f"{name.rstrip('/').split('/')[-1]}-ICRM")
        elif not isinstance(args, ICRMConfig):
            raise TypeError(f"args must be an ICRMConfig (it takes every RewardConfig field), got {type(args).__name__}")
        if train_dataset is None:
            raise ConfigError("train_dataset is required")
        train_data = validated_examples(train_dataset, "train_dataset", args.step_separator)
        fmt = data_format(train_data)
        args.check_format(fmt)
        eval_data = map_eval(eval_dataset, lambda data, name: validated_examples(data, name, args.step_separator, fmt))
        args.resolve_sampling(fmt)
        if args.consistency_weight > 0 and args.generator not in GENERATOR_SOURCES:
            model_kind(args.generator)  # fail early on a path that is not a model

        set_seed(args.seed)  # a new value head (and LoRA) starts the same in every run and process
        rm = reward_model_of(model, args, processing_class, train_data)
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

        self.data_format = fmt
        self.data_stats: dict[str, dict] = {}
        self.generator_cache = "unused"  # or "hit"/"miss": where the generator weights came from
        tokenize = lambda data, label: self._tokenize(data, rm.tokenizer, args, label)
        super().__init__(
            model=rm,
            args=args,
            data_collator=data_collator
            or rm.collator(args.pad_to_multiple_of),
            train_dataset=tokenize(train_data, "train_dataset"),
            eval_dataset=map_eval(eval_data, tokenize),
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
        """Tokenized rows (see :func:`tokenize_dataset`), counted in ``data_stats``; tokenized ones pass through."""
        if isinstance(data, RewardDataset):
            return data
        dataset, self.data_stats[label] = tokenize_dataset(data, tokenizer, args, label)
        return dataset

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
                    group_size=dataset.group_size,
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
        self._attach_generator_weights(reward_datasets(self.train_dataset, self.eval_dataset))
        self._records["train"].clear()
        self._logged_step = 0
        output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        # Collectives (under ZeRO-3 each rank holds shards): every rank takes part.
        self.reward_model.reward_stats = reward_stats(self.reward_model, self.train_dataset)
        return output

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """transformers' ``evaluate``; a dataset given here is validated and tokenized like the training data.

        It leaves torch's random state as it found it (a dataloader draws its
        base seed from it), so evaluating during training does not change
        what the training learns.
        """
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            prepare = lambda data, label: self._tokenize(
                validated_examples(data, label, self.args.step_separator, self.data_format),
                self.reward_model.tokenizer, self.args, label,
            )
            eval_dataset = map_eval(eval_dataset, prepare)
        self._attach_generator_weights(reward_datasets(self.eval_dataset, eval_dataset))
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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The ICRM objective of a batch (:func:`batch_objective`), stopped when not finite, its terms recorded.

        Each term is logged (``bt``/``bce``/``prm``, ``icrm``, ``sft``,
        ``accuracy``), with what TRL's ``RewardTrainer`` logs (see :meth:`log`).
        """
        objective = batch_objective(model, self.accelerator.unwrap_model(model), inputs, self.args)
        loss, terms, outcome = objective.loss, objective.terms, objective.outcome
        if model.training and not torch.isfinite(loss):
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise TrainingStopped(
                f"non-finite loss at step {self.state.global_step + 1} ({shown}); try a lower --lr. "
                f"The last good checkpoint (if --save-steps was set) is in {Path(self.args.output_dir).parent}",
                1,
            )
        logged = {"loss": loss, **terms, "min_reward": outcome.min(), "mean_reward": outcome.mean(),
                  "max_reward": outcome.max()}
        rows = outcome.shape[0]
        if objective.pairwise:
            rows //= 2
            logged["margin"] = (outcome[:rows] - outcome[rows:]).mean()
        self._record(model.training, rows, inputs["attention_mask"].sum(), logged)
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

    def _get_train_sampler(self, train_dataset=None):
        """transformers' length-grouped sampler, fed the lengths icrm already knows and seeded per epoch.

        With ``train_sampling_strategy="group_by_length"`` batches hold rows of
        similar length, which cuts padding; the default
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


def pairwise_accuracy(eval_pred) -> dict[str, float]:
    """``compute_metrics``: chosen above rejected (ties count half), or the sign of R matching the label."""
    logits = torch.as_tensor(eval_pred.predictions)
    if logits.ndim == 2:
        chosen, rejected = logits[:, 0], logits[:, 1]
        acc = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    else:
        acc = ((logits > 0).float() == torch.as_tensor(eval_pred.label_ids)).float()
    return {"accuracy": float(acc.double().mean())}  # float64, so k/n is exact (as in icrm eval)


@torch.no_grad()
def reward_stats(rm: RewardModel, dataset: RewardDataset) -> dict[str, float]:
    """Mean/std of the trained model's outcome rewards on the training rows, stored for ``score --normalize``.

    The rows are scored as tokenized for training (no second tokenization),
    packed (a pair's prompt once) when training was.
    """
    from ..evaluation import reward_normalizer

    rewards = [float(r[-1]) for r in rm.sequence_rewards(dataset.all_sequences(), group_size=dataset.group_size)]
    mean, std = reward_normalizer(rewards)
    return {"mean": mean, "std": std, "n": len(rewards)}
