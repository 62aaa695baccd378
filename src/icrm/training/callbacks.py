"""The callbacks icrm adds to a transformers training loop: logging, progress, interrupts and whole-run loss.

Each is a small ``TrainerCallback`` that any ``Trainer`` takes (the reward
trainer, SFT, and TRL's DPO and GRPO trainers under icrm's progress bar).
"""

from __future__ import annotations

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import IntervalStrategy

from ..outputs import QUIET, console, progress_factory


class LogLastStep(TrainerCallback):
    """Log the last training step too, so that every curve (the loss and each term) ends where training did."""

    def on_step_end(self, args, state, control, **kwargs):
        if args.logging_strategy == IntervalStrategy.STEPS and state.global_step >= state.max_steps:
            control.should_log = True


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
