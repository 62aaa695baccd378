"""``icrm compare-policies``: sample from several policies on the same prompts and judge every response."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path

from ..errors import UserError
from ..outputs import check_output, write_json
from ..policy import (
    TRUE_REWARD,
    Samples,
    SamplingConfig,
    generate_samples,
    load_prompts,
    outcome_rates,
    synthetic_task_of,
    true_reward_judge,
)


def compare_policies(
    policies: list[str],
    prompts_source: str,
    judge: str,
    config: SamplingConfig,
    *,
    task: str | None = None,
    output: str | Path | None = None,
    batch_size: int = 16,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict:
    """``icrm compare-policies``: sample from each policy and judge every response.

    The judge is a reward model directory, or ``true-reward`` for prompts of
    an embedded synthetic task (``--task``, or found from ``task.json`` next
    to the prompts file). Every policy gets the same prompts and seed. Empty
    responses are kept and judged (saying nothing is the policy's answer).
    Reports, per policy, mean/std reward, mean length in words, and
    win/tie/lose rates vs the first policy. An existing ``output`` is replaced
    only with ``overwrite``.
    """
    if output is not None:
        check_output(output, None, overwrite)
    if not policies:
        raise UserError("--policies needs at least one policy directory")
    config.validate()
    prompts = load_prompts(prompts_source)
    judge_fn = None
    if judge == TRUE_REWARD:
        task = task or synthetic_task_of(prompts_source)
        if task is None:
            raise UserError(
                "--judge true-reward needs --task, or prompts from `icrm data synth` (with task.json beside them)"
            )
        judge_fn = true_reward_judge(task)
    else:
        from ..modeling import model_kind

        if not Path(judge).exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", judge):
            raise UserError(f"--judge {judge!r}: no such reward model directory (or use --judge {TRUE_REWARD})")
        model_kind(judge)  # a directory that is not a model fails before any sampling

    sampled = [generate_samples(p, prompts, config, trust_remote_code, allow_pickle) for p in policies]
    flat_prompts = [p.messages for p in prompts for _ in range(config.n)]
    if judge_fn is None:
        from ..evaluation import load_reward_model, score_responses

        rm = load_reward_model(judge, trust_remote_code, allow_pickle)
        rewards = [score_responses(rm, flat_prompts, _flatten(s), batch_size) for s in sampled]
    else:
        rewards = [[judge_fn(p, r) for p, r in zip(flat_prompts, _flatten(s))] for s in sampled]

    results = []
    for i, (path, samples, scores) in enumerate(zip(policies, sampled, rewards)):
        mean, std = _mean_std(scores)
        words = [len(text.split()) for text in _flatten(samples)]
        entry = {
            "policy": path,
            "mean_reward": mean,
            "std_reward": std,
            "mean_words": sum(words) / len(words),
            "samples": len(scores),
            "truncated": samples.truncated,
            "is_baseline": i == 0,  # win/tie/lose are against it, so its own read 0/1/0
            **outcome_rates(scores, rewards[0]),
        }
        results.append(entry)
    report = {
        "judge": judge,
        "task": task,
        "prompts": len(prompts),
        "samples_per_prompt": config.n,
        "baseline": policies[0],
        "sampling": asdict(config),
        "policies": results,
    }
    if output is not None:
        write_json(output, report)
    return report


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _flatten(samples: Samples) -> list[str]:
    return [text for texts in samples.texts for text in texts]
