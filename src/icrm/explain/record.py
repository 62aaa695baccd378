"""The record of one response explained by one reward model: its tokens' prefix rewards and their changes.

The HTML and PNG renderers read this record and need no model, so it lives
apart from the code that computes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Explained:
    """One response explained by one reward model.

    ``tokens[i]`` is the text of response token ``i`` (special tokens such as
    ``<|end|>`` appear as written), ``r[i]`` its prefix reward, ``delta[i]``
    its change ``r[i] - r[i-1]`` (``r[-1]`` being ``baseline``, the reward of
    the prompt alone), ``w[i]`` (optional) the generator probability of the
    token given everything before it, and ``outcome`` the reward ``r[-1]``.
    ``step_ends`` (responses given as steps) are the indices of the tokens
    where each step's score is read; ``step_labels`` the true step labels, if known.
    """

    model: str
    label: str
    tokens: list[str]
    r: list[float]
    delta: list[float]
    baseline: float
    outcome: float
    w: list[float] | None = None
    token_ids: list[int] = field(default_factory=list)
    step_ends: list[int] = field(default_factory=list)
    step_labels: list[int] | None = None

    @property
    def step_scores(self) -> list[float]:
        """The reward at the end of each step (the last one is ``outcome``)."""
        return [self.r[i] for i in self.step_ends]

    def step_mark(self, k: int) -> str:
        """``" ✓"`` or ``" ✗"`` for step ``k``'s true label, ``""`` when the labels are unknown."""
        if self.step_labels is None:
            return ""
        return " ✓" if self.step_labels[k] else " ✗"

    def to_dict(self) -> dict:
        return asdict(self)
