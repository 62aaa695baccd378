"""Rows in, examples out: reading files and datasets, the normalized examples of each format, chat
rendering, tokenizing and collating, step boundaries, answers, and the embedded and converted datasets.

Only ``collate`` imports torch, so reading, validating and converting data stays light."""

from ..exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "answers": ["canonical_answer", "extract_answer"],
    "chat": ["Message", "as_messages", "first_user_turn", "messages_of", "parse_hh_dialogue", "response_text",
        "without_open_turn"],
    "collate": ["RewardCollator", "RewardDataset", "last_token_index"],
    "converters": ["check_test_fraction", "gsm8k_best_of_n_rows", "gsm8k_sft_rows", "pointwise_rows",
        "split_by_prompt_groups", "split_questions"],
    "examples": ["BonExample", "PairExample", "PointExample", "StepExample", "example_texts", "flatten_responses",
        "responses_of"],
    "formats": ["FORMAT_FIELDS", "detect_format", "to_bon", "to_pair", "to_point", "to_processbench", "to_step"],
    "loading": ["LoadedData", "load_examples"],
    "probes": ["VERBOSITY_PADDING", "chosen_shorter", "fitting", "split_by_instruction", "verbosity_attack"],
    "readers": ["DataError", "Row", "read_rows"],
    "steps": ["DEFAULT_SEPARATOR", "join_steps", "labels_from_first_error", "split_steps", "step_char_ends",
        "tokens_at_chars"],
    "synthetic": ["BAD_WORDS", "BON_CANDIDATES", "CALCULATION_TASKS", "GOOD_WORDS", "LENGTH_GAP", "SUFFIX",
        "TASKS", "arithmetic_is_correct", "decisive_word_mask", "true_reward"],
    "tokenize": ["Sequence", "TokenizeStats", "cut_left", "encode", "encode_steps", "fit_length", "token_texts",
        "tokenize_examples"],
})
