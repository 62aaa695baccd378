"""``icrm sample``: N responses per prompt from a policy, written as best-of-N rows.

The first step of the policy loop: ``sample`` -> ``dpo-pairs`` -> ``dpo`` ->
``compare-policies``. The rows (``prompt``, ``candidates``, ``id``;
docs/design.md#best-of-n-rows) are what ``dpo-pairs`` and ``bon`` read.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..outputs import check_output, write_jsonl
from ..policy import SamplingConfig, generate_samples, load_prompts, prompt_value


def sample_to_file(
    policy: str,
    prompts_source: str,
    output: str | Path,
    config: SamplingConfig,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict:
    """``icrm sample``: write best-of-N rows (``prompt``, ``candidates``, ``id``) atomically.

    Empty responses are left out of ``candidates`` and counted: the best-of-N
    format requires non-empty responses, and an empty answer carries no text
    to prefer or reject. A prompt left with no candidate is dropped and
    counted. An existing ``output`` is replaced only with ``overwrite``.
    """
    check_output(output, None, overwrite)
    config.validate()
    prompts = load_prompts(prompts_source)
    samples = generate_samples(policy, prompts, config, trust_remote_code, allow_pickle)
    rows, empty, dropped = [], 0, 0
    for prompt, texts in zip(prompts, samples.texts):
        kept = [t for t in texts if t]
        empty += len(texts) - len(kept)
        if not kept:
            dropped += 1
            continue
        row = {"prompt": prompt_value(prompt.messages), "candidates": kept}
        if prompt.id is not None:
            row["id"] = prompt.id
        rows.append(row)
    if not rows:
        raise UserError(f"{policy}: every sampled response was empty; nothing to write")
    write_jsonl(output, rows)
    return {
        "prompts": len(prompts),
        "rows": len(rows),
        "samples": sum(len(r["candidates"]) for r in rows),
        "empty_dropped": empty,
        "prompts_dropped": dropped,
        "truncated": samples.truncated,
        "output": str(output),
    }
