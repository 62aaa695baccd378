"""Training as the reference code does it (issue 12): generator data, frozen self-generator,
separate SFT head, tied embeddings, value-head dropout, pointwise sampling defaults."""

from __future__ import annotations

import json

import torch
from helpers import sft_embedding_grad, write_jsonl

from icrm.data import PairExample, PointExample, RewardCollator, RewardDataset, tokenize_examples
from icrm.modeling import RewardModel, build_causal_lm, train_tokenizer
from icrm.training import ICRMConfig, ICRMTrainer, TrainingOptions, sft_examples

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?"] * 20
PAIRS = [("hello world", "the quick fox", "lazy dog"), ("how are you", "fine thanks", "the dog is brown")] * 4


def tiny_rm(tied: bool = False) -> RewardModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(TEXTS, 400)
    if not tied:
        return RewardModel.from_causal_lm(build_causal_lm("tiny", tok, seed=0), tok)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    lm = LlamaForCausalLM(config)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    return RewardModel.from_causal_lm(lm, tok)


def pair_dataset(rm: RewardModel) -> RewardDataset:
    examples = [PairExample([{"role": "user", "content": p}], c, r) for p, c, r in PAIRS]
    items, _, _ = tokenize_examples(examples, rm.tokenizer, 64)
    return RewardDataset(examples, items)


def train_steps(rm: RewardModel, tmp_path, steps: int = 3, **config) -> ICRMTrainer:
    args = ICRMConfig(output_dir=str(tmp_path), **{"method": "icrm", "generator": "self", **config},
                        disable_tqdm=True, **TrainingOptions(per_device_train_batch_size=4, learning_rate=1e-2, max_steps=steps,
                                                         warmup_steps=0).trainer_kwargs())
    trainer = ICRMTrainer(model=rm, args=args, train_dataset=pair_dataset(rm),
                          data_collator=RewardCollator(rm.tokenizer.pad_token_id))
    trainer.train()
    return trainer


def test_self_generator_reads_a_frozen_copy_while_the_sft_head_trains(tmp_path):
    rm = tiny_rm()
    lm_head_before = rm.lm_head.weight.detach().clone()
    train_steps(rm, tmp_path, lambda_=0.3)
    # the weights w_t come from the head as it was at the start of training...
    torch.testing.assert_close(rm.generator_head, lm_head_before, rtol=0, atol=0)
    # ...while the SFT term trains its own copy (which would have moved them before)
    assert rm.sft_head is not None and rm.sft_head.weight.requires_grad
    assert not torch.allclose(rm.sft_head.weight, lm_head_before, atol=1e-4)
    assert torch.equal(rm.lm_head.weight, lm_head_before)  # the backbone's own head is not trained


def test_sft_head_trains_under_lora(tmp_path):
    from icrm.modeling import add_lora

    rm = add_lora(tiny_rm(), r=4, alpha=8)
    lm_head_before = rm.lm_head.weight.detach().clone()
    train_steps(rm, tmp_path)
    assert not torch.allclose(rm.sft_head.weight, lm_head_before, atol=1e-4)
    assert torch.equal(rm.lm_head.weight, lm_head_before)


def test_tied_embeddings_get_only_the_scaled_sft_gradient():
    """With tie_word_embeddings the LM head *is* the embedding matrix: the SFT term must reach it only
    through the backbone, scaled like the rest (before: 1 → 1e-3 shrank the gradient only 0.69×)."""
    rm = tiny_rm(tied=True)
    rm.prepare_training_heads(sft=True, self_generator=True)
    assert rm.tied_lm_head and rm.lm_head.weight.requires_grad  # still trains as the input embedding
    assert rm.sft_head.weight.data_ptr() != rm.lm_head.weight.data_ptr()
    batch = RewardCollator(rm.tokenizer.pad_token_id)([pair_dataset(rm)[0]])
    full, scaled = sft_embedding_grad(rm, batch, 1.0), sft_embedding_grad(rm, batch, 1e-3)
    assert full.abs().sum() > 0
    torch.testing.assert_close(scaled, 1e-3 * full, rtol=1e-3, atol=1e-9)


def test_head_dropout_acts_in_training_only_and_leaves_the_checkpoint_unchanged(tmp_path):
    rm = tiny_rm()
    rm.head_dropout.p = 0.5
    batch = RewardCollator(rm.tokenizer.pad_token_id)([pair_dataset(rm)[0]])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rm.train()
    assert not torch.equal(rm(ids, mask).rewards, rm(ids, mask).rewards)
    rm.eval()
    assert torch.equal(rm(ids, mask).rewards, rm(ids, mask).rewards)
    rm.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file

    assert not any("dropout" in k for k in load_file(str(tmp_path / "ckpt" / "model.safetensors")))


def test_trainer_sets_head_dropout(tmp_path):
    rm = tiny_rm()
    train_steps(rm, tmp_path, steps=1, head_dropout=0.1)
    assert rm.head_dropout.p == 0.1


def test_checkpoint_keeps_the_sft_head(tmp_path):
    rm = tiny_rm()
    train_steps(rm, tmp_path / "run")
    rm.save_pretrained(tmp_path / "ckpt")
    again = RewardModel.from_pretrained(str(tmp_path / "ckpt"))
    torch.testing.assert_close(again.sft_head.weight, rm.sft_head.weight)
    torch.testing.assert_close(again.lm_head.weight, rm.lm_head.weight)


def test_sft_examples_select_responses():
    pairs = [PairExample([{"role": "user", "content": "p"}], "good", "bad")]
    points = [PointExample([{"role": "user", "content": "p"}], "right", 1.0),
              PointExample([{"role": "user", "content": "p"}], "wrong", 0.0)]
    texts = lambda rows: [r.response for r in rows]  # noqa: E731
    assert texts(sft_examples(pairs, "chosen")) == ["good"]
    assert texts(sft_examples(pairs, "rejected")) == ["bad"]
    assert texts(sft_examples(pairs, "both")) == ["good", "bad"]
    assert texts(sft_examples(points, "correct")) == ["right"]
    assert texts(sft_examples(points, "all")) == ["right", "wrong"]


def test_cli_sft_responses_both_trains_on_chosen_and_rejected(tmp_path, cli):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    common = ["sft", "--data", data, "--model", "tiny", "--max-steps", "1", "--batch-size", "4", "--max-length", "64"]
    for responses, n in (("chosen", len(rows)), ("both", 2 * len(rows))):
        result = cli(*common, "--responses", responses, "--output", tmp_path / responses)
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / responses / "metrics.json").read_text())["train_examples"] == n
    bad = cli(*common, "--responses", "everything", "--output", tmp_path / "bad")
    assert bad.exit_code == 2 and "--responses" in bad.output


def test_pointwise_generator_weights_default_to_the_references_sampling(tmp_path, cli):
    rows = [{"prompt": p, "response": c, "label": 1} for p, c, _ in PAIRS]
    rows += [{"prompt": p, "response": r, "label": 0} for p, _, r in PAIRS]
    data = write_jsonl(tmp_path / "pt.jsonl", rows)
    gen = tmp_path / "gen"
    assert cli("sft", "--data", data, "--model", "tiny", "--responses", "all", "--max-steps", "1",
               "--max-length", "64", "--output", gen).exit_code == 0
    common = ["train", "--data", data, "--model", gen, "--generator", gen, "--max-steps", "1", "--max-length", "64",
              "--cache-dir", tmp_path / "cache"]
    assert cli(*common, "--output", tmp_path / "rm").exit_code == 0
    (entry,) = (tmp_path / "cache").rglob("meta.json")
    meta = json.loads(entry.read_text())
    assert (meta["temperature"], meta["top_p"]) == (0.7, 0.8)
    config = json.loads((tmp_path / "rm" / "icrm_config.json").read_text())
    assert (config["generator_temperature"], config["generator_top_p"]) == (0.7, 0.8)
    assert cli(*common, "--generator-temperature", "1", "--output", tmp_path / "rm2").exit_code == 0
    assert len(list((tmp_path / "cache").rglob("meta.json"))) == 2  # part of the cache key
    assert ICRMConfig(output_dir=str(tmp_path), use_cpu=True).generator_sampling(pointwise=False) == (1.0, 1.0)
