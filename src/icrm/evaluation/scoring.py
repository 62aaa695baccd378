"""Scoring with a reward model: loading it for inference, and the rewards of responses and of their steps.

The runners of ``icrm score``, ``icrm eval`` and ``icrm bon`` (``icrm.commands``)
and the policy and serving code score through these; the metrics on the
scores are pure functions in the other modules of this package.
"""

from __future__ import annotations

from ..data import DEFAULT_SEPARATOR, LoadedData, Sequence, StepExample, encode, responses_of, split_steps
from ..errors import UserError
from ..modeling import Fitted, RewardModel, fit_examples, resolve_max_length
from ..outputs import progress
from .settings import ScoringOptions


def load_reward_model(
    path: str, trust_remote_code: bool = False, allow_pickle: bool = False, packing: bool | None = None
) -> RewardModel:
    """A reward model in eval mode, scoring in padding-free batches as ``packing`` says (``--packing``;
    ``None``: where its attention packs at no extra cost)."""
    rm = RewardModel.from_pretrained(path, trust_remote_code, allow_pickle)
    rm.eval()
    return rm.use_padding_free(packing)


def load_and_fit(model: str, loaded: LoadedData, scoring: ScoringOptions) -> tuple[RewardModel, Fitted]:
    """The reward model as ``scoring`` loads it, and ``loaded``'s examples tokenized to fit its length limit.

    The first steps of every runner that scores a file, so ``score``, ``eval`` and ``bon`` read lengths alike.
    """
    rm = load_reward_model(model, scoring.trust_remote_code, scoring.allow_pickle, scoring.packing)
    return rm, fit_examples(rm.tokenizer, loaded, resolve_max_length(rm, scoring.max_length), scoring.skip_invalid)


def score_sequences(rm: RewardModel, seqs: list[Sequence], batch_size: int = 16, group_size: int = 1) -> list[float]:
    """Outcome rewards of tokenized sequences, in chunks, with a progress bar.

    ``group_size``: consecutive sequences are one example's (``Fitted.group_size``), batched together.
    """
    scores: list[float] = []
    chunk = max(batch_size * 8, 1) * group_size
    with progress("scoring", len(seqs)) as advance:
        for lo in range(0, len(seqs), chunk):
            part = seqs[lo : lo + chunk]
            scores.extend(float(r[-1]) for r in rm.sequence_rewards(part, batch_size, group_size))
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

    ``max_length`` cuts prompts from the left as :func:`~icrm.modeling.fit_examples` does, so
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


def chains_of(example, separator: str = DEFAULT_SEPARATOR) -> list[list[str]]:
    """The steps of each response of an example: its own for stepwise rows, else split at ``separator``."""
    if isinstance(example, StepExample):
        return [example.steps]
    return [split_steps(text, separator) for text in responses_of(example)]


def per_example(flat: list[float], examples: list) -> list[list[float]]:
    """Split one flat list of rewards, one per response in example order, back into each example's responses."""
    grouped, at = [], 0
    for ex in examples:
        n = len(responses_of(ex))
        grouped.append(flat[at : at + n])
        at += n
    return grouped
