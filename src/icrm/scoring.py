"""Score data files with a reward model, and run ``icrm eval`` / ``icrm bon``.

The metric definitions live in :mod:`icrm.evaluation` (pure functions of
floats); this module loads the model and the data, scores every response
with :meth:`RewardModel.score`, and writes the outputs atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from .data import (
    BonExample,
    DataError,
    PairExample,
    PointExample,
    flatten_responses,
    load_examples,
    responses_of,
)
from .errors import UserError
from .evaluation import (
    TIES,
    bon_metrics,
    pairwise_metrics,
    parse_ties_id,
    plot_bon_curve,
    plot_margin_histogram,
    rewardbench2_metrics,
)
from .modeling import RewardModel
from .outputs import progress, write_json, write_jsonl


def load_reward_model(
    path: str, trust_remote_code: bool = False, allow_pickle: bool = False, packing: bool | None = None
) -> RewardModel:
    """A reward model in eval mode, scoring in padding-free batches as ``packing`` says (``--packing``;
    ``None``: where its attention packs at no extra cost)."""
    rm = RewardModel.from_pretrained(path, trust_remote_code, allow_pickle)
    rm.eval()
    return rm.use_padding_free(packing)


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
    packing: bool | None = None,
    ties: str = "half",
) -> dict:
    """``icrm eval``: pairwise accuracy (per subset, RewardBench sections), or RewardBench 2 scores.

    Pairwise rows get :func:`~icrm.evaluation.pairwise_metrics`; best-of-N rows
    (RewardBench 2's ``chosen``/``rejected`` lists, or ``candidates`` with
    their ``labels`` listing the chosen first) get
    :func:`~icrm.evaluation.rewardbench2_metrics`. ``ties`` ("half" or "loss")
    is how a tie at the top counts; see :data:`~icrm.evaluation.TIES`.
    """
    if ties not in TIES:
        raise UserError(f"--ties must be {' or '.join(TIES)}, got {ties!r}")
    loaded = load_examples(data, expect=("pairwise", "bon"), split=split, skip_invalid=skip_invalid, limit=limit)
    if loaded.format == "bon":
        num_correct = [_chosen_first(ex, data) for ex in loaded.examples]
    rm = load_reward_model(model, trust_remote_code, allow_pickle, packing)
    prompts, responses = flatten_responses(loaded.examples)
    scores = score_responses(rm, prompts, responses, batch_size)
    subsets = [ex.subset for ex in loaded.examples]
    named_subsets = subsets if any(s is not None for s in subsets) else None
    try:
        if loaded.format == "bon":
            per_row, ids = _per_example(scores, loaded.examples), [ex.id for ex in loaded.examples]
            metrics = rewardbench2_metrics(per_row, num_correct, named_subsets, ids, ties=ties)
        else:
            chosen, rejected = scores[0::2], scores[1::2]
            lengths = [len(rm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
            metrics = pairwise_metrics(
                chosen,
                rejected,
                named_subsets,
                chosen_lengths=lengths[0::2],
                rejected_lengths=lengths[1::2],
                ties=ties,
            )
    except ValueError as err:
        raise UserError(f"{data}: {err}") from err
    metrics["skipped_rows"] = loaded.skipped
    metrics["model"] = model
    metrics["data"] = data
    if output is not None:
        write_json(output, metrics)
        if loaded.format == "pairwise":
            plot_margin_histogram(chosen, rejected, Path(output).with_name(Path(output).stem + "_margins.png"))
    return metrics


def _chosen_first(ex: BonExample, source: str) -> int:
    """How many chosen responses lead a best-of-N row; ``icrm eval`` scores the first one.

    Checked before any model is loaded, along with the Ties rows' ids, so a
    bad file fails fast with its line.
    """
    labels = ex.labels
    if labels is None:
        raise DataError(source, "icrm eval needs chosen/rejected lists or labelled candidates", ex.line, "labels")
    num_correct = sum(labels)
    if labels != [1] * num_correct + [0] * (len(labels) - num_correct) or not 0 < num_correct < len(labels):
        raise DataError(
            source,
            "icrm eval needs the chosen (label 1) candidates first, then a rejected one (else use icrm bon)",
            ex.line,
            "labels",
        )
    if ex.subset is not None and ex.subset.lower() == "ties":
        try:
            parse_ties_id(ex.id)
        except ValueError as err:
            raise DataError(source, str(err), ex.line, "id") from err
    return num_correct


def _per_example(flat: list[float], examples: list) -> list[list[float]]:
    """Split one flat list of rewards back into each example's responses."""
    grouped, at = [], 0
    for ex in examples:
        n = len(responses_of(ex))
        grouped.append(flat[at : at + n])
        at += n
    return grouped


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
    packing: bool | None = None,
    per_token: bool = False,
    generator: str | None = None,
) -> int:
    """Write ``data`` back with a reward per response; returns the row count.

    With ``per_token`` every row also gets ``token_rewards``: one entry per
    response (in the row's order), with the token texts, the prefix rewards
    ``r``, their changes ``delta`` and, given a generator, its probabilities ``w``.
    """
    loaded = load_examples(data, split=split, skip_invalid=skip_invalid)
    rm = load_reward_model(model, trust_remote_code, allow_pickle, packing)
    if normalize and not rm.reward_stats:
        raise UserError(f"{model}: --normalize needs reward statistics, which only icrm checkpoints store")
    prompts, responses = flatten_responses(loaded.examples)
    scores = score_responses(rm, prompts, responses, batch_size)
    if normalize:
        mean, std = rm.reward_stats["mean"], rm.reward_stats["std"]
        scores = [(s - mean) / std for s in scores]
    rows = [_scored_row(ex, row) for ex, row in zip(loaded.examples, _per_example(scores, loaded.examples))]
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
        if ex.subset is not None:
            row["subset"] = ex.subset
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
    packing: bool | None = None,
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
    rm = load_reward_model(model, trust_remote_code, allow_pickle, packing)
    prompts, responses = flatten_responses(examples)
    scores = _per_example(score_responses(rm, prompts, responses, batch_size), examples)
    try:
        report = bon_metrics(scores, labels, ns, answers=answers, n_draws=n_draws, seed=seed)
    except ValueError as err:
        raise UserError(f"{data}: {err}") from err
    report.update(model=model, data=data, skipped_rows=loaded.skipped)
    if output is not None:
        write_json(output, report)
        plot_bon_curve(report, Path(output).with_suffix(".png"))
    return report
