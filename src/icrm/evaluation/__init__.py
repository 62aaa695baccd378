"""Evaluating reward models: scoring responses, and the metrics on the scores (pairwise, RewardBench 1 and 2,
best-of-N) with their plots."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "bon": ["bon_metrics", "expected_pass_at_n", "expected_random_at_n"],
    "pairwise": ["pairwise_metrics", "reward_normalizer"],
    "plots": ["plot_accuracy_bars", "plot_bon_comparison", "plot_bon_curve", "plot_loss_curves", "plot_loss_terms",
        "plot_margin_histogram"],
    "rewardbench": ["TIES", "parse_ties_id", "rewardbench2_metrics", "rewardbench2_subsets",
        "rewardbench_example_counts", "rewardbench_sections"],
    "scoring": ["chains_of", "load_reward_model", "per_example", "score_responses", "score_sequences", "score_steps"],
})
