"""``icrm score``: a data file written back with a reward per response, and optionally per token and per step."""

from __future__ import annotations

from pathlib import Path

from ..data import DEFAULT_SEPARATOR, BonExample, PairExample, load_examples, responses_of
from ..errors import UserError
from ..evaluation import ScoringOptions, chains_of, load_and_fit, per_example, score_sequences, score_steps
from ..explain import explain_responses
from ..modeling import Fitted, RewardModel, load_generator
from ..outputs import check_output, progress, write_jsonl


def score_file(
    model: str,
    data: str,
    output: Path,
    *,
    normalize: bool = False,
    split: str | None = None,
    scoring: ScoringOptions | None = None,
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
    candidate order; RewardBench 2 rows: chosen, then rejected). ``scoring``:
    how the model is loaded and run (default: :class:`~icrm.evaluation.ScoringOptions`'s).

    With ``per_token`` every row also gets ``token_rewards``: one entry per
    response (in the row's order), with the token texts, the prefix rewards
    ``r``, their changes ``delta`` and, given a generator, its probabilities ``w``.
    With ``per_step`` every response also gets its step rewards (the steps of
    stepwise rows, other responses split at ``step_separator``): ``step_rewards``
    (pointwise, stepwise; a list per candidate for best-of-N) or
    ``chosen_step_rewards``/``rejected_step_rewards``. An existing ``output``
    is replaced only with ``overwrite``.
    """
    scoring = scoring or ScoringOptions()
    check_output(output, None, overwrite)
    loaded = load_examples(data, split=split, skip_invalid=scoring.skip_invalid, step_separator=step_separator,
                           require_labels=False)
    rm, fitted = load_and_fit(model, loaded, scoring)
    if normalize and not rm.reward_stats:
        raise UserError(f"{model}: --normalize needs reward statistics, which only icrm checkpoints store")
    scores = score_sequences(rm, fitted.sequences, scoring.batch_size, fitted.group_size)
    mean, std = (rm.reward_stats["mean"], rm.reward_stats["std"]) if normalize else (0.0, 1.0)
    scores = [(s - mean) / std for s in scores]
    rows = [{**loaded.rows[i], **_score_columns(ex, row)}
            for i, ex, row in zip(fitted.kept, fitted.examples, per_example(scores, fitted.examples))]
    if per_token:
        _add_token_rewards(rm, fitted, rows, generator)
    if per_step:
        _add_step_rewards(rm, fitted, rows, step_separator, scoring.batch_size, (mean, std))
    write_jsonl(output, rows)
    return {"rows": len(rows), "skipped_rows": loaded.skipped, **fitted.counts()}


def _add_token_rewards(rm: RewardModel, fitted: Fitted, rows: list[dict], generator: str | None) -> None:
    """Process rewards: per response token, its text, r_t, Δr_t and (with a generator) w_t."""
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
    for ex, row, per_response in zip(examples, rows, per_example(flat, examples)):
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
