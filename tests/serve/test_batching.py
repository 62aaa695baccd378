"""Batching does not change the maths: extra padding and length-grouped order give the same rewards and losses."""

from __future__ import annotations

import pytest
import torch

from icrm.data import PairExample, RewardCollator, RewardDataset, tokenize_examples
from icrm.training import ICRMConfig, ICRMTrainer, TrainingOptions

PROMPTS = ["hello world", "the quick brown fox", "how are you today?", "lazy dog"]
RESPONSES = [("the dog jumps over the fox", "dog"), ("hello", "the lazy dog is brown"), ("fine", "fine thanks, you?"),
             ("quick", "the quick brown fox jumps over the lazy dog")]


def _dataset(rm):
    examples = [PairExample([{"role": "user", "content": p}], c, r) for p, (c, r) in zip(PROMPTS, RESPONSES)]
    items, _, _ = tokenize_examples(examples, rm.tokenizer, 128)
    return RewardDataset(examples, items)


def _trainer(rm, tmp_path, group_by_length=False):
    config = ICRMConfig(output_dir=str(tmp_path), method="icrm", generator="self",
                          **TrainingOptions(per_device_train_batch_size=2).trainer_kwargs(group_by_length))
    dataset = _dataset(rm)
    return ICRMTrainer(model=rm, args=config, train_dataset=dataset,
                       data_collator=RewardCollator(rm.tokenizer.pad_token_id)), dataset


def _pad_more(batch, extra: int, pad_id: int):
    wider = {}
    for key, value in batch.items():
        if value.ndim == 2:
            fill = pad_id if key == "input_ids" else 0
            wider[key] = torch.cat([value, torch.full((value.shape[0], extra), fill, dtype=value.dtype)], dim=1)
        else:
            wider[key] = value
    return wider


def test_extra_padding_changes_neither_rewards_nor_losses(tiny_rm, tmp_path):
    trainer, dataset = _trainer(tiny_rm, tmp_path)
    batch = trainer.data_collator([dataset[i] for i in range(4)])
    wide = _pad_more(batch, 9, tiny_rm.tokenizer.pad_token_id)
    tiny_rm.eval()
    with torch.no_grad():
        narrow_rewards = tiny_rm(batch["input_ids"], batch["attention_mask"]).rewards
        wide_rewards = tiny_rm(wide["input_ids"], wide["attention_mask"]).rewards
        mask = batch["attention_mask"].bool()
        torch.testing.assert_close(wide_rewards[:, : mask.shape[1]][mask], narrow_rewards[mask], atol=1e-5, rtol=0)
        ema = tiny_rm.consistency_ema.clone()
        loss_narrow = trainer.compute_loss(tiny_rm, batch)
        loss_wide = trainer.compute_loss(tiny_rm, wide)
    assert torch.equal(tiny_rm.consistency_ema, ema)  # evaluation does not move the EMA
    assert loss_wide.item() == pytest.approx(loss_narrow.item(), abs=1e-5)


def test_length_grouped_sampler_covers_every_row_and_cuts_padding(tiny_rm, tmp_path):
    grouped, _ = _trainer(tiny_rm, tmp_path, group_by_length=True)
    plain, _ = _trainer(tiny_rm, tmp_path / "plain", group_by_length=False)
    words = "the quick brown fox jumps over the lazy dog".split()
    examples = [
        PairExample([{"role": "user", "content": "hello"}], " ".join(words[: 1 + i % 9] * (1 + i % 5)), "dog")
        for i in range(64)
    ]
    items, _, _ = tokenize_examples(examples, tiny_rm.tokenizer, 256)
    dataset = RewardDataset(examples, items)
    lengths = dataset.lengths

    def padding(indices):
        batches = [indices[i : i + 2] for i in range(0, len(indices), 2)]
        return sum(max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches)

    torch.manual_seed(0)
    order = list(grouped._get_train_sampler(dataset))
    assert sorted(order) == list(range(len(dataset)))
    random_order = list(plain._get_train_sampler(dataset))
    assert type(plain._get_train_sampler(dataset)).__name__ == "RandomSampler"
    assert padding(order) < 0.5 * padding(random_order)
