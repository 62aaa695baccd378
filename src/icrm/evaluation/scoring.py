"""Score data files with a reward model, and run ``icrm eval`` / ``icrm bon``.

The metric definitions live in :mod:`icrm.evaluation` (pure functions of
floats); this module loads the model and the data, scores every response
with :meth:`RewardModel.score`, and writes the outputs atomically.
"""

from __future__ import annotations

from pathlib import Path

from ..data import (
    AGGREGATES,
    DEFAULT_SEPARATOR,
    BonExample,
    DataError,
    PairExample,
    Sequence,
    StepExample,
    aggregate,
    auroc,
    canonical_answer,
    encode,
    extract_answer,
    load_examples,
    plot_step_profile,
    responses_of,
    sigmoid,
    split_steps,
    step_metrics,
)
from ..errors import UserError
from ..modeling import Fitted, RewardModel, fit_examples, resolve_max_length
from ..outputs import check_output, progress, write_json, write_jsonl
from .metrics import (
    TIES,
    bon_metrics,
    pairwise_metrics,
    parse_ties_id,
    plot_bon_curve,
    plot_margin_histogram,
    rewardbench2_metrics,
)


def load_reward_model(
    path: str, trust_remote_code: bool = False, allow_pickle: bool = False, packing: bool | None = None
) -> RewardModel:
    """A reward model in eval mode, scoring in padding-free batches as ``packing`` says (``--packing``;
    ``None``: where its attention packs at no extra cost)."""
    rm = RewardModel.from_pretrained(path, trust_remote_code, allow_pickle)
    rm.eval()
    return rm.use_padding_free(packing)


# ------------------------------------------------------------------ scoring


def score_sequences(rm: RewardModel, seqs: list[Sequence], batch_size: int = 16) -> list[float]:
    """Outcome rewards of tokenized sequences, in chunks, with a progress bar."""
    scores: list[float] = []
    chunk = max(batch_size * 8, 1)
    with progress("scoring", len(seqs)) as advance:
        for lo in range(0, len(seqs), chunk):
            part = seqs[lo : lo + chunk]
            scores.extend(float(r[-1]) for r in rm.sequence_rewards(part, batch_size))
            advance(len(part))
    return scores


def score_responses(rm: RewardModel, prompts: list, responses: list[str], batch_size: int = 16) -> list[float]:
    """Outcome rewards of (prompt messages, response) pairs, at full length."""
    return score_sequences(rm, [encode(rm.tokenizer, p, r) for p, r in zip(prompts, responses)], batch_size)


def score_steps(
    rm: RewardModel,
    prompts: list,
    chains: list[list[str]],
    separator: str = DEFAULT_SEPARATOR,
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[list[float]]:
    """Step rewards of every chain (:meth:`RewardModel.step_rewards_batch`) in chunks, with a progress bar.

    ``max_length`` cuts prompts from the left as :func:`fit_examples` does, so
    a chain's last step score is the reward ``icrm score`` gives its response.
    """
    scores: list[list[float]] = []
    chunk = max(batch_size * 8, 1)
    with progress("scoring steps", len(chains)) as advance:
        for lo in range(0, len(chains), chunk):
            try:
                scores.extend(rm.step_rewards_batch(prompts[lo : lo + chunk], chains[lo : lo + chunk], separator,
                                                    batch_size, max_length))
            except ValueError as err:
                raise UserError(f"cannot read step scores: {err}") from err
            advance(len(chains[lo : lo + chunk]))
    return scores


def evaluate_pairs(
    model: str,
    data: str,
    output: Path | None,
    *,
    split: str | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    max_length: int | None = None,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    packing: bool | None = None,
    ties: str = "half",
    step_threshold: float = 0.5,
    step_separator: str = DEFAULT_SEPARATOR,
    overwrite: bool = False,
) -> dict:
    """``icrm eval``: pairwise accuracy (per subset, RewardBench sections), RewardBench 2 scores, or step metrics.

    Pairwise rows get :func:`~icrm.evaluation.pairwise_metrics`; best-of-N rows
    (RewardBench 2's ``chosen``/``rejected`` lists, or ``candidates`` with
    their ``labels`` listing the chosen first) get
    :func:`~icrm.evaluation.rewardbench2_metrics`. ``ties`` ("half" or "loss")
    is how a tie at the top counts; see :data:`~icrm.evaluation.TIES`.
    Stepwise rows (TRL stepwise supervision, ProcessBench) get
    :func:`evaluate_steps`. Other rows are tokenized as in training (see
    :func:`fit_examples`), so on the same pairwise file, given the training
    ``--max-length``, this is the ``eval_accuracy`` a training run reports. An existing ``output`` (or plot
    beside it) is replaced only with ``overwrite``.
    """
    if output is not None:
        check_output(output, None, overwrite)  # first: a folder has no name to put the plots beside
        for plot in ("_margins.png", "_steps.png"):
            check_output(Path(output).with_name(Path(output).stem + plot), None, overwrite)
    if ties not in TIES:
        raise UserError(f"--ties must be {' or '.join(TIES)}, got {ties!r}")
    loaded = load_examples(data, split=split, skip_invalid=skip_invalid, limit=limit, step_separator=step_separator)
    if loaded.format == "pointwise":
        raise DataError(data, "pointwise rows (response/label) give icrm eval nothing to compare: score them with "
                        "icrm score, or group each prompt's responses into a best-of-N row (candidates, labels) for "
                        "icrm bon", loaded.examples[0].line)
    if loaded.format == "bon":
        num_correct = [_chosen_first(ex, data) for ex in loaded.examples]
    rm = load_reward_model(model, trust_remote_code, allow_pickle, packing)
    fitted = fit_examples(rm.tokenizer, loaded, resolve_max_length(rm, max_length), skip_invalid)
    if loaded.format == "stepwise":
        extra = {"skipped_rows": loaded.skipped, **fitted.counts(), "model": model, "data": data}
        return evaluate_steps(rm, fitted.examples, output, threshold=step_threshold, batch_size=batch_size,
                              max_length=fitted.max_length, extra=extra, overwrite=overwrite)
    scores = score_sequences(rm, fitted.sequences, batch_size)
    subsets = [ex.subset for ex in fitted.examples]
    named_subsets = subsets if any(s is not None for s in subsets) else None
    try:
        if loaded.format == "bon":
            per_row, ids = _per_example(scores, fitted.examples), [ex.id for ex in fitted.examples]
            metrics = rewardbench2_metrics(per_row, [num_correct[i] for i in fitted.kept], named_subsets, ids,
                                           ties=ties)
        else:
            chosen, rejected = scores[0::2], scores[1::2]
            lengths = [seq.length - seq.start for seq in fitted.sequences]  # response tokens
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
    metrics.update(fitted.counts())
    metrics["model"] = model
    metrics["data"] = data
    if output is not None:
        write_json(output, metrics)
        if loaded.format == "pairwise":
            plot_margin_histogram(chosen, rejected, Path(output).with_name(Path(output).stem + "_margins.png"))
    return metrics


def evaluate_steps(
    rm: RewardModel,
    examples: list[StepExample],
    output: Path | None = None,
    *,
    threshold: float = 0.5,
    batch_size: int = 16,
    max_length: int | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Step-level metrics (:func:`icrm.steps.step_metrics`, under ``"steps"``) and the outcome's.

    The outcome is the last step's score (the reward ``score`` gives):
    ``outcome.auroc`` separates right from wrong chains, ``outcome.accuracy``
    counts ``σ(R) > 0.5`` as "right". ``max_length`` cuts prompts from the
    left (:func:`score_steps`). With ``output``, also writes
    ``<stem>_steps.png``: σ(r) around the first wrong step and along right chains;
    existing files are replaced only with ``overwrite``.
    """
    if output is not None:
        check_output(output, None, overwrite)
        check_output(Path(output).with_name(Path(output).stem + "_steps.png"), None, overwrite)
    if not 0.0 < threshold < 1.0:
        raise UserError(f"--step-threshold must be in (0, 1), got {threshold}")
    if not examples:
        raise UserError("no chains to evaluate")
    prompts = [ex.prompt for ex in examples]
    scores = score_steps(rm, prompts, [ex.steps for ex in examples], examples[0].separator, batch_size, max_length)
    labels = [ex.labels for ex in examples]
    outcome = [row[-1] for row in scores]
    metrics = {
        "format": "stepwise",
        "n": len(examples),
        "outcome": {
            "auroc": auroc(outcome, [ex.label for ex in examples]),
            "accuracy": sum((sigmoid(r) > 0.5) == bool(ex.label) for r, ex in zip(outcome, examples)) / len(examples),
        },
        "steps": step_metrics(scores, labels, threshold),
        **(extra or {}),
    }
    if output is not None:
        write_json(output, metrics)
        plot_step_profile(scores, labels, Path(output).with_name(Path(output).stem + "_steps.png"))
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
    max_length: int | None = None,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    packing: bool | None = None,
    per_token: bool = False,
    generator: str | None = None,
    per_step: bool = False,
    step_separator: str = DEFAULT_SEPARATOR,
    overwrite: bool = False,
) -> dict:
    """Write ``data`` back with a reward per response; returns the row count and the length counts.

    Each row keeps its columns exactly as read, so the output joins with the
    input; the scores are added beside them (same-named columns are replaced):
    ``chosen_reward``/``rejected_reward`` for pairs, ``reward`` for pointwise
    and stepwise rows (no ``label`` needed), ``rewards`` for best-of-N rows (in
    candidate order; RewardBench 2 rows: chosen, then rejected).

    With ``per_token`` every row also gets ``token_rewards``: one entry per
    response (in the row's order), with the token texts, the prefix rewards
    ``r``, their changes ``delta`` and, given a generator, its probabilities ``w``.
    With ``per_step`` every response also gets its step rewards (the steps of
    stepwise rows, other responses split at ``step_separator``): ``step_rewards``
    (pointwise, stepwise; a list per candidate for best-of-N) or
    ``chosen_step_rewards``/``rejected_step_rewards``. An existing ``output``
    is replaced only with ``overwrite``.
    """
    check_output(output, None, overwrite)
    loaded = load_examples(data, split=split, skip_invalid=skip_invalid, step_separator=step_separator,
                           require_labels=False)
    rm = load_reward_model(model, trust_remote_code, allow_pickle, packing)
    fitted = fit_examples(rm.tokenizer, loaded, resolve_max_length(rm, max_length), skip_invalid)
    if normalize and not rm.reward_stats:
        raise UserError(f"{model}: --normalize needs reward statistics, which only icrm checkpoints store")
    scores = score_sequences(rm, fitted.sequences, batch_size)
    mean, std = (rm.reward_stats["mean"], rm.reward_stats["std"]) if normalize else (0.0, 1.0)
    scores = [(s - mean) / std for s in scores]
    rows = [{**loaded.rows[i], **_score_columns(ex, row)}
            for i, ex, row in zip(fitted.kept, fitted.examples, _per_example(scores, fitted.examples))]
    if per_token:
        _add_token_rewards(rm, fitted, rows, generator)
    if per_step:
        _add_step_rewards(rm, fitted, rows, step_separator, batch_size, (mean, std))
    write_jsonl(output, rows)
    return {"rows": len(rows), "skipped_rows": loaded.skipped, **fitted.counts()}


def _add_token_rewards(rm: RewardModel, fitted: Fitted, rows: list[dict], generator: str | None) -> None:
    """Process rewards: per response token, its text, r_t, Δr_t and (with a generator) w_t."""
    from ..explain import explain_responses
    from ..modeling import load_generator

    gen = load_generator(generator, rm.tokenizer)
    with progress("per-token rewards", len(fitted.examples)) as advance:
        for ex, row in zip(fitted.examples, rows):
            texts = [(str(i), t) for i, t in enumerate(responses_of(ex))]
            explained = explain_responses(rm, ex.prompt, texts, "rm", gen, fitted.max_length)
            row["token_rewards"] = [
                {"tokens": e.tokens, "r": e.r, "delta": e.delta, **({"w": e.w} if e.w is not None else {})}
                for e in explained
            ]
            advance(1)


def chains_of(example, separator: str = DEFAULT_SEPARATOR) -> list[list[str]]:
    """The steps of each response of an example: its own for stepwise rows, else split at ``separator``."""
    if isinstance(example, StepExample):
        return [example.steps]
    return [split_steps(text, separator) for text in responses_of(example)]


def _add_step_rewards(
    rm: RewardModel, fitted: Fitted, rows: list[dict], separator: str, batch_size: int, scale: tuple[float, float]
) -> None:
    """Step rewards of every response, in the fields :func:`score_file` documents, z-scored like the rewards."""
    examples, prompts, chains = fitted.examples, [], []
    for ex in examples:
        for chain in chains_of(ex, separator):
            prompts.append(ex.prompt)
            chains.append(chain)
    mean, std = scale
    scored = score_steps(rm, prompts, chains, separator, batch_size, fitted.max_length)
    flat = [[(r - mean) / std for r in row] for row in scored]
    for ex, row, per_response in zip(examples, rows, _per_example(flat, examples)):
        if isinstance(ex, PairExample):
            row["chosen_step_rewards"], row["rejected_step_rewards"] = per_response
        elif isinstance(ex, BonExample):
            row["step_rewards"] = per_response
        else:
            row["step_rewards"] = per_response[0]


def _score_columns(ex, scores: list[float]) -> dict:
    """The columns ``icrm score`` adds to a row: its responses' rewards."""
    if isinstance(ex, PairExample):
        return {"chosen_reward": scores[0], "rejected_reward": scores[1]}
    if isinstance(ex, BonExample):
        return {"rewards": scores}
    return {"reward": scores[0]}


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
    max_length: int | None = None,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    aggregate_steps: str = "last",
    step_separator: str = DEFAULT_SEPARATOR,
    packing: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Best-of-N verification: accuracy@n, pass@n, random@n (+ majority@n with answers).

    A candidate is correct by its ``labels`` entry, or, without labels, when its
    extracted final answer equals the row's ``answer``. Candidates are ranked
    by their step rewards aggregated with ``aggregate_steps`` (steps: the
    candidate split at ``step_separator``): ``last`` is the outcome reward,
    ``min`` the weakest step (PRM papers' usual choice), ``mean`` the mean σ(r).
    ``output`` (report.json, with its curve beside it as PNG) replaces existing
    files only with ``overwrite``.
    """
    if output is not None:
        check_output(output, None, overwrite)
        check_output(Path(output).with_suffix(".png"), None, overwrite)
    if aggregate_steps not in AGGREGATES:
        raise UserError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate_steps!r}")
    loaded = load_examples(data, expect=("bon",), skip_invalid=skip_invalid)
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
    rm = load_reward_model(model, trust_remote_code, allow_pickle, packing)
    fitted = fit_examples(rm.tokenizer, loaded, resolve_max_length(rm, max_length), skip_invalid)
    labels = [labels[i] for i in fitted.kept]
    examples = fitted.examples
    answers = None
    if all(ex.answer is not None for ex in examples):
        answers = [[extract_answer(c) for c in ex.candidates] for ex in examples]
    if aggregate_steps == "last":  # the last step's score is the outcome reward: no need to split
        flat = score_sequences(rm, fitted.sequences, batch_size)
    else:
        prompts = [ex.prompt for ex in examples for _ in ex.candidates]
        chains = [split_steps(text, step_separator) for ex in examples for text in ex.candidates]
        scored = score_steps(rm, prompts, chains, step_separator, batch_size, fitted.max_length)
        flat = [aggregate(row, aggregate_steps) for row in scored]
    scores = _per_example(flat, examples)
    try:
        report = bon_metrics(scores, labels, ns, answers=answers, n_draws=n_draws, seed=seed)
    except ValueError as err:
        raise UserError(f"{data}: {err}") from err
    report.update(model=model, data=data, skipped_rows=loaded.skipped, aggregate=aggregate_steps, **fitted.counts())
    if output is not None:
        write_json(output, report)
        plot_bon_curve(report, Path(output).with_suffix(".png"))
    return report
