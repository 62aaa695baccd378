"""Evaluating reward models: scoring responses and the metrics on scores (pairwise, RewardBench, best-of-N)."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "metrics": ["bon_metrics", "expected_pass_at_n", "expected_random_at_n", "pairwise_metrics",
        "plot_accuracy_bars", "plot_bon_comparison", "plot_bon_curve", "plot_loss_curves", "plot_loss_terms",
        "plot_margin_histogram", "reward_normalizer", "rewardbench2_metrics", "rewardbench2_subsets",
        "rewardbench_example_counts", "rewardbench_sections"],
    "scoring": ["best_of_n", "evaluate_pairs", "load_reward_model", "score_file", "score_responses", "score_steps"],
})
