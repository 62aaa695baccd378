"""What :class:`~icrm.training.ICRMTrainer` is given, made icrm's: the reward model and tokenized datasets.

A model arrives as a name, a loaded transformers model or a :class:`RewardModel`;
a dataset as a ``datasets.Dataset``, a list of dicts or loaded examples. Each is
validated as ``icrm train`` validates files, then tokenized through the chat
template (in ``dataset_num_proc`` processes where asked).
"""

from __future__ import annotations

import sys

import torch

from ..data import (
    LoadedData,
    PairExample,
    RewardDataset,
    StepExample,
    TokenizeStats,
    example_texts,
    load_examples,
    tokenize_examples,
)
from ..modeling import PRESETS, RewardModel, build_causal_lm, load_tokenizer, prepare_tokenizer, train_tokenizer
from ..outputs import progress
from .config import TRAINABLE_FORMATS, ConfigError, ConfigFieldError, ICRMConfig


def model_name(model) -> str:
    """The hub id or path ``model`` was loaded from, else its class name (names the run and its output)."""
    if isinstance(model, str):
        return model
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", "") or type(model).__name__


def model_init_kwargs(args: ICRMConfig) -> dict:
    """``args.model_init_kwargs`` for ``from_pretrained``, with TRL's float32 default and string dtypes."""
    kwargs = dict(args.model_init_kwargs or {})
    dtype = kwargs.setdefault("dtype", torch.float32)
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"model_init_kwargs: unknown dtype {dtype!r} (e.g. 'bfloat16', 'float32', 'auto')")
        kwargs["dtype"] = getattr(torch, dtype)
    return kwargs


def reward_model_of(model, args: ICRMConfig, tokenizer, data) -> RewardModel:
    """The :class:`RewardModel` that ``model`` names or holds (see :class:`ICRMTrainer`)."""
    if tokenizer is not None:
        prepare_tokenizer(tokenizer)
    if isinstance(model, RewardModel):
        model.tokenizer = tokenizer or model.tokenizer
        return model
    if not isinstance(model, str):
        tokenizer = tokenizer or load_tokenizer(model_name(model), args.trust_remote_code)
        return RewardModel.from_model(model, tokenizer)
    if model in PRESETS:
        tokenizer = tokenizer or train_tokenizer(example_texts(data.examples), PRESETS[model]["vocab_size"])
        return RewardModel.from_causal_lm(build_causal_lm(model, tokenizer, args.seed), tokenizer)
    return RewardModel.from_pretrained(
        model, args.trust_remote_code, args.allow_pickle, tokenizer, **model_init_kwargs(args)
    )


def data_format(data: LoadedData | RewardDataset) -> str:
    """``pairwise``, ``pointwise`` or ``stepwise``: the format of loaded or tokenized rows."""
    if isinstance(data, LoadedData):
        return data.format
    first = data.examples[0]
    return "pairwise" if isinstance(first, PairExample) else "stepwise" if isinstance(first, StepExample) else "pointwise"


def validated_examples(
    dataset, name: str, step_separator: str, same_as: str | None = None
) -> LoadedData | RewardDataset:
    """Validated rows of a dataset in any accepted form (see :class:`ICRMTrainer`).

    ``same_as``: the format the rows must have (the training data's, for evaluation).
    """
    if isinstance(dataset, (RewardDataset, LoadedData)):
        data = dataset
    else:
        expect = (same_as,) if same_as else TRAINABLE_FORMATS
        data = load_examples(dataset, name=name, expect=expect, step_separator=step_separator)
    fmt = data_format(data)
    if fmt not in TRAINABLE_FORMATS or (same_as and fmt != same_as):
        wanted = same_as or " or ".join(TRAINABLE_FORMATS)
        raise ConfigError(f"{name}: has {fmt} rows, training needs {wanted} rows")
    return data


def map_eval(eval_dataset, fn):
    """``fn(dataset, name)`` on an eval dataset, or on each of a dict of them (as transformers allows)."""
    if eval_dataset is None:
        return None
    if isinstance(eval_dataset, dict):
        return {key: fn(value, f"eval_dataset[{key!r}]") for key, value in eval_dataset.items()}
    return fn(eval_dataset, "eval_dataset")


def reward_datasets(*datasets) -> list[RewardDataset]:
    """The tokenized datasets among these (each a dataset, a dict of them, a name or None)."""
    found = []
    for dataset in datasets:
        found += dataset.values() if isinstance(dataset, dict) else [dataset]
    return [d for d in found if isinstance(d, RewardDataset)]


def tokenize_in_processes(examples: list, tokenizer, max_length: int, truncation: str, num_proc: int):
    """:func:`tokenize_examples` over ``num_proc`` processes (``dataset_num_proc``), results in order."""
    import multiprocessing
    from itertools import pairwise

    bounds = [len(examples) * k // num_proc for k in range(num_proc + 1)]
    chunks = [(examples[lo:hi], tokenizer, max_length, truncation) for lo, hi in pairwise(bounds)]
    with multiprocessing.Pool(num_proc) as pool:
        parts = pool.starmap(tokenize_examples, chunks)
    items, kept, stats = [], [], TokenizeStats()
    for lo, (part_items, part_kept, part_stats) in zip(bounds, parts):
        items += part_items
        kept += [lo + i for i in part_kept]
        stats.truncated += part_stats.truncated
        stats.dropped += part_stats.dropped
    return items, kept, stats


def tokenize_dataset(data: LoadedData, tokenizer, args: ICRMConfig, label: str) -> tuple[RewardDataset, dict]:
    """Tokenized rows through the chat template, over-long ones cut or dropped, and the counts of each."""
    max_length = args.max_length or sys.maxsize
    if (args.dataset_num_proc or 1) > 1:
        items, kept, stats = tokenize_in_processes(data.examples, tokenizer, max_length, args.truncation,
                                                   args.dataset_num_proc)
    else:
        with progress(f"tokenizing {label}", len(data.examples)) as advance:
            items, kept, stats = tokenize_examples(data.examples, tokenizer, max_length, args.truncation, advance)
    if not items:
        raise ConfigFieldError(args, "max_length", f"{data.source}: every row is longer than {{field}} {max_length}")
    counts = {
        "examples": len(items), "skipped_rows": data.skipped, "truncated": stats.truncated,
        "dropped_over_length": stats.dropped,
    }
    return RewardDataset([data.examples[i] for i in kept], items), counts
