"""``icrm demo``: the embedded end-to-end run, on a CPU, with no downloads.

It generates the noisy-preference task (and, in full mode, the spurious-
feature probes), trains a tiny generator by SFT on the chosen and rejected
responses (the reference's generator), trains BT, GRM and ICRM reward models
initialised from it (the generator supplies the consistency weights), evaluates every model on every split,
trains pointwise verifiers on step-checked addition and runs best-of-N with
them, then writes ``report.md``, PNG plots and ``metrics.json``. Full mode
also closes the policy loop on the noisy task: samples from an SFT policy
(trained on the chosen responses only),
DPO pairs ranked by the BT and by the ICRM reward model, one DPO policy per
ranking, and the three policies judged by the task's true reward. And it
reads process rewards: on the day-counting ``steps`` task, BT and ICRM
trained on outcome labels and a PRM trained on step labels score every step
of the same held-out chain, next to the chain's true step labels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..data import BAD_WORDS, BON_CANDIDATES, GOOD_WORDS, LENGTH_GAP, SUFFIX
from ..evaluation import (
    first_error,
    plot_accuracy_bars,
    plot_bon_comparison,
    plot_loss_terms,
    predicted_first_error,
    sigmoid,
    step_metrics,
)
from ..modeling import ModelSpec
from ..outputs import note, staged_directory, write_json
from ..training import ICRMConfig, TrainingOptions
from .bon import best_of_n
from .data import write_task
from .evaluate import evaluate_pairs
from .sft import train_sft
from .train import train_reward_model


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
    addition_train: int = 1000
    addition_bon: int = 300
    dpo: bool = True  # the policy stage (sample -> dpo-pairs -> dpo -> compare)
    dpo_eval_prompts: int = 200
    process: bool = True  # the process-reward stage (BT, ICRM and a PRM on the steps task)
    verification: bool = True  # pointwise verifiers and best-of-N on step-checked addition
    steps_train: int = 1000  # benchmarks/process.py's settings: 400 chains were not enough for every seed's PRM
    steps_test: int = 300
    steps_epochs: float = 10.0
    seed: int = 0


FULL = DemoSettings()
QUICK = replace(FULL, n_test=200, probes=False, addition_train=400, addition_bon=100, dpo=False, process=False,
                verification=False)

# Reward-model methods the demo compares: name -> (preset, λ override)
METHODS = {"BT": ("bt", None), "GRM": ("grm", None), "ICRM": ("icrm", None)}
# The length shortcut as benchmarks/reproduction.py measures it (BENCHMARKS.md §1a, scratch setup): the task's
# 300 training pairs, 500 held-out pairs per split whatever the mode, BT against ICRM at λ = 0.3, the row whose
# lead over BT held on every seed there (the preset's λ = 0.1 gives about half of it).
SHORTCUT_TASK, SHORTCUT_LAMBDA, SHORTCUT_TEST = "length", 0.3, 500
SHORTCUT_METHODS = {"BT": ("bt", None), "ICRM": ("icrm", SHORTCUT_LAMBDA)}
SHORTCUT_SPLITS = ("test_mixed", "test_reversed")
LOSS_TERMS = ("bt", "icrm", "sft")  # plotted one panel each (losses.png)
LABEL_FLIP = {"noisy": 0.25}  # share of training labels flipped per task (label noise; none elsewhere)


def _train_args(settings: DemoSettings, epochs: float) -> dict:
    return TrainingOptions(
        num_train_epochs=epochs, per_device_train_batch_size=settings.batch_size, learning_rate=settings.lr,
        seed=settings.seed, warmup_steps=0.03, logging_steps=5,
    ).trainer_kwargs()


def _sft(data: Path, output: Path, settings: DemoSettings, responses: str, epochs: float | None = None) -> None:
    """A tiny causal LM SFT-trained on ``responses``: ``both``/``all`` for a generator, ``chosen`` for a policy."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(output), **_train_args(settings, epochs or settings.sft_epochs))
    train_sft(str(data), str(output), args, ModelSpec("tiny"), max_length=settings.max_length, responses=responses)


def _reward_model(
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


def _preference_task(
    task: str, root: Path, settings: DemoSettings, results: dict, losses: dict, methods: dict = METHODS,
    n_test: int | None = None,
) -> None:
    """Generate a task, SFT a generator on it, train and evaluate each of ``methods``."""
    data = root / "data" / task
    flip = LABEL_FLIP.get(task, 0.0)
    write_task(task, data, seed=settings.seed, n_train=settings.n_train, n_test=n_test or settings.n_test, flip=flip)
    generator = root / "models" / f"{task}-sft"
    note(f"[bold]{task}[/bold]: SFT generator (chosen and rejected responses)")
    _sft(data / "train.jsonl", generator, settings, "both")
    splits = sorted(p.stem for p in data.glob("*.jsonl") if p.stem not in ("prompts",))
    for method, (preset, lam) in methods.items():
        note(f"[bold]{task}[/bold]: training {method}")
        model_dir = root / "models" / f"{task}-{method.lower()}"
        metrics = _reward_model(data / "train.jsonl", model_dir, generator, preset, settings, lam)
        history = [e for e in metrics["log_history"] if "loss" in e]  # training entries
        losses.setdefault(task, {})[method] = {t: [(e["step"], e[t]) for e in history if t in e] for t in LOSS_TERMS}
        for split in splits:
            evaluated = evaluate_pairs(str(model_dir), str(data / f"{split}.jsonl"), None)
            results.setdefault(method, {})[f"{task}/{split}"] = evaluated["accuracy"]


def run_verification(root: Path, settings: DemoSettings, bon_results: dict, task: str = "addition") -> dict:
    """Pointwise verifiers (BCE vs BCE + consistency) on a step-checked task, and best-of-N with them.

    The demo's task is ``addition``; benchmarks/demo_bon.py also runs ``arithmetic`` through here.
    Returns how alike the two verifiers rank the candidates (:func:`_verifier_agreement`).
    """
    data = root / "data" / task
    write_task(task, data, seed=settings.seed, n_train=settings.addition_train, n_test=settings.addition_bon)
    generator = root / "models" / f"{task}-sft"
    note(f"[bold]{task}[/bold]: SFT generator (right and wrong solutions)")
    _sft(data / "train.jsonl", generator, settings, "all")
    for method in ("BT", "ICRM"):
        note(f"[bold]{task}[/bold]: training {method} verifier")
        model_dir = root / "models" / f"{task}-{method.lower()}"
        _reward_model(data / "train.jsonl", model_dir, generator, {"BT": "bt", "ICRM": "icrm-nosft"}[method], settings)
        result = best_of_n(str(model_dir), str(data / "bon.jsonl"), None, ns=[1, 2, 4, BON_CANDIDATES])
        bon_results[method] = {**result, "model": str(model_dir.relative_to(root)), "data": f"data/{task}/bon.jsonl"}
    return _verifier_agreement({m: root / r["model"] for m, r in bon_results.items()}, data / "bon.jsonl")


def _verifier_agreement(models: dict[str, Path], data: Path) -> dict:
    """How alike two verifiers rank each problem's candidates.

    Best-of-n only asks whether the top-scored of n candidates is right, so two
    verifiers whose scores differ get the same accuracy at every n when, in
    every problem, they order the right and the wrong candidates alike; and
    sampled candidates repeat, which leaves few orders to disagree on.
    """
    from ..modeling import RewardModel

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    prompts = [row["prompt"] for row in rows for _ in row["candidates"]]
    candidates = [c for row in rows for c in row["candidates"]]
    scores = {name: RewardModel.from_pretrained(str(path)).score(prompts, candidates, 64) for name, path in models.items()}
    orders = {}
    for name, flat in scores.items():
        start, orders[name] = 0, []
        for row in rows:
            own = flat[start : start + len(row["candidates"])]
            start += len(row["candidates"])
            orders[name].append([row["labels"][j] for j in sorted(range(len(own)), key=lambda j: -own[j])])
    first, second = scores.values()
    return {
        "same_order": sum(a == b for a, b in zip(*orders.values())),
        "problems": len(rows),
        "distinct_candidates": sum(len(set(row["candidates"])) for row in rows) / len(rows),
        "mean_abs_score_gap": sum(abs(a - b) for a, b in zip(first, second)) / len(first),
    }


# Process-reward models the demo compares on the steps task: name -> (preset, what it learns from)
STEP_METHODS = {"BT": ("bt", "outcome labels"), "ICRM": ("icrm", "outcome labels"), "PRM": ("prm", "step labels")}
STEP_METRICS = {"step_auroc": "step AUROC", "first_error_f1": "first-error F1", "localization": "localisation"}


def demo_chain(examples: list) -> int:
    """Index of the chain the demo shows: the first with at least 4 steps that goes wrong after a right step
    and has a wrong step after its first one (chosen by its labels alone, before any model is trained)."""
    for i, ex in enumerate(examples):
        if len(ex.steps) >= 4 and 1 <= first_error(ex.labels) <= len(ex.steps) - 2:
            return i
    raise ValueError("no test chain goes wrong in its middle")


def _process_stage(root: Path, settings: DemoSettings) -> dict:
    """BT and ICRM on outcome labels, a PRM on step labels: step scores on one held-out chain and on all.

    One SFT generator on every training chain (right and wrong: the
    reference's generator data) starts every model and gives ICRM its
    consistency weights. The outcome methods read each stepwise row as a
    pointwise one whose label is its last step's. Also writes the shown
    chain's per-token rewards under the three models, step ends marked
    (``steps-explain.html`` and ``.png``).
    """
    from ..data import load_examples
    from ..explain import explain_responses, render_html, render_png
    from ..modeling import RewardModel

    data = root / "data" / "steps"
    write_task("steps", data, seed=settings.seed, n_train=settings.steps_train, n_test=settings.steps_test)
    generator = root / "models" / "steps-sft"
    note("[bold]steps[/bold]: SFT generator (right and wrong chains)")
    _sft(data / "train.jsonl", generator, settings, "all", settings.steps_epochs)
    test = load_examples(str(data / "test.jsonl")).examples
    index = demo_chain(test)
    shown = test[index]
    chain = {"id": shown.id, "prompt": shown.prompt[-1]["content"], "steps": shown.steps, "labels": shown.labels}
    rewards, metrics, explained = {}, {}, []
    for method, (preset, _) in STEP_METHODS.items():
        note(f"[bold]steps[/bold]: training {method}")
        model_dir = root / "models" / f"steps-{method.lower()}"
        _reward_model(data / "train.jsonl", model_dir, generator, preset, settings, epochs=settings.steps_epochs)
        rm = RewardModel.from_pretrained(str(model_dir))
        scores = rm.step_rewards_batch([ex.prompt for ex in test], [ex.steps for ex in test], batch_size=64)
        rewards[method] = scores[index]
        summary = step_metrics(scores, [ex.labels for ex in test])
        metrics[method] = {key: summary[key] for key in STEP_METRICS}
        explained.append(explain_responses(rm, shown.prompt, [("chain", shown.steps)], method))
        explained[-1][0].step_labels = shown.labels
    title = "BT, ICRM (outcome labels) and a PRM (step labels) on a held-out chain"
    (root / "steps-explain.html").write_text(render_html(title, shown.prompt, explained))
    render_png(explained, root / "steps-explain.png", row_scales=True)  # outcome RMs' |Δr| are far below the PRM's
    return {"chain": chain, "step_rewards": rewards, "test": metrics, "n_test": len(test),
            "n_train": settings.steps_train}


def _plot_process(process: dict, path: Path) -> None:
    """Left: σ(r) at each step of the shown chain, one line per model. Right: step metrics on every test chain."""
    from ..plots import new_figure, save_png

    chain, labels = process["chain"], process["chain"]["labels"]
    figure = new_figure(width=11.0, height=4.0)
    ax = figure.add_subplot(1, 2, 1)
    steps = list(range(1, len(labels) + 1))
    first = first_error(labels) + 1
    ax.axvspan(first - 0.5, len(labels) + 0.5, color="tab:red", alpha=0.08, label="wrong prefix (true label)")
    for (method, rewards), marker in zip(process["step_rewards"].items(), "osD"):
        ax.plot(steps, [sigmoid(r) for r in rewards], marker=marker, label=method)
    ax.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(steps, [f"{k}\n{'✓' if y else '✗'}" for k, y in zip(steps, labels)])
    ax.set_xlim(0.5, len(labels) + 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step (true label)")
    ax.set_ylabel("σ(r) at the step's end")
    ax.set_title(f"One held-out chain ({chain['id']})", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    ax = figure.add_subplot(1, 2, 2)
    methods, width = list(process["test"]), 0.8 / len(process["test"])
    positions = list(range(len(STEP_METRICS)))
    for i, method in enumerate(methods):
        values = [process["test"][method][key] for key in STEP_METRICS]
        bars = ax.bar([x + (i - (len(methods) - 1) / 2) * width for x in positions],
                      [0.0 if v is None else v for v in values], width)
        ax.bar_label(bars, ["n/a" if v is None else f"{v:.2f}" for v in values], fontsize=7)
    ax.set_xticks(positions, list(STEP_METRICS.values()))
    ax.set_ylim(0, 1.08)
    ax.hlines(0.5, -0.5, 0.5, color="black", linestyle=":", linewidth=0.8)  # chance, for step AUROC only
    ax.set_ylabel("score (dotted: AUROC by chance)")
    ax.set_title(f"All {process['n_test']} held-out chains", fontsize=10)
    figure.legend(handles, names, loc="lower center", ncol=len(names), frameon=False, fontsize=9)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    save_png(figure, path, tight=False)


def _dpo_stage(root: Path, settings: DemoSettings) -> dict:
    """SFT policy -> 4 samples per training prompt -> BT / ICRM pairs -> DPO each -> true-reward comparison.

    The README's policy-side settings (benchmarks/DPO.md has the multi-seed
    version). Held-out prompts are the first ``dpo_eval_prompts`` test
    prompts; training prompts that also occur there are not sampled.
    """
    from ..outputs import write_jsonl
    from ..policy import DPOSettings, SamplingConfig, load_prompts, prompt_key, prompt_value
    from .compare_policies import compare_policies
    from .dpo import train_dpo
    from .dpo_pairs import build_dpo_pairs_file
    from .sample import sample_to_file

    data, work = root / "data" / "noisy", root / "dpo"
    work.mkdir()
    policy = root / "models" / "noisy-policy"
    note("[bold]noisy[/bold]: SFT policy (chosen responses)")
    _sft(data / "train.jsonl", policy, settings, "chosen")
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


def _plot_dpo(dpo: dict, path: Path) -> None:
    """Bar chart of the mean true reward per policy, with ±1 standard error of the mean."""
    from ..plots import new_figure, save_png

    names = list(dpo["policies"])
    n = dpo["prompts"] * dpo["samples_per_prompt"]
    means = [dpo["policies"][name]["mean_reward"] for name in names]
    errors = [dpo["policies"][name]["std_reward"] / n**0.5 for name in names]
    figure = new_figure()
    ax = figure.add_subplot()
    bars = ax.bar(names, means, yerr=errors, capsize=4, color=["grey", "C0", "C2"])
    ax.bar_label(bars, fmt="%.3f", label_type="center", color="white")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("mean true reward (#good − #bad words) ± s.e.")
    ax.set_title(f"Policies on {dpo['prompts']} held-out noisy prompts × {dpo['samples_per_prompt']} samples")
    save_png(figure, path)


def _explain_page(root: Path, n_pairs: int = 50) -> dict:
    """BT and ICRM per-token rewards on the same held-out pair, side by side.

    Returns where the reward changes fall on the first ``n_pairs`` held-out
    pairs: each model's share of Σ|Δr| on decisive-word tokens, next to those
    tokens' share of all tokens (what a reward moving equally everywhere
    gets). The page lists each response's largest |Δr|, and the report must
    say whether those are the decisive words or filler.
    """
    from ..explain import decisive_share, explain_responses, render_html, render_png
    from ..modeling import RewardModel, load_causal_lm

    rows_in = [json.loads(line) for line in (root / "data" / "noisy" / "test.jsonl").read_text().splitlines()]
    first = rows_in[0]
    generator, _ = load_causal_lm(str(root / "models" / "noisy-sft"))
    pair = [("chosen", first["chosen"]), ("rejected", first["rejected"])]
    models = {m: RewardModel.from_pretrained(str(root / "models" / f"noisy-{m.lower()}")) for m in ("BT", "ICRM")}
    rows = [explain_responses(rm, first["prompt"], pair, name, generator) for name, rm in models.items()]
    (root / "explain.html").write_text(render_html("BT vs ICRM on a held-out pair", first["prompt"], rows))
    render_png(rows, root / "explain.png")
    decisive_words = set(GOOD_WORDS + BAD_WORDS)
    shares, token_share = {}, None
    for name, rm in models.items():
        deltas, flags = [], []
        for row in rows_in[:n_pairs]:
            responses = [("chosen", row["chosen"]), ("rejected", row["rejected"])]
            for ex in explain_responses(rm, row["prompt"], responses, name):
                deltas += ex.delta[1:-1]  # the first token's Δr starts from the prompt; the last is the end token
                flags += [t.strip().lower() in decisive_words for t in ex.tokens[1:-1]]
        shares[name] = decisive_share(deltas, flags)
        token_share = sum(flags) / len(flags)
    return {"pairs": min(n_pairs, len(rows_in)), "decisive_share": shares, "decisive_token_share": token_share}


def _tie(a: float, b: float, n: int) -> bool:
    """Whether accuracies ``a`` and ``b`` on ``n`` items are within two standard errors of one such accuracy."""
    p = (a + b) / 2
    return abs(a - b) <= 2 * (p * (1 - p) / n) ** 0.5


def _lead(metrics: dict) -> list[str]:
    """The report's first section: where BT and ICRM differ in this run and where they tie, from its numbers."""
    shortcut, mode = metrics["shortcut"], metrics["mode"]
    bt, icrm = (shortcut["accuracy"][m] for m in ("BT", "ICRM"))
    task = shortcut["task"]
    gaps = {split: icrm[f"{task}/{split}"] - bt[f"{task}/{split}"] for split in SHORTCUT_SPLITS}
    shown = "; ".join(f"`{task}/{split}` BT {bt[f'{task}/{split}']:.3f}, ICRM {icrm[f'{task}/{split}']:.3f} "
                      f"({100 * gap:+.1f} points)" for split, gap in gaps.items())
    if all(gap > 0 for gap in gaps.values()):
        verdict = "**Length shortcut: ICRM follows it less than BT in this run**"
    else:
        verdict = "**Length shortcut: this run does not show ICRM's lead over BT** (one seed)"
    lines = [
        "## BT against ICRM in this run",
        "",
        f"* {verdict}: {shown}. In every training pair of the `{task}` task the chosen response is also "
        f"{LENGTH_GAP[0]}–{LENGTH_GAP[1]} words longer, while the labels follow only the decisive words. Held-out "
        "pairs put the longer response on a random side (`test_mixed`: ranking by length alone gives about 0.5) or "
        "on the rejected side (`test_reversed`: ranking by length alone gives about 0). ICRM here uses λ = "
        f"{shortcut['lambda']}, with {shortcut['n_train']} training and {shortcut['n_test']} held-out pairs per "
        "split, as BENCHMARKS.md §1a measures it; there, over 5 seeds, ICRM leads BT by +5.7 [+2.9, +8.5] "
        "points on `test_mixed` and +12.7 [+7.2, +18.2] on `test_reversed`, on every seed."
        + (" Both still mostly follow the shortcut (below 0.5 on `test_reversed`)."
           if max(bt[f"{task}/test_reversed"], icrm[f"{task}/test_reversed"]) < 0.5 else ""),
    ]
    noisy = metrics["accuracy"]
    a, b, n = noisy["BT"]["noisy/test"], noisy["ICRM"]["noisy/test"], metrics["settings"]["n_test"]
    same = "they tie" if _tie(a, b, n) else ("ICRM leads" if b > a else "BT leads")
    lines.append(
        f"* **Noisy labels: {same}** (`noisy/test` BT {a:.3f}, ICRM {b:.3f}, {100 * (b - a):+.1f} points; "
        f"two standard errors of a {n}-pair accuracy are {200 * (((a + b) / 2) * (1 - (a + b) / 2) / n) ** 0.5:.1f} "
        "points). ICRM uses the paper's λ = 0.1 here. Over 5 seeds BENCHMARKS.md §1a finds no difference "
        "(−0.2 [−1.5, +1.1] points)."
    )
    bon = metrics["bon"]
    if set(bon) == {"BT", "ICRM"}:
        top = str(bon["BT"]["n"][-1])
        a, b = bon["BT"]["accuracy"][top], bon["ICRM"]["accuracy"][top]
        same = "they tie" if _tie(a, b, bon["BT"]["num_prompts"]) else ("ICRM leads" if b > a else "BT leads")
        lines.append(f"* **Best-of-{top} verifiers: {same}** (BT {a:.3f}, ICRM {b:.3f}); see below why.")
    elif mode == "quick":
        lines.append("* Best-of-N verifiers (without `--quick`): they tie (BENCHMARKS.md §9, within 0.01 on "
                     "every seed).")
    return lines + [""]


def _report(metrics: dict, elapsed: float) -> str:
    results = metrics["accuracy"]
    splits = sorted({s for per in results.values() for s in per})
    lines = [
        "# icrm demo report",
        "",
        f"Mode: {metrics['mode']}; seed {metrics['settings']['seed']}; {elapsed / 60:.1f} min on this machine "
        f"with {metrics['threads']} torch thread(s)."
        + (" `icrm demo` without `--quick` adds the suffix probe, best-of-N verifiers, a DPO policy loop and "
           "process rewards (BT, ICRM and a PRM scoring every step of a reasoning chain)."
           if metrics["mode"] == "quick" else ""),
        "",
        *_lead(metrics),
        "Reward models (tiny Llama, trained from the SFT generator, which learnt the chosen and rejected responses "
        "and also gives the consistency weights).",
        "",
        "## Length shortcut",
        "",
        *_accuracy_table(metrics["shortcut"]["accuracy"]),
        "",
        f"ICRM: λ = {metrics['shortcut']['lambda']}. `length/train` is scored against the training labels.",
        "",
        "![shortcut](shortcut.png)",
        "",
        "## Pairwise accuracy",
        "",
        "`noisy/test` is the main generalization test: clean held-out pairs, while 25% of training labels are "
        "flipped. `noisy/train` is scored against those training labels, flips included: a model that ranks every "
        "pair by the true reward scores 0.75 there, and more means it learnt some flipped labels. The dotted line "
        "in the plot is chance (0.5), what ranking by a coin gets.",
        "",
        *_accuracy_table(results),
    ]
    lines += ["", "![accuracy](accuracy.png)", ""]
    if any(split.startswith("suffix/") for split in splits):
        lines += _probe_report(results)
    if metrics["bon"]:
        lines += _bon_report(metrics["bon"], metrics.get("bon_agreement"))
    attribution = metrics["attribution"]
    shares = attribution["decisive_share"]
    lines += [
        "## Which tokens carry the reward",
        "",
        "Per-token reward changes Δr of BT (top) and ICRM (bottom) on a held-out response "
        "(interactive version: [explain.html](explain.html)). The words that set the true reward are "
        + ", ".join(f"`{w}`" for w in GOOD_WORDS + BAD_WORDS) + "; the rest is filler. Over the first "
        f"{attribution['pairs']} held-out pairs they are {attribution['decisive_token_share']:.0%} of the response "
        "tokens and get " + ", ".join(f"{share:.0%} ({name})" for name, share in shares.items()) + " of Σ|Δr|"
        + (": at this scale neither model puts its reward changes on them, so the largest |Δr| the page lists are "
           "mostly filler words."
           if max(shares.values()) < 2 * attribution["decisive_token_share"] else ".")
        + " BENCHMARKS.md §2 measures this over 5 seeds: ICRM (λ = 0.3) moves a few points of Σ|Δr| towards the "
        "decisive words, on every seed, but every model stays near chance.",
        "",
        "![explain](explain.png)",
        "",
    ]
    if "dpo" in metrics:
        lines += _dpo_report(metrics["dpo"])
    if "process" in metrics:
        lines += _process_report(metrics["process"])
    lines += _loss_report(metrics["losses"])
    lines += [
        "One seed at toy scale: differences of a few points are within seed-to-seed spread. "
        "See BENCHMARKS.md for the multi-seed study.",
        "",
    ]
    return "\n".join(lines)


def _accuracy_table(results: dict) -> list[str]:
    """Markdown table of pairwise accuracy, one row per method, one column per split."""
    splits = sorted({s for per in results.values() for s in per})
    lines = ["| method | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for method, per in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{per.get(s, float('nan')):.3f}" for s in splits) + " |")
    return lines


def _probe_report(results: dict) -> list[str]:
    """What the spurious-feature probes measure, and what this run's numbers on them say."""
    lines = [
        "## Suffix probe",
        "",
        f"In the `suffix` training pairs the chosen response also ends with “{' '.join(SUFFIX)}” (the length "
        "probe above, with a longer chosen response, is built the same way). Labels still follow only the decisive "
        "words. `test_mixed` puts the suffix on a random side (following it alone gives about 0.5); "
        "`test_reversed` puts it on the rejected side, so a model that ranks by the suffix scores near 0 there and "
        "one that reads the decisive words keeps its `noisy/test` accuracy. ICRM is at λ = 0.1 here; BENCHMARKS.md "
        "§1a finds every method takes this shortcut, at any λ.",
        "",
    ]
    for probe in ("suffix",):
        reversed_split = f"{probe}/test_reversed"
        scores = {method: per[reversed_split] for method, per in results.items() if reversed_split in per}
        if not scores:
            continue
        shown = ", ".join(f"{method} {value:.3f}" for method, value in scores.items())
        verdict = (
            "every method ranks by the feature, not by the decisive words"
            if max(scores.values()) < 0.25
            else "the feature decides most rankings"
            if max(scores.values()) < 0.5
            else "some method reads the decisive words more than the feature"
        )
        lines.append(f"* `{reversed_split}`: {shown}: {verdict}.")
    return lines + [""]


def _bon_report(bon: dict, agreement: dict | None = None) -> list[str]:
    """The best-of-N table and what the plot shows, from this run's numbers."""
    first = next(iter(bon.values()))
    ns = [str(n) for n in first["n"]]
    rows = [(f"{name} verifier", result["accuracy"]) for name, result in bon.items()]
    rows += [(label, first[key]) for key, label in
             (("majority", "majority vote"), ("random", "random pick"), ("pass", "pass@n (oracle)")) if key in first]
    lines = [
        "## Best-of-N on step-checked addition",
        "",
        f"{first['num_prompts']} held-out problems (“Compute 7 + 5 + 9 + 3.”), {ns[-1]} candidate solutions each, "
        f"{first['random'][ns[0]]:.0%} of them right on average. A wrong solution drops a carry at some step "
        "(that step's result is 10 too small and later steps continue from it). A verifier scores each candidate "
        "and picks the best of n (averaged over random n-subsets). The floor is a random pick, the ceiling "
        "(pass@n) whether any of the n is right; majority vote picks the most common final answer "
        "(self-consistency, no verifier).",
        "",
        "| | " + " | ".join(f"n = {n}" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
    ]
    lines += [f"| {label} | " + " | ".join(f"{values[n]:.3f}" for n in ns) + " |" for label, values in rows]
    lines.append("")
    top, random_top = ns[-1], first["random"][ns[-1]]
    for name, result in bon.items():
        below = [n for n in ns[1:] if result["accuracy"][n] <= first["random"][n]]
        verdict = "beats a random pick at every n > 1" if not below else f"does not beat a random pick at n = {', '.join(below)}"
        lines.append(f"* {name} verifier: {result['accuracy'][top]:.3f} at n = {top} "
                     f"(random {random_top:.3f}, oracle {first['pass'][top]:.3f}); it {verdict}.")
    if "majority" in first:
        best = max(result["accuracy"][top] for result in bon.values())
        majority = first["majority"][top]
        relation = "below" if majority < best else "at or above"
        lines.append(
            f"* Majority vote: {majority:.3f} at n = {top}, {relation} the best verifier. Wrong solutions that drop "
            "the same carries agree on the same wrong answer, so a vote can go to a wrong answer; a verifier "
            "checks the steps instead."
        )
    gap = max(abs(a - b) for a, b in zip(*(list(r["accuracy"].values()) for r in bon.values()))) if len(bon) == 2 else None
    if gap is not None:
        lines.append(f"* The two verifiers differ by at most {gap:.3f} at any n (one seed; BENCHMARKS.md §9 has three, "
                     "within 0.01 of each other on every seed: near the ceiling, this task shows that verification "
                     "works, not which loss is better).")
    if agreement:
        lines.append(
            f"* Why they tie: they are different models (their scores differ by {agreement['mean_abs_score_gap']:.2f} "
            f"on average), but they put the right and the wrong candidates in the same order in "
            f"{agreement['same_order']} of {agreement['problems']} problems. Sampled solutions repeat (a problem's "
            f"{ns[-1]} candidates hold {agreement['distinct_candidates']:.1f} distinct ones on average), which leaves "
            "few orders to disagree on, and best-of-n only asks whether the top-scored candidate is right."
        )
    return lines + ["", "![best-of-N](bon.png)", ""]


def _process_report(process: dict) -> list[str]:
    """The per-step table of the shown chain, the step metrics on every test chain, and what they say."""
    chain, rewards = process["chain"], process["step_rewards"]
    methods = list(rewards)
    truth = first_error(chain["labels"])
    lines = [
        "## Process rewards, step by step",
        "",
        f"The `steps` task counts days of the week forward, one line a step ({process['n_train']} training chains, "
        "about half of them right; a wrong chain slips at a random step and later lines count on from the wrong "
        "day). BT and ICRM learn from outcome labels only (is the last line right), the PRM from a label on every "
        "step. Each model's σ(r) at the end of each step of one held-out chain, the first test chain of 4 or more "
        "steps that goes wrong in its middle (chosen by its labels before training):",
        "",
        f"Prompt: “{chain['prompt']}”",
        "",
        "| step | text | true label | " + " | ".join(f"{m} σ(r)" for m in methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for k, (text, label) in enumerate(zip(chain["steps"], chain["labels"])):
        cells = " | ".join(f"{sigmoid(rewards[m][k]):.2f}" for m in methods)
        lines.append(f"| {k + 1} | {text} | {'✓ right' if label else '✗ wrong'} | {cells} |")
    lines.append("")
    for method in methods:
        probabilities = [sigmoid(r) for r in rewards[method]]
        flagged = predicted_first_error(rewards[method])
        where = "no step" if flagged < 0 else f"step {flagged + 1}"
        verdict = ", the true first wrong step" if flagged == truth else f", but the true first wrong step is {truth + 1}"
        lines.append(f"* {method}: σ(r) spans {min(probabilities):.2f}–{max(probabilities):.2f} on this chain; "
                     f"the first step below 0.5 is {where}{verdict}.")
    lines += [
        "",
        f"Over all {process['n_test']} held-out chains (step AUROC: right vs wrong prefixes; first-error F1: "
        "ProcessBench's harmonic mean of the accuracies on wrong and on right chains; localisation: the largest "
        "drop in σ(r) is at the first wrong step):",
        "",
        "| model | learns from | " + " | ".join(STEP_METRICS.values()) + " |",
        "|---|---|" + "---|" * len(STEP_METRICS),
    ]
    for method, values in process["test"].items():
        cells = " | ".join("n/a" if values[k] is None else f"{values[k]:.3f}" for k in STEP_METRICS)
        lines.append(f"| {method} | {STEP_METHODS[method][1]} | {cells} |")
    lines.append("")
    for method, values in process["test"].items():
        auroc = values["step_auroc"]
        if auroc is None or auroc >= 0.5:
            continue
        why = (
            "Learning from outcome labels only, nothing trains its scores of unfinished chains; over 5 seeds "
            "BENCHMARKS.md §7 finds outcome-label BCE at chance (step AUROC 0.505 ± 0.019), so a value a little "
            "under 0.5 means no step-level signal, not a reversed one."
            if STEP_METHODS[method][1] == "outcome labels" else "One seed; BENCHMARKS.md §7 has five."
        )
        lines.append(f"* {method}'s step AUROC, {auroc:.3f}, is below chance (0.5, the dotted line in the plot): it "
                     f"ranks a wrong prefix above a right one slightly more often than the reverse. {why}")
    return lines + [
        "",
        "![steps](steps.png)",
        "",
        "Per-token rewards on the same chain, each step's end marked with its σ(r) and true label "
        "(interactive version: [steps-explain.html](steps-explain.html)):",
        "",
        "![steps-explain](steps-explain.png)",
        "",
        "One seed; BENCHMARKS.md §7 has 5 seeds (outcome-label ICRM stays far from a PRM there; the consistency "
        "term added to a PRM helps it).",
        "",
    ]


def _loss_report(losses: dict) -> list[str]:
    """losses.png: one panel per loss term, and how the SFT term moved."""
    lines = [
        "## Training losses (noisy task)",
        "",
        "One panel per term: the Bradley–Terry loss (every method), the consistency term (ICRM only) and the "
        "SFT term (GRM and ICRM only; BT has none, so the methods' totals are not comparable). The SFT term is "
        "−log π of the chosen responses through the reward model's own copy of the generator's LM head; it starts "
        "where the generator left off and changes because the reward gradient reshapes the shared backbone (the "
        "SFT gradient into the backbone is scaled down by `--sft-backbone-grad`).",
    ]
    moved = [
        f"{method} {'rose' if terms['sft'][-1][1] > terms['sft'][0][1] else 'fell'} from "
        f"{terms['sft'][0][1]:.2f} to {terms['sft'][-1][1]:.2f}"
        for method, terms in losses.get("noisy", {}).items() if terms.get("sft")
    ]
    if moved:
        lines[-1] += " In this run " + "; ".join(moved) + " (first and last logged values)."
    return lines + ["", "![losses](losses.png)", ""]


def _dpo_report(dpo: dict) -> list[str]:
    lines = [
        "## Policy loop: DPO on BT- vs ICRM-ranked pairs",
        "",
        (
            f"4 samples per training prompt from the noisy SFT policy; best vs worst by each reward model gave "
            f"{dpo['pairs']['BT']} (BT) and {dpo['pairs']['ICRM']} (ICRM) DPO pairs; DPO 2 epochs, lr 1e-4, β 0.1. "
            f"Judged by the true reward on {dpo['prompts']} held-out prompts × {dpo['samples_per_prompt']} samples "
            "(win/tie/lose: sample j of a prompt vs the SFT policy's sample j; the SFT policy is the baseline). "
            "The tiny policies' samples are mostly byte soup (word pieces and stray bytes, a 2-layer model trained "
            "from scratch); the true reward counts the good and bad words in them all the same."
        ),
        "",
        "| policy | mean true reward | win / tie / lose vs SFT | mean words |",
        "|---|---|---|---|",
    ]
    for i, (name, p) in enumerate(dpo["policies"].items()):
        rates = "baseline" if i == 0 else " / ".join(f"{p[k]:.2f}" for k in ("win_rate", "tie_rate", "lose_rate"))
        lines.append(f"| {name} | {p['mean_reward']:.3f} ± {p['std_reward']:.2f} | {rates} | {p['mean_words']:.1f} |")
    return lines + [
        "",
        "![dpo](dpo.png)",
        "",
        "One seed; benchmarks/DPO.md has the 5-seed comparison (no measurable difference between DPO-BT and DPO-ICRM).",
        "",
    ]


def run_demo(output: str | Path, quick: bool = False, overwrite: bool = False) -> dict:
    """Run the whole demo into ``output`` (written atomically); returns metrics.

    ``output`` may be an earlier demo's folder; anything else that exists needs
    ``overwrite`` (:func:`icrm.outputs.check_output`).
    """
    import torch

    settings = QUICK if quick else FULL
    start = time.time()
    results: dict[str, dict[str, float]] = {}
    losses: dict[str, dict] = {}
    bon_results: dict[str, dict] = {}
    shortcut: dict[str, dict[str, float]] = {}
    with staged_directory(output, "demo", overwrite) as root:
        _preference_task(SHORTCUT_TASK, root, settings, shortcut, losses, SHORTCUT_METHODS, SHORTCUT_TEST)
        _preference_task("noisy", root, settings, results, losses)
        if settings.probes:
            _preference_task("suffix", root, settings, results, losses)
        dpo = _dpo_stage(root, settings) if settings.dpo else None
        agreement = run_verification(root, settings, bon_results) if settings.verification else None
        process = _process_stage(root, settings) if settings.process else None
        attribution = _explain_page(root)
        metrics = {
            "mode": "quick" if quick else "full",
            "settings": settings.__dict__,
            "threads": torch.get_num_threads(),
            "shortcut": {"task": SHORTCUT_TASK, "lambda": SHORTCUT_LAMBDA, "n_train": settings.n_train,
                         "n_test": SHORTCUT_TEST, "accuracy": shortcut},
            "accuracy": results,
            "bon": bon_results,
            "bon_agreement": agreement,
            "attribution": attribution,
            "losses": losses,
        }
        if dpo is not None:
            metrics["dpo"] = dpo
            _plot_dpo(dpo, root / "dpo.png")
        if process is not None:
            metrics["process"] = process
            _plot_process(process, root / "steps.png")
        plot_accuracy_bars(shortcut, root / "shortcut.png",
                           f"Length shortcut: BT vs ICRM (λ = {SHORTCUT_LAMBDA}), {SHORTCUT_TEST} held-out pairs")
        plot_accuracy_bars(results, root / "accuracy.png", "Pairwise accuracy per split")
        if bon_results:
            plot_bon_comparison(bon_results, root / "bon.png", "Best-of-N on step-checked addition (held-out problems)")
        plot_loss_terms(losses["noisy"], root / "losses.png", "Training losses on the noisy task")
        elapsed = time.time() - start
        metrics["elapsed_s"] = elapsed
        write_json(root / "metrics.json", metrics)
        (root / "report.md").write_text(_report(metrics, elapsed))
    return metrics
