"""Supervised fine-tuning on a preference file's responses: which responses, and the batches they train in.

``icrm sft`` trains a causal LM (a generator for ``--generator``, a backbone or
a policy) on the responses chosen here, with the loss on response tokens only.
"""

from __future__ import annotations

from ..data import PairExample, PointExample, RewardCollator
from .config import ConfigFieldError


class SFTCollator(RewardCollator):
    """Padded prompt+response batches with loss only on response tokens."""

    def __call__(self, items):
        batch = super().__call__(items)
        labels = batch["input_ids"].masked_fill(~batch.pop("response_mask"), -100)
        batch.pop("margin", None)
        batch.pop("labels", None)
        batch["labels"] = labels
        return batch


SFT_RESPONSES = {
    # --responses: (pairwise sides kept, pointwise labels kept)
    "chosen": (("chosen",), (1.0,)),
    "correct": (("chosen",), (1.0,)),
    "rejected": (("rejected",), (0.0,)),
    "both": (("chosen", "rejected"), (1.0, 0.0)),
    "all": (("chosen", "rejected"), (1.0, 0.0)),
}


def sft_examples(examples: list, responses: str) -> list[PointExample]:
    """The responses ``icrm sft --responses`` trains on, as (prompt, response) examples.

    ``chosen`` (pointwise: ``correct``) makes a policy that imitates good
    answers; ``both`` (pointwise: ``all``) makes the generator the reference
    code uses for ICRM weights, which has seen text like every response it
    will weigh, good and bad.
    """
    if responses not in SFT_RESPONSES:
        raise ConfigFieldError(None, "responses", f"must be one of {', '.join(SFT_RESPONSES)}, got {responses!r}")
    sides, labels = SFT_RESPONSES[responses]
    out = []
    for ex in examples:
        if isinstance(ex, PairExample):
            out.extend(PointExample(ex.prompt, getattr(ex, side), 1.0) for side in sides)
        elif float(ex.label > 0.5) in labels:
            out.append(PointExample(ex.prompt, ex.response, 1.0))
    return out
