"""Token sequences to padded torch batches: the dataset the trainer reads and its collator.

The only module of :mod:`icrm.data` that needs torch, so that reading,
validating and converting data stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .examples import PairExample, StepExample
from .tokenize import Sequence


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, from the attention mask.

    Works for right and left padding and whatever ``pad_token_id`` is (it is
    often equal to EOS, which a pad-id search would mistake for padding).
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(-1)


class RewardCollator:
    """Pads a list of items into one batch: all first sequences, then all second.

    For pairs that puts every chosen row before every rejected row, so chosen
    and rejected go through the model in a single forward pass.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [seq for slot in range(len(items[0]["sequences"])) for seq in (it["sequences"][slot] for it in items)]
        width = max(s.length for s in seqs)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(seqs)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        response = torch.zeros((n, width), dtype=torch.bool)
        for row, seq in enumerate(seqs):
            input_ids[row, : seq.length] = torch.tensor(seq.input_ids)
            attention[row, : seq.length] = 1
            response[row, seq.start : seq.length] = True
        batch = {"input_ids": input_ids, "attention_mask": attention, "response_mask": response}
        if items[0].get("weights") is not None:
            weights = torch.zeros((n, width), dtype=torch.float32)
            flat = [w for slot in range(len(items[0]["weights"])) for w in (it["weights"][slot] for it in items)]
            for row, w in enumerate(flat):
                weights[row, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
            batch["gen_weights"] = weights
        if "margin" in items[0]:
            batch["margin"] = torch.tensor([it["margin"] for it in items], dtype=torch.float32)
        if "label" in items[0]:
            batch["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.float32)
        if "step_labels" in items[0]:
            batch.update(_step_batch(seqs, [it["step_labels"] for it in items]))
        return batch


def _step_batch(seqs: list[Sequence], labels: list[list[int]]) -> dict[str, torch.Tensor]:
    """``step_positions`` (token index of each step's score, −1 = no step) and ``step_labels``, ``[N, S]``."""
    width = max(len(row) for row in labels)
    positions = torch.full((len(seqs), width), -1, dtype=torch.long)
    targets = torch.zeros((len(seqs), width), dtype=torch.float32)
    for row, (seq, row_labels) in enumerate(zip(seqs, labels, strict=True)):
        positions[row, : len(seq.step_ends)] = torch.tensor(seq.step_ends, dtype=torch.long)
        targets[row, : len(row_labels)] = torch.tensor(row_labels, dtype=torch.float32)
    return {"step_positions": positions, "step_labels": targets}


class RewardDataset(torch.utils.data.Dataset):
    """Tokenized examples, with generator weights read lazily from the cache."""

    def __init__(self, examples: list, items: list[list[Sequence]], weights=None):
        self.examples, self.items, self.weights = examples, items, weights

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        seqs = self.items[index]
        item: dict[str, Any] = {"sequences": seqs, "length": max(s.length for s in seqs)}
        if self.weights is not None:
            base = index * len(seqs)
            item["weights"] = [self.weights[base + k] for k in range(len(seqs))]
        ex = self.examples[index]
        if isinstance(ex, PairExample):
            item["margin"] = ex.margin or 0.0
        else:
            item["label"] = ex.label
        if isinstance(ex, StepExample):
            item["step_labels"] = ex.labels
        return item

    @property
    def lengths(self) -> list[int]:
        return [max(s.length for s in seqs) for seqs in self.items]

    def all_sequences(self) -> list[Sequence]:
        """Every row, an example's rows consecutive (``group_size`` of them)."""
        return [seq for seqs in self.items for seq in seqs]

    @property
    def group_size(self) -> int:
        """Rows per example: 2 for pairs, 1 for graded responses."""
        return len(self.items[0]) if self.items else 1
