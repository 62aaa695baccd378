"""``icrm grpo``: train a policy online against a reward model and write it as a plain causal-LM directory."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..errors import UserError
from ..outputs import check_output, library_bars_off, staged_directory
from ..policy import (
    GRPOSettings,
    check_group_size,
    check_reward_model,
    load_prompts,
    plot_rewards,
    prompt_key,
    prompt_keys,
    run_grpo,
    training_summary,
    write_run_record,
)


def train_grpo(policy: str, reward_model: str, prompts: str, output: str | Path, training: dict,
               settings: GRPOSettings, overwrite: bool = False) -> dict:
    """``icrm grpo``: GRPO with TRL's ``GRPOTrainer``; writes a plain causal-LM directory.

    ``training`` holds ``TrainingArguments`` fields (see
    :meth:`icrm.training.TrainingOptions.trainer_kwargs`); its batch size counts
    completions, so batch size x gradient accumulation must be a multiple of
    ``num_generations`` (TRL's rule). Prompts whose :func:`~icrm.policy.prompt_key`
    occurs in ``settings.exclude_prompts`` are left out, as in ``dpo-pairs``.
    With LoRA the adapter is merged before saving. ``output`` may be an
    earlier ``grpo`` output; anything else there needs ``overwrite``
    (:func:`icrm.outputs.check_output`).
    """
    from ..modeling import load_causal_lm

    check_output(output, "grpo", overwrite)
    settings.validate()
    check_group_size(training, settings.num_generations)
    check_reward_model(reward_model, settings.allow_pickle)
    loaded = load_prompts(prompts)
    exclude = prompt_keys(settings.exclude_prompts)
    kept = [p for p in loaded if prompt_key(p.messages) not in exclude]
    if not kept:
        raise UserError(f"{prompts}: all {len(loaded)} prompts occur in {settings.exclude_prompts}; nothing to train on")
    model, tokenizer = load_causal_lm(policy, settings.trust_remote_code, settings.allow_pickle)

    with staged_directory(output, "grpo", overwrite) as staging, library_bars_off():
        trainer, result = run_grpo(model, tokenizer, kept, reward_model, training, settings, staging)
        history = trainer.state.log_history
        rewards = [entry for entry in history if "reward" in entry]
        config = {"policy": policy, "reward_model": reward_model, "prompts": prompts, **asdict(settings),
                  **training_summary(training)}
        metrics = {
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "prompts": len(kept),
            "overlap": len(loaded) - len(kept),
            "num_generations": settings.num_generations,
            "first_reward": rewards[0]["reward"] if rewards else None,
            "final_reward": rewards[-1]["reward"] if rewards else None,
            "final_reward_std": rewards[-1].get("reward_std") if rewards else None,
            "config": config,
            "log_history": history,
        }
        write_run_record(staging, config, metrics)
        if rewards:
            plot_rewards(rewards, staging / "rewards.png")
    return metrics
