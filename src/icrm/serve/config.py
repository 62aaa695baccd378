"""``ServeConfig``: the reward server's batching and limits, as a light settings dataclass the CLI reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import check_settings, setting

DEFAULT_MAX_LENGTH = 2048  # OpenRLHF's serve_rm default (--data.max_len), for a model without position limit
DEFAULT_MAX_BODY_SIZE = 8 * 2**20  # bytes: room for thousands of long conversations per request


@dataclass
class ServeConfig:
    """Batching and limits; ``None`` picks the default for the model's device (see :func:`~icrm.serve.create_app`)."""

    max_batch_size: int | None = setting(
        None, "Most sequences per forward pass (default: 16 on a GPU, 1 on a CPU)."
    )
    max_wait_ms: float = setting(0.0, "Extra wait for a batch to fill (0: batch what queued).")
    max_length: int | None = setting(
        None, f"Token limit per text (default: the model's position limit, else {DEFAULT_MAX_LENGTH})."
    )
    max_items: int = setting(1024, "Most texts per request.")
    normalize: bool = setting(False, "z-score with the training reward mean/std.")
    packing: bool | None = setting(
        None,
        "Run each batch as one packed sequence, no padding: same results, less compute "
        "(default: on where the model's attention packs at no extra cost, e.g. SDPA or flash attention).",
    )
    max_body_size: int | None = setting(
        None, "Largest request body in bytes (default: 8 MiB); larger ones get 413 unread."
    )

    def validate(self) -> None:
        """Fail before the model is loaded, naming the field."""
        check_settings(self, [
            ("max_batch_size", self.max_batch_size is None or self.max_batch_size >= 1,
             f"must be at least 1, got {self.max_batch_size}"),
            ("max_wait_ms", 0 <= self.max_wait_ms <= 60_000, f"must be between 0 and 60000, got {self.max_wait_ms}"),
            ("max_length", self.max_length is None or self.max_length >= 8, f"must be at least 8, got {self.max_length}"),
            ("max_items", self.max_items >= 1, f"must be at least 1, got {self.max_items}"),
            ("max_body_size", self.max_body_size is None or self.max_body_size >= 1,
             f"must be at least 1 byte, got {self.max_body_size}"),
        ])
