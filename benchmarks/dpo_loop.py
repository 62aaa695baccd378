"""End-to-end policy benchmark: does DPO on ICRM-ranked pairs give a better policy than on BT-ranked pairs?

Per (task, seed), on the noisy-preference task and the length-confounded probe:

1. the task data and the SFT policy (20 epochs; the same model both reward
   models are initialised from and the ICRM generator) -- as in
   benchmarks/reproduction.py, whose functions and settings this reuses;
2. a BT and an ICRM (λ = 0.1, the paper default) reward model;
3. 4 samples per training prompt from the SFT policy, drawn once and shared
   by both reward models (held-out prompts are excluded);
4. ``dpo-pairs`` per reward model (best vs worst candidate by RM score), and
   how often each RM's chosen candidate is the one with the higher true reward;
5. DPO from the SFT policy on each pair file (README settings: 2 epochs,
   batch 16, lr 1e-4, β 0.1, max length 128);
6. SFT, DPO-BT and DPO-ICRM sampled on the first 200 held-out prompts and
   judged by the task's true reward (#good − #bad words): mean reward,
   win/tie/lose vs SFT and DPO-ICRM vs DPO-BT, mean length in words.

    python -m benchmarks.dpo_loop --seeds 3                # noisy + length, seeds 0..2
    python -m benchmarks.dpo_loop --seeds 1 --tasks noisy  # one cell

Raw numbers go to benchmarks/results/<out>.json after every (task, seed) and
are reused by a re-run with the same --out; the table to <out>.md.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from transformers import TrainingArguments

from icrm.commands.data import write_task
from icrm.commands.dpo import train_dpo
from icrm.commands.dpo_pairs import build_dpo_pairs_file
from icrm.commands.sample import sample_to_file
from icrm.commands.sft import train_sft
from icrm.data import true_reward
from icrm.modeling import ModelSpec
from icrm.outputs import write_jsonl
from icrm.policy import (
    DPOSettings,
    SamplingConfig,
    generate_samples,
    load_prompts,
    outcome_rates,
    prompt_key,
    prompt_value,
    true_reward_judge,
)
from icrm.training import TrainingOptions

from . import reproduction as repro
from .harness import RESULTS, ResultsFile, mean_std, measured, paired, seeded_parser, start, write_text

LOOP = {
    "n_candidates": 4,
    "max_new_tokens": 40,
    "sample_batch": 64,
    "dpo_epochs": 2.0,
    "dpo_batch": 16,
    "dpo_lr": 1e-4,
    "dpo_beta": 0.1,
    "n_eval_prompts": 200,
    "n_eval_samples": 4,
}
RMS = {
    "BT": repro.Row("BT", "bt"),
    "ICRM": repro.Row("ICRM λ=0.1 SFT", "icrm", 0.1),  # the paper default, the main comparison
    "ICRM-0.3": repro.Row("ICRM λ=0.3 SFT", "icrm", 0.3),  # secondary
}
EVAL_SPLIT = {"noisy": "test", "length": "test_mixed"}
POLICIES = ("SFT",) + tuple(f"DPO-{rm}" for rm in RMS)
ICRMS = [rm for rm in RMS if rm != "BT"]


def log(msg: str) -> None:
    print(msg, flush=True)


def _held_out_prompts(data: Path, task: str, n: int) -> Path:
    """The first n prompts of the task's (first) evaluation split, as a prompts file."""
    prompts = load_prompts(data / f"{EVAL_SPLIT[task]}.jsonl")[:n]
    path = data / "heldout_prompts.jsonl"
    write_jsonl(path, [{"prompt": prompt_value(p.messages)} for p in prompts])
    return path


def _train_prompts(data: Path, exclude: Path) -> Path:
    """Training prompts minus the held-out ones (sampling them would be wasted: dpo-pairs drops them)."""
    held = {prompt_key(p.messages) for p in load_prompts(exclude)}
    kept = [p for p in load_prompts(data / "train.jsonl") if prompt_key(p.messages) not in held]
    path = data / "train_prompts.jsonl"
    write_jsonl(path, [{"prompt": prompt_value(p.messages)} for p in kept])
    return path


def pair_agreement(task: str, pairs: Path) -> dict:
    """How often the RM's chosen candidate has a higher / equal / lower true reward than its rejected one."""
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    diffs = [true_reward(task, r["chosen"][0]["content"]) - true_reward(task, r["rejected"][0]["content"]) for r in rows]
    n = len(diffs)
    better = sum(d > 0 for d in diffs)
    worse = sum(d < 0 for d in diffs)
    decided = better + worse
    return {
        "pairs": n,
        "true_better": better / n,
        "true_tie": (n - decided) / n,
        "true_worse": worse / n,
        "agreement_decided": better / decided if decided else float("nan"),
        "chosen_minus_rejected_words": statistics.mean(
            len(r["chosen"][0]["content"].split()) - len(r["rejected"][0]["content"].split()) for r in rows
        ),
    }


def evaluate(task: str, policies: dict[str, Path], prompts_file: Path, seed: int) -> dict:
    """Sample each policy on the held-out prompts (same seed) and judge by the true reward."""
    config = SamplingConfig(
        n=LOOP["n_eval_samples"], max_new_tokens=LOOP["max_new_tokens"], seed=seed, batch_size=LOOP["sample_batch"]
    )
    prompts = load_prompts(prompts_file)
    judge = true_reward_judge(task)
    flat_prompts = [p.messages for p in prompts for _ in range(config.n)]
    rewards, words, truncated = {}, {}, {}
    for name, path in policies.items():
        samples = generate_samples(str(path), prompts, config)
        texts = [t for ts in samples.texts for t in ts]
        rewards[name] = [judge(p, t) for p, t in zip(flat_prompts, texts)]
        words[name] = [len(t.split()) for t in texts]
        truncated[name] = samples.truncated
    out = {}
    for name in policies:
        out[name] = {
            "mean_reward": statistics.mean(rewards[name]),
            "mean_words": statistics.mean(words[name]),
            "truncated": truncated[name] / len(texts),
            "vs_SFT": outcome_rates(rewards[name], rewards["SFT"]),
        }
    for rm in ICRMS:
        out[f"DPO-{rm}"]["vs_DPO-BT"] = outcome_rates(rewards[f"DPO-{rm}"], rewards["DPO-BT"])
    out["samples"] = len(flat_prompts)
    return out


def run_cell(task: str, seed: int) -> dict:
    flip, _ = repro.TASKS[task]
    s = repro.SETTINGS
    cell: dict = {"time_s": {}}
    with tempfile.TemporaryDirectory(prefix="icrm-dpo-loop-") as tmp:
        work = Path(tmp)
        data, sft = work / "data", work / "sft"
        write_task(task, data, seed=seed, n_train=s["n_train"], n_test=s["n_test"], flip=flip)

        t0 = time.time()
        targs = TrainingArguments(output_dir=str(sft), **repro.training_args(seed, s["sft_epochs"]))
        train_sft(str(data / "train.jsonl"), str(sft), targs, ModelSpec("tiny"), max_length=s["max_length"])
        cell["time_s"]["sft"] = time.time() - t0

        rms = {}
        for name, row in RMS.items():
            t0 = time.time()
            rm_work = work / f"rm-{name}"
            rm_work.mkdir()
            acc = repro.run_row(row, data, sft, rm_work, seed, repro.TASKS[task][1])
            rms[name] = rm_work / "rm"
            cell.setdefault("rm_accuracy", {})[name] = acc
            cell["time_s"][f"rm_{name}"] = time.time() - t0
            log(f"[{task} seed {seed}] RM {name}: {acc} ({time.time() - t0:.0f}s)")

        t0 = time.time()
        heldout = _held_out_prompts(data, task, LOOP["n_eval_prompts"])
        train_prompts = _train_prompts(data, heldout)
        candidates = work / "candidates.jsonl"
        sampling = SamplingConfig(
            n=LOOP["n_candidates"], max_new_tokens=LOOP["max_new_tokens"], seed=seed, batch_size=LOOP["sample_batch"]
        )
        cell["sampling"] = sample_to_file(str(sft), str(train_prompts), candidates, sampling)
        cell["time_s"]["sample"] = time.time() - t0
        log(f"[{task} seed {seed}] sampled {cell['sampling']} ({time.time() - t0:.0f}s)")

        policies = {"SFT": sft}
        for name, rm in rms.items():
            t0 = time.time()
            pairs = work / f"pairs-{name}.jsonl"
            counts = build_dpo_pairs_file(str(rm), str(candidates), pairs, exclude_prompts=str(heldout), batch_size=32)
            cell.setdefault("pairs", {})[name] = {**counts, **pair_agreement(task, pairs)}
            training = TrainingOptions(
                num_train_epochs=LOOP["dpo_epochs"], per_device_train_batch_size=LOOP["dpo_batch"],
                learning_rate=LOOP["dpo_lr"], seed=seed, logging_steps=5,
            ).trainer_kwargs()
            settings = DPOSettings(beta=LOOP["dpo_beta"], max_length=s["max_length"])
            metrics = train_dpo(str(sft), str(pairs), work / f"dpo-{name}", training, settings)
            cell.setdefault("dpo", {})[name] = {
                k: metrics[k] for k in ("train_loss", "steps", "pairs", "final_reward_accuracy", "final_reward_margin")
            }
            policies[f"DPO-{name}"] = work / f"dpo-{name}"
            cell["time_s"][f"dpo_{name}"] = time.time() - t0
            log(f"[{task} seed {seed}] pairs+DPO {name}: {cell['pairs'][name]} ({time.time() - t0:.0f}s)")

        t0 = time.time()
        cell["eval"] = evaluate(task, policies, heldout, seed)
        cell["time_s"]["eval"] = time.time() - t0
        log(f"[{task} seed {seed}] eval {json.dumps(cell['eval'])} ({time.time() - t0:.0f}s)")
    return cell


# ---------------------------------------------------------------- report


def _diff(xs: list[float], ys: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """:func:`harness.paired`, and the one difference when there is a single seed (one cell is a quick check)."""
    if len(xs) == 1:
        return f"{scale * (xs[0] - ys[0]):+.{digits}f} (1 seed)"
    return paired(xs, ys, scale, digits)


def report(results: dict) -> str:
    lines = []
    for task, per_seed in results.items():
        seeds = sorted(per_seed, key=int)
        cells = [per_seed[s] for s in seeds]
        ev = [c["eval"] for c in cells]
        lines += [
            f"### {task} ({len(seeds)} seeds: {', '.join(seeds)}; held-out split {EVAL_SPLIT[task]})",
            "",
            "| policy | true reward (mean ± std) | win % vs SFT | tie % vs SFT | lose % vs SFT | words |",
            "|---|---|---|---|---|---|",
        ]
        for p in POLICIES:
            vs = [e[p]["vs_SFT"] for e in ev]
            lines.append(
                f"| {p} | {mean_std([e[p]['mean_reward'] for e in ev], 1, 2)} | "
                + " | ".join(mean_std([v[k] for v in vs]) for k in ("win_rate", "tie_rate", "lose_rate"))
                + f" | {mean_std([e[p]['mean_words'] for e in ev], 1, 1)} |"
            )
        lines += [
            "",
            "| paired by seed: mean [95 % t-interval] seeds ahead | " + " | ".join(f"{rm} − BT" for rm in ICRMS) + " |",
            "|---|" + "---|" * len(ICRMS),
        ]

        def diffs(get, cells=cells, **kw) -> str:
            return " | ".join(
                _diff([get(c, f"DPO-{rm}", rm) for c in cells], [get(c, "DPO-BT", "BT") for c in cells], **kw)
                for rm in ICRMS
            )

        lines += [
            "| Δ true reward of the DPO policy | " + diffs(lambda c, p, r: c["eval"][p]["mean_reward"]) + " |",
            "| Δ words of the DPO policy | " + diffs(lambda c, p, r: c["eval"][p]["mean_words"], digits=1) + " |",
            "| head-to-head, DPO-ICRM vs DPO-BT: win / tie / lose % | "
            + " | ".join(
                " / ".join(mean_std([e[f"DPO-{rm}"]["vs_DPO-BT"][k] for e in ev])
                           for k in ("win_rate", "tie_rate", "lose_rate"))
                for rm in ICRMS
            )
            + " |",
            "| Δ pair agreement with true reward, pts (decided pairs) | "
            + diffs(lambda c, p, r: c["pairs"][r]["agreement_decided"], scale=100, digits=1)
            + " |",
            "",
            (
                "| RM | pairs | chosen truly better % | tie % | worse % | agreement on decided % "
                "| chosen − rejected words | RM held-out accuracy % |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for rm in RMS:
            pr = [c["pairs"][rm] for c in cells]
            split = repro.TASKS[task][1][0]
            lines.append(
                f"| {rm} | {mean_std([x['pairs'] for x in pr], 1, 0)} | "
                + " | ".join(mean_std([x[k] for x in pr]) for k in ("true_better", "true_tie", "true_worse"))
                + f" | {mean_std([x['agreement_decided'] for x in pr])}"
                + f" | {mean_std([x['chosen_minus_rejected_words'] for x in pr], 1, 1)}"
                + f" | {mean_std([c['rm_accuracy'][rm][split] for c in cells])} ({split}) |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = seeded_parser(__doc__, seeds=3)
    p.add_argument("--tasks", default="noisy,length")
    p.add_argument("--out", default="dpo_loop")
    a = p.parse_args(argv)

    seeds = start(a)
    settings = {**repro.SETTINGS, **LOOP}
    store = ResultsFile(RESULTS / f"{a.out}.json", settings=settings)
    results = store.parts["results"]

    for seed in seeds:
        for task in a.tasks.split(","):
            if str(seed) in results.get(task, {}):
                continue
            t0 = time.time()
            results.setdefault(task, {})[str(seed)] = run_cell(task, seed)
            store.save()
            log(f"[{task} seed {seed}] done in {time.time() - t0:.0f}s")

    info = store.load()
    text = (
        f"{measured(info)}.\n"
        f"Settings: {json.dumps(settings)}.\n\n" + report(info["results"])
    )
    write_text(RESULTS / f"{a.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()
