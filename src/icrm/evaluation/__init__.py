"""Evaluating reward models: scoring responses and the settings of scoring a file, and the metrics on the scores
(pairwise, RewardBench 1 and 2, best-of-N, process rewards) with their plots, the aggregation of step scores and
the statistics they share."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "aggregation": ["AGGREGATES", "aggregate"],
    "bon": ["bon_metrics", "expected_pass_at_n", "expected_random_at_n"],
    "pairwise": ["pairwise_metrics", "reward_normalizer"],
    "plots": ["plot_accuracy_bars", "plot_bon_comparison", "plot_bon_curve", "plot_loss_curves", "plot_loss_terms",
        "plot_margin_histogram", "plot_step_profile"],
    "process": ["first_error", "first_error_f1", "localization", "predicted_first_error", "step_metrics", "step_profile"],
    "rewardbench": ["TIES", "parse_ties_id", "rewardbench2_metrics", "rewardbench2_subsets",
        "rewardbench_example_counts", "rewardbench_sections"],
    "scoring": ["chains_of", "load_and_fit", "load_reward_model", "per_example", "score_responses", "score_sequences",
        "score_steps"],
    "settings": ["ScoringOptions"],
    "statistics": ["auroc", "average_ranks", "sigmoid"],
})
