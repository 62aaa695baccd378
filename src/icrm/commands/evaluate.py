"""``icrm eval``: pairwise accuracy, RewardBench 1 and 2 scores, or step metrics of a reward model on a data file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..data import DEFAULT_SEPARATOR, BonExample, DataError, StepExample, load_examples
from ..errors import UserError
from ..evaluation import (
    TIES,
    ScoringOptions,
    auroc,
    load_and_fit,
    pairwise_metrics,
    parse_ties_id,
    per_example,
    plot_margin_histogram,
    plot_step_profile,
    rewardbench2_metrics,
    score_sequences,
    score_steps,
    sigmoid,
    step_metrics,
)
from ..modeling import RewardModel
from ..outputs import check_output, write_json


def evaluate_pairs(
    model: str,
    data: str,
    output: Path | None,
    *,
    split: str | None = None,
    limit: int | None = None,
    scoring: ScoringOptions | None = None,
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
    ``--max-length``, this is the ``eval_accuracy`` a training run reports. ``scoring``: how the model is
    loaded and run (default: :class:`~icrm.evaluation.ScoringOptions`'s). An existing ``output`` (or plot
    beside it) is replaced only with ``overwrite``.
    """
    scoring = scoring or ScoringOptions()
    if output is not None:
        check_output(output, None, overwrite)  # first: a folder has no name to put the plots beside
        for plot in ("_margins.png", "_steps.png"):
            check_output(Path(output).with_name(Path(output).stem + plot), None, overwrite)
    if ties not in TIES:
        raise UserError(f"--ties must be {' or '.join(TIES)}, got {ties!r}")
    loaded = load_examples(data, split=split, skip_invalid=scoring.skip_invalid, limit=limit,
                           step_separator=step_separator)
    if loaded.format == "pointwise":
        raise DataError(data, "pointwise rows (response/label) give icrm eval nothing to compare: score them with "
                        "icrm score, or group each prompt's responses into a best-of-N row (candidates, labels) for "
                        "icrm bon", loaded.examples[0].line)
    if loaded.format == "bon":
        num_correct = [_chosen_first(ex, data) for ex in loaded.examples]
    rm, fitted = load_and_fit(model, loaded, scoring)
    if loaded.format == "stepwise":
        extra = {"skipped_rows": loaded.skipped, **fitted.counts(), "model": model, "data": data}
        return evaluate_steps(rm, fitted.examples, output, threshold=step_threshold,
                              scoring=dataclasses.replace(scoring, max_length=fitted.max_length), extra=extra,
                              overwrite=overwrite)
    scores = score_sequences(rm, fitted.sequences, scoring.batch_size, fitted.group_size)
    subsets = [ex.subset for ex in fitted.examples]
    named_subsets = subsets if any(s is not None for s in subsets) else None
    try:
        if loaded.format == "bon":
            per_row, ids = per_example(scores, fitted.examples), [ex.id for ex in fitted.examples]
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
    scoring: ScoringOptions | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Step-level metrics (:func:`icrm.evaluation.step_metrics`, under ``"steps"``) and the outcome's.

    The outcome is the last step's score (the reward ``score`` gives):
    ``outcome.auroc`` separates right from wrong chains, ``outcome.accuracy``
    counts ``σ(R) > 0.5`` as "right". The model is loaded already, so of
    ``scoring`` only ``batch_size`` and ``max_length`` apply; ``max_length``
    cuts prompts from the left (:func:`score_steps`). With ``output``, also writes
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
    scoring = scoring or ScoringOptions()
    prompts = [ex.prompt for ex in examples]
    scores = score_steps(rm, prompts, [ex.steps for ex in examples], examples[0].separator, scoring.batch_size,
                         scoring.max_length)
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
