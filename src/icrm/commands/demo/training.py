"""The models every demo stage trains: a tiny SFT generator (or policy) and reward models started from it.

Each stage writes an embedded task, SFT-trains a generator on its responses and trains reward
models from that generator, which also gives ICRM its consistency weights; the stages differ
only in the task, the responses and the methods.
"""

from __future__ import annotations

from pathlib import Path

from ...modeling import ModelSpec
from ...outputs import note
from ...training import ICRMConfig, TrainingOptions
from ..data import write_task
from ..sft import train_sft
from ..train import train_reward_model
from .settings import DemoSettings


def _train_args(settings: DemoSettings, epochs: float) -> dict:
    return TrainingOptions(
        num_train_epochs=epochs, per_device_train_batch_size=settings.batch_size, learning_rate=settings.lr,
        seed=settings.seed, warmup_steps=0.03, logging_steps=5,
    ).trainer_kwargs()


def sft(data: Path, output: Path, settings: DemoSettings, responses: str, epochs: float | None = None) -> None:
    """A tiny causal LM SFT-trained on ``responses``: ``both``/``all`` for a generator, ``chosen`` for a policy."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(output), **_train_args(settings, epochs or settings.sft_epochs))
    train_sft(str(data), str(output), args, ModelSpec("tiny"), max_length=settings.max_length, responses=responses)


def reward_model(
    data: Path, output: Path, generator: Path, preset: str, settings: DemoSettings, lam: float | None = None,
    epochs: float | None = None,
) -> dict:
    """A reward model trained from the generator (which also gives the consistency weights)."""
    config = ICRMConfig(
        output_dir=str(output),
        method=preset,
        lambda_=lam,
        generator=str(generator),
        max_length=settings.max_length,
        activation_checkpointing=False,
        **_train_args(settings, epochs or settings.epochs),
    )
    return train_reward_model(str(data), str(output), config, ModelSpec(str(generator)))



def task_and_generator(
    task: str, root: Path, settings: DemoSettings, trained_on: str, responses: str, epochs: float | None = None,
    **sizes,
) -> tuple[Path, Path]:
    """Write ``task`` under ``root/data`` (``sizes`` as :func:`write_task` takes them) and SFT its generator.

    Returns the task's folder and the generator's; ``trained_on`` says in the progress note which
    responses the generator learnt.
    """
    data = root / "data" / task
    write_task(task, data, seed=settings.seed, **sizes)
    generator = root / "models" / f"{task}-sft"
    note(f"[bold]{task}[/bold]: SFT generator ({trained_on})")
    sft(data / "train.jsonl", generator, settings, responses, epochs)
    return data, generator
