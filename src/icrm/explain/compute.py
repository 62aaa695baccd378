"""Per-token rewards of responses: where along a response does the reward move?

A reward model scores every prefix: ``r_t`` is the reward of the prompt plus
the response up to token ``t`` and the outcome reward is ``R = r_e`` at the
last token. For each response token this computes the change it causes,
``Δr_t = r_t - r_{t-1}``, where ``r_{s-1}`` (the *baseline*) is the reward of
the prompt alone (read at the position just before the first response token,
which a causal model computes without seeing the response). The changes
telescope: ``Σ Δr_t = R - r_{s-1}``.

Optionally a frozen generator gives ``w_t = p_gen(tok_t | tok_<t)``, the
probability of each response token given everything before it. That is the
weight the consistency regularizer puts on the step into token ``t`` (the pair
``(t-1, t)``): an ICRM-trained model is pushed to keep ``r`` flat across
high-probability tokens, so its ``Δr`` should concentrate on unlikely ones.

A response given as a list of steps (process rewards, :mod:`icrm.data`) also
gets its step boundaries recorded, where each step's score is read.
"""

from __future__ import annotations

from typing import Sequence as Seq

import numpy as np
import torch

from ..data import DEFAULT_SEPARATOR, Message, cut_left, encode, encode_steps, join_steps, messages_of, token_texts
from .record import Explained


@torch.no_grad()
def explain_responses(
    rm,
    prompt: str | list[Message],
    responses: Seq[tuple[str, str | list[str]]],
    model_name: str,
    generator=None,
    max_length: int | None = None,
    separator: str = DEFAULT_SEPARATOR,
) -> list[Explained]:
    """Per-token rewards of each ``(label, response)`` to one prompt.

    A response given as a list of steps is joined with ``separator`` and its
    step boundaries are recorded (``Explained.step_ends``).

    ``generator`` is ``None``, a causal LM sharing the RM's tokenizer (called
    as ``generator(input_ids=..., attention_mask=...).logits``), or ``"self"``
    for the RM backbone's own LM head. ``max_length`` cuts over-long prompts
    from the left, as training does; a response that alone is too long is an
    error.
    """
    tokenizer = rm.tokenizer
    messages = messages_of(prompt)
    device = next(rm.parameters()).device
    was_training = rm.training
    rm.eval()
    if generator is not None and not isinstance(generator, str):
        gen_training = generator.training
        generator.eval()
    out: list[Explained] = []
    try:
        for label, response in responses:
            steps = None if isinstance(response, str) else list(response)
            if steps is None:
                seq = encode(tokenizer, messages, response)
            else:
                seq, response = encode_steps(tokenizer, messages, steps, separator), join_steps(steps, separator)
            cut = 0
            if max_length is not None:
                fitted = cut_left(seq, max_length, label)
                cut = seq.length - fitted.length
                seq = fitted
            if seq.start >= seq.length:
                raise ValueError(f"{label}: the response has no tokens")
            ids = torch.tensor([seq.input_ids], dtype=torch.long, device=device)
            mask = torch.ones_like(ids)
            rewards, hidden, _ = rm(ids, mask)
            rewards = rewards[0].float().cpu()
            baseline = float(rewards[seq.start - 1]) if seq.start > 0 else 0.0
            r = rewards[seq.start :].tolist()
            delta = np.diff(np.asarray([baseline] + r, dtype=np.float64)).tolist()
            w = None
            if generator is not None:
                w = _generator_probs(rm, generator, ids, mask, hidden, seq.start)
            out.append(
                Explained(
                    model=model_name,
                    label=str(label),
                    tokens=token_texts(tokenizer, messages, response, seq, cut),
                    r=[float(x) for x in r],
                    delta=[float(x) for x in delta],
                    baseline=baseline,
                    outcome=float(r[-1]),
                    w=w,
                    token_ids=list(seq.input_ids[seq.start :]),
                    step_ends=[end - seq.start for end in seq.step_ends],
                )
            )
    finally:
        rm.train(was_training)
        if generator is not None and not isinstance(generator, str):
            generator.train(gen_training)
    return out


def _generator_probs(rm, generator, ids: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor, start: int) -> list[float]:
    """``p_gen(tok_t | tok_<t)`` for every response token ``t >= start``."""
    if isinstance(generator, str):
        if generator != "self":
            raise ValueError(f"unknown generator {generator!r} (pass a causal LM or 'self')")
        if rm.lm_head is None:
            raise ValueError("generator 'self' needs the reward model's LM head, and this model has none")
        logits = rm.lm_head(hidden.to(rm.lm_head.weight.dtype))
    else:
        gen_device = next(generator.parameters()).device
        logits = generator(input_ids=ids.to(gen_device), attention_mask=mask.to(gen_device), use_cache=False).logits
    if logits.shape[-1] <= int(ids.max()):
        raise ValueError(
            f"the generator's vocabulary ({logits.shape[-1]} tokens) does not cover the reward model's token ids"
        )
    from ..modeling import token_logprobs

    probs = token_logprobs(logits[0, :-1], ids[0, 1:].to(logits.device)).exp().cpu()
    # probs[j] = p(tok_{j+1} | tok_<=j); token t uses probs[t-1].
    if start == 0:
        return [float("nan")] + probs.tolist()
    return probs[start - 1 :].tolist()
