"""``icrm sft``: train a causal LM on a preference file's chosen, rejected or all responses."""

from __future__ import annotations

from dataclasses import asdict

from transformers import Trainer, TrainingArguments

from ..data import DEFAULT_SEPARATOR, RewardDataset, example_texts, load_examples, tokenize_examples
from ..modeling import (
    PRESETS,
    ModelSpec,
    PackedSFTCollator,
    build_causal_lm,
    load_causal_lm,
    train_tokenizer,
    use_packed_attention,
)
from ..outputs import check_output, progress, write_json
from ..training import ConfigError, SFTCollator, sft_examples
from .runs import run_directory, run_trainer


def train_sft(
    data: str,
    output: str,
    args: TrainingArguments,
    spec: ModelSpec,
    max_length: int = 1024,
    truncation: str = "left",
    skip_invalid: bool = False,
    resume: bool = False,
    responses: str = "chosen",
    step_separator: str = DEFAULT_SEPARATOR,
    packing: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """``icrm sft``: train a causal LM on the chosen, rejected or all responses.

    The result is a plain transformers causal-LM directory: a generator for
    ``--generator`` (train it on ``both``), a backbone for ``--model`` and a
    policy for sampling and DPO (train it on ``chosen``). ``packing``: each
    batch as one padding-free sequence (TRL's ``padding_free`` collator);
    ``None``: where the model's attention packs at no extra cost. ``output``
    may be an earlier ``sft`` output; anything else there needs ``overwrite``.
    """
    check_output(output, "sft", overwrite)
    loaded = load_examples(
        data, expect=("pairwise", "pointwise", "stepwise"), skip_invalid=skip_invalid, step_separator=step_separator
    )
    chosen = sft_examples(loaded.examples, responses)
    if not chosen:
        raise ConfigError(f"{data}: no {responses} responses to train on")
    if spec.name in PRESETS:
        tokenizer = train_tokenizer(example_texts(loaded.examples), PRESETS[spec.name]["vocab_size"])
        model = build_causal_lm(spec.name, tokenizer, args.seed)
    else:
        model, tokenizer = load_causal_lm(spec.name, spec.trust_remote_code, spec.allow_pickle)
    if spec.lora_r > 0:
        from peft import get_peft_model

        model = get_peft_model(model, spec.peft_config())
    packing = use_packed_attention(model, packing)
    with progress("tokenizing", len(chosen)) as advance:
        items, kept, stats = tokenize_examples(chosen, tokenizer, max_length, truncation, advance)
    if not items:
        raise ConfigError(f"{data}: every row is longer than --max-length {max_length}")
    dataset = RewardDataset([chosen[i] for i in kept], items)

    resolved = {"data": data, "responses": responses, "model": asdict(spec), "max_length": max_length, "seed": args.seed,
                "learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs,
                "max_steps": args.max_steps, "packing": packing}
    with run_directory(output, "sft", resume, resolved, args) as work:
        args.output_dir = str(work / "trainer")
        collator = PackedSFTCollator(tokenizer.pad_token_id) if packing else SFTCollator(tokenizer.pad_token_id)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        result = run_trainer(trainer, work, resume)
        metrics = {
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "train_examples": len(dataset),
            "truncated": stats.truncated,
            "dropped_over_length": stats.dropped,
            "log_history": trainer.state.log_history,
        }
        if trainer.is_world_process_zero():
            if spec.lora_r > 0:
                model = model.merge_and_unload()
            model.save_pretrained(work)
            tokenizer.save_pretrained(work)
            write_json(work / "metrics.json", metrics)
    return metrics
