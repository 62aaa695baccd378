"""The policy side: sampling, DPO pairs and DPO, online RL (GRPO) against an icrm reward, comparing policies."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "core": ["DPOSettings", "Pick", "Prompt", "SamplingConfig", "build_dpo_pairs_file", "compare_policies",
        "generate_samples", "load_prompts", "make_dpo_pairs", "outcome_rates", "pick_pair", "prompt_key",
        "prompt_value", "sample_hf", "sample_to_file", "train_dpo", "true_reward_judge"],
    "grpo": ["GRPOSettings", "train_grpo"],
})
