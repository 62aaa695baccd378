"""Models: the tiny from-scratch backbones, loading backbones and tokenizers, ``RewardModel`` (a reward at
every prefix), the checkpoint format, peft adapters, padding-free packing, the generator's token
probabilities and the length policy."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "checkpoint": ["ICRM_CONFIG", "ICRM_STATE", "LM_HEAD_FILE", "WEIGHTS_FILE", "model_kind"],
    "gguf": ["GGUF_PRESETS", "gguf_file", "resolve_model"],
    "generator": ["EDGE_BYTES", "GenerationWeights", "cached_generation_weights", "files_fingerprint",
        "head_generation_weights", "load_generator", "next_token_logprobs", "token_logprobs"],
    "lengths": ["Fitted", "fit_examples", "resolve_max_length"],
    "loading": ["ModelError", "check_model_path", "load_causal_lm", "load_tokenizer", "prepare_tokenizer",
        "require_safetensors"],
    "packing": ["PACKED_ATTENTION", "PackedRewardCollator", "PackedSFTCollator", "PackingError", "pack", "shares_prefix",
        "span_mask", "unpack", "use_packed_attention"],
    "peft": ["add_lora", "add_peft", "lora_config"],
    "presets": ["CHAT_TEMPLATE", "PRESETS", "build_causal_lm", "train_tokenizer"],
    "reward_model": ["RewardModel"],
    "spec": ["ModelSpec"],
})
