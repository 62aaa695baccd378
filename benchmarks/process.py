"""Process rewards on the embedded ``steps`` task (issue 15): how close does ICRM come to a PRM?

Per seed: one day-counting dataset (``icrm data synth --task steps``), one
SFT generator trained on all its training chains (the reference's generator
data), then every reward model below starts from that generator and is trained
with the same seed and settings, so rows are paired by seed:

* outcome labels only (the last step's label): BCE (``--method bt`` on
  pointwise labels), ICRM λ=0.1 (the paper's) and λ=0.3 (``--method icrm``,
  the SFT model as generator);
* step labels: PRM (``--method prm``) and PRM+ICRM (``--method prm-icrm``);
* data efficiency: PRM with step labels on the first 10 % and 30 % of the
  rows, trained for the same number of optimizer steps as on all rows;
* two baselines that need no reward training: the generator's own
  probability of each step (``σ(r) = p_gen(step | prefix)``, a local
  plausibility check), and random step scores.

Metrics on the held-out test chains (:func:`icrm.evaluation.step_metrics`): step
AUROC, first-error F1 (threshold 0.5), localisation, and the outcome AUROC;
best-of-8 accuracy on held-out prompts with the step scores aggregated by
``last`` (= the outcome reward), ``min`` and ``mean``. Reported as mean ± std
over seeds and paired differences with 95 % t-intervals (benchmarks.harness).

    python -m benchmarks.process --seeds 5      # results/process.{json,md,png}
    python -m benchmarks.process --quick        # smoke test: 1 seed, small data, 3 rows
    python -m benchmarks.process --epochs 30 --rows bce,icrm0.1,icrm0.3,prm --out process-30ep

Resumes like reproduction.py: results are saved after every model and a
re-run with the same --out trains only the missing (seed, row) models.
Settings were fixed from pilot runs of the PRM alone (how long the tiny model
needs to learn the step check), before any outcome method was compared.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("ICRM_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from transformers import TrainingArguments

from icrm.commands.data import write_task
from icrm.commands.sft import train_sft
from icrm.commands.train import train_reward_model
from icrm.data import encode_steps, load_examples, split_steps
from icrm.evaluation import AGGREGATES, aggregate, auroc, bon_metrics, step_metrics
from icrm.modeling import ModelSpec, RewardModel
from icrm.training import ICRMConfig, TrainingOptions

from .harness import (
    RESULTS,
    ResultsFile,
    mean_ci,
    mean_std,
    measured,
    paired,
    seeded_parser,
    start,
    steps_settings,
    write_text,
)

SETTINGS = steps_settings()  # the demo's process stage; --epochs and --quick change it
BON_NS = [1, 2, 4, 8]


@dataclass(frozen=True)
class Row:
    key: str  # --rows name
    name: str
    method: str | None  # icrm.training.core preset; None for a baseline
    lam: float | None = None
    fraction: float = 1.0  # share of training rows the model sees (same optimizer steps)


ROWS = [
    Row("bce", "BCE (outcome labels)", "bt"),
    Row("icrm0.1", "ICRM λ=0.1 (outcome labels)", "icrm", 0.1),
    Row("icrm0.3", "ICRM λ=0.3 (outcome labels)", "icrm", 0.3),
    Row("prm", "PRM (step labels)", "prm"),
    Row("prm-icrm", "PRM+ICRM λ=0.1 (step labels)", "prm-icrm"),
    Row("prm30", "PRM, step labels on 30 % of rows", "prm", fraction=0.3),
    Row("prm10", "PRM, step labels on 10 % of rows", "prm", fraction=0.1),
    Row("generator", "generator log-prob (no RM training)", None),
    Row("random", "random", None),
]
QUICK_ROWS = [ROWS[0], ROWS[3], ROWS[-2]]
METRICS = {  # key -> label
    "step_auroc": "step AUROC",
    "first_error_f1": "first-error F1",
    "localization": "localisation",
    "outcome_auroc": "outcome AUROC",
    **{f"bon8_{how}": f"best-of-8 ({how})" for how in AGGREGATES},
}
COMPARISONS = [  # (row, baseline) pairs reported as paired differences
    ("ICRM λ=0.1 (outcome labels)", "BCE (outcome labels)"),
    ("ICRM λ=0.3 (outcome labels)", "BCE (outcome labels)"),
    ("ICRM λ=0.1 (outcome labels)", "PRM (step labels)"),
    ("ICRM λ=0.3 (outcome labels)", "PRM (step labels)"),
    ("PRM+ICRM λ=0.1 (step labels)", "PRM (step labels)"),
    ("PRM, step labels on 10 % of rows", "ICRM λ=0.1 (outcome labels)"),
    ("PRM, step labels on 30 % of rows", "ICRM λ=0.1 (outcome labels)"),
    ("generator log-prob (no RM training)", "PRM (step labels)"),
]


# ---------------------------------------------------------------- scoring


def evaluate(step_scores_test: list[list[float]], test, bon_step_scores: list[list[list[float]]], bon) -> dict:
    """Every metric of one model (or baseline) from its step scores on the test chains and bon candidates."""
    labels = [ex.labels for ex in test]
    steps = step_metrics(step_scores_test, labels)
    out = {
        "step_auroc": steps["step_auroc"],
        "first_error_f1": steps["first_error_f1"],
        "localization": steps["localization"],
        "outcome_auroc": auroc([s[-1] for s in step_scores_test], [ex.label for ex in test]),
        "by_num_steps": steps["by_num_steps"],
    }
    for how in AGGREGATES:
        scores = [[aggregate(chain, how) for chain in row] for row in bon_step_scores]
        report = bon_metrics(scores, [ex.labels for ex in bon], BON_NS)
        out[f"bon8_{how}"] = report["accuracy"]["8"]
        if how == "last":
            out["bon_random@8"], out["bon_pass@8"] = report["random"]["8"], report["pass"]["8"]
    return out


def bon_chains(bon) -> tuple[list, list[list[str]]]:
    prompts, chains = [], []
    for ex in bon:
        for candidate in ex.candidates:
            prompts.append(ex.prompt)
            chains.append(split_steps(candidate))
    return prompts, chains


def regroup(flat: list, bon) -> list[list]:
    out, at = [], 0
    for ex in bon:
        out.append(flat[at : at + len(ex.candidates)])
        at += len(ex.candidates)
    return out


def rm_scores(path: Path, test, bon) -> tuple[list, list]:
    rm = RewardModel.from_pretrained(str(path)).eval()
    test_scores = rm.step_rewards_batch([ex.prompt for ex in test], [ex.steps for ex in test], batch_size=64)
    prompts, chains = bon_chains(bon)
    return test_scores, regroup(rm.step_rewards_batch(prompts, chains, batch_size=64), bon)


@torch.no_grad()
def generator_scores(sft: Path, prompts, chains) -> list[list[float]]:
    """``r_k = logit p_gen(step k | prefix)``: log-probability of the step's tokens (separator before it, end-of-turn
    after the last one), so that ``σ(r)`` is the generator's probability of the step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(sft), AutoModelForCausalLM.from_pretrained(sft).eval()
    out = []
    for prompt, steps in zip(prompts, chains):
        seq = encode_steps(tok, prompt, steps)
        ids = torch.tensor([seq.input_ids])
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        token_lp = logp[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)  # token_lp[j - 1] = log p(ids[j] | ids[<j])
        bounds = [seq.start - 1] + seq.step_ends
        scores = []
        for lo, hi in itertools.pairwise(bounds):
            lp = min(float(token_lp[lo:hi].sum()), -1e-12)
            scores.append(lp - math.log(-math.expm1(lp)))
        out.append(scores)
    return out


def baseline_scores(row: Row, sft: Path, test, bon, seed: int) -> tuple[list, list]:
    prompts, chains = bon_chains(bon)
    if row.name.startswith("generator"):
        return generator_scores(sft, [ex.prompt for ex in test], [ex.steps for ex in test]), regroup(
            generator_scores(sft, prompts, chains), bon
        )
    rng = np.random.default_rng(seed)
    return [rng.normal(size=len(ex.steps)).tolist() for ex in test], regroup(
        [rng.normal(size=len(c)).tolist() for c in chains], bon
    )


# ---------------------------------------------------------------- training


def _args(seed: int, epochs: float) -> dict:
    s = SETTINGS
    return TrainingOptions(num_train_epochs=epochs, per_device_train_batch_size=s["batch_size"], learning_rate=s["lr"],
                           seed=seed, logging_steps=100).trainer_kwargs()


def train_row(row: Row, data: Path, sft: Path, work: Path, seed: int) -> Path:
    train = data / "train.jsonl"
    if row.fraction < 1.0:
        lines = train.read_text().splitlines()
        train = work / f"train-{row.fraction}.jsonl"
        train.write_text("\n".join(lines[: round(row.fraction * len(lines))]) + "\n")
    out = work / "rm"
    config = ICRMConfig(output_dir=str(out), method=row.method, lambda_=row.lam, generator=str(sft),
                          max_length=SETTINGS["max_length"], **_args(seed, SETTINGS["epochs"] / row.fraction))
    train_reward_model(str(train), str(out), config, ModelSpec(str(sft)))
    return out


def run(seeds: list[int], rows: list[Row], results: dict, save) -> None:
    for seed in seeds:
        todo = [r for r in rows if r.name not in results.get(str(seed), {})]
        if not todo:
            continue
        with tempfile.TemporaryDirectory(prefix="icrm-process-") as tmp:
            work = Path(tmp)
            data, sft = work / "data", work / "sft"
            write_task("steps", data, seed=seed, n_train=SETTINGS["n_train"], n_test=SETTINGS["n_test"])
            test = load_examples(data / "test.jsonl").examples
            bon = load_examples(data / "bon.jsonl").examples
            t0 = time.time()
            targs = TrainingArguments(output_dir=str(sft), **_args(seed, SETTINGS["sft_epochs"]))
            train_sft(str(data / "train.jsonl"), str(sft), targs, ModelSpec("tiny"), max_length=SETTINGS["max_length"],
                      responses="all")
            print(f"[seed {seed}] generator SFT {time.time() - t0:.0f}s", flush=True)
            for row in todo:
                t0 = time.time()
                if row.method is None:
                    scores = baseline_scores(row, sft, test, bon, seed)
                else:
                    scores = rm_scores(train_row(row, data, sft, work, seed), test, bon)
                results.setdefault(str(seed), {})[row.name] = evaluate(scores[0], test, scores[1], bon)
                save()
                shown = " ".join(f"{k}={v:.3f}" for k, v in results[str(seed)][row.name].items()
                                 if k in METRICS and v is not None)
                print(f"[seed {seed}] {row.name:38s} {shown}  ({time.time() - t0:.0f}s)", flush=True)


# ---------------------------------------------------------------- report


def values(results: dict, row: str, metric: str, seeds: list[str]) -> list[float]:
    return [results[s][row][metric] for s in seeds if row in results[s] and results[s][row][metric] is not None]


def report(info: dict, rows: list[Row]) -> str:
    results = info["results"]
    seeds = sorted(results, key=int)
    lines = [
        (
            f"{measured(info)}; {len(seeds)} seeds ({', '.join(seeds)})."
        ),
        f"Settings: {json.dumps(info['settings'])}.",
        "",
        "Mean ± std over seeds, in % (AUROC, F1, localisation and accuracy all × 100).",
        "",
        "| row | " + " | ".join(METRICS.values()) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for row in rows:
        cells = [mean_std(values(results, row.name, k, seeds)) for k in METRICS]
        if any(c != "–" for c in cells):
            lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    chance = {k: mean_std([results[s][rows[0].name][k] for s in seeds if rows[0].name in results[s]])
              for k in ("bon_random@8", "bon_pass@8")}
    lines += ["", f"Best-of-8 floor (random pick) {chance['bon_random@8']}, ceiling (pass@8) {chance['bon_pass@8']}.", ""]
    lines += [
        "Paired differences (row − baseline), points, 95 % t-interval, seeds where the row is higher:",
        "",
        "| row − baseline | " + " | ".join(METRICS.values()) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for a, b in COMPARISONS:
        common = [s for s in seeds if a in results[s] and b in results[s]]
        if not common:
            continue
        cells = []
        for k in METRICS:
            pairs = [(results[s][a][k], results[s][b][k]) for s in common
                     if results[s][a][k] is not None and results[s][b][k] is not None]
            cells.append(paired([x for x, _ in pairs], [y for _, y in pairs]))
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_efficiency(info: dict, path: Path) -> None:
    """Step AUROC and first-error F1 vs the share of rows with step labels (PRM), beside outcome-label rows."""
    from icrm.plots import new_figure, save_png

    results = info["results"]
    seeds = sorted(results, key=int)
    prm = [(10, "PRM, step labels on 10 % of rows"), (30, "PRM, step labels on 30 % of rows"), (100, "PRM (step labels)")]
    lines = [("ICRM λ=0.1 (outcome labels)", "tab:blue", "-"), ("ICRM λ=0.3 (outcome labels)", "tab:cyan", "-"),
             ("BCE (outcome labels)", "tab:gray", "--"), ("generator log-prob (no RM training)", "tab:orange", ":")]
    figure = new_figure(width=10.0, height=4.0)
    for i, metric in enumerate(("step_auroc", "first_error_f1"), start=1):
        ax = figure.add_subplot(1, 2, i)
        xs = [x for x, name in prm if values(results, name, metric, seeds)]
        if xs:
            stats = [mean_ci(values(results, name, metric, seeds)) for x, name in prm if x in xs]
            ax.errorbar(xs, [m for m, _ in stats], yerr=[h for _, h in stats], marker="o", color="tab:red",
                        capsize=3, label="PRM (step labels on x % of rows)")
        for name, colour, style in lines:
            got = values(results, name, metric, seeds)
            if got:
                mean, half = mean_ci(got)
                label = f"{name.split(' (')[0]} (outcome labels, all rows)" if "outcome" in name else name
                ax.axhline(mean, color=colour, linestyle=style, label=label)
                ax.axhspan(mean - half, mean + half, color=colour, alpha=0.12)
        if metric == "step_auroc":
            ax.axhline(0.5, color="black", linewidth=0.8, linestyle=(0, (1, 3)))  # chance
        ax.set_xscale("log")
        ax.set_xlim(7, 140)
        ax.set_xticks([10, 30, 100], ["10 %", "30 %", "100 %"])
        ax.minorticks_off()
        ax.set_xlabel("rows with step labels (PRM; same optimizer steps)")
        ax.set_ylabel(METRICS[metric])
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{METRICS[metric]}, held-out chains ({len(seeds)} seed{'s' * (len(seeds) > 1)}, 95 % CI)",
                     fontsize=10)
        if i == 1:
            ax.legend(fontsize=7, loc="lower right")  # below the outcome-label bands
    save_png(figure, path)


def main(argv: list[str] | None = None) -> None:
    p = seeded_parser(__doc__, seeds=5)
    p.add_argument("--quick", action="store_true", help="1 seed, 200 training chains, 3 epochs, 3 rows")
    p.add_argument("--out", default="process", help="name of the results files")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--epochs", type=float, default=SETTINGS["epochs"], help="reward-model epochs (not the generator's)")
    p.add_argument("--rows", help=f"comma-separated subset of: {', '.join(r.key for r in ROWS)} (default: all)")
    a = p.parse_args(argv)

    rows, seeds = list(ROWS), start(a)
    SETTINGS["epochs"] = a.epochs
    if a.rows:
        keys = a.rows.split(",")
        unknown = set(keys) - {r.key for r in ROWS}
        if unknown:
            sys.exit(f"--rows: unknown {', '.join(sorted(unknown))}")
        rows = [r for r in ROWS if r.key in keys]
    if a.quick:
        rows, seeds = QUICK_ROWS, [a.first_seed]
        SETTINGS.update(n_train=200, n_test=50, epochs=3.0, sft_epochs=3.0)
    results_dir = Path(a.results_dir)
    store = ResultsFile(results_dir / f"{a.out}.json", settings=SETTINGS)
    run(seeds, rows, store.parts["results"], store.save)
    info = store.load()
    text = report(info, ROWS)
    write_text(results_dir / f"{a.out}.md", text)
    plot_efficiency(info, results_dir / f"{a.out}.png")
    print(text)


if __name__ == "__main__":
    main()
