"""The policy side: sampling, DPO pairs and DPO, online RL (GRPO) against an icrm reward, comparing policies.

The loop, one command per step (the runners are in ``icrm.commands``):
``sample`` draws N responses per prompt from a policy (a causal LM with a
chat template, e.g. the output of ``icrm sft``); ``dpo-pairs`` scores them
with a reward model and keeps the best and the worst of each prompt;
``dpo`` trains the policy on those pairs (reference = the starting policy);
``compare-policies`` samples from several policies and judges them with a
reward model or, on the embedded synthetic tasks, with the true reward.
``grpo`` trains a policy online with the reward model as its reward.
"""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "compare": ["TRUE_REWARD", "outcome_rates", "synthetic_task_of", "true_reward_judge"],
    "dpo": ["dpo_rows", "plot_dpo_loss", "run_dpo"],
    "grpo": ["check_group_size", "check_reward_model", "plot_rewards", "run_grpo"],
    "pairs": ["Pick", "conversational_pair", "make_dpo_pairs", "pick_pair"],
    "prompts": ["Prompt", "load_prompts", "prompt_key", "prompt_keys", "prompt_value", "render_prompts"],
    "sampling": ["Samples", "generate_samples", "sample_hf"],
    "settings": ["DPOSettings", "DPO_LOSS_TYPES", "ENGINES", "GRPOSettings", "GRPO_LOSS_TYPES", "SCALE_REWARDS",
        "SamplingConfig", "check_top_p_top_k", "require_vllm"],
    "trainers": ["train_with_trl", "training_summary", "write_run_record"],
})
