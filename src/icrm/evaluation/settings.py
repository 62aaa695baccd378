"""``ScoringOptions``: how a reward model is loaded and run to score a data file, as a light settings dataclass.

``icrm eval``, ``score`` and ``bon`` share these settings, and their runners
(``icrm.commands``) take them as one keyword; the CLI builds the options from
the fields. Light on purpose (no torch): ``icrm --help`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..modeling import ModelSpec
from ..settings import help_of, setting


@dataclass
class ScoringOptions:
    """The loading, length and batching settings of scoring a file with a reward model."""

    batch_size: int = setting(16, "Sequences per forward pass.")
    max_length: int | None = setting(
        None, "Max tokens of prompt+response; a longer prompt loses tokens from the left, a longer response is an "
        "error (or skipped with --skip-invalid) [default: the model's position limit]."
    )
    packing: bool | None = setting(
        None,
        "Run each batch as one packed sequence, no padding: same results, less compute "
        "(default: on where the model's attention packs at no extra cost, e.g. SDPA or flash attention).",
    )
    skip_invalid: bool = setting(False, "Skip and count bad rows instead of stopping.")
    trust_remote_code: bool = setting(False, help_of(ModelSpec, "trust_remote_code"))
    allow_pickle: bool = setting(False, help_of(ModelSpec, "allow_pickle"))
