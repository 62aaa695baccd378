"""Online RL of a policy against a reward model, with TRL's ``GRPOTrainer``.

For every prompt the policy samples ``num_generations`` completions, the
reward model scores them, and GRPO raises the probability of the completions
that score above their group's mean. The output is a plain causal-LM
directory, like DPO's, so ``sample``, ``compare-policies`` and ``dpo`` work
on it.

The reward model goes to TRL as its checkpoint *path*, the way TRL users pass
one: TRL loads it with ``AutoModelForSequenceClassification``, renders each
prompt + completion through the reward model's own chat template, tokenizes
without special tokens, pads on the right and reads the logit at the last
non-padding token. For an icrm checkpoint (chat template saved, pad token
distinct from EOS) that is exactly icrm's outcome reward of the same
conversation, ``RewardModel.score`` -- a test checks it on TRL's own reward
code. Two caveats: with ``--bf16`` TRL scores under bf16 autocast, so rewards
match only to about two digits; and a foreign classifier whose pad token
equals EOS is read one token early by transformers (icrm pads with a token of
its own for that reason), so use icrm checkpoints as the judge.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..modeling import lora_config
from .prompts import Prompt
from .settings import GRPOSettings
from .trainers import train_with_trl


def check_group_size(training: dict, num_generations: int) -> None:
    """Batch size x gradient accumulation x processes must be a multiple of ``num_generations`` (TRL's rule)."""
    from accelerate import PartialState

    per_process = training["per_device_train_batch_size"] * training["gradient_accumulation_steps"]
    group = per_process * PartialState().num_processes
    if group % num_generations:
        raise UserError(
            f"--batch-size x --grad-accum x processes ({group}) must be a multiple of --num-generations "
            f"({num_generations}): every prompt's completions are scored as one group"
        )


def check_reward_model(path: str, allow_pickle: bool) -> None:
    """A reward model directory TRL can load as a sequence classifier, or a one-line error."""
    from ..modeling import model_kind, require_safetensors

    if not Path(path).is_dir():
        raise UserError(f"--reward-model {path}: no such directory")
    if model_kind(path) == "causal":
        raise UserError(f"--reward-model {path}: not a reward model (no sequence-classification head)")
    require_safetensors(path, allow_pickle)


def run_grpo(model, tokenizer, prompts: list[Prompt], reward_model: str, training: dict, settings: GRPOSettings,
             directory: Path):
    """Train ``model`` with GRPO on ``prompts`` judged by ``reward_model``; save it (LoRA merged) in ``directory``.

    ``training`` holds ``TrainingArguments`` fields (see
    :meth:`icrm.training.TrainingOptions.trainer_kwargs`); its batch size counts
    completions (:func:`check_group_size`). Returns the trainer and
    ``train()``'s result.
    """
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    dataset = datasets.Dataset.from_list([{"prompt": p.messages} for p in prompts])
    peft_config = lora_config(settings.lora_r, settings.lora_alpha)
    config = {
        **training,
        "num_generations": settings.num_generations,
        "max_completion_length": settings.max_completion_length,
        "beta": settings.beta,
        "loss_type": settings.loss_type,
        "epsilon": settings.epsilon,
        "scale_rewards": settings.scale_rewards,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "activation_checkpointing": settings.gradient_checkpointing,
        "trust_remote_code": settings.trust_remote_code,
    }
    return train_with_trl(GRPOTrainer, GRPOConfig, "GRPO", config, directory, model, tokenizer, peft_config,
                          reward_funcs=reward_model, train_dataset=dataset)


def plot_rewards(entries: list[dict], path: Path) -> Path:
    """Mean reward of each step's completions, with a band of one within-batch std."""
    from matplotlib.ticker import MaxNLocator

    from ..plots import new_figure, save_png

    steps = [e["step"] for e in entries]
    mean = [e["reward"] for e in entries]
    std = [e.get("reward_std", 0.0) for e in entries]
    figure = new_figure()
    ax = figure.add_subplot()
    ax.plot(steps, mean, marker="o" if len(steps) < 30 else None, color="tab:blue", label="mean reward")
    ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                    color="tab:blue", alpha=0.2, label="± 1 std (within the step)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("reward-model score")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("GRPO: reward of the sampled completions")
    return save_png(figure, path)
