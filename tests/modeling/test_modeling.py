"""RewardModel: outcome rewards, export/reload, LoRA, safe loading."""

from __future__ import annotations

import json

import pytest
import torch

from icrm.data import RewardCollator, encode
from icrm.modeling import ModelError, RewardModel, build_causal_lm, train_tokenizer


def test_outcome_reward_is_read_at_last_real_token_for_left_and_right_padding(tiny_rm):
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0, 9.0], [0.0, 0.0, 4.0, 5.0, 6.0]])
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    assert RewardModel.outcome(rewards, right).tolist() == [3.0, 6.0]
    assert RewardModel.outcome(rewards, left).tolist() == [9.0, 6.0]


def test_padding_does_not_change_scores(tiny_rm):
    prompts = ["hello world", "the quick brown fox jumps over the lazy dog"]
    responses = ["how are you today?", "dog"]
    batched = tiny_rm.score(prompts, responses, batch_size=2)
    single = [tiny_rm.score([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_token_rewards_end_with_outcome(tiny_rm):
    prefix = tiny_rm.token_rewards("hello world", "the lazy dog")
    seq = encode(tiny_rm.tokenizer, [{"role": "user", "content": "hello world"}], "the lazy dog")
    assert len(prefix) == seq.length - seq.start
    assert prefix[-1].item() == pytest.approx(tiny_rm.score(["hello world"], ["the lazy dog"])[0], abs=1e-6)


def test_token_rewards_with_their_tokens_match_the_server(tiny_rm):
    """``return_tokens=True`` gives (token, reward) pairs: the tokens /score per_token shows, the same rewards."""
    from starlette.testclient import TestClient

    from icrm.serve import ServeConfig, create_app

    pairs = tiny_rm.token_rewards("hello world", "the lazy dog", return_tokens=True)
    tokens, rewards = zip(*pairs)
    assert "".join(tokens).startswith("the lazy dog") and all(isinstance(t, str) for t in tokens)
    assert list(rewards) == pytest.approx(tiny_rm.token_rewards("hello world", "the lazy dog").tolist(), abs=1e-6)
    with TestClient(create_app(tiny_rm, ServeConfig())) as client:
        served = client.post("/score", json={"prompts": ["hello world"], "responses": ["the lazy dog"],
                                             "per_token": True}).json()
    assert list(tokens) == served["tokens"][0]
    assert list(rewards) == pytest.approx(served["token_rewards"][0], abs=1e-5)
    batch = tiny_rm.token_rewards_batch(["hello world", "hi"], ["the lazy dog", "a fox"], return_tokens=True)
    alone = tiny_rm.token_rewards("hi", "a fox", return_tokens=True)
    for batched, single in ((batch[0], pairs), (batch[1], alone)):
        assert [t for t, _ in batched] == [t for t, _ in single]
        assert [r for _, r in batched] == pytest.approx([r for _, r in single], abs=1e-5)


def _save_base(tmp_path, seed=0):
    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog", "hello world"] * 20, 400)
    base = tmp_path / "base"
    build_causal_lm("tiny", tok, seed).save_pretrained(base)
    tok.save_pretrained(base)
    return base


def test_lora_train_export_reload_same_scores(tmp_path, cli):
    from helpers import write_jsonl

    base = _save_base(tmp_path)
    rows = [{"prompt": "hello world", "chosen": "the quick fox", "rejected": "lazy dog"}] * 8
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = cli("train", "--data", data, "--model", base, "--lora-r", "4", "--lora-alpha", "8", "--method", "icrm",
                 "--output", tmp_path / "rm", "--max-steps", "3", "--batch-size", "4", "--lr", "1e-2")
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "rm" / "model.safetensors"))
    assert not any("lora" in k for k in weights)  # merged on save
    base_weights = load_file(str(base / "model.safetensors"))
    changed = [k for k in base_weights if k.startswith("model.") and not torch.equal(base_weights[k], weights[k])]
    assert changed  # the merged adapters changed the backbone
    reloaded = RewardModel.from_pretrained(str(tmp_path / "rm"))
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    seqs = [encode(reloaded.tokenizer, [{"role": "user", "content": "hello world"}], r) for r in ("the quick fox", "lazy dog")]
    batch = RewardCollator(reloaded.tokenizer.pad_token_id)([{"sequences": [s]} for s in seqs])
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].tolist()
    ours = reloaded.score(["hello world"] * 2, ["the quick fox", "lazy dog"])
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_lora_freezes_backbone_but_trains_value_head(tmp_path):
    from icrm.modeling import add_lora

    base = _save_base(tmp_path)
    rm = add_lora(RewardModel.from_pretrained(str(base)), 4, 8)
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert "score_head.weight" in trainable
    assert all("lora_" in n for n in trainable - {"score_head.weight"})


def test_pickle_only_checkpoint_is_refused(tmp_path):
    base = _save_base(tmp_path)
    (base / "model.safetensors").unlink()
    torch.save({}, base / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        RewardModel.from_pretrained(str(base))


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        RewardModel.from_pretrained(str(tmp_path / "junk"))


def test_any_hf_sequence_classifier_loads(tmp_path, tiny_rm):
    tiny_rm.save_pretrained(tmp_path / "rm")
    for side in ("icrm_config.json", "icrm_state.json", "icrm_lm_head.safetensors"):
        (tmp_path / "rm" / side).unlink()
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    plain = RewardModel.from_pretrained(str(tmp_path / "rm"))
    assert plain.lm_head is None
    assert plain.score(["hello"], ["world"]) == pytest.approx(tiny_rm.score(["hello"], ["world"]), abs=1e-6)
