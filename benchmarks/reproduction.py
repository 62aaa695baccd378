"""Miniature reproduction of the ICRM paper's claim on the embedded tasks (CPU).

BT vs GRM vs ICRM (λ ∈ {0.1, 0.3, 0.5}; generator = SFT policy, the RM's own
LM head, or uniform weights) on the noisy-preference task (clean held-out
pairs) and on the length / suffix probes (test_mixed / test_reversed), over
several seeds. Per (task, seed): one dataset, one SFT generator, then every
row's reward model is initialised from that SFT model and trained with the
same seed, so rows are paired by seed. Reports mean ± std per row and split,
the paired difference to BT with a 95 % t-interval, and the number of seeds
where the row beats BT.

    python -m benchmarks.reproduction --seeds 5                 # full grid
    python -m benchmarks.reproduction --quick                   # smoke test, ~1 min
    python -m benchmarks.reproduction --seeds 5 --setup pretrained --out reproduction-pretrained

Setups. ``scratch``: the tiny model starts from random weights; the generator
is SFT-trained on the labelled pairs and every RM starts from it. ``pretrained``
(closer to the paper, whose RMs start from a pretrained LM): the tiny model is
first language-modelled on unlabelled task text (``pretrain_factor`` × the
labelled pairs, fresh ones from the same task, good and bad responses alike);
the generator is SFT-trained from that backbone, and the RMs start from the
backbone itself, as the reference's RMs start from the base model.
``--generator-responses`` picks the generator's SFT data: ``both`` (the
reference's ``taorm_sft`` stage) or ``chosen`` (icrm before issue 12).

Raw per-seed accuracies go to benchmarks/results/<out>.json (written after
every model, and reused: a re-run with the same --out resumes), the table to
benchmarks/results/<out>.md. Settings are fixed to the demo's (docs/design.md#embedded-tasks)
before any method was compared; they are not tuned per method.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("ICRM_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import TrainingArguments

from icrm.commands.data import write_task
from icrm.commands.evaluate import evaluate_pairs
from icrm.commands.sft import train_sft
from icrm.commands.train import train_reward_model
from icrm.data import BAD_WORDS, GOOD_WORDS
from icrm.modeling import ModelSpec
from icrm.training import ICRMConfig, TrainingOptions

from .harness import (
    RESULTS,
    ResultsFile,
    label_flip,
    mean_std,
    measured,
    paired,
    seeded_parser,
    start,
    task_settings,
    write_text,
)

# Task design, fixed before comparing methods: the demo's full settings, except the generator's SFT length.
# With the demo's 3 SFT epochs (57 steps) the tiny generator has not learnt the filler process: it gives a
# filler word p ≈ 0.03, barely above a decisive word (≈ 0.01), so w_t carries no information and the task
# does not realise its premise (docs/design.md#embedded-tasks: "filler ... high generator probability"). 20 epochs give
# filler ≈ 0.6 vs decisive ≈ 0.01 on held-out text without memorising the training responses (40 epochs
# do). It was chosen from that generator check alone (after the 3-epoch grid, before any 20-epoch RM was
# trained); --sft-epochs 3 gives the demo's setting. The check is recorded per task and seed
# ("generator_check" in the JSON).
SETTINGS = {
    **task_settings(),
    "setup": "scratch",
    "generator_responses": "both",
    "pretrain_factor": 10,
    "pretrain_epochs": 3.0,
}
TASKS = {  # task -> (label-flip share in training, evaluation splits)
    task: (label_flip(task), splits)
    for task, splits in {"noisy": ["test"], "length": ["test_mixed", "test_reversed"],
                         "suffix": ["test_mixed", "test_reversed"]}.items()
}


@dataclass(frozen=True)
class Row:
    name: str
    method: str  # icrm.training.core preset
    lam: float | None = None  # λ override
    generator: str = "sft"  # sft | self | uniform


ROWS = [
    Row("BT", "bt"),
    Row("GRM", "grm"),
    Row("ICRM λ=0.1 SFT", "icrm", 0.1),
    Row("ICRM λ=0.3 SFT", "icrm", 0.3),
    Row("ICRM λ=0.5 SFT", "icrm", 0.5),
    Row("ICRM λ=0.3 self", "icrm", 0.3, "self"),
    Row("ICRM λ=0.3 uniform", "icrm", 0.3, "uniform"),
    Row("ICRM-nosft λ=0.3 SFT", "icrm-nosft", 0.3),
]
QUICK_ROWS = ROWS[:3]


# ---------------------------------------------------------------- training


@torch.no_grad()
def generator_check(sft: Path, data: Path, n_rows: int = 100) -> dict[str, float]:
    """Mean generator probability of decisive-word tokens vs other response tokens (held-out pairs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = (AutoTokenizer.from_pretrained(sft), AutoModelForCausalLM.from_pretrained(sft).eval())
    split = next(p for p in sorted(data.glob("test*.jsonl")))
    sums = {"decisive": [0.0, 0], "other": [0.0, 0]}
    for line in split.read_text().splitlines()[:n_rows]:
        row = json.loads(line)
        for response in (row["chosen"], row["rejected"]):
            chat = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": response}]
            text = tok.apply_chat_template(chat, tokenize=False)
            start = text.rindex(response)
            enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
            logp = torch.log_softmax(model(torch.tensor([enc.ids])).logits[0].float(), -1)
            for i, (a, b) in enumerate(enc.offsets):
                if i and start <= a < start + len(response):
                    kind = "decisive" if text[a:b].strip().lower() in GOOD_WORDS + BAD_WORDS else "other"
                    sums[kind][0] += float(logp[i - 1, enc.ids[i]].exp())
                    sums[kind][1] += 1
    return {k: round(total / max(n, 1), 4) for k, (total, n) in sums.items()}


def training_args(seed: int, epochs: float) -> dict:
    """The trainer arguments of every model here (generator, backbone, reward models): only seed and epochs vary."""
    s = SETTINGS
    return TrainingOptions(num_train_epochs=epochs, per_device_train_batch_size=s["batch_size"], learning_rate=s["lr"],
                           seed=seed, logging_steps=50).trainer_kwargs()


def run_row(
    row: Row, data: Path, sft: Path, work: Path, seed: int, splits: list[str], backbone: Path | None = None
) -> dict[str, float]:
    """Train ``row``'s reward model from ``backbone`` (the SFT generator when None) and evaluate it on ``splits``."""
    generator = str(sft) if row.generator == "sft" else row.generator
    out = work / "rm"
    config = ICRMConfig(
        output_dir=str(out),
        method=row.method,
        lambda_=row.lam,
        activation_checkpointing=False,
        generator=generator,
        max_length=SETTINGS["max_length"],
        **training_args(seed, SETTINGS["epochs"]),
    )
    train_reward_model(str(data / "train.jsonl"), str(out), config, ModelSpec(str(backbone or sft)))
    return {split: evaluate_pairs(str(out), str(data / f"{split}.jsonl"), None)["accuracy"] for split in splits}


def pretrain(task: str, work: Path, seed: int) -> Path:
    """A tiny LM language-modelled on unlabelled text of the task (both responses of fresh pairs)."""
    text = work / "unlabelled"
    n = SETTINGS["pretrain_factor"] * SETTINGS["n_train"]
    write_task(task, text, seed=10_000 + seed, n_train=n, n_test=1, flip=0.0)
    out = work / "pretrained"
    targs = TrainingArguments(output_dir=str(out), **training_args(seed, SETTINGS["pretrain_epochs"]))
    train_sft(str(text / "train.jsonl"), str(out), targs, ModelSpec("tiny"), max_length=SETTINGS["max_length"],
              responses="both")
    return out


def run_grid(tasks: list[str], seeds: list[int], rows: list[Row], results: dict, checks: dict, save) -> None:
    for task in tasks:
        flip, splits = TASKS[task]
        for seed in seeds:
            todo = [r for r in rows if r.name not in results.get(task, {}).get(str(seed), {})]
            if not todo:
                continue
            with tempfile.TemporaryDirectory(prefix="icrm-repro-") as tmp:
                work = Path(tmp)
                data, sft = work / "data", work / "sft"
                write_task(task, data, seed=seed, n_train=SETTINGS["n_train"], n_test=SETTINGS["n_test"], flip=flip)
                t0 = time.time()
                backbone = pretrain(task, work, seed) if SETTINGS["setup"] == "pretrained" else None
                targs = TrainingArguments(output_dir=str(sft), **training_args(seed, SETTINGS["sft_epochs"]))
                train_sft(
                    str(data / "train.jsonl"), str(sft), targs, ModelSpec(str(backbone or "tiny")),
                    max_length=SETTINGS["max_length"], responses=SETTINGS["generator_responses"],
                )
                check = checks.setdefault(task, {})[str(seed)] = generator_check(sft, data)
                print(f"[{task} seed {seed}] backbone+SFT {time.time() - t0:.0f}s, generator p: {check}", flush=True)
                for row in todo:
                    t0 = time.time()
                    acc = run_row(row, data, sft, work, seed, splits, backbone)
                    results.setdefault(task, {}).setdefault(str(seed), {})[row.name] = acc
                    save()
                    accs = " ".join(f"{k}={v:.3f}" for k, v in acc.items())
                    print(f"[{task} seed {seed}] {row.name:28s} {accs}  ({time.time() - t0:.0f}s)", flush=True)


# ---------------------------------------------------------------- report


def summary(results: dict, rows: list[Row]) -> str:
    """One line per row: accuracy % (mean ± std over seeds) on every split."""
    cols = [(task, split) for task in results for split in TASKS[task][1]]
    lines = ["| row | " + " | ".join(f"{t}/{s}" for t, s in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        cells = [mean_std([r[row.name][s] for r in results[t].values() if row.name in r]) for t, s in cols]
        if any(c != "–" for c in cells):
            lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(results: dict, rows: list[Row]) -> str:
    lines = []
    for task, per_seed in results.items():
        seeds = sorted(per_seed, key=int)
        for split in TASKS[task][1]:

            def acc(name: str, per_seed=per_seed, seeds=seeds, split=split) -> list[float]:
                return [per_seed[s][name][split] for s in seeds if name in per_seed[s]]

            lines += [
                f"### {task} / {split} ({len(seeds)} seeds: {', '.join(seeds)})",
                "",
                "| row | accuracy % (mean ± std) | Δ vs BT, pts [95% CI] wins | Δ vs GRM, pts [95% CI] wins |",
                "|---|---|---|---|",
            ]
            for row in rows:
                if not acc(row.name):
                    continue
                common = [s for s in seeds if row.name in per_seed[s] and "BT" in per_seed[s]]
                vs = {}
                for base in ("BT", "GRM"):
                    both = [s for s in common if base in per_seed[s]]
                    vs[base] = (
                        ""
                        if row.name in ("BT", base)
                        else paired(
                            [per_seed[s][row.name][split] for s in both], [per_seed[s][base][split] for s in both]
                        )
                    )
                lines.append(f"| {row.name} | {mean_std(acc(row.name))} | {vs['BT']} | {vs['GRM']} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = seeded_parser(__doc__, seeds=5)
    p.add_argument("--tasks", default="noisy,length,suffix")
    p.add_argument("--quick", action="store_true", help="1 seed, noisy, BT/GRM/ICRM λ=0.1, 200 test pairs")
    p.add_argument("--out", default="reproduction", help="name of the results files under benchmarks/results/")
    p.add_argument("--sft-epochs", type=float, default=SETTINGS["sft_epochs"], help="generator SFT epochs (demo: 3)")
    p.add_argument("--setup", choices=("scratch", "pretrained"), default="scratch", help="see the module docstring")
    p.add_argument("--generator-responses", choices=("both", "chosen"), default="both",
                   help="the generator's SFT data (reference: both)")
    p.add_argument("--rows", default=None, help="comma-separated row names to run (default: all)")
    a = p.parse_args(argv)

    seeds = start(a)
    rows = list(ROWS)
    SETTINGS.update(sft_epochs=a.sft_epochs, setup=a.setup, generator_responses=a.generator_responses)
    if a.rows:
        wanted = a.rows.split(",")
        rows = [r for r in rows if r.name in wanted]
    tasks = a.tasks.split(",")
    if a.quick:
        rows, tasks, seeds = QUICK_ROWS, ["noisy"], [a.first_seed]
        SETTINGS["n_test"] = 200

    store = ResultsFile(RESULTS / f"{a.out}.json", ("generator_check", "results"), settings=SETTINGS)
    results, checks = store.parts["results"], store.parts["generator_check"]
    run_grid(tasks, seeds, rows, results, checks, store.save)  # saves after every model
    info = store.load()
    header = (
        f"{measured(info)}.\n"
        f"Settings: {json.dumps(SETTINGS)}. Δ columns: paired by seed, mean difference in accuracy points, "
        f"95 % t-interval, seeds where the row wins.\n"
    )
    gen = "".join(
        f"| {t} | {mean_std([c[s]['other'] for s in c])} | {mean_std([c[s]['decisive'] for s in c])} |\n"
        for t, c in checks.items()
    )
    gen = (
        (
            "Generator check (mean p_gen of the next response token, % ± std over seeds, first 100 held-out pairs):\n\n"
            "| task | filler/other tokens | decisive words |\n|---|---|---|\n" + gen
        )
        if gen
        else ""
    )
    text = header + "\n" + gen + "\n" + summary(results, ROWS) + "\n" + table(results, ROWS)
    write_text(RESULTS / f"{a.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()
