"""The preference stage: BT, GRM and ICRM on the embedded pairwise tasks, and where their rewards move.

Each task (the noisy-label task, the length shortcut, the suffix probe) gets its own SFT
generator and reward models, evaluated on every split of the task. The explain page then reads
the noisy task's BT and ICRM token by token.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...data import BAD_WORDS, GOOD_WORDS
from ...outputs import note
from ..evaluate import evaluate_pairs
from .settings import LABEL_FLIP, LOSS_TERMS, METHODS, DemoSettings
from .training import reward_model, task_and_generator


def preference_task(
    task: str, root: Path, settings: DemoSettings, results: dict, losses: dict, methods: dict = METHODS,
    n_test: int | None = None,
) -> None:
    """Generate a task, SFT a generator on it, train and evaluate each of ``methods``."""
    data, generator = task_and_generator(
        task, root, settings, "chosen and rejected responses", "both",
        n_train=settings.n_train, n_test=n_test or settings.n_test, flip=LABEL_FLIP.get(task, 0.0),
    )
    splits = sorted(p.stem for p in data.glob("*.jsonl") if p.stem not in ("prompts",))
    for method, (preset, lam) in methods.items():
        note(f"[bold]{task}[/bold]: training {method}")
        model_dir = root / "models" / f"{task}-{method.lower()}"
        metrics = reward_model(data / "train.jsonl", model_dir, generator, preset, settings, lam)
        history = [e for e in metrics["log_history"] if "loss" in e]  # training entries
        losses.setdefault(task, {})[method] = {t: [(e["step"], e[t]) for e in history if t in e] for t in LOSS_TERMS}
        for split in splits:
            evaluated = evaluate_pairs(str(model_dir), str(data / f"{split}.jsonl"), None)
            results.setdefault(method, {})[f"{task}/{split}"] = evaluated["accuracy"]



def explain_page(root: Path, n_pairs: int = 50) -> dict:
    """BT and ICRM per-token rewards on the same held-out pair, side by side.

    Returns where the reward changes fall on the first ``n_pairs`` held-out
    pairs: each model's share of Σ|Δr| on decisive-word tokens, next to those
    tokens' share of all tokens (what a reward moving equally everywhere
    gets). The page lists each response's largest |Δr|, and the report must
    say whether those are the decisive words or filler.
    """
    from ...explain import decisive_share, explain_responses, render_html, render_png
    from ...modeling import RewardModel, load_causal_lm

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

