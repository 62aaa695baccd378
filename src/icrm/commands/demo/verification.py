"""The verification stage: pointwise verifiers on a step-checked task, and best-of-N with them.

A verifier scores each sampled solution alone (BCE on its right-or-wrong label, with or without
the consistency term); best-of-N picks the top-scored of n candidates.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...data import BON_CANDIDATES
from ...outputs import note
from ..bon import best_of_n
from .settings import DemoSettings
from .training import reward_model, task_and_generator


def run_verification(root: Path, settings: DemoSettings, bon_results: dict, task: str = "addition") -> dict:
    """Pointwise verifiers (BCE vs BCE + consistency) on a step-checked task, and best-of-N with them.

    The demo's task is ``addition``; benchmarks/demo_bon.py also runs ``arithmetic`` through here.
    Returns how alike the two verifiers rank the candidates (:func:`_verifier_agreement`).
    """
    data, generator = task_and_generator(
        task, root, settings, "right and wrong solutions", "all",
        n_train=settings.addition_train, n_test=settings.addition_bon,
    )
    for method in ("BT", "ICRM"):
        note(f"[bold]{task}[/bold]: training {method} verifier")
        model_dir = root / "models" / f"{task}-{method.lower()}"
        reward_model(data / "train.jsonl", model_dir, generator, {"BT": "bt", "ICRM": "icrm-nosft"}[method], settings)
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
    from ...modeling import RewardModel

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
