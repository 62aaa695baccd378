"""Sampling N responses per prompt from a policy, with transformers' ``generate`` or vLLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..outputs import progress
from .prompts import Prompt, render_prompts
from .settings import SamplingConfig, require_vllm


@dataclass
class Samples:
    """``texts[i]`` holds the N responses to prompt ``i``; ``truncated`` counts those cut at max-new-tokens."""

    texts: list[list[str]]
    truncated: int = 0


def generate_samples(
    policy: str,
    prompts: list[Prompt],
    config: SamplingConfig,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Samples:
    """N responses per prompt from the policy, with the engine the config names."""
    config.validate()
    if config.engine == "vllm":
        return _sample_vllm(policy, prompts, config, trust_remote_code)
    from ..modeling import load_causal_lm

    model, tokenizer = load_causal_lm(policy, trust_remote_code, allow_pickle)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return sample_hf(model.to(device), tokenizer, prompts, config)


def _eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's (e.g. Llama 3's eot)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def sample_hf(model, tokenizer, prompts: list[Prompt], config: SamplingConfig) -> Samples:
    """Sample with ``transformers`` ``generate``, batching prompt copies with left padding.

    Every (prompt, copy) pair is one row, so a batch holds ``batch_size``
    sequences whatever N is. Left padding keeps each prompt's last token at
    the end of the row, where generation continues. The seed is set once, so
    a run is reproducible for a given batch size.
    """
    from transformers import set_seed

    config.validate()
    set_seed(config.seed)
    texts = render_prompts(tokenizer, prompts)
    rows = [i for i in range(len(prompts)) for _ in range(config.n)]
    eos = _eos_ids(model, tokenizer)
    decoding = dict(do_sample=False)
    if config.temperature > 0:
        decoding = dict(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    out: list[list[str]] = [[] for _ in prompts]
    truncated = 0
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with progress("sampling", len(rows)) as advance:
            for lo in range(0, len(rows), config.batch_size):
                chunk = rows[lo : lo + config.batch_size]
                batch = tokenizer(
                    [texts[i] for i in chunk], add_special_tokens=False, padding=True, return_tensors="pt"
                ).to(device)
                generated = model.generate(
                    **batch,
                    max_new_tokens=config.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                    **decoding,
                )[:, batch["input_ids"].shape[1] :]
                for i, ids in zip(chunk, generated.tolist()):
                    ends = [k for k, t in enumerate(ids) if t in eos]
                    truncated += not ends
                    ids = ids[: ends[0]] if ends else ids
                    out[i].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
                advance(len(chunk))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return Samples(out, truncated)


def _sample_vllm(policy: str, prompts: list[Prompt], config: SamplingConfig, trust_remote_code: bool) -> Samples:
    """Sample with vLLM from the same chat-template token ids the HF path uses."""
    vllm = require_vllm()
    from ..modeling import load_tokenizer

    tokenizer = load_tokenizer(policy, trust_remote_code)
    texts = render_prompts(tokenizer, prompts)
    token_prompts = [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
    llm = vllm.LLM(model=policy, seed=config.seed, trust_remote_code=trust_remote_code)
    params = vllm.SamplingParams(
        n=config.n,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k if config.top_k > 0 else -1,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
    )
    results = llm.generate(token_prompts, params)
    texts_out = [[c.text.strip() for c in r.outputs] for r in results]
    truncated = sum(c.finish_reason == "length" for r in results for c in r.outputs)
    return Samples(texts_out, truncated)
