"""``icrm train``: :class:`~icrm.training.ICRMTrainer` on data files, with a command's file handling.

The rows are validated before anything is written; the run records its
resolved settings (``config.yaml``), its metrics and log (``metrics.json``) and
a plot of each loss term (``losses.png``) beside the checkpoint.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import yaml

from ..data import load_examples
from ..modeling import ModelSpec
from ..outputs import check_output, write_json
from ..training import TRAINABLE_FORMATS, ICRMConfig, ICRMTrainer
from .runs import run_directory, run_trainer


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
        result = run_trainer(trainer, work, resume)
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


def _plot_losses(history: list[dict], path: Path) -> None:
    """``losses.png``: each loss term against the training step (evaluations and the closing summary left out)."""
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
