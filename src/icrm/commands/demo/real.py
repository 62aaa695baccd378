"""``icrm demo --real``: BT and ICRM from a real pretrained LLM on real chat preferences, in minutes on a CPU.

SmolLM2-135M-Instruct (the ``smollm2-135m`` preset, offline) is trained with
LoRA as a BT and an ICRM reward model on a slice of AlpacaEval's judge-labelled
pairs, then scored on pairs of held-out instructions, on the two robustness
probes of :mod:`icrm.data.probes` and on a slice of LLMBar (RewardBench's Chat
Hard pairs), and one held-out pair is explained token by token. The data are
read from the shared data folder (``alpacaeval-prefs/`` and ``llmbar/``); nothing
is downloaded.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from ...data import chosen_shorter, fitting, split_by_instruction, verbosity_attack
from ...errors import UserError
from ...evaluation import plot_accuracy_bars
from ...modeling import ModelSpec
from ...outputs import check_output, note, staged_directory, write_json, write_jsonl
from ...training import ICRMConfig, TrainingOptions
from ..evaluate import evaluate_pairs
from ..train import train_reward_model
from .settings import REAL, REAL_EVALS, REAL_METHODS, RealDemoSettings

CHAT, LLMBAR = Path("alpacaeval-prefs") / "train.jsonl.gz", Path("llmbar") / "llmbar.jsonl.gz"


def run_real_demo(output: str | Path, data_dir: str | Path, overwrite: bool = False,
                  settings: RealDemoSettings = REAL) -> dict:
    """Run the real-model stage into ``output`` (written atomically); returns its metrics."""
    import torch

    check_output(output, "demo", overwrite)
    files = {name: Path(data_dir) / path for name, path in (("chat", CHAT), ("llmbar", LLMBAR))}
    for path in files.values():
        if not path.is_file():
            raise UserError(f"{path}: not found; --data-dir must be the shared data folder "
                            "(with alpacaeval-prefs/ and llmbar/)")
    start = time.time()
    with staged_directory(output, "demo", overwrite) as root:
        data = write_data(root / "data", files, settings)
        accuracy, models = {}, {}
        for method, (preset, lam) in REAL_METHODS.items():
            note(f"[bold]real model[/bold]: training {method} from {settings.model}")
            models[method] = root / "models" / method.lower()
            train(preset, lam, data / "train.jsonl", models[method], settings)
            accuracy[method] = {split: evaluate_pairs(str(models[method]), str(data / f"{split}.jsonl"), None)["accuracy"]
                                for split in REAL_EVALS}
        explained = explain_pair(root, data / "heldout.jsonl", models, settings.model)
        plot_accuracy_bars(accuracy, root / "accuracy.png", f"{settings.model}: BT vs ICRM, pairwise accuracy")
        elapsed = time.time() - start
        metrics = {"settings": settings.__dict__, "threads": torch.get_num_threads(), "accuracy": accuracy,
                   "pairs": {split: len((data / f"{split}.jsonl").read_text().splitlines())
                             for split in ("train", *REAL_EVALS)},
                   "explained": explained, "elapsed_s": elapsed}
        write_json(root / "metrics.json", metrics)
        (root / "report.md").write_text(render_real_report(metrics))
    return metrics


def write_data(folder: Path, files: dict[str, Path], settings: RealDemoSettings) -> Path:
    """The training slice, the held-out pairs and their probes, and the LLMBar slice, as JSONL files."""
    from ...modeling import load_tokenizer

    tokenizer = load_tokenizer(settings.model)
    with gzip.open(files["chat"], "rt") as handle:
        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in map(json.loads, handle)]
    train, test = split_by_instruction(rows, 0.2, settings.seed)
    train = [r for r, _ in zip(fitting(train, tokenizer, settings.max_length), range(settings.n_train))]
    test = [r for r, _ in zip(fitting(test, tokenizer, settings.max_length), range(settings.n_test))]
    llmbar, taken = [], {}
    with gzip.open(files["llmbar"], "rt") as handle:
        for row in map(json.loads, handle):
            if taken.get(row["subset"], 0) < settings.llmbar_per_subset:
                taken[row["subset"]] = taken.get(row["subset"], 0) + 1
                llmbar.append(row)
    for name, split in (("train", train), ("heldout", test), ("reversed", chosen_shorter(test)),
                        ("verbosity", verbosity_attack(test)), ("llmbar", llmbar)):
        write_jsonl(folder / f"{name}.jsonl", split)
    return folder


def train(preset: str, lam: float | None, data: Path, output: Path, settings: RealDemoSettings) -> None:
    """A LoRA reward model from the pretrained model; ICRM's weights come from the same model, frozen."""
    options = TrainingOptions(num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
                              learning_rate=settings.lr, seed=settings.seed, logging_steps=2)
    config = ICRMConfig(output_dir=str(output), method=preset, lambda_=lam, generator=settings.model,
                        max_length=settings.max_length, activation_checkpointing=False, **options.trainer_kwargs())
    spec = ModelSpec(settings.model, lora_r=settings.lora_r, lora_alpha=settings.lora_alpha)
    train_reward_model(str(data), str(output), config, spec)


def explain_pair(root: Path, heldout: Path, models: dict[str, Path], generator: str) -> dict:
    """BT and ICRM token by token on the first held-out pair (HTML and PNG); returns the pair and its rewards."""
    from ...explain import explain_responses, render_html, render_png
    from ...modeling import RewardModel, load_causal_lm

    row = json.loads(heldout.read_text().splitlines()[0])
    lm, _ = load_causal_lm(generator)
    pair = [("chosen", row["chosen"]), ("rejected", row["rejected"])]
    rows = [explain_responses(RewardModel.from_pretrained(str(path)), row["prompt"], pair, name, lm)
            for name, path in models.items()]
    (root / "explain.html").write_text(render_html("BT vs ICRM on a held-out chat pair", row["prompt"], rows))
    render_png(rows, root / "explain.png")
    return {"prompt": row["prompt"], "rewards": {name: {e.label: e.r[-1] for e in explained}
                                                 for name, explained in zip(models, rows)}}


def render_real_report(metrics: dict) -> str:
    """``report.md`` of the real-model stage: the table, what it rests on, and the figures."""
    s, acc, n = metrics["settings"], metrics["accuracy"], metrics["pairs"]
    lines = [
        "# icrm demo --real",
        "",
        f"{s['model']} (SmolLM2-135M-Instruct), LoRA r={s['lora_r']}, {n['train']} training pairs of AlpacaEval judge "
        f"preferences (≤ {s['max_length']} tokens), {s['epochs']:g} epoch{'' if s['epochs'] == 1 else 's'}, "
        f"lr {s['lr']:g}, seed {s['seed']}; ICRM's "
        f"generator is the instruct model as it is. {metrics['elapsed_s'] / 60:.1f} min with {metrics['threads']} "
        "torch thread(s).",
        "",
        "| model | " + " | ".join(f"{name}: {REAL_EVALS[name]} ({n[name]} pairs)" for name in REAL_EVALS) + " |",
        "|---" * (len(REAL_EVALS) + 1) + "|",
    ]
    lines += [f"| {method} | " + " | ".join(f"{acc[method][name]:.3f}" for name in REAL_EVALS) + " |" for method in acc]
    lines += [
        "",
        f"A few dozen pairs per column: one pair moves an accuracy by {1 / max(min(n.values()), 1):.3f}, so "
        "differences of a few points are noise. `benchmarks/real_quality.py` measures the same comparison with "
        "more data and seeds (BENCHMARKS.md). The LLMBar column is RewardBench's Chat Hard score of its slice.",
    ]
    if len({tuple(scores.values()) for scores in acc.values()}) == 1:
        lines += [
            "",
            "BT and ICRM score alike on every column: at the paper's λ = 0.1 and this few LoRA steps, the "
            "consistency term's gradient is small next to Bradley–Terry's, so both models rank the pairs the same "
            "(`benchmarks/REAL_MODEL.md` measures it); their rewards differ only slightly (the page below).",
        ]
    lines += [
        "",
        "![accuracy](accuracy.png)",
        "",
        "Per-token rewards of the first held-out pair, BT and ICRM side by side: `explain.html` (open it in a "
        "browser; hover a token for r, Δr and the generator's probability w).",
        "",
        "![explain](explain.png)",
        "",
    ]
    return "\n".join(lines)
