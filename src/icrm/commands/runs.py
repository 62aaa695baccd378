"""What the training commands share: the model they start from and a resumable run.

``icrm train`` and ``icrm sft`` (and the demo and benchmarks that call them)
set the same ``TrainingArguments`` fields from their options
(:class:`icrm.training.TrainingOptions`), train in a
working directory next to the output that is renamed into place when the run
succeeds, and resume from its last checkpoint after a crash or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from pathlib import Path

from transformers import Trainer, TrainingArguments

from ..errors import TrainingStopped, UserError
from ..outputs import mark_output, replace_path, write_json
from ..training import ConfigError, GracefulInterrupt, WholeRunLoss, use_rich_progress


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
