"""What the training commands share: the model they start from, their TrainingArguments, and a resumable run.

``icrm train`` and ``icrm sft`` (and the demo and benchmarks that call them)
set the same ``TrainingArguments`` fields from their options, train in a
working directory next to the output that is renamed into place when the run
succeeds, and resume from its last checkpoint after a crash or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from ..errors import TrainingStopped, UserError
from ..modeling import lora_config
from ..outputs import mark_output, replace_path, write_json
from ..training import ConfigError, GracefulInterrupt, WholeRunLoss, use_rich_progress


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


def run_trainer(trainer: Trainer, work: Path, resume: bool):
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
