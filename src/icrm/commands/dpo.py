"""``icrm dpo``: train a policy with DPO on preference pairs and write it as a plain causal-LM directory."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..data import load_examples
from ..outputs import check_output, library_bars_off, staged_directory
from ..policy import DPOSettings, plot_dpo_loss, run_dpo, training_summary, write_run_record


def train_dpo(
    policy: str, data: str, output: str | Path, training: dict, settings: DPOSettings, overwrite: bool = False
) -> dict:
    """``icrm dpo``: DPO with TRL's ``DPOTrainer``; writes a plain causal-LM directory.

    ``training`` holds ``TrainingArguments`` fields (see
    :meth:`icrm.training.TrainingOptions.trainer_kwargs`). The directory holds the policy
    (LoRA merged, so it loads with ``AutoModelForCausalLM.from_pretrained``),
    ``metrics.json``, ``config.yaml`` and ``losses.png``. ``output`` may be an
    earlier ``dpo`` output; anything else there needs ``overwrite``
    (:func:`icrm.outputs.check_output`).
    """
    from ..modeling import load_causal_lm

    check_output(output, "dpo", overwrite)
    settings.validate()
    loaded = load_examples(data, expect=("pairwise",), skip_invalid=settings.skip_invalid)
    model, tokenizer = load_causal_lm(policy, settings.trust_remote_code, settings.allow_pickle)

    with staged_directory(output, "dpo", overwrite) as staging, library_bars_off():
        trainer, result = run_dpo(model, tokenizer, loaded.examples, training, settings, staging)
        history = trainer.state.log_history
        last = next((entry for entry in reversed(history) if "rewards/accuracies" in entry), {})
        config = {"policy": policy, "data": data, **asdict(settings), **training_summary(training)}
        metrics = {
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "pairs": len(loaded.examples),
            "dropped_over_length": len(loaded.examples) - len(trainer.train_dataset),
            "skipped_rows": loaded.skipped,
            "beta": settings.beta,
            "final_reward_accuracy": last.get("rewards/accuracies"),
            "final_reward_margin": last.get("rewards/margins"),
            "config": config,
            "log_history": history,
        }
        write_run_record(staging, config, metrics)
        plot_dpo_loss(history, staging / "losses.png")
    return metrics
