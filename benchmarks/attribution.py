"""Attribution metric on the noisy-preference task, where the decisive tokens are known (issue 9).

Does the per-token reward change Δr_t = r_t − r_{t−1} fall where the true
reward changes? On the noisy task the true reward is #GOOD − #BAD words, so
every token is either decisive (part of a GOOD/BAD word) or filler. For each
reward model and held-out response (chosen and rejected of the first
``--n-eval`` clean test pairs) this computes, with ``icrm.explain``:

* decisive share: the share of Σ|Δr| over the response's word tokens that
  falls on decisive tokens (``explain.decisive_share``), next to the decisive
  tokens' share of tokens (what a reward that moves equally everywhere gets);
* Spearman correlation between Δr and the true per-token change (+1 on the
  first token of a GOOD word, −1 on the first token of a BAD word, 0
  elsewhere; ``explain.rank_correlation``), per response, NaN skipped
  (responses without decisive words have no defined correlation);
* end share: the share of Σ|Δr| (all tokens) at the final end-of-turn token,
  where the outcome reward is read. That token is excluded from the two
  metrics above;
* extras: sign agreement, the share of decisive words whose first token moves
  the reward in the true direction (Δr > 0 for GOOD, < 0 for BAD); and a
  level (not step) view, the Spearman correlation between the prefix reward
  r_t and the true reward of the prefix (#GOOD − #BAD so far), per response.

Tasks, generator and reward models are made exactly as in reproduction.py
(same settings, seeds and rows; its functions are imported), so accuracies here
match its noisy/test column for the same seed. Per seed: one dataset, one SFT
generator, then BT, GRM, ICRM λ=0.1 (paper default) and ICRM λ=0.3; means ±
std over seeds, and differences to BT paired by seed.

    python -m benchmarks.attribution --seeds 3          # results/attribution.{json,md}
    python -m benchmarks.attribution --quick --results-dir /tmp  # smoke test: 1 seed, BT + ICRM λ=0.1, 20 pairs

Resumes like reproduction.py: results are saved after every model and a
re-run with the same --out trains only the missing (seed, row) models.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ICRM_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from transformers import TrainingArguments

from icrm.commands.data import write_task
from icrm.commands.sft import train_sft
from icrm.data import BAD_WORDS, GOOD_WORDS, decisive_word_mask
from icrm.explain import Explained, decisive_share, explain_responses, rank_correlation
from icrm.modeling import ModelSpec, RewardModel

from . import reproduction as R
from .harness import RESULTS, ResultsFile, mean_std, measured, paired, seeded_parser, start, write_text

TASK, FLIP = "noisy", R.TASKS["noisy"][0]
ROWS = R.ROWS[:4]  # BT, GRM, ICRM λ=0.1 SFT (paper default), ICRM λ=0.3 SFT
QUICK_ROWS = [R.ROWS[0], R.ROWS[2]]
METRICS = {  # key -> (label, unit): "pct" values are shown ×100
    "decisive_share": ("decisive share of Σ\\|Δr\\| %", "pct"),
    "decisive_token_share": ("decisive share of tokens % (chance)", "pct"),
    "spearman": ("Spearman(Δr, true Δ)", "raw"),
    "end_share": ("end-token share of Σ\\|Δr\\| %", "pct"),
    "end_token_share": ("end token's share of tokens % (chance)", "pct"),
    "sign_agreement": ("sign agreement at decisive words %", "pct"),
    "level_spearman": ("Spearman(r_t, true prefix reward)", "raw"),
}
CHANCE = ("decisive_token_share", "end_token_share")  # reference values, not compared between rows


# ---------------------------------------------------------------- per response


def token_labels(ex: Explained, response: str) -> tuple[list[bool], list[float]]:
    """Per response token (end tokens excluded): is it decisive, and its true reward change.

    Token texts concatenate to the response followed by the end-of-turn text;
    a token is decisive if its character span overlaps a GOOD/BAD word, and
    the true change is ±1 on the first token that overlaps such a word.
    """
    joined = "".join(ex.tokens)
    if not joined.startswith(response):
        raise ValueError(f"token texts {joined!r} do not start with the response {response!r}")
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", response)]
    mask = decisive_word_mask(response)
    norm = [w.strip(".,;:!?\"'()").lower() for w in response.split()]
    sign = [1.0 if w in GOOD_WORDS else -1.0 if w in BAD_WORDS else 0.0 for w in norm]
    assert len(words) == len(mask) == len(sign)
    decisive, true = [], []
    pos, seen = 0, set()
    for text in ex.tokens:
        if pos >= len(response):  # end-of-turn text (the template's end token and anything after it)
            break
        # an empty text is a byte fragment of the previous token's character: give it that character
        begin, end = (pos, pos + len(text)) if text else (max(pos - 1, 0), pos)
        pos += len(text)
        hit = [j for j, (a, b) in enumerate(words) if a < end and begin < b and mask[j]]
        decisive.append(bool(hit))
        new = [j for j in hit if j not in seen]
        seen.update(hit)
        true.append(sign[new[0]] if new else 0.0)
    return decisive, true


def response_metrics(ex: Explained, response: str) -> dict[str, float]:
    decisive, true = token_labels(ex, response)
    n = len(decisive)
    if n != len(ex.tokens) - 1:
        raise ValueError(f"expected exactly one end-of-turn token after the response, got {len(ex.tokens) - n}")
    delta = np.asarray(ex.delta, dtype=np.float64)
    body = delta[:n]
    total = float(np.abs(delta).sum())
    signs = [np.sign(body[i]) == t for i, t in enumerate(true) if t != 0]
    return {
        "decisive_share": decisive_share(body.tolist(), decisive),
        "decisive_token_share": sum(decisive) / n,
        "spearman": rank_correlation(body.tolist(), true),
        "end_share": abs(float(delta[-1])) / total if total > 0 else float("nan"),
        "end_token_share": 1 / len(ex.tokens),
        "sign_agreement": float(np.mean(signs)) if signs else float("nan"),
        "level_spearman": rank_correlation(ex.r[:n], np.cumsum(true).tolist()),
        "n_decisive_words": float(sum(t != 0 for t in true)),
    }


def nanmean(xs: list[float]) -> tuple[float, int]:
    ok = [x for x in xs if math.isfinite(x)]
    return (statistics.mean(ok) if ok else float("nan")), len(ok)


@torch.no_grad()
def attribution(rm_dir: Path, test: Path, n_eval: int) -> dict:
    """Mean metrics over the chosen and rejected responses of the first ``n_eval`` test pairs."""
    rm = RewardModel.from_pretrained(str(rm_dir))
    per: dict[str, list[float]] = {k: [] for k in METRICS}
    rows = [json.loads(line) for line in test.read_text().splitlines()[:n_eval]]
    end_texts = set()
    for row in rows:
        pair = [("chosen", row["chosen"]), ("rejected", row["rejected"])]
        for (label, response), ex in zip(pair, explain_responses(rm, row["prompt"], pair, "rm", None, 128)):
            m = response_metrics(ex, response)
            end_texts.add(ex.tokens[-1])
            for k in METRICS:
                per[k].append(m[k])
    out: dict = {"n_responses": len(per["spearman"]), "end_token": sorted(end_texts)}
    for k, xs in per.items():
        out[k], out[f"n_{k}"] = nanmean(xs)
    return out


# ---------------------------------------------------------------- grid


def run(seeds: list[int], rows: list[R.Row], n_eval: int, results: dict, checks: dict, save) -> None:
    for seed in seeds:
        todo = [r for r in rows if r.name not in results.get(str(seed), {})]
        if not todo:
            continue
        with tempfile.TemporaryDirectory(prefix="icrm-attr-") as tmp:
            work = Path(tmp)
            data, sft = work / "data", work / "sft"
            S = R.SETTINGS
            write_task(TASK, data, seed=seed, n_train=S["n_train"], n_test=S["n_test"], flip=FLIP)
            t0 = time.time()
            targs = TrainingArguments(output_dir=str(sft), **R.training_args(seed, S["sft_epochs"]))
            train_sft(str(data / "train.jsonl"), str(sft), targs, ModelSpec("tiny"), max_length=S["max_length"])
            checks[str(seed)] = R.generator_check(sft, data)
            print(f"[seed {seed}] SFT {time.time() - t0:.0f}s, generator p: {checks[str(seed)]}", flush=True)
            for row in todo:
                t0 = time.time()
                acc = R.run_row(row, data, sft, work, seed, ["test"])["test"]
                t1 = time.time()
                m = attribution(work / "rm", data / "test.jsonl", n_eval)
                m.update(accuracy=acc, train_eval_s=round(t1 - t0, 1), attribution_s=round(time.time() - t1, 1))
                results.setdefault(str(seed), {})[row.name] = m
                save()
                print(
                    f"[seed {seed}] {row.name:16s} acc={acc:.3f} share={m['decisive_share']:.3f} "
                    f"(chance {m['decisive_token_share']:.3f}) rho={m['spearman']:+.3f} end={m['end_share']:.3f} "
                    f"sign={m['sign_agreement']:.3f}  ({t1 - t0:.0f}s + {time.time() - t1:.0f}s)",
                    flush=True,
                )


# ---------------------------------------------------------------- report


UNITS = {"pct": (100.0, 1), "raw": (1.0, 3)}  # unit -> (scale, digits) of mean_std and paired


def report(info: dict, rows: list[R.Row]) -> str:
    results = info["results"]
    seeds = sorted(results, key=int)
    names = [r.name for r in rows if any(r.name in results[s] for s in seeds)]
    cols = {"accuracy": ("accuracy % (500 test pairs)", "pct"), **METRICS}

    def vals(name: str, key: str) -> list[float]:
        return [results[s][name][key] for s in seeds if name in results[s]]

    lines = [
        f"### Mean ± std over {len(seeds)} seeds ({', '.join(seeds)})",
        "",
        "| row | " + " | ".join(label for label, _ in cols.values()) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(mean_std(vals(name, k), *UNITS[u]) for k, (_, u) in cols.items()) + " |")
    lines += [
        "",
        "### Paired difference to BT (mean [95 % t-interval] seeds where row > BT)",
        "",
        "| row | " + " | ".join(f"Δ {label}" for k, (label, _) in cols.items() if k not in CHANCE) + " |",
        "|---" * (len(cols) - len(CHANCE) + 1) + "|",
    ]
    for name in names:
        if name == "BT":
            continue
        both = [s for s in seeds if name in results[s] and "BT" in results[s]]
        cells = [
            paired([results[s][name][k] for s in both], [results[s]["BT"][k] for s in both], *UNITS[u])
            for k, (_, u) in cols.items()
            if k not in CHANCE
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### Per seed", "", "| seed | row | acc % | share % | chance % | Spearman | end % | sign % | level Spearman |", "|---" * 9 + "|"]
    for s in seeds:
        for name in names:
            if name in results[s]:
                m = results[s][name]
                lines.append(
                    f"| {s} | {name} | {100 * m['accuracy']:.1f} | {100 * m['decisive_share']:.1f} | "
                    f"{100 * m['decisive_token_share']:.1f} | {m['spearman']:+.3f} | {100 * m['end_share']:.1f} | "
                    f"{100 * m['sign_agreement']:.1f} | {m['level_spearman']:+.3f} |"
                )
    any_m = next(iter(results[seeds[0]].values()))
    head = (
        f"Attribution on the noisy task, first {info['n_eval']} held-out pairs (chosen + rejected = "
        f"{any_m['n_responses']} responses; Spearman defined on {any_m['n_spearman']} of them in seed {seeds[0]}, "
        f"{any_m['end_token']} end token excluded from share and Spearman).\n"
        f"{measured(info)}.\n"
        f"Settings (as reproduction.py): {json.dumps(info['settings'])}.\n"
    )
    checks = info.get("generator_check", {})
    if checks:
        head += (
            "Generator check (mean p_gen, first 100 held-out pairs): filler "
            f"{mean_std([c['other'] for c in checks.values()])} %, decisive "
            f"{mean_std([c['decisive'] for c in checks.values()])} %.\n"
        )
    return head + "\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = seeded_parser(__doc__, seeds=3)
    p.add_argument("--n-eval", type=int, default=200, help="held-out pairs to explain (both responses)")
    p.add_argument("--quick", action="store_true", help="1 seed, BT and ICRM λ=0.1, 20 pairs")
    p.add_argument("--out", default="attribution", help="name of the results files")
    p.add_argument("--results-dir", default=str(RESULTS), help="where they go")
    a = p.parse_args(argv)

    rows, seeds = list(ROWS), start(a)
    if a.quick:
        rows, seeds, a.n_eval = QUICK_ROWS, [a.first_seed], 20

    out_dir = Path(a.results_dir)
    store = ResultsFile(out_dir / f"{a.out}.json", ("generator_check", "results"), settings=R.SETTINGS, n_eval=a.n_eval)
    results, checks = store.parts["results"], store.parts["generator_check"]
    run(seeds, rows, a.n_eval, results, checks, store.save)
    text = report(store.load(), ROWS)
    write_text(out_dir / f"{a.out}.md", text)
    print(text)


if __name__ == "__main__":
    main()
