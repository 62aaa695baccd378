"""The policy stage: does a policy trained on ICRM-ranked pairs beat one trained on BT-ranked pairs?

An SFT policy samples candidates, each reward model ranks them into DPO pairs, one DPO policy is
trained per ranking, and the task's true reward judges the three policies.
"""

from __future__ import annotations

from pathlib import Path

from ...outputs import note
from ...training import TrainingOptions
from .settings import DemoSettings
from .training import sft


def dpo_stage(root: Path, settings: DemoSettings) -> dict:
    """SFT policy -> 4 samples per training prompt -> BT / ICRM pairs -> DPO each -> true-reward comparison.

    The README's policy-side settings (benchmarks/DPO.md has the multi-seed
    version). Held-out prompts are the first ``dpo_eval_prompts`` test
    prompts; training prompts that also occur there are not sampled.
    """
    from ...outputs import write_jsonl
    from ...policy import DPOSettings, SamplingConfig, load_prompts, prompt_key, prompt_value
    from ..compare_policies import compare_policies
    from ..dpo import train_dpo
    from ..dpo_pairs import build_dpo_pairs_file
    from ..sample import sample_to_file

    data, work = root / "data" / "noisy", root / "dpo"
    work.mkdir()
    policy = root / "models" / "noisy-policy"
    note("[bold]noisy[/bold]: SFT policy (chosen responses)")
    sft(data / "train.jsonl", policy, settings, "chosen")
    heldout = load_prompts(data / "prompts.jsonl")[: settings.dpo_eval_prompts]
    held_keys = {prompt_key(p.messages) for p in heldout}
    train = [p for p in load_prompts(data / "train.jsonl") if prompt_key(p.messages) not in held_keys]
    write_jsonl(work / "heldout_prompts.jsonl", [{"prompt": prompt_value(p.messages)} for p in heldout])
    write_jsonl(work / "train_prompts.jsonl", [{"prompt": prompt_value(p.messages)} for p in train])
    sampling = SamplingConfig(n=4, max_new_tokens=40, seed=settings.seed, batch_size=64)

    note("[bold]noisy[/bold]: sampling from the SFT policy")
    sample_to_file(str(policy), str(work / "train_prompts.jsonl"), work / "candidates.jsonl", sampling)
    pairs, policies = {}, [str(policy)]
    for method in ("BT", "ICRM"):
        note(f"[bold]noisy[/bold]: DPO on {method}-ranked pairs")
        pairs_file = work / f"pairs-{method.lower()}.jsonl"
        pairs[method] = build_dpo_pairs_file(
            str(root / "models" / f"noisy-{method.lower()}"), str(work / "candidates.jsonl"), pairs_file,
            exclude_prompts=str(work / "heldout_prompts.jsonl"),
        )["pairs"]
        training = TrainingOptions(
            num_train_epochs=2, per_device_train_batch_size=16, learning_rate=1e-4, seed=settings.seed, logging_steps=5
        ).trainer_kwargs()
        output = root / "models" / f"noisy-dpo-{method.lower()}"
        train_dpo(str(policy), str(pairs_file), output, training, DPOSettings(max_length=settings.max_length))
        policies.append(str(output))
    note("[bold]noisy[/bold]: comparing the policies by true reward")
    compared = compare_policies(policies, str(work / "heldout_prompts.jsonl"), "true-reward", sampling, task="noisy")
    names = ["SFT", "DPO-BT", "DPO-ICRM"]
    keys = ("mean_reward", "std_reward", "mean_words", "win_rate", "tie_rate", "lose_rate")
    return {
        "prompts": compared["prompts"],
        "samples_per_prompt": compared["samples_per_prompt"],
        "pairs": pairs,
        "policies": {name: {k: p[k] for k in keys} for name, p in zip(names, compared["policies"])},
    }

