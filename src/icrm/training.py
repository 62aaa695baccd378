"""Training: the ICRM reward trainer, its config, and the ``sft``/``train`` entry points.

:class:`RewardConfig` extends ``transformers.TrainingArguments`` (TRL's
config/trainer split), so gradient accumulation, bf16, accelerate/DeepSpeed/
FSDP, checkpointing and resume come from transformers. :class:`ICRMTrainer`
only overrides ``compute_loss`` (and evaluation's ``prediction_step``) to
combine the pure losses of :mod:`icrm.losses`:

    L = α·L_SFT + λ·L_ICRM + (1-λ)·L_BT      (or L_pt for pointwise data, L_PRM for prm methods)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments

from . import losses
from .data import (
    PairExample,
    PointExample,
    RewardCollator,
    RewardDataset,
    example_texts,
    flatten_responses,
    load_examples,
    tokenize_examples,
)
from .errors import TrainingStopped, UserError
from .generator import head_generation_weights
from .modeling import PRESETS, RewardModel, add_lora, build_causal_lm, load_causal_lm, model_kind, train_tokenizer
from .outputs import QUIET, console, progress, progress_factory, replace_path, write_json
from .steps import DEFAULT_SEPARATOR

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


class ConfigError(UserError):
    """An option value that cannot work."""


@dataclass
class RewardConfig(TrainingArguments):
    """Options of ``icrm train``, on top of ``transformers.TrainingArguments``."""

    method: str = field(default="icrm", metadata={"help": "bt, grm, icrm, icrm-nosft, prm or prm-icrm"})
    lambda_icrm: float | None = field(default=None, metadata={"help": "override the preset's consistency weight λ"})
    sft_weight: float | None = field(default=None, metadata={"help": "override the preset's SFT weight α"})
    sft_backbone_grad: float = field(default=1e-3, metadata={"help": "gradient scale of L_SFT into the backbone"})
    center_rewards_coefficient: float = 0.0
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
    max_length: int = 1024
    truncation: str = "left"
    step_separator: str = field(
        default=DEFAULT_SEPARATOR, metadata={"help": "joins the steps of stepwise rows (as in TRL's PRMConfig)"}
    )

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r} (choose from {', '.join(METHODS)})")
        lam = self.consistency_weight
        if not 0.0 <= lam <= 1.0:
            raise ConfigError(f"--lambda must be in [0, 1], got {lam}")
        if self.sft_coef < 0:
            raise ConfigError(f"--sft-weight must be >= 0, got {self.sft_coef}")
        if self.truncation not in ("left", "drop"):
            raise ConfigError(f"--truncation must be left or drop, got {self.truncation!r}")
        if self.max_length < 8:
            raise ConfigError(f"--max-length must be at least 8, got {self.max_length}")
        if self.generator_temperature is not None and self.generator_temperature <= 0:
            raise ConfigError(f"--generator-temperature must be > 0, got {self.generator_temperature}")
        if self.generator_top_p is not None and not 0.0 < self.generator_top_p <= 1.0:
            raise ConfigError(f"--generator-top-p must be in (0, 1], got {self.generator_top_p}")
        if not self.step_separator:
            raise ConfigError("--step-separator must not be empty")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"--head-dropout must be in [0, 1), got {self.head_dropout}")
        super().__post_init__()

    def generator_sampling(self, pointwise: bool) -> tuple[float, float]:
        """(temperature, top-p) of ``w_t``: the reference's 0.7/0.8 for graded data, else the plain distribution."""
        default = POINTWISE_SAMPLING if pointwise else (1.0, 1.0)
        temperature = default[0] if self.generator_temperature is None else self.generator_temperature
        top_p = default[1] if self.generator_top_p is None else self.generator_top_p
        return temperature, top_p

    @property
    def process_supervised(self) -> bool:
        return self.method in PROCESS_METHODS

    @property
    def consistency_weight(self) -> float:
        return METHODS[self.method][0] if self.lambda_icrm is None else self.lambda_icrm

    @property
    def sft_coef(self) -> float:
        return METHODS[self.method][1] if self.sft_weight is None else self.sft_weight


class ICRMTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is the ICRM objective."""

    loss_is_scaled_for_ga = False

    def __init__(self, model: RewardModel, args: RewardConfig, *rest, **kwargs):
        model.prepare_training_heads(
            sft=args.sft_coef > 0, self_generator=args.consistency_weight > 0 and args.generator == "self"
        )
        model.head_dropout.p = args.head_dropout
        super().__init__(model, args, *rest, **kwargs)
        self._terms: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args: RewardConfig = self.args
        rm: RewardModel = self.accelerator.unwrap_model(model)
        mask = inputs["attention_mask"]
        lam, alpha = args.consistency_weight, args.sft_coef
        pairwise = "margin" in inputs
        sft_positions = self._sft_positions(rm, inputs, pairwise) if alpha > 0 else None
        rewards, hidden, sft_logits = model(
            inputs["input_ids"], mask, lm_positions=sft_positions, lm_grad_scale=args.sft_backbone_grad
        )
        outcome = RewardModel.outcome(rewards, mask)
        terms: dict[str, torch.Tensor] = {}

        if pairwise:
            half = outcome.shape[0] // 2
            chosen, rejected = outcome[:half], outcome[half:]
            margin = inputs["margin"] if inputs["margin"].any() else None
            terms["bt"] = losses.bradley_terry(chosen, rejected, margin, args.center_rewards_coefficient)
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
        split = "train" if model.training else "eval"
        for name, value in terms.items():
            self._terms[split][name].append(float(value.detach()))
        return (loss, {"rewards": outcome}) if return_outputs else loss

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
        """transformers' length-grouped sampler, fed the lengths icrm already knows.

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
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(batch_size, lengths=dataset.lengths)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoint the full training state (LoRA unmerged) with safetensors.

        ``save_model`` (unlike transformers' fallback ``save_file``) handles
        tied embeddings, whose tensors share memory.
        """
        from safetensors.torch import save_model

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
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        for name, values in self._terms[split].items():
            if values:
                logs[f"{prefix}{name}"] = sum(values) / len(values)
        self._terms[split].clear()
        super().log(logs, start_time)


def pairwise_accuracy(eval_pred) -> dict[str, float]:
    logits = torch.as_tensor(eval_pred.predictions)
    if logits.ndim == 2:
        chosen, rejected = logits[:, 0], logits[:, 1]
        acc = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    else:
        acc = ((logits > 0).float() == torch.as_tensor(eval_pred.label_ids)).float()
    return {"accuracy": float(acc.mean())}


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


def build_reward_model(spec: ModelSpec, texts, seed: int) -> RewardModel:
    """A RewardModel from ``tiny|small``, an icrm checkpoint, an HF RM, or a causal LM.

    Seeded first, so a new value head (and LoRA) starts the same in every run
    and every process.
    """
    from transformers import set_seed

    set_seed(seed)
    if spec.name in PRESETS:
        tokenizer = train_tokenizer(texts, PRESETS[spec.name]["vocab_size"])
        rm = RewardModel.from_causal_lm(build_causal_lm(spec.name, tokenizer, seed), tokenizer)
    else:
        rm = RewardModel.from_pretrained(spec.name, spec.trust_remote_code, spec.allow_pickle)
    if spec.lora_r > 0:
        add_lora(rm, spec.lora_r, spec.lora_alpha)
    return rm


def _dataset(loaded, tokenizer, max_length: int, truncation: str, label: str):
    examples = loaded.examples
    with progress(f"tokenizing {label}", len(examples)) as advance:
        items, kept, stats = tokenize_examples(examples, tokenizer, max_length, truncation, advance)
    if not items:
        raise ConfigError(f"{loaded.source}: every row is longer than --max-length {max_length}")
    return RewardDataset([examples[i] for i in kept], items), stats


def train_reward_model(
    data: str,
    output: str,
    config: RewardConfig,
    spec: ModelSpec,
    eval_data: str | None = None,
    skip_invalid: bool = False,
    resume: bool = False,
) -> dict:
    """``icrm train``: validate everything, train, and write the checkpoint atomically.

    Training runs in ``.<output>.partial`` next to the output; an interrupted
    or crashed run leaves it there for ``resume=True`` to continue from its
    last checkpoint (``--save-steps``).
    """
    step_separator = config.step_separator
    train_loaded = load_examples(
        data, expect=("pairwise", "pointwise", "stepwise"), skip_invalid=skip_invalid, step_separator=step_separator
    )
    if config.process_supervised and train_loaded.format != "stepwise":
        raise ConfigError(
            f"--method {config.method} needs stepwise data (prompt, completions, labels), got {train_loaded.format}"
        )
    eval_loaded = None
    if eval_data:
        eval_loaded = load_examples(
            eval_data, expect=(train_loaded.format,), skip_invalid=skip_invalid, step_separator=step_separator
        )
    config.generator_temperature, config.generator_top_p = config.generator_sampling(train_loaded.format != "pairwise")
    generator = config.generator
    uses_cache = config.consistency_weight > 0 and generator not in GENERATOR_SOURCES
    if uses_cache:
        model_kind(generator)  # fail early on a path that is not a model

    rm = build_reward_model(spec, example_texts(train_loaded.examples), config.seed)
    train_set, train_stats = _dataset(train_loaded, rm.tokenizer, config.max_length, config.truncation, "train")
    eval_set = None
    if eval_loaded is not None:
        eval_set, _ = _dataset(eval_loaded, rm.tokenizer, config.max_length, config.truncation, "eval")

    cache_hit = None
    if uses_cache:
        from .generator import cached_generation_weights

        with config.main_process_first(desc="generator pass"):  # rank 0 computes, the others read the cache
            for dataset in filter(None, (train_set, eval_set)):
                dataset.weights, hit = cached_generation_weights(
                    generator,
                    rm.tokenizer,
                    dataset.all_sequences(),
                    cache_dir=Path(config.cache_dir) if config.cache_dir else None,
                    batch_size=config.generator_batch_size,
                    device=config.device,
                    trust_remote_code=spec.trust_remote_code,
                    allow_pickle=spec.allow_pickle,
                    progress_factory=progress_factory,
                    temperature=config.generator_temperature,
                    top_p=config.generator_top_p,
                )
                cache_hit = hit if cache_hit is None else cache_hit

    resolved = _resolved_config(config, spec, data, eval_data)
    with run_directory(output, resume, resolved, config) as work:
        config.output_dir = str(work / "trainer")
        trainer = ICRMTrainer(
            model=rm,
            args=config,
            train_dataset=train_set,
            eval_dataset=eval_set,
            data_collator=RewardCollator(rm.tokenizer.pad_token_id),
            compute_metrics=pairwise_accuracy,
        )
        result = _train(trainer, work, resume)
        metrics = {"train_loss": result.training_loss, "steps": result.global_step}
        if eval_set is not None:
            evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
            metrics.update(evals[-1] if evals else trainer.evaluate())
        # Collectives (under ZeRO-3 each rank holds shards): every rank takes part.
        rm.reward_stats = _reward_stats(rm, train_set)
        full_state = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            rm.training_config = resolved
            rm.save_pretrained(work, full_state)
            metrics.update(
                format=train_loaded.format,
                train_examples=len(train_set),
                skipped_rows=train_loaded.skipped,
                truncated=train_stats.truncated,
                dropped_over_length=train_stats.dropped,
                generator_cache={None: "unused", True: "hit", False: "miss"}[cache_hit],
                log_history=trainer.state.log_history,
            )
            write_json(work / "metrics.json", metrics)
            (work / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
            _plot_losses(trainer.state.log_history, work / "losses.png")
    return metrics


@contextlib.contextmanager
def run_directory(output: str, resume: bool, resolved: dict, args: TrainingArguments):
    """The working directory of a run, renamed onto ``output`` when it succeeds.

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


def _train(trainer: Trainer, work: Path, resume: bool):
    """``trainer.train()`` with resume, Ctrl-C checkpointing and rich progress."""
    from transformers.trainer_utils import get_last_checkpoint

    _use_rich_progress(trainer)
    interrupt = GracefulInterrupt()
    trainer.add_callback(interrupt)
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
    return result


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


def _use_rich_progress(trainer: Trainer) -> None:
    """Replace transformers' tqdm bar and log printer with ours (nothing under --quiet)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not QUIET["value"]:
        trainer.add_callback(RichProgress())


@torch.no_grad()
def _reward_stats(rm: RewardModel, dataset: RewardDataset) -> dict[str, float]:
    """Mean/std of training outcome rewards, stored for ``score --normalize``."""
    from .evaluation import reward_normalizer

    rewards = rm.score(*flatten_responses(dataset.examples))
    mean, std = reward_normalizer(rewards)
    return {"mean": mean, "std": std, "n": len(rewards)}


def _resolved_config(config: RewardConfig, spec: ModelSpec, data: str, eval_data: str | None) -> dict:
    return {
        "data": data,
        "eval_data": eval_data,
        "model": asdict(spec),
        "method": config.method,
        "lambda": config.consistency_weight,
        "sft_weight": config.sft_coef,
        "sft_backbone_grad": config.sft_backbone_grad,
        "center_rewards_coefficient": config.center_rewards_coefficient,
        "generator": config.generator,
        "generator_temperature": config.generator_temperature,
        "generator_top_p": config.generator_top_p,
        "head_dropout": config.head_dropout,
        "max_length": config.max_length,
        "truncation": config.truncation,
        "step_separator": config.step_separator,
        "learning_rate": config.learning_rate,
        "epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "lr_scheduler": str(config.lr_scheduler_type),
        "warmup": config.warmup_steps,
        "seed": config.seed,
    }


def _plot_losses(history: list[dict], path: Path) -> None:
    from .evaluation import plot_loss_curves

    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in history:
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
) -> dict:
    """``icrm sft``: train a causal LM on the chosen, rejected or all responses.

    The result is a plain transformers causal-LM directory: a generator for
    ``--generator`` (train it on ``both``), a backbone for ``--model`` and a
    policy for sampling and DPO (train it on ``chosen``).
    """
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
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules="all-linear"))
    with progress("tokenizing", len(chosen)) as advance:
        items, kept, stats = tokenize_examples(chosen, tokenizer, max_length, truncation, advance)
    if not items:
        raise ConfigError(f"{data}: every row is longer than --max-length {max_length}")
    dataset = RewardDataset([chosen[i] for i in kept], items)

    resolved = {"data": data, "responses": responses, "model": asdict(spec), "max_length": max_length, "seed": args.seed,
                "learning_rate": args.learning_rate, "epochs": args.num_train_epochs, "max_steps": args.max_steps}
    with run_directory(output, resume, resolved, args) as work:
        args.output_dir = str(work / "trainer")
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=SFTCollator(tokenizer.pad_token_id))
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
