"""The demo's own figures, from its metrics: the process stage's step rewards and the policy stage's rewards.

The accuracy, best-of-N and loss figures are the evaluation package's; these two belong to the demo.
"""

from __future__ import annotations

from pathlib import Path

from ...evaluation import first_error, sigmoid
from .settings import STEP_METRICS


def plot_process(process: dict, path: Path) -> None:
    """Left: σ(r) at each step of the shown chain, one line per model. Right: step metrics on every test chain."""
    from ...plots import new_figure, save_png

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



def plot_dpo(dpo: dict, path: Path) -> None:
    """Bar chart of the mean true reward per policy, with ±1 standard error of the mean."""
    from ...plots import new_figure, save_png

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

