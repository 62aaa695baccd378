"""``ServeConfig``: the reward server's batching and limits, as a light settings dataclass the CLI reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import SettingError, setting

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
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise SettingError(self, "max_batch_size", f"must be at least 1, got {self.max_batch_size}")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise SettingError(self, "max_wait_ms", f"must be between 0 and 60000, got {self.max_wait_ms}")
        if self.max_length is not None and self.max_length < 8:
            raise SettingError(self, "max_length", f"must be at least 8, got {self.max_length}")
        if self.max_items < 1:
            raise SettingError(self, "max_items", f"must be at least 1, got {self.max_items}")
        if self.max_body_size is not None and self.max_body_size < 1:
            raise SettingError(self, "max_body_size", f"must be at least 1 byte, got {self.max_body_size}")
