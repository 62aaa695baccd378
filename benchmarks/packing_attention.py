#!/usr/bin/env python
"""How packed batches should attend on CPU: the measurement behind icrm.modeling.packing's design.

A benchmark, not a test. One process, one torch thread; the reward model's
forward and backward (sum of per-token rewards) on the same batches, in four
layouts, interleaved, CPU time (``time.process_time``), medians:

  padded         RewardCollator's [N, L] batch, SDPA with the padding mask
  packed-dense   one [1, T] packed row, transformers' own SDPA path: it detects
                 the packing from position_ids and builds a dense T × T
                 block-diagonal mask, so attention costs T² instead of Σ len²
  packed-rows    the same packed row, icrm's attention (icrm.modeling.packing): SDPA
                 run row by row on the packed queries, keys and values
  packed-bins    rows bin-packed (first fit, longest first) into rows as long
                 as the longest one, transformers' dense block masks (the
                 other way to use transformers' built-in packing support)

on ``hh`` (random batches of 8 HH harmless-base pairs, as training draws them:
about half padding) and ``full`` (16 rows of exactly --max-length tokens: no
padding at all, where packing can only cost).

    python -m benchmarks.packing_attention            # prints a markdown table, writes results/packing_attention.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import time

import torch

from icrm.outputs import write_json

from .harness import HH_DATA, RESULTS, machine

LAYOUTS = ("padded", "packed-dense", "packed-rows", "packed-bins")


def batches(args, tokenizer) -> dict[str, list[list]]:
    from icrm.data import Sequence, load_examples, tokenize_examples

    items, _, _ = tokenize_examples(load_examples(args.hh_data).examples, tokenizer, args.max_length, "drop")
    rng = random.Random(0)
    hh = [[s for i in rng.sample(range(len(items)), args.pairs) for s in items[i]] for _ in range(args.batches)]
    ids = torch.randint(10, len(tokenizer), (args.batches, 2 * args.pairs, args.max_length), generator=torch.Generator().manual_seed(0))
    full = [[Sequence(row.tolist(), args.max_length // 2) for row in batch] for batch in ids]
    return {"hh": hh, "full": full}


def bins(seqs, pad_id: int) -> dict:
    """Rows first-fit into bins as long as the longest row; the tail of a bin is its own dummy sequence."""
    width = max(s.length for s in seqs)
    rows: list[list] = []
    for seq in sorted(seqs, key=lambda s: -s.length):
        home = next((r for r in rows if sum(s.length for s in r) + seq.length <= width), None)
        if home is None:
            rows.append([seq])
        else:
            home.append(seq)
    input_ids = torch.full((len(rows), width), pad_id)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        flat = [t for s in row for t in s.input_ids]
        positions = [p for s in row for p in range(s.length)]
        input_ids[b, : len(flat)] = torch.tensor(flat)
        position_ids[b] = torch.tensor(positions + list(range(width - len(flat))))
    return {"input_ids": input_ids, "position_ids": position_ids}


def step(rm, seqs, layout: str) -> float:
    from icrm.data import RewardCollator
    from icrm.modeling import PACKED_ATTENTION, pack

    config = rm.decoder.config
    batch = RewardCollator(rm.tokenizer.pad_token_id)([{"sequences": [s]} for s in seqs])
    config._attn_implementation = PACKED_ATTENTION if layout == "packed-rows" else "sdpa"
    start = time.process_time()
    if layout == "padded":
        rewards = rm(batch["input_ids"], batch["attention_mask"]).rewards
    elif layout == "packed-bins":
        rewards = rm.score_head(rm.decoder(**bins(seqs, rm.tokenizer.pad_token_id), use_cache=False).last_hidden_state)
    else:
        packed = pack(batch["input_ids"], batch["attention_mask"])
        if layout == "packed-dense":  # without the boundaries, transformers finds the rows from position_ids
            packed = {k: packed[k] for k in ("input_ids", "position_ids")}
        rewards = rm(batch["input_ids"], batch["attention_mask"], packed=packed).rewards
    rewards.sum().backward()
    rm.zero_grad(set_to_none=True)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=8, help="pairs per batch (2 rows each)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--hh-data", default=str(HH_DATA))
    parser.add_argument("--results", default=str(RESULTS / "packing_attention.json"))
    args = parser.parse_args()

    from icrm.data import example_texts, load_examples
    from icrm.modeling import PRESETS, RewardModel, build_causal_lm, train_tokenizer

    torch.set_num_threads(1)
    tokenizer = train_tokenizer(example_texts(load_examples(args.hh_data).examples), PRESETS[args.preset]["vocab_size"])
    rm = RewardModel.from_causal_lm(build_causal_lm(args.preset, tokenizer, 0), tokenizer).train()
    import icrm.modeling.packing  # noqa: F401  (registers icrm's attention)

    loads, seconds = [os.getloadavg()[0]], {case: {layout: [] for layout in LAYOUTS} for case in ("hh", "full")}
    for case, cases in batches(args, tokenizer).items():
        step(rm, cases[0], "padded")  # warm-up
        for i, seqs in enumerate(cases):
            for layout in LAYOUTS[i % 4 :] + LAYOUTS[: i % 4]:  # rotate the order
                seconds[case][layout].append(step(rm, seqs, layout))
        loads.append(os.getloadavg()[0])
    medians = {case: {layout: statistics.median(v) for layout, v in per.items()} for case, per in seconds.items()}
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "settings": vars(args),
              "machine": machine(), "loadavg_1m": loads, "seconds": seconds, "median_seconds": medians}
    write_json(args.results, report)
    print(f"{report['date']}, preset {args.preset}, {args.batches} batches of {args.pairs} pairs per case, "
          f"1 thread, load {min(loads):.2f}–{max(loads):.2f}; forward + backward CPU seconds (median) and padded / layout:\n")
    print("| batches | " + " | ".join(LAYOUTS) + " |")
    print("|---|" + "---|" * len(LAYOUTS))
    for case, per in medians.items():
        print(f"| {case} | " + " | ".join(f"{per[k]:.3f} s ({per['padded'] / per[k]:.2f}×)" for k in LAYOUTS) + " |")


if __name__ == "__main__":
    main()
