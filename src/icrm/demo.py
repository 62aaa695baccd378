"""``icrm demo``: the embedded end-to-end run, on a CPU, with no downloads.

It generates the noisy-preference task (and, in full mode, the spurious-
feature probes), trains a tiny generator by SFT on the chosen responses,
trains BT, GRM and ICRM reward models initialised from it (the generator
supplies the consistency weights), evaluates every model on every split,
trains pointwise verifiers on step-checked arithmetic and runs best-of-N with
them, then writes ``report.md``, PNG plots and ``metrics.json``. Full mode
also closes the policy loop on the noisy task: samples from the SFT policy,
DPO pairs ranked by the BT and by the ICRM reward model, one DPO policy per
ranking, and the three policies judged by the task's true reward.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .evaluation import plot_accuracy_bars, plot_bon_comparison, plot_loss_curves
from .outputs import note, staged_directory, write_json
from .scoring import best_of_n, evaluate_pairs
from .synthetic import BAD_WORDS, GOOD_WORDS, write_task
from .training import ICRMConfig, ModelSpec, train_reward_model, train_sft, trainer_arguments


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and hyper-parameters of one demo mode (tiny Llama, CPU)."""

    n_train: int = 300
    n_test: int = 500
    epochs: float = 3.0
    sft_epochs: float = 20.0  # a generator that has learnt the filler process (BENCHMARKS.md)
    batch_size: int = 16
    lr: float = 1e-3
    max_length: int = 128
    probes: bool = True
    arithmetic_train: int = 1000
    arithmetic_bon: int = 300
    dpo: bool = True  # the policy stage (sample -> dpo-pairs -> dpo -> compare)
    dpo_eval_prompts: int = 200
    seed: int = 0


FULL = DemoSettings()
QUICK = replace(FULL, n_test=200, probes=False, arithmetic_train=400, arithmetic_bon=100, dpo=False)

# Reward-model methods the demo compares: name -> (preset, λ override)
METHODS = {"BT": ("bt", None), "GRM": ("grm", None), "ICRM": ("icrm", None)}


def _train_args(settings: DemoSettings, epochs: float) -> dict:
    return trainer_arguments(
        epochs=epochs, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, warmup=0.03, logging_steps=5
    )


def _sft(data: Path, output: Path, settings: DemoSettings) -> None:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(output), **_train_args(settings, settings.sft_epochs))
    train_sft(str(data), str(output), args, ModelSpec("tiny"), max_length=settings.max_length)


def _reward_model(data: Path, output: Path, generator: Path, method: str, settings: DemoSettings) -> dict:
    preset, lam = METHODS[method]
    config = ICRMConfig(
        output_dir=str(output),
        method=preset,
        lambda_=lam,
        generator=str(generator),
        max_length=settings.max_length,
        gradient_checkpointing=False,
        **_train_args(settings, settings.epochs),
    )
    return train_reward_model(str(data), str(output), config, ModelSpec(str(generator)))


def _preference_task(task: str, root: Path, settings: DemoSettings, results: dict, losses: dict) -> None:
    """Generate a task, SFT a generator on it, train and evaluate each method."""
    data = root / "data" / task
    flip = 0.25 if task == "noisy" else 0.0
    write_task(task, data, seed=settings.seed, n_train=settings.n_train, n_test=settings.n_test, flip=flip)
    generator = root / "models" / f"{task}-sft"
    note(f"[bold]{task}[/bold]: SFT generator")
    _sft(data / "train.jsonl", generator, settings)
    splits = sorted(p.stem for p in data.glob("*.jsonl") if p.stem not in ("prompts",))
    for method in METHODS:
        note(f"[bold]{task}[/bold]: training {method}")
        model_dir = root / "models" / f"{task}-{method.lower()}"
        metrics = _reward_model(data / "train.jsonl", model_dir, generator, method, settings)
        losses[f"{task}/{method}"] = [(e["step"], e["loss"]) for e in metrics["log_history"] if "loss" in e]
        for split in splits:
            evaluated = evaluate_pairs(str(model_dir), str(data / f"{split}.jsonl"), None)
            results.setdefault(method, {})[f"{task}/{split}"] = evaluated["accuracy"]


def _arithmetic(root: Path, settings: DemoSettings, bon_results: dict) -> None:
    """Pointwise verifiers (BCE vs BCE + consistency) and best-of-N with them."""
    data = root / "data" / "arithmetic"
    write_task("arithmetic", data, seed=settings.seed, n_train=settings.arithmetic_train, n_test=settings.arithmetic_bon)
    generator = root / "models" / "arithmetic-sft"
    note("[bold]arithmetic[/bold]: SFT generator")
    _sft(data / "train.jsonl", generator, settings)
    for method in ("BT", "ICRM"):
        note(f"[bold]arithmetic[/bold]: training {method} verifier")
        model_dir = root / "models" / f"arithmetic-{method.lower()}"
        preset = {"BT": "bt", "ICRM": "icrm-nosft"}[method]
        config = ICRMConfig(
            output_dir=str(model_dir), method=preset, generator=str(generator), max_length=settings.max_length,
            gradient_checkpointing=False,
            **_train_args(settings, settings.epochs),
        )
        train_reward_model(str(data / "train.jsonl"), str(model_dir), config, ModelSpec(str(generator)))
        bon_results[method] = best_of_n(str(model_dir), str(data / "bon.jsonl"), None, ns=[1, 2, 4, 8])


def _dpo_stage(root: Path, settings: DemoSettings) -> dict:
    """SFT policy -> 4 samples per training prompt -> BT / ICRM pairs -> DPO each -> true-reward comparison.

    The README's policy-side settings (benchmarks/DPO.md has the multi-seed
    version). Held-out prompts are the first ``dpo_eval_prompts`` test
    prompts; training prompts that also occur there are not sampled.
    """
    from .outputs import write_jsonl
    from .policy import (
        DPOSettings,
        SamplingConfig,
        build_dpo_pairs_file,
        compare_policies,
        load_prompts,
        prompt_key,
        prompt_value,
        sample_to_file,
        train_dpo,
    )

    data, work = root / "data" / "noisy", root / "dpo"
    work.mkdir()
    policy = root / "models" / "noisy-sft"
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
        training = trainer_arguments(epochs=2, batch_size=16, lr=1e-4, seed=settings.seed, logging_steps=5)
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


def _plot_dpo(dpo: dict, path: Path) -> None:
    """Bar chart of the mean true reward per policy, with ±1 standard error of the mean."""
    from .evaluation import _new_figure, _save_png

    names = list(dpo["policies"])
    n = dpo["prompts"] * dpo["samples_per_prompt"]
    means = [dpo["policies"][name]["mean_reward"] for name in names]
    errors = [dpo["policies"][name]["std_reward"] / n**0.5 for name in names]
    figure = _new_figure()
    ax = figure.add_subplot()
    bars = ax.bar(names, means, yerr=errors, capsize=4, color=["grey", "C0", "C2"])
    ax.bar_label(bars, fmt="%.3f", label_type="center", color="white")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("mean true reward (#good − #bad words) ± s.e.")
    ax.set_title(f"Policies on {dpo['prompts']} held-out noisy prompts × {dpo['samples_per_prompt']} samples")
    _save_png(figure, path)


def _explain_page(root: Path) -> None:
    """BT and ICRM per-token rewards on the same held-out pair, side by side."""
    from .explain import explain_responses, render_html, render_png
    from .modeling import RewardModel, load_causal_lm

    first = json.loads((root / "data" / "noisy" / "test.jsonl").read_text().splitlines()[0])
    generator, _ = load_causal_lm(str(root / "models" / "noisy-sft"))
    pair = [("chosen", first["chosen"]), ("rejected", first["rejected"])]
    rows = [
        explain_responses(RewardModel.from_pretrained(str(root / "models" / f"noisy-{m}")), first["prompt"], pair,
                          m.upper(), generator)
        for m in ("bt", "icrm")
    ]
    (root / "explain.html").write_text(render_html("BT vs ICRM on a held-out pair", first["prompt"], rows))
    render_png(rows, root / "explain.png")


def _report(metrics: dict, elapsed: float) -> str:
    results = metrics["accuracy"]
    splits = sorted({s for per in results.values() for s in per})
    lines = [
        "# icrm demo report",
        "",
        f"Mode: {metrics['mode']}; seed {metrics['settings']['seed']}; {elapsed / 60:.1f} min on this machine.",
        "",
        "Reward models (tiny Llama, trained from the SFT generator, which also gives the consistency weights).",
        "`noisy/test` is the main generalization test: clean held-out pairs, while 25% of training labels are flipped.",
        "",
        "## Pairwise accuracy",
        "",
        "| method | " + " | ".join(splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for method, per in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{per.get(s, float('nan')):.3f}" for s in splits) + " |")
    lines += ["", "![accuracy](accuracy.png)", "", "## Best-of-N on step-checked arithmetic", ""]
    lines += ["| verifier | " + " | ".join(f"acc@{n}" for n in metrics["bon"]["BT"]["n"]) + " | pass@max | random@1 |"]
    lines += ["|---|" + "---|" * (len(metrics["bon"]["BT"]["n"]) + 2)]
    for method, bon in metrics["bon"].items():
        ns = [str(n) for n in bon["n"]]
        accs = " | ".join(f"{bon['accuracy'][n]:.3f}" for n in ns)
        lines.append(f"| {method} | {accs} | {bon['pass'][ns[-1]]:.3f} | {bon['random'][ns[0]]:.3f} |")
    lines += [
        "",
        "![best-of-N](bon.png)",
        "",
        "## Which tokens carry the reward",
        "",
        "Per-token reward changes Δr of BT (top) and ICRM (bottom) on a held-out response "
        "(interactive version: [explain.html](explain.html)). The decisive words are "
        + ", ".join(f"`{w}`" for w in GOOD_WORDS + BAD_WORDS) + "; the rest is filler.",
        "",
        "![explain](explain.png)",
        "",
    ]
    if "dpo" in metrics:
        lines += _dpo_report(metrics["dpo"])
    lines += [
        "## Training loss",
        "",
        "![losses](losses.png)",
        "",
        "One seed at toy scale: differences of a few points are within seed-to-seed spread. "
        "See BENCHMARKS.md for the multi-seed study.",
        "",
    ]
    return "\n".join(lines)


def _dpo_report(dpo: dict) -> list[str]:
    lines = [
        "## Policy loop: DPO on BT- vs ICRM-ranked pairs",
        "",
        (
            f"4 samples per training prompt from the noisy SFT policy; best vs worst by each reward model gave "
            f"{dpo['pairs']['BT']} (BT) and {dpo['pairs']['ICRM']} (ICRM) DPO pairs; DPO 2 epochs, lr 1e-4, β 0.1. "
            f"Judged by the true reward on {dpo['prompts']} held-out prompts × {dpo['samples_per_prompt']} samples "
            "(win/tie/lose: sample j of a prompt vs the SFT policy's sample j)."
        ),
        "",
        "| policy | mean true reward | win / tie / lose vs SFT | mean words |",
        "|---|---|---|---|",
    ]
    for name, p in dpo["policies"].items():
        rates = " / ".join(f"{p[k]:.2f}" for k in ("win_rate", "tie_rate", "lose_rate"))
        lines.append(f"| {name} | {p['mean_reward']:.3f} ± {p['std_reward']:.2f} | {rates} | {p['mean_words']:.1f} |")
    return lines + [
        "",
        "![dpo](dpo.png)",
        "",
        "One seed; benchmarks/DPO.md has the 5-seed comparison (no measurable difference between DPO-BT and DPO-ICRM).",
        "",
    ]


def run_demo(output: str | Path, quick: bool = False) -> dict:
    """Run the whole demo into ``output`` (written atomically); returns metrics."""
    settings = QUICK if quick else FULL
    start = time.time()
    results: dict[str, dict[str, float]] = {}
    losses: dict[str, list] = {}
    bon_results: dict[str, dict] = {}
    with staged_directory(output) as root:
        _preference_task("noisy", root, settings, results, losses)
        if settings.probes:
            for probe in ("length", "suffix"):
                _preference_task(probe, root, settings, results, losses)
        dpo = _dpo_stage(root, settings) if settings.dpo else None
        _arithmetic(root, settings, bon_results)
        _explain_page(root)
        metrics = {
            "mode": "quick" if quick else "full",
            "settings": settings.__dict__,
            "accuracy": results,
            "bon": bon_results,
        }
        if dpo is not None:
            metrics["dpo"] = dpo
            _plot_dpo(dpo, root / "dpo.png")
        plot_accuracy_bars(results, root / "accuracy.png", "Pairwise accuracy per split")
        plot_bon_comparison(bon_results, root / "bon.png", "Best-of-N on step-checked arithmetic")
        plot_loss_curves(losses, root / "losses.png")
        elapsed = time.time() - start
        metrics["elapsed_s"] = elapsed
        write_json(root / "metrics.json", metrics)
        (root / "report.md").write_text(_report(metrics, elapsed))
    return metrics
