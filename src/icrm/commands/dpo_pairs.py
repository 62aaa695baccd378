"""``icrm dpo-pairs``: score best-of-N candidates with a reward model and keep the best and worst as a DPO pair.

The pairs are written in TRL's conversational ``prompt``/``chosen``/``rejected``
format, which ``icrm dpo`` (and TRL itself) trains on.
"""

from __future__ import annotations

from pathlib import Path

from ..data import load_examples
from ..errors import UserError
from ..outputs import check_output, write_jsonl
from ..policy import make_dpo_pairs, prompt_key, prompt_keys


def build_dpo_pairs_file(
    model: str,
    data: str,
    output: str | Path,
    *,
    min_gap: float = 0.0,
    exclude_prompts: str | None = None,
    batch_size: int = 16,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict[str, int]:
    """``icrm dpo-pairs``: score best-of-N candidates and write chosen/rejected pairs.

    Overlapping prompts are removed before scoring, so no reward-model time
    is spent on them. No pair at all is an error (a DPO run on an empty file
    could only fail later, with a less helpful message). An existing ``output``
    is replaced only with ``overwrite``.
    """
    from ..evaluation import load_reward_model, score_responses

    check_output(output, None, overwrite)
    if min_gap < 0:
        raise UserError(f"--min-gap must be >= 0, got {min_gap}")
    loaded = load_examples(data, expect=("bon",), skip_invalid=skip_invalid)
    exclude = prompt_keys(exclude_prompts)
    examples = loaded.examples
    kept = [ex for ex in examples if prompt_key(ex.prompt) not in exclude]
    if not kept:
        raise UserError(f"{data}: all {len(examples)} prompts occur in {exclude_prompts}; no DPO pairs left")
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    flat = score_responses(
        rm, [ex.prompt for ex in kept for _ in ex.candidates], [c for ex in kept for c in ex.candidates], batch_size
    )
    rewards, at = [], 0
    for ex in kept:
        rewards.append(flat[at : at + len(ex.candidates)])
        at += len(ex.candidates)
    rows, counts = make_dpo_pairs(
        [ex.prompt for ex in kept], [ex.candidates for ex in kept], rewards, min_gap, ids=[ex.id for ex in kept]
    )
    counts["prompts"] = len(examples)
    counts["overlap"] = len(examples) - len(kept)
    counts["skipped_rows"] = loaded.skipped
    if not rows:
        reasons = ", ".join(f"{counts[k]} {k}" for k in ("overlap", "identical", "tie", "gap"))
        raise UserError(f"{data}: no DPO pairs left out of {len(examples)} prompts ({reasons})")
    write_jsonl(output, rows)
    return counts
