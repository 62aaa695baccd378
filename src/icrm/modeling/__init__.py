"""Models: loading backbones and tokenizers, ``RewardModel`` (a reward at every prefix), LoRA, the
checkpoint, padding-free packing, the generator's token probabilities and the length policy."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "core": ["ICRM_CONFIG", "ICRM_STATE", "LM_HEAD_FILE", "ModelError", "PRESETS", "RewardModel", "WEIGHTS_FILE",
        "add_lora", "add_peft", "build_causal_lm", "load_causal_lm", "load_tokenizer", "lora_config", "model_kind",
        "prepare_tokenizer", "require_safetensors", "train_tokenizer"],
    "generator": ["EDGE_BYTES", "GenerationWeights", "cached_generation_weights", "files_fingerprint",
        "head_generation_weights", "load_generator", "next_token_logprobs", "token_logprobs"],
    "lengths": ["Fitted", "fit_examples", "resolve_max_length"],
    "packing": ["PACKED_ATTENTION", "PackedRewardCollator", "PackedSFTCollator", "PackingError", "pack", "unpack",
        "use_packed_attention"],
})
