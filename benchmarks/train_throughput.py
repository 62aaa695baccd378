#!/usr/bin/env python
"""Training throughput of icrm vs TRL's RewardTrainer (icrm issues 7 and 16).

A benchmark, not a test. In one invocation, with one process setting (threads,
device), every configuration trains the same model config for the same number
of optimizer steps on the same rows, with the same batch size, max length and
learning-rate schedule:

  trl         trl.RewardTrainer (its default collator/padding) on a
              LlamaForSequenceClassification loaded from the same saved model
  bt          icrm.training.core.train_reward_model, ICRMConfig(method="bt"), padded batches
  icrm-nosft  same, method="icrm-nosft" (λ=0.1: BT + consistency regularizer),
              generator = a saved causal LM, probabilities already cached
  icrm        same, method="icrm" (λ=0.1 and the α=1 SFT term), cache warm
  *-packed    the same three with padding_free=True: the same batches, each run
              as one packed sequence (icrm.modeling.packing)
  bt-packed-bf16  bt-packed with bf16=True (bf16 autocast; on a CPU, worth it where
              it has bf16 matmuls, e.g. avx512_bf16 or AMX)
  trl-bf16    trl with bf16=True (TRL's own default), the like-for-like baseline of bt-packed-bf16
  bt-grouped  bt with length-grouped batches (TrainingOptions.trainer_kwargs(group_by_length=True));
              different batches from the rest
  genpass     the one-time generator pass: icrm.modeling.generator.cached_generation_weights
              on the whole training set with an empty cache dir (then once more,
              warm, to show what a cache hit costs)
  scoring     the post-training reward statistics' work on hh: every training
              response scored by the bt model, three ways (see `scoring_pass`)

Cases: ``hh`` = Anthropic HH harmless-base test pairs (real, variable length)
keeping the rows whose chosen and rejected both fit in --max-length (TRL drops
longer rows, icrm would truncate them: pre-filtering gives both the same rows),
and ``synthetic`` = pairs whose sequences are all exactly --max-length tokens
(no padding at all).

Every (case, trainer) run is a fresh subprocess, so peak memory does not mix.
Runs are interleaved (each repeat visits every configuration, in a rotated
order) and repeated; the report gives medians.

What is timed: ``Trainer.train()`` from the ``on_train_begin`` callback (after
the dataloader, optimizer and scheduler are built) to ``on_train_end`` -- data
loading + collation, forward, loss, backward, optimizer step and the
trainers' own per-step metrics (logged every 10 steps), in wall time and in the
process's CPU time (``time.process_time``, all threads). On a shared machine
the CPU time is the steadier measure: a run waiting for a core is not charged
for it; the report gives ratios of both. Not timed: model
construction/loading, tokenizer training, dataset tokenization, the generator
cache lookup, and icrm's post-training work (saving the checkpoint; its
reward-statistics pass is skipped here to save wall time).
Peak memory: CPU -- the process's peak RSS (Linux VmHWM, reset through
/proc/self/clear_refs at ``on_train_begin`` and read at ``on_train_end``), plus
the whole-process ``resource.getrusage(...).ru_maxrss``; GPU --
``torch.cuda.max_memory_allocated`` over the same window.

    python -m benchmarks.train_throughput                       # CPU, preset small
    python -m benchmarks.train_throughput --device cuda --preset large --steps 50
    python -m benchmarks.train_throughput --model-dir DIR --cases hh   # a real architecture and tokenizer (DIR: a causal-LM folder or smollm2-135m)
    python -m benchmarks.train_throughput --cases hh --profile bt   # torch.profiler table of one train()
    python -m benchmarks.train_throughput --summarize benchmarks/results/throughput-cpu-small.json
    python -m benchmarks.train_throughput --whole-process --preset tiny --repeats 3   # `icrm train` vs a TRL script, wall time

``--whole-process`` times whole processes instead (interpreter start to exit:
imports, data loading, tokenization, one epoch, icrm's reward statistics and
saving) on the hh rows: a TRL RewardTrainer script and ``icrm train`` padded,
length-grouped and packed; its table goes into its own generated section.

Results: benchmarks/results/throughput-<device>-<preset>.json and the generated
section of benchmarks/THROUGHPUT.md (text outside the markers is kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from icrm.outputs import write_json, write_jsonl

from .harness import HERE, HH_DATA, RESULTS, machine, write_text

SELF = [sys.executable, "-m", "benchmarks.train_throughput"]  # run from the repository root (cwd=HERE.parent)
METHODS = ("trl", "bt", "icrm-nosft", "icrm", "trl-bf16")  # these all see identical batches
# the same batches again, packed (a pair's prompt runs once); -rows: rows end to end, each with its own prompt
PACKED = ("bt-packed", "bt-packed-rows", "icrm-nosft-packed", "icrm-packed", "bt-packed-bf16")  # -bf16: bf16 autocast
GROUPED = ("bt-grouped",)  # icrm's length-grouped batch order: other batches than TRL's
WHOLE_PROCESS = ("trl", "bt", "bt-grouped", "bt-packed", "icrm-packed")
# icrm.modeling.PRESETS has tiny/small; "large" is for a later GPU run (bf16).
LARGE_PRESET = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8, "num_attention_heads": 16, "vocab_size": 8192}
BEGIN, END = "<!-- BEGIN generated by benchmarks/train_throughput.py -->", "<!-- END generated -->"
BEGIN_WHOLE = "<!-- BEGIN whole-process, generated by benchmarks/train_throughput.py --whole-process -->"
END_WHOLE = "<!-- END whole-process -->"


# ----------------------------------------------------------------- preparation


def prepare(args, workdir: Path) -> dict:
    """Tokenizer, initial model, generator and the two data files (untimed, once)."""
    from icrm import modeling
    from icrm.data import example_texts, load_examples, read_rows, tokenize_examples

    modeling.PRESETS.setdefault("large", LARGE_PRESET)  # only this process builds models by preset name
    loaded = load_examples(args.hh_data)
    model_dir = modeling.resolve_model(args.model_dir) if args.model_dir else None  # a folder, GGUF file or icrm name
    if model_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    else:
        tokenizer = modeling.train_tokenizer(example_texts(loaded.examples), modeling.PRESETS[args.preset]["vocab_size"])
    for name, seed in (("model", 0), ("generator", 1)):  # the RM's initial backbone; a frozen generator
        lm = model_of(model_dir, seed) if model_dir else modeling.build_causal_lm(args.preset, tokenizer, seed)
        lm.save_pretrained(workdir / name)
        tokenizer.save_pretrained(workdir / name)

    # hh: the raw rows whose chosen and rejected both fit in max_length
    items, kept, _ = tokenize_examples(loaded.examples, tokenizer, args.max_length, truncation="drop")
    if args.hh_pairs:  # the first N that fit: one epoch is then the timed run (a real model's generator pass is slow)
        items, kept = items[: args.hh_pairs], kept[: args.hh_pairs]
    raw = read_rows(args.hh_data)
    write_jsonl(workdir / "hh.jsonl", [raw[i].data for i in kept])
    rows = [loaded.examples[i] for i in kept]
    check_same_tokens(tokenizer, rows[:200])

    # synthetic: every sequence exactly max_length tokens, built from one-token words
    words = single_token_words(tokenizer)
    rng = random.Random(0)
    n_response = args.max_length // 2
    from icrm.data import PairExample, encode

    template = encode(tokenizer, [{"role": "user", "content": " " + words[0]}], " " + words[0]).length - 2
    n_prompt = args.max_length - n_response - template  # the chat template's own tokens around the two texts

    def text(n: int) -> str:
        return "".join(" " + rng.choice(words) for _ in range(n))

    synthetic = [
        {"prompt": [{"role": "user", "content": text(n_prompt)}], "chosen": text(n_response), "rejected": text(n_response)}
        for _ in range(args.synthetic_pairs)
    ]
    lengths = {encode(tokenizer, r["prompt"], r[k]).length for r in synthetic for k in ("chosen", "rejected")}
    assert lengths == {args.max_length}, f"synthetic sequences are not all {args.max_length} tokens: {sorted(lengths)[:5]}"
    write_jsonl(workdir / "synthetic.jsonl", synthetic)
    check_same_tokens(tokenizer, [PairExample(r["prompt"], r["chosen"], r["rejected"]) for r in synthetic[:20]])

    pair_lengths = [[s.length for s in it] for it in items]
    return {
        "flops_per_token": model_flops_per_token(workdir / "model"),
        "hh_rows_total": len(loaded.examples),
        "hh_rows_kept": len(rows),
        "synthetic_rows": len(synthetic),
        "vocab": len(tokenizer),
        "hh_epoch": {sampler: epoch_tokens(pair_lengths, args.batch_size, sampler) for sampler in ("random", "grouped")},
    }


def model_of(model_dir: str, seed: int):
    """The causal LM of ``model_dir``: its weights, or (a folder with only ``config.json``) a seeded random init.

    Speed and memory do not depend on the weights' values, so a model's architecture and tokenizer are enough
    for a speed benchmark where its weights cannot be had (a machine without the file).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if any(Path(model_dir).glob("*.safetensors")):
        return AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))


def model_flops_per_token(model_dir: Path) -> int:
    """Training FLOPs per token of the backbone's matrix multiplications: 6 × the non-embedding weight matrices.

    The usual estimate (forward 2, backward 4 per weight): attention's own
    ``T²`` products, norms, the value head and the SFT term's LM head are left
    out, so the achieved FLOP/s it gives is a slight underestimate.
    """
    from safetensors import safe_open

    total = 0
    for file in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                if len(shape) == 2 and "embed" not in name and "lm_head" not in name:
                    total += shape[0] * shape[1]
    return 6 * total


def gemm_peak(threads: int, n: int = 2048, repeats: int = 8) -> dict:
    """The CPU's (or GPU's) float32 matrix-multiply rate on large square matrices: the roofline for dense layers."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return {"gemm_gflops": 2 * n**3 / statistics.median(times) / 1e9, "gemm_n": n, "threads": threads}


def response_marker(tokenizer) -> list[int]:
    """The token ids the chat template puts before an assistant's response (its generation prompt)."""
    turn = [{"role": "user", "content": "hi"}]
    with_prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=True, return_dict=True)
    without = tokenizer.apply_chat_template(turn, tokenize=True, return_dict=True)
    marker = list(with_prompt["input_ids"])[len(without["input_ids"]):]
    assert marker, "the chat template adds no generation prompt"
    return marker


def epoch_tokens(pair_lengths: list[list[int]], batch_size: int, sampler: str, seeds: int = 5) -> dict:
    """Real and padded tokens of one epoch of batches, each padded to its longest sequence.

    ``random`` is the Trainer's default RandomSampler order, ``grouped`` is
    transformers' LengthGroupedSampler order; averaged over a few seeds. The
    timed runs see only their first --steps batches; for the grouped sampler
    those come from the longest part of a mega-batch, so an epoch is the fair
    unit of comparison.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    padded = 0
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(seed)
        if sampler == "grouped":
            order = get_length_grouped_indices([max(p) for p in pair_lengths], batch_size, generator=generator)
        else:
            order = torch.randperm(len(pair_lengths), generator=generator).tolist()
        for lo in range(0, len(order), batch_size):
            batch = [pair_lengths[i] for i in order[lo : lo + batch_size]]
            padded += 2 * len(batch) * max(max(p) for p in batch)
    real = sum(sum(p) for p in pair_lengths)
    return {"pairs": len(pair_lengths), "real_tokens": real, "padded_tokens": padded / seeds, "padding_fraction": 1 - real * seeds / padded}


def single_token_words(tokenizer) -> list[str]:
    """Vocabulary words that tokenize, with a leading space, to exactly one token."""
    words = []
    for token in tokenizer.get_vocab():
        if re.fullmatch(r"Ġ[a-z]{3,}", token):
            word = token[1:]
            if len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1:
                words.append(word)
    return sorted(words)


def check_same_tokens(tokenizer, examples) -> None:
    """TRL's conversational tokenization must give icrm's token ids (same text, same tokens)."""
    from icrm.data import encode

    for ex in examples:
        for response in (ex.chosen, ex.rejected):
            trl_ids = tokenizer.apply_chat_template(
                ex.prompt + [{"role": "assistant", "content": response}], tokenize=True, return_dict=True
            )["input_ids"]
            assert list(trl_ids) == encode(tokenizer, ex.prompt, response).input_ids, "TRL and icrm tokenize differently"


# ------------------------------------------------------------ measuring a run


def make_meter(device: str, marker: list[int], profile: bool = False):
    """A TrainerCallback that times train(), and collator/forward wrappers that count."""
    import torch
    from transformers import TrainerCallback

    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Meter(TrainerCallback):
        def __init__(self):
            self.batches: list[dict] = []
            self.step_ends: list[float] = []
            self.forward_seconds = 0.0
            self.collate_seconds = 0.0
            self.result: dict = {}
            self.profiler = None
            if profile:
                from torch.profiler import ProfilerActivity
                from torch.profiler import profile as torch_profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                self.profiler = torch_profile(activities=activities)

        def attach(self, trainer) -> None:
            trainer.add_callback(self)
            trainer.data_collator = CountingCollator(trainer.data_collator, self)
            model = trainer.model
            model.register_forward_pre_hook(self._forward_begin)
            model.register_forward_hook(self._forward_end)

        def _forward_begin(self, module, inputs):
            if module.training:
                sync()
                self._t_forward = time.perf_counter()

        def _forward_end(self, module, inputs, output):
            if module.training:
                sync()
                self.forward_seconds += time.perf_counter() - self._t_forward

        def on_train_begin(self, args, state, control, **kwargs):
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            reset_peak_rss()
            self.result["rss_at_train_begin_mb"] = current_rss_mb()
            if self.profiler:
                self.profiler.start()
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            sync()
            self.t1, self.cpu1 = time.perf_counter(), time.process_time()
            if self.profiler:
                self.profiler.stop()
            self.result["peak_rss_train_mb"] = peak_rss_mb()
            if cuda:
                self.result["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20

    class CountingCollator:
        """Wraps the trainer's own collator; counts rows, padded and real tokens."""

        def __init__(self, inner, meter):
            self.inner, self.meter = inner, meter

        def __call__(self, features):
            start = time.perf_counter()
            batch = self.inner(features)
            self.meter.collate_seconds += time.perf_counter() - start
            ids, mask = batch["input_ids"], batch["attention_mask"]
            # the response starts after the chat template's last assistant header (same rule for both trainers)
            k = len(marker)
            found = (ids.unfold(1, k, 1) == torch.tensor(marker)).all(-1)
            start = (torch.arange(found.shape[1]) * found).argmax(-1) + k
            response = (mask.sum(-1) - start).clamp(min=0)
            run = batch["packed"]["input_ids"] if "packed" in batch else ids
            stats = {
                "rows": ids.shape[0],
                "padded_tokens": run.numel(),  # the tokens the forward runs on (no padding when packed)
                "real_tokens": int(mask.sum()),
                "response_tokens": int(response.sum()),
            }
            if "response_mask" in batch:  # icrm's own count must agree
                stats["response_tokens_icrm"] = int(batch["response_mask"].sum())
            self.meter.batches.append(stats)
            return batch

    return Meter()


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return float("nan")


def summarize(meter, spec: dict) -> dict:
    steps = spec["steps"]
    batches = meter.batches[:steps]  # a trainer may collate one batch ahead
    seconds = meter.t1 - meter.t0
    pairs = sum(b["rows"] for b in batches) // 2
    out = {
        "seconds": seconds,
        "steps": len(meter.step_ends),
        "pairs": pairs,
        "pairs_per_s": pairs / seconds,
        # CPU time of the process (all its threads): on a shared machine, waiting for a core does not count
        "cpu_seconds": meter.cpu1 - meter.cpu0,
        "pairs_per_cpu_s": pairs / (meter.cpu1 - meter.cpu0),
        "response_tokens_per_s": sum(b["response_tokens"] for b in batches) / seconds,
        "real_tokens_per_s": sum(b["real_tokens"] for b in batches) / seconds,
        "padding_fraction": 1 - sum(b["real_tokens"] for b in batches) / sum(b["padded_tokens"] for b in batches),
        "step_seconds": [b - a for a, b in zip([meter.t0] + meter.step_ends, meter.step_ends)],
        "forward_seconds": meter.forward_seconds,
        "collate_seconds": meter.collate_seconds,
        "padded_tokens_per_s": sum(b["padded_tokens"] for b in batches) / seconds,
        "batch_real_tokens": [b["real_tokens"] for b in batches],  # identical across trainers = same batches
        "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **meter.result,
    }
    if "response_tokens_icrm" in batches[0]:
        assert all(b["response_tokens"] == b["response_tokens_icrm"] for b in batches), "response token counts disagree"
    return out


# --------------------------------------------------------------- the trainers


def training_arguments(spec: dict, group_by_length: bool = False) -> dict:
    """TrainingArguments fields shared by every trainer: icrm's own defaults, then ours."""
    from icrm.training import TrainingOptions

    common = TrainingOptions(
        max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"], learning_rate=1e-5, seed=0,
        bf16=spec["bf16"], logging_steps=10,
    ).trainer_kwargs(group_by_length)
    common.update(use_cpu=spec["device"] == "cpu", disable_tqdm=True, activation_checkpointing=False)
    return common


def train_trl(spec: dict, meter, workdir: Path) -> dict:
    """TRL's RewardTrainer on the same rows; ``meter=None``: the whole-process run, which also saves the model."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from icrm.data import load_examples

    # the rows as icrm parses them, in TRL's conversational format: same text, same tokens
    rows = load_examples(spec["data"]).examples
    dataset = Dataset.from_list(
        [
            {
                "prompt": ex.prompt,
                "chosen": [{"role": "assistant", "content": ex.chosen}],
                "rejected": [{"role": "assistant", "content": ex.rejected}],
            }
            for ex in rows
        ]
    )
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1)
    # TRL's defaults except where they would make the runs differ: gradient
    # checkpointing (TRL default on, icrm off) and bf16 (set as for icrm).
    args = RewardConfig(output_dir=str(workdir / "trl-out"), max_length=spec["max_length"], **training_arguments(spec))
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(rows), "TRL dropped rows: the data differ"
    if meter is not None:
        meter.attach(trainer)
    trainer.train()
    if meter is None:
        trainer.save_model(str(workdir / "trl-model"))
    return {}


def train_icrm(spec: dict, meter, workdir: Path) -> dict:
    from icrm import training
    from icrm.commands.train import train_reward_model
    from icrm.modeling import ModelSpec
    from icrm.outputs import set_quiet

    set_quiet(True)
    grouped, packed = spec["method"] in GROUPED, spec["method"] in PACKED
    method = spec["method"].removesuffix("-bf16").removesuffix("-grouped").removesuffix("-rows").removesuffix("-packed")
    config = training.ICRMConfig(
        output_dir=str(workdir / "icrm-trainer"),
        method=method,
        generator=spec["generator"],
        cache_dir=spec["cache_dir"],
        max_length=spec["max_length"],
        padding_free=packed,
        **training_arguments(spec, group_by_length=grouped),
    )
    # train_reward_model builds its ICRMTrainer itself; hook the meter in as it is made.
    original_init = training.ICRMTrainer.__init__
    made = {}

    def init_and_attach(self, *a, **k):
        original_init(self, *a, **k)
        if spec["method"].endswith("-rows"):
            self.data_collator.share_prefix = False
        made["share_prefix"] = getattr(self.data_collator, "share_prefix", False)
        meter.attach(self)
        made["padding_free"] = self.reward_model.padding_free

    training.ICRMTrainer.__init__ = init_and_attach
    metrics = train_reward_model(spec["data"], str(workdir / "icrm-out"), config, ModelSpec(spec["model_dir"]))
    assert made["padding_free"] == packed
    return {"generator_cache": metrics["generator_cache"], "train_examples": metrics["train_examples"],
            "train_loss": metrics["train_loss"], **made}


def generator_pass(spec: dict, workdir: Path) -> dict:
    """The one-time generator pass over the whole training set, cold then warm."""
    from icrm.data import load_examples, tokenize_examples
    from icrm.modeling import cached_generation_weights, load_tokenizer, prepare_tokenizer

    tokenizer = load_tokenizer(spec["model_dir"])
    prepare_tokenizer(tokenizer)
    examples = load_examples(spec["data"]).examples
    items, _, _ = tokenize_examples(examples, tokenizer, spec["max_length"])  # as train_reward_model does
    sequences = [seq for pair in items for seq in pair]
    cache = workdir / "empty-cache"
    shutil.rmtree(cache, ignore_errors=True)
    timings = {}
    reset_peak_rss()
    for label, expect_hit in (("cold", False), ("warm", True)):
        start = time.perf_counter()
        _, hit = cached_generation_weights(spec["generator"], tokenizer, sequences, cache_dir=cache, device=spec["device"],
                                           group_size=2)  # as the trainer passes pairs
        timings[f"{label}_seconds"] = time.perf_counter() - start
        assert hit == expect_hit
    return {
        **timings,
        "sequences": len(sequences),
        "pairs": len(items),
        "tokens": sum(s.length for s in sequences),
        "peak_rss_mb": peak_rss_mb(),
    }


def scoring_pass(spec: dict) -> dict:
    """What the reward statistics after training cost: every training response scored, three ways.

    ``rescore``: ``rm.score`` on the texts, as ``_reward_stats`` did (chat
    template + tokenization again, length-sorted padded batches of 16);
    ``padded``: ``rm.sequence_rewards`` on the rows as tokenized for training
    (what it does now with padding_free off); ``packed``: the same, packed.
    One batch first warms the kernels up, and each repeat starts with another
    of the three (the first pass would otherwise pay for the warm-up).
    """
    import torch

    from icrm.data import flatten_responses, load_examples, tokenize_examples
    from icrm.modeling import RewardModel

    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(spec["model_dir"]).eval()
    examples = load_examples(spec["data"]).examples[: spec["scoring_pairs"]]
    start = time.perf_counter()
    items, _, _ = tokenize_examples(examples, rm.tokenizer, spec["max_length"])
    tokenize_seconds = time.perf_counter() - start
    sequences = [seq for pair in items for seq in pair]
    rm.sequence_rewards(sequences[:16])
    out, rewards = {"tokenize_seconds": tokenize_seconds}, {}
    labels = ["rescore", "padded", "packed"]
    shift = spec.get("repeat", 0) % len(labels)
    for label in labels[shift:] + labels[:shift]:
        rm.use_padding_free(label == "packed")
        start, cpu = time.perf_counter(), time.process_time()
        if label == "rescore":
            rewards[label] = rm.score(*flatten_responses(examples))
        else:
            rewards[label] = [float(r[-1]) for r in rm.sequence_rewards(sequences)]
        out[f"{label}_seconds"] = time.perf_counter() - start
        out[f"{label}_cpu_seconds"] = time.process_time() - cpu
    order = sorted(s.length for s in sequences)
    run_tokens = sum(len(chunk) * max(chunk) for chunk in (order[i : i + 16] for i in range(0, len(order), 16)))
    out.update(
        sequences=len(sequences),
        tokens=sum(order),
        sorted_batch_padding_fraction=1 - sum(order) / run_tokens,
        max_difference_packed=max(abs(a - b) for a, b in zip(rewards["packed"], rewards["padded"])),
        max_difference_rescore=max(abs(a - b) for a, b in zip(rewards["rescore"], rewards["padded"])),
    )
    return out


def run_worker(spec: dict) -> dict:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=spec["workdir"]))
    loadavg = os.getloadavg()[0]
    try:
        if spec["method"] == "genpass":
            result = generator_pass(spec, workdir)
        elif spec["method"] == "gemm":
            result = gemm_peak(spec["threads"])
        elif spec["method"] == "scoring":
            result = scoring_pass(spec)
        else:
            marker = response_marker(AutoTokenizer.from_pretrained(spec["model_dir"]))
            meter = make_meter(spec["device"], marker, profile=spec.get("profile", False))
            train = train_trl if spec["method"].startswith("trl") else train_icrm
            extra = train(spec, meter, workdir)
            result = {**summarize(meter, spec), **extra}
            if meter.profiler:
                table = meter.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
                print(table, file=sys.stderr)  # stdout carries the JSON result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"case": spec["case"], "method": spec["method"], "loadavg_1m_before": loadavg, **result}


# ----------------------------------------------------------------- the driver


def worker_env(spec: dict) -> dict[str, str]:
    """A measured process's environment: ``spec``'s threads and device, no progress output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           "TOKENIZERS_PARALLELISM": "false", "ICRM_QUIET": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def spawn(spec: dict) -> dict:
    proc = subprocess.run(
        [*SELF, "--worker", json.dumps(spec)], env=worker_env(spec), cwd=HERE.parent, capture_output=True, text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {spec['case']}/{spec['method']} failed (exit {proc.returncode})")
    if spec.get("profile"):
        print(proc.stderr[proc.stderr.index("----"):] if "----" in proc.stderr else proc.stderr[-8000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def base_spec(args, workdir: Path) -> dict:
    return {
        "workdir": str(workdir),
        "model_dir": str(workdir / "model"),
        "generator": str(workdir / "generator"),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "threads": args.threads,
        "device": args.device,
        "bf16": args.device == "cuda" and (args.preset == "large" or bool(args.model_dir)),
        "scoring_pairs": args.scoring_pairs,
    }


def run_spec(base: dict, workdir: Path, case: str, method: str, **extra) -> dict:
    return {
        **base,
        "case": case,
        "method": method,
        "data": str(workdir / f"{case}.jsonl"),
        "cache_dir": str(workdir / f"cache-{case}"),
        # bt and trl ignore the generator; icrm methods read it from the warm cache
        "generator": base["generator"] if method.startswith("icrm") or method == "genpass" else "self",
        "bf16": base["bf16"] or method.endswith("-bf16"),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "large"])
    parser.add_argument("--model-dir", default=None,
                        help="a causal LM folder (config.json and tokenizer; weights optional), a GGUF file or "
                        "an offline model name (smollm2-135m) instead of --preset")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run (1 is the most stable on a shared machine)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="hh,synthetic")
    parser.add_argument("--methods", default=",".join(m for m in METHODS + PACKED + GROUPED if not m.endswith("-bf16")),
                        help="comma-separated trainers [default: all but the -bf16 ones, which need bf16 matmuls]")
    parser.add_argument("--no-genpass", action="store_true", help="skip the one-time generator pass measurement")
    parser.add_argument("--no-scoring", action="store_true", help="skip the reward-statistics scoring measurement")
    parser.add_argument("--scoring-pairs", type=int, default=800, help="hh pairs the scoring measurement scores")
    parser.add_argument("--whole-process", action="store_true",
                        help=f"time whole `icrm train` processes vs a TRL script instead ({', '.join(WHOLE_PROCESS)})")
    parser.add_argument("--synthetic-pairs", type=int, default=None, help="default: steps × batch size")
    parser.add_argument("--hh-data", default=str(HH_DATA))
    parser.add_argument("--hh-pairs", type=int, default=None, help="keep only the first N hh pairs that fit (default: all)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--results", default=None, help="JSON output (default benchmarks/results/throughput-<device>-<preset>.json)")
    parser.add_argument("--markdown", default=str(HERE / "THROUGHPUT.md"))
    parser.add_argument("--profile", choices=METHODS + PACKED + GROUPED, help="profile one run of this trainer on the first case and exit")
    parser.add_argument("--summarize", metavar="RESULTS_JSON", help="only rebuild the summary and markdown from saved runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--trl-process", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.trl_process:
        spec = json.loads(args.trl_process)
        train_trl(spec, None, Path(spec["workdir"]))
        return
    if args.summarize:
        resummarize(Path(args.summarize), Path(args.markdown))
        return

    args.synthetic_pairs = args.synthetic_pairs or args.steps * args.batch_size
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="icrm-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        (run_whole_process if args.whole_process else run_benchmark)(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run_benchmark(args, workdir: Path) -> None:
    cases, methods = args.cases.split(","), args.methods.split(",")
    print(f"preparing data and models in {workdir}", flush=True)
    data_info = prepare(args, workdir)
    base = base_spec(args, workdir)

    if args.profile:  # one run of one trainer, its train() under torch.profiler
        if args.profile.startswith("icrm"):
            spawn(run_spec(base, workdir, cases[0], args.profile, steps=1))  # fill the generator cache
        result = spawn(run_spec(base, workdir, cases[0], args.profile, profile=True))
        print({k: v for k, v in result.items() if not isinstance(v, list)})
        return

    # fill the generator cache once per case (an untimed 1-step ICRM run)
    if any(m.startswith("icrm") for m in methods):
        for case in cases:
            spawn(run_spec(base, workdir, case, "icrm-nosft", steps=1))

    configs = [(case, method) for case in cases for method in methods]
    if not args.no_genpass:
        configs.append(("hh", "genpass"))
    if args.device == "cpu":
        configs.append(("hh", "gemm"))
    if not args.no_scoring:
        configs.append(("hh", "scoring"))
    runs = []
    for repeat in range(args.repeats):
        shift = repeat % len(configs)
        for case, method in configs[shift:] + configs[:shift]:  # rotate the order each repeat
            result = spawn(run_spec(base, workdir, case, method, repeat=repeat))
            result["repeat"] = repeat
            runs.append(result)
            if "pairs_per_s" in result:
                rate = f"{result['pairs_per_s']:.2f} pairs/s"
            elif method == "genpass":
                rate = f"{result['cold_seconds']:.1f} s cold, {result['warm_seconds']:.3f} s warm"
            elif method == "gemm":
                rate = f"{result['gemm_gflops']:.1f} GFLOP/s"
            else:
                rate = f"{result['padded_seconds']:.1f} s padded, {result['packed_seconds']:.1f} s packed"
            print(f"repeat {repeat} {case:9s} {method:17s} {rate}  (load {result['loadavg_1m_before']:.2f})", flush=True)

    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "profile", "summarize")},
        "command": " ".join(["python -m benchmarks.train_throughput", *sys.argv[1:]]),
        "data": data_info,
        "runs": runs,
    }
    report["summary"] = summarize_runs(runs, data_info, real=bool(args.model_dir))
    model = Path(args.model_dir).name if args.model_dir else args.preset
    results = Path(args.results or RESULTS / f"throughput-{args.device}-{model}.json")
    write_json(results, report)
    write_markdown(Path(args.markdown), report)
    print(f"wrote {results} and {args.markdown}")


def run_whole_process(args, workdir: Path) -> None:
    """Wall time of whole processes on the hh rows, one epoch each: a TRL script and `icrm train` runs."""
    print(f"preparing data and models in {workdir}", flush=True)
    data_info = prepare(args, workdir)
    spec = {**base_spec(args, workdir), "steps": -1, "data": str(workdir / "hh.jsonl")}
    runs = []
    for repeat in range(args.repeats):
        shift = repeat % len(WHOLE_PROCESS)
        for method in WHOLE_PROCESS[shift:] + WHOLE_PROCESS[:shift]:
            out = workdir / f"out-{method}-{repeat}"
            out.mkdir()
            loadavg = os.getloadavg()[0]
            seconds, cpu_seconds, peak_mb = timed_process(whole_process_command(method, {**spec, "workdir": str(out)}, out),
                                                          spec)
            shutil.rmtree(out, ignore_errors=True)
            runs.append({"method": method, "repeat": repeat, "seconds": seconds, "cpu_seconds": cpu_seconds,
                         "peak_rss_mb": peak_mb, "loadavg_1m_before": loadavg})
            print(f"repeat {repeat} {method:12s} {seconds:6.1f} s, {cpu_seconds:6.1f} CPU-s, peak RSS {peak_mb:.0f} MB "
                  f"(load {loadavg:.2f})", flush=True)
    med = statistics.median
    summary = {}
    for method in WHOLE_PROCESS:
        mine = {r["repeat"]: r for r in runs if r["method"] == method}
        trl = {r["repeat"]: r for r in runs if r["method"] == "trl"}
        summary[method] = {
            "seconds": med(r["seconds"] for r in mine.values()),
            "seconds_all": [round(r["seconds"], 1) for r in mine.values()],
            "cpu_seconds": med(r["cpu_seconds"] for r in mine.values()),
            "peak_rss_mb": med(r["peak_rss_mb"] for r in mine.values()),
            "speedup_vs_trl": med(trl[k]["seconds"] / mine[k]["seconds"] for k in mine),
            "cpu_speedup_vs_trl": med(trl[k]["cpu_seconds"] / mine[k]["cpu_seconds"] for k in mine),
        }
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "profile", "summarize", "trl_process")},
        "command": " ".join(["python -m benchmarks.train_throughput", *sys.argv[1:]]),
        "data": data_info,
        "runs": runs,
        "summary": summary,
    }
    results = Path(args.results or RESULTS / f"throughput-whole-process-{args.device}-{args.preset}.json")
    write_json(results, report)
    write_whole_process_markdown(Path(args.markdown), report)
    print(f"wrote {results} and {args.markdown}")


def whole_process_command(method: str, spec: dict, out: Path) -> list[str]:
    """The command line of one whole-process run: this script's TRL worker, or `icrm train`."""
    if method == "trl":
        return [*SELF, "--trl-process", json.dumps(spec)]
    icrm = shutil.which("icrm") or str(Path(sys.executable).with_name("icrm"))
    options = {"bt": ["--no-packing", "--no-group-by-length"], "bt-grouped": ["--no-packing", "--group-by-length"],
               "bt-packed": ["--packing", "--no-group-by-length"], "icrm-packed": ["--packing", "--no-group-by-length"]}
    return [icrm, "--quiet", "train", "--data", spec["data"], "--model", spec["model_dir"], "--output", str(out / "rm"),
            "--method", method.split("-")[0], "--epochs", "1", "--batch-size", str(spec["batch_size"]),
            "--max-length", str(spec["max_length"]), "--lr", "1e-5", "--seed", "0", *options[method]]


def timed_process(command: list[str], spec: dict) -> tuple[float, float, float]:
    """Wall seconds from launch to exit, and the process's own CPU seconds and peak RSS in MB (``os.wait4``'s rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=worker_env(spec), cwd=HERE.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(stderr.decode()[-4000:])
        raise SystemExit(f"{' '.join(command[:4])} failed (exit {proc.returncode})")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def write_whole_process_markdown(path: Path, report: dict) -> None:
    s, m, st = report["summary"], report["machine"], report["settings"]
    what = {"trl": "TRL RewardTrainer script (random order)", "bt": "`icrm train --method bt --no-packing --no-group-by-length`",
            "bt-grouped": "`icrm train --method bt --no-packing --group-by-length`",
            "bt-packed": "`icrm train --method bt --packing`", "icrm-packed": "`icrm train --method icrm --packing`"}
    lines = [
        BEGIN_WHOLE,
        (f"Run {report['date']} on {m['cpu']} ({cores(m)} CPUs); torch {m['torch']}, transformers "
         f"{m['transformers']}, trl {m['trl']}, icrm at {m.get('commit', '?')}. Preset `{st['preset']}`, "
         f"{st['threads']} thread, one epoch of {report['data']['hh_rows_kept']} hh pairs, batch {st['batch_size']}, "
         f"max length {st['max_length']}, {st['repeats']} interleaved repeats (median; 1-minute load average before each "
         f"run: {_range([r['loadavg_1m_before'] for r in report['runs']])})."),
        "",
        "Reproduce: `" + reproduce(report["command"]) + "`",
        "",
        "| process | wall s (median) | each repeat | TRL / this, wall | CPU s (median) | TRL / this, CPU time | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, c in s.items():
        lines.append(f"| {what[method]} | {c['seconds']:.1f} | {', '.join(f'{v:.1f}' for v in c['seconds_all'])} | "
                     f"{c['speedup_vs_trl']:.2f} | {c['cpu_seconds']:.1f} | {c['cpu_speedup_vs_trl']:.2f} | "
                     f"{c['peak_rss_mb']:.0f} |")
    lines.append(END_WHOLE)
    replace_generated(path, lines, lambda old, new: f"{old.rstrip()}\n\n### Whole process: `icrm train` vs a TRL script\n\n{new}\n")


def resummarize(results: Path, markdown: Path) -> None:
    report = json.loads(results.read_text())
    if report["settings"].get("whole_process"):
        write_whole_process_markdown(markdown, report)
        print(f"rewrote {markdown}")
        return
    if "hh_epoch" not in report["data"]:  # results from before the epoch projection existed
        settings = argparse.Namespace(**report["settings"])
        with tempfile.TemporaryDirectory() as scratch:
            report["data"] = prepare(settings, Path(scratch))
    report["summary"] = summarize_runs(report["runs"], report["data"], real=bool(report["settings"].get("model_dir")))
    write_json(results, report)
    write_markdown(markdown, report)
    print(f"rewrote {results} and {markdown}")


def machine_info(device: str) -> dict:
    """:func:`harness.machine`, and what a throughput figure also depends on: trl, the GPU, icrm's commit."""
    import torch
    import trl

    info = {**machine(), "trl": trl.__version__}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    git = ["git", "-C", str(HERE.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True, check=False).stdout.strip()
    info["commit"] = (commit + (" (src modified)" if dirty else "")) or "?"
    from importlib.metadata import PackageNotFoundError, version

    try:
        info["icrm"] = version("icrm")
    except PackageNotFoundError:
        info["icrm"] = "?"
    return info


def summarize_runs(runs: list[dict], data_info: dict, real: bool = False) -> dict:
    """Medians per configuration and median paired (same-repeat) ratios; ``real``: issue 24's targets."""
    med = statistics.median
    by_config: dict = {}
    epoch = data_info.get("hh_epoch")
    for r in runs:
        by_config.setdefault((r["case"], r["method"]), []).append(r)
        if "pairs_per_s" not in r:
            continue
        r.setdefault("padded_tokens_per_s", r["real_tokens_per_s"] / (1 - r["padding_fraction"]))
        if r["case"] == "hh" and epoch:
            # compute is ~proportional to the tokens run (padded, or real when packed): project
            # the measured tokens/s onto a whole epoch of this trainer's sampler
            e = epoch["grouped" if r["method"] in GROUPED else "random"]
            # packed: the real tokens less the shared prefixes, at the rate the timed batches shared them
            run = e["real_tokens"] / (1 - r["padding_fraction"]) if r["method"] in PACKED else e["padded_tokens"]
            r["epoch_pairs_per_s"] = r["padded_tokens_per_s"] * e["pairs"] / run
    summary: dict = {"configs": {}, "ratios": {}}
    for (case, method), rs in by_config.items():
        if method == "gemm":
            summary["gemm_gflops"] = med([r["gemm_gflops"] for r in rs])
            continue
        if method == "genpass":
            summary["genpass"] = {k: med([r[k] for r in rs]) for k in ("cold_seconds", "warm_seconds", "peak_rss_mb")}
            summary["genpass"].update(sequences=rs[0]["sequences"], tokens=rs[0]["tokens"], pairs=rs[0]["pairs"])
            continue
        if method == "scoring":
            keys = ("tokenize_seconds", "rescore_seconds", "padded_seconds", "packed_seconds", "max_difference_packed",
                    "max_difference_rescore")
            summary["scoring"] = {k: med([r[k] for r in rs]) for k in keys}
            summary["scoring"].update({k: rs[0][k] for k in ("sequences", "tokens", "sorted_batch_padding_fraction")})
            for basis in ("seconds", "cpu_seconds"):
                for slower in ("padded", "rescore"):
                    summary["scoring"][f"{slower}_over_packed_{basis}"] = med(
                        [r[f"{slower}_{basis}"] / r[f"packed_{basis}"] for r in rs])
            continue
        keys = ("pairs_per_s", "pairs_per_cpu_s", "epoch_pairs_per_s", "response_tokens_per_s", "real_tokens_per_s", "padded_tokens_per_s",
                "padding_fraction", "seconds", "forward_seconds", "collate_seconds", "peak_rss_train_mb",
                "peak_rss_process_mb", "cuda_peak_allocated_mb")
        entry = {k: med([r[k] for r in rs]) for k in keys if k in rs[0]}
        entry["pairs_per_s_all"] = [round(r["pairs_per_s"], 3) for r in rs]
        entry["forward_seconds_per_pair"] = entry["forward_seconds"] / rs[0]["pairs"]
        entry["same_batches_as_first"] = all(r["batch_real_tokens"] == rs[0]["batch_real_tokens"] for r in rs)
        if method.startswith("icrm"):
            entry["generator_cache_hits"] = all(r["generator_cache"] == "hit" for r in rs)
        summary["configs"][f"{case}/{method}"] = entry

    def paired(case, num, den, key="pairs_per_s"):
        a = {r["repeat"]: r[key] for r in by_config.get((case, num), []) if key in r}
        b = {r["repeat"]: r[key] for r in by_config.get((case, den), []) if key in r}
        values = [a[k] / b[k] for k in a if k in b]
        return med(values) if values else None

    speed_pairs = (("bt", "trl"), ("bt-packed", "trl"), ("bt-packed", "bt"), ("bt-packed-rows", "trl"),
                   ("bt-packed", "bt-packed-rows"), ("icrm-nosft", "bt"), ("icrm", "bt"),
                   ("icrm-nosft-packed", "bt-packed"), ("icrm-packed", "bt-packed"), ("icrm-packed", "icrm"),
                   ("bt-grouped", "trl"), ("bt-grouped", "bt"), ("bt-packed", "bt-grouped"),
                   ("bt-packed-bf16", "trl"), ("bt-packed-bf16", "bt-packed"), ("bt-packed-bf16", "trl-bf16"),
                   ("trl-bf16", "trl"))
    memory_pairs = (("icrm-nosft", "bt"), ("icrm", "bt"), ("icrm-nosft-packed", "bt-packed"), ("icrm-packed", "bt-packed"),
                    ("bt-packed", "bt"), ("bt", "trl"), ("bt-packed-bf16", "bt-packed"),
                    ("bt-packed-bf16", "trl-bf16"))
    for case in dict.fromkeys(c for c, _ in by_config):
        for num, den in speed_pairs:
            for key, unit in (("pairs_per_s", "pairs/s"), ("pairs_per_cpu_s", "pairs/CPU-s")):
                ratio = paired(case, num, den, key)
                if ratio is not None:
                    summary["ratios"][f"{case}: {num}/{den} {unit}"] = ratio
            projected = paired(case, num, den, "epoch_pairs_per_s") if "bt-grouped" in (num, den) else None
            if projected is not None:
                summary["ratios"][f"{case}: {num}/{den} pairs/s, projected over an epoch"] = projected
        for num, den in memory_pairs:
            ratio = paired(case, num, den, "peak_rss_train_mb")
            if ratio is not None:
                summary["ratios"][f"{case}: {num}/{den} peak RSS (train)"] = ratio
        same = [by_config[(case, m)][0]["batch_real_tokens"] for m in METHODS + PACKED if (case, m) in by_config]
        summary[f"{case}_same_batches_all_trainers"] = all(s == same[0] for s in same)

    if "flops_per_token" in data_info:
        for entry in summary["configs"].values():
            entry["gflops"] = data_info["flops_per_token"] * entry["padded_tokens_per_s"] / 1e9  # the tokens run
            if "gemm_gflops" in summary:
                entry["gemm_fraction"] = entry["gflops"] / summary["gemm_gflops"]
    bt = summary["configs"].get("hh/bt-packed") or summary["configs"].get("hh/bt")
    if bt and "genpass" in summary:
        epoch_seconds = summary["genpass"]["pairs"] / bt["pairs_per_s"]
        summary["genpass"]["bt_epoch_seconds"] = epoch_seconds
        summary["genpass"]["cold_over_epoch"] = summary["genpass"]["cold_seconds"] / epoch_seconds
    bt = summary["configs"].get("hh/bt")
    if bt and "genpass" in summary:
        epoch_forward = bt["forward_seconds_per_pair"] * summary["genpass"]["pairs"]
        summary["genpass"]["bt_epoch_forward_seconds"] = epoch_forward
        summary["genpass"]["cold_over_epoch_forward"] = summary["genpass"]["cold_seconds"] / epoch_forward
    summary["targets"] = real_targets(summary) if real else targets(summary)
    return summary


def real_targets(summary: dict) -> list[dict]:
    """Issue 24's goals on a real pretrained model (``--model-dir``), icrm's default (packed) trainers."""
    ratios, configs, out = summary["ratios"], summary["configs"], []

    def goal(name, value, ok, text):
        if value is not None:
            out.append({"target": name, "goal": text, "measured": value, "measured_cpu": None, "met": bool(ok(value)),
                        "met_cpu": None})

    goal("icrm BT (packed) / TRL, pairs/s", ratios.get("hh: bt-packed/trl pairs/s"), lambda v: v >= 2.5, "≥ 2.50")
    goal("icrm BT (packed): achieved share of the GEMM peak", configs.get("hh/bt-packed", {}).get("gemm_fraction"),
         lambda v: v >= 0.6, "≥ 60 %")
    for method, limit in (("icrm-nosft-packed", 1.03), ("icrm-packed", 1.07)):
        speed = ratios.get(f"hh: {method}/bt-packed pairs/s")
        goal(f"{method} time / bt-packed time", None if speed is None else 1 / speed, lambda v, limit=limit: v <= limit,
             f"≤ {limit:.2f}")
    goal("icrm-packed / bt-packed peak RSS", ratios.get("hh: icrm-packed/bt-packed peak RSS (train)"),
         lambda v: v <= 1.1, "≤ 1.10")
    goal("generator pass (cold) / one epoch of BT training", summary.get("genpass", {}).get("cold_over_epoch"),
         lambda v: v <= 0.5, "≤ 0.50")
    return out


def targets(summary: dict) -> list[dict]:
    """Each goal measured on wall-clock and on CPU-time speed ratios."""
    ratios, out = summary["ratios"], []

    def check(name, key, ok, goal, transform=lambda v: v):
        wall, cpu = (ratios.get(f"{key} {unit}") for unit in ("pairs/s", "pairs/CPU-s"))
        if wall is not None:
            wall, cpu = transform(wall), (None if cpu is None else transform(cpu))
            out.append({"target": name, "goal": goal, "measured": wall, "measured_cpu": cpu,
                        "met": bool(ok(wall)), "met_cpu": None if cpu is None else bool(ok(cpu))})

    def check_memory(name, key):
        value = ratios.get(key)
        if value is not None:
            out.append({"target": name, "goal": "≤ 1.10", "measured": value, "measured_cpu": None, "met": value <= 1.1,
                        "met_cpu": None})

    check("hh: icrm BT packed / TRL, identical batches", "hh: bt-packed/trl", lambda v: v >= 1.3, "≥ 1.30")
    check("hh: icrm BT padded / TRL, identical batches", "hh: bt/trl", lambda v: v >= 1.3, "≥ 1.30")
    grouped = ratios.get("hh: bt-grouped/trl pairs/s, projected over an epoch")
    if grouped is not None:
        out.append({"target": "hh: icrm BT length-grouped (other batches) / TRL, projected over an epoch", "goal": "≥ 1.30",
                    "measured": grouped, "measured_cpu": None, "met": grouped >= 1.3, "met_cpu": None})
    for case in ("hh", "synthetic"):
        for m in ("icrm-nosft", "icrm", "icrm-nosft-packed", "icrm-packed"):
            bt = "bt-packed" if m.endswith("-packed") else "bt"
            check(f"{case}: {m} slowdown vs {bt}", f"{case}: {m}/{bt}", lambda v: v <= 0.05, "≤ 5 %", _slowdown)
            check_memory(f"{case}: {m} / {bt} peak RSS", f"{case}: {m}/{bt} peak RSS (train)")
    gp = summary.get("genpass", {})
    if "cold_over_epoch_forward" in gp:
        value = gp["cold_over_epoch_forward"]
        out.append({"target": "hh: generator pass (cold) / one epoch of BT training forwards", "goal": "≤ 1.00",
                    "measured": value, "measured_cpu": None, "met": value <= 1.0, "met_cpu": None})
    return out


def _slowdown(speed_ratio):
    return None if speed_ratio is None else 1 / speed_ratio - 1


def write_markdown(path: Path, report: dict) -> None:
    s, m, st = report["summary"], report["machine"], report["settings"]
    model = f"model `{Path(st['model_dir']).name}`" if st.get("model_dir") else f"preset `{st['preset']}`"
    lines = [
        BEGIN,
        (f"Run {report['date']} on {m['cpu']} ({cores(m)} CPUs){', ' + m['gpu'] if 'gpu' in m else ''}; "
        f"python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}, icrm {m.get('icrm', '?')} "
        f"at {m.get('commit', '?')}."),
        "",
        (f"Settings: {model}, device `{st['device']}`, {st['threads']} threads, {st['steps']} steps × "
        f"{st['batch_size']} pairs, max length {st['max_length']}, {st['repeats']} interleaved repeats (median; "
        f"1-minute load average before each run: {_range([r['loadavg_1m_before'] for r in report['runs']])})."),
        (f"Data: hh = {report['data']['hh_rows_kept']} of {report['data']['hh_rows_total']} HH harmless-base test pairs "
        f"(both sides ≤ {st['max_length']} tokens); synthetic = {report['data']['synthetic_rows']} pairs of exactly "
        f"{st['max_length']} tokens per sequence."),
        "",
        "Reproduce: `" + reproduce(report["command"]) + "`",
        "",
        ("pairs/s = preference pairs (chosen + rejected) per second of train(); pairs/CPU-s = per second of the "
        "process's CPU time over train(); run tok/s = tokens the forward "
        "ran on (padded, or only the real ones when packed, a shared prefix once); real = real tokens / run tokens "
        "(over 100 % where shared prefixes ran once); epoch pairs/s = run "
        "tokens/s projected onto one epoch of that trainer's batch order (hh only; see `epoch_tokens`). Peak RSS: "
        "Linux VmHWM over train() (reset at its start), and the process's `ru_maxrss`."),
        "",
        "| case | trainer | pairs/s | pairs/s, each repeat | pairs/CPU-s | epoch pairs/s | response tok/s | real tok/s | run tok/s "
        "| real | forward s/pair | collate ms/step | peak RSS in train() MB | peak RSS process MB | GFLOP/s | of GEMM peak |"
        + (" GPU peak MB |" if st["device"] == "cuda" else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if st["device"] == "cuda" else ""),
    ]
    for name, c in s["configs"].items():
        case, method = name.split("/")
        epoch = f"{c['epoch_pairs_per_s']:.2f}" if "epoch_pairs_per_s" in c else "–"
        collate = f"{1000 * c['collate_seconds'] / st['steps']:.1f}" if "collate_seconds" in c else "–"
        row = (
            f"| {case} | {method} | {c['pairs_per_s']:.2f} | {', '.join(f'{v:.2f}' for v in c['pairs_per_s_all'])} | "
            f"{c.get('pairs_per_cpu_s', float('nan')):.2f} | {epoch} | {c['response_tokens_per_s']:.0f} | {c['real_tokens_per_s']:.0f} | {c['padded_tokens_per_s']:.0f} | "
            f"{1 - c['padding_fraction']:.0%} | {c['forward_seconds_per_pair']:.3f} | {collate} | "
            f"{c['peak_rss_train_mb']:.0f} | {c['peak_rss_process_mb']:.0f} | {_number(c.get('gflops'), '.1f')} | "
            f"{_number(c.get('gemm_fraction'), '.0%')} |"
        )
        if st["device"] == "cuda":
            row += f" {c.get('cuda_peak_allocated_mb', float('nan')):.0f} |"
        lines.append(row)
    if "gemm_gflops" in s:
        lines += ["", (f"GFLOP/s = {report['data']['flops_per_token'] / 1e6:.0f} MFLOP per token (6 × the "
                       f"backbone's weight matrices; attention's T² products and the LM head left out) × run tok/s "
                       f"(the work the CPU did, padding included); "
                       f"GEMM peak = float32 {2048}² matmul on the same threads, measured in the same run "
                       f"(interleaved): {s['gemm_gflops']:.1f} GFLOP/s.")]
    if "hh_epoch" in report["data"]:
        e = report["data"]["hh_epoch"]
        lines += ["", (f"hh, one epoch of {e['random']['pairs']} pairs in batches of {st['batch_size']}: "
                  f"{e['random']['padding_fraction']:.0%} of the tokens are padding in random order (TRL's and icrm's "
                  f"default), {e['grouped']['padding_fraction']:.0%} with LengthGroupedSampler.")]
    lines += ["", "Ratios (median over repeats of the same-repeat ratio):", ""]
    lines += [f"- {name}: {value:.3f}" for name, value in s["ratios"].items()]
    for case in ("hh", "synthetic"):
        if f"{case}_same_batches_all_trainers" in s:
            lines.append(f"- {case}: trl and every padded and packed icrm trainer saw identical batches: "
                         f"{s[f'{case}_same_batches_all_trainers']}")
    hits = [c["generator_cache_hits"] for c in s["configs"].values() if "generator_cache_hits" in c]
    if hits:
        lines.append(f"- every timed ICRM run read the generator probabilities from the warm cache: {all(hits)}")
    if "genpass" in s:
        g = s["genpass"]
        lines += [
            "",
            (f"One-time generator pass (hh, {g['sequences']} sequences, {g['tokens']} tokens, batch 16): "
            f"cold {g['cold_seconds']:.1f} s (load + fingerprint + forward + write), warm (cache hit) "
            f"{g['warm_seconds']:.3f} s, peak RSS {g['peak_rss_mb']:.0f} MB"
            + (f"; one epoch of BT training forwards ≈ {g['bt_epoch_forward_seconds']:.1f} s (forward s/pair × "
               f"{g['pairs']} pairs)" if "bt_epoch_forward_seconds" in g else "")
            + (f"; one epoch of BT training ≈ {g['bt_epoch_seconds']:.1f} s" if "bt_epoch_seconds" in g else "")
            + "."),
        ]
    if "scoring" in s:
        c = s["scoring"]
        lines += [
            "",
            (f"Reward statistics after training ({c['sequences']} hh training sequences, {c['tokens']} tokens, "
             f"batches of 16 sorted by length, {c['sorted_batch_padding_fraction']:.1%} padding): scoring the texts "
             f"again as before (template + tokenization + padded forward) {c['rescore_seconds']:.1f} s; the rows as "
             f"tokenized for training, padded {c['padded_seconds']:.1f} s, packed {c['packed_seconds']:.1f} s "
             f"(padded/packed {c['padded_over_packed_seconds']:.2f}× in wall time, {c['padded_over_packed_cpu_seconds']:.2f}× "
             f"in CPU time; before/now {c['rescore_over_packed_seconds']:.2f}×, {c['rescore_over_packed_cpu_seconds']:.2f}×); tokenizing "
             f"them takes {c['tokenize_seconds']:.1f} s. Packed and padded rewards differ by at most "
             f"{c['max_difference_packed']:.1e}."),
        ]
    lines += ["", "| target | goal | measured (wall) | measured (CPU time) | met (wall / CPU time) |", "|---|---|---|---|---|"]

    def shown(t, value):
        if value is None:
            return "–"
        return f"{value:+.1%}" if "slowdown" in t["target"] else f"{value:.2f}"

    for t in s["targets"]:
        met = "yes" if t["met"] else "**no**"
        if t["met_cpu"] is not None:
            met += " / " + ("yes" if t["met_cpu"] else "**no**")
        lines.append(f"| {t['target']} | {t['goal']} | {shown(t, t['measured'])} | {shown(t, t['measured_cpu'])} | {met} |")
    lines.append(END)
    replace_generated(path, lines, lambda old, new: f"# Training throughput: icrm vs TRL RewardTrainer\n\n{new}\n{old}")


def cores(m: dict) -> int:
    """The machine's core count (results written before the harness call it ``cpus``)."""
    return m["cores"] if "cores" in m else m["cpus"]


def reproduce(command: str) -> str:
    """The command as a reader would type it: no scratch directory, run as a module (older results ran the file)."""
    command = re.sub(r"^python benchmarks/(\w+)\.py", r"python -m benchmarks.\1", command)
    return re.sub(r" --workdir \S+", "", command)


def replace_generated(path: Path, lines: list[str], place) -> None:
    """Put ``lines`` (from its begin marker to its end marker) in place of the old ones, or ``place`` them."""
    begin, end, generated = lines[0], lines[-1], "\n".join(lines)
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        text = old[: old.index(begin)] + generated + old[old.index(end) + len(end) :]
    else:
        text = place(old, generated)
    write_text(path, text)


def _number(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "n/a"


if __name__ == "__main__":
    main()
