"""Generator weights ``w_t = p(tok_{t+1} | tok_{<=t})``: both producers against a hand computation.

The hand computation runs the model on the prefix ``tok_{<=t}`` alone (no
padding, no batch) and reads the softmax of its last position at the token
that actually follows. A producer shifted by one position, reading the wrong
row's padding, or ignoring temperature/top-p fails these tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icrm.data import RewardCollator, Sequence
from icrm.modeling import (
    GenerationWeights,
    RewardModel,
    build_causal_lm,
    head_generation_weights,
    next_token_logprobs,
    token_logprobs,
    train_tokenizer,
)
from icrm.modeling.generator import _write_cache

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?"] * 20


@pytest.fixture(scope="module")
def lm_and_tokenizer():
    tokenizer = train_tokenizer(TEXTS, 400)
    return build_causal_lm("tiny", tokenizer, seed=3).eval(), tokenizer


def sequences(tokenizer) -> list[Sequence]:
    """Two sequences of different lengths, so the batch has padding."""
    long_ids = tokenizer("the quick brown fox jumps over the lazy dog")["input_ids"]
    short_ids = tokenizer("hello world")["input_ids"]
    return [Sequence(long_ids, 2), Sequence(short_ids, 1)]


def hand_prob(next_logits_of, ids: list[int], t: int, temperature: float = 1.0, top_p: float = 1.0) -> float:
    """p(ids[t+1] | ids[:t+1]) from the logits of the prefix alone, with a hand-written nucleus."""
    logits = next_logits_of(ids[: t + 1]).double() / temperature
    probs = torch.softmax(logits, -1)
    if top_p < 1.0:
        order = torch.argsort(probs, descending=True).tolist()
        kept, mass = [], 0.0
        for token in order:  # smallest set of top tokens whose mass reaches top_p
            kept.append(token)
            mass += float(probs[token])
            if mass >= top_p:
                break
        if ids[t + 1] not in kept:
            return 0.0
        return float(probs[ids[t + 1]]) / sum(float(probs[k]) for k in kept)
    return float(probs[ids[t + 1]])


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_generator_pass_matches_prefix_by_prefix_probabilities(lm_and_tokenizer, temperature, top_p):
    lm, tokenizer = lm_and_tokenizer
    seqs = sequences(tokenizer)
    got = next_token_logprobs(lm, seqs, tokenizer.pad_token_id, batch_size=2, temperature=temperature, top_p=top_p)

    def next_logits_of(prefix):
        with torch.no_grad():
            return lm(input_ids=torch.tensor([prefix])).logits[0, -1]

    for seq, row in zip(seqs, got):
        assert row.shape == (seq.length,) and row[-1] == -np.inf  # nothing follows the last token
        for t in range(seq.length - 1):
            expected = hand_prob(next_logits_of, seq.input_ids, t, temperature, top_p)
            assert math.exp(row[t]) == pytest.approx(expected, rel=1e-4, abs=1e-7), (t, temperature)
    if top_p < 1.0:  # the nucleus really cut something
        assert any(math.exp(v) == 0.0 for row in got for v in row[:-1])


def test_pairs_sharing_a_prompt_get_the_prefix_by_prefix_probabilities(lm_and_tokenizer):
    """group_size=2: a pair's common prefix runs once (and its LM head once), each row still gets its own weights."""
    lm, tokenizer = lm_and_tokenizer
    ids = lambda text: tokenizer(text)["input_ids"]
    seqs = [Sequence(ids("the quick brown fox jumps"), 3), Sequence(ids("the quick brown dog"), 3),
            Sequence(ids("hello world, how are you"), 2), Sequence(ids("hello world today"), 2)]
    seen = []
    hook = lm.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"].numel()),
                                              with_kwargs=True)
    try:
        got = next_token_logprobs(lm, seqs, tokenizer.pad_token_id, batch_size=4, group_size=2)
    finally:
        hook.remove()
    shared = 3 + 2  # "the quick brown" and "hello world," are one token per word here
    assert seen == [sum(s.length for s in seqs) - shared]

    def next_logits_of(prefix):
        with torch.no_grad():
            return lm(input_ids=torch.tensor([prefix])).logits[0, -1]

    for seq, row in zip(seqs, got):
        assert row.shape == (seq.length,) and row[-1] == -np.inf
        for t in range(seq.length - 1):
            assert math.exp(row[t]) == pytest.approx(hand_prob(next_logits_of, seq.input_ids, t), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_self_generator_weights_match_prefix_by_prefix_probabilities(lm_and_tokenizer, temperature, top_p):
    lm, tokenizer = lm_and_tokenizer
    rm = RewardModel.from_causal_lm(lm, tokenizer).eval()
    rm.prepare_training_heads(sft=False, self_generator=True)
    seqs = sequences(tokenizer)
    batch = RewardCollator(tokenizer.pad_token_id)([{"sequences": [s]} for s in seqs])
    with torch.no_grad():
        hidden = rm(batch["input_ids"], batch["attention_mask"]).hidden
    got = head_generation_weights(
        hidden, batch["input_ids"], batch["response_mask"], rm.generator_head, temperature, top_p
    )

    def next_logits_of(prefix):
        with torch.no_grad():
            h = rm.decoder(input_ids=torch.tensor([prefix])).last_hidden_state[0, -1]
        return rm.generator_head @ h

    for row, seq in enumerate(seqs):
        for t in range(got.shape[1]):
            if seq.start <= t < seq.length - 1:  # a pair (t, t+1) inside the response
                expected = hand_prob(next_logits_of, seq.input_ids, t, temperature, top_p)
                assert float(got[row, t]) == pytest.approx(expected, rel=1e-4, abs=1e-7), (row, t)
            else:
                assert float(got[row, t]) == 0.0


def test_token_logprobs_temperature_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    z = sum(math.exp(v / 0.5) for v in [1.0, 2.0, 3.0, 0.0])
    assert token_logprobs(logits, torch.tensor([1]), temperature=0.5).item() == pytest.approx(2.0 / 0.5 - math.log(z))
    # top-p 0.6: p = softmax([1,2,3,0]) ≈ [0.087, 0.237, 0.644, 0.032]; the nucleus is {2} alone
    assert token_logprobs(logits, torch.tensor([2]), top_p=0.6).item() == pytest.approx(0.0, abs=1e-6)
    assert token_logprobs(logits, torch.tensor([1]), top_p=0.6).item() == -math.inf


def test_cache_keeps_small_probabilities(tmp_path):
    """float16 probabilities flush p < ~6e-8 to 0; log-probabilities keep them."""
    probs = np.array([0.9, 3e-9, 1e-20, 0.5], dtype=np.float64)
    stored = _write_cache(tmp_path / "entry", "key", [np.log(probs).astype(np.float32)], {})
    read = GenerationWeights(stored.flat, stored.offsets)[0]
    assert np.float16(3e-9) == 0.0  # what the old format stored
    np.testing.assert_allclose(read, probs, rtol=0.05)
    assert (read > 0).all()


def test_files_fingerprint_sees_every_file_and_both_ends_and_the_mtime(tmp_path):
    import os

    from icrm.modeling import EDGE_BYTES, files_fingerprint

    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(bytes(3 * EDGE_BYTES))
    seen = {files_fingerprint(tmp_path)}
    assert files_fingerprint(tmp_path) in seen  # reading changes nothing

    def changed(edit) -> bool:
        stat = weights.stat()
        edit()
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the content differs
        new = files_fingerprint(tmp_path)
        fresh = new not in seen
        seen.add(new)
        return fresh

    def write_at(offset: int, value: bytes):
        with open(weights, "r+b") as handle:
            handle.seek(offset)
            handle.write(value)

    assert changed(lambda: write_at(10, b"\x01"))  # the first MiB (a safetensors header)
    assert changed(lambda: write_at(3 * EDGE_BYTES - 1, b"\x01"))  # the last MiB
    assert not changed(lambda: write_at(EDGE_BYTES + 5, b"\x01"))  # the middle alone: what the mtime is for
    os.utime(weights, ns=(0, 12345))
    assert files_fingerprint(tmp_path) not in seen  # a rewritten file has a new mtime
    seen.add(files_fingerprint(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{}")
    assert files_fingerprint(tmp_path) not in seen


def test_a_cache_hit_loads_no_generator_and_a_retrained_one_misses(tmp_path, lm_and_tokenizer, monkeypatch):
    import icrm.modeling.generator as generator_module
    from icrm.modeling import cached_generation_weights

    lm, tokenizer = lm_and_tokenizer
    lm.save_pretrained(tmp_path / "gen")
    tokenizer.save_pretrained(tmp_path / "gen")
    seqs = sequences(tokenizer)
    first, hit = cached_generation_weights(str(tmp_path / "gen"), tokenizer, seqs, cache_dir=tmp_path / "cache")
    assert not hit
    loads = []
    real_load = generator_module.load_generator
    monkeypatch.setattr(generator_module, "load_generator", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    again, hit = cached_generation_weights(str(tmp_path / "gen"), tokenizer, seqs, cache_dir=tmp_path / "cache")
    assert hit and loads == []
    np.testing.assert_array_equal(again[0], first[0])
    # retrain (here: shift one weight) and save over it: same file names and sizes, other weights
    with torch.no_grad():
        shifted = build_causal_lm("tiny", tokenizer, seed=3)
        shifted.load_state_dict(lm.state_dict())
        shifted.model.norm.weight.add_(0.5)
    shifted.save_pretrained(tmp_path / "gen")
    retrained, hit = cached_generation_weights(str(tmp_path / "gen"), tokenizer, seqs, cache_dir=tmp_path / "cache")
    assert not hit and len(loads) == 1
    assert not np.allclose(retrained[0][:-1], first[0][:-1])
