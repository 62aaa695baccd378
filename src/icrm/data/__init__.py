"""Rows in, examples out: reading files and datasets, the normalized examples of each format, chat
rendering, tokenizing and collating, step boundaries, answers, and the embedded and converted datasets."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "answers": ["canonical_answer", "extract_answer"],
    "converters": ["gsm8k_best_of_n", "gsm8k_sft", "split_by_prompt"],
    "core": ["BonExample", "DataError", "FORMAT_FIELDS", "LoadedData", "Message", "PairExample", "PointExample",
        "RewardCollator", "RewardDataset", "Sequence", "StepExample", "TokenizeStats", "as_messages", "cut_left",
        "encode", "encode_steps", "example_texts", "fit_length", "flatten_responses", "last_token_index",
        "load_examples", "messages_of", "parse_hh_dialogue", "read_rows", "response_text", "responses_of",
        "token_texts", "tokenize_examples", "without_open_turn"],
    "steps": ["AGGREGATES", "DEFAULT_SEPARATOR", "aggregate", "auroc", "average_ranks", "first_error",
        "first_error_f1", "join_steps", "labels_from_first_error", "localization", "plot_step_profile",
        "predicted_first_error", "sigmoid", "split_steps", "step_char_ends", "step_metrics", "step_profile",
        "tokens_at_chars"],
    "synthetic": ["BAD_WORDS", "BON_CANDIDATES", "CALCULATION_TASKS", "GOOD_WORDS", "LENGTH_GAP", "SUFFIX",
        "TASKS", "arithmetic_is_correct", "decisive_word_mask", "true_reward", "write_task"],
})
