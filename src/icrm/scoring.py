"""Score data files with a reward model, and run ``icrm eval`` / ``icrm bon``.

The metric definitions live in :mod:`icrm.evaluation` (pure functions of
floats); this module loads the model and the data, scores every response
with :meth:`RewardModel.score`, and writes the outputs atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from .data import BonExample, PairExample, PointExample, flatten_responses, load_examples, responses_of
from .errors import UserError
from .evaluation import bon_metrics, pairwise_metrics, plot_bon_curve, plot_margin_histogram
from .modeling import RewardModel
from .outputs import progress, write_json, write_jsonl


def load_reward_model(path: str, trust_remote_code: bool = False, allow_pickle: bool = False) -> RewardModel:
    rm = RewardModel.from_pretrained(path, trust_remote_code, allow_pickle)
    rm.eval()
    return rm


def score_responses(rm: RewardModel, prompts: list, responses: list[str], batch_size: int = 16) -> list[float]:
    """Scores in chunks, with a progress bar."""
    scores: list[float] = []
    chunk = max(batch_size * 8, 1)
    with progress("scoring", len(responses)) as advance:
        for lo in range(0, len(responses), chunk):
            scores.extend(rm.score(prompts[lo : lo + chunk], responses[lo : lo + chunk], batch_size))
            advance(len(responses[lo : lo + chunk]))
    return scores


def evaluate_pairs(
    model: str,
    data: str,
    output: Path | None,
    *,
    split: str | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> dict:
    """Pairwise accuracy (overall, per subset, per section) of a reward model."""
    loaded = load_examples(data, expect=("pairwise",), split=split, skip_invalid=skip_invalid, limit=limit)
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    prompts, responses = flatten_responses(loaded.examples)
    scores = score_responses(rm, prompts, responses, batch_size)
    chosen, rejected = scores[0::2], scores[1::2]
    lengths = [len(rm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    subsets = [ex.subset for ex in loaded.examples]
    try:
        metrics = pairwise_metrics(
            chosen,
            rejected,
            subsets if any(s is not None for s in subsets) else None,
            chosen_lengths=lengths[0::2],
            rejected_lengths=lengths[1::2],
        )
    except ValueError as err:
        raise UserError(f"{data}: {err}") from err
    metrics["skipped_rows"] = loaded.skipped
    metrics["model"] = model
    metrics["data"] = data
    if output is not None:
        write_json(output, metrics)
        plot_margin_histogram(chosen, rejected, Path(output).with_name(Path(output).stem + "_margins.png"))
    return metrics


def score_file(
    model: str,
    data: str,
    output: Path,
    *,
    normalize: bool = False,
    split: str | None = None,
    batch_size: int = 16,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    per_token: bool = False,
    generator: str | None = None,
) -> int:
    """Write ``data`` back with a reward per response; returns the row count.

    With ``per_token`` every row also gets ``token_rewards``: one entry per
    response (in the row's order), with the token texts, the prefix rewards
    ``r``, their changes ``delta`` and, given a generator, its probabilities ``w``.
    """
    loaded = load_examples(data, split=split, skip_invalid=skip_invalid)
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    if normalize and not rm.reward_stats:
        raise UserError(f"{model}: --normalize needs reward statistics, which only icrm checkpoints store")
    prompts, responses = flatten_responses(loaded.examples)
    scores = score_responses(rm, prompts, responses, batch_size)
    if normalize:
        mean, std = rm.reward_stats["mean"], rm.reward_stats["std"]
        scores = [(s - mean) / std for s in scores]
    rows, at = [], 0
    for ex in loaded.examples:
        n = len(responses_of(ex))
        rows.append(_scored_row(ex, scores[at : at + n]))
        at += n
    if per_token:
        _add_token_rewards(rm, loaded.examples, rows, generator)
    write_jsonl(output, rows)
    return len(rows)


def _add_token_rewards(rm: RewardModel, examples: list, rows: list[dict], generator: str | None) -> None:
    """Process rewards: per response token, its text, r_t, Δr_t and (with a generator) w_t."""
    from .explain import explain_responses
    from .generator import load_generator

    gen = load_generator(generator, rm.tokenizer)
    with progress("per-token rewards", len(examples)) as advance:
        for ex, row in zip(examples, rows):
            texts = responses_of(ex)
            explained = explain_responses(rm, ex.prompt, [(str(i), t) for i, t in enumerate(texts)], "rm", gen)
            row["token_rewards"] = [
                {"tokens": e.tokens, "r": e.r, "delta": e.delta, **({"w": e.w} if e.w is not None else {})}
                for e in explained
            ]
            advance(1)


def _scored_row(ex, scores: list[float]) -> dict:
    row: dict = {"prompt": ex.prompt}
    if ex.id is not None:
        row["id"] = ex.id
    if isinstance(ex, PairExample):
        row.update(chosen=ex.chosen, rejected=ex.rejected, chosen_reward=scores[0], rejected_reward=scores[1])
        if ex.subset is not None:
            row["subset"] = ex.subset
    elif isinstance(ex, PointExample):
        row.update(response=ex.response, label=ex.label, reward=scores[0])
    else:
        row.update(candidates=ex.candidates, rewards=scores)
        if ex.labels is not None:
            row["labels"] = ex.labels
        if ex.answer is not None:
            row["answer"] = ex.answer
    return row


_ANSWER_PATTERNS = (
    re.compile(r"####\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"Answer:\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"(?:^|\n)A:\s*\$?(-?[\d,]*\.?\d+)"),
    re.compile(r"\\boxed\{([^}]*)\}"),
)
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: ``#### 42``, ``Answer: 42``, ``\\boxed{42}``, else the last number."""
    for pattern in _ANSWER_PATTERNS:
        found = pattern.findall(text)
        if found:
            return _canonical(found[-1])
    numbers = _NUMBER.findall(text)
    return _canonical(numbers[-1]) if numbers else None


def _canonical(answer: str) -> str:
    answer = answer.strip().replace(",", "").rstrip(".")
    try:
        value = float(answer)
    except ValueError:
        return answer
    return str(int(value)) if value.is_integer() else str(value)


def parse_ns(text: str | None, max_candidates: int) -> list[int]:
    """``"1,2,4"`` → [1, 2, 4]; default: powers of two up to the candidate count."""
    if not text:
        ns, n = [], 1
        while n < max_candidates:
            ns.append(n)
            n *= 2
        return ns + [max_candidates]
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as err:
        raise UserError(f"--n must be comma-separated integers, got {text!r}") from err


def best_of_n(
    model: str,
    data: str,
    output: Path | None,
    *,
    ns: list[int] | str | None = None,
    n_draws: int = 32,
    seed: int = 0,
    batch_size: int = 16,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> dict:
    """Best-of-N verification: accuracy@n, pass@n, random@n (+ majority@n with answers).

    A candidate is correct by its ``labels`` entry, or, without labels, when its
    extracted final answer equals the row's ``answer``.
    """
    loaded = load_examples(data, expect=("bon",), skip_invalid=skip_invalid)
    examples: list[BonExample] = loaded.examples
    labels = []
    for ex in examples:
        if ex.labels is not None:
            labels.append(ex.labels)
        elif ex.answer is not None:
            labels.append([int(extract_answer(c) == _canonical(ex.answer)) for c in ex.candidates])
        else:
            raise UserError(f"{data}:{ex.line}: labels: best-of-N needs `labels` or an `answer` per row")
    if not isinstance(ns, list):
        ns = parse_ns(ns, min(len(ex.candidates) for ex in examples))
    if not ns or ns[0] < 1:
        raise UserError(f"--n values must be at least 1, got {ns}")
    for ex in examples:
        if ns[-1] > len(ex.candidates):
            raise UserError(f"{data}:{ex.line}: candidates: n={ns[-1]} exceeds the {len(ex.candidates)} candidates")
    answers = None
    if all(ex.answer is not None for ex in examples):
        answers = [[extract_answer(c) for c in ex.candidates] for ex in examples]
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    prompts, responses = flatten_responses(examples)
    flat = score_responses(rm, prompts, responses, batch_size)
    scores, at = [], 0
    for ex in examples:
        scores.append(flat[at : at + len(ex.candidates)])
        at += len(ex.candidates)
    try:
        report = bon_metrics(scores, labels, ns, answers=answers, n_draws=n_draws, seed=seed)
    except ValueError as err:
        raise UserError(f"{data}: {err}") from err
    report.update(model=model, data=data, skipped_rows=loaded.skipped)
    if output is not None:
        write_json(output, report)
        plot_bon_curve(report, Path(output).with_suffix(".png"))
    return report
