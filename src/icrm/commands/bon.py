"""``icrm bon``: best-of-N verification of a reward model, accuracy@n against the random floor and the oracle."""

from __future__ import annotations

from pathlib import Path

from ..data import DEFAULT_SEPARATOR, BonExample, canonical_answer, extract_answer, load_examples, split_steps
from ..errors import UserError
from ..evaluation import (
    AGGREGATES,
    ScoringOptions,
    aggregate,
    bon_metrics,
    load_and_fit,
    per_example,
    plot_bon_curve,
    score_sequences,
    score_steps,
)
from ..outputs import check_output, write_json


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
    aggregate_steps: str = "last",
    step_separator: str = DEFAULT_SEPARATOR,
    scoring: ScoringOptions | None = None,
    overwrite: bool = False,
) -> dict:
    """Best-of-N verification: accuracy@n, pass@n, random@n (+ majority@n with answers).

    A candidate is correct by its ``labels`` entry, or, without labels, when its
    extracted final answer equals the row's ``answer``. Candidates are ranked
    by their step rewards aggregated with ``aggregate_steps`` (steps: the
    candidate split at ``step_separator``): ``last`` is the outcome reward,
    ``min`` the weakest step (PRM papers' usual choice), ``mean`` the mean σ(r).
    ``scoring``: how the model is loaded and run (default: :class:`~icrm.evaluation.ScoringOptions`'s).
    ``output`` (report.json, with its curve beside it as PNG) replaces existing
    files only with ``overwrite``.
    """
    if output is not None:
        check_output(output, None, overwrite)
        check_output(Path(output).with_suffix(".png"), None, overwrite)
    if aggregate_steps not in AGGREGATES:
        raise UserError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate_steps!r}")
    scoring = scoring or ScoringOptions()
    loaded = load_examples(data, expect=("bon",), skip_invalid=scoring.skip_invalid)
    examples: list[BonExample] = loaded.examples
    labels = []
    for ex in examples:
        if ex.labels is not None:
            labels.append(ex.labels)
        elif ex.answer is not None:
            labels.append([int(extract_answer(c) == canonical_answer(ex.answer)) for c in ex.candidates])
        else:
            raise UserError(f"{data}:{ex.line}: labels: best-of-N needs `labels` or an `answer` per row")
    if not isinstance(ns, list):
        ns = parse_ns(ns, min(len(ex.candidates) for ex in examples))
    if not ns or ns[0] < 1:
        raise UserError(f"--n values must be at least 1, got {ns}")
    for ex in examples:
        if ns[-1] > len(ex.candidates):
            raise UserError(f"{data}:{ex.line}: candidates: n={ns[-1]} exceeds the {len(ex.candidates)} candidates")
    rm, fitted = load_and_fit(model, loaded, scoring)
    labels = [labels[i] for i in fitted.kept]
    examples = fitted.examples
    answers = None
    if all(ex.answer is not None for ex in examples):
        answers = [[extract_answer(c) for c in ex.candidates] for ex in examples]
    if aggregate_steps == "last":  # the last step's score is the outcome reward: no need to split
        flat = score_sequences(rm, fitted.sequences, scoring.batch_size, fitted.group_size)
    else:
        prompts = [ex.prompt for ex in examples for _ in ex.candidates]
        chains = [split_steps(text, step_separator) for ex in examples for text in ex.candidates]
        scored = score_steps(rm, prompts, chains, step_separator, scoring.batch_size, fitted.max_length)
        flat = [aggregate(row, aggregate_steps) for row in scored]
    scores = per_example(flat, examples)
    try:
        report = bon_metrics(scores, labels, ns, answers=answers, n_draws=n_draws, seed=seed)
    except ValueError as err:
        raise UserError(f"{data}: {err}") from err
    report.update(model=model, data=data, skipped_rows=loaded.skipped, aggregate=aggregate_steps, **fitted.counts())
    if output is not None:
        write_json(output, report)
        plot_bon_curve(report, Path(output).with_suffix(".png"))
    return report
