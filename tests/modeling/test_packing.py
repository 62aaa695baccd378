"""Padding-free (packed) batches give what padded batches give: per position, per loss term, per weight.

Every comparison runs the same rows both ways; a packed batch that let a row
attend to its neighbour, restarted positions wrongly, read the outcome at the
wrong token or paired tokens across two rows would fail them.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_jsonl

from icrm.data import RewardCollator, Sequence
from icrm.modeling import (
    PACKED_ATTENTION,
    PackedRewardCollator,
    PackingError,
    pack,
    span_mask,
    unpack,
    use_packed_attention,
)

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?"] * 20
FAST = ["--max-steps", "3", "--batch-size", "4", "--max-length", "192", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def tokenizer():
    from icrm.modeling import train_tokenizer

    return train_tokenizer(TEXTS, 400)


def tiny_rm(tokenizer, attn_implementation: str = "sdpa"):
    from icrm.modeling import RewardModel, build_causal_lm

    lm = build_causal_lm("tiny", tokenizer, seed=0)
    lm.set_attn_implementation(attn_implementation)
    return RewardModel.from_causal_lm(lm, tokenizer).eval()


def random_rows(lengths_and_starts, seed: int = 0) -> list[Sequence]:
    g = torch.Generator().manual_seed(seed)
    return [Sequence(torch.randint(5, 300, (n,), generator=g).tolist(), start) for n, start in lengths_and_starts]


# one row is all response (start 0, as left truncation can leave it), one is a single token
ROWS = [(7, 3), (19, 10), (1, 0), (12, 0), (4, 2)]


def test_pack_lays_rows_end_to_end_with_positions_restarting():
    ids = torch.tensor([[5, 6, 7], [8, 0, 0], [9, 10, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    packed = pack(ids, mask)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert packed["cu_seq_lens_q"].tolist() == packed["cu_seq_lens_k"].tolist() == [0, 3, 4, 6]
    assert packed["max_length_q"] == packed["max_length_k"] == 3
    values = torch.arange(6.0)[None, :, None].expand(1, 6, 2)
    assert unpack(values, mask)[..., 0].tolist() == [[0, 1, 2], [3, 0, 0], [4, 5, 0]]


def test_pack_puts_the_prefix_an_examples_rows_share_once_at_the_head_of_its_span():
    """Rows are slot-major (chosen 0, chosen 1, rejected 0, rejected 1); example 1 shares nothing."""
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0], [5, 6, 12, 0], [13, 14, 0, 0]])
    mask = (ids > 0).long()
    packed = pack(ids, mask, group_size=2)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 12, 9, 10, 11, 13, 14]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0, 1, 2, 0, 1]]  # the rejected row goes on from 2
    assert packed["prefix_segments"].tolist() == [0, 0, 1, 1, 2, 1, 1, 1, 1, 1]
    assert packed["cu_seq_lens_q"].tolist() == [0, 5, 8, 10] and packed["max_length_q"] == 5
    assert packed["index"][mask.bool()].tolist() == [0, 1, 2, 3, 5, 6, 7, 0, 1, 4, 8, 9]
    values = torch.arange(10.0)[None, :, None]
    assert unpack(values, mask, packed["index"])[..., 0].tolist() == [[0, 1, 2, 3], [5, 6, 7, 0], [0, 1, 4, 0],
                                                                      [8, 9, 0, 0]]
    # identical rows share all but their last token, which holds each row's outcome reward
    same = pack(torch.tensor([[5, 6, 7], [5, 6, 7]]), torch.ones(2, 3, dtype=torch.long), group_size=2)
    assert same["input_ids"].tolist() == [[5, 6, 7, 7]] and same["prefix_segments"].tolist() == [0, 0, 1, 2]
    assert "prefix_segments" not in pack(ids, mask)  # one row per example: nothing to share


def test_span_mask_lets_each_row_see_the_prefix_and_itself_only():
    segments = torch.tensor([0, 0, 1, 1, 2])
    assert span_mask(segments)[0, 0].long().tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]
    # window 2 over positions [0, 1, 2, 3, 2]: the rejected token (position 2) sees positions 1 and 2
    assert span_mask(segments, window=2)[0, 0].long().tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 1, 0, 0, 1]]


def pair_rows(seed: int = 0) -> list[dict]:
    """Pairs whose rows share a prompt (of several lengths, one empty) and a pair of identical rows."""
    g = torch.Generator().manual_seed(seed)
    tokens = lambda n: torch.randint(5, 300, (n,), generator=g).tolist()
    items = []
    for prompt, chosen, rejected in [(6, 5, 9), (0, 4, 3), (11, 1, 7), (3, 8, 8)]:
        head = tokens(prompt)
        items.append({"sequences": [Sequence(head + tokens(chosen), prompt), Sequence(head + tokens(rejected), prompt)]})
    twin = tokens(6)
    return items + [{"sequences": [Sequence(twin, 2), Sequence(twin, 2)]}]


def test_shared_prefix_rewards_equal_padded_rewards_at_every_position(tokenizer):
    rm = tiny_rm(tokenizer).use_padding_free()
    items = pair_rows()
    padded = RewardCollator(tokenizer.pad_token_id)(items)
    collator = rm.collator()
    assert collator.share_prefix
    batch = collator(items)
    real = padded["attention_mask"].bool()
    assert batch["packed"]["input_ids"].shape[1] == int(real.sum()) - (6 + 0 + 11 + 3 + 5)
    with torch.no_grad():
        expected = rm(padded["input_ids"], padded["attention_mask"]).rewards
        got = rm(batch["input_ids"], batch["attention_mask"], packed=batch["packed"]).rewards
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    assert torch.all(got[~real] == 0)


def test_shared_prefix_gradients_equal_padded_gradients(tokenizer):
    """The prefix's states feed both rows: its gradient is the sum of theirs, as when each row runs it."""
    rm = tiny_rm(tokenizer).use_padding_free()
    items = pair_rows(1)
    grads = []
    for batch in (RewardCollator(tokenizer.pad_token_id)(items), rm.collator()(items)):
        rm.zero_grad()
        rewards = rm(batch["input_ids"], batch["attention_mask"], packed=batch.get("packed")).rewards
        (rewards * torch.linspace(-1, 1, rewards.shape[1]) * batch["attention_mask"]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad, atol=1e-4, rtol=1e-4), name


def windowed_model():
    """A tiny Mistral backbone whose layers attend within a sliding window of 4 positions (SDPA)."""
    from transformers import MistralConfig, MistralModel

    config = MistralConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=4, pad_token_id=0)
    torch.manual_seed(0)
    model = MistralModel(config).eval()
    model.set_attn_implementation("sdpa")
    return model


def test_shared_prefixes_with_sliding_window_layers_keep_the_window():
    model = windowed_model()
    batch = RewardCollator(0)(pair_rows(2))
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        use_packed_attention(model)
        packed = pack(batch["input_ids"], batch["attention_mask"], group_size=2)
        inputs = {k: v for k, v in packed.items() if k != "index"}
        got = unpack(model(**inputs).last_hidden_state, batch["attention_mask"], packed["index"])
    real = batch["attention_mask"].bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)


def test_a_shared_prefix_batch_is_refused_by_attention_that_cannot_keep_rows_apart(tokenizer):
    rm = tiny_rm(tokenizer, "eager").use_padding_free()
    assert not rm.collator().share_prefix  # what icrm batches for it: rows end to end
    batch = PackedRewardCollator(tokenizer.pad_token_id, share_prefix=True)(pair_rows())
    with pytest.raises(PackingError, match="shares prefixes"):
        rm(batch["input_ids"], batch["attention_mask"], packed=batch["packed"])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rewards_equal_padded_rewards_at_every_position(tokenizer, attn):
    """sdpa: icrm's row-by-row attention; eager: transformers' block-diagonal mask from position_ids."""
    rm = tiny_rm(tokenizer, attn)
    items = [{"sequences": [s]} for s in random_rows(ROWS)]
    padded = RewardCollator(tokenizer.pad_token_id)(items)
    batch = PackedRewardCollator(tokenizer.pad_token_id)(items)
    assert torch.equal(batch["input_ids"], padded["input_ids"]) and batch["packed"]["input_ids"].shape == (1, 43)
    assert "packed" not in PackedRewardCollator(tokenizer.pad_token_id)(items[:1] * 3)  # nothing to remove
    rm.use_padding_free()
    assert rm.decoder.config._attn_implementation == (PACKED_ATTENTION if attn == "sdpa" else "eager")
    with torch.no_grad():
        expected = rm(padded["input_ids"], padded["attention_mask"]).rewards
        got = rm(batch["input_ids"], batch["attention_mask"], packed=batch["packed"]).rewards
    real = padded["attention_mask"].bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    assert torch.all(got[~real] == 0)
    # and each row alone, with no neighbour at all
    for row, seq in enumerate(random_rows(ROWS)):
        with torch.no_grad():
            alone = rm(torch.tensor([seq.input_ids]), torch.ones(1, seq.length, dtype=torch.long)).rewards[0]
        assert torch.allclose(got[row, : seq.length], alone, atol=1e-5)


def test_sliding_window_layers_keep_their_window_inside_each_row():
    model = windowed_model()
    rows = random_rows([(9, 0), (3, 0), (7, 0)])
    batch = RewardCollator(0)([{"sequences": [s]} for s in rows])
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        use_packed_attention(model)
        got = unpack(model(**pack(batch["input_ids"], batch["attention_mask"])).last_hidden_state, batch["attention_mask"])
        model.config.sliding_window = None  # the window matters: without it row 0 reads otherwise
        unwindowed = unpack(model(**pack(batch["input_ids"], batch["attention_mask"])).last_hidden_state,
                            batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    assert not torch.allclose(unwindowed[0, :9], expected[0, :9], atol=1e-3)


def test_by_default_rows_are_packed_where_the_attention_packs_for_free(tokenizer):
    """None (the default): SDPA packs (row by row), eager does not (a dense mask); True packs with either."""
    assert use_packed_attention(tiny_rm(tokenizer, "sdpa").decoder, None)
    eager = tiny_rm(tokenizer, "eager").decoder
    assert not use_packed_attention(eager, None) and not use_packed_attention(eager, False)
    assert use_packed_attention(eager, True) and eager.config._attn_implementation == "eager"
    outside = torch.nn.Linear(2, 2)  # no transformers attention interface: never packed by default, refused if asked
    assert not use_packed_attention(outside, None)
    with pytest.raises(PackingError, match="--packing"):
        use_packed_attention(outside, True)


# ------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    """A tiny causal LM saved as a checkpoint: the backbone, and the generator of the cached-weights case."""
    from icrm.modeling import build_causal_lm

    root = tmp_path_factory.mktemp("base")
    build_causal_lm("tiny", tokenizer, seed=0).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def hh_rows(hh_slice, pointwise: bool) -> list[dict]:
    rows = [json.loads(line) for line in hh_slice.read_text().splitlines()][:16]
    if not pointwise:
        return rows
    return [{"prompt": r["chosen"].rsplit("\n\nAssistant:", 1)[0], "completion": r[side].rsplit("\n\nAssistant:", 1)[1],
             "label": side == "chosen"} for r in rows for side in ("chosen", "rejected")]


def assert_same_weights(ours: dict, theirs: dict) -> None:
    """Equal up to float rounding after a few AdamW steps.

    AdamW divides each gradient by its own RMS, so where a gradient is ~0,
    rounding noise can move a weight by a visible part of a step (lr 1e-3):
    a loose bound on each weight, a tight one on the mean.
    """
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        difference = (value.float() - theirs[name].float()).abs()
        assert difference.max() < 1e-4 and difference.mean() < 1e-7, (name, difference.max(), difference.mean())


@pytest.mark.parametrize("pointwise, generator, checkpointing", [(False, "base", False), (True, "self", True)])
def test_packed_training_equals_padded_training(tmp_path, hh_slice, base, pointwise, generator, checkpointing):
    """Same batches, padded and packed: the same loss terms at every step and the same final weights.

    Pairs with cached generator weights; graded rows with the self generator
    and gradient checkpointing on in the packed run (it passes through).
    """
    from icrm import ICRMConfig, ICRMTrainer

    rows = hh_rows(hh_slice, pointwise)

    def run(packed: bool):
        """The packed run takes the default (``padding_free=None``), which packs this SDPA model."""
        args = ICRMConfig(
            output_dir=str(tmp_path / f"out-{packed}"), use_cpu=True, bf16=False, max_steps=3,
            per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, max_length=192, head_dropout=0.0,
            generator=str(base) if generator == "base" else generator, cache_dir=str(tmp_path / "cache"),
            gradient_checkpointing=checkpointing and packed, padding_free=None if packed else False, report_to=[],
        )
        trainer = ICRMTrainer(str(base), args, train_dataset=rows)
        assert args.padding_free is packed and trainer.reward_model.training_config["padding_free"] is packed
        trainer.train()
        assert trainer.reward_model.decoder.is_gradient_checkpointing == (checkpointing and packed)
        terms = [{k: v for k, v in entry.items() if k in ("loss", "bt", "bce", "icrm", "sft", "icrm_raw")}
                 for entry in trainer.state.log_history if "loss" in entry]
        return trainer, terms

    padded, padded_terms = run(False)
    packed, packed_terms = run(True)
    assert isinstance(packed.data_collator, PackedRewardCollator) and type(padded.data_collator) is RewardCollator
    first = packed.data_collator([packed.train_dataset[i] for i in range(4)])
    assert ("prefix_segments" in first.get("packed", {})) is not pointwise  # a pair's rows share their prompt
    assert len(packed_terms) == 3 and set(packed_terms[0]) >= {"loss", "icrm", "sft", "bce" if pointwise else "bt"}
    for ours, theirs in zip(packed_terms, padded_terms):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)
    after = padded.reward_model.state_dict()
    assert_same_weights(packed.reward_model.state_dict(), after)
    from safetensors.torch import load_file

    start = load_file(str(base / "model.safetensors"))
    assert any(not torch.allclose(after[f"decoder.{k[len('model.'):]}"], v, atol=1e-4) for k, v in start.items()
               if k.startswith("model.layers."))  # the runs trained
    stats = packed.reward_model.reward_stats
    assert stats == pytest.approx(padded.reward_model.reward_stats, rel=1e-4)
    # the statistics are those of the trained model's outcome rewards on every training row, each run alone
    rm = packed.reward_model.eval()
    with torch.no_grad():
        rewards = torch.tensor([float(rm(torch.tensor([s.input_ids]), torch.ones(1, s.length, dtype=torch.long)).rewards[0, -1])
                                for s in packed.train_dataset.all_sequences()], dtype=torch.float64)
    assert stats["n"] == len(rewards) == len(packed.train_dataset) * (1 if pointwise else 2) > 10
    assert stats["mean"] == pytest.approx(float(rewards.mean()), abs=1e-5)
    assert stats["std"] == pytest.approx(float(rewards.std(unbiased=False)), abs=1e-5)


def test_icrm_train_and_sft_with_packing_match_padded_runs(tmp_path, hh_slice, cli):
    from safetensors.torch import load_file

    for command in ("sft", "train"):
        losses, weights = [], []
        for flag in ("--packing", "--no-packing"):
            out = tmp_path / f"{command}{flag}"
            extra = ["--head-dropout", "0"] if command == "train" else []
            result = cli(command, "--data", hh_slice, "--output", out, flag, *FAST, *extra)
            assert result.exit_code == 0, result.output
            losses.append(json.loads((out / "metrics.json").read_text())["train_loss"])
            weights.append(load_file(str(out / "model.safetensors")))
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        assert_same_weights(*weights)
    assert json.loads((tmp_path / "train--packing" / "icrm_config.json").read_text())["padding_free"] is True


# ------------------------------------------------------------------- scoring


def test_scoring_commands_give_the_same_numbers_packed(tmp_path, hh_slice, tokenizer, cli):
    tiny_rm(tokenizer).save_pretrained(tmp_path / "rm")
    rows = [json.loads(line) for line in hh_slice.read_text().splitlines()]
    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": "Which is right?", "candidates": [r["chosen"], r["rejected"]],
                                                "labels": [1, 0]} for r in rows[:12]])
    outputs = {}
    for flag in ("--packing", "--no-packing"):
        runs = [
            ("score", "--data", hh_slice, "--output", tmp_path / f"scores{flag}.jsonl"),
            ("eval", "--data", hh_slice, "--output", tmp_path / f"eval{flag}.json"),
            ("bon", "--data", bon, "--output", tmp_path / f"bon{flag}.json"),
        ]
        for args in runs:
            result = cli(*args, "--model", tmp_path / "rm", "--batch-size", "8", flag)
            assert result.exit_code == 0, result.output
        scored = [json.loads(line) for line in (tmp_path / f"scores{flag}.jsonl").read_text().splitlines()]
        outputs[flag] = (
            [r[k] for r in scored for k in ("chosen_reward", "rejected_reward")],
            json.loads((tmp_path / f"eval{flag}.json").read_text())["accuracy"],
            json.loads((tmp_path / f"bon{flag}.json").read_text())["accuracy"],
        )
    packed, padded = outputs["--packing"], outputs["--no-packing"]
    assert len(packed[0]) == 80 and len({round(r, 4) for r in packed[0]}) > 10
    assert packed[0] == pytest.approx(padded[0], abs=1e-5)
    assert packed[1:] == padded[1:]


def test_serve_with_packing_answers_as_offline_scoring(tokenizer):
    from helpers import PROMPTS, RESPONSES, post, rendered

    from icrm.serve import ServeConfig, create_app

    rm = tiny_rm(tokenizer)
    expected = rm.score(PROMPTS, RESPONSES)
    app = create_app(rm, ServeConfig(max_batch_size=4, packing=True))
    assert rm.padding_free
    answer = post(app, "/get_reward", {"query": [rendered(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]})
    assert answer.status_code == 200
    assert answer.json()["rewards"] == pytest.approx(expected, abs=1e-5)


def test_readme_no_packing_command_runs_as_written(tmp_path, cli, monkeypatch):
    import re
    import shlex
    from pathlib import Path

    from icrm.data import example_texts, load_examples
    from icrm.modeling import build_causal_lm, train_tokenizer

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**Padding-free batches.**", 1)[1]
    (command,) = re.findall(r"```bash\n(icrm train .*?)\n```", section[: section.index("In Python:")], flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    assert cli("data", "synth", "--task", "noisy", "--output", "runs/noisy", "--n-train", "24", "--n-test", "4").exit_code == 0
    tok = train_tokenizer(example_texts(load_examples("runs/noisy/train.jsonl").examples), 1024)
    build_causal_lm("tiny", tok).save_pretrained("runs/gen")
    tok.save_pretrained("runs/gen")
    result = cli(*shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("runs/rm-padded/icrm_config.json").read_text())["padding_free"] is False


def test_scoring_batches_an_examples_responses_together_when_every_example_has_as_many(tmp_path):
    """``Fitted.group_size``: what ``score``, ``eval`` and ``bon`` pass on, so that the responses share their prompt."""
    from icrm.data import load_examples
    from icrm.modeling import Fitted

    def group_size(rows):
        loaded = load_examples(str(write_jsonl(tmp_path / "rows.jsonl", rows)))
        return Fitted(loaded.examples, list(range(len(rows))), [], None).group_size

    assert group_size([{"prompt": "Hi", "chosen": "a", "rejected": "b"}] * 2) == 2
    assert group_size([{"prompt": "Hi", "candidates": ["a", "b", "c"], "labels": [1, 0, 0]}] * 2) == 3
    assert group_size([{"prompt": "Hi", "candidates": ["a", "b", "c"], "labels": [1, 0, 0]},
                       {"prompt": "Hi", "candidates": ["a", "b"], "labels": [1, 0]}]) == 1
