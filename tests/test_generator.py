"""Generator probabilities: the row-wise computation equals a plain softmax."""

from __future__ import annotations

import torch

from icrm.generator import gathered_next_token_probs


def test_next_token_probs_equal_softmax_of_the_actual_next_token():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50, dtype=torch.bfloat16)
    ids = torch.randint(0, 50, (3, 7))
    expected = torch.softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    got = gathered_next_token_probs(logits, ids)
    assert got.shape == (3, 6) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
