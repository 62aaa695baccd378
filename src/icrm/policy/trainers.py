"""Training a policy with a TRL trainer, the way DPO and GRPO share.

TRL's own option checks become one-line errors, the trainer's checkpoints go
to ``staging/trainer`` and are removed once the policy is saved, the policy
(LoRA merged) and its tokenizer are saved to ``staging``, and the run's record
is ``metrics.json`` and ``config.yaml`` beside them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..outputs import write_json


def train_with_trl(trainer_cls, config_cls, what: str, config: dict, staging: Path, model, tokenizer, peft_config,
                   **trainer_args):
    """Build a TRL ``config_cls`` and ``trainer_cls``, train under icrm's progress bar, save the policy.

    The saved policy loads with ``AutoModelForCausalLM.from_pretrained`` and can
    be sampled, judged or trained again like the input. Returns the trainer and
    ``train()``'s result.
    """
    from ..training import use_rich_progress

    try:
        args = config_cls(**config, output_dir=str(staging / "trainer"))
    except ValueError as err:
        raise UserError(f"invalid {what} option: {err}") from err
    trainer = trainer_cls(model=model, args=args, processing_class=tokenizer, peft_config=peft_config, **trainer_args)
    use_rich_progress(trainer)
    result = trainer.train()
    trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    trained.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    return trainer, result


def training_summary(training: dict) -> dict:
    """The ``TrainingArguments`` fields a policy run's config.yaml records, under their names."""
    kept = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "seed")
    return {k: training[k] for k in kept if k in training}


def write_run_record(directory: Path, config: dict, metrics: dict) -> None:
    """A policy run's ``metrics.json`` and ``config.yaml``."""
    import yaml

    write_json(directory / "metrics.json", metrics)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
