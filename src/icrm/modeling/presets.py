"""Tiny backbones trained from scratch: ``--model tiny|small`` needs no download.

Tests, the demo and the benchmarks build these in seconds: a byte-level BPE
tokenizer trained on the task's own text, with icrm's chat template, and a
freshly initialised small Llama over its vocabulary.
"""

from __future__ import annotations

from typing import Iterable

import torch

PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=1024),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8, vocab_size=4096),
}

# One turn per message, each closed by <|end|>, which is also EOS: the outcome
# reward is read at the <|end|> that closes the assistant's answer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on the given text, with a chat template.

    Used by ``--model tiny|small`` so tests and the demo need no download.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_causal_lm(preset: str, tokenizer, seed: int = 0):
    """A freshly initialised small Llama with the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = dict(PRESETS[preset])
    spec["vocab_size"] = len(tokenizer)
    config = LlamaConfig(
        **spec,
        num_key_value_heads=spec["num_attention_heads"],
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
