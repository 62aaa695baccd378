"""Use a reward model to improve a policy: sample, build DPO pairs, train DPO, compare.

The loop this module supports, one command per step:

1. ``sample`` -- draw N responses per prompt from a policy (a causal LM with
   a chat template, e.g. the output of ``icrm sft``) and write them as
   best-of-N rows (``prompt``, ``candidates``; docs/design.md#best-of-n-rows).
2. ``dpo-pairs`` -- score the candidates with a reward model and keep the
   best and the worst of each prompt as chosen/rejected, in TRL's
   conversational ``prompt``/``chosen``/``rejected`` format.
3. ``dpo`` -- train the policy on those pairs with TRL's ``DPOTrainer``
   (reference = the starting policy) and save a plain causal-LM directory.
4. ``compare-policies`` -- sample from several policies and judge them with a
   reward model or, on the embedded synthetic tasks, with the true reward.

Prompts are always rendered with the policy's chat template
(``add_generation_prompt=True``) and responses are scored through the same
template, so sampling, DPO and reward scoring all see one token layout.
The pair-selection rules are pure functions of lists of rewards
(:func:`pick_pair`, :func:`make_dpo_pairs`) so they can be tested alone.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data import (
    FORMAT_FIELDS,
    DataError,
    Message,
    PairExample,
    as_messages,
    load_examples,
    read_rows,
    without_open_turn,
)
from ..errors import UserError
from ..outputs import check_output, library_bars_off, progress, staged_directory, write_json, write_jsonl

ENGINES = ("hf", "vllm")
TRUE_REWARD = "true-reward"
# The losses TRL 1.x's DPOTrainer implements; it only rejects others mid-training.
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)


# ------------------------------------------------------------------- prompts


@dataclass
class Prompt:
    """One prompt to sample from, as chat messages, with its source row's id and line."""

    messages: list[Message]
    id: str | None = None
    line: int = 0


def load_prompts(source: str | Path) -> list[Prompt]:
    """Prompts from a prompts file (``prompt`` per row) or any pairwise/pointwise/bon file.

    A plain prompts file lets users sample on new prompts; accepting every data
    format lets them sample on the prompts of a test set without converting it.
    Rows are kept in order, duplicates included, so outputs line up with the
    input file. A trailing empty assistant turn (HH-style prompt strings end in
    ``Assistant:``) is dropped, since generation adds the assistant turn itself.
    """
    name = str(source)
    rows = read_rows(source)
    if any(f in rows[0].data for fields in FORMAT_FIELDS.values() for f in fields):
        examples = load_examples(source).examples
        return [Prompt(without_open_turn(ex.prompt), ex.id, ex.line) for ex in examples]
    prompts = []
    for row in rows:
        if row.data.get("prompt") is None:
            present = ", ".join(sorted(row.data)) or "none"
            raise DataError(name, f"missing column (row has {present})", row.line, "prompt")
        messages = without_open_turn(as_messages(row.data["prompt"], name, row.line, "prompt"))
        if not messages or not any(m["content"].strip() for m in messages):
            raise DataError(name, "empty prompt", row.line, "prompt")
        row_id = row.data.get("id")
        prompts.append(Prompt(messages, None if row_id is None else str(row_id), row.line))
    return prompts


def prompt_value(messages: list[Message]) -> str | list[Message]:
    """A single user turn as a plain string (readable files), anything else as messages."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


def prompt_key(messages: list[Message]) -> str:
    """A comparison key for a prompt: roles and text with case and whitespace normalized.

    Used to find training prompts that also occur in a test set, so a policy is
    not trained on the prompts it will be judged on.
    """
    return json.dumps([[m["role"], " ".join(m["content"].lower().split())] for m in messages])


def render_prompts(tokenizer, prompts: list[Prompt]) -> list[str]:
    """Chat-template text that ends where the assistant's answer starts."""
    if not tokenizer.chat_template:
        raise UserError("the policy's tokenizer has no chat template (train the policy with `icrm sft`)")
    return [tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in prompts]


# ------------------------------------------------------------------ sampling


@dataclass
class SamplingConfig:
    """How to sample: N per prompt, the decoding knobs, the seed, the batch and the engine.

    ``temperature=0`` means greedy decoding (then all N samples are equal).
    ``top_k=0`` disables top-k, so plain temperature/top-p sampling is the
    same under transformers (whose own default is top-k 50) and vLLM.
    """

    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 16
    engine: str = "hf"

    def validate(self) -> None:
        """Fail before any model is loaded, with the option's name in the message."""
        if self.n < 1:
            raise UserError(f"--n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.engine not in ENGINES:
            raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "vllm":
            require_vllm()


def require_vllm():
    """The vllm module, or a one-line error saying how to get it (it is an optional dependency)."""
    try:
        import vllm
    except ImportError as err:
        raise UserError("--engine vllm needs vLLM, which is not installed (pip install vllm), or use --engine hf") from err
    return vllm


@dataclass
class Samples:
    """``texts[i]`` holds the N responses to prompt ``i``; ``truncated`` counts those cut at max-new-tokens."""

    texts: list[list[str]]
    truncated: int = 0


def generate_samples(
    policy: str,
    prompts: list[Prompt],
    config: SamplingConfig,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Samples:
    """N responses per prompt from the policy, with the engine the config names."""
    config.validate()
    if config.engine == "vllm":
        return _sample_vllm(policy, prompts, config, trust_remote_code)
    from ..modeling import load_causal_lm

    model, tokenizer = load_causal_lm(policy, trust_remote_code, allow_pickle)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return sample_hf(model.to(device), tokenizer, prompts, config)


def _eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's (e.g. Llama 3's eot)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def sample_hf(model, tokenizer, prompts: list[Prompt], config: SamplingConfig) -> Samples:
    """Sample with ``transformers`` ``generate``, batching prompt copies with left padding.

    Every (prompt, copy) pair is one row, so a batch holds ``batch_size``
    sequences whatever N is. Left padding keeps each prompt's last token at
    the end of the row, where generation continues. The seed is set once, so
    a run is reproducible for a given batch size.
    """
    from transformers import set_seed

    config.validate()
    set_seed(config.seed)
    texts = render_prompts(tokenizer, prompts)
    rows = [i for i in range(len(prompts)) for _ in range(config.n)]
    eos = _eos_ids(model, tokenizer)
    decoding = dict(do_sample=False)
    if config.temperature > 0:
        decoding = dict(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    out: list[list[str]] = [[] for _ in prompts]
    truncated = 0
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with progress("sampling", len(rows)) as advance:
            for lo in range(0, len(rows), config.batch_size):
                chunk = rows[lo : lo + config.batch_size]
                batch = tokenizer(
                    [texts[i] for i in chunk], add_special_tokens=False, padding=True, return_tensors="pt"
                ).to(device)
                generated = model.generate(
                    **batch,
                    max_new_tokens=config.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                    **decoding,
                )[:, batch["input_ids"].shape[1] :]
                for i, ids in zip(chunk, generated.tolist()):
                    ends = [k for k, t in enumerate(ids) if t in eos]
                    truncated += not ends
                    ids = ids[: ends[0]] if ends else ids
                    out[i].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
                advance(len(chunk))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return Samples(out, truncated)


def _sample_vllm(policy: str, prompts: list[Prompt], config: SamplingConfig, trust_remote_code: bool) -> Samples:
    """Sample with vLLM from the same chat-template token ids the HF path uses."""
    vllm = require_vllm()
    from ..modeling import load_tokenizer

    tokenizer = load_tokenizer(policy, trust_remote_code)
    texts = render_prompts(tokenizer, prompts)
    token_prompts = [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
    llm = vllm.LLM(model=policy, seed=config.seed, trust_remote_code=trust_remote_code)
    params = vllm.SamplingParams(
        n=config.n,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k if config.top_k > 0 else -1,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
    )
    results = llm.generate(token_prompts, params)
    texts_out = [[c.text.strip() for c in r.outputs] for r in results]
    truncated = sum(c.finish_reason == "length" for r in results for c in r.outputs)
    return Samples(texts_out, truncated)


def sample_to_file(
    policy: str,
    prompts_source: str,
    output: str | Path,
    config: SamplingConfig,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict:
    """``icrm sample``: write best-of-N rows (``prompt``, ``candidates``, ``id``) atomically.

    Empty responses are left out of ``candidates`` and counted: the best-of-N
    format requires non-empty responses, and an empty answer carries no text
    to prefer or reject. A prompt left with no candidate is dropped and
    counted. An existing ``output`` is replaced only with ``overwrite``.
    """
    check_output(output, None, overwrite)
    config.validate()
    prompts = load_prompts(prompts_source)
    samples = generate_samples(policy, prompts, config, trust_remote_code, allow_pickle)
    rows, empty, dropped = [], 0, 0
    for prompt, texts in zip(prompts, samples.texts):
        kept = [t for t in texts if t]
        empty += len(texts) - len(kept)
        if not kept:
            dropped += 1
            continue
        row = {"prompt": prompt_value(prompt.messages), "candidates": kept}
        if prompt.id is not None:
            row["id"] = prompt.id
        rows.append(row)
    if not rows:
        raise UserError(f"{policy}: every sampled response was empty; nothing to write")
    write_jsonl(output, rows)
    return {
        "prompts": len(prompts),
        "rows": len(rows),
        "samples": sum(len(r["candidates"]) for r in rows),
        "empty_dropped": empty,
        "prompts_dropped": dropped,
        "truncated": samples.truncated,
        "output": str(output),
    }


# ----------------------------------------------------------------- DPO pairs


@dataclass(frozen=True)
class Pick:
    """The chosen/rejected candidate indices of one prompt, or why there is no pair.

    ``reason`` is ``ok``, ``identical`` (only one distinct text), ``tie``
    (best and worst rewards equal) or ``gap`` (reward gap below the minimum).
    """

    reason: str
    chosen: int | None = None
    rejected: int | None = None


def pick_pair(candidates: list[str], rewards: list[float], min_gap: float = 0.0) -> Pick:
    """Best and worst candidate by reward, if they make an informative preference pair.

    Duplicate texts count once (the first one's index and reward is used), so
    identical samples are never a pair even when batching gives them rewards
    that differ in the last bit. Ties among the best (or worst) go to the
    earliest candidate. A pair whose reward gap is below ``min_gap`` is left
    out: small gaps are mostly reward-model noise, and DPO on noise teaches
    the policy nothing true.
    """
    if len(candidates) != len(rewards):
        raise ValueError(f"{len(candidates)} candidates but {len(rewards)} rewards")
    first: dict[str, int] = {}
    for index, text in enumerate(candidates):
        first.setdefault(text, index)
    distinct = list(first.values())
    if len(distinct) < 2:
        return Pick("identical")
    best = max(distinct, key=lambda i: (rewards[i], -i))
    worst = min(distinct, key=lambda i: (rewards[i], i))
    gap = rewards[best] - rewards[worst]
    if gap == 0:
        return Pick("tie")
    if gap < min_gap:
        return Pick("gap")
    return Pick("ok", best, worst)


def make_dpo_pairs(
    prompts: list[list[Message]],
    candidates: list[list[str]],
    rewards: list[list[float]],
    min_gap: float = 0.0,
    exclude: set[str] | frozenset[str] = frozenset(),
    ids: list[str | None] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """DPO rows in TRL's conversational format, and counts of what was left out and why.

    Prompts whose :func:`prompt_key` is in ``exclude`` are dropped first
    (``overlap``). Rows are conversational -- ``prompt`` a message list,
    ``chosen``/``rejected`` one assistant message each -- because TRL applies
    the chat template only to conversational rows, and the policy was sampled
    through its chat template. ``chosen_reward``/``rejected_reward`` record
    the judge's scores; icrm can also read these rows as pairwise data.
    """
    counts = {"prompts": len(prompts), "pairs": 0, "overlap": 0, "identical": 0, "tie": 0, "gap": 0}
    rows = []
    for index, (prompt, texts, scores) in enumerate(zip(prompts, candidates, rewards, strict=True)):
        if prompt_key(prompt) in exclude:
            counts["overlap"] += 1
            continue
        pick = pick_pair(texts, scores, min_gap)
        if pick.reason != "ok":
            counts[pick.reason] += 1
            continue
        row = {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": texts[pick.chosen]}],
            "rejected": [{"role": "assistant", "content": texts[pick.rejected]}],
            "chosen_reward": scores[pick.chosen],
            "rejected_reward": scores[pick.rejected],
        }
        if ids is not None and ids[index] is not None:
            row["id"] = ids[index]
        rows.append(row)
    counts["pairs"] = len(rows)
    return rows, counts


def build_dpo_pairs_file(
    model: str,
    data: str,
    output: str | Path,
    *,
    min_gap: float = 0.0,
    exclude_prompts: str | None = None,
    batch_size: int = 16,
    skip_invalid: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict[str, int]:
    """``icrm dpo-pairs``: score best-of-N candidates and write chosen/rejected pairs.

    Overlapping prompts are removed before scoring, so no reward-model time
    is spent on them. No pair at all is an error (a DPO run on an empty file
    could only fail later, with a less helpful message). An existing ``output``
    is replaced only with ``overwrite``.
    """
    from ..evaluation import load_reward_model, score_responses

    check_output(output, None, overwrite)
    if min_gap < 0:
        raise UserError(f"--min-gap must be >= 0, got {min_gap}")
    loaded = load_examples(data, expect=("bon",), skip_invalid=skip_invalid)
    exclude = {prompt_key(p.messages) for p in load_prompts(exclude_prompts)} if exclude_prompts else set()
    examples = loaded.examples
    kept = [ex for ex in examples if prompt_key(ex.prompt) not in exclude]
    if not kept:
        raise UserError(f"{data}: all {len(examples)} prompts occur in {exclude_prompts}; no DPO pairs left")
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    flat = score_responses(
        rm, [ex.prompt for ex in kept for _ in ex.candidates], [c for ex in kept for c in ex.candidates], batch_size
    )
    rewards, at = [], 0
    for ex in kept:
        rewards.append(flat[at : at + len(ex.candidates)])
        at += len(ex.candidates)
    rows, counts = make_dpo_pairs(
        [ex.prompt for ex in kept], [ex.candidates for ex in kept], rewards, min_gap, ids=[ex.id for ex in kept]
    )
    counts["prompts"] = len(examples)
    counts["overlap"] = len(examples) - len(kept)
    counts["skipped_rows"] = loaded.skipped
    if not rows:
        reasons = ", ".join(f"{counts[k]} {k}" for k in ("overlap", "identical", "tie", "gap"))
        raise UserError(f"{data}: no DPO pairs left out of {len(examples)} prompts ({reasons})")
    write_jsonl(output, rows)
    return counts


# ------------------------------------------------------------------ DPO training


@dataclass
class DPOSettings:
    """``icrm dpo`` options that are not ``TrainingArguments`` fields."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    max_length: int = 1024
    lora_r: int = 0
    lora_alpha: int = 16
    gradient_checkpointing: bool = False
    skip_invalid: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False


def dpo_rows(examples: list[PairExample]) -> list[dict]:
    """Validated pairwise examples as TRL conversational rows (see :func:`make_dpo_pairs`)."""
    return [
        {
            "prompt": ex.prompt,
            "chosen": [{"role": "assistant", "content": ex.chosen}],
            "rejected": [{"role": "assistant", "content": ex.rejected}],
        }
        for ex in examples
    ]


def train_dpo(
    policy: str, data: str, output: str | Path, training: dict, settings: DPOSettings, overwrite: bool = False
) -> dict:
    """``icrm dpo``: DPO with TRL's ``DPOTrainer``; writes a plain causal-LM directory.

    ``training`` holds ``TrainingArguments`` fields (see
    :func:`icrm.training.trainer_arguments`). Any pairwise file works, not
    only ``dpo-pairs`` output, because rows go through icrm's validating
    loader first. The reference model is a frozen copy of the starting policy
    (with LoRA, TRL uses the base model with the adapter switched off
    instead). LoRA is merged before saving, so the result loads with
    ``AutoModelForCausalLM.from_pretrained`` and can be sampled, judged or
    trained again like the input. ``output`` may be an earlier ``dpo`` output;
    anything else there needs ``overwrite`` (:func:`icrm.outputs.check_output`).
    """
    import datasets
    import yaml
    from trl import DPOConfig, DPOTrainer

    from ..modeling import load_causal_lm, lora_config

    check_output(output, "dpo", overwrite)
    if settings.beta <= 0:
        raise UserError(f"--beta must be > 0, got {settings.beta}")
    if settings.loss_type not in DPO_LOSS_TYPES:
        raise UserError(f"--loss-type must be one of {', '.join(DPO_LOSS_TYPES)}, got {settings.loss_type!r}")
    if settings.max_length < 8:
        raise UserError(f"--max-length must be at least 8, got {settings.max_length}")
    loaded = load_examples(data, expect=("pairwise",), skip_invalid=settings.skip_invalid)
    model, tokenizer = load_causal_lm(policy, settings.trust_remote_code, settings.allow_pickle)
    dataset = datasets.Dataset.from_list(dpo_rows(loaded.examples))
    peft_config = lora_config(settings.lora_r, settings.lora_alpha)
    ref_model = None if peft_config else copy.deepcopy(model).eval().requires_grad_(False)

    with staged_directory(output, "dpo", overwrite) as staging, library_bars_off():
        config = {**training, "remove_unused_columns": True, "beta": settings.beta, "loss_type": [settings.loss_type],
                  "max_length": settings.max_length, "activation_checkpointing": settings.gradient_checkpointing}
        trainer, result = train_with_trl(DPOTrainer, DPOConfig, "DPO", config, staging, model, tokenizer, peft_config,
                                         ref_model=ref_model, train_dataset=dataset)
        history = trainer.state.log_history
        last = next((entry for entry in reversed(history) if "rewards/accuracies" in entry), {})
        config = {"policy": policy, "data": data, **asdict(settings), **training_summary(training)}
        metrics = {
            "train_loss": result.training_loss,
            "steps": result.global_step,
            "pairs": len(dataset),
            "dropped_over_length": len(dataset) - len(trainer.train_dataset),
            "skipped_rows": loaded.skipped,
            "beta": settings.beta,
            "final_reward_accuracy": last.get("rewards/accuracies"),
            "final_reward_margin": last.get("rewards/margins"),
            "config": config,
            "log_history": history,
        }
        write_json(staging / "metrics.json", metrics)
        (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        _plot_dpo(history, staging / "losses.png")
        shutil.rmtree(staging / "trainer", ignore_errors=True)
    return metrics


def train_with_trl(trainer_cls, config_cls, what: str, config: dict, staging: Path, model, tokenizer, peft_config,
                   **trainer_args):
    """Build a TRL ``config_cls`` and ``trainer_cls``, train under icrm's progress bar, save the policy.

    DPO and GRPO share icrm's conventions this way: TRL's own option checks
    become one-line errors, the trainer's checkpoints go to ``staging/trainer``,
    and the policy (LoRA merged) and its tokenizer are saved to ``staging``.
    Returns the trainer and ``train()``'s result.
    """
    from ..training import use_rich_progress

    try:
        args = config_cls(**config, output_dir=str(staging / "trainer"))
    except ValueError as err:
        raise UserError(f"invalid {what} option: {err}") from err
    trainer = trainer_cls(model=model, args=args, processing_class=tokenizer, peft_config=peft_config, **trainer_args)
    use_rich_progress(trainer)
    result = trainer.train()
    trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    trained.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return trainer, result


def training_summary(training: dict) -> dict:
    """The ``TrainingArguments`` fields a policy run's config.yaml records."""
    kept = ("learning_rate", "num_train_epochs", "max_steps", "seed")
    return {**{k: training[k] for k in kept if k in training}, "batch_size": training.get("per_device_train_batch_size")}


def _plot_dpo(history: list[dict], path: Path) -> None:
    from ..evaluation import plot_loss_curves

    curve = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    if curve:
        plot_loss_curves({"dpo": curve}, path, title="DPO loss")


# ------------------------------------------------------------ comparing policies


def synthetic_task_of(prompts_source: str) -> str | None:
    """The task named in ``task.json`` beside a file written by ``icrm data synth``, if any."""
    info = Path(prompts_source).parent / "task.json"
    try:
        return json.loads(info.read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def true_reward_judge(task: str) -> Callable[[list[Message], str], float]:
    """A judge that knows the answer: ``#good - #bad`` words, or 1/0 correctness for arithmetic and addition."""
    from ..data import CALCULATION_TASKS, TASKS, arithmetic_is_correct, true_reward

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task in CALCULATION_TASKS:
        return lambda prompt, response: float(arithmetic_is_correct(prompt[-1]["content"], response))
    return lambda prompt, response: true_reward(task, response)


def outcome_rates(rewards: list[float], baseline: list[float]) -> dict[str, float]:
    """Win/tie/lose shares of paired rewards (sample j of a prompt vs the baseline's sample j).

    Pairing the j-th samples compares two independent draws per prompt, the
    same as one-sample-per-prompt win rates, with N times the data.
    """
    if len(rewards) != len(baseline) or not rewards:
        raise ValueError("win rates need the same, non-zero number of rewards on both sides")
    n = len(rewards)
    wins = sum(a > b for a, b in zip(rewards, baseline))
    ties = sum(a == b for a, b in zip(rewards, baseline))
    return {"win_rate": wins / n, "tie_rate": ties / n, "lose_rate": (n - wins - ties) / n}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def compare_policies(
    policies: list[str],
    prompts_source: str,
    judge: str,
    config: SamplingConfig,
    *,
    task: str | None = None,
    output: str | Path | None = None,
    batch_size: int = 16,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict:
    """``icrm compare-policies``: sample from each policy and judge every response.

    The judge is a reward model directory, or ``true-reward`` for prompts of
    an embedded synthetic task (``--task``, or found from ``task.json`` next
    to the prompts file) -- the way to see whether DPO on a reward model's
    pairs improved what the data rewards, not only what the reward model
    likes. Every policy gets the same prompts and seed. Empty responses are
    kept and judged (saying nothing is the policy's answer). Reports, per
    policy, mean/std reward, mean length in words, and win/tie/lose rates vs
    the first policy. An existing ``output`` is replaced only with ``overwrite``.
    """
    if output is not None:
        check_output(output, None, overwrite)
    if not policies:
        raise UserError("--policies needs at least one policy directory")
    config.validate()
    prompts = load_prompts(prompts_source)
    judge_fn = None
    if judge == TRUE_REWARD:
        task = task or synthetic_task_of(prompts_source)
        if task is None:
            raise UserError(
                "--judge true-reward needs --task, or prompts from `icrm data synth` (with task.json beside them)"
            )
        judge_fn = true_reward_judge(task)
    else:
        from ..modeling import model_kind

        if not Path(judge).exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", judge):
            raise UserError(f"--judge {judge!r}: no such reward model directory (or use --judge {TRUE_REWARD})")
        model_kind(judge)  # a directory that is not a model fails before any sampling

    sampled = [generate_samples(p, prompts, config, trust_remote_code, allow_pickle) for p in policies]
    flat_prompts = [p.messages for p in prompts for _ in range(config.n)]
    if judge_fn is None:
        from ..evaluation import load_reward_model, score_responses

        rm = load_reward_model(judge, trust_remote_code, allow_pickle)
        rewards = [score_responses(rm, flat_prompts, _flatten(s), batch_size) for s in sampled]
    else:
        rewards = [[judge_fn(p, r) for p, r in zip(flat_prompts, _flatten(s))] for s in sampled]

    results = []
    for i, (path, samples, scores) in enumerate(zip(policies, sampled, rewards)):
        mean, std = _mean_std(scores)
        words = [len(text.split()) for text in _flatten(samples)]
        entry = {
            "policy": path,
            "mean_reward": mean,
            "std_reward": std,
            "mean_words": sum(words) / len(words),
            "samples": len(scores),
            "truncated": samples.truncated,
            "is_baseline": i == 0,  # win/tie/lose are against it, so its own read 0/1/0
            **outcome_rates(scores, rewards[0]),
        }
        results.append(entry)
    report = {
        "judge": judge,
        "task": task,
        "prompts": len(prompts),
        "samples_per_prompt": config.n,
        "baseline": policies[0],
        "sampling": asdict(config),
        "policies": results,
    }
    if output is not None:
        write_json(output, report)
    return report


def _flatten(samples: Samples) -> list[str]:
    return [text for texts in samples.texts for text in texts]
