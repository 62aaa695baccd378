"""The length-grouped batch order, seeded so that a resumed run trains on the batches the first run would have."""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped sampler, with an order that depends on the seed and the epoch alone.

    transformers' own draws each epoch's order from the global torch RNG, which
    by a later epoch also holds every dropout draw of the epochs before. A run
    resumed in that epoch skips to its checkpoint's batch before the RNG state
    is restored, so it drew another order and trained on other batches. As
    accelerate's ``SeedableRandomSampler`` does for the random order, the
    generator is reseeded with ``seed + epoch`` (the dataloader calls
    ``set_epoch`` each epoch), and the global RNG is left alone.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()
