"""Where does the reward change? Per-token reward steps at decisive words vs filler (noisy task).

Diagnostic for the reproduction benchmark: ICRM's premise is that the prefix
reward should stay flat at predictable (filler) tokens and jump at the rare
decisive words. For each row, on 100 held-out pairs, it reports the mean
|r_t - r_{t-1}| at decisive-word tokens and at filler tokens, and the mean step
at GOOD and at BAD words (should be > 0 and < 0). Same settings and seeds as
reproduction.py.

    python -m benchmarks.locality --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("ICRM_QUIET", "1")

import torch
from transformers import TrainingArguments

from icrm.commands.data import write_task
from icrm.commands.sft import train_sft
from icrm.data import BAD_WORDS, GOOD_WORDS
from icrm.modeling import ModelSpec, RewardModel

from . import reproduction as R
from .harness import RESULTS, label_flip, write_text

ROWS = [R.ROWS[0], R.ROWS[3]]  # BT, ICRM λ=0.3 SFT


def steps(rm_dir: Path, test: Path, n_rows: int = 100) -> dict[str, float]:
    rm = RewardModel.from_pretrained(str(rm_dir))
    rows = [json.loads(line) for line in test.read_text().splitlines()[:n_rows]]
    prompts = [r["prompt"] for r in rows for _ in (0, 1)]
    responses = [r[side] for r in rows for side in ("chosen", "rejected")]
    kinds: dict[str, list[float]] = {"good": [], "bad": [], "filler": []}
    with torch.no_grad():
        for response, rewards in zip(responses, rm.token_rewards_batch(prompts, responses)):
            words = response.split()
            if len(rewards) != len(words) + 1:  # every word is one token in these tasks; skip otherwise
                continue
            for word, step in zip(words[1:], (rewards[1:-1] - rewards[:-2]).tolist()):
                kinds["good" if word in GOOD_WORDS else "bad" if word in BAD_WORDS else "filler"].append(step)
    mean_abs = lambda xs: statistics.mean(abs(x) for x in xs)
    return {
        "mean abs step, decisive": mean_abs(kinds["good"] + kinds["bad"]),
        "mean abs step, filler": mean_abs(kinds["filler"]),
        "step GOOD": statistics.mean(kinds["good"]),
        "step BAD": statistics.mean(kinds["bad"]),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    out: dict[str, list[dict]] = {row.name: [] for row in ROWS}
    for seed in range(a.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            data, sft = work / "data", work / "sft"
            write_task(
                "noisy", data, seed=seed, n_train=R.SETTINGS["n_train"], n_test=R.SETTINGS["n_test"],
                flip=label_flip("noisy"),
            )
            args = TrainingArguments(output_dir=str(sft), **R.training_args(seed, R.SETTINGS["sft_epochs"]))
            train_sft(
                str(data / "train.jsonl"), str(sft), args, ModelSpec("tiny"), max_length=R.SETTINGS["max_length"]
            )
            for row in ROWS:
                R.run_row(row, data, sft, work, seed, [])
                out[row.name].append(steps(work / "rm", data / "test.jsonl"))
                print(seed, row.name, {k: round(v, 3) for k, v in out[row.name][-1].items()}, flush=True)
    keys = list(next(iter(out.values()))[0])
    lines = ["| row | " + " | ".join(keys) + " | ratio decisive/filler |", "|---" * (len(keys) + 2) + "|"]
    for name, per_seed in out.items():
        cells = [f"{statistics.mean(s[k] for s in per_seed):+.3f}" for k in keys]
        ratio = statistics.mean(s["mean abs step, decisive"] / s["mean abs step, filler"] for s in per_seed)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio:.1f} |")
    text = (
        f"Mean over {a.seeds} seeds (noisy task, 100 held-out pairs, settings {json.dumps(R.SETTINGS)})\n\n"
        + "\n".join(lines)
    )
    write_text(RESULTS / "locality.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
